//! Knee detection on a concurrency sweep, and the automatic choice of which
//! concurrency level to measure next.
//!
//! The knee is the cheapest concurrency that already delivers the best
//! throughput we can statistically tell apart, among levels that meet the
//! latency/error SLO. The search doubles concurrency until throughput stops
//! growing (or the SLO breaks, or the cap is hit), then bisects the gaps
//! around the knee so it lands on an exact level, not just a power of two.

pub use crate::model::LimitedBy;
use std::collections::BTreeMap;

/// One measured concurrency level.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LevelPoint {
    /// Concurrent requests in flight.
    pub concurrency: u32,
    /// Measured throughput, requests per minute.
    pub rpm: f64,
    /// Half-width of the throughput confidence interval, in RPM.
    pub half_width: f64,
    /// Whether this level met every SLO (latency, TTFT, error rate).
    pub slo_ok: bool,
}

/// The chosen operating point of a sweep.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Knee {
    /// Concurrency at the knee.
    pub concurrency: u32,
    /// Measured throughput at the knee, RPM.
    pub rpm: f64,
    /// Why going higher does not help.
    pub limited_by: LimitedBy,
}

/// Two throughput estimates are indistinguishable when
/// `|a.rpm - b.rpm| <= sqrt(a.hw^2 + b.hw^2)` (the CI of their difference
/// contains 0).
///
/// Returns `false` if any input is NaN, so unusable measurements never count
/// as "as good as the best".
pub fn indistinguishable(a: &LevelPoint, b: &LevelPoint) -> bool {
    let diff = (a.rpm - b.rpm).abs();
    let tol = (a.half_width.powi(2) + b.half_width.powi(2)).sqrt();
    diff <= tol
}

/// The SLO-meeting level with the highest finite RPM; ties go to the lower
/// concurrency so the result does not depend on input order.
fn best_ok(levels: &[LevelPoint]) -> Option<&LevelPoint> {
    levels
        .iter()
        .filter(|l| l.slo_ok && l.rpm.is_finite())
        .min_by(|a, b| b.rpm.total_cmp(&a.rpm).then(a.concurrency.cmp(&b.concurrency)))
}

/// The knee: among SLO-meeting levels, `best` = the one with max rpm; knee =
/// the LOWEST-concurrency SLO-meeting level indistinguishable from best.
///
/// `limited_by` is [`LimitedBy::Slo`] when some level that breaks the SLO has
/// higher concurrency than the knee and a higher rpm than best that is
/// distinguishable (throughput could still grow but the SLO forbids it); else
/// [`LimitedBy::Saturation`]. `None` when no level meets the SLO or the input
/// is empty. Levels may come in any order; levels with a non-finite rpm are
/// never chosen.
pub fn knee(levels: &[LevelPoint]) -> Option<Knee> {
    let best = best_ok(levels)?;
    let at = levels
        .iter()
        .filter(|l| l.slo_ok && l.rpm.is_finite() && indistinguishable(l, best))
        .min_by_key(|l| l.concurrency)
        // `best` is indistinguishable from itself unless its half-width is
        // NaN; fall back to it rather than report no knee.
        .unwrap_or(best);
    let slo_blocks_growth = levels
        .iter()
        .any(|l| !l.slo_ok && l.concurrency > at.concurrency && l.rpm > best.rpm && !indistinguishable(l, best));
    Some(Knee {
        concurrency: at.concurrency,
        rpm: at.rpm,
        limited_by: if slo_blocks_growth {
            LimitedBy::Slo
        } else {
            LimitedBy::Saturation
        },
    })
}

/// Throughput stops counting as "still growing" below this relative gain
/// between consecutive levels.
pub const FLAT_GAIN: f64 = 0.05;

/// Relative throughput gain from `prev` to `cur`, defined for `prev <= 0`
/// too so that a dead endpoint (0 RPM everywhere) reads as flat, not NaN.
fn gain(prev: f64, cur: f64) -> f64 {
    if prev > 0.0 {
        cur / prev - 1.0
    } else if cur > prev {
        f64::INFINITY
    } else {
        0.0
    }
}

/// The automatic search: given the levels measured so far (in measurement
/// order), the next concurrency to measure, or `None` when done.
///
/// 1. Doubling: start at 1; keep doubling the highest level (capped at
///    `max_concurrency`) until the cap is reached, the highest level breaks
///    the SLO, or the last two gains between the three highest levels are
///    both below 5%.
/// 2. Refinement: with `K` the knee candidate and `L` the highest measured
///    level below it, bisect `(L + K) / 2` while `K - L > 1`. Then, if the
///    knee is SLO-limited, bisect between the best SLO-meeting level and the
///    lowest SLO-breaking level above it while they are more than 1 apart.
/// 3. Never returns a level already measured, above `max_concurrency`, or 0.
///
/// Levels with concurrency 0 are ignored; a level measured twice counts with
/// its latest measurement. `max_concurrency` 0 is treated as 1.
pub fn next_level(measured: &[LevelPoint], max_concurrency: u32) -> Option<u32> {
    let max = max_concurrency.max(1);
    // Sorted by concurrency; a repeated level keeps its latest measurement.
    let by_conc: BTreeMap<u32, LevelPoint> = measured
        .iter()
        .filter(|l| l.concurrency > 0)
        .map(|l| (l.concurrency, *l))
        .collect();
    let sorted: Vec<LevelPoint> = by_conc.values().copied().collect();
    let fresh = |c: u32| (1..=max).contains(&c) && !by_conc.contains_key(&c);

    let Some(highest) = sorted.last() else {
        return Some(1);
    };

    // Phase 1: doubling.
    let n = sorted.len();
    let flat_twice = n >= 3
        && gain(sorted[n - 3].rpm, sorted[n - 2].rpm) < FLAT_GAIN
        && gain(sorted[n - 2].rpm, sorted[n - 1].rpm) < FLAT_GAIN;
    let doubling_done = highest.concurrency >= max || !highest.slo_ok || flat_twice;
    if !doubling_done {
        let next = highest.concurrency.saturating_mul(2).min(max);
        // Always fresh (it is above every measured level), but checked so
        // rule 3 holds by construction.
        return fresh(next).then_some(next);
    }

    // Phase 2: refinement around the knee.
    let k = knee(&sorted)?;
    let below_k = sorted
        .iter()
        .map(|l| l.concurrency)
        .filter(|&c| c < k.concurrency)
        .max();
    if let Some(l) = below_k {
        if k.concurrency - l > 1 {
            let mid = l + (k.concurrency - l) / 2;
            if fresh(mid) {
                return Some(mid);
            }
        }
    }

    if k.limited_by == LimitedBy::Slo {
        let best = best_ok(&sorted)?;
        let first_break = sorted
            .iter()
            .filter(|l| !l.slo_ok && l.concurrency > best.concurrency)
            .map(|l| l.concurrency)
            .min();
        if let Some(s) = first_break {
            // Normally the level just below `s` is `best` itself; if some
            // lower-RPM SLO-meeting level sits in between, bisect the
            // remaining gap so we never propose a level already measured.
            let lo = sorted
                .iter()
                .map(|l| l.concurrency)
                .filter(|&c| c < s)
                .max()
                .unwrap_or(best.concurrency);
            if s - lo > 1 {
                let mid = lo + (s - lo) / 2;
                if fresh(mid) {
                    return Some(mid);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lp(concurrency: u32, rpm: f64, half_width: f64, slo_ok: bool) -> LevelPoint {
        LevelPoint {
            concurrency,
            rpm,
            half_width,
            slo_ok,
        }
    }

    /// Runs the automatic search against a simulated endpoint and returns the
    /// levels in measurement order plus the final knee. Panics if rule 3 is
    /// broken or the search does not terminate.
    fn search(max: u32, measure: impl Fn(u32) -> LevelPoint) -> (Vec<u32>, Option<Knee>) {
        let mut measured: Vec<LevelPoint> = Vec::new();
        while let Some(c) = next_level(&measured, max) {
            assert!(c >= 1 && c <= max, "out of range: {c}");
            assert!(measured.iter().all(|l| l.concurrency != c), "re-measured {c}");
            assert!(measured.len() < 1000, "search did not terminate");
            measured.push(measure(c));
        }
        let order = measured.iter().map(|l| l.concurrency).collect();
        (order, knee(&measured))
    }

    /// Endpoint of `gb` = GPUs x slots: throughput grows linearly with
    /// concurrency until every slot is busy, then stays flat.
    fn saturating(gb: u32, hw: impl Fn(f64) -> f64) -> impl Fn(u32) -> LevelPoint {
        move |c| {
            let rpm = f64::from(c.min(gb)) * 100.0;
            lp(c, rpm, hw(rpm), true)
        }
    }

    #[test]
    fn limited_by_names() {
        assert_eq!(LimitedBy::Saturation.as_str(), "saturation");
        assert_eq!(LimitedBy::Slo.as_str(), "slo");
    }

    #[test]
    fn indistinguishable_boundary() {
        // hw 3 and 4 -> combined sqrt(9 + 16) = 5.
        let a = lp(1, 100.0, 3.0, true);
        assert!(indistinguishable(&a, &lp(2, 104.9, 4.0, true)));
        assert!(indistinguishable(&a, &lp(2, 95.0, 4.0, true))); // exactly 5
        assert!(!indistinguishable(&a, &lp(2, 105.1, 4.0, true)));
        assert!(!indistinguishable(&a, &lp(2, 94.9, 4.0, true)));
        assert!(!indistinguishable(&a, &lp(2, f64::NAN, 4.0, true)));
    }

    #[test]
    fn knee_empty_or_no_slo() {
        assert_eq!(knee(&[]), None);
        assert_eq!(knee(&[lp(1, 10.0, 1.0, false), lp(2, 20.0, 1.0, false)]), None);
    }

    #[test]
    fn knee_is_lowest_indistinguishable_in_any_order() {
        // best = 32 (1000). 16 (990, hw 10): |diff| 10 <= sqrt(100+100) = 14.1
        // -> indistinguishable. 8 (800) is not. Knee = 16 at 990.
        let levels = [
            lp(32, 1000.0, 10.0, true),
            lp(8, 800.0, 10.0, true),
            lp(16, 990.0, 10.0, true),
        ];
        let k = knee(&levels).unwrap();
        assert_eq!(k.concurrency, 16);
        assert_eq!(k.rpm, 990.0);
        assert_eq!(k.limited_by, LimitedBy::Saturation);
    }

    #[test]
    fn knee_slo_limited_only_when_distinguishably_higher() {
        let ok = [lp(8, 800.0, 8.0, true), lp(4, 400.0, 4.0, true)];
        // 16 breaks the SLO with 1600 >> 800: Slo.
        let mut v = ok.to_vec();
        v.push(lp(16, 1600.0, 16.0, false));
        assert_eq!(knee(&v).unwrap().limited_by, LimitedBy::Slo);
        // 16 breaks the SLO at 805, within sqrt(64 + 64) = 11.3 of 800:
        // not a real gain, so Saturation.
        let mut v = ok.to_vec();
        v.push(lp(16, 805.0, 8.0, false));
        assert_eq!(knee(&v).unwrap().limited_by, LimitedBy::Saturation);
        // A breaking level below the knee does not count.
        let v = [lp(8, 800.0, 8.0, true), lp(2, 5000.0, 8.0, false)];
        assert_eq!(knee(&v).unwrap().limited_by, LimitedBy::Saturation);
    }

    #[test]
    fn first_level_is_one_and_zero_max_is_one() {
        assert_eq!(next_level(&[], 64), Some(1));
        assert_eq!(next_level(&[], 0), Some(1));
        assert_eq!(next_level(&[lp(1, 100.0, 1.0, true)], 0), None);
    }

    #[test]
    fn saturation_knee_exact_with_relative_half_width() {
        // hw = 1% of rpm. Neighbours c = GB-1 and GB differ by 100 RPM while
        // the combined hw is 0.01 * 100 * sqrt((GB-1)^2 + GB^2); that is
        // < 100 only for GB <= 70, so these sizes are resolvable.
        for gb in [16, 5, 12, 1, 7, 64] {
            let (_, k) = search(1024, saturating(gb, |r| 0.01 * r));
            let k = k.unwrap();
            assert_eq!(k.concurrency, gb, "GB = {gb}");
            assert_eq!(k.limited_by, LimitedBy::Saturation);
        }
    }

    #[test]
    fn saturation_knee_exact_with_fixed_half_width() {
        // Fixed hw = 1% of one slot's RPM (1.0): every pair of neighbours
        // below the plateau is distinguishable, for any GB.
        for gb in [16, 5, 12, 1, 7, 64, 100] {
            let (_, k) = search(1024, saturating(gb, |_| 1.0));
            assert_eq!(k.unwrap().concurrency, gb, "GB = {gb}");
        }
    }

    #[test]
    fn saturation_beyond_resolution_stops_at_first_indistinguishable() {
        // GB = 100 with hw = 1% of rpm: 99 (9900 +- 99) vs 100 (10000 +- 100)
        // differ by 100 <= sqrt(99^2 + 100^2) = 140.7, so they cannot be
        // told apart and the knee is 99 by definition; 98 (diff 200) can.
        let (order, k) = search(1024, saturating(100, |r| 0.01 * r));
        assert_eq!(k.unwrap().concurrency, 99);
        assert!(order.contains(&98));
    }

    #[test]
    fn saturation_sixteen_exact_sequence() {
        // Doubling: 1 2 4 8 16 32 64; gains 16->32 and 32->64 are 0 -> stop.
        // K = 16, L = 8 -> 12 -> L = 12 -> 14 -> 15 -> K - L = 1 -> done.
        let (order, _) = search(1024, saturating(16, |r| 0.01 * r));
        assert_eq!(order, vec![1, 2, 4, 8, 16, 32, 64, 12, 14, 15]);
    }

    #[test]
    fn noisy_plateau_knee_at_plateau_start() {
        // Plateau values vary by up to +-0.5% (deterministic per level) with
        // a 2% half-width: any two plateau levels differ by <= 1% of 100*GB
        // while the combined hw is ~2.8%, so all are indistinguishable; the
        // level just below the plateau is ~6% (GB 16) or ~8% (GB 12) lower.
        // A multiplicative hash scrambles c into 11 offsets -5..=5 per mille.
        let noise = |c: u32| {
            let h = c.wrapping_mul(2_654_435_761) >> 7;
            (f64::from(h % 11) - 5.0) / 1000.0
        };
        for gb in [16u32, 12] {
            let measure = move |c: u32| {
                let rpm = f64::from(c.min(gb)) * 100.0 * (1.0 + noise(c));
                lp(c, rpm, 0.02 * rpm, true)
            };
            let (_, k) = search(1024, measure);
            assert_eq!(k.unwrap().concurrency, gb, "GB = {gb}");
        }
    }

    #[test]
    fn flat_curve_knee_one() {
        // Gains 1->2 and 2->4 are both 0 -> stop after three levels.
        let (order, k) = search(1024, |c| lp(c, 500.0, 5.0, true));
        assert_eq!(order, vec![1, 2, 4]);
        let k = k.unwrap();
        assert_eq!(k.concurrency, 1);
        assert_eq!(k.limited_by, LimitedBy::Saturation);
    }

    #[test]
    fn linear_growth_stops_at_max() {
        // Doubling 1..32 then min(64, 48) = 48 = max -> stop. K = 48, L = 32:
        // bisect 40, 44, 46, 47 (each distinguishable from 48).
        let (order, k) = search(48, |c| {
            let rpm = f64::from(c) * 100.0;
            lp(c, rpm, 0.01 * rpm, true)
        });
        assert_eq!(order, vec![1, 2, 4, 8, 16, 32, 48, 40, 44, 46, 47]);
        let k = k.unwrap();
        assert_eq!(k.concurrency, 48);
        assert_eq!(k.limited_by, LimitedBy::Saturation);
    }

    #[test]
    fn slo_limited_bisects_to_last_ok_level() {
        // rpm grows linearly; levels above 10 break the SLO.
        // Doubling 1 2 4 8 16 (16 breaks -> stop). K = 8, L = 4 -> 6 -> 7.
        // SLO: best 8, S = 16 -> 12 (breaks) -> 10 (ok). K = 10, L = 8 -> 9.
        // SLO: best 10, S = 12 -> 11 (breaks) -> gap 1 -> done.
        let (order, k) = search(1024, |c| {
            let rpm = f64::from(c) * 100.0;
            lp(c, rpm, 0.01 * rpm, c <= 10)
        });
        assert_eq!(order, vec![1, 2, 4, 8, 16, 6, 7, 12, 10, 9, 11]);
        let k = k.unwrap();
        assert_eq!(k.concurrency, 10);
        assert_eq!(k.rpm, 1000.0);
        assert_eq!(k.limited_by, LimitedBy::Slo);
    }

    #[test]
    fn slo_breaking_after_saturation_is_saturation() {
        // Saturates at 8; the SLO breaks above 20 but with no extra
        // throughput, so no SLO bisection happens.
        let (order, k) = search(1024, |c| {
            let rpm = f64::from(c.min(8)) * 100.0;
            lp(c, rpm, 0.01 * rpm, c <= 20)
        });
        let k = k.unwrap();
        assert_eq!(k.concurrency, 8);
        assert_eq!(k.limited_by, LimitedBy::Saturation);
        assert!(!order.contains(&24), "{order:?}");
    }

    #[test]
    fn nothing_meets_slo_stops_after_one() {
        let (order, k) = search(1024, |c| lp(c, 100.0, 1.0, false));
        assert_eq!(order, vec![1]);
        assert_eq!(k, None);
    }

    #[test]
    fn dead_endpoint_stops_doubling() {
        // 0 RPM everywhere: gains read as 0, so three levels and knee 1.
        let (order, k) = search(1024, |c| lp(c, 0.0, 0.0, true));
        assert_eq!(order, vec![1, 2, 4]);
        assert_eq!(k.unwrap().concurrency, 1);
    }

    proptest! {
        #[test]
        fn search_finds_any_saturation_point(gb in 1u32..=200) {
            let (order, k) = search(1024, saturating(gb, |_| 1.0));
            prop_assert!(order.len() <= 25, "{} levels: {:?}", order.len(), order);
            prop_assert_eq!(k.unwrap().concurrency, gb);
        }

        /// Rule 3 on arbitrary curves and SLO patterns: `search` panics if a
        /// level is repeated, out of range or the loop does not end.
        #[test]
        fn search_is_well_behaved(
            rpms in proptest::collection::vec(0.0f64..1e4, 64),
            oks in proptest::collection::vec(any::<bool>(), 64),
            hw in 0.0f64..500.0,
            max in 1u32..64,
        ) {
            let (order, k) = search(max, |c| {
                let i = (c - 1) as usize;
                lp(c, rpms[i], hw, oks[i])
            });
            prop_assert!(order.len() <= max as usize);
            if let Some(k) = k {
                prop_assert!(order.contains(&k.concurrency));
            }
        }
    }
}
