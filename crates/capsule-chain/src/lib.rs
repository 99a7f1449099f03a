//! Capsule's commit chain: the one rule every resilience promise rests on.
//!
//! The server stores, per album, **one commit per epoch, first come first
//! served, idempotently**: submitting a commit it already holds answers with
//! that commit's position and never creates a second entry. It is
//! authoritative for ordering: whatever it holds at an epoch is that epoch's
//! commit.
//!
//! This crate holds the rule once, for every chain:
//! - the contract a client sees ([`CommitChain`], [`Submission`],
//!   [`SubmitAnswer`], [`ChainError`]);
//! - the ordering rules as pure functions ([`rules`]): the checks made before
//!   ordering ([`rules::check_submission`]: sizes, and the commit's public
//!   framing, group and epoch, against the album and position it claims),
//!   the decision ([`rules::decide`]), pages ([`rules::page`]) and retention
//!   ([`rules::retained_base`]); [`rules::ChainLog`] applies them in memory.
//!   The in-memory double, the crash tests' file chain and the server's
//!   databases all call these, so "accepted", "conflict", "refused" and
//!   "pruned" mean the same everywhere;
//! - the server's wire format ([`wire`]), versioned, every decoder total;
//! - with the `testkit` feature, the conformance suite every chain runs
//!   ([`conformance`]).
#![forbid(unsafe_code)]

mod api;
pub mod rules;
pub mod wire;

#[cfg(feature = "testkit")]
pub mod conformance;

pub use api::{
    BadAnswer, ChainEntry, ChainError, CommitChain, Fetched, Invalid, KeyPackageDirectory, Mailbox, Refused,
    Submission, SubmitAnswer, WelcomeBlobs,
};
pub use capsule_mls::{CommitHash, Epoch};
