//! `sizeup merge`: flags -> [`crate::batch::merge::merge`] -> counts on stdout, the wrong ids
//! on stderr, the exit code.

use crate::batch::merge::{merge, Ids, MergeReport};
use crate::batch::{detect_api_in, Compression, Detected, DuplicateCheck, ReadOptions, Reader};
use crate::cli::MergeArgs;
use crate::ui::{self, usage_error, ExitStatus};
use std::fs::OpenOptions;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

pub fn run(args: MergeArgs) -> anyhow::Result<ExitStatus> {
    for p in std::iter::once(&args.input).chain(&args.parts) {
        if !p.is_file() {
            return Err(usage_error(format!("{} does not exist", p.display()), None));
        }
    }
    let api = match detect_api_in(&args.input, args.format) {
        Ok(Detected::One(api)) => api,
        Ok(_) => crate::api::Api::Completions,
        Err(e) => return Err(usage_error(e, None)),
    };
    // The input is read as `run` reads it: the lines it would send are the ids expected. Its
    // duplicate ids come out of the merge's own sort (`input_duplicates`): no set of ids here.
    let opts = ReadOptions {
        raw_bodies: true,
        duplicates: DuplicateCheck::Off,
        ..ReadOptions::new(api)
    };
    let reader = Reader::open(&args.input, args.format, opts).map_err(|e| usage_error(e.to_string(), None))?;
    let input_name = args.input.display().to_string();
    let mut bad_lines = 0u64;
    let mut items = reader.filter_map(|item| match item {
        Ok(i) => Some(Ok((i.custom_id, i.index))),
        Err(issue) if issue.fatal => Some(Err(std::io::Error::other(issue.to_string()))),
        Err(issue) => {
            bad_lines += 1;
            if bad_lines <= 3 {
                ui::warn(format!("{issue} (not expected in the outputs)"));
            }
            None
        }
    });
    let spill = folder_of(args.output.as_deref().unwrap_or(&args.input));
    let report = match &args.output {
        Some(out) => {
            let file = OpenOptions::new().write(true).create_new(true).open(out).map_err(|e| {
                usage_error(
                    format!("cannot write {}: {e}", out.display()),
                    (e.kind() == std::io::ErrorKind::AlreadyExists).then(|| "choose another --output".to_string()),
                )
            })?;
            let mut w = BufWriter::with_capacity(1 << 20, file);
            merge(
                &mut items,
                &args.parts,
                Some((&mut w, Compression::from_path(out))),
                &spill,
            )
        }
        None => merge(&mut items, &args.parts, None, &spill),
    }
    .map_err(|e| usage_error(format!("merge of {input_name}: {e}"), None))?;
    for p in &report.torn {
        ui::warn(format!(
            "{}: its last line was torn (the shard was killed and not resumed); that line is not counted",
            p.display()
        ));
    }
    println!("{}", serde_json::to_string(&report)?);
    say(&report, args.output.as_deref());
    Ok(if report.is_exact() {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

fn folder_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn say(r: &MergeReport, out: Option<&Path>) {
    let wrote = out.map_or(String::new(), |o| {
        format!("; wrote {} records to {}", r.records, o.display())
    });
    if r.is_exact() {
        ui::info(format!(
            "merge: all {} input ids answered exactly once{wrote}",
            r.input_ids
        ));
        return;
    }
    ui::info(format!(
        "merge: {} of {} input ids answered exactly once{wrote}",
        r.answered, r.input_ids
    ));
    let list = |what: &str, ids: &Ids| {
        if ids.count == 0 {
            return;
        }
        let more = ids.count.saturating_sub(ids.shown.len() as u64);
        let tail = if more > 0 {
            format!(", and {more} more")
        } else {
            String::new()
        };
        ui::report_error(&anyhow::anyhow!("{} {what}: {}{tail}", ids.count, ids.shown.join(", ")));
    };
    list("answered twice", &r.twice);
    list("missing (no record in any output)", &r.missing);
    list("failed (`sizeup run --resume` sends them again)", &r.failed);
    list("in the outputs but not in the input", &r.unknown);
    list("more than once in the input", &r.input_duplicates);
}
