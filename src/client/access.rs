//! What every request to the endpoint carries besides its body: the API key as a bearer token,
//! the `--header` lines (Azure OpenAI's `api-key`, a gateway's own headers), and the
//! certificates HTTPS trusts beyond the bundled web roots and the system's store (`--cacert`).
//! One value that the inference client, the models probe and the metrics scraper all send, so
//! no path forgets a header a gateway requires, and one [`Scrubber`] for every secret in it.

use crate::secret::{header_safe, Scrubber, Secret};
use std::fmt;

/// One `--header 'Name: value'`, its `$VAR`s expanded.
#[derive(Clone, Debug)]
pub struct Header {
    /// Lower case, as HTTP/2 writes names and as the plain-HTTP client writes its own.
    pub name: String,
    /// `Debug` prints `***`: a value may be a key.
    pub value: Secret,
    /// Replaced by `***` wherever a server's answer repeats it: a value that came from a
    /// variable, or one under a credential's name. Other values (`x-team: research`) are not,
    /// since replacing an ordinary word would change the answers.
    pub scrub: bool,
}

/// Headers the client writes itself; a `--header` naming one would send it twice or frame
/// the request wrongly.
const OWN_HEADERS: [&str; 6] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "user-agent",
];

impl Header {
    /// Parses `Name: value`, expanding `$NAME` and `${NAME}` with `var` (`$$` is a literal
    /// dollar). An unset or empty variable is an error that names it; the error never holds
    /// the value, only the header's name.
    pub fn parse(flag: &str, var: impl Fn(&str) -> Option<String>) -> Result<Header, String> {
        let Some((name, template)) = flag.split_once(':') else {
            return Err(format!(
                "--header `{}` has no `:`; write it as 'Name: value', e.g. --header 'api-key: $AZURE_OPENAI_KEY'",
                shown(flag)
            ));
        };
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() || reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!("--header: `{}` is not a header name", shown(&name)));
        }
        if OWN_HEADERS.contains(&name.as_str()) {
            return Err(format!("--header: sizeup writes `{name}` itself; leave it out"));
        }
        let (value, expanded) = expand(template.trim(), &var).map_err(|e| format!("--header `{name}`: {e}"))?;
        if !header_safe(&value) {
            return Err(format!(
                "--header `{name}`: the value holds a line break or another control character, which no HTTP header can carry"
            ));
        }
        let scrub = expanded || credential_name(&name);
        Ok(Header {
            name,
            value: Secret::new(value),
            scrub,
        })
    }
}

/// Text of a flag safe to print: cut short, since a value typed in place may be a key.
fn shown(text: &str) -> String {
    text.chars().take(40).collect()
}

/// Whether a header's name says its value is a credential.
fn credential_name(name: &str) -> bool {
    ["auth", "key", "token", "secret", "cookie", "password"]
        .iter()
        .any(|w| name.contains(w))
}

/// `template` with each `$NAME`/`${NAME}` replaced; whether any variable was.
fn expand(template: &str, var: &impl Fn(&str) -> Option<String>) -> Result<(String, bool), String> {
    let mut out = String::with_capacity(template.len());
    let mut expanded = false;
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
            let Some(end) = braced.find('}') else {
                return Err("`${` without its `}`".into());
            };
            (&braced[..end], &braced[end + 1..])
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            // Not a variable: a lone `$` stays as written.
            out.push('$');
            rest = after;
            continue;
        }
        match var(name).filter(|v| !v.is_empty()) {
            Some(v) => out.push_str(&v),
            None => {
                return Err(format!(
                    "${name} is not set (or is empty); export it, or write $$ for a literal dollar"
                ))
            }
        }
        expanded = true;
        rest = tail;
    }
    out.push_str(rest);
    Ok((out, expanded))
}

/// The key, the headers and the extra trusted certificates of one endpoint.
#[derive(Clone, Default)]
pub struct Access {
    pub key: Option<Secret>,
    pub headers: Vec<Header>,
    /// `--cacert`: trusted besides the bundled roots and the system's store.
    pub roots: Vec<reqwest::Certificate>,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("key", &self.key)
            .field("headers", &self.headers)
            .field("roots", &self.roots.len())
            .finish()
    }
}

impl Access {
    pub fn with_key(key: Option<Secret>) -> Access {
        Access {
            key,
            ..Access::default()
        }
    }

    /// Every header line a request carries, name and value: `authorization: Bearer <key>`
    /// unless a `--header` names `authorization` itself, then the `--header`s in order.
    pub fn lines(&self) -> Vec<(&str, Secret)> {
        let mut out = Vec::with_capacity(self.headers.len() + 1);
        if let Some(k) = &self.key {
            if !self.headers.iter().any(|h| h.name == "authorization") {
                out.push(("authorization", Secret::new(format!("Bearer {}", k.expose()))));
            }
        }
        out.extend(self.headers.iter().map(|h| (h.name.as_str(), h.value.clone())));
        out
    }

    /// The lines as the plain-HTTP client writes them, each ending in CRLF. None when one
    /// cannot travel in a header (the key is checked at start; headers when parsed).
    pub fn wire_lines(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for (name, value) in self.lines() {
            if !header_safe(value.expose()) {
                return None;
            }
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.expose().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Some(out)
    }

    /// `req` with every line, each marked sensitive (kept out of reqwest's own `Debug`).
    pub fn apply(&self, mut req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        for (name, value) in self.lines() {
            if let Ok(mut v) = reqwest::header::HeaderValue::from_str(value.expose()) {
                v.set_sensitive(true);
                req = req.header(name, v);
            }
        }
        req
    }

    /// A reqwest builder that trusts `--cacert` besides the built-in and system roots.
    pub fn builder(&self) -> reqwest::ClientBuilder {
        self.roots
            .iter()
            .fold(reqwest::Client::builder(), |b, c| b.add_root_certificate(c.clone()))
    }

    /// Replaces the key and every scrubbed header value in what a server sends back.
    pub fn scrubber(&self) -> Scrubber {
        let secrets: Vec<&Secret> = self
            .key
            .iter()
            .chain(self.headers.iter().filter(|h| h.scrub).map(|h| &h.value))
            .collect();
        Scrubber::of(&secrets)
    }
}

/// Reads `--cacert FILE`: one or more PEM certificates (a CA bundle).
pub fn read_cacert(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("--cacert {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("--cacert {}: not a PEM certificate: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--cacert {}: no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "AZ" => Some("k-123".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn a_header_expands_its_variables_and_scrubs_them() {
        let h = Header::parse("Api-Key: $AZ", env).unwrap();
        assert_eq!((h.name.as_str(), h.value.expose(), h.scrub), ("api-key", "k-123", true));
        let h = Header::parse("x-price: $$5 ${AZ}x", env).unwrap();
        assert_eq!((h.value.expose(), h.scrub), ("$5 k-123x", true));
        let h = Header::parse("x-team:  research ", env).unwrap();
        assert_eq!((h.value.expose(), h.scrub), ("research", false));
        let h = Header::parse("x-cost: $5 and $", env).unwrap();
        assert_eq!(h.value.expose(), "$5 and $");
        assert!(Header::parse("x-api-token: plain", env).unwrap().scrub);
        assert_eq!(format!("{h:?}").matches("***").count(), 1);
    }

    #[test]
    fn a_bad_header_names_what_is_wrong_and_never_the_value() {
        let e = Header::parse("api-key: $MISSING", env).unwrap_err();
        assert!(e.contains("$MISSING is not set"), "{e}");
        assert!(Header::parse("api-key: $EMPTY", env).unwrap_err().contains("$EMPTY"));
        assert!(Header::parse("api-key ${AZ", env).unwrap_err().contains("no `:`"));
        assert!(Header::parse("x: ${AZ", env).unwrap_err().contains("without its `}`"));
        assert!(Header::parse("bad name: v", env)
            .unwrap_err()
            .contains("not a header name"));
        assert!(Header::parse("Content-Length: 3", env).unwrap_err().contains("itself"));
        assert!(Header::parse("x: a\u{1}b", env).unwrap_err().contains("control"));
    }

    #[test]
    fn a_header_named_authorization_replaces_the_keys() {
        let mut a = Access::with_key(Some(Secret::new("sk-1")));
        let names = |a: &Access| {
            a.lines()
                .iter()
                .map(|(n, v)| format!("{n}={}", v.expose()))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&a), ["authorization=Bearer sk-1"]);
        a.headers.push(Header::parse("api-key: $AZ", env).unwrap());
        assert_eq!(names(&a), ["authorization=Bearer sk-1", "api-key=k-123"]);
        a.headers.push(Header::parse("Authorization: Basic $AZ", env).unwrap());
        assert_eq!(names(&a), ["api-key=k-123", "authorization=Basic k-123"]);
        assert_eq!(
            a.wire_lines().unwrap(),
            b"api-key: k-123\r\nauthorization: Basic k-123\r\n".to_vec()
        );
        let s = a.scrubber();
        assert_eq!(s.text("echo sk-1 k-123"), "echo *** ***");
        assert!(!format!("{a:?}").contains("k-123"));
    }
}
