//! State fingerprints: members on the same history agree, two sides of a fork
//! see each other's commit, a device behind is not judged, and nobody outside
//! the album reads or forges one.

#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code

mod common;

use capsule_amk::HistoryPolicy;
use capsule_mls::{Album, Change, Epoch, Member, MlsError, Reading, Validation};
use common::*;

/// Alice's phone (admin, 0), Bob (1) and Carol (2) in one album.
fn trio() -> World {
    let mut w = World::new(61);
    let (alice, bob, carol) = (w.user(1), w.user(2), w.user(3));
    let phone = w.device(alice);
    w.create(phone, HistoryPolicy::Full, &[alice]);
    for user in [bob, carol] {
        let d = w.device(user);
        let out = w.stage(phone, &Change::AddUser { user, directory: w.directory(user) }).unwrap();
        w.deliver(phone, &out, &[d]);
    }
    w
}

fn member(w: &World, d: usize) -> Member {
    Member { user: w.devices[d].user, device: w.devices[d].id }
}

fn fingerprint(w: &World, d: usize) -> Vec<u8> {
    let dev = &w.devices[d];
    w.album(d).fingerprint(&dev.provider, &dev.me, None).unwrap()
}

fn confirm(w: &mut World, d: usize) {
    let dev = &mut w.devices[d];
    dev.album.as_mut().unwrap().confirm(&dev.provider).unwrap();
}

fn process(w: &mut World, d: usize, commit: &[u8]) {
    let validation = Validation { trust: &w.dir.trust, now: NOW };
    let dev = &mut w.devices[d];
    dev.album.as_mut().unwrap().process(&dev.provider, commit, validation).unwrap();
}

fn read(w: &World, reader: usize, bytes: &[u8]) -> Result<Reading, MlsError> {
    w.album(reader).read_fingerprint(&w.devices[reader].provider, bytes)
}

#[test]
fn members_on_one_history_agree_and_a_device_behind_is_judged_later() {
    let mut w = trio();
    // Carol joined in this epoch: she reads the seal under it.
    let epoch = w.album(0).epoch();
    for (a, b) in [(0, 1), (1, 0), (2, 0), (0, 2), (1, 2), (2, 1)] {
        assert_eq!(read(&w, b, &fingerprint(&w, a)).unwrap(), Reading::Agrees { sender: member(&w, a), epoch });
    }
    // Carol misses a rotation.
    let out = w.stage(0, &Change::RotateAmk).unwrap();
    process(&mut w, 1, &out.commit);
    confirm(&mut w, 0);
    let ahead = w.album(0).epoch();
    // Carol reads where Alice went next (to compare with the chain); Alice
    // sees Carol behind, on her history.
    let Reading::Ahead { sender, theirs } = read(&w, 2, &fingerprint(&w, 0)).unwrap() else { panic!("ahead") };
    assert_eq!((sender, theirs.epoch, theirs.commit), (member(&w, 0), ahead, Some(out.commit_hash)));
    assert_eq!(theirs.committer, Some(member(&w, 0)));
    let behind = w.album(2).epoch();
    assert_eq!(read(&w, 0, &fingerprint(&w, 2)).unwrap(), Reading::Agrees { sender: member(&w, 2), epoch: behind });
    // Once she replays, she agrees.
    process(&mut w, 2, &out.commit);
    assert_eq!(read(&w, 2, &fingerprint(&w, 0)).unwrap(), Reading::Agrees { sender: member(&w, 0), epoch: ahead });
}

/// A statement made before a commit the reader merged replaced the sender's
/// leaf is superseded: Bob's fingerprint from before his own rotation (it
/// updates his leaf) is stale to Alice once she merges that rotation, while
/// Carol's from the same epoch (her leaf untouched) still reads as behind.
/// A refusal made before the refuser was re-added is stale the same way.
#[test]
fn a_statement_from_before_the_senders_leaf_was_replaced_is_stale() {
    let mut w = trio();
    let before = w.album(0).epoch();
    let (bob_then, carol_then) = (fingerprint(&w, 1), fingerprint(&w, 2));
    let out = w.stage(1, &Change::RotateAmk).unwrap();
    process(&mut w, 0, &out.commit);
    confirm(&mut w, 1);
    assert_eq!(read(&w, 0, &bob_then).unwrap(), Reading::Stale { sender: member(&w, 1), epoch: before });
    assert_eq!(read(&w, 0, &carol_then).unwrap(), Reading::Agrees { sender: member(&w, 2), epoch: before });
    // Carol, still at that epoch, reads Bob's old statement as ever.
    assert_eq!(read(&w, 2, &bob_then).unwrap(), Reading::Agrees { sender: member(&w, 1), epoch: before });
    // Carol refuses the rotation (say) and states it; Alice re-adds her.
    let dev = &w.devices[2];
    let refusing = w.album(2).fingerprint(&dev.provider, &dev.me, Some(out.commit_hash)).unwrap();
    assert!(matches!(read(&w, 0, &refusing).unwrap(), Reading::Refuses { .. }));
    let key_package = w.kp(2);
    let readd = w.stage(0, &Change::ReAddDevice { key_package }).unwrap();
    process(&mut w, 1, &readd.commit);
    confirm(&mut w, 0);
    for reader in [0, 1] {
        assert_eq!(read(&w, reader, &refusing).unwrap(), Reading::Stale { sender: member(&w, 2), epoch: before });
    }
}

#[test]
fn a_member_that_refused_the_next_commit_is_another_side_to_those_that_merged_it() {
    let mut w = trio();
    let before = w.album(0).epoch();
    let out = w.stage(0, &Change::RotateAmk).unwrap();
    process(&mut w, 1, &out.commit);
    confirm(&mut w, 0);
    // Carol refused that commit (she is quarantined for it) and says so.
    let dev = &w.devices[2];
    let refusing = w.album(2).fingerprint(&dev.provider, &dev.me, Some(out.commit_hash)).unwrap();
    for reader in [0, 1] {
        assert_eq!(
            read(&w, reader, &refusing).unwrap(),
            Reading::Refuses { sender: member(&w, 2), epoch: before, commit: out.commit_hash }
        );
    }
    // A refusal of a commit the reader did not merge: a fellow refuser in
    // the reader's state there (what a device quarantined for the same
    // commit counts on its side), never mistaken for a refusal of its own.
    let other = w.stage(1, &Change::SelfUpdate).unwrap();
    let elsewhere = w.album(2).fingerprint(&w.devices[2].provider, &w.devices[2].me, Some(other.commit_hash)).unwrap();
    assert_eq!(
        read(&w, 0, &elsewhere).unwrap(),
        Reading::AlsoRefuses { sender: member(&w, 2), epoch: before, commit: other.commit_hash }
    );
}

#[test]
fn two_sides_of_a_fork_each_read_the_others_commit() {
    let mut w = trio();
    let fork_epoch = w.album(0).epoch().next().unwrap();
    // Alice rotates; Bob updates his leaf in the same epoch, and both merge
    // their own (a bug, or a server that told each it won).
    let alice_commit = w.stage(0, &Change::RotateAmk).unwrap();
    let bob_commit = w.stage(1, &Change::SelfUpdate).unwrap();
    confirm(&mut w, 0);
    confirm(&mut w, 1);
    process(&mut w, 2, &alice_commit.commit);
    assert_ne!(w.album(0).epoch_authenticator(), w.album(1).epoch_authenticator());

    let Reading::Forked { sender, theirs, ours } = read(&w, 0, &fingerprint(&w, 1)).unwrap() else {
        panic!("Alice must see Bob forked")
    };
    assert_eq!(sender, member(&w, 1));
    assert_eq!((theirs.epoch, ours.epoch), (fork_epoch, fork_epoch));
    assert_eq!(theirs.commit, Some(bob_commit.commit_hash));
    assert_eq!(theirs.committer, Some(member(&w, 1)));
    assert_eq!(ours.commit, Some(alice_commit.commit_hash));
    assert_eq!(ours.committer, Some(member(&w, 0)));
    assert!(!theirs.agrees_with(&ours));

    let Reading::Forked { theirs, ours, .. } = read(&w, 1, &fingerprint(&w, 2)).unwrap() else {
        panic!("Bob must see Carol forked")
    };
    assert_eq!((theirs.commit, ours.commit), (Some(alice_commit.commit_hash), Some(bob_commit.commit_hash)));
    // Carol and Alice merged the same commit.
    let epoch = w.album(0).epoch();
    assert_eq!(read(&w, 2, &fingerprint(&w, 0)).unwrap(), Reading::Agrees { sender: member(&w, 0), epoch });

    // One epoch later, Alice's fingerprint is sealed under her side's key: Bob
    // cannot open it, which is a fork too.
    let next = w.stage(0, &Change::RotateAmk).unwrap();
    confirm(&mut w, 0);
    process(&mut w, 2, &next.commit);
    let later = w.album(0).epoch();
    assert_eq!(
        read(&w, 1, &fingerprint(&w, 0)).unwrap(),
        Reading::Apart { sender: member(&w, 0), epoch: later, sealed_under: fork_epoch }
    );
}

#[test]
fn a_removed_device_neither_reads_nor_forges_fingerprints() {
    let mut w = trio();
    let bob = w.devices[1].user;
    let before_removal = fingerprint(&w, 1);
    let out = w.stage(0, &Change::RemoveUser { user: bob }).unwrap();
    w.deliver(0, &out, &[]);
    assert!(w.album(1).is_evicted());

    // Sealed under the epoch the removal reached, which Bob never held.
    let alice_after = fingerprint(&w, 0);
    let epoch = w.album(0).epoch();
    assert_eq!(read(&w, 1, &alice_after).unwrap(), Reading::Unjudged { sender: member(&w, 0), epoch });
    // A later one too.
    let out = w.stage(0, &Change::RotateAmk).unwrap();
    w.deliver(0, &out, &[]);
    assert!(matches!(read(&w, 1, &fingerprint(&w, 0)).unwrap(), Reading::Unjudged { .. }));

    // Bob can no longer make one, and one he signed before is refused: he is
    // not a member any more.
    let dev = &w.devices[1];
    assert!(matches!(w.album(1).fingerprint(&dev.provider, &dev.me, None), Err(MlsError::Evicted)));
    assert!(matches!(read(&w, 0, &before_removal), Err(MlsError::NotMember(_))));
    assert!(matches!(read(&w, 2, &before_removal), Err(MlsError::NotMember(_))));
}

#[test]
fn a_tampered_or_misdirected_fingerprint_is_refused() {
    let w = trio();
    let good = fingerprint(&w, 1);
    assert!(read(&w, 0, &good).is_ok());
    // Any flipped bit: the signature (or the encoding) no longer holds.
    for i in (0..good.len()).step_by(7) {
        let mut bad = good.clone();
        bad[i] ^= 0x10;
        match read(&w, 0, &bad) {
            Err(MlsError::BadSignature | MlsError::Malformed(_) | MlsError::NotMember(_)) => {}
            other => panic!("byte {i}: {other:?}"),
        }
    }
    assert!(matches!(read(&w, 0, &good[..good.len() - 1]), Err(MlsError::Malformed(_))));
    assert!(matches!(read(&w, 0, &[]), Err(MlsError::Malformed(_))));
    // A device's own fingerprint is not evidence about anyone.
    assert!(matches!(read(&w, 1, &good), Err(MlsError::Refused(_))));
}

#[test]
fn marks_survive_a_reload() {
    let mut w = trio();
    let out = w.stage(0, &Change::RotateAmk).unwrap();
    w.deliver(0, &out, &[]);
    let record = w.album(2).to_record().unwrap();
    let reloaded = Album::load(&w.devices[2].provider, &record).unwrap();
    let epoch = reloaded.epoch();
    assert_eq!(reloaded.fingerprint_of(epoch), w.album(2).fingerprint_of(epoch));
    let previous = epoch.previous().unwrap();
    assert!(reloaded.fingerprint_of(previous).is_some());
    assert_eq!(
        reloaded.read_fingerprint(&w.devices[2].provider, &fingerprint(&w, 0)).unwrap(),
        Reading::Agrees { sender: member(&w, 0), epoch }
    );
    assert!(reloaded.fingerprint_of(Epoch(u64::MAX)).is_none());
}
