//! Sealed photos: round trips, every kind of tampering, the keyring's answers,
//! streaming against one-shot, and the encoding's refusals.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code

mod common;

use std::num::NonZeroU32;

use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};
use capsule_amk::*;
use capsule_identity::{DecodeError, UserId};
use chacha20::ChaCha20Rng;
use hkdf::Hkdf;
use proptest::prelude::*;
use rand_core::SeedableRng;
use sha2::Sha256;

use common::{ALBUM, epoch_secret, v};

const OTHER_ALBUM: AlbumId = AlbumId::from_bytes([8; 16]);
const C: usize = SealedPhoto::CHUNK_SIZE;
const S: usize = SealedPhoto::SEALED_CHUNK_SIZE;
const H: usize = PhotoHeader::LEN;

/// A keyring that has seen versions 1..=current.
fn ring_at(current: u32) -> AmkKeyring {
    let mut ring = AmkKeyring::create(ALBUM, &epoch_secret(1)).unwrap();
    for n in 2..=current {
        ring.rotate(v(n), &epoch_secret(n)).unwrap();
    }
    ring
}

fn rng(seed: u8) -> ChaCha20Rng {
    ChaCha20Rng::from_seed([seed; 32])
}

/// Bytes that differ from chunk to chunk and position to position.
fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| u8::try_from((i * 31 + i / C) % 251).unwrap()).collect()
}

fn seal(ring: &AmkKeyring, len: usize, seed: u8) -> (Vec<u8>, SealedPhoto) {
    let data = plaintext(len);
    let sealed = seal_photo(ring.current(), &ALBUM, &data, &mut rng(seed)).unwrap();
    (data, sealed)
}

/// Decodes and opens `bytes` as a photo of `ALBUM`.
fn open_bytes(ring: &AmkKeyring, bytes: &[u8]) -> Result<Vec<u8>> {
    Ok(open_photo(ring, &ALBUM, &SealedPhoto::from_bytes(bytes)?)?.to_vec())
}

/// The photo with its chunks rearranged: `order` lists chunk indices.
fn rechunk(sealed: &SealedPhoto, order: &[usize]) -> Result<SealedPhoto> {
    let chunks: Vec<&[u8]> = sealed.chunks().collect();
    SealedPhoto::from_parts(*sealed.header(), order.iter().flat_map(|&i| chunks[i].to_vec()).collect())
}

#[test]
fn round_trips_at_every_chunk_boundary() {
    let ring = ring_at(1);
    // (plaintext length, chunks)
    let cases = [(0, 1), (1, 1), (C - 1, 1), (C, 1), (C + 1, 2), (3 * C + 5, 4)];
    for (len, chunks) in cases {
        let (data, sealed) = seal(&ring, len, 1);
        assert_eq!(sealed.version(), v(1));
        assert_eq!(sealed.chunks().len(), chunks, "{len} bytes");
        assert_eq!(sealed.plaintext_len(), len);
        assert_eq!(sealed.encoded_len(), H + len + 16 * chunks);
        assert!(sealed.chunks().rev().skip(1).all(|c| c.len() == S), "every chunk but the last is full");
        let bytes = sealed.to_bytes();
        assert_eq!(bytes.len(), sealed.encoded_len());
        assert_eq!(SealedPhoto::from_bytes(&bytes).unwrap(), sealed);
        assert_eq!(open_bytes(&ring, &bytes).unwrap(), data, "{len} bytes");
        assert_eq!(sealed.open(&ring, &ALBUM).unwrap().as_slice(), data.as_slice());
    }
}

/// The documented key schedule and nonce layout (crate root) are what the code does.
#[test]
fn the_documented_construction() {
    let ring = ring_at(2);
    let (version, amk) = ring.current();
    let (data, sealed) = seal(&ring, C + 3, 4);
    let id = sealed.id().as_bytes();
    let mut key = [0u8; 32];
    Hkdf::<Sha256>::new(Some(b"capsule/amk/v1"), amk.expose_secret())
        .expand_multi_info(&[b"capsule/amk/v1/photo", ALBUM.as_bytes(), &version.get().to_be_bytes(), id], &mut key)
        .unwrap();
    let aead = Aes256Gcm::new(&key.into());
    let header = sealed.header().to_bytes();
    assert_eq!(header[0], 1);
    assert_eq!(header[1..5], 2u32.to_be_bytes());
    assert_eq!(&header[5..], id);
    let chunks: Vec<&[u8]> = sealed.chunks().collect();
    for (index, (chunk, last)) in [(&data[..C], 0u8), (&data[C..], 1)].into_iter().enumerate() {
        let mut nonce = [0u8; 12];
        nonce[7..11].copy_from_slice(&u32::try_from(index).unwrap().to_be_bytes());
        nonce[11] = last;
        let mut buffer = chunk.to_vec();
        let tag = aead.encrypt_inout_detached(&nonce.into(), &header, buffer.as_mut_slice().into()).unwrap();
        buffer.extend_from_slice(&tag);
        assert_eq!(chunks[index], buffer.as_slice(), "chunk {index}");
    }
}

/// Positions to change in a sealed photo of `len` bytes: the whole header and
/// final chunk, and in every other chunk its first and last 64 bytes (the tag
/// and what precedes it) and a stride through the middle. (Exhaustive over a
/// 64 KiB chunk is too slow unoptimized: AES-GCM is generic, so it compiles at
/// this crate's opt-level.)
fn positions(len: usize) -> Vec<usize> {
    let final_start = H + (len - H - 1) / S * S;
    (0..len)
        .filter(|&i| {
            let offset = (i - H.min(i)) % S;
            i < H || i >= final_start || !(64..S - 64).contains(&offset) || offset.is_multiple_of(1021)
        })
        .collect()
}

#[test]
fn every_changed_byte_is_refused() {
    let ring = ring_at(1);
    for (len, seed) in [(0, 2), (C + 1, 3), (3 * C + 5, 4)] {
        let (_, sealed) = seal(&ring, len, seed);
        let mut bytes = sealed.to_bytes();
        let positions = positions(bytes.len());
        assert!(positions.len() >= H + 16, "{len}: {} positions", positions.len());
        for (n, i) in positions.into_iter().enumerate() {
            let flip = [0x01, 0x80, 0xFF][n % 3];
            bytes[i] ^= flip;
            let result = open_bytes(&ring, &bytes);
            if i >= H {
                assert_eq!(result, Err(AmkError::PhotoUnreadable), "{len} bytes: byte {i} ^ {flip:#x}");
            } else {
                assert!(result.is_err(), "{len} bytes: header byte {i} ^ {flip:#x}");
            }
            bytes[i] ^= flip;
        }
        assert!(open_bytes(&ring, &bytes).is_ok());
    }
}

#[test]
fn chunks_only_open_in_their_place() {
    let ring = ring_at(1);
    let (_, four) = seal(&ring, 3 * C + 5, 5);
    let (_, two) = seal(&ring, C + 1, 6);
    let (_, full_final) = seal(&ring, 2 * C, 7);
    // (photo, chunk order)
    let cases: [(&SealedPhoto, &[usize]); 13] = [
        (&four, &[1, 0, 2, 3]),    // swapped
        (&four, &[0, 2, 1, 3]),    // swapped
        (&four, &[3, 0, 1, 2]),    // the final chunk first
        (&four, &[0, 1, 1, 2, 3]), // duplicated
        (&four, &[0, 0, 1, 2, 3]), // duplicated
        (&four, &[0, 1, 2, 3, 3]), // the final chunk twice
        (&four, &[0, 2, 3]),       // dropped from the middle
        (&four, &[1, 2, 3]),       // dropped from the front
        (&four, &[0, 3, 2]),       // dropped and moved
        (&four, &[0, 1, 2]),       // truncated: the last full chunk was not sealed as final
        (&two, &[0]),              // truncated
        (&two, &[1, 0]),           // swapped
        (&full_final, &[1, 0]),    // a full final chunk moved forward
    ];
    for (photo, order) in cases {
        // Chunk boundaries follow from the length alone, so a rearrangement either
        // cannot frame chunks or frames chunks that do not open at their positions.
        match rechunk(photo, order) {
            Ok(rearranged) => {
                assert_eq!(open_photo(&ring, &ALBUM, &rearranged), Err(AmkError::PhotoUnreadable), "{order:?}");
            }
            Err(e) => assert_eq!(e, DecodeError::Malformed.into(), "{order:?}"),
        }
    }
    // The truncations frame: only the last-chunk flag refuses them.
    for (photo, order) in [(&four, &[0, 1, 2][..]), (&two, &[0][..])] {
        assert!(rechunk(photo, order).is_ok(), "{order:?}");
    }
    // A chunk from another photo under the same AMK.
    let spliced: Vec<u8> = four.chunks().next().unwrap().iter().chain(two.chunks().nth(1).unwrap()).copied().collect();
    let spliced = SealedPhoto::from_parts(*four.header(), spliced).unwrap();
    assert_eq!(open_photo(&ring, &ALBUM, &spliced), Err(AmkError::PhotoUnreadable));
}

#[test]
fn cut_or_extended_bytes_are_refused() {
    let ring = ring_at(1);
    let (_, sealed) = seal(&ring, 2 * C + 100, 8);
    let bytes = sealed.to_bytes();
    for boundary in [H, H + S, H + 2 * S, bytes.len()] {
        for len in [boundary.saturating_sub(17), boundary - 16, boundary - 1, boundary, boundary + 1, boundary + 17] {
            if len == bytes.len() {
                continue;
            }
            let mut cut = bytes.clone();
            cut.resize(len, 0);
            assert!(open_bytes(&ring, &cut).is_err(), "{len} of {} bytes", bytes.len());
        }
    }
}

#[test]
fn the_album_and_the_version_key_are_bound() {
    let ring = ring_at(2);
    let (_, sealed) = seal(&ring, 1000, 9);
    assert_eq!(open_photo(&ring, &OTHER_ALBUM, &sealed), Err(AmkError::PhotoUnreadable));

    // Sealed under version 1's key but labelled version 2.
    let v1_key = ring.get(v(1)).unwrap();
    let mislabelled = seal_photo((v(2), v1_key), &ALBUM, b"photo", &mut rng(9)).unwrap();
    assert_eq!(open_photo(&ring, &ALBUM, &mislabelled), Err(AmkError::PhotoUnreadable));

    // Relabelled after sealing: the header's version byte changed from 2 to 1.
    let mut bytes = sealed.to_bytes();
    bytes[4] = 1;
    assert_eq!(SealedPhoto::from_bytes(&bytes).unwrap().version(), v(1));
    assert_eq!(open_bytes(&ring, &bytes), Err(AmkError::PhotoUnreadable));

    // Another album's keyring, same epoch secrets: different AMKs.
    let other = AmkKeyring::create(OTHER_ALBUM, &epoch_secret(1)).unwrap();
    let (_, under_v1) = seal(&ring_at(1), 10, 9);
    assert_eq!(open_photo(&other, &ALBUM, &under_v1), Err(AmkError::PhotoUnreadable));
}

#[test]
fn every_seal_is_a_new_photo() {
    let ring = ring_at(1);
    let data = plaintext(C + 10);
    let mut rng = rng(10);
    let a = seal_photo(ring.current(), &ALBUM, &data, &mut rng).unwrap();
    let b = seal_photo(ring.current(), &ALBUM, &data, &mut rng).unwrap();
    assert_ne!(a.id(), b.id());
    assert_ne!(a.body(), b.body());
    assert!(a.chunks().zip(b.chunks()).all(|(x, y)| x != y));
    assert_eq!(a.open(&ring, &ALBUM).unwrap(), b.open(&ring, &ALBUM).unwrap());
}

#[test]
fn the_keyring_decides_who_reads() {
    let meta = AlbumMetadata::new(
        ALBUM,
        HistoryPolicy::Capped { last: NonZeroU32::new(1).unwrap() },
        [UserId::from_bytes([1; 16])].into(),
    )
    .unwrap();
    let v1_ring = ring_at(1);
    let (_, old) = seal(&v1_ring, 100, 11);
    let v3_ring = ring_at(3);
    let (_, current) = seal(&v3_ring, 100, 12);
    let bundle_key = epoch_secret(99).bundle_key(&ALBUM).unwrap();
    let joiner = seal_for_joiner(&v3_ring, &meta, &bundle_key, &mut rng(13)).unwrap().open(&bundle_key, &meta).unwrap();
    let before = joiner.duplicate();

    assert_eq!(open_photo(&joiner, &ALBUM, &old), Err(AmkError::Withheld(v(1))));
    assert!(open_photo(&joiner, &ALBUM, &current).is_ok());
    assert!(open_photo(&v3_ring, &ALBUM, &old).is_ok());

    // A device at version 2 whose chain has shown version 3 does not hold it.
    let mut behind = ring_at(2);
    assert_eq!(open_photo(&behind, &ALBUM, &current), Err(AmkError::AboveCeiling { claimed: v(3), ceiling: v(2) }));
    behind.attest_ceiling(v(3));
    assert_eq!(open_photo(&behind, &ALBUM, &current), Err(AmkError::NotHeld(v(3))));
    assert_eq!(PhotoOpener::new(&behind, &ALBUM, current.header()).unwrap_err(), AmkError::NotHeld(v(3)));

    assert_eq!(joiner, before, "opening never changes the keyring");
}

/// Streams `data` through a sealer in pieces of the given sizes (cycled).
fn seal_streaming(ring: &AmkKeyring, data: &[u8], pieces: &[usize], seed: u8) -> Vec<u8> {
    let mut sealer = PhotoSealer::new(ring.current(), &ALBUM, &mut rng(seed)).unwrap();
    let mut out = sealer.header().to_bytes().to_vec();
    let mut rest = data;
    for &piece in pieces.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (head, tail) = rest.split_at(piece.clamp(1, rest.len()));
        out.extend(sealer.push(head).unwrap());
        rest = tail;
    }
    out.extend(sealer.push(&[]).unwrap());
    out.extend(sealer.finish().unwrap());
    out
}

/// Streams `bytes` through an opener in pieces of the given sizes (cycled).
fn open_streaming(ring: &AmkKeyring, bytes: &[u8], pieces: &[usize]) -> Result<Vec<u8>> {
    let (header, mut rest) = bytes.split_at(H.min(bytes.len()));
    let mut opener = PhotoOpener::new(ring, &ALBUM, &PhotoHeader::from_bytes(header)?)?;
    let mut out = Vec::new();
    for &piece in pieces.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (head, tail) = rest.split_at(piece.clamp(1, rest.len()));
        out.extend_from_slice(&opener.push(head)?);
        rest = tail;
    }
    out.extend_from_slice(&opener.finish()?);
    Ok(out)
}

#[test]
fn streaming_writes_what_one_shot_writes() {
    let ring = ring_at(2);
    let piece_sizes: [&[usize]; 6] = [&[1_000_000], &[C], &[C - 1], &[C + 1], &[1, 7, 4096, C, 3], &[S]];
    for len in [0, 1, C - 1, C, C + 1, 2 * C, 3 * C + 5] {
        let (data, sealed) = seal(&ring, len, 14);
        let one_shot = sealed.to_bytes();
        for pieces in piece_sizes {
            assert_eq!(seal_streaming(&ring, &data, pieces, 14), one_shot, "{len} bytes in pieces {pieces:?}");
            assert_eq!(open_streaming(&ring, &one_shot, pieces).unwrap(), data, "{len} bytes in pieces {pieces:?}");
        }
    }
}

#[test]
fn a_streaming_opener_stops_at_the_first_bad_chunk() {
    let ring = ring_at(1);
    let (data, sealed) = seal(&ring, 3 * C + 5, 15);
    let mut body = sealed.body().to_vec();
    body[S + 10] ^= 1; // chunk 1
    let mut opener = PhotoOpener::new(&ring, &ALBUM, sealed.header()).unwrap();
    // Chunk 0 is released once a byte of chunk 1 shows it is not the last.
    assert_eq!(opener.push(&body[..S]).unwrap().len(), 0);
    assert_eq!(opener.push(&body[S..S + 1]).unwrap().as_slice(), &data[..C]);
    assert_eq!(opener.push(&body[S + 1..]).unwrap_err(), AmkError::PhotoUnreadable);
    // Refused from then on, even with good bytes.
    assert_eq!(opener.push(&sealed.body()[2 * S..]).unwrap_err(), AmkError::PhotoUnreadable);
    assert_eq!(opener.finish().unwrap_err(), AmkError::PhotoUnreadable);

    // A stream cut inside a chunk, or with a bare tag as a later final chunk.
    for end in [S - 1, S + 16, S + 10, 15] {
        let result = open_streaming(&ring, &[&sealed.header().to_bytes()[..], &sealed.body()[..end]].concat(), &[4096]);
        assert!(result.is_err(), "cut at {end}");
    }
}

#[test]
fn the_encoding_refuses_what_it_never_writes() {
    let ring = ring_at(1);
    let (_, sealed) = seal(&ring, C + 1, 16);
    let bytes = sealed.to_bytes();
    let with = |i: usize, b: u8| {
        let mut x = bytes.clone();
        x[i] = b;
        x
    };
    let body = |len: usize| [&bytes[..H], &vec![0u8; len][..]].concat();
    // (bytes, expected error)
    let cases: Vec<(Vec<u8>, DecodeError)> = vec![
        (vec![], DecodeError::Malformed),
        (with(0, 2), DecodeError::UnknownVersion(2)),
        (with(0, 0), DecodeError::UnknownVersion(0)),
        ([&bytes[..4]].concat(), DecodeError::Malformed),
        ([&bytes[..1], &[0; 4], &bytes[5..]].concat(), DecodeError::Malformed), // version 0
        (bytes[..H].to_vec(), DecodeError::Malformed),                          // no chunk
        (body(15), DecodeError::Malformed),                                     // shorter than a tag
        (body(S + 16), DecodeError::Malformed),                                 // bare tag after a full chunk
        (body(S + 15), DecodeError::Malformed),
        (body(2 * S + 3), DecodeError::Malformed),
    ];
    for (input, expected) in cases {
        assert_eq!(SealedPhoto::from_bytes(&input), Err(expected.into()), "{} bytes", input.len());
    }
    // What frames decodes (and then fails to open).
    for len in [16, 17, S, S + 17, 2 * S] {
        assert!(SealedPhoto::from_bytes(&body(len)).is_ok(), "{len}");
        assert_eq!(open_bytes(&ring, &body(len)), Err(AmkError::PhotoUnreadable), "{len}");
    }
    assert_eq!(PhotoHeader::from_bytes(&bytes[..H]).unwrap(), *sealed.header());
    assert_eq!(PhotoHeader::from_bytes(&bytes[..H + 1]), Err(DecodeError::TrailingBytes.into()));
    assert_eq!(PhotoHeader::from_bytes(&bytes[..H - 1]), Err(DecodeError::Malformed.into()));
}

#[test]
fn debug_shows_no_secrets() {
    let ring = ring_at(1);
    let mut sealer = PhotoSealer::new(ring.current(), &ALBUM, &mut rng(17)).unwrap();
    sealer.push(b"secret plaintext").unwrap();
    let shown = format!("{sealer:?}");
    assert!(shown.starts_with("PhotoSealer {") && shown.ends_with(".. }"), "{shown}");
    assert!(!shown.contains("115, 101, 99"), "no plaintext bytes: {shown}");
    let opener = PhotoOpener::new(&ring, &ALBUM, sealer.header()).unwrap();
    assert_eq!(format!("{opener:?}"), "PhotoOpener { chunks_opened: 0, .. }");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn sealed_photos_round_trip(len in prop_oneof![0usize..300, (C - 20)..(C + 20), (2 * C)..(3 * C)], seed in any::<u8>(), version in 1u32..4) {
        let ring = ring_at(version);
        let (data, sealed) = seal(&ring, len, seed);
        let bytes = sealed.to_bytes();
        let decoded = SealedPhoto::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&decoded, &sealed);
        prop_assert_eq!(decoded.to_bytes(), bytes);
        prop_assert_eq!(SealedPhoto::from_parts(*sealed.header(), sealed.body().to_vec()).unwrap(), sealed);
        prop_assert_eq!(open_photo(&ring, &ALBUM, &decoded).unwrap().to_vec(), data);
    }

    #[test]
    fn streaming_in_any_pieces(len in 0usize..(3 * C), pieces in proptest::collection::vec(1usize..(2 * S), 1..6), seed in any::<u8>()) {
        let ring = ring_at(1);
        let (data, sealed) = seal(&ring, len, seed);
        let bytes = seal_streaming(&ring, &data, &pieces, seed);
        prop_assert_eq!(&bytes, &sealed.to_bytes());
        prop_assert_eq!(open_streaming(&ring, &bytes, &pieces).unwrap(), data);
    }

    #[test]
    fn decoding_takes_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600), framed in any::<bool>()) {
        let ring = ring_at(1);
        let mut bytes = bytes;
        if framed && !bytes.is_empty() {
            bytes[0] = 1; // past the format byte, into the rest of the decoder
        }
        if let Ok(photo) = SealedPhoto::from_bytes(&bytes) {
            prop_assert_eq!(photo.to_bytes(), bytes.clone());
            prop_assert_eq!(photo.encoded_len(), bytes.len());
            prop_assert!(open_photo(&ring, &ALBUM, &photo).is_err());
        }
        if let Ok(header) = PhotoHeader::from_bytes(&bytes) {
            prop_assert_eq!(header.to_bytes().to_vec(), bytes.clone());
        }
        prop_assert!(open_streaming(&ring, &bytes, &[7, 100]).is_err());
    }
}
