//! Fuzz `DeviceCertificate::from_bytes` and `DeviceCertificate::verify` (every
//! leaf credential, directory registration and request signer is one): never
//! panics; whatever decodes is canonical; whatever verifies against the
//! fixture directory's trust store (the seeds' certificates do) claims a
//! trusted user and re-encodes to the same bytes; `claimed_member` reads the
//! same member from whatever fully decodes, and never panics either; and
//! `verify_bytes` through a cache of verified certificates answers exactly as
//! the full check, the first time and again.
#![no_main]

use capsule_fuzz::world::SEED;
use std::collections::BTreeMap;

use capsule_identity::{CachingTrustStore, DeviceCertificate, IdentityPublicKey, UserId};
use capsule_mls::testkit::{Directory, NOW};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static TRUST: Directory = {
        let mut dir = Directory::new(SEED);
        for n in 1..=4 {
            dir.user(n).expect("user");
        }
        dir
    };
    static CACHED: CachingTrustStore<BTreeMap<UserId, IdentityPublicKey>> =
        TRUST.with(|dir| CachingTrustStore::new(dir.trust.clone()));
}

fuzz_target!(|data: &[u8]| {
    let claimed = DeviceCertificate::claimed_member(data);
    if let Ok(cert) = DeviceCertificate::from_bytes(data) {
        assert_eq!(claimed, Ok((cert.user(), cert.device())));
        assert_eq!(cert.to_bytes().ok().as_deref(), Some(data));
        TRUST.with(|dir| {
            let full = cert.verify(cert.device_key(), NOW, &dir.trust);
            if let Ok(claims) = &full {
                assert!(dir.trust.contains_key(&claims.user));
                assert_eq!(claims.device_key, *cert.device_key());
            }
            CACHED.with(|cached| {
                for _ in 0..2 {
                    let through = DeviceCertificate::verify_bytes(data, cert.device_key(), NOW, cached);
                    assert_eq!(through.as_ref().ok(), full.as_ref().ok());
                }
            });
        });
    }
});
