//! The simulator serves what its formula says: throughput follows `expected_rpm`, requests
//! beyond G x B queue, a client that goes away frees its slot at once, embeddings take slots
//! like any sequence, and /metrics counts requests, tokens and the peak concurrency.

use super::{client, json_of, metric, metrics_text, params, post_json, quick_config, start, words, PROMPT, TIMING};
use serde_json::{json, Value};
use sizeup::sim::gpu::expected_rpm;
use sizeup::sim::SimConfig;
use std::time::{Duration, Instant};

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

// Throughput follows `expected_rpm` below, at and beyond the knee.
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

// Beyond G x B requests wait in the queue: latency grows while throughput stays flat.
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

// Prometheus metrics: answered requests, tokens, and the high-water mark of concurrency.
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

// A client that goes away mid-stream frees its GPU slot at once.
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

// Embeddings take batch slots like any sequence: with one slot they run one after another,
// behind a generation request holding it. Only lower bounds on time, which load cannot break.
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
