//! An answer whose head has arrived, and its body read in pieces as the head frames it
//! (`content-length`, `chunked`, or up to the close). A body that breaks its framing is a
//! `Protocol` error, which the client records as a decode failure, as reqwest does.

use super::conn::Conn;
use super::error::SendError;
use super::head::{Body, Head, MAX_HEAD};
use super::pool::Pool;
use bytes::{Bytes, BytesMut};

/// An answer whose head has arrived; its body is read with [`Answer::chunk`]. The connection
/// goes back to the idle list when the body has been read to its end, and is closed if the
/// answer is dropped before.
pub(crate) struct Answer<'a> {
    pub head: Head,
    pub(super) pool: &'a Pool,
    pub(super) conn: Option<Conn>,
    pub(super) body: Body,
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
    pub(super) fn finish(&mut self) {
        self.body = Body::Done;
        if let Some(conn) = self.conn.take() {
            if !self.head.close && conn.buf.is_empty() {
                self.pool.release(conn);
            }
        }
    }
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

/// A chunk's size line: hex digits, then optional `;extensions`. Leading zeros are any number
/// (as hyper reads them); the size itself must fit in 64 bits.
fn chunk_size(line: &[u8]) -> Result<u64, SendError> {
    let digits = line.split(|&b| b == b';').next().unwrap_or(&[]).trim_ascii();
    let bad = || SendError::Protocol("invalid chunk size in the answer".into());
    if digits.is_empty() {
        return Err(bad());
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let d = (b as char).to_digit(16).ok_or_else(bad)?;
        n.checked_mul(16).map(|n| n + u64::from(d)).ok_or_else(bad)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"1a").unwrap(), 26);
        assert_eq!(chunk_size(b"0").unwrap(), 0);
        assert_eq!(chunk_size(b"A ; name=value").unwrap(), 10);
        // Leading zeros, however many, as hyper reads them.
        assert_eq!(chunk_size(b"00000000000000000000000a").unwrap(), 10);
        assert_eq!(chunk_size(b"0000000000000000000000000").unwrap(), 0);
        assert_eq!(chunk_size(b"ffffffffffffffff").unwrap(), u64::MAX);
        assert!(chunk_size(b"").is_err());
        assert!(chunk_size(b"-1").is_err());
        assert!(chunk_size(b"10000000000000000").is_err(), "past 64 bits");
    }
}
