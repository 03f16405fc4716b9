//! A sweep's levels rescaled to a job of another mix, with each level's capacity model: the
//! one place a model's prediction changes a measured rate.

use super::size::SweepLevel;
use crate::model::CapacityModel;

/// R² below this: the model explains too little of the latency to size a job with.
pub const MIN_R2: f64 = 0.5;

/// Rescales the sweep's levels to a job of another mix with each level's latency model (a
/// request of `prompt_tokens` prefilled and `cached_tokens` a prefix cache served):
/// Little's law at the level's concurrency C gives RPM = C x 60000 / latency, so the RPM
/// (and its CI) scale by the ratio of the sweep's mean latency (C x 60000 / measured RPM) to
/// the job's predicted one, and p95 latency by its inverse. `Err` says why the model cannot be
/// trusted for this job; then the levels are left as measured.
pub fn rescale_for_mix(
    levels: &mut [SweepLevel],
    fits: &[Option<CapacityModel>],
    (prompt_tokens, cached_tokens): (f64, f64),
    output_tokens: f64,
    prompt_extrapolates: bool,
) -> Result<(), String> {
    for (l, fit) in levels.iter().zip(fits) {
        let Some(f) = fit else {
            return Err(format!(
                "level {} has no capacity model (no token counts)",
                l.concurrency
            ));
        };
        if f.r2 < MIN_R2 {
            return Err(format!(
                "the model explains too little of level {}'s latency (R² {:.2} < {MIN_R2})",
                l.concurrency, f.r2
            ));
        }
        // Cache-adjusted prompts may pass the range seen: prefill is taken as linear in them.
        let checked_prompt = if prompt_extrapolates {
            f.prompt_tokens_min
        } else {
            prompt_tokens
        };
        if !f.covers(checked_prompt, output_tokens) {
            return Err(format!(
                "the job's mix ({prompt_tokens:.0} prompt, {output_tokens:.0} output tokens) lies outside what level {} saw ({:.0}-{:.0} prompt, {:.0}-{:.0} output)",
                l.concurrency, f.prompt_tokens_min, f.prompt_tokens_max, f.output_tokens_min, f.output_tokens_max
            ));
        }
        if f.latency_split_ms(prompt_tokens, cached_tokens, output_tokens) <= 0.0 || l.rpm <= 0.0 {
            return Err(format!("level {}'s model predicts no positive latency", l.concurrency));
        }
    }
    for (l, fit) in levels.iter_mut().zip(fits) {
        let f = fit.as_ref().expect("checked above");
        let sweep_latency = f64::from(l.concurrency) * 60_000.0 / l.rpm;
        let ratio = f.latency_split_ms(prompt_tokens, cached_tokens, output_tokens) / sweep_latency;
        l.rpm /= ratio;
        l.rpm_ci_low /= ratio;
        l.rpm_ci_high /= ratio;
        // TTFT depends on the prompt and the queue, not on the answer's length: left as is.
        l.latency_p95_ms *= ratio;
    }
    Ok(())
}
