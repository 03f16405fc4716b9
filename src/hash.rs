//! The one 64-bit mixer (SplitMix64's finalizer, Steele et al. 2014): the duplicate screen's
//! Bloom bit positions and the simulator's seeded per-request draws both spread their inputs
//! with it. A leaf: it uses nothing.

/// SplitMix64's golden-ratio increment.
pub const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The finalizer: every input bit reaches every output bit.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One SplitMix64 step from state `z`.
pub fn splitmix64(z: u64) -> u64 {
    mix64(z.wrapping_add(GOLDEN))
}

/// FNV-1a of some bytes: a word's or a block's name before it is chained.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Bytes per block of [`byte_blocks`]: a prefix cache's block of 16 tokens at 4 bytes a token.
pub const BLOCK_BYTES: usize = 64;

/// A text's whole blocks of [`BLOCK_BYTES`], each named by a hash chained from the blocks
/// before it, as a prefix cache names its token blocks: two texts share a block only where
/// they share everything up to its end. (The sweep's own-lines share.)
pub fn byte_blocks(text: &[u8]) -> Vec<u64> {
    byte_blocks_of(text, BLOCK_BYTES)
}

/// [`byte_blocks`] of `block_bytes` a block: `plan`'s replay of a job's file cuts blocks of a
/// cache block's 16 tokens at the sweep's own bytes per token.
pub fn byte_blocks_of(text: &[u8], block_bytes: usize) -> Vec<u64> {
    let mut chain = GOLDEN;
    text.chunks_exact(block_bytes.max(1))
        .map(|block| {
            chain = splitmix64(chain ^ fnv1a(block));
            chain
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_sequence() {
        // SplitMix64 seeded with 0: the first output of the reference implementation.
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
    }
}
