//! A user's first try with their own batch file: shards that share a plan, the API taken from
//! the file, any model on the simulator, embeddings, and an early stop on a failure that every
//! answer repeats.

use crate::util::{batch_file, fast_sim, read_json, sim_metric};
use serde_json::json;
use sizeup::sim::SimHandle;
use std::collections::BTreeMap;

/// A plan.json as `sizeup plan` writes it, with `total_concurrency` requests in flight.
fn plan_file(dir: &std::path::Path, gpus: u32, per_gpu: u32, rpm_per_gpu: f64) -> std::path::PathBuf {
    let plan = json!({
        "target_rpm": rpm_per_gpu * f64::from(gpus), "gpus": gpus, "concurrency_per_gpu": per_gpu,
        "total_concurrency": gpus * per_gpu, "rpm_per_gpu": rpm_per_gpu, "rpm_per_gpu_low": rpm_per_gpu,
        "expected_rpm": rpm_per_gpu * f64::from(gpus), "expected_latency_p95_ms": 50.0, "headroom": 0.0,
        "requests": null, "expected_duration_s": null, "cost_usd": null, "sweep": "", "sweep_gpus": gpus,
        "chosen_concurrency": gpus * per_gpu, "estimate": "mean", "startup_s": 0.0
    });
    let path = dir.join("plan.json");
    std::fs::write(&path, plan.to_string()).unwrap();
    path
}

/// A simulator that serves only `model` and answers others 404, as vLLM does.
fn strict_sim(model: &str) -> sizeup::sim::SimConfig {
    sizeup::sim::SimConfig {
        model: model.to_string(),
        strict_model: true,
        ..fast_sim(1, 8, 1.0, 0.0)
    }
}

/// `sizeup` as a child the async tests can await.
fn tokio_sizeup() -> tokio::process::Command {
    tokio::process::Command::from(crate::util::sizeup_command())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_share_the_plans_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let input = batch_file(dir.path(), 400, 4);
    let plan = plan_file(dir.path(), 2, 8, 6000.0);
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
            .args(["--shard", &format!("{k}/4"), "--output"])
            .arg(&out);
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

/// `n` chat lines of an OpenAI Batch file naming `model`.
fn chat_file(path: &std::path::Path, n: usize, model: &str) {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "{{\"custom_id\":\"r{i}\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{{\"model\":\"{model}\",\"messages\":[{{\"role\":\"user\",\"content\":\"hello {i}\"}}],\"max_tokens\":2}}}}\n"
        ));
    }
    std::fs::write(path, text).unwrap();
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

#[test]
fn levels_without_data_are_empty_and_left_out_of_knee_and_plan() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep");
    // One slot, 100 ms per request: level 1 finishes ~10 a second; level 32 queues, and its
    // warm-up (32 answers) cannot end within the 1 s --max-duration.
    let o = crate::util::sizeup()
        .args([
            "sweep",
            "--concurrency",
            "1,32",
            "--warmup",
            "0s",
            "--max-duration",
            "1s",
        ])
        .args([
            "--min-requests",
            "5",
            "--ci-width",
            "0.9",
            "--batch",
            "1",
            "--decode-step-ms",
            "25",
        ])
        .args([
            "--decode-step-ms-per-seq",
            "0",
            "--prefill-ms-per-1k",
            "0",
            "--max-tokens",
            "4",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("level 32: no data") && stderr.contains("--max-duration"),
        "{stderr}"
    );
    let csv = std::fs::read_to_string(out.join("levels.csv")).unwrap();
    let row32: Vec<&str> = csv
        .lines()
        .find(|l| l.starts_with("32,"))
        .expect("level 32 row")
        .split(',')
        .collect();
    assert_eq!(
        &row32[4..8],
        ["", "", "", ""],
        "rpm, CI and per-GPU empty, not 0: {csv}"
    );
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["knee"]["concurrency"], 1, "{summary:#}");
    assert!(summary["levels"][1]["rpm"].is_null(), "{summary:#}");
    let plan = crate::util::sizeup()
        .args(["plan", "--target-rpm", "100", "--sweep"])
        .arg(&out)
        .arg("--out")
        .arg(dir.path().join("plan.json"))
        .output()
        .unwrap();
    assert_eq!(plan.status.code(), Some(0), "{}", String::from_utf8_lossy(&plan.stderr));
    let p = read_json(&dir.path().join("plan.json"));
    assert_eq!(p["chosen_concurrency"], 1, "{p:#}");
}

#[test]
fn no_level_with_data_exits_1_and_names_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    // 2 s per request against a 1 s --max-duration.
    let o = crate::util::sizeup()
        .args([
            "sweep",
            "--concurrency",
            "1",
            "--warmup",
            "0s",
            "--max-duration",
            "1s",
            "--batch",
            "1",
        ])
        .args(["--decode-step-ms", "500", "--max-tokens", "4", "--out"])
        .arg(dir.path().join("s"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("raise --max-duration"), "{stderr}");
}

/// `n` embedding lines of an OpenAI Batch file.
fn embeddings_file(path: &std::path::Path, n: usize) {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "{{\"custom_id\":\"e{i}\",\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":{{\"model\":\"text-embedding-3-small\",\"input\":\"document number {i} about batch sizing\"}}}}\n"
        ));
    }
    std::fs::write(path, text).unwrap();
}

/// Every line of `input` answered 200 once in `output`.
fn assert_all_answered(output: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: std::collections::BTreeSet<&str> = lines.iter().map(|v| v["custom_id"].as_str().unwrap()).collect();
    assert_eq!((lines.len(), ids.len()), (n, n), "each line once");
    assert!(
        lines.iter().all(|v| v["response"]["status_code"] == 200),
        "all answered 200"
    );
    lines
}

#[test]
fn a_users_chat_batch_file_runs_with_no_other_flag() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("chat.jsonl");
    chat_file(&input, 300, "gpt-4o-mini");
    let o = crate::util::sizeup()
        .args(["run", "--concurrency", "4", "--decode-step-ms", "1", "--input"])
        .arg(&input)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("using --api chat"),
        "says where the API came from: {stderr}"
    );
    let lines = assert_all_answered(&dir.path().join("chat.output.jsonl"), 300);
    assert_eq!(
        lines[0]["response"]["body"]["model"], "gpt-4o-mini",
        "the simulator serves the file's model"
    );
    assert_eq!(lines[0]["response"]["body"]["object"], "chat.completion");

    let out = dir.path().join("auto");
    let o = crate::util::sizeup()
        .args([
            "auto",
            "--target-rpm",
            "5000",
            "--yes",
            "--warmup",
            "0s",
            "--max-duration",
            "3s",
        ])
        .args(["--decode-step-ms", "1", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_all_answered(&out.join("output.jsonl"), 300);
}

#[test]
fn an_embeddings_batch_file_runs_and_sweeps() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("embed.jsonl");
    embeddings_file(&input, 200);
    let o = crate::util::sizeup()
        .args(["run", "--concurrency", "8", "--input"])
        .arg(&input)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("using --api embeddings"), "{stderr}");
    let lines = assert_all_answered(&dir.path().join("embed.output.jsonl"), 200);
    let body = &lines[0]["response"]["body"];
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 16, "{body}");
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    let out = dir.path().join("sweep");
    let o = crate::util::sizeup()
        .args([
            "sweep",
            "--concurrency",
            "1,4",
            "--warmup",
            "0s",
            "--max-duration",
            "2s",
            "--ci-width",
            "0.5",
        ])
        .args(["--min-requests", "10", "--prefill-ms-per-1k", "500", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["api"], "embeddings", "{summary:#}");
    for level in summary["levels"].as_array().unwrap() {
        assert!(level["rpm"].as_f64().unwrap() > 0.0, "{level}");
        assert!(
            level["input_tokens_per_s"].as_f64().unwrap() > 0.0,
            "input tokens are the figure: {level}"
        );
        assert!(level["ttft_p50_ms"].is_null(), "no TTFT for embeddings: {level}");
    }
    let o = crate::util::sizeup()
        .args([
            "auto",
            "--target-rpm",
            "3000",
            "--yes",
            "--warmup",
            "0s",
            "--max-duration",
            "2s",
            "--input",
        ])
        .arg(&input)
        .arg("--out")
        .arg(dir.path().join("auto"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_all_answered(&dir.path().join("auto/output.jsonl"), 200);
}

/// A job sweep's level that ends because its share of the lines is spent says so, not that it
/// hit --max-duration (which it did not: the whole run takes a fraction of it); and a plan on a
/// sweep whose lines ran out keeps the --estimate the user chose.
#[test]
fn a_job_sweep_level_ended_by_its_lines_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("embed.jsonl");
    embeddings_file(&input, 120);
    let o = crate::util::sizeup()
        .args([
            "auto",
            "--target-rpm",
            "3000",
            "--yes",
            "--concurrency",
            "1,2",
            "--estimate",
            "mean",
        ])
        // A CI this narrow is never met on a few dozen lines: every level ends on its lines.
        .args([
            "--warmup",
            "0s",
            "--max-duration",
            "120s",
            "--ci-width",
            "0.0001",
            "--input",
        ])
        .arg(&input)
        .arg("--out")
        .arg(dir.path().join("auto"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("the level's share of the input's lines is spent"),
        "{stderr}"
    );
    assert!(!stderr.contains("hit --max-duration"), "{stderr}");
    // The explicit --estimate mean is kept (it used to be overridden to low, whose bound is 0
    // here, and the error then advised the --estimate mean already given).
    assert!(stderr.contains("as --estimate mean asks"), "{stderr}");
    assert_all_answered(&dir.path().join("auto/output.jsonl"), 120);
}

#[test]
fn a_file_mixing_endpoints_exits_2_naming_the_lines() {
    let input = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bad/mixed-url.jsonl");
    for cmd in [
        vec!["run", "--concurrency", "2"],
        vec!["sweep"],
        vec!["auto", "--target-rpm", "100", "--yes"],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let o = crate::util::sizeup()
            .args(&cmd)
            .arg("--input")
            .arg(&input)
            .arg(if cmd[0] == "run" { "--output" } else { "--out" })
            .arg(dir.path().join("x"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{cmd:?}: {stderr}");
        assert!(
            stderr.contains("mixed-url.jsonl:3: the input mixes APIs"),
            "{cmd:?}: {stderr}"
        );
        assert!(
            stderr.contains("(lines 1, 2, 4)") && stderr.contains("(lines 3)"),
            "{cmd:?}: {stderr}"
        );
    }
}

/// `n` OpenAI Batch completions lines, ids `{tag}{i}`, line i asking for `max_tokens(i)`
/// output tokens. Prompts are fixed-width (`line 00042`), so every prompt is the same size.
fn completions_file(path: &std::path::Path, n: usize, tag: &str, max_tokens: impl Fn(usize) -> u32) {
    let mut text = String::new();
    for i in 0..n {
        let max = max_tokens(i);
        text.push_str(&format!(
            "{{\"custom_id\":\"{tag}{i}\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{{\"prompt\":\"line {i:05}\",\"max_tokens\":{max}}}}}\n"
        ));
    }
    std::fs::write(path, text).unwrap();
}

/// A file sorted by length: the first half asks for `short` output tokens, the rest `long`.
fn sorted_file(path: &std::path::Path, n: usize, short: u32, long: u32) {
    completions_file(path, n, "s", |i| if i < n / 2 { short } else { long });
}

#[test]
fn the_sweep_samples_the_whole_file_and_flags_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("sorted.jsonl");
    sorted_file(&input, 2000, 2, 6);
    let out = dir.path().join("sweep");
    let o = crate::util::sizeup()
        .args([
            "sweep",
            "--concurrency",
            "4",
            "--warmup",
            "0s",
            "--max-duration",
            "2s",
            "--ci-width",
            "0.5",
        ])
        .args([
            "--min-requests",
            "150",
            "--sample",
            "60",
            "--decode-step-ms",
            "2",
            "--input",
        ])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    // A head sample would hold only short requests; a uniform one about half long ones.
    let csv = std::fs::read_to_string(out.join("requests.csv")).unwrap();
    let tokens: Vec<u64> = csv
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(5)?.parse().ok())
        .collect();
    let long = tokens.iter().filter(|&&t| t == 6).count() as f64 / tokens.len() as f64;
    assert!(
        (0.25..0.75).contains(&long),
        "share of long requests {long:.2} of {}",
        tokens.len()
    );
    // 60 lines sampled, at least 150 sent: the rest are repeats, counted and said.
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["distinct_requests"], 60, "{summary:#}");
    assert!(summary["repeated_requests"].as_u64().unwrap() >= 90, "{summary:#}");
    assert!(
        summary["levels"][0]["repeated_requests"].as_u64().unwrap() > 0,
        "{summary:#}"
    );
    assert!(
        stderr.contains("the sample of 60 lines (of 2000 in the file) is used up"),
        "{stderr}"
    );
}

#[test]
fn one_sweep_of_a_mixed_job_sizes_a_short_and_a_long_job() {
    let dir = tempfile::tempdir().unwrap();
    let mixed = dir.path().join("mixed.jsonl");
    sorted_file(&mixed, 2000, 4, 32);
    let out = dir.path().join("sweep");
    // One GPU of 8 slots, 10 ms per output token, no prefill: at concurrency 8 nothing waits,
    // so a request of T tokens takes 10 T ms and one GPU serves 8 x 60000 / (10 T) RPM.
    let sim = [
        "--batch",
        "8",
        "--decode-step-ms",
        "10",
        "--decode-step-ms-per-seq",
        "0",
        "--prefill-ms-per-1k",
        "0",
    ];
    let o = crate::util::sizeup()
        .args([
            "sweep",
            "--concurrency",
            "8",
            "--warmup",
            "0s",
            "--max-duration",
            "4s",
            "--ci-width",
            "0.3",
        ])
        .args(["--min-requests", "80", "--sample", "1000"])
        .args(sim)
        .arg("--input")
        .arg(&mixed)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let summary = read_json(&out.join("summary.json"));
    let model = &summary["levels"][0]["capacity_model"];
    assert!(model["r2"].as_f64().unwrap() > 0.9, "{model}");
    assert!(
        summary["workload"]["tokens_per_prompt_byte"].as_f64().is_some(),
        "{summary:#}"
    );

    for (tokens, tag) in [(4u32, "short"), (32, "long")] {
        let job = dir.path().join(format!("{tag}.jsonl"));
        completions_file(&job, 500, tag, |_| tokens);
        let plan_path = dir.path().join(format!("{tag}-plan.json"));
        let o = crate::util::sizeup()
            .args(["plan", "--target-rpm", "1000", "--estimate", "mean", "--sweep"])
            .arg(&out)
            .arg("--input")
            .arg(&job)
            .arg("--out")
            .arg(&plan_path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{stderr}");
        assert!(stderr.contains("sized with the capacity model"), "{stderr}");
        let plan = read_json(&plan_path);
        let truth = 8.0 * 60_000.0 / (10.0 * f64::from(tokens));
        let got = plan["rpm_per_gpu"].as_f64().unwrap();
        assert!(
            (got / truth - 1.0).abs() < 0.08,
            "{tag} job: {got:.0} RPM per GPU, truth {truth:.0}; {plan:#}"
        );
        assert_eq!(
            plan["workload"]["output_tokens_mean"].as_f64().map(f64::round),
            Some(f64::from(tokens)),
            "{plan:#}"
        );
        assert!(
            plan["capacity_model"]["c_ms_per_output_token"].as_f64().unwrap() > 5.0,
            "{plan:#}"
        );
        assert!(
            plan["tokens_per_s_per_gpu"]["output"].as_f64().unwrap() > 0.0,
            "{plan:#}"
        );
    }
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
