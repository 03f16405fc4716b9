//! Gateways and enterprise endpoints connect first try: a header a gateway requires, taken
//! from a variable and never written anywhere (`--header 'api-key: $VAR'`); an Azure OpenAI
//! URL whose `?api-version=` reaches the server on every request and whose pre-flight needs no
//! `/v1/models`; an HTTPS endpoint signed by a company CA, trusted through `--cacert` (or
//! `SSL_CERT_FILE`) and refused without it with an error that names the fix.

use crate::util::chat_file;
use crate::util::run::{read_records, run_async, Ran};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

const GATEWAY_KEY: &str = "az-gateway-secret-5c1d9e";

/// One request as a test server read it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    target: String,
    headers: HashMap<String, String>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// Serves HTTP/1.1 keep-alive on one stream: each request read whole, answered by `answer`
/// (status, body), until the peer closes.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, log: Log, answer: fn(&Seen) -> (u16, String)) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let (method, target) = (
            first.next().unwrap_or("").to_string(),
            first.next().unwrap_or("").to_string(),
        );
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + len);
        let seen = Seen {
            method,
            target,
            headers,
        };
        let (status, body) = answer(&seen);
        log.lock().unwrap().push(seen);
        let reply = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if io.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A chat completion whose text repeats `echo` (a debugging gateway that echoes a header).
fn completion(echo: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("you sent {echo}")}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    })
    .to_string()
}

/// Azure OpenAI as seen from outside: the deployment route wants `api-key` and
/// `?api-version=`; `/v1/models` is not served.
fn azure(seen: &Seen) -> (u16, String) {
    let key = seen.headers.get("api-key").cloned().unwrap_or_default();
    if key != GATEWAY_KEY {
        return (
            401,
            r#"{"error":{"code":"401","message":"Access denied due to invalid subscription key."}}"#.into(),
        );
    }
    if seen.method == "POST"
        && seen
            .target
            .starts_with("/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21")
    {
        (200, completion(&key))
    } else {
        (404, r#"{"error":{"code":"404","message":"Resource not found"}}"#.into())
    }
}

/// Starts `answer` on a loopback port, each connection through `wrap` (plain or TLS).
async fn start<S, F, Fut>(answer: fn(&Seen) -> (u16, String), wrap: F) -> (u16, Log)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Option<S>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log: Log = Arc::default();
    let (log2, wrap) = (log.clone(), Arc::new(wrap));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (log, wrap) = (log2.clone(), wrap.clone());
            tokio::spawn(async move {
                if let Some(io) = wrap(tcp).await {
                    serve(io, log, answer).await;
                }
            });
        }
    });
    (port, log)
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn assert_no_key(ran: &Ran, dir: &Path) {
    assert!(
        !ran.stdout.contains(GATEWAY_KEY) && !ran.stderr.contains(GATEWAY_KEY),
        "{ran:?}"
    );
    let mut files = Vec::new();
    files_under(dir, &mut files);
    for f in files {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        assert!(!text.contains(GATEWAY_KEY), "the gateway key is in {}", f.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_azure_endpoint_through_a_header_from_a_variable_answers_every_line_and_keeps_the_key_out() {
    let (port, log) = start(azure, |tcp| async move { Some(tcp) }).await;
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    chat_file(&input, 30, "gpt-4o");
    let url = format!("http://127.0.0.1:{port}/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21");
    let out = tmp.path().join("out.jsonl");
    let args = |out: &Path| -> Vec<String> {
        [
            "--endpoint",
            &url,
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--header",
            "api-key: $AZ_TEST_KEY",
            "--header",
            "x-team: research",
            "--concurrency",
            "4",
        ]
        .map(String::from)
        .to_vec()
    };
    let a = args(&out);
    let ran = run_async(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &[("AZ_TEST_KEY", GATEWAY_KEY)],
    )
    .await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let records = read_records(&out);
    assert_eq!(records.len(), 30, "{ran:?}");
    for r in &records {
        assert_eq!(r["response"]["status_code"], 200, "{r}");
        // The gateway echoed its key: the output holds *** in its place.
        let text = r["response"]["body"]["choices"][0]["message"]["content"]
            .as_str()
            .unwrap();
        assert_eq!(text, "you sent ***", "{r}");
    }
    let seen = log.lock().unwrap().clone();
    let posts: Vec<&Seen> = seen.iter().filter(|s| s.method == "POST").collect();
    assert_eq!(posts.len(), 30, "each line once: {seen:?}");
    for s in &posts {
        assert!(s.target.ends_with("?api-version=2024-10-21"), "{s:?}");
        assert_eq!(s.headers.get("api-key").map(String::as_str), Some(GATEWAY_KEY));
        assert_eq!(s.headers.get("x-team").map(String::as_str), Some("research"));
        assert!(!s.headers.contains_key("authorization"), "no key was set: {s:?}");
    }
    // The pre-flight took the model from the deployment: no GET /v1/models was needed.
    assert!(seen.iter().all(|s| !s.target.starts_with("/v1/models")), "{seen:?}");
    assert_no_key(&ran, tmp.path());

    // The variable unset: exit 2 naming it, before anything is sent.
    let before = log.lock().unwrap().len();
    let a = args(&tmp.path().join("out2.jsonl"));
    let ran = run_async(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[]).await;
    assert_eq!(ran.code, Some(2), "{ran:?}");
    assert!(ran.stderr.contains("$AZ_TEST_KEY is not set"), "{ran:?}");
    assert_eq!(log.lock().unwrap().len(), before);
}

/// A CA made here, and a certificate for 127.0.0.1 it signed: (CA's PEM, the server's TLS setup).
fn company_ca() -> (String, tokio_rustls::TlsAcceptor) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sizeup test company CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    use tokio_rustls::rustls;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    (ca.pem(), tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn open_answer(seen: &Seen) -> (u16, String) {
    match seen.method.as_str() {
        "POST" => (200, completion("hello")),
        _ => (404, "{}".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_signed_by_a_company_ca_is_trusted_through_cacert_and_refused_without_it() {
    let (ca_pem, acceptor) = company_ca();
    let (port, log) = start(open_answer, move |tcp| {
        let acceptor = acceptor.clone();
        async move { acceptor.accept(tcp).await.ok() }
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("company-ca.pem");
    std::fs::write(&ca, &ca_pem).unwrap();
    let input = tmp.path().join("in.jsonl");
    chat_file(&input, 20, "m");
    let url = format!("https://127.0.0.1:{port}");
    let run = |out: &str, extra: Vec<String>, env: Vec<(&'static str, String)>| {
        let (url, input, out) = (url.clone(), input.clone(), tmp.path().join(out));
        async move {
            let mut args: Vec<String> = [
                "--endpoint",
                &url,
                "--input",
                input.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
                "--concurrency",
                "4",
            ]
            .map(String::from)
            .to_vec();
            args.extend(extra);
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let ran = run_async(&args.iter().map(String::as_str).collect::<Vec<_>>(), &env).await;
            let n = if out.exists() { read_records(&out).len() } else { 0 };
            (ran, n)
        }
    };
    let ca_arg = ca.to_str().unwrap().to_string();

    let (ran, n) = run("trusted.jsonl", vec!["--cacert".into(), ca_arg.clone()], vec![]).await;
    assert_eq!((ran.code, n), (Some(0), 20), "{ran:?}");

    // As curl does, SSL_CERT_FILE names a bundle to trust.
    let (ran, n) = run("env.jsonl", vec![], vec![("SSL_CERT_FILE", ca_arg.clone())]).await;
    assert_eq!((ran.code, n), (Some(0), 20), "{ran:?}");

    // Without it: refused before any line is sent, naming the certificate's fault and the fix.
    let posts = |log: &Log| log.lock().unwrap().iter().filter(|s| s.method == "POST").count();
    let before = posts(&log);
    let (ran, _) = run("refused.jsonl", vec!["--model".into(), "m".into()], vec![]).await;
    assert_eq!(ran.code, Some(3), "{ran:?}");
    assert!(
        ran.stderr.contains("certificate was refused") && ran.stderr.contains("UnknownIssuer"),
        "{ran:?}"
    );
    assert!(ran.stderr.contains("--cacert"), "{ran:?}");
    assert_eq!(posts(&log), before, "no line was sent");

    // A --cacert that is no certificate: exit 2 naming the file.
    let bad = tmp.path().join("not-a-cert.pem");
    std::fs::write(&bad, "hello").unwrap();
    let (ran, _) = run(
        "bad.jsonl",
        vec!["--cacert".into(), bad.to_str().unwrap().into()],
        vec![],
    )
    .await;
    assert_eq!(ran.code, Some(2), "{ran:?}");
    assert!(ran.stderr.contains("not-a-cert.pem"), "{ran:?}");
}

/// A models route that redirects to another host: the probe stops there, so neither the key
/// nor a credential header reaches that host (reqwest would carry `api-key` across).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_host_carries_no_key_there() {
    let other = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_addr = other.local_addr().unwrap();
    let heard: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = heard.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = other.accept().await {
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            log.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            let body = r#"{"data":[{"id":"elsewhere"}]}"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all((head + body).as_bytes()).await;
        }
    });
    let gateway = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/chat/completions", gateway.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = gateway.accept().await {
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await;
            let head = format!(
                "HTTP/1.1 302 Found\r\nLocation: http://{other_addr}/v1/models\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = s.write_all(head.as_bytes()).await;
        }
    });
    let access = sizeup::client::Access {
        key: Some(sizeup::secret::Secret::new("sk-redirect-secret")),
        headers: vec![sizeup::client::Header::parse("api-key: hdr-redirect-secret", |_| None).unwrap()],
        roots: Vec::new(),
    };
    let model = sizeup::client::first_model(&url, &access, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(model, None, "the redirect is the answer: no model from another host");
    assert!(heard.lock().unwrap().is_empty(), "{:?}", heard.lock().unwrap());
}
