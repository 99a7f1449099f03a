//! An album is an MLS group: creation, joining, the ceremonies, and processing
//! of everything that arrives.
//!
//! Every operation takes and returns bytes as they cross the network, plus typed
//! events; nothing here does I/O or reads a clock.

use std::collections::BTreeSet;

use capsule_amk::{AlbumMetadata, AmkKeyring, AmkVersion, EpochSecret, HistoryBundle, SealedBundle};
use capsule_identity::{DeviceId, UserId};
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    GroupId, KeyPackage, KeyPackageIn, LeafNodeIndex, MlsGroup, MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn,
    PURE_PLAINTEXT_WIRE_FORMAT_POLICY, ProcessedMessageContent, Proposal, ProtocolMessage, ProtocolVersion, Sender,
    StagedCommit, StagedWelcome,
};
use openmls_traits::OpenMlsProvider;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use capsule_identity::encoding;
use zeroize::Zeroizing;

use crate::binding::{DeviceIdentity, Validation, capabilities, claimed_identity, verify_leaf};
use crate::{AlbumContext, CIPHERSUITE, MlsError, RekeyMarker, Result, rng::ProviderRng};

/// MLS exporter label of the per-epoch secret that feeds capsule-amk's key schedule.
const EXPORTER_LABEL: &str = "capsule amk epoch secret v1";

/// SHA-256 of a serialized commit: how the chain and replays identify it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CommitHash(pub [u8; 32]);

impl CommitHash {
    /// The hash of `commit` bytes.
    #[must_use]
    pub fn of(commit: &[u8]) -> Self {
        Self(Sha256::digest(commit).into())
    }
}

impl core::fmt::Debug for CommitHash {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let [a, b, c, d, ..] = self.0;
        write!(f, "CommitHash({a:02x}{b:02x}{c:02x}{d:02x}…)")
    }
}

/// A membership or key ceremony. Each is one commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ceremony {
    /// Add every device of a user (admin only).
    AddUser {
        /// The user added.
        user: UserId,
    },
    /// A user's device adds another device of the same user.
    AddDevice {
        /// The device added.
        device: DeviceId,
    },
    /// Remove every device of a user and rotate the AMK (admin only).
    RemoveUser {
        /// The user removed.
        user: UserId,
    },
    /// Remove one (lost) device of the committer's own user and rotate the AMK.
    RemoveDevice {
        /// The device removed.
        device: DeviceId,
    },
    /// Rotate the AMK on its own (admin, or suspected compromise).
    RotateAmk,
    /// Replace this device's own leaf (its answer to a re-key).
    SelfUpdate,
    /// Quiesce the album for a full re-key (admin only).
    BeginRekey {
        /// The re-key marker set in the group context.
        marker: RekeyMarker,
    },
    /// End a re-key: clear the marker and rotate the AMK (admin only).
    FinishRekey {
        /// The marker's id.
        id: u64,
    },
    /// Replace a device's leaf from a fresh KeyPackage: remove and re-add in one
    /// commit (admin only; a re-key's answer for a device that did not respond).
    ReAddDevice {
        /// The device re-added.
        device: DeviceId,
    },
}

/// A ceremony's messages, exactly as they go to the server. The server keeps the
/// Welcome and the sealed bundle together and hands both to the joiners.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outgoing {
    /// What this commit does.
    pub ceremony: Ceremony,
    /// The epoch the commit was made in (the chain position it claims).
    pub epoch: u64,
    /// The serialized commit (`MlsMessage`).
    pub commit: Vec<u8>,
    /// Its hash.
    pub commit_hash: CommitHash,
    /// The serialized Welcome, if the commit adds devices.
    pub welcome: Option<Vec<u8>>,
    /// The sealed history bundle for the joiners, if the commit adds devices.
    pub bundle: Option<Vec<u8>>,
}

/// What applying a commit did, identical on every member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The epoch reached.
    pub epoch: u64,
    /// The commit applied.
    pub commit_hash: CommitHash,
    /// The AMK version the commit rotated to, if it rotated.
    pub rotated_to: Option<AmkVersion>,
    /// Devices added.
    pub added: Vec<(UserId, DeviceId)>,
    /// Devices removed.
    pub removed: Vec<(UserId, DeviceId)>,
    /// Whether this device was among the removed.
    pub evicted: bool,
    /// This device's own pending commit that lost the epoch to this one, if any:
    /// it was cleared and must be re-proposed against the new epoch.
    pub superseded: Option<Outgoing>,
}

/// What the wrapper keeps beside OpenMLS's own group state. A durable store
/// writes it in the same transaction as the OpenMLS writes of one operation.
#[derive(Serialize, Deserialize)]
struct AlbumRecord {
    format: u8,
    album: [u8; 16],
    keyring: Vec<u8>,
    pending: Option<Outgoing>,
    last_applied: Option<CommitHash>,
    evicted: bool,
}

/// Format version of [`AlbumRecord`].
const RECORD_FORMAT: u8 = 1;

/// One album as seen by one device.
#[derive(Debug)]
pub struct Album {
    group: MlsGroup,
    context: AlbumContext,
    keyring: AmkKeyring,
    pending: Option<Outgoing>,
    last_applied: Option<CommitHash>,
    evicted: bool,
}

fn join_config() -> MlsGroupJoinConfig {
    // Handshakes travel as PublicMessages: the server orders commits and must see
    // their epoch; it learns membership changes, which it routes anyway.
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
        .build()
}

fn epoch_secret(bytes: Vec<u8>) -> Result<EpochSecret> {
    let array: [u8; 32] = bytes.try_into().map_err(|_| MlsError::Internal("exporter length"))?;
    Ok(EpochSecret::from_exporter(array))
}

/// Publishes a KeyPackage for `device`: what other devices need to add it.
///
/// # Errors
/// [`MlsError::Protocol`] or [`MlsError::Storage`] from OpenMLS.
pub fn key_package<P: OpenMlsProvider>(provider: &P, device: &DeviceIdentity) -> Result<Vec<u8>> {
    let bundle = KeyPackage::builder()
        .leaf_node_capabilities(capabilities())
        .build(CIPHERSUITE, provider, device, device.credential_with_key()?)
        .map_err(MlsError::protocol)?;
    bundle.key_package().tls_serialize_detached().map_err(|_| MlsError::Internal("key package encoding"))
}

/// Decodes, checks and verifies the identity binding of a KeyPackage.
fn verified_key_package<P: OpenMlsProvider>(
    provider: &P,
    bytes: &[u8],
    validation: Validation<'_>,
) -> Result<(KeyPackage, UserId, DeviceId)> {
    let kp = KeyPackageIn::tls_deserialize_exact(bytes).map_err(|_| MlsError::Malformed("key package"))?;
    let kp = kp.validate(provider.crypto(), ProtocolVersion::Mls10).map_err(MlsError::protocol)?;
    if kp.ciphersuite() != CIPHERSUITE {
        return Err(MlsError::Refused("key package of another ciphersuite"));
    }
    let claims = verify_leaf(kp.leaf_node(), validation)?;
    Ok((kp, claims.user, claims.device))
}

impl Album {
    /// Creates an album with `device` as its first member and AMK version 1.
    ///
    /// # Errors
    /// [`MlsError::Unauthorized`] if the creator's user is not an admin of `metadata`.
    pub fn create<P: OpenMlsProvider>(provider: &P, device: &DeviceIdentity, metadata: AlbumMetadata) -> Result<Self> {
        if !metadata.is_admin(&device.user()) {
            return Err(MlsError::Unauthorized("the creator must be an admin"));
        }
        let context = AlbumContext { metadata, amk_version: AmkVersion::FIRST, rekey: None };
        let album = context.metadata.album();
        let group = MlsGroup::builder()
            .with_group_id(GroupId::from_slice(album.as_bytes()))
            .ciphersuite(CIPHERSUITE)
            .with_capabilities(capabilities())
            .with_group_context_extensions(context.extensions()?)
            .use_ratchet_tree_extension(true)
            .with_wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
            .build(provider, device, device.credential_with_key()?)
            .map_err(MlsError::protocol)?;
        let secret =
            group.export_secret(provider.crypto(), EXPORTER_LABEL, album.as_bytes(), 32).map_err(MlsError::protocol)?;
        let keyring = AmkKeyring::create(album, &epoch_secret(secret)?)?;
        Ok(Self { group, context, keyring, pending: None, last_applied: None, evicted: false })
    }

    /// Joins from a Welcome and the sealed history bundle beside it.
    ///
    /// Every member of the ratchet tree must carry a valid identity binding; the
    /// bundle must open under the joining epoch's key and match the album's
    /// policy; the ceiling adopted is the AMK version the group context attests.
    ///
    /// # Errors
    /// [`MlsError::Malformed`], [`MlsError::Identity`] (and its kin) for a bad
    /// member, [`MlsError::Amk`] for a bundle that is refused, [`MlsError::Refused`]
    /// for a bundle that disagrees with the group context.
    pub fn join<P: OpenMlsProvider>(
        provider: &P,
        welcome: &[u8],
        bundle: &[u8],
        validation: Validation<'_>,
    ) -> Result<Self> {
        let message = MlsMessageIn::tls_deserialize_exact(welcome).map_err(|_| MlsError::Malformed("welcome"))?;
        let MlsMessageBodyIn::Welcome(welcome) = message.extract() else {
            return Err(MlsError::Malformed("not a welcome"));
        };
        let mut builder =
            StagedWelcome::build_from_welcome(provider, &join_config(), welcome).map_err(MlsError::protocol)?;
        // A device re-added (re-bootstrap, or a re-key's fresh leaf) still stores
        // the group it was removed from; that stale state is replaced, but an
        // active membership never is.
        let group_id = builder.processed_welcome().unverified_group_info().group_id().clone();
        let stored = MlsGroup::load(provider.storage(), &group_id).map_err(|e| MlsError::Storage(format!("{e:?}")))?;
        if let Some(old) = stored {
            if old.is_active() {
                return Err(MlsError::Refused("already an active member of this album"));
            }
            builder = builder.replace_old_group();
        }
        let staged = builder.build().map_err(MlsError::protocol)?;
        for member in staged.members() {
            crate::binding::verify_credential(&member.credential, &member.signature_key, validation)?;
        }
        let context = AlbumContext::from_extensions(staged.group_context().extensions())?;
        let album = context.metadata.album();
        let secret = staged
            .export_secret(provider.crypto(), EXPORTER_LABEL, album.as_bytes(), 32)
            .map_err(MlsError::protocol)?;
        let key = epoch_secret(secret)?.bundle_key(&album)?;
        let mut keyring = SealedBundle::from_bytes(bundle)?.open(&key, &context.metadata)?;
        if keyring.current_version() != context.amk_version {
            return Err(MlsError::Refused("bundle's current version is not the group's"));
        }
        keyring.attest_ceiling(context.amk_version);
        let group = staged.into_group(provider).map_err(MlsError::protocol)?;
        Ok(Self { group, context, keyring, pending: None, last_applied: None, evicted: false })
    }

    /// The wrapper's own state, to persist beside OpenMLS's (holds the keyring:
    /// store it encrypted at rest).
    ///
    /// # Errors
    /// Only on a serializer bug.
    pub fn to_record(&self) -> Result<Zeroizing<Vec<u8>>> {
        let record = AlbumRecord {
            format: RECORD_FORMAT,
            album: *self.context.metadata.album().as_bytes(),
            keyring: self.keyring.to_bytes()?.to_vec(),
            pending: self.pending.clone(),
            last_applied: self.last_applied,
            evicted: self.evicted,
        };
        Ok(Zeroizing::new(encoding::encode(&record).map_err(|e| MlsError::Amk(e.into()))?))
    }

    /// Loads an album from the provider's storage and the record
    /// [`Album::to_record`] wrote with it.
    ///
    /// # Errors
    /// [`MlsError::Malformed`] for a record that does not decode;
    /// [`MlsError::NotMember`] when storage holds no such group;
    /// [`MlsError::Refused`] when storage and record disagree (a torn write).
    pub fn load<P: OpenMlsProvider>(provider: &P, record: &[u8]) -> Result<Self> {
        let record: AlbumRecord =
            encoding::decode_canonical(record).map_err(|_| MlsError::Malformed("album record"))?;
        if record.format != RECORD_FORMAT {
            return Err(MlsError::Malformed("album record format"));
        }
        let group = MlsGroup::load(provider.storage(), &GroupId::from_slice(&record.album))
            .map_err(|e| MlsError::Storage(format!("{e:?}")))?
            .ok_or(MlsError::NotMember("no stored group for this album"))?;
        let context = AlbumContext::from_extensions(group.extensions())?;
        let keyring = AmkKeyring::from_bytes(&record.keyring)?;
        if keyring.album() != context.metadata.album() || context.metadata.album().as_bytes() != &record.album {
            return Err(MlsError::Refused("stored keyring belongs to another album"));
        }
        if record.pending.is_some() != group.pending_commit().is_some() {
            return Err(MlsError::Refused("stored pending commit disagrees with the group state"));
        }
        if !record.evicted && keyring.current_version() != context.amk_version {
            return Err(MlsError::Refused("stored keyring disagrees with the group's AMK version"));
        }
        Ok(Self {
            group,
            context,
            keyring,
            pending: record.pending,
            last_applied: record.last_applied,
            evicted: record.evicted,
        })
    }

    /// The album's id.
    #[must_use]
    pub fn id(&self) -> capsule_amk::AlbumId {
        self.context.metadata.album()
    }

    /// The album's metadata and current AMK version, as the group context says.
    #[must_use]
    pub const fn context(&self) -> &AlbumContext {
        &self.context
    }

    /// The AMK versions this device holds.
    #[must_use]
    pub const fn keyring(&self) -> &AmkKeyring {
        &self.keyring
    }

    /// Mutable keyring access for ceiling attestations from the chain.
    pub fn keyring_mut(&mut self) -> &mut AmkKeyring {
        &mut self.keyring
    }

    /// The current epoch.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.group.epoch().as_u64()
    }

    /// The epoch authenticator: equal on every member in the same state.
    #[must_use]
    pub fn epoch_authenticator(&self) -> Vec<u8> {
        self.group.epoch_authenticator().as_slice().to_vec()
    }

    /// The hash of the last commit this device applied (none after create/join).
    #[must_use]
    pub const fn last_applied(&self) -> Option<CommitHash> {
        self.last_applied
    }

    /// The ceremony waiting for the server's answer.
    #[must_use]
    pub const fn pending(&self) -> Option<&Outgoing> {
        self.pending.as_ref()
    }

    /// Whether this device was removed.
    #[must_use]
    pub const fn is_evicted(&self) -> bool {
        self.evicted
    }

    /// Members as (user, device), sorted.
    #[must_use]
    pub fn members(&self) -> Vec<(UserId, DeviceId)> {
        let mut out: Vec<_> = self.group.members().filter_map(|m| claimed_identity(&m.credential).ok()).collect();
        out.sort();
        out
    }

    fn leaves_where(&self, pred: impl Fn(UserId, DeviceId) -> bool) -> Vec<LeafNodeIndex> {
        self.group
            .members()
            .filter(|m| claimed_identity(&m.credential).is_ok_and(|(u, d)| pred(u, d)))
            .map(|m| m.index)
            .collect()
    }

    fn ensure_operational(&self) -> Result<()> {
        if self.evicted || !self.group.is_active() {
            return Err(MlsError::Evicted);
        }
        Ok(())
    }

    /// Returns the pending commit if it is this ceremony (idempotent retry), or
    /// refuses a different ceremony while one is pending.
    fn pending_for(&self, ceremony: &Ceremony) -> Result<Option<Outgoing>> {
        match &self.pending {
            Some(p) if &p.ceremony == ceremony => Ok(Some(p.clone())),
            Some(_) => Err(MlsError::PendingCommit),
            None => Ok(None),
        }
    }

    /// Ceremony 1: add every device of `user` from its device directory.
    ///
    /// # Errors
    /// [`MlsError::Unauthorized`] unless the committer is an admin; identity
    /// errors for any KeyPackage that does not verify or names another user;
    /// [`MlsError::AlreadyMember`] for a device already in the album.
    pub fn add_user<P: OpenMlsProvider>(
        &mut self,
        provider: &P,
        device: &DeviceIdentity,
        user: UserId,
        directory: &[Vec<u8>],
        validation: Validation<'_>,
    ) -> Result<Outgoing> {
        let ceremony = Ceremony::AddUser { user };
        if let Some(p) = self.pending_for(&ceremony)? {
            return Ok(p);
        }
        if !self.context.metadata.is_admin(&device.user()) {
            return Err(MlsError::Unauthorized("only admins add users"));
        }
        self.add(provider, device, ceremony, user, directory, validation)
    }

    /// Ceremony 2: one of a user's devices adds another device of that user.
    ///
    /// # Errors
    /// As [`Album::add_user`]; the KeyPackage must be of the committer's own user.
    pub fn add_device<P: OpenMlsProvider>(
        &mut self,
        provider: &P,
        device: &DeviceIdentity,
        key_package: &[u8],
        validation: Validation<'_>,
    ) -> Result<Outgoing> {
        let (_, _, new_device) = verified_key_package(provider, key_package, validation)?;
        let ceremony = Ceremony::AddDevice { device: new_device };
        if let Some(p) = self.pending_for(&ceremony)? {
            return Ok(p);
        }
        self.add(provider, device, ceremony, device.user(), &[key_package.to_vec()], validation)
    }

    fn add<P: OpenMlsProvider>(
        &mut self,
        provider: &P,
        device: &DeviceIdentity,
        ceremony: Ceremony,
        user: UserId,
        directory: &[Vec<u8>],
        validation: Validation<'_>,
    ) -> Result<Outgoing> {
        self.ensure_operational()?;
        if directory.is_empty() {
            return Err(MlsError::Refused("no key packages"));
        }
        let members = self.members();
        let mut seen = BTreeSet::new();
        let mut key_packages = Vec::with_capacity(directory.len());
        for bytes in directory {
            let (kp, kp_user, kp_device) = verified_key_package(provider, bytes, validation)?;
            if kp_user != user {
                return Err(MlsError::Unauthorized("key package of another user"));
            }
            if members.contains(&(kp_user, kp_device)) || !seen.insert(kp_device) {
                return Err(MlsError::AlreadyMember(kp_device, kp_user));
            }
            key_packages.push(kp);
        }
        self.stage(provider, device, ceremony, key_packages, Vec::new(), None)
    }

    /// Ceremony 3: remove every device of `user` and rotate the AMK (admin only).
    ///
    /// # Errors
    /// [`MlsError::Unauthorized`], [`MlsError::NotMember`], or
    /// [`MlsError::Refused`] for removing one's own user.
    pub fn remove_user<P: OpenMlsProvider>(
        &mut self,
        provider: &P,
        device: &DeviceIdentity,
        user: UserId,
    ) -> Result<Outgoing> {
        let ceremony = Ceremony::RemoveUser { user };
        if let Some(p) = self.pending_for(&ceremony)? {
            return Ok(p);
        }
        self.ensure_operational()?;
        if !self.context.metadata.is_admin(&device.user()) {
            return Err(MlsError::Unauthorized("only admins remove users"));
        }
        if user == device.user() {
            return Err(MlsError::Refused("a user cannot remove itself with its own device's commit"));
        }
        let leaves = self.leaves_where(|u, _| u == user);
        if leaves.is_empty() {
            return Err(MlsError::NotMember("user"));
        }
        let rotated = self.next_context()?;
        self.stage(provider, device, ceremony, Vec::new(), leaves, Some(rotated))
    }

    /// Ceremony 4: one of a user's remaining devices removes a lost device of the
    /// same user, and rotates the AMK.
    ///
    /// # Errors
    /// [`MlsError::NotMember`] if no such device of the committer's user;
    /// [`MlsError::Refused`] for removing the committing device itself.
    pub fn remove_device<P: OpenMlsProvider>(
        &mut self,
        provider: &P,
        device: &DeviceIdentity,
        lost: DeviceId,
    ) -> Result<Outgoing> {
        let ceremony = Ceremony::RemoveDevice { device: lost };
        if let Some(p) = self.pending_for(&ceremony)? {
            return Ok(p);
        }
        self.ensure_operational()?;
        if lost == device.device() {
            return Err(MlsError::Refused("a device cannot remove itself"));
        }
        let user = device.user();
        let leaves = self.leaves_where(|u, d| u == user && d == lost);
        if leaves.is_empty() {
            return Err(MlsError::NotMember("device of this user"));
        }
        let rotated = self.next_context()?;
        self.stage(provider, device, ceremony, Vec::new(), leaves, Some(rotated))
    }

    /// Ceremony 5: rotate the AMK on its own. Any member may: an admin on
    /// schedule, or any device that suspects a compromise.
    ///
    /// # Errors
    /// [`MlsError::PendingCommit`] while another ceremony is pending.
    pub fn rotate_amk<P: OpenMlsProvider>(&mut self, provider: &P, device: &DeviceIdentity) -> Result<Outgoing> {
        let ceremony = Ceremony::RotateAmk;
        if let Some(p) = self.pending_for(&ceremony)? {
            return Ok(p);
        }
        self.ensure_operational()?;
        let rotated = self.next_context()?;
        self.stage(provider, device, ceremony, Vec::new(), Vec::new(), Some(rotated))
    }

    fn next_context(&self) -> Result<AlbumContext> {
        Ok(AlbumContext { amk_version: self.context.amk_version.next()?, ..self.context.clone() })
    }

    fn ensure_admin(&self, device: &DeviceIdentity, what: &'static str) -> Result<()> {
        if self.context.metadata.is_admin(&device.user()) { Ok(()) } else { Err(MlsError::Unauthorized(what)) }
    }

    /// Replaces this device's own leaf (new encryption key, new path secrets).
    ///
    /// # Errors
    /// [`MlsError::PendingCommit`] while another ceremony is pending.
    pub fn self_update<P: OpenMlsProvider>(&mut self, provider: &P, device: &DeviceIdentity) -> Result<Outgoing> {
        let ceremony = Ceremony::SelfUpdate;
        if let Some(p) = self.pending_for(&ceremony)? {
            return Ok(p);
        }
        self.ensure_operational()?;
        self.stage_with(provider, device, ceremony, Vec::new(), Vec::new(), None, true)
    }

    /// Quiesces the album for a full re-key: sets the marker every member reads.
    /// A new marker replaces a stalled one (a clean restart by any admin).
    ///
    /// # Errors
    /// [`MlsError::Unauthorized`] unless an admin; [`MlsError::RekeyState`] if that
    /// very re-key is already in progress.
    pub fn begin_rekey<P: OpenMlsProvider>(
        &mut self,
        provider: &P,
        device: &DeviceIdentity,
        marker: RekeyMarker,
    ) -> Result<Outgoing> {
        let ceremony = Ceremony::BeginRekey { marker };
        if let Some(p) = self.pending_for(&ceremony)? {
            return Ok(p);
        }
        self.ensure_operational()?;
        self.ensure_admin(device, "only admins re-key an album")?;
        if self.context.rekey == Some(marker) {
            return Err(MlsError::RekeyState("this re-key is already in progress"));
        }
        let ctx = AlbumContext { rekey: Some(marker), ..self.context.clone() };
        self.stage(provider, device, ceremony, Vec::new(), Vec::new(), Some(ctx))
    }

    /// Ends the re-key `id`: clears the marker and rotates the AMK in one commit.
    ///
    /// # Errors
    /// [`MlsError::Unauthorized`] unless an admin; [`MlsError::RekeyState`] if that
    /// re-key is not in progress.
    pub fn finish_rekey<P: OpenMlsProvider>(
        &mut self,
        provider: &P,
        device: &DeviceIdentity,
        id: u64,
    ) -> Result<Outgoing> {
        let ceremony = Ceremony::FinishRekey { id };
        if let Some(p) = self.pending_for(&ceremony)? {
            return Ok(p);
        }
        self.ensure_operational()?;
        self.ensure_admin(device, "only admins re-key an album")?;
        if self.context.rekey.map(|m| m.id) != Some(id) {
            return Err(MlsError::RekeyState("that re-key is not in progress"));
        }
        let ctx = AlbumContext { rekey: None, ..self.next_context()? };
        self.stage(provider, device, ceremony, Vec::new(), Vec::new(), Some(ctx))
    }

    /// Replaces a device's leaf from a fresh KeyPackage of that same device.
    ///
    /// # Errors
    /// [`MlsError::Unauthorized`] unless an admin; identity errors for the
    /// KeyPackage; [`MlsError::NotMember`] if that device is not in the album.
    pub fn readd_device<P: OpenMlsProvider>(
        &mut self,
        provider: &P,
        device: &DeviceIdentity,
        key_package: &[u8],
        validation: Validation<'_>,
    ) -> Result<Outgoing> {
        let (kp, user, target) = verified_key_package(provider, key_package, validation)?;
        let ceremony = Ceremony::ReAddDevice { device: target };
        if let Some(p) = self.pending_for(&ceremony)? {
            return Ok(p);
        }
        self.ensure_operational()?;
        self.ensure_admin(device, "only admins re-add devices")?;
        if target == device.device() {
            return Err(MlsError::Refused("a device replaces its own leaf with self_update"));
        }
        let leaves = self.leaves_where(|u, d| u == user && d == target);
        if leaves.is_empty() {
            return Err(MlsError::NotMember("device to re-add"));
        }
        self.stage(provider, device, ceremony, vec![kp], leaves, None)
    }

    /// Each member's leaf encryption key: changes exactly when the leaf is replaced.
    #[must_use]
    pub fn leaf_fingerprints(&self) -> Vec<((UserId, DeviceId), Vec<u8>)> {
        let mut out: Vec<_> = self
            .group
            .members()
            .filter_map(|m| claimed_identity(&m.credential).ok().map(|id| (id, m.encryption_key)))
            .collect();
        out.sort();
        out
    }

    /// Builds and stages one commit. Nothing is merged: the commit stays pending
    /// until [`Album::confirm`] (the server accepted it) or [`Album::reject`].
    fn stage<P: OpenMlsProvider>(
        &mut self,
        provider: &P,
        device: &DeviceIdentity,
        ceremony: Ceremony,
        adds: Vec<KeyPackage>,
        removes: Vec<LeafNodeIndex>,
        new_context: Option<AlbumContext>,
    ) -> Result<Outgoing> {
        self.stage_with(provider, device, ceremony, adds, removes, new_context, false)
    }

    #[allow(clippy::too_many_arguments)] // one private builder behind every ceremony
    fn stage_with<P: OpenMlsProvider>(
        &mut self,
        provider: &P,
        device: &DeviceIdentity,
        ceremony: Ceremony,
        adds: Vec<KeyPackage>,
        removes: Vec<LeafNodeIndex>,
        new_context: Option<AlbumContext>,
        self_update: bool,
    ) -> Result<Outgoing> {
        let epoch = self.epoch();
        let has_adds = !adds.is_empty();
        let mut builder =
            self.group.commit_builder().force_self_update(self_update).propose_adds(adds).propose_removals(removes);
        if let Some(ctx) = &new_context {
            builder = builder.propose_group_context_extensions(ctx.extensions()?).map_err(MlsError::protocol)?;
        }
        let bundle = builder
            .load_psks(provider.storage())
            .map_err(MlsError::protocol)?
            .build(provider.rand(), provider.crypto(), device, |_| true)
            .map_err(MlsError::protocol)?
            .stage_commit(provider)
            .map_err(MlsError::protocol)?;
        let commit = bundle.commit().tls_serialize_detached().map_err(|_| MlsError::Internal("commit encoding"))?;
        let welcome = match bundle.to_welcome_msg() {
            Some(w) if has_adds => {
                Some(w.tls_serialize_detached().map_err(|_| MlsError::Internal("welcome encoding"))?)
            }
            _ => None,
        };
        let sealed = if has_adds { Some(self.seal_bundle_for_pending(provider)?) } else { None };
        let out = Outgoing { ceremony, epoch, commit_hash: CommitHash::of(&commit), commit, welcome, bundle: sealed };
        tracing::debug!(epoch, ceremony = ?out.ceremony, hash = ?out.commit_hash, "ceremony staged");
        self.pending = Some(out.clone());
        Ok(out)
    }

    /// The history bundle for the joiners of the pending commit, sealed under
    /// the joining epoch's exporter-derived key. Adds never rotate, so it carries
    /// the current keyring.
    fn seal_bundle_for_pending<P: OpenMlsProvider>(&self, provider: &P) -> Result<Vec<u8>> {
        let staged = self.group.pending_commit().ok_or(MlsError::Internal("no staged commit"))?;
        let album = self.context.metadata.album();
        let secret = staged
            .export_secret(provider.crypto(), EXPORTER_LABEL, album.as_bytes(), 32)
            .map_err(MlsError::protocol)?;
        let key = epoch_secret(secret)?.bundle_key(&album)?;
        let mut rng = ProviderRng(provider.rand());
        Ok(HistoryBundle::for_joiner(&self.keyring, &self.context.metadata)?.seal(&key, &mut rng)?.to_bytes()?)
    }

    /// The server accepted the pending commit: merge it, and rotate the AMK if
    /// the commit rotates it.
    ///
    /// # Errors
    /// [`MlsError::NoPendingCommit`]; storage errors from the merge.
    pub fn confirm<P: OpenMlsProvider>(&mut self, provider: &P) -> Result<Applied> {
        let pending = self.pending.clone().ok_or(MlsError::NoPendingCommit)?;
        let staged = self.group.pending_commit().ok_or(MlsError::NoPendingCommit)?;
        let effects = self.effects_of(provider, staged, None)?;
        self.group.merge_pending_commit(provider).map_err(MlsError::protocol)?;
        self.pending = None;
        self.finish(effects, pending.commit_hash, None)
    }

    /// The server refused the pending commit: clear it; the album is as before.
    ///
    /// # Errors
    /// [`MlsError::Storage`] if clearing cannot be persisted.
    pub fn reject<P: OpenMlsProvider>(&mut self, provider: &P) -> Result<Option<Outgoing>> {
        self.group.clear_pending_commit(provider.storage()).map_err(|e| MlsError::Storage(format!("{e:?}")))?;
        Ok(self.pending.take())
    }

    /// Processes a commit from the chain.
    ///
    /// If it is this device's own pending commit (the server echoed it), it is
    /// confirmed. If another member's commit won the epoch this device had a
    /// pending commit for, the pending one is cleared and returned in
    /// [`Applied::superseded`]. A commit that breaks the identity or
    /// authorization rules is refused and nothing changes.
    ///
    /// # Errors
    /// [`MlsError::AlreadyApplied`] for a replay, [`MlsError::WrongEpoch`],
    /// identity and authorization errors, [`MlsError::Protocol`].
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
        let message_epoch = message.epoch().as_u64();
        if message_epoch != self.epoch() {
            return Err(MlsError::WrongEpoch { message_epoch, album_epoch: self.epoch() });
        }
        let processed = self.group.process_message(provider, message).map_err(MlsError::protocol)?;
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
        self.group.merge_staged_commit(provider, *staged).map_err(MlsError::protocol)?;
        self.finish(effects, hash, superseded)
    }

    /// Checks a staged commit against Capsule's rules and computes what it does,
    /// without changing anything. `incoming` is `None` for this device's own commit.
    fn effects_of<P: OpenMlsProvider>(
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
            let (user, device) = match incoming {
                Some((_, validation)) => {
                    let claims = verify_leaf(leaf, validation)?;
                    (claims.user, claims.device)
                }
                // Our own adds were verified when the ceremony was built.
                None => claimed_identity(leaf.credential())?,
            };
            added.push((user, device));
        }
        let removed = staged
            .remove_proposals()
            .map(|r| identity_of(r.remove_proposal().removed()))
            .collect::<Result<Vec<_>>>()?;
        let new_context = AlbumContext::from_extensions(staged.group_context().extensions())?;

        if let Some((sender, validation)) = incoming {
            // The committer's own leaf is re-verified on every commit, so a change in
            // trust (a user's identity key replaced or revoked) takes effect at once.
            let member = self.group.member_at(sender).ok_or(MlsError::NotMember("committer"))?;
            let claims = crate::binding::verify_credential(&member.credential, &member.signature_key, validation)?;
            let (committer, committer_device) = (claims.user, claims.device);
            let admin = self.context.metadata.is_admin(&committer);
            if !admin && added.iter().chain(&removed).any(|(u, _)| *u != committer) {
                return Err(MlsError::Unauthorized("only admins add or remove other users"));
            }
            if let Some(leaf) = staged.update_path_leaf_node() {
                let claims = verify_leaf(leaf, validation)?;
                if (claims.user, claims.device) != (committer, committer_device) {
                    return Err(MlsError::Unauthorized("update path names another device"));
                }
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
        let evicted = staged.self_removed();
        let rotation = if rotates && !evicted {
            let album = self.context.metadata.album();
            let secret = staged
                .export_secret(provider.crypto(), EXPORTER_LABEL, album.as_bytes(), 32)
                .map_err(MlsError::protocol)?;
            let mut keyring = self.keyring.clone();
            keyring.rotate(new_context.amk_version, &epoch_secret(secret)?)?;
            Some(keyring)
        } else {
            None
        };
        Ok(Effects { added, removed, new_context, rotation, evicted })
    }

    fn finish(&mut self, effects: Effects, hash: CommitHash, superseded: Option<Outgoing>) -> Result<Applied> {
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
        tracing::debug!(epoch = applied.epoch, ?rotated_to, "commit applied");
        Ok(applied)
    }
}

/// What a validated commit does, computed before anything is merged.
struct Effects {
    added: Vec<(UserId, DeviceId)>,
    removed: Vec<(UserId, DeviceId)>,
    new_context: AlbumContext,
    rotation: Option<AmkKeyring>,
    evicted: bool,
}
