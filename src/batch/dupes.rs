//! Duplicate `custom_id` detection in bounded memory.
//!
//! A file is read twice before anything is sent when it has candidates:
//! 1. the first pass ([`DuplicateCheck::Screen`]) puts a 64-bit digest of every id into a
//!    fixed-size blocked Bloom filter; an id the filter may have seen before becomes a
//!    *candidate* (its digest goes into a small set). Every id that really repeats is a
//!    candidate; so are a few unique ids (false positives, which only cost time).
//! 2. the second pass ([`DuplicateCheck::Only`]) remembers, exactly and by string, only the
//!    ids whose digest is a candidate, and reports the real duplicates with the same message
//!    and first line as a set of every id would. An id outside the set is known to be unique.
//!
//! So memory is the filter (at most [`BLOOM_MAX_BYTES`]) plus the candidates, whatever the
//! number of lines. Stdin can be read once only: there [`DuplicateCheck::All`] keeps a
//! 128-bit digest of every id (24 bytes an id).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The largest Bloom filter, reached at inputs of 32 MiB and more (about 250,000 typical
/// lines): 2^27 bits, which keeps false candidates near 0.1% at 10 million ids.
pub const BLOOM_MAX_BYTES: usize = 16 << 20;
const BLOOM_MIN_BYTES: usize = 64 << 10;

/// How a reader checks that ids are unique.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DuplicateCheck {
    /// Not checked (a file the first pass checked already).
    Off,
    /// Every id remembered, duplicates reported: one pass only (stdin). Memory grows with
    /// the number of ids.
    #[default]
    All,
    /// The first of two passes over a file: notes candidates, reports nothing.
    Screen,
    /// Exact check of the candidates found by [`DuplicateCheck::Screen`]; every other id is
    /// unique.
    Only(Arc<HashSet<u64>>),
}

/// A reader's duplicate-id state for one pass.
pub(crate) enum Seen {
    Off,
    All(HashMap<[u64; 2], u32>),
    Screen {
        bloom: Bloom,
        candidates: HashSet<u64>,
    },
    Only {
        candidates: Arc<HashSet<u64>>,
        first: HashMap<String, u32>,
    },
}

impl Seen {
    /// `input_bytes`: the input's size when known, to size the Bloom filter.
    pub(crate) fn new(check: &DuplicateCheck, input_bytes: Option<u64>) -> Seen {
        match check {
            DuplicateCheck::Off => Seen::Off,
            DuplicateCheck::All => Seen::All(HashMap::new()),
            DuplicateCheck::Screen => Seen::Screen {
                bloom: Bloom::for_input(input_bytes),
                candidates: HashSet::new(),
            },
            DuplicateCheck::Only(c) => Seen::Only {
                candidates: c.clone(),
                first: HashMap::new(),
            },
        }
    }

    /// Records `id` as seen on `line`; `Err(first line)` when it was seen before.
    pub(crate) fn claim(&mut self, id: &str, line: u64) -> Result<(), u32> {
        let line = u32::try_from(line).unwrap_or(u32::MAX);
        match self {
            Seen::Off => Ok(()),
            Seen::All(seen) => match seen.entry([digest(id, 0), digest(id, 1)]) {
                Entry::Occupied(e) => Err(*e.get()),
                Entry::Vacant(v) => {
                    v.insert(line);
                    Ok(())
                }
            },
            Seen::Screen { bloom, candidates } => {
                let h = digest(id, 0);
                if bloom.insert(h) {
                    candidates.insert(h);
                }
                Ok(())
            }
            Seen::Only { candidates, first } => {
                if !candidates.contains(&digest(id, 0)) {
                    return Ok(());
                }
                match first.get(id) {
                    Some(l) => Err(*l),
                    None => {
                        first.insert(id.to_string(), line);
                        Ok(())
                    }
                }
            }
        }
    }

    /// Whether `id` needs the exact check of [`DuplicateCheck::Only`] (false: known unique).
    pub(crate) fn is_candidate(&self, id: &str) -> bool {
        match self {
            Seen::Only { candidates, .. } => candidates.contains(&digest(id, 0)),
            _ => true,
        }
    }

    /// The candidates a [`DuplicateCheck::Screen`] pass found.
    pub(crate) fn take_candidates(&mut self) -> HashSet<u64> {
        match self {
            Seen::Screen { candidates, .. } => std::mem::take(candidates),
            _ => HashSet::new(),
        }
    }
}

/// SipHash-1-3 (fixed keys) of `id` after a salt byte: stable within a process.
pub(crate) fn digest(id: &str, salt: u8) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    salt.hash(&mut h);
    id.hash(&mut h);
    h.finish()
}

/// A blocked Bloom filter: each digest sets 7 bits inside one 64-byte block, so an insert
/// touches one cache line. Zeroed memory is only resident once touched.
pub(crate) struct Bloom {
    blocks: Vec<[u64; 8]>,
}

impl Bloom {
    /// A power of two between 64 KiB and [`BLOOM_MAX_BYTES`], about half the input's size
    /// (an input line is longer than its id's 7 bits); the largest when the size is unknown.
    pub(crate) fn for_input(input_bytes: Option<u64>) -> Bloom {
        let want = input_bytes.map_or(BLOOM_MAX_BYTES as u64, |b| b / 2);
        let bytes = (want.clamp(BLOOM_MIN_BYTES as u64, BLOOM_MAX_BYTES as u64) as usize).next_power_of_two();
        Bloom::with_bytes(bytes.min(BLOOM_MAX_BYTES))
    }

    pub(crate) fn with_bytes(bytes: usize) -> Bloom {
        Bloom {
            blocks: vec![[0u64; 8]; (bytes / 64).max(1)],
        }
    }

    /// Sets the digest's bits; true when they were all set already (maybe seen before).
    pub(crate) fn insert(&mut self, h: u64) -> bool {
        let n = self.blocks.len() as u128;
        let block = &mut self.blocks[((u128::from(h) * n) >> 64) as usize];
        // Bit positions from a second, independent mix of the digest.
        let mut bits = crate::hash::splitmix64(h);
        let mut present = true;
        for _ in 0..7 {
            let pos = (bits & 511) as usize;
            bits >>= 9;
            let (word, mask) = (pos / 64, 1u64 << (pos % 64));
            present &= block[word] & mask != 0;
            block[word] |= mask;
        }
        present
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The two passes over `ids` (one id a line, lines numbered from 1): (line, first line) of
    /// each duplicate, as a set of every id reports them.
    fn two_passes(ids: &[String], bloom_bytes: usize) -> Vec<(u64, u32)> {
        let mut screen = Seen::Screen {
            bloom: Bloom::with_bytes(bloom_bytes),
            candidates: HashSet::new(),
        };
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(screen.claim(id, i as u64 + 1), Ok(()), "the screen reports nothing");
        }
        let mut exact = Seen::new(&DuplicateCheck::Only(Arc::new(screen.take_candidates())), None);
        let mut dups = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            if let Err(first) = exact.claim(id, i as u64 + 1) {
                dups.push((i as u64 + 1, first));
            }
        }
        dups
    }

    fn reference(ids: &[String]) -> Vec<(u64, u32)> {
        let mut first = HashMap::new();
        let mut dups = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let line = i as u64 + 1;
            match first.get(id) {
                Some(&f) => dups.push((line, f)),
                None => {
                    first.insert(id.clone(), line as u32);
                }
            }
        }
        dups
    }

    #[test]
    fn a_tiny_filter_full_of_false_candidates_is_still_exact() {
        // 64 bytes (one block) for 2,000 ids: nearly every id is a candidate.
        let mut ids: Vec<String> = (0..2000).map(|i| format!("req-{i}")).collect();
        ids.push("req-7".into());
        ids.push("req-1999".into());
        ids.push("req-7".into());
        assert_eq!(two_passes(&ids, 64), vec![(2001, 8), (2002, 2000), (2003, 8)]);
        assert_eq!(reference(&ids), two_passes(&ids, 64));
    }

    #[test]
    fn a_large_filter_has_few_false_candidates() {
        let mut bloom = Bloom::with_bytes(1 << 20);
        let hits = (0..100_000u32)
            .filter(|i| bloom.insert(digest(&format!("id-{i}"), 0)))
            .count();
        // 84 bits an id: false positives are rare (about 1e-6 per id).
        assert!(hits < 10, "{hits} false candidates");
    }

    #[test]
    fn filter_size_follows_the_input_within_bounds() {
        assert_eq!(Bloom::for_input(Some(10)).blocks.len() * 64, BLOOM_MIN_BYTES);
        assert_eq!(Bloom::for_input(Some(3 << 20)).blocks.len() * 64, 2 << 20);
        assert_eq!(Bloom::for_input(Some(10 << 30)).blocks.len() * 64, BLOOM_MAX_BYTES);
        assert_eq!(Bloom::for_input(None).blocks.len() * 64, BLOOM_MAX_BYTES);
    }

    #[test]
    fn only_mode_ignores_ids_outside_the_candidates() {
        let mut s = Seen::new(&DuplicateCheck::Only(Arc::new(HashSet::new())), None);
        assert_eq!(s.claim("a", 1), Ok(()));
        assert_eq!(s.claim("a", 2), Ok(()), "not a candidate: the screen saw it once");
        assert!(!s.is_candidate("a"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Bloom screen + exact re-check report exactly what a set of every id reports,
        /// whatever the filter's size (false candidates cost time, never a false duplicate).
        #[test]
        fn screen_then_recheck_is_exact(
            ids in proptest::collection::vec("[a-d]{1,3}", 0..300),
            blocks in 1usize..64,
        ) {
            prop_assert_eq!(two_passes(&ids, blocks * 64), reference(&ids));
        }
    }
}
