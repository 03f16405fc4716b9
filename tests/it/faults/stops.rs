//! When to stop rather than retry: a refused key (exit 3, naming the variable, never the key),
//! an endpoint that nothing answers on (exit 3), and a failure that every answer repeats (stopped
//! after a few, with a hint, and `--resume` completes the job once it is fixed).

use crate::util::run::{
    errors_path, is_success, metrics, outcome, read_records, run_async, run_sync, s, sim_cfg, write_batch, FAST_RETRY,
};
use crate::util::{chat_file, fast_sim, read_json, sim_metric, sizeup, tokio_sizeup};
use sizeup::secret::Secret;
use sizeup::sim::{SimConfig, SimHandle};
use std::collections::BTreeMap;
use std::path::Path;

const WRONG_KEY: &str = "wrong-Xk93LqPz7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_stops_the_run_with_exit_3() {
    let sim = SimHandle::start(SimConfig {
        api_key: Some(Secret::new("right")),
        ..sim_cfg(1, 8, 2.0)
    })
    .await
    .expect("sim");
    let url = sim.url();
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = write_batch(dir.path(), "jobs.jsonl", 200, 2);

    // --model skips GET /v1/models, so the refusal comes from the inference requests.
    let out = dir.path().join("out.jsonl");
    let summary = dir.path().join("summary.json");
    let r = run_async(
        &[
            "--endpoint",
            &url,
            "--model",
            "sizeup-sim",
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
        ],
        &[("SIZEUP_API_KEY", WRONG_KEY)],
    )
    .await;
    assert_eq!(r.code, Some(3), "{r:?}");
    assert!(r.stderr.contains("SIZEUP_API_KEY"), "stderr names the variable: {r:?}");
    assert!(
        !r.stderr.contains(WRONG_KEY) && !r.stderr.contains("Xk93Lq"),
        "stderr leaks the key: {r:?}"
    );
    assert!(!r.stdout.contains("Xk93Lq"), "stdout leaks the key: {r:?}");
    assert!(!r.stderr.contains("panicked"), "{r:?}");
    let m = metrics(&url).await;
    let refused = outcome(&m, "unauthorized_401");
    assert!(refused >= 1, "{m:?}");
    assert!(
        refused <= 8,
        "after the first 401 at most the in-flight requests may still arrive; got {refused}: {m:?}"
    );
    assert_eq!(outcome(&m, "ok"), 0, "{m:?}");
    assert_refused_output_is_clean(&out, &summary, refused);

    // Without --model the first refusal is GET /v1/models: still exit 3, no inference sent.
    let before = metrics(&url).await;
    let out2 = dir.path().join("out2.jsonl");
    let r = run_async(
        &[
            "--endpoint",
            &url,
            "--input",
            s(&input),
            "--output",
            s(&out2),
            "--concurrency",
            "4",
        ],
        &[("OPENAI_API_KEY", WRONG_KEY)],
    )
    .await;
    assert_eq!(r.code, Some(3), "{r:?}");
    assert!(
        r.stderr.contains("OPENAI_API_KEY") && !r.stderr.contains("Xk93Lq"),
        "{r:?}"
    );
    let after = metrics(&url).await;
    assert!(
        outcome(&after, "unauthorized_401") - outcome(&before, "unauthorized_401") <= 8,
        "{after:?}"
    );
    assert_eq!(outcome(&after, "ok"), 0);

    // No key at all: exit 3 with a hint to set one.
    let out3 = dir.path().join("out3.jsonl");
    let r = run_async(
        &[
            "--endpoint",
            &url,
            "--model",
            "sizeup-sim",
            "--input",
            s(&input),
            "--output",
            s(&out3),
            "--concurrency",
            "4",
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, Some(3), "{r:?}");
    assert!(
        r.stderr.contains("SIZEUP_API_KEY"),
        "hint names the variable to set: {r:?}"
    );
    let end = metrics(&url).await;
    assert!(
        outcome(&end, "unauthorized_401") - outcome(&after, "unauthorized_401") <= 8,
        "{end:?}"
    );
    sim.shutdown().await;
}

/// What a refused run leaves (output, errors file, summary) holds no part of the key, no
/// success, and no more lines than requests refused.
fn assert_refused_output_is_clean(out: &Path, summary: &Path, refused: u64) {
    for f in [out.to_path_buf(), errors_path(out), summary.to_path_buf()] {
        if f.exists() {
            let text = std::fs::read_to_string(&f).unwrap();
            assert!(!text.contains("Xk93Lq"), "{} leaks the key", f.display());
        }
    }
    if out.exists() {
        let recs = read_records(out);
        assert!(recs.len() as u64 <= refused, "no more lines than refused requests");
        assert!(recs.iter().all(|r| !is_success(r)), "nothing succeeded");
    }
}

#[test]
fn endpoint_refusing_every_connection_is_unusable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = write_batch(dir.path(), "jobs.jsonl", 3, 2);
    let out = dir.path().join("out.jsonl");

    // Without --model the probe finds it: exit 3.
    let r = run_sync(
        &[
            "--endpoint",
            &url,
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--concurrency",
            "2",
        ],
        &[],
    );
    assert_eq!(r.code, Some(3), "{r:?}");

    // With --model nothing is probed; nothing can be sent either.
    let out2 = dir.path().join("out2.jsonl");
    let r = run_sync(
        &[
            "--endpoint",
            &url,
            "--model",
            "m",
            "--input",
            s(&input),
            "--output",
            s(&out2),
            "--concurrency",
            "2",
            FAST_RETRY[0],
            FAST_RETRY[1],
            FAST_RETRY[2],
            FAST_RETRY[3],
        ],
        &[],
    );
    assert_eq!(
        r.code,
        Some(3),
        "connection refused on every request is an unusable endpoint: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_of_an_unusable_endpoint_exits_3() {
    // Refused connection.
    let out = tokio::task::spawn_blocking(|| {
        sizeup()
            .args([
                "sweep",
                "--endpoint",
                "http://127.0.0.1:1",
                "--model",
                "m",
                "--concurrency",
                "1",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    // Every warm-up request refused (401): the hint names the variable, never the key.
    let mut cfg = fast_sim(1, 2, 1.0, 0.0);
    cfg.api_key = Some(sizeup::secret::Secret::new("right-key"));
    let sim = SimHandle::start(cfg).await.unwrap();
    let url = sim.url();
    let out = tokio::task::spawn_blocking(move || {
        sizeup()
            .env("SIZEUP_API_KEY", "wrong-key-123")
            .args([
                "sweep",
                "--endpoint",
                &url,
                "--concurrency",
                "1",
                "--warmup",
                "100ms",
                "--model",
                "sizeup-sim",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    sim.shutdown().await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("SIZEUP_API_KEY"), "{err}");
    assert!(!err.contains("wrong-key-123"), "the key leaked: {err}");
}

/// A simulator that serves only `model` and answers others 404, as vLLM does.
fn strict_sim(model: &str) -> sizeup::sim::SimConfig {
    sizeup::sim::SimConfig {
        model: model.to_string(),
        strict_model: true,
        ..fast_sim(1, 8, 1.0, 0.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_model_stops_early_and_resume_completes() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("job.jsonl");
    chat_file(&input, 5000, "wrong-model");
    let sim = SimHandle::start(strict_sim("served-model")).await.unwrap();
    let url = sim.url();
    let out = dir.path().join("out.jsonl");
    let run = |input: &std::path::Path, resume: bool| {
        let mut c = tokio_sizeup();
        c.args([
            "run",
            "--endpoint",
            &url,
            "--api",
            "chat",
            "--concurrency",
            "8",
            "--input",
        ])
        .arg(input)
        .arg("--output")
        .arg(&out);
        if resume {
            c.arg("--resume");
        }
        c.output()
    };
    let o = run(&input, false).await.unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert_eq!(
        stderr.matches("all failed the same way").count(),
        1,
        "the error once: {stderr}"
    );
    assert!(stderr.contains("model name"), "a hint names the fix: {stderr}");
    let sent = sim_metric(&url, "sizeup_sim_requests_total").await;
    assert!(sent <= 20.0 + 8.0, "sent {sent} requests; at most N + concurrency");
    let written = std::fs::read_to_string(&out).unwrap().lines().count();
    assert_eq!(written as f64, sent, "every request sent has its output line");
    let summary = read_json(&dir.path().join("run-summary.json"));
    assert!(
        summary["stopped_reason"].as_str().unwrap().contains("systematic"),
        "{summary:#}"
    );

    // Fixed file, same ids: --resume sends the rest and retries the failures.
    chat_file(&input, 5000, "served-model");
    let o = run(&input, true).await.unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    sim.shutdown().await;
    let mut ok = BTreeMap::new();
    for line in std::fs::read_to_string(&out).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["response"]["status_code"] == 200 {
            *ok.entry(v["custom_id"].as_str().unwrap().to_string()).or_insert(0) += 1;
        }
    }
    assert_eq!(ok.len(), 5000);
    assert!(ok.values().all(|&n| n == 1));
}
