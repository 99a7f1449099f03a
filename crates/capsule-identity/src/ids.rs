//! Identifiers and time: the plain values a certificate binds together.

use core::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name([u8; 16]);

        impl $name {
            /// Wraps 16 opaque bytes (a UUID, typically).
            #[must_use]
            pub const fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(bytes)
            }

            /// The 16 bytes of this identifier.
            #[must_use]
            pub const fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Identifiers are not secret, but logs only need a short prefix.
                write!(f, concat!(stringify!($name), "({:02x}{:02x}{:02x}{:02x}…)"), self.0[0], self.0[1], self.0[2], self.0[3])
            }
        }
    };
}

id_type!(
    /// A user account: the owner of one identity key and of one or more devices.
    UserId
);
id_type!(
    /// One device of a user: the owner of one MLS signature key.
    DeviceId
);

/// Seconds since the Unix epoch. Time is always passed in: nothing here reads a clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UnixTime(pub u64);

/// An inclusive validity window `[not_before, not_after]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Validity {
    not_before: UnixTime,
    not_after: UnixTime,
}

impl Validity {
    /// A window from `not_before` to `not_after`, both inclusive.
    ///
    /// # Errors
    /// [`crate::IdentityError::InvalidValidity`] when the window ends before it starts.
    pub fn new(not_before: UnixTime, not_after: UnixTime) -> crate::Result<Self> {
        if not_after < not_before {
            return Err(crate::IdentityError::InvalidValidity);
        }
        Ok(Self { not_before, not_after })
    }

    /// First second of validity.
    #[must_use]
    pub const fn not_before(&self) -> UnixTime {
        self.not_before
    }

    /// Last second of validity.
    #[must_use]
    pub const fn not_after(&self) -> UnixTime {
        self.not_after
    }

    /// Whether `now` lies inside the window.
    ///
    /// # Errors
    /// [`crate::IdentityError::NotYetValid`] or [`crate::IdentityError::Expired`].
    pub fn check(&self, now: UnixTime) -> crate::Result<()> {
        if now < self.not_before {
            return Err(crate::IdentityError::NotYetValid);
        }
        if now > self.not_after {
            return Err(crate::IdentityError::Expired);
        }
        Ok(())
    }
}
