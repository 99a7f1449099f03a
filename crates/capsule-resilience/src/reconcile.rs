//! `reconcile_with_server`: bring the album to the chain's head, decided from
//! what one fetch of the chain shows (the outcome table is on the crate root).

use capsule_mls::{CommitHash, Epoch, Member, MlsError, OpenMlsProvider};
use serde::{Deserialize, Serialize};

use crate::{
    Answer, BadAnswer, ChainEntry, ChainError, Context, Event, Fetched, ResilienceError, ResilientAlbum, Result,
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
        local_epoch: Epoch,
        /// The chain's head.
        server_epoch: Epoch,
    },
    /// The device cannot catch up (it was removed, or the chain no longer reaches
    /// its epoch): it must be re-bootstrapped (removed and re-added).
    Unrecoverable,
}

/// Where a detected divergence stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    /// This device's epoch.
    pub local_epoch: Epoch,
    /// The chain's head.
    pub server_epoch: Epoch,
    /// The chain's commit this device refused as invalid, when that is what
    /// quarantined it (rather than local state beside the chain).
    pub invalid_commit: Option<InvalidCommit>,
}

/// A well-formed commit in the chain that breaks Capsule's rules (an
/// unauthorized change from a modified client, a certificate that does not
/// verify, an AMK step that skips): reported with who made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidCommit {
    /// The epoch it was committed in.
    pub epoch: Epoch,
    /// Its hash.
    pub commit_hash: CommitHash,
    /// The member it names as committer (unverified: a forged signature
    /// could name anyone), if it names one.
    pub committer: Option<Member>,
}

/// What reconciling needs: the outcome is known without the network, or the
/// chain must be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReconcileStep {
    /// Settled already (quarantined, or re-bootstrap needed).
    Done(ReconcileOutcome),
    /// Run this fetch and hand its answer to [`ResilientAlbum::handle`].
    Fetch(crate::Action),
}

impl ResilientAlbum {
    /// The epoch to read the chain from: the commit that made this device's
    /// epoch (the one it applied last, or the one its Welcome followed) must
    /// be the chain's at `epoch - 1`, so reading starts there.
    pub(crate) fn fetch_from(&self) -> Epoch {
        let local = self.album.epoch();
        if self.album.last_applied().is_none() && self.join_unchecked {
            return local;
        }
        local.previous().unwrap_or(local)
    }

    /// The outcome when no fetch can change it.
    pub(crate) fn settled_outcome(&self) -> Option<ReconcileOutcome> {
        if let Some(d) = &self.quarantine {
            return Some(ReconcileOutcome::Diverged { local_epoch: d.local_epoch, server_epoch: d.server_epoch });
        }
        (self.unrecoverable || self.album.is_evicted()).then_some(ReconcileOutcome::Unrecoverable)
    }

    /// The first half of [`ResilientAlbum::reconcile_with_server`], for callers
    /// that do their own I/O.
    #[must_use]
    pub fn begin_reconcile(&self) -> ReconcileStep {
        match self.settled_outcome() {
            Some(outcome) => ReconcileStep::Done(outcome),
            None => ReconcileStep::Fetch(crate::Action::Fetch { from: self.fetch_from() }),
        }
    }

    /// Applies the answer to a fetch: the outcome; `None` for an answer that
    /// settles nothing (silence, or asked before the album moved); or the
    /// chain's error, for the caller to report (a bad answer is counted and
    /// changes nothing it is wrong about).
    pub(crate) fn apply_fetched<P: OpenMlsProvider>(
        &mut self,
        cx: Context<'_, P>,
        from: Epoch,
        result: Result<Fetched, ChainError>,
    ) -> Result<Result<Option<ReconcileOutcome>, ChainError>> {
        // The fetch was answered, one way or another: a silent or lying chain
        // must not keep the device fetching in a loop. A submitted commit's own
        // check, on the retry schedule, looks again.
        self.fetch_due = false;
        match result {
            Ok(fetched) if from == self.fetch_from() => {
                let reconciled = match fetched.check(from) {
                    Ok(()) => self.reconcile(cx, fetched)?,
                    Err(bad) => Err(bad),
                };
                Ok(match reconciled {
                    Ok(outcome) => Ok(Some(outcome)),
                    Err(bad) => {
                        self.server_faults = self.server_faults.saturating_add(1);
                        tracing::warn!(%bad, faults = self.server_faults, "the chain answered badly");
                        Err(ChainError::BadAnswer(bad))
                    }
                })
            }
            Ok(_) | Err(ChainError::Unavailable) => Ok(Ok(None)),
            // Only the commit before the epoch this device joined in is gone:
            // its Welcome cannot be checked against the chain any more, but
            // everything after is there. Read from its own epoch (the next
            // fetch), rather than re-bootstrap a device that can catch up.
            Err(ChainError::Pruned(base))
                if self.album.last_applied().is_none()
                    && !self.join_unchecked
                    && base == self.album.epoch()
                    && from < base =>
            {
                tracing::warn!(
                    epoch = base.0,
                    "the chain no longer holds the commit this device joined after: unchecked"
                );
                self.join_unchecked = true;
                self.fetch_due = true;
                Ok(Ok(None))
            }
            Err(ChainError::Pruned(_)) => Ok(Ok(Some(self.evicted()))),
            Err(e) => Ok(Err(e)),
        }
    }

    /// The second half of [`ResilientAlbum::reconcile_with_server`], for callers
    /// that do their own I/O: applies the answer to the fetch
    /// [`ResilientAlbum::begin_reconcile`] asked for. Unlike
    /// [`ResilientAlbum::handle`], it leaves the retry schedule alone.
    ///
    /// # Errors
    /// [`ResilienceError::Chain`] when the fetch got no answer, or an answer no
    /// honest chain gives ([`ChainError::BadAnswer`]: counted in
    /// [`ResilientAlbum::server_faults`], no quarantine); MLS errors that are
    /// not refusals.
    pub fn finish_reconcile<P: OpenMlsProvider>(
        &mut self,
        cx: Context<'_, P>,
        answer: Answer,
    ) -> Result<ReconcileOutcome> {
        if let Some(outcome) = self.settled_outcome() {
            return Ok(outcome);
        }
        let Answer::Fetched { from, result } = answer else {
            return Err(ResilienceError::Chain(ChainError::Unavailable));
        };
        match self.apply_fetched(cx, from, result)? {
            Ok(Some(outcome)) => Ok(outcome),
            Ok(None) => Err(ResilienceError::Chain(ChainError::Unavailable)),
            Err(e) => Err(e.into()),
        }
    }

    /// Answers from the chain that no honest chain gives, since this album
    /// record was created: for the application to report.
    #[must_use]
    pub const fn server_faults(&self) -> u64 {
        self.server_faults
    }

    fn diverged(&mut self, local_epoch: Epoch, server_epoch: Epoch) -> ReconcileOutcome {
        self.quarantined(Divergence { local_epoch, server_epoch, invalid_commit: None })
    }

    fn quarantined(&mut self, divergence: Divergence) -> ReconcileOutcome {
        let Divergence { local_epoch, server_epoch, .. } = divergence;
        tracing::warn!(
            local_epoch = local_epoch.0,
            server_epoch = server_epoch.0,
            "album diverged from the chain: quarantined"
        );
        self.quarantine = Some(divergence);
        ReconcileOutcome::Diverged { local_epoch, server_epoch }
    }

    fn evicted(&mut self) -> ReconcileOutcome {
        self.unrecoverable = true;
        ReconcileOutcome::Unrecoverable
    }

    /// Applies what the chain holds from `fetch_from()` on (an answer whose
    /// shape [`Fetched::check`] accepted). A commit that cannot be ours at its
    /// position is the server misbehaving, not a divergence.
    pub(crate) fn reconcile<P: OpenMlsProvider>(
        &mut self,
        cx: Context<'_, P>,
        fetched: Fetched,
    ) -> Result<Result<ReconcileOutcome, BadAnswer>> {
        if let Some(outcome) = self.settled_outcome() {
            return Ok(Ok(outcome));
        }
        let (head, local, from) = (fetched.head, self.album.epoch(), self.fetch_from());
        if head < local {
            return Ok(Ok(self.diverged(local, head)));
        }
        let mut entries = fetched.entries.into_iter().peekable();
        if from < local {
            let made_here = |e: &ChainEntry| match self.album.last_applied() {
                Some(last) => e.commit_hash == last,
                // Joined from a Welcome: the chain's commit must be the one the
                // Welcome followed, or this device is in another history.
                None => self.album.made_this_epoch(&e.commit),
            };
            match entries.next() {
                Some(e) if e.epoch == from && made_here(&e) => {}
                _ => return Ok(Ok(self.diverged(local, head))),
            }
        }
        let mut applied_commits = Vec::new();
        for entry in entries {
            if entry.epoch != self.album.epoch() {
                return Ok(Err(BadAnswer::OutOfOrder));
            }
            let own = self.album.pending().is_some_and(|p| p.commit_hash == entry.commit_hash);
            match self.album.process(cx.provider, &entry.commit, cx.validation) {
                Ok(applied) => {
                    applied_commits.push(entry.commit_hash);
                    self.settle_in_flight(own, &applied);
                    let evicted = applied.evicted;
                    self.events.push(Event::Applied(Box::new(applied)));
                    if evicted {
                        return Ok(Ok(self.evicted()));
                    }
                }
                Err(MlsError::Evicted) => return Ok(Ok(self.evicted())),
                // A bug or a storage fault is not evidence against the chain.
                Err(e) if e.is_internal() => return Err(e.into()),
                // What no honest chain holds at this position: the server's fault.
                Err(MlsError::Malformed(_)) => return Ok(Err(BadAnswer::Undecodable)),
                Err(MlsError::NotMember(_)) => return Ok(Err(BadAnswer::NotOurs)),
                // A commit this device applied already, served again further on.
                Err(MlsError::WrongEpoch { .. } | MlsError::AlreadyApplied) => {
                    return Ok(Err(BadAnswer::WrongPosition));
                }
                // Not a verdict: the trust store does not know the committer's (or
                // an added member's) identity key yet. Nothing is quarantined;
                // the caller retries once the trust store learns it.
                Err(MlsError::UnknownIdentity { user }) => {
                    tracing::info!(
                        epoch = entry.epoch.0,
                        "chain commit cannot be verified yet (an identity key not yet known)"
                    );
                    return Err(ResilienceError::CannotVerifyYet { epoch: entry.epoch, user });
                }
                // The chain holds a well-formed commit this device refuses: it is
                // invalid (or this device's state is not the chain's). Quarantine,
                // name its committer, and keep everything for investigation.
                Err(e) => {
                    let invalid = InvalidCommit {
                        epoch: entry.epoch,
                        commit_hash: entry.commit_hash,
                        committer: self.album.claimed_committer(&entry.commit),
                    };
                    tracing::warn!(error = %e, epoch = entry.epoch.0, "chain commit refused");
                    self.events.push(Event::InvalidCommit { commit: invalid, reason: e.to_string() });
                    let divergence = Divergence {
                        local_epoch: self.album.epoch(),
                        server_epoch: head,
                        invalid_commit: Some(invalid),
                    };
                    return Ok(Ok(self.quarantined(divergence)));
                }
            }
        }
        Ok(Ok(if applied_commits.is_empty() {
            ReconcileOutcome::UpToDate
        } else {
            ReconcileOutcome::Reconciled { applied_commits }
        }))
    }
}
