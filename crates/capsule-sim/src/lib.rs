//! Deterministic simulation: devices of several users, each with its own durable
//! store, against the in-memory chain with the fault layer and a simulated
//! clock, all driven by one seed.
//!
//! A run draws a list of [`Op`]s from the seed (ceremonies, uploads, syncs,
//! reconciliations, full re-keys, a lost device removed and added back, devices
//! rejoining, dropped, duplicated, delayed and reordered submissions,
//! partitions, process crashes and restarts, time passing), applies them one by
//! one and checks the invariants after every step:
//!
//! - every device that is in sync agrees with the chain head (epoch, epoch
//!   authenticator, members, current AMK);
//! - no AMK version ever has two keys, on any device;
//! - no device decrypts a photo it is not entitled to (a removed guest, a lost
//!   phone or a re-key straggler never opens a photo sealed after its removal);
//! - honest faults never cause a divergence or a quarantine (none is repaired
//!   silently because none may happen);
//! - after the network heals every intent ends confirmed or surfaced, every
//!   re-key finishes, every member is on the head, and exactly the devices the
//!   head lists are in the album;
//! - nothing panics.
//!
//! A failing run reports its seed and a shrunk trace that still fails
//! ([`shrink`]). A seed replays the same operations and the same observable
//! outcomes (every device's status, epoch and AMK version after every step,
//! [`Report::observed`]); the key material itself differs between replays,
//! because OpenMLS's libcrux provider and HPKE draw from an OS-seeded DRBG that
//! has, deliberately, no seeding hook.
#![forbid(unsafe_code)]

mod sim;

pub use sim::{
    Chain, Mix, Op, Report, Stats, check_seed, check_seed_on, check_seed_with, generate, run, run_on, shrink, shrink_on,
};
