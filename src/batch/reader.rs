//! Streaming reader for batch input files.
//!
//! Every format is read incrementally through one reusable buffer, so memory
//! stays flat in the file size: a 10 GB input costs the same as a 10 KB one.
//! Duplicate `custom_id`s are found in bounded memory too, by two passes over a
//! file (see [`super::dupes`]); only stdin keeps a digest of every id.
//!
//! The parts it joins live beside it: [`super::format`], [`super::lines`], [`super::checks`],
//! [`super::csv_input`] and the fast path [`super::fast`]; [`super::validation`] drives it.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use super::checks::{self, check_body, parse_object, quote, url_matches, url_segments};
use super::csv_input::{CsvFields, CsvRead, CsvState};
use super::dupes::{DuplicateCheck, Seen};
use super::fast::{self, RawBody};
use super::format::Format;
use super::lines::{is_blank, prepare, read_line_capped, strip_eol, FileError, Issue, LineRead, Source};
use crate::api::Api;

use serde_json::Value;

/// Default cap on one input line (or one CSV record), in bytes.
pub(crate) const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// Display name used for a source that has no path.
const STDIN_NAME: &str = "<stdin>";

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
    /// [`validate`](super::validate) over a file uses two passes in bounded memory instead; a later pass over a
    /// file it checked needs [`DuplicateCheck::Off`], or with `--skip-invalid` the candidates
    /// it found ([`ValidationReport::duplicates`](super::ValidationReport::duplicates)).
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
    /// The re-check pass of [`validate`](super::validate): yields only duplicate issues, and skips
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

    /// The ids a [`DuplicateCheck::Screen`] pass found may repeat (see [`super::dupes`]).
    pub(super) fn take_candidates(&mut self) -> std::collections::HashSet<u64> {
        self.seen.take_candidates()
    }

    /// Makes this the re-check pass of [`validate`](super::validate): duplicate issues only.
    pub(super) fn set_duplicates_only(&mut self) {
        self.duplicates_only = true;
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
        let (custom_id, body) = checks::openai_line(text, self.api, self.expected_url.as_ref())?;
        self.claim_id(&custom_id, line)?;
        Ok(self.item(line, custom_id, Payload::Body(Value::Object(body))))
    }

    fn next_csv(&mut self) -> Option<Result<Item, Issue>> {
        loop {
            let Inner::Csv(st) = &mut self.inner else {
                return None;
            };
            let (line, row) = match st.next_record(self.max_line) {
                CsvRead::End => {
                    self.done = true;
                    return None;
                }
                CsvRead::Fatal { line, reason } => {
                    self.done = true;
                    return Some(Err(self.issue(line, reason, true)));
                }
                CsvRead::Record { line, row } => (line, row),
            };
            self.duplicate_hit = false;
            match self.parse_csv_record(line, row) {
                Ok(item) => return Some(Ok(item)),
                Err(_) if self.duplicates_only && !self.duplicate_hit => continue,
                Err(reason) => return Some(Err(self.issue(line, reason, false))),
            }
        }
    }

    fn parse_csv_record(&mut self, line: u64, row: u64) -> Result<Item, String> {
        let Inner::Csv(st) = &self.inner else {
            return Err("internal: not csv".to_string());
        };
        let CsvFields {
            prompt,
            custom_id,
            metadata,
        } = st.fields()?;
        let custom_id = match custom_id {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::testkit::*;
    use crate::batch::validate;
    use proptest::prelude::*;
    use serde_json::json;
    use std::io::Cursor;

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

    proptest! {
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
