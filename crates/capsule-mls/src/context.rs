//! The album context: the group-context extension every member agrees on.

use core::fmt;
use std::collections::BTreeMap;

use capsule_amk::{AlbumMetadata, AmkVersion};
use capsule_identity::{DecodeError, UserId, encoding};
use openmls::prelude::{Extension, Extensions, GroupContext, UnknownExtension};
use serde::{Deserialize, Serialize};

use crate::binding::{ALBUM_EXTENSION_TYPE, required_capabilities};
use crate::boundary::During as _;
use crate::{MlsError, Result};

/// What the group context says about the album: its metadata and the current AMK
/// version. Because it is in the group context, every member (and every joiner,
/// through the Welcome) reads the same values, authenticated by MLS itself; a
/// rotation is exactly a commit that raises `amk_version` by one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlbumContext {
    /// Album id, history policy, admins.
    pub metadata: AlbumMetadata,
    /// The AMK version of the current epoch (the joiner's ceiling).
    pub amk_version: AmkVersion,
    /// Set while a full re-key is in progress: writes are quiesced, every member
    /// replaces its leaf, and the commit that clears it rotates the AMK.
    pub rekey: Option<RekeyMarker>,
    /// For every user with a device in the album, the first AMK version the
    /// user may read. Fixed by the commit that added the user's first device
    /// (the album's policy at that version) and dropped when the user's last
    /// device leaves, so every device of a user, added by whomever and in
    /// whatever order, receives the same versions as the user's other devices.
    pub entitlements: BTreeMap<UserId, AmkVersion>,
}

/// Why an album is re-keyed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RekeyReason {
    /// An admin asked for it.
    AdminInitiated,
    /// A compromise is suspected. Only the application can tell (a lost
    /// device found tampered with, a report from the user, a server alert):
    /// it calls the re-key with this reason; the library never guesses.
    SuspectedCompromise,
    /// Deployment policy for long-lived albums: decided against the injected
    /// clock by the resilience layer's `RekeySchedule`.
    Scheduled,
}

/// Names one full re-key ceremony: chosen by the admin who starts it, carried in
/// the [`RekeyMarker`] and in the commit that finishes it. Running the same id
/// again is the same ceremony.
///
/// Encoded exactly as the plain `u64` it wraps; `Display` prints that number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RekeyId(pub u64);

impl fmt::Display for RekeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The re-key in progress, as every member reads it from the group context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RekeyMarker {
    /// The ceremony's id.
    pub id: RekeyId,
    /// Why.
    pub reason: RekeyReason,
}

impl AlbumContext {
    /// Canonical encoding.
    ///
    /// # Errors
    /// Only on a serializer bug.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        encoding::encode(&(self.metadata.to_bytes()?, self.amk_version, self.rekey, &self.entitlements))
            .map_err(|_| MlsError::Internal("album context encoding"))
    }

    /// Decodes and validates the extension payload.
    ///
    /// # Errors
    /// [`MlsError::Amk`] for malformed input.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        type Wire = (Vec<u8>, AmkVersion, Option<RekeyMarker>, BTreeMap<UserId, AmkVersion>);
        let (metadata, amk_version, rekey, entitlements): Wire =
            encoding::decode_canonical(bytes).map_err(|e| MlsError::Amk(e.into()))?;
        // Versions start at 1, and nobody is entitled to a version not yet made.
        let valid = |v: &AmkVersion| AmkVersion::new(v.get()).is_some() && *v <= amk_version;
        if !valid(&amk_version) || !entitlements.values().all(valid) {
            return Err(MlsError::Amk(DecodeError::Malformed.into()));
        }
        Ok(Self { metadata: AlbumMetadata::from_bytes(&metadata)?, amk_version, rekey, entitlements })
    }

    /// The group-context extensions carrying this context.
    pub(crate) fn extensions(&self) -> Result<Extensions<GroupContext>> {
        Extensions::from_vec(vec![
            Extension::RequiredCapabilities(required_capabilities()),
            Extension::Unknown(ALBUM_EXTENSION_TYPE, UnknownExtension(self.to_bytes()?)),
        ])
        .during("building the album context extensions")
    }

    /// Reads the context from group-context extensions.
    pub(crate) fn from_extensions(extensions: &Extensions<GroupContext>) -> Result<Self> {
        let ext = extensions.unknown(ALBUM_EXTENSION_TYPE).ok_or(MlsError::Refused("group has no album context"))?;
        Self::from_bytes(&ext.0)
    }
}
