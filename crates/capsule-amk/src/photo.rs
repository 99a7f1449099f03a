//! Photos: AES-256-GCM under a per-photo key, in fixed-size chunks (STREAM), one-shot or streaming.
//!
//! A photo (or video) is sealed under its own key, derived from the AMK of the
//! version it is uploaded under and a random [`PhotoId`]. The plaintext is cut
//! into [`SealedPhoto::CHUNK_SIZE`] chunks; chunk `i` is sealed with the nonce
//! `0⁷ ‖ i (u32 BE) ‖ last`, where `last` is 1 for the final chunk and 0 for the
//! others: the STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár
//! ("Online Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance",
//! CRYPTO 2015), laid out as RustCrypto's `StreamBE32`. A chunk only opens at
//! its own position, and only the final chunk opens as final, so chunks cannot
//! be reordered, dropped, duplicated or the stream truncated without the open
//! failing.
//!
//! [`seal_photo`] / [`open_photo`] work on a whole photo in memory;
//! [`PhotoSealer`] / [`PhotoOpener`] take and give bytes piece by piece, so a
//! large video is never in memory whole. Both are the same code: the one-shot
//! functions run the streaming ones over the whole input, and produce the same
//! bytes.

use core::fmt;

use aes_gcm::aead::Nonce;
use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit, Tag};
use capsule_identity::DecodeError;
use rand_core::TryCryptoRng;

use crate::secret::SecretBytes;
use crate::{AlbumId, Amk, AmkError, AmkKeyring, AmkSlot, AmkVersion, Result};

/// Format version of a sealed photo's header.
const PHOTO_FORMAT: u8 = 1;
/// AES-GCM tag length.
const TAG_LEN: usize = 16;
/// Plaintext bytes per chunk.
const CHUNK_SIZE: usize = 64 * 1024;
/// Sealed bytes per full chunk.
const SEALED_CHUNK_SIZE: usize = CHUNK_SIZE + TAG_LEN;

/// A photo's id: 32 random bytes the sealer draws, from which (with the AMK)
/// the photo's key is derived. Not secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhotoId([u8; 32]);

impl PhotoId {
    /// Wraps 32 bytes (an id read back from storage; sealing draws its own).
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// What precedes a sealed photo's chunks: the format, the AMK version it was
/// sealed under and its id. Every chunk authenticates it as associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PhotoHeader {
    version: AmkVersion,
    id: PhotoId,
}

impl PhotoHeader {
    /// Encoded length: format (1) ‖ AMK version (u32 BE, 4) ‖ photo id (32).
    pub const LEN: usize = 37;

    /// The AMK version the photo was sealed under.
    #[must_use]
    pub const fn version(&self) -> AmkVersion {
        self.version
    }

    /// The photo's id.
    #[must_use]
    pub const fn id(&self) -> &PhotoId {
        &self.id
    }

    /// The encoding: format ‖ version (u32 BE) ‖ id.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        let version = self.version.get().to_be_bytes();
        let fields = core::iter::once(&PHOTO_FORMAT).chain(&version).chain(&self.id.0);
        for (dst, src) in out.iter_mut().zip(fields) {
            *dst = *src;
        }
        out
    }

    /// Decodes exactly [`PhotoHeader::LEN`] bytes.
    ///
    /// # Errors
    /// [`AmkError::Decode`]: unknown format, version 0, too short or trailing bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (header, rest) = Self::take(bytes)?;
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes.into());
        }
        Ok(header)
    }

    /// Decodes a header from the front of `bytes`, returning what follows it.
    fn take(bytes: &[u8]) -> Result<(Self, &[u8])> {
        let (&format, rest) = bytes.split_first().ok_or(DecodeError::Malformed)?;
        if format != PHOTO_FORMAT {
            return Err(DecodeError::UnknownVersion(format).into());
        }
        let (version, rest) = rest.split_first_chunk::<4>().ok_or(DecodeError::Malformed)?;
        let (id, rest) = rest.split_first_chunk::<32>().ok_or(DecodeError::Malformed)?;
        let version = AmkVersion::new(u32::from_be_bytes(*version)).ok_or(DecodeError::Malformed)?;
        Ok((Self { version, id: PhotoId(*id) }, rest))
    }
}

/// A sealed photo: its [`PhotoHeader`], then its chunks back to back.
///
/// # Format (version 1)
///
/// ```text
/// 0x01 ‖ AMK version (u32 BE, not 0) ‖ photo id (32) ‖ chunk 0 ‖ … ‖ chunk n-1
/// ```
///
/// Every chunk but the last holds [`SealedPhoto::CHUNK_SIZE`] plaintext bytes
/// and is [`SealedPhoto::SEALED_CHUNK_SIZE`] long (ciphertext ‖ 16-byte tag);
/// the last holds 1 to `CHUNK_SIZE` bytes, or 0 if it is the only chunk (an
/// empty photo). Chunk boundaries are therefore implied by the length, each
/// plaintext length has exactly one sealed length, and chunk `i` of a video
/// starts at a computable offset (`PhotoHeader::LEN + i * SEALED_CHUNK_SIZE`).
/// There is no length prefix, so a sealer can write the format as it goes; a
/// photo whose bytes were cut or extended is refused by [`SealedPhoto::from_bytes`]
/// when the length cannot frame chunks, and otherwise by opening.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedPhoto {
    header: PhotoHeader,
    body: Vec<u8>,
}

impl SealedPhoto {
    /// Plaintext bytes per chunk (64 KiB).
    pub const CHUNK_SIZE: usize = CHUNK_SIZE;
    /// Bytes of a full sealed chunk: [`SealedPhoto::CHUNK_SIZE`] plus the 16-byte tag.
    pub const SEALED_CHUNK_SIZE: usize = SEALED_CHUNK_SIZE;

    /// A sealed photo from its header and its chunks back to back (what a
    /// [`PhotoSealer`]'s `push`es and `finish` return, concatenated).
    ///
    /// # Errors
    /// [`AmkError::Decode`] if `body` cannot be a sequence of chunks (see the type's docs).
    pub fn from_parts(header: PhotoHeader, body: Vec<u8>) -> Result<Self> {
        chunk_count(body.len())?;
        Ok(Self { header, body })
    }

    /// The header.
    #[must_use]
    pub const fn header(&self) -> &PhotoHeader {
        &self.header
    }

    /// The AMK version the photo was sealed under.
    #[must_use]
    pub const fn version(&self) -> AmkVersion {
        self.header.version
    }

    /// The photo's id.
    #[must_use]
    pub const fn id(&self) -> &PhotoId {
        &self.header.id
    }

    /// The chunks back to back.
    #[must_use]
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The sealed chunks, in order (each ciphertext ‖ tag).
    pub fn chunks(&self) -> impl ExactSizeIterator<Item = &[u8]> + DoubleEndedIterator {
        self.body.chunks(SEALED_CHUNK_SIZE)
    }

    /// Length of the plaintext.
    #[must_use]
    pub fn plaintext_len(&self) -> usize {
        self.body.len().saturating_sub(self.chunks().len().saturating_mul(TAG_LEN))
    }

    /// Length of the encoding.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        PhotoHeader::LEN.saturating_add(self.body.len())
    }

    /// The encoding: header ‖ chunks.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        [self.header.to_bytes().as_slice(), &self.body].concat()
    }

    /// Decodes an encoding (the chunks themselves are checked by opening).
    ///
    /// # Errors
    /// [`AmkError::Decode`]: unknown format, version 0, a header cut short, or a
    /// length that does not frame chunks (no chunk, a chunk shorter than its
    /// tag, or an empty final chunk after full ones).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (header, body) = PhotoHeader::take(bytes)?;
        Self::from_parts(header, body.to_vec())
    }

    /// Opens the photo with the key of its version in `keyring`.
    ///
    /// # Errors
    /// As [`open_photo`].
    pub fn open(&self, keyring: &AmkKeyring, album: &AlbumId) -> Result<SecretBytes> {
        let mut opener = PhotoOpener::new(keyring, album, &self.header)?;
        let mut out = SecretBytes::with_capacity(self.plaintext_len());
        opener.push_into(&self.body, out.as_mut_vec())?;
        opener.finish_into(out.as_mut_vec())?;
        Ok(out)
    }
}

impl fmt::Debug for SealedPhoto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedPhoto")
            .field("header", &self.header)
            .field("chunks", &self.chunks().len())
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// The number of chunks a body of `len` bytes frames.
fn chunk_count(len: usize) -> Result<usize> {
    let full = len.checked_sub(1).ok_or(DecodeError::Malformed)? / SEALED_CHUNK_SIZE;
    let last = len.saturating_sub(full.saturating_mul(SEALED_CHUNK_SIZE));
    check_final(full, last)?;
    Ok(full.saturating_add(1))
}

/// A final chunk of `len` sealed bytes after `before` full chunks: at least a tag,
/// empty only when it is the only chunk, the index within the counter.
fn check_final(before: usize, len: usize) -> Result<u32> {
    let min = if before == 0 { TAG_LEN } else { TAG_LEN + 1 };
    if !(min..=SEALED_CHUNK_SIZE).contains(&len) {
        return Err(DecodeError::Malformed.into());
    }
    u32::try_from(before).map_err(|_| DecodeError::Malformed.into())
}

/// Seals a whole photo under the current AMK (`keyring.current()`), with a fresh
/// [`PhotoId`] drawn from `rng`.
///
/// # Errors
/// [`AmkError::Rng`] if `rng` fails; [`AmkError::PhotoTooLarge`] past the chunk counter.
///
/// # Examples
/// ```
/// use capsule_amk::*;
///
/// let album = AlbumId::from_bytes([7; 16]);
/// let ring = AmkKeyring::create(album, &EpochSecret::from_exporter([1; 32]))?;
/// let mut rng = <chacha20::ChaCha20Rng as rand_core::SeedableRng>::from_seed([0; 32]);
/// let sealed = seal_photo(ring.current(), &album, b"beach.jpg", &mut rng)?;
/// let bytes = sealed.to_bytes();
/// let opened = open_photo(&ring, &album, &SealedPhoto::from_bytes(&bytes)?)?;
/// assert_eq!(opened.as_slice(), b"beach.jpg");
/// # Ok::<(), AmkError>(())
/// ```
pub fn seal_photo<R: TryCryptoRng + ?Sized>(
    key: (AmkVersion, &Amk),
    album: &AlbumId,
    plaintext: &[u8],
    rng: &mut R,
) -> Result<SealedPhoto> {
    let mut sealer = PhotoSealer::new(key, album, rng)?;
    let chunks = plaintext.len() / CHUNK_SIZE + 1;
    let mut body = Vec::with_capacity(plaintext.len().saturating_add(chunks.saturating_mul(TAG_LEN)));
    sealer.push_into(plaintext, &mut body)?;
    let header = sealer.header;
    sealer.finish_into(&mut body)?;
    SealedPhoto::from_parts(header, body)
}

/// Opens a photo with the key of its version in `keyring`.
///
/// # Errors
/// [`AmkError::AboveCeiling`] for a version above the attested ceiling;
/// [`AmkError::Withheld`] for a version the history policy withheld from this
/// device (show a placeholder); [`AmkError::NotHeld`] for a version this device
/// does not hold; [`AmkError::PhotoUnreadable`] if it does not authenticate
/// (wrong album or key, chunks reordered, dropped, duplicated, truncated or changed).
pub fn open_photo(keyring: &AmkKeyring, album: &AlbumId, photo: &SealedPhoto) -> Result<SecretBytes> {
    photo.open(keyring, album)
}

/// AES-256-GCM under one photo's key, with the photo's header as associated data.
///
/// The key is fresh per photo (a random 256-bit id goes into its derivation)
/// and seals exactly one stream, so a deterministic nonce is enough: the
/// chunk index and last flag never repeat within the stream, hence never under
/// the key. Random nonces are only needed when one key seals many messages,
/// which is what the per-photo key avoids.
struct PhotoCipher {
    /// Key schedule and GHASH key; zeroized on drop (aes-gcm's `zeroize` feature).
    aead: Aes256Gcm,
    aad: [u8; PhotoHeader::LEN],
}

impl PhotoCipher {
    fn new(amk: &Amk, album: &AlbumId, header: &PhotoHeader) -> Result<Self> {
        let key = amk.photo_key(album, header.version, &header.id)?;
        Ok(Self { aead: Aes256Gcm::new((&*key).into()), aad: header.to_bytes() })
    }

    /// `0⁷ ‖ index (u32 BE) ‖ last`.
    fn nonce(index: u32, last: bool) -> Nonce<Aes256Gcm> {
        let mut nonce = [0u8; 12];
        let tail = index.to_be_bytes().into_iter().chain([u8::from(last)]);
        for (dst, src) in nonce.iter_mut().skip(7).zip(tail) {
            *dst = src;
        }
        nonce.into()
    }

    /// Appends chunk `index` sealed (ciphertext ‖ tag) to `out`.
    fn seal_chunk(&self, index: u32, last: bool, plaintext: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        out.extend_from_slice(plaintext);
        let buffer = out.get_mut(start..).ok_or(AmkError::Internal("chunk buffer"))?;
        let tag = self
            .aead
            .encrypt_inout_detached(&Self::nonce(index, last), &self.aad, buffer.into())
            .map_err(|_| AmkError::Internal("aead encrypt"))?;
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// Appends the plaintext of chunk `index` to `out`, or leaves `out` as it was.
    fn open_chunk(&self, index: u32, last: bool, sealed: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let (ciphertext, tag) = sealed.split_last_chunk::<TAG_LEN>().ok_or(AmkError::PhotoUnreadable)?;
        let start = out.len();
        out.extend_from_slice(ciphertext);
        let opened = out.get_mut(start..).is_some_and(|buffer| {
            self.aead
                .decrypt_inout_detached(&Self::nonce(index, last), &self.aad, buffer.into(), &Tag::from(*tag))
                .is_ok()
        });
        if !opened {
            // AES-GCM checks the tag before decrypting: what is dropped here is ciphertext.
            out.truncate(start);
            return Err(AmkError::PhotoUnreadable);
        }
        Ok(())
    }
}

impl fmt::Debug for PhotoCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhotoCipher").finish_non_exhaustive()
    }
}

/// Cuts a byte stream into `size`-byte chunks. A full chunk is held back until
/// a further byte shows it is not the last, so whatever remains at the end
/// (1 to `size` bytes, or none if nothing came) is the final chunk.
struct Chunker {
    size: usize,
    /// Zeroized: on the sealing side it holds plaintext (never past `size`
    /// bytes, so never reallocated).
    pending: SecretBytes,
}

impl Chunker {
    fn new(size: usize) -> Self {
        Self { size, pending: SecretBytes::with_capacity(size) }
    }

    /// How many chunks feeding `more` bytes releases.
    fn released_by(&self, more: usize) -> usize {
        self.pending.len().saturating_add(more).saturating_sub(1) / self.size
    }

    /// Feeds `data`, calling `each` on every chunk it shows is not the last.
    fn feed(&mut self, mut data: &[u8], mut each: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        if !self.pending.is_empty() {
            let room = self.size.saturating_sub(self.pending.len()).min(data.len());
            let (head, tail) = data.split_at_checked(room).ok_or(AmkError::Internal("chunker split"))?;
            self.pending.as_mut_vec().extend_from_slice(head);
            data = tail;
            if data.is_empty() {
                return Ok(());
            }
            // More bytes follow, so the full pending chunk is not the last.
            each(&self.pending)?;
            self.pending.as_mut_vec().clear();
        }
        while let Some((chunk, rest)) = data.split_at_checked(self.size)
            && !rest.is_empty()
        {
            each(chunk)?;
            data = rest;
        }
        self.pending.as_mut_vec().extend_from_slice(data);
        Ok(())
    }
}

/// Seals a photo piece by piece, for files too large to hold twice in memory.
///
/// Write [`PhotoSealer::header`]'s bytes, then whatever each
/// [`PhotoSealer::push`] returns, then what [`PhotoSealer::finish`] returns:
/// the result is exactly [`SealedPhoto::to_bytes`] of the same photo sealed at
/// once with the same `rng`. The sealer holds at most one chunk of plaintext
/// (zeroized on drop).
///
/// ```
/// use capsule_amk::*;
///
/// let album = AlbumId::from_bytes([7; 16]);
/// let ring = AmkKeyring::create(album, &EpochSecret::from_exporter([1; 32]))?;
/// let mut rng = <chacha20::ChaCha20Rng as rand_core::SeedableRng>::from_seed([0; 32]);
/// let video = vec![7u8; 200_000];
///
/// let mut sealer = PhotoSealer::new(ring.current(), &album, &mut rng)?;
/// let header = *sealer.header();
/// let mut file = header.to_bytes().to_vec();
/// for piece in video.chunks(30_000) {
///     file.extend(sealer.push(piece)?);
/// }
/// file.extend(sealer.finish()?);
///
/// let header = PhotoHeader::from_bytes(&file[..PhotoHeader::LEN])?;
/// let mut opener = PhotoOpener::new(&ring, &album, &header)?;
/// let mut opened = Vec::new();
/// for piece in file[PhotoHeader::LEN..].chunks(50_000) {
///     opened.extend_from_slice(&opener.push(piece)?);
/// }
/// opened.extend_from_slice(&opener.finish()?);
/// assert_eq!(opened, video);
/// # Ok::<(), AmkError>(())
/// ```
pub struct PhotoSealer {
    header: PhotoHeader,
    cipher: PhotoCipher,
    chunker: Chunker,
    /// Index of the next chunk.
    index: u32,
    /// Set by a failed call: the output so far is incomplete, nothing more is sealed.
    failed: bool,
}

impl PhotoSealer {
    /// Starts sealing a photo under `key` (the current AMK, `keyring.current()`),
    /// with a fresh [`PhotoId`] drawn from `rng`. The id is never chosen by the
    /// caller: two photos under one id would share a key and nonces.
    ///
    /// # Errors
    /// [`AmkError::Rng`] if `rng` fails.
    pub fn new<R: TryCryptoRng + ?Sized>(key: (AmkVersion, &Amk), album: &AlbumId, rng: &mut R) -> Result<Self> {
        let (version, amk) = key;
        let mut id = [0u8; 32];
        rng.try_fill_bytes(&mut id).map_err(|_| AmkError::Rng)?;
        let header = PhotoHeader { version, id: PhotoId(id) };
        Ok(Self {
            header,
            cipher: PhotoCipher::new(amk, album, &header)?,
            chunker: Chunker::new(CHUNK_SIZE),
            index: 0,
            failed: false,
        })
    }

    /// The header to write before the chunks.
    #[must_use]
    pub const fn header(&self) -> &PhotoHeader {
        &self.header
    }

    /// Takes the next `plaintext` bytes (any length) and returns the chunks they
    /// complete, sealed (possibly none).
    ///
    /// # Errors
    /// [`AmkError::PhotoTooLarge`] past the chunk counter; after an error every
    /// call fails and the output so far must be discarded.
    pub fn push(&mut self, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.chunker.released_by(plaintext.len()).saturating_mul(SEALED_CHUNK_SIZE));
        self.push_into(plaintext, &mut out)?;
        Ok(out)
    }

    /// Seals the final chunk and returns it.
    ///
    /// # Errors
    /// As [`PhotoSealer::push`].
    pub fn finish(self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.chunker.pending.len().saturating_add(TAG_LEN));
        self.finish_into(&mut out)?;
        Ok(out)
    }

    fn push_into(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.failed {
            return Err(AmkError::Internal("photo sealer used after an error"));
        }
        let Self { cipher, chunker, index, .. } = self;
        let result = chunker.feed(plaintext, |chunk| {
            // Chunk `index` is not the last, so the final chunk needs `index + 1`.
            let next = index.checked_add(1).ok_or(AmkError::PhotoTooLarge)?;
            cipher.seal_chunk(*index, false, chunk, out)?;
            *index = next;
            Ok(())
        });
        self.failed = result.is_err();
        result
    }

    fn finish_into(self, out: &mut Vec<u8>) -> Result<()> {
        if self.failed {
            return Err(AmkError::Internal("photo sealer used after an error"));
        }
        self.cipher.seal_chunk(self.index, true, &self.chunker.pending, out)
    }
}

impl fmt::Debug for PhotoSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhotoSealer")
            .field("header", &self.header)
            .field("chunks_sealed", &self.index)
            .finish_non_exhaustive()
    }
}

/// Opens a sealed photo piece by piece (see [`PhotoSealer`] for an example).
///
/// Every chunk authenticates on its own, so plaintext is released chunk by
/// chunk; only [`PhotoOpener::finish`] proves the photo was not truncated, so
/// treat what came before it as incomplete until it returns `Ok`.
pub struct PhotoOpener {
    cipher: PhotoCipher,
    chunker: Chunker,
    /// Index of the next chunk.
    index: u32,
    /// Set by a failed call: nothing more is opened.
    failed: bool,
}

impl PhotoOpener {
    /// Starts opening the photo `header` describes, with its version's key from `keyring`.
    ///
    /// # Errors
    /// [`AmkError::AboveCeiling`], [`AmkError::Withheld`] or [`AmkError::NotHeld`]
    /// as [`open_photo`].
    pub fn new(keyring: &AmkKeyring, album: &AlbumId, header: &PhotoHeader) -> Result<Self> {
        keyring.check_manifest(header.version)?;
        let amk = match keyring.lookup(header.version) {
            AmkSlot::Held(amk) => amk,
            AmkSlot::Withheld => return Err(AmkError::Withheld(header.version)),
            AmkSlot::NotHeld => return Err(AmkError::NotHeld(header.version)),
        };
        Ok(Self {
            cipher: PhotoCipher::new(amk, album, header)?,
            chunker: Chunker::new(SEALED_CHUNK_SIZE),
            index: 0,
            failed: false,
        })
    }

    /// Takes the next sealed bytes (any length, cut anywhere) and returns the
    /// plaintext of the chunks they complete (possibly none).
    ///
    /// # Errors
    /// [`AmkError::PhotoUnreadable`] if a chunk does not authenticate at its
    /// position; [`AmkError::Decode`] past the chunk counter. After an error every
    /// call fails with [`AmkError::PhotoUnreadable`].
    pub fn push(&mut self, sealed: &[u8]) -> Result<SecretBytes> {
        let mut out = SecretBytes::with_capacity(self.chunker.released_by(sealed.len()).saturating_mul(CHUNK_SIZE));
        self.push_into(sealed, out.as_mut_vec())?;
        Ok(out)
    }

    /// Opens the final chunk and returns its plaintext.
    ///
    /// # Errors
    /// [`AmkError::Decode`] if the bytes pushed do not end in a whole final chunk;
    /// [`AmkError::PhotoUnreadable`] if it does not authenticate as the final chunk
    /// (a truncated photo) or an earlier call failed.
    pub fn finish(self) -> Result<SecretBytes> {
        let mut out = SecretBytes::with_capacity(self.chunker.pending.len().saturating_sub(TAG_LEN));
        self.finish_into(out.as_mut_vec())?;
        Ok(out)
    }

    fn push_into(&mut self, sealed: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.failed {
            return Err(AmkError::PhotoUnreadable);
        }
        let Self { cipher, chunker, index, .. } = self;
        let result = chunker.feed(sealed, |chunk| {
            let next = index.checked_add(1).ok_or(DecodeError::Malformed)?;
            cipher.open_chunk(*index, false, chunk, out)?;
            *index = next;
            Ok(())
        });
        self.failed = result.is_err();
        result
    }

    fn finish_into(self, out: &mut Vec<u8>) -> Result<()> {
        if self.failed {
            return Err(AmkError::PhotoUnreadable);
        }
        let before = usize::try_from(self.index).map_err(|_| AmkError::Internal("chunk index"))?;
        let index = check_final(before, self.chunker.pending.len())?;
        self.cipher.open_chunk(index, true, &self.chunker.pending, out)
    }
}

impl fmt::Debug for PhotoOpener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhotoOpener").field("chunks_opened", &self.index).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The last flag is what refuses a non-final chunk as final (a truncation at
    /// a chunk boundary): same key, same index, only the flag differs.
    #[test]
    fn the_last_flag_separates_final_from_other_chunks() {
        let header = PhotoHeader { version: AmkVersion::FIRST, id: PhotoId([5; 32]) };
        let album = AlbumId::from_bytes([2; 16]);
        let (amk, _) = crate::EpochSecret::from_exporter([1; 32]).version_keys(&album, AmkVersion::FIRST).unwrap();
        let cipher = PhotoCipher::new(&amk, &album, &header).unwrap();
        for last in [false, true] {
            let mut sealed = Vec::new();
            cipher.seal_chunk(3, last, b"chunk", &mut sealed).unwrap();
            let mut out = vec![9];
            assert_eq!(cipher.open_chunk(3, !last, &sealed, &mut out), Err(AmkError::PhotoUnreadable));
            assert_eq!(out, [9], "a refused chunk leaves the output as it was");
            assert_eq!(cipher.open_chunk(3, last, &sealed, &mut out), Ok(()));
            assert_eq!(out, b"\x09chunk");
        }
    }

    #[test]
    fn framing() {
        let s = SEALED_CHUNK_SIZE;
        // (body length, chunks or refused)
        let cases = [
            (0, None),
            (TAG_LEN - 1, None),
            (TAG_LEN, Some(1)),
            (s, Some(1)),
            (s + TAG_LEN, None),
            (s + TAG_LEN + 1, Some(2)),
            (2 * s, Some(2)),
            (2 * s + 5, None),
        ];
        for (len, expected) in cases {
            assert_eq!(chunk_count(len).ok(), expected, "body of {len} bytes");
        }
    }
}
