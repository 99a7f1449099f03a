//! The ordering rules, as pure functions over what a chain holds. Every chain
//! (the in-memory double, the files of the crash tests, the server on SQLite
//! or PostgreSQL) reads the facts inside its own transaction and asks these
//! functions what to do, so "accepted", "conflict" and "pruned" have one
//! definition.

use std::collections::BTreeMap;

use capsule_mls::{CommitHash, Epoch};

use crate::{ChainEntry, ChainError, Refused, Submission, SubmitAnswer};

/// Size limits on a submission's parts, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The commit.
    pub commit: u64,
    /// The Welcome.
    pub welcome: u64,
    /// The sealed history bundle.
    pub bundle: u64,
}

impl Limits {
    /// The largest request body a submission within these limits makes, with
    /// room for its framing.
    #[must_use]
    pub const fn body(&self) -> u64 {
        self.commit.saturating_add(self.welcome).saturating_add(self.bundle).saturating_add(1024)
    }
}

impl Default for Limits {
    /// Room for a commit adding a few hundred devices with X-Wing keys and
    /// hybrid certificates (about 8 KiB per KeyPackage), a Welcome with the
    /// ratchet tree of a large album, and a long AMK history.
    fn default() -> Self {
        Self { commit: 4 << 20, welcome: 16 << 20, bundle: 1 << 20 }
    }
}

/// The last epoch a chain stores (what a signed 64-bit database column holds):
/// one number for every chain, so the double and the databases agree.
pub const MAX_EPOCH: Epoch = Epoch(i64::MAX.unsigned_abs());

/// Checks what can be checked of a submission without group secrets: sizes,
/// that the commit is one PublicMessage commit of `album`'s group, and that
/// it was made in the epoch it claims.
///
/// # Errors
/// The first thing wrong with it.
pub fn check_submission(album: &[u8], submission: &Submission, limits: &Limits) -> Result<(), Refused> {
    let parts = [
        (Some(&submission.commit), limits.commit),
        (submission.welcome.as_ref(), limits.welcome),
        (submission.bundle.as_ref(), limits.bundle),
    ];
    for (part, limit) in parts {
        if part.is_some_and(|p| u64::try_from(p.len()).map_or(true, |n| n > limit)) {
            return Err(Refused::TooLarge { limit });
        }
    }
    let framing = capsule_mls::framing(&submission.commit).map_err(|e| match e {
        capsule_mls::MlsError::Malformed(_) => Refused::Undecodable,
        _ => Refused::NotACommit,
    })?;
    if !framing.is_commit {
        return Err(Refused::NotACommit);
    }
    if framing.group_id != album {
        return Err(Refused::WrongAlbum);
    }
    if framing.epoch != submission.epoch {
        return Err(Refused::WrongEpoch { claimed: submission.epoch, framed: framing.epoch });
    }
    if submission.epoch >= MAX_EPOCH {
        return Err(Refused::EpochOutOfRange);
    }
    Ok(())
}

/// The largest fingerprint a board files: a header, two seals of a short
/// statement and a signature take well under a kilobyte.
pub const FINGERPRINT_LIMIT: u64 = 4096;

/// Checks a fingerprint posted to `album`'s board without opening it: its
/// size, that it is one, and that it is of `album`'s group. Returns its
/// header: a server also requires the sender it names to be the device that
/// authenticated the request, so no device fills another's place.
///
/// # Errors
/// [`Refused::TooLarge`]; [`Refused::NotAFingerprint`] for anything else.
pub fn check_fingerprint(album: &[u8], bytes: &[u8]) -> Result<capsule_mls::FingerprintHeader, Refused> {
    if u64::try_from(bytes.len()).map_or(true, |n| n > FINGERPRINT_LIMIT) {
        return Err(Refused::TooLarge { limit: FINGERPRINT_LIMIT });
    }
    let header = capsule_mls::fingerprint_header(bytes).map_err(|_| Refused::NotAFingerprint)?;
    if header.group != album {
        return Err(Refused::NotAFingerprint);
    }
    Ok(header)
}

/// What to do with a checked submission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Store it at the head (its claimed epoch).
    Append,
    /// The chain holds this very commit already, at this epoch: answer with it.
    Duplicate(Epoch),
    /// Another commit holds the epoch, or the claim is not the head.
    Conflict {
        /// The head.
        head: Epoch,
    },
}

impl Decision {
    /// The answer the submitter gets once the decision is carried out.
    #[must_use]
    pub const fn answer(self, claimed: Epoch) -> SubmitAnswer {
        match self {
            Self::Append => SubmitAnswer::Accepted { epoch: claimed },
            Self::Duplicate(epoch) => SubmitAnswer::Accepted { epoch },
            Self::Conflict { head } => SubmitAnswer::Conflict { head },
        }
    }
}

/// The rule: one commit per epoch, first come first served, idempotent.
/// `held_at` is where the chain holds a commit with the submission's hash (if
/// anywhere, pruned history excepted), `head` the epoch the next commit must
/// be made in. Read both in the transaction that appends.
#[must_use]
pub const fn decide(held_at: Option<Epoch>, head: Epoch, claimed: Epoch) -> Decision {
    match held_at {
        Some(epoch) => Decision::Duplicate(epoch),
        None if claimed.0 == head.0 => Decision::Append,
        None => Decision::Conflict { head },
    }
}

/// The epochs a fetch from `from` returns: `from..end`, at most `limit` of
/// them, none at or past `head`.
///
/// # Errors
/// [`ChainError::Pruned`] (with the oldest epoch kept) when `from` is older
/// than `base`, the chain's first kept epoch.
pub fn page(base: Epoch, head: Epoch, from: Epoch, limit: u64) -> Result<core::ops::Range<u64>, ChainError> {
    if from < base {
        return Err(ChainError::Pruned(base));
    }
    let end = from.0.saturating_add(limit).min(head.0).max(from.0);
    Ok(from.0..end)
}

/// The first epoch kept once the head is `head`, for a chain that keeps the
/// last `keep` epochs (`None`: everything). Never moves back, and always
/// keeps the last entry: a device at the head reads from the epoch before its
/// own to check its last commit, so a chain holding nothing would cut every
/// device off.
#[must_use]
pub fn retained_base(base: Epoch, head: Epoch, keep: Option<u64>) -> Epoch {
    keep.map_or(base, |keep| Epoch(head.0.saturating_sub(keep.max(1))).max(base))
}

/// The first epoch kept when an operator prunes before `epoch`: never past
/// the last entry, never back.
#[must_use]
pub fn pruned_base(base: Epoch, head: Epoch, epoch: Epoch) -> Epoch {
    epoch.min(head.previous().unwrap_or(head)).max(base)
}

/// One album's chain held in memory, following the rules above: the
/// reference the in-memory double wraps, and what the conformance suite
/// compares other chains against.
#[derive(Clone, Debug, Default)]
pub struct ChainLog {
    base: Epoch,
    entries: Vec<ChainEntry>,
    keep: Option<u64>,
    /// The fingerprint board: what each device posted last.
    board: BTreeMap<capsule_mls::Member, Vec<u8>>,
}

impl ChainLog {
    /// An empty chain whose group starts at `base` (0 for a new MLS group).
    #[must_use]
    pub const fn new(base: Epoch) -> Self {
        Self { base, entries: Vec::new(), keep: None, board: BTreeMap::new() }
    }

    /// Keeps only the last `keep` epochs from now on.
    #[must_use]
    pub const fn retaining(mut self, keep: Option<u64>) -> Self {
        self.keep = keep;
        self
    }

    /// The oldest epoch still held.
    #[must_use]
    pub const fn base(&self) -> Epoch {
        self.base
    }

    /// The epoch the next commit must be made in.
    #[must_use]
    pub fn head(&self) -> Epoch {
        self.base.saturating_add(u64::try_from(self.entries.len()).unwrap_or(u64::MAX))
    }

    /// Every entry held, in order.
    #[must_use]
    pub fn entries(&self) -> &[ChainEntry] {
        &self.entries
    }

    /// Checks, orders and (when it is the head's) stores a submission.
    ///
    /// # Errors
    /// Why it was refused; nothing changes then.
    pub fn submit(&mut self, album: &[u8], s: &Submission, limits: &Limits) -> Result<SubmitAnswer, Refused> {
        check_submission(album, s, limits)?;
        let hash = CommitHash::of(&s.commit);
        let held_at = self.entries.iter().find(|e| e.commit_hash == hash).map(|e| e.epoch);
        let decision = decide(held_at, self.head(), s.epoch);
        if decision == Decision::Append {
            self.entries.push(ChainEntry {
                epoch: s.epoch,
                commit: s.commit.clone(),
                commit_hash: hash,
                welcome: s.welcome.clone(),
                bundle: s.bundle.clone(),
            });
            let base = retained_base(self.base, self.head(), self.keep);
            self.prune_before(base);
        }
        Ok(decision.answer(s.epoch))
    }

    /// Entries from `from` on (at most `limit`), without their Welcomes and
    /// bundles, which [`ChainLog::welcome`] returns on their own.
    ///
    /// # Errors
    /// [`ChainError::Pruned`] when `from` is older than the oldest epoch kept.
    pub fn fetch(&self, from: Epoch, limit: u64) -> Result<Vec<ChainEntry>, ChainError> {
        let range = page(self.base, self.head(), from, limit)?;
        let skip = usize::try_from(range.start.saturating_sub(self.base.0)).unwrap_or(usize::MAX);
        let take = usize::try_from(range.end.saturating_sub(range.start)).unwrap_or(usize::MAX);
        Ok(self
            .entries
            .iter()
            .skip(skip)
            .take(take)
            // The commit only: Welcomes can be large, and are fetched on their own.
            .map(|e| ChainEntry {
                epoch: e.epoch,
                commit: e.commit.clone(),
                commit_hash: e.commit_hash,
                welcome: None,
                bundle: None,
            })
            .collect())
    }

    /// The Welcome and bundle stored with the commit of `epoch`, if that
    /// commit is held.
    ///
    /// # Errors
    /// [`ChainError::Pruned`] when `epoch` is older than the oldest kept.
    pub fn welcome(&self, epoch: Epoch) -> Result<Option<crate::WelcomeBlobs>, ChainError> {
        if epoch < self.base {
            return Err(ChainError::Pruned(self.base));
        }
        Ok(self
            .entries
            .iter()
            .find(|e| e.epoch == epoch)
            .map(|e| crate::WelcomeBlobs { welcome: e.welcome.clone(), bundle: e.bundle.clone() }))
    }

    /// Files a fingerprint on the board (checked with [`check_fingerprint`]),
    /// replacing the one its sender posted before: the board holds what each
    /// device said last. The double trusts the sender the header names; the
    /// server checks it against the device that signed the request.
    ///
    /// # Errors
    /// Why it was refused; nothing changes then.
    pub fn post_fingerprint(&mut self, album: &[u8], bytes: &[u8]) -> Result<(), Refused> {
        let header = check_fingerprint(album, bytes)?;
        self.board.insert(header.sender, bytes.to_vec());
        Ok(())
    }

    /// The board, one fingerprint per device, ordered by device.
    #[must_use]
    pub fn fingerprints(&self) -> Vec<Vec<u8>> {
        self.board.values().cloned().collect()
    }

    /// Forgets entries before `epoch` (never the last one), as a server with
    /// limited history does.
    pub fn prune_before(&mut self, epoch: Epoch) {
        let epoch = pruned_base(self.base, self.head(), epoch);
        let n = usize::try_from(epoch.0.saturating_sub(self.base.0)).unwrap_or(usize::MAX).min(self.entries.len());
        self.entries.drain(..n);
        self.base = self.base.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_orders_first_come_and_answers_a_duplicate_with_its_position() {
        let (e4, e5) = (Epoch(4), Epoch(5));
        assert_eq!(decide(None, e5, e5), Decision::Append);
        assert_eq!(decide(None, e5, e4), Decision::Conflict { head: e5 });
        assert_eq!(decide(None, e5, Epoch(6)), Decision::Conflict { head: e5 });
        // A commit already held answers with its position, even at another claim.
        assert_eq!(decide(Some(e4), e5, e4).answer(e4), SubmitAnswer::Accepted { epoch: e4 });
        assert_eq!(decide(Some(e4), e5, e5).answer(e5), SubmitAnswer::Accepted { epoch: e4 });
    }

    #[test]
    fn a_page_stops_at_the_head_and_refuses_pruned_history() {
        assert_eq!(page(Epoch(2), Epoch(10), Epoch(3), 4), Ok(3..7));
        assert_eq!(page(Epoch(2), Epoch(10), Epoch(8), 4), Ok(8..10));
        assert_eq!(page(Epoch(2), Epoch(10), Epoch(12), 4), Ok(12..12));
        assert_eq!(page(Epoch(2), Epoch(10), Epoch(1), 4), Err(ChainError::Pruned(Epoch(2))));
        assert_eq!(page(Epoch(0), Epoch(u64::MAX), Epoch(u64::MAX - 1), u64::MAX), Ok(u64::MAX - 1..u64::MAX));
    }

    #[test]
    fn retention_keeps_the_last_epochs_and_never_moves_back() {
        assert_eq!(retained_base(Epoch(0), Epoch(10), Some(3)), Epoch(7));
        assert_eq!(retained_base(Epoch(8), Epoch(10), Some(3)), Epoch(8));
        assert_eq!(retained_base(Epoch(0), Epoch(2), Some(3)), Epoch(0));
        assert_eq!(retained_base(Epoch(0), Epoch(10), None), Epoch(0));
        // Keeping nothing would cut off every device: the last entry stays.
        assert_eq!(retained_base(Epoch(0), Epoch(10), Some(0)), Epoch(9));
        assert_eq!(pruned_base(Epoch(2), Epoch(10), Epoch(10)), Epoch(9));
        assert_eq!(pruned_base(Epoch(2), Epoch(10), Epoch(1)), Epoch(2));
        assert_eq!(pruned_base(Epoch(0), Epoch(0), Epoch(5)), Epoch(0));
    }
}
