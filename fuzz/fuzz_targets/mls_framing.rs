//! Fuzz `framing` (the public framing of a handshake, which the chain reads
//! from every submitted commit before ordering it): never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = capsule_mls::framing(data);
});
