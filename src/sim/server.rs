//! The simulator's HTTP face: the router over the inference, embeddings, resource and metrics
//! routes, and the accept loop. Connections are served by hyper directly (not `axum::serve`)
//! so that a simulated reset can close a connection without writing any answer.

use super::config::SimConfig;
use super::embeddings::embeddings;
use super::faults::ResetConnection;
use super::inference::{chat, completions, forefront};
use super::metrics::metrics;
use super::resource::{health, models, reset_prefix_cache, resource_get, resource_post};
use super::state::{AppState, ConnDraw};
use axum::body::Body;
use axum::http::Request;
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub(super) async fn serve(listener: TcpListener, cfg: SimConfig, stop: CancellationToken) -> std::io::Result<()> {
    let seed = cfg.seed;
    let state = Arc::new(AppState::new(cfg));
    let mut accepted_count = 0u64;
    let router = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/", post(forefront))
        .route("/v1/forefront", post(forefront))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/reset_prefix_cache", post(reset_prefix_cache))
        .route("/resource", get(resource_get).post(resource_post))
        .with_state(state);

    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors and the like: back off briefly instead of spinning.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let draw = ConnDraw::nth(seed, accepted_count);
        accepted_count += 1;
        let router = router.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                let router = router.clone();
                req.extensions_mut().insert(draw);
                async move {
                    let resp = match router.oneshot(req.map(Body::new)).await {
                        Ok(resp) => resp,
                        Err(never) => match never {},
                    };
                    if resp.extensions().get::<ResetConnection>().is_some() {
                        // An error from the service makes hyper drop the connection unanswered.
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "simulated reset",
                        ));
                    }
                    Ok::<_, std::io::Error>(resp)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}
