//! One chain server for tests and the simulator, either kind: the in-memory
//! double, or a real `capsule-server` on SQLite reached over loopback HTTP
//! (`CAPSULE_TEST_CHAIN=sqlite` picks it where a test asks the environment).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use capsule_client::HttpChain;
use capsule_mls::Epoch;
use capsule_server::{Checks, Database, Outcome, Running, Settings};

use super::{MemoryChain, MemoryServer};
use crate::{ChainEntry, ChainError, CommitChain, Submission, SubmitAnswer, WelcomeBlobs};

/// A chain server the test can also inspect and prune.
#[derive(Clone, Debug)]
pub enum TestServer {
    /// The in-memory double.
    Memory(MemoryServer),
    /// A real server on a SQLite file, on loopback.
    Sqlite(Arc<Running>),
}

/// A device's connection to a [`TestServer`].
#[derive(Clone, Debug)]
pub enum TestChain {
    /// To the in-memory double.
    Memory(MemoryChain),
    /// Over HTTP.
    Http(HttpChain),
}

impl TestServer {
    /// A real server keeping its chains in `db` (a SQLite file). It orders
    /// without validating (`Checks::OrderingOnly`): the tests on it register
    /// albums without their public state, and forge commits on purpose to
    /// test the devices' own refusals.
    ///
    /// # Errors
    /// Why the server did not start.
    pub fn sqlite(db: &Path) -> Result<Self, String> {
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let settings = Settings { checks: Checks::OrderingOnly, ..Settings::default() };
        let running =
            Running::start(&Database::Sqlite(db.to_path_buf()), loopback, settings).map_err(|e| e.to_string())?;
        Ok(Self::Sqlite(Arc::new(running)))
    }

    /// The SQLite server (in `dir`) when `CAPSULE_TEST_CHAIN=sqlite`, else
    /// the in-memory double.
    ///
    /// # Errors
    /// Why the server did not start.
    pub fn from_env(dir: &Path) -> Result<Self, String> {
        match std::env::var("CAPSULE_TEST_CHAIN").as_deref() {
            Ok("sqlite") => Self::sqlite(&dir.join("chain.sqlite")),
            Ok("memory") | Err(_) => Ok(Self::Memory(MemoryServer::new())),
            Ok(other) => Err(format!("CAPSULE_TEST_CHAIN={other}: expected memory or sqlite")),
        }
    }

    fn http(running: &Running, album: &[u8]) -> HttpChain {
        HttpChain::new(&running.url(), album, Duration::from_secs(30))
    }

    /// Registers an album whose group starts at `epoch`.
    ///
    /// # Errors
    /// The server not answering.
    pub fn create_album(&self, album: &[u8], epoch: Epoch) -> Result<(), ChainError> {
        match self {
            Self::Memory(m) => m.create_album(album, epoch),
            Self::Sqlite(r) => {
                Self::http(r, album).create_album(epoch, None)?;
            }
        }
        Ok(())
    }

    /// A device's connection to `album`.
    #[must_use]
    pub fn connect(&self, album: &[u8]) -> TestChain {
        match self {
            Self::Memory(m) => TestChain::Memory(m.connect(album)),
            Self::Sqlite(r) => TestChain::Http(Self::http(r, album)),
        }
    }

    /// Every entry still held, with its Welcome and bundle (for assertions
    /// and for joiners); empty, with an error logged, when the server does
    /// not answer.
    #[must_use]
    pub fn entries(&self, album: &[u8]) -> Vec<ChainEntry> {
        match self {
            Self::Memory(m) => m.entries(album),
            Self::Sqlite(r) => {
                let mut chain = Self::http(r, album);
                let entries = match chain.fetch(Epoch::ZERO) {
                    Err(ChainError::Pruned(base)) => chain.fetch(base),
                    other => other,
                };
                let entries = entries.unwrap_or_else(|e| {
                    // Loud: an assertion on an empty list would read it as "nothing stored".
                    tracing::error!(error = %e, "the test server did not answer a fetch");
                    Vec::new()
                });
                entries
                    .into_iter()
                    .map(|e| match chain.welcome(e.epoch) {
                        Ok(Some(b)) => ChainEntry { welcome: b.welcome, bundle: b.bundle, ..e },
                        _ => e,
                    })
                    .collect()
            }
        }
    }

    /// Submissions received: for `album` on the double, in all on the server
    /// (tests use one album per server).
    #[must_use]
    pub fn submissions(&self, album: &[u8]) -> u64 {
        match self {
            Self::Memory(m) => m.submissions(album),
            Self::Sqlite(r) => {
                let m = r.metrics();
                [Outcome::Accepted, Outcome::Conflict, Outcome::Refused, Outcome::BadRequest]
                    .iter()
                    .map(|o| m.get(*o))
                    .sum()
            }
        }
    }

    /// Forgets entries before `epoch`, as a server with limited history would.
    pub fn prune_before(&self, album: &[u8], epoch: Epoch) {
        match self {
            Self::Memory(m) => m.prune_before(album, epoch),
            Self::Sqlite(r) => {
                if let Err(e) = r.prune_before(album, epoch) {
                    tracing::warn!(error = %e, "pruning the test server failed");
                }
            }
        }
    }
}

impl CommitChain for TestChain {
    fn submit(&mut self, s: &Submission) -> Result<SubmitAnswer, ChainError> {
        match self {
            Self::Memory(c) => c.submit(s),
            Self::Http(c) => c.submit(s),
        }
    }

    fn fetch(&mut self, from: Epoch) -> Result<Vec<ChainEntry>, ChainError> {
        match self {
            Self::Memory(c) => c.fetch(from),
            Self::Http(c) => c.fetch(from),
        }
    }

    fn head(&mut self) -> Result<Epoch, ChainError> {
        match self {
            Self::Memory(c) => c.head(),
            Self::Http(c) => c.head(),
        }
    }

    fn welcome(&mut self, epoch: Epoch) -> Result<Option<WelcomeBlobs>, ChainError> {
        match self {
            Self::Memory(c) => c.welcome(epoch),
            Self::Http(c) => c.welcome(epoch),
        }
    }

    fn post_fingerprint(&mut self, fingerprint: &[u8]) -> Result<(), ChainError> {
        match self {
            Self::Memory(c) => c.post_fingerprint(fingerprint),
            Self::Http(c) => c.post_fingerprint(fingerprint),
        }
    }

    fn fingerprints(&mut self) -> Result<Vec<Vec<u8>>, ChainError> {
        match self {
            Self::Memory(c) => c.fingerprints(),
            Self::Http(c) => c.fingerprints(),
        }
    }
}
