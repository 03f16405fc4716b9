//! Latency distributions in constant memory (HdrHistogram, 3 significant digits), recorded in
//! microseconds and read back in milliseconds.

use hdrhistogram::Histogram;

/// One histogram per latency kind of a concurrency level.
#[derive(Clone, Debug, Default)]
pub struct LatencySet {
    pub e2e: Hist,
    pub ttft: Hist,
    pub tpot: Hist,
}

/// A histogram of durations.
#[derive(Clone, Debug)]
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

/// Highest value tracked: one hour in microseconds; longer values are clamped to it.
const MAX_US: u64 = 3_600_000_000;

impl Hist {
    pub fn new() -> Hist {
        // Bounds are constants that hdrhistogram accepts (low >= 1, high >= 2*low, sigfig <= 5).
        Hist(Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds"))
    }

    /// Records a duration in milliseconds; negative or non-finite values are ignored.
    pub fn record_ms(&mut self, ms: f64) {
        if ms.is_finite() && ms >= 0.0 {
            let us = ((ms * 1000.0).round() as u64).clamp(1, MAX_US);
            self.0.saturating_record(us);
        }
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The q-quantile (0..=1) in milliseconds; None when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        (!self.is_empty()).then(|| self.0.value_at_quantile(q) as f64 / 1000.0)
    }

    pub fn mean_ms(&self) -> Option<f64> {
        (!self.is_empty()).then(|| self.0.mean() / 1000.0)
    }

    /// The samples' standard deviation in milliseconds; None when empty.
    pub fn stdev_ms(&self) -> Option<f64> {
        (!self.is_empty()).then(|| self.0.stdev() / 1000.0)
    }

    /// Empties the histogram, keeping its bounds.
    pub fn clear(&mut self) {
        self.0.reset();
    }

    /// Adds another histogram's samples (merging per-worker recorders).
    pub fn merge(&mut self, other: &Hist) {
        // Same bounds on both sides, so `add` cannot fail.
        let _ = self.0.add(&other.0);
    }
}

/// TPOT as vLLM's benchmark defines it: (E2E - TTFT) / (output tokens - 1); None for a
/// single-token answer, where it is undefined.
pub fn tpot_ms(e2e_ms: f64, ttft_ms: f64, output_tokens: u64) -> Option<f64> {
    (output_tokens > 1).then(|| (e2e_ms - ttft_ms).max(0.0) / (output_tokens - 1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quantiles_in_ms() {
        let mut h = Hist::new();
        assert_eq!(h.quantile_ms(0.5), None);
        for v in 1..=100 {
            h.record_ms(f64::from(v));
        }
        let p50 = h.quantile_ms(0.5).unwrap();
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((p50 - 50.0).abs() < 0.1, "{p50}");
        assert!((p99 - 99.0).abs() < 0.1, "{p99}");
        h.record_ms(f64::NAN);
        h.record_ms(-1.0);
        assert_eq!(h.len(), 100);
    }

    #[test]
    fn tpot_rule() {
        assert_eq!(tpot_ms(1100.0, 100.0, 11), Some(100.0));
        assert_eq!(tpot_ms(1100.0, 100.0, 1), None);
    }

    proptest! {
        #[test]
        fn quantiles_monotone_and_merge_equals_one(a in proptest::collection::vec(0.0f64..1e5, 1..200), b in proptest::collection::vec(0.0f64..1e5, 1..200)) {
            let mut ha = Hist::new();
            let mut hb = Hist::new();
            let mut all = Hist::new();
            for v in &a { ha.record_ms(*v); all.record_ms(*v); }
            for v in &b { hb.record_ms(*v); all.record_ms(*v); }
            ha.merge(&hb);
            for q in [0.0, 0.5, 0.9, 0.95, 0.99, 1.0] {
                prop_assert_eq!(ha.quantile_ms(q), all.quantile_ms(q));
            }
            let qs: Vec<f64> = [0.1, 0.5, 0.9, 0.99].iter().map(|q| all.quantile_ms(*q).unwrap()).collect();
            prop_assert!(qs.windows(2).all(|w| w[0] <= w[1]));
        }
    }
}
