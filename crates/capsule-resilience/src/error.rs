//! Errors of the resilience layer.

use capsule_mls::{Epoch, MlsError, RekeyId};

use crate::ChainError;

/// Errors of the resilience layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResilienceError {
    /// The MLS layer refused or failed.
    #[error("mls: {0}")]
    Mls(#[from] MlsError),
    /// The chain did not answer.
    #[error("chain: {0}")]
    Chain(#[from] ChainError),
    /// The album is quarantined after a divergence: no sends, no merges until the
    /// user acts.
    #[error("album quarantined: local epoch {local_epoch}, server epoch {server_epoch}")]
    Quarantined {
        /// This device's epoch.
        local_epoch: Epoch,
        /// The chain's head.
        server_epoch: Epoch,
    },
    /// A re-bootstrap was asked of an album that can still catch up with the
    /// chain (not quarantined, not removed, chain not pruned): nothing changed.
    #[error("the album is not stuck: reconcile instead of re-bootstrapping")]
    NotStuck,
    /// The album needs a re-bootstrap (this device was removed, or the chain
    /// was pruned past it): nothing else can be done on it. Nothing changed.
    #[error("the album needs a re-bootstrap")]
    NeedsRebootstrap,
    /// Recovery of a stalled re-key was asked while none has stalled:
    /// nothing changed.
    #[error("no re-key has stalled")]
    NotStalled,
    /// A commit in the chain names a user whose identity key the trust store
    /// does not hold yet: not a verdict on the commit. Nothing changed; once
    /// the trust store learns the key, reconcile again.
    #[error("the commit of epoch {epoch:?} cannot be verified yet: no identity key for {user:?}")]
    CannotVerifyYet {
        /// The commit's epoch.
        epoch: capsule_mls::Epoch,
        /// The user whose key is missing.
        user: capsule_identity::UserId,
    },
    /// No such intent.
    #[error("unknown intent")]
    UnknownIntent,
    /// The change's commit exists and may be in the chain: it cannot be
    /// cancelled; the chain settles it.
    #[error("the change is in flight; the chain settles it")]
    InFlight,
    /// Another re-key runs on this device.
    #[error("re-key {0} is in progress")]
    RekeyInProgress(RekeyId),
    /// The AMK lineage could not be deposited.
    #[error("escrow refused: {0}")]
    Escrow(String),
    /// A stored record that does not decode.
    #[error("record malformed: {0}")]
    Record(&'static str),
}

/// Result alias of this crate.
pub type Result<T, E = ResilienceError> = core::result::Result<T, E>;
