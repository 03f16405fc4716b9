//! Shards (`--shard K/N`): which items one of N cooperating runs sends. Apart because it
//! depends on nothing but an item's index, which is stable for a given file.

/// True when item `index` belongs to `shard = Some((k, n))`, i.e. `index % n == k`.
/// `None` (no sharding) and the invalid `n == 0` accept every index; validate
/// user input with [`parse_shard`].
pub fn in_shard(index: u64, shard: Option<(u64, u64)>) -> bool {
    match shard {
        Some((k, n)) if n > 0 => index % n == k,
        _ => true,
    }
}

/// Parses a `K/N` shard spec (0-based `K < N`).
pub fn parse_shard(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("invalid shard {s:?} (expected K/N with 0 <= K < N)");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let k: u64 = k.trim().parse().map_err(|_| bad())?;
    let n: u64 = n.trim().parse().map_err(|_| bad())?;
    if k < n {
        Ok((k, n))
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_indices() {
        for n in 1..6u64 {
            for index in 0..100u64 {
                let owners = (0..n).filter(|&k| in_shard(index, Some((k, n)))).count();
                assert_eq!(owners, 1);
            }
        }
        assert!(in_shard(7, None));
        assert_eq!(parse_shard("1/4"), Ok((1, 4)));
        for bad in ["4/4", "1", "a/b", "0/0", "-1/2"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }
}
