//! Which concurrency levels a sweep measures: `--concurrency auto` or a list.

use crate::ui::usage_error;

/// Which levels to measure.
#[derive(Clone, Debug, PartialEq)]
pub enum Levels {
    Auto { max: u32 },
    List(Vec<u32>),
}

pub fn parse_levels(s: &str, max: u32) -> anyhow::Result<Levels> {
    if s.trim().eq_ignore_ascii_case("auto") {
        if max == 0 {
            return Err(usage_error("--max-concurrency must be at least 1", None));
        }
        return Ok(Levels::Auto { max });
    }
    let mut out = Vec::new();
    for part in s.split(',') {
        match part.trim().parse::<u32>() {
            Ok(n) if n >= 1 => out.push(n),
            _ => {
                return Err(usage_error(
                    format!("--concurrency: `{}` is not a positive whole number", part.trim()),
                    Some("give a list like --concurrency 1,2,4,8 or --concurrency auto".into()),
                ))
            }
        }
    }
    Ok(Levels::List(out))
}

/// The keep-alive pool needs as many connections as the highest level.
pub fn max_level(l: &Levels) -> usize {
    match l {
        Levels::Auto { max } => *max as usize,
        Levels::List(v) => v.iter().copied().max().unwrap_or(1) as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse() {
        assert_eq!(parse_levels("auto", 64).unwrap(), Levels::Auto { max: 64 });
        assert_eq!(parse_levels("1, 2,4", 64).unwrap(), Levels::List(vec![1, 2, 4]));
        assert!(parse_levels("1,0", 64).is_err());
        assert!(parse_levels("x", 64).is_err());
    }
}
