//! The plain-http transport against loopback servers that answer in every framing, in any
//! pieces, and misbehave in the ways real ones do.

use super::*;
use crate::client::access::Access;
use proptest::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads one request (head and `content-length` body) from a test server's socket; false
/// at the close.
async fn read_request(sock: &mut TcpStream, seen: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if seen.len() >= end + 4 + len {
                seen.drain(..end + 4 + len);
                return true;
            }
        }
        match sock.read(&mut buf).await {
            Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => return false,
        }
    }
}

/// A loopback server answering each request with `answer`, written in pieces of `piece`
/// bytes; after `per_conn` answers it closes the connection without saying so. Returns its
/// URL and the count of connections.
async fn server(answer: Vec<u8>, piece: usize, per_conn: usize) -> (reqwest::Url, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = reqwest::Url::parse(&format!("http://{}/v1/completions", listener.local_addr().unwrap())).unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let counted = conns.clone();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            tokio::spawn(async move {
                let _ = sock.set_nodelay(true);
                let mut seen = Vec::new();
                for _ in 0..per_conn {
                    if !read_request(&mut sock, &mut seen).await {
                        return;
                    }
                    for p in answer.chunks(piece.max(1)) {
                        if sock.write_all(p).await.is_err() {
                            return;
                        }
                        if piece < answer.len() {
                            tokio::task::yield_now().await;
                        }
                    }
                }
            });
        }
    });
    (url, conns)
}

async fn one(d: &Direct) -> Result<(u16, Vec<u8>), String> {
    let mut answer = d
        .send(Bytes::from_static(b"{}"), false)
        .await
        .map_err(|e| e.to_string())?;
    let mut all = Vec::new();
    while let Some(c) = answer.chunk().await.map_err(|e| e.to_string())? {
        all.extend_from_slice(&c);
    }
    Ok((answer.head.status, all))
}

fn key(k: &str) -> Access {
    Access::with_key(Some(crate::secret::Secret::new(k)))
}

fn direct(url: &reqwest::Url) -> Direct {
    Direct::new(url, &key("k"), Duration::from_secs(5), 4, Duration::from_secs(60)).expect("plain http")
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";

#[tokio::test]
async fn keeps_one_connection_for_requests_in_turn() {
    let (url, conns) = server(OK.to_vec(), usize::MAX, usize::MAX).await;
    let d = direct(&url);
    for _ in 0..10 {
        assert_eq!(one(&d).await.unwrap(), (200, b"{}".to_vec()));
    }
    assert_eq!(conns.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_the_server_closed_is_not_used_again() {
    let (url, conns) = server(OK.to_vec(), usize::MAX, 1).await;
    let d = direct(&url);
    for _ in 0..5 {
        assert_eq!(one(&d).await.unwrap(), (200, b"{}".to_vec()));
        // Time for the close to arrive; a request already on its way meets it as a
        // reset, which the caller retries (`Client::send`).
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(conns.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn answers_framed_every_way_arrive_whole_in_any_pieces() {
    let cases: [(&[u8], &[u8], bool); 9] = [
        (OK, b"{}", true),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-request-id: r1\r\n\r\n5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\ntrailer: t\r\n\r\n",
            b"hello world",
            true,
        ),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc",
            b"abc",
            true,
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b"", true),
        (b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok", b"ok", false),
        (b"HTTP/1.0 200 OK\r\n\r\nuntil the close", b"until the close", false),
        (b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok", b"ok", true),
        // A length beside a transfer-encoding: the chunks frame the body, the connection is
        // not trusted again.
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            b"ok",
            false,
        ),
        // An encoding that is not chunked runs to the close.
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: identity\r\n\r\nto the end", b"to the end", false),
    ];
    for (answer, body, reused) in cases {
        for piece in [1, 3, 7, usize::MAX] {
            let per_conn = if reused { usize::MAX } else { 1 };
            let (url, conns) = server(answer.to_vec(), piece, per_conn).await;
            let d = direct(&url);
            for _ in 0..3 {
                let (status, got) = one(&d).await.unwrap();
                assert!(status == 200 || status == 204, "{status}");
                assert_eq!(got, body, "piece {piece}: {}", String::from_utf8_lossy(answer));
            }
            let expected = if reused { 1 } else { 3 };
            assert_eq!(
                conns.load(Ordering::SeqCst),
                expected,
                "{}",
                String::from_utf8_lossy(answer)
            );
        }
    }
}

#[tokio::test]
async fn a_request_that_asks_for_the_close_does_not_reuse_its_connection() {
    // The server keeps the connection open and says nothing (llama.cpp's streams).
    let (url, conns) = server(OK.to_vec(), usize::MAX, usize::MAX).await;
    let d = direct(&url);
    for _ in 0..3 {
        let mut a = d.send(Bytes::from_static(b"{}"), true).await.unwrap();
        while a.chunk().await.unwrap().is_some() {}
    }
    assert_eq!(conns.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn lengths_are_read_strictly_and_a_cut_head_counts_as_answered() {
    for (length, ok) in [("5, 5", true), ("+5", false), ("5, 6", false), ("", false)] {
        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {length}\r\n\r\nhello");
        let (url, _) = server(answer.into_bytes(), usize::MAX, 1).await;
        let got = one(&direct(&url)).await;
        assert_eq!(got.is_ok(), ok, "content-length: {length:?}: {got:?}");
    }
    let (url, _) = server(b"HTTP/1.1 200 OK\r\ncontent-le".to_vec(), usize::MAX, 1).await;
    let e = direct(&url).send(Bytes::from_static(b"{}"), false).await.err().unwrap();
    assert!(e.answered(), "{e}");
    let (url, _) = server(Vec::new(), usize::MAX, 1).await;
    let e = direct(&url).send(Bytes::from_static(b"{}"), false).await.err().unwrap();
    assert!(matches!(e, SendError::Closed) && !e.answered(), "{e}");
}

#[tokio::test]
async fn headers_the_client_uses_are_read() {
    let answer = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nX-Request-Id: abc\r\nX-Request-Id: second\r\nContent-Type: text/event-stream\r\nContent-Length: 0\r\n\r\n";
    let (url, _) = server(answer.to_vec(), usize::MAX, usize::MAX).await;
    let d = direct(&url);
    let a = d.send(Bytes::from_static(b"{}"), false).await.unwrap();
    assert_eq!(a.head.status, 429);
    assert_eq!(a.head.retry_after.as_deref(), Some("7"));
    assert_eq!(a.head.request_id.as_deref(), Some("abc"));
    assert_eq!(a.head.content_type.as_deref(), Some("text/event-stream"));
}

#[tokio::test]
async fn a_cut_answer_or_a_broken_one_is_an_error() {
    let cases: [&[u8]; 4] = [
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"not http at all\r\n\r\n",
    ];
    for answer in cases {
        let (url, _) = server(answer.to_vec(), usize::MAX, 1).await;
        let d = direct(&url);
        assert!(one(&d).await.is_err(), "{}", String::from_utf8_lossy(answer));
    }
}

#[test]
fn only_plain_http_without_credentials() {
    let direct = |u: &str| {
        Direct::new(
            &reqwest::Url::parse(u).unwrap(),
            &Access::default(),
            Duration::from_secs(1),
            1,
            Duration::from_secs(60),
        )
        .is_some()
    };
    assert!(direct("http://127.0.0.1:8000/v1/completions"));
    assert!(direct("http://[::1]:8000/v1/chat/completions?x=1"));
    assert!(!direct("https://api.example.com/v1/completions"));
    assert!(!direct("http://user:pw@127.0.0.1:8000/v1/completions"));
}

#[test]
fn the_request_on_the_wire() {
    let url = reqwest::Url::parse("http://127.0.0.1:9/v1/embeddings?x=1").unwrap();
    let d = Direct::new(
        &url,
        &key("sk-secret"),
        Duration::from_secs(1),
        1,
        Duration::from_secs(60),
    )
    .unwrap();
    let mut out = Vec::new();
    d.write_request(&mut out, b"{\"input\":\"a\"}", true);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!(
            "POST /v1/embeddings?x=1 HTTP/1.1\r\nhost: 127.0.0.1:9\r\ncontent-type: application/json\r\nuser-agent: sizeup/{}\r\nauthorization: Bearer sk-secret\r\nconnection: close\r\ncontent-length: 13\r\n\r\n{{\"input\":\"a\"}}",
            env!("CARGO_PKG_VERSION")
        )
    );
    // A key that would break the head is refused, not sent.
    assert!(Direct::new(
        &url,
        &key("k\r\nx: y"),
        Duration::from_secs(1),
        1,
        Duration::from_secs(60)
    )
    .is_none());
    assert!(Direct::new(
        &url,
        &key("k\u{7f}"),
        Duration::from_secs(1),
        1,
        Duration::from_secs(60)
    )
    .is_none());
}

#[test]
fn decimal_digits() {
    let mut d = [0u8; 20];
    assert_eq!(decimal(0, &mut d), b"0");
    assert_eq!(decimal(u64::MAX, &mut d), u64::MAX.to_string().as_bytes());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    /// Any body, sent chunked in any chunk sizes and written in any pieces, arrives whole,
    /// and the connection is kept for the next request.
    #[test]
    fn chunked_bodies_arrive_whole(
        body in proptest::collection::vec(any::<u8>(), 0..600),
        sizes in proptest::collection::vec(1usize..50, 1..8),
        piece in 1usize..40,
    ) {
        let mut answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec();
        let mut rest = &body[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].min(rest.len());
            answer.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            answer.extend_from_slice(&rest[..n]);
            answer.extend_from_slice(b"\r\n");
            rest = &rest[n..];
            i += 1;
        }
        answer.extend_from_slice(b"0\r\n\r\n");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (url, conns) = server(answer, piece, usize::MAX).await;
            let d = direct(&url);
            for _ in 0..2 {
                let (_, got) = one(&d).await.unwrap();
                prop_assert_eq!(&got, &body);
            }
            prop_assert_eq!(conns.load(Ordering::SeqCst), 1);
            Ok(())
        })?;
    }
}

/// A server that reads a request's head only, answers 413 at once, then closes (`close`) or
/// keeps the connection open reading nothing more. Counts the request heads it saw.
async fn early_413(close: bool) -> (reqwest::Url, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = reqwest::Url::parse(&format!("http://{}/v1/completions", listener.local_addr().unwrap())).unwrap();
    let heads = Arc::new(AtomicUsize::new(0));
    let counted = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let body = br#"{"error":{"message":"too large"}}"#;
                let answer = format!(
                    "HTTP/1.1 413 Payload Too Large\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(answer.as_bytes()).await;
                let _ = sock.write_all(body).await;
                if close {
                    return;
                }
                // Open, unread, until the client goes.
                tokio::time::sleep(Duration::from_secs(120)).await;
            });
        }
    });
    (url, heads)
}

#[tokio::test]
async fn an_early_answer_to_a_large_body_is_the_answer_whether_the_server_closes_or_stops_reading() {
    let big = Bytes::from(vec![b'x'; 8 << 20]);
    for close in [true, false] {
        let (url, heads) = early_413(close).await;
        let d = direct(&url);
        // Generous: the point is an answer instead of a reset or a wait for --timeout.
        let sent = tokio::time::timeout(Duration::from_secs(60), d.send(big.clone(), false)).await;
        let mut a = sent.expect("no hang").unwrap_or_else(|e| panic!("close {close}: {e}"));
        assert_eq!(a.head.status, 413, "close {close}");
        let mut got = Vec::new();
        while let Some(c) = a.chunk().await.unwrap() {
            got.extend_from_slice(&c);
        }
        assert!(got.starts_with(b"{\"error\""), "close {close}");
        assert_eq!(heads.load(Ordering::SeqCst), 1, "close {close}");
        drop(a);
        // The connection that carried half a request is not used again.
        assert!(d.pool.checkout().is_none(), "close {close}");
    }
}

#[tokio::test]
async fn a_connection_idle_past_the_bound_is_not_reused() {
    let (url, conns) = server(OK.to_vec(), usize::MAX, usize::MAX).await;
    let d = Direct::new(
        &url,
        &Access::default(),
        Duration::from_secs(5),
        4,
        Duration::from_millis(200),
    )
    .unwrap();
    assert_eq!(one(&d).await.unwrap().0, 200);
    assert_eq!(one(&d).await.unwrap().0, 200);
    assert_eq!(conns.load(Ordering::SeqCst), 1, "reused within the bound");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(one(&d).await.unwrap().0, 200);
    assert_eq!(conns.load(Ordering::SeqCst), 2, "a fresh connection past the bound");
}

#[tokio::test]
async fn heads_up_to_400_kib_are_read_and_larger_ones_refused_in_one_piece_or_many() {
    for (size, ok) in [(300 << 10, true), (450 << 10, false)] {
        let answer = format!(
            "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\n\r\n{{}}",
            "a".repeat(size)
        );
        for piece in [usize::MAX, 4096] {
            let (url, _) = server(answer.clone().into_bytes(), piece, 1).await;
            let got = one(&direct(&url)).await;
            assert_eq!(got.is_ok(), ok, "{size} bytes in pieces of {piece}: {got:?}");
        }
    }
}

#[tokio::test]
async fn a_body_that_breaks_its_framing_is_a_protocol_error_after_the_head() {
    let answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
    let (url, _) = server(answer.to_vec(), usize::MAX, 1).await;
    let d = direct(&url);
    let mut a = d.send(Bytes::from_static(b"{}"), false).await.unwrap();
    assert_eq!(a.head.status, 200);
    let e = a.chunk().await.unwrap_err();
    assert!(matches!(e, SendError::Protocol(_)), "{e}");
}
