//! Capsule's OpenMLS wrapper: an album is an MLS group.
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
//! - a membership or key change is described by one [`Change`] and committed by
//!   one entry point, [`Album::stage`]: the commit stays pending
//!   ([`Album::pending`]) until [`Album::confirm`] (the server accepted it) or
//!   [`Album::reject`]; staging an equal change again returns the same
//!   [`Outgoing`];
//! - [`Album::process`] applies other members' commits from the chain under the
//!   same rules every member applies to its own;
//! - every OpenMLS error is classified at the boundary: bugs and storage faults
//!   ([`MlsError::is_internal`]) apart from typed refusals of the input.
//!
//! Code map: `album.rs` holds the state (create, join, load, getters),
//! `outgoing.rs` turns a [`Change`] into a staged commit and settles it,
//! `inbound.rs` holds every acceptance rule, `boundary.rs` classifies OpenMLS
//! errors, `ids.rs` names an album's [`Epoch`]s and [`Member`]s.
//!
//! Nothing here does I/O or reads a clock: operations take and return bytes as
//! they cross the network. One exception is OpenMLS's own: a KeyPackage's
//! lifetime is set and checked by OpenMLS against the system clock (see
//! `key_packages.rs`).
#![forbid(unsafe_code)]

mod album;
mod binding;
mod boundary;
mod change;
mod context;
mod error;
mod fingerprint;
mod framing;
mod ids;
mod inbound;
mod key_packages;
mod outgoing;
mod provider;
mod public;
mod reboot;
mod rng;
pub mod rules;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use album::{Album, CommitHash, album_of_group};
pub use binding::{ALBUM_EXTENSION_TYPE, CREDENTIAL_TYPE, DeviceIdentity, Validation, capabilities};
pub use change::Change;
pub use context::{AlbumContext, RekeyId, RekeyMarker, RekeyReason};
pub use error::{MlsError, Result};
pub use fingerprint::{Fingerprint, FingerprintHeader, KEPT_EPOCHS, Reading, fingerprint_header};
pub use framing::{Framing, framing};
pub use ids::{Epoch, Member};
pub use inbound::Applied;
pub use key_packages::{
    KEY_PACKAGE_LIFETIME_SECS, KeyPackageInfo, NewKeyPackage, forget_key_package, holds_key_package,
    inspect_key_package, new_key_package, welcome_recipients,
};
/// The provider bound of every operation: higher layers name it through this
/// crate, not through OpenMLS.
pub use openmls_traits::OpenMlsProvider;
pub use outgoing::{Outgoing, key_package};
pub use provider::{CIPHERSUITE, CapsuleProvider, MemoryProvider};
pub use public::{Genesis, OpenedGenesis, PublicAlbum, PublicApplied, PublicCommit};
