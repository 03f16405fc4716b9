//! A run never has more requests in flight than its concurrency, nor starts them faster than
//! `--rate`, nor sends more tokens a minute than `--max-tokens-per-minute`: the concurrency is `--concurrency`'s, else the plan's, and the shards of one job
//! share the plan's between them.

use crate::util::run::{
    assert_each_once_ok, gauge, metrics, outcome, read_records, requests_seen, run_async, run_into, run_sync, s,
    sim_cfg, u, write_batch,
};
use crate::util::{batch_file, fast_sim, read_json, sim_metric, tokio_sizeup, write_plan};
use sizeup::sim::{SimConfig, SimHandle};
use std::collections::BTreeMap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_cap_is_exact() {
    // One GPU with 64 slots: the server would take far more than 7 at once.
    let sim = SimHandle::start(sim_cfg(1, 64, 15.0)).await.expect("sim");
    let dir = tempfile::tempdir().unwrap();
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 200, 2);
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
            "7",
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_each_once_ok(&read_records(&out), &want, "output");
    let m = metrics(&url).await;
    assert_eq!(outcome(&m, "ok"), 200, "{m:?}");
    assert_eq!(
        gauge(&m, "sizeup_sim_requests_in_flight_max"),
        7,
        "--concurrency 7 must keep exactly 7 in flight (never more, and the window fills): {m:?}"
    );
    sim.shutdown().await;
}

#[test]
fn rate_cap_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 60, 1);
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
            "--rate",
            "1200",
            "--decode-step-ms",
            "1",
            "--batch",
            "8",
        ],
        &[],
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_each_once_ok(&read_records(&out), &want, "rate-capped output");
    let sm = read_json(&summary);
    let rpm = sm["achieved_rpm"].as_f64().expect("achieved_rpm");
    assert_eq!(sm["planned_rpm"].as_f64(), Some(1200.0), "{sm}");
    // The cap must hold (a busy machine can only make it slower) ...
    assert!(rpm <= 1200.0 * 1.15, "achieved {rpm} RPM over a 1200 RPM cap: {sm}");
    // ... and the 60 starts need at least 59 intervals of 50 ms.
    let wall = sm["wall_time_s"].as_f64().expect("wall_time_s");
    assert!(
        wall >= 59.0 * 0.05 * 0.95,
        "60 requests at 20/s took only {wall}s: {sm}"
    );
    // Loose lower bound: the limiter does not throttle far below the asked rate.
    assert!(rpm >= 1200.0 * 0.5, "achieved only {rpm} RPM: {sm}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_sets_concurrency_and_concurrency_flag_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 100, 2);
    let plan = dir.path().join("plan.json");
    write_plan(&plan, 1, 5, 6000.0);

    let sim = SimHandle::start(sim_cfg(1, 64, 15.0)).await.expect("sim");
    let (out, summary) = (dir.path().join("out.jsonl"), dir.path().join("summary.json"));
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
            "--plan",
            s(&plan),
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_each_once_ok(&read_records(&out), &want, "run with --plan");
    let sm = read_json(&summary);
    assert_eq!(u(&sm, "concurrency"), 5, "{sm}");
    assert_eq!(sm["planned_rpm"].as_f64(), Some(6000.0), "{sm}");
    let predicted = sm["predicted_duration_s"]
        .as_f64()
        .expect("predicted_duration_s with a plan");
    assert!(
        (predicted - 1.0).abs() < 1e-6,
        "100 requests at 6000 RPM = 1 s, got {predicted}: {sm}"
    );
    let m = metrics(&url).await;
    assert_eq!(
        gauge(&m, "sizeup_sim_requests_in_flight_max"),
        5,
        "the plan's total_concurrency: {m:?}"
    );
    sim.shutdown().await;

    // --concurrency overrides the plan's.
    let sim = SimHandle::start(sim_cfg(1, 64, 15.0)).await.expect("sim");
    let (out, summary) = (dir.path().join("out2.jsonl"), dir.path().join("summary2.json"));
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
            "--plan",
            s(&plan),
            "--concurrency",
            "3",
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_each_once_ok(&read_records(&out), &want, "run with --plan and --concurrency");
    assert_eq!(u(&read_json(&summary), "concurrency"), 3);
    let m = metrics(&url).await;
    assert_eq!(gauge(&m, "sizeup_sim_requests_in_flight_max"), 3, "{m:?}");

    // A plan with no concurrency, or not a plan at all: exit 2, nothing sent.
    let bad = dir.path().join("bad-plan.json");
    let out3 = dir.path().join("out3.jsonl");
    for text in [None, Some("{\"gpus\": 2}\n")] {
        match text {
            None => write_plan(&bad, 1, 0, 6000.0),
            Some(t) => std::fs::write(&bad, t).unwrap(),
        }
        let r = run_async(
            &[
                "--endpoint",
                &url,
                "--input",
                s(&input),
                "--output",
                s(&out3),
                "--plan",
                s(&bad),
            ],
            &[],
        )
        .await;
        assert_eq!(r.code, Some(2), "{text:?}: {r:?}");
        assert!(r.stderr.contains("bad-plan.json"), "{r:?}");
        assert!(!out3.exists());
    }
    assert_eq!(requests_seen(&metrics(&url).await), 100, "the bad plans sent nothing");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_share_the_plans_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let input = batch_file(dir.path(), 400, 4);
    let plan = dir.path().join("plan.json");
    write_plan(&plan, 2, 8, 6000.0);
    // A plan made with `plan --shards 4`: `--shard auto` takes the count from it, the index
    // from the Indexed Job's environment.
    let mut with_shards = read_json(&plan);
    with_shards["shards"] = 4.into();
    std::fs::write(&plan, with_shards.to_string()).unwrap();
    // 2 GPUs x 16 slots: the server itself would take 32, so only the client limits in-flight.
    let sim = SimHandle::start(fast_sim(2, 16, 5.0, 0.0)).await.unwrap();
    let url = sim.url();
    let mut children = Vec::new();
    for k in 0..4 {
        // Each shard in its own folder, as on separate pods: run-summary.json goes beside.
        let shard_dir = dir.path().join(format!("shard-{k}"));
        std::fs::create_dir(&shard_dir).unwrap();
        let out = shard_dir.join("out.jsonl");
        let mut cmd = tokio_sizeup();
        cmd.args(["run", "--endpoint", &url, "--input"])
            .arg(&input)
            .args(["--plan"])
            .arg(&plan)
            .args(["--shard", "auto", "--output"])
            .arg(&out)
            .env("JOB_COMPLETION_INDEX", k.to_string());
        children.push((k, out, cmd.output()));
    }
    let mut ids = BTreeMap::new();
    for (k, out, child) in children {
        let o = child.await.unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "shard {k}: {stderr}");
        assert!(
            stderr.contains(&format!("shard {k}/4: concurrency 4 of the job's 16")),
            "{stderr}"
        );
        let summary = read_json(&out.with_file_name("run-summary.json"));
        assert_eq!(summary["shard"]["total_concurrency"], 16, "{summary:#}");
        assert_eq!(summary["shard"]["concurrency"], 4, "{summary:#}");
        assert_eq!(summary["concurrency"], 4, "{summary:#}");
        for line in std::fs::read_to_string(&out).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            *ids.entry(v["custom_id"].as_str().unwrap().to_string()).or_insert(0) += 1;
        }
    }
    let peak = sim_metric(&url, "sizeup_sim_requests_in_flight_max").await;
    sim.shutdown().await;
    assert!(
        peak <= 16.0,
        "the four shards held {peak} in flight together; the plan says 16"
    );
    assert!(
        peak >= 8.0,
        "the shards barely overlapped ({peak}): the test did not test"
    );
    assert_eq!(ids.len(), 400, "outputs together are the whole job");
    assert!(ids.values().all(|&n| n == 1), "a line answered twice");
}

/// `--hold-rate`: a run short of its plan's rate raises its requests in flight step by step,
/// never past the hold's ceiling, and still answers every line once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_rate_raises_in_flight_toward_the_plan_within_its_ceiling() {
    let dir = tempfile::tempdir().unwrap();
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 4000, 2);
    // 64 slots of 5 ms a request: 12,000 RPM per request in flight. The plan says 2 in flight
    // give 100,000 RPM, so the run is short and each raise buys rate; a window is judged once
    // it holds 500 answers (about 1.3 s at 2 in flight).
    let plan = dir.path().join("plan.json");
    write_plan(&plan, 1, 2, 100_000.0);
    let sim = SimHandle::start(sim_cfg(1, 64, 2.5)).await.expect("sim");
    let (out, summary) = (dir.path().join("out.jsonl"), dir.path().join("summary.json"));
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
            "--plan",
            s(&plan),
            "--hold-rate",
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_each_once_ok(&read_records(&out), &want, "run holding the rate");
    let sm = read_json(&summary);
    let hold = &sm["hold"];
    assert_eq!(u(hold, "start_concurrency"), 2, "{sm:#}");
    assert_eq!(u(hold, "ceiling_concurrency"), 8, "{sm:#}");
    let steps = hold["steps"].as_array().expect("steps");
    let raises = steps.iter().filter(|s| s["action"] == "raise").count();
    assert!(raises >= 1, "short of the plan and never raised: {sm:#}");
    let max = u(hold, "max_concurrency");
    assert!((3..=8).contains(&max), "{sm:#}");
    let m = metrics(&url).await;
    let seen = gauge(&m, "sizeup_sim_requests_in_flight_max");
    assert!(
        seen <= max,
        "the server saw {seen} in flight, over the hold's {max}: {sm:#}"
    );
    assert!(seen >= 3, "the raise never reached the server: {m:?}");
    assert!(r.stderr.contains("hold-rate: 2 -> 3 in flight (raise)"), "{}", r.stderr);
    sim.shutdown().await;

    // Without a plan there is no rate to hold: refused before anything is sent.
    let r = run_sync(&["--input", s(&input), "--concurrency", "2", "--hold-rate"], &[]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("--hold-rate holds a plan's rate"), "{r:?}");
}

/// A full fleet read by the server's own count: the raise the short rate starts adds no
/// running request (the server's 4 slots are taken), so it is taken back after one window and
/// the climb ends, whatever the rate's noise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_rate_takes_back_a_raise_the_servers_count_shows_queued() {
    let dir = tempfile::tempdir().unwrap();
    // 15 s at the server's rate: room for the raise and the three windows that judge it at most.
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 12_000, 2);
    // 4 slots of 5 ms: 48,000 RPM at most, where the plan promises 100,000 at 8 in flight (a
    // queue of 4 keeps every slot busy, so one request more adds none).
    let plan = dir.path().join("plan.json");
    write_plan(&plan, 1, 8, 100_000.0);
    let sim = SimHandle::start(sim_cfg(1, 4, 2.5)).await.expect("sim");
    let extra = [
        "--plan",
        s(&plan),
        "--hold-rate",
        // Several scrapes in every 2-second window.
        "--scrape-interval",
        "200ms",
    ];
    let (r, records, sm) = run_into(&sim.url(), &input, dir.path(), &extra).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_each_once_ok(&records, &want, "run holding the rate");
    let steps = sm["hold"]["steps"].as_array().expect("steps");
    let actions: Vec<&str> = steps.iter().map(|s| s["action"].as_str().unwrap()).collect();
    // raise, measure (a scrape that caught a slot between two requests), back, then hold.
    let back = actions
        .iter()
        .position(|a| *a == "back")
        .unwrap_or_else(|| panic!("never taken back: {sm:#}"));
    assert_eq!(actions[0], "raise", "{sm:#}");
    assert!(actions[1..back].iter().all(|a| *a == "measure") && back <= 3, "{sm:#}");
    assert!(
        actions[back + 1..].iter().all(|a| *a == "hold"),
        "climbed again: {sm:#}"
    );
    for st in &steps[..=back] {
        let running = st["server_running"].as_f64().expect("the server's count on each step");
        assert!((3.5..=4.0).contains(&running), "{sm:#}");
    }
    assert_eq!(u(&sm["hold"], "final_concurrency"), 8, "{sm:#}");
    sim.shutdown().await;
}

/// `--max-tokens-per-minute` against a hosted API's token limit (the simulator's
/// `--tpm-limit`, 6,000 a minute, enforced per second): charged prompt + max_tokens before
/// each send, 32 in flight stay within 80% of the limit, so the 429s that 32 in flight would
/// draw by the dozen almost never come, and the tokens the server counted over the run are
/// within the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_budget_keeps_the_run_under_a_hosted_token_limit() {
    let sim = SimHandle::start(SimConfig {
        tpm_limit: Some(6000),
        ..sim_cfg(2, 16, 2.0)
    })
    .await
    .expect("sim");
    let url = sim.url();
    let dir = tempfile::tempdir().unwrap();
    // 4 tokens each as the server counts them ("hello world" and 2 to write): 80 lines, ~4 s.
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 80, 2);
    let extra = ["--concurrency", "32", "--max-tokens-per-minute", "4800"];
    let (r, records, sm) = run_into(&url, &input, dir.path(), &extra).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_each_once_ok(&records, &want, "output under a token budget");
    let m = metrics(&url).await;
    assert!(
        outcome(&m, "throttled_429") <= 8,
        "the budget did not keep the run under the limit: {sm} {m:?}"
    );
    let tokens = sim_metric(&url, "sizeup_sim_prompt_tokens_total").await
        + sim_metric(&url, "sizeup_sim_generation_tokens_total").await;
    let wall = sm["wall_time_s"].as_f64().expect("wall_time_s");
    // An upper bound: a slow machine only sends slower. The first request goes at once.
    let per_minute = (tokens - 4.0) / wall * 60.0;
    assert!(
        per_minute <= 4800.0 * 1.1,
        "{per_minute:.0} tokens a minute over {wall:.2} s: {sm}"
    );
    assert!(tokens >= 320.0, "{tokens} tokens counted: {m:?}");
    sim.shutdown().await;
}
