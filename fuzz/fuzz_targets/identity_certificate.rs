//! Fuzz `DeviceCertificate::from_bytes`: never panics; whatever it accepts is canonical.
#![no_main]

use capsule_identity::DeviceCertificate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cert) = DeviceCertificate::from_bytes(data) {
        assert_eq!(cert.to_bytes().ok().as_deref(), Some(data));
    }
});
