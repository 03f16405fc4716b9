//! Reads the server's own Prometheus metrics while sizeup loads it: once a second by
//! default, in the background, kept with their times so a sweep level or a run can take the
//! scrapes of its own window. Never fails a command: a server without `/metrics`, or one
//! whose names sizeup doesn't know, gives a note and no server columns.

pub mod dialect;
pub mod prom;

pub use dialect::Dialect;

use crate::client::Access;
use crate::stats::server::ServerSnapshot;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// `--server-metrics`: where the metrics are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricsSpec {
    /// `<endpoint's scheme://host:port>/metrics`, where vLLM, SGLang, TGI and llama.cpp serve it.
    Default,
    Off,
    Url(String),
}

impl MetricsSpec {
    pub fn parse(s: &str) -> Result<MetricsSpec, String> {
        match s.trim() {
            "off" | "none" | "no" => Ok(MetricsSpec::Off),
            "auto" | "" => Ok(MetricsSpec::Default),
            url => match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(MetricsSpec::Url(url.to_string())),
                _ => Err(format!(
                    "`{url}` is not an http(s) URL; give e.g. http://host:9000/metrics, or `off`"
                )),
            },
        }
    }
}

/// The background reader of one server's metrics.
pub struct Scraper {
    dialect: Dialect,
    /// Where the metrics come from, credentials removed.
    url_display: String,
    origin: Instant,
    history: Arc<Mutex<Vec<ServerSnapshot>>>,
    cancel: CancellationToken,
    fetch: Arc<Fetch>,
    /// Tokens one engine's prefix cache holds, from the first page (vLLM's cache_config_info).
    prefix_cache_tokens: Option<u64>,
}

impl Drop for Scraper {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Scraper {
    /// Reads the metrics once and, when they speak a known dialect, keeps reading them every
    /// `interval` until dropped. `Ok(None)` when `--server-metrics off`; `Err` is the one-line
    /// note to show when the metrics cannot be read or are not understood. The API key goes
    /// only to the endpoint's own host and port.
    pub async fn start(
        spec: &MetricsSpec,
        endpoint: &str,
        access: &Access,
        interval: Duration,
    ) -> Result<Option<Scraper>, String> {
        let url = match spec {
            MetricsSpec::Off => return Ok(None),
            MetricsSpec::Url(u) => reqwest::Url::parse(u).map_err(|e| format!("--server-metrics: {e}"))?,
            MetricsSpec::Default => crate::client::base_url(endpoint)
                .and_then(|b| b.join("/metrics").ok())
                .ok_or_else(|| "no metrics URL: the endpoint has no host".to_string())?,
        };
        let url_display = crate::client::redact_url(url.as_str());
        let same_host = reqwest::Url::parse(endpoint)
            .is_ok_and(|e| e.host_str() == url.host_str() && e.port_or_known_default() == url.port_or_known_default());
        // The key and the `--header`s go only where the requests go; the trusted roots everywhere.
        let access = match same_host {
            true => access.clone(),
            false => Access {
                roots: access.roots.clone(),
                ..Access::default()
            },
        };
        let http = access
            .builder()
            // llama-server answers /metrics from its main loop: under load a scrape can wait
            // seconds for a decode step to end (seen: 4.5 s and 9.5 s with 10 open requests).
            // Slow is not dead; each scrape's time is when its answer came.
            .timeout(Duration::from_secs(10).max(interval))
            .pool_max_idle_per_host(1)
            .build()
            .map_err(|e| format!("server metrics: {e}"))?;
        let fetch = Fetch { http, url, access };
        let origin = Instant::now();
        let text = fetch
            .get()
            .await
            .map_err(|e| format!("server metrics not read from {url_display}: {e}"))?;
        let samples = prom::parse(&text);
        let Some(dialect) = Dialect::detect(&samples) else {
            return Err(format!(
                "{url_display} has no metrics of a server sizeup knows (vLLM, SGLang, TGI, llama.cpp): no server columns; point --server-metrics at the engine's own /metrics"
            ));
        };
        let history = Arc::new(Mutex::new(vec![dialect.snapshot(&samples, 0.0)]));
        let cancel = CancellationToken::new();
        let fetch = Arc::new(fetch);
        tokio::spawn(scrape_loop(
            fetch.clone(),
            dialect,
            origin,
            interval,
            history.clone(),
            cancel.clone(),
        ));
        Ok(Some(Scraper {
            dialect,
            url_display,
            origin,
            history,
            cancel,
            fetch,
            prefix_cache_tokens: dialect.prefix_cache_tokens(&samples),
        }))
    }

    /// One scrape now, besides the regular ones, waiting for it at most `wait`: a level
    /// brackets its window with scrapes so that its counters have two readings to subtract
    /// however short it is. A scrape that takes longer still lands in the history later.
    pub async fn scrape_now(&self, wait: Duration) {
        let task = tokio::spawn(scrape_once(
            self.fetch.clone(),
            self.dialect,
            self.origin,
            self.history.clone(),
        ));
        let _ = tokio::time::timeout(wait, task).await;
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Tokens one engine's prefix cache holds, where the server said.
    pub fn prefix_cache_tokens(&self) -> Option<u64> {
        self.prefix_cache_tokens
    }

    pub fn url_display(&self) -> &str {
        &self.url_display
    }

    /// The scrapes taken between two instants, their times in seconds since `from`.
    pub fn between(&self, from: Instant, to: Instant) -> Vec<ServerSnapshot> {
        let lo = from.saturating_duration_since(self.origin).as_secs_f64();
        let hi = to.saturating_duration_since(self.origin).as_secs_f64();
        let history = self.history.lock().expect("scrape history lock");
        history
            .iter()
            .filter(|s| s.at_s >= lo && s.at_s <= hi)
            .map(|s| ServerSnapshot {
                at_s: s.at_s - lo,
                ..*s
            })
            .collect()
    }
}

struct Fetch {
    http: reqwest::Client,
    url: reqwest::Url,
    access: Access,
}

impl Fetch {
    async fn get(&self) -> Result<String, String> {
        let resp = self
            .access
            .apply(self.http.get(self.url.clone()))
            .send()
            .await
            .map_err(|e| short_error(&e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        read_bounded(resp, MAX_METRICS_BYTES).await
    }
}

/// A `/metrics` page larger than this is refused rather than held: vLLM's is tens of KiB, and
/// the scraper runs beside the measured client for the whole sweep.
const MAX_METRICS_BYTES: usize = 16 << 20;

async fn read_bounded(mut resp: reqwest::Response, limit: usize) -> Result<String, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| short_error(&e))? {
        if body.len() + chunk.len() > limit {
            return Err(format!("metrics page over {} MiB", limit >> 20));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "metrics page is not UTF-8".to_string())
}

/// reqwest's error without the URL (which may carry a query we leave out of output).
fn short_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    match std::error::Error::source(e) {
        Some(src) => format!("{kind}: {src}"),
        None => kind.to_string(),
    }
}

async fn scrape_once(fetch: Arc<Fetch>, dialect: Dialect, origin: Instant, history: Arc<Mutex<Vec<ServerSnapshot>>>) {
    // A failed scrape is a gap, not an error: the level keeps the scrapes it has.
    if let Ok(text) = fetch.get().await {
        let snap = dialect.snapshot(&prom::parse(&text), origin.elapsed().as_secs_f64());
        let mut h = history.lock().expect("scrape history lock");
        // Kept in time order: a bracketing scrape may finish after a regular one.
        let at = h.partition_point(|s| s.at_s <= snap.at_s);
        h.insert(at, snap);
    }
}

async fn scrape_loop(
    fetch: Arc<Fetch>,
    dialect: Dialect,
    origin: Instant,
    interval: Duration,
    history: Arc<Mutex<Vec<ServerSnapshot>>>,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = scrape_once(fetch.clone(), dialect, origin, history.clone()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A one-answer raw-TCP server on 127.0.0.1 sending a `bytes`-long 200 page.
    fn page_server(bytes: usize) -> reqwest::Url {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut head = [0u8; 1024];
            let _ = s.read(&mut head);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-length: {bytes}\r\nconnection: close\r\n\r\n"
            );
            let line = b"vllm:num_requests_running 1\n";
            let mut left = bytes;
            while left > 0 {
                let n = left.min(line.len());
                if s.write_all(&line[..n]).is_err() {
                    return;
                }
                left -= n;
            }
        });
        format!("http://{addr}/metrics").parse().unwrap()
    }

    #[tokio::test]
    async fn a_page_over_the_bound_is_refused_and_one_under_it_read() {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let small = http.get(page_server(10_000)).send().await.unwrap();
        assert_eq!(read_bounded(small, 1 << 20).await.unwrap().len(), 10_000);
        let big = http.get(page_server(3 << 20)).send().await.unwrap();
        assert_eq!(read_bounded(big, 1 << 20).await.unwrap_err(), "metrics page over 1 MiB");
    }
}
