//! `capsule-server`: the commit-chain server.
//!
//! ```text
//! capsule-server --db ./chain.sqlite                     # embedded SQLite (default file: ./chain.sqlite)
//! capsule-server --postgres postgres://user@host/db      # PostgreSQL, for more than one process
//! options: --listen 127.0.0.1:7070  --keep EPOCHS  --page ENTRIES  --connections N
//! ```
//! Logs go to standard error (`RUST_LOG`-style level in `CAPSULE_LOG`, default `info`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use capsule_server::{Backend, Checks, Database, Metrics, Settings};

mod flags {
    use std::net::SocketAddr;
    use std::path::PathBuf;

    xflags::xflags! {
        /// Capsule's commit-chain server.
        cmd capsule-server {
            /// SQLite database file (the default, `./chain.sqlite`).
            optional --db db: PathBuf
            /// PostgreSQL connection string or URL instead of SQLite.
            optional --postgres postgres: String
            /// Pooled PostgreSQL connections (default 16).
            optional --connections connections: usize
            /// Address to listen on (default 127.0.0.1:7070).
            optional --listen listen: SocketAddr
            /// Epochs kept per album, at least 1; older fetches answer "pruned"
            /// (default: all). Devices further behind must re-bootstrap: keep
            /// more than a device is ever expected to fall behind.
            optional --keep keep: u64
            /// Entries per page at most (default 256).
            optional --page page: u64
            /// Order commits without validating them, and register albums
            /// without their public state: for the ordering tests' made-up
            /// albums only, never a deployment (anyone could then write any
            /// commit into the chain).
            optional --ordering-only
        }
    }
}

fn main() -> ExitCode {
    let level = std::env::var("CAPSULE_LOG").ok().and_then(|l| l.parse().ok()).unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).init();
    let flags = flags::CapsuleServer::from_env_or_exit();
    let database = match (flags.postgres, flags.db) {
        (Some(_), Some(_)) => {
            eprintln!("capsule-server: give --db or --postgres, not both");
            return ExitCode::from(2);
        }
        (Some(url), None) => Database::Postgres { url, connections: flags.connections.unwrap_or(16) },
        (None, db) => Database::Sqlite(db.unwrap_or_else(|| PathBuf::from("chain.sqlite"))),
    };
    if flags.keep == Some(0) {
        // A device reads from the epoch before its own: keeping no entry would cut every device off.
        eprintln!("capsule-server: --keep must be at least 1");
        return ExitCode::from(2);
    }
    let listen = flags.listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7070)));
    let settings = Settings {
        keep: flags.keep,
        page_limit: flags.page.unwrap_or(Settings::default().page_limit),
        checks: if flags.ordering_only { Checks::OrderingOnly } else { Checks::Full },
        ..Settings::default()
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("capsule-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let run = runtime.block_on(async {
        let backend = Backend::open(&database).await.map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        // The line a supervisor (or a test) waits for.
        tracing::info!(%addr, ?database, "listening");
        eprintln!("capsule-server listening on http://{addr}");
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        capsule_server::serve(listener, backend, settings, Arc::new(Metrics::default()), shutdown)
            .await
            .map_err(|e| e.to_string())
    });
    match run {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("capsule-server: {e}");
            ExitCode::FAILURE
        }
    }
}
