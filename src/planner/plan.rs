//! plan.json: the plan and the comparison of options it carries. A user-facing contract
//! (`run --plan` and users' scripts read it): fields are added, never renamed or reordered.

use crate::model::{CapacityModel, Estimate, Objective};
use serde::{Deserialize, Serialize};

/// The result of planning; serialized as the plan file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    /// Requests per minute the job must sustain.
    pub target_rpm: f64,
    /// GPUs (replicas) to run. Null in plan.json when `limit` sizes the job (then the sweep's
    /// GPU count inside, which the resource keeps).
    #[serde(deserialize_with = "gpus_or_none")]
    pub gpus: u32,
    /// Concurrency to drive against each GPU.
    pub concurrency_per_gpu: u32,
    /// `gpus * concurrency_per_gpu`.
    pub total_concurrency: u32,
    /// Mean RPM per GPU at the chosen level: the plateau that the levels beyond the knee
    /// measure together (`plateau_levels`), not one level's own measurement.
    pub rpm_per_gpu: f64,
    /// Its 95% CI low bound, RPM per GPU.
    pub rpm_per_gpu_low: f64,
    /// `gpus * rpm_per_gpu`.
    pub expected_rpm: f64,
    /// p95 latency measured at the chosen level, ms.
    pub expected_latency_p95_ms: f64,
    /// Headroom fraction used.
    pub headroom: f64,
    /// Requests in the job, if given.
    pub requests: Option<u64>,
    /// `requests / expected_rpm * 60`, seconds, excluding startup.
    pub expected_duration_s: Option<f64>,
    /// `gpus * (duration + startup) / 3600 * gpu_hour_cost`.
    pub cost_usd: Option<f64>,
    /// Sweep folder; left empty by [`plan`], filled in by the command.
    pub sweep: String,
    /// GPUs behind the endpoint during the sweep.
    pub sweep_gpus: u32,
    /// Sweep concurrency level the plan is based on.
    pub chosen_concurrency: u32,
    /// The job's mix the plan was sized for (with `plan --input`, or the sweep's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadMix>,
    /// The chosen level's token-aware latency model, when it sized the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_model: Option<CapacityModel>,
    /// Tokens per second one GPU serves at the plan's rate and mix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_s_per_gpu: Option<TokensPerS>,
    /// GPU cost per million tokens (with `--gpu-hour-cost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_million_tokens: Option<UsdPerMillion>,
    /// `"low"` or `"mean"`: which per-GPU RPM sized the plan.
    pub estimate: Estimate,
    /// Startup seconds billed per GPU.
    pub startup_s: f64,
    /// The chosen option's label (`sweep --name`, else its folder's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Price of one of the chosen option's GPUs for one hour, USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_hour_cost: Option<f64>,
    /// With `--deadline`: seconds from switching on to the last answer; `target_rpm` came from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_s: Option<f64>,
    /// `"cost"` or `"time"`: how the option was chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<Objective>,
    /// Every option compared, the chosen one marked, and why each other lost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<OptionRow>,
    /// With `plan --shards N`: the job runs as N shards, which share `total_concurrency`;
    /// `run --plan --shard auto` takes its shard count from here, not from the scheduler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<u64>,
    /// The concurrencies of the sweep levels pooled into the plateau `rpm_per_gpu` comes from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plateau_levels: Vec<u32>,
    /// With sweeps of one `--name` at different GPU counts: the scaling they measured and the
    /// efficiency applied at `gpus` (`rpm_per_gpu` = the swept rate per GPU x efficiency).
    /// Absent: the plan assumes linear scaling from `sweep_gpus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<PlanScaling>,
    /// Set when a hosted API's rate limit, not GPUs, sizes the job (the sweep's verdict
    /// `rate_limit`): the limit, the rate `run --plan` holds, the evidence. plan.json's `gpus`
    /// is then null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<PlanLimit>,
    /// With `plan --input` (or `auto`) where the job's file was replayed through a prefix
    /// cache: what its lines share, what the sweep's cache served, and what several replicas
    /// (each with its own cache) would leave of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_cache: Option<PlanPrefixCache>,
    /// Which fields this file may hold (`model::schema`); readers refuse a newer one. Last,
    /// as the keys before it keep their order.
    #[serde(default = "crate::model::schema::unversioned")]
    pub schema_version: u32,
}

/// Measured scaling as the plan applied it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PlanScaling {
    /// Each GPU count measured, with its per-GPU rate relative to the smallest count's.
    pub measured: Vec<super::scaling::ScalingPoint>,
    /// The efficiency at the plan's GPU count (interpolated or extrapolated in ln GPUs).
    pub efficiency: f64,
    /// RPM per GPU the base sweep measured, before the efficiency.
    pub swept_rpm_per_gpu: f64,
}

/// What the job's lines share through a prefix cache, as the plan reckoned it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PlanPrefixCache {
    /// Tokens of each replica's cache the job's file was replayed through.
    pub cache_tokens: Option<u64>,
    /// Share of the job's prompt its lines, read in file order through one such cache, share.
    pub job_share: f64,
    /// Share of the sweep's prompt tokens the server's cache served.
    pub sweep_share: Option<f64>,
    /// The share the plan was sized for: the job's where it differs from the sweep's by more
    /// than 10 points, else the sweep's.
    pub sized_share: f64,
    /// The job's share with its lines spread round-robin over the plan's `gpus` replicas,
    /// each with its own cache (the plan assumes one cache: a router that keeps related
    /// lines on one replica); and the GPUs a plan at that share needs (null: none meets it),
    /// with the RPM per GPU it plans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_robin_share: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_robin_gpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_robin_rpm_per_gpu: Option<f64>,
}

/// A job's mean request, in tokens.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WorkloadMix {
    pub requests: Option<u64>,
    pub prompt_tokens_mean: f64,
    pub output_tokens_mean: f64,
    /// Where the figures come from: `sweep` (measured) or the job file (estimated).
    pub source: String,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct TokensPerS {
    pub input: f64,
    pub output: f64,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct UsdPerMillion {
    pub total: Option<f64>,
    pub output: Option<f64>,
}

/// One row of the comparison, as plan.json's `options` lists it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OptionRow {
    pub name: String,
    pub sweep: String,
    pub gpu_hour_cost: Option<f64>,
    /// The operating level under the SLO flags; null when no level meets them.
    pub chosen_concurrency: Option<u32>,
    /// GPUs the target needs; `gpus` is this capped at `--max-gpus`.
    pub gpus_needed: Option<u32>,
    pub gpus: Option<u32>,
    pub concurrency_per_gpu: Option<u32>,
    pub total_concurrency: Option<u32>,
    pub rpm_per_gpu: Option<f64>,
    pub expected_rpm: Option<f64>,
    pub expected_latency_p95_ms: Option<f64>,
    pub expected_duration_s: Option<f64>,
    pub cost_usd: Option<f64>,
    pub usd_per_million_tokens: Option<f64>,
    pub meets_slo: bool,
    pub meets_target: bool,
    /// Null without `--deadline`.
    pub meets_deadline: Option<bool>,
    pub within_max_gpus: bool,
    /// Null without `--budget`.
    pub within_budget: Option<bool>,
    pub chosen: bool,
    /// Why this option was not chosen; null for the chosen one.
    pub lost_because: Option<String>,
}

/// `gpus` as plan.json holds it: a count, or null (0 here; `sizing::read_plan` puts back the
/// sweep's count) when a rate limit sizes the job.
fn gpus_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    Ok(Option::<u32>::deserialize(d)?.unwrap_or(0))
}

impl Plan {
    /// plan.json's text: the fields, with `gpus` null when a rate limit sizes the job.
    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).expect("a plan serializes");
        if self.limit.is_some() {
            v["gpus"] = serde_json::Value::Null;
        }
        serde_json::to_string_pretty(&v).expect("a value serializes")
    }
}

/// plan.json `limit`: what sizes the job when it is not a GPU count.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PlanLimit {
    /// `rate_limit`.
    pub kind: crate::model::ServerLimit,
    /// The most the endpoint served, requests per minute: the sweep's best rate, within a
    /// request limit its answers announced.
    pub rpm: f64,
    /// The rate `run --plan` holds (its `--rate` unless one is given): the limit, or the
    /// target when that is lower.
    pub run_rpm: f64,
    /// The limits the answers announced, per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced: Option<crate::model::AnnouncedLimits>,
    /// The sweep's evidence, in a sentence.
    pub evidence: String,
    /// USD per million input and output tokens (`--price-per-1m-input-tokens`, `-output-`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_million_input_tokens: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_million_output_tokens: Option<f64>,
}
