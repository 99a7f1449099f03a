//! Fuzz `AlbumMetadata::from_bytes`: never panics; whatever it accepts is canonical.
#![no_main]

use capsule_amk::AlbumMetadata;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = AlbumMetadata::from_bytes(data) {
        assert_eq!(value.to_bytes().ok().as_deref(), Some(data));
    }
});
