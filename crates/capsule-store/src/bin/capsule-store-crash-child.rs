//! Test helper for the crash tests: runs one logical operation on a store and
//! aborts the process (`std::process::abort`) at the requested step, or prints
//! the stored state for a fresh-process read.
//!
//! `capsule-store-crash-child <op> <db> [files…] <step|none>`, where `op` is
//! `confirm`, `process <commit>`, `join <welcome> <bundle>` or `inspect`.

#![allow(clippy::print_stdout)] // its output is the point

use std::path::PathBuf;
use std::process::ExitCode;

use capsule_amk::AlbumId;
use capsule_mls::testkit::Directory;
use capsule_store::{Step, Store};

/// The album every crash scenario uses.
const ALBUM: AlbumId = AlbumId::from_bytes([0xC5; 16]);
/// The directory seed and users every crash scenario uses (trust is rebuilt from them).
const SEED: u8 = 60;
const USERS: [u8; 3] = [1, 2, 3];

fn step_named(name: &str) -> Option<Step> {
    Step::ALL.into_iter().find(|s| format!("{s:?}").eq_ignore_ascii_case(name))
}

fn run(args: &[String]) -> Result<(), String> {
    let [op, db, rest @ ..] = args else {
        return Err("usage: <op> <db> …".into());
    };
    let mut store = Store::open(&PathBuf::from(db)).map_err(|e| e.to_string())?;
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
        ("inspect", _) => {
            let album = store.album(ALBUM).map_err(|e| e.to_string())?;
            let auth: String = album.epoch_authenticator().iter().map(|b| format!("{b:02x}")).collect();
            println!(
                "epoch={} auth={auth} amk={} pending={} keyring={}",
                album.epoch(),
                album.keyring().current_version().get(),
                album.pending().is_some(),
                album.keyring().held().count()
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
