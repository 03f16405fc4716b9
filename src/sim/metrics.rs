//! `GET /metrics`: the server's counters and gauges as Prometheus text, under sizeup's own
//! names and under vLLM's, so `--server-metrics` can read the simulator like a vLLM server.

use super::gpu::KV_TOKENS_PER_SLOT;
use super::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub(super) async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    use std::fmt::Write;
    let c = &s.counters;
    let g = &s.gauges;
    let mut out = String::new();
    let _ = writeln!(out, "# HELP sizeup_sim_requests_total Inference requests by outcome.");
    let _ = writeln!(out, "# TYPE sizeup_sim_requests_total counter");
    for (outcome, v) in [
        ("ok", &c.ok),
        ("error_500", &c.failed_500),
        ("throttled_429", &c.throttled_429),
        ("reset", &c.reset),
        ("unauthorized_401", &c.unauthorized_401),
        ("unavailable_503", &c.unavailable_503),
        ("bad_request_400", &c.bad_request_400),
        ("not_found_404", &c.not_found_404),
        ("aborted", &c.aborted),
    ] {
        let _ = writeln!(
            out,
            "sizeup_sim_requests_total{{outcome=\"{outcome}\"}} {}",
            v.load(Ordering::Relaxed)
        );
    }
    let gauges: [(&str, &str, u64); 6] = [
        (
            "sizeup_sim_requests_running",
            "Sequences decoding now, all GPUs.",
            g.running.load(Ordering::SeqCst) as u64,
        ),
        (
            "sizeup_sim_requests_waiting",
            "Requests queued for a free slot, all GPUs.",
            g.waiting.load(Ordering::SeqCst) as u64,
        ),
        (
            "sizeup_sim_requests_in_flight",
            "Inference requests being answered now.",
            s.in_flight.load(Ordering::SeqCst) as u64,
        ),
        (
            "sizeup_sim_requests_in_flight_max",
            "Most inference requests answered at once since start.",
            s.in_flight_max.load(Ordering::SeqCst) as u64,
        ),
        ("sizeup_sim_gpus", "GPUs taking new work.", s.cluster.active() as u64),
        (
            "sizeup_sim_batch_size",
            "Sequences one GPU decodes at once.",
            s.cfg.params.batch as u64,
        ),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
    for (name, help, v) in [
        (
            "sizeup_sim_prompt_tokens_total",
            "Prompt tokens admitted.",
            c.prompt_tokens.load(Ordering::Relaxed),
        ),
        (
            "sizeup_sim_generation_tokens_total",
            "Tokens generated.",
            g.generation_tokens.load(Ordering::Relaxed),
        ),
        (
            "sizeup_sim_cancelled_total",
            "Sequences dropped because the client went away.",
            g.cancelled.load(Ordering::Relaxed),
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    }
    vllm_metrics(&mut out, &s);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The same state under vLLM's names (v1 engine, `vllm/v1/metrics/loggers.py`), so the
/// simulator is a vLLM-shaped target for `--server-metrics`. KV cache usage is modelled as
/// the running sequences' tokens (prompt + max_tokens) over `KV_TOKENS_PER_SLOT` per slot;
/// the simulator never preempts.
fn vllm_metrics(out: &mut String, s: &AppState) {
    use std::fmt::Write;
    let g = &s.gauges;
    let running = g.running.load(Ordering::SeqCst) as u64;
    let kv_capacity = (s.cluster.active() * s.cfg.params.batch).max(1) as f64 * KV_TOKENS_PER_SLOT as f64;
    let labels = format!(
        "{{model_name=\"{}\"}}",
        s.cfg.model.replace('\\', "\\\\").replace('"', "\\\"")
    );
    let gauges = [
        (
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            running as f64,
        ),
        (
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            g.waiting.load(Ordering::SeqCst) as f64,
        ),
        (
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            (g.kv_tokens.load(Ordering::SeqCst) as f64 / kv_capacity).min(1.0),
        ),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{labels} {v}");
    }
    let counters = [
        (
            "vllm:num_preemptions",
            "Cumulative number of preemption from the engine.",
            0,
        ),
        (
            "vllm:prompt_tokens",
            "Number of prefill tokens processed.",
            s.counters.prompt_tokens.load(Ordering::Relaxed),
        ),
        (
            "vllm:generation_tokens",
            "Number of generation tokens processed.",
            g.generation_tokens.load(Ordering::Relaxed),
        ),
        (
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            g.prefix_queries.load(Ordering::Relaxed),
        ),
        (
            "vllm:prefix_cache_hits",
            "Prefix cache hits, in terms of number of cached tokens.",
            g.prefix_hits.load(Ordering::Relaxed),
        ),
    ];
    if s.cfg.params.prefix_cache_tokens > 0 {
        // As vLLM describes its cache: one GPU's pool in blocks of 16.
        let block = super::prefix::BLOCK;
        let _ = writeln!(
            out,
            "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n# TYPE vllm:cache_config_info gauge\nvllm:cache_config_info{{block_size=\"{block}\",enable_prefix_caching=\"True\",num_gpu_blocks=\"{}\"}} 1.0",
            s.cfg.params.prefix_cache_tokens / block as u64
        );
    }
    for (name, help, v) in counters {
        let _ = writeln!(
            out,
            "# HELP {name}_total {help}\n# TYPE {name} counter\n{name}_total{labels} {v}"
        );
    }
}
