//! `sizeup auto`: flags -> [`crate::auto::Settings`] -> the pipeline in [`crate::auto`].

use super::settings;
use crate::auto::{self, Goal};
use crate::cli::AutoArgs;
use crate::engine::Stop;
use crate::ui::{usage_error, ExitStatus};

pub async fn run(args: AutoArgs, interrupt: Stop) -> anyhow::Result<ExitStatus> {
    let api = super::resolve_api(&args.endpoint, Some(&args.input), args.tuning.format)?;
    let goal = match (args.target_rpm, args.deadline) {
        (Some(r), _) if !(r.is_finite() && r > 0.0) => {
            return Err(usage_error(
                format!("--target-rpm must be a positive number, got {r}"),
                None,
            ))
        }
        (Some(r), _) => Goal::TargetRpm(r),
        (None, Some(d)) if d.is_zero() => return Err(usage_error("--deadline must be longer than 0s", None)),
        (None, Some(d)) => Goal::Deadline(d),
        // clap requires one of the two.
        (None, None) => return Err(usage_error("give --target-rpm RPM or --deadline DURATION", None)),
    };
    let endpoint = settings::endpoint(&args.endpoint, api);
    let measure = settings::measure(&args.measure, &args.slo, args.gpus, &endpoint)?;
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
    let (tuning, resource) = settings::run_tuning(&args.tuning)?;
    let s = auto::Settings {
        sim: settings::sim_for(&args.endpoint, &args.sim, args.gpus)?,
        seed: args.sim.seed,
        stream: !args.measure.no_stream && api.streams(),
        endpoint,
        input: args.input.clone(),
        format: args.tuning.format,
        goal,
        out: args.out.clone().unwrap_or_else(super::default_report_dir),
        sample: args.sample,
        sweep_budget: args.sweep_budget,
        gpus: args.gpus,
        yes: args.yes,
        verify: args.verify,
        measure,
        sizing: settings::sizing(&args.plan),
        tuning,
        resource,
    };
    auto::run(s, interrupt).await
}
