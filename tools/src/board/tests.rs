//! Tests of board addresses, ssh command lines and capped command output.

use super::*;

#[test]
fn addresses_parse_and_print_back() {
    let ssh = Board::parse("ssh://pi@board.local:2222/var/lib/fer", &[], "fer-edge").unwrap();
    let Board::Ssh(s) = &ssh else {
        panic!("not ssh")
    };
    assert_eq!(
        (s.user.as_deref(), s.host.as_str(), s.port, s.root.as_str()),
        (Some("pi"), "board.local", Some(2222), "/var/lib/fer")
    );
    assert_eq!(ssh.address(), "ssh://pi@board.local:2222/var/lib/fer");
    let v6 = Board::parse("ssh://[::1]:22/b", &[], "fer-edge").unwrap();
    let Board::Ssh(s) = &v6 else {
        panic!("not ssh")
    };
    assert_eq!(s.remote("/b/x"), "[::1]:/b/x");
    assert_eq!(
        Board::parse("dir:/tmp/b", &[], "fer-edge").unwrap(),
        Board::Dir("/tmp/b".into())
    );
    for bad in [
        "ftp://h/x",
        "ssh://h",
        "ssh://h/",
        "ssh://:22/x",
        "ssh://h:port/x",
        "dir:",
    ] {
        let err = Board::parse(bad, &[], "fer-edge").unwrap_err().to_string();
        assert!(
            err.contains(bad) && err.contains("ssh://user@host"),
            "{bad}: {err}"
        );
    }
    assert!(Board::parse("ssh://h/x", &["-oProxyCommand=x".into()], "fer-edge").is_err());
}

#[test]
fn a_user_name_cannot_inject_an_ssh_option() {
    for bad in [
        "ssh://-oProxyCommand=touch%20pwned@h/r",
        "ssh://-oProxyCommand=x@h/r",
        "ssh://@h/r",
        "ssh://a;b@h/r",
        "ssh://u@-oProxyCommand=x/r",
    ] {
        let err = Board::parse(bad, &[], "fer-edge").unwrap_err().to_string();
        assert!(err.contains(bad), "{bad}: {err}");
    }
    let board = Board::parse("ssh://pi.user_1@h/r", &[], "fer-edge").unwrap();
    let Board::Ssh(s) = board else {
        panic!("not ssh")
    };
    // The destination comes after `--`, so even a name ssh would read as an option is
    // taken as the destination.
    let ssh = s.ssh();
    let args: Vec<_> = ssh
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let dash = args.iter().position(|a| a == "--").unwrap();
    assert_eq!(args[dash + 1], "pi.user_1@h", "{args:?}");
    let sftp = s.sftp_batch();
    let args: Vec<_> = sftp
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(args[args.len() - 2..], ["--", "pi.user_1@h"], "{args:?}");
}

#[test]
fn ssh_options_cannot_turn_off_host_key_checks() {
    for weak in [
        "StrictHostKeyChecking=no",
        "stricthostkeychecking=accept-new",
        "StrictHostKeyChecking no",
        "KnownHostsCommand=/bin/echo",
        "VerifyHostKeyDNS=yes",
    ] {
        let err = Board::parse("ssh://h/x", &[weak.into()], "fer-edge")
            .unwrap_err()
            .to_string();
        assert!(err.contains("known_hosts"), "{weak}: {err}");
    }
    let opts = vec![
        "StrictHostKeyChecking=yes".into(),
        "ConnectTimeout=5".into(),
    ];
    let Board::Ssh(s) = Board::parse("ssh://h/x", &opts, "fer-edge").unwrap() else {
        panic!("not ssh")
    };
    // ssh keeps the first value of an option: the strict one comes before the user's.
    for cmd in [s.ssh(), s.scp(), s.sftp_batch()] {
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let first = args.iter().position(|a| a == "-o").unwrap();
        assert_eq!(args[first + 1], "StrictHostKeyChecking=yes", "{args:?}");
    }
}

#[test]
fn a_board_that_floods_stdout_cannot_exhaust_the_workstation() {
    let mut flood = Command::new("sh");
    flood.arg("-c").arg("yes fer");
    let err = run(flood).unwrap_err().to_string();
    assert!(err.contains("too much output"), "{err}");
    let mut noisy = Command::new("sh");
    noisy
        .arg("-c")
        .arg("head -c 1000000 /dev/zero >&2; echo done");
    assert_eq!(run(noisy).unwrap(), "done\n");
}

#[test]
fn shell_quoting_survives_hostile_names() {
    assert_eq!(shell_quote("/var/lib/fer"), "/var/lib/fer");
    assert_eq!(shell_quote("a b"), "'a b'");
    assert_eq!(shell_quote("it's; rm -rf /"), r"'it'\''s; rm -rf /'");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("printf %s {}", shell_quote("it's $HOME; `x`")))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "it's $HOME; `x`");
}
