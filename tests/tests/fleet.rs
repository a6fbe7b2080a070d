//! `fer fleet` over a real sshd on 127.0.0.1: boards that answer, one that is down, tags, the
//! per-board table and the exit code that says a board failed.

use std::path::Path;

use edge::bundle::BoardRoot;
use firmware_config::exit_code;
use tests::{Sshd, fer};

fn s(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

#[test]
fn a_board_that_is_down_fails_alone_and_sets_the_exit_code() {
    let Some(sshd) = Sshd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("fleet.key");
    let public = tools::keys::generate(&key, false).unwrap().public_key;
    let agent = tests::program("fer-edge");
    let options: Vec<String> = sshd
        .fer_options()
        .into_iter()
        .map(|o| format!("{o:?}"))
        .collect();
    let mut text = format!(
        "[defaults]\nssh_options = [{}, \"ConnectTimeout=5\"]\nagent = {:?}\n",
        options.join(", "),
        s(&agent)
    );
    for i in 0..3 {
        let root = tmp.path().join(format!("board-{i}"));
        BoardRoot::init(&root, &public).unwrap();
        text.push_str(&format!(
            "\n[[board]]\nname = \"cam-{i}\"\naddress = {:?}\ntags = [\"up\"]\n",
            sshd.address(&root)
        ));
    }
    // Nothing listens on port 1: connection refused.
    text.push_str("\n[[board]]\nname = \"cam-down\"\naddress = \"ssh://127.0.0.1:1/srv/fer\"\ntags = [\"down\"]\n");
    let fleet = tmp.path().join("fleet.toml");
    std::fs::write(&fleet, text).unwrap();

    let out = fer(&["fleet", "check", "--fleet", s(&fleet), "--jobs", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(exit_code::FLEET_PARTIAL.into()),
        "{stdout}\n{stderr}"
    );
    let rows: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{stdout}");
    for (i, row) in rows[..3].iter().enumerate() {
        assert!(row.starts_with(&format!("cam-{i} ")), "{stdout}");
        assert!(row.contains(" ok ") && row.contains("fer-edge"), "{stdout}");
    }
    assert!(
        rows[3].starts_with("cam-down")
            && rows[3].contains("FAILED")
            && rows[3].contains("refused"),
        "{stdout}"
    );
    assert!(stderr.contains("1 of 4 boards failed"), "{stderr}");

    let out = fer(&["fleet", "status", "--fleet", s(&fleet), "--tag", "up"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().count(),
        4,
        "a header and the three boards: {stdout}"
    );

    let out = fer(&["fleet", "status", "--fleet", s(&fleet), "--tag", "upp"]);
    assert_eq!(out.status.code(), Some(exit_code::USAGE.into()));
    assert!(String::from_utf8_lossy(&out.stderr).contains("upp"));
}
