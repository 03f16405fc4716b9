//! The shard layout a job's output was written under, kept beside it (`<output>.shard.json`,
//! written before the first request), so `--resume` under another layout refuses instead of
//! sending lines that another shard's output already answers: a re-run task that read its
//! layout wrong would otherwise bill the rest of the job a second time.

use crate::ui::usage_error;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Layout {
    index: u64,
    count: u64,
}

/// Where an output's layout is recorded.
pub fn sidecar(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".shard.json");
    PathBuf::from(name)
}

fn words(shard: Option<(u64, u64)>) -> String {
    match shard {
        Some((k, n)) => format!("shard {k}/{n}"),
        None => "the whole input (no --shard)".into(),
    }
}

/// Before resuming `output`: the layout it was written under must be this run's. An output
/// with no record was written unsharded or by an older sizeup; resuming it under any layout
/// sends only lines it does not answer, so it is accepted (and recorded from now on).
pub fn check(output: &Path, shard: Option<(u64, u64)>) -> anyhow::Result<()> {
    let path = sidecar(output);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(usage_error(format!("cannot read {}: {e}", path.display()), None)),
    };
    let recorded: Layout = serde_json::from_str(&text).map_err(|e| {
        usage_error(
            format!("{}: not a shard layout ({e})", path.display()),
            Some("restore it, or delete it if you know which shard wrote the output".into()),
        )
    })?;
    let recorded = Some((recorded.index, recorded.count));
    if recorded == shard {
        return Ok(());
    }
    Err(usage_error(
        format!(
            "{} was written as {} ({}); this run is {}: resuming it would send lines another shard answers; nothing was sent",
            output.display(),
            words(recorded),
            path.display(),
            words(shard)
        ),
        Some(format!(
            "resume it with the layout it was written under (--shard {k}/{n}, or --shard auto/{n} in a re-run array task), or choose another --output",
            k = recorded.map_or(0, |r| r.0),
            n = recorded.map_or(1, |r| r.1),
        )),
    ))
}

/// Records this run's layout beside `output` once the output is open, before the first
/// request; a fresh unsharded output drops a record left from an earlier run of that name.
pub fn record(output: &Path, shard: Option<(u64, u64)>, fresh: bool) -> anyhow::Result<()> {
    let path = sidecar(output);
    let written = match shard {
        Some((index, count)) => {
            let json = serde_json::to_string(&Layout { index, count })? + "\n";
            std::fs::write(&path, json)
        }
        None if fresh => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        None => Ok(()),
    };
    written.map_err(|e| usage_error(format!("cannot write {}: {e}", path.display()), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_under_another_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("part-2.jsonl");
        assert!(check(&out, Some((0, 1))).is_ok(), "no record: accepted");
        record(&out, Some((2, 4)), true).unwrap();
        assert_eq!(sidecar(&out), dir.path().join("part-2.jsonl.shard.json"));
        assert!(check(&out, Some((2, 4))).is_ok());
        for other in [Some((0, 1)), Some((2, 3)), None] {
            let msg = check(&out, other).unwrap_err().to_string();
            assert!(msg.contains("written as shard 2/4"), "{msg}");
        }
        // A fresh unsharded run of that name drops the old record; a resumed one keeps it.
        record(&out, None, false).unwrap();
        assert!(sidecar(&out).exists());
        record(&out, None, true).unwrap();
        assert!(!sidecar(&out).exists());
        std::fs::write(sidecar(&out), "{").unwrap();
        assert!(check(&out, None).is_err());
    }
}
