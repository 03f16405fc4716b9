//! API keys: read from the environment, sent as a bearer token, never shown.

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
}
