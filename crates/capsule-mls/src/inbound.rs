//! Commits from the chain, and every rule a commit must pass to be applied.
//!
//! [`Album::process`] takes a commit as the server ordered it; `effects_of` is
//! the one place that decides whether a commit is acceptable (identity of every
//! added leaf and of the committer's path, admin authorization, AMK version
//! steps, metadata upgrades, re-key transitions) and what it does; `finish`
//! applies the decision. A device's own commit passes the same rules on
//! [`Album::confirm`], so both sides agree on what every commit means.

use std::collections::BTreeSet;

use capsule_amk::{AmkKeyring, AmkVersion};
use capsule_identity::UserId;
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{
    LeafNodeIndex, MlsMessageIn, ProcessedMessageContent, Proposal, ProtocolMessage, Sender, StagedCommit,
};
use openmls_traits::OpenMlsProvider;

use crate::album::{EXPORTER_LABEL, epoch_secret};
use crate::binding::{Validation, claimed_identity, verify_credential, verify_leaf};
use crate::boundary::{During as _, Epochs, processing};
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
        let message = MlsMessageIn::tls_deserialize_exact(commit).map_err(|_| MlsError::Malformed("mls message"))?;
        let message: ProtocolMessage =
            message.try_into_protocol_message().map_err(|_| MlsError::Malformed("not a handshake message"))?;
        let epochs = Epochs { message: Epoch(message.epoch().as_u64()), album: self.epoch() };
        if epochs.message != epochs.album {
            return Err(MlsError::WrongEpoch { message_epoch: epochs.message, album_epoch: epochs.album });
        }
        let processed = self.group.process_message(provider, message).map_err(|e| processing(e, epochs))?;
        let sender = match processed.sender() {
            Sender::Member(index) => *index,
            _ => return Err(MlsError::Refused("commit not from a member")),
        };
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
            return Err(MlsError::Refused("only commits are accepted"));
        };
        let effects = self.effects_of(provider, &staged, Some((sender, validation)))?;
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

    /// Checks a staged commit against Capsule's rules and computes what it does,
    /// without changing anything. `incoming` is `None` for this device's own commit.
    ///
    /// The acceptance rules of every [`crate::Change`] live here:
    /// - only Add, Remove and GroupContextExtensions proposals;
    /// - every added leaf carries a valid identity binding;
    /// - the committer's own leaf, and its new leaf on a path, verify and name
    ///   the same device;
    /// - only admins add or remove other users' devices, change the metadata
    ///   (as an allowed upgrade) or start and finish a re-key;
    /// - entitlements follow the membership change (`check_entitlements`),
    ///   and a commit adds devices of one user only;
    /// - an AMK rotation raises the version by exactly one; every removal
    ///   rotates, except a device removed and re-added in the same commit;
    ///   finishing a re-key rotates.
    pub(crate) fn effects_of<P: OpenMlsProvider>(
        &self,
        provider: &P,
        staged: &StagedCommit,
        incoming: Option<(LeafNodeIndex, Validation<'_>)>,
    ) -> Result<Effects> {
        let identity_of = |index: LeafNodeIndex| {
            self.group.member(index).ok_or(MlsError::NotMember("leaf")).and_then(claimed_identity)
        };
        for proposal in staged.queued_proposals() {
            match proposal.proposal() {
                Proposal::Add(_) | Proposal::Remove(_) | Proposal::GroupContextExtensions(_) => {}
                _ => return Err(MlsError::Refused("proposal type not used by Capsule")),
            }
        }
        let mut added = Vec::new();
        for add in staged.add_proposals() {
            let leaf = add.add_proposal().key_package().leaf_node();
            let member = match incoming {
                Some((_, validation)) => {
                    let claims = verify_leaf(leaf, validation)?;
                    Member { user: claims.user, device: claims.device }
                }
                // Our own adds were verified when the change was planned.
                None => claimed_identity(leaf.credential())?,
            };
            added.push(member);
        }
        let removed = staged
            .remove_proposals()
            .map(|r| identity_of(r.remove_proposal().removed()))
            .collect::<Result<Vec<_>>>()?;
        let new_context = AlbumContext::from_extensions(staged.group_context().extensions())?;

        if let Some((sender, validation)) = incoming {
            // The committer's binding is re-verified on every commit, so a change in
            // trust (a user's identity key replaced or revoked) takes effect at once.
            // What must hold now is the leaf the commit leaves in the tree: with an
            // update path that is the new leaf (so a renewed certificate replaces an
            // expired one, and an expired one cannot be carried forward), which must
            // name the same device as the leaf it replaces.
            let member = self.group.member_at(sender).ok_or(MlsError::NotMember("committer"))?;
            let committer = match staged.update_path_leaf_node() {
                Some(leaf) => {
                    let renewed = verify_leaf(leaf, validation)?;
                    let current = claimed_identity(&member.credential)?;
                    if current != (Member { user: renewed.user, device: renewed.device }) {
                        return Err(MlsError::Unauthorized("update path names another device"));
                    }
                    renewed.user
                }
                None => verify_credential(&member.credential, &member.signature_key, validation)?.user,
            };
            let admin = self.context.metadata.is_admin(&committer);
            if !admin && added.iter().chain(&removed).any(|m| m.user != committer) {
                return Err(MlsError::Unauthorized("only admins add or remove other users"));
            }
            if new_context.metadata != self.context.metadata {
                if !admin {
                    return Err(MlsError::Unauthorized("only admins change album metadata"));
                }
                self.context.metadata.check_upgrade(&new_context.metadata)?;
            }
            if new_context.rekey != self.context.rekey && !admin {
                return Err(MlsError::Unauthorized("only admins start or finish a re-key"));
            }
        }
        let old = self.context.amk_version;
        let rotates = new_context.amk_version != old;
        if rotates && Some(new_context.amk_version) != old.next().ok() {
            return Err(MlsError::Refused("an AMK rotation raises the version by exactly one"));
        }
        // A device removed and re-added in the same commit (a re-key's fresh leaf)
        // keeps access by design; any other removal must rotate.
        let readds_only = removed.iter().all(|r| added.contains(r));
        if !removed.is_empty() && !readds_only && !rotates {
            return Err(MlsError::Refused("a removal must rotate the AMK"));
        }
        if self.context.rekey.is_some() && new_context.rekey.is_none() && !rotates {
            return Err(MlsError::Refused("finishing a re-key must rotate the AMK"));
        }
        self.check_entitlements(&added, &removed, &new_context)?;
        // An album upgrade is a commit of its own: nothing else rides on it, so a
        // policy or admin change can never hide inside a membership change.
        let upgrades = new_context.metadata != self.context.metadata;
        if upgrades && (!added.is_empty() || !removed.is_empty() || rotates || new_context.rekey != self.context.rekey)
        {
            return Err(MlsError::Refused("an album upgrade is a commit of its own"));
        }
        let evicted = staged.self_removed();
        let rotation = if rotates && !evicted {
            let album = self.context.metadata.album();
            let secret = staged
                .export_secret(provider.crypto(), EXPORTER_LABEL, album.as_bytes(), 32)
                .during("exporting the new epoch's secret")?;
            let mut keyring = self.keyring.clone();
            keyring.rotate(new_context.amk_version, &epoch_secret(secret)?)?;
            Some(keyring)
        } else {
            None
        };
        Ok(Effects { added, removed, new_context, rotation, evicted })
    }

    /// The entitlements a commit sets must follow its membership change exactly:
    /// a user's first device fixes the user's entitlement (the album's policy
    /// now), removing the user's last device drops it, nothing else touches it.
    /// And a commit adds devices of one user only, since its joiners share one
    /// history bundle.
    fn check_entitlements(&self, added: &[Member], removed: &[Member], next: &AlbumContext) -> Result<()> {
        let added_users: BTreeSet<UserId> = added.iter().map(|m| m.user).collect();
        if added_users.len() > 1 {
            return Err(MlsError::Refused("a commit adds devices of one user only"));
        }
        let mut expected = self.context.entitlements.clone();
        // Reading every member's credential only matters when something is removed.
        let members = if removed.is_empty() { Vec::new() } else { self.members() };
        for user in removed.iter().map(|m| m.user).collect::<BTreeSet<_>>() {
            let stays = members.iter().any(|m| m.user == user && !removed.contains(m));
            if !stays && !added_users.contains(&user) {
                expected.remove(&user);
            }
        }
        for user in added_users {
            let first = self.context.metadata.history_policy().entitled_from(self.context.amk_version);
            expected.entry(user).or_insert(first);
        }
        if expected != next.entitlements {
            return Err(MlsError::Refused("entitlements disagree with the membership change"));
        }
        Ok(())
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
