//! The run's work queue: fresh jobs from the feed (in chunks) and failed ones waiting for
//! their retry time. A retry never holds a worker slot while it waits.

use crate::engine::Source;
use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// One request of the batch and its attempts so far.
#[derive(Debug)]
pub struct Job {
    pub custom_id: String,
    pub body: Bytes,
    pub stream: bool,
    /// Attempts already made (0 for a fresh job).
    pub attempt: u32,
    /// 429s it met: sent again without using an attempt.
    pub throttled: u32,
    /// Its size as a token budget charges it (with `--max-tokens-per-minute`).
    pub charge: Option<Charge>,
}

/// What a request is charged against a token budget: its prompt, estimated from its text, and
/// all the output it may ask for, as a hosted API charges on arrival.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Charge {
    pub prompt_bytes: u64,
    pub max_tokens: u64,
}

impl Charge {
    /// From a request's bytes alone, without parsing it: the whole body as the prompt (the
    /// tokens per byte learned from the answers absorb the keys and quotes) and the number
    /// after `"max_tokens"` (or `"max_completion_tokens"`).
    pub fn estimate(body: &[u8]) -> Charge {
        let number_after = |key: &[u8]| -> Option<u64> {
            let at = memchr::memmem::find(body, key)? + key.len();
            let rest = &body[at..];
            let start = rest.iter().position(|b| b.is_ascii_digit())?;
            // Only `:` and spaces between the key and its number.
            if !rest[..start].iter().all(|b| *b == b':' || b.is_ascii_whitespace()) {
                return None;
            }
            let digits = rest[start..].iter().take_while(|b| b.is_ascii_digit()).count();
            std::str::from_utf8(&rest[start..start + digits]).ok()?.parse().ok()
        };
        Charge {
            prompt_bytes: body.len() as u64,
            max_tokens: number_after(b"\"max_tokens\"")
                .or_else(|| number_after(b"\"max_completion_tokens\""))
                .unwrap_or(0),
        }
    }
}

/// The workers' shared source. It ends only when the feed is closed and drained, no retry
/// waits, and no job is in flight (a job in flight may still come back for a retry).
///
/// Waking idle workers is a relay: whoever takes a job and leaves another ready (or due)
/// wakes one idle worker, which takes the next and passes the wake on. A chunk of N jobs so
/// wakes N workers one after another, never all of them at once (1,024 waking for each chunk
/// cost more than the requests), and no wake can be lost: the worker that queued work always
/// takes a job itself next, and every take that leaves work wakes the next.
pub struct JobSource {
    fresh: async_channel::Receiver<Vec<Job>>,
    queue: Mutex<Queue>,
    in_flight: AtomicUsize,
    changed: Notify,
    /// Workers registered on `changed` and about to look at the queue, or waiting. Counted
    /// before they look, so a take that saw no idle worker was surely seen by theirs.
    idle: AtomicUsize,
}

#[derive(Default)]
struct Queue {
    /// Jobs of the chunks taken from the feed, in input order.
    ready: VecDeque<Job>,
    retries: BinaryHeap<Reverse<(Instant, u64, JobBox)>>,
    seq: u64,
}

/// Orders retries by time only (ties by arrival, through the sequence number).
struct JobBox(Job);
impl PartialEq for JobBox {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for JobBox {}
impl PartialOrd for JobBox {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for JobBox {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

enum Take {
    Job(Job),
    /// Nothing ready; the next retry is due then (None: no retry waits).
    Wait(Option<Instant>),
}

impl JobSource {
    pub fn new(fresh: async_channel::Receiver<Vec<Job>>) -> JobSource {
        JobSource {
            fresh,
            queue: Mutex::new(Queue::default()),
            in_flight: AtomicUsize::new(0),
            changed: Notify::new(),
            idle: AtomicUsize::new(0),
        }
    }

    /// The job taken by a worker failed and goes back, due at `at`.
    pub fn retry_later(&self, job: Job, at: Instant) {
        {
            let mut q = self.queue.lock().expect("job queue lock");
            let n = q.seq;
            q.seq += 1;
            q.retries.push(Reverse((at, n, JobBox(job))));
        }
        // After the push: whoever sees in_flight drop also sees the retry.
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        // An idle worker sleeps until the earliest retry it saw; one of them must see this one.
        self.wake_one();
    }

    /// Wakes one idle worker, if any waits (a stored permit otherwise: the next worker to
    /// register looks at the queue anyway).
    fn wake_one(&self) {
        if self.idle.load(Ordering::SeqCst) > 0 {
            self.changed.notify_one();
        }
    }

    /// The job taken by a worker is over (final answer, or dropped by a stop).
    pub fn finished(&self) {
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            // Idle workers wait for this to decide whether the work is over.
            self.changed.notify_waiters();
        }
    }

    /// Stops taking fresh jobs: the feed sees the closed channel and ends.
    pub fn close_feed(&self) {
        self.fresh.close();
        self.changed.notify_waiters();
    }

    /// After a completion window closed and the workers stopped: jobs never answered, those
    /// queued or waiting for a retry first, then each chunk the feed still sends (it reads the
    /// input on, so memory stays flat); None once the feed is done.
    pub async fn unsent(&self) -> Option<Vec<Job>> {
        let held: Vec<Job> = {
            let mut q = self.queue.lock().expect("job queue lock");
            let mut held: Vec<Job> = q.ready.drain(..).collect();
            held.extend(q.retries.drain().map(|Reverse((_, _, JobBox(job)))| job));
            held
        };
        if !held.is_empty() {
            return Some(held);
        }
        self.fresh.recv().await.ok()
    }

    /// Jobs waiting for a retry now.
    #[cfg(test)]
    pub fn waiting_retries(&self) -> usize {
        self.queue.lock().expect("job queue lock").retries.len()
    }

    /// A due retry first (it has waited longest), then the next fresh job. Leaving more work
    /// ready, it passes the wake on to one idle worker.
    fn take(&self) -> Take {
        let mut q = self.queue.lock().expect("job queue lock");
        let due = q.retries.peek().map(|Reverse((at, _, _))| *at);
        // The clock only when a retry waits (most takes have none).
        let now = due.map(|_| Instant::now());
        let is_due = |at: Instant| now.is_some_and(|now| at <= now);
        let job = match due {
            Some(at) if is_due(at) => q.retries.pop().map(|Reverse((_, _, JobBox(job)))| job),
            _ => q.ready.pop_front(),
        };
        match job {
            Some(job) => {
                self.in_flight.fetch_add(1, Ordering::SeqCst);
                let more = !q.ready.is_empty() || q.retries.peek().is_some_and(|Reverse((at, _, _))| is_due(*at));
                drop(q);
                if more {
                    self.wake_one();
                }
                Take::Job(job)
            }
            None => Take::Wait(due),
        }
    }

    /// With the feed done: true when no job is ready, waiting or in flight. Read under the
    /// queue lock, so a retry queued just before its job left `in_flight` is seen.
    fn all_done(&self) -> bool {
        let q = self.queue.lock().expect("job queue lock");
        q.ready.is_empty() && q.retries.is_empty() && self.in_flight.load(Ordering::SeqCst) == 0
    }

    /// Queues a chunk from the feed. No wake here: the caller takes a job next, and that take
    /// starts the relay for the rest.
    fn add_chunk(&self, chunk: Vec<Job>) {
        self.queue.lock().expect("job queue lock").ready.extend(chunk);
    }
}

impl Source for JobSource {
    type Item = Job;

    async fn next(&self) -> Option<Job> {
        // The common case, a job at hand: taken without registering as a waiter.
        if let Take::Job(job) = self.take() {
            return Some(job);
        }
        let _idle = IdleGuard::new(&self.idle);
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before looking: a wake sent after the look below reaches this worker.
            changed.as_mut().enable();
            let due = match self.take() {
                Take::Job(job) => return Some(job),
                Take::Wait(due) => due,
            };
            match self.fresh.try_recv() {
                Ok(chunk) => {
                    self.add_chunk(chunk);
                    continue;
                }
                Err(async_channel::TryRecvError::Closed) => {
                    if self.all_done() {
                        self.changed.notify_waiters();
                        return None;
                    }
                }
                Err(async_channel::TryRecvError::Empty) => {}
            }
            let far = Instant::now() + std::time::Duration::from_secs(86_400);
            tokio::select! {
                chunk = self.fresh.recv(), if !self.fresh.is_closed() || !self.fresh.is_empty() => {
                    if let Ok(chunk) = chunk {
                        self.add_chunk(chunk);
                    }
                }
                _ = tokio::time::sleep_until(due.unwrap_or(far)), if due.is_some() => {}
                _ = &mut changed => {}
            }
        }
    }
}

/// Counts a worker as idle from before its first look at the queue until it leaves `next`
/// (with a job, at the end, or dropped by a stop).
struct IdleGuard<'a>(&'a AtomicUsize);

impl<'a> IdleGuard<'a> {
    fn new(idle: &'a AtomicUsize) -> Self {
        idle.fetch_add(1, Ordering::SeqCst);
        IdleGuard(idle)
    }
}

impl Drop for IdleGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_charge_is_estimated_from_the_bytes_alone() {
        let body = br#"{"prompt":"say hello","max_tokens": 64,"n":1}"#;
        assert_eq!(
            Charge::estimate(body),
            Charge {
                prompt_bytes: body.len() as u64,
                max_tokens: 64
            }
        );
        let chat = br#"{"messages":[],"max_completion_tokens":7}"#;
        assert_eq!(Charge::estimate(chat).max_tokens, 7);
        // The key inside a prompt, followed by text: not a number of the body's.
        assert_eq!(Charge::estimate(br#"{"prompt":""max_tokens" is 5"}"#).max_tokens, 0);
        assert_eq!(Charge::estimate(b"{}").max_tokens, 0);
    }
    use std::time::Duration;

    fn job(id: &str) -> Job {
        Job {
            custom_id: id.into(),
            body: Bytes::from_static(b"{}"),
            stream: false,
            attempt: 0,
            throttled: 0,
            charge: None,
        }
    }

    /// C workers over jobs fed in uneven chunks (up to 40 jobs: most workers must be woken by
    /// the relay, not by the feed), each job holding its worker until all C hold one (a barrier). A lost wake leaves a worker idle while a job is queued; the others
    /// then wait at the barrier for good, and the run times out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_idle_worker_is_woken_for_queued_work() {
        const C: usize = 7;
        for round in 0..40usize {
            let (tx, rx) = async_channel::bounded(2);
            let src = Arc::new(JobSource::new(rx));
            let barrier = Arc::new(tokio::sync::Barrier::new(C));
            let total = C * 20;
            tokio::spawn(async move {
                let (mut sent, mut k) = (0, round);
                while sent < total {
                    let n = (k % 40 + 1).min(total - sent);
                    k = (k * 7 + 3) % 1_000_003;
                    let chunk = (sent..sent + n).map(|i| job(&i.to_string())).collect();
                    tx.send(chunk).await.unwrap();
                    sent += n;
                    if k % 3 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            });
            let mut workers = tokio::task::JoinSet::new();
            for _ in 0..C {
                let (src, barrier) = (src.clone(), barrier.clone());
                workers.spawn(async move {
                    let mut n = 0;
                    while src.next().await.is_some() {
                        barrier.wait().await;
                        src.finished();
                        n += 1;
                    }
                    n
                });
            }
            let all = async {
                let mut done = 0;
                while let Some(n) = workers.join_next().await {
                    done += n.unwrap();
                }
                done
            };
            let done = tokio::time::timeout(Duration::from_secs(20), all).await;
            assert_eq!(
                done.ok(),
                Some(total),
                "round {round}: a worker was left idle with work queued"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fresh_jobs_in_order_then_end() {
        let (tx, rx) = async_channel::bounded(4);
        let src = JobSource::new(rx);
        tx.send(vec![job("a"), job("b")]).await.unwrap();
        tx.send(vec![job("c")]).await.unwrap();
        drop(tx);
        let mut got = Vec::new();
        while let Some(j) = src.next().await {
            got.push(j.custom_id);
            src.finished();
        }
        assert_eq!(got, ["a", "b", "c"]);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_waits_for_its_time_and_comes_before_fresh_work() {
        let (tx, rx) = async_channel::bounded(4);
        let src = Arc::new(JobSource::new(rx));
        tx.send(vec![job("a"), job("b"), job("c")]).await.unwrap();
        drop(tx);
        let t0 = Instant::now();
        let a = src.next().await.unwrap();
        src.retry_later(Job { attempt: 1, ..a }, t0 + Duration::from_millis(100));
        // Not due yet: fresh work goes first.
        let b = src.next().await.unwrap();
        assert_eq!(b.custom_id, "b");
        tokio::time::sleep(Duration::from_millis(150)).await;
        // Due now: the retry is taken before the fresh job c.
        let again = src.next().await.unwrap();
        assert_eq!((again.custom_id.as_str(), again.attempt), ("a", 1));
        assert_eq!(src.next().await.unwrap().custom_id, "c");
        for _ in 0..3 {
            src.finished();
        }
        assert!(src.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_end_while_a_job_is_in_flight_that_may_come_back() {
        let (tx, rx) = async_channel::bounded(4);
        let src = Arc::new(JobSource::new(rx));
        tx.send(vec![job("a")]).await.unwrap();
        drop(tx);
        let a = src.next().await.unwrap();
        let waiter = {
            let src = src.clone();
            tokio::spawn(async move { src.next().await.map(|j| (j.custom_id, j.attempt)) })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished(), "a job in flight may still be retried");
        let t = Instant::now() + Duration::from_millis(50);
        src.retry_later(Job { attempt: 1, ..a }, t);
        assert_eq!(waiter.await.unwrap(), Some(("a".to_string(), 1)));
        assert!(Instant::now() >= t, "the retry was taken before its time");
        src.finished();
        assert!(src.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn closing_the_feed_ends_after_work_in_hand() {
        let (tx, rx) = async_channel::bounded(4);
        let src = JobSource::new(rx);
        tx.send(vec![job("a")]).await.unwrap();
        let a = src.next().await.unwrap();
        src.close_feed();
        // The feed is closed with nothing queued: the run ends once `a` is over.
        assert!(tx.send(vec![job("x")]).await.is_err());
        src.finished();
        drop(a);
        assert!(src.next().await.is_none());
        assert_eq!(src.waiting_retries(), 0);
    }
}
