//! What joiners receive: full or capped history decrypting real "assets", the
//! same range whoever adds them, and the ceiling the group context attests.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code

mod common;

use std::num::NonZeroU32;

use capsule_amk::{Amk, AmkError, AmkSlot, AmkVersion, HistoryPolicy};
use capsule_mls::Change;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use common::*;

/// A photo encrypted under an AMK version, as an uploader would.
fn encrypt_asset(amk: &Amk, photo: &[u8]) -> Vec<u8> {
    XChaCha20Poly1305::new(amk.expose_secret().into()).encrypt(&XNonce::from([0; 24]), photo).unwrap()
}

fn decrypt_asset(amk: &Amk, asset: &[u8]) -> Option<Vec<u8>> {
    XChaCha20Poly1305::new(amk.expose_secret().into()).decrypt(&XNonce::from([0; 24]), asset).ok()
}

fn capped(n: u32) -> HistoryPolicy {
    HistoryPolicy::Capped { last: NonZeroU32::new(n).unwrap() }
}

/// An album of Alice (device 0, admin) and Carol (device 1) that has rotated to
/// `versions`, with one asset uploaded under each version.
fn album_with_history(policy: HistoryPolicy, versions: u32, seed: u8) -> (World, Vec<(AmkVersion, Vec<u8>)>) {
    let mut w = World::new(seed);
    let alice = w.user(1);
    let a0 = w.device(alice);
    w.create(a0, policy, &[alice]);
    let carol = w.user(3);
    let c0 = w.device(carol);
    let dir = w.directory(carol);
    let out = w.stage(a0, &Change::AddUser { user: carol, directory: dir }).unwrap();
    w.deliver(a0, &out, &[c0]);
    let mut assets = Vec::new();
    for n in 1..=versions {
        let (v, amk) = w.album(a0).keyring().current();
        assets.push((v, encrypt_asset(amk, format!("photo {n}").as_bytes())));
        if n < versions {
            let out = w.stage(a0, &Change::RotateAmk).unwrap();
            w.deliver(a0, &out, &[]);
        }
    }
    w.assert_consistent();
    (w, assets)
}

#[test]
fn full_history_decrypts_every_prior_asset_and_capped_only_the_last_n() {
    for (policy, first_readable) in [(HistoryPolicy::Full, 1), (capped(2), 4), (capped(1), 5), (capped(9), 1)] {
        let (mut w, assets) = album_with_history(policy, 5, 20);
        let bob = w.user(2);
        let b0 = w.device(bob);
        let dir = w.directory(bob);
        let out = w.stage(0, &Change::AddUser { user: bob, directory: dir }).unwrap();
        w.deliver(0, &out, &[b0]);
        w.assert_consistent();
        let ring = w.album(b0).keyring();
        for (v, asset) in &assets {
            let readable = v.get() >= first_readable;
            match ring.lookup(*v) {
                AmkSlot::Held(amk) => {
                    assert!(readable, "{policy:?}: v{} should be withheld", v.get());
                    assert_eq!(decrypt_asset(amk, asset).unwrap(), format!("photo {}", v.get()).into_bytes());
                }
                AmkSlot::Withheld => {
                    assert!(!readable, "{policy:?}: v{} should be readable", v.get())
                }
                AmkSlot::NotHeld => panic!("{policy:?}: v{} not held", v.get()),
            }
        }
    }
}

#[test]
fn the_same_user_gets_the_same_range_whoever_adds_and_in_either_order() {
    let mut ranges = Vec::new();
    for order in [[0usize, 1], [1, 0]] {
        let (mut w, _) = album_with_history(capped(2), 4, 21);
        // Give Alice a second device, an admin too, so two devices can add.
        let alice = uid(1);
        let a1 = w.device(alice);
        let kp = w.kp(a1);
        let out = w.stage(0, &Change::AddDevice { key_package: kp }).unwrap();
        w.deliver(0, &out, &[a1]);
        let adders = [0, a1];
        // Bob's two devices are added one by one, by the two admin devices, in `order`.
        let bob = w.user(2);
        let bobs = [w.device(bob), w.device(bob)];
        for (i, &which) in order.iter().enumerate() {
            let adder = adders[which];
            let kp = w.kp(bobs[i]);
            let out = w.stage(adder, &Change::AddUser { user: bob, directory: vec![kp] }).unwrap();
            w.deliver(adder, &out, &[bobs[i]]);
        }
        w.assert_consistent();
        for b in bobs {
            let ring = w.album(b).keyring();
            ranges.push((ring.first_held(), ring.current_version()));
        }
    }
    assert!(ranges.windows(2).all(|p| p[0] == p[1]), "{ranges:?}");
    assert_eq!(ranges[0], (AmkVersion::new(3).unwrap(), AmkVersion::new(4).unwrap()));
}

/// `001_…`: a new device "is now equivalent to Alice's other devices". Under a
/// capped policy, a user's later devices (added by the user, by an admin, or
/// re-added) receive the range fixed when the user joined, not the policy's
/// window at their own add; a new user still gets the policy's window.
#[test]
fn a_users_later_devices_equal_its_first_under_a_capped_policy() {
    let mut w = World::new(23);
    let (alice, bob, dave) = (w.user(1), w.user(2), w.user(4));
    let a0 = w.device(alice);
    w.create(a0, capped(2), &[alice, dave]);
    let rotate = |w: &mut World, n| {
        for _ in 0..n {
            let out = w.stage(a0, &Change::RotateAmk).unwrap();
            w.deliver(a0, &out, &[]);
        }
    };
    rotate(&mut w, 3);
    // Bob joins at v4: entitled from v3.
    let phone = w.device(bob);
    let out = w.stage(a0, &Change::AddUser { user: bob, directory: vec![w.kp(phone)] }).unwrap();
    w.deliver(a0, &out, &[phone]);
    rotate(&mut w, 2);
    let v = |n| AmkVersion::new(n).unwrap();
    let range = |w: &World, d: usize| (w.album(d).keyring().first_held(), w.album(d).keyring().current_version());
    assert_eq!(range(&w, phone), (v(3), v(6)));

    // Bob adds his laptop himself; Alice adds his tablet with "add user".
    let laptop = w.device(bob);
    let out = w.stage(phone, &Change::AddDevice { key_package: w.kp(laptop) }).unwrap();
    w.deliver(phone, &out, &[laptop]);
    let tablet = w.device(bob);
    let out = w.stage(a0, &Change::AddUser { user: bob, directory: vec![w.kp(tablet)] }).unwrap();
    w.deliver(a0, &out, &[tablet]);
    // Alice re-adds the laptop (its re-bootstrap).
    let out = w.stage(a0, &Change::ReAddDevice { key_package: w.kp(laptop) }).unwrap();
    w.deliver(a0, &out, &[laptop]);
    w.assert_consistent();
    for d in [laptop, tablet] {
        assert_eq!(range(&w, d), range(&w, phone), "device {d} equals Bob's phone");
        for (version, amk) in w.album(phone).keyring().held() {
            assert_eq!(w.album(d).keyring().get(version), Some(amk));
        }
    }

    // A new user joining now gets the policy's window: v5 and v6.
    let d0 = w.device(dave);
    let out = w.stage(a0, &Change::AddUser { user: dave, directory: vec![w.kp(d0)] }).unwrap();
    w.deliver(a0, &out, &[d0]);
    assert_eq!(range(&w, d0), (v(5), v(6)));
    let entitled = &w.album(a0).context().entitlements;
    assert_eq!((entitled[&alice], entitled[&bob], entitled[&dave]), (v(1), v(3), v(5)));

    // Dave, an admin who never held v3 and v4, cannot add Bob's next device:
    // refused before anything is staged, and the album is unchanged.
    let (epoch, auth) = (w.album(d0).epoch(), w.album(d0).epoch_authenticator());
    let watch = w.device(bob);
    let kp = w.kp(watch);
    let refused = w.stage(d0, &Change::AddUser { user: bob, directory: vec![kp.clone()] }).unwrap_err();
    assert!(matches!(refused, capsule_mls::MlsError::Amk(AmkError::NotHeld(first)) if first == v(3)), "{refused}");
    assert!(w.album(d0).pending().is_none());
    assert_eq!((w.album(d0).epoch(), w.album(d0).epoch_authenticator()), (epoch, auth));
    // Bob's phone, who holds them, can.
    let out = w.stage(phone, &Change::AddDevice { key_package: kp }).unwrap();
    w.deliver(phone, &out, &[watch]);
    assert_eq!(range(&w, watch), range(&w, phone));
    // Dave's device is still fine: it commits the next change.
    let out = w.stage(d0, &Change::SelfUpdate).unwrap();
    w.deliver(d0, &out, &[]);
    w.assert_consistent();
}

#[test]
fn a_joiner_adopts_the_attested_ceiling_and_refuses_manifests_above_it() {
    let (mut w, _) = album_with_history(HistoryPolicy::Full, 3, 22);
    let bob = w.user(2);
    let b0 = w.device(bob);
    let dir = w.directory(bob);
    let out = w.stage(0, &Change::AddUser { user: bob, directory: dir }).unwrap();
    w.deliver(0, &out, &[b0]);
    let v3 = AmkVersion::new(3).unwrap();
    let ring = w.album(b0).keyring();
    assert_eq!(ring.ceiling(), v3);
    assert_eq!(w.album(b0).context().amk_version, v3);
    assert_eq!(
        ring.check_manifest(v3.next().unwrap()),
        Err(AmkError::AboveCeiling { claimed: v3.next().unwrap(), ceiling: v3 })
    );
    // The chain attests a rotation: the ceiling rises with it.
    let out = w.stage(1, &Change::RotateAmk).unwrap();
    w.deliver(1, &out, &[]);
    assert!(w.album(b0).keyring().check_manifest(v3.next().unwrap()).is_ok());
}

#[test]
fn no_amk_travels_in_plaintext() {
    let (mut w, _) = album_with_history(HistoryPolicy::Full, 2, 23);
    let bob = w.user(2);
    let b0 = w.device(bob);
    let dir = w.directory(bob);
    let out = w.stage(0, &Change::AddUser { user: bob, directory: dir }).unwrap();
    let ring = w.album(0).keyring();
    let secrets: Vec<[u8; 32]> =
        ring.held().map(|(_, k)| *k.expose_secret()).chain([*ring.write_key().1.expose_secret()]).collect();
    for bytes in [&out.commit, out.welcome.as_ref().unwrap(), out.bundle.as_ref().unwrap()] {
        for s in &secrets {
            assert!(!bytes.windows(32).any(|w| w == s), "key material in a message");
        }
    }
    w.deliver(0, &out, &[b0]);
}
