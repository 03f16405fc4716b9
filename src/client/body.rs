//! Request bodies: built from a prompt for an API, adjusted for measurement (model, stream
//! with usage), and whether one asks for a stream. The commands and benches build bodies
//! here before any client exists; nothing here touches the network.

use crate::api::{Api, MaxTokensField};
use serde_json::{json, Value};

/// Builds a request body for `api` from a prompt (synthetic workloads, text and CSV inputs).
pub fn build_body(
    api: Api,
    model: Option<&str>,
    prompt: &str,
    max_tokens: Option<u32>,
    field: MaxTokensField,
) -> Value {
    let mut body = match api {
        Api::Chat => json!({"messages": [{"role": "user", "content": prompt}]}),
        Api::Completions | Api::Forefront => json!({"prompt": prompt}),
        Api::Embeddings => json!({"input": prompt}),
    };
    if let Some(m) = model {
        body["model"] = json!(m);
    }
    // An embedding generates nothing, and OpenAI rejects unknown fields on /v1/embeddings.
    if let Some(n) = max_tokens.filter(|_| api != Api::Embeddings) {
        let key = if api == Api::Forefront {
            "max_tokens"
        } else {
            field.key()
        };
        body[key] = json!(n);
    }
    body
}

/// Adjusts a body for measurement: the model when missing, and streaming with usage when
/// asked (TTFT needs a stream; usage in the stream keeps token counts exact).
pub fn prepare_body(body: &mut Value, model: Option<&str>, stream: Option<bool>) {
    let Some(obj) = body.as_object_mut() else { return };
    if let Some(m) = model {
        obj.entry("model").or_insert_with(|| json!(m));
    }
    match stream {
        Some(true) => {
            obj.insert("stream".into(), json!(true));
            obj.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Some(false) => {
            obj.remove("stream");
            obj.remove("stream_options");
        }
        None => {}
    }
}

/// Whether a body asks for a stream.
pub fn wants_stream(body: &Value) -> bool {
    body.get("stream").and_then(Value::as_bool).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        let b = build_body(Api::Chat, Some("m"), "hi", Some(8), MaxTokensField::MaxTokens);
        assert_eq!(
            b,
            json!({"messages":[{"role":"user","content":"hi"}],"model":"m","max_tokens":8})
        );
        let b = build_body(
            Api::Completions,
            None,
            "hi",
            Some(8),
            MaxTokensField::MaxCompletionTokens,
        );
        assert_eq!(b, json!({"prompt":"hi","max_completion_tokens":8}));
        let mut b = json!({"prompt":"x","model":"given"});
        prepare_body(&mut b, Some("other"), Some(true));
        assert_eq!(b["model"], "given");
        assert_eq!(b["stream_options"]["include_usage"], true);
    }
}
