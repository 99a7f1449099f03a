//! The server keeps the chain's contract on each database, over loopback
//! HTTP through the real client: the same suite the in-memory double runs.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::as_conversions)] // test code

mod common;

use capsule_chain::conformance;
use capsule_server::Database;
use common::{Http, fresh_postgres_db, postgres_url};

#[test]
fn the_sqlite_server_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let mut harness = Http::new(|keep| Database::Sqlite(root.join(format!("chain-{keep:?}.sqlite"))));
    assert_eq!(conformance::run(&mut harness), Ok(()));
}

#[test]
fn the_postgres_server_keeps_the_contract() {
    let Some(url) = postgres_url() else { return };
    let mut harness = Http::new(|keep| Database::Postgres {
        url: fresh_postgres_db(&url, &format!("conformance_{}", keep.map_or("all".into(), |k| k.to_string()))),
        connections: 4,
    });
    assert_eq!(conformance::run(&mut harness), Ok(()));
}
