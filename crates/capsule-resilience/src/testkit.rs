//! Test doubles for the server side only: an in-memory chain with the real
//! ordering rules, a fault layer, and a simulated clock.

mod faults;
mod file;
mod memory;
#[cfg(feature = "server")]
mod server;

use std::collections::BTreeMap;

use capsule_amk::{AlbumId, AmkKeyring};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::AmkEscrow;

pub use faults::{Fault, FaultyChain};
pub use file::FileChain;
pub use memory::{MemoryChain, MemoryServer};
#[cfg(feature = "server")]
pub use server::{TestChain, TestServer};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Clock, Timestamp};

/// A clock that moves only when told: a 10-minute backoff costs no wall time.
/// Clones share the time (threads included).
#[derive(Clone, Debug, Default)]
pub struct SimClock(Arc<AtomicU64>);

impl SimClock {
    /// At `t = 0`.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// At `t`.
    #[must_use]
    pub fn at(t: Timestamp) -> Self {
        Self(Arc::new(AtomicU64::new(t.0)))
    }

    /// Moves the clock to `t` (never backwards).
    pub fn set(&self, t: Timestamp) {
        self.0.fetch_max(t.0, Ordering::SeqCst);
    }

    /// Moves the clock forward.
    pub fn advance(&self, d: core::time::Duration) {
        self.set(self.now().after(d));
    }
}

impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// An in-memory stand-in for the owner-group-key escrow. Like the real one it
/// holds no key in the clear: every deposit is sealed (XChaCha20-Poly1305,
/// bound to its album) under the key the test owns, standing in for the OGK.
/// It keeps one lineage per album: a deposit extends it (versions the
/// depositor was withheld are kept), and one that would change a version it
/// holds, or leave a gap, is refused.
pub struct MemoryEscrow {
    key: Zeroizing<[u8; 32]>,
    deposits: BTreeMap<AlbumId, ([u8; 24], Vec<u8>)>,
    sealed: u64,
}

impl core::fmt::Debug for MemoryEscrow {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MemoryEscrow").field("albums", &self.deposits.len()).finish_non_exhaustive()
    }
}

impl MemoryEscrow {
    /// An empty escrow sealing under `key` (the test's stand-in for the OGK).
    #[must_use]
    pub fn new(key: [u8; 32]) -> Self {
        Self { key: Zeroizing::new(key), deposits: BTreeMap::new(), sealed: 0 }
    }

    /// What the escrow stores for `album`: ciphertext only.
    #[must_use]
    pub fn sealed(&self, album: AlbumId) -> Option<&[u8]> {
        self.deposits.get(&album).map(|(_, ct)| ct.as_slice())
    }

    fn aad(album: AlbumId) -> Vec<u8> {
        [b"capsule/test-escrow/v1".as_slice(), album.as_bytes()].concat()
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&*self.key).into())
    }
}

impl AmkEscrow for MemoryEscrow {
    fn deposit(&mut self, album: AlbumId, keyring: &AmkKeyring) -> Result<(), String> {
        // What it holds already stays: older versions the depositor was
        // withheld are kept, and a version it holds differently is refused.
        let mut keyring = keyring.duplicate();
        if let Some(held) = self.recover(album)? {
            keyring.recover_history(&held).map_err(|e| format!("deposit would lose or change a version: {e}"))?;
        }
        // A counter nonce: unique per deposit under this key, no RNG needed.
        self.sealed += 1;
        let mut nonce = [0u8; 24];
        nonce[..8].copy_from_slice(&self.sealed.to_be_bytes());
        let plaintext = keyring.to_bytes().map_err(|e| e.to_string())?;
        let ciphertext = self
            .cipher()
            .encrypt(&XNonce::from(nonce), Payload { msg: &plaintext, aad: &Self::aad(album) })
            .map_err(|_| "sealing failed".to_string())?;
        self.deposits.insert(album, (nonce, ciphertext));
        Ok(())
    }

    fn recover(&self, album: AlbumId) -> Result<Option<AmkKeyring>, String> {
        let Some((nonce, ciphertext)) = self.deposits.get(&album) else { return Ok(None) };
        let plaintext = Zeroizing::new(
            self.cipher()
                .decrypt(&XNonce::from(*nonce), Payload { msg: ciphertext, aad: &Self::aad(album) })
                .map_err(|_| "the deposit does not unseal under this key".to_string())?,
        );
        AmkKeyring::from_bytes(&plaintext).map(Some).map_err(|e| e.to_string())
    }
}
