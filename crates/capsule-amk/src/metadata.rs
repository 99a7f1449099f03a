//! Album metadata: identity, history policy and admins, fixed until an explicit upgrade.

use core::fmt;
use std::collections::BTreeSet;
use std::num::NonZeroU32;

use capsule_identity::{DecodeError, UserId, encoding};
use serde::{Deserialize, Serialize};

use crate::{AmkError, AmkVersion, Result};

/// Format version of [`AlbumMetadata`]'s encoding.
const METADATA_FORMAT: u8 = 1;

/// An album: 16 opaque bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AlbumId([u8; 16]);

impl AlbumId {
    /// Wraps 16 bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Debug for AlbumId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not secret, but logs only need a short alias, as for `UserId` and `DeviceId`.
        let [a, b, c, d, ..] = self.0;
        write!(f, "AlbumId({a:02x}{b:02x}{c:02x}{d:02x}…)")
    }
}

/// Which old AMK versions a joiner receives. Fixed per album, never chosen per add.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum HistoryPolicy {
    /// Every version from 1 to the current one (the default for shared albums).
    #[default]
    Full,
    /// Only the last `last` versions, current included; older photos show as placeholders.
    Capped {
        /// How many versions, at least 1 (the current one).
        last: NonZeroU32,
    },
}

impl HistoryPolicy {
    /// The first version a user joining when `current` is the album's current
    /// version is entitled to. It is fixed for that user from then on: the
    /// user's later devices receive the same range (see `HistoryBundle::for_user`).
    #[must_use]
    pub fn entitled_from(self, current: AmkVersion) -> AmkVersion {
        match self {
            Self::Full => AmkVersion::FIRST,
            Self::Capped { last } => {
                // current - last + 1, floored at 1.
                AmkVersion::new(current.get().saturating_sub(last.get().saturating_sub(1))).unwrap_or(AmkVersion::FIRST)
            }
        }
    }
}

/// The album's metadata, carried as an MLS group-context extension so every
/// member reads the same policy and admin set from the group itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlbumMetadata {
    format: u8,
    album: AlbumId,
    history_policy: HistoryPolicy,
    admins: BTreeSet<UserId>,
    metadata_version: u32,
}

/// An explicit album upgrade: the only way metadata changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlbumUpgrade {
    /// A new history policy, if it changes.
    pub history_policy: Option<HistoryPolicy>,
    /// A new admin set, if it changes.
    pub admins: Option<BTreeSet<UserId>>,
}

impl AlbumMetadata {
    /// Metadata of a new album (metadata version 1).
    ///
    /// # Errors
    /// [`AmkError::InvalidMetadata`] for an empty admin set.
    pub fn new(album: AlbumId, history_policy: HistoryPolicy, admins: BTreeSet<UserId>) -> Result<Self> {
        let m = Self { format: METADATA_FORMAT, album, history_policy, admins, metadata_version: 1 };
        m.validate()?;
        Ok(m)
    }

    fn validate(&self) -> Result<()> {
        if self.admins.is_empty() {
            return Err(AmkError::InvalidMetadata("an album needs at least one admin"));
        }
        if self.metadata_version == 0 {
            return Err(AmkError::InvalidMetadata("metadata version starts at 1"));
        }
        Ok(())
    }

    /// The album.
    #[must_use]
    pub const fn album(&self) -> AlbumId {
        self.album
    }

    /// The history policy every add applies.
    #[must_use]
    pub const fn history_policy(&self) -> HistoryPolicy {
        self.history_policy
    }

    /// The admins.
    #[must_use]
    pub const fn admins(&self) -> &BTreeSet<UserId> {
        &self.admins
    }

    /// Whether `user` is an admin.
    #[must_use]
    pub fn is_admin(&self, user: &UserId) -> bool {
        self.admins.contains(user)
    }

    /// Bumped by every upgrade.
    #[must_use]
    pub const fn metadata_version(&self) -> u32 {
        self.metadata_version
    }

    /// Whether `upgrade` would change nothing (it is already in effect).
    #[must_use]
    pub fn already_has(&self, upgrade: &AlbumUpgrade) -> bool {
        upgrade.history_policy.is_none_or(|p| p == self.history_policy)
            && upgrade.admins.as_ref().is_none_or(|a| *a == self.admins)
    }

    /// The metadata after an explicit upgrade: same album, version + 1.
    ///
    /// # Errors
    /// [`AmkError::InvalidMetadata`] for an upgrade that changes nothing, empties the
    /// admin set or overflows the version.
    pub fn upgraded(&self, upgrade: &AlbumUpgrade) -> Result<Self> {
        let next = Self {
            format: METADATA_FORMAT,
            album: self.album,
            history_policy: upgrade.history_policy.unwrap_or(self.history_policy),
            admins: upgrade.admins.clone().unwrap_or_else(|| self.admins.clone()),
            metadata_version: self
                .metadata_version
                .checked_add(1)
                .ok_or(AmkError::InvalidMetadata("metadata version exhausted"))?,
        };
        if next.history_policy == self.history_policy && next.admins == self.admins {
            return Err(AmkError::InvalidMetadata("an upgrade must change something"));
        }
        next.validate()?;
        Ok(next)
    }

    /// Whether `next` is a valid successor of `self` (what a receiver checks of an
    /// upgrade commit).
    ///
    /// # Errors
    /// [`AmkError::InvalidMetadata`] when `next` names another album or skips a version.
    pub fn check_upgrade(&self, next: &Self) -> Result<()> {
        if next.album != self.album {
            return Err(AmkError::InvalidMetadata("an upgrade cannot change the album"));
        }
        if Some(next.metadata_version) != self.metadata_version.checked_add(1) {
            return Err(AmkError::InvalidMetadata("an upgrade bumps the metadata version by one"));
        }
        next.validate()
    }

    /// Canonical encoding.
    ///
    /// # Errors
    /// Only on a serializer bug.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        Ok(encoding::encode(self)?)
    }

    /// Decodes a canonical encoding.
    ///
    /// # Errors
    /// [`AmkError::Decode`] for malformed, trailing, non-canonical (unsorted or
    /// duplicate admins) or unknown-format input; [`AmkError::InvalidMetadata`]
    /// for an empty admin set or version 0.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let m: Self = encoding::decode_canonical(bytes)?;
        if m.format != METADATA_FORMAT {
            return Err(DecodeError::UnknownVersion(m.format).into());
        }
        m.validate()?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An album id prints as a short alias: its first four bytes, like the other ids.
    #[test]
    fn album_id_debug_is_a_short_alias() {
        let id = AlbumId::from_bytes([0xc5, 0x01, 0x7a, 0x00, 0xff, 0xff, 0xff, 0xff, 9, 9, 9, 9, 9, 9, 9, 9]);
        assert_eq!(format!("{id:?}"), "AlbumId(c5017a00…)");
    }
}
