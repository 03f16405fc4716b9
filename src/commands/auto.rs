//! `sizeup auto`: sweep on a sample of the input, plan for the target rate, ask, run.
//! Every artifact lands in one folder.

use crate::cli::AutoArgs;
use crate::engine::Stop;
use crate::job::{open_output, run_on, validate_input, RunSettings};
use crate::measure::{max_level, measure, BodySpec, Levels, Settings, Workload};
use crate::resource::Lifecycle;
use crate::target::Target;
use crate::ui::{self, usage_error, ExitStatus};
use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

pub async fn run(mut args: AutoArgs, interrupt: Stop) -> anyhow::Result<ExitStatus> {
    super::resolve_api(&mut args.endpoint, Some(&args.input), args.tuning.format)?;
    if !(args.target_rpm.is_finite() && args.target_rpm > 0.0) {
        return Err(usage_error(
            format!("--target-rpm must be a positive number, got {}", args.target_rpm),
            None,
        ));
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
    let requests = valid.unwrap_or(0);
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
        let spec = BodySpec {
            api: args.endpoint.api,
            max_tokens: args.tuning.max_tokens,
            field: args.endpoint.max_tokens_field,
            stream,
            model,
        };
        let workload = Arc::new(Workload::sampled(&args.input, format, args.sample, args.sim.seed, spec)?);
        let client = Arc::new(target.client(&args.endpoint, max_level(&settings.levels))?);
        ui::info(format!("sweep: sampling {} requests of {}", args.sample.min(requests as usize), args.input.display()));
        let swept = measure(&settings, client, workload.clone(), &out, &target, interrupt.drain.clone()).await?;
        if swept.interrupted {
            return Ok(ExitStatus::Interrupted);
        }
        let plan = super::plan::make_plan(&swept.summary, &out, args.target_rpm, Some(requests), None, &args.slo, &args.plan)?;
        super::plan::write_plan(&plan, &out.join("plan.json"))?;
        {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{}", crate::planner::explain(&plan).trim_end())?;
            stdout.flush()?;
        }

        if !args.yes {
            if !std::io::stdin().is_terminal() {
                ui::info(format!(
                    "plan written to {}; not running (no terminal to ask, and no --yes)",
                    out.join("plan.json").display()
                ));
                return Ok(ExitStatus::Success);
            }
            eprint!("run {requests} requests on {} GPUs at concurrency {}? [y/N] ", plan.gpus, plan.total_concurrency);
            let mut answer = String::new();
            std::io::stdin().lock().read_line(&mut answer)?;
            if !matches!(answer.trim(), "y" | "Y" | "yes") {
                ui::info("not running");
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
                verify(&settings, &target, &args, workload.clone(), &plan, &out, &interrupt).await?;
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
        let predicted = plan.expected_duration_s;
        run_settings.plan = Some(plan);
        let prepared = open_output(&run_settings, valid)?;
        run_started = true;
        let outcome = run_on(&run_settings, &args.endpoint, &target, prepared, interrupt).await?;
        if let Some(p) = predicted {
            ui::info(format!(
                "predicted {p:.1}s, achieved {:.1}s ({:+.1}%); {} RPM achieved",
                outcome.wall_time_s,
                (outcome.wall_time_s / p - 1.0) * 100.0,
                ui::thousands(outcome.achieved_rpm)
            ));
        }
        ui::info(format!("all artifacts in {}/", out.display()));
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
    let r = measure(&s, client, workload, &dir, target, interrupt.drain.clone()).await?;
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
