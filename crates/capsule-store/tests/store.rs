//! Opening files: what is refused (typed, file untouched), and what survives.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)] // test code

mod common;

use capsule_mls::MlsError;
use capsule_store::{DatabaseKey, SCHEMA_VERSION, Store, StoreError};
use common::*;

fn refused(s: &Scenario, name: &str, bytes: &[u8]) -> StoreError {
    let path = s.file(name, bytes);
    let err = Store::open(&path, &key()).unwrap_err();
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "a refused file is never modified");
    err
}

#[test]
fn corrupted_truncated_foreign_and_newer_files_are_refused() {
    let s = Scenario::new("refuse");
    let good = std::fs::read(s.path("alice")).unwrap();
    assert!(good.len() > 4096);
    // Not a database at all: encrypted pages and noise look alike, so the
    // key is what does not open it.
    assert!(matches!(refused(&s, "noise.db", &[0x5A; 8192]), StoreError::WrongKey));
    // Truncated: the header survives, the pages do not.
    let half = &good[..good.len() / 2];
    assert!(matches!(refused(&s, "half.db", half), StoreError::Corrupt(_)), "half");
    assert!(matches!(refused(&s, "stub.db", &good[..100]), StoreError::Corrupt(_)), "stub");
    // A damaged page in the middle.
    let mut damaged = good.clone();
    for b in &mut damaged[4096..4096 + 512] {
        *b ^= 0xFF;
    }
    assert!(matches!(refused(&s, "damaged.db", &damaged), StoreError::Corrupt(_)), "damaged");
    // Another application's database.
    let foreign = s.root.join("foreign.db");
    rusqlite::Connection::open(&foreign).unwrap().execute_batch("CREATE TABLE photos (id INTEGER);").unwrap();
    let before = std::fs::read(&foreign).unwrap();
    assert!(matches!(Store::open(&foreign, &key()), Err(StoreError::Foreign)));
    assert_eq!(std::fs::read(&foreign).unwrap(), before);
    // A newer schema.
    let newer = s.file("newer.db", &good);
    keyed(&newer).execute_batch("UPDATE capsule_schema SET version = 99;").unwrap();
    let before = std::fs::read(&newer).unwrap();
    match Store::open(&newer, &key()) {
        Err(StoreError::NewerSchema { found: 99, supported }) => assert_eq!(supported, SCHEMA_VERSION),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(&newer).unwrap(), before);
}

#[test]
fn a_device_key_that_does_not_match_its_certificate_is_refused() {
    let s = Scenario::new("keys");
    let path = s.path("bob");
    let conn = keyed(&path);
    let mut record: Vec<u8> =
        conn.query_row("SELECT value FROM capsule_records WHERE kind = 'device'", [], |r| r.get(0)).unwrap();
    // Format byte, then the 32 secret bytes.
    record[1] ^= 1;
    conn.execute("UPDATE capsule_records SET value = ?1 WHERE kind = 'device'", [record]).unwrap();
    drop(conn);
    assert!(matches!(Store::open(&path, &key()).unwrap().load_device(), Err(StoreError::KeyMaterial)));
}

/// What schema 1 wrote: the device record as JSON, the key-package and
/// re-bootstrap records without a format byte.
fn as_schema_1(path: &std::path::Path) {
    let conn = keyed(path);
    let device: Vec<u8> =
        conn.query_row("SELECT value FROM capsule_records WHERE kind = 'device'", [], |r| r.get(0)).unwrap();
    let (secret, certificate) = (&device[1..33], &device[33..]);
    // postcard's length prefix of the certificate, then the certificate.
    let certificate = postcard::from_bytes::<Vec<u8>>(certificate).unwrap();
    let json = serde_json::to_vec(&serde_json::json!({ "secret": secret, "certificate": certificate })).unwrap();
    conn.execute("UPDATE capsule_records SET value = ?1 WHERE kind = 'device'", [json]).unwrap();
    conn.execute(
        "UPDATE capsule_records SET value = substr(value, 2) WHERE kind IN ('key_package', 'rebootstrap')",
        [],
    )
    .unwrap();
    conn.execute("UPDATE capsule_schema SET version = 1", []).unwrap();
}

#[test]
fn records_of_schema_1_are_upgraded_when_the_store_opens() {
    let s = Scenario::new("schema1");
    let path = s.path("bob");
    let (device, key_packages) = {
        let store = Store::open(&path, &key()).unwrap();
        let me = store.load_device().unwrap();
        store.make_key_package(&me, 3600).unwrap();
        (me.certificate().clone(), store.key_packages().unwrap())
    };
    assert!(!key_packages.is_empty());
    as_schema_1(&path);
    let store = Store::open(&path, &key()).unwrap();
    assert_eq!(store.load_device().unwrap().certificate(), &device);
    assert_eq!(store.key_packages().unwrap(), key_packages);
    drop(store);
    let conn = keyed(&path);
    let version: i64 = conn.query_row("SELECT version FROM capsule_schema", [], |r| r.get(0)).unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let formats: Vec<u8> = conn
        .prepare("SELECT substr(value, 1, 1) FROM capsule_records WHERE kind IN ('device', 'key_package')")
        .unwrap()
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|f| f.unwrap()[0])
        .collect();
    assert!(formats.iter().all(|f| *f == 2), "{formats:?}");
}

#[test]
fn a_record_of_a_newer_format_is_refused_and_left_as_it_is() {
    let s = Scenario::new("newer");
    let path = s.path("bob");
    let conn = keyed(&path);
    conn.execute(
        "UPDATE capsule_records SET value = CAST(X'09' || substr(value, 2) AS BLOB) WHERE kind = 'device'",
        [],
    )
    .unwrap();
    let before: Vec<u8> =
        conn.query_row("SELECT value FROM capsule_records WHERE kind = 'device'", [], |r| r.get(0)).unwrap();
    drop(conn);
    let store = Store::open(&path, &key()).unwrap();
    assert!(matches!(store.load_device(), Err(StoreError::UnknownFormat { record: "device", format: 9 })));
    drop(store);
    let after: Vec<u8> =
        keyed(&path).query_row("SELECT value FROM capsule_records WHERE kind = 'device'", [], |r| r.get(0)).unwrap();
    assert_eq!(after, before);
}

/// A raw connection to an encrypted test store.
fn keyed(path: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_update(None, "key", format!("x'{}'", "5d".repeat(32))).unwrap();
    conn
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A lost phone's database: the file holds no SQLite header, no device key,
/// no AMK, no certificate in plaintext, and another key does not open it
/// (a typed error, the file untouched).
#[test]
fn the_database_is_unreadable_without_its_key() {
    let s = Scenario::new("at-rest");
    let (welcome, bundle) = s.add("bob", 2);
    let bob = s.open("bob");
    bob.join_album(&welcome, &bundle, s.dir.validation()).unwrap();
    let device = bob.load_device().unwrap();
    let secret = *device.secret_key_bytes();
    let certificate = device.certificate().to_bytes().unwrap();
    let album = bob.album(ALBUM).unwrap();
    let amk = *album.keyring().current().1.expose_secret();
    drop(bob);
    let bytes = std::fs::read(s.path("bob")).unwrap();
    assert!(bytes.len() > 4096);
    assert!(!contains(&bytes, b"SQLite format 3"), "no plaintext SQLite header");
    assert!(!contains(&bytes, &secret), "no device key");
    assert!(!contains(&bytes, &amk), "no AMK");
    assert!(!contains(&bytes, &certificate[..64]), "no certificate");
    assert!(!contains(&bytes, b"capsule_records"), "no schema");
    let other = DatabaseKey::from_bytes(&[0x5E; 32]);
    assert!(matches!(Store::open(&s.path("bob"), &other), Err(StoreError::WrongKey)));
    assert_eq!(std::fs::read(s.path("bob")).unwrap(), bytes, "a refused open never writes");
    // The right key still opens it.
    assert_eq!(s.open("bob").album(ALBUM).unwrap().epoch_authenticator(), album.epoch_authenticator());
}

/// Re-keying the database: the old key no longer opens it, the new one
/// opens everything it held.
#[test]
fn the_database_key_can_be_rotated() {
    let s = Scenario::new("rekey");
    let alice = s.open("alice");
    let before = alice.album(ALBUM).unwrap().epoch_authenticator();
    let new = DatabaseKey::from_bytes(&[0x77; 32]);
    alice.rekey(&new).unwrap();
    drop(alice);
    assert!(matches!(Store::open(&s.path("alice"), &key()), Err(StoreError::WrongKey)));
    let alice = Store::open(&s.path("alice"), &new).unwrap();
    assert_eq!(alice.album(ALBUM).unwrap().epoch_authenticator(), before);
    alice.load_device().unwrap();
}

/// A store an earlier version wrote in plaintext is encrypted on its first
/// open under the key given, and everything in it is still there; a leftover
/// of an interrupted encryption is cleared first.
#[test]
fn a_plaintext_store_is_encrypted_on_open() {
    let s = Scenario::new("plaintext");
    let before = s.open("alice").album(ALBUM).unwrap().epoch_authenticator();
    // The plaintext copy an earlier version would have left.
    let plain = s.root.join("plain.db");
    let conn = keyed(&s.path("alice"));
    conn.execute("ATTACH DATABASE ?1 AS plain KEY ''", [plain.to_str().unwrap()]).unwrap();
    conn.query_row("SELECT sqlcipher_export('plain')", [], |_| Ok(())).unwrap();
    conn.execute_batch("DETACH DATABASE plain").unwrap();
    drop(conn);
    assert!(std::fs::read(&plain).unwrap().starts_with(b"SQLite format 3\0"));
    std::fs::write(plain.with_extension("encrypting"), b"half an export").unwrap();
    let store = Store::open(&plain, &key()).unwrap();
    assert_eq!(store.album(ALBUM).unwrap().epoch_authenticator(), before);
    drop(store);
    assert!(!contains(&std::fs::read(&plain).unwrap(), b"SQLite format 3"));
    assert!(!plain.with_extension("encrypting").exists());
    assert!(matches!(Store::open(&plain, &DatabaseKey::from_bytes(&[1; 32])), Err(StoreError::WrongKey)));
    Store::open(&plain, &key()).unwrap().load_device().unwrap();
}

#[test]
fn a_fresh_connection_reads_exactly_what_was_written() {
    let s = Scenario::new("reopen");
    let (welcome, bundle) = s.add("bob", 2);
    s.open("bob").join_album(&welcome, &bundle, s.dir.validation()).unwrap();
    let alice = s.open("alice");
    let me = alice.load_device().unwrap();
    let pending =
        alice.with_album(ALBUM, |a, p| a.stage(p, &me, &capsule_mls::Change::RotateAmk, s.dir.validation())).unwrap();
    let a1 = alice.album(ALBUM).unwrap();
    drop(alice);
    let alice = s.open("alice");
    let a2 = alice.album(ALBUM).unwrap();
    assert_eq!(a2.epoch_authenticator(), a1.epoch_authenticator());
    assert_eq!(a2.keyring(), a1.keyring());
    assert_eq!(a2.pending(), Some(&pending), "the pending commit survives a restart");
    assert_eq!(a2.members(), a1.members());
}

#[test]
fn a_failed_operation_leaves_nothing_behind() {
    let s = Scenario::new("rollback");
    let (welcome, bundle) = s.add("bob", 2);
    let bob = s.open("bob");
    bob.join_album(&welcome, &bundle, s.dir.validation()).unwrap();
    let before = bob.album(ALBUM).unwrap();
    // Garbage is refused, inside a transaction that is rolled back.
    let err = bob.with_album(ALBUM, |a, p| a.process(p, b"not a commit", s.dir.validation())).unwrap_err();
    assert!(matches!(err, StoreError::Mls(MlsError::Malformed(_))), "{err}");
    // A commit that fails after OpenMLS staged it (the committer is not trusted) too.
    let alice = s.open("alice");
    let me = alice.load_device().unwrap();
    let out =
        alice.with_album(ALBUM, |a, p| a.stage(p, &me, &capsule_mls::Change::RotateAmk, s.dir.validation())).unwrap();
    alice.with_album(ALBUM, |a, p| a.confirm(p)).unwrap();
    let empty = std::collections::BTreeMap::new();
    let nobody = capsule_mls::Validation { trust: &empty, now: capsule_mls::testkit::NOW };
    assert!(bob.with_album(ALBUM, |a, p| a.process(p, &out.commit, nobody)).is_err());
    let after = bob.album(ALBUM).unwrap();
    assert_eq!(after.epoch_authenticator(), before.epoch_authenticator());
    assert_eq!(after.keyring(), before.keyring());
    // And the same commit applies once trusted: no half-written state got in the way.
    bob.with_album(ALBUM, |a, p| a.process(p, &out.commit, s.dir.validation())).unwrap();
    assert_eq!(bob.album(ALBUM).unwrap().epoch_authenticator(), alice.album(ALBUM).unwrap().epoch_authenticator());
}

#[test]
fn a_store_is_enrolled_once() {
    let mut s = Scenario::new("enrolled-once");
    let before = std::fs::read(s.path("bob")).unwrap();
    let bob = s.open("bob");
    let original = bob.load_device().unwrap();
    let other = s.dir.device(capsule_mls::testkit::uid(2)).unwrap();
    assert!(matches!(bob.save_device(&other.me), Err(StoreError::AlreadyEnrolled)));
    assert_eq!(bob.load_device().unwrap().certificate(), original.certificate(), "the key is never replaced");
    drop(bob);
    assert_eq!(std::fs::read(s.path("bob")).unwrap(), before, "a refused enrollment writes nothing");
}
