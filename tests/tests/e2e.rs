//! The seed's bounded end-to-end case through the facade only: full enrollment,
//! add to album, upload as a real client, decrypt on another device, and the
//! same after both devices restart from their files.

#![allow(clippy::unwrap_used)] // test code

use std::collections::BTreeMap;

use capsule::amk::{AlbumId, HistoryPolicy};
use capsule::identity::{DeviceId, IdentityKeyPair, UnixTime, UserId, Validity};
use capsule::mls::{Epoch, Validation};
use capsule::resilience::testkit::{MemoryServer, SimClock};
use capsule::resilience::{AlbumStatus, Change};
use capsule::{Device, Error};

#[test]
fn enroll_add_upload_decrypt_restart() {
    let dir = std::env::temp_dir().join(format!("capsule-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let forever = Validity::new(UnixTime(0), UnixTime(u64::MAX)).unwrap();
    let (alice_id, bob_id) = (IdentityKeyPair::generate().unwrap(), IdentityKeyPair::generate().unwrap());
    let (alice, bob) = (UserId::from_bytes([1; 16]), UserId::from_bytes([2; 16]));
    let key = capsule::testkit::db_key();
    let a = Device::enroll(&dir.join("a.db"), &key, &alice_id, alice, DeviceId::from_bytes([1; 16]), forever).unwrap();
    let b = Device::enroll(&dir.join("b.db"), &key, &bob_id, bob, DeviceId::from_bytes([2; 16]), forever).unwrap();
    let trust: BTreeMap<_, _> = [(alice, alice_id.public_key().clone()), (bob, bob_id.public_key().clone())].into();
    let v = Validation { trust: &trust, now: UnixTime(1_800_000_000) };
    let album = AlbumId::from_bytes([3; 16]);
    let server = MemoryServer::new();
    server.create_album(album.as_bytes(), Epoch::ZERO);
    let clock = SimClock::new();

    a.create_album(album, HistoryPolicy::Full, [alice].into()).unwrap();
    let early = a.seal_photo(album, b"before bob").unwrap();
    a.propose(album, Change::AddUser { user: bob, directory: vec![b.key_package().unwrap()] }).unwrap();
    a.sync(album, &mut server.connect(album.as_bytes()), &clock, v).unwrap();
    assert_eq!(a.status(album).unwrap(), AlbumStatus::InSync);
    let entry = server.entries(album.as_bytes()).remove(0);
    b.join(entry.welcome.as_deref().unwrap(), entry.bundle.as_deref().unwrap(), v).unwrap();

    let photo = a.seal_photo(album, b"first light").unwrap();
    assert_eq!(b.open_photo(album, &photo).unwrap(), b"first light");
    assert_eq!(b.open_photo(album, &early).unwrap(), b"before bob", "full history");
    assert_eq!(a.epoch(album).unwrap(), b.epoch(album).unwrap());

    // A tampered photo is refused, typed.
    let mut bytes = photo.to_bytes();
    if let Some(last) = bytes.last_mut() {
        *last ^= 1;
    }
    let bad = capsule::Photo::from_bytes(&bytes).unwrap();
    assert!(matches!(b.open_photo(album, &bad), Err(Error::Amk(capsule::amk::AmkError::PhotoUnreadable))));

    // Both restart from their files.
    drop((a, b));
    let a = Device::open(&dir.join("a.db"), &key).unwrap();
    let b = Device::open(&dir.join("b.db"), &key).unwrap();
    assert_eq!(a.epoch(album).unwrap(), b.epoch(album).unwrap());
    let photo = b.seal_photo(album, b"after restart").unwrap();
    assert_eq!(a.open_photo(album, &photo).unwrap(), b"after restart");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A removed device that is added back joins again and is a full member: it
/// does not carry the "needs re-bootstrap" state of its old membership over.
#[test]
fn a_removed_device_added_back_is_a_member_again() {
    use capsule::resilience::ReconcileOutcome;
    use capsule::testkit::{ALBUM, Fixture};

    let mut fx = Fixture::new().unwrap();
    let (alice, bob) = fx.alice_and_bob().unwrap();
    alice.propose(ALBUM, Change::RemoveUser { user: bob.user() }).unwrap();
    fx.sync(&alice).unwrap();
    let outcome = bob.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
    assert_eq!(outcome, ReconcileOutcome::Unrecoverable);
    assert_eq!(bob.status(ALBUM).unwrap(), AlbumStatus::NeedsRebootstrap);
    let missed = alice.seal_photo(ALBUM, b"while bob was out").unwrap();
    assert!(bob.open_photo(ALBUM, &missed).is_err());

    alice.propose(ALBUM, Change::AddUser { user: bob.user(), directory: vec![bob.key_package().unwrap()] }).unwrap();
    fx.sync(&alice).unwrap();
    fx.join(&bob).unwrap();
    assert_eq!(bob.status(ALBUM).unwrap(), AlbumStatus::InSync);
    assert_eq!(bob.epoch(ALBUM).unwrap(), alice.epoch(ALBUM).unwrap());
    // Full history: the photo sealed while he was out is his again.
    assert_eq!(bob.open_photo(ALBUM, &missed).unwrap(), b"while bob was out");
    let photo = bob.seal_photo(ALBUM, b"back").unwrap();
    assert_eq!(alice.open_photo(ALBUM, &photo).unwrap(), b"back");
    // And he takes part in ceremonies again.
    bob.propose(ALBUM, Change::RotateAmk).unwrap();
    fx.sync(&bob).unwrap();
    let outcome = alice.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
    assert!(matches!(outcome, ReconcileOutcome::Reconciled { ref applied_commits } if applied_commits.len() == 1));
    assert_eq!(alice.amk_versions(ALBUM).unwrap().current, bob.amk_versions(ALBUM).unwrap().current);
}
