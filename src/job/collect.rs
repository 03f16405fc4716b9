//! The collector: the one place outcomes become output lines and counts, feed notes and
//! Ctrl-C are handled, and the run ends with run-summary.json and its exit status.

use super::feed::FeedNote;
use super::hold::{Hold, HoldRecord, HoldStep, Window, WINDOW_ANSWERS};
use super::progress::Progress;
use super::queue::JobSource;
use super::settings::{predicted_vs_achieved, Batch, RunOutcome, RunSettings};
use super::tally::{RequestCounts, RunServer, RunSummary, Tally};
use super::worker::Event;
use crate::batch::{self, OutputWriter};
use crate::engine::{Stop, Width};
use crate::scrape::Scraper;
use crate::stats::latency::Hist;
use crate::stats::server::{summarize_server, ServerSnapshot};
use crate::ui::{self, usage_error, ExitStatus};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The one place outcomes become output lines and counts.
pub(super) struct Collector {
    pub(super) tally: Tally,
    pub(super) writer: OutputWriter,
    pub(super) output: PathBuf,
    pub(super) progress: Progress,
    pub(super) source: Arc<JobSource>,
    pub(super) stop: Stop,
    pub(super) refused: Option<String>,
    pub(super) input_error: Option<String>,
    pub(super) interrupted: bool,
    pub(super) streak: Arc<std::sync::Mutex<crate::outcome::Streak>>,
    /// Set when the streak stopped the run: the status and message every answer repeated.
    pub(super) systematic: Option<(Option<u16>, String)>,
    /// Holding the plan's rate (`--hold-rate`).
    pub(super) hold: Option<Holding>,
    /// `--completion-window`: its length and when it closes.
    pub(super) window: Option<(Duration, Instant)>,
    /// The completion window closed: the lines not answered are listed as expired.
    pub(super) expired: bool,
}

/// The hold at work: its controller, the engine's width it moves and the window being counted.
pub(super) struct Holding {
    hold: Hold,
    width: Arc<Width>,
    start: Instant,
    /// Answers that finished at or after this instant count in the window.
    from: Instant,
    answers: u64,
    /// The window's answered latencies.
    latency: Hist,
    /// Whether the server's running count is this run's own (not under `--shard`, where the
    /// server counts every shard's requests).
    own_server: bool,
}

impl Holding {
    pub(super) fn new(hold: Hold, width: Arc<Width>, start: Instant, own_server: bool) -> Holding {
        let from = start + hold.spec.settle;
        Holding {
            hold,
            width,
            start,
            from,
            answers: 0,
            latency: Hist::new(),
            own_server,
        }
    }

    fn record(&mut self, outcome: &crate::client::Outcome) {
        if outcome.end < self.from {
            return;
        }
        self.answers += 1;
        if outcome.result.is_ok() {
            self.latency
                .record_ms((outcome.end - outcome.start).as_secs_f64() * 1000.0);
        }
    }

    /// At a window's end: the hold's decision applied to the width. Returns the new in-flight
    /// count when it changed.
    fn tick(&mut self, now: Instant, remaining: Option<u64>, server: Option<&Scraper>) -> Option<(u32, HoldStep)> {
        let counted = now.saturating_duration_since(self.from);
        let long = counted >= self.hold.spec.window * 10;
        if counted < self.hold.spec.window || (self.answers < WINDOW_ANSWERS && !long) {
            return None;
        }
        // The last answers of a job come slower as the window empties: not a rate to hold.
        if remaining.is_some_and(|r| r < 2 * u64::from(self.hold.current())) {
            return None;
        }
        let rpm = self.answers as f64 / counted.as_secs_f64() * 60.0;
        // A closed loop's answer count varies as its service times do: relative s.e. CV/sqrt(n).
        let l = &self.latency;
        let noise = match (l.mean_ms(), l.stdev_ms()) {
            (Some(mean), Some(sd)) if mean > 0.0 => sd / mean / (l.len() as f64).sqrt(),
            _ => 0.0,
        };
        let window = Window {
            rpm,
            noise,
            latency_p95_ms: l.quantile_ms(0.95),
            running: server
                .filter(|_| self.own_server)
                .and_then(|sc| running(&sc.between(self.from, now))),
        };
        let was = self.hold.current();
        let next = self.hold.decide((now - self.start).as_secs_f64(), window);
        self.answers = 0;
        self.latency.clear();
        if next == was {
            self.from = now;
            return None;
        }
        self.width.set(next as usize);
        self.from = now + self.hold.spec.settle;
        self.hold.steps.last().cloned().map(|s| (next, s))
    }
}

/// Resolves when the completion window closes; never without one.
async fn sleep_until(window: Option<(Duration, Instant)>) {
    match window {
        Some((_, at)) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The server's running requests over a window: the mean of its scrapes and that mean's s.e.
/// At least two scrapes, or no figure.
fn running(snaps: &[ServerSnapshot]) -> Option<(f64, f64)> {
    let v: Vec<f64> = snaps.iter().filter_map(|s| s.running).collect();
    if v.len() < 2 {
        return None;
    }
    use statrs::statistics::Statistics;
    let se = v.iter().std_dev() / (v.len() as f64).sqrt();
    Some((v.iter().mean(), se))
}

impl Collector {
    pub(super) async fn collect(
        &mut self,
        mut rx: mpsc::UnboundedReceiver<Event>,
        mut notes: mpsc::UnboundedReceiver<FeedNote>,
        interrupt: &Stop,
        retries_used: &AtomicU64,
        server: Option<&Scraper>,
    ) -> anyhow::Result<()> {
        let mut ticker = tokio::time::interval(Duration::from_millis(500));
        let mut events = Vec::with_capacity(256);
        let mut notes_open = true;
        loop {
            tokio::select! {
                // Every event that arrived meanwhile, in one wake-up.
                n = rx.recv_many(&mut events, 256) => {
                    if n == 0 {
                        break;
                    }
                    for ev in events.drain(..) {
                        self.on_event(ev, retries_used)?;
                    }
                    // Lets the workers that are ready finish their answers first, so one write
                    // carries a few lines rather than one each time: at tens of thousands of
                    // answers a second the writes cost more than the lines. Still one pass of
                    // the scheduler, so at most about one answer per worker waits for it.
                    tokio::task::yield_now().await;
                    while let Ok(ev) = rx.try_recv() {
                        self.on_event(ev, retries_used)?;
                    }
                    // The lines of every answer at hand, in one write.
                    self.flush()?;
                    self.progress.update(self.tally.ok, self.tally.failed);
                }
                note = notes.recv(), if notes_open => match note {
                    None => notes_open = false,
                    Some(note) => self.on_note(note)?,
                },
                _ = interrupt.drain.cancelled(), if !self.interrupted => {
                    self.interrupted = true;
                    let by = if interrupt.terminated.is_cancelled() { "SIGTERM" } else { "Ctrl-C" };
                    ui::info(format!(
                        "{by}: finishing the requests in flight within --drain-timeout (Ctrl-C again abandons them)"
                    ));
                    self.source.close_feed();
                    self.stop.drain.cancel();
                }
                _ = interrupt.abandon.cancelled(), if self.interrupted && !self.stop.abandon.is_cancelled() => {
                    self.stop.abandon.cancel();
                }
                _ = sleep_until(self.window), if !self.expired && self.window.is_some() => {
                    self.expired = true;
                    let length = self.window.map_or(Duration::ZERO, |(w, _)| w);
                    ui::info(format!(
                        "completion window ({}) closed: finishing the requests in flight; the lines not answered go to {} as batch_expired",
                        humantime::format_duration(length),
                        self.writer.errors_path().display()
                    ));
                    // The feed reads on: each line it still sends is listed, not sent.
                    self.stop.drain.cancel();
                }
                _ = ticker.tick() => {
                    self.hold_tick(server);
                    self.progress.tick(self.tally.start, retries_used.load(Ordering::Relaxed));
                }
            }
        }
        if self.expired && !self.interrupted {
            self.expire_unsent(&mut notes).await?;
        }
        self.flush()?;
        // Notes that came after the last event (the feed's final counts).
        while let Ok(note) = notes.try_recv() {
            if let FeedNote::Done(counts) = note {
                self.tally.feed = Some(counts);
            }
        }
        Ok(())
    }

    /// Lists every line not answered when the window closed (the workers have stopped): the
    /// queued and retrying ones, then the rest of the input as the feed reads it on.
    async fn expire_unsent(&mut self, notes: &mut mpsc::UnboundedReceiver<FeedNote>) -> anyhow::Result<()> {
        while let Some(jobs) = self.source.unsent().await {
            for job in jobs {
                self.tally.expired += 1;
                self.writer
                    .buffer_expired(&job.custom_id)
                    .map_err(|err| anyhow::anyhow!("cannot write errors file: {err}"))?;
            }
            // Bad lines the feed skipped meanwhile are listed too.
            while let Ok(note) = notes.try_recv() {
                self.on_note(note)?;
            }
        }
        Ok(())
    }

    fn hold_tick(&mut self, server: Option<&Scraper>) {
        let remaining = self.progress.remaining();
        let Some(h) = self.hold.as_mut() else { return };
        if let Some((next, step)) = h.tick(Instant::now(), remaining, server) {
            self.progress.set_concurrency(next);
            let p95 = step.latency_p95_ms.map_or("-".into(), |p| format!("{p:.0} ms"));
            let running = step
                .server_running
                .map_or(String::new(), |r| format!(", the server running {r:.1}"));
            ui::info(format!(
                "hold-rate: {} -> {next} in flight ({}): {} RPM of {} planned, p95 {p95} (limit {:.0} ms){running}",
                step.concurrency,
                step.action,
                ui::thousands(step.rpm),
                ui::thousands(h.hold.spec.target_rpm),
                h.hold.spec.latency_limit_ms
            ));
        }
    }

    fn on_event(&mut self, ev: Event, retries_used: &AtomicU64) -> anyhow::Result<()> {
        match ev {
            Event::Retried => self.progress.retries = retries_used.load(Ordering::Relaxed),
            Event::Done {
                custom_id,
                outcome,
                attempts,
                systematic,
            } => {
                let failure = outcome.result.as_ref().err();
                if systematic && self.systematic.is_none() {
                    let f = failure.expect("a streak is made of failures");
                    self.systematic = Some((f.kind.status(), f.message.clone()));
                    // Start nothing new; the requests in flight finish and are written.
                    self.source.close_feed();
                    self.stop.drain.cancel();
                }
                if let Some(h) = self.hold.as_mut() {
                    h.record(&outcome);
                }
                let rec = self.tally.finish(custom_id, outcome, attempts);
                self.write(&rec)?;
            }
            Event::Refused { custom_id, outcome } => {
                let msg = outcome
                    .result
                    .as_ref()
                    .err()
                    .map(|f| f.message.clone())
                    .unwrap_or_default();
                let rec = self.tally.finish(custom_id, outcome, 1);
                self.write(&rec)?;
                if self.refused.is_none() {
                    self.refused = Some(msg);
                    self.source.close_feed();
                }
            }
        }
        Ok(())
    }

    fn on_note(&mut self, note: FeedNote) -> anyhow::Result<()> {
        match note {
            FeedNote::Invalid {
                line,
                custom_id,
                message,
            } => {
                self.tally.skipped_invalid += 1;
                ui::warn(format!("skipped invalid line: {message}"));
                self.writer
                    .write_invalid(line, custom_id.as_deref(), &message)
                    .map_err(|err| anyhow::anyhow!("cannot write errors file: {err}"))?;
            }
            FeedNote::Failed(message) => {
                self.input_error = Some(message);
                self.source.close_feed();
                self.stop.drain.cancel();
            }
            FeedNote::Done(counts) => {
                self.tally.feed = Some(counts);
                self.progress.set_total(counts.queued);
            }
        }
        Ok(())
    }

    fn write(&mut self, rec: &batch::OutputRecord) -> anyhow::Result<()> {
        self.writer
            .buffer_result(rec)
            .map_err(|err| anyhow::anyhow!("cannot write {}: {err}", self.output.display()))
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.writer
            .flush()
            .map_err(|err| anyhow::anyhow!("cannot write {}: {err}", self.output.display()))
    }

    /// Writes run-summary.json, prints the last lines, and picks the outcome.
    pub(super) fn finish(
        self,
        s: &RunSettings,
        b: &Batch<'_>,
        started_at: String,
        retries: u64,
        rate_limited: u64,
        retried_after_timeout: u64,
    ) -> anyhow::Result<RunOutcome> {
        let t = &self.tally;
        let wall = t.wall_s();
        let queued = t.queued();
        let not_finished = t.not_finished();
        let achieved_rpm = t.achieved_rpm();
        let predicted = s
            .plan
            .as_ref()
            .and(s.planned_rpm())
            .filter(|rpm| *rpm > 0.0)
            .map(|rpm| queued as f64 / rpm * 60.0);
        let mut summary = self.run_summary(s, b, started_at, retries, predicted);
        summary.rate_limited = rate_limited;
        summary.retried_after_timeout = retried_after_timeout;
        if let Some(sv) = &summary.server {
            let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
            ui::info(format!(
                "server ({}): {} running on average (max {}), {} waiting",
                sv.dialect,
                f(sv.figures.running_mean),
                f(sv.figures.running_max),
                f(sv.figures.waiting_mean)
            ));
        }
        if let Some(dir) = s.summary_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::files::ensure_dir(dir)?;
        }
        crate::files::write_whole(
            &s.summary_path,
            (serde_json::to_string_pretty(&summary)? + "\n").as_bytes(),
        )?;

        let mut line = format!(
            "done: {} ok, {} failed, {retries} retries, {not_finished} not finished, {} RPM over {wall:.1}s",
            t.ok,
            t.failed,
            ui::thousands(achieved_rpm),
        );
        if let Some(p) = predicted {
            line.push_str(&format!(" ({})", predicted_vs_achieved(p, wall)));
        }
        ui::info(line);
        if t.expired > 0 {
            ui::info(format!(
                "completion window: {} lines expired (listed in {} as batch_expired)",
                t.expired,
                self.writer.errors_path().display()
            ));
        }
        if rate_limited > 0 {
            ui::info(format!(
                "rate limit: {rate_limited} answers of 429 waited out and sent again (no retry used)"
            ));
        }
        ui::info(format!(
            "output: {}; summary: {}",
            s.output.display(),
            s.summary_path.display()
        ));
        let outcome = |status| RunOutcome {
            status,
            wall_time_s: wall,
            achieved_rpm,
            requests: queued,
            predicted_duration_s: predicted,
        };
        if let Some(msg) = self.refused {
            return Err(ui::unusable_error(
                format!("the endpoint refused the credentials ({msg}); stopped sending"),
                Some(b.key_hint.clone()),
            ));
        }
        if let Some((status, msg)) = self.systematic {
            return Err(ui::unusable_error(
                format!(
                    "stopped: the last {} finished requests all failed the same way: {msg}",
                    self.streak.lock().map_or(0, |s| s.len())
                ),
                Some(crate::outcome::streak_hint(status)),
            ));
        }
        if let Some(msg) = self.input_error {
            return Err(usage_error(
                msg,
                Some("fix the input; --resume continues where this run stopped".into()),
            ));
        }
        if self.interrupted {
            ui::hint_line("run the same command with --resume to send the rest");
            return Ok(outcome(ExitStatus::Interrupted));
        }
        if t.expired > 0 {
            ui::hint_line("run the same command with --resume to send the expired lines");
            return Ok(outcome(ExitStatus::Failure));
        }
        if t.failed > 0 || not_finished > 0 {
            ui::hint_line(format!(
                "failures are listed in {}; --resume retries them",
                self.writer.errors_path().display()
            ));
            return Ok(outcome(ExitStatus::Failure));
        }
        Ok(outcome(ExitStatus::Success))
    }

    /// run-summary.json's figures.
    fn run_summary(
        &self,
        s: &RunSettings,
        b: &Batch<'_>,
        started_at: String,
        retries: u64,
        predicted: Option<f64>,
    ) -> RunSummary {
        let t = &self.tally;
        let (wall, queued, not_finished) = (t.wall_s(), t.queued(), t.not_finished());
        let feed = t.feed.unwrap_or_default();
        RunSummary {
            schema_version: crate::model::schema::RUN_SUMMARY,
            input: s.input.display().to_string(),
            output: s.output.display().to_string(),
            requests_total: queued,
            requests_ok: t.ok,
            requests_failed: t.failed,
            requests_retried: t.retried_requests,
            retries,
            rate_limited: 0,
            completion_window_s: s.tuning.completion_window.map(|(w, _)| w.as_secs_f64()),
            expired: t.expired,
            request_counts: RequestCounts {
                total: queued,
                completed: t.ok,
                failed: queued.saturating_sub(t.ok),
            },
            retried_after_timeout: 0,
            cached_prompt_tokens: t.cached_prompt_tokens,
            stale_connection_resends: b.client.stale_retries(),
            skipped_already_done: feed.skipped_done,
            skipped_invalid: t.skipped_invalid,
            skipped_other_shards: feed.other_shards,
            not_finished,
            concurrency: s.concurrency,
            planned_rpm: s.planned_rpm(),
            shard: s.share,
            achieved_rpm: t.achieved_rpm(),
            wall_time_s: wall,
            predicted_duration_s: predicted,
            achieved_duration_s: wall,
            latency_p50_ms: t.latency.quantile_ms(0.5),
            latency_p90_ms: t.latency.quantile_ms(0.9),
            latency_p95_ms: t.latency.quantile_ms(0.95),
            latency_p99_ms: t.latency.quantile_ms(0.99),
            interrupted: self.interrupted,
            stopped_reason: self.refused.clone().or(self.input_error.clone()).or(self
                .systematic
                .as_ref()
                .map(|(_, m)| format!("systematic failure: {m}"))),
            started_at,
            sizeup_version: env!("CARGO_PKG_VERSION").to_string(),
            hold: self.hold.as_ref().map(|h| HoldRecord::from(&h.hold)),
            scaling_efficiency: scaling_efficiency(s, t.achieved_rpm()),
            server: b.server.as_ref().map(|sc| {
                let window = sc.between(t.start, tokio::time::Instant::now());
                RunServer {
                    dialect: sc.dialect().name().to_string(),
                    metrics_url: sc.url_display().to_string(),
                    figures: summarize_server(&window),
                }
            }),
        }
    }
}

/// The fleet's measured scaling: the rate per GPU the run achieved over the rate per GPU the
/// sweep measured (before any measured scaling the plan applied). With a plan only.
fn scaling_efficiency(s: &RunSettings, achieved_rpm: f64) -> Option<f64> {
    let plan = s.plan.as_ref()?;
    let planned = s.planned_rpm().filter(|r| *r > 0.0)?;
    let applied = plan.scaling.as_ref().map_or(1.0, |sc| sc.efficiency);
    // `planned` is this process's share of gpus x rpm_per_gpu; the sweep's rate is that over
    // the efficiency applied.
    Some(achieved_rpm / (planned / applied))
}
