//! A user's own file works on the first try, with no format or API flag: both come from the file
//! (OpenAI batch chat, completions or embeddings, plain JSONL, CSV, text, stdin, CRLF and BOM),
//! the built-in simulator serves whatever model the file names, and a bad file exits 2 naming the
//! file and line before anything is sent.

use crate::util::run::{
    assert_each_once_ok, batch_line, errors_path, ids, metrics, outcome, ran, read_records, requests_seen, run_async,
    run_cmd, run_sync, s, sim_cfg, u,
};
use crate::util::{
    assert_all_answered, batch_file, chat_file, embeddings_file, fast_sim, read_json, sim_metric, sizeup,
};
use sizeup::sim::SimHandle;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

#[test]
fn a_users_chat_batch_file_runs_with_no_other_flag() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("chat.jsonl");
    chat_file(&input, 300, "gpt-4o-mini");
    let o = sizeup()
        .args(["run", "--concurrency", "4", "--decode-step-ms", "1", "--input"])
        .arg(&input)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("using --api chat"),
        "says where the API came from: {stderr}"
    );
    let lines = assert_all_answered(&dir.path().join("chat.output.jsonl"), 300);
    assert_eq!(
        lines[0]["response"]["body"]["model"], "gpt-4o-mini",
        "the simulator serves the file's model"
    );
    assert_eq!(lines[0]["response"]["body"]["object"], "chat.completion");

    let out = dir.path().join("auto");
    let o = sizeup()
        .args([
            "auto",
            "--target-rpm",
            "5000",
            "--yes",
            "--warmup",
            "0s",
            "--max-duration",
            "3s",
        ])
        .args(["--decode-step-ms", "1", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_all_answered(&out.join("output.jsonl"), 300);
}

#[test]
fn an_embeddings_batch_file_runs_and_sweeps() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("embed.jsonl");
    embeddings_file(&input, 200);
    let o = sizeup()
        .args(["run", "--concurrency", "8", "--input"])
        .arg(&input)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("using --api embeddings"), "{stderr}");
    let lines = assert_all_answered(&dir.path().join("embed.output.jsonl"), 200);
    let body = &lines[0]["response"]["body"];
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 16, "{body}");
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    let out = dir.path().join("sweep");
    let o = sizeup()
        .args([
            "sweep",
            "--concurrency",
            "1,4",
            "--warmup",
            "0s",
            "--max-duration",
            "2s",
            "--ci-width",
            "0.5",
        ])
        .args(["--min-requests", "10", "--prefill-ms-per-1k", "500", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["api"], "embeddings", "{summary:#}");
    for level in summary["levels"].as_array().unwrap() {
        assert!(level["rpm"].as_f64().unwrap() > 0.0, "{level}");
        assert!(
            level["input_tokens_per_s"].as_f64().unwrap() > 0.0,
            "input tokens are the figure: {level}"
        );
        assert!(level["ttft_p50_ms"].is_null(), "no TTFT for embeddings: {level}");
    }
    let o = sizeup()
        .args([
            "auto",
            "--target-rpm",
            "3000",
            "--yes",
            "--warmup",
            "0s",
            "--max-duration",
            "2s",
            "--input",
        ])
        .arg(&input)
        .arg("--out")
        .arg(dir.path().join("auto"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_all_answered(&dir.path().join("auto/output.jsonl"), 200);
}

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

#[test]
fn valid_crlf_and_bom_inputs_are_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("ok.jsonl");
    let line = |i: u32| {
        format!("{{\"custom_id\":\"id-{i}\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{{\"prompt\":\"hi\",\"max_tokens\":2}}}}")
    };
    std::fs::write(&input, format!("\u{feff}{}\r\n{}\r\n\r\n", line(1), line(2))).unwrap();
    sizeup()
        .args(["run", "--concurrency", "2", "--decode-step-ms", "1", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(tmp.path().join("out.jsonl"))
        .assert()
        .success();
    let text = std::fs::read_to_string(tmp.path().join("out.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 2);
}

fn bad(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bad").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_file_exits_2_naming_file_and_line_and_sends_nothing() {
    let sim = SimHandle::start(fast_sim(1, 4, 1.0, 0.0)).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("ten_mb_line.jsonl");
    {
        // A 10 MB single line that is not valid JSON at its very end.
        let mut f = std::fs::File::create(&big).unwrap();
        f.write_all(b"{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{\"prompt\":\"")
            .unwrap();
        f.write_all(&vec![b'x'; 10 * 1024 * 1024]).unwrap();
        f.write_all(b"\"}\n").unwrap();
    }
    let cases: Vec<(PathBuf, Vec<&str>)> = vec![
        (bad("truncated.jsonl"), vec![":2:"]),
        (bad("wrong_types.jsonl"), vec![":2:", ":3:"]),
        (bad("missing_fields.jsonl"), vec![":2:", ":3:"]),
        (bad("duplicate_ids.jsonl"), vec![":3:", "duplicate custom_id"]),
        (bad("empty.jsonl"), vec!["empty.jsonl"]),
        (bad("garbage.bin"), vec!["garbage.bin:"]),
        (bad("invalid_utf8.jsonl"), vec![":2:", "UTF-8"]),
        (bad("crlf_bad.jsonl"), vec![":2:"]),
        (bad("bom_bad.jsonl"), vec![":3:"]),
        (bad("no_prompt.csv"), vec!["prompt"]),
        (bad("wrong_url.jsonl"), vec![":2:", "/v1/embeddings"]),
        (bad("mixed-url.jsonl"), vec![":3:", "/v1/completions", "lines 1, 2, 4"]),
        (big.clone(), vec![":1:"]),
    ];
    for (input, wants) in cases {
        let (url, out_dir, input2) = (sim.url(), tmp.path().to_path_buf(), input.clone());
        let out = tokio::task::spawn_blocking(move || {
            sizeup()
                .args(["run", "--concurrency", "2", "--endpoint", &url, "--input"])
                .arg(&input2)
                .arg("--output")
                .arg(out_dir.join("out.jsonl"))
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let name = input.file_name().unwrap().to_string_lossy().to_string();
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(&name), "{name}: the error must name the file: {err}");
        for want in wants {
            assert!(err.contains(want), "{name}: expected `{want}` in: {err}");
        }
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert!(
            !tmp.path().join("out.jsonl").exists(),
            "{name}: no output may be created"
        );
    }
    assert_eq!(
        sim_metric(&sim.url(), "sizeup_sim_requests_total{").await,
        0.0,
        "nothing may be sent for a bad input"
    );
    sim.shutdown().await;
}

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

#[test]
fn a_file_mixing_endpoints_exits_2_naming_the_lines() {
    let input = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bad/mixed-url.jsonl");
    for cmd in [
        vec!["run", "--concurrency", "2"],
        vec!["sweep"],
        vec!["auto", "--target-rpm", "100", "--yes"],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let o = sizeup()
            .args(&cmd)
            .arg("--input")
            .arg(&input)
            .arg(if cmd[0] == "run" { "--output" } else { "--out" })
            .arg(dir.path().join("x"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{cmd:?}: {stderr}");
        assert!(
            stderr.contains("mixed-url.jsonl:3: the input mixes APIs"),
            "{cmd:?}: {stderr}"
        );
        assert!(
            stderr.contains("(lines 1, 2, 4)") && stderr.contains("(lines 3)"),
            "{cmd:?}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_gzip_input_is_named_and_nothing_is_sent() {
    let sim = SimHandle::start(fast_sim(1, 4, 1.0, 0.0)).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let plain = std::fs::read(batch_file(tmp.path(), 2_000, 2)).unwrap();
    let mut gz = Vec::new();
    sizeup::batch::compress::encode(sizeup::batch::Compression::Gzip, &plain, &mut gz).unwrap();
    gz.truncate(gz.len() * 2 / 3);
    let input = tmp.path().join("jobs.jsonl.gz");
    std::fs::write(&input, gz).unwrap();
    let out = sizeup()
        .args(["run", "--endpoint", &sim.url(), "--concurrency", "4", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(tmp.path().join("out.jsonl"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    // The file, the line reached, and what is wrong.
    assert!(stderr.contains(&format!("{}:", input.display())), "{stderr}");
    assert!(stderr.contains(": read error: truncated gzip data"), "{stderr}");
    let sent = sim_metric(&sim.url(), "sizeup_sim_requests_total{outcome=\"ok\"}").await;
    assert_eq!(sent, 0.0, "nothing sent past a corrupt input");
    sim.shutdown().await;
}
