//! `auto` sizes and runs a job in one command: it sweeps a sample of the job's own lines, plans
//! for the target or the deadline, stops there without consent, and otherwise runs the rest close
//! to the plan's prediction.

use crate::util::{assert_all_answered, batch_file, embeddings_file, read_json, sizeup, SIM};

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
    // One margin: the 10% headroom over the mean, or the CI low where that is lower still.
    let per_gpu = plan["rpm_per_gpu"].as_f64().unwrap();
    let per_gpu_low = plan["rpm_per_gpu_low"].as_f64().unwrap();
    let gpus = (target * 1.1 / per_gpu).max(target / per_gpu_low).ceil();
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

/// A job sweep's level that ends because its share of the lines is spent says so, not that it
/// hit --max-duration (which it did not: the whole run takes a fraction of it); and a plan on a
/// sweep whose lines ran out keeps the --estimate the user chose.
#[test]
fn a_job_sweep_level_ended_by_its_lines_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("embed.jsonl");
    embeddings_file(&input, 120);
    let o = sizeup()
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

/// Behind a router that pins each connection to a random replica (kube-proxy), 8 replicas serve
/// less than 8 x one: `--verify` measures that at the planned size and the plan is re-sized
/// with it, not only reported.
#[test]
fn verify_feeds_the_measured_scaling_into_the_plan() {
    let tmp = tempfile::tempdir().unwrap();
    let input = batch_file(tmp.path(), 3000, 8);
    let out = tmp.path().join("job");
    let assert = sizeup()
        .args(["auto", "--yes", "--verify", "--input"])
        .arg(&input)
        .args(["--target-rpm", "40000", "--concurrency", "1,2,4,8"])
        .args(["--warmup", "300ms", "--max-duration", "3s", "--ci-width", "0.05"])
        .args(["--min-requests", "30", "--router", "connection", "--out"])
        .arg(&out)
        .args(SIM)
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    // 1 GPU of 4 slots serves 6,000 RPM; 40,000 x 1.1 -> 8 GPUs at concurrency 32, where 32
    // connections pinned at random leave some replicas short of 4 and others queueing.
    let verify = read_json(&out.join("verify/summary.json"));
    assert_eq!(verify["gpus"], 8, "{stderr}");
    let plan = read_json(&out.join("plan.json"));
    let measured = &plan["scaling"]["measured"];
    assert_eq!(measured[0]["gpus"], 1, "{plan:#}");
    assert_eq!(measured[1]["gpus"], 8, "{plan:#}");
    let e8 = measured[1]["efficiency"].as_f64().unwrap();
    assert!(e8 < 0.97, "connection pinning scaled linearly? {plan:#}");
    assert!(plan["gpus"].as_u64().unwrap() > 8, "not re-sized: {plan:#}\n{stderr}");
    assert!(stderr.contains("re-planned"), "{stderr}");
    assert_all_answered(&out.join("output.jsonl"), 3000);
}
