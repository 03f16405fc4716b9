//! The built-in simulator behaves like the GPU server it stands in for (`sizeup::sim`), spoken to
//! over TCP with a plain HTTP client (never `sizeup::client`: the simulator and the client are
//! verified independently, so a shared misunderstanding of the wire format cannot hide).
//!
//! Timing-sensitive tests (throughput, latency, slot release) take a module-wide lock so that
//! they never measure each other's load; tolerances are wide enough for two busy cores and tight
//! enough that a broken batching model (no batching, no queueing, wrong router) fails.

mod api;
mod capacity;
mod control;

use serde_json::{json, Value};
use sizeup::sim::gpu::GpuParams;
use sizeup::sim::{SimConfig, SimHandle};
use std::time::Duration;

/// Serialises the tests whose assertions depend on wall-clock timing.
static TIMING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Upper bound for any single HTTP exchange in these tests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn params(batch: usize, step_ms: f64, per_seq_ms: f64, prefill_ms_per_1k: f64) -> GpuParams {
    GpuParams {
        batch,
        prefill_ms_per_1k,
        decode_step_ms: step_ms,
        decode_step_ms_per_seq: per_seq_ms,
        prefix_cache_tokens: 0,
    }
}

/// A quiet, fast simulator: 1 GPU, 4 slots, 1 ms steps, no faults.
fn quick_config() -> SimConfig {
    SimConfig {
        gpus: 1,
        params: params(4, 1.0, 0.0, 0.0),
        ..SimConfig::default()
    }
}

async fn start(cfg: SimConfig) -> SimHandle {
    SimHandle::start(cfg)
        .await
        .expect("simulator starts on a loopback port")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("reqwest client builds")
}

async fn post_json(c: &reqwest::Client, url: String, body: &Value) -> reqwest::Response {
    c.post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request answered")
}

async fn json_of(resp: reqwest::Response) -> Value {
    let text = resp.text().await.expect("body read");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text:?}"))
}

async fn metrics_text(c: &reqwest::Client, h: &SimHandle) -> String {
    let resp = c
        .get(format!("{}/metrics", h.url()))
        .send()
        .await
        .expect("metrics answered");
    assert_eq!(resp.status(), 200);
    resp.text().await.expect("metrics body")
}

/// The value of the sample whose name (with labels, exactly as written) is `series`.
fn metric(text: &str, series: &str) -> f64 {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix(series) {
            if let Some(v) = rest.strip_prefix(' ') {
                assert!(found.is_none(), "series {series} appears twice:\n{text}");
                found = Some(v.trim().parse::<f64>().unwrap_or_else(|e| panic!("{line:?}: {e}")));
            }
        }
    }
    found.unwrap_or_else(|| panic!("series {series} missing from /metrics:\n{text}"))
}

fn words(s: &str) -> usize {
    s.split_whitespace().count()
}

/// The outcome of one completion request: the status code, or "reset" when the connection
/// closed with no HTTP answer.
async fn outcome(c: &reqwest::Client, h: &SimHandle) -> String {
    let body = json!({"prompt": "x y", "max_tokens": 1}).to_string();
    match c
        .post(format!("{}/v1/completions", h.url()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
    {
        Ok(r) => {
            let s = r.status().as_u16().to_string();
            let _ = r.bytes().await;
            s
        }
        Err(e) => {
            assert!(e.status().is_none() && !e.is_timeout(), "a reset, not {e:?}");
            "reset".to_string()
        }
    }
}

const PROMPT: &str = "one two three four five six seven eight nine ten";
