//! How much of the job the sweep may use, and what to say when that budget ran out before the
//! measurement was as good as asked. Pure.

use crate::model::{Estimate, Summary};

/// The most input lines a sweep holds in memory (its sample), whatever the job's size.
pub const MAX_SWEEP_LINES: usize = 100_000;
/// The sweep may always use this many lines (or the whole job, if smaller): a 20% budget of
/// a small job is too few requests to measure anything.
pub const MIN_SWEEP_LINES: usize = 1_000;

/// Lines the sweep may send: `--sweep-budget` of the job, at least [`MIN_SWEEP_LINES`] (or the
/// whole job), at most [`MAX_SWEEP_LINES`]; `--sample` may only lower it. A small job may be
/// swept whole: the sweep's answers are the job's, so nothing is wasted.
pub fn sweep_lines(requests: u64, budget: f64, sample: Option<usize>) -> usize {
    let lines = ((requests as f64 * budget).ceil() as usize)
        .max((requests as usize).min(MIN_SWEEP_LINES))
        .clamp(1, MAX_SWEEP_LINES);
    sample.map_or(lines, |s| s.clamp(1, lines))
}

/// Warnings when the sample was used up: a level's CI wider than asked (and what the plan
/// sizes on then), or RPM still growing at the last level (no knee).
pub fn budget_warnings(
    summary: &Summary,
    used_up: bool,
    lines_sent: u64,
    budget: f64,
    ci_width: f64,
    estimate: Estimate,
) -> Vec<String> {
    let mut out = Vec::new();
    if !used_up {
        return out;
    }
    if summary.ci_met.iter().any(|met| !met) {
        out.push(format!(
            "the sweep budget ({lines_sent} lines, --sweep-budget {budget}) ran out before every level's CI reached ±{:.0}%: {}",
            ci_width * 100.0,
            // An explicit --estimate mean is the user's call (the planner's own hint suggests
            // it when the low bound is 0): it is kept, and said.
            match estimate {
                Estimate::Low => "the plan sizes on the CI it got (its low bound)",
                Estimate::Mean => "the plan sizes on the mean, as --estimate mean asks, whose CI is wider than that",
            }
        ));
    }
    let levels = &summary.levels;
    let best = levels
        .iter()
        .filter(|l| l.rpm.is_finite())
        .max_by(|a, b| a.rpm.total_cmp(&b.rpm));
    if best.is_some_and(|b| Some(b.concurrency) == levels.last().map(|l| l.concurrency)) {
        out.push(
            "RPM was still growing at the last level the budget allowed: the knee was not reached, so the plan asks for more GPUs than needed; raise --sweep-budget or --max-concurrency's start".into(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures;

    #[test]
    fn the_budget_is_a_share_with_a_floor_and_a_ceiling() {
        assert_eq!(sweep_lines(100_000, 0.2, None), 20_000);
        assert_eq!(sweep_lines(500, 0.2, None), 500, "a small job is swept whole");
        assert_eq!(sweep_lines(3_000, 0.2, None), 1_000, "at least 1,000 lines");
        assert_eq!(sweep_lines(10_000_000, 0.2, None), MAX_SWEEP_LINES);
        assert_eq!(sweep_lines(100_000, 0.2, Some(50)), 50, "--sample lowers it");
        assert_eq!(sweep_lines(100_000, 0.2, Some(1_000_000)), 20_000, "never raises it");
        assert_eq!(sweep_lines(0, 0.2, None), 1);
    }

    #[test]
    fn an_unmet_ci_and_a_missing_knee_are_said_only_when_the_budget_ran_out() {
        let s = fixtures::summary();
        assert!(budget_warnings(&s, false, 10, 0.2, 0.05, Estimate::Low).is_empty());
        let w = budget_warnings(&s, true, 10, 0.2, 0.05, Estimate::Low);
        // The fixture's last level missed its CI and is its best: both warnings.
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("low bound") && w[1].contains("still growing"), "{w:?}");
        assert!(budget_warnings(&s, true, 10, 0.2, 0.05, Estimate::Mean)[0].contains("--estimate mean"));
    }
}
