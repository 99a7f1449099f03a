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
