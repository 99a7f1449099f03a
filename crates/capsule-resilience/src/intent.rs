//! Membership changes as durable intents, and the retry schedule as data.

use core::time::Duration;

use capsule_identity::{DeviceId, UserId};
use capsule_mls::CommitHash;
use serde::{Deserialize, Serialize};

use crate::Instant;

/// Identifies one intent for its whole life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IntentId(pub u64);

/// The change an intent asks for; re-proposed as is when another commit wins its epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Add every device of `user` (their KeyPackages).
    AddUser {
        /// The user.
        user: UserId,
        /// One KeyPackage per device.
        directory: Vec<Vec<u8>>,
    },
    /// Add one more device of this device's own user.
    AddDevice {
        /// Its KeyPackage.
        key_package: Vec<u8>,
    },
    /// Remove every device of `user`.
    RemoveUser {
        /// The user.
        user: UserId,
    },
    /// Remove a lost device of this device's own user.
    RemoveDevice {
        /// The device.
        device: DeviceId,
    },
    /// Rotate the AMK.
    RotateAmk,
    /// Replace this device's own leaf (a member's answer to a re-key).
    SelfUpdate,
    /// Quiesce the album for re-key `marker.id` (admin).
    BeginRekey {
        /// The marker.
        marker: capsule_mls::RekeyMarker,
    },
    /// Finish re-key `id`: clear the marker and rotate the AMK (admin).
    FinishRekey {
        /// The re-key.
        id: u64,
    },
    /// Replace a device that did not answer a re-key from a fresh KeyPackage (admin).
    ReAddDevice {
        /// The device's fresh KeyPackage.
        key_package: Vec<u8>,
    },
}

/// Where an intent is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IntentState {
    /// Waiting to be committed (new, or re-proposed after another commit won its epoch).
    Pending,
    /// Its commit is staged and durable locally; not yet sent.
    Staged {
        /// The epoch the commit claims.
        epoch: u64,
        /// The commit.
        commit_hash: CommitHash,
    },
    /// Its commit went to the server; not yet seen in the chain.
    Submitted {
        /// The epoch the commit claims.
        epoch: u64,
        /// The commit.
        commit_hash: CommitHash,
        /// Re-submissions so far.
        retries: u32,
        /// When to look for it in the chain next.
        next_check: Instant,
    },
    /// In the chain and merged (or already in effect through another commit).
    Confirmed {
        /// The epoch reached.
        epoch: u64,
    },
    /// The retry budget ran out: "couldn't sync — will retry when connectivity
    /// returns". Its commit is kept and retried on [`crate::ResilientAlbum::connectivity_restored`].
    Surfaced {
        /// Why.
        reason: String,
    },
}

/// One membership change and its state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// Its id.
    pub id: IntentId,
    /// What it asks for.
    pub change: Change,
    /// Where it is.
    pub state: IntentState,
    /// How many times another commit won its epoch and it was re-proposed.
    pub reproposals: u32,
}

/// The lost-commit schedule: data consumed against the injected clock, never a
/// sleeping loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// How long a submitted commit may stay unseen before it is presumed lost.
    pub detection_timeout: Duration,
    /// Delay after each re-submission; the last one repeats if the budget is larger.
    pub backoff: Vec<Duration>,
    /// Re-submissions before the change is surfaced.
    pub budget: u32,
}

impl Default for RetryPolicy {
    /// 30 s detection; re-submissions wait 30 s, 2 min, 10 min; surfaced after 3.
    fn default() -> Self {
        Self {
            detection_timeout: Duration::from_secs(30),
            backoff: vec![Duration::from_secs(30), Duration::from_secs(120), Duration::from_secs(600)],
            budget: 3,
        }
    }
}

impl RetryPolicy {
    /// The wait after re-submission number `retry` (1-based).
    #[must_use]
    pub fn delay_after(&self, retry: u32) -> Duration {
        let index = usize::try_from(retry.saturating_sub(1)).unwrap_or(usize::MAX);
        self.backoff.get(index).or(self.backoff.last()).copied().unwrap_or(self.detection_timeout)
    }
}
