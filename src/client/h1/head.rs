//! The answer head: read (interim 1xx answers skipped), parsed by httparse as inside hyper,
//! and reduced to what the client uses: the status, three headers, how the body is framed and
//! whether the connection can carry another request.

use super::conn::Conn;
use super::error::SendError;
use bytes::Buf;

/// Largest answer head accepted, as hyper's default read buffer (about 400 KiB).
pub(super) const MAX_HEAD: usize = 400 * 1024;
/// Most header lines in an answer head (hyper's default too).
const MAX_HEADERS: usize = 100;

/// What the answer head says, as far as the client uses it.
#[derive(Debug, Default)]
pub(crate) struct Head {
    pub status: u16,
    pub content_type: Option<Box<str>>,
    pub request_id: Option<Box<str>>,
    pub retry_after: Option<Box<str>>,
    /// The `x-ratelimit-*` headers (a hosted API's limits), name lowercased; empty (no
    /// allocation) when the answer has none.
    pub ratelimit: Vec<(Box<str>, Box<str>)>,
    /// Where reading the body starts, as the head frames it.
    pub(super) body: Body,
    /// The connection cannot carry another request after this answer.
    pub(super) close: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Body {
    /// Bytes left of a `content-length` body, or of the current chunk.
    Length(u64),
    /// Inside a chunked body: before a chunk's size line (`true`: after a chunk's data, whose
    /// CRLF comes first).
    ChunkSize {
        after_data: bool,
    },
    ChunkData(u64),
    Trailers,
    /// The body ends when the server closes the connection.
    ToClose,
    /// Read to its end, or empty.
    #[default]
    Done,
}

/// Reads an answer head, skipping interim (1xx) answers.
pub(super) async fn read_head(conn: &mut Conn) -> Result<Head, SendError> {
    loop {
        if !conn.buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut headers);
            match parsed.parse(&conn.buf) {
                Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => return Err(too_long()),
                Ok(httparse::Status::Complete(n)) => {
                    let head = Head::from_parsed(&parsed)?;
                    conn.buf.advance(n);
                    if (100..200).contains(&head.status) {
                        if head.status == 101 {
                            return Err(SendError::Protocol("the server switched protocols (101)".into()));
                        }
                        continue;
                    }
                    return Ok(head);
                }
                Ok(httparse::Status::Partial) if conn.buf.len() > MAX_HEAD => return Err(too_long()),
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(SendError::Protocol(format!("the answer is not HTTP/1.1: {e}"))),
            }
        }
        if conn.fill().await? == 0 {
            return Err(if conn.buf.is_empty() {
                SendError::Closed
            } else {
                SendError::Protocol("connection closed in the middle of the answer head".into())
            });
        }
    }
}

impl Head {
    fn from_parsed(p: &httparse::Response<'_, '_>) -> Result<Head, SendError> {
        let status = p.code.unwrap_or(0);
        let mut head = Head {
            status,
            ..Head::default()
        };
        let mut length: Option<u64> = None;
        // Whether a transfer-encoding was named, and whether the last coding named is chunked.
        let (mut encoded, mut chunked) = (false, false);
        let (mut says_close, mut says_keep_alive) = (false, false);
        // A repeated header keeps its first value, as `HeaderMap::get` does on reqwest's path.
        let text = |slot: &mut Option<Box<str>>, v: &[u8]| {
            if slot.is_none() {
                *slot = std::str::from_utf8(v).ok().map(|s| s.trim().into());
            }
        };
        for h in p.headers.iter() {
            let name = h.name;
            if name.eq_ignore_ascii_case("content-length") {
                // A list of equal values is one length (RFC 9110, 8.6); digits only, no sign.
                if tokens(h.value).next().is_none() {
                    return Err(SendError::Protocol("empty content-length in the answer".into()));
                }
                for t in tokens(h.value) {
                    let n = std::str::from_utf8(t)
                        .ok()
                        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or_else(|| SendError::Protocol("invalid content-length in the answer".into()))?;
                    if length.is_some_and(|l| l != n) {
                        return Err(SendError::Protocol("conflicting content-length in the answer".into()));
                    }
                    length = Some(n);
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                // Only the last coding of the last such header frames the body.
                if let Some(last) = tokens(h.value).last() {
                    encoded = true;
                    chunked = last.eq_ignore_ascii_case(b"chunked");
                }
            } else if name.eq_ignore_ascii_case("connection") {
                for t in tokens(h.value) {
                    says_close |= t.eq_ignore_ascii_case(b"close");
                    says_keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if name.eq_ignore_ascii_case("content-type") {
                text(&mut head.content_type, h.value);
            } else if name.eq_ignore_ascii_case("x-request-id") {
                text(&mut head.request_id, h.value);
            } else if name.eq_ignore_ascii_case("retry-after") {
                text(&mut head.retry_after, h.value);
            } else if name.len() > 12 && name.as_bytes()[..12].eq_ignore_ascii_case(b"x-ratelimit-") {
                if let Ok(v) = std::str::from_utf8(h.value) {
                    head.ratelimit.push((name.to_ascii_lowercase().into(), v.trim().into()));
                }
            }
        }
        // HTTP/1.0 closes after each answer unless it says keep-alive.
        head.close = says_close || (p.version == Some(0) && !says_keep_alive);
        head.body = if (100..200).contains(&status) || status == 204 || status == 304 {
            Body::Done
        } else if encoded {
            // A length beside a transfer-encoding is not trusted: the connection is not reused
            // (RFC 9112, 6.3); an encoding other than chunked runs to the close.
            head.close |= length.is_some() || !chunked;
            if chunked {
                Body::ChunkSize { after_data: false }
            } else {
                Body::ToClose
            }
        } else if let Some(n) = length {
            if n == 0 {
                Body::Done
            } else {
                Body::Length(n)
            }
        } else {
            head.close = true;
            Body::ToClose
        };
        Ok(head)
    }
}

/// The items of a comma-separated header value.
fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

fn too_long() -> SendError {
    SendError::Protocol(format!("answer head larger than {} KiB", MAX_HEAD >> 10))
}

/// Whether `buf` holds the head of a final (non-1xx) answer, or bytes that can be no answer
/// head at all: either way the request need not be written further. Interim answers before it
/// are left for [`read_head`] to skip.
pub(super) fn final_head_in(buf: &[u8]) -> bool {
    let mut at = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        match parsed.parse(&buf[at..]) {
            Ok(httparse::Status::Complete(n)) if (100..200).contains(&parsed.code.unwrap_or(0)) => at += n,
            Ok(httparse::Status::Complete(_)) | Err(_) => return true,
            Ok(httparse::Status::Partial) => return buf.len() - at > MAX_HEAD,
        }
    }
}
