//! An in-memory server holding each album's chain: a thin shell over
//! `capsule-chain`'s [`ChainLog`], so it keeps exactly the server's rules (one
//! commit per epoch, first come first served, idempotent, framing checked).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use capsule_chain::rules::{ChainLog, Limits};
use capsule_mls::Epoch;

use crate::{ChainEntry, ChainError, CommitChain, Submission, SubmitAnswer, WelcomeBlobs};

#[derive(Debug, Default)]
struct Chain {
    log: ChainLog,
    /// Submissions received, including duplicates and refused ones.
    submissions: u64,
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
        self.create_album_retaining(album, epoch, None);
    }

    /// Registers an album that keeps only its last `keep` epochs (`None`: all).
    pub fn create_album_retaining(&self, album: &[u8], epoch: Epoch, keep: Option<u64>) {
        self.chains()
            .entry(album.to_vec())
            .or_insert_with(|| Chain { log: ChainLog::new(epoch).retaining(keep), submissions: 0 });
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

    /// Every entry of an album's chain, Welcomes included (for assertions).
    #[must_use]
    pub fn entries(&self, album: &[u8]) -> Vec<ChainEntry> {
        self.chains().get(album).map(|c| c.log.entries().to_vec()).unwrap_or_default()
    }

    /// How many submissions the server received for an album.
    #[must_use]
    pub fn submissions(&self, album: &[u8]) -> u64 {
        self.chains().get(album).map_or(0, |c| c.submissions)
    }

    /// Forgets entries before `epoch`, as a server with limited history would.
    pub fn prune_before(&self, album: &[u8], epoch: Epoch) {
        if let Some(chain) = self.chains().get_mut(album) {
            chain.log.prune_before(epoch);
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
        let album = self.album.clone();
        self.server.with(&self.album, |chain| {
            chain.submissions += 1;
            chain.log.submit(&album, s, &Limits::default()).map_err(ChainError::Refused)
        })?
    }

    fn fetch(&mut self, from_epoch: Epoch) -> Result<Vec<ChainEntry>, ChainError> {
        self.server.with(&self.album, |chain| chain.log.fetch(from_epoch, u64::MAX))?
    }

    fn head(&mut self) -> Result<Epoch, ChainError> {
        self.server.with(&self.album, |chain| chain.log.head())
    }

    fn welcome(&mut self, epoch: Epoch) -> Result<Option<WelcomeBlobs>, ChainError> {
        self.server.with(&self.album, |chain| chain.log.welcome(epoch))?
    }

    fn post_fingerprint(&mut self, fingerprint: &[u8]) -> Result<(), ChainError> {
        let album = self.album.clone();
        self.server
            .with(&self.album, |chain| chain.log.post_fingerprint(&album, fingerprint).map_err(ChainError::Refused))?
    }

    fn fingerprints(&mut self) -> Result<Vec<Vec<u8>>, ChainError> {
        self.server.with(&self.album, |chain| chain.log.fingerprints())
    }
}
