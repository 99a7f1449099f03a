//! Test doubles for the server side only: an in-memory chain with the real
//! ordering rules, a fault layer, and a simulated clock.

mod faults;
mod file;
mod memory;

use std::collections::BTreeMap;

use capsule_amk::{AlbumId, AmkKeyring};

use crate::AmkEscrow;

pub use faults::{Fault, FaultyChain};
pub use file::FileChain;
pub use memory::{MemoryChain, MemoryServer};

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

/// An in-memory stand-in for the owner-group-key escrow: keeps the latest
/// deposit per album, refusing one that would lose a version it already holds.
#[derive(Debug, Default)]
pub struct MemoryEscrow {
    deposits: BTreeMap<AlbumId, AmkKeyring>,
}

impl AmkEscrow for MemoryEscrow {
    fn deposit(&mut self, album: AlbumId, keyring: &AmkKeyring) -> Result<(), String> {
        if let Some(held) = self.deposits.get(&album)
            && held.held().any(|(v, k)| keyring.get(v).is_none_or(|other| other != k))
            && keyring.first_held() <= held.first_held()
        {
            return Err("deposit would lose or change a version".into());
        }
        self.deposits.insert(album, keyring.clone());
        Ok(())
    }

    fn recover(&self, album: AlbumId) -> Option<AmkKeyring> {
        self.deposits.get(&album).cloned()
    }
}
