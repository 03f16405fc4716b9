//! CSV input: the header with its `prompt` (and optional `custom_id`) column, one record at a
//! time through a size cap. Apart from the line reader because csv records may span lines
//! (quoted newlines) and have their own parser; the reader only turns a record into an item.

use std::io::{self, Read};

use super::checks::{quote, truncate_chars};
use super::lines::{is_blank, FileError, Source};

/// What [`CsvState::next_record`] found.
pub(super) enum CsvRead {
    /// The input ended.
    End,
    /// Reading cannot go on: an I/O error, bad csv, or a record over the size cap.
    Fatal { line: u64, reason: String },
    /// A record that is not blank, starting on physical `line`; `row` counts them (1-based).
    Record { line: u64, row: u64 },
}

/// One record's fields: the prompt (not blank), the `custom_id` column's value if the header
/// has one (not blank), and the other columns in header order.
pub(super) struct CsvFields {
    pub(super) prompt: String,
    pub(super) custom_id: Option<String>,
    pub(super) metadata: Vec<(String, String)>,
}

/// One CSV input being read: the parser, the record buffer it refills, and the header.
pub(super) struct CsvState {
    rdr: csv::Reader<CapRead>,
    rec: csv::ByteRecord,
    columns: Vec<String>,
    prompt_col: usize,
    id_col: Option<usize>,
    /// Data rows seen so far (blank lines excluded), for default custom_ids.
    row: u64,
}

impl CsvState {
    pub(super) fn new(src: Source, name: &str, max_line: usize) -> Result<CsvState, FileError> {
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

    /// Reads the next record that is not blank into the state (see [`CsvState::fields`]).
    pub(super) fn next_record(&mut self, max_line: usize) -> CsvRead {
        loop {
            let read = self.rdr.read_byte_record(&mut self.rec);
            let line = self.rec.position().map_or(self.rdr.position().line(), |p| p.line());
            // Re-arm the size cap from the end of this record: only a single
            // record may not exceed max_line (plus csv's read-ahead).
            let end = self.rdr.position().byte();
            self.rdr.get_mut().allow_until(end, max_line);
            match read {
                Ok(false) => return CsvRead::End,
                Err(e) => {
                    let at = self.rdr.position().line();
                    let reason = match e.kind() {
                        _ if self.rdr.get_ref().tripped => {
                            format!("csv record longer than {max_line} bytes")
                        }
                        csv::ErrorKind::Io(io) => format!("read error: {io}"),
                        _ => format!("csv error: {e}"),
                    };
                    return CsvRead::Fatal { line: at, reason };
                }
                Ok(true) => {
                    // csv skips empty lines itself; also skip whitespace-only ones.
                    if self.rec.len() <= 1 && self.rec.iter().all(is_blank) {
                        continue;
                    }
                    self.row += 1;
                    return CsvRead::Record { line, row: self.row };
                }
            }
        }
    }

    /// The fields of the record last read, checked; the `custom_id` is not yet claimed.
    pub(super) fn fields(&self) -> Result<CsvFields, String> {
        if self.rec.len() != self.columns.len() {
            return Err(format!(
                "row has {} fields, header has {}",
                self.rec.len(),
                self.columns.len()
            ));
        }
        let mut prompt = String::new();
        let mut custom_id = None;
        let mut metadata = Vec::with_capacity(self.columns.len().saturating_sub(1));
        for (i, (field, col)) in self.rec.iter().zip(&self.columns).enumerate() {
            let value = std::str::from_utf8(field)
                .map_err(|e| format!("invalid UTF-8 in column {} at byte {}", quote(col), e.valid_up_to() + 1))?;
            if i == self.prompt_col {
                prompt = value.to_string();
            } else if Some(i) == self.id_col {
                custom_id = Some(value.to_string());
            } else {
                metadata.push((col.clone(), value.to_string()));
            }
        }
        if prompt.trim().is_empty() {
            return Err("empty prompt".to_string());
        }
        if custom_id.as_deref().is_some_and(|id| id.trim().is_empty()) {
            return Err("empty \"custom_id\"".to_string());
        }
        Ok(CsvFields {
            prompt,
            custom_id,
            metadata,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Api;
    use crate::batch::testkit::*;
    use crate::batch::{Format, Payload, ReadOptions, Reader};
    use std::io::Cursor;

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
}
