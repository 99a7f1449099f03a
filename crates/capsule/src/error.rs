//! One error type at the facade, keeping each layer's typed cause.

/// An error from any layer; match on the variant to reach the layer's own type.
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
    /// Recovery against the chain.
    #[error(transparent)]
    Resilience(#[from] capsule_resilience::ResilienceError),
    /// The durable store.
    #[error(transparent)]
    Store(#[from] capsule_store::StoreError),
    /// A photo that cannot be sealed now (album quiesced, quarantined, left) or
    /// opened (withheld or unknown version, wrong album, tampered).
    #[error("photo refused: {0}")]
    Photo(&'static str),
}

/// Result alias of the facade.
pub type Result<T, E = Error> = core::result::Result<T, E>;
