//! The simulator's HTTP face: OpenAI-compatible inference, models, health, metrics, the
//! resource API, auth and faults. Connections are served by hyper directly (not `axum::serve`)
//! so that a simulated reset can close a connection without writing any answer.
//!
//! Long because: one OpenAI-shaped server (completions, chat, embeddings, models, metrics,
//! resource API, faults) whose handlers share one state and one error shape; splitting it by
//! route would spread that shared wire format over several files.

use super::gpu::{Cluster, Event, Gauges, NewSeq};
use super::SimConfig;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http_body::Frame;
use hyper_util::rt::TokioIo;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Marks a response that must not be sent: the connection is closed instead.
#[derive(Clone, Copy)]
struct ResetConnection;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Api {
    Completions,
    Chat,
    Forefront,
}

#[derive(Clone, Copy, Debug)]
enum Power {
    On,
    Off,
    Starting(Instant),
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    failed_500: AtomicU64,
    throttled_429: AtomicU64,
    reset: AtomicU64,
    unauthorized_401: AtomicU64,
    unavailable_503: AtomicU64,
    bad_request_400: AtomicU64,
    not_found_404: AtomicU64,
    aborted: AtomicU64,
    prompt_tokens: AtomicU64,
}

struct AppState {
    cfg: SimConfig,
    cluster: Cluster,
    gauges: Arc<Gauges>,
    counters: Counters,
    power: Mutex<Power>,
    /// Inference requests that passed auth and power checks, in arrival order: the index that
    /// seeds each request's faults and jitter, so a seed replays the same sequence.
    arrivals: AtomicU64,
    in_flight: AtomicUsize,
    in_flight_max: AtomicUsize,
}

/// Counts an inference request as in flight for as long as it lives (also inside a stream body).
struct InFlight(Arc<AppState>);

impl InFlight {
    fn new(s: &Arc<AppState>) -> InFlight {
        let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        s.in_flight_max.fetch_max(now, Ordering::SeqCst);
        InFlight(s.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(super) async fn serve(listener: TcpListener, cfg: SimConfig, stop: CancellationToken) -> std::io::Result<()> {
    let gauges = Arc::new(Gauges::default());
    let cluster = Cluster::new(cfg.params, cfg.gpus, gauges.clone());
    let power = if cfg.start_off { Power::Off } else { Power::On };
    let state = Arc::new(AppState {
        cfg,
        cluster,
        gauges,
        counters: Counters::default(),
        power: Mutex::new(power),
        arrivals: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        in_flight_max: AtomicUsize::new(0),
    });
    let router = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/", post(forefront))
        .route("/v1/forefront", post(forefront))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/resource", get(resource_get).post(resource_post))
        .with_state(state);

    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors and the like: back off briefly instead of spinning.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let router = router.clone();
                async move {
                    let resp = match router.oneshot(req.map(Body::new)).await {
                        Ok(resp) => resp,
                        Err(never) => match never {},
                    };
                    if resp.extensions().get::<ResetConnection>().is_some() {
                        // An error from the service makes hyper drop the connection unanswered.
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "simulated reset",
                        ));
                    }
                    Ok::<_, std::io::Error>(resp)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

fn json_ok(v: &Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn error_response(status: StatusCode, message: &str, kind: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "code": status.as_u16()}});
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// vLLM's answer to an unknown model (`OpenAIServing._check_model`): the flat `ErrorResponse`
/// shape, not OpenAI's `{"error": {...}}`, so clients see what a real vLLM server sends.
fn model_not_found(model: &str) -> Response {
    let body = json!({"object": "error", "message": format!("The model `{model}` does not exist."),
        "type": "NotFoundError", "param": null, "code": 404});
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

impl AppState {
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(key) = &self.cfg.api_key else { return true };
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            // The auth scheme is case-insensitive (RFC 7235); the credentials are not.
            .and_then(|v| {
                v.split_once(' ')
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            })
            .is_some_and(|(_, given)| given == key.expose())
    }

    fn unauthorized(&self) -> Response {
        self.counters.unauthorized_401.fetch_add(1, Ordering::Relaxed);
        error_response(
            StatusCode::UNAUTHORIZED,
            "invalid or missing API key",
            "invalid_request_error",
        )
    }

    /// The power state now; a finished start-up turns into `On`.
    fn power(&self) -> Power {
        let mut p = self.power.lock().expect("power lock poisoned");
        if let Power::Starting(until) = *p {
            if Instant::now() >= until {
                *p = Power::On;
            }
        }
        *p
    }

    fn bad_request(&self, message: &str) -> Response {
        self.counters.bad_request_400.fetch_add(1, Ordering::Relaxed);
        error_response(StatusCode::BAD_REQUEST, message, "invalid_request_error")
    }

    /// Auth, power and a JSON object body: the checks every inference route makes first.
    /// Each check below answers `Err` with the response to send (boxed: it is large).
    fn request(&self, headers: &HeaderMap, body: &[u8]) -> Result<Value, Box<Response>> {
        if !self.authorized(headers) {
            return Err(Box::new(self.unauthorized()));
        }
        if let Some(resp) = self.unavailable() {
            return Err(Box::new(resp));
        }
        match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(_) => Err(Box::new(self.bad_request("request body must be a JSON object"))),
            Err(e) => Err(Box::new(self.bad_request(&format!("invalid JSON body: {e}")))),
        }
    }

    /// The model name the answer carries: the one the request names, else the configured one.
    /// When strict (`--served-model-name`), any other name gets vLLM's 404.
    fn model_for(&self, req: &Value) -> Result<String, Box<Response>> {
        match req.get("model").and_then(Value::as_str) {
            None => Ok(self.cfg.model.clone()),
            Some(m) if !self.cfg.strict_model || m == self.cfg.model => Ok(m.to_string()),
            Some(m) => {
                self.counters.not_found_404.fetch_add(1, Ordering::Relaxed);
                Err(Box::new(model_not_found(m)))
            }
        }
    }

    /// Numbers the request and draws its fault and jitter from the seed. Returns the index and
    /// the service-time multiplier, or the fault's answer.
    fn draw(&self) -> Result<(u64, f64), Box<Response>> {
        let n = self.arrivals.fetch_add(1, Ordering::SeqCst);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(mix(self.cfg.seed, n));
        let fault: f64 = rng.gen();
        let jitter: f64 = rng.gen();
        let c = &self.cfg;
        if fault < c.fail_rate {
            self.counters.failed_500.fetch_add(1, Ordering::Relaxed);
            return Err(Box::new(error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "simulated internal error",
                "server_error",
            )));
        }
        if fault < c.fail_rate + c.throttle_rate {
            self.counters.throttled_429.fetch_add(1, Ordering::Relaxed);
            let mut resp = error_response(
                StatusCode::TOO_MANY_REQUESTS,
                "simulated rate limit",
                "rate_limit_error",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(c.retry_after.as_secs().max(1)));
            return Err(Box::new(resp));
        }
        if fault < c.fail_rate + c.throttle_rate + c.reset_rate {
            self.counters.reset.fetch_add(1, Ordering::Relaxed);
            let mut resp = StatusCode::INTERNAL_SERVER_ERROR.into_response();
            resp.extensions_mut().insert(ResetConnection);
            return Err(Box::new(resp));
        }
        Ok((n, 1.0 + c.jitter * (2.0 * jitter - 1.0)))
    }

    fn no_gpu(&self) -> Response {
        self.counters.unavailable_503.fetch_add(1, Ordering::Relaxed);
        error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "no GPU is active",
            "service_unavailable",
        )
    }

    fn aborted(&self) -> Response {
        self.counters.aborted.fetch_add(1, Ordering::Relaxed);
        error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "resource switched off during the request",
            "service_unavailable",
        )
    }

    fn unavailable(&self) -> Option<Response> {
        let (message, retry) = match self.power() {
            Power::On => return None,
            Power::Off => ("resource is off", 1),
            Power::Starting(until) => (
                "resource is starting",
                until.saturating_duration_since(Instant::now()).as_secs() + 1,
            ),
        };
        self.counters.unavailable_503.fetch_add(1, Ordering::Relaxed);
        let mut resp = error_response(StatusCode::SERVICE_UNAVAILABLE, message, "service_unavailable");
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry));
        Some(resp)
    }
}

async fn completions(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    infer(s, Api::Completions, headers, body).await
}

async fn chat(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    infer(s, Api::Chat, headers, body).await
}

async fn forefront(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    infer(s, Api::Forefront, headers, body).await
}

/// Whitespace-separated words: the simulator's documented token rule.
fn words(s: &str) -> u32 {
    u32::try_from(s.split_whitespace().count()).unwrap_or(u32::MAX)
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

/// Splits seeds so that neighbouring request indices get unrelated random streams.
fn mix(seed: u64, index: u64) -> u64 {
    let mut z = seed
        ^ index
            .wrapping_add(0x9E37_79B9_7F4A_7C15)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const VOCAB: [&str; 16] = [
    "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "GPUs", "hum", "in", "steady",
    "batches", "tonight",
];

fn token_text(request: u64, i: u32) -> String {
    format!(" {}", VOCAB[((request + u64::from(i)) % VOCAB.len() as u64) as usize])
}

async fn infer(s: Arc<AppState>, api: Api, headers: HeaderMap, body: Bytes) -> Response {
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
    let (n, mult) = match s.draw() {
        Ok(v) => v,
        Err(resp) => return *resp,
    };

    let guard = InFlight::new(&s);
    let (tx, rx) = mpsc::unbounded_channel();
    if !s.cluster.submit(NewSeq {
        prompt_tokens: prompt,
        max_tokens: max,
        mult,
        events: tx,
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

/// One input of an embeddings request: its token count (the simulator's token rule) and a
/// fingerprint of its content, from which its vector is derived.
#[derive(Debug, PartialEq, Eq)]
struct EmbeddingInput {
    tokens: u32,
    key: u64,
}

/// Inputs per request, as OpenAI limits them; more is a 400, not an unbounded allocation.
const MAX_EMBEDDING_INPUTS: usize = 2048;

/// FNV-1a: a content hash that, unlike `DefaultHasher`, is fixed across Rust versions, so an
/// input's vector never changes between builds.
fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn text_input(s: &str) -> Result<EmbeddingInput, String> {
    if s.is_empty() {
        return Err("\"input\" must not contain an empty string".into());
    }
    Ok(EmbeddingInput {
        tokens: words(s),
        key: fnv1a(s.bytes()),
    })
}

fn token_input(ids: &[Value]) -> Result<EmbeddingInput, String> {
    if ids.is_empty() {
        return Err("\"input\" must not contain an empty token array".into());
    }
    let ids: Vec<u64> = ids
        .iter()
        .map(|v| v.as_u64().ok_or("token ids must be non-negative integers"))
        .collect::<Result<_, _>>()?;
    Ok(EmbeddingInput {
        tokens: u32::try_from(ids.len()).unwrap_or(u32::MAX),
        // Tagged so that the ids [104, 105] and the text "hi" (bytes 104, 105) differ.
        key: fnv1a(std::iter::once(b't').chain(ids.iter().flat_map(|id| id.to_le_bytes()))),
    })
}

/// `input`: a string, an array of strings, an array of token ids, or an array of such arrays.
fn embedding_inputs(body: &Value) -> Result<Vec<EmbeddingInput>, String> {
    let inputs = match body.get("input") {
        Some(Value::String(s)) => vec![text_input(s)?],
        Some(Value::Array(items)) if items.is_empty() => return Err("\"input\" must not be empty".into()),
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => vec![token_input(items)?],
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
            .iter()
            .map(|item| text_input(item.as_str().unwrap_or_default()))
            .collect::<Result<_, _>>()?,
        Some(Value::Array(items)) if items.iter().all(Value::is_array) => items
            .iter()
            .map(|item| token_input(item.as_array().map_or(&[][..], Vec::as_slice)))
            .collect::<Result<_, _>>()?,
        Some(Value::Array(_)) => {
            return Err("\"input\" items must be all strings, all token ids or all token arrays".into())
        }
        Some(_) => return Err("\"input\" must be a string or an array".into()),
        None => return Err("missing \"input\"".into()),
    };
    if inputs.len() > MAX_EMBEDDING_INPUTS {
        return Err(format!(
            "\"input\" has {} items; at most {MAX_EMBEDDING_INPUTS}",
            inputs.len()
        ));
    }
    Ok(inputs)
}

/// A unit-length vector of `dims` floats derived from the input's fingerprint alone, so the
/// same input gets the same vector from any simulator, seed or request order.
fn embedding_vector(key: u64, dims: usize) -> Vec<f32> {
    let raw: Vec<f64> = (0..dims as u64)
        // The top 53 bits as a uniform draw in [-1, 1).
        .map(|i| (mix(key, i) >> 11) as f64 / (1u64 << 52) as f64 - 1.0)
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt();
    raw.iter()
        .map(|x| if norm > 0.0 { (x / norm) as f32 } else { 0.0 })
        .collect()
}

/// Standard base64 of little-endian f32s: OpenAI's `encoding_format: "base64"`, which the
/// official Python client asks for by default. A dozen lines rather than a dependency.
fn base64_f32(v: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `POST /v1/embeddings`. Each input is one prefill-only sequence on the GPUs (as vLLM turns
/// each input into its own engine request), so embeddings share batch slots and queues with
/// generation and cost `prefill_ms_per_1k` per 1,000 input tokens.
async fn embeddings(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let req = match s.request(&headers, &body) {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    let inputs = match embedding_inputs(&req) {
        Ok(v) => v,
        Err(e) => return s.bad_request(&e),
    };
    let dims = match req.get("dimensions").filter(|v| !v.is_null()) {
        None => s.cfg.embedding_dim,
        Some(v) => match v.as_u64() {
            Some(d) if d >= 1 && d <= s.cfg.embedding_dim as u64 => d as usize,
            _ => {
                let msg = format!(
                    "dimensions must be an integer from 1 to {}, got {v}",
                    s.cfg.embedding_dim
                );
                return s.bad_request(&msg);
            }
        },
    };
    let base64 = match req.get("encoding_format").filter(|v| !v.is_null()) {
        None => false,
        Some(v) if v == "float" => false,
        Some(v) if v == "base64" => true,
        Some(v) => return s.bad_request(&format!("encoding_format must be \"float\" or \"base64\", got {v}")),
    };
    let model = match s.model_for(&req) {
        Ok(m) => m,
        Err(resp) => return *resp,
    };
    let (_, mult) = match s.draw() {
        Ok(v) => v,
        Err(resp) => return *resp,
    };

    let guard = InFlight::new(&s);
    let mut answers = Vec::with_capacity(inputs.len());
    for input in &inputs {
        let (tx, rx) = mpsc::unbounded_channel();
        let seq = NewSeq {
            prompt_tokens: input.tokens,
            max_tokens: 0,
            mult,
            events: tx,
        };
        // Sequences already submitted finish on their own; their answers are simply dropped.
        if !s.cluster.submit(seq) {
            return s.no_gpu();
        }
        answers.push(rx);
    }
    let total = inputs.iter().map(|i| u64::from(i.tokens)).sum::<u64>();
    s.counters.prompt_tokens.fetch_add(total, Ordering::Relaxed);
    for mut rx in answers {
        // A prefill-only sequence sends nothing and closes its channel when done.
        if let Some(Event::Aborted) = rx.recv().await {
            return s.aborted();
        }
    }
    drop(guard);
    s.counters.ok.fetch_add(1, Ordering::Relaxed);
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let v = embedding_vector(input.key, dims);
            let embedding = if base64 { json!(base64_f32(&v)) } else { json!(v) };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let body = json!({"object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": total, "total_tokens": total}});
    json_ok(&body)
}

struct Meta {
    api: Api,
    id: String,
    model: String,
    created: u64,
    request: u64,
    prompt_tokens: u32,
    max_tokens: u32,
}

impl Meta {
    fn usage(&self, completion: u32) -> Value {
        json!({"prompt_tokens": self.prompt_tokens, "completion_tokens": completion, "total_tokens": self.prompt_tokens + completion})
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

async fn models(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if !s.authorized(&headers) {
        return s.unauthorized();
    }
    let body = json!({"object": "list", "data": [{"id": s.cfg.model, "object": "model", "created": 0, "owned_by": "sizeup-sim"}]});
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn health(State(s): State<Arc<AppState>>) -> Response {
    match s.power() {
        Power::On => ([(header::CONTENT_TYPE, "application/json")], r#"{"status":"ok"}"#).into_response(),
        _ => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "resource is not on",
            "service_unavailable",
        ),
    }
}

fn power_json(s: &AppState) -> Value {
    let state = match s.power() {
        Power::On => "on",
        Power::Off => "off",
        Power::Starting(_) => "starting",
    };
    json!({"state": state, "gpus": s.cluster.active()})
}

async fn resource_get(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if !s.authorized(&headers) {
        return s.unauthorized();
    }
    json_ok(&power_json(&s))
}

async fn resource_post(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    if !s.authorized(&headers) {
        return s.unauthorized();
    }
    let bad = |msg: &str| error_response(StatusCode::BAD_REQUEST, msg, "invalid_request_error");
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad("body must be JSON like {\"state\":\"on\",\"gpus\":4}");
    };
    // Check the whole request before changing anything: a bad field leaves the resource as it was.
    let gpus = match req.get("gpus").filter(|v| !v.is_null()) {
        None => None,
        Some(g) => match g.as_u64() {
            Some(n @ 1..=1024) => Some(n as usize),
            _ => return bad("gpus must be an integer from 1 to 1024"),
        },
    };
    let state = req.get("state").and_then(Value::as_str);
    if !matches!(state, None | Some("on" | "off")) {
        return bad("state must be \"on\" or \"off\"");
    }
    if let Some(n) = gpus {
        s.cluster.resize(n);
    }
    match state {
        Some("on") => {
            let mut p = s.power.lock().expect("power lock poisoned");
            if matches!(*p, Power::Off) {
                *p = if s.cfg.start_delay.is_zero() {
                    Power::On
                } else {
                    Power::Starting(Instant::now() + s.cfg.start_delay)
                };
            }
        }
        Some("off") => {
            *s.power.lock().expect("power lock poisoned") = Power::Off;
            s.cluster.abort_all();
        }
        _ => {}
    }
    json_ok(&power_json(&s))
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    use std::fmt::Write;
    let c = &s.counters;
    let g = &s.gauges;
    let mut out = String::new();
    let _ = writeln!(out, "# HELP sizeup_sim_requests_total Inference requests by outcome.");
    let _ = writeln!(out, "# TYPE sizeup_sim_requests_total counter");
    for (outcome, v) in [
        ("ok", &c.ok),
        ("error_500", &c.failed_500),
        ("throttled_429", &c.throttled_429),
        ("reset", &c.reset),
        ("unauthorized_401", &c.unauthorized_401),
        ("unavailable_503", &c.unavailable_503),
        ("bad_request_400", &c.bad_request_400),
        ("not_found_404", &c.not_found_404),
        ("aborted", &c.aborted),
    ] {
        let _ = writeln!(
            out,
            "sizeup_sim_requests_total{{outcome=\"{outcome}\"}} {}",
            v.load(Ordering::Relaxed)
        );
    }
    let gauges: [(&str, &str, u64); 6] = [
        (
            "sizeup_sim_requests_running",
            "Sequences decoding now, all GPUs.",
            g.running.load(Ordering::SeqCst) as u64,
        ),
        (
            "sizeup_sim_requests_waiting",
            "Requests queued for a free slot, all GPUs.",
            g.waiting.load(Ordering::SeqCst) as u64,
        ),
        (
            "sizeup_sim_requests_in_flight",
            "Inference requests being answered now.",
            s.in_flight.load(Ordering::SeqCst) as u64,
        ),
        (
            "sizeup_sim_requests_in_flight_max",
            "Most inference requests answered at once since start.",
            s.in_flight_max.load(Ordering::SeqCst) as u64,
        ),
        ("sizeup_sim_gpus", "GPUs taking new work.", s.cluster.active() as u64),
        (
            "sizeup_sim_batch_size",
            "Sequences one GPU decodes at once.",
            s.cfg.params.batch as u64,
        ),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
    for (name, help, v) in [
        (
            "sizeup_sim_prompt_tokens_total",
            "Prompt tokens admitted.",
            c.prompt_tokens.load(Ordering::Relaxed),
        ),
        (
            "sizeup_sim_generation_tokens_total",
            "Tokens generated.",
            g.generation_tokens.load(Ordering::Relaxed),
        ),
        (
            "sizeup_sim_cancelled_total",
            "Sequences dropped because the client went away.",
            g.cancelled.load(Ordering::Relaxed),
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    }
    vllm_metrics(&mut out, &s);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The same state under vLLM's names (v1 engine, `vllm/v1/metrics/loggers.py`), so the
/// simulator is a vLLM-shaped target for `--server-metrics`. KV cache usage is modelled as
/// the running sequences' tokens (prompt + max_tokens) over `KV_TOKENS_PER_SLOT` per slot;
/// the simulator never preempts.
fn vllm_metrics(out: &mut String, s: &AppState) {
    use std::fmt::Write;
    let g = &s.gauges;
    let running = g.running.load(Ordering::SeqCst) as u64;
    let kv_capacity =
        (s.cluster.active() * s.cfg.params.batch).max(1) as f64 * crate::sim::gpu::KV_TOKENS_PER_SLOT as f64;
    let labels = format!(
        "{{model_name=\"{}\"}}",
        s.cfg.model.replace('\\', "\\\\").replace('"', "\\\"")
    );
    let gauges = [
        (
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            running as f64,
        ),
        (
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            g.waiting.load(Ordering::SeqCst) as f64,
        ),
        (
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            (g.kv_tokens.load(Ordering::SeqCst) as f64 / kv_capacity).min(1.0),
        ),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{labels} {v}");
    }
    let counters = [
        (
            "vllm:num_preemptions",
            "Cumulative number of preemption from the engine.",
            0,
        ),
        (
            "vllm:prompt_tokens",
            "Number of prefill tokens processed.",
            s.counters.prompt_tokens.load(Ordering::Relaxed),
        ),
        (
            "vllm:generation_tokens",
            "Number of generation tokens processed.",
            g.generation_tokens.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(
            out,
            "# HELP {name}_total {help}\n# TYPE {name} counter\n{name}_total{labels} {v}"
        );
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

    #[test]
    fn embedding_inputs_and_vectors() {
        let tokens =
            |v: Value| embedding_inputs(&json!({ "input": v })).map(|i| i.iter().map(|x| x.tokens).collect::<Vec<_>>());
        assert_eq!(tokens(json!("a b c")), Ok(vec![3]));
        assert_eq!(tokens(json!(["a", "b c"])), Ok(vec![1, 2]));
        assert_eq!(tokens(json!([7, 8, 9])), Ok(vec![3]));
        assert_eq!(tokens(json!([[7], [8, 9]])), Ok(vec![1, 2]));
        for bad in [
            json!(""),
            json!([]),
            json!([[]]),
            json!([1.5]),
            json!(["a", [1]]),
            json!({"a": 1}),
        ] {
            assert!(tokens(bad.clone()).is_err(), "{bad}");
        }
        assert!(tokens(json!(vec!["x"; MAX_EMBEDDING_INPUTS + 1])).is_err());
        // Text and the ids of its bytes are different inputs.
        let key = |v: Value| embedding_inputs(&json!({ "input": v })).unwrap()[0].key;
        assert_ne!(key(json!("hi")), key(json!([104, 105])));
        assert_eq!(key(json!("hi")), key(json!(["hi"])));

        let v = embedding_vector(42, 16);
        assert_eq!(v, embedding_vector(42, 16));
        assert_ne!(v, embedding_vector(43, 16));
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    }

    #[test]
    fn base64_of_floats() {
        // 1.0f32 is 00 00 80 3f little-endian.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, -2.0]), "AACAPwAAAMA=");
        assert_eq!(base64_f32(&[1.0, -2.0, 0.5]), "AACAPwAAAMAAAAA/");
        assert_eq!(base64_f32(&[]), "");
    }

    #[test]
    fn seeds_spread() {
        assert_ne!(mix(1, 0), mix(1, 1));
        assert_eq!(mix(7, 42), mix(7, 42));
    }
}
