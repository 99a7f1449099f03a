//! Capsule's rules for a commit, as one function over public data.
//!
//! A member ([`crate::Album`], on its own commits and on the chain's) and the
//! server ([`crate::PublicAlbum`], before it orders a commit) both call
//! [`check_commit`]: what it reads is the staged commit, the current
//! [`AlbumContext`] and the leaves of the tree, never a group secret. So the
//! server refuses exactly what honest members would refuse for these rules,
//! and the two can never drift apart.

use std::collections::BTreeSet;

use capsule_identity::UserId;
use openmls::prelude::{Credential, LeafNodeIndex, MlsGroup, Proposal, PublicGroup, StagedCommit};
use serde::{Deserialize, Serialize};

use crate::binding::{Validation, claimed_identity, verify_credential, verify_leaf};
use crate::{AlbumContext, Member, MlsError, Result};

/// Which of Capsule's rules a commit breaks (see [`MlsError::Rule`]). Typed, so
/// a server can say which one it refused a commit for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// A proposal type Capsule never uses (only Add, Remove and
    /// GroupContextExtensions are).
    #[error("proposal type not used by Capsule")]
    ProposalType,
    /// A commit not sent by a member, or a handshake that is not a commit.
    #[error("only commits by members are accepted")]
    NotAMemberCommit,
    /// The committer's new leaf names another device than the leaf it replaces.
    #[error("update path names another device")]
    CommitterChanged,
    /// A non-admin added or removed another user's device.
    #[error("only admins add or remove other users")]
    NotAdmin,
    /// A non-admin changed the album metadata.
    #[error("only admins change album metadata")]
    MetadataByNonAdmin,
    /// A non-admin started or finished a re-key.
    #[error("only admins start or finish a re-key")]
    RekeyByNonAdmin,
    /// A metadata change that is not an allowed upgrade (another album, a
    /// version step other than one, invalid metadata).
    #[error("the metadata change is not an allowed upgrade")]
    IllegalUpgrade,
    /// An album upgrade with anything else in the same commit.
    #[error("an album upgrade is a commit of its own")]
    UpgradeNotAlone,
    /// An AMK rotation that does not raise the version by exactly one.
    #[error("an AMK rotation raises the version by exactly one")]
    RotationStep,
    /// A removal (other than a re-key's re-add) without an AMK rotation.
    #[error("a removal must rotate the AMK")]
    RemovalWithoutRotation,
    /// Finishing a re-key without an AMK rotation.
    #[error("finishing a re-key must rotate the AMK")]
    RekeyWithoutRotation,
    /// Devices of more than one user added in one commit.
    #[error("a commit adds devices of one user only")]
    AddsSeveralUsers,
    /// Entitlements that do not follow the membership change.
    #[error("entitlements disagree with the membership change")]
    Entitlements,
    /// A regular KeyPackage this album already added once (its private keys
    /// went with that join, so the new leaf would be one nobody holds). Only
    /// last-resort KeyPackages are reused, by design. (Appended last: the wire
    /// names violations by position.)
    #[error("a key package is used once")]
    KeyPackageReused,
}

/// The leaves of a tree, as the rules read them: both a member's group and
/// the server's public group answer.
pub(crate) trait Roster {
    /// The credential and signature key at `index`, if a member is there.
    fn leaf(&self, index: LeafNodeIndex) -> Option<(Credential, Vec<u8>)>;
    /// Every member, as their credentials claim.
    fn claimed_members(&self) -> Vec<Member>;
}

impl Roster for MlsGroup {
    fn leaf(&self, index: LeafNodeIndex) -> Option<(Credential, Vec<u8>)> {
        self.member_at(index).map(|m| (m.credential, m.signature_key))
    }

    fn claimed_members(&self) -> Vec<Member> {
        self.members().filter_map(|m| claimed_identity(&m.credential).ok()).collect()
    }
}

impl Roster for PublicGroup {
    fn leaf(&self, index: LeafNodeIndex) -> Option<(Credential, Vec<u8>)> {
        PublicGroup::leaf(self, index).map(|l| (l.credential().clone(), l.signature_key().as_slice().to_vec()))
    }

    fn claimed_members(&self) -> Vec<Member> {
        self.members().filter_map(|m| claimed_identity(&m.credential).ok()).collect()
    }
}

/// What a commit does, as the rules found it.
pub(crate) struct Verdict {
    /// Devices added.
    pub(crate) added: Vec<Member>,
    /// Devices removed.
    pub(crate) removed: Vec<Member>,
    /// The album context the commit sets.
    pub(crate) new_context: AlbumContext,
    /// Whether it rotates the AMK.
    pub(crate) rotates: bool,
}

/// Checks a staged commit against Capsule's rules and says what it does,
/// reading only public data. `incoming` names the committer's leaf and how
/// to verify identities; it is `None` for a device's own commit, whose adds
/// were verified when the change was planned.
///
/// The rules:
/// - only Add, Remove and GroupContextExtensions proposals;
/// - every added leaf carries a valid identity binding;
/// - the committer's own leaf, and its new leaf on a path, verify and name
///   the same device;
/// - only admins add or remove other users' devices, change the metadata
///   (as an allowed upgrade) or start and finish a re-key;
/// - entitlements follow the membership change, and a commit adds devices
///   of one user only;
/// - an AMK rotation raises the version by exactly one; every removal
///   rotates, except a device removed and re-added in the same commit;
///   finishing a re-key rotates;
/// - an album upgrade is a commit of its own.
///
/// # Errors
/// [`MlsError::Rule`] for a broken rule; identity errors
/// ([`MlsError::Identity`], [`MlsError::UnknownIdentity`] and their kin) for
/// a leaf whose binding does not verify; [`MlsError::NotMember`] for a
/// proposal naming an empty leaf.
pub(crate) fn check_commit(
    current: &AlbumContext,
    roster: &impl Roster,
    staged: &StagedCommit,
    incoming: Option<(LeafNodeIndex, Validation<'_>)>,
) -> Result<Verdict> {
    let identity_of = |index: LeafNodeIndex| {
        roster.leaf(index).ok_or(MlsError::NotMember("leaf")).and_then(|(credential, _)| claimed_identity(&credential))
    };
    for proposal in staged.queued_proposals() {
        match proposal.proposal() {
            Proposal::Add(_) | Proposal::Remove(_) | Proposal::GroupContextExtensions(_) => {}
            _ => return Err(Violation::ProposalType.into()),
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
            None => claimed_identity(leaf.credential())?,
        };
        added.push(member);
    }
    let removed =
        staged.remove_proposals().map(|r| identity_of(r.remove_proposal().removed())).collect::<Result<Vec<_>>>()?;
    let new_context = AlbumContext::from_extensions(staged.group_context().extensions())?;

    if let Some((sender, validation)) = incoming {
        // The committer's binding is re-verified on every commit, so a change in
        // trust (a user's identity key replaced or revoked) takes effect at once.
        // What must hold now is the leaf the commit leaves in the tree: with an
        // update path that is the new leaf (so a renewed certificate replaces an
        // expired one, and an expired one cannot be carried forward), which must
        // name the same device as the leaf it replaces.
        let (credential, signature_key) = roster.leaf(sender).ok_or(MlsError::NotMember("committer"))?;
        let committer = match staged.update_path_leaf_node() {
            Some(leaf) => {
                let renewed = verify_leaf(leaf, validation)?;
                if claimed_identity(&credential)? != (Member { user: renewed.user, device: renewed.device }) {
                    return Err(Violation::CommitterChanged.into());
                }
                renewed.user
            }
            None => verify_credential(&credential, &signature_key, validation)?.user,
        };
        let admin = current.metadata.is_admin(&committer);
        if !admin && added.iter().chain(&removed).any(|m| m.user != committer) {
            return Err(Violation::NotAdmin.into());
        }
        if new_context.metadata != current.metadata {
            if !admin {
                return Err(Violation::MetadataByNonAdmin.into());
            }
            current.metadata.check_upgrade(&new_context.metadata).map_err(|_| Violation::IllegalUpgrade)?;
        }
        if new_context.rekey != current.rekey && !admin {
            return Err(Violation::RekeyByNonAdmin.into());
        }
    }
    let old = current.amk_version;
    let rotates = new_context.amk_version != old;
    if rotates && Some(new_context.amk_version) != old.next().ok() {
        return Err(Violation::RotationStep.into());
    }
    // A device removed and re-added in the same commit (a re-key's fresh leaf)
    // keeps access by design; any other removal must rotate.
    let readds_only = removed.iter().all(|r| added.contains(r));
    if !removed.is_empty() && !readds_only && !rotates {
        return Err(Violation::RemovalWithoutRotation.into());
    }
    if current.rekey.is_some() && new_context.rekey.is_none() && !rotates {
        return Err(Violation::RekeyWithoutRotation.into());
    }
    check_entitlements(current, roster, &added, &removed, &new_context)?;
    // An album upgrade is a commit of its own: nothing else rides on it, so a
    // policy or admin change can never hide inside a membership change.
    let upgrades = new_context.metadata != current.metadata;
    if upgrades && (!added.is_empty() || !removed.is_empty() || rotates || new_context.rekey != current.rekey) {
        return Err(Violation::UpgradeNotAlone.into());
    }
    Ok(Verdict { added, removed, new_context, rotates })
}

/// The entitlements a commit sets must follow its membership change exactly:
/// a user's first device fixes the user's entitlement (the album's policy
/// now), removing the user's last device drops it, nothing else touches it.
/// And a commit adds devices of one user only, since its joiners share one
/// history bundle.
fn check_entitlements(
    current: &AlbumContext,
    roster: &impl Roster,
    added: &[Member],
    removed: &[Member],
    next: &AlbumContext,
) -> Result<()> {
    let added_users: BTreeSet<UserId> = added.iter().map(|m| m.user).collect();
    if added_users.len() > 1 {
        return Err(Violation::AddsSeveralUsers.into());
    }
    let mut expected = current.entitlements.clone();
    // Reading every member's credential only matters when something is removed.
    let members = if removed.is_empty() { Vec::new() } else { roster.claimed_members() };
    for user in removed.iter().map(|m| m.user).collect::<BTreeSet<_>>() {
        let stays = members.iter().any(|m| m.user == user && !removed.contains(m));
        if !stays && !added_users.contains(&user) {
            expected.remove(&user);
        }
    }
    for user in added_users {
        let first = current.metadata.history_policy().entitled_from(current.amk_version);
        expected.entry(user).or_insert(first);
    }
    if expected != next.entitlements {
        return Err(Violation::Entitlements.into());
    }
    Ok(())
}

impl From<Violation> for MlsError {
    fn from(v: Violation) -> Self {
        Self::Rule(v)
    }
}
