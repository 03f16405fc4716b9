//! What the sweep's own lines explain of a server's prefix cache hits. Each sampled prompt is
//! cut into blocks of bytes (about a cache block's 16 tokens at 4 bytes a token), each named by
//! a hash chained from the blocks before it, as a server names its token blocks; a request's
//! leading blocks already sent in this sweep are what any cache, however large, could have
//! served it. A level whose server hit rate is well above that share was served from blocks
//! the sweep never sent: a cache warm from an earlier run (or another client), so its rate is
//! inflated.

pub use crate::hash::{byte_blocks, BLOCK_BYTES};
pub use crate::stats::prefix::warm_level;

use crate::stats::prefix::PrefixCache;
use std::sync::Mutex;

/// How far above the share the sweep's own lines explain a level's hit rate may be before the
/// level counts as served by a warm cache.
pub const INFLATED_BY: f64 = 0.15;

/// The blocks sent so far in the sweep, in a prefix cache no eviction empties (the one pool
/// that decides what a prefix hit is, for the simulator and `plan` too), and the bytes sent and
/// those it served.
pub struct SeenBlocks {
    inner: Mutex<Seen>,
}

struct Seen {
    blocks: PrefixCache,
    /// Prompt bytes sent, and those in leading blocks sent before.
    sent: u64,
    explained: u64,
}

impl Default for SeenBlocks {
    fn default() -> Self {
        let blocks = PrefixCache::new(u64::MAX).expect("an unbounded pool is on");
        SeenBlocks {
            inner: Mutex::new(Seen {
                blocks,
                sent: 0,
                explained: 0,
            }),
        }
    }
}

impl SeenBlocks {
    /// One request of `prompt_bytes` whose whole blocks are `blocks` is sent: the bytes of it
    /// the sweep's earlier requests explain.
    pub fn offer(&self, blocks: &[u64], prompt_bytes: u64) -> u64 {
        let mut s = self.inner.lock().expect("seen blocks lock");
        let hits = s.blocks.admit(blocks);
        s.sent += prompt_bytes.max((blocks.len() * BLOCK_BYTES) as u64);
        let explained = ((hits * BLOCK_BYTES) as u64).min(prompt_bytes);
        s.explained += (hits * BLOCK_BYTES) as u64;
        explained
    }

    /// (prompt bytes sent, bytes the sweep's own earlier requests explain) so far.
    pub fn totals(&self) -> (u64, u64) {
        let s = self.inner.lock().expect("seen blocks lock");
        (s.sent, s.explained)
    }
}

/// The share of a level's prompt the sweep's own lines explain, from the totals before and
/// after it; None when it sent no prompt.
pub fn explained_share(before: (u64, u64), after: (u64, u64)) -> Option<f64> {
    let sent = after.0.saturating_sub(before.0);
    (sent > 0).then(|| after.1.saturating_sub(before.1) as f64 / sent as f64)
}

/// Whether a level's server hit rate is more than its own lines explain.
pub fn inflated(server_hit_rate: Option<f64>, explained: Option<f64>) -> bool {
    matches!((server_hit_rate, explained), (Some(h), Some(e)) if h > e + INFLATED_BY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_sent_again_is_explained_and_a_new_one_is_not() {
        let seen = SeenBlocks::default();
        let system = "s".repeat(128);
        let a = format!("{system}{:-<64}", "question one");
        let b = format!("{system}{:-<64}", "question two");
        let offer = |t: &str| seen.offer(&byte_blocks(t.as_bytes()), t.len() as u64);
        offer(&a);
        let first = seen.totals();
        assert_eq!(first.1, 0, "a cold start explains nothing");
        offer(&b);
        // b shares a's 2 system blocks, not its question block.
        assert_eq!(explained_share(first, seen.totals()), Some(128.0 / b.len() as f64));
        let before = seen.totals();
        offer(&a);
        assert_eq!(explained_share(before, seen.totals()), Some(192.0 / a.len() as f64));
        assert!(inflated(Some(0.95), Some(0.5)));
        assert!(!inflated(Some(0.6), Some(0.5)));
        assert!(!inflated(None, Some(0.0)));
    }
}
