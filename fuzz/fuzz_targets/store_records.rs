//! Fuzz the device store's readers of its own records (`capsule-store`): the
//! device identity (JSON), an album record, its resilience record, a
//! re-bootstrap record and a KeyPackage record, each read back through the
//! store's public API after the fuzzer wrote the row.
//!
//! A real store (SQLCipher, in a per-process directory under `/dev/shm` or the
//! temporary directory) holds a device and an album; a second connection
//! with the same key overwrites one row per input (`[kind, value]`) and puts
//! it back after. Checks: never panics; whatever the store accepts is what
//! it would write for the value it read (each record is a format byte and a
//! postcard body; the album and resilience records carry their own formats
//! and upgrade older ones, so only a record of the current format is
//! compared). `[0xA9, 2, 0, 0]` (a KeyPackage record) is the regression of
//! this target's check from before the store's format byte.
#![no_main]

use capsule_amk::{AlbumId, AlbumMetadata, HistoryPolicy};
use capsule_fuzz::world::{A0, SEED, owner};
use capsule_identity::encoding;
use capsule_mls::testkit::Directory;
use capsule_resilience::RetryPolicy;
use capsule_store::{DatabaseKey, Store};
use libfuzzer_sys::fuzz_target;
use rusqlite::{Connection, OptionalExtension as _, params};

const KEY: [u8; 32] = [0x42; 32];
const ALBUM: AlbumId = AlbumId::from_bytes([0xD7; 16]);

struct Fixture {
    store: Store,
    /// The fuzzer's own connection to the same file.
    conn: Connection,
    kp_reference: Vec<u8>,
    _dir: capsule_fuzz::scratch::Dir,
}

fn fixture() -> Fixture {
    let dir = capsule_fuzz::scratch::directory("capsule-fuzz-store");
    let path = dir.path().join("device.db");
    let store = Store::open(&path, &DatabaseKey::from_bytes(&KEY)).expect("open the store");
    let mut people = Directory::new(SEED);
    let user = people.user(1).expect("user");
    assert_eq!(user, owner(A0));
    let device = people.device(user).expect("device");
    store.save_device(&device.me).expect("save the device");
    let metadata = AlbumMetadata::new(ALBUM, HistoryPolicy::Full, [user].into()).expect("metadata");
    store.create_album(&device.me, metadata).expect("create an album");
    let made = store.make_key_package(&device.me, capsule_mls::KEY_PACKAGE_LIFETIME_SECS).expect("a key package");
    let conn = Connection::open(&path).expect("a second connection");
    conn.pragma_update(None, "cipher_log_level", "NONE").expect("pragma");
    let hex: String = KEY.iter().map(|b| format!("{b:02x}")).collect();
    conn.pragma_update(None, "key", format!("x'{hex}'")).expect("key");
    // Nothing here must survive a power cut.
    conn.pragma_update(None, "synchronous", "OFF").expect("pragma");
    Fixture { store, conn, kp_reference: made.reference, _dir: dir }
}

thread_local! {
    static FIXTURE: Fixture = fixture();
}

/// The row kinds the store keeps (`capsule-store`'s `KIND_*`).
const KINDS: [&str; 5] = ["device", "album", "resilience", "rebootstrap", "key_package"];

fn get(conn: &Connection, kind: &str, id: &[u8]) -> Option<Vec<u8>> {
    conn.query_row("SELECT value FROM capsule_records WHERE kind = ?1 AND id = ?2", params![kind, id], |r| r.get(0))
        .optional()
        .expect("read a row")
}

fn put(conn: &Connection, kind: &str, id: &[u8], value: Option<&[u8]>) {
    match value {
        Some(value) => conn.execute(
            "INSERT INTO capsule_records (kind, id, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (kind, id) DO UPDATE SET value = excluded.value",
            params![kind, id, value],
        ),
        None => conn.execute("DELETE FROM capsule_records WHERE kind = ?1 AND id = ?2", params![kind, id]),
    }
    .expect("write a row");
}

fuzz_target!(|data: &[u8]| FIXTURE.with(|fx| {
    let Some((&kind, value)) = data.split_first() else { return };
    let kind = KINDS.get(usize::from(kind) % KINDS.len()).copied().unwrap_or("device");
    let id = match kind {
        "device" => b"self".to_vec(),
        "key_package" => fx.kp_reference.clone(),
        _ => ALBUM.as_bytes().to_vec(),
    };
    let original = get(&fx.conn, kind, &id);
    put(&fx.conn, kind, &id, Some(value));
    let policy = RetryPolicy::default();
    match kind {
        "device" => {
            // The record is its format byte, then the postcard encoding of
            // (secret key, certificate): the same bytes as that tuple's.
            if let Ok(device) = fx.store.load_device() {
                let certificate = device.certificate().to_bytes().expect("certificate");
                let body = encoding::encode(&(*device.secret_key_bytes(), certificate)).expect("encode");
                assert_eq!(value.get(1..), Some(body.as_slice()), "a device record not written back as read");
            }
        }
        "album" => {
            if let Ok(album) = fx.store.album(ALBUM) {
                let written = album.to_record().expect("record").to_vec();
                if written.first() == value.first() {
                    assert_eq!(written, value, "an album record not written back as read");
                }
            }
        }
        "resilience" => {
            if let Ok(record) = fx.store.read_resilient(ALBUM, policy, |r| r.to_record()) {
                let written = record.expect("record");
                if written.first() == value.first() {
                    assert_eq!(written, value, "a resilience record not written back as read");
                }
            }
        }
        "rebootstrap" => {
            if let Ok(Some(discarded)) = fx.store.rebootstrap_record(ALBUM) {
                let body = encoding::encode(&discarded).expect("encode");
                assert_eq!(value.get(1..), Some(body.as_slice()), "a re-bootstrap record not written back as read");
            }
        }
        _ => {
            if let Ok(records) = fx.store.key_packages() {
                let record = records.iter().find(|(r, _)| *r == fx.kp_reference).expect("the key package");
                let body = encoding::encode(&record.1).expect("encode");
                assert_eq!(value.get(1..), Some(body.as_slice()), "a KeyPackage record not written back as read");
            }
        }
    }
    put(&fx.conn, kind, &id, original.as_deref());
}));
