//! How a person or a scheduler stops a window: Ctrl-C (SIGINT) or SIGTERM, which `scancel`,
//! a Kubernetes eviction and `docker stop` send. The first drains (nothing new starts, the
//! requests in flight finish) for at most the drain timeout, then abandons what is still in
//! flight; a second signal abandons at once. Which signal came decides the exit code (130 or
//! 143), read by `lib.rs` from `Stop::terminated` (`watch_signals` in `mod.rs`).

/// Which stop signal arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
}

/// Waits for the next Ctrl-C or SIGTERM; None when no signal can be watched at all.
pub struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Starts listening (from here on, SIGTERM no longer kills the process outright).
    pub fn new() -> Signals {
        Signals {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
        }
    }

    pub async fn next(&mut self) -> Option<Signal> {
        #[cfg(unix)]
        let term = async {
            match self.term.as_mut() {
                Some(t) => t.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<Option<()>>();
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.ok().map(|_| Signal::Interrupt),
            r = term => r.map(|_| Signal::Terminate),
        }
    }
}

impl Default for Signals {
    fn default() -> Self {
        Signals::new()
    }
}
