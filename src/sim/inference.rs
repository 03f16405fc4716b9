//! Inference: `POST /v1/completions`, `/v1/chat/completions` and the Forefront-style routes,
//! answered as one JSON body or as an SSE stream of one event per token as the GPUs produce it;
//! also the simulator's token rule (whitespace-separated words) and `max_tokens`.

use super::gpu::{Event, NewSeq};
use super::state::{AppState, ConnDraw, InFlight};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use http_body::Frame;
use serde_json::{json, Value};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Api {
    Completions,
    Chat,
    Forefront,
}

pub(super) async fn completions(
    State(s): State<Arc<AppState>>,
    conn: Option<Extension<ConnDraw>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    infer(
        s,
        Api::Completions,
        conn.map(|c| c.0).unwrap_or_default(),
        headers,
        body,
    )
    .await
}

pub(super) async fn chat(
    State(s): State<Arc<AppState>>,
    conn: Option<Extension<ConnDraw>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    infer(s, Api::Chat, conn.map(|c| c.0).unwrap_or_default(), headers, body).await
}

pub(super) async fn forefront(
    State(s): State<Arc<AppState>>,
    conn: Option<Extension<ConnDraw>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    infer(s, Api::Forefront, conn.map(|c| c.0).unwrap_or_default(), headers, body).await
}

/// Whitespace-separated words: the simulator's documented token rule.
pub(super) fn words(s: &str) -> u32 {
    u32::try_from(s.split_whitespace().count()).unwrap_or(u32::MAX)
}

/// The prompt's words in order (every message's, for chat), cut into the prefix cache's
/// blocks: the same words [`prompt_tokens`] counts.
fn prompt_blocks(api: Api, body: &Value) -> Vec<u64> {
    let mut texts: Vec<&str> = Vec::new();
    match api {
        Api::Chat => {
            for m in body.get("messages").and_then(Value::as_array).into_iter().flatten() {
                match m.get("content") {
                    Some(Value::String(t)) => texts.push(t),
                    Some(Value::Array(parts)) => {
                        texts.extend(parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)))
                    }
                    _ => {}
                }
            }
        }
        Api::Completions | Api::Forefront => match body.get("prompt") {
            Some(Value::String(t)) => texts.push(t),
            Some(Value::Array(items)) => texts.extend(items.iter().filter_map(Value::as_str)),
            _ => {}
        },
    }
    super::prefix::block_hashes(texts.into_iter().flat_map(str::split_whitespace))
}

fn prompt_tokens(api: Api, body: &Value) -> Result<u32, String> {
    match api {
        Api::Chat => {
            let messages = body
                .get("messages")
                .and_then(Value::as_array)
                .ok_or("missing \"messages\" array")?;
            let mut n = 0u32;
            for m in messages {
                n = n.saturating_add(match m.get("content") {
                    Some(Value::String(s)) => words(s),
                    Some(Value::Array(parts)) => parts
                        .iter()
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .map(words)
                        .fold(0, u32::saturating_add),
                    _ => 0,
                });
            }
            Ok(n)
        }
        Api::Completions | Api::Forefront => match body.get("prompt") {
            Some(Value::String(s)) => Ok(words(s)),
            Some(Value::Array(items)) if items.iter().all(Value::is_u64) => {
                Ok(u32::try_from(items.len()).unwrap_or(u32::MAX))
            }
            Some(Value::Array(items)) => Ok(items
                .iter()
                .filter_map(Value::as_str)
                .map(words)
                .fold(0, u32::saturating_add)),
            _ => Err("missing \"prompt\"".into()),
        },
    }
}

fn max_tokens(body: &Value, default: u32) -> Result<u32, String> {
    let field = body
        .get("max_tokens")
        .filter(|v| !v.is_null())
        .or_else(|| body.get("max_completion_tokens").filter(|v| !v.is_null()));
    match field {
        None => Ok(default),
        Some(v) => match v.as_u64() {
            Some(n @ 1..=1_000_000) => Ok(n as u32),
            _ => Err(format!("max_tokens must be an integer from 1 to 1000000, got {v}")),
        },
    }
}

const VOCAB: [&str; 16] = [
    "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "GPUs", "hum", "in", "steady",
    "batches", "tonight",
];

fn token_text(request: u64, i: u32) -> String {
    format!(" {}", VOCAB[((request + u64::from(i)) % VOCAB.len() as u64) as usize])
}

async fn infer(s: Arc<AppState>, api: Api, conn: ConnDraw, headers: HeaderMap, body: Bytes) -> Response {
    let mut announced = Vec::new();
    let mut resp = answer(s, api, conn, headers, body, &mut announced).await;
    for (name, value) in announced {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            resp.headers_mut().insert(n, v);
        }
    }
    resp
}

/// One inference request's answer; `announced` gets the hosted API's `x-ratelimit-*` headers.
async fn answer(
    s: Arc<AppState>,
    api: Api,
    conn: ConnDraw,
    headers: HeaderMap,
    body: Bytes,
    announced: &mut Vec<(String, String)>,
) -> Response {
    let req = match s.request(&headers, &body) {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    let prompt = match prompt_tokens(api, &req) {
        Ok(n) => n,
        Err(e) => return s.bad_request(&e),
    };
    let max = match max_tokens(&req, s.cfg.default_max_tokens) {
        Ok(n) => n,
        Err(e) => return s.bad_request(&e),
    };
    let model = match s.model_for(&req) {
        Ok(m) => m,
        Err(resp) => return *resp,
    };
    let stream = api != Api::Forefront && req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = req
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if let Some(limits) = &s.limits {
        // Charged on arrival, as OpenAI charges: the prompt and all the output it may write.
        let charge = limits.charge(u64::from(prompt) + u64::from(max), std::time::Instant::now());
        *announced = super::limits::headers(&charge);
        if let Some(wait) = charge.refused {
            return s.over_limit(wait);
        }
    }
    let (n, mult) = match s.draw() {
        Ok(v) => v,
        Err(resp) => return *resp,
    };

    let guard = InFlight::new(&s);
    let (tx, rx) = mpsc::unbounded_channel();
    let caching = s.cfg.params.prefix_cache_tokens > 0;
    let blocks = if caching { prompt_blocks(api, &req) } else { Vec::new() };
    let cached = Arc::new(std::sync::atomic::AtomicU32::new(0));
    if !s.cluster.submit(NewSeq {
        prompt_tokens: prompt,
        max_tokens: max,
        mult,
        conn: conn.0,
        events: tx,
        blocks,
        cached: cached.clone(),
    }) {
        return s.no_gpu();
    }
    s.counters.prompt_tokens.fetch_add(u64::from(prompt), Ordering::Relaxed);
    let meta = Meta {
        api,
        id: format!("{}-sim-{n}", if api == Api::Chat { "chatcmpl" } else { "cmpl" }),
        model,
        created: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        request: n,
        prompt_tokens: prompt,
        max_tokens: max,
        cached: caching.then_some(cached),
    };
    if stream {
        let body = SseBody {
            rx,
            meta,
            produced: 0,
            phase: Phase::Tokens,
            include_usage,
            _guard: guard,
        };
        return (
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            Body::new(body),
        )
            .into_response();
    }
    let mut rx = rx;
    let mut produced = 0u32;
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Token => produced += 1,
            Event::Aborted => return s.aborted(),
        }
    }
    drop(guard);
    s.counters.ok.fetch_add(1, Ordering::Relaxed);
    let text: String = (0..produced).map(|i| token_text(n, i)).collect();
    let usage = meta.usage(produced);
    let body = match api {
        Api::Completions => {
            json!({"id": meta.id, "object": "text_completion", "created": meta.created, "model": meta.model,
            "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": "length"}], "usage": usage})
        }
        Api::Chat => json!({"id": meta.id, "object": "chat.completion", "created": meta.created, "model": meta.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}], "usage": usage}),
        Api::Forefront => json!({"result": [{"completion": text}], "model": meta.model, "usage": usage}),
    };
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

struct Meta {
    api: Api,
    id: String,
    model: String,
    created: u64,
    request: u64,
    prompt_tokens: u32,
    max_tokens: u32,
    /// With a prefix cache: the prompt tokens it served, set when the GPU admitted the request.
    cached: Option<Arc<std::sync::atomic::AtomicU32>>,
}

impl Meta {
    /// OpenAI's usage; with a prefix cache, `prompt_tokens_details.cached_tokens` as vLLM
    /// reports it (with `--enable-prompt-tokens-details`) and OpenAI does.
    fn usage(&self, completion: u32) -> Value {
        let mut u = json!({"prompt_tokens": self.prompt_tokens, "completion_tokens": completion, "total_tokens": self.prompt_tokens + completion});
        if let Some(c) = &self.cached {
            u["prompt_tokens_details"] = json!({"cached_tokens": c.load(Ordering::Relaxed)});
        }
        u
    }

    fn token_chunk(&self, i: u32) -> Value {
        let text = token_text(self.request, i);
        let finish = if i + 1 == self.max_tokens {
            json!("length")
        } else {
            Value::Null
        };
        match self.api {
            Api::Chat => {
                // The role rides on the first content chunk, so every event carries a token.
                let delta = if i == 0 {
                    json!({"role": "assistant", "content": text})
                } else {
                    json!({"content": text})
                };
                json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            }
            _ => json!({"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}]}),
        }
    }

    fn usage_chunk(&self, completion: u32) -> Value {
        let object = if self.api == Api::Chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": [], "usage": self.usage(completion)})
    }
}

enum Phase {
    Tokens,
    Usage,
    Done,
    End,
}

/// A streamed answer: one SSE event per token as the GPU produces it, then usage, then `[DONE]`.
struct SseBody {
    rx: mpsc::UnboundedReceiver<Event>,
    meta: Meta,
    produced: u32,
    phase: Phase,
    include_usage: bool,
    _guard: InFlight,
}

fn event(v: &Value) -> Frame<Bytes> {
    Frame::data(Bytes::from(format!("data: {v}\n\n")))
}

impl http_body::Body for SseBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        match this.phase {
            Phase::Tokens => match this.rx.poll_recv(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(Event::Token)) => {
                    let frame = event(&this.meta.token_chunk(this.produced));
                    this.produced += 1;
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Event::Aborted)) => {
                    this.phase = Phase::End;
                    this._guard.0.counters.aborted.fetch_add(1, Ordering::Relaxed);
                    // Cutting the stream mid-way is what a client sees when a replica dies.
                    Poll::Ready(Some(Err(std::io::Error::other(
                        "resource switched off during the request",
                    ))))
                }
                Poll::Ready(None) => {
                    this._guard.0.counters.ok.fetch_add(1, Ordering::Relaxed);
                    if this.include_usage {
                        this.phase = Phase::Usage;
                        Poll::Ready(Some(Ok(event(&this.meta.usage_chunk(this.produced)))))
                    } else {
                        this.phase = Phase::Done;
                        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n")))))
                    }
                }
            },
            Phase::Usage => {
                this.phase = Phase::Done;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n")))))
            }
            Phase::Done | Phase::End => {
                this.phase = Phase::End;
                Poll::Ready(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_rules() {
        assert_eq!(words("  a b\tc\n"), 3);
        assert_eq!(prompt_tokens(Api::Completions, &json!({"prompt": "one two"})), Ok(2));
        assert_eq!(prompt_tokens(Api::Completions, &json!({"prompt": [1, 2, 3]})), Ok(3));
        let chat = json!({"messages": [{"role": "user", "content": "a b"}, {"role": "user", "content": [{"type": "text", "text": "c"}]}]});
        assert_eq!(prompt_tokens(Api::Chat, &chat), Ok(3));
        assert!(prompt_tokens(Api::Chat, &json!({"prompt": "x"})).is_err());
        assert_eq!(max_tokens(&json!({}), 16), Ok(16));
        assert_eq!(max_tokens(&json!({"max_completion_tokens": 4}), 16), Ok(4));
        assert!(max_tokens(&json!({"max_tokens": 0}), 16).is_err());
        assert!(max_tokens(&json!({"max_tokens": "9"}), 16).is_err());
    }
}
