//! Real servers, replayed. `tests/data/real/` holds answers recorded from a live llama.cpp
//! server (`scripts/real-server.sh --record`) and answers written from the docs and source of
//! vLLM, TGI, SGLang, OpenAI and llama-cpp-python (its README names each source);
//! `manifest.json` says, for each, what was asked, what came back and what sizeup must make of it.
//! A tiny local server replays the bytes with the recorded status and content type (streams in
//! odd-sized chunked pieces), and `sizeup::client::Client::send` reads them.

use bytes::Bytes;
use serde_json::Value;
use sizeup::api::Api;
use sizeup::client::sse::{SseDecoder, SseEvent};
use sizeup::client::{first_model, Client, ClientConfig, ClientError, FailKind, Outcome};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/real")
}

fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(data_dir().join("manifest.json")).expect("tests/data/real/manifest.json");
    serde_json::from_str::<Value>(&text)
        .expect("manifest.json parses")
        .as_array()
        .expect("manifest.json is a list")
        .clone()
}

fn fixture(file: &str) -> Vec<u8> {
    std::fs::read(data_dir().join(file)).unwrap_or_else(|e| panic!("tests/data/real/{file}: {e}"))
}

/// One answer the replay server gives.
#[derive(Clone)]
struct Reply {
    status: u16,
    content_type: String,
    body: Vec<u8>,
    /// `Connection: close` in the answer's headers (llama.cpp sends it with its 400s).
    connection_close: bool,
    /// Close the connection this long after the answer, without reading what came meanwhile
    /// and without having said so: what llama.cpp does after every streamed answer.
    close_after: Option<Duration>,
}

impl Reply {
    fn new(status: u16, content_type: &str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            content_type: content_type.to_string(),
            body,
            connection_close: false,
            close_after: None,
        }
    }

    fn from_entry(e: &Value) -> Reply {
        let file = e["file"].as_str().unwrap();
        Reply {
            status: e["status"].as_u64().unwrap() as u16,
            content_type: e["content_type"].as_str().unwrap_or("application/json").to_string(),
            body: fixture(file),
            connection_close: e["connection_header"]
                .as_str()
                .is_some_and(|c| c.eq_ignore_ascii_case("close")),
            close_after: (e["closes_connection"].as_bool() == Some(true) && e["connection_header"].as_str().is_none())
                .then_some(Duration::from_millis(50)),
        }
    }
}

enum Action {
    Answer(Reply),
    /// Close the connection without any answer.
    Drop,
}

type Script = Arc<dyn Fn(&[u8], usize) -> Action + Send + Sync>;

/// A local server on 127.0.0.1:0; `script(request body, request index)` decides each answer.
/// Returns the base URL and the number of requests it has read.
async fn replay(script: Script) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else { return };
            let script = script.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let _ = connection(sock, script, seen).await;
            });
        }
    });
    (url, count)
}

async fn connection(mut sock: TcpStream, script: Script, seen: Arc<AtomicUsize>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let Some((head, body)) = read_request(&mut sock, &mut buf).await? else {
            return Ok(());
        };
        let index = seen.fetch_add(1, Ordering::SeqCst);
        let reply = match script(&body, index) {
            Action::Drop => return Ok(()),
            Action::Answer(r) => r,
        };
        write_reply(&mut sock, &reply).await?;
        if let Some(d) = reply.close_after {
            tokio::time::sleep(d).await;
            return Ok(());
        }
        if reply.connection_close || head.contains("\r\nconnection: close") {
            return Ok(());
        }
    }
}

/// One request: its head (lower-cased) and body. None at a clean end of the connection.
async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + len].to_vec();
    buf.drain(..head_end + len);
    Ok(Some((head, body)))
}

async fn write_reply(sock: &mut TcpStream, r: &Reply) -> std::io::Result<()> {
    let reason = match r.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        _ => "Other",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\ncontent-type: {}\r\n", r.status, r.content_type);
    if r.connection_close {
        head.push_str("connection: close\r\n");
    }
    if !r.content_type.starts_with("text/event-stream") {
        head.push_str(&format!("content-length: {}\r\n\r\n", r.body.len()));
        sock.write_all(head.as_bytes()).await?;
        sock.write_all(&r.body).await?;
        return sock.flush().await;
    }
    // A stream: chunked, in odd-sized pieces (inside lines, between \r and \n, inside
    // characters), with a pause between them so first-token and end times differ.
    head.push_str("transfer-encoding: chunked\r\n\r\n");
    sock.write_all(head.as_bytes()).await?;
    sock.flush().await?;
    let sizes = [1usize, 5, 17, 64, 300, 2, 41];
    let mut at = 0;
    let mut i = 0;
    while at < r.body.len() {
        let end = (at + sizes[i % sizes.len()]).min(r.body.len());
        let piece = &r.body[at..end];
        sock.write_all(format!("{:x}\r\n", piece.len()).as_bytes()).await?;
        sock.write_all(piece).await?;
        sock.write_all(b"\r\n").await?;
        sock.flush().await?;
        tokio::time::sleep(Duration::from_millis(1)).await;
        at = end;
        i += 1;
    }
    sock.write_all(b"0\r\n\r\n").await?;
    sock.flush().await
}

fn client(url: &str, api: Api, pool: usize) -> Client {
    Client::new(&ClientConfig {
        endpoint: url.to_string(),
        api,
        access: Default::default(),
        connect_timeout: Duration::from_secs(5),
        pool_idle_timeout: Duration::from_secs(50),
        timeout: Duration::from_secs(20),
        first_byte_timeout: None,
        pool,
    })
    .unwrap()
}

fn api_of(e: &Value) -> Api {
    match e["api"].as_str() {
        Some("completions") => Api::Completions,
        _ => Api::Chat,
    }
}

fn request_body(e: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(&e["request"]).unwrap())
}

/// What is wrong with an outcome, measured against the manifest's `expect`.
fn mismatches(e: &Value, o: &Outcome) -> Vec<String> {
    let x = &e["expect"];
    let mut bad = Vec::new();
    if x["ok"].as_bool() == Some(true) {
        let ok = match &o.result {
            Ok(ok) => ok,
            Err(f) => return vec![format!("failed ({}): {}", f.kind.label(), f.message)],
        };
        let want = x["completion_tokens"].as_u64();
        if Some(ok.usage.completion_tokens) != want {
            bad.push(format!("completion_tokens {} != {want:?}", ok.usage.completion_tokens));
        }
        if Some(ok.usage.estimated) != x["estimated"].as_bool() {
            bad.push(format!("estimated {} != {}", ok.usage.estimated, x["estimated"]));
        }
        let prompt_ok = match &x["prompt_tokens"] {
            Value::String(s) if s == "some" => ok.usage.prompt_tokens.is_some_and(|p| p > 0),
            Value::Null => ok.usage.prompt_tokens.is_none(),
            v => ok.usage.prompt_tokens == v.as_u64(),
        };
        if !prompt_ok {
            bad.push(format!(
                "prompt_tokens {:?} != {}",
                ok.usage.prompt_tokens, x["prompt_tokens"]
            ));
        }
        let body: Value =
            serde_json::from_str(ok.body.as_ref().expect("kept body").get()).expect("the kept body is JSON");
        let body = &body;
        let text = body
            .pointer("/choices/0/message/content")
            .or_else(|| body.pointer("/choices/0/text"))
            .and_then(Value::as_str);
        match (x["text"].as_str(), text) {
            (Some(want), Some(got)) if want != got => bad.push(format!("text {got:?} != {want:?}")),
            (_, None) => bad.push("no text in the answer".into()),
            (_, Some("")) => bad.push("empty text".into()),
            _ => {}
        }
        if !ok.usage.estimated && body.pointer("/usage/completion_tokens").and_then(Value::as_u64) != want {
            bad.push(format!("usage in the output body: {}", body["usage"]));
        }
        if e["stream"].as_bool() == Some(true) {
            match o.first_token {
                Some(t) if t > o.start && t < o.end => {}
                t => bad.push(format!("first token {t:?} not inside ({:?}, {:?})", o.start, o.end)),
            }
        }
    } else {
        let f = match &o.result {
            Ok(_) => return vec!["succeeded, expected a failure".into()],
            Err(f) => f,
        };
        let kind = x["kind"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| x["status"].to_string());
        if f.kind.label() != kind {
            bad.push(format!("kind {} != {kind}", f.kind.label()));
        }
        if Some(f.kind.retryable()) != x["retryable"].as_bool() {
            bad.push(format!("retryable {} != {}", f.kind.retryable(), x["retryable"]));
        }
        let want = x["message_contains"].as_str().unwrap();
        if !f.message.contains(want) {
            bad.push(format!("message {:?} lacks {want:?}", f.message));
        }
        if f.body.is_none() {
            bad.push("error body not kept".into());
        }
    }
    bad
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_reads_as_its_manifest_says() {
    let entries = manifest();
    assert!(entries.len() >= 20, "manifest lists {} fixtures", entries.len());
    for server in ["llama.cpp", "OpenAI", "vLLM", "TGI", "SGLang", "llama-cpp-python"] {
        assert!(
            entries
                .iter()
                .any(|e| e["server"].as_str().unwrap_or("").contains(server)),
            "no fixture from {server}"
        );
    }
    let mut problems = Vec::new();
    for e in entries.iter().filter(|e| e["api"] != "models") {
        let reply = Reply::from_entry(e);
        let (url, _) = replay(Arc::new(move |_: &[u8], _| Action::Answer(reply.clone()))).await;
        let c = client(&url, api_of(e), 1);
        let stream = e["stream"].as_bool().unwrap_or(false);
        let outcome = c.send(request_body(e), stream, true).await;
        for m in mismatches(e, &outcome) {
            problems.push(format!("{}: {m}", e["file"].as_str().unwrap()));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// llama-server closes the connection after every streamed answer, without `Connection:
/// close`; the next request sent on that kept-alive connection meets a dead socket. sizeup must
/// send it again on a fresh connection (and ask for `Connection: close` on later streams), so
/// neither a sweep nor a run sees a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llamacpp_closing_after_each_stream_costs_no_request() {
    let entries = manifest();
    let find = |f: &str| entries.iter().find(|e| e["file"] == f).unwrap().clone();
    let stream_entry = find("llamacpp-chat-stream.sse");
    let json_entry = find("llamacpp-chat.json");
    let mut stream_reply = Reply::from_entry(&stream_entry);
    stream_reply.close_after = Some(Duration::from_millis(50)); // as recorded: closes_connection
    let json_reply = Reply::from_entry(&json_entry);
    let answers = Arc::new(AtomicUsize::new(0));
    let answered = answers.clone();
    let (url, _) = replay(Arc::new(move |body: &[u8], _| {
        answered.fetch_add(1, Ordering::SeqCst);
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        if v["stream"] == true {
            Action::Answer(stream_reply.clone())
        } else {
            Action::Answer(json_reply.clone())
        }
    }))
    .await;
    let c = client(&url, Api::Chat, 1);
    let stream_body = request_body(&stream_entry);
    let json_body = request_body(&json_entry);
    // Streams and plain answers mixed, as in a run whose bodies differ.
    for (i, stream) in [true, true, false, true, false, false, true, true, false, true]
        .iter()
        .enumerate()
    {
        let body = if *stream {
            stream_body.clone()
        } else {
            json_body.clone()
        };
        let o = c.send(body, *stream, true).await;
        if let Err(f) = &o.result {
            panic!("request {i} (stream {stream}) failed: {} {}", f.kind.label(), f.message);
        }
    }
    assert!(
        c.closes_after_stream(),
        "the client learned that streams close the connection"
    );
    // What the commands wait on to print their one-time notice.
    assert!(c.learned_closes_after_stream().await);
    assert!(c.stale_retries() >= 1, "the closed connection was met and retried");
}

/// The retry above must not hide a server that really drops requests: none before any stream
/// was answered, and at most its budget after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_drops_requests_still_shows() {
    let stream_entry = manifest()
        .into_iter()
        .find(|e| e["file"] == "llamacpp-chat-stream.sse")
        .unwrap();
    let reply = Reply::from_entry(&stream_entry);
    // Never answers: a reset is a failure, sent once.
    let (url, seen) = replay(Arc::new(|_: &[u8], _| Action::Drop)).await;
    let c = client(&url, Api::Chat, 1);
    let o = c.send(request_body(&stream_entry), true, false).await;
    assert_eq!(o.result.as_ref().err().map(|f| f.kind), Some(FailKind::Reset));
    assert_eq!(c.stale_retries(), 0);
    assert_eq!(seen.load(Ordering::SeqCst), 1);

    // Answers one stream (keeping the connection), then drops everything.
    let (url, seen) = replay(Arc::new(move |_: &[u8], i| {
        if i == 0 {
            Action::Answer(Reply {
                close_after: None,
                ..reply.clone()
            })
        } else {
            Action::Drop
        }
    }))
    .await;
    let c = client(&url, Api::Chat, 1);
    assert!(c.send(request_body(&stream_entry), true, false).await.is_ok());
    let n = 20;
    for _ in 0..n {
        let o = c.send(request_body(&stream_entry), true, false).await;
        assert_eq!(o.result.as_ref().err().map(|f| f.kind), Some(FailKind::Reset));
    }
    let retries = c.stale_retries() as usize;
    assert!((1..=6).contains(&retries), "{retries} retries; budget 2 x pool + 4 = 6");
    assert_eq!(seen.load(Ordering::SeqCst), 1 + n + retries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_names_and_servers_without_a_models_route() {
    let t = Duration::from_secs(5);
    let models = fixture("llamacpp-models.json");
    let (url, _) = replay(Arc::new(move |_: &[u8], _| {
        Action::Answer(Reply::new(200, "application/json; charset=utf-8", models.clone()))
    }))
    .await;
    assert_eq!(
        first_model(&url, &Default::default(), t).await.unwrap(),
        Some("smollm2".into())
    );
    let not_found = br#"{"error":{"message":"File Not Found","type":"not_found_error","code":404}}"#.to_vec();
    let (url, _) = replay(Arc::new(move |_: &[u8], _| {
        Action::Answer(Reply::new(404, "application/json", not_found.clone()))
    }))
    .await;
    assert_eq!(first_model(&url, &Default::default(), t).await.unwrap(), None);
    // A web UI's catch-all route: 200 with a page.
    let (url, _) = replay(Arc::new(|_: &[u8], _| {
        Action::Answer(Reply::new(
            200,
            "text/html",
            b"<!doctype html><title>UI</title>".to_vec(),
        ))
    }))
    .await;
    assert_eq!(first_model(&url, &Default::default(), t).await.unwrap(), None);
    let (url, _) = replay(Arc::new(|_: &[u8], _| {
        Action::Answer(Reply::new(401, "application/json", br#"{"error":"no key"}"#.to_vec()))
    }))
    .await;
    let err = first_model(&url, &Default::default(), t).await.unwrap_err();
    assert!(matches!(err, ClientError::Rejected { status: 401 }), "{err:?}");
    assert!(err.to_string().starts_with("HTTP 401"));
}

/// The decoder alone: every recorded or written stream gives the same events however its bytes
/// are split, every event is JSON, and each ends with `[DONE]`.
#[test]
fn every_stream_decodes_the_same_at_any_split() {
    let decode = |parts: &[&[u8]]| {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        for p in parts {
            d.push(p, &mut out).unwrap();
        }
        d.finish().unwrap();
        out
    };
    let mut streams = 0;
    for e in manifest() {
        let file = e["file"].as_str().unwrap();
        if !file.ends_with(".sse") {
            continue;
        }
        streams += 1;
        let bytes = fixture(file);
        let whole = decode(&[&bytes]);
        assert_eq!(whole.last(), Some(&SseEvent::Done), "{file}");
        for ev in &whole[..whole.len() - 1] {
            let SseEvent::Data(d) = ev else {
                panic!("{file}: [DONE] before the end")
            };
            serde_json::from_str::<Value>(d).unwrap_or_else(|err| panic!("{file}: {err}: {d}"));
        }
        let step = (bytes.len() / 400).max(1);
        for cut in (0..=bytes.len()).step_by(step) {
            assert_eq!(decode(&[&bytes[..cut], &bytes[cut..]]), whole, "{file} cut at {cut}");
        }
    }
    assert!(streams >= 10, "{streams} streams");
}
