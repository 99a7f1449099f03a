//! Forks and a bad commit through the front door: a commit every honest
//! member refuses sits at the chain's head; the honest devices quarantine,
//! report the commit and its committer, agree from their fingerprints that
//! the album needs a reboot and who does it, and the rebooter moves the
//! album into its next group, which the others join against the group they
//! hold. Nobody is left stuck and no photo is lost.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code

use std::collections::BTreeMap;

use capsule::amk::{AlbumUpgrade, HistoryPolicy};
use capsule::identity::{DeviceId, IdentityKeyPair, IdentitySeed, UnixTime, Validity};
use capsule::mls::{Epoch, MlsError, Validation};
use capsule::resilience::{
    AlbumStatus, ChainError, Change, CommitChain as _, Delivery, Mailbox, ReconcileOutcome, SyncClass,
};
use capsule::testkit::{ALBUM, Fixture, NOW, db_key, user};
use capsule::{Device, Error, Received};

/// Alice (admin) adds a guest whose identity key is a forgery: her modified
/// client trusts it, nobody else does.
fn bad_commit(fx: &mut Fixture, alice: &Device) -> Device {
    let forged = IdentityKeyPair::from_seed(&IdentitySeed::from_bytes([0x99; 32])).unwrap();
    let forever = Validity::new(UnixTime(0), UnixTime(u64::MAX)).unwrap();
    let impostor =
        Device::enroll(&fx.path("impostor"), &db_key(), &forged, user(4), DeviceId::from_bytes([0x99; 16]), forever)
            .unwrap();
    fx.identity(4).unwrap(); // the real user 4, whom honest devices trust
    let mut modified: BTreeMap<_, _> =
        (1..=3).map(|n| (user(n), fx.identity(n).unwrap().public_key().clone())).collect();
    modified.insert(user(4), forged.public_key().clone());
    let v = Validation { trust: &modified, now: NOW };
    alice.propose(ALBUM, Change::AddUser { user: user(4), directory: vec![impostor.key_package().unwrap()] }).unwrap();
    alice.sync(ALBUM, &mut fx.chain(), &fx.clock, v).unwrap();
    impostor
}

/// Alice (admin) with Bob (admin) and Carol in an album.
fn trio() -> (Fixture, Device, Device, Device) {
    let mut fx = Fixture::new().unwrap();
    let alice = fx.enroll(1, 1).unwrap();
    let bob = fx.enroll(2, 2).unwrap();
    let carol = fx.enroll(3, 3).unwrap();
    alice.create_album(ALBUM, HistoryPolicy::Full, [user(1), user(2)].into()).unwrap();
    for (n, d) in [(2, &bob), (3, &carol)] {
        alice.propose(ALBUM, Change::AddUser { user: user(n), directory: vec![d.key_package().unwrap()] }).unwrap();
        fx.sync(&alice).unwrap();
        fx.join(d).unwrap();
    }
    (fx, alice, bob, carol)
}

#[test]
fn a_commit_every_honest_member_refuses_is_healed_by_a_reboot_through_the_facade() {
    let (mut fx, alice, bob, carol) = trio();
    alice.propose(ALBUM, Change::RotateAmk).unwrap();
    fx.sync(&alice).unwrap();
    for d in [&bob, &carol] {
        d.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
    }
    let photo = carol.seal_photo(ALBUM, b"before").unwrap();
    let last_valid = bob.epoch(ALBUM).unwrap();
    let versions = bob.amk_versions(ALBUM).unwrap().count();

    let _impostor = bad_commit(&mut fx, &alice);
    for d in [&bob, &carol] {
        let outcome = d.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
        assert!(matches!(outcome, ReconcileOutcome::Diverged { .. }), "{outcome:?}");
        // "This commit is invalid": what to report, and who made it.
        let invalid = d.quarantine(ALBUM).unwrap().unwrap().invalid_commit.unwrap();
        assert_eq!(invalid.committer, Some(alice.member()));
        assert_eq!(invalid.epoch, last_valid.0);
        // A quarantined device neither sends nor writes.
        assert!(d.seal_photo(ALBUM, b"no").is_err());
    }
    // Everyone posts a fingerprint to the album's board on the server; the
    // honest devices agree the album needs a reboot and that Bob, the honest
    // admin, does it.
    let mut chain = fx.chain();
    for d in [&alice, &bob, &carol] {
        d.publish_fingerprint(ALBUM, &mut chain).unwrap();
    }
    let board = chain.fingerprints().unwrap();
    assert_eq!(board.len(), 3);
    for d in [&bob, &carol] {
        let report = d.sync_report(ALBUM, &board, &mut fx.chain(), fx.validation()).unwrap();
        assert_eq!(report.class, SyncClass::Hard);
        assert_eq!(report.own, vec![bob.member(), carol.member()]);
        assert_eq!(report.rebooter, Some(bob.member()));
    }
    // Carol cannot reboot (not an admin): refused, nothing changes.
    let before = carol.epoch(ALBUM).unwrap();
    assert!(matches!(
        carol.reboot(ALBUM, &[(bob.member(), bob.key_package().unwrap())], fx.validation()),
        Err(Error::Mls(_))
    ));
    assert_eq!(carol.epoch(ALBUM).unwrap(), before);
    assert_eq!(carol.group_id(ALBUM).unwrap(), ALBUM.as_bytes().to_vec());

    let group = bob.reboot(ALBUM, &[(carol.member(), carol.key_package().unwrap())], fx.validation()).unwrap();
    assert_eq!(group, bob.group_id(ALBUM).unwrap());
    assert_ne!(group, ALBUM.as_bytes().to_vec());
    fx.server.create_album(&group, Epoch::ZERO);
    bob.sync(ALBUM, &mut fx.server.connect(&group), &fx.clock, fx.validation()).unwrap();
    assert_eq!(bob.status(ALBUM).unwrap(), AlbumStatus::InSync);
    let entry = fx.server.entries(&group).into_iter().next().unwrap();
    let (welcome, bundle) = (entry.welcome.unwrap(), entry.bundle.unwrap());
    // A Welcome of the new group is checked against the group Carol holds,
    // which it replaces.
    carol.join(&welcome, &bundle, fx.validation()).unwrap();
    assert_eq!(carol.group_id(ALBUM).unwrap(), group);
    assert_eq!(carol.status(ALBUM).unwrap(), AlbumStatus::InSync);
    assert_eq!(carol.epoch(ALBUM).unwrap(), bob.epoch(ALBUM).unwrap());
    assert_eq!(carol.members(ALBUM).unwrap(), vec![bob.member(), carol.member()]);
    // Every version is still there, plus the reboot's; the photo from before opens.
    assert_eq!(carol.amk_versions(ALBUM).unwrap().count(), versions + 1);
    assert_eq!(carol.amk_versions(ALBUM).unwrap().current, bob.amk_versions(ALBUM).unwrap().current);
    for d in [&bob, &carol] {
        assert_eq!(d.open_photo(ALBUM, &photo).unwrap(), b"before");
    }
    // The album lives again: a change commits and reaches everyone.
    bob.propose(ALBUM, Change::RotateAmk).unwrap();
    bob.sync(ALBUM, &mut fx.server.connect(&group), &fx.clock, fx.validation()).unwrap();
    carol.reconcile_with_server(ALBUM, &mut fx.server.connect(&group), fx.validation()).unwrap();
    assert_eq!(carol.epoch(ALBUM).unwrap(), bob.epoch(ALBUM).unwrap());
    let after = carol.seal_photo(ALBUM, b"after").unwrap();
    assert_eq!(bob.open_photo(ALBUM, &after).unwrap(), b"after");
    // The same Welcome again is no later generation: refused, nothing changes.
    assert!(carol.join(&welcome, &bundle, fx.validation()).is_err());
    assert_eq!(carol.epoch(ALBUM).unwrap(), bob.epoch(ALBUM).unwrap());
}

/// Carol gives up on the quarantined album before anyone reads the board:
/// she re-bootstraps. What she posts until she is re-added is the farewell
/// made then (signed in the state she held, marked departing), which the
/// server accepts from a member; Bob counts her refusal by it, reboots, and
/// re-adds her from the fresh KeyPackage. Once she joins, her fingerprint is
/// her new state's again.
#[test]
fn a_re_bootstrapped_device_posts_its_farewell_until_it_is_readded() {
    let (mut fx, alice, bob, carol) = trio();
    let _impostor = bad_commit(&mut fx, &alice);
    for d in [&bob, &carol] {
        let outcome = d.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
        assert!(matches!(outcome, ReconcileOutcome::Diverged { .. }), "{outcome:?}");
    }
    let fresh = carol.rebootstrap(ALBUM).unwrap();
    assert_eq!(carol.status(ALBUM).unwrap(), AlbumStatus::AwaitingReadd);
    let farewell = carol.fingerprint(ALBUM).unwrap();
    assert!(capsule::mls::fingerprint_header(&farewell).unwrap().departing);
    // Stored: the same bytes after a restart.
    drop(carol);
    let carol = Device::open(&fx.path("user3-device3"), &db_key()).unwrap();
    assert_eq!(carol.fingerprint(ALBUM).unwrap(), farewell);
    let mut chain = fx.chain();
    carol.publish_fingerprint(ALBUM, &mut chain).unwrap();
    let board = chain.fingerprints().unwrap();
    assert_eq!(board, vec![farewell.clone()]);
    // Alone, Bob would have been told to re-bootstrap too; Carol's farewell
    // says she refused the same commit.
    let report = bob.sync_report(ALBUM, &board, &mut fx.chain(), fx.validation()).unwrap();
    assert_eq!(report.class, SyncClass::Hard);
    assert_eq!(report.own, vec![bob.member(), carol.member()]);
    assert_eq!(report.rebooter, Some(bob.member()));

    let group = bob.reboot(ALBUM, &[(carol.member(), fresh.key_package)], fx.validation()).unwrap();
    fx.server.create_album(&group, Epoch::ZERO);
    bob.sync(ALBUM, &mut fx.server.connect(&group), &fx.clock, fx.validation()).unwrap();
    let entry = fx.server.entries(&group).into_iter().next().unwrap();
    carol.join(&entry.welcome.unwrap(), &entry.bundle.unwrap(), fx.validation()).unwrap();
    assert_eq!(carol.status(ALBUM).unwrap(), AlbumStatus::InSync);
    let now = carol.fingerprint(ALBUM).unwrap();
    let header = capsule::mls::fingerprint_header(&now).unwrap();
    assert!(!header.departing);
    assert_eq!(header.group, group);
}

/// A mailbox holding deliveries in memory.
struct Inbox(Vec<Delivery>);

impl Mailbox for Inbox {
    fn deliveries(&mut self) -> Result<Vec<Delivery>, ChainError> {
        Ok(self.0.clone())
    }

    fn acknowledge(&mut self, delivery: &Delivery) -> Result<(), ChainError> {
        self.0.retain(|d| d != delivery);
        Ok(())
    }
}

/// Bob has not replayed Alice's album upgrade when she reboots the album: he
/// refuses the reboot's Welcome against the group he holds (the metadata
/// differs), and it stays in his mailbox (`Waiting`, nothing changed) rather
/// than being dropped, which would leave him in a generation nobody commits
/// to. Once he reconciles the old group to its head, he joins from it.
#[test]
fn a_reboot_refused_while_behind_waits_in_the_mailbox_until_the_old_group_is_replayed() {
    let mut fx = Fixture::new().unwrap();
    let (alice, bob) = fx.alice_and_bob().unwrap();
    let capped = HistoryPolicy::Capped { last: std::num::NonZeroU32::MIN.saturating_add(2) };
    let upgrade = AlbumUpgrade { history_policy: Some(capped), admins: None };
    alice.propose(ALBUM, Change::UpgradeAlbum { upgrade }).unwrap();
    alice.sync(ALBUM, &mut fx.chain(), &fx.clock, fx.validation()).unwrap();
    let group = alice.reboot(ALBUM, &[(bob.member(), bob.key_package().unwrap())], fx.validation()).unwrap();
    fx.server.create_album(&group, Epoch::ZERO);
    alice.sync(ALBUM, &mut fx.server.connect(&group), &fx.clock, fx.validation()).unwrap();
    let entry = fx.server.entries(&group).into_iter().next().unwrap();
    let delivery = Delivery {
        album: group.clone(),
        epoch: entry.epoch,
        reference: Vec::new(),
        welcome: entry.welcome.unwrap(),
        bundle: entry.bundle,
    };
    let mut inbox = Inbox(vec![delivery]);

    let before = (bob.epoch(ALBUM).unwrap(), bob.group_id(ALBUM).unwrap());
    let received = bob.receive_welcomes(&mut inbox, fx.validation()).unwrap();
    assert!(
        matches!(received.as_slice(), [Received::Waiting { error: Error::Mls(MlsError::NotAReboot(_)), .. }]),
        "{received:?}"
    );
    assert_eq!(inbox.0.len(), 1, "kept in the mailbox");
    assert_eq!((bob.epoch(ALBUM).unwrap(), bob.group_id(ALBUM).unwrap()), before, "nothing changed");

    bob.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
    let received = bob.receive_welcomes(&mut inbox, fx.validation()).unwrap();
    assert!(matches!(received.as_slice(), [Received::Joined { .. }]), "{received:?}");
    assert!(inbox.0.is_empty());
    assert_eq!(bob.group_id(ALBUM).unwrap(), group);
    assert_eq!(bob.epoch(ALBUM).unwrap(), alice.epoch(ALBUM).unwrap());
    assert_eq!(bob.status(ALBUM).unwrap(), AlbumStatus::InSync);
}
