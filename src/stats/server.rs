//! What the server said about itself during a level: its Prometheus gauges and counters,
//! reduced to the level's server columns, and the verdict on the knee they support.
//!
//! Pure: the scraper (`crate::scrape`) hands in timestamped snapshots; nothing here reads a
//! socket or a clock.

use crate::fmt::short;
use crate::model::{AnnouncedLimits, KneeRow, LevelRow, ServerLimit, ServerVerdict};

/// One scrape of the server's metrics, summed across label sets (several models or engines
/// behind one endpoint). `None` where the server's dialect has no such metric.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ServerSnapshot {
    /// Seconds since a reference instant the caller chose (the level's start).
    pub at_s: f64,
    /// Requests the engine is running (its batch).
    pub running: Option<f64>,
    /// Requests queued inside the engine, waiting for a batch slot.
    pub waiting: Option<f64>,
    /// KV cache usage, 0..=1.
    pub kv_usage: Option<f64>,
    /// Counters since the server started.
    pub preemptions_total: Option<f64>,
    pub prompt_tokens_total: Option<f64>,
    pub output_tokens_total: Option<f64>,
    /// Prefix cache counters, in tokens (vLLM's `prefix_cache_queries_total`, `_hits_total`).
    pub prefix_queries_total: Option<f64>,
    pub prefix_hits_total: Option<f64>,
    /// A server that reports the hit rate itself, 0..=1 (SGLang's `cache_hit_rate`, older
    /// vLLM's `gpu_prefix_cache_hit_rate`).
    pub prefix_hit_rate: Option<f64>,
}

/// A level's server columns; `None` when unknown. (Serialized as run-summary.json `server`.)
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct ServerLevel {
    pub running_mean: Option<f64>,
    pub running_max: Option<f64>,
    pub waiting_mean: Option<f64>,
    pub kv_cache_usage_max: Option<f64>,
    pub preemptions: Option<f64>,
    pub output_tokens_per_s: Option<f64>,
    /// The share of prompt tokens the server's prefix cache served over the window: its
    /// counters' increase (hits over queries), else the mean of the rate it reports.
    pub prefix_cache_hit_rate: Option<f64>,
}

impl ServerLevel {
    /// Copies the figures into a level row's server columns.
    pub fn fill(&self, row: &mut LevelRow) {
        row.server_running_mean = self.running_mean;
        row.server_running_max = self.running_max;
        row.server_waiting_mean = self.waiting_mean;
        row.server_kv_cache_usage_max = self.kv_cache_usage_max;
        row.server_preemptions = self.preemptions;
        row.server_output_tokens_per_s = self.output_tokens_per_s;
        row.server_prefix_cache_hit_rate = self.prefix_cache_hit_rate;
    }
}

/// Reduces the snapshots taken inside a window: gauges by mean and max over the scrapes,
/// counters by their increase between the first and the last scrape (a counter that went
/// down means the server restarted: unknown).
pub fn summarize_server(snaps: &[ServerSnapshot]) -> ServerLevel {
    let gauge = |f: fn(&ServerSnapshot) -> Option<f64>| -> Vec<f64> { snaps.iter().filter_map(f).collect() };
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let max = |v: &[f64]| v.iter().copied().reduce(f64::max);
    let running = gauge(|s| s.running);
    let waiting = gauge(|s| s.waiting);
    let kv = gauge(|s| s.kv_usage);
    // (first, last) of a counter with its times.
    let span = |f: fn(&ServerSnapshot) -> Option<f64>| -> Option<(f64, f64)> {
        let mut known = snaps.iter().filter_map(|s| f(s).map(|v| (s.at_s, v)));
        let (t0, v0) = known.next()?;
        let (t1, v1) = known.next_back()?;
        (v1 >= v0 && t1 > t0).then_some((v1 - v0, t1 - t0))
    };
    ServerLevel {
        running_mean: mean(&running),
        running_max: max(&running),
        waiting_mean: mean(&waiting),
        kv_cache_usage_max: max(&kv),
        preemptions: span(|s| s.preemptions_total).map(|(d, _)| d),
        output_tokens_per_s: span(|s| s.output_tokens_total).map(|(d, t)| d / t),
        prefix_cache_hit_rate: match (span(|s| s.prefix_queries_total), span(|s| s.prefix_hits_total)) {
            (Some((queries, _)), Some((hits, _))) if queries > 0.0 => Some((hits / queries).clamp(0.0, 1.0)),
            _ => mean(&gauge(|s| s.prefix_hit_rate)),
        },
    }
}

/// Whether the server's output-token rate and the client's differ by more than 10% (the
/// server counts every client's tokens, and its counters move only as answers finish).
pub fn tokens_mismatch(row: &LevelRow) -> Option<f64> {
    let server = row.server_output_tokens_per_s?;
    let client = row.output_tokens_per_s;
    if !(client.is_finite() && client > 0.0) {
        return None;
    }
    let rel = (server - client) / client;
    (rel.abs() > 0.10).then_some(rel)
}

/// The most requests the server ran at once in any level's scrapes; `None` without metrics.
pub fn running_max_observed(levels: &[LevelRow]) -> Option<f64> {
    levels.iter().filter_map(|l| l.server_running_max).reduce(f64::max)
}

/// A hosted API's rate limit as what held throughput, from the answers alone (no metrics
/// needed): a level at or above the knee (any level, without a knee) whose 429s are 2% of its
/// answers or more (3 at least), or a knee at 85% of a request limit the answers announced
/// (70% of a token limit: the provider charges `max_tokens`, more than the answers use).
pub fn rate_limit_verdict(
    levels: &[LevelRow],
    knee: Option<&KneeRow>,
    announced: Option<&AnnouncedLimits>,
) -> Option<ServerVerdict> {
    let from = knee.map_or(0, |k| k.concurrency);
    let turned_away = levels
        .iter()
        .filter(|l| l.concurrency >= from)
        .filter(|l| {
            let answers = l.requests_ok + l.requests_failed;
            l.rate_limited >= 3 && l.rate_limited as f64 >= 0.02 * answers as f64
        })
        .min_by_key(|l| l.concurrency);
    let knee_row = knee.and_then(|k| {
        levels
            .iter()
            .find(|l| l.concurrency == k.concurrency && l.rpm.is_finite())
    });
    let a = announced.copied().unwrap_or_default();
    let at_rpm = match (a.requests_per_minute, knee_row) {
        (Some(lim), Some(k)) if lim > 0 && k.rpm >= 0.85 * lim as f64 => Some(lim),
        _ => None,
    };
    let at_tpm = match (a.tokens_per_minute, knee_row) {
        (Some(lim), Some(k)) if lim > 0 && tokens_per_minute(k) >= 0.7 * lim as f64 => Some(lim),
        _ => None,
    };
    if turned_away.is_none() && at_rpm.is_none() && at_tpm.is_none() {
        return None;
    }
    let mut evidence = match turned_away {
        Some(l) => format!(
            "the endpoint's rate limit: at level {} {} of {} answers were 429 (turned away, not served)",
            l.concurrency,
            l.rate_limited,
            l.requests_ok + l.requests_failed
        ),
        None => "the endpoint's rate limit".to_string(),
    };
    let from = turned_away.or(knee_row).map_or(0, |l| l.concurrency);
    if let Some(rpm) = rate_at_limit(levels, from) {
        evidence.push_str(&format!(
            "; throughput held at {} RPM from level {from} up",
            crate::fmt::thousands(rpm)
        ));
    }
    let announced: Vec<String> = [(a.requests_per_minute, "requests"), (a.tokens_per_minute, "tokens")]
        .iter()
        .filter_map(|(v, what)| v.map(|v| format!("{} {what}", crate::fmt::thousands(v as f64))))
        .collect();
    if !announced.is_empty() {
        evidence.push_str(&format!("; its answers announce {} a minute", announced.join(" and ")));
    }
    evidence.push_str(": more GPUs behind it serve no more; a higher limit (or another key) does");
    Some(ServerVerdict {
        limit: ServerLimit::RateLimit,
        evidence,
    })
}

/// The rate a limit holds: the median of every measurement from level `from` up (a burst a
/// limiter lets through at a level's start, before its window turns requests away, is one
/// high measurement among the held ones).
pub fn rate_at_limit(levels: &[LevelRow], from: u32) -> Option<f64> {
    let mut rpms: Vec<f64> = levels
        .iter()
        .filter(|l| l.concurrency >= from && l.rpm.is_finite() && l.rpm > 0.0)
        .map(|l| l.rpm)
        .collect();
    if rpms.is_empty() {
        return None;
    }
    rpms.sort_by(f64::total_cmp);
    let n = rpms.len();
    Some(if n % 2 == 1 {
        rpms[n / 2]
    } else {
        (rpms[n / 2 - 1] + rpms[n / 2]) / 2.0
    })
}

/// Tokens a minute as a provider counts them, near enough: prompt plus output.
fn tokens_per_minute(l: &LevelRow) -> f64 {
    let prompt = if l.input_tokens_per_s.is_finite() {
        l.input_tokens_per_s
    } else {
        0.0
    };
    (prompt + l.output_tokens_per_s) * 60.0
}

/// What limited throughput at the knee, on the server's own evidence.
///
/// Rules, on the highest measured level above the knee (`a`, concurrency C):
/// - running stayed at the knee's batch and requests queued inside the server: the server's
///   batch is full (`server_batch`);
/// - otherwise, sizeup itself was slow to start requests: `client`;
/// - otherwise, many requests failed: `errors` (a rate limiter answers 429);
/// - otherwise, the server saw far fewer than C requests (running + waiting < 75% of C): they
///   waited before it, in a router, gateway or rate limiter, or part of the traffic went to
///   replicas this /metrics does not cover (`upstream`);
/// - otherwise, the server ran all C at once without a queue, yet throughput stopped: each
///   step slowed (`compute`).
pub fn verdict(levels: &[LevelRow], knee: Option<&KneeRow>) -> Option<ServerVerdict> {
    let running_max_observed = running_max_observed(levels)?;
    let (knee, a) = match knee_and_level_above(levels, knee, running_max_observed) {
        Ok(found) => found,
        Err(unconfirmed) => return Some(unconfirmed),
    };
    let (limit, evidence) = classify(levels, knee, a, running_max_observed);
    Some(ServerVerdict { limit, evidence })
}

/// The knee and the highest level above it with server metrics, or why there is nothing to
/// judge (`unconfirmed`, with what the server was seen doing). `r`: the most it ran at once.
fn knee_and_level_above<'a>(
    levels: &'a [LevelRow],
    knee: Option<&'a KneeRow>,
    r: f64,
) -> Result<(&'a KneeRow, &'a LevelRow), ServerVerdict> {
    let Some(knee) = knee else {
        return Err(ServerVerdict {
            limit: ServerLimit::Unconfirmed,
            evidence: format!(
                "no knee was found; the server ran at most {} requests at once",
                short(r)
            ),
        });
    };
    let at_knee = levels
        .iter()
        .find(|l| l.concurrency == knee.concurrency && l.server_running_mean.is_some());
    let above = levels
        .iter()
        .filter(|l| l.concurrency > knee.concurrency && l.rpm.is_finite() && l.server_running_mean.is_some())
        .max_by_key(|l| l.concurrency);
    let Some(a) = above else {
        return Err(ServerVerdict {
            limit: ServerLimit::Unconfirmed,
            evidence: format!(
                "no level above the knee ({}) has server metrics; at the knee the server ran {}",
                knee.concurrency,
                at_knee
                    .and_then(|l| l.server_running_mean)
                    .map_or("an unknown number".into(), short)
            ),
        });
    };
    Ok((knee, a))
}

/// The rules of [`verdict`] on level `a` above the knee; `r`: the most the server ran at once.
fn classify(levels: &[LevelRow], knee: &KneeRow, a: &LevelRow, r: f64) -> (ServerLimit, String) {
    let c = f64::from(a.concurrency);
    let running = a.server_running_mean.unwrap_or(0.0);
    let waiting = a.server_waiting_mean.unwrap_or(0.0);
    // The batch is full: above the knee the server kept running about its most ever (a scrape
    // between an answer and the next request sees one fewer) while requests queued inside it.
    let held = running >= 0.85 * r - 0.5 && r < c;
    let queued = waiting >= 1.0 && waiting >= 0.25 * (c - running).max(0.0);
    // The first level where the server ran its most: did it serve more than the knee?
    let full = levels
        .iter()
        .filter(|l| l.rpm.is_finite() && l.server_running_mean.is_some_and(|m| m >= 0.85 * r - 0.5))
        .min_by_key(|l| l.concurrency);
    let knee_row = levels.iter().find(|l| l.concurrency == knee.concurrency);
    let knee_is_batch = f64::from(knee.concurrency) >= 0.85 * r
        || matches!((full, knee_row), (Some(f), Some(k)) if f.rpm_ci_low > k.rpm_ci_high);
    if held && queued && knee_is_batch {
        let knee_note = if f64::from(knee.concurrency) >= 0.85 * r {
            format!("the knee ({}) is where the batch filled", knee.concurrency)
        } else {
            format!(
                "the client-side knee ({}) is below the server's batch ({}), and level {} served more: a level nearer {} may serve more",
                knee.concurrency,
                short(r),
                full.map_or(0, |f| f.concurrency),
                short(r)
            )
        };
        (
            ServerLimit::ServerBatch,
            format!(
                "the server's batch saturated at {}: at level {} it still ran {} at once and {} waited inside the server; {knee_note}",
                short(r),
                a.concurrency,
                short(running),
                short(waiting)
            ),
        )
    } else if let (true, Some(f)) = (held && queued, full) {
        // RPM stopped at the knee while the server still took more at once above it.
        (
            ServerLimit::Compute,
            format!(
                "throughput stopped growing at the knee ({}) while the server still ran more at once above it ({} at level {}, no more RPM): each step slowed as its batch grew (compute or memory bandwidth), not its {} slots; beyond them {} waited at level {}",
                knee.concurrency,
                short(f.server_running_mean.unwrap_or(r)),
                f.concurrency,
                short(r),
                short(waiting),
                a.concurrency
            ),
        )
    } else {
        batch_room_left(a, running, waiting)
    }
}

/// The rules of [`verdict`] once the server's batch is not what held throughput at level `a`
/// (it ran `running` at once, `waiting` queued inside it).
fn batch_room_left(a: &LevelRow, running: f64, waiting: f64) -> (ServerLimit, String) {
    let c = f64::from(a.concurrency);
    if a.client_limited {
        (
            ServerLimit::Client,
            format!(
                "at level {} the server ran {} and queued {} of {} sent, and sizeup was slow to start requests (client_limited): the client, not the server, is the limit",
                a.concurrency,
                short(running),
                short(waiting),
                a.concurrency
            ),
        )
    } else if a.error_rate >= 0.05 {
        (
            ServerLimit::Errors,
            format!(
                "at level {} {:.0}% of requests failed while the server ran {} (batch room left); a rate limiter (HTTP 429) or errors cap throughput: see requests.csv status",
                a.concurrency,
                a.error_rate * 100.0,
                short(running)
            ),
        )
    } else if running + waiting < 0.75 * c {
        (
            ServerLimit::Upstream,
            format!(
                "at level {} the server saw only {} running + {} waiting of {} sent: the rest waited before it (a router, gateway or rate limiter), or other replicas not covered by this /metrics served them",
                a.concurrency,
                short(running),
                short(waiting),
                a.concurrency
            ),
        )
    } else {
        (
            ServerLimit::Compute,
            format!(
                "at level {} the server ran {} at once with {} waiting, yet throughput stopped growing: each step slowed as the batch grew (compute or memory bandwidth), not a slot limit",
                a.concurrency,
                short(running),
                short(waiting)
            ),
        )
    }
}

/// Warnings about the level a plan runs at: preemptions or a KV cache near full mean the
/// server swaps or recomputes requests there, so latency is fragile.
pub fn operating_warnings(row: &LevelRow) -> Vec<String> {
    let mut w = Vec::new();
    if let Some(p) = row.server_preemptions.filter(|p| *p > 0.0) {
        w.push(format!(
            "the server preempted {} request(s) at concurrency {} (the planned level): its KV cache overflowed, so latency there is fragile; plan fewer requests per GPU (a lower --max-latency-p95-ms) or shorter prompts",
            short(p),
            row.concurrency
        ));
    }
    if let Some(kv) = row.server_kv_cache_usage_max.filter(|kv| *kv >= 0.95) {
        w.push(format!(
            "the server's KV cache reached {:.0}% at concurrency {} (the planned level): longer requests than the sweep's will be preempted and latency there is fragile",
            kv * 100.0,
            row.concurrency
        ));
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::level;

    #[test]
    fn a_rate_limit_is_told_from_the_answers_alone_without_metrics() {
        let knee = |c: u32, rpm: f64| KneeRow {
            concurrency: c,
            rpm,
            rpm_per_gpu: rpm,
            limited_by: crate::model::LimitedBy::Saturation,
        };
        let mut levels = vec![
            level(1, 1200.0, 50.0),
            level(2, 2400.0, 50.0),
            level(4, 2390.0, 50.0),
            level(8, 2395.0, 50.0),
        ];
        // No 429s, nothing announced: no rate limit to speak of (a GPU-bound knee).
        assert_eq!(rate_limit_verdict(&levels, Some(&knee(2, 2400.0)), None), None);
        // 429s at and above the knee: the limit, with the rate it held.
        levels[2].rate_limited = 100;
        levels[3].rate_limited = 2;
        let v = rate_limit_verdict(&levels, Some(&knee(2, 2400.0)), None).expect("a verdict");
        assert_eq!(v.limit, ServerLimit::RateLimit);
        assert!(
            v.evidence.contains("at level 4 100 of 2390 answers were 429"),
            "{}",
            v.evidence
        );
        assert!(
            v.evidence.contains("held at 2,393 RPM from level 4 up"),
            "{}",
            v.evidence
        );
        // A few 429s in many answers are not a limit.
        levels[2].rate_limited = 2;
        assert_eq!(rate_limit_verdict(&levels, Some(&knee(2, 2400.0)), None), None);
        // A knee at an announced request limit is one, 429s or not.
        let announced = AnnouncedLimits {
            requests_per_minute: Some(2500),
            tokens_per_minute: Some(10_000_000),
        };
        let v = rate_limit_verdict(&levels, Some(&knee(2, 2400.0)), Some(&announced)).expect("a verdict");
        assert!(
            v.evidence
                .contains("announce 2,500 requests and 10,000,000 tokens a minute"),
            "{}",
            v.evidence
        );
        let far = AnnouncedLimits {
            requests_per_minute: Some(10_000),
            tokens_per_minute: None,
        };
        assert_eq!(rate_limit_verdict(&levels, Some(&knee(2, 2400.0)), Some(&far)), None);
    }

    fn snap(at_s: f64, running: f64, waiting: f64) -> ServerSnapshot {
        ServerSnapshot {
            at_s,
            running: Some(running),
            waiting: Some(waiting),
            kv_usage: Some(running / 20.0),
            preemptions_total: Some(3.0 + at_s.floor()),
            prompt_tokens_total: None,
            output_tokens_total: Some(1000.0 + 50.0 * at_s),
            prefix_queries_total: None,
            prefix_hits_total: None,
            prefix_hit_rate: None,
        }
    }

    #[test]
    fn gauges_by_mean_and_max_counters_by_increase() {
        let s = summarize_server(&[snap(0.0, 8.0, 0.0), snap(1.0, 16.0, 4.0), snap(2.0, 12.0, 2.0)]);
        assert_eq!(s.running_mean, Some(12.0));
        assert_eq!(s.running_max, Some(16.0));
        assert_eq!(s.waiting_mean, Some(2.0));
        assert_eq!(s.kv_cache_usage_max, Some(0.8));
        assert_eq!(s.preemptions, Some(2.0));
        assert_eq!(s.output_tokens_per_s, Some(50.0));
    }

    #[test]
    fn unknown_stays_unknown() {
        assert_eq!(summarize_server(&[]), ServerLevel::default());
        // One scrape: gauges known, rates not.
        let one = summarize_server(&[snap(0.0, 4.0, 0.0)]);
        assert_eq!(one.running_mean, Some(4.0));
        assert_eq!(one.output_tokens_per_s, None);
        // A counter that went down (server restart) is not a negative rate.
        let mut b = snap(1.0, 4.0, 0.0);
        b.output_tokens_total = Some(10.0);
        assert_eq!(summarize_server(&[snap(0.0, 4.0, 0.0), b]).output_tokens_per_s, None);
        let none = ServerSnapshot::default();
        let s = summarize_server(&[none, none]);
        assert_eq!(s, ServerLevel::default());
    }

    fn with_server(c: u32, rpm: f64, running: f64, waiting: f64) -> LevelRow {
        let mut l = level(c, rpm, 100.0);
        l.server_running_mean = Some(running);
        l.server_running_max = Some(running.ceil());
        l.server_waiting_mean = Some(waiting);
        l
    }

    fn knee(c: u32) -> KneeRow {
        KneeRow {
            concurrency: c,
            rpm: 1.0,
            rpm_per_gpu: 1.0,
            limited_by: crate::model::LimitedBy::Saturation,
        }
    }

    #[test]
    fn a_full_batch_is_named() {
        let levels = [
            with_server(8, 9600.0, 7.9, 0.0),
            with_server(16, 19200.0, 15.8, 0.0),
            with_server(32, 19250.0, 16.0, 15.9),
        ];
        let v = verdict(&levels, Some(&knee(16))).unwrap();
        assert_eq!(v.limit.as_str(), "server_batch", "{}", v.evidence);
        assert_eq!(running_max_observed(&levels), Some(16.0));
        assert!(
            v.evidence
                .contains("saturated at 16: at level 32 it still ran 16 at once and 15.9 waited"),
            "{}",
            v.evidence
        );
        assert!(
            v.evidence.contains("the knee (16) is where the batch filled"),
            "{}",
            v.evidence
        );
        // A noisy client-side knee below the batch is named as such: level 16 served more.
        let v = verdict(&levels, Some(&knee(8))).unwrap();
        assert_eq!(v.limit.as_str(), "server_batch");
        assert!(
            v.evidence
                .contains("knee (8) is below the server's batch (16), and level 16 served more"),
            "{}",
            v.evidence
        );
    }

    #[test]
    fn a_knee_below_the_batch_with_flat_rpm_is_compute() {
        // llama-server on one CPU thread, 4 slots: RPM flat from 2 while it ran up to 4.
        let levels = [
            with_server(1, 107.0, 1.0, 0.0),
            with_server(2, 144.0, 1.9, 0.0),
            with_server(4, 144.0, 4.0, 0.0),
            with_server(8, 119.0, 4.0, 2.1),
        ];
        let v = verdict(&levels, Some(&knee(2))).unwrap();
        assert_eq!(v.limit.as_str(), "compute", "{}", v.evidence);
        for part in [
            "knee (2) while the server still ran more at once above it (4 at level 4",
            "not its 4 slots; beyond them 2.1 waited at level 8",
        ] {
            assert!(v.evidence.contains(part), "{}", v.evidence);
        }
    }

    #[test]
    fn room_left_points_elsewhere() {
        // The server never saw more than 16 although 64 were sent, and nothing queued in it.
        let levels = [with_server(16, 19200.0, 15.8, 0.0), with_server(64, 19300.0, 16.0, 0.0)];
        assert_eq!(verdict(&levels, Some(&knee(16))).unwrap().limit.as_str(), "upstream");
        // Same, but sizeup was the slow one.
        let mut l = levels.clone();
        l[1].client_limited = true;
        assert_eq!(verdict(&l, Some(&knee(16))).unwrap().limit.as_str(), "client");
        // Same, with a tenth of the requests refused.
        let mut l = levels.clone();
        l[1].error_rate = 0.1;
        assert_eq!(verdict(&l, Some(&knee(16))).unwrap().limit.as_str(), "errors");
        // The server ran all 64 at once: it slowed per step.
        let l = [with_server(16, 19200.0, 15.8, 0.0), with_server(64, 19300.0, 63.5, 0.0)];
        assert_eq!(verdict(&l, Some(&knee(16))).unwrap().limit.as_str(), "compute");
    }

    #[test]
    fn without_metrics_or_levels_above_no_claim() {
        assert!(verdict(&[level(16, 1.0, 1.0)], Some(&knee(16))).is_none());
        let l = [with_server(16, 19200.0, 16.0, 0.0)];
        assert_eq!(verdict(&l, Some(&knee(16))).unwrap().limit.as_str(), "unconfirmed");
        assert_eq!(verdict(&l, None).unwrap().limit.as_str(), "unconfirmed");
    }

    #[test]
    fn preemptions_and_a_full_cache_warn() {
        let mut l = level(16, 100.0, 1.0);
        assert!(operating_warnings(&l).is_empty());
        l.server_preemptions = Some(0.0);
        l.server_kv_cache_usage_max = Some(0.94);
        assert!(operating_warnings(&l).is_empty());
        l.server_preemptions = Some(3.0);
        l.server_kv_cache_usage_max = Some(0.99);
        let w = operating_warnings(&l);
        assert_eq!(w.len(), 2);
        assert!(w[0].contains("preempted 3 request(s) at concurrency 16"), "{}", w[0]);
        assert!(w[1].contains("KV cache reached 99%"), "{}", w[1]);
    }

    #[test]
    fn token_mismatch_over_ten_percent() {
        let mut l = level(8, 100.0, 1.0);
        l.output_tokens_per_s = 100.0;
        l.server_output_tokens_per_s = Some(108.0);
        assert_eq!(tokens_mismatch(&l), None);
        l.server_output_tokens_per_s = Some(150.0);
        assert!((tokens_mismatch(&l).unwrap() - 0.5).abs() < 1e-9);
    }
}
