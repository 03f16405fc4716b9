//! `sizeup auto`: sweep on a sample of the input, plan for the target rate, ask, run.
//! Every artifact lands in one folder.

use super::plan::RateGoal;
use crate::batch::OutputWriter;
use crate::cli::AutoArgs;
use crate::engine::Stop;
use crate::job::{open_output, run_on, validate_input, RunSettings};
use crate::measure::{max_level, measure, BodySpec, Levels, Settings, Workload};
use crate::report::Section;
use crate::resource::Lifecycle;
use crate::target::Target;
use crate::ui::{self, usage_error, ExitStatus};
use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

/// The most input lines a sweep holds in memory (its sample), whatever the job's size.
const MAX_SWEEP_LINES: usize = 100_000;
/// The sweep may always use this many lines (or the whole job, if smaller): a 20% budget of
/// a small job is too few requests to measure anything.
const MIN_SWEEP_LINES: usize = 1_000;

pub async fn run(mut args: AutoArgs, interrupt: Stop) -> anyhow::Result<ExitStatus> {
    super::resolve_api(&mut args.endpoint, Some(&args.input), args.tuning.format)?;
    // A deadline counts from now: the sweep's time is part of it.
    let started = std::time::Instant::now();
    if let Some(r) = args.target_rpm {
        if !(r.is_finite() && r > 0.0) {
            return Err(usage_error(
                format!("--target-rpm must be a positive number, got {r}"),
                None,
            ));
        }
    }
    if args.deadline.is_some_and(|d| d.is_zero()) {
        return Err(usage_error("--deadline must be longer than 0s", None));
    }
    let settings = Settings::from_args(&args.measure, &args.slo, args.gpus, &args.endpoint)?;
    let out = args.out.clone().unwrap_or_else(super::default_report_dir);
    let format = args.tuning.format;
    if args.input.as_os_str() == "-" {
        return Err(usage_error(
            "auto reads the input twice (sample, then run): give a file, not stdin",
            None,
        ));
    }
    if !(args.sweep_budget > 0.0 && args.sweep_budget <= 1.0) {
        return Err(usage_error(
            format!("--sweep-budget must be in (0, 1], got {}", args.sweep_budget),
            Some("e.g. --sweep-budget 0.2 lets the sweep answer up to 20% of the job".into()),
        ));
    }
    super::ensure_dir(&out)?;
    // Validate the whole input and open the output before any traffic.
    let mut run_settings = RunSettings {
        input: args.input.clone(),
        format,
        output: out.join("output.jsonl"),
        summary_path: out.join("run-summary.json"),
        concurrency: 1,
        plan: None,
        resume: false,
        shard: None,
        share: None,
        gpus: args.gpus,
        tuning: args.tuning.clone(),
    };
    let valid = validate_input(&run_settings, args.endpoint.api)?;
    let requests = valid.items.unwrap_or(0);
    if run_settings.output.exists() {
        return Err(usage_error(
            format!("{} already exists", run_settings.output.display()),
            Some("choose a new --out folder (or continue that run with `sizeup run --resume`)".into()),
        ));
    }

    let in_process = args.endpoint.endpoint.is_none();
    let target = Target::open(&args.endpoint, &args.sim, args.gpus).await?;
    // With --resource, the resource is on for the sweep (at the sweep's GPUs), resized to the
    // plan's for the run, and off at the end whatever happens.
    let lifecycle = Lifecycle::new(&args.tuning, &target)?;
    // `run` switches the resource off itself once it has started.
    let mut run_started = false;
    let result = async {
        lifecycle.on(args.gpus, args.tuning.ready_timeout).await?;
        let model = target.model(&args.endpoint).await?;
        let stream = !args.measure.no_stream && args.endpoint.api.streams();
        // How the sweep's (and --verify's) lines become bodies.
        let spec = || BodySpec {
            api: args.endpoint.api,
            max_tokens: args.tuning.max_tokens,
            field: args.endpoint.max_tokens_field,
            stream,
            model: model.clone(),
        };
        // The sweep is part of the job: a uniform sample of its lines, each sent once, answered
        // into the job's output; the run then sends only the lines not yet answered.
        // A small job may be swept whole: the sweep's answers are the job's, so nothing is wasted.
        let budget = ((requests as f64 * args.sweep_budget).ceil() as usize)
            .max((requests as usize).min(MIN_SWEEP_LINES))
            .clamp(1, MAX_SWEEP_LINES);
        let sample = args.sample.map_or(budget, |s| s.clamp(1, budget));
        let workload = Arc::new(Workload::sampled(&args.input, format, sample, args.sim.seed, spec())?.into_job());
        let client = Arc::new(target.client(&args.endpoint, max_level(&settings.levels))?);
        ui::info(format!(
            "sweep: up to {sample} of the {requests} requests of {} (a uniform sample; their answers go to the output)",
            args.input.display()
        ));
        let swept = {
            let mut writer = OutputWriter::create(&run_settings.output).map_err(|e| {
                usage_error(format!("cannot write output {}: {e}", run_settings.output.display()), None)
            })?;
            measure(&settings, client, workload.clone(), &out, &target, interrupt.drain.clone(), Some(&mut writer)).await?
        };
        if swept.interrupted {
            ui::hint_line(format!(
                "the sweep's answers are in {}; `sizeup run --resume --input {} --output {}` sends the rest",
                run_settings.output.display(),
                args.input.display(),
                run_settings.output.display()
            ));
            return Ok(ExitStatus::Interrupted);
        }
        let plan_tuning = args.plan.clone();
        if workload.used_up() && swept.summary.ci_met.iter().any(|met| !met) {
            ui::warn(format!(
                "the sweep budget ({} lines, --sweep-budget {}) ran out before every level's CI reached ±{:.0}%: {}",
                workload.sent().min(sample as u64),
                args.sweep_budget,
                settings.ci_width * 100.0,
                // An explicit --estimate mean is the user's call (the planner's own hint
                // suggests it when the low bound is 0): it is kept, and said.
                match plan_tuning.estimate {
                    crate::cli::EstimateChoice::Low => "the plan sizes on the CI it got (its low bound)",
                    crate::cli::EstimateChoice::Mean => "the plan sizes on the mean, as --estimate mean asks, whose CI is wider than that",
                }
            ));
        }
        let levels = &swept.summary.levels;
        let best = levels.iter().filter(|l| l.rpm.is_finite()).max_by(|a, b| a.rpm.total_cmp(&b.rpm));
        if workload.used_up() && best.is_some_and(|b| Some(b.concurrency) == levels.last().map(|l| l.concurrency)) {
            ui::warn(
                "RPM was still growing at the last level the budget allowed: the knee was not reached, so the plan asks for more GPUs than needed; raise --sweep-budget or --max-concurrency's start",
            );
        }
        let (rate, plan_requests) = match (args.target_rpm, args.deadline) {
            (Some(r), _) => (RateGoal::Rpm(r), requests),
            (None, Some(d)) => {
                // The rest of the job in the time the sweep left.
                let left = d.saturating_sub(started.elapsed());
                let rest = requests.saturating_sub(workload.sent()).max(1);
                if left.is_zero() {
                    return Err(ui::unmet_error(
                        format!("the sweep took the whole --deadline of {:.0} s", d.as_secs_f64()),
                        Some("allow a later --deadline, or a smaller --sweep-budget".into()),
                    ));
                }
                ui::info(format!(
                    "deadline: {rest} requests left for the {:.0} s of the {:.0} s deadline the sweep left",
                    left.as_secs_f64(),
                    d.as_secs_f64()
                ));
                (RateGoal::Deadline(left.as_secs_f64()), rest)
            }
            (None, None) => return Err(usage_error("give --target-rpm RPM or --deadline DURATION", None)),
        };
        let plan = super::plan::make_plan(&swept.summary, &out, rate, Some(plan_requests), None, &args.slo, &plan_tuning)?;
        super::plan::write_plan(&plan, &out.join("plan.json"))?;
        let plan_section = Section::from_lines(
            "Plan",
            &crate::planner::explain(&plan),
            super::plan::server_warnings(&swept.summary, &plan),
        );
        write_page(&swept.summary, std::slice::from_ref(&plan_section), &out)?;
        {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{}", crate::planner::explain(&plan).trim_end())?;
            stdout.flush()?;
        }

        if !args.yes {
            if !std::io::stdin().is_terminal() {
                ui::info(format!(
                    "plan written to {}; not running (no terminal to ask, and no --yes); `sizeup run --resume --input {} --output {} --plan {}` sends the rest",
                    out.join("plan.json").display(),
                    args.input.display(),
                    run_settings.output.display(),
                    out.join("plan.json").display()
                ));
                return Ok(ExitStatus::Success);
            }
            eprint!("run {requests} requests on {} GPUs at concurrency {}? [y/N] ", plan.gpus, plan.total_concurrency);
            let mut answer = String::new();
            std::io::stdin().lock().read_line(&mut answer)?;
            if !matches!(answer.trim(), "y" | "Y" | "yes") {
                ui::info(format!(
                    "not running; the sweep's answers are in {}: `sizeup run --resume --input {} --output {} --plan {}` sends the rest",
                    run_settings.output.display(),
                    args.input.display(),
                    run_settings.output.display(),
                    out.join("plan.json").display()
                ));
                return Ok(ExitStatus::Success);
            }
        }

        let resizable = in_process || args.tuning.resource.is_some();
        if in_process && args.tuning.resource.is_none() {
            // The built-in resource scales like a provider's: give it the planned GPUs.
            resize_sim(&target, plan.gpus).await?;
        }
        if args.verify {
            if resizable {
                if args.tuning.resource.is_some() {
                    lifecycle.on(plan.gpus, args.tuning.ready_timeout).await?;
                }
                // Verifying sends lines of its own, outside the job's output.
                let fresh = Arc::new(Workload::sampled(&args.input, format, 10_000, args.sim.seed ^ 1, spec())?);
                verify(&settings, &target, &args, fresh, &plan, &out, &interrupt).await?;
            } else {
                ui::warn("--verify needs a resizable resource (the built-in simulator or --resource); skipped");
            }
        }
        if args.tuning.resource.is_none() && !in_process && plan.gpus != args.gpus {
            ui::warn(format!(
                "the plan needs {} GPUs but the sweep ran on {}; make sure the endpoint has them (or use --resource / --resource-on)",
                plan.gpus, args.gpus
            ));
        }
        run_settings.concurrency = plan.total_concurrency;
        run_settings.gpus = plan.gpus;
        let planned_rpm = plan.expected_rpm;
        run_settings.plan = Some(plan);
        // The sweep's answers are in the output already: the run goes on from them.
        run_settings.resume = true;
        let prepared = open_output(&run_settings, args.endpoint.api, valid)?;
        run_started = true;
        let outcome = run_on(&run_settings, &args.endpoint, &target, prepared, interrupt).await?;
        // Predicted for the lines the run itself sent (the sweep answered the others).
        let mut run_section = Section {
            title: "Run".into(),
            rows: vec![
                ("requests sent by the run".into(), outcome.requests.to_string()),
                (
                    "answered by the sweep".into(),
                    requests.saturating_sub(outcome.requests).to_string(),
                ),
                ("achieved".into(), format!("{} RPM over {:.1} s", ui::thousands(outcome.achieved_rpm), outcome.wall_time_s)),
            ],
            notes: Vec::new(),
        };
        if planned_rpm > 0.0 && outcome.requests > 0 {
            let p = outcome.requests as f64 / planned_rpm * 60.0;
            run_section.rows.push((
                "predicted vs achieved".into(),
                format!(
                    "{p:.1} s predicted ({} RPM planned), {:.1} s achieved ({:+.1}%)",
                    ui::thousands(planned_rpm),
                    outcome.wall_time_s,
                    (outcome.wall_time_s / p - 1.0) * 100.0
                ),
            ));
            ui::info(format!(
                "run: {} requests (the sweep answered the other {}): predicted {p:.1}s, achieved {:.1}s ({:+.1}%); {} RPM achieved",
                outcome.requests,
                requests.saturating_sub(outcome.requests),
                outcome.wall_time_s,
                (outcome.wall_time_s / p - 1.0) * 100.0,
                ui::thousands(outcome.achieved_rpm)
            ));
        }
        write_page(&swept.summary, &[plan_section, run_section], &out)?;
        ui::info(format!("all artifacts in {}/ (report.html: the page to share)", out.display()));
        Ok(outcome.status)
    }
    .await;
    if !run_started {
        lifecycle.off().await;
    }
    target.close().await;
    result
}

/// Measures one level at the planned size and compares it with the plan's expected RPM.
async fn verify(
    settings: &Settings,
    target: &Target,
    args: &AutoArgs,
    workload: Arc<Workload>,
    plan: &crate::planner::Plan,
    out: &std::path::Path,
    interrupt: &Stop,
) -> anyhow::Result<()> {
    let mut s = settings.clone();
    s.gpus = plan.gpus;
    s.levels = Levels::List(vec![plan.total_concurrency]);
    let client = Arc::new(target.client(&args.endpoint, plan.total_concurrency as usize)?);
    ui::info(format!(
        "verify: measuring concurrency {} on {} GPUs",
        plan.total_concurrency, plan.gpus
    ));
    let dir = out.join("verify");
    let r = measure(&s, client, workload, &dir, target, interrupt.drain.clone(), None).await?;
    if let Some(level) = r.summary.levels.first() {
        let ratio = level.rpm / plan.expected_rpm;
        ui::info(format!(
            "verify: measured {} RPM at the planned size vs {} expected ({:+.1}%){}",
            ui::thousands(level.rpm),
            ui::thousands(plan.expected_rpm),
            (ratio - 1.0) * 100.0,
            if ratio < 0.9 {
                ": replicas do not scale linearly here; plan with a sweep at this size"
            } else {
                ""
            }
        ));
        if ratio < 0.9 {
            ui::warn("the verified rate is more than 10% below the plan; the run will take longer than predicted");
        }
    }
    Ok(())
}

/// Rewrites the folder's report.html with the command's own sections after the sweep's.
fn write_page(summary: &crate::report::Summary, sections: &[Section], out: &std::path::Path) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    crate::report::html::write_page(summary, sections, &mut buf)?;
    crate::files::write_whole(&out.join("report.html"), &buf)
}

async fn resize_sim(target: &Target, gpus: u32) -> anyhow::Result<()> {
    crate::resource::post_resource(
        target.endpoint.trim_end_matches('/'),
        None,
        &serde_json::json!({"gpus": gpus}),
    )
    .await?;
    ui::info(format!("built-in simulator resized to {gpus} GPUs for the run"));
    Ok(())
}
