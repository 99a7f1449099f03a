//! A byte string drives a small album through ceremonies, deliveries, lost
//! answers, out-of-order deliveries and restarts, checking the invariants
//! after every step.
//!
//! The album starts with Alice's first device (admin), Bob's and Carol's;
//! Alice's second device is spare. An in-memory chain stands in for the
//! server: it orders a submitted commit when it was made at the head and
//! passes the server's public validation (which it must, every commit being
//! honest). Each op is two bytes `[op, arg]` (at most [`MAX_OPS`]):
//!
//! | op % 8 | does                                                                 |
//! |--------|----------------------------------------------------------------------|
//! | 0      | a device stages a change (rotate, update, add a spare, remove a device or user, upgrade, begin or finish a re-key) |
//! | 1      | it submits its pending commit; the answer arrives or is lost         |
//! | 2      | it processes the next 1 to 3 commits of the chain                    |
//! | 3      | it is handed a commit out of order (one ahead) or again (a replay)   |
//! | 4      | it restarts (album record and storage reloaded)                      |
//! | 5      | it drops its pending commit (the server refused it)                  |
//! | 6      | a device added on the chain joins from its Welcome                   |
//! | 7      | it reads another member's fingerprint                                |
//!
//! Invariants: a refused step changes nothing (record, epoch, authenticator,
//! storage); every honest step succeeds; a device that processed `n` commits
//! of the chain is at epoch `base + n` with the epoch authenticator, members,
//! album context and current AMK every other device had there; an AMK
//! version never changes its key; a device at the head agrees with the
//! server's public state; two members in the same state read each other's
//! fingerprints as agreeing.
#![no_main]

use std::cell::RefCell;
use std::collections::BTreeMap;

use capsule_amk::{AlbumUpgrade, AmkVersion, HistoryPolicy};
use capsule_fuzz::world::{A0, A1, B0, C0, Saved, SavedDevice, World, owner};
use capsule_mls::{Change, Member, MlsError, Outgoing, PublicAlbum, Reading, RekeyId, RekeyMarker, RekeyReason};
use libfuzzer_sys::fuzz_target;

/// Ops per input: each is milliseconds of X-Wing and ML-DSA work.
const MAX_OPS: usize = 8;
/// The devices ops pick from (`arg % 4`).
const DEVICES: [usize; 4] = [A0, A1, B0, C0];

struct Fixture {
    world: World,
    saved: Saved,
    /// The epoch the chain starts at.
    base: u64,
}

fn fixture() -> Fixture {
    let world = World::new(&[B0, C0]);
    let saved = world.save();
    let base = world.album(A0).epoch().0;
    Fixture { world, saved, base }
}

thread_local! {
    static FIXTURE: RefCell<Fixture> = RefCell::new(fixture());
}

/// One commit the chain ordered.
struct Entry {
    out: Outgoing,
}

/// What every device that processed the same prefix of the chain holds.
#[derive(Debug, PartialEq, Eq)]
struct State {
    authenticator: Vec<u8>,
    members: Vec<Member>,
    context: Vec<u8>,
    current: (AmkVersion, [u8; 32]),
    write_key: (AmkVersion, [u8; 32]),
}

struct Run<'a> {
    world: &'a mut World,
    base: u64,
    chain: Vec<Entry>,
    /// How many chain entries each device has processed (or joined after).
    cursor: BTreeMap<usize, usize>,
    /// The state after each prefix of the chain, as the first device there saw it.
    states: BTreeMap<usize, State>,
    /// Every AMK version's key, as first seen.
    amks: BTreeMap<AmkVersion, [u8; 32]>,
    /// Per device: the chain entry whose Welcome it has not used yet.
    mailbox: BTreeMap<usize, usize>,
}

impl Run<'_> {
    fn active(&self, d: usize) -> bool {
        self.world.slot(d).album.as_ref().is_some_and(|a| !a.is_evicted())
    }

    fn member(&self, d: usize) -> Member {
        Member { user: owner(d), device: self.world.slot(d).dev.id }
    }

    fn device_of(&self, member: Member) -> Option<usize> {
        (0..self.world.slots.len()).find(|&d| self.member(d) == member)
    }

    /// Runs `step` on device `d`; a refusal must leave `d` exactly as it was.
    fn refusable<T>(&mut self, d: usize, step: impl FnOnce(&mut World) -> Result<T, MlsError>) -> Option<T> {
        let before = SavedDevice::of(self.world.slot(d));
        let album = self.world.album(d);
        let (epoch, authenticator, pending) = (album.epoch(), album.epoch_authenticator(), album.pending().cloned());
        match step(self.world) {
            Ok(value) => Some(value),
            Err(e) => {
                assert!(!e.is_internal(), "device {d}: a refusal classified as a fault: {e}");
                let album = self.world.album(d);
                assert_eq!((album.epoch(), album.epoch_authenticator()), (epoch, authenticator), "device {d}: {e}");
                assert_eq!(album.pending(), pending.as_ref(), "device {d}: a refusal changed the pending commit");
                let record = album.to_record().expect("record");
                assert_eq!(Some(record.as_slice()), before.record(), "device {d}: a refusal changed the record ({e})");
                let dev = &self.world.slot(d).dev;
                assert!(
                    before.storage_unchanged(dev),
                    "device {d}: a refusal changed storage ({e}):\n{}",
                    before.storage_diff(dev)
                );
                None
            }
        }
    }

    fn change(&self, d: usize, arg: u8) -> Option<Change> {
        let album = self.world.album(d);
        let members = album.members();
        let pick = DEVICES.get(usize::from(arg >> 5) % DEVICES.len()).copied().unwrap_or(A0);
        Some(match (arg >> 2) % 8 {
            0 => Change::RotateAmk,
            1 => Change::SelfUpdate,
            2 => {
                let mut candidates = DEVICES.iter().cycle().skip(usize::from(arg >> 5)).take(DEVICES.len());
                let spare = candidates.find(|&&s| !members.contains(&self.member(s))).copied()?;
                self.world.add_change(owner(d), spare)
            }
            3 => Change::RemoveDevice { device: self.world.slot(pick).dev.id },
            4 => Change::RemoveUser { user: owner(pick) },
            5 => {
                let history_policy = match album.context().metadata.history_policy() {
                    HistoryPolicy::Full => HistoryPolicy::Capped { last: 1.try_into().ok()? },
                    HistoryPolicy::Capped { .. } => HistoryPolicy::Full,
                };
                Change::UpgradeAlbum { upgrade: AlbumUpgrade { history_policy: Some(history_policy), admins: None } }
            }
            6 => Change::BeginRekey {
                marker: RekeyMarker { id: RekeyId(u64::from(arg)), reason: RekeyReason::AdminInitiated },
            },
            _ => Change::FinishRekey { id: album.context().rekey.map_or(RekeyId(0), |m| m.id) },
        })
    }

    fn step(&mut self, op: u8, arg: u8) {
        let d = DEVICES.get(usize::from(arg) % DEVICES.len()).copied().unwrap_or(A0);
        match op % 8 {
            0 if self.active(d) => {
                let Some(change) = self.change(d, arg) else { return };
                if let Some(out) = self.refusable(d, |w| w.stage(d, &change)) {
                    assert_eq!(self.world.album(d).pending(), Some(&out));
                }
            }
            1 if self.active(d) => self.submit(d, arg & 4 == 0),
            2 if self.active(d) => {
                for _ in 0..=(arg >> 2) % 3 {
                    if !self.deliver(d) {
                        break;
                    }
                }
            }
            3 if self.active(d) => {
                let at = self.cursor.get(&d).copied().unwrap_or(0);
                let entry = if arg & 4 == 0 { at.checked_add(1) } else { at.checked_sub(1) };
                let Some(commit) = entry.and_then(|i| self.chain.get(i)).map(|e| e.out.commit.clone()) else { return };
                let processed = self.refusable(d, |w| w.process(d, &commit));
                assert!(processed.is_none(), "device {d} applied a commit out of order");
            }
            4 if self.world.slot(d).album.is_some() => {
                let slot = self.world.slot_mut(d);
                let album = slot.album.take().expect("album");
                let record = album.to_record().expect("record");
                let loaded = capsule_mls::Album::load(&slot.dev.provider, &record).expect("a restart loads");
                assert_eq!(loaded.to_record().expect("record"), record, "device {d}: a restart changed the record");
                assert_eq!(loaded.epoch_authenticator(), album.epoch_authenticator());
                assert_eq!(loaded.pending(), album.pending());
                slot.album = Some(loaded);
            }
            5 if self.active(d) => {
                // Only a commit the server did not order can be dropped.
                let Some(pending) = self.world.album(d).pending().map(|p| p.commit_hash) else { return };
                if self.chain.iter().any(|e| e.out.commit_hash == pending) {
                    return;
                }
                let slot = self.world.slot_mut(d);
                let album = slot.album.as_mut().expect("album");
                let (epoch, authenticator) = (album.epoch(), album.epoch_authenticator());
                album.reject(&slot.dev.provider).expect("reject");
                assert_eq!((album.epoch(), album.epoch_authenticator()), (epoch, authenticator));
                assert!(album.pending().is_none());
            }
            6 => self.join(arg),
            7 if self.active(d) => {
                let other = DEVICES.get(usize::from(arg >> 2) % DEVICES.len()).copied().unwrap_or(A0);
                if other == d || !self.active(other) {
                    return;
                }
                let (from, to) = (self.world.slot(other), self.world.slot(d));
                let bytes = self.world.album(other).fingerprint(&from.dev.provider, &from.dev.me, None);
                let bytes = bytes.expect("a member makes a fingerprint");
                let reading = self.world.album(d).read_fingerprint(&to.dev.provider, &bytes);
                if self.cursor.get(&d) == self.cursor.get(&other) {
                    assert!(matches!(reading, Ok(Reading::Agrees { .. })), "{d} reads {other}: {reading:?}");
                }
            }
            _ => {}
        }
    }

    /// `d` submits its pending commit; `answered` whether the answer arrives.
    fn submit(&mut self, d: usize, answered: bool) {
        let Some(out) = self.world.album(d).pending().cloned() else { return };
        let head = PublicAlbum::from_bytes(&self.world.server).expect("server state").epoch();
        if out.epoch != head || self.chain.iter().any(|e| e.out.commit_hash == out.commit_hash) {
            return; // a conflict (or a duplicate): nothing ordered
        }
        let applied = self.world.server_check(&out.commit);
        let applied = applied.unwrap_or_else(|e| panic!("the server refused device {d}'s honest commit: {e}"));
        let added = applied.added.iter().filter_map(|m| self.device_of(*m)).collect::<Vec<_>>();
        for &j in &added {
            self.mailbox.insert(j, self.chain.len());
        }
        self.chain.push(Entry { out });
        if answered {
            let at = self.cursor.get(&d).copied().unwrap_or(0);
            assert_eq!(at + 1, self.chain.len(), "device {d} committed at the head without being there");
            let slot = self.world.slot_mut(d);
            let album = slot.album.as_mut().expect("album");
            album.confirm(&slot.dev.provider).unwrap_or_else(|e| panic!("device {d} cannot confirm: {e}"));
            self.cursor.insert(d, at + 1);
        }
    }

    /// `d` processes the next commit of the chain; whether there was one.
    fn deliver(&mut self, d: usize) -> bool {
        let at = self.cursor.get(&d).copied().unwrap_or(0);
        let Some(commit) = self.chain.get(at).map(|e| e.out.commit.clone()) else { return false };
        let applied = self.world.process(d, &commit);
        let applied = applied.unwrap_or_else(|e| panic!("device {d} refused chain entry {at}: {e}"));
        self.cursor.insert(d, at + 1);
        !applied.evicted
    }

    /// A device with a Welcome waiting joins from it.
    fn join(&mut self, arg: u8) {
        let mut waiting = self.mailbox.iter().map(|(&j, &i)| (j, i)).filter(|&(j, _)| !self.active(j));
        let Some((j, at)) = waiting
            .nth(usize::from(arg) % 4)
            .or_else(|| self.mailbox.iter().map(|(&j, &i)| (j, i)).find(|&(j, _)| !self.active(j)))
        else {
            return;
        };
        self.mailbox.remove(&j);
        let out = &self.chain.get(at).expect("entry").out;
        let (welcome, bundle) = (out.welcome.clone().unwrap_or_default(), out.bundle.clone().unwrap_or_default());
        let validation = self.world.dir.validation();
        let slot = self.world.slots.get_mut(j).expect("joiner");
        let joined = capsule_mls::Album::join(&slot.dev.provider, &welcome, &bundle, validation);
        slot.album = Some(joined.unwrap_or_else(|e| panic!("device {j} cannot join from entry {at}: {e}")));
        self.cursor.insert(j, at + 1);
    }

    /// The invariants (see the module docs).
    fn check(&mut self) {
        let head = PublicAlbum::from_bytes(&self.world.server).expect("server state");
        for d in DEVICES {
            if !self.active(d) {
                continue;
            }
            let at = self.cursor.get(&d).copied().unwrap_or(0);
            let album = self.world.album(d);
            assert_eq!(album.epoch().0, self.base + u64::try_from(at).expect("small"), "device {d} epoch");
            if let Some(pending) = album.pending() {
                assert_eq!(pending.epoch, album.epoch(), "device {d}: a pending commit of another epoch");
            }
            for (version, amk) in album.keyring().held() {
                let known = *self.amks.entry(version).or_insert(*amk.expose_secret());
                assert!(known == *amk.expose_secret(), "device {d}: AMK version {version:?} changed its key");
            }
            let (version, amk) = album.keyring().current();
            let (write_version, write_key) = album.keyring().write_key();
            let state = State {
                authenticator: album.epoch_authenticator(),
                members: album.members(),
                context: album.context().to_bytes().expect("context"),
                current: (version, *amk.expose_secret()),
                write_key: (write_version, *write_key.expose_secret()),
            };
            if at == self.chain.len() {
                assert_eq!((head.epoch(), &head.members()), (album.epoch(), &state.members), "device {d} vs server");
                assert!(head.context() == album.context(), "device {d}: album context differs from the server's");
            }
            match self.states.get(&at) {
                Some(seen) => assert!(*seen == state, "device {d} diverged after {at} commits"),
                None => {
                    self.states.insert(at, state);
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    FIXTURE.with_borrow_mut(|fx| {
        fx.world.restore(&fx.saved);
        let cursor = DEVICES.iter().filter(|&&d| fx.world.slot(d).album.is_some()).map(|&d| (d, 0)).collect();
        let mut run = Run {
            world: &mut fx.world,
            base: fx.base,
            chain: Vec::new(),
            cursor,
            states: BTreeMap::new(),
            amks: BTreeMap::new(),
            mailbox: BTreeMap::new(),
        };
        run.check();
        for op in data.chunks_exact(2).take(MAX_OPS) {
            let &[op, arg] = op else { continue };
            run.step(op, arg);
            run.check();
        }
    });
});
