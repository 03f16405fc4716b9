//! The batch pipeline behind `run` and `auto`: validate the input, open the output (the resume
//! journal), then feed -> queue -> the engine's window -> one decision per attempt -> tally and
//! output. Exactly-once lives here: each input line ends with exactly one final output record;
//! a retry goes back to the queue, never to the output.
//!
//! - [`queue`]: ready jobs and the retry schedule (the engine's [`Source`](crate::engine::Source)).
//! - [`feed`]: the reader thread that turns input lines into request bodies.
//! - [`attempt`]: the pure verdict on one attempt (done, retry after D, stop).
//! - [`tally`]: counts, output records, run-summary.json. [`progress`]: stderr progress.

pub mod attempt;
mod budget;
mod collect;
pub mod feed;
pub mod hold;
pub mod layout;
pub mod progress;
pub mod queue;
mod settings;
pub mod tally;
mod worker;

use crate::api::Api;
use crate::batch::{self, DuplicateCheck, OutputWriter, ReadOptions};
use crate::engine::rate::RateLimiter;
use crate::engine::retry::RetryPolicy;
use crate::engine::{run_window_of, Slot, Stop, Width};
use crate::resource::Lifecycle;
use crate::target::{Endpoint, Target};
use crate::ui::{self, usage_error};
use collect::Collector;
use feed::{FeedNote, FeedSpec};
use progress::Progress;
use queue::{Job, JobSource};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tally::Tally;
use tokio::sync::mpsc;
use tokio::time::Instant;
use worker::{Event, Worker};

pub use settings::{predicted_vs_achieved, Batch, RunOutcome, RunSettings, ShardShare, Tuning};

/// Validation and output state, before any network traffic.
pub struct Prepared {
    writer: OutputWriter,
    done: Option<batch::ResumeState>,
    estimate: Option<u64>,
    /// How the send pass finds the duplicates the first pass found (`--skip-invalid`).
    duplicates: DuplicateCheck,
}

/// What the first pass learnt about the input.
#[derive(Debug, Clone)]
pub struct Validated {
    /// Valid items (None for stdin, which is read once).
    pub items: Option<u64>,
    /// The duplicate-id candidates of a file, for a send pass that skips invalid lines.
    pub duplicates: DuplicateCheck,
}

/// The first pass over the input (every bad line, nothing sent), the resume state and the
/// output writer (which refuses to overwrite without --resume).
pub fn prepare(s: &RunSettings, api: Api) -> anyhow::Result<Prepared> {
    let validated = validate_input(s, api)?;
    open_output(s, api, validated)
}

/// The first pass (streamed): every bad line is reported and nothing is sent, unless
/// `--skip-invalid`. Returns the number of valid items. Stdin can be read only once, so there
/// bad lines are found as they come (None).
pub fn validate_input(s: &RunSettings, api: Api) -> anyhow::Result<Validated> {
    if s.input.as_os_str() == "-" {
        return Ok(Validated {
            items: None,
            duplicates: DuplicateCheck::All,
        });
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
    Ok(Validated {
        items: Some(report.items),
        duplicates: report.duplicates,
    })
}

/// How the send pass finds duplicates: a file's first pass found any already (without
/// --skip-invalid it stopped the run; with it, its candidates let the send pass skip them
/// exactly); stdin had no first pass.
fn send_duplicates(s: &RunSettings, validated: DuplicateCheck) -> DuplicateCheck {
    if s.input.as_os_str() == "-" || s.tuning.skip_invalid {
        validated
    } else {
        DuplicateCheck::Off
    }
}

/// Reads the resume state and opens the output (refusing to overwrite without --resume).
pub fn open_output(s: &RunSettings, api: Api, validated: Validated) -> anyhow::Result<Prepared> {
    let duplicates = send_duplicates(s, validated.duplicates);
    let resuming = s.resume && s.output.exists();
    if resuming {
        layout::check(&s.output, s.shard)?;
    }
    let done = if resuming {
        Some(
            read_resume_state(s, api, &duplicates)
                .map_err(|err| usage_error(format!("cannot resume from {}: {err}", s.output.display()), None))?,
        )
    } else {
        None
    };
    let writer = match &done {
        Some(state) => OutputWriter::resume(&s.output, state),
        None => OutputWriter::create(&s.output),
    }
    .map_err(|err| {
        let exists = err.kind() == std::io::ErrorKind::AlreadyExists;
        usage_error(
            format!("cannot write output {}: {err}", s.output.display()),
            exists.then(|| "pass --resume to continue that run, or choose another --output".to_string()),
        )
    })?;
    layout::record(&s.output, s.shard, done.is_none())?;
    if let Some(state) = &done {
        if state.torn_tail {
            ui::warn(format!(
                "{}: ignored a torn last line (from a crash); its request will be sent again",
                s.output.display()
            ));
        }
        ui::info(format!(
            "resuming: {} requests already answered in {}",
            state.succeeded,
            s.output.display()
        ));
    }
    Ok(Prepared {
        writer,
        done,
        estimate: validated.items,
        duplicates,
    })
}

/// The output's answered ids, joined with the input's lines as the feed will read them (same
/// reader options, so the same item indices): memory flat in the job's size. Stdin is read
/// once, by the feed, so there the answered ids are kept in memory.
fn read_resume_state(s: &RunSettings, api: Api, duplicates: &DuplicateCheck) -> std::io::Result<batch::ResumeState> {
    let spill = match s.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if s.input.as_os_str() == "-" {
        return batch::read_done(&s.output, None, &spill);
    }
    ui::info(format!(
        "resuming: matching the answers in {} with the lines of {}",
        s.output.display(),
        s.input.display()
    ));
    let reader = batch::Reader::open(&s.input, s.format, feed::read_options(api, duplicates.clone()))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    // Bad lines yield no item and no index: the feed skips them the same way.
    let mut items = reader.filter_map(|item| match item {
        Ok(i) => Some(Ok((i.custom_id, i.index))),
        Err(issue) if issue.fatal => Some(Err(std::io::Error::other(issue.to_string()))),
        Err(_) => None,
    });
    batch::read_done(&s.output, Some(&mut items), &spill)
}

/// Switches the resource on, sends the batch, switches it off (also on failure and Ctrl-C).
pub async fn run_on(
    s: &RunSettings,
    e: &Endpoint,
    target: &Target,
    prepared: Prepared,
    interrupt: Stop,
) -> anyhow::Result<RunOutcome> {
    let lifecycle = Lifecycle::new(&s.resource, target)?;
    let result = async {
        lifecycle.on(s.gpus, s.resource.ready_timeout).await?;
        let model = target.model(e).await?;
        let server = target.watch_server(&e.server_metrics, e.scrape_interval).await;
        let batch = Batch {
            settings: s,
            api: e.api,
            field: e.max_tokens_field,
            model,
            // Pooled for the most the run may hold in flight.
            client: Arc::new(target.client(e, s.most_in_flight() as usize)?),
            key_hint: target.key_hint(),
            stop_after_failures: e.stop_after_failures,
            server,
        };
        send_batch(batch, prepared, interrupt).await
    }
    .await;
    lifecycle.off().await;
    result
}

/// Sends every queued line of the input through a window of `concurrency` workers and writes
/// each final outcome; returns when all are answered or the run stops.
pub async fn send_batch(b: Batch<'_>, prepared: Prepared, interrupt: Stop) -> anyhow::Result<RunOutcome> {
    let s = b.settings;
    let Prepared {
        writer,
        done,
        estimate,
        duplicates,
    } = prepared;
    let started_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let (jobs_tx, jobs_rx) = async_channel::bounded::<Vec<Job>>(feed::CHUNKS_QUEUED);
    let (note_tx, note_rx) = mpsc::unbounded_channel::<FeedNote>();
    let stdin = s.input.as_os_str() == "-";
    // The feed runs on its own thread: file I/O blocks, and the bounded channel keeps memory
    // flat however large the input is.
    let reader = feed::spawn(
        FeedSpec {
            input: s.input.clone(),
            format: s.format,
            api: b.api,
            field: b.field,
            model: b.model.clone(),
            max_tokens: s.tuning.max_tokens,
            shard: s.shard,
            done,
            duplicates,
            stop_on_invalid: stdin && !s.tuning.skip_invalid,
            charge: s.tokens_per_minute().is_some(),
        },
        jobs_tx,
        note_tx,
    );
    let source = Arc::new(JobSource::new(jobs_rx));
    let stop = Stop::new();
    let (tx, rx) = mpsc::unbounded_channel::<Event>();
    let retries_used = Arc::new(AtomicU64::new(0));
    let rate_limited = Arc::new(AtomicU64::new(0));
    let retried_after_timeout = Arc::new(AtomicU64::new(0));
    let streak = Arc::new(std::sync::Mutex::new(crate::outcome::Streak::new(
        b.stop_after_failures,
    )));
    let worker = Arc::new(Worker {
        streak: streak.clone(),
        client: b.client.clone(),
        limiter: s.rate().map(|r| Arc::new(RateLimiter::new(r, 1))),
        budget: s.tokens_per_minute().map(|t| Arc::new(budget::TokenBudget::new(t))),
        estimate: Arc::new(budget::TokenEstimate::new()),
        source: source.clone(),
        stop: stop.clone(),
        retries_used: retries_used.clone(),
        rate_limited: rate_limited.clone(),
        retried_after_timeout: retried_after_timeout.clone(),
        policy: RetryPolicy {
            retries: s.tuning.retries,
            base: s.tuning.retry_base,
            max: s.tuning.retry_max,
        },
    });
    let hold = s.hold.map(hold::Hold::new);
    let width = Width::new(s.concurrency as usize, s.most_in_flight() as usize);
    let window = tokio::spawn(run_window_of(
        width.clone(),
        source.clone(),
        // One shared worker: a job clones one `Arc`, not each of the worker's handles.
        move |job: Job, _slot: Slot| Worker::attempt(worker.clone(), job),
        tx,
        stop.clone(),
    ));

    let start = Instant::now();
    let planned_rpm = s.planned_rpm();
    let mut c = Collector {
        tally: Tally::new(start),
        writer,
        output: s.output.clone(),
        progress: Progress::new(estimate, s.concurrency, planned_rpm),
        source,
        stop,
        refused: None,
        input_error: None,
        interrupted: false,
        streak,
        systematic: None,
        hold: hold.map(|h| collect::Holding::new(h, width, start, s.share.is_none())),
        window: s.tuning.completion_window,
        expired: false,
    };
    c.collect(rx, note_rx, &interrupt, &retries_used, b.server.as_ref())
        .await?;
    let _ = window.await;
    c.source.close_feed();
    if !c.interrupted && c.refused.is_none() && c.input_error.is_none() {
        // The feed has sent everything (the window only ends when its channel is closed and
        // drained). After a stop it may be blocked reading stdin: leave it; the process ends.
        let _ = tokio::task::spawn_blocking(move || reader.join()).await;
    }
    c.progress.finish();
    c.finish(
        s,
        &b,
        started_at,
        retries_used.load(Ordering::Relaxed),
        rate_limited.load(Ordering::Relaxed),
        retried_after_timeout.load(Ordering::Relaxed),
    )
}
