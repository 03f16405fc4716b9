//! An incremental decoder for Server-Sent Events, as OpenAI-compatible servers stream them.
//!
//! Bytes arrive in chunks split anywhere: inside a line, between `\r` and `\n`, inside a
//! multi-byte character. The decoder keeps the partial line and the partial event between
//! calls and yields whole events only. It follows the WHATWG rules that matter here: lines end
//! in `\n`, `\r\n` or `\r`; a blank line ends an event; `data:` lines of one event are joined
//! with `\n`; one space after the colon is dropped; lines starting with `:` are comments;
//! other fields (`event`, `id`, `retry`) are ignored.

use std::fmt;

/// One decoded event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SseEvent {
    /// The joined `data` of an event.
    Data(String),
    /// `data: [DONE]`, OpenAI's end-of-stream marker.
    Done,
}

/// Why a stream could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SseError {
    InvalidUtf8,
    LineTooLong(usize),
    /// The stream ended inside an event (no blank line after its last `data:`).
    Truncated,
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseError::InvalidUtf8 => f.write_str("event stream is not valid UTF-8"),
            SseError::LineTooLong(n) => write!(f, "event stream line longer than {n} bytes"),
            SseError::Truncated => f.write_str("event stream ended in the middle of an event"),
        }
    }
}

impl std::error::Error for SseError {}

/// Longest line accepted; a server that sends more without a newline is broken.
pub(crate) const MAX_LINE: usize = 16 * 1024 * 1024;

#[derive(Default, Debug)]
pub struct SseDecoder {
    line: Vec<u8>,
    data: String,
    has_data: bool,
    /// The previous chunk ended in `\r`: a `\n` starting this one belongs to that line end.
    after_cr: bool,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk; complete events are appended to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some(stripped) = rest.strip_prefix(b"\n") {
                rest = stripped;
            }
        }
        while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..pos]);
            let cr = rest[pos] == b'\r';
            rest = &rest[pos + 1..];
            if cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            self.take_line(out)?;
        }
        if self.line.len() + rest.len() > MAX_LINE {
            return Err(SseError::LineTooLong(MAX_LINE));
        }
        self.line.extend_from_slice(rest);
        Ok(())
    }

    /// Ends the stream. A partial line or an event without its closing blank line is an error.
    pub fn finish(&mut self) -> Result<(), SseError> {
        if !self.line.is_empty() || self.has_data {
            return Err(SseError::Truncated);
        }
        Ok(())
    }

    fn take_line(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            if self.has_data {
                self.has_data = false;
                let mut data = std::mem::take(&mut self.data);
                data.pop(); // the "\n" after the last data line
                out.push(if data == "[DONE]" {
                    SseEvent::Done
                } else {
                    SseEvent::Data(data)
                });
            }
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let text = std::str::from_utf8(&line).map_err(|_| SseError::InvalidUtf8)?;
        let (field, value) = match text.find(':') {
            Some(i) => (&text[..i], text[i + 1..].strip_prefix(' ').unwrap_or(&text[i + 1..])),
            None => (text, ""),
        };
        if field == "data" {
            self.data.push_str(value);
            self.data.push('\n');
            self.has_data = true;
        }
        self.line = line; // keep the allocation
        self.line.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(chunks: &[&[u8]]) -> Result<Vec<SseEvent>, SseError> {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c, &mut out)?;
        }
        d.finish()?;
        Ok(out)
    }

    #[test]
    fn basic_stream() {
        let s = b"data: {\"a\":1}\n\n: keep-alive\n\ndata: two\ndata: lines\n\nevent: x\nid: 3\ndata:[DONE]\n\n";
        assert_eq!(
            decode(&[s]).unwrap(),
            vec![
                SseEvent::Data("{\"a\":1}".into()),
                SseEvent::Data("two\nlines".into()),
                SseEvent::Done
            ]
        );
    }

    #[test]
    fn line_ends_of_every_kind() {
        let s = b"data: a\r\n\r\ndata: b\r\rdata: c\n\n";
        let want = vec![
            SseEvent::Data("a".into()),
            SseEvent::Data("b".into()),
            SseEvent::Data("c".into()),
        ];
        assert_eq!(decode(&[s]).unwrap(), want);
        // "\r" and "\n" of one line end split across chunks.
        assert_eq!(
            decode(&[b"data: a\r", b"\n\r", b"\ndata: b\r\r", b"data: c\n\n"]).unwrap(),
            want
        );
    }

    #[test]
    fn malformed_streams_are_errors() {
        assert_eq!(decode(&[b"data: cut"]), Err(SseError::Truncated));
        assert_eq!(decode(&[b"data: cut\n"]), Err(SseError::Truncated));
        assert_eq!(decode(&[b"data: \xff\xfe\n\n"]), Err(SseError::InvalidUtf8));
        assert_eq!(decode(&[b"data: ok\n\n"]).unwrap(), vec![SseEvent::Data("ok".into())]);
    }

    #[test]
    fn multibyte_split() {
        let s = "data: héllo 🚀\n\n".as_bytes();
        for i in 0..s.len() {
            assert_eq!(
                decode(&[&s[..i], &s[i..]]).unwrap(),
                vec![SseEvent::Data("héllo 🚀".into())]
            );
        }
    }

    proptest! {
        #[test]
        fn any_split_decodes_the_same(
            events in proptest::collection::vec("[a-zA-Z0-9 {}\":,]{0,40}", 1..8),
            crlf in any::<bool>(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let nl = if crlf { "\r\n" } else { "\n" };
            let mut stream = String::new();
            for e in &events {
                stream.push_str(&format!(": comment{nl}data: {e}{nl}{nl}"));
            }
            stream.push_str(&format!("data: [DONE]{nl}{nl}"));
            let bytes = stream.as_bytes();
            let whole = decode(&[bytes]).unwrap();
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(&bytes[last..p]);
                last = p;
            }
            chunks.push(&bytes[last..]);
            prop_assert_eq!(decode(&chunks).unwrap(), whole.clone());
            let mut want: Vec<SseEvent> = events.iter().map(|e| SseEvent::Data(e.clone())).collect();
            want.push(SseEvent::Done);
            prop_assert_eq!(whole, want);
        }

        #[test]
        fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8)) {
            let mut d = SseDecoder::new();
            let mut out = Vec::new();
            for c in &chunks {
                if d.push(c, &mut out).is_err() {
                    break;
                }
            }
            let _ = d.finish();
        }
    }
}
