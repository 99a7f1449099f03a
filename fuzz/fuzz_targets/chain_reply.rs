//! Fuzz `wire::decode::<Reply>` (every answer of the chain server, read by the
//! client): never panics; whatever it accepts re-encodes to exactly the same
//! bytes (the decoder refuses non-canonical encodings).
#![no_main]

use capsule_chain::wire::{self, Reply};
use libfuzzer_sys::fuzz_target;

/// The client's limit on a reply (`capsule-client`'s `REPLY_LIMIT`).
const REPLY_LIMIT: u64 = 256 << 20;

fuzz_target!(|data: &[u8]| {
    if let Ok(reply) = wire::decode::<Reply>(data, REPLY_LIMIT) {
        assert_eq!(wire::encode(&reply).ok().as_deref(), Some(data));
    }
});
