//! The seed's resilience tests and more: lost commits, divergence, concurrent rotation.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code

mod common;

use core::time::Duration;

use capsule_amk::HistoryPolicy;
use capsule_mls::Epoch;
use capsule_mls::testkit::uid;
use capsule_resilience::testkit::{self, Fault};
use capsule_resilience::*;
use common::*;

/// Alice (admin: devices 0 and 1) and Bob (device 2).
fn album() -> Net {
    let mut net = Net::new(40);
    let alice = net.user(1);
    let a0 = net.device(alice);
    net.create(a0, HistoryPolicy::Full, &[alice]);
    let a1 = net.device(alice);
    let kp = net.nodes[a1].t.key_package().unwrap();
    net.propose(a0, Change::AddDevice { key_package: kp });
    net.drive(a0).unwrap();
    net.join_at(a1, Epoch(0));
    net.add_user(a0, 2, 1);
    net.sync_all();
    net.assert_converged();
    net
}

fn state(net: &Net, d: usize, id: IntentId) -> IntentState {
    net.album(d).intent(id).unwrap().state.clone()
}

fn secs(s: u64) -> Timestamp {
    Timestamp(s * 1000)
}

#[test]
fn a_dropped_request_is_retried_after_the_detection_timeout() {
    let mut net = album();
    let entries = net.server.entries(ALBUM.as_bytes()).len();
    let id = net.propose(0, Change::RotateAmk);
    net.nodes[0].chain.on_next_submit(Fault::DropRequest);
    net.drive(0).unwrap();
    assert!(matches!(state(&net, 0, id), IntentState::Submitted { retries: 0, .. }));
    assert_eq!(net.album(0).status(), AlbumStatus::Syncing);
    assert_eq!(net.album(0).next_deadline(), Some(secs(30)));
    // Not before the detection timeout...
    net.clock.set(secs(29));
    assert!(net.drive(0).unwrap().is_empty());
    // ...then the same commit again, which lands.
    net.clock.set(secs(30));
    let events = net.drive(0).unwrap();
    assert!(events.contains(&Event::Submitted { intent: id, retry: 1, at: secs(30) }), "{events:?}");
    assert!(matches!(state(&net, 0, id), IntentState::Confirmed { .. }));
    assert_eq!(net.server.entries(ALBUM.as_bytes()).len(), entries + 1, "exactly one new epoch");
    net.sync_all();
    net.assert_converged();
    assert_eq!(net.album(0).status(), AlbumStatus::InSync);
}

#[test]
fn an_answer_lost_after_the_server_stored_the_commit_is_harmless() {
    let mut net = album();
    let entries = net.server.entries(ALBUM.as_bytes()).len();
    let id = net.propose(0, Change::RotateAmk);
    net.nodes[0].chain.on_next_submit(Fault::DropAnswer);
    net.drive(0).unwrap();
    assert_eq!(net.server.entries(ALBUM.as_bytes()).len(), entries + 1, "stored, answer lost");
    net.clock.set(secs(30));
    let events = net.drive(0).unwrap();
    // Seen in the chain: confirmed without a second submission.
    assert!(events.iter().any(|e| matches!(e, Event::Confirmed { intent, .. } if *intent == id)), "{events:?}");
    assert!(!events.iter().any(|e| matches!(e, Event::Submitted { .. })));
    // A duplicated retry is harmless too: the chain answers with the commit's position.
    let id2 = net.propose(0, Change::RotateAmk);
    net.nodes[0].chain.on_next_submit(Fault::Duplicate);
    net.drive(0).unwrap();
    assert!(matches!(state(&net, 0, id2), IntentState::Confirmed { .. }));
    assert_eq!(net.server.entries(ALBUM.as_bytes()).len(), entries + 2, "no duplicate epoch");
    net.sync_all();
    net.assert_converged();
}

#[test]
fn the_backoff_schedule_is_followed_then_the_change_is_surfaced_and_later_completed() {
    let mut net = album();
    let id = net.propose(1, Change::RotateAmk);
    net.nodes[1].chain.partition(true);
    let mut submitted_at = Vec::new();
    let mut surfaced_at = None;
    net.clock.set(secs(0));
    // Follow the album's own deadlines, as an application's timer would.
    for _ in 0..10 {
        for e in net.drive(1).unwrap() {
            match e {
                Event::Submitted { at, .. } => submitted_at.push(at),
                Event::Surfaced { at, .. } => surfaced_at = Some(at),
                _ => {}
            }
        }
        match net.album(1).next_deadline() {
            Some(t) => net.clock.set(t),
            None => break,
        }
    }
    // 30 s detection, then re-submissions waiting 30 s, 2 min, 10 min.
    assert_eq!(submitted_at, vec![secs(0), secs(30), secs(60), secs(180)]);
    assert_eq!(surfaced_at, Some(secs(780)));
    assert!(matches!(state(&net, 1, id), IntentState::Surfaced { .. }));
    assert_eq!(net.album(1).status(), AlbumStatus::Surfaced);
    // Never silently abandoned: connectivity returns, the same change completes.
    net.clock.advance(Duration::from_secs(3600));
    net.nodes[1].chain.partition(false);
    net.nodes[1].album.as_mut().unwrap().connectivity_restored(net.clock.now());
    net.drive(1).unwrap();
    assert!(matches!(state(&net, 1, id), IntentState::Confirmed { .. }));
    net.sync_all();
    net.assert_converged();
}

#[test]
fn a_device_behind_replays_to_the_servers_state() {
    let mut net = album();
    net.nodes[2].chain.partition(true);
    for _ in 0..3 {
        net.propose(0, Change::RotateAmk);
        net.drive(0).unwrap();
    }
    assert!(net.reconcile(2).is_err(), "unreachable while partitioned");
    net.nodes[2].chain.partition(false);
    let before = net.album(2).album().epoch();
    match net.reconcile(2).unwrap() {
        ReconcileOutcome::Reconciled { applied_commits } => {
            let chain = net.server.entries(ALBUM.as_bytes());
            let expected: Vec<_> =
                chain.iter().skip(usize::try_from(before.0).unwrap()).map(|e| e.commit_hash).collect();
            assert_eq!(applied_commits, expected, "every missed commit, in order");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(net.reconcile(2).unwrap(), ReconcileOutcome::UpToDate);
    net.sync_all();
    net.assert_converged();
}

#[test]
fn a_device_ahead_of_the_chain_is_diverged_and_quarantined() {
    let mut net = album();
    // Bob's state mutates without the server: a commit merged locally, never persisted.
    let validation = capsule_mls::Validation { trust: &net.dir.trust, now: capsule_mls::testkit::NOW };
    let node = &mut net.nodes[2];
    let mut album = node.album.take().unwrap().into_album();
    album.stage(&node.t.provider, &node.t.me, &Change::RotateAmk, validation).unwrap();
    album.confirm(&node.t.provider).unwrap();
    node.album = Some(ResilientAlbum::new(album, RetryPolicy::default()));
    let local = net.album(2).album().epoch();
    let outcome = net.reconcile(2).unwrap();
    assert_eq!(outcome, ReconcileOutcome::Diverged { local_epoch: local, server_epoch: local.previous().unwrap() });
    assert_eq!(
        net.album(2).status(),
        AlbumStatus::Quarantined { local_epoch: local, server_epoch: local.previous().unwrap() }
    );
    // Quarantine: no sends.
    net.propose(2, Change::RotateAmk);
    assert!(matches!(net.drive(2), Err(ResilienceError::Quarantined { .. })));
    // Nothing discarded: the state is still there for investigation.
    assert_eq!(net.album(2).album().epoch(), local);
}

#[test]
fn a_device_beside_the_chain_is_diverged() {
    let mut net = album();
    // Bob merges his own rotation locally while the server takes Alice's for the same epoch.
    let validation = capsule_mls::Validation { trust: &net.dir.trust, now: capsule_mls::testkit::NOW };
    let node = &mut net.nodes[2];
    let mut album = node.album.take().unwrap().into_album();
    album.stage(&node.t.provider, &node.t.me, &Change::RotateAmk, validation).unwrap();
    album.confirm(&node.t.provider).unwrap();
    node.album = Some(ResilientAlbum::new(album, RetryPolicy::default()));
    net.propose(0, Change::RotateAmk);
    net.drive(0).unwrap();
    let local = net.album(2).album().epoch();
    assert_eq!(net.reconcile(2).unwrap(), ReconcileOutcome::Diverged { local_epoch: local, server_epoch: local });
}

#[test]
fn a_removed_device_or_a_pruned_chain_is_unrecoverable() {
    let mut net = album();
    let bob = net.nodes[2].t.user;
    net.propose(0, Change::RemoveUser { user: bob });
    net.drive(0).unwrap();
    assert_eq!(net.reconcile(2).unwrap(), ReconcileOutcome::Unrecoverable);
    assert_eq!(net.album(2).status(), AlbumStatus::NeedsRebootstrap);
    // Alice's second device was offline while the chain was pruned past its epoch.
    net.nodes[1].chain.partition(true);
    net.propose(0, Change::RotateAmk);
    net.drive(0).unwrap();
    net.server.prune_before(ALBUM.as_bytes(), net.album(0).album().epoch());
    net.nodes[1].chain.partition(false);
    assert_eq!(net.reconcile(1).unwrap(), ReconcileOutcome::Unrecoverable);
}

/// A device that joined and has applied nothing checks the chain's commit
/// before its epoch against its Welcome; when the chain was pruned of exactly
/// that commit, it cannot check, but everything after is there: it reads
/// from its own epoch and catches up (remembered across a restart) instead
/// of being sent to re-bootstrap.
#[test]
fn a_joiner_whose_join_commit_was_pruned_still_catches_up() {
    let mut net = album();
    let joiner = net.add_user(0, 9, 1)[0];
    let joined = net.album(joiner).album().epoch();
    net.nodes[joiner].chain.partition(true);
    net.propose(0, Change::RotateAmk);
    net.drive(0).unwrap();
    net.server.prune_before(ALBUM.as_bytes(), joined);
    net.nodes[joiner].chain.partition(false);
    let outcome = net.reconcile(joiner).unwrap();
    assert!(matches!(outcome, ReconcileOutcome::Reconciled { .. }), "{outcome:?}");
    let (a, b) = (net.album(0).album(), net.album(joiner).album());
    assert_eq!((b.epoch(), b.epoch_authenticator()), (a.epoch(), a.epoch_authenticator()));
    // The flag survives a restart: the next reconcile reads from its epoch.
    let node = &mut net.nodes[joiner];
    let album = node.album.take().unwrap();
    let record = album.to_record().unwrap();
    node.album = Some(ResilientAlbum::from_record(album.into_album(), &record, RetryPolicy::default()).unwrap());
    assert_eq!(net.reconcile(joiner).unwrap(), ReconcileOutcome::UpToDate);
}

#[test]
fn concurrent_rotations_serialize_and_the_loser_replays_on_the_winner() {
    let mut net = album();
    let v0 = net.album(0).album().keyring().current_version();
    // Alice's two admin devices rotate the same epoch.
    let first = net.propose(0, Change::RotateAmk);
    let second = net.propose(1, Change::RotateAmk);
    net.drive(0).unwrap();
    let events = net.drive(1).unwrap();
    // Serialized: device 1 lost the epoch, processed the winner, and, without
    // asking anyone, replayed its rotation against the new epoch.
    let superseded = events.iter().position(|e| *e == Event::Superseded { intent: second });
    let replayed = events.iter().position(|e| matches!(e, Event::Confirmed { intent, .. } if *intent == second));
    assert!(superseded.is_some() && superseded < replayed, "{events:?}");
    let reached = net.album(1).album().epoch();
    assert!(matches!(state(&net, 0, first), IntentState::Confirmed { epoch } if epoch.next() == Some(reached)));
    assert_eq!(net.album(1).intent(second).unwrap().reproposals, 1);
    assert!(matches!(state(&net, 1, second), IntentState::Confirmed { .. }));
    net.sync_all();
    net.assert_converged();
    let v = net.album(0).album().keyring().current_version();
    assert_eq!(v.get(), v0.get() + 2, "two rotations, two versions, one key each");
}

#[test]
fn delayed_and_reordered_submissions_never_make_a_second_epoch() {
    let mut net = album();
    let entries = net.server.entries(ALBUM.as_bytes()).len();
    // Delayed past the detection timeout: the retry lands first, the late copy is absorbed.
    let id = net.propose(0, Change::RotateAmk);
    net.nodes[0].chain.on_next_submit(Fault::Delay(Duration::from_secs(45)));
    net.drive(0).unwrap();
    assert_eq!(net.server.entries(ALBUM.as_bytes()).len(), entries, "still in the network");
    net.clock.set(secs(30));
    net.drive(0).unwrap();
    assert!(matches!(state(&net, 0, id), IntentState::Confirmed { .. }));
    net.clock.set(secs(60));
    assert_eq!(net.reconcile(0).unwrap(), ReconcileOutcome::UpToDate, "the late copy changed nothing");
    assert_eq!(net.server.entries(ALBUM.as_bytes()).len(), entries + 1);
    // Reordered behind the retry: the same.
    let id = net.propose(0, Change::RotateAmk);
    net.nodes[0].chain.on_next_submit(Fault::Reorder);
    net.drive(0).unwrap();
    net.clock.set(secs(90));
    net.drive(0).unwrap();
    assert!(matches!(state(&net, 0, id), IntentState::Confirmed { .. }));
    assert_eq!(net.server.entries(ALBUM.as_bytes()).len(), entries + 2);
    assert!(net.server.submissions(ALBUM.as_bytes()) >= 4, "every copy reached the server");
    net.sync_all();
    net.assert_converged();
}

#[test]
fn a_refused_change_fails_with_its_reason_and_later_changes_go_on() {
    let mut net = album();
    // A KeyPackage that does not verify, then a change Bob (not an admin) may not make.
    let carol = net.user(3);
    let bad = net.propose(0, Change::AddUser { user: carol, directory: vec![b"not a key package".to_vec()] });
    let rotate = net.propose(0, Change::RotateAmk);
    let events = net.drive(0).unwrap();
    assert!(events.contains(&Event::Failed { intent: bad, refusal: Refusal::BadKeyPackage }), "{events:?}");
    assert!(matches!(state(&net, 0, bad), IntentState::Failed { refusal: Refusal::BadKeyPackage, .. }));
    // Not wedged: the next change was committed in the same drive.
    assert!(matches!(state(&net, 0, rotate), IntentState::Confirmed { .. }));
    assert_eq!(net.album(0).status(), AlbumStatus::InSync);
    let alice = net.user(1);
    let unauthorized = net.propose(2, Change::RemoveUser { user: alice });
    net.sync_all();
    net.drive(2).unwrap();
    assert!(matches!(state(&net, 2, unauthorized), IntentState::Failed { refusal: Refusal::Unauthorized, .. }));
    net.sync_all();
    net.assert_converged();
}

#[test]
fn a_pending_change_can_be_cancelled_and_a_change_in_flight_cannot() {
    let mut net = album();
    let entries = net.server.entries(ALBUM.as_bytes()).len();
    let cancelled = net.propose(0, Change::RotateAmk);
    net.nodes[0].album.as_mut().unwrap().cancel(cancelled).unwrap();
    assert_eq!(state(&net, 0, cancelled), IntentState::Cancelled);
    assert!(net.drive(0).unwrap().is_empty(), "nothing to send");
    assert_eq!(net.server.entries(ALBUM.as_bytes()).len(), entries);
    assert_eq!(net.album(0).status(), AlbumStatus::InSync);
    // Sent, answer lost: it may be in the chain, so it cannot be cancelled.
    let sent = net.propose(0, Change::RotateAmk);
    net.nodes[0].chain.on_next_submit(Fault::DropAnswer);
    net.drive(0).unwrap();
    let before = state(&net, 0, sent);
    let refused = net.nodes[0].album.as_mut().unwrap().cancel(sent);
    assert!(matches!(refused, Err(ResilienceError::InFlight)), "{refused:?}");
    assert_eq!(state(&net, 0, sent), before, "a refused cancel changes nothing");
    // The chain settles it: it had landed.
    net.clock.set(secs(30));
    net.drive(0).unwrap();
    assert!(matches!(state(&net, 0, sent), IntentState::Confirmed { .. }));
    assert!(matches!(net.nodes[0].album.as_mut().unwrap().cancel(IntentId(99)), Err(ResilienceError::UnknownIntent)));
}

/// What a lying server does to the honest entries it fetched.
type Lie = fn(&mut Vec<ChainEntry>);

/// A server that answers fetches with `lie` applied to the honest entries.
struct Liar<'a> {
    inner: &'a mut testkit::FaultyChain<testkit::TestChain>,
    lie: Lie,
}

impl CommitChain for Liar<'_> {
    fn submit(&mut self, s: &Submission) -> core::result::Result<SubmitAnswer, ChainError> {
        self.inner.submit(s)
    }
    fn fetch(&mut self, from: Epoch) -> core::result::Result<Vec<ChainEntry>, ChainError> {
        let mut entries = self.inner.fetch(from)?;
        (self.lie)(&mut entries);
        Ok(entries)
    }
    fn head(&mut self) -> core::result::Result<Epoch, ChainError> {
        self.inner.head()
    }
    fn welcome(&mut self, epoch: Epoch) -> core::result::Result<Option<WelcomeBlobs>, ChainError> {
        self.inner.welcome(epoch)
    }
    fn post_fingerprint(&mut self, fingerprint: &[u8]) -> core::result::Result<(), ChainError> {
        self.inner.post_fingerprint(fingerprint)
    }
    fn fingerprints(&mut self) -> core::result::Result<Vec<Vec<u8>>, ChainError> {
        self.inner.fingerprints()
    }
}

fn rehash(e: &mut ChainEntry) {
    e.commit_hash = capsule_mls::CommitHash::of(&e.commit);
}

#[test]
fn a_bad_answer_from_the_server_is_counted_not_a_divergence() {
    let mut net = album();
    net.nodes[2].chain.partition(true);
    for _ in 0..3 {
        net.propose(0, Change::RotateAmk);
        net.drive(0).unwrap();
    }
    net.nodes[2].chain.partition(false);
    let lies: [(Lie, BadAnswer); 6] = [
        // The commit the device applied last, served again one position on.
        (
            |e| {
                let epoch = e[1].epoch;
                e[1] = ChainEntry { epoch, ..e[0].clone() };
            },
            BadAnswer::WrongPosition,
        ),
        (|e| e[1].commit = b"not a commit".to_vec(), BadAnswer::HashMismatch),
        (
            |e| {
                e[1].commit = b"not a commit".to_vec();
                rehash(&mut e[1]);
            },
            BadAnswer::Undecodable,
        ),
        (|e| e.swap(1, 2), BadAnswer::OutOfOrder),
        (
            |e| {
                e.remove(1);
            },
            BadAnswer::OutOfOrder,
        ),
        // The next epoch's commit, relabelled to sit here.
        (
            |e| {
                e[1].commit = e[2].commit.clone();
                rehash(&mut e[1]);
            },
            BadAnswer::WrongPosition,
        ),
    ];
    for (n, (lie, expected)) in lies.into_iter().enumerate() {
        let validation = capsule_mls::Validation { trust: &net.dir.trust, now: capsule_mls::testkit::NOW };
        let node = &mut net.nodes[2];
        let cx = Context { provider: &node.t.provider, device: &node.t.me, validation };
        let mut liar = Liar { inner: &mut node.chain, lie };
        let got = node.album.as_mut().unwrap().reconcile_with_server(cx, &mut liar);
        assert!(matches!(got, Err(ResilienceError::Chain(ChainError::BadAnswer(b))) if b == expected), "{n}: {got:?}");
        let album = net.album(2);
        assert_eq!(album.server_faults(), u64::try_from(n).unwrap() + 1);
        assert!(album.quarantine().is_none(), "{n}: a bad answer is not a divergence");
        // Nothing it was wrong about changed (an honest entry before the bad one may apply).
        assert_eq!(album.status(), AlbumStatus::InSync);
    }
    // The next honest answer brings the device to the head, without anyone acting.
    assert!(matches!(net.reconcile(2).unwrap(), ReconcileOutcome::Reconciled { .. } | ReconcileOutcome::UpToDate));
    net.sync_all();
    net.assert_converged();
}

/// A server that takes submissions (and answers them) and then goes silent.
struct AnswersThenSilence<'a> {
    inner: &'a mut testkit::FaultyChain<testkit::TestChain>,
    requests: u32,
}

impl CommitChain for AnswersThenSilence<'_> {
    fn submit(&mut self, s: &Submission) -> core::result::Result<SubmitAnswer, ChainError> {
        self.requests += 1;
        if self.requests == 1 { self.inner.submit(s) } else { Err(ChainError::Unavailable) }
    }
    fn fetch(&mut self, _: Epoch) -> core::result::Result<Vec<ChainEntry>, ChainError> {
        self.requests += 1;
        Err(ChainError::Unavailable)
    }
    fn head(&mut self) -> core::result::Result<Epoch, ChainError> {
        self.requests += 1;
        Err(ChainError::Unavailable)
    }
    fn welcome(&mut self, _: Epoch) -> core::result::Result<Option<WelcomeBlobs>, ChainError> {
        self.requests += 1;
        Err(ChainError::Unavailable)
    }
    fn post_fingerprint(&mut self, fingerprint: &[u8]) -> core::result::Result<(), ChainError> {
        self.inner.post_fingerprint(fingerprint)
    }
    fn fingerprints(&mut self) -> core::result::Result<Vec<Vec<u8>>, ChainError> {
        self.inner.fingerprints()
    }
}

#[test]
fn a_lost_race_then_silence_follows_the_schedule_instead_of_spinning() {
    let mut net = album();
    // Device 0 wins the epoch; device 1, behind, then loses it and the network dies.
    net.propose(0, Change::RotateAmk);
    net.drive(0).unwrap();
    let id = net.propose(1, Change::RotateAmk);
    let mut requests = 0;
    let mut surfaced = false;
    for _ in 0..12 {
        let validation = capsule_mls::Validation { trust: &net.dir.trust, now: capsule_mls::testkit::NOW };
        let node = &mut net.nodes[1];
        let cx = Context { provider: &node.t.provider, device: &node.t.me, validation };
        let mut chain = AnswersThenSilence { inner: &mut node.chain, requests };
        let album = node.album.as_mut().unwrap();
        let _ = album.drive(cx, &mut chain, &net.clock);
        requests = chain.requests;
        let album = net.album(1);
        if matches!(album.intent(id).unwrap().state, IntentState::Surfaced { .. }) {
            surfaced = true;
            break;
        }
        // An application sleeping until the deadline never gets "now" again and again.
        let next = album.next_deadline().unwrap();
        assert!(next > net.clock.now(), "a deadline in the past: the app would spin");
        net.clock.set(next);
    }
    assert!(surfaced, "the change reached 'couldn't sync' instead of syncing forever");
    // The conflict answer, one fetch, then one fetch and one re-send per check: no loop.
    assert!(requests <= 2 + 2 * 4, "{requests} requests");
}

/// "This commit is invalid" is not "I cannot verify this yet": a commit whose
/// added member is certified by a key that is not the user's trusted one
/// (Alice's modified client trusts an impostor's key for Carol) quarantines
/// the honest devices, and the quarantine names the commit and its committer;
/// a commit naming a user the trust store does not know yet changes nothing
/// and is applied once the trust store learns the key.
#[test]
fn an_invalid_commit_is_reported_with_its_committer_and_an_unknown_identity_waits() {
    let mut net = album();
    let carol = net.user(3);
    let mut impostor = capsule_mls::testkit::Directory::new(99);
    assert_eq!(impostor.user(3).unwrap(), carol);
    let fake = impostor.device(carol).unwrap();
    let mut modified = net.dir.trust.clone();
    modified.insert(carol, impostor.trust[&carol].clone());
    net.propose(0, Change::AddUser { user: carol, directory: vec![fake.key_package().unwrap()] });
    {
        let validation = capsule_mls::Validation { trust: &modified, now: capsule_mls::testkit::NOW };
        let n = &mut net.nodes[0];
        let cx = Context { provider: &n.t.provider, device: &n.t.me, validation };
        n.album.as_mut().unwrap().drive(cx, &mut n.chain, &net.clock).unwrap();
    }
    let alice0 = Member { user: net.nodes[0].t.user, device: net.nodes[0].t.id };
    let head = net.server.entries(ALBUM.as_bytes()).last().unwrap().clone();
    for d in [1, 2] {
        let outcome = net.reconcile(d).unwrap();
        assert!(matches!(outcome, ReconcileOutcome::Diverged { .. }), "{outcome:?}");
        let divergence = net.album(d).quarantine().unwrap();
        let invalid = divergence.invalid_commit.unwrap();
        assert_eq!(
            (invalid.epoch, invalid.commit_hash, invalid.committer),
            (head.epoch, head.commit_hash, Some(alice0))
        );
        let events = net.nodes[d].album.as_mut().unwrap().take_events();
        assert!(events.iter().any(|e| matches!(e, Event::InvalidCommit { commit, .. } if *commit == invalid)));
    }

    // The real Carol, whose key Bob's trust store has not learned yet.
    let mut net = album();
    let (epoch, auth) = (net.album(2).album().epoch(), net.album(2).album().epoch_authenticator());
    let real = net.add_user(0, 3, 1);
    assert_eq!(real.len(), 1);
    let mut partial = net.dir.trust.clone();
    partial.remove(&uid(3));
    let waiting = {
        let validation = capsule_mls::Validation { trust: &partial, now: capsule_mls::testkit::NOW };
        let n = &mut net.nodes[2];
        let cx = Context { provider: &n.t.provider, device: &n.t.me, validation };
        n.album.as_mut().unwrap().reconcile_with_server(cx, &mut n.chain)
    };
    assert!(
        matches!(waiting, Err(ResilienceError::CannotVerifyYet { user, epoch: at }) if user == uid(3) && at == epoch),
        "{waiting:?}"
    );
    assert!(net.album(2).quarantine().is_none(), "not a verdict: no quarantine");
    assert_eq!(net.album(2).album().epoch(), epoch);
    assert_eq!(net.album(2).album().epoch_authenticator(), auth);
    // The trust store learns Carol's key: the same commits apply.
    assert!(matches!(net.reconcile(2).unwrap(), ReconcileOutcome::Reconciled { .. }));
    net.sync_all();
    net.assert_converged();
}

/// A chain that refuses every submission before ordering it.
struct Refuses<'a> {
    inner: &'a mut testkit::FaultyChain<testkit::TestChain>,
}

impl CommitChain for Refuses<'_> {
    fn submit(&mut self, _: &Submission) -> core::result::Result<SubmitAnswer, ChainError> {
        Err(ChainError::Refused(Refused::WrongAlbum))
    }
    fn fetch(&mut self, from: Epoch) -> core::result::Result<Vec<ChainEntry>, ChainError> {
        self.inner.fetch(from)
    }
    fn head(&mut self) -> core::result::Result<Epoch, ChainError> {
        self.inner.head()
    }
    fn welcome(&mut self, epoch: Epoch) -> core::result::Result<Option<WelcomeBlobs>, ChainError> {
        self.inner.welcome(epoch)
    }
    fn post_fingerprint(&mut self, fingerprint: &[u8]) -> core::result::Result<(), ChainError> {
        self.inner.post_fingerprint(fingerprint)
    }
    fn fingerprints(&mut self) -> core::result::Result<Vec<Vec<u8>>, ChainError> {
        self.inner.fingerprints()
    }
}

/// A commit the chain refuses before ordering will never be in it: the change
/// fails with the chain's reason, the pending commit goes, nothing is merged,
/// and the next change goes through.
#[test]
fn a_commit_the_chain_refuses_fails_its_change_and_merges_nothing() {
    let mut net = album();
    let before = (net.album(0).album().epoch(), net.album(0).album().keyring().current_version());
    let id = net.propose(0, Change::RotateAmk);
    {
        let validation = capsule_mls::Validation { trust: &net.dir.trust, now: capsule_mls::testkit::NOW };
        let node = &mut net.nodes[0];
        let cx = Context { provider: &node.t.provider, device: &node.t.me, validation };
        let mut chain = Refuses { inner: &mut node.chain };
        let events = node.album.as_mut().unwrap().drive(cx, &mut chain, &net.clock).unwrap();
        assert!(events.iter().any(|e| matches!(e, Event::Failed { refusal: Refusal::ChainRefused, .. })), "{events:?}");
    }
    let album = net.album(0);
    assert!(matches!(album.intent(id).unwrap().state, IntentState::Failed { refusal: Refusal::ChainRefused, .. }));
    assert!(album.album().pending().is_none(), "the refused commit is dropped");
    assert_eq!((album.album().epoch(), album.album().keyring().current_version()), before, "nothing merged");
    assert_eq!(album.status(), AlbumStatus::InSync);
    // The queue moves on: the next change reaches the chain.
    let next = net.propose(0, Change::RotateAmk);
    net.drive(0).unwrap();
    assert!(matches!(net.album(0).intent(next).unwrap().state, IntentState::Confirmed { .. }));
}
