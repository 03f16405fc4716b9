//! Reading a whole (not streamed) answer into a [`Success`] or [`Failure`]: the error answer
//! of a non-2xx status, `Retry-After`, usage (read in one pass for the common answer, else from
//! the JSON tree, else from llama.cpp's `timings`), the generated text when no usage came, and
//! the checks (UTF-8, JSON, an error inside a 2xx). Pure functions of the answer's bytes; the
//! stream reader (`stream.rs`) takes its usage readers from here.

use super::outcome::{decode_failure, error_kind, error_message, FailKind, Failure, Success, Usage};
use crate::api::scan::{once, Cursor, Scan, Unsure};
use crate::api::JsonText;
use crate::secret::Scrubber;
use serde_json::Value;
use std::time::Duration;

/// The failure of an answer with a non-2xx `status`: its class, and a message from the error
/// body (in any server's dialect) or the body's first bytes. The key is scrubbed from the whole
/// body first, so neither the body kept nor the message (cut from it) holds it, or a piece of it.
pub(super) fn http_failure(status: u16, retry_after: Option<Duration>, bytes: &[u8], scrubber: &Scrubber) -> Failure {
    let text = String::from_utf8_lossy(bytes);
    // Only a body that was UTF-8 (borrowed) can be JSON; a lossy copy is read as text alone.
    let utf8 = matches!(text, std::borrow::Cow::Borrowed(_));
    let text = scrubber.json(&text);
    let body: Option<Value> = if utf8 { serde_json::from_str(&text).ok() } else { None };
    let detail = body.as_ref().and_then(error_message).unwrap_or_else(|| {
        let end = (0..=text.len().min(300))
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text[..end].trim().to_string()
    });
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let message = if detail.is_empty() {
        format!("HTTP {status} {reason}")
    } else {
        format!("HTTP {status} {reason}: {detail}")
    };
    Failure {
        kind: FailKind::Http(status),
        message,
        retry_after,
        body,
    }
}

/// A whole 2xx answer: usage (exact, or estimated from the text), an error inside it, and the
/// body when `keep_body`.
pub(super) fn whole_answer(
    bytes: Vec<u8>,
    status: u16,
    request_id: Option<String>,
    keep_body: bool,
    scrubber: &Scrubber,
) -> Result<Success, Failure> {
    // UTF-8 is checked once for the whole answer, so the parsers below read it as text and
    // do not check each string again.
    let text = String::from_utf8(bytes).map_err(|_| decode_failure("answer is not UTF-8".into()))?;
    // Scrubbed before anything reads it: the body kept, an error's message and its tree all
    // come from this text. One scan, and the same string back, when the key is not in it.
    let text = scrubber.json_string(text);
    // The common answer (usage, no error) is read through a small typed view and kept as
    // the text it came in: no JSON tree is built, cloned or re-serialized per request.
    // An answer that reports cached prompt tokens is read whole (the typed view reads two
    // counts): OpenAI's always do, vLLM's with --enable-prompt-tokens-details.
    let details = memchr::memmem::find(text.as_bytes(), b"\"cached_tokens\"").is_some();
    let peeked = (!details)
        .then(|| peek_usage(&text))
        .flatten()
        // An embedding's usage has prompt tokens only: it generates none.
        .and_then(|(prompt, completion)| Some((prompt, completion.or(prompt.map(|_| 0))?)));
    if let Some((prompt_tokens, completion)) = peeked {
        // `peek_usage` above checked this same text whole: no second parse to keep it.
        let body = keep_body.then(|| JsonText::parsed(text));
        let usage = Usage {
            prompt_tokens,
            completion_tokens: completion,
            estimated: false,
            cached_tokens: None,
        };
        return Ok(Success {
            status,
            usage,
            content_events: 0,
            body,
            request_id,
        });
    }
    let body: Value = serde_json::from_str(&text).map_err(|e| decode_failure(format!("answer is not JSON: {e}")))?;
    if let Some(msg) = body
        .get("error")
        .filter(|e| !e.is_null())
        .and_then(|_| error_message(&body))
    {
        return Err(Failure {
            kind: error_kind(&body),
            message: format!("error in a {status} answer: {msg}"),
            retry_after: None,
            body: Some(body),
        });
    }
    let usage = usage_of(&body).unwrap_or_else(|| Usage {
        prompt_tokens: None,
        completion_tokens: answer_text(&body).map_or(0, |t| t.split_whitespace().count() as u64),
        estimated: true,
        cached_tokens: None,
    });
    Ok(Success {
        status,
        usage,
        content_events: 0,
        body: if keep_body {
            Some(JsonText::from_value(&body))
        } else {
            None
        },
        request_id,
    })
}

/// `Retry-After` as seconds or an HTTP date.
pub(super) fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// `usage`'s prompt and completion tokens of an answer that is one JSON object with a `usage`
/// object and no `error` (or a null one); None for any other answer, which the caller then
/// reads whole. The scan cursor reads it in one pass; where it is unsure, serde_json's typed
/// view [`Peek`] decides, so the result is always `Peek`'s.
fn peek_usage(text: &str) -> Option<(Option<u64>, Option<u64>)> {
    scan_usage(text).unwrap_or_else(|Unsure| peek_by_serde(text))
}

/// What [`peek_usage`] gives, read by serde_json's typed view alone: its fallback, and the
/// reference its tests compare the cursor with.
fn peek_by_serde(text: &str) -> Option<(Option<u64>, Option<u64>)> {
    serde_json::from_str::<Peek>(text)
        .ok()
        .filter(|p| p.error.is_none())
        .and_then(|p| p.usage)
        .map(|u| (u.prompt_tokens, u.completion_tokens))
}

fn scan_usage(text: &str) -> Scan<Option<(Option<u64>, Option<u64>)>> {
    let mut c = Cursor::new(text);
    let (mut usage, mut seen_usage, mut error) = (None, None, None);
    c.object(|c, key| match key {
        "usage" => {
            once(&mut seen_usage, ())?;
            if text[c.value_start()..].starts_with('n') {
                // `null`, or not JSON: the skip tells.
                return c.skip().map(drop);
            }
            let (mut prompt, mut completion) = (None, None);
            c.object(|c, key| match key {
                "prompt_tokens" => once(&mut prompt, c.uint_or_null()?),
                "completion_tokens" => once(&mut completion, c.uint_or_null()?),
                _ => c.skip().map(drop),
            })?;
            usage = Some((prompt.flatten(), completion.flatten()));
            Ok(())
        }
        "error" => {
            let span = c.skip()?;
            if &text[span] != "null" {
                // An error answer is read whole.
                return Err(Unsure);
            }
            once(&mut error, ())
        }
        _ => c.skip().map(drop),
    })?;
    c.end()?;
    Ok(usage)
}

/// What serde_json reads of an answer where the scan cursor is unsure; every other field is
/// skipped unparsed.
#[derive(serde::Deserialize)]
struct Peek {
    #[serde(default)]
    usage: Option<PeekUsage>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct PeekUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

/// Token counts from `usage`, else from llama.cpp's `timings` (sent on the last chunk of a
/// stream even when usage is not asked for: `predicted_n` generated tokens, `prompt_n` +
/// `cache_n` prompt tokens; exact, not estimates).
fn usage_of(v: &Value) -> Option<Usage> {
    reported_usage(v).or_else(|| timings_usage(v))
}

pub(super) fn reported_usage(v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    Some(Usage {
        prompt_tokens: u.get("prompt_tokens").and_then(Value::as_u64),
        // An embedding's usage has prompt tokens only: it generates none.
        completion_tokens: u
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .or_else(|| u.get("prompt_tokens").and_then(Value::as_u64).map(|_| 0))?,
        estimated: false,
        cached_tokens: u
            .pointer("/prompt_tokens_details/cached_tokens")
            .and_then(Value::as_u64),
    })
}

pub(super) fn timings_usage(v: &Value) -> Option<Usage> {
    let t = v.get("timings").filter(|t| t.is_object())?;
    let prompt = t
        .get("prompt_n")
        .and_then(Value::as_u64)
        .map(|p| p + t.get("cache_n").and_then(Value::as_u64).unwrap_or(0));
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: t.get("predicted_n").and_then(Value::as_u64)?,
        estimated: false,
        cached_tokens: t.get("cache_n").and_then(Value::as_u64),
    })
}

/// The generated text of a non-streamed answer in any of the three shapes.
fn answer_text(v: &Value) -> Option<&str> {
    v.pointer("/choices/0/text")
        .or_else(|| v.pointer("/choices/0/message/content"))
        .or_else(|| v.pointer("/result/0/completion"))
        .and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn timings_stand_in_for_usage() {
        // llama.cpp's timings stand in for usage; usage wins when both came.
        let t = json!({"timings":{"prompt_n":3,"cache_n":29,"predicted_n":8}});
        assert_eq!(
            usage_of(&t),
            Some(Usage {
                prompt_tokens: Some(32),
                completion_tokens: 8,
                estimated: false,
                cached_tokens: Some(29),
            })
        );
        let both = json!({"usage":{"prompt_tokens":32,"completion_tokens":7},"timings":{"predicted_n":8}});
        assert_eq!(usage_of(&both).map(|u| u.completion_tokens), Some(7));
    }

    #[test]
    fn usage_is_read_in_one_pass_for_the_common_answer() {
        let common = r#"{"id":"c","choices":[{"text":" hi\n","index":0}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6},"error":null}"#;
        assert_eq!(scan_usage(common), Ok(Some((Some(5), Some(1)))));
        assert_eq!(
            scan_usage(r#"{"usage":{"prompt_tokens":3}}"#),
            Ok(Some((Some(3), None)))
        );
        assert_eq!(scan_usage(r#"{"usage":null}"#), Ok(None));
        // Unsure: serde_json's typed view decides, with what it has always decided.
        for (unsure, peeked) in [
            (r#"{"usage":{"prompt_tokens":5.0}}"#, None),
            (r#"{"usage":{"prompt_tokens":1,"prompt_tokens":2}}"#, None),
            (r#"{"usage":{},"usage":{}}"#, None),
            (r#"{"error":{"message":"x"},"usage":{"prompt_tokens":1}}"#, None),
            // serde reads a struct from a sequence too.
            (r#"[{"prompt_tokens":1}]"#, Some((Some(1), None))),
            (r#"{"usage":{"prompt_tokens":1}} x"#, None),
        ] {
            assert_eq!(scan_usage(unsure), Err(Unsure), "{unsure}");
            assert_eq!(peek_usage(unsure), peeked, "{unsure}");
        }
    }

    fn answer_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let count = prop::sample::select(vec![
            "5",
            "0",
            "null",
            "5.0",
            "-1",
            "\"7\"",
            "18446744073709551616",
            "1e2",
        ]);
        let usage_field = (
            prop::sample::select(vec!["prompt_tokens", "completion_tokens", "total_tokens", "x"]),
            count,
        );
        let usage = prop_oneof![
            Just("null".to_string()),
            Just("[]".to_string()),
            prop::collection::vec(usage_field, 0..4).prop_map(|f| {
                let parts: Vec<String> = f.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", parts.join(","))
            }),
        ];
        let field = prop_oneof![
            usage.prop_map(|u| format!("\"usage\": {u}")),
            prop::sample::select(vec!["null", "{\"message\":\"m\"}", "\"e\"", "false"])
                .prop_map(|e| format!("\"error\":{e}")),
            Just("\"choices\":[{\"text\":\"a\\\"b\",\"logprobs\":null}]".to_string()),
            Just("\"id\":\"cmpl-1\"".to_string()),
        ];
        prop::collection::vec(field, 0..5).prop_map(|f| format!("{{{}}}", f.join(",")))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// The one-pass read gives what serde_json's typed view gives, for any answer, broken
        /// ones included.
        #[test]
        fn peek_usage_agrees_with_serde_json(
            answer in answer_strategy(),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
            broken in proptest::prelude::any::<bool>(),
        ) {
            let text = if broken { answer[..cut.index(answer.len() + 1)].to_string() } else { answer };
            proptest::prop_assert_eq!(peek_usage(&text), peek_by_serde(&text), "{}", text);
            if let Ok(u) = scan_usage(&text) {
                proptest::prop_assert_eq!(u, peek_by_serde(&text), "{}", text);
            }
        }
    }
}
