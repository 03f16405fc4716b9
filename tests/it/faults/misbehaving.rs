//! The plain-http client against servers that misbehave as real ones do, each compared with
//! what reqwest/hyper record for the same server: an early 413 to a large body (then a close,
//! or no more reading) is one `http_413`, never re-sent; a body that breaks its framing after
//! a 200 is one `decode` failure, never re-sent; chunk sizes with many leading zeros are read;
//! and the pre-flight check goes through the proxy the environment names, as the requests do.

use crate::util::run::{read_records, run_sync, s, FAST_RETRY};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A loopback server: for each connection, reads one request head (not its body) and hands
/// the socket to `answer`. Counts the request heads it saw. Its threads end with the test.
fn raw_server(answer: fn(&mut TcpStream)) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let heads = Arc::new(AtomicUsize::new(0));
    let counted = heads.clone();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(mut sock) = sock else { continue };
            let counted = counted.clone();
            std::thread::spawn(move || {
                sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let (mut seen, mut buf) = (Vec::new(), [0u8; 4096]);
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf) {
                        Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                answer(&mut sock);
            });
        }
    });
    (url, heads)
}

/// Reads (and throws away) the rest of a small request body, so a close sends no reset.
fn drain(sock: &mut TcpStream) {
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut buf = [0u8; 4096];
    while matches!(sock.read(&mut buf), Ok(n) if n > 0) {}
}

const TOO_LARGE: &[u8] = b"HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\ncontent-length: 41\r\n\r\n{\"error\":{\"message\":\"body is too large\"}}";

/// One input line whose prompt is `prompt_bytes` long.
fn input(dir: &std::path::Path, prompt_bytes: usize) -> std::path::PathBuf {
    let path = dir.join("in.jsonl");
    let line = format!(
        "{{\"custom_id\":\"big\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{{\"prompt\":\"{}\",\"max_tokens\":1}}}}\n",
        "x".repeat(prompt_bytes)
    );
    std::fs::write(&path, line).unwrap();
    path
}

/// `sizeup run` of `input` against `url` with `--retries 5`; the records written.
fn run(url: &str, input: &std::path::Path, env: &[(&str, &str)]) -> (Option<i32>, Vec<serde_json::Value>, String) {
    let out = input.with_file_name("out.jsonl");
    // Each call is a fresh run, not a resume of the last one.
    let _ = std::fs::remove_file(&out);
    let r = run_sync(
        &[
            "--endpoint",
            url,
            "--model",
            "m",
            "--input",
            s(input),
            "--output",
            s(&out),
            "--concurrency",
            "1",
            "--retries",
            "5",
            "--timeout",
            "60s",
            "--server-metrics",
            "off",
            "--pool-idle-timeout",
            "200ms",
            FAST_RETRY[0],
            FAST_RETRY[1],
            FAST_RETRY[2],
            FAST_RETRY[3],
        ],
        env,
    );
    let recs = if out.exists() { read_records(&out) } else { Vec::new() };
    (r.code, recs, format!("{r:?}"))
}

#[test]
fn an_early_413_to_an_8_mb_body_is_one_http_413_never_resent() {
    let close: fn(&mut TcpStream) = |sock| {
        let _ = sock.write_all(TOO_LARGE);
        // Closed with most of the body unread: the client's writes meet a reset.
    };
    let stop_reading: fn(&mut TcpStream) = |sock| {
        let _ = sock.write_all(TOO_LARGE);
        // Open, unread: the client's writes would block until --timeout.
        std::thread::sleep(Duration::from_secs(60));
    };
    for (what, answer) in [("then closes", close), ("then stops reading", stop_reading)] {
        let dir = tempfile::tempdir().unwrap();
        let (url, heads) = raw_server(answer);
        let (code, recs, log) = run(&url, &input(dir.path(), 8 << 20), &[]);
        assert_eq!(code, Some(1), "{what}: {log}");
        assert_eq!(recs.len(), 1, "{what}: {log}");
        assert_eq!(recs[0]["error"]["code"], "http_413", "{what}: {}", recs[0]);
        assert_eq!(heads.load(Ordering::SeqCst), 1, "{what}: sent once, not retried: {log}");
    }
}

#[test]
fn a_broken_chunked_body_after_a_200_is_one_decode_failure_never_resent() {
    let (url, heads) = raw_server(|sock| {
        drain(sock);
        let _ = sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n");
    });
    let dir = tempfile::tempdir().unwrap();
    let (code, recs, log) = run(&url, &input(dir.path(), 10), &[]);
    assert_eq!(code, Some(1), "{log}");
    assert_eq!(recs.len(), 1, "{log}");
    assert_eq!(recs[0]["error"]["code"], "decode", "{}", recs[0]);
    assert_eq!(heads.load(Ordering::SeqCst), 1, "not retried: {log}");
}

/// A completion, sent in chunks whose sizes carry 20 leading zeros.
fn zero_padded(sock: &mut TcpStream) {
    drain(sock);
    let body = br#"{"id":"c","object":"text_completion","choices":[{"index":0,"text":" ok","finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
    let mut answer =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            .to_vec();
    for piece in body.chunks(40) {
        answer.extend_from_slice(format!("00000000000000000000{:x}\r\n", piece.len()).as_bytes());
        answer.extend_from_slice(piece);
        answer.extend_from_slice(b"\r\n");
    }
    answer.extend_from_slice(b"00000000000000000000\r\n\r\n");
    let _ = sock.write_all(&answer);
}

#[test]
fn chunk_sizes_with_many_leading_zeros_are_read() {
    let (url, heads) = raw_server(zero_padded);
    let dir = tempfile::tempdir().unwrap();
    let (code, recs, log) = run(&url, &input(dir.path(), 10), &[]);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(recs.len(), 1, "{log}");
    assert_eq!(recs[0]["response"]["status_code"], 200, "{}", recs[0]);
    assert_eq!(heads.load(Ordering::SeqCst), 1, "{log}");
}

#[test]
fn the_preflight_goes_through_the_proxy_the_requests_go_through() {
    // The endpoint itself accepts nothing: only the proxy reaches it (here, answers for it).
    let endpoint = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let (proxy, heads) = raw_server(zero_padded);
    let dir = tempfile::tempdir().unwrap();
    let path = input(dir.path(), 10);
    let (code, recs, log) = run(&endpoint, &path, &[("HTTP_PROXY", proxy.as_str())]);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(recs.len(), 1, "{log}");
    assert_eq!(recs[0]["response"]["status_code"], 200, "{}", recs[0]);
    assert_eq!(
        heads.load(Ordering::SeqCst),
        1,
        "the request went through the proxy: {log}"
    );
    // The same rules as the requests': NO_PROXY sends both straight to the host, which refuses.
    let (code, _, log) = run(
        &endpoint,
        &path,
        &[("HTTP_PROXY", proxy.as_str()), ("NO_PROXY", "127.0.0.1")],
    );
    assert_eq!(code, Some(3), "{log}");
    assert!(log.contains("cannot connect"), "{log}");
    let (code, _, log) = run(&endpoint, &path, &[]);
    assert_eq!(code, Some(3), "without the proxy the endpoint is unreachable: {log}");
}
