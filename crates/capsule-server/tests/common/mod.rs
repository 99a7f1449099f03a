//! Servers on real databases for the tests, and the conformance harness over
//! HTTP.

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::cast_possible_truncation
)] // test code

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use capsule_chain::Epoch;
use capsule_chain::conformance::Harness;
use capsule_chain::rules::Limits;
use capsule_client::HttpChain;
use capsule_server::{Checks, Database, Running, Settings};

pub const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// The PostgreSQL the test matrix started (`cargo xtask test-matrix` starts
/// a throwaway cluster and sets `CAPSULE_TEST_POSTGRES`). Without it these
/// tests fail, unless `CAPSULE_NO_POSTGRES` says to skip them.
pub fn postgres_url() -> Option<String> {
    if let Ok(url) = std::env::var("CAPSULE_TEST_POSTGRES") {
        return Some(url);
    }
    assert!(
        std::env::var_os("CAPSULE_NO_POSTGRES").is_some(),
        "no PostgreSQL: run through `cargo xtask test-matrix` (it starts one), set CAPSULE_TEST_POSTGRES to a \
         connection string, or set CAPSULE_NO_POSTGRES=1 to skip the PostgreSQL tests"
    );
    eprintln!("PostgreSQL tests skipped (CAPSULE_NO_POSTGRES)");
    None
}

/// Every database the test matrix has: SQLite always (in the returned
/// directory), PostgreSQL when started (a fresh database named `name`).
pub fn databases(name: &str) -> Vec<(Database, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let mut out = vec![(Database::Sqlite(dir.path().join("chain.sqlite")), Some(dir))];
    if let Some(url) = postgres_url() {
        out.push((Database::Postgres { url: fresh_postgres_db(&url, name), connections: 4 }, None));
    }
    out
}

/// A test device's request-signing credentials.
pub fn credentials(device: &capsule_mls::testkit::TestDevice) -> std::sync::Arc<capsule_client::Credentials> {
    let key = capsule_identity::DeviceSigningKey::from_secret_bytes(&device.me.secret_key_bytes());
    std::sync::Arc::new(capsule_client::Credentials::new(device.user, device.id, key))
}

/// A fresh, empty PostgreSQL database on the test cluster, named `name`.
pub fn fresh_postgres_db(url: &str, name: &str) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        let task = tokio::spawn(conn);
        client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.unwrap();
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        drop(client);
        let _ = task.await;
    });
    format!("{url} dbname={name}")
}

/// Conformance over HTTP: one server per retention setting, on `database()`.
pub struct Http<F: FnMut(Option<u64>) -> Database> {
    pub database: F,
    pub servers: BTreeMap<Option<u64>, Running>,
}

impl<F: FnMut(Option<u64>) -> Database> Http<F> {
    pub fn new(database: F) -> Self {
        Self { database, servers: BTreeMap::new() }
    }

    fn url(&mut self, keep: Option<u64>) -> String {
        if !self.servers.contains_key(&keep) {
            // Small pages, so fetching follows several of them.
            let settings = Settings { keep, page_limit: 2, checks: Checks::OrderingOnly, ..Settings::default() };
            let server = Running::start(&(self.database)(keep), LOOPBACK, settings).unwrap();
            self.servers.insert(keep, server);
        }
        self.servers[&keep].url()
    }
}

impl<F: FnMut(Option<u64>) -> Database> Harness for Http<F> {
    type Chain = HttpChain;

    fn open(&mut self, album: &[u8], base: Epoch, keep: Option<u64>) -> HttpChain {
        let mut chain = HttpChain::new(&self.url(keep), album, Duration::from_secs(30));
        assert_eq!(chain.create_album(base, None), Ok(base));
        chain
    }

    fn unknown(&mut self, album: &[u8]) -> HttpChain {
        HttpChain::new(&self.url(None), album, Duration::from_secs(30))
    }

    fn limits(&self) -> Limits {
        Limits::default()
    }
}

/// A `capsule-server` process, killed when dropped.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub url: String,
}

impl ServerProcess {
    /// Starts the server binary with `args` (a listen address among them) and
    /// waits for the line saying where it listens.
    pub fn spawn(args: &[String]) -> Self {
        use std::io::BufRead as _;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_capsule-server"))
            .args(args)
            .env("CAPSULE_LOG", "warn")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("capsule-server listening on ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let url = rx.recv_timeout(Duration::from_secs(60)).expect("the server starts");
        Self { child, url }
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Rival commits for every epoch (see `capsule_chain::conformance::racing_commits`).
pub fn racing_commits(album: [u8; 16], devices: usize, epochs: u64) -> Vec<Vec<capsule_chain::Submission>> {
    capsule_chain::conformance::racing_commits(album, devices, epochs).unwrap()
}

/// What one racing device saw: the commits the chain told it were accepted,
/// and every epoch it tried.
#[derive(Debug, Default)]
pub struct Race {
    pub accepted: Vec<(Epoch, capsule_chain::CommitHash)>,
    pub tried: std::collections::BTreeSet<Epoch>,
    pub unavailable: u64,
}

/// A device submitting its commit for the head until the chain reaches
/// `epochs`, through `chains` in turn (replicas), retrying when no answer
/// comes (a server being killed).
pub fn race(commits: &[capsule_chain::Submission], chains: &mut [HttpChain], epochs: u64) -> Race {
    use capsule_chain::{ChainError, CommitChain as _, SubmitAnswer};
    let mut race = Race::default();
    let mut turn = 0usize;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        assert!(std::time::Instant::now() < deadline, "the race did not finish");
        turn += 1;
        let n = chains.len();
        let chain = &mut chains[turn % n];
        let head = match chain.head() {
            Ok(h) => h,
            Err(ChainError::Unavailable) => {
                race.unavailable += 1;
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => panic!("head: {e}"),
        };
        if head.0 >= epochs {
            return race;
        }
        let Some(s) = usize::try_from(head.0).ok().and_then(|i| commits.get(i)) else { return race };
        race.tried.insert(head);
        match chain.submit(s) {
            Ok(SubmitAnswer::Accepted { epoch }) => {
                assert_eq!(epoch, head, "a commit made in {head} accepted at {epoch}");
                race.accepted.push((epoch, capsule_chain::CommitHash::of(&s.commit)));
            }
            Ok(SubmitAnswer::Conflict { .. }) => {}
            Err(ChainError::Unavailable) => race.unavailable += 1,
            Err(e) => panic!("submit: {e}"),
        }
    }
}

/// The chain after a race: exactly one entry per epoch, each the commit its
/// device was told was accepted, none lost, none twice. (Every attempt is
/// settled: a device stops only once the chain holds every epoch it tried.)
pub fn check_race(chain: &mut HttpChain, epochs: u64, races: &[Race]) {
    use capsule_chain::CommitChain as _;
    let entries = chain.fetch(Epoch::ZERO).unwrap();
    assert_eq!(entries.len() as u64, epochs, "one entry per epoch");
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.epoch, Epoch(i as u64));
    }
    let hashes: std::collections::BTreeSet<_> = entries.iter().map(|e| e.commit_hash).collect();
    assert_eq!(hashes.len(), entries.len(), "no commit twice");
    let mut winners = BTreeMap::new();
    for race in races {
        for (epoch, hash) in &race.accepted {
            assert!(epoch.0 < epochs, "accepted past the end");
            let entry = &entries[epoch.0 as usize];
            assert_eq!(entry.commit_hash, *hash, "an accepted commit is the chain's entry at its epoch");
            assert!(winners.insert(*epoch, *hash).is_none_or(|h| h == *hash), "two commits accepted for {epoch}");
        }
    }
}
