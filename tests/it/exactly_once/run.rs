//! One run answers every line once: one record per custom_id, one request per line (the lines
//! `auto`'s sweep answered included); an existing output is never overwritten without
//! `--resume`, and a usage error sends nothing.

use crate::util::run::{
    assert_each_once_ok, errors_path, gauge, metrics, outcome, read_records, requests_seen, run_async, s, sim_cfg, u,
    write_batch, FAST_RETRY,
};
use crate::util::{assert_all_answered, fast_sim, read_json, sim_metric, sorted_file, tokio_sizeup};
use sizeup::sim::SimHandle;
use std::collections::BTreeSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_custom_id_answered_exactly_once() {
    let sim = SimHandle::start(sim_cfg(2, 8, 2.0)).await.expect("sim");
    let dir = tempfile::tempdir().unwrap();
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 500, 2);
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
    assert!(
        r.stdout.trim().is_empty(),
        "stdout carries data only; run prints none: {r:?}"
    );

    let recs = read_records(&out);
    assert_each_once_ok(&recs, &want, "output");
    // Record ids are unique too.
    let rec_ids: BTreeSet<&str> = recs.iter().map(|r| r["id"].as_str().expect("record id")).collect();
    assert_eq!(rec_ids.len(), 500, "record `id`s must be unique");
    assert!(!errors_path(&out).exists(), "a clean run leaves no errors file");

    let sm = read_json(&summary);
    assert_eq!(u(&sm, "requests_ok"), 500, "{sm}");
    assert_eq!(u(&sm, "requests_failed"), 0, "{sm}");
    assert_eq!(u(&sm, "requests_total"), 500, "{sm}");
    assert_eq!(u(&sm, "not_finished"), 0, "{sm}");
    assert_eq!(sm["interrupted"], false, "{sm}");
    assert_eq!(u(&sm, "concurrency"), 16, "{sm}");

    let m = metrics(&url).await;
    assert_eq!(outcome(&m, "ok"), 500, "each request sent once: {m:?}");
    assert_eq!(requests_seen(&m), 500, "{m:?}");
    assert!(gauge(&m, "sizeup_sim_requests_in_flight_max") <= 16, "{m:?}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_output_needs_resume_and_usage_errors_send_nothing() {
    let sim = SimHandle::start(sim_cfg(1, 8, 2.0)).await.expect("sim");
    let url = sim.url();
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = write_batch(dir.path(), "jobs.jsonl", 10, 2);
    let out = dir.path().join("out.jsonl");
    std::fs::write(&out, "keep me\n").unwrap();
    let r = run_async(
        &[
            "--endpoint",
            &url,
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--concurrency",
            "4",
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("--resume"), "hint mentions --resume: {r:?}");
    assert!(r.stderr.contains("out.jsonl"), "names the file: {r:?}");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "keep me\n",
        "existing output untouched"
    );

    // An existing errors file alone is refused too.
    let out2 = dir.path().join("out2.jsonl");
    std::fs::write(errors_path(&out2), "{}\n").unwrap();
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
        &[],
    )
    .await;
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("--resume"), "{r:?}");
    assert!(!out2.exists());
    assert_eq!(std::fs::read_to_string(errors_path(&out2)).unwrap(), "{}\n");

    // Other usage errors: exit 2, nothing sent.
    let out3 = dir.path().join("out3.jsonl");
    let missing = dir.path().join("nope.jsonl");
    for args in [
        vec![
            "--endpoint",
            &url,
            "--input",
            s(&input),
            "--output",
            s(&out3),
            "--concurrency",
            "0",
        ],
        vec![
            "--endpoint",
            &url,
            "--input",
            s(&missing),
            "--output",
            s(&out3),
            "--concurrency",
            "4",
        ],
        vec![
            "--endpoint",
            &url,
            "--input",
            s(&input),
            "--output",
            s(&out3),
            "--concurrency",
            "4",
            "--rate",
            "0",
        ],
        vec!["--endpoint", &url, "--input", s(&input), "--output", s(&out3)],
    ] {
        let r = run_async(&args, &[]).await;
        assert_eq!(r.code, Some(2), "{args:?}: {r:?}");
        assert!(r.stderr.contains("error"), "{args:?}: {r:?}");
        assert!(!r.stderr.contains("panicked"), "{args:?}: {r:?}");
        assert!(!out3.exists(), "{args:?}");
    }
    let m = metrics(&url).await;
    assert_eq!(requests_seen(&m), 0, "{m:?}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_sends_each_line_once_the_sweep_included() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("sorted.jsonl");
    sorted_file(&input, 3000, 4, 16);
    // 2 GPUs x 8 slots; 10 ms of prefill (2 prompt words) + 1 ms per output token.
    let mut cfg = fast_sim(2, 8, 1.0, 0.0);
    cfg.params.prefill_ms_per_1k = 5000.0;
    let sim = SimHandle::start(cfg).await.unwrap();
    let url = sim.url();
    let out = dir.path().join("auto");
    let o = tokio_sizeup()
        .args([
            "auto",
            "--endpoint",
            &url,
            "--gpus",
            "2",
            "--target-rpm",
            "20000",
            "--yes",
        ])
        .args([
            "--concurrency",
            "4,8,16",
            "--warmup",
            "200ms",
            "--max-duration",
            "2s",
            "--min-requests",
            "40",
        ])
        .args(["--sweep-budget", "0.2", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.code() == Some(0), "{stderr}");
    let sent = sim_metric(&url, "sizeup_sim_requests_total").await;
    sim.shutdown().await;
    assert_eq!(
        sent, 3000.0,
        "the endpoint received each line once, the sweep's included: {stderr}"
    );
    assert_all_answered(&out.join("output.jsonl"), 3000);
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["repeated_requests"], 0, "{summary:#}");
    let swept = summary["distinct_requests"].as_u64().unwrap();
    assert!(swept > 0 && swept <= 1000, "the sweep kept to its budget: {swept}");
    let run = read_json(&out.join("run-summary.json"));
    assert_eq!(
        run["skipped_already_done"].as_u64().unwrap() + run["requests_total"].as_u64().unwrap(),
        3000,
        "{run:#}"
    );
}
