//! One error type at the facade, keeping each layer's typed cause.

use capsule_resilience::{ChainError, ResilienceError};
use capsule_store::StoreError;

/// An error from any layer; match on the variant to reach the layer's own type.
///
/// Each cause has one path: an MLS refusal is always [`Error::Mls`], a chain
/// that did not answer always [`Error::Chain`], however deep in the store or
/// the resilience layer it arose.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Identity keys or certificates.
    #[error(transparent)]
    Identity(#[from] capsule_identity::IdentityError),
    /// AMK handling.
    #[error(transparent)]
    Amk(#[from] capsule_amk::AmkError),
    /// The MLS wrapper.
    #[error(transparent)]
    Mls(#[from] capsule_mls::MlsError),
    /// The server's chain did not answer (or refused the album).
    #[error(transparent)]
    Chain(ChainError),
    /// Recovery against the chain (quarantine, re-key state, escrow).
    #[error(transparent)]
    Resilience(ResilienceError),
    /// The durable store (refused files, a busy database, SQLite).
    #[error(transparent)]
    Store(StoreError),
    /// A photo that cannot be sealed now (album quiesced, quarantined, left) or
    /// opened (withheld or unknown version, wrong album, tampered).
    #[error("photo refused: {0}")]
    Photo(&'static str),
}

impl From<ResilienceError> for Error {
    fn from(e: ResilienceError) -> Self {
        match e {
            ResilienceError::Mls(e) => Self::Mls(e),
            ResilienceError::Chain(e) => Self::Chain(e),
            other => Self::Resilience(other),
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Mls(e) => Self::Mls(e),
            StoreError::Resilience(e) => e.into(),
            other => Self::Store(other),
        }
    }
}

impl From<ChainError> for Error {
    fn from(e: ChainError) -> Self {
        Self::Chain(e)
    }
}

/// Result alias of the facade.
pub type Result<T, E = Error> = core::result::Result<T, E>;
