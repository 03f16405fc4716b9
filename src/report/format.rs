//! The summary formats sizeup can write, and which exporter renders each.

use super::csv::LevelsCsv;
use super::exporter::Exporter;
use super::html::HtmlExporter;
use super::json::JsonExporter;
use super::svg::SvgExporter;
use super::table::TableExporter;

/// The summary formats sizeup can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// `levels.csv`: one row per concurrency level.
    LevelsCsv,
    /// `summary.json`: the whole [`Summary`](crate::model::Summary), pretty-printed.
    Json,
    /// `throughput.svg`: RPM per GPU and p95 latency vs concurrency.
    Svg,
    /// Fixed-width text table for the terminal.
    Table,
    /// `report.html`: the self-contained page.
    Html,
}

impl Format {
    /// Every format, in the order a run usually writes them.
    #[cfg(test)]
    pub const ALL: [Format; 5] = [
        Format::LevelsCsv,
        Format::Json,
        Format::Svg,
        Format::Table,
        Format::Html,
    ];

    /// The exporter that renders this format.
    pub fn exporter(&self) -> Box<dyn Exporter> {
        match self {
            Format::LevelsCsv => Box::new(LevelsCsv),
            Format::Json => Box::new(JsonExporter),
            Format::Svg => Box::new(SvgExporter),
            Format::Table => Box::new(TableExporter),
            Format::Html => Box::new(HtmlExporter),
        }
    }

    /// Conventional file name inside the output directory; `None` for the table,
    /// which is meant for stdout.
    pub fn file_name(&self) -> Option<&'static str> {
        match self {
            Format::LevelsCsv => Some("levels.csv"),
            Format::Json => Some("summary.json"),
            Format::Svg => Some("throughput.svg"),
            Format::Table => None,
            Format::Html => Some("report.html"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures;

    #[test]
    fn formats_have_exporters_and_names() {
        let names: Vec<_> = Format::ALL.iter().map(|f| f.file_name()).collect();
        assert_eq!(
            names,
            [
                Some("levels.csv"),
                Some("summary.json"),
                Some("throughput.svg"),
                None,
                Some("report.html")
            ]
        );
        for s in std::iter::once(fixtures::summary()).chain(fixtures::nasty()) {
            for f in Format::ALL {
                let mut buf = Vec::new();
                f.exporter().write(&s, &mut buf).unwrap();
                assert!(!buf.is_empty(), "{f:?}");
            }
        }
    }
}
