//! An album as a server sees it: OpenMLS's public group (the delivery-service
//! side), with Capsule's rules on top.
//!
//! A server holds no group secrets, yet it must never order a commit honest
//! members would refuse, since every member must then process it or stop. So
//! it tracks each album's public state ([`PublicAlbum`]): it starts from the
//! creating device's signed GroupInfo and ratchet tree ([`Genesis`]), and
//! validates each commit as a member would without secrets: OpenMLS checks the
//! framing, the sender's membership, signatures, proposals and the new tree;
//! `rules::check_commit` (the function members run) checks Capsule's rules
//! against identity keys the server's directory trusts.
//!
//! What it cannot check: the encrypted path secrets. A commit whose secrets
//! some members cannot decrypt passes here and forks the album; detecting and
//! healing that is the resilience layer's job.

use std::collections::BTreeSet;

use capsule_amk::AlbumId;
use capsule_identity::{UserId, encoding};
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    GroupId, LeafNodeIndex, MlsMessageBodyIn, MlsMessageIn, ProcessedMessageContent, ProposalStore, PublicGroup,
    RatchetTreeIn, Sender, StagedCommit,
};
use openmls_memory_storage::MemoryStorage;
use openmls_traits::OpenMlsProvider;
use serde::{Deserialize, Serialize};

use crate::binding::{DeviceIdentity, Validation, claimed_identity, verify_credential};
use crate::boundary::{During as _, handshake_at, public_processing};
use crate::rules::{Roster as _, Verdict, Violation, check_commit};
use crate::{Album, AlbumContext, CIPHERSUITE, Epoch, Member, MlsError, Result};

/// What a server needs to start tracking an album: the GroupInfo of its
/// current epoch, signed by a member, and the ratchet tree (public data only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    /// A serialized `MlsMessage` holding the GroupInfo (without the tree).
    pub group_info: Vec<u8>,
    /// The serialized ratchet tree.
    pub ratchet_tree: Vec<u8>,
}

impl Album {
    /// The album's public state now, signed by `device` (a member): what a
    /// server is given when the album is registered.
    ///
    /// # Errors
    /// [`MlsError::Evicted`] for an album this device left; faults.
    pub fn genesis<P: OpenMlsProvider>(&self, provider: &P, device: &DeviceIdentity) -> Result<Genesis> {
        self.ensure_operational()?;
        let group_info = self
            .group
            .export_group_info(provider.crypto(), device, false)
            .during("exporting the group info")?
            .tls_serialize_detached()
            .map_err(|_| MlsError::Internal("encoding the group info"))?;
        let ratchet_tree = self
            .group
            .export_ratchet_tree()
            .tls_serialize_detached()
            .map_err(|_| MlsError::Internal("encoding the ratchet tree"))?;
        Ok(Genesis { group_info, ratchet_tree })
    }
}

/// What a commit did to the public state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicApplied {
    /// The epoch reached.
    pub epoch: Epoch,
    /// Devices added.
    pub added: Vec<Member>,
    /// Devices removed.
    pub removed: Vec<Member>,
    /// Each added device with the reference of the KeyPackage it was added
    /// with: the Welcome must be made for these (see [`crate::welcome_recipients`]).
    pub welcomed: Vec<(Member, Vec<u8>)>,
    /// The references of the regular (not last-resort) KeyPackages it added:
    /// spent, never to be added again, in this album or any other (a server
    /// holding many albums records them; see `capsule-server`).
    pub spent: Vec<Vec<u8>>,
}

/// A commit OpenMLS accepted against the public state (framing, membership,
/// signatures, proposals, tree), not yet checked against Capsule's rules.
#[derive(Debug)]
pub struct PublicCommit {
    staged: StagedCommit,
    sender: LeafNodeIndex,
    committer: Option<Member>,
}

impl PublicCommit {
    /// The users whose identity keys checking it needs: the committer's and
    /// every added device's (as claimed, unverified), so a server loads only
    /// those from its directory.
    #[must_use]
    pub fn named_users(&self) -> BTreeSet<UserId> {
        let added = self.staged.add_proposals().filter_map(|a| {
            claimed_identity(a.add_proposal().key_package().leaf_node().credential()).ok().map(|m| m.user)
        });
        let path = self.staged.update_path_leaf_node().and_then(|l| claimed_identity(l.credential()).ok());
        self.committer.iter().chain(path.iter()).map(|m| m.user).chain(added).collect()
    }
}

/// A [`Genesis`] OpenMLS accepted, whose members' identities are not checked yet.
#[derive(Debug)]
pub struct OpenedGenesis(PublicAlbum);

impl OpenedGenesis {
    /// The users whose identity keys [`OpenedGenesis::check`] needs.
    #[must_use]
    pub fn named_users(&self) -> BTreeSet<UserId> {
        self.0.members().into_iter().map(|m| m.user).collect()
    }

    /// Checks every member's identity binding, and that each member's user
    /// holds an entitlement.
    ///
    /// # Errors
    /// Identity errors for a leaf; [`MlsError::Rule`] for a member without
    /// an entitlement.
    pub fn check(self, validation: Validation<'_>) -> Result<PublicAlbum> {
        for member in self.0.group.members() {
            let claims = verify_credential(&member.credential, &member.signature_key, validation)?;
            if !self.0.context.entitlements.contains_key(&claims.user) {
                return Err(Violation::Entitlements.into());
            }
        }
        Ok(self.0)
    }
}

/// One album's public state: what a server tracks to validate commits.
pub struct PublicAlbum {
    group: PublicGroup,
    context: AlbumContext,
    // The public group lives in OpenMLS's storage; each album has its own, so
    // its whole content is the album's state (see `to_bytes`).
    storage: MemoryStorage,
    /// References of the regular KeyPackages this album has added: each is
    /// used once.
    spent: BTreeSet<Vec<u8>>,
}

impl core::fmt::Debug for PublicAlbum {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PublicAlbum").field("epoch", &self.epoch()).finish_non_exhaustive()
    }
}

/// Format version of [`PublicAlbum::to_bytes`]. 2: the spent KeyPackages.
const STATE_FORMAT: u8 = 2;

#[derive(Serialize, Deserialize)]
struct StateRecord {
    format: u8,
    album: [u8; 16],
    values: Vec<(Vec<u8>, Vec<u8>)>,
    spent: Vec<Vec<u8>>,
}

/// [`StateRecord`] as format 1 wrote it: read as a state that spent nothing
/// (what it added before is unknown; nothing spent is forgotten after).
#[derive(Serialize, Deserialize)]
struct StateRecordV1 {
    format: u8,
    album: [u8; 16],
    values: Vec<(Vec<u8>, Vec<u8>)>,
}

fn crypto() -> Result<openmls_libcrux_crypto::CryptoProvider> {
    openmls_libcrux_crypto::CryptoProvider::new().map_err(|_| MlsError::Internal("libcrux crypto provider unavailable"))
}

impl PublicAlbum {
    /// Starts tracking `album` from a [`Genesis`]: [`PublicAlbum::open`],
    /// then [`OpenedGenesis::check`].
    ///
    /// # Errors
    /// As those two.
    pub fn from_genesis(album: AlbumId, genesis: &Genesis, validation: Validation<'_>) -> Result<Self> {
        Self::open(album, genesis)?.check(validation)
    }

    /// Reads a [`Genesis`] for `album` and runs OpenMLS's checks on it: the
    /// GroupInfo must verify under its signer's leaf and match the tree, and
    /// the group must be `album`'s on Capsule's suite with an album context.
    /// The members' identity bindings are checked next ([`OpenedGenesis::check`]).
    ///
    /// # Errors
    /// [`MlsError::Malformed`] for bytes that do not decode; [`MlsError::BadSignature`]
    /// or [`MlsError::Refused`] for a GroupInfo that does not verify or fit;
    /// [`MlsError::NotMember`] for another album's.
    pub fn open(album: AlbumId, genesis: &Genesis) -> Result<OpenedGenesis> {
        let message =
            MlsMessageIn::tls_deserialize_exact(&genesis.group_info).map_err(|_| MlsError::Malformed("group info"))?;
        let MlsMessageBodyIn::GroupInfo(info) = message.extract() else {
            return Err(MlsError::Malformed("not a group info"));
        };
        if info.ciphersuite() != CIPHERSUITE {
            return Err(MlsError::Refused("the album is not on Capsule's ciphersuite"));
        }
        if info.group_id().as_slice() != album.as_bytes() {
            return Err(MlsError::NotMember("the group info is another album's"));
        }
        let tree = RatchetTreeIn::tls_deserialize_exact(&genesis.ratchet_tree)
            .map_err(|_| MlsError::Malformed("ratchet tree"))?;
        let storage = MemoryStorage::default();
        let (group, _) = PublicGroup::from_external(&crypto()?, &storage, tree, info, ProposalStore::new())
            .during("reading the group info")?;
        let context = AlbumContext::from_extensions(group.group_context().extensions())?;
        if context.metadata.album() != album {
            return Err(MlsError::Refused("the album context names another album"));
        }
        Ok(OpenedGenesis(Self { group, context, storage, spent: BTreeSet::new() }))
    }

    /// The current epoch (the one the next commit is made in).
    #[must_use]
    pub fn epoch(&self) -> Epoch {
        Epoch(self.group.group_context().epoch().as_u64())
    }

    /// The album's context now.
    #[must_use]
    pub const fn context(&self) -> &AlbumContext {
        &self.context
    }

    /// The members now, sorted, as their leaves claim (each verified when it
    /// entered the tree).
    #[must_use]
    pub fn members(&self) -> Vec<Member> {
        let mut members = self.group.claimed_members();
        members.sort();
        members
    }

    /// Whether `member` holds a leaf now.
    #[must_use]
    pub fn is_member(&self, member: Member) -> bool {
        self.group.members().any(|m| claimed_identity(&m.credential).ok() == Some(member))
    }

    /// Runs OpenMLS's validation of a commit against the public state, changing
    /// nothing: framing, epoch, the sender's membership and signature, the
    /// proposals and the new tree.
    ///
    /// # Errors
    /// [`MlsError::Malformed`], [`MlsError::WrongEpoch`], [`MlsError::NotMember`],
    /// [`MlsError::BadSignature`], [`MlsError::Refused`] and [`MlsError::Rule`]
    /// ([`Violation::NotAMemberCommit`]), as a member would refuse it.
    pub fn stage(&self, commit: &[u8]) -> Result<PublicCommit> {
        let (message, epochs) = handshake_at(commit, self.epoch())?;
        let processed = self.group.process_message(&crypto()?, message).map_err(|e| public_processing(e, epochs))?;
        let Sender::Member(sender) = *processed.sender() else {
            return Err(Violation::NotAMemberCommit.into());
        };
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
            return Err(Violation::NotAMemberCommit.into());
        };
        let committer = self.group.leaf(sender).and_then(|l| claimed_identity(l.credential()).ok());
        Ok(PublicCommit { staged: *staged, sender, committer })
    }

    /// Checks a staged commit against Capsule's rules (the function members
    /// run) and, if it passes, advances the public state past it. A refusal
    /// changes nothing.
    ///
    /// # Errors
    /// [`MlsError::Rule`] and identity errors ([`MlsError::Identity`],
    /// [`MlsError::UnknownIdentity`] and kin) as members would refuse it;
    /// faults.
    pub fn apply(&mut self, commit: PublicCommit, validation: Validation<'_>) -> Result<PublicApplied> {
        let Verdict { added, removed, new_context, .. } =
            check_commit(&self.context, &self.group, &commit.staged, Some((commit.sender, validation)))?;
        let crypto = crypto()?;
        let mut welcomed = Vec::new();
        let mut spends = Vec::new();
        for add in commit.staged.add_proposals() {
            let key_package = add.add_proposal().key_package();
            let member = claimed_identity(key_package.leaf_node().credential())?;
            let reference = key_package.hash_ref(&crypto).during("hashing a key package")?.as_slice().to_vec();
            if !key_package.last_resort() {
                if self.spent.contains(&reference) || spends.contains(&reference) {
                    return Err(Violation::KeyPackageReused.into());
                }
                spends.push(reference.clone());
            }
            welcomed.push((member, reference));
        }
        self.group.merge_commit(&self.storage, commit.staged).during("merging a commit into the public state")?;
        self.context = new_context;
        self.spent.extend(spends.iter().cloned());
        Ok(PublicApplied { epoch: self.epoch(), added, removed, welcomed, spent: spends })
    }

    /// The state, to store between commits (public data only).
    ///
    /// # Errors
    /// Only on a serializer bug.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let album = *self.context.metadata.album().as_bytes();
        let values = self.storage.values.read().map_err(|_| MlsError::Internal("public state lock"))?;
        let mut values: Vec<(Vec<u8>, Vec<u8>)> = values.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        values.sort();
        let spent = self.spent.iter().cloned().collect();
        let record = StateRecord { format: STATE_FORMAT, album, values, spent };
        encoding::encode(&record).map_err(|_| MlsError::Internal("public state encoding"))
    }

    /// A state [`PublicAlbum::to_bytes`] wrote.
    ///
    /// # Errors
    /// [`MlsError::Malformed`] for bytes that are not such a state.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let malformed = |_| MlsError::Malformed("public album state");
        let record: StateRecord = match bytes.first() {
            Some(&STATE_FORMAT) => encoding::decode_canonical(bytes).map_err(malformed)?,
            Some(1) => {
                let StateRecordV1 { album, values, .. } = encoding::decode_canonical(bytes).map_err(malformed)?;
                StateRecord { format: STATE_FORMAT, album, values, spent: Vec::new() }
            }
            _ => return Err(MlsError::Malformed("public album state format")),
        };
        // One canonical form: the spent references sorted, each once.
        if !record.spent.windows(2).all(|w| matches!(w, [a, b] if a < b)) {
            return Err(MlsError::Malformed("public album state"));
        }
        let spent = record.spent.iter().cloned().collect();
        let storage = MemoryStorage::default();
        storage.values.write().map_err(|_| MlsError::Internal("public state lock"))?.extend(record.values);
        // OpenMLS's memory storage unwraps what it decodes: a stored value of
        // the wrong shape (a damaged row) panics inside it. Caught here and
        // refused as malformed; the storage is local to this call, so nothing
        // half-loaded survives the unwind.
        let group_id = GroupId::from_slice(&record.album);
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| PublicGroup::load(&storage, &group_id)))
            .map_err(|_| MlsError::Malformed("public album state"))?;
        let group = loaded
            .map_err(|e| MlsError::storage("loading the public state", e))?
            .ok_or(MlsError::Malformed("public album state without a group"))?;
        let context = AlbumContext::from_extensions(group.group_context().extensions())?;
        if context.metadata.album().as_bytes() != &record.album {
            return Err(MlsError::Malformed("public album state of another album"));
        }
        Ok(Self { group, context, storage, spent })
    }
}
