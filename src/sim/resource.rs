//! The resource API and the routes around inference: `GET|POST /resource` (power on/off with
//! its start delay, GPU count), `GET /health` and `GET /v1/models`.

use super::state::{error_response, json_ok, AppState, Power};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::time::Instant;

pub(super) async fn models(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if !s.authorized(&headers) {
        return s.unauthorized();
    }
    let body = json!({"object": "list", "data": [{"id": s.cfg.model, "object": "model", "created": 0, "owned_by": "sizeup-sim"}]});
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// vLLM's `POST /reset_prefix_cache` (served in its dev mode): every GPU's cache emptied.
pub(super) async fn reset_prefix_cache(State(s): State<Arc<AppState>>) -> Response {
    s.cluster.reset_prefix_cache();
    StatusCode::OK.into_response()
}

pub(super) async fn health(State(s): State<Arc<AppState>>) -> Response {
    match s.power() {
        Power::On => ([(header::CONTENT_TYPE, "application/json")], r#"{"status":"ok"}"#).into_response(),
        _ => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "resource is not on",
            "service_unavailable",
        ),
    }
}

fn power_json(s: &AppState) -> Value {
    let state = match s.power() {
        Power::On => "on",
        Power::Off => "off",
        Power::Starting(_) => "starting",
    };
    json!({"state": state, "gpus": s.cluster.active()})
}

pub(super) async fn resource_get(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if !s.authorized(&headers) {
        return s.unauthorized();
    }
    json_ok(&power_json(&s))
}

pub(super) async fn resource_post(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    if !s.authorized(&headers) {
        return s.unauthorized();
    }
    let bad = |msg: &str| error_response(StatusCode::BAD_REQUEST, msg, "invalid_request_error");
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad("body must be JSON like {\"state\":\"on\",\"gpus\":4}");
    };
    // Check the whole request before changing anything: a bad field leaves the resource as it was.
    let gpus = match req.get("gpus").filter(|v| !v.is_null()) {
        None => None,
        Some(g) => match g.as_u64() {
            Some(n @ 1..=1024) => Some(n as usize),
            _ => return bad("gpus must be an integer from 1 to 1024"),
        },
    };
    let state = req.get("state").and_then(Value::as_str);
    if !matches!(state, None | Some("on" | "off")) {
        return bad("state must be \"on\" or \"off\"");
    }
    if let Some(n) = gpus {
        s.cluster.resize(n);
    }
    match state {
        Some("on") => {
            let mut p = s.power.lock().expect("power lock poisoned");
            if matches!(*p, Power::Off) {
                *p = if s.cfg.start_delay.is_zero() {
                    Power::On
                } else {
                    Power::Starting(Instant::now() + s.cfg.start_delay)
                };
            }
        }
        Some("off") => {
            *s.power.lock().expect("power lock poisoned") = Power::Off;
            s.cluster.abort_all();
        }
        _ => {}
    }
    json_ok(&power_json(&s))
}
