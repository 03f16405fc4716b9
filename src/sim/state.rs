//! The server's shared state: the configuration, the GPU cluster, the outcome counters, the
//! power state (on, off, starting) and the in-flight count, with the checks and the error shape
//! every route shares (auth, power, JSON body, model name). Every other part of the server
//! reads it; it uses none of them.

use super::config::SimConfig;
use super::gpu::{Cluster, Gauges};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

#[derive(Clone, Copy, Debug)]
pub(super) enum Power {
    On,
    Off,
    Starting(Instant),
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) ok: AtomicU64,
    pub(super) failed_500: AtomicU64,
    pub(super) throttled_429: AtomicU64,
    pub(super) reset: AtomicU64,
    pub(super) unauthorized_401: AtomicU64,
    pub(super) unavailable_503: AtomicU64,
    pub(super) bad_request_400: AtomicU64,
    pub(super) not_found_404: AtomicU64,
    pub(super) aborted: AtomicU64,
    pub(super) prompt_tokens: AtomicU64,
}

pub(super) struct AppState {
    pub(super) cfg: SimConfig,
    pub(super) cluster: Cluster,
    pub(super) gauges: Arc<Gauges>,
    pub(super) counters: Counters,
    pub(super) power: Mutex<Power>,
    /// Inference requests that passed auth and power checks, in arrival order: the index that
    /// seeds each request's faults and jitter, so a seed replays the same sequence.
    pub(super) arrivals: AtomicU64,
    pub(super) in_flight: AtomicUsize,
    pub(super) in_flight_max: AtomicUsize,
    /// `--rpm-limit`/`--tpm-limit`: the hosted API's limits.
    pub(super) limits: Option<super::limits::Limits>,
}

/// The random draw of the connection a request came on, put in each request's extensions by the
/// accept loop: what pins a connection to one GPU under the connection router.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ConnDraw(pub(super) u64);

impl ConnDraw {
    /// The draw of the `index`-th accepted connection: seeded, so a seed replays the same pins.
    pub(super) fn nth(seed: u64, index: u64) -> ConnDraw {
        ConnDraw(crate::hash::mix64(
            seed.wrapping_mul(crate::hash::GOLDEN) ^ crate::hash::splitmix64(index),
        ))
    }
}

/// Counts an inference request as in flight for as long as it lives (also inside a stream body).
pub(super) struct InFlight(pub(super) Arc<AppState>);

impl InFlight {
    pub(super) fn new(s: &Arc<AppState>) -> InFlight {
        let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        s.in_flight_max.fetch_max(now, Ordering::SeqCst);
        InFlight(s.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(super) fn json_ok(v: &Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

pub(super) fn error_response(status: StatusCode, message: &str, kind: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "code": status.as_u16()}});
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// vLLM's answer to an unknown model (`OpenAIServing._check_model`): the flat `ErrorResponse`
/// shape, not OpenAI's `{"error": {...}}`, so clients see what a real vLLM server sends.
fn model_not_found(model: &str) -> Response {
    let body = json!({"object": "error", "message": format!("The model `{model}` does not exist."),
        "type": "NotFoundError", "param": null, "code": 404});
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

impl AppState {
    /// Starts the cluster's GPUs (inside a tokio runtime) and the server's state from the config.
    pub(super) fn new(cfg: SimConfig) -> AppState {
        let gauges = Arc::new(Gauges::default());
        let cluster = Cluster::new(cfg.params, cfg.route, cfg.gpus, gauges.clone());
        let power = if cfg.start_off { Power::Off } else { Power::On };
        let limits = super::limits::Limits::new(cfg.rpm_limit, cfg.tpm_limit);
        AppState {
            cfg,
            cluster,
            gauges,
            counters: Counters::default(),
            power: Mutex::new(power),
            arrivals: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            in_flight_max: AtomicUsize::new(0),
            limits,
        }
    }

    pub(super) fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(key) = &self.cfg.api_key else { return true };
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            // The auth scheme is case-insensitive (RFC 7235); the credentials are not.
            .and_then(|v| {
                v.split_once(' ')
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            })
            .is_some_and(|(_, given)| given == key.expose())
    }

    pub(super) fn unauthorized(&self) -> Response {
        self.counters.unauthorized_401.fetch_add(1, Ordering::Relaxed);
        error_response(
            StatusCode::UNAUTHORIZED,
            "invalid or missing API key",
            "invalid_request_error",
        )
    }

    /// The power state now; a finished start-up turns into `On`.
    pub(super) fn power(&self) -> Power {
        let mut p = self.power.lock().expect("power lock poisoned");
        if let Power::Starting(until) = *p {
            if Instant::now() >= until {
                *p = Power::On;
            }
        }
        *p
    }

    pub(super) fn bad_request(&self, message: &str) -> Response {
        self.counters.bad_request_400.fetch_add(1, Ordering::Relaxed);
        error_response(StatusCode::BAD_REQUEST, message, "invalid_request_error")
    }

    /// Auth, power and a JSON object body: the checks every inference route makes first.
    /// Each check below answers `Err` with the response to send (boxed: it is large).
    pub(super) fn request(&self, headers: &HeaderMap, body: &[u8]) -> Result<Value, Box<Response>> {
        if !self.authorized(headers) {
            return Err(Box::new(self.unauthorized()));
        }
        if let Some(resp) = self.unavailable() {
            return Err(Box::new(resp));
        }
        match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(_) => Err(Box::new(self.bad_request("request body must be a JSON object"))),
            Err(e) => Err(Box::new(self.bad_request(&format!("invalid JSON body: {e}")))),
        }
    }

    /// The model name the answer carries: the one the request names, else the configured one.
    /// When strict (`--served-model-name`), any other name gets vLLM's 404.
    pub(super) fn model_for(&self, req: &Value) -> Result<String, Box<Response>> {
        match req.get("model").and_then(Value::as_str) {
            None => Ok(self.cfg.model.clone()),
            Some(m) if !self.cfg.strict_model || m == self.cfg.model => Ok(m.to_string()),
            Some(m) => {
                self.counters.not_found_404.fetch_add(1, Ordering::Relaxed);
                Err(Box::new(model_not_found(m)))
            }
        }
    }

    pub(super) fn no_gpu(&self) -> Response {
        self.counters.unavailable_503.fetch_add(1, Ordering::Relaxed);
        error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "no GPU is active",
            "service_unavailable",
        )
    }

    pub(super) fn aborted(&self) -> Response {
        self.counters.aborted.fetch_add(1, Ordering::Relaxed);
        error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "resource switched off during the request",
            "service_unavailable",
        )
    }

    fn unavailable(&self) -> Option<Response> {
        let (message, retry) = match self.power() {
            Power::On => return None,
            Power::Off => ("resource is off", 1),
            Power::Starting(until) => (
                "resource is starting",
                until.saturating_duration_since(Instant::now()).as_secs() + 1,
            ),
        };
        self.counters.unavailable_503.fetch_add(1, Ordering::Relaxed);
        let mut resp = error_response(StatusCode::SERVICE_UNAVAILABLE, message, "service_unavailable");
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry));
        Some(resp)
    }
}
