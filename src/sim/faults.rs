//! Fault injection: each inference request's fault (500, 429 with `Retry-After`, connection
//! reset) and service-time jitter, drawn from the seed and the request's arrival index, so a
//! seed replays the same sequence. The off and starting power states answer from `state.rs`.

use super::state::{error_response, AppState};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::{Rng, SeedableRng};
use std::sync::atomic::Ordering;

/// Marks a response that must not be sent: the connection is closed instead.
#[derive(Clone, Copy)]
pub(super) struct ResetConnection;

impl AppState {
    /// Numbers the request and draws its fault and jitter from the seed. Returns the index and
    /// the service-time multiplier, or the fault's answer.
    pub(super) fn draw(&self) -> Result<(u64, f64), Box<Response>> {
        let n = self.arrivals.fetch_add(1, Ordering::SeqCst);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(mix(self.cfg.seed, n));
        let fault: f64 = rng.gen();
        let jitter: f64 = rng.gen();
        let c = &self.cfg;
        if fault < c.fail_rate {
            self.counters.failed_500.fetch_add(1, Ordering::Relaxed);
            return Err(Box::new(error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "simulated internal error",
                "server_error",
            )));
        }
        if fault < c.fail_rate + c.throttle_rate {
            return Err(Box::new(self.over_limit(c.retry_after)));
        }
        if fault < c.fail_rate + c.throttle_rate + c.reset_rate {
            self.counters.reset.fetch_add(1, Ordering::Relaxed);
            let mut resp = StatusCode::INTERNAL_SERVER_ERROR.into_response();
            resp.extensions_mut().insert(ResetConnection);
            return Err(Box::new(resp));
        }
        Ok((n, 1.0 + c.jitter * (2.0 * jitter - 1.0)))
    }

    /// A 429 as OpenAI sends it, `Retry-After` in whole seconds (at least 1).
    pub(super) fn over_limit(&self, wait: std::time::Duration) -> Response {
        self.counters.throttled_429.fetch_add(1, Ordering::Relaxed);
        let mut resp = error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "simulated rate limit",
            "rate_limit_error",
        );
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        resp
    }
}

/// Splits seeds so that neighbouring request indices get unrelated random streams.
pub(super) fn mix(seed: u64, index: u64) -> u64 {
    // The index is spread once before it meets the seed, so seed ^ index cannot cancel.
    crate::hash::mix64(
        seed ^ index
            .wrapping_add(crate::hash::GOLDEN)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_spread() {
        assert_ne!(mix(1, 0), mix(1, 1));
        assert_eq!(mix(7, 42), mix(7, 42));
    }
}
