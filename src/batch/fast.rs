//! The fast path for JSON input lines: a line read through small borrowed views, its body kept
//! as the bytes the file holds, with no JSON tree built. It accepts only lines the full check
//! in [`super::reader`] accepts too, and says nothing about the others: for any line it does
//! not accept, the reader runs the full check, which gives the exact reason.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::reader::Api;

/// A request body as the file has it, checked for `--api`.
#[derive(Debug, Clone)]
pub struct RawBody {
    pub json: Box<RawValue>,
    /// The body names a `model` (any value).
    pub has_model: bool,
    /// The body asks for a stream (`"stream": true`).
    pub stream: bool,
}

impl PartialEq for RawBody {
    fn eq(&self, other: &Self) -> bool {
        self.json.get() == other.json.get()
    }
}

impl RawBody {
    /// The body as a JSON tree.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.json.get()).unwrap_or_default()
    }

    /// The bytes to send: the body as given, with `"model": model` first when it names none.
    pub fn to_request(&self, model: Option<&str>) -> Vec<u8> {
        let text = self.json.get();
        let Some(m) = model.filter(|_| !self.has_model) else {
            return text.as_bytes().to_vec();
        };
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

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    custom_id: Cow<'a, str>,
    #[serde(borrow, default, deserialize_with = "present")]
    method: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    url: Option<&'a RawValue>,
    #[serde(borrow)]
    body: &'a RawValue,
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    prompt: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    messages: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    input: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    model: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    stream: Option<&'a RawValue>,
}

/// A field that is there, `null` included (a plain `Option` reads `null` as absent).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// An openai-batch line that passes every check but the duplicate-id one: its id and body.
/// `url_ok` decides the `url` (a string); None: the full check decides.
pub fn openai_line<'a>(
    text: &'a str,
    api: Api,
    mut url_ok: impl FnMut(&str) -> bool,
) -> Option<(Cow<'a, str>, RawBody)> {
    let line: Line = serde_json::from_str(text).ok()?;
    if line.custom_id.is_empty() {
        return None;
    }
    if let Some(m) = line.method {
        if !string(m)?.eq_ignore_ascii_case("POST") {
            return None;
        }
    }
    if let Some(u) = line.url {
        if !url_ok(&string(u)?) {
            return None;
        }
    }
    let body = body(line.body, api)?;
    Some((line.custom_id, body))
}

/// A jsonl line (the whole line is the body) that passes every check.
pub fn jsonl_line(text: &str, api: Api) -> Option<RawBody> {
    let raw: &RawValue = serde_json::from_str(text).ok()?;
    body(raw, api)
}

/// The body checks of the full path, for a body that surely passes them.
fn body(raw: &RawValue, api: Api) -> Option<RawBody> {
    if !raw.get().starts_with('{') {
        return None;
    }
    let f: Fields = serde_json::from_str(raw.get()).ok()?;
    let ok = match api {
        Api::Chat => f.messages.is_some_and(non_empty_array),
        Api::Completions | Api::Forefront => f.prompt.is_some_and(text_or_array),
        Api::Embeddings => f.input.is_some_and(text_or_array),
    };
    ok.then(|| RawBody {
        json: raw.to_owned(),
        has_model: f.model.is_some(),
        stream: f.stream.is_some_and(|s| s.get() == "true"),
    })
}

/// A JSON string's value; None for any other value.
fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if !text.starts_with('"') {
        return None;
    }
    // A valid JSON string without escapes is its own content between the quotes.
    if !text.contains('\\') {
        return Some(Cow::Borrowed(&text[1..text.len() - 1]));
    }
    serde_json::from_str(text).ok()
}

fn non_empty_array(raw: &RawValue) -> bool {
    raw.get()
        .strip_prefix('[')
        .is_some_and(|rest| !rest.trim_start().starts_with(']'))
}

/// A non-blank string or a non-empty array (what `prompt` and `input` accept).
fn text_or_array(raw: &RawValue) -> bool {
    non_empty_array(raw) || string(raw).is_some_and(|s| !s.trim().is_empty())
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
        let sent = body.to_request(Some("m\"1"));
        let v: serde_json::Value = serde_json::from_slice(&sent).unwrap();
        assert_eq!(v, serde_json::json!({"model": "m\"1", "prompt": "hi"}));
        assert_eq!(body.to_request(None), br#"{ "prompt" : "hi" }"#);
        let named = jsonl_line(r#"{"prompt":"hi","model":"x"}"#, Api::Completions).unwrap();
        assert_eq!(named.to_request(Some("m")), br#"{"prompt":"hi","model":"x"}"#);
    }
}
