//! One finished request of a sweep as the measuring loop keeps it, and the sums that relate
//! the sweep's reported tokens to the file's own figures.

use crate::batch::OutputWriter;
use crate::client::{FailKind, Outcome};
use crate::model::{MixSums, SweepMix};
use crate::stats::level::{Sample, SampleResult};
use crate::ui;

/// One finished request, times in seconds from the level's start.
pub(super) struct Rec {
    pub(super) start: f64,
    pub(super) end: f64,
    pub(super) outcome: Outcome,
    pub(super) sched_delay: f64,
    pub(super) repeated: bool,
    pub(super) prompt_bytes: u64,
    pub(super) explained_bytes: u64,
    pub(super) requested_tokens: Option<u64>,
    /// The input line, in a sweep that is part of the job.
    pub(super) custom_id: Option<String>,
}

impl Rec {
    /// Writes the answer to the job's output (taking its body, which the statistics do not
    /// need), exactly as `run` writes a final answer.
    pub(super) fn write_answer(&mut self, sink: &mut Option<&mut OutputWriter>) -> anyhow::Result<()> {
        let (Some(w), Some(id)) = (sink.as_deref_mut(), self.custom_id.take()) else {
            return Ok(());
        };
        let mut outcome = self.outcome.clone_without_body();
        if let (Ok(kept), Ok(ok)) = (&mut outcome.result, &mut self.outcome.result) {
            kept.body = ok.body.take();
        }
        w.write_result(&crate::outcome::output_record(id, outcome))
            .map_err(|e| anyhow::anyhow!("cannot write the job's output: {e}"))
    }
}

impl Rec {
    pub(super) fn sample(&self) -> Sample {
        let result = match &self.outcome.result {
            Ok(ok) => SampleResult::Ok {
                prompt_tokens: ok.usage.prompt_tokens,
                completion_tokens: ok.usage.completion_tokens,
                estimated: ok.usage.estimated,
                cached_tokens: ok.usage.cached_tokens,
            },
            Err(f) => SampleResult::Failed {
                label: f.kind.label(),
                message: f.message.clone(),
            },
        };
        Sample {
            start: self.start,
            end: self.end,
            sched_delay: self.sched_delay,
            repeated: self.repeated,
            explained: (self.prompt_bytes > 0).then(|| self.explained_bytes as f64 / self.prompt_bytes as f64),
            ttft_ms: self
                .outcome
                .first_token
                .map(|t| (t - self.outcome.start).as_secs_f64() * 1000.0),
            result,
        }
    }
}

/// Sums over a sweep's successful requests: reported tokens against the file's own figures
/// (the same [`MixSums`] `plan --input` takes of a whole job).
#[derive(Default)]
pub(super) struct MixTally {
    file: MixSums,
    prompt_tokens: u64,
    with_prompt_tokens: u64,
    output_tokens: u64,
    /// Over the requests that report prompt tokens.
    bytes_with_prompt_tokens: u64,
    /// Over the requests that state their output limit.
    output_with_requested: u64,
}

impl MixTally {
    pub(super) fn add(&mut self, recs: &[Rec]) {
        for r in recs {
            let Ok(ok) = &r.outcome.result else { continue };
            if ok.usage.estimated {
                continue;
            }
            self.file.add_sizes(r.prompt_bytes, r.requested_tokens);
            self.output_tokens += ok.usage.completion_tokens;
            if let Some(p) = ok.usage.prompt_tokens {
                self.prompt_tokens += p;
                self.with_prompt_tokens += 1;
                self.bytes_with_prompt_tokens += r.prompt_bytes;
            }
            if r.requested_tokens.is_some() {
                self.output_with_requested += ok.usage.completion_tokens;
            }
        }
    }

    pub(super) fn summary(&self) -> Option<SweepMix> {
        let f = &self.file;
        let ratio = |num: u64, den: u64| (den > 0).then(|| num as f64 / den as f64);
        Some(SweepMix {
            requests: f.requests,
            prompt_tokens_mean: ratio(self.prompt_tokens, self.with_prompt_tokens),
            output_tokens_mean: ratio(self.output_tokens, f.requests)?,
            prompt_bytes_mean: f.prompt_bytes_mean()?,
            requested_output_tokens_mean: f.requested_tokens_mean(),
            tokens_per_prompt_byte: ratio(self.prompt_tokens, self.bytes_with_prompt_tokens),
            output_per_requested_token: ratio(self.output_with_requested, f.requested_tokens),
        })
    }
}

/// Exit 3 with the reason every warm-up request failed; `key_hint` names the credential
/// variable that was used (see `Target::key_hint`).
pub(super) fn unusable_reason(recs: &[Rec], key_hint: &str) -> anyhow::Error {
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
