//! What a run is given and gives back: its validated settings (and a shard's part of them),
//! the batch's fixed context, the outcome, and the one way a prediction is set against what
//! the run took. Beside the pipeline's files, which all read it, so none reads `mod.rs`.

use super::hold::HoldSpec;
use crate::api::Api;
use crate::batch::Format;
use crate::client::{Client, MaxTokensField};
use crate::planner::Plan;
use crate::resource::ResourceSpec;
use crate::ui::ExitStatus;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Everything a run needs, validated.
pub struct RunSettings {
    pub input: PathBuf,
    pub format: Option<Format>,
    pub output: PathBuf,
    pub summary_path: PathBuf,
    pub concurrency: u32,
    pub plan: Option<Plan>,
    pub resume: bool,
    pub shard: Option<(u64, u64)>,
    pub gpus: u32,
    /// With `--shard` and a plan or `--rate`: this shard's part of the job's settings.
    pub share: Option<ShardShare>,
    pub tuning: Tuning,
    pub resource: ResourceSpec,
    /// Holding the plan's rate (`--hold-rate`); `None` keeps `concurrency` fixed.
    pub hold: Option<HoldSpec>,
}

/// How the batch is sent (`--rate`, `--retries`, `--retry-base`, `--retry-max`,
/// `--skip-invalid`, `--max-tokens`), validated.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Send-rate cap, requests per minute.
    pub rate: Option<f64>,
    /// Token budget, tokens per minute (prompt estimate + max_tokens per request).
    pub tokens_per_minute: Option<f64>,
    pub retries: u32,
    pub retry_base: std::time::Duration,
    pub retry_max: std::time::Duration,
    pub skip_invalid: bool,
    /// Output tokens for text and CSV prompts.
    pub max_tokens: Option<u32>,
    /// `--hold-rate`: given on or off, or left to the command's default.
    pub hold_rate: Option<bool>,
    /// `--completion-window`: its length, and when it closes (counted from the command's start).
    pub completion_window: Option<(Duration, tokio::time::Instant)>,
}

/// One shard's part of a plan: shards of one job share its concurrency (and rate) instead of
/// each taking the whole, which would put N times the planned requests in flight.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct ShardShare {
    pub index: u64,
    pub count: u64,
    /// This shard's requests in flight.
    pub concurrency: u32,
    /// The whole job's (the plan's `total_concurrency`).
    pub total_concurrency: u32,
    /// This shard's part of `--rate`, requests per minute.
    pub rate_rpm: Option<f64>,
    /// This shard's part of `--max-tokens-per-minute`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<f64>,
}

impl ShardShare {
    /// Shard `index` of `count` takes `total / count`, the first `total % count` shards one
    /// more, so the shares sum to the total; never less than 1.
    /// `rate` and `tpm` (requests and tokens per minute) are the whole job's budgets.
    pub fn new(index: u64, count: u64, total_concurrency: u32, rate: Option<f64>, tpm: Option<f64>) -> ShardShare {
        let n = count.max(1);
        let base = u64::from(total_concurrency) / n;
        let extra = u64::from(index < u64::from(total_concurrency) % n);
        ShardShare {
            index,
            count: n,
            concurrency: (base + extra).max(1) as u32,
            total_concurrency,
            rate_rpm: rate.map(|r| r / n as f64),
            tokens_per_minute: tpm.map(|r| r / n as f64),
        }
    }
}

impl RunSettings {
    /// The rate the run is expected to reach: the plan's (this shard's part of it), else `--rate`.
    pub fn planned_rpm(&self) -> Option<f64> {
        let rate = self.rate();
        match (&self.plan, self.share) {
            (Some(p), Some(sh)) if sh.total_concurrency > 0 => {
                Some(p.expected_rpm * f64::from(sh.concurrency) / f64::from(sh.total_concurrency))
            }
            (Some(p), _) => Some(p.expected_rpm),
            (None, _) => rate,
        }
        // A --rate below the plan's is what the run will reach.
        .map(|planned| rate.map_or(planned, |r| planned.min(r)))
    }

    /// How the run holds its planned rate, when `on` and there is a plan to hold; the latency
    /// limit is the SLO's p95 (`slo_p95_ms`) and never over 1.5x the plan's own p95.
    pub fn hold_spec(&self, on: bool, slo_p95_ms: Option<f64>) -> Option<HoldSpec> {
        let plan = self.plan.as_ref().filter(|_| on)?;
        let target_rpm = self.planned_rpm().filter(|r| *r > 0.0)?;
        let plan_p95 = Some(plan.expected_latency_p95_ms * 1.5).filter(|v| v.is_finite() && *v > 0.0);
        let latency_limit_ms = match (plan_p95, slo_p95_ms) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(f64::INFINITY),
        };
        // Little's law: the mean time a request is in flight at the planned rate. A window
        // sees twenty turnovers of the in-flight requests (a rate within a few percent); the
        // settling time after a change two.
        let in_flight_ms = f64::from(self.concurrency) * 60_000.0 / target_rpm;
        let ms = |v: f64, lo: u64, hi: u64| Duration::from_millis((v as u64).clamp(lo, hi));
        Some(HoldSpec {
            target_rpm,
            latency_limit_ms,
            start: self.concurrency,
            ceiling: super::hold::ceiling(self.concurrency),
            window: ms(in_flight_ms * 20.0, 2_000, 20_000),
            settle: ms(in_flight_ms * 2.0, 100, 5_000),
        })
    }

    /// The most requests this run may have in flight: the hold's ceiling, else `concurrency`.
    pub fn most_in_flight(&self) -> u32 {
        self.hold.map_or(self.concurrency, |h| h.ceiling)
    }

    /// The send-rate cap for this process.
    pub fn rate(&self) -> Option<f64> {
        self.share.map_or(self.tuning.rate, |sh| sh.rate_rpm)
    }

    /// The token budget for this process, tokens per minute.
    pub fn tokens_per_minute(&self) -> Option<f64> {
        self.share
            .map_or(self.tuning.tokens_per_minute, |sh| sh.tokens_per_minute)
    }
}

/// What a run reports back to its caller (`run` or `auto`).
pub struct RunOutcome {
    pub status: ExitStatus,
    pub wall_time_s: f64,
    pub achieved_rpm: f64,
    pub requests: u64,
    /// The requests sent over the planned rate, seconds (with a plan).
    pub predicted_duration_s: Option<f64>,
}

/// The one way a run's prediction is set against what it took: `predicted 12.0s, achieved
/// 12.6s (+5.0%)`, in the run's last line and in auto's report.
pub fn predicted_vs_achieved(predicted_s: f64, achieved_s: f64) -> String {
    format!(
        "predicted {predicted_s:.1}s, achieved {achieved_s:.1}s ({:+.1}%)",
        (achieved_s / predicted_s.max(1e-9) - 1.0) * 100.0
    )
}

/// A batch ready to send: settings, how bodies are built, and the client.
pub struct Batch<'a> {
    pub settings: &'a RunSettings,
    pub api: Api,
    pub field: MaxTokensField,
    pub model: Option<String>,
    pub client: Arc<Client>,
    /// Names the credential variable when the endpoint refuses the key.
    pub key_hint: String,
    /// `--stop-after-failures`: see [`attempt::Streak`].
    pub stop_after_failures: u32,
    /// The server's metrics during the run (run-summary.json `server`).
    pub server: Option<crate::scrape::Scraper>,
}

#[cfg(test)]
mod tests {
    use super::ShardShare;

    #[test]
    fn shard_shares_sum_to_the_plan() {
        for (total, n) in [(16u32, 4u64), (17, 4), (3, 2), (64, 7), (1, 1)] {
            let shares: Vec<u32> = (0..n)
                .map(|k| ShardShare::new(k, n, total, None, None).concurrency)
                .collect();
            assert_eq!(shares.iter().sum::<u32>(), total, "{total} over {n}: {shares:?}");
            assert!(shares.iter().max().unwrap() - shares.iter().min().unwrap() <= 1);
        }
        // More shards than slots: each still sends (at least 1).
        assert_eq!(ShardShare::new(4, 5, 3, None, None).concurrency, 1);
        let sh = ShardShare::new(1, 4, 16, Some(6000.0), Some(400_000.0));
        assert_eq!((sh.rate_rpm, sh.tokens_per_minute), (Some(1500.0), Some(100_000.0)));
    }
}
