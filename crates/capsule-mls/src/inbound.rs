//! Commits from the chain, and applying them.
//!
//! [`Album::process`] takes a commit as the server ordered it; `effects_of`
//! asks `rules::check_commit` (the rules the server also runs) whether a commit
//! is acceptable and what it does, and derives the rotated keys; `finish`
//! applies the decision. A device's own commit passes the same rules on
//! [`Album::confirm`], so both sides agree on what every commit means.

use capsule_amk::{AmkKeyring, AmkVersion};
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{LeafNodeIndex, MlsMessageIn, ProcessedMessageContent, ProtocolMessage, Sender, StagedCommit};
use openmls_traits::OpenMlsProvider;

use crate::album::{EXPORTER_LABEL, epoch_secret};
use crate::binding::{Validation, claimed_identity};
use crate::boundary::{During as _, handshake_at, processing};
use crate::fingerprint::EpochMark;
use crate::rules::{Verdict, Violation, check_commit};
use crate::{Album, AlbumContext, CommitHash, Epoch, Member, MlsError, Outgoing, Result};

/// What applying a commit did, identical on every member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The epoch reached.
    pub epoch: Epoch,
    /// The commit applied.
    pub commit_hash: CommitHash,
    /// The AMK version the commit rotated to, if it rotated.
    pub rotated_to: Option<AmkVersion>,
    /// Devices added.
    pub added: Vec<Member>,
    /// Devices removed.
    pub removed: Vec<Member>,
    /// Whether this device was among the removed.
    pub evicted: bool,
    /// This device's own pending commit that lost the epoch to this one, if any:
    /// it was cleared and must be re-proposed against the new epoch.
    pub superseded: Option<Outgoing>,
}

/// What a validated commit does, computed before anything is merged.
pub(crate) struct Effects {
    added: Vec<Member>,
    removed: Vec<Member>,
    new_context: AlbumContext,
    rotation: Option<AmkKeyring>,
    evicted: bool,
    /// The fingerprint mark of the epoch the commit reaches (none for a
    /// device it removes: that device holds no new epoch).
    mark: Option<EpochMark>,
}

impl Album {
    /// Processes a commit from the chain.
    ///
    /// If it is this device's own pending commit (the server echoed it), it is
    /// confirmed. If another member's commit won the epoch this device had a
    /// pending commit for, the pending one is cleared and returned in
    /// [`Applied::superseded`]. A commit that breaks the identity or
    /// authorization rules is refused and nothing changes.
    ///
    /// # Errors
    /// Refusals, each leaving the album untouched: [`MlsError::AlreadyApplied`]
    /// for a replay; [`MlsError::WrongEpoch`]; [`MlsError::Malformed`];
    /// [`MlsError::BadSignature`] for a tampered or forged commit (or one from
    /// another fork); [`MlsError::NotMember`] for a commit to another group or
    /// from a non-member; [`MlsError::OwnCommitMismatch`] for a commit this
    /// device made but no longer holds; identity errors
    /// ([`MlsError::Identity`] and its kin), [`MlsError::Unauthorized`] and
    /// [`MlsError::Refused`] for commits that break Capsule's rules;
    /// [`MlsError::Evicted`]. Faults: [`MlsError::Storage`], [`MlsError::Internal`].
    pub fn process<P: OpenMlsProvider>(
        &mut self,
        provider: &P,
        commit: &[u8],
        validation: Validation<'_>,
    ) -> Result<Applied> {
        let hash = CommitHash::of(commit);
        if self.last_applied == Some(hash) {
            return Err(MlsError::AlreadyApplied);
        }
        if self.pending.as_ref().is_some_and(|p| p.commit_hash == hash) {
            return self.confirm(provider);
        }
        self.ensure_operational()?;
        let (message, epochs) = handshake_at(commit, self.epoch())?;
        let processed = self.group.process_message(provider, message).map_err(|e| processing(e, epochs))?;
        let sender = match processed.sender() {
            Sender::Member(index) => *index,
            _ => return Err(Violation::NotAMemberCommit.into()),
        };
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
            return Err(Violation::NotAMemberCommit.into());
        };
        let effects = self.effects_of(provider, &staged, Some((sender, validation)), hash)?;
        // Valid: the commit wins this epoch. Our own pending commit, if any, lost.
        let superseded = if self.pending.is_some() { self.reject(provider)? } else { None };
        self.group.merge_staged_commit(provider, *staged).during("merging a commit")?;
        self.finish(effects, hash, superseded)
    }

    /// The member a commit claims as its committer, without verifying anything:
    /// for reporting a commit this device refused (the claim may be forged
    /// when the refusal was a bad signature). `None` when the bytes are not a
    /// commit from a current member's leaf.
    #[must_use]
    pub fn claimed_committer(&self, commit: &[u8]) -> Option<Member> {
        let message = MlsMessageIn::tls_deserialize_exact(commit).ok()?;
        let ProtocolMessage::PublicMessage(message) = message.try_into_protocol_message().ok()? else {
            return None;
        };
        match message.sender() {
            Sender::Member(index) => claimed_identity(self.group.member(*index)?).ok(),
            _ => None,
        }
    }

    /// Whether `commit` is the one that made this device's current epoch: a
    /// commit of this group in the epoch before, whose confirmation tag is the
    /// epoch's. The tag is a MAC over the new epoch's transcript under its
    /// secrets, so no other commit carries it. This is how a device that joined
    /// from a Welcome (and so applied no commit) checks that the chain's commit
    /// at its join is the one its Welcome followed: a server showing it one
    /// history's Welcome and another history's chain is caught here.
    #[must_use]
    pub fn made_this_epoch(&self, commit: &[u8]) -> bool {
        let Ok(message) = MlsMessageIn::tls_deserialize_exact(commit) else {
            return false;
        };
        let Ok(ProtocolMessage::PublicMessage(message)) = message.try_into_protocol_message() else {
            return false;
        };
        Some(message.epoch().as_u64()) == self.epoch().0.checked_sub(1)
            && message.group_id() == self.group.group_id()
            && message.confirmation_tag() == Some(self.group.confirmation_tag())
    }

    /// Checks a staged commit against Capsule's rules (`rules::check_commit`,
    /// the same function the server runs) and computes what it does, without
    /// changing anything. `incoming` is `None` for this device's own commit.
    pub(crate) fn effects_of<P: OpenMlsProvider>(
        &self,
        provider: &P,
        staged: &StagedCommit,
        incoming: Option<(LeafNodeIndex, Validation<'_>)>,
        hash: CommitHash,
    ) -> Result<Effects> {
        let Verdict { added, removed, new_context, rotates } =
            check_commit(&self.context, &self.group, staged, incoming)?;
        let evicted = staged.self_removed();
        let rotation = if rotates && !evicted {
            let album = self.context.metadata.album();
            let secret = staged
                .export_secret(provider.crypto(), EXPORTER_LABEL, album.as_bytes(), 32)
                .during("exporting the new epoch's secret")?;
            let mut keyring = self.keyring.duplicate();
            keyring.rotate(new_context.amk_version, &epoch_secret(secret)?)?;
            Some(keyring)
        } else {
            None
        };
        let mark = if evicted {
            None
        } else {
            let committer = match incoming {
                Some((sender, _)) => self.group.member(sender),
                None => self.group.own_leaf().map(|leaf| leaf.credential()),
            }
            .and_then(|credential| claimed_identity(credential).ok());
            let epoch = Epoch(staged.group_context().epoch().as_u64());
            let album = self.context.metadata.album();
            Some(EpochMark::derive(epoch, Some(hash), committer, !removed.is_empty(), |label| {
                staged
                    .export_secret(provider.crypto(), label, album.as_bytes(), 32)
                    .during("exporting a fingerprint secret")
            })?)
        };
        Ok(Effects { added, removed, new_context, rotation, evicted, mark })
    }

    /// Applies what a merged commit did to the wrapper's own state.
    pub(crate) fn finish(
        &mut self,
        effects: Effects,
        hash: CommitHash,
        superseded: Option<Outgoing>,
    ) -> Result<Applied> {
        let rotated_to = effects.rotation.as_ref().map(AmkKeyring::current_version);
        if let Some(keyring) = effects.rotation {
            self.keyring = keyring;
        }
        self.context = effects.new_context;
        self.last_applied = Some(hash);
        self.evicted = effects.evicted;
        if let Some(mark) = effects.mark {
            self.push_mark(mark);
        }
        let applied = Applied {
            epoch: self.epoch(),
            commit_hash: hash,
            rotated_to,
            added: effects.added,
            removed: effects.removed,
            evicted: effects.evicted,
            superseded,
        };
        tracing::debug!(epoch = applied.epoch.0, ?rotated_to, "commit applied");
        Ok(applied)
    }
}
