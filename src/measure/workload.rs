//! The requests a sweep sends: synthetic prompts of a given size, or bodies sampled from the
//! user's batch file.

use crate::api::Api;
use crate::batch::{Format, Payload, ReadOptions, Reader};
use crate::cli::WorkloadArgs;
use crate::client::{build_body, prepare_body, MaxTokensField};
use crate::engine::Source;
use crate::ui::usage_error;
use bytes::Bytes;
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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

/// The engine's source of a level's requests: the workload's next body, forever (a level ends
/// by its stop token, not by running out).
pub struct Requests {
    workload: Arc<Workload>,
}

impl Requests {
    pub fn new(workload: Arc<Workload>) -> Requests {
        Requests { workload }
    }
}

impl Source for Requests {
    type Item = Bytes;
    async fn next(&self) -> Option<Bytes> {
        Some(self.workload.body(self.workload.next.fetch_add(1, Ordering::Relaxed)))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
