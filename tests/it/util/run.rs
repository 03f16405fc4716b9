//! `sizeup run` as a child process, and what it leaves behind: the output and errors files
//! (one whole JSON record a line), run-summary.json, and the simulator's /metrics.

use super::{fast_sim, sizeup_command};
use serde_json::{json, Value};
use sizeup::sim::SimConfig;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::time::Instant;

/// Fast retries for 5xx and resets (429s still wait for their Retry-After).
pub const FAST_RETRY: [&str; 4] = ["--retry-base", "10ms", "--retry-max", "50ms"];

/// Longest any single child may run before the test gives up on it (a hang, not a timing check).
const CHILD_LIMIT: Duration = Duration::from_secs(90);

/// `sizeup run <args>` with a scrubbed environment, plus `extra_env`.
pub fn run_cmd(args: &[&str], extra_env: &[(&str, &str)]) -> std::process::Command {
    let mut c = sizeup_command();
    c.arg("run").args(args);
    for (k, v) in extra_env {
        c.env(k, v);
    }
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
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

pub fn ran(o: std::process::Output) -> Ran {
    Ran {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Runs to completion from a plain (non-async) test.
pub fn run_sync(args: &[&str], extra_env: &[(&str, &str)]) -> Ran {
    run_cmd(args, extra_env).output().map(ran).expect("spawn sizeup")
}

/// Runs to completion from an async test without blocking a runtime worker (the simulator
/// lives on the same runtime), bounded by [`CHILD_LIMIT`].
pub async fn run_async(args: &[&str], extra_env: &[(&str, &str)]) -> Ran {
    let mut c = tokio::process::Command::from(run_cmd(args, extra_env));
    c.kill_on_drop(true);
    match tokio::time::timeout(CHILD_LIMIT, c.output()).await {
        Ok(o) => ran(o.expect("spawn sizeup")),
        Err(_) => panic!("sizeup run {args:?} did not finish within {CHILD_LIMIT:?}"),
    }
}

/// `sizeup run` of `input` against `url`, writing `dir`/out.jsonl and `dir`/summary.json,
/// with `extra` flags: the output's records and the summary after it.
pub async fn run_into(url: &str, input: &Path, dir: &Path, extra: &[&str]) -> (Ran, Vec<Value>, Value) {
    let (out, summary) = (dir.join("out.jsonl"), dir.join("summary.json"));
    let mut args = vec![
        "--endpoint",
        url,
        "--input",
        s(input),
        "--output",
        s(&out),
        "--summary",
        s(&summary),
    ];
    args.extend_from_slice(extra);
    let r = run_async(&args, &[]).await;
    let records = if out.exists() { read_records(&out) } else { Vec::new() };
    let sm = if summary.exists() {
        super::read_json(&summary)
    } else {
        Value::Null
    };
    (r, records, sm)
}

/// A simulator with `gpus` x `batch` slots, no prefill cost and a flat decode step.
pub fn sim_cfg(gpus: usize, batch: usize, step_ms: f64) -> SimConfig {
    SimConfig {
        default_max_tokens: 2,
        ..fast_sim(gpus, batch, step_ms, 0.0)
    }
}

/// The simulator's Prometheus metrics as `series -> value`.
pub async fn metrics(url: &str) -> HashMap<String, f64> {
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
pub async fn settled_metrics(url: &str) -> HashMap<String, f64> {
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

pub fn outcome(m: &HashMap<String, f64>, name: &str) -> u64 {
    let key = format!("sizeup_sim_requests_total{{outcome=\"{name}\"}}");
    *m.get(&key).unwrap_or_else(|| panic!("no {key} in metrics: {m:?}")) as u64
}

/// Inference requests the simulator saw, whatever their outcome.
pub fn requests_seen(m: &HashMap<String, f64>) -> u64 {
    m.iter()
        .filter(|(k, _)| k.starts_with("sizeup_sim_requests_total{"))
        .map(|(_, v)| *v as u64)
        .sum()
}

pub fn gauge(m: &HashMap<String, f64>, name: &str) -> u64 {
    *m.get(name).unwrap_or_else(|| panic!("no {name} in metrics: {m:?}")) as u64
}

pub fn batch_line(id: &str, max_tokens: u32) -> String {
    json!({
        "custom_id": id,
        "method": "POST",
        "url": "/v1/completions",
        "body": {"prompt": "hello world", "max_tokens": max_tokens},
    })
    .to_string()
}

pub fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// An OpenAI batch JSONL file with ids `id-0 .. id-(n-1)`.
pub fn write_batch(dir: &Path, name: &str, n: usize, max_tokens: u32) -> (PathBuf, Vec<String>) {
    let path = dir.join(name);
    let ids = ids("id", n);
    let text: String = ids.iter().map(|id| batch_line(id, max_tokens) + "\n").collect();
    std::fs::write(&path, text).expect("write input");
    (path, ids)
}

/// Every line of an output (or errors) file, each of which must be one whole JSON object.
pub fn read_records(path: &Path) -> Vec<Value> {
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

pub fn line_count(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

pub fn custom_id(rec: &Value) -> String {
    rec["custom_id"]
        .as_str()
        .unwrap_or_else(|| panic!("record without a string custom_id: {rec}"))
        .to_string()
}

pub fn is_success(rec: &Value) -> bool {
    rec["error"].is_null()
        && rec["response"]["status_code"]
            .as_u64()
            .is_some_and(|s| (200..300).contains(&s))
}

/// How many lines each custom_id has.
pub fn id_counts(recs: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in recs {
        *m.entry(custom_id(r)).or_insert(0) += 1;
    }
    m
}

/// Asserts that `recs` hold exactly one line per id of `want`, each a success.
pub fn assert_each_once_ok(recs: &[Value], want: &[String], what: &str) {
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

pub fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not an unsigned integer in {v}"))
}

pub fn errors_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".errors.jsonl");
    PathBuf::from(s)
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Waits (bounded) until `path` has at least `lines` lines; false if the child ended first.
pub async fn wait_for_lines(child: &mut tokio::process::Child, path: &Path, lines: usize) -> bool {
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

pub async fn collect(child: tokio::process::Child) -> Ran {
    match tokio::time::timeout(CHILD_LIMIT, child.wait_with_output()).await {
        Ok(o) => ran(o.expect("wait for sizeup")),
        Err(_) => panic!("sizeup did not exit within {CHILD_LIMIT:?}"),
    }
}
