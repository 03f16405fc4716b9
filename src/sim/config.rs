//! `SimConfig`, everything that shapes the simulated resource, and its defaults. A file of its
//! own so that the server's parts read it from a sibling rather than from `sim/mod.rs`, which
//! uses them (no import circle), and so `sizeup::sim::SimConfig` stays one re-export.

use super::gpu;
use crate::secret::Secret;
use std::time::Duration;

/// Everything that shapes the simulated resource.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub gpus: usize,
    pub params: gpu::GpuParams,
    /// How the router in front of the GPUs spreads requests.
    pub route: gpu::RoutePolicy,
    /// Relative spread of each request's service time: a multiplier drawn uniformly from
    /// `[1 - jitter, 1 + jitter]`.
    pub jitter: f64,
    pub seed: u64,
    /// Output tokens when the request body sets no `max_tokens`.
    pub default_max_tokens: u32,
    /// The model `/v1/models` lists and answers name when a request names none.
    pub model: String,
    /// Answer a request naming any other model with vLLM's 404 (`--served-model-name`);
    /// otherwise every name is served, as the simulator stands in for the user's endpoint.
    pub strict_model: bool,
    /// Floats in each `/v1/embeddings` vector.
    pub embedding_dim: usize,
    pub fail_rate: f64,
    pub throttle_rate: f64,
    pub reset_rate: f64,
    /// `Retry-After` sent with 429 answers.
    pub retry_after: Duration,
    /// A hosted API's limits, requests and tokens (prompt + max_tokens) per minute: announced
    /// in `x-ratelimit-*` headers, 429 past them.
    pub rpm_limit: Option<u64>,
    pub tpm_limit: Option<u64>,
    pub api_key: Option<Secret>,
    /// Time from `POST /resource {"state":"on"}` until inference answers.
    pub start_delay: Duration,
    /// Start switched off (inference answers 503 until switched on).
    pub start_off: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            gpus: 1,
            params: gpu::GpuParams {
                batch: 8,
                prefill_ms_per_1k: 10.0,
                decode_step_ms: 5.0,
                decode_step_ms_per_seq: 0.05,
                prefix_cache_tokens: 0,
            },
            route: gpu::RoutePolicy::LeastLoaded,
            jitter: 0.0,
            seed: 1,
            default_max_tokens: 16,
            model: "sizeup-sim".to_string(),
            strict_model: false,
            embedding_dim: 16,
            fail_rate: 0.0,
            throttle_rate: 0.0,
            reset_rate: 0.0,
            retry_after: Duration::from_secs(1),
            rpm_limit: None,
            tpm_limit: None,
            api_key: None,
            start_delay: Duration::ZERO,
            start_off: false,
        }
    }
}
