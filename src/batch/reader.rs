//! Streaming reader for batch input files.
//!
//! Every format is read incrementally through one reusable buffer, so memory
//! stays flat in the file size: a 10 GB input costs the same as a 10 KB one.
//! Duplicate `custom_id`s are found in bounded memory too, by two passes over a
//! file (see [`super::dupes`]); only stdin keeps a digest of every id.
//!
//! Long because: four input formats share one line buffer, one issue type and one validation
//! pass; each format's reader is short, and together they are the input contract.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Cursor, Read};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use super::dupes::{DuplicateCheck, Seen};
use super::fast::{self, RawBody};

use serde_json::{Map, Value};

/// Default cap on one input line (or one CSV record), in bytes.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// UTF-8 byte order mark, tolerated (and dropped) at the start of a file.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Display name used for a source that has no path.
const STDIN_NAME: &str = "<stdin>";

/// Longest user-provided string (id, url) quoted verbatim in a message; keeps
/// messages readable when a line holds a huge or garbage value.
const QUOTE_MAX_CHARS: usize = 80;

pub use crate::api::Api;

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

/// What a request body needs, and what it is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOptions {
    /// The API the batch is sent to; decides whether bodies need `messages` or `prompt`.
    pub api: Api,
    /// The `url` openai-batch lines must match (compared on the path after any
    /// `/v1`). `None` means `api.path()`, and for [`Api::Forefront`] any url.
    pub expected_url: Option<String>,
    /// Longest accepted line (CSV: record) in bytes; longer ones are reported.
    pub max_line_bytes: usize,
    /// How `custom_id`s seen before are found (default: every id remembered, one pass).
    /// [`validate`] over a file uses two passes in bounded memory instead; a later pass over a
    /// file it checked needs [`DuplicateCheck::Off`], or with `--skip-invalid` the candidates
    /// it found ([`ValidationReport::duplicates`]).
    pub duplicates: DuplicateCheck,
    /// JSON bodies that surely pass the checks come as [`Payload::Raw`], the bytes the file
    /// holds, read without building a JSON tree (the others, as before, as [`Payload::Body`]).
    pub raw_bodies: bool,
}

impl ReadOptions {
    /// Options for `api` with the default line cap and url check.
    pub fn new(api: Api) -> Self {
        ReadOptions {
            api,
            expected_url: None,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            duplicates: DuplicateCheck::All,
            raw_bodies: false,
        }
    }
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions::new(Api::Chat)
    }
}

/// One request read from the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// 0-based index among the valid items, in file order; stable for a given
    /// file, so it is what sharding uses.
    pub index: u64,
    /// 1-based physical line where the item starts, for messages.
    pub line: u64,
    /// The id results are reported (and resumed) under.
    pub custom_id: String,
    /// The request itself.
    pub body: Payload,
}

/// The request content of an [`Item`].
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A complete request body as given in the file (openai-batch, jsonl).
    Body(Value),
    /// The same, as the file's bytes (with [`ReadOptions::raw_bodies`]).
    Raw(RawBody),
    /// A bare prompt (text, csv); the caller builds the body for `--api`.
    Prompt {
        /// The prompt text, never empty.
        prompt: String,
        /// CSV columns other than `prompt` and `custom_id`, in header order.
        metadata: Vec<(String, String)>,
    },
}

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

/// Result of a full validation pass over an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationReport {
    /// The format the input was read as.
    pub format: Format,
    /// Number of valid items.
    pub items: u64,
    /// The first `max_issues` issues, in file order.
    pub issues: Vec<Issue>,
    /// Total number of issues, including those not kept in `issues`.
    pub issue_count: u64,
    /// What a later pass needs to skip the same duplicates exactly: the candidates of a file's
    /// screen ([`DuplicateCheck::Only`]), or [`DuplicateCheck::Off`] when there were none.
    pub duplicates: DuplicateCheck,
}

/// True when item `index` belongs to `shard = Some((k, n))`, i.e. `index % n == k`.
/// `None` (no sharding) and the invalid `n == 0` accept every index; validate
/// user input with [`parse_shard`].
pub fn in_shard(index: u64, shard: Option<(u64, u64)>) -> bool {
    match shard {
        Some((k, n)) if n > 0 => index % n == k,
        _ => true,
    }
}

/// Parses a `K/N` shard spec (0-based `K < N`).
pub fn parse_shard(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("invalid shard {s:?} (expected K/N with 0 <= K < N)");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let k: u64 = k.trim().parse().map_err(|_| bad())?;
    let n: u64 = n.trim().parse().map_err(|_| bad())?;
    if k < n {
        Ok((k, n))
    } else {
        Err(bad())
    }
}

/// Reads the whole input and reports valid item and issue counts.
///
/// This is the streamed first pass: run it, then [`Reader::open`] the file again
/// for the real run. A file is screened for duplicate ids with a Bloom filter and,
/// when that found candidates, read once more to check only those exactly
/// ([`super::dupes`]): memory stays bounded, the issues are the same as a set of
/// every id would give. For stdin (`-`) the input is consumed, so use
/// [`validate_reader`] on the one reader instead if it must be read twice.
pub fn validate(
    path: &Path,
    format: Option<Format>,
    opts: &ReadOptions,
    max_issues: usize,
) -> Result<ValidationReport, FileError> {
    // The bodies are checked, not kept: no JSON tree is needed for the lines that pass.
    let opts = &ReadOptions {
        raw_bodies: true,
        ..opts.clone()
    };
    if path == Path::new("-") || opts.duplicates != DuplicateCheck::All {
        return validate_reader(Reader::open(path, format, opts.clone())?, max_issues);
    }
    let screen = ReadOptions {
        duplicates: DuplicateCheck::Screen,
        ..opts.clone()
    };
    let mut reader = Reader::open(path, format, screen)?;
    let mut report = drain(&mut reader, max_issues)?;
    let candidates = reader.seen.take_candidates();
    if candidates.is_empty() {
        return Ok(report);
    }
    let candidates = Arc::new(candidates);
    let recheck = ReadOptions {
        duplicates: DuplicateCheck::Only(candidates.clone()),
        ..opts.clone()
    };
    let mut reader = Reader::open(path, Some(report.format), recheck)?;
    reader.duplicates_only = true;
    let dups = drain(&mut reader, max_issues)?;
    // Both lists are in file order and each holds its first `max_issues`: so does the merge.
    let mut issues = std::mem::take(&mut report.issues);
    issues.extend(dups.issues);
    issues.sort_by_key(|i| i.line);
    issues.truncate(max_issues);
    report.issues = issues;
    report.issue_count += dups.issue_count;
    report.items -= dups.issue_count;
    report.duplicates = DuplicateCheck::Only(candidates);
    Ok(report)
}

/// Drains `reader`, counting valid items and collecting issues (see [`validate`]).
/// A fatal issue becomes [`FileError::Read`], since the counts would be partial.
pub fn validate_reader(mut reader: Reader, max_issues: usize) -> Result<ValidationReport, FileError> {
    drain(&mut reader, max_issues)
}

fn drain(reader: &mut Reader, max_issues: usize) -> Result<ValidationReport, FileError> {
    let mut report = ValidationReport {
        format: reader.format(),
        items: 0,
        issues: Vec::new(),
        issue_count: 0,
        duplicates: DuplicateCheck::Off,
    };
    for res in reader {
        match res {
            Ok(_) => report.items += 1,
            Err(issue) if issue.fatal => {
                return Err(FileError::Read {
                    name: issue.file,
                    line: issue.line,
                    // The issue says "read error: ..." already; the file error says it once.
                    reason: match issue.reason.strip_prefix("read error: ") {
                        Some(r) => r.to_string(),
                        None => issue.reason,
                    },
                });
            }
            Err(issue) => {
                report.issue_count += 1;
                if report.issues.len() < max_issues {
                    report.issues.push(issue);
                }
            }
        }
    }
    Ok(report)
}

type Source = Box<dyn BufRead + Send>;

/// Streaming iterator over the items of one input, yielding `Ok(Item)` per
/// valid line/record and `Err(Issue)` per invalid one; blank lines yield nothing.
pub struct Reader {
    name: String,
    format: Format,
    api: Api,
    /// Path segments the openai-batch `url` must equal; `None` accepts any url.
    expected_url: Option<(String, Vec<String>)>,
    /// The last `url` that matched: the lines of a file mostly repeat it.
    url_matched: String,
    raw_bodies: bool,
    max_line: usize,
    inner: Inner,
    next_index: u64,
    /// Duplicate ids (only for formats whose ids come from the file: openai-batch, csv
    /// `custom_id`); see [`DuplicateCheck`].
    seen: Seen,
    /// The re-check pass of [`validate`]: yields only duplicate issues, and skips
    /// openai-batch lines whose id is not a candidate without parsing them whole.
    duplicates_only: bool,
    /// Set when the last line was rejected as a duplicate.
    duplicate_hit: bool,
    done: bool,
}

enum Inner {
    Lines {
        src: Source,
        buf: Vec<u8>,
        /// Physical lines consumed so far.
        line: u64,
    },
    Csv(Box<CsvState>),
}

struct CsvState {
    rdr: csv::Reader<CapRead>,
    rec: csv::ByteRecord,
    columns: Vec<String>,
    prompt_col: usize,
    id_col: Option<usize>,
    /// Data rows seen so far (blank lines excluded), for default custom_ids.
    row: u64,
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("api", &self.api)
            .field("next_index", &self.next_index)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// Reads `src` (e.g. stdin) as `format`; issues name the input `<stdin>`.
    pub fn new(src: Box<dyn BufRead + Send>, format: Format, opts: ReadOptions) -> Result<Reader, FileError> {
        Reader::with_name(src, STDIN_NAME, format, opts)
    }

    /// Like [`Reader::new`], with the display name used in issues and errors.
    pub fn with_name(
        src: Box<dyn BufRead + Send>,
        name: &str,
        format: Format,
        opts: ReadOptions,
    ) -> Result<Reader, FileError> {
        let (_head, src) = prepare(src, name, opts.max_line_bytes)?;
        Reader::from_prepared(src, name.to_string(), format, opts, None)
    }

    /// Opens `path` (`-` for stdin) and reads it as `format`, detecting the
    /// format with [`Format::detect`] when `None`. Detection peeks at the
    /// first non-blank line and keeps it, so stdin works too.
    pub fn open(path: &Path, format: Option<Format>, opts: ReadOptions) -> Result<Reader, FileError> {
        let mut size = None;
        let (name, src): (String, Source) = if path == Path::new("-") {
            (STDIN_NAME.to_string(), Box::new(BufReader::new(io::stdin())))
        } else {
            let file = File::open(path).map_err(|source| FileError::Open {
                path: path.display().to_string(),
                source,
            })?;
            size = file.metadata().ok().map(|m| m.len());
            (
                path.display().to_string(),
                Box::new(BufReader::with_capacity(256 * 1024, file)),
            )
        };
        let (src, compression) = super::compress::decoding(src).map_err(|e| FileError::Read {
            name: name.clone(),
            line: 1,
            reason: e.to_string(),
        })?;
        if compression != super::compress::Compression::None {
            // The Bloom screen is sized by the bytes it will see: job text compresses about 8x.
            size = size.map(|s| s.saturating_mul(8));
        }
        let (head, src) = prepare(src, &name, opts.max_line_bytes)?;
        let format = format.unwrap_or_else(|| Format::detect(&super::compress::strip_ext(path), &head));
        Reader::from_prepared(src, name, format, opts, size)
    }

    /// The format being read.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Display name of the input.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn from_prepared(
        src: Source,
        name: String,
        format: Format,
        opts: ReadOptions,
        size: Option<u64>,
    ) -> Result<Reader, FileError> {
        let expected_url = match (&opts.expected_url, opts.api) {
            (Some(u), _) => Some((u.clone(), url_segments(u))),
            (None, Api::Forefront) => None,
            (None, api) => Some((api.path().to_string(), url_segments(api.path()))),
        };
        let max_line = opts.max_line_bytes.max(1);
        let inner = match format {
            Format::Csv => Inner::Csv(Box::new(CsvState::new(src, &name, max_line)?)),
            _ => Inner::Lines {
                src,
                buf: Vec::new(),
                line: 0,
            },
        };
        Ok(Reader {
            name,
            format,
            api: opts.api,
            expected_url,
            url_matched: String::new(),
            raw_bodies: opts.raw_bodies,
            max_line,
            inner,
            next_index: 0,
            seen: Seen::new(&opts.duplicates, size),
            duplicates_only: false,
            duplicate_hit: false,
            done: false,
        })
    }

    fn issue(&self, line: u64, reason: String, fatal: bool) -> Issue {
        Issue {
            file: self.name.clone(),
            line,
            reason,
            fatal,
        }
    }

    fn item(&mut self, line: u64, custom_id: String, body: Payload) -> Item {
        let index = self.next_index;
        self.next_index += 1;
        Item {
            index,
            line,
            custom_id,
            body,
        }
    }

    /// Records `id` as seen on `line`, failing if it was seen before.
    fn claim_id(&mut self, id: &str, line: u64) -> Result<(), String> {
        self.seen.claim(id, line).map_err(|first| {
            self.duplicate_hit = true;
            format!("duplicate custom_id {} (first on line {first})", quote(id))
        })
    }

    /// In the re-check pass: an openai-batch line whose id is surely unique needs no parse.
    fn skip_unique(&self, bytes: &[u8]) -> bool {
        #[derive(serde::Deserialize)]
        struct IdOnly<'a> {
            #[serde(borrow)]
            custom_id: Option<std::borrow::Cow<'a, str>>,
        }
        self.format == Format::OpenaiBatch
            && serde_json::from_slice::<IdOnly>(bytes)
                .ok()
                .and_then(|p| p.custom_id)
                .is_some_and(|id| !self.seen.is_candidate(&id))
    }

    fn next_line(&mut self) -> Option<Result<Item, Issue>> {
        loop {
            let Inner::Lines { src, buf, line } = &mut self.inner else {
                return None;
            };
            let start_line = *line + 1;
            let read = read_line_capped(src.as_mut(), buf, self.max_line);
            match read {
                Err(e) => {
                    self.done = true;
                    return Some(Err(self.issue(start_line, format!("read error: {e}"), true)));
                }
                Ok(LineRead::Eof) => {
                    self.done = true;
                    return None;
                }
                Ok(LineRead::TooLong) => {
                    *line += 1;
                    if self.duplicates_only {
                        continue;
                    }
                    let reason = format!("line longer than {} bytes", self.max_line);
                    return Some(Err(self.issue(start_line, reason, false)));
                }
                Ok(LineRead::Line) => {
                    *line += 1;
                    let content = strip_eol(buf);
                    if is_blank(content) {
                        continue;
                    }
                    // Taken out so the parse helpers can borrow `self` mutably;
                    // put back below to keep reusing the allocation.
                    let taken = std::mem::take(buf);
                    self.duplicate_hit = false;
                    let res = if self.duplicates_only && self.skip_unique(strip_eol(&taken)) {
                        None
                    } else {
                        Some(self.parse_line(start_line, strip_eol(&taken)))
                    };
                    if let Inner::Lines { buf, .. } = &mut self.inner {
                        *buf = taken;
                    }
                    match res {
                        Some(Err(reason)) if !self.duplicates_only || self.duplicate_hit => {
                            return Some(Err(self.issue(start_line, reason, false)))
                        }
                        Some(Ok(item)) => return Some(Ok(item)),
                        _ => continue,
                    }
                }
            }
        }
    }

    fn parse_line(&mut self, line: u64, bytes: &[u8]) -> Result<Item, String> {
        let text =
            std::str::from_utf8(bytes).map_err(|e| format!("invalid UTF-8 at column {}", e.valid_up_to() + 1))?;
        match self.format {
            Format::Text => Ok(self.item(
                line,
                line.to_string(),
                Payload::Prompt {
                    prompt: text.to_string(),
                    metadata: Vec::new(),
                },
            )),
            Format::Jsonl => {
                if self.raw_bodies {
                    if let Some(body) = fast::jsonl_line(text, self.api) {
                        return Ok(self.item(line, line.to_string(), Payload::Raw(body)));
                    }
                }
                let body = parse_object(text)?;
                check_body(&body, self.api)?;
                Ok(self.item(line, line.to_string(), Payload::Body(Value::Object(body))))
            }
            Format::OpenaiBatch => self.parse_openai(line, text),
            // CSV never goes through the line reader.
            Format::Csv => Err("internal: csv read as lines".to_string()),
        }
    }

    fn parse_openai(&mut self, line: u64, text: &str) -> Result<Item, String> {
        if self.raw_bodies {
            let expected = self.expected_url.as_ref().map(|(_, segs)| segs.as_slice());
            let last = &mut self.url_matched;
            let url_ok = |u: &str| {
                if !last.is_empty() && u == last.as_str() {
                    return true;
                }
                let ok = expected.is_none_or(|segs| url_matches(u, segs));
                if ok {
                    u.clone_into(last);
                }
                ok
            };
            if let Some((id, body)) = fast::openai_line(text, self.api, url_ok) {
                self.claim_id(&id, line)?;
                return Ok(self.item(line, id.into_owned(), Payload::Raw(body)));
            }
        }
        let mut obj = parse_object(text)?;
        let custom_id = match obj.remove("custom_id") {
            Some(Value::String(s)) if s.is_empty() => return Err("empty \"custom_id\"".to_string()),
            Some(Value::String(s)) => s,
            Some(other) => return Err(format!("\"custom_id\" must be a string, got {}", kind(&other))),
            None => return Err("missing \"custom_id\" string".to_string()),
        };
        match obj.get("method") {
            None => {}
            Some(Value::String(m)) if m.eq_ignore_ascii_case("POST") => {}
            Some(Value::String(m)) => return Err(format!("method {} is not POST", quote(m))),
            Some(other) => return Err(format!("\"method\" must be a string, got {}", kind(other))),
        }
        match (obj.get("url"), &self.expected_url) {
            (None, _) | (Some(Value::String(_)), None) => {}
            (Some(Value::String(u)), Some((want, segs))) => {
                if !url_matches(u, segs) {
                    return Err(format!(
                        "url {} does not match --api {} (expects {})",
                        quote(u),
                        self.api,
                        want
                    ));
                }
            }
            (Some(other), _) => return Err(format!("\"url\" must be a string, got {}", kind(other))),
        }
        let body = match obj.remove("body") {
            Some(Value::Object(b)) => b,
            Some(other) => return Err(format!("missing \"body\" object (got {})", kind(&other))),
            None => return Err("missing \"body\" object".to_string()),
        };
        check_body(&body, self.api)?;
        self.claim_id(&custom_id, line)?;
        Ok(self.item(line, custom_id, Payload::Body(Value::Object(body))))
    }

    fn next_csv(&mut self) -> Option<Result<Item, Issue>> {
        loop {
            let Inner::Csv(st) = &mut self.inner else {
                return None;
            };
            let read = st.rdr.read_byte_record(&mut st.rec);
            let line = st.rec.position().map_or(st.rdr.position().line(), |p| p.line());
            // Re-arm the size cap from the end of this record: only a single
            // record may not exceed max_line (plus csv's read-ahead).
            let end = st.rdr.position().byte();
            st.rdr.get_mut().allow_until(end, self.max_line);
            match read {
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    let at = st.rdr.position().line();
                    let reason = match e.kind() {
                        _ if st.rdr.get_ref().tripped => {
                            format!("csv record longer than {} bytes", self.max_line)
                        }
                        csv::ErrorKind::Io(io) => format!("read error: {io}"),
                        _ => format!("csv error: {e}"),
                    };
                    return Some(Err(self.issue(at, reason, true)));
                }
                Ok(true) => {
                    // csv skips empty lines itself; also skip whitespace-only ones.
                    if st.rec.len() <= 1 && st.rec.iter().all(is_blank) {
                        continue;
                    }
                    st.row += 1;
                    let row = st.row;
                    self.duplicate_hit = false;
                    match self.parse_csv_record(line, row) {
                        Ok(item) => return Some(Ok(item)),
                        Err(_) if self.duplicates_only && !self.duplicate_hit => continue,
                        Err(reason) => return Some(Err(self.issue(line, reason, false))),
                    }
                }
            }
        }
    }

    fn parse_csv_record(&mut self, line: u64, row: u64) -> Result<Item, String> {
        let Inner::Csv(st) = &self.inner else {
            return Err("internal: not csv".to_string());
        };
        if st.rec.len() != st.columns.len() {
            return Err(format!(
                "row has {} fields, header has {}",
                st.rec.len(),
                st.columns.len()
            ));
        }
        let mut prompt = String::new();
        let mut custom_id = None;
        let mut metadata = Vec::with_capacity(st.columns.len().saturating_sub(1));
        for (i, (field, col)) in st.rec.iter().zip(&st.columns).enumerate() {
            let value = std::str::from_utf8(field)
                .map_err(|e| format!("invalid UTF-8 in column {} at byte {}", quote(col), e.valid_up_to() + 1))?;
            if i == st.prompt_col {
                prompt = value.to_string();
            } else if Some(i) == st.id_col {
                custom_id = Some(value.to_string());
            } else {
                metadata.push((col.clone(), value.to_string()));
            }
        }
        if prompt.trim().is_empty() {
            return Err("empty prompt".to_string());
        }
        let custom_id = match custom_id {
            Some(id) if id.trim().is_empty() => return Err("empty \"custom_id\"".to_string()),
            Some(id) => {
                self.claim_id(&id, line)?;
                id
            }
            // Row numbers are unique by construction: no need to track them.
            None => row.to_string(),
        };
        Ok(self.item(line, custom_id, Payload::Prompt { prompt, metadata }))
    }
}

impl Iterator for Reader {
    type Item = Result<Item, Issue>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.inner {
            Inner::Lines { .. } => self.next_line(),
            Inner::Csv(_) => self.next_csv(),
        }
    }
}

impl CsvState {
    fn new(src: Source, name: &str, max_line: usize) -> Result<CsvState, FileError> {
        let mut cap = CapRead {
            inner: src,
            read: 0,
            limit: 0,
            tripped: false,
        };
        cap.allow_until(0, max_line);
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(true)
            // Field counts are checked per row so a short row is an issue for
            // that row, with its content visible, instead of a reader error.
            .flexible(true)
            .from_reader(cap);
        let header = match rdr.byte_headers() {
            Ok(h) => h.clone(),
            Err(e) => {
                let reason = if rdr.get_ref().tripped {
                    format!("csv header longer than {max_line} bytes")
                } else {
                    format!("csv header: {e}")
                };
                return Err(FileError::Read {
                    name: name.to_string(),
                    line: 1,
                    reason,
                });
            }
        };
        let columns: Vec<String> = header
            .iter()
            .map(|h| String::from_utf8_lossy(h).trim().to_string())
            .collect();
        let find = |want: &str| columns.iter().position(|c| c.eq_ignore_ascii_case(want));
        let prompt_col = find("prompt").ok_or_else(|| FileError::CsvNoPrompt {
            name: name.to_string(),
            header: truncate_chars(&columns.join(","), 200),
        })?;
        let id_col = find("custom_id");
        let end = rdr.position().byte();
        rdr.get_mut().allow_until(end, max_line);
        Ok(CsvState {
            rdr,
            rec: csv::ByteRecord::new(),
            columns,
            prompt_col,
            id_col,
            row: 0,
        })
    }
}

/// Read adapter that bounds how far the csv parser may read past the end of
/// the last complete record, so one runaway quoted field cannot grow its
/// record buffer without limit.
struct CapRead {
    inner: Source,
    read: u64,
    limit: u64,
    /// Set when the cap was hit, so the resulting csv error can be told apart
    /// from a genuine I/O error of the source.
    tripped: bool,
}

impl CapRead {
    /// Allows reading up to `max_line` bytes (plus slack for csv's internal
    /// read-ahead buffer) past byte offset `record_end`.
    fn allow_until(&mut self, record_end: u64, max_line: usize) {
        const SLACK: u64 = 64 * 1024;
        self.limit = record_end.saturating_add(max_line as u64).saturating_add(SLACK);
    }
}

impl Read for CapRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.limit.saturating_sub(self.read);
        if left == 0 {
            self.tripped = true;
            return Err(io::Error::new(io::ErrorKind::InvalidData, "csv record too long"));
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Drops a leading BOM and reads ahead up to the first non-blank line, then
/// returns a prefix of those bytes (for detection) together with a source
/// that replays all of them first.
/// Fails with [`FileError::Empty`] when there is no non-blank content.
fn prepare(mut src: Source, name: &str, max_line: usize) -> Result<(Vec<u8>, Source), FileError> {
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

enum LineRead {
    Eof,
    /// A line (with its terminator, if any) is in the buffer.
    Line,
    /// The line exceeded the cap; it was consumed and discarded.
    TooLong,
}

/// Reads one line into `buf`, storing at most `max + 1` bytes; a longer line is
/// skipped to its end without being buffered.
fn read_line_capped(src: &mut dyn BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<LineRead> {
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

/// Parses one JSON line that must be an object.
fn parse_object(text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!("expected a JSON object, got {}", kind(&other))),
        Err(e) => Err(format!("bad JSON: {} at column {}", json_message(&e), e.column())),
    }
}

/// serde_json's message without its " at line L column C" suffix (the line is
/// always 1 here and the column is reported separately).
fn json_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    match full.rfind(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full,
    }
}

/// Checks that a request body carries what `api` needs.
fn check_body(body: &Map<String, Value>, api: Api) -> Result<(), String> {
    match api {
        Api::Chat => match body.get("messages") {
            Some(Value::Array(a)) if a.is_empty() => Err("empty \"messages\" array".to_string()),
            Some(Value::Array(_)) => Ok(()),
            Some(other) => Err(format!("\"messages\" must be an array, got {}", kind(other))),
            None if body.contains_key("prompt") => {
                Err("body has \"prompt\" but --api chat requires a \"messages\" array".to_string())
            }
            None => Err("body has no \"messages\" array (required by --api chat)".to_string()),
        },
        Api::Completions | Api::Forefront => match body.get("prompt") {
            Some(Value::String(s)) if s.trim().is_empty() => Err("empty prompt".to_string()),
            Some(Value::Array(a)) if a.is_empty() => Err("empty prompt".to_string()),
            Some(Value::String(_) | Value::Array(_)) => Ok(()),
            Some(other) => Err(format!("\"prompt\" must be a string or array, got {}", kind(other))),
            None if body.contains_key("messages") => {
                Err(format!("body has \"messages\" but --api {api} requires \"prompt\""))
            }
            None => Err(format!("body has no \"prompt\" (required by --api {api})")),
        },
        Api::Embeddings => match body.get("input") {
            Some(Value::String(s)) if s.trim().is_empty() => Err("empty \"input\"".to_string()),
            Some(Value::Array(a)) if a.is_empty() => Err("empty \"input\" array".to_string()),
            Some(Value::String(_) | Value::Array(_)) => Ok(()),
            Some(other) => Err(format!("\"input\" must be a string or array, got {}", kind(other))),
            None => Err("body has no \"input\" (required by --api embeddings)".to_string()),
        },
    }
}

/// The path segments of a url after its last `v1` segment, so that
/// `/v1/chat/completions`, `chat/completions` and
/// `https://host/openai/v1/chat/completions?x=1` all compare equal.
fn url_segments(url: &str) -> Vec<String> {
    segments(url).map(str::to_string).collect()
}

/// Whether `url`'s segments (see [`url_segments`]) are `want`, without allocating.
fn url_matches(url: &str, want: &[String]) -> bool {
    segments(url).eq(want.iter().map(String::as_str))
}

fn segments(url: &str) -> impl Iterator<Item = &str> + Clone {
    let mut path = url;
    if let Some(i) = path.find("://") {
        let rest = &path[i + 3..];
        path = rest.find('/').map_or("", |j| &rest[j..]);
    }
    if let Some(i) = path.find(['?', '#']) {
        path = &path[..i];
    }
    let segs = path.split('/').filter(|s| !s.is_empty());
    let from = segs
        .clone()
        .enumerate()
        .filter(|(_, s)| *s == "v1")
        .last()
        .map_or(0, |(i, _)| i + 1);
    segs.skip(from)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Debug-quotes a user string, shortened so messages stay one readable line.
fn quote(s: &str) -> String {
    format!("{:?}", truncate_chars(s, QUOTE_MAX_CHARS))
}

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
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
    use proptest::prelude::*;
    use serde_json::json;
    use std::io::Write;

    fn opts(api: Api) -> ReadOptions {
        ReadOptions::new(api)
    }

    fn read_with(format: Format, o: ReadOptions, data: &[u8]) -> Vec<Result<Item, Issue>> {
        match Reader::new(Box::new(Cursor::new(data.to_vec())), format, o) {
            Ok(r) => r.collect(),
            Err(e) => panic!("unexpected file error: {e}"),
        }
    }

    fn read(format: Format, api: Api, data: &str) -> Vec<Result<Item, Issue>> {
        read_with(format, opts(api), data.as_bytes())
    }

    fn ok_items(res: &[Result<Item, Issue>]) -> Vec<&Item> {
        res.iter().filter_map(|r| r.as_ref().ok()).collect()
    }

    /// The single issue in `res`, as (line, reason).
    fn only_issue(res: &[Result<Item, Issue>]) -> (u64, String) {
        let issues: Vec<&Issue> = res.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(issues.len(), 1, "{res:?}");
        (issues[0].line, issues[0].reason.clone())
    }

    const CHAT_BODY: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

    fn batch_line(id: &str) -> String {
        format!(r#"{{"custom_id":"{id}","method":"POST","url":"/v1/chat/completions","body":{CHAT_BODY}}}"#)
    }

    #[test]
    fn openai_batch_is_parsed() {
        let data = format!("{}\n{}\n", batch_line("a"), batch_line("b"));
        let res = read(Format::OpenaiBatch, Api::Chat, &data);
        let items = ok_items(&res);
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].custom_id, "b");
        assert_eq!((items[1].index, items[1].line), (1, 2));
        let body: Value = serde_json::from_str(CHAT_BODY).unwrap();
        assert_eq!(items[0].body, Payload::Body(body));
    }

    #[test]
    fn jsonl_ids_are_physical_line_numbers() {
        let data = "{\"prompt\":\"a\"}\n\n  \n{\"prompt\":[\"b\"]}\n";
        let res = read(Format::Jsonl, Api::Completions, data);
        let items = ok_items(&res);
        assert_eq!(res.len(), 2, "blank lines yield nothing");
        assert_eq!(items[0].custom_id, "1");
        assert_eq!(
            (items[1].custom_id.as_str(), items[1].line, items[1].index),
            ("4", 4, 1)
        );
        assert_eq!(items[1].body, Payload::Body(json!({"prompt":["b"]})));
    }

    #[test]
    fn csv_with_metadata_custom_id_and_quoted_newline() {
        let data = "lang,prompt,custom_id\nen,\"line one\nline two\",x1\nfr,bonjour,x2\n";
        let res = read(Format::Csv, Api::Chat, data);
        let items = ok_items(&res);
        assert_eq!(items.len(), 2, "{res:?}");
        assert_eq!(items[0].custom_id, "x1");
        assert_eq!(
            items[0].body,
            Payload::Prompt {
                prompt: "line one\nline two".into(),
                metadata: vec![("lang".into(), "en".into())],
            }
        );
        // The second record starts on physical line 4 because of the quoted newline.
        assert_eq!((items[1].custom_id.as_str(), items[1].line), ("x2", 4));
    }

    #[test]
    fn csv_without_id_column_uses_row_numbers() {
        let data = "prompt\nhello\n\nworld\n\n";
        let res = read(Format::Csv, Api::Chat, data);
        let ids: Vec<&str> = ok_items(&res).iter().map(|i| i.custom_id.as_str()).collect();
        assert_eq!(ids, ["1", "2"]);
    }

    #[test]
    fn text_skips_blank_lines() {
        let data = "first\n\n   \nsecond\n\n\n";
        let res = read(Format::Text, Api::Chat, data);
        assert_eq!(res.len(), 2);
        let items = ok_items(&res);
        assert_eq!((items[1].custom_id.as_str(), items[1].index), ("4", 1));
        assert_eq!(
            items[1].body,
            Payload::Prompt {
                prompt: "second".into(),
                metadata: vec![]
            }
        );
    }

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

    #[test]
    fn open_detects_and_keeps_first_line() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, format!("\n{}\n{}\n", batch_line("a"), batch_line("b")))?;
        let r = Reader::open(&path, None, opts(Api::Chat))?;
        assert_eq!(r.format(), Format::OpenaiBatch);
        let res: Vec<_> = r.collect();
        let ids: Vec<&str> = ok_items(&res).iter().map(|i| i.custom_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"], "the peeked line must not be lost");
        let report = validate(&path, None, &opts(Api::Chat), 10)?;
        assert_eq!((report.items, report.issue_count), (2, 0));
        Ok(())
    }

    #[test]
    fn reader_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Reader>();
        assert_send::<crate::batch::OutputWriter>();
    }

    #[test]
    fn stdin_style_reader_from_cursor() {
        let src: Box<dyn BufRead + Send> = Box::new(Cursor::new(b"a\nb\n".to_vec()));
        let r = Reader::new(src, Format::Text, opts(Api::Chat)).unwrap();
        assert_eq!(r.name(), "<stdin>");
        assert_eq!(r.count(), 2);
    }

    #[test]
    fn open_missing_file_names_path() {
        let err = Reader::open(Path::new("/nonexistent/in.jsonl"), None, opts(Api::Chat)).unwrap_err();
        assert!(matches!(err, FileError::Open { .. }));
        assert!(err.to_string().contains("/nonexistent/in.jsonl"), "{err}");
    }

    #[test]
    fn openai_batch_line_issues() {
        let good = batch_line("g");
        let cases: Vec<(String, &str)> = vec![
            (
                r#"{"custom_id":"x","body":"#.to_string(),
                "bad JSON: EOF while parsing a value at column 24",
            ),
            (
                r#"{"custom_id" "x"}"#.to_string(),
                "bad JSON: expected `:` at column 14",
            ),
            ("[1,2]".to_string(), "expected a JSON object, got array"),
            (format!(r#"{{"body":{CHAT_BODY}}}"#), "missing \"custom_id\" string"),
            (
                format!(r#"{{"custom_id":7,"body":{CHAT_BODY}}}"#),
                "\"custom_id\" must be a string, got number",
            ),
            (
                format!(r#"{{"custom_id":"","body":{CHAT_BODY}}}"#),
                "empty \"custom_id\"",
            ),
            (r#"{"custom_id":"x"}"#.to_string(), "missing \"body\" object"),
            (
                r#"{"custom_id":"x","body":[1]}"#.to_string(),
                "missing \"body\" object (got array)",
            ),
            (
                format!(r#"{{"custom_id":"x","method":"GET","body":{CHAT_BODY}}}"#),
                "method \"GET\" is not POST",
            ),
            (
                format!(r#"{{"custom_id":"x","url":"/v1/completions","body":{CHAT_BODY}}}"#),
                "url \"/v1/completions\" does not match --api chat (expects /v1/chat/completions)",
            ),
            (
                r#"{"custom_id":"x","body":{"prompt":"p"}}"#.to_string(),
                "body has \"prompt\" but --api chat requires a \"messages\" array",
            ),
            (
                r#"{"custom_id":"x","body":{"model":"m"}}"#.to_string(),
                "body has no \"messages\" array (required by --api chat)",
            ),
            (
                r#"{"custom_id":"x","body":{"messages":[]}}"#.to_string(),
                "empty \"messages\" array",
            ),
            (
                r#"{"custom_id":"x","body":{"messages":"hi"}}"#.to_string(),
                "\"messages\" must be an array, got string",
            ),
        ];
        for (bad, want) in cases {
            // The bad line sits on line 3, between good lines and a blank one.
            let data = format!("{}\n\n{bad}\n{good}\n", batch_line("f"));
            let res = read(Format::OpenaiBatch, Api::Chat, &data);
            assert_eq!(only_issue(&res), (3, want.to_string()), "input {bad}");
            assert_eq!(ok_items(&res).len(), 2, "the lines around the bad one still parse");
        }
    }

    #[test]
    fn completions_body_issues() {
        let cases = [
            (r#"{"prompt":""}"#, "empty prompt"),
            (r#"{"prompt":"  "}"#, "empty prompt"),
            (r#"{"prompt":[]}"#, "empty prompt"),
            (r#"{"prompt":5}"#, "\"prompt\" must be a string or array, got number"),
            (
                r#"{"messages":[]}"#,
                "body has \"messages\" but --api completions requires \"prompt\"",
            ),
            (
                r#"{"model":"m"}"#,
                "body has no \"prompt\" (required by --api completions)",
            ),
            ("7", "expected a JSON object, got number"),
        ];
        for (bad, want) in cases {
            let data = format!("{{\"prompt\":\"ok\"}}\n{bad}\n");
            let res = read(Format::Jsonl, Api::Completions, &data);
            assert_eq!(only_issue(&res), (2, want.to_string()), "input {bad}");
        }
    }

    #[test]
    fn url_matching_variants() {
        let line = |url: &str| format!(r#"{{"custom_id":"x","url":{url:?},"body":{CHAT_BODY}}}"#);
        for url in [
            "/v1/chat/completions",
            "chat/completions",
            "/chat/completions/",
            "https://api.example.com/openai/v1/chat/completions?x=1",
        ] {
            let res = read(Format::OpenaiBatch, Api::Chat, &line(url));
            assert_eq!(ok_items(&res).len(), 1, "{url}: {res:?}");
        }
        for url in ["/v1/completions", "/v1/embeddings", ""] {
            let res = read(Format::OpenaiBatch, Api::Chat, &line(url));
            assert_eq!(ok_items(&res).len(), 0, "{url}");
        }
        // Forefront takes any url unless one is given explicitly.
        let ff = r#"{"custom_id":"x","url":"/anything","body":{"prompt":"p"}}"#;
        assert_eq!(ok_items(&read(Format::OpenaiBatch, Api::Forefront, ff)).len(), 1);
        let o = ReadOptions {
            expected_url: Some("/v1/forefront".into()),
            ..ReadOptions::new(Api::Forefront)
        };
        let res = read_with(Format::OpenaiBatch, o, ff.as_bytes());
        assert_eq!(
            only_issue(&res).1,
            "url \"/anything\" does not match --api forefront (expects /v1/forefront)"
        );
    }

    #[test]
    fn duplicate_custom_ids() {
        let data = [batch_line("a1"), batch_line("b"), batch_line("a7"), batch_line("a7")].join("\n");
        let res = read(Format::OpenaiBatch, Api::Chat, &data);
        assert_eq!(
            only_issue(&res),
            (4, "duplicate custom_id \"a7\" (first on line 3)".into())
        );
        let csv = "custom_id,prompt\nk,one\nj,two\nk,three\n";
        let res = read(Format::Csv, Api::Chat, csv);
        assert_eq!(
            only_issue(&res),
            (4, "duplicate custom_id \"k\" (first on line 2)".into())
        );
    }

    /// The two-pass check of a file reports what one pass remembering every id reports: the
    /// same duplicates, interleaved in file order with the other issues, capped the same way.
    #[test]
    fn validate_file_in_two_passes_matches_one_pass() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut lines = Vec::new();
        for i in 0..3000 {
            lines.push(match i % 500 {
                7 => "{\"custom_id\": 5}".to_string(),
                9 => batch_line(&format!("id-{}", i / 3)),
                13 => batch_line("id-3"),
                _ => batch_line(&format!("id-{i}")),
            });
        }
        // A duplicate whose line is bad otherwise is reported for its other fault only.
        lines.push(r#"{"custom_id":"id-3","body":{"prompt":"x"}}"#.to_string());
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, lines.join("\n"))?;
        for max in [2, 5, 100] {
            let one = validate_reader(Reader::open(&path, None, opts(Api::Chat))?, max)?;
            let two = validate(&path, None, &opts(Api::Chat), max)?;
            assert_eq!((two.items, two.issue_count), (one.items, one.issue_count));
            assert_eq!(two.issues, one.issues, "max {max}");
            assert!(matches!(two.duplicates, DuplicateCheck::Only(_)));
        }
        let two = validate(&path, None, &opts(Api::Chat), 100)?;
        assert!(two
            .issues
            .iter()
            .any(|i| i.reason == "duplicate custom_id \"id-3\" (first on line 4)"));
        // A send pass given the candidates skips exactly the duplicates.
        let o = ReadOptions {
            duplicates: two.duplicates.clone(),
            ..opts(Api::Chat)
        };
        let res: Vec<_> = Reader::open(&path, None, o)?.collect();
        let bad = res.iter().filter(|r| r.is_err()).count() as u64;
        assert_eq!(bad, two.issue_count);
        // No duplicates: one pass, nothing held for a later one.
        std::fs::write(&path, [batch_line("a"), batch_line("b")].join("\n"))?;
        let clean = validate(&path, None, &opts(Api::Chat), 10)?;
        assert_eq!(
            (clean.items, clean.issue_count, clean.duplicates),
            (2, 0, DuplicateCheck::Off)
        );
        Ok(())
    }

    #[test]
    fn csv_issues() {
        let data = "prompt,tag,custom_id\n\"\",t,a\nok,t\nfine,t,c\n,t,d\nx,t,\n";
        let res = read(Format::Csv, Api::Chat, data);
        let issues: Vec<(u64, &str)> = res
            .iter()
            .filter_map(|r| r.as_ref().err())
            .map(|i| (i.line, i.reason.as_str()))
            .collect();
        assert_eq!(
            issues,
            [
                (2, "empty prompt"),
                (3, "row has 2 fields, header has 3"),
                (5, "empty prompt"),
                (6, "empty \"custom_id\"")
            ]
        );
        assert_eq!(ok_items(&res).len(), 1);
        let bad_utf8 = read_with(Format::Csv, opts(Api::Chat), b"prompt,x\nok,\xff\xfe\n");
        assert_eq!(
            only_issue(&bad_utf8),
            (2, "invalid UTF-8 in column \"x\" at byte 1".into())
        );
    }

    #[test]
    fn csv_without_prompt_column_is_a_file_error() {
        let src = Box::new(Cursor::new(b"text,custom_id\nhi,1\n".to_vec()));
        let err = Reader::new(src, Format::Csv, opts(Api::Chat)).unwrap_err();
        assert!(matches!(err, FileError::CsvNoPrompt { .. }));
        assert_eq!(
            err.to_string(),
            "<stdin>:1: csv header has no \"prompt\" column (header: text,custom_id)"
        );
    }

    #[test]
    fn csv_record_over_cap_is_fatal_not_oom() {
        let o = ReadOptions {
            max_line_bytes: 1000,
            ..opts(Api::Chat)
        };
        let mut data = b"prompt\nok\n\"".to_vec();
        data.extend(std::iter::repeat_n(b'x', 300_000));
        let res = read_with(Format::Csv, o, &data);
        assert_eq!(ok_items(&res).len(), 1);
        let last = res.last().unwrap().as_ref().unwrap_err();
        assert!(
            last.fatal && last.reason == "csv record longer than 1000 bytes",
            "{last:?}"
        );
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

    #[test]
    fn validate_counts_and_caps_issues() -> Result<(), Box<dyn std::error::Error>> {
        let mut f = tempfile::NamedTempFile::new()?;
        for i in 0..10 {
            writeln!(f, "{}", if i % 2 == 0 { "{\"prompt\":\"p\"}" } else { "nope" })?;
        }
        f.flush()?;
        let report = validate(f.path(), Some(Format::Jsonl), &opts(Api::Completions), 3)?;
        assert_eq!((report.items, report.issue_count, report.issues.len()), (5, 5, 3));
        assert_eq!(report.issues[0].line, 2);
        let shown = report.issues[0].to_string();
        assert!(
            shown.starts_with(&format!("{}:2: bad JSON: ", f.path().display())),
            "{shown}"
        );
        Ok(())
    }

    #[test]
    fn shards_partition_indices() {
        for n in 1..6u64 {
            for index in 0..100u64 {
                let owners = (0..n).filter(|&k| in_shard(index, Some((k, n)))).count();
                assert_eq!(owners, 1);
            }
        }
        assert!(in_shard(7, None));
        assert_eq!(parse_shard("1/4"), Ok((1, 4)));
        for bad in ["4/4", "1", "a/b", "0/0", "-1/2"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }

    /// One openai-batch line from interesting parts (some parts left out).
    fn batch_line_strategy() -> impl Strategy<Value = String> {
        let id = prop::sample::select(vec!["\"a\"", "\"b\"", "\"\"", "null", "5", "\"a\\u0062\""]);
        let method = prop::sample::select(vec!["", "\"POST\"", "\"get\"", "null"]);
        let url = prop::sample::select(vec!["", "\"/v1/completions\"", "\"chat/completions\"", "3"]);
        let body = prop::sample::select(vec![
            "{\"prompt\":\"hi\"}",
            "{\"prompt\":\"  \"}",
            "{\"prompt\":[ ]}",
            "{\"prompt\":[1],\"stream\":true}",
            "{\"messages\":[]}",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"model\":null}",
            "{\"prompt\":null}",
            "{\"prompt\":\"a\",\"prompt\":\"\"}",
            "[]",
            // Escapes, a key spelled with one, whitespace, repeated and nested fields.
            " { \"prompt\" : \"a\\nb \\ud83d\\ude00\" , \"max_tokens\" : 5 , \"max_tokens\" : 6 } ",
            "{\"pro\\u006dpt\":\"x\"}",
            "{\"prompt\":\"x\",\"model\":\"m\",\"model\":\"n\"}",
            "{\"prompt\":\"\\u0020\",\"stream\":false}",
            "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"x\"}]}],\"stream\":true}",
            "{\"input\":[\"a\",\"b\"],\"logit_bias\":{\"1\":-1e2}}",
        ]);
        (id, method, url, body).prop_map(|(id, method, url, body)| {
            let mut parts = vec![format!("\"custom_id\":{id}")];
            if !method.is_empty() {
                parts.push(format!("\"method\":{method}"));
            }
            if !url.is_empty() {
                parts.push(format!("\"url\":{url}"));
            }
            parts.push(format!("\"body\":{body}"));
            format!("{{{}}}", parts.join(","))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The fast path (raw bodies) accepts exactly the lines the full check accepts, with the
        /// same ids and bodies, and reports the others with the same reasons.
        #[test]
        fn raw_bodies_agree_with_the_full_check(
            lines in proptest::collection::vec(batch_line_strategy(), 1..12),
            chat in any::<bool>(),
        ) {
            let api = if chat { Api::Chat } else { Api::Completions };
            let data = lines.join("\n");
            for format in [Format::OpenaiBatch, Format::Jsonl] {
                let full = read_with(format, opts(api), data.as_bytes());
                let raw = read_with(format, ReadOptions { raw_bodies: true, ..opts(api) }, data.as_bytes());
                prop_assert_eq!(full.len(), raw.len());
                for (f, r) in full.iter().zip(&raw) {
                    match (f, r) {
                        (Ok(f), Ok(r)) => {
                            prop_assert_eq!((&f.custom_id, f.index, f.line), (&r.custom_id, r.index, r.line));
                            let body = match &r.body {
                                Payload::Raw(b) => b.to_value(),
                                Payload::Body(v) => v.clone(),
                                other => panic!("{other:?}"),
                            };
                            prop_assert_eq!(Payload::Body(body), f.body.clone());
                        }
                        (Err(f), Err(r)) => prop_assert_eq!(f, r),
                        (f, r) => prop_assert!(false, "full {:?} raw {:?}", f, r),
                    }
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048), max in 1usize..64) {
            for format in Format::ALL {
                for api in Api::ALL {
                    for max_line_bytes in [max, DEFAULT_MAX_LINE_BYTES] {
                        let o = ReadOptions { api, expected_url: None, max_line_bytes, duplicates: DuplicateCheck::All, raw_bodies: false };
                        if let Ok(r) = Reader::new(Box::new(Cursor::new(data.clone())), format, o) {
                            for res in r {
                                if let Err(issue) = res {
                                    prop_assert!(issue.line >= 1);
                                }
                            }
                        }
                    }
                }
            }
            let _ = Format::detect(Path::new("-"), &data);
        }

        #[test]
        fn json_like_lines_never_panic(lines in proptest::collection::vec("[{}\\[\\]\":,a-z0-9 \\\\\r]{0,40}", 0..20)) {
            let data = lines.join("\n");
            for format in [Format::OpenaiBatch, Format::Jsonl, Format::Csv] {
                if let Ok(r) = Reader::new(Box::new(Cursor::new(data.clone().into_bytes())), format, opts(Api::Chat)) {
                    prop_assert!(r.count() <= lines.len());
                }
            }
        }
    }
}
