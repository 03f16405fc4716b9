//! Flags become typed settings here, once: every `cli` struct a command receives is checked
//! (with errors that name the flag) and turned into the settings type of the library module
//! that uses it. Nothing below `commands` sees clap.

use crate::api::Api;
use crate::cli::{
    EndpointArgs, EstimateChoice, MeasureArgs, ObjectiveChoice, PlanTuning, ResourceKind, RouterChoice, RunTuning,
    SimModelArgs, SloArgs, WorkloadArgs,
};
use crate::job::Tuning;
use crate::measure::{parse_levels, Settings, WorkloadSpec};
use crate::model::{Estimate, Objective, Slo};
use crate::planner::Sizing;
use crate::resource::ResourceSpec;
use crate::sim::{
    gpu::{GpuParams, RoutePolicy},
    SimConfig,
};
use crate::target::Endpoint;
use crate::ui::usage_error;

/// The endpoint flags, with the API the command settled (`super::resolve_api`).
pub fn endpoint(e: &EndpointArgs, api: Api) -> Endpoint {
    Endpoint {
        url: e.endpoint.clone(),
        api,
        model: e.model.clone(),
        timeout: e.timeout,
        first_byte_timeout: e.first_byte_timeout,
        connect_timeout: e.connect_timeout,
        pool_idle_timeout: e.pool_idle_timeout,
        max_tokens_field: e.max_tokens_field,
        stop_after_failures: e.stop_after_failures,
        server_metrics: e.server_metrics.clone(),
        scrape_interval: e.scrape_interval,
        headers: e.headers.clone(),
        cacert: e.cacert.clone(),
    }
}

/// The simulated resource, checked only when it will run (no `--endpoint`).
pub fn sim_for(e: &EndpointArgs, a: &SimModelArgs, gpus: u32) -> anyhow::Result<SimConfig> {
    match e.endpoint {
        Some(_) => Ok(SimConfig::default()),
        None => sim(a, gpus),
    }
}

/// Validates the simulated resource's flags into a [`SimConfig`].
pub fn sim(a: &SimModelArgs, gpus: u32) -> anyhow::Result<SimConfig> {
    let finite_nonneg = |v: f64, flag: &str| -> anyhow::Result<()> {
        if v.is_finite() && v >= 0.0 {
            Ok(())
        } else {
            Err(usage_error(format!("{flag} must be a number >= 0, got {v}"), None))
        }
    };
    finite_nonneg(a.prefill_ms_per_1k, "--prefill-ms-per-1k")?;
    finite_nonneg(a.decode_step_ms, "--decode-step-ms")?;
    finite_nonneg(a.decode_step_ms_per_seq, "--decode-step-ms-per-seq")?;
    if a.decode_step_ms + a.decode_step_ms_per_seq <= 0.0 {
        return Err(usage_error(
            "--decode-step-ms and --decode-step-ms-per-seq are both 0: the simulated GPU would be infinitely fast",
            Some("give --decode-step-ms a positive value, e.g. 5".into()),
        ));
    }
    if !(0.0..1.0).contains(&a.jitter) {
        return Err(usage_error(
            format!("--jitter must be in [0, 1), got {}", a.jitter),
            None,
        ));
    }
    for (v, flag) in [
        (a.fail_rate, "--fail-rate"),
        (a.throttle_rate, "--throttle-rate"),
        (a.reset_rate, "--reset-rate"),
    ] {
        if !(0.0..=1.0).contains(&v) {
            return Err(usage_error(format!("{flag} must be in [0, 1], got {v}"), None));
        }
    }
    if a.fail_rate + a.throttle_rate + a.reset_rate > 1.0 + 1e-9 {
        return Err(usage_error(
            "--fail-rate + --throttle-rate + --reset-rate must not exceed 1",
            None,
        ));
    }
    if a.batch == 0 || gpus == 0 {
        return Err(usage_error("--batch and --gpus must be at least 1", None));
    }
    if a.default_max_tokens == 0 {
        return Err(usage_error("--default-max-tokens must be at least 1", None));
    }
    if !(1..=65_536).contains(&a.embedding_dim) {
        return Err(usage_error(
            format!("--embedding-dim must be from 1 to 65536, got {}", a.embedding_dim),
            None,
        ));
    }
    Ok(SimConfig {
        gpus: gpus as usize,
        params: GpuParams {
            batch: a.batch as usize,
            prefill_ms_per_1k: a.prefill_ms_per_1k,
            decode_step_ms: a.decode_step_ms,
            decode_step_ms_per_seq: a.decode_step_ms_per_seq,
            prefix_cache_tokens: a.prefix_cache_tokens,
        },
        jitter: a.jitter,
        seed: a.seed,
        default_max_tokens: a.default_max_tokens,
        fail_rate: a.fail_rate,
        throttle_rate: a.throttle_rate,
        reset_rate: a.reset_rate,
        retry_after: a.retry_after,
        rpm_limit: a.rpm_limit,
        tpm_limit: a.tpm_limit,
        start_delay: a.start_delay,
        embedding_dim: a.embedding_dim as usize,
        route: match a.router {
            RouterChoice::LeastLoaded => RoutePolicy::LeastLoaded,
            RouterChoice::RoundRobin => RoutePolicy::RoundRobin,
            RouterChoice::Connection => RoutePolicy::Connection,
        },
        ..SimConfig::default()
    })
}

/// The SLO flags, checked once for every command.
pub fn slo(a: &SloArgs) -> anyhow::Result<Slo> {
    let slo = Slo {
        max_latency_p95_ms: a.max_latency_p95_ms,
        max_ttft_p95_ms: a.max_ttft_p95_ms,
        max_error_rate: a.max_error_rate,
    };
    slo.validate().map_err(|m| usage_error(m, None))?;
    Ok(slo)
}

/// How each level is measured.
pub fn measure(m: &MeasureArgs, slo_args: &SloArgs, gpus: u32, e: &Endpoint) -> anyhow::Result<Settings> {
    if gpus == 0 {
        return Err(usage_error("--gpus must be at least 1", None));
    }
    if !(m.ci_width.is_finite() && m.ci_width > 0.0 && m.ci_width < 1.0) {
        return Err(usage_error(
            format!("--ci-width must be in (0, 1), got {}", m.ci_width),
            None,
        ));
    }
    if m.max_duration.is_zero() {
        return Err(usage_error("--max-duration must be longer than 0s", None));
    }
    Ok(Settings {
        gpus,
        levels: parse_levels(&m.concurrency, m.max_concurrency)?,
        warmup: m.warmup,
        ci_width: m.ci_width,
        min_requests: m.min_requests,
        max_duration: m.max_duration,
        slo: slo(slo_args)?,
        api: e.api,
        stop_after_failures: e.stop_after_failures,
        server_metrics: e.server_metrics.clone(),
        scrape_interval: e.scrape_interval,
        name: None,
        gpu_hour_cost: None,
        reset_prefix_cache: m.reset_prefix_cache,
    })
}

pub fn workload(w: &WorkloadArgs) -> WorkloadSpec {
    WorkloadSpec {
        input: w.input.clone(),
        format: w.format,
        sample: w.sample,
        prompt_tokens: w.prompt_tokens,
        max_tokens: w.max_tokens,
        cache_bust: w.cache_bust,
    }
}

/// How a batch is sent, and how its resource is switched.
pub fn run_tuning(t: &RunTuning) -> anyhow::Result<(Tuning, ResourceSpec)> {
    if let Some(r) = t.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err(usage_error(
                format!("--rate must be a positive number of requests per minute, got {r}"),
                None,
            ));
        }
    }
    if let Some(r) = t.max_tokens_per_minute {
        if !(r.is_finite() && r >= 1.0) {
            return Err(usage_error(
                format!("--max-tokens-per-minute must be a number of tokens per minute of at least 1, got {r}"),
                None,
            ));
        }
    }
    if t.completion_window.is_some_and(|w| w.is_zero()) {
        return Err(usage_error(
            "--completion-window must be longer than 0 (e.g. 24h)",
            None,
        ));
    }
    if t.max_tokens == Some(0) {
        return Err(usage_error("--max-tokens must be at least 1", None));
    }
    let tuning = Tuning {
        rate: t.rate,
        tokens_per_minute: t.max_tokens_per_minute,
        completion_window: t.completion_window.map(|w| (w, tokio::time::Instant::now() + w)),
        retries: t.retries,
        retry_base: t.retry_base,
        retry_max: t.retry_max,
        skip_invalid: t.skip_invalid,
        max_tokens: t.max_tokens,
        hold_rate: t.hold_rate,
    };
    let resource = ResourceSpec {
        sim_api: matches!(t.resource, Some(ResourceKind::Sim)),
        on: t.resource_on.clone(),
        off: t.resource_off.clone(),
        ready_url: t.ready_url.clone(),
        ready_timeout: t.ready_timeout,
    };
    Ok((tuning, resource))
}

/// The sizing knobs `plan` and `auto` share (the planner checks their ranges).
pub fn sizing(t: &PlanTuning) -> Sizing {
    Sizing {
        headroom: t.headroom,
        estimate: match t.estimate {
            EstimateChoice::Low => Estimate::Low,
            EstimateChoice::Mean => Estimate::Mean,
        },
        max_gpus: t.max_gpus,
        gpu_hour_cost: t.gpu_hour_cost,
        startup_s: t.startup_s,
        token_prices: crate::planner::TokenPrices {
            input: t.price_per_1m_input_tokens,
            output: t.price_per_1m_output_tokens,
        },
    }
}

pub fn objective(o: ObjectiveChoice) -> Objective {
    match o {
        ObjectiveChoice::Cost => Objective::Cost,
        ObjectiveChoice::Time => Objective::Time,
    }
}
