//! What a device logs over a whole album story: spans name albums by a keyed
//! hash, and no secret, key, id or photo byte appears anywhere in the text.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)] // test code

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use capsule::resilience::Change;
use capsule::testkit::{ALBUM, Fixture, held_keys, user};

/// Everything the subscriber writes, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const PHOTO: &[u8] = b"PHOTO-PLAINTEXT-the-beach-at-dawn";

/// The ways a byte string could reach a log line.
fn renderings(bytes: &[u8]) -> Vec<String> {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let decimal = bytes.iter().take(8).map(u8::to_string).collect::<Vec<_>>().join(", ");
    vec![hex.clone(), hex.to_uppercase(), decimal, String::from_utf8_lossy(bytes).into_owned()]
}

/// The device's MLS signature key, read from its store as the test's key opens it.
fn device_secret(fx: &Fixture, name: &str) -> Vec<u8> {
    let conn = rusqlite::Connection::open(fx.path(name)).unwrap();
    // testkit::db_key(): 32 bytes of 0x5d.
    conn.pragma_update(None, "key", format!("x'{}'", "5d".repeat(32))).unwrap();
    let record: Vec<u8> =
        conn.query_row("SELECT value FROM capsule_records WHERE kind = 'device'", [], |r| r.get(0)).unwrap();
    // The format byte, then the 32 secret bytes.
    record[1..33].to_vec()
}

#[test]
fn a_whole_album_story_logs_no_secret_id_or_photo_byte() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::NEW)
        .with_writer(move || writer.clone())
        .finish();
    let mut fx = Fixture::new().unwrap();
    let (alice, bob, carol) = tracing::subscriber::with_default(subscriber, || {
        let (alice, bob) = fx.alice_and_bob().unwrap();
        let photo = alice.seal_photo(ALBUM, PHOTO).unwrap();
        assert_eq!(bob.open_photo(ALBUM, &photo).unwrap(), PHOTO);
        let carol = fx.enroll(3, 3).unwrap();
        alice.propose(ALBUM, Change::AddUser { user: user(3), directory: vec![carol.key_package().unwrap()] }).unwrap();
        fx.sync(&alice).unwrap();
        fx.join(&carol).unwrap();
        alice.propose(ALBUM, Change::RemoveUser { user: user(3) }).unwrap();
        fx.sync(&alice).unwrap();
        bob.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
        carol.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
        carol.rebootstrap(ALBUM).unwrap();
        bob.propose(ALBUM, Change::RotateAmk).unwrap();
        fx.sync(&bob).unwrap();
        alice.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation()).unwrap();
        alice.publish_fingerprint(ALBUM, &mut fx.chain()).unwrap();
        (alice, bob, carol)
    });
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();

    // The story was logged, inside spans naming the album by its log id.
    assert!(logs.contains("operation=\"seal_photo\""), "{logs}");
    assert!(logs.contains("commit applied") && logs.contains("commit staged"), "{logs}");
    let album_ids: std::collections::BTreeSet<&str> =
        logs.match_indices("album=").filter_map(|(i, _)| logs.get(i + 6..i + 14)).collect();
    assert!(!album_ids.is_empty() && album_ids.iter().all(|id| id.chars().all(|c| c.is_ascii_hexdigit())));

    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, device) in [("alice", &alice), ("bob", &bob)] {
        for (version, key) in held_keys(device, ALBUM).unwrap().keys {
            secrets.push((format!("{name}'s AMK {version}"), key.to_vec()));
        }
    }
    for (name, file) in [("alice", "user1-device1"), ("bob", "user2-device2"), ("carol", "user3-device3")] {
        secrets.push((format!("{name}'s device key"), device_secret(&fx, file)));
    }
    secrets.push(("the database key".into(), vec![0x5d; 32]));
    secrets.push(("the photo".into(), PHOTO.to_vec()));
    secrets.push(("the album id".into(), ALBUM.as_bytes().to_vec()));
    for n in 1..=3 {
        secrets.push((format!("user {n}'s id"), user(n).as_bytes().to_vec()));
    }
    assert!(secrets.len() > 8);
    for (what, bytes) in secrets {
        for rendering in renderings(&bytes) {
            assert!(!logs.contains(&rendering), "{what} appears in the logs as {rendering:?}");
        }
    }
    drop(carol);
}
