//! `sizeup plan`: GPUs, concurrency, duration and cost from a sweep folder. Reads files only;
//! never touches the network (this module imports neither the client nor the engine).

use crate::batch::{ReadOptions, Reader};
use crate::cli::{EstimateChoice, PlanArgs, PlanTuning, SloArgs};
use crate::planner::{self, Estimate, Plan, PlanError, PlanInput, SweepLevel};
use crate::report::Summary;
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

/// Counts the requests of a batch file (streamed; invalid lines are not counted).
pub fn count_requests(path: &Path, format: Option<crate::batch::Format>, api: crate::api::Api) -> anyhow::Result<u64> {
    let reader = Reader::open(path, format, ReadOptions::new(api)).map_err(|e| usage_error(e.to_string(), None))?;
    let mut n = 0u64;
    let mut bad = 0u64;
    for item in reader {
        match item {
            Ok(_) => n += 1,
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
    Ok(n)
}

/// Builds and checks the plan; errors carry the right exit code.
pub fn make_plan(
    summary: &Summary,
    sweep: &Path,
    target_rpm: f64,
    requests: Option<u64>,
    slo: &SloArgs,
    t: &PlanTuning,
) -> anyhow::Result<Plan> {
    let input = PlanInput {
        levels: summary
            .levels
            .iter()
            // A level without data (too few requests finished) says nothing about capacity.
            .filter(|l| l.rpm.is_finite())
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
    Ok(plan)
}

pub fn write_plan(plan: &Plan, out: &Path) -> anyhow::Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        super::ensure_dir(dir)?;
    }
    let text = serde_json::to_string_pretty(plan)? + "\n";
    std::fs::write(out, text).map_err(|e| usage_error(format!("cannot write {}: {e}", out.display()), None))?;
    Ok(())
}

pub fn run(args: PlanArgs) -> anyhow::Result<ExitStatus> {
    args.slo.validate()?;
    let summary = read_sweep(&args.sweep)?;
    let requests = match (&args.input, args.requests) {
        (Some(path), _) => {
            let api = summary.api.parse().unwrap_or(crate::api::Api::Completions);
            Some(count_requests(path, args.format, api)?)
        }
        (None, r) => r,
    };
    let plan = make_plan(
        &summary,
        &args.sweep,
        args.target_rpm,
        requests,
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
