//! The idle kept-alive connections of one endpoint. A connection idle longer than the bound
//! is not used again: middleboxes (NAT gateways, load balancers) forget flows idle for a few
//! minutes without telling either end, and a request sent on such a connection waits for its
//! whole timeout. hyper retires them the same way (reqwest's `pool_idle_timeout`).

use super::conn::Conn;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(crate) struct Pool {
    /// Most recently returned last: each one below has been idle at least as long.
    idle: Mutex<Vec<Conn>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    pub(super) fn new(max_idle: usize, idle_timeout: Duration) -> Pool {
        Pool {
            idle: Mutex::new(Vec::with_capacity(max_idle.min(4096))),
            max_idle: max_idle.max(1),
            idle_timeout,
        }
    }

    /// The connection idle the shortest time, if it is still open and within the bound.
    pub(super) fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().expect("idle connections lock");
        while let Some(c) = idle.pop() {
            if c.idle_since.elapsed() > self.idle_timeout {
                // The ones below were returned earlier: past the bound too. Closed once the
                // lock is let go.
                let stale = std::mem::take(&mut *idle);
                drop(idle);
                drop((c, stale));
                return None;
            }
            if c.still_open() {
                return Some(c);
            }
        }
        None
    }

    pub(super) fn release(&self, mut conn: Conn) {
        conn.idle_since = Instant::now();
        let mut idle = self.idle.lock().expect("idle connections lock");
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }
}
