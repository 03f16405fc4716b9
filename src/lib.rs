//! sizeup: size, plan and run large batch jobs on LLM inference endpoints.
//!
//! `main` parses the command line and picks the exit code; [`run`] hands it to the command,
//! which turns flags into typed settings and calls the library. The code map, the invariants
//! (checked by `tests/it/architecture.rs`) and where each promise is tested are in
//! ARCHITECTURE.md. The public modules are those the tests and benches drive; the rest are
//! the crate's own.

pub mod api;
pub(crate) mod auto;
pub mod batch;
pub mod cli;
pub mod client;
pub(crate) mod commands;
pub(crate) mod engine;
pub(crate) mod files;
pub(crate) mod fmt;
pub(crate) mod hash;
pub(crate) mod job;
pub(crate) mod measure;
pub(crate) mod model;
pub(crate) mod outcome;
pub(crate) mod planner;
pub(crate) mod report;
pub(crate) mod resource;
pub(crate) mod scrape;
pub mod secret;
pub mod sim;
pub(crate) mod sizing;
pub mod stats;
pub(crate) mod target;
pub mod ui;

use cli::{Cli, Command};
use ui::ExitStatus;

/// Runs a parsed command line. Only `main` turns the result into an exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    ui::configure(cli.quiet, cli.color);
    // Pure computation and file reads: no runtime, no network.
    let command = match cli.command {
        Command::Plan(args) => return commands::plan::run(args),
        Command::Completions(args) => return commands::completions::run(args),
        Command::Man(args) => return commands::man::run(args),
        Command::Merge(args) => return commands::merge::run(args),
        other => other,
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    let endpoint = match &command {
        Command::Run(a) => Some(&a.endpoint),
        Command::Sweep(a) => Some(&a.endpoint),
        Command::Auto(a) => Some(&a.endpoint),
        _ => None,
    };
    let endpoint_drain = endpoint.map(|e| e.drain_timeout);
    if let Some(n) = endpoint.and_then(commands::client_threads) {
        runtime.worker_threads(n);
    }
    let runtime = runtime.enable_all().build()?;
    // The command runs as a task on the worker threads, not on this thread inside
    // `block_on`: a collector polled here would need a cross-thread wake-up per event.
    runtime.block_on(async move {
        let drain_timeout = endpoint_drain.unwrap_or(std::time::Duration::from_secs(20));
        let interrupt = engine::watch_signals(drain_timeout);
        let terminated = interrupt.terminated.clone();
        let task = tokio::spawn(async move {
            match command {
                Command::Sim(a) => commands::sim::run(a).await,
                Command::Sweep(a) => commands::sweep::run(a, interrupt.drain.clone()).await,
                Command::Run(a) => commands::run::run(a, interrupt).await,
                Command::Auto(a) => commands::auto::run(a, interrupt).await,
                Command::Plan(_) | Command::Completions(_) | Command::Man(_) | Command::Merge(_) => {
                    unreachable!("handled above")
                }
            }
        });
        let status = task.await.map_err(|e| anyhow::anyhow!("internal error: {e}"))??;
        // A scheduler's stop is told apart from a person's: Slurm and Kubernetes read 143.
        Ok(match status {
            ExitStatus::Interrupted if terminated.is_cancelled() => ExitStatus::Terminated,
            s => s,
        })
    })
}
