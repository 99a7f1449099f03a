//! Test harness: users, devices with their own storage, an ordering stand-in.

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)] // test code

use std::collections::BTreeMap;

use capsule_amk::{AlbumId, AlbumMetadata, AmkVersion, HistoryPolicy};
use capsule_identity::{
    DeviceCertificate, DeviceClaims, DeviceId, DeviceSigningKey, IdentityKeyPair,
    IdentityPublicKey, IdentitySeed, UnixTime, UserId, Validity,
};
use capsule_mls::*;
use chacha20::ChaCha20Rng;
use rand_core::SeedableRng;

pub const NOW: UnixTime = UnixTime(1_800_000_000);
pub const ALBUM: AlbumId = AlbumId::from_bytes([0xA1; 16]);

pub struct Device {
    pub user: UserId,
    pub id: DeviceId,
    pub me: DeviceIdentity,
    pub provider: MemoryProvider,
    pub album: Option<Album>,
}

pub struct World {
    pub rng: ChaCha20Rng,
    pub identities: BTreeMap<UserId, IdentityKeyPair>,
    pub trust: BTreeMap<UserId, IdentityPublicKey>,
    pub devices: Vec<Device>,
}

pub fn uid(n: u8) -> UserId {
    UserId::from_bytes([n; 16])
}

impl World {
    pub fn new(seed: u8) -> Self {
        Self {
            rng: ChaCha20Rng::from_seed([seed; 32]),
            identities: BTreeMap::new(),
            trust: BTreeMap::new(),
            devices: Vec::new(),
        }
    }

    pub fn validation(&self) -> Validation<'_> {
        Validation {
            trust: &self.trust,
            now: NOW,
        }
    }

    pub fn user(&mut self, n: u8) -> UserId {
        let user = uid(n);
        let identity =
            IdentityKeyPair::from_seed(&IdentitySeed::generate_with(&mut self.rng).unwrap())
                .unwrap();
        self.trust.insert(user, identity.public_key().clone());
        self.identities.insert(user, identity);
        user
    }

    pub fn certify(
        &mut self,
        user: UserId,
        device: DeviceId,
        key: &DeviceSigningKey,
    ) -> DeviceCertificate {
        let claims = DeviceClaims {
            user,
            device,
            device_key: key.public_key(),
            validity: Validity::new(UnixTime(0), UnixTime(u64::MAX)).unwrap(),
        };
        self.identities[&user]
            .certify_device_with(&claims, &mut self.rng)
            .unwrap()
    }

    /// A new device of `user`; returns its index.
    pub fn device(&mut self, user: UserId) -> usize {
        let n = self.devices.len();
        let id = DeviceId::from_bytes([u8::try_from(n).unwrap(); 16]);
        let key = DeviceSigningKey::generate_with(&mut self.rng).unwrap();
        let cert = self.certify(user, id, &key);
        let me = DeviceIdentity::new(key, cert).unwrap();
        self.devices.push(Device {
            user,
            id,
            me,
            provider: MemoryProvider::in_memory().unwrap(),
            album: None,
        });
        n
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
        dev.album = Some(Album::create(&dev.provider, &dev.me, meta).unwrap());
    }

    pub fn album(&self, d: usize) -> &Album {
        self.devices[d].album.as_ref().unwrap()
    }

    pub fn members(&self) -> Vec<usize> {
        (0..self.devices.len())
            .filter(|d| {
                self.devices[*d]
                    .album
                    .as_ref()
                    .is_some_and(|a| !a.is_evicted())
            })
            .collect()
    }

    /// Runs a ceremony on device `d`.
    pub fn ceremony(
        &mut self,
        d: usize,
        f: impl FnOnce(&mut Album, &MemoryProvider, &DeviceIdentity, Validation<'_>) -> Result<Outgoing>,
    ) -> Result<Outgoing> {
        let validation = Validation {
            trust: &self.trust,
            now: NOW,
        };
        let dev = &mut self.devices[d];
        let album = dev.album.as_mut().unwrap();
        f(album, &dev.provider, &dev.me, validation)
    }

    /// The ordering stand-in accepted `out` from device `from`: it confirms, every
    /// other member processes the commit, joiners join. Returns each member's result.
    pub fn deliver(&mut self, from: usize, out: &Outgoing, joiners: &[usize]) -> Vec<Applied> {
        let mut applied = Vec::new();
        let validation = Validation {
            trust: &self.trust,
            now: NOW,
        };
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
            let album = Album::join(
                &dev.provider,
                out.welcome.as_ref().unwrap(),
                out.bundle.as_ref().unwrap(),
                validation,
            )
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
            assert_eq!(
                a.epoch_authenticator(),
                first.epoch_authenticator(),
                "device {d} epoch authenticator"
            );
            assert_eq!(a.members(), first.members(), "device {d} members");
            assert_eq!(
                a.keyring().current(),
                first.keyring().current(),
                "device {d} current AMK"
            );
            assert_eq!(
                a.keyring().write_key(),
                first.keyring().write_key(),
                "device {d} write key"
            );
            assert_eq!(a.context(), first.context(), "device {d} album context");
        }
        assert_eq!(
            first.members().len(),
            members.len(),
            "member list matches the devices that are in"
        );
    }

    pub fn amk_version(&self, d: usize) -> AmkVersion {
        self.album(d).keyring().current_version()
    }
}
