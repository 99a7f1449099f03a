//! Fuzz `wire::decode::<CreateAlbum>` (the body of `PUT /v1/albums/{album}`,
//! with the album's genesis state): never panics; whatever it
//! accepts re-encodes to exactly the same
//! bytes (the decoder refuses non-canonical encodings).
#![no_main]

use capsule_chain::wire::{self, CreateAlbum};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(create) = wire::decode::<CreateAlbum>(data, 1 << 20) {
        assert_eq!(wire::encode(&create).ok().as_deref(), Some(data));
    }
});
