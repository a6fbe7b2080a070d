//! The `fer-train` command line: train, resume, eval, bench and the exit codes.

use std::path::Path;
use std::process::{Command, Output};

use firmware_config::exit_code::{self, Program};

fn fer_train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fer-train"))
        .args(args)
        .output()
        .expect("fer-train runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Two classes of 16x16 images: dark or bright.
fn write_folder(root: &Path, per_class: usize) {
    for (name, level) in [("dark", 40u8), ("bright", 200u8)] {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let img = image::GrayImage::from_fn(16, 16, |x, y| {
                image::Luma([level.wrapping_add(((x * 3 + y * 5 + i as u32) % 20) as u8)])
            });
            img.save(dir.join(format!("{i}.png"))).unwrap();
        }
    }
}

/// `fer-train train` of a tiny network on `write_folder` data, `budget` labels per class.
fn train_tiny(train: &Path, val: &Path, run: &Path, budget: &str, extra: &[&str]) -> Output {
    let (train, val, run) = (path_str(train), path_str(val), path_str(run));
    let mut args = vec![
        "train",
        "--data",
        train,
        "--val",
        val,
        "--run",
        run,
        "--width",
        "4",
        "--blocks",
        "1,1",
        "--input-size",
        "16",
        "--batch",
        "4",
        "--labels-per-class",
        budget,
        "--quiet",
    ];
    args.extend_from_slice(extra);
    fer_train(&args)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

#[test]
fn help_lists_the_exit_code_table() {
    let out = fer_train(&["--help"]);
    assert!(out.status.success(), "{}", text(&out));
    let help = text(&out);
    assert!(
        help.contains(&exit_code::help(Program::Train)),
        "the exit-code table is missing from --help:\n{help}"
    );
}

#[test]
fn train_resume_eval_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (train, val, run) = (
        dir.path().join("train"),
        dir.path().join("val"),
        dir.path().join("run"),
    );
    write_folder(&train, 6);
    write_folder(&val, 3);
    let out = train_tiny(&train, &val, &run, "3", &["--steps", "4"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("thresholds: bright"), "{}", text(&out));
    // Training again into the same folder is refused as bad input.
    let out = train_tiny(&train, &val, &run, "3", &["--steps", "4"]);
    assert_eq!(
        out.status.code(),
        Some(exit_code::BAD_INPUT.into()),
        "{}",
        text(&out)
    );
    let out = fer_train(&[
        "train",
        "--resume",
        "--run",
        path_str(&run),
        "--steps",
        "6",
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("trained 6 steps (2 this run)"),
        "{}",
        text(&out)
    );
    let out = fer_train(&["eval", "--run", path_str(&run), "--data", path_str(&val)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("images 6  accuracy"), "{}", text(&out));

    let missing = dir.path().join("missing");
    let out = fer_train(&[
        "train",
        "--data",
        path_str(&missing),
        "--run",
        path_str(&dir.path().join("r2")),
    ]);
    assert_eq!(
        out.status.code(),
        Some(exit_code::BAD_INPUT.into()),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("missing"), "{}", text(&out));
    let out = train_tiny(&train, &val, &dir.path().join("r3"), "9", &[]);
    assert_eq!(
        out.status.code(),
        Some(exit_code::BAD_INPUT.into()),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("has 6 labeled images"),
        "{}",
        text(&out)
    );
    if !cfg!(feature = "cuda") {
        let out = train_tiny(
            &train,
            &val,
            &dir.path().join("r4"),
            "3",
            &["--backend", "cuda"],
        );
        assert_eq!(
            out.status.code(),
            Some(exit_code::BACKEND_UNAVAILABLE.into()),
            "{}",
            text(&out)
        );
    }
    let out = fer_train(&["train", "--algorithm", "mixmatch", "--run", "x"]);
    assert_eq!(
        out.status.code(),
        Some(exit_code::USAGE.into()),
        "{}",
        text(&out)
    );
}

#[test]
fn bench_reports_both_backbones_and_the_reference() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/torch_reference.py");
    let out = fer_train(&[
        "bench",
        "--input-size",
        "16",
        "--batch",
        "4",
        "--iters",
        "1",
        "--torch-script",
        script.to_str().unwrap(),
    ]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("resnet burn-flex") && all.contains("mobile burn-flex"),
        "{all}"
    );
    assert!(all.contains("img/s"), "{all}");
    // Either measured or skipped with a reason, never silently absent.
    assert_eq!(all.matches("pytorch").count(), 2, "{all}");
}

#[test]
fn compare_tables_finished_runs_and_refuses_unfinished_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_folder(&d.join("train"), 6);
    write_folder(&d.join("val"), 3);
    for (name, flags) in [
        ("ours", vec![]),
        ("baseline", vec!["--algorithm", "supervised", "--no-lae"]),
    ] {
        let mut extra = vec!["--steps", "3"];
        extra.extend(flags);
        let out = train_tiny(&d.join("train"), &d.join("val"), &d.join(name), "3", &extra);
        assert!(out.status.success(), "{}", text(&out));
    }
    let out_dir = d.join("cmp");
    let out = fer_train(&[
        "compare",
        path_str(&d.join("ours")),
        path_str(&d.join("baseline")),
        "--out",
        path_str(&out_dir),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains("| ours | dta-snl | 3/class | 6 / 6 | on | on | 3 |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| baseline | supervised | 3/class | 6 / 0 | off | on | 3 |"),
        "{stdout}"
    );
    let rows: Vec<trainer::compare::RunRow> =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("compare.json")).unwrap())
            .unwrap();
    for (row, name) in rows.iter().zip(["ours", "baseline"]) {
        let summary: trainer::train::TrainSummary = serde_json::from_str(
            &std::fs::read_to_string(d.join(name).join("summary.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(row.accuracy, summary.teacher.unwrap().accuracy);
        assert_eq!(row.val_images, 6);
    }
    let png = image::open(out_dir.join("compare_accuracy.png")).unwrap();
    assert_eq!((png.width(), png.height()), (900, 560));

    std::fs::create_dir_all(d.join("unfinished")).unwrap();
    let out = fer_train(&["compare", path_str(&d.join("unfinished"))]);
    assert_eq!(
        out.status.code(),
        Some(exit_code::BAD_INPUT.into()),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("not finished"), "{}", text(&out));
}
