//! Test helper for the crash tests: runs one logical operation on a store and
//! aborts the process (`std::process::abort`) at the requested step, or prints
//! the stored state for a fresh-process read.
//!
//! `capsule-store-crash-child <op> <db> [files…] <step|none>`, where `op` is
//! `confirm`, `process <commit>`, `join <welcome> <bundle>`, `reboot <key package>`
//! (the album into its next group, re-adding that KeyPackage's device) or `inspect`; and
//! `capsule-store-crash-child rekey <admin.db> <chain-dir> <step|none> <n> <member.db>…`
//! runs a whole re-key over every store, aborting the admin at its `n`-th `step`.

#![allow(clippy::print_stdout)] // its output is the point

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use capsule_amk::AlbumId;
use capsule_mls::testkit::Directory;
use capsule_resilience::testkit::{FileChain, MemoryEscrow, SimClock};
use capsule_resilience::{AlbumStatus, Clock, RekeyId, RekeyReason, RetryPolicy};
use capsule_store::{Step, Store};

/// The re-key every crash run drives.
const REKEY_ID: RekeyId = RekeyId(42);

/// The album every crash scenario uses.
const ALBUM: AlbumId = AlbumId::from_bytes([0xC5; 16]);
/// The directory seed and users every crash scenario uses (trust is rebuilt from them).
const SEED: u8 = 60;
const USERS: [u8; 3] = [1, 2, 3];

fn step_named(name: &str) -> Option<Step> {
    Step::ALL.into_iter().find(|s| format!("{s:?}").eq_ignore_ascii_case(name))
}

/// Drives a whole re-key over the stores; the admin's store aborts at its `n`-th `step`.
/// The key the test stores are encrypted under (the tests' `common::key`).
fn key() -> capsule_store::DatabaseKey {
    capsule_store::DatabaseKey::from_bytes(&[0x5D; 32])
}

fn rekey(args: &[String]) -> Result<(), String> {
    let [admin, chain_dir, step, n, members @ ..] = args else { return Err("usage: rekey …".into()) };
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let mut dir = Directory::new(SEED);
    for u in USERS {
        dir.user(u).map_err(|x| e(&x))?;
    }
    let mut admin_store = Store::open(&PathBuf::from(admin), &key()).map_err(|x| e(&x))?;
    if let Some(at) = step_named(step) {
        let target: u32 = n.parse().map_err(|x| e(&x))?;
        let seen = Arc::new(AtomicU32::new(0));
        admin_store.set_observer(Box::new(move |s| {
            if s == at && seen.fetch_add(1, Ordering::SeqCst) + 1 == target {
                std::process::abort();
            }
        }));
    }
    let mut stores = vec![];
    for m in members {
        stores.push(Store::open(&PathBuf::from(m), &key()).map_err(|x| e(&x))?);
    }
    let mut chain = FileChain::open(&PathBuf::from(chain_dir), ALBUM.as_bytes()).map_err(|x| e(&x))?;
    let clock = SimClock::new();
    let policy = RetryPolicy::default();
    let mut escrow = MemoryEscrow::new([0x0e; 32]);
    admin_store
        .with_resilient(ALBUM, policy.clone(), |r, _| {
            r.rekey_group(
                REKEY_ID,
                RekeyReason::SuspectedCompromise,
                clock.now(),
                Duration::from_secs(3600),
                &mut escrow,
            )
        })
        .map_err(|x| e(&x))?;
    for _ in 0..20 {
        for store in std::iter::once(&admin_store).chain(&stores) {
            let device = store.load_device().map_err(|x| e(&x))?;
            // Decide, send with no transaction open, record: nothing is sent
            // before the pending commit that lets the device recognise it is durable.
            store.reconcile_album(ALBUM, &policy, &device, dir.validation(), &mut chain).map_err(|x| e(&x))?;
            store.sync_album(ALBUM, &policy, &device, dir.validation(), &mut chain, &clock).map_err(|x| e(&x))?;
        }
        let done = admin_store
            .read_resilient(ALBUM, policy.clone(), |r| r.completed_rekeys().contains(&REKEY_ID))
            .map_err(|x| e(&x))?;
        let mut in_sync = true;
        for store in std::iter::once(&admin_store).chain(&stores) {
            let status = store.read_resilient(ALBUM, policy.clone(), |r| r.status()).map_err(|x| e(&x))?;
            in_sync &= status == AlbumStatus::InSync;
        }
        if done && in_sync {
            return Ok(());
        }
    }
    Err("the re-key did not complete".into())
}

fn run(args: &[String]) -> Result<(), String> {
    if args.first().is_some_and(|a| a == "rekey") {
        return rekey(args.get(1..).unwrap_or_default());
    }
    let [op, db, rest @ ..] = args else {
        return Err("usage: <op> <db> …".into());
    };
    let mut store = Store::open(&PathBuf::from(db), &key()).map_err(|e| e.to_string())?;
    let crash_at = rest.last().and_then(|s| step_named(s));
    if let Some(at) = crash_at {
        store.set_observer(Box::new(move |s| {
            if s == at {
                std::process::abort();
            }
        }));
    }
    let mut dir = Directory::new(SEED);
    for u in USERS {
        dir.user(u).map_err(|e| e.to_string())?;
    }
    let read = |path: &String| std::fs::read(path).map_err(|e| e.to_string());
    match (op.as_str(), rest) {
        ("confirm", _) => store.with_album(ALBUM, |a, p| a.confirm(p)).map(drop).map_err(|e| e.to_string()),
        ("process", [commit, ..]) => {
            let commit = read(commit)?;
            store.with_album(ALBUM, |a, p| a.process(p, &commit, dir.validation())).map(drop).map_err(|e| e.to_string())
        }
        ("join", [welcome, bundle, ..]) => {
            store.join_album(&read(welcome)?, &read(bundle)?, dir.validation()).map(drop).map_err(|e| e.to_string())
        }
        ("reboot", [key_package, ..]) => {
            let key_package = read(key_package)?;
            let member =
                capsule_mls::inspect_key_package(&key_package, dir.validation()).map_err(|e| e.to_string())?.member;
            let device = store.load_device().map_err(|e| e.to_string())?;
            store
                .reboot_album(ALBUM, RetryPolicy::default(), (&device, dir.validation()), &[(member, key_package)])
                .map(drop)
                .map_err(|e| e.to_string())
        }
        ("inspect", _) => {
            let album = store.album(ALBUM).map_err(|e| e.to_string())?;
            let auth: String = album.epoch_authenticator().iter().map(|b| format!("{b:02x}")).collect();
            println!(
                "generation={} epoch={} auth={auth} amk={} pending={} keyring={} rekeying={}",
                album.generation(),
                album.epoch(),
                album.keyring().current_version().get(),
                album.pending().is_some(),
                album.keyring().held().count(),
                album.context().rekey.is_some()
            );
            Ok(())
        }
        _ => Err(format!("unknown op {op}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
