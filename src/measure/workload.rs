//! The requests a sweep sends: synthetic prompts of a given size, or bodies sampled from the
//! user's batch file.

use crate::api::Api;
use crate::batch::{Format, Payload, ReadOptions, Reader};
use crate::client::{build_body, prepare_body, MaxTokensField};
use crate::engine::Source;
use crate::ui::usage_error;
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How prompts become request bodies.
#[derive(Clone)]
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
    /// The sweep is part of the job (`auto`): each sampled line is sent at most once (the
    /// source ends when the sample is used up) and its answer belongs in the job's output.
    pub job: bool,
    /// The next request number, continued across levels: a level never re-sends the prompts
    /// of the one before, which a server's prefix cache would answer faster than new work.
    next: AtomicU64,
    pub stream: bool,
    pub model: Option<String>,
    /// `--cache-bust`: a word of its own at the start of every sampled prompt.
    pub cache_bust: bool,
    /// The prompt blocks sent so far: what the sweep's own lines explain of a server's
    /// prefix cache hits.
    pub seen: super::cache::SeenBlocks,
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
    /// A sample of the user's file, in random order; `file_requests`: lines in the file.
    Sampled { items: Vec<Sampled>, file_requests: u64 },
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
            job: false,
            stream,
            model,
            cache_bust: false,
            seen: Default::default(),
        }
    }

    /// A seeded uniform random sample of `sample` requests from the whole file (reservoir
    /// sampling in one streamed pass: memory holds the sample, whatever the file's size), in
    /// random order. Text and CSV prompts become bodies as `spec` says. Stdin is read whole
    /// the same way.
    pub fn sampled(
        path: &Path,
        format: Option<Format>,
        sample: usize,
        seed: u64,
        spec: BodySpec,
    ) -> anyhow::Result<Workload> {
        let BodySpec {
            api,
            max_tokens,
            field,
            stream,
            model,
        } = spec;
        let reader = Reader::open(path, format, ReadOptions::new(api)).map_err(|e| usage_error(e.to_string(), None))?;
        let mut items = Vec::new();
        let mut reservoir = Reservoir::new(sample.max(1), seed);
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
            // Only a kept item is turned into a body: the pass costs a parse per line, no more.
            if let Some(slot) = reservoir.offer() {
                let mut body = match item.body {
                    Payload::Body(v) => v,
                    Payload::Raw(r) => r.to_value(),
                    Payload::Prompt { prompt, .. } => build_body(api, model.as_deref(), &prompt, max_tokens, field),
                };
                prepare_body(&mut body, model.as_deref(), Some(stream));
                let entry = Sampled {
                    custom_id: item.custom_id,
                    blocks: super::cache::byte_blocks(crate::model::prompt_text(&body).as_bytes()),
                    prompt_bytes: crate::model::prompt_bytes(&body),
                    requested_tokens: crate::model::requested_tokens(&body),
                    body: Bytes::from(serde_json::to_vec(&body)?),
                };
                match items.get_mut(slot) {
                    Some(old) => *old = entry,
                    None => items.push(entry),
                }
            }
        }
        if items.is_empty() {
            return Err(usage_error(
                format!("{} holds no requests to sample", path.display()),
                None,
            ));
        }
        // The reservoir keeps early lines in file order: shuffle, so a file sorted by length
        // does not reach the first levels short-first.
        use rand::seq::SliceRandom;
        items.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed));
        Ok(Workload {
            kind: Kind::Sampled {
                items,
                file_requests: reservoir.seen,
            },
            next: AtomicU64::new(0),
            job: false,
            stream,
            model,
            cache_bust: false,
            seen: Default::default(),
        })
    }

    /// Makes the sweep part of the job: see [`Workload::job`].
    pub fn into_job(mut self) -> Workload {
        self.job = true;
        self
    }

    /// Whether a job sweep has sent every sampled line.
    pub fn used_up(&self) -> bool {
        self.job && self.distinct().is_some_and(|d| self.sent() >= d)
    }

    /// Requests in the input file (sampled workloads).
    pub fn file_requests(&self) -> Option<u64> {
        match &self.kind {
            Kind::Sampled { file_requests, .. } => Some(*file_requests),
            Kind::Synthetic { .. } => None,
        }
    }

    /// Distinct requests the workload holds before it must send one again (None: unlimited).
    pub fn distinct(&self) -> Option<u64> {
        match &self.kind {
            Kind::Sampled { items, .. } => Some(items.len() as u64),
            Kind::Synthetic { .. } => None,
        }
    }

    /// Requests handed out so far.
    pub fn sent(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    /// Request number `i` with what is known of its size.
    fn request(&self, i: u64) -> Request {
        let repeated = self.distinct().is_some_and(|d| i >= d);
        match &self.kind {
            Kind::Sampled { items, .. } => {
                let s = &items[(i % items.len() as u64) as usize];
                // A busted prompt shares no block with any other.
                let blocks: &[u64] = if self.cache_bust { &[] } else { &s.blocks };
                let explained_bytes = self.seen.offer(blocks, s.prompt_bytes);
                Request {
                    explained_bytes,
                    body: match self.cache_bust {
                        true => bust_cache(&s.body, i),
                        false => s.body.clone(),
                    },
                    repeated,
                    prompt_bytes: s.prompt_bytes,
                    requested_tokens: s.requested_tokens,
                    custom_id: self.job.then(|| s.custom_id.clone()),
                }
            }
            Kind::Synthetic { words, max_tokens, .. } => {
                let body = self.body(i);
                // The prompt is the request number and the words (see `body`).
                let digits = i.checked_ilog10().unwrap_or(0) as u64 + 1;
                let prompt_bytes = digits + if words.is_empty() { 0 } else { 1 + words.len() as u64 };
                // Each starts with its own number: no block is shared.
                let explained_bytes = self.seen.offer(&[], prompt_bytes);
                Request {
                    explained_bytes,
                    body,
                    repeated,
                    prompt_bytes,
                    requested_tokens: Some(u64::from(*max_tokens)),
                    custom_id: None,
                }
            }
        }
    }

    fn body(&self, i: u64) -> Bytes {
        match &self.kind {
            Kind::Sampled { items, .. } => items[(i % items.len() as u64) as usize].body.clone(),
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

/// A request of a level: its body, and whether the sample was used up so this one was sent
/// before (a server's prefix cache answers repeats faster, so levels with them are flagged).
pub struct Request {
    pub body: Bytes,
    pub repeated: bool,
    /// The request's size as the file states it (see [`crate::batch::mix`]).
    pub prompt_bytes: u64,
    /// The bytes of its prompt the sweep's earlier requests explain (what any prefix cache of
    /// them could serve).
    pub explained_bytes: u64,
    pub requested_tokens: Option<u64>,
    /// The input line's id, for a sweep that is part of the job.
    pub custom_id: Option<String>,
}

impl Source for Requests {
    type Item = Request;
    async fn next(&self) -> Option<Request> {
        let w = &self.workload;
        let i = w.next.fetch_add(1, Ordering::Relaxed);
        if w.job && w.distinct().is_some_and(|d| i >= d) {
            // Never a line twice: the budget is spent.
            return None;
        }
        Some(w.request(i))
    }
}

/// One sampled line of the input.
pub struct Sampled {
    pub custom_id: String,
    pub body: Bytes,
    /// The prompt's blocks as a prefix cache would name them (`cache.rs`).
    pub blocks: Vec<u64>,
    pub prompt_bytes: u64,
    pub requested_tokens: Option<u64>,
}

/// Algorithm R: after n offers, each offered item is kept with probability k/n, whatever n
/// turns out to be. Seeded, so a sweep's sample can be drawn again.
pub struct Reservoir {
    k: usize,
    /// Items offered so far.
    pub seen: u64,
    rng: rand::rngs::StdRng,
}

impl Reservoir {
    pub fn new(k: usize, seed: u64) -> Reservoir {
        Reservoir {
            k: k.max(1),
            seen: 0,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }

    /// Offers the next item: the slot (0..k) it takes, or None when it is not kept.
    pub fn offer(&mut self) -> Option<usize> {
        self.seen += 1;
        if self.seen <= self.k as u64 {
            return Some(self.seen as usize - 1);
        }
        let j = self.rng.gen_range(0..self.seen);
        (j < self.k as u64).then_some(j as usize)
    }
}

/// What a sweep sends: a sample of `input`, else synthetic prompts (`--input`, `--format`,
/// `--sample`, `--prompt-tokens`, `--max-tokens`).
#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    pub input: Option<std::path::PathBuf>,
    pub format: Option<crate::batch::Format>,
    pub sample: usize,
    pub prompt_tokens: u32,
    pub max_tokens: u32,
    /// `--cache-bust`: every prompt starts with a word of its own, so no two requests share a
    /// prefix a server's cache could serve.
    pub cache_bust: bool,
}

/// Builds the sweep's workload.
pub fn workload_from(
    w: &WorkloadSpec,
    seed: u64,
    api: Api,
    field: MaxTokensField,
    stream: bool,
    model: Option<String>,
) -> anyhow::Result<Workload> {
    let workload = match &w.input {
        Some(path) => {
            let format = w.format;
            Workload::sampled(
                path,
                format,
                w.sample,
                seed,
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
    }?;
    Ok(Workload {
        cache_bust: w.cache_bust,
        ..workload
    })
}

/// `body` with a word of request `i`'s own at the start of its prompt (the first message's
/// text for chat, the input for embeddings): no prefix of it matches another request's.
fn bust_cache(body: &Bytes, i: u64) -> Bytes {
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return body.clone();
    };
    match first_text(&mut v) {
        Some(text) => text.insert_str(0, &format!("req{:016x} ", crate::hash::splitmix64(i))),
        None => return body.clone(),
    }
    Bytes::from(v.to_string())
}

/// The text a prompt starts with: `prompt`, the first message's content, or `input`.
fn first_text(v: &mut Value) -> Option<&mut String> {
    let target = if v.get("prompt").is_some() {
        v.get_mut("prompt")?
    } else if v.get("messages").is_some() {
        v.get_mut("messages")?.as_array_mut()?.first_mut()?.get_mut("content")?
    } else {
        v.get_mut("input")?
    };
    match target {
        Value::String(s) => Some(s),
        Value::Array(items) => match items.first_mut()? {
            Value::String(s) => Some(s),
            part => match part.get_mut("text")? {
                Value::String(s) => Some(s),
                _ => None,
            },
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busted_prompt_starts_with_a_word_of_its_own() {
        let text = |b: Bytes| serde_json::from_slice::<Value>(&b).unwrap();
        let p = Bytes::from(r#"{"prompt":"You are a helpful assistant. Q1","max_tokens":4}"#);
        let (a, b) = (text(bust_cache(&p, 1)), text(bust_cache(&p, 2)));
        let (a, b) = (a["prompt"].as_str().unwrap(), b["prompt"].as_str().unwrap());
        assert!(
            a.ends_with(" You are a helpful assistant. Q1") && a.starts_with("req"),
            "{a}"
        );
        assert_ne!(a.split(' ').next(), b.split(' ').next());
        let chat = Bytes::from(
            r#"{"messages":[{"role":"system","content":[{"type":"text","text":"sys"}]},{"role":"user","content":"q"}]}"#,
        );
        let c = text(bust_cache(&chat, 3));
        assert!(
            c["messages"][0]["content"][0]["text"]
                .as_str()
                .unwrap()
                .ends_with(" sys"),
            "{c}"
        );
        assert_eq!(c["messages"][1]["content"], "q");
        let tokens = Bytes::from(r#"{"prompt":[1,2,3]}"#);
        assert_eq!(bust_cache(&tokens, 1), tokens, "token ids: left as they are");
    }

    #[test]
    fn reservoir_is_uniform_over_the_whole_stream() {
        // 100 items, keep 10, 4000 seeds: each item should be kept ~400 times, the last as
        // often as the first (a head sample would keep only 0..10).
        let mut kept = [0u32; 100];
        for seed in 0..4000 {
            let mut r = Reservoir::new(10, seed);
            let mut slots = [usize::MAX; 10];
            for item in 0..100 {
                if let Some(s) = r.offer() {
                    slots[s] = item;
                }
            }
            for s in slots {
                kept[s] += 1;
            }
        }
        let (min, max) = (kept.iter().min().unwrap(), kept.iter().max().unwrap());
        assert!(*min > 300 && *max < 500, "kept counts {min}..{max}, expected ~400 each");
    }

    #[test]
    fn the_seed_draws_the_sample() {
        let dir = std::env::temp_dir().join(format!("sizeup-sample-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.txt");
        std::fs::write(&path, (0..500).map(|i| format!("prompt {i}\n")).collect::<String>()).unwrap();
        let draw = |seed| {
            let spec = BodySpec {
                api: Api::Completions,
                max_tokens: Some(1),
                field: MaxTokensField::MaxTokens,
                stream: false,
                model: None,
            };
            let w = Workload::sampled(&path, None, 10, seed, spec).unwrap();
            assert_eq!((w.distinct(), w.file_requests()), (Some(10), Some(500)));
            (0..10).map(|i| w.body(i)).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1), "the same seed, the same sample in the same order");
        assert_ne!(draw(1), draw(2));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reservoir_memory_is_the_sample() {
        let mut r = Reservoir::new(5, 7);
        let slots: Vec<Option<usize>> = (0..1_000_000).map(|_| r.offer()).collect();
        assert!(slots.iter().flatten().all(|s| *s < 5), "slots stay within k");
        assert_eq!(r.seen, 1_000_000);
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
