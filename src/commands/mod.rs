//! One module per command: flags -> validated settings -> wiring -> [`ExitStatus`].
//! Shared here: SLO flag checks and the default report folder.

pub mod auto;
pub mod plan;
pub mod run;
pub mod sim;
pub mod sweep;

use crate::cli::SloArgs;
use crate::ui::usage_error;
use std::path::PathBuf;

pub use crate::files::ensure_dir;

/// Checks SLO flags: positive finite limits, an error rate in [0, 1].
pub fn validate_slo(s: &SloArgs) -> anyhow::Result<()> {
    for (v, flag) in [
        (s.max_latency_p95_ms, "--max-latency-p95-ms"),
        (s.max_ttft_p95_ms, "--max-ttft-p95-ms"),
    ] {
        if let Some(v) = v {
            if !(v.is_finite() && v > 0.0) {
                return Err(usage_error(
                    format!("{flag} must be a positive number of ms, got {v}"),
                    None,
                ));
            }
        }
    }
    if let Some(v) = s.max_error_rate {
        if !(0.0..=1.0).contains(&v) {
            return Err(usage_error(
                format!("--max-error-rate must be in [0, 1], got {v}"),
                None,
            ));
        }
    }
    Ok(())
}

/// `reports/<UTC timestamp>/`, e.g. `reports/20261126T162348Z`.
pub fn default_report_dir() -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let compact: String = stamp.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    PathBuf::from("reports").join(compact)
}
