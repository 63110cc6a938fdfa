//! The lab's plots (plotters, PNG and SVG): for each setting (loss, straggler, partition, peer
//! count), the target metric (test accuracy, validation loss, ...) against wall time with one
//! line per mode and seed, its spread across peers against time, and UDP bytes sent per peer
//! against time.
//!
//! Text needs a TrueType font: `RUMOR_FONT` if set, else the first of a few common system
//! paths (DejaVu, Liberation). Without one no plot is drawn and the report says so.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::file::LabTarget;
use super::{LabError, Series};
use crate::config::Mode;

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

/// Draws every plot into `out`; returns the file names written (empty without a font).
///
/// # Errors
/// [`LabError::Plot`] if plotters fails to draw or write a file.
pub fn write_all(
    out: &Path,
    series: &[Series],
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
    Ok(files)
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
