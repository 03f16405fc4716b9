//! `sizeup plan`: GPUs, concurrency, duration and cost from a sweep folder. Reads files only;
//! never touches the network (this module imports neither the client nor the engine).

use crate::batch::mix::MixSums;
use crate::batch::{Payload, ReadOptions, Reader};
use crate::cli::{EstimateChoice, PlanArgs, PlanTuning, SloArgs};
use crate::planner::{self, CapacityModel, Estimate, Plan, PlanError, PlanInput, SweepLevel, WorkloadMix};
use crate::report::{Summary, SweepMix};
use crate::ui::{self, unmet_error, usage_error, ExitStatus};
use std::io::Write;
use std::path::Path;

/// Reads `summary.json` of a sweep folder, with errors that name the file.
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

/// Counts the requests of a batch file and sums their stated sizes (streamed; invalid lines
/// are not counted).
pub fn scan_job(path: &Path, format: Option<crate::batch::Format>, api: crate::api::Api) -> anyhow::Result<MixSums> {
    let reader = Reader::open(path, format, ReadOptions::new(api)).map_err(|e| usage_error(e.to_string(), None))?;
    let mut mix = MixSums::default();
    let mut bad = 0u64;
    for item in reader {
        match item {
            Ok(item) => match &item.body {
                Payload::Body(v) => mix.add(v),
                Payload::Raw(r) => mix.add(&r.to_value()),
                Payload::Prompt { prompt, .. } => mix.add(&serde_json::json!({ "prompt": prompt })),
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
    Ok(mix)
}

/// The job's mean request in tokens, estimated from its file with the sweep's ratios: prompt
/// bytes x the sweep's tokens per byte, asked output tokens x the sweep's answered share.
fn job_mix(job: &MixSums, sweep: &SweepMix) -> Option<(f64, f64, String)> {
    let prompt = job.prompt_bytes_mean()? * sweep.tokens_per_prompt_byte?;
    let (output, how) = match (job.requested_tokens_mean(), sweep.output_per_requested_token) {
        (Some(asked), Some(share)) => (asked * share, "estimated from the file"),
        // The job does not say how long its answers are: as long as the sweep's.
        _ => (
            sweep.output_tokens_mean,
            "prompts from the file, output as in the sweep",
        ),
    };
    Some((prompt, output, how.to_string()))
}

/// Builds and checks the plan; errors carry the right exit code.
pub fn make_plan(
    summary: &Summary,
    sweep: &Path,
    target_rpm: f64,
    requests: Option<u64>,
    job: Option<&MixSums>,
    slo: &SloArgs,
    t: &PlanTuning,
) -> anyhow::Result<Plan> {
    let measured: Vec<&crate::report::LevelRow> = summary.levels.iter().filter(|l| l.rpm.is_finite()).collect();
    let mut input = PlanInput {
        // A level without data (too few requests finished) says nothing about capacity.
        levels: measured
            .iter()
            .map(|l| SweepLevel {
                concurrency: l.concurrency,
                rpm: l.rpm,
                rpm_ci_low: l.rpm_ci_low,
                rpm_ci_high: l.rpm_ci_high,
                latency_p95_ms: l.latency_p95_ms,
                ttft_p95_ms: l.ttft_p95_ms,
                error_rate: l.error_rate,
            })
            .collect(),
        sweep_gpus: summary.gpus,
        target_rpm,
        headroom: t.headroom,
        estimate: match t.estimate {
            EstimateChoice::Low => Estimate::Low,
            EstimateChoice::Mean => Estimate::Mean,
        },
        max_latency_p95_ms: slo.max_latency_p95_ms,
        max_ttft_p95_ms: slo.max_ttft_p95_ms,
        max_error_rate: slo.max_error_rate,
        max_gpus: t.max_gpus,
        requests,
        gpu_hour_cost: t.gpu_hour_cost,
        startup_s: t.startup_s,
    };
    // The mix the plan is for: the job's (estimated from its file) or the sweep's own.
    let sweep_mix = summary.workload;
    let sweep_tokens = sweep_mix.map(|m| (m.prompt_tokens_mean.unwrap_or(0.0), m.output_tokens_mean));
    let mut mix = sweep_tokens.map(|(p, o)| (p, o, "sweep".to_string()));
    let mut model_used = false;
    if let (Some(job), Some(sm), Some((sp, so))) = (job, sweep_mix, sweep_tokens) {
        match job_mix(job, &sm) {
            Some((jp, jo, how)) => {
                ui::info(format!(
                    "mix: the sweep's requests averaged {sp:.0} prompt + {so:.0} output tokens; the job's {jp:.0} + {jo:.0} ({how})"
                ));
                let differs = |a: f64, b: f64| (a - b).abs() > 0.1 * b.max(1.0);
                if differs(jp, sp) || differs(jo, so) {
                    let fits: Vec<_> = measured.iter().map(|l| l.capacity_model).collect();
                    match planner::rescale_for_mix(&mut input.levels, &fits, jp, jo) {
                        Ok(()) => {
                            model_used = true;
                            ui::info("the job's mix differs from the sweep's by more than 10%: sized with the capacity model");
                        }
                        Err(why) => ui::warn(format!(
                            "the job's mix differs from the sweep's by more than 10%, but {why}: sized on the sweep as measured (sweep with a sample of this job for a true figure)"
                        )),
                    }
                }
                mix = Some((jp, jo, how));
            }
            None => ui::warn(
                "the sweep recorded no token counts to relate to the job's file: sized on the sweep as measured",
            ),
        }
    }
    let mut plan = planner::plan(&input).map_err(|e| match e {
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
    })?;
    plan.sweep = sweep.display().to_string();
    if let Some((p, o, source)) = mix {
        plan.workload = Some(WorkloadMix {
            requests: job.map(|j| j.requests).or(requests),
            prompt_tokens_mean: p,
            output_tokens_mean: o,
            source,
        });
        let (tps, usd) = planner::token_figures(plan.rpm_per_gpu, p, o, t.gpu_hour_cost);
        plan.tokens_per_s_per_gpu = Some(tps);
        plan.usd_per_million_tokens = usd;
    }
    if model_used {
        plan.capacity_model = measured
            .iter()
            .find(|l| l.concurrency == plan.chosen_concurrency)
            .and_then(|l| l.capacity_model)
            .map(|f| CapacityModel {
                a_ms: f.a_ms,
                b_ms_per_prompt_token: f.b_ms_per_prompt_token,
                c_ms_per_output_token: f.c_ms_per_output_token,
                r2: f.r2,
            });
    }
    Ok(plan)
}

pub fn write_plan(plan: &Plan, out: &Path) -> anyhow::Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        super::ensure_dir(dir)?;
    }
    let text = serde_json::to_string_pretty(plan)? + "\n";
    crate::files::write_whole(out, text.as_bytes())
}

pub fn run(args: PlanArgs) -> anyhow::Result<ExitStatus> {
    args.slo.validate()?;
    let summary = read_sweep(&args.sweep)?;
    let job = match &args.input {
        Some(path) => {
            let api = summary.api.parse().unwrap_or(crate::api::Api::Completions);
            Some(scan_job(path, args.format, api)?)
        }
        None => None,
    };
    let requests = job.as_ref().map(|j| j.requests).or(args.requests);
    let plan = make_plan(
        &summary,
        &args.sweep,
        args.target_rpm,
        requests,
        job.as_ref(),
        &args.slo,
        &args.tuning,
    )?;
    write_plan(&plan, &args.out)?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(&plan)?)?;
    } else {
        writeln!(stdout, "{}", planner::explain(&plan).trim_end())?;
    }
    stdout.flush()?;
    ui::info(format!("plan written to {}", args.out.display()));
    Ok(ExitStatus::Success)
}
