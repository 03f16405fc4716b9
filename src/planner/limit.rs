//! A plan at a hosted API's rate limit. Where a sweep's knee is the endpoint's rate limit
//! (`server.verdict.limit` = `rate_limit`: 429s, or a rate at the limit the answers announced),
//! GPUs behind it serve no more, so the plan names the limit instead of a GPU count: the
//! requests in flight that reach it, the rate to run at (the limit, or the target when lower),
//! the job's duration at that rate, and its cost from the provider's prices per token.

use super::plan::{Plan, PlanLimit};
use crate::model::{ServerLimit, Summary};
use crate::stats::server::rate_at_limit;

/// A hosted API's prices, USD per million tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TokenPrices {
    pub input: Option<f64>,
    pub output: Option<f64>,
}

/// Turns `plan` (sized for `summary` as if GPUs were the limit) into a plan at the endpoint's
/// rate limit, when the sweep's verdict says that is what held it; false otherwise.
pub fn at_rate_limit(plan: &mut Plan, summary: &Summary, prices: TokenPrices) -> bool {
    let Some(verdict) = summary
        .server
        .as_ref()
        .and_then(|s| s.verdict.as_ref())
        .filter(|v| v.limit == ServerLimit::RateLimit)
    else {
        return false;
    };
    let measured: Vec<_> = summary
        .levels
        .iter()
        .filter(|l| l.rpm.is_finite() && l.rpm > 0.0)
        .collect();
    // From the first level the limit turned requests away (the knee's, without 429s).
    let from = measured
        .iter()
        .filter(|l| l.rate_limited > 0)
        .map(|l| l.concurrency)
        .min()
        .or(summary.knee.as_ref().map(|k| k.concurrency))
        .or(measured
            .iter()
            .max_by(|a, b| a.rpm.total_cmp(&b.rpm))
            .map(|l| l.concurrency))
        .unwrap_or(0);
    let Some(best) = rate_at_limit(&summary.levels, from) else {
        return false;
    };
    let announced = summary.rate_limits;
    let rpm = match announced.and_then(|a| a.requests_per_minute) {
        Some(limit) if limit > 0 => best.min(limit as f64),
        _ => best,
    };
    // The fewest in flight that reach it: more only queue at the limiter (and draw 429s).
    let level = measured
        .iter()
        .filter(|l| l.rpm >= 0.95 * rpm)
        .min_by_key(|l| l.concurrency)
        .or(measured.last())
        .copied();
    let Some(level) = level else { return false };
    let run_rpm = plan.target_rpm.min(rpm);
    plan.limit = Some(PlanLimit {
        kind: ServerLimit::RateLimit,
        rpm,
        run_rpm,
        announced,
        evidence: verdict.evidence.clone(),
        usd_per_million_input_tokens: prices.input,
        usd_per_million_output_tokens: prices.output,
    });
    plan.gpus = summary.gpus.max(1);
    plan.chosen_concurrency = level.concurrency;
    plan.concurrency_per_gpu = level.concurrency;
    plan.total_concurrency = level.concurrency;
    plan.rpm_per_gpu = run_rpm / f64::from(plan.gpus);
    plan.rpm_per_gpu_low = plan.rpm_per_gpu;
    plan.expected_rpm = run_rpm;
    plan.expected_latency_p95_ms = level.latency_p95_ms;
    plan.headroom = 0.0;
    plan.scaling = None;
    plan.tokens_per_s_per_gpu = None;
    plan.usd_per_million_tokens = None;
    plan.gpu_hour_cost = None;
    plan.expected_duration_s = plan.requests.map(|r| r as f64 / run_rpm * 60.0);
    plan.cost_usd = token_cost(plan, summary, prices);
    true
}

/// The job's cost at the provider's prices: its requests x (prompt tokens x input price +
/// output tokens x output price), from the plan's mix (the job's, else the sweep's).
fn token_cost(plan: &Plan, summary: &Summary, prices: TokenPrices) -> Option<f64> {
    if prices.input.is_none() && prices.output.is_none() {
        return None;
    }
    let requests = plan.requests? as f64;
    let (prompt, output) = match &plan.workload {
        Some(w) => (w.prompt_tokens_mean, w.output_tokens_mean),
        None => {
            let w = summary.workload.as_ref()?;
            (w.prompt_tokens_mean.unwrap_or(0.0), w.output_tokens_mean)
        }
    };
    let per_request = prompt * prices.input.unwrap_or(0.0) + output * prices.output.unwrap_or(0.0);
    Some(requests * per_request / 1e6)
}

/// Why a plan at a rate limit misses its target: the target is over the limit. The plan still
/// stands (the job runs at the limit); the goal is unmet.
pub fn unmet(plan: &Plan) -> Option<String> {
    let l = plan.limit.as_ref()?;
    (plan.target_rpm > l.rpm * (1.0 + 1e-9)).then(|| {
        let mut m = format!(
            "the target {} RPM is over the endpoint's rate limit: it serves about {} RPM",
            crate::fmt::thousands(plan.target_rpm),
            crate::fmt::thousands(l.rpm)
        );
        if let Some(d) = plan.expected_duration_s {
            m.push_str(&format!(
                ", so the job takes {} at the limit",
                super::explain::human_duration(d)
            ));
        }
        m
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{fixtures, AnnouncedLimits, ServerInfo, ServerVerdict};

    fn limited(rpms: &[(u32, f64)], announced: Option<u64>) -> Summary {
        let mut s = fixtures::summary();
        s.gpus = 1;
        s.levels = rpms
            .iter()
            .map(|&(c, r)| fixtures::level(c, r, 100.0 + f64::from(c)))
            .collect();
        s.knee = None;
        s.workload = Some(crate::model::SweepMix {
            requests: 100,
            prompt_tokens_mean: Some(50.0),
            output_tokens_mean: 200.0,
            ..Default::default()
        });
        s.rate_limits = announced.map(|r| AnnouncedLimits {
            requests_per_minute: Some(r),
            tokens_per_minute: None,
        });
        s.server = Some(ServerInfo {
            dialect: "none".into(),
            metrics_url: String::new(),
            running_max_observed: None,
            prefix_cache_tokens: None,
            verdict: Some(ServerVerdict {
                limit: ServerLimit::RateLimit,
                evidence: "429s".into(),
            }),
        });
        s
    }

    /// The plan `plan` makes of `s` for `target` RPM.
    fn planned(s: &Summary, target: f64, requests: Option<u64>, prices: TokenPrices) -> Plan {
        use crate::planner::{chosen, for_sweeps, JobSpec, Objective, Question, RateGoal, Sizing, SweepOption};
        let options = [SweepOption {
            summary: s,
            sweep: "reports/hosted".into(),
            folder_name: "hosted".into(),
        }];
        let q = Question {
            options: &options,
            rate: RateGoal::Rpm(target),
            job: JobSpec {
                requests,
                mix: None,
                slo: crate::model::Slo::default(),
                sizing: Sizing {
                    headroom: 0.1,
                    token_prices: prices,
                    ..Sizing::default()
                },
            },
            objective: Objective::Cost,
            budget_usd: None,
        };
        chosen(&for_sweeps(&q).unwrap().choice).unwrap()
    }

    #[test]
    fn a_rate_limited_sweep_plans_at_the_limit_with_the_fewest_in_flight_that_reach_it() {
        let mut s = limited(&[(1, 600.0), (2, 1150.0), (4, 1190.0), (8, 1185.0)], Some(1200));
        // Turned away from level 4 up: the limit holds the median of 4 and 8.
        (s.levels[2].rate_limited, s.levels[3].rate_limited) = (30, 80);
        let prices = TokenPrices {
            input: Some(0.15),
            output: Some(0.6),
        };
        let p = planned(&s, 5000.0, Some(12_000), prices);
        let l = p.limit.clone().unwrap();
        assert_eq!((l.rpm, l.run_rpm), (1187.5, 1187.5));
        // 1,150 is within 5% of 1,187.5: 2 in flight reach the limit.
        assert_eq!((p.total_concurrency, p.chosen_concurrency), (2, 2));
        assert!((p.expected_duration_s.unwrap() - 12_000.0 / 1187.5 * 60.0).abs() < 1e-6);
        let w = p.workload.as_ref().expect("the sweep's mix");
        let per = w.prompt_tokens_mean * 0.15 + w.output_tokens_mean * 0.6;
        assert!((p.cost_usd.unwrap() - 12_000.0 * per / 1e6).abs() < 1e-9);
        assert!(unmet(&p).unwrap().contains("over the endpoint's rate limit"));
        assert!(crate::planner::explain(&p).contains("rate limit, not GPUs"));
        // plan.json names the limit and no GPU count.
        let json: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        assert!(
            json["gpus"].is_null() && json["limit"]["kind"] == "rate_limit",
            "{json}"
        );
        let back: Plan = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!((back.gpus, back.limit), (0, p.limit.clone()));
    }

    #[test]
    fn a_target_under_the_limit_runs_at_the_target_and_an_announced_limit_caps_the_rate() {
        let s = limited(&[(1, 600.0), (4, 1300.0)], Some(1200));
        let p = planned(&s, 900.0, None, TokenPrices::default());
        let l = p.limit.clone().unwrap();
        assert_eq!((l.rpm, l.run_rpm), (1200.0, 900.0));
        assert_eq!(p.cost_usd, None);
        assert!(unmet(&p).is_none());
    }

    #[test]
    fn a_sweep_held_by_its_gpus_is_left_alone() {
        let mut s = limited(&[(1, 600.0)], None);
        s.server.as_mut().unwrap().verdict.as_mut().unwrap().limit = ServerLimit::ServerBatch;
        let p = planned(&s, 900.0, None, TokenPrices::default());
        assert!(p.limit.is_none());
        assert_eq!(p.gpus, 2, "sized in GPUs: 900 x 1.1 / 600");
    }
}
