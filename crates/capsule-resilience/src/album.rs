//! An album with recovery: intents, the retry schedule, reconciliation against
//! the authoritative chain, and quarantine.

use capsule_identity::{DeviceId, UserId};
use capsule_mls::{
    Album, Applied, CommitHash, DeviceIdentity, MlsError, OpenMlsProvider, Outgoing, RekeyReason, Validation,
};

use crate::rekey::{AmkEscrow, RekeyJournal, RekeyStep};
use serde::{Deserialize, Serialize};

use crate::{
    ChainError, Change, Clock, CommitChain, Instant, Intent, IntentId, IntentState, ResilienceError, Result,
    RetryPolicy, Submission, SubmitAnswer,
};

/// What [`ResilientAlbum::reconcile_with_server`] found. The rule that picks one
/// is on the crate root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReconcileOutcome {
    /// Nothing to do: this device is at the chain's head, on the chain.
    UpToDate,
    /// Replayed every commit the device missed, in order.
    Reconciled {
        /// The commits applied.
        applied_commits: Vec<CommitHash>,
    },
    /// Local state is ahead of or beside the chain: quarantined until the user acts.
    Diverged {
        /// This device's epoch.
        local_epoch: u64,
        /// The chain's head.
        server_epoch: u64,
    },
    /// The device cannot catch up (it was removed, or the chain no longer reaches
    /// its epoch): it must be re-bootstrapped (removed and re-added).
    Unrecoverable,
}

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
        local_epoch: u64,
        /// The chain's head when detected.
        server_epoch: u64,
    },
    /// This device was removed or cannot catch up: re-bootstrap it.
    NeedsRebootstrap,
    /// A full re-key is in progress: writes are quiesced until it completes.
    Rekeying {
        /// The re-key's id.
        id: u64,
    },
}

/// Something [`ResilientAlbum::drive`] did, for the application and for tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An intent's commit was submitted (`retry` 0) or re-submitted.
    Submitted {
        /// The intent.
        intent: IntentId,
        /// 0 for the first submission.
        retry: u32,
        /// When.
        at: Instant,
    },
    /// An intent's commit is in the chain and merged.
    Confirmed {
        /// The intent.
        intent: IntentId,
        /// The epoch reached.
        epoch: u64,
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
        at: Instant,
    },
    /// A commit from the chain was applied.
    Applied(Box<Applied>),
}

/// Where a detected divergence stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    /// This device's epoch.
    pub local_epoch: u64,
    /// The chain's head.
    pub server_epoch: u64,
}

/// An [`Album`] whose membership changes survive lost commits, lost races and
/// drift, with the server's chain as the source of truth.
#[derive(Debug)]
pub struct ResilientAlbum {
    album: Album,
    intents: Vec<Intent>,
    next_intent: u64,
    policy: RetryPolicy,
    quarantine: Option<Divergence>,
    unrecoverable: bool,
    rekey: Option<RekeyJournal>,
    completed_rekeys: Vec<u64>,
    answered_rekeys: Vec<u64>,
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
    rekey: Option<RekeyJournal>,
    completed_rekeys: Vec<u64>,
    answered_rekeys: Vec<u64>,
}

/// Format version of [`ResilienceRecord`].
const RECORD_FORMAT: u8 = 1;

/// Everything a drive or reconcile step needs from the device.
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

/// Whether a refusal to stage `change` means it is already in effect.
fn already_done(change: &Change, e: &MlsError) -> bool {
    matches!(
        (change, e),
        (Change::AddUser { .. } | Change::AddDevice { .. }, MlsError::AlreadyMember(..))
            | (
                Change::RemoveUser { .. } | Change::RemoveDevice { .. } | Change::ReAddDevice { .. },
                MlsError::NotMember(_)
            )
            | (Change::BeginRekey { .. } | Change::FinishRekey { .. }, MlsError::RekeyState(_))
    )
}

fn submission(out: &Outgoing) -> Submission {
    Submission {
        epoch: out.epoch,
        commit: out.commit.clone(),
        welcome: out.welcome.clone(),
        bundle: out.bundle.clone(),
    }
}

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
            rekey: None,
            completed_rekeys: Vec::new(),
            answered_rekeys: Vec::new(),
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
            rekey: self.rekey.clone(),
            completed_rekeys: self.completed_rekeys.clone(),
            answered_rekeys: self.answered_rekeys.clone(),
        };
        capsule_identity::encoding::encode(&record).map_err(|_| ResilienceError::Record("resilience record"))
    }

    /// Rebuilds from a loaded album and the record [`ResilientAlbum::to_record`] wrote.
    ///
    /// # Errors
    /// [`ResilienceError::Record`] for a record that does not decode.
    pub fn from_record(album: Album, record: &[u8], policy: RetryPolicy) -> Result<Self> {
        let r: ResilienceRecord = capsule_identity::encoding::decode_canonical(record)
            .map_err(|_| ResilienceError::Record("resilience record"))?;
        if r.format != RECORD_FORMAT {
            return Err(ResilienceError::Record("resilience record format"));
        }
        Ok(Self {
            album,
            intents: r.intents,
            next_intent: r.next_intent,
            policy,
            quarantine: r.quarantine,
            unrecoverable: r.unrecoverable,
            rekey: r.rekey,
            completed_rekeys: r.completed_rekeys,
            answered_rekeys: r.answered_rekeys,
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

    /// Records a membership change to make. It is committed by [`ResilientAlbum::drive`].
    pub fn propose(&mut self, change: Change) -> IntentId {
        let id = IntentId(self.next_intent);
        self.next_intent += 1;
        self.intents.push(Intent { id, change, state: IntentState::Pending, reproposals: 0 });
        id
    }

    fn ensure_not_quarantined(&self) -> Result<()> {
        match self.quarantine {
            Some(d) => Err(ResilienceError::Quarantined { local_epoch: d.local_epoch, server_epoch: d.server_epoch }),
            None => Ok(()),
        }
    }

    fn in_flight(&self) -> Option<usize> {
        self.intents.iter().position(|i| {
            matches!(i.state, IntentState::Staged { .. } | IntentState::Submitted { .. } | IntentState::Surfaced { .. })
        })
    }

    fn set_state(&mut self, index: usize, state: IntentState) {
        if let Some(intent) = self.intents.get_mut(index) {
            intent.state = state;
        }
    }

    /// Makes progress: commits the next pending change, submits it, looks for a
    /// submitted commit in the chain when its check is due, re-submits it on the
    /// configured backoff and surfaces it when the budget is spent. Never sleeps:
    /// call it again when the clock reaches [`ResilientAlbum::next_deadline`].
    ///
    /// # Errors
    /// [`ResilienceError::Quarantined`] while quarantined; MLS errors other than
    /// the refusals that settle an intent.
    pub fn drive<P: OpenMlsProvider>(
        &mut self,
        cx: Context<'_, P>,
        chain: &mut impl CommitChain,
        clock: &impl Clock,
    ) -> Result<Vec<Event>> {
        let mut events = self.exchange(cx, chain, clock)?;
        events.extend(self.prepare(cx, clock)?);
        events.extend(self.exchange(cx, chain, clock)?);
        Ok(events)
    }

    /// The local half of [`ResilientAlbum::drive`]: advances a re-key and stages
    /// the next pending change as a commit, without sending anything.
    ///
    /// A durable caller commits this step before [`ResilientAlbum::exchange`]: a
    /// commit must never reach the server while the pending state that lets this
    /// device recognise it could still be rolled back.
    ///
    /// # Errors
    /// [`ResilienceError::Quarantined`]; MLS errors.
    pub fn prepare<P: OpenMlsProvider>(&mut self, cx: Context<'_, P>, clock: &impl Clock) -> Result<Vec<Event>> {
        self.ensure_not_quarantined()?;
        let mut events = Vec::new();
        if self.album.is_evicted() {
            return Ok(events);
        }
        self.advance_rekey(clock.now());
        // Only one commit can be pending in MLS: start the next intent when none is in flight.
        if self.in_flight().is_none()
            && let Some(index) = self.intents.iter().position(|i| i.state == IntentState::Pending)
        {
            self.start(cx, clock.now(), index, &mut events)?;
        }
        Ok(events)
    }

    /// The network half of [`ResilientAlbum::drive`]: sends a staged commit,
    /// looks for a submitted one in the chain when its check is due, re-submits
    /// on the backoff and surfaces when the budget is spent.
    ///
    /// # Errors
    /// [`ResilienceError::Quarantined`]; MLS errors.
    pub fn exchange<P: OpenMlsProvider>(
        &mut self,
        cx: Context<'_, P>,
        chain: &mut impl CommitChain,
        clock: &impl Clock,
    ) -> Result<Vec<Event>> {
        self.ensure_not_quarantined()?;
        let mut events = Vec::new();
        let Some(index) = self.in_flight() else { return Ok(events) };
        let now = clock.now();
        if matches!(self.intents.get(index).map(|i| &i.state), Some(IntentState::Staged { .. })) {
            let Some(out) = self.album.pending().cloned() else { return Ok(events) };
            let id = self.intents.get(index).map_or(IntentId(0), |i| i.id);
            self.set_state(
                index,
                IntentState::Submitted {
                    epoch: out.epoch,
                    commit_hash: out.commit_hash,
                    retries: 0,
                    next_check: now.after(self.policy.detection_timeout),
                },
            );
            events.push(Event::Submitted { intent: id, retry: 0, at: now });
            self.submit(cx, chain, &out, index, &mut events)?;
        } else {
            self.check_in_flight(cx, chain, now, index, &mut events)?;
        }
        Ok(events)
    }

    /// When [`ResilientAlbum::drive`] next has something to do, if anything.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.intents
            .iter()
            .filter_map(|i| match i.state {
                IntentState::Submitted { next_check, .. } => Some(next_check),
                // Staged and not yet sent: due at once.
                IntentState::Staged { .. } => Some(Instant(0)),
                _ => None,
            })
            .min()
    }

    /// The application reports connectivity again: surfaced changes are retried
    /// at the next [`ResilientAlbum::drive`], with a fresh budget.
    pub fn connectivity_restored(&mut self, now: Instant) {
        let Some(pending) = self.album.pending().cloned() else {
            return;
        };
        for intent in &mut self.intents {
            if matches!(intent.state, IntentState::Surfaced { .. }) {
                intent.state = IntentState::Submitted {
                    epoch: pending.epoch,
                    commit_hash: pending.commit_hash,
                    retries: 0,
                    next_check: now,
                };
            }
        }
    }

    /// Stages the intent's ceremony and submits it.
    fn start<P: OpenMlsProvider>(
        &mut self,
        cx: Context<'_, P>,
        now: Instant,
        index: usize,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let Some(intent) = self.intents.get(index).cloned() else {
            return Ok(());
        };
        let (p, me, v) = (cx.provider, cx.device, cx.validation);
        let staged = match &intent.change {
            Change::AddUser { user, directory } => self.album.add_user(p, me, *user, directory, v),
            Change::AddDevice { key_package } => self.album.add_device(p, me, key_package, v),
            Change::RemoveUser { user } => self.album.remove_user(p, me, *user),
            Change::RemoveDevice { device } => self.album.remove_device(p, me, *device),
            Change::RotateAmk => self.album.rotate_amk(p, me),
            Change::SelfUpdate => self.album.self_update(p, me),
            Change::BeginRekey { marker } => self.album.begin_rekey(p, me, *marker),
            Change::FinishRekey { id } => self.album.finish_rekey(p, me, *id),
            Change::ReAddDevice { key_package } => self.album.readd_device(p, me, key_package, v),
        };
        let out = match staged {
            Ok(out) => out,
            // The change is already in effect (another device made it, or the
            // re-key it belongs to has moved on): done.
            Err(e) if already_done(&intent.change, &e) => {
                let epoch = self.album.epoch();
                self.set_state(index, IntentState::Confirmed { epoch });
                events.push(Event::Confirmed { intent: intent.id, epoch });
                return Ok(());
            }
            Err(e) => {
                self.set_state(index, IntentState::Surfaced { reason: e.to_string() });
                events.push(Event::Surfaced { intent: intent.id, at: now });
                return Ok(());
            }
        };
        self.set_state(index, IntentState::Staged { epoch: out.epoch, commit_hash: out.commit_hash });
        Ok(())
    }

    /// Sends the pending commit and acts on the answer.
    fn submit<P: OpenMlsProvider>(
        &mut self,
        cx: Context<'_, P>,
        chain: &mut impl CommitChain,
        out: &Outgoing,
        index: usize,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        match chain.submit(&submission(out)) {
            Ok(SubmitAnswer::Accepted { epoch }) if epoch == out.epoch => {
                let applied = self.album.confirm(cx.provider)?;
                self.confirmed(index, applied, events);
                Ok(())
            }
            // Lost the race (or the server moved on): catch up; the change is re-proposed.
            Ok(SubmitAnswer::Accepted { .. } | SubmitAnswer::Conflict { .. }) => {
                self.reconcile_inner(cx, chain, events).map(|_| ())
            }
            // No answer: the detection timeout decides.
            Err(ChainError::Unavailable) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn confirmed(&mut self, index: usize, applied: Applied, events: &mut Vec<Event>) {
        if let Some(intent) = self.intents.get_mut(index) {
            intent.state = IntentState::Confirmed { epoch: applied.epoch };
            events.push(Event::Confirmed { intent: intent.id, epoch: applied.epoch });
        }
        events.push(Event::Applied(Box::new(applied)));
    }

    /// A submitted commit's check is due: is it in the chain?
    fn check_in_flight<P: OpenMlsProvider>(
        &mut self,
        cx: Context<'_, P>,
        chain: &mut impl CommitChain,
        now: Instant,
        index: usize,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let Some(IntentState::Submitted { retries, next_check, .. }) = self.intents.get(index).map(|i| i.state.clone())
        else {
            return Ok(());
        };
        if now < next_check {
            return Ok(());
        }
        // Whatever the chain holds at our epoch settles it: ours (confirm), another (superseded).
        match self.reconcile_inner(cx, chain, events) {
            // Unreachable chain: as good as "not seen"; the schedule goes on.
            Ok(_) | Err(ResilienceError::Chain(ChainError::Unavailable)) => {}
            Err(e) => return Err(e),
        }
        if self.quarantine.is_some() || !self.is_in_flight(index) {
            return Ok(());
        }
        let id = self.intents.get(index).map(|i| i.id).unwrap_or(IntentId(0));
        if retries >= self.policy.budget {
            self.set_state(
                index,
                IntentState::Surfaced { reason: "couldn't sync — will retry when connectivity returns".into() },
            );
            events.push(Event::Surfaced { intent: id, at: now });
            return Ok(());
        }
        let Some(out) = self.album.pending().cloned() else {
            return Ok(());
        };
        let retry = retries + 1;
        self.set_state(
            index,
            IntentState::Submitted {
                epoch: out.epoch,
                commit_hash: out.commit_hash,
                retries: retry,
                next_check: now.after(self.policy.delay_after(retry)),
            },
        );
        events.push(Event::Submitted { intent: id, retry, at: now });
        // The same commit again: if the first one landed, the chain answers with its position.
        self.submit(cx, chain, &out, index, events)
    }

    fn is_in_flight(&self, index: usize) -> bool {
        self.intents.get(index).is_some_and(|i| matches!(i.state, IntentState::Submitted { .. }))
    }

    /// Brings the album to the chain's head: the single recovery entry point.
    ///
    /// # Errors
    /// [`ResilienceError::Chain`] when the chain does not answer; MLS storage errors.
    pub fn reconcile_with_server<P: OpenMlsProvider>(
        &mut self,
        cx: Context<'_, P>,
        chain: &mut impl CommitChain,
    ) -> Result<ReconcileOutcome> {
        let mut events = Vec::new();
        self.reconcile_inner(cx, chain, &mut events)
    }

    fn diverged(&mut self, local_epoch: u64, server_epoch: u64) -> ReconcileOutcome {
        tracing::warn!(local_epoch, server_epoch, "album diverged from the chain: quarantined");
        self.quarantine = Some(Divergence { local_epoch, server_epoch });
        ReconcileOutcome::Diverged { local_epoch, server_epoch }
    }

    fn reconcile_inner<P: OpenMlsProvider>(
        &mut self,
        cx: Context<'_, P>,
        chain: &mut impl CommitChain,
        events: &mut Vec<Event>,
    ) -> Result<ReconcileOutcome> {
        if let Some(d) = self.quarantine {
            return Ok(ReconcileOutcome::Diverged { local_epoch: d.local_epoch, server_epoch: d.server_epoch });
        }
        if self.unrecoverable || self.album.is_evicted() {
            return Ok(ReconcileOutcome::Unrecoverable);
        }
        let head = chain.head()?;
        let local = self.album.epoch();
        if head < local {
            return Ok(self.diverged(local, head));
        }
        // The commit this device applied last must be the chain's at `local - 1`.
        let from = match (self.album.last_applied(), local.checked_sub(1)) {
            (Some(_), Some(previous)) => previous,
            _ => local,
        };
        let entries = match chain.fetch(from) {
            Ok(entries) => entries,
            Err(ChainError::Pruned(_)) => {
                self.unrecoverable = true;
                return Ok(ReconcileOutcome::Unrecoverable);
            }
            Err(e) => return Err(e.into()),
        };
        let mut entries = entries.into_iter().peekable();
        if from < local {
            match entries.next() {
                Some(e) if e.epoch == from && Some(e.commit_hash) == self.album.last_applied() => {}
                _ => return Ok(self.diverged(local, head)),
            }
        }
        let mut applied_commits = Vec::new();
        for entry in entries {
            if entry.epoch != self.album.epoch() {
                return Ok(self.diverged(self.album.epoch(), head));
            }
            let own = self.album.pending().is_some_and(|p| p.commit_hash == entry.commit_hash);
            match self.album.process(cx.provider, &entry.commit, cx.validation) {
                Ok(applied) => {
                    applied_commits.push(entry.commit_hash);
                    self.settle_in_flight(own, &applied, events);
                    let evicted = applied.evicted;
                    events.push(Event::Applied(Box::new(applied)));
                    if evicted {
                        self.unrecoverable = true;
                        return Ok(ReconcileOutcome::Unrecoverable);
                    }
                }
                Err(MlsError::Evicted) => {
                    self.unrecoverable = true;
                    return Ok(ReconcileOutcome::Unrecoverable);
                }
                // The chain holds a commit this device cannot apply: its state is not
                // the chain's. Quarantine, and keep everything for investigation.
                Err(e) => {
                    tracing::warn!(error = %e, epoch = entry.epoch, "chain commit refused");
                    return Ok(self.diverged(self.album.epoch(), head));
                }
            }
        }
        if applied_commits.is_empty() {
            Ok(ReconcileOutcome::UpToDate)
        } else {
            Ok(ReconcileOutcome::Reconciled { applied_commits })
        }
    }

    /// After applying a chain commit: the in-flight intent is confirmed (it was
    /// ours) or superseded (someone else won its epoch; re-proposed next drive).
    fn settle_in_flight(&mut self, own: bool, applied: &Applied, events: &mut Vec<Event>) {
        let Some(index) = self.in_flight() else {
            return;
        };
        if own {
            if let Some(intent) = self.intents.get_mut(index) {
                intent.state = IntentState::Confirmed { epoch: applied.epoch };
                events.push(Event::Confirmed { intent: intent.id, epoch: applied.epoch });
            }
        } else if applied.superseded.is_some()
            && let Some(intent) = self.intents.get_mut(index)
        {
            intent.state = IntentState::Pending;
            intent.reproposals += 1;
            events.push(Event::Superseded { intent: intent.id });
        }
    }
}

impl ResilientAlbum {
    /// Starts (or, for an id already running, resumes) a full re-key of the album;
    /// see the `rekey` module. A completed id is a no-op. The album's AMK lineage
    /// goes to `escrow` before anything changes. Progress happens in
    /// [`ResilientAlbum::drive`]; stragglers are re-added after `budget`.
    ///
    /// # Errors
    /// [`ResilienceError::RekeyInProgress`] while another re-key of this device
    /// runs; [`ResilienceError::Escrow`] if the lineage cannot be deposited;
    /// [`ResilienceError::Quarantined`].
    pub fn rekey_group(
        &mut self,
        id: u64,
        reason: RekeyReason,
        now: Instant,
        budget: core::time::Duration,
        escrow: &mut dyn AmkEscrow,
    ) -> Result<()> {
        self.ensure_not_quarantined()?;
        if self.completed_rekeys.contains(&id) {
            return Ok(());
        }
        match &self.rekey {
            Some(j) if j.marker.id == id => return Ok(()),
            Some(j) => return Err(ResilienceError::RekeyInProgress(j.marker.id)),
            None => {}
        }
        escrow.deposit(self.album.id(), self.album.keyring()).map_err(ResilienceError::Escrow)?;
        let journal = RekeyJournal::new(id, reason, self.album.leaf_fingerprints(), now.after(budget));
        self.propose(Change::BeginRekey { marker: journal.marker });
        self.rekey = Some(journal);
        Ok(())
    }

    /// The application supplies a fresh KeyPackage for a device that may not
    /// answer the re-key in time.
    pub fn provide_rekey_key_package(&mut self, user: UserId, device: DeviceId, key_package: Vec<u8>) {
        if let Some(j) = &mut self.rekey {
            j.key_packages.retain(|(id, _)| *id != (user, device));
            j.key_packages.push(((user, device), key_package));
        }
    }

    /// This device's re-key journal, if it runs one.
    #[must_use]
    pub const fn rekey_journal(&self) -> Option<&RekeyJournal> {
        self.rekey.as_ref()
    }

    /// Re-keys this device completed.
    #[must_use]
    pub fn completed_rekeys(&self) -> &[u64] {
        &self.completed_rekeys
    }

    /// Moves the re-key forward from what the group state shows: a member
    /// answers a marker it has not answered; the admin's journal advances.
    fn advance_rekey(&mut self, now: Instant) {
        let marker = self.album.context().rekey;
        let own = self.rekey.as_ref().map(|j| j.marker);
        if let Some(m) = marker
            && own != Some(m)
            && !self.answered_rekeys.contains(&m.id)
        {
            self.answered_rekeys.push(m.id);
            self.propose(Change::SelfUpdate);
        }
        let Some(mut journal) = self.rekey.take() else { return };
        let id = journal.marker.id;
        match journal.step {
            RekeyStep::Quiescing if marker == Some(journal.marker) => journal.step = RekeyStep::Collecting,
            RekeyStep::Quiescing
                if self.intents.iter().any(|i| {
                    matches!(i.change, Change::BeginRekey { marker } if marker == journal.marker)
                        && !matches!(i.state, IntentState::Confirmed { .. })
                }) => {}
            RekeyStep::Quiescing => {
                // The marker commit is done but the group shows another marker:
                // another admin's re-key replaced ours before this device looked
                // (the chain moved on past ours). Theirs now, as in `Collecting`;
                // keeping the journal would block every later re-key here.
                tracing::info!(id, "re-key replaced before it was collected");
                return;
            }
            RekeyStep::Collecting | RekeyStep::ReAdding if marker != Some(journal.marker) => {
                // Another admin restarted the ceremony with a new marker: theirs now.
                tracing::info!(id, "re-key taken over by another admin");
                return;
            }
            RekeyStep::Collecting | RekeyStep::ReAdding => {
                let stragglers = journal.stragglers(&self.album.leaf_fingerprints());
                if stragglers.is_empty() {
                    journal.step = RekeyStep::Finishing;
                    self.propose(Change::FinishRekey { id });
                } else if now >= journal.deadline {
                    journal.step = RekeyStep::ReAdding;
                    for change in journal.readds_due(&stragglers) {
                        self.propose(change);
                    }
                }
            }
            RekeyStep::Finishing if marker != Some(journal.marker) => {
                self.completed_rekeys.push(id);
                return;
            }
            RekeyStep::Finishing => {}
        }
        self.rekey = Some(journal);
    }
}
