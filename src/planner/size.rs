//! Sizing one sweep: the operating level (the lowest concurrency among levels that meet the
//! SLO whose fitted rate is within 3% of the plateau that all of them measure, `plateau.rs`),
//! the GPUs the target needs there with one safety margin (the larger of `--headroom` and the
//! plateau's CI), and the plan's duration and cost. Pure arithmetic.

use super::plan::{Plan, PlanScaling, TokensPerS, UsdPerMillion};
use super::plateau;
use super::scaling::Scaling;
use crate::model::{Estimate, Slo};

/// One concurrency level of a finished sweep, as the planner needs it.
#[derive(Clone, Debug)]
pub struct SweepLevel {
    /// Concurrency the level ran at (across all sweep GPUs).
    pub concurrency: u32,
    /// Measured throughput, requests per minute.
    pub rpm: f64,
    /// Lower bound of the throughput confidence interval, RPM.
    pub rpm_ci_low: f64,
    /// Upper bound of the throughput confidence interval, RPM.
    pub rpm_ci_high: f64,
    /// 95th percentile end-to-end latency, milliseconds.
    pub latency_p95_ms: f64,
    /// 95th percentile time to first token, ms; `None` when not streamed.
    pub ttft_p95_ms: Option<f64>,
    /// Fraction of requests that failed, 0..=1.
    pub error_rate: f64,
}

/// Everything [`plan`] needs: the sweep and the user's goals and limits.
#[derive(Clone, Debug)]
pub struct PlanInput {
    /// Sweep levels, any order.
    pub levels: Vec<SweepLevel>,
    /// GPUs (replicas) behind the endpoint during the sweep.
    pub sweep_gpus: u32,
    /// Requests per minute the job must sustain.
    pub target_rpm: f64,
    /// Extra capacity as a fraction, e.g. 0.1 for 10%.
    pub headroom: f64,
    /// Size from the CI low bound or the mean.
    pub estimate: Estimate,
    /// The levels a plan may use meet these.
    pub slo: Slo,
    /// Refuse plans needing more GPUs than this.
    pub max_gpus: Option<u32>,
    /// Requests in the job, for duration and cost.
    pub requests: Option<u64>,
    /// Price of one GPU for one hour, USD.
    pub gpu_hour_cost: Option<f64>,
    /// Seconds each GPU is billed before serving (boot, model load).
    pub startup_s: f64,
    /// Measured scaling across GPU counts (sweeps of one `--name`); `None` assumes linear.
    pub scaling: Option<Scaling>,
}

/// Tokens per second per GPU at `rpm_per_gpu` for this mix, and what a million cost.
pub fn token_figures(
    rpm_per_gpu: f64,
    prompt_tokens: f64,
    output_tokens: f64,
    gpu_hour_cost: Option<f64>,
) -> (TokensPerS, Option<UsdPerMillion>) {
    let per_s = rpm_per_gpu / 60.0;
    let t = TokensPerS {
        input: per_s * prompt_tokens,
        output: per_s * output_tokens,
    };
    let usd = gpu_hour_cost.map(|c| {
        let per_million = |tps: f64| (tps > 0.0).then(|| c / 3600.0 / tps * 1e6);
        UsdPerMillion {
            total: per_million(t.input + t.output),
            output: per_million(t.output),
        }
    });
    (t, usd)
}

/// Why no plan could be made.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    /// Bad input: names the flag, the value and what is allowed.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// Every sweep level breaks at least one SLO; the text says which.
    #[error("no sweep level meets the SLO: {0}")]
    NoLevelMeetsSlo(String),
    /// The target needs more GPUs than `--max-gpus` allows.
    #[error(
        "target unreachable: needs {needed_gpus} GPUs but --max-gpus is {max_gpus}, \
         which sustains at most {reachable_rpm:.0} RPM with the requested headroom"
    )]
    Unreachable {
        /// The `--max-gpus` limit.
        max_gpus: u32,
        /// Target RPM that `max_gpus` GPUs could sustain with the headroom.
        reachable_rpm: f64,
        /// GPUs the requested target would need.
        needed_gpus: u32,
    },
    /// The sweep's prompts were mostly served by a prefix cache: it cannot price the job's.
    #[error("{0}")]
    CannotPrice(String),
    /// No option meets the goal (deadline, `--max-gpus`, `--budget`); the text names the
    /// nearest option and how far it falls short.
    #[error("goal unmet: {0}")]
    Unmet(String),
}

/// A level whose fitted rate is within this fraction of the plateau counts as on it, so the
/// plan prefers the lowest such concurrency (lower latency, the same RPM).
const NEAR_PLATEAU: f64 = 0.03;

/// A level whose CI half-width is at most this share of its rate is precise enough to count
/// as on the plateau by its own measurement.
const PRECISE: f64 = 0.10;

/// Ceil-ing a quotient like 3.0000000000000004 would buy a whole extra GPU
/// for float noise; rounding to this many parts first absorbs it.
const ROUND_TO: f64 = 1e9;

fn invalid(flag: &str, value: impl std::fmt::Display, allowed: &str) -> PlanError {
    PlanError::Invalid(format!("{flag} must be {allowed}, got {value}"))
}

fn validate(input: &PlanInput) -> Result<(), PlanError> {
    let t = input.target_rpm;
    if !(t.is_finite() && t > 0.0) {
        return Err(invalid("--target-rpm", t, "a finite number > 0"));
    }
    let h = input.headroom;
    if !(h.is_finite() && h >= 0.0) {
        return Err(invalid("--headroom", h, "a finite number >= 0 (0.1 = 10%)"));
    }
    if input.sweep_gpus < 1 {
        return Err(invalid("--sweep-gpus", input.sweep_gpus, "at least 1"));
    }
    input.slo.validate().map_err(PlanError::Invalid)?;
    if let Some(g) = input.max_gpus {
        if g < 1 {
            return Err(invalid("--max-gpus", g, "at least 1"));
        }
    }
    if input.requests == Some(0) {
        return Err(invalid("--requests", 0, "at least 1"));
    }
    if let Some(c) = input.gpu_hour_cost {
        if !(c.is_finite() && c >= 0.0) {
            return Err(invalid("--gpu-hour-cost", c, "a finite number >= 0"));
        }
    }
    let s = input.startup_s;
    if !(s.is_finite() && s >= 0.0) {
        return Err(invalid("--startup-s", s, "a finite number of seconds >= 0"));
    }
    if input.levels.is_empty() {
        return Err(PlanError::Invalid(
            "--sweep has no levels: run a sweep that measures at least one level".into(),
        ));
    }
    if let Some(l) = input
        .levels
        .iter()
        .find(|l| !l.rpm.is_finite() || !l.rpm_ci_low.is_finite())
    {
        return Err(PlanError::Invalid(format!(
            "--sweep level at concurrency {} has non-finite RPM ({} , CI low {}); \
             RPM values must be finite",
            l.concurrency, l.rpm, l.rpm_ci_low
        )));
    }
    Ok(())
}

/// Whether a level meets every SLO that is set. NaN measurements fail.
fn meets_slo(l: &SweepLevel, input: &PlanInput) -> bool {
    input.slo.met(l.latency_p95_ms, l.ttft_p95_ms, l.error_rate)
}

/// The levels that meet the SLO, and the same as the plateau fit's points.
fn slo_points(input: &PlanInput) -> (Vec<&SweepLevel>, Vec<plateau::Point>) {
    let ok: Vec<&SweepLevel> = input.levels.iter().filter(|l| meets_slo(l, input)).collect();
    let points = ok
        .iter()
        .map(|l| plateau::Point {
            concurrency: l.concurrency,
            rpm: l.rpm,
            ci_low: l.rpm_ci_low,
            ci_high: l.rpm_ci_high,
        })
        .collect();
    (ok, points)
}

/// Picks the operating level: the lowest concurrency among SLO-meeting levels whose fitted
/// rate is within [`NEAR_PLATEAU`] of the plateau those levels measure together. The level is
/// returned with that fitted rate and the plateau's CI in place of its own measurement (its
/// latency stays as measured), and with the concurrencies pooled into the plateau.
fn operating_level(input: &PlanInput) -> Result<(SweepLevel, Vec<u32>), PlanError> {
    let (ok, points) = slo_points(input);
    let Some(fit) = plateau::fit(&points) else {
        let lowest_p95 = input
            .levels
            .iter()
            .min_by(|a, b| a.latency_p95_ms.total_cmp(&b.latency_p95_ms))
            .map(|l| {
                format!(
                    "; lowest p95 latency measured was {:.0} ms at concurrency {}",
                    l.latency_p95_ms, l.concurrency
                )
            })
            .unwrap_or_default();
        return Err(PlanError::NoLevelMeetsSlo(format!(
            "none of the {} levels meets {}{lowest_p95}; relax the SLO or sweep lower concurrency",
            input.levels.len(),
            input.slo.words()
        )));
    };
    // On the plateau by the fit, or by its own precise measurement: the straight line through
    // the origin under-reads a knee that real overheads round off (seen: level 4 at 2,248 and
    // level 8 at 4,629 RPM per GPU against a plateau of 4,696).
    let measured_on = |l: &SweepLevel| {
        let half = (l.rpm_ci_high - l.rpm_ci_low) / 2.0;
        l.rpm >= fit.rpm * (1.0 - NEAR_PLATEAU) && half <= PRECISE * l.rpm
    };
    let on_plateau = |l: &&&SweepLevel| fit.at(l.concurrency) >= fit.rpm * (1.0 - NEAR_PLATEAU) || measured_on(l);
    let chosen = ok
        .iter()
        .filter(on_plateau)
        // Lowest concurrency; on a repeated level, the higher RPM.
        .min_by(|a, b| a.concurrency.cmp(&b.concurrency).then(b.rpm.total_cmp(&a.rpm)))
        // Non-empty: the plateau's own levels are on it.
        .unwrap_or(&ok[0]);
    let rpm = if measured_on(chosen) {
        // Its own precise rate, never above the plateau's.
        chosen.rpm.max(fit.at(chosen.concurrency)).min(fit.rpm)
    } else {
        fit.at(chosen.concurrency)
    };
    let level = SweepLevel {
        rpm,
        rpm_ci_low: rpm * fit.low_share(),
        rpm_ci_high: rpm * fit.high_share(),
        ..(*chosen).clone()
    };
    Ok((level, fit.pooled))
}

/// The plateau per GPU that `input`'s SLO-meeting levels measure together, before any margin:
/// what a sweep of one `--name` contributes to the measured scaling.
pub(crate) fn plateau_per_gpu(input: &PlanInput) -> Option<f64> {
    let fit = plateau::fit(&slo_points(input).1)?;
    (input.sweep_gpus > 0 && fit.rpm > 0.0).then(|| fit.rpm / f64::from(input.sweep_gpus))
}

/// GPUs, concurrency, duration and cost for `input`.
///
/// See the module docs and the field docs on [`Plan`] for the arithmetic.
/// `Plan::sweep` is left empty for the caller to fill. The one-sweep answer `choose` gives for
/// a single candidate; the sizing arithmetic's tests call it directly.
#[cfg(test)]
pub fn plan(input: &PlanInput) -> Result<Plan, PlanError> {
    let s = size(input)?;
    if let Some(max_gpus) = input.max_gpus {
        if s.needed_gpus > max_gpus {
            return Err(PlanError::Unreachable {
                max_gpus,
                reachable_rpm: carried(input, s.per_gpu, max_gpus),
                needed_gpus: s.needed_gpus,
            });
        }
    }
    let mut p = at_gpus(input, &s.chosen, s.needed_gpus);
    p.plateau_levels = s.pooled;
    Ok(p)
}

/// The operating level and the GPUs the target needs there, before `--max-gpus`.
pub(crate) struct Needed {
    /// The operating level, its rate and CI those of the fitted plateau.
    pub chosen: SweepLevel,
    /// The concurrencies of the levels the plateau pools.
    pub pooled: Vec<u32>,
    /// RPM per GPU the count is sized from, the safety margin taken off once: the mean over
    /// 1 + headroom or, with `--estimate low`, the CI low bound where that is lower still.
    pub per_gpu: f64,
    pub needed_gpus: u32,
}

/// The RPM per GPU a count is sized from, with one margin, not two stacked: the mean over
/// 1 + headroom or, with `--estimate low`, the CI low bound where that is lower still. True
/// when the CI low bound set it.
pub(crate) fn sizing_rate(mean: f64, low: f64, headroom: f64, estimate: Estimate) -> (f64, bool) {
    let with_headroom = mean / (1.0 + headroom);
    match estimate {
        Estimate::Low if low < with_headroom => (low, true),
        _ => (with_headroom, false),
    }
}

/// Validates `input`, picks the operating level and sizes the GPU count for the target.
pub(crate) fn size(input: &PlanInput) -> Result<Needed, PlanError> {
    validate(input)?;
    let (chosen, pooled) = operating_level(input)?;
    let sweep_gpus = f64::from(input.sweep_gpus);
    let rpm_per_gpu = chosen.rpm / sweep_gpus;
    let rpm_per_gpu_low = chosen.rpm_ci_low / sweep_gpus;
    if rpm_per_gpu <= 0.0 {
        return Err(PlanError::Invalid(format!(
            "--sweep: chosen level at concurrency {} has throughput {} RPM; \
             the planner needs a level with RPM > 0",
            chosen.concurrency, chosen.rpm
        )));
    }
    let (per_gpu, _) = sizing_rate(rpm_per_gpu, rpm_per_gpu_low, input.headroom, input.estimate);
    if per_gpu <= 0.0 {
        // Only reachable for Low: a CI so wide its lower bound is <= 0.
        return Err(PlanError::Invalid(format!(
            "--estimate low: the CI low bound at concurrency {} is {} RPM, so any GPU \
             count is possible; measure longer or use --estimate mean",
            chosen.concurrency, chosen.rpm_ci_low
        )));
    }
    let mut needed = denoise(input.target_rpm / per_gpu).ceil().max(1.0);
    if input.scaling.is_some() && needed <= f64::from(u32::MAX) {
        // Each GPU added serves less per GPU: the smallest count whose scaled rate carries the
        // target. Terminates, as the efficiency is floored.
        let carries = |g: f64| denoise(input.target_rpm / carried(input, per_gpu, g as u32)) <= 1.0;
        while !carries(needed) && needed < f64::from(u32::MAX) {
            needed += 1.0;
        }
    }
    if needed > f64::from(u32::MAX) {
        return Err(PlanError::Invalid(format!(
            "--target-rpm {} needs more than {} GPUs at {per_gpu:.3} RPM per GPU",
            input.target_rpm,
            u32::MAX
        )));
    }
    // In range and integral after the checks above, so `as` is exact.
    Ok(Needed {
        chosen,
        pooled,
        per_gpu,
        needed_gpus: needed as u32,
    })
}

/// A quotient rounded to [`ROUND_TO`] parts, so float noise cannot tip a ceiling.
fn denoise(q: f64) -> f64 {
    (q * ROUND_TO).round() / ROUND_TO
}

/// The measured scaling's share of the swept rate per GPU at `gpus` (1 when assumed linear).
fn efficiency_at(input: &PlanInput, gpus: u32) -> f64 {
    input.scaling.as_ref().map_or(1.0, |s| s.at(gpus))
}

/// RPM `gpus` GPUs carry at the sized rate `per_gpu`, with the measured scaling if any.
pub(crate) fn carried(input: &PlanInput, per_gpu: f64, gpus: u32) -> f64 {
    f64::from(gpus) * per_gpu * efficiency_at(input, gpus)
}

/// The plan for `gpus` GPUs at level `chosen` (validated by [`size`]).
pub(crate) fn at_gpus(input: &PlanInput, chosen: &SweepLevel, gpus: u32) -> Plan {
    let sweep_gpus = f64::from(input.sweep_gpus);
    // Measured scaling takes its share off the swept rate at this count.
    let efficiency = efficiency_at(input, gpus);
    let swept_per_gpu = chosen.rpm / sweep_gpus;
    let rpm_per_gpu = swept_per_gpu * efficiency;
    let concurrency_per_gpu = chosen.concurrency.div_ceil(input.sweep_gpus);
    let expected_rpm = f64::from(gpus) * rpm_per_gpu;
    let expected_duration_s = input.requests.map(|r| r as f64 / expected_rpm * 60.0);
    let cost_usd = match (expected_duration_s, input.gpu_hour_cost) {
        (Some(d), Some(c)) => Some(f64::from(gpus) * (d + input.startup_s) / 3600.0 * c),
        _ => None,
    };
    Plan {
        schema_version: crate::model::schema::PLAN,
        target_rpm: input.target_rpm,
        gpus,
        concurrency_per_gpu,
        total_concurrency: gpus.saturating_mul(concurrency_per_gpu),
        rpm_per_gpu,
        rpm_per_gpu_low: chosen.rpm_ci_low / sweep_gpus * efficiency,
        expected_rpm,
        expected_latency_p95_ms: chosen.latency_p95_ms,
        headroom: input.headroom,
        requests: input.requests,
        expected_duration_s,
        cost_usd,
        sweep: String::new(),
        sweep_gpus: input.sweep_gpus,
        chosen_concurrency: chosen.concurrency,
        workload: None,
        capacity_model: None,
        prefix_cache: None,
        tokens_per_s_per_gpu: None,
        usd_per_million_tokens: None,
        estimate: input.estimate,
        startup_s: input.startup_s,
        name: None,
        gpu_hour_cost: input.gpu_hour_cost,
        deadline_s: None,
        objective: None,
        options: Vec::new(),
        shards: None,
        plateau_levels: Vec::new(),
        limit: None,
        scaling: input.scaling.as_ref().map(|s| PlanScaling {
            measured: s.measured.clone(),
            efficiency,
            swept_rpm_per_gpu: swept_per_gpu,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::explain::{explain, human_duration};
    use super::*;
    use proptest::prelude::*;

    fn level(concurrency: u32, rpm: f64, ci_low: f64, p95: f64) -> SweepLevel {
        SweepLevel {
            concurrency,
            rpm,
            rpm_ci_low: ci_low,
            rpm_ci_high: rpm + (rpm - ci_low),
            latency_p95_ms: p95,
            ttft_p95_ms: Some(p95 / 4.0),
            error_rate: 0.0,
        }
    }

    /// The brief's 2 GPU x 8 slot sweep: saturated from 16 at 19,200 RPM, each level's CI
    /// ±200, so the plateau of the three pools to 19,200 ± 200 / √3.
    fn base() -> PlanInput {
        PlanInput {
            levels: vec![
                level(8, 9_700.0, 9_500.0, 800.0),
                level(16, 19_200.0, 19_000.0, 1_000.0),
                level(32, 19_200.0, 19_000.0, 2_000.0),
                level(64, 19_200.0, 19_000.0, 4_000.0),
            ],
            sweep_gpus: 2,
            target_rpm: 30_000.0,
            headroom: 0.1,
            estimate: Estimate::Low,
            slo: Slo::default(),
            max_gpus: None,
            requests: Some(60_000),
            gpu_hour_cost: Some(2.5),
            startup_s: 120.0,
            scaling: None,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    /// The base plateau's CI low bound per GPU: (19,200 - 200 / √3) / 2 = 9,542.26.
    fn base_low() -> f64 {
        (19_200.0 - 200.0 / 3f64.sqrt()) / 2.0
    }

    #[test]
    fn must_pass_two_gpu_sweep() {
        let p = plan(&base()).unwrap();
        // The plateau pools 16, 32 and 64; 16 is the lowest level on it.
        assert_eq!(p.chosen_concurrency, 16);
        assert_eq!(p.plateau_levels, [16, 32, 64]);
        // per GPU: 19,200 / 2 = 9,600 mean; the pooled CI low 9,542.
        assert!(close(p.rpm_per_gpu, 9_600.0));
        assert!(close(p.rpm_per_gpu_low, base_low()), "{}", p.rpm_per_gpu_low);
        // One margin: the 10% headroom, wider than the CI's 0.6%: 30,000 * 1.1 / 9,600 =
        // 3.44 -> 4.
        assert_eq!(p.gpus, 4);
        // ceil(16 / 2) = 8, total 4 * 8 = 32.
        assert_eq!(p.concurrency_per_gpu, 8);
        assert_eq!(p.total_concurrency, 32);
        // 4 * 9,600 = 38,400.
        assert!(close(p.expected_rpm, 38_400.0));
        // 60,000 / 38,400 * 60 = 93.75 s.
        assert!(close(p.expected_duration_s.unwrap(), 93.75));
        // 4 * (93.75 + 120) / 3600 * 2.5 = 4 * 213.75 / 3600 * 2.5 = 0.59375.
        assert!(close(p.cost_usd.unwrap(), 0.59375));
        assert_eq!(p.expected_latency_p95_ms, 1_000.0);
        assert_eq!(p.estimate, Estimate::Low);
        assert_eq!(p.sweep, "");
        assert_eq!(p.sweep_gpus, 2);
        assert_eq!(p.startup_s, 120.0);
        assert_eq!(p.requests, Some(60_000));
    }

    #[test]
    fn rounds_up() {
        // No headroom: the CI low alone, 28,700 / 9,542 = 3.008 -> 4.
        let mut i = base();
        i.headroom = 0.0;
        i.target_rpm = 28_700.0;
        assert_eq!(plan(&i).unwrap().gpus, 4);
    }

    #[test]
    fn exact_multiple_not_over_rounded() {
        // 28,800 / 9,600 = 3 exactly -> 3.
        let mut i = base();
        i.headroom = 0.0;
        i.estimate = Estimate::Mean;
        i.target_rpm = 28_800.0;
        assert_eq!(plan(&i).unwrap().gpus, 3);
        // Float noise: 3,000 * (1 + 0.1) / 1,100 is 3.0000000000000004 in
        // f64 (1.1 is not exact); a bare ceil would say 4.
        let mut i = base();
        i.levels = vec![level(16, 2_200.0, 2_200.0, 1_000.0)];
        i.target_rpm = 3_000.0;
        i.headroom = 0.1;
        assert!((3_000.0f64 * (1.0 + 0.1) / 1_100.0).ceil() > 3.0);
        assert_eq!(plan(&i).unwrap().gpus, 3);
    }

    #[test]
    fn at_least_one_gpu() {
        let mut i = base();
        i.target_rpm = 1.0;
        let p = plan(&i).unwrap();
        assert_eq!(p.gpus, 1);
        assert_eq!(p.total_concurrency, 8);
    }

    #[test]
    fn headroom_adds_gpus() {
        // No headroom: the CI low, 30,000 / 9,542 = 3.14 -> 4. 50%: 45,000 / 9,600 =
        // 4.69 -> 5. 100%: 60,000 / 9,600 = 6.25 -> 7.
        let mut i = base();
        for (h, g) in [(0.0, 4), (0.5, 5), (1.0, 7)] {
            i.headroom = h;
            assert_eq!(plan(&i).unwrap().gpus, g, "headroom {h}");
        }
    }

    #[test]
    fn ci_low_vs_mean() {
        // Without headroom the CI is the margin: low 28,700 / 9,542 = 3.008 -> 4; the mean
        // 28,700 / 9,600 = 2.99 -> 3.
        let mut i = base();
        i.headroom = 0.0;
        i.target_rpm = 28_700.0;
        assert_eq!(plan(&i).unwrap().gpus, 4);
        i.estimate = Estimate::Mean;
        let p = plan(&i).unwrap();
        assert_eq!(p.gpus, 3);
        assert_eq!(p.estimate, Estimate::Mean);
        // With 10% headroom, wider than the CI, both give 34,900 * 1.1 / 9,600 = 3.999 -> 4:
        // the margin is counted once, not headroom on top of the CI (which said 5).
        let mut i = base();
        i.target_rpm = 34_900.0;
        assert_eq!(plan(&i).unwrap().gpus, 4);
        i.estimate = Estimate::Mean;
        assert_eq!(plan(&i).unwrap().gpus, 4);
    }

    #[test]
    fn latency_slo_excludes_levels() {
        // p95 <= 900 ms leaves only level 8 (9,700 RPM, low 9,500): per GPU 4,850, low
        // 4,750; the headroom is the wider margin: 33,000 / 4,850 = 6.80 -> 7; 8 / 2 = 4 per GPU.
        let mut i = base();
        i.slo.max_latency_p95_ms = Some(900.0);
        let p = plan(&i).unwrap();
        assert_eq!(p.chosen_concurrency, 8);
        assert_eq!(p.gpus, 7);
        assert_eq!(p.concurrency_per_gpu, 4);
        assert_eq!(p.expected_latency_p95_ms, 800.0);
    }

    #[test]
    fn ttft_and_error_slos() {
        let mut i = base();
        // Level 16 loses its TTFT: with a TTFT SLO it fails, so the lowest
        // level on the plateau is 32.
        i.levels[1].ttft_p95_ms = None;
        i.slo.max_ttft_p95_ms = Some(10_000.0);
        assert_eq!(plan(&i).unwrap().chosen_concurrency, 32);
        // Without a TTFT SLO, the missing TTFT does not matter.
        i.slo.max_ttft_p95_ms = None;
        assert_eq!(plan(&i).unwrap().chosen_concurrency, 16);
        // 16 and 32 erroring 5% with a 1% cap -> 64 (the plateau left).
        i.levels[1].error_rate = 0.05;
        i.levels[2].error_rate = 0.05;
        i.slo.max_error_rate = Some(0.01);
        assert_eq!(plan(&i).unwrap().chosen_concurrency, 64);
    }

    #[test]
    fn a_level_within_three_percent_of_the_plateau_is_on_it() {
        // Rising at 2,500 RPM per slot to level 4 (10,000), flat from 8. A plateau of 10,300:
        // level 4's 10,000 is 2.9% below, on it; of 10,600, 5.7% below, not.
        for (plateau, chosen) in [(10_300.0, 4), (10_600.0, 8)] {
            let mut i = base();
            let tight = |c: u32, rpm: f64| level(c, rpm, rpm - 10.0, 100.0);
            i.levels = vec![
                tight(1, 2_500.0),
                tight(2, 5_000.0),
                tight(4, 10_000.0),
                tight(8, plateau),
                tight(16, plateau),
            ];
            let p = plan(&i).unwrap();
            assert_eq!(p.chosen_concurrency, chosen, "plateau {plateau}");
            // The rate planned at level 4 is its fitted one, not the plateau's.
            let want = if chosen == 4 { 10_000.0 } else { plateau };
            assert!(
                (p.rpm_per_gpu * 2.0 - want).abs() < 1.0,
                "{} vs {want}",
                p.rpm_per_gpu * 2.0
            );
        }
    }

    #[test]
    fn a_precise_level_within_three_percent_of_the_plateau_is_on_it_whatever_the_line_says() {
        // The a100 sweep: 4 under-reads the line (overheads), so the line puts 8 at 9,075,
        // 3.4% under the plateau 9,392; 8's own ±4.9% measurement, 9,258, is on it.
        let mut i = base();
        let at = |c: u32, rpm: f64, rel: f64| level(c, rpm, rpm * (1.0 - rel), 100.0);
        i.levels = vec![at(4, 4_496.0, 0.033), at(8, 9_258.0, 0.049), at(16, 9_392.0, 0.014)];
        let p = plan(&i).unwrap();
        assert_eq!(p.chosen_concurrency, 8);
        // At its own rate, not the line's.
        assert!((p.rpm_per_gpu * 2.0 - 9_258.0).abs() < 1.0, "{}", p.rpm_per_gpu);
        // A loose measurement (±18%) does not count on its own.
        i.levels[1] = at(8, 9_258.0, 0.18);
        assert_eq!(plan(&i).unwrap().chosen_concurrency, 16);
    }

    #[test]
    fn the_luckiest_level_does_not_size_the_plan() {
        // Level 8 at 10,480 ±28% on a plateau the next two measure at 8,800 and 8,560 (±6%):
        // the highest mean said 10,480; the pooled plateau stays by the two tight levels.
        let mut i = base();
        let at = |c: u32, rpm: f64, rel: f64| level(c, rpm, rpm * (1.0 - rel), 100.0);
        i.levels = vec![
            at(1, 1_260.0, 0.03),
            at(2, 2_460.0, 0.03),
            at(4, 4_900.0, 0.04),
            at(8, 10_480.0, 0.277),
            at(16, 8_800.0, 0.06),
            at(32, 8_560.0, 0.06),
        ];
        let p = plan(&i).unwrap();
        let rpm = p.rpm_per_gpu * 2.0;
        assert!(rpm > 8_500.0 && rpm < 8_900.0, "{rpm}: {:?}", p.plateau_levels);
    }

    #[test]
    fn no_level_meets_slo() {
        let mut i = base();
        i.slo.max_latency_p95_ms = Some(100.0);
        let e = plan(&i).unwrap_err();
        let PlanError::NoLevelMeetsSlo(msg) = &e else {
            panic!("{e:?}")
        };
        assert!(msg.contains("--max-latency-p95-ms 100"), "{msg}");
        assert!(msg.contains("800 ms at concurrency 8"), "{msg}");
    }

    #[test]
    fn unreachable_target() {
        // Needs 4 (see must-pass); cap 3 -> reachable 3 * 9,600 / 1.1 =
        // 26,181.82 RPM.
        let mut i = base();
        i.max_gpus = Some(3);
        let e = plan(&i).unwrap_err();
        let PlanError::Unreachable {
            max_gpus,
            reachable_rpm,
            needed_gpus,
        } = e
        else {
            panic!("{e:?}")
        };
        assert_eq!((max_gpus, needed_gpus), (3, 4));
        assert!(close(reachable_rpm, 28_800.0 / 1.1), "{reachable_rpm}");
        // Exactly enough is fine.
        i.max_gpus = Some(4);
        assert_eq!(plan(&i).unwrap().gpus, 4);
    }

    #[test]
    fn cost_needs_requests_and_price() {
        let mut i = base();
        i.gpu_hour_cost = None;
        let p = plan(&i).unwrap();
        assert!(p.cost_usd.is_none());
        assert!(p.expected_duration_s.is_some());
        let mut i = base();
        i.requests = None;
        let p = plan(&i).unwrap();
        assert!(p.cost_usd.is_none() && p.expected_duration_s.is_none());
        // Free GPUs cost 0; no startup: 4 * 93.75 / 3600 * 2.5 = 0.2604166.
        let mut i = base();
        i.gpu_hour_cost = Some(0.0);
        assert_eq!(plan(&i).unwrap().cost_usd, Some(0.0));
        i.gpu_hour_cost = Some(2.5);
        i.startup_s = 0.0;
        assert!(close(plan(&i).unwrap().cost_usd.unwrap(), 375.0 / 3600.0 * 2.5));
    }

    #[test]
    fn concurrency_per_gpu_rounds_up() {
        // Level 17 on 2 GPUs -> ceil(8.5) = 9 per GPU.
        let mut i = base();
        i.levels = vec![level(17, 19_200.0, 19_000.0, 1_000.0)];
        let p = plan(&i).unwrap();
        assert_eq!(p.concurrency_per_gpu, 9);
        assert_eq!(p.total_concurrency, 36);
    }

    fn invalid_flag(i: &PlanInput) -> String {
        match plan(i) {
            Err(PlanError::Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn bad_inputs_are_invalid_and_name_the_flag() {
        type Edit = fn(&mut PlanInput);
        let cases: Vec<(&str, Edit)> = vec![
            ("--target-rpm", |i| i.target_rpm = 0.0),
            ("--target-rpm", |i| i.target_rpm = -5.0),
            ("--target-rpm", |i| i.target_rpm = f64::NAN),
            ("--target-rpm", |i| i.target_rpm = f64::INFINITY),
            ("--headroom", |i| i.headroom = -0.1),
            ("--headroom", |i| i.headroom = f64::NAN),
            ("--sweep-gpus", |i| i.sweep_gpus = 0),
            ("--max-latency-p95-ms", |i| i.slo.max_latency_p95_ms = Some(0.0)),
            ("--max-latency-p95-ms", |i| i.slo.max_latency_p95_ms = Some(f64::NAN)),
            ("--max-ttft-p95-ms", |i| i.slo.max_ttft_p95_ms = Some(-1.0)),
            ("--max-error-rate", |i| i.slo.max_error_rate = Some(1.5)),
            ("--max-error-rate", |i| i.slo.max_error_rate = Some(-0.1)),
            ("--max-error-rate", |i| i.slo.max_error_rate = Some(f64::NAN)),
            ("--max-gpus", |i| i.max_gpus = Some(0)),
            ("--requests", |i| i.requests = Some(0)),
            ("--gpu-hour-cost", |i| i.gpu_hour_cost = Some(-1.0)),
            ("--gpu-hour-cost", |i| i.gpu_hour_cost = Some(f64::NAN)),
            ("--startup-s", |i| i.startup_s = -1.0),
            ("--startup-s", |i| i.startup_s = f64::INFINITY),
            ("--sweep", |i| i.levels.clear()),
            ("--sweep", |i| i.levels[0].rpm = f64::NAN),
            ("--sweep", |i| {
                i.levels = vec![level(4, 0.0, 0.0, 10.0)];
            }),
            ("--estimate", |i| {
                i.levels = vec![level(4, 100.0, -20.0, 10.0)];
            }),
        ];
        for (flag, edit) in cases {
            let mut i = base();
            edit(&mut i);
            let msg = invalid_flag(&i);
            assert!(msg.contains(flag), "{flag}: {msg}");
        }
        // Error rate bounds are inclusive.
        let mut i = base();
        i.slo.max_error_rate = Some(0.0);
        assert!(plan(&i).is_ok());
        i.slo.max_error_rate = Some(1.0);
        assert!(plan(&i).is_ok());
    }

    #[test]
    fn explain_shows_the_arithmetic() {
        let text = explain(&plan(&base()).unwrap());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "4 GPUs: 30,000 RPM target x 1.10 / 9,600 RPM per GPU (mean; its 95% CI low is 0.6% below, within the headroom; the plateau of levels 16, 32, 64) = 3.44 -> 4"
        );
        // Without headroom the CI low is the margin, and says so.
        let mut i = base();
        i.headroom = 0.0;
        let text = explain(&plan(&i).unwrap());
        assert!(
            text.starts_with("4 GPUs: 30,000 RPM target / 9,542 RPM per GPU (95% CI low, 0.6% below the mean: a wider margin than the 0% headroom, which it replaces; the plateau of levels 16, 32, 64) = 3.14 -> 4"),
            "{text}"
        );
        assert!(lines[1].contains("8 per GPU") && lines[1].contains("= 32 total"));
        assert!(lines[2].contains("= 38,400 RPM"), "{}", lines[2]);
        assert!(lines[3].contains("60,000 requests") && lines[3].contains("93.75 s"));
        assert!(lines[4].contains("$2.50") && lines[4].contains("$0.59"), "{}", lines[4]);
        assert_eq!(
            lines[5],
            "sweep measured 2 GPUs; plan uses 4 (2.0x): assumes linear scaling across replicas"
        );
    }

    #[test]
    fn explain_mean_without_cost() {
        let mut i = base();
        i.estimate = Estimate::Mean;
        i.requests = None;
        i.target_rpm = 5_000.0;
        // 5,500 / 9,600 = 0.57 -> 1.
        let text = explain(&plan(&i).unwrap());
        assert!(
            text.starts_with("1 GPU: 5,000 RPM target x 1.10 / 9,600 RPM per GPU (mean; the plateau of levels 16, 32, 64) = 0.57 -> 1"),
            "{text}"
        );
        assert!(!text.contains("duration") && !text.contains("cost"));
        assert!(text.contains("plan uses 1 (0.5x)"));
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(93.75), "1m 34s");
        assert_eq!(human_duration(7_500.0), "2h 05m");
    }

    proptest! {
        #[test]
        fn gpus_non_decreasing_in_target(
            a in 1.0f64..1e6,
            b in 1.0f64..1e6,
            headroom in 0.0f64..2.0,
            mean in any::<bool>(),
        ) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let mut i = base();
            i.headroom = headroom;
            i.estimate = if mean { Estimate::Mean } else { Estimate::Low };
            i.target_rpm = lo;
            let g_lo = plan(&i).unwrap().gpus;
            i.target_rpm = hi;
            let p = plan(&i).unwrap();
            prop_assert!(g_lo <= p.gpus);
            // And the plan always covers the target with the headroom over the mean and,
            // with --estimate low, at the CI low bound too (up to the 1e-9 rounding guard).
            let g = f64::from(p.gpus);
            prop_assert!(g * p.rpm_per_gpu >= hi * (1.0 + headroom) * (1.0 - 1e-9));
            if !mean {
                prop_assert!(g * p.rpm_per_gpu_low >= hi * (1.0 - 1e-9));
            }
        }
    }
}
