//! Shared test helpers.

use sizeup::sim::gpu::GpuParams;
use sizeup::sim::SimConfig;
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
        },
        jitter,
        default_max_tokens: 4,
        retry_after: Duration::from_secs(1),
        ..SimConfig::default()
    }
}

/// Environment variables that would change what a child does (an API key, a shard); removed
/// from every `sizeup` a test starts, so the developer's shell cannot change a result.
const ENV_SCRUB: [&str; 8] = [
    "SIZEUP_API_KEY",
    "OPENAI_API_KEY",
    "JOB_COMPLETION_INDEX",
    "JOB_COMPLETION_COUNT",
    "SIZEUP_SHARDS",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_MIN",
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
