//! The refusals that had no test yet (issue 17): a path leaf whose certificate
//! does not verify, a KeyPackage of another ciphersuite, a re-key marker
//! changed by a non-admin, a KeyPackage used for a second add, and an expired
//! certificate in a later commit. Each hostile message is refused with a
//! typed error by every receiver and, where the rule is public, by the
//! server; the receiver's state (epoch, authenticator, pending commit,
//! keyring) is untouched, and the album goes on normally afterwards.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code

mod common;

use capsule_amk::{AlbumUpgrade, AmkVersion, HistoryPolicy};
use capsule_identity::{
    DeviceCertificate, DeviceClaims, DeviceId, DeviceSigningKey, IdentityError, IdentityKeyPair, IdentitySeed,
    UnixTime, Validity,
};
use capsule_mls::rules::Violation;
use capsule_mls::testkit::{TestDevice, forged_commit};
use capsule_mls::*;
use common::*;
use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::{
    Capabilities, Ciphersuite, Credential, CredentialType, CredentialWithKey, ExtensionType, GroupId, KeyPackage,
    LeafNodeParameters, MlsGroup, ProposalType,
};

/// What a refusal must look like.
type Expect = fn(&MlsError) -> bool;

/// Adds a device made outside `World::device` (e.g. with a short certificate).
fn push_device(w: &mut World, device: TestDevice) -> usize {
    let TestDevice { user, id, me, provider } = device;
    w.devices.push(Device { user, id, me, provider, album: None });
    w.devices.len() - 1
}

/// A member's state as far as a refusal may not touch it.
#[derive(Debug, PartialEq, Eq)]
struct Before {
    epoch: Epoch,
    auth: Vec<u8>,
    pending: bool,
    versions: Vec<AmkVersion>,
    current: (AmkVersion, [u8; 32]),
    /// The whole keyring as stored (every key, the ceiling).
    keyring: Vec<u8>,
    context: AlbumContext,
}

fn before(w: &World, d: usize) -> Before {
    let album = w.album(d);
    let (version, amk) = album.keyring().current();
    Before {
        epoch: album.epoch(),
        auth: album.epoch_authenticator(),
        pending: album.pending().is_some(),
        versions: album.keyring().held().map(|(v, _)| v).collect(),
        current: (version, *amk.expose_secret()),
        keyring: album.keyring().to_bytes().unwrap().to_vec(),
        context: album.context().clone(),
    }
}

fn assert_untouched(w: &World, d: usize, b: &Before, what: &str) {
    assert!(!b.pending, "{what}: device {d} had a pending commit before");
    assert_eq!(&before(w, d), b, "{what}: device {d} changed");
}

fn at(w: &World, now: UnixTime) -> Validation<'_> {
    Validation { trust: &w.dir.trust, now }
}

/// What the server says of `commit` when checking identities at `now`: a
/// refusal leaves its state as it was, an acceptance advances it.
fn server_at(w: &mut World, commit: &[u8], now: UnixTime) -> Result<PublicApplied> {
    let before = w.server.clone().unwrap();
    let mut public = PublicAlbum::from_bytes(&before).unwrap();
    let result = public.stage(commit).and_then(|c| public.apply(c, Validation { trust: &w.dir.trust, now }));
    match &result {
        Ok(_) => w.server = Some(public.to_bytes().unwrap()),
        Err(_) => assert_eq!(public.to_bytes().unwrap(), before, "a refusal changed the server's state"),
    }
    result
}

/// Every member but the committer `from`, and the server, refuse each
/// commit as expected (checking identities at `now`), and nothing changes.
fn assert_refused(w: &mut World, now: UnixTime, cases: Vec<(&str, usize, Vec<u8>, Expect)>) {
    for (what, from, commit, expected) in cases {
        match server_at(w, &commit, now) {
            Err(e) => assert!(expected(&e) && !e.is_internal(), "{what}, at the server: {e:?}"),
            Ok(_) => panic!("{what}: the server accepted it"),
        }
        for d in w.members().into_iter().filter(|d| *d != from) {
            let b = before(w, d);
            let v = Validation { trust: &w.dir.trust, now };
            let dev = &mut w.devices[d];
            match dev.album.as_mut().unwrap().process(&dev.provider, &commit, v) {
                Err(e) => assert!(expected(&e) && !e.is_internal(), "{what}, at device {d}: {e:?}"),
                Ok(_) => panic!("{what}: device {d} accepted it"),
            }
            assert_untouched(w, d, &b, what);
        }
    }
}

/// Stages `change` on device `d`, checking identities at `now`.
fn stage_at(w: &mut World, d: usize, change: &Change, now: UnixTime) -> Result<Outgoing> {
    let v = Validation { trust: &w.dir.trust, now };
    let dev = &mut w.devices[d];
    dev.album.as_mut().unwrap().stage(&dev.provider, &dev.me, change, v)
}

/// `World::deliver` without joiners, every check made at `now`.
fn deliver_at(w: &mut World, from: usize, out: &Outgoing, now: UnixTime) {
    server_at(w, &out.commit, now).unwrap_or_else(|e| panic!("the server refused an honest commit: {e}"));
    for d in w.members() {
        let v = Validation { trust: &w.dir.trust, now };
        let dev = &mut w.devices[d];
        let album = dev.album.as_mut().unwrap();
        let result =
            if d == from { album.confirm(&dev.provider) } else { album.process(&dev.provider, &out.commit, v) };
        result.unwrap_or_else(|e| panic!("device {d}: {e}"));
    }
}

/// A commit made with OpenMLS directly from device `d`'s stored group: what a
/// modified client can send. The stored group is left as it was.
fn raw_commit(
    w: &World,
    d: usize,
    build: impl FnOnce(&mut MlsGroup, &MemoryProvider, &DeviceIdentity) -> Vec<u8>,
) -> Vec<u8> {
    let dev = &w.devices[d];
    let mut group = MlsGroup::load(dev.provider.storage(), &GroupId::from_slice(ALBUM.as_bytes())).unwrap().unwrap();
    let bytes = build(&mut group, &dev.provider, &dev.me);
    group.clear_pending_commit(dev.provider.storage()).unwrap();
    bytes
}

/// An empty commit by device `d` whose update path's new leaf carries
/// `credential` (with the device's own signature key, which signs it).
fn path_commit(w: &World, d: usize, credential: Credential) -> Vec<u8> {
    raw_commit(w, d, |group, provider, me| {
        let signature_key = me.certificate().device_key().to_vec().into();
        let leaf = LeafNodeParameters::builder()
            .with_credential_with_key(CredentialWithKey { credential, signature_key })
            .build();
        group
            .commit_builder()
            .force_self_update(true)
            .leaf_node_parameters(leaf)
            .load_psks(provider.storage())
            .unwrap()
            .build(provider.rand(), provider.crypto(), me, |_| true)
            .unwrap()
            .stage_commit(provider)
            .unwrap()
            .commit()
            .tls_serialize_detached()
            .unwrap()
    })
}

fn credential(cert_bytes: Vec<u8>) -> Credential {
    Credential::new(CredentialType::Other(CREDENTIAL_TYPE), cert_bytes)
}

/// Device `d`'s signing key (the testkit keeps only the identity built from it).
fn signing_key(w: &World, d: usize) -> DeviceSigningKey {
    DeviceSigningKey::from_secret_bytes(&w.devices[d].me.secret_key_bytes())
}

#[test]
fn a_path_leaf_whose_certificate_does_not_verify_is_refused() {
    let mut w = alice_and_bob(170);
    let (alice, bob) = (uid(1), uid(2));
    let (a0, b0) = (0, 1);
    let bob_key = signing_key(&w, b0);
    let bob_id = w.devices[b0].id;
    let mut flipped = w.devices[b0].me.certificate().to_bytes().unwrap();
    *flipped.last_mut().unwrap() ^= 1;
    let stranger = IdentityKeyPair::from_seed(&IdentitySeed::from_bytes([0x17; 32])).unwrap();
    let validity = w.devices[b0].me.certificate().validity();
    let claims = DeviceClaims { user: bob, device: bob_id, device_key: bob_key.public_key(), validity };
    let by_stranger = stranger.certify_device(&claims).unwrap();
    let other_key = DeviceSigningKey::from_secret_bytes(&[0x17; 32]);
    let for_other_key = w.certify(bob, bob_id, &other_key);
    // Valid certificates of Bob's key, naming another device than Bob's leaf.
    let other_device = w.certify(bob, DeviceId::from_bytes([0x17; 16]), &bob_key);
    let alices_device = w.certify(alice, w.devices[a0].id, &bob_key);
    let cert = |c: &DeviceCertificate| credential(c.to_bytes().unwrap());
    let cases: Vec<(&str, usize, Vec<u8>, Expect)> = vec![
        ("a certificate with a flipped signature byte", b0, path_commit(&w, b0, credential(flipped)), |e| {
            matches!(e, MlsError::Identity(IdentityError::BadSignature))
        }),
        ("a certificate by an identity key nobody trusts", b0, path_commit(&w, b0, cert(&by_stranger)), |e| {
            matches!(e, MlsError::Identity(IdentityError::BadSignature))
        }),
        ("a certificate of another key", b0, path_commit(&w, b0, cert(&for_other_key)), |e| {
            matches!(e, MlsError::Identity(IdentityError::KeyMismatch))
        }),
        ("another device of the same user", b0, path_commit(&w, b0, cert(&other_device)), |e| {
            matches!(e, MlsError::Rule(Violation::CommitterChanged))
        }),
        ("the admin's device", b0, path_commit(&w, b0, cert(&alices_device)), |e| {
            matches!(e, MlsError::Rule(Violation::CommitterChanged))
        }),
    ];
    let a_before = before(&w, a0);
    assert_refused(&mut w, testkit::NOW, cases);
    assert_untouched(&w, a0, &a_before, "after every refusal");
    // The album goes on: Bob's genuine self-update is applied by everyone.
    let out = w.stage(b0, &Change::SelfUpdate).unwrap();
    w.deliver(b0, &out, &[]);
    w.assert_consistent();
    assert_eq!(w.album(a0).epoch(), Epoch(a_before.epoch.0 + 1));
}

/// A KeyPackage of `device` on `suite`, carrying its valid Capsule
/// credential and advertising both suites: only the suite can be wrong.
fn key_package_on(device: &Device, suite: Ciphersuite) -> Vec<u8> {
    let cert = device.me.certificate();
    let credential_with_key = CredentialWithKey {
        credential: credential(cert.to_bytes().unwrap()),
        signature_key: cert.device_key().to_vec().into(),
    };
    let capabilities = Capabilities::new(
        None,
        Some(&[CIPHERSUITE, suite]),
        Some(&[ExtensionType::Unknown(ALBUM_EXTENSION_TYPE), ExtensionType::LastResort]),
        Some(&[ProposalType::GroupContextExtensions]),
        Some(&[CredentialType::Other(CREDENTIAL_TYPE)]),
    );
    KeyPackage::builder()
        .leaf_node_capabilities(capabilities)
        .build(suite, &device.provider, &device.me, credential_with_key)
        .unwrap()
        .key_package()
        .tls_serialize_detached()
        .unwrap()
}

/// `testkit::forged_commit` from device `d` of the world (it takes a `TestDevice`).
fn forged(
    w: &mut World,
    d: usize,
    adds: &[Vec<u8>],
    removes: &[Member],
    context: Option<&AlbumContext>,
) -> Result<Vec<u8>> {
    let Device { user, id, me, provider, album } = w.devices.remove(d);
    let device = TestDevice { user, id, me, provider };
    let commit = forged_commit(&device, ALBUM, adds, removes, context);
    let TestDevice { user, id, me, provider } = device;
    w.devices.insert(d, Device { user, id, me, provider, album });
    commit
}

#[test]
fn a_key_package_of_another_ciphersuite_is_refused_before_anything_is_staged() {
    const OTHER: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
    let mut w = alice_and_bob(171);
    let (a0, b0) = (0, 1);
    let carol = w.user(3);
    let (c0, c1, a1) = (w.device(carol), w.device(carol), w.device(uid(1)));
    let foreign_c0 = key_package_on(&w.devices[c0], OTHER);
    let good_c1 = key_package_on(&w.devices[c1], CIPHERSUITE);
    let foreign_a1 = key_package_on(&w.devices[a1], OTHER);
    let foreign_b0 = key_package_on(&w.devices[b0], OTHER);
    // Refused by Capsule itself (OpenMLS's own refusal reads differently).
    let other_suite = |e: &MlsError| matches!(e, MlsError::Refused("key package of another ciphersuite"));

    // What a directory runs before filing one.
    let inspected = inspect_key_package(&foreign_c0, w.validation());
    assert!(inspected.as_ref().is_err_and(other_suite), "{inspected:?}");
    assert!(inspect_key_package(&good_c1, w.validation()).is_ok(), "the same KeyPackage on Capsule's suite is fine");

    let (a_before, b_before) = (before(&w, a0), before(&w, b0));
    let changes = [
        ("AddUser", Change::AddUser { user: carol, directory: vec![foreign_c0.clone()] }),
        (
            "AddUser with a good one beside it",
            Change::AddUser { user: carol, directory: vec![good_c1.clone(), foreign_c0.clone()] },
        ),
        ("AddDevice", Change::AddDevice { key_package: foreign_a1 }),
        ("ReAddDevice", Change::ReAddDevice { key_package: foreign_b0 }),
    ];
    for (what, change) in &changes {
        match w.stage(a0, change) {
            Err(e) => assert!(other_suite(&e), "{what}: {e:?}"),
            Ok(_) => panic!("{what}: staged"),
        }
        assert_untouched(&w, a0, &a_before, what);
    }
    // A modified client adds it anyway: OpenMLS will not even build that commit.
    let mut ctx = w.album(a0).context().clone();
    ctx.entitlements.insert(carol, ctx.amk_version);
    let raw = forged(&mut w, a0, &[foreign_c0], &[], Some(&ctx));
    assert!(matches!(raw, Err(MlsError::Refused("added key package of another ciphersuite or version"))), "{raw:?}");
    assert_untouched(&w, a0, &a_before, "forged");
    assert_untouched(&w, b0, &b_before, "forged");

    // The album goes on: Carol's devices on Capsule's suite join.
    let out = w.stage(a0, &Change::AddUser { user: carol, directory: vec![good_c1, w.kp(c0)] }).unwrap();
    w.deliver(a0, &out, &[c0, c1]);
    w.assert_consistent();
}

#[test]
fn a_non_admin_cannot_set_replace_or_clear_the_rekey_marker() {
    let mut w = alice_and_bob(172);
    let (a0, b0) = (0, 1);
    let marker = RekeyMarker { id: RekeyId(17), reason: RekeyReason::AdminInitiated };
    let theirs = RekeyMarker { id: RekeyId(18), reason: RekeyReason::SuspectedCompromise };
    // Locally, Bob (not an admin) cannot build it.
    assert!(matches!(w.stage(b0, &Change::BeginRekey { marker: theirs }), Err(MlsError::Unauthorized(_))));

    let now = w.album(b0).context().clone();
    let begun = AlbumContext { rekey: Some(theirs), ..now.clone() };
    let set = forged(&mut w, b0, &[], &[], Some(&begun)).unwrap();
    let upgrade = AlbumUpgrade { history_policy: None, admins: Some([uid(1), uid(2)].into()) };
    let promoted = AlbumContext { metadata: now.metadata.upgraded(&upgrade).unwrap(), ..now.clone() };
    let metadata = forged(&mut w, b0, &[], &[], Some(&promoted)).unwrap();
    let by_non_admin: Expect = |e| matches!(e, MlsError::Rule(Violation::RekeyByNonAdmin));
    assert_refused(
        &mut w,
        testkit::NOW,
        vec![
            ("non-admin starts a re-key", b0, set, by_non_admin),
            ("non-admin makes itself admin", b0, metadata, |e| {
                matches!(e, MlsError::Rule(Violation::MetadataByNonAdmin))
            }),
        ],
    );

    // Alice starts a re-key; Bob's modified client replaces or ends it.
    let out = w.stage(a0, &Change::BeginRekey { marker }).unwrap();
    w.deliver(a0, &out, &[]);
    let now = w.album(b0).context().clone();
    assert_eq!(now.rekey, Some(marker));
    let replaced = AlbumContext { rekey: Some(theirs), ..now.clone() };
    let replace = forged(&mut w, b0, &[], &[], Some(&replaced)).unwrap();
    // With the rotation finishing requires, so only the committer is wrong.
    let finished = AlbumContext { rekey: None, amk_version: now.amk_version.next().unwrap(), ..now.clone() };
    let finish = forged(&mut w, b0, &[], &[], Some(&finished)).unwrap();
    assert_refused(
        &mut w,
        testkit::NOW,
        vec![
            ("non-admin replaces the marker", b0, replace, by_non_admin),
            ("non-admin finishes the re-key", b0, finish, by_non_admin),
        ],
    );
    for d in w.members() {
        assert_eq!(w.album(d).context().rekey, Some(marker));
    }

    // The album goes on: Alice finishes her re-key.
    let out = w.stage(a0, &Change::FinishRekey { id: marker.id }).unwrap();
    w.deliver(a0, &out, &[]);
    w.assert_consistent();
    assert_eq!(w.album(b0).context().rekey, None);
    assert_eq!(w.album(b0).context().amk_version, now.amk_version.next().unwrap());
}

/// Alice (admin, device 0) with a second device (1) and Carol (device 2);
/// Bob's device (3) added and removed again. Returns the KeyPackages Alice's
/// second device and Bob's device were added with (Bob's last resort or not).
fn bob_added_and_removed(w: &mut World, last_resort: bool) -> (Vec<u8>, Vec<u8>) {
    let alice = w.user(1);
    let a0 = w.device(alice);
    w.create(a0, HistoryPolicy::Full, &[alice]);
    let a1 = w.device(alice);
    let ka = w.kp(a1);
    let out = w.stage(a0, &Change::AddDevice { key_package: ka.clone() }).unwrap();
    w.deliver(a0, &out, &[a1]);
    let carol = w.user(3);
    let c0 = w.device(carol);
    let out = w.stage(a0, &Change::AddUser { user: carol, directory: vec![w.kp(c0)] }).unwrap();
    w.deliver(a0, &out, &[c0]);
    let bob = w.user(2);
    let b0 = w.device(bob);
    let dev = &w.devices[b0];
    let kb = new_key_package(&dev.provider, &dev.me, last_resort, KEY_PACKAGE_LIFETIME_SECS).unwrap().bytes;
    let out = w.stage(a0, &Change::AddUser { user: bob, directory: vec![kb.clone()] }).unwrap();
    w.deliver(a0, &out, &[b0]);
    let out = w.stage(a0, &Change::RemoveUser { user: bob }).unwrap();
    w.deliver(a0, &out, &[]);
    assert!(w.album(b0).is_evicted());
    (ka, kb)
}

#[test]
fn a_key_package_is_not_added_again_while_its_device_is_a_member() {
    let mut w = World::new(173);
    let alice = w.user(1);
    let a0 = w.device(alice);
    w.create(a0, HistoryPolicy::Full, &[alice]);
    let bob = w.user(2);
    let (a1, b0) = (w.device(alice), w.device(bob));
    let (ka, kb) = (w.kp(a1), w.kp(b0));
    let out = w.stage(a0, &Change::AddDevice { key_package: ka.clone() }).unwrap();
    w.deliver(a0, &out, &[a1]);
    let out = w.stage(a0, &Change::AddUser { user: bob, directory: vec![kb.clone()] }).unwrap();
    w.deliver(a0, &out, &[b0]);
    let a_before = before(&w, a0);
    let member = |d: usize| Member { user: w.devices[d].user, device: w.devices[d].id };
    let (ma1, mb0) = (member(a1), member(b0));
    let again = [
        ("a second AddDevice", Change::AddDevice { key_package: ka }, ma1),
        ("a second AddUser", Change::AddUser { user: bob, directory: vec![kb.clone(), kb] }, mb0),
    ];
    for (what, change, member) in &again {
        match w.stage(a0, change) {
            Err(MlsError::AlreadyMember(m)) => assert_eq!(m, *member, "{what}"),
            other => panic!("{what}: {other:?}"),
        }
        assert_untouched(&w, a0, &a_before, what);
    }
    // The album goes on.
    let out = w.stage(a0, &Change::RotateAmk).unwrap();
    w.deliver(a0, &out, &[]);
    w.assert_consistent();
}

#[test]
fn a_last_resort_key_package_re_adds_its_device_after_a_removal() {
    // The one KeyPackage meant to be used again: its device keeps its keys.
    let mut w = World::new(174);
    let (_, kb) = bob_added_and_removed(&mut w, true);
    let out = w.stage(0, &Change::AddUser { user: uid(2), directory: vec![kb] }).unwrap();
    w.deliver(0, &out, &[3]);
    assert!(!w.album(3).is_evicted());
    w.assert_consistent();
}

/// A regular KeyPackage's private keys go with its first join, so a second
/// add of it would leave a leaf nobody holds (or, as a re-add, lock its device
/// out). The committer cannot know another device's KeyPackage was spent; the
/// server, which saw every add of the album, refuses it, and the committer's
/// refused commit is rejected with nothing left behind.
#[test]
fn a_spent_key_package_is_refused_for_a_second_add() {
    let mut w = World::new(175);
    let (ka, kb) = bob_added_and_removed(&mut w, false);
    let (a0, b0) = (0, 3);
    let a_before = before(&w, a0);
    let again = [
        ("Bob's device added again", Change::AddUser { user: uid(2), directory: vec![kb.clone()] }),
        ("Alice's second device re-added", Change::ReAddDevice { key_package: ka }),
    ];
    for (what, change) in &again {
        let out = w.stage(a0, change).unwrap();
        let server_before = w.public().to_bytes().unwrap();
        match w.server_checks(&out.commit) {
            Err(e) => assert!(matches!(e, MlsError::Rule(Violation::KeyPackageReused)), "{what}: {e:?}"),
            Ok(_) => panic!("{what}: the server accepted a spent KeyPackage"),
        }
        assert_eq!(w.public().to_bytes().unwrap(), server_before, "{what}: the server's state changed");
        let dev = &mut w.devices[a0];
        dev.album.as_mut().unwrap().reject(&dev.provider).unwrap();
        assert_untouched(&w, a0, &a_before, what);
    }
    // The album goes on; Bob's device comes back from a fresh KeyPackage.
    let out = w.stage(a0, &Change::AddUser { user: uid(2), directory: vec![w.kp(b0)] }).unwrap();
    w.deliver(a0, &out, &[b0]);
    w.assert_consistent();
}

#[test]
fn an_expired_certificate_is_refused_in_a_later_commit_until_renewed() {
    let mut w = World::new(176);
    let alice = w.user(1);
    let a0 = w.device(alice);
    w.create(a0, HistoryPolicy::Full, &[alice]);
    let bob = w.user(2);
    let (expiry, later) = (UnixTime(testkit::NOW.0 + 100), UnixTime(testkit::NOW.0 + 1_000));
    let short = w.dir.device_for(bob, Validity::new(UnixTime(0), expiry).unwrap()).unwrap();
    let b0 = push_device(&mut w, short);
    let b1 = w.device(bob);
    let out = w.stage(a0, &Change::AddUser { user: bob, directory: vec![w.kp(b0)] }).unwrap();
    w.deliver(a0, &out, &[b0]);

    // Once expired, Bob's own client commits nothing.
    let b_before = before(&w, b0);
    let result = stage_at(&mut w, b0, &Change::RotateAmk, later);
    assert!(matches!(result, Err(MlsError::OwnCertificate(IdentityError::Expired))), "{result:?}");
    assert_untouched(&w, b0, &b_before, "own refusal");
    // A modified client sends anyway: a rotation, whose update path carries
    // the expired certificate forward, and an add of Bob's other device,
    // which has no path (the committer's leaf in the tree is checked).
    let now = w.album(b0).context().clone();
    let rotated = AlbumContext { amk_version: now.amk_version.next().unwrap(), ..now };
    let carried = forged(&mut w, b0, &[], &[], Some(&rotated)).unwrap();
    let kp_b1 = w.kp(b1);
    let pathless = forged(&mut w, b0, &[kp_b1], &[], None).unwrap();
    // Before the expiry both would pass: only time makes them wrong.
    for commit in [&carried, &pathless] {
        let mut public = w.public();
        let checked = public.stage(commit).and_then(|c| public.apply(c, at(&w, testkit::NOW)));
        assert!(checked.is_ok(), "{checked:?}");
    }
    let expired: Expect = |e| matches!(e, MlsError::Identity(IdentityError::Expired));
    assert_refused(
        &mut w,
        later,
        vec![
            ("an expired leaf carried forward", b0, carried, expired),
            ("an expired committer's leaf", b0, pathless, expired),
        ],
    );

    // Renewal: a new certificate for the same key, in a self-update's path leaf.
    let key = signing_key(&w, b0);
    let renewed = Validity::new(UnixTime(0), UnixTime(testkit::NOW.0 + 100_000)).unwrap();
    let cert = w.dir.certify_for(bob, w.devices[b0].id, &key, renewed).unwrap();
    w.devices[b0].me = DeviceIdentity::new(key, cert).unwrap();
    let out = stage_at(&mut w, b0, &Change::SelfUpdate, later).unwrap();
    deliver_at(&mut w, b0, &out, later);
    // The album goes on: Bob commits again, checked at the same later time.
    let out = stage_at(&mut w, b0, &Change::RotateAmk, later).unwrap();
    deliver_at(&mut w, b0, &out, later);
    w.assert_consistent();
    assert_eq!(w.amk_version(a0), rotated.amk_version);
}

/// OpenMLS deletes the KeyPackage a Welcome names before verifying anything:
/// a refused Welcome or bundle must not burn it, or anyone who knows a
/// device's KeyPackage could lock it out of the album it is being added to.
#[test]
fn a_refused_welcome_or_bundle_leaves_its_key_package_usable() {
    let mut w = World::new(178);
    let alice = w.user(1);
    let a0 = w.device(alice);
    w.create(a0, HistoryPolicy::Full, &[alice]);
    let bob = w.user(2);
    let b0 = w.device(bob);
    let out = w.stage(a0, &Change::AddUser { user: bob, directory: vec![w.kp(b0)] }).unwrap();
    let (welcome, bundle) = (out.welcome.clone().unwrap(), out.bundle.clone().unwrap());
    let mut bad_bundle = bundle.clone();
    *bad_bundle.last_mut().unwrap() ^= 1;
    let mut bad_welcome = welcome.clone();
    *bad_welcome.last_mut().unwrap() ^= 1;
    let v = Validation { trust: &w.dir.trust, now: testkit::NOW };
    let dev = &w.devices[b0];
    for (what, welcome, bundle) in [("bundle", &welcome, &bad_bundle), ("welcome", &bad_welcome, &bundle)] {
        match Album::join(&dev.provider, welcome, bundle, v) {
            Err(e) => assert!(!e.is_internal(), "{what}: {e:?}"),
            Ok(_) => panic!("a tampered {what} was accepted"),
        }
    }
    // The genuine Welcome still finds its KeyPackage.
    w.deliver(a0, &out, &[b0]);
    w.assert_consistent();
}

/// Fuzz regression (`mls_public_album`): a stored public state whose tree
/// entry has the wrong shape panicked inside OpenMLS's memory storage; the
/// server reads this state from its own database. Refused as malformed.
#[test]
fn a_damaged_stored_public_state_is_malformed_not_a_panic() {
    let bytes = include_bytes!("../../../fuzz/regressions/mls_public_album/stored-tree-not-json-panics");
    let result = PublicAlbum::from_bytes(bytes);
    assert!(matches!(result, Err(MlsError::Malformed(_))), "{result:?}");
}
