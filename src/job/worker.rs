//! One worker's attempt at a job: wait for the rate limit, send, decide, and report.

use super::attempt::{self, Decision};
use super::queue::{Job, JobSource};
use crate::client::{Client, Outcome};
use crate::engine::rate::RateLimiter;
use crate::engine::retry::RetryPolicy;
use crate::engine::Stop;
use rand::Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// What a worker reports for one attempt.
pub(super) enum Event {
    /// Final: succeeded, or failed for good.
    Done {
        custom_id: String,
        outcome: Outcome,
        attempts: u32,
        /// This answer completed a run of identical failures (`--stop-after-failures`).
        systematic: bool,
    },
    /// Failed, queued for another try; or not sent because the run is stopping.
    Retried,
    /// 401/403: the credentials are refused; nothing more must be sent.
    Refused { custom_id: String, outcome: Outcome },
}

/// One worker's view: how it sends an attempt and where a failed one goes.
#[derive(Clone)]
pub(super) struct Worker {
    pub client: Arc<Client>,
    pub limiter: Option<Arc<RateLimiter>>,
    /// `--max-tokens-per-minute`.
    pub budget: Option<Arc<super::budget::TokenBudget>>,
    /// What a request costs in tokens, learned from the answers' `usage`.
    pub estimate: Arc<super::budget::TokenEstimate>,
    pub source: Arc<JobSource>,
    /// Drained when the credentials are refused: jobs still waiting are not sent.
    pub stop: Stop,
    pub retries_used: Arc<AtomicU64>,
    /// 429s met, each sent again without using a retry.
    pub rate_limited: Arc<AtomicU64>,
    /// Retries after a timeout: the server may have done (and a hosted API billed) the work.
    pub retried_after_timeout: Arc<AtomicU64>,
    pub policy: RetryPolicy,
    /// `--stop-after-failures`: shared by the workers, in the order answers finish.
    pub streak: Arc<Mutex<crate::outcome::Streak>>,
}

impl Worker {
    /// Waits for `--rate`, the token budget and the room the server's announced limits leave.
    async fn paced(&self, job: &Job) {
        if let Some(l) = &self.limiter {
            l.acquire().await;
        }
        let tokens = job.charge.map_or(1.0, |c| self.estimate.tokens(&c));
        if let Some(b) = &self.budget {
            b.pay(tokens).await;
        }
        // The room the server's announced limits leave: waited for here, so the window does not
        // send into a 429 (charged the request's tokens as estimated).

        while let Some(wait) = self.client.room_wait(tokens) {
            tokio::time::sleep(wait.min(std::time::Duration::from_secs(60))).await;
        }
    }

    pub async fn attempt(self: Arc<Self>, job: Job) -> Event {
        // The waits before sending end early when the run stops (a completion window closing
        // must not wait for a token budget to refill).
        tokio::select! {
            _ = self.paced(&job) => {}
            _ = self.stop.drain.cancelled() => {}
        }
        if self.stop.drain.is_cancelled() {
            // The run is stopping (refused credentials, Ctrl-C, a completion window closed)
            // while this job waited: not sent, and back in the queue, where a closed window
            // lists it as expired.
            self.source.retry_later(job, Instant::now());
            return Event::Retried;
        }
        let outcome = self.client.send(job.body.clone(), job.stream, true).await;
        if let (Some(c), Ok(ok)) = (&job.charge, &outcome.result) {
            if let Some(tokens) = ok.usage.prompt_tokens {
                self.estimate.learn(c.prompt_bytes, tokens);
            }
        }
        let failure = outcome.result.as_ref().err().map(|f| {
            let quota = f
                .body
                .as_ref()
                .is_some_and(|b| b.to_string().contains("insufficient_quota"));
            (f.kind, f.retry_after, quota)
        });
        let u: f64 = rand::thread_rng().gen();
        match attempt::decide(failure, job.attempt, job.throttled, &self.policy, u) {
            Decision::Done => {
                // Checked here, not in the collector: the collector reads events in batches,
                // and by then the other workers would have sent more of the same failure.
                let systematic = {
                    let failure = outcome.result.as_ref().err();
                    let mut streak = self.streak.lock().expect("streak lock");
                    streak.record(failure.map(|f| (f.kind, f.body.as_ref())))
                };
                if systematic {
                    self.stop.drain.cancel();
                }
                self.source.finished();
                Event::Done {
                    custom_id: job.custom_id,
                    outcome,
                    attempts: job.attempt + 1,
                    systematic,
                }
            }
            Decision::Stop => {
                self.stop.drain.cancel();
                self.source.finished();
                Event::Refused {
                    custom_id: job.custom_id,
                    outcome,
                }
            }
            Decision::Throttled(wait) => {
                self.rate_limited.fetch_add(1, Ordering::Relaxed);
                let again = Job {
                    throttled: job.throttled + 1,
                    ..job
                };
                self.source.retry_later(again, Instant::now() + wait);
                Event::Retried
            }
            Decision::Retry(wait) => {
                self.retries_used.fetch_add(1, Ordering::Relaxed);
                if matches!(failure, Some((crate::client::FailKind::Timeout, ..))) {
                    self.retried_after_timeout.fetch_add(1, Ordering::Relaxed);
                }
                let again = Job {
                    attempt: job.attempt + 1,
                    ..job
                };
                self.source.retry_later(again, Instant::now() + wait);
                Event::Retried
            }
        }
    }
}
