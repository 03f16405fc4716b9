//! Input formats: the `--format` names and the guess from a file's name and first line.
//! Apart from the reader because the guess needs only a peeked prefix (`detect` makes it
//! without any reader), and the format is the one word the other input files share.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde_json::Value;

use super::lines::{is_blank, BOM};

/// Input file format (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// OpenAI Batch API input: `{"custom_id","method","url","body"}` per line.
    OpenaiBatch,
    /// One request body object per line; `custom_id` is the line number.
    Jsonl,
    /// CSV with a header row containing a `prompt` column.
    Csv,
    /// One prompt per line; blank lines are skipped.
    Text,
}

impl Format {
    /// All variants, in the order they are listed in help texts.
    pub const ALL: [Format; 4] = [Format::OpenaiBatch, Format::Jsonl, Format::Csv, Format::Text];

    /// The name used on the command line (`--format NAME`).
    pub fn name(&self) -> &'static str {
        match self {
            Format::OpenaiBatch => "openai-batch",
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
            Format::Text => "text",
        }
    }

    /// Guesses the format from the path's extension and the first bytes of the
    /// content (which may start with a BOM and blank lines, and may end mid-line).
    ///
    /// `.csv` is csv, `.txt` is text; `.jsonl`/`.json`/`.ndjson` and any other
    /// input whose first non-blank line starts with `{` is openai-batch when that
    /// line is an object with `custom_id` and `body`, else jsonl; anything else
    /// is text.
    pub fn detect(path: &Path, first_bytes: &[u8]) -> Format {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase());
        match ext.as_deref() {
            Some("csv") => return Format::Csv,
            Some("txt") => return Format::Text,
            Some("jsonl" | "json" | "ndjson") => return json_flavour(first_nonblank_line(first_bytes)),
            _ => {}
        }
        let first = first_nonblank_line(first_bytes);
        if trim_ascii(first).starts_with(b"{") {
            json_flavour(first)
        } else {
            Format::Text
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = ParseNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ParseNameError {
                what: "format",
                given: s.to_string(),
                expected: "openai-batch|jsonl|csv|text",
            })
    }
}

/// An unknown `--api` or `--format` name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {given:?} (expected one of {expected})")]
pub struct ParseNameError {
    what: &'static str,
    given: String,
    expected: &'static str,
}

/// Decides between openai-batch and jsonl from the first non-blank line.
fn json_flavour(line: &[u8]) -> Format {
    match serde_json::from_slice::<Value>(trim_ascii(line)) {
        Ok(Value::Object(m)) if m.contains_key("custom_id") && m.contains_key("body") => Format::OpenaiBatch,
        Ok(_) => Format::Jsonl,
        // The peeked prefix may stop mid-line (huge first line), so fall back to
        // looking for the two keys textually rather than guessing jsonl.
        Err(_) if contains(line, b"\"custom_id\"") && contains(line, b"\"body\"") => Format::OpenaiBatch,
        Err(_) => Format::Jsonl,
    }
}

fn trim_ascii(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if first.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if last.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The first non-blank line of `bytes` (after an optional BOM), possibly
/// incomplete if `bytes` stops mid-line; empty if there is none.
fn first_nonblank_line(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    bytes.split(|&b| b == b'\n').find(|l| !is_blank(l)).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::testkit::*;

    #[test]
    fn detection_by_extension() {
        let batch = batch_line("a");
        let p = |s: &str| PathBuf::from(s);
        use std::path::PathBuf;
        assert_eq!(Format::detect(&p("x.csv"), b"{\"a\":1}"), Format::Csv);
        assert_eq!(Format::detect(&p("x.TXT"), b"{\"a\":1}"), Format::Text);
        assert_eq!(Format::detect(&p("x.jsonl"), batch.as_bytes()), Format::OpenaiBatch);
        assert_eq!(Format::detect(&p("x.json"), CHAT_BODY.as_bytes()), Format::Jsonl);
        assert_eq!(
            Format::detect(&p("x.ndjson"), b"\n\n{\"custom_id\":\"1\",\"body\":{}}\n"),
            Format::OpenaiBatch
        );
        assert_eq!(Format::detect(&p("x.jsonl"), b"not json"), Format::Jsonl);
    }

    #[test]
    fn detection_by_content() {
        let batch = batch_line("a");
        let p = |s: &str| std::path::PathBuf::from(s);
        assert_eq!(Format::detect(&p("-"), batch.as_bytes()), Format::OpenaiBatch);
        assert_eq!(
            Format::detect(&p("input"), b"\xEF\xBB\xBF\r\n  {\"prompt\":\"x\"}"),
            Format::Jsonl
        );
        assert_eq!(Format::detect(&p("in.dat"), b"hello {world}"), Format::Text);
        assert_eq!(Format::detect(&p("-"), b""), Format::Text);
        // First line cut off mid-way (longer than what was peeked).
        let cut = &batch.as_bytes()[..batch.len() - 10];
        assert_eq!(Format::detect(&p("-"), cut), Format::OpenaiBatch);
    }

    #[test]
    fn names_parse() {
        for f in Format::ALL {
            assert_eq!(f.name().parse::<Format>(), Ok(f));
        }
        let err = "yaml".parse::<Format>().unwrap_err().to_string();
        assert!(err.contains("openai-batch|jsonl|csv|text"), "{err}");
    }
}
