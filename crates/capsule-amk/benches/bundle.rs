//! Sealing and opening history bundles of 1, 100 and 10,000 versions, against a
//! raw XChaCha20-Poly1305 seal/open of the minimum payload (32-byte key + 4-byte
//! version per entry) measured in the same run; and the sealed size against that minimum.
//! Also sealing and opening a 1 MiB photo (per-photo key, 64 KiB chunks) against
//! one raw AES-256-GCM pass over the same bytes under a fixed key.

#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)] // a benchmark, not library code

use std::hint::black_box;
use std::time::{Duration, Instant};

use aes_gcm::{AeadInOut, Aes256Gcm};
use capsule_amk::*;
use capsule_identity::UserId;
use chacha20::ChaCha20Rng;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand_core::SeedableRng;

const ALBUM: AlbumId = AlbumId::from_bytes([1; 16]);

fn ring(versions: u32) -> AmkKeyring {
    let secret = |n: u32| {
        EpochSecret::from_exporter(
            [n.to_be_bytes(), [0; 4], [0; 4], [0; 4], [0; 4], [0; 4], [0; 4], [0; 4]].concat().try_into().unwrap(),
        )
    };
    let mut ring = AmkKeyring::create(ALBUM, &secret(1)).unwrap();
    for n in 2..=versions {
        ring.rotate(AmkVersion::new(n).unwrap(), &secret(n)).unwrap();
    }
    ring
}

fn mean(mut f: impl FnMut()) -> Duration {
    const RUNS: u32 = 20;
    f();
    let start = Instant::now();
    for _ in 0..RUNS {
        f();
    }
    start.elapsed() / RUNS
}

fn bench(c: &mut Criterion) {
    let meta = AlbumMetadata::new(ALBUM, HistoryPolicy::Full, [UserId::from_bytes([2; 16])].into()).unwrap();
    let key = EpochSecret::from_exporter([9; 32]).bundle_key(&ALBUM).unwrap();
    let raw = XChaCha20Poly1305::new(key.expose_secret().into());
    let mut g = c.benchmark_group("history-bundle");
    for versions in [1u32, 100, 10_000] {
        let ring = ring(versions);
        let mut rng = ChaCha20Rng::from_seed([0; 32]);
        let sealed = seal_for_joiner(&ring, &meta, &key, &mut rng).unwrap();
        let minimum = vec![0u8; 36 * usize::try_from(versions).unwrap()];
        let nonce = XNonce::from([0; 24]);
        let raw_ct = raw.encrypt(&nonce, minimum.as_slice()).unwrap();

        g.bench_with_input(BenchmarkId::new("seal", versions), &versions, |b, _| {
            b.iter(|| seal_for_joiner(black_box(&ring), &meta, &key, &mut rng).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("open", versions), &versions, |b, _| {
            b.iter(|| black_box(&sealed).open(&key, &meta).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("raw aead seal of minimum", versions), &versions, |b, _| {
            b.iter(|| raw.encrypt(&nonce, black_box(minimum.as_slice())).unwrap())
        });

        let seal_t = mean(|| drop(black_box(seal_for_joiner(&ring, &meta, &key, &mut rng).unwrap())));
        let open_t = mean(|| drop(black_box(sealed.open(&key, &meta).unwrap())));
        let raw_seal = mean(|| drop(black_box(raw.encrypt(&nonce, minimum.as_slice()).unwrap())));
        let raw_open = mean(|| drop(black_box(raw.decrypt(&nonce, raw_ct.as_slice()).unwrap())));
        println!(
            "{versions:>6} versions: sealed {} B vs minimum {} B (ratio {:.3}); seal {seal_t:?} (ratio {:.1} vs raw), open {open_t:?} (ratio {:.1} vs raw)",
            sealed.encoded_len(),
            minimum.len(),
            f64::from(u32::try_from(sealed.encoded_len()).unwrap()) / f64::from(u32::try_from(minimum.len()).unwrap()),
            seal_t.as_secs_f64() / raw_seal.as_secs_f64(),
            open_t.as_secs_f64() / raw_open.as_secs_f64(),
        );
    }
    g.finish();
}

fn bench_photo(c: &mut Criterion) {
    let ring = ring(1);
    let photo = vec![0x5A_u8; 1 << 20];
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let sealed = seal_photo(ring.current(), &ALBUM, &photo, &mut rng).unwrap();
    let raw = Aes256Gcm::new(&[7u8; 32].into());
    let nonce = [0u8; 12].into();
    // What `Aead::encrypt` does: copy the plaintext, encrypt it in place, keep the tag.
    let raw_seal = || {
        let mut buffer = photo.clone();
        let tag = raw.encrypt_inout_detached(&nonce, b"", buffer.as_mut_slice().into()).unwrap();
        (buffer, tag)
    };
    let (raw_ct, raw_tag) = raw_seal();
    let raw_open = || {
        let mut buffer = raw_ct.clone();
        raw.decrypt_inout_detached(&nonce, b"", buffer.as_mut_slice().into(), &raw_tag).unwrap();
        buffer
    };

    let mut g = c.benchmark_group("photo-1MiB");
    g.bench_function("seal", |b| b.iter(|| seal_photo(ring.current(), &ALBUM, black_box(&photo), &mut rng).unwrap()));
    g.bench_function("open", |b| b.iter(|| open_photo(&ring, &ALBUM, black_box(&sealed)).unwrap()));
    g.bench_function("raw aes-256-gcm seal", |b| b.iter(|| black_box(raw_seal())));
    g.finish();

    let seal_t = mean(|| drop(black_box(seal_photo(ring.current(), &ALBUM, &photo, &mut rng).unwrap())));
    let open_t = mean(|| drop(black_box(open_photo(&ring, &ALBUM, &sealed).unwrap())));
    let raw_seal_t = mean(|| drop(black_box(raw_seal())));
    let raw_open_t = mean(|| drop(black_box(raw_open())));
    println!(
        "1 MiB photo: sealed {} B vs raw {} B (ratio {:.4}); seal {seal_t:?} (ratio {:.2} vs raw), open {open_t:?} (ratio {:.2} vs raw)",
        sealed.encoded_len(),
        raw_ct.len() + raw_tag.len(),
        f64::from(u32::try_from(sealed.encoded_len()).unwrap())
            / f64::from(u32::try_from(raw_ct.len() + raw_tag.len()).unwrap()),
        seal_t.as_secs_f64() / raw_seal_t.as_secs_f64(),
        open_t.as_secs_f64() / raw_open_t.as_secs_f64(),
    );
}

criterion_group!(benches, bench, bench_photo);
criterion_main!(benches);
