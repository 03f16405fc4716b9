//! Line reading shared by every input format: the one capped line buffer, the peek at the
//! first non-blank line (so that detection works on stdin too), and the `file:line` issues and
//! file errors every reader reports in. Apart from the reader so that the format, csv and check
//! files can name these without depending on the [`super::reader::Reader`] that drives them.

use std::fmt;
use std::io::{self, BufRead, Cursor, Read};

/// UTF-8 byte order mark, tolerated (and dropped) at the start of a file.
pub(super) const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Where a reader's bytes come from: a file, stdin, a decoder or a buffer.
pub(super) type Source = Box<dyn BufRead + Send>;

/// A problem with one line (or CSV record) of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Display name of the input (path or `<stdin>`).
    pub file: String,
    /// 1-based physical line.
    pub line: u64,
    /// Short, specific, lowercase description.
    pub reason: String,
    /// True when the input could not be read past this point (I/O error, or a
    /// CSV record over the size cap); the reader yields nothing after it.
    pub fatal: bool,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.reason)
    }
}

impl std::error::Error for Issue {}

/// A problem with the input as a whole.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The path as given.
        path: String,
        /// The underlying error.
        source: io::Error,
    },
    /// Reading failed part way (I/O error, or a CSV record over the size cap).
    #[error("{name}:{line}: read error: {reason}")]
    Read {
        /// Display name of the input.
        name: String,
        /// 1-based line where reading stopped.
        line: u64,
        /// What went wrong.
        reason: String,
    },
    /// The input has no non-blank content at all.
    #[error("{name}: input is empty (no non-blank lines)")]
    Empty {
        /// Display name of the input.
        name: String,
    },
    /// A CSV input whose header row lacks a `prompt` column.
    #[error("{name}:1: csv header has no \"prompt\" column (header: {header})")]
    CsvNoPrompt {
        /// Display name of the input.
        name: String,
        /// The header row as read, comma-joined.
        header: String,
    },
}

/// Drops a leading BOM and reads ahead up to the first non-blank line, then
/// returns a prefix of those bytes (for detection) together with a source
/// that replays all of them first.
/// Fails with [`FileError::Empty`] when there is no non-blank content.
pub(super) fn prepare(mut src: Source, name: &str, max_line: usize) -> Result<(Vec<u8>, Source), FileError> {
    let read_err = |line: u64, e: io::Error| FileError::Read {
        name: name.to_string(),
        line,
        reason: e.to_string(),
    };
    let mut head = Vec::new();
    // Read the first (up to) 3 bytes one call at a time: fill_buf may hand out
    // fewer, and a BOM split across reads must still be recognised.
    let mut start = [0u8; 3];
    let mut got = 0;
    while got < 3 {
        match src.read(&mut start[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_err(1, e)),
        }
    }
    if &start[..got] != BOM {
        head.extend_from_slice(&start[..got]);
    }
    let mut line_start = 0;
    let mut lines = 0u64;
    loop {
        let mut at_eof = false;
        // Complete the current line (its first bytes may already be in `head`).
        if !head[line_start..].contains(&b'\n') {
            let room = (max_line as u64).saturating_add(1);
            let n = Read::take(src.as_mut(), room)
                .read_until(b'\n', &mut head)
                .map_err(|e| read_err(lines + 1, e))?;
            at_eof = n == 0 || (!head.ends_with(b"\n") && (n as u64) < room);
        }
        let end = match head[line_start..].iter().position(|&b| b == b'\n') {
            Some(p) => line_start + p + 1,
            None => head.len(),
        };
        lines += 1;
        if !is_blank(&head[line_start..end]) {
            break;
        }
        if at_eof {
            return Err(FileError::Empty { name: name.to_string() });
        }
        line_start = end;
        // A pathological run of blank lines must not grow `head` unboundedly;
        // stop peeking, the reader skips whatever blank lines remain anyway.
        if head.len() > max_line {
            break;
        }
    }
    // Detection only needs a prefix; copying at most this much keeps a huge
    // first line from being held twice.
    const DETECT_BYTES: usize = 64 * 1024;
    let peek = head[..head.len().min(DETECT_BYTES)].to_vec();
    let replay: Source = Box::new(Cursor::new(head).chain(src));
    Ok((peek, replay))
}

pub(super) enum LineRead {
    Eof,
    /// A line (with its terminator, if any) is in the buffer.
    Line,
    /// The line exceeded the cap; it was consumed and discarded.
    TooLong,
}

/// Reads one line into `buf`, storing at most `max + 1` bytes; a longer line is
/// skipped to its end without being buffered.
pub(super) fn read_line_capped(src: &mut dyn BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<LineRead> {
    buf.clear();
    let room = (max as u64).saturating_add(1);
    let n = Read::take(&mut *src, room).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(LineRead::Eof);
    }
    if buf.ends_with(b"\n") || buf.len() <= max {
        return Ok(LineRead::Line);
    }
    buf.clear();
    loop {
        let chunk = match src.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            break;
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(p) => {
                src.consume(p + 1);
                break;
            }
            None => {
                let len = chunk.len();
                src.consume(len);
            }
        }
    }
    Ok(LineRead::TooLong)
}

pub(super) fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

pub(super) fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Api;
    use crate::batch::testkit::*;
    use crate::batch::{Format, Payload, ReadOptions, Reader};

    #[test]
    fn bom_and_crlf_are_tolerated_in_every_format() {
        let cases = [
            (
                Format::OpenaiBatch,
                format!("\u{feff}{}\r\n{}\r\n\r\n", batch_line("a"), batch_line("b")),
            ),
            (Format::Jsonl, format!("\u{feff}{CHAT_BODY}\r\n{CHAT_BODY}\r\n\r\n")),
            (
                Format::Csv,
                "\u{feff}prompt,custom_id\r\nhi,a\r\nho,b\r\n\r\n".to_string(),
            ),
            (Format::Text, "\u{feff}hi\r\nho\r\n\r\n".to_string()),
        ];
        for (format, data) in cases {
            let res = read(format, Api::Chat, &data);
            assert_eq!(ok_items(&res).len(), 2, "{format}: {res:?}");
            if let Payload::Prompt { prompt, .. } = &ok_items(&res)[0].body {
                assert_eq!(prompt, "hi", "{format}: BOM and CR must be stripped");
            }
        }
    }

    #[test]
    fn long_lines_and_bad_utf8_are_reported_and_skipped() {
        let o = ReadOptions {
            max_line_bytes: 32,
            ..opts(Api::Completions)
        };
        let long = format!("{{\"prompt\":\"{}\"}}", "x".repeat(100));
        let mut data = format!("{{\"prompt\":\"a\"}}\n{long}\n").into_bytes();
        data.extend_from_slice(b"{\"prompt\":\"\xff\"}\n{\"prompt\":\"b\"}\n");
        data.extend_from_slice(long.as_bytes()); // too long and unterminated at EOF
        let res = read_with(Format::Jsonl, o, &data);
        let issues: Vec<(u64, &str)> = res
            .iter()
            .filter_map(|r| r.as_ref().err())
            .map(|i| (i.line, i.reason.as_str()))
            .collect();
        assert_eq!(
            issues,
            [
                (2, "line longer than 32 bytes"),
                (3, "invalid UTF-8 at column 12"),
                (5, "line longer than 32 bytes")
            ]
        );
        let ids: Vec<&str> = ok_items(&res).iter().map(|i| i.custom_id.as_str()).collect();
        assert_eq!(ids, ["1", "4"]);
    }

    #[test]
    fn empty_input_is_a_file_error_for_every_format() {
        for format in Format::ALL {
            for data in [&b""[..], b"\n\n", b"\xEF\xBB\xBF", b" \r\n\t\n"] {
                let r = Reader::new(Box::new(Cursor::new(data.to_vec())), format, opts(Api::Chat));
                assert!(matches!(r, Err(FileError::Empty { .. })), "{format} {data:?}");
            }
        }
    }

    #[test]
    fn binary_garbage_yields_issues() {
        let garbage: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        for format in [Format::OpenaiBatch, Format::Jsonl, Format::Text] {
            let res = read_with(format, opts(Api::Chat), &garbage);
            assert!(!res.is_empty(), "{format}");
        }
        // Binary csv header without a prompt column.
        let r = Reader::new(Box::new(Cursor::new(garbage)), Format::Csv, opts(Api::Chat));
        assert!(r.is_err());
    }
}
