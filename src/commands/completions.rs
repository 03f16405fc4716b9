//! `sizeup completions SHELL`: a completion script generated from the clap definitions, so it
//! always knows every command and flag of this binary.

use crate::cli::{Cli, CompletionsArgs};
use crate::ui::ExitStatus;
use clap::CommandFactory;

pub fn run(args: CompletionsArgs) -> anyhow::Result<ExitStatus> {
    // Rendered into memory, then written: clap_complete panics when its writer fails, and a
    // reader that closes the pipe early (`| head`) must not make us panic.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "sizeup", &mut script);
    super::print_bytes(&script)?;
    Ok(ExitStatus::Success)
}
