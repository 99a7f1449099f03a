//! Time, injected: the resilience core never reads a clock of its own.
//!
//! Deadlines and re-key timestamps are persisted, so they are wall-clock time
//! (milliseconds since the Unix epoch): a monotonic clock restarts at boot and
//! would put every stored deadline far in the future. Wall clocks can jump too
//! (a phone whose clock was reset); the core re-anchors any deadline further
//! away than its schedule allows (see `ResilientAlbum::poll_action`).

use core::time::Duration;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, as the injected [`Clock`] reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// `self + d`, saturating.
    #[must_use]
    pub fn after(self, d: Duration) -> Self {
        Self(self.0.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
    }

    /// Time since `earlier` (zero if `earlier` is later).
    #[must_use]
    pub const fn since(self, earlier: Self) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// Where the resilience layer learns the time: wall-clock time that survives a
/// restart ([`SystemClock`] on a device, a simulated clock in tests).
pub trait Clock {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock: the clock a device passes in.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        // A clock before 1970 reads as the epoch: every deadline is then due,
        // which retries early rather than stalling.
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Timestamp(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }
}
