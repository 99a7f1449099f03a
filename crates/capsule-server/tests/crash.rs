//! The server process is killed (SIGKILL) at random points while devices
//! submit concurrently, and restarted on the same database: no accepted entry
//! is lost or stored twice, and every device's attempt ends confirmed or
//! superseded.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::as_conversions)] // test code

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use capsule_chain::Epoch;
use capsule_client::HttpChain;
use common::{ServerProcess, check_race, fresh_postgres_db, postgres_url, race, racing_commits};

const DEVICES: usize = 4;
const EPOCHS: u64 = 100;

/// Kills and restarts the server every few tens of milliseconds (a seeded
/// schedule) until the devices are done; returns how many times it killed.
fn run(album: [u8; 16], mut args: Vec<String>, seed: u64) -> u64 {
    let commits = racing_commits(album, DEVICES, EPOCHS);
    args.extend(["--listen".to_owned(), "127.0.0.1:0".to_owned()]);
    let server = ServerProcess::spawn(&args);
    // Restarts take the port the first start was given, so clients keep their address.
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    if let Some(listen) = args.last_mut() {
        *listen = format!("127.0.0.1:{port}");
    }
    let url = server.url.clone();
    let connect = || HttpChain::new(&url, &album, Duration::from_secs(10));
    assert_eq!(connect().create_album(Epoch::ZERO, None), Ok(Epoch::ZERO));
    let done = AtomicBool::new(false);
    let (races, kills) = std::thread::scope(|s| {
        let killer = s.spawn(|| {
            let (mut server, mut kills, mut state) = (server, 0u64, seed);
            while !done.load(Ordering::SeqCst) {
                // xorshift: a schedule that differs between kills but not between runs.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                std::thread::sleep(Duration::from_millis(20 + state % 120));
                server.kill();
                kills += 1;
                server = ServerProcess::spawn(&args);
            }
            drop(server);
            kills
        });
        let devices: Vec<_> = commits
            .iter()
            .map(|mine| {
                let mut chains = vec![connect()];
                s.spawn(move || race(mine, &mut chains, EPOCHS))
            })
            .collect();
        let races: Vec<_> = devices.into_iter().map(|h| h.join().unwrap()).collect();
        done.store(true, Ordering::SeqCst);
        (races, killer.join().unwrap())
    });
    // Once more from a fresh start: what was acknowledged is all there.
    let _server = ServerProcess::spawn(&args);
    check_race(&mut connect(), EPOCHS, &races);
    let unanswered: u64 = races.iter().map(|r| r.unavailable).sum();
    eprintln!("{kills} kills, {unanswered} unanswered requests retried");
    kills
}

#[test]
fn a_killed_sqlite_server_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chain.sqlite").display().to_string();
    let args = vec!["--db".into(), db, "--ordering-only".into()];
    assert!(run([0xE1; 16], args, 0x5eed_0001) >= 1);
}

#[test]
fn a_killed_postgres_server_loses_and_duplicates_nothing() {
    let Some(url) = postgres_url() else { return };
    let db = fresh_postgres_db(&url, "crash");
    let args = vec!["--postgres".into(), db, "--connections".into(), "4".into(), "--ordering-only".into()];
    assert!(run([0xE2; 16], args, 0x5eed_0002) >= 1);
}
