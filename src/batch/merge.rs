//! `sizeup merge`: shard outputs concatenated, and checked against the input: every input id
//! answered exactly once. Memory stays flat in the job's size: the ids of the input and of
//! every record go through one external sort ([`super::idsort`]) and are judged id by id.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::compress::{write_packed, Compression};
use super::idsort::Sorter;
use super::resume::{open_output, scan_records, TAG_FAILURE, TAG_INPUT, TAG_KIND, TAG_SUCCESS};

/// Ids shown per category; the counts are always whole.
pub const SHOWN: usize = 10;

/// Bits of a record's tag that hold its line; above them, which part it is in.
const LINE_BITS: u32 = 40;

/// Ids of one kind: how many, and the first few (in id order) with where they were seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Ids {
    pub count: u64,
    #[serde(skip)]
    pub shown: Vec<String>,
}

impl Ids {
    fn add(&mut self, describe: impl FnOnce() -> String) {
        self.count += 1;
        if self.shown.len() < SHOWN {
            self.shown.push(describe());
        }
    }
}

/// What the merge found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MergeReport {
    /// Distinct ids of the input.
    pub input_ids: u64,
    /// Records read from the outputs (torn tails excluded).
    pub records: u64,
    /// Input ids with exactly one successful record.
    pub answered: u64,
    /// Input ids with more than one successful record (answered, and billed, twice).
    pub twice: Ids,
    /// Input ids with no record at all.
    pub missing: Ids,
    /// Input ids whose records all failed.
    pub failed: Ids,
    /// Ids in the outputs that the input does not have.
    pub unknown: Ids,
    /// Ids the input itself holds more than once.
    pub input_duplicates: Ids,
    /// Outputs whose last line or member was torn (a shard killed and never resumed).
    #[serde(skip)]
    pub torn: Vec<PathBuf>,
}

impl MergeReport {
    /// True when every input id has exactly one success and nothing else is off.
    pub fn is_exact(&self) -> bool {
        self.twice.count + self.missing.count + self.failed.count + self.unknown.count + self.input_duplicates.count
            == 0
    }
}

/// Reads every part (in order), writes its complete records to `out` when given, and judges
/// each id of `input` (`(custom_id, index)` per input item). `spill` holds the sort's runs.
pub fn merge(
    input: &mut dyn Iterator<Item = io::Result<(String, u64)>>,
    parts: &[PathBuf],
    mut out: Option<(&mut dyn Write, Compression)>,
    spill: &Path,
) -> io::Result<MergeReport> {
    let mut sorter = Sorter::new(spill);
    let mut report = MergeReport::default();
    let mut pending = Vec::new();
    let mut packed = Vec::new();
    for (p, path) in parts.iter().enumerate() {
        let text = open_output(path)?;
        let name = path.display().to_string();
        let (records, torn_line) = scan_records(text.src, &name, |id, ok, line, raw| {
            let kind = if ok { TAG_SUCCESS } else { TAG_FAILURE };
            sorter.push(id.as_bytes(), kind | ((p as u64) << LINE_BITS) | line)?;
            if let Some((w, c)) = out.as_mut() {
                pending.extend_from_slice(raw);
                if pending.len() >= 1 << 20 {
                    write_packed(w, *c, &pending, &mut packed)?;
                    pending.clear();
                }
            }
            Ok(())
        })?;
        report.records += records;
        if text.torn_member || torn_line {
            report.torn.push(path.clone());
        }
    }
    if let Some((w, c)) = out.as_mut() {
        if !pending.is_empty() {
            write_packed(w, *c, &pending, &mut packed)?;
        }
        w.flush()?;
    }
    for item in input {
        let (id, index) = item?;
        sorter.push(id.as_bytes(), TAG_INPUT | index)?;
    }
    let place = |tag: u64| {
        let part = (tag & !TAG_KIND) >> LINE_BITS;
        let line = tag & ((1 << LINE_BITS) - 1);
        format!("{}:{line}", parts[part as usize].display())
    };
    let mut sorted = sorter.finish()?;
    let mut tags = Vec::new();
    while let Some(id) = sorted.next_group(&mut tags)? {
        let id = String::from_utf8_lossy(&id);
        let inputs = tags.iter().filter(|t| *t & TAG_KIND == TAG_INPUT).count();
        let successes: Vec<u64> = tags.iter().copied().filter(|t| t & TAG_KIND == TAG_SUCCESS).collect();
        let records = tags.len() - inputs;
        if inputs == 0 {
            let first = tags[0];
            report.unknown.add(|| format!("{id:?} ({})", place(first)));
            continue;
        }
        report.input_ids += 1;
        if inputs > 1 {
            report.input_duplicates.add(|| format!("{id:?} ({inputs} lines)"));
        }
        match successes.len() {
            0 if records == 0 => report.missing.add(|| format!("{id:?}")),
            0 => report.failed.add(|| format!("{id:?} ({})", place(tags[inputs]))),
            1 => report.answered += 1,
            _ => report.twice.add(|| {
                let at: Vec<String> = successes.iter().map(|&t| place(t)).collect();
                format!("{id:?} ({})", at.join(", "))
            }),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, status: u16) -> String {
        format!(
            r#"{{"id":"r","custom_id":"{id}","response":{{"status_code":{status},"request_id":null,"body":{{}}}},"error":null}}"#
        ) + "\n"
    }

    #[test]
    fn names_each_kind_of_wrong_id() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let a = dir.path().join("part-0.jsonl");
        let b = dir.path().join("part-1.jsonl.gz");
        std::fs::write(&a, rec("a", 200) + &rec("b", 500) + &rec("c", 200) + &rec("x", 200))?;
        let mut gz = Vec::new();
        super::super::compress::encode(
            Compression::Gzip,
            (rec("c", 200) + &rec("e", 500) + &rec("e", 200)).as_bytes(),
            &mut gz,
        )?;
        std::fs::write(&b, gz)?;
        let ids = ["a", "b", "c", "d", "e"];
        let mut input = ids.iter().enumerate().map(|(i, id)| Ok((id.to_string(), i as u64)));
        let mut merged = Vec::new();
        let r = merge(
            &mut input,
            &[a.clone(), b.clone()],
            Some((&mut merged, Compression::None)),
            dir.path(),
        )?;
        assert_eq!((r.input_ids, r.records, r.answered), (5, 7, 2), "{r:?}");
        assert_eq!(r.twice.count, 1);
        assert_eq!(r.twice.shown, [format!("\"c\" ({}:3, {}:1)", a.display(), b.display())]);
        assert_eq!(r.missing.shown, ["\"d\""]);
        assert_eq!(r.failed.shown, [format!("\"b\" ({}:2)", a.display())]);
        assert_eq!(r.unknown.shown, [format!("\"x\" ({}:4)", a.display())]);
        assert!(!r.is_exact());
        let text = String::from_utf8(merged).unwrap();
        assert_eq!(text.lines().count(), 7, "every record, in part order");
        assert!(text.starts_with(&rec("a", 200)));
        Ok(())
    }

    #[test]
    fn exact_when_every_id_is_answered_once() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let a = dir.path().join("p.jsonl");
        // A failure answered on a later resume counts once, as answered.
        std::fs::write(&a, rec("b", 200) + &rec("a", 429) + &rec("a", 200))?;
        let mut input = ["a", "b"]
            .iter()
            .enumerate()
            .map(|(i, id)| Ok((id.to_string(), i as u64)));
        let r = merge(&mut input, &[a], None, dir.path())?;
        assert!(r.is_exact(), "{r:?}");
        assert_eq!((r.answered, r.records), (2, 3));
        Ok(())
    }
}
