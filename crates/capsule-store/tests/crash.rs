//! Real crashes: a child process runs one logical operation on a store file and
//! aborts (`std::process::abort`) at each step in turn; the parent restarts on
//! the same file. Every run ends complete and consistent, with nothing lost.

#![allow(clippy::unwrap_used, clippy::panic)] // test code

mod common;

use std::process::Command;

use capsule_mls::testkit::uid;
use capsule_store::Step;
use common::*;

const CHILD: &str = env!("CARGO_BIN_EXE_capsule-store-crash-child");

/// Runs the child; returns whether it was killed by the abort.
fn child(args: &[&str]) -> bool {
    let status = Command::new(CHILD).args(args).status().unwrap();
    !status.success() && status.code().is_none()
}

fn inspect(s: &Scenario, name: &str) -> String {
    let out = Command::new(CHILD).args(["inspect", s.path(name).to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn confirm_and_process_survive_a_crash_at_every_step() {
    for step in Step::ALL {
        let s = Scenario::new(&format!("commit-{step:?}"));
        let (welcome, bundle) = s.add("bob", 2);
        s.open("bob").join_album(&welcome, &bundle, s.dir.validation()).unwrap();
        // Alice stages a rotation; the server accepted it.
        let alice = s.open("alice");
        let me = alice.load_device().unwrap();
        let out = alice.with_album(ALBUM, |a, p| a.rotate_amk(p, &me)).unwrap();
        let epoch = alice.album(ALBUM).unwrap().epoch();
        drop(alice);
        let commit = s.file("commit", &out.commit);

        // Alice's confirm dies at `step`; on restart it is either done or still pending.
        assert!(
            child(&["confirm", s.path("alice").to_str().unwrap(), &format!("{step:?}")]),
            "{step:?}: child did not abort"
        );
        let alice = s.open("alice");
        let after = alice.album(ALBUM).unwrap();
        match (after.epoch() - epoch, after.pending().is_some()) {
            (0, true) => {
                alice.with_album(ALBUM, |a, p| a.confirm(p)).unwrap();
            }
            (1, false) => assert_eq!(step, Step::Committed, "only a committed transaction survives"),
            other => panic!("{step:?}: torn state {other:?}"),
        }
        // Bob's processing dies at `step`; on restart the same commit completes it.
        assert!(child(&["process", s.path("bob").to_str().unwrap(), commit.to_str().unwrap(), &format!("{step:?}")]));
        let bob = s.open("bob");
        if bob.album(ALBUM).unwrap().epoch() == epoch {
            bob.with_album(ALBUM, |a, p| a.process(p, &out.commit, s.dir.validation())).unwrap();
        } else {
            assert_eq!(step, Step::Committed);
        }
        // Both, read by fresh processes: one epoch, one new AMK, no key lost.
        let (a, b) = (inspect(&s, "alice"), inspect(&s, "bob"));
        assert_eq!(a, b, "{step:?}");
        assert!(a.contains(&format!("epoch={} ", epoch + 1)) && a.contains("amk=2 ") && a.contains("keyring=2"), "{a}");
    }
}

#[test]
fn welcome_processing_survives_a_crash_at_every_step() {
    for step in Step::ALL {
        let s = Scenario::new(&format!("welcome-{step:?}"));
        let (welcome, bundle) = s.add("carol", 3);
        let (w, b) = (s.file("welcome", &welcome), s.file("bundle", &bundle));
        assert!(child(&[
            "join",
            s.path("carol").to_str().unwrap(),
            w.to_str().unwrap(),
            b.to_str().unwrap(),
            &format!("{step:?}")
        ]));
        let carol = s.open("carol");
        match carol.album(ALBUM) {
            Ok(_) => assert_eq!(step, Step::Committed),
            Err(capsule_store::StoreError::NotFound(_)) => {
                // Rolled back whole: the KeyPackage's private key is still there to join again.
                carol.join_album(&welcome, &bundle, s.dir.validation()).unwrap();
            }
            Err(e) => panic!("{step:?}: {e}"),
        }
        assert_eq!(inspect(&s, "alice"), inspect(&s, "carol"), "{step:?}");
        let _ = uid(3);
    }
}
