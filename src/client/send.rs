//! The [`Client`]: its settings, the send loop (with the stale kept-alive connection retry
//! llama.cpp's server calls for) and one exchange in steps: send and read the head, then a
//! non-2xx answer, a stream or a whole answer, each read by its own file. Also the one other
//! request, `GET /v1/models`. This is the request path the benches measure.

use super::access::Access;
use super::h1;
use super::outcome::{ClientError, FailKind, Failure, Outcome, Success};
use super::parse::{http_failure, parse_retry_after, whole_answer};
use super::stream::read_stream;
use super::transport::{direct_failure, transport_failure, Answer, Kept};
use super::url::{base_url, resolve_url};
use crate::api::Api;
use crate::secret::Scrubber;
use bytes::Bytes;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Settings for one client.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Base URL (`http://host:8000`) or full URL of the inference route.
    pub endpoint: String,
    pub api: Api,
    /// The key, the `--header`s and `--cacert`.
    pub access: Access,
    pub connect_timeout: Duration,
    /// Whole request, from send to the last byte of the answer.
    pub timeout: Duration,
    /// From send to the answer's status line and headers (a streaming server sends them at
    /// once; a non-streaming one only when the answer is ready). None: only `timeout` applies.
    pub first_byte_timeout: Option<Duration>,
    /// Idle keep-alive connections kept per host: the concurrency, so no request waits for a
    /// new TCP (and TLS) handshake after warm-up.
    pub pool: usize,
    /// An idle kept-alive connection older than this is not used again (`--pool-idle-timeout`).
    pub pool_idle_timeout: Duration,
}

pub struct Client {
    http: reqwest::Client,
    /// Plain-HTTP endpoints go through the client's own HTTP/1.1 transport (see `h1.rs`); the rest through `http`.
    direct: Option<h1::Direct>,
    url: reqwest::Url,
    access: Access,
    /// The key (and each secret header), replaced by `***` in every answer's body, error message and request id: a
    /// server may echo the `Authorization` header, and answers are written to files.
    scrubber: Scrubber,
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
    /// The room a hosted API's announced limits leave (`x-ratelimit-*`), from the last answer
    /// that announced them, charged for each request started since.
    room: std::sync::Mutex<Option<super::ratelimit::Room>>,
}

/// Attempts of one request when kept-alive connections turn out to be closed.
const STALE_ATTEMPTS: u32 = 3;

impl Client {
    pub fn new(cfg: &ClientConfig) -> Result<Client, ClientError> {
        let url = resolve_url(&cfg.endpoint, cfg.api)?;
        let http = cfg
            .access
            .builder()
            .connect_timeout(cfg.connect_timeout)
            .pool_max_idle_per_host(cfg.pool.max(1))
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .tcp_nodelay(true)
            .user_agent(concat!("sizeup/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let direct = h1::Direct::new(
            &url,
            &cfg.access,
            cfg.connect_timeout,
            cfg.pool.max(1),
            cfg.pool_idle_timeout,
        );
        Ok(Client {
            http,
            direct,
            url,
            access: cfg.access.clone(),
            scrubber: cfg.access.scrubber(),
            timeout: cfg.timeout,
            first_byte_timeout: cfg.first_byte_timeout,
            closes_after_stream: AtomicBool::new(false),
            learned_close: watch::Sender::new(false),
            streamed_answers: AtomicU64::new(0),
            stale_retries: AtomicU64::new(0),
            stale_retry_budget: 2 * cfg.pool.max(1) as u64 + 4,
            room: std::sync::Mutex::new(None),
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
    /// The limits per minute (requests, tokens) the endpoint's answers announced, if any did.
    pub fn announced_limits(&self) -> Option<(Option<u64>, Option<u64>)> {
        self.room.lock().expect("room lock").as_ref().map(|r| r.limits())
    }

    /// Before sending a request of `tokens`: how long to wait for the room a hosted API's
    /// announced limits leave (None: there is room, and the request is charged to it; also
    /// None when no answer announced limits).
    pub fn room_wait(&self, tokens: f64) -> Option<Duration> {
        let mut room = self.room.lock().expect("room lock");
        room.as_mut()?.take(tokens, Instant::now())
    }

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
            result: scrub_result(&self.scrubber, result),
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
        let mut resp = self.read_head(body, close, answered).await?;
        *answered = true;
        if let Some(a) = resp.ratelimit() {
            let mut room = self.room.lock().expect("room lock");
            match room.as_mut() {
                Some(r) => r.observe(&a, Instant::now()),
                None => *room = Some(super::ratelimit::Room::new(&a, Instant::now())),
            }
        }
        let status = resp.status();
        let request_id = resp.header(Kept::RequestId).map(str::to_string);
        if !(200..300).contains(&status) {
            let retry_after = resp.header(Kept::RetryAfter).and_then(parse_retry_after);
            let bytes = resp.read_to_end().await.unwrap_or_default();
            return Err(http_failure(status, retry_after, &bytes, &self.scrubber));
        }
        let is_sse = resp
            .header(Kept::ContentType)
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if stream || is_sse {
            return read_stream(&mut resp, status, request_id, keep_body, first_token, &self.scrubber).await;
        }
        let bytes = resp.read_to_end().await?;
        whole_answer(bytes, status, request_id, keep_body, &self.scrubber)
    }

    /// Sends the request and waits for the answer's status line and headers, within
    /// `first_byte_timeout` when one is set.
    async fn read_head(&self, body: Bytes, close: bool, answered: &mut bool) -> Result<Answer<'_>, Failure> {
        let sending = self.post(body, close, answered);
        match self.first_byte_timeout {
            None => sending.await,
            Some(limit) => tokio::time::timeout(limit, sending).await.map_err(|_| Failure {
                kind: FailKind::Timeout,
                message: format!(
                    "no answer headers within {} (--first-byte-timeout)",
                    humantime::format_duration(limit)
                ),
                retry_after: None,
                body: None,
            })?,
        }
    }

    /// Sends the request on the transport this client uses, up to the answer's head.
    /// `answered` is set when a broken answer came (so it is not taken for a stale connection).
    async fn post(&self, body: Bytes, close: bool, answered: &mut bool) -> Result<Answer<'_>, Failure> {
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
                self.access
                    .apply(req)
                    .send()
                    .await
                    .map(Answer::Pooled)
                    .map_err(transport_failure)
            }
        }
    }
}

/// The key scrubbed from what an exchange left outside the answer's body: the error message
/// (a transport's, or one built from a body already scrubbed: then a second, short scan) and
/// the request id, an answer header. Bodies are scrubbed as they are read (`parse.rs`,
/// `stream.rs`), before they are parsed.
fn scrub_result(scrubber: &Scrubber, result: Result<Success, Failure>) -> Result<Success, Failure> {
    match result {
        Ok(mut ok) => {
            ok.request_id = ok.request_id.map(|id| scrubber.text_string(id));
            Ok(ok)
        }
        Err(mut f) => {
            f.message = scrubber.text_string(f.message);
            Err(f)
        }
    }
}

/// Why a request beside the job's (the models probe, an admin route, the TLS pre-flight) got
/// no answer.
pub(crate) enum SideError {
    /// The endpoint is no URL, or no HTTP client could be built for it.
    Endpoint(String),
    /// The transport's failure, not yet scrubbed (the caller scrubs it, or reads its kind).
    Transport(Failure),
}

/// A request beside the job's, to `path` under the endpoint's base URL, built as the job's
/// are: with the endpoint's query (a gateway that wants `?api-version=` on inference requests
/// wants it here too), its trusted roots, and with `credentials` its headers and key. Redirects
/// are followed on the endpoint's own host only: one to another host would carry headers such
/// as `api-key` there (reqwest drops only `authorization` and cookies); its status is the answer.
pub(crate) async fn side_request(
    endpoint: &str,
    method: reqwest::Method,
    path: &str,
    (access, credentials): (&Access, bool),
    timeout: Duration,
) -> Result<reqwest::Response, SideError> {
    let mut url = base_url(endpoint).ok_or_else(|| SideError::Endpoint("invalid endpoint URL".into()))?;
    url.set_path(&format!("{}{path}", url.path().trim_end_matches('/')));
    url.set_query(reqwest::Url::parse(endpoint).ok().as_ref().and_then(|u| u.query()));
    let http = access
        .builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            let same_host = attempt
                .previous()
                .first()
                .map(|u| (u.host_str(), u.port_or_known_default()))
                == Some((attempt.url().host_str(), attempt.url().port_or_known_default()));
            match same_host && attempt.previous().len() < 5 {
                true => attempt.follow(),
                false => attempt.stop(),
            }
        }))
        .build()
        .map_err(|e| SideError::Endpoint(e.to_string()))?;
    let request = http.request(method, url);
    let request = if credentials { access.apply(request) } else { request };
    request
        .send()
        .await
        .map_err(|e| SideError::Transport(transport_failure(e)))
}

/// `POST {base}{path}` with no body and the endpoint's headers: the answer's status, or the
/// transport's error (scrubbed). For a server's admin routes (vLLM's `/reset_prefix_cache`).
pub async fn post_empty(endpoint: &str, path: &str, access: &Access, timeout: Duration) -> Result<u16, String> {
    match side_request(endpoint, reqwest::Method::POST, path, (access, true), timeout).await {
        Ok(resp) => Ok(resp.status().as_u16()),
        Err(SideError::Endpoint(m)) => Err(m),
        Err(SideError::Transport(f)) => Err(access.scrubber().text_string(f.message)),
    }
}

/// `GET /v1/models`: the first model's id, for when `--model` is not given. The id goes into
/// every request body and the outputs, so it is scrubbed of the key as answers are.
pub async fn first_model(endpoint: &str, access: &Access, timeout: Duration) -> Result<Option<String>, ClientError> {
    let scrubber = access.scrubber();
    let failed = |e| ClientError::Transport(scrubber.text_string(transport_failure(e).message));
    let resp = match side_request(endpoint, reqwest::Method::GET, "/v1/models", (access, true), timeout).await {
        Ok(resp) => resp,
        Err(SideError::Endpoint(m)) => return Err(ClientError::Endpoint(m)),
        Err(SideError::Transport(f)) => return Err(ClientError::Transport(scrubber.text_string(f.message))),
    };
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
    let bytes = resp.bytes().await.map_err(failed)?;
    // A server whose unknown routes answer 200 with a web page (a UI's catch-all) has no
    // models list either: go on without a model field, the server picks its own.
    let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(None);
    };
    Ok(v.pointer("/data/0/id")
        .and_then(Value::as_str)
        .map(|id| scrubber.text(id).into_owned()))
}
