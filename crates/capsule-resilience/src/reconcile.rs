//! `reconcile_with_server`: bring the album to the chain's head, decided from
//! what one fetch of the chain shows (the outcome table is on the crate root).

use capsule_mls::{CommitHash, Epoch, MlsError, OpenMlsProvider};
use serde::{Deserialize, Serialize};

use crate::{Answer, ChainError, Context, Event, Fetched, ResilienceError, ResilientAlbum, Result};

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
    /// The epoch to read the chain from: the commit this device applied last
    /// must be the chain's at `epoch - 1`, so reading starts there.
    pub(crate) fn fetch_from(&self) -> Epoch {
        let local = self.album.epoch();
        match (self.album.last_applied(), local.previous()) {
            (Some(_), Some(previous)) => previous,
            _ => local,
        }
    }

    /// The outcome when no fetch can change it.
    pub(crate) fn settled_outcome(&self) -> Option<ReconcileOutcome> {
        if let Some(d) = self.quarantine {
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

    /// Applies the answer to a fetch: the outcome, or `None` for an answer
    /// that settles nothing (no answer, or a stale one).
    pub(crate) fn apply_fetched<P: OpenMlsProvider>(
        &mut self,
        cx: Context<'_, P>,
        from: Epoch,
        result: Result<Fetched, ChainError>,
    ) -> Result<Option<ReconcileOutcome>> {
        match result {
            Ok(fetched) if from == self.fetch_from() => {
                self.fetch_due = false;
                self.reconcile(cx, fetched).map(Some)
            }
            // Asked before the album moved: ask again.
            Ok(_) => Ok(None),
            Err(ChainError::Pruned(_)) => {
                self.fetch_due = false;
                Ok(Some(self.evicted()))
            }
            Err(_) => Ok(None),
        }
    }

    /// The second half of [`ResilientAlbum::reconcile_with_server`], for callers
    /// that do their own I/O: applies the answer to the fetch
    /// [`ResilientAlbum::begin_reconcile`] asked for. Unlike
    /// [`ResilientAlbum::handle`], it leaves the retry schedule alone.
    ///
    /// # Errors
    /// [`ResilienceError::Chain`] when the fetch got no answer; MLS errors that
    /// are not refusals.
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
        let failure = result.as_ref().err().cloned();
        match (self.apply_fetched(cx, from, result)?, failure) {
            (Some(outcome), _) => Ok(outcome),
            (None, Some(e)) => Err(e.into()),
            (None, None) => Err(ResilienceError::Chain(ChainError::Unavailable)),
        }
    }

    fn diverged(&mut self, local_epoch: Epoch, server_epoch: Epoch) -> ReconcileOutcome {
        tracing::warn!(
            local_epoch = local_epoch.0,
            server_epoch = server_epoch.0,
            "album diverged from the chain: quarantined"
        );
        self.quarantine = Some(Divergence { local_epoch, server_epoch });
        ReconcileOutcome::Diverged { local_epoch, server_epoch }
    }

    fn evicted(&mut self) -> ReconcileOutcome {
        self.unrecoverable = true;
        ReconcileOutcome::Unrecoverable
    }

    /// Applies what the chain holds from `fetch_from()` on.
    pub(crate) fn reconcile<P: OpenMlsProvider>(
        &mut self,
        cx: Context<'_, P>,
        fetched: Fetched,
    ) -> Result<ReconcileOutcome> {
        if let Some(outcome) = self.settled_outcome() {
            return Ok(outcome);
        }
        let (head, local, from) = (fetched.head, self.album.epoch(), self.fetch_from());
        if head < local {
            return Ok(self.diverged(local, head));
        }
        let mut entries = fetched.entries.into_iter().peekable();
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
                    self.settle_in_flight(own, &applied);
                    let evicted = applied.evicted;
                    self.events.push(Event::Applied(Box::new(applied)));
                    if evicted {
                        return Ok(self.evicted());
                    }
                }
                Err(MlsError::Evicted) => return Ok(self.evicted()),
                // A bug or a storage fault is not evidence against the chain.
                Err(e) if e.is_internal() => return Err(e.into()),
                // The chain holds a commit this device cannot apply: its state is not
                // the chain's. Quarantine, and keep everything for investigation.
                Err(e) => {
                    tracing::warn!(error = %e, epoch = entry.epoch.0, "chain commit refused");
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
}
