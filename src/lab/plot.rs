//! The lab's plots (plotters, PNG and SVG): for each setting (loss, straggler, partition, peer
//! count), the target metric (test accuracy, validation loss, ...) against wall time with one
//! line per mode and seed, its spread across peers against time, and UDP bytes sent per peer
//! against time; and for the whole lab, each run's final value of the metric against the MiB
//! it sent per peer (`quality-vs-bytes`).
//!
//! Text needs a TrueType font: `RUMOR_FONT` if set, else the first of a few common system
//! paths (DejaVu, Liberation). Without one no plot is drawn and the report says so.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::file::LabTarget;
use super::{CellSummary, LabError, Series};
use crate::config::Mode;
use crate::workload::Direction;

const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers a font for plotters once; false when none could be loaded.
fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let candidates = std::env::var("RUMOR_FONT")
            .ok()
            .into_iter()
            .chain(FONT_PATHS.iter().map(|s| s.to_string()));
        for path in candidates {
            if let Ok(bytes) = std::fs::read(&path) {
                // Leaked once per process: plotters keeps fonts for the program's lifetime.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// What a plot shows.
#[derive(Clone, Copy)]
enum Metric<'a> {
    /// The target metric, by name.
    Value(&'a str),
    Spread(&'a str),
    Bytes,
}

impl Metric<'_> {
    fn file(self) -> String {
        match self {
            Metric::Value(name) => name.to_string(),
            Metric::Spread(_) => "spread".into(),
            Metric::Bytes => "bytes".into(),
        }
    }
    fn label(self) -> String {
        match self {
            Metric::Value(name) => format!("mean {name} of the peers' bases"),
            Metric::Spread(name) => format!("{name} spread across peers (max - min)"),
            Metric::Bytes => "UDP MiB sent per peer".into(),
        }
    }
    fn points(self, s: &Series) -> Vec<(f64, f64)> {
        match self {
            Metric::Value(_) => s.mean_value.clone(),
            Metric::Spread(_) => s.spread.clone(),
            Metric::Bytes => s
                .bytes_per_peer
                .iter()
                .map(|&(t, b)| (t, b / (1024.0 * 1024.0)))
                .collect(),
        }
    }
}

fn mode_color(mode: Mode, seed_rank: usize) -> RGBColor {
    let base = match mode {
        Mode::Gossip => (31, 119, 180),
        Mode::Sync => (214, 39, 40),
        Mode::Centralized => (44, 160, 44),
    };
    // Later seeds are lighter shades of the mode's colour.
    let k = (seed_rank as f64 * 0.25).min(0.6);
    let mix = |c: u8| (f64::from(c) + (255.0 - f64::from(c)) * k) as u8;
    RGBColor(mix(base.0), mix(base.1), mix(base.2))
}

/// Draws every plot into `out` (the setting plots of `series`, `quality-vs-bytes` of
/// `cells`); returns the file names written (empty without a font).
///
/// # Errors
/// [`LabError::Plot`] if plotters fails to draw or write a file.
pub fn write_all(
    out: &Path,
    series: &[Series],
    cells: &[CellSummary],
    target: &LabTarget,
) -> Result<Vec<String>, LabError> {
    if !font_ready() {
        tracing::warn!("no TrueType font found (set RUMOR_FONT): plots skipped");
        return Ok(Vec::new());
    }
    let mut groups: BTreeMap<String, Vec<&Series>> = BTreeMap::new();
    for s in series {
        groups.entry(s.cell.group()).or_default().push(s);
    }
    let mut files = Vec::new();
    for (group, runs) in &groups {
        let name = target.metric.as_str();
        for metric in [Metric::Value(name), Metric::Spread(name), Metric::Bytes] {
            let stem = format!("{}-{group}", metric.file());
            let png = format!("{stem}.png");
            let svg = format!("{stem}.svg");
            let title = format!("{} — {group}", metric.file());
            let t = matches!(metric, Metric::Value(_)).then_some(target);
            let png_path = out.join(&png);
            let root = BitMapBackend::new(&png_path, (960, 600)).into_drawing_area();
            draw(&root, &title, metric, runs, t).map_err(|message| LabError::Plot {
                file: png.clone(),
                message,
            })?;
            let svg_path = out.join(&svg);
            let root = SVGBackend::new(&svg_path, (960, 600)).into_drawing_area();
            draw(&root, &title, metric, runs, t).map_err(|message| LabError::Plot {
                file: svg.clone(),
                message,
            })?;
            files.push(png);
            files.push(svg);
        }
    }
    if !cells.is_empty() {
        let title = format!("final {} against bytes sent", target.metric);
        for file in ["quality-vs-bytes.png", "quality-vs-bytes.svg"] {
            let path = out.join(file);
            let drawn = if file.ends_with(".png") {
                let root = BitMapBackend::new(&path, (960, 600)).into_drawing_area();
                draw_quality_vs_bytes(&root, &title, cells, target)
            } else {
                let root = SVGBackend::new(&path, (960, 600)).into_drawing_area();
                draw_quality_vs_bytes(&root, &title, cells, target)
            };
            drawn.map_err(|message| LabError::Plot {
                file: file.into(),
                message,
            })?;
            files.push(file.into());
        }
    }
    Ok(files)
}

const MIB: f64 = 1024.0 * 1024.0;

/// One point per run: its final mean of the target metric (y) against the UDP MiB it sent per
/// peer over the whole run (x, a log axis when the runs that sent anything span more than 10×),
/// coloured by mode. Runs that sent nothing (the centralized baseline) cannot sit on a log axis:
/// they are drawn as horizontal lines at their final value, as is the target.
fn draw_quality_vs_bytes<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    cells: &[CellSummary],
    target: &LabTarget,
) -> Result<(), String> {
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    root.fill(&WHITE).map_err(e)?;
    let sent: Vec<f64> = cells
        .iter()
        .map(|c| c.bytes_sent_per_peer / MIB)
        .filter(|&m| m > 0.0 && m.is_finite())
        .collect();
    let lo = sent.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = sent.iter().copied().fold(0.0, f64::max);
    let values = cells
        .iter()
        .map(|c| c.final_mean)
        .chain([target.value])
        .filter(|v| v.is_finite());
    let (y_lo, y_hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    // Room for the legend beyond the worst value, where the target usually is.
    let span = (y_hi - y_lo).max(0.02);
    let (y, legend) = match target.direction {
        Direction::Higher => (
            (y_lo - 0.35 * span)..(y_hi + 0.05 * span),
            SeriesLabelPosition::LowerRight,
        ),
        Direction::Lower => (
            (y_lo - 0.05 * span)..(y_hi + 0.35 * span),
            SeriesLabelPosition::UpperRight,
        ),
    };
    let y_desc = format!("final mean {}", target.metric);
    let mut chart = ChartBuilder::on(root);
    chart
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    if !sent.is_empty() && hi > 10.0 * lo {
        let x = ((lo / 1.5)..(hi * 1.5)).log_scale();
        let chart = chart.build_cartesian_2d(x, y).map_err(e)?;
        let x_desc = "UDP MiB sent per peer over the run (log scale)";
        let x_span = (lo / 1.5, hi * 1.5);
        points_and_lines(chart, x_span, (x_desc, &y_desc), legend, cells, target)
    } else {
        let x_max = if hi > 0.0 { hi * 1.1 } else { 1.0 };
        let chart = chart.build_cartesian_2d(0.0..x_max, y).map_err(e)?;
        let x_desc = "UDP MiB sent per peer over the run";
        points_and_lines(
            chart,
            (0.0, x_max),
            (x_desc, &y_desc),
            legend,
            cells,
            target,
        )
    }?;
    root.present().map_err(e)?;
    Ok(())
}

/// Draws the mesh (axes described by `desc`), a point per run that sent bytes, a line per run
/// that did not, the target and the legend (at `legend`) on `chart`, whose x axis (linear or
/// log) spans `x_span`.
fn points_and_lines<'a, DB, X>(
    mut chart: ChartContext<'a, DB, Cartesian2d<X, plotters::coord::types::RangedCoordf64>>,
    x_span: (f64, f64),
    (x_desc, y_desc): (&str, &str),
    legend: SeriesLabelPosition,
    cells: &[CellSummary],
    target: &LabTarget,
) -> Result<(), String>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(e)?;
    for mode in [Mode::Gossip, Mode::Sync, Mode::Centralized] {
        let color = mode_color(mode, 0);
        let mine = || cells.iter().filter(move |c| c.mode == mode.as_str());
        let points: Vec<(f64, f64)> = mine()
            .filter(|c| c.bytes_sent_per_peer > 0.0 && c.final_mean.is_finite())
            .map(|c| (c.bytes_sent_per_peer / MIB, c.final_mean))
            .collect();
        if !points.is_empty() {
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 6, color.filled())),
                )
                .map_err(e)?
                .label(mode.as_str())
                .legend(move |(x, y)| Circle::new((x + 10, y), 6, color.filled()));
        }
        let silent: Vec<f64> = mine()
            .filter(|c| c.bytes_sent_per_peer <= 0.0 && c.final_mean.is_finite())
            .map(|c| c.final_mean)
            .collect();
        for (k, v) in silent.into_iter().enumerate() {
            let drawn = chart
                .draw_series(DashedLineSeries::new(
                    [(x_span.0, v), (x_span.1, v)],
                    10,
                    6,
                    color.stroke_width(2),
                ))
                .map_err(e)?;
            if k == 0 {
                drawn
                    .label(format!("{} (sends nothing)", mode.as_str()))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
            }
        }
    }
    // Dashed, so it does not pass for a grid line.
    let target_style = BLACK.mix(0.7).stroke_width(1);
    chart
        .draw_series(DashedLineSeries::new(
            [(x_span.0, target.value), (x_span.1, target.value)],
            4,
            4,
            target_style,
        ))
        .map_err(e)?
        .label(format!("target {}", target.describe()))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], target_style));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(legend)
        .draw()
        .map_err(e)?;
    Ok(())
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    metric: Metric,
    runs: &[&Series],
    target: Option<&LabTarget>,
) -> Result<(), String> {
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    root.fill(&WHITE).map_err(e)?;
    let all: Vec<(f64, f64)> = runs.iter().flat_map(|s| metric.points(s)).collect();
    let x_max = all.iter().map(|p| p.0).fold(1.0, f64::max);
    let mut y_max = all.iter().map(|p| p.1).fold(0.0, f64::max);
    if let Some(t) = target {
        y_max = y_max.max(t.value);
    }
    let y_max = if y_max <= 0.0 { 1.0 } else { y_max * 1.05 };
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max * 1.02, 0.0..y_max)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("wall time since the first peer started (s)")
        .y_desc(metric.label().as_str())
        .draw()
        .map_err(e)?;
    let mut seed_rank: BTreeMap<(String, u64), usize> = BTreeMap::new();
    for s in runs {
        let mode = s.cell.mode.as_str().to_string();
        let next = seed_rank.keys().filter(|(m, _)| *m == mode).count();
        let rank = *seed_rank.entry((mode, s.cell.seed)).or_insert(next);
        let color = mode_color(s.cell.mode, rank);
        let label = format!("{} seed {}", s.cell.mode.as_str(), s.cell.seed);
        chart
            .draw_series(LineSeries::new(metric.points(s), color.stroke_width(2)))
            .map_err(e)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    if let Some(t) = target {
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, t.value), (x_max * 1.02, t.value)],
                BLACK.mix(0.4),
            ))
            .map_err(e)?
            .label(format!("target {}", t.describe()))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::Communication;

    fn cell(mode: &str, mib: f64, final_mean: f64) -> CellSummary {
        CellSummary {
            cell: format!("{mode}-{mib}"),
            mode: mode.into(),
            loss: 0.0,
            slowdown: 1.0,
            non_iid_alpha: 0.0,
            peers: 4,
            seed: 1,
            setting: String::new(),
            runner: "in-process".into(),
            time_to_target_seconds: None,
            time_to_target_all_seconds: None,
            time_to_target_others_seconds: None,
            final_mean,
            final_worst: final_mean,
            final_consensus_distance: 0.0,
            bytes_sent_per_peer: mib * MIB,
            wall_seconds: 1.0,
            peers_drained: 4,
            drain_seconds: None,
            cluster_drain_seconds: None,
            training_seconds: None,
            communication: Communication::default(),
        }
    }

    /// Runs that sent 0.5 to 200 MiB (a log axis) and one that sent nothing (a line) draw
    /// `quality-vs-bytes` in both formats, for a loss target as for an accuracy one.
    #[test]
    fn quality_against_bytes_is_drawn_on_a_log_axis_with_the_silent_run_as_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let cells = [
            cell("gossip", 0.5, 1.9),
            cell("gossip", 3.0, 1.7),
            cell("sync", 200.0, 1.6),
            cell("centralized", 0.0, 1.5),
        ];
        for (metric, direction) in [
            ("val_loss", Direction::Lower),
            ("accuracy", Direction::Higher),
        ] {
            let target = LabTarget {
                metric: metric.into(),
                value: 1.8,
                direction,
            };
            let files = write_all(dir.path(), &[], &cells, &target).unwrap();
            if files.is_empty() {
                eprintln!("NOTE: no TrueType font on this machine; plots were skipped");
                return;
            }
            assert_eq!(files, ["quality-vs-bytes.png", "quality-vs-bytes.svg"]);
            let svg = std::fs::read_to_string(dir.path().join("quality-vs-bytes.svg")).unwrap();
            assert!(
                svg.contains("log scale") && svg.contains(metric),
                "{metric}"
            );
            assert!(svg.contains("centralized (sends nothing)"));
        }
    }
}
