//! API keys: read from the environment, sent as a bearer token, never shown, and scrubbed
//! ([`Scrubber`]) from what a server sends back, since a server may echo the request's
//! `Authorization` header in its answer.

use memchr::memmem::Finder;
use serde::de::IgnoredAny;
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

/// An API key. `Debug` and `Display` print `***`, so a key can never leak through a log line,
/// an error message or a `{:?}` of a settings struct that holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The raw value, for the one place that needs it: the `Authorization` header.
    /// Whether the key can travel in an HTTP header (see [`header_safe`]): a key pasted with
    /// its trailing newline would otherwise fail every request.
    pub fn is_header_safe(&self) -> bool {
        header_safe(&self.0)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What an HTTP header value may hold, as `HeaderValue::from_str` checks it: no control byte
/// but tab. The one check for the key at start and for each line the plain-http client writes.
pub fn header_safe(text: &str) -> bool {
    text.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// The environment variables an API key is read from, in order of preference.
pub const KEY_VARS: [&str; 2] = ["SIZEUP_API_KEY", "OPENAI_API_KEY"];

/// The key from the environment and the name of the variable it came from.
/// An empty variable counts as unset.
pub fn api_key_from_env() -> Option<(Secret, &'static str)> {
    KEY_VARS.iter().find_map(|name| match std::env::var(name) {
        Ok(v) if !v.is_empty() => Some((Secret::new(v), *name)),
        _ => None,
    })
}

/// Writes `***` in place of the API key in text a server sent: a misbehaving server, a proxy or
/// a debugging echo endpoint may copy the request's `Authorization: Bearer <key>` into its
/// answer, and answers are written to output files, reports and stderr. Built once per client
/// (the needles are precomputed), so an answer costs one `memmem` scan per form of the key, and
/// nothing when there is no key. Text without the key comes back borrowed, unchanged.
#[derive(Clone, Default)]
pub struct Scrubber {
    /// The key as it can stand in an answer: its bytes, and as JSON writes it inside a string
    /// (`"` and `\` escaped, control characters as `\t`..., and `/` as `\/`, as some
    /// serializers do), each form once. Empty without a key.
    forms: Vec<Finder<'static>>,
}

/// What stands in an answer in place of the key.
pub const SCRUBBED: &str = "***";

impl Scrubber {
    pub fn new(key: Option<&Secret>) -> Scrubber {
        Scrubber::of(&key.into_iter().collect::<Vec<_>>())
    }

    /// Scrubs each of several secrets: the key and the `--header` values that are credentials.
    pub fn of(secrets: &[&Secret]) -> Scrubber {
        let mut forms: Vec<String> = Vec::new();
        // An empty key would match everywhere; it is never sent either (see `api_key_from_env`).
        for key in secrets.iter().map(|s| s.expose()).filter(|k| !k.is_empty()) {
            let quoted = serde_json::to_string(key).expect("a string serializes");
            let escaped = quoted[1..quoted.len() - 1].to_string();
            let slashed = escaped.replace('/', "\\/");
            for form in [key.to_string(), escaped, slashed] {
                if !forms.contains(&form) {
                    forms.push(form);
                }
            }
        }
        // The longest first: a secret that holds another is replaced whole.
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        Scrubber {
            forms: forms.iter().map(|f| Finder::new(f.as_bytes()).into_owned()).collect(),
        }
    }

    /// Whether any form of the key is in `text`.
    pub fn found(&self, text: &[u8]) -> bool {
        self.forms.iter().any(|f| f.find(text).is_some())
    }

    /// `text` with every form of the key replaced by `***`: for text that is not JSON (an
    /// error message, a page, a JSON string's decoded value).
    pub fn text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for form in &self.forms {
            if let Some(clean) = replace(form, &out) {
                out = Cow::Owned(clean);
            }
        }
        out
    }

    /// [`Scrubber::text`] for an owned string: the same string back when the key is not in it.
    pub fn text_string(&self, text: String) -> String {
        match self.text(&text) {
            Cow::Owned(clean) => clean,
            Cow::Borrowed(_) => text,
        }
    }

    /// A JSON text with the key replaced by `***` in its strings, still the same JSON apart
    /// from that. The key is replaced where it stands, keeping the text as the server wrote it;
    /// where that would break the JSON (a key that is also a literal, a number or part of an
    /// escape), the strings of the parsed tree are scrubbed and the tree written anew. Text that
    /// is not JSON is scrubbed as [`Scrubber::text`].
    pub fn json<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !self.found(text.as_bytes()) {
            return Cow::Borrowed(text);
        }
        let replaced = self.text(text);
        // `***` is no JSON token: a replacement outside a string, or inside an escape, makes
        // the text fail to parse, so parsing tells whether every replacement fell in a string.
        if serde_json::from_str::<IgnoredAny>(&replaced).is_ok() {
            return replaced;
        }
        match serde_json::from_str::<Value>(text) {
            Ok(mut tree) => {
                self.value(&mut tree);
                Cow::Owned(tree.to_string())
            }
            Err(_) => replaced,
        }
    }

    /// [`Scrubber::json`] for an owned string: the same string back when the key is not in it.
    pub fn json_string(&self, text: String) -> String {
        match self.json(&text) {
            Cow::Owned(clean) => clean,
            Cow::Borrowed(_) => text,
        }
    }

    /// Every string of a JSON tree scrubbed, object keys included.
    pub fn value(&self, v: &mut Value) {
        match v {
            Value::String(s) => *s = self.text_string(std::mem::take(s)),
            Value::Array(items) => items.iter_mut().for_each(|item| self.value(item)),
            Value::Object(fields) => {
                *fields = std::mem::take(fields)
                    .into_iter()
                    .map(|(k, mut item)| {
                        self.value(&mut item);
                        (self.text_string(k), item)
                    })
                    .collect();
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

/// `text` with each match of `form` replaced by `***`; None when there is none. Matches start
/// and end on character boundaries, since `form` is itself whole UTF-8.
fn replace(form: &Finder<'_>, text: &str) -> Option<String> {
    let mut at = form.find_iter(text.as_bytes()).peekable();
    at.peek()?;
    let mut out = String::with_capacity(text.len());
    let mut done = 0;
    for start in at {
        out.push_str(&text[done..start]);
        out.push_str(SCRUBBED);
        done = start + form.needle().len();
    }
    out.push_str(&text[done..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("sk-live-123");
        assert_eq!(format!("{s}"), "***");
        assert!(!format!("{s:?}").contains("sk-live"));
        assert_eq!(s.expose(), "sk-live-123");
    }

    #[test]
    fn a_pasted_newline_is_not_header_safe() {
        assert!(Secret::new("sk-live-123").is_header_safe());
        assert!(Secret::new("a b\tc").is_header_safe());
        for bad in ["sk-live-123\n", "sk\r\nX-Evil: 1", "sk\u{7f}", "sk\0"] {
            assert!(!Secret::new(bad).is_header_safe(), "{bad:?}");
        }
    }

    fn scrubber(key: &str) -> Scrubber {
        Scrubber::new(Some(&Secret::new(key)))
    }

    #[test]
    fn the_key_is_replaced_wherever_it_stands() {
        let s = scrubber("sk-live-123");
        assert_eq!(s.text("sk-live-123 at start"), "*** at start");
        assert_eq!(s.text("Authorization: Bearer sk-live-123"), "Authorization: Bearer ***");
        assert_eq!(s.text("a sk-live-123 b"), "a *** b");
        assert_eq!(s.text("sk-live-123sk-live-123, sk-live-123"), "******, ***");
        assert_eq!(s.text("sk-live-12 and sk-live-1234"), "sk-live-12 and ***4");
        let body = r#"{"error":{"message":"bad header Authorization: Bearer sk-live-123"}}"#;
        assert_eq!(
            s.json(body),
            r#"{"error":{"message":"bad header Authorization: Bearer ***"}}"#
        );
        assert_eq!(s.text("é sk-live-123 ü"), "é *** ü");
    }

    #[test]
    fn text_without_the_key_comes_back_borrowed() {
        let s = scrubber("sk-live-123");
        for text in ["", "no key here", "sk-live-12"] {
            assert!(matches!(s.text(text), Cow::Borrowed(t) if t == text));
            assert!(matches!(s.json(text), Cow::Borrowed(t) if t == text));
        }
        let owned = String::from("{\"a\":1}");
        let ptr = owned.as_ptr();
        let back = s.json_string(owned);
        assert_eq!(back.as_ptr(), ptr, "the same allocation back");
        // No key (or an empty one): nothing to look for, everything borrowed.
        for none in [Scrubber::new(None), scrubber("")] {
            assert!(none.forms.is_empty());
            assert!(matches!(none.text("Bearer x"), Cow::Borrowed(_)));
            assert!(!none.found(b"anything"));
        }
    }

    #[test]
    fn the_json_escaped_forms_are_replaced_too() {
        let key = r#"k"e\y/1"#;
        let s = scrubber(key);
        assert_eq!(s.forms.len(), 3);
        // As serde_json writes it, and with `/` escaped as PHP's json_encode does.
        let echoed = serde_json::json!({"error": {"message": format!("Bearer {key}")}}).to_string();
        assert!(!echoed.contains(key));
        let clean = s.json(&echoed);
        assert_eq!(clean, r#"{"error":{"message":"Bearer ***"}}"#);
        let slashed = echoed.replace('/', "\\/");
        assert_eq!(s.json(&slashed), r#"{"error":{"message":"Bearer ***"}}"#);
        // The decoded value of a string, as an error message carries it.
        assert_eq!(s.text(&format!("HTTP 400: Bearer {key}.")), "HTTP 400: Bearer ***.");
    }

    #[test]
    fn a_key_that_is_also_json_syntax_leaves_the_json_whole() {
        // Replaced where it stands, `"error":null` would become `"error":***`.
        let s = scrubber("null");
        let clean = s.json(r#"{"error":null,"echo":"Bearer null"}"#);
        let v: Value = serde_json::from_str(&clean).unwrap();
        assert_eq!(v, serde_json::json!({"error": null, "echo": "Bearer ***"}));
        // An escape that contains the key's bytes (`\n`): the decoded strings are scrubbed.
        let s = scrubber("n");
        let v: Value = serde_json::from_str(&s.json(r#"{"a\nb":"n"}"#)).unwrap();
        assert_eq!(v, serde_json::json!({"a\nb": "***"}));
        // Not JSON at all: replaced as text.
        assert_eq!(scrubber("sk-1").json("<html>sk-1</html>"), "<html>***</html>");
    }
}
