//! Canonical postcard encoding shared by every Capsule type that crosses a boundary.
//!
//! postcard alone accepts trailing bytes (with `from_bytes`) and over-long
//! varints; a signed or hashed encoding must have exactly one byte form, so
//! decoding here re-encodes the value and refuses anything that differs.

use serde::{Serialize, de::DeserializeOwned};

use crate::DecodeError;

/// Encodes `value` in its canonical form.
///
/// # Errors
/// [`DecodeError::Malformed`] if the value cannot be serialized (a bug in its
/// `Serialize` impl; our types always serialize).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, DecodeError> {
    postcard::to_allocvec(value).map_err(|_| DecodeError::Malformed)
}

/// Decodes exactly one canonical `T` from `bytes`.
///
/// # Errors
/// [`DecodeError::Malformed`] for bytes of the wrong shape,
/// [`DecodeError::TrailingBytes`] for anything after the value and
/// [`DecodeError::NonCanonical`] when `bytes` is not what encoding the decoded
/// value gives back.
pub fn decode_canonical<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|_| DecodeError::Malformed)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes);
    }
    if encode(&value)? != bytes {
        return Err(DecodeError::NonCanonical);
    }
    Ok(value)
}
