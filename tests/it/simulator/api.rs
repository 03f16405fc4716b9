//! The simulator speaks the wire format of the servers it stands in for: streamed and plain
//! completions and chat, embeddings, request validation, and `--served-model-name` as strict as
//! vLLM's.

use super::{client, json_of, metric, metrics_text, post_json, quick_config, start, words};
use serde_json::{json, Value};
use sizeup::sim::{SimConfig, SimHandle};

/// Splits an SSE body into its `data:` payloads, checking the framing on the way.
fn sse_data(body: &str) -> Vec<String> {
    assert!(body.ends_with("\n\n"), "SSE body must end with a blank line: {body:?}");
    body.trim_end_matches('\n')
        .split("\n\n")
        .map(|ev| {
            let data = ev
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("event without data: {ev:?} in {body:?}"));
            assert!(!data.contains('\n'), "one line per event: {ev:?}");
            data.to_string()
        })
        .collect()
}

async fn stream_events(c: &reqwest::Client, h: &SimHandle, path: &str, body: &Value) -> Vec<String> {
    let resp = post_json(c, format!("{}{path}", h.url()), body).await;
    assert_eq!(resp.status(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .expect("content-type")
        .to_str()
        .unwrap()
        .to_string();
    assert!(ct.starts_with("text/event-stream"), "content-type {ct}");
    sse_data(&resp.text().await.unwrap())
}

/// Checks the token events of a stream and returns the number of content events.
fn check_content_events(events: &[String], chat: bool, n: usize) {
    for (i, e) in events[..n].iter().enumerate() {
        let v: Value = serde_json::from_str(e).unwrap_or_else(|err| panic!("{err}: {e}"));
        let choice = &v["choices"][0];
        let text = if chat {
            choice["delta"]["content"].as_str()
        } else {
            choice["text"].as_str()
        };
        let text = text.unwrap_or_else(|| panic!("event {i} has no content: {e}"));
        assert!(!text.trim().is_empty(), "event {i} has empty content: {e}");
        assert_eq!(words(text), 1, "one token per event: {e}");
        assert!(
            v.get("usage").is_none_or(Value::is_null),
            "usage only in the last chunk: {e}"
        );
        let finish = &choice["finish_reason"];
        if i + 1 == n {
            assert_eq!(finish, "length", "the last token ends the choice: {e}");
        } else {
            assert!(finish.is_null(), "finish_reason only on the last token: {e}");
        }
        if chat {
            assert_eq!(v["object"], "chat.completion.chunk");
            if i == 0 {
                assert_eq!(choice["delta"]["role"], "assistant");
            }
        }
    }
}

// Streaming: one token per SSE event, usage when asked for, then [DONE], nothing after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_completions_and_chat() {
    let c = client();
    let h = start(quick_config()).await;
    let prompt = "  count   these five\twords please ";
    let chat_prompt = ["three words here", "and four more words"];
    for (path, chat) in [("/v1/completions", false), ("/v1/chat/completions", true)] {
        for include_usage in [true, false] {
            let mut body = if chat {
                json!({"messages": [{"role": "system", "content": chat_prompt[0]},
                                    {"role": "user", "content": chat_prompt[1]}]})
            } else {
                json!({"prompt": prompt})
            };
            body["stream"] = json!(true);
            body["max_tokens"] = json!(7);
            if include_usage {
                body["stream_options"] = json!({"include_usage": true});
            }
            let events = stream_events(&c, &h, path, &body).await;
            let ctx = format!("{path} include_usage={include_usage}: {events:#?}");
            let expected_len = if include_usage { 9 } else { 8 };
            assert_eq!(events.len(), expected_len, "{ctx}");
            check_content_events(&events, chat, 7);
            if include_usage {
                let u: Value = serde_json::from_str(&events[7]).unwrap();
                assert_eq!(u["choices"], json!([]), "{ctx}");
                let want_prompt = if chat { 7 } else { 5 };
                assert_eq!(u["usage"]["completion_tokens"], 7, "{ctx}");
                assert_eq!(u["usage"]["prompt_tokens"], want_prompt, "{ctx}");
                assert_eq!(u["usage"]["total_tokens"], want_prompt + 7, "{ctx}");
            }
            assert_eq!(events.last().unwrap(), "[DONE]", "{ctx}");
        }
    }
    // The stream counts as one answered request and as 7 generated tokens each.
    let m = metrics_text(&c, &h).await;
    assert_eq!(metric(&m, "sizeup_sim_requests_total{outcome=\"ok\"}"), 4.0, "{m}");
    assert_eq!(metric(&m, "sizeup_sim_generation_tokens_total"), 28.0, "{m}");
    assert_eq!(metric(&m, "sizeup_sim_requests_in_flight"), 0.0, "{m}");
    h.shutdown().await;
}

// Non-streamed JSON answers, models, and request validation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_answers_and_validation() {
    let c = client();
    let h = start(SimConfig {
        model: "test-model".into(),
        default_max_tokens: 4,
        ..quick_config()
    })
    .await;
    let u = h.url();

    let v = json_of(
        post_json(
            &c,
            format!("{u}/v1/completions"),
            &json!({"model": "test-model", "prompt": "one two three", "max_tokens": 7}),
        )
        .await,
    )
    .await;
    assert_eq!(v["object"], "text_completion", "{v}");
    assert_eq!(v["model"], "test-model", "{v}");
    assert_eq!(words(v["choices"][0]["text"].as_str().expect("text")), 7, "{v}");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10})
    );

    // Token-id prompts count one token per id; no max_tokens means the default.
    let v = json_of(post_json(&c, format!("{u}/v1/completions"), &json!({"prompt": [5, 6, 7, 8]})).await).await;
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8})
    );
    assert_eq!(words(v["choices"][0]["text"].as_str().unwrap()), 4);

    let chat = json!({"model": "test-model", "max_tokens": 7,
                      "messages": [{"role": "user", "content": "hi there"}]});
    let v = json_of(post_json(&c, format!("{u}/v1/chat/completions"), &chat).await).await;
    assert_eq!(v["object"], "chat.completion", "{v}");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant", "{v}");
    assert_eq!(
        words(v["choices"][0]["message"]["content"].as_str().expect("content")),
        7,
        "{v}"
    );
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 2, "completion_tokens": 7, "total_tokens": 9})
    );
    // max_completion_tokens is the newer spelling.
    let chat2 = json!({"max_completion_tokens": 2, "messages": [{"role": "user", "content": "x"}]});
    let v = json_of(post_json(&c, format!("{u}/v1/chat/completions"), &chat2).await).await;
    assert_eq!(v["usage"]["completion_tokens"], 2, "{v}");

    let resp = post_json(&c, format!("{u}/"), &json!({"prompt": "a b c d", "max_tokens": 3})).await;
    assert_eq!(resp.status(), 200);
    let v = json_of(resp).await;
    assert_eq!(
        words(v["result"][0]["completion"].as_str().expect("forefront completion")),
        3,
        "{v}"
    );

    let resp = c.get(format!("{u}/v1/models")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let v = json_of(resp).await;
    assert_eq!(v["object"], "list");
    let ids: Vec<_> = v["data"].as_array().unwrap().iter().map(|m| m["id"].clone()).collect();
    assert_eq!(ids, vec![json!("test-model")]);

    // Any model is served (the simulator stands in for the user's endpoint) and echoed back.
    let other = json!({"model": "meta-llama/Llama-3.1-8B-Instruct", "prompt": "x", "max_tokens": 1});
    let resp = post_json(&c, format!("{u}/v1/completions"), &other).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(json_of(resp).await["model"], "meta-llama/Llama-3.1-8B-Instruct");
    let resp = c
        .post(format!("{u}/v1/completions"))
        .header("content-type", "application/json")
        .body("{\"prompt\": \"x\", ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "bad JSON");
    assert!(json_of(resp).await["error"]["message"].is_string());
    for bad in [
        json!({"prompt": "x", "max_tokens": 0}),
        json!({"prompt": "x", "max_tokens": -1}),
        json!({"prompt": "x", "max_tokens": "5"}),
        json!({"max_tokens": 5}),
        json!(["not", "an", "object"]),
    ] {
        let resp = post_json(&c, format!("{u}/v1/completions"), &bad).await;
        assert_eq!(resp.status(), 400, "{bad}");
    }
    let resp = post_json(&c, format!("{u}/v1/chat/completions"), &json!({"prompt": "x"})).await;
    assert_eq!(resp.status(), 400, "chat without messages");

    let m = metrics_text(&c, &h).await;
    assert_eq!(metric(&m, "sizeup_sim_requests_total{outcome=\"ok\"}"), 6.0, "{m}");
    assert_eq!(
        metric(&m, "sizeup_sim_requests_total{outcome=\"not_found_404\"}"),
        0.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "sizeup_sim_requests_total{outcome=\"bad_request_400\"}"),
        7.0,
        "{m}"
    );
    h.shutdown().await;
}

// --served-model-name: strict, with vLLM's exact 404 for any other model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_model_name_is_strict_like_vllm() {
    let c = client();
    let h = start(SimConfig {
        model: "served".into(),
        strict_model: true,
        ..quick_config()
    })
    .await;
    let u = h.url();
    let v = json_of(c.get(format!("{u}/v1/models")).send().await.unwrap()).await;
    assert_eq!(v["data"][0]["id"], "served", "{v}");
    for (path, body) in [
        (
            "/v1/completions",
            json!({"model": "served", "prompt": "a b", "max_tokens": 2}),
        ),
        ("/v1/completions", json!({"prompt": "no model named", "max_tokens": 2})),
        (
            "/v1/chat/completions",
            json!({"model": "served", "messages": [{"role": "user", "content": "hi"}]}),
        ),
        ("/v1/embeddings", json!({"model": "served", "input": "hi"})),
    ] {
        let resp = post_json(&c, format!("{u}{path}"), &body).await;
        assert_eq!(resp.status(), 200, "{path} {body}");
        assert_eq!(json_of(resp).await["model"], "served", "{path} {body}");
    }
    for (path, body) in [
        (
            "/v1/completions",
            json!({"model": "gpt-nope", "prompt": "x", "max_tokens": 1}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "gpt-nope", "messages": [{"role": "user", "content": "x"}]}),
        ),
        ("/v1/embeddings", json!({"model": "gpt-nope", "input": "x"})),
    ] {
        let resp = post_json(&c, format!("{u}{path}"), &body).await;
        assert_eq!(resp.status(), 404, "{path}");
        assert_eq!(
            json_of(resp).await,
            json!({"object": "error", "message": "The model `gpt-nope` does not exist.",
                "type": "NotFoundError", "param": null, "code": 404}),
            "{path}"
        );
    }
    let m = metrics_text(&c, &h).await;
    assert_eq!(
        metric(&m, "sizeup_sim_requests_total{outcome=\"not_found_404\"}"),
        3.0,
        "{m}"
    );
    assert_eq!(metric(&m, "sizeup_sim_requests_total{outcome=\"ok\"}"), 4.0, "{m}");
    h.shutdown().await;
}

// Embeddings: OpenAI's shape, one deterministic unit vector per input, usage by input tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_shape_dimensions_and_usage() {
    let c = client();
    let h = start(SimConfig {
        embedding_dim: 24,
        ..quick_config()
    })
    .await;
    let u = format!("{}/v1/embeddings", h.url());
    let vector = |v: &Value, i: usize| -> Vec<f64> {
        v["data"][i]["embedding"]
            .as_array()
            .unwrap_or_else(|| panic!("embedding {i} is an array: {v}"))
            .iter()
            .map(|x| x.as_f64().expect("a float"))
            .collect()
    };

    let one = json_of(
        post_json(
            &c,
            u.clone(),
            &json!({"model": "any-embedder", "input": "the quick brown fox"}),
        )
        .await,
    )
    .await;
    assert_eq!(one["object"], "list", "{one}");
    assert_eq!(one["model"], "any-embedder", "{one}");
    assert_eq!(one["usage"], json!({"prompt_tokens": 4, "total_tokens": 4}), "{one}");
    assert_eq!(one["data"].as_array().unwrap().len(), 1, "{one}");
    assert_eq!(one["data"][0]["object"], "embedding");
    assert_eq!(one["data"][0]["index"], 0);
    let fox = vector(&one, 0);
    assert_eq!(fox.len(), 24);
    let norm: f64 = fox.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "unit length, got {norm}");

    // A list: one vector per input, in order; the same text gets the same vector.
    let many = json!({"input": ["a b", "the quick brown fox", "a b"]});
    let v = json_of(post_json(&c, u.clone(), &many).await).await;
    assert_eq!(v["usage"], json!({"prompt_tokens": 8, "total_tokens": 8}), "{v}");
    assert_eq!(v["model"], "sizeup-sim", "no model named: the configured one");
    let idx: Vec<_> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["index"].clone())
        .collect();
    assert_eq!(idx, vec![json!(0), json!(1), json!(2)]);
    assert_eq!(vector(&v, 1), fox, "deterministic across requests");
    assert_eq!(vector(&v, 0), vector(&v, 2));
    assert_ne!(vector(&v, 0), fox);

    // Token ids count one token each, alone or in a list.
    let v = json_of(post_json(&c, u.clone(), &json!({"input": [1, 2, 3]})).await).await;
    assert_eq!(v["usage"]["prompt_tokens"], 3, "{v}");
    assert_eq!(v["data"].as_array().unwrap().len(), 1, "{v}");
    let v = json_of(post_json(&c, u.clone(), &json!({"input": [[1, 2], [3, 4, 5]]})).await).await;
    assert_eq!(v["usage"]["prompt_tokens"], 5, "{v}");
    assert_eq!(v["data"].as_array().unwrap().len(), 2, "{v}");

    // `dimensions` shortens, and base64 carries the same floats as little-endian f32s.
    let v = json_of(post_json(&c, u.clone(), &json!({"input": "x", "dimensions": 4})).await).await;
    assert_eq!(vector(&v, 0).len(), 4, "{v}");
    let b = json_of(
        post_json(
            &c,
            u.clone(),
            &json!({"input": "the quick brown fox", "encoding_format": "base64"}),
        )
        .await,
    )
    .await;
    let text = b["data"][0]["embedding"].as_str().expect("base64 string");
    // 24 floats x 4 bytes = 96 bytes = 128 base64 characters, no padding.
    assert_eq!(text.len(), 128, "{text}");
    assert!(
        text.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'),
        "{text}"
    );

    for bad in [
        json!({}),
        json!({"input": ""}),
        json!({"input": []}),
        json!({"input": [[]]}),
        json!({"input": 5}),
        json!({"input": ["a", 1]}),
        json!({"input": [-1]}),
        json!({"input": "x", "dimensions": 25}),
        json!({"input": "x", "dimensions": 0}),
        json!({"input": "x", "encoding_format": "int8"}),
    ] {
        let resp = post_json(&c, u.clone(), &bad).await;
        assert_eq!(resp.status(), 400, "{bad}");
        assert!(json_of(resp).await["error"]["message"].is_string(), "{bad}");
    }
    let m = metrics_text(&c, &h).await;
    assert_eq!(metric(&m, "sizeup_sim_requests_total{outcome=\"ok\"}"), 6.0, "{m}");
    assert_eq!(
        metric(&m, "sizeup_sim_requests_total{outcome=\"bad_request_400\"}"),
        10.0,
        "{m}"
    );
    // 4 + 8 + 3 + 5 + 1 + 4 input tokens over the six answered requests.
    assert_eq!(metric(&m, "sizeup_sim_prompt_tokens_total"), 25.0, "{m}");
    assert_eq!(
        metric(&m, "sizeup_sim_generation_tokens_total"),
        0.0,
        "embeddings generate nothing: {m}"
    );
    h.shutdown().await;
}
