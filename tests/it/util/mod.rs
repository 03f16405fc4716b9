//! Shared test helpers: the `sizeup` binary with a scrubbed environment, simulators of known
//! capacity, and the job, plan and sweep files the tests write. [`run`] holds the helpers for
//! `sizeup run` children and what they leave behind.

pub mod run;

use serde_json::json;
use sizeup::sim::gpu::GpuParams;
use sizeup::sim::SimConfig;
use std::path::Path;
use std::time::Duration;

/// A simulator with short, exact service times: `step_ms` per token, no prefill.
pub fn fast_sim(gpus: usize, batch: usize, step_ms: f64, jitter: f64) -> SimConfig {
    SimConfig {
        gpus,
        params: GpuParams {
            batch,
            prefill_ms_per_1k: 0.0,
            decode_step_ms: step_ms,
            decode_step_ms_per_seq: 0.0,
            prefix_cache_tokens: 0,
        },
        jitter,
        default_max_tokens: 4,
        retry_after: Duration::from_secs(1),
        ..SimConfig::default()
    }
}

/// Environment variables that would change what a child does (an API key, a shard, a proxy);
/// removed from every `sizeup` a test starts, so the developer's shell cannot change a result.
const ENV_SCRUB: [&str; 21] = [
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "SIZEUP_API_KEY",
    "OPENAI_API_KEY",
    "JOB_COMPLETION_INDEX",
    "JOB_COMPLETION_COUNT",
    "SIZEUP_SHARDS",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_MAX",
    "SLURM_ARRAY_TASK_STEP",
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "REQUEST_METHOD",
];

/// The `sizeup` binary with a scrubbed environment and `NO_COLOR`: every test that starts one
/// starts it from here. A std `Command`, for tests that spawn, pipe, kill or wrap it in
/// `tokio::process::Command::from`; [`sizeup`] for `assert_cmd`'s.
pub fn sizeup_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("sizeup"));
    for k in ENV_SCRUB {
        cmd.env_remove(k);
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

/// [`sizeup_command`] as an `assert_cmd` command.
pub fn sizeup() -> assert_cmd::Command {
    assert_cmd::Command::from_std(sizeup_command())
}

/// `sizeup` as a child the async tests can await.
pub fn tokio_sizeup() -> tokio::process::Command {
    tokio::process::Command::from(crate::util::sizeup_command())
}

/// The sweeps measure throughput: run them one at a time, not against each other (other
/// modules' sweeps that check rates take it too).
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The built-in simulator the `auto` and resource tests run on: one GPU of 4 slots, 5 ms a
/// token, no prefill.
pub const SIM: [&str; 8] = [
    "--batch",
    "4",
    "--decode-step-ms",
    "5",
    "--decode-step-ms-per-seq",
    "0",
    "--prefill-ms-per-1k",
    "0",
];

/// Sum of the simulator's `/metrics` samples whose line starts with `prefix`.
pub async fn sim_metric(url: &str, prefix: &str) -> f64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn read_json(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// Writes `n` OpenAI-batch completion lines and returns the path.
pub fn batch_file(dir: &std::path::Path, n: usize, max_tokens: u32) -> std::path::PathBuf {
    let path = dir.join("input.jsonl");
    let mut text = String::new();
    for i in 1..=n {
        text.push_str(&format!(
            "{{\"custom_id\":\"id-{i}\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{{\"prompt\":\"say hello number {i}\",\"max_tokens\":{max_tokens}}}}}\n"
        ));
    }
    std::fs::write(&path, text).expect("write input");
    path
}

/// `n` chat lines of an OpenAI Batch file naming `model`.
pub fn chat_file(path: &std::path::Path, n: usize, model: &str) {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "{{\"custom_id\":\"r{i}\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{{\"model\":\"{model}\",\"messages\":[{{\"role\":\"user\",\"content\":\"hello {i}\"}}],\"max_tokens\":2}}}}\n"
        ));
    }
    std::fs::write(path, text).unwrap();
}

/// `n` embedding lines of an OpenAI Batch file.
pub fn embeddings_file(path: &std::path::Path, n: usize) {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "{{\"custom_id\":\"e{i}\",\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":{{\"model\":\"text-embedding-3-small\",\"input\":\"document number {i} about batch sizing\"}}}}\n"
        ));
    }
    std::fs::write(path, text).unwrap();
}

/// `n` OpenAI Batch completions lines, ids `{tag}{i}`, line i asking for `max_tokens(i)`
/// output tokens. Prompts are fixed-width (`line 00042`), so every prompt is the same size.
pub fn completions_file(path: &std::path::Path, n: usize, tag: &str, max_tokens: impl Fn(usize) -> u32) {
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
pub fn sorted_file(path: &std::path::Path, n: usize, short: u32, long: u32) {
    completions_file(path, n, "s", |i| if i < n / 2 { short } else { long });
}

/// Every line of `input` answered 200 once in `output`.
pub fn assert_all_answered(output: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
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

/// A plan.json as `sizeup plan` writes it (the fields the README lists, plus the sweep details):
/// `gpus` x `per_gpu` requests in flight, `rpm_per_gpu` each.
pub fn write_plan(path: &Path, gpus: u32, per_gpu: u32, rpm_per_gpu: f64) {
    let plan = json!({
        "target_rpm": rpm_per_gpu * f64::from(gpus),
        "gpus": gpus,
        "concurrency_per_gpu": per_gpu,
        "total_concurrency": gpus * per_gpu,
        "rpm_per_gpu": rpm_per_gpu,
        "rpm_per_gpu_low": rpm_per_gpu,
        "expected_rpm": rpm_per_gpu * f64::from(gpus),
        "expected_latency_p95_ms": 50.0,
        "headroom": 0.1,
        "requests": null,
        "expected_duration_s": null,
        "cost_usd": null,
        "sweep": "",
        "sweep_gpus": gpus,
        "chosen_concurrency": gpus * per_gpu,
        "estimate": "low",
        "startup_s": 0.0,
    });
    std::fs::write(path, serde_json::to_string_pretty(&plan).unwrap()).unwrap();
}

/// A sweep of a 2 GPU x 8 slot, 50 ms resource (9,600 RPM per GPU), as `sweep` writes it.
/// Its endpoint is a closed port: `plan` must never try to reach it.
pub fn sweep_dir(dir: &Path) -> std::path::PathBuf {
    let level = |c: u32, rpm: f64, low: f64, high: f64, p95: f64| {
        json!({"concurrency": c, "duration_s": 10.0, "requests_ok": 1000, "requests_failed": 0, "rpm": rpm,
               "rpm_ci_low": low, "rpm_ci_high": high, "rpm_per_gpu": rpm / 2.0, "latency_p50_ms": p95 * 0.95,
               "latency_p90_ms": p95, "latency_p95_ms": p95, "latency_p99_ms": p95 * 1.05, "ttft_p50_ms": p95 * 0.9,
               "ttft_p95_ms": p95, "tpot_p50_ms": null, "output_tokens_per_s": rpm / 60.0, "error_rate": 0.0,
               "client_limited": false})
    };
    let summary = json!({
        "endpoint": "http://127.0.0.1:1", "model": "m", "gpus": 2,
        "levels": [level(8, 9_600.0, 9_500.0, 9_700.0, 51.0), level(16, 19_200.0, 19_000.0, 19_400.0, 52.0),
                   level(32, 19_250.0, 19_050.0, 19_450.0, 104.0), level(64, 19_260.0, 19_000.0, 19_500.0, 208.0)],
        "knee": {"concurrency": 16, "rpm": 19_200.0, "rpm_per_gpu": 9_600.0, "limited_by": "saturation"},
        "batch_size_per_gpu": 8.0, "max_rpm": 19_260.0, "max_rpm_per_gpu": 9_630.0,
        "started_at": "2026-11-26T00:00:00Z", "sizeup_version": "0.1.0",
        "api": "completions", "ci_width_target": 0.05, "ci_met": [true, true, true, true], "tokens_estimated": false
    });
    let d = dir.join("sweep");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("summary.json"), serde_json::to_string_pretty(&summary).unwrap()).unwrap();
    d
}
