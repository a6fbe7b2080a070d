//! The `fer-train` command line: train, resume, eval, bench and the exit codes.

use std::path::Path;
use std::process::{Command, Output};

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
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let args = |run: &Path, budget: &str, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "train",
            "--data",
            &s(&train),
            "--val",
            &s(&val),
            "--run",
            &s(run),
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
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        v.extend(extra.iter().map(|a| a.to_string()));
        v
    };
    let run_cli = |v: Vec<String>| fer_train(&v.iter().map(String::as_str).collect::<Vec<_>>());
    let out = run_cli(args(&run, "3", &["--steps", "4"]));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("thresholds: bright"), "{}", text(&out));
    // Training again into the same folder is refused as bad input.
    let out = run_cli(args(&run, "3", &["--steps", "4"]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let out = fer_train(&[
        "train",
        "--resume",
        "--run",
        &s(&run),
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
    let out = fer_train(&["eval", "--run", &s(&run), "--data", &s(&val)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("images 6  accuracy"), "{}", text(&out));

    let missing = dir.path().join("missing");
    let out = fer_train(&[
        "train",
        "--data",
        &s(&missing),
        "--run",
        &s(&dir.path().join("r2")),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("missing"), "{}", text(&out));
    let out = run_cli(args(&dir.path().join("r3"), "9", &[]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("has 6 labeled images"),
        "{}",
        text(&out)
    );
    if !cfg!(feature = "cuda") {
        let out = run_cli(args(&dir.path().join("r4"), "3", &["--backend", "cuda"]));
        assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    }
    let out = fer_train(&["train", "--algorithm", "mixmatch", "--run", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
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
