//! Fuzz `Album::join` and `Album::join_reboot` (a Welcome and the sealed
//! history bundle beside it, as the server's mailbox hands them to a device)
//! against devices holding the KeyPackages the Welcomes were made for.
//!
//! Made at start-up: Alice's admin device adds her second device
//! (`AddDevice`), adds Dave (`AddUser`), and reboots the album with Bob's
//! fresh KeyPackage (Bob then joins the new generation against the album he
//! holds). An input is `[part, mode, rest]`: part 0 feeds a Welcome (raw or an
//! edited valid one, `capsule_fuzz::inputs`) beside its base's bundle, part 1 a
//! bundle beside its base's Welcome, part 2 a raw `(welcome, bundle)` pair
//! (`inputs::split_pair`) to the first base's joiner. Checks: a refusal is
//! typed and leaves the joiner's storage exactly as it was (its KeyPackage
//! included); a join reaches the state of the album it was made for. The
//! server's `welcome_recipients` and the device's `holds_key_package` read
//! the same Welcome.
#![no_main]

use std::cell::RefCell;

use capsule_fuzz::inputs;
use capsule_fuzz::world::{A0, A1, B0, C0, D0, Saved, World};
use capsule_mls::{Album, holds_key_package, welcome_recipients};
use libfuzzer_sys::fuzz_target;

/// One valid Welcome and what joining from it reaches.
struct Base {
    joiner: usize,
    /// Whether it is a reboot (joined against the album the joiner holds).
    reboot: bool,
    /// The epoch authenticator joining reaches.
    reaches: Vec<u8>,
}

struct Fixture {
    world: World,
    saved: Saved,
    bases: Vec<Base>,
    welcomes: Vec<Vec<u8>>,
    bundles: Vec<Vec<u8>>,
}

fn join(world: &mut World, joiner: usize, reboot: bool, welcome: &[u8], bundle: &[u8]) -> capsule_mls::Result<Album> {
    let validation = world.dir.validation();
    let slot = world.slots.get_mut(joiner).expect("joiner");
    match (reboot, slot.album.as_ref()) {
        (true, Some(old)) => Album::join_reboot(&slot.dev.provider, old, welcome, bundle, validation),
        _ => Album::join(&slot.dev.provider, welcome, bundle, validation),
    }
}

fn fixture() -> Fixture {
    let mut world = World::new(&[B0, C0]);
    let mut outs = Vec::new();
    for joiner in [A1, D0] {
        let change = world.add_change(world.slot(A0).dev.user, joiner);
        outs.push((joiner, false, world.stage(A0, &change).expect("stage an add")));
        let slot = world.slot_mut(A0);
        slot.album.as_mut().expect("album").reject(&slot.dev.provider).expect("reject");
    }
    let kp = world.kp(B0);
    let validation = world.dir.validation();
    let slot = world.slots.get_mut(A0).expect("admin");
    let album = slot.album.as_ref().expect("album");
    let (_rebooted, out) = album.reboot(&slot.dev.provider, &slot.dev.me, &[kp], validation).expect("reboot");
    outs.push((B0, true, out));
    // Every KeyPackage is made: this is the state each input starts from.
    let saved = world.save();
    let (mut bases, mut welcomes, mut bundles) = (Vec::new(), Vec::new(), Vec::new());
    for (joiner, reboot, out) in outs {
        let welcome = out.welcome.expect("a welcome");
        let bundle = out.bundle.expect("a bundle");
        let joined = join(&mut world, joiner, reboot, &welcome, &bundle).expect("join from a valid welcome");
        bases.push(Base { joiner, reboot, reaches: joined.epoch_authenticator() });
        welcomes.push(welcome);
        bundles.push(bundle);
        world.restore(&saved);
    }
    Fixture { world, saved, bases, welcomes, bundles }
}

thread_local! {
    static FIXTURE: RefCell<Fixture> = RefCell::new(fixture());
}

fuzz_target!(|data: &[u8]| {
    FIXTURE.with_borrow_mut(|fx| {
        let Some((&part, rest)) = data.split_first() else { return };
        let (welcome, bundle, base) = match part % 3 {
            0 => {
                let Some(read) = inputs::read(rest, &fx.welcomes) else { return };
                let base = read.base.unwrap_or(0);
                (read.message, fx.bundles.get(base).cloned().unwrap_or_default(), base)
            }
            1 => {
                let Some(read) = inputs::read(rest, &fx.bundles) else { return };
                let base = read.base.unwrap_or(0);
                (fx.welcomes.get(base).cloned().unwrap_or_default(), read.message, base)
            }
            _ => {
                let (welcome, bundle) = inputs::split_pair(rest);
                (welcome.to_vec(), bundle.to_vec(), 0)
            }
        };
        let Base { joiner, reboot, ref reaches } = *fx.bases.get(base).expect("base");
        let saved = fx.saved.devices.get(joiner).expect("joiner");
        let slot = fx.world.slot_mut(joiner);
        slot.album = saved.restore(&slot.dev);

        if let Ok(references) = welcome_recipients(&welcome) {
            for reference in references {
                let _ = holds_key_package(&slot.dev.provider, &reference);
            }
        }
        match join(&mut fx.world, joiner, reboot, &welcome, &bundle) {
            Ok(joined) => assert_eq!(&joined.epoch_authenticator(), reaches, "joined a state no member made"),
            Err(e) => {
                assert!(!e.is_internal(), "a refusal classified as a fault: {e}");
                let slot = fx.world.slot(joiner);
                // OpenMLS deletes the KeyPackage a Welcome names before checking
                // anything; `Album::join` puts it back (regression:
                // `fuzz/regressions/mls_join_welcome/`, the valid Welcome beside
                // an empty bundle).
                assert!(
                    saved.storage_unchanged(&slot.dev),
                    "a refused join changed the joiner's storage ({e}):\n{}",
                    saved.storage_diff(&slot.dev)
                );
            }
        }
    });
});
