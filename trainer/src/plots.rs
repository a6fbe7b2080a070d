//! PNG plots of a run, drawn from its `metrics.jsonl` at the end of training:
//!
//! * `accuracy.png`: validation accuracy of the student (blue) and teacher (red) over steps;
//! * `thresholds.png`: every class's threshold over steps (one colour per class);
//! * `pseudo_rate.png`: per class, the fraction of unlabeled samples predicted as that class
//!   which became pseudo-labels, per window of steps;
//! * `pseudo_precision.png`: per class, the share of those pseudo-labels that match the hidden
//!   label (where the unlabeled pool has one), per window of steps;
//! * `confusion.png`: the teacher's last confusion matrix (row-normalised; darker = more).
//!
//! Text needs a TrueType font: the first of `$FER_PLOT_FONT` and the usual DejaVu/Liberation
//! paths that exists is used. Without one the plots are drawn without text (axes, lines and
//! colours only, the colours as listed here and in `plots.txt` written beside them).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
pub use plotters::style::RGBColor;

use crate::error::{Error, Result};
use crate::train::metrics::{EvalMetrics, StepMetrics, read_metrics};

const FONT_CANDIDATES: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
];

/// Registers a system font for plot text once; `false` when none is available.
fn font_available() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        let mut candidates: Vec<PathBuf> = std::env::var_os("FER_PLOT_FONT")
            .map(PathBuf::from)
            .into_iter()
            .collect();
        candidates.extend(FONT_CANDIDATES.iter().map(PathBuf::from));
        for path in candidates {
            if let Ok(bytes) = std::fs::read(&path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// The `k`-th colour of the plots' palette (cycles after ten).
pub fn class_colour(k: usize) -> RGBColor {
    const COLOURS: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    COLOURS[k % COLOURS.len()]
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Plot {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// One line series.
#[derive(Debug, Clone)]
pub struct Series {
    /// Its legend entry.
    pub label: String,
    /// Its colour ([`class_colour`]).
    pub colour: RGBColor,
    /// `(x, y)` points in order.
    pub points: Vec<(f64, f64)>,
}

/// Title and axes of a chart.
#[derive(Debug, Clone, Copy)]
pub struct Chart<'a> {
    /// Drawn above the chart.
    pub title: &'a str,
    /// The x axis.
    pub x_label: &'a str,
    /// The y axis.
    pub y_label: &'a str,
    /// The top of the y axis (the bottom is 0).
    pub y_max: f64,
}

/// The legend box of the series labelled so far.
fn draw_legend<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>,
    path: &Path,
) -> Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| plot_err(path, e))
}

pub(crate) fn line_chart(path: &Path, title: &str, y_label: &str, series: &[Series]) -> Result<()> {
    let chart = Chart {
        title,
        x_label: "step",
        y_label,
        y_max: 1.0,
    };
    lines(path, &chart, series)
}

/// A line chart as a 900x560 PNG at `path`; the x axis runs from 0 to the largest x.
pub fn lines(path: &Path, spec: &Chart<'_>, series: &[Series]) -> Result<()> {
    let (title, x_label, y_label) = (spec.title, spec.x_label, spec.y_label);
    let text = font_available();
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let mut builder = ChartBuilder::on(&root);
    builder.margin(15);
    if text {
        builder
            .caption(title, ("sans-serif", 22))
            .x_label_area_size(40)
            .y_label_area_size(55);
    }
    let mut chart = builder
        .build_cartesian_2d(0.0..x_max, 0.0..spec.y_max.max(f64::MIN_POSITIVE))
        .map_err(|e| plot_err(path, e))?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc(x_label).y_desc(y_label);
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| plot_err(path, e))?;
    for s in series {
        let colour = s.colour;
        let drawn = chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(|e| plot_err(path, e))?;
        if text {
            drawn.label(s.label.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(3))
            });
        }
    }
    if text && !series.is_empty() {
        draw_legend(&mut chart, path)?;
    }
    root.present().map_err(|e| plot_err(path, e))
}

/// Grouped bars as a 900x560 PNG at `path`: one group per category, one bar per series in it
/// (`Series::points` holds `(category index, value)`).
pub fn bars(path: &Path, spec: &Chart<'_>, categories: &[String], series: &[Series]) -> Result<()> {
    let text = font_available();
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let n = categories.len().max(1);
    let mut builder = ChartBuilder::on(&root);
    builder.margin(15);
    if text {
        builder
            .caption(spec.title, ("sans-serif", 22))
            .x_label_area_size(40)
            .y_label_area_size(55);
    }
    let mut chart = builder
        .build_cartesian_2d(0.0..n as f64, 0.0..spec.y_max.max(f64::MIN_POSITIVE))
        .map_err(|e| plot_err(path, e))?;
    let mut mesh = chart.configure_mesh();
    let name = |x: &f64| {
        let k = x.floor() as usize;
        if (x - x.floor() - 0.5).abs() < 1e-6 && k < categories.len() {
            categories[k].clone()
        } else {
            String::new()
        }
    };
    if text {
        mesh.disable_x_mesh()
            .x_desc(spec.x_label)
            .y_desc(spec.y_label)
            .x_labels(2 * n + 1)
            .x_label_formatter(&name);
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| plot_err(path, e))?;
    let width = 0.8 / series.len().max(1) as f64;
    for (j, s) in series.iter().enumerate() {
        let colour = s.colour;
        let drawn = chart
            .draw_series(s.points.iter().map(|&(k, v)| {
                let x0 = k + 0.1 + j as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, v)], colour.filled())
            }))
            .map_err(|e| plot_err(path, e))?;
        if text {
            drawn.label(s.label.clone()).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 14, y + 5)], colour.filled())
            });
        }
    }
    if text && !series.is_empty() {
        draw_legend(&mut chart, path)?;
    }
    root.present().map_err(|e| plot_err(path, e))
}

fn confusion_chart(path: &Path, classes: &[String], confusion: &[Vec<u64>]) -> Result<()> {
    let text = font_available();
    let c = classes.len();
    let root = BitMapBackend::new(path, (640, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(15);
    if text {
        builder
            .caption(
                "confusion (rows: true, columns: predicted)",
                ("sans-serif", 20),
            )
            .x_label_area_size(70)
            .y_label_area_size(80);
    }
    let mut chart = builder
        .build_cartesian_2d((0..c).into_segmented(), (0..c).into_segmented())
        .map_err(|e| plot_err(path, e))?;
    let mut mesh = chart.configure_mesh();
    mesh.disable_mesh();
    // Labels sit at the centre of each cell; row `t` is drawn from the top.
    let name_at = |k: &SegmentValue<usize>, flip: bool| match k {
        SegmentValue::CenterOf(k) if *k < c => classes[if flip { c - 1 - *k } else { *k }].clone(),
        _ => String::new(),
    };
    let fmt_x = |k: &SegmentValue<usize>| name_at(k, false);
    let fmt_y = |k: &SegmentValue<usize>| name_at(k, true);
    if text {
        mesh.x_labels(c + 1)
            .y_labels(c + 1)
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&fmt_y);
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| plot_err(path, e))?;
    let cells = (0..c)
        .flat_map(|t| (0..c).map(move |p| (t, p)))
        .map(|(t, p)| {
            let total: u64 = confusion[t].iter().sum();
            let v = if total > 0 {
                confusion[t][p] as f64 / total as f64
            } else {
                0.0
            };
            let shade = (255.0 * (1.0 - v)) as u8;
            Rectangle::new(
                [
                    (SegmentValue::Exact(p), SegmentValue::Exact(c - 1 - t)),
                    (SegmentValue::Exact(p + 1), SegmentValue::Exact(c - t)),
                ],
                RGBColor(shade, shade, 255).filled(),
            )
        });
    chart.draw_series(cells).map_err(|e| plot_err(path, e))?;
    root.present().map_err(|e| plot_err(path, e))
}

/// Draws the plots of the run in `run_dir` from its `metrics.jsonl`; returns the PNG paths.
pub fn plot_run(run_dir: &Path, classes: &[String]) -> Result<Vec<PathBuf>> {
    let (steps, evals) = read_metrics(&run_dir.join("metrics.jsonl"))?;
    let mut written = Vec::new();
    if !evals.is_empty() {
        let path = run_dir.join("accuracy.png");
        let point = |e: &EvalMetrics, teacher: bool| {
            let r = if teacher { &e.teacher } else { &e.student };
            (e.step as f64, r.accuracy)
        };
        line_chart(
            &path,
            "validation accuracy",
            "accuracy",
            &[
                Series {
                    label: "student".into(),
                    colour: RGBColor(31, 119, 180),
                    points: evals.iter().map(|e| point(e, false)).collect(),
                },
                Series {
                    label: "teacher (EMA)".into(),
                    colour: RGBColor(214, 39, 40),
                    points: evals.iter().map(|e| point(e, true)).collect(),
                },
            ],
        )?;
        written.push(path);
        let last = evals.last().expect("not empty");
        let path = run_dir.join("confusion.png");
        confusion_chart(&path, classes, &last.teacher.confusion)?;
        written.push(path);
    }
    if !steps.is_empty() {
        let every = (steps.len() / 400).max(1);
        let path = run_dir.join("thresholds.png");
        let series: Vec<Series> = classes
            .iter()
            .enumerate()
            .map(|(k, name)| Series {
                label: name.clone(),
                colour: class_colour(k),
                points: steps
                    .iter()
                    .step_by(every)
                    .filter_map(|s| {
                        s.thresholds
                            .get(k)
                            .map(|t| ((s.step + 1) as f64, *t as f64))
                    })
                    .collect(),
            })
            .collect();
        line_chart(&path, "per-class thresholds", "threshold", &series)?;
        written.push(path);
        // Per-class acceptance rate and precision over windows of ~20 points.
        let window = (steps.len() / 20).max(1);
        let windowed = |num: fn(&StepMetrics) -> &Vec<u32>, den: fn(&StepMetrics) -> &Vec<u32>| {
            classes
                .iter()
                .enumerate()
                .map(|(k, name)| Series {
                    label: name.clone(),
                    colour: class_colour(k),
                    points: steps
                        .chunks(window)
                        .filter_map(|chunk| {
                            let sum = |f: fn(&StepMetrics) -> &Vec<u32>| -> u32 {
                                chunk
                                    .iter()
                                    .map(|s| f(s).get(k).copied().unwrap_or(0))
                                    .sum()
                            };
                            let (n, d) = (sum(num), sum(den));
                            let end = chunk.last().expect("chunks are not empty").step + 1;
                            (d > 0).then(|| (end as f64, n as f64 / d as f64))
                        })
                        .collect(),
                })
                .collect::<Vec<_>>()
        };
        let path = run_dir.join("pseudo_rate.png");
        let series = windowed(|s| &s.accepted_per_class, |s| &s.top_per_class);
        line_chart(
            &path,
            "pseudo-label rate per class",
            "accepted fraction",
            &series,
        )?;
        written.push(path);
        let series = windowed(|s| &s.correct_per_class, |s| &s.known_per_class);
        if series.iter().any(|s| !s.points.is_empty()) {
            let path = run_dir.join("pseudo_precision.png");
            line_chart(
                &path,
                "pseudo-label precision per class (hidden labels)",
                "precision",
                &series,
            )?;
            written.push(path);
        }
    }
    let legend: String = std::iter::once(
        "accuracy.png: student blue, teacher red. thresholds.png, pseudo_rate.png, \
         pseudo_precision.png: one colour per class.\n"
            .to_string(),
    )
    .chain(classes.iter().enumerate().map(|(k, name)| {
        let RGBColor(r, g, b) = class_colour(k);
        format!("{name}: #{r:02x}{g:02x}{b:02x}\n")
    }))
    .chain(std::iter::once(
        "confusion.png: rows are true classes top to bottom, columns predicted left to right, \
         in the order above; darker blue = larger share of the row.\n"
            .to_string(),
    ))
    .collect();
    let legend_path = run_dir.join("plots.txt");
    std::fs::write(&legend_path, legend).map_err(|e| Error::io("writing", &legend_path, e))?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::EvalReport;
    use crate::train::metrics::MetricsLine;

    #[test]
    fn plots_are_drawn_from_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let classes = vec!["a".to_string(), "b".to_string()];
        let mut lines = String::new();
        for step in 0..30u64 {
            let m = StepMetrics {
                step,
                lr: 1e-3,
                loss: 1.0 / (step + 1) as f64,
                thresholds: vec![0.5 + step as f32 / 100.0, 0.5],
                top_per_class: vec![3, 1],
                accepted_per_class: vec![2, 0],
                known_per_class: vec![2, 0],
                correct_per_class: vec![1, 0],
                ..StepMetrics::default()
            };
            lines.push_str(&serde_json::to_string(&MetricsLine::Step(m)).unwrap());
            lines.push('\n');
        }
        let report = EvalReport::from_predictions(&classes, &[0, 1, 1], &[0, 1, 0]);
        let eval = EvalMetrics {
            step: 30,
            student: report.clone(),
            teacher: report,
            thresholds: vec![0.7, 0.5],
        };
        lines.push_str(&serde_json::to_string(&MetricsLine::Eval(eval)).unwrap());
        lines.push('\n');
        std::fs::write(dir.path().join("metrics.jsonl"), lines).unwrap();
        let (steps, evals) = read_metrics(&dir.path().join("metrics.jsonl")).unwrap();
        assert_eq!((steps.len(), evals.len()), (30, 1));
        let written = plot_run(dir.path(), &classes).unwrap();
        assert_eq!(written.len(), 5);
        for png in written {
            let img = image::open(&png).unwrap();
            assert!(img.width() > 500, "{}", png.display());
        }
        let legend = std::fs::read_to_string(dir.path().join("plots.txt")).unwrap();
        assert!(legend.contains("a: #1f77b4"), "{legend}");
    }
}
