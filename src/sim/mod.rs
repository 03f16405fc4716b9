//! The built-in simulated GPU resource: an OpenAI-compatible server whose throughput and latency
//! follow a continuous-batching model (see [`gpu`]), with a provider-style resource API and
//! injectable faults. It shares only the wire format with [`crate::client`], never code, so it
//! cannot hide a client bug.

pub mod gpu;
mod http;

use crate::secret::Secret;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Everything that shapes the simulated resource.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub gpus: usize,
    pub params: gpu::GpuParams,
    /// Relative spread of each request's service time: a multiplier drawn uniformly from
    /// `[1 - jitter, 1 + jitter]`.
    pub jitter: f64,
    pub seed: u64,
    /// Output tokens when the request body sets no `max_tokens`.
    pub default_max_tokens: u32,
    /// The model `/v1/models` lists and answers name when a request names none.
    pub model: String,
    /// Answer a request naming any other model with vLLM's 404 (`--served-model-name`);
    /// otherwise every name is served, as the simulator stands in for the user's endpoint.
    pub strict_model: bool,
    /// Floats in each `/v1/embeddings` vector.
    pub embedding_dim: usize,
    pub fail_rate: f64,
    pub throttle_rate: f64,
    pub reset_rate: f64,
    /// `Retry-After` sent with 429 answers.
    pub retry_after: Duration,
    pub api_key: Option<Secret>,
    /// Time from `POST /resource {"state":"on"}` until inference answers.
    pub start_delay: Duration,
    /// Start switched off (inference answers 503 until switched on).
    pub start_off: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            gpus: 1,
            params: gpu::GpuParams {
                batch: 8,
                prefill_ms_per_1k: 10.0,
                decode_step_ms: 5.0,
                decode_step_ms_per_seq: 0.05,
            },
            jitter: 0.0,
            seed: 1,
            default_max_tokens: 16,
            model: "sizeup-sim".to_string(),
            strict_model: false,
            embedding_dim: 16,
            fail_rate: 0.0,
            throttle_rate: 0.0,
            reset_rate: 0.0,
            retry_after: Duration::from_secs(1),
            api_key: None,
            start_delay: Duration::ZERO,
            start_off: false,
        }
    }
}

/// Serves on `listener` until `stop` is cancelled. Takes a bound listener so that tests and
/// other commands can use port 0. Must run inside a tokio runtime.
pub async fn serve(listener: TcpListener, config: SimConfig, stop: CancellationToken) -> std::io::Result<()> {
    http::serve(listener, config, stop).await
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
