//! Errors of the identity layer: one enum, refusals kept apart from bugs.

/// Why bytes from outside could not be decoded.
///
/// Every decoder in this crate (and the crates that reuse [`crate::encoding`])
/// reports through this type and never panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes ended early or do not describe a value of the expected shape.
    #[error("malformed encoding")]
    Malformed,
    /// A complete value was followed by extra bytes.
    #[error("trailing bytes after a complete value")]
    TrailingBytes,
    /// The value decodes, but not from its one canonical encoding.
    #[error("non-canonical encoding")]
    NonCanonical,
    /// The encoding names a format version this build does not know.
    #[error("unknown format version {0}")]
    UnknownVersion(u8),
    /// A public key in the encoding is not a valid key.
    #[error("invalid public key")]
    InvalidKey,
}

/// Errors of the identity layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Bytes from outside were refused.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// The hybrid signature did not verify.
    ///
    /// Deliberately opaque: it does not say which half failed.
    #[error("certificate signature invalid")]
    BadSignature,
    /// The trust store holds no identity key for the certificate's user.
    #[error("no trusted identity key for this user")]
    UntrustedUser,
    /// The Ed25519 key the peer presented is not the key the certificate certifies.
    #[error("presented device key is not the certified key")]
    KeyMismatch,
    /// The certificate's validity window starts after the given time.
    #[error("certificate not yet valid")]
    NotYetValid,
    /// The certificate's validity window ended before the given time.
    #[error("certificate expired")]
    Expired,
    /// A validity window that ends before it starts.
    #[error("validity window is empty")]
    InvalidValidity,
    /// The random number generator failed.
    #[error("random number generator failed")]
    Rng,
    /// A bug in this crate or a dependency, not a property of the input.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// Result alias of this crate.
pub type Result<T, E = IdentityError> = core::result::Result<T, E>;
