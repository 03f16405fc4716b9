//! A checking cursor over JSON text, for the two places that read JSON once per request: an
//! input line (its id and body) and an answer (its usage). It reads the few fields they need
//! and checks that everything else is well formed, in one pass, with no tree and no allocation.
//! serde_json's typed views did the same in two or three passes, at about 30 instructions a
//! byte on these short, string-heavy lines (benches/PROFILE.md).
//!
//! It vouches only for what it is sure of. Anything unusual (an escaped key, a lone surrogate
//! escape, a number serde_json might find out of range, deep nesting) is [`Unsure`], and the
//! caller asks serde_json, whose verdict stands. So it never accepts text serde_json rejects
//! (property tests below), and it never decides an error message.

use std::borrow::Cow;
use std::ops::Range;

/// The cursor cannot vouch for the text: ask serde_json.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsure;

pub type Scan<T> = Result<T, Unsure>;

/// Deeper than this is left to serde_json (whose own limit is 128).
const MAX_DEPTH: u32 = 100;
/// A longer number, or one with a three-digit exponent, is left to serde_json, which reads
/// numbers as f64 and rejects those out of its range.
const MAX_NUMBER: usize = 24;

/// Reads one JSON text from the front.
pub struct Cursor<'a> {
    text: &'a str,
    i: usize,
    depth: u32,
}

impl<'a> Cursor<'a> {
    pub fn new(text: &'a str) -> Cursor<'a> {
        Cursor { text, i: 0, depth: 0 }
    }

    /// The text as given.
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// The next byte after whitespace (not consumed).
    fn peek(&mut self) -> Option<u8> {
        let b = self.text.as_bytes();
        self.i = ws(b, self.i);
        b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Scan<()> {
        if self.peek() != Some(c) {
            return Err(Unsure);
        }
        self.i += 1;
        Ok(())
    }

    /// Where the next value starts (after whitespace).
    pub fn value_start(&mut self) -> usize {
        self.peek();
        self.i
    }

    /// Where the cursor is.
    pub fn pos(&self) -> usize {
        self.i
    }

    /// Nothing but whitespace is left.
    pub fn end(mut self) -> Scan<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(Unsure),
        }
    }

    /// Reads an object, calling `field` with each key (unescaped keys only; an escaped one is
    /// `Unsure`, as it could spell a key the caller looks for). `field` must read the value.
    pub fn object(&mut self, mut field: impl FnMut(&mut Cursor<'a>, &'a str) -> Scan<()>) -> Scan<()> {
        self.eat(b'{')?;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Unsure);
        }
        if self.peek() == Some(b'}') {
            self.i += 1;
            self.depth -= 1;
            return Ok(());
        }
        let text = self.text;
        loop {
            self.peek();
            let (name, escaped, value) = key(text.as_bytes(), self.i)?;
            if escaped {
                return Err(Unsure);
            }
            self.i = value;
            field(self, &text[name])?;
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(Unsure),
            }
        }
    }

    /// Checks one value and steps over it; returns where it lies in the text. Containers are
    /// walked with a stack of bits rather than by recursion: skipping is most of the work of
    /// reading an answer, and a call per value cost as much as the checks.
    pub fn skip(&mut self) -> Scan<Range<usize>> {
        let b = self.text.as_bytes();
        let start = self.value_start();
        let room = MAX_DEPTH.saturating_sub(self.depth);
        // Bit 0 of `objects` tells whether the innermost open container is an object, bit 1
        // the one around it, and so on (`depth` of them, at most 100 < 128).
        let mut objects: u128 = 0;
        let mut depth = 0;
        let mut i = start;
        loop {
            // A value starts at `i`.
            match b.get(i) {
                Some(b'"') => i = string_end(b, i)?.0,
                Some(&open @ (b'{' | b'[')) => {
                    depth += 1;
                    if depth > room {
                        return Err(Unsure);
                    }
                    let object = open == b'{';
                    objects = objects << 1 | object as u128;
                    i = ws(b, i + 1);
                    if b.get(i) == Some(if object { &b'}' } else { &b']' }) {
                        i += 1;
                        depth -= 1;
                        objects >>= 1;
                    } else {
                        if object {
                            i = key(b, i)?.2;
                        }
                        continue;
                    }
                }
                Some(b't') => i = literal(b, i, b"true")?,
                Some(b'f') => i = literal(b, i, b"false")?,
                Some(b'n') => i = literal(b, i, b"null")?,
                Some(b'-' | b'0'..=b'9') => i = number_end(b, i)?,
                _ => return Err(Unsure),
            }
            // After a value: close the containers that end here, or go on to the next member.
            loop {
                if depth == 0 {
                    self.i = i;
                    return Ok(start..i);
                }
                i = ws(b, i);
                let in_object = objects & 1 == 1;
                match b.get(i) {
                    Some(b',') => {
                        i = ws(b, i + 1);
                        if in_object {
                            i = key(b, i)?.2;
                        }
                        break;
                    }
                    Some(b'}') if in_object => {}
                    Some(b']') if !in_object => {}
                    _ => return Err(Unsure),
                }
                i += 1;
                depth -= 1;
                objects >>= 1;
            }
        }
    }

    /// A string value, unescaped.
    pub fn string(&mut self) -> Scan<Cow<'a, str>> {
        let start = self.value_start();
        if self.text.as_bytes().get(start) != Some(&b'"') {
            return Err(Unsure);
        }
        let (end, escaped) = string_end(self.text.as_bytes(), start)?;
        self.i = end;
        if !escaped {
            return Ok(Cow::Borrowed(&self.text[start + 1..end - 1]));
        }
        // Checked above; serde_json only does the unescaping.
        serde_json::from_str(&self.text[start..end])
            .map(Cow::Owned)
            .map_err(|_| Unsure)
    }

    /// An unsigned integer literal (no sign, fraction or exponent) as u64, or `null`.
    pub fn uint_or_null(&mut self) -> Scan<Option<u64>> {
        let span = self.skip()?;
        let t = &self.text[span];
        if t == "null" {
            return Ok(None);
        }
        if !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Unsure);
        }
        t.parse().map(Some).map_err(|_| Unsure)
    }
}

/// Past the whitespace at `i`.
#[inline(always)]
fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(&c) = b.get(i) {
        // Most bytes are above the space: one compare for them.
        if c > b' ' || !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
            break;
        }
        i += 1;
    }
    i
}

/// An object key at `i` and its `:`: the key's content (between the quotes), whether it holds
/// an escape, and where its value starts (whitespace skipped).
#[inline(always)]
fn key(b: &[u8], i: usize) -> Scan<(Range<usize>, bool, usize)> {
    if b.get(i) != Some(&b'"') {
        return Err(Unsure);
    }
    let (end, escaped) = string_end(b, i)?;
    let colon = ws(b, end);
    if b.get(colon) != Some(&b':') {
        return Err(Unsure);
    }
    Ok((i + 1..end - 1, escaped, ws(b, colon + 1)))
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Scan<usize> {
    if !b[i..].starts_with(word) {
        return Err(Unsure);
    }
    Ok(i + word.len())
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?` at `i`, and short: where it ends.
fn number_end(b: &[u8], start: usize) -> Scan<usize> {
    let mut i = start;
    let digits = |i: &mut usize| {
        let from = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - from
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return Err(Unsure),
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return Err(Unsure);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let n = digits(&mut i);
        if n == 0 || n > 2 {
            return Err(Unsure);
        }
    }
    if i - start > MAX_NUMBER {
        return Err(Unsure);
    }
    Ok(i)
}

/// The string at `i` (a `"`): where it ends (past the closing quote) and whether it holds an
/// escape.
#[inline(always)]
fn string_end(b: &[u8], start: usize) -> Scan<(usize, bool)> {
    let mut i = start + 1;
    let mut escaped = false;
    loop {
        // Eight bytes at a time up to the first that ends a plain run.
        while let Some(chunk) = b.get(i..i + 8) {
            let stops = stop_mask(u64::from_le_bytes(chunk.try_into().expect("eight bytes")));
            if stops != 0 {
                i += (stops.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        match b.get(i) {
            Some(b'"') => return Ok((i + 1, escaped)),
            Some(b'\\') => {
                escaped = true;
                i = escape(b, i + 1)?;
            }
            Some(&c) if c >= 0x20 => i += 1,
            _ => return Err(Unsure),
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit set in each byte of `v` that is `"`, `\` or a control character; the lowest
/// set bit is always exact (a borrow can only mark bytes above a true one).
fn stop_mask(v: u64) -> u64 {
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    below(v ^ (ONES * b'"' as u64), 1) | below(v ^ (ONES * b'\\' as u64), 1) | below(v, 0x20)
}

/// After a `\` at `i - 1`: the end of the escape. A surrogate escape is accepted only as a
/// pair (serde_json rejects a lone one).
fn escape(b: &[u8], i: usize) -> Scan<usize> {
    match b.get(i) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(i + 1),
        Some(b'u') => {
            let unit = hex4(b, i + 1)?;
            match unit {
                0xD800..=0xDBFF => {
                    if b.get(i + 5..i + 7) != Some(b"\\u") {
                        return Err(Unsure);
                    }
                    if !(0xDC00..=0xDFFF).contains(&hex4(b, i + 7)?) {
                        return Err(Unsure);
                    }
                    Ok(i + 11)
                }
                0xDC00..=0xDFFF => Err(Unsure),
                _ => Ok(i + 5),
            }
        }
        _ => Err(Unsure),
    }
}

fn hex4(b: &[u8], i: usize) -> Scan<u32> {
    let digits = b.get(i..i + 4).ok_or(Unsure)?;
    digits.iter().try_fold(0u32, |acc, &d| {
        let v = (d as char).to_digit(16).ok_or(Unsure)?;
        Ok(acc * 16 + v)
    })
}

/// Sets `slot` once. A key given twice is `Unsure`: serde_json's typed views reject it, its
/// trees keep the last.
pub fn once<T>(slot: &mut Option<T>, value: T) -> Scan<()> {
    if slot.replace(value).is_some() {
        return Err(Unsure);
    }
    Ok(())
}

/// Checks that `text` is one JSON value with nothing but whitespace around it.
pub fn check(text: &str) -> Scan<()> {
    let mut c = Cursor::new(text);
    c.skip()?;
    c.end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn serde_ok(text: &str) -> bool {
        serde_json::from_str::<Value>(text).is_ok()
    }

    #[test]
    fn reads_what_serde_json_reads() {
        for ok in [
            r#"{"a":[1,-0,0.5,1e5,2E-3,-1.25e+10,true,false,null,"x\"\\\/\b\f\n\r\t\u00e9"],"b":{}}"#,
            " [ ] ",
            "\"\\ud83d\\ude00 plain ünïcode\"",
            "0",
            "{\"a\" : { \"b\" : [ { } ] } }",
            "\"a longer string that runs over several eight-byte blocks \\\" and goes on\"",
        ] {
            assert!(serde_ok(ok), "{ok}");
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            " ",
            "{",
            "}",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{a:1}",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "+1",
            "tru",
            "truex",
            "nul",
            "[1 2]",
            "\"\\x\"",
            "\"\\u12g4\"",
            "\"\t\"",
            "\"abc",
            "{\"a\":1}}",
            "[1] [2]",
            "'a'",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "[1}",
            "{\"a\":1]",
            "[{]}",
            "{\"a\":[}]",
            "{\"a\"}",
            "{,}",
            "[,1]",
            "{\"a\":1,\"b\"}",
        ] {
            assert_eq!(check(bad), Err(Unsure), "{bad:?}");
        }
        // Left to serde_json: out-of-range numbers and deep nesting.
        assert_eq!(check("1e400"), Err(Unsure));
        assert_eq!(check(&format!("{}{}", "[".repeat(101), "]".repeat(101))), Err(Unsure));
        assert_eq!(check(&format!("{}{}", "[".repeat(100), "]".repeat(100))), Ok(()));
    }

    #[test]
    fn fields_and_strings_come_out_unescaped() {
        let mut c = Cursor::new(r#" {"id": "a\u0062", "n": 12, "z": null, "s": "plain", "o": {"k": [1]}} "#);
        let mut seen = Vec::new();
        c.object(|c, key| {
            let v = match key {
                "id" | "s" => c.string()?.into_owned(),
                "n" | "z" => format!("{:?}", c.uint_or_null()?),
                _ => {
                    let span = c.skip()?;
                    c.text()[span].to_string()
                }
            };
            seen.push(format!("{key}={v}"));
            Ok(())
        })
        .unwrap();
        c.end().unwrap();
        assert_eq!(seen, ["id=ab", "n=Some(12)", "z=None", "s=plain", "o={\"k\": [1]}"]);
        assert_eq!(Cursor::new("-1").uint_or_null(), Err(Unsure));
        assert_eq!(Cursor::new("1.0").uint_or_null(), Err(Unsure));
        assert_eq!(Cursor::new("99999999999999999999").uint_or_null(), Err(Unsure));
        assert_eq!(
            Cursor::new("{\"a\\u0062\":1}").object(|c, _| c.skip().map(drop)),
            Err(Unsure)
        );
    }

    /// Any JSON value serde_json writes, with whitespace anywhere it may go.
    fn json_strategy() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            (-1e12f64..1e12).prop_map(|f| Value::from(f).to_string()),
            prop::sample::select(vec!["1e-7", "-0.0", "2.5E+3", "0e0"]).prop_map(String::from),
            any::<String>().prop_map(|s| Value::String(s).to_string()),
            "[a-z\"\\\\/\u{1}\u{1f}\u{e9}\u{1F600} ]{0,24}".prop_map(|s| Value::String(s).to_string()),
            prop::sample::select(vec!["\"\\ud83d\\ude00\"", "\"\\u00e9\\/\"", "\"\\u0000\""]).prop_map(String::from),
        ];
        let ws = prop::sample::select(vec!["", " ", "\n", "\t ", "\r\n"]);
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                (prop::collection::vec((inner.clone(), ws.clone()), 0..6)).prop_map(|items| {
                    let parts: Vec<String> = items.into_iter().map(|(v, w)| format!("{w}{v}{w}")).collect();
                    format!("[{}]", parts.join(","))
                }),
                (prop::collection::vec(("[a-z_]{0,6}", inner, ws.clone()), 0..6)).prop_map(|fields| {
                    let parts: Vec<String> = fields
                        .into_iter()
                        .map(|(k, v, w)| format!("{w}\"{k}\"{w}:{w}{v}"))
                        .collect();
                    format!("{{{}}}", parts.join(","))
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Every value serde_json accepts (short of the cases left to it on purpose), the
        /// cursor accepts, with the same span.
        #[test]
        fn accepts_serde_json_texts(text in json_strategy()) {
            prop_assert!(serde_ok(&text));
            prop_assert_eq!(check(&text), Ok(()), "{}", text);
            let mut c = Cursor::new(&text);
            let span = c.skip().unwrap();
            prop_assert_eq!(span, 0..text.len());
        }

        /// A broken text is never accepted: whatever the cursor accepts, serde_json does too.
        #[test]
        fn never_accepts_what_serde_json_rejects(
            text in json_strategy(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, prop::sample::select(
                vec!['"', '\\', '{', '}', '[', ']', ',', ':', '1', '-', '.', 'e', 'u', 'n', ' ', '\u{1}', 'x', 'D', '8']
            )), 1..4),
        ) {
            let mut chars: Vec<char> = text.chars().collect();
            for (at, op, c) in edits {
                let i = at.index(chars.len() + 1);
                // Half the replacements hit a structural character, which random positions
                // rarely do: a bracket closed by the other kind, a comma for a colon.
                let structural: Vec<usize> =
                    (0..chars.len()).filter(|&k| "{}[],:".contains(chars[k])).collect();
                if op == 2 && !structural.is_empty() && at.index(2) == 0 {
                    let k = structural[at.index(structural.len())];
                    chars[k] = match chars[k] {
                        '{' => '[',
                        '[' => '{',
                        '}' => ']',
                        ']' => '}',
                        ',' => ':',
                        _ => ',',
                    };
                    continue;
                }
                match op {
                    0 => chars.insert(i, c),
                    1 if i < chars.len() => { chars.remove(i); }
                    _ if i < chars.len() => chars[i] = c,
                    _ => chars.push(c),
                }
            }
            let broken: String = chars.into_iter().collect();
            if check(&broken).is_ok() {
                prop_assert!(serde_ok(&broken), "accepted {:?}", broken);
            }
        }
    }
}
