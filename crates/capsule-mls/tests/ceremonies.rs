//! The five ceremonies over real OpenMLS (X-Wing suite, libcrux), groups of 2 and 5
//! devices and 50: after every commit every member agrees.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code

mod common;

use capsule_amk::{AmkVersion, HistoryPolicy};
use capsule_mls::*;
use common::*;

/// Builds an album of `devices` devices: admin Alice (2 devices), then users of
/// one or two devices each, added one user per commit.
fn album_of(devices: usize, seed: u8) -> World {
    let mut w = World::new(seed);
    let alice = w.user(1);
    let a0 = w.device(alice);
    w.create(a0, HistoryPolicy::Full, &[alice]);
    if devices >= 2 {
        let a1 = w.device(alice);
        let kp = w.kp(a1);
        let out = w.stage(a0, &Change::AddDevice { key_package: kp }).unwrap();
        w.deliver(a0, &out, &[a1]);
        w.assert_consistent();
    }
    let mut next_user = 2u8;
    while w.members().len() < devices {
        let user = w.user(next_user);
        next_user += 1;
        let count = (devices - w.members().len()).min(2);
        let new: Vec<usize> = (0..count).map(|_| w.device(user)).collect();
        let dir = w.directory(user);
        let out = w.stage(a0, &Change::AddUser { user, directory: dir }).unwrap();
        w.deliver(a0, &out, &new);
        w.assert_consistent();
    }
    w
}

fn run_all_ceremonies(size: usize) {
    let mut w = album_of(size, u8::try_from(size).unwrap());
    assert_eq!(w.members().len(), size);
    let alice = uid(1);
    let (a0, a1) = (0, 1);

    // Add user: Dave with two devices, one commit, one Welcome.
    let dave = w.user(200);
    let (d0, d1) = (w.device(dave), w.device(dave));
    let dir = w.directory(dave);
    let before = w.amk_version(a0);
    let out = w.stage(a0, &Change::AddUser { user: dave, directory: dir }).unwrap();
    assert!(out.welcome.is_some() && out.bundle.is_some());
    let applied = w.deliver(a0, &out, &[d0, d1]);
    assert!(applied.iter().all(|a| a.added.len() == 2 && a.rotated_to.is_none()));
    assert_eq!(w.amk_version(d0), before, "adding does not rotate");
    w.assert_consistent();

    // Add device: Dave's first device adds his third.
    let d2 = w.device(dave);
    let kp = w.kp(d2);
    let out = w.stage(d0, &Change::AddDevice { key_package: kp }).unwrap();
    w.deliver(d0, &out, &[d2]);
    w.assert_consistent();

    // Remove lost device: Dave's d1 is lost; d2 removes it and the AMK rotates.
    let lost_id = w.devices[d1].id;
    let out = w.stage(d2, &Change::RemoveDevice { device: lost_id }).unwrap();
    let applied = w.deliver(d2, &out, &[]);
    let v_after_lost = before.next().unwrap();
    assert!(applied.iter().all(|a| if a.evicted {
        a.rotated_to.is_none()
    } else {
        a.rotated_to == Some(v_after_lost)
    }));
    assert_eq!(applied.iter().filter(|a| a.evicted).count(), 1);
    assert!(w.album(d1).is_evicted());
    assert_eq!(w.amk_version(d1), before, "the lost device has nothing newer");
    assert!(w.album(d1).keyring().get(v_after_lost).is_none());
    w.assert_consistent();

    // Remove user: Alice removes Dave entirely.
    let out = w.stage(a1, &Change::RemoveUser { user: dave }).unwrap();
    w.deliver(a1, &out, &[]);
    let v_after_dave = v_after_lost.next().unwrap();
    for d in [d0, d2] {
        assert!(w.album(d).is_evicted());
        assert_eq!(w.amk_version(d), v_after_lost);
        assert!(w.album(d).keyring().get(v_after_dave).is_none());
    }
    assert!(!w.album(a0).members().iter().any(|m| m.user == dave));
    w.assert_consistent();

    // AMK rotation on its own.
    let out = w.stage(a0, &Change::RotateAmk).unwrap();
    let applied = w.deliver(a0, &out, &[]);
    assert!(applied.iter().all(|a| a.rotated_to == Some(v_after_dave.next().unwrap())));
    w.assert_consistent();
    // A rotated AMK differs from the previous one and removed devices never saw it.
    let now = *w.album(a0).keyring().current().1.expose_secret();
    assert_ne!(Some(&now), w.album(a0).keyring().get(v_after_dave).map(|k| k.expose_secret()));
    let _ = alice;
}

#[test]
fn every_ceremony_with_2_devices() {
    run_all_ceremonies(2);
}

#[test]
fn every_ceremony_with_5_devices() {
    run_all_ceremonies(5);
}

#[test]
fn every_ceremony_with_50_devices() {
    run_all_ceremonies(50);
}

#[test]
fn calling_a_pending_ceremony_again_returns_the_same_commit() {
    let mut w = album_of(2, 9);
    let bob = w.user(2);
    let b0 = w.device(bob);
    let dir = w.directory(bob);
    let change = Change::AddUser { user: bob, directory: dir };
    let first = w.stage(0, &change).unwrap();
    let again = w.stage(0, &change.clone()).unwrap();
    assert_eq!(first, again);
    // A different ceremony waits.
    assert!(matches!(w.stage(0, &Change::RotateAmk), Err(MlsError::PendingCommit)));
    // Nothing is merged before the server answers.
    assert_eq!(w.album(0).epoch(), w.album(1).epoch());
    w.deliver(0, &first, &[b0]);
    w.assert_consistent();
}

#[test]
fn a_rejected_commit_leaves_the_album_as_it_was() {
    let mut w = album_of(2, 10);
    let epoch = w.album(0).epoch();
    let auth = w.album(0).epoch_authenticator();
    w.stage(0, &Change::RotateAmk).unwrap();
    let dev = &mut w.devices[0];
    let cleared = dev.album.as_mut().unwrap().reject(&dev.provider).unwrap();
    assert!(matches!(cleared.map(|o| o.change), Some(Change::RotateAmk)));
    assert_eq!(w.album(0).epoch(), epoch);
    assert_eq!(w.album(0).epoch_authenticator(), auth);
    assert_eq!(w.amk_version(0), AmkVersion::FIRST);
    // And the album works on: a fresh rotation goes through.
    let out = w.stage(0, &Change::RotateAmk).unwrap();
    w.deliver(0, &out, &[]);
    w.assert_consistent();
}

#[test]
fn the_same_commit_processed_twice_is_refused_and_changes_nothing() {
    let mut w = album_of(3, 11);
    let out = w.stage(0, &Change::RotateAmk).unwrap();
    w.deliver(0, &out, &[]);
    let auth = w.album(2).epoch_authenticator();
    let v = Validation { trust: &w.dir.trust, now: NOW };
    let dev = &mut w.devices[2];
    let again = dev.album.as_mut().unwrap().process(&dev.provider, &out.commit, v);
    assert!(matches!(again, Err(MlsError::AlreadyApplied)), "{again:?}");
    assert_eq!(w.album(2).epoch_authenticator(), auth);
    // An older commit than the last one is a wrong-epoch refusal, not a fork.
    let out2 = w.stage(0, &Change::RotateAmk).unwrap();
    w.deliver(0, &out2, &[]);
    let v = Validation { trust: &w.dir.trust, now: NOW };
    let dev = &mut w.devices[2];
    let stale = dev.album.as_mut().unwrap().process(&dev.provider, &out.commit, v);
    assert!(matches!(stale, Err(MlsError::WrongEpoch { .. })), "{stale:?}");
    w.assert_consistent();
}

#[test]
fn concurrent_commits_converge_without_a_split() {
    let mut w = album_of(4, 12);
    // Two members commit for the same epoch.
    let first = w.stage(0, &Change::RotateAmk).unwrap();
    let second = w.stage(2, &Change::RotateAmk).unwrap();
    assert_eq!(first.epoch, second.epoch);
    // The ordering stand-in takes the first; device 2 processes it and its own is superseded.
    let applied = w.deliver(0, &first, &[]);
    let loser = &applied[w.members().iter().position(|d| *d == 2).unwrap()];
    assert_eq!(loser.superseded.as_ref().map(|o| o.commit_hash), Some(second.commit_hash));
    assert!(w.album(2).pending().is_none());
    w.assert_consistent();
    // The loser's commit is now stale everywhere.
    let v = Validation { trust: &w.dir.trust, now: NOW };
    let dev = &mut w.devices[1];
    assert!(dev.album.as_mut().unwrap().process(&dev.provider, &second.commit, v).is_err());
    // Re-proposed against the new epoch, it goes through: one AMK per version everywhere.
    let again = w.stage(2, &Change::RotateAmk).unwrap();
    w.deliver(2, &again, &[]);
    w.assert_consistent();
    assert_eq!(w.amk_version(0).get(), 3);
}

#[test]
fn adding_a_user_adds_exactly_the_devices_missing() {
    let mut w = World::new(71);
    let alice = w.user(1);
    let a0 = w.device(alice);
    w.create(a0, HistoryPolicy::Full, &[alice]);
    let bob = w.user(2);
    let b0 = w.device(bob);
    let first = w.directory(bob);
    let out = w.stage(a0, &Change::AddUser { user: bob, directory: first.clone() }).unwrap();
    w.deliver(a0, &out, &[b0]);
    // Bob got a second device; the directory now lists both.
    let b1 = w.device(bob);
    let mut both = first;
    both.extend(w.directory(bob));
    let out = w.stage(a0, &Change::AddUser { user: bob, directory: both.clone() }).unwrap();
    let applied = w.deliver(a0, &out, &[b1]);
    assert_eq!(applied[0].added, vec![Member { user: bob, device: w.devices[b1].id }], "only the missing one");
    w.assert_consistent();
    // Asked again with every device in: already in effect.
    assert!(matches!(w.stage(a0, &Change::AddUser { user: bob, directory: both }), Err(MlsError::AlreadyMember(_))));
}
