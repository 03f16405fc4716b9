//! The API key never appears in any output: stdout, stderr, reports, run output, summaries;
//! not even when the server echoes it back (then `***` is written in its place).

use crate::util::{batch_file, fast_sim, sizeup};
use sizeup::secret::Secret;
use sizeup::sim::SimHandle;

const KEY: &str = "sk-sizeup-test-7f3a9c1e5b";

fn assert_clean(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    assert!(!text.contains(KEY), "the API key leaked into {what}");
    assert!(!text.contains("7f3a9c1e5b"), "part of the API key leaked into {what}");
}

fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_never_leaks_from_a_full_auto_run_or_a_refused_one() {
    let mut cfg = fast_sim(1, 4, 2.0, 0.0);
    cfg.api_key = Some(Secret::new(KEY));
    cfg.fail_rate = 0.05;
    let sim = SimHandle::start(cfg).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let input = batch_file(tmp.path(), 120, 2);
    let out_dir = tmp.path().join("job");
    let (url, input2, out2) = (sim.url(), input.clone(), out_dir.clone());
    let out = tokio::task::spawn_blocking(move || {
        sizeup()
            .env("SIZEUP_API_KEY", KEY)
            .args([
                "auto",
                "--yes",
                "--endpoint",
                &url,
                "--target-rpm",
                "1000",
                "--concurrency",
                "1,2,4",
                // The plan sizes on the mean: 120 lines with 5% failures can leave a level's CI
                // low bound at 0 on a busy machine, and `auto` then stops before the run this
                // test searches for the key (2 of 15 runs under load did).
                "--estimate",
                "mean",
            ])
            .args([
                "--warmup",
                "200ms",
                "--max-duration",
                "2s",
                "--min-requests",
                "20",
                "--input",
            ])
            .arg(&input2)
            .arg("--out")
            .arg(&out2)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_clean("stdout", &out.stdout);
    assert_clean("stderr", &out.stderr);
    let mut files = Vec::new();
    walk(&out_dir, &mut files);
    assert!(files.len() >= 7, "{files:?}");
    for f in files {
        assert_clean(&f.display().to_string(), &std::fs::read(&f).unwrap());
    }

    // A wrong key: refused, exit 3, and neither key is printed.
    let (url, input2, out2) = (sim.url(), input.clone(), tmp.path().join("refused.jsonl"));
    let out = tokio::task::spawn_blocking(move || {
        sizeup()
            .env("OPENAI_API_KEY", "sk-wrong-9d8e7f")
            .args([
                "run",
                "--endpoint",
                &url,
                "--concurrency",
                "2",
                "--model",
                "sizeup-sim",
                "--input",
            ])
            .arg(&input2)
            .arg("--output")
            .arg(&out2)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("OPENAI_API_KEY"), "{err}");
    assert!(!err.contains("sk-wrong-9d8e7f"), "{err}");
    sim.shutdown().await;
}

#[test]
fn debug_output_of_settings_is_redacted() {
    let cfg = sizeup::client::ClientConfig {
        endpoint: "https://api.example.com".into(),
        api: sizeup::api::Api::Chat,
        access: sizeup::client::Access::with_key(Some(Secret::new(KEY))),
        connect_timeout: std::time::Duration::from_secs(1),
        pool_idle_timeout: std::time::Duration::from_secs(50),
        timeout: std::time::Duration::from_secs(1),
        first_byte_timeout: None,
        pool: 1,
    };
    let text = format!("{cfg:?} {cfg:#?}");
    assert!(!text.contains(KEY), "{text}");
    assert!(text.contains("***"));
}

/// A key pasted with its newline is refused at start (exit 2, naming the variable, never the
/// key) instead of failing every request with a builder error.
#[test]
fn a_key_with_a_line_break_is_refused_before_sending() {
    let out = sizeup()
        .env("SIZEUP_API_KEY", format!("{KEY}\n"))
        .args([
            "sweep",
            "--endpoint",
            "http://127.0.0.1:9",
            "--concurrency",
            "1",
            "--max-duration",
            "2s",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("SIZEUP_API_KEY holds a line break"), "{stderr}");
    assert_clean("stderr", &out.stderr);
    assert_clean("stdout", &out.stdout);
}

/// The key of the echo tests: a `/`, which the echo's 400 writes as `\/` (as PHP's json_encode
/// does), so the JSON-escaped form is checked too; the tail is searched for as well.
const ECHO_KEY: &str = "sk-sizeup/echo-4e8d2b91";
const ECHO_TAIL: &str = "4e8d2b91";

/// What the echo server answers a request with, from its body (`echo-400` in a prompt, or
/// `"stream":true`) or its count (every other one, when `alternate`).
#[derive(Clone, Copy)]
enum Echo {
    BadRequest,
    Completion,
    Stream,
}

/// A loopback server that copies the request's `Authorization` header into its answer, as a
/// misbehaving server or a debugging endpoint does: in a 400's error message, in a 200
/// completion's text, or split across two content events of a stream (so the key is whole
/// only in the assembled text). `GET /v1/models` names a model after the header too; other
/// GETs (`/metrics`) are 404s. One request per connection; its threads end with the test.
fn echo_server(alternate: bool) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(mut sock) = sock else { continue };
            let count = count.clone();
            std::thread::spawn(move || {
                sock.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
                let (mut seen, mut buf) = (Vec::new(), [0u8; 4096]);
                let head_end = loop {
                    if let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match sock.read(&mut buf) {
                        Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                };
                let head = String::from_utf8_lossy(&seen[..head_end]).into_owned();
                let header = |name: &str| {
                    head.lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                        })
                        .unwrap_or_default()
                };
                let length: usize = header("content-length").parse().unwrap_or(0);
                while seen.len() < head_end + length {
                    match sock.read(&mut buf) {
                        Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let body = String::from_utf8_lossy(&seen[head_end..]).into_owned();
                let auth = format!("Authorization: {}", header("authorization"));
                let (status, kind, answer) = if head.starts_with("GET /v1/models") {
                    let list = serde_json::json!({"object": "list", "data": [{"id": format!("echo {auth}")}]});
                    ("200 OK", "application/json", list.to_string())
                } else if head.starts_with("GET") {
                    ("404 Not Found", "text/plain", String::new())
                } else {
                    let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let echo = if body.contains("echo-400") || (alternate && n % 2 == 1) {
                        Echo::BadRequest
                    } else if body.contains("\"stream\":true") {
                        Echo::Stream
                    } else {
                        Echo::Completion
                    };
                    echo_answer(echo, &auth)
                };
                let _ = write!(
                    sock,
                    "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            });
        }
    });
    url
}

/// The status line, content type and body of an echo answer; `auth` is the header's line.
fn echo_answer(echo: Echo, auth: &str) -> (&'static str, &'static str, String) {
    let usage = serde_json::json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7});
    match echo {
        Echo::BadRequest => {
            let error = serde_json::json!({"error": {"message": format!("bad header {auth}"), "type": "invalid_request_error", "code": 400}});
            (
                "400 Bad Request",
                "application/json",
                error.to_string().replace('/', "\\/"),
            )
        }
        Echo::Completion => {
            let answer = serde_json::json!({"id": "cmpl-echo", "object": "text_completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "text": format!("you sent {auth}"), "finish_reason": "stop"}], "usage": usage});
            ("200 OK", "application/json", answer.to_string())
        }
        Echo::Stream => {
            let (first, second) = auth.split_at(auth.len() - 6);
            let event = |text: String, finish: Option<&str>| {
                let mut chunk = serde_json::json!({"id": "cmpl-echo", "object": "text_completion",
                    "choices": [{"index": 0, "text": text, "finish_reason": finish}]});
                if finish.is_some() {
                    chunk["usage"] = usage.clone();
                }
                format!("data: {chunk}\n\n")
            };
            let stream =
                event(format!("you sent {first}"), None) + &event(second.into(), Some("stop")) + "data: [DONE]\n\n";
            ("200 OK", "text/event-stream", stream)
        }
    }
}

/// Asserts that the echo key (or its tail) is in neither stdout, stderr nor any file under
/// `dir`; gives all their text joined, for what must be there instead.
fn assert_echo_clean(what: &str, ran: &crate::util::run::Ran, dir: &std::path::Path) -> String {
    let mut all = format!("{}\n{}", ran.stdout, ran.stderr);
    assert!(
        !all.contains(ECHO_TAIL),
        "{what}: the API key leaked into stdout or stderr: {ran:?}"
    );
    let mut files = Vec::new();
    walk(dir, &mut files);
    for f in &files {
        let text = String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned();
        assert!(
            !text.contains(ECHO_TAIL),
            "{what}: the API key leaked into {}: {text}",
            f.display()
        );
        all.push_str(&text);
    }
    all
}

/// A server that echoes the key back gets `***` written in its place, in every record, the
/// errors file, run-summary.json and stderr's stop line: in a 400's error body (written with
/// `\/`), in a 200 completion's text, and in a stream that splits the key across two events.
#[test]
fn a_server_echoing_the_key_gets_stars_written_instead() {
    use crate::util::run::{errors_path, read_records, run_sync, s};
    let url = echo_server(false);
    let tmp = tempfile::tempdir().unwrap();
    let line = |id: &str, prompt: &str, stream: bool| {
        format!(
            "{{\"custom_id\":\"{id}\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{{\"model\":\"m\",\"prompt\":\"{prompt}\",\"max_tokens\":4,\"stream\":{stream}}}}}\n"
        )
    };
    let input = tmp.path().join("in.jsonl");
    let lines = [
        line("ok", "hi", false),
        line("bad", "echo-400", false),
        line("streamed", "hi", true),
    ];
    std::fs::write(&input, lines.concat()).unwrap();
    let out = tmp.path().join("out.jsonl");
    let args = [
        "--endpoint",
        &url,
        "--input",
        s(&input),
        "--output",
        s(&out),
        "--concurrency",
        "1",
    ];
    let ran = run_sync(
        &[&args[..], &["--server-metrics", "off"]].concat(),
        &[("SIZEUP_API_KEY", ECHO_KEY)],
    );
    assert_eq!(ran.code, Some(1), "one line failed: {ran:?}");
    assert_echo_clean("run", &ran, tmp.path());
    let recs = read_records(&out);
    let by_id = |id: &str| {
        recs.iter()
            .find(|r| r["custom_id"] == id)
            .unwrap_or_else(|| panic!("{id}: {recs:?}"))
    };
    let stars = "Authorization: Bearer ***";
    assert_eq!(
        by_id("ok")["response"]["body"]["choices"][0]["text"],
        format!("you sent {stars}")
    );
    assert_eq!(
        by_id("streamed")["response"]["body"]["choices"][0]["text"],
        format!("you sent {stars}")
    );
    let bad = by_id("bad");
    assert!(bad["error"]["message"].as_str().unwrap().contains(stars), "{bad}");
    assert_eq!(
        bad["response"]["body"]["error"]["message"],
        format!("bad header {stars}"),
        "{bad}"
    );
    assert_eq!(read_records(&errors_path(&out)).len(), 1);

    // Every line refused the same way: the stop line on stderr carries the message, scrubbed.
    let input = tmp.path().join("all-bad.jsonl");
    std::fs::write(
        &input,
        (0..4)
            .map(|i| line(&format!("b{i}"), "echo-400", false))
            .collect::<String>(),
    )
    .unwrap();
    let out = tmp.path().join("all-bad.out.jsonl");
    let args = [
        "--endpoint",
        &url,
        "--input",
        s(&input),
        "--output",
        s(&out),
        "--concurrency",
        "1",
    ];
    let more = ["--server-metrics", "off", "--stop-after-failures", "2"];
    let ran = run_sync(&[&args[..], &more].concat(), &[("OPENAI_API_KEY", ECHO_KEY)]);
    assert_eq!(ran.code, Some(3), "{ran:?}");
    assert!(
        ran.stderr.contains("all failed the same way") && ran.stderr.contains(stars),
        "{ran:?}"
    );
    assert_echo_clean("run stopped", &ran, tmp.path());
}

/// A sweep against the echo (every other answer a 400), its model named by `/v1/models`
/// after the header: summary, CSVs, the HTML report and stdout carry `***`, never the key.
#[test]
fn a_sweep_against_a_server_echoing_the_key_writes_stars_instead() {
    let url = echo_server(true);
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("sweep");
    let out = sizeup()
        .env("SIZEUP_API_KEY", ECHO_KEY)
        .args([
            "sweep",
            "--endpoint",
            &url,
            "--api",
            "completions",
            "--concurrency",
            "1",
            "--warmup",
            "100ms",
        ])
        .args([
            "--max-duration",
            "1s",
            "--min-requests",
            "6",
            "--stop-after-failures",
            "0",
            "--out",
        ])
        .arg(&out_dir)
        .output()
        .unwrap();
    let ran = crate::util::run::ran(out);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert_echo_clean("sweep", &ran, tmp.path());
    let read = |name: &str| std::fs::read_to_string(out_dir.join(name)).unwrap();
    let stars = "Authorization: Bearer ***";
    assert_eq!(
        crate::util::read_json(&out_dir.join("summary.json"))["model"],
        format!("echo {stars}")
    );
    assert!(read("requests.csv").contains(&format!("bad header {stars}")));
    assert!(read("report.html").contains(stars));
}
