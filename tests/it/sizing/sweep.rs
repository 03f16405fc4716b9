//! `sweep` measures what the resource serves: RPM per GPU near the formula, the knee at G x B,
//! a CI around each rate, report files as the contract names them, a sample drawn from the whole
//! file, and no figure at all for a level without data.

use crate::util::{fast_sim, read_json, sizeup, sorted_file, SERIAL};
use sizeup::sim::gpu::expected_rpm;
use sizeup::sim::SimHandle;

const TOKENS: u32 = 4;

/// Sweeps G x B with `auto` levels and checks the knee and the per-GPU RPM.
async fn sweep_finds_knee(gpus: usize, batch: usize, step_ms: f64, jitter: f64) {
    let _serial = SERIAL.lock().await;
    let cfg = fast_sim(gpus, batch, step_ms, jitter);
    let params = cfg.params;
    let sim = SimHandle::start(cfg).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let url = sim.url();
    let out2 = out.clone();
    let output = tokio::task::spawn_blocking(move || {
        sizeup()
            .args(["sweep", "--json", "--endpoint", &url, "--gpus", &gpus.to_string()])
            .args([
                "--warmup",
                "300ms",
                "--max-duration",
                "5s",
                "--min-requests",
                "40",
                "--ci-width",
                "0.03",
            ])
            .args(["--prompt-tokens", "4", "--max-tokens", &TOKENS.to_string(), "--out"])
            .arg(&out2)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    sim.shutdown().await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).expect("--json prints summary.json");
    assert_eq!(summary, read_json(&out.join("summary.json")));
    let gb = (gpus * batch) as u64;
    // Exactly G*B on a quiet machine (the bench checks that); on a busy 2-core machine a
    // bisection step may land one level off, so the test allows one step in 8, and still fails
    // when the knee is found at a different batch (a doubling off, or no knee).
    let k = summary["knee"]["concurrency"].as_u64().expect("a knee");
    let slack = (gb / 8).max(1);
    assert!(k.abs_diff(gb) <= slack, "knee {k}, G*B {gb}\n{stderr}\n{summary:#}");
    assert_eq!(summary["knee"]["limited_by"], "saturation");
    let per_gpu = summary["batch_size_per_gpu"].as_f64().unwrap();
    assert!(
        (per_gpu - batch as f64).abs() <= slack as f64 / gpus as f64,
        "{summary:#}"
    );
    // The server's own metrics agree: it never ran more than G*B at once.
    assert_eq!(
        summary["server"]["running_max_observed"].as_f64(),
        Some(gb as f64),
        "{summary:#}"
    );
    let formula = expected_rpm(&params, gpus, gpus * batch, 4, TOKENS) / gpus as f64;
    let measured = summary["knee"]["rpm_per_gpu"].as_f64().unwrap();
    // ±15% here; the tight ±5% check lives in the benchmark.
    assert!(
        (measured / formula - 1.0).abs() < 0.15,
        "measured {measured:.0} RPM/GPU vs formula {formula:.0}"
    );
    let levels = summary["levels"].as_array().unwrap();
    for l in levels {
        assert!(l["rpm_ci_low"].as_f64().unwrap() <= l["rpm"].as_f64().unwrap());
        assert!(l["rpm"].as_f64().unwrap() <= l["rpm_ci_high"].as_f64().unwrap());
        assert_eq!(l["error_rate"].as_f64(), Some(0.0));
        assert!(l["ttft_p50_ms"].as_f64().unwrap() <= l["latency_p50_ms"].as_f64().unwrap());
    }

    // Files and columns exactly as the README names them.
    let levels_csv = std::fs::read_to_string(out.join("levels.csv")).unwrap();
    assert_eq!(
        levels_csv.lines().next().unwrap(),
        "concurrency,duration_s,requests_ok,requests_failed,rpm,rpm_ci_low,rpm_ci_high,rpm_per_gpu,latency_p50_ms,latency_p90_ms,latency_p95_ms,latency_p99_ms,ttft_p50_ms,ttft_p95_ms,tpot_p50_ms,output_tokens_per_s,error_rate,client_limited,input_tokens_per_s,repeated_requests,server_running_mean,server_running_max,server_waiting_mean,server_kv_cache_usage_max,server_preemptions,server_output_tokens_per_s,rate_limited,cached_prompt_tokens_per_s,server_prefix_cache_hit_rate,own_prefix_share,cache_inflated,warm_requests"
    );
    assert_eq!(levels_csv.lines().count(), levels.len() + 1);
    let requests_csv = std::fs::read_to_string(out.join("requests.csv")).unwrap();
    let mut lines = requests_csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "concurrency,start_ms,latency_ms,ttft_ms,prompt_tokens,output_tokens,status,error"
    );
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(row[4], "4", "prompt tokens from usage");
    assert_eq!(row[5], TOKENS.to_string(), "output tokens from usage");
    assert_eq!(row[6], "ok");
    let svg = std::fs::read_to_string(out.join("throughput.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("knee"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knee_at_sixteen_for_two_gpus_of_eight() {
    sweep_finds_knee(2, 8, 20.0, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knee_at_five_for_one_gpu_of_five_with_jitter() {
    sweep_finds_knee(1, 5, 20.0, 0.3).await;
}

#[test]
fn levels_without_data_are_empty_and_left_out_of_knee_and_plan() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep");
    // One slot, 100 ms per request: level 1 finishes ~10 a second; level 32 queues, and its
    // warm-up (32 answers) cannot end within the 1 s --max-duration.
    let o = sizeup()
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
    let plan = sizeup()
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
    let o = sizeup()
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

#[test]
fn the_sweep_samples_the_whole_file_and_flags_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("sorted.jsonl");
    sorted_file(&input, 2000, 2, 6);
    let out = dir.path().join("sweep");
    let o = sizeup()
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

/// Levels below the knee end as soon as they show it (their CI's low bound over 1.5 times the
/// level below), the first level at a rough CI, the top level never early, and a knee that
/// ended early is measured again in full; summary.json says what each level cost and why it
/// ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn levels_below_the_knee_end_early_and_say_why() {
    let _serial = SERIAL.lock().await;
    let sim = SimHandle::start(fast_sim(1, 8, 20.0, 0.0)).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let url = sim.url();
    let out2 = out.clone();
    let output = tokio::task::spawn_blocking(move || {
        sizeup()
            .args(["sweep", "--json", "--endpoint", &url, "--concurrency", "1,2,4,16,32"])
            // A CI this narrow is not met in 4 s below the knee: only the early rules end them.
            .args([
                "--warmup",
                "200ms",
                "--max-duration",
                "4s",
                "--min-requests",
                "20",
                "--ci-width",
                "0.005",
            ])
            .args(["--prompt-tokens", "4", "--max-tokens", "2", "--out"])
            .arg(&out2)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    sim.shutdown().await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let summary = read_json(&out.join("summary.json"));
    let spend = summary["level_spend"].as_array().expect("level_spend");
    let ended: Vec<(u64, &str)> = spend
        .iter()
        .map(|l| (l["concurrency"].as_u64().unwrap(), l["ended_by"].as_str().unwrap()))
        .collect();
    // 16, the knee, climbs from 4 as a level below the knee does and ends early too; once
    // 32 shows it flat, 16 is measured again in full, as a sixth entry.
    assert_eq!(ended.len(), 6, "{ended:?}\n{stderr}");
    assert_eq!(ended[5].0, 16, "{ended:?}");
    assert!(matches!(ended[5].1, "ci_met" | "max_duration"), "{ended:?}");
    assert!(stderr.contains("level 16 is the knee and ended early"), "{stderr}");
    assert_eq!(ended[0], (1, "first_level"), "{ended:?}\n{stderr}");
    // Each of 2 and 4 about doubles the level below it.
    assert_eq!(ended[1], (2, "below_knee"), "{ended:?}\n{stderr}");
    assert_eq!(ended[2], (4, "below_knee"), "{ended:?}\n{stderr}");
    // 32, the top level, is never cut short: it may be the best there is.
    assert_ne!(ended[4].1, "below_knee", "{ended:?}");
    assert_ne!(ended[4].1, "first_level", "{ended:?}");
    for l in spend {
        assert!(
            l["seconds"].as_f64().unwrap() > 0.0 && l["requests"].as_u64().unwrap() >= 20,
            "{l}"
        );
    }
    // An early level ended well before --max-duration.
    assert!(spend[1]["seconds"].as_f64().unwrap() < 4.0, "{spend:?}");
    assert!(stderr.contains("below the knee"), "{stderr}");
}
