//! What happens after one attempt of a request: pure, so every status and error is covered by
//! a table test without a server.

use crate::client::FailKind;
use crate::engine::retry::RetryPolicy;
use std::time::Duration;

/// The verdict on one attempt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decision {
    /// Final: it succeeded, or failed in a way another try would not change (or out of tries).
    Done,
    /// Failed for a passing reason: queue it again, due after this wait.
    Retry(Duration),
    /// 401/403: the credentials are refused; nothing more must be sent.
    Stop,
}

/// `failure`: None when the attempt succeeded, else its class and the server's Retry-After.
/// `attempt`: attempts made before this one. `u`: a uniform draw in [0, 1) for the jitter.
pub fn decide(failure: Option<(FailKind, Option<Duration>)>, attempt: u32, policy: &RetryPolicy, u: f64) -> Decision {
    match failure {
        None => Decision::Done,
        Some((FailKind::Http(401 | 403), _)) => Decision::Stop,
        Some((kind, retry_after)) if kind.retryable() && attempt < policy.retries => {
            Decision::Retry(policy.delay(attempt + 1, u, retry_after))
        }
        Some(_) => Decision::Done,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailKind::*;

    #[test]
    fn every_status_and_error() {
        let p = RetryPolicy {
            retries: 2,
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
        };
        let ms = Duration::from_millis;
        let ra = Some(Duration::from_secs(3));
        // (failure, attempts before, expected)
        type Failed = Option<(FailKind, Option<Duration>)>;
        let table: Vec<(Failed, u32, Decision)> = vec![
            (None, 0, Decision::Done),
            (None, 2, Decision::Done),
            (Some((Http(401), None)), 0, Decision::Stop),
            (Some((Http(403), None)), 5, Decision::Stop),
            (Some((Http(400), None)), 0, Decision::Done),
            (Some((Http(404), None)), 0, Decision::Done),
            (Some((Http(413), None)), 0, Decision::Done),
            (Some((Http(422), None)), 0, Decision::Done),
            (Some((Http(408), None)), 0, Decision::Retry(ms(50))),
            (Some((Http(429), None)), 0, Decision::Retry(ms(50))),
            (Some((Http(429), ra)), 0, Decision::Retry(Duration::from_secs(3))),
            (Some((Http(500), None)), 1, Decision::Retry(ms(100))),
            (Some((Http(502), None)), 0, Decision::Retry(ms(50))),
            (Some((Http(503), None)), 2, Decision::Done),
            (Some((Timeout, None)), 0, Decision::Retry(ms(50))),
            (Some((Connect, None)), 0, Decision::Retry(ms(50))),
            (Some((Reset, None)), 1, Decision::Retry(ms(100))),
            (Some((Reset, None)), 2, Decision::Done),
            (Some((Decode, None)), 0, Decision::Done),
        ];
        for (failure, attempt, want) in table {
            assert_eq!(decide(failure, attempt, &p, 0.5), want, "{failure:?} after {attempt}");
        }
    }

    #[test]
    fn no_retries_allowed() {
        let p = RetryPolicy {
            retries: 0,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(decide(Some((FailKind::Http(500), None)), 0, &p, 0.5), Decision::Done);
    }
}
