//! Speaks to an OpenAI-compatible endpoint. Every request ends as an [`Outcome`]: a failed
//! request is data (its class, status and message), never an `Err` and never a panic, so one
//! bad answer cannot stop a load. Knows nothing of the simulator.
//!
//! Long because: the request, its streamed and whole answers, error bodies in five server
//! dialects and usage from two fields are one protocol; the SSE decoder already lives apart.

mod h1;
pub mod sse;

use crate::api::scan::{once, Cursor, Scan, Unsure};
use crate::api::Api;
pub use crate::api::JsonText;
// Re-exported: the commands and benches build bodies with it through the client's API.
pub use crate::api::MaxTokensField;
use crate::secret::Secret;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use sse::{SseDecoder, SseEvent};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Why a client could not be built or the models list not be read. The client only reports;
/// the commands decide what a person reads and which exit code follows.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `--endpoint` is not an http(s) URL; the message names it, credentials redacted.
    #[error("{0}")]
    Endpoint(String),
    /// The HTTP client could not be set up (TLS backend).
    #[error(transparent)]
    Build(#[from] reqwest::Error),
    /// The server refused the credentials (401 or 403).
    #[error("HTTP {status} from /v1/models")]
    Rejected { status: u16 },
    /// No answer: connection refused, timeout, a cut body. The message is free of secrets.
    #[error("{0}")]
    Transport(String),
}

/// Settings for one client.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Base URL (`http://host:8000`) or full URL of the inference route.
    pub endpoint: String,
    pub api: Api,
    pub api_key: Option<Secret>,
    pub connect_timeout: Duration,
    /// Whole request, from send to the last byte of the answer.
    pub timeout: Duration,
    /// From send to the answer's status line and headers (a streaming server sends them at
    /// once; a non-streaming one only when the answer is ready). None: only `timeout` applies.
    pub first_byte_timeout: Option<Duration>,
    /// Idle keep-alive connections kept per host: the concurrency, so no request waits for a
    /// new TCP (and TLS) handshake after warm-up.
    pub pool: usize,
}

/// Token counts of one answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: u64,
    /// No `usage` came back: `completion_tokens` counts streamed content events (or words).
    pub estimated: bool,
}

/// The class of a failed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailKind {
    /// The server answered with this non-2xx status.
    Http(u16),
    Timeout,
    /// Could not connect (refused, DNS, TLS handshake).
    Connect,
    /// The connection closed before the answer was complete.
    Reset,
    /// A 2xx answer that could not be read: bad JSON, a cut stream, an error event.
    Decode,
}

impl FailKind {
    /// The HTTP status the server answered with; None for transport and decode failures.
    pub fn status(self) -> Option<u16> {
        match self {
            FailKind::Http(code) => Some(code),
            _ => None,
        }
    }

    /// The `status` column of reports: the HTTP code, or a word for transport failures.
    pub fn label(self) -> String {
        match self {
            FailKind::Http(code) => code.to_string(),
            FailKind::Timeout => "timeout".into(),
            FailKind::Connect => "connect".into(),
            FailKind::Reset => "reset".into(),
            FailKind::Decode => "decode".into(),
        }
    }

    /// Worth another try: overload, server errors and transport trouble. 4xx other than 408
    /// and 429 mean the request itself is wrong and will fail again.
    pub fn retryable(self) -> bool {
        match self {
            FailKind::Http(code) => code == 408 || code == 429 || code >= 500,
            FailKind::Timeout | FailKind::Connect | FailKind::Reset => true,
            FailKind::Decode => false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Failure {
    pub kind: FailKind,
    /// Free of secrets: built from status lines and error bodies, never from headers we sent.
    pub message: String,
    /// From a `Retry-After` header (seconds or HTTP date).
    pub retry_after: Option<Duration>,
    /// The error body, when the server sent JSON.
    pub body: Option<Value>,
}

#[derive(Clone, Debug)]
pub struct Success {
    pub status: u16,
    pub usage: Usage,
    /// Content events in a stream (0 when not streamed).
    pub content_events: u64,
    /// The answer as one JSON body (a stream assembled into the non-streamed shape); only kept
    /// when asked for, since a sweep throws bodies away.
    pub body: Option<JsonText>,
    pub request_id: Option<String>,
}

/// How one request went, with its timestamps.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub start: Instant,
    /// First non-empty content (streaming only).
    pub first_token: Option<Instant>,
    pub end: Instant,
    pub result: Result<Success, Failure>,
}

impl Outcome {
    /// A copy without the answer's body (which can be large): for records that need the
    /// outcome's facts while the body goes elsewhere.
    pub fn clone_without_body(&self) -> Outcome {
        Outcome {
            start: self.start,
            first_token: self.first_token,
            end: self.end,
            result: match &self.result {
                Ok(ok) => Ok(Success {
                    status: ok.status,
                    usage: ok.usage,
                    content_events: ok.content_events,
                    body: None,
                    request_id: ok.request_id.clone(),
                }),
                Err(f) => Err(f.clone()),
            },
        }
    }

    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }

    pub fn latency(&self) -> Duration {
        self.end - self.start
    }
}

pub struct Client {
    http: reqwest::Client,
    /// Plain-HTTP endpoints go through the client's own HTTP/1.1 transport (see `h1.rs`); the rest through `http`.
    direct: Option<h1::Direct>,
    url: reqwest::Url,
    api_key: Option<Secret>,
    timeout: Duration,
    first_byte_timeout: Option<Duration>,
    /// Learned: the server closes a connection after each streamed answer without saying so
    /// (llama.cpp's llama-server does: its SSE answers advertise keep-alive, then the socket is
    /// closed). From then on streamed requests ask for `Connection: close`, so none is sent on
    /// a connection the server has already dropped.
    closes_after_stream: AtomicBool,
    /// Set with `closes_after_stream`, for whoever waits on it (see
    /// [`Client::learned_closes_after_stream`]): the notice a person reads is the command's to
    /// print. The atomic above stays the flag every streamed request reads, lock-free.
    learned_close: watch::Sender<bool>,
    /// Complete streamed answers so far: until one came, no pooled connection can have been
    /// left closed by a stream, and a closed connection is an ordinary `Reset`.
    streamed_answers: AtomicU64,
    /// Requests sent again at once because a kept-alive connection turned out closed before
    /// any answer byte (see [`Client::stale_retries`]).
    stale_retries: AtomicU64,
    /// Most such retries this client makes; beyond it a closed connection is a `Reset` failure
    /// like any other, so a server that really drops requests is never hidden.
    stale_retry_budget: u64,
}

/// Attempts of one request when kept-alive connections turn out to be closed.
const STALE_ATTEMPTS: u32 = 3;

/// Largest answer body accepted; a bigger one is a decode failure, not an out-of-memory.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// Resolves `--endpoint` for an API: a base URL gets the API's path; a URL that already names
/// a route is used as given.
pub fn resolve_url(endpoint: &str, api: Api) -> Result<reqwest::Url, ClientError> {
    let url = reqwest::Url::parse(endpoint)
        .map_err(|e| ClientError::Endpoint(format!("invalid --endpoint `{}`: {e}", redact_url(endpoint))))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ClientError::Endpoint(format!(
            "--endpoint must be an http:// or https:// URL, got `{}`",
            redact_url(endpoint)
        )));
    }
    let path = url.path().trim_end_matches('/');
    if api == Api::Forefront || path.ends_with("/completions") || path.ends_with("/embeddings") {
        return Ok(url);
    }
    let base = path.strip_suffix("/v1").unwrap_or(path);
    let mut out = url.clone();
    out.set_path(&format!("{base}{}", api.path()));
    Ok(out)
}

/// The endpoint as safe to print: user and password in the URL are replaced.
pub fn redact_url(endpoint: &str) -> String {
    match reqwest::Url::parse(endpoint) {
        Ok(mut u) => {
            if !u.username().is_empty() || u.password().is_some() {
                let _ = u.set_username("***");
                let _ = u.set_password(None);
            }
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "<invalid URL>".into(),
    }
}

/// The base URL of an endpoint (scheme, host, port), for `/v1/models` and the like.
pub fn base_url(endpoint: &str) -> Option<reqwest::Url> {
    let mut u = reqwest::Url::parse(endpoint).ok()?;
    let path = u.path().to_string();
    let keep = match path.find("/v1") {
        Some(i) => path[..i].to_string(),
        None => String::new(),
    };
    u.set_path(&keep);
    u.set_query(None);
    Some(u)
}

impl Client {
    pub fn new(cfg: &ClientConfig) -> Result<Client, ClientError> {
        let url = resolve_url(&cfg.endpoint, cfg.api)?;
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .pool_max_idle_per_host(cfg.pool.max(1))
            .tcp_nodelay(true)
            .user_agent(concat!("sizeup/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let direct = h1::Direct::new(
            &url,
            cfg.api_key.as_ref().map(Secret::expose),
            cfg.connect_timeout,
            cfg.pool.max(1),
        );
        Ok(Client {
            http,
            direct,
            url,
            api_key: cfg.api_key.clone(),
            timeout: cfg.timeout,
            first_byte_timeout: cfg.first_byte_timeout,
            closes_after_stream: AtomicBool::new(false),
            learned_close: watch::Sender::new(false),
            streamed_answers: AtomicU64::new(0),
            stale_retries: AtomicU64::new(0),
            stale_retry_budget: 2 * cfg.pool.max(1) as u64 + 4,
        })
    }

    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// Requests that were sent again, at once, because the kept-alive connection they went
    /// out on had been closed by the server after a streamed answer, before any byte of this
    /// answer (the server never read them). Not failures; counted so a report can show them.
    pub fn stale_retries(&self) -> u64 {
        self.stale_retries.load(Ordering::Relaxed)
    }

    /// Whether this client has learned that the server closes connections after streamed
    /// answers (and so sends streamed requests with `Connection: close`).
    pub fn closes_after_stream(&self) -> bool {
        self.closes_after_stream.load(Ordering::Relaxed)
    }

    /// Resolves to true the moment this client learns that the server closes connections after
    /// streamed answers (at once if it already has), or to false once the client is dropped
    /// without having learned it. Owns what it needs, so it can be awaited on a spawned task.
    pub fn learned_closes_after_stream(&self) -> impl std::future::Future<Output = bool> + Send + 'static {
        let mut rx = self.learned_close.subscribe();
        async move { rx.wait_for(|learned| *learned).await.is_ok() }
    }

    /// Sends one request body and reads the whole answer (a stream when the body asks for
    /// one). `keep_body` keeps the answer for output files.
    ///
    /// llama.cpp's server closes the connection after every streamed answer without saying
    /// `Connection: close`, so the next request on that kept-alive connection meets a closed
    /// socket. Once this client has had a streamed answer, a request that fails that way
    /// (reset before any answer header) is sent again at once on a fresh connection, and later
    /// streamed requests ask for `Connection: close`. At most `2 x pool + 4` such retries per
    /// client, so a server that really drops requests still shows; see [`Client::stale_retries`].
    pub async fn send(&self, body: Bytes, stream: bool, keep_body: bool) -> Outcome {
        let start = Instant::now();
        let mut first_token = None;
        let attempts = async {
            let mut attempt = 1;
            loop {
                let mut answered = false;
                let close = stream && self.closes_after_stream.load(Ordering::Relaxed);
                let r = self
                    .exchange(body.clone(), stream, keep_body, close, &mut first_token, &mut answered)
                    .await;
                match r {
                    Ok(ok) => {
                        if stream {
                            self.streamed_answers.fetch_add(1, Ordering::Relaxed);
                        }
                        return Ok(ok);
                    }
                    Err(f)
                        if !answered
                            && f.kind == FailKind::Reset
                            && attempt < STALE_ATTEMPTS
                            && self.streamed_answers.load(Ordering::Relaxed) > 0 =>
                    {
                        if self.stale_retries.load(Ordering::Relaxed) >= self.stale_retry_budget {
                            return Err(f);
                        }
                        self.stale_retries.fetch_add(1, Ordering::Relaxed);
                        if !self.closes_after_stream.swap(true, Ordering::Relaxed) {
                            self.learned_close.send_replace(true);
                        }
                        attempt += 1;
                        first_token = None;
                    }
                    r => return r,
                }
            }
        };
        let result = match tokio::time::timeout(self.timeout, attempts).await {
            Ok(r) => r,
            Err(_) => Err(Failure {
                kind: FailKind::Timeout,
                message: format!("no complete answer within {}", humantime::format_duration(self.timeout)),
                retry_after: None,
                body: None,
            }),
        };
        Outcome {
            start,
            first_token,
            end: Instant::now(),
            result,
        }
    }

    /// One attempt. `answered` is set once the answer's status line and headers arrived.
    async fn exchange(
        &self,
        body: Bytes,
        stream: bool,
        keep_body: bool,
        close: bool,
        first_token: &mut Option<Instant>,
        answered: &mut bool,
    ) -> Result<Success, Failure> {
        let sending = async {
            match &self.direct {
                Some(direct) => match direct.send(body, close).await {
                    Ok(a) => Ok(Answer::Direct(a)),
                    Err(e) => {
                        // A broken answer is still an answer: the request is not sent again
                        // as if a stale connection had swallowed it.
                        *answered |= e.answered();
                        Err(direct_failure(e))
                    }
                },
                None => {
                    let mut req = self
                        .http
                        .post(self.url.clone())
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body);
                    if close {
                        req = req.header(reqwest::header::CONNECTION, "close");
                    }
                    if let Some(key) = &self.api_key {
                        req = req.bearer_auth(key.expose());
                    }
                    req.send().await.map(Answer::Pooled).map_err(transport_failure)
                }
            }
        };
        let mut resp = match self.first_byte_timeout {
            None => sending.await?,
            Some(limit) => tokio::time::timeout(limit, sending).await.map_err(|_| Failure {
                kind: FailKind::Timeout,
                message: format!(
                    "no answer headers within {} (--first-byte-timeout)",
                    humantime::format_duration(limit)
                ),
                retry_after: None,
                body: None,
            })??,
        };
        *answered = true;
        let status = resp.status();
        let request_id = resp.header(Kept::RequestId).map(str::to_string);
        if !(200..300).contains(&status) {
            let retry_after = resp.header(Kept::RetryAfter).and_then(parse_retry_after);
            let bytes = resp.read_to_end().await.unwrap_or_default();
            let body: Option<Value> = serde_json::from_slice(&bytes).ok();
            let detail = body.as_ref().and_then(error_message).unwrap_or_else(|| {
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                    .trim()
                    .to_string()
            });
            let reason = reqwest::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("");
            let message = if detail.is_empty() {
                format!("HTTP {status} {reason}")
            } else {
                format!("HTTP {status} {reason}: {detail}")
            };
            return Err(Failure {
                kind: FailKind::Http(status),
                message,
                retry_after,
                body,
            });
        }
        let is_sse = resp
            .header(Kept::ContentType)
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if stream || is_sse {
            let mut acc = StreamAssembler::new(keep_body);
            let mut decoder = SseDecoder::new();
            let mut events = Vec::new();
            loop {
                let Some(chunk) = resp.chunk().await? else { break };
                decoder
                    .push(&chunk, &mut events)
                    .map_err(|e| decode_failure(e.to_string()))?;
                for ev in events.drain(..) {
                    acc.event(ev, first_token)?;
                }
                if acc.done {
                    // Read the (empty) rest of the body, so the connection goes back to the
                    // keep-alive pool instead of being dropped and re-opened.
                    while let Ok(Some(_)) = resp.chunk().await {}
                    break;
                }
            }
            if !acc.done {
                decoder.finish().map_err(|e| decode_failure(e.to_string()))?;
                if acc.finish_reason.is_none() {
                    return Err(decode_failure(
                        "event stream ended without [DONE] or a finish_reason".into(),
                    ));
                }
            }
            let content_events = acc.content_events;
            let (usage, body) = acc.into_parts();
            return Ok(Success {
                status,
                usage,
                content_events,
                body: body.as_ref().map(JsonText::from_value),
                request_id,
            });
        }
        let bytes = resp.read_to_end().await?;
        // UTF-8 is checked once for the whole answer, so the parsers below read it as text and
        // do not check each string again.
        let text = String::from_utf8(bytes).map_err(|_| decode_failure("answer is not UTF-8".into()))?;
        // The common answer (usage, no error) is read through a small typed view and kept as
        // the text it came in: no JSON tree is built, cloned or re-serialized per request.
        let peeked = peek_usage(&text)
            // An embedding's usage has prompt tokens only: it generates none.
            .and_then(|(prompt, completion)| Some((prompt, completion.or(prompt.map(|_| 0))?)));
        if let Some((prompt_tokens, completion)) = peeked {
            // `peek_usage` above checked this same text whole: no second parse to keep it.
            let body = keep_body.then(|| JsonText::parsed(text));
            let usage = Usage {
                prompt_tokens,
                completion_tokens: completion,
                estimated: false,
            };
            return Ok(Success {
                status,
                usage,
                content_events: 0,
                body,
                request_id,
            });
        }
        let body: Value =
            serde_json::from_str(&text).map_err(|e| decode_failure(format!("answer is not JSON: {e}")))?;
        if let Some(msg) = body
            .get("error")
            .filter(|e| !e.is_null())
            .and_then(|_| error_message(&body))
        {
            return Err(Failure {
                kind: error_kind(&body),
                message: format!("error in a {status} answer: {msg}"),
                retry_after: None,
                body: Some(body),
            });
        }
        let usage = usage_of(&body).unwrap_or_else(|| Usage {
            prompt_tokens: None,
            completion_tokens: answer_text(&body).map_or(0, |t| t.split_whitespace().count() as u64),
            estimated: true,
        });
        Ok(Success {
            status,
            usage,
            content_events: 0,
            body: if keep_body {
                Some(JsonText::from_value(&body))
            } else {
                None
            },
            request_id,
        })
    }
}

fn decode_failure(message: String) -> Failure {
    Failure {
        kind: FailKind::Decode,
        message,
        retry_after: None,
        body: None,
    }
}

/// An answer whose head arrived, from either transport; its body is read through [`Answer::chunk`].
enum Answer<'a> {
    Pooled(reqwest::Response),
    Direct(h1::Answer<'a>),
}

impl Answer<'_> {
    fn status(&self) -> u16 {
        match self {
            Answer::Pooled(r) => r.status().as_u16(),
            Answer::Direct(a) => a.head.status,
        }
    }

    /// One of the headers the client reads.
    fn header(&self, which: Kept) -> Option<&str> {
        match self {
            Answer::Pooled(r) => {
                let name = match which {
                    Kept::ContentType => reqwest::header::CONTENT_TYPE.as_str(),
                    Kept::RetryAfter => reqwest::header::RETRY_AFTER.as_str(),
                    Kept::RequestId => "x-request-id",
                };
                r.headers().get(name).and_then(|v| v.to_str().ok())
            }
            Answer::Direct(a) => match which {
                Kept::ContentType => a.head.content_type.as_deref(),
                Kept::RetryAfter => a.head.retry_after.as_deref(),
                Kept::RequestId => a.head.request_id.as_deref(),
            },
        }
    }

    /// The next piece of the body; None at its end.
    async fn chunk(&mut self) -> Result<Option<Bytes>, Failure> {
        match self {
            Answer::Pooled(r) => r.chunk().await.map_err(transport_failure),
            Answer::Direct(a) => a.chunk().await.map_err(direct_failure),
        }
    }

    /// The whole body, at most [`MAX_BODY`].
    async fn read_to_end(&mut self) -> Result<Vec<u8>, Failure> {
        let mut bytes = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            if bytes.len() + chunk.len() > MAX_BODY {
                return Err(decode_failure(format!("answer larger than {} MiB", MAX_BODY >> 20)));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
}

/// The answer headers the client reads (the direct transport keeps only these).
#[derive(Clone, Copy)]
enum Kept {
    ContentType,
    RetryAfter,
    RequestId,
}

/// Classifies a failure of the direct transport as [`transport_failure`] classifies reqwest's:
/// a connection that failed once open, or an answer that was not HTTP, is a `Reset` (worth
/// another try).
fn direct_failure(e: h1::SendError) -> Failure {
    let kind = match &e {
        h1::SendError::Connect(_) => FailKind::Connect,
        h1::SendError::ConnectTimeout(_) => FailKind::Timeout,
        h1::SendError::Io(_) | h1::SendError::Closed | h1::SendError::Protocol(_) => FailKind::Reset,
    };
    Failure {
        kind,
        message: e.to_string(),
        retry_after: None,
        body: None,
    }
}

/// An error and its sources as one message (`a: b: c`), each text once (a source's text is
/// often already inside its parent's); `each` sees every error of the chain on the way.
fn error_chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
    mut each: impl FnMut(&'a (dyn std::error::Error + 'static)),
) -> String {
    let mut chain: Vec<String> = Vec::new();
    let mut src = Some(e);
    while let Some(err) = src {
        each(err);
        let text = err.to_string();
        if !chain.iter().any(|c| c.contains(&text)) {
            chain.push(text);
        }
        src = err.source();
    }
    chain.join(": ")
}

/// Classifies a transport error. The message is rebuilt from the error chain without the URL,
/// so credentials in a URL never reach a report.
fn transport_failure(e: reqwest::Error) -> Failure {
    let e = e.without_url();
    let mut reset = false;
    let message = error_chain(&e, |err| {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            reset |= matches!(
                io.kind(),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
            );
        }
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            reset |= h.is_incomplete_message() || h.is_closed() || h.is_canceled();
        }
    });
    let kind = if e.is_timeout() {
        FailKind::Timeout
    } else if e.is_connect() {
        FailKind::Connect
    } else if reset || e.is_request() || e.is_body() {
        FailKind::Reset
    } else {
        FailKind::Decode
    };
    Failure {
        kind,
        message,
        retry_after: None,
        body: None,
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The human part of an error body, in the shapes servers send:
/// OpenAI and llama.cpp `{"error":{"message","type","code"}}`, vLLM and SGLang
/// `{"object":"error","message","type","code"}` (or wrapped in `error`), TGI
/// `{"error":"...","error_type":"..."}`, FastAPI `{"detail":...}`. The error type leads when
/// the message does not already name it, so a report's `error` column reads e.g.
/// `exceed_context_size_error: request (1530 tokens) exceeds the available context size ...`.
fn error_message(body: &Value) -> Option<String> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let (msg, kind) = match body.get("error").filter(|e| !e.is_null()) {
        Some(Value::Object(o)) => (
            o.get("message").map_or_else(|| text(&body["error"]), text),
            o.get("type").or_else(|| body.get("error_type")),
        ),
        Some(e) => (text(e), body.get("error_type").or_else(|| body.get("type"))),
        None => match (body.get("message"), body.get("detail")) {
            (Some(m), _) if !m.is_null() => (text(m), body.get("type")),
            (_, Some(d)) if !d.is_null() => (text(d), None),
            _ => return None,
        },
    };
    let kind = kind
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty() && !msg.contains(k));
    let full = match kind {
        Some(k) => format!("{k}: {msg}"),
        None => msg,
    };
    Some(full.chars().take(500).collect())
}

/// The class of an error that arrived inside a 2xx answer (a JSON body or a stream event):
/// the HTTP status the error names (`error.code`, `code`, or TGI's `error.http_status_code`,
/// 400..599), else a decode failure. So a mid-stream 500 is retried like any 500, a 400 is not.
fn error_kind(body: &Value) -> FailKind {
    let code = ["/error/code", "/code", "/error/http_status_code"]
        .iter()
        .filter_map(|p| body.pointer(p))
        .find_map(|c| c.as_u64().or_else(|| c.as_str()?.parse().ok()));
    match code {
        Some(c) if (400..600).contains(&c) => FailKind::Http(c as u16),
        _ => FailKind::Decode,
    }
}

/// `usage`'s prompt and completion tokens of an answer that is one JSON object with a `usage`
/// object and no `error` (or a null one); None for any other answer, which the caller then
/// reads whole. The scan cursor reads it in one pass; where it is unsure, serde_json's typed
/// view [`Peek`] decides, so the result is always `Peek`'s.
fn peek_usage(text: &str) -> Option<(Option<u64>, Option<u64>)> {
    scan_usage(text).unwrap_or_else(|Unsure| peek_by_serde(text))
}

/// What [`peek_usage`] gives, read by serde_json's typed view alone: its fallback, and the
/// reference its tests compare the cursor with.
fn peek_by_serde(text: &str) -> Option<(Option<u64>, Option<u64>)> {
    serde_json::from_str::<Peek>(text)
        .ok()
        .filter(|p| p.error.is_none())
        .and_then(|p| p.usage)
        .map(|u| (u.prompt_tokens, u.completion_tokens))
}

fn scan_usage(text: &str) -> Scan<Option<(Option<u64>, Option<u64>)>> {
    let mut c = Cursor::new(text);
    let (mut usage, mut seen_usage, mut error) = (None, None, None);
    c.object(|c, key| match key {
        "usage" => {
            once(&mut seen_usage, ())?;
            if text[c.value_start()..].starts_with('n') {
                // `null`, or not JSON: the skip tells.
                return c.skip().map(drop);
            }
            let (mut prompt, mut completion) = (None, None);
            c.object(|c, key| match key {
                "prompt_tokens" => once(&mut prompt, c.uint_or_null()?),
                "completion_tokens" => once(&mut completion, c.uint_or_null()?),
                _ => c.skip().map(drop),
            })?;
            usage = Some((prompt.flatten(), completion.flatten()));
            Ok(())
        }
        "error" => {
            let span = c.skip()?;
            if &text[span] != "null" {
                // An error answer is read whole.
                return Err(Unsure);
            }
            once(&mut error, ())
        }
        _ => c.skip().map(drop),
    })?;
    c.end()?;
    Ok(usage)
}

/// What serde_json reads of an answer where the scan cursor is unsure; every other field is
/// skipped unparsed.
#[derive(serde::Deserialize)]
struct Peek {
    #[serde(default)]
    usage: Option<PeekUsage>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct PeekUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

/// Token counts from `usage`, else from llama.cpp's `timings` (sent on the last chunk of a
/// stream even when usage is not asked for: `predicted_n` generated tokens, `prompt_n` +
/// `cache_n` prompt tokens; exact, not estimates).
fn usage_of(v: &Value) -> Option<Usage> {
    reported_usage(v).or_else(|| timings_usage(v))
}

fn reported_usage(v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    Some(Usage {
        prompt_tokens: u.get("prompt_tokens").and_then(Value::as_u64),
        // An embedding's usage has prompt tokens only: it generates none.
        completion_tokens: u
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .or_else(|| u.get("prompt_tokens").and_then(Value::as_u64).map(|_| 0))?,
        estimated: false,
    })
}

fn timings_usage(v: &Value) -> Option<Usage> {
    let t = v.get("timings").filter(|t| t.is_object())?;
    let prompt = t
        .get("prompt_n")
        .and_then(Value::as_u64)
        .map(|p| p + t.get("cache_n").and_then(Value::as_u64).unwrap_or(0));
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: t.get("predicted_n").and_then(Value::as_u64)?,
        estimated: false,
    })
}

/// The generated text of a non-streamed answer in any of the three shapes.
fn answer_text(v: &Value) -> Option<&str> {
    v.pointer("/choices/0/text")
        .or_else(|| v.pointer("/choices/0/message/content"))
        .or_else(|| v.pointer("/result/0/completion"))
        .and_then(Value::as_str)
}

/// Folds stream chunks into usage and, optionally, one non-streamed-shaped body.
struct StreamAssembler {
    keep: bool,
    text: String,
    content_events: u64,
    usage: Option<Usage>,
    /// From llama.cpp's `timings`, used only when no `usage` came.
    timings_usage: Option<Usage>,
    finish_reason: Option<String>,
    chat: bool,
    first_chunk: Option<Value>,
    done: bool,
}

impl StreamAssembler {
    fn new(keep: bool) -> Self {
        StreamAssembler {
            keep,
            text: String::new(),
            content_events: 0,
            usage: None,
            timings_usage: None,
            finish_reason: None,
            chat: false,
            first_chunk: None,
            done: false,
        }
    }

    fn event(&mut self, ev: SseEvent, first_token: &mut Option<Instant>) -> Result<(), Failure> {
        let data = match ev {
            SseEvent::Done => {
                self.done = true;
                return Ok(());
            }
            SseEvent::Data(d) => d,
        };
        let chunk: Value =
            serde_json::from_str(&data).map_err(|e| decode_failure(format!("stream event is not JSON: {e}")))?;
        // An error after the 200 status line (vLLM, SGLang, TGI, OpenAI send one as an event).
        let is_error = chunk.get("error").is_some_and(|e| !e.is_null())
            || chunk.get("object").and_then(Value::as_str) == Some("error");
        if is_error {
            return Err(Failure {
                kind: error_kind(&chunk),
                message: format!("error event in stream: {}", error_message(&chunk).unwrap_or_default()),
                retry_after: None,
                body: Some(chunk),
            });
        }
        // Servers differ in where usage goes: OpenAI, vLLM and llama.cpp's chat send a last
        // chunk with `choices: []`; llama.cpp's completions put it on the chunk with
        // `finish_reason`; TGI on the finish chunk too. llama.cpp also sends `timings`.
        if let Some(u) = reported_usage(&chunk) {
            self.usage = Some(u);
        } else if let Some(u) = timings_usage(&chunk) {
            self.timings_usage = Some(u);
        }
        if let Some(choice) = chunk.pointer("/choices/0") {
            let content = choice.get("text").and_then(Value::as_str).or_else(|| {
                let c = choice.pointer("/delta/content").and_then(Value::as_str);
                if c.is_some() || choice.get("delta").is_some() {
                    self.chat = true;
                }
                c
            });
            if let Some(text) = content.filter(|t| !t.is_empty()) {
                if first_token.is_none() {
                    *first_token = Some(Instant::now());
                }
                self.content_events += 1;
                if self.keep {
                    self.text.push_str(text);
                }
            }
            if let Some(fr) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish_reason = Some(fr.to_string());
            }
        }
        if self.keep && self.first_chunk.is_none() {
            self.first_chunk = Some(chunk);
        }
        Ok(())
    }

    fn into_parts(self) -> (Usage, Option<Value>) {
        let counted = self.usage.or(self.timings_usage);
        let usage = counted.unwrap_or(Usage {
            prompt_tokens: None,
            completion_tokens: self.content_events,
            estimated: true,
        });
        let body = self.keep.then(|| {
            let first = self.first_chunk.unwrap_or(Value::Null);
            let finish = self.finish_reason.map_or(Value::Null, Value::String);
            let choice = if self.chat {
                json!({"index": 0, "message": {"role": "assistant", "content": self.text}, "finish_reason": finish})
            } else {
                json!({"index": 0, "text": self.text, "finish_reason": finish})
            };
            let mut out = Map::new();
            for key in ["id", "created", "model"] {
                if let Some(v) = first.get(key) {
                    out.insert(key.into(), v.clone());
                }
            }
            out.insert(
                "object".into(),
                json!(if self.chat {
                    "chat.completion"
                } else {
                    "text_completion"
                }),
            );
            out.insert("choices".into(), json!([choice]));
            if let Some(u) = counted {
                let mut uj = json!({"completion_tokens": u.completion_tokens});
                if let Some(p) = u.prompt_tokens {
                    uj["prompt_tokens"] = json!(p);
                    uj["total_tokens"] = json!(p + u.completion_tokens);
                }
                out.insert("usage".into(), uj);
            }
            Value::Object(out)
        });
        (usage, body)
    }
}

/// Builds a request body for `api` from a prompt (synthetic workloads, text and CSV inputs).
pub fn build_body(
    api: Api,
    model: Option<&str>,
    prompt: &str,
    max_tokens: Option<u32>,
    field: MaxTokensField,
) -> Value {
    let mut body = match api {
        Api::Chat => json!({"messages": [{"role": "user", "content": prompt}]}),
        Api::Completions | Api::Forefront => json!({"prompt": prompt}),
        Api::Embeddings => json!({"input": prompt}),
    };
    if let Some(m) = model {
        body["model"] = json!(m);
    }
    // An embedding generates nothing, and OpenAI rejects unknown fields on /v1/embeddings.
    if let Some(n) = max_tokens.filter(|_| api != Api::Embeddings) {
        let key = if api == Api::Forefront {
            "max_tokens"
        } else {
            field.key()
        };
        body[key] = json!(n);
    }
    body
}

/// Adjusts a body for measurement: the model when missing, and streaming with usage when
/// asked (TTFT needs a stream; usage in the stream keeps token counts exact).
pub fn prepare_body(body: &mut Value, model: Option<&str>, stream: Option<bool>) {
    let Some(obj) = body.as_object_mut() else { return };
    if let Some(m) = model {
        obj.entry("model").or_insert_with(|| json!(m));
    }
    match stream {
        Some(true) => {
            obj.insert("stream".into(), json!(true));
            obj.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Some(false) => {
            obj.remove("stream");
            obj.remove("stream_options");
        }
        None => {}
    }
}

/// Whether a body asks for a stream.
pub fn wants_stream(body: &Value) -> bool {
    body.get("stream").and_then(Value::as_bool).unwrap_or(false)
}

/// `GET /v1/models`: the first model's id, for when `--model` is not given.
pub async fn first_model(
    endpoint: &str,
    api_key: Option<&Secret>,
    timeout: Duration,
) -> Result<Option<String>, ClientError> {
    let Some(mut url) = base_url(endpoint) else {
        return Err(ClientError::Endpoint("invalid endpoint URL".into()));
    };
    let path = format!("{}/v1/models", url.path().trim_end_matches('/'));
    url.set_path(&path);
    let http = reqwest::Client::builder().timeout(timeout).build()?;
    let mut req = http.get(url);
    if let Some(k) = api_key {
        req = req.bearer_auth(k.expose());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| ClientError::Transport(transport_failure(e).message))?;
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(ClientError::Rejected {
            status: status.as_u16(),
        });
    }
    if !status.is_success() {
        // Servers without a models route: go on without a model field.
        return Ok(None);
    }
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| ClientError::Transport(transport_failure(e).message))?;
    // A server whose unknown routes answer 200 with a web page (a UI's catch-all) has no
    // models list either: go on without a model field, the server picks its own.
    let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(None);
    };
    Ok(v.pointer("/data/0/id").and_then(Value::as_str).map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_resolve() {
        let u = |e, a| resolve_url(e, a).unwrap().to_string();
        assert_eq!(u("http://h:8000", Api::Completions), "http://h:8000/v1/completions");
        assert_eq!(u("http://h:8000/", Api::Chat), "http://h:8000/v1/chat/completions");
        assert_eq!(u("http://h:8000/v1", Api::Chat), "http://h:8000/v1/chat/completions");
        assert_eq!(
            u("https://h/x/v1/chat/completions", Api::Chat),
            "https://h/x/v1/chat/completions"
        );
        assert_eq!(u("https://h/api/run", Api::Forefront), "https://h/api/run");
        assert!(resolve_url("ftp://h", Api::Chat).is_err());
        assert!(resolve_url("not a url", Api::Chat).is_err());
        assert_eq!(redact_url("https://user:pw@h/v1?key=1"), "https://***@h/v1");
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn retry_classes() {
        assert!(FailKind::Http(429).retryable());
        assert!(FailKind::Http(503).retryable());
        assert!(!FailKind::Http(400).retryable());
        assert!(!FailKind::Http(401).retryable());
        assert!(!FailKind::Http(422).retryable());
        assert!(FailKind::Reset.retryable());
        assert!(!FailKind::Decode.retryable());
    }

    #[test]
    fn bodies() {
        let b = build_body(Api::Chat, Some("m"), "hi", Some(8), MaxTokensField::MaxTokens);
        assert_eq!(
            b,
            json!({"messages":[{"role":"user","content":"hi"}],"model":"m","max_tokens":8})
        );
        let b = build_body(
            Api::Completions,
            None,
            "hi",
            Some(8),
            MaxTokensField::MaxCompletionTokens,
        );
        assert_eq!(b, json!({"prompt":"hi","max_completion_tokens":8}));
        let mut b = json!({"prompt":"x","model":"given"});
        prepare_body(&mut b, Some("other"), Some(true));
        assert_eq!(b["model"], "given");
        assert_eq!(b["stream_options"]["include_usage"], true);
    }

    #[test]
    fn error_bodies_of_every_shape() {
        let m = |v: Value| error_message(&v);
        assert_eq!(
            m(json!({"error":{"code":400,"message":"too long","type":"exceed_context_size_error"}})).as_deref(),
            Some("exceed_context_size_error: too long")
        );
        assert_eq!(
            m(json!({"object":"error","message":"bad","type":"BadRequestError","code":400})).as_deref(),
            Some("BadRequestError: bad")
        );
        assert_eq!(
            m(json!({"error":"Input validation error: x","error_type":"validation"})).as_deref(),
            Some("Input validation error: x")
        );
        assert_eq!(m(json!({"detail":"Not Found"})).as_deref(), Some("Not Found"));
        assert_eq!(m(json!({"error":null,"choices":[]})), None);
        assert_eq!(error_kind(&json!({"error":{"code":500}})), FailKind::Http(500));
        assert_eq!(
            error_kind(&json!({"error":{"http_status_code":422}})),
            FailKind::Http(422)
        );
        assert_eq!(
            error_kind(&json!({"error":{"code":"context_length_exceeded"}})),
            FailKind::Decode
        );
        // llama.cpp's timings stand in for usage; usage wins when both came.
        let t = json!({"timings":{"prompt_n":3,"cache_n":29,"predicted_n":8}});
        assert_eq!(
            usage_of(&t),
            Some(Usage {
                prompt_tokens: Some(32),
                completion_tokens: 8,
                estimated: false
            })
        );
        let both = json!({"usage":{"prompt_tokens":32,"completion_tokens":7},"timings":{"predicted_n":8}});
        assert_eq!(usage_of(&both).map(|u| u.completion_tokens), Some(7));
    }

    #[test]
    fn assembles_streams_with_usage_anywhere() {
        let mut t = None;
        // llama.cpp completions: usage on the finish chunk.
        let mut a = StreamAssembler::new(true);
        a.event(
            SseEvent::Data(r#"{"choices":[{"text":" a","finish_reason":null}]}"#.into()),
            &mut t,
        )
        .unwrap();
        a.event(SseEvent::Data(r#"{"choices":[{"text":" b","finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#.into()), &mut t).unwrap();
        a.event(SseEvent::Done, &mut t).unwrap();
        assert!(t.is_some());
        let (u, body) = a.into_parts();
        assert_eq!(
            u,
            Usage {
                prompt_tokens: Some(3),
                completion_tokens: 2,
                estimated: false
            }
        );
        assert_eq!(body.unwrap()["choices"][0]["text"], " a b");
        // No usage at all: counted events, marked estimated.
        let mut a = StreamAssembler::new(false);
        a.event(
            SseEvent::Data(r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#.into()),
            &mut t,
        )
        .unwrap();
        a.event(
            SseEvent::Data(r#"{"choices":[{"delta":{"content":"x"}}]}"#.into()),
            &mut t,
        )
        .unwrap();
        let (u, _) = a.into_parts();
        assert_eq!(
            u,
            Usage {
                prompt_tokens: None,
                completion_tokens: 1,
                estimated: true
            }
        );
        let mut a = StreamAssembler::new(false);
        assert!(a.event(SseEvent::Data("not json".into()), &mut t).is_err());
        assert!(a
            .event(SseEvent::Data(r#"{"error":{"message":"boom"}}"#.into()), &mut t)
            .is_err());
    }

    #[test]
    fn usage_is_read_in_one_pass_for_the_common_answer() {
        let common = r#"{"id":"c","choices":[{"text":" hi\n","index":0}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6},"error":null}"#;
        assert_eq!(scan_usage(common), Ok(Some((Some(5), Some(1)))));
        assert_eq!(
            scan_usage(r#"{"usage":{"prompt_tokens":3}}"#),
            Ok(Some((Some(3), None)))
        );
        assert_eq!(scan_usage(r#"{"usage":null}"#), Ok(None));
        // Unsure: serde_json's typed view decides, with what it has always decided.
        for (unsure, peeked) in [
            (r#"{"usage":{"prompt_tokens":5.0}}"#, None),
            (r#"{"usage":{"prompt_tokens":1,"prompt_tokens":2}}"#, None),
            (r#"{"usage":{},"usage":{}}"#, None),
            (r#"{"error":{"message":"x"},"usage":{"prompt_tokens":1}}"#, None),
            // serde reads a struct from a sequence too.
            (r#"[{"prompt_tokens":1}]"#, Some((Some(1), None))),
            (r#"{"usage":{"prompt_tokens":1}} x"#, None),
        ] {
            assert_eq!(scan_usage(unsure), Err(Unsure), "{unsure}");
            assert_eq!(peek_usage(unsure), peeked, "{unsure}");
        }
    }

    fn answer_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let count = prop::sample::select(vec![
            "5",
            "0",
            "null",
            "5.0",
            "-1",
            "\"7\"",
            "18446744073709551616",
            "1e2",
        ]);
        let usage_field = (
            prop::sample::select(vec!["prompt_tokens", "completion_tokens", "total_tokens", "x"]),
            count,
        );
        let usage = prop_oneof![
            Just("null".to_string()),
            Just("[]".to_string()),
            prop::collection::vec(usage_field, 0..4).prop_map(|f| {
                let parts: Vec<String> = f.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", parts.join(","))
            }),
        ];
        let field = prop_oneof![
            usage.prop_map(|u| format!("\"usage\": {u}")),
            prop::sample::select(vec!["null", "{\"message\":\"m\"}", "\"e\"", "false"])
                .prop_map(|e| format!("\"error\":{e}")),
            Just("\"choices\":[{\"text\":\"a\\\"b\",\"logprobs\":null}]".to_string()),
            Just("\"id\":\"cmpl-1\"".to_string()),
        ];
        prop::collection::vec(field, 0..5).prop_map(|f| format!("{{{}}}", f.join(",")))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// The one-pass read gives what serde_json's typed view gives, for any answer, broken
        /// ones included.
        #[test]
        fn peek_usage_agrees_with_serde_json(
            answer in answer_strategy(),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
            broken in proptest::prelude::any::<bool>(),
        ) {
            let text = if broken { answer[..cut.index(answer.len() + 1)].to_string() } else { answer };
            proptest::prop_assert_eq!(peek_usage(&text), peek_by_serde(&text), "{}", text);
            if let Ok(u) = scan_usage(&text) {
                proptest::prop_assert_eq!(u, peek_by_serde(&text), "{}", text);
            }
        }
    }
}
