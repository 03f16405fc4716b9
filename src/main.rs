//! The `sizeup` binary: parse the command line, run, turn the result into an exit code.
//! Everything else lives in the library so tests can drive it in-process.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = sizeup::cli::Cli::parse();
    match sizeup::run(cli) {
        Ok(status) => status.into(),
        // `sizeup sweep | head` closes stdout early; that is the reader's choice, not a failure.
        Err(err) if sizeup::ui::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            sizeup::ui::report_error(&err);
            ExitCode::from(sizeup::ui::exit_code_for(&err))
        }
    }
}
