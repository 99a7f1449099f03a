//! Errors of the MLS wrapper: refusals of input, kept apart from bugs and storage failures.
//!
//! Every OpenMLS error is classified where it crosses into this crate (see
//! `boundary.rs`): OpenMLS's `LibraryError` becomes [`MlsError::Internal`], a
//! storage-provider failure [`MlsError::Storage`], and every validation failure
//! a typed refusal. [`MlsError::is_internal`] tells the two kinds apart.

use capsule_amk::AmkError;
use capsule_identity::IdentityError;

use crate::{Epoch, Member};

/// Why something was refused or failed. Every refusal leaves the album untouched.
///
/// All variants but [`MlsError::Storage`] and [`MlsError::Internal`] (and the
/// randomness and internal failures inside [`MlsError::Identity`] and
/// [`MlsError::Amk`]) are refusals: the input or the request does not fit the
/// album, and retrying the same thing gives the same answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MlsError {
    /// Bytes that are not a well-formed MLS message, KeyPackage, Welcome, tree or extension.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A leaf, KeyPackage or Welcome member whose identity binding does not verify.
    #[error("identity binding refused: {0}")]
    Identity(#[from] IdentityError),
    /// The trust store holds no identity key for this user yet. Not a verdict
    /// on the commit, KeyPackage or Welcome: nothing changed, and it is checked
    /// again once the trust store learns the user's key.
    #[error("no trusted identity key for user {user:?} yet")]
    UnknownIdentity {
        /// The user the certificate names (unverified: it is what failed).
        user: capsule_identity::UserId,
    },
    /// A credential that is not a Capsule device certificate.
    #[error("credential is not a Capsule device certificate")]
    ForeignCredential,
    /// A leaf whose MLS signature key is not the key its certificate certifies.
    #[error("leaf signature key is not the certified device key")]
    LeafKeyMismatch,
    /// An MLS signature or MAC that does not verify: a message's signature or
    /// membership tag, a leaf node's, KeyPackage's or GroupInfo's signature.
    /// The bytes were tampered with, forged, or made in another fork of the
    /// group. Deliberately opaque about which check failed.
    #[error("MLS signature or membership tag does not verify")]
    BadSignature,
    /// The sender is not allowed to make this change.
    #[error("not authorized: {0}")]
    Unauthorized(&'static str),
    /// A change, commit or Welcome whose content breaks Capsule's or MLS's rules.
    #[error("refused: {0}")]
    Refused(&'static str),
    /// A group joined as the next generation of an album this device holds
    /// that is no reboot of it by one of its admins, judged against the group
    /// held ([`crate::Album::verify_reboot_of`]); the group held may also be
    /// behind where the rebooter left it, so reconcile it and try again.
    #[error("not a reboot of the album held: {0}")]
    NotAReboot(&'static str),
    /// A commit that breaks one of Capsule's commit rules (the ones a server
    /// checks too: see [`crate::rules`]).
    #[error("commit refused: {0}")]
    Rule(crate::rules::Violation),
    /// A re-key ceremony step that does not fit the album's re-key state.
    #[error("re-key: {0}")]
    RekeyState(&'static str),
    /// The device is already in the album.
    #[error("device {:?} of user {:?} is already a member", .0.device, .0.user)]
    AlreadyMember(Member),
    /// This device's own certificate is not valid now (expired, or not yet
    /// valid): it commits nothing until the certificate is renewed.
    #[error("this device's certificate is not valid now: {0}")]
    OwnCertificate(IdentityError),
    /// The change is in effect already (an album upgrade to the metadata the
    /// album has): nothing to commit.
    #[error("already in effect: {0}")]
    AlreadyInEffect(&'static str),
    /// No such member, a message for another group, or a Welcome for another device.
    #[error("not a member: {0}")]
    NotMember(&'static str),
    /// Another change's commit is waiting for the server's answer.
    #[error("another change is pending; confirm or reject it first")]
    PendingCommit,
    /// `confirm`/`reject` without a pending commit.
    #[error("no pending commit")]
    NoPendingCommit,
    /// A commit from another epoch. `message_epoch > album_epoch` is the evidence
    /// that this device is behind.
    #[error("commit for epoch {message_epoch}, album is at epoch {album_epoch}")]
    WrongEpoch {
        /// The epoch the message was sent in.
        message_epoch: Epoch,
        /// This album's epoch.
        album_epoch: Epoch,
    },
    /// The same commit was already applied (or a message replayed).
    #[error("commit already applied")]
    AlreadyApplied,
    /// A commit this device made that is not its pending commit (the device lost
    /// the state that made it, e.g. a cleared pending commit): it cannot be
    /// applied here.
    #[error("own commit does not match the pending commit")]
    OwnCommitMismatch,
    /// This device was removed from the album.
    #[error("this device is no longer a member")]
    Evicted,
    /// AMK handling refused (or, for its `Rng`/`Internal` variants, failed).
    #[error("amk: {0}")]
    Amk(#[from] AmkError),
    /// The storage provider failed: not a property of the input. Retrying may help.
    #[error("storage failed while {during}: {detail}")]
    Storage {
        /// What the wrapper was doing.
        during: &'static str,
        /// The storage provider's own description.
        detail: String,
    },
    /// A bug in this crate or a dependency (OpenMLS's `LibraryError` among them).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl MlsError {
    /// Whether this is a fault (a bug, a storage or randomness failure) rather
    /// than a refusal of the input. A refusal is final for that input; a fault
    /// says nothing about it.
    #[must_use]
    pub const fn is_internal(&self) -> bool {
        match self {
            Self::Storage { .. } | Self::Internal(_) => true,
            Self::Identity(e) => matches!(e, IdentityError::Rng | IdentityError::Internal(_)),
            Self::Amk(e) => matches!(e, AmkError::Rng | AmkError::Internal(_)),
            Self::Malformed(_)
            | Self::ForeignCredential
            | Self::UnknownIdentity { .. }
            | Self::LeafKeyMismatch
            | Self::BadSignature
            | Self::Unauthorized(_)
            | Self::Refused(_)
            | Self::NotAReboot(_)
            | Self::Rule(_)
            | Self::RekeyState(_)
            | Self::AlreadyMember(..)
            | Self::NotMember(_)
            | Self::AlreadyInEffect(_)
            | Self::OwnCertificate(_)
            | Self::PendingCommit
            | Self::NoPendingCommit
            | Self::WrongEpoch { .. }
            | Self::AlreadyApplied
            | Self::OwnCommitMismatch
            | Self::Evicted => false,
        }
    }

    /// A storage-provider failure while `during`.
    pub(crate) fn storage(during: &'static str, error: impl core::fmt::Display) -> Self {
        tracing::warn!(during, %error, "storage provider failed");
        Self::Storage { during, detail: error.to_string() }
    }
}

/// Result alias of this crate.
pub type Result<T, E = MlsError> = core::result::Result<T, E>;
