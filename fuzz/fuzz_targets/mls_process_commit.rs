//! Fuzz `Album::process` (every commit the chain hands a member) against a
//! live album of Alice (admin), Bob and Carol, read by Bob's device.
//!
//! An input is raw commit bytes or one of the commits made at start-up,
//! edited (`capsule_fuzz::inputs`): honest ones of every ceremony, and
//! validly signed ones that break Capsule's rules (a non-admin's removal or
//! add, a context change without its rotation). Checks:
//! - a refusal is typed (not `is_internal`) and changes nothing: epoch,
//!   epoch authenticator, album record and OpenMLS storage are as before,
//!   and the album reloads from storage as it was;
//! - an acceptance moves exactly one epoch on, to a state one of the valid
//!   commits reaches (nothing else can be signed);
//! - the server's public validation (`PublicAlbum::stage` + `apply`, the
//!   same rules) accepts exactly what the member accepts, except a commit
//!   whose signed part is a valid commit's and whose last bytes, the
//!   confirmation and membership tags, are not: MACs under keys only members
//!   hold, outside the signature, so no server can check them (RFC 9420,
//!   6.2). Members refuse such a commit alike (`BadSignature`, or `Refused`
//!   for the confirmation tag), which the invalid-commit recovery handles.
//!
//! `claimed_committer` and `made_this_epoch` read the same bytes.
#![no_main]

use std::cell::RefCell;

use capsule_fuzz::inputs;
use capsule_fuzz::world::{A0, A1, B0, B1, C0, D0, Saved, World, owner};
use capsule_mls::testkit::forged_commit;
use capsule_mls::{Album, Change, MlsError, PublicAlbum, RekeyId, RekeyMarker, RekeyReason};
use libfuzzer_sys::fuzz_target;

/// The member that reads every input.
const READER: usize = B0;

/// The encoded tags that end a member's commit: the confirmation tag and
/// the membership tag, each a one-byte length and 32 bytes (SHA-256 MACs).
const TAGS: usize = 2 * (1 + 32);

/// `commit` is one of `bases` but for its tags (see the module docs).
fn only_tags_differ(commit: &[u8], bases: &[Vec<u8>]) -> bool {
    bases.iter().any(|base| {
        let signed = base.len().saturating_sub(TAGS);
        commit.len() >= signed && commit.get(..signed) == base.get(..signed)
    })
}

struct Fixture {
    world: World,
    saved: Saved,
    /// Commits made at the saved epoch.
    bases: Vec<Vec<u8>>,
    /// The epoch authenticators the accepted bases reach.
    reached: Vec<Vec<u8>>,
    /// The server's state at the saved epoch.
    server: PublicAlbum,
}

fn fixture() -> Fixture {
    let mut world = World::new(&[B0, C0]);
    let start = world.save();
    let carol = capsule_mls::Member { user: owner(C0), device: world.slot(C0).dev.id };
    let alice0 = capsule_mls::Member { user: owner(A0), device: world.slot(A0).dev.id };
    let mut bumped = world.album(A0).context().clone();
    // Two versions at once: no ceremony skips one.
    bumped.amk_version = bumped.amk_version.next().and_then(|v| v.next()).expect("version");
    let upgrade = capsule_amk::AlbumUpgrade {
        history_policy: Some(capsule_amk::HistoryPolicy::Capped { last: 2.try_into().expect("non-zero") }),
        admins: None,
    };
    let marker = RekeyMarker { id: RekeyId(7), reason: RekeyReason::AdminInitiated };
    let honest: Vec<(usize, Change)> = vec![
        (A0, Change::RotateAmk),
        (A0, world.add_change(owner(A0), A1)),
        (A0, world.add_change(owner(A0), D0)),
        (A0, Change::RemoveUser { user: owner(C0) }),
        (A0, Change::SelfUpdate),
        (A0, Change::UpgradeAlbum { upgrade }),
        (A0, Change::BeginRekey { marker }),
        (C0, Change::RotateAmk),
        (C0, Change::SelfUpdate),
    ];
    let mut bases = Vec::new();
    for (by, change) in &honest {
        world.restore(&start);
        bases.push(world.stage(*by, change).expect("stage an honest change").commit);
    }
    // Validly signed, against Capsule's rules: every member must refuse them.
    world.restore(&start);
    let b1 = world.kp(B1);
    let rogue = [
        forged_commit(&world.slot(C0).dev, world.album(C0).id(), &[], &[alice0], None),
        forged_commit(&world.slot(C0).dev, world.album(C0).id(), &[b1], &[], None),
        forged_commit(&world.slot(A0).dev, world.album(A0).id(), &[], &[], Some(&bumped)),
        forged_commit(&world.slot(A0).dev, world.album(A0).id(), &[], &[carol], None),
    ];
    let honest_count = bases.len();
    bases.extend(rogue.into_iter().map(|c| c.expect("forge a commit")));
    world.restore(&start);
    let saved = world.save();
    let server = PublicAlbum::from_bytes(&saved.server).expect("server state");
    let mut reached = Vec::new();
    for (i, commit) in bases.iter().enumerate() {
        world.restore(&saved);
        let applied = world.process(READER, commit);
        // The forged removal of Carol without a rotation breaks the rules too.
        assert_eq!(applied.is_ok(), i < honest_count, "base {i}: {applied:?}");
        if applied.is_ok() {
            reached.push(world.album(READER).epoch_authenticator());
        }
    }
    world.restore(&saved);
    Fixture { world, saved, bases, reached, server }
}

thread_local! {
    static FIXTURE: RefCell<Fixture> = RefCell::new(fixture());
}

fuzz_target!(|data: &[u8]| {
    FIXTURE.with_borrow_mut(|fx| {
        let Some(input) = inputs::read(data, &fx.bases) else { return };
        let commit = input.message;
        let saved = fx.saved.devices.get(READER).expect("reader");
        let slot = fx.world.slot_mut(READER);
        slot.album = saved.restore(&slot.dev);
        let validation = fx.world.dir.validation();
        let slot = fx.world.slots.get_mut(READER).expect("reader");
        let album = slot.album.as_mut().expect("the reader holds the album");
        let (epoch, authenticator) = (album.epoch(), album.epoch_authenticator());
        let _ = album.claimed_committer(&commit);
        let _ = album.made_this_epoch(&commit);

        let server = fx.server.stage(&commit).and_then(|staged| {
            let mut state = PublicAlbum::from_bytes(&fx.saved.server)?;
            state.apply(staged, validation)
        });
        match album.process(&slot.dev.provider, &commit, validation) {
            Ok(applied) => {
                assert_eq!(applied.epoch, album.epoch());
                assert_eq!(album.epoch().0, epoch.0 + 1, "an accepted commit moves one epoch");
                assert!(fx.reached.contains(&album.epoch_authenticator()), "accepted a commit no member made");
                assert!(server.is_ok(), "the member applied a commit the server refuses: {server:?}");
            }
            Err(e) => {
                assert!(!e.is_internal(), "a refusal classified as a fault: {e}");
                if server.is_ok() {
                    assert!(
                        only_tags_differ(&commit, &fx.bases)
                            && matches!(e, MlsError::BadSignature | MlsError::Refused(_)),
                        "the server orders a commit the member refuses ({e})"
                    );
                }
                assert_eq!((album.epoch(), album.epoch_authenticator()), (epoch, authenticator.clone()));
                let record = album.to_record().expect("record");
                assert_eq!(Some(record.as_slice()), saved.record(), "a refusal changed the album record");
                assert!(
                    saved.storage_unchanged(&slot.dev),
                    "a refusal changed the stored group ({e}):\n{}",
                    saved.storage_diff(&slot.dev)
                );
                let again = Album::load(&slot.dev.provider, &record).expect("reload after a refusal");
                assert_eq!((again.epoch(), again.epoch_authenticator()), (epoch, authenticator));
            }
        }
    });
});
