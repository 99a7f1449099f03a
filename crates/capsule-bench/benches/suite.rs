//! The benchmark suite (see the crate docs for the three flavors and the two
//! tree shapes). Criterion ids: group `<suite>.<operation>`, function the
//! flavor, parameter `sparse-N` / `full-N` (or `bytes-N`); `targets.json`
//! says which comparisons have which target and `sizes.json` holds the
//! measured sizes. `cargo xtask bench` runs this and writes the report.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing, clippy::print_stdout, missing_docs)] // a benchmark

use std::hint::black_box;
use std::time::{Duration, Instant};

use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};
use capsule_amk::{AmkKeyring, EpochSecret, open_photo, seal_photo};
use capsule_bench::*;
use capsule_identity::DeviceCertificate;
use capsule_mls::{Album, Change, MemoryProvider};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode};
use openmls::prelude::tls_codec::Serialize as _;
use openmls_traits::OpenMlsProvider as _;
use rand_core::SeedableRng as _;
use serde_json::json;

/// Whether the run's filter (`cargo bench -- FILTER`, a plain substring
/// here) can select something of `group`: the costly fixtures are only built
/// for groups that will run.
fn wanted(group: &str) -> bool {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    filters.is_empty() || filters.iter().any(|f| group.contains(f.trim_start_matches('^')) || f.contains(group))
}

/// A group whose runs are few and long: flat sampling (ten runs, not 55).
fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sampling_mode(SamplingMode::Flat).sample_size(10);
    if quick() {
        g.warm_up_time(Duration::from_millis(100)).measurement_time(Duration::from_millis(300));
    } else {
        g.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    }
    g
}

/// The MLS operations, each in the three flavors on both trees.
const OPERATIONS: [(&str, &str, usize); 5] = [
    ("overhead.rotate_amk", "AMK rotation: stage and merge one commit with a group-context change and a path", 0),
    ("overhead.add_device", "Add a device: stage and merge an add (one KeyPackage certificate verified)", 1),
    ("overhead.remove_device", "Remove a device: stage and merge its removal with the AMK rotation", 0),
    ("overhead.process_commit", "Process another member's AMK rotation (its path leaf's certificate verified)", 1),
    ("overhead.join", "Join from a Welcome (every leaf's certificate verified)", usize::MAX),
];

fn targets() {
    let mut list = Vec::new();
    for (group, title, _) in OPERATIONS {
        list.push(json!({"group": group, "title": title, "subject": "ours", "baseline": "same-bytes",
            "target": {"max_ratio": 1.05}, "x_label": "devices",
            "note": "same-bytes: raw OpenMLS on the same leaf bytes plus the raw signature checks the binding adds"}));
        list.push(json!({"group": group, "title": title, "subject": "ours", "baseline": "basic",
            "target": null, "x_label": "devices", "note": "the price of certificates in the leaves"}));
    }
    list.push(json!({"group": "overhead.join", "title": "Join from a Welcome (every leaf's certificate verified)",
        "subject": "ours-cached", "baseline": "same-bytes", "target": null, "x_label": "devices",
        "note": "ours-cached: a joiner whose trust store has verified these members before (only its own leaf is new)"}));
    list.push(
        json!({"group": "identity.certificate_warm", "title": "Verify a certificate the trust store's cache holds",
        "subject": "ours", "baseline": null, "target": {"max_ns": 2000.0}, "x_label": "certificates",
        "note": "same bytes, same trusted key: a lookup, the key and the time still checked"}),
    );
    for (group, title) in [
        ("overhead.seal_photo", "Seal a 1 MiB photo (64 KiB chunks)"),
        ("overhead.open_photo", "Open a 1 MiB photo (64 KiB chunks)"),
    ] {
        list.push(json!({"group": group, "title": title, "subject": "ours", "baseline": "raw",
            "target": {"max_ratio": 1.05}, "x_label": "bytes",
            "note": "raw: AES-256-GCM over the same chunks under a fixed key"}));
    }
    list.push(json!({"group": "catchup.reconcile", "title": "Catch up on K missed commits (durable store)",
        "subject": "ours", "baseline": "raw", "target": {"min_speedup": 1.3}, "x_label": "missed commits",
        "note": "raw: MlsGroup::load, then process_message + merge_staged_commit per commit on openmls_sqlite_storage (plain SQLite, JSON)"}));
    // The libcrux group is measured by a second build of this suite (the
    // backend is a feature of capsule-identity), in the same xtask run.
    for (group, backend) in [(COLD_RUSTCRYPTO, "RustCrypto"), (COLD_LIBCRUX, "libcrux")] {
        list.push(json!({"group": group, "title": format!("Verify one device certificate ({backend} ML-DSA)"),
            "subject": "ours", "baseline": "raw", "target": {"max_ratio": 1.1}, "x_label": "certificates",
            "note": format!("raw: Ed25519 + {backend} ML-DSA-65 verify of a certificate-sized message")}));
    }
    list.push(json!({"group": "store.apply", "title": "Apply one commit on the durable store (SQLCipher)",
        "subject": "sqlite", "baseline": "memory", "target": null, "x_label": "devices",
        "note": "memory: the same device's twin on OpenMLS's memory storage"}));
    let dir = out_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("targets.json"), serde_json::to_vec_pretty(&list).unwrap()).unwrap();
}

/// Certificate checks the binding makes for an operation on `n` devices
/// (`usize::MAX`: every leaf of the group joined, the joiner's included).
fn checks(per_op: usize, n: usize) -> usize {
    if per_op == usize::MAX { n + 1 } else { per_op }
}

/// Times `f` from the mark it sets: what comes before is the run's setup.
/// Never inlined, so a profiler can count exactly the timed work
/// (`valgrind --tool=callgrind --toggle-collect='*suite::measure*'`).
#[inline(never)]
fn measure<T>(f: impl FnOnce(&mut dyn FnMut()) -> T) -> Duration {
    let mut start = Instant::now();
    let out = f(&mut || start = Instant::now());
    let elapsed = start.elapsed();
    drop(black_box(out));
    elapsed
}

/// One run of `op` in the wrapper, from the saved state.
fn ours_once(
    op: &str,
    o: &mut OursAlbum,
    saved: &Saved<(Snapshot, Vec<u8>)>,
    kps: &MemoryProvider,
    cached: bool,
) -> Duration {
    o.creator.restore(&saved.creator);
    match op {
        "overhead.rotate_amk" => measure(|go| {
            go();
            stage_confirm(&mut o.creator, &Change::RotateAmk, &o.people)
        }),
        "overhead.add_device" => {
            let kp = capsule_mls::key_package(kps, &o.people.device(1)).unwrap();
            measure(|go| {
                go();
                stage_confirm(&mut o.creator, &Change::AddDevice { key_package: kp }, &o.people)
            })
        }
        "overhead.remove_device" => {
            let change = Change::RemoveDevice { device: o.other.me.device() };
            measure(|go| {
                go();
                stage_confirm(&mut o.creator, &change, &o.people)
            })
        }
        "overhead.process_commit" => {
            o.other.restore(&saved.other);
            let commit = stage_confirm(&mut o.creator, &Change::RotateAmk, &o.people).commit;
            measure(|go| {
                go();
                o.other.album.process(&o.other.provider, &commit, o.people.validation()).unwrap()
            })
        }
        "overhead.join" => {
            let provider = MemoryProvider::in_memory().unwrap();
            let kp = capsule_mls::key_package(&provider, &o.people.device(1)).unwrap();
            let out = stage_confirm(&mut o.creator, &Change::AddDevice { key_package: kp }, &o.people);
            let (welcome, bundle) = (out.welcome.unwrap(), out.bundle.unwrap());
            let validation = if cached { o.people.cached_validation() } else { o.people.validation() };
            measure(|go| {
                go();
                Album::join(&provider, &welcome, &bundle, validation).unwrap()
            })
        }
        _ => unreachable!("{op}"),
    }
}

/// One run of `op` in raw OpenMLS, from the saved state, with `checks` raw
/// certificate verifications timed with it.
fn raw_once(op: &str, r: &mut RawAlbum, saved: &Saved<Snapshot>, checks: usize, run: u32, v: &RawVerify) -> Duration {
    r.creator.restore(&saved.creator);
    let kps = MemoryProvider::in_memory().unwrap();
    match op {
        "overhead.rotate_amk" => {
            let ext = r.rotation(run);
            measure(|go| {
                go();
                raw_commit(&mut r.creator, vec![], vec![], Some(ext), false)
            })
        }
        "overhead.add_device" => {
            // Bytes, as a directory hands them out: parsed and validated in the run.
            let (_, kp) = raw_key_package(&mut r.people, r.flavor, &kps);
            let kp = kp.tls_serialize_detached().unwrap();
            measure(|go| {
                go();
                let kp = validate_key_package(&r.creator.provider, &kp);
                v.run(checks);
                raw_commit(&mut r.creator, vec![kp], vec![], None, false)
            })
        }
        "overhead.remove_device" => {
            let (leaf, ext) = (r.other.group.own_leaf_index(), r.rotation(run));
            measure(|go| {
                go();
                raw_commit(&mut r.creator, vec![], vec![leaf], Some(ext), false)
            })
        }
        "overhead.process_commit" => {
            r.other.restore(&saved.other);
            let ext = r.rotation(run);
            let (commit, _) = raw_commit(&mut r.creator, vec![], vec![], Some(ext), false);
            measure(|go| {
                go();
                v.run(checks);
                raw_process(&mut r.other, &commit)
            })
        }
        "overhead.join" => {
            let (_, kp) = raw_key_package(&mut r.people, r.flavor, &kps);
            let (_, welcome) = raw_commit(&mut r.creator, vec![kp], vec![], None, false);
            let welcome = welcome.unwrap();
            measure(|go| {
                go();
                let group = raw_join(&kps, welcome_of(&welcome));
                v.run(checks);
                group
            })
        }
        _ => unreachable!("{op}"),
    }
}

/// The creator's and `other`'s state, put back before every run.
struct Saved<T> {
    creator: T,
    other: T,
}

fn overhead(c: &mut Criterion, sizes: &mut Vec<serde_json::Value>) {
    if !wanted("overhead.") {
        return;
    }
    let v = RawVerify::new();
    for n in group_sizes() {
        for tree in Tree::ALL {
            let param = tree.param(n);
            let mut ours = OursAlbum::build(n, tree);
            let context = ours.context_bytes();
            let mut raws: Vec<RawAlbum> = [Flavor::SameBytes, Flavor::Basic]
                .into_iter()
                .map(|f| RawAlbum::build(n, tree, f, context.clone()))
                .collect();
            let saved = Saved { creator: ours.creator.save(), other: ours.other.save() };
            let raw_saved: Vec<_> = raws
                .iter()
                .map(|r| Saved { creator: Snapshot::of(&r.creator.provider), other: Snapshot::of(&r.other.provider) })
                .collect();

            // The size of one rotation commit on this tree.
            let commit = stage_confirm(&mut ours.creator, &Change::RotateAmk, &ours.people).commit;
            let full = tree == Tree::Full;
            let level = 2400.0 * f64::from(u32::try_from(n).unwrap()).log2();
            sizes.push(json!({"table": "Commit bytes (AMK rotation)", "series": param.split('-').next(),
                "x": n, "x_label": "devices", "bytes": commit.len(),
                "baseline_bytes": full.then(|| (1600.0 + level).round()), "max_ratio": full.then_some(1.0),
                "note": "baseline: 1.6 KB + 2.4 KB per tree level, for a full X-Wing tree"}));

            // What one rotation writes to storage: every value it adds or changes.
            ours.creator.restore(&saved.creator);
            let before = Snapshot::of(&ours.creator.provider);
            stage_confirm(&mut ours.creator, &Change::RotateAmk, &ours.people);
            let written = Snapshot::of(&ours.creator.provider).written_since(&before);
            sizes.push(json!({"table": "Bytes persisted per commit (AMK rotation, OpenMLS's storage values)",
                "series": param.split('-').next(), "x": n, "x_label": "devices", "bytes": written,
                "baseline_bytes": null, "max_ratio": null,
                "note": "target: grows with log N, not N (values added or changed by the commit)"}));
            // A Welcome, and the ratchet tree it carries.
            let kp = capsule_mls::key_package(&MemoryProvider::in_memory().unwrap(), &ours.people.device(1)).unwrap();
            let out = stage_confirm(&mut ours.creator, &Change::AddDevice { key_package: kp }, &ours.people);
            let tree_bytes = raws[0].creator.group.export_ratchet_tree().tls_serialize_detached().unwrap().len();
            // The same add, raw on the same leaf bytes, with the tree inside
            // the Welcome and without it (the joiner would fetch the tree).
            let mut raw_welcome = |tree_inside: bool| {
                let raw = &mut raws[0];
                let config = join_config_with_tree(tree_inside);
                raw.creator.group.set_configuration(raw.creator.provider.storage(), &config).unwrap();
                let (_, kp) = raw_key_package(&mut raw.people, raw.flavor, &MemoryProvider::in_memory().unwrap());
                // No path, like the wrapper's add.
                let (_, welcome) = raw_commit(&mut raw.creator, vec![kp], vec![], None, false);
                raw.creator.restore(&raw_saved[0].creator);
                welcome.unwrap().len()
            };
            let (raw_with, raw_without) = (raw_welcome(true), raw_welcome(false));
            for (series, bytes) in [
                ("welcome", out.welcome.unwrap().len()),
                ("ratchet tree before the add", tree_bytes),
                ("raw same bytes, tree inside", raw_with),
                ("raw same bytes, without the tree", raw_without),
            ] {
                sizes.push(json!({"table": format!("Welcome bytes ({} tree)", param.split('-').next().unwrap()),
                    "series": series, "x": n, "x_label": "devices", "bytes": bytes, "baseline_bytes": null,
                    "max_ratio": null, "note": "ours carries the ratchet tree; a server holding the public tree could hand it out instead, as the raw Welcome without the tree shows"}));
            }

            let kps = MemoryProvider::in_memory().unwrap();
            for (op, _, per_op) in OPERATIONS {
                let mut g = group(c, op);
                g.bench_function(BenchmarkId::new("ours", &param), |b| {
                    b.iter_custom(|iters| (0..iters).map(|_| ours_once(op, &mut ours, &saved, &kps, false)).sum())
                });
                if op == "overhead.join" {
                    // A joiner that has verified these members before (its
                    // warm-up did): only its own new leaf is checked in full.
                    g.bench_function(BenchmarkId::new("ours-cached", &param), |b| {
                        b.iter_custom(|iters| (0..iters).map(|_| ours_once(op, &mut ours, &saved, &kps, true)).sum())
                    });
                }
                for (r, saved) in raws.iter_mut().zip(&raw_saved) {
                    let checks = if r.flavor == Flavor::SameBytes { checks(per_op, n) } else { 0 };
                    let mut run = 0u32;
                    g.bench_function(BenchmarkId::new(r.flavor.name(), &param), |b| {
                        b.iter_custom(|iters| {
                            (0..iters)
                                .map(|_| {
                                    run += 1;
                                    raw_once(op, r, saved, checks, run, &v)
                                })
                                .sum()
                        })
                    });
                }
                g.finish();
            }
        }
    }
}

/// Sealing and opening a 1 MiB photo against AES-256-GCM over the same
/// 64 KiB chunks (one nonce and tag each) under a fixed key.
fn photo(c: &mut Criterion) {
    let secret = EpochSecret::from_exporter([1; 32]);
    let ring = AmkKeyring::create(ALBUM, &secret).unwrap();
    let photo = vec![0x5A_u8; 1 << 20];
    let mut rng = chacha20::ChaCha20Rng::from_seed([1; 32]);
    let sealed = seal_photo(ring.current(), &ALBUM, &photo, &mut rng).unwrap();
    let raw = Aes256Gcm::new(&[7u8; 32].into());
    const CHUNK: usize = 64 * 1024;
    let raw_seal = || {
        let mut out = photo.clone();
        let tags: Vec<_> = out
            .chunks_mut(CHUNK)
            .enumerate()
            .map(|(i, chunk)| {
                let mut nonce = [0u8; 12];
                nonce[8..].copy_from_slice(&u32::try_from(i).unwrap().to_be_bytes());
                raw.encrypt_inout_detached(&nonce.into(), b"", chunk.into()).unwrap()
            })
            .collect();
        (out, tags)
    };
    let (raw_ct, raw_tags) = raw_seal();
    let raw_open = || {
        let mut out = raw_ct.clone();
        for (i, (chunk, tag)) in out.chunks_mut(CHUNK).zip(&raw_tags).enumerate() {
            let mut nonce = [0u8; 12];
            nonce[8..].copy_from_slice(&u32::try_from(i).unwrap().to_be_bytes());
            raw.decrypt_inout_detached(&nonce.into(), b"", chunk.into(), tag).unwrap();
        }
        out
    };
    let param = format!("bytes-{}", photo.len());
    let mut g = group(c, "overhead.seal_photo");
    g.bench_function(BenchmarkId::new("ours", &param), |b| {
        b.iter(|| seal_photo(ring.current(), &ALBUM, black_box(&photo), &mut rng).unwrap())
    });
    g.bench_function(BenchmarkId::new("raw", &param), |b| b.iter(|| black_box(raw_seal())));
    g.finish();
    let mut g = group(c, "overhead.open_photo");
    g.bench_function(BenchmarkId::new("ours", &param), |b| {
        b.iter(|| open_photo(&ring, &ALBUM, black_box(&sealed)).unwrap())
    });
    g.bench_function(BenchmarkId::new("raw", &param), |b| b.iter(|| black_box(raw_open())));
    g.finish();
}

/// Catching up on `k` missed commits: `reconcile_with_server` on the
/// durable store (SQLCipher) against what a naive OpenMLS integration does,
/// `MlsGroup::load` then `process_message` + `merge_staged_commit` per
/// commit on OpenMLS's own SQLite storage (plain SQLite, JSON values).
fn catchup(c: &mut Criterion) {
    if !wanted("catchup.reconcile") {
        return;
    }
    use capsule::testkit::{ALBUM as FX_ALBUM, Fixture, db_key, user};
    use capsule_identity::{DeviceClaims, DeviceId, DeviceSigningKey, UnixTime, Validity};
    use capsule_resilience::{Change as Intent, ReconcileOutcome};
    use openmls::prelude::{GroupId, MlsGroup};
    use openmls_sqlite_storage::SqliteStorageProvider;

    type RawProvider =
        capsule_mls::CapsuleProvider<SqliteStorageProvider<capsule_store::JsonCodec, rusqlite::Connection>>;
    let open_raw = |path: &std::path::Path| -> RawProvider {
        let mut storage = SqliteStorageProvider::new(rusqlite::Connection::open(path).unwrap());
        storage.run_migrations().unwrap();
        capsule_mls::CapsuleProvider::new(storage).unwrap()
    };
    let files = |path: &std::path::Path| {
        ["", "-wal", "-shm", "-journal"].map(|s| std::path::PathBuf::from(format!("{}{s}", path.display())))
    };
    let copy = |from: &std::path::Path, to: &std::path::Path| {
        for (f, t) in files(from).iter().zip(files(to)) {
            let _ = std::fs::remove_file(&t);
            if f.exists() {
                std::fs::copy(f, t).unwrap();
            }
        }
    };

    // Alice (admin), Bob on the durable store, and Bob's raw twin (a device
    // of Bob's with a real certificate) on OpenMLS's SQLite storage.
    let mut fx = Fixture::new().unwrap();
    let alice = fx.enroll(1, 1).unwrap();
    let bob = fx.enroll(2, 2).unwrap();
    let twin_path = fx.path("twin");
    let twin = open_raw(&twin_path);
    let key = DeviceSigningKey::generate().unwrap();
    let claims = DeviceClaims {
        user: user(2),
        device: DeviceId::from_bytes([3; 16]),
        device_key: key.public_key(),
        validity: Validity::new(UnixTime(0), UnixTime(u64::MAX)).unwrap(),
    };
    let certificate = fx.identity(2).unwrap().certify_device(&claims).unwrap();
    let twin_device = capsule_mls::DeviceIdentity::new(key, certificate).unwrap();
    let twin_kp = capsule_mls::key_package(&twin, &twin_device).unwrap();
    alice.create_album(FX_ALBUM, capsule_amk::HistoryPolicy::Full, [user(1)].into()).unwrap();
    let directory = vec![bob.key_package().unwrap(), twin_kp];
    alice.propose(FX_ALBUM, Intent::AddUser { user: user(2), directory }).unwrap();
    fx.sync(&alice).unwrap();
    fx.join(&bob).unwrap();
    let (welcome, _) = fx.newest_welcome().unwrap();
    drop(raw_join(&twin, welcome_of(&welcome)));
    drop((bob, twin));
    let (bob_path, bob_saved, twin_saved) = (fx.path("user2-device2"), fx.path("bob-saved"), fx.path("twin-saved"));
    copy(&bob_path, &bob_saved);
    copy(&twin_path, &twin_saved);
    let from = u64::try_from(fx.server.entries(FX_ALBUM.as_bytes()).len()).unwrap();

    let ks: &[u64] = if quick() { &[1, 10] } else { &[1, 10, 100, 1000] };
    let mut made = 0;
    let mut g = group(c, "catchup.reconcile");
    for &k in ks {
        for _ in made..k {
            alice.propose(FX_ALBUM, Intent::RotateAmk).unwrap();
            fx.sync(&alice).unwrap();
        }
        made = k;
        let param = format!("k-{k}");
        g.bench_function(BenchmarkId::new("ours", &param), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        copy(&bob_saved, &bob_path);
                        let bob = capsule::Device::open(&bob_path, &db_key()).unwrap();
                        let mut chain = fx.chain();
                        let start = Instant::now();
                        let outcome = bob.reconcile_with_server(FX_ALBUM, &mut chain, fx.validation()).unwrap();
                        let elapsed = start.elapsed();
                        let ReconcileOutcome::Reconciled { applied_commits } = outcome else { panic!("{outcome:?}") };
                        assert_eq!(u64::try_from(applied_commits.len()).unwrap(), k);
                        elapsed
                    })
                    .sum()
            })
        });
        g.bench_function(BenchmarkId::new("raw", &param), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        copy(&twin_saved, &twin_path);
                        let provider = open_raw(&twin_path);
                        let entries = fx.server.entries(FX_ALBUM.as_bytes());
                        let start = Instant::now();
                        let id = GroupId::from_slice(FX_ALBUM.as_bytes());
                        let mut group = MlsGroup::load(provider.storage(), &id).unwrap().unwrap();
                        for entry in entries.iter().skip(usize::try_from(from).unwrap()) {
                            raw_process_with(&provider, &mut group, &entry.commit);
                        }
                        start.elapsed()
                    })
                    .sum()
            })
        });
    }
    g.finish();
}

const COLD_RUSTCRYPTO: &str = "identity.certificate_cold";
const COLD_LIBCRUX: &str = "identity.certificate_cold_libcrux";

/// One certificate check from its bytes, cold (decoded and verified) against
/// the raw Ed25519 + ML-DSA-65 verifications on the same ML-DSA backend, and
/// warm (the trust store's cache holds it; the default build only, since no
/// ML-DSA runs then).
fn identity(c: &mut Criterion) {
    let cold = if cfg!(feature = "libcrux-ml-dsa") { COLD_LIBCRUX } else { COLD_RUSTCRYPTO };
    if !wanted(cold) && !wanted("identity.certificate_warm") {
        return;
    }
    let mut people = People::new();
    let device = people.device(1);
    let certificate = device.certificate().clone();
    let key = certificate.device_key();
    let v = RawVerify::new();
    let bytes = certificate.to_bytes().unwrap();
    let mut g = group(c, cold);
    g.bench_function(BenchmarkId::new("ours", "certificates-1"), |b| {
        b.iter(|| DeviceCertificate::verify_bytes(black_box(&bytes), key, NOW, &people.trust).unwrap())
    });
    g.bench_function(BenchmarkId::new("raw", "certificates-1"), |b| b.iter(|| v.run(1)));
    g.finish();
    if cfg!(feature = "libcrux-ml-dsa") {
        return;
    }
    let mut g = group(c, "identity.certificate_warm");
    DeviceCertificate::verify_bytes(&bytes, key, NOW, &people.cached).unwrap();
    g.bench_function(BenchmarkId::new("ours", "certificates-1"), |b| {
        b.iter(|| DeviceCertificate::verify_bytes(black_box(&bytes), key, NOW, &people.cached).unwrap())
    });
    g.finish();
}

/// One commit applied by a device on the durable store (SQLCipher, one
/// transaction) against the same device's twin on memory storage.
fn store(c: &mut Criterion, sizes: &mut Vec<serde_json::Value>) {
    if !wanted("store.apply") {
        return;
    }
    let root = std::env::temp_dir().join(format!("capsule-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    // What a device's database holds for an album, per member: one fresh
    // store joins an album of n devices (and holds nothing else).
    for n in group_sizes() {
        let mut album = OursAlbum::build(n, Tree::Sparse);
        let path = root.join(format!("size-{n}.db"));
        let store = capsule_store::Store::open(&path, &capsule_store::DatabaseKey::from_bytes(&[0x5D; 32])).unwrap();
        let device = album.people.device(1);
        store.save_device(&device).unwrap();
        let kp = store.with_provider(|p| capsule_mls::key_package(p, &device)).unwrap();
        let out = stage_confirm(&mut album.creator, &Change::AddDevice { key_package: kp }, &album.people);
        store.join_album(&out.welcome.unwrap(), &out.bundle.unwrap(), album.people.validation()).unwrap();
        drop(store);
        let bytes = std::fs::metadata(&path).unwrap().len();
        let members = u64::try_from(n + 1).unwrap();
        sizes.push(
            json!({"table": "Device database per album member (SQLCipher, one album)", "series": "bytes per member",
            "x": members, "x_label": "devices", "bytes": bytes / members, "baseline_bytes": null, "max_ratio": null,
            "note": "the database file after joining, divided by the album's devices"}),
        );
    }
    let mut album = OursAlbum::build(2, Tree::Sparse);
    let store =
        capsule_store::Store::open(&root.join("bob.db"), &capsule_store::DatabaseKey::from_bytes(&[0x5D; 32])).unwrap();
    let disk_device = album.people.device(1);
    store.save_device(&disk_device).unwrap();
    let kp = store.with_provider(|p| capsule_mls::key_package(p, &disk_device)).unwrap();
    let out = stage_confirm(&mut album.creator, &Change::AddDevice { key_package: kp }, &album.people);
    store.join_album(&out.welcome.unwrap(), &out.bundle.unwrap(), album.people.validation()).unwrap();
    album.other.album.process(&album.other.provider, &out.commit, album.people.validation()).unwrap();
    let mut g = group(c, "store.apply");
    for subject in ["memory", "sqlite"] {
        g.bench_function(BenchmarkId::new(subject, "devices-3"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let commit = stage_confirm(&mut album.creator, &Change::RotateAmk, &album.people).commit;
                        let v = album.people.validation();
                        let mut memory = || album.other.album.process(&album.other.provider, &commit, v).unwrap();
                        let disk = || store.with_album(ALBUM, |a, p| a.process(p, &commit, v)).unwrap();
                        let start = Instant::now();
                        if subject == "memory" {
                            black_box(memory());
                            let elapsed = start.elapsed();
                            black_box(disk());
                            elapsed
                        } else {
                            black_box(disk());
                            let elapsed = start.elapsed();
                            black_box(memory());
                            elapsed
                        }
                    })
                    .sum()
            })
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&root);
}

/// Sizes that do not depend on the tree: the bytes a certificate adds to a
/// leaf, and a joiner's Welcome with a history of `k` AMK versions against
/// the minimum (the Welcome alone plus 40 bytes per version).
fn fixed_sizes(sizes: &mut Vec<serde_json::Value>) {
    let mut people = People::new();
    let provider = MemoryProvider::in_memory().unwrap();
    for flavor in [Flavor::SameBytes, Flavor::Basic] {
        let (_, kp) = raw_key_package(&mut people, flavor, &provider);
        let leaf = kp.leaf_node().tls_serialize_detached().unwrap().len();
        let series = if flavor == Flavor::Basic { "basic credential" } else { "device certificate" };
        sizes.push(json!({"table": "Leaf node bytes", "series": series, "x": 1, "x_label": "leaf", "bytes": leaf,
            "baseline_bytes": null, "max_ratio": null, "note": "the difference is what the binding adds per leaf"}));
    }
    let ks: &[u32] = if quick() { &[1, 100] } else { &[1, 100, 1000] };
    let mut album = OursAlbum::build(2, Tree::Sparse);
    let mut versions = 1;
    for &k in ks {
        while versions < k {
            stage_confirm(&mut album.creator, &Change::RotateAmk, &album.people);
            versions += 1;
        }
        let saved = album.creator.save();
        let kp = capsule_mls::key_package(&MemoryProvider::in_memory().unwrap(), &album.people.device(1)).unwrap();
        let out = stage_confirm(&mut album.creator, &Change::AddDevice { key_package: kp }, &album.people);
        album.creator.restore(&saved);
        let (welcome, bundle) = (out.welcome.unwrap().len(), out.bundle.unwrap().len());
        sizes.push(json!({"table": "Welcome with full history", "series": "welcome + history bundle", "x": k,
            "x_label": "AMK versions", "bytes": welcome + bundle, "baseline_bytes": welcome + 40 * usize::try_from(k).unwrap(),
            "max_ratio": null, "note": "baseline: the Welcome alone plus 40 bytes per version"}));
    }
}

/// `CAPSULE_BENCH_PROFILE="<operation> <flavor> <tree> <n> <runs>"` (e.g.
/// `overhead.add_device ours sparse 2 20`): only that, `runs` times, for a
/// profiler; no criterion, no files.
fn profile(spec: &str) {
    let parts: Vec<&str> = spec.split_whitespace().collect();
    let [op, flavor, tree, n, runs] = parts[..] else { panic!("CAPSULE_BENCH_PROFILE: {spec}") };
    let (n, runs): (usize, u32) = (n.parse().unwrap(), runs.parse().unwrap());
    let tree = if tree == "full" { Tree::Full } else { Tree::Sparse };
    let mut ours = OursAlbum::build(n, tree);
    let mut spent = Duration::ZERO;
    if flavor == "ours" {
        let saved = Saved { creator: ours.creator.save(), other: ours.other.save() };
        let kps = MemoryProvider::in_memory().unwrap();
        for _ in 0..runs {
            spent += ours_once(op, &mut ours, &saved, &kps, false);
        }
    } else {
        let flavor = if flavor == "basic" { Flavor::Basic } else { Flavor::SameBytes };
        let mut r = RawAlbum::build(n, tree, flavor, ours.context_bytes());
        let saved = Saved { creator: Snapshot::of(&r.creator.provider), other: Snapshot::of(&r.other.provider) };
        let checks =
            if flavor == Flavor::SameBytes { checks(OPERATIONS.iter().find(|o| o.0 == op).unwrap().2, n) } else { 0 };
        let v = RawVerify::new();
        for run in 0..runs {
            spent += raw_once(op, &mut r, &saved, checks, run + 1, &v);
        }
    }
    println!("{spec}: {:?} per run", spent / runs);
}

fn main() {
    if let Some(spec) = std::env::var_os("CAPSULE_BENCH_PROFILE") {
        return profile(&spec.to_string_lossy());
    }
    let mut c = Criterion::default().configure_from_args();
    if cfg!(feature = "libcrux-ml-dsa") {
        // The second build: the certificate check only (the ceremonies'
        // checks stay measured on the default backend), and none of the
        // first build's files rewritten.
        identity(&mut c);
        return c.final_summary();
    }
    targets();
    let mut sizes = Vec::new();
    fixed_sizes(&mut sizes);
    overhead(&mut c, &mut sizes);
    photo(&mut c);
    identity(&mut c);
    store(&mut c, &mut sizes);
    catchup(&mut c);
    std::fs::write(out_dir().join("sizes.json"), serde_json::to_vec_pretty(&sizes).unwrap()).unwrap();
    c.final_summary();
}
