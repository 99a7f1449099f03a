//! One SQLite database per device: OpenMLS's group state and Capsule's records,
//! written together in one transaction per logical operation.

use std::path::Path;

use capsule_amk::{AlbumId, AlbumMetadata};
use capsule_identity::{DeviceCertificate, DeviceSigningKey};
use capsule_mls::{Album, CapsuleProvider, DeviceIdentity, MlsError, Validation};
use capsule_resilience::{ResilienceError, ResilientAlbum, RetryPolicy};
use openmls_sqlite_storage::SqliteStorageProvider;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{JsonCodec, Result, StoreError};

/// The OpenMLS provider over a store's connection.
pub type SqliteProvider<'a> = CapsuleProvider<SqliteStorageProvider<JsonCodec, &'a Connection>>;

/// Capsule's own schema version (OpenMLS's tables have their own migrations).
pub const SCHEMA_VERSION: i64 = 1;

/// Capsule's migrations, in order: `MIGRATIONS[i]` takes the schema from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &["CREATE TABLE capsule_records (
        kind TEXT NOT NULL,
        id BLOB NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (kind, id)
    );"];

const KIND_DEVICE: &str = "device";
const KIND_ALBUM: &str = "album";
const KIND_RESILIENCE: &str = "resilience";

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
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Self; 4] = [Self::Begun, Self::MlsWritten, Self::RecordsWritten, Self::Committed];
}

/// A device's durable store.
pub struct Store {
    conn: Connection,
    observer: Option<Box<dyn Fn(Step)>>,
}

impl core::fmt::Debug for Store {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct DeviceRecord {
    secret: [u8; 32],
    certificate: Vec<u8>,
}

impl Drop for DeviceRecord {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
    }
}

impl Store {
    /// Opens (or creates) the store at `path`.
    ///
    /// A file that is not a healthy Capsule store is refused with a typed error
    /// and left exactly as it was.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`], [`StoreError::NewerSchema`], [`StoreError::Foreign`].
    pub fn open(path: &Path) -> Result<Self> {
        let exists = path.exists();
        let flags = if exists {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        let mut conn = Connection::open_with_flags(path, flags)?;
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
        for (step, sql) in (version + 1..).zip(pending) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.execute("UPDATE capsule_schema SET version = ?1", params![step])?;
            tx.commit()?;
        }
        SqliteStorageProvider::<JsonCodec, &mut Connection>::new(&mut conn)
            .run_migrations()
            .map_err(|e| StoreError::Sqlite(e.to_string()))?;
        Ok(Self { conn, observer: None })
    }

    /// Reports every [`Step`] of every logical operation to `observer`.
    pub fn set_observer(&mut self, observer: Box<dyn Fn(Step)>) {
        self.observer = Some(observer);
    }

    fn step(&self, step: Step) {
        if let Some(observer) = &self.observer {
            observer(step);
        }
    }

    /// The OpenMLS provider over this store (its writes join the open transaction).
    ///
    /// # Errors
    /// [`StoreError::Mls`] if the crypto provider cannot start.
    pub fn provider(&self) -> Result<SqliteProvider<'_>> {
        Ok(CapsuleProvider::new(SqliteStorageProvider::new(&self.conn))?)
    }

    fn put(&self, kind: &str, id: &[u8], value: &[u8]) -> Result<()> {
        self.conn.execute(
            "INSERT INTO capsule_records (kind, id, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (kind, id) DO UPDATE SET value = excluded.value",
            params![kind, id, value],
        )?;
        Ok(())
    }

    fn get(&self, kind: &str, id: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM capsule_records WHERE kind = ?1 AND id = ?2", params![kind, id], |r| r.get(0))
            .optional()?
            .map(Zeroizing::new))
    }

    /// Runs `f` as one transaction: everything it writes, OpenMLS's and ours,
    /// commits together or not at all.
    fn transaction<T>(&self, f: impl FnOnce(&SqliteProvider<'_>) -> Result<T>) -> Result<T> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        self.step(Step::Begun);
        let result = self.provider().and_then(|p| f(&p));
        match result {
            Ok(value) => {
                self.step(Step::RecordsWritten);
                self.conn.execute_batch("COMMIT")?;
                self.step(Step::Committed);
                Ok(value)
            }
            Err(e) => {
                // Nothing of a failed operation stays: not OpenMLS's writes, not ours.
                self.conn.execute_batch("ROLLBACK")?;
                Err(e)
            }
        }
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
        let bytes = Zeroizing::new(serde_json::to_vec(&record).map_err(|_| StoreError::Record("device"))?);
        self.transaction(|_| {
            if self.get(KIND_DEVICE, b"self")?.is_some() {
                return Err(StoreError::AlreadyEnrolled);
            }
            self.put(KIND_DEVICE, b"self", &bytes)
        })
    }

    /// This device's identity.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::Record`], or
    /// [`StoreError::KeyMaterial`] when key and certificate do not match.
    pub fn load_device(&self) -> Result<DeviceIdentity> {
        let bytes = self.get(KIND_DEVICE, b"self")?.ok_or(StoreError::NotFound("device identity"))?;
        let record: DeviceRecord = serde_json::from_slice(&bytes).map_err(|_| StoreError::Record("device"))?;
        let certificate =
            DeviceCertificate::from_bytes(&record.certificate).map_err(|_| StoreError::Record("device certificate"))?;
        DeviceIdentity::new(DeviceSigningKey::from_secret_bytes(&record.secret), certificate)
            .map_err(|_| StoreError::KeyMaterial)
    }

    fn write_album(&self, album: &Album) -> Result<()> {
        self.step(Step::MlsWritten);
        self.put(KIND_ALBUM, album.id().as_bytes(), &album.to_record()?)
    }

    /// Creates an album, durably.
    ///
    /// # Errors
    /// As [`Album::create`].
    pub fn create_album(&self, device: &DeviceIdentity, metadata: AlbumMetadata) -> Result<AlbumId> {
        self.transaction(|p| {
            let album = Album::create(p, device, metadata)?;
            self.write_album(&album)?;
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
        self.transaction(|p| {
            let album = Album::join(p, welcome, bundle, validation)?;
            self.write_album(&album)?;
            self.conn.execute(
                "DELETE FROM capsule_records WHERE kind = ?1 AND id = ?2",
                params![KIND_RESILIENCE, album.id().as_bytes()],
            )?;
            Ok(album.id())
        })
    }

    /// The album as stored.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], or [`StoreError::Mls`] if storage and record disagree.
    pub fn album(&self, id: AlbumId) -> Result<Album> {
        let record = self.get(KIND_ALBUM, id.as_bytes())?.ok_or(StoreError::NotFound("album"))?;
        let provider = self.provider()?;
        Ok(Album::load(&provider, &record)?)
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
        self.transaction(|p| {
            let record = self.get(KIND_ALBUM, id.as_bytes())?.ok_or(StoreError::NotFound("album"))?;
            let mut album = Album::load(p, &record)?;
            let value = f(&mut album, p)?;
            self.write_album(&album)?;
            Ok(value)
        })
    }

    /// Runs one step of the resilience layer (drive, reconcile, propose) on a
    /// stored album in one transaction: the album record, its intents and
    /// OpenMLS's writes commit together.
    ///
    /// # Errors
    /// The step's own error (nothing is written), or storage errors.
    pub fn with_resilient<T>(
        &self,
        id: AlbumId,
        policy: RetryPolicy,
        f: impl FnOnce(&mut ResilientAlbum, &SqliteProvider<'_>) -> Result<T, ResilienceError>,
    ) -> Result<T> {
        self.transaction(|p| {
            let record = self.get(KIND_ALBUM, id.as_bytes())?.ok_or(StoreError::NotFound("album"))?;
            let album = Album::load(p, &record)?;
            let mut resilient = match self.get(KIND_RESILIENCE, id.as_bytes())? {
                Some(r) => ResilientAlbum::from_record(album, &r, policy)?,
                None => ResilientAlbum::new(album, policy),
            };
            let value = f(&mut resilient, p)?;
            self.write_album(resilient.album())?;
            self.put(KIND_RESILIENCE, id.as_bytes(), &resilient.to_record()?)?;
            Ok(value)
        })
    }

    /// Bytes the database file takes (page count × page size).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn size_on_disk(&self) -> Result<u64> {
        let pages: i64 = self.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        u64::try_from(pages.saturating_mul(size)).map_err(|_| StoreError::Record("page count"))
    }
}
