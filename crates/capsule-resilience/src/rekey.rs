//! The full re-key ceremony: quiesce → commit chain → resume, journaled and
//! resumable.
//!
//! 1. **Quiesce**: an admin commits a [`RekeyMarker`] into the group context.
//!    Every member now reads "re-keying": no new writes under the old epoch.
//! 2. **Commit chain**: every member answers by replacing its own leaf
//!    ([`Change::SelfUpdate`], proposed automatically when a device sees a marker
//!    it has not answered). A device that has not answered when the budget runs
//!    out is re-added from a fresh KeyPackage the application supplies.
//!    The AMK does not change meanwhile: there is only ever one live write key.
//! 3. **Resume**: once every leaf that existed at the start has been replaced, the
//!    admin clears the marker in a commit that rotates the AMK: writes reopen on
//!    the fresh AMK and write-tier key.
//!
//! The admin's [`RekeyJournal`] is part of the persisted resilience record and
//! records each step under the ceremony's id; every step is decided from the
//! group state (what the chain made of the album), so a restart at any point
//! continues where it was. Running the same id again after completion is a
//! no-op. The album's AMK lineage is deposited with an [`AmkEscrow`] (the
//! owner-group key recovery path) before anything changes.
//!
//! **A stalled re-key** (its admin's device lost or silent, the album quiesced)
//! is left by any owner: once the marker has stood for the stall time the
//! application configures (`ResilientAlbum::stalled_rekey`), the owner's
//! device recovers the lineage from the escrow, takes back every AMK version
//! it was withheld, and re-drives a re-key under a new id whose marker
//! replaces the stalled one (`ResilientAlbum::recover_stalled_rekey`); the old
//! admin's journal yields when it comes back. No AMK version is lost: the
//! re-driving owner can give every re-added straggler its whole entitlement.

use capsule_amk::{AlbumId, AmkKeyring};
use capsule_mls::{Member, RekeyId, RekeyMarker, RekeyReason};
use serde::{Deserialize, Serialize};

use core::time::Duration;

use crate::{Change, Intent, IntentState, Timestamp};

/// Where the owner-group key keeps an album's AMK lineage, so a stalled re-key
/// never loses data. The real one seals to the OGK (which lives outside this
/// library); the test kit's seals under a key the test owns.
pub trait AmkEscrow {
    /// Deposits the keyring (every version this device holds).
    ///
    /// # Errors
    /// A description of why the escrow refused.
    fn deposit(&mut self, album: AlbumId, keyring: &AmkKeyring) -> Result<(), String>;

    /// The deposited lineage, if any.
    ///
    /// # Errors
    /// A description of why it cannot be recovered (it does not unseal, say).
    fn recover(&self, album: AlbumId) -> Result<Option<AmkKeyring>, String>;
}

/// A step of the admin's journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RekeyStep {
    /// The marker commit is being committed.
    Quiescing,
    /// Waiting for every member's leaf to be replaced.
    Collecting,
    /// The budget ran out; stragglers are being re-added.
    ReAdding,
    /// The finishing rotation is being committed.
    Finishing,
}

/// The admin's journal of one re-key ceremony.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RekeyJournal {
    /// The marker (ceremony id and reason).
    pub marker: RekeyMarker,
    /// Where it is.
    pub step: RekeyStep,
    /// Every member's leaf fingerprint when the ceremony began.
    pub baseline: Vec<(Member, Vec<u8>)>,
    /// When stragglers are re-added (wall-clock time, so it survives a restart).
    pub deadline: Timestamp,
    /// How long members have to answer: a deadline further away than this
    /// was set before the clock jumped back, and is re-anchored.
    pub budget: Duration,
    /// Fresh KeyPackages the application supplied for stragglers.
    pub key_packages: Vec<(Member, Vec<u8>)>,
    /// Devices already proposed for re-adding.
    pub readded: Vec<Member>,
}

impl RekeyJournal {
    pub(crate) fn new(
        id: RekeyId,
        reason: RekeyReason,
        baseline: Vec<(Member, Vec<u8>)>,
        now: Timestamp,
        budget: Duration,
    ) -> Self {
        Self {
            marker: RekeyMarker { id, reason },
            step: RekeyStep::Quiescing,
            baseline,
            deadline: now.after(budget),
            budget,
            key_packages: Vec::new(),
            readded: Vec::new(),
        }
    }

    /// A deadline further away than the budget allows restarts from `now`.
    pub(crate) fn reanchor(&mut self, now: Timestamp) {
        if self.deadline > now.after(self.budget) {
            self.deadline = now.after(self.budget);
        }
    }

    /// Devices from the baseline that are still members and still have their
    /// old leaf.
    pub(crate) fn stragglers(&self, now: &[(Member, Vec<u8>)]) -> Vec<Member> {
        self.baseline
            .iter()
            .filter(|(id, old)| now.iter().any(|(n, key)| n == id && key == old))
            .map(|(id, _)| *id)
            .collect()
    }

    /// The re-add changes due for stragglers whose KeyPackages have arrived.
    pub(crate) fn readds_due(&mut self, stragglers: &[Member]) -> Vec<Change> {
        let mut out = Vec::new();
        for (id, kp) in &self.key_packages {
            if stragglers.contains(id) && !self.readded.contains(id) {
                self.readded.push(*id);
                out.push(Change::ReAddDevice { key_package: kp.clone() });
            }
        }
        out
    }
}

/// What the admin's journal sees of the album when it advances.
#[derive(Debug)]
pub(crate) struct Seen<'a> {
    /// The marker the group context carries now.
    pub(crate) marker: Option<RekeyMarker>,
    /// Every member's leaf fingerprint now.
    pub(crate) fingerprints: Vec<(Member, Vec<u8>)>,
    /// The device's intents.
    pub(crate) intents: &'a [Intent],
}

/// Where one step of the journal leads.
#[derive(Debug)]
pub(crate) enum Advanced {
    /// Still running, with the changes to propose now.
    Running(RekeyJournal, Vec<Change>),
    /// The finishing rotation is in the chain: done.
    Completed(RekeyId),
    /// Another admin's marker replaced ours: theirs now, ours is dropped.
    Yielded,
}

/// Moves the admin's journal forward from what the group state shows. Pure:
/// every step is decided from `seen` and `now`, so a restart at any point
/// continues where it was.
pub(crate) fn advance(mut journal: RekeyJournal, seen: &Seen<'_>, now: Timestamp) -> Advanced {
    let id = journal.marker.id;
    let ours = seen.marker == Some(journal.marker);
    let mut propose = Vec::new();
    match journal.step {
        RekeyStep::Quiescing if ours => journal.step = RekeyStep::Collecting,
        // The marker commit was refused or cancelled: this re-key never began.
        RekeyStep::Quiescing
            if seen.intents.iter().any(|i| {
                matches!(i.change, Change::BeginRekey { marker } if marker == journal.marker)
                    && matches!(i.state, IntentState::Failed { .. } | IntentState::Cancelled)
            }) =>
        {
            tracing::info!(id = id.0, "re-key never began: its marker commit was refused or cancelled");
            return Advanced::Yielded;
        }
        RekeyStep::Quiescing
            if seen.intents.iter().any(|i| {
                matches!(i.change, Change::BeginRekey { marker } if marker == journal.marker)
                    && !matches!(i.state, IntentState::Confirmed { .. })
            }) => {}
        RekeyStep::Quiescing => {
            // The marker commit is done but the group shows another marker:
            // another admin's re-key replaced ours before this device looked.
            // Theirs now, as in `Collecting`; keeping the journal would block
            // every later re-key here.
            tracing::info!(id = id.0, "re-key replaced before it was collected");
            return Advanced::Yielded;
        }
        RekeyStep::Collecting | RekeyStep::ReAdding if !ours => {
            tracing::info!(id = id.0, "re-key taken over by another admin");
            return Advanced::Yielded;
        }
        RekeyStep::Collecting | RekeyStep::ReAdding => {
            let stragglers = journal.stragglers(&seen.fingerprints);
            if stragglers.is_empty() {
                journal.step = RekeyStep::Finishing;
                propose.push(Change::FinishRekey { id });
            } else if now >= journal.deadline {
                journal.step = RekeyStep::ReAdding;
                propose.extend(journal.readds_due(&stragglers));
            }
        }
        RekeyStep::Finishing if !ours => return Advanced::Completed(id),
        RekeyStep::Finishing => {}
    }
    Advanced::Running(journal, propose)
}
