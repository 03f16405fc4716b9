//! The fault matrix: `run` against a resource that fails in every way the simulator can, and
//! the proof that nothing is lost and nothing is answered twice. Prints the matrix (run with
//! `--nocapture` to see it); README "Guarantees" quotes it.

use crate::util::{batch_file, fast_sim, read_json, sizeup, sizeup_command};
use sizeup::sim::{SimConfig, SimHandle};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

struct Row {
    scenario: String,
    requests: usize,
    lost: usize,
    twice: usize,
    retries: u64,
    exit: i32,
}

/// Success records per custom_id in an output file.
fn successes(path: &Path) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("every output line parses");
        let ok = v["error"].is_null()
            && v["response"]["status_code"]
                .as_u64()
                .is_some_and(|s| (200..300).contains(&s));
        if ok {
            *m.entry(v["custom_id"].as_str().unwrap().to_string()).or_insert(0) += 1;
        }
    }
    m
}

async fn scenario(name: &str, cfg: SimConfig, n: usize, extra: &[&str], off_on: bool) -> Row {
    let sim = SimHandle::start(cfg).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let input = batch_file(tmp.path(), n, 4);
    let output = tmp.path().join("out.jsonl");
    let summary = tmp.path().join("summary.json");
    let mut cmd = sizeup_command();
    cmd.args([
        "run",
        "--quiet",
        "--endpoint",
        &sim.url(),
        "--concurrency",
        "8",
        "--retry-base",
        "20ms",
        "--retry-max",
        "200ms",
    ])
    .arg("--input")
    .arg(&input)
    .arg("--output")
    .arg(&output)
    .arg("--summary")
    .arg(&summary)
    .args(extra)
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    if off_on {
        // Switch the resource off once a quarter of the batch is done, on again 500 ms later.
        let http = reqwest::Client::new();
        for _ in 0..400 {
            if std::fs::read_to_string(&output).map(|t| t.lines().count()).unwrap_or(0) >= n / 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let resource = format!("{}/resource", sim.url());
        http.post(&resource).body(r#"{"state":"off"}"#).send().await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        http.post(&resource).body(r#"{"state":"on"}"#).send().await.unwrap();
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    sim.shutdown().await;
    let exit = out.status.code().unwrap_or(-1);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    let got = successes(&output);
    // Sent again: retries, and 429s waited out (which use no retry).
    let retries = if summary.exists() {
        let sm = read_json(&summary);
        sm["retries"].as_u64().unwrap_or(0) + sm["rate_limited"].as_u64().unwrap_or(0)
    } else {
        0
    };
    Row {
        scenario: name.to_string(),
        requests: n,
        lost: (1..=n).filter(|i| !got.contains_key(&format!("id-{i}"))).count(),
        twice: got.values().filter(|c| **c > 1).count(),
        retries,
        exit,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix_loses_nothing_and_answers_nothing_twice() {
    let base = || fast_sim(2, 4, 2.0, 0.0);
    let with = |f: &dyn Fn(&mut SimConfig)| {
        let mut c = base();
        f(&mut c);
        c
    };
    // 30% rows get more retries: at 30% a request fails 11 times in a row with p = 2e-6.
    let many = ["--retries", "10"];
    let mut rows = vec![
        scenario("no faults", base(), 200, &[], false).await,
        scenario("500 at 10%", with(&|c| c.fail_rate = 0.10), 200, &[], false).await,
        scenario("500 at 30%", with(&|c| c.fail_rate = 0.30), 200, &many, false).await,
        scenario(
            "429 at 10% (Retry-After 1s)",
            with(&|c| c.throttle_rate = 0.10),
            200,
            &[],
            false,
        )
        .await,
        scenario(
            "429 at 30% (Retry-After 1s)",
            with(&|c| c.throttle_rate = 0.30),
            200,
            &many,
            false,
        )
        .await,
        scenario("reset at 10%", with(&|c| c.reset_rate = 0.10), 200, &[], false).await,
        scenario("reset at 30%", with(&|c| c.reset_rate = 0.30), 200, &many, false).await,
        scenario(
            "500+429+reset at 10% each",
            with(&|c| {
                c.fail_rate = 0.10;
                c.throttle_rate = 0.10;
                c.reset_rate = 0.10;
            }),
            200,
            &many,
            false,
        )
        .await,
        // 10..190 ms service against a 150 ms timeout: about one attempt in five times out.
        scenario(
            "slow answers past --timeout",
            with(&|c| {
                c.params.decode_step_ms = 25.0;
                c.jitter = 0.9;
            }),
            100,
            &["--timeout", "150ms", "--retries", "12"],
            false,
        )
        .await,
        scenario(
            "resource off and on mid-run",
            with(&|c| c.params.decode_step_ms = 5.0),
            400,
            &["--retries", "10"],
            true,
        )
        .await,
    ];
    // Nothing listens: the run must stop before sending, exit 3, and write nothing.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = tempfile::tempdir().unwrap();
    let input = batch_file(tmp.path(), 50, 4);
    let out = sizeup()
        .args([
            "run",
            "--endpoint",
            &format!("http://127.0.0.1:{port}"),
            "--model",
            "m",
            "--concurrency",
            "4",
            "--input",
        ])
        .arg(&input)
        .arg("--output")
        .arg(tmp.path().join("out.jsonl"))
        .output()
        .unwrap();
    let written = std::fs::read_to_string(tmp.path().join("out.jsonl"))
        .unwrap_or_default()
        .lines()
        .count();
    rows.push(Row {
        scenario: "connection refused at start".into(),
        requests: 50,
        lost: written,
        twice: 0,
        retries: 0,
        exit: out.status.code().unwrap_or(-1),
    });

    eprintln!("\n| scenario | requests | lost | answered twice | sent again | exit |\n|---|---|---|---|---|---|");
    for r in &rows {
        eprintln!(
            "| {} | {} | {} | {} | {} | {} |",
            r.scenario, r.requests, r.lost, r.twice, r.retries, r.exit
        );
    }
    for r in &rows[..rows.len() - 1] {
        assert_eq!(r.lost, 0, "{}: requests lost", r.scenario);
        assert_eq!(r.twice, 0, "{}: requests answered twice", r.scenario);
        assert_eq!(r.exit, 0, "{}: exit code", r.scenario);
    }
    for r in &rows[1..rows.len() - 1] {
        assert!(r.retries > 0, "{}: faults must have caused retries", r.scenario);
    }
    let refused = rows.last().unwrap();
    assert_eq!(refused.exit, 3, "connection refused is an unusable endpoint");
    assert_eq!(refused.lost, 0, "nothing written when nothing could be sent");
}
