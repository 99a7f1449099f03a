//! The server's commit chain, as the client sees it.
//!
//! The server stores one commit per epoch, first come first served, and is
//! idempotent: submitting a commit it already holds answers with that commit's
//! position and never creates a second entry. It is authoritative: whatever it
//! holds at an epoch is what that epoch's commit is.

use capsule_mls::CommitHash;
use serde::{Deserialize, Serialize};

/// What a device submits: one commit made in `epoch`, with the Welcome and
/// sealed history bundle the joiners need, kept together by the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    /// The epoch the commit was made in (the chain position it claims).
    pub epoch: u64,
    /// The serialized commit.
    pub commit: Vec<u8>,
    /// The serialized Welcome, if any.
    pub welcome: Option<Vec<u8>>,
    /// The sealed history bundle, if any.
    pub bundle: Option<Vec<u8>>,
}

/// One position of the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainEntry {
    /// The epoch the commit was made in; applying it moves the group to `epoch + 1`.
    pub epoch: u64,
    /// The serialized commit.
    pub commit: Vec<u8>,
    /// Its hash.
    pub commit_hash: CommitHash,
    /// The Welcome stored with it.
    pub welcome: Option<Vec<u8>>,
    /// The sealed history bundle stored with it.
    pub bundle: Option<Vec<u8>>,
}

/// The server's answer to a submission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubmitAnswer {
    /// Stored at `epoch` (also the answer when the same commit was already there).
    Accepted {
        /// Its position.
        epoch: u64,
    },
    /// Another commit holds that epoch, or the epoch is not the head.
    Conflict {
        /// The current head (the epoch the next commit must be made in).
        head: u64,
    },
}

/// Why the chain could not answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// No answer (network failure, timeout, partition): the request may or may
    /// not have reached the server.
    #[error("chain unreachable")]
    Unavailable,
    /// The chain no longer holds entries that far back.
    #[error("chain pruned before epoch {0}")]
    Pruned(u64),
    /// The chain knows no such album.
    #[error("unknown album")]
    UnknownAlbum,
}

/// The server's API as a client sees it. Implementations do the I/O (or, in
/// tests, stand in for the server); the resilience logic only calls these.
pub trait CommitChain {
    /// Submits a commit for `submission.epoch`.
    ///
    /// # Errors
    /// [`ChainError::Unavailable`] when no answer arrived.
    fn submit(&mut self, submission: &Submission) -> Result<SubmitAnswer, ChainError>;

    /// Entries from `epoch` on, in order.
    ///
    /// # Errors
    /// [`ChainError::Unavailable`], or [`ChainError::Pruned`] when the chain no
    /// longer reaches `epoch`.
    fn fetch(&mut self, from_epoch: u64) -> Result<Vec<ChainEntry>, ChainError>;

    /// The head: the epoch the next commit must be made in.
    ///
    /// # Errors
    /// [`ChainError::Unavailable`].
    fn head(&mut self) -> Result<u64, ChainError>;
}
