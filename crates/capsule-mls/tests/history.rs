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
