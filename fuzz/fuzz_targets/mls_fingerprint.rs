//! Fuzz what reads a state fingerprint (`003_…`'s fork detection): the
//! server's `fingerprint_header` and `rules::check_fingerprint` (every post to
//! an album's board), `album_of_group` on the group it names, and a member's
//! `Album::read_fingerprint` against a live album of Alice, Bob and Carol.
//!
//! An input is raw or one of the fingerprints made at start-up, edited
//! (`capsule_fuzz::inputs`): Alice's of the current epoch and of the one
//! before, Carol's naming a refused commit, Alice's farewell. Checks: never
//! panics; whatever a member reads, the server reads with the same header
//! (sender, epoch); whatever the board files, the header names; reading
//! changes nothing (`&self`).
#![no_main]

use capsule_fuzz::inputs;
use capsule_fuzz::world::{A0, B0, C0, World};
use capsule_mls::{CommitHash, album_of_group, fingerprint_header};
use libfuzzer_sys::fuzz_target;

/// The member that reads every input.
const READER: usize = B0;

struct Fixture {
    world: World,
    bases: Vec<Vec<u8>>,
}

fn fingerprint(world: &World, d: usize, refused: Option<CommitHash>, farewell: bool) -> Vec<u8> {
    let slot = world.slot(d);
    let album = world.album(d);
    let made = if farewell {
        album.farewell(&slot.dev.provider, &slot.dev.me, refused)
    } else {
        album.fingerprint(&slot.dev.provider, &slot.dev.me, refused)
    };
    made.expect("fingerprint")
}

fn fixture() -> Fixture {
    let mut world = World::new(&[B0]);
    let earlier = fingerprint(&world, A0, None, false);
    world.add(A0, C0);
    let bases = vec![
        fingerprint(&world, A0, None, false),
        earlier,
        fingerprint(&world, C0, Some(CommitHash::of(b"a refused commit")), false),
        fingerprint(&world, A0, None, true),
    ];
    for (i, base) in bases.iter().enumerate() {
        let slot = world.slot(READER);
        let reading = world.album(READER).read_fingerprint(&slot.dev.provider, base);
        assert!(reading.is_ok(), "base {i}: {reading:?}");
    }
    Fixture { world, bases }
}

thread_local! {
    static FIXTURE: Fixture = fixture();
}

fuzz_target!(|data: &[u8]| FIXTURE.with(|fx| {
    let Some(input) = inputs::read(data, &fx.bases) else { return };
    let bytes = input.message;
    let album = fx.world.album(READER);
    let header = fingerprint_header(&bytes);
    if let Ok(header) = &header {
        let _ = album_of_group(&header.group);
    }
    if let Ok(filed) = capsule_chain::rules::check_fingerprint(&album.group_id(), &bytes) {
        assert_eq!(header.as_ref().ok(), Some(&filed), "the board filed what the header does not say");
    }
    let slot = fx.world.slot(READER);
    if let Ok(reading) = album.read_fingerprint(&slot.dev.provider, &bytes) {
        let header = header.expect("a fingerprint a member reads has a header the server reads");
        assert_eq!((reading.sender(), reading.epoch()), (header.sender, header.epoch));
    }
}));
