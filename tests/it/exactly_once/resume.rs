//! `--resume` sends exactly the lines not answered yet and appends their records: after a torn
//! last line, with skipped invalid lines, and after Ctrl-C, which drains the requests in flight,
//! exits 130 and counts each unfinished request once.

use crate::util::run::Ran;
use crate::util::run::{
    assert_each_once_ok, collect, gauge, id_counts, is_success, metrics, outcome, read_records, run_async, run_cmd,
    run_sync, s, settled_metrics, sim_cfg, u, wait_for_lines, write_batch, FAST_RETRY,
};
use crate::util::{fast_sim, read_json, sim_metric, sizeup};
use sizeup::sim::{SimConfig, SimHandle};
use std::path::Path;
use std::time::Duration;

/// `sizeup run ARGS` until `out` holds `lines` lines, then `kill SIGNAL` (`-INT`, `-TERM`);
/// how it ended.
async fn run_then_signal(args: &[&str], out: &Path, lines: usize, signal: &str) -> Ran {
    let mut c = tokio::process::Command::from(run_cmd(args, &[]));
    c.kill_on_drop(true);
    let mut child = c.spawn().expect("spawn sizeup");
    assert!(
        wait_for_lines(&mut child, out, lines).await,
        "the run ended before it could be stopped"
    );
    let pid = child.id().expect("pid").to_string();
    let st = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .expect("kill");
    assert!(st.success(), "kill {signal}");
    collect(child).await
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

/// Resume joins the output with the input's lines by their index as the feed reads them: with
/// a bad line and a duplicate id skipped (`--skip-invalid`), the indices must still agree, so
/// exactly the lines not in the output are sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_skipped_lines_sends_exactly_the_unanswered_ones() {
    let sim = SimHandle::start(fast_sim(1, 2, 1.0, 0.0)).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let line = |id: &str| {
        format!("{{\"custom_id\":\"{id}\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{{\"prompt\":\"hi {id}\",\"max_tokens\":2}}}}\n")
    };
    let mut text = String::new();
    for id in ["id-1", "id-2"] {
        text += &line(id);
    }
    text += "{\"custom_id\":\"id-3\",\"method\":\"POST\"\n"; // broken
    for id in ["id-4", "id-2", "id-6", "id-7", "id-8"] {
        text += &line(id); // line 5 repeats id-2
    }
    let input = tmp.path().join("jobs.jsonl");
    std::fs::write(&input, text).unwrap();
    let out = tmp.path().join("out.jsonl");
    let run = |resume: bool| {
        let mut c = sizeup();
        c.args([
            "run",
            "--quiet",
            "--endpoint",
            &sim.url(),
            "--concurrency",
            "2",
            "--skip-invalid",
            "--input",
        ])
        .arg(&input)
        .arg("--output")
        .arg(&out);
        if resume {
            c.arg("--resume");
        }
        c.output().unwrap()
    };
    let first = run(false);
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let all = std::fs::read_to_string(&out).unwrap();
    assert_eq!(all.lines().count(), 6);
    // Keep three answers, as a kill would.
    let kept: Vec<&str> = all.lines().take(3).collect();
    std::fs::write(&out, kept.join("\n") + "\n").unwrap();
    let again = run(true);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let mut ids: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["custom_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["id-1", "id-2", "id-4", "id-6", "id-7", "id-8"]);
    let sent = sim_metric(&sim.url(), "sizeup_sim_requests_total{outcome=\"ok\"}").await;
    assert_eq!(sent, 9.0, "6, then the 3 not kept");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_exits_130_and_resume_completes() {
    signal_drains_and_resume_completes("-INT", 130).await;
}

/// `scancel`, a Kubernetes eviction and `docker stop` send SIGTERM: the same drain, exit 143.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_exits_143_and_resume_completes() {
    signal_drains_and_resume_completes("-TERM", 143).await;
}

async fn signal_drains_and_resume_completes(signal: &str, code: i32) {
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
    let r = run_then_signal(&args, &out, 50, signal).await;
    assert_eq!(r.code, Some(code), "{signal}: {r:?}");
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
    assert_each_once_ok(&all, &want, &format!("output after kill {signal} and --resume"));
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
    let r = run_then_signal(&first_args, &out, 50, "-INT").await;
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

/// A drain is bounded: with `--drain-timeout 0s` a SIGTERM abandons the requests in flight at
/// once (exit 143, nothing of theirs written), and `--resume` sends them, each line once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_past_drain_timeout_abandons_and_resume_sends_the_rest() {
    // Long answers (50 tokens at 20 ms, a second each): a drain without the bound waits.
    let sim = SimHandle::start(sim_cfg(1, 8, 20.0)).await.expect("sim");
    let url = sim.url();
    let dir = tempfile::tempdir().unwrap();
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 40, 50);
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
        "--drain-timeout",
        "0s",
        FAST_RETRY[0],
        FAST_RETRY[1],
        FAST_RETRY[2],
        FAST_RETRY[3],
    ];
    let r = run_then_signal(&args, &out, 8, "-TERM").await;
    assert_eq!(r.code, Some(143), "{r:?}");
    let first = read_records(&out);
    assert!(first.len() < 40, "{} lines", first.len());
    let sm = read_json(&summary);
    assert_eq!(sm["interrupted"], true, "{sm}");
    assert_eq!(u(&sm, "requests_ok") + u(&sm, "not_finished"), 40, "{sm}");
    let m = settled_metrics(&url).await;
    assert!(
        gauge(&m, "sizeup_sim_cancelled_total") > 0,
        "the requests in flight were waited for, past --drain-timeout 0s: {m:?}"
    );
    let mut resume = args.to_vec();
    resume.push("--resume");
    let r = run_async(&resume, &[]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_each_once_ok(
        &read_records(&out),
        &want,
        "output after an abandoned drain and --resume",
    );
    sim.shutdown().await;
}

/// OpenAI Batch's completion window: at the deadline nothing new is sent, the requests in
/// flight finish, and every line not answered is listed once as `batch_expired`, finished work
/// kept; `--resume` sends exactly the expired lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_window_ends_on_time_lists_the_rest_as_expired_and_resume_sends_them() {
    // 1 GPU x 4 slots, 5 tokens of 20 ms: about 40 answers a second at most, so 300 lines need
    // 7.5 s and a 1 s window closes on most of them whatever the machine's speed.
    let sim = SimHandle::start(sim_cfg(1, 4, 20.0)).await.unwrap();
    let url = sim.url();
    let dir = tempfile::tempdir().unwrap();
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 300, 5);
    let out = dir.path().join("out.jsonl");
    let summary = dir.path().join("summary.json");
    let errors = dir.path().join("out.jsonl.errors.jsonl");
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
        "--completion-window",
        "1s",
    ];
    let started = std::time::Instant::now();
    let r = run_async(&args, &[]).await;
    let took = started.elapsed();
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        took < Duration::from_secs(5),
        "the window closed at 1 s but the run took {took:?}"
    );
    assert!(r.stderr.contains("batch_expired"), "{r:?}");
    let answered = read_records(&out);
    assert!(answered.iter().all(is_success), "only answers in the output");
    let expired = read_records(&errors);
    for e in &expired {
        assert_eq!(e["error"]["code"], "batch_expired", "{e}");
        assert!(e["response"].is_null(), "{e}");
    }
    // Every line once: answered or expired, never both, none missing.
    let mut all = answered.clone();
    all.extend(expired.iter().cloned());
    let counts = id_counts(&all);
    assert!(
        counts.values().all(|&n| n == 1),
        "a line both answered and expired, or twice"
    );
    assert_eq!(
        counts.keys().cloned().collect::<Vec<_>>().len(),
        want.len(),
        "every line listed"
    );
    assert!(want.iter().all(|id| counts.contains_key(id)));
    assert!(
        !expired.is_empty() && !answered.is_empty(),
        "{} answered",
        answered.len()
    );
    let sm = read_json(&summary);
    assert_eq!(sm["expired"], expired.len() as u64, "{sm}");
    assert_eq!(sm["not_finished"], 0, "{sm}");
    assert_eq!(
        sm["request_counts"],
        serde_json::json!({"total": 300, "completed": answered.len(), "failed": expired.len()}),
        "{sm}"
    );
    assert_eq!(sm["completion_window_s"], 1.0, "{sm}");
    let sent = outcome(&settled_metrics(&url).await, "ok");
    assert_eq!(
        sent,
        answered.len() as u64,
        "the server answered only the lines in the output"
    );

    // --resume sends exactly the expired ones.
    let mut again = args.to_vec();
    again.truncate(args.len() - 2);
    again.push("--resume");
    let r = run_async(&again, &[]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_each_once_ok(&read_records(&out), &want, "after --resume");
    assert_eq!(
        outcome(&settled_metrics(&url).await, "ok"),
        300,
        "each line sent once in all"
    );
    sim.shutdown().await;
}
