//! States a device must always be able to leave (issue 13), through the facade.

#![allow(clippy::unwrap_used)] // test code

use capsule::resilience::{AlbumStatus, Change, Event, IntentState, Refusal};
use capsule::testkit::{ALBUM, Fixture, held_keys, user};

#[test]
fn a_refused_change_fails_with_its_reason_and_does_not_wedge_the_album() {
    let mut fx = Fixture::new().unwrap();
    let (alice, bob) = fx.alice_and_bob().unwrap();
    let carol = fx.enroll(3, 3).unwrap();
    // A KeyPackage that does not verify (here: bytes that are none at all).
    let bad = alice.propose(ALBUM, Change::AddUser { user: user(3), directory: vec![vec![0; 64]] }).unwrap();
    let events = alice.sync(ALBUM, &mut fx.chain(), &fx.clock, fx.validation()).unwrap();
    assert!(events.contains(&Event::Failed { intent: bad, refusal: Refusal::BadKeyPackage }), "{events:?}");
    assert_eq!(alice.status(ALBUM).unwrap(), AlbumStatus::InSync, "a refusal is not 'couldn't sync'");
    // The queue moves on: the same add with a real KeyPackage, then a rotation.
    alice.propose(ALBUM, Change::AddUser { user: user(3), directory: vec![carol.key_package().unwrap()] }).unwrap();
    let rotation = alice.propose(ALBUM, Change::RotateAmk).unwrap();
    fx.sync(&alice).unwrap();
    assert!(matches!(alice.intent_state(ALBUM, rotation).unwrap(), Some(IntentState::Confirmed { .. })));
    assert_eq!(alice.members(ALBUM).unwrap().len(), 3);
    // The failed one is cleared from what the application shows.
    alice.cancel(ALBUM, bad).unwrap();
    assert_eq!(alice.intent_state(ALBUM, bad).unwrap(), Some(IntentState::Cancelled));
    bob.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
    assert_eq!(bob.epoch(ALBUM).unwrap(), alice.epoch(ALBUM).unwrap());
}

#[test]
fn an_album_upgrade_is_a_durable_change_and_idempotent() {
    let mut fx = Fixture::new().unwrap();
    let (alice, bob) = fx.alice_and_bob().unwrap();
    let capped = capsule::amk::HistoryPolicy::Capped { last: std::num::NonZeroU32::new(5).unwrap() };
    let upgrade = capsule::amk::AlbumUpgrade { history_policy: Some(capped), admins: None };
    let first = alice.propose(ALBUM, Change::UpgradeAlbum { upgrade: upgrade.clone() }).unwrap();
    // The same upgrade asked twice (two taps, or two admins): one commit.
    let again = alice.propose(ALBUM, Change::UpgradeAlbum { upgrade }).unwrap();
    let entries = fx.server.entries(ALBUM.as_bytes()).len();
    fx.sync(&alice).unwrap();
    assert_eq!(fx.server.entries(ALBUM.as_bytes()).len(), entries + 1);
    for intent in [first, again] {
        assert!(matches!(alice.intent_state(ALBUM, intent).unwrap(), Some(IntentState::Confirmed { .. })));
    }
    bob.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
    assert_eq!(bob.epoch(ALBUM).unwrap(), alice.epoch(ALBUM).unwrap());
    // Bob is not an admin: his upgrade is refused, and says why.
    let back = capsule::amk::AlbumUpgrade { history_policy: Some(capsule::amk::HistoryPolicy::Full), admins: None };
    let refused = bob.propose(ALBUM, Change::UpgradeAlbum { upgrade: back }).unwrap();
    fx.sync(&bob).unwrap();
    assert!(matches!(
        bob.intent_state(ALBUM, refused).unwrap(),
        Some(IntentState::Failed { refusal: Refusal::Unauthorized, .. })
    ));
}

#[test]
fn a_quarantined_device_leaves_by_rebootstrap_and_ends_like_its_peers() {
    let mut fx = Fixture::new().unwrap();
    let (alice, bob) = fx.alice_and_bob().unwrap();
    let before = alice.seal_photo(ALBUM, b"before").unwrap();
    // Bob's state moves without the server: a rotation merged locally, never sent.
    let path = fx.path("user2-device2");
    drop(bob);
    {
        let store = capsule::store::Store::open(&path, &capsule::testkit::db_key()).unwrap();
        let me = store.load_device().unwrap();
        store.with_album(ALBUM, |a, p| a.stage(p, &me, &Change::RotateAmk, fx.validation())).unwrap();
        store.with_album(ALBUM, |a, p| a.confirm(p)).unwrap();
    }
    let bob = capsule::Device::open(&path, &capsule::testkit::db_key()).unwrap();
    let outcome = bob.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
    assert!(matches!(outcome, capsule::resilience::ReconcileOutcome::Diverged { .. }), "{outcome:?}");
    assert!(matches!(bob.status(ALBUM).unwrap(), AlbumStatus::Quarantined { .. }));
    // Quarantine: no sends, no merges.
    assert!(bob.seal_photo(ALBUM, b"no").is_err());

    // The user's way out: discard and re-bootstrap; what was discarded is reported.
    let fresh = bob.rebootstrap(ALBUM).unwrap();
    assert!(fresh.discarded.divergence.is_some());
    assert!(fresh.discarded.last_applied.is_some(), "the local-only commit, for investigation");
    assert_eq!(bob.status(ALBUM).unwrap(), AlbumStatus::AwaitingReadd);
    assert!(bob.rebootstrap(ALBUM).is_err(), "nothing left to discard");
    // Alice (an admin) re-adds Bob's device from the fresh KeyPackage; he joins.
    alice.readd(ALBUM, bob.member(), fresh.key_package).unwrap();
    fx.sync(&alice).unwrap();
    fx.join(&bob).unwrap();
    // Server-authoritative state: the same epoch, authenticator and keyring as Alice.
    assert_eq!(bob.status(ALBUM).unwrap(), AlbumStatus::InSync);
    assert_eq!(bob.epoch(ALBUM).unwrap(), alice.epoch(ALBUM).unwrap());
    assert_eq!(held_keys(&bob, ALBUM).unwrap().current(), held_keys(&alice, ALBUM).unwrap().current());
    assert_eq!(bob.open_photo(ALBUM, &before).unwrap(), b"before", "no data lost");
    let after = alice.seal_photo(ALBUM, b"after").unwrap();
    assert_eq!(bob.open_photo(ALBUM, &after).unwrap(), b"after");
    assert_eq!(alice.members(ALBUM).unwrap().len(), 2);
}

#[test]
fn a_refused_rebootstrap_or_cancel_changes_nothing() {
    let mut fx = Fixture::new().unwrap();
    let (alice, _bob) = fx.alice_and_bob().unwrap();
    let mut chain = capsule::resilience::testkit::FaultyChain::new(fx.chain(), fx.clock.clone());
    chain.on_next_submit(capsule::resilience::testkit::Fault::DropAnswer);
    let sent = alice.propose(ALBUM, Change::RotateAmk).unwrap();
    alice.sync(ALBUM, &mut chain, &fx.clock, fx.validation()).unwrap();
    let path = fx.path("user1-device1");
    let before = std::fs::read(&path).unwrap();
    let refused = alice.rebootstrap(ALBUM);
    assert!(
        matches!(refused, Err(capsule::Error::Resilience(capsule::resilience::ResilienceError::NotStuck))),
        "{refused:?}"
    );
    assert!(alice.cancel(ALBUM, sent).is_err(), "its commit may be in the chain");
    assert!(std::fs::read(&path).unwrap() == before, "a refusal wrote to the store");
}

#[test]
fn a_device_with_an_expired_certificate_commits_nothing_until_renewed() {
    use capsule::identity::{DeviceId, UnixTime, Validity};
    let mut fx = Fixture::new().unwrap();
    let now = capsule::testkit::NOW;
    // Alice's phone is certified until shortly after now.
    let short = Validity::new(UnixTime(0), UnixTime(now.0 + 100)).unwrap();
    fx.identity(1).unwrap(); // trusted by everyone
    // The same key pair the fixture made from user 1's seed.
    let seed = capsule::identity::IdentitySeed::from_bytes([1; 32]);
    let identity = &capsule::identity::IdentityKeyPair::from_seed(&seed).unwrap();
    let path = fx.path("alice");
    let mut alice = capsule::Device::enroll(
        &path,
        &capsule::testkit::db_key(),
        identity,
        user(1),
        DeviceId::from_bytes([1; 16]),
        short,
    )
    .unwrap();
    let bob = fx.enroll(2, 2).unwrap();
    alice.create_album(ALBUM, capsule::amk::HistoryPolicy::Full, [user(1)].into()).unwrap();
    alice.propose(ALBUM, Change::AddUser { user: user(2), directory: vec![bob.key_package().unwrap()] }).unwrap();
    fx.sync(&alice).unwrap();
    fx.join(&bob).unwrap();

    // Later, the certificate has expired: the change is refused locally, nothing is sent.
    let later = capsule::mls::Validation { now: UnixTime(now.0 + 1_000), ..fx.validation() };
    let entries = fx.server.entries(ALBUM.as_bytes()).len();
    let rotation = alice.propose(ALBUM, Change::RotateAmk).unwrap();
    alice.sync(ALBUM, &mut fx.chain(), &fx.clock, later).unwrap();
    assert!(matches!(
        alice.intent_state(ALBUM, rotation).unwrap(),
        Some(IntentState::Failed { refusal: Refusal::RenewCertificate, .. })
    ));
    assert_eq!(fx.server.entries(ALBUM.as_bytes()).len(), entries, "nothing reached the chain");

    // Renewal: a new certificate for the same key, carried to everyone by a self-update.
    let renewed = Validity::new(UnixTime(0), UnixTime(now.0 + 100_000)).unwrap();
    let updates = alice.renew_certificate(identity, renewed).unwrap();
    assert_eq!(updates.len(), 1);
    alice.sync(ALBUM, &mut fx.chain(), &fx.clock, later).unwrap();
    assert!(matches!(alice.intent_state(ALBUM, updates[0]).unwrap(), Some(IntentState::Confirmed { .. })));
    let rotation = alice.propose(ALBUM, Change::RotateAmk).unwrap();
    alice.sync(ALBUM, &mut fx.chain(), &fx.clock, later).unwrap();
    assert!(matches!(alice.intent_state(ALBUM, rotation).unwrap(), Some(IntentState::Confirmed { .. })));
    // Bob, checking at the same later time, accepts both commits.
    let outcome = bob.reconcile_with_server(ALBUM, &mut fx.chain(), later).unwrap();
    assert!(matches!(outcome, capsule::resilience::ReconcileOutcome::Reconciled { .. }), "{outcome:?}");
    assert_eq!(bob.epoch(ALBUM).unwrap(), alice.epoch(ALBUM).unwrap());
    assert_eq!(held_keys(&bob, ALBUM).unwrap().current(), held_keys(&alice, ALBUM).unwrap().current());
    // And the renewed certificate survives a restart.
    drop(alice);
    let alice = capsule::Device::open(&path, &capsule::testkit::db_key()).unwrap();
    alice.propose(ALBUM, Change::RotateAmk).unwrap();
    alice.sync(ALBUM, &mut fx.chain(), &fx.clock, later).unwrap();
    assert_eq!(alice.status(ALBUM).unwrap(), AlbumStatus::InSync);
}

#[test]
fn a_scheduled_rekey_runs_when_due_and_counts_from_when_it_finished() {
    use capsule::resilience::RekeySchedule;
    use capsule::resilience::testkit::MemoryEscrow;
    use std::time::Duration;
    let mut fx = Fixture::new().unwrap();
    let (alice, bob) = fx.alice_and_bob().unwrap();
    let (mut escrow, budget) = (MemoryEscrow::new([0x0e; 32]), Duration::from_secs(600));
    let monthly = RekeySchedule { every: Duration::from_secs(30 * 24 * 3600) };
    assert_eq!(
        alice.rekey_if_due(ALBUM, monthly, budget, &mut fx.chain(), fx.validation(), &fx.clock, &mut escrow).unwrap(),
        None
    );
    fx.clock.advance(Duration::from_secs(31 * 24 * 3600));
    assert!(
        alice
            .rekey_if_due(ALBUM, monthly, budget, &mut fx.chain(), fx.validation(), &fx.clock, &mut escrow)
            .unwrap()
            .is_some()
    );
    assert!(
        alice
            .rekey_if_due(ALBUM, monthly, budget, &mut fx.chain(), fx.validation(), &fx.clock, &mut escrow)
            .unwrap()
            .is_none(),
        "one at a time"
    );
    for _ in 0..4 {
        for device in [&alice, &bob] {
            device.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
            fx.sync(device).unwrap();
        }
    }
    assert_eq!(alice.status(ALBUM).unwrap(), AlbumStatus::InSync);
    assert_eq!(alice.amk_versions(ALBUM).unwrap().current.get(), 2, "a fresh AMK");
    assert_eq!(held_keys(&bob, ALBUM).unwrap().current(), held_keys(&alice, ALBUM).unwrap().current());
    // The next one counts from when this one finished.
    assert_eq!(
        alice.rekey_if_due(ALBUM, monthly, budget, &mut fx.chain(), fx.validation(), &fx.clock, &mut escrow).unwrap(),
        None
    );
    fx.clock.advance(Duration::from_secs(29 * 24 * 3600));
    assert_eq!(
        alice.rekey_if_due(ALBUM, monthly, budget, &mut fx.chain(), fx.validation(), &fx.clock, &mut escrow).unwrap(),
        None
    );
    fx.clock.advance(Duration::from_secs(2 * 24 * 3600));
    assert!(
        alice
            .rekey_if_due(ALBUM, monthly, budget, &mut fx.chain(), fx.validation(), &fx.clock, &mut escrow)
            .unwrap()
            .is_some()
    );
}

/// `001_…`: "New device is now equivalent to Alice's other devices". Under a
/// capped policy a user's later devices, whoever adds them (the user's own
/// device, or an admin re-adding after a re-bootstrap), read exactly what the
/// user's first device reads.
#[test]
fn a_users_new_and_readded_devices_read_what_its_first_device_reads() {
    let mut fx = Fixture::new().unwrap();
    let alice = fx.enroll(1, 1).unwrap();
    let phone = fx.enroll(2, 2).unwrap();
    let last_one = capsule::amk::HistoryPolicy::Capped { last: std::num::NonZeroU32::new(1).unwrap() };
    alice.create_album(ALBUM, last_one, [user(1)].into()).unwrap();
    let rotate = |fx: &Fixture| {
        alice.propose(ALBUM, Change::RotateAmk).unwrap();
        fx.sync(&alice).unwrap();
    };
    rotate(&fx);
    let before_bob = alice.seal_photo(ALBUM, b"v2").unwrap();
    rotate(&fx);
    alice.propose(ALBUM, Change::AddUser { user: user(2), directory: vec![phone.key_package().unwrap()] }).unwrap();
    fx.sync(&alice).unwrap();
    fx.join(&phone).unwrap();
    let at_join = alice.seal_photo(ALBUM, b"v3").unwrap();
    rotate(&fx);
    rotate(&fx);
    phone.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
    assert_eq!(phone.open_photo(ALBUM, &at_join).unwrap(), b"v3");
    assert!(phone.open_photo(ALBUM, &before_bob).is_err(), "withheld by the policy when Bob joined");

    // Bob's laptop, added by his phone two rotations later, reads the same.
    let laptop = fx.enroll(2, 3).unwrap();
    phone.readd(ALBUM, laptop.member(), laptop.key_package().unwrap()).unwrap();
    fx.sync(&phone).unwrap();
    fx.join(&laptop).unwrap();
    let same = |d: &capsule::Device| {
        let (ring, reference) = (held_keys(d, ALBUM).unwrap(), held_keys(&phone, ALBUM).unwrap());
        assert_eq!((ring.versions.first_held, ring.current()), (reference.versions.first_held, reference.current()));
        assert_eq!(d.open_photo(ALBUM, &at_join).unwrap(), b"v3");
        assert!(d.open_photo(ALBUM, &before_bob).is_err());
    };
    same(&laptop);

    // Alice (an admin, not Bob) re-adds the laptop from a fresh KeyPackage (a
    // re-key straggler's path): still the same.
    alice.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
    alice.readd(ALBUM, laptop.member(), laptop.key_package().unwrap()).unwrap();
    fx.sync(&alice).unwrap();
    laptop.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
    fx.join(&laptop).unwrap();
    phone.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
    same(&laptop);
}

/// `device` joins from whichever Welcome in the chain is addressed to it.
fn join_own_welcome(fx: &Fixture, device: &capsule::Device) {
    let entries = fx.server.entries(ALBUM.as_bytes());
    let joined = entries
        .iter()
        .rev()
        .filter_map(|e| Some((e.welcome.clone()?, e.bundle.clone()?)))
        .any(|(w, b)| device.join(&w, &b, fx.validation()).is_ok());
    assert!(joined, "no Welcome in the chain for this device");
}

/// `000_…`: "if a re-keying stalls partway, any current owner-set member
/// recovers the album's AMK lineage from the OGK escrow and re-drives a fresh,
/// clean epoch". Dave, an owner who joined late under a capped policy, holds
/// only the newest version; the escrow gives him back the rest, so the users
/// he re-adds keep their whole entitlement.
#[test]
fn a_stalled_rekey_is_redriven_by_another_owner_from_the_escrow_with_no_version_lost() {
    use capsule::mls::{RekeyId, RekeyReason};
    use capsule::resilience::testkit::MemoryEscrow;
    use std::time::Duration;
    let (day, week) = (Duration::from_secs(24 * 3600), Duration::from_secs(7 * 24 * 3600));
    let mut fx = Fixture::new().unwrap();
    let (alice, bob, dave) = (fx.enroll(1, 1).unwrap(), fx.enroll(2, 2).unwrap(), fx.enroll(4, 4).unwrap());
    let last_one = capsule::amk::HistoryPolicy::Capped { last: std::num::NonZeroU32::new(1).unwrap() };
    alice.create_album(ALBUM, last_one, [user(1), user(4)].into()).unwrap();
    let rotate = |fx: &Fixture, n| {
        for _ in 0..n {
            alice.propose(ALBUM, Change::RotateAmk).unwrap();
            fx.sync(&alice).unwrap();
        }
    };
    let old = alice.seal_photo(ALBUM, b"v1").unwrap();
    rotate(&fx, 2);
    alice.propose(ALBUM, Change::AddUser { user: user(2), directory: vec![bob.key_package().unwrap()] }).unwrap();
    fx.sync(&alice).unwrap();
    fx.join(&bob).unwrap();
    let bobs = bob.seal_photo(ALBUM, b"v3").unwrap();
    rotate(&fx, 2);
    alice.propose(ALBUM, Change::AddUser { user: user(4), directory: vec![dave.key_package().unwrap()] }).unwrap();
    fx.sync(&alice).unwrap();
    fx.join(&dave).unwrap();
    assert_eq!(dave.amk_versions(ALBUM).unwrap().first_held.get(), 5, "Dave joined under the cap");

    // Alice starts a re-key, then her phone goes dark; the directory keeps
    // a KeyPackage of hers. Dave answers; Bob's phone is offline.
    let alice_kp = alice.key_package().unwrap();
    let ogk = [0x0e; 32];
    let mut escrow = MemoryEscrow::new(ogk);
    alice
        .rekey_group(
            ALBUM,
            RekeyId(1),
            RekeyReason::AdminInitiated,
            day,
            &mut fx.chain(),
            fx.validation(),
            &fx.clock,
            &mut escrow,
        )
        .unwrap();
    fx.sync(&alice).unwrap();
    let lineage = escrow.sealed(ALBUM).unwrap().to_vec();
    let v1_key = held_keys(&alice, ALBUM).unwrap().get(capsule::amk::AmkVersion::FIRST).unwrap().to_vec();
    assert!(!lineage.windows(v1_key.len()).any(|w| w == v1_key.as_slice()), "the escrow holds ciphertext only");
    dave.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
    fx.sync(&dave).unwrap();
    assert_eq!(dave.stalled_rekey(ALBUM, &fx.clock, week).unwrap(), None, "not stalled yet");
    let refused =
        dave.recover_stalled_rekey(ALBUM, week, day, &mut fx.chain(), fx.validation(), &fx.clock, &mut escrow);
    assert!(matches!(refused, Err(capsule::Error::Resilience(capsule::resilience::ResilienceError::NotStalled))));
    fx.clock.advance(8 * day);
    assert_eq!(dave.stalled_rekey(ALBUM, &fx.clock, week).unwrap().map(|m| m.id), Some(RekeyId(1)));

    // Bob (not an owner) cannot; nor can Dave with an escrow that holds nothing.
    bob.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
    fx.sync(&bob).unwrap();
    let dave_before = held_keys(&dave, ALBUM).unwrap();
    assert!(
        bob.recover_stalled_rekey(ALBUM, Duration::ZERO, day, &mut fx.chain(), fx.validation(), &fx.clock, &mut escrow)
            .is_err()
    );
    assert!(
        dave.recover_stalled_rekey(
            ALBUM,
            week,
            day,
            &mut fx.chain(),
            fx.validation(),
            &fx.clock,
            &mut MemoryEscrow::new(ogk)
        )
        .is_err()
    );
    assert_eq!(held_keys(&dave, ALBUM).unwrap(), dave_before, "a refusal changes nothing");

    // Dave re-drives it: the lineage comes back, and the re-key runs to the end.
    dave.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
    let id =
        dave.recover_stalled_rekey(ALBUM, week, day, &mut fx.chain(), fx.validation(), &fx.clock, &mut escrow).unwrap();
    assert_ne!(id, RekeyId(1));
    assert_eq!(dave.amk_versions(ALBUM).unwrap().first_held.get(), 1, "no version lost");
    // Bob's phone stays offline through this re-key too: both are re-added.
    dave.provide_rekey_key_package(ALBUM, bob.member(), bob.key_package().unwrap()).unwrap();
    dave.provide_rekey_key_package(ALBUM, alice.member(), alice_kp).unwrap();
    fx.sync(&dave).unwrap();
    fx.clock.advance(2 * day);
    for _ in 0..3 {
        fx.sync(&dave).unwrap();
    }
    assert_eq!(dave.status(ALBUM).unwrap(), AlbumStatus::InSync);
    assert_eq!(dave.amk_versions(ALBUM).unwrap().current.get(), 6, "a fresh AMK");

    // Bob and Alice come back, are in the new epoch, and lost nothing.
    for device in [&bob, &alice] {
        device.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
        join_own_welcome(&fx, device);
        device.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
        assert_eq!(device.epoch(ALBUM).unwrap(), dave.epoch(ALBUM).unwrap());
        assert_eq!(held_keys(device, ALBUM).unwrap().current(), held_keys(&dave, ALBUM).unwrap().current());
    }
    assert_eq!(bob.open_photo(ALBUM, &bobs).unwrap(), b"v3", "Bob keeps his whole entitlement");
    assert_eq!(bob.amk_versions(ALBUM).unwrap().first_held.get(), 3);
    assert_eq!(alice.open_photo(ALBUM, &old).unwrap(), b"v1");
    assert_eq!(dave.open_photo(ALBUM, &old).unwrap(), b"v1");
    let after = dave.seal_photo(ALBUM, b"v6").unwrap();
    assert_eq!(bob.open_photo(ALBUM, &after).unwrap(), b"v6");
}

/// "I cannot verify this yet" is not a divergence: Bob's trust store has not
/// learned Carol's identity key when Alice adds her. Bob's reconcile says so,
/// changes nothing, and succeeds once the key is known.
#[test]
fn a_commit_naming_an_identity_not_yet_trusted_waits_instead_of_quarantining() {
    use capsule::identity::IdentityPublicKey;
    use std::collections::BTreeMap;
    let mut fx = Fixture::new().unwrap();
    let (alice, bob) = fx.alice_and_bob().unwrap();
    let mut partial: BTreeMap<capsule::identity::UserId, IdentityPublicKey> = BTreeMap::new();
    for n in [1, 2] {
        partial.insert(user(n), fx.identity(n).unwrap().public_key().clone());
    }
    let carol = fx.enroll(3, 3).unwrap();
    alice.propose(ALBUM, Change::AddUser { user: user(3), directory: vec![carol.key_package().unwrap()] }).unwrap();
    fx.sync(&alice).unwrap();
    let before = bob.epoch(ALBUM).unwrap();
    let not_yet = capsule::mls::Validation { trust: &partial, now: fx.validation().now };
    let waiting = bob.reconcile_with_server(ALBUM, &mut fx.chain(), not_yet);
    assert!(
        matches!(
            waiting,
            Err(capsule::Error::Resilience(capsule::resilience::ResilienceError::CannotVerifyYet { user: u, .. }))
                if u == user(3)
        ),
        "{waiting:?}"
    );
    assert_eq!(bob.epoch(ALBUM).unwrap(), before, "nothing changed");
    assert_eq!(bob.status(ALBUM).unwrap(), AlbumStatus::InSync, "not quarantined");
    let outcome = bob.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
    assert!(matches!(outcome, capsule::resilience::ReconcileOutcome::Reconciled { .. }), "{outcome:?}");
    assert_eq!(bob.epoch(ALBUM).unwrap(), alice.epoch(ALBUM).unwrap());
}

/// `001_…`: "Charlie retains AMK_v1..current": a removed device still opens
/// every photo it could open before its removal (after a restart too), and
/// nothing sealed after it.
#[test]
fn a_removed_device_keeps_what_it_could_read_and_nothing_after() {
    let mut fx = Fixture::new().unwrap();
    let (alice, _bob) = fx.alice_and_bob().unwrap();
    let charlie = fx.enroll(3, 3).unwrap();
    let v1 = alice.seal_photo(ALBUM, b"v1").unwrap();
    alice.propose(ALBUM, Change::AddUser { user: user(3), directory: vec![charlie.key_package().unwrap()] }).unwrap();
    fx.sync(&alice).unwrap();
    fx.join(&charlie).unwrap();
    alice.propose(ALBUM, Change::RotateAmk).unwrap();
    fx.sync(&alice).unwrap();
    charlie.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
    let v2 = charlie.seal_photo(ALBUM, b"v2").unwrap();
    alice.propose(ALBUM, Change::RemoveUser { user: user(3) }).unwrap();
    fx.sync(&alice).unwrap();
    let after = alice.seal_photo(ALBUM, b"v3").unwrap();
    charlie.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
    assert_eq!(charlie.status(ALBUM).unwrap(), AlbumStatus::NeedsRebootstrap);
    let path = fx.path("user3-device3");
    drop(charlie);
    let charlie = capsule::Device::open(&path, &capsule::testkit::db_key()).unwrap();
    assert_eq!(charlie.open_photo(ALBUM, &v1).unwrap(), b"v1");
    assert_eq!(charlie.open_photo(ALBUM, &v2).unwrap(), b"v2");
    assert_eq!(charlie.amk_versions(ALBUM).unwrap().current.get(), 2);
    assert!(charlie.open_photo(ALBUM, &after).is_err(), "nothing after the removal");
    assert!(charlie.seal_photo(ALBUM, b"no").is_err(), "a removed device uploads nothing");
}

/// An escrow holds only what the chain confirmed. An admin whose state a bug
/// moved beside the chain (a rotation merged locally, never sent) starts a
/// re-key: it reconciles first, is quarantined, and its local-only AMK version
/// never reaches the escrow, where it would conflict with every honest owner's
/// later deposit and leave a stalled re-key with no way to restart.
#[test]
fn a_diverged_admin_is_quarantined_before_its_keys_reach_the_escrow() {
    use capsule::mls::{RekeyId, RekeyReason};
    use capsule::resilience::{ResilienceError, testkit::MemoryEscrow};
    use std::time::Duration;

    let mut fx = Fixture::new().unwrap();
    let (alice, bob) = fx.alice_and_bob().unwrap();
    let mut escrow = MemoryEscrow::new([0x0e; 32]);
    let budget = Duration::from_secs(600);
    let path = fx.path("user1-device1");
    drop(alice);
    {
        let store = capsule::store::Store::open(&path, &capsule::testkit::db_key()).unwrap();
        let me = store.load_device().unwrap();
        store.with_album(ALBUM, |a, p| a.stage(p, &me, &Change::RotateAmk, fx.validation())).unwrap();
        store.with_album(ALBUM, |a, p| a.confirm(p)).unwrap();
    }
    let alice = capsule::Device::open(&path, &capsule::testkit::db_key()).unwrap();
    let local_only = held_keys(&alice, ALBUM).unwrap();
    assert_eq!(local_only.versions.current.get(), 2);

    let refused = alice.rekey_group(
        ALBUM,
        RekeyId(1),
        RekeyReason::SuspectedCompromise,
        budget,
        &mut fx.chain(),
        fx.validation(),
        &fx.clock,
        &mut escrow,
    );
    assert!(matches!(refused, Err(capsule::Error::Resilience(ResilienceError::Quarantined { .. }))), "{refused:?}");
    assert!(escrow.sealed(ALBUM).is_none(), "nothing deposited");
    assert!(matches!(alice.status(ALBUM).unwrap(), AlbumStatus::Quarantined { .. }));
    assert_eq!(held_keys(&alice, ALBUM).unwrap(), local_only, "the refusal changed nothing else");
    // Bob, in step with the chain, holds version 1 only: the chain never saw a rotation.
    assert_eq!(bob.amk_versions(ALBUM).unwrap().current.get(), 1);
}
