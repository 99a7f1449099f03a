//! Durable device state: one SQLite database per device.
//!
//! A phone's process can be killed at any instant; MLS state that is lost or
//! half-written locks a device out of its albums. [`Store`] keeps OpenMLS's
//! group state (through `openmls_sqlite_storage`, bundled SQLite) and Capsule's
//! own records (the album record with its AMK keyring and pending commit, the
//! device identity) in one database, and runs each logical operation, such as
//! staging a ceremony, confirming or rejecting it, processing a commit or
//! joining from a Welcome, in one SQLite transaction covering both. A crash
//! leaves the state before or the state after, never a mixture.
//!
//! The whole file is encrypted with SQLCipher under a [`DatabaseKey`] the
//! application keeps in the platform's keychain: OpenMLS's tables and
//! Capsule's records alike, so a lost phone's database reads as noise
//! (no SQLite header, no key, no AMK). A store an earlier version wrote in
//! plaintext is encrypted on its first open, atomically; [`Store::rekey`]
//! changes the key.
//!
//! Opening a file that is not a healthy Capsule store (corrupted, truncated,
//! foreign, from a newer schema, or under another key) gives a typed
//! [`StoreError`] and never touches the file. Capsule's schema is versioned with forward-only migrations
//! ([`SCHEMA_VERSION`]); OpenMLS's tables carry their own.
#![forbid(unsafe_code)]

mod codec;
mod error;
mod key;
mod records;
mod store;

pub use codec::JsonCodec;
pub use error::{Result, StoreError};
pub use key::DatabaseKey;
pub use store::{KeyPackageRecord, Observer, SCHEMA_VERSION, SqliteProvider, Step, Store, Tidied};
