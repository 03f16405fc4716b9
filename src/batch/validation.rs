//! Validation of a whole input before anything is sent: counts, the first issues, and the
//! two-pass duplicate check of a file in bounded memory. Apart from the reader because it
//! only drives readers (one pass, or a screen and a re-check) and merges what they report.

use std::path::Path;
use std::sync::Arc;

use super::dupes::DuplicateCheck;
use super::format::Format;
use super::lines::{FileError, Issue};
use super::reader::{ReadOptions, Reader};

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
    let candidates = reader.take_candidates();
    if candidates.is_empty() {
        return Ok(report);
    }
    let candidates = Arc::new(candidates);
    let recheck = ReadOptions {
        duplicates: DuplicateCheck::Only(candidates.clone()),
        ..opts.clone()
    };
    let mut reader = Reader::open(path, Some(report.format), recheck)?;
    reader.set_duplicates_only();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Api;
    use crate::batch::testkit::*;
    use std::io::Write;

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
}
