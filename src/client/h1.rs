//! HTTP/1.1 over plain TCP, written for this one job: the transport for `http://` endpoints
//! (local servers, where every microsecond the client spends is taken from the server it
//! measures). `https://`, URLs with credentials and proxied URLs stay on reqwest.
//!
//! Why not hyper here: its general connection machinery (a task and channels per connection,
//! a header map built for each request and each answer) was 11,000 of the 33,000 instructions
//! sizeup spent per request at the client ceiling (benches/PROFILE.md). What this client needs
//! is small: one kind of request (POST, a head prepared once, a body), and answers read for
//! their status, three headers and a body framed by `content-length`, `chunked` or the close.
//! httparse reads the answer head, as it does inside hyper. Each connection is used by the
//! task that sends on it: no other task, no channel, no wake-up of another thread.
//!
//! Connections are kept alive. One taken from the idle list is checked for a close the server
//! sent meanwhile, without a system call when nothing arrived; a request whose write fails on
//! a reused connection never reached the server whole, and goes out again on a fresh one.

use bytes::{Buf, Bytes, BytesMut};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Idle connections tried for one request before a new one is opened: beyond that the server
/// has evidently dropped them all (the rest are discarded as they come up).
const REUSE_TRIES: usize = 4;
/// Largest answer head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most header lines in an answer head.
const MAX_HEADERS: usize = 100;
/// A connection's read buffer, and the room made in it before each read.
const BUF_SIZE: usize = 8 * 1024;
const READ_ROOM: usize = 4 * 1024;

/// One endpoint's connections.
pub(crate) struct Direct {
    /// `host:port`, resolved at each connect.
    addr: String,
    /// The request line and the fixed headers, each line ending in CRLF.
    head: Vec<u8>,
    /// The `authorization` line. Never printed: neither this type nor [`Conn`] is `Debug`.
    auth: Option<Vec<u8>>,
    connect_timeout: Duration,
    idle: Mutex<Vec<Conn>>,
    max_idle: usize,
}

/// Why no answer came back whole.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be opened.
    Connect(String),
    ConnectTimeout(Duration),
    /// The connection failed while the request was written or the answer read.
    Io(std::io::Error),
    /// The connection closed before the answer was complete (before any byte of it, when it
    /// comes from [`Direct::send`]).
    Closed,
    /// The answer is not HTTP/1.x as this client reads it: the server did answer.
    Protocol(String),
}

impl SendError {
    /// Whether the server surely read the request: some answer came back.
    pub fn answered(&self) -> bool {
        matches!(self, SendError::Protocol(_))
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(m) | SendError::Protocol(m) => f.write_str(m),
            SendError::ConnectTimeout(d) => write!(f, "no connection within {}", humantime::format_duration(*d)),
            SendError::Io(e) => write!(f, "connection error: {e}"),
            SendError::Closed => f.write_str("connection closed before the answer was complete"),
        }
    }
}

/// An open connection and the bytes read from it but not yet used.
pub(crate) struct Conn {
    io: TcpStream,
    buf: BytesMut,
    /// The request being written; kept to reuse its allocation.
    out: Vec<u8>,
}

impl Conn {
    /// Reads more of the answer into the buffer; the count read (0 at the close).
    async fn fill(&mut self) -> Result<usize, SendError> {
        if self.buf.is_empty() {
            // Back to the front of the buffer (its pieces handed out are dropped by now), so a
            // connection keeps reusing the same few hundred bytes instead of sliding through
            // the whole allocation: at -c 1024 that is the difference between a working set in
            // cache and 1,024 buffers' worth of misses.
            self.buf.reserve(BUF_SIZE);
        } else {
            self.buf.reserve(READ_ROOM);
        }
        self.io.read_buf(&mut self.buf).await.map_err(SendError::Io)
    }

    /// Whether a kept-alive connection can carry another request: nothing arrived on it since
    /// its last answer (a close or stray bytes both end it). A system call only when the
    /// reactor saw something arrive.
    fn still_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// What the answer head says, as far as the client uses it.
#[derive(Debug, Default)]
pub(crate) struct Head {
    pub status: u16,
    pub content_type: Option<Box<str>>,
    pub request_id: Option<Box<str>>,
    pub retry_after: Option<Box<str>>,
    /// Where reading the body starts, as the head frames it.
    body: Body,
    /// The connection cannot carry another request after this answer.
    close: bool,
}

/// An answer whose head has arrived; its body is read with [`Answer::chunk`]. The connection
/// goes back to the idle list when the body has been read to its end, and is closed if the
/// answer is dropped before.
pub(crate) struct Answer<'a> {
    pub head: Head,
    direct: &'a Direct,
    conn: Option<Conn>,
    body: Body,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Body {
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

impl Direct {
    /// For a plain-HTTP URL without credentials; None otherwise (reqwest serves those).
    pub fn new(
        url: &reqwest::Url,
        api_key: Option<&str>,
        connect_timeout: Duration,
        max_idle: usize,
    ) -> Option<Direct> {
        if url.scheme() != "http" || !url.username().is_empty() || url.password().is_some() || proxied(url) {
            return None;
        }
        let host = url.host_str()?;
        let port = url.port_or_known_default()?;
        // An IPv6 literal keeps its brackets both in `host_str` and in the Host header.
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let origin = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let line_ok = crate::secret::header_safe;
        if !line_ok(&authority) || !line_ok(&origin) || origin.contains(' ') {
            return None;
        }
        let head = format!(
            "POST {origin} HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/json\r\nuser-agent: sizeup/{}\r\n",
            env!("CARGO_PKG_VERSION")
        );
        let auth = match api_key {
            Some(key) if line_ok(key) => Some(format!("authorization: Bearer {key}\r\n").into_bytes()),
            Some(_) => return None,
            None => None,
        };
        Some(Direct {
            addr: format!("{host}:{port}"),
            head: head.into_bytes(),
            auth,
            connect_timeout,
            idle: Mutex::new(Vec::with_capacity(max_idle.min(4096))),
            max_idle: max_idle.max(1),
        })
    }

    /// The request's bytes: head, `content-length`, body.
    fn write_request(&self, out: &mut Vec<u8>, body: &[u8], close: bool) {
        out.clear();
        out.extend_from_slice(&self.head);
        if let Some(a) = &self.auth {
            out.extend_from_slice(a);
        }
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"content-length: ");
        let mut digits = [0u8; 20];
        out.extend_from_slice(decimal(body.len() as u64, &mut digits));
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(body);
    }

    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().expect("idle connections lock");
        while let Some(c) = idle.pop() {
            if c.still_open() {
                return Some(c);
            }
        }
        None
    }

    fn release(&self, conn: Conn) {
        let mut idle = self.idle.lock().expect("idle connections lock");
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let io = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| SendError::ConnectTimeout(self.connect_timeout))?
            .map_err(|e| SendError::Connect(format!("error connecting to {}: {e}", self.addr)))?;
        let _ = io.set_nodelay(true);
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(BUF_SIZE),
            out: Vec::new(),
        })
    }

    /// Sends one request and waits for the answer's head. A request whose write fails on a
    /// kept-alive connection goes out again on another: it never reached the server whole, so
    /// this is not a retry.
    pub async fn send(&self, body: Bytes, close: bool) -> Result<Answer<'_>, SendError> {
        let mut tries = 0;
        let mut conn = loop {
            let pooled = if tries < REUSE_TRIES { self.checkout() } else { None };
            tries += 1;
            let reused = pooled.is_some();
            let mut conn = match pooled {
                Some(c) => c,
                None => self.connect().await?,
            };
            self.write_request(&mut conn.out, &body, close);
            match conn.io.write_all(&conn.out).await {
                Ok(()) => break conn,
                Err(_) if reused => continue,
                Err(e) => return Err(SendError::Io(e)),
            }
        };
        let mut head = read_head(&mut conn).await?;
        // The request asked for the close: the server need not repeat it (llama.cpp does not).
        head.close |= close;
        let body = head.body;
        let mut answer = Answer {
            head,
            direct: self,
            conn: Some(conn),
            body,
        };
        if answer.body == Body::Done {
            answer.finish();
        }
        Ok(answer)
    }
}

/// Reads an answer head, skipping interim (1xx) answers.
async fn read_head(conn: &mut Conn) -> Result<Head, SendError> {
    loop {
        if !conn.buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut headers);
            match parsed.parse(&conn.buf) {
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
                Ok(httparse::Status::Partial) if conn.buf.len() > MAX_HEAD => {
                    return Err(SendError::Protocol(format!(
                        "answer head larger than {} KiB",
                        MAX_HEAD >> 10
                    )));
                }
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

impl Answer<'_> {
    /// The next piece of the body; None at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, SendError> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Ok(None);
            };
            match self.body {
                Body::Done => {
                    self.finish();
                    return Ok(None);
                }
                Body::Length(left) | Body::ChunkData(left) => {
                    if conn.buf.is_empty() && conn.fill().await? == 0 {
                        return Err(SendError::Closed);
                    }
                    let n = (conn.buf.len() as u64).min(left) as usize;
                    let piece = conn.buf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.body = match self.body {
                        Body::Length(_) if left == 0 => Body::Done,
                        Body::Length(_) => Body::Length(left),
                        _ if left == 0 => Body::ChunkSize { after_data: true },
                        _ => Body::ChunkData(left),
                    };
                    if self.body == Body::Done {
                        self.finish();
                    }
                    return Ok(Some(piece));
                }
                Body::ToClose => {
                    if conn.buf.is_empty() && conn.fill().await? == 0 {
                        self.body = Body::Done;
                        // Nothing more can be sent on it.
                        self.conn = None;
                        return Ok(None);
                    }
                    return Ok(Some(conn.buf.split().freeze()));
                }
                Body::ChunkSize { after_data } => {
                    let Some(line) = take_line(conn).await? else {
                        return Err(SendError::Closed);
                    };
                    if after_data {
                        if !line.is_empty() {
                            return Err(SendError::Protocol("chunk data longer than its size".into()));
                        }
                        self.body = Body::ChunkSize { after_data: false };
                        continue;
                    }
                    let size = chunk_size(&line)?;
                    self.body = if size == 0 {
                        Body::Trailers
                    } else {
                        Body::ChunkData(size)
                    };
                }
                Body::Trailers => {
                    let Some(line) = take_line(conn).await? else {
                        return Err(SendError::Closed);
                    };
                    if line.is_empty() {
                        self.body = Body::Done;
                    }
                }
            }
        }
    }

    /// The body is read: the connection goes back to the idle list if it can carry another
    /// request (the server keeps it open and sent nothing beyond this answer).
    fn finish(&mut self) {
        self.body = Body::Done;
        if let Some(conn) = self.conn.take() {
            if !self.head.close && conn.buf.is_empty() {
                self.direct.release(conn);
            }
        }
    }
}

/// The items of a comma-separated header value.
fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// The next CRLF-ended line of the buffer (without its CRLF), reading more as needed; None if
/// the connection closed first.
async fn take_line(conn: &mut Conn) -> Result<Option<BytesMut>, SendError> {
    let mut from = 0;
    loop {
        if let Some(i) = conn.buf[from..].iter().position(|&b| b == b'\n') {
            let end = from + i;
            let mut line = conn.buf.split_to(end + 1);
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(end - 1);
            }
            return Ok(Some(line));
        }
        if conn.buf.len() > MAX_HEAD {
            return Err(SendError::Protocol("chunk line too long".into()));
        }
        from = conn.buf.len();
        if conn.fill().await? == 0 {
            return Ok(None);
        }
    }
}

/// A chunk's size line: hex digits, then optional `;extensions`.
fn chunk_size(line: &[u8]) -> Result<u64, SendError> {
    let digits = line.split(|&b| b == b';').next().unwrap_or(&[]).trim_ascii();
    let bad = || SendError::Protocol("invalid chunk size in the answer".into());
    if digits.is_empty() || digits.len() > 15 {
        return Err(bad());
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let d = (b as char).to_digit(16).ok_or_else(bad)?;
        Ok(n * 16 + u64::from(d))
    })
}

/// `n` in decimal, written into `digits`.
fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &digits[i..];
        }
    }
}

/// Whether reqwest would send requests to this URL through a proxy named in the environment;
/// those keep going through reqwest, which honours it (and `NO_PROXY`).
fn proxied(url: &reqwest::Url) -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    if !["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .any(|k| set(k))
    {
        return false;
    }
    let host = url.host_str().unwrap_or("");
    let no_proxy = std::env::var("NO_PROXY")
        .or_else(|_| std::env::var("no_proxy"))
        .unwrap_or_default();
    !no_proxy.split(',').map(str::trim).any(|n| {
        n == "*"
            || (!n.is_empty()
                && (host == n.trim_start_matches('.') || host.ends_with(&format!(".{}", n.trim_start_matches('.')))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Reads one request (head and `content-length` body) from a test server's socket; false
    /// at the close.
    async fn read_request(sock: &mut TcpStream, seen: &mut Vec<u8>) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&seen[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if seen.len() >= end + 4 + len {
                    seen.drain(..end + 4 + len);
                    return true;
                }
            }
            match sock.read(&mut buf).await {
                Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                _ => return false,
            }
        }
    }

    /// A loopback server answering each request with `answer`, written in pieces of `piece`
    /// bytes; after `per_conn` answers it closes the connection without saying so. Returns its
    /// URL and the count of connections.
    async fn server(answer: Vec<u8>, piece: usize, per_conn: usize) -> (reqwest::Url, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = reqwest::Url::parse(&format!("http://{}/v1/completions", listener.local_addr().unwrap())).unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let counted = conns.clone();
        let answer = Arc::new(answer);
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let answer = answer.clone();
                tokio::spawn(async move {
                    let _ = sock.set_nodelay(true);
                    let mut seen = Vec::new();
                    for _ in 0..per_conn {
                        if !read_request(&mut sock, &mut seen).await {
                            return;
                        }
                        for p in answer.chunks(piece.max(1)) {
                            if sock.write_all(p).await.is_err() {
                                return;
                            }
                            if piece < answer.len() {
                                tokio::task::yield_now().await;
                            }
                        }
                    }
                });
            }
        });
        (url, conns)
    }

    async fn one(d: &Direct) -> Result<(u16, Vec<u8>), String> {
        let mut answer = d
            .send(Bytes::from_static(b"{}"), false)
            .await
            .map_err(|e| e.to_string())?;
        let mut all = Vec::new();
        while let Some(c) = answer.chunk().await.map_err(|e| e.to_string())? {
            all.extend_from_slice(&c);
        }
        Ok((answer.head.status, all))
    }

    fn direct(url: &reqwest::Url) -> Direct {
        Direct::new(url, Some("k"), Duration::from_secs(5), 4).expect("plain http")
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";

    #[tokio::test]
    async fn keeps_one_connection_for_requests_in_turn() {
        let (url, conns) = server(OK.to_vec(), usize::MAX, usize::MAX).await;
        let d = direct(&url);
        for _ in 0..10 {
            assert_eq!(one(&d).await.unwrap(), (200, b"{}".to_vec()));
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_not_used_again() {
        let (url, conns) = server(OK.to_vec(), usize::MAX, 1).await;
        let d = direct(&url);
        for _ in 0..5 {
            assert_eq!(one(&d).await.unwrap(), (200, b"{}".to_vec()));
            // Time for the close to arrive; a request already on its way meets it as a
            // reset, which the caller retries (`Client::send`).
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(conns.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn answers_framed_every_way_arrive_whole_in_any_pieces() {
        let cases: [(&[u8], &[u8], bool); 9] = [
            (OK, b"{}", true),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-request-id: r1\r\n\r\n5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\ntrailer: t\r\n\r\n",
                b"hello world",
                true,
            ),
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc",
                b"abc",
                true,
            ),
            (b"HTTP/1.1 204 No Content\r\n\r\n", b"", true),
            (b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok", b"ok", false),
            (b"HTTP/1.0 200 OK\r\n\r\nuntil the close", b"until the close", false),
            (b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok", b"ok", true),
            // A length beside a transfer-encoding: the chunks frame the body, the connection is
            // not trusted again.
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                b"ok",
                false,
            ),
            // An encoding that is not chunked runs to the close.
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: identity\r\n\r\nto the end", b"to the end", false),
        ];
        for (answer, body, reused) in cases {
            for piece in [1, 3, 7, usize::MAX] {
                let per_conn = if reused { usize::MAX } else { 1 };
                let (url, conns) = server(answer.to_vec(), piece, per_conn).await;
                let d = direct(&url);
                for _ in 0..3 {
                    let (status, got) = one(&d).await.unwrap();
                    assert!(status == 200 || status == 204, "{status}");
                    assert_eq!(got, body, "piece {piece}: {}", String::from_utf8_lossy(answer));
                }
                let expected = if reused { 1 } else { 3 };
                assert_eq!(
                    conns.load(Ordering::SeqCst),
                    expected,
                    "{}",
                    String::from_utf8_lossy(answer)
                );
            }
        }
    }

    #[tokio::test]
    async fn a_request_that_asks_for_the_close_does_not_reuse_its_connection() {
        // The server keeps the connection open and says nothing (llama.cpp's streams).
        let (url, conns) = server(OK.to_vec(), usize::MAX, usize::MAX).await;
        let d = direct(&url);
        for _ in 0..3 {
            let mut a = d.send(Bytes::from_static(b"{}"), true).await.unwrap();
            while a.chunk().await.unwrap().is_some() {}
        }
        assert_eq!(conns.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn lengths_are_read_strictly_and_a_cut_head_counts_as_answered() {
        for (length, ok) in [("5, 5", true), ("+5", false), ("5, 6", false), ("", false)] {
            let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {length}\r\n\r\nhello");
            let (url, _) = server(answer.into_bytes(), usize::MAX, 1).await;
            let got = one(&direct(&url)).await;
            assert_eq!(got.is_ok(), ok, "content-length: {length:?}: {got:?}");
        }
        let (url, _) = server(b"HTTP/1.1 200 OK\r\ncontent-le".to_vec(), usize::MAX, 1).await;
        let e = direct(&url).send(Bytes::from_static(b"{}"), false).await.err().unwrap();
        assert!(e.answered(), "{e}");
        let (url, _) = server(Vec::new(), usize::MAX, 1).await;
        let e = direct(&url).send(Bytes::from_static(b"{}"), false).await.err().unwrap();
        assert!(matches!(e, SendError::Closed) && !e.answered(), "{e}");
    }

    #[tokio::test]
    async fn headers_the_client_uses_are_read() {
        let answer = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nX-Request-Id: abc\r\nX-Request-Id: second\r\nContent-Type: text/event-stream\r\nContent-Length: 0\r\n\r\n";
        let (url, _) = server(answer.to_vec(), usize::MAX, usize::MAX).await;
        let d = direct(&url);
        let a = d.send(Bytes::from_static(b"{}"), false).await.unwrap();
        assert_eq!(a.head.status, 429);
        assert_eq!(a.head.retry_after.as_deref(), Some("7"));
        assert_eq!(a.head.request_id.as_deref(), Some("abc"));
        assert_eq!(a.head.content_type.as_deref(), Some("text/event-stream"));
    }

    #[tokio::test]
    async fn a_cut_answer_or_a_broken_one_is_an_error() {
        let cases: [&[u8]; 4] = [
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            b"not http at all\r\n\r\n",
        ];
        for answer in cases {
            let (url, _) = server(answer.to_vec(), usize::MAX, 1).await;
            let d = direct(&url);
            assert!(one(&d).await.is_err(), "{}", String::from_utf8_lossy(answer));
        }
    }

    #[test]
    fn only_plain_http_without_credentials() {
        let direct = |u: &str| Direct::new(&reqwest::Url::parse(u).unwrap(), None, Duration::from_secs(1), 1).is_some();
        assert!(direct("http://127.0.0.1:8000/v1/completions"));
        assert!(direct("http://[::1]:8000/v1/chat/completions?x=1"));
        assert!(!direct("https://api.example.com/v1/completions"));
        assert!(!direct("http://user:pw@127.0.0.1:8000/v1/completions"));
    }

    #[test]
    fn the_request_on_the_wire() {
        let url = reqwest::Url::parse("http://127.0.0.1:9/v1/embeddings?x=1").unwrap();
        let d = Direct::new(&url, Some("sk-secret"), Duration::from_secs(1), 1).unwrap();
        let mut out = Vec::new();
        d.write_request(&mut out, b"{\"input\":\"a\"}", true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "POST /v1/embeddings?x=1 HTTP/1.1\r\nhost: 127.0.0.1:9\r\ncontent-type: application/json\r\nuser-agent: sizeup/{}\r\nauthorization: Bearer sk-secret\r\nconnection: close\r\ncontent-length: 13\r\n\r\n{{\"input\":\"a\"}}",
                env!("CARGO_PKG_VERSION")
            )
        );
        // A key that would break the head is refused, not sent.
        assert!(Direct::new(&url, Some("k\r\nx: y"), Duration::from_secs(1), 1).is_none());
        assert!(Direct::new(&url, Some("k\u{7f}"), Duration::from_secs(1), 1).is_none());
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"1a").unwrap(), 26);
        assert_eq!(chunk_size(b"0").unwrap(), 0);
        assert_eq!(chunk_size(b"A ; name=value").unwrap(), 10);
        assert!(chunk_size(b"").is_err());
        assert!(chunk_size(b"-1").is_err());
        assert!(chunk_size(b"1000000000000000").is_err());
        let mut d = [0u8; 20];
        assert_eq!(decimal(0, &mut d), b"0");
        assert_eq!(decimal(u64::MAX, &mut d), u64::MAX.to_string().as_bytes());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        /// Any body, sent chunked in any chunk sizes and written in any pieces, arrives whole,
        /// and the connection is kept for the next request.
        #[test]
        fn chunked_bodies_arrive_whole(
            body in proptest::collection::vec(any::<u8>(), 0..600),
            sizes in proptest::collection::vec(1usize..50, 1..8),
            piece in 1usize..40,
        ) {
            let mut answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec();
            let mut rest = &body[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].min(rest.len());
                answer.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                answer.extend_from_slice(&rest[..n]);
                answer.extend_from_slice(b"\r\n");
                rest = &rest[n..];
                i += 1;
            }
            answer.extend_from_slice(b"0\r\n\r\n");
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let (url, conns) = server(answer, piece, usize::MAX).await;
                let d = direct(&url);
                for _ in 0..2 {
                    let (_, got) = one(&d).await.unwrap();
                    prop_assert_eq!(&got, &body);
                }
                prop_assert_eq!(conns.load(Ordering::SeqCst), 1);
                Ok(())
            })?;
        }
    }
}
