//! Micro-benchmarks of the per-request hot paths: SSE decoding, request body building,
//! latency recording, input reading and output writing.
//!
//! `cargo bench --bench micro` (about two minutes on a 2-core machine). Sample sizes are
//! small on purpose: these figures are for spotting regressions and hot spots, not for
//! publication. Nothing here is a pass/fail check.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde_json::{json, Value};
use sizeup::api::Api;
use sizeup::batch::{Format, OutputRecord, OutputWriter, Payload, ReadOptions, Reader};
use sizeup::client::sse::{SseDecoder, SseEvent};
use sizeup::client::{build_body, prepare_body, MaxTokensField};
use sizeup::stats::latency::Hist;
use std::io::Cursor;
use std::time::{Duration, Instant};

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500))
        .without_plots()
}

const WORDS: [&str; 12] = [
    "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "GPUs", "hum",
];

fn words(n: usize, seed: usize) -> String {
    (0..n)
        .map(|i| WORDS[(i * 7 + seed) % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

/// A chat completion stream as OpenAI (and vLLM) send it: one chunk per token, a usage chunk,
/// then `[DONE]`; 256 tokens.
fn chat_stream(tokens: usize) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..tokens {
        let delta = if i == 0 {
            json!({"role": "assistant", "content": ""})
        } else {
            json!({"content": format!(" {}", WORDS[i % WORDS.len()])})
        };
        let chunk = json!({
            "id": "chatcmpl-9x2Yq5bT0zLkVfWQ1pR7sN3aE4d",
            "object": "chat.completion.chunk",
            "created": 1_732_640_000u64,
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "system_fingerprint": "fp_44709d6fcb",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": if i + 1 == tokens { json!("length") } else { Value::Null }}]
        });
        s.push_str(&format!("data: {chunk}\n\n"));
    }
    let usage = json!({
        "id": "chatcmpl-9x2Yq5bT0zLkVfWQ1pR7sN3aE4d", "object": "chat.completion.chunk",
        "created": 1_732_640_000u64, "model": "meta-llama/Llama-3.1-8B-Instruct", "choices": [],
        "usage": {"prompt_tokens": 312, "completion_tokens": tokens, "total_tokens": 312 + tokens}
    });
    s.push_str(&format!("data: {usage}\n\ndata: [DONE]\n\n"));
    s.into_bytes()
}

fn bench_sse(c: &mut Criterion) {
    let stream = chat_stream(256);
    let mut g = c.benchmark_group("sse_decode");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    // How the bytes arrive: one event per read (a server flushing each token), in 1460-byte
    // TCP segments, in 64-byte pieces (worst case: many partial lines), or all at once.
    for (name, split) in [
        ("per_event", 0usize),
        ("mss_1460B", 1460),
        ("pieces_64B", 64),
        ("whole", usize::MAX),
    ] {
        let chunks: Vec<&[u8]> = match split {
            0 => {
                let mut v = Vec::new();
                let mut rest = &stream[..];
                while let Some(p) = rest.windows(2).position(|w| w == b"\n\n") {
                    v.push(&rest[..p + 2]);
                    rest = &rest[p + 2..];
                }
                v
            }
            usize::MAX => vec![&stream[..]],
            n => stream.chunks(n).collect(),
        };
        g.bench_function(name, |b| {
            let mut out = Vec::with_capacity(512);
            b.iter(|| {
                let mut d = SseDecoder::new();
                out.clear();
                for ch in &chunks {
                    d.push(black_box(ch), &mut out).expect("valid stream");
                }
                d.finish().expect("complete stream");
                assert_eq!(out.len(), 258);
            })
        });
    }
    // What the client does per event on top of decoding: parse each chunk as JSON.
    g.bench_function("whole+value_parse", |b| {
        let mut out = Vec::with_capacity(512);
        b.iter(|| {
            let mut d = SseDecoder::new();
            out.clear();
            d.push(black_box(&stream), &mut out).expect("valid stream");
            let mut n = 0usize;
            for ev in out.drain(..) {
                if let SseEvent::Data(s) = ev {
                    let v: Value = serde_json::from_str(&s).expect("json chunk");
                    n += usize::from(v.pointer("/choices/0/delta/content").is_some());
                }
            }
            black_box(n)
        })
    });
    // For comparison (not sizeup code): the same events parsed into a borrowed typed struct
    // that skips the fields the client never reads, instead of a full `serde_json::Value`.
    g.bench_function("whole+typed_parse(reference)", |b| {
        let mut out = Vec::with_capacity(512);
        b.iter(|| {
            let mut d = SseDecoder::new();
            out.clear();
            d.push(black_box(&stream), &mut out).expect("valid stream");
            let mut n = 0usize;
            for ev in out.drain(..) {
                if let SseEvent::Data(s) = ev {
                    let v: Chunk = serde_json::from_str(&s).expect("json chunk");
                    n += v.choices.first().map_or(0, |c| {
                        let content = c.delta.as_ref().is_some_and(|d| d.content.is_some()) || c.text.is_some();
                        usize::from(content) + usize::from(c.finish_reason.is_some())
                    });
                    n += v.usage.map_or(0, |u| u.completion_tokens as usize & 1);
                }
            }
            black_box(n)
        })
    });
    g.finish();
}

#[derive(serde::Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    choices: Vec<ChunkChoice<'a>>,
    usage: Option<ChunkUsage>,
}

#[derive(serde::Deserialize)]
struct ChunkChoice<'a> {
    #[serde(borrow)]
    delta: Option<ChunkDelta<'a>>,
    #[serde(borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    finish_reason: Option<std::borrow::Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct ChunkDelta<'a> {
    #[serde(borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct ChunkUsage {
    completion_tokens: u64,
}

/// What `sizeup run` does with a non-streamed answer today (parse it into a `Value`, clone it
/// into the output record, serialize it into the output line), against a reference that reads
/// only `usage` and `error` with a typed struct and copies the answer's bytes as they came.
fn bench_response(c: &mut Criterion) {
    let answer = json!({
        "id": "cmpl-sim-1234", "object": "text_completion", "created": 1_732_640_000u64, "model": "sizeup-sim",
        "choices": [{"index": 0, "text": words(64, 1), "logprobs": null, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 40, "completion_tokens": 64, "total_tokens": 104}
    })
    .to_string()
    .into_bytes();
    let mut g = c.benchmark_group("response_body");
    g.throughput(Throughput::Elements(1));
    g.bench_function("value_parse+clone+serialize", |b| {
        let mut line = Vec::with_capacity(4096);
        b.iter(|| {
            let v: Value = serde_json::from_slice(black_box(&answer)).expect("json");
            let tokens = v.pointer("/usage/completion_tokens").and_then(Value::as_u64);
            let kept = v.clone();
            drop(v);
            line.clear();
            serde_json::to_writer(&mut line, &json!({"id": "batch_req_1", "custom_id": "req-1", "response": {"status_code": 200, "request_id": null, "body": kept}, "error": null})).expect("serialize");
            black_box((tokens, line.len()))
        })
    });
    g.bench_function("typed_peek+raw_copy(reference)", |b| {
        #[derive(serde::Deserialize)]
        struct Peek {
            usage: Option<ChunkUsage>,
            error: Option<serde::de::IgnoredAny>,
        }
        let mut line = Vec::with_capacity(4096);
        b.iter(|| {
            let p: Peek = serde_json::from_slice(black_box(&answer)).expect("json");
            line.clear();
            line.extend_from_slice(
                br#"{"id":"batch_req_1","custom_id":"req-1","response":{"status_code":200,"request_id":null,"body":"#,
            );
            line.extend_from_slice(&answer);
            line.extend_from_slice(br#"},"error":null}"#);
            black_box((p.usage.map(|u| u.completion_tokens), p.error.is_some(), line.len()))
        })
    });
    g.finish();
}

fn bench_body(c: &mut Criterion) {
    let prompt = words(300, 3);
    let mut g = c.benchmark_group("request_body");
    g.throughput(Throughput::Elements(1));
    // Text/CSV inputs and synthetic sweeps: a body built from a prompt, then serialized.
    for (name, api) in [
        ("build+serialize_chat", Api::Chat),
        ("build+serialize_completions", Api::Completions),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut body = build_body(
                    api,
                    Some("meta-llama/Llama-3.1-8B-Instruct"),
                    black_box(&prompt),
                    Some(256),
                    MaxTokensField::MaxTokens,
                );
                prepare_body(&mut body, None, Some(true));
                let bytes = serde_json::to_vec(&body).expect("serializable");
                black_box(bytes.len())
            })
        });
    }
    // openai-batch / jsonl inputs: a parsed body gets the model, then is serialized.
    let given = json!({"model": "meta-llama/Llama-3.1-8B-Instruct", "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": prompt}], "max_tokens": 256, "temperature": 0.2});
    g.bench_function("prepare+serialize_given_body", |b| {
        b.iter_batched(
            || given.clone(),
            |mut body| {
                prepare_body(&mut body, Some("other"), None);
                black_box(serde_json::to_vec(&body).expect("serializable").len())
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn bench_hist(c: &mut Criterion) {
    let values: Vec<f64> = (0..1000).map(|i| 5.0 + (i as f64 * 37.1) % 4000.0).collect();
    let mut g = c.benchmark_group("hist");
    g.throughput(Throughput::Elements(values.len() as u64));
    g.bench_function("record_ms", |b| {
        let mut h = Hist::new();
        b.iter(|| {
            for v in &values {
                h.record_ms(black_box(*v));
            }
        })
    });
    g.finish();
    // One per latency kind and level: the allocation a sweep pays per histogram.
    c.bench_function("hist/new", |b| b.iter(|| black_box(Hist::new())));
}

const LINES: usize = 20_000;

fn input(format: Format) -> &'static [u8] {
    let mut s = String::new();
    match format {
        Format::OpenaiBatch => {
            for i in 0..LINES {
                let body = json!({"model": "m", "prompt": words(40, i), "max_tokens": 64});
                s.push_str(&format!(
                    "{{\"custom_id\":\"req-{i:07}\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{body}}}\n"
                ));
            }
        }
        Format::Jsonl => {
            for i in 0..LINES {
                s.push_str(&json!({"model": "m", "prompt": words(40, i), "max_tokens": 64}).to_string());
                s.push('\n');
            }
        }
        Format::Csv => {
            s.push_str("custom_id,prompt,topic\n");
            for i in 0..LINES {
                s.push_str(&format!("r{i},\"{}, please\",topic-{}\n", words(40, i), i % 17));
            }
        }
        Format::Text => {
            for i in 0..LINES {
                s.push_str(&words(40, i));
                s.push('\n');
            }
        }
    }
    Box::leak(s.into_bytes().into_boxed_slice())
}

fn bench_reader(c: &mut Criterion) {
    let mut g = c.benchmark_group("read_input");
    g.throughput(Throughput::Elements(LINES as u64));
    for format in Format::ALL {
        let data = input(format);
        g.bench_function(format.name(), |b| {
            b.iter(|| {
                let r = Reader::new(Box::new(Cursor::new(data)), format, ReadOptions::new(Api::Completions))
                    .expect("reader");
                let mut n = 0usize;
                for item in r {
                    let item = item.expect("valid line");
                    n += match &item.body {
                        Payload::Body(_) | Payload::Raw(_) => 1,
                        Payload::Prompt { .. } => 1,
                    };
                }
                assert_eq!(n, LINES);
            })
        });
    }
    g.finish();
}

fn bench_writer(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let body = json!({
        "id": "cmpl-sim-1234", "object": "text_completion", "created": 1_732_640_000u64, "model": "sizeup-sim",
        "choices": [{"index": 0, "text": words(64, 1), "logprobs": null, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 40, "completion_tokens": 64, "total_tokens": 104}
    });
    let rec = OutputRecord {
        custom_id: "req-0001234".into(),
        status_code: Some(200),
        request_id: Some("req-abc".into()),
        // The raw answer text, as the client keeps it.
        body: Some(sizeup::api::JsonText::parse(&body.to_string()).expect("json body")),
        error: None,
    };
    let mut g = c.benchmark_group("write_output");
    g.throughput(Throughput::Elements(1));
    let mut file_no = 0u64;
    g.bench_function("write_result_ok", |b| {
        b.iter_custom(|iters| {
            file_no += 1;
            let path = dir.path().join(format!("out-{file_no}.jsonl"));
            let mut w = OutputWriter::create(&path).expect("create output");
            let start = Instant::now();
            for _ in 0..iters {
                w.write_result(black_box(&rec)).expect("write");
            }
            let took = start.elapsed();
            drop(w);
            let _ = std::fs::remove_file(&path);
            took
        })
    });
    g.finish();
}

criterion_group! {
    name = micro;
    config = config();
    targets = bench_sse, bench_body, bench_response, bench_hist, bench_reader, bench_writer
}
criterion_main!(micro);
