//! Canonical postcard encoding shared by every Capsule type that crosses a boundary.
//!
//! postcard alone accepts trailing bytes (with `from_bytes`) and over-long
//! varints; a signed or hashed encoding must have exactly one byte form, so
//! decoding here re-encodes the value and refuses anything that differs.

use serde::{Serialize, de::DeserializeOwned};
use zeroize::Zeroizing;

use crate::DecodeError;

/// Encodes `value` in its canonical form.
///
/// # Errors
/// [`DecodeError::Malformed`] if the value cannot be serialized (a bug in its
/// `Serialize` impl; our types always serialize).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, DecodeError> {
    postcard::to_allocvec(value).map_err(|_| DecodeError::Malformed)
}

/// Encodes `value`, which holds secrets, in its canonical form: sized first,
/// then written into one zeroized-on-drop buffer, so no reallocation leaves a
/// copy of a key behind on the heap.
///
/// # Errors
/// As [`encode`].
pub fn encode_secret<T: Serialize>(value: &T) -> Result<Zeroizing<Vec<u8>>, DecodeError> {
    let size = postcard::serialize_with_flavor::<T, _, usize>(value, postcard::ser_flavors::Size::default())
        .map_err(|_| DecodeError::Malformed)?;
    let mut out = Zeroizing::new(vec![0u8; size]);
    let written = postcard::to_slice(value, out.as_mut_slice()).map_err(|_| DecodeError::Malformed)?.len();
    if written != size {
        return Err(DecodeError::Malformed);
    }
    Ok(out)
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
    // Re-encoded straight against the input: no buffer, so no copy of a
    // secret the record may hold, and one pass.
    let canonical = postcard::serialize_with_flavor::<T, _, bool>(&value, SameAs { expected: bytes, at: 0 });
    if canonical != Ok(true) {
        return Err(DecodeError::NonCanonical);
    }
    Ok(value)
}

/// A postcard output that writes nothing: it compares each byte with
/// `expected` and stops at the first difference.
struct SameAs<'a> {
    expected: &'a [u8],
    at: usize,
}

impl postcard::ser_flavors::Flavor for SameAs<'_> {
    type Output = bool;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        let end = self.at.checked_add(data.len()).ok_or(postcard::Error::SerializeBufferFull)?;
        if self.expected.get(self.at..end) != Some(data) {
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.at = end;
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.try_extend(&[data])
    }

    fn finalize(self) -> postcard::Result<bool> {
        Ok(self.at == self.expected.len())
    }
}
