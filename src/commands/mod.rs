//! One module per command: flags -> validated settings -> wiring -> [`ExitStatus`].
//! Shared here: settling the API from the input, and the default report folder.

pub mod auto;
pub mod completions;
pub mod man;
pub mod plan;
pub mod run;
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

/// Settles the API: `--api` when given (the reader then names every line that contradicts it),
/// else what the input file names, else completions. A file whose lines name different APIs
/// is refused (exit 2) before anything is sent. Stdin is read once, so there only `--api` counts.
pub fn resolve_api(e: &mut EndpointArgs, input: Option<&Path>, format: Option<Format>) -> anyhow::Result<()> {
    let file = input.filter(|p| p.as_os_str() != "-" && p.is_file());
    e.api = match (e.api_flag, file) {
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
    };
    Ok(())
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
