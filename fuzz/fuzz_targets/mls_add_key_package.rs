//! Fuzz the add ceremonies with KeyPackages from outside (the directory hands
//! them out): `Album::stage` of `AddDevice`, `AddUser` (alone, or after a
//! valid KeyPackage) and `ReAddDevice` by the album's admin, and the
//! directory's own `inspect_key_package`.
//!
//! An input is `[ceremony, mode, rest]`; the KeyPackage is raw or an edited
//! valid one (`capsule_fuzz::inputs`) of Alice's second device, Dave, Bob's
//! second device or Carol (for a re-add). Checks: a refusal is typed and
//! leaves the album (record, epoch, authenticator, no pending commit) and its
//! storage as they were; an accepted add is a pending commit that the server
//! accepts and another member applies.
#![no_main]

use std::cell::RefCell;

use capsule_fuzz::inputs;
use capsule_fuzz::world::{A0, A1, B0, B1, C0, D0, Saved, World, owner};
use capsule_mls::{Change, PublicAlbum, inspect_key_package};
use libfuzzer_sys::fuzz_target;

/// The admin that stages every add.
const ADMIN: usize = A0;

struct Fixture {
    world: World,
    saved: Saved,
    /// Valid KeyPackages: Alice's second device, Dave's, Bob's second device, Carol's (fresh).
    bases: Vec<Vec<u8>>,
}

fn fixture() -> Fixture {
    let world = World::new(&[B0, C0]);
    let bases = vec![world.kp(A1), world.kp(D0), world.kp(B1), world.kp(C0)];
    let saved = world.save();
    Fixture { world, saved, bases }
}

thread_local! {
    static FIXTURE: RefCell<Fixture> = RefCell::new(fixture());
}

fuzz_target!(|data: &[u8]| {
    FIXTURE.with_borrow_mut(|fx| {
        let Some((&ceremony, rest)) = data.split_first() else { return };
        let Some(read) = inputs::read(rest, &fx.bases) else { return };
        let kp = read.message;
        let _ = inspect_key_package(&kp, fx.world.dir.validation());
        let change = match ceremony % 4 {
            0 => Change::AddDevice { key_package: kp },
            1 => Change::AddUser { user: owner(D0), directory: vec![kp] },
            2 => Change::AddUser { user: owner(B1), directory: vec![fx.bases.get(2).cloned().unwrap_or_default(), kp] },
            _ => Change::ReAddDevice { key_package: kp },
        };
        let saved = fx.saved.devices.get(ADMIN).expect("admin");
        let slot = fx.world.slot_mut(ADMIN);
        slot.album = saved.restore(&slot.dev);
        let album = fx.world.album(ADMIN);
        let (epoch, authenticator) = (album.epoch(), album.epoch_authenticator());
        match fx.world.stage(ADMIN, &change) {
            Ok(out) => {
                assert_eq!(fx.world.album(ADMIN).pending(), Some(&out));
                let mut server = PublicAlbum::from_bytes(&fx.saved.server).expect("server state");
                let applied = server.stage(&out.commit).and_then(|c| server.apply(c, fx.world.dir.validation()));
                assert!(applied.is_ok(), "the server refuses an honest add: {applied:?}");
                let member = fx.saved.devices.get(B0).expect("member");
                let slot = fx.world.slot_mut(B0);
                slot.album = member.restore(&slot.dev);
                let processed = fx.world.process(B0, &out.commit);
                assert!(processed.is_ok(), "a member refuses an honest add: {processed:?}");
            }
            Err(e) => {
                assert!(!e.is_internal(), "a refusal classified as a fault: {e}");
                let album = fx.world.album(ADMIN);
                assert_eq!((album.epoch(), album.epoch_authenticator()), (epoch, authenticator));
                assert!(album.pending().is_none());
                let record = album.to_record().expect("record");
                assert_eq!(Some(record.as_slice()), saved.record(), "a refused add changed the album record");
                let dev = &fx.world.slot(ADMIN).dev;
                assert!(
                    saved.storage_unchanged(dev),
                    "a refused add changed storage ({e}):\n{}",
                    saved.storage_diff(dev)
                );
            }
        }
    });
});
