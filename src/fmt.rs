//! Numbers for people: the one thousands-separator formatter behind the sweep table, the
//! plan's explanation and the progress and summary lines on stderr, so the same figure reads
//! the same everywhere. Not for CSV or JSON, which keep plain numbers.

/// `x` with `decimals` places and `,` between thousands: `1,234,567.89`. Rounds as `format!`
/// does. A value that prints as zero gets no sign (`-0` would read oddly); a non-finite one is
/// `-`, so no table or message shows `NaN`; beyond 1e18 digits stop meaning anything and the
/// exponent form (`1e300`) is shown instead.
pub fn grouped(x: f64, decimals: usize) -> String {
    if !x.is_finite() {
        return "-".to_string();
    }
    if x.abs() >= 1e18 {
        return format!("{x:e}");
    }
    let plain = format!("{:.*}", decimals, x.abs());
    let (int, frac) = match plain.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (plain.as_str(), None),
    };
    let mut out = String::with_capacity(plain.len() + int.len() / 3 + 1);
    if x < 0.0 && plain.bytes().any(|b| matches!(b, b'1'..=b'9')) {
        out.push('-');
    }
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    out
}

/// A whole number with separators, `19184.5` -> `19,185`: RPM figures people read at a glance.
/// Rounds half away from zero first, as the tables and messages always have.
pub fn thousands(x: f64) -> String {
    grouped(x.round(), 0)
}

/// A gauge or count for a sentence: `16` rather than `16.0`, `15.7` rather than `15.71234`;
/// `-` when not finite.
pub fn short(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if (v - v.round()).abs() < 0.05 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(19184.4), "19,184");
        assert_eq!(thousands(19184.5), "19,185");
        assert_eq!(thousands(1234567.8), "1,234,568");
        assert_eq!(thousands(-1234.0), "-1,234");
        assert_eq!(thousands(-30000.0), "-30,000");
        assert_eq!(thousands(-0.4), "0");
        assert_eq!(thousands(1e300), "1e300");
    }

    #[test]
    fn non_finite_is_a_dash() {
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(thousands(v), "-");
            assert_eq!(grouped(v, 2), "-");
        }
    }

    #[test]
    fn with_decimals() {
        assert_eq!(grouped(0.0, 0), "0");
        assert_eq!(grouped(999.0, 0), "999");
        assert_eq!(grouped(1_000.0, 0), "1,000");
        assert_eq!(grouped(1_234_567.891, 2), "1,234,567.89");
        assert_eq!(grouped(-1_234.0, 0), "-1,234");
        assert_eq!(grouped(-0.001, 0), "0");
        assert_eq!(grouped(-0.001, 3), "-0.001");
        assert_eq!(grouped(0.5, 3), "0.500");
    }
}
