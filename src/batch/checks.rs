//! The full checks of one JSON input line: the body carries what `--api` needs, the
//! openai-batch fields (`custom_id`, `method`, `url`, `body`) are there and right, and every
//! reason is one short message naming the value. Apart from the reader so that the checks,
//! which decide the exact wording of an issue, can be read (and compared with the fast path
//! in [`super::fast`]) without the line buffer and the duplicate-id state around them.

use serde_json::{Map, Value};

use crate::api::Api;

/// Longest user-provided string (id, url) quoted verbatim in a message; keeps
/// messages readable when a line holds a huge or garbage value.
const QUOTE_MAX_CHARS: usize = 80;

/// The full check of an openai-batch line: its `custom_id` and body, or why it is refused.
/// `expected_url` is the url the line's `url` must match, as given and as segments (see
/// [`url_segments`]); `None` accepts any url. Whether the id was seen before is the reader's
/// to check, after every check here passed.
pub(super) fn openai_line(
    text: &str,
    api: Api,
    expected_url: Option<&(String, Vec<String>)>,
) -> Result<(String, Map<String, Value>), String> {
    let mut obj = parse_object(text)?;
    let custom_id = match obj.remove("custom_id") {
        Some(Value::String(s)) if s.is_empty() => return Err("empty \"custom_id\"".to_string()),
        Some(Value::String(s)) => s,
        Some(other) => return Err(format!("\"custom_id\" must be a string, got {}", kind(&other))),
        None => return Err("missing \"custom_id\" string".to_string()),
    };
    match obj.get("method") {
        None => {}
        Some(Value::String(m)) if m.eq_ignore_ascii_case("POST") => {}
        Some(Value::String(m)) => return Err(format!("method {} is not POST", quote(m))),
        Some(other) => return Err(format!("\"method\" must be a string, got {}", kind(other))),
    }
    match (obj.get("url"), expected_url) {
        (None, _) | (Some(Value::String(_)), None) => {}
        (Some(Value::String(u)), Some((want, segs))) => {
            if !url_matches(u, segs) {
                return Err(format!(
                    "url {} does not match --api {} (expects {})",
                    quote(u),
                    api,
                    want
                ));
            }
        }
        (Some(other), _) => return Err(format!("\"url\" must be a string, got {}", kind(other))),
    }
    let body = match obj.remove("body") {
        Some(Value::Object(b)) => b,
        Some(other) => return Err(format!("missing \"body\" object (got {})", kind(&other))),
        None => return Err("missing \"body\" object".to_string()),
    };
    check_body(&body, api)?;
    Ok((custom_id, body))
}

/// Parses one JSON line that must be an object.
pub(super) fn parse_object(text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!("expected a JSON object, got {}", kind(&other))),
        Err(e) => Err(format!("bad JSON: {} at column {}", json_message(&e), e.column())),
    }
}

/// serde_json's message without its " at line L column C" suffix (the line is
/// always 1 here and the column is reported separately).
fn json_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    match full.rfind(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full,
    }
}

/// Checks that a request body carries what `api` needs.
pub(super) fn check_body(body: &Map<String, Value>, api: Api) -> Result<(), String> {
    match api {
        Api::Chat => match body.get("messages") {
            Some(Value::Array(a)) if a.is_empty() => Err("empty \"messages\" array".to_string()),
            Some(Value::Array(_)) => Ok(()),
            Some(other) => Err(format!("\"messages\" must be an array, got {}", kind(other))),
            None if body.contains_key("prompt") => {
                Err("body has \"prompt\" but --api chat requires a \"messages\" array".to_string())
            }
            None => Err("body has no \"messages\" array (required by --api chat)".to_string()),
        },
        Api::Completions | Api::Forefront => match body.get("prompt") {
            Some(Value::String(s)) if s.trim().is_empty() => Err("empty prompt".to_string()),
            Some(Value::Array(a)) if a.is_empty() => Err("empty prompt".to_string()),
            Some(Value::String(_) | Value::Array(_)) => Ok(()),
            Some(other) => Err(format!("\"prompt\" must be a string or array, got {}", kind(other))),
            None if body.contains_key("messages") => {
                Err(format!("body has \"messages\" but --api {api} requires \"prompt\""))
            }
            None => Err(format!("body has no \"prompt\" (required by --api {api})")),
        },
        Api::Embeddings => match body.get("input") {
            Some(Value::String(s)) if s.trim().is_empty() => Err("empty \"input\"".to_string()),
            Some(Value::Array(a)) if a.is_empty() => Err("empty \"input\" array".to_string()),
            Some(Value::String(_) | Value::Array(_)) => Ok(()),
            Some(other) => Err(format!("\"input\" must be a string or array, got {}", kind(other))),
            None => Err("body has no \"input\" (required by --api embeddings)".to_string()),
        },
    }
}

/// The path segments of a url after its last `v1` segment, so that
/// `/v1/chat/completions`, `chat/completions` and
/// `https://host/openai/v1/chat/completions?x=1` all compare equal.
pub(super) fn url_segments(url: &str) -> Vec<String> {
    segments(url).map(str::to_string).collect()
}

/// Whether `url`'s segments (see [`url_segments`]) are `want`, without allocating.
pub(super) fn url_matches(url: &str, want: &[String]) -> bool {
    segments(url).eq(want.iter().map(String::as_str))
}

fn segments(url: &str) -> impl Iterator<Item = &str> + Clone {
    let mut path = url;
    if let Some(i) = path.find("://") {
        let rest = &path[i + 3..];
        path = rest.find('/').map_or("", |j| &rest[j..]);
    }
    if let Some(i) = path.find(['?', '#']) {
        path = &path[..i];
    }
    let segs = path.split('/').filter(|s| !s.is_empty());
    let from = segs
        .clone()
        .enumerate()
        .filter(|(_, s)| *s == "v1")
        .last()
        .map_or(0, |(i, _)| i + 1);
    segs.skip(from)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Debug-quotes a user string, shortened so messages stay one readable line.
pub(super) fn quote(s: &str) -> String {
    format!("{:?}", truncate_chars(s, QUOTE_MAX_CHARS))
}

pub(super) fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::testkit::*;
    use crate::batch::{Format, Payload, ReadOptions};
    use proptest::prelude::*;

    #[test]
    fn openai_batch_line_issues() {
        let good = batch_line("g");
        let cases: Vec<(String, &str)> = vec![
            (
                r#"{"custom_id":"x","body":"#.to_string(),
                "bad JSON: EOF while parsing a value at column 24",
            ),
            (
                r#"{"custom_id" "x"}"#.to_string(),
                "bad JSON: expected `:` at column 14",
            ),
            ("[1,2]".to_string(), "expected a JSON object, got array"),
            (format!(r#"{{"body":{CHAT_BODY}}}"#), "missing \"custom_id\" string"),
            (
                format!(r#"{{"custom_id":7,"body":{CHAT_BODY}}}"#),
                "\"custom_id\" must be a string, got number",
            ),
            (
                format!(r#"{{"custom_id":"","body":{CHAT_BODY}}}"#),
                "empty \"custom_id\"",
            ),
            (r#"{"custom_id":"x"}"#.to_string(), "missing \"body\" object"),
            (
                r#"{"custom_id":"x","body":[1]}"#.to_string(),
                "missing \"body\" object (got array)",
            ),
            (
                format!(r#"{{"custom_id":"x","method":"GET","body":{CHAT_BODY}}}"#),
                "method \"GET\" is not POST",
            ),
            (
                format!(r#"{{"custom_id":"x","url":"/v1/completions","body":{CHAT_BODY}}}"#),
                "url \"/v1/completions\" does not match --api chat (expects /v1/chat/completions)",
            ),
            (
                r#"{"custom_id":"x","body":{"prompt":"p"}}"#.to_string(),
                "body has \"prompt\" but --api chat requires a \"messages\" array",
            ),
            (
                r#"{"custom_id":"x","body":{"model":"m"}}"#.to_string(),
                "body has no \"messages\" array (required by --api chat)",
            ),
            (
                r#"{"custom_id":"x","body":{"messages":[]}}"#.to_string(),
                "empty \"messages\" array",
            ),
            (
                r#"{"custom_id":"x","body":{"messages":"hi"}}"#.to_string(),
                "\"messages\" must be an array, got string",
            ),
        ];
        for (bad, want) in cases {
            // The bad line sits on line 3, between good lines and a blank one.
            let data = format!("{}\n\n{bad}\n{good}\n", batch_line("f"));
            let res = read(Format::OpenaiBatch, Api::Chat, &data);
            assert_eq!(only_issue(&res), (3, want.to_string()), "input {bad}");
            assert_eq!(ok_items(&res).len(), 2, "the lines around the bad one still parse");
        }
    }

    #[test]
    fn completions_body_issues() {
        let cases = [
            (r#"{"prompt":""}"#, "empty prompt"),
            (r#"{"prompt":"  "}"#, "empty prompt"),
            (r#"{"prompt":[]}"#, "empty prompt"),
            (r#"{"prompt":5}"#, "\"prompt\" must be a string or array, got number"),
            (
                r#"{"messages":[]}"#,
                "body has \"messages\" but --api completions requires \"prompt\"",
            ),
            (
                r#"{"model":"m"}"#,
                "body has no \"prompt\" (required by --api completions)",
            ),
            ("7", "expected a JSON object, got number"),
        ];
        for (bad, want) in cases {
            let data = format!("{{\"prompt\":\"ok\"}}\n{bad}\n");
            let res = read(Format::Jsonl, Api::Completions, &data);
            assert_eq!(only_issue(&res), (2, want.to_string()), "input {bad}");
        }
    }

    #[test]
    fn url_matching_variants() {
        let line = |url: &str| format!(r#"{{"custom_id":"x","url":{url:?},"body":{CHAT_BODY}}}"#);
        for url in [
            "/v1/chat/completions",
            "chat/completions",
            "/chat/completions/",
            "https://api.example.com/openai/v1/chat/completions?x=1",
        ] {
            let res = read(Format::OpenaiBatch, Api::Chat, &line(url));
            assert_eq!(ok_items(&res).len(), 1, "{url}: {res:?}");
        }
        for url in ["/v1/completions", "/v1/embeddings", ""] {
            let res = read(Format::OpenaiBatch, Api::Chat, &line(url));
            assert_eq!(ok_items(&res).len(), 0, "{url}");
        }
        // Forefront takes any url unless one is given explicitly.
        let ff = r#"{"custom_id":"x","url":"/anything","body":{"prompt":"p"}}"#;
        assert_eq!(ok_items(&read(Format::OpenaiBatch, Api::Forefront, ff)).len(), 1);
        let o = ReadOptions {
            expected_url: Some("/v1/forefront".into()),
            ..ReadOptions::new(Api::Forefront)
        };
        let res = read_with(Format::OpenaiBatch, o, ff.as_bytes());
        assert_eq!(
            only_issue(&res).1,
            "url \"/anything\" does not match --api forefront (expects /v1/forefront)"
        );
    }

    /// One openai-batch line from interesting parts (some parts left out).
    fn batch_line_strategy() -> impl Strategy<Value = String> {
        let id = prop::sample::select(vec!["\"a\"", "\"b\"", "\"\"", "null", "5", "\"a\\u0062\""]);
        let method = prop::sample::select(vec!["", "\"POST\"", "\"get\"", "null"]);
        let url = prop::sample::select(vec!["", "\"/v1/completions\"", "\"chat/completions\"", "3"]);
        let body = prop::sample::select(vec![
            "{\"prompt\":\"hi\"}",
            "{\"prompt\":\"  \"}",
            "{\"prompt\":[ ]}",
            "{\"prompt\":[1],\"stream\":true}",
            "{\"messages\":[]}",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"model\":null}",
            "{\"prompt\":null}",
            "{\"prompt\":\"a\",\"prompt\":\"\"}",
            "[]",
            // Escapes, a key spelled with one, whitespace, repeated and nested fields.
            " { \"prompt\" : \"a\\nb \\ud83d\\ude00\" , \"max_tokens\" : 5 , \"max_tokens\" : 6 } ",
            "{\"pro\\u006dpt\":\"x\"}",
            "{\"prompt\":\"x\",\"model\":\"m\",\"model\":\"n\"}",
            "{\"prompt\":\"\\u0020\",\"stream\":false}",
            "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"x\"}]}],\"stream\":true}",
            "{\"input\":[\"a\",\"b\"],\"logit_bias\":{\"1\":-1e2}}",
        ]);
        (id, method, url, body).prop_map(|(id, method, url, body)| {
            let mut parts = vec![format!("\"custom_id\":{id}")];
            if !method.is_empty() {
                parts.push(format!("\"method\":{method}"));
            }
            if !url.is_empty() {
                parts.push(format!("\"url\":{url}"));
            }
            parts.push(format!("\"body\":{body}"));
            format!("{{{}}}", parts.join(","))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The fast path (raw bodies) accepts exactly the lines the full check accepts, with the
        /// same ids and bodies, and reports the others with the same reasons.
        #[test]
        fn raw_bodies_agree_with_the_full_check(
            lines in proptest::collection::vec(batch_line_strategy(), 1..12),
            chat in any::<bool>(),
        ) {
            let api = if chat { Api::Chat } else { Api::Completions };
            let data = lines.join("\n");
            for format in [Format::OpenaiBatch, Format::Jsonl] {
                let full = read_with(format, opts(api), data.as_bytes());
                let raw = read_with(format, ReadOptions { raw_bodies: true, ..opts(api) }, data.as_bytes());
                prop_assert_eq!(full.len(), raw.len());
                for (f, r) in full.iter().zip(&raw) {
                    match (f, r) {
                        (Ok(f), Ok(r)) => {
                            prop_assert_eq!((&f.custom_id, f.index, f.line), (&r.custom_id, r.index, r.line));
                            let body = match &r.body {
                                Payload::Raw(b) => b.to_value(),
                                Payload::Body(v) => v.clone(),
                                other => panic!("{other:?}"),
                            };
                            prop_assert_eq!(Payload::Body(body), f.body.clone());
                        }
                        (Err(f), Err(r)) => prop_assert_eq!(f, r),
                        (f, r) => prop_assert!(false, "full {:?} raw {:?}", f, r),
                    }
                }
            }
        }
    }
}
