//! Holding the plan's rate (`--hold-rate`): when the run falls short of the planned rate (a
//! router that pins connections, a fleet slower than the sweep's), the in-flight count is
//! raised step by step; a step that breaks the latency limit is taken back and not tried again,
//! and a step that buys no rate (the fleet is full: more in flight would only queue) is taken
//! back and ends the climb. Where the server's metrics say how many requests it runs, a raise is
//! judged by the running requests it added, which a closed loop holds almost still, rather than
//! by the rate, whose noise hides the few percent a pinned fleet gains per step. Pure: the
//! collector feeds it each window's rate, latency and the server's running count and sets the
//! engine's width to what it answers.

use serde::Serialize;
use std::time::Duration;

/// What the run holds and within which limits.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct HoldSpec {
    /// The rate to hold, RPM (the plan's, this shard's part of it, capped by `--rate`).
    pub target_rpm: f64,
    /// p95 latency no window may exceed, ms: the SLO, and never over 1.5x the plan's p95, so
    /// the rate is not bought by queueing inside the server.
    pub latency_limit_ms: f64,
    /// The plan's in-flight count, where the run starts.
    #[serde(rename = "start_concurrency")]
    pub start: u32,
    /// The most in flight it may go to.
    #[serde(rename = "ceiling_concurrency")]
    pub ceiling: u32,
    /// Each window's length (the first part after a change, while the new in-flight count
    /// settles, is not counted).
    #[serde(skip)]
    pub window: Duration,
    #[serde(skip)]
    pub settle: Duration,
}

/// The rate counts as held within this share below the target.
const HELD: f64 = 0.02;

/// A raise must buy at least this share of the rate it would buy on a linear climb to count.
const GAIN: f64 = 0.2;

/// A window must hold this many answers to be judged (its rate then within a few percent on a
/// mix of short and long requests), and at most this long.
pub const WINDOW_ANSWERS: u64 = 500;

/// The most in flight a hold may reach, from the plan's: four times, at most 1,024 more.
pub fn ceiling(start: u32) -> u32 {
    start.saturating_mul(4).min(start.saturating_add(1024)).max(start)
}

/// One window's decision, as run-summary.json `hold.steps` lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HoldStep {
    /// Seconds since the run started, at the window's end.
    pub t_s: f64,
    /// In flight during the window.
    pub concurrency: u32,
    pub rpm: f64,
    pub latency_p95_ms: Option<f64>,
    /// The requests the server ran, mean over the window (from its metrics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_running: Option<f64>,
    /// `raise`, `lower` (latency over the limit), `back` (the raise bought no rate), `measure`
    /// (the raise's gain still within the noise), `hold`.
    pub action: &'static str,
    /// In flight from here on.
    pub next: u32,
}

/// The controller's state.
#[derive(Debug)]
pub struct Hold {
    pub spec: HoldSpec,
    current: u32,
    /// Highest in flight still allowed: lowered past a count that broke the latency limit or
    /// bought nothing.
    cap: u32,
    /// The level before a raise not judged yet: its in-flight count and measured rate.
    pending: Option<(u32, Level)>,
    /// The windows at the current in-flight count, pooled.
    here: Level,
    pub steps: Vec<HoldStep>,
}

/// A raise whose running requests grew by less than this share of the requests it added
/// bought nothing: the added requests queue inside the server (a full fleet gains none of them;
/// a pinned one some, fewer at every step as its idle replicas fill).
const SLOT_GAIN: f64 = 0.05;

/// What one window measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Window {
    /// Answers per minute.
    pub rpm: f64,
    /// `rpm`'s relative standard error.
    pub noise: f64,
    /// None: nothing answered.
    pub latency_p95_ms: Option<f64>,
    /// The requests the server ran over the window, from its metrics: the mean of its scrapes
    /// and that mean's standard error. None without metrics (or under `--shard`, where they
    /// count every shard's requests).
    pub running: Option<(f64, f64)>,
}

/// The windows of one in-flight count pooled: their mean rate and its relative s.e., and the
/// server's mean running requests and its s.e. where every window had them.
#[derive(Clone, Copy, Debug, Default)]
struct Level {
    windows: u32,
    rpm_sum: f64,
    /// Sum of each window's squared relative s.e.
    var_sum: f64,
    running_windows: u32,
    running_sum: f64,
    running_var_sum: f64,
}

impl Level {
    fn add(&mut self, w: &Window) {
        self.windows += 1;
        self.rpm_sum += w.rpm;
        self.var_sum += w.noise.max(0.0).powi(2);
        if let Some((mean, se)) = w.running {
            self.running_windows += 1;
            self.running_sum += mean;
            self.running_var_sum += se.max(0.0).powi(2);
        }
    }

    /// The server's mean running requests and its s.e., when every window had them.
    fn running(&self) -> Option<(f64, f64)> {
        let n = f64::from(self.running_windows);
        (self.windows > 0 && self.running_windows == self.windows)
            .then(|| (self.running_sum / n, self.running_var_sum.sqrt() / n))
    }

    fn rpm(&self) -> f64 {
        self.rpm_sum / f64::from(self.windows.max(1))
    }

    /// Relative s.e. of the pooled mean.
    fn noise(&self) -> f64 {
        self.var_sum.sqrt() / f64::from(self.windows.max(1))
    }
}

/// A raise whose gain is still within the noise after this many windows is judged on its pooled
/// estimate.
const JUDGE_WINDOWS: u32 = 3;

impl Hold {
    pub fn new(spec: HoldSpec) -> Hold {
        Hold {
            spec,
            current: spec.start,
            cap: spec.ceiling.max(spec.start),
            pending: None,
            here: Level::default(),
            steps: Vec::new(),
        }
    }

    pub fn current(&self) -> u32 {
        self.current
    }

    fn step_size(&self) -> u32 {
        (self.spec.start / 8).max(1)
    }

    /// One window's measurement: the in-flight count for the next window. Without the server's
    /// running count, a window short by less than two standard errors (and the 2% tolerance) is
    /// not short, so a noisy window starts no climb; with it, a window short on its own rate is
    /// short, as the raise it starts is judged on the server's count and taken back at once if
    /// the fleet was full.
    pub fn decide(&mut self, t_s: f64, w: Window) -> u32 {
        let was = self.current;
        let step = self.step_size();
        self.here.add(&w);
        let (r, se) = (self.here.rpm(), self.here.noise());
        // A raise is judged on the windows after it, pooled until its gain is clear of the
        // noise either way (or a few windows say it is too small to matter): the running
        // requests it added where the server counts them, else the rate it bought.
        let verdict = self.pending.map(|(c0, before)| {
            let added = f64::from(was - c0);
            let (gain, se_gain, need, counted) = match (self.here.running(), before.running()) {
                (Some((now, se_now)), Some((then, se_then))) => {
                    (now - then, se_now.hypot(se_then), SLOT_GAIN * added, true)
                }
                _ => (
                    r / before.rpm() - 1.0,
                    se.hypot(before.noise()),
                    GAIN * added / f64::from(c0),
                    false,
                ),
            };
            if gain - 2.0 * se_gain >= need {
                Verdict::Paid
            } else if gain + 2.0 * se_gain < need {
                Verdict::Unpaid(c0)
            } else if self.here.windows >= JUDGE_WINDOWS {
                // Still within the noise: the pooled estimate decides the rate's verdict, whose
                // noise hides real gains; the server's count, steady while the fleet is, shows a
                // gain it cannot make clear as too small to pay.
                if gain >= need && !counted {
                    Verdict::Paid
                } else {
                    Verdict::Unpaid(c0)
                }
            } else {
                Verdict::Unclear
            }
        });
        let margin = if self.here.running().is_some() { 0.0 } else { 2.0 * se };
        let latency_p95_ms = w.latency_p95_ms;
        let action = if latency_p95_ms.is_some_and(|p| p > self.spec.latency_limit_ms) && was > 1 {
            // Too slow: back down, and never up to this count again.
            self.cap = self.cap.min(was - 1);
            self.current = was.saturating_sub(step).max(1);
            "lower"
        } else if let Some(Verdict::Unpaid(c0)) = verdict {
            // The raise bought (almost) nothing: the fleet is full; go back and stay.
            self.cap = c0;
            self.current = c0;
            "back"
        } else if let Some(Verdict::Unclear) = verdict {
            "measure"
        } else if r * (1.0 + margin) >= self.spec.target_rpm * (1.0 - HELD) {
            "hold"
        } else if was < self.cap {
            self.pending = Some((was, self.here));
            self.current = (was + step).min(self.cap);
            "raise"
        } else {
            "hold"
        };
        if !matches!(action, "measure" | "raise") {
            // Judged, or never raised: the next raise is judged afresh.
            self.pending = None;
        }
        if self.current != was {
            self.here = Level::default();
        }
        self.steps.push(HoldStep {
            t_s,
            concurrency: was,
            rpm: w.rpm,
            latency_p95_ms,
            server_running: w.running.map(|(mean, _)| mean),
            action,
            next: self.current,
        });
        self.current
    }
}

/// What the windows after a raise say of it.
#[derive(Clone, Copy, Debug)]
enum Verdict {
    /// It bought rate: the climb may go on.
    Paid,
    /// It bought too little: back to this count.
    Unpaid(u32),
    /// Within the noise: measure another window.
    Unclear,
}

/// The hold's record in run-summary.json.
#[derive(Clone, Debug, Serialize)]
pub struct HoldRecord {
    #[serde(flatten)]
    pub spec: HoldSpec,
    /// In flight at the end, and the most it reached.
    pub final_concurrency: u32,
    pub max_concurrency: u32,
    /// Every window's decision: the in-flight count over time.
    pub steps: Vec<HoldStep>,
}

impl From<&Hold> for HoldRecord {
    fn from(h: &Hold) -> HoldRecord {
        HoldRecord {
            spec: h.spec,
            final_concurrency: h.current,
            max_concurrency: h
                .steps
                .iter()
                .map(|s| s.next.max(s.concurrency))
                .max()
                .unwrap_or(h.spec.start),
            steps: h.steps.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window without the server's count.
    fn w(rpm: f64, noise: f64, p95: Option<f64>) -> Window {
        Window {
            rpm,
            noise,
            latency_p95_ms: p95,
            running: None,
        }
    }

    fn spec() -> HoldSpec {
        HoldSpec {
            target_rpm: 1000.0,
            latency_limit_ms: 150.0,
            start: 16,
            ceiling: ceiling(16),
            window: Duration::from_secs(1),
            settle: Duration::from_millis(200),
        }
    }

    #[test]
    fn raises_while_short_and_holds_once_there() {
        let mut h = Hold::new(spec());
        // Rate grows with in flight (as on a fleet where pinned connections leave replicas idle).
        assert_eq!(h.decide(1.0, w(800.0, 0.0, Some(100.0))), 18);
        assert_eq!(h.decide(2.0, w(900.0, 0.0, Some(100.0))), 20);
        assert_eq!(h.decide(3.0, w(990.0, 0.0, Some(100.0))), 20, "within 2%: held");
        assert_eq!(
            h.steps.iter().map(|s| s.action).collect::<Vec<_>>(),
            ["raise", "raise", "hold"]
        );
    }

    #[test]
    fn a_raise_that_buys_nothing_is_taken_back_and_ends_the_climb() {
        let mut h = Hold::new(spec());
        assert_eq!(h.decide(1.0, w(800.0, 0.0, Some(100.0))), 18);
        // 12.5% more in flight bought 0.5%: the fleet is full.
        assert_eq!(h.decide(2.0, w(804.0, 0.0, Some(110.0))), 16);
        // Still short, but the cap is where the climb ended.
        assert_eq!(h.decide(3.0, w(800.0, 0.0, Some(100.0))), 16);
        assert_eq!(
            h.steps.iter().map(|s| s.action).collect::<Vec<_>>(),
            ["raise", "back", "hold"]
        );
    }

    #[test]
    fn a_full_fleet_read_short_by_noise_is_not_climbed() {
        let mut h = Hold::new(spec());
        // The plan's rate sits a little above what the fleet serves: windows either side of it.
        assert_eq!(
            h.decide(1.0, w(975.0, 0.0, Some(100.0))),
            18,
            "short by 2.5%: a raise to try"
        );
        // 12.5% more in flight bought 1.5%, though the window reads as held: back, and capped.
        assert_eq!(h.decide(2.0, w(990.0, 0.0, Some(105.0))), 16);
        assert_eq!(
            h.decide(3.0, w(960.0, 0.0, Some(100.0))),
            16,
            "short again, but the climb is over"
        );
        assert_eq!(
            h.steps.iter().map(|s| s.action).collect::<Vec<_>>(),
            ["raise", "back", "hold"]
        );
    }

    #[test]
    fn latency_over_the_limit_lowers_and_is_not_tried_again() {
        let mut h = Hold::new(spec());
        assert_eq!(h.decide(1.0, w(800.0, 0.0, Some(100.0))), 18);
        assert_eq!(h.decide(2.0, w(900.0, 0.0, Some(200.0))), 16);
        // Short again: up to 17 at most, never back to 18.
        assert_eq!(h.decide(3.0, w(800.0, 0.0, Some(100.0))), 17);
        assert_eq!(h.decide(4.0, w(850.0, 0.0, Some(100.0))), 17);
        let r = HoldRecord::from(&h);
        assert_eq!((r.final_concurrency, r.max_concurrency), (17, 18));
    }

    #[test]
    fn a_window_short_by_its_own_noise_starts_no_climb() {
        let mut h = Hold::new(spec());
        // 6% short, but its rate is known only to ±4% (1 s.e.): not short.
        assert_eq!(h.decide(1.0, w(940.0, 0.04, Some(100.0))), 16);
        // 6% short, known to ±1%: short.
        assert_eq!(h.decide(2.0, w(940.0, 0.01, Some(100.0))), 18);
    }

    #[test]
    fn a_raise_within_the_noise_is_measured_again_then_judged() {
        let mut h = Hold::new(spec());
        assert_eq!(h.decide(1.0, w(800.0, 0.0, Some(100.0))), 18);
        // +2.25% against the 2.5% a fifth of linear needs, each window ±3%: unclear.
        assert_eq!(h.decide(2.0, w(818.0, 0.03, Some(100.0))), 18);
        assert_eq!(h.decide(3.0, w(818.0, 0.03, Some(100.0))), 18);
        // Three windows and still unclear: the pooled +2.25% is short of the 2.5% needed.
        assert_eq!(h.decide(4.0, w(818.0, 0.03, Some(100.0))), 16);
        let actions: Vec<_> = h.steps.iter().map(|s| s.action).collect();
        assert_eq!(actions, ["raise", "measure", "measure", "back"]);
        // The same windows at +3%: paid on the pooled estimate, and the climb goes on.
        let mut h = Hold::new(spec());
        h.decide(1.0, w(800.0, 0.0, Some(100.0)));
        h.decide(2.0, w(824.0, 0.03, Some(100.0)));
        h.decide(3.0, w(824.0, 0.03, Some(100.0)));
        assert_eq!(h.decide(4.0, w(824.0, 0.03, Some(100.0))), 20);
        // A clear gain after a raise lets the climb go on.
        let mut h = Hold::new(spec());
        assert_eq!(h.decide(1.0, w(800.0, 0.01, Some(100.0))), 18);
        assert_eq!(h.decide(2.0, w(880.0, 0.01, Some(100.0))), 20);
    }

    /// A window with the server's running count (mean, s.e.).
    fn ws(rpm: f64, noise: f64, running: f64) -> Window {
        Window {
            running: Some((running, 0.02)),
            ..w(rpm, noise, Some(100.0))
        }
    }

    #[test]
    fn the_servers_running_count_judges_a_raise_the_rate_cannot() {
        // A pinned fleet: 5% short, the rate known to ±3%: on the rate alone not short.
        let mut h = Hold::new(spec());
        assert_eq!(h.decide(1.0, w(950.0, 0.03, Some(100.0))), 16);
        // With the server's count it is short, and each raise is judged by the running
        // requests it added (0.6 and 0.9 of 2), though the rate's gain is within its noise.
        let mut h = Hold::new(spec());
        assert_eq!(h.decide(1.0, ws(950.0, 0.03, 14.0)), 18);
        assert_eq!(h.decide(2.0, ws(955.0, 0.03, 14.6)), 20);
        assert_eq!(h.decide(3.0, ws(972.0, 0.03, 15.5)), 22);
        assert_eq!(h.decide(4.0, ws(985.0, 0.03, 15.8)), 22, "within 2%: held");
        let actions: Vec<_> = h.steps.iter().map(|s| s.action).collect();
        assert_eq!(actions, ["raise", "raise", "raise", "hold"]);
        assert_eq!(h.steps[2].server_running, Some(15.5));
    }

    #[test]
    fn a_full_fleet_by_the_servers_count_is_taken_back_at_once() {
        let mut h = Hold::new(spec());
        // Short on its rate (the plan a little above the fleet): a raise to try.
        assert_eq!(h.decide(1.0, ws(960.0, 0.03, 16.0)), 18);
        // The rate reads higher by noise, but the server runs no more requests: back, capped.
        assert_eq!(h.decide(2.0, ws(990.0, 0.03, 16.0)), 16);
        assert_eq!(h.decide(3.0, ws(950.0, 0.03, 16.0)), 16);
        let actions: Vec<_> = h.steps.iter().map(|s| s.action).collect();
        assert_eq!(actions, ["raise", "back", "hold"]);
        // A gain of the count still within its noise after three windows is no gain.
        let mut h = Hold::new(spec());
        let noisy = |rpm: f64, running: f64| Window {
            running: Some((running, 0.08)),
            ..w(rpm, 0.01, Some(100.0))
        };
        assert_eq!(h.decide(1.0, noisy(900.0, 15.9)), 18);
        for t in 2..4 {
            assert_eq!(h.decide(f64::from(t), noisy(905.0, 16.0)), 18);
        }
        assert_eq!(h.decide(4.0, noisy(905.0, 16.0)), 16);
        let actions: Vec<_> = h.steps.iter().map(|s| s.action).collect();
        assert_eq!(actions, ["raise", "measure", "measure", "back"]);
        // A window without the count after a raise is judged on the rate, as before.
        let mut h = Hold::new(spec());
        assert_eq!(h.decide(1.0, ws(800.0, 0.0, 12.0)), 18);
        assert_eq!(h.decide(2.0, w(804.0, 0.0, Some(100.0))), 16);
    }

    #[test]
    fn never_above_the_ceiling() {
        let mut h = Hold::new(spec());
        let mut c = 16;
        for t in 0..200 {
            // A linear fleet far below the target: every raise pays.
            c = h.decide(f64::from(t), w(f64::from(c) * 10.0, 0.0, Some(10.0)));
        }
        assert_eq!(c, 64);
        assert_eq!(ceiling(1000), 2024);
    }
}
