//! When to try a failed request again: exponential backoff with full jitter (AWS's
//! "Exponential Backoff And Jitter"), never sooner than the server's `Retry-After`.

use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    pub base: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (1 = first retry), given a uniform draw
    /// `u` in [0, 1) and the server's Retry-After. Full jitter spreads retries of requests
    /// that failed together, so they do not return as one wave.
    pub fn delay(&self, attempt: u32, u: f64, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.saturating_sub(1).min(20)).unwrap_or(u32::MAX));
        let cap = exp.min(self.max);
        let jittered = cap.mul_f64(u.clamp(0.0, 1.0));
        match retry_after {
            Some(ra) => jittered.max(ra.min(self.max.max(ra))),
            None => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let p = RetryPolicy {
            retries: 5,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(p.delay(1, 0.999_999, None).as_millis(), 99);
        assert_eq!(p.delay(3, 0.5, None), Duration::from_millis(200));
        assert_eq!(p.delay(10, 0.5, None), Duration::from_millis(500));
        assert_eq!(p.delay(1, 0.0, None), Duration::ZERO);
        // Retry-After is a floor.
        assert_eq!(p.delay(1, 0.0, Some(Duration::from_secs(2))), Duration::from_secs(2));
        assert_eq!(p.delay(40, 1.0, None), Duration::from_secs(1));
    }
}
