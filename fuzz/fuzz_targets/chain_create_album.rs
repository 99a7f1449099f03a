//! Fuzz `wire::decode::<CreateAlbum>` (the body of `PUT /v1/albums/{album}`,
//! read by the server at its limit of 64 bytes): never panics; whatever it
//! accepts re-encodes to exactly the same
//! bytes (the decoder refuses non-canonical encodings).
#![no_main]

use capsule_chain::wire::{self, CreateAlbum};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(create) = wire::decode::<CreateAlbum>(data, 64) {
        assert_eq!(wire::encode(&create).ok().as_deref(), Some(data));
    }
});
