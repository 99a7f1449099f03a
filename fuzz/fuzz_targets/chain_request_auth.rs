//! Fuzz `wire::decode::<RequestAuth>` (the `capsule-auth` header every signed
//! request carries, read by the server at 256 bytes), `RegisterUser` (the
//! body of a directory registration) and the bare `Vec<u8>` body of a
//! certificate renewal: never panics; whatever decodes re-encodes to exactly
//! the same bytes.
#![no_main]

use capsule_chain::wire::{self, RegisterUser, RequestAuth};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(auth) = wire::decode::<RequestAuth>(data, 256) {
        assert_eq!(wire::encode(&auth).ok().as_deref(), Some(data));
    }
    if let Ok(register) = wire::decode::<RegisterUser>(data, 1 << 20) {
        assert_eq!(wire::encode(&register).ok().as_deref(), Some(data));
    }
    if let Ok(certificate) = wire::decode::<Vec<u8>>(data, 1 << 20) {
        assert_eq!(wire::encode(&certificate).ok().as_deref(), Some(data));
    }
});
