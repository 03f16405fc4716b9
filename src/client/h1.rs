//! HTTP/1.1 over plain TCP straight on hyper's connection API: the transport for `http://`
//! endpoints (local servers, where the client's own CPU is taken from the server it measures).
//!
//! Why not reqwest here: per request it parses the URL twice (redirect policy and pool key),
//! runs tower layers and boxes futures, about half of the client's instructions per request
//! (benches/PROFILE.md). This transport builds the request from parts prepared once and keeps
//! its own idle connections. `https://`, URLs with credentials and proxied URLs stay on reqwest.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::sync::Mutex;
use std::time::Duration;

type Conn = SendRequest<Full<Bytes>>;

/// Idle connections tried for one request before a new one is opened: beyond that the server
/// has evidently dropped them all (the rest are discarded as they come up).
const REUSE_TRIES: usize = 4;

/// One endpoint's connections.
pub(crate) struct Direct {
    /// `host:port`, resolved at each connect.
    addr: String,
    /// Origin form (`/v1/completions?x=y`), as sent on the request line.
    path: hyper::Uri,
    host: HeaderValue,
    auth: Option<HeaderValue>,
    connect_timeout: Duration,
    idle: Mutex<Vec<Conn>>,
    max_idle: usize,
}

/// Why no answer head came back. `Connect`: no connection could be opened. `Http`: the
/// connection failed or the answer was not HTTP.
#[derive(Debug)]
pub(crate) enum SendError {
    Connect(String),
    ConnectTimeout(Duration),
    Http(hyper::Error),
}

/// A connection in use; it goes back to the idle list only through [`Lease::release`], after
/// its answer was read to the end (a connection with an unread answer cannot carry another).
pub(crate) struct Lease<'a> {
    direct: &'a Direct,
    conn: Conn,
}

impl Lease<'_> {
    pub fn release(self) {
        if self.conn.is_closed() {
            return;
        }
        let mut idle = self.direct.idle.lock().expect("idle connections lock");
        if idle.len() < self.direct.max_idle {
            idle.push(self.conn);
        }
    }
}

impl Direct {
    /// For a plain-HTTP URL without credentials; None otherwise (reqwest serves those).
    pub fn new(
        url: &reqwest::Url,
        api_key: Option<&str>,
        connect_timeout: Duration,
        max_idle: usize,
    ) -> Option<Direct> {
        if url.scheme() != "http" || !url.username().is_empty() || url.password().is_some() || proxied(url) {
            return None;
        }
        let host = url.host_str()?;
        let port = url.port_or_known_default()?;
        // An IPv6 literal keeps its brackets both in `host_str` and in the Host header.
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let origin = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let auth = match api_key {
            Some(key) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {key}")).ok()?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        Some(Direct {
            addr: format!("{host}:{port}"),
            path: origin.parse().ok()?,
            host: HeaderValue::from_str(&authority).ok()?,
            auth,
            connect_timeout,
            idle: Mutex::new(Vec::with_capacity(max_idle.min(4096))),
            max_idle: max_idle.max(1),
        })
    }

    fn request(&self, body: Bytes, close: bool) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = hyper::Method::POST;
        *req.uri_mut() = self.path.clone();
        let h = req.headers_mut();
        h.insert(HOST, self.host.clone());
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("sizeup/", env!("CARGO_PKG_VERSION"))),
        );
        if let Some(a) = &self.auth {
            h.insert(AUTHORIZATION, a.clone());
        }
        if close {
            h.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        req
    }

    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().expect("idle connections lock");
        while let Some(c) = idle.pop() {
            if !c.is_closed() {
                return Some(c);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let tcp = tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(&self.addr))
            .await
            .map_err(|_| SendError::ConnectTimeout(self.connect_timeout))?
            .map_err(|e| SendError::Connect(format!("error connecting to {}: {e}", self.addr)))?;
        let _ = tcp.set_nodelay(true);
        let (conn, driver) = http1::handshake(TokioIo::new(tcp)).await.map_err(SendError::Http)?;
        tokio::spawn(async move {
            // Ends when the connection closes or its last `SendRequest` is dropped; an error
            // here reaches the request that was in flight through `send_request`.
            let _ = driver.await;
        });
        Ok(conn)
    }

    /// Sends one request and waits for the answer's head. A kept-alive connection that turns
    /// out closed before the request was written is set aside and the request goes on
    /// another: it never reached the server, so this is not a retry.
    pub async fn send(&self, body: Bytes, close: bool) -> Result<(Response<Incoming>, Lease<'_>), SendError> {
        let mut req = self.request(body, close);
        let mut tries = 0;
        loop {
            let pooled = if tries < REUSE_TRIES { self.checkout() } else { None };
            tries += 1;
            let reused = pooled.is_some();
            let mut conn = match pooled {
                Some(c) => c,
                None => self.connect().await?,
            };
            if conn.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(SendError::Connect(format!(
                    "connection to {} closed at once",
                    self.addr
                )));
            }
            match conn.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Lease { direct: self, conn })),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(SendError::Http(e.into_error())),
                },
            }
        }
    }
}

/// The next piece of an answer's body; None at its end.
pub(crate) async fn next_chunk(body: &mut Incoming) -> Result<Option<Bytes>, hyper::Error> {
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if !data.is_empty() {
                return Ok(Some(data));
            }
        }
    }
    Ok(None)
}

/// Whether reqwest would send requests to this URL through a proxy named in the environment;
/// those keep going through reqwest, which honours it (and `NO_PROXY`).
fn proxied(url: &reqwest::Url) -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    if !["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .any(|k| set(k))
    {
        return false;
    }
    let host = url.host_str().unwrap_or("");
    let no_proxy = std::env::var("NO_PROXY")
        .or_else(|_| std::env::var("no_proxy"))
        .unwrap_or_default();
    !no_proxy.split(',').map(str::trim).any(|n| {
        n == "*"
            || (!n.is_empty()
                && (host == n.trim_start_matches('.') || host.ends_with(&format!(".{}", n.trim_start_matches('.')))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";

    /// A loopback server answering every request with `{}`; after `per_conn` answers it closes
    /// the connection without saying so. Returns its URL and the count of connections.
    async fn server(per_conn: usize) -> (reqwest::Url, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = reqwest::Url::parse(&format!("http://{}/v1/completions", listener.local_addr().unwrap())).unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let counted = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    for _ in 0..per_conn {
                        // Each test request is one small write: a read holds it whole.
                        match sock.read(&mut buf).await {
                            Ok(n) if n > 0 => {}
                            _ => return,
                        }
                        if sock.write_all(ANSWER).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (url, conns)
    }

    async fn one(d: &Direct) -> Result<Bytes, String> {
        let (mut resp, lease) = d
            .send(Bytes::from_static(b"{}"), false)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let mut all = Vec::new();
        while let Some(c) = next_chunk(resp.body_mut()).await.map_err(|e| e.to_string())? {
            all.extend_from_slice(&c);
        }
        lease.release();
        Ok(all.into())
    }

    #[tokio::test]
    async fn keeps_one_connection_for_requests_in_turn() {
        let (url, conns) = server(usize::MAX).await;
        let d = Direct::new(&url, Some("k"), Duration::from_secs(5), 4).expect("plain http");
        for _ in 0..10 {
            assert_eq!(one(&d).await.unwrap(), Bytes::from_static(b"{}"));
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_not_used_again() {
        let (url, conns) = server(1).await;
        let d = Direct::new(&url, None, Duration::from_secs(5), 4).expect("plain http");
        for _ in 0..5 {
            assert_eq!(one(&d).await.unwrap(), Bytes::from_static(b"{}"));
            // Time for the close to arrive; a request already on its way meets it as a
            // reset, which the caller retries (`Client::send`).
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(conns.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn only_plain_http_without_credentials() {
        let direct = |u: &str| Direct::new(&reqwest::Url::parse(u).unwrap(), None, Duration::from_secs(1), 1).is_some();
        assert!(direct("http://127.0.0.1:8000/v1/completions"));
        assert!(direct("http://[::1]:8000/v1/chat/completions?x=1"));
        assert!(!direct("https://api.example.com/v1/completions"));
        assert!(!direct("http://user:pw@127.0.0.1:8000/v1/completions"));
    }

    #[test]
    fn the_key_is_a_sensitive_header() {
        let url = reqwest::Url::parse("http://127.0.0.1:9/v1/embeddings").unwrap();
        let d = Direct::new(&url, Some("sk-secret"), Duration::from_secs(1), 1).unwrap();
        let req = d.request(Bytes::new(), true);
        assert!(req.headers()[AUTHORIZATION].is_sensitive());
        assert!(!format!("{:?}", req.headers()).contains("sk-secret"));
        assert_eq!(req.headers()[HOST], "127.0.0.1:9");
        assert_eq!(req.uri(), "/v1/embeddings");
        assert_eq!(req.headers()[CONNECTION], "close");
    }
}
