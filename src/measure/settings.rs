//! The validated settings of a sweep, apart from `mod.rs` so that the level loop
//! (`level.rs`) can read them without importing from its parent.

use super::levels::Levels;
use crate::api::Api;
use crate::model::Slo;
use crate::scrape::MetricsSpec;
use std::time::Duration;

/// Validated measurement settings (made from the flags by `commands`).
#[derive(Clone, Debug)]
pub struct Settings {
    pub gpus: u32,
    pub levels: Levels,
    pub warmup: Duration,
    pub ci_width: f64,
    pub min_requests: u64,
    pub max_duration: Duration,
    pub slo: Slo,
    pub api: Api,
    /// `--stop-after-failures`: a level stops (exit 3) on a failure every answer repeats.
    pub stop_after_failures: u32,
    /// `--server-metrics` and `--scrape-interval`.
    pub server_metrics: MetricsSpec,
    pub scrape_interval: Duration,
    /// `sweep --name`: the deployment option's label, recorded in summary.json.
    pub name: Option<String>,
    /// `sweep --gpu-hour-cost`: its price per GPU-hour, recorded in summary.json.
    pub gpu_hour_cost: Option<f64>,
    /// `--reset-prefix-cache`: ask the server to empty its prefix cache before the first level.
    pub reset_prefix_cache: bool,
}
