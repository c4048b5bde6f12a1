//! Drawing figures (panels of curves and a legend strip) as PNG and SVG with plotters.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::numbers::{tick_formatter, Smoothing};
use super::{ImageFormat, Run, Series};

/// Tableau 10: distinguishable, colour-blind friendlier than pure RGB.
const PALETTE: &[(u8, u8, u8)] = &[
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// Series longer than this are drawn without point markers (markers would turn into a smear).
const MAX_MARKED_POINTS: usize = 40;

static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// One figure: a grid of panels (one per metric) and a legend strip shared by all panels.
pub(super) struct Figure<'a> {
    title: Option<String>,
    panels: Vec<Panel<'a>>,
    legend: Vec<LegendEntry<'a>>,
    smoothing: Smoothing,
    /// The x axis's name: "step" for training runs, "round" for TrackRec's.
    x_desc: &'static str,
}

pub(super) struct Panel<'a> {
    pub(super) metric: &'a str,
    pub(super) curves: Vec<Curve<'a>>,
}

pub(super) struct Curve<'a> {
    pub(super) color: RGBColor,
    pub(super) raw: &'a [(f64, f64)],
    pub(super) smoothed: Option<Series>,
    /// (x, low, high): an interval drawn as a vertical whisker at x (a bootstrap CI).
    pub(super) whiskers: &'a [(f64, f64, f64)],
    /// A reference level (a baseline), drawn dashed and without markers.
    pub(super) dashed: bool,
}

pub(super) struct LegendEntry<'a> {
    pub(super) name: &'a str,
    pub(super) color: RGBColor,
    pub(super) has_data: bool,
    pub(super) dashed: bool,
}

/// The i-th colour of the palette (runs keep their colour across figures).
pub(super) fn color(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

impl<'a> Figure<'a> {
    pub(super) fn new(
        runs: &'a [Run],
        metrics: &'a [String],
        smoothing: Smoothing,
        title: Option<String>,
    ) -> Figure<'a> {
        let panels: Vec<Panel<'a>> = metrics
            .iter()
            .map(|m| Panel {
                metric: m,
                curves: runs
                    .iter()
                    .enumerate()
                    .filter_map(|(i, r)| {
                        let raw = r.series.get(m).filter(|p| !p.is_empty())?;
                        // None where no window spans two points: a faint copy under the
                        // same line would only blur it.
                        let smoothed = Some(smoothing.apply(raw)).filter(|s| s != raw);
                        Some(Curve {
                            color: color(i),
                            raw,
                            smoothed,
                            whiskers: &[],
                            dashed: false,
                        })
                    })
                    .collect(),
            })
            .collect();
        let legend = runs
            .iter()
            .enumerate()
            .map(|(i, r)| LegendEntry {
                name: &r.name,
                color: color(i),
                has_data: metrics
                    .iter()
                    .any(|m| r.series.get(m).is_some_and(|p| !p.is_empty())),
                dashed: false,
            })
            .collect();
        Figure {
            title,
            panels,
            legend,
            smoothing,
            x_desc: "step",
        }
    }

    /// A figure of ready-made panels (no smoothing), with its own x axis name.
    pub(super) fn from_panels(
        title: Option<String>,
        x_desc: &'static str,
        panels: Vec<Panel<'a>>,
        legend: Vec<LegendEntry<'a>>,
    ) -> Figure<'a> {
        Figure {
            title,
            panels,
            legend,
            smoothing: Smoothing::Off,
            x_desc,
        }
    }

    fn columns(&self) -> usize {
        match self.panels.len() {
            0 | 1 => 1,
            2..=4 => 2,
            _ => 3,
        }
    }

    fn legend_width(&self) -> u32 {
        let longest = self
            .legend
            .iter()
            .map(|e| legend_label(e).chars().count())
            .max()
            .unwrap_or(0);
        (longest as u32 * 9 + 60).clamp(140, 460)
    }

    /// Pixel size: one big panel for a single metric, 560x360 panels for a grid.
    fn size(&self) -> (u32, u32) {
        let legend = self.legend_width();
        if self.panels.len() <= 1 {
            return (900 + legend, 600);
        }
        let cols = self.columns() as u32;
        let rows = self.panels.len().div_ceil(self.columns()) as u32;
        (cols * 560 + legend, rows * 360 + 50)
    }
}

/// Legend names longer than this are shortened in the middle.
const MAX_LEGEND_CHARS: usize = 44;

fn legend_label(e: &LegendEntry) -> String {
    let name = shorten_middle(e.name, MAX_LEGEND_CHARS);
    if e.has_data {
        name
    } else {
        format!("{name} (no data)")
    }
}

/// Long names would push the plot off the figure. Keep both ends: runs of one experiment share a
/// prefix (the recipe name) and differ at the end (`… (long-s24-grpo-mb4)`), so cutting the end
/// made them indistinguishable.
pub(super) fn shorten_middle(name: &str, max: usize) -> String {
    let chars: Vec<char> = name.chars().collect();
    if chars.len() <= max {
        return name.to_string();
    }
    let head = (max - 1) / 2;
    let tail = max - 1 - head;
    let mut out: String = chars[..head].iter().collect();
    out.push('…');
    out.extend(&chars[chars.len() - tail..]);
    out
}

/// Register the embedded font under "sans-serif" once; plotters' ab_glyph text needs it.
pub(super) fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, DEJAVU_SANS).is_ok()
    });
    if !ok {
        bail!(
            "the embedded font assets/fonts/DejaVuSans.ttf could not be parsed (a build problem, \
             not your input)"
        );
    }
    Ok(())
}

/// Draw `figure` once per requested format at `stem.<ext>`.
pub(super) fn write_figure(
    stem: &Path,
    format: ImageFormat,
    figure: &Figure,
) -> Result<Vec<PathBuf>> {
    let size = figure.size();
    let mut written = Vec::new();
    for ext in format.extensions() {
        let path = stem.with_extension(ext);
        let what = || format!("drawing {}", path.display());
        match *ext {
            "png" => {
                let root = BitMapBackend::new(&path, size).into_drawing_area();
                draw_figure(&root, figure).with_context(what)?;
                root.present()
                    .map_err(|e| anyhow!("{e}"))
                    .with_context(what)?;
            }
            _ => {
                let root = SVGBackend::new(&path, size).into_drawing_area();
                draw_figure(&root, figure).with_context(what)?;
                root.present()
                    .map_err(|e| anyhow!("{e}"))
                    .with_context(what)?;
            }
        }
        written.push(path);
    }
    Ok(written)
}

/// plotters' errors are generic over the backend; flatten them into anyhow.
fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("plotting failed: {e}")
}

fn draw_figure<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, fig: &Figure) -> Result<()> {
    root.fill(&WHITE).map_err(plot_err)?;
    let (width, _) = root.dim_in_pixel();
    let (plots, legend) = root.split_horizontally(width.saturating_sub(fig.legend_width()));
    let plots = match &fig.title {
        Some(title) => {
            let title = match fig.smoothing.describe() {
                None => title.clone(),
                Some(how) => format!("{title} ({how})"),
            };
            plots.titled(&title, ("sans-serif", 26)).map_err(plot_err)?
        }
        None => plots,
    };
    let cols = fig.columns();
    let rows = fig.panels.len().div_ceil(cols).max(1);
    let cells = plots.split_evenly((rows, cols));
    let single = fig.panels.len() == 1;
    for (panel, area) in fig.panels.iter().zip(&cells) {
        let caption = match (single, fig.smoothing.describe()) {
            (true, Some(how)) => format!("{} ({how})", panel.metric),
            _ => panel.metric.to_string(),
        };
        draw_panel(area, panel, &caption, single, fig.x_desc)?;
    }
    draw_legend(&legend, fig)
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    caption: &str,
    big: bool,
    x_desc: &str,
) -> Result<()> {
    let (caption_px, label_px, desc_px) = if big { (24, 15, 17) } else { (20, 13, 15) };
    let labels = if big { 10 } else { 6 };
    let all = panel.curves.iter().flat_map(|c| {
        let ends = c
            .whiskers
            .iter()
            .flat_map(|&(x, lo, hi)| [(x, lo), (x, hi)]);
        c.raw.iter().copied().chain(ends)
    });
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in all {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x0 == x1 {
        (x0, x1) = (x0 - 1.0, x1 + 1.0);
    }
    // Whiskers at the first and last x would be cut in half by the frame.
    if panel.curves.iter().any(|c| !c.whiskers.is_empty()) {
        let pad = 0.04 * (x1 - x0);
        (x0, x1) = (x0 - pad, x1 + pad);
    }
    // 5 % headroom so extreme points are not drawn on the frame; flat curves get a visible band.
    // A flat series at 0 (no reward yet) gets a unit band, not a ±1e-10 one whose tick labels
    // read as noise.
    let pad = if y1 > y0 {
        0.05 * (y1 - y0)
    } else if y0 == 0.0 {
        1.0
    } else {
        0.1 * y0.abs()
    };
    let (y0, y1) = (y0 - pad, y1 + pad);

    // Steps are integers: on short runs ask for no more x labels than there are steps, so ticks
    // never fall at fractional steps (1.5, 2.5).
    let integer_x = panel
        .curves
        .iter()
        .all(|c| c.raw.iter().all(|&(x, _)| x == x.trunc()));
    let x_labels = if integer_x {
        labels.min((x1 - x0).round() as usize + 1).max(2)
    } else {
        labels
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", caption_px))
        .margin(12)
        .x_label_area_size(if big { 50 } else { 40 })
        .y_label_area_size(if big { 80 } else { 72 })
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(panel.metric)
        .x_label_formatter(&tick_formatter(x0, x1, x_labels))
        .y_label_formatter(&tick_formatter(y0, y1, labels))
        .x_labels(x_labels)
        .y_labels(labels)
        .label_style(("sans-serif", label_px))
        .axis_desc_style(("sans-serif", desc_px))
        .light_line_style(RGBColor(240, 240, 240))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(plot_err)?;

    for curve in &panel.curves {
        let width = if big { 2 } else { 1 };
        if curve.dashed {
            let style = curve.color.stroke_width(width);
            chart
                .draw_series(DashedLineSeries::new(
                    curve.raw.iter().copied(),
                    8,
                    6,
                    style,
                ))
                .map_err(plot_err)?;
            continue;
        }
        // Whiskers first, so the line and its markers stay on top. Caps span 3 % of the x range.
        let cap = 0.015 * (x1 - x0);
        for &(x, lo, hi) in curve.whiskers {
            let style = curve.color.mix(0.7).stroke_width(width);
            for path in [
                vec![(x, lo), (x, hi)],
                vec![(x - cap, lo), (x + cap, lo)],
                vec![(x - cap, hi), (x + cap, hi)],
            ] {
                chart
                    .draw_series(std::iter::once(PathElement::new(path, style)))
                    .map_err(plot_err)?;
            }
        }
        match &curve.smoothed {
            Some(smoothed) => {
                // The raw curve stays visible underneath, faint, so smoothing hides no spike.
                let faint = curve.color.mix(0.25).stroke_width(1);
                chart
                    .draw_series(LineSeries::new(curve.raw.iter().copied(), faint))
                    .map_err(plot_err)?;
                let solid = curve.color.stroke_width(width + 1);
                chart
                    .draw_series(LineSeries::new(smoothed.iter().copied(), solid))
                    .map_err(plot_err)?;
            }
            None => {
                let solid = curve.color.stroke_width(width + 1);
                chart
                    .draw_series(LineSeries::new(curve.raw.iter().copied(), solid))
                    .map_err(plot_err)?;
            }
        }
        // Sparse series (evals every N steps, short runs) read better with their points marked;
        // a single point would otherwise be invisible.
        if curve.raw.len() <= MAX_MARKED_POINTS {
            let marker = curve.color.filled();
            chart
                .draw_series(curve.raw.iter().map(|&p| Circle::new(p, 3, marker)))
                .map_err(plot_err)?;
        }
    }
    Ok(())
}

fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, fig: &Figure) -> Result<()> {
    let top = if fig.title.is_some() { 70 } else { 50 };
    let header = ("sans-serif", 17).into_font().color(&BLACK);
    area.draw(&Text::new("runs", (12, top - 28), header))
        .map_err(plot_err)?;
    for (i, entry) in fig.legend.iter().enumerate() {
        let y = top + 26 * i as i32;
        let text_color = if entry.has_data {
            BLACK
        } else {
            RGBColor(150, 150, 150)
        };
        let style = ("sans-serif", 15)
            .into_font()
            .color(&text_color)
            .pos(Pos::new(HPos::Left, VPos::Center));
        let segments = if entry.dashed {
            vec![(12, 20), (26, 34), (40, 42)]
        } else {
            vec![(12, 42)]
        };
        for (a, b) in segments {
            area.draw(&PathElement::new(
                vec![(a, y), (b, y)],
                entry.color.stroke_width(3),
            ))
            .map_err(plot_err)?;
        }
        area.draw(&Text::new(legend_label(entry), (50, y), style))
            .map_err(plot_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::shorten_middle;

    #[test]
    fn long_names_keep_both_ends() {
        assert_eq!(shorten_middle("short", 10), "short");
        let a = shorten_middle("countdown-grpo (runs/long-s24-grpo-mb4-imentor)", 24);
        let b = shorten_middle("countdown-grpo (runs/long-s24-grpo-mb4)", 24);
        assert_eq!(a.chars().count(), 24);
        assert!(
            a.ends_with("mb4-imentor)") && b.ends_with("grpo-mb4)"),
            "{a} / {b}"
        );
        assert_ne!(a, b);
    }
}
