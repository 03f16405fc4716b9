//! Result writer producing OpenAI Batch output JSONL.
//!
//! Results are serialised whole, newline included, into a buffer of whole lines
//! that goes out with a single `write_all`: at once ([`OutputWriter::write_result`]),
//! or for several results together ([`OutputWriter::buffer_result`], then
//! [`OutputWriter::flush`] once the caller has nothing more at hand, and at the
//! latest every [`FLUSH_BYTES`]). So this process never leaves half a line behind
//! on its own; a crash mid-write can still tear the last line, which
//! [`crate::batch::truncate_torn_tail`] repairs on resume.
//!
//! Failures are written to the main output and also to `<path>.errors.jsonl`.
//! The errors file is created lazily, on the first failure, so a clean run
//! leaves no empty errors file behind; its absence is still checked up front
//! so a fresh run cannot fail half way on an existing errors file.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::api::JsonText;

use super::compress::{errors_path_for, write_packed, Compression};
use super::resume::{truncate_to, truncate_torn_tail, ResumeState};

/// Buffered bytes that make [`OutputWriter::buffer_result`] write at once.
pub const FLUSH_BYTES: usize = 256 * 1024;

/// The outcome of one request, as handed to [`OutputWriter::write_result`].
#[derive(Debug, Clone)]
pub struct OutputRecord {
    /// The item's id from the input.
    pub custom_id: String,
    /// HTTP status of the response, if one arrived.
    pub status_code: Option<u16>,
    /// The server's request id (e.g. `x-request-id`), if any.
    pub request_id: Option<String>,
    /// The response body (success or error body), if any.
    pub body: Option<JsonText>,
    /// `(code, message)` when the request failed without a usable response
    /// (timeout, connection error, ...) or the caller classifies it as failed.
    pub error: Option<(String, String)>,
}

impl OutputRecord {
    /// True for `error == None` and a 2xx status: the rule resume uses too.
    pub fn is_success(&self) -> bool {
        self.error.is_none() && matches!(self.status_code, Some(200..=299))
    }
}

/// Appends one output line (without its newline) in OpenAI's Batch output shape:
/// `{"id","custom_id","response":{"status_code","request_id","body"}|null,"error":{"code","message"}|null}`.
/// Written by hand so the body goes in as the text it is (see [`JsonText`]).
fn push_line(buf: &mut Vec<u8>, id: &str, rec: &OutputRecord) {
    buf.extend_from_slice(b"{\"id\":");
    push_str(buf, id);
    buf.extend_from_slice(b",\"custom_id\":");
    push_str(buf, &rec.custom_id);
    buf.extend_from_slice(b",\"response\":");
    if rec.status_code.is_some() || rec.body.is_some() {
        buf.extend_from_slice(b"{\"status_code\":");
        match rec.status_code {
            Some(code) => {
                use std::io::Write as _;
                let _ = write!(buf, "{code}");
            }
            None => buf.extend_from_slice(b"null"),
        }
        buf.extend_from_slice(b",\"request_id\":");
        match &rec.request_id {
            Some(r) => push_str(buf, r),
            None => buf.extend_from_slice(b"null"),
        }
        buf.extend_from_slice(b",\"body\":");
        match &rec.body {
            Some(b) => buf.extend_from_slice(b.get().as_bytes()),
            None => buf.extend_from_slice(b"null"),
        }
        buf.push(b'}');
    } else {
        buf.extend_from_slice(b"null");
    }
    buf.extend_from_slice(b",\"error\":");
    match &rec.error {
        Some((code, message)) => {
            buf.extend_from_slice(b"{\"code\":");
            push_str(buf, code);
            buf.extend_from_slice(b",\"message\":");
            push_str(buf, message);
            buf.push(b'}');
        }
        None => buf.extend_from_slice(b"null"),
    }
    buf.push(b'}');
}

/// A JSON string literal.
fn push_str(buf: &mut Vec<u8>, s: &str) {
    // Writing a `str` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}

/// Appends result lines to an output file and its errors file.
#[derive(Debug)]
pub struct OutputWriter {
    path: PathBuf,
    main: File,
    errors_path: PathBuf,
    errors: Option<File>,
    resuming: bool,
    /// Sequence number of the last record id issued (`batch_req_<seq>`).
    seq: u64,
    /// Whole lines not written yet, for the output and for the errors file.
    buf: Vec<u8>,
    errors_buf: Vec<u8>,
    /// The record id being written (`batch_req_<seq>`), reused.
    id: String,
    /// `.gz`/`.zst` outputs: each flush goes out as one complete member (see `compress`).
    compression: Compression,
    /// The compressed bytes of one flush, reused.
    packed: Vec<u8>,
}

impl OutputWriter {
    /// Creates a new output at `path`. Fails with `AlreadyExists` if `path` or
    /// its errors file exists, with a hint to use `--resume`.
    pub fn create(path: &Path) -> io::Result<OutputWriter> {
        let errors_path = errors_path_for(path);
        if errors_path.exists() {
            return Err(already_exists(&errors_path));
        }
        // `--output results/run1.jsonl` into a folder not made yet: made, as plan's and sweep's
        // outputs are.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            std::fs::create_dir_all(dir).map_err(|e| with_path(e, "cannot create the folder of", path))?;
        }
        let main = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => already_exists(path),
                _ => with_path(e, "cannot create", path),
            })?;
        Ok(OutputWriter {
            path: path.to_path_buf(),
            main,
            errors_path,
            errors: None,
            resuming: false,
            seq: 0,
            buf: Vec::new(),
            errors_buf: Vec::new(),
            id: String::new(),
            compression: Compression::from_path(path),
            packed: Vec::new(),
        })
    }

    /// Reopens `path` (created if missing) for appending after a previous run.
    /// Any torn last line of the output and of its errors file is cut off
    /// first. `done` is what [`crate::batch::read_done`] read of `path`: new record ids
    /// continue after its `lines`, and a compressed output is cut where it found the last
    /// complete member, without decoding the file again.
    pub fn resume(path: &Path, done: &ResumeState) -> io::Result<OutputWriter> {
        let errors_path = errors_path_for(path);
        let repair = |p: &Path, r: io::Result<bool>| match r {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(with_path(e, "cannot repair", p)),
            _ => Ok(()),
        };
        let main_cut = match done.complete_len {
            Some(len) => truncate_to(path, len),
            None => truncate_torn_tail(path),
        };
        repair(path, main_cut)?;
        repair(&errors_path, truncate_torn_tail(&errors_path))?;
        let main = open_append(path)?;
        Ok(OutputWriter {
            path: path.to_path_buf(),
            main,
            errors_path,
            errors: None,
            resuming: true,
            seq: done.lines,
            buf: Vec::new(),
            errors_buf: Vec::new(),
            id: String::new(),
            compression: Compression::from_path(path),
            packed: Vec::new(),
        })
    }

    /// The output path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The errors file path (it may not exist yet).
    pub fn errors_path(&self) -> &Path {
        &self.errors_path
    }

    /// Writes one result line to the output, and to the errors file when it
    /// is not a success, at once (with whatever was buffered before it).
    pub fn write_result(&mut self, rec: &OutputRecord) -> io::Result<()> {
        self.buffer_result(rec)?;
        self.flush()
    }

    /// Adds one result line (and its errors-file line) to the buffer; writes the buffer
    /// when it holds [`FLUSH_BYTES`]. Call [`OutputWriter::flush`] when nothing more is at
    /// hand: a line is only as safe as its last flush.
    pub fn buffer_result(&mut self, rec: &OutputRecord) -> io::Result<()> {
        use std::fmt::Write as _;
        self.seq += 1;
        self.id.clear();
        let _ = write!(self.id, "batch_req_{}", self.seq);
        let start = self.buf.len();
        push_line(&mut self.buf, &self.id, rec);
        self.buf.push(b'\n');
        if !rec.is_success() {
            self.errors_buf.extend_from_slice(&self.buf[start..]);
        }
        if self.buf.len() >= FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the buffered lines: the output's in one `write_all`, then the errors file's.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let r = write_packed(&mut self.main, self.compression, &self.buf, &mut self.packed);
            self.buf.clear();
            r?;
        }
        if !self.errors_buf.is_empty() {
            self.append_errors_buf()?;
        }
        Ok(())
    }

    /// Lists an input line that was skipped as invalid (`--skip-invalid`) in the errors file
    /// only: it has no request, so it gets no line in the output.
    pub fn write_invalid(&mut self, line: u64, custom_id: Option<&str>, message: &str) -> io::Result<()> {
        let v = serde_json::json!({
            "id": null,
            "custom_id": custom_id,
            "line": line,
            "response": null,
            "error": {"code": "invalid_input", "message": message},
        });
        serde_json::to_writer(&mut self.errors_buf, &v).map_err(io::Error::other)?;
        self.errors_buf.push(b'\n');
        self.flush()
    }

    /// A line the completion window closed on before it was answered, as OpenAI's Batch API
    /// lists one in its errors file; buffered like answers, written by [`OutputWriter::flush`].
    /// Only the errors file: the output holds answers, and `--resume` sends what it lacks.
    pub fn buffer_expired(&mut self, custom_id: &str) -> io::Result<()> {
        let v = serde_json::json!({
            "id": null,
            "custom_id": custom_id,
            "response": null,
            "error": {"code": "batch_expired", "message": EXPIRED_MESSAGE},
        });
        serde_json::to_writer(&mut self.errors_buf, &v).map_err(io::Error::other)?;
        self.errors_buf.push(b'\n');
        if self.errors_buf.len() >= FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn append_errors_buf(&mut self) -> io::Result<()> {
        {
            let errors = match &mut self.errors {
                Some(f) => f,
                None => {
                    let f = if self.resuming {
                        open_append(&self.errors_path)?
                    } else {
                        OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .open(&self.errors_path)
                            .map_err(|e| with_path(e, "cannot create", &self.errors_path))?
                    };
                    self.errors.insert(f)
                }
            };
            let r = write_packed(errors, self.compression, &self.errors_buf, &mut self.packed);
            self.errors_buf.clear();
            r?;
        }
        Ok(())
    }
}

impl Drop for OutputWriter {
    /// Buffered lines are whole: writing them is always safe (callers flush and see errors).
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// OpenAI's words for an expired request.
pub const EXPIRED_MESSAGE: &str = "This request could not be executed before the completion window expired.";

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| with_path(e, "cannot open", path))
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

fn already_exists(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "{} already exists; use --resume to continue that run, or choose another output path",
            path.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use std::io::Write;

    fn raw(v: Value) -> JsonText {
        JsonText::from_value(&v)
    }

    fn ok(id: &str) -> OutputRecord {
        OutputRecord {
            custom_id: id.into(),
            status_code: Some(200),
            request_id: Some("req_1".into()),
            body: Some(raw(json!({"choices": []}))),
            error: None,
        }
    }

    fn failed(id: &str) -> OutputRecord {
        OutputRecord {
            custom_id: id.into(),
            status_code: None,
            request_id: None,
            body: None,
            error: Some(("timeout".into(), "no response in 60s".into())),
        }
    }

    fn lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    proptest::proptest! {
        /// The hand-written line is the JSON a serializer would write for the same record:
        /// one line, and every field as given (any text in ids, codes and messages).
        #[test]
        fn hand_written_line_is_the_record(
            custom_id in ".*",
            status in proptest::option::of(100u16..600),
            request_id in proptest::option::of(".*"),
            body in proptest::option::of(0usize..3),
            error in proptest::option::of((".*", ".*")),
        ) {
            let bodies = [json!({"choices": [{"text": "a\nb \"c\""}]}), json!([1, 2.5, null]), json!("x")];
            let rec = OutputRecord {
                custom_id: custom_id.clone(),
                status_code: status,
                request_id: request_id.clone(),
                body: body.map(|i| raw(bodies[i].clone())),
                error: error.clone(),
            };
            let mut buf = Vec::new();
            push_line(&mut buf, "batch_req_7", &rec);
            proptest::prop_assert!(!buf.contains(&b'\n'));
            let got: Value = serde_json::from_slice(&buf).expect("the line is JSON");
            let response = if status.is_some() || body.is_some() {
                json!({"status_code": status, "request_id": request_id, "body": body.map(|i| bodies[i].clone())})
            } else {
                Value::Null
            };
            let want = json!({
                "id": "batch_req_7",
                "custom_id": custom_id,
                "response": response,
                "error": error.map(|(code, message)| json!({"code": code, "message": message})),
            });
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn writes_openai_batch_output_shape() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("out.jsonl");
        let mut w = OutputWriter::create(&out)?;
        w.write_result(&ok("a"))?;
        assert!(!w.errors_path().exists(), "errors file is created lazily");
        w.write_result(&failed("b"))?;
        let mut http_err = ok("c");
        http_err.status_code = Some(429);
        http_err.body = Some(raw(json!({"error": {"message": "slow down"}})));
        w.write_result(&http_err)?;

        let main = lines(&out);
        assert_eq!(
            main[0],
            json!({"id":"batch_req_1","custom_id":"a",
                   "response":{"status_code":200,"request_id":"req_1","body":{"choices":[]}},"error":null})
        );
        assert_eq!(
            main[1],
            json!({"id":"batch_req_2","custom_id":"b","response":null,
                   "error":{"code":"timeout","message":"no response in 60s"}})
        );
        assert_eq!(main[2]["response"]["status_code"], 429);
        let errors = lines(&errors_path_for(&out));
        assert_eq!(errors, vec![main[1].clone(), main[2].clone()]);
        Ok(())
    }

    #[test]
    fn an_output_in_a_folder_not_made_yet_makes_it() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("results/run1/out.jsonl");
        OutputWriter::create(&out)?;
        assert!(out.is_file());
        Ok(())
    }

    #[test]
    fn refuses_existing_output_or_errors_file() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("out.jsonl");
        std::fs::write(&out, "keep me\n")?;
        let err = OutputWriter::create(&out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(err.to_string().contains("--resume"), "{err}");
        assert_eq!(std::fs::read_to_string(&out)?, "keep me\n", "untouched");

        let out2 = dir.path().join("out2.jsonl");
        std::fs::write(errors_path_for(&out2), "")?;
        let err = OutputWriter::create(&out2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(!out2.exists());
        Ok(())
    }

    #[test]
    fn resume_appends_and_continues_ids() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("out.jsonl");
        {
            let mut w = OutputWriter::create(&out)?;
            w.write_result(&ok("a"))?;
            w.write_result(&failed("b"))?;
        }
        // Simulate a crash mid-line in both files.
        for p in [out.clone(), errors_path_for(&out)] {
            let mut f = OpenOptions::new().append(true).open(&p)?;
            f.write_all(b"{\"id\":\"batch_req_3\",\"cus")?;
        }
        let state = crate::batch::read_done(&out, None, dir.path())?;
        assert!(state.torn_tail);
        let mut w = OutputWriter::resume(&out, &state)?;
        w.write_result(&ok("b"))?;
        w.write_result(&failed("c"))?;
        let main = lines(&out);
        let ids: Vec<&str> = main.iter().filter_map(|v| v["id"].as_str()).collect();
        assert_eq!(ids, ["batch_req_1", "batch_req_2", "batch_req_3", "batch_req_4"]);
        let errs = lines(&errors_path_for(&out));
        let err_ids: Vec<&str> = errs.iter().filter_map(|v| v["custom_id"].as_str()).collect();
        assert_eq!(err_ids, ["b", "c"]);
        Ok(())
    }

    #[test]
    fn buffered_lines_go_out_whole_on_flush() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("out.jsonl");
        let mut w = OutputWriter::create(&out)?;
        w.buffer_result(&ok("a"))?;
        w.buffer_result(&failed("b"))?;
        assert_eq!(std::fs::read(&out)?.len(), 0, "nothing written before the flush");
        w.flush()?;
        let main = lines(&out);
        assert_eq!(main.len(), 2);
        assert_eq!(main[1]["id"], "batch_req_2");
        assert_eq!(lines(&errors_path_for(&out)), vec![main[1].clone()]);
        // A full buffer goes out by itself, in whole lines.
        let before = std::fs::metadata(&out)?.len();
        let mut n = 2;
        while std::fs::metadata(&out)?.len() == before && n < 100_000 {
            w.buffer_result(&ok("c"))?;
            n += 1;
        }
        let text = std::fs::read_to_string(&out)?;
        assert!(
            text.ends_with('\n') && text.len() >= FLUSH_BYTES,
            "{} bytes",
            text.len()
        );
        drop(w);
        assert_eq!(lines(&out).len(), n, "the rest is written when the writer goes");
        Ok(())
    }

    #[test]
    fn success_rule() {
        assert!(ok("a").is_success());
        assert!(!failed("a").is_success());
        let mut r = ok("a");
        r.status_code = Some(500);
        assert!(!r.is_success());
        r.status_code = None;
        assert!(!r.is_success());
    }
}
