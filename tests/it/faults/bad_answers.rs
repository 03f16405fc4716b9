//! A server's bad answers (not JSON, a stream cut mid-event, the wrong content type, a huge
//! body) are recorded as decode failures and the run goes on, without a panic.

use crate::util::sizeup;
use std::io::{Read, Write};

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
