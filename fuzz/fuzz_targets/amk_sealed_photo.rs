//! Fuzz `SealedPhoto::from_bytes`: never panics; whatever it accepts is canonical
//! and never opens (the fuzzer cannot forge AES-GCM tags).
#![no_main]

use capsule_amk::{AlbumId, AmkKeyring, EpochSecret, SealedPhoto};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = SealedPhoto::from_bytes(data) {
        assert_eq!(value.to_bytes(), data);
        assert_eq!(value.encoded_len(), data.len());
        assert_eq!(value.chunks().map(<[u8]>::len).sum::<usize>(), value.body().len());
        let album = AlbumId::from_bytes([7; 16]);
        if let Ok(ring) = AmkKeyring::create(album, &EpochSecret::from_exporter([1; 32])) {
            assert!(value.open(&ring, &album).is_err());
        }
    }
});
