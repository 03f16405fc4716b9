//! `sizeup plan`: GPUs, concurrency, duration and cost from sweep folders. Reads files only;
//! never touches the network (this module imports neither the client nor the engine).

use super::settings;
use crate::cli::PlanArgs;
use crate::planner::{self, JobSpec, Objective, Question, RateGoal, SweepOption};
use crate::sizing::{chosen, decide, folder_name, read_sweep, scan_job, spread_over_replicas, write_plan, CacheReplay};
use crate::ui::{self, usage_error, ExitStatus};
use std::io::Write;

pub fn run(args: PlanArgs) -> anyhow::Result<ExitStatus> {
    let slo = settings::slo(&args.slo)?;
    let summaries = args
        .sweep
        .iter()
        .map(|d| read_sweep(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut replay = None;
    let job = match &args.input {
        Some(path) => {
            let api = summaries[0].api;
            let (tokens, from) = match args.prefix_cache_tokens {
                Some(t) => (t, "--prefix-cache-tokens"),
                None => match summaries.iter().find_map(|s| s.server.as_ref()?.prefix_cache_tokens) {
                    Some(t) => (t, "the sweep's server (cache_config_info)"),
                    None => (
                        crate::sizing::DEFAULT_CACHE_TOKENS,
                        "the default; the sweep's server did not say",
                    ),
                },
            };
            if tokens > 0 {
                ui::info(format!(
                    "prefix cache: the job's lines are replayed through a cache of {} tokens ({from})",
                    ui::thousands(tokens as f64)
                ));
            }
            let per_byte = summaries[0].workload.and_then(|w| w.tokens_per_prompt_byte);
            let r = CacheReplay::new(tokens, per_byte);
            replay = Some((path.as_path(), api, r));
            Some(scan_job(path, args.format, api, r)?)
        }
        None => None,
    };
    let requests = job.as_ref().map(|j| j.requests).or(args.requests);
    let rate = match (args.target_rpm, args.deadline) {
        (Some(r), _) => RateGoal::Rpm(r),
        (None, Some(d)) => RateGoal::Deadline(d.as_secs_f64()),
        // clap requires one of the two.
        (None, None) => return Err(usage_error("give --target-rpm RPM or --deadline DURATION", None)),
    };
    let options: Vec<SweepOption> = summaries
        .iter()
        .zip(&args.sweep)
        .map(|(summary, dir)| SweepOption {
            summary,
            sweep: dir.display().to_string(),
            folder_name: folder_name(dir),
        })
        .collect();
    let objective = settings::objective(args.objective);
    let question = Question {
        options: &options,
        rate,
        job: JobSpec {
            requests,
            mix: job.as_ref(),
            slo,
            sizing: settings::sizing(&args.tuning),
        },
        objective,
        budget_usd: args.budget,
    };
    let choice = decide(&question)?;
    let several = options.len() > 1;
    let mut stdout = std::io::stdout().lock();
    let plan = match chosen(&choice) {
        Ok(plan) => plan,
        Err(e) => {
            // The comparison is the data that shows how far each option falls short.
            if several && !args.json {
                write!(stdout, "{}", planner::options_table(&choice))?;
                stdout.flush()?;
            }
            return Err(e);
        }
    };
    let mut plan = planner::Plan {
        shards: args.shards,
        ..plan
    };
    if let Some((path, api, r)) = replay {
        spread_over_replicas(&question, &mut plan, (path, args.format, api), r)?;
    }
    write_plan(&plan, &args.out)?;
    if args.json {
        writeln!(stdout, "{}", plan.to_json())?;
    } else {
        if several {
            writeln!(stdout, "{}", planner::options_table(&choice))?;
            writeln!(
                stdout,
                "chosen: `{}` ({} {}); its plan:",
                plan.name.as_deref().unwrap_or(""),
                match objective {
                    Objective::Cost => "the cheapest that meets",
                    Objective::Time => "the fastest that meets",
                },
                limits_words(&args)
            )?;
        }
        writeln!(stdout, "{}", planner::explain(&plan).trim_end())?;
    }
    stdout.flush()?;
    ui::info(format!("plan written to {}", args.out.display()));
    if let Some(why) = planner::limit_unmet(&plan) {
        // The plan stands (the job runs at the limit); the goal is what is unmet.
        return Err(ui::unmet_error(
            why,
            Some("ask the provider for a higher limit (or use more keys or deployments), or lower --target-rpm".into()),
        ));
    }
    Ok(ExitStatus::Success)
}

/// "the deadline, --max-gpus 4 and --budget $500" for the chosen line.
fn limits_words(args: &PlanArgs) -> String {
    let mut parts = vec![if args.deadline.is_some() {
        "the deadline".to_string()
    } else {
        "the target".to_string()
    }];
    if let Some(m) = args.tuning.max_gpus {
        parts.push(format!("--max-gpus {m}"));
    }
    if let Some(b) = args.budget {
        parts.push(format!("--budget ${b}"));
    }
    match parts.len() {
        1 => parts.remove(0),
        _ => {
            let last = parts.pop().unwrap_or_default();
            format!("{} and {last}", parts.join(", "))
        }
    }
}
