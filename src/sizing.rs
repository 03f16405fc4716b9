//! Planning with files: the sweeps' summary.json and the job file read (with errors that name
//! the file, and `schema_version` checked), [`planner::for_sweeps`] asked, its notes told to
//! the person, its errors given their exit codes, and plan.json written and read back. The
//! pure planner below knows none of this; `plan` and `auto` share it.

use crate::api::Api;
use crate::batch::{Format, Payload, ReadOptions, Reader};
use crate::model::{schema, MixSums, Summary};
use crate::planner::{self, Choice, Note, Plan, PlanError, Question};
use crate::ui::{self, unmet_error, usage_error};
use std::path::Path;

/// Reads `summary.json` of a sweep folder (or the file itself).
pub fn read_sweep(dir: &Path) -> anyhow::Result<Summary> {
    let path = if dir.is_dir() {
        dir.join("summary.json")
    } else {
        dir.to_path_buf()
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        usage_error(
            format!("cannot read sweep summary {}: {e}", path.display()),
            Some("--sweep takes the folder a `sizeup sweep` wrote (it holds summary.json)".into()),
        )
    })?;
    schema::check(&path.display().to_string(), &text, schema::SUMMARY).map_err(|m| usage_error(m, None))?;
    let summary: Summary = serde_json::from_str(&text).map_err(|e| {
        usage_error(
            format!("{}:{}: not a sizeup sweep summary: {e}", path.display(), e.line()),
            Some("re-run `sizeup sweep`, or restore the file; edited summaries must keep every field".into()),
        )
    })?;
    if summary.levels.is_empty() {
        return Err(usage_error(
            format!("{}: the sweep has no measured levels", path.display()),
            None,
        ));
    }
    if summary.gpus == 0 {
        return Err(usage_error(
            format!("{}: \"gpus\" must be at least 1", path.display()),
            None,
        ));
    }
    Ok(summary)
}

/// The label of a sweep given as `dir`: its folder's name (`plan` shows it when the sweep
/// recorded no `--name`).
pub fn folder_name(dir: &Path) -> String {
    let folder = if dir.is_dir() { Some(dir) } else { dir.parent() };
    folder
        .and_then(|d| d.file_name())
        .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().to_string())
}

/// Tokens of prefix cache per replica a job is replayed through when neither the user nor the
/// server says: a vLLM replica's KV pool on one large GPU.
pub const DEFAULT_CACHE_TOKENS: u64 = 1_000_000;

/// How a job's file is replayed through prefix caches to estimate what its lines share.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CacheReplay {
    /// Each replica's cache, tokens (0: no cache).
    pub tokens: u64,
    /// Bytes of one cache block of 16 tokens, at the sweep's own tokens per prompt byte.
    pub block_bytes: usize,
    /// Replicas, each with its own cache, the lines are spread over round-robin (1: one
    /// cache, as a router that keeps related lines on one replica gives).
    pub replicas: u32,
}

impl CacheReplay {
    /// One cache of `tokens`, cut in blocks at the sweep's `tokens_per_byte` (from `usage`;
    /// 4 bytes a token where the sweep did not say).
    pub fn new(tokens: u64, tokens_per_byte: Option<f64>) -> CacheReplay {
        let block_bytes = tokens_per_byte
            .filter(|t| t.is_finite() && *t > 0.0)
            .map_or(crate::hash::BLOCK_BYTES, |t| {
                ((crate::stats::prefix::BLOCK_TOKENS as f64 / t).round() as usize).clamp(8, 1024)
            });
        CacheReplay {
            tokens,
            block_bytes,
            replicas: 1,
        }
    }
}

/// Counts the requests of a batch file and sums their stated sizes (streamed; invalid lines
/// are not counted), replaying them in file order through `replay`'s caches: what they share.
pub fn scan_job(path: &Path, format: Option<Format>, api: Api, replay: CacheReplay) -> anyhow::Result<MixSums> {
    let reader = Reader::open(path, format, ReadOptions::new(api)).map_err(|e| usage_error(e.to_string(), None))?;
    let mut mix = MixSums::default();
    let mut bad = 0u64;
    let mut pools: Vec<_> = (0..replay.replicas.max(1))
        .map_while(|_| crate::stats::prefix::PrefixCache::new(replay.tokens))
        .collect();
    let mut cached = 0u64;
    let mut add = |mix: &mut MixSums, body: &serde_json::Value| {
        let line = mix.requests as usize;
        mix.add(body);
        if !pools.is_empty() {
            let n = pools.len();
            let text = crate::model::prompt_text(body);
            let hits = pools[line % n].admit(&crate::hash::byte_blocks_of(text.as_bytes(), replay.block_bytes));
            cached += ((hits * replay.block_bytes) as u64).min(crate::model::prompt_bytes(body));
        }
    };
    for item in reader {
        match item {
            Ok(item) => match &item.body {
                Payload::Body(v) => add(&mut mix, v),
                Payload::Raw(r) => add(&mut mix, &r.to_value()),
                Payload::Prompt { prompt, .. } => add(&mut mix, &serde_json::json!({ "prompt": prompt })),
            },
            Err(issue) if issue.fatal => return Err(usage_error(issue.to_string(), None)),
            Err(_) => bad += 1,
        }
    }
    if bad > 0 {
        ui::warn(format!(
            "{}: {bad} invalid lines not counted (`sizeup run` lists them)",
            path.display()
        ));
    }
    if replay.tokens >= crate::stats::prefix::BLOCK_TOKENS {
        mix.cached_prompt_bytes = Some(cached);
    }
    Ok(mix)
}

/// A job whose lines share prefixes, planned for several replicas: each keeps its own cache,
/// so the plan's share (one cache, as a router that keeps related lines on one replica gives)
/// is set beside the job's lines spread round-robin over the plan's replicas, and a plan at
/// that share; recorded in plan.json's `prefix_cache`, and told to the person where it
/// differs. `job` is the file the question's mix was read from, replayed with `replay`.
pub fn spread_over_replicas(
    q: &Question,
    plan: &mut Plan,
    job: (&Path, Option<Format>, Api),
    replay: CacheReplay,
) -> anyhow::Result<()> {
    let Some(pc) = plan.prefix_cache.as_mut() else {
        return Ok(());
    };
    pc.cache_tokens = Some(replay.tokens);
    // Stdin cannot be read again; a sweep that saw no cache figures sized on no share.
    if plan.gpus < 2
        || plan.limit.is_some()
        || pc.job_share < 0.01
        || pc.sweep_share.is_none()
        || job.0.as_os_str() == "-"
    {
        return Ok(());
    }
    let spread = scan_job(
        job.0,
        job.1,
        job.2,
        CacheReplay {
            replicas: plan.gpus,
            ..replay
        },
    )?;
    let Some(share) = spread.prefix_share() else {
        return Ok(());
    };
    pc.round_robin_share = Some(share);
    pc.round_robin_gpus = Some(plan.gpus);
    pc.round_robin_rpm_per_gpu = Some(plan.rpm_per_gpu);
    if share >= pc.sized_share - 0.10 {
        return Ok(());
    }
    // The same question at the spread share, for the chosen option only (its sweeps at every
    // size), asked quietly: only its GPU count is told.
    let chosen: Vec<planner::SweepOption> = q
        .options
        .iter()
        .filter(|o| o.sweep == plan.sweep || (o.summary.name.is_some() && o.summary.name == plan.name))
        .map(|o| planner::SweepOption {
            summary: o.summary,
            sweep: o.sweep.clone(),
            folder_name: o.folder_name.clone(),
        })
        .collect();
    let again = Question {
        options: if chosen.is_empty() { q.options } else { &chosen },
        rate: q.rate,
        job: planner::JobSpec {
            requests: q.job.requests,
            mix: Some(&spread),
            slo: q.job.slo,
            sizing: q.job.sizing,
        },
        objective: q.objective,
        budget_usd: q.budget_usd,
    };
    let spread_plan = planner::for_sweeps(&again)
        .ok()
        .and_then(|a| planner::chosen(&a.choice).ok());
    let gpus = spread_plan.as_ref().map(|p| p.gpus);
    pc.round_robin_gpus = gpus;
    pc.round_robin_rpm_per_gpu = spread_plan.map(|p| p.rpm_per_gpu);
    ui::warn(format!(
        "prefix cache: the plan assumes the job's lines share {:.0}% of their prompt, as one cache (or a router that keeps related lines on one replica) gives; spread round-robin over {} replicas, each with its own cache, they share {:.0}%, and need at least {} (more replicas share less again)",
        pc.sized_share * 100.0,
        plan.gpus,
        share * 100.0,
        gpus.map_or("more GPUs than any option meets".to_string(), |g| format!("{g} GPUs")),
    ));
    Ok(())
}

/// Sizes every option and chooses one, telling the person the planner's notes. Bad input is
/// an error (exit 2); an unmet goal stays in the choice, for [`chosen`].
pub fn decide(q: &Question) -> anyhow::Result<Choice> {
    let target = match q.rate {
        planner::RateGoal::Rpm(r) => r,
        planner::RateGoal::Deadline(_) => 0.0,
    };
    let answer = planner::for_sweeps(q).map_err(|e| plan_error(e, target))?;
    for note in answer.notes {
        match note {
            Note::Info(m) => ui::info(m),
            Note::Warn(m) => ui::warn(m),
        }
    }
    Ok(answer.choice)
}

/// The chosen option's plan, or the unmet goal as an error (exit 1).
pub fn chosen(choice: &Choice) -> anyhow::Result<Plan> {
    planner::chosen(choice).map_err(|e| {
        let target = choice
            .options
            .first()
            .and_then(|o| o.plan.as_ref())
            .map_or(0.0, |p| p.target_rpm);
        plan_error(e, target)
    })
}

/// A planner error as the user sees it, with its exit code (2 for bad input, 1 for a goal
/// no option meets).
fn plan_error(e: PlanError, target_rpm: f64) -> anyhow::Error {
    match e {
        PlanError::Invalid(msg) => usage_error(msg, None),
        PlanError::NoLevelMeetsSlo(msg) => unmet_error(
            msg,
            Some("relax the SLO flags, or sweep lower concurrency levels".into()),
        ),
        PlanError::Unreachable {
            max_gpus,
            reachable_rpm,
            needed_gpus,
        } => unmet_error(
            format!(
                "{} RPM needs {needed_gpus} GPUs, more than --max-gpus {max_gpus}; {max_gpus} GPUs reach about {} RPM",
                ui::thousands(target_rpm),
                ui::thousands(reachable_rpm)
            ),
            Some("raise --max-gpus, lower --target-rpm or --headroom".into()),
        ),
        PlanError::CannotPrice(msg) => unmet_error(
            msg,
            Some(
                "sweep again with --cache-bust (nothing shared, every prompt token priced) and plan with that sweep"
                    .into(),
            ),
        ),
        PlanError::Unmet(msg) => unmet_error(
            msg,
            Some("raise --max-gpus or --budget, allow a later --deadline, or lower --headroom".into()),
        ),
    }
}

/// Writes plan.json whole (temp file + rename), making its folder.
pub fn write_plan(plan: &Plan, out: &Path) -> anyhow::Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::files::ensure_dir(dir)?;
    }
    let text = plan.to_json() + "\n";
    crate::files::write_whole(out, text.as_bytes())
}

/// Reads a plan.json that `plan` or `auto` wrote.
pub fn read_plan(path: &Path) -> anyhow::Result<Plan> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage_error(format!("cannot read plan {}: {e}", path.display()), None))?;
    schema::check(&path.display().to_string(), &text, schema::PLAN).map_err(|m| usage_error(m, None))?;
    let plan: Plan = serde_json::from_str(&text).map_err(|e| {
        usage_error(
            format!("{}:{}: not a sizeup plan: {e}", path.display(), e.line()),
            Some("make one with `sizeup plan`".into()),
        )
    })?;
    let mut plan = plan;
    if plan.gpus == 0 {
        if plan.limit.is_none() {
            return Err(usage_error(
                format!(
                    "{}: gpus is null, but no `limit` says what sizes the job",
                    path.display()
                ),
                Some("make one with `sizeup plan`".into()),
            ));
        }
        // A plan at a rate limit: the resource keeps the sweep's GPUs.
        plan.gpus = plan.sweep_gpus.max(1);
    }
    if plan.total_concurrency == 0 {
        return Err(usage_error(
            format!("{}: total_concurrency must be at least 1", path.display()),
            None,
        ));
    }
    Ok(plan)
}
