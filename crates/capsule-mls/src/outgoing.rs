//! This device's own changes: a [`Change`] becomes a plan, the plan one staged
//! commit (with the Welcome and the sealed history bundle for joiners), and the
//! commit stays pending until the server's answer settles it.
//!
//! Nothing is merged before [`Album::confirm`]: the staged commit lives in
//! OpenMLS's pending-commit state and in [`Album::pending`], which the record
//! persists, so a restart finds it again.

use std::collections::BTreeSet;

use capsule_amk::HistoryBundle;
use capsule_identity::UserId;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{KeyPackage, KeyPackageIn, LeafNodeIndex, LeafNodeParameters, ProtocolVersion};
use openmls_traits::OpenMlsProvider;
use serde::{Deserialize, Serialize};

use crate::album::{EXPORTER_LABEL, epoch_secret};
use crate::binding::{DeviceIdentity, Validation, claimed_identity, verify_leaf};
use crate::boundary::During as _;
use crate::inbound::Applied;
use crate::rng::ProviderRng;
use crate::{Album, AlbumContext, CIPHERSUITE, Change, CommitHash, Epoch, Member, MlsError, Result};

/// A staged commit's messages, exactly as they go to the server. The server
/// keeps the Welcome and the sealed bundle together and hands both to the joiners.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outgoing {
    /// What this commit does.
    pub change: Change,
    /// The epoch the commit was made in (the chain position it claims).
    pub epoch: Epoch,
    /// The serialized commit (`MlsMessage`).
    pub commit: Vec<u8>,
    /// Its hash.
    pub commit_hash: CommitHash,
    /// The serialized Welcome, if the commit adds devices.
    pub welcome: Option<Vec<u8>>,
    /// The sealed history bundle for the joiners, if the commit adds devices.
    pub bundle: Option<Vec<u8>>,
}

/// Publishes a KeyPackage for `device`: what other devices need to add it.
///
/// # Errors
/// [`MlsError::Storage`] or [`MlsError::Internal`] from OpenMLS.
pub fn key_package<P: OpenMlsProvider>(provider: &P, device: &DeviceIdentity) -> Result<Vec<u8>> {
    let made = crate::key_packages::new_key_package(provider, device, false, crate::KEY_PACKAGE_LIFETIME_SECS)?;
    Ok(made.bytes)
}

/// Decodes, checks and verifies the identity binding of a KeyPackage.
pub(crate) fn verified_key_package<P: OpenMlsProvider>(
    provider: &P,
    bytes: &[u8],
    validation: Validation<'_>,
) -> Result<(KeyPackage, Member)> {
    let kp = KeyPackageIn::tls_deserialize_exact(bytes).map_err(|_| MlsError::Malformed("key package"))?;
    let kp = kp.validate(provider.crypto(), ProtocolVersion::Mls10).during("validating a key package")?;
    if kp.ciphersuite() != CIPHERSUITE {
        return Err(MlsError::Refused("key package of another ciphersuite"));
    }
    let claims = verify_leaf(kp.leaf_node(), validation)?;
    Ok((kp, Member { user: claims.user, device: claims.device }))
}

/// What one commit does, decided by [`Album::plan`] before anything is built.
#[derive(Default)]
struct Plan {
    /// Devices added (verified KeyPackages).
    adds: Vec<KeyPackage>,
    /// Leaves removed.
    removes: Vec<LeafNodeIndex>,
    /// The album context the commit sets, if it changes it.
    new_context: Option<AlbumContext>,
    /// Whether the committer replaces its own leaf even without other proposals.
    force_self_update: bool,
    /// Whether `removes` are re-added from `adds`: built with OpenMLS's
    /// fork-resolution helper, every leaf but those in the committer's partition.
    readd: bool,
}

impl Album {
    /// Stages the commit that makes `change`, signed by `device`. Nothing is
    /// merged: the commit stays pending until [`Album::confirm`] (the server
    /// accepted it) or [`Album::reject`], and [`Album::pending`] returns it.
    ///
    /// Idempotent: staging a change equal to the pending one returns the same
    /// [`Outgoing`] (a retry after a lost answer or a restart).
    ///
    /// ```
    /// # #[cfg(feature = "testkit")]
    /// # fn main() -> Result<(), capsule_mls::MlsError> {
    /// use capsule_amk::{AlbumId, AlbumMetadata, HistoryPolicy};
    /// use capsule_mls::{Album, Change, Member, testkit::Directory};
    ///
    /// let mut directory = Directory::new(7);
    /// let alice = directory.user(1)?;
    /// let phone = directory.device(alice)?;
    /// let metadata = AlbumMetadata::new(AlbumId::from_bytes([1; 16]), HistoryPolicy::Full, [alice].into())?;
    /// let mut album = Album::create(&phone.provider, &phone.me, metadata)?;
    ///
    /// // Alice's laptop joins: one commit, one Welcome, one sealed history bundle.
    /// let laptop = directory.device(alice)?;
    /// let change = Change::AddDevice { key_package: laptop.key_package()? };
    /// let out = album.stage(&phone.provider, &phone.me, &change, directory.validation())?;
    /// assert_eq!(album.stage(&phone.provider, &phone.me, &change, directory.validation())?, out);
    /// assert!(matches!(
    ///     album.stage(&phone.provider, &phone.me, &Change::RotateAmk, directory.validation()),
    ///     Err(capsule_mls::MlsError::PendingCommit)
    /// ));
    ///
    /// // The server accepted it: merge.
    /// let applied = album.confirm(&phone.provider)?;
    /// assert_eq!(applied.added, vec![Member { user: alice, device: laptop.id }]);
    /// let (welcome, bundle) = (out.welcome.unwrap_or_default(), out.bundle.unwrap_or_default());
    /// let joined = Album::join(&laptop.provider, &welcome, &bundle, directory.validation())?;
    /// assert_eq!(joined.epoch_authenticator(), album.epoch_authenticator());
    /// # Ok(())
    /// # }
    /// # #[cfg(not(feature = "testkit"))]
    /// # fn main() {}
    /// ```
    ///
    /// # Errors
    /// For every change: [`MlsError::PendingCommit`] while a different change is
    /// pending; [`MlsError::Evicted`] once this device was removed. Then, by change:
    /// - [`Change::AddUser`]: [`MlsError::Unauthorized`] unless the committer is
    ///   an admin or for a KeyPackage of another user; [`MlsError::Refused`] for an
    ///   empty directory; [`MlsError::AlreadyMember`] when every device listed is
    ///   in the album already (those that are, or are listed twice, are skipped
    ///   and the others added); [`MlsError::Malformed`], [`MlsError::BadSignature`],
    ///   [`MlsError::Identity`], [`MlsError::ForeignCredential`] for a KeyPackage
    ///   that does not verify.
    /// - [`Change::AddDevice`]: as `AddUser`, the KeyPackage being of the
    ///   committer's own user (no admin needed).
    /// - [`Change::RemoveUser`]: [`MlsError::Unauthorized`] unless an admin;
    ///   [`MlsError::Refused`] for the committer's own user; [`MlsError::NotMember`].
    /// - [`Change::RemoveDevice`]: [`MlsError::Refused`] for the committing device
    ///   itself; [`MlsError::NotMember`] if no such device of the committer's user.
    /// - [`Change::RotateAmk`], [`Change::SelfUpdate`]: nothing more.
    /// - [`Change::BeginRekey`]: [`MlsError::Unauthorized`] unless an admin;
    ///   [`MlsError::RekeyState`] if that very re-key is already in progress.
    /// - [`Change::FinishRekey`]: [`MlsError::Unauthorized`] unless an admin;
    ///   [`MlsError::RekeyState`] if that re-key is not in progress.
    /// - [`Change::ReAddDevice`]: KeyPackage errors as `AddUser`;
    ///   [`MlsError::Unauthorized`] unless an admin or a device of the same
    ///   user; [`MlsError::Refused`] for the committing device itself (use
    ///   [`Change::SelfUpdate`]);
    ///   [`MlsError::NotMember`] if that device is not in the album.
    ///
    /// [`MlsError::Storage`] and [`MlsError::Internal`] are faults, not refusals.
    pub fn stage<P: OpenMlsProvider>(
        &mut self,
        provider: &P,
        device: &DeviceIdentity,
        change: &Change,
        validation: Validation<'_>,
    ) -> Result<Outgoing> {
        match &self.pending {
            Some(pending) if pending.change == *change => return Ok(pending.clone()),
            Some(_) => return Err(MlsError::PendingCommit),
            None => {}
        }
        self.ensure_operational()?;
        // Receivers refuse a commit whose committer's certificate is outside its
        // validity: one sent anyway would sit at the head of the chain and stop
        // every honest member. Renew first (a new certificate for the same key,
        // carried by a self-update).
        device.certificate().validity().check(validation.now).map_err(MlsError::OwnCertificate)?;
        let plan = self.plan(provider, device, change, validation)?;
        self.commit(provider, device, change, plan)
    }

    /// What `change` commits, or why this device refuses to commit it. Each arm
    /// says only what is specific to its change; every receiver re-checks the
    /// result in `effects_of` (inbound.rs).
    fn plan<P: OpenMlsProvider>(
        &self,
        provider: &P,
        device: &DeviceIdentity,
        change: &Change,
        validation: Validation<'_>,
    ) -> Result<Plan> {
        let me = device.user();
        let require_admin =
            |what| if self.context.metadata.is_admin(&me) { Ok(()) } else { Err(MlsError::Unauthorized(what)) };
        match change {
            Change::AddUser { user, directory } => {
                require_admin("only admins add users")?;
                let adds = self.new_devices(provider, *user, directory, validation)?;
                // A user's first device fixes the user's entitlement; the user's
                // later devices receive the same range.
                let new_context = (!self.context.entitlements.contains_key(user)).then(|| {
                    let mut next = self.context.clone();
                    let first = next.metadata.history_policy().entitled_from(next.amk_version);
                    next.entitlements.insert(*user, first);
                    next
                });
                Ok(Plan { adds, new_context, ..Plan::default() })
            }
            Change::AddDevice { key_package } => {
                let adds = self.new_devices(provider, me, core::slice::from_ref(key_package), validation)?;
                Ok(Plan { adds, ..Plan::default() })
            }
            Change::RemoveUser { user } => {
                require_admin("only admins remove users")?;
                if *user == me {
                    return Err(MlsError::Refused("a user cannot remove itself with its own device's commit"));
                }
                let removes = self.leaves_where(|m| m.user == *user);
                if removes.is_empty() {
                    return Err(MlsError::NotMember("user"));
                }
                let mut next = self.rotated()?;
                next.entitlements.remove(user);
                Ok(Plan { removes, new_context: Some(next), ..Plan::default() })
            }
            Change::RemoveDevice { device: lost } => {
                if *lost == device.device() {
                    return Err(MlsError::Refused("a device cannot remove itself"));
                }
                let removes = self.leaves_where(|m| m == Member { user: me, device: *lost });
                if removes.is_empty() {
                    return Err(MlsError::NotMember("device of this user"));
                }
                Ok(Plan { removes, new_context: Some(self.rotated()?), ..Plan::default() })
            }
            Change::RotateAmk => Ok(Plan { new_context: Some(self.rotated()?), ..Plan::default() }),
            Change::SelfUpdate => Ok(Plan { force_self_update: true, ..Plan::default() }),
            Change::BeginRekey { marker } => {
                require_admin("only admins re-key an album")?;
                if self.context.rekey == Some(*marker) {
                    return Err(MlsError::RekeyState("this re-key is already in progress"));
                }
                let new_context = AlbumContext { rekey: Some(*marker), ..self.context.clone() };
                Ok(Plan { new_context: Some(new_context), ..Plan::default() })
            }
            Change::FinishRekey { id } => {
                require_admin("only admins re-key an album")?;
                if self.context.rekey.map(|m| m.id) != Some(*id) {
                    return Err(MlsError::RekeyState("that re-key is not in progress"));
                }
                let new_context = AlbumContext { rekey: None, ..self.rotated()? };
                Ok(Plan { new_context: Some(new_context), ..Plan::default() })
            }
            Change::ReAddDevice { key_package } => {
                let (kp, target) = verified_key_package(provider, key_package, validation)?;
                // An admin re-adds any device (a re-key's straggler); a device re-adds
                // another of its own user (a re-bootstrap).
                if target.user != me {
                    require_admin("only admins re-add other users' devices")?;
                }
                if target.device == device.device() {
                    return Err(MlsError::Refused("a device replaces its own leaf with a self-update"));
                }
                let removes = self.leaves_where(|m| m == target);
                if removes.is_empty() {
                    return Err(MlsError::NotMember("device to re-add"));
                }
                Ok(Plan { adds: vec![kp], removes, readd: true, ..Plan::default() })
            }
            Change::UpgradeAlbum { upgrade } => {
                require_admin("only admins upgrade an album")?;
                if self.context.metadata.already_has(upgrade) {
                    return Err(MlsError::AlreadyInEffect("the album already has this metadata"));
                }
                let metadata = self.context.metadata.upgraded(upgrade)?;
                Ok(Plan { new_context: Some(AlbumContext { metadata, ..self.context.clone() }), ..Plan::default() })
            }
        }
    }

    /// Verified KeyPackages of new devices of `user`, none of them a member yet.
    fn new_devices<P: OpenMlsProvider>(
        &self,
        provider: &P,
        user: UserId,
        directory: &[Vec<u8>],
        validation: Validation<'_>,
    ) -> Result<Vec<KeyPackage>> {
        if directory.is_empty() {
            return Err(MlsError::Refused("no key packages"));
        }
        let members = self.members();
        let mut seen = BTreeSet::new();
        let mut key_packages = Vec::with_capacity(directory.len());
        let mut already = None;
        for bytes in directory {
            let (kp, member) = verified_key_package(provider, bytes, validation)?;
            if member.user != user {
                return Err(MlsError::Unauthorized("key package of another user"));
            }
            // A device already in the album (or listed twice) is skipped, so
            // "add every device of the user" adds exactly the ones missing.
            if members.contains(&member) || !seen.insert(member.device) {
                already = Some(member);
                continue;
            }
            key_packages.push(kp);
        }
        match already {
            Some(member) if key_packages.is_empty() => Err(MlsError::AlreadyMember(member)),
            _ => Ok(key_packages),
        }
    }

    /// The current context with the next AMK version.
    fn rotated(&self) -> Result<AlbumContext> {
        Ok(AlbumContext { amk_version: self.context.amk_version.next()?, ..self.context.clone() })
    }

    /// Builds and stages the one commit of `plan`, with the Welcome and sealed
    /// history bundle if it adds devices, and records it as pending.
    fn commit<P: OpenMlsProvider>(
        &mut self,
        provider: &P,
        device: &DeviceIdentity,
        change: &Change,
        plan: Plan,
    ) -> Result<Outgoing> {
        const STAGING: &str = "staging a commit";
        let Plan { adds, removes, new_context, force_self_update, readd } = plan;
        let epoch = self.epoch();
        let has_adds = !adds.is_empty();
        // The joiners' bundle is built before anything is staged, so a committer
        // that does not hold the joining user's range refuses with nothing staged.
        let history = self.history_for(adds.first(), new_context.as_ref())?;
        let mut builder = if readd {
            // Re-adding is fork resolution's re-add (`002_…`): the committer's
            // partition is every leaf but the ones replaced, and OpenMLS removes
            // the complement and adds their fresh KeyPackages.
            let own_partition: Vec<_> =
                self.group.members().map(|m| m.index).filter(|index| !removes.contains(index)).collect();
            self.group
                .recover_fork_by_readding(&own_partition)
                .map_err(|_| MlsError::Internal("re-add partition"))?
                .provide_key_packages(adds)
        } else {
            self.group.commit_builder().propose_adds(adds).propose_removals(removes)
        }
        .force_self_update(force_self_update);
        if force_self_update {
            // The new leaf carries the device's current certificate: a renewed
            // one reaches every member this way.
            builder = builder.leaf_node_parameters(
                LeafNodeParameters::builder().with_credential_with_key(device.credential_with_key()?).build(),
            );
        }
        if let Some(context) = &new_context {
            builder = builder.propose_group_context_extensions(context.extensions()?).during(STAGING)?;
        }
        let bundle = builder
            .load_psks(provider.storage())
            .during(STAGING)?
            .build(provider.rand(), provider.crypto(), device, |_| true)
            .during(STAGING)?
            .stage_commit(provider)
            .during(STAGING)?;
        let commit = bundle.commit().tls_serialize_detached().map_err(|_| MlsError::Internal("commit encoding"))?;
        let welcome = match bundle.to_welcome_msg() {
            Some(w) if has_adds => {
                Some(w.tls_serialize_detached().map_err(|_| MlsError::Internal("welcome encoding"))?)
            }
            _ => None,
        };
        let sealed = match &history {
            Some(history) if has_adds => Some(self.seal_bundle_for_pending(provider, history)?),
            _ => None,
        };
        let out = Outgoing {
            change: change.clone(),
            epoch,
            commit_hash: CommitHash::of(&commit),
            commit,
            welcome,
            bundle: sealed,
        };
        tracing::debug!(epoch = epoch.0, change = out.change.name(), "commit staged");
        self.pending = Some(out.clone());
        Ok(out)
    }

    /// The history the joiners of a commit receive. Every commit that adds
    /// devices adds devices of one user (they share one Welcome and one bundle),
    /// and they receive the versions from that user's entitlement on.
    pub(crate) fn history_for(
        &self,
        first_add: Option<&KeyPackage>,
        new_context: Option<&AlbumContext>,
    ) -> Result<Option<HistoryBundle>> {
        let Some(kp) = first_add else { return Ok(None) };
        let joining = claimed_identity(kp.leaf_node().credential())?;
        let context = new_context.unwrap_or(&self.context);
        let first = *context.entitlements.get(&joining.user).ok_or(MlsError::Internal("joining user not entitled"))?;
        Ok(Some(HistoryBundle::for_user(&self.keyring, &self.context.metadata, first)?))
    }

    /// `history` sealed under the joining epoch's exporter-derived key. Adds
    /// never rotate, so it is the current keyring's.
    pub(crate) fn seal_bundle_for_pending<P: OpenMlsProvider>(
        &self,
        provider: &P,
        history: &HistoryBundle,
    ) -> Result<Vec<u8>> {
        let staged = self.group.pending_commit().ok_or(MlsError::Internal("no staged commit"))?;
        let album = self.context.metadata.album();
        let secret = staged
            .export_secret(provider.crypto(), EXPORTER_LABEL, album.as_bytes(), 32)
            .during("exporting the joining epoch's secret")?;
        let key = epoch_secret(secret)?.bundle_key(&album)?;
        let mut rng = ProviderRng(provider.rand());
        Ok(history.seal(&key, &mut rng)?.to_bytes()?)
    }

    /// The server accepted the pending commit: merge it, and rotate the AMK if
    /// the commit rotates it.
    ///
    /// # Errors
    /// [`MlsError::NoPendingCommit`]; [`MlsError::Storage`] from the merge.
    pub fn confirm<P: OpenMlsProvider>(&mut self, provider: &P) -> Result<Applied> {
        let pending = self.pending.clone().ok_or(MlsError::NoPendingCommit)?;
        let staged = self.group.pending_commit().ok_or(MlsError::NoPendingCommit)?;
        let effects = self.effects_of(provider, staged, None, pending.commit_hash)?;
        self.group.merge_pending_commit(provider).during("merging the pending commit")?;
        self.pending = None;
        self.finish(effects, pending.commit_hash, None)
    }

    /// The server refused the pending commit: clear it; the album is as before.
    /// Returns the cleared commit, if there was one.
    ///
    /// # Errors
    /// [`MlsError::Storage`] if clearing cannot be persisted.
    pub fn reject<P: OpenMlsProvider>(&mut self, provider: &P) -> Result<Option<Outgoing>> {
        self.group
            .clear_pending_commit(provider.storage())
            .map_err(|e| MlsError::storage("clearing the pending commit", e))?;
        Ok(self.pending.take())
    }
}
