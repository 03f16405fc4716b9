//! One level of a sweep: a closed loop of C requests until the rate's confidence interval is
//! narrow enough (or a stop rule ends it), then the level's statistics.
//!
//! The loop is a small state machine, `LevelRun`: each answer (`on_answer`) and each tick
//! (`on_tick`) may end the level; `close` stops the window and summarizes what it kept.

use super::rec::{unusable_reason, Rec};
use super::settings::Settings;
use super::workload::{self, Workload};
use crate::batch::OutputWriter;
use crate::client::Client;
use crate::engine::{run_window, Slot, Stop};
use crate::model::{LevelEnd, LevelRow, RequestRow};
use crate::outcome::Streak;
use crate::scrape::Scraper;
use crate::stats::ci::{closed_loop_floor, rate_ci};
use crate::stats::level::{summarize_level, Sample};
use crate::stats::server::summarize_server;
use crate::ui;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub(super) struct LevelResult {
    pub(super) row: Option<LevelRow>,
    pub(super) requests: Vec<RequestRow>,
    pub(super) ci_met: bool,
    pub(super) interrupted: bool,
    pub(super) tokens_estimated: bool,
    pub(super) unusable: Option<anyhow::Error>,
    /// `unusable` is a failure every answer repeated: the sweep stops whatever it measured.
    pub(super) systematic: bool,
    /// Every finished request of the level, warm-up included.
    pub(super) recs: Vec<Rec>,
    /// Why the level ended and its wall seconds, warm-up included.
    pub(super) ended_by: LevelEnd,
    pub(super) seconds: f64,
}

/// What the levels measured before this one say about it: it may end as soon as it shows
/// itself below the knee, where more precision decides nothing.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct EarlyEnd {
    /// RPM of the nearest lower level measured: a CI whose low bound clears it by more than
    /// [`CLIMB`] shows the climb goes on.
    pub(super) below: Option<f64>,
    /// The sweep's first level, with higher ones to come: a rough CI is enough.
    pub(super) first: bool,
    /// Whether a higher level is still to come (the top level is never cut short: it may be
    /// the best there is).
    pub(super) more_above: bool,
}

/// The widest CI a level may end early with: enough to say where the climb starts, and
/// narrow enough that the knee's rule (the lowest level indistinguishable from the best) is
/// not misled by a level at the knee measured loosely.
const EARLY_CI: f64 = 0.20;

/// How far above the level below a level must be (its CI's low bound) to end as below the
/// knee: half again, as levels on the linear climb are (doubling doubles them). A smaller
/// gain is near the knee, where a level's first requests (a queue still forming) read low.
const CLIMB: f64 = 0.5;

/// What every level of one sweep shares.
pub(super) struct Sweep<'a> {
    pub(super) settings: &'a Settings,
    pub(super) client: &'a Arc<Client>,
    pub(super) workload: &'a Arc<Workload>,
    pub(super) start: Instant,
    pub(super) interrupt: &'a CancellationToken,
    /// Names the credential variable when every request is refused.
    pub(super) key_hint: &'a str,
    /// The server's metrics, when they can be read.
    pub(super) server: Option<&'a Scraper>,
}

/// Measures level `c`: drives a `LevelRun` with the window's answers, the ticks and the
/// interrupt until one of them ends the level.
pub(super) async fn measure_level(
    sweep: &Sweep<'_>,
    c: u32,
    early: EarlyEnd,
    sink: &mut Option<&mut OutputWriter>,
) -> anyhow::Result<LevelResult> {
    let level_start = Instant::now();
    let stop = Stop::new();
    let (tx, mut rx) = mpsc::unbounded_channel::<Rec>();
    let window = spawn_window(sweep, c, level_start, tx, &stop);
    let mut run = LevelRun::new(sweep, c, level_start);
    run.early = early;
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    loop {
        let done = tokio::select! {
            rec = rx.recv() => match rec {
                Some(r) => run.on_answer(r, sink).await?,
                None => {
                    // The source ran dry: a job sweep's budget is spent.
                    run.lines_spent = sweep.workload.job;
                    true
                }
            },
            _ = sweep.interrupt.cancelled() => {
                run.interrupted = true;
                true
            }
            _ = ticker.tick() => run.on_tick().await,
        };
        if done {
            break;
        }
    }
    run.close(stop, window, rx, sink).await
}

/// Starts the level's closed loop of `c` requests; each answer comes back on `tx`, timed from
/// `level_start`.
fn spawn_window(
    sweep: &Sweep<'_>,
    c: u32,
    level_start: Instant,
    tx: mpsc::UnboundedSender<Rec>,
    stop: &Stop,
) -> JoinHandle<()> {
    let source = Arc::new(workload::Requests::new(sweep.workload.clone()));
    let stream = sweep.workload.stream;
    let cl = sweep.client.clone();
    let drain = stop.drain.clone();
    tokio::spawn(run_window(
        c as usize,
        source,
        move |req: workload::Request, slot: Slot| {
            let (cl, drain) = (cl.clone(), drain.clone());
            async move {
                // A job sweep keeps the answer: it is the job's output.
                let outcome = cl.send(req.body, stream, req.custom_id.is_some()).await;
                // A 429 comes back at once: sent again at once, a closed loop would hammer a
                // hosted API with thousands of requests a second. The slot rests for the
                // answer's Retry-After (1 s without one, 5 s at most, so a level still ends).
                if let Err(f) = &outcome.result {
                    if f.kind == crate::client::FailKind::Http(429) {
                        let rest = f
                            .retry_after
                            .unwrap_or(Duration::from_secs(1))
                            .min(Duration::from_secs(5));
                        tokio::select! {
                            _ = tokio::time::sleep(rest) => {}
                            _ = drain.cancelled() => {}
                        }
                    }
                }
                let since = |t: Instant| (t - level_start).as_secs_f64();
                Rec {
                    start: since(outcome.start),
                    end: since(outcome.end),
                    sched_delay: slot.sched_delay.as_secs_f64(),
                    repeated: req.repeated,
                    prompt_bytes: req.prompt_bytes,
                    explained_bytes: req.explained_bytes,
                    requested_tokens: req.requested_tokens,
                    custom_id: req.custom_id,
                    outcome,
                }
            }
        },
        tx,
        stop.clone(),
    ))
}

/// The state of one level while its window runs.
struct LevelRun<'s, 'a> {
    sweep: &'s Sweep<'a>,
    c: u32,
    level_start: Instant,
    offset_ms: f64,
    recs: Vec<Rec>,
    streak: Streak,
    level_cap: Option<u64>,
    systematic: bool,
    warm_end: Option<f64>,
    /// Requests started in the window (from its opening on, counted at each answer): a job
    /// sweep's level ends at its cap.
    measured_in_window: u64,
    ci_met: bool,
    lines_spent: bool,
    interrupted: bool,
    unusable: Option<anyhow::Error>,
    early: EarlyEnd,
    /// Set when an early rule ended the level.
    ended_early: Option<LevelEnd>,
    last_progress: f64,
    /// A level whose warm-up never ends (requests slower than --max-duration) stops here.
    hard_limit: f64,
}

impl<'s, 'a> LevelRun<'s, 'a> {
    fn new(sweep: &'s Sweep<'a>, c: u32, level_start: Instant) -> Self {
        let s = sweep.settings;
        let workload = sweep.workload;
        // A job sweep's budget is shared: about an eighth per level (doubling to the knee and a
        // few bisection steps), never less than twice --min-requests.
        let level_cap = workload
            .job
            .then(|| workload.distinct().map(|d| (d / 8).max(2 * s.min_requests)))
            .flatten();
        LevelRun {
            sweep,
            c,
            level_start,
            offset_ms: (level_start - sweep.start).as_secs_f64() * 1000.0,
            recs: Vec::new(),
            streak: Streak::new(s.stop_after_failures),
            level_cap,
            systematic: false,
            warm_end: None,
            measured_in_window: 0,
            ci_met: false,
            lines_spent: false,
            interrupted: false,
            unusable: None,
            early: EarlyEnd::default(),
            ended_early: None,
            last_progress: 0.0,
            hard_limit: s.warmup.as_secs_f64() + s.max_duration.as_secs_f64(),
        }
    }

    /// One finished request; true when it ends the level.
    async fn on_answer(&mut self, mut r: Rec, sink: &mut Option<&mut OutputWriter>) -> anyhow::Result<bool> {
        let c = self.c;
        r.write_answer(sink)?;
        let failure = r.outcome.result.as_ref().err();
        if self.streak.record(failure.map(|f| (f.kind, f.body.as_ref()))) {
            let f = failure.expect("a streak is made of failures");
            self.unusable = Some(ui::unusable_error(
                format!(
                    "stopped at level {c}: the last {} requests all failed the same way: {}",
                    self.streak.len(),
                    f.message
                ),
                Some(crate::outcome::streak_hint(f.kind.status())),
            ));
            self.systematic = true;
            self.recs.push(r);
            return Ok(true);
        }
        self.recs.push(r);
        // A job sweep spends lines: its warm-up and its level (an eighth of the
        // budget, not all of it on the first) end at their counts, checked at each
        // answer and not at the next tick, or a fast server would spend the level's
        // lines (or the whole budget) between two ticks.
        if let Some(cap) = self.level_cap {
            match self.warm_end {
                None if self.recs.len() >= 2 * c as usize && self.recs.iter().any(|r| r.outcome.is_ok()) => {
                    let w = (Instant::now() - self.level_start).as_secs_f64();
                    self.warm_end = Some(w);
                    self.measured_in_window = open_window(w, &self.recs, self.sweep.server).await;
                }
                Some(w) => {
                    self.measured_in_window += u64::from(self.recs.last().is_some_and(|r| r.start >= w));
                    if self.measured_in_window >= cap {
                        self.lines_spent = true;
                        return Ok(true);
                    }
                }
                None => {}
            }
        }
        Ok(false)
    }

    /// Every 100 ms: ends the warm-up, reports progress, and applies the stop rules in
    /// seconds and in the CI's width; true when the level ends.
    async fn on_tick(&mut self) -> bool {
        let s = self.sweep.settings;
        let c = self.c;
        let now = (Instant::now() - self.level_start).as_secs_f64();
        let Some(w) = self.warm_end else {
            // A job sweep spends lines, not seconds: two rounds of C warm the server up.
            let warm = now >= s.warmup.as_secs_f64() || (self.sweep.workload.job && self.recs.len() >= 2 * c as usize);
            if warm && self.recs.len() >= c as usize {
                if !self.recs.iter().any(|r| r.outcome.is_ok()) {
                    self.unusable = Some(unusable_reason(&self.recs, self.sweep.key_hint));
                    return true;
                }
                self.warm_end = Some(now);
                self.measured_in_window = open_window(now, &self.recs, self.sweep.server).await;
            } else if now > self.hard_limit {
                return true;
            }
            return false;
        };
        let ok_ends: Vec<f64> = self
            .recs
            .iter()
            .filter(|r| r.outcome.is_ok() && r.end >= w)
            .map(|r| r.end)
            .collect();
        let measured = self.recs.iter().filter(|r| r.start >= w).count() as u64;
        let est = rate_ci(&ok_ends, w, now, 0.95);
        let width = est.map_or(f64::INFINITY, |e| {
            e.ci.relative_half_width().max(closed_loop_floor(c, ok_ends.len()))
        });
        if now - self.last_progress >= 2.0 {
            self.last_progress = now;
            // A CI narrows like 1/sqrt(time): the time left to reach the target width.
            let elapsed = now - w;
            let left = (elapsed * (width / s.ci_width).powi(2) - elapsed)
                .clamp(0.0, (s.max_duration.as_secs_f64() - elapsed).max(0.0));
            ui::info(format!(
                "  level {c}: {:.0}s, {} measured, {} RPM ±{:.1}% (target ±{:.1}%), ETA {:.0}s",
                elapsed,
                measured,
                est.map_or("-".into(), |e| ui::thousands(e.per_minute)),
                if width.is_finite() { width * 100.0 } else { f64::NAN },
                s.ci_width * 100.0,
                if left.is_finite() {
                    left
                } else {
                    s.max_duration.as_secs_f64() - elapsed
                }
            ));
        }
        let enough = measured >= s.min_requests && ok_ends.len() as u64 >= s.min_requests;
        if width <= s.ci_width && enough {
            self.ci_met = true;
            return true;
        }
        if let (true, true, Some(e)) = (enough && width <= EARLY_CI, self.early.more_above, est) {
            let low = e.per_minute * (1.0 - width);
            let climbing = self.early.below.is_some_and(|b| low > b * (1.0 + CLIMB));
            if climbing {
                self.ended_early = Some(LevelEnd::BelowKnee);
                return true;
            }
            if self.early.first {
                self.ended_early = Some(LevelEnd::FirstLevel);
                return true;
            }
        }
        now - w >= s.max_duration.as_secs_f64()
    }

    /// Ends the level: the server's counters are closed, the window stopped (a job sweep's
    /// requests in flight finish and write their answers), and the level summarized.
    async fn close(
        mut self,
        stop: Stop,
        window: JoinHandle<()>,
        mut rx: mpsc::UnboundedReceiver<Rec>,
        sink: &mut Option<&mut OutputWriter>,
    ) -> anyhow::Result<LevelResult> {
        let end = (Instant::now() - self.level_start).as_secs_f64();
        if let (Some(server), Some(_)) = (self.sweep.server, self.warm_end) {
            // Closes the window's counters (after `end`, so the wait never lengthens the window).
            server.scrape_now(Duration::from_millis(500)).await;
        }
        let scraped_until = Instant::now();
        if self.warm_end.is_none()
            && !self.interrupted
            && self.sweep.workload.used_up()
            && self.recs.iter().any(|r| r.outcome.is_ok())
        {
            // A job sweep's budget ran out during the warm-up: measure the level on all it got
            // rather than throw the lines away.
            self.warm_end = Some(0.0);
        }
        stop.drain.cancel();
        if self.sweep.workload.job {
            // Every request sent is a line of the job: let those in flight finish and write their
            // answers (after the level's end, so outside its statistics), or the run would send
            // them a second time.
            let _ = window.await;
            while let Ok(mut r) = rx.try_recv() {
                r.write_answer(sink)?;
            }
        } else {
            stop.abandon.cancel();
            let _ = window.await;
        }
        Ok(self.result(end, scraped_until))
    }

    /// The level's statistics over its window `[warm_end, end]` (in seconds from the level's
    /// start), with the server's scrapes up to `scraped_until`.
    fn result(self, end: f64, scraped_until: Instant) -> LevelResult {
        let (s, c, offset_ms) = (self.sweep.settings, self.c, self.offset_ms);
        let ended_by = if self.interrupted {
            LevelEnd::Interrupted
        } else if self.unusable.is_some() || self.systematic {
            LevelEnd::Failures
        } else if self.ci_met {
            LevelEnd::CiMet
        } else if let Some(e) = self.ended_early {
            e
        } else if self.lines_spent {
            LevelEnd::Lines
        } else {
            LevelEnd::MaxDuration
        };
        let empty = LevelResult {
            row: None,
            requests: Vec::new(),
            ci_met: self.ci_met,
            interrupted: self.interrupted,
            tokens_estimated: false,
            unusable: None,
            systematic: self.systematic,
            recs: Vec::new(),
            ended_by,
            seconds: end,
        };
        if let Some(err) = self.unusable {
            return LevelResult {
                unusable: Some(err),
                ..empty
            };
        }
        let recs = self.recs;
        let samples: Vec<Sample> = recs.iter().map(Rec::sample).collect();
        let Some(w) = self.warm_end else {
            if self.interrupted {
                // Interrupted during warm-up: nothing measured at this level.
                return empty;
            }
            if !recs.is_empty() && !recs.iter().any(|r| r.outcome.is_ok()) {
                return LevelResult {
                    unusable: Some(unusable_reason(&recs, self.sweep.key_hint)),
                    ..empty
                };
            }
            // The warm-up never ended within --max-duration: too few requests finished for a
            // rate. The row keeps the counts and latencies, with empty RPM fields.
            let (mut row, requests, estimated) = summarize_level(c, s.gpus, &samples, 0.0, end, offset_ms);
            for v in [
                &mut row.rpm,
                &mut row.rpm_ci_low,
                &mut row.rpm_ci_high,
                &mut row.rpm_per_gpu,
            ] {
                *v = f64::NAN;
            }
            return LevelResult {
                row: Some(row),
                requests,
                tokens_estimated: estimated,
                recs,
                ..empty
            };
        };
        let (mut row, requests, estimated) = summarize_level(c, s.gpus, &samples, w, end, offset_ms);
        if let Some(server) = self.sweep.server {
            let window = server.between(self.level_start + Duration::from_secs_f64(w), scraped_until);
            summarize_server(&window).fill(&mut row);
        }
        LevelResult {
            row: Some(row),
            requests,
            tokens_estimated: estimated,
            recs,
            ..empty
        }
    }
}

/// Opens a level's window at `w` (seconds into the level): the server's counters are read
/// (not waited for: a slow /metrics must not stall the level), and the requests already
/// started since `w` are counted as measured.
async fn open_window(w: f64, recs: &[Rec], server: Option<&Scraper>) -> u64 {
    if let Some(server) = server {
        server.scrape_now(Duration::ZERO).await;
    }
    recs.iter().filter(|r| r.start >= w).count() as u64
}
