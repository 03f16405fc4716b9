//! Embeddings: `POST /v1/embeddings`, its inputs (text, token ids, or arrays of either), and
//! the deterministic unit vectors derived from each input's content, as floats or base64.

use super::faults::mix;
use super::gpu::{Event, NewSeq};
use super::inference::words;
use super::state::{json_ok, AppState, ConnDraw, InFlight};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Extension;
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;

/// One input of an embeddings request: its token count (the simulator's token rule) and a
/// fingerprint of its content, from which its vector is derived.
#[derive(Debug, PartialEq, Eq)]
struct EmbeddingInput {
    tokens: u32,
    key: u64,
}

/// Inputs per request, as OpenAI limits them; more is a 400, not an unbounded allocation.
const MAX_EMBEDDING_INPUTS: usize = 2048;

/// FNV-1a: a content hash that, unlike `DefaultHasher`, is fixed across Rust versions, so an
/// input's vector never changes between builds.
fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn text_input(s: &str) -> Result<EmbeddingInput, String> {
    if s.is_empty() {
        return Err("\"input\" must not contain an empty string".into());
    }
    Ok(EmbeddingInput {
        tokens: words(s),
        key: fnv1a(s.bytes()),
    })
}

fn token_input(ids: &[Value]) -> Result<EmbeddingInput, String> {
    if ids.is_empty() {
        return Err("\"input\" must not contain an empty token array".into());
    }
    let ids: Vec<u64> = ids
        .iter()
        .map(|v| v.as_u64().ok_or("token ids must be non-negative integers"))
        .collect::<Result<_, _>>()?;
    Ok(EmbeddingInput {
        tokens: u32::try_from(ids.len()).unwrap_or(u32::MAX),
        // Tagged so that the ids [104, 105] and the text "hi" (bytes 104, 105) differ.
        key: fnv1a(std::iter::once(b't').chain(ids.iter().flat_map(|id| id.to_le_bytes()))),
    })
}

/// `input`: a string, an array of strings, an array of token ids, or an array of such arrays.
fn embedding_inputs(body: &Value) -> Result<Vec<EmbeddingInput>, String> {
    let inputs = match body.get("input") {
        Some(Value::String(s)) => vec![text_input(s)?],
        Some(Value::Array(items)) if items.is_empty() => return Err("\"input\" must not be empty".into()),
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => vec![token_input(items)?],
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
            .iter()
            .map(|item| text_input(item.as_str().unwrap_or_default()))
            .collect::<Result<_, _>>()?,
        Some(Value::Array(items)) if items.iter().all(Value::is_array) => items
            .iter()
            .map(|item| token_input(item.as_array().map_or(&[][..], Vec::as_slice)))
            .collect::<Result<_, _>>()?,
        Some(Value::Array(_)) => {
            return Err("\"input\" items must be all strings, all token ids or all token arrays".into())
        }
        Some(_) => return Err("\"input\" must be a string or an array".into()),
        None => return Err("missing \"input\"".into()),
    };
    if inputs.len() > MAX_EMBEDDING_INPUTS {
        return Err(format!(
            "\"input\" has {} items; at most {MAX_EMBEDDING_INPUTS}",
            inputs.len()
        ));
    }
    Ok(inputs)
}

/// A unit-length vector of `dims` floats derived from the input's fingerprint alone, so the
/// same input gets the same vector from any simulator, seed or request order.
fn embedding_vector(key: u64, dims: usize) -> Vec<f32> {
    let raw: Vec<f64> = (0..dims as u64)
        // The top 53 bits as a uniform draw in [-1, 1).
        .map(|i| (mix(key, i) >> 11) as f64 / (1u64 << 52) as f64 - 1.0)
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt();
    raw.iter()
        .map(|x| if norm > 0.0 { (x / norm) as f32 } else { 0.0 })
        .collect()
}

/// Standard base64 of little-endian f32s: OpenAI's `encoding_format: "base64"`, which the
/// official Python client asks for by default. A dozen lines rather than a dependency.
fn base64_f32(v: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `POST /v1/embeddings`. Each input is one prefill-only sequence on the GPUs (as vLLM turns
/// each input into its own engine request), so embeddings share batch slots and queues with
/// generation and cost `prefill_ms_per_1k` per 1,000 input tokens.
pub(super) async fn embeddings(
    State(s): State<Arc<AppState>>,
    conn: Option<Extension<ConnDraw>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let conn = conn.map(|c| c.0).unwrap_or_default();
    let req = match s.request(&headers, &body) {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    let inputs = match embedding_inputs(&req) {
        Ok(v) => v,
        Err(e) => return s.bad_request(&e),
    };
    let dims = match req.get("dimensions").filter(|v| !v.is_null()) {
        None => s.cfg.embedding_dim,
        Some(v) => match v.as_u64() {
            Some(d) if d >= 1 && d <= s.cfg.embedding_dim as u64 => d as usize,
            _ => {
                let msg = format!(
                    "dimensions must be an integer from 1 to {}, got {v}",
                    s.cfg.embedding_dim
                );
                return s.bad_request(&msg);
            }
        },
    };
    let base64 = match req.get("encoding_format").filter(|v| !v.is_null()) {
        None => false,
        Some(v) if v == "float" => false,
        Some(v) if v == "base64" => true,
        Some(v) => return s.bad_request(&format!("encoding_format must be \"float\" or \"base64\", got {v}")),
    };
    let model = match s.model_for(&req) {
        Ok(m) => m,
        Err(resp) => return *resp,
    };
    let (_, mult) = match s.draw() {
        Ok(v) => v,
        Err(resp) => return *resp,
    };

    let guard = InFlight::new(&s);
    let mut answers = Vec::with_capacity(inputs.len());
    for input in &inputs {
        let (tx, rx) = mpsc::unbounded_channel();
        let seq = NewSeq {
            prompt_tokens: input.tokens,
            max_tokens: 0,
            mult,
            conn: conn.0,
            events: tx,
            blocks: Vec::new(),
            cached: Default::default(),
        };
        // Sequences already submitted finish on their own; their answers are simply dropped.
        if !s.cluster.submit(seq) {
            return s.no_gpu();
        }
        answers.push(rx);
    }
    let total = inputs.iter().map(|i| u64::from(i.tokens)).sum::<u64>();
    s.counters.prompt_tokens.fetch_add(total, Ordering::Relaxed);
    for mut rx in answers {
        // A prefill-only sequence sends nothing and closes its channel when done.
        if let Some(Event::Aborted) = rx.recv().await {
            return s.aborted();
        }
    }
    drop(guard);
    s.counters.ok.fetch_add(1, Ordering::Relaxed);
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let v = embedding_vector(input.key, dims);
            let embedding = if base64 { json!(base64_f32(&v)) } else { json!(v) };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let body = json!({"object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": total, "total_tokens": total}});
    json_ok(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_inputs_and_vectors() {
        let tokens =
            |v: Value| embedding_inputs(&json!({ "input": v })).map(|i| i.iter().map(|x| x.tokens).collect::<Vec<_>>());
        assert_eq!(tokens(json!("a b c")), Ok(vec![3]));
        assert_eq!(tokens(json!(["a", "b c"])), Ok(vec![1, 2]));
        assert_eq!(tokens(json!([7, 8, 9])), Ok(vec![3]));
        assert_eq!(tokens(json!([[7], [8, 9]])), Ok(vec![1, 2]));
        for bad in [
            json!(""),
            json!([]),
            json!([[]]),
            json!([1.5]),
            json!(["a", [1]]),
            json!({"a": 1}),
        ] {
            assert!(tokens(bad.clone()).is_err(), "{bad}");
        }
        assert!(tokens(json!(vec!["x"; MAX_EMBEDDING_INPUTS + 1])).is_err());
        // Text and the ids of its bytes are different inputs.
        let key = |v: Value| embedding_inputs(&json!({ "input": v })).unwrap()[0].key;
        assert_ne!(key(json!("hi")), key(json!([104, 105])));
        assert_eq!(key(json!("hi")), key(json!(["hi"])));

        let v = embedding_vector(42, 16);
        assert_eq!(v, embedding_vector(42, 16));
        assert_ne!(v, embedding_vector(43, 16));
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    }

    #[test]
    fn base64_of_floats() {
        // 1.0f32 is 00 00 80 3f little-endian.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, -2.0]), "AACAPwAAAMA=");
        assert_eq!(base64_f32(&[1.0, -2.0, 0.5]), "AACAPwAAAMAAAAA/");
        assert_eq!(base64_f32(&[]), "");
    }
}
