//! The OpenMLS provider: libcrux crypto (X-Wing suite) paired with any storage.

use openmls::prelude::Ciphersuite;
use openmls_traits::OpenMlsProvider;
use openmls_traits::storage::{CURRENT_VERSION, StorageProvider};

use crate::{MlsError, Result};

/// Every album uses this suite: X-Wing (ML-KEM-768 + X25519) KEM,
/// ChaCha20-Poly1305, SHA-256, Ed25519 leaf signatures.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_256_XWING_CHACHA20POLY1305_SHA256_Ed25519;

/// libcrux crypto and randomness with the caller's storage.
///
/// Generic over storage so tests use memory storage and devices the durable store.
pub struct CapsuleProvider<S> {
    crypto: openmls_libcrux_crypto::CryptoProvider,
    storage: S,
}

impl<S> core::fmt::Debug for CapsuleProvider<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CapsuleProvider").finish_non_exhaustive()
    }
}

impl<S: StorageProvider<CURRENT_VERSION>> CapsuleProvider<S> {
    /// A provider over `storage`.
    ///
    /// # Errors
    /// [`MlsError::Internal`] if libcrux cannot initialise (unsupported platform).
    pub fn new(storage: S) -> Result<Self> {
        let crypto = openmls_libcrux_crypto::CryptoProvider::new()
            .map_err(|_| MlsError::Internal("libcrux crypto provider unavailable"))?;
        Ok(Self { crypto, storage })
    }
}

/// A provider over in-memory storage, for tests and ephemeral use.
pub type MemoryProvider = CapsuleProvider<openmls_memory_storage::MemoryStorage>;

impl MemoryProvider {
    /// A provider with fresh, empty memory storage.
    ///
    /// # Errors
    /// As [`CapsuleProvider::new`].
    pub fn in_memory() -> Result<Self> {
        Self::new(openmls_memory_storage::MemoryStorage::default())
    }
}

impl<S: StorageProvider<CURRENT_VERSION>> OpenMlsProvider for CapsuleProvider<S> {
    type CryptoProvider = openmls_libcrux_crypto::CryptoProvider;
    type RandProvider = openmls_libcrux_crypto::CryptoProvider;
    type StorageProvider = S;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        &self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        &self.crypto
    }
}
