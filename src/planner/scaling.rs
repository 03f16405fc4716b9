//! Measured scaling across replicas: sweeps that share a `--name` are one deployment option
//! measured at different GPU counts, and the ratio of their per-GPU rates is the option's
//! scaling efficiency, which the plan uses to extrapolate instead of assuming it linear. Pure.

use serde::{Deserialize, Serialize};

/// One GPU count the option was measured at, with the per-GPU rate there relative to the
/// smallest count's (1.0 at the smallest).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct ScalingPoint {
    pub gpus: u32,
    pub efficiency: f64,
}

/// The option's scaling, from at least two GPU counts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Scaling {
    /// Ascending GPU counts, the first the base (efficiency 1.0).
    pub measured: Vec<ScalingPoint>,
}

/// No count serves less than this share per GPU in an extrapolation: below it the plan is
/// sized on a guess, not a measurement, and the line says so.
const FLOOR: f64 = 0.05;

impl Scaling {
    /// From `(gpus, rpm per GPU)` of each sweep: `None` unless two GPU counts differ. Repeats of
    /// one count are averaged; efficiencies above 1 (noise on a linear fleet) are read as 1, as
    /// a fleet is never sized on faster-than-linear scaling.
    pub fn from_rates(rates: &[(u32, f64)]) -> Option<Scaling> {
        let mut counts: Vec<u32> = rates.iter().map(|r| r.0).filter(|&g| g > 0).collect();
        counts.sort_unstable();
        counts.dedup();
        if counts.len() < 2 {
            return None;
        }
        let mean_at = |g: u32| {
            let v: Vec<f64> = rates.iter().filter(|r| r.0 == g).map(|r| r.1).collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        let base = mean_at(counts[0]);
        if !(base.is_finite() && base > 0.0) {
            return None;
        }
        let mut measured: Vec<ScalingPoint> = Vec::with_capacity(counts.len());
        for g in counts {
            let e = (mean_at(g) / base).clamp(FLOOR, 1.0);
            // Never better at more GPUs than at fewer: a noisy higher count is held to the one
            // below, so extrapolation is monotone.
            let e = measured.last().map_or(e, |p| e.min(p.efficiency));
            measured.push(ScalingPoint { gpus: g, efficiency: e });
        }
        Some(Scaling { measured })
    }

    /// The base's GPU count: the sweep whose levels the plan is sized from.
    pub fn base_gpus(&self) -> u32 {
        self.measured[0].gpus
    }

    /// Per-GPU rate at `gpus` relative to the base: piecewise linear in ln(GPUs) between the
    /// measured counts, 1.0 at or below the base, and past the largest count the last segment's
    /// trend continued (floored at 5%).
    pub fn at(&self, gpus: u32) -> f64 {
        let m = &self.measured;
        let g = f64::from(gpus.max(1)).ln();
        if gpus <= m[0].gpus {
            return 1.0;
        }
        let seg = m.windows(2).find(|w| gpus <= w[1].gpus).unwrap_or(&m[m.len() - 2..]);
        let (g0, g1) = (f64::from(seg[0].gpus).ln(), f64::from(seg[1].gpus).ln());
        let t = (g - g0) / (g1 - g0);
        let e = seg[0].efficiency + t * (seg[1].efficiency - seg[0].efficiency);
        e.clamp(FLOOR, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_gpu_count_is_no_measurement() {
        assert!(Scaling::from_rates(&[(1, 100.0)]).is_none());
        assert!(Scaling::from_rates(&[(2, 100.0), (2, 90.0)]).is_none());
    }

    #[test]
    fn interpolates_in_log_gpus_and_extrapolates_the_trend() {
        // 1 GPU: 100 per GPU; 4 GPUs: 80 per GPU.
        let s = Scaling::from_rates(&[(4, 80.0), (1, 100.0)]).expect("two counts");
        assert_eq!(s.base_gpus(), 1);
        assert_eq!(s.at(1), 1.0);
        assert!((s.at(4) - 0.8).abs() < 1e-12);
        // 2 GPUs: halfway in ln(GPUs).
        assert!((s.at(2) - 0.9).abs() < 1e-12);
        // 16 GPUs: two more doublings of -0.1 each.
        assert!((s.at(16) - 0.6).abs() < 1e-12);
        // Far out, floored.
        assert_eq!(s.at(1 << 30), FLOOR);
    }

    #[test]
    fn noise_never_makes_scaling_better_than_linear() {
        let s = Scaling::from_rates(&[(1, 100.0), (2, 103.0), (4, 95.0), (8, 97.0)]).expect("counts");
        let e: Vec<f64> = s.measured.iter().map(|p| p.efficiency).collect();
        assert_eq!(e, vec![1.0, 1.0, 0.95, 0.95]);
        let want = 1.0 - 0.05 * (3f64.ln() - 2f64.ln()) / (4f64.ln() - 2f64.ln());
        assert!((s.at(3) - want).abs() < 1e-12);
        // Past 8, the flat last segment stays flat.
        assert_eq!(s.at(64), 0.95);
    }
}
