//! The simulator as a hosted API (`--rpm-limit`, `--tpm-limit`): requests and tokens per
//! minute, charged as OpenAI charges them (one request, and its prompt tokens plus its
//! `max_tokens` when it arrives), announced on every answer in OpenAI's `x-ratelimit-*`
//! headers, and answered 429 with `Retry-After` past them.
//!
//! Each limit is a token bucket that refills at the limit per minute and holds one second of
//! it, as OpenAI quantizes its limits ("60,000 requests/minute may be enforced as 1,000
//! requests/second"): a short burst over the rate is refused, as a hosted API refuses it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The limits (per minute: requests, tokens) and their buckets' levels, refilled when charged.
#[derive(Debug)]
pub(super) struct Limits {
    limits: [Option<u64>; 2],
    /// When the levels were last refilled, and what each bucket may spend then.
    state: Mutex<(Instant, [f64; 2])>,
}

/// One second of the limit, and at least one whole request or token.
fn capacity(limit: u64) -> f64 {
    (limit as f64 / 60.0).max(1.0)
}

/// What one answer announces of a limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Room {
    pub limit: u64,
    pub remaining: u64,
    /// Until the bucket is full again.
    pub reset: Duration,
}

/// The verdict on one arriving request, with what each limit announces after it.
#[derive(Debug, PartialEq)]
pub(super) struct Charge {
    /// None: admitted; else wait this long (at least until enough has refilled).
    pub refused: Option<Duration>,
    pub requests: Option<Room>,
    pub tokens: Option<Room>,
}

impl Limits {
    pub(super) fn new(rpm: Option<u64>, tpm: Option<u64>) -> Option<Limits> {
        let limits = [rpm, tpm];
        let full = limits.map(|l| l.map_or(0.0, capacity));
        (rpm.is_some() || tpm.is_some()).then(|| Limits {
            limits,
            state: Mutex::new((Instant::now(), full)),
        })
    }

    /// Charges one request of `tokens` (prompt + max_tokens) at `now`: both limits must have
    /// room, or neither is charged and the request is refused.
    pub(super) fn charge(&self, tokens: u64, now: Instant) -> Charge {
        let mut state = self.state.lock().expect("limits lock");
        let (last, levels) = &mut *state;
        let dt = now.saturating_duration_since(*last).as_secs_f64();
        *last = (*last).max(now);
        let costs = [1.0, tokens as f64];
        let mut wait = Duration::ZERO;
        for k in 0..2 {
            let Some(limit) = self.limits[k] else { continue };
            let per_s = limit as f64 / 60.0;
            levels[k] = (levels[k] + dt * per_s).min(capacity(limit));
            // A request dearer than the bucket holds waits for a full bucket and then passes.
            let need = costs[k].min(capacity(limit));
            if levels[k] < need {
                wait = wait.max(Duration::from_secs_f64((need - levels[k]) / per_s));
            }
        }
        let admitted = wait.is_zero();
        let rooms: [Option<Room>; 2] = std::array::from_fn(|k| {
            let limit = self.limits[k]?;
            if admitted {
                // Into debt for a request dearer than one second of the limit.
                levels[k] -= costs[k];
            }
            let per_s = limit as f64 / 60.0;
            Some(Room {
                limit,
                remaining: levels[k].max(0.0).floor() as u64,
                reset: Duration::from_secs_f64(((capacity(limit) - levels[k]) / per_s).max(0.0)),
            })
        });
        Charge {
            refused: (!admitted).then_some(wait),
            requests: rooms[0],
            tokens: rooms[1],
        }
    }
}

/// OpenAI's spelling of a reset time: `1s`, `6m0s`, `120ms`.
pub(super) fn reset_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let s = d.as_secs_f64();
        format!("{}s", (s * 1000.0).round() / 1000.0)
    } else {
        let s = d.as_secs();
        format!("{}m{}s", s / 60, s % 60)
    }
}

/// The `x-ratelimit-*` headers of one answer.
pub(super) fn headers(c: &Charge) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (what, room) in [("requests", c.requests), ("tokens", c.tokens)] {
        let Some(r) = room else { continue };
        out.push((format!("x-ratelimit-limit-{what}"), r.limit.to_string()));
        out.push((format!("x-ratelimit-remaining-{what}"), r.remaining.to_string()));
        out.push((format!("x-ratelimit-reset-{what}"), reset_text(r.reset)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_past_one_second_of_the_limit_is_refused_until_it_refills() {
        let l = Limits::new(Some(600), None).unwrap();
        let t0 = Instant::now();
        // 600 RPM holds 10 requests at once.
        for k in 0..10 {
            let c = l.charge(5, t0);
            assert_eq!(c.refused, None, "request {k}");
            assert_eq!(c.requests.unwrap().remaining, 9 - k);
        }
        let c = l.charge(5, t0);
        let wait = c.refused.expect("the 11th in the same instant");
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        assert_eq!(c.requests.unwrap().remaining, 0);
        assert!((c.requests.unwrap().reset.as_secs_f64() - 1.0).abs() < 1e-6);
        // A tenth of a second later one more has refilled.
        assert_eq!(l.charge(5, t0 + Duration::from_millis(100)).refused, None);
        assert!(l.charge(5, t0 + Duration::from_millis(100)).refused.is_some());
    }

    #[test]
    fn tokens_are_charged_prompt_plus_max_tokens_and_both_limits_must_have_room() {
        // 6,000 tokens a minute: 100 at once.
        let l = Limits::new(Some(6000), Some(6000)).unwrap();
        let t0 = Instant::now();
        let c = l.charge(60, t0);
        assert_eq!(c.refused, None);
        assert_eq!(c.tokens.unwrap().remaining, 40);
        assert_eq!(c.requests.unwrap().remaining, 99);
        // 60 more do not fit: refused for the 20 missing (0.2 s), and neither limit is charged.
        let c = l.charge(60, t0);
        assert!((c.refused.unwrap().as_secs_f64() - 0.2).abs() < 1e-6);
        assert_eq!((c.tokens.unwrap().remaining, c.requests.unwrap().remaining), (40, 99));
        // A request dearer than the bucket passes once it is full, into debt.
        let later = t0 + Duration::from_secs(5);
        assert_eq!(l.charge(500, later).refused, None);
        assert!(l.charge(1, later).refused.is_some());
    }

    #[test]
    fn reset_times_in_openais_spelling() {
        assert_eq!(reset_text(Duration::from_millis(120)), "120ms");
        assert_eq!(reset_text(Duration::from_millis(1500)), "1.5s");
        assert_eq!(reset_text(Duration::from_secs(360)), "6m0s");
        let c = Charge {
            refused: None,
            requests: Some(Room {
                limit: 60,
                remaining: 0,
                reset: Duration::from_secs(1),
            }),
            tokens: None,
        };
        assert_eq!(
            headers(&c),
            [
                ("x-ratelimit-limit-requests".to_string(), "60".to_string()),
                ("x-ratelimit-remaining-requests".to_string(), "0".to_string()),
                ("x-ratelimit-reset-requests".to_string(), "1s".to_string()),
            ]
        );
    }
}
