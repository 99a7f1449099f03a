//! Shared pieces of the fuzz targets (`fuzz_targets/`) and of the seed
//! generator (`src/bin/make_seeds.rs`): edit scripts over a valid input, and a
//! small live album whose devices can be saved and restored between inputs.
//!
//! A live album's MLS randomness comes from the OS (libcrux), so the valid
//! commits, Welcomes and fingerprints of one process are worthless to another:
//! a committed seed cannot hold them. The targets that feed a live album
//! therefore build their valid inputs at start-up, and an input either stands
//! on its own (raw bytes) or names one of those valid inputs and edits it
//! ([`edit::apply`]). Identities are deterministic (`Directory::new(seed)`),
//! so certificates and KeyPackages travel between processes.

pub mod edit;
pub mod inputs;
pub mod scratch;
pub mod world;
