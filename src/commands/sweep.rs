//! `sizeup sweep`: flags -> measurement settings -> [`crate::measure`] -> reports on stdout.

use super::settings;
use crate::cli::SweepArgs;
use crate::measure::{max_level, measure, workload_from};
use crate::report::Format as ReportFormat;
use crate::target::Target;
use crate::ui::{self, usage_error, ExitStatus};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub async fn run(args: SweepArgs, interrupt: CancellationToken) -> anyhow::Result<ExitStatus> {
    let api = super::resolve_api(&args.endpoint, args.workload.input.as_deref(), args.workload.format)?;
    let endpoint = settings::endpoint(&args.endpoint, api);
    let mut settings = settings::measure(&args.measure, &args.slo, args.gpus, &endpoint)?;
    if let Some(c) = args.gpu_hour_cost {
        if !(c.is_finite() && c >= 0.0) {
            return Err(usage_error(
                format!("--gpu-hour-cost must be a number >= 0, got {c}"),
                None,
            ));
        }
    }
    if args.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err(usage_error("--name must not be empty", None));
    }
    settings.name = args.name.clone();
    settings.gpu_hour_cost = args.gpu_hour_cost;
    let stream = !args.measure.no_stream && api.streams();
    let out: PathBuf = args.out.clone().unwrap_or_else(super::default_report_dir);
    // Input problems surface before any traffic.
    if let Some(p) = &args.workload.input {
        if !p.exists() && p.as_os_str() != "-" {
            return Err(usage_error(format!("--input {} does not exist", p.display()), None));
        }
    }
    let target = Target::open(&endpoint, settings::sim_for(&args.endpoint, &args.sim, args.gpus)?).await?;
    let result = async {
        let model = target.model(&endpoint).await?;
        let workload = Arc::new(workload_from(
            &settings::workload(&args.workload),
            args.sim.seed,
            api,
            endpoint.max_tokens_field,
            stream,
            model,
        )?);
        let client = Arc::new(target.client(&endpoint, max_level(&settings.levels))?);
        measure(&settings, client, workload, &out, &target, interrupt, None).await
    }
    .await;
    target.close().await;
    let result = result?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        ReportFormat::Json.exporter().write(&result.summary, &mut stdout)?;
    } else {
        ReportFormat::Table.exporter().write(&result.summary, &mut stdout)?;
    }
    stdout.flush()?;
    ui::info(format!("reports written to {}/", out.display()));
    if result.interrupted {
        return Ok(ExitStatus::Interrupted);
    }
    Ok(ExitStatus::Success)
}
