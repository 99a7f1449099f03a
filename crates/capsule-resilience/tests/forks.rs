//! Forks seen through fingerprints: a member off the chain is detected by the
//! others, quarantined and re-added; a device far behind catches up by replay
//! alone; a server that shows two commits for one epoch is caught on both sides.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code

mod common;

use capsule_amk::HistoryPolicy;
use capsule_amk::{open_photo, seal_photo};
use capsule_mls::testkit::NOW;
use capsule_mls::{Album, Epoch, Validation};
use capsule_resilience::testkit::{FaultyChain, MemoryServer, TestChain};
use capsule_resilience::*;
use common::*;

/// Alice (admin, device 0), Bob (1), Carol (2) and Dave (3).
fn four() -> Net {
    let mut net = Net::new(70);
    let alice = net.user(1);
    let a0 = net.device(alice);
    net.create(a0, HistoryPolicy::Full, &[alice]);
    for n in 2..=4 {
        net.add_user(a0, n, 1);
    }
    net.sync_all();
    net.assert_converged();
    net
}

fn member(net: &Net, d: usize) -> Member {
    Member { user: net.nodes[d].t.user, device: net.nodes[d].t.id }
}

/// Runs `f` on device `d`'s album with its context.
fn with<T>(
    net: &mut Net,
    d: usize,
    f: impl FnOnce(&mut ResilientAlbum, Context<'_, capsule_mls::MemoryProvider>) -> T,
) -> T {
    let validation = Validation { trust: &net.dir.trust, now: NOW };
    let n = &mut net.nodes[d];
    let cx = Context { provider: &n.t.provider, device: &n.t.me, validation };
    f(n.album.as_mut().unwrap(), cx)
}

/// What the server's fingerprint board would hold: the newest per device.
type Board = std::collections::BTreeMap<usize, Vec<u8>>;

/// Every device in `devices` publishes its fingerprint to `board`.
fn publish(net: &mut Net, board: &mut Board, devices: &[usize]) {
    for &d in devices {
        let bytes = with(net, d, |a, cx| a.fingerprint(cx).unwrap());
        board.insert(d, bytes);
    }
}

/// Device `d`'s report from the board, with the chain's head fetched after
/// reading it (`None`: not fetched).
fn report(net: &mut Net, board: &Board, d: usize, chain_head: Option<Epoch>) -> SyncReport {
    let others: Vec<Vec<u8>> = board.iter().filter(|(s, _)| **s != d).map(|(_, b)| b.clone()).collect();
    with(net, d, |a, cx| a.sync_report(cx, &others, chain_head).unwrap())
}

/// Device `d` reconciles (its chain must answer) and reports with the head it saw.
fn reconciled_report(net: &mut Net, board: &Board, d: usize) -> SyncReport {
    let head = match net.reconcile(d).unwrap() {
        ReconcileOutcome::Diverged { server_epoch, .. } => server_epoch,
        _ => net.album(d).album().epoch(),
    };
    report(net, board, d, Some(head))
}

/// Device `d` merges a rotation the server never sees (a local state bug).
fn merge_off_chain(net: &mut Net, d: usize) -> capsule_mls::CommitHash {
    let validation = Validation { trust: &net.dir.trust, now: NOW };
    let node = &mut net.nodes[d];
    let mut album = node.album.take().unwrap().into_album();
    let out = album.stage(&node.t.provider, &node.t.me, &Change::RotateAmk, validation).unwrap();
    album.confirm(&node.t.provider).unwrap();
    node.album = Some(ResilientAlbum::new(album, RetryPolicy::default()));
    out.commit_hash
}

/// The rebooter's new album replaces its old one on a fresh honest chain
/// kept under the new group id; the rebooter drives it, and each of `joiners`
/// (each its own user here) joins from the Welcome made for it, against the
/// group it holds, and forgets the old group. Returns the old album's epoch.
fn switch_to_reboot(net: &mut Net, rebooter: usize, rebooted: ResilientAlbum, joiners: &[usize]) -> Epoch {
    let group = rebooted.album().group_id();
    let honest = MemoryServer::new();
    honest.create_album(&group, Epoch::ZERO);
    for &d in joiners.iter().chain([&rebooter]) {
        net.nodes[d].chain = FaultyChain::new(TestChain::Memory(honest.connect(&group)), net.clock.clone());
    }
    let old = net.nodes[rebooter].album.replace(rebooted).unwrap();
    let old_epoch = old.album().epoch();
    with(net, rebooter, |_, cx| old.into_album().discard(cx.provider).unwrap());
    net.drive(rebooter).unwrap();
    assert!(net.album(rebooter).intents().iter().all(|i| matches!(i.state, IntentState::Confirmed { .. })));
    let entries = honest.entries(&group);
    assert_eq!(entries.len(), joiners.len(), "one commit per user");
    for &d in joiners {
        let validation = Validation { trust: &net.dir.trust, now: NOW };
        let n = &mut net.nodes[d];
        let joined = entries
            .iter()
            .find_map(|e| {
                let old = n.album.as_ref()?.album();
                Album::join_reboot(&n.t.provider, old, e.welcome.as_ref()?, e.bundle.as_ref()?, validation).ok()
            })
            .unwrap_or_else(|| panic!("device {d} has a Welcome"));
        n.album.take().unwrap().into_album().discard(&n.t.provider).unwrap();
        n.album = Some(ResilientAlbum::new(joined, RetryPolicy::default()));
    }
    for &d in joiners.iter().chain([&rebooter]) {
        net.reconcile(d).unwrap();
    }
    old_epoch
}

/// Heals a weak fork at `epoch` whose other side is `target` (re-bootstrapped):
/// only the coordinator, Alice's device 0, proposes the re-add from a fresh
/// KeyPackage, and only once (device 2 and a second call propose nothing);
/// the target joins from its Welcome, and every device ends on the head
/// holding every AMK version.
fn readded_by_the_coordinator(net: &mut Net, board: &Board, target: usize, epoch: Epoch) {
    let fresh = net.nodes[target].t.key_package().unwrap();
    let who = member(net, target);
    let heal = |net: &mut Net, d: usize| {
        let seen: Vec<Vec<u8>> = board.iter().filter(|(s, _)| **s != d).map(|(_, b)| b.clone()).collect();
        with(net, d, |a, cx| a.heal_fork(cx, &seen, Some(epoch), &[(who, fresh.clone())]).unwrap())
    };
    assert!(heal(net, 2).is_empty(), "only the coordinator re-adds");
    let proposed = heal(net, 0);
    assert_eq!(proposed.len(), 1);
    assert!(heal(net, 0).is_empty(), "proposed once");
    net.drive(0).unwrap();
    assert!(matches!(net.album(0).intent(proposed[0]).unwrap().state, IntentState::Confirmed { .. }));
    net.join_at(target, epoch);
    net.sync_all();
    net.assert_converged();
    let versions = |net: &Net, d: usize| net.album(d).album().keyring().held().map(|(v, _)| v).collect::<Vec<_>>();
    for d in net.active() {
        assert_eq!(versions(net, d), versions(net, 0), "device {d} holds every version");
    }
}

#[test]
fn a_member_off_the_chain_is_detected_quarantined_and_readded() {
    let mut net = four();
    let all = [0, 1, 2, 3];
    let mut board = Board::new();
    publish(&mut net, &mut board, &all);
    for d in all {
        assert_eq!(reconciled_report(&mut net, &board, d).class, SyncClass::InSync, "device {d}");
    }
    let fork = net.album(0).album().epoch();
    let bob_commit = merge_off_chain(&mut net, 1);
    publish(&mut net, &mut board, &[1]);
    // Before looking at the chain, the others only know Bob is ahead.
    assert_eq!(report(&mut net, &board, 0, None).class, SyncClass::Behind);
    // The chain has nothing past `fork`: Bob merged a commit it never accepted.
    for d in [0, 2, 3] {
        let r = reconciled_report(&mut net, &board, d);
        assert_eq!(net.album(d).album().epoch(), fork);
        assert_eq!(r.class, SyncClass::Weak { minority: false }, "device {d}");
        assert_eq!(r.own, vec![member(&net, 0), member(&net, 2), member(&net, 3)]);
        assert_eq!(
            r.others,
            vec![Partition { epoch: fork.next().unwrap(), commit: Some(bob_commit), members: vec![member(&net, 1)] }]
        );
        // Everyone names the same coordinator: the admin on the chain's side.
        assert_eq!(r.readds, vec![Readd { member: member(&net, 1), by: member(&net, 0) }]);
    }
    // Bob learns from the chain that he diverged, and from the fingerprints
    // that he is the minority: his way out is a re-bootstrap.
    assert_eq!(reconciled_report(&mut net, &board, 1).class, SyncClass::Weak { minority: true });
    assert!(matches!(net.album(1).status(), AlbumStatus::Quarantined { .. }));
    let discarded = with(&mut net, 1, |a, cx| a.rebootstrap(cx.provider).unwrap());
    assert_eq!(discarded.last_applied, Some(bob_commit));
    readded_by_the_coordinator(&mut net, &board, 1, fork);
    publish(&mut net, &mut board, &all);
    for d in all {
        let r = reconciled_report(&mut net, &board, d);
        assert_eq!((r.class, r.others), (SyncClass::InSync, vec![]), "device {d}");
    }
}

#[test]
fn a_device_far_behind_catches_up_by_replay_alone() {
    let mut net = four();
    net.nodes[3].chain.partition(true);
    for _ in 0..12 {
        net.propose(0, Change::RotateAmk);
        net.drive(0).unwrap();
    }
    for d in 0..3 {
        net.reconcile(d).unwrap();
    }
    net.nodes[3].chain.partition(false);
    let mut board = Board::new();
    publish(&mut net, &mut board, &[0, 1, 2, 3]);
    let r = report(&mut net, &board, 3, None);
    assert_eq!(r.class, SyncClass::Behind);
    assert!(r.others.is_empty());
    let intents = net.album(3).intents().len();
    match net.reconcile(3).unwrap() {
        ReconcileOutcome::Reconciled { applied_commits } => assert_eq!(applied_commits.len(), 12),
        other => panic!("{other:?}"),
    }
    assert_eq!(net.album(3).intents().len(), intents, "replay alone: nothing proposed");
    publish(&mut net, &mut board, &[0, 1, 2, 3]);
    for d in 0..4 {
        assert_eq!(reconciled_report(&mut net, &board, d).class, SyncClass::InSync, "device {d}");
    }
    net.assert_converged();
}

#[test]
fn a_server_showing_two_commits_for_one_epoch_is_caught_on_both_sides_and_healed_by_a_reboot() {
    let mut net = four();
    let mut rng = <chacha20::ChaCha20Rng as rand_core::SeedableRng>::from_seed([5; 32]);
    let photo = seal_photo(net.album(3).album().keyring().current(), &ALBUM, b"before", &mut rng).unwrap();
    // From here on Carol and Dave talk to a copy of the server that goes its own way.
    let other = MemoryServer::new();
    other.create_album(ALBUM.as_bytes(), Epoch::ZERO);
    let mut copy = other.connect(ALBUM.as_bytes());
    for e in net.server.entries(ALBUM.as_bytes()) {
        let submission = Submission { epoch: e.epoch, commit: e.commit, welcome: e.welcome, bundle: e.bundle };
        copy.submit(&submission).unwrap();
    }
    for d in [2, 3] {
        net.nodes[d].chain = FaultyChain::new(TestChain::Memory(other.connect(ALBUM.as_bytes())), net.clock.clone());
    }
    let fork = net.album(0).album().epoch();
    // Alice rotates on the real server, Carol on the copy: each "wins" the epoch.
    net.propose(0, Change::RotateAmk);
    net.drive(0).unwrap();
    net.propose(2, Change::RotateAmk);
    net.drive(2).unwrap();
    net.sync_all();
    assert_ne!(net.album(1).album().epoch_authenticator(), net.album(3).album().epoch_authenticator());
    // Each side's chain looks fine to it.
    for d in 0..4 {
        assert_eq!(net.reconcile(d).unwrap(), ReconcileOutcome::UpToDate, "device {d}");
    }
    let mut board = Board::new();
    publish(&mut net, &mut board, &[0, 1, 2, 3]);
    for (d, witness, committer) in [(0, 3, 2), (1, 3, 2), (2, 1, 0), (3, 1, 0)] {
        let SyncClass::Equivocation(e) = reconciled_report(&mut net, &board, d).class else {
            panic!("device {d} must see equivocation")
        };
        assert_eq!(e.epoch, fork, "device {d}");
        assert_eq!(e.witness, member(&net, witness), "device {d}");
        assert_eq!(e.their_committer, Some(member(&net, committer)), "device {d}");
        assert_ne!(e.ours, e.theirs);
        assert!(e.ours.is_some() && e.theirs.is_some());
        // The evidence is the witness's signed statement, readable by members.
        let n = &net.nodes[d];
        let album = n.album.as_ref().unwrap().album();
        let reading = album.read_fingerprint(&n.t.provider, &e.statement).unwrap();
        assert!(matches!(reading, Reading::Forked { .. }));
        // And each commit's hash as its own committer signed it: theirs read
        // as a fork from its committer, ours from the device that made it
        // (this one, or a member agreeing with it).
        let our_committer = if d < 2 { 0 } else { 2 };
        assert_eq!(e.our_committer, Some(member(&net, our_committer)), "device {d}");
        let theirs = e.theirs_by_committer.as_deref().expect("their committer heard");
        assert_eq!(capsule_mls::fingerprint_header(theirs).unwrap().sender, member(&net, committer));
        match album.read_fingerprint(&n.t.provider, theirs).unwrap() {
            Reading::Forked { theirs: stated, .. } => {
                assert_eq!((stated.commit, stated.committer), (e.theirs, e.their_committer), "device {d}");
            }
            other => panic!("device {d}: {other:?}"),
        }
        let ours = e.ours_by_committer.as_deref().expect("our committer heard");
        assert_eq!(capsule_mls::fingerprint_header(ours).unwrap().sender, member(&net, our_committer));
        assert_eq!(capsule_mls::fingerprint_header(ours).unwrap().epoch, fork.next().unwrap(), "device {d}");
        if d != our_committer {
            assert!(matches!(album.read_fingerprint(&n.t.provider, ours).unwrap(), Reading::Agrees { .. }));
        }
        // The other side (an auditor from before the fork, too) reads it as
        // the very commit `ours` names, from its committer.
        let across = &net.nodes[if d < 2 { 2 } else { 0 }];
        match across.album.as_ref().unwrap().album().read_fingerprint(&across.t.provider, ours).unwrap() {
            Reading::Forked { theirs: stated, .. } => {
                assert_eq!((stated.commit, stated.committer), (e.ours, e.our_committer), "device {d}");
            }
            other => panic!("device {d}: {other:?}"),
        }
    }

    // Everyone names the same rebooter: the smallest admin device, Alice's.
    for d in 0..4 {
        assert_eq!(reconciled_report(&mut net, &board, d).rebooter, Some(member(&net, 0)), "device {d}");
    }
    let held_before: Vec<_> = net.album(0).album().keyring().held().map(|(v, _)| v).collect();
    let fresh: Vec<(Member, Vec<u8>)> =
        (1..4).map(|d| (member(&net, d), net.nodes[d].t.key_package().unwrap())).collect();
    let rebooted = with(&mut net, 0, |a, cx| a.reboot(cx, &fresh).unwrap());
    assert_eq!(rebooted.album().generation(), 1);
    assert_eq!(rebooted.intents().len(), 3, "one add per user");
    switch_to_reboot(&mut net, 0, rebooted, &[1, 2, 3]);
    let first = net.album(0).album();
    for d in 0..4 {
        let a = net.album(d).album();
        assert_eq!((a.epoch(), a.epoch_authenticator()), (first.epoch(), first.epoch_authenticator()), "device {d}");
        assert_eq!(a.keyring().current(), first.keyring().current(), "device {d}");
        let held: Vec<_> = a.keyring().held().map(|(v, _)| v).collect();
        assert!(held_before.iter().all(|v| held.contains(v)), "device {d} lost a version");
        assert_eq!(open_photo(a.keyring(), &ALBUM, &photo).unwrap().as_slice(), b"before", "device {d}");
    }
    let mut board = Board::new();
    publish(&mut net, &mut board, &[0, 1, 2, 3]);
    for d in 0..4 {
        assert_eq!(reconciled_report(&mut net, &board, d).class, SyncClass::InSync, "device {d}");
    }
}

/// A server that hands a joiner the Welcome of one history and then shows it
/// another: Alice adds Eve on a copy of the chain only Alice sees, while the
/// real chain takes Bob's rotation for that epoch. Eve joins from the copy's
/// Welcome, so she has applied no commit; her first reconcile against the real
/// chain, at the same epoch, must not call her up to date: the chain's commit
/// before her epoch does not carry her Welcome's confirmation tag.
#[test]
fn a_device_joined_from_a_welcome_of_another_history_is_quarantined_not_up_to_date() {
    let mut net = four();
    // Dave joined last, from the real chain's Welcome: the check passes.
    assert_eq!(net.album(3).album().last_applied(), None);
    assert_eq!(net.reconcile(3).unwrap(), ReconcileOutcome::UpToDate);
    let other = MemoryServer::new();
    other.create_album(ALBUM.as_bytes(), Epoch::ZERO);
    let mut copy = other.connect(ALBUM.as_bytes());
    for e in net.server.entries(ALBUM.as_bytes()) {
        let submission = Submission { epoch: e.epoch, commit: e.commit, welcome: e.welcome, bundle: e.bundle };
        copy.submit(&submission).unwrap();
    }
    let real = std::mem::replace(
        &mut net.nodes[0].chain,
        FaultyChain::new(TestChain::Memory(other.connect(ALBUM.as_bytes())), net.clock.clone()),
    );
    let fork = net.album(0).album().epoch();
    net.propose(1, Change::RotateAmk);
    net.drive(1).unwrap();
    let eve = net.user(5);
    let e0 = net.device(eve);
    let directory = vec![net.nodes[e0].t.key_package().unwrap()];
    net.propose(0, Change::AddUser { user: eve, directory });
    net.drive(0).unwrap();
    let lie = other.entries(ALBUM.as_bytes()).into_iter().find(|e| e.epoch == fork).unwrap();
    {
        let validation = Validation { trust: &net.dir.trust, now: NOW };
        let n = &mut net.nodes[e0];
        let joined =
            Album::join(&n.t.provider, lie.welcome.as_ref().unwrap(), lie.bundle.as_ref().unwrap(), validation)
                .unwrap();
        n.album = Some(ResilientAlbum::new(joined, RetryPolicy::default()));
    }
    assert_eq!(net.album(e0).album().epoch(), Epoch(fork.0 + 1));
    // The commit that made Eve's epoch is recognised, and the chain's is not it.
    assert!(net.album(e0).album().made_this_epoch(&lie.commit));
    let honest = net.server.entries(ALBUM.as_bytes()).into_iter().find(|e| e.epoch == fork).unwrap();
    assert!(!net.album(e0).album().made_this_epoch(&honest.commit));
    let before = net.album(e0).album().epoch_authenticator();
    assert_eq!(
        net.reconcile(e0).unwrap(),
        ReconcileOutcome::Diverged { local_epoch: Epoch(fork.0 + 1), server_epoch: Epoch(fork.0 + 1) }
    );
    assert_eq!(net.album(e0).album().epoch_authenticator(), before, "nothing merged");
    assert!(matches!(net.album(e0).status(), AlbumStatus::Quarantined { .. }));
    // Alice, back on the real chain, is beside it too: her add is not its commit.
    net.nodes[0].chain = real;
    assert!(matches!(net.reconcile(0).unwrap(), ReconcileOutcome::Diverged { .. }));
}

/// Alice's modified client (device 0) adds an impostor for user 5 whose
/// identity key only it trusts; the chain orders the commit, and devices 1 to
/// 3 refuse it: each quarantined, naming the commit.
fn impostor_added_by_alice(net: &mut Net) {
    let mallory = net.user(5);
    let mut impostor = capsule_mls::testkit::Directory::new(99);
    assert_eq!(impostor.user(5).unwrap(), mallory);
    let fake = impostor.device(mallory).unwrap();
    let mut modified = net.dir.trust.clone();
    modified.insert(mallory, impostor.trust[&mallory].clone());
    net.propose(0, Change::AddUser { user: mallory, directory: vec![fake.key_package().unwrap()] });
    {
        let validation = Validation { trust: &modified, now: NOW };
        let n = &mut net.nodes[0];
        let cx = Context { provider: &n.t.provider, device: &n.t.me, validation };
        n.album.as_mut().unwrap().drive(cx, &mut n.chain, &net.clock).unwrap();
    }
    for d in 1..4 {
        assert!(matches!(net.reconcile(d).unwrap(), ReconcileOutcome::Diverged { .. }), "device {d}");
        assert!(net.album(d).quarantine().unwrap().invalid_commit.is_some());
    }
}

/// A commit every honest member refuses, at the head of the chain (Alice's
/// modified client adds an impostor; the server here only orders): the honest
/// members are all quarantined, their fingerprints agree, and the chain
/// disagrees with all of them. Hard: Bob, the honest admin, reboots the album
/// from the last valid epoch; nobody is left stuck.
#[test]
fn a_commit_every_honest_member_refuses_is_healed_by_a_reboot_from_the_last_valid_epoch() {
    let mut net = Net::new(71);
    let (alice, bob) = (net.user(1), net.user(2));
    let a0 = net.device(alice);
    net.create(a0, HistoryPolicy::Full, &[alice, bob]);
    for n in 2..=4 {
        net.add_user(a0, n, 1);
    }
    net.sync_all();
    let mut rng = <chacha20::ChaCha20Rng as rand_core::SeedableRng>::from_seed([6; 32]);
    let photo = seal_photo(net.album(3).album().keyring().current(), &ALBUM, b"valid", &mut rng).unwrap();
    let last_valid = net.album(1).album().epoch();

    impostor_added_by_alice(&mut net);
    let mut board = Board::new();
    publish(&mut net, &mut board, &[1, 2, 3]);
    for d in 1..4 {
        let r = reconciled_report(&mut net, &board, d);
        assert_eq!(r.class, SyncClass::Hard, "device {d}");
        assert_eq!(r.own, vec![member(&net, 1), member(&net, 2), member(&net, 3)]);
        // The honest admin, not the author of the refused commit.
        assert_eq!(r.rebooter, Some(member(&net, 1)), "device {d}");
    }

    let fresh: Vec<(Member, Vec<u8>)> =
        [2, 3].iter().map(|&d| (member(&net, d), net.nodes[d].t.key_package().unwrap())).collect();
    let rebooted = with(&mut net, 1, |a, cx| a.reboot(cx, &fresh).unwrap());
    assert_eq!(
        rebooted.album().keyring().current_version(),
        net.album(1).album().keyring().current_version().next().unwrap()
    );
    let old_epoch = switch_to_reboot(&mut net, 1, rebooted, &[2, 3]);
    assert_eq!(old_epoch, last_valid, "rebooted from the last valid epoch");
    for d in 1..4 {
        assert_eq!(net.album(d).status(), AlbumStatus::InSync, "device {d}");
        let a = net.album(d).album();
        assert_eq!(a.epoch_authenticator(), net.album(1).album().epoch_authenticator(), "device {d}");
        assert_eq!(open_photo(a.keyring(), &ALBUM, &photo).unwrap().as_slice(), b"valid");
    }
    assert_eq!(net.album(1).album().members().len(), 3);
}

/// The same refused commit, and the first honest admin gives up first: Bob
/// re-bootstraps (the user's choice) and leaves a farewell. The others still
/// count his refusal, never name him (he holds nothing) to reboot, and name
/// Carol, the next admin; with Dave gone too, Carol, the last device holding
/// the album, hears two fellow refusers and reboots instead of discarding
/// the album's last copy.
#[test]
fn a_member_that_re_bootstrapped_counts_by_its_farewell_and_is_never_named() {
    let mut net = Net::new(72);
    let (alice, bob, carol) = (net.user(1), net.user(2), net.user(3));
    let a0 = net.device(alice);
    net.create(a0, HistoryPolicy::Full, &[alice, bob, carol]);
    for n in 2..=4 {
        net.add_user(a0, n, 1);
    }
    net.sync_all();
    impostor_added_by_alice(&mut net);
    let head = Some(Epoch(u64::try_from(net.server.entries(ALBUM.as_bytes()).len()).unwrap()));
    let mut board = Board::new();
    // Bob's farewell, then his state is gone.
    let farewell = {
        let n = &mut net.nodes[1];
        let album = n.album.as_mut().unwrap();
        let farewell = album.farewell(&n.t.provider, &n.t.me).unwrap().unwrap();
        album.rebootstrap(&n.t.provider).unwrap();
        farewell
    };
    assert!(capsule_mls::fingerprint_header(&farewell).unwrap().departing);
    net.nodes[1].album = None;
    board.insert(1, farewell);
    publish(&mut net, &mut board, &[2, 3]);
    for d in [2, 3] {
        let r = report(&mut net, &board, d, head);
        assert_eq!(r.class, SyncClass::Hard, "device {d}");
        assert_eq!(r.own, vec![member(&net, 1), member(&net, 2), member(&net, 3)], "device {d}: Bob's refusal counts");
        assert_eq!(r.rebooter, Some(member(&net, 2)), "device {d}: Carol, not Bob, who left");
    }
    // Dave leaves as well: Carol alone holds the album, and still reboots.
    let farewell = {
        let n = &mut net.nodes[3];
        let album = n.album.as_mut().unwrap();
        let farewell = album.farewell(&n.t.provider, &n.t.me).unwrap().unwrap();
        album.rebootstrap(&n.t.provider).unwrap();
        farewell
    };
    net.nodes[3].album = None;
    board.insert(3, farewell);
    let r = report(&mut net, &board, 2, head);
    assert_eq!((r.class, r.rebooter), (SyncClass::Hard, Some(member(&net, 2))));
    // Without the farewells she would have heard nobody and been told to
    // re-bootstrap herself: the album's last copy.
    let r = report(&mut net, &Board::new(), 2, head);
    assert_eq!(r.class, SyncClass::Weak { minority: true });
}

/// A committer's crypto that seals the path secret meant for one public key
/// wrongly: garbage (the recipient cannot decrypt it) or a different secret
/// (it decrypts, and the keys it derives do not match the path). Everything
/// else, signature and confirmation tag included, is computed honestly over
/// the tampered path, so the commit is well formed and correctly signed:
/// only the targeted member can tell.
mod tamper {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use capsule_mls::MemoryProvider;
    use openmls::prelude::tls_codec::SecretVLBytes;
    use openmls::prelude::*;

    type Inner = <MemoryProvider as OpenMlsProvider>::CryptoProvider;

    pub(super) struct Crypto<'a> {
        inner: &'a Inner,
        target: Vec<u8>,
        wrong_secret: bool,
        hits: AtomicUsize,
    }

    pub(super) struct Provider<'a> {
        inner: &'a MemoryProvider,
        crypto: Crypto<'a>,
    }

    impl<'a> Provider<'a> {
        pub(super) fn new(inner: &'a MemoryProvider, target: Vec<u8>, wrong_secret: bool) -> Self {
            let crypto = Crypto { inner: inner.crypto(), target, wrong_secret, hits: AtomicUsize::new(0) };
            Self { inner, crypto }
        }

        /// How many seals to the target were tampered with.
        pub(super) fn hits(&self) -> usize {
            self.crypto.hits.load(Ordering::Relaxed)
        }
    }

    impl<'a> OpenMlsProvider for Provider<'a> {
        type CryptoProvider = Crypto<'a>;
        type RandProvider = <MemoryProvider as OpenMlsProvider>::RandProvider;
        type StorageProvider = <MemoryProvider as OpenMlsProvider>::StorageProvider;

        fn storage(&self) -> &Self::StorageProvider {
            self.inner.storage()
        }

        fn crypto(&self) -> &Self::CryptoProvider {
            &self.crypto
        }

        fn rand(&self) -> &Self::RandProvider {
            self.inner.rand()
        }
    }

    impl OpenMlsCrypto for Crypto<'_> {
        fn hpke_seal(
            &self,
            config: HpkeConfig,
            pk_r: &[u8],
            info: &[u8],
            aad: &[u8],
            ptxt: &[u8],
        ) -> Result<HpkeCiphertext, CryptoError> {
            if pk_r != self.target.as_slice() {
                return self.inner.hpke_seal(config, pk_r, info, aad, ptxt);
            }
            self.hits.fetch_add(1, Ordering::Relaxed);
            if self.wrong_secret {
                // Same length, so it still decodes as a path secret.
                let mut other = ptxt.to_vec();
                if let Some(last) = other.last_mut() {
                    *last ^= 0x5a;
                }
                self.inner.hpke_seal(config, pk_r, info, aad, &other)
            } else {
                let mut sealed = self.inner.hpke_seal(config, pk_r, info, aad, ptxt)?;
                let mut bytes = sealed.ciphertext.as_slice().to_vec();
                if let Some(first) = bytes.first_mut() {
                    *first ^= 0x5a;
                }
                sealed.ciphertext = bytes.into();
                Ok(sealed)
            }
        }

        fn supports(&self, ciphersuite: Ciphersuite) -> Result<(), CryptoError> {
            self.inner.supports(ciphersuite)
        }
        fn supported_ciphersuites(&self) -> Vec<Ciphersuite> {
            self.inner.supported_ciphersuites()
        }
        fn hkdf_extract(&self, h: HashType, salt: &[u8], ikm: &[u8]) -> Result<SecretVLBytes, CryptoError> {
            self.inner.hkdf_extract(h, salt, ikm)
        }
        fn hmac(&self, h: HashType, key: &[u8], message: &[u8]) -> Result<SecretVLBytes, CryptoError> {
            self.inner.hmac(h, key, message)
        }
        fn hkdf_expand(&self, h: HashType, prk: &[u8], info: &[u8], len: usize) -> Result<SecretVLBytes, CryptoError> {
            self.inner.hkdf_expand(h, prk, info, len)
        }
        fn hash(&self, h: HashType, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
            self.inner.hash(h, data)
        }
        fn aead_encrypt(&self, a: AeadType, k: &[u8], d: &[u8], n: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
            self.inner.aead_encrypt(a, k, d, n, aad)
        }
        fn aead_decrypt(&self, a: AeadType, k: &[u8], c: &[u8], n: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
            self.inner.aead_decrypt(a, k, c, n, aad)
        }
        fn signature_key_gen(&self, alg: SignatureScheme) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
            self.inner.signature_key_gen(alg)
        }
        fn verify_signature(&self, alg: SignatureScheme, d: &[u8], pk: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
            self.inner.verify_signature(alg, d, pk, sig)
        }
        fn sign(&self, alg: SignatureScheme, data: &[u8], key: &[u8]) -> Result<Vec<u8>, CryptoError> {
            self.inner.sign(alg, data, key)
        }
        fn hpke_open(
            &self,
            config: HpkeConfig,
            input: &HpkeCiphertext,
            sk_r: &[u8],
            info: &[u8],
            aad: &[u8],
        ) -> Result<Vec<u8>, CryptoError> {
            self.inner.hpke_open(config, input, sk_r, info, aad)
        }
        fn hpke_setup_sender_and_export(
            &self,
            config: HpkeConfig,
            pk_r: &[u8],
            info: &[u8],
            context: &[u8],
            len: usize,
        ) -> Result<(KemOutput, ExporterSecret), CryptoError> {
            self.inner.hpke_setup_sender_and_export(config, pk_r, info, context, len)
        }
        fn hpke_setup_receiver_and_export(
            &self,
            config: HpkeConfig,
            enc: &[u8],
            sk_r: &[u8],
            info: &[u8],
            context: &[u8],
            len: usize,
        ) -> Result<ExporterSecret, CryptoError> {
            self.inner.hpke_setup_receiver_and_export(config, enc, sk_r, info, context, len)
        }
        fn derive_hpke_keypair(&self, config: HpkeConfig, ikm: &[u8]) -> Result<HpkeKeyPair, CryptoError> {
            self.inner.derive_hpke_keypair(config, ikm)
        }
    }
}

/// Device `d`'s own leaf encryption key, as OpenMLS's tree holds it.
fn leaf_encryption_key(net: &Net, d: usize) -> Vec<u8> {
    use openmls::prelude::{GroupId, MlsGroup, OpenMlsProvider as _};
    let group_id = GroupId::from_slice(&net.album(d).album().group_id());
    let group = MlsGroup::load(net.nodes[d].t.provider.storage(), &group_id).unwrap().unwrap();
    let own = group.own_leaf_index();
    group.members().find(|m| m.index == own).unwrap().encryption_key
}

/// A commit whose path secret only some members can decrypt (the committer's
/// client tampers with one member's HPKE ciphertext, or seals it a different
/// secret, and signs the result honestly): the others merge it, the target
/// refuses it and is quarantined naming the committer; its fingerprint says
/// what it refused, so the members that merged it see it as another side (not
/// merely behind), name one coordinator, and re-add it. Everyone ends on one
/// epoch with the same keyring; the photo sealed before the split opens.
#[test]
fn a_commit_whose_path_secret_only_some_members_can_decrypt_is_detected_and_healed_by_readding() {
    for wrong_secret in [false, true] {
        let mut net = four();
        let all = [0, 1, 2, 3];
        let mut rng = <chacha20::ChaCha20Rng as rand_core::SeedableRng>::from_seed([8; 32]);
        let photo = seal_photo(net.album(0).album().keyring().current(), &ALBUM, b"before", &mut rng).unwrap();
        // Bob's modified client targets Dave (Carol and Dave share a copath
        // node with no key of its own, so each gets a ciphertext of their own).
        let dave_key = leaf_encryption_key(&net, 3);
        net.propose(1, Change::RotateAmk);
        let hits = {
            let validation = Validation { trust: &net.dir.trust, now: NOW };
            let n = &mut net.nodes[1];
            let evil = tamper::Provider::new(&n.t.provider, dave_key.clone(), wrong_secret);
            let cx = Context { provider: &evil, device: &n.t.me, validation };
            n.album.as_mut().unwrap().drive(cx, &mut n.chain, &net.clock).unwrap();
            evil.hits()
        };
        assert_eq!(hits, 1, "exactly Dave's path secret is tampered with");
        let split = net.album(1).album().epoch();
        if !wrong_secret {
            // Dave refuses it before Alice and Carol replayed it: members
            // merely behind are no fellow refusers (counted as such, they
            // would outvote Bob and send Dave to reboot from his refusal).
            assert!(matches!(net.reconcile(3).unwrap(), ReconcileOutcome::Diverged { .. }));
            let mut early = Board::new();
            publish(&mut net, &mut early, &all);
            let r = reconciled_report(&mut net, &early, 3);
            assert_eq!(r.class, SyncClass::Weak { minority: true });
            assert_eq!(r.own, vec![member(&net, 3)]);
            assert_eq!(r.unheard, vec![member(&net, 0), member(&net, 2)]);
        }
        for d in [0, 2] {
            assert!(matches!(net.reconcile(d).unwrap(), ReconcileOutcome::Reconciled { .. }), "device {d}");
            assert_eq!(net.album(d).album().epoch(), split);
        }
        if wrong_secret {
            let outcome = net.reconcile(3).unwrap();
            assert!(matches!(outcome, ReconcileOutcome::Diverged { .. }), "{wrong_secret}: {outcome:?}");
        }
        let refused = net.album(3).quarantine().unwrap().invalid_commit.unwrap();
        assert_eq!(refused.committer, Some(member(&net, 1)), "the committer is named");
        assert_eq!(net.album(3).refused_commit(), Some(refused.commit_hash));

        let mut board = Board::new();
        publish(&mut net, &mut board, &all);
        // Dave is the odd one out: re-bootstrap.
        assert_eq!(reconciled_report(&mut net, &board, 3).class, SyncClass::Weak { minority: true });
        // The others see him refusing what they merged: another side.
        for d in [0, 1, 2] {
            let r = reconciled_report(&mut net, &board, d);
            assert_eq!(r.class, SyncClass::Weak { minority: false }, "device {d}");
            assert_eq!(r.others, vec![Partition { epoch: split, commit: None, members: vec![member(&net, 3)] }]);
            assert_eq!(r.readds, vec![Readd { member: member(&net, 3), by: member(&net, 0) }], "device {d}");
        }
        let discarded = with(&mut net, 3, |a, cx| a.rebootstrap(cx.provider).unwrap());
        assert_eq!(discarded.epoch.next(), Some(split));
        assert_eq!(
            discarded.divergence.and_then(|d| d.invalid_commit).map(|i| i.commit_hash),
            Some(refused.commit_hash)
        );
        readded_by_the_coordinator(&mut net, &board, 3, split);
        for d in all {
            let opened = open_photo(net.album(d).album().keyring(), &ALBUM, &photo).unwrap();
            assert_eq!(opened.as_slice(), b"before");
        }
    }
}

/// The server is restored from an old backup: its chain is behind every
/// device, and nobody is left at its head to re-add anyone. Every device is
/// quarantined, hears only members that merged what it merged, and reports
/// `Hard` with one rebooter, who reboots the album from where everyone is;
/// nothing merged is lost.
#[test]
fn a_chain_rolled_back_behind_everyone_is_healed_by_a_reboot() {
    let mut net = four();
    for _ in 0..3 {
        net.propose(0, Change::RotateAmk);
        net.drive(0).unwrap();
    }
    net.sync_all();
    net.assert_converged();
    let mut rng = <chacha20::ChaCha20Rng as rand_core::SeedableRng>::from_seed([9; 32]);
    let photo = seal_photo(net.album(0).album().keyring().current(), &ALBUM, b"latest", &mut rng).unwrap();
    let held_before: Vec<_> = net.album(0).album().keyring().held().map(|(v, _)| v).collect();
    // The backup holds the chain up to two commits ago.
    let restored = MemoryServer::new();
    restored.create_album(ALBUM.as_bytes(), Epoch::ZERO);
    let entries = net.server.entries(ALBUM.as_bytes());
    let mut copy = restored.connect(ALBUM.as_bytes());
    for e in entries.iter().take(entries.len() - 2).cloned() {
        copy.submit(&Submission { epoch: e.epoch, commit: e.commit, welcome: e.welcome, bundle: e.bundle }).unwrap();
    }
    for d in 0..4 {
        net.nodes[d].chain = FaultyChain::new(TestChain::Memory(restored.connect(ALBUM.as_bytes())), net.clock.clone());
        assert!(matches!(net.reconcile(d).unwrap(), ReconcileOutcome::Diverged { .. }), "device {d}");
    }
    let mut board = Board::new();
    publish(&mut net, &mut board, &[0, 1, 2, 3]);
    for d in 0..4 {
        let r = reconciled_report(&mut net, &board, d);
        assert_eq!(r.class, SyncClass::Hard, "device {d}");
        assert_eq!(r.rebooter, Some(member(&net, 0)), "device {d}");
    }
    let fresh: Vec<(Member, Vec<u8>)> =
        (1..4).map(|d| (member(&net, d), net.nodes[d].t.key_package().unwrap())).collect();
    let rebooted = with(&mut net, 0, |a, cx| a.reboot(cx, &fresh).unwrap());
    switch_to_reboot(&mut net, 0, rebooted, &[1, 2, 3]);
    let first = net.album(0).album();
    for d in 0..4 {
        let a = net.album(d).album();
        assert_eq!(a.epoch_authenticator(), first.epoch_authenticator(), "device {d}");
        let held: Vec<_> = a.keyring().held().map(|(v, _)| v).collect();
        assert!(held_before.iter().all(|v| held.contains(v)), "device {d} lost a version");
        assert_eq!(open_photo(a.keyring(), &ALBUM, &photo).unwrap().as_slice(), b"latest", "device {d}");
    }
}
