//! One enrolled device: its store, its identity, and the album operations.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use capsule_amk::{AlbumId, AlbumMetadata, AmkKeyring, HeldVersions, HistoryPolicy, SealedPhoto as Photo};
use capsule_identity::{
    DeviceCertificate, DeviceClaims, DeviceId, DeviceSigningKey, IdentityKeyPair, UserId, Validity,
};
use capsule_mls::{DeviceIdentity, Epoch, Genesis, Member, RekeyId, Validation};
use capsule_resilience::{
    AlbumStatus, AmkEscrow, Change, Clock, CommitChain, Context, Delivery, Discarded, Event, IntentId, IntentState,
    KeyPackageDirectory, KeyPackageStock, KeyPackageUpload, Mailbox, ReconcileOutcome, RekeyReason, RekeySchedule,
    ResilienceError, ResilientAlbum, RetryPolicy, SyncReport, Timestamp,
};
use capsule_store::{DatabaseKey, Store, StoreError};
use getrandom::SysRng;

use crate::{Error, Result};

/// What [`Device::rebootstrap`] did: what it discarded, and the fresh
/// KeyPackage to publish for the re-add.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rebootstrap {
    /// What was discarded, for investigation.
    pub discarded: Discarded,
    /// The fresh KeyPackage another device re-adds this one from.
    pub key_package: Vec<u8>,
}

/// How many regular KeyPackages a device keeps in the server's directory:
/// [`Device::refresh_key_packages`] tops the stock up to this when the server
/// says it runs low.
pub const KEY_PACKAGE_STOCK: u64 = 20;

/// A last-resort KeyPackage ending sooner than this is replaced.
const LAST_RESORT_RENEWAL_SECS: u64 = 7 * 24 * 3600;

/// What became of one Welcome of the mailbox ([`Device::receive_welcomes`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum Received {
    /// Joined the album at `epoch + 1` (or had joined it from this Welcome
    /// before an interruption); removed from the mailbox.
    Joined {
        /// The album.
        album: AlbumId,
        /// The epoch of the commit that added this device.
        epoch: Epoch,
    },
    /// An older Welcome for an album a newer one supersedes; removed.
    Superseded {
        /// The album.
        album: AlbumId,
        /// The epoch of the commit that made it.
        epoch: Epoch,
    },
    /// Kept in the mailbox, to try again: an identity key the trust store
    /// does not hold yet, a membership of the album this device has not
    /// yet learned it lost ([`Device::reconcile_with_server`] first), or a
    /// reboot of an album this device holds that it refuses against the
    /// group it holds (reconcile that group to its chain's head, where the
    /// rebooter left it, then receive again; one still refused there is no
    /// reboot by an admin of the album: the application may acknowledge it
    /// in the mailbox; kept, it pushes out no other Welcome).
    Waiting {
        /// The album.
        album: AlbumId,
        /// The epoch of the commit that made it.
        epoch: Epoch,
        /// Why it cannot be joined now.
        error: Error,
    },
    /// Refused for good and removed from the mailbox (not made for a
    /// KeyPackage this device holds, a forged or broken Welcome or bundle):
    /// this device needs to be added again.
    Refused {
        /// The album it names, if that is an album id at all.
        album: Option<AlbumId>,
        /// The epoch of the commit that made it.
        epoch: Epoch,
        /// Why.
        error: Error,
    },
}

/// The escrow as a store transaction sees it: the escrow was called before the
/// transaction opened, so no escrow call (a network call for a real OGK
/// escrow) runs inside one. Asked to deposit anything but what went out, it
/// refuses: the album changed in between, and the caller tries again.
struct Deposited {
    recovered: Option<AmkKeyring>,
    lineage: AmkKeyring,
}

impl AmkEscrow for Deposited {
    fn deposit(&mut self, _: AlbumId, keyring: &AmkKeyring) -> core::result::Result<(), String> {
        if *keyring == self.lineage {
            Ok(())
        } else {
            Err("the album's keys changed after the deposit; try again".into())
        }
    }

    fn recover(&self, _: AlbumId) -> core::result::Result<Option<AmkKeyring>, String> {
        Ok(self.recovered.as_ref().map(AmkKeyring::duplicate))
    }
}

/// Identifiers as logs show them: the first 8 hex digits of an HMAC-SHA256
/// (HKDF-Expand) under a key derived from the device key, so one device's
/// logs correlate while a log reader learns no album or person from them.
struct LogIds(zeroize::Zeroizing<[u8; 32]>);

impl core::fmt::Debug for LogIds {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("LogIds(..)")
    }
}

impl LogIds {
    fn new(me: &DeviceIdentity) -> Self {
        let (prk, _) = hkdf::Hkdf::<sha2::Sha256>::extract(Some(b"capsule/v1/log-ids"), &*me.secret_key_bytes());
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&prk);
        Self(key)
    }

    fn of(&self, id: &[u8]) -> String {
        let mut tag = [0u8; 4];
        match hkdf::Hkdf::<sha2::Sha256>::from_prk(&*self.0).map(|k| k.expand(id, &mut tag)) {
            Ok(Ok(())) => tag.iter().map(|b| format!("{b:02x}")).collect(),
            _ => "-".to_owned(),
        }
    }
}

/// One enrolled device. Its state lives in its store; every call is one or more
/// durable transactions.
///
/// A `Device` is `Send + Sync`: an app can share one behind its FFI layer and
/// call it from any thread. Calls on the same album are serialized, so two
/// threads never interleave inside one logical operation (a sync, a
/// reconciliation, a proposal); calls on different albums run side by side
/// and share only the store's connection, one transaction at a time. No
/// transaction is ever open while the chain is called. Reads (`status`,
/// `epoch`, `members`, `keyring`, `next_deadline`) take a consistent snapshot
/// and write nothing.
#[derive(Debug)]
pub struct Device {
    store: Store,
    me: DeviceIdentity,
    log_ids: LogIds,
    policy: RetryPolicy,
    /// One lock per album, held for a whole logical operation.
    albums: Mutex<BTreeMap<AlbumId, Arc<Mutex<()>>>>,
}

// What a native app's FFI layer requires.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<Device>();
};

/// Whether a Welcome that cannot be joined may be joinable later.
fn waits(error: &Error) -> bool {
    matches!(error, Error::Mls(capsule_mls::MlsError::UnknownIdentity { .. } | capsule_mls::MlsError::AlreadyMember(_)))
}

/// A reboot refused by `capsule_mls::Album::verify_reboot_of` (not a later
/// generation by an admin, the metadata or entitlements differ).
const fn refuses_reboot(error: &Error) -> bool {
    matches!(error, Error::Mls(capsule_mls::MlsError::NotAReboot(_)))
}

/// A failure of this device (its store, a bug), not of the Welcome.
fn is_fault(error: &Error) -> bool {
    match error {
        Error::Mls(e) => e.is_internal(),
        Error::Store(_) | Error::Resilience(_) | Error::Chain(_) => true,
        _ => false,
    }
}

/// Holds an album's lock; a thread that panicked while holding it left the
/// store consistent (every write is a transaction), so the lock is taken anyway.
fn hold(lock: &Mutex<()>) -> std::sync::MutexGuard<'_, ()> {
    lock.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Device {
    /// Enrolls a new device of `user`: a fresh MLS signature key, certified by
    /// the user's identity key, saved in a new store at `path`.
    ///
    /// # Errors
    /// Identity or store errors; [`capsule_store::StoreError::AlreadyEnrolled`]
    /// if `path` holds an enrolled device already (its key is never replaced).
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// use capsule::Device;
    /// use capsule::identity::{DeviceId, IdentityKeyPair, UnixTime, UserId, Validity};
    /// use capsule::store::DatabaseKey;
    ///
    /// let identity = IdentityKeyPair::generate()?;
    /// let validity = Validity::new(UnixTime(1_800_000_000), UnixTime(1_900_000_000))?;
    /// let user = UserId::from_bytes([7; 16]);
    /// // The database key comes from the platform keychain (random, 32 bytes).
    /// let key = DatabaseKey::from_bytes(&[0x42; 32]);
    /// let phone = Device::enroll(&fx.path("phone"), &key, &identity, user, DeviceId::from_bytes([1; 16]), validity)?;
    /// assert_eq!(phone.user(), user);
    /// // A store is enrolled once: its device key is never replaced.
    /// let again = Device::enroll(&fx.path("phone"), &key, &identity, user, DeviceId::from_bytes([2; 16]), validity);
    /// assert!(matches!(again, Err(capsule::Error::Store(capsule::store::StoreError::AlreadyEnrolled))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn enroll(
        path: &Path,
        database_key: &DatabaseKey,
        identity: &IdentityKeyPair,
        user: UserId,
        device: DeviceId,
        validity: Validity,
    ) -> Result<Self> {
        let key = DeviceSigningKey::generate()?;
        let claims = DeviceClaims { user, device, device_key: key.public_key(), validity };
        let me = DeviceIdentity::new(key, identity.certify_device(&claims)?)?;
        let store = Store::open(path, database_key)?;
        store.save_device(&me)?;
        Ok(Self::with(store, me))
    }

    /// Opens an enrolled device's store with the key its database is
    /// encrypted under (a store an earlier version wrote in plaintext is
    /// encrypted under it first).
    ///
    /// # Errors
    /// Store errors (the wrong key, corrupted, newer schema, key material
    /// mismatch).
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// # let path = fx.path("user2-device2");
    /// use capsule::Device;
    ///
    /// // The process dies; the device restarts from its file with everything it had.
    /// let epoch = bob.epoch(ALBUM)?;
    /// drop(bob);
    /// let bob = Device::open(&path, &capsule::testkit::db_key())?;
    /// assert_eq!(bob.epoch(ALBUM)?, epoch);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(path: &Path, database_key: &DatabaseKey) -> Result<Self> {
        let store = Store::open(path, database_key)?;
        let me = store.load_device()?;
        Ok(Self::with(store, me))
    }

    /// Re-encrypts this device's database under `new_key` (one transaction:
    /// a crash leaves it under the old key or the new one). Store the new key
    /// in the keychain once this returns; keep the old one until then.
    ///
    /// # Errors
    /// Store errors (the database stays under the old key).
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// use capsule::Device;
    /// use capsule::store::{DatabaseKey, StoreError};
    ///
    /// let new_key = DatabaseKey::from_bytes(&[0x77; 32]);
    /// bob.rekey_database(&new_key)?;
    /// drop(bob);
    /// let path = fx.path("user2-device2");
    /// let old = Device::open(&path, &capsule::testkit::db_key());
    /// assert!(matches!(old, Err(capsule::Error::Store(StoreError::WrongKey))));
    /// let bob = Device::open(&path, &new_key)?;
    /// assert_eq!(bob.epoch(ALBUM)?, alice.epoch(ALBUM)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rekey_database(&self, new_key: &DatabaseKey) -> Result<()> {
        Ok(self.store.rekey(new_key)?)
    }

    fn with(store: Store, me: DeviceIdentity) -> Self {
        let log_ids = LogIds::new(&me);
        Self { store, me, log_ids, policy: RetryPolicy::default(), albums: Mutex::new(BTreeMap::new()) }
    }

    /// The span of one public operation on `album`: the album named by its
    /// log id, never its id.
    fn span(&self, operation: &'static str, album: AlbumId) -> tracing::span::EnteredSpan {
        tracing::info_span!("capsule", operation, album = %self.log_ids.of(album.as_bytes())).entered()
    }

    /// The lock that serializes logical operations on one album.
    fn album_lock(&self, album: AlbumId) -> Arc<Mutex<()>> {
        let mut locks = self.albums.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(locks.entry(album).or_default())
    }

    /// Renews this device's certificate (same device key, new validity) and
    /// proposes a self-update in every album this device is in, which carries
    /// the new certificate to every member. A device whose certificate has
    /// expired commits nothing else ([`capsule_resilience::Refusal::RenewCertificate`]).
    ///
    /// # Errors
    /// Identity errors; store errors.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// use capsule::identity::{UnixTime, Validity};
    ///
    /// let mut alice = alice;
    /// let next_year = Validity::new(UnixTime(0), UnixTime(1_900_000_000))?;
    /// let updates = alice.renew_certificate(fx.identity(1)?, next_year)?;
    /// assert_eq!(updates.len(), 1); // one album
    /// fx.sync(&alice)?;
    /// bob.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation())?;
    /// assert_eq!(bob.epoch(ALBUM)?, alice.epoch(ALBUM)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn renew_certificate(&mut self, identity: &IdentityKeyPair, validity: Validity) -> Result<Vec<IntentId>> {
        let device_key = *self.me.certificate().device_key();
        let claims = DeviceClaims { user: self.user(), device: self.id(), device_key, validity };
        self.me = self.store.renew_certificate(&identity.certify_device(&claims)?)?;
        let mut updates = Vec::new();
        for album in self.store.album_ids()? {
            if self.status(album)? != AlbumStatus::NeedsRebootstrap {
                updates.push(self.propose(album, Change::SelfUpdate)?);
            }
        }
        Ok(updates)
    }

    /// Replaces the lost-commit schedule.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// use std::time::Duration;
    /// use capsule::resilience::RetryPolicy;
    ///
    /// let mut alice = alice;
    /// alice.set_retry_policy(RetryPolicy { detection_timeout: Duration::from_secs(10), ..RetryPolicy::default() });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_retry_policy(&mut self, policy: RetryPolicy) {
        self.policy = policy;
    }

    /// This device's user.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// let laptop = fx.enroll(1, 9)?;
    /// assert_eq!(laptop.user(), capsule::testkit::user(1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn user(&self) -> UserId {
        self.me.user()
    }

    /// This device.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// let laptop = fx.enroll(1, 9)?;
    /// assert_eq!(laptop.id(), capsule::identity::DeviceId::from_bytes([9; 16]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn id(&self) -> DeviceId {
        self.me.device()
    }

    /// This device as an album member: its user and its id.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// let laptop = fx.enroll(1, 9)?;
    /// assert_eq!(laptop.member(), capsule::mls::Member { user: laptop.user(), device: laptop.id() });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn member(&self) -> Member {
        Member { user: self.user(), device: self.id() }
    }

    /// A KeyPackage to publish in the device directory.
    ///
    /// # Errors
    /// MLS or store errors.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// use capsule::resilience::Change;
    ///
    /// // Carol publishes a KeyPackage; Alice adds her with it.
    /// let carol = fx.enroll(3, 3)?;
    /// let key_package = carol.key_package()?;
    /// alice.propose(ALBUM, Change::AddUser { user: carol.user(), directory: vec![key_package] })?;
    /// fx.sync(&alice)?;
    /// fx.join(&carol)?;
    /// assert_eq!(carol.members(ALBUM)?.len(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn key_package(&self) -> Result<Vec<u8>> {
        Ok(self.store.make_key_package(&self.me, capsule_mls::KEY_PACKAGE_LIFETIME_SECS)?.bytes)
    }

    /// Keeps this device's KeyPackages in the server's directory: deletes the
    /// private keys of its KeyPackages expired at `now` (and forgets those a
    /// Welcome used), asks the directory for its stock, and when the server
    /// says it runs low publishes new ones up to [`KEY_PACKAGE_STOCK`], with
    /// a new last-resort KeyPackage when the filed one is gone or ends within
    /// a week. Call it at start and now and then (daily). No store
    /// transaction is open while the directory is called.
    ///
    /// # Errors
    /// [`Error::Chain`] when the directory does not answer or refuses
    /// (KeyPackages made but not filed expire like the others); store errors.
    pub fn refresh_key_packages(
        &self,
        directory: &mut impl KeyPackageDirectory,
        now: capsule_identity::UnixTime,
    ) -> Result<KeyPackageStock> {
        self.store.tidy_key_packages(now.0)?;
        let stock = directory.stock()?;
        let regular = if stock.low { KEY_PACKAGE_STOCK.saturating_sub(stock.available) } else { 0 };
        let last_resort =
            stock.last_resort_until.is_none_or(|end| end <= now.0.saturating_add(LAST_RESORT_RENEWAL_SECS));
        if regular == 0 && !last_resort {
            return Ok(stock);
        }
        let count = usize::try_from(regular).unwrap_or(usize::MAX);
        let made =
            self.store.make_key_packages(&self.me, count, last_resort, capsule_mls::KEY_PACKAGE_LIFETIME_SECS)?;
        let mut upload = KeyPackageUpload::default();
        for kp in made {
            if kp.last_resort {
                upload.last_resort = Some(kp.bytes);
            } else {
                upload.key_packages.push(kp.bytes);
            }
        }
        Ok(directory.publish(&upload)?)
    }

    /// The KeyPackages whose private keys this device holds: (reference, end
    /// of lifetime, last resort).
    ///
    /// # Errors
    /// Store errors.
    pub fn key_packages_held(&self) -> Result<Vec<(Vec<u8>, u64, bool)>> {
        Ok(self.store.key_packages()?.into_iter().map(|(r, k)| (r, k.not_after, k.last_resort)).collect())
    }

    /// Joins the albums whose Welcomes wait in this device's mailbox: for
    /// each album, the newest Welcome first (older ones are superseded once a
    /// newer one is joined, or this device holds a later generation), joined
    /// in one transaction, then acknowledged. A Welcome that cannot be joined yet
    /// stays ([`Received::Waiting`]); one that never can is acknowledged and
    /// reported ([`Received::Refused`]). No store transaction is open while
    /// the mailbox is called; a crash between a join and its acknowledgement
    /// finds the album joined and acknowledges it next time.
    ///
    /// # Errors
    /// [`Error::Chain`] when the mailbox does not answer (what was joined
    /// stays joined); store faults.
    pub fn receive_welcomes(&self, mailbox: &mut impl Mailbox, validation: Validation<'_>) -> Result<Vec<Received>> {
        let deliveries = mailbox.deliveries()?;
        // Deliveries are kept under the group id (album, reboot generation).
        // Newest first within each album, and an older one is superseded only
        // once a newer one was joined: a Welcome that cannot be joined (a
        // forged "later generation", say) never pushes out one that can.
        let mut order: Vec<(Option<(AlbumId, u32)>, &Delivery)> =
            deliveries.iter().map(|d| (capsule_mls::album_of_group(&d.album), d)).collect();
        order.sort_by_key(|(key, d)| (key.map(|(album, _)| album), core::cmp::Reverse(key.map(|(_, g)| (g, d.epoch)))));
        let mut joined: BTreeMap<AlbumId, (u32, Epoch)> = BTreeMap::new();
        let mut received = Vec::with_capacity(deliveries.len());
        for (key, delivery) in order {
            let epoch = delivery.epoch;
            let Some((id, generation)) = key else {
                mailbox.acknowledge(delivery)?;
                let error = Error::Mls(capsule_mls::MlsError::Malformed("album id"));
                received.push(Received::Refused { album: None, epoch, error });
                continue;
            };
            let held = self.store.album(id).ok().map(|a| a.generation());
            if joined.get(&id).is_some_and(|n| *n > (generation, epoch)) || held.is_some_and(|g| g > generation) {
                mailbox.acknowledge(delivery)?;
                received.push(Received::Superseded { album: id, epoch });
                continue;
            }
            let outcome = self.join_delivered(id, generation, delivery, validation);
            match outcome {
                Ok(()) => {
                    mailbox.acknowledge(delivery)?;
                    joined.insert(id, (generation, epoch));
                    received.push(Received::Joined { album: id, epoch });
                }
                Err(error) if waits(&error) => received.push(Received::Waiting { album: id, epoch, error }),
                Err(error) if is_fault(&error) => return Err(error),
                // A later generation refused against the group held: that
                // group may be behind where the rebooter left it (a metadata
                // change, an admin added, not replayed yet). Kept, so a
                // reconcile and another try join it; removing it would leave
                // this device in a generation nobody commits to.
                Err(error) if refuses_reboot(&error) => {
                    received.push(Received::Waiting { album: id, epoch, error });
                }
                Err(error) => {
                    mailbox.acknowledge(delivery)?;
                    received.push(Received::Refused { album: Some(id), epoch, error });
                }
            }
        }
        Ok(received)
    }

    /// Joins from one delivery, unless this device joined from it already.
    fn join_delivered(
        &self,
        album: AlbumId,
        generation: u32,
        delivery: &Delivery,
        validation: Validation<'_>,
    ) -> Result<()> {
        let lock = self.album_lock(album);
        let _serial = hold(&lock);
        let joined_at = delivery.epoch.saturating_add(1);
        // A later generation (a reboot) is joined against the group held.
        match self
            .store
            .album(album)
            .ok()
            .filter(|a| a.generation() == generation)
            .map(|a| (a.epoch(), !a.is_evicted()))
        {
            Some((epoch, true)) if epoch >= joined_at => return Ok(()),
            // Still a member of an older epoch: it must first learn, from the
            // chain, of the removal this Welcome follows.
            Some((_, true)) => return Err(capsule_mls::MlsError::AlreadyMember(self.member()).into()),
            _ => {}
        }
        let bundle =
            delivery.bundle.as_deref().ok_or(capsule_mls::MlsError::Malformed("a welcome without a bundle"))?;
        self.store.join_album(&delivery.welcome, bundle, validation)?;
        Ok(())
    }

    /// The album's public state now, signed by this device: what the server
    /// is given to register the album (`capsule_client::HttpChain::create_album`),
    /// so that it validates every commit before ordering it.
    ///
    /// # Errors
    /// Store errors; [`Error::Mls`] for an album this device left.
    pub fn album_genesis(&self, album: AlbumId) -> Result<Genesis> {
        let _span = self.span("album_genesis", album);
        Ok(self.store.with_album(album, |a, p| a.genesis(p, &self.me))?)
    }

    /// This device's certificate: what the server's directory files for it.
    #[must_use]
    pub const fn certificate(&self) -> &DeviceCertificate {
        self.me.certificate()
    }

    /// This device's signing key, to sign its requests to the server
    /// (`capsule_client::Credentials`). It is the certified MLS key; request
    /// signatures carry their own domain prefix. Keep it on the device.
    #[must_use]
    pub fn request_key(&self) -> DeviceSigningKey {
        DeviceSigningKey::from_secret_bytes(&self.me.secret_key_bytes())
    }

    /// Creates an album with a fixed history policy and admin set.
    ///
    /// # Errors
    /// [`Error::Mls`] if this device's user is not among `admins`.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// use capsule::amk::{AlbumId, HistoryPolicy};
    ///
    /// let alice = fx.enroll(1, 1)?;
    /// let album = AlbumId::from_bytes([5; 16]);
    /// // Joiners receive only the last 10 AMK versions.
    /// let policy = HistoryPolicy::Capped { last: std::num::NonZeroU32::new(10).ok_or("zero")? };
    /// alice.create_album(album, policy, [alice.user()].into())?;
    /// assert_eq!(alice.members(album)?, vec![alice.member()]);
    /// // The creator must be among the admins.
    /// let other = AlbumId::from_bytes([6; 16]);
    /// assert!(alice.create_album(other, HistoryPolicy::Full, [capsule::testkit::user(2)].into()).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create_album(&self, album: AlbumId, policy: HistoryPolicy, admins: BTreeSet<UserId>) -> Result<AlbumId> {
        let _span = self.span("create_album", album);
        let metadata = AlbumMetadata::new(album, policy, admins)?;
        Ok(self.store.create_album(&self.me, metadata)?)
    }

    /// Joins an album from a Welcome and the sealed history bundle beside it.
    ///
    /// # Errors
    /// Identity, AMK or MLS refusals; store errors.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// // Bob joined from the Welcome and the sealed history bundle beside it;
    /// // a second Welcome for an album he is active in is refused.
    /// let (welcome, bundle) = fx.newest_welcome().ok_or("no welcome")?;
    /// assert!(bob.join(&welcome, &bundle, fx.validation()).is_err());
    /// assert_eq!(bob.epoch(ALBUM)?, alice.epoch(ALBUM)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join(&self, welcome: &[u8], bundle: &[u8], validation: Validation<'_>) -> Result<AlbumId> {
        Ok(self.store.join_album(welcome, bundle, validation)?)
    }

    /// Records a membership change (add user, add device, remove user, remove a
    /// lost device, rotate the AMK) as a durable intent; [`Device::sync`] commits it.
    ///
    /// # Errors
    /// Store errors.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// use capsule::resilience::{AlbumStatus, Change};
    ///
    /// // The change is durable before anything is sent; `sync` commits it.
    /// alice.propose(ALBUM, Change::RemoveUser { user: bob.user() })?;
    /// assert_eq!(alice.status(ALBUM)?, AlbumStatus::Syncing);
    /// fx.sync(&alice)?;
    /// assert_eq!(alice.members(ALBUM)?, vec![alice.member()]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn propose(&self, album: AlbumId, change: Change) -> Result<IntentId> {
        let _span = self.span("propose", album);
        let lock = self.album_lock(album);
        let _serial = hold(&lock);
        Ok(self.store.with_resilient(album, self.policy.clone(), |r, _| Ok(r.propose(change)))?)
    }

    /// Cancels a change that is not committed yet, or clears a failed one.
    /// A change whose commit exists cannot be cancelled (it may already be in
    /// the chain); the chain settles it at the next [`Device::sync`].
    ///
    /// # Errors
    /// [`Error::Resilience`] with `InFlight` for a change whose commit exists,
    /// or `UnknownIntent` (nothing changes); store errors.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// use capsule::resilience::{AlbumStatus, Change, IntentState};
    ///
    /// let removal = alice.propose(ALBUM, Change::RemoveUser { user: bob.user() })?;
    /// // Alice changes her mind before the device syncs.
    /// alice.cancel(ALBUM, removal)?;
    /// assert_eq!(alice.intent_state(ALBUM, removal)?, Some(IntentState::Cancelled));
    /// fx.sync(&alice)?;
    /// assert_eq!(alice.members(ALBUM)?.len(), 2);
    /// assert_eq!(alice.status(ALBUM)?, AlbumStatus::InSync);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cancel(&self, album: AlbumId, intent: IntentId) -> Result<()> {
        let _span = self.span("cancel", album);
        let lock = self.album_lock(album);
        let _serial = hold(&lock);
        Ok(self.store.with_resilient(album, self.policy.clone(), |r, _| r.cancel(intent))?)
    }

    /// Where one of the album's changes stands (pending, in flight, confirmed,
    /// surfaced, failed with its reason, cancelled).
    ///
    /// # Errors
    /// Store errors.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// use capsule::resilience::{Change, IntentState, Refusal};
    ///
    /// // Bob is not an admin: his change is refused, with a reason to show.
    /// let removal = bob.propose(ALBUM, Change::RemoveUser { user: alice.user() })?;
    /// fx.sync(&bob)?;
    /// let state = bob.intent_state(ALBUM, removal)?;
    /// assert!(matches!(state, Some(IntentState::Failed { refusal: Refusal::Unauthorized, .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn intent_state(&self, album: AlbumId, intent: IntentId) -> Result<Option<IntentState>> {
        let _span = self.span("intent_state", album);
        Ok(self.store.read_resilient(album, self.policy.clone(), |r| r.intent(intent).map(|i| i.state.clone()))?)
    }

    /// Makes progress on the album's intents against the chain (commit, submit,
    /// retry on the backoff, surface). Call again at [`Device::next_deadline`].
    ///
    /// # Errors
    /// Quarantine, MLS or store errors.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// use capsule::resilience::{Change, Event};
    ///
    /// alice.propose(ALBUM, Change::RotateAmk)?;
    /// let events = alice.sync(ALBUM, &mut fx.chain(), &fx.clock, fx.validation())?;
    /// assert!(events.iter().any(|e| matches!(e, Event::Confirmed { .. })));
    /// assert_eq!(alice.amk_versions(ALBUM)?.current.get(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sync(
        &self,
        album: AlbumId,
        chain: &mut impl CommitChain,
        clock: &impl Clock,
        validation: Validation<'_>,
    ) -> Result<Vec<Event>> {
        let _span = self.span("sync", album);
        let lock = self.album_lock(album);
        let _serial = hold(&lock);
        Ok(self.store.sync_album(album, &self.policy, &self.me, validation, chain, clock)?)
    }

    /// When [`Device::sync`] next has work for this album: the time to wake the
    /// device at (never further than the retry schedule allows from now, so a
    /// clock that jumped back cannot put a device to sleep for days).
    ///
    /// # Errors
    /// Store errors.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// use std::time::Duration;
    /// use capsule::resilience::{Change, Clock};
    /// use capsule::resilience::testkit::{Fault, FaultyChain};
    ///
    /// // Deadlines are wall-clock time (milliseconds since the Unix epoch).
    /// // The server never answers: the commit may or may not have landed.
    /// let mut chain = FaultyChain::new(fx.chain(), fx.clock.clone());
    /// chain.on_next_submit(Fault::DropAnswer);
    /// alice.propose(ALBUM, Change::RotateAmk)?;
    /// alice.sync(ALBUM, &mut chain, &fx.clock, fx.validation())?;
    /// let due = alice.next_deadline(ALBUM, &fx.clock)?.ok_or("a check is scheduled")?;
    /// // At the deadline the device looks for its commit in the chain: it landed.
    /// assert_eq!(due.since(fx.clock.now()), Duration::from_secs(30));
    /// fx.clock.set(due);
    /// alice.sync(ALBUM, &mut chain, &fx.clock, fx.validation())?;
    /// assert_eq!(alice.next_deadline(ALBUM, &fx.clock)?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn next_deadline(&self, album: AlbumId, clock: &impl Clock) -> Result<Option<Timestamp>> {
        let _span = self.span("next_deadline", album);
        let now = clock.now();
        Ok(self.store.read_resilient(album, self.policy.clone(), |r| r.next_wakeup(now))?)
    }

    /// The application reports connectivity again: surfaced changes are retried.
    ///
    /// # Errors
    /// Store errors.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// use capsule::resilience::{AlbumStatus, Change};
    /// use capsule::resilience::testkit::FaultyChain;
    ///
    /// let mut chain = FaultyChain::new(fx.chain(), fx.clock.clone());
    /// chain.fail_next(10); // the server is down for a while
    /// alice.propose(ALBUM, Change::RotateAmk)?;
    /// while alice.status(ALBUM)? != AlbumStatus::Surfaced {
    ///     let _ = alice.sync(ALBUM, &mut chain, &fx.clock, fx.validation());
    ///     fx.clock.advance(std::time::Duration::from_secs(900));
    /// }
    /// // The retry budget is spent; the application reports the network is back.
    /// alice.connectivity_restored(ALBUM, &fx.clock)?;
    /// fx.sync(&alice)?;
    /// assert_eq!(alice.status(ALBUM)?, AlbumStatus::InSync);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connectivity_restored(&self, album: AlbumId, clock: &impl Clock) -> Result<()> {
        let _span = self.span("connectivity_restored", album);
        let now = clock.now();
        let lock = self.album_lock(album);
        let _serial = hold(&lock);
        Ok(self.store.with_resilient(album, self.policy.clone(), |r, _| {
            r.connectivity_restored(now);
            Ok(())
        })?)
    }

    /// Brings the album to the chain's head; see [`ReconcileOutcome`].
    ///
    /// # Errors
    /// Chain, MLS or store errors.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// use capsule::resilience::{Change, ReconcileOutcome};
    ///
    /// // Alice rotates; Bob, offline meanwhile, catches up from the chain.
    /// alice.propose(ALBUM, Change::RotateAmk)?;
    /// fx.sync(&alice)?;
    /// let outcome = bob.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation())?;
    /// assert!(matches!(outcome, ReconcileOutcome::Reconciled { .. }));
    /// assert_eq!(bob.epoch(ALBUM)?, alice.epoch(ALBUM)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reconcile_with_server(
        &self,
        album: AlbumId,
        chain: &mut impl CommitChain,
        validation: Validation<'_>,
    ) -> Result<ReconcileOutcome> {
        let _span = self.span("reconcile_with_server", album);
        let lock = self.album_lock(album);
        let _serial = hold(&lock);
        Ok(self.store.reconcile_album(album, &self.policy, &self.me, validation, chain)?)
    }

    /// Starts (or resumes; a completed id is a no-op) the full re-key ceremony:
    /// quiesce → every member replaces its leaf → resume on a fresh AMK. It
    /// progresses with [`Device::sync`] on every member; the album's AMK lineage
    /// goes to `escrow` first. It starts from the chain's head: the device
    /// reconciles first, so only a lineage the chain confirmed is deposited
    /// (a device that diverged is quarantined instead), and the escrow is
    /// called with no store transaction open.
    ///
    /// # Errors
    /// Another re-key in progress, an escrow refusal, quarantine (found now or
    /// before), the chain not answering, store errors. Nothing is deposited
    /// or started on any error.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// use std::time::Duration;
    /// use capsule::mls::{RekeyId, RekeyReason};
    /// use capsule::resilience::AlbumStatus;
    /// use capsule::resilience::testkit::MemoryEscrow;
    ///
    /// let mut escrow = MemoryEscrow::new([0x0e; 32]);
    /// let budget = Duration::from_secs(600);
    /// alice.rekey_group(ALBUM, RekeyId(1), RekeyReason::SuspectedCompromise, budget, &mut fx.chain(), fx.validation(), &fx.clock, &mut escrow)?;
    /// // Every member syncs until the ceremony is done: quiesce, fresh leaves, fresh AMK.
    /// for _ in 0..4 {
    ///     for device in [&alice, &bob] {
    ///         device.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation())?;
    ///         fx.sync(device)?;
    ///     }
    /// }
    /// assert_eq!(alice.status(ALBUM)?, AlbumStatus::InSync);
    /// assert_eq!(bob.amk_versions(ALBUM)?.current, alice.amk_versions(ALBUM)?.current);
    /// assert_eq!(alice.amk_versions(ALBUM)?.current.get(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[allow(clippy::too_many_arguments)] // each is a separate decision of the caller's
    pub fn rekey_group(
        &self,
        album: AlbumId,
        id: RekeyId,
        reason: RekeyReason,
        budget: core::time::Duration,
        chain: &mut impl CommitChain,
        validation: Validation<'_>,
        clock: &impl Clock,
        escrow: &mut dyn AmkEscrow,
    ) -> Result<()> {
        let _span = self.span("rekey_group", album);
        let lock = self.album_lock(album);
        let _serial = hold(&lock);
        self.store.reconcile_album(album, &self.policy, &self.me, validation, chain)?;
        self.start_rekey(album, id, reason, budget, clock, escrow)
    }

    /// [`Device::rekey_group`] with the album lock held, once the album was
    /// reconciled with the chain: the re-key starts from the chain's head, so
    /// a device that merged something the chain never saw (a bug) was
    /// quarantined before its keys could reach the escrow, where they would
    /// conflict with every honest owner's deposit. The escrow is called with
    /// no store transaction open.
    fn start_rekey(
        &self,
        album: AlbumId,
        id: RekeyId,
        reason: RekeyReason,
        budget: core::time::Duration,
        clock: &impl Clock,
        escrow: &mut dyn AmkEscrow,
    ) -> Result<()> {
        let lineage = self.store.read_resilient(album, self.policy.clone(), |r| {
            r.rekey_deposit(id).map(|l| l.map(AmkKeyring::duplicate))
        })??;
        let Some(lineage) = lineage else { return Ok(()) };
        escrow.deposit(album, &lineage).map_err(ResilienceError::Escrow)?;
        let now = clock.now();
        let mut deposited = Deposited { recovered: None, lineage };
        Ok(self.store.with_resilient(album, self.policy.clone(), |r, _| {
            r.rekey_group(id, reason, now, budget, &mut deposited)
        })?)
    }

    /// Starts a scheduled re-key when `schedule` calls for one (the album went
    /// longer than its interval without a full re-key) and this device's user
    /// is an admin; returns its id. A suspected compromise is the
    /// application's call instead: [`Device::rekey_group`] with
    /// [`RekeyReason::SuspectedCompromise`].
    ///
    /// # Errors
    /// As [`Device::rekey_group`].
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// use std::time::Duration;
    /// use capsule::resilience::RekeySchedule;
    /// use capsule::resilience::testkit::MemoryEscrow;
    ///
    /// let (mut escrow, budget) = (MemoryEscrow::new([0x0e; 32]), Duration::from_secs(600));
    /// let monthly = RekeySchedule { every: Duration::from_secs(30 * 24 * 3600) };
    /// assert_eq!(alice.rekey_if_due(ALBUM, monthly, budget, &mut fx.chain(), fx.validation(), &fx.clock, &mut escrow)?, None);
    /// fx.clock.advance(Duration::from_secs(31 * 24 * 3600));
    /// assert!(alice.rekey_if_due(ALBUM, monthly, budget, &mut fx.chain(), fx.validation(), &fx.clock, &mut escrow)?.is_some());
    /// // Bob is not an admin: his device never starts one.
    /// assert_eq!(bob.rekey_if_due(ALBUM, monthly, budget, &mut fx.chain(), fx.validation(), &fx.clock, &mut escrow)?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[allow(clippy::too_many_arguments)] // each is a separate decision of the caller's
    pub fn rekey_if_due(
        &self,
        album: AlbumId,
        schedule: RekeySchedule,
        budget: core::time::Duration,
        chain: &mut impl CommitChain,
        validation: Validation<'_>,
        clock: &impl Clock,
        escrow: &mut dyn AmkEscrow,
    ) -> Result<Option<RekeyId>> {
        let _span = self.span("rekey_if_due", album);
        let (now, user) = (clock.now(), self.user());
        let lock = self.album_lock(album);
        let _serial = hold(&lock);
        let due =
            |r: &ResilientAlbum| r.album().context().metadata.is_admin(&user) && r.scheduled_rekey_due(&schedule, now);
        // Decided from the local view first, so a device with nothing due
        // makes no call to the chain; then again at the chain's head, where
        // another admin's re-key may have started or finished.
        if !self.store.read_resilient(album, self.policy.clone(), due)? {
            return Ok(None);
        }
        self.store.reconcile_album(album, &self.policy, &self.me, validation, chain)?;
        if !self.store.read_resilient(album, self.policy.clone(), due)? {
            return Ok(None);
        }
        // Unique enough per album: another admin's concurrent one takes over.
        let id = RekeyId(now.0);
        self.start_rekey(album, id, RekeyReason::Scheduled, budget, clock, escrow)?;
        Ok(Some(id))
    }

    /// The re-key the album shows, if it has not finished `stall` after this
    /// device first saw it (at a sync): its admin's device is lost or silent,
    /// and writes stay quiesced until an owner re-drives it
    /// ([`Device::recover_stalled_rekey`]).
    ///
    /// # Errors
    /// Store errors.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// use std::time::Duration;
    /// use capsule::mls::{RekeyId, RekeyReason};
    /// use capsule::resilience::testkit::MemoryEscrow;
    ///
    /// let (mut escrow, day) = (MemoryEscrow::new([0x0e; 32]), Duration::from_secs(24 * 3600));
    /// alice.rekey_group(ALBUM, RekeyId(1), RekeyReason::Scheduled, day, &mut fx.chain(), fx.validation(), &fx.clock, &mut escrow)?;
    /// fx.sync(&alice)?; // the marker is in the chain; Bob's phone stays offline
    /// assert_eq!(alice.stalled_rekey(ALBUM, &fx.clock, 7 * day)?, None);
    /// fx.clock.advance(8 * day);
    /// assert_eq!(alice.stalled_rekey(ALBUM, &fx.clock, 7 * day)?.map(|m| m.id), Some(RekeyId(1)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stalled_rekey(
        &self,
        album: AlbumId,
        clock: &impl Clock,
        stall: core::time::Duration,
    ) -> Result<Option<capsule_mls::RekeyMarker>> {
        let _span = self.span("stalled_rekey", album);
        let now = clock.now();
        Ok(self.store.read_resilient(album, self.policy.clone(), |r| r.stalled_rekey(now, stall))?)
    }

    /// An owner's (an admin's) way out of a stalled re-key: recovers the
    /// album's AMK lineage from `escrow`, takes back every version this device
    /// was withheld, and re-drives the re-key under a new id (returned) whose
    /// marker replaces the stalled one; members answer it, stragglers are
    /// re-added after `budget` from the KeyPackages supplied with
    /// [`Device::provide_rekey_key_package`], and the finishing commit rotates
    /// the AMK. No AMK version is lost.
    ///
    /// # Errors
    /// [`capsule_resilience::ResilienceError::NotStalled`] when no re-key has
    /// stalled `stall`; [`capsule_mls::MlsError::Unauthorized`] for a device
    /// of a user who is not an admin;
    /// [`capsule_resilience::ResilienceError::Escrow`] when the escrow holds
    /// nothing or refuses; store errors. Nothing changes on any error.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// use std::time::Duration;
    /// use capsule::mls::{RekeyId, RekeyReason};
    /// use capsule::resilience::{AlbumStatus, testkit::MemoryEscrow};
    ///
    /// let (mut escrow, day) = (MemoryEscrow::new([0x0e; 32]), Duration::from_secs(24 * 3600));
    /// alice.rekey_group(ALBUM, RekeyId(1), RekeyReason::Scheduled, day, &mut fx.chain(), fx.validation(), &fx.clock, &mut escrow)?;
    /// fx.sync(&alice)?;
    /// fx.clock.advance(8 * day); // Bob never answered, and nobody had his KeyPackage
    /// let id = alice.recover_stalled_rekey(ALBUM, 7 * day, day, &mut fx.chain(), fx.validation(), &fx.clock, &mut escrow)?;
    /// alice.provide_rekey_key_package(ALBUM, bob.member(), bob.key_package()?)?;
    /// fx.sync(&alice)?;
    /// fx.clock.advance(2 * day);
    /// fx.sync(&alice)?; // Bob is re-added, the re-key finishes
    /// fx.sync(&alice)?;
    /// assert!(alice.status(ALBUM)? == AlbumStatus::InSync && alice.amk_versions(ALBUM)?.current.get() == 2);
    /// assert_ne!(id, RekeyId(1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[allow(clippy::too_many_arguments)] // each is a separate decision of the caller's
    pub fn recover_stalled_rekey(
        &self,
        album: AlbumId,
        stall: core::time::Duration,
        budget: core::time::Duration,
        chain: &mut impl CommitChain,
        validation: Validation<'_>,
        clock: &impl Clock,
        escrow: &mut dyn AmkEscrow,
    ) -> Result<RekeyId> {
        let _span = self.span("recover_stalled_rekey", album);
        let (now, owner) = (clock.now(), self.user());
        let lock = self.album_lock(album);
        let _serial = hold(&lock);
        // As for a new re-key: from the chain's head, and the escrow (a network
        // call for the real one) with no store transaction open.
        self.store.reconcile_album(album, &self.policy, &self.me, validation, chain)?;
        let (stalled, keyring) = self.store.read_resilient(album, self.policy.clone(), |r| {
            r.stalled_rekey_recoverable(owner, now, stall).map(|m| (m, r.album().keyring().duplicate()))
        })??;
        let recovered = escrow.recover(album).map_err(ResilienceError::Escrow)?;
        let lineage =
            recovered.as_ref().ok_or_else(|| ResilienceError::Escrow("no lineage deposited for this album".into()))?;
        let mut merged = keyring;
        merged.recover_history(lineage)?;
        escrow.deposit(album, &merged).map_err(ResilienceError::Escrow)?;
        // A fresh id, distinct from the stalled one even within a millisecond.
        let id = RekeyId(now.0.max(stalled.id.0.saturating_add(1)));
        let mut deposited = Deposited { recovered, lineage: merged };
        self.store.with_resilient(album, self.policy.clone(), |r, _| {
            r.recover_stalled_rekey(owner, id, now, stall, budget, &mut deposited)
        })?;
        Ok(id)
    }

    /// Supplies a fresh KeyPackage (from the device directory) for a member that
    /// may not answer this device's re-key in time: if its budget runs out, the
    /// member is re-added from it. Ignored when this device runs no re-key.
    ///
    /// # Errors
    /// Store errors.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// use std::time::Duration;
    /// use capsule::mls::{RekeyId, RekeyReason};
    /// use capsule::resilience::testkit::MemoryEscrow;
    ///
    /// let mut escrow = MemoryEscrow::new([0x0e; 32]);
    /// alice.rekey_group(ALBUM, RekeyId(1), RekeyReason::Scheduled, Duration::from_secs(600), &mut fx.chain(), fx.validation(), &fx.clock, &mut escrow)?;
    /// // From the directory: used only if Bob does not answer within the budget.
    /// alice.provide_rekey_key_package(ALBUM, bob.member(), bob.key_package()?)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn provide_rekey_key_package(&self, album: AlbumId, member: Member, key_package: Vec<u8>) -> Result<()> {
        let _span = self.span("provide_rekey_key_package", album);
        let lock = self.album_lock(album);
        let _serial = hold(&lock);
        Ok(self.store.with_resilient(album, self.policy.clone(), |r, _| {
            r.provide_rekey_key_package(member, key_package);
            Ok(())
        })?)
    }

    /// What the application shows for the album.
    ///
    /// # Errors
    /// Store errors.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// use capsule::resilience::{AlbumStatus, Change};
    ///
    /// assert_eq!(bob.status(ALBUM)?, AlbumStatus::InSync);
    /// // Bob is removed; once he learns it, the album needs a re-bootstrap.
    /// alice.propose(ALBUM, Change::RemoveUser { user: bob.user() })?;
    /// fx.sync(&alice)?;
    /// bob.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation())?;
    /// assert_eq!(bob.status(ALBUM)?, AlbumStatus::NeedsRebootstrap);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn status(&self, album: AlbumId) -> Result<AlbumStatus> {
        let _span = self.span("status", album);
        match self.store.read_resilient(album, self.policy.clone(), ResilientAlbum::status) {
            Err(StoreError::NotFound(_)) if self.store.rebootstrap_record(album)?.is_some() => {
                Ok(AlbumStatus::AwaitingReadd)
            }
            other => Ok(other?),
        }
    }

    /// Why the album is quarantined, if it is: the epochs, and the chain's
    /// commit this device refused as invalid with the committer it names
    /// (what to report), when that is the cause. The ways out: the report
    /// of [`Device::sync_report`] (a reboot when every honest member refused
    /// the same commit), or [`Device::rebootstrap`].
    ///
    /// # Errors
    /// Store errors.
    pub fn quarantine(&self, album: AlbumId) -> Result<Option<capsule_resilience::Divergence>> {
        let _span = self.span("quarantine", album);
        Ok(self.store.read_resilient(album, self.policy.clone(), ResilientAlbum::quarantine)?)
    }

    /// The way out of quarantine, and of an album this device cannot catch up
    /// with (removed, or beyond a pruned chain): discards this device's state
    /// of the album in one transaction and returns what was discarded (for
    /// investigation) with a fresh KeyPackage to publish. Another device of the
    /// user (or an admin) re-adds this one with [`Device::readd`]; this device
    /// then [`Device::join`]s and ends with what the user is entitled to.
    /// Meanwhile [`Device::status`] is [`AlbumStatus::AwaitingReadd`].
    ///
    /// # Errors
    /// [`Error::Resilience`] with `NotStuck` for an album that can still catch
    /// up (nothing changes); store errors.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// use capsule::resilience::{AlbumStatus, Change};
    ///
    /// // A healthy album is never discarded.
    /// assert!(bob.rebootstrap(ALBUM).is_err());
    /// // Bob is removed; his device cannot catch up any more.
    /// alice.propose(ALBUM, Change::RemoveUser { user: bob.user() })?;
    /// fx.sync(&alice)?;
    /// bob.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation())?;
    /// assert_eq!(bob.status(ALBUM)?, AlbumStatus::NeedsRebootstrap);
    /// let fresh = bob.rebootstrap(ALBUM)?;
    /// assert_eq!(bob.status(ALBUM)?, AlbumStatus::AwaitingReadd);
    /// // Alice adds him back from the fresh KeyPackage; he joins.
    /// alice.readd(ALBUM, bob.member(), fresh.key_package)?;
    /// fx.sync(&alice)?;
    /// fx.join(&bob)?;
    /// assert_eq!(bob.status(ALBUM)?, AlbumStatus::InSync);
    /// assert_eq!(bob.epoch(ALBUM)?, alice.epoch(ALBUM)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rebootstrap(&self, album: AlbumId) -> Result<Rebootstrap> {
        let _span = self.span("rebootstrap", album);
        let lock = self.album_lock(album);
        let _serial = hold(&lock);
        let (discarded, key_package) = self.store.rebootstrap_album(album, self.policy.clone(), &self.me)?;
        Ok(Rebootstrap { discarded, key_package })
    }

    /// Re-adds `member`'s device from its fresh KeyPackage (after it
    /// re-bootstrapped): replaces its leaf if it is still in the album, adds it
    /// again if it was removed. A durable change, committed by [`Device::sync`].
    ///
    /// # Errors
    /// Store errors. Who may re-add whom is the MLS layer's rule (an admin, or
    /// a device of the same user); a refusal ends the change as failed.
    ///
    /// # Examples
    /// See [`Device::rebootstrap`].
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// // Replacing a member's leaf from a fresh KeyPackage of that device.
    /// alice.readd(ALBUM, bob.member(), bob.key_package()?)?;
    /// fx.sync(&alice)?;
    /// assert_eq!(alice.members(ALBUM)?.len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn readd(&self, album: AlbumId, member: Member, key_package: Vec<u8>) -> Result<IntentId> {
        let _span = self.span("readd", album);
        let change = if self.members(album)?.contains(&member) {
            Change::ReAddDevice { key_package }
        } else if member.user == self.user() {
            Change::AddDevice { key_package }
        } else {
            Change::AddUser { user: member.user, directory: vec![key_package] }
        };
        self.propose(album, change)
    }

    /// The MLS group the album is in now, which names the chain (and the
    /// mailbox) to talk to: the album id itself until a reboot, then the
    /// album id followed by the reboot generation ([`Device::reboot`]).
    ///
    /// # Errors
    /// Store errors.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// assert_eq!(alice.group_id(ALBUM)?, ALBUM.as_bytes().to_vec());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn group_id(&self, album: AlbumId) -> Result<Vec<u8>> {
        let _span = self.span("group_id", album);
        Ok(self.store.album(album)?.group_id())
    }

    /// This device's signed state fingerprint of the album, sealed so that
    /// only members read it (`capsule_mls`'s fingerprint module), stating the
    /// chain's commit it refused if it is quarantined for one:
    /// [`Device::publish_fingerprint`] posts it to the album's board. While
    /// the device awaits its re-add after [`Device::rebootstrap`], it is the
    /// farewell made then (the last state it held, marked departing), so the
    /// others count what it saw and never wait on it to re-add or reboot.
    ///
    /// # Errors
    /// [`Error::Mls`] once removed; store errors.
    pub fn fingerprint(&self, album: AlbumId) -> Result<Vec<u8>> {
        let _span = self.span("fingerprint", album);
        if let Some(farewell) = self.store.farewell(album)? {
            return Ok(farewell);
        }
        let me = &self.me;
        Ok(self.store.read_resilient_with(album, self.policy.clone(), |r, p| {
            r.album().fingerprint(p, me, r.refused_commit())
        })??)
    }

    /// Posts this device's fingerprint ([`Device::fingerprint`]) to the
    /// album's board on the server, replacing the one it posted before:
    /// after every commit it merges, once it is quarantined, and after a
    /// re-bootstrap (its farewell) until it is re-added. The others
    /// read the board ([`CommitChain::fingerprints`]) for their
    /// [`Device::sync_report`]. No store transaction is open while the
    /// chain is called.
    ///
    /// # Errors
    /// As [`Device::fingerprint`]; the chain not answering or refusing.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// use capsule::resilience::{CommitChain as _, SyncClass};
    ///
    /// let mut chain = fx.chain();
    /// alice.publish_fingerprint(ALBUM, &mut chain)?;
    /// bob.publish_fingerprint(ALBUM, &mut chain)?;
    /// let board = chain.fingerprints()?;
    /// let report = alice.sync_report(ALBUM, &board, &mut chain, fx.validation())?;
    /// assert_eq!(report.class, SyncClass::InSync);
    /// assert_eq!(report.own, vec![alice.member(), bob.member()]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn publish_fingerprint(&self, album: AlbumId, chain: &mut impl CommitChain) -> Result<()> {
        let _span = self.span("publish_fingerprint", album);
        let fingerprint = self.fingerprint(album)?;
        chain.post_fingerprint(&fingerprint)?;
        Ok(())
    }

    /// How this device sees the album from the members' `fingerprints` (as
    /// the application collected them) and the chain's head, which this call
    /// fetches *after* they were collected (no store transaction is open
    /// meanwhile): in sync, behind, a weak fork (who re-adds whom), a hard
    /// fork or an equivocating server (who reboots). The rule and every way
    /// out are in [`capsule_resilience::forks`]. Changes nothing.
    ///
    /// # Errors
    /// The chain not answering; store errors.
    ///
    /// # Examples
    /// See [`Device::publish_fingerprint`].
    pub fn sync_report(
        &self,
        album: AlbumId,
        fingerprints: &[Vec<u8>],
        chain: &mut impl CommitChain,
        validation: Validation<'_>,
    ) -> Result<SyncReport> {
        let _span = self.span("sync_report", album);
        let head = chain.head()?;
        let lock = self.album_lock(album);
        let _serial = hold(&lock);
        let me = &self.me;
        Ok(self.store.read_resilient_with(album, self.policy.clone(), |r, p| {
            r.sync_report(Context { provider: p, device: me, validation }, fingerprints, Some(head))
        })??)
    }

    /// The coordinator's half of healing a weak fork: proposes the re-add of
    /// every member [`Device::sync_report`] has this device re-add, from
    /// the fresh KeyPackages in `key_packages` (what each re-bootstrapped
    /// member published). Durable intents, committed by [`Device::sync`];
    /// calling again proposes nothing twice.
    ///
    /// # Errors
    /// The chain not answering; quarantine; store errors.
    pub fn heal_fork(
        &self,
        album: AlbumId,
        fingerprints: &[Vec<u8>],
        chain: &mut impl CommitChain,
        key_packages: &[(Member, Vec<u8>)],
        validation: Validation<'_>,
    ) -> Result<Vec<IntentId>> {
        let _span = self.span("heal_fork", album);
        let head = chain.head()?;
        let lock = self.album_lock(album);
        let _serial = hold(&lock);
        let me = &self.me;
        Ok(self.store.with_resilient(album, self.policy.clone(), |r, p| {
            r.heal_fork(Context { provider: p, device: me, validation }, fingerprints, Some(head), key_packages)
        })?)
    }

    /// The rebooter's way out of a hard fork, an equivocating server, or a
    /// commit every honest member refuses ([`Device::sync_report`] names the
    /// rebooter): the album moves, in one transaction, into a new MLS group
    /// (the next generation) with the same album id, metadata and every AMK
    /// version this device holds plus a new one; every member of
    /// `key_packages` (fresh KeyPackages of the album's other members) is
    /// re-added by a durable change. Returns the new group id: create its
    /// chain on the server, then [`Device::sync`] against it. The other
    /// members [`Device::join`] (or receive) the new group's Welcome, which
    /// is checked against the group they hold. Unsettled changes of the old
    /// group are dropped: propose them again.
    ///
    /// # Errors
    /// [`Error::Mls`]: only an admin reboots; KeyPackages of non-members or
    /// of this device. Nothing changes on any error.
    pub fn reboot(
        &self,
        album: AlbumId,
        key_packages: &[(Member, Vec<u8>)],
        validation: Validation<'_>,
    ) -> Result<Vec<u8>> {
        let _span = self.span("reboot", album);
        let lock = self.album_lock(album);
        let _serial = hold(&lock);
        Ok(self.store.reboot_album(album, self.policy.clone(), (&self.me, validation), key_packages)?)
    }

    /// The album's current epoch and epoch authenticator.
    ///
    /// # Errors
    /// Store errors.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// let (epoch, authenticator) = alice.epoch(ALBUM)?;
    /// assert_eq!(epoch, capsule::mls::Epoch(1)); // one commit: the add
    /// // Two members at one epoch agree on its authenticator.
    /// assert_eq!(bob.epoch(ALBUM)?, (epoch, authenticator));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn epoch(&self, album: AlbumId) -> Result<(Epoch, Vec<u8>)> {
        let _span = self.span("epoch", album);
        let a = self.store.album(album)?;
        Ok((a.epoch(), a.epoch_authenticator()))
    }

    /// Members, sorted (by user, then device).
    ///
    /// # Errors
    /// Store errors.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// let members = alice.members(ALBUM)?;
    /// assert_eq!(members, vec![alice.member(), bob.member()]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn members(&self, album: AlbumId) -> Result<Vec<Member>> {
        let _span = self.span("members", album);
        Ok(self.store.album(album)?.members())
    }

    /// Which AMK versions this device holds of `album`: version numbers, never
    /// a key (photos are opened with [`Device::open_photo`]).
    ///
    /// # Errors
    /// Store errors.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// let held = bob.amk_versions(ALBUM)?;
    /// assert_eq!(held.current.get(), 1);
    /// assert_eq!(held.count(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn amk_versions(&self, album: AlbumId) -> Result<HeldVersions> {
        let _span = self.span("amk_versions", album);
        Ok(self.store.album(album)?.keyring().versions())
    }

    /// Runs `f` on the album's keyring, borrowed for the call: for what
    /// [`Device::open_photo`] and [`Device::seal_photo`] do not cover (a
    /// streaming [`capsule_amk::PhotoOpener`], say). Nothing hands the
    /// application a copy of the keys; `f` should not make one.
    ///
    /// # Errors
    /// Store errors.
    pub fn with_keyring<T>(&self, album: AlbumId, f: impl FnOnce(&AmkKeyring) -> T) -> Result<T> {
        let _span = self.span("with_keyring", album);
        Ok(f(self.store.album(album)?.keyring()))
    }

    /// Encrypts a photo (or a video: it is sealed in 64 KiB chunks) under a
    /// key of its own, derived from the album's current AMK and a fresh photo
    /// id, with AES-256-GCM ([`capsule_amk::photo`]). Refused while the album
    /// is quarantined, re-keying, or this device was removed.
    ///
    /// # Errors
    /// [`Error::Photo`] when the album does not accept writes now;
    /// [`Error::Amk`] if no randomness is available.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// let photo = alice.seal_photo(ALBUM, b"beach.jpg")?;
    /// assert_eq!(photo.version(), alice.amk_versions(ALBUM)?.current);
    /// // Every photo has its own id, hence its own key.
    /// assert_ne!(alice.seal_photo(ALBUM, b"beach.jpg")?.id(), photo.id());
    /// assert!(!photo.to_bytes().windows(9).any(|w| w == b"beach.jpg"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn seal_photo(&self, album: AlbumId, photo: &[u8]) -> Result<Photo> {
        let _span = self.span("seal_photo", album);
        // One snapshot: the status and the key it allows come from the same state.
        self.store.read_resilient(album, self.policy.clone(), |r| {
            if let AlbumStatus::Quarantined { .. } | AlbumStatus::NeedsRebootstrap | AlbumStatus::Rekeying { .. } =
                r.status()
            {
                return Err(Error::Photo("album does not accept writes now"));
            }
            Ok(capsule_amk::seal_photo(r.album().keyring().current(), &album, photo, &mut SysRng)?)
        })?
    }

    /// Decrypts a photo with the keyring.
    ///
    /// # Errors
    /// [`Error::Amk`]: [`capsule_amk::AmkError::Withheld`] for a version the
    /// history policy withheld (show a placeholder),
    /// [`capsule_amk::AmkError::NotHeld`] for one this device never held,
    /// [`capsule_amk::AmkError::PhotoUnreadable`] for a photo of another album,
    /// tampered, reordered or cut short, and a refusal for a version above the
    /// attested ceiling.
    ///
    /// # Examples
    /// ```
    /// # use capsule::testkit::{Fixture, ALBUM};
    /// # let mut fx = Fixture::new()?;
    /// # let (alice, bob) = fx.alice_and_bob()?;
    /// use capsule::resilience::Change;
    ///
    /// let photo = alice.seal_photo(ALBUM, b"beach.jpg")?;
    /// assert_eq!(bob.open_photo(ALBUM, &photo)?, b"beach.jpg");
    /// // Bob is removed: the AMK rotates and he cannot open what comes after.
    /// alice.propose(ALBUM, Change::RemoveUser { user: bob.user() })?;
    /// fx.sync(&alice)?;
    /// bob.reconcile_with_server(ALBUM, &mut fx.chain(), fx.validation())?;
    /// let later = alice.seal_photo(ALBUM, b"later.jpg")?;
    /// assert!(bob.open_photo(ALBUM, &later).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_photo(&self, album: AlbumId, photo: &Photo) -> Result<Vec<u8>> {
        let _span = self.span("open_photo", album);
        let plaintext = self.with_keyring(album, |ring| capsule_amk::open_photo(ring, &album, photo))??;
        // Handed over whole: the caller owns the photo's bytes from here.
        Ok(plaintext.into_vec())
    }
}
