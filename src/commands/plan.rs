//! `sizeup plan`: GPUs, concurrency, duration and cost from a sweep folder. Reads files only;
//! never touches the network (this module imports neither the client nor the engine).

use crate::batch::mix::MixSums;
use crate::batch::{Payload, ReadOptions, Reader};
use crate::cli::{EstimateChoice, ObjectiveChoice, PlanArgs, PlanTuning, SloArgs};
use crate::planner::{
    self, Candidate, CapacityModel, Choice, Estimate, Goal, Objective, Plan, PlanError, PlanInput, SweepLevel,
    WorkloadMix,
};
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

/// The rate the job must sustain: given, or what a deadline asks for.
#[derive(Clone, Copy, Debug)]
pub enum RateGoal {
    Rpm(f64),
    /// Seconds from switching the GPUs on to the last answer.
    Deadline(f64),
}

/// One deployment option: a sweep folder and its summary.
pub struct SweepOption<'a> {
    pub summary: &'a Summary,
    pub dir: &'a Path,
}

/// What every option is planned for: the job and the user's limits.
pub struct JobSpec<'a> {
    /// Requests in the job (`--requests`, or counted from `--input`).
    pub requests: Option<u64>,
    /// The job file's sizes (`--input`), to size for its mix.
    pub mix: Option<&'a MixSums>,
    pub slo: &'a SloArgs,
    pub tuning: &'a PlanTuning,
}

/// What one option's plan is sized for: its planning input and the mix (and whether the
/// capacity model rescaled the levels for the job's mix).
struct Prepared {
    input: PlanInput,
    mix: Option<(f64, f64, String)>,
    model_used: bool,
}

/// The option's label: `sweep --name`, else its folder's name.
fn option_name(o: &SweepOption) -> String {
    if let Some(n) = &o.summary.name {
        return n.clone();
    }
    let folder = if o.dir.is_dir() { Some(o.dir) } else { o.dir.parent() };
    folder
        .and_then(|d| d.file_name())
        .map_or_else(|| o.dir.display().to_string(), |n| n.to_string_lossy().to_string())
}

/// The planning input for one sweep, rescaled to the job's mix when it differs.
fn prepare(
    summary: &Summary,
    target_rpm: f64,
    spec: &JobSpec,
    gpu_hour_cost: Option<f64>,
    say: &dyn Fn(String) -> String,
) -> Prepared {
    let (slo, t, job) = (spec.slo, spec.tuning, spec.mix);
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
        requests: spec.requests,
        gpu_hour_cost,
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
                ui::info(say(format!(
                    "mix: the sweep's requests averaged {sp:.0} prompt + {so:.0} output tokens; the job's {jp:.0} + {jo:.0} ({how})"
                )));
                let differs = |a: f64, b: f64| (a - b).abs() > 0.1 * b.max(1.0);
                if differs(jp, sp) || differs(jo, so) {
                    let fits: Vec<_> = measured.iter().map(|l| l.capacity_model).collect();
                    match planner::rescale_for_mix(&mut input.levels, &fits, jp, jo) {
                        Ok(()) => {
                            model_used = true;
                            ui::info(say("the job's mix differs from the sweep's by more than 10%: sized with the capacity model".into()));
                        }
                        Err(why) => ui::warn(say(format!(
                            "the job's mix differs from the sweep's by more than 10%, but {why}: sized on the sweep as measured (sweep with a sample of this job for a true figure)"
                        ))),
                    }
                }
                mix = Some((jp, jo, how));
            }
            None => ui::warn(say(
                "the sweep recorded no token counts to relate to the job's file: sized on the sweep as measured".into(),
            )),
        }
    }
    Prepared { input, mix, model_used }
}

/// Fills in what the planner leaves to the command: the mix, token figures, the model.
fn finish(plan: &mut Plan, p: &Prepared, summary: &Summary, job: Option<&MixSums>, requests: Option<u64>) {
    if let Some((prompt, output, source)) = &p.mix {
        plan.workload = Some(WorkloadMix {
            requests: job.map(|j| j.requests).or(requests),
            prompt_tokens_mean: *prompt,
            output_tokens_mean: *output,
            source: source.clone(),
        });
        let (tps, usd) = planner::token_figures(plan.rpm_per_gpu, *prompt, *output, p.input.gpu_hour_cost);
        plan.tokens_per_s_per_gpu = Some(tps);
        plan.usd_per_million_tokens = usd;
    }
    if p.model_used {
        plan.capacity_model = summary
            .levels
            .iter()
            .filter(|l| l.rpm.is_finite())
            .find(|l| l.concurrency == plan.chosen_concurrency)
            .and_then(|l| l.capacity_model)
            .map(|f| CapacityModel {
                a_ms: f.a_ms,
                b_ms_per_prompt_token: f.b_ms_per_prompt_token,
                c_ms_per_output_token: f.c_ms_per_output_token,
                r2: f.r2,
            });
    }
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
        PlanError::Unmet(msg) => unmet_error(
            msg,
            Some("raise --max-gpus or --budget, allow a later --deadline, or lower --headroom".into()),
        ),
    }
}

/// Sizes every option for the goal and chooses one (see [`planner::choose`]). Bad input is an
/// error (exit 2); an unmet goal is in the choice's `outcome`, for [`chosen`] to turn into one.
pub fn decide(
    options: &[SweepOption],
    rate: RateGoal,
    spec: &JobSpec,
    objective: Objective,
    budget_usd: Option<f64>,
) -> anyhow::Result<Choice> {
    let (t, requests) = (spec.tuning, spec.requests);
    let (target_rpm, deadline_s) = match rate {
        RateGoal::Rpm(r) => (r, None),
        RateGoal::Deadline(d) => (
            planner::deadline_target_rpm(requests, d, t.startup_s).map_err(|e| plan_error(e, 0.0))?,
            Some(d),
        ),
    };
    let several = options.len() > 1;
    let mut names: Vec<String> = options.iter().map(option_name).collect();
    // Two folders of one name (`a/sweep`, `b/sweep`): their paths tell them apart.
    for i in 0..names.len() {
        if names.iter().filter(|n| **n == names[i]).count() > 1 {
            for (j, o) in options.iter().enumerate() {
                if names[j] == names[i] {
                    names[j] = o.dir.display().to_string();
                }
            }
        }
    }
    let mut prepared = Vec::with_capacity(options.len());
    let mut cands = Vec::with_capacity(options.len());
    for (o, name) in options.iter().zip(&names) {
        let price = match (t.gpu_hour_cost, o.summary.gpu_hour_cost) {
            (Some(flag), Some(own)) if (flag - own).abs() > 1e-12 => {
                ui::warn(format!(
                    "`{name}` recorded ${own}/GPU-hour; --gpu-hour-cost {flag} overrides it"
                ));
                Some(flag)
            }
            (flag, own) => flag.or(own),
        };
        let say = |m: String| if several { format!("{name}: {m}") } else { m };
        let p = prepare(o.summary, target_rpm, spec, price, &say);
        cands.push(Candidate {
            name: name.clone(),
            sweep: o.dir.display().to_string(),
            input: p.input.clone(),
        });
        prepared.push(p);
    }
    let goal = Goal {
        objective,
        budget_usd,
        deadline_s,
    };
    let mut choice = planner::choose(&cands, &goal).map_err(|e| plan_error(e, target_rpm))?;
    for ((e, p), o) in choice.options.iter_mut().zip(&prepared).zip(options) {
        if let Some(plan) = e.plan.as_mut() {
            finish(plan, p, o.summary, spec.mix, requests);
        }
    }
    // The server's warnings about the level the chosen option runs at.
    if let Ok(i) = choice.outcome {
        if let (Some(plan), Some(o)) = (choice.options[i].plan.as_ref(), options.get(i)) {
            for w in server_warnings(o.summary, plan) {
                ui::warn(w);
            }
        }
    }
    Ok(choice)
}

/// The chosen option's plan, or the unmet goal as an error (exit 1).
pub fn chosen(choice: &Choice) -> anyhow::Result<Plan> {
    match (&choice.outcome, choice.chosen_plan()) {
        (Ok(_), Some(plan)) => Ok(plan),
        (Err(e), _) => {
            let target = choice
                .options
                .first()
                .and_then(|o| o.plan.as_ref())
                .map_or(0.0, |p| p.target_rpm);
            Err(plan_error(e.clone(), target))
        }
        (Ok(_), None) => Err(unmet_error("no option could be planned", None)),
    }
}

/// Builds and checks the plan for one sweep; errors carry the right exit code.
pub fn make_plan(
    summary: &Summary,
    sweep: &Path,
    rate: RateGoal,
    requests: Option<u64>,
    job: Option<&MixSums>,
    slo: &SloArgs,
    t: &PlanTuning,
) -> anyhow::Result<Plan> {
    let option = SweepOption { summary, dir: sweep };
    let spec = JobSpec {
        requests,
        mix: job,
        slo,
        tuning: t,
    };
    let choice = decide(&[option], rate, &spec, Objective::Cost, None)?;
    chosen(&choice)
}

/// The server's warnings about the level the plan runs at (preemptions, a KV cache near full).
pub fn server_warnings(summary: &Summary, plan: &Plan) -> Vec<String> {
    summary
        .levels
        .iter()
        .find(|l| l.concurrency == plan.chosen_concurrency)
        .map(crate::stats::server::operating_warnings)
        .unwrap_or_default()
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
    let summaries = args
        .sweep
        .iter()
        .map(|d| read_sweep(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let job = match &args.input {
        Some(path) => {
            let api = summaries[0].api.parse().unwrap_or(crate::api::Api::Completions);
            Some(scan_job(path, args.format, api)?)
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
        .map(|(summary, dir)| SweepOption { summary, dir })
        .collect();
    let objective = match args.objective {
        ObjectiveChoice::Cost => Objective::Cost,
        ObjectiveChoice::Time => Objective::Time,
    };
    let spec = JobSpec {
        requests,
        mix: job.as_ref(),
        slo: &args.slo,
        tuning: &args.tuning,
    };
    let choice = decide(&options, rate, &spec, objective, args.budget)?;
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
    write_plan(&plan, &args.out)?;
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(&plan)?)?;
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
