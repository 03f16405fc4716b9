//! The measuring loop behind `sweep` and `auto`: levels one after another (each measured by
//! `level.rs`), the knee, and the report files rewritten after each level.

pub mod cache;
mod level;
mod levels;
mod rec;
mod settings;
pub mod workload;

use level::{measure_level, EarlyEnd, LevelResult, Sweep};
use rec::MixTally;

use crate::batch::OutputWriter;
use crate::client::Client;
use crate::model::{AnnouncedLimits, KneeRow, LevelEnd, LevelRow, LevelSpend, ServerInfo, Summary};
use crate::report::{Format as ReportFormat, RequestsCsv};
use crate::scrape::Scraper;
use crate::stats::knee::{knee, next_level, LevelPoint};
use crate::stats::level::MIN_OK;
use crate::stats::server::{rate_limit_verdict, running_max_observed, tokens_mismatch, verdict};
use crate::target::Target;
use crate::ui::{self, usage_error};
pub use levels::{max_level, parse_levels, Levels};
pub use settings::Settings;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::Arc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
pub use workload::{workload_from, BodySpec, Workload, WorkloadSpec};

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
    let file = File::create(&requests_path)
        .map_err(|e| usage_error(format!("cannot write {}: {e}", requests_path.display()), None))?;
    let requests_csv = RequestsCsv::new(BufWriter::new(file))?;
    let summary = new_summary(s, target, &workload);
    if s.reset_prefix_cache {
        reset_prefix_cache(target).await;
    }
    let scraper = target.watch_server(&s.server_metrics, s.scrape_interval).await;
    let mut run = SweepRun {
        settings: s,
        workload: &workload,
        out,
        requests_csv,
        summary,
        scraper: scraper.as_ref(),
        client: &client,
        seen_before: workload.seen.totals(),
        points: Vec::new(),
        interrupted: false,
        repeats_warned: false,
        mix: MixTally::default(),
    };
    let sweep_start = Instant::now();
    let key_hint = target.key_hint();
    let mut next_index = 0usize;
    let mut knee_checked = false;
    loop {
        let (c, early) = match next_concurrency(&s.levels, &run.points, &mut next_index) {
            Some(c) => (c, early_end(&s.levels, &run.points, c)),
            // The knee's own level looks like the climb until the level above is measured, so
            // it may have ended early: it is measured again in full, once.
            None => match loose_knee(&run.summary).filter(|_| !knee_checked) {
                Some(k) => {
                    knee_checked = true;
                    ui::info(format!(
                        "level {k} is the knee and ended early: measuring it again to --ci-width"
                    ));
                    (k, EarlyEnd::default())
                }
                None => break,
            },
        };
        let sweep = Sweep {
            settings: s,
            client: &client,
            workload: &workload,
            start: sweep_start,
            interrupt: &interrupt,
            key_hint: &key_hint,
            server: scraper.as_ref(),
        };
        let level = measure_level(&sweep, c, early, &mut sink).await?;
        if !run.add_level(c, level)? {
            break;
        }
    }
    run.finish()
}

/// `--reset-prefix-cache`: what the server said, on stderr; never a failure.
async fn reset_prefix_cache(target: &Target) {
    let limit = std::time::Duration::from_secs(10);
    match crate::client::post_empty(&target.endpoint, "/reset_prefix_cache", &target.access, limit).await {
        Ok(status) if (200..300).contains(&status) => {
            ui::info("note: the server's prefix cache was emptied (POST /reset_prefix_cache)")
        }
        Ok(status) => ui::warn(format!(
            "--reset-prefix-cache: POST /reset_prefix_cache answered {status} (vLLM serves it with VLLM_SERVER_DEV_MODE=1): the sweep starts with whatever the cache holds; --cache-bust keeps its prompts from sharing it"
        )),
        Err(why) => ui::warn(format!("--reset-prefix-cache: POST /reset_prefix_cache failed: {why}")),
    }
}

/// The knee's concurrency when its latest measurement ended by an early rule.
fn loose_knee(summary: &Summary) -> Option<u32> {
    let k = summary.knee.as_ref()?.concurrency;
    let last = summary.level_spend.iter().rev().find(|l| l.concurrency == k)?;
    matches!(last.ended_by, LevelEnd::BelowKnee | LevelEnd::FirstLevel).then_some(k)
}

/// What the levels so far tell level `c` (see [`EarlyEnd`]).
fn early_end(levels: &Levels, points: &[LevelPoint], c: u32) -> EarlyEnd {
    // A level between two measured ones refines the knee: it needs its full precision.
    if points.iter().any(|p| p.concurrency > c) {
        return EarlyEnd::default();
    }
    let below = points
        .iter()
        .filter(|p| p.concurrency < c)
        .max_by_key(|p| p.concurrency)
        .map(|p| p.rpm);
    EarlyEnd {
        below,
        first: points.is_empty(),
        more_above: match levels {
            Levels::List(list) => list.iter().any(|&l| l > c),
            Levels::Auto { max } => c < *max,
        },
    }
}

/// The summary before any level: what the sweep measures, and against what.
fn new_summary(s: &Settings, target: &Target, workload: &Workload) -> Summary {
    Summary {
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
        level_spend: Vec::new(),
        tokens_estimated: false,
        distinct_requests: None,
        repeated_requests: None,
        workload: None,
        server: None,
        rate_limits: None,
        name: s.name.clone(),
        gpu_hour_cost: s.gpu_hour_cost,
    }
}

/// The next level to measure: the list's next entry, or `auto`'s choice from the levels so
/// far; `None` when the sweep is done.
fn next_concurrency(levels: &Levels, points: &[LevelPoint], next_index: &mut usize) -> Option<u32> {
    let c = match levels {
        Levels::List(list) => *list.get(*next_index)?,
        Levels::Auto { max } => next_level(points, *max)?,
    };
    *next_index += 1;
    Some(c)
}

/// A sweep between its levels: what it has written and what the next level choice reads.
struct SweepRun<'a> {
    settings: &'a Settings,
    workload: &'a Workload,
    out: &'a Path,
    requests_csv: RequestsCsv<BufWriter<File>>,
    summary: Summary,
    scraper: Option<&'a Scraper>,
    /// The answers' announced rate limits are read from it after each level.
    client: &'a Client,
    /// The workload's prompt bytes sent and explained when the last level ended.
    seen_before: (u64, u64),
    points: Vec<LevelPoint>,
    interrupted: bool,
    repeats_warned: bool,
    mix: MixTally,
}

impl SweepRun<'_> {
    /// Records level `c` in requests.csv and the reports; false when the sweep stops here.
    fn add_level(&mut self, c: u32, level: LevelResult) -> anyhow::Result<bool> {
        let s = self.settings;
        if level.interrupted {
            self.interrupted = true;
        }
        if level.systematic {
            if let Some(err) = level.unusable {
                return Err(err);
            }
        }
        let Some(row) = level.row else {
            if self.summary.levels.is_empty() {
                return Err(level
                    .unusable
                    .unwrap_or_else(|| ui::unusable_error("no request succeeded", None)));
            }
            return Ok(false);
        };
        let mut row = row;
        let seen = self.workload.seen.totals();
        row.own_prefix_share = cache::explained_share(self.seen_before, seen);
        self.seen_before = seen;
        // Where the answers say what was cached, each is judged on its own (a warm line comes
        // back cached whole, far above any packing difference); else the level's hit rate.
        row.cache_inflated = match row.warm_requests {
            Some(warm) => cache::warm_level(warm, row.requests_ok),
            None => cache::inflated(row.server_prefix_cache_hit_rate, row.own_prefix_share),
        };
        if row.cache_inflated {
            let evidence = match row.warm_requests {
                Some(warm) => format!(
                    "{warm} of its {} answers say the server's prefix cache served far more of their prompt than this sweep's own lines explain",
                    row.requests_ok
                ),
                None => format!(
                    "the server's prefix cache served {:.0}% of prompt tokens where this sweep's own lines explain {:.0}%",
                    row.server_prefix_cache_hit_rate.unwrap_or(0.0) * 100.0,
                    row.own_prefix_share.unwrap_or(0.0) * 100.0
                ),
            };
            ui::warn(format!(
                "level {c}: {evidence}: blocks it never sent (a cache warm from an earlier run, or another client's) made this level faster than the job will be; run with --cache-bust, or reset the server's cache first (vLLM: POST /reset_prefix_cache, or sizeup's --reset-prefix-cache)"
            ));
        }
        for r in &level.requests {
            self.requests_csv.write_row(r)?;
        }
        self.requests_csv.flush()?;
        self.summary.tokens_estimated |= level.tokens_estimated;
        note_repeats(&mut self.summary, self.workload, &mut self.repeats_warned);
        self.mix.add(&level.recs);
        self.summary.workload = self.mix.summary();
        // One entry per row of `levels`, as `ci_met`.
        self.summary.level_spend.push(LevelSpend {
            concurrency: c,
            seconds: level.seconds,
            requests: level.recs.len() as u64,
            ended_by: level.ended_by,
        });
        if !row.rpm.is_finite() {
            ui::warn(format!(
                "level {c}: no data: fewer than {MIN_OK} requests finished inside the measured window within --max-duration {} ({} finished in all, {c} needed to end the warm-up); requests take longer than that: raise --max-duration (e.g. 10m) or lower max_tokens",
                humantime::format_duration(s.max_duration),
                row.requests_ok + row.requests_failed
            ));
            // Kept in the reports with empty RPM fields; left out of the knee and the plan.
            // Higher levels only take longer, so the sweep ends here.
            self.summary.ci_met.push(false);
            self.summary.levels.push(row);
            finish_summary(&mut self.summary, &self.points, s.gpus);
            write_reports(&self.summary, self.out)?;
            return Ok(false);
        }
        let slo_ok = s.slo.met(row.latency_p95_ms, row.ttft_p95_ms, row.error_rate);
        self.points.push(LevelPoint {
            concurrency: c,
            rpm: row.rpm,
            half_width: (row.rpm_ci_high - row.rpm_ci_low) / 2.0,
            slo_ok,
        });
        let below = self.points.iter().map(|p| p.concurrency).filter(|&b| b < c).max();
        say_level(c, &row, level.ended_by, below);
        self.summary.ci_met.push(level.ci_met);
        self.summary.levels.push(row);
        finish_summary(&mut self.summary, &self.points, s.gpus);
        self.summary.rate_limits = self.client.announced_limits().map(|(r, t)| AnnouncedLimits {
            requests_per_minute: r,
            tokens_per_minute: t,
        });
        self.summary.server = server_info(self.scraper, &self.summary);
        write_reports(&self.summary, self.out)?;
        // (A job sweep with its budget spent has no line left to send.)
        Ok(!(self.interrupted || self.points.last().is_some_and(|p| p.rpm <= 0.0) || self.workload.used_up()))
    }

    /// After the last level: requests.csv closed, the server's verdict and the warnings that
    /// concern the whole sweep.
    fn finish(self) -> anyhow::Result<SweepResult> {
        let SweepRun {
            requests_csv,
            summary,
            interrupted,
            ..
        } = self;
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
}

/// A measured level on stderr: its line, and the warnings about sizeup itself or the server.
fn say_level(c: u32, row: &LevelRow, ended_by: LevelEnd, below: Option<u32>) {
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
        match ended_by {
            LevelEnd::CiMet | LevelEnd::Interrupted | LevelEnd::Failures => String::new(),
            LevelEnd::Lines => "  (CI wider than --ci-width: the level's share of the input's lines is spent)".into(),
            LevelEnd::MaxDuration => "  (CI wider than --ci-width: hit --max-duration)".into(),
            LevelEnd::BelowKnee => format!(
                "  (below the knee: over 1.5x level {}, so more precision here decides nothing)",
                below.map_or("-".into(), |b| b.to_string())
            ),
            LevelEnd::FirstLevel => "  (first level: a rough CI says where the climb starts)".into(),
        }
    ));
    if let Some(rel) = tokens_mismatch(row) {
        ui::warn(format!(
            "level {c}: the server counted {:+.0}% output tokens per second against what sizeup received ({} vs {}): other clients share the server, or its counters lag",
            rel * 100.0,
            ui::thousands(row.server_output_tokens_per_s.unwrap_or(f64::NAN)),
            ui::thousands(row.output_tokens_per_s)
        ));
    }
}

/// summary.json `server`: which server, where, and its verdict on the knee so far. A rate
/// limit the answers show is the verdict, with metrics or without (then `dialect` is `none`).
fn server_info(scraper: Option<&Scraper>, summary: &Summary) -> Option<ServerInfo> {
    let rate_limit = rate_limit_verdict(&summary.levels, summary.knee.as_ref(), summary.rate_limits.as_ref());
    match scraper {
        Some(sc) => Some(ServerInfo {
            dialect: sc.dialect().name().to_string(),
            metrics_url: sc.url_display().to_string(),
            running_max_observed: running_max_observed(&summary.levels),
            verdict: rate_limit.or_else(|| verdict(&summary.levels, summary.knee.as_ref())),
            prefix_cache_tokens: sc.prefix_cache_tokens(),
        }),
        None => rate_limit.map(|v| ServerInfo {
            dialect: "none".into(),
            metrics_url: String::new(),
            running_max_observed: None,
            verdict: Some(v),
            prefix_cache_tokens: None,
        }),
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
