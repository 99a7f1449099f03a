//! States a device must always be able to leave (issue 13), through the facade.

#![allow(clippy::unwrap_used)] // test code

use capsule::resilience::{AlbumStatus, Change, Event, IntentState, Refusal};
use capsule::testkit::{ALBUM, Fixture, user};

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
