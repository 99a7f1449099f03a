//! AMK keyrings and history bundles: what joiners receive, the ceiling, removal.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code

mod common;

use std::num::NonZeroU32;

use capsule_amk::*;
use capsule_identity::UserId;
use chacha20::ChaCha20Rng;
use rand_core::SeedableRng;

use common::{ALBUM, epoch_secret, v};

fn meta(policy: HistoryPolicy) -> AlbumMetadata {
    AlbumMetadata::new(ALBUM, policy, [UserId::from_bytes([1; 16])].into()).unwrap()
}

fn capped(n: u32) -> HistoryPolicy {
    HistoryPolicy::Capped { last: NonZeroU32::new(n).unwrap() }
}

/// A keyring that has seen versions 1..=current.
fn ring_at(current: u32) -> AmkKeyring {
    let mut ring = AmkKeyring::create(ALBUM, &epoch_secret(1)).unwrap();
    for n in 2..=current {
        ring.rotate(v(n), &epoch_secret(n)).unwrap();
    }
    ring
}

fn bundle_key() -> BundleKey {
    EpochSecret::from_exporter([0xB0; 32]).bundle_key(&ALBUM).unwrap()
}

fn join(ring: &AmkKeyring, meta: &AlbumMetadata) -> AmkKeyring {
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    seal_for_joiner(ring, meta, &bundle_key(), &mut rng).unwrap().open(&bundle_key(), meta).unwrap()
}

#[test]
fn welcome_delivers_what_the_policy_grants() {
    // (policy, current version, expected first held version)
    let cases = [
        (HistoryPolicy::Full, 1, 1),
        (HistoryPolicy::Full, 9, 1),
        (capped(1), 9, 9),
        (capped(3), 9, 7),
        (capped(3), 2, 1),
        (capped(9), 9, 1),
        (capped(50), 9, 1),
    ];
    for (policy, current, first) in cases {
        let ring = ring_at(current);
        let joined = join(&ring, &meta(policy));
        let label = format!("{policy:?} at v{current}");
        assert_eq!(joined.first_held(), v(first), "{label}");
        assert_eq!(joined.current(), ring.current(), "{label}");
        assert_eq!(joined.write_key(), ring.write_key(), "{label}");
        assert_eq!(joined.ceiling(), v(current), "{label}");
        for n in 1..=current {
            match joined.lookup(v(n)) {
                AmkSlot::Held(amk) => {
                    assert!(n >= first, "{label}: v{n} should be withheld");
                    assert_eq!(Some(amk), ring.get(v(n)), "{label}: v{n} key");
                }
                AmkSlot::Withheld => assert!(n < first, "{label}: v{n} should be held"),
                AmkSlot::NotHeld => panic!("{label}: v{n} not held"),
            }
        }
        assert_eq!(joined.lookup(v(current + 1)), AmkSlot::NotHeld, "{label}");
    }
}

#[test]
fn bundles_from_two_devices_in_either_order_carry_the_same_range() {
    for policy in [HistoryPolicy::Full, capped(2), capped(5)] {
        let m = meta(policy);
        // Device A created the album; device B joined at v3 under the same policy.
        let mut a = ring_at(3);
        let mut b = join(&a, &m);
        for n in 4..=6 {
            a.rotate(v(n), &epoch_secret(n)).unwrap();
            b.rotate(v(n), &epoch_secret(n)).unwrap();
        }
        let from_a = HistoryBundle::for_joiner(&a, &m);
        let from_b = HistoryBundle::for_joiner(&b, &m);
        match (from_a, from_b) {
            (Ok(x), Ok(y)) => {
                assert_eq!(x.versions().collect::<Vec<_>>(), y.versions().collect::<Vec<_>>(), "{policy:?}");
                assert_eq!(x, y, "{policy:?}: identical contents");
            }
            // Full history cannot be produced by a device that was itself capped:
            // it refuses rather than deliver a narrower range.
            (Ok(_), Err(AmkError::NotHeld(first))) => {
                assert_eq!(policy, HistoryPolicy::Full);
                assert_eq!(first, v(1));
            }
            other => panic!("{policy:?}: {other:?}"),
        }
    }
}

#[test]
fn ceiling_refuses_manifests_until_the_chain_attests_a_rotation() {
    let ring = ring_at(4);
    let mut joined = join(&ring, &meta(HistoryPolicy::Full));
    assert_eq!(joined.ceiling(), v(4));
    assert!(joined.check_manifest(v(4)).is_ok());
    assert_eq!(joined.check_manifest(v(5)), Err(AmkError::AboveCeiling { claimed: v(5), ceiling: v(4) }));
    joined.rotate(v(5), &epoch_secret(5)).unwrap();
    assert!(joined.check_manifest(v(5)).is_ok());
    assert!(joined.check_manifest(v(6)).is_err());
    // The ceiling never falls.
    joined.attest_ceiling(v(2));
    assert_eq!(joined.ceiling(), v(5));
    joined.attest_ceiling(v(8));
    assert_eq!(joined.ceiling(), v(8));
    assert!(joined.check_manifest(v(8)).is_ok());
}

#[test]
fn a_removed_device_has_nothing_newer_than_where_it_stopped() {
    let stopped = ring_at(3);
    let mut rest = ring_at(3);
    rest.rotate(v(4), &epoch_secret(4)).unwrap();
    let m = meta(HistoryPolicy::Full);
    // It holds nothing for v4, refuses manifests for it and cannot produce bundles with it.
    assert_eq!(stopped.lookup(v(4)), AmkSlot::NotHeld);
    assert!(stopped.check_manifest(v(4)).is_err());
    let from_stopped = HistoryBundle::for_joiner(&stopped, &m).unwrap();
    assert_eq!(from_stopped.versions().last(), Some(v(3)));
    // Nor open a bundle sealed for the v4 epoch, whose key it cannot derive.
    let v4_key = epoch_secret(4).bundle_key(&ALBUM).unwrap();
    let sealed = seal_for_joiner(&rest, &m, &v4_key, &mut ChaCha20Rng::from_seed([2; 32])).unwrap();
    let stale_key = epoch_secret(3).bundle_key(&ALBUM).unwrap();
    assert_eq!(sealed.open(&stale_key, &m).unwrap_err(), AmkError::BundleUnreadable);
    // Its old versions are exactly what it had.
    for n in 1..=3 {
        assert_eq!(stopped.get(v(n)), rest.get(v(n)));
    }
}

#[test]
fn rotation_rules_keep_one_key_per_version() {
    let mut ring = ring_at(2);
    let before = ring.duplicate();
    // Replaying the same rotation is a no-op; a different key for it is refused.
    ring.rotate(v(2), &epoch_secret(2)).unwrap();
    assert_eq!(ring, before);
    assert_eq!(ring.rotate(v(2), &epoch_secret(99)), Err(AmkError::KeyConflict(v(2))));
    assert_eq!(ring.rotate(v(4), &epoch_secret(4)), Err(AmkError::OutOfOrder { expected: v(3), got: v(4) }));
    assert_eq!(ring, before, "refusals leave the keyring untouched");
    // A capped joiner cannot fill its withheld versions.
    let mut joined = join(&ring_at(5), &meta(capped(2)));
    assert!(joined.rotate(v(1), &epoch_secret(1)).is_err());
    assert_eq!(joined.lookup(v(1)), AmkSlot::Withheld);
    // Write keys rotate with versions: the old one is gone.
    let (wv, w) = ring.write_key();
    let old_write = *w.expose_secret();
    ring.rotate(v(3), &epoch_secret(3)).unwrap();
    assert_eq!(wv, v(2));
    assert_eq!(ring.write_key().0, v(3));
    assert_ne!(ring.write_key().1.expose_secret(), &old_write);
    // Different albums derive different keys from the same epoch secret.
    let other = AmkKeyring::create(AlbumId::from_bytes([8; 16]), &epoch_secret(1)).unwrap();
    assert_ne!(other.current().1, ring_at(1).current().1);
}

#[test]
fn bundles_that_disagree_with_the_album_are_refused() {
    let ring = ring_at(5);
    let key = bundle_key();
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    let full = meta(HistoryPolicy::Full);
    let sealed = seal_for_joiner(&ring, &full, &key, &mut rng).unwrap();
    // Policy mismatch: produced under Full, opened by a joiner whose album says Capped.
    let mut capped_meta = full.upgraded(&AlbumUpgrade { history_policy: Some(capped(2)), admins: None }).unwrap();
    assert_eq!(
        sealed.open(&key, &capped_meta).unwrap_err(),
        AmkError::BundleRefused("history policy differs from the album's")
    );
    // Another album (AAD mismatch) or another key does not open at all.
    let other_album =
        AlbumMetadata::new(AlbumId::from_bytes([9; 16]), HistoryPolicy::Full, full.admins().clone()).unwrap();
    assert_eq!(sealed.open(&key, &other_album).unwrap_err(), AmkError::BundleUnreadable);
    let wrong = EpochSecret::from_exporter([1; 32]).bundle_key(&ALBUM).unwrap();
    assert_eq!(sealed.open(&wrong, &full).unwrap_err(), AmkError::BundleUnreadable);
    // Tampered ciphertext.
    let mut bytes = sealed.to_bytes().unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert_eq!(SealedBundle::from_bytes(&bytes).unwrap().open(&key, &full).unwrap_err(), AmkError::BundleUnreadable);
    capped_meta =
        capped_meta.upgraded(&AlbumUpgrade { history_policy: Some(HistoryPolicy::Full), admins: None }).unwrap();
    assert!(sealed.open(&key, &capped_meta).is_ok(), "policy back to Full via an explicit upgrade");
}

/// Seals hand-made bundle contents (as a buggy or malicious member could) to
/// reach the checks behind the AEAD.
fn seal_raw(contents: &HistoryBundleForge) -> SealedBundle {
    let bytes = contents.encode();
    // Decode through the public decoder, then re-seal with the real code path.
    let bundle = HistoryBundle::from_bytes(&bytes).unwrap();
    bundle.seal(&bundle_key(), &mut ChaCha20Rng::from_seed([4; 32])).unwrap()
}

/// The opened form's layout, for forging: (format, album, policy, ceiling, entries, write key).
struct HistoryBundleForge {
    policy: HistoryPolicy,
    ceiling: u32,
    versions: Vec<u32>,
}

impl HistoryBundleForge {
    fn encode(&self) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Forged {
            format: u8,
            album: AlbumId,
            policy: HistoryPolicy,
            ceiling: u32,
            entries: Vec<(u32, [u8; 32])>,
            write_key: [u8; 32],
        }
        capsule_identity::encoding::encode(&Forged {
            format: 1,
            album: ALBUM,
            policy: self.policy,
            ceiling: self.ceiling,
            entries: self.versions.iter().map(|n| (*n, [n.to_be_bytes()[3]; 32])).collect(),
            write_key: [0; 32],
        })
        .unwrap()
    }
}

#[test]
fn forged_bundle_contents_are_refused() {
    let check = |policy, ceiling, versions: &[u32], why: &'static str| {
        let sealed = seal_raw(&HistoryBundleForge { policy, ceiling, versions: versions.to_vec() });
        assert_eq!(
            sealed.open(&bundle_key(), &meta(policy)).unwrap_err(),
            AmkError::BundleRefused(why),
            "{versions:?}"
        );
    };
    check(HistoryPolicy::Full, 3, &[1, 2, 2, 3], "duplicate version");
    check(HistoryPolicy::Full, 3, &[1, 3], "versions not consecutive");
    check(HistoryPolicy::Full, 3, &[1, 2, 3, 4], "version above the ceiling");
    check(HistoryPolicy::Full, 4, &[1, 2, 3], "bundle lacks the current version");
    check(HistoryPolicy::Full, 3, &[2, 3], "version range disagrees with the joiner's entitlement");
    check(capped(2), 5, &[3, 4, 5], "version range disagrees with the joiner's entitlement");
    check(capped(2), 5, &[5], "version range disagrees with the joiner's entitlement");
    check(HistoryPolicy::Full, 3, &[], "no versions");
    // The well-formed one opens.
    let ok = seal_raw(&HistoryBundleForge { policy: capped(2), ceiling: 5, versions: vec![4, 5] });
    assert_eq!(ok.open(&bundle_key(), &meta(capped(2))).unwrap().first_held(), v(4));
}

/// A keyring of versions 1..=`last`, each epoch secret `[n ^ salt; 32]`
/// (another salt: another history of the same album).
fn ring_through(last: u8, salt: u8) -> AmkKeyring {
    let mut ring = AmkKeyring::create(ALBUM, &EpochSecret::from_exporter([1 ^ salt; 32])).unwrap();
    for n in 2..=last {
        ring.rotate(v(u32::from(n)), &EpochSecret::from_exporter([n ^ salt; 32])).unwrap();
    }
    ring
}

/// A device of a user who joined earlier receives the user's fixed range,
/// which may reach below the policy's window; it must be exactly that range.
#[test]
fn a_bundle_for_an_existing_user_carries_exactly_its_entitlement() {
    let m = meta(capped(2));
    let ring = ring_through(5, 0);
    let key = bundle_key();
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let sealed = HistoryBundle::for_user(&ring, &m, v(2)).unwrap().seal(&key, &mut rng).unwrap();
    let joined = sealed.open_for_user(&key, &m, v(2)).unwrap();
    assert_eq!((joined.first_held(), joined.current_version()), (v(2), v(5)));
    assert!(ring.held().skip(1).all(|(ver, amk)| joined.get(ver) == Some(amk)));
    // Read as a new user's, or as another user's entitlement, it is refused.
    let refused = AmkError::BundleRefused("version range disagrees with the joiner's entitlement");
    assert_eq!(sealed.open(&key, &m).unwrap_err(), refused);
    assert_eq!(sealed.open_for_user(&key, &m, v(3)).unwrap_err(), refused);
    // A range the sealer was itself withheld, or above the current version, cannot be built.
    let window = HistoryBundle::for_joiner(&ring, &m).unwrap().seal(&key, &mut rng).unwrap().open(&key, &m).unwrap();
    assert_eq!(HistoryBundle::for_user(&window, &m, v(2)).unwrap_err(), AmkError::NotHeld(v(2)));
    assert_eq!(HistoryBundle::for_user(&ring, &m, v(6)).unwrap_err(), AmkError::NotHeld(v(6)));
}

#[test]
fn metadata_changes_only_through_upgrades() {
    let m = meta(HistoryPolicy::Full);
    assert!(m.upgraded(&AlbumUpgrade::default()).is_err(), "an upgrade must change something");
    assert!(m.upgraded(&AlbumUpgrade { history_policy: None, admins: Some([].into()) }).is_err());
    let up = m.upgraded(&AlbumUpgrade { history_policy: Some(capped(3)), admins: None }).unwrap();
    assert_eq!(up.metadata_version(), 2);
    assert!(m.check_upgrade(&up).is_ok());
    assert!(up.check_upgrade(&m).is_err(), "no going back a version");
    assert!(m.check_upgrade(&m).is_err());
    let other = AlbumMetadata::new(AlbumId::from_bytes([1; 16]), HistoryPolicy::Full, m.admins().clone()).unwrap();
    assert!(
        m.check_upgrade(&other.upgraded(&AlbumUpgrade { history_policy: Some(capped(1)), admins: None }).unwrap())
            .is_err()
    );
    assert!(AlbumMetadata::new(ALBUM, HistoryPolicy::Full, [].into()).is_err());
}

#[test]
fn secrets_are_redacted_in_debug() {
    let ring = ring_at(2);
    let key_hex: String = ring.current().1.expose_secret().iter().map(|b| format!("{b:02x}")).collect();
    let bytes: String = format!("{:?}", ring.current().1.expose_secret());
    for text in [format!("{ring:?}"), format!("{:?}", ring.current().1), format!("{:?}", ring.write_key().1)] {
        assert!(!text.contains(&key_hex[..8]) && !text.contains(&bytes[..12]), "{text}");
    }
}

/// The owners' escrow gives back withheld history: exactly the versions below
/// those held, checked against the versions both hold, all or nothing.
#[test]
fn an_escrowed_lineage_gives_back_withheld_versions_and_nothing_else() {
    let m = meta(capped(2));
    let full = ring_through(5, 0);
    let key = bundle_key();
    let mut rng = ChaCha20Rng::from_seed([6; 32]);
    let window = HistoryBundle::for_joiner(&full, &m).unwrap().seal(&key, &mut rng).unwrap().open(&key, &m).unwrap();
    assert_eq!(window.first_held(), v(4));

    // A lineage of another history (same album, other keys), one sharing no
    // version, and another album's are refused, and change nothing.
    let other = ring_through(5, 0x80);
    let early = AmkKeyring::create(ALBUM, &EpochSecret::from_exporter([1; 32])).unwrap();
    let foreign = AmkKeyring::create(AlbumId::from_bytes([0xaa; 16]), &EpochSecret::from_exporter([1; 32])).unwrap();
    let mut ring = window.duplicate();
    assert_eq!(ring.recover_history(&other).unwrap_err(), AmkError::KeyConflict(v(4)));
    assert!(matches!(ring.recover_history(&early).unwrap_err(), AmkError::LineageRefused(_)));
    assert!(matches!(ring.recover_history(&foreign).unwrap_err(), AmkError::LineageRefused(_)));
    assert_eq!(ring, window, "refusals leave the keyring unchanged");

    // The real lineage: v1..v3 come back, the rest is as it was.
    assert_eq!(ring.recover_history(&full).unwrap(), 3);
    assert_eq!(ring.first_held(), v(1));
    assert!(full.held().all(|(ver, amk)| ring.get(ver) == Some(amk)));
    assert_eq!((ring.current(), ring.write_key()), (window.current(), window.write_key()));
    assert_eq!(ring.recover_history(&full).unwrap(), 0, "idempotent");
    assert_eq!(AmkKeyring::from_bytes(&ring.to_bytes().unwrap()).unwrap(), ring, "still a valid record");
}
