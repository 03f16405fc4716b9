//! The run's work queue: fresh jobs from the feed (in chunks) and failed ones waiting for
//! their retry time. A retry never holds a worker slot while it waits.

use crate::engine::Source;
use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tokio::sync::Notify;

/// How long an idle worker waits before it looks at the queue again by itself.
const IDLE_RECHECK: std::time::Duration = std::time::Duration::from_millis(100);
use tokio::time::Instant;

/// One request of the batch and its attempts so far.
#[derive(Debug)]
pub struct Job {
    pub custom_id: String,
    pub body: Bytes,
    pub stream: bool,
    /// Attempts already made (0 for a fresh job).
    pub attempt: u32,
}

/// The workers' shared source. It ends only when the feed is closed and drained, no retry
/// waits, and no job is in flight (a job in flight may still come back for a retry).
pub struct JobSource {
    fresh: async_channel::Receiver<Vec<Job>>,
    queue: Mutex<Queue>,
    in_flight: AtomicUsize,
    changed: Notify,
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
        self.changed.notify_waiters();
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

    /// Jobs waiting for a retry now (they count as not finished when a run stops).
    pub fn waiting_retries(&self) -> usize {
        self.queue.lock().expect("job queue lock").retries.len()
    }

    /// A due retry first (it has waited longest), then the next fresh job.
    fn take(&self) -> Take {
        let mut q = self.queue.lock().expect("job queue lock");
        let due = q.retries.peek().map(|Reverse((at, _, _))| *at);
        let job = match due {
            Some(at) if at <= Instant::now() => q.retries.pop().map(|Reverse((_, _, JobBox(job)))| job),
            _ => q.ready.pop_front(),
        };
        match job {
            Some(job) => {
                self.in_flight.fetch_add(1, Ordering::SeqCst);
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

    fn add_chunk(&self, chunk: Vec<Job>) {
        let n = chunk.len();
        self.queue.lock().expect("job queue lock").ready.extend(chunk);
        // Other idle workers wait on the channel or on this: a chunk holds work for them too.
        // One wake per job beyond the one this worker takes, not all of them at once: with
        // 1,024 workers, waking every idle one for each chunk costs more than the requests.
        for _ in 1..n {
            self.changed.notify_one();
        }
    }
}

impl Source for JobSource {
    type Item = Job;

    async fn next(&self) -> Option<Job> {
        // The common case, a job at hand: taken without registering as a waiter.
        if let Take::Job(job) = self.take() {
            return Some(job);
        }
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
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
            // An idle worker waits on the feed and on changes; it also looks again after
            // IDLE_RECHECK (or when a retry is due, if sooner). The re-check is a safety net:
            // with one wake per job (not every idle worker per chunk), a CI run once saw a
            // window of 7 that never had 7 in flight, and a worker must never sit idle for
            // the rest of a run while jobs are queued.
            let recheck = Instant::now() + IDLE_RECHECK;
            let retry_due = tokio::time::sleep_until(due.map_or(recheck, |at| at.min(recheck)));
            tokio::select! {
                chunk = self.fresh.recv(), if !self.fresh.is_closed() || !self.fresh.is_empty() => {
                    if let Ok(chunk) = chunk {
                        self.add_chunk(chunk);
                    }
                }
                _ = retry_due => {}
                _ = &mut changed => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn job(id: &str) -> Job {
        Job {
            custom_id: id.into(),
            body: Bytes::from_static(b"{}"),
            stream: false,
            attempt: 0,
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
