//! The full re-key ceremony: quiesce → every leaf replaced → resume on a fresh
//! AMK; stragglers re-added; idempotent; taken over by another admin.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code

mod common;

use core::time::Duration;

use capsule_amk::{AmkVersion, HistoryPolicy};
use capsule_resilience::testkit::MemoryEscrow;
use capsule_resilience::*;
use common::*;

const BUDGET: Duration = Duration::from_secs(600);

/// Admins Alice (devices 0, 1) and Bob (2, 3); Carol (4) a member; two rotations done.
fn album() -> Net {
    let mut net = Net::new(45);
    let alice = net.user(1);
    let a0 = net.device(alice);
    let carol_user = capsule_mls::testkit::uid(2);
    net.create(a0, HistoryPolicy::Full, &[alice, carol_user]);
    let a1 = net.device(alice);
    let kp = net.nodes[a1].t.key_package().unwrap();
    net.propose(a0, Change::AddDevice { key_package: kp });
    net.drive(a0).unwrap();
    net.join_at(a1, Epoch(0));
    net.add_user(a0, 2, 2);
    net.add_user(a0, 3, 1);
    for _ in 0..2 {
        net.propose(a0, Change::RotateAmk);
        net.drive(a0).unwrap();
    }
    net.sync_all();
    net.assert_converged();
    net
}

fn rekey(net: &mut Net, d: usize, id: RekeyId, escrow: &mut MemoryEscrow) {
    let now = net.clock.now();
    net.nodes[d].album.as_mut().unwrap().rekey_group(id, RekeyReason::AdminInitiated, now, BUDGET, escrow).unwrap();
}

/// Every reachable device reconciles and drives, a few rounds.
fn rounds(net: &mut Net, n: usize) {
    for _ in 0..n {
        for d in net.active() {
            if net.nodes[d].album.as_ref().unwrap().quarantine().is_none() {
                let _ = net.reconcile(d);
                let _ = net.drive(d);
            }
        }
    }
}

#[test]
fn every_leaf_is_replaced_and_the_album_resumes_on_one_fresh_amk() {
    let mut net = album();
    let mut escrow = MemoryEscrow::new([0x0e; 32]);
    let v_before = net.album(0).album().keyring().current_version();
    let write_before = *net.album(0).album().keyring().write_key().1.expose_secret();
    let baseline = net.album(0).album().leaf_fingerprints();
    rekey(&mut net, 0, RekeyId(7), &mut escrow);
    // Quiesce: one round later every member reads "re-keying", and the AMK has not moved.
    net.drive(0).unwrap();
    net.sync_all();
    for d in net.active() {
        assert_eq!(net.album(d).status(), AlbumStatus::Rekeying { id: RekeyId(7) }, "device {d}");
        assert_eq!(net.album(d).album().keyring().current_version(), v_before, "no new AMK mid-ceremony");
        assert_eq!(net.album(d).album().keyring().write_key().1.expose_secret(), &write_before, "one live write key");
    }
    rounds(&mut net, 6);
    net.assert_converged();
    assert_eq!(net.album(0).completed_rekeys(), &[RekeyId(7)]);
    assert!(net.album(0).rekey_journal().is_none());
    // Every leaf that existed at the start was replaced.
    let after = net.album(0).album().leaf_fingerprints();
    for (id, old) in &baseline {
        let new = &after.iter().find(|(n, _)| n == id).unwrap().1;
        assert_ne!(new, old, "{id:?} kept its leaf");
    }
    // Exactly one fresh AMK, and no version lost anywhere.
    let v_after = net.album(0).album().keyring().current_version();
    assert_eq!(v_after, v_before.next().unwrap());
    for d in net.active() {
        assert_eq!(net.album(d).status(), AlbumStatus::InSync, "device {d} resumed");
        let ring = net.album(d).album().keyring();
        assert_eq!(ring.held().count(), usize::try_from(v_after.get()).unwrap(), "device {d} lost a version");
    }
    // The lineage went to escrow before anything changed.
    let escrowed = escrow.recover(common::ALBUM).unwrap().unwrap();
    assert_eq!(escrowed.current_version(), v_before);
    for (v, k) in escrowed.held() {
        assert_eq!(net.album(0).album().keyring().get(v), Some(k));
    }
    // Idempotent: the same id again changes nothing.
    let intents = net.album(0).intents().len();
    rekey(&mut net, 0, RekeyId(7), &mut escrow);
    rounds(&mut net, 2);
    assert_eq!(net.album(0).intents().len(), intents);
    assert_eq!(net.album(0).album().keyring().current_version(), v_after);
}

#[test]
fn a_device_that_does_not_answer_is_readded_from_a_fresh_key_package() {
    let mut net = album();
    let mut escrow = MemoryEscrow::new([0x0e; 32]);
    // Carol's phone is offline for the whole ceremony; her directory has a fresh KeyPackage.
    let carol = 4;
    let fresh = net.nodes[carol].t.key_package().unwrap();
    net.nodes[carol].chain.partition(true);
    rekey(&mut net, 0, RekeyId(8), &mut escrow);
    let member = Member { user: net.nodes[carol].t.user, device: net.nodes[carol].t.id };
    net.nodes[0].album.as_mut().unwrap().provide_rekey_key_package(member, fresh);
    rounds(&mut net, 4);
    assert_eq!(net.album(0).rekey_journal().unwrap().step, RekeyStep::Collecting, "waiting within the budget");
    net.clock.advance(BUDGET);
    rounds(&mut net, 6);
    assert_eq!(net.album(0).completed_rekeys(), &[RekeyId(8)]);
    // Carol comes back: her old state was replaced; she joins from the re-add Welcome and catches up.
    net.nodes[carol].chain.partition(false);
    assert_eq!(net.reconcile(carol).unwrap(), ReconcileOutcome::Unrecoverable);
    let readd_epoch =
        net.server.entries(common::ALBUM.as_bytes()).iter().rev().find(|e| e.welcome.is_some()).unwrap().epoch;
    net.join_at(carol, readd_epoch);
    net.reconcile(carol).unwrap();
    net.assert_converged();
    let ring = net.album(carol).album().keyring();
    assert_eq!(ring.first_held(), AmkVersion::FIRST, "full history again: no key lost");
}

#[test]
fn a_stalled_rekey_is_restarted_by_another_admin() {
    let mut net = album();
    let mut escrow = MemoryEscrow::new([0x0e; 32]);
    // Alice's phone quiesces the album, then disappears for good.
    rekey(&mut net, 0, RekeyId(10), &mut escrow);
    net.drive(0).unwrap();
    net.nodes[0].chain.partition(true);
    let fresh = {
        // Alice's lost phone still has a KeyPackage in the directory for the re-add.
        net.nodes[0].t.key_package().unwrap()
    };
    rounds(&mut net, 3);
    assert!(matches!(net.album(2).status(), AlbumStatus::Rekeying { id: RekeyId(10) }));
    // Bob restarts it cleanly with a new id; every member answers again.
    rekey(&mut net, 2, RekeyId(11), &mut escrow);
    let member = Member { user: net.nodes[0].t.user, device: net.nodes[0].t.id };
    net.nodes[2].album.as_mut().unwrap().provide_rekey_key_package(member, fresh);
    rounds(&mut net, 4);
    net.clock.advance(BUDGET);
    rounds(&mut net, 6);
    assert_eq!(net.album(2).completed_rekeys(), &[RekeyId(11)]);
    for d in [1, 2, 3, 4] {
        assert_eq!(net.album(d).status(), AlbumStatus::InSync, "device {d}");
    }
    // The lineage survived in escrow through both attempts.
    let escrowed = escrow.recover(common::ALBUM).unwrap().unwrap();
    for (v, k) in escrowed.held() {
        assert_eq!(net.album(2).album().keyring().get(v), Some(k));
    }
}

/// Two admins start re-keys at once; the second marker lands right after the
/// first, before the first admin has looked. The first admin's journal yields
/// (it does not wait forever for its replaced marker), so it can start a later
/// re-key; the second ceremony completes. (Found by the simulator, seed 74.)
#[test]
fn a_rekey_replaced_before_its_admin_looked_does_not_block_the_next() {
    let mut net = album();
    let mut escrow = MemoryEscrow::new([0x0e; 32]);
    rekey(&mut net, 0, RekeyId(10), &mut escrow);
    rekey(&mut net, 2, RekeyId(20), &mut escrow);
    net.drive(0).unwrap();
    net.reconcile(2).unwrap();
    net.drive(2).unwrap();
    assert!(matches!(net.album(2).status(), AlbumStatus::Rekeying { id: RekeyId(20) }));
    rounds(&mut net, 6);
    assert!(net.album(0).rekey_journal().is_none(), "the replaced journal is dropped");
    assert_eq!(net.album(2).completed_rekeys(), &[RekeyId(20)]);
    for d in net.active() {
        assert_eq!(net.album(d).status(), AlbumStatus::InSync, "device {d}");
    }
    // Alice's device can run the next one.
    rekey(&mut net, 0, RekeyId(30), &mut escrow);
    rounds(&mut net, 6);
    assert_eq!(net.album(0).completed_rekeys(), &[RekeyId(30)]);
}

#[test]
fn a_rekey_whose_marker_commit_is_refused_does_not_block_the_next() {
    let mut net = album();
    let mut escrow = MemoryEscrow::new([0x0e; 32]);
    // Carol (not an admin) starts a re-key: her marker commit is refused.
    let carol = 4;
    rekey(&mut net, carol, RekeyId(1), &mut escrow);
    net.drive(carol).unwrap();
    let begin = net.album(carol).intents().iter().find(|i| matches!(i.change, Change::BeginRekey { .. })).unwrap();
    assert!(matches!(begin.state, IntentState::Failed { refusal: Refusal::Unauthorized, .. }), "{begin:?}");
    // The journal is gone with it: nothing waits for a marker that will never come.
    net.drive(carol).unwrap();
    assert!(net.album(carol).rekey_journal().is_none());
    let again = net.nodes[carol].album.as_mut().unwrap().rekey_group(
        RekeyId(2),
        RekeyReason::AdminInitiated,
        net.clock.now(),
        BUDGET,
        &mut escrow,
    );
    assert!(!matches!(again, Err(ResilienceError::RekeyInProgress(_))), "{again:?}");
}
