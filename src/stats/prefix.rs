//! A prefix cache's pool, as vLLM's automatic prefix caching keeps one: blocks named by hashes
//! chained from the blocks before them (so a block matches only with its whole prefix), kept
//! least recently used first out, in a pool of a fixed number of tokens. The simulator's GPUs
//! keep one each; `plan` replays a job's file through one to estimate what its lines share.

use std::collections::{BTreeMap, HashMap};

/// Tokens per block, vLLM's default block size.
pub const BLOCK_TOKENS: u64 = 16;

/// One GPU's pool of cached blocks, least recently used evicted first.
pub struct PrefixCache {
    capacity_blocks: usize,
    /// Block -> the tick it was last used.
    last_use: HashMap<u64, u64>,
    /// Tick -> block: the eviction order.
    by_age: BTreeMap<u64, u64>,
    tick: u64,
}

impl PrefixCache {
    /// A pool of `tokens` (whole blocks of it); None for 0, the cache off.
    pub fn new(tokens: u64) -> Option<PrefixCache> {
        let capacity_blocks = usize::try_from(tokens / BLOCK_TOKENS).unwrap_or(usize::MAX);
        (capacity_blocks > 0).then(|| PrefixCache {
            capacity_blocks,
            last_use: HashMap::new(),
            by_age: BTreeMap::new(),
            tick: 0,
        })
    }

    /// A request's blocks arrive: how many of its leading blocks were cached; then all of them
    /// are kept (most recently used), the oldest others evicted past the pool's size.
    pub fn admit(&mut self, blocks: &[u64]) -> usize {
        let hits = blocks.iter().take_while(|b| self.last_use.contains_key(b)).count();
        for &b in blocks {
            self.tick += 1;
            if let Some(old) = self.last_use.insert(b, self.tick) {
                self.by_age.remove(&old);
            }
            self.by_age.insert(self.tick, b);
        }
        while self.last_use.len() > self.capacity_blocks {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.last_use.remove(&oldest);
        }
        hits
    }
}

/// How far above the share of its prompt the sweep's own lines explain the share an answer
/// says was cached may be before the answer counts as served by a warm cache. Wider than a
/// level's: a byte share and a token share part where the shared text and the rest pack
/// tokens differently (10 points or more), while a line an earlier run sent comes back
/// cached whole.
pub const WARM_BY: f64 = 0.30;

/// Whether one answer was served from blocks the sweep never sent: its cached share of
/// `prompt_tokens` over the share `explained` of its prompt bytes.
pub fn warm_answer(cached_tokens: u64, prompt_tokens: u64, explained: f64) -> bool {
    prompt_tokens > 0 && cached_tokens as f64 / prompt_tokens as f64 > explained + WARM_BY
}

/// Whether a level whose answers said what was cached was served by a warm cache: at least 2
/// of them, and 1% of those, were. (A system prompt an earlier run left warms only the
/// sweep's first request: its later ones are explained by that first one.)
pub fn warm_level(warm: u64, answers: u64) -> bool {
    warm >= 2 && warm as f64 >= 0.01 * answers as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_blocks_hit_until_they_are_evicted() {
        let mut cache = PrefixCache::new(4 * BLOCK_TOKENS).unwrap();
        assert_eq!(cache.admit(&[1, 2, 3]), 0);
        assert_eq!(cache.admit(&[1, 2, 9]), 2);
        // Only the leading run counts: 3 after a miss is not a prefix hit.
        assert_eq!(cache.admit(&[7, 3]), 0);
        // Pool of 4: [1, 2, 9, 7, 3] kept the 4 most recent, evicting 1.
        assert_eq!(cache.admit(&[1]), 0);
        assert!(PrefixCache::new(15).is_none(), "less than a block: off");
    }

    #[test]
    fn an_answer_cached_far_past_what_the_sweep_sent_is_warm() {
        // 112 tokens, 64 of them a system prompt the sweep explains as 43% of its bytes.
        assert!(!warm_answer(64, 112, 0.43), "packing differences are not a warm cache");
        assert!(warm_answer(112, 112, 0.43), "a line sent before, cached whole");
        assert!(!warm_answer(0, 0, 0.0));
        assert!(!warm_level(1, 10), "one warm system prompt");
        assert!(warm_level(2, 200) && !warm_level(2, 201 * 2));
    }
}
