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
    /// A photo that does not decrypt: wrong album, withheld or unknown version, or tampered.
    #[error("photo cannot be opened: {0}")]
    Photo(&'static str),
}

/// Result alias of the facade.
pub type Result<T, E = Error> = core::result::Result<T, E>;
