//! The feed: a thread that streams the input, skips what is done or in another shard, builds
//! request bodies and hands them to the workers in chunks over a bounded channel, so memory
//! stays flat whatever the input's size and the workers wake once per chunk, not per job.

use super::queue::{Charge, Job};
use super::tally::FeedCounts;
use crate::api::Api;
use crate::batch::{self, DuplicateCheck, Format, Item, Payload, ReadOptions, Reader, ResumeState};
use crate::client::{build_body, prepare_body, wants_stream, MaxTokensField};
use bytes::Bytes;
use std::path::PathBuf;
use tokio::sync::mpsc;

/// Jobs per chunk; up to [`CHUNKS_QUEUED`] chunks wait for the workers.
pub const CHUNK: usize = 256;
pub const CHUNKS_QUEUED: usize = 16;

/// What the feed tells the collector besides the jobs.
#[derive(Debug)]
pub enum FeedNote {
    /// A bad line skipped (with `--skip-invalid`, or found late on stdin).
    Invalid {
        line: u64,
        custom_id: Option<String>,
        message: String,
    },
    /// The whole input is read.
    Done(FeedCounts),
    /// The input cannot be read on (or a bad line on stdin without `--skip-invalid`).
    Failed(String),
}

/// How the feed turns input items into request bodies, and which it keeps.
pub struct FeedSpec {
    pub input: PathBuf,
    pub format: Option<Format>,
    pub api: Api,
    pub field: MaxTokensField,
    pub model: Option<String>,
    pub max_tokens: Option<u32>,
    pub shard: Option<(u64, u64)>,
    /// Ids already answered (`--resume`).
    pub done: Option<ResumeState>,
    /// The first pass checked a file for duplicate ids already (Off); stdin had no first pass
    /// (All), and with --skip-invalid the duplicates it found must be skipped here too (the
    /// first pass's candidates).
    pub duplicates: DuplicateCheck,
    /// A bad line ends the run (stdin without `--skip-invalid`, where no first pass ran).
    pub stop_on_invalid: bool,
    /// Each job's [`Charge`] is read from its parsed body (a token budget is set), not
    /// estimated from its bytes.
    pub charge: bool,
}

/// Starts the feed thread. It ends when the input is read or the job channel is closed.
pub fn spawn(
    spec: FeedSpec,
    jobs: async_channel::Sender<Vec<Job>>,
    notes: mpsc::UnboundedSender<FeedNote>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || feed(spec, jobs, notes))
}

/// How the feed reads the input; resume reads it the same way, so item indices agree.
pub fn read_options(api: Api, duplicates: DuplicateCheck) -> ReadOptions {
    ReadOptions {
        duplicates,
        raw_bodies: true,
        ..ReadOptions::new(api)
    }
}

fn feed(spec: FeedSpec, jobs: async_channel::Sender<Vec<Job>>, notes: mpsc::UnboundedSender<FeedNote>) {
    let opts = read_options(spec.api, spec.duplicates.clone());
    let reader = match Reader::open(&spec.input, spec.format, opts) {
        Ok(r) => r,
        Err(err) => {
            let _ = notes.send(FeedNote::Failed(err.to_string()));
            return;
        }
    };
    let mut counts = FeedCounts::default();
    let mut chunk = Vec::with_capacity(CHUNK);
    for item in reader {
        let item: Item = match item {
            Ok(i) => i,
            Err(issue) => {
                if issue.fatal || spec.stop_on_invalid {
                    let _ = notes.send(FeedNote::Failed(issue.to_string()));
                    return;
                }
                let _ = notes.send(FeedNote::Invalid {
                    line: issue.line,
                    custom_id: None,
                    message: issue.to_string(),
                });
                continue;
            }
        };
        counts.read += 1;
        if !batch::in_shard(item.index, spec.shard) {
            counts.other_shards += 1;
            continue;
        }
        if spec
            .done
            .as_ref()
            .is_some_and(|d| d.is_done(item.index, &item.custom_id))
        {
            counts.skipped_done += 1;
            continue;
        }
        chunk.push(job_of(item, &spec));
        counts.queued += 1;
        if chunk.len() >= CHUNK && jobs.send_blocking(std::mem::take(&mut chunk)).is_err() {
            break; // the run stopped
        }
    }
    if !chunk.is_empty() {
        let _ = jobs.send_blocking(chunk);
    }
    let _ = notes.send(FeedNote::Done(counts));
}

/// The request body of an input item, as the endpoint will receive it.
fn job_of(item: Item, spec: &FeedSpec) -> Job {
    let model = spec.model.as_deref();
    let charge_of = |body: &serde_json::Value| Charge {
        prompt_bytes: crate::model::prompt_bytes(body),
        max_tokens: crate::model::requested_tokens(body).unwrap_or(0),
    };
    let mut body = match item.body {
        // Sent as the file has it: no JSON tree built and written back (but for a budget's
        // charge).
        Payload::Raw(raw) => {
            let stream = raw.stream;
            let exact = spec.charge.then(|| charge_of(&raw.to_value()));
            let body = Bytes::from(raw.into_request(model));
            // Without a budget, a look at the bytes: enough to pace to an announced token
            // limit, and no JSON tree built per line.
            let charge = exact.unwrap_or_else(|| Charge::estimate(&body));
            return Job {
                body,
                stream,
                custom_id: item.custom_id,
                attempt: 0,
                throttled: 0,
                charge: Some(charge),
            };
        }
        Payload::Body(v) => v,
        Payload::Prompt { prompt, .. } => build_body(spec.api, model, &prompt, spec.max_tokens, spec.field),
    };
    prepare_body(&mut body, model, None);
    let stream = wants_stream(&body);
    Job {
        custom_id: item.custom_id,
        charge: Some(charge_of(&body)),
        body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        stream,
        attempt: 0,
        throttled: 0,
    }
}
