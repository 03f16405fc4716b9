//! Bad inputs: every file in tests/data/bad makes `run` exit 2 naming the file and line, before
//! anything is sent, without a panic. Bad server answers are recorded as decode failures and the
//! run goes on.

use crate::util::{fast_sim, sim_metric, sizeup};
use sizeup::sim::SimHandle;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

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

/// A server that answers every request with the same raw HTTP bytes, then closes.
fn bad_server(response: Vec<u8>) -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        // Bounded: at most 20 connections, then the server ends.
        for stream in listener.incoming().take(20) {
            let Ok(mut stream) = stream else { continue };
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            let mut buf = [0u8; 65536];
            let mut req = Vec::new();
            // Read headers and the (small) body.
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
                if let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&req[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                        .unwrap_or(0);
                    if req.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            let _ = stream.write_all(&response);
            let _ = stream.flush();
        }
    });
    (url, handle)
}

fn http(content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[test]
fn bad_server_answers_are_decode_failures_and_the_run_goes_on() {
    let huge = {
        let mut b = b"{\"choices\":[{\"text\":\"".to_vec();
        b.extend(std::iter::repeat_n(b'x', 70 * 1024 * 1024));
        b.extend_from_slice(b"\"}]}");
        b
    };
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "non-JSON 200 body",
            http("application/json", b"<html>oops</html>"),
            false,
        ),
        (
            "SSE cut mid-event",
            http(
                "text/event-stream",
                b"data: {\"choices\":[{\"text\":\" a\"}]}\n\ndata: {\"choi",
            ),
            true,
        ),
        (
            "wrong content-type",
            http("text/html", b"data: {\"choices\":[]}\n\n"),
            false,
        ),
        ("huge body", http("application/json", &huge), false),
    ];
    for (what, response, stream) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let input = tmp.path().join("in.jsonl");
        let mut text = String::new();
        for i in 1..=3 {
            text.push_str(&format!(
                "{{\"custom_id\":\"id-{i}\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{{\"prompt\":\"hi\",\"stream\":{stream}}}}}\n"
            ));
        }
        std::fs::write(&input, text).unwrap();
        let (url, server) = bad_server(response);
        let out = sizeup()
            .args([
                "run",
                "--concurrency",
                "1",
                "--retries",
                "0",
                "--model",
                "m",
                "--endpoint",
                &url,
                "--input",
            ])
            .arg(&input)
            .arg("--output")
            .arg(tmp.path().join("out.jsonl"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        let lines = std::fs::read_to_string(tmp.path().join("out.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 3, "{what}: every request recorded");
        for line in lines.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["error"]["code"], "decode", "{what}: {line:.300}");
        }
        drop(server); // the thread ends after its bounded accept loop or when the test exits
    }
}
