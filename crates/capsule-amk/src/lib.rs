//! Album master keys (AMK): versioned keys, the keyring a device holds, the
//! album's history policy, the sealed history bundles joiners receive, and the
//! photos sealed under them.
//!
//! Every upload is encrypted under the album's current AMK version; who reads
//! which photos is decided by which versions a device holds. This crate owns
//! that logic and is free of OpenMLS types so it can be tested on its own.
//!
//! # Key schedule
//!
//! A rotation commits in some MLS epoch. The MLS wrapper exports a 32-byte
//! secret from that epoch (an [`EpochSecret`]); only members of that epoch can
//! compute it. From it, with HKDF-SHA256 and the salt `capsule/amk/v1`:
//!
//! | key | HKDF-Expand info | length |
//! | --- | --- | --- |
//! | AMK of version `v` | `capsule/amk/v1/amk` ‖ album id (16) ‖ `v` (u32 BE) | 32 |
//! | write-tier key of `v` | `capsule/amk/v1/write-tier` ‖ album id ‖ `v` | 32 |
//! | history-bundle key | `capsule/amk/v1/history-bundle` ‖ album id ‖ `0u32` | 32 |
//!
//! So each version has exactly one AMK and one write-tier key by construction
//! (every member derives the same ones), and a device removed before the
//! rotation's epoch cannot compute them.
//!
//! # Photos
//!
//! Each photo is sealed with AES-256-GCM under a key of its own, derived from
//! the AMK of the version it is uploaded under (the current one) and a random
//! 32-byte [`PhotoId`] the sealer draws, again with HKDF-SHA256 and the salt
//! `capsule/amk/v1`:
//!
//! | key | input key material | HKDF-Expand info | length |
//! | --- | --- | --- | --- |
//! | photo key | AMK of `v` | `capsule/amk/v1/photo` ‖ album id (16) ‖ `v` (u32 BE) ‖ photo id (32) | 32 |
//!
//! The plaintext is sealed in [`SealedPhoto::CHUNK_SIZE`] chunks with the STREAM
//! nonce `0⁷ ‖ chunk index (u32 BE) ‖ last-chunk flag` and the photo's
//! [`PhotoHeader`] (format ‖ `v` ‖ photo id) as associated data, so chunks cannot
//! be reordered, dropped, duplicated or truncated. A key seals exactly one photo,
//! so its nonces never repeat. [`seal_photo`] and [`open_photo`] take a whole
//! photo; [`PhotoSealer`] and [`PhotoOpener`] stream it and write the same bytes.
//! Opening a version the history policy withheld is [`AmkError::Withheld`].
//!
//! # History
//!
//! [`HistoryPolicy`] is part of [`AlbumMetadata`], fixed at album creation and
//! changed only by an explicit [`AlbumUpgrade`]. A joiner's [`HistoryBundle`]
//! carries exactly the versions the policy grants (all of them, or the last
//! `N`), the current write-tier key and the ceiling; it is sealed with
//! XChaCha20-Poly1305 under the joining epoch's bundle key, with the album id as
//! associated data. Withheld versions show up as [`AmkSlot::Withheld`].
//!
//! # Epoch ceiling
//!
//! [`AmkKeyring::ceiling`] is the highest version the admin-attested chain has
//! shown; it only rises. [`AmkKeyring::check_manifest`] refuses any claim above it.
//!
//! ```
//! use capsule_amk::*;
//! use capsule_identity::UserId;
//!
//! let album = AlbumId::from_bytes([7; 16]);
//! let admin = UserId::from_bytes([1; 16]);
//! let meta = AlbumMetadata::new(album, HistoryPolicy::Full, [admin].into())?;
//! let mut ring = AmkKeyring::create(album, &EpochSecret::from_exporter([1; 32]))?;
//! let v2 = AmkVersion::new(2).ok_or(AmkError::Internal("version"))?;
//! ring.rotate(v2, &EpochSecret::from_exporter([2; 32]))?;
//!
//! // A joiner receives versions 1 and 2 under the full-history policy.
//! let key = EpochSecret::from_exporter([3; 32]).bundle_key(&album)?;
//! let mut rng = <chacha20::ChaCha20Rng as rand_core::SeedableRng>::from_seed([0; 32]);
//! let sealed = seal_for_joiner(&ring, &meta, &key, &mut rng)?;
//! let joined = sealed.open(&key, &meta)?;
//! assert_eq!(joined.current(), ring.current());
//! assert_eq!(joined.ceiling(), v2);
//! assert!(joined.check_manifest(v2.next()?).is_err());
//! # Ok::<(), AmkError>(())
//! ```
#![forbid(unsafe_code)]

mod bundle;
mod error;
mod keyring;
mod keys;
mod metadata;
mod photo;
mod secret;

pub use bundle::{HistoryBundle, SealedBundle, seal_for_joiner};
pub use error::{AmkError, Result};
pub use keyring::{AmkKeyring, AmkSlot, HeldVersions};
pub use keys::{Amk, AmkVersion, BundleKey, EpochSecret, WriteKey};
pub use metadata::{AlbumId, AlbumMetadata, AlbumUpgrade, HistoryPolicy};
pub use photo::{PhotoHeader, PhotoId, PhotoOpener, PhotoSealer, SealedPhoto, open_photo, seal_photo};
pub use secret::SecretBytes;
