//! Which proxy, if any, the environment names for a URL (`HTTP_PROXY`, `HTTPS_PROXY`,
//! `ALL_PROXY`, `NO_PROXY` and their lower-case forms): read by hyper-util's matcher, the one
//! reqwest itself uses, so the plain-http transport (which leaves proxied URLs to reqwest) and
//! the reachability check agree with the requests on every URL, `NO_PROXY` ranges included.

use hyper_util::client::proxy::matcher::Matcher;

/// The proxy requests to `url` go through: its host (brackets kept on an IPv6 literal) and
/// port; None when they go straight to the host. Never its credentials.
pub(super) fn proxy_for(url: &reqwest::Url) -> Option<(String, u16)> {
    let uri: hyper::Uri = url.as_str().parse().ok()?;
    let via = Matcher::from_system().intercept(&uri)?;
    let proxy = via.uri();
    let host = proxy.host()?.to_string();
    let port = proxy.port_u16().unwrap_or(match proxy.scheme_str() {
        Some("https") => 443,
        Some(s) if s.starts_with("socks") => 1080,
        _ => 80,
    });
    Some((host, port))
}
