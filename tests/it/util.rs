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

pub fn sizeup() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("sizeup").expect("binary built");
    cmd.env_remove("SIZEUP_API_KEY")
        .env_remove("OPENAI_API_KEY")
        .env("NO_COLOR", "1");
    cmd
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
