//! The server's own evidence: during a sweep and a run sizeup reads the server's metrics (the
//! simulator speaks vLLM's names), so its batch (G x B running, the rest waiting) shows in the
//! server columns and the verdict; a server without metrics is a note, never a failure; the key
//! goes only to the endpoint.

use crate::util::{batch_file, fast_sim, read_json, sizeup};
use sizeup::secret::Secret;
use sizeup::sim::SimHandle;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn csv_rows(path: &std::path::Path) -> Vec<std::collections::HashMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let headers = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            headers
                .iter()
                .map(String::from)
                .zip(rec.iter().map(String::from))
                .collect()
        })
        .collect()
}

fn num(row: &std::collections::HashMap<String, String>, k: &str) -> f64 {
    row[k]
        .parse()
        .unwrap_or_else(|_| panic!("{k} = {:?} is not a number", row[k]))
}

/// The case: 2 GPUs x 8 slots, levels 8, 16, 32: running about 8, 16, 16 and waiting
/// about 0, 0, 16, and the verdict names the server's batch.
#[test]
fn a_sweep_sees_the_servers_batch_fill_and_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let output = sizeup()
        .args(["sweep", "--gpus", "2", "--batch", "8", "--decode-step-ms", "10"])
        .args([
            "--decode-step-ms-per-seq",
            "0",
            "--prefill-ms-per-1k",
            "0",
            "--max-tokens",
            "5",
        ])
        .args(["--concurrency", "8,16,32", "--warmup", "500ms", "--ci-width", "0.1"])
        .args(["--max-duration", "5s", "--scrape-interval", "100ms", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("reading the server's metrics (vllm)"), "{stderr}");
    let rows = csv_rows(&out.join("levels.csv"));
    // 8, 16, 32, and 16 again when the knee's first measurement ended early.
    let levels: Vec<&str> = rows.iter().map(|r| r["concurrency"].as_str()).collect();
    assert!(
        levels == ["8", "16", "32"] || levels == ["8", "16", "32", "16"],
        "{levels:?}\n{stderr}"
    );
    // (running mean range, waiting mean range) per level.
    let expect = [
        ((6.5, 8.0), (0.0, 1.0)),
        ((13.0, 16.0), (0.0, 2.0)),
        ((14.5, 16.0), (12.0, 16.5)),
        ((13.0, 16.0), (0.0, 2.0)),
    ];
    for (row, ((r_lo, r_hi), (w_lo, w_hi))) in rows.iter().zip(expect) {
        let (running, waiting) = (num(row, "server_running_mean"), num(row, "server_waiting_mean"));
        let c = &row["concurrency"];
        assert!(
            (r_lo..=r_hi).contains(&running),
            "level {c}: running {running}\n{stderr}"
        );
        assert!(
            (w_lo..=w_hi).contains(&waiting),
            "level {c}: waiting {waiting}\n{stderr}"
        );
        assert!(num(row, "server_running_max") <= 16.0);
        assert_eq!(num(row, "server_preemptions"), 0.0);
        // The simulator counts every token it decodes: the server's rate is the client's.
        let (server, client) = (num(row, "server_output_tokens_per_s"), num(row, "output_tokens_per_s"));
        assert!(
            (server / client - 1.0).abs() < 0.25,
            "level {c}: server {server} tok/s vs {client}"
        );
    }
    let summary = read_json(&out.join("summary.json"));
    let server = &summary["server"];
    assert_eq!(server["dialect"], "vllm");
    assert!(server["metrics_url"].as_str().unwrap().ends_with("/metrics"));
    assert_eq!(server["running_max_observed"].as_f64(), Some(16.0));
    assert_eq!(server["verdict"]["limit"], "server_batch", "{server:#}");
    assert!(stderr.contains("server (server_batch)"), "{stderr}");
    let page = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(page.contains("Verdict: <b>server_batch</b>"));
    assert!(page.contains("server running (mean/max)"));
}

#[test]
fn no_metrics_is_a_note_and_off_is_silent() {
    let tmp = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let common = [
        "sweep",
        "--concurrency",
        "2",
        "--warmup",
        "100ms",
        "--max-duration",
        "1s",
    ];
    let missing = tmp.path().join("missing");
    let output = sizeup()
        .args(common)
        .args([
            "--server-metrics",
            &format!("http://127.0.0.1:{closed}/metrics"),
            "--out",
        ])
        .arg(&missing)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let notes: Vec<_> = stderr
        .lines()
        .filter(|l| l.contains("server metrics not read"))
        .collect();
    assert_eq!(notes.len(), 1, "one line: {stderr}");
    assert!(read_json(&missing.join("summary.json"))["server"].is_null());

    let off = tmp.path().join("off");
    let output = sizeup()
        .args(common)
        .args(["--server-metrics", "off", "--out"])
        .arg(&off)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("metrics"), "{stderr}");
    let rows = csv_rows(&off.join("levels.csv"));
    assert_eq!(rows[0]["server_running_mean"], "");
    assert!(read_json(&off.join("summary.json"))["server"].is_null());

    let output = sizeup()
        .args(common)
        .args(["--server-metrics", "ftp://x/metrics"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not an http(s) URL"));
}

/// A tiny metrics server on its own port: answers every request with vLLM-shaped text and
/// keeps each request's head.
struct FakeMetrics {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FakeMetrics {
    fn start(text: &'static str) -> FakeMetrics {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (heads.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !s.load(Ordering::SeqCst) && Instant::now() < deadline {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut buf = vec![0u8; 8192];
                let n = conn.read(&mut buf).unwrap_or(0);
                h.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        FakeMetrics { port, heads, stop }
    }
}

impl Drop for FakeMetrics {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

const FAKE_VLLM: &str = "# TYPE vllm:num_requests_running gauge\n\
vllm:num_requests_running{model_name=\"a\"} 3\n\
vllm:num_requests_running{model_name=\"b\"} 2\n\
vllm:num_requests_waiting{model_name=\"a\"} 1\n\
vllm:num_requests_waiting{model_name=\"b\"} 0\n";

/// `--server-metrics` on another port than the endpoint's: the key stays home, and the
/// metrics of two models behind the server are summed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_goes_only_to_the_endpoints_own_host() {
    let mut cfg = fast_sim(1, 4, 1.0, 0.0);
    cfg.api_key = Some(Secret::new("sk-metrics-secret-42"));
    let sim = SimHandle::start(cfg).await.unwrap();
    let fake = FakeMetrics::start(FAKE_VLLM);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let (url, port, out2) = (sim.url(), fake.port, out.clone());
    let output = tokio::task::spawn_blocking(move || {
        sizeup()
            .env("SIZEUP_API_KEY", "sk-metrics-secret-42")
            .args(["sweep", "--endpoint", &url, "--concurrency", "2", "--warmup", "100ms"])
            .args(["--max-duration", "1s", "--scrape-interval", "100ms"])
            .args(["--server-metrics", &format!("http://127.0.0.1:{port}/metrics"), "--out"])
            .arg(&out2)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    sim.shutdown().await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let heads = fake.heads.lock().unwrap().clone();
    assert!(heads.len() >= 2, "scraped {} times\n{stderr}", heads.len());
    for h in &heads {
        assert!(h.starts_with("GET /metrics"), "{h}");
        assert!(!h.to_ascii_lowercase().contains("authorization"), "{h}");
        assert!(!h.contains("sk-metrics-secret-42"));
    }
    let rows = csv_rows(&out.join("levels.csv"));
    assert_eq!(num(&rows[0], "server_running_mean"), 5.0);
    assert_eq!(num(&rows[0], "server_waiting_mean"), 1.0);
    assert_eq!(read_json(&out.join("summary.json"))["server"]["dialect"], "vllm");
}

/// A run records what the server did over the whole job.
#[test]
fn a_run_records_the_servers_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let input = batch_file(tmp.path(), 300, 4);
    let output = sizeup()
        .args(["run", "--input"])
        .arg(&input)
        .args([
            "--concurrency",
            "6",
            "--batch",
            "4",
            "--decode-step-ms",
            "5",
            "--scrape-interval",
            "50ms",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let summary = read_json(&tmp.path().join("run-summary.json"));
    let server = &summary["server"];
    assert_eq!(server["dialect"], "vllm", "{summary:#}");
    // One GPU of 4 slots under 6 in flight: 4 run, about 2 wait.
    assert_eq!(server["running_max"].as_f64(), Some(4.0), "{summary:#}");
    let waiting = server["waiting_mean"].as_f64().unwrap();
    assert!(waiting > 0.5 && waiting <= 2.0, "{summary:#}");
    assert!(stderr.contains("server (vllm):"), "{stderr}");
}

/// A sweep of one level (4 in flight, about 2 s) of `sample` lines of `input`, its
/// levels.csv row.
fn one_level_sweep(
    url: &str,
    input: &std::path::Path,
    sample: usize,
    out: &std::path::Path,
    flag: Option<&str>,
) -> std::collections::HashMap<String, String> {
    let mut c = sizeup();
    c.args(["sweep", "--endpoint", url, "--concurrency", "4", "--sample"])
        .arg(sample.to_string())
        .arg("--input")
        .arg(input)
        .args([
            "--warmup",
            "200ms",
            "--max-duration",
            "2s",
            "--scrape-interval",
            "100ms",
            "--out",
        ])
        .arg(out);
    c.args(flag);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    csv_rows(&out.join("levels.csv")).remove(0)
}

/// Lines of a 64-word system prompt before a 48-word question of their own.
fn shared_prefix_job(path: &std::path::Path, lines: usize) {
    let system: String = (0..64).map(|i| format!("rule{i} ")).collect();
    let text: String = (0..lines)
        .map(|i| {
            serde_json::json!({"custom_id": format!("q{i}"), "method": "POST", "url": "/v1/completions",
                "body": {"prompt": format!("{system}{}", (0..48).map(|w| format!("q{i}w{w} ")).collect::<String>()), "max_tokens": 4}})
            .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(path, text).unwrap();
}

/// The case: the same sweep run twice on the same lines. The second finds the first's
/// questions in the cache, blocks its own lines never sent: it is flagged, the first is not,
/// though a byte share and the server's token share of the shared prompt part by about 14
/// points here (the level-wide test's margin is 15).
/// (More lines than a sweep sends, so neither repeats a line; the sample's seeded order makes
/// the second send the first's lines first.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_run_twice_on_the_same_lines_flags_the_second_as_cache_inflated() {
    let _serial = crate::util::SERIAL.lock().await;
    let mut cfg = fast_sim(1, 8, 2.0, 0.0);
    cfg.params.prefix_cache_tokens = 4_000_000;
    cfg.params.prefill_ms_per_1k = 100.0;
    let sim = SimHandle::start(cfg).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("job.jsonl");
    shared_prefix_job(&input, 20_000);
    let sweep = |name: &'static str| {
        let (url, input, out) = (sim.url(), input.clone(), tmp.path().join(name));
        tokio::task::spawn_blocking(move || one_level_sweep(&url, &input, 20_000, &out, None))
    };
    let first = sweep("first").await.unwrap();
    assert_eq!(num(&first, "repeated_requests"), 0.0, "{first:?}");
    assert_eq!(first["cache_inflated"], "false", "a cold cache: {first:?}");
    let second = sweep("second").await.unwrap();
    assert_eq!(num(&first, "warm_requests"), 0.0, "{first:?}");
    assert_eq!(second["cache_inflated"], "true", "{second:?} after {first:?}");
    // Each line the first sent (its warm-up's too) comes back cached whole; those the second
    // sends in its own warm-up are not counted, so how many of its answers are warm varies.
    assert!(num(&second, "warm_requests") >= 2.0, "{second:?} after {first:?}");
    sim.shutdown().await;
}

/// A prefix cache shows in the evidence: lines sharing a 64-word system prompt, against the
/// simulator caching prefixes, give a level whose server hit rate (vLLM's prefix_cache
/// counters) and cached prompt tokens (the answers' usage) show the sharing; the same sweep run
/// again finds the cache warm and is flagged `cache_inflated` (not after `--reset-prefix-cache`);
/// with `--cache-bust` it shares
/// nothing, so both drop to none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_prefix_shows_in_the_cache_columns_and_cache_bust_removes_it() {
    let _serial = crate::util::SERIAL.lock().await;
    let mut cfg = fast_sim(1, 8, 2.0, 0.0);
    cfg.params.prefix_cache_tokens = 65_536;
    cfg.params.prefill_ms_per_1k = 100.0;
    let sim = SimHandle::start(cfg).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("job.jsonl");
    // More lines than a level sends, so no line comes twice within a sweep.
    shared_prefix_job(&input, 1200);
    let sweep = |name: &'static str, flag: Option<&'static str>| {
        let (url, input, out) = (sim.url(), input.clone(), tmp.path().join(name));
        tokio::task::spawn_blocking(move || one_level_sweep(&url, &input, 1200, &out, flag))
    };
    let shared = sweep("shared", None).await.unwrap();
    // The 64 shared words of each prompt's 112 sit in cached blocks once the first request
    // warmed them (a faster machine that runs out of lines sends some again: more hits, and
    // as many more explained).
    let rate = num(&shared, "server_prefix_cache_hit_rate");
    let repeats = num(&shared, "repeated_requests");
    assert!(
        rate > 0.5 && (rate < 0.7 || repeats > 0.0),
        "hit rate {rate}: {shared:?}"
    );
    let cached = num(&shared, "cached_prompt_tokens_per_s");
    let prompt = num(&shared, "input_tokens_per_s");
    assert!((cached / prompt - rate).abs() < 0.1, "{shared:?}");
    assert_eq!(
        shared["cache_inflated"], "false",
        "its own lines explain it: {shared:?}"
    );
    // An earlier run of the whole job leaves every block in the cache, questions included: the
    // same sweep again is served from blocks it never sent.
    let (url, job, out) = (sim.url(), input.clone(), tmp.path().join("run.jsonl"));
    let run = tokio::task::spawn_blocking(move || {
        sizeup()
            .args(["run", "--endpoint", &url, "--concurrency", "8", "--input"])
            .arg(&job)
            .arg("--output")
            .arg(&out)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let again = sweep("again", None).await.unwrap();
    assert!(num(&again, "server_prefix_cache_hit_rate") > 0.9, "{again:?}");
    assert_eq!(again["cache_inflated"], "true", "a warm cache: {again:?}");
    // Asked to empty the cache first, the same sweep finds it cold again: not inflated.
    let reset = sweep("reset", Some("--reset-prefix-cache")).await.unwrap();
    let warm = num(&again, "server_prefix_cache_hit_rate");
    assert!(num(&reset, "server_prefix_cache_hit_rate") < warm - 0.1, "{reset:?}");
    assert_eq!(reset["cache_inflated"], "false", "{reset:?}");
    let busted = sweep("busted", Some("--cache-bust")).await.unwrap();
    assert_eq!(num(&busted, "server_prefix_cache_hit_rate"), 0.0, "{busted:?}");
    assert_eq!(num(&busted, "cached_prompt_tokens_per_s"), 0.0, "{busted:?}");
    assert_eq!(busted["cache_inflated"], "false");
    // Uncached prefills cost time: the busted level serves fewer requests a minute.
    assert!(num(&busted, "rpm") < num(&shared, "rpm"), "{busted:?} vs {shared:?}");
    sim.shutdown().await;
}
