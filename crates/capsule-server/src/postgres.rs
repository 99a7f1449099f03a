//! The backend for more than one machine: any number of stateless server
//! processes in front of one PostgreSQL. Each submission is one transaction
//! that locks its album's row (`SELECT … FOR UPDATE`) before reading the
//! head, and the `(album, epoch)` primary key backs it: two replicas can
//! never both store a commit for one epoch.

use capsule_chain::rules::{self, Decision};
use capsule_chain::wire::{ClaimedKeyPackage, Delivery, Page, PageEntry};
use capsule_chain::{CommitHash, Epoch, Submission, SubmitAnswer, WelcomeBlobs};
use deadpool_postgres::GenericClient;
use deadpool_postgres::{Manager, Pool};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use crate::storage::{
    AlbumState, Certified, Filed, MemberId, Registration, Storage, StorageError, Validated, clamp, decide, from_db,
    to_db,
};

/// Versioned migrations, as for SQLite: entry `i` takes the schema from
/// version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE albums (
        album BYTEA PRIMARY KEY,
        base BIGINT NOT NULL CHECK (base >= 0),
        head BIGINT NOT NULL CHECK (head >= base)
    );
    CREATE TABLE entries (
        album BYTEA NOT NULL REFERENCES albums (album),
        epoch BIGINT NOT NULL CHECK (epoch >= 0),
        commit_hash BYTEA NOT NULL,
        commit_bytes BYTEA NOT NULL,
        welcome BYTEA,
        bundle BYTEA,
        PRIMARY KEY (album, epoch)
    );
    CREATE UNIQUE INDEX entries_by_hash ON entries (album, commit_hash);
",
    "
    ALTER TABLE albums ADD COLUMN state BYTEA;
    CREATE TABLE users (
        user_id BYTEA PRIMARY KEY,
        identity_key BYTEA NOT NULL
    );
    CREATE TABLE devices (
        user_id BYTEA NOT NULL REFERENCES users (user_id),
        device BYTEA NOT NULL,
        not_after BYTEA NOT NULL,
        certificate BYTEA NOT NULL,
        PRIMARY KEY (user_id, device)
    );
    CREATE TABLE access (
        album BYTEA NOT NULL REFERENCES albums (album),
        member BYTEA NOT NULL,
        until BIGINT,
        PRIMARY KEY (album, member)
    );
    CREATE TABLE nonces (
        member BYTEA NOT NULL,
        nonce BYTEA NOT NULL,
        expires BIGINT NOT NULL,
        PRIMARY KEY (member, nonce)
    );
",
    "
    CREATE TABLE key_packages (
        user_id BYTEA NOT NULL,
        device BYTEA NOT NULL,
        reference BYTEA NOT NULL,
        last_resort BOOLEAN NOT NULL,
        not_after BIGINT NOT NULL,
        key_package BYTEA NOT NULL,
        PRIMARY KEY (user_id, device, reference)
    );
    CREATE TABLE mailbox (
        user_id BYTEA NOT NULL,
        device BYTEA NOT NULL,
        album BYTEA NOT NULL REFERENCES albums (album),
        epoch BIGINT NOT NULL CHECK (epoch >= 0),
        reference BYTEA NOT NULL,
        welcome BYTEA NOT NULL,
        bundle BYTEA,
        PRIMARY KEY (user_id, device, album, epoch)
    );
",
    "
    CREATE TABLE fingerprints (
        album BYTEA NOT NULL REFERENCES albums (album),
        member BYTEA NOT NULL,
        fingerprint BYTEA NOT NULL,
        PRIMARY KEY (album, member)
    );
",
    "
    CREATE TABLE spent_key_packages (
        reference BYTEA PRIMARY KEY,
        album BYTEA NOT NULL,
        epoch BIGINT NOT NULL CHECK (epoch >= 0)
    );
",
];

/// Any lock id, the same in every replica: migrations run one at a time.
const MIGRATION_LOCK: i64 = 0x6361_7073_756c_6531;

fn db(e: impl core::fmt::Display) -> StorageError {
    StorageError::Database(e.to_string())
}

/// The chain in a PostgreSQL database.
#[derive(Clone, Debug)]
pub struct PostgresStorage {
    pool: Pool,
}

impl PostgresStorage {
    /// Connects to `url` (a libpq connection string or URL) with up to
    /// `connections` pooled connections, and migrates the schema.
    ///
    /// # Errors
    /// [`StorageError::Database`] when PostgreSQL cannot be reached or
    /// migrated; [`StorageError::Corrupt`] for a database from a newer server.
    pub async fn connect(url: &str, connections: usize) -> Result<Self, StorageError> {
        let config: tokio_postgres::Config = url.parse().map_err(db)?;
        let pool = Pool::builder(Manager::new(config, NoTls))
            .max_size(connections.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            // A request waits this long for a connection, then fails as unavailable.
            .wait_timeout(Some(std::time::Duration::from_secs(10)))
            .create_timeout(Some(std::time::Duration::from_secs(10)))
            .build()
            .map_err(db)?;
        let this = Self { pool };
        this.migrate().await?;
        Ok(this)
    }

    async fn migrate(&self) -> Result<(), StorageError> {
        let mut client = self.pool.get().await.map_err(db)?;
        let tx = client.transaction().await.map_err(db)?;
        // Two replicas starting together: the second waits, then finds it done.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(db)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS capsule_schema (version BIGINT PRIMARY KEY)").await.map_err(db)?;
        let current: i64 = tx
            .query_one("SELECT coalesce(max(version), 0) FROM capsule_schema", &[])
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        let current = usize::try_from(current).map_err(|_| StorageError::Corrupt("a negative schema version"))?;
        if current > MIGRATIONS.len() {
            return Err(StorageError::Corrupt("the database is from a newer server"));
        }
        for (version, migration) in MIGRATIONS.iter().enumerate().skip(current) {
            tx.batch_execute(migration).await.map_err(db)?;
            let version = i64::try_from(version + 1).map_err(|_| StorageError::Corrupt("schema version"))?;
            tx.execute("INSERT INTO capsule_schema (version) VALUES ($1)", &[&version]).await.map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }
}

async fn album_row(client: &impl GenericClient, album: &[u8], lock: bool) -> Result<(Epoch, Epoch), StorageError> {
    let sql = if lock {
        "SELECT base, head FROM albums WHERE album = $1 FOR UPDATE"
    } else {
        "SELECT base, head FROM albums WHERE album = $1"
    };
    let row = client.query_opt(sql, &[&album]).await.map_err(db)?.ok_or(StorageError::UnknownAlbum)?;
    Ok((from_db(row.try_get(0).map_err(db)?)?, from_db(row.try_get(1).map_err(db)?)?))
}

/// Whether a failed transaction may simply be run again: a serialization
/// failure or a deadlock (possible when the database's default isolation is
/// stricter than the READ COMMITTED asked for, or under lock contention).
fn retryable(e: &StorageError) -> bool {
    let codes = [SqlState::T_R_SERIALIZATION_FAILURE.code(), SqlState::T_R_DEADLOCK_DETECTED.code()];
    matches!(e, StorageError::Database(m) if codes.iter().any(|c| m.contains(c)))
}

/// Records who may read `album` (see the SQLite backend's `grant`).
async fn grant(
    tx: &impl GenericClient,
    album: &[u8],
    added: &[MemberId],
    removed: &[MemberId],
    epoch: Option<i64>,
) -> Result<(), StorageError> {
    for member in removed {
        tx.execute(
            "UPDATE access SET until = $3 WHERE album = $1 AND member = $2",
            &[&album, &member.as_slice(), &epoch],
        )
        .await
        .map_err(db)?;
    }
    for member in added {
        tx.execute(
            "INSERT INTO access (album, member, until) VALUES ($1, $2, NULL)
             ON CONFLICT (album, member) DO UPDATE SET until = NULL",
            &[&album, &member.as_slice()],
        )
        .await
        .map_err(db)?;
    }
    Ok(())
}

/// Files `device` for `user` unless a certificate ending later is filed
/// (the caller holds the user's row lock).
async fn file_device(tx: &impl GenericClient, user: &[u8], device: &Certified) -> Result<Registration, StorageError> {
    let end = device.not_after.to_be_bytes().to_vec();
    let filed = tx
        .query_opt(
            "SELECT not_after FROM devices WHERE user_id = $1 AND device = $2",
            &[&user, &device.device.as_slice()],
        )
        .await
        .map_err(db)?
        .map(|r| r.try_get::<_, Vec<u8>>(0).map_err(db))
        .transpose()?;
    if filed.is_some_and(|f| f > end) {
        return Ok(Registration::Stale);
    }
    tx.execute(
        "INSERT INTO devices (user_id, device, not_after, certificate) VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id, device) DO UPDATE SET not_after = excluded.not_after, certificate = excluded.certificate",
        &[&user, &device.device.as_slice(), &end, &device.certificate],
    )
    .await
    .map_err(db)?;
    Ok(Registration::Stored)
}

/// Forgets `member`'s KeyPackages that end before `usable_from`.
async fn forget_expired(tx: &impl GenericClient, member: &MemberId, usable_from: i64) -> Result<(), StorageError> {
    let (user, device) = member.split_at(16);
    tx.execute(
        "DELETE FROM key_packages WHERE user_id = $1 AND device = $2 AND not_after < $3",
        &[&user, &device, &usable_from],
    )
    .await
    .map_err(db)?;
    Ok(())
}

/// `member`'s regular KeyPackages, and the end of its last-resort one.
async fn stock(tx: &impl GenericClient, member: &MemberId) -> Result<(u64, Option<u64>), StorageError> {
    let (user, device) = member.split_at(16);
    let row = tx
        .query_one(
            "SELECT count(*) FILTER (WHERE NOT last_resort), max(not_after) FILTER (WHERE last_resort)
             FROM key_packages WHERE user_id = $1 AND device = $2",
            &[&user, &device],
        )
        .await
        .map_err(db)?;
    let regular: i64 = row.try_get(0).map_err(db)?;
    let last: Option<i64> = row.try_get(1).map_err(db)?;
    let regular = u64::try_from(regular).map_err(|_| StorageError::Corrupt("a negative count"))?;
    let last = last.map(|t| u64::try_from(t).map_err(|_| StorageError::Corrupt("a negative time"))).transpose()?;
    Ok((regular, last))
}

/// Locks `member`'s directory row: its uploads and stock reads run one at a time.
async fn lock_device(tx: &impl GenericClient, member: &MemberId) -> Result<(), StorageError> {
    let (user, device) = member.split_at(16);
    tx.query_opt("SELECT 1 FROM devices WHERE user_id = $1 AND device = $2 FOR UPDATE", &[&user, &device])
        .await
        .map_err(db)?;
    Ok(())
}

/// One attempt at ordering a submission, in one transaction.
async fn submit_once(
    pool: &Pool,
    album: &[u8],
    s: &Submission,
    keep: Option<u64>,
    validated: Option<&Validated>,
) -> Result<SubmitAnswer, StorageError> {
    let mut client = pool.get().await.map_err(db)?;
    // READ COMMITTED, named: the row lock below is what orders submitters.
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::ReadCommitted)
        .start()
        .await
        .map_err(db)?;
    let (base, head) = album_row(&tx, album, true).await?;
    let hash = CommitHash::of(&s.commit);
    let held_at = tx
        .query_opt("SELECT epoch FROM entries WHERE album = $1 AND commit_hash = $2", &[&album, &hash.0.as_slice()])
        .await
        .map_err(db)?
        .map(|r| r.try_get(0).map_err(db).and_then(from_db))
        .transpose()?;
    let decision = rules::decide(held_at, head, s.epoch);
    let checked: bool = tx
        .query_one("SELECT state IS NOT NULL FROM albums WHERE album = $1", &[&album])
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)?;
    if decision == Decision::Append && checked && validated.is_none() {
        return Ok(SubmitAnswer::Conflict { head });
    }
    if decision == Decision::Append {
        if let (true, Some(v)) = (checked, validated) {
            tx.execute("UPDATE albums SET state = $2 WHERE album = $1", &[&album, &v.state]).await.map_err(db)?;
            grant(&tx, album, &v.added, &v.removed, Some(to_db(s.epoch)?)).await?;
            if let Some(welcome) = &s.welcome {
                // The Welcome goes to the mailbox of each device it adds.
                for (member, reference) in &v.welcomed {
                    let (user, device) = member.split_at(16);
                    tx.execute(
                        "INSERT INTO mailbox (user_id, device, album, epoch, reference, welcome, bundle)
                         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                        &[&user, &device, &album, &to_db(s.epoch)?, reference, welcome, &s.bundle],
                    )
                    .await
                    .map_err(db)?;
                }
            }
            // Spent server-wide; a concurrent spender of the same KeyPackage
            // waits on the primary key, then finds it taken.
            for reference in &v.spent {
                let new = tx
                    .execute(
                        "INSERT INTO spent_key_packages (reference, album, epoch) VALUES ($1, $2, $3)
                         ON CONFLICT DO NOTHING",
                        &[reference, &album, &to_db(s.epoch)?],
                    )
                    .await
                    .map_err(db)?;
                if new == 0 {
                    return Err(StorageError::KeyPackageSpent);
                }
            }
        }
        tx.execute(
            "INSERT INTO entries (album, epoch, commit_hash, commit_bytes, welcome, bundle) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&album, &to_db(s.epoch)?, &hash.0.as_slice(), &s.commit, &s.welcome, &s.bundle],
        )
        .await
        .map_err(db)?;
        let new_head = s.epoch.saturating_add(1);
        let new_base = rules::retained_base(base, new_head, keep);
        tx.execute("DELETE FROM entries WHERE album = $1 AND epoch < $2", &[&album, &to_db(new_base)?])
            .await
            .map_err(db)?;
        tx.execute(
            "UPDATE albums SET head = $2, base = $3 WHERE album = $1",
            &[&album, &to_db(new_head)?, &to_db(new_base)?],
        )
        .await
        .map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    Ok(decision.answer(s.epoch))
}

/// A read-only transaction seeing one snapshot: the head and the rows read
/// in it agree.
async fn snapshot(client: &mut deadpool_postgres::Object) -> Result<deadpool_postgres::Transaction<'_>, StorageError> {
    client
        .build_transaction()
        .read_only(true)
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .map_err(db)
}

impl Storage for PostgresStorage {
    async fn create_album(
        &self,
        album: Vec<u8>,
        base: Epoch,
        state: Option<Vec<u8>>,
        members: Vec<MemberId>,
    ) -> Result<Epoch, StorageError> {
        let mut client = self.pool.get().await.map_err(db)?;
        let tx = client.transaction().await.map_err(db)?;
        let new = tx
            .execute(
                "INSERT INTO albums (album, base, head, state) VALUES ($1, $2, $2, $3) ON CONFLICT (album) DO NOTHING",
                &[&album, &to_db(base)?, &state],
            )
            .await
            .map_err(db)?;
        if new == 1 {
            grant(&tx, &album, &members, &[], None).await?;
        }
        let base = album_row(&tx, &album, false).await.map(|(base, _)| base)?;
        tx.commit().await.map_err(db)?;
        Ok(base)
    }

    async fn access(&self, album: Vec<u8>, member: MemberId) -> Result<Option<Option<Epoch>>, StorageError> {
        let client = self.pool.get().await.map_err(db)?;
        let row = client
            .query_opt("SELECT until FROM access WHERE album = $1 AND member = $2", &[&album, &member.as_slice()])
            .await
            .map_err(db)?;
        row.map(|r| r.try_get::<_, Option<i64>>(0).map_err(db)?.map(from_db).transpose()).transpose()
    }

    async fn certificate(&self, member: MemberId) -> Result<Option<(Vec<u8>, Vec<u8>)>, StorageError> {
        let client = self.pool.get().await.map_err(db)?;
        let (user, device) = member.split_at(16);
        let row = client
            .query_opt(
                "SELECT u.identity_key, d.certificate FROM devices d JOIN users u ON u.user_id = d.user_id
                 WHERE d.user_id = $1 AND d.device = $2",
                &[&user, &device],
            )
            .await
            .map_err(db)?;
        row.map(|r| Ok((r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?))).transpose()
    }

    async fn remember_nonce(
        &self,
        member: MemberId,
        nonce: [u8; 16],
        now: u64,
        expires: u64,
    ) -> Result<bool, StorageError> {
        let client = self.pool.get().await.map_err(db)?;
        client
            .execute("DELETE FROM nonces WHERE member = $1 AND expires < $2", &[&member.as_slice(), &clamp(now)])
            .await
            .map_err(db)?;
        let new = client
            .execute(
                "INSERT INTO nonces (member, nonce, expires) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&member.as_slice(), &nonce.as_slice(), &clamp(expires)],
            )
            .await
            .map_err(db)?;
        Ok(new == 1)
    }

    async fn album_state(&self, album: Vec<u8>) -> Result<AlbumState, StorageError> {
        let client = self.pool.get().await.map_err(db)?;
        let row = client
            .query_opt("SELECT head, state FROM albums WHERE album = $1", &[&album])
            .await
            .map_err(db)?
            .ok_or(StorageError::UnknownAlbum)?;
        Ok(AlbumState { head: from_db(row.try_get(0).map_err(db)?)?, state: row.try_get(1).map_err(db)? })
    }

    async fn submit(
        &self,
        album: Vec<u8>,
        s: Submission,
        keep: Option<u64>,
        validated: Option<Validated>,
    ) -> Result<SubmitAnswer, StorageError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match submit_once(&self.pool, &album, &s, keep, validated.as_ref()).await {
                Err(e) if attempts < 3 && retryable(&e) => tracing::debug!(error = %e, "submission retried"),
                other => return other,
            }
        }
    }

    async fn page(&self, album: Vec<u8>, from: Epoch, limit: u64, max_bytes: u64) -> Result<Page, StorageError> {
        let mut client = self.pool.get().await.map_err(db)?;
        // One snapshot for the head and the rows.
        let tx = snapshot(&mut client).await?;
        let (base, head) = album_row(&tx, &album, false).await?;
        let range = decide::range(base, head, from, limit)?;
        if range.0 == range.1 {
            return decide::page(head, range, Vec::new(), max_bytes);
        }
        let rows = tx
            .query(
                "SELECT epoch, commit_bytes, welcome IS NOT NULL OR bundle IS NOT NULL FROM entries
                 WHERE album = $1 AND epoch >= $2 AND epoch < $3 ORDER BY epoch",
                &[&album, &to_db(range.0)?, &to_db(range.1)?],
            )
            .await
            .map_err(db)?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            entries.push(PageEntry {
                epoch: from_db(row.try_get(0).map_err(db)?)?,
                commit: row.try_get(1).map_err(db)?,
                has_welcome: row.try_get(2).map_err(db)?,
            });
        }
        tx.commit().await.map_err(db)?;
        decide::page(head, range, entries, max_bytes)
    }

    async fn prune_before(&self, album: Vec<u8>, epoch: Epoch) -> Result<Epoch, StorageError> {
        let mut client = self.pool.get().await.map_err(db)?;
        let tx = client.transaction().await.map_err(db)?;
        let (base, head) = album_row(&tx, &album, true).await?;
        let new_base = rules::pruned_base(base, head, epoch);
        tx.execute("DELETE FROM entries WHERE album = $1 AND epoch < $2", &[&album, &to_db(new_base)?])
            .await
            .map_err(db)?;
        tx.execute("UPDATE albums SET base = $2 WHERE album = $1", &[&album, &to_db(new_base)?]).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(new_base)
    }

    async fn held_at(&self, album: Vec<u8>, hash: CommitHash) -> Result<Option<Epoch>, StorageError> {
        let client = self.pool.get().await.map_err(db)?;
        album_row(&client, &album, false).await?;
        client
            .query_opt("SELECT epoch FROM entries WHERE album = $1 AND commit_hash = $2", &[&album, &hash.0.as_slice()])
            .await
            .map_err(db)?
            .map(|r| r.try_get(0).map_err(db).and_then(from_db))
            .transpose()
    }

    async fn head(&self, album: Vec<u8>) -> Result<Epoch, StorageError> {
        let client = self.pool.get().await.map_err(db)?;
        album_row(&client, &album, false).await.map(|(_, head)| head)
    }

    async fn register_user(
        &self,
        user: [u8; 16],
        identity_key: Vec<u8>,
        first: Certified,
    ) -> Result<Registration, StorageError> {
        let mut client = self.pool.get().await.map_err(db)?;
        let tx = client.transaction().await.map_err(db)?;
        tx.execute(
            "INSERT INTO users (user_id, identity_key) VALUES ($1, $2) ON CONFLICT (user_id) DO NOTHING",
            &[&user.as_slice(), &identity_key],
        )
        .await
        .map_err(db)?;
        // Locked: a concurrent registration of the same device waits.
        let filed: Vec<u8> = tx
            .query_one("SELECT identity_key FROM users WHERE user_id = $1 FOR UPDATE", &[&user.as_slice()])
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        if filed != identity_key {
            return Ok(Registration::KeyTaken);
        }
        let outcome = file_device(&tx, &user, &first).await?;
        tx.commit().await.map_err(db)?;
        Ok(outcome)
    }

    async fn register_device(&self, user: [u8; 16], device: Certified) -> Result<Registration, StorageError> {
        let mut client = self.pool.get().await.map_err(db)?;
        let tx = client.transaction().await.map_err(db)?;
        let known = tx
            .query_opt("SELECT 1 FROM users WHERE user_id = $1 FOR UPDATE", &[&user.as_slice()])
            .await
            .map_err(db)?
            .is_some();
        if !known {
            return Ok(Registration::UnknownUser);
        }
        let outcome = file_device(&tx, &user, &device).await?;
        tx.commit().await.map_err(db)?;
        Ok(outcome)
    }

    async fn file_key_packages(
        &self,
        member: MemberId,
        regular: Vec<Filed>,
        last_resort: Option<Filed>,
        usable_from: u64,
        max: u64,
    ) -> Result<bool, StorageError> {
        let mut client = self.pool.get().await.map_err(db)?;
        let tx = client.transaction().await.map_err(db)?;
        lock_device(&tx, &member).await?;
        forget_expired(&tx, &member, clamp(usable_from)).await?;
        let (user, device) = member.split_at(16);
        let insert = "INSERT INTO key_packages (user_id, device, reference, last_resort, not_after, key_package)
                      VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING";
        for kp in &regular {
            let spent: bool = tx
                .query_one("SELECT EXISTS (SELECT 1 FROM spent_key_packages WHERE reference = $1)", &[&kp.reference])
                .await
                .map_err(db)?
                .try_get(0)
                .map_err(db)?;
            if spent {
                return Err(StorageError::KeyPackageSpent);
            }
            tx.execute(insert, &[&user, &device, &kp.reference, &false, &clamp(kp.not_after), &kp.bytes])
                .await
                .map_err(db)?;
        }
        if let Some(kp) = &last_resort {
            tx.execute(
                "DELETE FROM key_packages WHERE user_id = $1 AND device = $2 AND last_resort",
                &[&user, &device],
            )
            .await
            .map_err(db)?;
            tx.execute(insert, &[&user, &device, &kp.reference, &true, &clamp(kp.not_after), &kp.bytes])
                .await
                .map_err(db)?;
        }
        if stock(&tx, &member).await?.0 > max {
            // Rolled back when dropped: nothing of the upload stays.
            return Ok(false);
        }
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn key_package_stock(&self, member: MemberId, usable_from: u64) -> Result<(u64, Option<u64>), StorageError> {
        let mut client = self.pool.get().await.map_err(db)?;
        let tx = client.transaction().await.map_err(db)?;
        lock_device(&tx, &member).await?;
        forget_expired(&tx, &member, clamp(usable_from)).await?;
        let stock = stock(&tx, &member).await?;
        tx.commit().await.map_err(db)?;
        Ok(stock)
    }

    async fn claim_key_packages(
        &self,
        user: [u8; 16],
        skip: Vec<[u8; 16]>,
        usable_from: u64,
    ) -> Result<Vec<ClaimedKeyPackage>, StorageError> {
        let mut client = self.pool.get().await.map_err(db)?;
        let tx = client.transaction().await.map_err(db)?;
        let user = user.as_slice();
        tx.execute("DELETE FROM key_packages WHERE user_id = $1 AND not_after < $2", &[&user, &clamp(usable_from)])
            .await
            .map_err(db)?;
        let devices = tx
            .query("SELECT DISTINCT device FROM key_packages WHERE user_id = $1 ORDER BY device", &[&user])
            .await
            .map_err(db)?;
        let mut claimed = Vec::with_capacity(devices.len());
        for row in devices {
            let device: Vec<u8> = row.try_get(0).map_err(db)?;
            if skip.iter().any(|s| s.as_slice() == device.as_slice()) {
                continue;
            }
            // A regular one first, removed as it is handed out; rows another
            // claim holds are skipped, so no two claims get the same one.
            let regular = tx
                .query_opt(
                    "DELETE FROM key_packages WHERE (user_id, device, reference) = (
                         SELECT user_id, device, reference FROM key_packages
                         WHERE user_id = $1 AND device = $2 AND NOT last_resort
                         ORDER BY not_after, reference LIMIT 1 FOR UPDATE SKIP LOCKED)
                     RETURNING key_package",
                    &[&user, &device],
                )
                .await
                .map_err(db)?;
            let (key_package, last_resort) = match regular {
                Some(r) => (r.try_get(0).map_err(db)?, false),
                None => {
                    let last = tx
                        .query_opt(
                            "SELECT key_package FROM key_packages WHERE user_id = $1 AND device = $2 AND last_resort",
                            &[&user, &device],
                        )
                        .await
                        .map_err(db)?;
                    match last {
                        Some(r) => (r.try_get(0).map_err(db)?, true),
                        None => continue,
                    }
                }
            };
            let device = device.try_into().map_err(|_| StorageError::Corrupt("a device id"))?;
            claimed.push(ClaimedKeyPackage { device, key_package, last_resort });
        }
        tx.commit().await.map_err(db)?;
        Ok(claimed)
    }

    async fn mailbox(&self, member: MemberId) -> Result<Vec<Delivery>, StorageError> {
        let client = self.pool.get().await.map_err(db)?;
        let (user, device) = member.split_at(16);
        let rows = client
            .query(
                "SELECT album, epoch, reference, welcome, bundle FROM mailbox
                 WHERE user_id = $1 AND device = $2 ORDER BY album, epoch",
                &[&user, &device],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(Delivery {
                    album: r.try_get(0).map_err(db)?,
                    epoch: from_db(r.try_get(1).map_err(db)?)?,
                    reference: r.try_get(2).map_err(db)?,
                    welcome: r.try_get(3).map_err(db)?,
                    bundle: r.try_get(4).map_err(db)?,
                })
            })
            .collect()
    }

    async fn acknowledge(&self, member: MemberId, album: Vec<u8>, epoch: Epoch) -> Result<(), StorageError> {
        let client = self.pool.get().await.map_err(db)?;
        let (user, device) = member.split_at(16);
        client
            .execute(
                "DELETE FROM mailbox WHERE user_id = $1 AND device = $2 AND album = $3 AND epoch = $4",
                &[&user, &device, &album, &to_db(epoch)?],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn identity_keys(&self, users: Vec<[u8; 16]>) -> Result<Vec<([u8; 16], Vec<u8>)>, StorageError> {
        let client = self.pool.get().await.map_err(db)?;
        let ids: Vec<&[u8]> = users.iter().map(<[u8; 16]>::as_slice).collect();
        let rows = client
            .query("SELECT user_id, identity_key FROM users WHERE user_id = ANY($1)", &[&ids])
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                let user: Vec<u8> = r.try_get(0).map_err(db)?;
                let user = user.try_into().map_err(|_| StorageError::Corrupt("a user id"))?;
                Ok((user, r.try_get(1).map_err(db)?))
            })
            .collect()
    }

    async fn directory(&self, user: [u8; 16]) -> Result<Option<(Vec<u8>, Vec<Certified>)>, StorageError> {
        let mut client = self.pool.get().await.map_err(db)?;
        let tx = snapshot(&mut client).await?;
        let Some(row) =
            tx.query_opt("SELECT identity_key FROM users WHERE user_id = $1", &[&user.as_slice()]).await.map_err(db)?
        else {
            return Ok(None);
        };
        let key: Vec<u8> = row.try_get(0).map_err(db)?;
        let rows = tx
            .query(
                "SELECT device, not_after, certificate FROM devices WHERE user_id = $1 ORDER BY device",
                &[&user.as_slice()],
            )
            .await
            .map_err(db)?;
        let mut devices = Vec::with_capacity(rows.len());
        for r in rows {
            let device: Vec<u8> = r.try_get(0).map_err(db)?;
            let end: Vec<u8> = r.try_get(1).map_err(db)?;
            let end: [u8; 8] = end.try_into().map_err(|_| StorageError::Corrupt("a certificate's end"))?;
            devices.push(Certified {
                device: device.try_into().map_err(|_| StorageError::Corrupt("a device id"))?,
                not_after: u64::from_be_bytes(end),
                certificate: r.try_get(2).map_err(db)?,
            });
        }
        tx.commit().await.map_err(db)?;
        Ok(Some((key, devices)))
    }

    async fn welcome(&self, album: Vec<u8>, epoch: Epoch) -> Result<Option<WelcomeBlobs>, StorageError> {
        let mut client = self.pool.get().await.map_err(db)?;
        let tx = snapshot(&mut client).await?;
        let (base, _) = album_row(&tx, &album, false).await?;
        if epoch < base {
            return Err(StorageError::Pruned(base));
        }
        let Ok(at) = to_db(epoch) else { return Ok(None) };
        let row = tx
            .query_opt("SELECT welcome, bundle FROM entries WHERE album = $1 AND epoch = $2", &[&album, &at])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        row.map(|r| Ok(WelcomeBlobs { welcome: r.try_get(0).map_err(db)?, bundle: r.try_get(1).map_err(db)? }))
            .transpose()
    }

    async fn post_fingerprint(
        &self,
        album: Vec<u8>,
        member: MemberId,
        fingerprint: Vec<u8>,
    ) -> Result<(), StorageError> {
        let client = self.pool.get().await.map_err(db)?;
        // One statement: the album must exist (the insert selects from it).
        let filed = client
            .execute(
                "INSERT INTO fingerprints (album, member, fingerprint)
                 SELECT album, $2, $3 FROM albums WHERE album = $1
                 ON CONFLICT (album, member) DO UPDATE SET fingerprint = EXCLUDED.fingerprint",
                &[&album, &member.as_slice(), &fingerprint],
            )
            .await
            .map_err(db)?;
        if filed == 0 {
            return Err(StorageError::UnknownAlbum);
        }
        Ok(())
    }

    async fn fingerprints(&self, album: Vec<u8>) -> Result<Vec<Vec<u8>>, StorageError> {
        let mut client = self.pool.get().await.map_err(db)?;
        let tx = snapshot(&mut client).await?;
        album_row(&tx, &album, false).await?;
        let rows = tx
            .query("SELECT fingerprint FROM fingerprints WHERE album = $1 ORDER BY member", &[&album])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        rows.iter().map(|r| r.try_get(0).map_err(db)).collect()
    }
}
