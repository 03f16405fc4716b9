//! One open connection: its socket, the bytes read from it but not yet used, and the buffer
//! its requests are written from.

use super::error::SendError;
use bytes::BytesMut;
use std::time::Instant;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A connection's read buffer, and the room made in it before each read.
const BUF_SIZE: usize = 8 * 1024;
pub(super) const READ_ROOM: usize = 4 * 1024;

/// An open connection and the bytes read from it but not yet used.
pub(crate) struct Conn {
    pub(super) io: TcpStream,
    pub(super) buf: BytesMut,
    /// The request being written; kept to reuse its allocation.
    pub(super) out: Vec<u8>,
    /// When it went back to the idle list (see `Pool::checkout`).
    pub(super) idle_since: Instant,
}

impl Conn {
    pub(super) fn new(io: TcpStream) -> Conn {
        let _ = io.set_nodelay(true);
        Conn {
            io,
            buf: BytesMut::with_capacity(BUF_SIZE),
            out: Vec::new(),
            idle_since: Instant::now(),
        }
    }

    /// Reads more of the answer into the buffer; the count read (0 at the close).
    pub(super) async fn fill(&mut self) -> Result<usize, SendError> {
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
    pub(super) fn still_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}
