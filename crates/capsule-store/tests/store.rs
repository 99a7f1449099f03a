//! Opening files: what is refused (typed, file untouched), and what survives.

#![allow(clippy::unwrap_used, clippy::panic)] // test code

mod common;

use capsule_mls::MlsError;
use capsule_store::{SCHEMA_VERSION, Store, StoreError};
use common::*;

fn refused(s: &Scenario, name: &str, bytes: &[u8]) -> StoreError {
    let path = s.file(name, bytes);
    let err = Store::open(&path).unwrap_err();
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "a refused file is never modified");
    err
}

#[test]
fn corrupted_truncated_foreign_and_newer_files_are_refused() {
    let s = Scenario::new("refuse");
    let good = std::fs::read(s.path("alice")).unwrap();
    assert!(good.len() > 4096);
    // Not a database at all.
    assert!(matches!(refused(&s, "noise.db", &[0x5A; 8192]), StoreError::Corrupt(_)));
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
    assert!(matches!(Store::open(&foreign), Err(StoreError::Foreign)));
    assert_eq!(std::fs::read(&foreign).unwrap(), before);
    // A newer schema.
    let newer = s.file("newer.db", &good);
    rusqlite::Connection::open(&newer).unwrap().execute_batch("UPDATE capsule_schema SET version = 99;").unwrap();
    let before = std::fs::read(&newer).unwrap();
    match Store::open(&newer) {
        Err(StoreError::NewerSchema { found: 99, supported }) => assert_eq!(supported, SCHEMA_VERSION),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(&newer).unwrap(), before);
}

#[test]
fn a_device_key_that_does_not_match_its_certificate_is_refused() {
    let s = Scenario::new("keys");
    let path = s.path("bob");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let record: Vec<u8> =
        conn.query_row("SELECT value FROM capsule_records WHERE kind = 'device'", [], |r| r.get(0)).unwrap();
    let mut json: serde_json::Value = serde_json::from_slice(&record).unwrap();
    json["secret"][0] = serde_json::json!((json["secret"][0].as_u64().unwrap() + 1) % 256);
    conn.execute("UPDATE capsule_records SET value = ?1 WHERE kind = 'device'", [serde_json::to_vec(&json).unwrap()])
        .unwrap();
    drop(conn);
    assert!(matches!(Store::open(&path).unwrap().load_device(), Err(StoreError::KeyMaterial)));
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
