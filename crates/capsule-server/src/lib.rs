//! Capsule's commit-chain server: per album, one commit per epoch, first
//! come first served, idempotent (the rule in `capsule-chain`), kept in a
//! database that enforces it.
//!
//! - **SQLite** is the embedded default: `capsule-server --db ./chain.sqlite`.
//! - **PostgreSQL** is for more than one machine: any number of stateless
//!   server processes in front of one database
//!   (`capsule-server --postgres postgres://…`); each submission is one
//!   transaction that locks its album's row, and the `(album, epoch)`
//!   primary key backs it, so two replicas never both accept an epoch.
//!
//! Before anything reaches the database, a submission is checked without
//! group secrets (`capsule_chain::rules::check_submission`: sizes, and that
//! the commit is a PublicMessage commit of the album's group made in the
//! epoch it claims); a refusal is typed and changes nothing. Logs name albums
//! by a hash; `/metrics` counts accepted, conflicting and refused
//! submissions. Both schemas are versioned migrations run at start.
#![forbid(unsafe_code)]

mod http;
mod metrics;
pub mod postgres;
pub mod sqlite;
pub mod storage;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use http::{Checks, Settings, router};
pub use metrics::{Metrics, Outcome};

use capsule_chain::wire::{ClaimedKeyPackage, Delivery, Page};
use capsule_chain::{CommitHash, Epoch, Submission, SubmitAnswer, WelcomeBlobs};
use storage::{AlbumState, Certified, Filed, MemberId, Registration, Storage, StorageError, Validated};

/// Which database a server keeps its chains in. Its `Debug` never shows a
/// PostgreSQL connection string (it may carry a password).
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file (created if missing).
    Sqlite(PathBuf),
    /// A PostgreSQL connection string, with the pool size per process.
    Postgres {
        /// libpq connection string or URL.
        url: String,
        /// Pooled connections.
        connections: usize,
    },
}

impl core::fmt::Debug for Database {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Self::Postgres { connections, .. } => {
                f.debug_struct("Postgres").field("url", &"<redacted>").field("connections", connections).finish()
            }
        }
    }
}

/// A connected backend, either kind.
#[derive(Clone, Debug)]
pub enum Backend {
    /// SQLite.
    Sqlite(sqlite::SqliteStorage),
    /// PostgreSQL.
    Postgres(postgres::PostgresStorage),
}

impl Backend {
    /// Opens (and migrates) `database`.
    ///
    /// # Errors
    /// As the backend's own opening.
    pub async fn open(database: &Database) -> Result<Self, StorageError> {
        Ok(match database {
            Database::Sqlite(path) => Self::Sqlite(sqlite::SqliteStorage::open(path)?),
            Database::Postgres { url, connections } => {
                Self::Postgres(postgres::PostgresStorage::connect(url, *connections).await?)
            }
        })
    }
}

impl Storage for Backend {
    async fn create_album(
        &self,
        album: Vec<u8>,
        base: Epoch,
        state: Option<Vec<u8>>,
        members: Vec<MemberId>,
    ) -> Result<Epoch, StorageError> {
        match self {
            Self::Sqlite(s) => s.create_album(album, base, state, members).await,
            Self::Postgres(s) => s.create_album(album, base, state, members).await,
        }
    }

    async fn access(&self, album: Vec<u8>, member: MemberId) -> Result<Option<Option<Epoch>>, StorageError> {
        match self {
            Self::Sqlite(s) => s.access(album, member).await,
            Self::Postgres(s) => s.access(album, member).await,
        }
    }

    async fn certificate(&self, member: MemberId) -> Result<Option<(Vec<u8>, Vec<u8>)>, StorageError> {
        match self {
            Self::Sqlite(s) => s.certificate(member).await,
            Self::Postgres(s) => s.certificate(member).await,
        }
    }

    async fn remember_nonce(
        &self,
        member: MemberId,
        nonce: [u8; 16],
        now: u64,
        expires: u64,
    ) -> Result<bool, StorageError> {
        match self {
            Self::Sqlite(s) => s.remember_nonce(member, nonce, now, expires).await,
            Self::Postgres(s) => s.remember_nonce(member, nonce, now, expires).await,
        }
    }

    async fn album_state(&self, album: Vec<u8>) -> Result<AlbumState, StorageError> {
        match self {
            Self::Sqlite(s) => s.album_state(album).await,
            Self::Postgres(s) => s.album_state(album).await,
        }
    }

    async fn submit(
        &self,
        album: Vec<u8>,
        s: Submission,
        keep: Option<u64>,
        validated: Option<Validated>,
    ) -> Result<SubmitAnswer, StorageError> {
        match self {
            Self::Sqlite(b) => b.submit(album, s, keep, validated).await,
            Self::Postgres(b) => b.submit(album, s, keep, validated).await,
        }
    }

    async fn register_user(
        &self,
        user: [u8; 16],
        identity_key: Vec<u8>,
        first: Certified,
    ) -> Result<Registration, StorageError> {
        match self {
            Self::Sqlite(s) => s.register_user(user, identity_key, first).await,
            Self::Postgres(s) => s.register_user(user, identity_key, first).await,
        }
    }

    async fn register_device(&self, user: [u8; 16], device: Certified) -> Result<Registration, StorageError> {
        match self {
            Self::Sqlite(s) => s.register_device(user, device).await,
            Self::Postgres(s) => s.register_device(user, device).await,
        }
    }

    async fn identity_keys(&self, users: Vec<[u8; 16]>) -> Result<Vec<([u8; 16], Vec<u8>)>, StorageError> {
        match self {
            Self::Sqlite(s) => s.identity_keys(users).await,
            Self::Postgres(s) => s.identity_keys(users).await,
        }
    }

    async fn directory(&self, user: [u8; 16]) -> Result<Option<(Vec<u8>, Vec<Certified>)>, StorageError> {
        match self {
            Self::Sqlite(s) => s.directory(user).await,
            Self::Postgres(s) => s.directory(user).await,
        }
    }

    async fn file_key_packages(
        &self,
        member: MemberId,
        regular: Vec<Filed>,
        last_resort: Option<Filed>,
        usable_from: u64,
        max: u64,
    ) -> Result<bool, StorageError> {
        match self {
            Self::Sqlite(s) => s.file_key_packages(member, regular, last_resort, usable_from, max).await,
            Self::Postgres(s) => s.file_key_packages(member, regular, last_resort, usable_from, max).await,
        }
    }

    async fn key_package_stock(&self, member: MemberId, usable_from: u64) -> Result<(u64, Option<u64>), StorageError> {
        match self {
            Self::Sqlite(s) => s.key_package_stock(member, usable_from).await,
            Self::Postgres(s) => s.key_package_stock(member, usable_from).await,
        }
    }

    async fn claim_key_packages(
        &self,
        user: [u8; 16],
        skip: Vec<[u8; 16]>,
        usable_from: u64,
    ) -> Result<Vec<ClaimedKeyPackage>, StorageError> {
        match self {
            Self::Sqlite(s) => s.claim_key_packages(user, skip, usable_from).await,
            Self::Postgres(s) => s.claim_key_packages(user, skip, usable_from).await,
        }
    }

    async fn mailbox(&self, member: MemberId) -> Result<Vec<Delivery>, StorageError> {
        match self {
            Self::Sqlite(s) => s.mailbox(member).await,
            Self::Postgres(s) => s.mailbox(member).await,
        }
    }

    async fn acknowledge(&self, member: MemberId, album: Vec<u8>, epoch: Epoch) -> Result<(), StorageError> {
        match self {
            Self::Sqlite(s) => s.acknowledge(member, album, epoch).await,
            Self::Postgres(s) => s.acknowledge(member, album, epoch).await,
        }
    }

    async fn page(&self, album: Vec<u8>, from: Epoch, limit: u64, max_bytes: u64) -> Result<Page, StorageError> {
        match self {
            Self::Sqlite(s) => s.page(album, from, limit, max_bytes).await,
            Self::Postgres(s) => s.page(album, from, limit, max_bytes).await,
        }
    }

    async fn held_at(&self, album: Vec<u8>, hash: CommitHash) -> Result<Option<Epoch>, StorageError> {
        match self {
            Self::Sqlite(s) => s.held_at(album, hash).await,
            Self::Postgres(s) => s.held_at(album, hash).await,
        }
    }

    async fn head(&self, album: Vec<u8>) -> Result<Epoch, StorageError> {
        match self {
            Self::Sqlite(s) => s.head(album).await,
            Self::Postgres(s) => s.head(album).await,
        }
    }

    async fn prune_before(&self, album: Vec<u8>, epoch: Epoch) -> Result<Epoch, StorageError> {
        match self {
            Self::Sqlite(s) => s.prune_before(album, epoch).await,
            Self::Postgres(s) => s.prune_before(album, epoch).await,
        }
    }

    async fn welcome(&self, album: Vec<u8>, epoch: Epoch) -> Result<Option<WelcomeBlobs>, StorageError> {
        match self {
            Self::Sqlite(s) => s.welcome(album, epoch).await,
            Self::Postgres(s) => s.welcome(album, epoch).await,
        }
    }

    async fn post_fingerprint(
        &self,
        album: Vec<u8>,
        member: MemberId,
        fingerprint: Vec<u8>,
    ) -> Result<(), StorageError> {
        match self {
            Self::Sqlite(s) => s.post_fingerprint(album, member, fingerprint).await,
            Self::Postgres(s) => s.post_fingerprint(album, member, fingerprint).await,
        }
    }

    async fn fingerprints(&self, album: Vec<u8>) -> Result<Vec<Vec<u8>>, StorageError> {
        match self {
            Self::Sqlite(s) => s.fingerprints(album).await,
            Self::Postgres(s) => s.fingerprints(album).await,
        }
    }
}

/// Why a server did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error("database: {0}")]
    Database(#[from] StorageError),
    /// The address could not be bound, or the runtime not started.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves `backend` on `listener` until `shutdown` completes.
///
/// # Errors
/// An I/O error of the listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    backend: Backend,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: impl core::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(backend, settings, metrics)).with_graceful_shutdown(shutdown).await
}

/// A server running on its own thread and runtime: for tests, the demo, and
/// applications that embed one. Dropping it stops the server.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    backend: Backend,
    runtime: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Starts a server on `database`, listening on `listen` (port 0: any free one).
    ///
    /// # Errors
    /// The database or the address failing.
    pub fn start(database: &Database, listen: SocketAddr, settings: Settings) -> Result<Self, StartError> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let (backend, listener) = runtime.block_on(async {
            let backend = Backend::open(database).await?;
            let listener = tokio::net::TcpListener::bind(listen).await?;
            Ok::<_, StartError>((backend, listener))
        })?;
        let addr = listener.local_addr()?;
        let metrics = Arc::new(Metrics::default());
        let (handle, kept) = (runtime.handle().clone(), backend.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let served = Arc::clone(&metrics);
        let thread = std::thread::spawn(move || {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = runtime.block_on(serve(listener, backend, settings, served, shutdown)) {
                tracing::error!(error = %e, "the server stopped");
            }
        });
        Ok(Self { addr, metrics, backend: kept, runtime: handle, stop: Some(stop), thread: Some(thread) })
    }

    /// Where it listens.
    #[must_use]
    pub const fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL (`http://addr`).
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its counters.
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The operator's retention: forgets `album`'s entries before `epoch`.
    ///
    /// # Errors
    /// As [`Storage::prune_before`].
    pub fn prune_before(&self, album: &[u8], epoch: Epoch) -> Result<Epoch, StorageError> {
        // On a thread of its own: blocking on the server's runtime from inside
        // another runtime (a caller's) would panic.
        std::thread::scope(|s| {
            s.spawn(|| self.runtime.block_on(self.backend.prune_before(album.to_vec(), epoch)))
                .join()
                .unwrap_or_else(|_| Err(StorageError::Database("pruning panicked".into())))
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
