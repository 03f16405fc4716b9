//! An optional send-rate cap: a token bucket shared by all workers.

use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Allows `per_minute` starts per minute on average, with bursts of at most `burst`.
pub struct RateLimiter {
    interval: Duration,
    burst: u32,
    /// The time at which the bucket is next "empty enough" to release one start.
    next: Mutex<Instant>,
}

impl RateLimiter {
    /// `per_minute` must be finite and positive (validated by the command).
    pub fn new(per_minute: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            interval: Duration::from_secs_f64(60.0 / per_minute),
            burst: burst.max(1),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits until one more start is allowed.
    pub async fn acquire(&self) {
        self.acquire_n(1.0).await;
    }

    /// Waits until a start that costs `units` (a request of that many tokens, against a token
    /// budget) is allowed: it starts when the budget has paid for the starts before it, and
    /// the next waits for its own cost.
    pub async fn acquire_n(&self, units: f64) {
        let at = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            // An idle bucket refills up to `burst` starts, no more.
            let floor = now - self.interval * (self.burst - 1);
            if *next < floor {
                *next = floor;
            }
            let at = *next;
            *next += self.interval.mul_f64(units.max(0.0));
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn holds_the_rate() {
        let r = RateLimiter::new(600.0, 1); // one every 100 ms
        let start = Instant::now();
        for _ in 0..11 {
            r.acquire().await;
        }
        assert_eq!(Instant::now() - start, Duration::from_millis(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn burst_after_idle() {
        let r = RateLimiter::new(600.0, 5);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let start = Instant::now();
        for _ in 0..5 {
            r.acquire().await;
        }
        assert_eq!(Instant::now() - start, Duration::ZERO);
        r.acquire().await;
        assert_eq!(Instant::now() - start, Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_costly_start_delays_the_next_by_its_cost() {
        // 6,000 tokens a minute: 100 a second.
        let r = RateLimiter::new(6000.0, 1);
        let start = Instant::now();
        r.acquire_n(50.0).await;
        assert_eq!(Instant::now() - start, Duration::ZERO);
        r.acquire_n(200.0).await;
        assert_eq!(Instant::now() - start, Duration::from_millis(500));
        r.acquire_n(1.0).await;
        assert_eq!(Instant::now() - start, Duration::from_millis(2500));
    }
}
