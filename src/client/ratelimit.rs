//! A hosted API's limits as its answers announce them (`x-ratelimit-limit-requests`,
//! `-remaining-requests`, `-reset-requests` and the same for tokens: OpenAI's and Azure
//! OpenAI's spelling), and the room they leave: between two answers the client keeps its own
//! count, refilled at the announced limit per minute and charged for each request it starts,
//! so it waits for room instead of sending into a 429. Pure: the client hands in what it read
//! and the times.

use std::time::Duration;
use tokio::time::Instant;

/// One limit as an answer announced it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Side {
    /// Per minute.
    pub limit: Option<u64>,
    pub remaining: Option<f64>,
    /// Until the limit is whole again.
    pub reset: Option<Duration>,
}

/// Requests and tokens, as one answer announced them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Announced {
    pub requests: Side,
    pub tokens: Side,
}

impl Announced {
    /// From an answer's headers (any case); None when it names no limit.
    pub fn parse<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<Announced> {
        let mut a = Announced::default();
        let mut any = false;
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            let Some(rest) = name.strip_prefix("x-ratelimit-") else {
                continue;
            };
            let (field, what) = match rest.rsplit_once('-') {
                Some(p) => p,
                None => continue,
            };
            let side = match what {
                "requests" => &mut a.requests,
                "tokens" => &mut a.tokens,
                _ => continue,
            };
            let v = value.trim();
            match field {
                "limit" => side.limit = v.parse().ok(),
                "remaining" => side.remaining = v.parse::<f64>().ok().filter(|r| r.is_finite() && *r >= 0.0),
                "reset" => side.reset = parse_reset(v),
                _ => continue,
            }
            any = true;
        }
        any.then_some(a)
    }
}

/// A reset time as hosted APIs write it: `1s`, `6m0s`, `120ms`, `1h2m3.5s`, or bare seconds.
pub fn parse_reset(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let mut total = 0.0;
    let mut rest = v;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&i| i > 0)?;
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_secs_f64(total))
}

/// `left` refilled over `since_s` seconds at a per-minute `limit`'s pace, never above the
/// whole limit; as it was without a pace.
fn refilled(left: f64, limit: Option<u64>, since_s: f64) -> f64 {
    match limit {
        Some(l) if l > 0 => (left + since_s * l as f64 / 60.0).min(l as f64),
        _ => left,
    }
}

/// The client's count of the room the limits leave, from the last answer that announced them.
#[derive(Clone, Copy, Debug)]
pub struct Room {
    at: Instant,
    left: [Option<f64>; 2],
    limits: [Option<u64>; 2],
    resets: [Option<Duration>; 2],
}

impl Room {
    pub fn new(a: &Announced, at: Instant) -> Room {
        let sides = [a.requests, a.tokens];
        Room {
            at,
            left: sides.map(|s| s.remaining),
            limits: sides.map(|s| s.limit),
            resets: sides.map(|s| s.reset),
        }
    }

    /// The limits per minute last announced: requests, tokens.
    pub fn limits(&self) -> (Option<u64>, Option<u64>) {
        (self.limits[0], self.limits[1])
    }

    /// Another answer's announcement. An answer's count is the server's when that request
    /// arrived, and answers come back in any order: one that arrived first, answered last,
    /// would announce room long spent. So the count only ever comes down to an announcement,
    /// never up (it goes up as the limit refills).
    pub fn observe(&mut self, a: &Announced, now: Instant) {
        let since = now.saturating_duration_since(self.at).as_secs_f64();
        for (k, side) in [a.requests, a.tokens].iter().enumerate() {
            let mine = self.left[k].map(|left| refilled(left, self.limits[k], since));
            self.left[k] = match (mine, side.remaining) {
                (Some(m), Some(r)) => Some(m.min(r)),
                (m, r) => r.or(m),
            };
            self.limits[k] = side.limit.or(self.limits[k]);
            self.resets[k] = side.reset.or(self.resets[k]);
        }
        self.at = now;
    }

    /// Before sending a request of `tokens`: None, and it is charged, when the room holds it;
    /// else how long to wait for it.
    pub fn take(&mut self, tokens: f64, now: Instant) -> Option<Duration> {
        let since = now.saturating_duration_since(self.at);
        let costs = [1.0, tokens.max(0.0)];
        let mut wait = Duration::ZERO;
        let mut have = [None; 2];
        for k in 0..2 {
            let Some(left) = self.left[k] else { continue };
            let h = match self.limits[k] {
                // Refilled since the answer at the limit's pace, never above the whole limit.
                Some(limit) if limit > 0 => refilled(left, Some(limit), since.as_secs_f64()),
                // No pace known: whole again at the announced reset (unknown until an answer).
                _ if self.resets[k].is_some_and(|r| since >= r) => f64::INFINITY,
                _ => left,
            };
            have[k] = Some(h);
            // One unit at least; a request dearer than the whole limit waits for the whole.
            let need = costs[k]
                .min(self.limits[k].map_or(f64::INFINITY, |l| l as f64))
                .max(1.0);
            if h < need {
                let w = match self.limits[k] {
                    Some(limit) if limit > 0 => Duration::from_secs_f64((need - h) * 60.0 / limit as f64),
                    _ => self.resets[k].map_or(Duration::from_secs(1), |r| r.saturating_sub(since)),
                };
                wait = wait.max(w);
            }
        }
        if !wait.is_zero() {
            return Some(wait);
        }
        for k in 0..2 {
            self.left[k] = have[k].filter(|h| h.is_finite()).map(|h| h - costs[k]);
        }
        self.at = now;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_openais_and_azures_headers() {
        let a = Announced::parse([
            ("x-ratelimit-limit-requests", "60"),
            ("X-RateLimit-Remaining-Requests", "0"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-limit-tokens", "150000"),
            ("x-ratelimit-remaining-tokens", "149984"),
            ("x-ratelimit-reset-tokens", "6m0s"),
            ("content-type", "application/json"),
        ])
        .expect("limits");
        assert_eq!(a.requests.limit, Some(60));
        assert_eq!(a.requests.remaining, Some(0.0));
        assert_eq!(a.requests.reset, Some(Duration::from_secs(1)));
        assert_eq!(a.tokens.reset, Some(Duration::from_secs(360)));
        assert_eq!(Announced::parse([("content-type", "text/plain")]), None);
        assert_eq!(parse_reset("120ms"), Some(Duration::from_millis(120)));
        assert_eq!(parse_reset("1h2m3.5s"), Some(Duration::from_secs_f64(3723.5)));
        assert_eq!(parse_reset("20"), Some(Duration::from_secs(20)));
        assert_eq!(parse_reset("soon"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_room_and_charges_what_it_sends() {
        let t0 = Instant::now();
        // 600 requests a minute, 2 left; 6,000 tokens, 250 left.
        let a = Announced::parse([
            ("x-ratelimit-limit-requests", "600"),
            ("x-ratelimit-remaining-requests", "2"),
            ("x-ratelimit-limit-tokens", "6000"),
            ("x-ratelimit-remaining-tokens", "250"),
        ])
        .unwrap();
        let mut room = Room::new(&a, t0);
        assert_eq!(room.take(100.0, t0), None);
        assert_eq!(room.take(100.0, t0), None);
        // No request left: one refills in 0.1 s (600 a minute); tokens would wait 0.5 s for 50
        // more, so the longer wait stands.
        let w = room.take(100.0, t0).expect("no room");
        assert!((w.as_secs_f64() - 0.5).abs() < 1e-9, "{w:?}");
        assert_eq!(room.take(100.0, t0 + Duration::from_millis(500)), None);
        // A limit without a pace: whole again at its reset.
        let a = Announced::parse([
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "2s"),
        ])
        .unwrap();
        let mut room = Room::new(&a, t0);
        assert_eq!(
            room.take(0.0, t0 + Duration::from_millis(500)),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(room.take(0.0, t0 + Duration::from_secs(2)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_answer_announcing_old_room_does_not_raise_the_count() {
        let t0 = Instant::now();
        let said = |left: &str| {
            Announced::parse([
                ("x-ratelimit-limit-requests", "600"),
                ("x-ratelimit-remaining-requests", left),
            ])
            .unwrap()
        };
        let mut room = Room::new(&said("0"), t0);
        // The answer to the first request of a burst comes last, saying 9 were left when it
        // arrived: spent since.
        room.observe(&said("9"), t0);
        assert!(room.take(1.0, t0).is_some(), "no room: the count stays at 0");
        // A lower count is taken at once.
        let mut room = Room::new(&said("5"), t0);
        room.observe(&said("1"), t0);
        assert_eq!(room.take(1.0, t0), None);
        assert!(room.take(1.0, t0).is_some());
    }
}
