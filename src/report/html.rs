//! `report.html`: one self-contained page (no network, no script) with what a team reads
//! about a sweep: the throughput plot, the levels with their CIs and the server's columns,
//! the knee and its evidence, the workload mix, and the sections a command adds (the plan's
//! arithmetic, a run's predicted vs achieved).

use super::exporter::Exporter;
use super::svg::SvgExporter;
use crate::fmt::{short, thousands};
use crate::model::{LevelRow, Summary};
use std::fmt::Write as _;
use std::io::Write;

/// A titled block of label/value rows with notes under it, filled by the command that owns
/// the figures (the report module knows no plan or run types).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Section {
    pub title: String,
    pub rows: Vec<(String, String)>,
    pub notes: Vec<String>,
}

impl Section {
    /// A section from text lines `label: value` (as `planner::explain` prints them); a line
    /// without a label becomes a row with an empty label.
    pub fn from_lines(title: &str, text: &str, notes: Vec<String>) -> Section {
        let rows = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| match l.split_once(": ") {
                Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
                None => (String::new(), l.trim().to_string()),
            })
            .collect();
        Section {
            title: title.to_string(),
            rows,
            notes,
        }
    }
}

/// The page with no extra sections: what `sweep` writes after each level.
pub struct HtmlExporter;

impl Exporter for HtmlExporter {
    fn write(&self, summary: &Summary, out: &mut dyn Write) -> anyhow::Result<()> {
        write_page(summary, &[], out)
    }
}

/// Writes the page; `sections` follow the sweep's own.
pub fn write_page(summary: &Summary, sections: &[Section], out: &mut dyn Write) -> anyhow::Result<()> {
    out.write_all(render(summary, sections).as_bytes())?;
    Ok(())
}

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:84em;padding:0 1em;color:#222}\
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}\
.sub{color:#666;margin-top:0}.scroll{overflow-x:auto}.big{font-size:1.25em}table{border-collapse:collapse;margin:.6em 0;font-size:.92em}\
th,td{padding:.25em .6em;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}\
th{background:#f5f5f5;font-weight:600;white-space:normal}td.l,th.l{text-align:left;white-space:normal}\
tr.knee td{background:#eef6ff;font-weight:600}.warn{color:#a15c00}.plot svg{max-width:100%;height:auto}\
ul{margin:.3em 0}code{background:#f3f3f3;padding:0 .2em}";

fn render(s: &Summary, sections: &[Section]) -> String {
    let mut h = String::new();
    let title = format!("sizeup report: {} at {}", or_dash(&s.model), s.endpoint);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n",
        esc(&title)
    );
    let _ = writeln!(h, "<h1>{}</h1>", esc(&title));
    let _ = writeln!(
        h,
        "<p class=\"sub\">{} GPU(s), API {}, swept {} by sizeup {}</p>",
        s.gpus,
        esc(s.api.name()),
        esc(&s.started_at),
        esc(&s.sizeup_version)
    );
    headline(&mut h, s);
    let mut svg = Vec::new();
    if SvgExporter.write(s, &mut svg).is_ok() {
        let svg = String::from_utf8_lossy(&svg);
        let _ = writeln!(h, "<h2>Throughput</h2><div class=\"plot\">{}</div>", svg.trim());
    }
    levels_table(&mut h, s);
    knee_section(&mut h, s);
    mix_section(&mut h, s);
    for sec in sections {
        section(&mut h, sec);
    }
    let _ = writeln!(
        h,
        "<p class=\"sub\">Files beside this page: levels.csv (one row per level), summary.json (everything here), requests.csv (every request), throughput.svg.</p>\n</body></html>"
    );
    h
}

fn headline(h: &mut String, s: &Summary) {
    let Some(k) = &s.knee else {
        let _ = writeln!(
            h,
            "<p class=\"big\">No knee found: throughput was still growing at the last level (max {} RPM, {} per GPU).</p>",
            thousands(s.max_rpm),
            thousands(s.max_rpm_per_gpu)
        );
        return;
    };
    let _ = write!(
        h,
        "<p class=\"big\">Knee at concurrency <b>{}</b> ({} per GPU): <b>{} RPM per GPU</b> ({} RPM in all), limited by {}.",
        k.concurrency,
        s.batch_size_per_gpu.map_or("-".into(), short),
        thousands(k.rpm_per_gpu),
        thousands(k.rpm),
        esc(k.limited_by.as_str())
    );
    if let Some(v) = s.server.as_ref().and_then(|sv| sv.verdict.as_ref()) {
        let _ = write!(h, " Server: <b>{}</b>.", esc(v.limit.as_str()));
    }
    let _ = writeln!(h, "</p>");
}

fn levels_table(h: &mut String, s: &Summary) {
    let server = s.levels.iter().any(|l| l.server_running_mean.is_some());
    let _ = write!(
        h,
        "<h2>Levels</h2><div class=\"scroll\"><table><tr><th>concurrency</th><th>RPM</th><th>95% CI</th><th>RPM/GPU</th>\
         <th>p50 ms</th><th>p95 ms</th><th>TTFT p50 ms</th><th>output tok/s</th><th>errors</th>"
    );
    if server {
        let _ = write!(
            h,
            "<th>server running (mean/max)</th><th>server waiting</th><th>KV max</th><th>preemptions</th><th>server tok/s</th>"
        );
    }
    // The prefix cache's share, where the server's metrics or its answers tell it.
    let cache = s
        .levels
        .iter()
        .any(|l| l.server_prefix_cache_hit_rate.is_some() || l.cached_prompt_tokens_per_s.is_some());
    if cache {
        let _ = write!(h, "<th>prefix cache hits</th><th>cached prompt tok/s</th>");
    }
    let _ = writeln!(h, "<th class=\"l\">notes</th></tr>");
    let knee = s.knee.as_ref().map(|k| k.concurrency);
    for (i, l) in s.levels.iter().enumerate() {
        let class = if Some(l.concurrency) == knee {
            " class=\"knee\""
        } else {
            ""
        };
        let _ = write!(
            h,
            "<tr{class}><td>{}</td><td>{}</td><td>{} – {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}%</td>",
            l.concurrency,
            thousands(l.rpm),
            thousands(l.rpm_ci_low),
            thousands(l.rpm_ci_high),
            thousands(l.rpm_per_gpu),
            ms(l.latency_p50_ms),
            ms(l.latency_p95_ms),
            l.ttft_p50_ms.map_or("-".into(), ms),
            thousands(l.output_tokens_per_s),
            l.error_rate * 100.0
        );
        if server {
            let _ = write!(
                h,
                "<td>{} / {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
                opt(l.server_running_mean),
                opt(l.server_running_max),
                opt(l.server_waiting_mean),
                l.server_kv_cache_usage_max
                    .map_or("-".into(), |v| format!("{:.0}%", v * 100.0)),
                opt(l.server_preemptions),
                l.server_output_tokens_per_s.map_or("-".into(), thousands)
            );
        }
        if cache {
            let _ = write!(
                h,
                "<td>{}</td><td>{}</td>",
                l.server_prefix_cache_hit_rate
                    .map_or("-".into(), |v| format!("{:.0}%", v * 100.0)),
                l.cached_prompt_tokens_per_s.map_or("-".into(), thousands)
            );
        }
        let _ = writeln!(
            h,
            "<td class=\"l\">{}</td></tr>",
            esc(&notes(l, s.ci_met.get(i).copied()))
        );
    }
    let _ = writeln!(h, "</table></div>");
}

fn notes(l: &LevelRow, ci_met: Option<bool>) -> String {
    let mut n = Vec::new();
    if !l.rpm.is_finite() {
        n.push("no data".to_string());
    }
    if ci_met == Some(false) && l.rpm.is_finite() {
        n.push("CI wider than the target".into());
    }
    if l.client_limited {
        n.push("client-limited".into());
    }
    if l.repeated_requests > 0 {
        n.push(format!("{} repeated", l.repeated_requests));
    }
    n.join(", ")
}

fn knee_section(h: &mut String, s: &Summary) {
    let _ = writeln!(h, "<h2>The knee and its evidence</h2><ul>");
    match &s.knee {
        Some(k) => {
            let _ = writeln!(
                h,
                "<li>Client side: RPM stopped growing beyond concurrency {} ({} RPM, limited by {}).</li>",
                k.concurrency,
                thousands(k.rpm),
                esc(k.limited_by.as_str())
            );
        }
        None => {
            let _ = writeln!(h, "<li>Client side: no knee among the levels measured.</li>");
        }
    }
    match &s.server {
        Some(sv) => {
            if sv.dialect == "none" {
                let _ = writeln!(
                    h,
                    "<li>Server side: no metrics; the answers themselves tell the verdict.</li>"
                );
            } else {
                let _ = writeln!(
                    h,
                    "<li>Server side: {} metrics from <code>{}</code>; at most {} requests running at once.</li>",
                    esc(&sv.dialect),
                    esc(&sv.metrics_url),
                    sv.running_max_observed.map_or("-".into(), short)
                );
            }
            if let Some(v) = &sv.verdict {
                let _ = writeln!(
                    h,
                    "<li>Verdict: <b>{}</b>: {}.</li>",
                    esc(v.limit.as_str()),
                    esc(&v.evidence)
                );
            }
        }
        None => {
            let _ = writeln!(
                h,
                "<li>Server side: no metrics were read (the server serves none sizeup knows, or --server-metrics off).</li>"
            );
        }
    }
    let _ = writeln!(h, "</ul>");
}

fn mix_section(h: &mut String, s: &Summary) {
    let Some(w) = &s.workload else { return };
    let mut rows = vec![
        ("requests with token counts".to_string(), w.requests.to_string()),
        (
            "prompt tokens, mean".into(),
            w.prompt_tokens_mean.map_or("-".into(), short),
        ),
        ("output tokens, mean".into(), short(w.output_tokens_mean)),
        ("prompt bytes, mean".into(), short(w.prompt_bytes_mean)),
    ];
    if let Some(r) = w.requested_output_tokens_mean {
        rows.push(("max_tokens asked, mean".into(), short(r)));
    }
    if let Some(t) = w.tokens_per_prompt_byte {
        rows.push(("prompt tokens per byte".into(), format!("{t:.3}")));
    }
    if let Some(o) = w.output_per_requested_token {
        rows.push(("share of max_tokens used".into(), format!("{:.0}%", o * 100.0)));
    }
    if let (Some(d), Some(r)) = (s.distinct_requests, s.repeated_requests) {
        rows.push(("distinct / repeated requests".into(), format!("{d} / {r}")));
    }
    section(
        h,
        &Section {
            title: "Workload mix".into(),
            rows,
            notes: Vec::new(),
        },
    );
}

fn section(h: &mut String, sec: &Section) {
    let _ = writeln!(h, "<h2>{}</h2><table>", esc(&sec.title));
    for (k, v) in &sec.rows {
        let _ = writeln!(
            h,
            "<tr><th class=\"l\">{}</th><td class=\"l\">{}</td></tr>",
            esc(k),
            esc(v)
        );
    }
    let _ = writeln!(h, "</table>");
    if !sec.notes.is_empty() {
        let _ = writeln!(h, "<ul>");
        for n in &sec.notes {
            let _ = writeln!(h, "<li class=\"warn\">{}</li>", esc(n));
        }
        let _ = writeln!(h, "</ul>");
    }
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

fn ms(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "-".into()
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), short)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures;
    use crate::model::{ServerInfo, ServerVerdict};

    #[test]
    fn page_has_the_figures_and_no_outside_references() {
        let mut s = fixtures::summary();
        s.model = "<script>alert(1)</script>".into();
        s.levels[3].server_running_mean = Some(16.0);
        s.levels[3].server_running_max = Some(16.0);
        s.levels[3].server_waiting_mean = Some(47.5);
        s.server = Some(ServerInfo {
            dialect: "vllm".into(),
            metrics_url: "http://h:8000/metrics".into(),
            running_max_observed: Some(16.0),
            prefix_cache_tokens: None,
            verdict: Some(ServerVerdict {
                limit: crate::model::ServerLimit::ServerBatch,
                evidence: "it ran 16 & queued".into(),
            }),
        });
        let sec = Section {
            title: "Plan".into(),
            rows: vec![("GPUs".into(), "4".into())],
            notes: vec!["KV cache near full".into()],
        };
        let mut buf = Vec::new();
        write_page(&s, &[sec], &mut buf).unwrap();
        let page = String::from_utf8(buf).unwrap();
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(!page.contains("<script"), "user text is escaped");
        assert!(page.contains("&lt;script&gt;"));
        for needle in [
            "Knee at concurrency <b>16</b>",
            "9,600 RPM per GPU",
            "<svg",
            "server running (mean/max)",
            "<td>16 / 16</td><td>47.5</td>",
            "Verdict: <b>server_batch</b>: it ran 16 &amp; queued.",
            "<h2>Plan</h2>",
            "KV cache near full",
        ] {
            assert!(page.contains(needle), "missing {needle}");
        }
        // Self-contained: nothing fetched from elsewhere.
        for banned in ["src=\"http", "href=\"http", "<link", "@import", "url("] {
            assert!(!page.contains(banned), "page references {banned}");
        }
    }

    #[test]
    fn nasty_summaries_render() {
        for s in fixtures::nasty() {
            let mut buf = Vec::new();
            HtmlExporter.write(&s, &mut buf).unwrap();
            assert!(String::from_utf8(buf).unwrap().ends_with("</html>\n"));
        }
    }
}
