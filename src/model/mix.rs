//! A request's size as the file states it, without a tokenizer: the bytes of its prompt and
//! the output tokens it asks for. The sweep relates these to the tokens the server reports,
//! so `plan --input` can estimate another job's mix.

use serde_json::Value;

/// Bytes of the text a request sends: `prompt`, the `content` of `messages` (text parts of
/// multi-part content too), or `input` (strings; token-id lists count one byte per id).
pub fn prompt_bytes(body: &Value) -> u64 {
    fn text_bytes(v: &Value) -> u64 {
        match v {
            Value::String(s) => s.len() as u64,
            Value::Array(a) => a.iter().map(text_bytes).sum(),
            Value::Number(_) => 1,
            Value::Object(o) => o.get("text").map_or(0, text_bytes),
            _ => 0,
        }
    }
    if let Some(p) = body.get("prompt") {
        return text_bytes(p);
    }
    if let Some(Value::Array(messages)) = body.get("messages") {
        return messages.iter().map(|m| m.get("content").map_or(0, text_bytes)).sum();
    }
    body.get("input").map_or(0, text_bytes)
}

/// The prompt's text in order (every message's, for chat; the input, for embeddings), each
/// piece followed by a newline: what a server's prefix cache sees of it.
pub fn prompt_text(body: &Value) -> String {
    fn push(v: &Value, out: &mut String) {
        match v {
            Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            Value::Array(a) => a.iter().for_each(|x| push(x, out)),
            Value::Object(o) => o.get("text").into_iter().for_each(|t| push(t, out)),
            _ => {}
        }
    }
    let mut out = String::new();
    if let Some(p) = body.get("prompt") {
        push(p, &mut out);
    } else if let Some(Value::Array(messages)) = body.get("messages") {
        messages
            .iter()
            .filter_map(|m| m.get("content"))
            .for_each(|c| push(c, &mut out));
    } else if let Some(i) = body.get("input") {
        push(i, &mut out);
    }
    out
}

/// The output tokens a request asks for (`max_tokens`, else `max_completion_tokens`); an
/// embedding asks for none.
pub fn requested_tokens(body: &Value) -> Option<u64> {
    if body.get("input").is_some() && body.get("messages").is_none() && body.get("prompt").is_none() {
        return Some(0);
    }
    ["max_tokens", "max_completion_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64))
}

/// Running means of a set of requests' sizes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MixSums {
    pub requests: u64,
    pub prompt_bytes: u64,
    /// Requests that state their output limit, and its sum.
    pub with_requested: u64,
    pub requested_tokens: u64,
    /// Prompt bytes a prefix cache would serve reading the requests in this order (`plan
    /// --input`'s replay of the file through a cache of `--prefix-cache-tokens`); None when not
    /// estimated.
    pub cached_prompt_bytes: Option<u64>,
}

impl MixSums {
    pub fn add(&mut self, body: &Value) {
        self.add_sizes(prompt_bytes(body), requested_tokens(body));
    }

    /// One request of `prompt_bytes`, asking for `requested` output tokens when it says.
    pub fn add_sizes(&mut self, prompt_bytes: u64, requested: Option<u64>) {
        self.requests += 1;
        self.prompt_bytes += prompt_bytes;
        if let Some(t) = requested {
            self.with_requested += 1;
            self.requested_tokens += t;
        }
    }

    pub fn prompt_bytes_mean(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.prompt_bytes as f64 / self.requests as f64)
    }

    /// The share of prompt bytes a prefix cache would serve, when estimated.
    pub fn prefix_share(&self) -> Option<f64> {
        let cached = self.cached_prompt_bytes?;
        (self.prompt_bytes > 0).then(|| (cached as f64 / self.prompt_bytes as f64).min(1.0))
    }

    pub fn requested_tokens_mean(&self) -> Option<f64> {
        (self.with_requested > 0).then(|| self.requested_tokens as f64 / self.with_requested as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes_of_every_shape() {
        assert_eq!(prompt_bytes(&json!({"prompt": "hello"})), 5);
        assert_eq!(prompt_bytes(&json!({"prompt": ["ab", "cd"]})), 4);
        let chat = json!({"messages": [{"role":"system","content":"abc"},{"role":"user","content":[{"type":"text","text":"de"}]}], "max_completion_tokens": 9});
        assert_eq!((prompt_bytes(&chat), requested_tokens(&chat)), (5, Some(9)));
        let emb = json!({"input": ["x", "yz"]});
        assert_eq!((prompt_bytes(&emb), requested_tokens(&emb)), (3, Some(0)));
        assert_eq!(requested_tokens(&json!({"prompt": "a", "max_tokens": 16})), Some(16));
        assert_eq!(requested_tokens(&json!({"prompt": "a"})), None);
        let mut m = MixSums::default();
        m.add(&json!({"prompt": "abcd", "max_tokens": 10}));
        m.add(&json!({"prompt": "ab"}));
        assert_eq!(
            (m.prompt_bytes_mean(), m.requested_tokens_mean()),
            (Some(3.0), Some(10.0))
        );
    }
}
