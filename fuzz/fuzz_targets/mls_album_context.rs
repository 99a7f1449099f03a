//! Fuzz `AlbumContext::from_bytes` (the group-context extension every member
//! decodes): never panics; whatever it accepts is canonical.
#![no_main]

use capsule_mls::AlbumContext;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ctx) = AlbumContext::from_bytes(data) {
        assert_eq!(ctx.to_bytes().ok().as_deref(), Some(data));
    }
});
