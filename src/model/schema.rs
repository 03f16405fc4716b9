//! `schema_version` of the files other tools and scripts read (summary.json, plan.json,
//! run-summary.json). Fields are only ever added; the version says which additions a file
//! may hold, so a reader can refuse a file written by a newer sizeup instead of misreading it.

use serde::Deserialize;

/// summary.json as `sweep` and `auto` write it.
pub const SUMMARY: u32 = 1;
/// plan.json as `plan` and `auto` write it.
pub const PLAN: u32 = 1;
/// run-summary.json as `run` and `auto` write it.
pub const RUN_SUMMARY: u32 = 1;

/// Files written before the field existed hold version 1's fields.
pub fn unversioned() -> u32 {
    1
}

#[derive(Deserialize)]
struct Versioned {
    #[serde(default = "unversioned")]
    schema_version: u32,
}

/// Refuses a file whose `schema_version` is newer than `known`: the message names the file,
/// its version and this binary's. A file that is not a JSON object is left to the full parse,
/// whose error says more.
pub fn check(file: &str, text: &str, known: u32) -> Result<(), String> {
    let Ok(v) = serde_json::from_str::<Versioned>(text) else {
        return Ok(());
    };
    if v.schema_version > known {
        return Err(format!(
            "{file}: schema_version {} is newer than this sizeup {} reads (up to {known}); upgrade sizeup to read it",
            v.schema_version,
            env!("CARGO_PKG_VERSION"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_files_are_refused_older_ones_read() {
        assert!(
            check("plan.json", r#"{"gpus": 2}"#, PLAN).is_ok(),
            "written before the field"
        );
        assert!(check("plan.json", r#"{"schema_version": 1}"#, PLAN).is_ok());
        let e = check("reports/x/summary.json", r#"{"schema_version": 7, "gpus": 1}"#, SUMMARY).unwrap_err();
        assert!(
            e.contains("reports/x/summary.json") && e.contains("schema_version 7") && e.contains("up to 1"),
            "{e}"
        );
        assert!(check("plan.json", "not json", PLAN).is_ok(), "left to the full parse");
    }
}
