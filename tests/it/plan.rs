//! `plan`: pure arithmetic from a sweep folder; never the network.

use crate::util::{read_json, sizeup, sizeup_command};
use serde_json::json;
use std::path::Path;

/// A sweep of a 2 GPU x 8 slot, 50 ms resource (9,600 RPM per GPU), as `sweep` writes it.
/// Its endpoint is a closed port: `plan` must never try to reach it.
fn sweep_dir(dir: &Path) -> std::path::PathBuf {
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

#[test]
fn issue_example_four_gpus_eight_each_94_seconds() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = sweep_dir(tmp.path());
    let out = tmp.path().join("plan.json");
    let assert = sizeup()
        .args(["plan", "--sweep"])
        .arg(&sweep)
        .args([
            "--target-rpm",
            "30000",
            "--requests",
            "60000",
            "--gpu-hour-cost",
            "2.5",
            "--out",
        ])
        .arg(&out)
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).to_string();
    assert!(
        stdout.contains("4 GPUs: 30,000 RPM target x 1.10 / 9,500 RPM per GPU (95% CI low) = 3.47 -> 4"),
        "{stdout}"
    );
    assert!(stdout.contains("assumes linear scaling"), "{stdout}");
    let plan = read_json(&out);
    // Exactly the contract's fields (extensions may follow).
    for key in [
        "target_rpm",
        "gpus",
        "concurrency_per_gpu",
        "total_concurrency",
        "rpm_per_gpu",
        "rpm_per_gpu_low",
        "expected_rpm",
        "expected_latency_p95_ms",
        "headroom",
        "requests",
        "expected_duration_s",
        "cost_usd",
        "sweep",
    ] {
        assert!(plan.get(key).is_some(), "plan.json lacks {key}");
    }
    assert_eq!(plan["gpus"], 4);
    assert_eq!(plan["concurrency_per_gpu"], 8);
    assert_eq!(plan["total_concurrency"], 32);
    let duration = plan["expected_duration_s"].as_f64().unwrap();
    assert!((duration - 93.75).abs() < 1e-6, "{duration}");
    let cost = plan["cost_usd"].as_f64().unwrap();
    assert!((cost - 4.0 * 93.75 / 3600.0 * 2.5).abs() < 1e-9, "{cost}");

    // --json prints the same plan to stdout.
    let assert = sizeup()
        .args(["plan", "--json", "--sweep"])
        .arg(&sweep)
        .args(["--target-rpm", "30000", "--requests", "60000", "--out"])
        .arg(tmp.path().join("p2.json"))
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(v["gpus"], 4);
}

#[test]
fn counts_requests_from_input_and_honours_slo() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = sweep_dir(tmp.path());
    let input = crate::util::batch_file(tmp.path(), 120, 4);
    let out = tmp.path().join("plan.json");
    sizeup()
        .args(["plan", "--sweep"])
        .arg(&sweep)
        .args(["--target-rpm", "10000", "--max-latency-p95-ms", "60", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let plan = read_json(&out);
    assert_eq!(plan["requests"], 120);
    // Levels 32 and 64 break the 60 ms SLO; 16 is the operating level.
    assert_eq!(plan["chosen_concurrency"], 16);
}

#[test]
fn unreachable_target_exits_1_and_says_what_is_reachable() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = sweep_dir(tmp.path());
    let out = sizeup()
        .args(["plan", "--sweep"])
        .arg(&sweep)
        .args(["--target-rpm", "100000", "--max-gpus", "2", "--out"])
        .arg(tmp.path().join("p.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--max-gpus 2") && err.contains("reach about"), "{err}");
}

#[test]
fn bad_plan_inputs_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = sweep_dir(tmp.path());
    for args in [
        vec!["--target-rpm", "0"],
        vec!["--target-rpm", "-5"],
        vec!["--target-rpm", "NaN"],
        vec!["--target-rpm", "100", "--headroom", "-1"],
        vec!["--target-rpm", "100", "--max-error-rate", "2"],
        vec!["--target-rpm", "100", "--gpu-hour-cost", "-1", "--requests", "5"],
    ] {
        let out = sizeup()
            .args(["plan", "--sweep"])
            .arg(&sweep)
            .args(&args)
            .arg("--out")
            .arg(tmp.path().join("x.json"))
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // An edited summary: the error names the file and line.
    let broken = tmp.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("summary.json"),
        "{\n  \"endpoint\": \"x\",\n  \"gpus\": \"two\"\n}\n",
    )
    .unwrap();
    let out = sizeup()
        .args(["plan", "--target-rpm", "100", "--sweep"])
        .arg(&broken)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("summary.json:3"), "{err}");
    // A folder without summary.json.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = sizeup()
        .args(["plan", "--target-rpm", "100", "--sweep"])
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("summary.json"));
}

#[test]
fn closed_stdout_is_not_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = sweep_dir(tmp.path());
    let mut child = sizeup_command()
        .args(["plan", "--sweep"])
        .arg(&sweep)
        .args(["--target-rpm", "30000", "--out"])
        .arg(tmp.path().join("p.json"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away before anything is written
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}
