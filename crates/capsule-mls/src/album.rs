//! An album is an MLS group: its state, creation, joining, persistence and what
//! can be read from it.
//!
//! The other `impl Album` blocks: `outgoing.rs` turns a [`crate::Change`] into a
//! staged commit and settles it; `inbound.rs` processes commits from the chain
//! and holds every acceptance rule. Nothing here does I/O or reads a clock.

use capsule_amk::{AlbumId, AlbumMetadata, AmkKeyring, AmkVersion, EpochSecret, SealedBundle};
use capsule_identity::encoding;
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{
    GroupId, KeyPackageBundle, LeafNodeIndex, MlsGroup, MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn,
    PURE_PLAINTEXT_WIRE_FORMAT_POLICY, StagedWelcome, Welcome,
};
use openmls_traits::OpenMlsProvider;
use openmls_traits::storage::StorageProvider as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::binding::{DeviceIdentity, Validation, capabilities, claimed_identity, verify_credential};
use crate::boundary::During as _;
use crate::fingerprint::EpochMark;
use crate::{AlbumContext, CIPHERSUITE, Epoch, Member, MlsError, Outgoing, Result};

/// MLS exporter label of the per-epoch secret that feeds capsule-amk's key schedule.
pub(crate) const EXPORTER_LABEL: &str = "capsule amk epoch secret v1";

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

/// What the wrapper keeps beside OpenMLS's own group state. A durable store
/// writes it in the same transaction as the OpenMLS writes of one operation.
#[derive(Serialize, Deserialize)]
struct AlbumRecord {
    format: u8,
    album: [u8; 16],
    /// The keyring's own record, zeroized wherever it is copied.
    keyring: Zeroizing<Vec<u8>>,
    pending: Option<Outgoing>,
    last_applied: Option<CommitHash>,
    evicted: bool,
    marks: Vec<EpochMark>,
    /// The MLS group id: the album id, then a reboot's generation.
    group: Vec<u8>,
}

/// [`AlbumRecord`] as format 2 wrote it (no fingerprint marks): upgraded on load.
#[derive(Serialize, Deserialize)]
struct AlbumRecordV2 {
    format: u8,
    album: [u8; 16],
    keyring: Zeroizing<Vec<u8>>,
    pending: Option<Outgoing>,
    last_applied: Option<CommitHash>,
    evicted: bool,
}

/// Format version of [`AlbumRecord`]. 2: the pending commit names its
/// [`crate::Change`] (format 1 named a `Ceremony`); 3: the fingerprint marks
/// of recent epochs and the group id (which a reboot changes).
const RECORD_FORMAT: u8 = 3;

/// One album as seen by one device.
#[derive(Debug)]
pub struct Album {
    pub(crate) group: MlsGroup,
    pub(crate) context: AlbumContext,
    pub(crate) keyring: AmkKeyring,
    /// The only record of the in-flight commit: set by `stage`, cleared by
    /// `confirm`, `reject`, or a commit that wins its epoch.
    pub(crate) pending: Option<Outgoing>,
    pub(crate) last_applied: Option<CommitHash>,
    pub(crate) evicted: bool,
    /// Fingerprint marks of this device's recent epochs, oldest first.
    pub(crate) marks: Vec<EpochMark>,
}

fn join_config() -> MlsGroupJoinConfig {
    // Handshakes travel as PublicMessages: the server orders commits and must see
    // their epoch; it learns membership changes, which it routes anyway.
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
        .build()
}

/// The reboot generation a group id gives an album: 0 for the album id
/// itself (the group it was created as), `n` for the album id followed by
/// `n` as four big-endian bytes (its `n`th reboot); `None` for a group id
/// that is not the album's.
pub(crate) fn generation_of(album: &[u8; 16], group_id: &[u8]) -> Option<u32> {
    let rest = group_id.strip_prefix(album.as_slice())?;
    if rest.is_empty() {
        return Some(0);
    }
    let bytes: [u8; 4] = rest.try_into().ok()?;
    Some(u32::from_be_bytes(bytes)).filter(|g| *g > 0)
}

/// The album and reboot generation a group id names (the chain of a rebooted
/// album, and its mailbox deliveries, are kept under the group id); `None`
/// for bytes that are no album's group id.
#[must_use]
pub fn album_of_group(group_id: &[u8]) -> Option<(AlbumId, u32)> {
    let album: [u8; 16] = group_id.get(..16)?.try_into().ok()?;
    Some((AlbumId::from_bytes(album), generation_of(&album, group_id)?))
}

/// The group id of an album's `generation`th reboot.
pub(crate) fn group_id_of(album: &AlbumId, generation: u32) -> GroupId {
    if generation == 0 {
        return GroupId::from_slice(album.as_bytes());
    }
    GroupId::from_slice(&[album.as_bytes().as_slice(), &generation.to_be_bytes()].concat())
}

/// The capsule-amk epoch secret from the exporter output.
pub(crate) fn epoch_secret(bytes: Vec<u8>) -> Result<EpochSecret> {
    let array: [u8; 32] = bytes.try_into().map_err(|_| MlsError::Internal("exporter length"))?;
    Ok(EpochSecret::from_exporter(array))
}

impl Album {
    /// Creates an album with `device` as its first member and AMK version 1.
    ///
    /// # Errors
    /// [`MlsError::Unauthorized`] if the creator's user is not an admin of `metadata`;
    /// [`MlsError::Refused`] if this device already stores the album.
    pub fn create<P: OpenMlsProvider>(provider: &P, device: &DeviceIdentity, metadata: AlbumMetadata) -> Result<Self> {
        if !metadata.is_admin(&device.user()) {
            return Err(MlsError::Unauthorized("the creator must be an admin"));
        }
        let entitlements = [(device.user(), AmkVersion::FIRST)].into();
        let context = AlbumContext { metadata, amk_version: AmkVersion::FIRST, rekey: None, entitlements };
        let album = context.metadata.album();
        let group = MlsGroup::builder()
            .with_group_id(GroupId::from_slice(album.as_bytes()))
            .ciphersuite(CIPHERSUITE)
            .with_capabilities(capabilities())
            .with_group_context_extensions(context.extensions()?)
            .use_ratchet_tree_extension(true)
            .with_wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
            .build(provider, device, device.credential_with_key()?)
            .during("creating the group")?;
        let secret = group
            .export_secret(provider.crypto(), EXPORTER_LABEL, album.as_bytes(), 32)
            .during("exporting the epoch secret")?;
        let keyring = AmkKeyring::create(album, &epoch_secret(secret)?)?;
        let mut created =
            Self { group, context, keyring, pending: None, last_applied: None, evicted: false, marks: Vec::new() };
        let mark = created.current_mark(provider, None, None, false)?;
        created.push_mark(mark);
        Ok(created)
    }

    /// Joins from a Welcome and the sealed history bundle beside it.
    ///
    /// Every member of the ratchet tree must carry a valid identity binding; the
    /// bundle must open under the joining epoch's key and match the album's
    /// policy; the ceiling adopted is the AMK version the group context attests.
    ///
    /// # Errors
    /// [`MlsError::Malformed`], [`MlsError::BadSignature`], [`MlsError::Identity`]
    /// (and its kin) for a bad member, [`MlsError::NotMember`] for a Welcome to
    /// a key this device does not hold, [`MlsError::Amk`] for a bundle that is
    /// refused, [`MlsError::Refused`] for a bundle that disagrees with the group
    /// context or an album this device is still an active member of.
    pub fn join<P: OpenMlsProvider>(
        provider: &P,
        welcome: &[u8],
        bundle: &[u8],
        validation: Validation<'_>,
    ) -> Result<Self> {
        Self::join_checked(provider, welcome, bundle, validation, |_| Ok(()))
    }

    /// [`Album::join`], then `check` on the joined album: a refusal by `check`
    /// discards the joined group. On every refusal the KeyPackage the Welcome
    /// used is back in storage.
    pub(crate) fn join_checked<P: OpenMlsProvider>(
        provider: &P,
        welcome: &[u8],
        bundle: &[u8],
        validation: Validation<'_>,
        check: impl FnOnce(&Self) -> Result<()>,
    ) -> Result<Self> {
        let message = MlsMessageIn::tls_deserialize_exact(welcome).map_err(|_| MlsError::Malformed("welcome"))?;
        let MlsMessageBodyIn::Welcome(welcome) = message.extract() else {
            return Err(MlsError::Malformed("not a welcome"));
        };
        // OpenMLS deletes the KeyPackage a Welcome names as soon as it starts
        // reading it, before anything is verified: a refused Welcome (forged,
        // or with a bundle that does not open) would burn it where storage has
        // no transaction to roll back. It is put back on every refusal.
        let spent = welcome.secrets().iter().find_map(|secrets| {
            let reference = secrets.new_member();
            let held: Option<KeyPackageBundle> = provider.storage().key_package(&reference).ok().flatten();
            held.filter(|b| !b.key_package().last_resort()).map(|b| (reference, b))
        });
        let joined =
            Self::join_welcome(provider, welcome, bundle, validation).and_then(|mut joined| match check(&joined) {
                Ok(()) => Ok(joined),
                Err(e) => joined.discard(provider).and(Err(e)),
            });
        if joined.is_err()
            && let Some((reference, held)) = spent
        {
            provider
                .storage()
                .write_key_package(&reference, &held)
                .map_err(|e| MlsError::storage("restoring a key package after a refused welcome", e))?;
        }
        joined
    }

    fn join_welcome<P: OpenMlsProvider>(
        provider: &P,
        welcome: Welcome,
        bundle: &[u8],
        validation: Validation<'_>,
    ) -> Result<Self> {
        const JOINING: &str = "joining from a welcome";
        let mut builder = StagedWelcome::build_from_welcome(provider, &join_config(), welcome).during(JOINING)?;
        // A device re-added (re-bootstrap, or a re-key's fresh leaf) still stores
        // the group it was removed from; that stale state is replaced, but an
        // active membership never is.
        let group_id = builder.processed_welcome().unverified_group_info().group_id().clone();
        let stored = MlsGroup::load(provider.storage(), &group_id).map_err(|e| MlsError::storage(JOINING, e))?;
        if let Some(old) = stored {
            if old.is_active() {
                return Err(MlsError::Refused("already an active member of this album"));
            }
            builder = builder.replace_old_group();
        }
        let staged = builder.build().during(JOINING)?;
        for member in staged.members() {
            verify_credential(&member.credential, &member.signature_key, validation)?;
        }
        let context = AlbumContext::from_extensions(staged.group_context().extensions())?;
        let album = context.metadata.album();
        // Whether a rebooted group may replace the one this device holds is
        // decided against that one (`Album::join_reboot`), never against what
        // the new group says of itself.
        if generation_of(album.as_bytes(), group_id.as_slice()).is_none() {
            return Err(MlsError::Refused("the group id is not the album's"));
        }
        let secret = staged
            .export_secret(provider.crypto(), EXPORTER_LABEL, album.as_bytes(), 32)
            .during("exporting the joining epoch's secret")?;
        let key = epoch_secret(secret)?.bundle_key(&album)?;
        // The bundle must carry exactly the versions the joining device's user is
        // entitled to, as the group context (not the committer) says.
        let own = staged.own_leaf_index();
        let me = staged
            .members()
            .find(|m| m.index == own)
            .ok_or(MlsError::Internal("own leaf missing from the welcome's tree"))
            .and_then(|m| claimed_identity(&m.credential))?;
        let first =
            *context.entitlements.get(&me.user).ok_or(MlsError::Refused("the group grants this user nothing"))?;
        let mut keyring = SealedBundle::from_bytes(bundle)?.open_for_user(&key, &context.metadata, first)?;
        if keyring.current_version() != context.amk_version {
            return Err(MlsError::Refused("bundle's current version is not the group's"));
        }
        keyring.attest_ceiling(context.amk_version);
        // Marked before anything is stored, so joining cannot fail after it.
        let epoch = Epoch(staged.group_context().epoch().as_u64());
        let mark = EpochMark::derive(epoch, None, None, false, |label| {
            staged.export_secret(provider.crypto(), label, album.as_bytes(), 32).during(JOINING)
        })?;
        let group = staged.into_group(provider).during(JOINING)?;
        Ok(Self { group, context, keyring, pending: None, last_applied: None, evicted: false, marks: vec![mark] })
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
            keyring: self.keyring.to_bytes()?,
            pending: self.pending.clone(),
            last_applied: self.last_applied,
            evicted: self.evicted,
            marks: self.marks.clone(),
            group: self.group.group_id().as_slice().to_vec(),
        };
        encoding::encode_secret(&record).map_err(|_| MlsError::Internal("album record encoding"))
    }

    /// Loads an album from the provider's storage and the record
    /// [`Album::to_record`] wrote with it.
    ///
    /// # Errors
    /// [`MlsError::Malformed`] for a record that does not decode (or of another
    /// format version); [`MlsError::NotMember`] when storage holds no such group;
    /// [`MlsError::Refused`] when storage and record disagree (a torn write);
    /// [`MlsError::Storage`] when storage cannot be read.
    pub fn load<P: OpenMlsProvider>(provider: &P, record: &[u8]) -> Result<Self> {
        let record = match record.first() {
            Some(&RECORD_FORMAT) => {
                encoding::decode_canonical(record).map_err(|_| MlsError::Malformed("album record"))?
            }
            Some(2) => {
                let old: AlbumRecordV2 =
                    encoding::decode_canonical(record).map_err(|_| MlsError::Malformed("album record"))?;
                let AlbumRecordV2 { album, keyring, pending, last_applied, evicted, .. } = old;
                let group = album.to_vec();
                AlbumRecord {
                    format: RECORD_FORMAT,
                    album,
                    keyring,
                    pending,
                    last_applied,
                    evicted,
                    marks: Vec::new(),
                    group,
                }
            }
            _ => return Err(MlsError::Malformed("album record format")),
        };
        if generation_of(&record.album, &record.group).is_none() {
            return Err(MlsError::Refused("stored group id is not this album's"));
        }
        let group = MlsGroup::load(provider.storage(), &GroupId::from_slice(&record.group))
            .map_err(|e| MlsError::storage("loading the group", e))?
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
            marks: record.marks,
        })
    }

    /// Forgets this album's group state in the provider's storage: the first
    /// step of a re-bootstrap, after which the device is re-added by another
    /// member and joins afresh. A durable caller runs it in the transaction
    /// that also removes the album's records.
    ///
    /// # Errors
    /// [`MlsError::Storage`] when storage cannot be written.
    pub fn discard<P: OpenMlsProvider>(&mut self, provider: &P) -> Result<()> {
        self.group.delete(provider.storage()).map_err(|e| MlsError::storage("discarding the group", e))
    }

    /// The album's id.
    #[must_use]
    pub fn id(&self) -> AlbumId {
        self.context.metadata.album()
    }

    /// How many times the album was rebooted into a new MLS group (0: the
    /// group it was created as).
    #[must_use]
    pub fn generation(&self) -> u32 {
        generation_of(self.id().as_bytes(), self.group.group_id().as_slice()).unwrap_or(0)
    }

    /// The MLS group id (the album id, then the reboot generation): what the
    /// chain of this generation is kept under.
    #[must_use]
    pub fn group_id(&self) -> Vec<u8> {
        self.group.group_id().as_slice().to_vec()
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

    /// Takes back the older AMK versions an escrowed `lineage` of this album
    /// holds ([`AmkKeyring::recover_history`]); the only change to the keyring
    /// that does not come from a commit. Returns how many versions were added.
    ///
    /// # Errors
    /// As [`AmkKeyring::recover_history`]; the keyring is unchanged on error.
    pub fn recover_history(&mut self, lineage: &AmkKeyring) -> Result<usize> {
        Ok(self.keyring.recover_history(lineage)?)
    }

    /// The current epoch.
    #[must_use]
    pub fn epoch(&self) -> Epoch {
        Epoch(self.group.epoch().as_u64())
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

    /// The staged commit waiting for the server's answer.
    #[must_use]
    pub const fn pending(&self) -> Option<&Outgoing> {
        self.pending.as_ref()
    }

    /// Whether this device was removed.
    #[must_use]
    pub const fn is_evicted(&self) -> bool {
        self.evicted
    }

    /// Members, sorted (by user, then device).
    #[must_use]
    pub fn members(&self) -> Vec<Member> {
        let mut out: Vec<_> = self.group.members().filter_map(|m| claimed_identity(&m.credential).ok()).collect();
        out.sort();
        out
    }

    /// Each member's leaf encryption key: changes exactly when the leaf is replaced.
    #[must_use]
    pub fn leaf_fingerprints(&self) -> Vec<(Member, Vec<u8>)> {
        let mut out: Vec<_> = self
            .group
            .members()
            .filter_map(|m| claimed_identity(&m.credential).ok().map(|id| (id, m.encryption_key)))
            .collect();
        out.sort();
        out
    }

    /// The leaves whose member satisfies `pred`.
    pub(crate) fn leaves_where(&self, pred: impl Fn(Member) -> bool) -> Vec<LeafNodeIndex> {
        self.group.members().filter(|m| claimed_identity(&m.credential).is_ok_and(&pred)).map(|m| m.index).collect()
    }

    /// Refuses any new operation on an album this device was removed from.
    pub(crate) fn ensure_operational(&self) -> Result<()> {
        if self.evicted || !self.group.is_active() {
            return Err(MlsError::Evicted);
        }
        Ok(())
    }
}
