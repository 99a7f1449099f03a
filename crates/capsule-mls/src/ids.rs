//! Names for the plain values an album is counted and populated by: its MLS
//! [`Epoch`] and each [`Member`] (one device of one user).

use core::fmt;

use capsule_identity::{DeviceId, UserId};
use serde::{Deserialize, Serialize};

/// An MLS epoch of an album: 0 for a new group, one more per commit merged.
/// The commit chain is indexed by it (the entry at epoch `e` is the commit made
/// in `e`, which moves the group to `e + 1`).
///
/// Encoded exactly as the plain `u64` it wraps; `Display` prints that number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch a new group starts in.
    pub const ZERO: Self = Self(0);

    /// The epoch after this one (`None` past `u64::MAX`).
    #[must_use]
    pub const fn next(self) -> Option<Self> {
        match self.0.checked_add(1) {
            Some(n) => Some(Self(n)),
            None => None,
        }
    }

    /// The epoch before this one (`None` for epoch 0).
    #[must_use]
    pub const fn previous(self) -> Option<Self> {
        match self.0.checked_sub(1) {
            Some(n) => Some(Self(n)),
            None => None,
        }
    }

    /// `n` epochs later, saturating at `u64::MAX`.
    #[must_use]
    pub const fn saturating_add(self, n: u64) -> Self {
        Self(self.0.saturating_add(n))
    }

    /// How many epochs `self` is after `earlier` (`None` if `earlier` is later).
    #[must_use]
    pub const fn since(self, earlier: Self) -> Option<u64> {
        self.0.checked_sub(earlier.0)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// One member of an album: a device of a user, as its leaf's certificate names it.
///
/// Ordered by user, then device. Encoded as the pair `(user, device)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Member {
    /// The user the device belongs to.
    pub user: UserId,
    /// The device.
    pub device: DeviceId,
}

#[cfg(test)]
mod tests {
    use capsule_identity::encoding;

    use super::*;
    use crate::RekeyId;

    /// Each name encodes exactly as the raw value it replaced, so stored records
    /// and the group context keep their layout.
    #[test]
    fn names_encode_as_the_raw_values() {
        let (user, device) = (UserId::from_bytes([1; 16]), DeviceId::from_bytes([2; 16]));
        let cases = [
            (encoding::encode(&Epoch(300)), encoding::encode(&300u64)),
            (encoding::encode(&RekeyId(u64::MAX)), encoding::encode(&u64::MAX)),
            (encoding::encode(&Member { user, device }), encoding::encode(&(user, device))),
        ];
        for (named, raw) in cases {
            assert_eq!(named.unwrap(), raw.unwrap());
        }
        assert_eq!(encoding::decode_canonical::<Epoch>(&encoding::encode(&7u64).unwrap()).unwrap(), Epoch(7));
    }

    /// Members sort by user, then device, as the `(user, device)` pairs did.
    #[test]
    fn members_sort_by_user_then_device() {
        let member = |u, d| Member { user: UserId::from_bytes([u; 16]), device: DeviceId::from_bytes([d; 16]) };
        let mut members = vec![member(2, 1), member(1, 3), member(1, 2)];
        members.sort();
        assert_eq!(members, [member(1, 2), member(1, 3), member(2, 1)]);
    }

    #[test]
    fn epoch_steps_stop_at_the_ends() {
        let max = Epoch(u64::MAX);
        // (epoch, next, previous)
        let cases = [
            (Epoch::ZERO, Some(Epoch(1)), None),
            (Epoch(5), Some(Epoch(6)), Some(Epoch(4))),
            (max, None, Some(Epoch(u64::MAX - 1))),
        ];
        for (epoch, next, previous) in cases {
            assert_eq!(epoch.next(), next, "{epoch}");
            assert_eq!(epoch.previous(), previous, "{epoch}");
        }
        assert_eq!(Epoch(5).saturating_add(2), Epoch(7));
        assert_eq!(max.saturating_add(1), max);
        assert_eq!(Epoch(7).since(Epoch(5)), Some(2));
        assert_eq!(Epoch(5).since(Epoch(7)), None);
        assert_eq!(format!("{:03}", Epoch(7)), "007");
    }
}
