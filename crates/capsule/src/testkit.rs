//! A ready-made world for examples and tests: users with identity keys, the
//! trust store every device checks certificates against, the server's commit
//! chain (in memory, with the real ordering rules), a simulated clock and a
//! temporary directory for the device stores, removed on drop.
//!
//! Everything a device does here is real: X-Wing MLS groups, SQLite stores,
//! certificate checks. Only the server and the clock are doubles.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use capsule_amk::{AlbumId, AmkVersion, HeldVersions, HistoryPolicy};
use capsule_identity::{DeviceId, IdentityKeyPair, IdentityPublicKey, IdentitySeed, UnixTime, UserId, Validity};
use capsule_mls::{Epoch, Validation};
use capsule_resilience::Change;
use capsule_resilience::testkit::{MemoryChain, MemoryServer, SimClock};

use capsule_store::DatabaseKey;

use crate::Device;

/// Any layer's error, or the file system's.
pub type Result<T> = core::result::Result<T, Box<dyn std::error::Error>>;

/// The album the fixture's server knows.
pub const ALBUM: AlbumId = AlbumId::from_bytes([0xA1; 16]);
/// The time certificates are checked at.
pub const NOW: UnixTime = UnixTime(1_800_000_000);

/// Users, their devices' files, the server and the clock.
pub struct Fixture {
    dir: PathBuf,
    /// The server's commit chains.
    pub server: MemoryServer,
    /// The simulated clock retries are scheduled on.
    pub clock: SimClock,
    identities: BTreeMap<UserId, IdentityKeyPair>,
    trust: BTreeMap<UserId, IdentityPublicKey>,
}

impl core::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Fixture").field("dir", &self.dir).field("users", &self.trust.len()).finish_non_exhaustive()
    }
}

/// The key every fixture database is encrypted under (a real device's comes
/// from its platform's keychain).
#[must_use]
pub fn db_key() -> DatabaseKey {
    DatabaseKey::from_bytes(&[0x5D; 32])
}

/// User `n`'s id.
#[must_use]
pub const fn user(n: u8) -> UserId {
    UserId::from_bytes([n; 16])
}

impl Fixture {
    /// An empty world whose server knows [`ALBUM`].
    ///
    /// # Errors
    /// The temporary directory cannot be made.
    pub fn new() -> Result<Self> {
        // Unique per process and per fixture, so parallel tests never share files.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("capsule-fixture-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let server = MemoryServer::new();
        server.create_album(ALBUM.as_bytes(), Epoch::ZERO);
        Ok(Self { dir, server, clock: SimClock::new(), identities: BTreeMap::new(), trust: BTreeMap::new() })
    }

    /// Where device `name`'s store lives.
    #[must_use]
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.db"))
    }

    /// User `n`'s identity key pair (made from a fixed seed the first time, and
    /// added to the trust store).
    ///
    /// # Errors
    /// Identity errors.
    pub fn identity(&mut self, n: u8) -> Result<&IdentityKeyPair> {
        Ok(match self.identities.entry(user(n)) {
            Entry::Occupied(pair) => pair.into_mut(),
            Entry::Vacant(slot) => {
                let pair = IdentityKeyPair::from_seed(&IdentitySeed::from_bytes([n; 32]))?;
                self.trust.insert(user(n), pair.public_key().clone());
                slot.insert(pair)
            }
        })
    }

    /// Enrolls device `device` of user `n`, its store in the fixture's directory.
    ///
    /// # Errors
    /// Identity or store errors.
    pub fn enroll(&mut self, n: u8, device: u8) -> Result<Device> {
        let path = self.path(&format!("user{n}-device{device}"));
        let forever = Validity::new(UnixTime(0), UnixTime(u64::MAX))?;
        let identity = self.identity(n)?;
        Ok(Device::enroll(&path, &db_key(), identity, user(n), DeviceId::from_bytes([device; 16]), forever)?)
    }

    /// What every device checks certificates against.
    #[must_use]
    pub fn validation(&self) -> Validation<'_> {
        Validation { trust: &self.trust, now: NOW }
    }

    /// A connection to [`ALBUM`]'s chain.
    #[must_use]
    pub fn chain(&self) -> MemoryChain {
        self.server.connect(ALBUM.as_bytes())
    }

    /// The newest Welcome in [`ALBUM`]'s chain and the history bundle beside it.
    #[must_use]
    pub fn newest_welcome(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        self.server.entries(ALBUM.as_bytes()).into_iter().rev().find_map(|e| Some((e.welcome?, e.bundle?)))
    }

    /// `device` commits its queued changes to the chain.
    ///
    /// # Errors
    /// As [`Device::sync`].
    pub fn sync(&self, device: &Device) -> Result<()> {
        device.sync(ALBUM, &mut self.chain(), &self.clock, self.validation())?;
        Ok(())
    }

    /// `device` joins from the newest Welcome.
    ///
    /// # Errors
    /// The chain holds no Welcome; as [`Device::join`].
    pub fn join(&self, device: &Device) -> Result<AlbumId> {
        let (welcome, bundle) = self.newest_welcome().ok_or("no welcome in the chain")?;
        Ok(device.join(&welcome, &bundle, self.validation())?)
    }

    /// Alice (user 1, admin) creates [`ALBUM`] with full history and adds Bob
    /// (user 2), who joins: both devices, in sync.
    ///
    /// # Errors
    /// Any layer's error.
    pub fn alice_and_bob(&mut self) -> Result<(Device, Device)> {
        let alice = self.enroll(1, 1)?;
        let bob = self.enroll(2, 2)?;
        alice.create_album(ALBUM, HistoryPolicy::Full, [user(1)].into())?;
        alice.propose(ALBUM, Change::AddUser { user: user(2), directory: vec![bob.key_package()?] })?;
        self.sync(&alice)?;
        self.join(&bob)?;
        Ok((alice, bob))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every key a device holds of an album, copied out for a test to compare
/// devices (the facade itself hands an application no copy of a key).
#[derive(PartialEq, Eq)]
pub struct HeldKeys {
    /// Which versions are held.
    pub versions: HeldVersions,
    /// The key of each held version.
    pub keys: BTreeMap<AmkVersion, [u8; 32]>,
}

impl HeldKeys {
    /// The current version and its key.
    #[must_use]
    pub fn current(&self) -> (AmkVersion, Option<&[u8; 32]>) {
        (self.versions.current, self.keys.get(&self.versions.current))
    }

    /// The key of `version`, if held.
    #[must_use]
    pub fn get(&self, version: AmkVersion) -> Option<&[u8; 32]> {
        self.keys.get(&version)
    }
}

impl core::fmt::Debug for HeldKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HeldKeys").field("versions", &self.versions).finish_non_exhaustive()
    }
}

/// The keys `device` holds of `album` ([`HeldKeys`]).
///
/// # Errors
/// Store errors.
pub fn held_keys(device: &Device, album: AlbumId) -> crate::Result<HeldKeys> {
    device.with_keyring(album, |ring| HeldKeys {
        versions: ring.versions(),
        keys: ring.held().map(|(v, k)| (v, *k.expose_secret())).collect(),
    })
}
