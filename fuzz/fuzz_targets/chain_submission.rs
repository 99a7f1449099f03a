//! Fuzz `wire::decode::<Submission>` (the body of `POST /v1/albums/{album}/commits`,
//! read by the server at its default limits): never panics; whatever it accepts
//! re-encodes to exactly the same
//! bytes (the decoder refuses non-canonical encodings).
#![no_main]

use capsule_chain::Submission;
use capsule_chain::rules::{self, Limits};
use capsule_chain::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(submission) = wire::decode::<Submission>(data, limits.body()) {
        assert_eq!(wire::encode(&submission).ok().as_deref(), Some(data));
        let _ = rules::check_submission(&[0x51; 16], &submission, &limits);
    }
});
