//! The capacity model, the one home of "latency = a + b x prompt + b' x cached prompt + c x
//! output tokens": fitted per level by `stats::fit`, stored in summary.json's levels, used by
//! the planner to size a job of another mix or sharing, and written to plan.json when it sized
//! the plan.

use serde::{Deserialize, Serialize};

/// A fitted latency model (ms) and how well it explains the level.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapacityModel {
    pub a_ms: f64,
    pub b_ms_per_prompt_token: f64,
    /// What a prompt token the server's prefix cache served costs, where the level told it
    /// from nothing (hits and misses of one length); None: taken as free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b_ms_per_cached_token: Option<f64>,
    pub c_ms_per_output_token: f64,
    /// Share of the latency variance the model explains (1 when all requests are alike and
    /// the model predicts their latency).
    pub r2: f64,
    /// Requests fitted.
    pub n: u64,
    /// The mix it was fitted on: the model holds inside the range it saw.
    pub prompt_tokens_min: f64,
    pub prompt_tokens_max: f64,
    pub output_tokens_min: f64,
    pub output_tokens_max: f64,
    /// The prompt it prices is the tokens the server's prefix cache did not serve (the
    /// answers reported their cached tokens), cached ones taken as free; else every prompt
    /// token.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prompt_uncached: bool,
}

impl CapacityModel {
    /// Predicted mean latency (ms) of requests with these mean token counts.
    pub fn latency_ms(&self, prompt_tokens: f64, output_tokens: f64) -> f64 {
        self.a_ms + self.b_ms_per_prompt_token * prompt_tokens + self.c_ms_per_output_token * output_tokens
    }

    /// Predicted mean latency (ms) of requests with `prompt_tokens` prefilled, `cached_tokens`
    /// served by a prefix cache (at b', free where the fit could not price them) and
    /// `output_tokens`.
    pub fn latency_split_ms(&self, prompt_tokens: f64, cached_tokens: f64, output_tokens: f64) -> f64 {
        self.latency_ms(prompt_tokens, output_tokens) + self.b_ms_per_cached_token.unwrap_or(0.0) * cached_tokens
    }

    /// Whether a mix lies within what the fit saw (10% slack at both ends).
    pub fn covers(&self, prompt_tokens: f64, output_tokens: f64) -> bool {
        let within = |v: f64, lo: f64, hi: f64| v >= lo * 0.9 - 1e-9 && v <= hi * 1.1 + 1e-9;
        within(prompt_tokens, self.prompt_tokens_min, self.prompt_tokens_max)
            && within(output_tokens, self.output_tokens_min, self.output_tokens_max)
    }
}
