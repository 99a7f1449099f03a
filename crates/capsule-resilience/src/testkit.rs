//! Test doubles for the server side only: an in-memory chain with the real
//! ordering rules, a fault layer, and a simulated clock.

mod faults;
mod memory;

pub use faults::{Fault, FaultyChain};
pub use memory::{MemoryChain, MemoryServer};

use std::cell::Cell;
use std::rc::Rc;

use crate::{Clock, Instant};

/// A clock that moves only when told: a 10-minute backoff costs no wall time.
#[derive(Clone, Debug, Default)]
pub struct SimClock(Rc<Cell<u64>>);

impl SimClock {
    /// At `t = 0`.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock to `t` (never backwards).
    pub fn set(&self, t: Instant) {
        self.0.set(self.0.get().max(t.0));
    }

    /// Moves the clock forward.
    pub fn advance(&self, d: core::time::Duration) {
        self.set(self.now().after(d));
    }
}

impl Clock for SimClock {
    fn now(&self) -> Instant {
        Instant(self.0.get())
    }
}
