//! One SQLite database per device: OpenMLS's group state and Capsule's records,
//! written together in one transaction per logical operation.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use capsule_amk::{AlbumId, AlbumMetadata};
use capsule_identity::{DeviceCertificate, DeviceSigningKey};
use capsule_mls::{Album, CapsuleProvider, DeviceIdentity, MlsError, NewKeyPackage, Validation};
use capsule_resilience::{
    Clock, CommitChain, Context, Discarded, Event, ReconcileOutcome, ReconcileStep, ResilienceError, ResilientAlbum,
    RetryPolicy,
};
use openmls_sqlite_storage::SqliteStorageProvider;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::records::{self, DeviceRecord};
use crate::{DatabaseKey, JsonCodec, Result, StoreError};

/// What every plaintext SQLite file starts with (an encrypted one starts
/// with its random salt).
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";
/// SQLCipher's page size: a file shorter than one page is truncated.
const PAGE_SIZE: u64 = 4096;

/// The OpenMLS provider over a store's connection.
pub type SqliteProvider<'a> = CapsuleProvider<SqliteStorageProvider<JsonCodec, &'a Connection>>;

/// Capsule's own schema version (OpenMLS's tables have their own migrations).
/// 2: every record carries its format ([`crate::records`]).
pub const SCHEMA_VERSION: i64 = 2;

/// One step of Capsule's schema: SQL, or records rewritten in Rust.
enum Migration {
    Sql(&'static str),
    Records(fn(&Connection) -> Result<()>),
}

/// Capsule's migrations, in order: `MIGRATIONS[i]` takes the schema from `i`
/// to `i + 1`, in one transaction.
const MIGRATIONS: &[Migration] = &[
    Migration::Sql(
        "CREATE TABLE capsule_records (
        kind TEXT NOT NULL,
        id BLOB NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (kind, id)
    );",
    ),
    Migration::Records(records::upgrade_from_schema_1),
];

pub(crate) const KIND_DEVICE: &str = "device";
const KIND_ALBUM: &str = "album";
const KIND_RESILIENCE: &str = "resilience";
/// What a re-bootstrap discarded, kept until the device joins again.
pub(crate) const KIND_REBOOTSTRAP: &str = "rebootstrap";
/// The signed fingerprint a device made as it re-bootstrapped (its state is
/// gone after), kept to publish until it joins again.
const KIND_FAREWELL: &str = "farewell";
/// A KeyPackage this device made (by reference): its private keys are in
/// OpenMLS's tables until a Welcome uses it or it expires.
pub(crate) const KIND_KEY_PACKAGE: &str = "key_package";

/// What the store keeps about one of its KeyPackages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPackageRecord {
    /// The end of its lifetime, seconds since the Unix epoch.
    pub not_after: u64,
    /// Whether it is a last-resort KeyPackage.
    pub last_resort: bool,
}

/// What [`Store::tidy_key_packages`] deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tidied {
    /// KeyPackages a Welcome used (OpenMLS deleted their keys): records dropped.
    pub used: usize,
    /// Expired KeyPackages whose private keys were deleted.
    pub expired: usize,
}

/// A step of a logical operation, reported to the observer (crash tests abort
/// the process at each in turn).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The transaction is open; nothing written yet.
    Begun,
    /// OpenMLS has written its part; Capsule's records are not written yet.
    MlsWritten,
    /// Everything is written; the transaction is not committed yet.
    RecordsWritten,
    /// Committed.
    Committed,
    /// A request went to the chain and its answer came back; no transaction is
    /// open and the answer is not recorded yet.
    Sent,
}

impl Step {
    /// Every step of a transaction, in order.
    pub const ALL: [Self; 4] = [Self::Begun, Self::MlsWritten, Self::RecordsWritten, Self::Committed];
}

/// Watches the steps of every operation (crash tests abort the process at one).
pub type Observer = Box<dyn Fn(Step) + Send + Sync>;

/// A device's durable store. Shareable across threads: each transaction holds
/// the connection for its length, and nothing else does.
pub struct Store {
    conn: Mutex<Connection>,
    observer: Option<Observer>,
}

/// The most rounds (decide, send, record) one [`Store::sync_album`] runs; each
/// settles or defers something, so this only bounds a chain that answers nonsense.
const MAX_ROUNDS: usize = 64;

impl core::fmt::Debug for Store {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store at `path`, encrypted under `key`.
    ///
    /// A file that is not a healthy Capsule store is refused with a typed error
    /// and left exactly as it was. A plaintext Capsule store (written by an
    /// earlier version) is first encrypted under `key`, atomically: a crash
    /// leaves the plaintext file or the encrypted one.
    ///
    /// # Errors
    /// [`StoreError::WrongKey`], [`StoreError::Corrupt`],
    /// [`StoreError::NewerSchema`], [`StoreError::Foreign`];
    /// [`StoreError::Io`] while encrypting a plaintext store.
    pub fn open(path: &Path, key: &DatabaseKey) -> Result<Self> {
        let len = std::fs::metadata(path).map(|m| m.len()).ok();
        if len.is_some_and(|len| len > 0) && starts_with_sqlite_header(path)? {
            encrypt_plaintext_store(path, key)?;
        }
        let flags = if len.is_some() {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        let mut conn = Connection::open_with_flags(path, flags)?;
        // A wrong key is this function's typed error, not a line on stderr.
        conn.pragma_update(None, "cipher_log_level", "NONE")?;
        conn.pragma_update(None, "key", key.sqlcipher_value().as_str())?;
        // The first read of page 1 tells whether the key opens the file.
        if let Err(e) = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)) {
            return Err(match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::NotADatabase) if len.is_some_and(|len| len < PAGE_SIZE) => {
                    StoreError::Corrupt("truncated before its first page".into())
                }
                Some(rusqlite::ErrorCode::NotADatabase) => StoreError::WrongKey,
                _ => e.into(),
            });
        }
        // Durability over speed: a phone can die at any instant.
        conn.pragma_update(None, "synchronous", "FULL")?;
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(StoreError::Corrupt(check));
        }
        let tables: i64 =
            conn.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0))?;
        let has_schema: bool = conn
            .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'capsule_schema'", [], |_| Ok(true))
            .optional()?
            .unwrap_or(false);
        let version = if has_schema {
            conn.query_row("SELECT version FROM capsule_schema", [], |r| r.get::<_, i64>(0))
                .map_err(|_| StoreError::Corrupt("schema version unreadable".into()))?
        } else if tables == 0 {
            let tx = conn.transaction()?;
            tx.execute_batch(
                "CREATE TABLE capsule_schema (version INTEGER NOT NULL); INSERT INTO capsule_schema VALUES (0);",
            )?;
            tx.commit()?;
            0
        } else {
            return Err(StoreError::Foreign);
        };
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema { found: version, supported: SCHEMA_VERSION });
        }
        let pending =
            MIGRATIONS.iter().skip(usize::try_from(version).map_err(|_| StoreError::Record("schema version"))?);
        for (step, migration) in (version + 1..).zip(pending) {
            let tx = conn.transaction()?;
            match migration {
                Migration::Sql(sql) => tx.execute_batch(sql)?,
                Migration::Records(upgrade) => upgrade(&tx)?,
            }
            tx.execute("UPDATE capsule_schema SET version = ?1", params![step])?;
            tx.commit()?;
        }
        SqliteStorageProvider::<JsonCodec, &mut Connection>::new(&mut conn)
            .run_migrations()
            .map_err(|e| StoreError::OpenMlsMigrations(e.to_string()))?;
        Ok(Self { conn: Mutex::new(conn), observer: None })
    }

    /// Re-encrypts the whole database under `key` (SQLCipher's rekey, one
    /// transaction: a crash leaves the file under the old key or the new
    /// one). The application stores the new key only once this returns.
    ///
    /// # Errors
    /// SQLite errors (the file stays under the old key).
    pub fn rekey(&self, key: &DatabaseKey) -> Result<()> {
        let conn = self.connection();
        conn.pragma_update(None, "rekey", key.sqlcipher_value().as_str())?;
        Ok(())
    }

    /// Reports every [`Step`] of every logical operation to `observer`.
    pub fn set_observer(&mut self, observer: Observer) {
        self.observer = Some(observer);
    }

    fn step(&self, step: Step) {
        if let Some(observer) = &self.observer {
            observer(step);
        }
    }

    /// The connection, for one transaction.
    fn connection(&self) -> MutexGuard<'_, Connection> {
        let conn = self.conn.lock().unwrap_or_else(|poisoned| {
            self.conn.clear_poison();
            poisoned.into_inner()
        });
        // No transaction outlives its operation; one still open was abandoned
        // (a panic, a failed rollback) and is rolled back before anyone goes on.
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        conn
    }

    /// Runs `f` as one write transaction: everything it writes, OpenMLS's and
    /// ours, commits together or not at all.
    fn transaction<T>(&self, f: impl FnOnce(&Connection, &SqliteProvider<'_>) -> Result<T>) -> Result<T> {
        let conn = self.connection();
        conn.execute_batch("BEGIN IMMEDIATE")?;
        self.step(Step::Begun);
        let result = provider(&conn).and_then(|p| f(&conn, &p));
        match result {
            Ok(value) => {
                self.step(Step::RecordsWritten);
                if let Err(e) = conn.execute_batch("COMMIT") {
                    // Not committed (busy, full disk): nothing of it stays, and the
                    // connection is free for the retry.
                    let _ = conn.execute_batch("ROLLBACK");
                    return Err(e.into());
                }
                self.step(Step::Committed);
                Ok(value)
            }
            Err(e) => {
                // Nothing of a failed operation stays: not OpenMLS's writes, not ours.
                conn.execute_batch("ROLLBACK")?;
                Err(e)
            }
        }
    }

    /// Runs `f` in a read transaction: one consistent snapshot, no write lock
    /// taken, and nothing written (it ends in a rollback whatever `f` did).
    fn read<T>(&self, f: impl FnOnce(&Connection, &SqliteProvider<'_>) -> Result<T>) -> Result<T> {
        let conn = self.connection();
        conn.execute_batch("BEGIN DEFERRED")?;
        let result = provider(&conn).and_then(|p| f(&conn, &p));
        conn.execute_batch("ROLLBACK")?;
        result
    }

    /// Runs `f` with the OpenMLS provider in one write transaction (for
    /// OpenMLS operations outside an album, such as creating a KeyPackage,
    /// whose private keys OpenMLS stores).
    ///
    /// # Errors
    /// `f`'s error (nothing is written), or storage errors.
    pub fn with_provider<T>(&self, f: impl FnOnce(&SqliteProvider<'_>) -> Result<T, MlsError>) -> Result<T> {
        self.transaction(|_, p| Ok(f(p)?))
    }

    /// Stores this device's identity (key and certificate), once.
    ///
    /// # Errors
    /// [`StoreError::AlreadyEnrolled`] if the store holds one already (nothing is
    /// written); SQLite errors.
    pub fn save_device(&self, device: &DeviceIdentity) -> Result<()> {
        let record = DeviceRecord {
            secret: *device.secret_key_bytes(),
            certificate: device.certificate().to_bytes().map_err(MlsError::from)?,
        };
        let bytes = record.encode()?;
        self.transaction(|conn, _| {
            if get(conn, KIND_DEVICE, b"self")?.is_some() {
                return Err(StoreError::AlreadyEnrolled);
            }
            put(conn, KIND_DEVICE, b"self", &bytes)
        })
    }

    /// Replaces this device's certificate with a renewed one for the same
    /// device key (the key is never replaced).
    ///
    /// # Errors
    /// [`StoreError::KeyMaterial`] if the certificate certifies another key
    /// (nothing is written); [`StoreError::NotFound`] before enrollment.
    pub fn renew_certificate(&self, certificate: &DeviceCertificate) -> Result<DeviceIdentity> {
        let bytes = certificate.to_bytes().map_err(MlsError::from)?;
        self.transaction(|conn, _| {
            let stored = get(conn, KIND_DEVICE, b"self")?.ok_or(StoreError::NotFound("device identity"))?;
            let mut record = DeviceRecord::decode(&stored)?;
            let renewed = DeviceIdentity::new(DeviceSigningKey::from_secret_bytes(&record.secret), certificate.clone())
                .map_err(|_| StoreError::KeyMaterial)?;
            record.certificate = bytes.clone();
            put(conn, KIND_DEVICE, b"self", &record.encode()?)?;
            Ok(renewed)
        })
    }

    /// Every album this store holds.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn album_ids(&self) -> Result<Vec<AlbumId>> {
        self.read(|conn, _| {
            let mut statement = conn.prepare("SELECT id FROM capsule_records WHERE kind = ?1 ORDER BY id")?;
            let ids = statement
                .query_map(params![KIND_ALBUM], |r| r.get::<_, Vec<u8>>(0))?
                .map(|id| {
                    let id = id?;
                    <[u8; 16]>::try_from(id.as_slice())
                        .map(AlbumId::from_bytes)
                        .map_err(|_| StoreError::Record("album id"))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(ids)
        })
    }

    /// This device's identity.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::Record`], or
    /// [`StoreError::KeyMaterial`] when key and certificate do not match.
    pub fn load_device(&self) -> Result<DeviceIdentity> {
        let bytes =
            self.read(|conn, _| get(conn, KIND_DEVICE, b"self"))?.ok_or(StoreError::NotFound("device identity"))?;
        let record = DeviceRecord::decode(&bytes)?;
        let certificate =
            DeviceCertificate::from_bytes(&record.certificate).map_err(|_| StoreError::Record("device certificate"))?;
        DeviceIdentity::new(DeviceSigningKey::from_secret_bytes(&record.secret), certificate)
            .map_err(|_| StoreError::KeyMaterial)
    }

    fn write_album(&self, conn: &Connection, album: &Album) -> Result<()> {
        self.step(Step::MlsWritten);
        put(conn, KIND_ALBUM, album.id().as_bytes(), &album.to_record()?)
    }

    /// Creates an album, durably.
    ///
    /// # Errors
    /// As [`Album::create`].
    pub fn create_album(&self, device: &DeviceIdentity, metadata: AlbumMetadata) -> Result<AlbumId> {
        self.transaction(|conn, p| {
            let album = Album::create(p, device, metadata)?;
            self.write_album(conn, &album)?;
            Ok(album.id())
        })
    }

    /// Joins an album from a Welcome and its bundle, durably.
    ///
    /// A device that was removed and is re-added (re-bootstrap, a re-key
    /// straggler, a phone found again) starts a fresh resilience record: what it
    /// recorded before belongs to a membership that no longer exists (its
    /// staged commits are gone with the old group, and the flag that it must
    /// re-bootstrap is now answered), so it is dropped in the same transaction.
    ///
    /// # Errors
    /// As [`Album::join`].
    pub fn join_album(&self, welcome: &[u8], bundle: &[u8], validation: Validation<'_>) -> Result<AlbumId> {
        self.transaction(|conn, p| {
            let album = Album::join(p, welcome, bundle, validation)?;
            // A Welcome into another group of an album this device holds is a
            // reboot: decided against the group held (a refusal rolls the
            // join back), which is then forgotten in this transaction.
            if let Some(mut old) = get(conn, KIND_ALBUM, album.id().as_bytes())?
                .map(|record| Album::load(p, &record))
                .transpose()?
                .filter(|old| old.group_id() != album.group_id())
            {
                album.verify_reboot_of(&old)?;
                old.discard(p)?;
            }
            self.write_album(conn, &album)?;
            delete(conn, KIND_RESILIENCE, album.id().as_bytes())?;
            // A re-bootstrap is answered: the device is a member again.
            delete(conn, KIND_REBOOTSTRAP, album.id().as_bytes())?;
            delete(conn, KIND_FAREWELL, album.id().as_bytes())?;
            Ok(album.id())
        })
    }

    /// The album as stored (a read: nothing is written).
    ///
    /// # Errors
    /// [`StoreError::NotFound`], or [`StoreError::Mls`] if storage and record disagree.
    pub fn album(&self, id: AlbumId) -> Result<Album> {
        self.read(|conn, p| load_album(conn, p, id))
    }

    /// Runs one logical operation on a stored album (stage a ceremony, confirm,
    /// reject, process a commit) in one transaction. The album is loaded from
    /// storage inside the transaction, so no in-memory copy can run ahead of a
    /// rolled-back state.
    ///
    /// # Errors
    /// The operation's own error (nothing is written), or storage errors.
    pub fn with_album<T>(
        &self,
        id: AlbumId,
        f: impl FnOnce(&mut Album, &SqliteProvider<'_>) -> Result<T, MlsError>,
    ) -> Result<T> {
        self.transaction(|conn, p| {
            let mut album = load_album(conn, p, id)?;
            let value = f(&mut album, p)?;
            self.write_album(conn, &album)?;
            Ok(value)
        })
    }

    /// Runs one local step of the resilience layer (propose, start a re-key,
    /// decide an action, record an answer) on a stored album in one
    /// transaction: the album record, its intents and OpenMLS's writes commit
    /// together. Never call the network from `f`: see [`Store::sync_album`].
    ///
    /// # Errors
    /// The step's own error (nothing is written), or storage errors.
    pub fn with_resilient<T>(
        &self,
        id: AlbumId,
        policy: RetryPolicy,
        f: impl FnOnce(&mut ResilientAlbum, &SqliteProvider<'_>) -> Result<T, ResilienceError>,
    ) -> Result<T> {
        self.transaction(|conn, p| {
            let mut resilient = load_resilient(conn, p, id, policy)?;
            let value = f(&mut resilient, p)?;
            self.write_album(conn, resilient.album())?;
            put(conn, KIND_RESILIENCE, id.as_bytes(), &resilient.to_record()?)?;
            Ok(value)
        })
    }

    /// Reads a stored album with its resilience state (status, deadlines,
    /// intents) in a read transaction: nothing is written.
    ///
    /// # Errors
    /// Storage errors.
    pub fn read_resilient<T>(
        &self,
        id: AlbumId,
        policy: RetryPolicy,
        f: impl FnOnce(&ResilientAlbum) -> T,
    ) -> Result<T> {
        self.read(|conn, p| Ok(f(&load_resilient(conn, p, id, policy)?)))
    }

    /// [`Store::read_resilient`] with OpenMLS's storage at hand (a fingerprint,
    /// a sync report): a read transaction, nothing is written.
    ///
    /// # Errors
    /// Storage errors.
    pub fn read_resilient_with<T>(
        &self,
        id: AlbumId,
        policy: RetryPolicy,
        f: impl FnOnce(&ResilientAlbum, &SqliteProvider<'_>) -> T,
    ) -> Result<T> {
        self.read(|conn, p| Ok(f(&load_resilient(conn, p, id, policy)?, p)))
    }

    /// Re-bootstraps a stuck album (quarantined, removed, or beyond a pruned
    /// chain) in one transaction: discards OpenMLS's group state and Capsule's
    /// records of it, keeps what was discarded for investigation, and makes a
    /// fresh KeyPackage for the device directory, from which another device of
    /// the user (or an admin) re-adds this one; [`Store::join_album`] then ends
    /// it. Until then [`Store::rebootstrap_record`] says a re-add is awaited.
    ///
    /// # Errors
    /// [`ResilienceError::NotStuck`] for an album that can still catch up
    /// (nothing changes); storage errors.
    pub fn rebootstrap_album(
        &self,
        id: AlbumId,
        policy: RetryPolicy,
        device: &DeviceIdentity,
    ) -> Result<(Discarded, Vec<u8>)> {
        self.transaction(|conn, p| {
            let mut resilient = load_resilient(conn, p, id, policy)?;
            // Made while the state exists; what it states stays the others' to count.
            let farewell = resilient.farewell(p, device)?;
            let discarded = resilient.rebootstrap(p)?;
            self.step(Step::MlsWritten);
            delete(conn, KIND_ALBUM, id.as_bytes())?;
            delete(conn, KIND_RESILIENCE, id.as_bytes())?;
            let record = records::encode_rebootstrap(&discarded)?;
            put(conn, KIND_REBOOTSTRAP, id.as_bytes(), &record)?;
            match farewell {
                Some(farewell) => put(conn, KIND_FAREWELL, id.as_bytes(), &farewell)?,
                None => delete(conn, KIND_FAREWELL, id.as_bytes())?,
            }
            let made = make_key_package(conn, p, device, false, capsule_mls::KEY_PACKAGE_LIFETIME_SECS)?;
            Ok((discarded, made.bytes))
        })
    }

    /// Reboots a stored album into its next generation's group (see
    /// [`ResilientAlbum::reboot`]) in one transaction: the new group and its
    /// first commit (pending) are written, the album record now names the new
    /// group, the old group's state is deleted, and the old generation's
    /// intents go with it. A crash leaves either the old album whole or the
    /// new one.
    ///
    /// # Errors
    /// As [`ResilientAlbum::reboot`] (nothing changes); storage errors.
    pub fn reboot_album(
        &self,
        id: AlbumId,
        policy: RetryPolicy,
        cx: (&DeviceIdentity, Validation<'_>),
        key_packages: &[(capsule_mls::Member, Vec<u8>)],
    ) -> Result<Vec<u8>> {
        let (device, validation) = cx;
        self.transaction(|conn, p| {
            let old = load_resilient(conn, p, id, policy)?;
            let rebooted = old.reboot(Context { provider: p, device, validation }, key_packages)?;
            old.into_album().discard(p)?;
            self.write_album(conn, rebooted.album())?;
            put(conn, KIND_RESILIENCE, id.as_bytes(), &rebooted.to_record()?)?;
            Ok(rebooted.album().group_id())
        })
    }

    /// Makes `count` KeyPackages (and, if `last_resort`, one last-resort
    /// KeyPackage after them) lasting `lifetime_secs`, in one transaction:
    /// OpenMLS stores their private keys and the store records each, so
    /// [`Store::tidy_key_packages`] deletes them when they expire.
    ///
    /// # Errors
    /// MLS or storage errors (nothing is written).
    pub fn make_key_packages(
        &self,
        device: &DeviceIdentity,
        count: usize,
        last_resort: bool,
        lifetime_secs: u64,
    ) -> Result<Vec<NewKeyPackage>> {
        self.transaction(|conn, p| {
            let flags = core::iter::repeat_n(false, count).chain(last_resort.then_some(true));
            flags.map(|last| make_key_package(conn, p, device, last, lifetime_secs)).collect()
        })
    }

    /// Makes one regular KeyPackage, recorded as [`Store::make_key_packages`] does.
    ///
    /// # Errors
    /// MLS or storage errors (nothing is written).
    pub fn make_key_package(&self, device: &DeviceIdentity, lifetime_secs: u64) -> Result<NewKeyPackage> {
        self.transaction(|conn, p| make_key_package(conn, p, device, false, lifetime_secs))
    }

    /// The KeyPackages this device made and still holds the keys of.
    ///
    /// # Errors
    /// [`StoreError::Record`] for a record that does not decode; SQLite errors.
    pub fn key_packages(&self) -> Result<Vec<(Vec<u8>, KeyPackageRecord)>> {
        self.read(|conn, _| key_package_records(conn))
    }

    /// Deletes the private keys of KeyPackages expired at `now` (seconds since
    /// the Unix epoch), and forgets those a Welcome used (OpenMLS deleted
    /// their keys when it did), in one transaction.
    ///
    /// # Errors
    /// MLS or storage errors (nothing is written).
    pub fn tidy_key_packages(&self, now: u64) -> Result<Tidied> {
        self.transaction(|conn, p| {
            let mut tidied = Tidied::default();
            for (reference, record) in key_package_records(conn)? {
                if !capsule_mls::holds_key_package(p, &reference)? {
                    tidied.used += 1;
                } else if record.not_after <= now {
                    capsule_mls::forget_key_package(p, &reference)?;
                    tidied.expired += 1;
                } else {
                    continue;
                }
                delete(conn, KIND_KEY_PACKAGE, &reference)?;
            }
            Ok(tidied)
        })
    }

    /// What a re-bootstrap of the album discarded, while the device awaits its
    /// re-add (a read: nothing is written).
    ///
    /// # Errors
    /// [`StoreError::Record`] for a record that does not decode; SQLite errors.
    pub fn rebootstrap_record(&self, id: AlbumId) -> Result<Option<Discarded>> {
        self.read(|conn, _| {
            get(conn, KIND_REBOOTSTRAP, id.as_bytes())?.map(|bytes| records::decode_rebootstrap(&bytes)).transpose()
        })
    }

    /// The farewell fingerprint a re-bootstrap of the album made
    /// ([`ResilientAlbum::farewell`]), while the device awaits its re-add (a
    /// read: nothing is written).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn farewell(&self, id: AlbumId) -> Result<Option<Vec<u8>>> {
        self.read(|conn, _| Ok(get(conn, KIND_FAREWELL, id.as_bytes())?.map(|bytes| bytes.to_vec())))
    }

    /// Makes progress on a stored album's intents against the chain: decide in
    /// one write transaction, talk to the chain with no transaction open,
    /// record the answer in another, until nothing is due now. The device's
    /// write lock is never held across a network round trip, and a commit is
    /// durable as pending before it is sent, so re-sending after a crash is safe.
    ///
    /// # Errors
    /// Quarantine, a chain error other than silence, MLS errors that are not
    /// refusals, storage errors.
    pub fn sync_album(
        &self,
        id: AlbumId,
        policy: &RetryPolicy,
        device: &DeviceIdentity,
        validation: Validation<'_>,
        chain: &mut impl CommitChain,
        clock: &impl Clock,
    ) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        for _ in 0..MAX_ROUNDS {
            let action = self.with_resilient(id, policy.clone(), |r, p| {
                let action = r.poll_action(Context { provider: p, device, validation }, clock.now());
                events.extend(r.take_events());
                action
            })?;
            let Some(action) = action else { break };
            let answer = action.run(chain);
            self.step(Step::Sent);
            // The chain's failure is recorded first (the schedule moved on, a bad
            // answer was counted), then reported.
            let failed = self.with_resilient(id, policy.clone(), |r, p| {
                let handled = r.handle(Context { provider: p, device, validation }, answer, clock.now())?;
                events.extend(r.take_events());
                Ok(handled.err())
            })?;
            if let Some(e) = failed {
                return Err(ResilienceError::from(e).into());
            }
        }
        Ok(events)
    }

    /// Brings a stored album to the chain's head (see
    /// [`ResilientAlbum::reconcile_with_server`]): decide, fetch with no
    /// transaction open, apply in one write transaction.
    ///
    /// # Errors
    /// The chain's error when it does not answer; MLS errors that are not
    /// refusals; storage errors.
    pub fn reconcile_album(
        &self,
        id: AlbumId,
        policy: &RetryPolicy,
        device: &DeviceIdentity,
        validation: Validation<'_>,
        chain: &mut impl CommitChain,
    ) -> Result<ReconcileOutcome> {
        let mut asked = None;
        loop {
            let action = match self.read_resilient(id, policy.clone(), ResilientAlbum::begin_reconcile)? {
                ReconcileStep::Done(outcome) => return Ok(outcome),
                ReconcileStep::Fetch(action) => action,
            };
            // A second fetch only when the first changed where to read from
            // (a join the chain can no longer check).
            if asked.as_ref() == Some(&action) {
                return Err(ResilienceError::Chain(capsule_resilience::ChainError::Unavailable).into());
            }
            let answer = action.run(chain);
            self.step(Step::Sent);
            let outcome = self.with_resilient(id, policy.clone(), |r, p| {
                // No answer is the caller's error, not a failed transaction; a bug or
                // a storage fault rolls everything back.
                match r.finish_reconcile(Context { provider: p, device, validation }, answer) {
                    Err(ResilienceError::Chain(e)) => Ok(Err(e)),
                    other => other.map(Ok),
                }
            })?;
            match outcome {
                Err(capsule_resilience::ChainError::Unavailable) if asked.is_none() => asked = Some(action),
                other => return Ok(other.map_err(ResilienceError::from)?),
            }
        }
    }

    /// Bytes the database file takes (its length: encrypted pages, each
    /// with SQLCipher's per-page overhead).
    ///
    /// # Errors
    /// SQLite or file errors.
    pub fn size_on_disk(&self) -> Result<u64> {
        let conn = self.connection();
        let path = conn.path().filter(|p| !p.is_empty()).ok_or(StoreError::NotFound("database file"))?;
        Ok(std::fs::metadata(path)?.len())
    }
}

/// Whether the file at `path` starts as a plaintext SQLite database does.
fn starts_with_sqlite_header(path: &Path) -> Result<bool> {
    use std::io::Read as _;
    let mut head = [0u8; 16];
    let mut file = std::fs::File::open(path)?;
    Ok(file.read_exact(&mut head).is_ok() && head == *SQLITE_HEADER)
}

/// Encrypts a plaintext Capsule store (an earlier version's) under `key`:
/// checked first (a foreign, damaged or newer file is refused, untouched),
/// exported to a file beside it, flushed, then renamed over it.
fn encrypt_plaintext_store(path: &Path, key: &DatabaseKey) -> Result<()> {
    let beside = path.with_extension("encrypting");
    // A leftover of an encryption a crash interrupted: the plaintext file is whole.
    if beside.exists() {
        std::fs::remove_file(&beside)?;
    }
    {
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(StoreError::Corrupt(check));
        }
        let version = conn
            .query_row("SELECT version FROM capsule_schema", [], |r| r.get::<_, i64>(0))
            .map_err(|_| StoreError::Foreign)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema { found: version, supported: SCHEMA_VERSION });
        }
        let target = beside.to_str().ok_or(StoreError::Record("a path that is not UTF-8"))?;
        // Made empty here: the connection may not create files.
        std::fs::File::create(&beside)?;
        conn.execute("ATTACH DATABASE ?1 AS encrypted KEY ?2", params![target, key.sqlcipher_value().as_str()])?;
        let exported = conn.query_row("SELECT sqlcipher_export('encrypted')", [], |_| Ok(()));
        conn.execute_batch("DETACH DATABASE encrypted")?;
        exported?;
    }
    std::fs::File::open(&beside)?.sync_all()?;
    std::fs::rename(&beside, path)?;
    // The rename itself is durable once the directory is.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    tracing::info!("a plaintext store was encrypted");
    Ok(())
}

/// Makes one KeyPackage and records it, inside the caller's transaction.
fn make_key_package(
    conn: &Connection,
    p: &SqliteProvider<'_>,
    device: &DeviceIdentity,
    last_resort: bool,
    lifetime_secs: u64,
) -> Result<NewKeyPackage> {
    let made = capsule_mls::new_key_package(p, device, last_resort, lifetime_secs)?;
    let record = KeyPackageRecord { not_after: made.not_after, last_resort };
    put(conn, KIND_KEY_PACKAGE, &made.reference, &records::encode_key_package(&record)?)?;
    Ok(made)
}

fn key_package_records(conn: &Connection) -> Result<Vec<(Vec<u8>, KeyPackageRecord)>> {
    let mut statement = conn.prepare("SELECT id, value FROM capsule_records WHERE kind = ?1 ORDER BY id")?;
    let rows =
        statement.query_map(params![KIND_KEY_PACKAGE], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, value) = row?;
        out.push((id, records::decode_key_package(&value)?));
    }
    Ok(out)
}

fn provider(conn: &Connection) -> Result<SqliteProvider<'_>> {
    Ok(CapsuleProvider::new(SqliteStorageProvider::new(conn))?)
}

fn put(conn: &Connection, kind: &str, id: &[u8], value: &[u8]) -> Result<()> {
    conn.execute(
        "INSERT INTO capsule_records (kind, id, value) VALUES (?1, ?2, ?3)
         ON CONFLICT (kind, id) DO UPDATE SET value = excluded.value",
        params![kind, id, value],
    )?;
    Ok(())
}

fn delete(conn: &Connection, kind: &str, id: &[u8]) -> Result<()> {
    conn.execute("DELETE FROM capsule_records WHERE kind = ?1 AND id = ?2", params![kind, id])?;
    Ok(())
}

fn get(conn: &Connection, kind: &str, id: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>> {
    Ok(conn
        .query_row("SELECT value FROM capsule_records WHERE kind = ?1 AND id = ?2", params![kind, id], |r| r.get(0))
        .optional()?
        .map(Zeroizing::new))
}

fn load_album(conn: &Connection, p: &SqliteProvider<'_>, id: AlbumId) -> Result<Album> {
    let record = get(conn, KIND_ALBUM, id.as_bytes())?.ok_or(StoreError::NotFound("album"))?;
    Ok(Album::load(p, &record)?)
}

fn load_resilient(
    conn: &Connection,
    p: &SqliteProvider<'_>,
    id: AlbumId,
    policy: RetryPolicy,
) -> Result<ResilientAlbum> {
    let album = load_album(conn, p, id)?;
    Ok(match get(conn, KIND_RESILIENCE, id.as_bytes())? {
        Some(r) => ResilientAlbum::from_record(album, &r, policy)?,
        None => ResilientAlbum::new(album, policy),
    })
}
