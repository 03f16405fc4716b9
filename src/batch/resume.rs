//! Resume support: what an existing output file already holds, and repair of
//! a last line torn by a crash or kill mid-write.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde::de::IgnoredAny;
use serde::Deserialize;

/// What an existing output file says about which requests are done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResumeState {
    /// Ids with at least one successful record (`error` null, status 2xx).
    pub succeeded: HashSet<String>,
    /// Ids whose records all failed; these should be retried.
    pub failed: HashSet<String>,
    /// Complete records read (the torn tail and blank lines excluded); pass it
    /// to [`crate::batch::OutputWriter::resume`] so record ids keep counting up.
    pub lines: u64,
    /// True when the last line was torn (no trailing newline, or unparsable)
    /// and was ignored; [`truncate_torn_tail`] removes it.
    pub torn_tail: bool,
}

impl ResumeState {
    /// True when `custom_id` already succeeded and must not be sent again.
    pub fn is_done(&self, custom_id: &str) -> bool {
        self.succeeded.contains(custom_id)
    }
}

/// The fields of an output line that resume needs; the response body is
/// skipped without being materialised.
#[derive(Deserialize)]
struct RecordHead {
    custom_id: String,
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
fn parse_record(line: &[u8]) -> Result<(String, bool), String> {
    let rec: RecordHead = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let status = rec.response.and_then(|r| r.status_code);
    let ok = rec.error.is_none() && matches!(status, Some(200..=299));
    Ok((rec.custom_id, ok))
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// Reads an existing output file (streamed) and returns what it holds.
///
/// A torn last line is ignored and reported in `torn_tail`; an unparsable line
/// anywhere else is an `InvalidData` error naming the line. A missing file is
/// a `NotFound` error: the caller decides whether `--resume` without an output
/// file means "start from scratch".
pub fn read_done(path: &Path) -> io::Result<ResumeState> {
    let file =
        File::open(path).map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())))?;
    read_done_from(BufReader::with_capacity(256 * 1024, file), &path.display().to_string())
}

/// [`read_done`] over any reader; `name` is used in error messages.
pub fn read_done_from<R: BufRead>(mut src: R, name: &str) -> io::Result<ResumeState> {
    let mut state = ResumeState::default();
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        if src.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        line_no += 1;
        let complete = buf.ends_with(b"\n");
        let at_eof = src.fill_buf()?.is_empty();
        if !complete {
            // Only the final read can lack a newline: the writer crashed mid-line.
            state.torn_tail = true;
            break;
        }
        if is_blank(&buf) {
            continue;
        }
        match parse_record(&buf) {
            Ok((id, ok)) => {
                state.lines += 1;
                if ok {
                    state.failed.remove(&id);
                    state.succeeded.insert(id);
                } else if !state.succeeded.contains(&id) {
                    state.failed.insert(id);
                }
            }
            Err(_) if at_eof => state.torn_tail = true,
            Err(e) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{name}:{line_no}: unparsable output record: {e}"),
                ))
            }
        }
    }
    Ok(state)
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
        assert_eq!(s.succeeded, set(&["a", "b"]));
        assert_eq!(s.failed, set(&["c", "d"]));
        assert_eq!((s.lines, s.torn_tail), (6, false));
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
            let s = read_done(&path)?;
            assert!(s.torn_tail, "{tail:?}");
            assert_eq!((s.lines, s.succeeded.len()), (2, 2), "{tail:?}");
            assert!(truncate_torn_tail(&path)?);
            assert_eq!(std::fs::read_to_string(&path)?, good);
            assert!(!truncate_torn_tail(&path)?, "idempotent");
            assert!(!read_done(&path)?.torn_tail);
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
        let err = read_done(Path::new("/nonexistent/out.jsonl")).unwrap_err();
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
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("out.jsonl");
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
            if let Some(t) = &torn {
                // A crash leaves bytes without a newline at the end.
                let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
                f.write_all(t.as_bytes()).unwrap();
            }
            let s = read_done(&path).unwrap();
            prop_assert_eq!(&s.succeeded, &succeeded);
            prop_assert_eq!(&s.failed, &failed);
            prop_assert_eq!(s.lines, recs.len() as u64);
            prop_assert_eq!(s.torn_tail, torn.as_ref().is_some_and(|t| !t.is_empty()));
            truncate_torn_tail(&path).unwrap();
            prop_assert!(!read_done(&path).unwrap().torn_tail);
        }
    }
}
