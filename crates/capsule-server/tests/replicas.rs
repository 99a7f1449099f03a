//! Two server processes on one PostgreSQL: devices submitting concurrently
//! for the same epochs through both get exactly one entry per epoch, every
//! loser a `Conflict`, nothing lost.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::as_conversions)] // test code

mod common;

use std::time::Duration;

use capsule_chain::{CommitChain as _, Epoch, SubmitAnswer};
use capsule_client::HttpChain;
use common::{ServerProcess, check_race, fresh_postgres_db, postgres_url, race, racing_commits};

const ALBUM: [u8; 16] = [0xD1; 16];
const DEVICES: usize = 6;
const EPOCHS: u64 = 12;

#[test]
fn two_replicas_on_one_postgres_never_both_accept_an_epoch() {
    let Some(url) = postgres_url() else { return };
    let db = fresh_postgres_db(&url, "replicas");
    let replicas: Vec<ServerProcess> = (0..2)
        .map(|_| {
            ServerProcess::spawn(&[
                "--postgres".into(),
                db.clone(),
                "--connections".into(),
                "8".into(),
                "--ordering-only".into(),
                "--listen".into(),
                "127.0.0.1:0".into(),
            ])
        })
        .collect();
    let commits = racing_commits(ALBUM, DEVICES, EPOCHS);
    let connect = |url: &str| HttpChain::new(url, &ALBUM, Duration::from_secs(30));
    assert_eq!(connect(&replicas[0].url).create_album(Epoch::ZERO, None), Ok(Epoch::ZERO));
    // Every device submits for epoch 0, through alternating replicas: the
    // first wins, every other one is told the head moved on.
    for (d, mine) in commits.iter().enumerate() {
        let answer = connect(&replicas[d % 2].url).submit(&mine[0]);
        let want =
            if d == 0 { SubmitAnswer::Accepted { epoch: Epoch(0) } } else { SubmitAnswer::Conflict { head: Epoch(1) } };
        assert_eq!(answer, Ok(want), "device {d}");
    }
    // Then all race at once for the remaining epochs.
    let races: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = commits
            .iter()
            .enumerate()
            .map(|(d, mine)| {
                // Each device talks to both replicas, starting with a different one.
                let mut chains: Vec<HttpChain> = (0..2).map(|r| connect(&replicas[(r + d) % 2].url)).collect();
                s.spawn(move || race(mine, &mut chains, EPOCHS))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    check_race(&mut connect(&replicas[1].url), EPOCHS, &races);
    // The winning commit of the last epoch, sent again through both replicas
    // at once: both answer its position, and the chain does not grow.
    let last = races.iter().flat_map(|r| r.accepted.iter()).find(|(e, _)| e.0 == EPOCHS - 1).map(|(_, h)| *h).unwrap();
    let winner =
        commits.iter().flat_map(|c| c.iter()).find(|s| capsule_chain::CommitHash::of(&s.commit) == last).unwrap();
    let answers: Vec<_> = std::thread::scope(|s| {
        let sent: Vec<_> = (0..4)
            .map(|i| {
                let url = replicas[i % 2].url.clone();
                s.spawn(move || connect(&url).submit(winner))
            })
            .collect();
        sent.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(answers.iter().all(|a| *a == Ok(SubmitAnswer::Accepted { epoch: Epoch(EPOCHS - 1) })), "{answers:?}");
    assert_eq!(connect(&replicas[0].url).head(), Ok(Epoch(EPOCHS)));
    let wins: usize = races.iter().map(|r| r.accepted.len()).sum();
    assert_eq!(wins as u64, EPOCHS - 1, "exactly one device won each raced epoch");
}
