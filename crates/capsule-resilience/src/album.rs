//! An album with recovery, as a sans-IO state machine: it says what it wants
//! sent or fetched ([`ResilientAlbum::poll_action`]), takes the network's
//! answer ([`ResilientAlbum::handle`]) and when it next has work
//! ([`ResilientAlbum::next_deadline`]), like `quinn-proto`'s connection. The
//! caller does the I/O, with no store transaction open.

use capsule_amk::AmkKeyring;
use capsule_identity::UserId;
use capsule_mls::{
    Album, Applied, DeviceIdentity, Epoch, Member, MlsError, OpenMlsProvider, RekeyId, RekeyMarker, RekeyReason,
    Validation,
};
use serde::{Deserialize, Serialize};

use crate::rekey::{self, AmkEscrow, RekeyJournal, Seen};
use crate::{
    Action, Answer, ChainError, Change, CommitChain, Divergence, Intent, IntentId, IntentState, ReconcileOutcome,
    ReconcileStep, ResilienceError, Result, RetryPolicy, Timestamp,
};

/// What an application shows for an album.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AlbumStatus {
    /// Nothing in flight.
    InSync,
    /// A change is in flight (submitted, possibly being retried).
    Syncing,
    /// A change could not be synced: "couldn't sync — will retry when connectivity returns".
    Surfaced,
    /// Divergence detected; no sends, no merges until the user acts.
    Quarantined {
        /// This device's epoch.
        local_epoch: Epoch,
        /// The chain's head when detected.
        server_epoch: Epoch,
    },
    /// This device was removed or cannot catch up: re-bootstrap it.
    NeedsRebootstrap,
    /// This device discarded its state for a re-bootstrap and waits to be
    /// re-added (by another device of its user, or an admin) from the fresh
    /// KeyPackage it published; it then joins from the Welcome.
    AwaitingReadd,
    /// A full re-key is in progress: writes are quiesced until it completes.
    Rekeying {
        /// The re-key's id.
        id: RekeyId,
    },
}

/// Something the album did, for the application and for tests.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An intent's commit was submitted (`retry` 0) or re-submitted.
    Submitted {
        /// The intent.
        intent: IntentId,
        /// 0 for the first submission.
        retry: u32,
        /// When.
        at: Timestamp,
    },
    /// An intent's commit is in the chain and merged.
    Confirmed {
        /// The intent.
        intent: IntentId,
        /// The epoch reached.
        epoch: Epoch,
    },
    /// Another commit won the intent's epoch; the change will be re-proposed.
    Superseded {
        /// The intent.
        intent: IntentId,
    },
    /// The retry budget ran out.
    Surfaced {
        /// The intent.
        intent: IntentId,
        /// When.
        at: Timestamp,
    },
    /// The MLS layer refused to commit an intent's change: it is final, and
    /// the changes after it go on.
    Failed {
        /// The intent.
        intent: IntentId,
        /// Why.
        refusal: crate::Refusal,
    },
    /// A commit from the chain was applied.
    Applied(Box<Applied>),
    /// A commit in the chain was refused as invalid, and the album quarantined:
    /// what to report (who made it, and why it was refused).
    InvalidCommit {
        /// The commit.
        commit: crate::InvalidCommit,
        /// The refusal, as the MLS layer worded it.
        reason: String,
    },
}

/// Deployment policy for long-lived albums: a full re-key at least every
/// `every`, decided against the injected clock ([`ResilientAlbum::scheduled_rekey_due`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RekeySchedule {
    /// The longest an album goes without a full re-key.
    pub every: core::time::Duration,
}

/// What a re-bootstrap discarded: kept beside the album while the device
/// awaits its re-add, for investigation (a divergence may be a bug).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discarded {
    /// The album.
    pub album: capsule_amk::AlbumId,
    /// The epoch this device was at.
    pub epoch: capsule_mls::Epoch,
    /// The divergence that quarantined it, if that was the reason.
    pub divergence: Option<Divergence>,
    /// The last commit it applied (absent from the chain if it diverged).
    pub last_applied: Option<capsule_mls::CommitHash>,
    /// Its pending commit, if any.
    pub pending: Option<capsule_mls::CommitHash>,
    /// Changes it had not settled: the application proposes them again after
    /// the re-add if they still apply; nothing is dropped silently.
    pub unsettled: Vec<Intent>,
}

/// An [`Album`] whose membership changes survive lost commits, lost races and
/// drift, with the server's chain as the source of truth.
#[derive(Debug)]
pub struct ResilientAlbum {
    pub(crate) album: Album,
    pub(crate) intents: Vec<Intent>,
    pub(crate) next_intent: u64,
    pub(crate) policy: RetryPolicy,
    pub(crate) quarantine: Option<Divergence>,
    pub(crate) unrecoverable: bool,
    /// The chain must be read before anything else (a submission lost a race).
    pub(crate) fetch_due: bool,
    pub(crate) rekey: Option<RekeyJournal>,
    pub(crate) completed_rekeys: Vec<RekeyId>,
    /// When this device last saw a re-key of the album finish (or first saw
    /// the album): what a [`RekeySchedule`] counts from.
    pub(crate) last_rekey: Option<Timestamp>,
    /// The re-key marker this device last saw in the group context, and when
    /// it first saw it (what a stall is counted from).
    pub(crate) marker_seen: Option<(RekeyId, Timestamp)>,
    pub(crate) answered_rekeys: Vec<RekeyId>,
    /// Answers no honest chain gives, counted for the application.
    pub(crate) server_faults: u64,
    /// The chain no longer holds the commit before the epoch this device
    /// joined in, so its Welcome cannot be checked against the chain: it
    /// reads from its own epoch instead (and says so in the log).
    pub(crate) join_unchecked: bool,
    /// Not persisted: what happened since the caller last took them.
    pub(crate) events: Vec<Event>,
}

/// The resilience state beside the album, to persist with it: every intent
/// (durable: a restart resumes them), quarantine and re-bootstrap flags.
#[derive(Serialize, Deserialize)]
struct ResilienceRecord {
    format: u8,
    intents: Vec<Intent>,
    next_intent: u64,
    quarantine: Option<Divergence>,
    unrecoverable: bool,
    fetch_due: bool,
    rekey: Option<RekeyJournal>,
    completed_rekeys: Vec<RekeyId>,
    last_rekey: Option<Timestamp>,
    marker_seen: Option<(RekeyId, Timestamp)>,
    answered_rekeys: Vec<RekeyId>,
    server_faults: u64,
    join_unchecked: bool,
}

/// A format-3 [`ResilienceRecord`]: no `join_unchecked`.
#[derive(Serialize, Deserialize)]
struct ResilienceRecordV3 {
    format: u8,
    intents: Vec<Intent>,
    next_intent: u64,
    quarantine: Option<Divergence>,
    unrecoverable: bool,
    fetch_due: bool,
    rekey: Option<RekeyJournal>,
    completed_rekeys: Vec<RekeyId>,
    last_rekey: Option<Timestamp>,
    marker_seen: Option<(RekeyId, Timestamp)>,
    answered_rekeys: Vec<RekeyId>,
    server_faults: u64,
}

impl From<ResilienceRecordV3> for ResilienceRecord {
    fn from(r: ResilienceRecordV3) -> Self {
        Self {
            format: RECORD_FORMAT,
            intents: r.intents,
            next_intent: r.next_intent,
            quarantine: r.quarantine,
            unrecoverable: r.unrecoverable,
            fetch_due: r.fetch_due,
            rekey: r.rekey,
            completed_rekeys: r.completed_rekeys,
            last_rekey: r.last_rekey,
            marker_seen: r.marker_seen,
            answered_rekeys: r.answered_rekeys,
            server_faults: r.server_faults,
            join_unchecked: false,
        }
    }
}

/// Format version of [`ResilienceRecord`] (2: wall-clock deadlines, the send
/// count of a staged intent, the fetch flag; 3: when a re-key marker was first
/// seen; 4: a join the chain could no longer check). Format 3 is still read.
const RECORD_FORMAT: u8 = 4;

/// Everything a step needs from the device.
pub struct Context<'a, P> {
    /// The device's OpenMLS provider (crypto, randomness, storage).
    pub provider: &'a P,
    /// The device's identity.
    pub device: &'a DeviceIdentity,
    /// Trust and time for identity checks.
    pub validation: Validation<'a>,
}

// Manual impls: a derive would demand `P: Copy`, but only references are copied.
impl<P> Clone for Context<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P> Copy for Context<'_, P> {}

impl<P> core::fmt::Debug for Context<'_, P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Context").field("device", self.device).finish_non_exhaustive()
    }
}

/// A driver step takes at most this many actions: every action settles or
/// defers something, so a well-behaved chain needs a handful; a chain that
/// answers nonsense cannot keep the driver looping.
const MAX_ACTIONS: usize = 64;

impl ResilientAlbum {
    /// Wraps an album (freshly created or joined) with the given retry policy.
    #[must_use]
    pub const fn new(album: Album, policy: RetryPolicy) -> Self {
        Self {
            album,
            intents: Vec::new(),
            next_intent: 0,
            policy,
            quarantine: None,
            unrecoverable: false,
            fetch_due: false,
            rekey: None,
            completed_rekeys: Vec::new(),
            last_rekey: None,
            marker_seen: None,
            answered_rekeys: Vec::new(),
            server_faults: 0,
            join_unchecked: false,
            events: Vec::new(),
        }
    }

    /// The album.
    #[must_use]
    pub const fn album(&self) -> &Album {
        &self.album
    }

    /// The intents, quarantine and flags, to persist beside the album record
    /// in the same transaction.
    ///
    /// # Errors
    /// Only on a serializer bug.
    pub fn to_record(&self) -> Result<Vec<u8>> {
        let record = ResilienceRecord {
            format: RECORD_FORMAT,
            intents: self.intents.clone(),
            next_intent: self.next_intent,
            quarantine: self.quarantine,
            unrecoverable: self.unrecoverable,
            fetch_due: self.fetch_due,
            rekey: self.rekey.clone(),
            completed_rekeys: self.completed_rekeys.clone(),
            last_rekey: self.last_rekey,
            marker_seen: self.marker_seen,
            answered_rekeys: self.answered_rekeys.clone(),
            server_faults: self.server_faults,
            join_unchecked: self.join_unchecked,
        };
        capsule_identity::encoding::encode(&record).map_err(|_| ResilienceError::Record("resilience record"))
    }

    /// Rebuilds from a loaded album and the record [`ResilientAlbum::to_record`] wrote.
    ///
    /// # Errors
    /// [`ResilienceError::Record`] for a record that does not decode.
    pub fn from_record(album: Album, record: &[u8], policy: RetryPolicy) -> Result<Self> {
        let malformed = |_| ResilienceError::Record("resilience record");
        // The format is the first byte (postcard writes a u8 as itself).
        let r: ResilienceRecord = match record.first().copied() {
            Some(3) => {
                ResilienceRecordV3::into(capsule_identity::encoding::decode_canonical(record).map_err(malformed)?)
            }
            Some(RECORD_FORMAT) => capsule_identity::encoding::decode_canonical(record).map_err(malformed)?,
            _ => return Err(ResilienceError::Record("resilience record format")),
        };
        Ok(Self {
            album,
            intents: r.intents,
            next_intent: r.next_intent,
            policy,
            quarantine: r.quarantine,
            unrecoverable: r.unrecoverable,
            fetch_due: r.fetch_due,
            rekey: r.rekey,
            completed_rekeys: r.completed_rekeys,
            last_rekey: r.last_rekey,
            marker_seen: r.marker_seen,
            answered_rekeys: r.answered_rekeys,
            server_faults: r.server_faults,
            join_unchecked: r.join_unchecked,
            events: Vec::new(),
        })
    }

    /// Unwraps the album (intents and quarantine are dropped).
    #[must_use]
    pub fn into_album(self) -> Album {
        self.album
    }

    /// Every intent, oldest first.
    #[must_use]
    pub fn intents(&self) -> &[Intent] {
        &self.intents
    }

    /// One intent.
    #[must_use]
    pub fn intent(&self, id: IntentId) -> Option<&Intent> {
        self.intents.iter().find(|i| i.id == id)
    }

    /// The divergence that quarantined the album, if any.
    #[must_use]
    pub const fn quarantine(&self) -> Option<Divergence> {
        self.quarantine
    }

    /// Discards this device's state of the album, the first step of a
    /// re-bootstrap: only for a quarantined album or one this device cannot
    /// catch up with (the only paths the design allows; a divergence is never
    /// repaired by splicing suspect state). Returns what was discarded, for
    /// investigation. A durable caller removes the album's records in the same
    /// transaction and publishes a fresh KeyPackage for the re-add; the value
    /// itself is spent afterwards.
    ///
    /// # Errors
    /// [`ResilienceError::NotStuck`] for an album that can still catch up
    /// (nothing is discarded); storage errors.
    pub fn rebootstrap<P: OpenMlsProvider>(&mut self, provider: &P) -> Result<Discarded> {
        if self.settled_outcome().is_none() {
            return Err(ResilienceError::NotStuck);
        }
        let discarded = Discarded {
            album: self.album.id(),
            epoch: self.album.epoch(),
            divergence: self.quarantine,
            last_applied: self.album.last_applied(),
            pending: self.album.pending().map(|p| p.commit_hash),
            unsettled: self
                .intents
                .iter()
                .filter(|i| {
                    !matches!(
                        i.state,
                        IntentState::Confirmed { .. } | IntentState::Failed { .. } | IntentState::Cancelled
                    )
                })
                .cloned()
                .collect(),
        };
        self.album.discard(provider)?;
        tracing::warn!(epoch = discarded.epoch.0, "album state discarded for a re-bootstrap");
        Ok(discarded)
    }

    /// What happened since the last call: submissions, confirmations,
    /// supersessions, surfacing, commits applied.
    pub fn take_events(&mut self) -> Vec<Event> {
        core::mem::take(&mut self.events)
    }

    /// What the application shows.
    #[must_use]
    pub fn status(&self) -> AlbumStatus {
        if self.unrecoverable || self.album.is_evicted() {
            return AlbumStatus::NeedsRebootstrap;
        }
        if let Some(d) = self.quarantine {
            return AlbumStatus::Quarantined { local_epoch: d.local_epoch, server_epoch: d.server_epoch };
        }
        if let Some(marker) = self.album.context().rekey {
            return AlbumStatus::Rekeying { id: marker.id };
        }
        if self.intents.iter().any(|i| matches!(i.state, IntentState::Surfaced { .. })) {
            return AlbumStatus::Surfaced;
        }
        if self.intents.iter().any(|i| {
            matches!(i.state, IntentState::Pending | IntentState::Staged { .. } | IntentState::Submitted { .. })
        }) {
            return AlbumStatus::Syncing;
        }
        AlbumStatus::InSync
    }

    pub(crate) fn ensure_not_quarantined(&self) -> Result<()> {
        match self.quarantine {
            Some(d) => Err(ResilienceError::Quarantined { local_epoch: d.local_epoch, server_epoch: d.server_epoch }),
            None => Ok(()),
        }
    }

    /// The next thing to do on the network, if any, deciding everything local
    /// first: re-anchors deadlines a clock jump left too far away, advances a
    /// re-key, and stages the next pending change as a commit. A durable
    /// caller commits its store transaction before running the action: a
    /// commit never reaches the server while the pending state that lets this
    /// device recognise it could still be rolled back.
    ///
    /// Calling it again before the answer is handled returns the same action.
    ///
    /// # Errors
    /// [`ResilienceError::Quarantined`] while quarantined; MLS errors that are
    /// not refusals (bugs, storage faults).
    pub fn poll_action<P: OpenMlsProvider>(&mut self, cx: Context<'_, P>, now: Timestamp) -> Result<Option<Action>> {
        self.ensure_not_quarantined()?;
        if self.settled_outcome().is_some() {
            return Ok(None);
        }
        self.reanchor(now);
        self.advance_rekey(now);
        if self.fetch_due {
            return Ok(Some(Action::Fetch { from: self.fetch_from() }));
        }
        self.stage_next(cx, now)?;
        if let Some(action) = self.due_submission() {
            return Ok(Some(action));
        }
        let check_due = self
            .in_flight()
            .is_some_and(|i| matches!(i.state, IntentState::Submitted { next_check, .. } if now >= next_check));
        Ok(check_due.then(|| Action::Fetch { from: self.fetch_from() }))
    }

    /// Takes the network's answer to an action. Returns the reconcile outcome
    /// when the answer was a fetch that could be applied.
    ///
    /// The inner result is the chain's own failure, for the caller to report
    /// after recording the state (it is not a reason to roll back): no answer
    /// at all is not one (the retry schedule moves on), a pruned chain makes
    /// the album unrecoverable, and an answer no honest chain gives is
    /// [`ChainError::BadAnswer`] (counted, and it changes nothing). A stale
    /// answer changes nothing.
    ///
    /// # Errors
    /// MLS errors that are not refusals (bugs, storage faults): roll back.
    pub fn handle<P: OpenMlsProvider>(
        &mut self,
        cx: Context<'_, P>,
        answer: Answer,
        now: Timestamp,
    ) -> Result<Result<Option<ReconcileOutcome>, ChainError>> {
        if self.quarantine.is_some() {
            return Ok(Ok(self.settled_outcome()));
        }
        match answer {
            Answer::Submitted { commit_hash, result } => {
                let failure = match &result {
                    // A refusal ends the change (`Refusal::ChainRefused`): its event says so.
                    Err(ChainError::Unavailable | ChainError::Refused(_)) | Ok(_) => None,
                    Err(e) => Some(e.clone()),
                };
                self.handle_submitted(cx, commit_hash, result, now)?;
                Ok(failure.map_or(Ok(None), Err))
            }
            Answer::Fetched { from, result } => {
                let applied = self.apply_fetched(cx, from, result)?;
                // The chain was looked at (or could not be): a due check moves on.
                self.follow_schedule(now);
                Ok(applied)
            }
        }
    }

    /// When [`ResilientAlbum::poll_action`] next has something to do, if anything.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Timestamp> {
        if self.settled_outcome().is_some() {
            return None;
        }
        let now = Timestamp(0);
        // A pending change is due at once when nothing is in flight.
        let stage =
            (self.in_flight().is_none() && self.intents.iter().any(|i| i.state == IntentState::Pending)).then_some(now);
        let fetch = self.fetch_due.then_some(now);
        let flight = self.in_flight().and_then(|i| match i.state {
            IntentState::Submitted { next_check, .. } => Some(next_check),
            // Staged and not yet sent: due at once.
            IntentState::Staged { .. } => Some(now),
            _ => None,
        });
        // An admin's re-key re-adds stragglers when its budget runs out (once
        // past it, the journal has moved on from collecting).
        let rekey = self.rekey.as_ref().filter(|j| j.step == crate::RekeyStep::Collecting).map(|j| j.deadline);
        [stage, fetch, flight, rekey].into_iter().flatten().min()
    }

    /// [`ResilientAlbum::next_deadline`] as a wake-up time for an application
    /// that sleeps until it: no later than the schedule allows from `now`, so a
    /// deadline stored before the clock jumped back wakes the device to
    /// re-anchor it ([`ResilientAlbum::poll_action`]) instead of sleeping on.
    #[must_use]
    pub fn next_wakeup(&self, now: Timestamp) -> Option<Timestamp> {
        let longest =
            self.rekey.as_ref().map_or(self.policy.longest_wait(), |j| j.budget.max(self.policy.longest_wait()));
        self.next_deadline().map(|d| d.min(now.after(longest)))
    }

    /// A small driver over [`ResilientAlbum::poll_action`] and
    /// [`ResilientAlbum::handle`] for an album held in memory: runs every due
    /// action against `chain` until nothing is left to do now. Never sleeps:
    /// call it again when the clock reaches [`ResilientAlbum::next_deadline`].
    /// A durable caller runs the same loop with a store transaction around each
    /// decision and each answer, and none around the I/O.
    ///
    /// # Errors
    /// [`ResilienceError::Quarantined`] while quarantined; a chain error other
    /// than silence; MLS errors that are not refusals.
    pub fn drive<P: OpenMlsProvider>(
        &mut self,
        cx: Context<'_, P>,
        chain: &mut impl CommitChain,
        clock: &impl crate::Clock,
    ) -> Result<Vec<crate::Event>> {
        for _ in 0..MAX_ACTIONS {
            let Some(action) = self.poll_action(cx, clock.now())? else { break };
            if let Err(e) = self.handle(cx, action.run(chain), clock.now())? {
                return Err(e.into());
            }
        }
        Ok(self.take_events())
    }

    /// Brings the album to the chain's head: the single recovery entry point
    /// ([`ResilientAlbum::begin_reconcile`], one fetch,
    /// [`ResilientAlbum::finish_reconcile`]).
    ///
    /// # Errors
    /// [`ResilienceError::Chain`] when the chain does not answer; MLS errors
    /// that are not refusals.
    pub fn reconcile_with_server<P: OpenMlsProvider>(
        &mut self,
        cx: Context<'_, P>,
        chain: &mut impl CommitChain,
    ) -> Result<ReconcileOutcome> {
        let mut retried = false;
        loop {
            let action = match self.begin_reconcile() {
                ReconcileStep::Done(outcome) => return Ok(outcome),
                ReconcileStep::Fetch(action) => action,
            };
            match self.finish_reconcile(cx, action.run(chain)) {
                // A second fetch only when the first changed where to read
                // from (a join the chain can no longer check).
                Err(ResilienceError::Chain(ChainError::Unavailable))
                    if !retried && self.begin_reconcile() != ReconcileStep::Fetch(action) =>
                {
                    retried = true;
                }
                other => return other,
            }
        }
    }

    /// Starts (or, for an id already running, resumes) a full re-key of the album;
    /// see the `rekey` module. A completed id is a no-op. The album's AMK lineage
    /// goes to `escrow` before anything changes. Progress happens in
    /// [`ResilientAlbum::poll_action`]; stragglers are re-added after `budget`.
    ///
    /// # Errors
    /// [`ResilienceError::RekeyInProgress`] while another re-key of this device
    /// runs; [`ResilienceError::Escrow`] if the lineage cannot be deposited;
    /// [`ResilienceError::Quarantined`]; [`ResilienceError::NeedsRebootstrap`]
    /// for a device removed from the album or left behind a pruned chain.
    pub fn rekey_group(
        &mut self,
        id: RekeyId,
        reason: RekeyReason,
        now: Timestamp,
        budget: core::time::Duration,
        escrow: &mut dyn AmkEscrow,
    ) -> Result<()> {
        let Some(lineage) = self.rekey_deposit(id)? else { return Ok(()) };
        escrow.deposit(self.album.id(), lineage).map_err(ResilienceError::Escrow)?;
        let journal = RekeyJournal::new(id, reason, self.album.leaf_fingerprints(), now, budget);
        self.propose(Change::BeginRekey { marker: journal.marker });
        self.rekey = Some(journal);
        Ok(())
    }

    /// What [`ResilientAlbum::rekey_group`] would deposit for `id`: this
    /// device's keyring, or `None` when `id` runs or finished already. A
    /// durable caller deposits it with no store transaction open (a real
    /// escrow is a network call), after reconciling with the chain, so only a
    /// lineage the chain confirmed reaches the escrow.
    ///
    /// # Errors
    /// As [`ResilientAlbum::rekey_group`], with nothing changed.
    pub fn rekey_deposit(&self, id: RekeyId) -> Result<Option<&AmkKeyring>> {
        self.ensure_not_quarantined()?;
        // A removed device's keyring is not the album's lineage any more.
        if self.settled_outcome().is_some() {
            return Err(ResilienceError::NeedsRebootstrap);
        }
        if self.completed_rekeys.contains(&id) {
            return Ok(None);
        }
        match &self.rekey {
            Some(j) if j.marker.id == id => Ok(None),
            Some(j) => Err(ResilienceError::RekeyInProgress(j.marker.id)),
            None => Ok(Some(self.album.keyring())),
        }
    }

    /// Whether `schedule` calls for a re-key now: the album's last re-key (as
    /// this device saw it finish, or its first look at the album) is older than
    /// the schedule's interval, and none is running. The caller, an admin's
    /// device, then starts one with [`RekeyReason::Scheduled`]
    /// ([`ResilientAlbum::rekey_group`], which also needs the escrow).
    #[must_use]
    pub fn scheduled_rekey_due(&self, schedule: &RekeySchedule, now: Timestamp) -> bool {
        self.settled_outcome().is_none()
            && self.album.context().rekey.is_none()
            && self.rekey.is_none()
            && self.last_rekey.is_some_and(|last| now >= last.after(schedule.every))
    }

    /// The re-key the group context shows, if it has not finished `stall`
    /// after this device first saw it (its admin's device lost, or gone
    /// silent): an owner then runs [`ResilientAlbum::recover_stalled_rekey`].
    /// A device that never polled since the marker arrived has not seen it yet.
    #[must_use]
    pub fn stalled_rekey(&self, now: Timestamp, stall: core::time::Duration) -> Option<RekeyMarker> {
        let marker = self.album.context().rekey?;
        match self.marker_seen {
            Some((id, since)) if id == marker.id && now >= since.after(stall) => Some(marker),
            _ => None,
        }
    }

    /// The owners' way out of a stalled re-key (`000_…`: "any current
    /// owner-set member recovers the album's AMK lineage from the OGK escrow
    /// and re-drives a fresh, clean epoch"): takes back from `escrow` every
    /// AMK version this device was withheld (so no user's entitlement is lost
    /// when stragglers are re-added), deposits the lineage again, and starts a
    /// re-key under the new `id` whose marker replaces the stalled one. It
    /// then runs like any re-key ([`ResilientAlbum::rekey_group`]): members
    /// answer the new marker, stragglers are re-added after `budget`, and the
    /// finishing commit rotates the AMK.
    ///
    /// # Errors
    /// [`ResilienceError::NotStalled`] when no re-key has stalled `stall`;
    /// [`MlsError::Unauthorized`] unless `owner` (this device's user) is an
    /// admin of the album; [`ResilienceError::Escrow`] when the escrow holds
    /// nothing for the album or refuses; [`MlsError::Amk`] for a lineage that
    /// does not extend this device's keyring; [`ResilienceError::Quarantined`].
    /// Nothing changes on any error.
    #[allow(clippy::too_many_arguments)] // each is a separate decision of the caller's
    pub fn recover_stalled_rekey(
        &mut self,
        owner: UserId,
        id: RekeyId,
        now: Timestamp,
        stall: core::time::Duration,
        budget: core::time::Duration,
        escrow: &mut dyn AmkEscrow,
    ) -> Result<()> {
        let stalled = self.stalled_rekey_recoverable(owner, now, stall)?;
        let album = self.album.id();
        let lineage = escrow.recover(album).map_err(ResilienceError::Escrow)?;
        let lineage = lineage.ok_or_else(|| ResilienceError::Escrow("no lineage deposited for this album".into()))?;
        // Merged into a copy first: the album changes only once the escrow holds it.
        let mut keyring = self.album.keyring().duplicate();
        let recovered = keyring.recover_history(&lineage).map_err(MlsError::Amk)?;
        escrow.deposit(album, &keyring).map_err(ResilienceError::Escrow)?;
        tracing::info!(stalled = stalled.id.0, id = id.0, recovered, "re-driving a stalled re-key");
        self.album.recover_history(&keyring)?;
        // The stalled ceremony, if it was this device's own, is replaced.
        self.rekey = None;
        let journal = RekeyJournal::new(id, stalled.reason, self.album.leaf_fingerprints(), now, budget);
        self.propose(Change::BeginRekey { marker: journal.marker });
        self.rekey = Some(journal);
        Ok(())
    }

    /// The stalled re-key `owner` may re-drive with
    /// [`ResilientAlbum::recover_stalled_rekey`]; checked before anything
    /// reaches the escrow.
    ///
    /// # Errors
    /// As [`ResilientAlbum::recover_stalled_rekey`], with nothing changed.
    pub fn stalled_rekey_recoverable(
        &self,
        owner: UserId,
        now: Timestamp,
        stall: core::time::Duration,
    ) -> Result<RekeyMarker> {
        self.ensure_not_quarantined()?;
        let stalled = self.stalled_rekey(now, stall).ok_or(ResilienceError::NotStalled)?;
        if !self.album.context().metadata.is_admin(&owner) {
            return Err(MlsError::Unauthorized("only owners recover a stalled re-key").into());
        }
        Ok(stalled)
    }

    /// The application supplies a fresh KeyPackage for a device that may not
    /// answer the re-key in time.
    pub fn provide_rekey_key_package(&mut self, member: Member, key_package: Vec<u8>) {
        if let Some(j) = &mut self.rekey {
            j.key_packages.retain(|(id, _)| *id != member);
            j.key_packages.push((member, key_package));
        }
    }

    /// This device's re-key journal, if it runs one.
    #[must_use]
    pub const fn rekey_journal(&self) -> Option<&RekeyJournal> {
        self.rekey.as_ref()
    }

    /// Re-keys this device completed.
    #[must_use]
    pub fn completed_rekeys(&self) -> &[RekeyId] {
        &self.completed_rekeys
    }

    /// A member answers a marker it has not answered; the admin's journal
    /// advances ([`rekey::advance`]).
    fn advance_rekey(&mut self, now: Timestamp) {
        let marker = self.album.context().rekey;
        // A marker gone from the group context is a re-key finished (any admin's);
        // the first look at the album starts the count too.
        let finished = self.marker_seen.is_some() && marker.is_none();
        if finished || self.last_rekey.is_none() {
            self.last_rekey = Some(now);
        }
        self.marker_seen = match (marker, self.marker_seen) {
            (Some(m), Some((seen, since))) if seen == m.id => Some((seen, since)),
            (Some(m), _) => Some((m.id, now)),
            (None, _) => None,
        };
        let own = self.rekey.as_ref().map(|j| j.marker);
        if let Some(m) = marker
            && own != Some(m)
            && !self.answered_rekeys.contains(&m.id)
        {
            self.answered_rekeys.push(m.id);
            self.propose(Change::SelfUpdate);
        }
        let Some(journal) = self.rekey.take() else { return };
        let seen = Seen { marker, fingerprints: self.album.leaf_fingerprints(), intents: &self.intents };
        match rekey::advance(journal, &seen, now) {
            rekey::Advanced::Running(journal, changes) => {
                self.rekey = Some(journal);
                for change in changes {
                    self.propose(change);
                }
            }
            rekey::Advanced::Completed(id) => self.completed_rekeys.push(id),
            rekey::Advanced::Yielded => {}
        }
    }
}
