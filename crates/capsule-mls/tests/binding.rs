//! Identity binding and authorization at every entry point: KeyPackages before
//! adding, the ratchet tree of a Welcome, and the adds, paths and proposals of an
//! incoming commit. Every refusal is typed and leaves the album untouched.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic, clippy::print_stdout)] // test code

mod common;

use std::collections::BTreeMap;

use capsule_amk::{AlbumId, AlbumMetadata, AmkVersion, HistoryPolicy};
use capsule_identity::{
    DeviceCertificate, DeviceId, DeviceSigningKey, IdentityError, IdentityKeyPair, IdentitySeed, UserId,
};
use capsule_mls::rules::Violation;
use capsule_mls::*;
use common::*;
use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::{
    BasicCredential, Credential, CredentialType, CredentialWithKey, GroupId, KeyPackage, LeafNodeIndex, MlsGroup,
};
use openmls_traits::signatures::{Signer, SignerError};
use openmls_traits::types::SignatureScheme;

/// Signs with one Ed25519 key whatever credential it is paired with.
struct RawSigner(DeviceSigningKey);

impl Signer for RawSigner {
    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, SignerError> {
        Ok(self.0.sign(payload).to_vec())
    }
    fn signature_scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

/// A KeyPackage with any credential, signed by any key: what an attacker can publish.
fn raw_key_package(provider: &MemoryProvider, credential: Credential, key: DeviceSigningKey) -> Vec<u8> {
    let signature_key = key.public_key().to_vec().into();
    let signer = RawSigner(key);
    KeyPackage::builder()
        .leaf_node_capabilities(capabilities())
        .build(CIPHERSUITE, provider, &signer, CredentialWithKey { credential, signature_key })
        .unwrap()
        .key_package()
        .tls_serialize_detached()
        .unwrap()
}

fn capsule_credential(cert: &DeviceCertificate) -> Credential {
    Credential::new(CredentialType::Other(CREDENTIAL_TYPE), cert.to_bytes().unwrap())
}

/// What a refusal must look like.
type Expect = fn(&MlsError) -> bool;

/// Replaces `with.len()` bytes of a certificate's encoding starting `from_end`
/// bytes before its end (its two signatures sit at the end).
fn splice_cert(cert: &DeviceCertificate, from_end: usize, with: &[u8]) -> DeviceCertificate {
    let mut bytes = cert.to_bytes().unwrap();
    let start = bytes.len() - from_end;
    bytes[start..start + with.len()].copy_from_slice(with);
    DeviceCertificate::from_bytes(&bytes).unwrap()
}

fn assert_untouched(w: &World, d: usize, epoch: Epoch, auth: &[u8]) {
    assert_eq!(w.album(d).epoch(), epoch);
    assert_eq!(w.album(d).epoch_authenticator(), auth);
    assert!(w.album(d).pending().is_none());
}

#[test]
fn key_packages_with_broken_bindings_are_refused_before_adding() {
    let mut w = alice_and_bob(30);
    let (epoch, auth) = (w.album(0).epoch(), w.album(0).epoch_authenticator());
    let carol = w.user(3);
    let stranger = IdentityKeyPair::from_seed(&IdentitySeed::from_bytes([77; 32])).unwrap();
    let provider = MemoryProvider::in_memory().unwrap();
    let id = DeviceId::from_bytes([9; 16]);
    let key = || DeviceSigningKey::from_secret_bytes(&[5; 32]);
    let good = w.certify(carol, id, &key());
    let other_key = DeviceSigningKey::from_secret_bytes(&[6; 32]);
    let cert_for_other_key = w.certify(carol, id, &other_key);
    let foreign_cert = {
        let claims = capsule_identity::DeviceClaims {
            user: carol,
            device: id,
            device_key: key().public_key(),
            validity: good.validity(),
        };
        stranger.certify_device(&claims).unwrap()
    };
    let foreign = foreign_cert.to_bytes().unwrap();
    let n = foreign.len();
    // (what, KeyPackage, expected refusal)
    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        (
            "Ed25519 key not covered by the ML-DSA half",
            raw_key_package(&provider, capsule_credential(&splice_cert(&good, 3309, &foreign[n - 3309..])), key()),
            |e| matches!(e, MlsError::Identity(IdentityError::BadSignature)),
        ),
        (
            "ML-DSA half valid, Ed25519 half from another identity",
            raw_key_package(
                &provider,
                capsule_credential(&splice_cert(&good, 3373, &foreign[n - 3373..n - 3309])),
                key(),
            ),
            |e| matches!(e, MlsError::Identity(IdentityError::BadSignature)),
        ),
        (
            "leaf key is not the certified key",
            raw_key_package(&provider, capsule_credential(&cert_for_other_key), key()),
            |e| matches!(e, MlsError::Identity(IdentityError::KeyMismatch)),
        ),
        (
            "certified by an identity key nobody trusts",
            raw_key_package(&provider, capsule_credential(&foreign_cert), key()),
            |e| matches!(e, MlsError::Identity(IdentityError::BadSignature)),
        ),
        (
            "a basic credential",
            raw_key_package(&provider, BasicCredential::new(b"carol".to_vec()).into(), key()),
            |e| matches!(e, MlsError::ForeignCredential),
        ),
        ("not a key package", vec![1, 2, 3], |e| matches!(e, MlsError::Malformed(_))),
    ];
    for (what, kp, expected) in cases {
        let result = w.stage(0, &Change::AddUser { user: carol, directory: vec![kp] });
        match result {
            Err(e) => assert!(expected(&e), "{what}: {e}"),
            Ok(_) => panic!("{what}: accepted"),
        }
        assert_untouched(&w, 0, epoch, &auth);
    }
    // The genuine one is accepted.
    let kp = raw_key_package(&provider, capsule_credential(&good), key());
    assert!(w.stage(0, &Change::AddUser { user: carol, directory: vec![kp] }).is_ok());
}

#[test]
fn a_welcome_whose_tree_does_not_verify_is_refused() {
    let mut w = alice_and_bob(31);
    let carol = w.user(3);
    let c0 = w.device(carol);
    let dir = w.directory(carol);
    let out = w.stage(0, &Change::AddUser { user: carol, directory: dir }).unwrap();
    // Carol's directory holds a wrong identity key for Bob: Bob's leaf fails.
    let mut wrong = w.trust.clone();
    wrong.insert(uid(2), IdentityKeyPair::from_seed(&IdentitySeed::from_bytes([1; 32])).unwrap().public_key().clone());
    let dev = &w.devices[c0];
    let result = Album::join(
        &dev.provider,
        out.welcome.as_ref().unwrap(),
        out.bundle.as_ref().unwrap(),
        Validation { trust: &wrong, now: NOW },
    );
    assert!(matches!(result, Err(MlsError::Identity(IdentityError::BadSignature))), "{result:?}");
    // A tampered bundle is refused too.
    let mut bundle = out.bundle.clone().unwrap();
    *bundle.last_mut().unwrap() ^= 1;
    let fresh = w.device(carol);
    let out2 = {
        let dev = &mut w.devices[0];
        let album = dev.album.as_mut().unwrap();
        album.reject(&dev.provider).unwrap();
        let kp = key_package(&w.devices[fresh].provider, &w.devices[fresh].me).unwrap();
        let v = Validation { trust: &w.dir.trust, now: NOW };
        let dev = &mut w.devices[0];
        let change = Change::AddUser { user: carol, directory: vec![kp] };
        dev.album.as_mut().unwrap().stage(&dev.provider, &dev.me, &change, v).unwrap()
    };
    let dev = &w.devices[fresh];
    let mut bad = out2.bundle.clone().unwrap();
    *bad.last_mut().unwrap() ^= 1;
    let result = Album::join(&dev.provider, out2.welcome.as_ref().unwrap(), &bad, w.validation());
    assert!(matches!(result, Err(MlsError::Amk(capsule_amk::AmkError::BundleUnreadable))), "{result:?}");
}

#[test]
fn an_incoming_commit_with_an_unverifiable_leaf_is_refused_and_changes_nothing() {
    let mut w = alice_and_bob(32);
    let carol = w.user(3);
    let c0 = w.device(carol);
    let dir = w.directory(carol);
    let out = w.stage(0, &Change::AddUser { user: carol, directory: dir }).unwrap();
    let (epoch, auth) = (w.album(1).epoch(), w.album(1).epoch_authenticator());
    // Bob does not (yet) trust Carol's identity key: the Add is refused.
    let mut partial: BTreeMap<_, _> = w.trust.clone();
    partial.remove(&carol);
    let dev = &mut w.devices[1];
    let result =
        dev.album.as_mut().unwrap().process(&dev.provider, &out.commit, Validation { trust: &partial, now: NOW });
    // "Cannot verify yet", naming the user, not "invalid".
    assert!(matches!(result, Err(MlsError::UnknownIdentity { user }) if user == carol), "{result:?}");
    assert_untouched(&w, 1, epoch, &auth);
    // A wrong key for the committer's user: the committer's leaf is refused.
    let mut wrong = w.trust.clone();
    wrong.insert(uid(1), IdentityKeyPair::from_seed(&IdentitySeed::from_bytes([2; 32])).unwrap().public_key().clone());
    let dev = &mut w.devices[1];
    let result =
        dev.album.as_mut().unwrap().process(&dev.provider, &out.commit, Validation { trust: &wrong, now: NOW });
    assert!(matches!(result, Err(MlsError::Identity(IdentityError::BadSignature))), "{result:?}");
    assert_untouched(&w, 1, epoch, &auth);
    // With the right trust the same commit applies: the refusals left no trace.
    w.deliver(0, &out, &[c0]);
    w.assert_consistent();
}

/// Commits made with OpenMLS directly from a device's own storage, bypassing the
/// wrapper's local checks: what a modified client could send.
fn raw_commit(
    w: &World,
    d: usize,
    build: impl FnOnce(&mut MlsGroup, &MemoryProvider, &DeviceIdentity) -> Vec<u8>,
) -> Vec<u8> {
    let dev = &w.devices[d];
    let mut group =
        MlsGroup::load(openmls_traits::OpenMlsProvider::storage(&dev.provider), &GroupId::from_slice(ALBUM.as_bytes()))
            .unwrap()
            .unwrap();
    let bytes = build(&mut group, &dev.provider, &dev.me);
    group.clear_pending_commit(openmls_traits::OpenMlsProvider::storage(&dev.provider)).unwrap();
    bytes
}

fn stage(
    group: &mut MlsGroup,
    provider: &MemoryProvider,
    me: &DeviceIdentity,
    adds: Vec<KeyPackage>,
    removes: Vec<LeafNodeIndex>,
    extensions: Option<openmls::prelude::Extensions<openmls::prelude::GroupContext>>,
) -> Vec<u8> {
    use openmls_traits::OpenMlsProvider as _;
    let mut builder = group.commit_builder().propose_adds(adds).propose_removals(removes);
    if let Some(ext) = extensions {
        builder = builder.propose_group_context_extensions(ext).unwrap();
    }
    builder
        .load_psks(provider.storage())
        .unwrap()
        .build(provider.rand(), provider.crypto(), me, |_| true)
        .unwrap()
        .stage_commit(provider)
        .unwrap()
        .commit()
        .tls_serialize_detached()
        .unwrap()
}

/// Each receiver refuses its forged commit as expected, and nothing changes;
/// the server, running the same rules on public data, refuses it the same way.
fn assert_refused(w: &mut World, cases: Vec<(&str, usize, Vec<u8>, Expect)>) {
    for (what, receiver, commit, expected) in cases {
        match w.server_checks(&commit) {
            Err(e) => assert!(expected(&e), "{what}, at the server: {e}"),
            Ok(_) => panic!("{what}: the server accepted it"),
        }
        let (epoch, auth) = (w.album(receiver).epoch(), w.album(receiver).epoch_authenticator());
        let v = Validation { trust: &w.dir.trust, now: NOW };
        let dev = &mut w.devices[receiver];
        match dev.album.as_mut().unwrap().process(&dev.provider, &commit, v) {
            Err(e) => assert!(expected(&e), "{what}: {e}"),
            Ok(_) => panic!("{what}: accepted"),
        }
        assert_untouched(w, receiver, epoch, &auth);
    }
}

#[test]
fn unauthorized_commits_are_refused_by_every_receiver() {
    let mut w = alice_and_bob(33);
    let (a_epoch, a_auth) = (w.album(0).epoch(), w.album(0).epoch_authenticator());
    let carol = w.user(3);
    let c0 = w.device(carol);
    // Locally, a non-admin cannot even build these.
    let kp = w.kp(c0);
    assert!(matches!(
        w.stage(1, &Change::AddUser { user: carol, directory: vec![kp.clone()] }),
        Err(MlsError::Unauthorized(_))
    ));
    assert!(matches!(w.stage(1, &Change::RemoveUser { user: uid(1) }), Err(MlsError::Unauthorized(_))));
    let alice_device = w.devices[0].id;
    assert!(matches!(w.stage(1, &Change::RemoveDevice { device: alice_device }), Err(MlsError::NotMember(_))));

    // A modified client of Bob (not an admin) adds Carol anyway.
    let kp_in = {
        use openmls::prelude::tls_codec::Deserialize as _;
        openmls::prelude::KeyPackageIn::tls_deserialize_exact(kp.as_slice()).unwrap()
    };
    let kp_valid = kp_in
        .validate(
            openmls_traits::OpenMlsProvider::crypto(&w.devices[1].provider),
            openmls::prelude::ProtocolVersion::Mls10,
        )
        .unwrap();
    let forged_add = raw_commit(&w, 1, |g, p, me| stage(g, p, me, vec![kp_valid], vec![], None));
    // Bob's modified client removes Alice's device, with an AMK rotation so only authorization is wrong.
    let rotated = {
        let mut ctx = w.album(1).context().clone();
        ctx.amk_version = ctx.amk_version.next().unwrap();
        ctx
    };
    let rotated_ext = context_extensions(&rotated);
    let ext = rotated_ext.clone();
    let forged_remove = raw_commit(&w, 1, |g, p, me| stage(g, p, me, vec![], vec![LeafNodeIndex::new(0)], Some(ext)));
    // Alice (an admin) removes Bob without rotating the AMK.
    let unrotated_removal = raw_commit(&w, 0, |g, p, me| stage(g, p, me, vec![], vec![LeafNodeIndex::new(1)], None));
    // Bob bumps the AMK version by two.
    let mut skipped = w.album(1).context().clone();
    skipped.amk_version = skipped.amk_version.next().unwrap().next().unwrap();
    let skip_ext = context_extensions(&skipped);
    let skip = raw_commit(&w, 1, |g, p, me| stage(g, p, me, vec![], vec![], Some(skip_ext)));

    let cases: Vec<(&str, usize, Vec<u8>, Expect)> = vec![
        ("non-admin adds another user", 0, forged_add, |e| matches!(e, MlsError::Rule(Violation::NotAdmin))),
        ("non-admin removes another user's device", 0, forged_remove, |e| {
            matches!(e, MlsError::Rule(Violation::NotAdmin))
        }),
        ("removal without rotation", 1, unrotated_removal, |e| {
            matches!(e, MlsError::Rule(Violation::RemovalWithoutRotation))
        }),
        ("AMK version skips", 0, skip, |e| matches!(e, MlsError::Rule(Violation::RotationStep))),
    ];
    assert_refused(&mut w, cases);
    assert_untouched(&w, 0, a_epoch, &a_auth);
    // The album goes on normally afterwards.
    let out = w.stage(0, &Change::RotateAmk).unwrap();
    w.deliver(0, &out, &[]);
    w.assert_consistent();
}

#[test]
fn tampered_foreign_forked_and_lost_commits_are_typed_refusals_not_faults() {
    let mut w = alice_and_bob(35);
    // Alice's genuine commit, still pending on her device: Bob receives altered copies.
    let genuine = w.stage(0, &Change::RotateAmk).unwrap();
    let mut tampered = genuine.commit.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 1;
    let mut bad_tag = genuine.commit.clone();
    *bad_tag.last_mut().unwrap() ^= 1;
    // The same album id and epoch in another world: a fork of the group.
    let forked = alice_and_bob(36).stage(0, &Change::RotateAmk).unwrap().commit;
    // Another album at the same epoch.
    let foreign = {
        let mut other = World::new(37);
        let carol = other.user(3);
        let c = other.device(carol);
        let meta = AlbumMetadata::new(AlbumId::from_bytes([0xB2; 16]), HistoryPolicy::Full, [carol].into()).unwrap();
        let dev = &mut other.devices[c];
        dev.album = Some(Album::create(&dev.provider, &dev.me, meta).unwrap());
        let first = other.stage(c, &Change::RotateAmk).unwrap();
        other.deliver(c, &first, &[]);
        other.stage(c, &Change::RotateAmk).unwrap().commit
    };
    assert_eq!(w.album(1).epoch(), Epoch(1));
    // (what, receiver, commit, expected refusal)
    let cases: Vec<(&str, usize, Vec<u8>, Expect)> = vec![
        ("a byte flipped inside the commit", 1, tampered, |e| matches!(e, MlsError::BadSignature)),
        ("a byte flipped in the membership tag", 1, bad_tag, |e| matches!(e, MlsError::BadSignature)),
        ("a commit from a fork of the album", 1, forked, |e| matches!(e, MlsError::BadSignature)),
        ("a commit to another album", 1, foreign, |e| matches!(e, MlsError::NotMember(_))),
        ("not a message", 1, vec![0, 1, 2], |e| matches!(e, MlsError::Malformed(_))),
    ];
    for (what, receiver, commit, expected) in cases {
        // The server holds no membership key, so a tampered membership tag
        // alone passes it (members refuse it); the signature covers the rest.
        if what != "a byte flipped in the membership tag" {
            match w.server_checks(&commit) {
                Err(e) => assert!(expected(&e) && !e.is_internal(), "{what}, at the server: {e:?}"),
                Ok(_) => panic!("{what}: the server accepted it"),
            }
        }
        let (epoch, auth) = (w.album(receiver).epoch(), w.album(receiver).epoch_authenticator());
        let v = Validation { trust: &w.dir.trust, now: NOW };
        let dev = &mut w.devices[receiver];
        match dev.album.as_mut().unwrap().process(&dev.provider, &commit, v) {
            Err(e) => assert!(expected(&e) && !e.is_internal(), "{what}: {e:?}"),
            Ok(_) => panic!("{what}: accepted"),
        }
        assert_untouched(&w, receiver, epoch, &auth);
    }
    // Alice loses her pending commit (cleared), then meets it in the chain: she
    // cannot apply a commit whose path secrets she no longer holds.
    let (epoch, auth) = (w.album(0).epoch(), w.album(0).epoch_authenticator());
    let v = Validation { trust: &w.dir.trust, now: NOW };
    let dev = &mut w.devices[0];
    let album = dev.album.as_mut().unwrap();
    album.reject(&dev.provider).unwrap();
    let result = album.process(&dev.provider, &genuine.commit, v);
    assert!(matches!(&result, Err(e @ MlsError::OwnCommitMismatch) if !e.is_internal()), "{result:?}");
    assert_untouched(&w, 0, epoch, &auth);
    // Faults are told apart from refusals.
    assert!(MlsError::Internal("a bug").is_internal());
    assert!(MlsError::Storage { during: "merging", detail: "disk full".into() }.is_internal());
    assert!(!MlsError::Refused("a rule").is_internal());
    // The album goes on normally afterwards.
    let out = w.stage(0, &Change::RotateAmk).unwrap();
    w.deliver(0, &out, &[]);
    w.assert_consistent();
}

#[test]
fn leaf_size_is_reported() {
    use openmls::prelude::tls_codec::{Deserialize as _, Size as _};
    let w = alice_and_bob(34);
    let cert = w.devices[0].me.certificate().to_bytes().unwrap().len();
    let kp_bytes = w.kp(0);
    let kp = openmls::prelude::KeyPackageIn::tls_deserialize_exact(kp_bytes.as_slice()).unwrap();
    let kp = kp
        .validate(
            openmls_traits::OpenMlsProvider::crypto(&w.devices[0].provider),
            openmls::prelude::ProtocolVersion::Mls10,
        )
        .unwrap();
    let leaf = kp.leaf_node().tls_serialized_len();
    println!("leaf node {leaf} B (device certificate {cert} B of it); KeyPackage {} B", kp_bytes.len());
    // The certificate dominates the credential: ML-DSA-65 signature 3309 B + Ed25519 64 B + claims;
    // the 1952-byte ML-DSA identity key stays in the trust store.
    assert!(cert > 3309 + 64 && cert < 3309 + 64 + 120, "{cert}");
    assert!(leaf > cert + 1216 && leaf < cert + 1216 + 200, "X-Wing key + certificate + a little: {leaf}");
}

/// A verified KeyPackage of device `d`, as a modified client would add it.
fn verified_kp(w: &World, d: usize) -> KeyPackage {
    use openmls::prelude::tls_codec::Deserialize as _;
    openmls::prelude::KeyPackageIn::tls_deserialize_exact(w.kp(d).as_slice())
        .unwrap()
        .validate(
            openmls_traits::OpenMlsProvider::crypto(&w.devices[d].provider),
            openmls::prelude::ProtocolVersion::Mls10,
        )
        .unwrap()
}

#[test]
fn entitlements_follow_membership_and_nothing_else_changes_them() {
    let mut w = alice_and_bob(35);
    let (carol, dave) = (w.user(3), w.user(4));
    let (c0, d0) = (w.device(carol), w.device(dave));
    let now = w.album(0).context().clone();
    let with = |changes: &[(UserId, Option<u32>)], rotate: bool| {
        let mut ctx = now.clone();
        if rotate {
            ctx.amk_version = ctx.amk_version.next().unwrap();
        }
        for (user, first) in changes {
            match first {
                Some(v) => ctx.entitlements.insert(*user, AmkVersion::new(*v).unwrap()),
                None => ctx.entitlements.remove(user),
            };
        }
        context_extensions(&ctx)
    };
    let (kc, kd) = (verified_kp(&w, c0), verified_kp(&w, d0));
    let unentitled = raw_commit(&w, 0, |g, p, me| stage(g, p, me, vec![kc.clone()], vec![], None));
    let ext = with(&[(carol, Some(1)), (dave, Some(1))], false);
    let two_users = raw_commit(&w, 0, |g, p, me| stage(g, p, me, vec![kc, kd], vec![], Some(ext)));
    let ext = with(&[(uid(2), Some(2))], true);
    let moved = raw_commit(&w, 0, |g, p, me| stage(g, p, me, vec![], vec![], Some(ext)));
    let ext = with(&[], true);
    let kept = raw_commit(&w, 0, |g, p, me| stage(g, p, me, vec![], vec![LeafNodeIndex::new(1)], Some(ext)));
    let cases: Vec<(&str, usize, Vec<u8>, Expect)> = vec![
        ("a new user added without an entitlement", 1, unentitled, |e| {
            matches!(e, MlsError::Rule(Violation::Entitlements))
        }),
        ("two users added in one commit", 1, two_users, |e| matches!(e, MlsError::Rule(Violation::AddsSeveralUsers))),
        ("an entitlement moved without a membership change", 1, moved, |e| {
            matches!(e, MlsError::Rule(Violation::Entitlements))
        }),
        ("a removed user keeps an entitlement", 1, kept, |e| matches!(e, MlsError::Rule(Violation::Entitlements))),
    ];
    assert_refused(&mut w, cases);
    assert_eq!(w.album(1).context(), &now);
}

/// The group-context extensions that carry `ctx`, as a modified client would propose them.
fn context_extensions(ctx: &AlbumContext) -> openmls::prelude::Extensions<openmls::prelude::GroupContext> {
    openmls::prelude::Extensions::from_vec(vec![
        openmls::prelude::Extension::RequiredCapabilities(openmls::prelude::RequiredCapabilitiesExtension::new(
            &[openmls::prelude::ExtensionType::Unknown(ALBUM_EXTENSION_TYPE)],
            &[openmls::prelude::ProposalType::GroupContextExtensions],
            &[CredentialType::Other(CREDENTIAL_TYPE)],
        )),
        openmls::prelude::Extension::Unknown(
            ALBUM_EXTENSION_TYPE,
            openmls::prelude::UnknownExtension(ctx.to_bytes().unwrap()),
        ),
    ])
    .unwrap()
}

#[test]
fn an_album_upgrade_is_admin_only_bumps_the_version_and_rides_alone() {
    let mut w = alice_and_bob(34);
    let capped_policy = HistoryPolicy::Capped { last: std::num::NonZeroU32::new(1).unwrap() };
    let capped = capsule_amk::AlbumUpgrade { history_policy: Some(capped_policy), admins: None };
    // Locally, Bob (not an admin) cannot build it.
    assert!(matches!(w.stage(1, &Change::UpgradeAlbum { upgrade: capped.clone() }), Err(MlsError::Unauthorized(_))));

    // What modified clients could send instead.
    let now = w.album(0).context().clone();
    let upgraded = AlbumContext { metadata: now.metadata.upgraded(&capped).unwrap(), ..now.clone() };
    let ext = context_extensions(&upgraded);
    let by_bob = raw_commit(&w, 1, |g, p, me| stage(g, p, me, vec![], vec![], Some(ext)));
    let unbumped =
        AlbumContext { metadata: AlbumMetadata::new(ALBUM, capped_policy, [uid(1)].into()).unwrap(), ..now.clone() };
    let ext = context_extensions(&unbumped);
    let without_bump = raw_commit(&w, 0, |g, p, me| stage(g, p, me, vec![], vec![], Some(ext)));
    let rotating = AlbumContext { amk_version: now.amk_version.next().unwrap(), ..upgraded.clone() };
    let ext = context_extensions(&rotating);
    let with_rotation = raw_commit(&w, 0, |g, p, me| stage(g, p, me, vec![], vec![], Some(ext)));
    let cases: Vec<(&str, usize, Vec<u8>, Expect)> = vec![
        ("non-admin upgrade", 0, by_bob, |e| matches!(e, MlsError::Rule(Violation::MetadataByNonAdmin))),
        ("metadata changed without a version bump", 1, without_bump, |e| {
            matches!(e, MlsError::Rule(Violation::IllegalUpgrade))
        }),
        ("upgrade combined with a rotation", 1, with_rotation, |e| {
            matches!(e, MlsError::Rule(Violation::UpgradeNotAlone))
        }),
    ];
    assert_refused(&mut w, cases);
    for d in [0, 1] {
        assert_eq!(w.album(d).context().metadata, now.metadata, "metadata unchanged");
    }

    // The ceremony itself: every member applies it.
    let out = w.stage(0, &Change::UpgradeAlbum { upgrade: capped.clone() }).unwrap();
    w.deliver(0, &out, &[]);
    w.assert_consistent();
    for d in w.members() {
        assert_eq!(w.album(d).context().metadata.metadata_version(), 2);
        assert_eq!(w.album(d).context().metadata.history_policy(), capped_policy);
    }
    assert!(matches!(w.stage(0, &Change::UpgradeAlbum { upgrade: capped }), Err(MlsError::AlreadyInEffect(_))));
    // From now on every joiner gets the capped range.
    for _ in 0..2 {
        let out = w.stage(0, &Change::RotateAmk).unwrap();
        w.deliver(0, &out, &[]);
    }
    let carol = w.user(3);
    let c0 = w.device(carol);
    let dir = w.directory(carol);
    let out = w.stage(0, &Change::AddUser { user: carol, directory: dir }).unwrap();
    w.deliver(0, &out, &[c0]);
    assert_eq!(w.album(0).keyring().held().count(), 3);
    assert_eq!(w.album(c0).keyring().held().count(), 1, "the last version only");
    w.assert_consistent();
}
