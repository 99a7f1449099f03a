//! Device databases written by an earlier release, opened by this one: every
//! record they hold (OpenMLS's tables, album, resilience, keyring, device,
//! KeyPackage and re-bootstrap records) must still read. (A farewell is a
//! fingerprint, whose every format has its own test in capsule-mls.)
//!
//! `tests/fixtures/schema2/` was written by the release whose store schema is
//! 2. It is never rewritten: a release that changes a record adds its own
//! directory (`CAPSULE_WRITE_FIXTURES=<dir name>` writes one from this code)
//! and this test opens every directory.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)] // test code

use std::path::{Path, PathBuf};

use capsule::amk::SealedPhoto;
use capsule::resilience::{AlbumStatus, Change};
use capsule::testkit::{ALBUM, Fixture, db_key, user};
use capsule::{Device, Error};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const PHOTO: &[u8] = b"a photo sealed under AMK v1";

/// Alice (admin) and Bob in an album, one rotation, a photo sealed under v1;
/// Carol added, removed, then re-bootstrapped (her re-bootstrap record and a
/// fresh KeyPackage): AMK v3 is current.
fn write(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut fx = Fixture::new().unwrap();
    let (alice, bob) = fx.alice_and_bob().unwrap();
    let photo = alice.seal_photo(ALBUM, PHOTO).unwrap();
    alice.propose(ALBUM, Change::RotateAmk).unwrap();
    fx.sync(&alice).unwrap();
    bob.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
    let carol = fx.enroll(3, 3).unwrap();
    alice.propose(ALBUM, Change::AddUser { user: user(3), directory: vec![carol.key_package().unwrap()] }).unwrap();
    fx.sync(&alice).unwrap();
    fx.join(&carol).unwrap();
    alice.propose(ALBUM, Change::RemoveUser { user: user(3) }).unwrap();
    fx.sync(&alice).unwrap();
    bob.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
    carol.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
    carol.rebootstrap(ALBUM).unwrap();
    drop((alice, bob, carol));
    for (name, n, device) in [("alice", 1, 1), ("bob", 2, 2), ("carol", 3, 3)] {
        std::fs::copy(fx.path(&format!("user{n}-device{device}")), dir.join(format!("{name}.db"))).unwrap();
    }
    std::fs::write(dir.join("photo.bin"), photo.to_bytes()).unwrap();
}

/// A fresh copy of a fixture database, so the committed file stays as released.
fn copy(from: &Path, name: &str) -> PathBuf {
    let scratch = std::env::temp_dir().join(format!("capsule-fixtures-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let to = scratch.join(format!("{}-{name}.db", from.file_name().unwrap().to_string_lossy()));
    std::fs::copy(from.join(format!("{name}.db")), &to).unwrap();
    to
}

fn open(dir: &Path, name: &str) -> Device {
    Device::open(&copy(dir, name), &db_key()).unwrap_or_else(|e| panic!("{}: {name}: {e}", dir.display()))
}

fn check(dir: &Path) {
    let photo = SealedPhoto::from_bytes(&std::fs::read(dir.join("photo.bin")).unwrap()).unwrap();
    let (alice, bob, carol) = (open(dir, "alice"), open(dir, "bob"), open(dir, "carol"));
    assert_eq!((alice.user(), bob.user(), carol.user()), (user(1), user(2), user(3)));
    for device in [&alice, &bob] {
        assert_eq!(device.status(ALBUM).unwrap(), AlbumStatus::InSync);
        let held = device.amk_versions(ALBUM).unwrap();
        assert_eq!((held.first_held.get(), held.current.get()), (1, 3));
        assert_eq!(device.open_photo(ALBUM, &photo).unwrap(), PHOTO);
        device.fingerprint(ALBUM).unwrap();
    }
    assert_eq!(alice.epoch(ALBUM).unwrap(), bob.epoch(ALBUM).unwrap());
    assert_eq!(alice.members(ALBUM).unwrap(), bob.members(ALBUM).unwrap());
    // Photos sealed now, under the released keyring, open on the other device.
    let fresh = alice.seal_photo(ALBUM, b"sealed by this build").unwrap();
    assert_eq!(bob.open_photo(ALBUM, &fresh).unwrap(), b"sealed by this build");
    // Carol awaits her re-add: read from her re-bootstrap record.
    assert_eq!(carol.status(ALBUM).unwrap(), AlbumStatus::AwaitingReadd);
    assert!(!carol.key_packages_held().unwrap().is_empty(), "the fresh KeyPackage of her re-bootstrap");
    assert!(matches!(carol.open_photo(ALBUM, &photo), Err(Error::Store(_))));
}

#[test]
fn databases_of_every_released_schema_open_and_work() {
    if let Some(name) = std::env::var_os("CAPSULE_WRITE_FIXTURES") {
        write(&Path::new(FIXTURES).join(name));
    }
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(FIXTURES).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no fixtures under {FIXTURES}");
    for dir in dirs {
        check(&dir);
    }
}
