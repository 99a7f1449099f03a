//! The AMK versions one device holds, and the epoch ceiling.

use core::fmt;

use capsule_identity::{DecodeError, encoding};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{AlbumId, Amk, AmkError, AmkVersion, EpochSecret, Result, WriteKey};

/// Format version of the keyring's stored record.
const KEYRING_FORMAT: u8 = 1;

/// What a device knows of one AMK version.
#[derive(Debug, PartialEq, Eq)]
pub enum AmkSlot<'a> {
    /// The key is held.
    Held(&'a Amk),
    /// An older version the album's history policy withheld from this device:
    /// its photos show as placeholders.
    Withheld,
    /// Newer than anything this device holds (it was removed, or is behind).
    NotHeld,
}

/// Which AMK versions a keyring holds: numbers only, never a key, so it can be
/// handed to an application, shown and compared freely.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HeldVersions {
    /// The oldest version held; older ones were withheld by the history policy.
    pub first_held: AmkVersion,
    /// The newest version held: the one uploads are encrypted under.
    pub current: AmkVersion,
    /// The highest version the admin-attested chain has shown.
    pub ceiling: AmkVersion,
}

impl HeldVersions {
    /// How many versions are held (`first_held ..= current`).
    #[must_use]
    pub const fn count(&self) -> u32 {
        self.current.get().saturating_sub(self.first_held.get()).saturating_add(1)
    }
}

/// The AMK versions a device holds for one album.
///
/// Invariants, kept by every constructor and mutator:
/// - held versions are contiguous, `first_held ..= current`; everything below
///   `first_held` was withheld by the history policy;
/// - a held version never changes its key;
/// - only the current version's write-tier key is kept, so there is never a
///   second live write key;
/// - the ceiling is at least the current version and never falls.
///
/// Not `Clone`: a copy of every key is made only on purpose
/// ([`AmkKeyring::duplicate`]).
#[derive(PartialEq, Eq, Serialize, Deserialize)]
pub struct AmkKeyring {
    format: u8,
    album: AlbumId,
    first_held: AmkVersion,
    /// `older[i]` is version `first_held + i`; the last of them is `current - 1`.
    #[serde(with = "crate::keys::serde_keys")]
    older: Vec<Amk>,
    current_version: AmkVersion,
    #[serde(with = "crate::keys::serde_key")]
    current: Amk,
    #[serde(with = "crate::keys::serde_key")]
    write_key: WriteKey,
    ceiling: AmkVersion,
}

impl AmkKeyring {
    /// The keyring of a new album: version 1, derived from the creating epoch's secret.
    ///
    /// # Errors
    /// Only [`AmkError::Internal`].
    pub fn create(album: AlbumId, secret: &EpochSecret) -> Result<Self> {
        let (amk, write_key) = secret.version_keys(&album, AmkVersion::FIRST)?;
        Ok(Self {
            format: KEYRING_FORMAT,
            album,
            first_held: AmkVersion::FIRST,
            older: Vec::new(),
            current_version: AmkVersion::FIRST,
            current: amk,
            write_key,
            ceiling: AmkVersion::FIRST,
        })
    }

    /// Builds a joiner's keyring from validated bundle contents.
    /// `keys` must be non-empty: versions `first_held ..`, the last one current.
    pub(crate) fn from_parts(
        album: AlbumId,
        first_held: AmkVersion,
        mut keys: Vec<Amk>,
        write_key: WriteKey,
        ceiling: AmkVersion,
    ) -> Result<Self> {
        let current = keys.pop().ok_or(DecodeError::Malformed)?;
        let current_version = u32::try_from(keys.len())
            .ok()
            .and_then(|n| first_held.get().checked_add(n))
            .and_then(AmkVersion::new)
            .ok_or(DecodeError::Malformed)?;
        let ring = Self {
            format: KEYRING_FORMAT,
            album,
            first_held,
            older: keys,
            current_version,
            current,
            write_key,
            ceiling,
        };
        ring.validate()?;
        Ok(ring)
    }

    /// A copy of every key this keyring holds: for work that must happen
    /// outside a store transaction (merging with an escrowed lineage before a
    /// network deposit). Everything else borrows.
    #[must_use]
    pub fn duplicate(&self) -> Self {
        Self {
            format: self.format,
            album: self.album,
            first_held: self.first_held,
            older: self.older.iter().map(Amk::copy).collect(),
            current_version: self.current_version,
            current: self.current.copy(),
            write_key: self.write_key.copy(),
            ceiling: self.ceiling,
        }
    }

    /// The invariants a decoded record must meet (constructors meet them by design).
    fn validate(&self) -> Result<()> {
        let expected_current = u32::try_from(self.older.len()).ok().and_then(|n| self.first_held.get().checked_add(n));
        let ok = self.first_held.is_valid()
            && expected_current == Some(self.current_version.get())
            && self.ceiling >= self.current_version;
        if ok { Ok(()) } else { Err(DecodeError::Malformed.into()) }
    }

    /// The album.
    #[must_use]
    pub const fn album(&self) -> AlbumId {
        self.album
    }

    /// The newest version held: the one uploads are encrypted under.
    #[must_use]
    pub const fn current_version(&self) -> AmkVersion {
        self.current_version
    }

    /// Which versions are held, without their keys.
    #[must_use]
    pub const fn versions(&self) -> HeldVersions {
        HeldVersions { first_held: self.first_held, current: self.current_version, ceiling: self.ceiling }
    }

    /// The current AMK.
    #[must_use]
    pub const fn current(&self) -> (AmkVersion, &Amk) {
        (self.current_version, &self.current)
    }

    /// The current version's write-tier key.
    #[must_use]
    pub fn write_key(&self) -> (AmkVersion, &WriteKey) {
        (self.current_version, &self.write_key)
    }

    /// The oldest version held; older ones were withheld.
    #[must_use]
    pub const fn first_held(&self) -> AmkVersion {
        self.first_held
    }

    /// The highest version the admin-attested chain has shown.
    #[must_use]
    pub const fn ceiling(&self) -> AmkVersion {
        self.ceiling
    }

    /// What this device knows of `version`.
    #[must_use]
    pub fn lookup(&self, version: AmkVersion) -> AmkSlot<'_> {
        if version < self.first_held {
            return AmkSlot::Withheld;
        }
        if version == self.current_version {
            return AmkSlot::Held(&self.current);
        }
        let index = usize::try_from(version.get().saturating_sub(self.first_held.get())).ok();
        match index.and_then(|i| self.older.get(i)) {
            Some(amk) if version < self.current_version => AmkSlot::Held(amk),
            _ => AmkSlot::NotHeld,
        }
    }

    /// The key of `version`, if held.
    #[must_use]
    pub fn get(&self, version: AmkVersion) -> Option<&Amk> {
        match self.lookup(version) {
            AmkSlot::Held(amk) => Some(amk),
            AmkSlot::Withheld | AmkSlot::NotHeld => None,
        }
    }

    /// Refuses a manifest (an upload's claimed AMK version, say) above the ceiling.
    ///
    /// This is what lets a new client enforce monotonic versions without trusting
    /// the server's counter.
    ///
    /// # Errors
    /// [`AmkError::AboveCeiling`].
    pub fn check_manifest(&self, claimed: AmkVersion) -> Result<()> {
        if claimed > self.ceiling {
            return Err(AmkError::AboveCeiling { claimed, ceiling: self.ceiling });
        }
        Ok(())
    }

    /// Records a version the admin-attested chain has shown; the ceiling only rises.
    pub fn attest_ceiling(&mut self, version: AmkVersion) {
        self.ceiling = self.ceiling.max(version);
    }

    /// Applies a rotation committed in the epoch whose secret is `secret`.
    ///
    /// Replaying the rotation of a held version is a no-op when it derives the same
    /// key; anything else leaves the keyring untouched.
    ///
    /// # Errors
    /// [`AmkError::OutOfOrder`] unless `version` is held or the next one;
    /// [`AmkError::KeyConflict`] when a replay derives a different key.
    pub fn rotate(&mut self, version: AmkVersion, secret: &EpochSecret) -> Result<()> {
        let current = self.current_version();
        let (amk, write_key) = secret.version_keys(&self.album, version)?;
        if version <= current && version >= self.first_held {
            return match self.get(version) {
                Some(held) if *held == amk => Ok(()),
                _ => Err(AmkError::KeyConflict(version)),
            };
        }
        let expected = current.next()?;
        if version != expected {
            return Err(AmkError::OutOfOrder { expected, got: version });
        }
        let previous = core::mem::replace(&mut self.current, amk);
        self.older.push(previous);
        self.current_version = version;
        // The old write key is dropped (and zeroized) here: one live write key.
        self.write_key = write_key;
        self.attest_ceiling(version);
        Ok(())
    }

    /// Takes back older versions from `lineage`, an escrowed copy of this
    /// album's keyring (the owners' recovery path when a re-key stalls): every
    /// version below [`AmkKeyring::first_held`] that `lineage` holds is added,
    /// so the recovering device can again give every user its whole
    /// entitlement. Returns how many versions were added.
    ///
    /// The lineage must share at least one version with this keyring, with the
    /// same key, so a lineage of another history is never spliced in.
    ///
    /// # Errors
    /// [`AmkError::LineageRefused`] for another album's lineage or one sharing
    /// no version with this keyring; [`AmkError::KeyConflict`] when a version
    /// both hold has different keys. The keyring is unchanged on every error.
    pub fn recover_history(&mut self, lineage: &Self) -> Result<usize> {
        if lineage.album != self.album {
            return Err(AmkError::LineageRefused("lineage of another album"));
        }
        let shared: Vec<_> = lineage.held().filter(|(v, _)| self.get(*v).is_some()).collect();
        if shared.is_empty() {
            return Err(AmkError::LineageRefused("lineage shares no version with this keyring"));
        }
        if let Some((v, _)) = shared.iter().find(|(v, amk)| self.get(*v) != Some(*amk)) {
            return Err(AmkError::KeyConflict(*v));
        }
        // Held versions are contiguous on both sides and they overlap, so the
        // lineage's versions below ours join ours without a gap.
        let below: Vec<Amk> =
            lineage.held().take_while(|(v, _)| *v < self.first_held).map(|(_, amk)| amk.copy()).collect();
        let added = below.len();
        if added > 0 {
            self.first_held = lineage.first_held;
            self.older.splice(0..0, below);
        }
        Ok(added)
    }

    /// The stored record (holds secrets: store it encrypted at rest).
    ///
    /// # Errors
    /// Only on a serializer bug.
    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>> {
        Ok(encoding::encode_secret(self)?)
    }

    /// Decodes a stored record and checks the invariants.
    ///
    /// # Errors
    /// [`AmkError::Decode`] for malformed, non-canonical or unknown-format input,
    /// or a record that breaks the keyring's invariants.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let ring: Self = encoding::decode_canonical(bytes)?;
        if ring.format != KEYRING_FORMAT {
            return Err(DecodeError::UnknownVersion(ring.format).into());
        }
        ring.validate()?;
        Ok(ring)
    }

    /// Iterates the held versions, oldest first.
    pub fn held(&self) -> impl Iterator<Item = (AmkVersion, &Amk)> {
        (self.first_held.get()..)
            .filter_map(AmkVersion::new)
            .zip(self.older.iter().chain(core::iter::once(&self.current)))
    }
}

impl fmt::Debug for AmkKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmkKeyring")
            .field("album", &self.album)
            .field("first_held", &self.first_held)
            .field("current", &self.current_version())
            .field("ceiling", &self.ceiling)
            .finish_non_exhaustive()
    }
}
