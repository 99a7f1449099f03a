//! Servers on real databases for the tests, and the conformance harness over
//! HTTP.

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use capsule_chain::Epoch;
use capsule_chain::conformance::Harness;
use capsule_chain::rules::Limits;
use capsule_client::HttpChain;
use capsule_server::{Database, Running, Settings};

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
            let settings = Settings { keep, page_limit: 2, ..Settings::default() };
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
        assert_eq!(chain.create_album(base), Ok(base));
        chain
    }

    fn unknown(&mut self, album: &[u8]) -> HttpChain {
        HttpChain::new(&self.url(None), album, Duration::from_secs(30))
    }

    fn limits(&self) -> Limits {
        Limits::default()
    }
}
