//! The server as an authority: it validates every commit against the album's
//! public state before ordering it, with Capsule's rules as members run them,
//! and the identity keys of its own directory. Each invalid commit is refused
//! with a typed reason, the chain is unchanged, and the honest devices never
//! see it. On SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code

mod common;

use std::time::Duration;

use capsule_amk::{AlbumId, AlbumMetadata, HistoryPolicy};
use capsule_chain::wire::DirectoryRefusal;
use capsule_chain::{ChainError, CommitChain, Epoch, Invalid, Refused, Submission, SubmitAnswer};
use capsule_client::{DirectoryError, HttpChain, HttpDirectory};
use capsule_identity::{DeviceClaims, DeviceSigningKey, IdentityKeyPair, UnixTime, Validity};
use capsule_mls::rules::Violation;
use capsule_mls::testkit::{Directory, TestDevice, forged_commit};
use capsule_mls::{Album, Change, Member, Outgoing, Validation};
use capsule_server::{Database, Outcome, Running, Settings};
use common::{LOOPBACK, fresh_postgres_db, postgres_url};

const ALBUM: AlbumId = AlbumId::from_bytes([0x5A; 16]);
const T: Duration = Duration::from_secs(30);

/// Every database the test matrix has: SQLite always, PostgreSQL when started.
fn databases(name: &str) -> Vec<(Database, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let mut out = vec![(Database::Sqlite(dir.path().join("chain.sqlite")), Some(dir))];
    if let Some(url) = postgres_url() {
        out.push((Database::Postgres { url: fresh_postgres_db(&url, name), connections: 4 }, None));
    }
    out
}

fn submission(out: &Outgoing) -> Submission {
    Submission {
        epoch: out.epoch,
        commit: out.commit.clone(),
        welcome: out.welcome.clone(),
        bundle: out.bundle.clone(),
    }
}

fn register(directory: &HttpDirectory, dir: &Directory, device: &TestDevice) {
    directory.register_user(&dir.trust[&device.user], device.me.certificate()).unwrap();
}

fn member(device: &TestDevice) -> Member {
    Member { user: device.user, device: device.id }
}

/// Submits a commit the server must refuse for `expected`, and checks that
/// nothing reached the chain.
fn assert_refused(chain: &mut HttpChain, what: &str, submission: &Submission, expected: Invalid, head: Epoch) {
    assert_eq!(
        chain.submit(submission),
        Err(ChainError::Refused(Refused::Invalid(expected))),
        "{what}: the server must refuse it"
    );
    assert_eq!(chain.head(), Ok(head), "{what}: the chain moved");
    let entries = chain.fetch(Epoch::ZERO).unwrap();
    assert_eq!(u64::try_from(entries.len()), Ok(head.0), "{what}: the chain holds something new");
    assert!(entries.iter().all(|e| e.commit != submission.commit), "{what}: a device would see it");
}

#[test]
fn the_server_refuses_what_members_would_refuse_and_orders_the_rest() {
    for (database, _dir) in databases("validation") {
        invalid_commits_never_enter_the_chain(&database);
    }
}

fn invalid_commits_never_enter_the_chain(database: &Database) {
    let server = Running::start(database, LOOPBACK, Settings::default()).unwrap();
    let (directory, mut chain) =
        (HttpDirectory::new(&server.url(), T), HttpChain::new(&server.url(), ALBUM.as_bytes(), T));
    let mut dir = Directory::new(41);
    let (alice, bob, carol) = (dir.user(1).unwrap(), dir.user(2).unwrap(), dir.user(3).unwrap());
    let (a0, b0, c0) = (dir.device(alice).unwrap(), dir.device(bob).unwrap(), dir.device(carol).unwrap());
    for device in [&a0, &b0, &c0] {
        register(&directory, &dir, device);
    }

    // Alice creates the album and registers it with its public state.
    let metadata = AlbumMetadata::new(ALBUM, HistoryPolicy::Full, [alice].into()).unwrap();
    let mut a = Album::create(&a0.provider, &a0.me, metadata).unwrap();
    let genesis = a.genesis(&a0.provider, &a0.me).unwrap();
    assert_eq!(chain.create_album(Epoch::ZERO, Some(&genesis)), Ok(Epoch::ZERO));
    // An honest add is ordered.
    let add_bob = Change::AddUser { user: bob, directory: vec![b0.key_package().unwrap()] };
    let out = a.stage(&a0.provider, &a0.me, &add_bob, dir.validation()).unwrap();
    assert_eq!(chain.submit(&submission(&out)), Ok(SubmitAnswer::Accepted { epoch: Epoch(0) }));
    a.confirm(&a0.provider).unwrap();
    let mut b =
        Album::join(&b0.provider, out.welcome.as_ref().unwrap(), out.bundle.as_ref().unwrap(), dir.validation())
            .unwrap();
    let head = Epoch(1);

    // 1. A device whose certificate expired, added by a client whose clock is wrong.
    let expired = Validity::new(UnixTime(0), UnixTime(1_000_000_000)).unwrap();
    let b1 = dir.device_for(bob, expired).unwrap();
    let wrong_clock = Validation { trust: &dir.trust, now: UnixTime(999_999_999) };
    let add_expired = Change::AddDevice { key_package: b1.key_package().unwrap() };
    let out = b.stage(&b0.provider, &b0.me, &add_expired, wrong_clock).unwrap();
    assert_refused(&mut chain, "an expired certificate", &submission(&out), Invalid::Certificate, head);
    b.reject(&b0.provider).unwrap();

    // 2. Bob (not an admin) adds Carol, with a modified client.
    let forged = forged_commit(&b0, ALBUM, &[c0.key_package().unwrap()], &[], None).unwrap();
    let s = Submission { epoch: head, commit: forged, welcome: None, bundle: None };
    assert_refused(&mut chain, "a non-admin adding a user", &s, Invalid::Rule(Violation::NotAdmin), head);

    // 3. Alice removes Bob without rotating the AMK.
    let forged = forged_commit(&a0, ALBUM, &[], &[member(&b0)], None).unwrap();
    let s = Submission { epoch: head, commit: forged, welcome: None, bundle: None };
    assert_refused(
        &mut chain,
        "a removal without rotation",
        &s,
        Invalid::Rule(Violation::RemovalWithoutRotation),
        head,
    );

    // 4. Alice makes Bob an admin outside the upgrade ceremony (no version bump).
    let mut context = a.context().clone();
    context.metadata = AlbumMetadata::new(ALBUM, HistoryPolicy::Full, [alice, bob].into()).unwrap();
    let forged = forged_commit(&a0, ALBUM, &[], &[], Some(&context)).unwrap();
    let s = Submission { epoch: head, commit: forged, welcome: None, bundle: None };
    assert_refused(
        &mut chain,
        "a metadata change outside the upgrade",
        &s,
        Invalid::Rule(Violation::IllegalUpgrade),
        head,
    );

    // 5. A forged signature: Alice's genuine commit with one byte changed.
    let out = a.stage(&a0.provider, &a0.me, &Change::RotateAmk, dir.validation()).unwrap();
    let mut tampered = submission(&out);
    let middle = tampered.commit.len() / 2;
    tampered.commit[middle] ^= 1;
    assert_refused(&mut chain, "a forged signature", &tampered, Invalid::Signature, head);
    a.reject(&a0.provider).unwrap();

    // Alice removes Bob, honestly.
    let out = a.stage(&a0.provider, &a0.me, &Change::RemoveUser { user: bob }, dir.validation()).unwrap();
    assert_eq!(chain.submit(&submission(&out)), Ok(SubmitAnswer::Accepted { epoch: head }));
    a.confirm(&a0.provider).unwrap();
    let head = Epoch(2);

    // 6. Bob's commit built from his old state: for the epoch he was removed
    // in it only loses the race; claiming the head it is refused.
    let out = b.stage(&b0.provider, &b0.me, &Change::RotateAmk, dir.validation()).unwrap();
    assert_eq!(chain.submit(&submission(&out)), Ok(SubmitAnswer::Conflict { head }));
    let lying = Submission { epoch: head, ..submission(&out) };
    assert_eq!(
        chain.submit(&lying),
        Err(ChainError::Refused(Refused::WrongEpoch { claimed: head, framed: Epoch(1) })),
        "a removed device's commit"
    );
    b.reject(&b0.provider).unwrap();

    // The honest devices saw only honest commits: Bob learns he was removed,
    // and the album goes on (Alice adds Carol).
    let entries = chain.fetch(Epoch(1)).unwrap();
    assert_eq!(entries.len(), 1);
    let applied = b.process(&b0.provider, &entries[0].commit, dir.validation()).unwrap();
    assert!(applied.evicted);
    let add_carol = Change::AddUser { user: carol, directory: vec![c0.key_package().unwrap()] };
    let out = a.stage(&a0.provider, &a0.me, &add_carol, dir.validation()).unwrap();
    assert_eq!(chain.submit(&submission(&out)), Ok(SubmitAnswer::Accepted { epoch: head }));
    a.confirm(&a0.provider).unwrap();
    let c = Album::join(&c0.provider, out.welcome.as_ref().unwrap(), out.bundle.as_ref().unwrap(), dir.validation())
        .unwrap();
    assert_eq!(c.epoch_authenticator(), a.epoch_authenticator());
    // Five invalid commits and one at the wrong position, counted as refused.
    assert_eq!(server.metrics().get(Outcome::Refused), 6);
    assert_eq!(server.metrics().get(Outcome::Accepted), 3);
}

#[test]
fn an_album_is_registered_only_with_a_public_state_that_verifies() {
    for (database, _dir) in databases("genesis") {
        let server = Running::start(&database, LOOPBACK, Settings::default()).unwrap();
        let directory = HttpDirectory::new(&server.url(), T);
        let mut dir = Directory::new(42);
        let (alice, dave) = (dir.user(1).unwrap(), dir.user(4).unwrap());
        let (a0, d0) = (dir.device(alice).unwrap(), dir.device(dave).unwrap());
        register(&directory, &dir, &a0);
        let album = |id: AlbumId, device: &TestDevice| {
            let metadata = AlbumMetadata::new(id, HistoryPolicy::Full, [device.user].into()).unwrap();
            Album::create(&device.provider, &device.me, metadata)
                .unwrap()
                .genesis(&device.provider, &device.me)
                .unwrap()
        };
        let mut chain = HttpChain::new(&server.url(), ALBUM.as_bytes(), T);
        let refused = |i| Err(ChainError::Refused(Refused::Invalid(i)));
        // Nothing to validate against: refused.
        assert_eq!(chain.create_album(Epoch::ZERO, None), refused(Invalid::Malformed));
        // Dave is not in the directory.
        assert_eq!(chain.create_album(Epoch::ZERO, Some(&album(ALBUM, &d0))), refused(Invalid::UnknownIdentity));
        // Another album's state.
        let other = album(AlbumId::from_bytes([0x5B; 16]), &a0);
        assert_eq!(chain.create_album(Epoch::ZERO, Some(&other)), refused(Invalid::NotMember));
        // A state for another epoch than the album's first.
        let genesis = album(ALBUM, &a0);
        assert_eq!(chain.create_album(Epoch(3), Some(&genesis)), refused(Invalid::Protocol));
        // A tampered GroupInfo.
        let mut tampered = genesis.clone();
        let last = tampered.group_info.len() - 1;
        tampered.group_info[last] ^= 1;
        assert!(matches!(chain.create_album(Epoch::ZERO, Some(&tampered)), Err(ChainError::Refused(_))));
        // None of those registered the album.
        assert_eq!(chain.head(), Err(ChainError::UnknownAlbum));
        assert_eq!(chain.create_album(Epoch::ZERO, Some(&genesis)), Ok(Epoch::ZERO));
        assert_eq!(chain.head(), Ok(Epoch::ZERO));
    }
}

#[test]
fn the_directory_files_keys_once_and_certificates_that_verify() {
    for (database, _dir) in databases("directory") {
        let server = Running::start(&database, LOOPBACK, Settings::default()).unwrap();
        let directory = HttpDirectory::new(&server.url(), T);
        let mut dir = Directory::new(43);
        let (alice, bob) = (dir.user(1).unwrap(), dir.user(2).unwrap());
        let (a0, a1, b0) = (dir.device(alice).unwrap(), dir.device(alice).unwrap(), dir.device(bob).unwrap());
        fn refused<T>(r: DirectoryRefusal) -> Result<T, DirectoryError> {
            Err(DirectoryError::Refused(r))
        }
        let now = UnixTime(1_900_000_000);
        assert_eq!(directory.lookup(alice, now), refused(DirectoryRefusal::UnknownUser));
        assert_eq!(directory.register_device(a1.me.certificate()), refused(DirectoryRefusal::UnknownUser));
        // Alice's certificate does not verify under Bob's key.
        assert_eq!(
            directory.register_user(&dir.trust[&bob], a0.me.certificate()),
            refused(DirectoryRefusal::BadCertificate)
        );
        register(&directory, &dir, &a0);
        register(&directory, &dir, &a0); // again: the same
        register(&directory, &dir, &b0);
        // Someone else claims Alice with a key of their own, proving they hold it.
        let squatter = IdentityKeyPair::generate().unwrap();
        let claims = DeviceClaims {
            user: alice,
            device: a0.id,
            device_key: DeviceSigningKey::from_secret_bytes(&[9; 32]).public_key(),
            validity: Validity::new(UnixTime(0), UnixTime(u64::MAX)).unwrap(),
        };
        let claim = squatter.certify_device(&claims).unwrap();
        assert_eq!(directory.register_user(squatter.public_key(), &claim), refused(DirectoryRefusal::KeyTaken));
        assert_eq!(directory.lookup(alice, now).unwrap().identity_key, dir.trust[&alice]);
        directory.register_device(a1.me.certificate()).unwrap();
        let listed = directory.lookup(alice, now).unwrap();
        assert_eq!(listed.identity_key, dir.trust[&alice]);
        let mut devices: Vec<_> = listed.certificates.iter().map(capsule_identity::DeviceCertificate::device).collect();
        devices.sort();
        assert_eq!(devices, vec![a0.id, a1.id]);
        // A certificate ending earlier than the one filed is stale; the filed one stays.
        let key = DeviceSigningKey::from_secret_bytes(&[7; 32]);
        let short =
            dir.certify_for(alice, a1.id, &key, Validity::new(UnixTime(0), UnixTime(2_000_000_000)).unwrap()).unwrap();
        assert_eq!(directory.register_device(&short), refused(DirectoryRefusal::Stale));
        assert!(directory.lookup(alice, now).unwrap().certificates.contains(a1.me.certificate()));
    }
}
