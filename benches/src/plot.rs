//! Plots of a report, as SVG and PNG: the rate (IOPS, frames per second) by path and depth,
//! one panel per disk or far end; the latency CDF of every path, one panel per panel and depth;
//! and host CPU per operation stacked by process. Any report whose rows are [`PlotRow`]s gets
//! them: block and net draw the same charts.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::block::sample::Sample;
use crate::block::{BlockReport, IoPath, Row, Scenario};

/// The font plots are drawn with (Debian: fonts-dejavu-core).
pub const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no font for the plots at {FONT_PATH} (install fonts-dejavu-core)")]
    NoFont(#[source] std::io::Error),
    #[error("{FONT_PATH} is not a font plotters can use")]
    BadFont,
    #[error("drawing {0}: {1}")]
    Draw(PathBuf, String),
}

fn draw_err<E: std::fmt::Debug>(path: &Path) -> impl FnOnce(E) -> Error + '_ {
    move |e| Error::Draw(path.to_path_buf(), format!("{e:?}"))
}

/// Registers the font once per process. plotters keeps fonts for the life of the process, so
/// the bytes are leaked on purpose (one file, once).
fn font() -> Result<(), Error> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    let r = REGISTERED.get_or_init(|| {
        let bytes = std::fs::read(FONT_PATH).map_err(|e| e.to_string())?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| "bad font".to_string())
    });
    match r {
        Ok(()) => Ok(()),
        Err(e) if e == "bad font" => Err(Error::BadFont),
        Err(e) => Err(Error::NoFont(std::io::Error::other(e.clone()))),
    }
}

pub(crate) fn color(path: IoPath) -> RGBColor {
    match path {
        IoPath::Emulated => RGBColor(0xd6, 0x27, 0x28),
        IoPath::Virtio => RGBColor(0x2c, 0xa0, 0x2c),
        IoPath::VirtioQsd => RGBColor(0x98, 0xdf, 0x8a),
        IoPath::Passthrough => RGBColor(0x94, 0x67, 0xbd),
        IoPath::Native => RGBColor(0x1f, 0x77, 0xb4),
        IoPath::Fio => RGBColor(0x7f, 0x7f, 0x7f),
        IoPath::QemuNvme => RGBColor(0xff, 0x98, 0x96),
        IoPath::QemuVirtio => RGBColor(0xff, 0x7f, 0x0e),
    }
}

/// A row as the plots see it: one bar of one series (a path) at one depth in one panel (a
/// disk, a far end), and the run closest to its median.
pub trait PlotRow {
    fn series(&self) -> &'static str;
    fn color(&self) -> RGBColor;
    fn panel(&self) -> String;
    fn depth(&self) -> u16;
    /// The median rate and the top of its range.
    fn rate(&self) -> f64;
    fn rate_max(&self) -> f64;
    fn median_sample(&self) -> Option<&Sample>;
}

/// One scenario's rows and how to label them.
pub struct Figure<'a, R> {
    /// `randread 4096 B`, `tx 64 B`.
    pub title: String,
    /// The rate's unit: `IOPS`, `pps`.
    pub rate: &'static str,
    /// What one operation is: `I/O`, `frame`.
    pub op: &'static str,
    /// The depth's short name on the x axis: `qd`, `depth`.
    pub depth: &'static str,
    pub rows: &'a [R],
}

/// Which charts of a figure to draw, each with its file-name suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chart {
    Rate(&'static str),
    Latency,
    Cpu,
}

impl Chart {
    fn suffix(self) -> &'static str {
        match self {
            Chart::Rate(s) => s,
            Chart::Latency => "latency",
            Chart::Cpu => "cpu",
        }
    }
}

impl PlotRow for Row {
    fn series(&self) -> &'static str {
        self.path.name()
    }
    fn color(&self) -> RGBColor {
        color(self.path)
    }
    fn panel(&self) -> String {
        self.backend.clone()
    }
    fn depth(&self) -> u16 {
        self.queue_depth
    }
    fn rate(&self) -> f64 {
        self.iops
    }
    fn rate_max(&self) -> f64 {
        self.iops_max
    }
    fn median_sample(&self) -> Option<&Sample> {
        Row::median_sample(self)
    }
}

/// Writes `<stem>[-<workload>-<bs>]-iops.{svg,png}` and `...-latency.{svg,png}` for every
/// scenario (the suffix only when there are several); returns the files written.
pub fn write_all(report: &BlockReport, stem: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    for s in &report.scenarios {
        let name = if report.scenarios.len() > 1 {
            format!("{}-{}", s.workload, s.block_size)
        } else {
            String::new()
        };
        out.extend(write_figure(
            &block_figure(s),
            stem,
            &name,
            &[Chart::Rate("iops"), Chart::Latency, Chart::Cpu],
        )?);
    }
    Ok(out)
}

fn block_figure(s: &Scenario) -> Figure<'_, Row> {
    Figure {
        title: format!("{} {} B", s.workload, s.block_size),
        rate: "IOPS",
        op: "I/O",
        depth: "qd",
        rows: &s.rows,
    }
}

/// Writes `<stem>[-<name>]-<chart>.{svg,png}` for each chart; returns the files written.
pub fn write_figure<R: PlotRow>(
    fig: &Figure<R>,
    stem: &Path,
    name: &str,
    charts: &[Chart],
) -> Result<Vec<PathBuf>, Error> {
    font()?;
    let mut out = Vec::new();
    let (w, h) = (900, 500);
    let sep = if name.is_empty() { "" } else { "-" };
    for ext in ["svg", "png"] {
        for &chart in charts {
            let file = with_suffix(stem, &format!("{name}{sep}{}", chart.suffix()), ext);
            if ext == "svg" {
                draw(
                    chart,
                    fig,
                    &SVGBackend::new(&file, (w, h)).into_drawing_area(),
                    &file,
                )?;
            } else {
                let area = BitMapBackend::new(&file, (w, h)).into_drawing_area();
                draw(chart, fig, &area, &file)?;
            }
            out.push(file);
        }
    }
    Ok(out)
}

fn draw<DB: DrawingBackend, R: PlotRow>(
    chart: Chart,
    fig: &Figure<R>,
    area: &DrawingArea<DB, Shift>,
    file: &Path,
) -> Result<(), Error> {
    match chart {
        Chart::Rate(_) => rate_chart(fig, area, file),
        Chart::Latency => cdf_chart(fig, area, file),
        Chart::Cpu => cpu_chart(fig, area, file),
    }
}

fn with_suffix(stem: &Path, what: &str, ext: &str) -> PathBuf {
    let name = stem
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    stem.with_file_name(format!("{name}-{what}.{ext}"))
}

/// The x-axis label of a depth group: group g is centred on x = g.
fn depth_label(name: &str, depths: &[u16], x: f64) -> String {
    let i = x.round();
    match depths.get(i as usize) {
        Some(qd) if (x - i).abs() < 0.01 && i >= 0.0 => format!("{name} {qd}"),
        _ => String::new(),
    }
}

/// One latency CDF: its series name, colour and (quantile, us) points.
type Curve = (&'static str, RGBColor, Vec<(f64, f64)>);

/// The distinct values of `key` over the rows, in first-seen order.
fn distinct<R, T: PartialEq + Clone>(rows: &[R], key: impl Fn(&R) -> T) -> Vec<T> {
    let mut v: Vec<T> = Vec::new();
    for r in rows {
        let k = key(r);
        if !v.contains(&k) {
            v.push(k);
        }
    }
    v
}

fn rate_chart<DB: DrawingBackend, R: PlotRow>(
    fig: &Figure<R>,
    area: &DrawingArea<DB, Shift>,
    file: &Path,
) -> Result<(), Error> {
    area.fill(&WHITE).map_err(draw_err(file))?;
    let disks = distinct(fig.rows, |r| r.panel());
    let panels = area.split_evenly((1, disks.len().max(1)));
    for (disk, panel) in disks.iter().zip(panels.iter()) {
        let rows: Vec<&R> = fig.rows.iter().filter(|r| &r.panel() == disk).collect();
        let depths = distinct(fig.rows, |r| r.depth());
        let paths = distinct(fig.rows, |r| (r.series(), r.color()));
        let max = rows.iter().map(|r| r.rate_max()).fold(1.0, f64::max);
        let groups = depths.len() as f64;
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{} on {}: {}", fig.title, disk, fig.rate),
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5..groups - 0.5, 0.0..max * 1.1)
            .map_err(draw_err(file))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(depths.len())
            .x_label_formatter(&|x| depth_label(fig.depth, &depths, *x))
            .y_label_formatter(&|y| format!("{:.0}k", y / 1000.0))
            .draw()
            .map_err(draw_err(file))?;
        let width = 0.8 / paths.len().max(1) as f64;
        for (pi, &(name, rgb)) in paths.iter().enumerate() {
            let bars = rows.iter().filter(|r| r.series() == name).filter_map(|r| {
                let g = depths.iter().position(|d| *d == r.depth())? as f64;
                let x0 = g - 0.4 + pi as f64 * width;
                Some(Rectangle::new(
                    [(x0, 0.0), (x0 + width * 0.9, r.rate())],
                    rgb.filled(),
                ))
            });
            chart
                .draw_series(bars)
                .map_err(draw_err(file))?
                .label(name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], rgb.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(draw_err(file))?;
    }
    area.present().map_err(draw_err(file))
}

fn cdf_chart<DB: DrawingBackend, R: PlotRow>(
    fig: &Figure<R>,
    area: &DrawingArea<DB, Shift>,
    file: &Path,
) -> Result<(), Error> {
    area.fill(&WHITE).map_err(draw_err(file))?;
    let cells = distinct(fig.rows, |r| (r.panel(), r.depth()));
    let cols = cells.len().clamp(1, 2);
    let rows_n = cells.len().div_ceil(cols).max(1);
    let panels = area.split_evenly((rows_n, cols));
    for ((disk, qd), panel) in cells.iter().zip(panels.iter()) {
        let rows: Vec<&R> = fig
            .rows
            .iter()
            .filter(|r| &r.panel() == disk && r.depth() == *qd)
            .collect();
        // The median run's CDF of each path (the run whose rate is closest to the median).
        let curves: Vec<Curve> = rows
            .iter()
            .filter_map(|r| {
                let s = r.median_sample()?;
                Some((r.series(), r.color(), s.cdf.clone()))
            })
            .collect();
        let lo = curves
            .iter()
            .flat_map(|(_, _, c)| c.iter().map(|p| p.1))
            .filter(|v| *v > 0.0)
            .fold(f64::INFINITY, f64::min);
        let hi = curves
            .iter()
            .flat_map(|(_, _, c)| c.iter().map(|p| p.1))
            .fold(0.0, f64::max);
        let (lo, hi) = if lo.is_finite() && hi > lo {
            (lo * 0.8, hi * 1.2)
        } else {
            (0.01, 1.0)
        };
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{disk} {} {qd}: latency CDF", fig.depth),
                ("sans-serif", 15),
            )
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(45)
            .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)
            .map_err(draw_err(file))?;
        chart
            .configure_mesh()
            .x_desc("us")
            .x_label_formatter(&|x| format!("{x:.1}"))
            .draw()
            .map_err(draw_err(file))?;
        for (name, rgb, cdf) in curves {
            let pts = cdf.iter().filter(|p| p.1 > 0.0).map(|&(q, us)| (us, q));
            chart
                .draw_series(LineSeries::new(pts, rgb.stroke_width(2)))
                .map_err(draw_err(file))?
                .label(name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 15, y)], rgb));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(draw_err(file))?;
    }
    area.present().map_err(draw_err(file))
}

/// One bar: a path (its name and colour) at a depth, and its CPU us per op by process index.
type Stack = (&'static str, RGBColor, u16, Vec<(usize, f64)>);

/// Host CPU per I/O of each path, stacked by process (VMM, backend daemon, QEMU, ...), from the
/// run closest to the median IOPS; one panel per disk, bars grouped by queue depth.
fn cpu_chart<DB: DrawingBackend, R: PlotRow>(
    fig: &Figure<R>,
    area: &DrawingArea<DB, Shift>,
    file: &Path,
) -> Result<(), Error> {
    area.fill(&WHITE).map_err(draw_err(file))?;
    let disks = distinct(fig.rows, |r| r.panel());
    let depths = distinct(fig.rows, |r| r.depth());
    let paths = distinct(fig.rows, |r| r.series());
    let processes = ["vmm", "backend", "qemu", "testpmd", "process"];
    let other = processes.len() - 1;
    let shade = |i: usize| RGBColor(0x30 + 0x30 * i as u8, 0x60 + 0x20 * i as u8, 0xa0);
    let panels = area.split_evenly((1, disks.len().max(1)));
    for (disk, panel) in disks.iter().zip(panels.iter()) {
        // (path, depth) -> us per I/O by process.
        let stacks: Vec<Stack> = fig
            .rows
            .iter()
            .filter(|r| &r.panel() == disk)
            .filter_map(|r| {
                let s = r.median_sample()?;
                let per_io = |cpu: f64| {
                    if s.ops > 0 {
                        cpu * 1e6 / s.ops as f64
                    } else {
                        0.0
                    }
                };
                let parts = if s.cpu_by_process.is_empty() {
                    vec![(other, per_io(s.cpu_s))]
                } else {
                    s.cpu_by_process
                        .iter()
                        .map(|(name, cpu)| {
                            let i = processes.iter().position(|p| p == name).unwrap_or(other);
                            (i, per_io(*cpu))
                        })
                        .collect()
                };
                Some((r.series(), r.color(), r.depth(), parts))
            })
            .collect();
        let max = stacks
            .iter()
            .map(|(_, _, _, p)| p.iter().map(|x| x.1).sum::<f64>())
            .fold(0.1, f64::max);
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{disk}: host CPU us per {}", fig.op),
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5..depths.len() as f64 - 0.5, 0.0..max * 1.1)
            .map_err(draw_err(file))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(depths.len())
            .x_label_formatter(&|x| depth_label(fig.depth, &depths, *x))
            .draw()
            .map_err(draw_err(file))?;
        let width = 0.8 / paths.len().max(1) as f64;
        for (g, pi, parts, rgb) in stacks.iter().filter_map(|(name, rgb, qd, parts)| {
            let g = depths.iter().position(|d| d == qd)? as f64;
            let pi = paths.iter().position(|p| p == name)? as f64;
            Some((g, pi, parts, *rgb))
        }) {
            let x0 = g - 0.4 + pi * width;
            let mut y = 0.0;
            for &(proc_i, v) in parts {
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x0, y), (x0 + width * 0.9, y + v)],
                        shade(proc_i).filled(),
                    )))
                    .map_err(draw_err(file))?;
                y += v;
            }
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, 0.0), (x0 + width * 0.9, y)],
                    rgb.stroke_width(2),
                )))
                .map_err(draw_err(file))?;
        }
        for (i, name) in processes.iter().enumerate() {
            chart
                .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
                .map_err(draw_err(file))?
                .label(*name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], shade(i).filled())
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(draw_err(file))?;
    }
    area.present().map_err(draw_err(file))
}
