//! Reading a streamed (SSE) answer into a [`Success`] or [`Failure`]: the body's pieces go
//! through the decoder (`sse.rs`) and each event into [`StreamAssembler`], which counts content
//! events, notes the first token, finds usage wherever a server puts it, turns an error event
//! into a failure and, when asked, assembles the non-streamed body. Apart from `parse.rs`
//! because a stream is read piece by piece as it arrives, and its timestamps matter.

use super::outcome::{decode_failure, error_kind, error_message, Failure, Success, Usage};
use super::parse::{reported_usage, timings_usage};
use super::sse::{SseDecoder, SseEvent};
use super::transport::Answer;
use crate::api::JsonText;
use crate::secret::Scrubber;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

/// Reads the rest of a streamed answer whose head (`status`, `request_id`) arrived; sets
/// `first_token` at the first non-empty content. Each event's data is scrubbed of the key
/// before it is parsed, and the assembled text once more: a key echoed in pieces, one per
/// content event, is whole only there.
pub(super) async fn read_stream(
    resp: &mut Answer<'_>,
    status: u16,
    request_id: Option<String>,
    keep_body: bool,
    first_token: &mut Option<Instant>,
    scrubber: &Scrubber,
) -> Result<Success, Failure> {
    let mut acc = StreamAssembler::new(keep_body);
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    loop {
        let Some(chunk) = resp.chunk().await? else { break };
        decoder
            .push(&chunk, &mut events)
            .map_err(|e| decode_failure(e.to_string()))?;
        for ev in events.drain(..) {
            let ev = match ev {
                SseEvent::Data(data) => SseEvent::Data(scrubber.json_string(data)),
                SseEvent::Done => SseEvent::Done,
            };
            acc.event(ev, first_token)?;
        }
        if acc.done {
            // Read the (empty) rest of the body, so the connection goes back to the
            // keep-alive pool instead of being dropped and re-opened.
            while let Ok(Some(_)) = resp.chunk().await {}
            break;
        }
    }
    if !acc.done {
        decoder.finish().map_err(|e| decode_failure(e.to_string()))?;
        if acc.finish_reason.is_none() {
            return Err(decode_failure(
                "event stream ended without [DONE] or a finish_reason".into(),
            ));
        }
    }
    let content_events = acc.content_events;
    acc.text = scrubber.text_string(std::mem::take(&mut acc.text));
    let (usage, body) = acc.into_parts();
    Ok(Success {
        status,
        usage,
        content_events,
        body: body.as_ref().map(JsonText::from_value),
        request_id,
    })
}

/// Folds stream chunks into usage and, optionally, one non-streamed-shaped body.
struct StreamAssembler {
    keep: bool,
    text: String,
    content_events: u64,
    usage: Option<Usage>,
    /// From llama.cpp's `timings`, used only when no `usage` came.
    timings_usage: Option<Usage>,
    finish_reason: Option<String>,
    chat: bool,
    first_chunk: Option<Value>,
    done: bool,
}

impl StreamAssembler {
    fn new(keep: bool) -> Self {
        StreamAssembler {
            keep,
            text: String::new(),
            content_events: 0,
            usage: None,
            timings_usage: None,
            finish_reason: None,
            chat: false,
            first_chunk: None,
            done: false,
        }
    }

    fn event(&mut self, ev: SseEvent, first_token: &mut Option<Instant>) -> Result<(), Failure> {
        let data = match ev {
            SseEvent::Done => {
                self.done = true;
                return Ok(());
            }
            SseEvent::Data(d) => d,
        };
        let chunk: Value =
            serde_json::from_str(&data).map_err(|e| decode_failure(format!("stream event is not JSON: {e}")))?;
        // An error after the 200 status line (vLLM, SGLang, TGI, OpenAI send one as an event).
        let is_error = chunk.get("error").is_some_and(|e| !e.is_null())
            || chunk.get("object").and_then(Value::as_str) == Some("error");
        if is_error {
            return Err(Failure {
                kind: error_kind(&chunk),
                message: format!("error event in stream: {}", error_message(&chunk).unwrap_or_default()),
                retry_after: None,
                body: Some(chunk),
            });
        }
        // Servers differ in where usage goes: OpenAI, vLLM and llama.cpp's chat send a last
        // chunk with `choices: []`; llama.cpp's completions put it on the chunk with
        // `finish_reason`; TGI on the finish chunk too. llama.cpp also sends `timings`.
        if let Some(u) = reported_usage(&chunk) {
            self.usage = Some(u);
        } else if let Some(u) = timings_usage(&chunk) {
            self.timings_usage = Some(u);
        }
        if let Some(choice) = chunk.pointer("/choices/0") {
            let content = choice.get("text").and_then(Value::as_str).or_else(|| {
                let c = choice.pointer("/delta/content").and_then(Value::as_str);
                if c.is_some() || choice.get("delta").is_some() {
                    self.chat = true;
                }
                c
            });
            if let Some(text) = content.filter(|t| !t.is_empty()) {
                if first_token.is_none() {
                    *first_token = Some(Instant::now());
                }
                self.content_events += 1;
                if self.keep {
                    self.text.push_str(text);
                }
            }
            if let Some(fr) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish_reason = Some(fr.to_string());
            }
        }
        if self.keep && self.first_chunk.is_none() {
            self.first_chunk = Some(chunk);
        }
        Ok(())
    }

    fn into_parts(self) -> (Usage, Option<Value>) {
        let counted = self.usage.or(self.timings_usage);
        let usage = counted.unwrap_or(Usage {
            prompt_tokens: None,
            completion_tokens: self.content_events,
            estimated: true,
            cached_tokens: None,
        });
        let body = self.keep.then(|| {
            let first = self.first_chunk.unwrap_or(Value::Null);
            let finish = self.finish_reason.map_or(Value::Null, Value::String);
            let choice = if self.chat {
                json!({"index": 0, "message": {"role": "assistant", "content": self.text}, "finish_reason": finish})
            } else {
                json!({"index": 0, "text": self.text, "finish_reason": finish})
            };
            let mut out = Map::new();
            for key in ["id", "created", "model"] {
                if let Some(v) = first.get(key) {
                    out.insert(key.into(), v.clone());
                }
            }
            out.insert(
                "object".into(),
                json!(if self.chat {
                    "chat.completion"
                } else {
                    "text_completion"
                }),
            );
            out.insert("choices".into(), json!([choice]));
            if let Some(u) = counted {
                let mut uj = json!({"completion_tokens": u.completion_tokens});
                if let Some(p) = u.prompt_tokens {
                    uj["prompt_tokens"] = json!(p);
                    uj["total_tokens"] = json!(p + u.completion_tokens);
                }
                out.insert("usage".into(), uj);
            }
            Value::Object(out)
        });
        (usage, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembles_streams_with_usage_anywhere() {
        let mut t = None;
        // llama.cpp completions: usage on the finish chunk.
        let mut a = StreamAssembler::new(true);
        a.event(
            SseEvent::Data(r#"{"choices":[{"text":" a","finish_reason":null}]}"#.into()),
            &mut t,
        )
        .unwrap();
        a.event(SseEvent::Data(r#"{"choices":[{"text":" b","finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#.into()), &mut t).unwrap();
        a.event(SseEvent::Done, &mut t).unwrap();
        assert!(t.is_some());
        let (u, body) = a.into_parts();
        assert_eq!(
            u,
            Usage {
                prompt_tokens: Some(3),
                completion_tokens: 2,
                estimated: false,
                cached_tokens: None,
            }
        );
        assert_eq!(body.unwrap()["choices"][0]["text"], " a b");
        // No usage at all: counted events, marked estimated.
        let mut a = StreamAssembler::new(false);
        a.event(
            SseEvent::Data(r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#.into()),
            &mut t,
        )
        .unwrap();
        a.event(
            SseEvent::Data(r#"{"choices":[{"delta":{"content":"x"}}]}"#.into()),
            &mut t,
        )
        .unwrap();
        let (u, _) = a.into_parts();
        assert_eq!(
            u,
            Usage {
                prompt_tokens: None,
                completion_tokens: 1,
                estimated: true,
                cached_tokens: None,
            }
        );
        let mut a = StreamAssembler::new(false);
        assert!(a.event(SseEvent::Data("not json".into()), &mut t).is_err());
        assert!(a
            .event(SseEvent::Data(r#"{"error":{"message":"boom"}}"#.into()), &mut t)
            .is_err());
    }
}
