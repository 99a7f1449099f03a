//! Test harness: users, devices with their own storage, an ordering stand-in.

#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)] // test code

use std::ops::{Deref, DerefMut};

use capsule_amk::{AlbumId, AlbumMetadata, AmkVersion, HistoryPolicy};
use capsule_identity::{DeviceCertificate, DeviceId, DeviceSigningKey, UserId};
use capsule_mls::testkit::{Directory, TestDevice};
pub use capsule_mls::testkit::{NOW, uid};
use capsule_mls::*;

pub const ALBUM: AlbumId = AlbumId::from_bytes([0xA1; 16]);

pub struct Device {
    pub user: UserId,
    pub id: DeviceId,
    pub me: DeviceIdentity,
    pub provider: MemoryProvider,
    pub album: Option<Album>,
}

pub struct World {
    pub dir: Directory,
    pub devices: Vec<Device>,
    /// The server's view: the album's public state, kept as bytes between
    /// commits as a server keeps it. Every delivered commit must pass it.
    pub server: Option<Vec<u8>>,
}

impl Deref for World {
    type Target = Directory;
    fn deref(&self) -> &Directory {
        &self.dir
    }
}

impl DerefMut for World {
    fn deref_mut(&mut self) -> &mut Directory {
        &mut self.dir
    }
}

impl World {
    pub fn new(seed: u8) -> Self {
        Self { dir: Directory::new(seed), devices: Vec::new(), server: None }
    }

    pub fn user(&mut self, n: u8) -> UserId {
        self.dir.user(n).unwrap()
    }

    pub fn certify(&mut self, user: UserId, device: DeviceId, key: &DeviceSigningKey) -> DeviceCertificate {
        self.dir.certify(user, device, key).unwrap()
    }

    /// A new device of `user`; returns its index.
    pub fn device(&mut self, user: UserId) -> usize {
        let TestDevice { user, id, me, provider } = self.dir.device(user).unwrap();
        self.devices.push(Device { user, id, me, provider, album: None });
        self.devices.len() - 1
    }

    pub fn kp(&self, d: usize) -> Vec<u8> {
        key_package(&self.devices[d].provider, &self.devices[d].me).unwrap()
    }

    pub fn directory(&self, user: UserId) -> Vec<Vec<u8>> {
        (0..self.devices.len())
            .filter(|d| self.devices[*d].user == user && self.devices[*d].album.is_none())
            .map(|d| self.kp(d))
            .collect()
    }

    pub fn create(&mut self, d: usize, policy: HistoryPolicy, admins: &[UserId]) {
        let meta = AlbumMetadata::new(ALBUM, policy, admins.iter().copied().collect()).unwrap();
        let dev = &mut self.devices[d];
        let album = Album::create(&dev.provider, &dev.me, meta).unwrap();
        let genesis = album.genesis(&dev.provider, &dev.me).unwrap();
        dev.album = Some(album);
        let validation = Validation { trust: &self.dir.trust, now: NOW };
        let public = PublicAlbum::from_genesis(ALBUM, &genesis, validation).unwrap();
        self.server = Some(public.to_bytes().unwrap());
    }

    /// The server's public state of the album.
    pub fn public(&self) -> PublicAlbum {
        PublicAlbum::from_bytes(self.server.as_ref().unwrap()).unwrap()
    }

    /// What the server says of `commit`: refused (and its state unchanged),
    /// or applied to its state.
    pub fn server_checks(&mut self, commit: &[u8]) -> Result<PublicApplied> {
        let Some(before) = self.server.clone() else { return Err(MlsError::NotMember("no server state")) };
        let mut public = PublicAlbum::from_bytes(&before).unwrap();
        let validation = Validation { trust: &self.dir.trust, now: NOW };
        let result = public.stage(commit).and_then(|c| public.apply(c, validation));
        match &result {
            Ok(_) => self.server = Some(public.to_bytes().unwrap()),
            Err(_) => assert_eq!(public.to_bytes().unwrap(), before, "a refusal changed the server's state"),
        }
        result
    }

    pub fn album(&self, d: usize) -> &Album {
        self.devices[d].album.as_ref().unwrap()
    }

    pub fn members(&self) -> Vec<usize> {
        (0..self.devices.len()).filter(|d| self.devices[*d].album.as_ref().is_some_and(|a| !a.is_evicted())).collect()
    }

    /// Stages `change` on device `d`.
    pub fn stage(&mut self, d: usize, change: &Change) -> Result<Outgoing> {
        let validation = Validation { trust: &self.dir.trust, now: NOW };
        let dev = &mut self.devices[d];
        let album = dev.album.as_mut().unwrap();
        album.stage(&dev.provider, &dev.me, change, validation)
    }

    /// The ordering stand-in accepted `out` from device `from`: it confirms, every
    /// other member processes the commit, joiners join. Returns each member's result.
    pub fn deliver(&mut self, from: usize, out: &Outgoing, joiners: &[usize]) -> Vec<Applied> {
        if self.server.is_some() {
            self.server_checks(&out.commit).unwrap_or_else(|e| panic!("the server refused an honest commit: {e}"));
        }
        let mut applied = Vec::new();
        let validation = Validation { trust: &self.dir.trust, now: NOW };
        for d in self.members() {
            let dev = &mut self.devices[d];
            let album = dev.album.as_mut().unwrap();
            let result = if d == from {
                album.confirm(&dev.provider)
            } else {
                album.process(&dev.provider, &out.commit, validation)
            };
            applied.push(result.unwrap_or_else(|e| panic!("device {d}: {e}")));
        }
        for &j in joiners {
            let dev = &mut self.devices[j];
            let album =
                Album::join(&dev.provider, out.welcome.as_ref().unwrap(), out.bundle.as_ref().unwrap(), validation)
                    .unwrap_or_else(|e| panic!("joiner {j}: {e}"));
            dev.album = Some(album);
        }
        applied
    }

    /// Every active member has the same epoch, authenticator, members and current AMK.
    pub fn assert_consistent(&self) {
        let members = self.members();
        let first = self.album(members[0]);
        for &d in &members[1..] {
            let a = self.album(d);
            assert_eq!(a.epoch(), first.epoch(), "device {d} epoch");
            assert_eq!(a.epoch_authenticator(), first.epoch_authenticator(), "device {d} epoch authenticator");
            assert_eq!(a.members(), first.members(), "device {d} members");
            assert_eq!(a.keyring().current(), first.keyring().current(), "device {d} current AMK");
            assert_eq!(a.keyring().write_key(), first.keyring().write_key(), "device {d} write key");
            assert_eq!(a.context(), first.context(), "device {d} album context");
        }
        assert_eq!(first.members().len(), members.len(), "member list matches the devices that are in");
        if self.server.is_some() {
            let public = self.public();
            assert_eq!(public.epoch(), first.epoch(), "server epoch");
            assert_eq!(public.members(), first.members(), "server members");
            assert_eq!(public.context(), first.context(), "server album context");
        }
    }

    pub fn amk_version(&self, d: usize) -> AmkVersion {
        self.album(d).keyring().current_version()
    }
}

/// Alice (admin, device 0) and Bob (device 1) in an album.
pub fn alice_and_bob(seed: u8) -> World {
    let mut w = World::new(seed);
    let alice = w.user(1);
    let a0 = w.device(alice);
    w.create(a0, HistoryPolicy::Full, &[alice]);
    let bob = w.user(2);
    let b0 = w.device(bob);
    let dir = w.directory(bob);
    let out = w.stage(a0, &Change::AddUser { user: bob, directory: dir }).unwrap();
    w.deliver(a0, &out, &[b0]);
    w
}
