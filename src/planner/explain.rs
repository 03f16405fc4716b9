//! The plan in words: the arithmetic behind the GPU count, concurrency, duration and cost,
//! one line each, for stdout.

use super::plan::{Plan, PlanLimit};
use super::scaling::ScalingPoint;
use super::size::sizing_rate;
use crate::fmt::grouped;

/// "1 GPU" / "4 GPUs".
pub(super) fn gpus_word(n: u32) -> String {
    if n == 1 {
        "1 GPU".to_string()
    } else {
        format!("{n} GPUs")
    }
}

/// Seconds as "45 s", "1m 34s" or "2h 05m" for the reader's benefit.
pub(super) fn human_duration(s: f64) -> String {
    let total = s.round() as u64;
    if total < 60 {
        format!("{total} s")
    } else if total < 3600 {
        format!("{}m {:02}s", total / 60, total % 60)
    } else {
        format!("{}h {:02}m", total / 3600, (total % 3600) / 60)
    }
}

/// Short human explanation showing the arithmetic, multiple lines, e.g.
/// `"4 GPUs: 30,000 RPM target x 1.10 / 9,605 RPM per GPU (mean) = 3.44 -> 4"`
/// plus lines for concurrency, expected RPM, duration, cost, and the linear
/// scaling assumption relative to the sweep's GPU count.
pub fn explain(plan: &Plan) -> String {
    if let Some(l) = &plan.limit {
        return limit_explain(plan, l);
    }
    let gpus_line = gpus_line(plan);
    let mut lines = Vec::new();
    if let (Some(d), Some(r)) = (plan.deadline_s, plan.requests) {
        lines.push(format!(
            "target: {} requests / ({} deadline - {} s startup) x 60 = {} RPM",
            grouped(r as f64, 0),
            human_duration(d),
            grouped(plan.startup_s, 0),
            grouped(plan.target_rpm, 0)
        ));
    }
    lines.extend([
        gpus_line,
        format!(
            "concurrency: {} per GPU (level {} / {} sweep GPUs, rounded up) x {} = {} total",
            plan.concurrency_per_gpu,
            plan.chosen_concurrency,
            plan.sweep_gpus,
            gpus_word(plan.gpus),
            plan.total_concurrency
        ),
        format!(
            "expected: {} x {} RPM per GPU (mean) = {} RPM, p95 latency {} ms",
            gpus_word(plan.gpus),
            grouped(plan.rpm_per_gpu, 0),
            grouped(plan.expected_rpm, 0),
            grouped(plan.expected_latency_p95_ms, 0)
        ),
    ]);
    if let Some(n) = plan.shards {
        // As `run` splits it: T / N each, the first T mod N one more, at least 1.
        let (base, extra) = (
            u64::from(plan.total_concurrency) / n,
            u64::from(plan.total_concurrency) % n,
        );
        let share = match (base.max(1), extra) {
            (b, 0) => b.to_string(),
            (b, _) if base == 0 => b.to_string(),
            (b, _) => format!("{b} or {}", b + 1),
        };
        lines.push(format!(
            "shards: {n}, each keeping {share} of the {} in flight (`run --plan --shard auto`)",
            plan.total_concurrency
        ));
    }
    if let (Some(r), Some(d)) = (plan.requests, plan.expected_duration_s) {
        lines.push(format!(
            "duration: {} requests / {} RPM x 60 = {} s ({}), plus {} s startup",
            grouped(r as f64, 0),
            grouped(plan.expected_rpm, 0),
            grouped(d, 2),
            human_duration(d),
            grouped(plan.startup_s, 0)
        ));
        if let Some(cost) = plan.cost_usd {
            let gpu_hours = f64::from(plan.gpus) * (d + plan.startup_s) / 3600.0;
            // The plan's own hourly price; a plan written before it was stored has only
            // the cost, from which the price is recovered.
            let rate = plan
                .gpu_hour_cost
                .unwrap_or(if gpu_hours > 0.0 { cost / gpu_hours } else { 0.0 });
            lines.push(format!(
                "cost: {} x ({} s + {} s startup) / 3600 = {} GPU-hours x ${rate:.2} = ${}",
                gpus_word(plan.gpus),
                grouped(d, 2),
                grouped(plan.startup_s, 0),
                grouped(gpu_hours, 3),
                grouped(cost, 2)
            ));
        }
    }
    if let Some(t) = &plan.tokens_per_s_per_gpu {
        let mut line = format!(
            "tokens: {} input + {} output per s per GPU",
            grouped(t.input, 0),
            grouped(t.output, 0)
        );
        if let Some(u) = &plan.usd_per_million_tokens {
            let usd = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("${v:.3}"));
            line.push_str(&format!(
                "; {} per 1M tokens ({} per 1M output tokens)",
                usd(u.total),
                usd(u.output)
            ));
        }
        lines.push(line);
    }
    if let Some(m) = &plan.capacity_model {
        let prompt = match (m.prompt_uncached, m.b_ms_per_cached_token) {
            (false, _) => format!("{:.4} ms x prompt tokens", m.b_ms_per_prompt_token),
            (true, Some(k)) => format!(
                "{:.4} ms x uncached + {k:.4} ms x cached prompt tokens",
                m.b_ms_per_prompt_token
            ),
            (true, None) => format!(
                "{:.4} ms x uncached prompt tokens (cached ones free)",
                m.b_ms_per_prompt_token
            ),
        };
        lines.push(format!(
            "capacity model at level {}: latency = {:.1} ms + {prompt} + {:.3} ms x output tokens (R² {:.3}); RPM per GPU = C x 60000 / latency",
            plan.chosen_concurrency, m.a_ms, m.c_ms_per_output_token, m.r2
        ));
    }
    if let Some(pc) = &plan.prefix_cache {
        lines.push(prefix_line(pc));
    }
    lines.push(scaling_line(plan));
    lines.join("\n")
}

/// What the job's lines share through a prefix cache, and what spreading them over replicas
/// leaves of it.
fn prefix_line(pc: &super::plan::PlanPrefixCache) -> String {
    let pct = |s: f64| format!("{:.0}%", s * 100.0);
    let mut line = format!(
        "prefix cache: sized for {} of the prompt served from cache (the job's lines in file order share {}",
        pct(pc.sized_share),
        pct(pc.job_share)
    );
    if let Some(t) = pc.cache_tokens {
        line.push_str(&format!(" through a cache of {} tokens", grouped(t as f64, 0)));
    }
    if let Some(s) = pc.sweep_share {
        line.push_str(&format!("; the sweep's answers {} cached", pct(s)));
    }
    line.push(')');
    if let Some(rr) = pc.round_robin_share {
        line.push_str(&format!(
            "; it assumes one cache, or a router that keeps related lines on one replica: spread round-robin over the replicas, each with its own cache, they share {}{}",
            pct(rr),
            pc.round_robin_gpus
                .map_or(", and no option meets the target at that share".to_string(), |g| format!(": a plan at that share needs at least {}", gpus_word(g)))
        ));
    }
    line
}

/// Each GPU count measured with its efficiency: "1 GPU x1.00, 9 GPUs x0.88".
pub(super) fn scaling_points(points: &[ScalingPoint]) -> String {
    let each: Vec<String> = points
        .iter()
        .map(|p| format!("{} x{:.2}", gpus_word(p.gpus), p.efficiency))
        .collect();
    each.join(", ")
}

/// How the per-GPU rate carries from the sweep's GPU count to the plan's: measured (sweeps of
/// one `--name`) or assumed linear.
fn scaling_line(plan: &Plan) -> String {
    let ratio = f64::from(plan.gpus) / f64::from(plan.sweep_gpus.max(1));
    let Some(s) = &plan.scaling else {
        return format!(
            "sweep measured {}; plan uses {} ({ratio:.1}x): assumes linear scaling across replicas",
            gpus_word(plan.sweep_gpus),
            plan.gpus
        );
    };
    let largest = s.measured.last().map_or(0, |p| p.gpus);
    let how = if plan.gpus > largest {
        "extrapolated past the largest count measured"
    } else if s.measured.iter().any(|p| p.gpus == plan.gpus) {
        "as measured"
    } else {
        "interpolated"
    };
    format!(
        "scaling measured: {} (per-GPU rate relative to {}); plan uses {}: x{:.2} ({how}), {} RPM per GPU of the {} swept",
        scaling_points(&s.measured),
        gpus_word(plan.sweep_gpus),
        plan.gpus,
        s.efficiency,
        grouped(plan.rpm_per_gpu, 0),
        grouped(s.swept_rpm_per_gpu, 0)
    )
}

/// The GPU count's arithmetic with its one safety margin: the headroom over the mean or, where
/// the plateau's CI reaches further below the mean (`--estimate low`), the CI low bound alone.
fn gpus_line(plan: &Plan) -> String {
    let factor = 1.0 + plan.headroom;
    let (_, low_rules) = sizing_rate(plan.rpm_per_gpu, plan.rpm_per_gpu_low, plan.headroom, plan.estimate);
    // The same quotient as `size`'s, written as the user reads it.
    let (numerator, per_gpu) = if low_rules {
        (plan.target_rpm, plan.rpm_per_gpu_low)
    } else {
        (plan.target_rpm * factor, plan.rpm_per_gpu)
    };
    let quotient = if per_gpu > 0.0 {
        numerator / per_gpu
    } else {
        f64::INFINITY
    };
    let below = if plan.rpm_per_gpu > 0.0 {
        (1.0 - plan.rpm_per_gpu_low / plan.rpm_per_gpu) * 100.0
    } else {
        0.0
    };
    let pooled = match plan.plateau_levels.as_slice() {
        [] => String::new(),
        [one] => format!("; the plateau of level {one}"),
        many => format!(
            "; the plateau of levels {}",
            many.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
        ),
    };
    let why = if low_rules {
        format!(
            "95% CI low, {below:.1}% below the mean: a wider margin than the {:.0}% headroom, which it replaces{pooled}",
            plan.headroom * 100.0
        )
    } else if plan.estimate == crate::model::Estimate::Low {
        format!("mean; its 95% CI low is {below:.1}% below, within the headroom{pooled}")
    } else {
        format!("mean{pooled}")
    };
    let target = if low_rules {
        format!("{} RPM target", grouped(plan.target_rpm, 0))
    } else {
        format!("{} RPM target x {factor:.2}", grouped(plan.target_rpm, 0))
    };
    format!(
        "{}: {target} / {} RPM per GPU ({why}) = {quotient:.2} -> {}",
        gpus_word(plan.gpus),
        grouped(per_gpu, 0),
        plan.gpus
    )
}

/// The plan at a rate limit in words, for stdout.
fn limit_explain(plan: &Plan, l: &PlanLimit) -> String {
    let mut lines = vec![format!(
        "limit: the endpoint's rate limit, not GPUs, sizes this job ({}); gpus: none to count",
        l.evidence
    )];
    lines.push(format!(
        "concurrency: {} in flight (the fewest that reached the limit in the sweep), at {} RPM (the {} RPM target{})",
        plan.total_concurrency,
        grouped(l.run_rpm, 0),
        grouped(plan.target_rpm, 0),
        if l.run_rpm < plan.target_rpm {
            format!(", capped at the limit's {} RPM", grouped(l.rpm, 0))
        } else {
            String::new()
        }
    ));
    lines.push(format!(
        "run: `sizeup run --plan plan.json` holds {} in flight and --rate {}; p95 latency {} ms",
        plan.total_concurrency,
        grouped(l.run_rpm, 0),
        grouped(plan.expected_latency_p95_ms, 0)
    ));
    if let (Some(r), Some(d)) = (plan.requests, plan.expected_duration_s) {
        lines.push(format!(
            "duration: {} requests / {} RPM x 60 = {} s ({})",
            grouped(r as f64, 0),
            grouped(l.run_rpm, 0),
            grouped(d, 2),
            human_duration(d)
        ));
    }
    if let (Some(cost), Some(w)) = (plan.cost_usd, plan.workload.as_ref()) {
        let usd = |v: Option<f64>| v.map_or("$0".to_string(), |v| format!("${v}"));
        lines.push(format!(
            "cost: {} requests x ({} prompt tokens x {} + {} output tokens x {}) / 1M = ${}",
            grouped(plan.requests.unwrap_or(0) as f64, 0),
            grouped(w.prompt_tokens_mean, 1),
            usd(l.usd_per_million_input_tokens),
            grouped(w.output_tokens_mean, 1),
            usd(l.usd_per_million_output_tokens),
            grouped(cost, 2)
        ));
    }
    lines.join("\n")
}
