//! The server as an authority: it validates every commit against the album's
//! public state before ordering it, with Capsule's rules as members run them,
//! and the identity keys of its own directory. Each invalid commit is refused
//! with a typed reason, the chain is unchanged, and the honest devices never
//! see it. On SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code

mod common;

use std::time::Duration;

use capsule_amk::{AlbumId, AlbumMetadata, HistoryPolicy};
use capsule_chain::wire::{self, AUTH_HEADER, AuthRefusal, DirectoryRefusal, Reply, RequestAuth, ServerError};
use capsule_chain::{ChainError, CommitChain, Epoch, Invalid, Refused, Submission, SubmitAnswer};
use capsule_client::{DirectoryError, HttpChain, HttpDirectory};
use capsule_identity::{DeviceClaims, DeviceSigningKey, IdentityKeyPair, UnixTime, Validity};
use capsule_mls::rules::Violation;
use capsule_mls::testkit::{Directory, TestDevice, forged_commit};
use capsule_mls::{Album, Change, Member, Validation};
use capsule_server::{Database, Outcome, Running, Settings};
use common::{LOOPBACK, credentials, databases};

const ALBUM: AlbumId = AlbumId::from_bytes([0x5A; 16]);
const T: Duration = Duration::from_secs(30);

fn register(directory: &HttpDirectory, dir: &Directory, device: &TestDevice) {
    directory.register_user(&dir.trust[&device.user], device.me.certificate()).unwrap();
}

/// The album's chain as `device` reaches it: every request signed.
fn chain_of(server: &Running, device: &TestDevice) -> HttpChain {
    HttpChain::new(&server.url(), ALBUM.as_bytes(), T).with_credentials(credentials(device))
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
    let directory = HttpDirectory::new(&server.url(), T);
    let mut dir = Directory::new(41);
    let (alice, bob, carol) = (dir.user(1).unwrap(), dir.user(2).unwrap(), dir.user(3).unwrap());
    let (a0, b0, c0) = (dir.device(alice).unwrap(), dir.device(bob).unwrap(), dir.device(carol).unwrap());
    for device in [&a0, &b0, &c0] {
        register(&directory, &dir, device);
    }
    let (mut chain, mut bob_chain) = (chain_of(&server, &a0), chain_of(&server, &b0));

    // Alice creates the album and registers it with its public state.
    let metadata = AlbumMetadata::new(ALBUM, HistoryPolicy::Full, [alice].into()).unwrap();
    let mut a = Album::create(&a0.provider, &a0.me, metadata).unwrap();
    let genesis = a.genesis(&a0.provider, &a0.me).unwrap();
    assert_eq!(chain.create_album(Epoch::ZERO, Some(&genesis)), Ok(Epoch::ZERO));
    // An honest add is ordered.
    let add_bob = Change::AddUser { user: bob, directory: vec![b0.key_package().unwrap()] };
    let out = a.stage(&a0.provider, &a0.me, &add_bob, dir.validation()).unwrap();
    assert_eq!(chain.submit(&Submission::from(&out)), Ok(SubmitAnswer::Accepted { epoch: Epoch(0) }));
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
    assert_refused(&mut bob_chain, "an expired certificate", &Submission::from(&out), Invalid::Certificate, head);
    b.reject(&b0.provider).unwrap();

    // 2. Bob (not an admin) adds Carol, with a modified client.
    let forged = forged_commit(&b0, ALBUM, &[c0.key_package().unwrap()], &[], None).unwrap();
    let s = Submission { epoch: head, commit: forged, welcome: None, bundle: None };
    assert_refused(&mut bob_chain, "a non-admin adding a user", &s, Invalid::Rule(Violation::NotAdmin), head);

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
    let mut tampered = Submission::from(&out);
    let middle = tampered.commit.len() / 2;
    tampered.commit[middle] ^= 1;
    assert_refused(&mut chain, "a forged signature", &tampered, Invalid::Signature, head);
    a.reject(&a0.provider).unwrap();

    // Alice removes Bob, honestly.
    let out = a.stage(&a0.provider, &a0.me, &Change::RemoveUser { user: bob }, dir.validation()).unwrap();
    assert_eq!(chain.submit(&Submission::from(&out)), Ok(SubmitAnswer::Accepted { epoch: head }));
    a.confirm(&a0.provider).unwrap();
    let head = Epoch(2);

    // 6. Bob's commit built from his old state: he may no longer write, and
    // relayed by a member it only loses the race, or claiming the head it is
    // refused.
    let out = b.stage(&b0.provider, &b0.me, &Change::RotateAmk, dir.validation()).unwrap();
    assert_eq!(bob_chain.submit(&Submission::from(&out)), Err(ChainError::Denied));
    assert_eq!(chain.submit(&Submission::from(&out)), Ok(SubmitAnswer::Conflict { head }));
    let lying = Submission { epoch: head, ..Submission::from(&out) };
    assert_eq!(
        chain.submit(&lying),
        Err(ChainError::Refused(Refused::WrongEpoch { claimed: head, framed: Epoch(1) })),
        "a removed device's commit"
    );
    b.reject(&b0.provider).unwrap();

    // The honest devices saw only honest commits: Bob reads up to the commit
    // that removed him and learns of it, and the album goes on (Alice adds Carol).
    assert_eq!(bob_chain.head(), Ok(head));
    let entries = bob_chain.fetch(Epoch(1)).unwrap();
    assert_eq!(entries.len(), 1);
    let applied = b.process(&b0.provider, &entries[0].commit, dir.validation()).unwrap();
    assert!(applied.evicted);
    let add_carol = Change::AddUser { user: carol, directory: vec![c0.key_package().unwrap()] };
    let out = a.stage(&a0.provider, &a0.me, &add_carol, dir.validation()).unwrap();
    assert_eq!(chain.submit(&Submission::from(&out)), Ok(SubmitAnswer::Accepted { epoch: head }));
    a.confirm(&a0.provider).unwrap();
    let c = Album::join(&c0.provider, out.welcome.as_ref().unwrap(), out.bundle.as_ref().unwrap(), dir.validation())
        .unwrap();
    assert_eq!(c.epoch_authenticator(), a.epoch_authenticator());
    // Bob reads nothing past his removal.
    assert_eq!(bob_chain.head(), Ok(head));
    assert_eq!(bob_chain.fetch(Epoch(1)).unwrap().len(), 1);
    assert_eq!(bob_chain.fetch(head), Err(ChainError::Denied));
    assert_eq!(bob_chain.welcome(head), Err(ChainError::Denied));
    // Carol reads all of it from her joining on; Alice all of it.
    assert_eq!(chain_of(&server, &c0).head(), Ok(Epoch(3)));
    assert_eq!(chain.fetch(Epoch::ZERO).unwrap().len(), 3);
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
        let (genesis, daves, other) =
            (album(ALBUM, &a0), album(ALBUM, &d0), album(AlbumId::from_bytes([0x5B; 16]), &a0));
        let mut chain = chain_of(&server, &a0);
        let refused = |i| Err(ChainError::Refused(Refused::Invalid(i)));
        // Nothing to validate against: refused.
        assert_eq!(chain.create_album(Epoch::ZERO, None), refused(Invalid::Malformed));
        // Dave is not in the directory; once he is, Alice may not register his album.
        assert_eq!(chain.create_album(Epoch::ZERO, Some(&daves)), refused(Invalid::UnknownIdentity));
        register(&directory, &dir, &d0);
        assert_eq!(chain.create_album(Epoch::ZERO, Some(&daves)), Err(ChainError::Denied));
        // Unsigned.
        let unsigned = HttpChain::new(&server.url(), ALBUM.as_bytes(), T).create_album(Epoch::ZERO, Some(&genesis));
        assert_eq!(unsigned, Err(ChainError::Denied));
        // Another album's state.
        assert_eq!(chain.create_album(Epoch::ZERO, Some(&other)), refused(Invalid::NotMember));
        // A state for another epoch than the album's first.
        assert_eq!(chain.create_album(Epoch(3), Some(&genesis)), refused(Invalid::Protocol));
        // A tampered GroupInfo.
        let mut tampered = genesis.clone();
        let last = tampered.group_info.len() - 1;
        tampered.group_info[last] ^= 1;
        assert!(matches!(chain.create_album(Epoch::ZERO, Some(&tampered)), Err(ChainError::Refused(_))));
        // None of those registered the album: nobody may read it.
        assert_eq!(chain.head(), Err(ChainError::Denied));
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
        directory.register_device(a1.me.certificate()).unwrap();
        // Only registered devices read the directory.
        assert_eq!(directory.lookup(alice, now), Err(DirectoryError::Denied));
        let directory = directory.with_credentials(credentials(&b0));
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

#[test]
fn every_request_is_signed_by_a_registered_device_once_and_for_what_it_asks() {
    for (database, _dir) in databases("auth") {
        let server = Running::start(&database, LOOPBACK, Settings::default()).unwrap();
        let directory = HttpDirectory::new(&server.url(), T);
        let mut dir = Directory::new(44);
        let (alice, eve) = (dir.user(1).unwrap(), dir.user(5).unwrap());
        let (a0, e0) = (dir.device(alice).unwrap(), dir.device(eve).unwrap());
        register(&directory, &dir, &a0);
        let metadata = AlbumMetadata::new(ALBUM, HistoryPolicy::Full, [alice].into()).unwrap();
        let album = Album::create(&a0.provider, &a0.me, metadata).unwrap();
        let genesis = album.genesis(&a0.provider, &a0.me).unwrap();
        assert_eq!(chain_of(&server, &a0).create_album(Epoch::ZERO, Some(&genesis)), Ok(Epoch::ZERO));

        let hex: String = ALBUM.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let url = format!("{}/v1/albums/{hex}/head", server.url());
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
        let get = |header: Option<&str>| {
            let request = agent.get(&url);
            let mut response = match header {
                Some(h) => request.header(AUTH_HEADER, h).call(),
                None => request.call(),
            }
            .unwrap();
            let body = response.body_mut().read_to_vec().unwrap();
            (response.status().as_u16(), wire::decode::<Reply>(&body, 1 << 20).unwrap())
        };
        let denied = |r| (401, Reply::Error(ServerError::Unauthenticated(r)));
        let alices = credentials(&a0);

        // Signed: answered, once.
        let signed = alices.header("GET", &url, &[]).unwrap();
        assert_eq!(get(Some(&signed)), (200, Reply::Head(Epoch::ZERO)));
        assert_eq!(get(Some(&signed)), denied(AuthRefusal::Replayed));
        // Signed for another request.
        let elsewhere = alices.header("GET", &format!("{}/v1/albums/{hex}/welcomes/0", server.url()), &[]).unwrap();
        assert_eq!(get(Some(&elsewhere)), denied(AuthRefusal::Signature));
        // Not signed, or not a signature.
        assert_eq!(get(None), denied(AuthRefusal::Missing));
        assert_eq!(get(Some("zz")), denied(AuthRefusal::Malformed));
        // Signed an hour ago (by the right key).
        let key = DeviceSigningKey::from_secret_bytes(&a0.me.secret_key_bytes());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let mut old = RequestAuth {
            user: *alice.as_bytes(),
            device: *a0.id.as_bytes(),
            time: now - 3600,
            nonce: [3; 16],
            signature: Vec::new(),
        };
        let path = format!("/v1/albums/{hex}/head");
        old.signature = key.sign(&wire::request_message("GET", &path, &[], &old)).to_vec();
        let old: String = wire::encode(&old).unwrap().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(get(Some(&old)), denied(AuthRefusal::Clock));
        // A device the directory does not list.
        let eves = credentials(&e0);
        assert_eq!(get(Some(&eves.header("GET", &url, &[]).unwrap())), denied(AuthRefusal::UnknownDevice));
        // Listed, but not a member of the album.
        register(&directory, &dir, &e0);
        let answer = get(Some(&eves.header("GET", &url, &[]).unwrap()));
        assert_eq!(answer, (403, Reply::Error(ServerError::Forbidden)));
    }
}
