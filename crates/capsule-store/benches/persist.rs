//! One persisted commit apply (SQLite, one transaction) against the same apply
//! on memory storage, as a ratio measured in the same run; and bytes on disk per
//! album member.

#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)] // a benchmark

use std::hint::black_box;
use std::time::{Duration, Instant};

use capsule_amk::{AlbumId, AlbumMetadata, HistoryPolicy};
use capsule_mls::testkit::{Directory, uid};
use capsule_mls::{Album, Change, key_package};
use capsule_store::Store;
use criterion::{Criterion, criterion_group, criterion_main};

const ALBUM: AlbumId = AlbumId::from_bytes([0xD1; 16]);

fn bench(c: &mut Criterion) {
    let measuring = std::env::args().any(|a| a == "--bench");
    let root = std::env::temp_dir().join(format!("capsule-store-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let mut dir = Directory::new(70);
    for u in [1, 2, 3] {
        dir.user(u).unwrap();
    }
    // Alice in memory, Bob twice: one device on memory storage, one on SQLite.
    let alice = dir.device(uid(1)).unwrap();
    let bob_mem = dir.device(uid(2)).unwrap();
    let bob_disk = dir.device(uid(2)).unwrap();
    let store = Store::open(&root.join("bob.db"), &capsule_store::DatabaseKey::from_bytes(&[0x5D; 32])).unwrap();
    let meta = AlbumMetadata::new(ALBUM, HistoryPolicy::Full, [uid(1)].into()).unwrap();
    let mut a = Album::create(&alice.provider, &alice.me, meta).unwrap();
    let kps = vec![bob_mem.key_package().unwrap(), store.with_provider(|p| key_package(p, &bob_disk.me)).unwrap()];
    let out = a
        .stage(&alice.provider, &alice.me, &Change::AddUser { user: uid(2), directory: kps }, dir.validation())
        .unwrap();
    a.confirm(&alice.provider).unwrap();
    let (w, b) = (out.welcome.unwrap(), out.bundle.unwrap());
    let mut bm = Album::join(&bob_mem.provider, &w, &b, dir.validation()).unwrap();
    store.join_album(&w, &b, dir.validation()).unwrap();

    let mut next_commit = || {
        let out = a.stage(&alice.provider, &alice.me, &Change::RotateAmk, dir.validation()).unwrap();
        a.confirm(&alice.provider).unwrap();
        out.commit
    };
    let (mut t_mem, mut t_disk, mut runs) = (Duration::ZERO, Duration::ZERO, 0u32);
    let mut g = c.benchmark_group("apply-commit");
    g.sample_size(10);
    g.bench_function("memory + sqlite, one rotation each", |bch| {
        bch.iter(|| {
            let commit = next_commit();
            let start = Instant::now();
            black_box(bm.process(&bob_mem.provider, &commit, dir.validation()).unwrap());
            t_mem += start.elapsed();
            let start = Instant::now();
            black_box(store.with_album(ALBUM, |al, p| al.process(p, &commit, dir.validation())).unwrap());
            t_disk += start.elapsed();
            runs += 1;
        })
    });
    g.finish();
    if measuring && runs > 0 {
        println!(
            "commit apply: SQLite {:?} vs memory {:?}: ratio {:.2} ({runs} commits)",
            t_disk / runs,
            t_mem / runs,
            t_disk.as_secs_f64() / t_mem.as_secs_f64()
        );
    }

    // Bytes on disk per member: the same store before and after 20 more devices join.
    let before = store.size_on_disk().unwrap();
    let joiners: Vec<Vec<u8>> = (0..20).map(|_| dir.device(uid(3)).unwrap().key_package().unwrap()).collect();
    let commit = {
        let add = Change::AddUser { user: uid(3), directory: joiners };
        let out = a.stage(&alice.provider, &alice.me, &add, dir.validation()).unwrap();
        a.confirm(&alice.provider).unwrap();
        out.commit
    };
    store.with_album(ALBUM, |al, p| al.process(p, &commit, dir.validation())).unwrap();
    let after = store.size_on_disk().unwrap();
    println!(
        "bytes on disk per album member: {} ({} B for 3 members, {} B for 23)",
        (after - before) / 20,
        before,
        after
    );
    let _ = std::fs::remove_dir_all(&root);
}

criterion_group!(benches, bench);
criterion_main!(benches);
