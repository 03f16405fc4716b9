//! The simulator's controls: the API key guards inference, models and the resource API; the
//! resource switches off and on (with its start-up delay and GPU count); injected faults come at
//! their rates and replay the same for a seed.

use super::{client, json_of, metric, metrics_text, outcome, post_json, quick_config, start};
use serde_json::{json, Value};
use sizeup::secret::Secret;
use sizeup::sim::{SimConfig, SimHandle};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// The API key guards inference, models and the resource API; health and metrics stay open.
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

// The resource lifecycle: off -> 503, on -> 200, start-up delay, GPU count.
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

// Injected faults, and their determinism for a seed.
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
