//! A refused input changes nothing: for every inbound path of a stored album
//! (a commit to process, a Welcome and bundle to join, KeyPackages to add),
//! mutated valid messages are refused with a typed error, and the database's
//! whole content (every row of every table, OpenMLS's and Capsule's) is the
//! same after as before.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)] // test code

mod common;

use std::path::Path;

use capsule_mls::{Change, MlsError};
use capsule_store::{Store, StoreError};
use common::*;
use proptest::prelude::*;

/// Every row of every table, rendered and sorted: equal iff the content is.
fn content(path: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_update(None, "key", format!("x'{}'", "5d".repeat(32))).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut rows = Vec::new();
    for table in tables {
        let mut statement = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns = statement.column_count();
        let mut query = statement.query([]).unwrap();
        while let Some(row) = query.next().unwrap() {
            let values: Vec<String> =
                (0..columns).map(|i| format!("{:?}", row.get::<_, rusqlite::types::Value>(i).unwrap())).collect();
            rows.push(format!("{table}: {}", values.join(" | ")));
        }
    }
    rows.sort();
    rows
}

/// A mutation of a valid message.
#[derive(Clone, Debug)]
enum Mutation {
    /// One bit flipped at this position (modulo the length).
    Flip(usize, u8),
    /// Cut to this length (modulo the length).
    Truncate(usize),
    /// Bytes appended.
    Append(Vec<u8>),
    /// Two bytes swapped (reordered), at these positions (modulo the length).
    Swap(usize, usize),
}

impl Mutation {
    fn apply(&self, valid: &[u8]) -> Vec<u8> {
        let mut bytes = valid.to_vec();
        let n = bytes.len().max(1);
        match self {
            Self::Flip(at, bit) => bytes[at % n] ^= 1 << (bit % 8),
            Self::Truncate(to) => bytes.truncate(to % n),
            Self::Append(extra) => bytes.extend_from_slice(extra),
            Self::Swap(a, b) => bytes.swap(a % n, b % n),
        }
        bytes
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, bit)| Mutation::Flip(at, bit)),
        any::<usize>().prop_map(Mutation::Truncate),
        proptest::collection::vec(any::<u8>(), 1..16).prop_map(Mutation::Append),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
    ]
}

/// A refusal: typed, not a fault of this device.
fn assert_refusal(result: Result<impl core::fmt::Debug, StoreError>, what: &str) {
    match result {
        Err(StoreError::Mls(e)) => assert!(!e.is_internal(), "{what}: a fault, not a refusal: {e:?}"),
        Err(e) => panic!("{what}: not an MLS refusal: {e:?}"),
        Ok(v) => panic!("{what}: accepted: {v:?}"),
    }
}

/// Alice's album with Bob in it; Alice's rotation (pending on her device), a
/// Welcome for Carol, Carol's KeyPackage and a commit of an earlier epoch.
struct World {
    s: Scenario,
    bob: Store,
    carol: Store,
    alice: Store,
    rotation: Vec<u8>,
    earlier: Vec<u8>,
    welcome: (Vec<u8>, Vec<u8>),
    carol_kp: Vec<u8>,
}

fn world(name: &str) -> World {
    let s = Scenario::new(name);
    let (welcome, bundle) = s.add("bob", 2);
    let bob = s.open("bob");
    bob.join_album(&welcome, &bundle, s.dir.validation()).unwrap();
    let alice = s.open("alice");
    let me = alice.load_device().unwrap();
    // An earlier epoch's commit: a rotation Bob has already applied.
    let earlier = alice.with_album(ALBUM, |a, p| a.stage(p, &me, &Change::RotateAmk, s.dir.validation())).unwrap();
    alice.with_album(ALBUM, |a, p| a.confirm(p)).unwrap();
    bob.with_album(ALBUM, |a, p| a.process(p, &earlier.commit, s.dir.validation())).unwrap();
    let carol = s.open("carol");
    let carol_kp = {
        let me = carol.load_device().unwrap();
        carol.with_provider(|p| capsule_mls::key_package(p, &me)).unwrap()
    };
    let change = Change::AddUser { user: capsule_mls::testkit::uid(3), directory: vec![carol_kp.clone()] };
    let add = alice.with_album(ALBUM, |a, p| a.stage(p, &me, &change, s.dir.validation())).unwrap();
    let welcome = (add.welcome.clone().unwrap(), add.bundle.clone().unwrap());
    alice.with_album(ALBUM, |a, p| a.reject(p)).unwrap();
    let rotation = alice.with_album(ALBUM, |a, p| a.stage(p, &me, &Change::RotateAmk, s.dir.validation())).unwrap();
    World { s, bob, carol, alice, rotation: rotation.commit, earlier: earlier.commit, welcome, carol_kp }
}

proptest! {
    // Each case builds a fresh album on disk: a few in the fast tier, many in the slow one.
    #![proptest_config(ProptestConfig {
        cases: if std::env::var_os("CAPSULE_SLOW").is_some() { 400 } else { 16 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_mutated_commit_is_refused_and_the_database_is_unchanged(m in mutation()) {
        let w = world("refuse-commit");
        let path = w.s.path("bob");
        let before = (content(&path), w.bob.album(ALBUM).unwrap().epoch_authenticator());
        let mutated = m.apply(&w.rotation);
        prop_assume!(mutated != w.rotation);
        assert_refusal(w.bob.with_album(ALBUM, |a, p| a.process(p, &mutated, w.s.dir.validation())), "commit");
        prop_assert_eq!((content(&path), w.bob.album(ALBUM).unwrap().epoch_authenticator()), before);
        // The valid commit still applies afterwards.
        w.bob.with_album(ALBUM, |a, p| a.process(p, &w.rotation, w.s.dir.validation())).unwrap();
    }

    #[test]
    fn a_mutated_welcome_or_bundle_is_refused_and_the_database_is_unchanged(m in mutation(), bundle in any::<bool>()) {
        let w = world("refuse-welcome");
        let path = w.s.path("carol");
        let before = content(&path);
        let (welcome, sealed) = &w.welcome;
        let (welcome, sealed) = if bundle { (welcome.clone(), m.apply(sealed)) } else { (m.apply(welcome), sealed.clone()) };
        prop_assume!((&welcome, &sealed) != (&w.welcome.0, &w.welcome.1));
        assert_refusal(w.carol.join_album(&welcome, &sealed, w.s.dir.validation()), "welcome");
        prop_assert_eq!(content(&path), before);
    }

    #[test]
    fn a_mutated_key_package_is_refused_and_the_database_is_unchanged(m in mutation()) {
        let w = world("refuse-kp");
        let path = w.s.path("alice");
        let me = w.alice.load_device().unwrap();
        w.alice.with_album(ALBUM, |a, p| a.reject(p)).unwrap();
        let before = content(&path);
        let mutated = m.apply(&w.carol_kp);
        prop_assume!(mutated != w.carol_kp);
        let change = Change::AddUser { user: capsule_mls::testkit::uid(3), directory: vec![mutated] };
        assert_refusal(w.alice.with_album(ALBUM, |a, p| a.stage(p, &me, &change, w.s.dir.validation())), "key package");
        prop_assert_eq!(content(&path), before);
    }
}

/// Replays: a commit of an epoch already applied, and the same commit twice.
#[test]
fn a_replayed_commit_is_refused_and_the_database_is_unchanged() {
    let w = world("refuse-replay");
    let path = w.s.path("bob");
    let before = content(&path);
    let result = w.bob.with_album(ALBUM, |a, p| a.process(p, &w.earlier, w.s.dir.validation()));
    assert!(
        matches!(result, Err(StoreError::Mls(MlsError::AlreadyApplied | MlsError::WrongEpoch { .. }))),
        "{result:?}"
    );
    assert_eq!(content(&path), before);
    w.bob.with_album(ALBUM, |a, p| a.process(p, &w.rotation, w.s.dir.validation())).unwrap();
    let applied = content(&path);
    assert_ne!(applied, before, "the content comparison sees a real change");
    assert_refusal(w.bob.with_album(ALBUM, |a, p| a.process(p, &w.rotation, w.s.dir.validation())), "replay");
    assert_eq!(content(&path), applied);
}

/// A replay from another album: Bob is in a second album at the same epoch,
/// and that album's commit for it is fed to the first.
#[test]
fn a_commit_of_another_album_is_refused_and_the_database_is_unchanged() {
    use capsule_amk::{AlbumId, AlbumMetadata, HistoryPolicy};
    const OTHER: AlbumId = AlbumId::from_bytes([0xC6; 16]);
    let w = world("refuse-other-album");
    let me = w.alice.load_device().unwrap();
    let v = w.s.dir.validation();
    let meta = AlbumMetadata::new(OTHER, HistoryPolicy::Full, [capsule_mls::testkit::uid(1)].into()).unwrap();
    w.alice.create_album(&me, meta).unwrap();
    let bob_kp = {
        let bob = w.bob.load_device().unwrap();
        w.bob.with_provider(|p| capsule_mls::key_package(p, &bob)).unwrap()
    };
    let add = Change::AddUser { user: capsule_mls::testkit::uid(2), directory: vec![bob_kp] };
    let out = w.alice.with_album(OTHER, |a, p| a.stage(p, &me, &add, v)).unwrap();
    w.alice.with_album(OTHER, |a, p| a.confirm(p)).unwrap();
    w.bob.join_album(&out.welcome.unwrap(), &out.bundle.unwrap(), v).unwrap();
    let step = w.alice.with_album(OTHER, |a, p| a.stage(p, &me, &Change::RotateAmk, v)).unwrap();
    w.alice.with_album(OTHER, |a, p| a.confirm(p)).unwrap();
    w.bob.with_album(OTHER, |a, p| a.process(p, &step.commit, v)).unwrap();
    // Both albums at the same epoch, so only the group tells the commits apart.
    let other = w.alice.with_album(OTHER, |a, p| a.stage(p, &me, &Change::RotateAmk, v)).unwrap();
    let mine = w.bob.album(ALBUM).unwrap();
    assert_eq!(w.bob.album(OTHER).unwrap().epoch(), mine.epoch());
    let path = w.s.path("bob");
    let before = content(&path);
    assert_refusal(w.bob.with_album(ALBUM, |a, p| a.process(p, &other.commit, v)), "another album's commit");
    assert_eq!(content(&path), before);
    assert_eq!(w.bob.album(ALBUM).unwrap().epoch_authenticator(), mine.epoch_authenticator());
    // Each commit still applies to its own album.
    w.bob.with_album(OTHER, |a, p| a.process(p, &other.commit, v)).unwrap();
    w.bob.with_album(ALBUM, |a, p| a.process(p, &w.rotation, v)).unwrap();
}
