//! `summary.json`: the whole [`Summary`], pretty-printed.

use super::exporter::Exporter;
use crate::model::Summary;
use std::io::Write;

/// Exporter for `summary.json`.
///
/// Non-finite floats are written as `null` (JSON has no NaN); [`Summary`]'s
/// deserializer reads such a `null` back as NaN, so the file always loads.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonExporter;

impl Exporter for JsonExporter {
    fn write(&self, summary: &Summary, out: &mut dyn Write) -> anyhow::Result<()> {
        serde_json::to_writer_pretty(&mut *out, summary)?;
        // A trailing newline keeps `cat summary.json` and POSIX tools happy.
        out.write_all(b"\n")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures;

    #[test]
    fn round_trip() {
        let s = fixtures::summary();
        let mut buf = Vec::new();
        JsonExporter.write(&s, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.ends_with("}\n"));
        assert!(text.starts_with("{\n  \"endpoint\""));
        let back: Summary = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn key_order_is_the_contract_order() {
        let mut buf = Vec::new();
        JsonExporter.write(&fixtures::summary(), &mut buf).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let keys = [
            "endpoint",
            "model",
            "gpus",
            "levels",
            "knee",
            "batch_size_per_gpu",
            "max_rpm",
            "max_rpm_per_gpu",
            "started_at",
            "sizeup_version",
            "api",
            "ci_width_target",
            "ci_met",
            "tokens_estimated",
            "workload",
            "distinct_requests",
            "repeated_requests",
            "server",
            "schema_version",
        ];
        let mut pos = 0;
        for k in keys {
            let needle = format!("\n  \"{k}\":");
            let at = text[pos..].find(&needle).unwrap_or_else(|| panic!("{k} out of order"));
            pos += at + needle.len();
        }
        assert_eq!(v.as_object().unwrap().len(), keys.len());
    }

    #[test]
    fn nan_becomes_null_and_loads_back() {
        for s in fixtures::nasty() {
            let mut buf = Vec::new();
            JsonExporter.write(&s, &mut buf).unwrap();
            let back: Summary = serde_json::from_slice(&buf).unwrap();
            assert_eq!(back.levels.len(), s.levels.len());
            if s.max_rpm.is_nan() {
                assert!(back.max_rpm.is_nan());
            }
        }
    }
}
