//! Property tests for every decoder of this crate: arbitrary bytes never
//! panic, anything accepted is canonical, and every value round-trips.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic, clippy::print_stdout)] // test code

use capsule_identity::*;
use proptest::prelude::*;

fn identity() -> &'static IdentityKeyPair {
    static KEY: std::sync::OnceLock<IdentityKeyPair> = std::sync::OnceLock::new();
    KEY.get_or_init(|| IdentityKeyPair::from_seed(&IdentitySeed::from_bytes([5; 32])).unwrap())
}

fn claims() -> impl Strategy<Value = DeviceClaims> {
    (any::<[u8; 16]>(), any::<[u8; 16]>(), any::<[u8; 32]>(), any::<u64>(), any::<u64>()).prop_map(|(u, d, k, a, b)| {
        DeviceClaims {
            user: UserId::from_bytes(u),
            device: DeviceId::from_bytes(d),
            device_key: k,
            validity: Validity::new(UnixTime(a.min(b)), UnixTime(a.max(b))).unwrap(),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn certificate_round_trips(claims in claims()) {
        let cert = identity().certify_device(&claims).unwrap();
        let bytes = cert.to_bytes().unwrap();
        let back = DeviceCertificate::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&back, &cert);
        prop_assert_eq!(back.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn claimed_member_reads_what_the_certificate_names(claims in claims(), cut in 1usize..3500, extra in 1usize..8) {
        let bytes = identity().certify_device(&claims).unwrap().to_bytes().unwrap();
        prop_assert_eq!(DeviceCertificate::claimed_member(&bytes), Ok((claims.user, claims.device)));
        // Cut short or run on, it names nobody.
        let short = &bytes[..bytes.len().saturating_sub(cut)];
        prop_assert!(DeviceCertificate::claimed_member(short).is_err());
        let long = [bytes.as_slice(), &vec![0; extra]].concat();
        prop_assert_eq!(DeviceCertificate::claimed_member(&long), Err(DecodeError::Malformed));
    }

    #[test]
    fn claimed_member_agrees_with_the_full_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..4000)) {
        if let Ok(cert) = DeviceCertificate::from_bytes(&bytes) {
            prop_assert_eq!(DeviceCertificate::claimed_member(&bytes), Ok((cert.user(), cert.device())));
        }
    }

    #[test]
    fn certificate_decoder_accepts_only_canonical_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4000)) {
        if let Ok(cert) = DeviceCertificate::from_bytes(&bytes) {
            prop_assert_eq!(cert.to_bytes().unwrap(), bytes);
        }
    }

    #[test]
    fn mutated_certificates_never_verify(claims in claims(), index in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let cert = identity().certify_device(&claims).unwrap();
        let mut bytes = cert.to_bytes().unwrap();
        let i = index.index(bytes.len());
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        let trust = std::collections::BTreeMap::from([(claims.user, identity().public_key().clone())]);
        let now = claims.validity.not_before();
        if let Ok(mutated) = DeviceCertificate::from_bytes(&bytes) {
            // A mutation inside the claims may still name a trusted user only if the
            // user id is untouched; either way the signatures must not cover it.
            prop_assert!(mutated.verify(&claims.device_key, now, &trust).is_err());
        }
    }

    #[test]
    fn identity_key_decoder_accepts_only_canonical_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2100)) {
        if let Ok(key) = IdentityPublicKey::from_bytes(&bytes) {
            prop_assert_eq!(key.to_bytes().unwrap(), bytes);
        }
    }
}
