//! Confidence intervals for throughput by the method of batch means.
//!
//! Request completions inside a measurement window are not independent
//! samples, but counts over equal, non-overlapping sub-windows ("batches")
//! are close enough to independent for a Student's t interval on their mean.
//! Everything here is pure arithmetic: no clock, no I/O.

use statrs::distribution::{ContinuousCDF, StudentsT};

/// A two-sided confidence interval for a mean.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MeanCi {
    /// Sample mean.
    pub mean: f64,
    /// Half the width of the interval: `mean ± half_width`.
    pub half_width: f64,
    /// Lower bound, `mean - half_width`.
    pub low: f64,
    /// Upper bound, `mean + half_width`.
    pub high: f64,
    /// Number of samples the interval was computed from.
    pub n: usize,
}

impl MeanCi {
    /// `half_width / mean`, the relative precision of the estimate.
    ///
    /// Returns `f64::INFINITY` when the mean is not positive, because a
    /// relative precision is meaningless there and callers compare this
    /// against a target ("stop when below 5%"), which must then never pass.
    pub fn relative_half_width(&self) -> f64 {
        if self.mean > 0.0 {
            self.half_width / self.mean
        } else {
            f64::INFINITY
        }
    }
}

/// Student's t two-sided CI of the mean (statrs `StudentsT`, df = n - 1).
///
/// `confidence` is the two-sided coverage, e.g. `0.95`. Returns `None` if
/// there are fewer than two samples, any sample is not finite, or
/// `confidence` is not strictly between 0 and 1.
pub fn student_t_ci(samples: &[f64], confidence: f64) -> Option<MeanCi> {
    let n = samples.len();
    if n < 2 || samples.iter().any(|x| !x.is_finite()) {
        return None;
    }
    if !(confidence > 0.0 && confidence < 1.0) {
        return None;
    }
    let nf = n as f64;
    let mean = samples.iter().sum::<f64>() / nf;
    // Sample (Bessel-corrected) variance: the population variance is unknown.
    let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (nf - 1.0);
    let std_err = (var / nf).sqrt();
    let t_dist = StudentsT::new(0.0, 1.0, nf - 1.0).ok()?;
    // Two-sided: put (1 - confidence) / 2 in each tail.
    let t = t_dist.inverse_cdf(1.0 - (1.0 - confidence) / 2.0);
    let half_width = t * std_err;
    if !half_width.is_finite() {
        return None;
    }
    Some(MeanCi {
        mean,
        half_width,
        low: mean - half_width,
        high: mean + half_width,
        n,
    })
}

/// Events per minute in each of `batches` equal sub-windows of `[start, end)`
/// (seconds).
///
/// Events outside the window (including one exactly at `end`, and any NaN)
/// are ignored. Returns an empty vector when `batches` is 0 or the window is
/// empty, reversed or not finite.
pub fn batch_means_per_minute(event_times_s: &[f64], start: f64, end: f64, batches: usize) -> Vec<f64> {
    if batches == 0 || !start.is_finite() || !end.is_finite() || end <= start {
        return Vec::new();
    }
    let width = (end - start) / batches as f64;
    let mut counts = vec![0u64; batches];
    for &t in event_times_s {
        // `start <= t && t < end` is false for NaN, so NaN is dropped here.
        if start <= t && t < end {
            // Rounding can push an event just below `end` to index
            // `batches`; it belongs in the last sub-window.
            let idx = (((t - start) / width) as usize).min(batches - 1);
            counts[idx] += 1;
        }
    }
    counts.into_iter().map(|c| c as f64 / width * 60.0).collect()
}

/// How many sub-windows to use for `events` events: at least 5, at most 30,
/// aiming at >= 10 events per window.
///
/// Five is the fewest batches for which a t interval is still usable (df = 4);
/// beyond 30 the t quantile barely shrinks while each batch gets noisier.
pub fn choose_batches(events: usize) -> usize {
    (events / 10).clamp(MIN_BATCHES, MAX_BATCHES)
}

/// Fewest batches [`rate_ci`] will use.
const MIN_BATCHES: usize = 5;
/// Most batches [`rate_ci`] will use.
const MAX_BATCHES: usize = 30;

/// A throughput estimate with its confidence interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateEstimate {
    /// Events in the window divided by the window length, times 60.
    pub per_minute: f64,
    /// CI of the mean of the per-minute batch means.
    pub ci: MeanCi,
    /// Number of sub-windows used.
    pub batches: usize,
}

/// Throughput with a CI: batch means over [`choose_batches`]`(count)`
/// sub-windows of `[start, end)`, at the given two-sided `confidence`
/// (callers normally pass `0.95`).
///
/// Because the sub-windows have equal length, `per_minute` equals
/// `ci.mean` up to rounding. Returns `None` if the window is non-positive or
/// not finite, it holds no events (a zero-width interval around zero would
/// claim certainty that was never observed), fewer than 5 batches are
/// possible, or `confidence` is not in (0, 1).
pub fn rate_ci(event_times_s: &[f64], start: f64, end: f64, confidence: f64) -> Option<RateEstimate> {
    if !start.is_finite() || !end.is_finite() || end <= start {
        return None;
    }
    let count = event_times_s.iter().filter(|&&t| start <= t && t < end).count();
    if count == 0 {
        return None;
    }
    let batches = choose_batches(count);
    if batches < MIN_BATCHES {
        return None;
    }
    let means = batch_means_per_minute(event_times_s, start, end, batches);
    let ci = student_t_ci(&means, confidence)?;
    Some(RateEstimate {
        per_minute: count as f64 / (end - start) * 60.0,
        ci,
        batches,
    })
}

/// The narrowest honest relative half-width for a closed-loop throughput count: `n`
/// completions counted in a window while `concurrency` requests were in flight.
///
/// Batch means of a very regular process (a deterministic server) can all be equal, which
/// gives a zero-width t interval. But the window's edges cut through the requests in flight:
/// each of the `concurrency` slots contributes one completion more or less depending on its
/// phase, so with independent phases the count is uncertain by about `sqrt(concurrency)`.
/// This floor keeps a short measurement from claiming precision it does not have.
pub fn closed_loop_floor(concurrency: u32, n: usize) -> f64 {
    if n == 0 {
        return f64::INFINITY;
    }
    f64::from(concurrency).sqrt() / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_shrinks_with_more_completions() {
        assert_eq!(closed_loop_floor(16, 0), f64::INFINITY);
        assert!((closed_loop_floor(16, 100) - 0.04).abs() < 1e-12);
        assert!((closed_loop_floor(16, 400) - 0.01).abs() < 1e-12);
        assert!((closed_loop_floor(1, 50) - 0.02).abs() < 1e-12);
    }
    use proptest::prelude::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn student_t_matches_hand_computation() {
        // samples 10,12,11,13,9: sum 55 -> mean 11.
        // squared deviations 1,1,0,4,4 = 10; var = 10/4 = 2.5; sd = 1.58114.
        // std err = 1.58114 / sqrt(5) = 0.707107.
        // t(0.975, df 4) = 2.776445 (table value).
        // half-width = 2.776445 * 0.707107 = 1.963243.
        let ci = student_t_ci(&[10.0, 12.0, 11.0, 13.0, 9.0], 0.95).unwrap();
        assert!(close(ci.mean, 11.0, 1e-12));
        assert!(close(ci.half_width, 1.963243, 1e-5), "{}", ci.half_width);
        assert!(close(ci.low, 11.0 - 1.963243, 1e-5));
        assert!(close(ci.high, 11.0 + 1.963243, 1e-5));
        assert_eq!(ci.n, 5);
        // relative = 1.963243 / 11 = 0.178477
        assert!(close(ci.relative_half_width(), 0.178477, 1e-5));
    }

    #[test]
    fn student_t_other_confidence() {
        // Same samples at 90%: t(0.95, 4) = 2.131847; hw = 2.131847 * 0.707107
        // = 1.507443.
        let ci = student_t_ci(&[10.0, 12.0, 11.0, 13.0, 9.0], 0.90).unwrap();
        assert!(close(ci.half_width, 1.507443, 1e-5), "{}", ci.half_width);
    }

    #[test]
    fn student_t_two_samples() {
        // [1, 3]: mean 2, var ((1)^2 + (1)^2)/1 = 2, se = sqrt(2/2) = 1,
        // t(0.975, 1) = 12.706205 -> hw 12.706205.
        let ci = student_t_ci(&[1.0, 3.0], 0.95).unwrap();
        assert!(close(ci.half_width, 12.706205, 1e-4), "{}", ci.half_width);
    }

    #[test]
    fn student_t_rejects_bad_input() {
        assert!(student_t_ci(&[], 0.95).is_none());
        assert!(student_t_ci(&[1.0], 0.95).is_none());
        assert!(student_t_ci(&[1.0, f64::NAN, 2.0], 0.95).is_none());
        assert!(student_t_ci(&[1.0, f64::INFINITY], 0.95).is_none());
        assert!(student_t_ci(&[1.0, 2.0], 0.0).is_none());
        assert!(student_t_ci(&[1.0, 2.0], 1.0).is_none());
        assert!(student_t_ci(&[1.0, 2.0], f64::NAN).is_none());
    }

    #[test]
    fn constant_samples_have_zero_width() {
        let ci = student_t_ci(&[5.0; 6], 0.95).unwrap();
        assert_eq!(ci.mean, 5.0);
        assert_eq!(ci.half_width, 0.0);
    }

    #[test]
    fn relative_half_width_non_positive_mean_is_infinite() {
        let ci = MeanCi {
            mean: 0.0,
            half_width: 1.0,
            low: -1.0,
            high: 1.0,
            n: 3,
        };
        assert_eq!(ci.relative_half_width(), f64::INFINITY);
        let neg = MeanCi { mean: -2.0, ..ci };
        assert_eq!(neg.relative_half_width(), f64::INFINITY);
    }

    #[test]
    fn batch_means_count_per_window() {
        // Window [0, 10) in 2 batches of 5 s each.
        // Batch 0 gets 0.0, 1.0, 4.999 (3 events) -> 3 / 5 s * 60 = 36/min.
        // Batch 1 gets 5.0 (boundary goes right), 9.9 (2 events) -> 24/min.
        // 10.0 (== end), -0.1 and NaN are outside.
        let ev = [0.0, 1.0, 4.999, 5.0, 9.9, 10.0, -0.1, f64::NAN];
        let m = batch_means_per_minute(&ev, 0.0, 10.0, 2);
        assert_eq!(m, vec![36.0, 24.0]);
    }

    #[test]
    fn batch_means_degenerate_windows() {
        assert!(batch_means_per_minute(&[1.0], 0.0, 10.0, 0).is_empty());
        assert!(batch_means_per_minute(&[1.0], 5.0, 5.0, 3).is_empty());
        assert!(batch_means_per_minute(&[1.0], 6.0, 5.0, 3).is_empty());
        assert!(batch_means_per_minute(&[1.0], 0.0, f64::NAN, 3).is_empty());
    }

    #[test]
    fn choose_batches_bounds() {
        assert_eq!(choose_batches(0), 5);
        assert_eq!(choose_batches(49), 5);
        assert_eq!(choose_batches(60), 6); // 60 / 10 = 6 windows of 10 events
        assert_eq!(choose_batches(299), 29);
        assert_eq!(choose_batches(300), 30);
        assert_eq!(choose_batches(1_000_000), 30);
    }

    #[test]
    fn rate_ci_even_stream() {
        // 600 events, one every 0.1 s at t = 0.05, 0.15, ..., 59.95 over
        // [0, 60): 600 events/min. choose_batches(600) = 30 -> 2 s windows with
        // exactly 20 events each -> every batch mean is 20/2*60 = 600, so the
        // CI has zero width.
        let ev: Vec<f64> = (0..600).map(|i| i as f64 * 0.1 + 0.05).collect();
        let r = rate_ci(&ev, 0.0, 60.0, 0.95).unwrap();
        assert_eq!(r.batches, 30);
        assert!(close(r.per_minute, 600.0, 1e-9));
        assert!(close(r.ci.mean, 600.0, 1e-9));
        assert!(r.ci.half_width < 1e-6);
    }

    #[test]
    fn rate_ci_ignores_events_outside_and_at_end() {
        // 60 events in [0, 30) at t = 0.25, 0.75, ..., 29.75 -> 120/min.
        // Extra events at -1, 30 (== end) and 31 must not count.
        let mut ev: Vec<f64> = (0..60).map(|i| i as f64 * 0.5 + 0.25).collect();
        ev.extend([-1.0, 30.0, 31.0]);
        let r = rate_ci(&ev, 0.0, 30.0, 0.95).unwrap();
        // 60 events -> 6 batches of 5 s, 10 events each.
        assert_eq!(r.batches, 6);
        assert!(close(r.per_minute, 120.0, 1e-9));
    }

    #[test]
    fn rate_ci_uneven_stream_matches_hand_ci() {
        // Window [0, 50), 50 events -> 5 batches of 10 s.
        // Counts 8, 12, 10, 10, 10 -> per minute 48, 72, 60, 60, 60.
        // mean 60 (= 50 events / 50 s * 60). Deviations -12, 12, 0, 0, 0:
        // var = 288 / 4 = 72, se = sqrt(72/5) = 3.794733,
        // hw = 2.776445 * 3.794733 = 10.535873.
        let mut ev = Vec::new();
        for (b, n) in [8usize, 12, 10, 10, 10].into_iter().enumerate() {
            for i in 0..n {
                ev.push(b as f64 * 10.0 + (i as f64 + 0.5) * 10.0 / n as f64);
            }
        }
        let r = rate_ci(&ev, 0.0, 50.0, 0.95).unwrap();
        assert_eq!(r.batches, 5);
        assert!(close(r.per_minute, 60.0, 1e-9));
        assert!(close(r.ci.mean, 60.0, 1e-9));
        assert!(close(r.ci.half_width, 10.535873, 1e-4), "{}", r.ci.half_width);
    }

    #[test]
    fn rate_ci_rejects_empty() {
        assert!(rate_ci(&[1.0, 2.0], 5.0, 5.0, 0.95).is_none());
        assert!(rate_ci(&[1.0, 2.0], 5.0, 1.0, 0.95).is_none());
        assert!(rate_ci(&[], 0.0, 10.0, 0.95).is_none());
        assert!(rate_ci(&[20.0], 0.0, 10.0, 0.95).is_none());
        assert!(rate_ci(&[1.0], f64::NEG_INFINITY, 10.0, 0.95).is_none());
        assert!(rate_ci(&[1.0, 2.0], 0.0, 10.0, 1.5).is_none());
    }

    proptest! {
        /// With equal sub-windows the point estimate is the mean of the
        /// batch means: sum(c_i / w * 60) / B = (sum c_i) / (w B) * 60.
        #[test]
        fn point_estimate_equals_mean_of_batch_means(
            mut ev in proptest::collection::vec(0.0f64..100.0, 1..500),
            start in -10.0f64..50.0,
            len in 1.0f64..100.0,
        ) {
            ev.sort_by(f64::total_cmp);
            let end = start + len;
            if let Some(r) = rate_ci(&ev, start, end, 0.95) {
                prop_assert!((r.per_minute - r.ci.mean).abs() <= 1e-9 * r.per_minute.max(1.0));
                prop_assert!(r.ci.low <= r.ci.mean && r.ci.mean <= r.ci.high);
                prop_assert!((5..=30).contains(&r.batches));
            }
        }

        /// Every event inside the window lands in exactly one batch.
        #[test]
        fn batches_partition_events(
            ev in proptest::collection::vec(-5.0f64..105.0, 0..300),
            batches in 1usize..40,
        ) {
            let (start, end) = (0.0, 100.0);
            let m = batch_means_per_minute(&ev, start, end, batches);
            let width = (end - start) / batches as f64;
            let total: f64 = m.iter().map(|x| x * width / 60.0).sum();
            let inside = ev.iter().filter(|&&t| (start..end).contains(&t)).count();
            prop_assert!((total - inside as f64).abs() < 1e-6);
        }

        /// A higher confidence never gives a narrower interval.
        #[test]
        fn wider_at_higher_confidence(
            s in proptest::collection::vec(-1e3f64..1e3, 2..40),
        ) {
            let a = student_t_ci(&s, 0.90).unwrap();
            let b = student_t_ci(&s, 0.99).unwrap();
            prop_assert!(b.half_width >= a.half_width);
        }
    }
}
