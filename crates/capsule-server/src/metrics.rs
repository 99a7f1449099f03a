//! Counters of what the server answered, in the Prometheus text format.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a submission came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stored, or already held.
    Accepted,
    /// Another commit holds the epoch.
    Conflict,
    /// Refused before ordering (framing, size).
    Refused,
    /// The request did not decode.
    BadRequest,
    /// The database failed.
    Failed,
}

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    counts: [AtomicU64; 5],
}

const NAMES: [(Outcome, &str); 5] = [
    (Outcome::Accepted, "accepted"),
    (Outcome::Conflict, "conflict"),
    (Outcome::Refused, "refused"),
    (Outcome::BadRequest, "bad_request"),
    (Outcome::Failed, "failed"),
];

impl Metrics {
    fn slot(&self, outcome: Outcome) -> Option<&AtomicU64> {
        NAMES.iter().position(|(o, _)| *o == outcome).and_then(|i| self.counts.get(i))
    }

    /// Counts one submission's outcome.
    pub fn count(&self, outcome: Outcome) {
        if let Some(c) = self.slot(outcome) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many submissions came to `outcome`.
    #[must_use]
    pub fn get(&self, outcome: Outcome) -> u64 {
        self.slot(outcome).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// The counters as Prometheus text.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP capsule_chain_submissions_total Submissions by outcome.\n# TYPE capsule_chain_submissions_total counter\n",
        );
        for (outcome, name) in NAMES {
            out.push_str(&format!("capsule_chain_submissions_total{{outcome=\"{name}\"}} {}\n", self.get(outcome)));
        }
        out
    }
}
