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
    /// 429, the server's rate limit: queue it again after this wait (its `Retry-After` at
    /// least) without using a retry: the request was refused, not tried.
    Throttled(Duration),
    /// 401/403: the credentials are refused; nothing more must be sent.
    Stop,
}

/// A line answered 429 this many times goes on as any failure: its `--retries`, then failed
/// (a limit that never lets it through is not waited on forever).
pub const MOST_THROTTLED: u32 = 100;

/// What one attempt met: its failure's class and the server's Retry-After, and whether the
/// error body says the account is out of quota (OpenAI's 429 `insufficient_quota`, which no
/// wait cures).
pub type Met = Option<(FailKind, Option<Duration>, bool)>;

/// `failure`: None when the attempt succeeded. `attempt`: attempts made before this one;
/// `throttled`: 429s it met before. `u`: a uniform draw in [0, 1) for the jitter.
pub fn decide(failure: Met, attempt: u32, throttled: u32, policy: &RetryPolicy, u: f64) -> Decision {
    match failure {
        None => Decision::Done,
        Some((FailKind::Http(401 | 403), _, _)) => Decision::Stop,
        Some((FailKind::Http(429), _, true)) => Decision::Done,
        Some((FailKind::Http(429), retry_after, false)) if throttled < MOST_THROTTLED => {
            Decision::Throttled(match retry_after {
                // The server said when: then, spread by up to a tenth so the lines refused together
                // do not come back as one wave.
                Some(ra) => ra.mul_f64(1.0 + 0.1 * u.clamp(0.0, 1.0)),
                // It did not: backoff growing with the 429s met.
                None => policy.delay(throttled + 1, u, None),
            })
        }
        Some((kind, retry_after, _)) if kind.retryable() && attempt < policy.retries => {
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
        let table: Vec<(Met, u32, Decision)> = vec![
            (None, 0, Decision::Done),
            (None, 2, Decision::Done),
            (Some((Http(401), None, false)), 0, Decision::Stop),
            (Some((Http(403), None, false)), 5, Decision::Stop),
            (Some((Http(400), None, false)), 0, Decision::Done),
            (Some((Http(404), None, false)), 0, Decision::Done),
            (Some((Http(413), None, false)), 0, Decision::Done),
            (Some((Http(422), None, false)), 0, Decision::Done),
            (Some((Http(408), None, false)), 0, Decision::Retry(ms(50))),
            // A 429 waits without using a retry, even with none left; out of quota it is final.
            (Some((Http(429), None, false)), 0, Decision::Throttled(ms(50))),
            (
                Some((Http(429), ra, false)),
                2,
                // The server's 3 s, spread by up to a tenth (u = 0.5).
                Decision::Throttled(ms(3150)),
            ),
            (Some((Http(429), None, true)), 0, Decision::Done),
            (Some((Http(500), None, false)), 1, Decision::Retry(ms(100))),
            (Some((Http(502), None, false)), 0, Decision::Retry(ms(50))),
            (Some((Http(503), None, false)), 2, Decision::Done),
            (Some((Timeout, None, false)), 0, Decision::Retry(ms(50))),
            (Some((Connect, None, false)), 0, Decision::Retry(ms(50))),
            (Some((Reset, None, false)), 1, Decision::Retry(ms(100))),
            (Some((Reset, None, false)), 2, Decision::Done),
            (Some((Decode, None, false)), 0, Decision::Done),
        ];
        for (failure, attempt, want) in table {
            assert_eq!(
                decide(failure, attempt, 0, &p, 0.5),
                want,
                "{failure:?} after {attempt}"
            );
        }
        // Past MOST_THROTTLED 429s a line uses its retries, then fails.
        let busy = Some((Http(429), ra, false));
        assert_eq!(
            decide(busy, 0, MOST_THROTTLED - 1, &p, 0.5),
            // The server's Retry-After however many came before, spread by up to a tenth.
            Decision::Throttled(Duration::from_millis(3150))
        );
        assert_eq!(
            decide(busy, 0, MOST_THROTTLED, &p, 0.5),
            Decision::Retry(Duration::from_secs(3))
        );
        assert_eq!(decide(busy, 2, MOST_THROTTLED, &p, 0.5), Decision::Done);
    }

    #[test]
    fn no_retries_allowed() {
        let p = RetryPolicy {
            retries: 0,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(
            decide(Some((FailKind::Http(500), None, false)), 0, 0, &p, 0.5),
            Decision::Done
        );
    }
}
