//! `throughput.svg`: RPM per GPU (with CI error bars) and p95 latency vs concurrency.
//!
//! Drawn with plotters' SVG backend without the `ttf` feature: text goes out as
//! plain `<text>` elements and the viewer picks the font, so rendering needs no
//! font files on the machine that runs the sweep.

use super::exporter::Exporter;
use crate::fmt::thousands;
use crate::model::{KneeRow, LevelRow, Summary};
use plotters::chart::DualCoordChartContext;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use std::io::Write;
use std::ops::Range;

/// Exporter for `throughput.svg`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SvgExporter;

/// Canvas size in pixels.
pub const SIZE: (u32, u32) = (900, 560);

const RPM_COLOR: RGBColor = RGBColor(31, 119, 180);
/// Error bars get a colour of their own, a lighter shade of the RPM line, so they
/// read as part of that series without hiding the points.
const ERRBAR_COLOR: RGBColor = RGBColor(120, 160, 200);
const LATENCY_COLOR: RGBColor = RGBColor(255, 127, 14);
const KNEE_COLOR: RGBColor = RGBColor(214, 39, 40);

/// Label under the x axis.
const X_LABEL: &str = "concurrency (requests in flight)";
/// Label of the left axis: the headline figure that `plan` sizes GPUs with.
const Y_LABEL: &str = "RPM per GPU";

/// Tick labels' font size, and the width one digit of it takes: plotters' SVG backend does not
/// measure text without the `ttf` feature, so collisions are judged on this estimate
/// (generous: a sans-serif digit is about 0.55 em).
const TICK_FONT_PX: u32 = 13;
const DIGIT_PX: f64 = 8.0;
/// Clear space between two neighbouring tick labels.
const LABEL_GAP_PX: f64 = 6.0;

impl Exporter for SvgExporter {
    fn write(&self, summary: &Summary, out: &mut dyn Write) -> anyhow::Result<()> {
        out.write_all(render(summary)?.as_bytes())?;
        Ok(())
    }
}

/// One plotted level, with x already on the log2 axis and RPM already per GPU.
struct Point {
    x: f64,
    level: LevelRow,
    rpm: f64,
    ci_low: f64,
    ci_high: f64,
}

/// Renders the chart to an SVG string.
pub fn render(summary: &Summary) -> anyhow::Result<String> {
    let title = format!(
        "RPM per GPU and p95 latency vs concurrency — {} @ {}",
        summary.model, summary.endpoint
    );
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        if summary.levels.is_empty() {
            draw_no_data(&root, &title)?;
        } else {
            draw_chart(&root, summary, &title)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(buf)
}

/// plotters' error type borrows the backend's error generics; flatten it to text so
/// callers only deal with `anyhow`.
fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing throughput.svg: {e}")
}

fn draw_no_data<DB: DrawingBackend>(root: &DrawingArea<DB, plotters::coord::Shift>, title: &str) -> anyhow::Result<()> {
    root.draw(&Text::new(title.to_string(), (20, 20), ("sans-serif", 20).into_font()))
        .map_err(plot_err)?;
    let (w, h) = root.dim_in_pixel();
    let style = TextStyle::from(("sans-serif", 28).into_font()).pos(plotters::style::text_anchor::Pos::new(
        plotters::style::text_anchor::HPos::Center,
        plotters::style::text_anchor::VPos::Center,
    ));
    root.draw(&Text::new("no data", (w as i32 / 2, h as i32 / 2), style))
        .map_err(plot_err)?;
    Ok(())
}

/// Concurrency lives on a log2 axis because sweeps double (1, 2, 4 … 64); on a
/// linear axis the low levels, where most of the curve's shape is, get squashed.
/// Zero cannot sit on a log axis, so it is drawn where 0.5 would be.
fn log2_x(concurrency: u32) -> f64 {
    f64::from(concurrency.max(1)).log2() - if concurrency == 0 { 1.0 } else { 0.0 }
}

/// Upper end of a value axis: 10% headroom over the largest finite value, and a
/// non-empty range even when every value is zero or missing.
fn axis_max(values: impl Iterator<Item = f64>) -> f64 {
    let max = values.filter(|v| v.is_finite()).fold(0.0_f64, f64::max);
    if max > 0.0 {
        max * 1.1
    } else {
        1.0
    }
}

/// The chart with its two value axes (RPM per GPU on the left, p95 latency on the right)
/// over one log2 concurrency axis.
type Chart<'a, DB> =
    DualCoordChartContext<'a, DB, Cartesian2d<Log2Axis, RangedCoordf64>, Cartesian2d<Log2Axis, RangedCoordf64>>;

/// The plotted ranges: x on the log2 axis, the left (RPM per GPU) and right (latency) axes.
struct Frame {
    x_min: f64,
    x_max: f64,
    rpm_min: f64,
    rpm_max: f64,
    lat_max: f64,
}

fn draw_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    summary: &Summary,
    title: &str,
) -> anyhow::Result<()> {
    let points = plot_points(summary);
    let frame = frame_of(&points);
    let ticks = x_ticks(&points, &frame);
    let x_axis = Log2Axis {
        range: frame.x_min..frame.x_max,
        ticks: ticks.clone(),
    };

    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .right_y_label_area_size(70)
        .build_cartesian_2d(x_axis.clone(), frame.rpm_min..frame.rpm_max)
        .map_err(plot_err)?
        .set_secondary_coord(x_axis, 0.0..frame.lat_max);

    draw_axes(&mut chart, &ticks, frame.rpm_min)?;
    draw_error_bars(&mut chart, &points, &frame)?;
    draw_rpm_series(&mut chart, &points)?;
    draw_latency_series(&mut chart, &points)?;
    if let Some(knee) = &summary.knee {
        draw_knee(root, &mut chart, knee, summary.gpus, &frame)?;
    }
    draw_legend(&mut chart)
}

/// One point per level, sorted along the x axis.
fn plot_points(summary: &Summary) -> Vec<Point> {
    // Every RPM figure is divided by the same GPU count, so bars and points agree even for a
    // summary without GPUs (drawn as one).
    let gpus = f64::from(summary.gpus.max(1));
    let mut points: Vec<Point> = summary
        .levels
        .iter()
        .map(|l| Point {
            x: log2_x(l.concurrency),
            level: l.clone(),
            rpm: l.rpm / gpus,
            ci_low: l.rpm_ci_low / gpus,
            ci_high: l.rpm_ci_high / gpus,
        })
        .collect();
    points.sort_by(|a, b| a.x.total_cmp(&b.x));
    points
}

/// The ranges that hold every point (`points` sorted along x).
fn frame_of(points: &[Point]) -> Frame {
    Frame {
        x_min: points.first().map_or(0.0, |p| p.x) - 0.3,
        x_max: points.last().map_or(0.0, |p| p.x) + 0.3,
        // A normal-approximation CI can dip below zero on tiny samples; extend the
        // axis rather than let the bar run out of the frame.
        rpm_min: points
            .iter()
            .map(|p| p.ci_low)
            .filter(|v| v.is_finite())
            .fold(0.0_f64, f64::min),
        rpm_max: axis_max(points.iter().flat_map(|p| [p.rpm, p.ci_high, p.ci_low])),
        lat_max: axis_max(points.iter().map(|p| p.level.latency_p95_ms)),
    }
}

/// Ticks at the measured levels when there are few of them (they are what the
/// reader looks for); otherwise at powers of two, thinned to keep labels apart.
fn x_ticks(points: &[Point], frame: &Frame) -> Vec<f64> {
    let mut ticks: Vec<f64> = points.iter().map(|p| p.x).collect();
    ticks.dedup();
    if ticks.len() > 10 {
        let (lo, hi) = (frame.x_min.ceil() as i64, frame.x_max.floor() as i64);
        let step = ((hi - lo) / 10 + 1).max(1) as usize;
        ticks = (lo..=hi).step_by(step).map(|k| k as f64).collect();
    }
    ticks
}

/// Both axes with their descriptions and tick labels.
fn draw_axes<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    ticks: &[f64],
    rpm_min: f64,
) -> anyhow::Result<()> {
    // Every tick keeps its mark; only labels that have room are written (refined levels such
    // as 14, 15, 16 sit a few pixels apart on a log axis).
    let candidates: Vec<(f64, u32)> = ticks
        .iter()
        .map(|&x| (f64::from(chart.backend_coord(&(x, rpm_min)).0), concurrency_of(x)))
        .collect();
    let labelled: Vec<f64> = ticks
        .iter()
        .zip(shown_labels(&candidates, DIGIT_PX, LABEL_GAP_PX))
        .filter_map(|(&x, shown)| shown.then_some(x))
        .collect();
    let x_label = |v: &f64| {
        if labelled.contains(v) {
            format_concurrency(*v)
        } else {
            String::new()
        }
    };

    chart
        .configure_mesh()
        .x_desc(X_LABEL)
        .y_desc(Y_LABEL)
        .x_label_style(("sans-serif", TICK_FONT_PX))
        .x_label_formatter(&x_label)
        .y_label_formatter(&|v| thousands(*v))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(plot_err)?;
    chart
        .configure_secondary_axes()
        .y_desc("p95 latency (ms)")
        .y_label_formatter(&|v| thousands(*v))
        .draw()
        .map_err(plot_err)?;
    Ok(())
}

/// Error bars: one polyline per level (bottom cap, stem, top cap), so the SVG
/// has exactly one path per bar.
fn draw_error_bars<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    points: &[Point],
    frame: &Frame,
) -> anyhow::Result<()> {
    let cap = (frame.x_max - frame.x_min) * 0.008;
    let bars = points.iter().filter_map(|p| {
        let (lo, hi) = (p.ci_low, p.ci_high);
        (lo.is_finite() && hi.is_finite()).then(|| {
            PathElement::new(
                vec![
                    (p.x - cap, lo),
                    (p.x + cap, lo),
                    (p.x, lo),
                    (p.x, hi),
                    (p.x - cap, hi),
                    (p.x + cap, hi),
                ],
                ERRBAR_COLOR.stroke_width(2),
            )
        })
    });
    chart.draw_series(bars).map_err(plot_err)?;
    Ok(())
}

/// RPM per GPU on the left axis: a line and a dot per level.
fn draw_rpm_series<'a, DB: DrawingBackend + 'a>(chart: &mut Chart<'a, DB>, points: &[Point]) -> anyhow::Result<()> {
    let rpm_pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.rpm.is_finite())
        .map(|p| (p.x, p.rpm))
        .collect();
    chart
        .draw_series(LineSeries::new(rpm_pts.clone(), RPM_COLOR.stroke_width(2)))
        .map_err(plot_err)?
        .label("RPM per GPU (bars: confidence interval)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RPM_COLOR.stroke_width(2)));
    chart
        .draw_series(rpm_pts.iter().map(|&p| Circle::new(p, 4, RPM_COLOR.filled())))
        .map_err(plot_err)?;
    Ok(())
}

/// p95 latency on the right axis: a line and a triangle per level.
fn draw_latency_series<'a, DB: DrawingBackend + 'a>(chart: &mut Chart<'a, DB>, points: &[Point]) -> anyhow::Result<()> {
    let lat_pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.level.latency_p95_ms.is_finite())
        .map(|p| (p.x, p.level.latency_p95_ms))
        .collect();
    chart
        .draw_secondary_series(LineSeries::new(lat_pts.clone(), LATENCY_COLOR.stroke_width(2)))
        .map_err(plot_err)?
        .label("p95 latency (ms, right axis)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], LATENCY_COLOR.stroke_width(2)));
    chart
        .draw_secondary_series(
            lat_pts
                .iter()
                .map(|&p| TriangleMarker::new(p, 5, LATENCY_COLOR.filled())),
        )
        .map_err(plot_err)?;
    Ok(())
}

/// The knee: a dashed vertical line with its label beside it, on the side with more room.
fn draw_knee<'a, DB: DrawingBackend + 'a>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    chart: &mut Chart<'a, DB>,
    knee: &KneeRow,
    gpus: u32,
    frame: &Frame,
) -> anyhow::Result<()> {
    let x = log2_x(knee.concurrency);
    // A knee outside the plotted levels would draw outside the frame.
    if !(frame.x_min..=frame.x_max).contains(&x) {
        return Ok(());
    }
    let label = knee_label(knee.concurrency, knee.rpm_per_gpu, knee.rpm, gpus);
    chart
        .draw_series(std::iter::once(DashedPathElement::new(
            vec![(x, frame.rpm_min), (x, frame.rpm_max)],
            6,
            4,
            KNEE_COLOR.stroke_width(2),
        )))
        .map_err(plot_err)?
        .label(label.clone())
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], KNEE_COLOR.stroke_width(2)));
    // Put the label beside the line, on the side with more room.
    let right_side = x < (frame.x_min + frame.x_max) / 2.0;
    let anchor = if right_side {
        plotters::style::text_anchor::HPos::Left
    } else {
        plotters::style::text_anchor::HPos::Right
    };
    let style =
        TextStyle::from(("sans-serif", 15).into_font())
            .color(&KNEE_COLOR)
            .pos(plotters::style::text_anchor::Pos::new(
                anchor,
                plotters::style::text_anchor::VPos::Top,
            ));
    let (px, py) = chart.backend_coord(&(x, frame.rpm_max));
    let dx = if right_side { 6 } else { -6 };
    root.draw(&Text::new(label, (px + dx, py + 6), style))
        .map_err(plot_err)?;
    Ok(())
}

/// The series legend, in the lower right corner.
fn draw_legend<'a, DB: DrawingBackend + 'a>(chart: &mut Chart<'a, DB>) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(plot_err)?;
    Ok(())
}

/// A linear axis over log2(concurrency) whose ticks sit exactly on chosen values.
/// plotters' own log axis puts ticks at powers of ten, and its key-point wrapper
/// cannot take a label formatter, hence this small coordinate type.
#[derive(Clone)]
struct Log2Axis {
    range: Range<f64>,
    ticks: Vec<f64>,
}

impl Ranged for Log2Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = self.range.end - self.range.start;
        let frac = if span > 0.0 {
            (value - self.range.start) / span
        } else {
            0.5
        };
        // `as` saturates (NaN -> 0), so odd inputs cannot panic here.
        limit.0 + (f64::from(limit.1 - limit.0) * frac).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        self.ticks.clone()
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

/// The concurrency a log2-axis value stands for (0 sits at log2 0.5).
fn concurrency_of(v: f64) -> u32 {
    let c = v.exp2();
    if c < 1.0 {
        0
    } else {
        // `as` saturates, so an absurd value cannot panic.
        c.round() as u32
    }
}

/// Axis values are log2(concurrency); label them with the concurrency itself.
fn format_concurrency(v: f64) -> String {
    concurrency_of(v).to_string()
}

/// Which tick labels to write, given each tick's `(pixel x, concurrency)`: a label is shown
/// unless its text would come within `gap_px` of a label already shown, with each label
/// `digit_px` wide per digit. Powers of two (and 0) are placed first, being the doubling
/// levels a reader scans for, then the refined levels from left to right; so of 14, 15, 16
/// it is 16 that keeps its label and 14 only if it has room.
pub fn shown_labels(ticks: &[(f64, u32)], digit_px: f64, gap_px: f64) -> Vec<bool> {
    let width = |c: u32| c.to_string().len() as f64 * digit_px;
    let mut order: Vec<usize> = (0..ticks.len()).collect();
    // Stable: within each group the ticks keep their left-to-right order.
    order.sort_by_key(|&i| !(ticks[i].1 == 0 || ticks[i].1.is_power_of_two()));
    let mut shown = vec![false; ticks.len()];
    for i in order {
        let (x, c) = ticks[i];
        let fits = ticks
            .iter()
            .zip(&shown)
            .all(|(&(other_x, other_c), &on)| !on || (x - other_x).abs() >= (width(c) + width(other_c)) / 2.0 + gap_px);
        shown[i] = fits && x.is_finite();
    }
    shown
}

/// `knee: C=16, 9,600 RPM per GPU`, with the whole deployment's figure when it has several GPUs.
fn knee_label(concurrency: u32, rpm_per_gpu: f64, rpm: f64, gpus: u32) -> String {
    let mut label = format!("knee: C={concurrency}, {} RPM per GPU", thousands(rpm_per_gpu));
    if gpus > 1 {
        label.push_str(&format!(" ({} on {gpus} GPUs)", thousands(rpm)));
    }
    label
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures;

    fn svg(s: &Summary) -> String {
        let mut buf = Vec::new();
        SvgExporter.write(s, &mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    /// Inner text of every `<text>` element (plotters puts it on its own line).
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim().to_string())
            })
            .collect()
    }

    #[test]
    fn chart_has_knee_and_one_error_bar_per_level() {
        let s = fixtures::summary();
        let text = svg(&s);
        assert!(text.starts_with("<svg"), "{}", &text[..80]);
        assert!(text.contains("width=\"900\" height=\"560\""));
        let labels = texts(&text);
        assert!(
            labels
                .iter()
                .any(|t| t == "knee: C=16, 9,600 RPM per GPU (19,200 on 2 GPUs)"),
            "{labels:?}"
        );
        assert!(labels.iter().any(|t| t == X_LABEL));
        assert!(labels.iter().any(|t| t == Y_LABEL));
        assert!(labels
            .iter()
            .any(|t| t == "RPM per GPU and p95 latency vs concurrency — llama-3-8b @ http://localhost:8000/v1"));
        // The left axis is per GPU: 2 GPUs at 19,500 RPM top out near 9,750, so no tick
        // reaches the total.
        assert!(labels.iter().any(|t| t == "8,000"), "{labels:?}");
        assert!(!labels.iter().any(|t| t == "18,000"), "{labels:?}");
        // x ticks at the measured levels, labelled with the concurrency itself.
        for c in ["1", "4", "16", "64"] {
            assert!(labels.iter().any(|t| t == c), "tick {c} in {labels:?}");
        }
        let bars = text.matches("stroke=\"#78A0C8\"").count();
        assert_eq!(bars, s.levels.len());
        assert!(text.contains("p95 latency (ms)"));
        // No embedded font data: text is left to the viewer.
        assert!(!text.contains("@font-face"));
    }

    #[test]
    fn empty_levels_say_no_data() {
        let mut s = fixtures::summary();
        s.levels.clear();
        let text = svg(&s);
        assert!(text.starts_with("<svg"));
        assert!(texts(&text).iter().any(|t| t == "no data"));
        assert!(text.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn nasty_inputs_still_give_svg() {
        for s in fixtures::nasty() {
            let text = svg(&s);
            assert!(text.starts_with("<svg"));
            assert!(text.trim_end().ends_with("</svg>"));
            assert!(!text.contains("NaN"), "{text}");
        }
    }

    #[test]
    fn many_levels_get_thinned_ticks() {
        let mut s = fixtures::summary();
        s.levels = (1..=40)
            .map(|c| fixtures::level(c * 3, f64::from(c) * 100.0, 100.0))
            .collect();
        let text = svg(&s);
        assert_eq!(text.matches("stroke=\"#78A0C8\"").count(), 40);
        let labels = texts(&text);
        assert!(labels.iter().any(|t| t == "64"), "{labels:?}");
    }

    #[test]
    fn close_levels_do_not_share_label_space() {
        let shown = |ticks: &[(f64, u32)]| shown_labels(ticks, 8.0, 6.0);
        // 14, 15 and 16 a dozen pixels apart: 16 (a power of two) wins, 15 never fits,
        // 14 fits only if far enough from 12.
        let ticks = [
            (100.0, 8),
            (200.0, 12),
            (232.0, 14),
            (241.0, 15),
            (252.0, 16),
            (352.0, 32),
        ];
        assert_eq!(shown(&ticks), vec![true, true, false, false, true, true]);
        let ticks = [(100.0, 8), (170.0, 12), (225.0, 14), (241.0, 15), (252.0, 16)];
        assert_eq!(shown(&ticks), vec![true, true, true, false, true]);
        // Wider labels need more room: 512 and 768 at 25 px apart collide, 8 and 12 do not.
        assert_eq!(shown(&[(0.0, 512), (25.0, 768)]), vec![true, false]);
        assert_eq!(shown(&[(0.0, 8), (25.0, 12)]), vec![true, true]);
        // Zero counts as a round level; a NaN position is never labelled.
        assert_eq!(shown(&[(0.0, 0), (5.0, 1), (f64::NAN, 2)]), vec![true, false, false]);
        assert!(shown(&[]).is_empty());
    }

    #[test]
    fn the_example_sweeps_refined_levels_are_not_crowded() {
        let mut s = fixtures::summary();
        s.levels = [1, 2, 4, 8, 16, 32, 64, 12, 14, 15]
            .into_iter()
            .map(|c| fixtures::level(c, f64::from(c.min(16)) * 1000.0, 100.0))
            .collect();
        let labels = texts(&svg(&s));
        for c in ["1", "2", "4", "8", "12", "16", "32", "64"] {
            assert!(labels.iter().any(|t| t == c), "tick {c} in {labels:?}");
        }
        assert!(!labels.iter().any(|t| t == "15"), "15 sits on top of 16: {labels:?}");
        // Every level keeps its error bar.
        assert_eq!(svg(&s).matches("stroke=\"#78A0C8\"").count(), 10);
    }

    #[test]
    fn knee_label_names_the_total_only_for_several_gpus() {
        assert_eq!(knee_label(16, 9600.0, 9600.0, 1), "knee: C=16, 9,600 RPM per GPU");
        assert_eq!(
            knee_label(16, 9600.0, 19200.0, 2),
            "knee: C=16, 9,600 RPM per GPU (19,200 on 2 GPUs)"
        );
    }

    /// The committed example's summary.json and throughput.svg, read at compile time.
    const EXAMPLE_SUMMARY: &str = include_str!("../../reports/example/summary.json");
    const EXAMPLE_SVG: &str = include_str!("../../reports/example/throughput.svg");

    /// The committed example's chart is what this code draws from its summary.json (no
    /// sweep, no network).
    #[test]
    fn example_chart_is_current() {
        let summary: Summary = serde_json::from_str(EXAMPLE_SUMMARY).unwrap();
        assert!(
            svg(&summary) == EXAMPLE_SVG,
            "reports/example/throughput.svg is stale; redraw it with `redraw_example`"
        );
    }

    /// Prints the committed example's chart, redrawn from its summary.json, on stdout
    /// between two marker lines: `cargo test --lib redraw_example -- --ignored --nocapture`,
    /// then copy the lines between the markers to reports/example/throughput.svg.
    #[test]
    #[ignore = "prints reports/example/throughput.svg on stdout"]
    fn redraw_example() {
        let summary: Summary = serde_json::from_str(EXAMPLE_SUMMARY).unwrap();
        println!("----- throughput.svg -----\n{}----- end -----", svg(&summary));
    }

    #[test]
    fn markup_in_names_is_escaped() {
        let mut s = fixtures::summary();
        s.model = "<m&m>".into();
        let text = svg(&s);
        assert!(text.contains("&lt;m&amp;m&gt;"));
    }
}
