//! What is retried and what is not: 5xx and resets with backoff, 429 no sooner than its
//! Retry-After and without using a retry (a hosted API's rate limit loses no line), 4xx never; a request out of retries is one failed record (exit 1), and
//! `--resume` retries the failures and only those.

use crate::util::read_json;
use crate::util::run::{
    assert_each_once_ok, custom_id, errors_path, id_counts, is_success, metrics, outcome, read_records, run_async,
    run_into, run_sync, s, sim_cfg, u, write_batch, FAST_RETRY,
};
use serde_json::{json, Value};
use sizeup::sim::{SimConfig, SimHandle};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_retried_and_every_id_succeeds_once() {
    let sim = SimHandle::start(SimConfig {
        fail_rate: 0.05,
        reset_rate: 0.02,
        ..sim_cfg(2, 8, 2.0)
    })
    .await
    .expect("sim");
    let dir = tempfile::tempdir().unwrap();
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 300, 2);
    let out = dir.path().join("out.jsonl");
    let summary = dir.path().join("summary.json");
    let url = sim.url();
    let r = run_async(
        &[
            "--endpoint",
            &url,
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--summary",
            s(&summary),
            "--concurrency",
            "16",
            FAST_RETRY[0],
            FAST_RETRY[1],
            FAST_RETRY[2],
            FAST_RETRY[3],
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, Some(0), "{r:?}");
    let recs = read_records(&out);
    assert_each_once_ok(&recs, &want, "output with faults");
    assert!(!errors_path(&out).exists(), "retried-then-ok requests are not failures");

    let sm = read_json(&summary);
    let m = metrics(&url).await;
    let faults = outcome(&m, "error_500") + outcome(&m, "reset") + outcome(&m, "throttled_429");
    assert!(
        outcome(&m, "error_500") > 0 && outcome(&m, "reset") > 0,
        "the sim injected both faults: {m:?}"
    );
    assert_eq!(u(&sm, "requests_ok"), 300, "{sm}");
    assert_eq!(u(&sm, "requests_failed"), 0, "{sm}");
    assert!(u(&sm, "retries") > 0, "{sm}");
    assert!(
        u(&sm, "requests_retried") > 0 && u(&sm, "requests_retried") <= u(&sm, "retries"),
        "{sm}"
    );
    // Every failed attempt is retried once, and nothing else is.
    assert_eq!(
        u(&sm, "retries"),
        faults,
        "retries vs faults the sim injected: {sm} {m:?}"
    );
    // A success is never sent again.
    assert_eq!(outcome(&m, "ok"), 300, "{m:?}");
    sim.shutdown().await;
}

#[test]
fn throttling_429_honours_retry_after() {
    // The built-in simulator (no --endpoint) with its own fault flags.
    let dir = tempfile::tempdir().unwrap();
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 40, 2);
    let out = dir.path().join("out.jsonl");
    let summary = dir.path().join("summary.json");
    let r = run_sync(
        &[
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--summary",
            s(&summary),
            "--concurrency",
            "8",
            "--gpus",
            "1",
            "--batch",
            "8",
            "--decode-step-ms",
            "2",
            "--throttle-rate",
            "0.1",
            FAST_RETRY[0],
            FAST_RETRY[1],
            FAST_RETRY[2],
            FAST_RETRY[3],
        ],
        &[],
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_each_once_ok(&read_records(&out), &want, "output with 429s");
    let sm = read_json(&summary);
    assert_eq!(u(&sm, "requests_ok"), 40, "{sm}");
    assert!(u(&sm, "rate_limited") > 0, "seed 1 throttles some of 40 requests: {sm}");
    assert_eq!(u(&sm, "retries"), 0, "a 429 uses no retry: {sm}");
    // A throttled request waits at least its Retry-After (1 s) although --retry-max is 50ms:
    // a lower bound, which a slow machine only makes easier to meet.
    let wall = sm["wall_time_s"].as_f64().expect("wall_time_s");
    assert!(
        wall >= 0.95,
        "429 retried before its Retry-After of 1 s: wall {wall}s, {sm}"
    );
}

/// A 429 storm (half of all answers, no limits announced): with no retry allowed at all, every
/// line still succeeds once, as no 429 uses a retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_storm_loses_no_line_and_uses_no_retry() {
    let sim = SimHandle::start(SimConfig {
        throttle_rate: 0.5,
        retry_after: Duration::from_secs(1),
        ..sim_cfg(2, 16, 2.0)
    })
    .await
    .expect("sim");
    let url = sim.url();
    let dir = tempfile::tempdir().unwrap();
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 100, 2);
    let extra = ["--concurrency", "32", "--retries", "0"];
    let (r, records, sm) = run_into(&url, &input, dir.path(), &extra).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_each_once_ok(&records, &want, "output under a 429 storm");
    let m = metrics(&url).await;
    assert!(outcome(&m, "throttled_429") >= 50, "no storm to weather: {m:?}");
    assert_eq!(u(&sm, "rate_limited"), outcome(&m, "throttled_429"), "{sm} {m:?}");
    assert_eq!((u(&sm, "retries"), u(&sm, "requests_failed")), (0, 0), "{sm}");
    assert!(r.stderr.contains("answers of 429 waited out"), "{}", r.stderr);
    sim.shutdown().await;
}

/// A hosted API's limit (the simulator's `--rpm-limit`, 20 requests a second): every answer
/// announces it in OpenAI's headers, and the run paces itself to the room they leave, so 32 in
/// flight draw few 429s (those of the first burst, sent before any answer said anything).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_announced_limits_pace_the_run() {
    let sim = SimHandle::start(SimConfig {
        rpm_limit: Some(1200),
        ..sim_cfg(2, 16, 2.0)
    })
    .await
    .expect("sim");
    let url = sim.url();
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/completions"))
        .header("content-type", "application/json")
        .body(json!({"prompt": "a", "max_tokens": 1}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = |k: &str| r.headers().get(k).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(h("x-ratelimit-limit-requests").as_deref(), Some("1200"));
    assert_eq!(h("x-ratelimit-remaining-requests").as_deref(), Some("19"));
    assert!(
        h("x-ratelimit-reset-requests").is_some_and(|v| v.ends_with('s')),
        "{:?}",
        r.headers()
    );
    let dir = tempfile::tempdir().unwrap();
    // 5 s at the limit.
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 100, 2);
    let extra = ["--concurrency", "32", "--retries", "0"];
    let (r, records, sm) = run_into(&url, &input, dir.path(), &extra).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_each_once_ok(&records, &want, "output under a rate limit");
    let m = metrics(&url).await;
    // The first burst draws 12 (32 sent before any answer, 20 admitted); paced, few more.
    assert!(
        outcome(&m, "throttled_429") <= 20,
        "the run did not pace itself: {sm} {m:?}"
    );
    assert_eq!(u(&sm, "requests_failed"), 0, "{sm}");
    sim.shutdown().await;
}

/// A hosted API's token limit (`--tpm-limit`, 1,000 tokens a second), with no budget flag: the
/// run charges each request its tokens as read from its bytes (prompt at the tokens per byte the
/// answers report, plus its `max_tokens`) against the room the headers announce, so 32 in flight
/// draw almost no 429s where one token a request would let them storm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_announced_token_limit_paces_the_run_with_no_budget_flag() {
    let sim = SimHandle::start(SimConfig {
        tpm_limit: Some(60_000),
        ..sim_cfg(2, 16, 2.0)
    })
    .await
    .expect("sim");
    let url = sim.url();
    let dir = tempfile::tempdir().unwrap();
    // 2 prompt words + 18 = 20 tokens a line: 4,000 tokens, 4 s at the limit.
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 200, 18);
    let extra = ["--concurrency", "32", "--retries", "0"];
    let (r, records, sm) = run_into(&url, &input, dir.path(), &extra).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_each_once_ok(&records, &want, "output under a token limit");
    let m = metrics(&url).await;
    assert!(
        outcome(&m, "throttled_429") <= 10,
        "the run did not pace itself to the token limit: {sm} {m:?}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_fail_at_once_and_resume_retries_only_failures() {
    // Strict about the model name (`--served-model-name`), so the unknown model answers 404.
    let sim = SimHandle::start(SimConfig {
        strict_model: true,
        ..sim_cfg(1, 8, 2.0)
    })
    .await
    .expect("sim");
    let url = sim.url();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("jobs.jsonl");
    let line = |id: &str, body: Value| {
        json!({"custom_id": id, "method": "POST", "url": "/v1/completions", "body": body}).to_string() + "\n"
    };
    let text = [
        line("a", json!({"prompt": "one two", "max_tokens": 2})),
        line(
            "b",
            json!({"prompt": "one two", "max_tokens": 2, "model": "no-such-model"}),
        ),
        line("c", json!({"prompt": "one two", "max_tokens": 2, "stream": true})),
        line("d", json!({"prompt": "one two", "max_tokens": 2})),
        line(
            "e",
            json!({"prompt": "one two", "max_tokens": 2, "model": "no-such-model"}),
        ),
    ]
    .concat();
    std::fs::write(&input, text).unwrap();
    let out = dir.path().join("out.jsonl");
    let summary = dir.path().join("summary.json");
    let args = [
        "--endpoint",
        &url,
        "--input",
        s(&input),
        "--output",
        s(&out),
        "--summary",
        s(&summary),
        "--concurrency",
        "4",
        FAST_RETRY[0],
        FAST_RETRY[1],
        FAST_RETRY[2],
        FAST_RETRY[3],
    ];
    let r = run_async(&args, &[]).await;
    assert_eq!(r.code, Some(1), "some requests failed for good: {r:?}");
    let recs = read_records(&out);
    assert_eq!(recs.len(), 5, "{recs:?}");
    assert_eq!(id_counts(&recs).len(), 5);
    let by_id: HashMap<String, &Value> = recs.iter().map(|r| (custom_id(r), r)).collect();
    for id in ["a", "c", "d"] {
        assert!(is_success(by_id[id]), "{}", by_id[id]);
    }
    for id in ["b", "e"] {
        let r = by_id[id];
        assert!(!is_success(r) && !r["error"].is_null(), "{r}");
        assert_eq!(r["response"]["status_code"], 404, "{r}");
    }
    // A streamed answer is assembled into the same shape as a plain one.
    let streamed = by_id["c"]["response"]["body"]["choices"][0]["text"]
        .as_str()
        .expect("assembled text");
    let plain = by_id["a"]["response"]["body"]["choices"][0]["text"]
        .as_str()
        .expect("text");
    assert_eq!(streamed.split_whitespace().count(), 2, "{}", by_id["c"]);
    assert_eq!(plain.split_whitespace().count(), 2, "{}", by_id["a"]);
    let errs = read_records(&errors_path(&out));
    let err_ids: BTreeSet<String> = errs.iter().map(custom_id).collect();
    assert_eq!(
        err_ids,
        ["b", "e"].iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
        "{errs:?}"
    );
    let sm = read_json(&summary);
    assert_eq!(
        (u(&sm, "requests_ok"), u(&sm, "requests_failed"), u(&sm, "retries")),
        (3, 2, 0),
        "{sm}"
    );
    let m = metrics(&url).await;
    assert_eq!(outcome(&m, "not_found_404"), 2, "404 is not retried: {m:?}");
    assert_eq!(outcome(&m, "ok"), 3, "{m:?}");

    // --resume sends the failed ids again, and only those.
    let mut resume = args.to_vec();
    resume.push("--resume");
    let r = run_async(&resume, &[]).await;
    assert_eq!(r.code, Some(1), "{r:?}");
    let m = metrics(&url).await;
    assert_eq!((outcome(&m, "not_found_404"), outcome(&m, "ok")), (4, 3), "{m:?}");
    let recs = read_records(&out);
    let counts = id_counts(&recs);
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![1, 2, 1, 1, 2],
        "{counts:?}"
    );
    assert_eq!(read_records(&errors_path(&out)).len(), 4);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_exhaust_retries_then_fail() {
    let sim = SimHandle::start(SimConfig {
        fail_rate: 1.0,
        ..sim_cfg(1, 8, 2.0)
    })
    .await
    .expect("sim");
    let url = sim.url();
    let dir = tempfile::tempdir().unwrap();
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 5, 2);
    let out = dir.path().join("out.jsonl");
    let summary = dir.path().join("summary.json");
    let r = run_async(
        &[
            "--endpoint",
            &url,
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--summary",
            s(&summary),
            "--concurrency",
            "4",
            "--retries",
            "2",
            FAST_RETRY[0],
            FAST_RETRY[1],
            FAST_RETRY[2],
            FAST_RETRY[3],
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, Some(1), "{r:?}");
    let recs = read_records(&out);
    assert_eq!(
        id_counts(&recs).keys().cloned().collect::<Vec<_>>(),
        want,
        "one final line per id"
    );
    assert_eq!(recs.len(), 5);
    for r in &recs {
        assert!(!is_success(r), "{r}");
        assert_eq!(r["response"]["status_code"], 500, "{r}");
    }
    assert_eq!(read_records(&errors_path(&out)).len(), 5);
    let sm = read_json(&summary);
    assert_eq!(
        (u(&sm, "requests_failed"), u(&sm, "retries"), u(&sm, "requests_retried")),
        (5, 10, 5),
        "{sm}"
    );
    let m = metrics(&url).await;
    assert_eq!(outcome(&m, "error_500"), 15, "1 try + 2 retries each: {m:?}");
    sim.shutdown().await;
}
