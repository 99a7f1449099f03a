//! Edit scripts: how an input names a valid message and changes it.
//!
//! A script is a sequence of 4-byte instructions `[op, hi, lo, value]`. The
//! position `hi‖lo` (big endian) is scaled onto the current length, so a
//! script reaches every byte of a message up to 64 KiB and stays meaningful
//! when the message it edits is another size. A trailing partial instruction
//! is ignored.

/// Applies `script` to a copy of `base`.
#[must_use]
pub fn apply(base: &[u8], script: &[u8]) -> Vec<u8> {
    let mut out = base.to_vec();
    for ins in script.chunks_exact(4) {
        let &[op, hi, lo, value] = ins else { continue };
        let at = position(u16::from_be_bytes([hi, lo]), out.len());
        match op % 6 {
            // Flip bits of one byte.
            0 => xor(&mut out, at, value.max(1)),
            // Overwrite one byte.
            1 => set(&mut out, at, value),
            // Insert one byte.
            2 => out.insert(at.min(out.len()), value),
            // Delete up to `value + 1` bytes.
            3 => {
                let end = at.saturating_add(usize::from(value) + 1).min(out.len());
                out.drain(at.min(end)..end);
            }
            // Cut the rest off.
            4 => out.truncate(at),
            // Overwrite a length prefix with a two-byte MLS variable-length
            // integer (`01` tag, 14 bits): the fields MLS encodings hang on
            // (`value` scaled to the message length).
            _ => {
                let len = position(u16::from(value) << 8, out.len()).min(0x3FFF);
                let [h, l] = u16::try_from(len).unwrap_or(0x3FFF).to_be_bytes();
                set(&mut out, at, 0x40 | h);
                set(&mut out, at.saturating_add(1), l);
            }
        }
    }
    out
}

/// `raw` scaled from `0..=u16::MAX` onto `0..=len`.
fn position(raw: u16, len: usize) -> usize {
    let scaled = (u64::from(raw) * (u64::try_from(len).unwrap_or(u64::MAX) + 1)) >> 16;
    usize::try_from(scaled).unwrap_or(usize::MAX)
}

fn xor(out: &mut [u8], at: usize, value: u8) {
    if let Some(b) = out.get_mut(at) {
        *b ^= value;
    }
}

fn set(out: &mut [u8], at: usize, value: u8) {
    if let Some(b) = out.get_mut(at) {
        *b = value;
    }
}

/// An instruction flipping the low bit of the byte at `at` of a `len`-byte
/// message (for seeds).
#[must_use]
pub fn flip(at: usize, len: usize) -> [u8; 4] {
    // Inverse of `position`, rounded up so it lands on `at`.
    let len = u64::try_from(len).unwrap_or(u64::MAX).max(1);
    let raw = (u64::try_from(at).unwrap_or(u64::MAX) << 16).div_ceil(len + 1);
    let [hi, lo] = u16::try_from(raw).unwrap_or(u16::MAX).to_be_bytes();
    [0, hi, lo, 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_edit_as_documented() {
        let base: Vec<u8> = (0..10).collect();
        assert_eq!(apply(&base, &[]), base);
        assert_eq!(apply(&base, &[0, 0, 0, 0]), [1, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(apply(&base, &[4, 0x80, 0, 0]), [0, 1, 2, 3, 4]);
        assert_eq!(apply(&base, &[3, 0, 0, 1]), [2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(apply(&base, &[2, 0xFF, 0xFF, 7]).last(), Some(&7));
        for at in 0..10 {
            assert_eq!(apply(&base, &flip(at, 10)).iter().zip(&base).position(|(a, b)| a != b), Some(at));
        }
        let big = vec![0u8; 5000];
        let flipped = apply(&big, &flip(4321, big.len()));
        assert_eq!(flipped.iter().position(|b| *b != 0), Some(4321));
    }
}
