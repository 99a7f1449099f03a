//! Property tests: random rotations, joins and manifest checks keep the keyring
//! invariants; every encoding round-trips and decoders take arbitrary bytes.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use capsule_amk::*;
use capsule_identity::UserId;
use chacha20::ChaCha20Rng;
use proptest::prelude::*;
use rand_core::SeedableRng;

const ALBUM: AlbumId = AlbumId::from_bytes([3; 16]);

fn secret(n: u32, salt: u8) -> EpochSecret {
    let mut b = [salt; 32];
    b[..4].copy_from_slice(&n.to_be_bytes());
    EpochSecret::from_exporter(b)
}

fn policy() -> impl Strategy<Value = HistoryPolicy> {
    prop_oneof![
        Just(HistoryPolicy::Full),
        (1u32..6).prop_map(|n| HistoryPolicy::Capped { last: NonZeroU32::new(n).unwrap() })
    ]
}

#[derive(Debug, Clone)]
enum Op {
    /// The album rotates; every device applies it.
    Rotate,
    /// Device `i` replays a rotation it holds, with the right or a wrong secret.
    Replay { device: usize, back: u32, forged: bool },
    /// Device `i` adds a new device.
    Join { device: usize },
    /// Device `i` checks a manifest `ahead` versions past its ceiling (may be negative).
    Manifest { device: usize, ahead: i8 },
    /// The chain attests a ceiling to device `i`.
    Attest { device: usize, delta: i8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Rotate),
        1 => (any::<usize>(), 0u32..4, any::<bool>()).prop_map(|(device, back, forged)| Op::Replay { device, back, forged }),
        2 => any::<usize>().prop_map(|device| Op::Join { device }),
        2 => (any::<usize>(), -3i8..3).prop_map(|(device, ahead)| Op::Manifest { device, ahead }),
        1 => (any::<usize>(), -3i8..3).prop_map(|(device, delta)| Op::Attest { device, delta }),
    ]
}

fn shift(v: AmkVersion, by: i8) -> Option<AmkVersion> {
    AmkVersion::new(v.get().checked_add_signed(i32::from(by))?)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_histories_keep_the_invariants(policy in policy(), ops in proptest::collection::vec(op(), 1..60)) {
        let meta = AlbumMetadata::new(ALBUM, policy, [UserId::from_bytes([1; 16])].into()).unwrap();
        let mut devices = vec![AmkKeyring::create(ALBUM, &secret(1, 0)).unwrap()];
        // The one key every version ever had, as first derived.
        let mut truth: BTreeMap<AmkVersion, [u8; 32]> = BTreeMap::new();
        let mut rng = ChaCha20Rng::from_seed([9; 32]);
        let mut joins = 0u8;
        for op in ops {
            let before: Vec<_> = devices.iter().map(|d| (d.current_version(), d.ceiling())).collect();
            match op {
                Op::Rotate => {
                    let next = devices[0].current_version().next().unwrap();
                    for d in &mut devices {
                        d.rotate(next, &secret(next.get(), 0)).unwrap();
                    }
                }
                Op::Replay { device, back, forged } => {
                    let n = devices.len();
                    let d = &mut devices[device % n];
                    let snapshot = d.duplicate();
                    if let Some(target) = AmkVersion::new(d.current_version().get().saturating_sub(back)) {
                        let result = d.rotate(target, &secret(target.get(), u8::from(forged)));
                        let withheld = target < d.first_held();
                        prop_assert_eq!(result.is_ok(), !forged && !withheld, "replay v{} forged={}", target.get(), forged);
                        prop_assert_eq!(&*d, &snapshot, "a replay never changes the keyring");
                    }
                }
                Op::Join { device } => {
                    joins = joins.wrapping_add(1);
                    let key = secret(1000, joins).bundle_key(&ALBUM).unwrap();
                    let from = &devices[device % devices.len()];
                    match seal_for_joiner(from, &meta, &key, &mut rng) {
                        Ok(sealed) => {
                            let joined = sealed.open(&key, &meta).unwrap();
                            prop_assert_eq!(joined.first_held(), policy.entitled_from(from.current_version()));
                            prop_assert_eq!(joined.current(), from.current());
                            devices.push(joined);
                        }
                        // Only a device that was itself withheld versions may be unable to serve them.
                        Err(AmkError::NotHeld(v)) => prop_assert!(v < from.first_held()),
                        Err(e) => prop_assert!(false, "join failed: {e}"),
                    }
                }
                Op::Manifest { device, ahead } => {
                    let d = &devices[device % devices.len()];
                    if let Some(claimed) = shift(d.ceiling(), ahead) {
                        prop_assert_eq!(d.check_manifest(claimed).is_ok(), ahead <= 0);
                    }
                }
                Op::Attest { device, delta } => {
                    let i = device % devices.len();
                    if let Some(v) = shift(devices[i].ceiling(), delta) {
                        devices[i].attest_ceiling(v);
                    }
                }
            }
            for (i, d) in devices.iter().enumerate() {
                // Monotonic versions, ceiling never lowers and covers the current version.
                if let Some((cur, ceil)) = before.get(i) {
                    prop_assert!(d.current_version() >= *cur);
                    prop_assert!(d.ceiling() >= *ceil);
                }
                prop_assert!(d.ceiling() >= d.current_version());
                // No version ever changes its key, on any device.
                for (v, amk) in d.held() {
                    let k = *truth.entry(v).or_insert(*amk.expose_secret());
                    prop_assert_eq!(&k, amk.expose_secret(), "v{} has two keys", v.get());
                }
                prop_assert_eq!(d.held().count(), usize::try_from(d.current_version().get() - d.first_held().get() + 1).unwrap());
            }
        }
    }

    #[test]
    fn metadata_round_trips(policy in policy(), admins in proptest::collection::btree_set(any::<[u8; 16]>(), 1..5), album in any::<[u8; 16]>()) {
        let m = AlbumMetadata::new(AlbumId::from_bytes(album), policy, admins.into_iter().map(UserId::from_bytes).collect()).unwrap();
        let bytes = m.to_bytes().unwrap();
        prop_assert_eq!(&AlbumMetadata::from_bytes(&bytes).unwrap(), &m);
    }

    #[test]
    fn keyring_and_bundles_round_trip(policy in policy(), rotations in 0u32..20, seed in any::<[u8; 32]>()) {
        let mut ring = AmkKeyring::create(ALBUM, &secret(1, seed[0])).unwrap();
        for n in 2..=rotations + 1 {
            ring.rotate(AmkVersion::new(n).unwrap(), &secret(n, seed[0])).unwrap();
        }
        let bytes = ring.to_bytes().unwrap();
        prop_assert_eq!(&AmkKeyring::from_bytes(&bytes).unwrap(), &ring);
        let meta = AlbumMetadata::new(ALBUM, policy, [UserId::from_bytes([1; 16])].into()).unwrap();
        let bundle = HistoryBundle::for_joiner(&ring, &meta).unwrap();
        prop_assert_eq!(&HistoryBundle::from_bytes(&bundle.to_bytes().unwrap()).unwrap(), &bundle);
        let sealed = bundle.seal(&secret(0, 0).bundle_key(&ALBUM).unwrap(), &mut ChaCha20Rng::from_seed(seed)).unwrap();
        prop_assert_eq!(&SealedBundle::from_bytes(&sealed.to_bytes().unwrap()).unwrap(), &sealed);
    }

    #[test]
    fn decoders_take_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(m) = AlbumMetadata::from_bytes(&bytes) {
            prop_assert_eq!(m.to_bytes().unwrap(), bytes.clone());
        }
        if let Ok(r) = AmkKeyring::from_bytes(&bytes) {
            prop_assert_eq!(r.to_bytes().unwrap().to_vec(), bytes.clone());
            prop_assert!(r.ceiling() >= r.current_version());
        }
        if let Ok(b) = HistoryBundle::from_bytes(&bytes) {
            prop_assert_eq!(b.to_bytes().unwrap().to_vec(), bytes.clone());
        }
        if let Ok(s) = SealedBundle::from_bytes(&bytes) {
            prop_assert_eq!(s.to_bytes().unwrap(), bytes.clone());
        }
    }
}
