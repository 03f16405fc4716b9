//! The typed words of the domain: what limited a sweep (the knee's and the server's view),
//! which estimate sized a plan, what a choice minimises, and the service-level objectives.
//! Each serializes as the lowercase word the file contracts have always held.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The limits a hosted API's answers announced (`x-ratelimit-limit-requests` and `-tokens`),
/// per minute (summary.json `rate_limits`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnouncedLimits {
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
}

/// What stopped throughput from growing past the knee (summary.json `knee.limited_by`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitedBy {
    /// Throughput stopped growing: the endpoint is saturated.
    Saturation,
    /// Throughput was still growing, but higher levels break the SLO.
    Slo,
}

impl LimitedBy {
    /// Stable lowercase name for reports and JSON: `"saturation"` or `"slo"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            LimitedBy::Saturation => "saturation",
            LimitedBy::Slo => "slo",
        }
    }
}

/// What limited throughput at the knee on the server's own evidence (summary.json
/// `server.verdict.limit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerLimit {
    /// The server's batch was full and requests queued inside it.
    ServerBatch,
    /// It ran them all, but each step slowed as the batch grew.
    Compute,
    /// sizeup itself was slow to start requests.
    Client,
    /// A rate limiter or failures capped throughput.
    Errors,
    /// A hosted API's (or a gateway's) rate limit: answers of 429, or a rate at the limit
    /// the answers announced (`x-ratelimit-*`). Known without the server's metrics.
    RateLimit,
    /// Requests waited before the server (router, gateway), or other replicas served them.
    Upstream,
    /// The metrics cannot tell.
    Unconfirmed,
}

impl ServerLimit {
    pub fn as_str(&self) -> &'static str {
        match self {
            ServerLimit::ServerBatch => "server_batch",
            ServerLimit::Compute => "compute",
            ServerLimit::Client => "client",
            ServerLimit::Errors => "errors",
            ServerLimit::RateLimit => "rate_limit",
            ServerLimit::Upstream => "upstream",
            ServerLimit::Unconfirmed => "unconfirmed",
        }
    }
}

/// Which per-GPU throughput the GPU count is sized from (plan.json `estimate`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Estimate {
    /// The lower confidence bound: conservative, the default.
    #[default]
    Low,
    /// The point estimate.
    Mean,
}

impl Estimate {
    pub fn as_str(self) -> &'static str {
        match self {
            Estimate::Low => "low",
            Estimate::Mean => "mean",
        }
    }
}

/// What choosing among deployment options minimises (plan.json `objective`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// The cheapest option that meets the target (deadline) and limits; the default.
    #[default]
    Cost,
    /// The fastest option within `--budget` and the limits.
    Time,
}

impl Objective {
    pub fn as_str(self) -> &'static str {
        match self {
            Objective::Cost => "cost",
            Objective::Time => "time",
        }
    }
}

/// Service-level objectives: a level that breaks one is not used, by the sweep's knee or by
/// the plan. The one place they are checked and judged.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Slo {
    /// Highest acceptable p95 end-to-end latency, ms.
    pub max_latency_p95_ms: Option<f64>,
    /// Highest acceptable p95 time to first token, ms.
    pub max_ttft_p95_ms: Option<f64>,
    /// Highest acceptable share of failed requests, 0..=1.
    pub max_error_rate: Option<f64>,
}

impl Slo {
    /// Positive finite limits, an error rate in [0, 1]; the message names the flag.
    pub fn validate(&self) -> Result<(), String> {
        for (v, flag) in [
            (self.max_latency_p95_ms, "--max-latency-p95-ms"),
            (self.max_ttft_p95_ms, "--max-ttft-p95-ms"),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return Err(format!("{flag} must be a positive number of ms, got {v}"));
                }
            }
        }
        if let Some(v) = self.max_error_rate {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("--max-error-rate must be in [0, 1], got {v}"));
            }
        }
        Ok(())
    }

    /// Whether a level with these figures meets every objective that is set. NaN fails; a
    /// level without TTFT cannot show it meets a TTFT objective.
    pub fn met(&self, latency_p95_ms: f64, ttft_p95_ms: Option<f64>, error_rate: f64) -> bool {
        self.max_latency_p95_ms.is_none_or(|m| latency_p95_ms <= m)
            && self.max_ttft_p95_ms.is_none_or(|m| ttft_p95_ms.is_some_and(|t| t <= m))
            && self.max_error_rate.is_none_or(|m| error_rate <= m)
    }

    /// The objectives in force as flags, for messages: `--max-latency-p95-ms 500, ...`.
    pub fn words(&self) -> String {
        let mut parts = Vec::new();
        if let Some(v) = self.max_latency_p95_ms {
            parts.push(format!("--max-latency-p95-ms {v}"));
        }
        if let Some(v) = self.max_ttft_p95_ms {
            parts.push(format!("--max-ttft-p95-ms {v}"));
        }
        if let Some(v) = self.max_error_rate {
            parts.push(format!("--max-error-rate {v}"));
        }
        parts.join(", ")
    }
}

/// Each word prints as the files hold it.
macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_as_str!(LimitedBy, ServerLimit, Estimate, Objective);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_serialize_as_the_files_hold_them() {
        let j = |v: serde_json::Value| v.to_string();
        let v = |x: &dyn ErasedJson| x.value();
        assert_eq!(j(v(&LimitedBy::Saturation)), "\"saturation\"");
        assert_eq!(j(v(&Estimate::Mean)), "\"mean\"");
        assert_eq!(j(v(&Objective::Time)), "\"time\"");
        for l in [
            ServerLimit::ServerBatch,
            ServerLimit::Compute,
            ServerLimit::Client,
            ServerLimit::Errors,
            ServerLimit::Upstream,
            ServerLimit::Unconfirmed,
        ] {
            assert_eq!(j(v(&l)), format!("\"{}\"", l.as_str()));
        }
        assert!(serde_json::from_str::<Estimate>("\"median\"").is_err());
    }

    /// A value of any serializable type, for the table above.
    trait ErasedJson {
        fn value(&self) -> serde_json::Value;
    }
    impl<T: Serialize> ErasedJson for T {
        fn value(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap()
        }
    }

    #[test]
    fn slo_checks_and_judges() {
        let slo = Slo {
            max_latency_p95_ms: Some(100.0),
            max_ttft_p95_ms: Some(10.0),
            max_error_rate: Some(0.1),
        };
        assert!(slo.validate().is_ok());
        assert!(slo.met(100.0, Some(10.0), 0.1));
        assert!(!slo.met(f64::NAN, Some(1.0), 0.0));
        assert!(!slo.met(50.0, None, 0.0), "no TTFT cannot meet a TTFT objective");
        assert!(!slo.met(50.0, Some(1.0), 0.2));
        assert!(Slo {
            max_error_rate: Some(1.5),
            ..Slo::default()
        }
        .validate()
        .unwrap_err()
        .contains("--max-error-rate"));
        assert!(Slo {
            max_latency_p95_ms: Some(0.0),
            ..Slo::default()
        }
        .validate()
        .unwrap_err()
        .contains("--max-latency-p95-ms"));
        assert!(
            Slo::default().met(f64::NAN, None, f64::NAN),
            "no objective set: every level is fine"
        );
        assert_eq!(
            slo.words(),
            "--max-latency-p95-ms 100, --max-ttft-p95-ms 10, --max-error-rate 0.1"
        );
    }
}
