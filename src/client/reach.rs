//! The pre-flight check that something answers at the endpoint, before any request is built:
//! it connects where the requests will connect, the proxy the environment names for the URL
//! (see `proxy.rs`) or else the host, trying each of its addresses as the transports do
//! (`connect.rs`). A TCP connection only: nothing is sent.

use super::connect::{connect_host, ConnectError};
use super::proxy::proxy_for;
use std::time::Duration;

/// Why the endpoint (or its proxy) could not be reached. The command words it.
#[derive(Debug)]
pub enum Unreachable {
    /// Nothing connected within the limit.
    Timeout { proxy: Option<String> },
    /// Every address refused, or the name did not resolve.
    Failed { proxy: Option<String>, message: String },
}

impl Unreachable {
    /// `host:port` of the proxy the check went through, if one applies to the URL.
    pub fn proxy(&self) -> Option<&str> {
        match self {
            Unreachable::Timeout { proxy } | Unreachable::Failed { proxy, .. } => proxy.as_deref(),
        }
    }
}

/// Connects, within `limit`, where requests to `url` connect first.
pub async fn reach(url: &reqwest::Url, limit: Duration) -> Result<(), Unreachable> {
    let (host, port, proxy) = match proxy_for(url) {
        Some((h, p)) => {
            let shown = format!("{h}:{p}");
            (h, p, Some(shown))
        }
        None => {
            let (Some(h), Some(p)) = (url.host_str(), url.port_or_known_default()) else {
                return Ok(());
            };
            (h.to_string(), p, None)
        }
    };
    match connect_host(&host, port, limit).await {
        Ok(_) => Ok(()),
        Err(ConnectError::Timeout(_)) => Err(Unreachable::Timeout { proxy }),
        Err(ConnectError::Failed(message)) => Err(Unreachable::Failed { proxy, message }),
    }
}

/// For an `https://` endpoint, one request to the host root, so a certificate this machine
/// does not trust is named before any job request is built; any answer, 404 included, passes.
/// Only a refused certificate is an error: the requests themselves report anything else.
pub async fn check_tls(url: &reqwest::Url, access: &super::Access, limit: Duration) -> Result<(), String> {
    if url.scheme() != "https" {
        return Ok(());
    }
    // Only the certificate is asked about: no key or header goes to the host's root.
    match super::send::side_request(url.as_str(), reqwest::Method::HEAD, "", (access, false), limit).await {
        Err(super::send::SideError::Transport(f)) if f.message.starts_with(super::transport::CERT_REFUSED) => {
            Err(f.message)
        }
        _ => Ok(()),
    }
}
