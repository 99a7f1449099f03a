//! Rebooting a forked album into a new group: every member re-added, the
//! metadata carried over, no AMK version lost, photos from before the fork
//! open everywhere; only admins reboot, and only members are re-added.

#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code

mod common;

use capsule_amk::{HistoryPolicy, SealedPhoto, open_photo, seal_photo};
use capsule_mls::{Album, Change, MlsError, Validation};
use common::*;

/// Alice (admin: phone 0, laptop 1), Bob (2), Carol (3), three AMK versions,
/// a photo sealed under the second; then a fork: Alice's phone and laptop and
/// Carol merge Alice's rotation, Bob merges his own self-update.
fn forked() -> (World, SealedPhoto) {
    let mut w = World::new(83);
    let (alice, bob, carol) = (w.user(1), w.user(2), w.user(3));
    let phone = w.device(alice);
    w.create(phone, HistoryPolicy::Full, &[alice]);
    let laptop = w.device(alice);
    let out = w.stage(phone, &Change::AddDevice { key_package: w.kp(laptop) }).unwrap();
    w.deliver(phone, &out, &[laptop]);
    for user in [bob, carol] {
        let d = w.device(user);
        let out = w.stage(phone, &Change::AddUser { user, directory: w.directory(user) }).unwrap();
        w.deliver(phone, &out, &[d]);
    }
    let out = w.stage(phone, &Change::RotateAmk).unwrap();
    w.deliver(phone, &out, &[]);
    let mut rng = <chacha20::ChaCha20Rng as rand_core::SeedableRng>::from_seed([7; 32]);
    let photo = seal_photo(w.album(3).keyring().current(), &ALBUM, b"before the fork", &mut rng).unwrap();
    let out = w.stage(phone, &Change::RotateAmk).unwrap();
    w.deliver(phone, &out, &[]);

    let alice_side = w.stage(phone, &Change::RotateAmk).unwrap();
    w.stage(2, &Change::SelfUpdate).unwrap();
    w.server = None; // each side believes its own commit won
    let validation = Validation { trust: &w.dir.trust, now: NOW };
    for d in [0, 2] {
        let dev = &mut w.devices[d];
        dev.album.as_mut().unwrap().confirm(&dev.provider).unwrap();
    }
    for d in [1, 3] {
        let dev = &mut w.devices[d];
        dev.album.as_mut().unwrap().process(&dev.provider, &alice_side.commit, validation).unwrap();
    }
    assert_ne!(w.album(0).epoch_authenticator(), w.album(2).epoch_authenticator());
    (w, photo)
}

#[test]
fn a_reboot_readds_every_member_with_every_amk_version() {
    let (mut w, photo) = forked();
    let held_before: Vec<_> = w.album(0).keyring().held().map(|(v, _)| v).collect();
    let validation = Validation { trust: &w.dir.trust, now: NOW };

    // Alice's phone reboots: the group's first commit adds her laptop.
    let (mut rebooted, first) = {
        let phone = &w.devices[0];
        w.album(0).reboot(&phone.provider, &phone.me, &[w.kp(1)], validation).unwrap()
    };
    assert_eq!((rebooted.id(), rebooted.generation()), (ALBUM, 1));
    assert_ne!(rebooted.group_id(), w.album(0).group_id());
    assert_eq!(rebooted.context().metadata, w.album(0).context().metadata);
    assert_eq!(rebooted.context().entitlements, w.album(0).context().entitlements);
    assert_eq!(rebooted.context().amk_version, w.album(0).context().amk_version.next().unwrap());
    rebooted.confirm(&w.devices[0].provider).unwrap();
    let mut next = vec![rebooted];
    // Members of the old group join the next generation against the group they hold.
    let join = |w: &World, d: usize, welcome: &[u8], bundle: &[u8]| {
        let validation = Validation { trust: &w.dir.trust, now: NOW };
        Album::join_reboot(&w.devices[d].provider, w.album(d), welcome, bundle, validation)
    };
    // Against a group of the same generation it is no reboot: refused, the
    // joined group discarded and the KeyPackage kept for the genuine join.
    let (welcome, bundle) = (first.welcome.as_ref().unwrap(), first.bundle.as_ref().unwrap());
    let refused = Album::join_reboot(&w.devices[1].provider, &next[0], welcome, bundle, validation);
    assert!(matches!(refused, Err(MlsError::NotAReboot(_))), "{refused:?}");
    let laptop = join(&w, 1, welcome, bundle).unwrap();
    next.push(laptop);

    // Then one ordinary add per user, on the new group.
    for d in [2, 3] {
        let user = w.devices[d].user;
        let out = {
            let phone = &w.devices[0];
            next[0].stage(&phone.provider, &phone.me, &Change::AddUser { user, directory: vec![w.kp(d)] }, validation)
        }
        .unwrap();
        next[0].confirm(&w.devices[0].provider).unwrap();
        for (i, album) in next.iter_mut().enumerate().skip(1) {
            let provider = &w.devices[[1, 2, 3][i - 1]].provider;
            album.process(provider, &out.commit, validation).unwrap();
        }
        let joined = join(&w, d, out.welcome.as_ref().unwrap(), out.bundle.as_ref().unwrap()).unwrap();
        next.push(joined);
    }

    // One group, one state, every version the rebooting device held plus the
    // new one, and the photo from before the fork opens on every device.
    for (i, album) in next.iter().enumerate() {
        assert_eq!(album.epoch(), next[0].epoch(), "device {i}");
        assert_eq!(album.epoch_authenticator(), next[0].epoch_authenticator(), "device {i}");
        assert_eq!(album.members(), next[0].members(), "device {i}");
        assert_eq!(album.keyring().current(), next[0].keyring().current(), "device {i}");
        let held: Vec<_> = album.keyring().held().map(|(v, _)| v).collect();
        assert!(held_before.iter().all(|v| held.contains(v)), "device {i} lost a version");
        assert_eq!(open_photo(album.keyring(), &ALBUM, &photo).unwrap().as_slice(), b"before the fork");
    }
    assert_eq!(next[0].members().len(), 4);

    // The rebooted album survives a reload under its new group id.
    let record = next[0].to_record().unwrap();
    let reloaded = Album::load(&w.devices[0].provider, &record).unwrap();
    assert_eq!((reloaded.generation(), reloaded.epoch_authenticator()), (1, next[0].epoch_authenticator()));
    // The old group is forgotten on request.
    let phone = &mut w.devices[0];
    phone.album.as_mut().unwrap().discard(&phone.provider).unwrap();
}

#[test]
fn only_an_admin_reboots_and_only_members_are_readded() {
    let (mut w, _) = forked();
    let stranger_user = w.user(9);
    let stranger = w.device(stranger_user);
    let before = w.album(0).to_record().unwrap();
    let validation = Validation { trust: &w.dir.trust, now: NOW };
    let carol = &w.devices[3];
    let refused = w.album(3).reboot(&carol.provider, &carol.me, &[w.kp(2)], validation);
    assert!(matches!(refused, Err(MlsError::Unauthorized(_))), "{refused:?}");
    let phone = &w.devices[0];
    let refused = w.album(0).reboot(&phone.provider, &phone.me, &[w.kp(stranger)], validation);
    assert!(matches!(refused, Err(MlsError::NotMember(_))), "{refused:?}");
    let refused = w.album(0).reboot(&phone.provider, &phone.me, &[w.kp(2), w.kp(3)], validation);
    assert!(matches!(refused, Err(MlsError::Refused(_))), "{refused:?}");
    let refused = w.album(0).reboot(&phone.provider, &phone.me, &[], validation);
    assert!(matches!(refused, Err(MlsError::Refused(_))), "{refused:?}");
    let refused = w.album(0).reboot(&phone.provider, &phone.me, &[w.kp(0)], validation);
    assert!(matches!(refused, Err(MlsError::Refused(_))), "{refused:?}");
    // None of it changed the album.
    assert_eq!(*w.album(0).to_record().unwrap(), *before);
    assert_eq!(w.album(0).generation(), 0);
}
