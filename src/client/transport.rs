//! One answer from either transport, reqwest's pool or the client's own HTTP/1.1 (`h1.rs`):
//! [`Answer`] gives its status, the few headers the client reads and its body in pieces, and
//! the transports' errors are classified into [`FailKind`]s here, with messages free of
//! secrets. Apart so that reading an answer (`parse.rs`, `stream.rs`) does not care which
//! transport brought it.

use super::h1;
use super::outcome::{decode_failure, FailKind, Failure};
use bytes::Bytes;

/// Largest answer body accepted; a bigger one is a decode failure, not an out-of-memory.
pub(super) const MAX_BODY: usize = 64 * 1024 * 1024;

/// An answer whose head arrived, from either transport; its body is read through [`Answer::chunk`].
pub(super) enum Answer<'a> {
    Pooled(reqwest::Response),
    Direct(h1::Answer<'a>),
}

impl Answer<'_> {
    pub(super) fn status(&self) -> u16 {
        match self {
            Answer::Pooled(r) => r.status().as_u16(),
            Answer::Direct(a) => a.head.status,
        }
    }

    /// One of the headers the client reads.
    pub(super) fn header(&self, which: Kept) -> Option<&str> {
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

    /// The limits the answer announces (`x-ratelimit-*`), if any.
    pub(super) fn ratelimit(&self) -> Option<super::ratelimit::Announced> {
        use super::ratelimit::Announced;
        match self {
            Answer::Pooled(r) => Announced::parse(
                r.headers()
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))),
            ),
            Answer::Direct(a) if a.head.ratelimit.is_empty() => None,
            Answer::Direct(a) => Announced::parse(a.head.ratelimit.iter().map(|(k, v)| (&**k, &**v))),
        }
    }

    /// The next piece of the body; None at its end.
    pub(super) async fn chunk(&mut self) -> Result<Option<Bytes>, Failure> {
        match self {
            Answer::Pooled(r) => r.chunk().await.map_err(transport_failure),
            Answer::Direct(a) => a.chunk().await.map_err(direct_body_failure),
        }
    }

    /// The whole body, at most [`MAX_BODY`].
    pub(super) async fn read_to_end(&mut self) -> Result<Vec<u8>, Failure> {
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
pub(super) enum Kept {
    ContentType,
    RetryAfter,
    RequestId,
}

/// Classifies a failure of the direct transport as [`transport_failure`] classifies reqwest's:
/// a connection that failed once open, or an answer that was not HTTP, is a `Reset` (worth
/// another try).
pub(super) fn direct_failure(e: h1::SendError) -> Failure {
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

/// Classifies a failure of the direct transport met in a body after its head: one that breaks
/// its framing (a bad chunk size) is a `Decode` failure, not worth another try, as reqwest
/// records it; a connection cut mid-body is a `Reset`, as there.
fn direct_body_failure(e: h1::SendError) -> Failure {
    match e {
        h1::SendError::Protocol(m) => decode_failure(m),
        e => direct_failure(e),
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
pub(super) fn transport_failure(e: reqwest::Error) -> Failure {
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
    let message = match certificate_refused(&message) {
        Some(why) => format!("{why}; {CERT_FIX}"),
        None => message,
    };
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

/// How the message of a refused certificate begins.
pub(super) const CERT_REFUSED: &str = "TLS: the server's certificate was refused";

/// What to do about a refused certificate.
pub(super) const CERT_FIX: &str =
    "if your company's CA signs it, pass --cacert CA.pem (or set SSL_CERT_FILE to a bundle holding it)";

/// The TLS library's reason for refusing the server's certificate, from an error's chain (rustls
/// words it "invalid peer certificate: UnknownIssuer"), in words a person can act on.
pub(super) fn certificate_refused(chain: &str) -> Option<String> {
    let at = chain.find("invalid peer certificate")?;
    let cause = chain[at + "invalid peer certificate".len()..]
        .trim_start_matches([':', ' '])
        .split([';', '\n'])
        .next()
        .unwrap_or("")
        .trim();
    let meaning = if cause.contains("UnknownIssuer") {
        "signed by a CA this machine does not trust"
    } else if cause.contains("NotValidForName") {
        "not issued for this host name"
    } else if cause.contains("Expired") {
        "expired"
    } else if cause.contains("NotValidYet") {
        "not valid yet"
    } else {
        "not accepted"
    };
    Some(format!("{CERT_REFUSED} ({cause}): it is {meaning}"))
}
