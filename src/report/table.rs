//! Fixed-width text table for the terminal.
//!
//! Plain text only: colours and other terminal decoration are the caller's call,
//! since the same output may go to a pipe or a log file.

use super::exporter::Exporter;
use crate::fmt::{grouped, thousands};
use crate::model::{KneeRow, LevelRow, Summary};
use std::fmt::Write as _;
use std::io::Write;

/// Exporter for the human-readable table printed after a sweep.
#[derive(Clone, Copy, Debug, Default)]
pub struct TableExporter;

const HEADERS: [&str; 9] = [
    "concurrency",
    "RPM ±CI",
    "RPM/GPU",
    "p50 ms",
    "p95 ms",
    "TTFT p50",
    "tokens/s",
    "errors",
    "notes",
];

impl Exporter for TableExporter {
    fn write(&self, summary: &Summary, out: &mut dyn Write) -> anyhow::Result<()> {
        out.write_all(render(summary).as_bytes())?;
        Ok(())
    }
}

/// Renders the whole table to a string; kept separate from I/O so it is easy to test.
pub fn render(summary: &Summary) -> String {
    let mut text = String::new();
    // Sort by concurrency for reading, but keep each level paired with its
    // `ci_met` flag, which is indexed in sweep order.
    let mut levels: Vec<(&LevelRow, Option<bool>)> = summary
        .levels
        .iter()
        .enumerate()
        .map(|(i, l)| (l, summary.ci_met.get(i).copied()))
        .collect();
    levels.sort_by_key(|(l, _)| l.concurrency);

    if levels.is_empty() {
        text.push_str("no concurrency levels were measured\n");
    } else {
        let rows: Vec<[String; 9]> = levels.iter().map(|(l, ci)| row_cells(l, *ci)).collect();
        let mut widths = HEADERS.map(|h| h.chars().count());
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        push_line(&mut text, &HEADERS.map(String::from), &widths);
        let rule = widths.map(|w| "-".repeat(w));
        push_line(&mut text, &rule, &widths);
        for row in &rows {
            push_line(&mut text, row, &widths);
        }
    }

    text.push_str(&knee_line(summary.knee.as_ref(), summary.gpus));
    text.push('\n');
    text.push_str(&max_line(summary));
    text.push('\n');
    if levels.iter().any(|(_, ci)| *ci == Some(false)) {
        text.push_str("note: CI wide = the RPM confidence interval did not reach the width target\n");
    }
    if summary.tokens_estimated {
        text.push_str("note: token counts are estimated; the server did not report usage\n");
    }
    text
}

/// Numbers right-aligned, the free-text notes column left-aligned; no trailing spaces.
fn push_line(text: &mut String, cells: &[String; 9], widths: &[usize; 9]) {
    let mut line = String::new();
    for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        if i == cells.len() - 1 {
            line.push_str(cell);
        } else {
            let _ = write!(line, "{cell:>w$}");
        }
    }
    text.push_str(line.trim_end());
    text.push('\n');
}

fn row_cells(l: &LevelRow, ci_met: Option<bool>) -> [String; 9] {
    let mut notes = Vec::new();
    if l.client_limited {
        notes.push("client-limited");
    }
    if ci_met == Some(false) {
        notes.push("CI wide");
    }
    [
        l.concurrency.to_string(),
        rpm_with_ci(l),
        thousands(l.rpm_per_gpu),
        fmt_amount(l.latency_p50_ms),
        fmt_amount(l.latency_p95_ms),
        l.ttft_p50_ms.map(fmt_amount).unwrap_or_else(|| "-".into()),
        fmt_amount(l.output_tokens_per_s),
        if l.error_rate.is_finite() {
            format!("{:.2}%", l.error_rate * 100.0)
        } else {
            "-".into()
        },
        notes.join(", "),
    ]
}

/// `19,184 ±1.2%`: the CI half-width relative to the RPM, which reads faster than
/// two absolute bounds when scanning a column.
fn rpm_with_ci(l: &LevelRow) -> String {
    let rpm = thousands(l.rpm);
    let half = (l.rpm_ci_high - l.rpm_ci_low) / 2.0 / l.rpm * 100.0;
    if l.rpm.is_finite() && half.is_finite() && half >= 0.0 {
        format!("{rpm} ±{half:.1}%")
    } else {
        rpm
    }
}

/// Milliseconds and token rates: one decimal while small, whole numbers with
/// thousands separators once the decimal stops mattering.
fn fmt_amount(v: f64) -> String {
    if v.abs() >= 1000.0 {
        thousands(v)
    } else {
        grouped(v, 1)
    }
}

/// `16 / 2 = 8`, `10 / 4 = 2.5`: whole numbers print without a decimal.
fn per_gpu_count(concurrency: u32, gpus: u32) -> String {
    let v = f64::from(concurrency) / f64::from(gpus);
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn knee_line(knee: Option<&KneeRow>, gpus: u32) -> String {
    let Some(k) = knee else {
        return "knee: none found in the tested range".into();
    };
    let mut line = format!("knee: concurrency {}", k.concurrency);
    // Without a GPU count, "per GPU" figures would be meaningless.
    if gpus > 0 {
        let _ = write!(line, " ({} per GPU)", per_gpu_count(k.concurrency, gpus));
    }
    let _ = write!(line, ", {} RPM", thousands(k.rpm));
    if gpus > 0 {
        let _ = write!(line, " ({} per GPU)", thousands(k.rpm_per_gpu));
    }
    {
        let _ = write!(line, ", limited by {}", k.limited_by);
    }
    line
}

fn max_line(s: &Summary) -> String {
    let mut line = format!("max: {} RPM", thousands(s.max_rpm));
    if s.gpus > 0 {
        let _ = write!(line, " ({} per GPU)", thousands(s.max_rpm_per_gpu));
    }
    // Name the level only when one level clearly carries the maximum.
    if let Some(l) = s.levels.iter().find(|l| l.rpm == s.max_rpm) {
        let _ = write!(line, " at concurrency {}", l.concurrency);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures;

    #[test]
    fn snapshot() {
        let mut s = fixtures::summary();
        s.levels[0].rpm = 1184.4;
        s.levels[0].ttft_p50_ms = None;
        s.levels[2].rpm = 19184.0;
        s.levels[2].rpm_ci_low = 18954.0;
        s.levels[2].rpm_ci_high = 19414.0;
        s.levels[2].rpm_per_gpu = 9592.0;
        s.levels[3].client_limited = true;
        s.levels[3].error_rate = 0.0123;
        s.levels[3].latency_p95_ms = 1234.5;
        s.knee = Some(KneeRow {
            concurrency: 16,
            rpm: 19184.0,
            rpm_per_gpu: 9592.0,
            limited_by: crate::model::LimitedBy::Saturation,
        });
        s.tokens_estimated = true;
        let expected = "\
concurrency       RPM ±CI  RPM/GPU  p50 ms  p95 ms  TTFT p50  tokens/s  errors  notes
-----------  ------------  -------  ------  ------  --------  --------  ------  -----------------------
          1   1,184 ±1.0%      600    88.0   110.0         -     4,000   0.00%
          4   4,600 ±1.0%    2,300   104.0   130.0     120.5    15,333   0.00%
         16  19,184 ±1.2%    9,592   144.0   180.0     120.5    64,000   0.00%
         64  19,500 ±1.0%    9,750   560.0   1,235     120.5    65,000   1.23%  client-limited, CI wide
knee: concurrency 16 (8 per GPU), 19,184 RPM (9,592 per GPU), limited by saturation
max: 19,500 RPM (9,750 per GPU) at concurrency 64
note: CI wide = the RPM confidence interval did not reach the width target
note: token counts are estimated; the server did not report usage
";
        let mut buf = Vec::new();
        TableExporter.write(&s, &mut buf).unwrap();
        let got = String::from_utf8(buf).unwrap();
        assert_eq!(got, expected, "\n{got}");
    }

    #[test]
    fn nasty_inputs_render() {
        for s in fixtures::nasty() {
            let text = render(&s);
            assert!(text.contains("knee:"));
            assert!(text.contains("max:"));
            assert!(!text.contains("NaN"), "{text}");
        }
        let mut empty = fixtures::summary();
        empty.levels.clear();
        assert!(render(&empty).starts_with("no concurrency levels were measured\n"));
    }

    #[test]
    fn knee_without_gpus() {
        let k = KneeRow {
            concurrency: 10,
            rpm: 1234.0,
            rpm_per_gpu: f64::NAN,
            limited_by: crate::model::LimitedBy::Slo,
        };
        assert_eq!(
            knee_line(Some(&k), 0),
            "knee: concurrency 10, 1,234 RPM, limited by slo"
        );
        assert_eq!(
            knee_line(Some(&k), 4),
            "knee: concurrency 10 (2.5 per GPU), 1,234 RPM (- per GPU), limited by slo"
        );
    }
}
