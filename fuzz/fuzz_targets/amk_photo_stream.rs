//! Fuzz `PhotoOpener` (a sealed photo streamed from the server, cut wherever
//! the network cuts it) and `PhotoHeader::from_bytes`, against a real photo
//! of two full chunks and a short last one.
//!
//! An input is `[mode, rest]`:
//! - mode 0: `rest` is a list of cut lengths (u16 little endian): the photo
//!   streamed in those pieces opens to exactly its plaintext;
//! - mode 1: `rest` is `[n, script of n 4-byte instructions, cuts]`: the photo
//!   edited (`capsule_fuzz::edit`) and streamed; whatever is released is a
//!   prefix of the plaintext, it opens only if unchanged, and one-shot
//!   `SealedPhoto::open` agrees;
//! - otherwise `rest` is a sealed photo from outside, streamed whole:
//!   streaming and one-shot `SealedPhoto::open` agree on it.
#![no_main]

use capsule_amk::{AlbumId, AmkKeyring, EpochSecret, PhotoHeader, PhotoOpener, SealedPhoto, seal_photo};
use capsule_fuzz::edit;
use chacha20::ChaCha20Rng;
use libfuzzer_sys::fuzz_target;
use rand_core::SeedableRng as _;

const ALBUM: AlbumId = AlbumId::from_bytes([0xE1; 16]);

struct Fixture {
    ring: AmkKeyring,
    plaintext: Vec<u8>,
    sealed: Vec<u8>,
}

fn fixture() -> Fixture {
    let ring = AmkKeyring::create(ALBUM, &EpochSecret::from_exporter([3; 32])).expect("keyring");
    let plaintext: Vec<u8> =
        (0..2 * SealedPhoto::CHUNK_SIZE + 700).map(|i| u8::try_from(i % 251).unwrap_or(0)).collect();
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let sealed = seal_photo(ring.current(), &ALBUM, &plaintext, &mut rng).expect("seal").to_bytes();
    Fixture { ring, plaintext, sealed }
}

thread_local! {
    static FIXTURE: Fixture = fixture();
}

/// Streams `sealed` in pieces of the lengths `cuts` gives (the rest in one
/// piece): what was released, and whether the photo opened.
fn stream(fx: &Fixture, sealed: &[u8], cuts: &[u8]) -> (Vec<u8>, bool) {
    let Some((header, mut body)) = sealed.split_at_checked(PhotoHeader::LEN) else { return (Vec::new(), false) };
    let Ok(header) = PhotoHeader::from_bytes(header) else { return (Vec::new(), false) };
    assert_eq!(header.to_bytes().as_slice(), sealed.get(..PhotoHeader::LEN).unwrap_or_default());
    let Ok(mut opener) = PhotoOpener::new(&fx.ring, &ALBUM, &header) else { return (Vec::new(), false) };
    let mut released = Vec::new();
    for cut in cuts.chunks_exact(2) {
        let len =
            usize::from(u16::from_le_bytes([cut.first().copied().unwrap_or(0), cut.get(1).copied().unwrap_or(0)]));
        let (piece, rest) = body.split_at(len.min(body.len()));
        body = rest;
        match opener.push(piece) {
            Ok(out) => released.extend_from_slice(&out),
            Err(_) => return (released, false),
        }
    }
    match opener.push(body) {
        Ok(out) => released.extend_from_slice(&out),
        Err(_) => return (released, false),
    }
    match opener.finish() {
        Ok(out) => {
            released.extend_from_slice(&out);
            (released, true)
        }
        Err(_) => (released, false),
    }
}

fuzz_target!(|data: &[u8]| FIXTURE.with(|fx| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode {
        0 => {
            let (released, opened) = stream(fx, &fx.sealed, rest);
            assert!(opened, "the real photo did not open in pieces");
            assert!(released == fx.plaintext, "the real photo opened to something else");
        }
        1 => {
            let Some((&n, rest)) = rest.split_first() else { return };
            let (script, cuts) = rest.split_at((usize::from(n) * 4).min(rest.len()));
            let sealed = edit::apply(&fx.sealed, script);
            let (released, opened) = stream(fx, &sealed, cuts);
            assert!(fx.plaintext.starts_with(&released), "released plaintext the photo does not hold");
            assert_eq!(opened, sealed == fx.sealed, "an edited photo opened, or the real one did not");
            let whole = SealedPhoto::from_bytes(&sealed).and_then(|p| p.open(&fx.ring, &ALBUM));
            assert_eq!(whole.is_ok(), opened, "streaming and one-shot opening disagree");
        }
        _ => {
            // Anything sealed under the fixture's key opens (the seeds hold two
            // such photos): streaming and one-shot opening must agree on it.
            let (released, opened) = stream(fx, rest, &[]);
            let whole = SealedPhoto::from_bytes(rest).and_then(|p| p.open(&fx.ring, &ALBUM));
            match whole {
                Ok(plaintext) => {
                    assert!(opened, "one-shot opening took a photo streaming refused");
                    assert!(*plaintext == released, "streaming and one-shot opening disagree");
                }
                Err(_) => assert!(!opened, "streaming took a photo one-shot opening refused"),
            }
        }
    }
}));
