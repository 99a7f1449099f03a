//! History bundles: the AMK versions a joiner is entitled to, sealed for the joining epoch.

use core::fmt;

use capsule_identity::{DecodeError, encoding};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::TryCryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{
    AlbumId, AlbumMetadata, Amk, AmkError, AmkKeyring, AmkVersion, BundleKey, HistoryPolicy, Result, WriteKey,
};

/// Format version of both the sealed and the opened form.
const BUNDLE_FORMAT: u8 = 1;
/// Associated-data prefix: a bundle is bound to its album and format.
const AAD_LABEL: &[u8] = b"capsule/amk/v1/history-bundle";

/// What a joiner receives: the versions the album's policy grants, the current
/// write-tier key, and the ceiling the bundle attests.
#[derive(PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryBundle {
    format: u8,
    album: AlbumId,
    policy: HistoryPolicy,
    ceiling: AmkVersion,
    #[serde(with = "crate::keys::serde_versioned_keys")]
    entries: Vec<(AmkVersion, Amk)>,
    #[serde(with = "crate::keys::serde_key")]
    write_key: WriteKey,
}

impl HistoryBundle {
    /// The bundle `keyring` grants a device of a user joining now, under
    /// `metadata`'s policy: [`HistoryPolicy::entitled_from`] the current version.
    ///
    /// Two devices with the same current version produce the same range: the
    /// range comes from the album's policy, never from the caller.
    ///
    /// # Errors
    /// As [`HistoryBundle::for_user`].
    pub fn for_joiner(keyring: &AmkKeyring, metadata: &AlbumMetadata) -> Result<Self> {
        let (current, _) = keyring.current();
        Self::for_user(keyring, metadata, metadata.history_policy().entitled_from(current))
    }

    /// The bundle for a device of a user whose entitlement starts at `first`:
    /// fixed when that user joined the album (under the policy of that time), so
    /// every device of the user, added by whomever in whatever order, receives
    /// the same range as the user's other devices.
    ///
    /// # Errors
    /// [`AmkError::InvalidMetadata`] if `metadata` is another album's;
    /// [`AmkError::NotHeld`] if `first` is above the current version or is a
    /// version this device was itself withheld (a member who holds it must add).
    pub fn for_user(keyring: &AmkKeyring, metadata: &AlbumMetadata, first: AmkVersion) -> Result<Self> {
        if keyring.album() != metadata.album() {
            return Err(AmkError::InvalidMetadata("metadata of another album"));
        }
        let (current, _) = keyring.current();
        let entries =
            keyring.held().skip_while(|(v, _)| *v < first).map(|(v, amk)| (v, amk.copy())).collect::<Vec<_>>();
        if entries.first().map(|(v, _)| *v) != Some(first) {
            return Err(AmkError::NotHeld(first));
        }
        Ok(Self {
            format: BUNDLE_FORMAT,
            album: keyring.album(),
            policy: metadata.history_policy(),
            ceiling: current,
            entries,
            write_key: keyring.write_key().1.copy(),
        })
    }

    /// The versions the bundle carries, oldest first.
    pub fn versions(&self) -> impl Iterator<Item = AmkVersion> + '_ {
        self.entries.iter().map(|(v, _)| *v)
    }

    /// The ceiling the bundle attests.
    #[must_use]
    pub const fn ceiling(&self) -> AmkVersion {
        self.ceiling
    }

    /// Checks the bundle against the album's metadata: same album and policy,
    /// versions strictly consecutive, nothing above the ceiling, ending at the
    /// ceiling and starting exactly at `first` (the joining user's entitlement;
    /// `None`: a user joining now, so where the policy says).
    fn check(&self, expected: &AlbumMetadata, first: Option<AmkVersion>) -> Result<()> {
        let refuse = |why| Err(AmkError::BundleRefused(why));
        if self.album != expected.album() {
            return refuse("bundle of another album");
        }
        if self.policy != expected.history_policy() {
            return refuse("history policy differs from the album's");
        }
        let Some((first_held, _)) = self.entries.first() else {
            return refuse("no versions");
        };
        let mut previous: Option<AmkVersion> = None;
        for (v, _) in &self.entries {
            if *v > self.ceiling {
                return refuse("version above the ceiling");
            }
            match previous {
                Some(p) if *v == p => return refuse("duplicate version"),
                Some(p) if Some(*v) != p.next().ok() => return refuse("versions not consecutive"),
                _ => {}
            }
            previous = Some(*v);
        }
        if previous != Some(self.ceiling) {
            return refuse("bundle lacks the current version");
        }
        let expected_first = first.unwrap_or_else(|| self.policy.entitled_from(self.ceiling));
        if *first_held != expected_first {
            return refuse("version range disagrees with the joiner's entitlement");
        }
        Ok(())
    }

    /// Seals the bundle under `key` with a fresh random nonce from `rng`.
    ///
    /// # Errors
    /// [`AmkError::Rng`] if `rng` fails.
    pub fn seal<R: TryCryptoRng + ?Sized>(&self, key: &BundleKey, rng: &mut R) -> Result<SealedBundle> {
        let mut nonce = [0u8; 24];
        rng.try_fill_bytes(&mut nonce).map_err(|_| AmkError::Rng)?;
        let plaintext = encoding::encode_secret(self)?;
        let cipher = XChaCha20Poly1305::new(key.expose_secret().into());
        let ciphertext = cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: &plaintext, aad: &aad(&self.album) })
            .map_err(|_| AmkError::Internal("aead encrypt"))?;
        Ok(SealedBundle { format: BUNDLE_FORMAT, nonce, ciphertext })
    }

    /// Canonical encoding of the opened form (holds secrets).
    ///
    /// # Errors
    /// Only on a serializer bug.
    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>> {
        Ok(encoding::encode_secret(self)?)
    }

    /// Decodes the opened form; [`SealedBundle::open`] calls it after decryption.
    ///
    /// # Errors
    /// [`AmkError::Decode`] for malformed, non-canonical or unknown-format input.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bundle: Self = encoding::decode_canonical(bytes)?;
        if bundle.format != BUNDLE_FORMAT {
            return Err(DecodeError::UnknownVersion(bundle.format).into());
        }
        Ok(bundle)
    }
}

impl fmt::Debug for HistoryBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HistoryBundle")
            .field("album", &self.album)
            .field("policy", &self.policy)
            .field("ceiling", &self.ceiling)
            .field("versions", &self.entries.len())
            .finish_non_exhaustive()
    }
}

fn aad(album: &AlbumId) -> Vec<u8> {
    [AAD_LABEL, album.as_bytes(), &[BUNDLE_FORMAT]].concat()
}

/// A history bundle as it travels beside a Welcome: XChaCha20-Poly1305 under a
/// key only members of the joining epoch can derive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedBundle {
    format: u8,
    nonce: [u8; 24],
    ciphertext: Vec<u8>,
}

impl SealedBundle {
    /// Opens the bundle of a device of a user joining now, and builds its
    /// keyring, adopting the bundle's ceiling. The range must be exactly what
    /// the album's policy grants at the bundle's current version.
    ///
    /// # Errors
    /// As [`SealedBundle::open_for_user`].
    pub fn open(&self, key: &BundleKey, expected: &AlbumMetadata) -> Result<AmkKeyring> {
        self.open_checked(key, expected, None)
    }

    /// Opens the bundle of a device of a user entitled from `first` (read from
    /// the group the device joins), and builds its keyring.
    ///
    /// # Errors
    /// [`AmkError::BundleUnreadable`] if it does not decrypt under `key` for this
    /// album; [`AmkError::BundleRefused`] if its contents disagree with `expected`
    /// or `first` (policy, range, duplicates, ceiling); [`AmkError::Decode`] for
    /// malformed contents.
    pub fn open_for_user(&self, key: &BundleKey, expected: &AlbumMetadata, first: AmkVersion) -> Result<AmkKeyring> {
        self.open_checked(key, expected, Some(first))
    }

    fn open_checked(&self, key: &BundleKey, expected: &AlbumMetadata, first: Option<AmkVersion>) -> Result<AmkKeyring> {
        let cipher = XChaCha20Poly1305::new(key.expose_secret().into());
        let plaintext = Zeroizing::new(
            cipher
                .decrypt(&XNonce::from(self.nonce), Payload { msg: &self.ciphertext, aad: &aad(&expected.album()) })
                .map_err(|_| AmkError::BundleUnreadable)?,
        );
        let bundle = HistoryBundle::from_bytes(&plaintext)?;
        bundle.check(expected, first)?;
        let first = bundle.entries.first().map(|(v, _)| *v).ok_or(AmkError::BundleRefused("no versions"))?;
        let HistoryBundle { album, ceiling, entries, write_key, .. } = bundle;
        AmkKeyring::from_parts(album, first, entries.into_iter().map(|(_, amk)| amk).collect(), write_key, ceiling)
    }

    /// Size of the canonical encoding.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        encoding::encode(self).map_or(0, |b| b.len())
    }

    /// Canonical encoding.
    ///
    /// # Errors
    /// Only on a serializer bug.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        Ok(encoding::encode(self)?)
    }

    /// Decodes a canonical encoding (the ciphertext is checked by [`SealedBundle::open`]).
    ///
    /// # Errors
    /// [`AmkError::Decode`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let sealed: Self = encoding::decode_canonical(bytes)?;
        if sealed.format != BUNDLE_FORMAT {
            return Err(DecodeError::UnknownVersion(sealed.format).into());
        }
        Ok(sealed)
    }
}

/// Convenience: the bundle a joiner gets from `keyring`, sealed under `key`.
///
/// # Errors
/// As [`HistoryBundle::for_joiner`] and [`HistoryBundle::seal`].
pub fn seal_for_joiner<R: TryCryptoRng + ?Sized>(
    keyring: &AmkKeyring,
    metadata: &AlbumMetadata,
    key: &BundleKey,
    rng: &mut R,
) -> Result<SealedBundle> {
    HistoryBundle::for_joiner(keyring, metadata)?.seal(key, rng)
}
