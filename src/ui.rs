//! Everything a person reads goes through here, to stderr: errors, warnings, notices, hints,
//! progress. stdout is reserved for data (tables, JSON), written by the commands themselves.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// How a command ended. Only `main` turns this into a process exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: everything asked for was done.
    Success,
    /// 1: finished, but some requests failed for good or a goal is unmet.
    Failure,
    /// 3: the endpoint is unusable (refused, 401/403, every warm-up request failed).
    Unusable,
    /// 130: interrupted (Ctrl-C) after a drain.
    Interrupted,
    /// 143: stopped by SIGTERM (`scancel`, an eviction) after a drain.
    Terminated,
}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(s: ExitStatus) -> Self {
        std::process::ExitCode::from(match s {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Unusable => 3,
            ExitStatus::Interrupted => 130,
            ExitStatus::Terminated => 143,
        })
    }
}

/// An error meant for a person: what went wrong, the exit code, and what to do about it.
#[derive(Debug)]
pub struct UserError {
    pub code: u8,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UserError {}

/// A usage or input error (exit 2): nothing was sent.
pub fn usage_error(message: impl Into<String>, hint: impl Into<Option<String>>) -> anyhow::Error {
    UserError {
        code: 2,
        message: message.into(),
        hint: hint.into(),
    }
    .into()
}

/// The endpoint cannot be used (exit 3).
pub fn unusable_error(message: impl Into<String>, hint: impl Into<Option<String>>) -> anyhow::Error {
    UserError {
        code: 3,
        message: message.into(),
        hint: hint.into(),
    }
    .into()
}

/// A goal is unmet (exit 1), e.g. a target rate unreachable within `--max-gpus`.
pub fn unmet_error(message: impl Into<String>, hint: impl Into<Option<String>>) -> anyhow::Error {
    UserError {
        code: 1,
        message: message.into(),
        hint: hint.into(),
    }
    .into()
}

/// The exit code for an error that reached `main`: the `UserError`'s own code, else 2.
pub fn exit_code_for(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| e.downcast_ref::<UserError>())
        .map_or(2, |u| u.code)
}

/// True when the error is only a closed stdout (`sizeup sweep | head`).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `--color`: when stderr gets ANSI colour. Lives here, beside the code that colours, so the
/// command line depends on `ui` and not the other way round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

static QUIET: AtomicBool = AtomicBool::new(false);
/// 0 = auto, 1 = always, 2 = never.
static COLOR: AtomicU8 = AtomicU8::new(0);

/// Set once from the command line, before any message is printed.
pub fn configure(quiet: bool, color: ColorChoice) {
    QUIET.store(quiet, Ordering::Relaxed);
    COLOR.store(
        match color {
            ColorChoice::Auto => 0,
            ColorChoice::Always => 1,
            ColorChoice::Never => 2,
        },
        Ordering::Relaxed,
    );
}

pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// True when stderr is a terminal a person watches (progress bars, colour).
pub fn stderr_is_tty() -> bool {
    std::io::stderr().is_terminal()
}

fn color_on() -> bool {
    match COLOR.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => stderr_is_tty() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    }
}

fn label(name: &str, ansi: &str) -> String {
    if color_on() {
        format!("\x1b[1;{ansi}m{name}:\x1b[0m")
    } else {
        format!("{name}:")
    }
}

fn emit(line: &str) {
    // A failed write to stderr has nowhere better to go.
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// `error: ...`, its causes, and a `hint:` line when the error carries one.
pub fn report_error(err: &anyhow::Error) {
    emit(&format!("{} {err}", label("error", "31")));
    for cause in err.chain().skip(1) {
        emit(&format!("  Caused by: {cause}"));
    }
    if let Some(hint) = err
        .chain()
        .find_map(|e| e.downcast_ref::<UserError>())
        .and_then(|u| u.hint.as_ref())
    {
        hint_line(hint);
    }
}

pub fn warn(msg: impl AsRef<str>) {
    emit(&format!("{} {}", label("warning", "33"), msg.as_ref()));
}

pub fn hint_line(msg: impl AsRef<str>) {
    emit(&format!("{} {}", label("hint", "36"), msg.as_ref()));
}

/// A notice or progress line; silent with `--quiet`.
pub fn info(msg: impl AsRef<str>) {
    if !quiet() {
        emit(msg.as_ref());
    }
}

/// RPM figures in messages read as they do in the tables (one formatter; see
/// [`crate::report::fmt`]).
pub use crate::fmt::thousands;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_error() {
        assert_eq!(exit_code_for(&usage_error("x", None)), 2);
        assert_eq!(exit_code_for(&unusable_error("x", None)), 3);
        assert_eq!(exit_code_for(&unmet_error("x", None)), 1);
        assert_eq!(exit_code_for(&anyhow::anyhow!("other")), 2);
        let wrapped = usage_error("inner", None).context("outer");
        assert_eq!(exit_code_for(&wrapped), 2);
    }
}
