//! One level's statistics from its finished requests: RPM with its confidence interval,
//! latency percentiles, token rates, error rate and the client's self-check.

use super::ci::{closed_loop_floor, rate_ci};
use super::latency::{tpot_ms, Hist, LatencySet};
use crate::model::{CapacityModel, LevelRow, RequestRow};

/// Fewer successful requests than this in a level's window give no RPM (empty fields).
pub const MIN_OK: usize = 5;

/// One finished request of a level, times in seconds from the level's start.
#[derive(Clone, Debug)]
pub struct Sample {
    pub start: f64,
    pub end: f64,
    /// The engine's delay between a slot freeing and this request starting.
    pub sched_delay: f64,
    /// Time to first token in ms (streamed answers only).
    pub ttft_ms: Option<f64>,
    /// The input line was sent before in this sweep (the sample was used up).
    pub repeated: bool,
    /// The share of its prompt the sweep's earlier requests explain (see `measure::cache`).
    pub explained: Option<f64>,
    pub result: SampleResult,
}

#[derive(Clone, Debug)]
pub enum SampleResult {
    Ok {
        prompt_tokens: Option<u64>,
        completion_tokens: u64,
        /// No `usage` came back: the token count is an estimate.
        estimated: bool,
        /// Prompt tokens the server's prefix cache served, when the answer says.
        cached_tokens: Option<u64>,
    },
    /// `label`: the status column (an HTTP code or a transport failure's word).
    Failed { label: String, message: String },
}

impl Sample {
    pub fn is_ok(&self) -> bool {
        matches!(self.result, SampleResult::Ok { .. })
    }
}

/// The level row, one request row per measured request, and whether token counts are estimates.
/// `w`: end of the warm-up; `end`: end of the level; `offset_ms`: the level's start within the
/// sweep (for the requests' `start_ms`).
pub fn summarize_level(
    c: u32,
    gpus: u32,
    recs: &[Sample],
    w: f64,
    end: f64,
    offset_ms: f64,
) -> (LevelRow, Vec<RequestRow>, bool) {
    let rate = window_rate(c, recs, w, end);
    let tokens = window_tokens(recs, w, end);
    let m = measure(c, recs, w, offset_ms);
    let row = level_row(c, gpus, &rate, &tokens, &m);
    (row, m.rows, m.estimated)
}

/// The level's window and what ended inside it: the RPM and its interval.
struct WindowRate {
    /// Seconds from the end of the warm-up to the end of the level (never 0: it divides).
    window: f64,
    ok: u64,
    failed: u64,
    rpm: f64,
    low: f64,
    high: f64,
}

/// Counts the requests that ended inside `[w, end)` and turns the successful ones into an RPM
/// with its confidence interval.
fn window_rate(c: u32, recs: &[Sample], w: f64, end: f64) -> WindowRate {
    let window = (end - w).max(f64::MIN_POSITIVE);
    let ok_ends: Vec<f64> = recs
        .iter()
        .filter(|r| r.is_ok() && r.end >= w && r.end < end)
        .map(|r| r.end)
        .collect();
    let failed = recs.iter().filter(|r| !r.is_ok() && r.end >= w && r.end < end).count() as u64;
    let est = rate_ci(&ok_ends, w, end, 0.95);
    let rpm = if ok_ends.len() >= MIN_OK {
        ok_ends.len() as f64 / window * 60.0
    } else {
        // Too few to be a rate: empty cells, not a misleading 0 or a rate from 2 requests.
        f64::NAN
    };
    let (low, high) = match est {
        _ if rpm.is_nan() => (f64::NAN, f64::NAN),
        Some(e) => {
            let half = e.ci.half_width.max(rpm * closed_loop_floor(c, ok_ends.len()));
            ((rpm - half).max(0.0), rpm + half)
        }
        None => (0.0, rpm * 2.0),
    };
    WindowRate {
        window,
        ok: ok_ends.len() as u64,
        failed,
        rpm,
        low,
        high,
    }
}

/// Tokens of the successful requests that ended inside the window.
struct WindowTokens {
    completion: u64,
    /// `None` when no answer in the window reported its prompt's tokens.
    prompt: Option<u64>,
    /// `None` when no answer in the window reported its cached prompt tokens.
    cached: Option<u64>,
}

/// Sums the tokens of the answers that ended inside `[w, end)`, whenever they started: the
/// token rates are over the same window as the RPM.
fn window_tokens(recs: &[Sample], w: f64, end: f64) -> WindowTokens {
    let mut tokens_in_window = 0u64;
    let (mut prompt_in_window, mut prompt_known) = (0u64, false);
    let mut cached: Option<u64> = None;
    for r in recs {
        if let SampleResult::Ok {
            completion_tokens,
            prompt_tokens,
            cached_tokens,
            ..
        } = r.result
        {
            if r.end >= w && r.end < end {
                tokens_in_window += completion_tokens;
                if let Some(p) = prompt_tokens {
                    prompt_in_window += p;
                    prompt_known = true;
                }
                if let Some(c) = cached_tokens {
                    *cached.get_or_insert(0) += c;
                }
            }
        }
    }
    WindowTokens {
        completion: tokens_in_window,
        prompt: prompt_known.then_some(prompt_in_window),
        cached,
    }
}

/// What the requests that started after the warm-up measured.
#[derive(Default)]
struct Measured {
    lat: LatencySet,
    estimated: bool,
    /// Sums over the measured requests, for the client self-check.
    sched: f64,
    latency_sum: f64,
    measured: usize,
    repeated: u64,
    /// Answers of 429.
    rate_limited: u64,
    /// (prompt tokens not served by a prefix cache, output tokens, latency ms) of answers with
    /// real token counts.
    fit_points: Vec<super::fit::FitPoint>,
    /// Some answer reported its cached prompt tokens.
    cached_known: bool,
    /// Answers that said what was cached, and those of them served from blocks the sweep
    /// never sent.
    cached_answers: u64,
    warm: u64,
    rows: Vec<RequestRow>,
}

/// Records every request that started after the warm-up `w`: its latencies, its figures for
/// the self-check and the capacity fit, and its requests.csv row.
fn measure(c: u32, recs: &[Sample], w: f64, offset_ms: f64) -> Measured {
    let mut m = Measured::default();
    for r in recs {
        if r.start < w {
            continue;
        }
        m.measured += 1;
        m.repeated += u64::from(r.repeated);
        m.sched += r.sched_delay;
        m.latency_sum += r.end - r.start;
        let e2e_ms = (r.end - r.start) * 1000.0;
        let ttft_ms = r.ttft_ms;
        let (status, error, prompt_tokens, output_tokens) = match &r.result {
            SampleResult::Ok {
                prompt_tokens,
                completion_tokens,
                estimated: est,
                cached_tokens,
            } => {
                m.estimated |= *est;
                if let (Some(p), false) = (prompt_tokens, *est) {
                    // Where the answers say what a prefix cache served, the model prices the
                    // rest: a hit and a miss of one length cost apart.
                    let uncached = p.saturating_sub(cached_tokens.unwrap_or(0));
                    m.cached_known |= cached_tokens.is_some();
                    if let (Some(c), Some(e)) = (cached_tokens, r.explained) {
                        m.cached_answers += 1;
                        m.warm += u64::from(super::prefix::warm_answer(*c, *p, e));
                    }
                    let cached = cached_tokens.unwrap_or(0).min(*p);
                    m.fit_points
                        .push((uncached as f64, cached as f64, *completion_tokens as f64, e2e_ms));
                }
                m.lat.e2e.record_ms(e2e_ms);
                if let Some(t) = ttft_ms {
                    m.lat.ttft.record_ms(t);
                    if let Some(tp) = tpot_ms(e2e_ms, t, *completion_tokens) {
                        m.lat.tpot.record_ms(tp);
                    }
                }
                (
                    "ok".to_string(),
                    String::new(),
                    *prompt_tokens,
                    Some(*completion_tokens),
                )
            }
            SampleResult::Failed { label, message } => {
                m.rate_limited += u64::from(label == "429");
                (label.clone(), message.clone(), None, None)
            }
        };
        m.rows.push(RequestRow {
            concurrency: c,
            start_ms: offset_ms + r.start * 1000.0,
            latency_ms: e2e_ms,
            ttft_ms,
            prompt_tokens,
            output_tokens,
            status,
            error,
        });
    }
    m
}

/// Client self-check: the engine's own gap between a slot freeing and its next request
/// starting, against the latency it measures. Above 5% (and 1 ms), the client, not the
/// resource, is limiting.
fn client_limited(m: &Measured) -> bool {
    let mean_sched = if m.measured > 0 {
        m.sched / m.measured as f64
    } else {
        0.0
    };
    let mean_latency = if m.measured > 0 {
        m.latency_sum / m.measured as f64
    } else {
        0.0
    };
    mean_sched > 0.001 && mean_sched > 0.05 * mean_latency
}

/// Assembles the level row; the server columns stay empty (the scraper fills them).
fn level_row(c: u32, gpus: u32, rate: &WindowRate, tokens: &WindowTokens, m: &Measured) -> LevelRow {
    let q = |h: &Hist, p: f64| h.quantile_ms(p);
    let lat = &m.lat;
    let window = rate.window;
    let total = rate.ok + rate.failed;
    LevelRow {
        concurrency: c,
        duration_s: window,
        requests_ok: rate.ok,
        requests_failed: rate.failed,
        rpm: rate.rpm,
        rpm_ci_low: rate.low,
        rpm_ci_high: rate.high,
        rpm_per_gpu: rate.rpm / f64::from(gpus),
        latency_p50_ms: q(&lat.e2e, 0.5).unwrap_or(f64::NAN),
        latency_p90_ms: q(&lat.e2e, 0.9).unwrap_or(f64::NAN),
        latency_p95_ms: q(&lat.e2e, 0.95).unwrap_or(f64::NAN),
        latency_p99_ms: q(&lat.e2e, 0.99).unwrap_or(f64::NAN),
        ttft_p50_ms: q(&lat.ttft, 0.5),
        ttft_p95_ms: q(&lat.ttft, 0.95),
        tpot_p50_ms: q(&lat.tpot, 0.5),
        output_tokens_per_s: tokens.completion as f64 / window,
        repeated_requests: m.repeated,
        server_running_mean: None,
        server_running_max: None,
        server_waiting_mean: None,
        server_kv_cache_usage_max: None,
        server_preemptions: None,
        server_output_tokens_per_s: None,
        rate_limited: m.rate_limited,
        cached_prompt_tokens_per_s: tokens.cached.map(|c| c as f64 / window),
        server_prefix_cache_hit_rate: None,
        own_prefix_share: None,
        cache_inflated: false,
        warm_requests: (m.cached_answers > 0).then_some(m.warm),
        capacity_model: super::fit::fit_latency(&m.fit_points).map(|f| CapacityModel {
            prompt_uncached: m.cached_known,
            ..f
        }),
        input_tokens_per_s: tokens.prompt.map_or(f64::NAN, |p| p as f64 / window),
        error_rate: if total > 0 {
            rate.failed as f64 / total as f64
        } else {
            0.0
        },
        client_limited: client_limited(m),
    }
}
