//! Resume support: what an existing output file already holds, and repair of
//! a last line torn by a crash or kill mid-write.
//!
//! Memory stays flat in the job's size: the answered ids are never held as a set. With an
//! input file, the output's ids and the input's ids go through one external sort
//! ([`super::idsort`]) and come out grouped by id, which marks each answered input line in a
//! bitmap of one bit per line (1.2 MiB for 10M lines). Exact: ids are compared byte for byte.
//! Stdin cannot be read twice, so there the succeeded ids are kept in memory as before.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::compress::{self, Compression};
use super::idsort::Sorter;
use super::lines::is_blank;

/// Tags of the sort: what a pair stands for, in the top two bits; the rest is an input line's
/// index (or, for `merge`, where a record was read).
pub(crate) const TAG_INPUT: u64 = 0;
pub(crate) const TAG_SUCCESS: u64 = 1 << 62;
pub(crate) const TAG_FAILURE: u64 = 2 << 62;
pub(crate) const TAG_KIND: u64 = 3 << 62;

/// What an existing output file says about which requests are done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResumeState {
    /// Distinct ids with at least one successful record (`error` null, status 2xx).
    pub succeeded: u64,
    /// Distinct ids whose records all failed; these are sent again.
    pub failed: u64,
    /// Complete records read (the torn tail and blank lines excluded); pass it
    /// to [`crate::batch::OutputWriter::resume`] so record ids keep counting up.
    pub lines: u64,
    /// True when the last line was torn (no trailing newline, or unparsable)
    /// and was ignored; [`truncate_torn_tail`] removes it.
    pub torn_tail: bool,
    /// [`OutputText::complete_len`] of a compressed output.
    pub complete_len: Option<u64>,
    done: Done,
}

/// Which input lines are done.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Done {
    /// The succeeded ids themselves (stdin, which cannot be joined in a second pass).
    Ids(HashSet<Box<str>>),
    /// One bit per input line index: set when that line's id has a success.
    Lines(Vec<u64>),
}

impl Default for Done {
    fn default() -> Self {
        Done::Lines(Vec::new())
    }
}

impl ResumeState {
    /// True when input line `index` (the reader's item index) with `custom_id` already
    /// succeeded and must not be sent again.
    pub fn is_done(&self, index: u64, custom_id: &str) -> bool {
        match &self.done {
            Done::Ids(ids) => ids.contains(custom_id),
            Done::Lines(bits) => bits
                .get((index / 64) as usize)
                .is_some_and(|w| w & (1 << (index % 64)) != 0),
        }
    }
}

/// The fields of an output line that resume needs; the response body is
/// skipped without being materialised.
#[derive(Deserialize)]
struct RecordHead<'a> {
    #[serde(borrow)]
    custom_id: std::borrow::Cow<'a, str>,
    #[serde(default)]
    response: Option<ResponseHead>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct ResponseHead {
    #[serde(default)]
    status_code: Option<u64>,
}

/// Parses one output line into `(custom_id, succeeded)`.
fn parse_record(line: &[u8]) -> Result<(std::borrow::Cow<'_, str>, bool), String> {
    let rec: RecordHead = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let status = rec.response.and_then(|r| r.status_code);
    let ok = rec.error.is_none() && matches!(status, Some(200..=299));
    Ok((rec.custom_id, ok))
}

/// An output opened for reading.
pub struct OutputText {
    /// Its text: as it is, or its complete compressed members decoded.
    pub src: Box<dyn BufRead + Send>,
    /// A compressed output's torn last member, left out of `src`.
    pub torn_member: bool,
    /// A compressed output's length up to the end of its last complete member, which a resume
    /// cuts the file to (see [`truncate_to`]) without decoding it again.
    pub complete_len: Option<u64>,
}

/// Opens an output for reading: plain, or its complete compressed members only.
pub fn open_output(path: &Path) -> io::Result<OutputText> {
    let file =
        File::open(path).map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())))?;
    let c = Compression::from_path(path);
    if c == Compression::None {
        return Ok(OutputText {
            src: Box::new(BufReader::with_capacity(256 * 1024, file)),
            torn_member: false,
            complete_len: None,
        });
    }
    let len = file.metadata()?.len();
    let good = compress::valid_len(path, c)?;
    let src: Box<dyn BufRead + Send> = Box::new(BufReader::with_capacity(256 * 1024, file.take(good)));
    let (src, _) = compress::decoding(src)?;
    Ok(OutputText {
        src,
        torn_member: good < len,
        complete_len: Some(good),
    })
}

/// Streams every complete record of an output: `f(custom_id, succeeded, line, raw line)`. Returns the
/// record count and whether the tail was torn. A torn last line is skipped; an unparsable line
/// anywhere else is an `InvalidData` error naming the line.
pub fn scan_records<R: BufRead>(
    mut src: R,
    name: &str,
    mut f: impl FnMut(&str, bool, u64, &[u8]) -> io::Result<()>,
) -> io::Result<(u64, bool)> {
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    let mut records = 0u64;
    loop {
        buf.clear();
        if src.read_until(b'\n', &mut buf)? == 0 {
            return Ok((records, false));
        }
        line_no += 1;
        if !buf.ends_with(b"\n") {
            // Only the final read can lack a newline: the writer crashed mid-line.
            return Ok((records, true));
        }
        if is_blank(&buf) {
            continue;
        }
        match parse_record(&buf) {
            Ok((id, ok)) => {
                records += 1;
                f(&id, ok, line_no, &buf)?;
            }
            Err(_) if src.fill_buf()?.is_empty() => return Ok((records, true)),
            Err(e) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{name}:{line_no}: unparsable output record: {e}"),
                ))
            }
        }
    }
}

/// Reads an existing output file (streamed) and returns what it holds, joined with the input's
/// ids when `input` yields them: `(custom_id, item index)` for every item the feed will read,
/// in the same order and with the same options. `spill` is where the sort may write its
/// temporary runs. Without an input (stdin), the succeeded ids are kept in memory.
///
/// A missing file is a `NotFound` error: the caller decides whether `--resume` without an
/// output file means "start from scratch".
pub fn read_done(
    path: &Path,
    input: Option<&mut dyn Iterator<Item = io::Result<(String, u64)>>>,
    spill: &Path,
) -> io::Result<ResumeState> {
    let text = open_output(path)?;
    let name = path.display().to_string();
    let mut state = match input {
        Some(items) => join(text.src, &name, items, spill)?,
        None => read_done_from(text.src, &name)?,
    };
    state.torn_tail |= text.torn_member;
    state.complete_len = text.complete_len;
    Ok(state)
}

fn join(
    src: impl BufRead,
    name: &str,
    items: &mut dyn Iterator<Item = io::Result<(String, u64)>>,
    spill: &Path,
) -> io::Result<ResumeState> {
    let mut sorter = Sorter::new(spill);
    let (lines, torn_tail) = scan_records(src, name, |id, ok, _, _| {
        sorter.push(id.as_bytes(), if ok { TAG_SUCCESS } else { TAG_FAILURE })
    })?;
    let mut count = 0u64;
    for item in items {
        let (id, index) = item?;
        sorter.push(id.as_bytes(), TAG_INPUT | index)?;
        count = count.max(index + 1);
    }
    let mut bits = vec![0u64; count.div_ceil(64) as usize];
    let mut state = ResumeState {
        lines,
        torn_tail,
        ..ResumeState::default()
    };
    let mut sorted = sorter.finish()?;
    let mut tags = Vec::new();
    while sorted.next_group(&mut tags)?.is_some() {
        let success = tags.iter().any(|t| t & TAG_KIND == TAG_SUCCESS);
        let failure = tags.iter().any(|t| t & TAG_KIND == TAG_FAILURE);
        if success {
            state.succeeded += 1;
            for index in tags.iter().filter(|t| *t & TAG_KIND == TAG_INPUT) {
                bits[(index / 64) as usize] |= 1 << (index % 64);
            }
        } else if failure {
            state.failed += 1;
        }
    }
    state.done = Done::Lines(bits);
    Ok(state)
}

/// [`read_done`] over any reader, keeping the succeeded ids in memory (for stdin inputs);
/// `name` is used in error messages.
pub fn read_done_from<R: BufRead>(src: R, name: &str) -> io::Result<ResumeState> {
    let mut succeeded: HashSet<Box<str>> = HashSet::new();
    let mut failed: HashSet<Box<str>> = HashSet::new();
    let (lines, torn_tail) = scan_records(src, name, |id, ok, _, _| {
        if ok {
            failed.remove(id);
            succeeded.insert(id.into());
        } else if !succeeded.contains(id) {
            failed.insert(id.into());
        }
        Ok(())
    })?;
    Ok(ResumeState {
        succeeded: succeeded.len() as u64,
        failed: failed.len() as u64,
        lines,
        torn_tail,
        complete_len: None,
        done: Done::Ids(succeeded),
    })
}

/// Cuts a torn last line off `path` so the next append starts on a fresh line.
/// Returns whether anything was removed. Uses the same rule as [`read_done`]:
/// a last line without a newline, or one that does not parse, is torn.
/// Only the tail of the file is read, so this is cheap on large outputs.
pub fn truncate_torn_tail(path: &Path) -> io::Result<bool> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    let c = Compression::from_path(path);
    if c != Compression::None {
        // Members hold whole lines: cutting after the last complete one cuts the torn tail.
        return truncate_to(path, compress::valid_len(path, c)?);
    }
    let ends_with_newline = read_at(&mut file, len - 1, 1)? == b"\n";
    // Start of the last line: after the last newline before the final byte.
    let search_end = if ends_with_newline { len - 1 } else { len };
    let start = match rfind_newline(&mut file, search_end)? {
        Some(p) => p + 1,
        None => 0,
    };
    if ends_with_newline {
        let size = usize::try_from(len - 1 - start)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "last line too large"))?;
        let last = read_at(&mut file, start, size)?;
        if is_blank(&last) || parse_record(&last).is_ok() {
            return Ok(false);
        }
    }
    file.set_len(start)?;
    file.sync_all()?;
    Ok(true)
}

/// Cuts `path` to its first `complete` bytes when it is longer; returns whether it was.
pub fn truncate_to(path: &Path, complete: u64) -> io::Result<bool> {
    let file = OpenOptions::new().write(true).open(path)?;
    if file.metadata()?.len() <= complete {
        return Ok(false);
    }
    file.set_len(complete)?;
    file.sync_all()?;
    Ok(true)
}

/// Reads `len` bytes at `offset`.
fn read_at(file: &mut File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; len];
    file.read_exact(&mut buf)?;
    Ok(buf)
}

/// Offset of the last `\n` strictly before `end`, scanning backwards in chunks.
fn rfind_newline(file: &mut File, end: u64) -> io::Result<Option<u64>> {
    const CHUNK: u64 = 64 * 1024;
    let mut hi = end;
    while hi > 0 {
        let lo = hi.saturating_sub(CHUNK);
        // `hi - lo <= CHUNK`, which always fits in usize.
        let chunk = read_at(file, lo, (hi - lo) as usize)?;
        if let Some(p) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(lo + p as u64));
        }
        hi = lo;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{OutputRecord, OutputWriter};
    use proptest::prelude::*;
    use std::io::Write;

    fn rec(id: &str, status: u16, err: bool) -> String {
        let error = if err { r#"{"code":"x","message":"y"}"# } else { "null" };
        format!(
            r#"{{"id":"r","custom_id":"{id}","response":{{"status_code":{status},"request_id":null,"body":{{"big":[1,2,{{"a":"b"}}]}}}},"error":{error}}}"#
        )
    }

    fn set(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    /// The ids among `universe` that `s` says are done, joined by index `i` = position.
    fn done_of(s: &ResumeState, universe: &[String]) -> HashSet<String> {
        (0..universe.len())
            .filter(|&i| s.is_done(i as u64, &universe[i]))
            .map(|i| universe[i].clone())
            .collect()
    }

    /// `read_done` joined with `universe` as the input (item `i` has id `universe[i]`).
    fn joined(path: &Path, universe: &[String], budget_dir: &Path) -> io::Result<ResumeState> {
        let mut items = universe.iter().enumerate().map(|(i, id)| Ok((id.clone(), i as u64)));
        read_done(path, Some(&mut items), budget_dir)
    }

    #[test]
    fn classifies_records() -> io::Result<()> {
        let data = [
            rec("a", 200, false),
            rec("b", 500, false),
            rec("c", 200, true),
            rec("b", 201, false),
            rec("a", 400, false),
            r#"{"custom_id":"d","response":null,"error":{"code":"t","message":"m"}}"#.to_string(),
        ]
        .join("\n")
            + "\n";
        let s = read_done_from(data.as_bytes(), "out")?;
        let universe: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        assert_eq!(done_of(&s, &universe), set(&["a", "b"]));
        assert_eq!((s.succeeded, s.failed), (2, 2));
        assert_eq!((s.lines, s.torn_tail), (6, false));
        // The same through the bounded join with an input.
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, &data)?;
        let j = joined(&path, &universe, dir.path())?;
        assert_eq!(done_of(&j, &universe), set(&["a", "b"]));
        assert_eq!((j.succeeded, j.failed, j.lines, j.torn_tail), (2, 2, 6, false));
        Ok(())
    }

    #[test]
    fn torn_tail_is_ignored_and_truncated() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("out.jsonl");
        let good = format!("{}\n{}\n", rec("a", 200, false), rec("b", 200, false));
        for tail in [
            "{\"custom_id\":\"c\",\"resp".to_string(), // cut mid-line
            rec("c", 200, false),                      // complete JSON but no newline
            "\0\0\0\0\n".to_string(),                  // garbage last line
            "{\"custom_id\":\"c\"\n".to_string(),      // unparsable last line
        ] {
            std::fs::write(&path, format!("{good}{tail}"))?;
            let s = read_done(&path, None, dir.path())?;
            assert!(s.torn_tail, "{tail:?}");
            assert_eq!((s.lines, s.succeeded), (2, 2), "{tail:?}");
            assert!(truncate_torn_tail(&path)?);
            assert_eq!(std::fs::read_to_string(&path)?, good);
            assert!(!truncate_torn_tail(&path)?, "idempotent");
            assert!(!read_done(&path, None, dir.path())?.torn_tail);
        }
        // A file holding only a torn line is truncated to empty.
        std::fs::write(&path, "{\"cust")?;
        assert!(truncate_torn_tail(&path)?);
        assert_eq!(std::fs::metadata(&path)?.len(), 0);
        assert!(!truncate_torn_tail(&path)?);
        Ok(())
    }

    #[test]
    fn truncate_scans_back_over_long_lines() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("out.jsonl");
        let first = rec("a", 200, false);
        let torn = format!("{{\"custom_id\":\"{}", "x".repeat(200_000));
        std::fs::write(&path, format!("{first}\n{torn}"))?;
        assert!(truncate_torn_tail(&path)?);
        assert_eq!(std::fs::read_to_string(&path)?, format!("{first}\n"));
        Ok(())
    }

    #[test]
    fn unparsable_middle_line_is_an_error() {
        let data = format!("{}\nnot json\n{}\n", rec("a", 200, false), rec("b", 200, false));
        let err = read_done_from(data.as_bytes(), "out.jsonl").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            err.to_string().starts_with("out.jsonl:2: unparsable output record"),
            "{err}"
        );
    }

    #[test]
    fn missing_file_is_not_found() {
        let err = read_done(Path::new("/nonexistent/out.jsonl"), None, Path::new("/tmp")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            // Either a state or an error naming the line; never a panic.
            let _ = read_done_from(std::io::Cursor::new(bytes), "fuzz.jsonl");
        }

        #[test]
        fn written_records_round_trip(
            recs in proptest::collection::vec(("[a-e]{1,2}", prop_oneof![Just(200u16), Just(204), Just(429), Just(500)], any::<bool>()), 0..40),
            torn in proptest::option::of("[ -~]{0,30}"),
            ext in prop_oneof![Just("jsonl"), Just("jsonl.gz"), Just("jsonl.zst")],
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(format!("out.{ext}"));
            let mut succeeded = HashSet::new();
            let mut failed = HashSet::new();
            {
                let mut w = OutputWriter::create(&path).unwrap();
                for (id, status, err) in &recs {
                    let r = OutputRecord {
                        custom_id: id.clone(),
                        status_code: Some(*status),
                        request_id: None,
                        body: Some(crate::api::JsonText::from_value(&serde_json::json!({"id": id}))),
                        error: err.then(|| ("e".to_string(), "m".to_string())),
                    };
                    if r.is_success() {
                        failed.remove(id);
                        succeeded.insert(id.clone());
                    } else if !succeeded.contains(id) {
                        failed.insert(id.clone());
                    }
                    w.write_result(&r).unwrap();
                }
            }
            if let Some(t) = torn.as_ref().filter(|t| !t.is_empty()) {
                // A crash leaves bytes without a newline (or a cut member) at the end.
                let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
                let mut member = Vec::new();
                crate::batch::compress::encode(Compression::from_path(&path), t.as_bytes(), &mut member).unwrap();
                let cut = if ext == "jsonl" { member.len() } else { member.len() / 2 };
                f.write_all(&member[..cut]).unwrap();
            }
            // Every id of the universe, in an order unlike the output's.
            let universe: Vec<String> = ["e", "a", "ab", "zz", "b", "c", "d", "cc", "aa", "bb", "dd", "ee"]
                .iter().map(|s| s.to_string()).chain(recs.iter().map(|r| r.0.clone())).collect();
            let torn_expected = torn.as_ref().is_some_and(|t| !t.is_empty());
            for s in [read_done(&path, None, dir.path()).unwrap(), joined(&path, &universe, dir.path()).unwrap()] {
                prop_assert_eq!(&done_of(&s, &universe), &succeeded);
                prop_assert_eq!(s.succeeded, succeeded.len() as u64);
                prop_assert_eq!(s.failed, failed.len() as u64);
                prop_assert_eq!(s.lines, recs.len() as u64);
                prop_assert_eq!(s.torn_tail, torn_expected);
            }
            truncate_torn_tail(&path).unwrap();
            prop_assert!(!read_done(&path, None, dir.path()).unwrap().torn_tail);
        }
    }
}
