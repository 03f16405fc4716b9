//! `sizeup run`: the batch runner. Reads the input as a stream, keeps exactly N requests in
//! flight (the engine's sliding window), retries what is worth retrying, writes one whole
//! output line per request as it finishes, and can resume after a crash.

use super::Target;
use crate::api::Api;
use crate::batch::{self, Format, Item, OutputRecord, OutputWriter, Payload, ReadOptions, Reader};
use crate::cli::{EndpointArgs, RunArgs, RunTuning, SimModelArgs};
use crate::client::{build_body, prepare_body, wants_stream, Client, FailKind, MaxTokensField, Outcome};
use crate::engine::rate::RateLimiter;
use crate::engine::retry::RetryPolicy;
use crate::engine::{run_window, Slot, Source, Stop};
use crate::planner::Plan;
use crate::stats::latency::Hist;
use crate::ui::{self, usage_error, ExitStatus};
use bytes::Bytes;
use rand::Rng;
use serde::Serialize;
use serde_json::Value;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

/// Everything `execute` needs, validated.
pub struct RunSettings {
    pub input: PathBuf,
    pub format: Option<Format>,
    pub output: PathBuf,
    pub summary_path: PathBuf,
    pub concurrency: u32,
    pub plan: Option<Plan>,
    pub resume: bool,
    pub shard: Option<(u64, u64)>,
    pub gpus: u32,
    pub tuning: RunTuning,
}

/// One request of the batch and its attempts so far.
struct Job {
    custom_id: String,
    body: Bytes,
    stream: bool,
    attempt: u32,
}

/// The workers' shared source: fresh jobs from the reader thread (in chunks, so the reader
/// wakes once per chunk rather than once per job), and failed ones waiting for their retry
/// time. It ends only when the reader is done, no retry waits, and no job is in flight (a job
/// in flight may still come back for a retry).
struct JobSource {
    fresh: async_channel::Receiver<Vec<Job>>,
    queue: Mutex<Queue>,
    in_flight: AtomicUsize,
    changed: Notify,
}

#[derive(Default)]
struct Queue {
    /// Jobs of the chunks taken from the reader, in input order.
    ready: VecDeque<Job>,
    retries: BinaryHeap<Reverse<(Instant, u64, JobBox)>>,
    seq: u64,
}

/// Orders retries by time only.
struct JobBox(Job);
impl PartialEq for JobBox {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for JobBox {}
impl PartialOrd for JobBox {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for JobBox {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

enum Take {
    Job(Job),
    /// Nothing ready; the next retry is due then (None: no retry waits).
    Wait(Option<Instant>),
}

impl JobSource {
    fn new(fresh: async_channel::Receiver<Vec<Job>>) -> JobSource {
        JobSource {
            fresh,
            queue: Mutex::new(Queue::default()),
            in_flight: AtomicUsize::new(0),
            changed: Notify::new(),
        }
    }

    fn retry_later(&self, job: Job, at: Instant) {
        {
            let mut q = self.queue.lock().expect("job queue lock");
            let n = q.seq;
            q.seq += 1;
            q.retries.push(Reverse((at, n, JobBox(job))));
        }
        // After the push: whoever sees in_flight drop also sees the retry.
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    fn finished(&self) {
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            // Idle workers wait for this to decide whether the work is over.
            self.changed.notify_waiters();
        }
    }

    /// A due retry first (it has waited longest), then the next fresh job.
    fn take(&self) -> Take {
        let mut q = self.queue.lock().expect("job queue lock");
        let due = q.retries.peek().map(|Reverse((at, _, _))| *at);
        let job = match due {
            Some(at) if at <= Instant::now() => q.retries.pop().map(|Reverse((_, _, JobBox(job)))| job),
            _ => q.ready.pop_front(),
        };
        match job {
            Some(job) => {
                self.in_flight.fetch_add(1, Ordering::SeqCst);
                Take::Job(job)
            }
            None => Take::Wait(due),
        }
    }

    /// With the reader done: true when no job is ready, waiting or in flight. Read under the
    /// queue lock, so a retry queued just before its job left `in_flight` is seen.
    fn all_done(&self) -> bool {
        let q = self.queue.lock().expect("job queue lock");
        q.ready.is_empty() && q.retries.is_empty() && self.in_flight.load(Ordering::SeqCst) == 0
    }

    fn add_chunk(&self, chunk: Vec<Job>) {
        self.queue.lock().expect("job queue lock").ready.extend(chunk);
        // Other idle workers wait on the channel or on this: a chunk holds work for them too.
        self.changed.notify_waiters();
    }
}

impl Source for JobSource {
    type Item = Job;

    async fn next(&self) -> Option<Job> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let due = match self.take() {
                Take::Job(job) => return Some(job),
                Take::Wait(due) => due,
            };
            match self.fresh.try_recv() {
                Ok(chunk) => {
                    self.add_chunk(chunk);
                    continue;
                }
                Err(async_channel::TryRecvError::Closed) => {
                    if self.all_done() {
                        self.changed.notify_waiters();
                        return None;
                    }
                }
                Err(async_channel::TryRecvError::Empty) => {}
            }
            let sleep_to = due.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                chunk = self.fresh.recv(), if !self.fresh.is_closed() || !self.fresh.is_empty() => {
                    if let Ok(chunk) = chunk {
                        self.add_chunk(chunk);
                    }
                }
                _ = tokio::time::sleep_until(sleep_to) => {}
                _ = &mut changed => {}
            }
        }
    }
}

/// What a worker reports for one attempt.
enum Event {
    /// Final: succeeded, or failed for good.
    Done {
        custom_id: String,
        outcome: Outcome,
        attempts: u32,
    },
    /// Failed, queued for another try.
    Retried,
    /// 401/403: the credentials are refused; nothing more must be sent.
    Refused { custom_id: String, outcome: Outcome },
}

/// Messages from the reader thread to the collector.
enum ReaderNote {
    Invalid {
        line: u64,
        custom_id: Option<String>,
        message: String,
    },
    Done {
        read: u64,
        queued: u64,
        skipped_done: u64,
        other_shards: u64,
    },
    Failed(String),
}

#[derive(Serialize)]
struct RunSummary {
    input: String,
    output: String,
    requests_total: u64,
    requests_ok: u64,
    requests_failed: u64,
    /// Requests that needed at least one retry.
    requests_retried: u64,
    /// Retry attempts in all.
    retries: u64,
    /// Streamed requests re-sent at once because the server had silently closed the kept-alive
    /// connection they went out on (llama.cpp does after every stream); never answered twice.
    stale_connection_resends: u64,
    skipped_already_done: u64,
    skipped_invalid: u64,
    skipped_other_shards: u64,
    /// Requests not finished (interrupted or stopped): `--resume` sends them.
    not_finished: u64,
    concurrency: u32,
    planned_rpm: Option<f64>,
    achieved_rpm: f64,
    wall_time_s: f64,
    predicted_duration_s: Option<f64>,
    achieved_duration_s: f64,
    latency_p50_ms: Option<f64>,
    latency_p90_ms: Option<f64>,
    latency_p95_ms: Option<f64>,
    latency_p99_ms: Option<f64>,
    interrupted: bool,
    stopped_reason: Option<String>,
    started_at: String,
    sizeup_version: String,
}

/// `--shard K/N` or `auto` (JOB_COMPLETION_INDEX with JOB_COMPLETION_COUNT or the array size,
/// or SLURM_ARRAY_TASK_ID with SLURM_ARRAY_TASK_COUNT).
pub fn parse_shard_flag(s: &str) -> anyhow::Result<(u64, u64)> {
    if s.trim() == "auto" {
        let get = |k: &str| std::env::var(k).ok().and_then(|v| v.trim().parse::<u64>().ok());
        let pair = match (get("JOB_COMPLETION_INDEX"), get("SLURM_ARRAY_TASK_ID")) {
            (Some(k), _) => get("JOB_COMPLETION_COUNT")
                .or_else(|| get("SIZEUP_SHARDS"))
                .map(|n| (k, n)),
            (None, Some(k)) => {
                let min = get("SLURM_ARRAY_TASK_MIN").unwrap_or(0);
                get("SLURM_ARRAY_TASK_COUNT")
                    .or_else(|| get("SIZEUP_SHARDS"))
                    .map(|n| (k.saturating_sub(min), n))
            }
            (None, None) => None,
        };
        return match pair {
            Some((k, n)) if n > 0 && k < n => Ok((k, n)),
            _ => Err(usage_error(
                "--shard auto: no shard index and count found in the environment",
                Some("set JOB_COMPLETION_INDEX and JOB_COMPLETION_COUNT (Kubernetes Indexed Job), or SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT; or give --shard K/N".into()),
            )),
        };
    }
    batch::parse_shard(s).map_err(|e| {
        usage_error(
            format!("--shard: {e}"),
            Some("use K/N with 0 <= K < N, e.g. --shard 0/4".into()),
        )
    })
}

fn default_output(input: &Path) -> PathBuf {
    if input.as_os_str() == "-" {
        return PathBuf::from("stdin.output.jsonl");
    }
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "batch".into());
    input.with_file_name(format!("{stem}.output.jsonl"))
}

pub fn read_plan(path: &Path) -> anyhow::Result<Plan> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage_error(format!("cannot read plan {}: {e}", path.display()), None))?;
    let plan: Plan = serde_json::from_str(&text).map_err(|e| {
        usage_error(
            format!("{}:{}: not a sizeup plan: {e}", path.display(), e.line()),
            Some("make one with `sizeup plan`".into()),
        )
    })?;
    if plan.total_concurrency == 0 {
        return Err(usage_error(
            format!("{}: total_concurrency must be at least 1", path.display()),
            None,
        ));
    }
    Ok(plan)
}

impl RunSettings {
    pub fn from_args(a: &RunArgs) -> anyhow::Result<RunSettings> {
        let plan = a.plan.as_deref().map(read_plan).transpose()?;
        let concurrency = match (a.concurrency, &plan) {
            (Some(0), _) => return Err(usage_error("--concurrency must be at least 1", None)),
            (Some(c), _) => c,
            (None, Some(p)) => p.total_concurrency,
            (None, None) => return Err(usage_error("give --concurrency N or --plan plan.json", None)),
        };
        let output = a.output.clone().unwrap_or_else(|| default_output(&a.input));
        let summary_path = a
            .summary
            .clone()
            .unwrap_or_else(|| output.with_file_name("run-summary.json"));
        Ok(RunSettings {
            input: a.input.clone(),
            format: a.tuning.format,
            output,
            summary_path,
            concurrency,
            gpus: a.gpus.or(plan.as_ref().map(|p| p.gpus)).unwrap_or(1),
            plan,
            resume: a.resume,
            shard: a.shard.as_deref().map(parse_shard_flag).transpose()?,
            tuning: a.tuning.clone(),
        })
    }
}

fn validate_tuning(t: &RunTuning) -> anyhow::Result<()> {
    if let Some(r) = t.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err(usage_error(
                format!("--rate must be a positive number of requests per minute, got {r}"),
                None,
            ));
        }
    }
    if t.max_tokens == Some(0) {
        return Err(usage_error("--max-tokens must be at least 1", None));
    }
    Ok(())
}

pub async fn run(args: RunArgs, interrupt: Stop) -> anyhow::Result<ExitStatus> {
    let settings = RunSettings::from_args(&args)?;
    execute(settings, &args.endpoint, &args.sim, interrupt)
        .await
        .map(|r| r.status)
}

/// What `execute` reports back to `auto`.
pub struct RunOutcome {
    pub status: ExitStatus,
    pub wall_time_s: f64,
    pub achieved_rpm: f64,
    pub requests: u64,
}

/// Runs the batch: validate, resume, switch the resource on, send, write, switch it off.
pub async fn execute(
    s: RunSettings,
    e: &EndpointArgs,
    sim: &SimModelArgs,
    interrupt: Stop,
) -> anyhow::Result<RunOutcome> {
    let prepared = prepare(&s, e.api)?;
    // With `--resource sim` and no endpoint, the in-process resource starts off, so the run
    // really switches it on (and off).
    let start_off = s.tuning.resource.is_some() && e.endpoint.is_none();
    let target = Target::open_with(e, sim, s.gpus, start_off).await?;
    let result = execute_on(&s, e, &target, prepared, interrupt).await;
    target.close().await;
    result
}

/// Validation and output state, before any network traffic.
pub struct Prepared {
    writer: OutputWriter,
    done: Option<batch::ResumeState>,
    estimate: Option<u64>,
}

/// The first pass over the input (every bad line, nothing sent), the resume state and the
/// output writer (which refuses to overwrite without --resume).
pub fn prepare(s: &RunSettings, api: Api) -> anyhow::Result<Prepared> {
    let estimate = validate_input(s, api)?;
    open_output(s, estimate)
}

/// The first pass (streamed): every bad line is reported and nothing is sent, unless
/// `--skip-invalid`. Returns the number of valid items. Stdin can be read only once, so there
/// bad lines are found as they come (None).
pub fn validate_input(s: &RunSettings, api: Api) -> anyhow::Result<Option<u64>> {
    validate_tuning(&s.tuning)?;
    if s.input.as_os_str() == "-" {
        return Ok(None);
    }
    if !s.input.exists() {
        return Err(usage_error(
            format!("--input {} does not exist", s.input.display()),
            None,
        ));
    }
    let report = batch::validate(&s.input, s.format, &ReadOptions::new(api), 20)
        .map_err(|e| usage_error(e.to_string(), None))?;
    if report.issue_count > 0 && !s.tuning.skip_invalid {
        for issue in &report.issues {
            ui::report_error(&anyhow::anyhow!("{issue}"));
        }
        let more = report.issue_count.saturating_sub(report.issues.len() as u64);
        return Err(usage_error(
            format!(
                "{}: {} invalid line{}{}; nothing was sent",
                s.input.display(),
                report.issue_count,
                if report.issue_count == 1 { "" } else { "s" },
                if more > 0 {
                    format!(" ({more} more not shown)")
                } else {
                    String::new()
                }
            ),
            Some("fix them, or pass --skip-invalid to send the rest and list the bad lines in the errors file".into()),
        ));
    }
    Ok(Some(report.items))
}

/// Reads the resume state and opens the output (refusing to overwrite without --resume).
pub fn open_output(s: &RunSettings, estimate: Option<u64>) -> anyhow::Result<Prepared> {
    let done = if s.resume && s.output.exists() {
        Some(
            batch::read_done(&s.output)
                .map_err(|err| usage_error(format!("cannot resume from {}: {err}", s.output.display()), None))?,
        )
    } else {
        None
    };
    let writer = match &done {
        Some(state) => OutputWriter::resume(&s.output, state.lines),
        None => OutputWriter::create(&s.output),
    }
    .map_err(|err| {
        let exists = err.kind() == std::io::ErrorKind::AlreadyExists;
        usage_error(
            format!("cannot write output {}: {err}", s.output.display()),
            exists.then(|| "pass --resume to continue that run, or choose another --output".to_string()),
        )
    })?;
    if let Some(state) = &done {
        if state.torn_tail {
            ui::warn(format!(
                "{}: ignored a torn last line (from a crash); its request will be sent again",
                s.output.display()
            ));
        }
        ui::info(format!(
            "resuming: {} requests already answered in {}",
            state.succeeded.len(),
            s.output.display()
        ));
    }
    Ok(Prepared { writer, done, estimate })
}

/// Switches the resource on, sends the batch, switches it off (also on failure and Ctrl-C).
pub async fn execute_on(
    s: &RunSettings,
    e: &EndpointArgs,
    target: &Target,
    prepared: Prepared,
    interrupt: Stop,
) -> anyhow::Result<RunOutcome> {
    let Prepared {
        mut writer,
        done,
        estimate,
    } = prepared;
    let lifecycle = Lifecycle::new(&s.tuning, target)?;
    let result = async {
        lifecycle.on(s.gpus, s.tuning.ready_timeout).await?;
        let model = target.model(e).await?;
        let client = Arc::new(target.client(e, s.concurrency as usize)?);
        send_all(
            s,
            e.api,
            e.max_tokens_field,
            model,
            client,
            &mut writer,
            done,
            estimate,
            target,
            interrupt,
        )
        .await
    }
    .await;
    lifecycle.off().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn send_all(
    s: &RunSettings,
    api: Api,
    field: MaxTokensField,
    model: Option<String>,
    client: Arc<Client>,
    writer: &mut OutputWriter,
    done: Option<batch::ResumeState>,
    estimate: Option<u64>,
    target: &Target,
    interrupt: Stop,
) -> anyhow::Result<RunOutcome> {
    let started_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    // Up to 16 chunks of CHUNK jobs wait for the workers: memory stays flat in input size.
    const CHUNK: usize = 256;
    let (fresh_tx, fresh_rx) = async_channel::bounded::<Vec<Job>>(16);
    let (note_tx, mut note_rx) = mpsc::unbounded_channel::<ReaderNote>();
    let stdin = s.input.as_os_str() == "-";

    // The reader runs on its own thread: file I/O blocks, and the bounded channel keeps memory
    // flat however large the input is.
    let reader = {
        let (input, format, shard, max_tokens) = (s.input.clone(), s.format, s.shard, s.tuning.max_tokens);
        // The first pass checked a file for duplicate ids already; stdin had no first pass, and
        // with --skip-invalid the duplicates it found must be skipped here too.
        let opts = ReadOptions {
            check_duplicates: stdin || s.tuning.skip_invalid,
            ..ReadOptions::new(api)
        };
        let model = model.clone();
        let stop_on_invalid = !s.tuning.skip_invalid;
        std::thread::spawn(move || {
            let reader = match Reader::open(&input, format, opts) {
                Ok(r) => r,
                Err(err) => {
                    let _ = note_tx.send(ReaderNote::Failed(err.to_string()));
                    return;
                }
            };
            let (mut read, mut queued, mut skipped_done, mut other) = (0u64, 0u64, 0u64, 0u64);
            let mut chunk = Vec::with_capacity(CHUNK);
            for item in reader {
                let item: Item = match item {
                    Ok(i) => i,
                    Err(issue) => {
                        if issue.fatal || (stdin && stop_on_invalid) {
                            let _ = note_tx.send(ReaderNote::Failed(issue.to_string()));
                            return;
                        }
                        let _ = note_tx.send(ReaderNote::Invalid {
                            line: issue.line,
                            custom_id: None,
                            message: issue.to_string(),
                        });
                        continue;
                    }
                };
                read += 1;
                if !batch::in_shard(item.index, shard) {
                    other += 1;
                    continue;
                }
                if done.as_ref().is_some_and(|d| d.is_done(&item.custom_id)) {
                    skipped_done += 1;
                    continue;
                }
                let mut body = match item.body {
                    Payload::Body(v) => v,
                    Payload::Prompt { prompt, .. } => build_body(api, model.as_deref(), &prompt, max_tokens, field),
                };
                prepare_body(&mut body, model.as_deref(), None);
                let stream = wants_stream(&body);
                let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
                chunk.push(Job {
                    custom_id: item.custom_id,
                    body,
                    stream,
                    attempt: 0,
                });
                queued += 1;
                if chunk.len() >= CHUNK && fresh_tx.send_blocking(std::mem::take(&mut chunk)).is_err() {
                    break; // the run stopped
                }
            }
            if !chunk.is_empty() {
                let _ = fresh_tx.send_blocking(chunk);
            }
            let _ = note_tx.send(ReaderNote::Done {
                read,
                queued,
                skipped_done,
                other_shards: other,
            });
        })
    };

    let source = Arc::new(JobSource::new(fresh_rx));
    let policy = RetryPolicy {
        retries: s.tuning.retries,
        base: s.tuning.retry_base,
        max: s.tuning.retry_max,
    };
    let limiter = s.tuning.rate.map(|r| Arc::new(RateLimiter::new(r, 1)));
    let stop = Stop::new();
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let retries_used = Arc::new(AtomicU64::new(0));
    let window = {
        let (source, client, stop_refused, retries_used) =
            (source.clone(), client.clone(), stop.clone(), retries_used.clone());
        let src = source.clone();
        tokio::spawn(run_window(
            s.concurrency as usize,
            source,
            move |job: Job, _slot: Slot| {
                let (client, limiter, src, stop_refused, retries_used) = (
                    client.clone(),
                    limiter.clone(),
                    src.clone(),
                    stop_refused.clone(),
                    retries_used.clone(),
                );
                async move {
                    if let Some(l) = &limiter {
                        l.acquire().await;
                    }
                    if stop_refused.drain.is_cancelled() {
                        // Credentials were refused while this job waited: do not send it.
                        src.finished();
                        return Event::Retried;
                    }
                    let outcome = client.send(job.body.clone(), job.stream, true).await;
                    match &outcome.result {
                        Ok(_) => {
                            src.finished();
                            Event::Done {
                                custom_id: job.custom_id,
                                outcome,
                                attempts: job.attempt + 1,
                            }
                        }
                        Err(f) if matches!(f.kind, FailKind::Http(401 | 403)) => {
                            stop_refused.drain.cancel();
                            src.finished();
                            Event::Refused {
                                custom_id: job.custom_id,
                                outcome,
                            }
                        }
                        Err(f) if f.kind.retryable() && job.attempt < policy.retries => {
                            let u: f64 = rand::thread_rng().gen();
                            let wait = policy.delay(job.attempt + 1, u, f.retry_after);
                            retries_used.fetch_add(1, Ordering::Relaxed);
                            src.retry_later(
                                Job {
                                    attempt: job.attempt + 1,
                                    ..job
                                },
                                Instant::now() + wait,
                            );
                            Event::Retried
                        }
                        Err(_) => {
                            src.finished();
                            Event::Done {
                                custom_id: job.custom_id,
                                outcome,
                                attempts: job.attempt + 1,
                            }
                        }
                    }
                }
            },
            tx,
            stop.clone(),
        ))
    };

    let start = Instant::now();
    let mut progress = Progress::new(
        estimate,
        s.concurrency,
        s.plan.as_ref().map(|p| p.expected_rpm).or(s.tuning.rate),
    );
    let (mut ok, mut failed, mut retried_requests, mut skipped_invalid) = (0u64, 0u64, 0u64, 0u64);
    let mut reader_stats: Option<(u64, u64, u64, u64)> = None;
    let mut latency = Hist::new();
    let mut refused: Option<String> = None;
    let mut input_error: Option<String> = None;
    let mut interrupted = false;
    let mut last_finish = start;
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let mut events_open = true;
    let mut events = Vec::with_capacity(256);
    let mut notes_open = true;
    while events_open {
        tokio::select! {
            // Every event that arrived meanwhile, in one wake-up.
            n = rx.recv_many(&mut events, 256) => {
                if n == 0 {
                    events_open = false;
                }
                for ev in events.drain(..) {
                    match ev {
                        Event::Retried => progress.retries = retries_used.load(Ordering::Relaxed),
                        Event::Done { custom_id, outcome, attempts } => {
                            last_finish = Instant::now();
                            if attempts > 1 {
                                retried_requests += 1;
                            }
                            if outcome.is_ok() {
                                ok += 1;
                                latency.record_ms(outcome.latency().as_secs_f64() * 1000.0);
                            } else {
                                failed += 1;
                            }
                            let rec = output_record(custom_id, outcome);
                            writer.write_result(&rec).map_err(|err| anyhow::anyhow!("cannot write {}: {err}", s.output.display()))?;
                        }
                        Event::Refused { custom_id, outcome } => {
                            failed += 1;
                            let msg = outcome.result.as_ref().err().map(|f| f.message.clone()).unwrap_or_default();
                            writer.write_result(&output_record(custom_id, outcome)).map_err(|err| anyhow::anyhow!("cannot write {}: {err}", s.output.display()))?;
                            if refused.is_none() {
                                refused = Some(msg);
                                fresh_close(&source);
                            }
                        }
                    }
                }
                progress.update(ok, failed);
            }
            note = note_rx.recv(), if notes_open => match note {
                None => notes_open = false,
                Some(ReaderNote::Invalid { line, custom_id, message }) => {
                    skipped_invalid += 1;
                    ui::warn(format!("skipped invalid line: {message}"));
                    writer.write_invalid(line, custom_id.as_deref(), &message).map_err(|err| anyhow::anyhow!("cannot write errors file: {err}"))?;
                }
                Some(ReaderNote::Failed(message)) => {
                    input_error = Some(message);
                    fresh_close(&source);
                    stop.drain.cancel();
                }
                Some(ReaderNote::Done { read, queued, skipped_done, other_shards }) => {
                    reader_stats = Some((read, queued, skipped_done, other_shards));
                    progress.set_total(queued);
                }
            },
            _ = interrupt.drain.cancelled(), if !interrupted => {
                interrupted = true;
                ui::info("interrupted: finishing the requests in flight (Ctrl-C again abandons them)");
                fresh_close(&source);
                stop.drain.cancel();
            }
            _ = interrupt.abandon.cancelled(), if interrupted && !stop.abandon.is_cancelled() => {
                stop.abandon.cancel();
            }
            _ = ticker.tick() => progress.tick(start, retries_used.load(Ordering::Relaxed)),
        }
    }
    let _ = window.await;
    fresh_close(&source);
    if !interrupted && refused.is_none() && input_error.is_none() {
        // The reader has sent everything (the window only ends when its channel is closed and
        // drained). After a stop it may be blocked reading stdin: leave it; the process ends.
        let _ = tokio::task::spawn_blocking(move || reader.join()).await;
    }
    while let Ok(note) = note_rx.try_recv() {
        if let ReaderNote::Done {
            read,
            queued,
            skipped_done,
            other_shards,
        } = note
        {
            reader_stats = Some((read, queued, skipped_done, other_shards));
        }
    }
    progress.finish();

    let wall = (last_finish - start).as_secs_f64().max(1e-9);
    let (_, queued, skipped_done, other_shards) = reader_stats.unwrap_or((0, ok + failed, 0, 0));
    // Jobs waiting in the retry queue are among these: queued but never final.
    let not_finished = queued.saturating_sub(ok + failed);
    let achieved_rpm = ok as f64 / wall * 60.0;
    let predicted = s
        .plan
        .as_ref()
        .filter(|p| p.expected_rpm > 0.0)
        .map(|p| queued as f64 / p.expected_rpm * 60.0);
    let summary = RunSummary {
        input: s.input.display().to_string(),
        output: s.output.display().to_string(),
        requests_total: queued,
        requests_ok: ok,
        requests_failed: failed,
        requests_retried: retried_requests,
        retries: retries_used.load(Ordering::Relaxed),
        stale_connection_resends: client.stale_retries(),
        skipped_already_done: skipped_done,
        skipped_invalid,
        skipped_other_shards: other_shards,
        not_finished,
        concurrency: s.concurrency,
        planned_rpm: s.plan.as_ref().map(|p| p.expected_rpm).or(s.tuning.rate),
        achieved_rpm,
        wall_time_s: wall,
        predicted_duration_s: predicted,
        achieved_duration_s: wall,
        latency_p50_ms: latency.quantile_ms(0.5),
        latency_p90_ms: latency.quantile_ms(0.9),
        latency_p95_ms: latency.quantile_ms(0.95),
        latency_p99_ms: latency.quantile_ms(0.99),
        interrupted,
        stopped_reason: refused.clone().or(input_error.clone()),
        started_at,
        sizeup_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    if let Some(dir) = s.summary_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        super::ensure_dir(dir)?;
    }
    std::fs::write(&s.summary_path, serde_json::to_string_pretty(&summary)? + "\n")
        .map_err(|err| anyhow::anyhow!("cannot write {}: {err}", s.summary_path.display()))?;

    let mut line = format!(
        "done: {ok} ok, {failed} failed, {} retries, {not_finished} not finished, {} RPM over {:.1}s",
        summary.retries,
        ui::thousands(achieved_rpm),
        wall
    );
    if let Some(p) = predicted {
        line.push_str(&format!(
            " (predicted {p:.1}s, achieved/predicted {:.2})",
            wall / p.max(1e-9)
        ));
    }
    ui::info(line);
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
    };
    if let Some(msg) = refused {
        return Err(ui::unusable_error(
            format!("the endpoint refused the credentials ({msg}); stopped sending"),
            Some(target.key_hint()),
        ));
    }
    if let Some(msg) = input_error {
        return Err(usage_error(
            msg,
            Some("fix the input; --resume continues where this run stopped".into()),
        ));
    }
    if interrupted {
        ui::hint_line("run the same command with --resume to send the rest");
        return Ok(outcome(ExitStatus::Interrupted));
    }
    if failed > 0 || not_finished > 0 {
        ui::hint_line(format!(
            "failures are listed in {}; --resume retries them",
            writer.errors_path().display()
        ));
        return Ok(outcome(ExitStatus::Failure));
    }
    Ok(outcome(ExitStatus::Success))
}

/// Stops the reader feeding new jobs (it sees the closed channel and ends).
fn fresh_close(source: &JobSource) {
    source.fresh.close();
    source.changed.notify_waiters();
}

/// The output line of a finished request.
fn output_record(custom_id: String, outcome: Outcome) -> OutputRecord {
    match outcome.result {
        Ok(ok) => OutputRecord {
            custom_id,
            status_code: Some(ok.status),
            request_id: ok.request_id,
            body: ok.body,
            error: None,
        },
        Err(f) => {
            let status = match f.kind {
                FailKind::Http(code) => Some(code),
                _ => None,
            };
            let code = match f.kind {
                FailKind::Http(c) => format!("http_{c}"),
                other => other.label(),
            };
            OutputRecord {
                custom_id,
                status_code: status,
                request_id: None,
                body: f.body.as_ref().and_then(|b| serde_json::value::to_raw_value(b).ok()),
                error: Some((code, f.message)),
            }
        }
    }
}

/// Progress on stderr: a bar on a terminal, a plain line every few seconds otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: Option<u64>,
    done: u64,
    failed: u64,
    retries: u64,
    planned_rpm: Option<f64>,
    concurrency: u32,
    last_line: f64,
    recent: std::collections::VecDeque<(Instant, u64)>,
}

impl Progress {
    fn new(total: Option<u64>, concurrency: u32, planned_rpm: Option<f64>) -> Progress {
        let bar = (ui::stderr_is_tty() && !ui::quiet()).then(|| {
            let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Progress {
            bar,
            total,
            done: 0,
            failed: 0,
            retries: 0,
            planned_rpm,
            concurrency,
            last_line: 0.0,
            recent: Default::default(),
        }
    }

    fn set_total(&mut self, total: u64) {
        self.total = Some(total);
        if let Some(b) = &self.bar {
            b.set_length(total);
        }
    }

    fn update(&mut self, ok: u64, failed: u64) {
        self.done = ok + failed;
        self.failed = failed;
        if let Some(b) = &self.bar {
            b.set_position(self.done);
        }
    }

    /// RPM over the last ~10 s.
    fn rpm_now(&mut self) -> f64 {
        let now = Instant::now();
        self.recent.push_back((now, self.done));
        while self.recent.len() > 2 && now - self.recent[0].0 > Duration::from_secs(10) {
            self.recent.pop_front();
        }
        let (t0, d0) = self.recent[0];
        let dt = (now - t0).as_secs_f64();
        if dt > 0.0 {
            (self.done - d0) as f64 / dt * 60.0
        } else {
            0.0
        }
    }

    fn tick(&mut self, start: Instant, retries: u64) {
        self.retries = retries;
        let rpm = self.rpm_now();
        let planned = self
            .planned_rpm
            .map_or(String::new(), |p| format!(" / {} planned", ui::thousands(p)));
        let msg = format!(
            "{} RPM{planned}, {} failed, {} retries, {} in flight max",
            ui::thousands(rpm),
            self.failed,
            self.retries,
            self.concurrency
        );
        if let Some(b) = &self.bar {
            b.set_message(msg);
            b.tick();
            return;
        }
        let elapsed = (Instant::now() - start).as_secs_f64();
        if ui::quiet() || elapsed - self.last_line < 5.0 {
            return;
        }
        self.last_line = elapsed;
        let total = self.total.map_or("?".to_string(), |t| t.to_string());
        let eta = match self.total {
            Some(t) if rpm > 0.0 && t >= self.done => format!(", ETA {:.0}s", (t - self.done) as f64 / rpm * 60.0),
            _ => String::new(),
        };
        ui::info(format!("progress: {}/{total} done, {msg}{eta}", self.done));
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Switching the resource on before the batch and off after it.
pub(super) enum Lifecycle {
    None,
    /// The simulated resource's API: POST /resource.
    Sim {
        base: String,
        key: Option<crate::secret::Secret>,
    },
    Hooks {
        on: Option<String>,
        off: Option<String>,
        ready_url: Option<String>,
    },
}

impl Lifecycle {
    pub(super) fn new(t: &RunTuning, target: &Target) -> anyhow::Result<Lifecycle> {
        if t.resource.is_some() {
            let base = crate::client::base_url(&target.endpoint)
                .map(|u| u.to_string().trim_end_matches('/').to_string())
                .ok_or_else(|| usage_error("--resource sim needs an http(s) endpoint", None))?;
            return Ok(Lifecycle::Sim {
                base,
                key: target.key.as_ref().map(|(k, _)| k.clone()),
            });
        }
        if t.resource_on.is_some() || t.resource_off.is_some() || t.ready_url.is_some() {
            return Ok(Lifecycle::Hooks {
                on: t.resource_on.clone(),
                off: t.resource_off.clone(),
                ready_url: t.ready_url.clone(),
            });
        }
        Ok(Lifecycle::None)
    }

    pub(super) async fn on(&self, gpus: u32, ready_timeout: Duration) -> anyhow::Result<()> {
        match self {
            Lifecycle::None => Ok(()),
            Lifecycle::Sim { base, key } => {
                ui::info(format!("switching the resource on with {gpus} GPUs"));
                post_resource(base, key.as_ref(), &serde_json::json!({"state": "on", "gpus": gpus})).await?;
                wait_ready(&format!("{base}/health"), ready_timeout).await
            }
            Lifecycle::Hooks { on, ready_url, .. } => {
                if let Some(cmd) = on {
                    run_hook(cmd, gpus, "--resource-on").await?;
                }
                if let Some(url) = ready_url {
                    wait_ready(url, ready_timeout).await?;
                }
                Ok(())
            }
        }
    }

    /// Best effort: a failure to switch off is reported, never hidden, never fatal.
    pub(super) async fn off(&self) {
        let result = match self {
            Lifecycle::None => Ok(()),
            Lifecycle::Sim { base, key } => {
                ui::info("switching the resource off");
                post_resource(base, key.as_ref(), &serde_json::json!({"state": "off"})).await
            }
            Lifecycle::Hooks { off: Some(cmd), .. } => run_hook(cmd, 0, "--resource-off").await,
            Lifecycle::Hooks { .. } => Ok(()),
        };
        if let Err(err) = result {
            ui::warn(format!(
                "could not switch the resource off: {err:#}; switch it off by hand to stop paying for it"
            ));
        }
    }
}

/// `POST {base}/resource` of the simulated resource's API.
pub(super) async fn post_resource(base: &str, key: Option<&crate::secret::Secret>, body: &Value) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let mut req = http
        .post(format!("{base}/resource"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string());
    if let Some(k) = key {
        req = req.bearer_auth(k.expose());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("POST /resource failed: {}", e.without_url()))?;
    if !resp.status().is_success() {
        anyhow::bail!("POST /resource answered {}", resp.status());
    }
    Ok(())
}

/// Polls `url` until it answers 200, or fails after `timeout`.
async fn wait_ready(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(50);
    loop {
        if let Ok(resp) = http.get(url).send().await {
            if resp.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() + delay > deadline {
            return Err(ui::unusable_error(
                format!(
                    "{} did not answer 200 within {}",
                    crate::client::redact_url(url),
                    humantime::format_duration(timeout)
                ),
                Some("raise --ready-timeout, or check that the resource came up".into()),
            ));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

async fn run_hook(cmd: &str, gpus: u32, flag: &str) -> anyhow::Result<()> {
    let cmd = cmd.replace("{gpus}", &gpus.to_string());
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .map_err(|e| anyhow::anyhow!("{flag}: cannot start `sh`: {e}"))?;
    if !status.success() {
        return Err(ui::unusable_error(format!("{flag} command failed ({status})"), None));
    }
    Ok(())
}
