//! The run's counts as outcomes arrive, and the run-summary.json they become.

use crate::batch::OutputRecord;
use crate::client::Outcome;
use crate::stats::latency::Hist;
use serde::Serialize;
use tokio::time::Instant;

/// What the feed reports when it has read the whole input.
#[derive(Clone, Copy, Debug, Default)]
pub struct FeedCounts {
    pub read: u64,
    pub queued: u64,
    pub skipped_done: u64,
    pub other_shards: u64,
}

/// Running counts of one run.
pub struct Tally {
    pub ok: u64,
    pub failed: u64,
    /// Requests that needed at least one retry.
    pub retried_requests: u64,
    pub skipped_invalid: u64,
    /// Lines the completion window closed on (`batch_expired` in the errors file).
    pub expired: u64,
    /// Prompt tokens the server's prefix cache served, as the answers report them.
    pub cached_prompt_tokens: Option<u64>,
    pub latency: Hist,
    pub start: Instant,
    pub last_finish: Instant,
    pub feed: Option<FeedCounts>,
}

impl Tally {
    pub fn new(start: Instant) -> Tally {
        Tally {
            ok: 0,
            failed: 0,
            retried_requests: 0,
            skipped_invalid: 0,
            expired: 0,
            cached_prompt_tokens: None,
            latency: Hist::new(),
            start,
            last_finish: start,
            feed: None,
        }
    }

    /// Counts a final outcome and turns it into its output line.
    pub fn finish(&mut self, custom_id: String, outcome: Outcome, attempts: u32) -> OutputRecord {
        self.last_finish = Instant::now();
        if attempts > 1 {
            self.retried_requests += 1;
        }
        if let Ok(Some(c)) = outcome.result.as_ref().map(|ok| ok.usage.cached_tokens) {
            *self.cached_prompt_tokens.get_or_insert(0) += c;
        }
        if outcome.is_ok() {
            self.ok += 1;
            self.latency.record_ms(outcome.latency().as_secs_f64() * 1000.0);
        } else {
            self.failed += 1;
        }
        crate::outcome::output_record(custom_id, outcome)
    }

    /// Seconds from the start to the last final answer.
    pub fn wall_s(&self) -> f64 {
        (self.last_finish - self.start).as_secs_f64().max(1e-9)
    }

    /// Queued requests that never got a final answer (interrupted, stopped, or waiting for a
    /// retry when the run ended): `--resume` sends them.
    pub fn not_finished(&self) -> u64 {
        self.queued().saturating_sub(self.ok + self.failed + self.expired)
    }

    pub fn queued(&self) -> u64 {
        self.feed.map_or(self.ok + self.failed, |f| f.queued)
    }

    pub fn achieved_rpm(&self) -> f64 {
        self.ok as f64 / self.wall_s() * 60.0
    }
}

/// run-summary.json.
#[derive(Serialize)]
pub struct RunSummary {
    pub input: String,
    pub output: String,
    pub requests_total: u64,
    pub requests_ok: u64,
    pub requests_failed: u64,
    /// Requests that needed at least one retry.
    pub requests_retried: u64,
    /// Retry attempts in all.
    pub retries: u64,
    /// Streamed requests re-sent at once because the server had silently closed the kept-alive
    /// connection they went out on (llama.cpp does after every stream); never answered twice.
    pub stale_connection_resends: u64,
    pub skipped_already_done: u64,
    pub skipped_invalid: u64,
    pub skipped_other_shards: u64,
    /// Requests not finished (interrupted or stopped): `--resume` sends them.
    pub not_finished: u64,
    pub concurrency: u32,
    pub planned_rpm: Option<f64>,
    /// With `--shard`: this shard's part of the plan's concurrency and rate.
    pub shard: Option<super::settings::ShardShare>,
    pub achieved_rpm: f64,
    pub wall_time_s: f64,
    pub predicted_duration_s: Option<f64>,
    pub achieved_duration_s: f64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p90_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub interrupted: bool,
    pub stopped_reason: Option<String>,
    pub started_at: String,
    pub sizeup_version: String,
    /// With `--hold-rate`: the rate held, the limits, and the in-flight count over time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<super::hold::HoldRecord>,
    /// With a plan: the rate per GPU achieved over the rate per GPU the sweep measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaling_efficiency: Option<f64>,
    /// The server's own figures over the run, from its metrics (`--server-metrics`).
    pub server: Option<RunServer>,
    /// Answers of 429 (the server's rate limit) that were waited out and sent again: none of
    /// them used a retry (`retries` counts only the other failures).
    #[serde(default)]
    pub rate_limited: u64,
    /// `--completion-window`, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_window_s: Option<f64>,
    /// Lines the completion window closed on before they were answered, listed in the errors
    /// file as `batch_expired`; `--resume` sends them.
    #[serde(default)]
    pub expired: u64,
    /// OpenAI Batch's counts: `failed` holds every line not completed (failed, expired, or
    /// not finished), as OpenAI counts an expired request.
    pub request_counts: RequestCounts,
    /// Prompt tokens the server's prefix cache served, as the answers reported them
    /// (`usage.prompt_tokens_details.cached_tokens`); absent when no answer said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_prompt_tokens: Option<u64>,
    /// Retries sent after a timeout: the server may have done the first attempt's work too,
    /// and a hosted API may bill both.
    #[serde(default)]
    pub retried_after_timeout: u64,
    /// Which fields this file may hold (`model::schema`). Last, as the keys before it keep
    /// their order.
    pub schema_version: u32,
}

/// OpenAI Batch's `request_counts`.
#[derive(Serialize, Clone, Copy, Debug, PartialEq)]
pub struct RequestCounts {
    pub total: u64,
    pub completed: u64,
    pub failed: u64,
}

/// What the server's metrics said over a whole run: the level figures, over the run.
#[derive(Serialize)]
pub struct RunServer {
    pub dialect: String,
    pub metrics_url: String,
    #[serde(flatten)]
    pub figures: crate::stats::server::ServerLevel,
}
