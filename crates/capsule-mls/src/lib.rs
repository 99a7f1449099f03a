//! Capsule's OpenMLS ceremony wrapper: an album is an MLS group.
//!
//! The thin, strict layer that binds OpenMLS to the identity layer
//! (`capsule-identity`) and to AMK handling (`capsule-amk`):
//!
//! - every album uses [`CIPHERSUITE`] (X-Wing, ChaCha20-Poly1305, SHA-256,
//!   Ed25519) with the libcrux provider ([`CapsuleProvider`]), generic over the
//!   OpenMLS storage provider;
//! - every leaf's credential is the device certificate; every leaf that arrives
//!   (KeyPackages, Welcome trees, commit paths, adds) is verified against the
//!   user's trusted hybrid identity key ([`Validation`]);
//! - the group context carries the [`AlbumContext`]: album metadata and the
//!   current AMK version, so a rotation is a commit that raises that version by
//!   one and every member decides it from the commit itself;
//! - the new AMK and write-tier key derive from the MLS exporter of the epoch
//!   the commit creates (label `capsule amk epoch secret v1`, context = album id);
//!   the joiners' history bundle is sealed under a key derived from the same
//!   exporter of the joining epoch and travels beside the Welcome, never inside
//!   the GroupInfo;
//! - ceremonies stage one commit and keep it pending until [`Album::confirm`]
//!   (the server accepted it) or [`Album::reject`]; calling the same ceremony
//!   again returns the same commit.
//!
//! Nothing here does I/O or reads a clock: operations take and return bytes as
//! they cross the network.
#![forbid(unsafe_code)]

mod album;
mod binding;
mod context;
mod error;
mod provider;
mod rng;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use album::{Album, Applied, Ceremony, CommitHash, Outgoing, key_package};
pub use binding::{ALBUM_EXTENSION_TYPE, CREDENTIAL_TYPE, DeviceIdentity, Validation, capabilities};
pub use context::{AlbumContext, RekeyMarker, RekeyReason};
pub use error::{MlsError, Result};
/// The provider bound of every operation: higher layers name it through this
/// crate, not through OpenMLS.
pub use openmls_traits::OpenMlsProvider;
pub use provider::{CIPHERSUITE, CapsuleProvider, MemoryProvider};
