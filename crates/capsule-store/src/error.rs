//! Errors of the durable store: refused files are told apart from failed operations.

use capsule_mls::MlsError;

/// Why the store refused a file or an operation failed. A refused file is never
/// modified.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file is not an SQLite database, or it is damaged or truncated.
    #[error("database file is corrupted or not a database: {0}")]
    Corrupt(String),
    /// A database written by a newer version of this software.
    #[error("database schema {found} is newer than this build supports ({supported})")]
    NewerSchema {
        /// The file's schema version.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },
    /// The key does not open the file: another key (or bytes that are not
    /// a database under any key: encrypted pages and noise look alike).
    #[error("the database key does not open this file")]
    WrongKey,
    /// A file operation (encrypting a plaintext store) failed; the file is
    /// as it was.
    #[error("file: {0}")]
    Io(#[from] std::io::Error),
    /// An SQLite database that is not a Capsule device store.
    #[error("not a Capsule device store")]
    Foreign,
    /// The stored device key and certificate do not belong together.
    #[error("stored device key material does not match its certificate")]
    KeyMaterial,
    /// A record of a format this build does not know (written by a newer
    /// version): refused, never guessed at.
    #[error("stored {record} record of unknown format {format}")]
    UnknownFormat {
        /// Which record.
        record: &'static str,
        /// Its format byte.
        format: u8,
    },
    /// A record that does not decode.
    #[error("stored record malformed: {0}")]
    Record(&'static str),
    /// Nothing stored under that name.
    #[error("not found: {0}")]
    NotFound(&'static str),
    /// The store already holds a device identity: a device is enrolled once, and
    /// its key is never replaced (every album in the store is bound to it).
    #[error("this store already holds an enrolled device")]
    AlreadyEnrolled,
    /// The MLS layer refused or failed; the transaction was rolled back.
    #[error("mls: {0}")]
    Mls(#[from] MlsError),
    /// The resilience layer refused or failed; the transaction was rolled back.
    #[error("resilience: {0}")]
    Resilience(#[from] capsule_resilience::ResilienceError),
    /// Another connection (a second process, an app extension) holds the
    /// database's write lock: nothing was written; try again later.
    #[error("database is busy")]
    Busy,
    /// OpenMLS's own tables could not be brought to this build's schema.
    #[error("openmls storage migrations: {0}")]
    OpenMlsMigrations(String),
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[source] rusqlite::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
                Self::Corrupt(e.to_string())
            }
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => Self::Busy,
            _ => Self::Sqlite(e),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = StoreError> = core::result::Result<T, E>;
