//! Ids sorted in bounded memory: an external merge sort of `(id, tag)` pairs.
//!
//! Resume and `merge` must relate every id of an output to the ids of its input, exactly, for
//! jobs of 10^8 lines. A set of every id as a `String` costs about 85 bytes an id (418 MiB at
//! 10M); a 64-bit digest collides at that scale. Sorting the ids themselves, in runs of at
//! most [`RUN_BYTES`] spilled to anonymous temporary files and merged, gives each id's group
//! of tags in one streamed pass: exact (ids are compared byte for byte), memory flat in the
//! job's size, disk about the ids' size once.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The bytes a run may hold in memory before it is sorted and spilled (ids and their entries).
pub const RUN_BYTES: usize = 16 * 1024 * 1024;

/// Bytes of each entry besides the id's own (offset, length, tag).
const ENTRY_BYTES: usize = 16;

/// Runs merged at once: beyond it, runs are first merged in groups into longer runs, so open
/// files and read buffers (64 KiB each) stay bounded however many runs a job makes.
const FAN_IN: usize = 64;

/// Collects `(id, tag)` pairs; [`Sorter::finish`] yields them sorted by id, then tag.
pub struct Sorter {
    dir: PathBuf,
    budget: usize,
    arena: Vec<u8>,
    entries: Vec<(u32, u32, u64)>,
    runs: Vec<File>,
}

impl Sorter {
    /// A sorter that spills to temporary files in `dir` (unlinked at once: nothing is left
    /// behind, even after a kill).
    pub fn new(dir: &Path) -> Sorter {
        Sorter::with_budget(dir, RUN_BYTES)
    }

    pub fn with_budget(dir: &Path, budget: usize) -> Sorter {
        Sorter {
            dir: dir.to_path_buf(),
            budget: budget.max(64),
            arena: Vec::new(),
            entries: Vec::new(),
            runs: Vec::new(),
        }
    }

    pub fn push(&mut self, id: &[u8], tag: u64) -> io::Result<()> {
        if self.arena.len() + id.len() > u32::MAX as usize
            || self.arena.len() + (self.entries.len() + 1) * ENTRY_BYTES + id.len() > self.budget
        {
            self.spill()?;
        }
        self.entries.push((self.arena.len() as u32, id.len() as u32, tag));
        self.arena.extend_from_slice(id);
        Ok(())
    }

    fn sort(&mut self) {
        let arena = &self.arena;
        self.entries.sort_unstable_by(|a, b| {
            let ka = &arena[a.0 as usize..(a.0 + a.1) as usize];
            let kb = &arena[b.0 as usize..(b.0 + b.1) as usize];
            ka.cmp(kb).then(a.2.cmp(&b.2))
        });
    }

    /// Beside the job's files first (room for them is likely there), else the system's
    /// temporary folder (a read-only input folder under `merge --check`).
    fn temp_file(&self) -> io::Result<File> {
        tempfile::tempfile_in(&self.dir).or_else(|e| {
            tempfile::tempfile()
                .map_err(|_| io::Error::new(e.kind(), format!("cannot spill ids to {}: {e}", self.dir.display())))
        })
    }

    fn spill(&mut self) -> io::Result<()> {
        if self.entries.is_empty() {
            return Ok(());
        }
        self.sort();
        let mut w = BufWriter::with_capacity(256 * 1024, self.temp_file()?);
        for &(off, len, tag) in &self.entries {
            write_entry(&mut w, &self.arena[off as usize..(off + len) as usize], tag)?;
        }
        let mut file = w.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        self.runs.push(file);
        self.entries.clear();
        self.arena.clear();
        self.arena.shrink_to_fit();
        self.entries.shrink_to_fit();
        Ok(())
    }

    /// Every pair pushed, sorted.
    pub fn finish(mut self) -> io::Result<Sorted> {
        if self.runs.is_empty() {
            self.sort();
            let mut entries = std::mem::take(&mut self.entries);
            entries.reverse(); // popped from the back
            return Ok(Sorted::Memory {
                arena: std::mem::take(&mut self.arena),
                entries,
            });
        }
        self.spill()?;
        let mut runs = std::mem::take(&mut self.runs);
        while runs.len() > FAN_IN {
            let mut longer = Vec::with_capacity(runs.len().div_ceil(FAN_IN));
            while !runs.is_empty() {
                let group: Vec<File> = runs.drain(..runs.len().min(FAN_IN)).collect();
                longer.push(self.merge_into_run(group)?);
            }
            runs = longer;
        }
        merged(runs)
    }

    /// Merges `group` into one new run.
    fn merge_into_run(&self, group: Vec<File>) -> io::Result<File> {
        let mut sorted = merged(group)?;
        let mut w = BufWriter::with_capacity(256 * 1024, self.temp_file()?);
        while let Some((id, tag)) = sorted.next_pair()? {
            write_entry(&mut w, &id, tag)?;
        }
        let mut file = w.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        Ok(file)
    }
}

/// A k-way merge of sorted runs.
fn merged(runs: Vec<File>) -> io::Result<Sorted> {
    let mut runs: Vec<BufReader<File>> = runs
        .into_iter()
        .map(|f| BufReader::with_capacity(64 * 1024, f))
        .collect();
    let mut heap = BinaryHeap::with_capacity(runs.len());
    for (i, r) in runs.iter_mut().enumerate() {
        if let Some((id, tag)) = read_entry(r)? {
            heap.push(Reverse((id, tag, i)));
        }
    }
    Ok(Sorted::Runs { runs, heap })
}

fn write_entry(w: &mut impl Write, id: &[u8], tag: u64) -> io::Result<()> {
    w.write_all(&(id.len() as u32).to_le_bytes())?;
    w.write_all(id)?;
    w.write_all(&tag.to_le_bytes())
}

fn read_entry(r: &mut BufReader<File>) -> io::Result<Option<(Vec<u8>, u64)>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut id = vec![0u8; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut id)?;
    let mut tag = [0u8; 8];
    r.read_exact(&mut tag)?;
    Ok(Some((id, u64::from_le_bytes(tag))))
}

/// The sorted pairs: from memory when they fitted one run, else a k-way merge of the runs.
pub enum Sorted {
    Memory {
        arena: Vec<u8>,
        entries: Vec<(u32, u32, u64)>,
    },
    Runs {
        runs: Vec<BufReader<File>>,
        heap: BinaryHeap<Reverse<(Vec<u8>, u64, usize)>>,
    },
}

impl Sorted {
    fn next_pair(&mut self) -> io::Result<Option<(Vec<u8>, u64)>> {
        match self {
            Sorted::Memory { arena, entries } => Ok(entries
                .pop()
                .map(|(off, len, tag)| (arena[off as usize..(off + len) as usize].to_vec(), tag))),
            Sorted::Runs { runs, heap } => {
                let Some(Reverse((id, tag, i))) = heap.pop() else {
                    return Ok(None);
                };
                if let Some((nid, ntag)) = read_entry(&mut runs[i])? {
                    heap.push(Reverse((nid, ntag, i)));
                }
                Ok(Some((id, tag)))
            }
        }
    }

    fn peek_id(&self) -> Option<&[u8]> {
        match self {
            Sorted::Memory { arena, entries } => entries
                .last()
                .map(|&(off, len, _)| &arena[off as usize..(off + len) as usize]),
            Sorted::Runs { heap, .. } => heap.peek().map(|Reverse((id, _, _))| id.as_slice()),
        }
    }

    /// The next id and all its tags (sorted), or None at the end.
    pub fn next_group(&mut self, tags: &mut Vec<u64>) -> io::Result<Option<Vec<u8>>> {
        tags.clear();
        let Some((id, tag)) = self.next_pair()? else {
            return Ok(None);
        };
        tags.push(tag);
        while self.peek_id() == Some(id.as_slice()) {
            if let Some((_, t)) = self.next_pair()? {
                tags.push(t);
            }
        }
        Ok(Some(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn groups(pairs: &[(String, u64)], budget: usize) -> Vec<(Vec<u8>, Vec<u64>)> {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sorter::with_budget(dir.path(), budget);
        for (id, tag) in pairs {
            s.push(id.as_bytes(), *tag).unwrap();
        }
        let mut sorted = s.finish().unwrap();
        let mut out = Vec::new();
        let mut tags = Vec::new();
        while let Some(id) = sorted.next_group(&mut tags).unwrap() {
            out.push((id, tags.clone()));
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Spilled or not, the groups are those of an in-memory map of every pair.
        #[test]
        fn groups_match_a_map(pairs in proptest::collection::vec(("[a-d]{0,3}", 0u64..5), 0..600), budget in 64usize..2000) {
            let mut want: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
            for (id, tag) in &pairs {
                want.entry(id.as_bytes().to_vec()).or_default().push(*tag);
            }
            for tags in want.values_mut() {
                tags.sort_unstable();
            }
            let want: Vec<_> = want.into_iter().collect();
            prop_assert_eq!(&groups(&pairs, budget), &want);
            prop_assert_eq!(&groups(&pairs, RUN_BYTES), &want);
        }

        /// More runs than one merge takes: merged in groups first, same result.
        #[test]
        fn many_runs_merge_in_levels(pairs in proptest::collection::vec(("[a-z]{0,4}", 0u64..9), 300..1500)) {
            let mut want: Vec<(Vec<u8>, u64)> = pairs.iter().map(|(id, t)| (id.as_bytes().to_vec(), *t)).collect();
            want.sort();
            // A budget of 64 bytes holds 2 or 3 pairs: hundreds of runs, more than FAN_IN.
            let got: Vec<(Vec<u8>, u64)> = groups(&pairs, 64)
                .into_iter()
                .flat_map(|(id, tags)| tags.into_iter().map(move |t| (id.clone(), t)))
                .collect();
            prop_assert!(pairs.len() / 3 > FAN_IN);
            prop_assert_eq!(got, want);
        }
    }
}
