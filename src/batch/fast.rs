//! The fast path for JSON input lines: a line read in one pass by [`crate::api::scan`]'s
//! cursor, its body kept as the bytes the file holds, with no JSON tree built. It accepts only lines the full check
//! in `batch::checks` accepts too, and says nothing about the others: for any line it does
//! not accept, the reader runs the full check, which gives the exact reason.

use std::borrow::Cow;
use std::ops::Range;

use crate::api::scan::{once, Cursor, Scan, Unsure};
use crate::api::Api;

/// A request body as the file has it, checked for `--api`.
#[derive(Debug, Clone)]
pub struct RawBody {
    /// One JSON object, checked (by [`crate::api::scan`]), without whitespace around it.
    pub json: Box<str>,
    /// The body names a `model` (any value).
    pub has_model: bool,
    /// The body asks for a stream (`"stream": true`).
    pub stream: bool,
}

impl PartialEq for RawBody {
    fn eq(&self, other: &Self) -> bool {
        self.json == other.json
    }
}

impl RawBody {
    /// The body as a JSON tree.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.json).unwrap_or_default()
    }

    /// The bytes to send: the body as given (not copied), with `"model": model` first when
    /// it names none.
    pub fn into_request(self, model: Option<&str>) -> Vec<u8> {
        let Some(m) = model.filter(|_| !self.has_model) else {
            return self.json.into_boxed_bytes().into_vec();
        };
        let text = &*self.json;
        let rest = text[1..].trim_start();
        let mut out = Vec::with_capacity(text.len() + m.len() + 12);
        out.extend_from_slice(b"{\"model\":");
        serde_json::to_writer(&mut out, m).expect("a string serializes");
        if !rest.starts_with('}') {
            out.push(b',');
        }
        out.extend_from_slice(rest.as_bytes());
        out
    }
}

/// An openai-batch line that passes every check but the duplicate-id one: its id and body.
/// `url_ok` decides the `url` (a string); None: the full check decides.
pub(super) fn openai_line<'a>(
    text: &'a str,
    api: Api,
    mut url_ok: impl FnMut(&str) -> bool,
) -> Option<(Cow<'a, str>, RawBody)> {
    let mut c = Cursor::new(text);
    let (mut id, mut method, mut url, mut body) = (None, None, None, None);
    c.object(|c, key| match key {
        "custom_id" => once(&mut id, c.string()?),
        "method" => {
            if !c.string()?.eq_ignore_ascii_case("POST") {
                return Err(Unsure);
            }
            once(&mut method, ())
        }
        "url" => {
            if !url_ok(&c.string()?) {
                return Err(Unsure);
            }
            once(&mut url, ())
        }
        "body" => once(&mut body, read_body(c, api)?),
        _ => c.skip().map(drop),
    })
    .ok()?;
    c.end().ok()?;
    let id = id.filter(|id| !id.is_empty())?;
    Some((id, body?))
}

/// A jsonl line (the whole line is the body) that passes every check.
pub(super) fn jsonl_line(text: &str, api: Api) -> Option<RawBody> {
    let mut c = Cursor::new(text);
    let body = read_body(&mut c, api).ok()?;
    c.end().ok()?;
    Some(body)
}

/// The body checks of the full path, for a body that surely passes them.
fn read_body(c: &mut Cursor<'_>, api: Api) -> Scan<RawBody> {
    let text = c.text();
    let start = c.value_start();
    let [mut prompt, mut messages, mut input, mut model, mut stream]: [Option<Range<usize>>; 5] = Default::default();
    c.object(|c, key| {
        let slot = match key {
            "prompt" => &mut prompt,
            "messages" => &mut messages,
            "input" => &mut input,
            "model" => &mut model,
            "stream" => &mut stream,
            _ => return c.skip().map(drop),
        };
        once(slot, c.skip()?)
    })?;
    let value = |span: &Option<Range<usize>>| span.clone().map(|s| &text[s]);
    let ok = match api {
        Api::Chat => value(&messages).is_some_and(non_empty_array),
        Api::Completions | Api::Forefront => value(&prompt).is_some_and(text_or_array),
        Api::Embeddings => value(&input).is_some_and(text_or_array),
    };
    if !ok {
        return Err(Unsure);
    }
    Ok(RawBody {
        json: text[start..c.pos()].into(),
        has_model: model.is_some(),
        stream: value(&stream) == Some("true"),
    })
}

/// A checked JSON value that is a string: its content; None for any other value.
fn string(value: &str) -> Option<Cow<'_, str>> {
    Cursor::new(value).string().ok()
}

/// A checked JSON value that is an array with at least one element.
fn non_empty_array(value: &str) -> bool {
    value
        .strip_prefix('[')
        .is_some_and(|rest| !rest.trim_start().starts_with(']'))
}

/// A non-blank string or a non-empty array (what `prompt` and `input` accept).
fn text_or_array(value: &str) -> bool {
    non_empty_array(value) || string(value).is_some_and(|s| !s.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any_url(_: &str) -> bool {
        true
    }

    #[test]
    fn accepts_only_what_is_surely_valid() {
        let ok =
            r#"{"custom_id":"a\u0062","method":"post","url":"/v1/completions","body":{"prompt":"hi","stream":true}}"#;
        let (id, body) = openai_line(ok, Api::Completions, any_url).expect("valid");
        assert_eq!(id, "ab");
        assert!(body.stream && !body.has_model);
        for bad in [
            r#"{"custom_id":"","body":{"prompt":"hi"}}"#,
            r#"{"custom_id":null,"body":{"prompt":"hi"}}"#,
            r#"{"custom_id":"a","method":null,"body":{"prompt":"hi"}}"#,
            r#"{"custom_id":"a","method":"GET","body":{"prompt":"hi"}}"#,
            r#"{"custom_id":"a","url":7,"body":{"prompt":"hi"}}"#,
            r#"{"custom_id":"a","body":{"prompt":"  "}}"#,
            r#"{"custom_id":"a","body":{"prompt":[ ]}}"#,
            r#"{"custom_id":"a","body":{"prompt":null}}"#,
            r#"{"custom_id":"a","body":{"messages":[1]}}"#,
            r#"{"custom_id":"a","body":[{"prompt":"hi"}]}"#,
            r#"{"custom_id":"a","custom_id":"b","body":{"prompt":"hi"}}"#,
            r#"{"custom_id":"a","body":{"prompt":"hi","prompt":""}}"#,
        ] {
            assert!(openai_line(bad, Api::Completions, any_url).is_none(), "{bad}");
        }
        assert!(openai_line(ok, Api::Completions, |u| u == "/v1/chat").is_none());
        assert!(jsonl_line(r#"{"messages":[{"role":"user","content":"x"}]}"#, Api::Chat).is_some());
        assert!(jsonl_line(r#"{"messages":[]}"#, Api::Chat).is_none());
        assert!(jsonl_line(r#"{"input":["a"]}"#, Api::Embeddings).is_some());
    }

    #[test]
    fn the_model_is_added_first_when_missing() {
        let body = jsonl_line(r#"{ "prompt" : "hi" }"#, Api::Completions).unwrap();
        let sent = body.clone().into_request(Some("m\"1"));
        let v: serde_json::Value = serde_json::from_slice(&sent).unwrap();
        assert_eq!(v, serde_json::json!({"model": "m\"1", "prompt": "hi"}));
        assert_eq!(body.clone().into_request(None), br#"{ "prompt" : "hi" }"#);
        let named = jsonl_line(r#"{"prompt":"hi","model":"x"}"#, Api::Completions).unwrap();
        assert_eq!(named.into_request(Some("m")), br#"{"prompt":"hi","model":"x"}"#);
    }
}
