//! An in-memory server holding each album's chain, with exactly the rules the
//! real server keeps: one commit per epoch, first come first served, idempotent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use capsule_mls::{CommitHash, Epoch};

use crate::{ChainEntry, ChainError, CommitChain, Submission, SubmitAnswer};

#[derive(Debug, Default)]
struct Chain {
    /// The epoch of the first entry (after pruning).
    base: Epoch,
    entries: Vec<ChainEntry>,
    /// Submissions received, including duplicates and refused ones.
    submissions: u64,
}

impl Chain {
    fn head(&self) -> Epoch {
        Epoch(self.base.0 + u64::try_from(self.entries.len()).unwrap_or(u64::MAX))
    }
}

/// The server: one chain per album, shared by every device's [`MemoryChain`]
/// (threads included).
#[derive(Clone, Debug, Default)]
pub struct MemoryServer {
    chains: Arc<Mutex<BTreeMap<Vec<u8>, Chain>>>,
}

impl MemoryServer {
    /// An empty server.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an album whose group starts at `epoch` (0 for a new MLS group).
    pub fn create_album(&self, album: &[u8], epoch: Epoch) {
        self.chains().entry(album.to_vec()).or_insert(Chain { base: epoch, ..Chain::default() });
    }

    // A panic elsewhere while holding the lock leaves the chains as they were:
    // every change below is one push or one removal.
    fn chains(&self) -> MutexGuard<'_, BTreeMap<Vec<u8>, Chain>> {
        self.chains.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A device's connection to one album's chain.
    #[must_use]
    pub fn connect(&self, album: &[u8]) -> MemoryChain {
        MemoryChain { server: self.clone(), album: album.to_vec() }
    }

    /// Every entry of an album's chain (for assertions).
    #[must_use]
    pub fn entries(&self, album: &[u8]) -> Vec<ChainEntry> {
        self.chains().get(album).map(|c| c.entries.clone()).unwrap_or_default()
    }

    /// How many submissions the server received for an album.
    #[must_use]
    pub fn submissions(&self, album: &[u8]) -> u64 {
        self.chains().get(album).map_or(0, |c| c.submissions)
    }

    /// Forgets entries before `epoch`, as a server with limited history would.
    pub fn prune_before(&self, album: &[u8], epoch: Epoch) {
        if let Some(chain) = self.chains().get_mut(album) {
            while chain.base < epoch && !chain.entries.is_empty() {
                chain.entries.remove(0);
                chain.base.0 += 1;
            }
        }
    }

    fn with<T>(&self, album: &[u8], f: impl FnOnce(&mut Chain) -> T) -> Result<T, ChainError> {
        self.chains().get_mut(album).map(f).ok_or(ChainError::UnknownAlbum)
    }
}

/// One device's view of one album's chain on a [`MemoryServer`].
#[derive(Clone, Debug)]
pub struct MemoryChain {
    server: MemoryServer,
    album: Vec<u8>,
}

impl CommitChain for MemoryChain {
    fn submit(&mut self, s: &Submission) -> Result<SubmitAnswer, ChainError> {
        let hash = CommitHash::of(&s.commit);
        self.server.with(&self.album, |chain| {
            chain.submissions += 1;
            // Idempotent: the same commit answers with its position.
            if let Some(held) = chain.entries.iter().find(|e| e.commit_hash == hash) {
                return SubmitAnswer::Accepted { epoch: held.epoch };
            }
            if s.epoch != chain.head() {
                return SubmitAnswer::Conflict { head: chain.head() };
            }
            chain.entries.push(ChainEntry {
                epoch: s.epoch,
                commit: s.commit.clone(),
                commit_hash: hash,
                welcome: s.welcome.clone(),
                bundle: s.bundle.clone(),
            });
            SubmitAnswer::Accepted { epoch: s.epoch }
        })
    }

    fn fetch(&mut self, from_epoch: Epoch) -> Result<Vec<ChainEntry>, ChainError> {
        self.server.with(&self.album, |chain| {
            if from_epoch < chain.base {
                return Err(ChainError::Pruned(chain.base));
            }
            let skip = from_epoch.since(chain.base).and_then(|n| usize::try_from(n).ok()).unwrap_or(usize::MAX);
            Ok(chain.entries.iter().skip(skip).cloned().collect())
        })?
    }

    fn head(&mut self) -> Result<Epoch, ChainError> {
        self.server.with(&self.album, |chain| chain.head())
    }
}
