//! Deterministic simulation: devices of several users, each with its own durable
//! store, against the in-memory chain with the fault layer and a simulated
//! clock, all driven by one seed.
//!
//! A run draws a list of [`Op`]s from the seed (ceremonies, uploads, syncs,
//! reconciliations, dropped, duplicated, delayed and reordered submissions,
//! partitions, process crashes and restarts, time passing), applies them one by
//! one and checks the invariants after every step:
//!
//! - every device that is in sync agrees with the chain head (epoch, epoch
//!   authenticator, members, current AMK);
//! - no AMK version ever has two keys, on any device;
//! - no device decrypts a photo it is not entitled to (a removed guest never
//!   opens a photo sealed after its removal);
//! - honest faults never cause a divergence or a quarantine (none is repaired
//!   silently because none may happen);
//! - after the network heals every intent ends confirmed or surfaced, and every
//!   member is on the head;
//! - nothing panics.
//!
//! A failing run reports its seed and the shortest prefix of its trace that
//! still fails ([`shrink`]), so it replays exactly.
#![forbid(unsafe_code)]

mod sim;

pub use sim::{Op, Report, Stats, check_seed, generate, run, shrink};
