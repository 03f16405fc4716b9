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

/// Watches finished requests for a failure that every answer repeats (a wrong model name, a
/// field the server rejects): N in a row with the same status and error type, none of them
/// worth a retry. On a 10M-line job that would otherwise be hours of identical 404s.
#[derive(Clone, Debug)]
pub struct Streak {
    limit: u32,
    /// (status, error type) of the current run of failures, and its length.
    current: Option<((u16, String), u32)>,
}

impl Streak {
    /// `limit` 0 never stops.
    pub fn new(limit: u32) -> Streak {
        Streak { limit, current: None }
    }

    /// Counts one final outcome; true when the last `limit` all failed the same way.
    pub fn record(&mut self, failure: Option<(FailKind, Option<&serde_json::Value>)>) -> bool {
        let signature = match failure {
            // 401/403 have their own stop, with the credential hint.
            Some((FailKind::Http(code), body)) if !FailKind::Http(code).retryable() && !matches!(code, 401 | 403) => {
                (code, error_type(body))
            }
            // A success, a transport failure or a retryable status breaks the run.
            _ => {
                self.current = None;
                return false;
            }
        };
        let n = match self.current.take() {
            Some((sig, n)) if sig == signature => n + 1,
            _ => 1,
        };
        self.current = Some((signature, n));
        self.limit > 0 && n >= self.limit
    }

    /// The run's failures so far in a row.
    pub fn len(&self) -> u32 {
        self.current.as_ref().map_or(0, |(_, n)| *n)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The error's type as servers name it (`error.type`, `type`, TGI's `error_type`).
fn error_type(body: Option<&serde_json::Value>) -> String {
    let Some(b) = body else { return String::new() };
    ["/error/type", "/type", "/error_type"]
        .iter()
        .find_map(|p| b.pointer(p).and_then(|v| v.as_str()))
        .unwrap_or_default()
        .to_string()
}

/// What to do about a failure every answer repeats, by its status.
pub fn streak_hint(status: Option<u16>) -> String {
    let fix = match status {
        Some(404) => "check the model name (the file's `model` or --model; GET /v1/models lists what the server serves), --endpoint and --api",
        Some(400 | 422) => "the server rejects the request bodies: check the file's fields against what the endpoint accepts",
        Some(413) => "the requests are too large for the server: shorten the prompts or raise its limit",
        _ => "check the endpoint's logs",
    };
    format!("{fix}; then the same command with --resume sends the rest and retries these (--stop-after-failures 0 never stops)")
}

#[cfg(test)]
mod streak_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stops_after_n_identical_non_retryable_failures() {
        let not_found = json!({"object":"error","type":"NotFoundError","code":404});
        let mut s = Streak::new(3);
        assert!(!s.record(Some((FailKind::Http(404), Some(&not_found)))));
        assert!(!s.record(Some((FailKind::Http(404), Some(&not_found)))));
        assert!(s.record(Some((FailKind::Http(404), Some(&not_found)))));
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn anything_else_breaks_the_run() {
        let a = json!({"error":{"type":"BadRequestError"}});
        let b = json!({"error":{"type":"other"}});
        let mut s = Streak::new(2);
        assert!(!s.record(Some((FailKind::Http(400), Some(&a)))));
        // Same status, another error type: a new run.
        assert!(!s.record(Some((FailKind::Http(400), Some(&b)))));
        assert!(s.record(Some((FailKind::Http(400), Some(&b)))));
        let mut s = Streak::new(2);
        for breaker in [
            None,
            Some((FailKind::Http(500), None)),
            Some((FailKind::Http(429), None)),
            Some((FailKind::Reset, None)),
        ] {
            assert!(!s.record(Some((FailKind::Http(422), None))));
            assert!(!s.record(breaker), "{breaker:?}");
            assert!(s.is_empty());
        }
        // 0 = never.
        let mut s = Streak::new(0);
        for _ in 0..100 {
            assert!(!s.record(Some((FailKind::Http(404), None))));
        }
    }
}
