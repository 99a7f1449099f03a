//! Real crashes: a child process runs one logical operation on a store file and
//! aborts (`std::process::abort`) at each step in turn; the parent restarts on
//! the same file. Every run ends complete and consistent, with nothing lost.

#![allow(clippy::unwrap_used, clippy::panic, clippy::print_stdout)] // test code

mod common;

use std::process::Command;

use capsule_mls::Change;
use capsule_mls::testkit::uid;
use capsule_store::Step;
use common::*;

const CHILD: &str = env!("CARGO_BIN_EXE_capsule-store-crash-child");

/// Stages `change` on the store's album.
fn stage(
    st: &capsule_store::Store,
    me: &capsule_mls::DeviceIdentity,
    change: &Change,
    v: capsule_mls::Validation<'_>,
) -> capsule_mls::Outgoing {
    st.with_album(ALBUM, |a, p| a.stage(p, me, change, v)).unwrap()
}

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

/// One ceremony under crashes: `committer` stages it (the server accepted it),
/// its confirm dies at `step`, then `receiver`'s processing dies at `step`; both
/// restart on their files and end in the same state, read by fresh processes.
fn sweep(
    s: &Scenario,
    step: Step,
    committer: &str,
    receiver: &str,
    stage: impl FnOnce(&capsule_store::Store, &capsule_mls::DeviceIdentity) -> capsule_mls::Outgoing,
) {
    let store = s.open(committer);
    let me = store.load_device().unwrap();
    let out = stage(&store, &me);
    let epoch = store.album(ALBUM).unwrap().epoch();
    drop(store);
    let commit = s.file("commit", &out.commit);
    let what = format!("{:?} at {step:?}", out.change);

    assert!(child(&["confirm", s.path(committer).to_str().unwrap(), &format!("{step:?}")]), "{what}: no abort");
    let store = s.open(committer);
    let after = store.album(ALBUM).unwrap();
    match (after.epoch().since(epoch), after.pending().is_some()) {
        (Some(0), true) => {
            store.with_album(ALBUM, |a, p| a.confirm(p)).unwrap();
        }
        (Some(1), false) => assert_eq!(step, Step::Committed, "{what}: only a committed transaction survives"),
        other => panic!("{what}: torn state {other:?}"),
    }
    assert!(child(&["process", s.path(receiver).to_str().unwrap(), commit.to_str().unwrap(), &format!("{step:?}")]));
    let store = s.open(receiver);
    if store.album(ALBUM).unwrap().epoch() == epoch {
        store.with_album(ALBUM, |a, p| a.process(p, &out.commit, s.dir.validation())).unwrap();
    } else {
        assert_eq!(step, Step::Committed, "{what}");
    }
    let (a, b) = (inspect(s, committer), inspect(s, receiver));
    assert_eq!(a, b, "{what}");
    assert!(a.contains(&format!("epoch={} ", epoch.next().unwrap())) && a.contains("pending=false"), "{what}: {a}");
}

#[test]
fn every_ceremony_survives_a_crash_at_every_step_of_confirm_and_process() {
    for step in Step::ALL {
        let s = Scenario::new(&format!("commit-{step:?}"));
        let (welcome, bundle) = s.add("bob", 2);
        s.open("bob").join_album(&welcome, &bundle, s.dir.validation()).unwrap();
        let v = s.dir.validation();
        let kp = |name: &str| {
            let st = s.open(name);
            {
                let me = st.load_device().unwrap();
                st.with_provider(|p| capsule_mls::key_package(p, &me)).unwrap()
            }
        };
        let (carol_kp, bob2_kp) = (kp("carol"), kp("bob2"));
        let bob2 = s.open("bob2").load_device().unwrap().device();
        // Add user (Alice adds Carol), add device (Bob adds his second device),
        // remove lost device (Bob removes it), remove user (Alice removes Carol),
        // AMK rotation: each confirmed by its committer, processed by the other.
        sweep(&s, step, "alice", "bob", |st, me| {
            stage(st, me, &Change::AddUser { user: uid(3), directory: vec![carol_kp] }, v)
        });
        sweep(&s, step, "bob", "alice", |st, me| stage(st, me, &Change::AddDevice { key_package: bob2_kp }, v));
        sweep(&s, step, "bob", "alice", |st, me| stage(st, me, &Change::RemoveDevice { device: bob2 }, v));
        sweep(&s, step, "alice", "bob", |st, me| stage(st, me, &Change::RemoveUser { user: uid(3) }, v));
        sweep(&s, step, "alice", "bob", |st, me| stage(st, me, &Change::RotateAmk, v));
        // Three rotations (two removals and the explicit one): AMK v4, all four held.
        let a = inspect(&s, "alice");
        assert!(a.contains("amk=4 ") && a.contains("keyring=4 "), "{a}");
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

/// A re-add (OpenMLS's fork-resolution re-add of Carol from a fresh
/// KeyPackage, as the coordinator of a weak fork runs it) under crashes:
/// Alice's confirm and Bob's processing each die at `step`, restart, and end
/// in the same state.
#[test]
fn a_readd_survives_a_crash_at_every_step_of_confirm_and_process() {
    for step in Step::ALL {
        let s = Scenario::new(&format!("readd-{step:?}"));
        let v = s.dir.validation();
        let (welcome, bundle) = s.add("carol", 3);
        s.open("carol").join_album(&welcome, &bundle, v).unwrap();
        let (welcome, bundle) = s.add("bob", 2);
        s.open("bob").join_album(&welcome, &bundle, v).unwrap();
        let fresh = {
            let carol = s.open("carol");
            let me = carol.load_device().unwrap();
            carol.with_provider(|p| capsule_mls::key_package(p, &me)).unwrap()
        };
        let carol = s.open("carol").load_device().unwrap();
        let carol = capsule_mls::Member { user: carol.user(), device: carol.device() };
        sweep(&s, step, "alice", "bob", |st, me| stage(st, me, &Change::ReAddDevice { key_package: fresh }, v));
        // Carol is still listed (her leaf replaced), once.
        let members = s.open("bob").album(ALBUM).unwrap().members();
        assert_eq!(members.iter().filter(|m| **m == carol).count(), 1, "{step:?}");
    }
}

/// A reboot (issue: forks) under crashes: Alice's move into the next group
/// dies at `step`, then the confirm of its creating commit (the new chain
/// accepted it), then Bob's join of its Welcome against the group he holds;
/// each restarts on its file and finishes. Both end in the new group, in the
/// same state, with every AMK version plus the reboot's.
#[test]
fn a_reboot_survives_a_crash_at_every_step() {
    for step in Step::ALL {
        let s = Scenario::new(&format!("reboot-{step:?}"));
        let (welcome, bundle) = s.add("bob", 2);
        s.open("bob").join_album(&welcome, &bundle, s.dir.validation()).unwrap();
        let kp = {
            let bob = s.open("bob");
            let me = bob.load_device().unwrap();
            bob.with_provider(|p| capsule_mls::key_package(p, &me)).unwrap()
        };
        let kp_file = s.file("kp", &kp);
        let at = format!("{step:?}");
        assert!(child(&["reboot", s.path("alice").to_str().unwrap(), kp_file.to_str().unwrap(), &at]), "{at}");
        let alice = s.open("alice");
        match alice.album(ALBUM).unwrap().generation() {
            // Rolled back whole: the old group is intact, and the reboot runs again.
            0 => {
                let me = alice.load_device().unwrap();
                let member = capsule_mls::inspect_key_package(&kp, s.dir.validation()).unwrap().member;
                let policy = capsule_resilience::RetryPolicy::default();
                alice.reboot_album(ALBUM, policy, (&me, s.dir.validation()), &[(member, kp.clone())]).unwrap();
            }
            1 => assert_eq!(step, Step::Committed, "{at}: only a committed transaction survives"),
            other => panic!("{at}: generation {other}"),
        }
        let rebooted = alice.album(ALBUM).unwrap();
        assert_eq!(rebooted.group_id().len(), 20, "{at}: album id and generation");
        let out = rebooted.pending().cloned().unwrap();
        drop(alice);
        // The new chain accepted the creating commit.
        assert!(child(&["confirm", s.path("alice").to_str().unwrap(), &at]), "{at}");
        let alice = s.open("alice");
        if alice.album(ALBUM).unwrap().pending().is_some() {
            alice.with_album(ALBUM, |a, p| a.confirm(p)).unwrap();
        }
        let (w, b) = (s.file("welcome", &out.welcome.unwrap()), s.file("bundle", &out.bundle.unwrap()));
        let bob = s.path("bob");
        assert!(child(&["join", bob.to_str().unwrap(), w.to_str().unwrap(), b.to_str().unwrap(), &at]), "{at}");
        let bob = s.open("bob");
        if bob.album(ALBUM).unwrap().generation() == 0 {
            // The old group is still whole: join again against it.
            bob.join_album(&std::fs::read(&w).unwrap(), &std::fs::read(&b).unwrap(), s.dir.validation()).unwrap();
        } else {
            assert_eq!(step, Step::Committed, "{at}");
        }
        let (a, b) = (inspect(&s, "alice"), inspect(&s, "bob"));
        assert_eq!(a, b, "{at}");
        // The creating commit reached epoch 1 of generation 1; AMK v1 kept, v2 the reboot's.
        assert!(a.starts_with("generation=1 epoch=1 ") && a.contains("amk=2 ") && a.contains("keyring=2 "), "{a}");
        assert!(a.contains("pending=false"), "{a}");
    }
}

/// Alice (admin), Bob and Carol, in an album whose commits went through a chain
/// kept in files, so the server outlives the crashing processes.
fn rekey_scenario(name: &str) -> (Scenario, std::path::PathBuf) {
    use capsule_resilience::testkit::{FileChain, SimClock};
    use capsule_resilience::{Change, RetryPolicy};
    let s = Scenario::new(name);
    let chain_dir = s.root.join("chain");
    let mut chain = FileChain::open(&chain_dir, ALBUM.as_bytes()).unwrap();
    let clock = SimClock::new();
    for (name, user) in [("bob", 2), ("carol", 3)] {
        let joiner = s.open(name);
        let kp = {
            let me = joiner.load_device().unwrap();
            joiner.with_provider(|p| capsule_mls::key_package(p, &me)).unwrap()
        };
        let alice = s.open("alice");
        let me = alice.load_device().unwrap();
        let policy = RetryPolicy::default();
        alice
            .with_resilient(ALBUM, policy.clone(), |r, _| {
                Ok(r.propose(Change::AddUser { user: uid(user), directory: vec![kp] }))
            })
            .unwrap();
        alice.sync_album(ALBUM, &policy, &me, s.dir.validation(), &mut chain, &clock).unwrap();
        let entry = chain.entries().pop().unwrap();
        joiner
            .join_album(entry.welcome.as_deref().unwrap(), entry.bundle.as_deref().unwrap(), s.dir.validation())
            .unwrap();
    }
    // Everyone catches up before the ceremony.
    for name in ["alice", "bob", "carol"] {
        let store = s.open(name);
        let me = store.load_device().unwrap();
        store.reconcile_album(ALBUM, &RetryPolicy::default(), &me, s.dir.validation(), &mut chain).unwrap();
    }
    (s, chain_dir)
}

fn rekey_child(s: &Scenario, chain: &std::path::Path, step: &str, n: u32) -> Command {
    let mut c = Command::new(CHILD);
    c.args(["rekey", s.path("alice").to_str().unwrap(), chain.to_str().unwrap(), step, &n.to_string()]);
    c.args([s.path("bob").to_str().unwrap(), s.path("carol").to_str().unwrap()]);
    c
}

#[test]
fn a_rekey_survives_a_crash_at_every_journaled_step() {
    let mut crashes = 0;
    // Sent: the chain answered and nothing is recorded yet.
    for step in [Step::MlsWritten, Step::Committed, Step::Sent] {
        for n in 1.. {
            let (s, chain) = rekey_scenario(&format!("rekey-{step:?}-{n}"));
            let status = rekey_child(&s, &chain, &format!("{step:?}"), n).status().unwrap();
            if status.success() {
                break; // the ceremony has fewer than n such steps: every one was hit
            }
            assert!(status.code().is_none(), "{step:?} #{n}: the child failed instead of aborting");
            crashes += 1;
            // Restart on the same files: the ceremony continues to the end.
            let out = rekey_child(&s, &chain, "none", 0).output().unwrap();
            assert!(out.status.success(), "{step:?} #{n}: {}", String::from_utf8_lossy(&out.stderr));
            let states: Vec<String> = ["alice", "bob", "carol"].iter().map(|d| inspect(&s, d)).collect();
            assert!(states.windows(2).all(|w| w[0] == w[1]), "{step:?} #{n}: {states:?}");
            // One new AMK (v2), none lost (2 held), nobody still quiesced, nothing pending.
            assert!(states[0].contains("amk=2 ") && states[0].contains("keyring=2 "), "{}", states[0]);
            assert!(states[0].contains("rekeying=false") && states[0].contains("pending=false"), "{}", states[0]);
        }
    }
    assert!(crashes >= 10, "only {crashes} crash points");
    println!("re-key crash points exercised: {crashes}");
}
