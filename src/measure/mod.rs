//! The measuring loop behind `sweep` and `auto`: a closed loop of C requests at each level
//! until the rate's confidence interval is narrow enough, the level statistics, the knee, and
//! the report files rewritten after each level.
//!
//! Long because: one level's loop (warm-up, window, the stop rules in seconds and in a job's
//! lines, the server's scrapes around it) is one state machine; the rest is already apart
//! (`levels.rs`, `rec.rs`, `workload.rs`).

mod levels;
mod rec;
pub mod workload;

use rec::{unusable_reason, MixTally, Rec};

use crate::api::Api;
use crate::batch::OutputWriter;
use crate::client::Client;
use crate::engine::{run_window, Slot, Stop};
use crate::model::{KneeRow, LevelRow, RequestRow, ServerInfo, Slo, Summary};
use crate::report::{Format as ReportFormat, RequestsCsv};
use crate::scrape::{MetricsSpec, Scraper};
use crate::stats::ci::{closed_loop_floor, rate_ci};
use crate::stats::knee::{knee, next_level, LevelPoint};
use crate::stats::level::{summarize_level, Sample, MIN_OK};
use crate::stats::server::{running_max_observed, summarize_server, tokens_mismatch, verdict};
use crate::target::Target;
use crate::ui::{self, usage_error};
pub use levels::{max_level, parse_levels, Levels};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
pub use workload::{workload_from, BodySpec, Workload, WorkloadSpec};

/// Validated measurement settings (made from the flags by `commands`).
#[derive(Clone, Debug)]
pub struct Settings {
    pub gpus: u32,
    pub levels: Levels,
    pub warmup: Duration,
    pub ci_width: f64,
    pub min_requests: u64,
    pub max_duration: Duration,
    pub slo: Slo,
    pub api: Api,
    /// `--stop-after-failures`: a level stops (exit 3) on a failure every answer repeats.
    pub stop_after_failures: u32,
    /// `--server-metrics` and `--scrape-interval`.
    pub server_metrics: MetricsSpec,
    pub scrape_interval: Duration,
    /// `sweep --name`: the deployment option's label, recorded in summary.json.
    pub name: Option<String>,
    /// `sweep --gpu-hour-cost`: its price per GPU-hour, recorded in summary.json.
    pub gpu_hour_cost: Option<f64>,
}

/// What `measure` returns besides the files it wrote.
pub struct SweepResult {
    pub summary: Summary,
    pub interrupted: bool,
}

/// Measures every level against `client`, rewriting the reports in `out` after each level
/// (a crash late in a sweep still leaves the finished levels on disk).
pub async fn measure(
    s: &Settings,
    client: Arc<Client>,
    workload: Arc<Workload>,
    out: &Path,
    target: &Target,
    interrupt: CancellationToken,
    mut sink: Option<&mut OutputWriter>,
) -> anyhow::Result<SweepResult> {
    crate::files::ensure_dir(out)?;
    let requests_path = out.join("requests.csv");
    let file = std::fs::File::create(&requests_path)
        .map_err(|e| usage_error(format!("cannot write {}: {e}", requests_path.display()), None))?;
    let mut requests_csv = RequestsCsv::new(std::io::BufWriter::new(file))?;
    let mut summary = Summary {
        schema_version: crate::model::schema::SUMMARY,
        endpoint: target.display.clone(),
        model: workload.model.clone().unwrap_or_default(),
        gpus: s.gpus,
        levels: Vec::new(),
        knee: None,
        batch_size_per_gpu: None,
        max_rpm: 0.0,
        max_rpm_per_gpu: 0.0,
        started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        sizeup_version: env!("CARGO_PKG_VERSION").to_string(),
        api: s.api,
        ci_width_target: s.ci_width,
        ci_met: Vec::new(),
        tokens_estimated: false,
        distinct_requests: None,
        repeated_requests: None,
        workload: None,
        server: None,
        name: s.name.clone(),
        gpu_hour_cost: s.gpu_hour_cost,
    };
    let scraper = target.watch_server(&s.server_metrics, s.scrape_interval).await;
    let mut points: Vec<LevelPoint> = Vec::new();
    let sweep_start = Instant::now();
    let key_hint = target.key_hint();
    let mut interrupted = false;
    let mut next_index = 0usize;
    let mut repeats_warned = false;
    let mut mix = MixTally::default();
    loop {
        let c = match &s.levels {
            Levels::List(list) => match list.get(next_index) {
                Some(c) => *c,
                None => break,
            },
            Levels::Auto { max } => match next_level(&points, *max) {
                Some(c) => c,
                None => break,
            },
        };
        next_index += 1;
        let sweep = Sweep {
            settings: s,
            client: &client,
            workload: &workload,
            start: sweep_start,
            interrupt: &interrupt,
            key_hint: &key_hint,
            server: scraper.as_ref(),
        };
        let level = measure_level(&sweep, c, &mut sink).await?;
        if level.interrupted {
            interrupted = true;
        }
        if level.systematic {
            if let Some(err) = level.unusable {
                return Err(err);
            }
        }
        let Some(row) = level.row else {
            if summary.levels.is_empty() {
                return Err(level
                    .unusable
                    .unwrap_or_else(|| ui::unusable_error("no request succeeded", None)));
            }
            break;
        };
        for r in &level.requests {
            requests_csv.write_row(r)?;
        }
        requests_csv.flush()?;
        summary.tokens_estimated |= level.tokens_estimated;
        note_repeats(&mut summary, &workload, &mut repeats_warned);
        mix.add(&level.recs);
        summary.workload = mix.summary();
        if !row.rpm.is_finite() {
            ui::warn(format!(
                "level {c}: no data: fewer than {MIN_OK} requests finished inside the measured window within --max-duration {} ({} finished in all, {c} needed to end the warm-up); requests take longer than that: raise --max-duration (e.g. 10m) or lower max_tokens",
                humantime::format_duration(s.max_duration),
                row.requests_ok + row.requests_failed
            ));
            // Kept in the reports with empty RPM fields; left out of the knee and the plan.
            // Higher levels only take longer, so the sweep ends here.
            summary.ci_met.push(false);
            summary.levels.push(row);
            finish_summary(&mut summary, &points, s.gpus);
            write_reports(&summary, out)?;
            break;
        }
        let slo_ok = s.slo.met(row.latency_p95_ms, row.ttft_p95_ms, row.error_rate);
        points.push(LevelPoint {
            concurrency: c,
            rpm: row.rpm,
            half_width: (row.rpm_ci_high - row.rpm_ci_low) / 2.0,
            slo_ok,
        });
        if row.client_limited {
            ui::warn(format!(
                "level {c}: sizeup itself was slow to start requests (client-limited); the figures may understate the resource. Try fewer levels at once, a release build, or a less busy machine."
            ));
        }
        ui::info(format!(
            "level {c:>4}: {} RPM ±{:.1}% ({} per GPU), p95 {:.0} ms, {} ok, {} failed{}{}",
            ui::thousands(row.rpm),
            100.0 * (row.rpm_ci_high - row.rpm_ci_low) / 2.0 / row.rpm.max(f64::MIN_POSITIVE),
            ui::thousands(row.rpm_per_gpu),
            row.latency_p95_ms,
            row.requests_ok,
            row.requests_failed,
            match (row.server_running_mean, row.server_waiting_mean) {
                (Some(r), Some(w)) => format!("; server: {r:.1} running, {w:.1} waiting"),
                (Some(r), None) => format!("; server: {r:.1} running"),
                _ => String::new(),
            },
            match (level.ci_met, level.lines_spent) {
                (true, _) => "",
                (false, true) => "  (CI wider than --ci-width: the level's share of the input's lines is spent)",
                (false, false) => "  (CI wider than --ci-width: hit --max-duration)",
            }
        ));
        if let Some(rel) = tokens_mismatch(&row) {
            ui::warn(format!(
                "level {c}: the server counted {:+.0}% output tokens per second against what sizeup received ({} vs {}): other clients share the server, or its counters lag",
                rel * 100.0,
                ui::thousands(row.server_output_tokens_per_s.unwrap_or(f64::NAN)),
                ui::thousands(row.output_tokens_per_s)
            ));
        }
        summary.ci_met.push(level.ci_met);
        summary.levels.push(row);
        finish_summary(&mut summary, &points, s.gpus);
        summary.server = scraper.as_ref().map(|sc| server_info(sc, &summary));
        write_reports(&summary, out)?;
        if interrupted || points.last().is_some_and(|p| p.rpm <= 0.0) || workload.used_up() {
            // (A job sweep with its budget spent has no line left to send.)
            break;
        }
    }
    requests_csv.finish()?;
    if let Some(v) = summary.server.as_ref().and_then(|sv| sv.verdict.as_ref()) {
        ui::info(format!("server ({}): {}", v.limit, v.evidence));
    }
    if !interrupted && !summary.levels.iter().any(|l| l.rpm.is_finite()) {
        return Err(ui::unmet_error(
            format!("no level had data: fewer than {MIN_OK} requests finished within --max-duration at every level measured"),
            Some("raise --max-duration (one request takes longer than it), or lower max_tokens".into()),
        ));
    }
    if summary.tokens_estimated {
        ui::warn(
            "the endpoint sent no `usage` with its answers: token figures count streamed chunks and are estimates (tokens_estimated in summary.json)",
        );
    }
    Ok(SweepResult { summary, interrupted })
}

/// summary.json `server`: which server, where, and its verdict on the knee so far.
fn server_info(scraper: &Scraper, summary: &Summary) -> ServerInfo {
    ServerInfo {
        dialect: scraper.dialect().name().to_string(),
        metrics_url: scraper.url_display().to_string(),
        running_max_observed: running_max_observed(&summary.levels),
        verdict: verdict(&summary.levels, summary.knee.as_ref()),
    }
}

/// Records how many requests were new lines and how many repeats, and says once on stderr
/// when the sample ran out.
fn note_repeats(summary: &mut Summary, workload: &Workload, warned: &mut bool) {
    let Some(distinct) = workload.distinct() else { return };
    let sent = workload.sent();
    summary.distinct_requests = Some(sent.min(distinct));
    // A job sweep never sends a line twice (its source ends instead).
    summary.repeated_requests = Some(if workload.job { 0 } else { sent.saturating_sub(distinct) });
    if sent > distinct && !workload.job && !*warned {
        *warned = true;
        let file = workload.file_requests().unwrap_or(distinct);
        let why = if file > distinct {
            format!("the sample of {distinct} lines (of {file} in the file) is used up; raise --sample")
        } else {
            format!("the file has only {file} lines and the sweep needed more")
        };
        ui::warn(format!(
            "{why}: lines are now sent again, and a server's prefix cache answers repeats faster (levels.csv repeated_requests counts them)"
        ));
    }
}

/// Knee, maxima and per-GPU batch size from the levels so far.
fn finish_summary(summary: &mut Summary, points: &[LevelPoint], gpus: u32) {
    let best = summary.levels.iter().map(|l| l.rpm).fold(0.0, f64::max);
    summary.max_rpm = best;
    summary.max_rpm_per_gpu = best / f64::from(gpus);
    let k = knee(points);
    summary.knee = k.map(|k| KneeRow {
        concurrency: k.concurrency,
        rpm: k.rpm,
        rpm_per_gpu: k.rpm / f64::from(gpus),
        limited_by: k.limited_by,
    });
    summary.batch_size_per_gpu = k.map(|k| f64::from(k.concurrency) / f64::from(gpus));
}

/// levels.csv, summary.json, throughput.svg and report.html; each written whole to a temporary name and
/// renamed, so a reader never sees half a file.
pub fn write_reports(summary: &Summary, out: &Path) -> anyhow::Result<()> {
    for format in [
        ReportFormat::LevelsCsv,
        ReportFormat::Json,
        ReportFormat::Svg,
        ReportFormat::Html,
    ] {
        let Some(name) = format.file_name() else { continue };
        let mut buf = Vec::new();
        format.exporter().write(summary, &mut buf)?;
        crate::files::write_whole(&out.join(name), &buf)?;
    }
    Ok(())
}

struct LevelResult {
    row: Option<LevelRow>,
    requests: Vec<RequestRow>,
    ci_met: bool,
    /// A job sweep's level ended because its share of the lines (or the whole budget) was
    /// spent, not at --max-duration.
    lines_spent: bool,
    interrupted: bool,
    tokens_estimated: bool,
    unusable: Option<anyhow::Error>,
    /// `unusable` is a failure every answer repeated: the sweep stops whatever it measured.
    systematic: bool,
    /// Every finished request of the level, warm-up included.
    recs: Vec<Rec>,
}

/// What every level of one sweep shares.
struct Sweep<'a> {
    settings: &'a Settings,
    client: &'a Arc<Client>,
    workload: &'a Arc<Workload>,
    start: Instant,
    interrupt: &'a CancellationToken,
    /// Names the credential variable when every request is refused.
    key_hint: &'a str,
    /// The server's metrics, when they can be read.
    server: Option<&'a Scraper>,
}

async fn measure_level(sweep: &Sweep<'_>, c: u32, sink: &mut Option<&mut OutputWriter>) -> anyhow::Result<LevelResult> {
    let Sweep {
        settings: s,
        client,
        workload,
        start: sweep_start,
        interrupt,
        key_hint,
        server,
    } = *sweep;
    let level_start = Instant::now();
    let offset_ms = (level_start - sweep_start).as_secs_f64() * 1000.0;
    let stop = Stop::new();
    let (tx, mut rx) = mpsc::unbounded_channel::<Rec>();
    let source = Arc::new(workload::Requests::new(workload.clone()));
    let stream = workload.stream;
    let cl = client.clone();
    let window = tokio::spawn(run_window(
        c as usize,
        source,
        move |req: workload::Request, slot: Slot| {
            let cl = cl.clone();
            async move {
                // A job sweep keeps the answer: it is the job's output.
                let outcome = cl.send(req.body, stream, req.custom_id.is_some()).await;
                let since = |t: Instant| (t - level_start).as_secs_f64();
                Rec {
                    start: since(outcome.start),
                    end: since(outcome.end),
                    sched_delay: slot.sched_delay.as_secs_f64(),
                    repeated: req.repeated,
                    prompt_bytes: req.prompt_bytes,
                    requested_tokens: req.requested_tokens,
                    custom_id: req.custom_id,
                    outcome,
                }
            }
        },
        tx,
        stop.clone(),
    ));

    let mut recs: Vec<Rec> = Vec::new();
    let mut streak = crate::outcome::Streak::new(s.stop_after_failures);
    // A job sweep's budget is shared: about an eighth per level (doubling to the knee and a
    // few bisection steps), never less than twice --min-requests.
    let level_cap = workload
        .job
        .then(|| workload.distinct().map(|d| (d / 8).max(2 * s.min_requests)))
        .flatten();
    let mut systematic = false;
    let mut warm_end: Option<f64> = None;
    // Requests started in the window (from its opening on, counted at each answer): a job
    // sweep's level ends at its cap.
    let mut measured_in_window = 0u64;
    let mut ci_met = false;
    let mut lines_spent = false;
    let mut interrupted = false;
    let mut unusable = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut last_progress = 0.0;
    // A level whose warm-up never ends (requests slower than --max-duration) stops here.
    let hard_limit = s.warmup.as_secs_f64() + s.max_duration.as_secs_f64();
    loop {
        tokio::select! {
            rec = rx.recv() => match rec {
                Some(mut r) => {
                    r.write_answer(sink)?;
                    let failure = r.outcome.result.as_ref().err();
                    if streak.record(failure.map(|f| (f.kind, f.body.as_ref()))) {
                        let f = failure.expect("a streak is made of failures");
                        unusable = Some(ui::unusable_error(
                            format!("stopped at level {c}: the last {} requests all failed the same way: {}", streak.len(), f.message),
                            Some(crate::outcome::streak_hint(f.kind.status())),
                        ));
                        systematic = true;
                        recs.push(r);
                        break;
                    }
                    recs.push(r);
                    // A job sweep spends lines: its warm-up and its level (an eighth of the
                    // budget, not all of it on the first) end at their counts, checked at each
                    // answer and not at the next tick, or a fast server would spend the level's
                    // lines (or the whole budget) between two ticks.
                    if let Some(cap) = level_cap {
                        match warm_end {
                            None if recs.len() >= 2 * c as usize && recs.iter().any(|r| r.outcome.is_ok()) => {
                                let w = (Instant::now() - level_start).as_secs_f64();
                                warm_end = Some(w);
                                measured_in_window = open_window(w, &recs, server).await;
                            }
                            Some(w) => {
                                measured_in_window += u64::from(recs.last().is_some_and(|r| r.start >= w));
                                if measured_in_window >= cap {
                                    lines_spent = true;
                                    break;
                                }
                            }
                            None => {}
                        }
                    }
                }
                None => {
                    // The source ran dry: a job sweep's budget is spent.
                    lines_spent = workload.job;
                    break;
                }
            },
            _ = interrupt.cancelled() => {
                interrupted = true;
                break;
            }
            _ = ticker.tick() => {
                let now = (Instant::now() - level_start).as_secs_f64();
                let Some(w) = warm_end else {
                    // A job sweep spends lines, not seconds: two rounds of C warm the server up.
                    let warm = now >= s.warmup.as_secs_f64() || (workload.job && recs.len() >= 2 * c as usize);
                    if warm && recs.len() >= c as usize {
                        if !recs.iter().any(|r| r.outcome.is_ok()) {
                            unusable = Some(unusable_reason(&recs, key_hint));
                            break;
                        }
                        warm_end = Some(now);
                        measured_in_window = open_window(now, &recs, server).await;
                    } else if now > hard_limit {
                        break;
                    }
                    continue;
                };
                let ok_ends: Vec<f64> = recs.iter().filter(|r| r.outcome.is_ok() && r.end >= w).map(|r| r.end).collect();
                let measured = recs.iter().filter(|r| r.start >= w).count() as u64;
                let est = rate_ci(&ok_ends, w, now, 0.95);
                let width = est.map_or(f64::INFINITY, |e| e.ci.relative_half_width().max(closed_loop_floor(c, ok_ends.len())));
                if now - last_progress >= 2.0 {
                    last_progress = now;
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
                        if left.is_finite() { left } else { s.max_duration.as_secs_f64() - elapsed }
                    ));
                }
                if width <= s.ci_width && measured >= s.min_requests && ok_ends.len() as u64 >= s.min_requests {
                    ci_met = true;
                    break;
                }
                if now - w >= s.max_duration.as_secs_f64() {
                    break;
                }
            }
        }
    }
    let end = (Instant::now() - level_start).as_secs_f64();
    if let (Some(server), Some(_)) = (server, warm_end) {
        // Closes the window's counters (after `end`, so the wait never lengthens the window).
        server.scrape_now(Duration::from_millis(500)).await;
    }
    let scraped_until = Instant::now();
    if warm_end.is_none() && !interrupted && workload.used_up() && recs.iter().any(|r| r.outcome.is_ok()) {
        // A job sweep's budget ran out during the warm-up: measure the level on all it got
        // rather than throw the lines away.
        warm_end = Some(0.0);
    }
    stop.drain.cancel();
    if workload.job {
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
    let empty = LevelResult {
        row: None,
        requests: Vec::new(),
        ci_met,
        lines_spent,
        interrupted,
        tokens_estimated: false,
        unusable: None,
        systematic,
        recs: Vec::new(),
    };
    if let Some(err) = unusable {
        return Ok(LevelResult {
            unusable: Some(err),
            ..empty
        });
    }
    let samples: Vec<Sample> = recs.iter().map(Rec::sample).collect();
    let Some(w) = warm_end else {
        if interrupted {
            // Interrupted during warm-up: nothing measured at this level.
            return Ok(empty);
        }
        if !recs.is_empty() && !recs.iter().any(|r| r.outcome.is_ok()) {
            return Ok(LevelResult {
                unusable: Some(unusable_reason(&recs, key_hint)),
                ..empty
            });
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
        return Ok(LevelResult {
            row: Some(row),
            requests,
            tokens_estimated: estimated,
            recs,
            ..empty
        });
    };
    let (mut row, requests, estimated) = summarize_level(c, s.gpus, &samples, w, end, offset_ms);
    if let Some(server) = server {
        let window = server.between(level_start + Duration::from_secs_f64(w), scraped_until);
        summarize_server(&window).fill(&mut row);
    }
    Ok(LevelResult {
        row: Some(row),
        requests,
        ci_met,
        lines_spent,
        interrupted,
        tokens_estimated: estimated,
        unusable: None,
        systematic,
        recs,
    })
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
