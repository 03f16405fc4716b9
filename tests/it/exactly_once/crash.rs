//! After kill -9 at any moment (early, midway, late, with retries pending, mid-write), `--resume`
//! completes the job with every line answered once, plain or compressed, and only the requests
//! in flight at each kill sent twice.

use crate::util::run::{
    assert_each_once_ok, collect, custom_id, is_success, metrics, outcome, read_records, run_async, run_cmd, s,
    sim_cfg, u, wait_for_lines, write_batch, FAST_RETRY,
};
use crate::util::{batch_file, fast_sim, read_json, sim_metric, sizeup_command};
use sizeup::sim::SimHandle;
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::time::Duration;

const N: usize = 300;
const CONCURRENCY: usize = 8;

/// The complete lines of an output, plain or compressed (a torn last member left out).
fn output_text(path: &std::path::Path) -> String {
    let Ok(mut output) = sizeup::batch::resume::open_output(path) else {
        return String::new();
    };
    let mut text = String::new();
    let _ = std::io::Read::read_to_string(&mut output.src, &mut text);
    text
}

fn lines(path: &std::path::Path) -> usize {
    output_text(path).lines().count()
}

/// `input.jsonl` compressed as `ext` says (`jsonl.gz`, `jsonl.zst`; `jsonl` as it is).
fn compressed_input(plain: &std::path::Path, ext: &str) -> std::path::PathBuf {
    let path = plain.with_file_name(format!("input.{ext}"));
    if ext == "jsonl" {
        return plain.to_path_buf();
    }
    let c = sizeup::batch::Compression::from_path(&path);
    let mut bytes = Vec::new();
    // Several members, as concatenated files are: the reader must read past the first.
    let text = std::fs::read(plain).unwrap();
    let (a, b) = text.split_at(text.len() / 3);
    sizeup::batch::compress::encode(c, a, &mut bytes).unwrap();
    sizeup::batch::compress::encode(c, b, &mut bytes).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_several_points_then_resume() {
    kill_and_resume("jsonl", "jsonl").await;
}

/// The same with compressed files: a gzip input into a zstd output, and the other way round.
/// A kill can tear the last member; resume cuts it and appends new members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_resume_with_compressed_input_and_output() {
    kill_and_resume("jsonl.gz", "jsonl.zst").await;
    kill_and_resume("jsonl.zst", "jsonl.gz").await;
}

async fn kill_and_resume(input_ext: &str, output_ext: &str) {
    let mut cfg = fast_sim(1, CONCURRENCY, 10.0, 0.3);
    cfg.fail_rate = 0.05;
    cfg.reset_rate = 0.03;
    let sim = SimHandle::start(cfg).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let input = compressed_input(&batch_file(tmp.path(), N, 3), input_ext);
    let output = tmp.path().join(format!("out.{output_ext}"));
    let run = |resume: bool| {
        let mut cmd = tokio::process::Command::from(sizeup_command());
        cmd.args([
            "run",
            "--quiet",
            "--endpoint",
            &sim.url(),
            "--concurrency",
            &CONCURRENCY.to_string(),
        ])
        .args([
            "--retry-base",
            "20ms",
            "--retry-max",
            "100ms",
            "--retries",
            "10",
            "--input",
        ])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .arg("--summary")
        .arg(tmp.path().join("summary.json"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
        if resume {
            cmd.arg("--resume");
        }
        cmd
    };
    let mut kills = 0u64;
    // Kill when the output reaches these line counts (early, midway, late).
    for (i, at) in [1usize, 120, 240].into_iter().enumerate() {
        let mut child = run(i > 0).spawn().unwrap();
        let mut reached = false;
        for _ in 0..1500 {
            if lines(&output) >= at {
                reached = true;
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(reached, "the run ended before line {at}");
        child.start_kill().unwrap();
        let _ = child.wait().await;
        kills += 1;
    }
    let status = run(true).status().await.unwrap();
    assert_eq!(status.code(), Some(0));

    let mut ok: HashMap<String, usize> = HashMap::new();
    for line in output_text(&output).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("whole lines only");
        if v["error"].is_null() && v["response"]["status_code"] == 200 {
            *ok.entry(v["custom_id"].as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    assert_eq!(ok.len(), N, "every request answered");
    assert!(
        ok.values().all(|c| *c == 1),
        "no custom_id answered twice in the output"
    );
    // Each kill can lose at most the requests in flight; those are the only ones sent twice.
    let served = sim_metric(&sim.url(), "sizeup_sim_requests_total{outcome=\"ok\"}").await as u64;
    assert!(
        served >= N as u64 && served <= N as u64 + kills * CONCURRENCY as u64,
        "server answered {served}"
    );
    // Whole compressed members only: the system's own decoder reads the file to its end.
    if output_ext != "jsonl" {
        let (mut src, _) = sizeup::batch::compress::open_read(&output).unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut src, &mut text).expect("the output decodes whole");
        assert_eq!(text, output_text(&output));
        let errors = sizeup::batch::errors_path_for(&output);
        assert!(
            errors.to_string_lossy().ends_with(&format!(".errors.{output_ext}")),
            "{}",
            errors.display()
        );
        if errors.exists() {
            let (mut src, _) = sizeup::batch::compress::open_read(&errors).unwrap();
            std::io::Read::read_to_string(&mut src, &mut String::new()).expect("the errors file decodes whole");
        }
    }
    sim.shutdown().await;
}
