//! Side-by-side results of finished runs (`fer-train compare`): one row per run folder, read
//! from its `config.json` and `summary.json`, as a Markdown table, JSON and a plot of every
//! run's validation accuracy (the deployed EMA teacher) over steps.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::LabelBudget;
use crate::error::{Error, Result, read_json};
use crate::plots::{self, Series};
use crate::train::{TrainConfig, TrainSummary};

/// One finished run, as the comparison table shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RunRow {
    /// The run folder's name.
    pub name: String,
    /// `supervised`, `fixed`, `dta` or `dta-snl`.
    pub algorithm: String,
    /// The label budget as given (`100/class`, `10%`, `all`).
    pub budget: String,
    /// Backbone and input (`resnet w16 48x48x1`).
    pub model: String,
    /// Local attention enhancement on.
    pub lae: bool,
    /// Random region dropout on.
    pub rrd: bool,
    /// Labeled images used.
    pub labeled: usize,
    /// Unlabeled images available.
    pub unlabeled: usize,
    /// Steps trained.
    pub steps: u64,
    /// Validation images.
    pub val_images: usize,
    /// Validation accuracy of the teacher (the deployed model).
    pub accuracy: f64,
    /// Validation macro-F1 of the teacher.
    pub macro_f1: f64,
    /// Validation accuracy of the student.
    pub student_accuracy: f64,
    /// Training wall time in seconds (all calls, when resumed: the last call only).
    pub seconds: f64,
    /// Images through the student per second.
    pub images_per_second: f64,
    /// The compute backend.
    pub backend: String,
}

/// A run's name in tables and legends: its folder name.
fn run_name(dir: &Path) -> String {
    dir.file_name()
        .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into())
}

fn budget_text(budget: &LabelBudget) -> String {
    match budget {
        LabelBudget::All => "all".into(),
        LabelBudget::PerClass(n) => format!("{n}/class"),
        LabelBudget::Fraction(f) => format!("{}%", f * 100.0),
    }
}

/// Reads one finished run folder.
pub fn read_run(dir: &Path) -> Result<RunRow> {
    let summary_path = dir.join("summary.json");
    if !summary_path.is_file() {
        return Err(Error::checkpoint(
            dir,
            "has no summary.json: the run is not finished (continue it with `fer-train train \
             --resume --run DIR`)",
        ));
    }
    let config: TrainConfig = read_json(&dir.join("config.json"))?;
    let summary: TrainSummary = read_json(&summary_path)?;
    let teacher = summary.teacher.as_ref().ok_or_else(|| {
        Error::checkpoint(
            dir,
            "was trained without validation data (--val), so there is nothing to compare",
        )
    })?;
    let m = &config.model;
    Ok(RunRow {
        name: run_name(dir),
        algorithm: config.algorithm.algorithm.name().into(),
        budget: budget_text(&config.data.budget),
        model: format!(
            "{} w{} {}x{}x{}",
            m.backbone, m.width, m.input_height, m.input_width, m.input_channels
        ),
        lae: m.lae,
        rrd: m.rrd,
        labeled: summary.labeled,
        unlabeled: summary.unlabeled,
        steps: summary.steps,
        val_images: teacher.count,
        accuracy: teacher.accuracy,
        macro_f1: teacher.macro_f1,
        student_accuracy: summary.student.as_ref().map_or(f64::NAN, |s| s.accuracy),
        seconds: summary.seconds,
        images_per_second: summary.images_per_second,
        backend: config.backend.name().into(),
    })
}

fn yes_no(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// The rows as a Markdown table.
pub fn markdown(rows: &[RunRow]) -> String {
    let mut out = String::from(
        "| run | algorithm | labels | labeled / unlabeled | LAE | RRD | steps | val acc (teacher) \
         | macro-F1 | student acc | time | img/s |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} / {} | {} | {} | {} | {:.2}% | {:.4} | {:.2}% | {:.0} s | {:.0} |",
            r.name,
            r.algorithm,
            r.budget,
            r.labeled,
            r.unlabeled,
            yes_no(r.lae),
            yes_no(r.rrd),
            r.steps,
            100.0 * r.accuracy,
            r.macro_f1,
            100.0 * r.student_accuracy,
            r.seconds,
            r.images_per_second
        );
    }
    out
}

/// Draws every run's teacher validation accuracy over steps into one PNG.
pub fn plot_accuracy(runs: &[PathBuf], path: &Path) -> Result<()> {
    let mut series = Vec::new();
    for (k, dir) in runs.iter().enumerate() {
        let (_, evals) = crate::train::metrics::read_metrics(&dir.join("metrics.jsonl"))?;
        series.push(Series {
            label: run_name(dir),
            colour: plots::class_colour(k),
            points: evals
                .iter()
                .map(|e| (e.step as f64, e.teacher.accuracy))
                .collect(),
        });
    }
    plots::line_chart(
        path,
        "validation accuracy of the teacher",
        "accuracy",
        &series,
    )
}

/// Reads `runs`, writes `compare.md`, `compare.json` and `compare_accuracy.png` into `out`
/// and returns the rows.
pub fn compare(runs: &[PathBuf], out: &Path) -> Result<Vec<RunRow>> {
    let rows = runs
        .iter()
        .map(|dir| read_run(dir))
        .collect::<Result<Vec<_>>>()?;
    std::fs::create_dir_all(out).map_err(|e| Error::io("creating", out, e))?;
    let md = out.join("compare.md");
    std::fs::write(&md, markdown(&rows)).map_err(|e| Error::io("writing", &md, e))?;
    crate::error::write_json(&out.join("compare.json"), &rows)?;
    plot_accuracy(runs, &out.join("compare_accuracy.png"))?;
    Ok(rows)
}
