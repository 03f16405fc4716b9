//! What a finished request means, for the sweep and the run alike: the output record it
//! becomes (the sweep of `auto` answers into the job's output exactly as `run` does), and
//! the streak of identical failures that stops either (a wrong model name would otherwise be
//! hours of identical 404s). Below both `measure` and `job`, so neither reaches into the other.

use crate::batch::OutputRecord;
use crate::client::{error_type, FailKind, Outcome};

/// The output line of a finished request.
pub fn output_record(custom_id: String, outcome: Outcome) -> OutputRecord {
    match outcome.result {
        Ok(ok) => OutputRecord {
            custom_id,
            status_code: Some(ok.status),
            request_id: ok.request_id,
            body: ok.body,
            error: None,
        },
        Err(f) => {
            let status = f.kind.status();
            let code = status.map_or_else(|| f.kind.label(), |c| format!("http_{c}"));
            OutputRecord {
                custom_id,
                status_code: status,
                request_id: None,
                body: f.body.as_ref().map(crate::api::JsonText::from_value),
                error: Some((code, f.message)),
            }
        }
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
                (code, body.and_then(error_type).unwrap_or_default().to_string())
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
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u32 {
        self.current.as_ref().map_or(0, |(_, n)| *n)
    }
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
mod tests {
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
            assert_eq!(s.len(), 0);
        }
        // 0 = never.
        let mut s = Streak::new(0);
        for _ in 0..100 {
            assert!(!s.record(Some((FailKind::Http(404), None))));
        }
    }
}
