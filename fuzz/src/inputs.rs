//! How the live-album targets read an input, shared with the seed generator
//! so committed seeds mean what the targets read.
//!
//! Every such input starts with a mode byte. Mode `RAW` (0) takes the rest as
//! the message itself; any other mode names one of the valid messages the
//! target built at start-up (`(mode - 1) % count`) and edits it with the rest
//! as an [`crate::edit`] script.

use crate::edit;

/// The mode byte of a raw input.
pub const RAW: u8 = 0;

/// An input read against `bases`: the message, and which base it edits.
#[derive(Debug)]
pub struct Read {
    /// The message to feed.
    pub message: Vec<u8>,
    /// The base it was made from (`None` for a raw input).
    pub base: Option<usize>,
}

/// Reads `data` against `bases` (see the module docs); `None` for an empty input.
#[must_use]
pub fn read(data: &[u8], bases: &[Vec<u8>]) -> Option<Read> {
    let (&mode, rest) = data.split_first()?;
    if mode == RAW || bases.is_empty() {
        return Some(Read { message: rest.to_vec(), base: None });
    }
    let i = usize::from(mode - 1) % bases.len();
    Some(Read { message: edit::apply(bases.get(i)?, rest), base: Some(i) })
}

/// The seed naming base `i` unchanged.
#[must_use]
pub fn base(i: usize) -> Vec<u8> {
    vec![u8::try_from(i + 1).unwrap_or(u8::MAX)]
}

/// The seed naming base `i` with `script` applied.
#[must_use]
pub fn edited(i: usize, script: &[u8]) -> Vec<u8> {
    [base(i).as_slice(), script].concat()
}

/// The seed feeding `message` raw.
#[must_use]
pub fn raw(message: &[u8]) -> Vec<u8> {
    [&[RAW][..], message].concat()
}

/// Two byte strings in one: a big-endian u16 length, the first, the second.
/// Reading never fails: a length past the end takes everything.
#[must_use]
pub fn split_pair(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<2>() else { return (data, &[]) };
    rest.split_at(usize::from(u16::from_be_bytes(*len)).min(rest.len()))
}

/// The inverse of [`split_pair`] (for seeds; the first part is cut at 64 KiB).
#[must_use]
pub fn join_pair(first: &[u8], second: &[u8]) -> Vec<u8> {
    let len = u16::try_from(first.len()).unwrap_or(u16::MAX);
    [&len.to_be_bytes()[..], first.get(..usize::from(len)).unwrap_or(first), second].concat()
}
