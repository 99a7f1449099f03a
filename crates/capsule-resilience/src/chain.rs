//! What the resilience core asks of the network, and the answers it takes
//! back; the chain's contract itself lives in `capsule-chain`.

use capsule_mls::{CommitHash, Epoch};

use crate::{ChainError, CommitChain, Fetched, Submission, SubmitAnswer};

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
