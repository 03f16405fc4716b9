//! A sweep's results: the rows and the summary that `sweep` writes (levels.csv, requests.csv,
//! summary.json) and `plan` reads. A user-facing contract: field names and order define the
//! CSV headers and the JSON keys, so fields are added, never renamed or reordered.

use super::capacity::CapacityModel;
use super::limits::{LimitedBy, ServerLimit};
use super::schema;
use crate::api::Api;
use serde::{Deserialize, Deserializer, Serialize};

/// Aggregated measurements for one concurrency level of the sweep.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LevelRow {
    /// Number of requests kept in flight at this level.
    pub concurrency: u32,
    /// Length of the measurement window in seconds.
    #[serde(deserialize_with = "f64_or_nan")]
    pub duration_s: f64,
    /// Requests that completed successfully inside the window.
    pub requests_ok: u64,
    /// Requests that failed inside the window.
    pub requests_failed: u64,
    /// Successful requests per minute.
    #[serde(deserialize_with = "f64_or_nan")]
    pub rpm: f64,
    /// Lower bound of the RPM confidence interval.
    #[serde(deserialize_with = "f64_or_nan")]
    pub rpm_ci_low: f64,
    /// Upper bound of the RPM confidence interval.
    #[serde(deserialize_with = "f64_or_nan")]
    pub rpm_ci_high: f64,
    /// `rpm` divided by the number of GPUs behind the endpoint.
    #[serde(deserialize_with = "f64_or_nan")]
    pub rpm_per_gpu: f64,
    /// Median end-to-end latency in milliseconds.
    #[serde(deserialize_with = "f64_or_nan")]
    pub latency_p50_ms: f64,
    /// 90th percentile end-to-end latency in milliseconds.
    #[serde(deserialize_with = "f64_or_nan")]
    pub latency_p90_ms: f64,
    /// 95th percentile end-to-end latency in milliseconds.
    #[serde(deserialize_with = "f64_or_nan")]
    pub latency_p95_ms: f64,
    /// 99th percentile end-to-end latency in milliseconds.
    #[serde(deserialize_with = "f64_or_nan")]
    pub latency_p99_ms: f64,
    /// Median time to first token in milliseconds (streaming only).
    pub ttft_p50_ms: Option<f64>,
    /// 95th percentile time to first token in milliseconds (streaming only).
    pub ttft_p95_ms: Option<f64>,
    /// Median time per output token in milliseconds (streaming only).
    pub tpot_p50_ms: Option<f64>,
    /// Output tokens generated per second across all requests.
    #[serde(deserialize_with = "f64_or_nan")]
    pub output_tokens_per_s: f64,
    /// Fraction (0..=1) of requests that failed.
    #[serde(deserialize_with = "f64_or_nan")]
    pub error_rate: f64,
    /// True when the load generator, not the server, was the bottleneck.
    pub client_limited: bool,
    /// Prompt (input) tokens per second of the successful requests in the window; the figure
    /// of an embedding job. Empty when the endpoint reports no prompt tokens.
    #[serde(default = "nan", deserialize_with = "f64_or_nan")]
    pub input_tokens_per_s: f64,
    /// Measured requests that repeated an input line already sent in this sweep (the sample
    /// was used up); a prefix cache answers those faster, so the level may look faster.
    #[serde(default)]
    pub repeated_requests: u64,
    /// The server's own figures over the level's window, from its Prometheus `/metrics`
    /// (empty when it has none sizeup knows): requests running (its batch), mean and max over
    /// the scrapes; requests waiting inside the server; the highest KV cache usage (0..1);
    /// preemptions (counter increase); output tokens per second (counter increase / time).
    #[serde(default)]
    pub server_running_mean: Option<f64>,
    #[serde(default)]
    pub server_running_max: Option<f64>,
    #[serde(default)]
    pub server_waiting_mean: Option<f64>,
    #[serde(default)]
    pub server_kv_cache_usage_max: Option<f64>,
    #[serde(default)]
    pub server_preemptions: Option<f64>,
    #[serde(default)]
    pub server_output_tokens_per_s: Option<f64>,
    /// Measured requests answered 429: a hosted API's rate limit (or a gateway's) turned them
    /// away. A level whose rate stops with these climbing is held by the limit, not the GPUs.
    #[serde(default)]
    pub rate_limited: u64,
    /// Prompt tokens per second the server's prefix cache served, as the answers report them
    /// (`usage.prompt_tokens_details.cached_tokens`: OpenAI, vLLM with prompt token details);
    /// empty when the answers do not say.
    #[serde(default)]
    pub cached_prompt_tokens_per_s: Option<f64>,
    /// The share of prompt tokens the server's prefix cache served over the level, from its
    /// metrics (vLLM's prefix_cache_hits/queries counters, SGLang's cache_hit_rate).
    #[serde(default)]
    pub server_prefix_cache_hit_rate: Option<f64>,
    /// The share of the level's prompt bytes in leading blocks this sweep had sent before: the
    /// most of a prefix cache's hits its own lines explain (`measure/cache.rs`).
    #[serde(default)]
    pub own_prefix_share: Option<f64>,
    /// The server's hit rate is well above `own_prefix_share`: blocks the sweep never sent
    /// served the level (a cache warm from an earlier run, or another client's), so its rate
    /// is inflated.
    #[serde(default)]
    pub cache_inflated: bool,
    /// Answers served from blocks the sweep never sent: their cached share of the prompt over
    /// the share its own earlier lines explain by more than 30 points. Empty when the answers
    /// do not say what was cached.
    #[serde(default)]
    pub warm_requests: Option<u64>,
    /// The level's capacity model: latency = a + b x prompt tokens + c x output tokens (ms),
    /// fitted over its successful requests with token counts (summary.json only).
    #[serde(default)]
    pub capacity_model: Option<CapacityModel>,
}

fn nan() -> f64 {
    f64::NAN
}

/// The mix of requests a sweep measured, and how the file's own figures (prompt bytes, asked
/// output tokens) relate to the tokens the server reported: what lets `plan --input` estimate
/// another job's mix without a tokenizer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SweepMix {
    /// Successful requests the figures come from.
    pub requests: u64,
    pub prompt_tokens_mean: Option<f64>,
    pub output_tokens_mean: f64,
    pub prompt_bytes_mean: f64,
    pub requested_output_tokens_mean: Option<f64>,
    /// Reported prompt tokens per prompt byte.
    pub tokens_per_prompt_byte: Option<f64>,
    /// Reported output tokens per output token asked for (`max_tokens`): below 1 when answers
    /// stop early.
    pub output_per_requested_token: Option<f64>,
}

/// One recorded request, as written to `requests.csv`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RequestRow {
    /// Concurrency level the request was sent at.
    pub concurrency: u32,
    /// Start time in milliseconds since the start of the sweep.
    #[serde(deserialize_with = "f64_or_nan")]
    pub start_ms: f64,
    /// End-to-end latency in milliseconds.
    #[serde(deserialize_with = "f64_or_nan")]
    pub latency_ms: f64,
    /// Time to first token in milliseconds (streaming only).
    pub ttft_ms: Option<f64>,
    /// Prompt tokens, when known.
    pub prompt_tokens: Option<u64>,
    /// Output tokens, when known.
    pub output_tokens: Option<u64>,
    /// Outcome, e.g. an HTTP status code or `ok`.
    pub status: String,
    /// Error message; empty on success.
    pub error: String,
}

/// The knee of the throughput curve: where adding concurrency stops paying off.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct KneeRow {
    /// Concurrency level at the knee.
    pub concurrency: u32,
    /// RPM at the knee.
    #[serde(deserialize_with = "f64_or_nan")]
    pub rpm: f64,
    /// RPM per GPU at the knee.
    #[serde(deserialize_with = "f64_or_nan")]
    pub rpm_per_gpu: f64,
    /// What limited throughput beyond the knee, e.g. `saturation` or `errors`.
    pub limited_by: LimitedBy,
}

/// Everything a report needs about one sweep.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// Endpoint URL that was measured.
    pub endpoint: String,
    /// Model name sent with the requests.
    pub model: String,
    /// Number of GPUs behind the endpoint (0 if unknown).
    pub gpus: u32,
    /// One row per concurrency level, in sweep order.
    pub levels: Vec<LevelRow>,
    /// The knee, if one was detected.
    pub knee: Option<KneeRow>,
    /// Suggested in-flight requests per GPU for batch jobs.
    pub batch_size_per_gpu: Option<f64>,
    /// Highest RPM observed at any level.
    #[serde(deserialize_with = "f64_or_nan")]
    pub max_rpm: f64,
    /// Highest RPM per GPU observed at any level.
    #[serde(deserialize_with = "f64_or_nan")]
    pub max_rpm_per_gpu: f64,
    /// Start time of the sweep (RFC 3339).
    pub started_at: String,
    /// Version of sizeup that produced the report.
    pub sizeup_version: String,
    /// API flavour that was spoken (extension).
    pub api: Api,
    /// Target relative width of the RPM confidence interval (extension).
    #[serde(deserialize_with = "f64_or_nan")]
    pub ci_width_target: f64,
    /// Per level, same order as `levels`: whether the CI target was met (extension).
    pub ci_met: Vec<bool>,
    /// Per level, same order as `levels`: what it cost (seconds and requests, warm-up
    /// included) and why it ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub level_spend: Vec<LevelSpend>,
    /// True when token counts were estimated rather than reported (extension).
    pub tokens_estimated: bool,
    /// The mix the sweep measured (for `plan --input`).
    #[serde(default)]
    pub workload: Option<SweepMix>,
    /// Sampled workloads: requests sent (warm-ups included) that were lines not sent before.
    #[serde(default)]
    pub distinct_requests: Option<u64>,
    /// Sampled workloads: requests sent again because the sample was used up.
    #[serde(default)]
    pub repeated_requests: Option<u64>,
    /// The server's metrics, when sizeup could read them: which server, where, and what they
    /// say about the knee.
    #[serde(default)]
    pub server: Option<ServerInfo>,
    /// The rate limits the endpoint's answers announced (a hosted API's `x-ratelimit-*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<super::AnnouncedLimits>,
    /// The deployment option's label (`sweep --name`); `plan` falls back on the folder's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Price of one GPU of this deployment for one hour, USD (`sweep --gpu-hour-cost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_hour_cost: Option<f64>,
    /// Which fields this file may hold (`model::schema`); readers refuse a newer one. Last,
    /// as the keys before it keep their order.
    #[serde(default = "schema::unversioned")]
    pub schema_version: u32,
}

/// What one level of a sweep cost and why it ended (summary.json `level_spend`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LevelSpend {
    pub concurrency: u32,
    /// Wall seconds from the level's first request to its end, warm-up included.
    pub seconds: f64,
    /// Requests that finished in the level, warm-up included.
    pub requests: u64,
    pub ended_by: LevelEnd,
}

/// Why a level ended.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LevelEnd {
    /// Its CI reached `--ci-width`.
    CiMet,
    /// It showed itself below the knee: its CI's low bound at least 1.5 times the next lower
    /// level's rate. More precision there decides nothing.
    BelowKnee,
    /// The first level of a sweep with higher levels to come, at a rough CI (±20%): it only
    /// says where the climb starts.
    FirstLevel,
    /// `--max-duration` passed first.
    MaxDuration,
    /// A job sweep's share of the lines (or the whole budget) was spent.
    Lines,
    Interrupted,
    /// Every request failed, or the same failure repeated.
    Failures,
}

/// The server's own evidence for a sweep (summary.json `server`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ServerInfo {
    /// `vllm`, `sglang`, `tgi` or `llamacpp`.
    pub dialect: String,
    /// Where the metrics were read (credentials removed).
    pub metrics_url: String,
    /// The most requests the server ran at once in any scrape.
    pub running_max_observed: Option<f64>,
    /// What limited throughput at the knee on the server's evidence.
    #[serde(default)]
    pub verdict: Option<ServerVerdict>,
    /// Tokens one engine's prefix cache holds, where the server says (vLLM's
    /// cache_config_info: num_gpu_blocks x block_size): `plan --input`'s cache for the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_cache_tokens: Option<u64>,
}

/// The knee, as the server's metrics explain it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ServerVerdict {
    /// `server_batch` (the server's batch was full and requests queued in it), `compute` (it
    /// ran them all but each step slowed), `client`, `errors` (rate limit or failures),
    /// `upstream` (requests waited before the server) or `unconfirmed`.
    pub limit: ServerLimit,
    /// The figures behind it, in a sentence.
    pub evidence: String,
}

/// serde_json writes non-finite floats as `null`; reading `null` back as NaN keeps
/// a summary with a NaN in it loadable instead of failing the whole file.
fn f64_or_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Shared fixtures for the exporter and statistics tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub fn level(c: u32, rpm: f64, p95: f64) -> LevelRow {
        LevelRow {
            concurrency: c,
            duration_s: 60.0,
            requests_ok: (rpm.max(0.0)) as u64,
            requests_failed: 0,
            rpm,
            rpm_ci_low: rpm * 0.99,
            rpm_ci_high: rpm * 1.01,
            rpm_per_gpu: rpm / 2.0,
            latency_p50_ms: p95 * 0.8,
            latency_p90_ms: p95 * 0.95,
            latency_p95_ms: p95,
            latency_p99_ms: p95 * 1.2,
            ttft_p50_ms: Some(120.5),
            ttft_p95_ms: Some(240.25),
            tpot_p50_ms: None,
            output_tokens_per_s: rpm / 60.0 * 200.0,
            input_tokens_per_s: rpm / 60.0 * 50.0,
            repeated_requests: 0,
            server_running_mean: None,
            server_running_max: None,
            server_waiting_mean: None,
            server_kv_cache_usage_max: None,
            server_preemptions: None,
            server_output_tokens_per_s: None,
            rate_limited: 0,
            cached_prompt_tokens_per_s: None,
            server_prefix_cache_hit_rate: None,
            own_prefix_share: None,
            cache_inflated: false,
            warm_requests: None,
            capacity_model: None,
            error_rate: 0.0,
            client_limited: false,
        }
    }

    pub fn summary() -> Summary {
        Summary {
            schema_version: schema::SUMMARY,
            endpoint: "http://localhost:8000/v1".into(),
            model: "llama-3-8b".into(),
            gpus: 2,
            levels: vec![
                level(1, 1200.0, 110.0),
                level(4, 4600.0, 130.0),
                level(16, 19200.0, 180.0),
                level(64, 19500.0, 700.0),
            ],
            knee: Some(KneeRow {
                concurrency: 16,
                rpm: 19200.0,
                rpm_per_gpu: 9600.0,
                limited_by: LimitedBy::Saturation,
            }),
            batch_size_per_gpu: Some(8.0),
            max_rpm: 19500.0,
            max_rpm_per_gpu: 9750.0,
            started_at: "2025-01-01T00:00:00Z".into(),
            sizeup_version: "0.1.0".into(),
            api: Api::Chat,
            ci_width_target: 0.05,
            ci_met: vec![true, true, true, false],
            level_spend: Vec::new(),
            tokens_estimated: false,
            distinct_requests: None,
            repeated_requests: None,
            workload: None,
            server: None,
            rate_limits: None,
            name: None,
            gpu_hour_cost: None,
        }
    }

    /// Summaries that have broken exporters before: nothing, one level, NaNs, infs.
    pub fn nasty() -> Vec<Summary> {
        let mut empty = summary();
        empty.levels.clear();
        empty.ci_met.clear();
        empty.knee = None;
        empty.max_rpm = f64::NAN;

        let mut one = summary();
        one.levels.truncate(1);
        one.ci_met.truncate(1);
        one.gpus = 0;

        let mut nan = summary();
        for l in &mut nan.levels {
            l.rpm = f64::NAN;
            l.rpm_ci_low = f64::NAN;
            l.rpm_ci_high = f64::INFINITY;
            l.latency_p95_ms = f64::NAN;
            l.error_rate = f64::NAN;
            l.ttft_p50_ms = Some(f64::NAN);
        }
        nan.levels[0].concurrency = 0;
        nan.ci_met.clear();
        nan.knee.as_mut().unwrap().rpm = f64::NEG_INFINITY;
        nan.max_rpm = f64::NAN;
        nan.max_rpm_per_gpu = f64::INFINITY;
        nan.batch_size_per_gpu = Some(f64::NAN);

        let mut same = summary();
        for l in &mut same.levels {
            l.concurrency = 8;
            l.rpm = 0.0;
            l.rpm_ci_low = 0.0;
            l.rpm_ci_high = 0.0;
            l.latency_p95_ms = 0.0;
        }
        same.levels[1].concurrency = u32::MAX;
        vec![empty, one, nan, same]
    }
}
