//! Errors of the AMK layer.

use capsule_identity::DecodeError;

use crate::AmkVersion;

/// Errors of the AMK layer. Every refusal leaves the keyring untouched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AmkError {
    /// Bytes from outside were refused.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// A version that is not the next one (versions advance by exactly one).
    #[error("AMK version {got} out of order: expected {expected}")]
    OutOfOrder {
        /// The version that would have been next.
        expected: AmkVersion,
        /// The version offered.
        got: AmkVersion,
    },
    /// A different key for a version already held: a version never changes its key.
    #[error("AMK version {0} already holds a different key")]
    KeyConflict(AmkVersion),
    /// A manifest or bundle claims a version above the attested ceiling.
    #[error("AMK version {claimed} is above the attested ceiling {ceiling}")]
    AboveCeiling {
        /// What was claimed.
        claimed: AmkVersion,
        /// The highest version the admin-attested chain has shown.
        ceiling: AmkVersion,
    },
    /// This keyring does not hold the key asked for.
    #[error("AMK version {0} is not held")]
    NotHeld(AmkVersion),
    /// An older version the album's history policy withheld from this device:
    /// its photos show as placeholders.
    #[error("AMK version {0} was withheld by the album's history policy")]
    Withheld(AmkVersion),
    /// A sealed photo did not open: wrong key, wrong album, chunks reordered,
    /// dropped, duplicated or truncated, or a byte changed. Deliberately opaque.
    #[error("photo does not open")]
    PhotoUnreadable,
    /// A photo longer than the chunk counter can number (about 256 TiB).
    #[error("photo too large")]
    PhotoTooLarge,
    /// The sealed bundle did not decrypt: wrong key, wrong album, or tampered.
    #[error("history bundle does not open")]
    BundleUnreadable,
    /// The bundle decrypted but disagrees with the album's rules.
    #[error("history bundle refused: {0}")]
    BundleRefused(&'static str),
    /// An escrowed AMK lineage that cannot extend this keyring: another
    /// album's, or sharing no version with it to check it against.
    #[error("AMK lineage refused: {0}")]
    LineageRefused(&'static str),
    /// Album metadata that breaks its own rules, or an invalid upgrade.
    #[error("album metadata refused: {0}")]
    InvalidMetadata(&'static str),
    /// Version counter exhausted.
    #[error("AMK version counter exhausted")]
    VersionOverflow,
    /// The random number generator failed.
    #[error("random number generator failed")]
    Rng,
    /// A bug in this crate or a dependency, not a property of the input.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// Result alias of this crate.
pub type Result<T, E = AmkError> = core::result::Result<T, E>;
