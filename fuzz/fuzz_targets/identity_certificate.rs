//! Fuzz `DeviceCertificate::from_bytes` and `DeviceCertificate::verify` (every
//! leaf credential, directory registration and request signer is one): never
//! panics; whatever decodes is canonical; whatever verifies against the
//! fixture directory's trust store (the seeds' certificates do) claims a
//! trusted user and re-encodes to the same bytes; `claimed_member` reads the
//! same member from whatever fully decodes, and never panics either.
#![no_main]

use capsule_fuzz::world::SEED;
use capsule_identity::DeviceCertificate;
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
}

fuzz_target!(|data: &[u8]| {
    let claimed = DeviceCertificate::claimed_member(data);
    if let Ok(cert) = DeviceCertificate::from_bytes(data) {
        assert_eq!(claimed, Ok((cert.user(), cert.device())));
        assert_eq!(cert.to_bytes().ok().as_deref(), Some(data));
        TRUST.with(|dir| {
            if let Ok(claims) = cert.verify(cert.device_key(), NOW, &dir.trust) {
                assert!(dir.trust.contains_key(&claims.user));
                assert_eq!(claims.device_key, *cert.device_key());
            }
        });
    }
});
