//! Versions, keys and the key schedule that derives them.

use core::fmt;

use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{AlbumId, AmkError, PhotoId, Result};

/// An AMK version: starts at 1 and only ever grows by one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AmkVersion(u32);

impl AmkVersion {
    /// Version 1, created with the album.
    pub const FIRST: Self = Self(1);

    /// A version number; 0 is not a version.
    #[must_use]
    pub const fn new(v: u32) -> Option<Self> {
        if v == 0 { None } else { Some(Self(v)) }
    }

    /// The number.
    #[must_use]
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The version after this one.
    ///
    /// # Errors
    /// [`AmkError::VersionOverflow`] at `u32::MAX`.
    pub fn next(self) -> Result<Self> {
        self.0.checked_add(1).map(Self).ok_or(AmkError::VersionOverflow)
    }

    /// Whether this is a valid version (decoders use it: 0 is refused).
    pub(crate) const fn is_valid(self) -> bool {
        self.0 != 0
    }
}

impl fmt::Display for AmkVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

macro_rules! secret_key {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Neither `Clone` nor `Serialize`: a copy exists only where this crate
        /// makes one on purpose, and the key reaches bytes only inside this
        /// crate's own zeroized records.
        #[derive(Zeroize, ZeroizeOnDrop)]
        pub struct $name([u8; 32]);

        impl $name {
            /// The key bytes. Handle with care: this is what protects photos.
            #[must_use]
            pub const fn expose_secret(&self) -> &[u8; 32] {
                &self.0
            }

            /// A deliberate copy (a bundle or keyring built from another).
            #[allow(dead_code)] // not every key type is copied
            pub(crate) const fn copy(&self) -> Self {
                Self(self.0)
            }
        }

        impl SecretKey for $name {
            fn bytes(&self) -> &[u8; 32] {
                &self.0
            }

            fn from_bytes(bytes: &[u8; 32]) -> Self {
                Self(*bytes)
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.0.ct_eq(&other.0).into()
            }
        }

        impl Eq for $name {}

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }
    };
}

/// The keys this crate writes into its own records ([`serde_key`], [`serde_keys`]).
pub(crate) trait SecretKey {
    fn bytes(&self) -> &[u8; 32];
    fn from_bytes(bytes: &[u8; 32]) -> Self;
}

/// 32 key bytes read from a record, zeroized once they are moved into a key.
#[derive(Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(transparent)]
struct Raw([u8; 32]);

/// Serde for one key field of this crate's records (`#[serde(with = ...)]`):
/// the same 32 bytes the derived encoding of `[u8; 32]` gives.
pub(crate) mod serde_key {
    use serde::{Deserialize as _, Deserializer, Serialize as _, Serializer};

    use super::{Raw, SecretKey};

    pub(crate) fn serialize<K: SecretKey, S: Serializer>(key: &K, s: S) -> core::result::Result<S::Ok, S::Error> {
        key.bytes().serialize(s)
    }

    pub(crate) fn deserialize<'de, K: SecretKey, D: Deserializer<'de>>(d: D) -> core::result::Result<K, D::Error> {
        Ok(K::from_bytes(&Raw::deserialize(d)?.0))
    }
}

/// Serde for a list of keys (see [`serde_key`]).
pub(crate) mod serde_keys {
    use serde::{Deserialize as _, Deserializer, Serializer};

    use super::{Raw, SecretKey};

    pub(crate) fn serialize<K: SecretKey, S: Serializer>(keys: &[K], s: S) -> core::result::Result<S::Ok, S::Error> {
        s.collect_seq(keys.iter().map(SecretKey::bytes))
    }

    pub(crate) fn deserialize<'de, K: SecretKey, D: Deserializer<'de>>(d: D) -> core::result::Result<Vec<K>, D::Error> {
        Ok(Vec::<Raw>::deserialize(d)?.iter().map(|raw| K::from_bytes(&raw.0)).collect())
    }
}

/// Serde for a list of versioned keys (see [`serde_key`]).
pub(crate) mod serde_versioned_keys {
    use serde::{Deserialize as _, Deserializer, Serializer};

    use super::{AmkVersion, Raw, SecretKey};

    pub(crate) fn serialize<K: SecretKey, S: Serializer>(
        keys: &[(AmkVersion, K)],
        s: S,
    ) -> core::result::Result<S::Ok, S::Error> {
        s.collect_seq(keys.iter().map(|(v, k)| (v, k.bytes())))
    }

    pub(crate) fn deserialize<'de, K: SecretKey, D: Deserializer<'de>>(
        d: D,
    ) -> core::result::Result<Vec<(AmkVersion, K)>, D::Error> {
        Ok(Vec::<(AmkVersion, Raw)>::deserialize(d)?.iter().map(|(v, raw)| (*v, K::from_bytes(&raw.0))).collect())
    }
}

secret_key!(
    /// An album master key: every photo of its version is encrypted under it.
    /// Zeroized on drop, redacted in `Debug`, compared in constant time.
    Amk
);
secret_key!(
    /// The write-tier key of a version: what authorizes uploads while that version is current.
    WriteKey
);
secret_key!(
    /// A secret every member of one MLS epoch can compute and nobody else can:
    /// the MLS wrapper feeds it the epoch's exporter output. Input to the key schedule.
    EpochSecret
);
secret_key!(
    /// The AEAD key a history bundle is sealed under (see [`EpochSecret::bundle_key`]).
    BundleKey
);

/// HKDF-Extract salt of every Capsule AMK derivation.
const SALT: &[u8] = b"capsule/amk/v1";
const LABEL_AMK: &[u8] = b"capsule/amk/v1/amk";
const LABEL_WRITE: &[u8] = b"capsule/amk/v1/write-tier";
const LABEL_BUNDLE: &[u8] = b"capsule/amk/v1/history-bundle";
const LABEL_PHOTO: &[u8] = b"capsule/amk/v1/photo";

impl EpochSecret {
    /// Wraps exporter output (32 bytes).
    #[must_use]
    pub const fn from_exporter(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    fn expand(&self, label: &[u8], album: &AlbumId, version: Option<AmkVersion>) -> Result<[u8; 32]> {
        let hk = Hkdf::<Sha256>::new(Some(SALT), &self.0);
        let version = version.map_or([0; 4], |v| v.get().to_be_bytes());
        let mut out = [0u8; 32];
        hk.expand_multi_info(&[label, album.as_bytes(), &version], &mut out)
            .map_err(|_| AmkError::Internal("hkdf output length"))?;
        Ok(out)
    }

    /// The AMK and write-tier key of `version`, bound to `album`.
    ///
    /// # Errors
    /// Only [`AmkError::Internal`].
    pub fn version_keys(&self, album: &AlbumId, version: AmkVersion) -> Result<(Amk, WriteKey)> {
        Ok((
            Amk(self.expand(LABEL_AMK, album, Some(version))?),
            WriteKey(self.expand(LABEL_WRITE, album, Some(version))?),
        ))
    }

    /// The key history bundles for joiners of this epoch are sealed under.
    ///
    /// # Errors
    /// Only [`AmkError::Internal`].
    pub fn bundle_key(&self, album: &AlbumId) -> Result<BundleKey> {
        Ok(BundleKey(self.expand(LABEL_BUNDLE, album, None)?))
    }
}

impl Amk {
    /// The AES-256-GCM key of one photo: HKDF-SHA256 with this AMK as input key
    /// material, bound to the album, the version and the photo id (see the crate root).
    pub(crate) fn photo_key(
        &self,
        album: &AlbumId,
        version: AmkVersion,
        photo: &PhotoId,
    ) -> Result<Zeroizing<[u8; 32]>> {
        let hk = Hkdf::<Sha256>::new(Some(SALT), &self.0);
        let mut out = Zeroizing::new([0u8; 32]);
        hk.expand_multi_info(
            &[LABEL_PHOTO, album.as_bytes(), &version.get().to_be_bytes(), photo.as_bytes()],
            out.as_mut_slice(),
        )
        .map_err(|_| AmkError::Internal("hkdf output length"))?;
        Ok(out)
    }
}
