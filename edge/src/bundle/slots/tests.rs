//! Tests of the board's slots: activation, rollback, downgrades, rotation, fallback, space.

use super::*;
use crate::bundle::fixtures::{key, make_bundle, make_versioned, message, passes, public};
use crate::bundle::format::{sign_dir, write_rotation};
use ed25519_dalek::SigningKey;

fn board(tmp: &Path, signer: &SigningKey) -> BoardRoot {
    BoardRoot::init(&tmp.join("board"), &public(signer)).unwrap()
}

#[test]
fn a_board_without_room_for_the_bundle_refuses_it_before_copying() {
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small");
    fs::create_dir(&small).unwrap();
    // A file system smaller than the activation margin: root can mount one, others skip.
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&small)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: mounting a 4 MiB tmpfs needs root");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(small.clone());
    let signer = key(1);
    let board = BoardRoot::init(&small.join("board"), &public(&signer)).unwrap();
    let bundle = make_bundle(&tmp.path().join("b1"), &signer, "run-1");
    let err = message(board.activate(&bundle.dir, passes).unwrap_err());
    assert!(err.contains("free on the board"), "{err}");
    assert_eq!(board.active_slot().unwrap(), None);
    assert!(!small.join("board/slots").join(INCOMING).exists());
}

#[test]
fn a_new_slot_that_keeps_failing_falls_back_to_the_previous_one_by_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let signer = key(1);
    let board = board(tmp.path(), &signer);
    let good = make_bundle(&tmp.path().join("good"), &signer, "good");
    let crashy = make_bundle(&tmp.path().join("crashy"), &signer, "crashy");
    board.activate(&good.dir, passes).unwrap();
    board.mark_healthy().unwrap();
    board.activate(&crashy.dir, passes).unwrap();
    assert_eq!(board.trial().unwrap(), Some(("b".into(), 0)));
    // Passes its self-test, then crashes at run time: three starts without a healthy run.
    let id = |b: &VerifiedBundle| Ok(b.id.clone());
    for start in 1..=MAX_TRIAL_STARTS {
        let (running, _) = board.start(id).unwrap();
        assert_eq!(running.id, crashy.id, "start {start}");
    }
    let (running, _) = board.start(id).unwrap();
    assert_eq!(running.id, good.id);
    let status = board.status().unwrap();
    assert_eq!(status.active.as_deref(), Some("a"));
    let fallback = status.fallback.unwrap();
    assert_eq!(
        (fallback.from_slot.as_str(), fallback.to_slot.as_str()),
        ("b", "a")
    );
    assert!(
        fallback.reason.contains("started 3 times"),
        "{}",
        fallback.reason
    );
    assert_eq!(status.trial, None);
    // The previous slot is not on trial: it keeps starting.
    for _ in 0..5 {
        assert_eq!(board.start(id).unwrap().0.id, good.id);
    }
}

#[test]
fn an_active_slot_that_no_longer_verifies_starts_the_other_one() {
    let tmp = tempfile::tempdir().unwrap();
    let signer = key(1);
    let board = board(tmp.path(), &signer);
    let first = make_bundle(&tmp.path().join("b1"), &signer, "run-1");
    let second = make_bundle(&tmp.path().join("b2"), &signer, "run-2");
    board.activate(&first.dir, passes).unwrap();
    board.activate(&second.dir, passes).unwrap();
    board.mark_healthy().unwrap();
    // Storage damage in the active slot.
    fs::write(board.slot_dir("b").join("model.onnx"), b"bit rot").unwrap();
    let (running, _) = board.start(|b| Ok(b.id.clone())).unwrap();
    assert_eq!(running.id, first.id);
    let fallback = board.fallback().unwrap().unwrap();
    assert!(
        fallback.reason.contains("model.onnx"),
        "{}",
        fallback.reason
    );
    // A model that does not load counts the same: both slots bad is the active's error.
    fs::write(board.slot_dir("b").join("model.onnx"), b"bit rot").unwrap();
    let err = board
        .start(|_| Err::<(), _>(Error::invalid("model", "does not load")))
        .unwrap_err();
    assert!(err.to_string().contains("does not load"), "{err}");
}

#[test]
fn an_older_signed_bundle_cannot_be_activated_again() {
    let tmp = tempfile::tempdir().unwrap();
    let signer = key(1);
    let board = board(tmp.path(), &signer);
    let flawed = make_versioned(&tmp.path().join("v5"), &signer, "flawed", 5);
    let fixed = make_versioned(&tmp.path().join("v7"), &signer, "fixed", 7);
    let between = make_versioned(&tmp.path().join("v6"), &signer, "between", 6);
    board.activate(&flawed.dir, passes).unwrap();
    board.activate(&fixed.dir, passes).unwrap();
    assert_eq!(board.status().unwrap().newest_version, 7);
    for old in [&flawed, &between] {
        let err = message(board.activate(&old.dir, passes).unwrap_err());
        assert!(err.contains("older than version 7"), "{err}");
        assert_eq!(board.open_active().unwrap().id, fixed.id);
    }
    // The explicit way back is to the kept slot, and it does not lower the bar.
    let back = board.rollback(passes).unwrap();
    assert_eq!(back.bundle_id, flawed.id);
    assert_eq!(board.newest_version().unwrap(), 7);
    let err = message(board.activate(&between.dir, passes).unwrap_err());
    assert!(err.contains("older than version 7"), "{err}");
    // The same version again is a re-flash, not a downgrade.
    let again = make_versioned(&tmp.path().join("v7b"), &signer, "fixed-again", 7);
    board.activate(&again.dir, passes).unwrap();
}

#[test]
fn a_new_signing_key_is_trusted_only_through_a_statement_by_the_trusted_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (old, new, stranger) = (key(1), key(2), key(3));
    let board = board(tmp.path(), &old);
    board
        .activate(&make_bundle(&tmp.path().join("b0"), &old, "r0").dir, passes)
        .unwrap();
    let rotating = |name: &str, statement_by: &SigningKey| {
        let dir = tmp.path().join(name);
        make_versioned(&dir, &new, name, 2);
        write_rotation(&dir, statement_by, &public(&new)).unwrap();
        sign_dir(&dir, &new, 2).unwrap()
    };
    let unsigned = make_versioned(&tmp.path().join("plain"), &new, "plain", 2);
    let err = message(board.activate(&unsigned.dir, passes).unwrap_err());
    assert!(err.contains("rotate"), "{err}");
    let forged = rotating("forged", &stranger);
    let err = message(board.activate(&forged.dir, passes).unwrap_err());
    assert!(err.contains("rotation.sig"), "{err}");
    assert_eq!(board.trusted_key().unwrap(), public(&old));

    let rotation = rotating("rotation", &old);
    board.activate(&rotation.dir, passes).unwrap();
    assert_eq!(board.trusted_key().unwrap(), public(&new));
    assert_eq!(board.open_active().unwrap().id, rotation.id);
    // The old key is revoked: its bundles, and its own rotations, are refused now.
    let by_old = make_versioned(&tmp.path().join("by-old"), &old, "by-old", 3);
    assert!(board.activate(&by_old.dir, passes).is_err());
    let dir = tmp.path().join("old-rotates");
    make_versioned(&dir, &stranger, "old-rotates", 3);
    write_rotation(&dir, &old, &public(&stranger)).unwrap();
    sign_dir(&dir, &stranger, 3).unwrap();
    assert!(board.activate(&dir, passes).is_err());
    let by_new = make_versioned(&tmp.path().join("by-new"), &new, "by-new", 3);
    board.activate(&by_new.dir, passes).unwrap();
}

#[test]
fn activation_switches_slots_and_keeps_the_previous_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let signer = key(1);
    let board = board(tmp.path(), &signer);
    let first = make_bundle(&tmp.path().join("b1"), &signer, "run-1");
    let second = make_bundle(&tmp.path().join("b2"), &signer, "run-2");

    let done = board.activate(&first.dir, passes).unwrap();
    assert_eq!(
        (done.slot.as_str(), done.previous_slot.as_deref()),
        ("a", None)
    );
    assert_eq!(board.open_active().unwrap().id, first.id);
    // A staged folder outside ROOT/staging belongs to the caller and stays.
    assert!(first.dir.is_dir());

    let done = board.activate(&second.dir, passes).unwrap();
    assert_eq!(
        (done.slot.as_str(), done.previous_slot.as_deref()),
        ("b", Some("a"))
    );
    assert_eq!(done.previous_bundle_id.as_deref(), Some(first.id.as_str()));
    assert_eq!(board.open_active().unwrap().id, second.id);

    let back = board.rollback(passes).unwrap();
    assert_eq!(
        (back.slot.as_str(), back.bundle_id.as_str()),
        ("a", first.id.as_str())
    );
    assert_eq!(
        board.open_active().unwrap().manifest.training_run_id,
        "run-1"
    );
    let status = board.status().unwrap();
    assert_eq!(status.active.as_deref(), Some("a"));
    assert!(status.slots.iter().all(|s| s.problem.is_none()));
}

#[test]
fn a_failing_bundle_leaves_the_board_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let (signer, attacker) = (key(1), key(2));
    let board = board(tmp.path(), &signer);
    let first = make_bundle(&tmp.path().join("b1"), &signer, "run-1");
    let second = make_bundle(&tmp.path().join("b2"), &signer, "run-2");
    board.activate(&first.dir, passes).unwrap();
    board.activate(&second.dir, passes).unwrap();
    let before = board.status().unwrap();

    let broken = make_bundle(&tmp.path().join("b3"), &signer, "run-3");
    let err = message(
        board
            .activate(&broken.dir, |_| Err("output differs by 0.4".into()))
            .unwrap_err(),
    );
    assert!(
        err.contains("self-test failed") && err.contains("0.4"),
        "{err}"
    );
    assert_eq!(board.status().unwrap(), before);

    let mut model = fs::read(broken.model_path()).unwrap();
    model[0] ^= 0x80;
    fs::write(broken.model_path(), model).unwrap();
    let err = message(board.activate(&broken.dir, passes).unwrap_err());
    assert!(
        err.contains("model.onnx") && err.contains("tampered"),
        "{err}"
    );
    assert_eq!(board.status().unwrap(), before);

    let foreign = make_bundle(&tmp.path().join("b4"), &attacker, "run-4");
    let err = message(board.activate(&foreign.dir, passes).unwrap_err());
    assert!(err.contains("signed by key"), "{err}");
    assert_eq!(board.status().unwrap(), before);
    assert!(!board.path().join("slots").join(INCOMING).exists());
    assert_eq!(board.open_active().unwrap().id, second.id);
}

#[test]
fn staged_uploads_are_removed_and_rollback_needs_a_previous_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let signer = key(1);
    let board = board(tmp.path(), &signer);
    let staged = board.staging_dir().join("upload-1");
    make_bundle(&staged, &signer, "run-1");
    board.activate(&staged, passes).unwrap();
    assert!(!staged.exists());
    let err = message(board.rollback(passes).unwrap_err());
    assert!(err.contains("no previous bundle"), "{err}");

    let err = message(BoardRoot::init(board.path(), &public(&key(3))).unwrap_err());
    assert!(err.contains("already trusts"), "{err}");
    let err = message(BoardRoot::open(&tmp.path().join("nowhere")).unwrap_err());
    assert!(err.contains("trusted.pub") && err.contains("init"), "{err}");
}

#[test]
fn the_edge_opens_the_active_bundle_through_the_root_or_the_symlink() {
    let tmp = tempfile::tempdir().unwrap();
    let signer = key(1);
    let board = board(tmp.path(), &signer);
    let made = make_bundle(&tmp.path().join("b1"), &signer, "run-1");
    board.activate(&made.dir, passes).unwrap();
    assert_eq!(open_for_run(board.path()).unwrap().id, made.id);
    let via_link = open_for_run(&board.path().join("active")).unwrap();
    assert_eq!(
        via_link.dir,
        fs::canonicalize(board.path().join("slots/a")).unwrap()
    );
    let err = message(open_for_run(&made.dir).unwrap_err());
    assert!(err.contains("no trusted.pub"), "{err}");
    // A file changed on the board after activation is caught when the edge starts.
    fs::write(board.path().join("slots/a/selftest.bin"), b"zzzz").unwrap();
    let err = message(open_for_run(board.path()).unwrap_err());
    assert!(err.contains("selftest.bin"), "{err}");
}
