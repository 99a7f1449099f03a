//! Certificate sign and verify against the raw primitives (Ed25519 verify +
//! ML-DSA-65 verify) measured in the same run. Run once per backend:
//! `cargo bench -p capsule-identity` and again with `--features libcrux-ml-dsa`.

#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)] // a benchmark, not library code

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use capsule_identity::*;
use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signer as _, Verifier as _};

const BACKEND: &str = if cfg!(feature = "libcrux-ml-dsa") { "libcrux" } else { "rustcrypto" };

struct Setup {
    identity: IdentityKeyPair,
    claims: DeviceClaims,
    cert: DeviceCertificate,
    trust: BTreeMap<UserId, IdentityPublicKey>,
    ed: ed25519_dalek::SigningKey,
    ml: ml_dsa::ExpandedSigningKey<ml_dsa::MlDsa65>,
}

fn setup() -> Setup {
    let identity = IdentityKeyPair::from_seed(&IdentitySeed::from_bytes([1; 32])).unwrap();
    let device = DeviceSigningKey::from_secret_bytes(&[2; 32]);
    let claims = DeviceClaims {
        user: UserId::from_bytes([3; 16]),
        device: DeviceId::from_bytes([4; 16]),
        device_key: device.public_key(),
        validity: Validity::new(UnixTime(0), UnixTime(u64::MAX)).unwrap(),
    };
    let cert = identity.certify_device(&claims).unwrap();
    let trust = BTreeMap::from([(claims.user, identity.public_key().clone())]);
    let ed = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let ml = ml_dsa::ExpandedSigningKey::<ml_dsa::MlDsa65>::from_seed(&[6; 32].into());
    Setup { identity, claims, cert, trust, ed, ml }
}

/// Mean time of `f` over a fixed number of runs, for the printed ratios.
fn mean(mut f: impl FnMut()) -> Duration {
    const RUNS: u32 = 200;
    f();
    let start = Instant::now();
    for _ in 0..RUNS {
        f();
    }
    start.elapsed() / RUNS
}

fn bench(c: &mut Criterion) {
    let s = setup();
    let msg = [7u8; 100];
    let ed_sig = s.ed.sign(&msg);
    let ed_vk = s.ed.verifying_key();
    let ml_sig = s.ml.sign_deterministic(&msg, b"ctx").unwrap();
    let ml_vk = s.ml.verifying_key();
    let key = s.claims.device_key;

    let mut g = c.benchmark_group(format!("certificate/{BACKEND}"));
    g.bench_function("sign", |b| b.iter(|| s.identity.certify_device(black_box(&s.claims)).unwrap()));
    g.bench_function("verify", |b| b.iter(|| s.cert.verify(black_box(&key), UnixTime(1), &s.trust).unwrap()));
    g.bench_function("raw ed25519 verify", |b| b.iter(|| ed_vk.verify(black_box(&msg), &ed_sig).unwrap()));
    g.bench_function("raw ml-dsa-65 verify (rustcrypto)", |b| {
        b.iter(|| assert!(ml_vk.verify_with_context(black_box(&msg), b"ctx", &ml_sig)))
    });
    g.finish();

    let raw = mean(|| {
        ed_vk.verify(black_box(&msg), &ed_sig).unwrap();
        assert!(ml_vk.verify_with_context(black_box(&msg), b"ctx", &ml_sig));
    });
    let verify = mean(|| {
        s.cert.verify(black_box(&key), UnixTime(1), &s.trust).unwrap();
    });
    let raw_sign = mean(|| {
        black_box(s.ed.sign(&msg));
        black_box(s.ml.sign_deterministic(&msg, b"ctx").unwrap());
    });
    let sign = mean(|| {
        black_box(s.identity.certify_device(&s.claims).unwrap());
    });
    println!(
        "[{BACKEND}] certificate verify {verify:?} vs raw Ed25519+ML-DSA verify {raw:?}: ratio {:.2}",
        verify.as_secs_f64() / raw.as_secs_f64()
    );
    println!(
        "[{BACKEND}] certificate sign {sign:?} vs raw Ed25519+ML-DSA sign {raw_sign:?}: ratio {:.2}",
        sign.as_secs_f64() / raw_sign.as_secs_f64()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
