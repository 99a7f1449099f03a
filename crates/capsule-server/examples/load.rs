//! `cargo xtask load`: albums × devices submitting and fetching concurrently
//! over loopback HTTP, on SQLite and (given a connection string) PostgreSQL,
//! beside the same commits stored directly through the database layer in the
//! same run. Prints commits/s and submit latency percentiles; the target is
//! the server within 2× of the direct rate.
//!
//! `load [--albums A] [--devices D] [--epochs E] [--postgres URL]`

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::as_conversions,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    missing_docs
)] // a measuring tool

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capsule_chain::conformance::racing_commits;
use capsule_chain::{ChainError, CommitChain, Epoch, Submission, SubmitAnswer};
use capsule_client::HttpChain;
use capsule_server::storage::Storage;
use capsule_server::{Backend, Checks, Database, Running, Settings};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

/// Per album, per device: its commit for every epoch (every device of an
/// album races for the same positions).
fn commits(albums: usize, devices: usize, epochs: u64) -> Vec<Vec<Vec<Submission>>> {
    (0..albums)
        .map(|a| {
            let mut id = [0x10; 16];
            id[..8].copy_from_slice(&(a as u64).to_be_bytes());
            racing_commits(id, devices, epochs).unwrap()
        })
        .collect()
}

fn album_of(s: &Submission) -> Vec<u8> {
    capsule_mls::framing(&s.commit).unwrap().group_id
}

struct Run {
    committed: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    conflicts: u64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.committed as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(i).copied().unwrap_or_default()
    }
}

/// Devices submit through the HTTP server until each album's chain holds
/// `epochs` commits, fetching what they lost: every device of every album
/// racing (`race`), or one device per album (the same inserts as the direct
/// run, over HTTP).
fn through_server(url: &str, all: &[Vec<Vec<Submission>>], epochs: u64, race: bool) -> Run {
    for album in all {
        HttpChain::new(url, &album_of(&album[0][0]), Duration::from_secs(30)).create_album(Epoch::ZERO, None).unwrap();
    }
    let started = Instant::now();
    let devices = if race { usize::MAX } else { 1 };
    let results: Vec<(Vec<Duration>, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = all
            .iter()
            .flat_map(|album| album.iter().take(devices))
            .map(|mine| {
                s.spawn(move || {
                    let mut chain = HttpChain::new(url, &album_of(&mine[0]), Duration::from_secs(30));
                    let (mut latencies, mut conflicts) = (Vec::new(), 0);
                    let mut head = Epoch::ZERO;
                    while head.0 < epochs {
                        let t = Instant::now();
                        match chain.submit(&mine[head.0 as usize]) {
                            Ok(SubmitAnswer::Accepted { epoch }) => head = epoch.saturating_add(1),
                            Ok(SubmitAnswer::Conflict { head: h }) => {
                                conflicts += 1;
                                // Catch up as a device would: read what it missed.
                                let missed = chain.fetch(head).unwrap();
                                head = h.max(head.saturating_add(missed.len() as u64));
                            }
                            Err(ChainError::Unavailable) => continue,
                            Err(e) => panic!("{e}"),
                        }
                        latencies.push(t.elapsed());
                    }
                    (latencies, conflicts)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();
    let mut latencies: Vec<Duration> = results.iter().flat_map(|(l, _)| l.iter().copied()).collect();
    latencies.sort();
    let conflicts = results.iter().map(|(_, c)| c).sum();
    Run { committed: all.len() as u64 * epochs, elapsed, latencies, conflicts }
}

/// The same commits (one device's per album) stored through the storage
/// layer directly, one task per album: the database's own rate.
fn direct(database: &Database, all: &[Vec<Vec<Submission>>]) -> Run {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let backend = Arc::new(Backend::open(database).await.unwrap());
        for album in all {
            backend.create_album(album_of(&album[0][0]), Epoch::ZERO, None, Vec::new()).await.unwrap();
        }
        let started = Instant::now();
        let tasks: Vec<_> = all
            .iter()
            .map(|album| {
                let (backend, mine) = (Arc::clone(&backend), album[0].clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    for s in mine {
                        let t = Instant::now();
                        let answer = backend.submit(album_of(&s), s, None, None).await.unwrap();
                        assert!(matches!(answer, SubmitAnswer::Accepted { .. }));
                        latencies.push(t.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for t in tasks {
            latencies.extend(t.await.unwrap());
        }
        let elapsed = started.elapsed();
        latencies.sort();
        Run { committed: latencies.len() as u64, elapsed, latencies, conflicts: 0 }
    })
}

fn row(name: &str, run: &Run, direct: Option<&Run>) {
    let ratio = direct.map_or(String::new(), |d| {
        let r = d.rate() / run.rate();
        format!("{r:.2}× {}", if r <= 2.0 { "(within 2×)" } else { "(over 2×)" })
    });
    println!(
        "| {name} | {:.0} | {:.1?} | {:.1?} | {} | {ratio} |",
        run.rate(),
        run.percentile(0.5),
        run.percentile(0.99),
        run.conflicts
    );
}

/// The same inserts directly and over HTTP (one device per album), and
/// every device racing over HTTP, each on a fresh database from `db`.
fn measure(name: &str, db: &dyn Fn(&str) -> Database, all: &[Vec<Vec<Submission>>], epochs: u64) {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let direct_run = direct(&db("direct"), all);
    let over_http = |label: &str, race: bool| {
        let server =
            Running::start(&db(label), loopback, Settings { checks: Checks::OrderingOnly, ..Settings::default() })
                .unwrap();
        through_server(&server.url(), all, epochs, race)
    };
    let single = over_http("single", false);
    let racing = over_http("racing", true);
    row(&format!("{name}: direct, one writer per album"), &direct_run, None);
    row(&format!("{name}: server, one device per album"), &single, Some(&direct_run));
    row(&format!("{name}: server, every device racing"), &racing, None);
}

fn fresh_postgres(url: &str, name: &str) -> Database {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        let task = tokio::spawn(conn);
        client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.unwrap();
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        drop(client);
        let _ = task.await;
    });
    Database::Postgres { url: format!("{url} dbname={name}"), connections: 16 }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let albums: usize = arg(&args, "--albums").map_or(8, |v| v.parse().unwrap());
    let devices: usize = arg(&args, "--devices").map_or(4, |v| v.parse().unwrap());
    let epochs: u64 = arg(&args, "--epochs").map_or(50, |v| v.parse().unwrap());
    let postgres = arg(&args, "--postgres");
    println!("load: {albums} albums × {devices} devices racing for {epochs} epochs each, over loopback HTTP");
    let made = Instant::now();
    let all = commits(albums, devices, epochs);
    println!("({} real commits made in {:.1?})\n", albums * devices * epochs as usize, made.elapsed());
    println!("| run | commits/s | submit p50 | submit p99 | conflicts | direct ÷ server (target ≤ 2×) |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let dir = tempfile::tempdir().unwrap();
    measure("SQLite", &|name| Database::Sqlite(dir.path().join(format!("{name}.sqlite"))), &all, epochs);
    if let Some(url) = postgres {
        measure("PostgreSQL", &|name| fresh_postgres(&url, &format!("load_{name}")), &all, epochs);
    }
}
