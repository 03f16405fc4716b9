//! The load engine: a closed loop with a sliding window. Exactly `concurrency` workers each
//! take the next item, run it, and take the next the moment it finishes, so `concurrency`
//! requests are in flight while work remains, never more, and never in waves.
//!
//! Workers claim work from a shared [`Source`]; nobody assigns it. Each result goes over a
//! channel to one collector, so the hot path takes no lock. The engine records outcomes and
//! nothing else: it knows nothing of CSV, terminals or statistics.

pub mod rate;
pub mod retry;
mod signals;

pub use signals::Signals;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Where workers take their next item from.
pub trait Source: Send + Sync + 'static {
    type Item: Send + 'static;
    /// The next item, or None when the work is done.
    fn next(&self) -> impl Future<Output = Option<Self::Item>> + Send;
}

/// What a worker knows about the slot it runs an item in.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    /// Time from this worker's previous item finishing to this one starting: the client's own
    /// scheduling delay, which the sweep's self-check compares with latency.
    pub sched_delay: Duration,
}

/// How a window stops.
#[derive(Clone, Default)]
pub struct Stop {
    /// Cancelled: start nothing new; let items in flight finish.
    pub drain: CancellationToken,
    /// Cancelled: drop items in flight at once (their results are not sent).
    pub abandon: CancellationToken,
    /// Cancelled when the stop came from SIGTERM (a scheduler), not Ctrl-C: exit 143, not 130.
    pub terminated: CancellationToken,
}

impl Stop {
    pub fn new() -> Stop {
        Stop::default()
    }
}

/// The window's width: how many of its workers may take work. Fixed for a sweep's level;
/// a run holding its plan's rate moves it between 1 and the workers spawned (`max`). A worker
/// above the width finishes the item it has and then waits, so lowering never cuts a request.
pub struct Width {
    limit: AtomicUsize,
    max: usize,
    raised: Notify,
    /// Set when a worker found the source empty: the workers waiting above the width end too.
    exhausted: AtomicBool,
}

impl Width {
    /// `n` workers, always all at work.
    pub fn fixed(n: usize) -> Arc<Width> {
        Width::new(n, n)
    }

    /// `max` workers, `start` of them at work.
    pub fn new(start: usize, max: usize) -> Arc<Width> {
        let max = max.max(1);
        Arc::new(Width {
            limit: AtomicUsize::new(start.clamp(1, max)),
            max,
            raised: Notify::new(),
            exhausted: AtomicBool::new(false),
        })
    }

    pub fn get(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Sets the width (1..=max) and returns it.
    pub fn set(&self, n: usize) -> usize {
        let n = n.clamp(1, self.max);
        let was = self.limit.swap(n, Ordering::SeqCst);
        if n > was {
            self.raised.notify_waiters();
        }
        n
    }

    /// The source is empty: wakes the workers waiting above the width, to end.
    fn exhaust(&self) {
        self.exhausted.store(true, Ordering::SeqCst);
        self.raised.notify_waiters();
    }

    /// Waits until worker `index` is within the width; false if `drain` or the source's end
    /// came first.
    async fn admit(&self, index: usize, drain: &CancellationToken) -> bool {
        loop {
            let raised = self.raised.notified();
            tokio::pin!(raised);
            // Registered before the checks, so a raise between them is not missed.
            raised.as_mut().enable();
            if self.exhausted.load(Ordering::SeqCst) {
                return false;
            }
            if index < self.get() {
                return true;
            }
            tokio::select! {
                _ = raised => {}
                _ = drain.cancelled() => return false,
            }
        }
    }
}

/// Runs the window until the source is exhausted or `stop` says so. Each finished item's result
/// is sent on `results`; the function returns when every worker has ended.
pub async fn run_window<S, F, Fut, R>(
    concurrency: usize,
    source: Arc<S>,
    work: F,
    results: mpsc::UnboundedSender<R>,
    stop: Stop,
) where
    S: Source,
    F: Fn(S::Item, Slot) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send,
    R: Send + 'static,
{
    run_window_of(Width::fixed(concurrency.max(1)), source, work, results, stop).await
}

/// [`run_window`] with a width that may move while it runs.
pub async fn run_window_of<S, F, Fut, R>(
    width: Arc<Width>,
    source: Arc<S>,
    work: F,
    results: mpsc::UnboundedSender<R>,
    stop: Stop,
) where
    S: Source,
    F: Fn(S::Item, Slot) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send,
    R: Send + 'static,
{
    let work = Arc::new(work);
    let mut workers = tokio::task::JoinSet::new();
    for index in 0..width.max() {
        let (source, work, results, drain) = (source.clone(), work.clone(), results.clone(), stop.drain.clone());
        let width = width.clone();
        workers.spawn(async move {
            let mut freed = Instant::now();
            loop {
                if drain.is_cancelled() {
                    break;
                }
                // One relaxed load when the worker is within the width, as every worker of a
                // fixed window is.
                if index >= width.get() {
                    if !width.admit(index, &drain).await {
                        break;
                    }
                    freed = Instant::now();
                }
                // The source first: an item at hand is taken without polling `drain`, whose
                // waiter list sits behind a lock shared by every worker. Only a worker that
                // must wait for work also waits for the drain.
                let item = tokio::select! {
                    biased;
                    item = source.next() => item,
                    _ = drain.cancelled() => break,
                };
                let Some(item) = item else {
                    width.exhaust();
                    break;
                };
                let slot = Slot {
                    sched_delay: Instant::now() - freed,
                };
                let result = work(item, slot).await;
                freed = Instant::now();
                if results.send(result).is_err() {
                    break;
                }
            }
        });
    }
    drop(results);
    // `abandon` aborts the workers rather than being raced by each request: one waiter here
    // instead of a lock taken and released around every request.
    loop {
        tokio::select! {
            biased;
            _ = stop.abandon.cancelled() => {
                workers.abort_all();
                while workers.join_next().await.is_some() {}
                break;
            }
            joined = workers.join_next() => if joined.is_none() { break },
        }
    }
}

/// A [`Stop`] that the first signal drains and that is abandoned `drain_timeout` later, or at
/// the second signal. SIGTERM also cancels `terminated`.
pub fn watch_signals(drain_timeout: Duration) -> Stop {
    let stop = Stop::new();
    let s = stop.clone();
    let mut signals = Signals::new();
    tokio::spawn(async move {
        let Some(first) = signals.next().await else { return };
        if first == signals::Signal::Terminate {
            s.terminated.cancel();
        }
        s.drain.cancel();
        tokio::select! {
            second = signals.next() => {
                if second == Some(signals::Signal::Terminate) {
                    s.terminated.cancel();
                }
            }
            _ = tokio::time::sleep(drain_timeout) => {}
        }
        s.abandon.cancel();
    });
    stop
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    struct Counter {
        next: AtomicU64,
        total: u64,
    }

    impl Source for Counter {
        type Item = u64;
        async fn next(&self) -> Option<u64> {
            let i = self.next.fetch_add(1, Ordering::SeqCst);
            (i < self.total).then_some(i)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sliding_window_keeps_exactly_c_in_flight() {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let source = Arc::new(Counter {
            next: AtomicU64::new(0),
            total: 100,
        });
        let (f, p) = (in_flight.clone(), peak.clone());
        let start = Instant::now();
        run_window(
            4,
            source,
            move |i: u64, _slot| {
                let (f, p) = (f.clone(), p.clone());
                async move {
                    let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(now, Ordering::SeqCst);
                    // Uneven service times: a wave scheduler would wait for the slowest.
                    tokio::time::sleep(Duration::from_millis(if i % 4 == 0 { 40 } else { 10 })).await;
                    f.fetch_sub(1, Ordering::SeqCst);
                    i
                }
            },
            tx,
            Stop::new(),
        )
        .await;
        let mut got: Vec<u64> = Vec::new();
        while let Some(i) = rx.recv().await {
            got.push(i);
        }
        got.sort_unstable();
        assert_eq!(got, (0..100).collect::<Vec<_>>(), "every item exactly once");
        assert_eq!(peak.load(Ordering::SeqCst), 4);
        // Total work 25*40 + 75*10 = 1750 ms over 4 slots: 437.5 ms if no slot ever idles.
        // Waves of 4 would take 25 * 40 = 1000 ms.
        let took = Instant::now() - start;
        assert!(took <= Duration::from_millis(460), "{took:?}");
    }

    /// Two slots of 10 ms items, stopped at 55 ms; returns how many results were reported.
    async fn stopped_at_55ms(abandon: bool) -> usize {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let source = Arc::new(Counter {
            next: AtomicU64::new(0),
            total: u64::MAX,
        });
        let stop = Stop::new();
        let s2 = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(55)).await;
            s2.drain.cancel();
            if abandon {
                s2.abandon.cancel();
            }
        });
        run_window(
            2,
            source,
            |i: u64, _| async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                i
            },
            tx,
            stop,
        )
        .await;
        let mut n = 0;
        while rx.recv().await.is_some() {
            n += 1;
        }
        n
    }

    #[tokio::test(start_paused = true)]
    async fn drain_and_abandon() {
        // Draining lets the two in flight at 55 ms finish (at 60 ms): 6 rounds of 2.
        assert_eq!(stopped_at_55ms(false).await, 12);
        assert_eq!(stopped_at_55ms(true).await, 10, "abandoned requests are not reported");
    }

    #[tokio::test(start_paused = true)]
    async fn the_width_moves_in_flight_up_and_down_without_cutting_a_request() {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peaks = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let source = Arc::new(Counter {
            next: AtomicU64::new(0),
            total: 120,
        });
        let width = Width::new(2, 8);
        let w = width.clone();
        let (f, p) = (in_flight.clone(), peaks.clone());
        tokio::spawn(async move {
            // 2 in flight for 100 ms, then 8, then 3.
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(w.set(20), 8, "clamped to the workers spawned");
            tokio::time::sleep(Duration::from_millis(100)).await;
            w.set(3);
        });
        run_window_of(
            width,
            source,
            move |i: u64, _slot| {
                let (f, p) = (f.clone(), p.clone());
                async move {
                    let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                    p.lock().unwrap().push((Instant::now(), now));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    f.fetch_sub(1, Ordering::SeqCst);
                    i
                }
            },
            tx,
            Stop::new(),
        )
        .await;
        let mut n = 0;
        while rx.recv().await.is_some() {
            n += 1;
        }
        assert_eq!(n, 120, "every item once");
        let peaks = peaks.lock().unwrap();
        let start = peaks[0].0;
        let max_in = |from: u64, to: u64| {
            peaks
                .iter()
                .filter(|(t, _)| *t >= start + Duration::from_millis(from) && *t < start + Duration::from_millis(to))
                .map(|(_, n)| *n)
                .max()
                .unwrap_or(0)
        };
        assert_eq!(max_in(0, 100), 2);
        assert_eq!(max_in(100, 200), 8);
        // Lowered: the workers above 3 finish the request they have (by 210 ms), then wait.
        assert_eq!(max_in(211, 10_000), 3);
    }
}
