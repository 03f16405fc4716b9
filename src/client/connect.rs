//! Opening a TCP connection to a host with several addresses, as hyper's connector and curl
//! do (happy eyeballs, RFC 8305): the addresses are tried in turn, families alternating, and
//! the next one starts when the last has not connected within [`STAGGER`] or has failed, all
//! within one connect timeout. A host whose first address drops SYNs (an IPv6 route that goes
//! nowhere) then costs a quarter second, not the whole timeout. Used by the plain-http
//! transport (`h1/`) and by the reachability check (`reach.rs`).

use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// How long one address has before the next is tried beside it (RFC 8305 recommends 250 ms;
/// hyper waits 300 ms).
pub(super) const STAGGER: Duration = Duration::from_millis(250);

/// Why no connection opened.
#[derive(Debug)]
pub(super) enum ConnectError {
    /// Nothing connected within the limit.
    Timeout(Duration),
    /// Every address failed (or the name did not resolve); the last error.
    Failed(String),
}

/// Resolves `host` (an IP literal without a lookup) and connects to one of its addresses.
pub(super) async fn connect_host(host: &str, port: u16, limit: Duration) -> Result<TcpStream, ConnectError> {
    // An IPv6 literal keeps its brackets in a URL's host.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let work = async {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| ConnectError::Failed(format!("cannot resolve {host}: {e}")))?
            .collect();
        connect_any(&addrs, Duration::MAX).await
    };
    match tokio::time::timeout(limit, work).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Timeout(limit)),
    }
}

/// Connects to the first of `addrs` that accepts, racing them as described above; at most
/// `limit` in all.
pub(super) async fn connect_any(addrs: &[SocketAddr], limit: Duration) -> Result<TcpStream, ConnectError> {
    let work = async {
        if let [one] = addrs {
            // The common case (an IP literal, a host with one address): no task, no timer.
            return TcpStream::connect(*one).await.map_err(|e| failed(*one, &e));
        }
        let order = interleave(addrs);
        let mut next = 0;
        // Dropped on return, which aborts the attempts still under way.
        let mut tries = JoinSet::new();
        let mut last = ConnectError::Failed("the host has no address".into());
        loop {
            if tries.is_empty() {
                let Some(&addr) = order.get(next) else {
                    return Err(last);
                };
                next += 1;
                tries.spawn(async move { (addr, TcpStream::connect(addr).await) });
            }
            tokio::select! {
                Some(done) = tries.join_next() => match done {
                    Ok((_, Ok(stream))) => return Ok(stream),
                    // With no other attempt under way, a failure starts the next at once.
                    Ok((addr, Err(e))) => last = failed(addr, &e),
                    Err(e) => last = ConnectError::Failed(e.to_string()),
                },
                _ = tokio::time::sleep(STAGGER), if next < order.len() => {
                    let addr = order[next];
                    next += 1;
                    tries.spawn(async move { (addr, TcpStream::connect(addr).await) });
                }
            }
        }
    };
    if limit == Duration::MAX {
        return work.await;
    }
    match tokio::time::timeout(limit, work).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Timeout(limit)),
    }
}

fn failed(addr: SocketAddr, e: &std::io::Error) -> ConnectError {
    ConnectError::Failed(format!("error connecting to {addr}: {e}"))
}

/// The addresses in the order they are tried: the resolver's first, then the families
/// alternating (RFC 8305, 4), each family in the resolver's order.
fn interleave(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else {
        return Vec::new();
    };
    let (mut same, mut other): (Vec<_>, Vec<_>) = addrs.iter().copied().partition(|a| a.is_ipv6() == first.is_ipv6());
    same.reverse();
    other.reverse();
    let mut out = Vec::with_capacity(addrs.len());
    while !same.is_empty() || !other.is_empty() {
        out.extend(same.pop());
        out.extend(other.pop());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpSocket};

    /// A loopback address whose SYNs go unanswered, as on a route that drops them: a listener
    /// that never accepts, its queue filled. Kept alive by the returned sockets.
    async fn black_hole() -> (SocketAddr, Vec<TcpStream>, tokio::net::TcpListener) {
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = sock.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut fillers = Vec::new();
        // Linux queues backlog + 1 connections; the rest of the SYNs are dropped.
        for _ in 0..4 {
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
                fillers.push(s);
            }
        }
        (addr, fillers, listener)
    }

    async fn served() -> (SocketAddr, TcpListener) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        (l.local_addr().unwrap(), l)
    }

    #[tokio::test]
    async fn an_address_that_never_answers_gives_way_to_the_next() {
        let (hole, _fill, _l) = black_hole().await;
        // The black hole really holds a connect (else this test proves nothing).
        let held = tokio::time::timeout(Duration::from_millis(600), TcpStream::connect(hole)).await;
        assert!(held.is_err(), "the black hole accepted: {held:?}");
        let (good, listener) = served().await;
        let s = connect_any(&[hole, good], Duration::from_secs(20)).await.unwrap();
        assert_eq!(s.peer_addr().unwrap(), good);
        drop(listener);
    }

    #[tokio::test]
    async fn a_refused_address_gives_way_at_once_and_all_failing_is_one_error() {
        let refused = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let (good, _listener) = served().await;
        let s = connect_any(&[refused, good], Duration::from_secs(20)).await.unwrap();
        assert_eq!(s.peer_addr().unwrap(), good);
        let e = connect_any(&[refused, refused], Duration::from_secs(20))
            .await
            .unwrap_err();
        assert!(
            matches!(e, ConnectError::Failed(ref m) if m.contains("error connecting")),
            "{e:?}"
        );
        let (hole, _fill, _l) = black_hole().await;
        let e = connect_any(&[hole, hole], Duration::from_millis(800))
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectError::Timeout(_)), "{e:?}");
    }

    #[test]
    fn families_alternate_from_the_first() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let got = interleave(&[a("[::1]:1"), a("[::2]:1"), a("10.0.0.1:1"), a("10.0.0.2:1")]);
        assert_eq!(got, [a("[::1]:1"), a("10.0.0.1:1"), a("[::2]:1"), a("10.0.0.2:1")]);
        assert!(interleave(&[]).is_empty());
    }
}
