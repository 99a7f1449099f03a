//! Rebooting an album into a new MLS group (`002_…`'s reboot strategy): the
//! way out of a fork whose sides cannot be re-added into one another (no
//! majority, or a server that showed two histories).
//!
//! An admin's device builds the new group with OpenMLS's
//! `MlsGroup::reboot(..)` → `RebootBuilder::finish(..)`:
//!
//! - **group id**: the album id followed by the reboot generation (four
//!   big-endian bytes); the album id stays the application's, and the album
//!   record keeps the group id, so a device maps one to the other durably.
//!   Its chain is kept under the new group id.
//! - **metadata migrated**: OpenMLS copies the old group's configuration but
//!   not its group-context extensions; the album context is carried over
//!   (metadata, every user's entitlement), the re-key marker dropped, and the
//!   AMK version raised by one.
//! - **AMK lineage**: the new group starts from the rebooting device's keyring
//!   (every version it holds: none is lost) plus the new version, derived from
//!   the new group's first epoch. Every joiner receives, in its history
//!   bundle, the versions its user is entitled to under the album's policy,
//!   as in any add.
//! - **members**: `finish` adds the first user's devices in the commit that
//!   creates the group; every further user is an ordinary
//!   [`Change::AddUser`] in the new group (a commit adds the devices of one
//!   user: they share one Welcome and one bundle). Only members of the old
//!   group are re-added by a reboot.
//! - **members of the old group** join with [`Album::join_reboot`], which
//!   decides against the group they hold, never against what the new group
//!   says of itself: the same album, a later generation, the same metadata
//!   and entitlements, and a creator (leaf 0) that is an admin and a member
//!   of the old group. They then forget the old group ([`Album::discard`]).
//!   A device added to the album later joins with [`Album::join`], from an
//!   ordinary add.
//!
//! [`Change::AddUser`]: crate::Change::AddUser

use openmls::prelude::LeafNodeIndex;
use openmls::prelude::tls_codec::Serialize as _;
use openmls_traits::OpenMlsProvider;

use crate::album::{EXPORTER_LABEL, epoch_secret, group_id_of};
use crate::binding::claimed_identity;
use crate::binding::{DeviceIdentity, Validation, capabilities};
use crate::outgoing::verified_key_package;
use crate::{Album, AlbumContext, Change, CommitHash, Epoch, MlsError, Outgoing, Result};
use openmls::prelude::{CommitMessageBundle, KeyPackage, MlsGroup};

impl Album {
    /// Reboots the album into a new group (see the module docs): returns the
    /// new album, whose first commit (adding the devices of `key_packages`,
    /// all of one user that is a member of this album) is pending like any
    /// staged commit, and that commit with its Welcome and bundle. Once the
    /// new chain accepts it, [`Album::confirm`]; the old album is then
    /// discarded. Nothing changes in this album.
    ///
    /// # Errors
    /// [`MlsError::Unauthorized`] unless this device's user is an admin;
    /// [`MlsError::Refused`] for no KeyPackage, KeyPackages of several users
    /// or this device's own, or a generation past `u32::MAX`;
    /// [`MlsError::NotMember`] for a device that is not in this album;
    /// KeyPackage errors as [`Album::stage`]'s.
    pub fn reboot<P: OpenMlsProvider>(
        &self,
        provider: &P,
        device: &DeviceIdentity,
        key_packages: &[Vec<u8>],
        validation: Validation<'_>,
    ) -> Result<(Self, Outgoing)> {
        if !self.context.metadata.is_admin(&device.user()) {
            return Err(MlsError::Unauthorized("only admins reboot an album"));
        }
        let members = self.members();
        let mut adds = Vec::with_capacity(key_packages.len());
        let mut users = Vec::new();
        for bytes in key_packages {
            let (kp, member) = verified_key_package(provider, bytes, validation)?;
            if member.device == device.device() {
                return Err(MlsError::Refused("the rebooting device creates the new group"));
            }
            if !members.contains(&member) {
                return Err(MlsError::NotMember("a reboot re-adds members of the album only"));
            }
            if !users.contains(&member.user) {
                users.push(member.user);
            }
            adds.push(kp);
        }
        let [user] = users.as_slice() else {
            return Err(MlsError::Refused("a reboot's first commit adds the devices of one user"));
        };
        let first = adds.first().cloned();
        let generation = self.generation().checked_add(1).ok_or(MlsError::Refused("no reboot generation left"))?;
        let album = self.id();
        let context =
            AlbumContext { amk_version: self.context.amk_version.next()?, rekey: None, ..self.context.clone() };
        let (group, bundle) = self
            .group
            .reboot(group_id_of(&album, generation))
            .refine_group_builder(|builder| builder.with_capabilities(capabilities()))
            .finish(context.extensions()?, adds, |builder| builder, provider, device, device.credential_with_key()?)
            .map_err(|e| {
                tracing::warn!(error = %e, "reboot failed");
                MlsError::Refused("OpenMLS refused the reboot")
            })?;
        // Nothing after `finish` may leave the new group behind in storage.
        match Self::rebooted(provider, group, context, &self.keyring, &bundle, key_packages, first.as_ref(), *user) {
            Ok(done) => {
                tracing::info!(generation, "album rebooted into a new group");
                Ok(done)
            }
            Err((mut group, e)) => {
                group.delete(provider.storage()).map_err(|_| MlsError::Internal("dropping a failed reboot"))?;
                Err(e)
            }
        }
    }

    /// The part of a reboot after OpenMLS created the group: on error the
    /// group comes back for the caller to delete.
    #[allow(clippy::too_many_arguments, clippy::result_large_err)] // one call site
    fn rebooted<P: OpenMlsProvider>(
        provider: &P,
        group: MlsGroup,
        context: AlbumContext,
        keyring: &capsule_amk::AmkKeyring,
        bundle: &CommitMessageBundle,
        key_packages: &[Vec<u8>],
        first: Option<&KeyPackage>,
        user: capsule_identity::UserId,
    ) -> core::result::Result<(Self, Outgoing), (MlsGroup, MlsError)> {
        let album = context.metadata.album();
        // The new version comes from the new group's first epoch, which only
        // this device saw; joiners receive it in their bundles.
        let keyring = match group.export_secret(provider.crypto(), EXPORTER_LABEL, album.as_bytes(), 32) {
            Ok(secret) => epoch_secret(secret).and_then(|secret| {
                let mut keyring = keyring.duplicate();
                keyring.rotate(context.amk_version, &secret)?;
                Ok(keyring)
            }),
            Err(_) => Err(MlsError::Internal("exporting the rebooted group's secret")),
        };
        let keyring = match keyring {
            Ok(k) => k,
            Err(e) => return Err((group, e)),
        };
        let mut rebooted =
            Self { group, context, keyring, pending: None, last_applied: None, evicted: false, marks: Vec::new() };
        let out = (|| {
            let mark = rebooted.current_mark(provider, None, None, false)?;
            rebooted.push_mark(mark);
            let commit = bundle.commit().tls_serialize_detached().map_err(|_| MlsError::Internal("commit encoding"))?;
            let welcome = bundle
                .to_welcome_msg()
                .ok_or(MlsError::Internal("a reboot without a welcome"))?
                .tls_serialize_detached()
                .map_err(|_| MlsError::Internal("welcome encoding"))?;
            let history = rebooted.history_for(first, None)?;
            let sealed = match &history {
                Some(history) => Some(rebooted.seal_bundle_for_pending(provider, history)?),
                None => None,
            };
            Ok(Outgoing {
                change: Change::AddUser { user, directory: key_packages.to_vec() },
                epoch: Epoch::ZERO,
                commit_hash: CommitHash::of(&commit),
                commit,
                welcome: Some(welcome),
                bundle: sealed,
            })
        })();
        match out {
            Ok(out) => {
                rebooted.pending = Some(out.clone());
                Ok((rebooted, out))
            }
            Err(e) => Err((rebooted.group, e)),
        }
    }

    /// Whether this album, just joined, is a reboot of `old` (the album this
    /// device holds) by one of its admins: the same album, a later
    /// generation, the same metadata and entitlements, and a creator (leaf 0)
    /// that is an admin and a member of `old`. A durable caller that joined
    /// inside a transaction checks this before it commits, and rolls back
    /// on a refusal.
    ///
    /// # Errors
    /// [`MlsError::NotAReboot`] as above.
    pub fn verify_reboot_of(&self, old: &Self) -> Result<()> {
        if self.id() != old.id() || self.generation() <= old.generation() {
            return Err(MlsError::NotAReboot("not a later generation of this album"));
        }
        let (new, before) = (self.context(), old.context());
        if new.metadata != before.metadata || new.entitlements != before.entitlements {
            return Err(MlsError::NotAReboot("a reboot carries the album's metadata and entitlements over"));
        }
        let creator = self
            .group
            .member(LeafNodeIndex::new(0))
            .ok_or(MlsError::NotAReboot("a rebooted group without its creator"))
            .and_then(claimed_identity)?;
        if !before.metadata.is_admin(&creator.user) || !old.members().contains(&creator) {
            return Err(MlsError::NotAReboot("only an admin of the album reboots it"));
        }
        Ok(())
    }

    /// Joins the next generation of an album this device holds (see the
    /// module docs), from the Welcome and bundle of the rebooted group,
    /// deciding against `old`: the same album, a later generation, the same
    /// metadata and entitlements, and a creator (leaf 0, the rebooting
    /// device, which the first joiners see in place) that is an admin and a
    /// member of `old`. On a refusal nothing stays stored. The caller then
    /// discards `old`.
    ///
    /// # Errors
    /// As [`Album::join`]; [`MlsError::NotAReboot`] for a group that is not
    /// a reboot of `old` by one of its admins.
    pub fn join_reboot<P: OpenMlsProvider>(
        provider: &P,
        old: &Self,
        welcome: &[u8],
        bundle: &[u8],
        validation: Validation<'_>,
    ) -> Result<Self> {
        Self::join_checked(provider, welcome, bundle, validation, |joined| joined.verify_reboot_of(old))
    }
}
