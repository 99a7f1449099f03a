//! A small live album, built once per fuzzing process, and its devices'
//! state saved and restored around every input.
//!
//! Restoring is cheap: a device's OpenMLS state is its memory storage (a hash
//! map of a few dozen entries, copied back), and Capsule's own state is the
//! album record, loaded again with [`Album::load`].

use std::collections::HashMap;

use capsule_amk::{AlbumId, AlbumMetadata, HistoryPolicy};
use capsule_identity::UserId;
use capsule_mls::testkit::{Directory, TestDevice, uid};
use capsule_mls::{Album, Applied, Change, OpenMlsProvider as _, Outgoing, PublicAlbum, PublicApplied, Result};

/// The album every fixture builds.
pub const ALBUM: AlbumId = AlbumId::from_bytes([0xC4; 16]);
/// The directory seed: identities (and so certificates and KeyPackages'
/// credentials) are the same in every process.
pub const SEED: u8 = 0x5A;

/// Alice's first device: creates the album; Alice is its only admin.
pub const A0: usize = 0;
/// Alice's second device.
pub const A1: usize = 1;
/// Bob's first device.
pub const B0: usize = 2;
/// Bob's second device.
pub const B1: usize = 3;
/// Carol's device.
pub const C0: usize = 4;
/// Dave's device (trusted, never added by the fixtures).
pub const D0: usize = 5;
/// Each device's user number, in the order the directory makes them.
const OWNERS: [u8; 6] = [1, 1, 2, 2, 3, 4];

/// The user a device belongs to.
#[must_use]
pub fn owner(device: usize) -> UserId {
    uid(OWNERS.get(device).copied().unwrap_or(0))
}

/// One device and its album, if it holds one.
#[derive(Debug)]
pub struct Slot {
    /// Identity and storage.
    pub dev: TestDevice,
    /// Its album.
    pub album: Option<Album>,
}

/// Users Alice (1, admin), Bob (2), Carol (3) and Dave (4), their devices,
/// one album and the server's public state of it.
#[derive(Debug)]
pub struct World {
    /// Identities and the trust store.
    pub dir: Directory,
    /// Devices, indexed by [`A0`] and kin.
    pub slots: Vec<Slot>,
    /// The server's public state (`PublicAlbum::to_bytes`) at the head.
    pub server: Vec<u8>,
}

impl World {
    /// The directory, every device, and the album created by [`A0`] with
    /// `members` added one honest ceremony each, in order.
    ///
    /// # Panics
    /// When any step fails: a fixture that cannot be built is a bug.
    #[must_use]
    pub fn new(members: &[usize]) -> Self {
        let mut dir = Directory::new(SEED);
        for n in 1..=4 {
            dir.user(n).expect("user");
        }
        let slots = (0..OWNERS.len())
            .map(|d| Slot { dev: dir.device(owner(d)).expect("device"), album: None })
            .collect::<Vec<_>>();
        let metadata = AlbumMetadata::new(ALBUM, HistoryPolicy::Full, [owner(A0)].into()).expect("metadata");
        let mut world = Self { dir, slots, server: Vec::new() };
        let creator = world.slot_mut(A0);
        let album = Album::create(&creator.dev.provider, &creator.dev.me, metadata).expect("create");
        let genesis = album.genesis(&creator.dev.provider, &creator.dev.me).expect("genesis");
        creator.album = Some(album);
        let public = PublicAlbum::from_genesis(ALBUM, &genesis, world.dir.validation()).expect("server genesis");
        world.server = public.to_bytes().expect("server state");
        for &d in members {
            world.add(A0, d);
        }
        world
    }

    /// Device `d`.
    ///
    /// # Panics
    /// For a device that does not exist.
    #[must_use]
    pub fn slot(&self, d: usize) -> &Slot {
        self.slots.get(d).expect("no such device")
    }

    /// Device `d`, mutably.
    ///
    /// # Panics
    /// For a device that does not exist.
    pub fn slot_mut(&mut self, d: usize) -> &mut Slot {
        self.slots.get_mut(d).expect("no such device")
    }

    /// Device `d`'s album.
    ///
    /// # Panics
    /// For a device without one.
    #[must_use]
    pub fn album(&self, d: usize) -> &Album {
        self.slot(d).album.as_ref().expect("device holds no album")
    }

    /// A fresh KeyPackage of device `d` (its private keys go to `d`'s storage).
    ///
    /// # Panics
    /// When OpenMLS cannot make one.
    #[must_use]
    pub fn kp(&self, d: usize) -> Vec<u8> {
        self.slot(d).dev.key_package().expect("key package")
    }

    /// The change that adds device `d` for a committer of user `by`: its own
    /// user's device, or every listed device of another user.
    #[must_use]
    pub fn add_change(&self, by: UserId, d: usize) -> Change {
        let key_package = self.kp(d);
        if owner(d) == by {
            Change::AddDevice { key_package }
        } else {
            Change::AddUser { user: owner(d), directory: vec![key_package] }
        }
    }

    /// Device `d` stages `change`.
    ///
    /// # Errors
    /// As [`Album::stage`]; [`capsule_mls::MlsError::NotMember`] for a device without an album.
    pub fn stage(&mut self, d: usize, change: &Change) -> Result<Outgoing> {
        let validation = self.dir.validation();
        let slot = self.slots.get_mut(d).ok_or(capsule_mls::MlsError::NotMember("no such device"))?;
        let album = slot.album.as_mut().ok_or(capsule_mls::MlsError::NotMember("no album"))?;
        album.stage(&slot.dev.provider, &slot.dev.me, change, validation)
    }

    /// Device `d` processes `commit`.
    ///
    /// # Errors
    /// As [`Album::process`].
    pub fn process(&mut self, d: usize, commit: &[u8]) -> Result<Applied> {
        let validation = self.dir.validation();
        let slot = self.slots.get_mut(d).ok_or(capsule_mls::MlsError::NotMember("no such device"))?;
        let album = slot.album.as_mut().ok_or(capsule_mls::MlsError::NotMember("no album"))?;
        album.process(&slot.dev.provider, commit, validation)
    }

    /// What the server says of `commit`: on acceptance its state advances;
    /// a refusal leaves it as it was.
    ///
    /// # Errors
    /// As [`PublicAlbum::stage`] and [`PublicAlbum::apply`].
    pub fn server_check(&mut self, commit: &[u8]) -> Result<PublicApplied> {
        let mut public = PublicAlbum::from_bytes(&self.server)?;
        let applied = public.stage(commit).and_then(|c| public.apply(c, self.dir.validation()))?;
        self.server = public.to_bytes()?;
        Ok(applied)
    }

    /// The server ordered `out`, staged by `from`: it confirms, every other
    /// member processes it, `joiners` join.
    ///
    /// # Panics
    /// On any refusal: every step is honest.
    pub fn deliver(&mut self, from: usize, out: &Outgoing, joiners: &[usize]) {
        self.server_check(&out.commit).expect("the server refused an honest commit");
        let validation = self.dir.validation();
        for (d, slot) in self.slots.iter_mut().enumerate() {
            let Some(album) = slot.album.as_mut().filter(|a| !a.is_evicted()) else { continue };
            let result = if d == from {
                album.confirm(&slot.dev.provider)
            } else {
                album.process(&slot.dev.provider, &out.commit, validation)
            };
            result.expect("a member refused an honest commit");
        }
        for &j in joiners {
            let slot = self.slots.get_mut(j).expect("no such device");
            let (welcome, bundle) =
                (out.welcome.as_deref().unwrap_or_default(), out.bundle.as_deref().unwrap_or_default());
            slot.album = Some(Album::join(&slot.dev.provider, welcome, bundle, validation).expect("join"));
        }
    }

    /// `by` adds device `d` in one honest ceremony.
    ///
    /// # Panics
    /// On any refusal.
    pub fn add(&mut self, by: usize, d: usize) {
        let change = self.add_change(owner(by), d);
        let out = self.stage(by, &change).expect("stage an add");
        self.deliver(by, &out, &[d]);
    }

    /// Every device's state and the server's.
    #[must_use]
    pub fn save(&self) -> Saved {
        Saved { devices: self.slots.iter().map(SavedDevice::of).collect(), server: self.server.clone() }
    }

    /// Puts back what [`World::save`] saved.
    ///
    /// # Panics
    /// If a saved album does not load: the fixture is broken.
    pub fn restore(&mut self, saved: &Saved) {
        for (slot, device) in self.slots.iter_mut().zip(&saved.devices) {
            slot.album = device.restore(&slot.dev);
        }
        self.server.clone_from(&saved.server);
    }
}

/// A snapshot of a [`World`].
#[derive(Clone, Debug)]
pub struct Saved {
    /// Each device's, in order.
    pub devices: Vec<SavedDevice>,
    /// The server's state.
    pub server: Vec<u8>,
}

/// One device's storage and album record.
#[derive(Clone, Debug)]
pub struct SavedDevice {
    values: HashMap<Vec<u8>, Vec<u8>>,
    record: Option<Vec<u8>>,
}

impl SavedDevice {
    /// Device `slot` as it is now.
    ///
    /// # Panics
    /// If the storage lock is poisoned or the record does not encode.
    #[must_use]
    pub fn of(slot: &Slot) -> Self {
        let values = slot.dev.provider.storage().values.read().expect("storage lock").clone();
        let record = slot.album.as_ref().map(|a| a.to_record().expect("album record").to_vec());
        Self { values, record }
    }

    /// Puts the storage back and loads the album again.
    ///
    /// # Panics
    /// If the saved album does not load.
    #[must_use]
    pub fn restore(&self, dev: &TestDevice) -> Option<Album> {
        *dev.provider.storage().values.write().expect("storage lock") = self.values.clone();
        self.record.as_ref().map(|r| Album::load(&dev.provider, r).expect("saved album loads"))
    }

    /// Whether `dev`'s storage holds exactly what was saved.
    ///
    /// # Panics
    /// If the storage lock is poisoned.
    #[must_use]
    pub fn storage_unchanged(&self, dev: &TestDevice) -> bool {
        *dev.provider.storage().values.read().expect("storage lock") == self.values
    }

    /// What differs between `dev`'s storage and the saved one, one line per
    /// entry added, removed or changed (keys shown as text, cut short): for
    /// the message of a failed [`SavedDevice::storage_unchanged`].
    ///
    /// # Panics
    /// If the storage lock is poisoned.
    #[must_use]
    pub fn storage_diff(&self, dev: &TestDevice) -> String {
        let now = dev.provider.storage().values.read().expect("storage lock");
        let show = |k: &[u8]| String::from_utf8_lossy(k).chars().take(80).collect::<String>();
        let mut lines = Vec::new();
        for (k, v) in now.iter() {
            match self.values.get(k) {
                None => lines.push(format!("+ {}", show(k))),
                Some(old) if old != v => lines.push(format!("~ {}", show(k))),
                Some(_) => {}
            }
        }
        lines.extend(self.values.keys().filter(|k| !now.contains_key(*k)).map(|k| format!("- {}", show(k))));
        lines.sort();
        lines.join("\n")
    }

    /// The saved album record.
    #[must_use]
    pub fn record(&self) -> Option<&[u8]> {
        self.record.as_deref()
    }
}

/// What every member in the same state agrees on: epoch, epoch
/// authenticator, members, album context, current AMK (version and key) and
/// write key. Compared with `==`; keys compare in constant time.
#[derive(Debug)]
pub struct Agreed<'a> {
    /// The epoch.
    pub epoch: capsule_mls::Epoch,
    /// Its authenticator.
    pub authenticator: Vec<u8>,
    /// The members.
    pub members: Vec<capsule_mls::Member>,
    /// The album context.
    pub context: &'a capsule_mls::AlbumContext,
    /// The current AMK.
    pub current: (capsule_amk::AmkVersion, &'a capsule_amk::Amk),
    /// The write key.
    pub write_key: (capsule_amk::AmkVersion, &'a capsule_amk::WriteKey),
}

impl PartialEq for Agreed<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.epoch == other.epoch
            && self.authenticator == other.authenticator
            && self.members == other.members
            && self.context == other.context
            && self.current == other.current
            && self.write_key == other.write_key
    }
}

/// What `album` must agree on with every member in its state.
#[must_use]
pub fn agreed(album: &Album) -> Agreed<'_> {
    Agreed {
        epoch: album.epoch(),
        authenticator: album.epoch_authenticator(),
        members: album.members(),
        context: album.context(),
        current: album.keyring().current(),
        write_key: album.keyring().write_key(),
    }
}
