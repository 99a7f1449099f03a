//! The server's commit chain, as the client sees it.
//!
//! The server stores one commit per epoch, first come first served, and is
//! idempotent: submitting a commit it already holds answers with that commit's
//! position and never creates a second entry. It is authoritative: whatever it
//! holds at an epoch is what that epoch's commit is.

use capsule_mls::{CommitHash, Epoch};
use serde::{Deserialize, Serialize};

/// What a device submits: one commit made in `epoch`, with the Welcome and
/// sealed history bundle the joiners need, kept together by the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    /// The epoch the commit was made in (the chain position it claims).
    pub epoch: Epoch,
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
    pub epoch: Epoch,
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
        epoch: Epoch,
    },
    /// Another commit holds that epoch, or the epoch is not the head.
    Conflict {
        /// The current head (the epoch the next commit must be made in).
        head: Epoch,
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
    Pruned(Epoch),
    /// The chain knows no such album.
    #[error("unknown album")]
    UnknownAlbum,
    /// The server answered with something no honest chain holds: the server
    /// misbehaved. Nothing was changed by it; the next honest answer brings
    /// the device to the head.
    #[error("the chain answered badly: {0}")]
    BadAnswer(BadAnswer),
}

/// What was wrong with an answer no honest chain would give.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadAnswer {
    /// Entries that do not run one per epoch from the one asked for, or a head
    /// below them.
    #[error("entries out of order or missing")]
    OutOfOrder,
    /// An entry whose hash is not the hash of its commit.
    #[error("entry hash does not match its commit")]
    HashMismatch,
    /// An entry whose commit does not decode as an MLS handshake.
    #[error("entry does not decode")]
    Undecodable,
    /// An entry whose commit belongs to another group, or whose sender the
    /// group does not know.
    #[error("entry belongs to another album")]
    NotOurs,
    /// An entry whose commit was made in another epoch than its position.
    #[error("entry sits at the wrong position")]
    WrongPosition,
}

impl Fetched {
    /// Checks the answer's shape against the request: one entry per epoch from
    /// `from` on, each hash the hash of its commit, the head not below them.
    ///
    /// # Errors
    /// The first thing wrong with it.
    pub fn check(&self, from: Epoch) -> Result<(), BadAnswer> {
        let mut expected = from;
        for entry in &self.entries {
            if entry.epoch != expected {
                return Err(BadAnswer::OutOfOrder);
            }
            if entry.commit_hash != CommitHash::of(&entry.commit) {
                return Err(BadAnswer::HashMismatch);
            }
            expected = expected.saturating_add(1);
        }
        if self.head < expected {
            return Err(BadAnswer::OutOfOrder);
        }
        Ok(())
    }
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
    fn fetch(&mut self, from_epoch: Epoch) -> Result<Vec<ChainEntry>, ChainError>;

    /// The head: the epoch the next commit must be made in.
    ///
    /// # Errors
    /// [`ChainError::Unavailable`].
    fn head(&mut self) -> Result<Epoch, ChainError>;
}

/// What the resilience core asks the caller to do on the network. The caller
/// runs it with no store transaction open and hands the [`Answer`] back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this commit (the first time, or again after a silence).
    Submit(Submission),
    /// Read the chain from `from` on, with its head.
    Fetch {
        /// The first epoch wanted.
        from: Epoch,
    },
}

/// What the chain holds from an epoch on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// The head: the epoch the next commit must be made in.
    pub head: Epoch,
    /// The entries from the requested epoch on, in order.
    pub entries: Vec<ChainEntry>,
}

/// The network's answer to an [`Action`], carrying what it answers so the core
/// can tell a stale answer (from before a crash or a restart) from a current one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The answer to [`Action::Submit`].
    Submitted {
        /// The commit submitted.
        commit_hash: CommitHash,
        /// The server's answer, or why there was none.
        result: Result<SubmitAnswer, ChainError>,
    },
    /// The answer to [`Action::Fetch`].
    Fetched {
        /// The epoch asked from.
        from: Epoch,
        /// The chain from there, or why there was none.
        result: Result<Fetched, ChainError>,
    },
}

impl Action {
    /// Runs the action against a chain: the I/O half of a step, for callers
    /// that talk to the chain through [`CommitChain`].
    pub fn run(&self, chain: &mut impl CommitChain) -> Answer {
        match self {
            Self::Submit(submission) => {
                Answer::Submitted { commit_hash: CommitHash::of(&submission.commit), result: chain.submit(submission) }
            }
            Self::Fetch { from } => {
                let result = chain.head().and_then(|head| {
                    let entries = chain.fetch(*from)?;
                    // The head may have moved between the two calls: the entries say more.
                    let reached = from.saturating_add(u64::try_from(entries.len()).unwrap_or(u64::MAX));
                    Ok(Fetched { head: head.max(reached), entries })
                });
                Answer::Fetched { from: *from, result }
            }
        }
    }
}
