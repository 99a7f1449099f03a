//! Command-line grammar of `cargo xtask`.

xflags::xflags! {
    /// Capsule's project automation.
    cmd xtask {
        /// Build, test, doc-test, clippy and rustfmt every crate across its feature sets,
        /// then check the fuzz targets and run `deny`.
        cmd test-matrix {
            /// Also run the slow tier (long property runs, crash sweeps, simulator seeds).
            optional --slow
            /// Skip the PostgreSQL tests (otherwise a throwaway cluster is started,
            /// installing Debian's postgresql package if it must).
            optional --no-postgres
            /// Only this crate (repeatable).
            repeated -p, --package package: String
        }
        /// `cargo deny` per crate: licenses, bans and sources, offline.
        cmd deny {
            /// Also check advisories (needs the advisory database, i.e. network).
            optional --advisories
        }
        /// Run each fuzz target for a while (nightly toolchain if present) on
        /// `fuzz/corpus/<t>` plus the committed `fuzz/seeds/<t>` and
        /// `fuzz/regressions/<t>`; print coverage and exec/s; fail on a crash.
        cmd fuzz {
            /// Only this target (as `cargo fuzz list --fuzz-dir fuzz` names it).
            optional --target target: String
            /// Seconds per target (default 30).
            optional --seconds seconds: u32
        }
        /// The album story end to end with real crypto (the facade's demo).
        cmd demo {}
        /// The deterministic simulator over many seeds (release build).
        cmd sim {
            /// How many seeds (default 200).
            optional --seeds seeds: u64
            /// The first seed (default 0).
            optional --from from: u64
            /// `memory` (the in-memory double, default) or `sqlite` (a real
            /// chain server on SQLite over loopback).
            optional --chain chain: String
        }
        /// The chain server under load over loopback (SQLite, and PostgreSQL on a
        /// throwaway cluster): commits/s and latency beside direct inserts.
        cmd load {
            /// Skip PostgreSQL.
            optional --no-postgres
            /// Albums (default 8).
            optional --albums albums: u32
            /// Devices per album (default 4).
            optional --devices devices: u32
            /// Epochs per album (default 50).
            optional --epochs epochs: u32
        }
        /// Run the benchmark suite (`capsule-bench`) and write the report with its
        /// plots: `docs/PERFORMANCE.md`, or with `--quick`
        /// `target/capsule-bench/report/PERFORMANCE.md` (never `docs/`).
        cmd bench {
            /// Short measurements (`CAPSULE_BENCH_QUICK=1`): a smoke test, not numbers to publish.
            optional --quick
            /// Also albums of 1024 devices (`CAPSULE_BENCH_LARGE=1`; slow: minutes per fixture).
            optional --large
            /// Only the benchmarks this matches: a substring of
            /// `group/flavor/parameter` (a leading `^` allowed), e.g. `overhead.`;
            /// criterion gets it as its filter, the suite builds only what it selects.
            optional --only prefix: String
        }
    }
}
