//! Errors of the MLS wrapper: refusals of input, kept apart from bugs and storage failures.

use capsule_amk::AmkError;
use capsule_identity::{DeviceId, IdentityError, UserId};

/// Why something was refused or failed. Every refusal leaves the album untouched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MlsError {
    /// Bytes that are not a well-formed MLS message, KeyPackage or extension.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A leaf, KeyPackage or Welcome member whose identity binding does not verify.
    #[error("identity binding refused: {0}")]
    Identity(#[from] IdentityError),
    /// A credential that is not a Capsule device certificate.
    #[error("credential is not a Capsule device certificate")]
    ForeignCredential,
    /// A leaf whose MLS signature key is not the key its certificate certifies.
    #[error("leaf signature key is not the certified device key")]
    LeafKeyMismatch,
    /// The sender is not allowed to make this change.
    #[error("not authorized: {0}")]
    Unauthorized(&'static str),
    /// A commit or Welcome whose content breaks Capsule's rules.
    #[error("refused: {0}")]
    Refused(&'static str),
    /// A re-key ceremony step that does not fit the album's re-key state.
    #[error("re-key: {0}")]
    RekeyState(&'static str),
    /// The device is already in the album.
    #[error("device {0:?} of user {1:?} is already a member")]
    AlreadyMember(DeviceId, UserId),
    /// No such member.
    #[error("not a member: {0}")]
    NotMember(&'static str),
    /// Another ceremony's commit is waiting for the server's answer.
    #[error("another ceremony is pending; confirm or reject it first")]
    PendingCommit,
    /// `confirm`/`reject` without a pending commit.
    #[error("no pending commit")]
    NoPendingCommit,
    /// A commit from another epoch. `from_future` is the evidence that this device is behind.
    #[error("commit for epoch {message_epoch}, album is at epoch {album_epoch}")]
    WrongEpoch {
        /// The epoch the message was sent in.
        message_epoch: u64,
        /// This album's epoch.
        album_epoch: u64,
    },
    /// The same commit was already applied.
    #[error("commit already applied")]
    AlreadyApplied,
    /// This device was removed from the album.
    #[error("this device is no longer a member")]
    Evicted,
    /// AMK handling refused.
    #[error("amk: {0}")]
    Amk(#[from] AmkError),
    /// OpenMLS refused the operation or message.
    #[error("openmls: {0}")]
    Protocol(String),
    /// The storage provider failed.
    #[error("storage: {0}")]
    Storage(String),
    /// A bug in this crate or a dependency.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl MlsError {
    pub(crate) fn protocol(e: impl core::fmt::Display) -> Self {
        Self::Protocol(e.to_string())
    }
}

/// Result alias of this crate.
pub type Result<T, E = MlsError> = core::result::Result<T, E>;
