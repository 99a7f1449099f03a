//! Recovery for Capsule albums: the server's commit chain is the source of truth.
//!
//! MLS alone does not recover from a commit lost in transit, two admins rotating
//! at once, or a device whose state drifted from the server's. This crate holds
//! Capsule's recovery contracts (design doc "MLS Resilience"):
//!
//! - [`CommitChain`]: the server as the client sees it: one commit per epoch,
//!   first come first served, idempotent.
//! - [`ResilientAlbum`]: a sans-IO state machine. [`ResilientAlbum::poll_action`]
//!   says what to send or fetch ([`Action`]), [`ResilientAlbum::handle`] takes
//!   the [`Answer`], [`ResilientAlbum::next_deadline`] says when to poll again;
//!   the caller does the I/O with no store transaction open.
//!   [`ResilientAlbum::drive`] is a small driver over a [`CommitChain`] for
//!   albums held in memory. Membership changes are [`Intent`]s
//!   (pending → staged → submitted → confirmed; superseded changes are
//!   re-proposed automatically; surfaced when the retry budget runs out, never
//!   dropped; failed with a typed [`Refusal`] when the MLS layer refuses to
//!   commit one, and the changes after it go on; cancelled by the application
//!   only before their commit exists, [`ResilientAlbum::cancel`]).
//!   [`RetryPolicy`] is the schedule as data (30 s detection, then 30 s → 2 min →
//!   10 min, 3 re-submissions), consumed against an injected [`Clock`] of
//!   wall-clock time ([`SystemClock`] on a device), since deadlines are
//!   persisted. A retry is the same commit, so one that had landed is harmless.
//! - [`ResilientAlbum::reconcile_with_server`]: the single recovery entry point.
//!
//! # Which outcome
//!
//! Let `E` be the device's epoch, `H` the chain's head (the epoch of the next
//! commit), and `L` the commit that made epoch `E`: the last one the device
//! applied, or, right after joining, the one whose confirmation tag its
//! Welcome carried (`capsule_mls::Album::made_this_epoch`); a group just
//! created has none.
//!
//! | situation | outcome |
//! | --- | --- |
//! | removed from the album (now, or while replaying), or the chain is pruned before the epoch it needs (`E - 1`, to check `L`; for a device that joined and has applied nothing, when only that commit is gone it reads from `E` instead, its Welcome unchecked, and says so in the log) | `Unrecoverable` (re-bootstrap) |
//! | `H < E`: the device holds epochs the chain never saw | `Diverged`, quarantined |
//! | `L` is not the chain's commit at `E - 1` (a commit the server never persisted, beside the chain; a Welcome from a history the chain does not hold) | `Diverged`, quarantined |
//! | the answer is not one an honest chain gives: entries out of order or missing, a hash that is not its commit's, a commit that does not decode, belongs to another group, or was made in another epoch than its position | no outcome: the error `ChainError::BadAnswer`, counted in `server_faults`, nothing changed by it, no quarantine; the next honest answer reconciles |
//! | a chain commit naming a user (its committer, or a member it adds) whose identity key the trust store does not hold yet | no outcome: the error [`ResilienceError::CannotVerifyYet`] ("I cannot verify this yet"), nothing changed, no quarantine; reconcile again once the trust store learns the key |
//! | a well-formed chain commit at `E ..` that this device refuses (a certificate that does not verify under the trusted key, an unauthorized change, an AMK step that skips, …) | `Diverged`, quarantined, with the commit and the committer it names in [`Divergence::invalid_commit`] and an [`Event::InvalidCommit`] to report ("this commit is invalid") |
//! | `H == E` and `L` matches | `UpToDate` |
//! | `H > E`, `L` matches, every commit `E .. H` applies | `Reconciled`, with their hashes in order |
//!
//! Replaying includes the device's own pending commit when the chain holds it
//! (it is confirmed), and another member's commit that won the epoch of the
//! device's pending commit (the pending one is cleared and its intent
//! re-proposed). A commit delivered again is recognised by its hash and is not a
//! divergence. Quarantine means no sends and no merges; nothing is discarded
//! until the user acts.
//!
//! # Every state has a way out
//!
//! | [`AlbumStatus`] | what leaves it |
//! | --- | --- |
//! | `InSync` | nothing to leave |
//! | `Syncing` | the caller drives again at [`ResilientAlbum::next_deadline`]; the chain confirms or supersedes |
//! | `Surfaced` | [`ResilientAlbum::connectivity_restored`], then a drive: the same commit, a fresh budget |
//! | `Rekeying` | every member drives (self-updates); the admin finishes; once [`ResilientAlbum::stalled_rekey`] reports it stalled, any owner (admin) runs [`ResilientAlbum::recover_stalled_rekey`]: lineage from the [`AmkEscrow`], a new marker, re-driven to the end |
//! | `Quarantined` | the application reads [`ResilientAlbum::sync_report`] from the members' fingerprints: `Weak { minority: true }` (this device is off the chain) → the user chooses [`ResilientAlbum::rebootstrap`] (discard, report what was discarded; its [`ResilientAlbum::farewell`], made first, is what it publishes until re-added, so the others still count it) → `AwaitingReadd`, re-added by the coordinator ([`ResilientAlbum::heal_fork`]); `Hard` (everyone heard refused the same chain commit, or the chain is behind everyone heard: it lost history) → the named rebooter runs [`ResilientAlbum::reboot`] and the others join the new group; with no report that names a way (nobody heard, the rebooter silent), re-bootstrap is always there |
//! | quarantined, or in sync, in a group a reboot replaced | join the new group's Welcome (checked against the group held: `capsule_mls::Album::verify_reboot_of`); a refusal (`MlsError::NotAReboot`) may mean the group held is behind where the rebooter left it: the facade's `receive_welcomes` keeps that Welcome in the mailbox (`Received::Waiting`); reconcile the old group to its chain's head, then receive again (or join from the chain's copy of the Welcome); one still refused there is no reboot by an admin of the album, and the device stays in the group it holds; a quarantined device may also re-bootstrap and join as a new device |
//! | `NeedsRebootstrap` | [`ResilientAlbum::rebootstrap`] → `AwaitingReadd` |
//! | `AwaitingReadd` (the store's, after a re-bootstrap) | another device of the user, or an admin, re-adds the device from its fresh KeyPackage (or a rebooter adds it to the new group); it joins from the Welcome; meanwhile it publishes its farewell |
//!
//! A commit every honest member refuses as invalid, once at the head of the
//! chain, quarantines all of them (the validating server refuses such commits
//! before ordering them; this is for one that gets through anyway). Their
//! fingerprints then agree with each other and the chain holds a commit none of
//! them merged: `Hard`, and the way out is a reboot by an admin
//! ([`ResilientAlbum::reboot`]), which re-drives the album from the last valid
//! epoch in a new group.
//!
//! # Forks
//!
//! Members publish signed, sealed state fingerprints
//! ([`ResilientAlbum::fingerprint`]); from the ones the application collected
//! and the chain's head fetched after, [`ResilientAlbum::sync_report`]
//! classifies the album ([`SyncClass`]: in sync, behind, weak, hard,
//! equivocation) and names who heals it: a re-add by the coordinator
//! ([`ResilientAlbum::heal_fork`]) or a reboot ([`ResilientAlbum::reboot`]). The
//! rule and who coordinates are in the `forks` module's docs.
//!
//! An intent refused by the MLS layer ends `Failed` with a typed [`Refusal`]
//! and the changes after it go on; a pending or failed one can be
//! [`ResilientAlbum::cancel`]led. An answer no honest chain gives is an error
//! ([`ChainError::BadAnswer`]), never a state.
//!
//! # Re-key triggers
//!
//! An admin starts a full re-key ([`ResilientAlbum::rekey_group`]) for one of
//! three [`RekeyReason`]s: on request; on a suspected compromise, which only
//! the application can judge (the library never guesses); or on schedule, a
//! deployment policy for long-lived albums ([`RekeySchedule`]: at least every
//! N days, decided against the injected clock by
//! [`ResilientAlbum::scheduled_rekey_due`], counted from the last re-key this
//! device saw finish).
//!
//! # Concurrent AMK rotation
//!
//! The chain serializes two rotations of the same epoch; the loser processes
//! the winner and re-proposes its rotation against the new epoch without asking
//! anyone, so every epoch has exactly one AMK and one write-tier key.
#![forbid(unsafe_code)]

mod album;
mod chain;
mod clock;
mod error;
mod forks;
mod intents;
mod reconcile;
pub mod rekey;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use album::{AlbumStatus, Context, Discarded, Event, RekeySchedule, ResilientAlbum};
pub use capsule_chain::wire::{ClaimedKeyPackage, Delivery, KeyPackageStock, KeyPackageUpload};
pub use capsule_chain::{
    BadAnswer, ChainEntry, ChainError, CommitChain, Fetched, KeyPackageDirectory, Mailbox, Refused, Submission,
    SubmitAnswer, WelcomeBlobs,
};
pub use capsule_mls::{Epoch, Fingerprint, Member, Reading, RekeyId, RekeyMarker, RekeyReason};
pub use chain::{Action, Answer};
pub use clock::{Clock, SystemClock, Timestamp};
pub use error::{ResilienceError, Result};
pub use forks::{Equivocation, Partition, Readd, SyncClass, SyncReport};
pub use intents::{Change, Intent, IntentId, IntentState, Refusal, RetryPolicy};
pub use reconcile::{Divergence, InvalidCommit, ReconcileOutcome, ReconcileStep};
pub use rekey::{AmkEscrow, RekeyJournal, RekeyStep};
