//! The plateau: the throughput a resource sustains beyond its knee, estimated from every level
//! that measures it rather than from the luckiest one. Throughput against concurrency is fitted
//! as `min(slope x C, plateau)` by weighted least squares (each level weighted by the inverse
//! variance its own CI states), over every split of the levels into a rising part and a flat
//! one; the split with the least weighted error wins. The plateau is then the weighted mean of
//! the flat levels, and its standard error is widened by the Birge ratio when those levels
//! disagree more than their CIs allow (a server whose rate sags under overload).
//!
//! Why not the highest level: the maximum of several noisy estimates of one plateau is biased
//! upward (seen: 524 RPM ±28% at level 8 against 440 and 428 at 16 and 32 of the same
//! saturated server; the run achieved 434). Pure arithmetic.

/// One measured level as the fit reads it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Point {
    pub concurrency: u32,
    pub rpm: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

/// z for a two-sided 95% interval: the levels' CIs and the plateau's use it.
const Z95: f64 = 1.959_963_984_540_054;

/// The fitted throughput curve of one sweep's levels.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Fit {
    /// RPM per unit of concurrency on the rising part; infinite when every level is flat.
    pub slope: f64,
    /// The plateau's mean RPM.
    pub rpm: f64,
    /// Its standard error, RPM.
    pub se: f64,
    /// The concurrencies of the levels pooled into the plateau, ascending.
    pub pooled: Vec<u32>,
}

impl Fit {
    /// The fitted RPM at concurrency `c`.
    pub fn at(&self, c: u32) -> f64 {
        (self.slope * f64::from(c)).min(self.rpm)
    }

    /// The plateau's 95% CI low bound as a fraction of its mean.
    pub fn low_share(&self) -> f64 {
        if self.rpm > 0.0 {
            ((self.rpm - Z95 * self.se) / self.rpm).max(0.0)
        } else {
            0.0
        }
    }

    /// The plateau's 95% CI high bound as a fraction of its mean.
    pub fn high_share(&self) -> f64 {
        if self.rpm > 0.0 {
            (self.rpm + Z95 * self.se) / self.rpm
        } else {
            1.0
        }
    }
}

/// A level's standard error from its stated CI; never zero, so a level reported without an
/// interval weighs much, not infinitely.
fn standard_error(l: &Point) -> f64 {
    let half = (l.ci_high - l.ci_low).abs() / 2.0;
    let floor = (l.rpm.abs() * 1e-4).max(1e-9);
    if half.is_finite() {
        (half / Z95).max(floor)
    } else {
        f64::MAX.sqrt()
    }
}

/// Fits `levels` (any order, at least one). None when there is none.
pub(crate) fn fit(levels: &[Point]) -> Option<Fit> {
    let mut pts: Vec<(f64, f64, f64, u32)> = levels
        .iter()
        .map(|l| {
            let se = standard_error(l);
            (f64::from(l.concurrency), l.rpm, 1.0 / (se * se), l.concurrency)
        })
        .collect();
    if pts.is_empty() {
        return None;
    }
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut best: Option<(f64, usize, f64, f64)> = None;
    // Split k: levels [0, k) rise, [k, n) are flat. The flat part is never empty.
    for k in 0..pts.len() {
        let (rise, flat) = pts.split_at(k);
        let w: f64 = flat.iter().map(|p| p.2).sum();
        let plateau = flat.iter().map(|p| p.2 * p.1).sum::<f64>() / w;
        let slope = if rise.is_empty() {
            f64::INFINITY
        } else {
            let num: f64 = rise.iter().map(|p| p.2 * p.0 * p.1).sum();
            let den: f64 = rise.iter().map(|p| p.2 * p.0 * p.0).sum();
            num / den
        };
        if !(plateau.is_finite() && slope > 0.0) {
            continue;
        }
        let sse: f64 = pts
            .iter()
            .map(|p| p.2 * (p.1 - (slope * p.0).min(plateau)).powi(2))
            .sum();
        // Ties go to the split that pools more levels.
        if best.is_none_or(|b| sse < b.0 * (1.0 - 1e-12)) {
            best = Some((sse, k, slope, plateau));
        }
    }
    let (_, k, slope, rpm) = best?;
    let flat = &pts[k..];
    let w: f64 = flat.iter().map(|p| p.2).sum();
    let mut se = (1.0 / w).sqrt();
    if flat.len() > 1 {
        // Birge ratio: the flat levels' scatter beyond what their own CIs explain.
        let q: f64 = flat.iter().map(|p| p.2 * (p.1 - rpm).powi(2)).sum();
        se *= (q / (flat.len() - 1) as f64).sqrt().max(1.0);
    }
    Some(Fit {
        slope,
        rpm,
        se,
        pooled: flat.iter().map(|p| p.3).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn level(c: u32, rpm: f64, se: f64) -> Point {
        Point {
            concurrency: c,
            rpm,
            ci_low: rpm - Z95 * se,
            ci_high: rpm + Z95 * se,
        }
    }

    fn fitted(levels: &[Point]) -> Fit {
        fit(levels).unwrap()
    }

    #[test]
    fn the_issue_sweep_pools_the_saturated_levels() {
        // Level 8 measured 524 ±27.7%, 16 and 32 (the same saturated server) 440 and 428.
        let ls = [
            level(1, 63.0, 2.0),
            level(2, 123.0, 4.0),
            level(4, 245.0, 8.0),
            level(8, 524.0, 524.0 * 0.277 / Z95),
            level(16, 440.0, 440.0 * 0.06 / Z95),
            level(32, 428.0, 428.0 * 0.06 / Z95),
        ];
        let f = fitted(&ls);
        assert!(f.rpm > 425.0 && f.rpm < 445.0, "{f:?}");
        assert!(f.pooled.contains(&16) && f.pooled.contains(&32), "{f:?}");
        assert!(f.at(1) < 70.0 && f.at(64) == f.rpm, "{f:?}");
    }

    #[test]
    fn all_flat_levels_pool_and_rising_ones_do_not() {
        let f = fitted(&[level(16, 1000.0, 10.0), level(32, 1010.0, 10.0), level(64, 990.0, 10.0)]);
        assert_eq!(f.pooled, [16, 32, 64]);
        assert!((f.rpm - 1000.0).abs() < 1e-9, "{f:?}");
        assert!(f.slope.is_infinite());
        let f = fitted(&[level(1, 100.0, 3.0), level(2, 200.0, 5.0), level(4, 400.0, 8.0)]);
        assert_eq!(f.pooled, [4], "still rising: the last level is the best there is");
        let one = fitted(&[level(8, 500.0, 10.0)]);
        assert!((one.rpm - 500.0).abs() < 1e-9 && one.pooled == [8], "{one:?}");
    }

    #[test]
    fn scatter_beyond_the_cis_widens_the_plateau_ci() {
        let tight = fitted(&[level(16, 1000.0, 5.0), level(32, 1002.0, 5.0)]);
        let scattered = fitted(&[level(16, 1000.0, 5.0), level(32, 1100.0, 5.0), level(64, 900.0, 5.0)]);
        assert!(scattered.se > 5.0 * tight.se, "{tight:?} {scattered:?}");
        assert!(scattered.low_share() < tight.low_share());
    }

    fn normal(rng: &mut SmallRng) -> f64 {
        // Box-Muller.
        let u: f64 = rng.gen_range(f64::EPSILON..1.0);
        let v: f64 = rng.gen_range(0.0..1.0);
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// On a known curve (60 RPM per slot up to a plateau of 480 at 8), measured with the noise
    /// each level states, the plateau estimate is unbiased where the highest level is not.
    #[test]
    fn unbiased_where_the_highest_level_overestimates() {
        let truth = |c: u32| (60.0 * f64::from(c)).min(480.0);
        // Relative standard errors as sweeps get them: the knee's level is the noisiest.
        let rel = [
            (1, 0.03),
            (2, 0.03),
            (4, 0.04),
            (8, 0.12),
            (16, 0.05),
            (32, 0.05),
            (64, 0.05),
        ];
        let (mut sum_fit, mut sum_max, mut covered) = (0.0, 0.0, 0);
        let seeds = 2000;
        for seed in 0..seeds {
            let mut rng = SmallRng::seed_from_u64(seed);
            let ls: Vec<Point> = rel
                .iter()
                .map(|&(c, r)| {
                    let se = truth(c) * r;
                    level(c, truth(c) + se * normal(&mut rng), se)
                })
                .collect();
            let f = fitted(&ls);
            sum_fit += f.rpm;
            sum_max += ls.iter().map(|l| l.rpm).fold(0.0, f64::max);
            if (f.rpm - 480.0).abs() <= Z95 * f.se {
                covered += 1;
            }
        }
        let (mean_fit, mean_max) = (sum_fit / seeds as f64, sum_max / seeds as f64);
        assert!(
            (mean_fit / 480.0 - 1.0).abs() < 0.01,
            "plateau estimate {mean_fit:.1} vs 480"
        );
        assert!(
            mean_max / 480.0 - 1.0 > 0.04,
            "the highest level {mean_max:.1} should overestimate"
        );
        let coverage = f64::from(covered) / seeds as f64;
        assert!(
            coverage > 0.90,
            "the 95% CI covered the truth {coverage:.3} of the time"
        );
    }
}
