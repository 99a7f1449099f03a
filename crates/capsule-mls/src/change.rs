//! The one description of a change to an album: what [`Album::stage`] commits,
//! what an [`Outgoing`] says it does, and what the resilience layer persists and
//! re-proposes.
//!
//! [`Album::stage`]: crate::Album::stage
//! [`Outgoing`]: crate::Outgoing

use capsule_identity::{DeviceId, UserId};
use serde::{Deserialize, Serialize};

use crate::{RekeyId, RekeyMarker};

/// A membership or key change. Each is one commit, staged by [`Album::stage`].
///
/// Two equal changes are the same request: staging one while an equal one is
/// pending returns the pending commit.
///
/// # Adding a ceremony
/// A new ceremony is three pieces, each in one place:
/// 1. a variant here, carrying everything the committer needs (and nothing it
///    can look up in the album);
/// 2. its arm in `Album::plan` (`outgoing.rs`): the local refusals and the
///    adds, removes, new album context or leaf update the commit makes;
/// 3. its acceptance rule in `Album::effects_of` (`inbound.rs`), which every
///    receiver applies to the commit itself, so a modified client cannot skip
///    the refusals of step 2.
///
/// [`Album::stage`]: crate::Album::stage
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Add every device of `user` (admin only).
    AddUser {
        /// The user added.
        user: UserId,
        /// One KeyPackage per device of the user (the user's device directory).
        directory: Vec<Vec<u8>>,
    },
    /// Add one more device of the committer's own user.
    AddDevice {
        /// The new device's KeyPackage.
        key_package: Vec<u8>,
    },
    /// Remove every device of `user` and rotate the AMK (admin only).
    RemoveUser {
        /// The user removed.
        user: UserId,
    },
    /// Remove one (lost) device of the committer's own user and rotate the AMK.
    RemoveDevice {
        /// The device removed.
        device: DeviceId,
    },
    /// Rotate the AMK on its own (an admin on schedule, or any device that
    /// suspects a compromise).
    RotateAmk,
    /// Replace the committer's own leaf (new encryption key and path secrets;
    /// a member's answer to a re-key).
    SelfUpdate,
    /// Quiesce the album for a full re-key: set the marker every member reads
    /// (admin only). A new marker replaces a stalled one.
    BeginRekey {
        /// The re-key marker set in the group context.
        marker: RekeyMarker,
    },
    /// End re-key `id`: clear the marker and rotate the AMK (admin only).
    FinishRekey {
        /// The marker's id.
        id: RekeyId,
    },
    /// Replace another device's leaf from a fresh KeyPackage of that same
    /// device: remove and re-add in one commit (an admin, for a re-key's
    /// straggler; or a device of the same user, for a device that re-bootstraps).
    ReAddDevice {
        /// The device's fresh KeyPackage.
        key_package: Vec<u8>,
    },
    /// Change the album's metadata (history policy, admin set) in a commit of
    /// its own that bumps the metadata version (admin only): the album upgrade
    /// ceremony, the only way an album's policy changes.
    UpgradeAlbum {
        /// What changes.
        upgrade: capsule_amk::AlbumUpgrade,
    },
}

impl Change {
    /// The ceremony's name, naming nobody (what logs show).
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::AddUser { .. } => "add user",
            Self::AddDevice { .. } => "add device",
            Self::RemoveUser { .. } => "remove user",
            Self::RemoveDevice { .. } => "remove device",
            Self::RotateAmk => "rotate AMK",
            Self::SelfUpdate => "self update",
            Self::BeginRekey { .. } => "begin re-key",
            Self::FinishRekey { .. } => "finish re-key",
            Self::ReAddDevice { .. } => "re-add device",
            Self::UpgradeAlbum { .. } => "upgrade album",
        }
    }
}

/// KeyPackages are several kilobytes each: shown by size.
impl core::fmt::Debug for Change {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        struct Bytes(usize);
        impl core::fmt::Debug for Bytes {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, "<{} B>", self.0)
            }
        }
        match self {
            Self::AddUser { user, directory } => f
                .debug_struct("AddUser")
                .field("user", user)
                .field("directory", &directory.iter().map(|kp| Bytes(kp.len())).collect::<Vec<_>>())
                .finish(),
            Self::AddDevice { key_package } => {
                f.debug_struct("AddDevice").field("key_package", &Bytes(key_package.len())).finish()
            }
            Self::RemoveUser { user } => f.debug_struct("RemoveUser").field("user", user).finish(),
            Self::RemoveDevice { device } => f.debug_struct("RemoveDevice").field("device", device).finish(),
            Self::RotateAmk => f.write_str("RotateAmk"),
            Self::SelfUpdate => f.write_str("SelfUpdate"),
            Self::BeginRekey { marker } => f.debug_struct("BeginRekey").field("marker", marker).finish(),
            Self::FinishRekey { id } => f.debug_struct("FinishRekey").field("id", id).finish(),
            Self::ReAddDevice { key_package } => {
                f.debug_struct("ReAddDevice").field("key_package", &Bytes(key_package.len())).finish()
            }
            Self::UpgradeAlbum { upgrade } => f.debug_struct("UpgradeAlbum").field("upgrade", upgrade).finish(),
        }
    }
}
