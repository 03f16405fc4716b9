//! `sizeup run`: flags -> [`RunSettings`] -> the batch pipeline in [`crate::job`].

use super::settings;
use crate::batch;
use crate::cli::RunArgs;
use crate::engine::Stop;
use crate::job::{self, RunSettings, ShardShare};
use crate::sizing::read_plan;
use crate::target::Target;
use crate::ui::{self, usage_error, ExitStatus};
use std::path::{Path, PathBuf};

pub async fn run(args: RunArgs, interrupt: Stop) -> anyhow::Result<ExitStatus> {
    let api = super::resolve_api(&args.endpoint, Some(&args.input), args.tuning.format)?;
    let endpoint = settings::endpoint(&args.endpoint, api);
    let s = settings_from_args(&args)?;
    let prepared = job::prepare(&s, api)?;
    // With `--resource sim` and no endpoint, the in-process resource starts off, so the run
    // really switches it on (and off).
    let start_off = s.resource.sim_api && endpoint.url.is_none();
    let sim = settings::sim_for(&args.endpoint, &args.sim, s.gpus)?;
    let target = Target::open_with(&endpoint, sim, start_off).await?;
    let result = job::run_on(&s, &endpoint, &target, prepared, interrupt).await;
    target.close().await;
    result.map(|r| r.status)
}

/// `--shard K/N`, `auto/N` or `auto`: the index from the job system, the count from `auto/N`,
/// else the plan's `shards`, else `SIZEUP_SHARDS`, else the job system's (see
/// [`batch::resolve_auto`], which refuses where the scheduler's variables are ambiguous).
pub fn parse_shard_flag(s: &str, plan_shards: Option<u64>) -> anyhow::Result<(u64, u64)> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix("auto") {
        let count = match rest.strip_prefix('/') {
            Some(n) => match n.trim().parse::<u64>() {
                Ok(n) if n > 0 => Some((n, format!("--shard auto/{n}"))),
                _ => {
                    return Err(usage_error(
                        format!("--shard {s:?}: the count after auto/ must be a whole number of at least 1"),
                        Some("e.g. --shard auto/4 for a job split into 4 shards".into()),
                    ))
                }
            },
            None if rest.is_empty() => plan_shards.map(|n| (n, "the plan's shards".to_string())),
            None => return Err(shard_usage(s)),
        };
        let resolved =
            batch::resolve_auto(|k| std::env::var(k).ok(), count).map_err(|r| usage_error(r.message, Some(r.hint)))?;
        ui::info(format!(
            "--shard auto: shard {}/{} (index from {}, count from {})",
            resolved.index, resolved.count, resolved.index_from, resolved.count_from
        ));
        return Ok((resolved.index, resolved.count));
    }
    let shard = batch::parse_shard(s).map_err(|_| shard_usage(s))?;
    if let Some(n) = plan_shards.filter(|&n| n != shard.1) {
        ui::warn(format!(
            "--shard {s}: the plan was made for {n} shards; {} shards share its concurrency",
            shard.1
        ));
    }
    Ok(shard)
}

fn shard_usage(s: &str) -> anyhow::Error {
    usage_error(
        format!("--shard: invalid shard {s:?} (expected K/N with 0 <= K < N, auto or auto/N)"),
        Some("use K/N with 0 <= K < N, e.g. --shard 0/4; or auto/N in a job array".into()),
    )
}

fn default_output(input: &Path) -> PathBuf {
    if input.as_os_str() == "-" {
        return PathBuf::from("stdin.output.jsonl");
    }
    // A compressed input gets an output compressed the same way: jobs.jsonl.gz -> jobs.output.jsonl.gz.
    let compression = batch::Compression::from_path(input);
    let stem = batch::compress::strip_ext(input)
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "batch".into());
    input.with_file_name(format!("{stem}.output.jsonl{}", compression.suffix()))
}

/// Validates `run`'s flags into settings.
pub fn settings_from_args(a: &RunArgs) -> anyhow::Result<RunSettings> {
    let (mut tuning, resource) = settings::run_tuning(&a.tuning)?;
    let plan = a.plan.as_deref().map(read_plan).transpose()?;
    // A plan at a hosted API's rate limit holds its rate as --rate does, unless one is given.
    let rate = match (a.tuning.rate, plan.as_ref().and_then(|p| p.limit.as_ref())) {
        (None, Some(l)) => {
            ui::info(format!(
                "plan: the endpoint's rate limit sizes this job: {} in flight at --rate {:.0}",
                plan.as_ref().map_or(0, |p| p.total_concurrency),
                l.run_rpm
            ));
            Some(l.run_rpm)
        }
        (given, _) => given,
    };
    tuning.rate = rate;
    // A plan that compared options holds the chosen one's settings at its top level.
    if let Some(p) = plan.as_ref().filter(|p| p.options.len() > 1) {
        ui::info(format!(
            "plan: the chosen option `{}` of {}: {} GPUs, concurrency {}",
            p.name.as_deref().unwrap_or("?"),
            p.options.len(),
            p.gpus,
            p.total_concurrency
        ));
    }
    let concurrency = match (a.concurrency, &plan) {
        (Some(0), _) => return Err(usage_error("--concurrency must be at least 1", None)),
        (Some(c), _) => c,
        (None, Some(p)) => p.total_concurrency,
        (None, None) => return Err(usage_error("give --concurrency N or --plan plan.json", None)),
    };
    let plan_shards = plan.as_ref().and_then(|p| p.shards);
    let shard = a
        .shard
        .as_deref()
        .map(|f| parse_shard_flag(f, plan_shards))
        .transpose()?;
    // A plan's concurrency and a --rate are the whole job's: each shard takes its share. An
    // explicit --concurrency is this process's own.
    let share = shard.and_then(|(k, n)| {
        let total = match (a.concurrency, &plan) {
            (None, Some(p)) => Some(p.total_concurrency),
            _ => None,
        };
        match total {
            Some(t) => Some(ShardShare::new(k, n, t, rate, a.tuning.max_tokens_per_minute)),
            None => (rate.is_some() || a.tuning.max_tokens_per_minute.is_some()).then(|| ShardShare {
                concurrency,
                total_concurrency: concurrency.saturating_mul(n as u32),
                ..ShardShare::new(k, n, concurrency, rate, a.tuning.max_tokens_per_minute)
            }),
        }
    });
    let concurrency = match (share, a.concurrency) {
        (Some(sh), None) => sh.concurrency,
        _ => concurrency,
    };
    if let Some(sh) = share {
        let rate = sh.rate_rpm.map_or(String::new(), |r| format!(", rate {r:.0} RPM"))
            + &sh
                .tokens_per_minute
                .map_or(String::new(), |r| format!(", {r:.0} tokens per minute"));
        ui::info(format!(
            "shard {}/{}: concurrency {} of the job's {}{rate}",
            sh.index, sh.count, concurrency, sh.total_concurrency
        ));
        if u64::from(sh.total_concurrency) < sh.count {
            ui::warn(format!(
                "{} shards share a concurrency of {}: each keeps 1 in flight, {} in all",
                sh.count, sh.total_concurrency, sh.count
            ));
        }
    }
    let output = a.output.clone().unwrap_or_else(|| default_output(&a.input));
    let summary_path = a
        .summary
        .clone()
        .unwrap_or_else(|| output.with_file_name("run-summary.json"));
    if a.tuning.hold_rate == Some(true) && plan.is_none() {
        return Err(usage_error(
            "--hold-rate holds a plan's rate, and there is no --plan",
            Some("give --plan plan.json (from `sizeup plan` or `sizeup auto`)".into()),
        ));
    }
    let mut s = RunSettings {
        input: a.input.clone(),
        format: a.tuning.format,
        output,
        summary_path,
        concurrency,
        gpus: a.gpus.or(plan.as_ref().map(|p| p.gpus)).unwrap_or(1),
        plan,
        resume: a.resume,
        shard,
        share,
        tuning,
        resource,
        hold: None,
    };
    // `run` holds the rate only when asked: its concurrency is what the user set.
    s.hold = s.hold_spec(a.tuning.hold_rate == Some(true), None);
    Ok(s)
}
