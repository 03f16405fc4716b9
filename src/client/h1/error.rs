//! Why the plain-http transport brought no answer, or no whole one.

use std::time::Duration;

/// Why no answer came back whole.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be opened.
    Connect(String),
    ConnectTimeout(Duration),
    /// The connection failed while the request was written or the answer read.
    Io(std::io::Error),
    /// The connection closed before the answer was complete (before any byte of it, when it
    /// comes from `Direct::send`).
    Closed,
    /// The answer is not HTTP/1.x as this client reads it: the server did answer. Met in a
    /// body after its head, it is a body that cannot be read (a decode failure, as reqwest's).
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
