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
//! sent meanwhile, without a system call when nothing arrived, and is not used at all once
//! idle past `--pool-idle-timeout`; a request whose write fails on a reused connection, with
//! no answer on it, never reached the server whole, and goes out again on a fresh one. A body
//! too large for one write is written while the answer is read, so a server that answers
//! early (413) and stops reading or closes is recorded with its answer, as by hyper.
//!
//! The parts: `conn.rs` a connection, `pool.rs` the idle ones, `head.rs` the answer head,
//! `answer.rs` the body, `error.rs` [`SendError`]; connecting (every address of the host) is
//! `client/connect.rs`, the proxy rules `client/proxy.rs`.

mod answer;
mod conn;
mod error;
mod head;
mod pool;
#[cfg(test)]
mod tests;

pub(crate) use answer::Answer;
pub(crate) use error::SendError;

use super::connect::{connect_host, ConnectError};
use super::proxy::proxy_for;
use bytes::Bytes;
use conn::{Conn, READ_ROOM};
use head::{final_head_in, read_head, Body};
use pool::Pool;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Idle connections tried for one request before a new one is opened: beyond that the server
/// has evidently dropped them all (the rest are discarded as they come up).
const REUSE_TRIES: usize = 4;

/// One endpoint's connections.
pub(crate) struct Direct {
    /// The URL's host (an IPv6 literal in brackets) and port, resolved at each connect.
    host: String,
    port: u16,
    /// The request line and the fixed headers, each line ending in CRLF.
    head: Vec<u8>,
    /// The `authorization` line and the `--header`s. Never printed: neither this type nor `Conn` is `Debug`.
    auth: Option<Vec<u8>>,
    connect_timeout: Duration,
    pool: Pool,
}

/// How far a request got onto the wire.
#[derive(PartialEq, Eq)]
enum Written {
    Whole,
    /// The server answered (or closed) before the request was written whole: the answer is
    /// read, and the connection ends with it.
    Cut,
}

impl Direct {
    /// For a plain-HTTP URL without credentials or a proxy; None otherwise (reqwest serves
    /// those). `idle_timeout`: an idle connection older than this is not used again.
    pub fn new(
        url: &reqwest::Url,
        access: &super::access::Access,
        connect_timeout: Duration,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Option<Direct> {
        if url.scheme() != "http" || !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        if proxy_for(url).is_some() {
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
        let auth = Some(access.wire_lines()?).filter(|l| !l.is_empty());
        Some(Direct {
            host: host.to_string(),
            port,
            head: head.into_bytes(),
            auth,
            connect_timeout,
            pool: Pool::new(max_idle, idle_timeout),
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

    async fn connect(&self) -> Result<Conn, SendError> {
        match connect_host(&self.host, self.port, self.connect_timeout).await {
            Ok(io) => Ok(Conn::new(io)),
            Err(ConnectError::Timeout(d)) => Err(SendError::ConnectTimeout(d)),
            Err(ConnectError::Failed(m)) => Err(SendError::Connect(m)),
        }
    }

    /// Sends one request and waits for the answer's head. A request whose write fails on a
    /// kept-alive connection, with no answer there, goes out again on another: it never
    /// reached the server whole, so this is not a retry.
    pub async fn send(&self, body: Bytes, close: bool) -> Result<Answer<'_>, SendError> {
        let mut tries = 0;
        let (mut conn, written, head) = loop {
            let pooled = if tries < REUSE_TRIES {
                self.pool.checkout()
            } else {
                None
            };
            tries += 1;
            let reused = pooled.is_some();
            let mut conn = match pooled {
                Some(c) => c,
                None => self.connect().await?,
            };
            self.write_request(&mut conn.out, &body, close);
            match write_out(&mut conn).await {
                Ok(w) => break (conn, w, None),
                Err(e) => {
                    // The server may have answered before it stopped reading (a 413, then the
                    // close): that answer is the outcome. The socket is dead, so this read
                    // ends at once.
                    match read_head(&mut conn).await {
                        Ok(head) => break (conn, Written::Cut, Some(head)),
                        Err(_) if reused => continue,
                        Err(_) => return Err(SendError::Io(e)),
                    }
                }
            }
        };
        let mut head = match head {
            Some(h) => h,
            None => read_head(&mut conn).await?,
        };
        // The request asked for the close: the server need not repeat it (llama.cpp does not).
        // One not written whole leaves the connection in no state for another.
        head.close |= close || written == Written::Cut;
        let body = head.body;
        let mut answer = Answer {
            head,
            pool: &self.pool,
            conn: Some(conn),
            body,
        };
        if answer.body == Body::Done {
            answer.finish();
        }
        Ok(answer)
    }
}

/// Writes the request in `conn.out`. One that the socket takes in one write (any request with
/// a body of ordinary size) costs that one write and nothing more. A larger one is written
/// while the connection is read, as hyper does: a server that answers before it has read the
/// whole body (413) and then stops reading or closes ends the writing, its answer left in the
/// buffer for [`read_head`].
async fn write_out(conn: &mut Conn) -> std::io::Result<Written> {
    let Conn { io, buf, out, .. } = conn;
    let mut at = io.write(out).await?;
    while at < out.len() {
        tokio::select! {
            ready = io.readable() => {
                ready?;
                buf.reserve(READ_ROOM);
                match io.try_read_buf(buf) {
                    Ok(0) => return Ok(Written::Cut),
                    Ok(_) if final_head_in(buf) => return Ok(Written::Cut),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            ready = io.writable() => {
                ready?;
                match io.try_write(&out[at..]) {
                    Ok(n) => at += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(Written::Whole)
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
