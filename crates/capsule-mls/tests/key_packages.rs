//! KeyPackages as a directory handles them: what a device makes is what a
//! directory reads back (member, reference, lifetime, last resort), a Welcome
//! names exactly the KeyPackages its commit adds, a last-resort KeyPackage
//! keeps its private keys after a join while a regular one loses them, and
//! any change to a KeyPackage's bytes is refused.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code

use capsule_amk::{AlbumId, AlbumMetadata, HistoryPolicy};
use capsule_mls::testkit::Directory;
use capsule_mls::*;
use proptest::prelude::*;

const ALBUM: AlbumId = AlbumId::from_bytes([0x4B; 16]);
const DAY: u64 = 24 * 3600;

#[test]
fn a_directory_reads_back_what_a_device_made() {
    let mut dir = Directory::new(61);
    let (alice, bob) = (dir.user(1).unwrap(), dir.user(2).unwrap());
    let (a0, b0, b1) = (dir.device(alice).unwrap(), dir.device(bob).unwrap(), dir.device(bob).unwrap());
    let regular = new_key_package(&b0.provider, &b0.me, false, DAY).unwrap();
    let last = new_key_package(&b1.provider, &b1.me, true, 2 * DAY).unwrap();
    for (made, device) in [(&regular, &b0), (&last, &b1)] {
        let info = inspect_key_package(&made.bytes, dir.validation()).unwrap();
        assert_eq!(info.member, Member { user: device.user, device: device.id });
        assert_eq!(
            (&info.reference, info.not_after, info.last_resort),
            (&made.reference, made.not_after, made.last_resort)
        );
        assert!(holds_key_package(&device.provider, &made.reference).unwrap());
        assert!(!holds_key_package(&a0.provider, &made.reference).unwrap());
    }
    assert_eq!(last.not_after - regular.not_after, DAY, "the lifetime asked for (made within the same second)");

    // Alice adds both; the Welcome names exactly their two KeyPackages.
    let metadata = AlbumMetadata::new(ALBUM, HistoryPolicy::Full, [alice].into()).unwrap();
    let mut a = Album::create(&a0.provider, &a0.me, metadata).unwrap();
    let add = Change::AddUser { user: bob, directory: vec![regular.bytes.clone(), last.bytes.clone()] };
    let out = a.stage(&a0.provider, &a0.me, &add, dir.validation()).unwrap();
    let mut named = welcome_recipients(out.welcome.as_ref().unwrap()).unwrap();
    named.sort();
    let mut made = vec![regular.reference.clone(), last.reference.clone()];
    made.sort();
    assert_eq!(named, made);
    assert!(welcome_recipients(&out.commit).is_err(), "a commit is no Welcome");
    a.confirm(&a0.provider).unwrap();

    // Joining spends the regular KeyPackage's keys and keeps the last resort's.
    for device in [&b0, &b1] {
        Album::join(&device.provider, out.welcome.as_ref().unwrap(), out.bundle.as_ref().unwrap(), dir.validation())
            .unwrap();
    }
    assert!(!holds_key_package(&b0.provider, &regular.reference).unwrap());
    assert!(holds_key_package(&b1.provider, &last.reference).unwrap());
    // Forgetting it deletes them: a Welcome made for it can no longer be read.
    forget_key_package(&b1.provider, &last.reference).unwrap();
    assert!(!holds_key_package(&b1.provider, &last.reference).unwrap());
}

#[test]
fn an_unknown_user_or_an_expired_certificate_is_refused() {
    let mut dir = Directory::new(62);
    let bob = dir.user(2).unwrap();
    let b0 = dir.device(bob).unwrap();
    let made = new_key_package(&b0.provider, &b0.me, false, DAY).unwrap();
    let nobody = std::collections::BTreeMap::new();
    let unknown = inspect_key_package(&made.bytes, Validation { trust: &nobody, now: testkit::NOW });
    assert!(matches!(unknown, Err(MlsError::UnknownIdentity { .. })), "{unknown:?}");
    let ended =
        capsule_identity::Validity::new(capsule_identity::UnixTime(0), capsule_identity::UnixTime(1_000_000_000));
    let old = dir.device_for(bob, ended.unwrap()).unwrap();
    let made = new_key_package(&old.provider, &old.me, false, DAY).unwrap();
    let expired = inspect_key_package(&made.bytes, dir.validation());
    assert!(matches!(expired, Err(MlsError::Identity(_))), "{expired:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_changed_key_package_is_refused(at in any::<prop::sample::Index>(), bit in 0u8..8) {
        static MADE: std::sync::OnceLock<(Directory, Vec<u8>)> = std::sync::OnceLock::new();
        let (dir, bytes) = MADE.get_or_init(|| {
            let mut dir = Directory::new(63);
            let bob = dir.user(2).unwrap();
            let b0 = dir.device(bob).unwrap();
            let bytes = new_key_package(&b0.provider, &b0.me, false, DAY).unwrap().bytes;
            (dir, bytes)
        });
        let mut changed = bytes.clone();
        changed[at.index(bytes.len())] ^= 1 << bit;
        let inspected = inspect_key_package(&changed, dir.validation());
        prop_assert!(inspected.is_err(), "a changed KeyPackage was accepted");
        prop_assert!(inspected.is_err_and(|e| !e.is_internal()), "a refusal must be typed, not a fault");
        prop_assert!(welcome_recipients(&changed).is_err());
    }
}
