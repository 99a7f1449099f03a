//! Plaintext bytes that are zeroized when dropped.

use core::fmt;
use core::ops::Deref;

use zeroize::Zeroize as _;

/// Secret bytes (an opened photo), zeroized in bulk when dropped: its bytes
/// and the spare capacity beside them. `zeroize::Zeroizing<Vec<u8>>` zeroizes
/// a `Vec` one volatile byte write at a time, which took a third of the time
/// of opening a 1 MiB photo; a slice of bytes is zeroized as one fill behind
/// an optimization barrier.
///
/// Read-only from outside the crate, so nothing can reallocate the buffer and
/// leave a copy behind; [`SecretBytes::into_vec`] hands the bytes over.
#[derive(Default, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// An empty buffer that holds `capacity` bytes without reallocating.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self(Vec::with_capacity(capacity))
    }

    /// The buffer, for the crate to fill (within its capacity).
    pub(crate) const fn as_mut_vec(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }

    /// The bytes, no longer zeroized on drop: the caller owns them now.
    #[must_use]
    pub fn into_vec(mut self) -> Vec<u8> {
        core::mem::take(&mut self.0)
    }
}

impl Deref for SecretBytes {
    type Target = Vec<u8>;

    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.as_mut_slice().zeroize();
        self.0.spare_capacity_mut().zeroize();
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_bytes_hand_over_their_bytes_and_print_none() {
        let mut s = SecretBytes::with_capacity(8);
        s.as_mut_vec().extend_from_slice(b"photo");
        assert_eq!(s.as_slice(), b"photo");
        assert_eq!(format!("{s:?}"), "SecretBytes(5 bytes)");
        assert_eq!(s.into_vec(), b"photo");
    }
}
