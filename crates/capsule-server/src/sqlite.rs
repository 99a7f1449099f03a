//! The embedded backend: one SQLite file, written through one connection
//! (SQLite has one writer anyway), in WAL mode with full synchronous commits
//! so an accepted entry survives a crash of the process or the machine.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use capsule_chain::rules::{self, Decision};
use capsule_chain::wire::{ClaimedKeyPackage, Delivery, Page, PageEntry};
use capsule_chain::{CommitHash, Epoch, Submission, SubmitAnswer, WelcomeBlobs};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::storage::{
    AlbumState, Certified, Filed, MemberId, Registration, Storage, StorageError, Validated, clamp, decide, from_db,
    to_db,
};

/// Versioned migrations: entry `i` takes the schema from version `i` to `i + 1`.
/// Released ones never change; a new version appends one.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE albums (
        album BLOB PRIMARY KEY,
        base INTEGER NOT NULL CHECK (base >= 0),
        head INTEGER NOT NULL CHECK (head >= base)
    ) STRICT;
    CREATE TABLE entries (
        album BLOB NOT NULL REFERENCES albums (album),
        epoch INTEGER NOT NULL CHECK (epoch >= 0),
        commit_hash BLOB NOT NULL,
        commit_bytes BLOB NOT NULL,
        welcome BLOB,
        bundle BLOB,
        PRIMARY KEY (album, epoch)
    ) STRICT;
    CREATE UNIQUE INDEX entries_by_hash ON entries (album, commit_hash);
",
    "
    ALTER TABLE albums ADD COLUMN state BLOB;
    CREATE TABLE users (
        user_id BLOB PRIMARY KEY,
        identity_key BLOB NOT NULL
    ) STRICT;
    CREATE TABLE devices (
        user_id BLOB NOT NULL REFERENCES users (user_id),
        device BLOB NOT NULL,
        not_after BLOB NOT NULL,
        certificate BLOB NOT NULL,
        PRIMARY KEY (user_id, device)
    ) STRICT;
    CREATE TABLE access (
        album BLOB NOT NULL REFERENCES albums (album),
        member BLOB NOT NULL,
        until INTEGER,
        PRIMARY KEY (album, member)
    ) STRICT;
    CREATE TABLE nonces (
        member BLOB NOT NULL,
        nonce BLOB NOT NULL,
        expires INTEGER NOT NULL,
        PRIMARY KEY (member, nonce)
    ) STRICT;
",
    "
    CREATE TABLE key_packages (
        user_id BLOB NOT NULL,
        device BLOB NOT NULL,
        reference BLOB NOT NULL,
        last_resort INTEGER NOT NULL CHECK (last_resort IN (0, 1)),
        not_after INTEGER NOT NULL,
        key_package BLOB NOT NULL,
        PRIMARY KEY (user_id, device, reference)
    ) STRICT;
    CREATE TABLE mailbox (
        user_id BLOB NOT NULL,
        device BLOB NOT NULL,
        album BLOB NOT NULL REFERENCES albums (album),
        epoch INTEGER NOT NULL CHECK (epoch >= 0),
        reference BLOB NOT NULL,
        welcome BLOB NOT NULL,
        bundle BLOB,
        PRIMARY KEY (user_id, device, album, epoch)
    ) STRICT;
",
    "
    CREATE TABLE fingerprints (
        album BLOB NOT NULL REFERENCES albums (album),
        member BLOB NOT NULL,
        fingerprint BLOB NOT NULL,
        PRIMARY KEY (album, member)
    ) STRICT;
",
    "
    CREATE TABLE spent_key_packages (
        reference BLOB PRIMARY KEY,
        album BLOB NOT NULL,
        epoch INTEGER NOT NULL CHECK (epoch >= 0)
    ) STRICT;
",
];

fn db(e: rusqlite::Error) -> StorageError {
    StorageError::Database(e.to_string())
}

/// The chain in one SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteStorage {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStorage {
    /// Opens (creating it if missing) and migrates the database at `path`.
    ///
    /// # Errors
    /// [`StorageError::Database`] when the file cannot be opened or migrated;
    /// [`StorageError::Corrupt`] for a database from a newer server.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let mut conn = Connection::open(path).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(db)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(db)?;
        migrate(&mut conn)?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Runs `f` on the connection off the async threads.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock happened outside a committed
            // transaction: SQLite rolled it back, the connection is sound.
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn)
        })
        .await
        .map_err(|e| StorageError::Database(e.to_string()))?
    }
}

/// The schema version a database is at, then every migration after it, each
/// in its own transaction with its version number.
fn migrate(conn: &mut Connection) -> Result<(), StorageError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS capsule_schema (version INTEGER PRIMARY KEY) STRICT").map_err(db)?;
    let current: i64 =
        conn.query_row("SELECT coalesce(max(version), 0) FROM capsule_schema", [], |r| r.get(0)).map_err(db)?;
    let current = usize::try_from(current).map_err(|_| StorageError::Corrupt("a negative schema version"))?;
    if current > MIGRATIONS.len() {
        return Err(StorageError::Corrupt("the database is from a newer server"));
    }
    for (version, migration) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction().map_err(db)?;
        tx.execute_batch(migration).map_err(db)?;
        let version = i64::try_from(version + 1).map_err(|_| StorageError::Corrupt("schema version"))?;
        tx.execute("INSERT INTO capsule_schema (version) VALUES (?1)", [version]).map_err(db)?;
        tx.commit().map_err(db)?;
    }
    Ok(())
}

fn album_row(conn: &Connection, album: &[u8]) -> Result<(Epoch, Epoch), StorageError> {
    let row: Option<(i64, i64)> = conn
        .query_row("SELECT base, head FROM albums WHERE album = ?1", [album], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(db)?;
    let (base, head) = row.ok_or(StorageError::UnknownAlbum)?;
    Ok((from_db(base)?, from_db(head)?))
}

/// Where the album's chain holds the commit with `hash`, if it does.
fn held_at(conn: &Connection, album: &[u8], hash: CommitHash) -> Result<Option<Epoch>, StorageError> {
    let at: Option<i64> = conn
        .query_row(
            "SELECT epoch FROM entries WHERE album = ?1 AND commit_hash = ?2",
            params![album, hash.0.as_slice()],
            |r| r.get(0),
        )
        .optional()
        .map_err(db)?;
    at.map(from_db).transpose()
}

/// Records who may read `album`: `removed` up to the entry at `epoch`,
/// `added` (after, so a device re-added by the same commit stays) from now on.
fn grant(
    tx: &Connection,
    album: &[u8],
    added: &[MemberId],
    removed: &[MemberId],
    epoch: Option<i64>,
) -> Result<(), StorageError> {
    for member in removed {
        tx.execute(
            "UPDATE access SET until = ?3 WHERE album = ?1 AND member = ?2",
            params![album, member.as_slice(), epoch],
        )
        .map_err(db)?;
    }
    for member in added {
        tx.execute(
            "INSERT INTO access (album, member, until) VALUES (?1, ?2, NULL)
             ON CONFLICT (album, member) DO UPDATE SET until = NULL",
            params![album, member.as_slice()],
        )
        .map_err(db)?;
    }
    Ok(())
}

/// Files `device` for `user` unless a certificate ending later is filed.
fn file_device(tx: &Connection, user: &[u8], device: &Certified) -> Result<Registration, StorageError> {
    let filed: Option<Vec<u8>> = tx
        .query_row(
            "SELECT not_after FROM devices WHERE user_id = ?1 AND device = ?2",
            params![user, device.device.as_slice()],
            |r| r.get(0),
        )
        .optional()
        .map_err(db)?;
    if filed.is_some_and(|f| f.as_slice() > device.not_after.to_be_bytes().as_slice()) {
        return Ok(Registration::Stale);
    }
    tx.execute(
        "INSERT INTO devices (user_id, device, not_after, certificate) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (user_id, device) DO UPDATE SET not_after = excluded.not_after, certificate = excluded.certificate",
        params![user, device.device.as_slice(), device.not_after.to_be_bytes().as_slice(), device.certificate],
    )
    .map_err(db)?;
    Ok(Registration::Stored)
}

/// Puts the submission's Welcome in the mailbox of each device it adds.
fn deliver(
    tx: &Connection,
    album: &[u8],
    epoch: i64,
    welcomed: &[(MemberId, Vec<u8>)],
    s: &Submission,
) -> Result<(), StorageError> {
    let Some(welcome) = &s.welcome else { return Ok(()) };
    for (member, reference) in welcomed {
        let (user, device) = member.split_at(16);
        tx.execute(
            "INSERT OR IGNORE INTO mailbox (user_id, device, album, epoch, reference, welcome, bundle)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![user, device, album, epoch, reference, welcome, s.bundle],
        )
        .map_err(db)?;
    }
    Ok(())
}

/// Records the commit's regular KeyPackages as spent; refused (the
/// transaction dropped) if one already is, by this album or another.
fn spend(tx: &Connection, album: &[u8], epoch: i64, spent: &[Vec<u8>]) -> Result<(), StorageError> {
    for reference in spent {
        let new = tx
            .execute(
                "INSERT OR IGNORE INTO spent_key_packages (reference, album, epoch) VALUES (?1, ?2, ?3)",
                params![reference, album, epoch],
            )
            .map_err(db)?;
        if new == 0 {
            return Err(StorageError::KeyPackageSpent);
        }
    }
    Ok(())
}

/// Forgets `member`'s KeyPackages that end before `usable_from`.
fn forget_expired(tx: &Connection, member: &MemberId, usable_from: i64) -> Result<(), StorageError> {
    let (user, device) = member.split_at(16);
    tx.execute(
        "DELETE FROM key_packages WHERE user_id = ?1 AND device = ?2 AND not_after < ?3",
        params![user, device, usable_from],
    )
    .map_err(db)?;
    Ok(())
}

/// `member`'s regular KeyPackages, and the end of its last-resort one.
fn stock(tx: &Connection, member: &MemberId) -> Result<(u64, Option<u64>), StorageError> {
    let (user, device) = member.split_at(16);
    let regular: i64 = tx
        .query_row(
            "SELECT count(*) FROM key_packages WHERE user_id = ?1 AND device = ?2 AND last_resort = 0",
            params![user, device],
            |r| r.get(0),
        )
        .map_err(db)?;
    let last: Option<i64> = tx
        .query_row(
            "SELECT max(not_after) FROM key_packages WHERE user_id = ?1 AND device = ?2 AND last_resort = 1",
            params![user, device],
            |r| r.get(0),
        )
        .map_err(db)?;
    let regular = u64::try_from(regular).map_err(|_| StorageError::Corrupt("a negative count"))?;
    let last = last.map(|t| u64::try_from(t).map_err(|_| StorageError::Corrupt("a negative time"))).transpose()?;
    Ok((regular, last))
}

fn not_after(bytes: &[u8]) -> Result<u64, StorageError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| StorageError::Corrupt("a certificate's end"))?;
    Ok(u64::from_be_bytes(array))
}

impl Storage for SqliteStorage {
    async fn create_album(
        &self,
        album: Vec<u8>,
        base: Epoch,
        state: Option<Vec<u8>>,
        members: Vec<MemberId>,
    ) -> Result<Epoch, StorageError> {
        let base = to_db(base)?;
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            let new = tx
                .execute(
                    "INSERT OR IGNORE INTO albums (album, base, head, state) VALUES (?1, ?2, ?2, ?3)",
                    params![album, base, state],
                )
                .map_err(db)?;
            if new == 1 {
                grant(&tx, &album, &members, &[], None)?;
            }
            let (base, _) = album_row(&tx, &album)?;
            tx.commit().map_err(db)?;
            Ok(base)
        })
        .await
    }

    async fn album_state(&self, album: Vec<u8>) -> Result<AlbumState, StorageError> {
        self.with(move |conn| {
            let tx = conn.transaction().map_err(db)?;
            let (_, head) = album_row(&tx, &album)?;
            let state =
                tx.query_row("SELECT state FROM albums WHERE album = ?1", [&album], |r| r.get(0)).map_err(db)?;
            Ok(AlbumState { head, state })
        })
        .await
    }

    async fn submit(
        &self,
        album: Vec<u8>,
        s: Submission,
        keep: Option<u64>,
        validated: Option<Validated>,
    ) -> Result<SubmitAnswer, StorageError> {
        self.with(move |conn| {
            // IMMEDIATE: the write lock is taken before the facts are read, so
            // nothing can change between reading the head and appending.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            let (base, head) = album_row(&tx, &album)?;
            let hash = CommitHash::of(&s.commit);
            let decision = rules::decide(held_at(&tx, &album, hash)?, head, s.epoch);
            let checked: bool = tx
                .query_row("SELECT state IS NOT NULL FROM albums WHERE album = ?1", [&album], |r| r.get(0))
                .map_err(db)?;
            if decision == Decision::Append && checked && validated.is_none() {
                return Ok(SubmitAnswer::Conflict { head });
            }
            if decision == Decision::Append {
                if let (true, Some(v)) = (checked, &validated) {
                    tx.execute("UPDATE albums SET state = ?2 WHERE album = ?1", params![album, v.state]).map_err(db)?;
                    grant(&tx, &album, &v.added, &v.removed, Some(to_db(s.epoch)?))?;
                    deliver(&tx, &album, to_db(s.epoch)?, &v.welcomed, &s)?;
                    spend(&tx, &album, to_db(s.epoch)?, &v.spent)?;
                }
                let epoch = to_db(s.epoch)?;
                tx.execute(
                    "INSERT INTO entries (album, epoch, commit_hash, commit_bytes, welcome, bundle)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![album, epoch, hash.0.as_slice(), s.commit, s.welcome, s.bundle],
                )
                .map_err(db)?;
                let new_head = s.epoch.saturating_add(1);
                let new_base = rules::retained_base(base, new_head, keep);
                tx.execute("DELETE FROM entries WHERE album = ?1 AND epoch < ?2", params![album, to_db(new_base)?])
                    .map_err(db)?;
                tx.execute(
                    "UPDATE albums SET head = ?2, base = ?3 WHERE album = ?1",
                    params![album, to_db(new_head)?, to_db(new_base)?],
                )
                .map_err(db)?;
            }
            tx.commit().map_err(db)?;
            Ok(decision.answer(s.epoch))
        })
        .await
    }

    async fn page(&self, album: Vec<u8>, from: Epoch, limit: u64, max_bytes: u64) -> Result<Page, StorageError> {
        self.with(move |conn| {
            let tx = conn.transaction().map_err(db)?;
            let (base, head) = album_row(&tx, &album)?;
            let range = decide::range(base, head, from, limit)?;
            if range.0 == range.1 {
                return decide::page(head, range, Vec::new(), max_bytes);
            }
            let mut stmt = tx
                .prepare(
                    "SELECT epoch, commit_bytes, welcome IS NOT NULL OR bundle IS NOT NULL FROM entries
                     WHERE album = ?1 AND epoch >= ?2 AND epoch < ?3 ORDER BY epoch",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(params![album, to_db(range.0)?, to_db(range.1)?], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, bool>(2)?))
                })
                .map_err(db)?;
            let mut entries = Vec::new();
            for row in rows {
                let (epoch, commit, has_welcome) = row.map_err(db)?;
                entries.push(PageEntry { epoch: from_db(epoch)?, commit, has_welcome });
            }
            decide::page(head, range, entries, max_bytes)
        })
        .await
    }

    async fn prune_before(&self, album: Vec<u8>, epoch: Epoch) -> Result<Epoch, StorageError> {
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            let (base, head) = album_row(&tx, &album)?;
            let new_base = rules::pruned_base(base, head, epoch);
            tx.execute("DELETE FROM entries WHERE album = ?1 AND epoch < ?2", params![album, to_db(new_base)?])
                .map_err(db)?;
            tx.execute("UPDATE albums SET base = ?2 WHERE album = ?1", params![album, to_db(new_base)?]).map_err(db)?;
            tx.commit().map_err(db)?;
            Ok(new_base)
        })
        .await
    }

    async fn held_at(&self, album: Vec<u8>, hash: CommitHash) -> Result<Option<Epoch>, StorageError> {
        self.with(move |conn| {
            album_row(conn, &album)?;
            held_at(conn, &album, hash)
        })
        .await
    }

    async fn head(&self, album: Vec<u8>) -> Result<Epoch, StorageError> {
        self.with(move |conn| album_row(conn, &album).map(|(_, head)| head)).await
    }

    async fn access(&self, album: Vec<u8>, member: MemberId) -> Result<Option<Option<Epoch>>, StorageError> {
        self.with(move |conn| {
            let until: Option<Option<i64>> = conn
                .query_row(
                    "SELECT until FROM access WHERE album = ?1 AND member = ?2",
                    params![album, member.as_slice()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            until.map(|u| u.map(from_db).transpose()).transpose()
        })
        .await
    }

    async fn certificate(&self, member: MemberId) -> Result<Option<(Vec<u8>, Vec<u8>)>, StorageError> {
        self.with(move |conn| {
            let (user, device) = member.split_at(16);
            conn.query_row(
                "SELECT u.identity_key, d.certificate FROM devices d JOIN users u ON u.user_id = d.user_id
                 WHERE d.user_id = ?1 AND d.device = ?2",
                params![user, device],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db)
        })
        .await
    }

    async fn remember_nonce(
        &self,
        member: MemberId,
        nonce: [u8; 16],
        now: u64,
        expires: u64,
    ) -> Result<bool, StorageError> {
        let (now, expires) = (clamp(now), clamp(expires));
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            tx.execute("DELETE FROM nonces WHERE member = ?1 AND expires < ?2", params![member.as_slice(), now])
                .map_err(db)?;
            let new = tx
                .execute(
                    "INSERT OR IGNORE INTO nonces (member, nonce, expires) VALUES (?1, ?2, ?3)",
                    params![member.as_slice(), nonce.as_slice(), expires],
                )
                .map_err(db)?;
            tx.commit().map_err(db)?;
            Ok(new == 1)
        })
        .await
    }

    async fn register_user(
        &self,
        user: [u8; 16],
        identity_key: Vec<u8>,
        first: Certified,
    ) -> Result<Registration, StorageError> {
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            let filed: Option<Vec<u8>> = tx
                .query_row("SELECT identity_key FROM users WHERE user_id = ?1", [user.as_slice()], |r| r.get(0))
                .optional()
                .map_err(db)?;
            match filed {
                Some(key) if key != identity_key => return Ok(Registration::KeyTaken),
                Some(_) => {}
                None => {
                    tx.execute(
                        "INSERT INTO users (user_id, identity_key) VALUES (?1, ?2)",
                        params![user.as_slice(), identity_key],
                    )
                    .map_err(db)?;
                }
            }
            let filed = file_device(&tx, &user, &first)?;
            tx.commit().map_err(db)?;
            Ok(filed)
        })
        .await
    }

    async fn register_device(&self, user: [u8; 16], device: Certified) -> Result<Registration, StorageError> {
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            let known: bool = tx
                .query_row("SELECT count(*) > 0 FROM users WHERE user_id = ?1", [user.as_slice()], |r| r.get(0))
                .map_err(db)?;
            if !known {
                return Ok(Registration::UnknownUser);
            }
            let filed = file_device(&tx, &user, &device)?;
            tx.commit().map_err(db)?;
            Ok(filed)
        })
        .await
    }

    async fn file_key_packages(
        &self,
        member: MemberId,
        regular: Vec<Filed>,
        last_resort: Option<Filed>,
        usable_from: u64,
        max: u64,
    ) -> Result<bool, StorageError> {
        let usable_from = clamp(usable_from);
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            forget_expired(&tx, &member, usable_from)?;
            let (user, device) = member.split_at(16);
            let insert = |kp: &Filed, last: bool| {
                tx.execute(
                    "INSERT OR IGNORE INTO key_packages (user_id, device, reference, last_resort, not_after, key_package)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![user, device, kp.reference, last, clamp(kp.not_after), kp.bytes],
                )
                .map_err(db)
            };
            for kp in &regular {
                let spent: bool = tx
                    .query_row(
                        "SELECT EXISTS (SELECT 1 FROM spent_key_packages WHERE reference = ?1)",
                        [&kp.reference],
                        |r| r.get(0),
                    )
                    .map_err(db)?;
                if spent {
                    return Err(StorageError::KeyPackageSpent);
                }
                insert(kp, false)?;
            }
            if let Some(kp) = &last_resort {
                tx.execute(
                    "DELETE FROM key_packages WHERE user_id = ?1 AND device = ?2 AND last_resort = 1",
                    params![user, device],
                )
                .map_err(db)?;
                insert(kp, true)?;
            }
            if stock(&tx, &member)?.0 > max {
                // Dropped with the transaction: nothing of the upload stays.
                return Ok(false);
            }
            tx.commit().map_err(db)?;
            Ok(true)
        })
        .await
    }

    async fn key_package_stock(&self, member: MemberId, usable_from: u64) -> Result<(u64, Option<u64>), StorageError> {
        let usable_from = clamp(usable_from);
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            forget_expired(&tx, &member, usable_from)?;
            let stock = stock(&tx, &member)?;
            tx.commit().map_err(db)?;
            Ok(stock)
        })
        .await
    }

    async fn claim_key_packages(
        &self,
        user: [u8; 16],
        skip: Vec<[u8; 16]>,
        usable_from: u64,
    ) -> Result<Vec<ClaimedKeyPackage>, StorageError> {
        let usable_from = clamp(usable_from);
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            tx.execute(
                "DELETE FROM key_packages WHERE user_id = ?1 AND not_after < ?2",
                params![user.as_slice(), usable_from],
            )
            .map_err(db)?;
            let devices: Vec<Vec<u8>> = {
                let mut stmt = tx
                    .prepare("SELECT DISTINCT device FROM key_packages WHERE user_id = ?1 ORDER BY device")
                    .map_err(db)?;
                let rows = stmt.query_map([user.as_slice()], |r| r.get(0)).map_err(db)?;
                rows.collect::<Result<_, _>>().map_err(db)?
            };
            let mut claimed = Vec::with_capacity(devices.len());
            for device in devices.into_iter().filter(|d| !skip.iter().any(|s| s.as_slice() == d.as_slice())) {
                // A regular one first (the one ending soonest); the last resort
                // only when none is left.
                let (reference, last, key_package): (Vec<u8>, bool, Vec<u8>) = tx
                    .query_row(
                        "SELECT reference, last_resort, key_package FROM key_packages
                         WHERE user_id = ?1 AND device = ?2 ORDER BY last_resort, not_after, reference LIMIT 1",
                        params![user.as_slice(), device],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .map_err(db)?;
                if !last {
                    tx.execute(
                        "DELETE FROM key_packages WHERE user_id = ?1 AND device = ?2 AND reference = ?3",
                        params![user.as_slice(), device, reference],
                    )
                    .map_err(db)?;
                }
                let device = device.try_into().map_err(|_| StorageError::Corrupt("a device id"))?;
                claimed.push(ClaimedKeyPackage { device, key_package, last_resort: last });
            }
            tx.commit().map_err(db)?;
            Ok(claimed)
        })
        .await
    }

    async fn mailbox(&self, member: MemberId) -> Result<Vec<Delivery>, StorageError> {
        self.with(move |conn| {
            let (user, device) = member.split_at(16);
            let mut stmt = conn
                .prepare(
                    "SELECT album, epoch, reference, welcome, bundle FROM mailbox
                     WHERE user_id = ?1 AND device = ?2 ORDER BY album, epoch",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(params![user, device], |r| {
                    Ok((r.get(0)?, r.get::<_, i64>(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .map_err(db)?;
            let mut out = Vec::new();
            for row in rows {
                let (album, epoch, reference, welcome, bundle) = row.map_err(db)?;
                out.push(Delivery { album, epoch: from_db(epoch)?, reference, welcome, bundle });
            }
            Ok(out)
        })
        .await
    }

    async fn acknowledge(&self, member: MemberId, album: Vec<u8>, epoch: Epoch) -> Result<(), StorageError> {
        let epoch = to_db(epoch)?;
        self.with(move |conn| {
            let (user, device) = member.split_at(16);
            conn.execute(
                "DELETE FROM mailbox WHERE user_id = ?1 AND device = ?2 AND album = ?3 AND epoch = ?4",
                params![user, device, album, epoch],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn identity_keys(&self, users: Vec<[u8; 16]>) -> Result<Vec<([u8; 16], Vec<u8>)>, StorageError> {
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached("SELECT identity_key FROM users WHERE user_id = ?1").map_err(db)?;
            let mut out = Vec::new();
            for user in users {
                let key: Option<Vec<u8>> = stmt.query_row([user.as_slice()], |r| r.get(0)).optional().map_err(db)?;
                out.extend(key.map(|k| (user, k)));
            }
            Ok(out)
        })
        .await
    }

    async fn directory(&self, user: [u8; 16]) -> Result<Option<(Vec<u8>, Vec<Certified>)>, StorageError> {
        self.with(move |conn| {
            let tx = conn.transaction().map_err(db)?;
            let key: Option<Vec<u8>> = tx
                .query_row("SELECT identity_key FROM users WHERE user_id = ?1", [user.as_slice()], |r| r.get(0))
                .optional()
                .map_err(db)?;
            let Some(key) = key else { return Ok(None) };
            let mut stmt = tx
                .prepare("SELECT device, not_after, certificate FROM devices WHERE user_id = ?1 ORDER BY device")
                .map_err(db)?;
            let rows = stmt
                .query_map([user.as_slice()], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?, r.get(2)?)))
                .map_err(db)?;
            let mut devices = Vec::new();
            for row in rows {
                let (device, end, certificate) = row.map_err(db)?;
                let device = device.try_into().map_err(|_| StorageError::Corrupt("a device id"))?;
                devices.push(Certified { device, not_after: not_after(&end)?, certificate });
            }
            Ok(Some((key, devices)))
        })
        .await
    }

    async fn welcome(&self, album: Vec<u8>, epoch: Epoch) -> Result<Option<WelcomeBlobs>, StorageError> {
        self.with(move |conn| {
            let tx = conn.transaction().map_err(db)?;
            let (base, _) = album_row(&tx, &album)?;
            if epoch < base {
                return Err(StorageError::Pruned(base));
            }
            let Ok(at) = to_db(epoch) else { return Ok(None) };
            tx.query_row(
                "SELECT welcome, bundle FROM entries WHERE album = ?1 AND epoch = ?2",
                params![album, at],
                |r| Ok(WelcomeBlobs { welcome: r.get(0)?, bundle: r.get(1)? }),
            )
            .optional()
            .map_err(db)
        })
        .await
    }

    async fn post_fingerprint(
        &self,
        album: Vec<u8>,
        member: MemberId,
        fingerprint: Vec<u8>,
    ) -> Result<(), StorageError> {
        self.with(move |conn| {
            // A write: take the lock first, like every other write here.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            album_row(&tx, &album)?;
            tx.execute(
                "INSERT INTO fingerprints (album, member, fingerprint) VALUES (?1, ?2, ?3)
                 ON CONFLICT (album, member) DO UPDATE SET fingerprint = excluded.fingerprint",
                params![album, member.as_slice(), fingerprint],
            )
            .map_err(db)?;
            tx.commit().map_err(db)
        })
        .await
    }

    async fn fingerprints(&self, album: Vec<u8>) -> Result<Vec<Vec<u8>>, StorageError> {
        self.with(move |conn| {
            let tx = conn.transaction().map_err(db)?;
            album_row(&tx, &album)?;
            let mut stmt =
                tx.prepare("SELECT fingerprint FROM fingerprints WHERE album = ?1 ORDER BY member").map_err(db)?;
            let rows = stmt.query_map([album.as_slice()], |r| r.get(0)).map_err(db)?;
            let board = rows.collect::<Result<Vec<Vec<u8>>, _>>().map_err(db)?;
            Ok(board)
        })
        .await
    }
}
