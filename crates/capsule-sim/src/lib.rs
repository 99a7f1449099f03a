//! Deterministic simulation: devices of several users, each with its own durable
//! store, against the in-memory chain with the fault layer and a simulated
//! clock, all driven by one seed.
//!
//! A run draws a list of [`Op`]s from the seed (ceremonies, uploads, syncs,
//! reconciliations, full re-keys, a lost device removed and added back, devices
//! rejoining, refused changes, cancels, divergence and re-bootstrap, a pruned
//! chain, album upgrades, a modified client's commit that every honest device
//! refuses, a server that shows a minority of devices another history,
//! dropped, duplicated, delayed and reordered submissions,
//! partitions, process crashes and restarts, time passing), applies them one by
//! one and checks the invariants after every step:
//!
//! - every device that is in sync agrees with the chain head (epoch, epoch
//!   authenticator, members, current AMK);
//! - no AMK version ever has two keys, on any device;
//! - no device decrypts a photo it is not entitled to (a removed guest, a lost
//!   phone or a re-key straggler never opens a photo sealed after its removal);
//! - honest faults never cause a divergence or a quarantine (none is repaired
//!   silently because none may happen); only a bug's divergence, a lying
//!   server's copy of the chain, or a bad commit in the chain may;
//! - a fork is seen in the round it first shows (a quarantine): by every
//!   quarantined device that reads the fingerprints, and by at least one
//!   device on the chain's side that still lists a forked one;
//! - after healing (the rebooter's reboot, the coordinator's re-add, a
//!   re-bootstrap) every device is on one group and one epoch;
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
