//! Membership changes as durable intents, the retry schedule as data, and an
//! intent's life: staged as a commit, sent, confirmed, superseded, surfaced,
//! failed (refused) or cancelled.

use core::time::Duration;

use capsule_amk::AmkError;
pub use capsule_mls::Change;
use capsule_mls::{Applied, CommitHash, Epoch, MlsError, OpenMlsProvider};
use serde::{Deserialize, Serialize};

use crate::{Action, ChainError, Context, Event, ResilientAlbum, Result, Submission, SubmitAnswer};

use crate::Timestamp;

/// Identifies one intent for its whole life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IntentId(pub u64);

/// Where an intent is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IntentState {
    /// Waiting to be committed (new, or re-proposed after another commit won its epoch).
    Pending,
    /// Its commit ([`capsule_mls::Album::pending`], the only record of it) is
    /// staged and durable locally, and is to be sent: for the first time
    /// (`retries` 0) or again after a silence.
    Staged {
        /// Re-submissions before this one.
        retries: u32,
    },
    /// Its commit went to the server; not yet seen in the chain.
    Submitted {
        /// Re-submissions so far.
        retries: u32,
        /// When to look for it in the chain next.
        next_check: Timestamp,
    },
    /// In the chain and merged (or already in effect through another commit).
    Confirmed {
        /// The epoch reached.
        epoch: Epoch,
    },
    /// The retry budget ran out: "couldn't sync — will retry when connectivity
    /// returns". Its commit is kept and retried on [`crate::ResilientAlbum::connectivity_restored`].
    Surfaced {
        /// Why.
        reason: String,
    },
    /// The MLS layer refused to commit the change on this album (an
    /// unauthorized change, a KeyPackage that does not verify, a rule it
    /// breaks). Final: retrying would be refused again; later changes go on.
    Failed {
        /// What kind of refusal, for the application to act on.
        refusal: Refusal,
        /// The refusal as the MLS layer worded it, to show.
        reason: String,
    },
    /// The application cancelled the change before it was committed.
    Cancelled,
}

/// Why the MLS layer refused to commit a change: what the application can do
/// about it differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Refusal {
    /// This device's user may not make the change (not an admin, or a device
    /// of another user).
    Unauthorized,
    /// A KeyPackage or identity that does not verify (expired or unbound
    /// certificate, unknown identity key, malformed, another suite): fetch a
    /// fresh one from the device directory and propose again.
    BadKeyPackage,
    /// The change breaks an album rule (removing one's own user, a re-key step
    /// out of turn, …).
    Rule,
    /// This device is no longer a member of the album.
    Evicted,
    /// This device's own certificate is not valid now: renew it (a new
    /// certificate for the same device key), then propose the change again.
    RenewCertificate,
    /// The device to add belongs to a user entitled to AMK versions this
    /// device was itself withheld (it joined later under a capped policy):
    /// a member who holds them (another device of that user) adds it instead.
    HistoryNotHeld,
    /// The trust store does not hold the identity key of the user the
    /// KeyPackage names yet: learn it (the identity directory), then propose
    /// the change again.
    UnknownIdentity,
    /// The chain refused the commit before ordering it (see
    /// [`crate::Refused`]): it was dropped and nothing was merged. An honest
    /// device's commit never is; report it.
    ChainRefused,
}

impl Refusal {
    fn of(e: &MlsError) -> Self {
        match e {
            MlsError::Unauthorized(_) => Self::Unauthorized,
            MlsError::Malformed(_)
            | MlsError::Identity(_)
            | MlsError::ForeignCredential
            | MlsError::LeafKeyMismatch
            | MlsError::BadSignature => Self::BadKeyPackage,
            MlsError::Evicted => Self::Evicted,
            MlsError::OwnCertificate(_) => Self::RenewCertificate,
            MlsError::Amk(AmkError::NotHeld(_)) => Self::HistoryNotHeld,
            MlsError::UnknownIdentity { .. } => Self::UnknownIdentity,
            _ => Self::Rule,
        }
    }
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

    /// The wait after a submission that is `retries` re-submissions in (0: the first).
    #[must_use]
    pub fn wait_after(&self, retries: u32) -> Duration {
        if retries == 0 { self.detection_timeout } else { self.delay_after(retries) }
    }

    /// The longest wait the schedule ever asks for: a stored deadline further
    /// away than this from now was set by a clock that has since jumped back.
    #[must_use]
    pub fn longest_wait(&self) -> Duration {
        self.backoff.iter().copied().fold(self.detection_timeout, Duration::max)
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
            | (Change::UpgradeAlbum { .. }, MlsError::AlreadyInEffect(_))
    )
}

impl ResilientAlbum {
    /// Records a membership change to make. [`ResilientAlbum::poll_action`]
    /// stages it as a commit once nothing else is in flight.
    pub fn propose(&mut self, change: Change) -> IntentId {
        let id = IntentId(self.next_intent);
        self.next_intent += 1;
        self.intents.push(Intent { id, change, state: IntentState::Pending, reproposals: 0 });
        id
    }

    /// The intent whose commit is in flight (staged, submitted or surfaced):
    /// MLS allows one pending commit, so there is at most one.
    pub(crate) fn in_flight(&self) -> Option<&Intent> {
        self.intents.iter().find(|i| {
            matches!(i.state, IntentState::Staged { .. } | IntentState::Submitted { .. } | IntentState::Surfaced { .. })
        })
    }

    pub(crate) fn intent_mut(&mut self, id: IntentId) -> Option<&mut Intent> {
        self.intents.iter_mut().find(|i| i.id == id)
    }

    /// Moves an intent, and says so in the events.
    pub(crate) fn set_state(&mut self, id: IntentId, state: IntentState, now: Timestamp) {
        let event = match &state {
            IntentState::Confirmed { epoch } => Some(Event::Confirmed { intent: id, epoch: *epoch }),
            IntentState::Surfaced { .. } => Some(Event::Surfaced { intent: id, at: now }),
            IntentState::Failed { refusal, .. } => Some(Event::Failed { intent: id, refusal: *refusal }),
            IntentState::Submitted { retries, .. } => Some(Event::Submitted { intent: id, retry: *retries, at: now }),
            IntentState::Pending | IntentState::Staged { .. } | IntentState::Cancelled => None,
        };
        if let Some(intent) = self.intent_mut(id) {
            intent.state = state;
            self.events.extend(event);
        }
    }

    /// Stages the oldest pending intent when nothing is in flight. A change the
    /// MLS layer finds already in effect is confirmed; one it refuses is surfaced.
    pub(crate) fn stage_next<P: OpenMlsProvider>(&mut self, cx: Context<'_, P>, now: Timestamp) -> Result<()> {
        // Each pass settles one pending intent (staged, already in effect, or
        // refused), so this ends; it stops at the first that has a commit.
        while self.in_flight().is_none() {
            let Some(intent) = self.intents.iter().find(|i| i.state == IntentState::Pending).cloned() else {
                return Ok(());
            };
            let state = match self.album.stage(cx.provider, cx.device, &intent.change, cx.validation) {
                Ok(_) => IntentState::Staged { retries: 0 },
                // Already in effect (another device made it, or the re-key it belongs to moved on).
                Err(e) if already_done(&intent.change, &e) => IntentState::Confirmed { epoch: self.album.epoch() },
                // A bug or a storage fault is not a refusal: nothing is recorded, the caller sees it.
                Err(e) if e.is_internal() => return Err(e.into()),
                // Refused: final for this change, and the queue moves on.
                Err(e) => IntentState::Failed { refusal: Refusal::of(&e), reason: e.to_string() },
            };
            self.set_state(intent.id, state, now);
        }
        Ok(())
    }

    /// The send a staged intent is waiting for.
    pub(crate) fn due_submission(&self) -> Option<Action> {
        let intent = self.in_flight()?;
        let IntentState::Staged { .. } = intent.state else { return None };
        let out = self.album.pending()?;
        Some(Action::Submit(Submission::from(out)))
    }

    /// The server's answer to a submission. A stale answer (for a commit no
    /// longer waiting to be sent) changes nothing.
    pub(crate) fn handle_submitted<P: OpenMlsProvider>(
        &mut self,
        cx: Context<'_, P>,
        commit_hash: CommitHash,
        result: Result<SubmitAnswer, ChainError>,
        now: Timestamp,
    ) -> Result<()> {
        let Some(intent) = self.in_flight() else { return Ok(()) };
        let (id, IntentState::Staged { retries }) = (intent.id, intent.state.clone()) else {
            return Ok(());
        };
        let Some(epoch) = self.album.pending().filter(|p| p.commit_hash == commit_hash).map(|p| p.epoch) else {
            return Ok(());
        };
        let next_check = now.after(self.policy.wait_after(retries));
        self.set_state(id, IntentState::Submitted { retries, next_check }, now);
        match result {
            Ok(SubmitAnswer::Accepted { epoch: at }) if at == epoch => {
                let applied = self.album.confirm(cx.provider)?;
                self.set_state(id, IntentState::Confirmed { epoch: applied.epoch }, now);
                self.events.push(Event::Applied(Box::new(applied)));
            }
            // Lost the race (or the server moved on): catch up; the change is re-proposed.
            Ok(SubmitAnswer::Accepted { .. } | SubmitAnswer::Conflict { .. }) => self.fetch_due = true,
            // Refused before ordering: it will never be in the chain, so the
            // pending commit goes and the change ends, with the reason.
            Err(ChainError::Refused(refused)) => {
                self.album.reject(cx.provider)?;
                let reason = format!("the chain refused the commit: {refused}");
                self.set_state(id, IntentState::Failed { refusal: Refusal::ChainRefused, reason }, now);
            }
            // No answer (or none usable): the detection timeout decides.
            Err(_) => {}
        }
        Ok(())
    }

    /// A submitted commit whose check is due, looked for in the chain and not
    /// found there: send it again, or surface it when the budget is spent.
    pub(crate) fn follow_schedule(&mut self, now: Timestamp) {
        let Some(intent) = self.in_flight() else { return };
        let (id, IntentState::Submitted { retries, next_check }) = (intent.id, intent.state.clone()) else {
            return;
        };
        if now < next_check || self.quarantine.is_some() {
            return;
        }
        let state = if retries >= self.policy.budget {
            IntentState::Surfaced { reason: "couldn't sync — will retry when connectivity returns".into() }
        } else {
            // The same commit again: if the first one landed, the chain answers with its position.
            IntentState::Staged { retries: retries + 1 }
        };
        self.set_state(id, state, now);
    }

    /// A stored deadline further away than the schedule allows was set before
    /// the clock jumped back (a reset phone clock): the schedule restarts now.
    pub(crate) fn reanchor(&mut self, now: Timestamp) {
        let limit = now.after(self.policy.longest_wait());
        let policy = self.policy.clone();
        for intent in &mut self.intents {
            if let IntentState::Submitted { retries, next_check, .. } = &mut intent.state
                && *next_check > limit
            {
                *next_check = now.after(policy.wait_after(*retries));
            }
        }
        if let Some(journal) = &mut self.rekey {
            journal.reanchor(now);
        }
    }

    /// After a chain commit was applied: the in-flight intent is confirmed (it
    /// was ours) or superseded (another commit won its epoch: re-proposed).
    pub(crate) fn settle_in_flight(&mut self, own: bool, applied: &Applied) {
        let Some(id) = self.in_flight().map(|i| i.id) else { return };
        if own {
            if let Some(intent) = self.intent_mut(id) {
                intent.state = IntentState::Confirmed { epoch: applied.epoch };
                self.events.push(Event::Confirmed { intent: id, epoch: applied.epoch });
            }
        } else if applied.superseded.is_some()
            && let Some(intent) = self.intent_mut(id)
        {
            intent.state = IntentState::Pending;
            intent.reproposals += 1;
            self.events.push(Event::Superseded { intent: id });
        }
    }

    /// The application cancels a change that is not committed yet (pending), or
    /// clears a failed one from the list of what it shows. A change whose commit
    /// exists cannot be cancelled: it may already be in the chain, and the
    /// chain decides (it is confirmed or superseded when the device next syncs).
    ///
    /// # Errors
    /// [`crate::ResilienceError::UnknownIntent`]; [`crate::ResilienceError::InFlight`]
    /// for a change whose commit exists (nothing changes).
    pub fn cancel(&mut self, id: IntentId) -> Result<()> {
        let intent = self.intent_mut(id).ok_or(crate::ResilienceError::UnknownIntent)?;
        match intent.state {
            IntentState::Pending | IntentState::Failed { .. } | IntentState::Cancelled => {
                intent.state = IntentState::Cancelled;
                Ok(())
            }
            IntentState::Confirmed { .. } => Ok(()),
            IntentState::Staged { .. } | IntentState::Submitted { .. } | IntentState::Surfaced { .. } => {
                Err(crate::ResilienceError::InFlight)
            }
        }
    }

    /// The application reports connectivity again: surfaced changes are looked
    /// for in the chain at once and re-sent with a fresh budget.
    pub fn connectivity_restored(&mut self, now: Timestamp) {
        if self.album.pending().is_none() {
            return;
        }
        for intent in &mut self.intents {
            if matches!(intent.state, IntentState::Surfaced { .. }) {
                intent.state = IntentState::Submitted { retries: 0, next_check: now };
            }
        }
    }
}
