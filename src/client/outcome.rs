//! How a request went: [`Outcome`] with its [`Success`] or [`Failure`], the failure classes
//! ([`FailKind`]) and [`ClientError`] for what is not a request. Also reads the error type and
//! message out of an error answer, in the dialects servers send, since that is what a
//! [`Failure`] carries. Apart from the transports so that every other file of the client, and
//! the commands, name outcomes without depending on how an answer was read.

use crate::api::JsonText;
use serde_json::Value;
use std::time::Duration;
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

/// Token counts of one answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: u64,
    /// No `usage` came back: `completion_tokens` counts streamed content events (or words).
    pub estimated: bool,
    /// Prompt tokens the server's prefix cache served (`usage.prompt_tokens_details.
    /// cached_tokens`; llama.cpp's `timings.cache_n`), when the answer says.
    pub cached_tokens: Option<u64>,
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

pub(super) fn decode_failure(message: String) -> Failure {
    Failure {
        kind: FailKind::Decode,
        message,
        retry_after: None,
        body: None,
    }
}

/// The human part of an error body, in the shapes servers send:
/// OpenAI and llama.cpp `{"error":{"message","type","code"}}`, vLLM and SGLang
/// `{"object":"error","message","type","code"}` (or wrapped in `error`), TGI
/// `{"error":"...","error_type":"..."}`, FastAPI `{"detail":...}`. The error type leads when
/// the message does not already name it, so a report's `error` column reads e.g.
/// `exceed_context_size_error: request (1530 tokens) exceeds the available context size ...`.
pub(super) fn error_message(body: &Value) -> Option<String> {
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
/// The error's type as servers name it (`error.type`, `type`, TGI's `error_type`): the one
/// reading of it, for the systematic-failure streak (`crate::outcome::Streak`).
pub fn error_type(body: &Value) -> Option<&str> {
    ["/error/type", "/type", "/error_type"]
        .iter()
        .find_map(|p| body.pointer(p).and_then(|v| v.as_str()))
}

pub(super) fn error_kind(body: &Value) -> FailKind {
    let code = ["/error/code", "/code", "/error/http_status_code"]
        .iter()
        .filter_map(|p| body.pointer(p))
        .find_map(|c| c.as_u64().or_else(|| c.as_str()?.parse().ok()));
    match code {
        Some(c) if (400..600).contains(&c) => FailKind::Http(c as u16),
        _ => FailKind::Decode,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    }
}
