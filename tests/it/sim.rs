//! Integration tests of the built-in simulated GPU resource (`sizeup::sim`), spoken to over TCP
//! with a plain HTTP client (never `sizeup::client`: the simulator and the client are verified
//! independently, so a shared misunderstanding of the wire format cannot hide).
//!
//! Timing-sensitive tests (throughput, latency, slot release) take a file-wide lock so that they
//! never measure each other's load; tolerances are wide enough for two busy cores and tight
//! enough that a broken batching model (no batching, no queueing, wrong router) fails.

use serde_json::{json, Value};
use sizeup::secret::Secret;
use sizeup::sim::gpu::{expected_rpm, GpuParams};
use sizeup::sim::{SimConfig, SimHandle};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// What one closed-loop run observed.
struct LoopStats {
    /// Successful answers that ended inside the measurement window.
    in_window: usize,
    /// Their latencies.
    latencies: Vec<Duration>,
    window: Duration,
    /// Answers that were not 200 (any time), with a sample status.
    failures: usize,
    total_ok: usize,
}

impl LoopStats {
    fn rpm(&self) -> f64 {
        self.in_window as f64 * 60.0 / self.window.as_secs_f64()
    }
    fn mean_latency_ms(&self) -> f64 {
        assert!(!self.latencies.is_empty(), "no request completed in the window");
        self.latencies.iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0 / self.latencies.len() as f64
    }
}

/// `concurrency` tasks, each sending `body` to /v1/completions back-to-back until `run` has
/// passed (and at most `max_per_task` requests). Counts answers that end inside
/// `[warmup, warmup + window]`, a window that closes before the tasks stop sending.
async fn closed_loop(
    url: &str,
    concurrency: usize,
    body: &Value,
    warmup: Duration,
    window: Duration,
    run: Duration,
    max_per_task: usize,
) -> LoopStats {
    assert!(warmup + window < run);
    let c = client();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let c = c.clone();
        let url = format!("{url}/v1/completions");
        let body = body.to_string();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for _ in 0..max_per_task {
                if t0.elapsed() >= run {
                    break;
                }
                let sent = Instant::now();
                let resp = c
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let status = match resp {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        let _ = r.bytes().await;
                        s
                    }
                    Err(_) => 0,
                };
                let done = Instant::now();
                out.push((done - t0, done - sent, status));
            }
            out
        }));
    }
    let mut stats = LoopStats {
        in_window: 0,
        latencies: Vec::new(),
        window,
        failures: 0,
        total_ok: 0,
    };
    for t in tasks {
        for (end, latency, status) in t.await.expect("loop task") {
            if status != 200 {
                stats.failures += 1;
                continue;
            }
            stats.total_ok += 1;
            if end >= warmup && end < warmup + window {
                stats.in_window += 1;
                stats.latencies.push(latency);
            }
        }
    }
    stats
}

const PROMPT: &str = "one two three four five six seven eight nine ten";

// 1. Throughput follows `expected_rpm` below, at and beyond the knee.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_matches_expected_rpm() {
    let _lock = TIMING.lock().await;
    const G: usize = 2;
    const B: usize = 4;
    let max_tokens = 5u32;
    let prompt_tokens = words(PROMPT) as u32;
    let body = json!({"prompt": PROMPT, "max_tokens": max_tokens});
    // 6 ms per step, 5 tokens: 30 ms per request, no prefill, no occupancy cost (long enough
    // that HTTP and timer overhead, about 2 ms a request, stay well inside the tolerance); then
    // one case with both prefill (10 ms for 10 words) and occupancy cost (4 x 0.5 ms a step).
    let flat = params(B, 6.0, 0.0, 0.0);
    let cases = [
        (flat, 1),
        (flat, G * B / 2),
        (flat, G * B),
        (flat, 2 * G * B),
        (params(B, 3.0, 0.5, 1000.0), G * B),
    ];
    let mut report = Vec::new();
    let mut bad = false;
    for (p, c) in cases {
        let h = start(SimConfig {
            gpus: G,
            params: p,
            ..SimConfig::default()
        })
        .await;
        let stats = closed_loop(
            &h.url(),
            c,
            &body,
            Duration::from_millis(300),
            Duration::from_millis(1000),
            Duration::from_millis(1500),
            1000,
        )
        .await;
        h.shutdown().await;
        let want = expected_rpm(&p, G, c, prompt_tokens, max_tokens);
        let got = stats.rpm();
        let ratio = got / want;
        report.push(format!(
            "{p:?} c={c}: measured {got:.0} rpm, expected {want:.0} rpm (ratio {ratio:.3}, {} failures)",
            stats.failures
        ));
        assert_eq!(stats.failures, 0, "no request may fail: {report:?}");
        bad |= !(0.8..=1.2).contains(&ratio);
    }
    eprintln!("{}", report.join("\n"));
    assert!(!bad, "throughput off by more than 20%:\n{}", report.join("\n"));
}

// 2. Beyond G x B requests wait in the queue: latency grows while throughput stays flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_grows_beyond_capacity() {
    let _lock = TIMING.lock().await;
    const G: usize = 2;
    const B: usize = 4;
    let p = params(B, 6.0, 0.0, 0.0);
    let body = json!({"prompt": PROMPT, "max_tokens": 5});
    let mut means = Vec::new();
    for c in [G * B, 2 * G * B] {
        let h = start(SimConfig {
            gpus: G,
            params: p,
            ..SimConfig::default()
        })
        .await;
        let stats = closed_loop(
            &h.url(),
            c,
            &body,
            Duration::from_millis(200),
            Duration::from_millis(700),
            Duration::from_millis(1000),
            1000,
        )
        .await;
        h.shutdown().await;
        assert_eq!(stats.failures, 0);
        means.push(stats.mean_latency_ms());
    }
    let (at_knee, beyond) = (means[0], means[1]);
    eprintln!("mean latency: c=G*B {at_knee:.1} ms, c=2*G*B {beyond:.1} ms");
    // 30 ms of service at the knee; twice the load queues each request behind another one.
    assert!(at_knee >= 28.0, "service takes 30 ms, measured {at_knee:.1} ms");
    assert!(
        beyond > 1.6 * at_knee,
        "queueing must show: mean latency {beyond:.1} ms at 2*G*B vs {at_knee:.1} ms at G*B"
    );
}

// 3. The API key guards inference, models and the resource API; health and metrics stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_is_required() {
    let h = start(SimConfig {
        api_key: Some(Secret::new("k")),
        ..quick_config()
    })
    .await;
    let c = client();
    let body = json!({"prompt": "hello there", "max_tokens": 2}).to_string();
    let completions = format!("{}/v1/completions", h.url());
    let send = |auth: Option<&'static str>| {
        let mut rb = c
            .post(&completions)
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        rb.send()
    };
    assert_eq!(send(None).await.unwrap().status(), 401, "no key");
    assert_eq!(send(Some("Bearer wrong")).await.unwrap().status(), 401, "wrong key");
    assert_eq!(
        send(Some("k")).await.unwrap().status(),
        401,
        "key without the Bearer scheme"
    );
    assert_eq!(
        send(Some("Bearer kk")).await.unwrap().status(),
        401,
        "key with the right prefix"
    );
    assert_eq!(send(Some("Bearer ")).await.unwrap().status(), 401, "empty key");
    let ok = send(Some("Bearer k")).await.unwrap();
    assert_eq!(ok.status(), 200, "right key");
    assert_eq!(json_of(ok).await["usage"]["completion_tokens"], 2);

    let chat = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1});
    let unauth = post_json(&c, format!("{}/v1/chat/completions", h.url()), &chat).await;
    assert_eq!(unauth.status(), 401);
    let err = json_of(unauth).await;
    assert!(
        err["error"]["message"].is_string(),
        "401 carries an OpenAI-style error: {err}"
    );
    let models = format!("{}/v1/models", h.url());
    assert_eq!(c.get(&models).send().await.unwrap().status(), 401);
    let models_ok = c.get(&models).bearer_auth("k").send().await.unwrap();
    assert_eq!(models_ok.status(), 200);
    let resource = format!("{}/resource", h.url());
    assert_eq!(c.get(&resource).send().await.unwrap().status(), 401);
    assert_eq!(c.get(&resource).bearer_auth("k").send().await.unwrap().status(), 200);
    let off = json!({"state": "off"});
    let r = c.post(&resource).body(off.to_string()).send().await.unwrap();
    assert_eq!(r.status(), 401, "switching off needs the key");
    // ... and it stayed on.
    assert_eq!(send(Some("Bearer k")).await.unwrap().status(), 200);
    // The scheme is case-insensitive (RFC 7235); the key is not.
    assert_eq!(send(Some("bearer k")).await.unwrap().status(), 200);
    assert_eq!(send(Some("BEARER K")).await.unwrap().status(), 401);

    // No key needed for health and metrics.
    assert_eq!(c.get(format!("{}/health", h.url())).send().await.unwrap().status(), 200);
    let m = metrics_text(&c, &h).await;
    assert!(
        metric(&m, "sizeup_sim_requests_total{outcome=\"unauthorized_401\"}") >= 6.0,
        "{m}"
    );
    assert_eq!(metric(&m, "sizeup_sim_requests_total{outcome=\"ok\"}"), 3.0, "{m}");
    h.shutdown().await;
}

async fn resource(c: &reqwest::Client, h: &SimHandle, body: Option<Value>) -> Value {
    let url = format!("{}/resource", h.url());
    let resp = match body {
        Some(b) => post_json(c, url, &b).await,
        None => c.get(url).send().await.expect("resource answered"),
    };
    assert_eq!(resp.status(), 200);
    json_of(resp).await
}

async fn infer_status(c: &reqwest::Client, h: &SimHandle) -> reqwest::Response {
    post_json(
        c,
        format!("{}/v1/completions", h.url()),
        &json!({"prompt": "a b", "max_tokens": 2}),
    )
    .await
}

fn retry_after(resp: &reqwest::Response) -> u64 {
    let v = resp
        .headers()
        .get("retry-after")
        .unwrap_or_else(|| panic!("{} answer without Retry-After", resp.status()));
    v.to_str()
        .unwrap()
        .parse::<u64>()
        .expect("Retry-After is a number of seconds")
}

// 4. The resource lifecycle: off -> 503, on -> 200, start-up delay, GPU count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_lifecycle() {
    let c = client();
    let h = start(SimConfig {
        gpus: 2,
        ..quick_config()
    })
    .await;
    assert_eq!(resource(&c, &h, None).await, json!({"state": "on", "gpus": 2}));
    assert_eq!(infer_status(&c, &h).await.status(), 200);

    let off = resource(&c, &h, Some(json!({"state": "off"}))).await;
    assert_eq!(off["state"], "off");
    assert_eq!(resource(&c, &h, None).await["state"], "off");
    let r = infer_status(&c, &h).await;
    assert_eq!(r.status(), 503, "inference while off");
    assert!(retry_after(&r) >= 1);
    let chat = json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 1});
    let r = post_json(&c, format!("{}/v1/chat/completions", h.url()), &chat).await;
    assert_eq!(r.status(), 503, "chat while off");
    assert_eq!(c.get(format!("{}/health", h.url())).send().await.unwrap().status(), 503);

    let on = resource(&c, &h, Some(json!({"state": "on"}))).await;
    assert_eq!(on, json!({"state": "on", "gpus": 2}), "no start delay: on at once");
    assert_eq!(infer_status(&c, &h).await.status(), 200);
    assert_eq!(c.get(format!("{}/health", h.url())).send().await.unwrap().status(), 200);

    // GPU count: resource API and /metrics agree.
    let m = metrics_text(&c, &h).await;
    assert_eq!(metric(&m, "sizeup_sim_gpus"), 2.0);
    let three = resource(&c, &h, Some(json!({"gpus": 3}))).await;
    assert_eq!(three, json!({"state": "on", "gpus": 3}));
    assert_eq!(resource(&c, &h, None).await["gpus"], 3);
    assert_eq!(metric(&metrics_text(&c, &h).await, "sizeup_sim_gpus"), 3.0);
    assert_eq!(resource(&c, &h, Some(json!({"gpus": 1}))).await["gpus"], 1);
    assert_eq!(metric(&metrics_text(&c, &h).await, "sizeup_sim_gpus"), 1.0);
    assert_eq!(infer_status(&c, &h).await.status(), 200, "still serves on one GPU");
    let bad = post_json(&c, format!("{}/resource", h.url()), &json!({"state": "sideways"})).await;
    assert_eq!(bad.status(), 400);
    let bad = post_json(&c, format!("{}/resource", h.url()), &json!({"gpus": 0})).await;
    assert_eq!(bad.status(), 400);
    // A request with one bad field changes nothing.
    let bad = post_json(
        &c,
        format!("{}/resource", h.url()),
        &json!({"gpus": 3, "state": "bogus"}),
    )
    .await;
    assert_eq!(bad.status(), 400);
    assert_eq!(
        resource(&c, &h, None).await["gpus"],
        1,
        "gpus unchanged by a rejected request"
    );

    // Switching off aborts a request that is running: it ends with 503, not a hang or a 200.
    let long = {
        let c = c.clone();
        let url = format!("{}/v1/completions", h.url());
        tokio::spawn(async move {
            let body = json!({"prompt": "a", "max_tokens": 5000});
            c.post(url)
                .body(body.to_string())
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    resource(&c, &h, Some(json!({"state": "off"}))).await;
    let status = tokio::time::timeout(Duration::from_secs(3), long)
        .await
        .expect("the running request ends when the resource is switched off")
        .unwrap()
        .expect("it gets an answer");
    assert_eq!(status, 503);
    let m = metrics_text(&c, &h).await;
    assert_eq!(metric(&m, "sizeup_sim_requests_running"), 0.0, "{m}");
    assert_eq!(metric(&m, "sizeup_sim_requests_total{outcome=\"aborted\"}"), 1.0, "{m}");
    h.shutdown().await;

    // Starting off, with a start-up delay.
    let delay = Duration::from_millis(300);
    let h = start(SimConfig {
        start_off: true,
        start_delay: delay,
        ..quick_config()
    })
    .await;
    assert_eq!(resource(&c, &h, None).await["state"], "off");
    assert_eq!(infer_status(&c, &h).await.status(), 503);
    let switched = Instant::now();
    let starting = resource(&c, &h, Some(json!({"state": "on"}))).await;
    assert_eq!(starting["state"], "starting");
    let r = infer_status(&c, &h).await;
    assert!(
        switched.elapsed() < delay,
        "the machine was too slow to observe the start-up"
    );
    assert_eq!(r.status(), 503, "inference while starting");
    assert!(retry_after(&r) >= 1);
    assert_eq!(c.get(format!("{}/health", h.url())).send().await.unwrap().status(), 503);
    tokio::time::sleep(delay + Duration::from_millis(100)).await;
    assert_eq!(resource(&c, &h, None).await["state"], "on");
    assert_eq!(infer_status(&c, &h).await.status(), 200, "on after the delay");
    assert_eq!(c.get(format!("{}/health", h.url())).send().await.unwrap().status(), 200);
    let m = metrics_text(&c, &h).await;
    assert_eq!(
        metric(&m, "sizeup_sim_requests_total{outcome=\"unavailable_503\"}"),
        2.0,
        "{m}"
    );
    h.shutdown().await;
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

/// Sends one request over a raw TCP connection and returns every byte the server sent back
/// before closing it.
async fn raw_exchange(h: &SimHandle, body: &str) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let req = format!(
        "POST /v1/completions HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        h.addr,
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await {
        Ok(Ok(_)) => {}
        // A reset while reading also means: closed, nothing more to read.
        Ok(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Err(_) => panic!("the server neither answered nor closed the connection"),
    }
    buf
}

// 5. Injected faults, and their determinism for a seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_injected_and_replayable() {
    let c = client();
    let h = start(SimConfig {
        fail_rate: 1.0,
        ..quick_config()
    })
    .await;
    for _ in 0..3 {
        let r = infer_status(&c, &h).await;
        assert_eq!(r.status(), 500);
        assert!(json_of(r).await["error"]["message"].is_string());
    }
    h.shutdown().await;

    let h = start(SimConfig {
        throttle_rate: 1.0,
        retry_after: Duration::from_secs(7),
        ..quick_config()
    })
    .await;
    for _ in 0..3 {
        let r = infer_status(&c, &h).await;
        assert_eq!(r.status(), 429);
        assert_eq!(retry_after(&r), 7);
    }
    h.shutdown().await;

    let h = start(SimConfig {
        reset_rate: 1.0,
        ..quick_config()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(outcome(&c, &h).await, "reset");
    }
    let raw = raw_exchange(&h, r#"{"prompt":"a","max_tokens":1}"#).await;
    assert!(
        raw.is_empty(),
        "a reset sends no HTTP answer, got {:?}",
        String::from_utf8_lossy(&raw)
    );
    // Health, metrics and the resource API are never faulted.
    assert_eq!(c.get(format!("{}/health", h.url())).send().await.unwrap().status(), 200);
    let m = metrics_text(&c, &h).await;
    assert_eq!(metric(&m, "sizeup_sim_requests_total{outcome=\"reset\"}"), 4.0, "{m}");
    assert_eq!(metric(&m, "sizeup_sim_requests_total{outcome=\"ok\"}"), 0.0, "{m}");
    h.shutdown().await;

    // Mixed faults: the same seed replays the same outcomes on a fresh server.
    async fn sequence(seed: u64) -> Vec<String> {
        let h = start(SimConfig {
            fail_rate: 0.2,
            throttle_rate: 0.2,
            reset_rate: 0.2,
            seed,
            ..quick_config()
        })
        .await;
        let c = client();
        let mut out = Vec::new();
        for _ in 0..40 {
            out.push(outcome(&c, &h).await);
        }
        h.shutdown().await;
        out
    }
    let a = sequence(42).await;
    let b = sequence(42).await;
    let other = sequence(43).await;
    assert_eq!(a, b, "same seed, same outcomes");
    assert_ne!(a, other, "another seed, other outcomes");
    for kind in ["200", "500", "429", "reset"] {
        let n = a.iter().filter(|o| *o == kind).count();
        // 40 draws at 20/20/20/40 %: each kind well represented (binomial, > 5 sigma margins).
        assert!((1..=30).contains(&n), "{kind} seen {n} times in {a:?}");
    }
    assert!(
        a.iter().all(|o| ["200", "500", "429", "reset"].contains(&o.as_str())),
        "{a:?}"
    );
}

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

// 6. Streaming: one token per SSE event, usage when asked for, then [DONE], nothing after.
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

// 7. Non-streamed JSON answers, models, and request validation.
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

// 8. Prometheus metrics: answered requests, tokens, and the high-water mark of concurrency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_and_concurrency() {
    let c = client();
    let h = start(SimConfig {
        params: params(8, 5.0, 0.0, 0.0),
        ..quick_config()
    })
    .await;
    let resp = c.get(format!("{}/metrics", h.url())).send().await.unwrap();
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain"), "{ct}");
    let m = resp.text().await.unwrap();
    assert!(m.contains("# TYPE sizeup_sim_requests_total counter"), "{m}");
    assert!(m.contains("# TYPE sizeup_sim_requests_in_flight_max gauge"), "{m}");
    for line in m.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample {line:?}"));
        // Its own names, and vLLM's (a vLLM-shaped target for --server-metrics).
        assert!(name.starts_with("sizeup_sim_") || name.starts_with("vllm:"), "{line:?}");
        assert!(value.parse::<f64>().is_ok(), "{line:?}");
    }
    assert_eq!(metric(&m, "sizeup_sim_requests_in_flight_max"), 0.0);
    assert_eq!(metric(&m, "sizeup_sim_batch_size"), 8.0);
    for name in [
        "vllm:num_requests_running{model_name=",
        "vllm:num_requests_waiting{model_name=",
        "vllm:kv_cache_usage_perc{model_name=",
        "vllm:num_preemptions_total{model_name=",
        "vllm:prompt_tokens_total{model_name=",
        "vllm:generation_tokens_total{model_name=",
    ] {
        assert!(m.contains(name), "no {name} in\n{m}");
    }

    // A closed loop of 5, 4 tokens each (20 ms per request), 300 ms long.
    let body = json!({"prompt": "p q r", "max_tokens": 4});
    let stats = closed_loop(
        &h.url(),
        5,
        &body,
        Duration::from_millis(0),
        Duration::from_millis(250),
        Duration::from_millis(300),
        200,
    )
    .await;
    assert_eq!(stats.failures, 0);
    assert!(stats.total_ok >= 25, "only {} answers", stats.total_ok);
    // One 400 must not count as ok.
    let resp = post_json(
        &c,
        format!("{}/v1/completions", h.url()),
        &json!({"prompt": "x", "max_tokens": 0}),
    )
    .await;
    assert_eq!(resp.status(), 400);

    let m = metrics_text(&c, &h).await;
    let ok = stats.total_ok as f64;
    assert_eq!(metric(&m, "sizeup_sim_requests_total{outcome=\"ok\"}"), ok, "{m}");
    assert_eq!(
        metric(&m, "sizeup_sim_requests_total{outcome=\"bad_request_400\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "sizeup_sim_requests_total{outcome=\"error_500\"}"),
        0.0,
        "{m}"
    );
    assert_eq!(metric(&m, "sizeup_sim_requests_in_flight_max"), 5.0, "{m}");
    assert_eq!(metric(&m, "sizeup_sim_requests_in_flight"), 0.0, "{m}");
    assert_eq!(metric(&m, "sizeup_sim_requests_running"), 0.0, "{m}");
    assert_eq!(metric(&m, "sizeup_sim_requests_waiting"), 0.0, "{m}");
    assert_eq!(metric(&m, "sizeup_sim_generation_tokens_total"), 4.0 * ok, "{m}");
    assert_eq!(metric(&m, "sizeup_sim_prompt_tokens_total"), 3.0 * ok, "{m}");
    h.shutdown().await;
}

// 9. A client that goes away mid-stream frees its GPU slot at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_mid_stream_frees_the_slot() {
    let _lock = TIMING.lock().await;
    let h = start(SimConfig {
        gpus: 1,
        params: params(1, 5.0, 0.0, 0.0),
        ..quick_config()
    })
    .await;
    let c = client();
    let started = Instant::now();
    // 1000 tokens x 5 ms: the only slot is busy for 5 s unless the abandoned stream frees it.
    let body = json!({"prompt": "long", "max_tokens": 1000, "stream": true});
    let mut resp = post_json(&c, format!("{}/v1/completions", h.url()), &body).await;
    assert_eq!(resp.status(), 200);
    let mut seen = String::new();
    while seen.matches("\n\n").count() < 3 {
        let chunk = tokio::time::timeout(Duration::from_secs(2), resp.chunk())
            .await
            .expect("events keep coming")
            .expect("stream readable")
            .expect("stream not finished");
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    drop(resp);

    let second = Instant::now();
    let v = json_of(
        post_json(
            &c,
            format!("{}/v1/completions", h.url()),
            &json!({"prompt": "short", "max_tokens": 2}),
        )
        .await,
    )
    .await;
    let waited = second.elapsed();
    assert_eq!(v["usage"]["completion_tokens"], 2);
    assert!(
        waited < Duration::from_millis(1500) && started.elapsed() < Duration::from_secs(3),
        "the new request waited {waited:?}: the abandoned stream kept the slot"
    );
    let m = metrics_text(&c, &h).await;
    assert_eq!(metric(&m, "sizeup_sim_cancelled_total"), 1.0, "{m}");
    assert_eq!(metric(&m, "sizeup_sim_requests_running"), 0.0, "{m}");
    assert_eq!(metric(&m, "sizeup_sim_requests_in_flight"), 0.0, "{m}");
    assert!(
        metric(&m, "sizeup_sim_generation_tokens_total") < 400.0,
        "tokens kept coming for the abandoned stream:\n{m}"
    );

    // The same for a non-streamed request whose client gives up (times out) while it waits.
    let gave_up = c
        .post(format!("{}/v1/completions", h.url()))
        .timeout(Duration::from_millis(200))
        .body(json!({"prompt": "long", "max_tokens": 1000}).to_string())
        .send()
        .await;
    assert!(
        gave_up.is_err_and(|e| e.is_timeout()),
        "the 5 s request cannot finish in 200 ms"
    );
    let third = Instant::now();
    let v = json_of(
        post_json(
            &c,
            format!("{}/v1/completions", h.url()),
            &json!({"prompt": "short", "max_tokens": 2}),
        )
        .await,
    )
    .await;
    assert_eq!(v["usage"]["completion_tokens"], 2);
    let waited = third.elapsed();
    assert!(
        waited < Duration::from_millis(1500),
        "the new request waited {waited:?}: the abandoned request kept the slot"
    );
    let m = metrics_text(&c, &h).await;
    assert_eq!(metric(&m, "sizeup_sim_cancelled_total"), 2.0, "{m}");
    assert_eq!(metric(&m, "sizeup_sim_requests_in_flight"), 0.0, "{m}");
    assert_eq!(metric(&m, "sizeup_sim_requests_total{outcome=\"ok\"}"), 2.0, "{m}");
    h.shutdown().await;
}

// 10. --served-model-name: strict, with vLLM's exact 404 for any other model.
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

// 11. Embeddings: OpenAI's shape, one deterministic unit vector per input, usage by input tokens.
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

// 12. Embeddings take batch slots like any sequence: with one slot they run one after another,
//     behind a generation request holding it. Only lower bounds on time, which load cannot break.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_wait_for_batch_slots() {
    let _lock = TIMING.lock().await;
    // One slot; 2 input tokens x 75 ms per token = 150 ms of prefill per embedding.
    let h = start(SimConfig {
        params: params(1, 20.0, 0.0, 75_000.0),
        ..quick_config()
    })
    .await;
    let c = client();
    let u = h.url();
    let started = Instant::now();
    // 10 tokens x 20 ms: the slot is busy for 200 ms (plus a 0-token prompt's prefill).
    let gen = {
        let c = c.clone();
        let u = u.clone();
        tokio::spawn(async move {
            let v = json_of(
                post_json(
                    &c,
                    format!("{u}/v1/completions"),
                    &json!({"prompt": "", "max_tokens": 10}),
                )
                .await,
            )
            .await;
            (v, started.elapsed())
        })
    };
    // The generation holds the slot before any embedding is sent, so they queue behind it.
    while metric(&metrics_text(&c, &h).await, "sizeup_sim_requests_running") < 1.0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let embeds: Vec<_> = (0..3)
        .map(|_| {
            let c = c.clone();
            let u = u.clone();
            tokio::spawn(async move {
                let resp = post_json(&c, format!("{u}/v1/embeddings"), &json!({"input": "two words"})).await;
                assert_eq!(resp.status(), 200);
                started.elapsed()
            })
        })
        .collect();
    let (gv, gen_done) = gen.await.unwrap();
    assert_eq!(gv["usage"]["completion_tokens"], 10, "{gv}");
    let mut ends = Vec::new();
    for e in embeds {
        ends.push(e.await.unwrap());
    }
    ends.sort();
    // Serialized behind the generation: the k-th embedding ends no earlier than 200 + k x 150 ms
    // (slack for the scheduler's early delivery: at most half a millisecond per hand-over).
    for (k, end) in ends.iter().enumerate() {
        let floor = Duration::from_millis(200 + 150 * (k as u64 + 1) - 5);
        assert!(*end >= floor, "embedding {k} ended at {end:?}, before {floor:?}: it did not wait for a slot ({ends:?}, generation {gen_done:?})");
    }
    let m = metrics_text(&c, &h).await;
    assert_eq!(
        metric(&m, "sizeup_sim_requests_in_flight_max"),
        4.0,
        "all four were in flight at once: {m}"
    );
    assert_eq!(metric(&m, "sizeup_sim_requests_running"), 0.0, "{m}");
    assert_eq!(metric(&m, "sizeup_sim_requests_total{outcome=\"ok\"}"), 4.0, "{m}");
    h.shutdown().await;
}
