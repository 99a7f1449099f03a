//! Fixtures shared by this crate's tests: an album id, versions, and stand-ins
//! for the MLS exporter secrets that feed the key schedule.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::indexing_slicing)] // test code

use capsule_amk::{AlbumId, AmkVersion, EpochSecret};

pub const ALBUM: AlbumId = AlbumId::from_bytes([7; 16]);

pub fn v(n: u32) -> AmkVersion {
    AmkVersion::new(n).unwrap()
}

/// The exporter secret of the epoch that committed rotation `n` (a stand-in for MLS).
pub fn epoch_secret(n: u32) -> EpochSecret {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&n.to_be_bytes());
    EpochSecret::from_exporter(b)
}
