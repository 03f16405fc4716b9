//! Integration tests for `sizeup run`, the batch runner: the binary is spawned against the
//! simulator (in this process via `SimHandle`, or the one `run` starts itself without
//! `--endpoint`), and the checks are counts and invariants read from the output file,
//! run-summary.json and the simulator's /metrics, never wall-clock timings (apart from
//! lower bounds that a slow machine can only make easier to meet).

use crate::util::sizeup_command;
use serde_json::{json, Value};
use sizeup::secret::Secret;
use sizeup::sim::gpu::GpuParams;
use sizeup::sim::{SimConfig, SimHandle};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::time::Instant;

/// Fast retries for 5xx and resets (429s still wait for their Retry-After).
const FAST_RETRY: [&str; 4] = ["--retry-base", "10ms", "--retry-max", "50ms"];

/// Longest any single child may run before the test gives up on it (a hang, not a timing check).
const CHILD_LIMIT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `sizeup run <args>` with a scrubbed environment, plus `extra_env`.
fn run_cmd(args: &[&str], extra_env: &[(&str, &str)]) -> std::process::Command {
    let mut c = sizeup_command();
    c.arg("run").args(args);
    for (k, v) in extra_env {
        c.env(k, v);
    }
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn ran(o: std::process::Output) -> Ran {
    Ran {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Runs to completion from a plain (non-async) test.
fn run_sync(args: &[&str], extra_env: &[(&str, &str)]) -> Ran {
    run_cmd(args, extra_env).output().map(ran).expect("spawn sizeup")
}

/// Runs to completion from an async test without blocking a runtime worker (the simulator
/// lives on the same runtime), bounded by [`CHILD_LIMIT`].
async fn run_async(args: &[&str], extra_env: &[(&str, &str)]) -> Ran {
    let mut c = tokio::process::Command::from(run_cmd(args, extra_env));
    c.kill_on_drop(true);
    match tokio::time::timeout(CHILD_LIMIT, c.output()).await {
        Ok(o) => ran(o.expect("spawn sizeup")),
        Err(_) => panic!("sizeup run {args:?} did not finish within {CHILD_LIMIT:?}"),
    }
}

/// A simulator with `gpus` x `batch` slots, no prefill cost and a flat decode step.
fn sim_cfg(gpus: usize, batch: usize, step_ms: f64) -> SimConfig {
    SimConfig {
        gpus,
        params: GpuParams {
            batch,
            prefill_ms_per_1k: 0.0,
            decode_step_ms: step_ms,
            decode_step_ms_per_seq: 0.0,
        },
        default_max_tokens: 2,
        retry_after: Duration::from_secs(1),
        ..SimConfig::default()
    }
}

/// The simulator's Prometheus metrics as `series -> value`.
async fn metrics(url: &str) -> HashMap<String, f64> {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Metrics once nothing is in flight at the simulator any more (bounded wait).
async fn settled_metrics(url: &str) -> HashMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = metrics(url).await;
        if gauge(&m, "sizeup_sim_requests_in_flight") == 0 && gauge(&m, "sizeup_sim_requests_running") == 0 {
            return m;
        }
        assert!(Instant::now() < deadline, "the sim never settled: {m:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn outcome(m: &HashMap<String, f64>, name: &str) -> u64 {
    let key = format!("sizeup_sim_requests_total{{outcome=\"{name}\"}}");
    *m.get(&key).unwrap_or_else(|| panic!("no {key} in metrics: {m:?}")) as u64
}

/// Inference requests the simulator saw, whatever their outcome.
fn requests_seen(m: &HashMap<String, f64>) -> u64 {
    m.iter()
        .filter(|(k, _)| k.starts_with("sizeup_sim_requests_total{"))
        .map(|(_, v)| *v as u64)
        .sum()
}

fn gauge(m: &HashMap<String, f64>, name: &str) -> u64 {
    *m.get(name).unwrap_or_else(|| panic!("no {name} in metrics: {m:?}")) as u64
}

fn batch_line(id: &str, max_tokens: u32) -> String {
    json!({
        "custom_id": id,
        "method": "POST",
        "url": "/v1/completions",
        "body": {"prompt": "hello world", "max_tokens": max_tokens},
    })
    .to_string()
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// An OpenAI batch JSONL file with ids `id-0 .. id-(n-1)`.
fn write_batch(dir: &Path, name: &str, n: usize, max_tokens: u32) -> (PathBuf, Vec<String>) {
    let path = dir.join(name);
    let ids = ids("id", n);
    let text: String = ids.iter().map(|id| batch_line(id, max_tokens) + "\n").collect();
    std::fs::write(&path, text).expect("write input");
    (path, ids)
}

/// Every line of an output (or errors) file, each of which must be one whole JSON object.
fn read_records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} does not end with a newline (torn last line)",
        path.display()
    );
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}:{}: not JSON ({e}): {l:?}", path.display(), i + 1));
            assert!(v.is_object(), "{}:{}: not an object: {l}", path.display(), i + 1);
            v
        })
        .collect()
}

fn line_count(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

fn custom_id(rec: &Value) -> String {
    rec["custom_id"]
        .as_str()
        .unwrap_or_else(|| panic!("record without a string custom_id: {rec}"))
        .to_string()
}

fn is_success(rec: &Value) -> bool {
    rec["error"].is_null()
        && rec["response"]["status_code"]
            .as_u64()
            .is_some_and(|s| (200..300).contains(&s))
}

/// How many lines each custom_id has.
fn id_counts(recs: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in recs {
        *m.entry(custom_id(r)).or_insert(0) += 1;
    }
    m
}

/// Asserts that `recs` hold exactly one line per id of `want`, each a success.
fn assert_each_once_ok(recs: &[Value], want: &[String], what: &str) {
    let counts = id_counts(recs);
    let dups: Vec<_> = counts.iter().filter(|(_, &n)| n > 1).collect();
    assert!(dups.is_empty(), "{what}: custom_ids with more than one line: {dups:?}");
    let got: BTreeSet<&str> = counts.keys().map(String::as_str).collect();
    let want_set: BTreeSet<&str> = want.iter().map(String::as_str).collect();
    let missing: Vec<_> = want_set.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want_set).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: missing ids {missing:?}, unexpected ids {extra:?}"
    );
    assert_eq!(recs.len(), want.len(), "{what}: line count");
    for r in recs {
        assert!(is_success(r), "{what}: not a success: {r}");
        assert_eq!(r["response"]["status_code"], 200, "{what}: {r}");
        assert!(
            r["response"]["body"]["choices"].is_array(),
            "{what}: response body without choices: {r}"
        );
    }
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not an unsigned integer in {v}"))
}

fn errors_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".errors.jsonl");
    PathBuf::from(s)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Waits (bounded) until `path` has at least `lines` lines; false if the child ended first.
async fn wait_for_lines(child: &mut tokio::process::Child, path: &Path, lines: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if line_count(path) >= lines {
            return true;
        }
        if child.try_wait().expect("try_wait").is_some() {
            return false;
        }
        assert!(
            Instant::now() < deadline,
            "{} never reached {lines} lines",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn collect(child: tokio::process::Child) -> Ran {
    match tokio::time::timeout(CHILD_LIMIT, child.wait_with_output()).await {
        Ok(o) => ran(o.expect("wait for sizeup")),
        Err(_) => panic!("sizeup did not exit within {CHILD_LIMIT:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Every custom_id answered exactly once
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_custom_id_answered_exactly_once() {
    let sim = SimHandle::start(sim_cfg(2, 8, 2.0)).await.expect("sim");
    let dir = tempfile::tempdir().unwrap();
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 500, 2);
    let out = dir.path().join("out.jsonl");
    let summary = dir.path().join("summary.json");
    let url = sim.url();
    let r = run_async(
        &[
            "--endpoint",
            &url,
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--summary",
            s(&summary),
            "--concurrency",
            "16",
            FAST_RETRY[0],
            FAST_RETRY[1],
            FAST_RETRY[2],
            FAST_RETRY[3],
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(
        r.stdout.trim().is_empty(),
        "stdout carries data only; run prints none: {r:?}"
    );

    let recs = read_records(&out);
    assert_each_once_ok(&recs, &want, "output");
    // Record ids are unique too.
    let rec_ids: BTreeSet<&str> = recs.iter().map(|r| r["id"].as_str().expect("record id")).collect();
    assert_eq!(rec_ids.len(), 500, "record `id`s must be unique");
    assert!(!errors_path(&out).exists(), "a clean run leaves no errors file");

    let sm = read_json(&summary);
    assert_eq!(u(&sm, "requests_ok"), 500, "{sm}");
    assert_eq!(u(&sm, "requests_failed"), 0, "{sm}");
    assert_eq!(u(&sm, "requests_total"), 500, "{sm}");
    assert_eq!(u(&sm, "not_finished"), 0, "{sm}");
    assert_eq!(sm["interrupted"], false, "{sm}");
    assert_eq!(u(&sm, "concurrency"), 16, "{sm}");

    let m = metrics(&url).await;
    assert_eq!(outcome(&m, "ok"), 500, "each request sent once: {m:?}");
    assert_eq!(requests_seen(&m), 500, "{m:?}");
    assert!(gauge(&m, "sizeup_sim_requests_in_flight_max") <= 16, "{m:?}");
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Faults: 500s, resets, 429s
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_retried_and_every_id_succeeds_once() {
    let sim = SimHandle::start(SimConfig {
        fail_rate: 0.05,
        reset_rate: 0.02,
        ..sim_cfg(2, 8, 2.0)
    })
    .await
    .expect("sim");
    let dir = tempfile::tempdir().unwrap();
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 300, 2);
    let out = dir.path().join("out.jsonl");
    let summary = dir.path().join("summary.json");
    let url = sim.url();
    let r = run_async(
        &[
            "--endpoint",
            &url,
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--summary",
            s(&summary),
            "--concurrency",
            "16",
            FAST_RETRY[0],
            FAST_RETRY[1],
            FAST_RETRY[2],
            FAST_RETRY[3],
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, Some(0), "{r:?}");
    let recs = read_records(&out);
    assert_each_once_ok(&recs, &want, "output with faults");
    assert!(!errors_path(&out).exists(), "retried-then-ok requests are not failures");

    let sm = read_json(&summary);
    let m = metrics(&url).await;
    let faults = outcome(&m, "error_500") + outcome(&m, "reset") + outcome(&m, "throttled_429");
    assert!(
        outcome(&m, "error_500") > 0 && outcome(&m, "reset") > 0,
        "the sim injected both faults: {m:?}"
    );
    assert_eq!(u(&sm, "requests_ok"), 300, "{sm}");
    assert_eq!(u(&sm, "requests_failed"), 0, "{sm}");
    assert!(u(&sm, "retries") > 0, "{sm}");
    assert!(
        u(&sm, "requests_retried") > 0 && u(&sm, "requests_retried") <= u(&sm, "retries"),
        "{sm}"
    );
    // Every failed attempt is retried once, and nothing else is.
    assert_eq!(
        u(&sm, "retries"),
        faults,
        "retries vs faults the sim injected: {sm} {m:?}"
    );
    // A success is never sent again.
    assert_eq!(outcome(&m, "ok"), 300, "{m:?}");
    sim.shutdown().await;
}

#[test]
fn throttling_429_honours_retry_after() {
    // The built-in simulator (no --endpoint) with its own fault flags.
    let dir = tempfile::tempdir().unwrap();
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 40, 2);
    let out = dir.path().join("out.jsonl");
    let summary = dir.path().join("summary.json");
    let r = run_sync(
        &[
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--summary",
            s(&summary),
            "--concurrency",
            "8",
            "--gpus",
            "1",
            "--batch",
            "8",
            "--decode-step-ms",
            "2",
            "--throttle-rate",
            "0.1",
            FAST_RETRY[0],
            FAST_RETRY[1],
            FAST_RETRY[2],
            FAST_RETRY[3],
        ],
        &[],
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_each_once_ok(&read_records(&out), &want, "output with 429s");
    let sm = read_json(&summary);
    assert_eq!(u(&sm, "requests_ok"), 40, "{sm}");
    assert!(u(&sm, "retries") > 0, "seed 1 throttles some of 40 requests: {sm}");
    // A throttled request waits at least its Retry-After (1 s) although --retry-max is 50ms:
    // a lower bound, which a slow machine only makes easier to meet.
    let wall = sm["wall_time_s"].as_f64().expect("wall_time_s");
    assert!(
        wall >= 0.95,
        "429 retried before its Retry-After of 1 s: wall {wall}s, {sm}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Concurrency cap: exactly N in flight
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_cap_is_exact() {
    // One GPU with 64 slots: the server would take far more than 7 at once.
    let sim = SimHandle::start(sim_cfg(1, 64, 15.0)).await.expect("sim");
    let dir = tempfile::tempdir().unwrap();
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 200, 2);
    let out = dir.path().join("out.jsonl");
    let summary = dir.path().join("summary.json");
    let url = sim.url();
    let r = run_async(
        &[
            "--endpoint",
            &url,
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--summary",
            s(&summary),
            "--concurrency",
            "7",
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_each_once_ok(&read_records(&out), &want, "output");
    let m = metrics(&url).await;
    assert_eq!(outcome(&m, "ok"), 200, "{m:?}");
    assert_eq!(
        gauge(&m, "sizeup_sim_requests_in_flight_max"),
        7,
        "--concurrency 7 must keep exactly 7 in flight (never more, and the window fills): {m:?}"
    );
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 4. 401 stops the run
// ---------------------------------------------------------------------------------------------

const WRONG_KEY: &str = "wrong-Xk93LqPz7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_stops_the_run_with_exit_3() {
    let sim = SimHandle::start(SimConfig {
        api_key: Some(Secret::new("right")),
        ..sim_cfg(1, 8, 2.0)
    })
    .await
    .expect("sim");
    let url = sim.url();
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = write_batch(dir.path(), "jobs.jsonl", 200, 2);

    // --model skips GET /v1/models, so the refusal comes from the inference requests.
    let out = dir.path().join("out.jsonl");
    let summary = dir.path().join("summary.json");
    let r = run_async(
        &[
            "--endpoint",
            &url,
            "--model",
            "sizeup-sim",
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--summary",
            s(&summary),
            "--concurrency",
            "4",
            FAST_RETRY[0],
            FAST_RETRY[1],
            FAST_RETRY[2],
            FAST_RETRY[3],
        ],
        &[("SIZEUP_API_KEY", WRONG_KEY)],
    )
    .await;
    assert_eq!(r.code, Some(3), "{r:?}");
    assert!(r.stderr.contains("SIZEUP_API_KEY"), "stderr names the variable: {r:?}");
    assert!(
        !r.stderr.contains(WRONG_KEY) && !r.stderr.contains("Xk93Lq"),
        "stderr leaks the key: {r:?}"
    );
    assert!(!r.stdout.contains("Xk93Lq"), "stdout leaks the key: {r:?}");
    assert!(!r.stderr.contains("panicked"), "{r:?}");
    let m = metrics(&url).await;
    let refused = outcome(&m, "unauthorized_401");
    assert!(refused >= 1, "{m:?}");
    assert!(
        refused <= 8,
        "after the first 401 at most the in-flight requests may still arrive; got {refused}: {m:?}"
    );
    assert_eq!(outcome(&m, "ok"), 0, "{m:?}");
    for f in [out.clone(), errors_path(&out), summary.clone()] {
        if f.exists() {
            let text = std::fs::read_to_string(&f).unwrap();
            assert!(!text.contains("Xk93Lq"), "{} leaks the key", f.display());
        }
    }
    if out.exists() {
        let recs = read_records(&out);
        assert!(recs.len() as u64 <= refused, "no more lines than refused requests");
        assert!(recs.iter().all(|r| !is_success(r)), "nothing succeeded");
    }

    // Without --model the first refusal is GET /v1/models: still exit 3, no inference sent.
    let before = metrics(&url).await;
    let out2 = dir.path().join("out2.jsonl");
    let r = run_async(
        &[
            "--endpoint",
            &url,
            "--input",
            s(&input),
            "--output",
            s(&out2),
            "--concurrency",
            "4",
        ],
        &[("OPENAI_API_KEY", WRONG_KEY)],
    )
    .await;
    assert_eq!(r.code, Some(3), "{r:?}");
    assert!(
        r.stderr.contains("OPENAI_API_KEY") && !r.stderr.contains("Xk93Lq"),
        "{r:?}"
    );
    let after = metrics(&url).await;
    assert!(
        outcome(&after, "unauthorized_401") - outcome(&before, "unauthorized_401") <= 8,
        "{after:?}"
    );
    assert_eq!(outcome(&after, "ok"), 0);

    // No key at all: exit 3 with a hint to set one.
    let out3 = dir.path().join("out3.jsonl");
    let r = run_async(
        &[
            "--endpoint",
            &url,
            "--model",
            "sizeup-sim",
            "--input",
            s(&input),
            "--output",
            s(&out3),
            "--concurrency",
            "4",
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, Some(3), "{r:?}");
    assert!(
        r.stderr.contains("SIZEUP_API_KEY"),
        "hint names the variable to set: {r:?}"
    );
    let end = metrics(&url).await;
    assert!(
        outcome(&end, "unauthorized_401") - outcome(&after, "unauthorized_401") <= 8,
        "{end:?}"
    );
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 5. A bad input line stops the run before anything is sent
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_line_stops_before_sending_unless_skip_invalid() {
    let sim = SimHandle::start(sim_cfg(1, 8, 2.0)).await.expect("sim");
    let url = sim.url();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("broken-input.jsonl");
    let text = format!(
        "{}\n{}\n{}\n{}\n{}\n",
        batch_line("id-1", 2),
        batch_line("id-2", 2),
        r#"{"custom_id":"id-3","method":"POST","url":"/v1/completions","body":{"prompt":"x""#,
        batch_line("id-4", 2),
        batch_line("id-5", 2)
    );
    std::fs::write(&input, text).unwrap();
    let out = dir.path().join("out.jsonl");
    let summary = dir.path().join("summary.json");
    let r = run_async(
        &[
            "--endpoint",
            &url,
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--summary",
            s(&summary),
            "--concurrency",
            "4",
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(
        r.stderr.contains("broken-input.jsonl:3:"),
        "stderr names file:line: {r:?}"
    );
    assert!(
        !r.stderr.contains(":1:") && !r.stderr.contains(":2:"),
        "only line 3 is bad: {r:?}"
    );
    assert!(r.stderr.contains("--skip-invalid"), "hint: {r:?}");
    assert!(!out.exists(), "no output file when nothing was sent");
    assert!(!errors_path(&out).exists());
    let m = metrics(&url).await;
    assert_eq!(requests_seen(&m), 0, "nothing sent: {m:?}");

    // --skip-invalid: the rest is sent, line 3 is listed in the errors file.
    let r = run_async(
        &[
            "--endpoint",
            &url,
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--summary",
            s(&summary),
            "--concurrency",
            "4",
            "--skip-invalid",
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, Some(0), "{r:?}");
    let want: Vec<String> = ["id-1", "id-2", "id-4", "id-5"].iter().map(|s| s.to_string()).collect();
    assert_each_once_ok(&read_records(&out), &want, "output with --skip-invalid");
    let errs = read_records(&errors_path(&out));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0]["line"], 3, "{errs:?}");
    assert_eq!(errs[0]["error"]["code"], "invalid_input", "{errs:?}");
    let sm = read_json(&summary);
    assert_eq!(u(&sm, "skipped_invalid"), 1, "{sm}");
    assert_eq!(u(&sm, "requests_ok"), 4, "{sm}");
    let m = metrics(&url).await;
    assert_eq!(outcome(&m, "ok"), 4, "{m:?}");
    assert_eq!(requests_seen(&m), 4, "{m:?}");
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 6. No silent overwrite; usage errors send nothing
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_output_needs_resume_and_usage_errors_send_nothing() {
    let sim = SimHandle::start(sim_cfg(1, 8, 2.0)).await.expect("sim");
    let url = sim.url();
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = write_batch(dir.path(), "jobs.jsonl", 10, 2);
    let out = dir.path().join("out.jsonl");
    std::fs::write(&out, "keep me\n").unwrap();
    let r = run_async(
        &[
            "--endpoint",
            &url,
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--concurrency",
            "4",
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("--resume"), "hint mentions --resume: {r:?}");
    assert!(r.stderr.contains("out.jsonl"), "names the file: {r:?}");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "keep me\n",
        "existing output untouched"
    );

    // An existing errors file alone is refused too.
    let out2 = dir.path().join("out2.jsonl");
    std::fs::write(errors_path(&out2), "{}\n").unwrap();
    let r = run_async(
        &[
            "--endpoint",
            &url,
            "--input",
            s(&input),
            "--output",
            s(&out2),
            "--concurrency",
            "4",
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("--resume"), "{r:?}");
    assert!(!out2.exists());
    assert_eq!(std::fs::read_to_string(errors_path(&out2)).unwrap(), "{}\n");

    // Other usage errors: exit 2, nothing sent.
    let out3 = dir.path().join("out3.jsonl");
    let missing = dir.path().join("nope.jsonl");
    for args in [
        vec![
            "--endpoint",
            &url,
            "--input",
            s(&input),
            "--output",
            s(&out3),
            "--concurrency",
            "0",
        ],
        vec![
            "--endpoint",
            &url,
            "--input",
            s(&missing),
            "--output",
            s(&out3),
            "--concurrency",
            "4",
        ],
        vec![
            "--endpoint",
            &url,
            "--input",
            s(&input),
            "--output",
            s(&out3),
            "--concurrency",
            "4",
            "--rate",
            "0",
        ],
        vec!["--endpoint", &url, "--input", s(&input), "--output", s(&out3)],
    ] {
        let r = run_async(&args, &[]).await;
        assert_eq!(r.code, Some(2), "{args:?}: {r:?}");
        assert!(r.stderr.contains("error"), "{args:?}: {r:?}");
        assert!(!r.stderr.contains("panicked"), "{args:?}: {r:?}");
        assert!(!out3.exists(), "{args:?}");
    }
    let m = metrics(&url).await;
    assert_eq!(requests_seen(&m), 0, "{m:?}");
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 7. kill -9, then --resume (and torn lines)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_resume_sends_each_request_once_more_at_most() {
    // 20 ms steps x 3 tokens = 60 ms a request, 8 at once: ~3 s for the batch.
    let sim = SimHandle::start(sim_cfg(1, 8, 20.0)).await.expect("sim");
    let url = sim.url();
    let dir = tempfile::tempdir().unwrap();
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 400, 3);
    let out = dir.path().join("out.jsonl");
    let summary = dir.path().join("summary.json");
    let args = [
        "--endpoint",
        &url,
        "--input",
        s(&input),
        "--output",
        s(&out),
        "--summary",
        s(&summary),
        "--concurrency",
        "8",
        FAST_RETRY[0],
        FAST_RETRY[1],
        FAST_RETRY[2],
        FAST_RETRY[3],
    ];
    let mut c = tokio::process::Command::from(run_cmd(&args, &[]));
    c.kill_on_drop(true);
    let mut child = c.spawn().expect("spawn sizeup");
    assert!(
        wait_for_lines(&mut child, &out, 50).await,
        "the run ended before it could be killed"
    );
    child.start_kill().expect("SIGKILL");
    let killed = collect(child).await;
    assert_ne!(killed.code, Some(0), "killed: {killed:?}");

    // Every line written before the kill is whole.
    let first = read_records(&out);
    assert!(first.len() >= 50 && first.len() < 400, "{} lines", first.len());
    assert!(first.iter().all(is_success));
    let done: BTreeSet<String> = first.iter().map(custom_id).collect();
    assert_eq!(done.len(), first.len(), "no duplicates before the kill");

    // A crash mid-write: a torn half line for an id not answered yet.
    let torn_id = want
        .iter()
        .find(|id| !done.contains(*id))
        .expect("some id left")
        .clone();
    {
        let mut f = std::fs::OpenOptions::new().append(true).open(&out).unwrap();
        write!(
            f,
            r#"{{"id":"batch_req_99999","custom_id":"{torn_id}","response":{{"status_code":20"#
        )
        .unwrap();
    }

    let mut resume_args = args.to_vec();
    resume_args.push("--resume");
    let r = run_async(&resume_args, &[]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stderr.contains("torn"), "the torn line is reported: {r:?}");
    let all = read_records(&out);
    assert_each_once_ok(&all, &want, "output after kill -9 and --resume");
    assert_eq!(
        &all[..first.len()],
        &first[..],
        "resume appends; earlier lines unchanged"
    );
    let sm = read_json(&summary);
    assert_eq!(u(&sm, "skipped_already_done"), first.len() as u64, "{sm}");
    assert_eq!(u(&sm, "requests_ok"), (400 - first.len()) as u64, "{sm}");

    let m = metrics(&url).await;
    let ok = outcome(&m, "ok");
    // Answered by the sim but lost by the killed run: at most the 8 in flight.
    assert!(
        (400..=408).contains(&ok),
        "sim answered {ok} requests for 400 ids: {m:?}"
    );
    sim.shutdown().await;
}

#[test]
fn resume_cuts_a_torn_tail_and_resends_only_missing_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 20, 2);
    let out = dir.path().join("out.jsonl");
    let summary = dir.path().join("summary.json");
    let args = [
        "--input",
        s(&input),
        "--output",
        s(&out),
        "--summary",
        s(&summary),
        "--concurrency",
        "4",
        "--decode-step-ms",
        "1",
    ];
    let r = run_sync(&args, &[]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let full = read_records(&out);
    assert_each_once_ok(&full, &want, "first run");

    // Keep 10 whole lines and half of the 11th, as a crash mid-write would.
    let text = std::fs::read_to_string(&out).unwrap();
    let mut cut = 0;
    for _ in 0..10 {
        cut += text[cut..].find('\n').unwrap() + 1;
    }
    let eleventh = &text[cut..cut + text[cut..].find('\n').unwrap()];
    std::fs::write(&out, format!("{}{}", &text[..cut], &eleventh[..eleventh.len() / 2])).unwrap();

    let mut resume = args.to_vec();
    resume.push("--resume");
    let r = run_sync(&resume, &[]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let all = read_records(&out);
    assert_each_once_ok(&all, &want, "after resume over a torn tail");
    assert_eq!(&all[..10], &full[..10]);
    let sm = read_json(&summary);
    assert_eq!(u(&sm, "skipped_already_done"), 10, "{sm}");
    assert_eq!(u(&sm, "requests_ok"), 10, "the torn 11th and the 9 after it: {sm}");

    // Resuming a finished run sends nothing and changes nothing.
    let before = std::fs::read(&out).unwrap();
    let r = run_sync(&resume, &[]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(std::fs::read(&out).unwrap(), before);
    let sm = read_json(&summary);
    assert_eq!(
        (u(&sm, "requests_total"), u(&sm, "skipped_already_done")),
        (0, 20),
        "{sm}"
    );

    // --resume with no output yet starts from scratch.
    let fresh = dir.path().join("fresh.jsonl");
    let r = run_sync(
        &[
            "--input",
            s(&input),
            "--output",
            s(&fresh),
            "--concurrency",
            "4",
            "--decode-step-ms",
            "1",
            "--resume",
        ],
        &[],
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_each_once_ok(&read_records(&fresh), &want, "--resume without an output");
}

// ---------------------------------------------------------------------------------------------
// 8. SIGINT: clean drain, exit 130, then --resume
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_exits_130_and_resume_completes() {
    let sim = SimHandle::start(sim_cfg(1, 8, 20.0)).await.expect("sim");
    let url = sim.url();
    let dir = tempfile::tempdir().unwrap();
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 400, 3);
    let out = dir.path().join("out.jsonl");
    let summary = dir.path().join("summary.json");
    let args = [
        "--endpoint",
        &url,
        "--input",
        s(&input),
        "--output",
        s(&out),
        "--summary",
        s(&summary),
        "--concurrency",
        "8",
        FAST_RETRY[0],
        FAST_RETRY[1],
        FAST_RETRY[2],
        FAST_RETRY[3],
    ];
    let mut c = tokio::process::Command::from(run_cmd(&args, &[]));
    c.kill_on_drop(true);
    let mut child = c.spawn().expect("spawn sizeup");
    assert!(
        wait_for_lines(&mut child, &out, 50).await,
        "the run ended before it could be interrupted"
    );
    let pid = child.id().expect("pid").to_string();
    let st = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill -INT");
    assert!(st.success());
    let r = collect(child).await;
    assert_eq!(r.code, Some(130), "{r:?}");
    assert!(r.stderr.contains("--resume"), "hint to resume: {r:?}");

    let first = read_records(&out);
    assert!(first.len() >= 50 && first.len() < 400, "{} lines", first.len());
    assert!(first.iter().all(is_success));
    let sm = read_json(&summary);
    assert_eq!(sm["interrupted"], true, "{sm}");
    assert_eq!(u(&sm, "requests_ok"), first.len() as u64, "{sm}");
    assert_eq!(u(&sm, "requests_failed"), 0, "{sm}");
    assert_eq!(u(&sm, "requests_ok") + u(&sm, "not_finished"), 400, "{sm}");
    // A clean drain: the requests in flight were finished, not dropped (the sim notices a
    // dropped one at its next decode step, so let it settle first), and every request the
    // sim answered was written.
    let m = settled_metrics(&url).await;
    assert_eq!(
        gauge(&m, "sizeup_sim_cancelled_total"),
        0,
        "in-flight requests were abandoned, not drained: {m:?}"
    );
    assert_eq!(outcome(&m, "ok"), first.len() as u64, "answered but not written: {m:?}");

    let mut resume = args.to_vec();
    resume.push("--resume");
    let r = run_async(&resume, &[]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    let all = read_records(&out);
    assert_each_once_ok(&all, &want, "output after SIGINT and --resume");
    let sm = read_json(&summary);
    assert_eq!(sm["interrupted"], false, "{sm}");
    assert_eq!(u(&sm, "skipped_already_done"), first.len() as u64, "{sm}");
    let m = metrics(&url).await;
    assert_eq!(outcome(&m, "ok"), 400, "nothing sent twice: {m:?}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_with_retries_pending_counts_each_unfinished_request_once() {
    // 30% of requests are throttled with Retry-After 5 s: at the interrupt many wait for a retry.
    let throttling = SimHandle::start(SimConfig {
        throttle_rate: 0.3,
        retry_after: Duration::from_secs(5),
        ..sim_cfg(1, 8, 20.0)
    })
    .await
    .expect("sim");
    let dir = tempfile::tempdir().unwrap();
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 400, 3);
    let out = dir.path().join("out.jsonl");
    let summary = dir.path().join("summary.json");
    let url = throttling.url();
    let args = |url: &str| -> Vec<String> {
        [
            "--endpoint",
            url,
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--summary",
            s(&summary),
            "--concurrency",
            "8",
        ]
        .iter()
        .chain(FAST_RETRY.iter())
        .map(|a| a.to_string())
        .collect()
    };
    let first_args = args(&url);
    let first_args: Vec<&str> = first_args.iter().map(String::as_str).collect();
    let mut c = tokio::process::Command::from(run_cmd(&first_args, &[]));
    c.kill_on_drop(true);
    let mut child = c.spawn().expect("spawn sizeup");
    assert!(
        wait_for_lines(&mut child, &out, 50).await,
        "the run ended before it could be interrupted"
    );
    let pid = child.id().expect("pid").to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill -INT")
        .success());
    let r = collect(child).await;
    assert_eq!(r.code, Some(130), "{r:?}");
    let first = read_records(&out);
    let m = settled_metrics(&url).await;
    assert!(outcome(&m, "throttled_429") > 0, "{m:?}");
    let sm = read_json(&summary);
    assert_eq!(sm["interrupted"], true, "{sm}");
    assert_eq!(u(&sm, "requests_ok"), first.len() as u64, "{sm}");
    assert_eq!(u(&sm, "requests_total"), 400, "{sm}");
    // Each request is ok, failed or not finished, once: a request waiting for its retry is
    // one unfinished request, not two.
    assert_eq!(
        u(&sm, "requests_ok") + u(&sm, "requests_failed") + u(&sm, "not_finished"),
        u(&sm, "requests_total"),
        "ok + failed + not_finished must equal requests_total: {sm}"
    );
    throttling.shutdown().await;

    // --resume against a fault-free endpoint sends exactly the unfinished ones.
    let clean = SimHandle::start(sim_cfg(1, 8, 2.0)).await.expect("sim");
    let curl = clean.url();
    let mut resume_args = args(&curl);
    resume_args.push("--resume".into());
    let resume_args: Vec<&str> = resume_args.iter().map(String::as_str).collect();
    let r = run_async(&resume_args, &[]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_each_once_ok(
        &read_records(&out),
        &want,
        "output after SIGINT with retries pending and --resume",
    );
    let m = metrics(&curl).await;
    assert_eq!(outcome(&m, "ok"), 400 - first.len() as u64, "{m:?}");
    clean.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 9. --rate caps the send rate
// ---------------------------------------------------------------------------------------------

#[test]
fn rate_cap_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 60, 1);
    let out = dir.path().join("out.jsonl");
    let summary = dir.path().join("summary.json");
    let r = run_sync(
        &[
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--summary",
            s(&summary),
            "--concurrency",
            "8",
            "--rate",
            "1200",
            "--decode-step-ms",
            "1",
            "--batch",
            "8",
        ],
        &[],
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_each_once_ok(&read_records(&out), &want, "rate-capped output");
    let sm = read_json(&summary);
    let rpm = sm["achieved_rpm"].as_f64().expect("achieved_rpm");
    assert_eq!(sm["planned_rpm"].as_f64(), Some(1200.0), "{sm}");
    // The cap must hold (a busy machine can only make it slower) ...
    assert!(rpm <= 1200.0 * 1.15, "achieved {rpm} RPM over a 1200 RPM cap: {sm}");
    // ... and the 60 starts need at least 59 intervals of 50 ms.
    let wall = sm["wall_time_s"].as_f64().expect("wall_time_s");
    assert!(
        wall >= 59.0 * 0.05 * 0.95,
        "60 requests at 20/s took only {wall}s: {sm}"
    );
    // Loose lower bound: the limiter does not throttle far below the asked rate.
    assert!(rpm >= 1200.0 * 0.5, "achieved only {rpm} RPM: {sm}");
}

// ---------------------------------------------------------------------------------------------
// 10. Shards
// ---------------------------------------------------------------------------------------------

#[test]
fn shards_are_disjoint_and_cover_every_id() {
    let dir = tempfile::tempdir().unwrap();
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 101, 1);
    let sim_flags = ["--concurrency", "8", "--decode-step-ms", "1"];
    let mut union: BTreeMap<String, usize> = BTreeMap::new();
    let mut shard1 = BTreeSet::new();
    for k in 0..4u64 {
        let out = dir.path().join(format!("out-{k}.jsonl"));
        let summary = dir.path().join(format!("summary-{k}.json"));
        let shard = format!("{k}/4");
        let mut args = vec![
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--summary",
            s(&summary),
            "--shard",
            &shard,
        ];
        args.extend(sim_flags);
        let r = run_sync(&args, &[]);
        assert_eq!(r.code, Some(0), "shard {shard}: {r:?}");
        let recs = read_records(&out);
        let expect: Vec<String> = (0..101u64).filter(|i| i % 4 == k).map(|i| format!("id-{i}")).collect();
        assert_each_once_ok(&recs, &expect, &format!("shard {shard}"));
        let sm = read_json(&summary);
        assert_eq!(u(&sm, "requests_ok"), expect.len() as u64, "{sm}");
        assert_eq!(u(&sm, "skipped_other_shards"), 101 - expect.len() as u64, "{sm}");
        for r in &recs {
            *union.entry(custom_id(r)).or_insert(0) += 1;
        }
        if k == 1 {
            shard1 = recs.iter().map(custom_id).collect();
        }
    }
    assert!(union.values().all(|&n| n == 1), "shards overlap: {union:?}");
    let all: BTreeSet<&String> = union.keys().collect();
    assert_eq!(
        all,
        want.iter().collect::<BTreeSet<_>>(),
        "union of shards is the whole input"
    );

    // --shard auto from a Kubernetes Indexed Job's environment = --shard 1/4.
    let out = dir.path().join("out-auto.jsonl");
    let mut args = vec!["--input", s(&input), "--output", s(&out), "--shard", "auto"];
    args.extend(sim_flags);
    let r = run_sync(&args, &[("JOB_COMPLETION_INDEX", "1"), ("JOB_COMPLETION_COUNT", "4")]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let auto: BTreeSet<String> = read_records(&out).iter().map(custom_id).collect();
    assert_eq!(
        auto, shard1,
        "--shard auto with JOB_COMPLETION_INDEX=1/COUNT=4 equals --shard 1/4"
    );

    // Slurm array: SLURM_ARRAY_TASK_ID counted from SLURM_ARRAY_TASK_MIN.
    let out = dir.path().join("out-slurm.jsonl");
    let mut args = vec!["--input", s(&input), "--output", s(&out), "--shard", "auto"];
    args.extend(sim_flags);
    let r = run_sync(
        &args,
        &[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ],
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    let slurm: BTreeSet<String> = read_records(&out).iter().map(custom_id).collect();
    assert_eq!(slurm, shard1, "SLURM_ARRAY_TASK_ID=2 with MIN=1 is shard 1/4");

    // Invalid shards: exit 2, nothing written.
    let bad = dir.path().join("out-bad.jsonl");
    for (shard, env) in [
        ("4/4", vec![]),
        ("1/0", vec![]),
        ("x", vec![]),
        ("auto", vec![]),
        (
            "auto",
            vec![("JOB_COMPLETION_INDEX", "4"), ("JOB_COMPLETION_COUNT", "4")],
        ),
    ] {
        let mut args = vec!["--input", s(&input), "--output", s(&bad), "--shard", shard];
        args.extend(sim_flags);
        let r = run_sync(&args, &env);
        assert_eq!(r.code, Some(2), "--shard {shard} {env:?}: {r:?}");
        assert!(r.stderr.contains("--shard"), "{r:?}");
        assert!(!bad.exists(), "--shard {shard}: nothing written");
    }
}

// ---------------------------------------------------------------------------------------------
// 11. Input formats
// ---------------------------------------------------------------------------------------------

#[test]
fn text_csv_plain_jsonl_and_stdin_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--concurrency", "4", "--decode-step-ms", "1", "--max-tokens", "2"];

    // Text: one prompt per line, blank lines skipped; ids are line numbers. Default output
    // <stem>.output.jsonl and run-summary.json beside it.
    let text = dir.path().join("prompts.txt");
    std::fs::write(&text, "alpha one\n\nbeta two\ngamma three\n").unwrap();
    let mut args = vec!["--input", s(&text)];
    args.extend(flags);
    let r = run_sync(&args, &[]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let out = dir.path().join("prompts.output.jsonl");
    let want: Vec<String> = ["1", "3", "4"].iter().map(|s| s.to_string()).collect();
    let recs = read_records(&out);
    assert_each_once_ok(&recs, &want, "text input");
    for r in &recs {
        let usage = &r["response"]["body"]["usage"];
        assert_eq!(
            usage["completion_tokens"], 2,
            "--max-tokens applies to text prompts: {r}"
        );
        assert_eq!(usage["prompt_tokens"], 2, "the prompt is the line: {r}");
    }
    let sm = read_json(&dir.path().join("run-summary.json"));
    assert_eq!(u(&sm, "requests_ok"), 3, "{sm}");

    // CSV with a prompt column (other columns are metadata); ids are row numbers.
    let csv = dir.path().join("rows.csv");
    std::fs::write(&csv, "lang,prompt\nen,hello there friend\nfr,bonjour\n").unwrap();
    let out = dir.path().join("rows-out.jsonl");
    let mut args = vec!["--input", s(&csv), "--output", s(&out)];
    args.extend(flags);
    let r = run_sync(&args, &[]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let recs = read_records(&out);
    assert_each_once_ok(&recs, &["1".to_string(), "2".to_string()], "csv input");
    let row1 = recs.iter().find(|r| r["custom_id"] == "1").unwrap();
    assert_eq!(
        row1["response"]["body"]["usage"]["prompt_tokens"], 3,
        "row 1's prompt: {row1}"
    );

    // Plain JSONL request bodies: ids are line numbers.
    let plain = dir.path().join("bodies.jsonl");
    std::fs::write(
        &plain,
        "{\"prompt\":\"one two\",\"max_tokens\":1}\n\n{\"prompt\":\"three\",\"max_tokens\":2}\n",
    )
    .unwrap();
    let out = dir.path().join("bodies-out.jsonl");
    let mut args = vec!["--input", s(&plain), "--output", s(&out)];
    args.extend(flags);
    let r = run_sync(&args, &[]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let recs = read_records(&out);
    assert_each_once_ok(&recs, &["1".to_string(), "3".to_string()], "plain jsonl input");
    let line3 = recs.iter().find(|r| r["custom_id"] == "3").unwrap();
    assert_eq!(
        line3["response"]["body"]["usage"]["completion_tokens"], 2,
        "bodies are sent as given: {line3}"
    );

    // Stdin (`--input -`): OpenAI batch lines.
    let out = dir.path().join("stdin-out.jsonl");
    let mut args = vec!["--input", "-", "--output", s(&out)];
    args.extend(flags);
    let want = ids("id", 12);
    let input: String = want.iter().map(|id| batch_line(id, 2) + "\n").collect();
    let mut c = run_cmd(&args, &[]);
    c.stdin(Stdio::piped());
    let mut child = c.spawn().expect("spawn sizeup");
    {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
    }
    let r = ran(child.wait_with_output().unwrap());
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_each_once_ok(&read_records(&out), &want, "stdin input");
}

// ---------------------------------------------------------------------------------------------
// 12. --plan sets the concurrency and the prediction
// ---------------------------------------------------------------------------------------------

/// A plan.json as `sizeup plan` writes it (the fields PRODUCT.md lists, plus the sweep details).
fn write_plan(path: &Path, total_concurrency: u32, expected_rpm: f64) {
    let plan = json!({
        "target_rpm": expected_rpm,
        "gpus": 1,
        "concurrency_per_gpu": total_concurrency,
        "total_concurrency": total_concurrency,
        "rpm_per_gpu": expected_rpm,
        "rpm_per_gpu_low": expected_rpm,
        "expected_rpm": expected_rpm,
        "expected_latency_p95_ms": 50.0,
        "headroom": 0.1,
        "requests": null,
        "expected_duration_s": null,
        "cost_usd": null,
        "sweep": "",
        "sweep_gpus": 1,
        "chosen_concurrency": total_concurrency,
        "estimate": "low",
        "startup_s": 0.0,
    });
    std::fs::write(path, serde_json::to_string_pretty(&plan).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_sets_concurrency_and_concurrency_flag_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 100, 2);
    let plan = dir.path().join("plan.json");
    write_plan(&plan, 5, 6000.0);

    let sim = SimHandle::start(sim_cfg(1, 64, 15.0)).await.expect("sim");
    let (out, summary) = (dir.path().join("out.jsonl"), dir.path().join("summary.json"));
    let url = sim.url();
    let r = run_async(
        &[
            "--endpoint",
            &url,
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--summary",
            s(&summary),
            "--plan",
            s(&plan),
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_each_once_ok(&read_records(&out), &want, "run with --plan");
    let sm = read_json(&summary);
    assert_eq!(u(&sm, "concurrency"), 5, "{sm}");
    assert_eq!(sm["planned_rpm"].as_f64(), Some(6000.0), "{sm}");
    let predicted = sm["predicted_duration_s"]
        .as_f64()
        .expect("predicted_duration_s with a plan");
    assert!(
        (predicted - 1.0).abs() < 1e-6,
        "100 requests at 6000 RPM = 1 s, got {predicted}: {sm}"
    );
    let m = metrics(&url).await;
    assert_eq!(
        gauge(&m, "sizeup_sim_requests_in_flight_max"),
        5,
        "the plan's total_concurrency: {m:?}"
    );
    sim.shutdown().await;

    // --concurrency overrides the plan's.
    let sim = SimHandle::start(sim_cfg(1, 64, 15.0)).await.expect("sim");
    let (out, summary) = (dir.path().join("out2.jsonl"), dir.path().join("summary2.json"));
    let url = sim.url();
    let r = run_async(
        &[
            "--endpoint",
            &url,
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--summary",
            s(&summary),
            "--plan",
            s(&plan),
            "--concurrency",
            "3",
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_each_once_ok(&read_records(&out), &want, "run with --plan and --concurrency");
    assert_eq!(u(&read_json(&summary), "concurrency"), 3);
    let m = metrics(&url).await;
    assert_eq!(gauge(&m, "sizeup_sim_requests_in_flight_max"), 3, "{m:?}");

    // A plan with no concurrency, or not a plan at all: exit 2, nothing sent.
    let bad = dir.path().join("bad-plan.json");
    let out3 = dir.path().join("out3.jsonl");
    for text in [None, Some("{\"gpus\": 2}\n")] {
        match text {
            None => write_plan(&bad, 0, 6000.0),
            Some(t) => std::fs::write(&bad, t).unwrap(),
        }
        let r = run_async(
            &[
                "--endpoint",
                &url,
                "--input",
                s(&input),
                "--output",
                s(&out3),
                "--plan",
                s(&bad),
            ],
            &[],
        )
        .await;
        assert_eq!(r.code, Some(2), "{text:?}: {r:?}");
        assert!(r.stderr.contains("bad-plan.json"), "{r:?}");
        assert!(!out3.exists());
    }
    assert_eq!(requests_seen(&metrics(&url).await), 100, "the bad plans sent nothing");
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 13. Permanent failures: recorded, exit 1, --resume retries them
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_fail_at_once_and_resume_retries_only_failures() {
    // Strict about the model name (`--served-model-name`), so the unknown model answers 404.
    let sim = SimHandle::start(SimConfig {
        strict_model: true,
        ..sim_cfg(1, 8, 2.0)
    })
    .await
    .expect("sim");
    let url = sim.url();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("jobs.jsonl");
    let line = |id: &str, body: Value| {
        json!({"custom_id": id, "method": "POST", "url": "/v1/completions", "body": body}).to_string() + "\n"
    };
    let text = [
        line("a", json!({"prompt": "one two", "max_tokens": 2})),
        line(
            "b",
            json!({"prompt": "one two", "max_tokens": 2, "model": "no-such-model"}),
        ),
        line("c", json!({"prompt": "one two", "max_tokens": 2, "stream": true})),
        line("d", json!({"prompt": "one two", "max_tokens": 2})),
        line(
            "e",
            json!({"prompt": "one two", "max_tokens": 2, "model": "no-such-model"}),
        ),
    ]
    .concat();
    std::fs::write(&input, text).unwrap();
    let out = dir.path().join("out.jsonl");
    let summary = dir.path().join("summary.json");
    let args = [
        "--endpoint",
        &url,
        "--input",
        s(&input),
        "--output",
        s(&out),
        "--summary",
        s(&summary),
        "--concurrency",
        "4",
        FAST_RETRY[0],
        FAST_RETRY[1],
        FAST_RETRY[2],
        FAST_RETRY[3],
    ];
    let r = run_async(&args, &[]).await;
    assert_eq!(r.code, Some(1), "some requests failed for good: {r:?}");
    let recs = read_records(&out);
    assert_eq!(recs.len(), 5, "{recs:?}");
    assert_eq!(id_counts(&recs).len(), 5);
    let by_id: HashMap<String, &Value> = recs.iter().map(|r| (custom_id(r), r)).collect();
    for id in ["a", "c", "d"] {
        assert!(is_success(by_id[id]), "{}", by_id[id]);
    }
    for id in ["b", "e"] {
        let r = by_id[id];
        assert!(!is_success(r) && !r["error"].is_null(), "{r}");
        assert_eq!(r["response"]["status_code"], 404, "{r}");
    }
    // A streamed answer is assembled into the same shape as a plain one.
    let streamed = by_id["c"]["response"]["body"]["choices"][0]["text"]
        .as_str()
        .expect("assembled text");
    let plain = by_id["a"]["response"]["body"]["choices"][0]["text"]
        .as_str()
        .expect("text");
    assert_eq!(streamed.split_whitespace().count(), 2, "{}", by_id["c"]);
    assert_eq!(plain.split_whitespace().count(), 2, "{}", by_id["a"]);
    let errs = read_records(&errors_path(&out));
    let err_ids: BTreeSet<String> = errs.iter().map(custom_id).collect();
    assert_eq!(
        err_ids,
        ["b", "e"].iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
        "{errs:?}"
    );
    let sm = read_json(&summary);
    assert_eq!(
        (u(&sm, "requests_ok"), u(&sm, "requests_failed"), u(&sm, "retries")),
        (3, 2, 0),
        "{sm}"
    );
    let m = metrics(&url).await;
    assert_eq!(outcome(&m, "not_found_404"), 2, "404 is not retried: {m:?}");
    assert_eq!(outcome(&m, "ok"), 3, "{m:?}");

    // --resume sends the failed ids again, and only those.
    let mut resume = args.to_vec();
    resume.push("--resume");
    let r = run_async(&resume, &[]).await;
    assert_eq!(r.code, Some(1), "{r:?}");
    let m = metrics(&url).await;
    assert_eq!((outcome(&m, "not_found_404"), outcome(&m, "ok")), (4, 3), "{m:?}");
    let recs = read_records(&out);
    let counts = id_counts(&recs);
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![1, 2, 1, 1, 2],
        "{counts:?}"
    );
    assert_eq!(read_records(&errors_path(&out)).len(), 4);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_exhaust_retries_then_fail() {
    let sim = SimHandle::start(SimConfig {
        fail_rate: 1.0,
        ..sim_cfg(1, 8, 2.0)
    })
    .await
    .expect("sim");
    let url = sim.url();
    let dir = tempfile::tempdir().unwrap();
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 5, 2);
    let out = dir.path().join("out.jsonl");
    let summary = dir.path().join("summary.json");
    let r = run_async(
        &[
            "--endpoint",
            &url,
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--summary",
            s(&summary),
            "--concurrency",
            "4",
            "--retries",
            "2",
            FAST_RETRY[0],
            FAST_RETRY[1],
            FAST_RETRY[2],
            FAST_RETRY[3],
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, Some(1), "{r:?}");
    let recs = read_records(&out);
    assert_eq!(
        id_counts(&recs).keys().cloned().collect::<Vec<_>>(),
        want,
        "one final line per id"
    );
    assert_eq!(recs.len(), 5);
    for r in &recs {
        assert!(!is_success(r), "{r}");
        assert_eq!(r["response"]["status_code"], 500, "{r}");
    }
    assert_eq!(read_records(&errors_path(&out)).len(), 5);
    let sm = read_json(&summary);
    assert_eq!(
        (u(&sm, "requests_failed"), u(&sm, "retries"), u(&sm, "requests_retried")),
        (5, 10, 5),
        "{sm}"
    );
    let m = metrics(&url).await;
    assert_eq!(outcome(&m, "error_500"), 15, "1 try + 2 retries each: {m:?}");
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 14. An endpoint that refuses every connection
// ---------------------------------------------------------------------------------------------

#[test]
fn endpoint_refusing_every_connection_is_unusable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = write_batch(dir.path(), "jobs.jsonl", 3, 2);
    let out = dir.path().join("out.jsonl");

    // Without --model the probe finds it: exit 3.
    let r = run_sync(
        &[
            "--endpoint",
            &url,
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--concurrency",
            "2",
        ],
        &[],
    );
    assert_eq!(r.code, Some(3), "{r:?}");

    // With --model nothing is probed; nothing can be sent either.
    let out2 = dir.path().join("out2.jsonl");
    let r = run_sync(
        &[
            "--endpoint",
            &url,
            "--model",
            "m",
            "--input",
            s(&input),
            "--output",
            s(&out2),
            "--concurrency",
            "2",
            FAST_RETRY[0],
            FAST_RETRY[1],
            FAST_RETRY[2],
            FAST_RETRY[3],
        ],
        &[],
    );
    assert_eq!(
        r.code,
        Some(3),
        "connection refused on every request is an unusable endpoint: {r:?}"
    );
}
