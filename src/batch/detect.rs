//! Which API a batch file speaks, from the file itself: an OpenAI Batch line's `url`, else the
//! body's shape (`messages`, `prompt`, `input`). One endpoint per file, as OpenAI's Batch API
//! requires: lines that disagree are named.

use super::format::Format;
use crate::api::scan::{Cursor, Unsure};
use crate::api::Api;
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::borrow::Cow;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// What the file says.
#[derive(Debug, PartialEq)]
pub enum Detected {
    /// Every line that names an API names this one.
    One(Api),
    /// Nothing names an API (text or CSV prompts, or bodies of no known shape).
    Unknown,
}

/// The fields of a line that tell its API; everything else is skipped unparsed.
#[derive(Deserialize)]
struct Probe<'a> {
    /// Borrowed from the line unless it has escapes: no allocation per line.
    #[serde(borrow)]
    url: Option<std::borrow::Cow<'a, str>>,
    body: Option<Shape>,
    messages: Option<IgnoredAny>,
    prompt: Option<IgnoredAny>,
    input: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Shape {
    messages: Option<IgnoredAny>,
    prompt: Option<IgnoredAny>,
    input: Option<IgnoredAny>,
}

fn api_of_shape(messages: bool, prompt: bool, input: bool) -> Option<Api> {
    match (messages, prompt, input) {
        (true, _, _) => Some(Api::Chat),
        (false, true, _) => Some(Api::Completions),
        (false, false, true) => Some(Api::Embeddings),
        _ => None,
    }
}

fn api_of_line(line: &[u8]) -> Option<Api> {
    // An OpenAI Batch line names its API in `url`, mostly before the body: read up to there
    // only. (A line broken after its url, or with a body that is no object, so names that
    // url's API here; the validation pass rejects such lines anyway.)
    if let Some(api) = top_level_url(line).as_deref().and_then(Api::of_route) {
        return Some(api);
    }
    let p: Probe = serde_json::from_slice(line).ok()?;
    if let Some(api) = p.url.as_deref().and_then(Api::of_route) {
        return Some(api);
    }
    match p.body {
        Some(b) => api_of_shape(b.messages.is_some(), b.prompt.is_some(), b.input.is_some()),
        None => api_of_shape(p.messages.is_some(), p.prompt.is_some(), p.input.is_some()),
    }
}

/// The top-level `"url"` string of a JSON object line, found without reading past it: the
/// fields before it are checked and skipped, nothing after it is read. None when there is no
/// such url, or when the line before it is anything the scan cursor is unsure of: the full
/// probe decides those lines.
fn top_level_url(line: &[u8]) -> Option<Cow<'_, str>> {
    let mut c = Cursor::new(std::str::from_utf8(line).ok()?);
    let mut url = None;
    // The walk ends at the url (an `Err` on purpose) or at the first thing it cannot vouch for.
    let _ = c.object(|c, key| {
        if key == "url" {
            url = Some(c.string()?);
            return Err(Unsure);
        }
        c.skip().map(drop)
    });
    url
}

/// Lines per API, the first few of each, for the error that names them.
const NAMED: usize = 5;

/// Reads a JSONL-shaped input once and returns the API its lines name. `Err` names the lines
/// when they disagree, starting with the first line that departs from the majority (`N: ...`). Text and CSV prompts name none.
pub fn detect_api(src: impl Read, format: Format) -> Result<Detected, String> {
    if matches!(format, Format::Csv | Format::Text) {
        return Ok(Detected::Unknown);
    }
    // (api, how many lines, the first few line numbers)
    let mut seen: Vec<(Api, u64, Vec<u64>)> = Vec::new();
    let mut reader = BufReader::with_capacity(256 * 1024, src);
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            // The reader proper reports unreadable input with its line.
            Err(_) => break,
        }
        line_no += 1;
        let Some(api) = api_of_line(&buf) else { continue };
        match seen.iter_mut().find(|(a, _, _)| *a == api) {
            Some((_, n, lines)) => {
                *n += 1;
                if lines.len() < NAMED {
                    lines.push(line_no);
                }
            }
            None => seen.push((api, 1, vec![line_no])),
        }
    }
    match seen.len() {
        0 => Ok(Detected::Unknown),
        1 => Ok(Detected::One(seen[0].0)),
        _ => {
            seen.sort_by_key(|(_, n, _)| std::cmp::Reverse(*n));
            let parts: Vec<String> = seen
                .iter()
                .map(|(api, n, lines)| {
                    let list: Vec<String> = lines.iter().map(u64::to_string).collect();
                    let more = if *n > lines.len() as u64 { ", ..." } else { "" };
                    format!("{n} line(s) for {} (lines {}{more})", api.path(), list.join(", "))
                })
                .collect();
            // The first line of the smaller groups: where the file departs from its majority.
            let first_odd = seen[1..].iter().map(|(_, _, l)| l[0]).min().unwrap_or(0);
            Err(format!(
                "{first_odd}: the input mixes APIs: {}; one file must use one endpoint (as OpenAI's Batch API requires)",
                parts.join("; ")
            ))
        }
    }
}

/// [`detect_api`] on a file; the format detected as the reader would.
pub fn detect_api_in(path: &Path, format: Option<Format>) -> Result<Detected, String> {
    let (mut file, _) = super::compress::open_read(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut head = vec![0u8; 64 * 1024];
    let n = read_up_to(&mut file, &mut head).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    head.truncate(n);
    let format = format.unwrap_or_else(|| Format::detect(&super::compress::strip_ext(path), &head));
    detect_api(std::io::Cursor::new(head).chain(file), format)
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(text: &str) -> Result<Detected, String> {
        detect_api(text.as_bytes(), Format::OpenaiBatch)
    }

    fn value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            any::<String>().prop_map(serde_json::Value::from),
            "[a-z\"\\\\/ ]{0,6}".prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(prop_oneof![Just("url".to_string()), "[a-z\"]{0,4}"], inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// The scan finds the url a JSON parser finds at the top of the line, and no other:
        /// not one nested in the body or in a string.
        #[test]
        fn top_level_url_is_the_parsers(
            fields in proptest::collection::vec((prop_oneof_keys(), value()), 0..5),
            url in proptest::option::of(prop_oneof_urls()),
            at in 0usize..5,
            pretty in proptest::bool::ANY,
        ) {
            let mut obj = serde_json::Map::new();
            for (i, (k, v)) in fields.into_iter().enumerate() {
                if i == at {
                    if let Some(u) = &url {
                        obj.insert("url".into(), u.clone());
                    }
                }
                obj.entry(k).or_insert(v);
            }
            if at >= obj.len() {
                if let Some(u) = &url {
                    obj.entry("url").or_insert(u.clone());
                }
            }
            let v = serde_json::Value::Object(obj);
            let line = if pretty { serde_json::to_string_pretty(&v) } else { serde_json::to_string(&v) }.unwrap();
            let want = v.get("url").and_then(|u| u.as_str());
            let got = top_level_url(line.as_bytes());
            let got = got.as_deref();
            // Never another url than the parser's; and it is found unless a key has escapes
            // (one could spell `url`: the full probe decides those lines).
            if got.is_some() || v.as_object().unwrap().keys().all(|k| !serde_json::to_string(k).unwrap().contains('\\')) {
                proptest::prop_assert_eq!(got, want, "{}", line);
            }
        }
    }

    fn prop_oneof_keys() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            Just("custom_id".to_string()),
            Just("body".to_string()),
            Just("method".to_string()),
            "[a-z\"\\\\]{0,5}"
        ]
    }

    fn prop_oneof_urls() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        prop_oneof![
            Just(serde_json::Value::from("/v1/chat/completions")),
            "[a-z/\"\\\\]{0,12}".prop_map(serde_json::Value::from),
            Just(serde_json::Value::from(7)),
            Just(serde_json::json!({"url": "/v1/embeddings"})),
        ]
    }

    #[test]
    fn url_then_shape() {
        let chat =
            r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}"#;
        assert_eq!(detect(&format!("{chat}\n{chat}\n")), Ok(Detected::One(Api::Chat)));
        let emb = r#"{"custom_id":"a","url":"/v1/embeddings","body":{"input":"x"}}"#;
        assert_eq!(detect(emb), Ok(Detected::One(Api::Embeddings)));
        // No url: the body's shape; plain JSONL bodies too.
        assert_eq!(
            detect(r#"{"custom_id":"a","body":{"prompt":"x"}}"#),
            Ok(Detected::One(Api::Completions))
        );
        assert_eq!(
            detect_api(r#"{"input":["a","b"]}"#.as_bytes(), Format::Jsonl),
            Ok(Detected::One(Api::Embeddings))
        );
        assert_eq!(detect_api("hello\n".as_bytes(), Format::Text), Ok(Detected::Unknown));
        assert_eq!(detect("{}\n\nnot json\n"), Ok(Detected::Unknown));
        assert_eq!(
            Api::of_route("https://x/openai/v1/chat/completions?v=1"),
            Some(Api::Chat)
        );
        assert_eq!(Api::of_route("/v1/forefront"), None);
    }

    #[test]
    fn mixed_lines_are_named() {
        let chat = r#"{"custom_id":"a","url":"/v1/chat/completions","body":{"messages":[]}}"#;
        let comp = r#"{"custom_id":"b","url":"/v1/completions","body":{"prompt":"x"}}"#;
        let text = [chat, chat, comp, chat].join("\n");
        let err = detect(&text).unwrap_err();
        assert!(err.starts_with("3: "), "{err}");
        assert!(
            err.contains("3 line(s) for /v1/chat/completions (lines 1, 2, 4)"),
            "{err}"
        );
        assert!(err.contains("1 line(s) for /v1/completions (lines 3)"), "{err}");
    }
}
