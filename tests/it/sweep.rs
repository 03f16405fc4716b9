//! `sweep` against a simulator of known capacity: RPM per GPU near the formula, knee at G*B,
//! report files as the contract names them.

use crate::util::{fast_sim, read_json, sizeup};
use sizeup::sim::gpu::expected_rpm;
use sizeup::sim::SimHandle;

const TOKENS: u32 = 4;

/// The sweeps measure throughput: run them one at a time, not against each other (other
/// modules' sweeps that check rates take it too).
pub(crate) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

    // Files and columns exactly as PRODUCT.md names them.
    let levels_csv = std::fs::read_to_string(out.join("levels.csv")).unwrap();
    assert_eq!(
        levels_csv.lines().next().unwrap(),
        "concurrency,duration_s,requests_ok,requests_failed,rpm,rpm_ci_low,rpm_ci_high,rpm_per_gpu,latency_p50_ms,latency_p90_ms,latency_p95_ms,latency_p99_ms,ttft_p50_ms,ttft_p95_ms,tpot_p50_ms,output_tokens_per_s,error_rate,client_limited,input_tokens_per_s,repeated_requests,server_running_mean,server_running_max,server_waiting_mean,server_kv_cache_usage_max,server_preemptions,server_output_tokens_per_s"
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_endpoint_exits_3() {
    // Refused connection.
    let out = tokio::task::spawn_blocking(|| {
        sizeup()
            .args([
                "sweep",
                "--endpoint",
                "http://127.0.0.1:1",
                "--model",
                "m",
                "--concurrency",
                "1",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    // Every warm-up request refused (401): the hint names the variable, never the key.
    let mut cfg = fast_sim(1, 2, 1.0, 0.0);
    cfg.api_key = Some(sizeup::secret::Secret::new("right-key"));
    let sim = SimHandle::start(cfg).await.unwrap();
    let url = sim.url();
    let out = tokio::task::spawn_blocking(move || {
        sizeup()
            .env("SIZEUP_API_KEY", "wrong-key-123")
            .args([
                "sweep",
                "--endpoint",
                &url,
                "--concurrency",
                "1",
                "--warmup",
                "100ms",
                "--model",
                "sizeup-sim",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    sim.shutdown().await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("SIZEUP_API_KEY"), "{err}");
    assert!(!err.contains("wrong-key-123"), "the key leaked: {err}");
}
