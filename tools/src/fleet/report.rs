//! `fer fleet report`: a static page a person opens to decide when to retrain.
//!
//! It reads what `fer fleet collect` wrote (`FIELD/<board>/records.jsonl`, and
//! `FIELD/service-state.json` when the service runs) and writes `OUT/index.html` with PNG
//! plots beside it:
//! * `records_per_day.png`: logged faces per day, per board and all together;
//! * `logged_by_model.png`: logged (low-confidence) faces per hour, one line per model;
//! * `class_mix.png`: the share of each top class among each board's logged faces (drift);
//! * `waiting.png`: field-log bytes waiting on each board at the service's last cycle (how
//!   full the board's quota is getting);
//!
//! and a table per board: records, first and last record, last successful collect, failures
//! in a row, models seen. The page checks that every plot loaded and says so in
//! `data-images` on `<body>` (the headless-browser test reads it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use trainer::plots::{self, Chart, Series};

use super::service::{BoardState, state_path};
use crate::collect::RECORDS_FILE;
use crate::error::{Error, Result};

/// The fields of a `records.jsonl` line the report uses.
#[derive(Debug, Clone, Deserialize)]
struct Line {
    timestamp_ms: u64,
    model_sha256: String,
    top_class: usize,
}

/// What the report found for one board.
#[derive(Debug, Clone, Default)]
pub struct BoardSummary {
    /// The board's folder name (its inventory name).
    pub name: String,
    /// Timestamps of its records, sorted.
    times: Vec<u64>,
    /// Records per model (short sha).
    models: BTreeMap<String, Vec<u64>>,
    /// Records per top class.
    classes: BTreeMap<usize, u64>,
    /// The service's state for it, if the service ran.
    state: Option<BoardState>,
}

impl BoardSummary {
    /// Records collected from it.
    pub fn records(&self) -> usize {
        self.times.len()
    }
}

const DAY_MS: u64 = 86_400_000;
const HOUR_MS: u64 = 3_600_000;

fn read_board(dir: &Path, name: &str) -> Result<BoardSummary> {
    let path = dir.join(RECORDS_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io("reading", &path, e))?;
    let mut board = BoardSummary {
        name: name.to_string(),
        ..BoardSummary::default()
    };
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let record: Line = serde_json::from_str(line).map_err(|e| {
            Error::file(
                &path,
                format!("line {}: not a collected record: {e}", i + 1),
            )
        })?;
        board.times.push(record.timestamp_ms);
        let model = record.model_sha256.chars().take(12).collect();
        board
            .models
            .entry(model)
            .or_default()
            .push(record.timestamp_ms);
        *board.classes.entry(record.top_class).or_default() += 1;
    }
    board.times.sort_unstable();
    Ok(board)
}

/// Reads every board folder under `field` (those holding a `records.jsonl`), by name.
pub fn read_field(field: &Path) -> Result<Vec<BoardSummary>> {
    let entries = std::fs::read_dir(field).map_err(|e| Error::io("reading", field, e))?;
    let mut boards = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("reading", field, e))?;
        let dir = entry.path();
        if dir.join(RECORDS_FILE).is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            boards.push(read_board(&dir, &name)?);
        }
    }
    if boards.is_empty() {
        return Err(Error::file(
            field,
            "holds no board folder with a records.jsonl: run `fer fleet collect --into` it first",
        ));
    }
    boards.sort_by(|a, b| a.name.cmp(&b.name));
    if let Ok(bytes) = std::fs::read(state_path(field)) {
        let states: Vec<BoardState> = serde_json::from_slice(&bytes)
            .map_err(|e| Error::file(state_path(field), format!("not a service state: {e}")))?;
        for board in &mut boards {
            board.state = states.iter().find(|s| s.name == board.name).cloned();
        }
    }
    Ok(boards)
}

/// Counts of `times` in buckets of `bucket_ms` from `origin`, as `(bucket, count)` points.
fn histogram(times: &[u64], origin: u64, bucket_ms: u64, buckets: usize) -> Vec<(f64, f64)> {
    let mut counts = vec![0u64; buckets];
    for &t in times {
        let k = (t.saturating_sub(origin) / bucket_ms) as usize;
        if let Some(c) = counts.get_mut(k) {
            *c += 1;
        }
    }
    counts
        .iter()
        .enumerate()
        .map(|(k, &c)| (k as f64, c as f64))
        .collect()
}

fn when(ms: u64) -> String {
    crate::collect::rfc3339(ms)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Writes the page and its plots into `out`; returns the page's path.
pub fn write(field: &Path, out: &Path, class_names: &[String]) -> Result<PathBuf> {
    let boards = read_field(field)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io("creating", out, e))?;
    let all: Vec<u64> = {
        let mut all: Vec<u64> = boards.iter().flat_map(|b| b.times.clone()).collect();
        all.sort_unstable();
        all
    };
    let origin = all.first().copied().unwrap_or(0);
    let last = all.last().copied().unwrap_or(0);
    let days = ((last - origin) / DAY_MS + 1) as usize;
    let hours = ((last - origin) / HOUR_MS + 1) as usize;
    let plot = |e: trainer::Error| Error::invalid("fleet report plot", e.to_string());

    let mut per_day: Vec<Series> = boards
        .iter()
        .enumerate()
        .map(|(k, b)| Series {
            label: b.name.clone(),
            colour: plots::class_colour(k),
            points: histogram(&b.times, origin, DAY_MS, days),
        })
        .collect();
    per_day.push(Series {
        label: "all boards".into(),
        colour: plots::RGBColor(0, 0, 0),
        points: histogram(&all, origin, DAY_MS, days),
    });
    let y_max = |series: &[Series]| {
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(1.0f64, f64::max)
            * 1.1
    };
    let day_chart = Chart {
        title: "logged faces per day",
        x_label: &format!("days since {}", &when(origin)[..10]),
        y_label: "records",
        y_max: y_max(&per_day),
    };
    plots::lines(&out.join("records_per_day.png"), &day_chart, &per_day).map_err(plot)?;

    let mut models: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for b in &boards {
        for (model, times) in &b.models {
            models.entry(model).or_default().extend(times);
        }
    }
    let by_model: Vec<Series> = models
        .iter()
        .enumerate()
        .map(|(k, (model, times))| Series {
            label: format!("model {model}"),
            colour: plots::class_colour(k),
            points: histogram(times, origin, HOUR_MS, hours),
        })
        .collect();
    let model_chart = Chart {
        title: "low-confidence faces logged per hour, by model",
        x_label: &format!("hours since {}", when(origin)),
        y_label: "records",
        y_max: y_max(&by_model),
    };
    plots::lines(&out.join("logged_by_model.png"), &model_chart, &by_model).map_err(plot)?;

    let classes = boards
        .iter()
        .flat_map(|b| b.classes.keys().copied())
        .max()
        .map_or(0, |k| k + 1);
    let names: Vec<String> = (0..classes)
        .map(|k| {
            class_names
                .get(k)
                .cloned()
                .unwrap_or_else(|| format!("class {k}"))
        })
        .collect();
    let mix: Vec<Series> = boards
        .iter()
        .enumerate()
        .map(|(k, b)| Series {
            label: b.name.clone(),
            colour: plots::class_colour(k),
            points: (0..classes)
                .map(|c| {
                    let n = b.classes.get(&c).copied().unwrap_or(0);
                    (c as f64, n as f64 / b.records().max(1) as f64)
                })
                .collect(),
        })
        .collect();
    let mix_chart = Chart {
        title: "top class of the logged faces (share per board)",
        x_label: "class",
        y_label: "share",
        y_max: 1.0,
    };
    plots::bars(&out.join("class_mix.png"), &mix_chart, &names, &mix).map_err(plot)?;

    let waiting: Vec<Series> = vec![Series {
        label: "MiB waiting".into(),
        colour: plots::class_colour(0),
        points: boards
            .iter()
            .enumerate()
            .map(|(k, b)| {
                let bytes = b.state.as_ref().map_or(0, |s| s.waiting_bytes);
                (k as f64, bytes as f64 / f64::from(1u32 << 20))
            })
            .collect(),
    }];
    let board_names: Vec<String> = boards.iter().map(|b| b.name.clone()).collect();
    let waiting_chart = Chart {
        title: "field-log data waiting on each board (service's last cycle)",
        x_label: "board",
        y_label: "MiB",
        y_max: y_max(&waiting).max(1.0),
    };
    plots::bars(
        &out.join("waiting.png"),
        &waiting_chart,
        &board_names,
        &waiting,
    )
    .map_err(plot)?;

    let page = out.join("index.html");
    let html = page_html(&boards, origin, last);
    std::fs::write(&page, html).map_err(|e| Error::io("writing", &page, e))?;
    Ok(page)
}

fn page_html(boards: &[BoardSummary], origin: u64, last: u64) -> String {
    let mut rows = String::new();
    for b in boards {
        let state = b.state.as_ref();
        let cell = |v: Option<String>| escape(&v.unwrap_or_else(|| "-".into()));
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&b.name),
            b.records(),
            cell(b.times.first().map(|&t| when(t))),
            cell(b.times.last().map(|&t| when(t))),
            cell(state.and_then(|s| s.last_success_ms).map(when)),
            cell(state.map(|s| match &s.last_problem {
                Some(p) => format!("{} ({p})", s.failures),
                None => s.failures.to_string(),
            })),
            escape(&b.models.keys().cloned().collect::<Vec<_>>().join(", ")),
        ));
    }
    let images = [
        ("records_per_day.png", "Logged faces per day"),
        (
            "logged_by_model.png",
            "Low-confidence faces per hour, by model",
        ),
        ("class_mix.png", "Class mix of the logged faces"),
        ("waiting.png", "Data waiting on each board"),
    ];
    let figures: String = images
        .iter()
        .map(|(file, caption)| {
            format!("<figure><img src=\"{file}\" alt=\"{caption}\"><figcaption>{caption}</figcaption></figure>\n")
        })
        .collect();
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>FER fleet report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
td, th {{ border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; }}
img {{ max-width: 900px; width: 100%; border: 1px solid #ddd; }}
</style>
</head>
<body data-images="loading">
<h1>FER fleet report</h1>
<p>{count} boards, records from {from} to {to}. Generated by <code>fer fleet report</code>.</p>
<table>
<tr><th>board</th><th>records</th><th>first record</th><th>last record</th><th>last collect</th><th>failures in a row</th><th>models</th></tr>
{rows}</table>
{figures}<script>
// Tells a reader (and the headless-browser test) whether every plot loaded.
window.addEventListener("load", function () {{
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) {{ return !(i.complete && i.naturalWidth > 0); }});
  document.body.dataset.images = broken.length === 0 ? "ok" : "broken: " + broken.map(function (i) {{ return i.getAttribute("src"); }}).join(" ");
}});
</script>
</body>
</html>
"#,
        count = boards.len(),
        from = when(origin),
        to = when(last),
    )
}
