//! Device certificates: what is accepted, and every way a binding is refused.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic, clippy::print_stdout)] // test code

use std::collections::BTreeMap;

use capsule_identity::*;
use chacha20::ChaCha20Rng;
use rand_core::SeedableRng;

const NOW: UnixTime = UnixTime(1_800_000_000);

struct Fixture {
    identity: IdentityKeyPair,
    device: DeviceSigningKey,
    claims: DeviceClaims,
    cert: DeviceCertificate,
    bytes: Vec<u8>,
    trust: BTreeMap<UserId, IdentityPublicKey>,
}

fn fixture(seed: u8) -> Fixture {
    let mut rng = ChaCha20Rng::from_seed([seed; 32]);
    let identity = IdentityKeyPair::from_seed(&IdentitySeed::generate_with(&mut rng).unwrap()).unwrap();
    let device = DeviceSigningKey::generate_with(&mut rng).unwrap();
    let claims = DeviceClaims {
        user: UserId::from_bytes([seed; 16]),
        device: DeviceId::from_bytes([seed.wrapping_add(1); 16]),
        device_key: device.public_key(),
        validity: Validity::new(UnixTime(1_700_000_000), UnixTime(1_900_000_000)).unwrap(),
    };
    let cert = identity.certify_device_with(&claims, &mut rng).unwrap();
    let bytes = cert.to_bytes().unwrap();
    let trust = BTreeMap::from([(claims.user, identity.public_key().clone())]);
    Fixture { identity, device, claims, cert, bytes, trust }
}

// Layout of the canonical encoding (postcard): version, user, device, key,
// validity (two varints), Ed25519 signature (64), ML-DSA signature (3309).
const USER: std::ops::Range<usize> = 1..17;
const DEVICE: std::ops::Range<usize> = 17..33;
const KEY: std::ops::Range<usize> = 33..65;
const ML_DSA_SIG_LEN: usize = 3309;
const ED_SIG_LEN: usize = 64;

fn ml_dsa_sig(len: usize) -> std::ops::Range<usize> {
    len - ML_DSA_SIG_LEN..len
}
fn ed_sig(len: usize) -> std::ops::Range<usize> {
    len - ML_DSA_SIG_LEN - ED_SIG_LEN..len - ML_DSA_SIG_LEN
}

/// Trusts one identity key for every user, so a flipped user id is refused by
/// the signature check rather than by a missing trust entry.
struct TrustAnyUser<'a>(&'a IdentityPublicKey);

impl TrustStore for TrustAnyUser<'_> {
    fn trusted_identity(&self, _: &UserId) -> Option<&IdentityPublicKey> {
        Some(self.0)
    }
}

/// Decodes `bytes` and verifies it the way a peer would, with the fixture's key.
fn check(f: &Fixture, bytes: &[u8]) -> Result<DeviceClaims> {
    let key = if bytes[KEY] == f.bytes[KEY] { f.device.public_key() } else { bytes[KEY].try_into().unwrap() };
    DeviceCertificate::from_bytes(bytes)?.verify(&key, NOW, &TrustAnyUser(f.identity.public_key()))
}

#[test]
fn round_trip_and_accept() {
    let f = fixture(1);
    assert_eq!(f.bytes[USER], f.claims.user.as_bytes()[..]);
    assert_eq!(f.bytes[DEVICE], f.claims.device.as_bytes()[..]);
    assert_eq!(f.bytes[KEY], f.claims.device_key[..]);
    let decoded = DeviceCertificate::from_bytes(&f.bytes).unwrap();
    assert_eq!(decoded, f.cert);
    assert_eq!(decoded.to_bytes().unwrap(), f.bytes);
    assert_eq!(check(&f, &f.bytes).unwrap(), f.claims);
    println!("certificate: {} bytes", f.bytes.len());
}

#[test]
fn same_seed_same_identity() {
    let seed = IdentitySeed::from_bytes([42; 32]);
    let a = IdentityKeyPair::from_seed(&seed).unwrap();
    let b = IdentityKeyPair::from_seed(&IdentitySeed::from_bytes(*seed.expose_secret())).unwrap();
    assert_eq!(a.public_key(), b.public_key());
    let c = IdentityKeyPair::from_seed(&IdentitySeed::from_bytes([43; 32])).unwrap();
    assert_ne!(a.public_key().ed25519(), c.public_key().ed25519());
    assert_ne!(a.public_key().ml_dsa(), c.public_key().ml_dsa());
    assert_eq!(a.public_key().ml_dsa().len(), 1952);
}

fn assert_every_bit_flip_rejected(f: &Fixture, range: std::ops::Range<usize>, what: &str) {
    let mut bytes = f.bytes.clone();
    for i in range {
        for bit in 0..8 {
            bytes[i] ^= 1 << bit;
            let result = check(f, &bytes);
            assert!(
                matches!(result, Err(IdentityError::BadSignature)),
                "{what}: flip of byte {i} bit {bit} gave {result:?}"
            );
            bytes[i] ^= 1 << bit;
        }
    }
    assert_eq!(bytes, f.bytes);
}

#[test]
fn every_bit_flip_in_ids_and_key_is_rejected() {
    let f = fixture(2);
    assert_every_bit_flip_rejected(&f, USER, "user id");
    assert_every_bit_flip_rejected(&f, DEVICE, "device id");
    assert_every_bit_flip_rejected(&f, KEY, "certified key");
}

#[test]
fn every_bit_flip_in_ed25519_signature_is_rejected() {
    let f = fixture(3);
    assert_every_bit_flip_rejected(&f, ed_sig(f.bytes.len()), "ed25519 signature");
}

#[test]
fn every_bit_flip_in_ml_dsa_signature_is_rejected() {
    let f = fixture(4);
    assert_every_bit_flip_rejected(&f, ml_dsa_sig(f.bytes.len()), "ml-dsa signature");
}

#[test]
fn a_certificate_with_only_one_valid_half_is_rejected() {
    let f = fixture(5);
    let len = f.bytes.len();
    // The other half signed by a different identity over the same claims.
    let other = IdentityKeyPair::from_seed(&IdentitySeed::from_bytes([99; 32])).unwrap();
    let foreign = other.certify_device(&f.claims).unwrap().to_bytes().unwrap();
    assert_eq!(foreign.len(), len);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("ed25519 only (ml-dsa zeroed)", splice(&f.bytes, ml_dsa_sig(len), &vec![0; ML_DSA_SIG_LEN])),
        ("ml-dsa only (ed25519 zeroed)", splice(&f.bytes, ed_sig(len), &[0; ED_SIG_LEN])),
        ("ed25519 only (ml-dsa foreign)", splice(&f.bytes, ml_dsa_sig(len), &foreign[ml_dsa_sig(len)])),
        ("ml-dsa only (ed25519 foreign)", splice(&f.bytes, ed_sig(len), &foreign[ed_sig(len)])),
    ];
    for (what, bytes) in cases {
        let result = check(&f, &bytes);
        assert!(matches!(result, Err(IdentityError::BadSignature)), "{what}: {result:?}");
    }
}

fn splice(bytes: &[u8], range: std::ops::Range<usize>, with: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[range].copy_from_slice(with);
    out
}

#[test]
fn validity_window_is_enforced_at_both_ends() {
    let f = fixture(6);
    let v = f.claims.validity;
    let key = f.device.public_key();
    let at = |t| f.cert.verify(&key, UnixTime(t), &f.trust);
    assert!(at(v.not_before().0).is_ok());
    assert!(at(v.not_after().0).is_ok());
    assert!(matches!(at(v.not_before().0 - 1), Err(IdentityError::NotYetValid)));
    assert!(matches!(at(v.not_after().0 + 1), Err(IdentityError::Expired)));
    assert!(matches!(at(0), Err(IdentityError::NotYetValid)));
    assert!(matches!(at(u64::MAX), Err(IdentityError::Expired)));
    assert!(matches!(Validity::new(UnixTime(10), UnixTime(9)), Err(IdentityError::InvalidValidity)));
}

#[test]
fn wrong_identity_key_untrusted_user_and_wrong_presented_key_are_rejected() {
    let f = fixture(7);
    let key = f.device.public_key();

    let mut wrong = f.trust.clone();
    let impostor = IdentityKeyPair::from_seed(&IdentitySeed::from_bytes([8; 32])).unwrap();
    wrong.insert(f.claims.user, impostor.public_key().clone());
    assert!(matches!(f.cert.verify(&key, NOW, &wrong), Err(IdentityError::BadSignature)));

    let empty: BTreeMap<UserId, IdentityPublicKey> = BTreeMap::new();
    assert!(matches!(f.cert.verify(&key, NOW, &empty), Err(IdentityError::UntrustedUser)));

    let other_device = DeviceSigningKey::from_secret_bytes(&[1; 32]);
    assert!(matches!(f.cert.verify(&other_device.public_key(), NOW, &f.trust), Err(IdentityError::KeyMismatch)));

    // A certificate for another user is not accepted under this user's key.
    let mut claims = f.claims.clone();
    claims.user = UserId::from_bytes([0xEE; 16]);
    let forged = impostor.certify_device(&claims).unwrap();
    let trust = BTreeMap::from([(claims.user, f.identity.public_key().clone())]);
    assert!(matches!(forged.verify(&key, NOW, &trust), Err(IdentityError::BadSignature)));
}

#[test]
fn malformed_encodings_are_refused_with_typed_errors() {
    let f = fixture(9);
    let cases: Vec<(&str, Vec<u8>, DecodeError)> = vec![
        ("empty", vec![], DecodeError::Malformed),
        ("truncated", f.bytes[..f.bytes.len() - 1].to_vec(), DecodeError::Malformed),
        ("trailing", [f.bytes.clone(), vec![0]].concat(), DecodeError::TrailingBytes),
        ("unknown version", splice(&f.bytes, 0..1, &[2]), DecodeError::UnknownVersion(2)),
        ("overlong varint", overlong_validity(&f.bytes), DecodeError::NonCanonical),
    ];
    for (what, bytes, expected) in cases {
        assert_eq!(DeviceCertificate::from_bytes(&bytes).unwrap_err(), expected, "{what}");
    }
}

/// Re-encodes the first validity varint with a redundant continuation byte.
fn overlong_validity(bytes: &[u8]) -> Vec<u8> {
    let start = KEY.end;
    let mut end = start;
    while bytes[end] & 0x80 != 0 {
        end += 1;
    }
    let mut out = bytes[..start].to_vec();
    out.extend_from_slice(&bytes[start..end]);
    out.push(bytes[end] | 0x80);
    out.push(0x00);
    out.extend_from_slice(&bytes[end + 1..]);
    out
}

#[test]
fn identity_public_key_round_trip_and_refusals() {
    let f = fixture(10);
    let pk = f.identity.public_key();
    let bytes = pk.to_bytes().unwrap();
    assert_eq!(bytes.len(), 1 + 32 + 1952);
    assert_eq!(&IdentityPublicKey::from_bytes(&bytes).unwrap(), pk);
    assert_eq!(IdentityPublicKey::from_bytes(&bytes[1..]).unwrap_err(), DecodeError::Malformed);
    assert_eq!(IdentityPublicKey::from_bytes(&splice(&bytes, 0..1, &[9])).unwrap_err(), DecodeError::UnknownVersion(9));
    // An Ed25519 half that is not a curve point.
    let not_a_point =
        (0..=255u8).map(|i| [i; 32]).find(|b| ed25519_dalek::VerifyingKey::from_bytes(b).is_err()).unwrap();
    let bad = splice(&bytes, 1..33, &not_a_point);
    assert_eq!(IdentityPublicKey::from_bytes(&bad).unwrap_err(), DecodeError::InvalidKey);
}

#[test]
fn secrets_are_not_printed() {
    let f = fixture(11);
    let seed = IdentitySeed::from_bytes([0xAB; 32]);
    for text in [format!("{seed:?}"), format!("{:?}", f.identity), format!("{:?}", f.device)] {
        assert!(!text.to_lowercase().contains("abab"), "{text}");
        let secret = f.device.to_secret_bytes();
        let hex: String = secret.iter().take(4).map(|b| format!("{b:02x}")).collect();
        assert!(!text.contains(&hex), "{text}");
    }
}

/// A trusted key keeps its expanded ML-DSA half after the first verification:
/// that cache changes neither what the key is (equality, encoding) nor what it
/// accepts, and a clone made after caching still refuses another user's
/// certificate.
#[test]
fn a_trusted_key_that_has_verified_is_the_same_key() {
    let f = fixture(5);
    let other = fixture(6);
    let fresh = IdentityPublicKey::from_bytes(&f.identity.public_key().to_bytes().unwrap()).unwrap();
    let trust = BTreeMap::from([(f.claims.user, fresh.clone())]);
    let cert = DeviceCertificate::from_bytes(&f.bytes).unwrap();
    for _ in 0..3 {
        assert_eq!(cert.verify(&f.device.public_key(), NOW, &trust).unwrap(), f.claims);
    }
    let used = trust[&f.claims.user].clone();
    assert_eq!(used, fresh);
    assert_eq!(used.to_bytes().unwrap(), fresh.to_bytes().unwrap());
    // Another identity's certificate, presented as this user's, is refused by the cached key.
    let forged = DeviceCertificate::from_bytes(&other.bytes).unwrap();
    let as_f = TrustAnyUser(&used);
    assert!(forged.verify(&other.device.public_key(), NOW, &as_f).is_err());
}

/// The cache answers for the same bytes under the same trusted key only,
/// with the presented key and the time still checked; anything else gets
/// the full check and its error.
#[test]
fn a_cached_certificate_is_recognised_only_as_the_full_check_would_accept_it() {
    let f = fixture(31);
    let key = f.device.public_key();
    let mut store = CachingTrustStore::new(f.trust.clone());
    // Without a cache, the same answers as decoding and verifying.
    assert_eq!(DeviceCertificate::verify_bytes(&f.bytes, &key, NOW, &f.trust).ok(), Some(f.claims.clone()));
    assert!(store.verified().is_empty());
    for _ in 0..2 {
        assert_eq!(DeviceCertificate::verify_bytes(&f.bytes, &key, NOW, &store).ok(), Some(f.claims.clone()));
        assert_eq!(store.verified().len(), 1);
    }
    // A hit still checks the presented key and the time.
    let other = DeviceSigningKey::generate().unwrap().public_key();
    assert!(matches!(DeviceCertificate::verify_bytes(&f.bytes, &other, NOW, &store), Err(IdentityError::KeyMismatch)));
    let late = UnixTime(1_900_000_001);
    assert!(matches!(DeviceCertificate::verify_bytes(&f.bytes, &key, late, &store), Err(IdentityError::Expired)));
    // Other bytes are no hit: one bit of the Ed25519 signature flipped fails the check.
    let mut flipped = f.bytes.clone();
    let at = ed_sig(flipped.len()).start;
    flipped[at] ^= 1;
    assert!(matches!(DeviceCertificate::verify_bytes(&flipped, &key, NOW, &store), Err(IdentityError::BadSignature)));
    // The user's key replaced: the entry no longer answers, the signatures decide.
    let stranger = fixture(32).identity.public_key().clone();
    store.inner_mut().insert(f.claims.user, stranger);
    assert!(matches!(DeviceCertificate::verify_bytes(&f.bytes, &key, NOW, &store), Err(IdentityError::BadSignature)));
    // Removed: untrusted, as without a cache.
    store.inner_mut().remove(&f.claims.user);
    assert!(matches!(DeviceCertificate::verify_bytes(&f.bytes, &key, NOW, &store), Err(IdentityError::UntrustedUser)));
    // Trusted again, the entry answers again.
    store.inner_mut().insert(f.claims.user, f.identity.public_key().clone());
    assert_eq!(DeviceCertificate::verify_bytes(&f.bytes, &key, NOW, &store).ok(), Some(f.claims.clone()));
    assert!(DeviceCertificate::verify_bytes(&f.bytes[1..], &key, NOW, &store).is_err());
}
