//! The `auto` pipeline: sweep on a sample of the job (the sweep's answers are the job's),
//! plan for the target rate or deadline, ask, optionally verify one level at the planned
//! size, then run the rest of the job. Every artifact lands in one folder. The command
//! (`commands/auto.rs`) only turns flags into [`Settings`].

mod budget;

pub use budget::sweep_lines;

use crate::batch::{Format, OutputWriter};
use crate::engine::Stop;
use crate::job::{self, open_output, run_on, validate_input, RunOutcome, RunSettings, Tuning};
use crate::measure::{self, max_level, measure, BodySpec, Levels, SweepResult, Workload};
use crate::model::Summary;
use crate::planner::{self, JobSpec, Objective, Plan, Question, RateGoal, Sizing, SweepOption};
use crate::report::Section;
use crate::resource::{Lifecycle, ResourceSpec};
use crate::sim::SimConfig;
use crate::target::{Endpoint, Target};
use crate::ui::{self, usage_error, ExitStatus};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The rate the job must reach: a target, or a deadline counted from the start of `auto`.
#[derive(Clone, Copy, Debug)]
pub enum Goal {
    TargetRpm(f64),
    Deadline(Duration),
}

/// Everything `auto` needs, validated by the command.
pub struct Settings {
    pub endpoint: Endpoint,
    /// The built-in resource when there is no `--endpoint`.
    pub sim: SimConfig,
    /// `--seed`: the sweep's sample (and `--verify`'s, with the seed's last bit flipped).
    pub seed: u64,
    pub input: PathBuf,
    pub format: Option<Format>,
    pub goal: Goal,
    pub out: PathBuf,
    /// `--sample`: at most this many of the budget's lines.
    pub sample: Option<usize>,
    /// `--sweep-budget`, in (0, 1].
    pub sweep_budget: f64,
    /// GPUs behind the endpoint during the sweep.
    pub gpus: u32,
    pub yes: bool,
    pub verify: bool,
    pub stream: bool,
    pub measure: measure::Settings,
    pub sizing: Sizing,
    pub tuning: Tuning,
    pub resource: ResourceSpec,
}

/// Runs the pipeline; the resource is switched off and the simulator closed whatever happens.
pub async fn run(s: Settings, interrupt: Stop) -> anyhow::Result<ExitStatus> {
    // A deadline counts from now: the sweep's time is part of it.
    let started = Instant::now();
    crate::files::ensure_dir(&s.out)?;
    // Validate the whole input and open the output before any traffic.
    let mut run_settings = RunSettings {
        input: s.input.clone(),
        format: s.format,
        output: s.out.join("output.jsonl"),
        summary_path: s.out.join("run-summary.json"),
        concurrency: 1,
        plan: None,
        resume: false,
        shard: None,
        share: None,
        gpus: s.gpus,
        tuning: s.tuning.clone(),
        resource: s.resource.clone(),
        hold: None,
    };
    let valid = validate_input(&run_settings, s.endpoint.api)?;
    let requests = valid.items.unwrap_or(0);
    if run_settings.output.exists() {
        return Err(usage_error(
            format!("{} already exists", run_settings.output.display()),
            Some("choose a new --out folder (or continue that run with `sizeup run --resume`)".into()),
        ));
    }
    let target = Target::open(&s.endpoint, s.sim.clone()).await?;
    // With --resource, the resource is on for the sweep (at the sweep's GPUs), resized to the
    // plan's for the run, and off at the end whatever happens.
    let lifecycle = Lifecycle::new(&s.resource, &target)?;
    // `run` switches the resource off itself once it has started.
    let mut run_started = false;
    let result = async {
        lifecycle.on(s.gpus, s.resource.ready_timeout).await?;
        let model = target.model(&s.endpoint).await?;
        let spec = BodySpec {
            api: s.endpoint.api,
            max_tokens: s.tuning.max_tokens,
            field: s.endpoint.max_tokens_field,
            stream: s.stream,
            model,
        };
        let Some((swept, sent)) = sweep(&s, &target, &spec, requests, &run_settings.output, &interrupt).await? else {
            return Ok(ExitStatus::Interrupted);
        };
        let mut plan = plan(&s, &swept.summary, None, requests, sent, started)?;
        let plan_section = Section::from_lines(
            "Plan",
            &planner::explain(&plan),
            planner::server_warnings(&swept.summary, &plan),
        );
        write_page(&swept.summary, std::slice::from_ref(&plan_section), &s.out)?;
        print_plan(&plan)?;
        if let Some(why) = planner::limit_unmet(&plan) {
            return Err(ui::unmet_error(
                why,
                Some("ask the provider for a higher limit, or lower --target-rpm (or a later --deadline)".into()),
            ));
        }
        if !confirm(&s, &plan, requests, &run_settings.output)? {
            return Ok(ExitStatus::Success);
        }
        if let Some(verified) = prepare_resource(&s, &target, &lifecycle, &plan, &spec, &interrupt).await? {
            plan = replan(
                &s,
                &target,
                &lifecycle,
                &swept.summary,
                &verified,
                plan,
                (requests, sent, started),
            )
            .await?;
        }
        run_settings.concurrency = plan.total_concurrency;
        run_settings.gpus = plan.gpus;
        if let Some(l) = &plan.limit {
            // At a hosted API's rate limit: held at the plan's rate unless --rate says otherwise.
            run_settings.tuning.rate = run_settings.tuning.rate.or(Some(l.run_rpm));
        }
        run_settings.plan = Some(plan);
        // `auto` holds the rate it planned unless told not to.
        run_settings.hold =
            run_settings.hold_spec(s.tuning.hold_rate.unwrap_or(true), s.measure.slo.max_latency_p95_ms);
        // The sweep's answers are in the output already: the run goes on from them.
        run_settings.resume = true;
        let prepared = open_output(&run_settings, s.endpoint.api, valid)?;
        run_started = true;
        let outcome = run_on(&run_settings, &s.endpoint, &target, prepared, interrupt).await?;
        let run_section = run_section(&outcome, requests);
        write_page(&swept.summary, &[plan_section, run_section], &s.out)?;
        ui::info(format!(
            "all artifacts in {}/ (report.html: the page to share)",
            s.out.display()
        ));
        Ok(outcome.status)
    }
    .await;
    if !run_started {
        lifecycle.off().await;
    }
    target.close().await;
    result
}

/// Sweeps on a uniform sample of the job's lines, each sent once and answered into the job's
/// output (the run then sends only the lines not yet answered). `None` when interrupted;
/// else the sweep and the lines it sent.
async fn sweep(
    s: &Settings,
    target: &Target,
    spec: &BodySpec,
    requests: u64,
    output: &Path,
    interrupt: &Stop,
) -> anyhow::Result<Option<(SweepResult, u64)>> {
    let sample = sweep_lines(requests, s.sweep_budget, s.sample);
    let workload = Arc::new(Workload::sampled(&s.input, s.format, sample, s.seed, spec.clone())?.into_job());
    let client = Arc::new(target.client(&s.endpoint, max_level(&s.measure.levels))?);
    ui::info(format!(
        "sweep: up to {sample} of the {requests} requests of {} (a uniform sample; their answers go to the output)",
        s.input.display()
    ));
    let swept = {
        let mut writer = OutputWriter::create(output)
            .map_err(|e| usage_error(format!("cannot write output {}: {e}", output.display()), None))?;
        measure(
            &s.measure,
            client,
            workload.clone(),
            &s.out,
            target,
            interrupt.drain.clone(),
            Some(&mut writer),
        )
        .await?
    };
    if swept.interrupted {
        ui::hint_line(format!(
            "the sweep's answers are in {}; `sizeup run --resume --input {} --output {}` sends the rest",
            output.display(),
            s.input.display(),
            output.display()
        ));
        return Ok(None);
    }
    let lines_sent = workload.sent().min(sample as u64);
    for w in budget::budget_warnings(
        &swept.summary,
        workload.used_up(),
        lines_sent,
        s.sweep_budget,
        s.measure.ci_width,
        s.sizing.estimate,
    ) {
        ui::warn(w);
    }
    Ok(Some((swept, workload.sent())))
}

/// The plan again with the scaling `--verify` measured at the planned size (the sweep and the
/// verify level as one option at two GPU counts), the resource resized if the count changed.
async fn replan(
    s: &Settings,
    target: &Target,
    lifecycle: &Lifecycle,
    swept: &Summary,
    verified: &Summary,
    first: Plan,
    (requests, sent, started): (u64, u64, Instant),
) -> anyhow::Result<Plan> {
    if verified.gpus == swept.gpus || verified.levels.is_empty() {
        // One GPU count: nothing measured about scaling.
        return Ok(first);
    }
    let plan = plan(s, swept, Some(verified), requests, sent, started)?;
    if let Some(sc) = &plan.scaling {
        ui::info(format!(
            "verify: measured scaling x{:.2} per GPU at {} GPUs; re-planned: {} GPUs (was {}), {} RPM expected",
            sc.measured.last().map_or(1.0, |p| p.efficiency),
            verified.gpus,
            plan.gpus,
            first.gpus,
            ui::thousands(plan.expected_rpm)
        ));
    }
    if plan.gpus != first.gpus {
        if s.resource.sim_api {
            lifecycle.on(plan.gpus, s.resource.ready_timeout).await?;
        } else if s.endpoint.url.is_none() {
            resize_sim(target, plan.gpus).await?;
        }
        print_plan(&plan)?;
    }
    Ok(plan)
}

/// Plans the rest of the job from the sweep (and, with `verified`, the scaling `--verify`
/// measured) and writes plan.json. A deadline leaves the requests the sweep did not answer for
/// the time the sweep did not use.
fn plan(
    s: &Settings,
    summary: &Summary,
    verified: Option<&Summary>,
    requests: u64,
    sent: u64,
    started: Instant,
) -> anyhow::Result<Plan> {
    let (rate, plan_requests) = match s.goal {
        Goal::TargetRpm(r) => (RateGoal::Rpm(r), requests),
        Goal::Deadline(d) => {
            let left = d.saturating_sub(started.elapsed());
            let rest = requests.saturating_sub(sent).max(1);
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
    };
    // The verify level is the same option at another size: one name makes them one option.
    let name = Some(
        summary
            .name
            .clone()
            .unwrap_or_else(|| crate::sizing::folder_name(&s.out)),
    );
    let named = |sm: &Summary| Summary {
        name: name.clone(),
        ..sm.clone()
    };
    let summaries: Vec<Summary> = std::iter::once(summary).chain(verified).map(named).collect();
    let options: Vec<SweepOption> = summaries
        .iter()
        .zip([s.out.clone(), s.out.join("verify")])
        .map(|(summary, dir)| SweepOption {
            summary,
            sweep: dir.display().to_string(),
            folder_name: crate::sizing::folder_name(&dir),
        })
        .collect();
    // The sweep drew its lines evenly from the file; the run reads them in file order, where
    // related lines that sit together share more of a prefix cache: the job's own sharing.
    let (job, replay) = match job_sharing(s, summary)? {
        // Only where the shares differ: otherwise the sweep, a sample of this very job, is its mix.
        Some((job, r)) if matches!((job.prefix_share(), planner::sweep_prefix_share(summary)), (Some(j), Some(w)) if (j - w).abs() > 0.10) => {
            (Some(job), Some(r))
        }
        _ => (None, None),
    };
    let question = Question {
        options: &options,
        rate,
        job: JobSpec {
            requests: Some(plan_requests),
            mix: job.as_ref(),
            slo: s.measure.slo,
            sizing: s.sizing,
        },
        objective: Objective::Cost,
        budget_usd: None,
    };
    let choice = crate::sizing::decide(&question)?;
    let mut plan = crate::sizing::chosen(&choice)?;
    if let Some(r) = replay {
        crate::sizing::spread_over_replicas(&question, &mut plan, (&s.input, s.format, s.endpoint.api), r)?;
    }
    crate::sizing::write_plan(&plan, &s.out.join("plan.json"))?;
    Ok(plan)
}

/// The job's file replayed in order through a replica's prefix cache (the simulator's own size,
/// else what the sweep's server said, else the default); None for stdin, which cannot be read
/// again, or no cache.
fn job_sharing(
    s: &Settings,
    summary: &Summary,
) -> anyhow::Result<Option<(crate::model::MixSums, crate::sizing::CacheReplay)>> {
    let tokens = match s.endpoint.url {
        Some(_) => summary
            .server
            .as_ref()
            .and_then(|sv| sv.prefix_cache_tokens)
            .unwrap_or(crate::sizing::DEFAULT_CACHE_TOKENS),
        None => s.sim.params.prefix_cache_tokens,
    };
    if s.input.as_os_str() == "-" || tokens == 0 {
        return Ok(None);
    }
    let replay = crate::sizing::CacheReplay::new(tokens, summary.workload.and_then(|w| w.tokens_per_prompt_byte));
    let job = crate::sizing::scan_job(&s.input, s.format, s.endpoint.api, replay)?;
    Ok(Some((job, replay)))
}

fn print_plan(plan: &Plan) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", planner::explain(plan).trim_end())?;
    stdout.flush()?;
    Ok(())
}

/// Whether to run: `--yes`, else the person's answer on a terminal; without one, no.
fn confirm(s: &Settings, plan: &Plan, requests: u64, output: &Path) -> anyhow::Result<bool> {
    if s.yes {
        return Ok(true);
    }
    let plan_json = s.out.join("plan.json");
    let rest = format!(
        "`sizeup run --resume --input {} --output {} --plan {}` sends the rest",
        s.input.display(),
        output.display(),
        plan_json.display()
    );
    if !std::io::stdin().is_terminal() {
        ui::info(format!(
            "plan written to {}; not running (no terminal to ask, and no --yes); {rest}",
            plan_json.display()
        ));
        return Ok(false);
    }
    eprint!(
        "run {requests} requests on {} GPUs at concurrency {}? [y/N] ",
        plan.gpus, plan.total_concurrency
    );
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        ui::info(format!(
            "not running; the sweep's answers are in {}: {rest}",
            output.display()
        ));
        return Ok(false);
    }
    Ok(true)
}

/// Gives the resource the planned GPUs (the built-in one, or `--resource`), and with
/// `--verify` re-measures one level there.
async fn prepare_resource(
    s: &Settings,
    target: &Target,
    lifecycle: &Lifecycle,
    plan: &Plan,
    spec: &BodySpec,
    interrupt: &Stop,
) -> anyhow::Result<Option<Summary>> {
    let in_process = s.endpoint.url.is_none();
    let mut verified = None;
    if in_process && !s.resource.sim_api {
        // The built-in resource scales like a provider's: give it the planned GPUs.
        resize_sim(target, plan.gpus).await?;
    }
    if s.verify {
        if in_process || s.resource.sim_api {
            if s.resource.sim_api {
                lifecycle.on(plan.gpus, s.resource.ready_timeout).await?;
            }
            // Verifying sends lines of its own, outside the job's output.
            let fresh = Arc::new(Workload::sampled(&s.input, s.format, 10_000, s.seed ^ 1, spec.clone())?);
            verified = verify(s, target, fresh, plan, interrupt).await?;
        } else {
            ui::warn("--verify needs a resizable resource (the built-in simulator or --resource); skipped");
        }
    }
    if !s.resource.sim_api && !in_process && plan.gpus != s.gpus {
        ui::warn(format!(
            "the plan needs {} GPUs but the sweep ran on {}; make sure the endpoint has them (or use --resource / --resource-on)",
            plan.gpus, s.gpus
        ));
    }
    Ok(verified)
}

/// Measures one level at the planned size and compares it with the plan's expected RPM.
async fn verify(
    s: &Settings,
    target: &Target,
    workload: Arc<Workload>,
    plan: &Plan,
    interrupt: &Stop,
) -> anyhow::Result<Option<Summary>> {
    let mut m = s.measure.clone();
    m.gpus = plan.gpus;
    m.levels = Levels::List(vec![plan.total_concurrency]);
    let client = Arc::new(target.client(&s.endpoint, plan.total_concurrency as usize)?);
    ui::info(format!(
        "verify: measuring concurrency {} on {} GPUs",
        plan.total_concurrency, plan.gpus
    ));
    let r = measure(
        &m,
        client,
        workload,
        &s.out.join("verify"),
        target,
        interrupt.drain.clone(),
        None,
    )
    .await?;
    if let Some(level) = r.summary.levels.first() {
        let ratio = level.rpm / plan.expected_rpm;
        ui::info(format!(
            "verify: measured {} RPM at the planned size vs {} expected ({:+.1}%){}",
            ui::thousands(level.rpm),
            ui::thousands(plan.expected_rpm),
            (ratio - 1.0) * 100.0,
            if ratio < 0.97 {
                ": replicas do not scale linearly here; the plan is re-sized with this measured scaling"
            } else {
                ""
            }
        ));
    }
    Ok(Some(r.summary))
}

/// The report's Run section: the run's own requests (the sweep answered the others) and its
/// prediction against what it took, as the run's last line says it.
fn run_section(outcome: &RunOutcome, requests: u64) -> Section {
    let by_sweep = requests.saturating_sub(outcome.requests);
    let mut section = Section {
        title: "Run".into(),
        rows: vec![
            ("requests sent by the run".into(), outcome.requests.to_string()),
            ("answered by the sweep".into(), by_sweep.to_string()),
            (
                "achieved".into(),
                format!(
                    "{} RPM over {:.1} s",
                    ui::thousands(outcome.achieved_rpm),
                    outcome.wall_time_s
                ),
            ),
        ],
        notes: Vec::new(),
    };
    if let Some(p) = outcome.predicted_duration_s.filter(|_| outcome.requests > 0) {
        section.rows.push((
            "predicted vs achieved".into(),
            job::predicted_vs_achieved(p, outcome.wall_time_s),
        ));
        ui::info(format!(
            "run: {} requests (the sweep answered the other {by_sweep})",
            outcome.requests
        ));
    }
    section
}

/// Rewrites the folder's report.html with the pipeline's own sections after the sweep's.
fn write_page(summary: &Summary, sections: &[Section], out: &Path) -> anyhow::Result<()> {
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
