//! `sizeup sweep`: closed-loop load at each concurrency level, RPM with a confidence interval,
//! latency percentiles, the knee, and the reports.

use super::Target;
use crate::api::Api;
use crate::batch::{Format, Payload, ReadOptions, Reader};
use crate::cli::{MeasureArgs, SloArgs, SweepArgs, WorkloadArgs};
use crate::client::{build_body, prepare_body, Client, FailKind, MaxTokensField, Outcome};
use crate::engine::{run_window, Slot, Source, Stop};
use crate::report::{Format as ReportFormat, KneeRow, LevelRow, RequestRow, RequestsCsv, Summary};
use crate::stats::ci::{closed_loop_floor, rate_ci};
use crate::stats::knee::{knee, next_level, LevelPoint};
use crate::stats::latency::{tpot_ms, LatencySet};
use crate::ui::{self, usage_error, ExitStatus};
use bytes::Bytes;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Which levels to measure.
#[derive(Clone, Debug, PartialEq)]
pub enum Levels {
    Auto { max: u32 },
    List(Vec<u32>),
}

pub fn parse_levels(s: &str, max: u32) -> anyhow::Result<Levels> {
    if s.trim().eq_ignore_ascii_case("auto") {
        if max == 0 {
            return Err(usage_error("--max-concurrency must be at least 1", None));
        }
        return Ok(Levels::Auto { max });
    }
    let mut out = Vec::new();
    for part in s.split(',') {
        match part.trim().parse::<u32>() {
            Ok(n) if n >= 1 => out.push(n),
            _ => {
                return Err(usage_error(
                    format!("--concurrency: `{}` is not a positive whole number", part.trim()),
                    Some("give a list like --concurrency 1,2,4,8 or --concurrency auto".into()),
                ))
            }
        }
    }
    Ok(Levels::List(out))
}

/// Validated measurement settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub gpus: u32,
    pub levels: Levels,
    pub warmup: Duration,
    pub ci_width: f64,
    pub min_requests: u64,
    pub max_duration: Duration,
    pub slo: SloArgs,
    pub api: Api,
}

impl Settings {
    pub fn from_args(m: &MeasureArgs, slo: &SloArgs, gpus: u32, api: Api) -> anyhow::Result<Settings> {
        if gpus == 0 {
            return Err(usage_error("--gpus must be at least 1", None));
        }
        if !(m.ci_width.is_finite() && m.ci_width > 0.0 && m.ci_width < 1.0) {
            return Err(usage_error(
                format!("--ci-width must be in (0, 1), got {}", m.ci_width),
                None,
            ));
        }
        if m.max_duration.is_zero() {
            return Err(usage_error("--max-duration must be longer than 0s", None));
        }
        super::validate_slo(slo)?;
        Ok(Settings {
            gpus,
            levels: parse_levels(&m.concurrency, m.max_concurrency)?,
            warmup: m.warmup,
            ci_width: m.ci_width,
            min_requests: m.min_requests,
            max_duration: m.max_duration,
            slo: slo.clone(),
            api,
        })
    }
}

/// How prompts become request bodies.
pub struct BodySpec {
    pub api: Api,
    pub max_tokens: Option<u32>,
    pub field: MaxTokensField,
    pub stream: bool,
    pub model: Option<String>,
}

/// The requests a sweep sends, ready-made bodies cycled in order.
pub struct Workload {
    kind: Kind,
    /// The next request number, continued across levels: a level never re-sends the prompts
    /// of the one before, which a server's prefix cache would answer faster than new work.
    next: AtomicU64,
    pub stream: bool,
    pub model: Option<String>,
}

enum Kind {
    /// A prompt of N words; request i starts with its number so no two prompts share a prefix
    /// (a prefix cache would otherwise make the resource look faster than it is for real work).
    Synthetic {
        api: Api,
        words: String,
        max_tokens: u32,
        field: MaxTokensField,
    },
    Sampled(Vec<Bytes>),
}

impl Workload {
    pub fn synthetic(
        api: Api,
        prompt_tokens: u32,
        max_tokens: u32,
        field: MaxTokensField,
        stream: bool,
        model: Option<String>,
    ) -> Workload {
        const WORDS: [&str; 8] = [
            "measure",
            "the",
            "throughput",
            "of",
            "this",
            "inference",
            "endpoint",
            "carefully",
        ];
        let words = (1..prompt_tokens.max(1))
            .map(|i| WORDS[i as usize % WORDS.len()])
            .collect::<Vec<_>>()
            .join(" ");
        Workload {
            kind: Kind::Synthetic {
                api,
                words,
                max_tokens,
                field,
            },
            next: AtomicU64::new(0),
            stream,
            model,
        }
    }

    /// Reads up to `sample` requests from a batch file (the same reader as `run`); text and
    /// CSV prompts become bodies as `spec` says.
    pub fn sampled(path: &Path, format: Option<Format>, sample: usize, spec: BodySpec) -> anyhow::Result<Workload> {
        let BodySpec {
            api,
            max_tokens,
            field,
            stream,
            model,
        } = spec;
        let reader = Reader::open(path, format, ReadOptions::new(api)).map_err(|e| usage_error(e.to_string(), None))?;
        let mut bodies = Vec::new();
        for item in reader {
            let item = item.map_err(|issue| {
                usage_error(
                    issue.to_string(),
                    Some(
                        "fix the line, or check the file with `sizeup run --input FILE` which lists every bad line"
                            .into(),
                    ),
                )
            })?;
            let mut body = match item.body {
                Payload::Body(v) => v,
                Payload::Prompt { prompt, .. } => build_body(api, model.as_deref(), &prompt, max_tokens, field),
            };
            prepare_body(&mut body, model.as_deref(), Some(stream));
            bodies.push(Bytes::from(serde_json::to_vec(&body)?));
            if bodies.len() >= sample.max(1) {
                break;
            }
        }
        if bodies.is_empty() {
            return Err(usage_error(
                format!("{} holds no requests to sample", path.display()),
                None,
            ));
        }
        Ok(Workload {
            kind: Kind::Sampled(bodies),
            next: AtomicU64::new(0),
            stream,
            model,
        })
    }

    fn body(&self, i: u64) -> Bytes {
        match &self.kind {
            Kind::Sampled(b) => b[(i % b.len() as u64) as usize].clone(),
            Kind::Synthetic {
                api,
                words,
                max_tokens,
                field,
            } => {
                let prompt = if words.is_empty() {
                    i.to_string()
                } else {
                    format!("{i} {words}")
                };
                let mut body: Value = build_body(*api, self.model.as_deref(), &prompt, Some(*max_tokens), *field);
                prepare_body(&mut body, None, Some(self.stream));
                Bytes::from(body.to_string())
            }
        }
    }
}

struct Requests {
    workload: Arc<Workload>,
}

impl Source for Requests {
    type Item = Bytes;
    async fn next(&self) -> Option<Bytes> {
        Some(self.workload.body(self.workload.next.fetch_add(1, Ordering::Relaxed)))
    }
}

/// One finished request, times in seconds from the level's start.
struct Rec {
    start: f64,
    end: f64,
    outcome: Outcome,
    sched_delay: f64,
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
) -> anyhow::Result<SweepResult> {
    super::ensure_dir(out)?;
    let requests_path = out.join("requests.csv");
    let file = std::fs::File::create(&requests_path)
        .map_err(|e| usage_error(format!("cannot write {}: {e}", requests_path.display()), None))?;
    let mut requests_csv = RequestsCsv::new(std::io::BufWriter::new(file))?;
    let mut summary = Summary {
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
        api: s.api.name().to_string(),
        ci_width_target: s.ci_width,
        ci_met: Vec::new(),
        tokens_estimated: false,
    };
    let mut points: Vec<LevelPoint> = Vec::new();
    let sweep_start = Instant::now();
    let key_hint = target.key_hint();
    let mut interrupted = false;
    let mut next_index = 0usize;
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
        let level = measure_level(s, c, &client, &workload, sweep_start, &interrupt, &key_hint).await;
        if level.interrupted {
            interrupted = true;
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
        let slo_ok = meets_slo(&row, &s.slo);
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
            "level {c:>4}: {} RPM ±{:.1}% ({} per GPU), p95 {:.0} ms, {} ok, {} failed{}",
            ui::thousands(row.rpm),
            100.0 * (row.rpm_ci_high - row.rpm_ci_low) / 2.0 / row.rpm.max(f64::MIN_POSITIVE),
            ui::thousands(row.rpm_per_gpu),
            row.latency_p95_ms,
            row.requests_ok,
            row.requests_failed,
            if level.ci_met {
                ""
            } else {
                "  (CI wider than --ci-width: hit --max-duration)"
            }
        ));
        summary.ci_met.push(level.ci_met);
        summary.levels.push(row);
        finish_summary(&mut summary, &points, s.gpus);
        write_reports(&summary, out)?;
        if interrupted || points.last().is_some_and(|p| p.rpm <= 0.0) {
            break;
        }
    }
    requests_csv.finish()?;
    if summary.tokens_estimated {
        ui::warn(
            "the endpoint sent no `usage` with its answers: token figures count streamed chunks and are estimates (tokens_estimated in summary.json)",
        );
    }
    Ok(SweepResult { summary, interrupted })
}

fn meets_slo(row: &LevelRow, slo: &SloArgs) -> bool {
    slo.max_latency_p95_ms.is_none_or(|m| row.latency_p95_ms <= m)
        && slo
            .max_ttft_p95_ms
            .is_none_or(|m| row.ttft_p95_ms.is_some_and(|t| t <= m))
        && slo.max_error_rate.is_none_or(|m| row.error_rate <= m)
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
        limited_by: k.limited_by.as_str().to_string(),
    });
    summary.batch_size_per_gpu = k.map(|k| f64::from(k.concurrency) / f64::from(gpus));
}

/// levels.csv, summary.json and throughput.svg; each written whole to a temporary name and
/// renamed, so a reader never sees half a file.
pub fn write_reports(summary: &Summary, out: &Path) -> anyhow::Result<()> {
    for format in [ReportFormat::LevelsCsv, ReportFormat::Json, ReportFormat::Svg] {
        let Some(name) = format.file_name() else { continue };
        let mut buf = Vec::new();
        format.exporter().write(summary, &mut buf)?;
        let path = out.join(name);
        let tmp = out.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, &buf).map_err(|e| usage_error(format!("cannot write {}: {e}", tmp.display()), None))?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(())
}

struct LevelResult {
    row: Option<LevelRow>,
    requests: Vec<RequestRow>,
    ci_met: bool,
    interrupted: bool,
    tokens_estimated: bool,
    unusable: Option<anyhow::Error>,
}

async fn measure_level(
    s: &Settings,
    c: u32,
    client: &Arc<Client>,
    workload: &Arc<Workload>,
    sweep_start: Instant,
    interrupt: &CancellationToken,
    key_hint: &str,
) -> LevelResult {
    let level_start = Instant::now();
    let offset_ms = (level_start - sweep_start).as_secs_f64() * 1000.0;
    let stop = Stop::new();
    let (tx, mut rx) = mpsc::unbounded_channel::<Rec>();
    let source = Arc::new(Requests {
        workload: workload.clone(),
    });
    let stream = workload.stream;
    let cl = client.clone();
    let window = tokio::spawn(run_window(
        c as usize,
        source,
        move |body: Bytes, slot: Slot| {
            let cl = cl.clone();
            async move {
                let outcome = cl.send(body, stream, false).await;
                let since = |t: Instant| (t - level_start).as_secs_f64();
                Rec {
                    start: since(outcome.start),
                    end: since(outcome.end),
                    sched_delay: slot.sched_delay.as_secs_f64(),
                    outcome,
                }
            }
        },
        tx,
        stop.clone(),
    ));

    let mut recs: Vec<Rec> = Vec::new();
    let mut warm_end: Option<f64> = None;
    let mut ci_met = false;
    let mut interrupted = false;
    let mut unusable = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut last_progress = 0.0;
    // A level with no completions at all cannot run forever.
    let hard_limit = s.warmup.as_secs_f64() + s.max_duration.as_secs_f64() + 30.0;
    loop {
        tokio::select! {
            rec = rx.recv() => match rec {
                Some(r) => recs.push(r),
                None => break,
            },
            _ = interrupt.cancelled() => {
                interrupted = true;
                break;
            }
            _ = ticker.tick() => {
                let now = (Instant::now() - level_start).as_secs_f64();
                let Some(w) = warm_end else {
                    if now >= s.warmup.as_secs_f64() && recs.len() >= c as usize {
                        if !recs.iter().any(|r| r.outcome.is_ok()) {
                            unusable = Some(unusable_reason(&recs, key_hint));
                            break;
                        }
                        warm_end = Some(now);
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
    stop.drain.cancel();
    stop.abandon.cancel();
    let _ = window.await;
    let empty = LevelResult {
        row: None,
        requests: Vec::new(),
        ci_met,
        interrupted,
        tokens_estimated: false,
        unusable: None,
    };
    if let Some(err) = unusable {
        return LevelResult {
            unusable: Some(err),
            ..empty
        };
    }
    let Some(w) = warm_end else {
        if recs.is_empty() || !recs.iter().any(|r| r.outcome.is_ok()) {
            let err = if recs.is_empty() {
                None
            } else {
                Some(unusable_reason(&recs, key_hint))
            };
            return LevelResult { unusable: err, ..empty };
        }
        // Interrupted during warm-up: nothing measured at this level.
        return empty;
    };
    let (row, requests, estimated) = summarize_level(c, s.gpus, &recs, w, end, offset_ms);
    LevelResult {
        row: Some(row),
        requests,
        ci_met,
        interrupted,
        tokens_estimated: estimated,
        unusable: None,
    }
}

/// Exit 3 with the reason every warm-up request failed; `key_hint` names the credential
/// variable that was used (see [`Target::key_hint`]).
fn unusable_reason(recs: &[Rec], key_hint: &str) -> anyhow::Error {
    let first = recs.iter().find_map(|r| r.outcome.result.as_ref().err());
    let Some(f) = first else {
        return ui::unusable_error("no request finished", None);
    };
    let hint = match f.kind {
        FailKind::Http(401 | 403) => key_hint.to_string(),
        FailKind::Http(404) => {
            "check --endpoint, --api and --model (GET /v1/models lists the served models)".to_string()
        }
        FailKind::Connect => "is the server up? check --endpoint".to_string(),
        _ => "every warm-up request failed; check the endpoint's logs".to_string(),
    };
    ui::unusable_error(format!("every warm-up request failed: {}", f.message), Some(hint))
}

fn summarize_level(
    c: u32,
    gpus: u32,
    recs: &[Rec],
    w: f64,
    end: f64,
    offset_ms: f64,
) -> (LevelRow, Vec<RequestRow>, bool) {
    let window = (end - w).max(f64::MIN_POSITIVE);
    let ok_ends: Vec<f64> = recs
        .iter()
        .filter(|r| r.outcome.is_ok() && r.end >= w && r.end < end)
        .map(|r| r.end)
        .collect();
    let failed = recs
        .iter()
        .filter(|r| !r.outcome.is_ok() && r.end >= w && r.end < end)
        .count() as u64;
    let est = rate_ci(&ok_ends, w, end, 0.95);
    let rpm = ok_ends.len() as f64 / window * 60.0;
    let (low, high) = match est {
        Some(e) => {
            let half = e.ci.half_width.max(rpm * closed_loop_floor(c, ok_ends.len()));
            ((rpm - half).max(0.0), rpm + half)
        }
        None => (0.0, rpm * 2.0),
    };

    let mut lat = LatencySet::default();
    let mut tokens_in_window = 0u64;
    let mut estimated = false;
    let mut sched = 0.0;
    let mut latency_sum = 0.0;
    let mut measured = 0usize;
    let mut rows = Vec::new();
    for r in recs {
        let e2e_ms = (r.end - r.start) * 1000.0;
        let ttft_ms = r
            .outcome
            .first_token
            .map(|t| (t - r.outcome.start).as_secs_f64() * 1000.0);
        if let Ok(ok) = &r.outcome.result {
            if r.end >= w && r.end < end {
                tokens_in_window += ok.usage.completion_tokens;
            }
        }
        if r.start < w {
            continue;
        }
        measured += 1;
        sched += r.sched_delay;
        latency_sum += r.end - r.start;
        let (status, error, prompt_tokens, output_tokens) = match &r.outcome.result {
            Ok(ok) => {
                estimated |= ok.usage.estimated;
                lat.e2e.record_ms(e2e_ms);
                if let Some(t) = ttft_ms {
                    lat.ttft.record_ms(t);
                    if let Some(tp) = tpot_ms(e2e_ms, t, ok.usage.completion_tokens) {
                        lat.tpot.record_ms(tp);
                    }
                }
                (
                    "ok".to_string(),
                    String::new(),
                    ok.usage.prompt_tokens,
                    Some(ok.usage.completion_tokens),
                )
            }
            Err(f) => (f.kind.label(), f.message.clone(), None, None),
        };
        rows.push(RequestRow {
            concurrency: c,
            start_ms: offset_ms + r.start * 1000.0,
            latency_ms: e2e_ms,
            ttft_ms,
            prompt_tokens,
            output_tokens,
            status,
            error,
        });
    }
    let q = |h: &crate::stats::latency::Hist, p: f64| h.quantile_ms(p);
    // Client self-check: the engine's own gap between a slot freeing and its next request
    // starting, against the latency it measures. Above 5% (and 1 ms), the client, not the
    // resource, is limiting.
    let mean_sched = if measured > 0 { sched / measured as f64 } else { 0.0 };
    let mean_latency = if measured > 0 {
        latency_sum / measured as f64
    } else {
        0.0
    };
    let client_limited = mean_sched > 0.001 && mean_sched > 0.05 * mean_latency;
    let total = ok_ends.len() as u64 + failed;
    let row = LevelRow {
        concurrency: c,
        duration_s: window,
        requests_ok: ok_ends.len() as u64,
        requests_failed: failed,
        rpm,
        rpm_ci_low: low,
        rpm_ci_high: high,
        rpm_per_gpu: rpm / f64::from(gpus),
        latency_p50_ms: q(&lat.e2e, 0.5).unwrap_or(f64::NAN),
        latency_p90_ms: q(&lat.e2e, 0.9).unwrap_or(f64::NAN),
        latency_p95_ms: q(&lat.e2e, 0.95).unwrap_or(f64::NAN),
        latency_p99_ms: q(&lat.e2e, 0.99).unwrap_or(f64::NAN),
        ttft_p50_ms: q(&lat.ttft, 0.5),
        ttft_p95_ms: q(&lat.ttft, 0.95),
        tpot_p50_ms: q(&lat.tpot, 0.5),
        output_tokens_per_s: tokens_in_window as f64 / window,
        error_rate: if total > 0 { failed as f64 / total as f64 } else { 0.0 },
        client_limited,
    };
    (row, rows, estimated)
}

/// Builds the workload from the sweep flags.
pub fn workload_from(
    w: &WorkloadArgs,
    api: Api,
    field: MaxTokensField,
    stream: bool,
    model: Option<String>,
) -> anyhow::Result<Workload> {
    match &w.input {
        Some(path) => {
            let format = w.format;
            Workload::sampled(
                path,
                format,
                w.sample,
                BodySpec {
                    api,
                    max_tokens: Some(w.max_tokens),
                    field,
                    stream,
                    model,
                },
            )
        }
        None => Ok(Workload::synthetic(
            api,
            w.prompt_tokens,
            w.max_tokens,
            field,
            stream,
            model,
        )),
    }
}

pub async fn run(args: SweepArgs, interrupt: CancellationToken) -> anyhow::Result<ExitStatus> {
    let settings = Settings::from_args(&args.measure, &args.slo, args.gpus, args.endpoint.api)?;
    let stream = !args.measure.no_stream && args.endpoint.api.streams();
    let out: PathBuf = args.out.clone().unwrap_or_else(super::default_report_dir);
    // Input problems surface before any traffic.
    if let Some(p) = &args.workload.input {
        if !p.exists() && p.as_os_str() != "-" {
            return Err(usage_error(format!("--input {} does not exist", p.display()), None));
        }
    }
    let target = Target::open(&args.endpoint, &args.sim, args.gpus).await?;
    let result = async {
        let model = target.model(&args.endpoint).await?;
        let workload = Arc::new(workload_from(
            &args.workload,
            args.endpoint.api,
            args.endpoint.max_tokens_field,
            stream,
            model,
        )?);
        let client = Arc::new(target.client(&args.endpoint, max_level(&settings.levels))?);
        measure(&settings, client, workload, &out, &target, interrupt).await
    }
    .await;
    target.close().await;
    let result = result?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        ReportFormat::Json.exporter().write(&result.summary, &mut stdout)?;
    } else {
        ReportFormat::Table.exporter().write(&result.summary, &mut stdout)?;
    }
    stdout.flush()?;
    ui::info(format!("reports written to {}/", out.display()));
    if result.interrupted {
        return Ok(ExitStatus::Interrupted);
    }
    Ok(ExitStatus::Success)
}

/// The keep-alive pool needs as many connections as the highest level.
pub fn max_level(l: &Levels) -> usize {
    match l {
        Levels::Auto { max } => *max as usize,
        Levels::List(v) => v.iter().copied().max().unwrap_or(1) as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse() {
        assert_eq!(parse_levels("auto", 64).unwrap(), Levels::Auto { max: 64 });
        assert_eq!(parse_levels("1, 2,4", 64).unwrap(), Levels::List(vec![1, 2, 4]));
        assert!(parse_levels("1,0", 64).is_err());
        assert!(parse_levels("x", 64).is_err());
    }

    #[test]
    fn synthetic_prompts_are_unique_and_sized() {
        let w = Workload::synthetic(
            Api::Completions,
            5,
            3,
            MaxTokensField::MaxTokens,
            true,
            Some("m".into()),
        );
        let a: Value = serde_json::from_slice(&w.body(0)).unwrap();
        let b: Value = serde_json::from_slice(&w.body(1)).unwrap();
        assert_ne!(a["prompt"], b["prompt"]);
        assert_eq!(a["prompt"].as_str().unwrap().split_whitespace().count(), 5);
        assert_eq!(a["max_tokens"], 3);
        assert_eq!(a["stream"], true);
        assert_eq!(a["model"], "m");
    }
}
