//! Fuzz `IdentityPublicKey::from_bytes`: never panics; whatever it accepts is canonical.
#![no_main]

use capsule_identity::IdentityPublicKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = IdentityPublicKey::from_bytes(data) {
        assert_eq!(key.to_bytes().ok().as_deref(), Some(data));
    }
});
