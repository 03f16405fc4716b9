//! A prefix cache as vLLM's automatic prefix caching keeps one: a prompt is cut into blocks of
//! [`BLOCK`] tokens (the simulator's tokens are words), each block named by a hash chained from
//! every block before it, so a block matches only together with its whole prefix; only full
//! blocks are kept, in an LRU pool of a fixed number of tokens per GPU (`--prefix-cache-tokens`).
//! A request's cached tokens are its leading blocks found in the pool (`stats::prefix`); they
//! skip the prefill.

use crate::hash::splitmix64 as mix;
pub use crate::stats::prefix::PrefixCache;

/// Tokens per block, vLLM's default block size.
pub const BLOCK: usize = crate::stats::prefix::BLOCK_TOKENS as usize;

/// The chained hashes of a prompt's full blocks, in order (a last partial block has none).
pub fn block_hashes<'a>(words: impl Iterator<Item = &'a str>) -> Vec<u64> {
    let mut out = Vec::new();
    let (mut chain, mut in_block, mut h) = (0x9e37_79b9_7f4a_7c15u64, 0usize, 0u64);
    for w in words {
        h = mix(h ^ crate::hash::fnv1a(w.as_bytes()));
        in_block += 1;
        if in_block == BLOCK {
            chain = mix(chain ^ h);
            out.push(chain);
            (in_block, h) = (0, 0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    #[test]
    fn a_block_matches_only_with_its_whole_prefix() {
        let a = words("w", 40);
        let blocks = block_hashes(a.iter().map(String::as_str));
        assert_eq!(blocks.len(), 2, "40 words: 2 full blocks, the last 8 words none");
        let mut b = a.clone();
        b[20] = "other".into();
        let other = block_hashes(b.iter().map(String::as_str));
        assert_eq!(other[0], blocks[0]);
        assert_ne!(other[1], blocks[1]);
        // The same second block after another first block is another block.
        let mut c = a.clone();
        c[0] = "x".into();
        assert_ne!(block_hashes(c.iter().map(String::as_str))[1], blocks[1]);
    }

    #[test]
    fn a_shared_prefix_is_served_from_the_pool_until_it_is_evicted() {
        let mut cache = PrefixCache::new(4 * BLOCK as u64).unwrap();
        let system = words("s", 32);
        let ask = |q: &str| {
            let mut w = system.clone();
            w.extend(words(q, 16));
            block_hashes(w.iter().map(String::as_str).collect::<Vec<_>>().into_iter())
        };
        assert_eq!(cache.admit(&ask("a")), 0, "a cold cache");
        assert_eq!(cache.admit(&ask("b")), 2, "the system prompt's 2 blocks");
        assert_eq!(cache.admit(&ask("a")), 3, "all of a request seen before");
        // Two unrelated prompts of 2 blocks each push the system prompt out of 4 blocks.
        cache.admit(&block_hashes(words("u", 32).iter().map(String::as_str)));
        cache.admit(&block_hashes(words("v", 32).iter().map(String::as_str)));
        assert_eq!(cache.admit(&ask("c")), 0);
        assert!(PrefixCache::new(15).is_none(), "less than a block: off");
    }
}
