//! The built-in simulated GPU resource: an OpenAI-compatible server whose throughput and latency
//! follow a continuous-batching model (see [`gpu`]), with a provider-style resource API and
//! injectable faults. It shares only the wire format with [`crate::client`], never code, so it
//! cannot hide a client bug.

mod config;
mod embeddings;
mod faults;
pub mod gpu;
mod inference;
mod limits;
mod metrics;
mod prefix;
mod resource;
mod server;
mod state;

pub use config::SimConfig;

use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves on `listener` until `stop` is cancelled. Takes a bound listener so that tests and
/// other commands can use port 0. Must run inside a tokio runtime.
pub async fn serve(listener: TcpListener, config: SimConfig, stop: CancellationToken) -> std::io::Result<()> {
    server::serve(listener, config, stop).await
}

/// A simulator running inside this process, on a free loopback port.
pub struct SimHandle {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl SimHandle {
    /// Binds `127.0.0.1:0` and serves in the background.
    pub async fn start(config: SimConfig) -> std::io::Result<SimHandle> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, config, stop.clone()));
        Ok(SimHandle { addr, stop, task })
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections and waits for the accept loop to end.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}
