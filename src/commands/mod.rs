//! One module per command: flags -> validated settings -> wiring -> [`ExitStatus`].
//! Shared here: settling the API from the input, and the default report folder.

pub mod auto;
pub mod completions;
pub mod man;
pub mod merge;
pub mod plan;
pub mod run;
pub mod settings;
pub mod sim;
pub mod sweep;

use crate::api::Api;
use crate::batch::{detect_api_in, Detected, Format};
use crate::cli::EndpointArgs;
use crate::ui::{self, usage_error};
use std::path::{Path, PathBuf};

pub use crate::files::ensure_dir;

/// `reports/<UTC timestamp>/`, e.g. `reports/20261126T162348Z`.
pub fn default_report_dir() -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let compact: String = stamp.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    PathBuf::from("reports").join(compact)
}

/// The runtime's worker threads for a command that sends requests: `--client-threads`, else 1
/// for an endpoint on this machine (the client then takes as little as it can from the server
/// it measures: no thread wakes another, nothing is stolen between threads), else None (one
/// per core). The built-in simulator (no `--endpoint`) runs in the same process and keeps
/// every core.
pub fn client_threads(e: &EndpointArgs) -> Option<usize> {
    if let Some(n) = e.client_threads {
        return Some(usize::from(n));
    }
    let url = reqwest::Url::parse(e.endpoint.as_deref()?).ok()?;
    // An IPv6 literal keeps its brackets in `host_str`.
    let host = url.host_str()?.trim_start_matches('[').trim_end_matches(']');
    let local =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    local.then_some(1)
}

/// Settles the API: `--api` when given (the reader then names every line that contradicts it),
/// else what the input file names, else completions. A file whose lines name different APIs
/// is refused (exit 2) before anything is sent. Stdin is read once, so there only `--api` counts.
pub fn resolve_api(e: &EndpointArgs, input: Option<&Path>, format: Option<Format>) -> anyhow::Result<Api> {
    let file = input.filter(|p| p.as_os_str() != "-" && p.is_file());
    Ok(match (e.api_flag, file) {
        (Some(api), _) => api,
        (None, None) => Api::Completions,
        (None, Some(path)) => match detect_api_in(path, format) {
            Ok(Detected::One(api)) => {
                if api != Api::Completions {
                    ui::info(format!(
                        "note: {} asks for {}: using --api {api}",
                        path.display(),
                        api.path()
                    ));
                }
                api
            }
            Ok(Detected::Unknown) => Api::Completions,
            Err(msg) => {
                return Err(usage_error(
                    format!("{}:{msg}", path.display()),
                    Some("split the file by endpoint and run each part on its own".into()),
                ))
            }
        },
    })
}

/// Writes a generated text (completion script, man page) to stdout in one piece; a closed pipe
/// (`| head`) comes back as an error that `main` treats as success.
pub fn print_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn threads(extra: &[&str]) -> Option<usize> {
        let args = [&["sizeup", "sweep"], extra].concat();
        match Cli::try_parse_from(args).expect("parses").command {
            Command::Sweep(a) => client_threads(&a.endpoint),
            _ => unreachable!(),
        }
    }

    #[test]
    fn one_client_thread_for_a_server_on_this_machine() {
        for local in [
            "http://127.0.0.1:8000",
            "http://localhost:8000/v1",
            "http://[::1]:8000",
            "http://127.0.2.1",
        ] {
            assert_eq!(threads(&["--endpoint", local]), Some(1), "{local}");
        }
        assert_eq!(threads(&["--endpoint", "https://api.example.com"]), None);
        assert_eq!(threads(&["--endpoint", "http://10.0.0.7:8000"]), None);
        // The built-in simulator shares the process: it keeps every core.
        assert_eq!(threads(&[]), None);
        assert_eq!(
            threads(&["--endpoint", "http://127.0.0.1:8000", "--client-threads", "4"]),
            Some(4)
        );
        assert!(Cli::try_parse_from(["sizeup", "sweep", "--client-threads", "0"]).is_err());
    }
}
