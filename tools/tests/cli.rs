//! The `fer` binary: help, configs, datasets and exit codes as a user meets them.

use std::path::Path;
use std::process::{Command, Output};

use firmware_config::exit_code::{self, Program};

fn fer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fer"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn help_lists_every_command_and_the_exit_codes() {
    let out = fer(&["--help"]);
    assert!(out.status.success());
    let text = stdout(&out);
    for command in [
        "keygen", "config", "bundle", "flash", "rollback", "status", "collect", "dataset", "loop",
        "demo",
    ] {
        assert!(
            text.contains(command),
            "{command} missing from --help:\n{text}"
        );
    }
    assert!(
        text.contains(&exit_code::help(Program::Fer)),
        "the exit-code table is missing from --help:\n{text}"
    );
    let flash = stdout(&fer(&["flash", "--help"]));
    assert!(
        flash.contains("ssh://") && flash.contains("--ssh-option"),
        "{flash}"
    );
}

#[test]
fn config_template_encodes_decodes_and_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let toml_path = tmp.path().join("board.toml");
    let template = fer(&["config", "template"]);
    assert!(template.status.success());
    std::fs::write(&toml_path, template.stdout).unwrap();
    let bin = tmp.path().join("board.bin");
    assert!(
        fer(&["config", "encode", s(&toml_path), s(&bin)])
            .status
            .success()
    );
    assert!(std::fs::read(&bin).unwrap().starts_with(b"FERC"));
    let decoded = fer(&["config", "decode", s(&bin)]);
    assert!(decoded.status.success());
    assert_eq!(
        stdout(&decoded),
        std::fs::read_to_string(&toml_path).unwrap()
    );
    let check = fer(&["config", "check", s(&bin)]);
    assert!(stdout(&check).contains("valid"), "{}", stderr(&check));

    std::fs::write(&toml_path, "[detector]\nscore_threshold = 1.5\n").unwrap();
    let out = fer(&["config", "encode", s(&toml_path), s(&bin)]);
    assert_eq!(out.status.code(), Some(exit_code::BAD_INPUT.into()));
    let err = stderr(&out);
    assert!(
        err.contains("board.toml") && err.contains("detector.score_threshold"),
        "{err}"
    );

    let out = fer(&["config", "decode", s(&toml_path)]);
    let err = stderr(&out);
    assert!(err.contains("board.toml") && err.contains("magic"), "{err}");
}

#[test]
fn dataset_split_stats_and_bad_addresses() {
    let tmp = tempfile::tempdir().unwrap();
    let labeled = tmp.path().join("labeled");
    for class in ["happy", "sad"] {
        std::fs::create_dir_all(labeled.join(class)).unwrap();
        for i in 0..20u8 {
            image::GrayImage::from_pixel(4, 4, image::Luma([i]))
                .save(labeled.join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
    let stats = stdout(&fer(&["dataset", "stats", s(&labeled)]));
    assert!(
        stats.contains("40 image(s)") && stats.contains("happy") && stats.contains("50.0%"),
        "{stats}"
    );
    let split_dir = tmp.path().join("split");
    let out = fer(&[
        "dataset",
        "split",
        "--from",
        s(&labeled),
        "--into",
        s(&split_dir),
        "--val",
        "0.25",
    ]);
    assert!(stdout(&out).contains("train /"), "{}", stderr(&out));
    let train = stdout(&fer(&["dataset", "stats", s(&split_dir.join("train"))]));
    let val = stdout(&fer(&["dataset", "stats", s(&split_dir.join("val"))]));
    assert!(
        train.contains("happy") && val.contains("sad"),
        "{train}\n{val}"
    );

    let out = fer(&["status", "--board", "ftp://somewhere/x"]);
    assert_eq!(out.status.code(), Some(exit_code::USAGE.into()));
    assert!(stderr(&out).contains("ssh://user@host"), "{}", stderr(&out));
    let out = fer(&[
        "status",
        "--board",
        &format!("dir:{}", tmp.path().display()),
    ]);
    assert_eq!(out.status.code(), Some(exit_code::BUNDLE_REFUSED.into()));
    assert!(stderr(&out).contains("trusted.pub"), "{}", stderr(&out));
}
