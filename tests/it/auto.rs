//! `auto` end to end on the built-in simulator: sweep a sample, plan, run, compare.

use crate::util::{batch_file, read_json, sizeup};

const SIM: [&str; 8] = [
    "--batch",
    "4",
    "--decode-step-ms",
    "5",
    "--decode-step-ms-per-seq",
    "0",
    "--prefill-ms-per-1k",
    "0",
];

#[test]
fn sweep_plan_run_in_one_command() {
    let tmp = tempfile::tempdir().unwrap();
    let input = batch_file(tmp.path(), 3000, 8);
    let out = tmp.path().join("job");
    let assert = sizeup()
        .args(["auto", "--yes", "--verify", "--input"])
        .arg(&input)
        .args([
            "--target-rpm",
            "6000",
            "--concurrency",
            "1,2,4,8",
            "--warmup",
            "300ms",
            "--max-duration",
            "3s",
            "--ci-width",
            "0.05",
        ])
        .args(["--min-requests", "30", "--out"])
        .arg(&out)
        .args(SIM)
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).to_string();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    assert!(stdout.contains("GPUs:"), "the plan is printed: {stdout}");
    // --verify re-measured the planned size (2 GPUs, concurrency 8) on the resized simulator.
    assert!(stderr.contains("verify: measured"), "{stderr}");
    let verify = read_json(&out.join("verify/summary.json"));
    assert_eq!(verify["levels"][0]["concurrency"], 8);
    assert_eq!(verify["gpus"], 2);
    for f in [
        "summary.json",
        "levels.csv",
        "requests.csv",
        "throughput.svg",
        "plan.json",
        "output.jsonl",
        "run-summary.json",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let plan = read_json(&out.join("plan.json"));
    // 1 GPU of 4 slots, 8 tokens of 5 ms: 6,000 RPM per GPU; 6,000 x 1.1 needs 2 GPUs.
    assert_eq!(plan["concurrency_per_gpu"], 4);
    assert_eq!(plan["gpus"], 2);
    let run = read_json(&out.join("run-summary.json"));
    // The sweep answered up to 1,000 lines (its floor; 20% would be 600); the run the rest.
    let swept = run["skipped_already_done"].as_u64().unwrap();
    assert!((100..=1000).contains(&swept), "{run:#}");
    assert_eq!(run["requests_ok"].as_u64().unwrap() + swept, 3000, "{run:#}");
    let predicted = run["predicted_duration_s"].as_f64().unwrap();
    let achieved = run["achieved_duration_s"].as_f64().unwrap();
    assert!(
        (achieved / predicted - 1.0).abs() < 0.25,
        "predicted {predicted:.2}s, achieved {achieved:.2}s"
    );
    let lines = std::fs::read_to_string(out.join("output.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 3000);
}

#[test]
fn without_a_terminal_or_yes_it_stops_after_the_plan() {
    let tmp = tempfile::tempdir().unwrap();
    let input = batch_file(tmp.path(), 50, 4);
    let out = tmp.path().join("job");
    sizeup()
        .args(["auto", "--input"])
        .arg(&input)
        .args([
            "--target-rpm",
            "1000",
            "--concurrency",
            "1,2",
            "--warmup",
            "200ms",
            "--max-duration",
            "2s",
            "--min-requests",
            "20",
            "--out",
        ])
        .arg(&out)
        .args(SIM)
        .assert()
        .success();
    assert!(out.join("plan.json").exists());
    assert!(
        !out.join("run-summary.json").exists(),
        "nothing may run without consent"
    );
    // The sweep's requests were lines of the job: their answers are a valid partial output
    // that `run --resume` completes, each line answered once.
    let output = out.join("output.jsonl");
    let swept = std::fs::read_to_string(&output).unwrap().lines().count();
    assert!(swept > 0 && swept <= 50, "{swept}");
    sizeup()
        .args(["run", "--resume", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .arg("--plan")
        .arg(out.join("plan.json"))
        .args(SIM)
        .assert()
        .success();
    let text = std::fs::read_to_string(&output).unwrap();
    let ids: std::collections::BTreeSet<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["custom_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!((text.lines().count(), ids.len()), (50, 50), "each line once");
}

#[test]
fn run_switches_the_resource_on_and_off() {
    let tmp = tempfile::tempdir().unwrap();
    let input = batch_file(tmp.path(), 40, 2);
    // The built-in resource starts off with --resource sim: run must switch it on first.
    let assert = sizeup()
        .args([
            "run",
            "--resource",
            "sim",
            "--gpus",
            "2",
            "--concurrency",
            "4",
            "--input",
        ])
        .arg(&input)
        .arg("--output")
        .arg(tmp.path().join("a.jsonl"))
        .args(SIM)
        .assert()
        .success();
    let err = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    assert!(
        err.contains("switching the resource on with 2 GPUs") && err.contains("switching the resource off"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("a.jsonl"))
            .unwrap()
            .lines()
            .count(),
        40
    );

    // Hooks: {gpus} substituted; the off hook runs even when the run fails (here the endpoint
    // refuses connections).
    let log = tmp.path().join("hooks.log");
    let on = format!("echo on {{gpus}} >> {}", log.display());
    let off = format!("echo off >> {}", log.display());
    sizeup()
        .args([
            "run",
            "--gpus",
            "3",
            "--concurrency",
            "4",
            "--resource-on",
            &on,
            "--resource-off",
            &off,
            "--input",
        ])
        .arg(&input)
        .arg("--output")
        .arg(tmp.path().join("b.jsonl"))
        .args(SIM)
        .assert()
        .success();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "on 3\noff\n");
    let out = sizeup()
        .args([
            "run",
            "--endpoint",
            "http://127.0.0.1:1",
            "--model",
            "m",
            "--concurrency",
            "2",
            "--resource-on",
            &on,
        ])
        .args(["--resource-off", &off, "--input"])
        .arg(&input)
        .arg("--output")
        .arg(tmp.path().join("c.jsonl"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "on 3\noff\non 1\noff\n",
        "switched off after a failure too"
    );
}

#[test]
fn deadline_sizes_the_rest_of_the_job_for_the_time_the_sweep_left() {
    let tmp = tempfile::tempdir().unwrap();
    let input = batch_file(tmp.path(), 3000, 8);
    let out = tmp.path().join("job");
    // No --yes and no terminal: auto stops after the plan.
    let assert = sizeup()
        .args(["auto", "--input"])
        .arg(&input)
        .args(["--deadline", "20s", "--sample", "200", "--concurrency", "4"])
        .args([
            "--warmup",
            "200ms",
            "--max-duration",
            "1s",
            "--min-requests",
            "20",
            "--out",
        ])
        .arg(&out)
        .args(SIM)
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).to_string();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    assert!(stderr.contains("deadline: "), "{stderr}");
    assert!(stdout.contains("target: ") && stdout.contains("deadline"), "{stdout}");
    let plan = read_json(&out.join("plan.json"));
    // The rest of the job (the sweep answered at most its 200-line sample)...
    let rest = plan["requests"].as_f64().unwrap();
    assert!((2_800.0..3_000.0).contains(&rest), "{plan}");
    // ... over what the sweep left of the 20 s ...
    let left = plan["deadline_s"].as_f64().unwrap();
    assert!(left > 5.0 && left < 20.0, "{plan}");
    // ... is the target, and the GPUs are sized for it as always.
    let target = plan["target_rpm"].as_f64().unwrap();
    assert!((target - rest * 60.0 / left).abs() < 1e-6 * target, "{plan}");
    let per_gpu_low = plan["rpm_per_gpu_low"].as_f64().unwrap();
    let gpus = (target * 1.1 / per_gpu_low).ceil();
    assert_eq!(plan["gpus"].as_f64(), Some(gpus), "{plan}");
    // Either goal, not both.
    let o = sizeup()
        .args(["auto", "--input"])
        .arg(&input)
        .args(["--deadline", "20s", "--target-rpm", "100"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}
