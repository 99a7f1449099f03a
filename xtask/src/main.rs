//! `cargo xtask`: every piece of project automation, in Rust, with no tool to install by hand.
//!
//! Missing cargo tools are installed from the crate registry on first use.

// `serde_json::Value` indexing returns `Null` for missing keys; it does not panic.
#![allow(clippy::indexing_slicing)]

mod flags;
mod metadata;
mod postgres;
mod report;
#[cfg(test)]
mod tidy;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

fn main() -> Result<()> {
    let flags = flags::Xtask::from_env_or_exit();
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    match flags.subcommand {
        flags::XtaskCmd::TestMatrix(f) => test_matrix(&sh, f.slow, f.no_postgres, &f.package),
        flags::XtaskCmd::Deny(f) => deny(&sh, f.advisories),
        flags::XtaskCmd::Fuzz(f) => fuzz(&sh, f.target.as_deref(), f.seconds.unwrap_or(30)),
        flags::XtaskCmd::Bench(f) => bench(&sh, f.quick, f.large, f.only.as_deref()),
        flags::XtaskCmd::Sim(f) => {
            sim(&sh, f.seeds.unwrap_or(200), f.from.unwrap_or(0), f.chain.as_deref().unwrap_or("memory"))
        }
        flags::XtaskCmd::Demo(_) => demo(&sh),
        flags::XtaskCmd::Load(f) => load(&sh, &f),
    }
}

/// The workspace root (xtask's parent directory).
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

pub(crate) fn section(title: &str) {
    eprintln!("\n==> {title}");
}

fn test_matrix(sh: &Shell, slow: bool, no_postgres: bool, only: &[String]) -> Result<()> {
    let started = std::time::Instant::now();
    let packages = metadata::workspace_packages(sh)?;
    // Every crate is built once per feature set: incremental caches would only
    // pile up (a clean CI run once filled its disk with them), never be reused.
    let _incremental = sh.push_env("CARGO_INCREMENTAL", "0");
    section("rustfmt");
    cmd!(sh, "cargo fmt --all --check").run()?;
    cmd!(sh, "cargo fmt --manifest-path fuzz/Cargo.toml --check").run()?;
    // The server's tests run on a real PostgreSQL: one cluster for the whole
    // matrix, stopped when it ends (or fails).
    let cluster = if no_postgres { None } else { Some(postgres::start(sh)?) };
    let _postgres = match &cluster {
        Some(c) => sh.push_env("CAPSULE_TEST_POSTGRES", c.url()),
        None => sh.push_env("CAPSULE_NO_POSTGRES", "1"),
    };

    let mut ran = 0usize;
    for package in packages.iter().filter(|p| only.is_empty() || only.contains(&p.name)) {
        let name = &package.name;
        for features in package.feature_sets(slow) {
            let label = if features.is_empty() { "default features".to_owned() } else { features.join(",") };
            let feature_vec = feature_args(&features);
            let feature_args = feature_vec.as_slice();
            section(&format!("{name} [{label}]"));
            cmd!(sh, "cargo clippy -p {name} --all-targets --locked {feature_args...} -- -D warnings").run()?;
            let _slow = slow.then(|| sh.push_env("CAPSULE_SLOW", "1"));
            cmd!(sh, "cargo test -p {name} --all-targets --locked {feature_args...}").run()?;
            if package.has_lib {
                cmd!(sh, "cargo test -p {name} --doc --locked {feature_args...}").run()?;
            }
            ran += 1;
        }
    }
    if only.is_empty() {
        // The simulator needs optimised code to run thousands of seeds in minutes.
        section(&format!("simulator: {} seeds", if slow { 5000 } else { 200 }));
        sim(sh, if slow { 5000 } else { 200 }, 0, "memory")?;
        // The same core against the real server: its fast tier, and the
        // resilience tests, through the fault layer over loopback HTTP.
        section("simulator against the chain server on SQLite: 40 seeds");
        sim(sh, 40, 10_000, "sqlite")?;
        if slow {
            // A smoke run: every benchmark runs briefly and every targeted group reports.
            bench(sh, true, false, None)?;
        }
        section("capsule-resilience tests against the chain server on SQLite");
        let _chain = sh.push_env("CAPSULE_TEST_CHAIN", "sqlite");
        cmd!(sh, "cargo test -p capsule-resilience --features testkit --tests --locked").run()?;
        section("fuzz targets build (stable, no instrumentation)");
        cmd!(sh, "cargo check --manifest-path fuzz/Cargo.toml --target-dir target/fuzz-check --bins").run()?;
        deny(sh, false)?;
    }
    eprintln!(
        "\ntest-matrix: {ran} crate/feature combinations passed{} in {:.0?}",
        if slow { " (slow tier included)" } else { "" },
        started.elapsed()
    );
    Ok(())
}

/// Installs `tool` (a cargo subcommand) from the crate registry if it is missing.
fn ensure_cargo_tool(sh: &Shell, tool: &str, krate: &str) -> Result<()> {
    if cmd!(sh, "cargo {tool} --version").quiet().ignore_stdout().ignore_stderr().run().is_ok() {
        return Ok(());
    }
    section(&format!("installing {krate} from the crate registry"));
    cmd!(sh, "cargo install --locked {krate}").run().with_context(|| format!("installing {krate}"))?;
    Ok(())
}

/// The commands `cargo xtask deny` runs, in order, for the given crate manifests.
///
/// `cargo deny --offline` runs `cargo metadata`, which needs the source of every
/// package in `Cargo.lock` (even ones no build on this platform downloads), so a
/// machine that never built the project fails unless the sources are fetched
/// first. `cargo fetch --locked` reaches only the crate registry.
pub(crate) fn deny_plan(advisories: bool, manifests: &[String]) -> Vec<Vec<String>> {
    let words = |s: &[&str]| s.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
    let mut plan = vec![words(&["cargo", "fetch", "--locked"])];
    for manifest in manifests {
        let mut command = words(&["cargo", "deny"]);
        if !advisories {
            command.push("--offline".to_owned());
        }
        command.extend(["--manifest-path".to_owned(), manifest.clone(), "check".to_owned()]);
        command.extend(words(&["bans", "licenses", "sources"]));
        if advisories {
            command.push("advisories".to_owned());
        }
        plan.push(command);
    }
    plan
}

fn deny(sh: &Shell, advisories: bool) -> Result<()> {
    ensure_cargo_tool(sh, "deny", "cargo-deny")?;
    let packages = metadata::workspace_packages(sh)?;
    let manifests: Vec<String> = packages.iter().map(|p| p.manifest_path.clone()).collect();
    for command in deny_plan(advisories, &manifests) {
        let (program, args) = command.split_first().context("empty command")?;
        if let Some(i) = command.iter().position(|w| w == "--manifest-path") {
            section(&format!("cargo deny: {}", command.get(i + 1).map_or("?", String::as_str)));
        } else {
            section(&command.join(" "));
        }
        cmd!(sh, "{program} {args...}").run()?;
    }
    Ok(())
}

/// Builds the demo with cargo's progress on screen (a first build takes minutes),
/// then runs it with only the demo's own output.
fn demo(sh: &Shell) -> Result<()> {
    section("building the demo (the first build takes a few minutes)");
    cmd!(sh, "cargo build --locked --package capsule --example demo").run()?;
    cmd!(sh, "cargo run --locked --quiet --package capsule --example demo").run()?;
    Ok(())
}

/// Bounded: a few thousand commits over loopback, seconds per database.
fn load(sh: &Shell, f: &flags::Load) -> Result<()> {
    let albums = f.albums.unwrap_or(8).to_string();
    let devices = f.devices.unwrap_or(4).to_string();
    let epochs = f.epochs.unwrap_or(50).to_string();
    section("building the load generator (release)");
    cmd!(sh, "cargo build --release --locked -p capsule-server --example load").run()?;
    let cluster = if f.no_postgres { None } else { Some(postgres::start(sh)?) };
    let pg: Vec<String> = cluster.as_ref().map(|c| vec!["--postgres".to_owned(), c.url()]).unwrap_or_default();
    section("load");
    cmd!(sh, "target/release/examples/load --albums {albums} --devices {devices} --epochs {epochs} {pg...}").run()?;
    Ok(())
}

/// Runs every fuzz target (or `only`) for `seconds` on its working corpus
/// `fuzz/corpus/<target>` (libFuzzer writes new inputs there; ignored by git)
/// plus the committed `fuzz/seeds/<target>` and `fuzz/regressions/<target>`
/// (every crash found, minimised: libFuzzer runs them all before fuzzing, so a
/// regression fails at once). Prints each target's final coverage and speed,
/// then a summary; fails if any target crashed.
fn fuzz(sh: &Shell, only: Option<&str>, seconds: u32) -> Result<()> {
    ensure_cargo_tool(sh, "fuzz", "cargo-fuzz")?;
    // libFuzzer instrumentation wants nightly; without it, run uninstrumented on stable.
    let nightly = cmd!(sh, "rustup run nightly rustc --version").quiet().ignore_stdout().ignore_stderr().run().is_ok();
    let toolchain: &[&str] = if nightly { &["+nightly"] } else { &[] };
    let sanitizer: &[&str] = if nightly { &[] } else { &["--sanitizer", "none"] };
    let targets = cmd!(sh, "cargo {toolchain...} fuzz list --fuzz-dir fuzz").read()?;
    let libfuzzer = [format!("-max_total_time={seconds}"), "-print_final_stats=1".to_owned()];
    let libfuzzer = &libfuzzer;
    let mut runs = Vec::new();
    for target in targets.lines().map(str::trim).filter(|t| only.is_none_or(|o| o == *t)) {
        section(&format!("fuzz {target} for {seconds}s"));
        let corpus = format!("fuzz/corpus/{target}");
        sh.create_dir(&corpus)?;
        let mut corpora = vec![corpus];
        for committed in [format!("fuzz/seeds/{target}"), format!("fuzz/regressions/{target}")] {
            if sh.path_exists(&committed) {
                corpora.push(committed);
            }
        }
        let run = cmd!(
            sh,
            "cargo {toolchain...} fuzz run --fuzz-dir fuzz {sanitizer...} {target} {corpora...} -- {libfuzzer...}"
        );
        let outcome = FuzzOutcome::of(target, run.into())?;
        eprintln!("\n{}", outcome.line());
        runs.push(outcome);
    }
    if runs.is_empty() {
        bail!("no fuzz target matched");
    }
    section(&format!("fuzz summary ({seconds}s per target{})", if nightly { "" } else { ", uninstrumented" }));
    for run in &runs {
        eprintln!("{}", run.line());
    }
    let crashed: Vec<&str> = runs.iter().filter(|r| !r.passed).map(|r| r.target.as_str()).collect();
    if !crashed.is_empty() {
        bail!(
            "fuzz targets failed: {} (reproducers under fuzz/artifacts/; minimise with `cargo +nightly fuzz tmin --fuzz-dir fuzz <target> <file>` and commit under fuzz/regressions/<target>/)",
            crashed.join(", ")
        );
    }
    Ok(())
}

/// How one fuzz run ended, from libFuzzer's output.
#[derive(Debug)]
struct FuzzOutcome {
    target: String,
    passed: bool,
    /// libFuzzer's last status line (`#runs ... cov: ... ft: ... exec/s: ...`).
    status: Option<String>,
    /// `-print_final_stats` lines: `stat::name: value`.
    stats: Vec<(String, String)>,
    /// Where cargo-fuzz saved a failing input.
    artifact: Option<String>,
}

impl FuzzOutcome {
    /// Runs `command`, echoing its stderr (libFuzzer writes everything there)
    /// while keeping what the summary needs.
    fn of(target: &str, mut command: std::process::Command) -> Result<Self> {
        use std::io::BufRead as _;
        let mut child = command.stderr(std::process::Stdio::piped()).spawn().context("starting cargo fuzz")?;
        let mut outcome =
            Self { target: target.to_owned(), passed: false, status: None, stats: Vec::new(), artifact: None };
        if let Some(stderr) = child.stderr.take() {
            for line in std::io::BufReader::new(stderr).lines() {
                let line = line.context("reading cargo fuzz's output")?;
                eprintln!("{line}");
                let trimmed = line.trim();
                if trimmed.starts_with('#') && trimmed.contains(" cov: ") {
                    outcome.status = Some(trimmed.to_owned());
                } else if let Some((name, value)) = trimmed.strip_prefix("stat::").and_then(|s| s.split_once(':')) {
                    outcome.stats.push((name.to_owned(), value.trim().to_owned()));
                } else if trimmed.starts_with("fuzz/artifacts/") || trimmed.contains("/fuzz/artifacts/") {
                    outcome.artifact.get_or_insert_with(|| trimmed.to_owned());
                }
            }
        }
        outcome.passed = child.wait().context("waiting for cargo fuzz")?.success();
        Ok(outcome)
    }

    fn stat(&self, name: &str) -> &str {
        self.stats.iter().find(|(n, _)| n == name).map_or("?", |(_, v)| v.as_str())
    }

    /// A field of the status line (`cov`, `ft`, `corp`).
    fn field(&self, name: &str) -> &str {
        let mut words = self.status.as_deref().unwrap_or_default().split_whitespace();
        words.by_ref().find(|w| w.strip_suffix(':') == Some(name));
        words.next().unwrap_or("?")
    }

    fn line(&self) -> String {
        let result = if self.passed {
            "ok".to_owned()
        } else {
            format!("FAILED{}", self.artifact.as_deref().map(|a| format!(" ({a})")).unwrap_or_default())
        };
        format!(
            "{:<24} runs {:>9}  exec/s {:>6}  cov {:>6}  ft {:>6}  corp {:>12}  rss {:>5} MB  {result}",
            self.target,
            self.stat("number_of_executed_units"),
            self.stat("average_exec_per_sec"),
            self.field("cov"),
            self.field("ft"),
            self.field("corp"),
            self.stat("peak_rss_mb"),
        )
    }
}

/// Runs the benchmark suite and writes its report ([`report::out_dir`]).
/// Unfiltered, fails if `targets.json` names a group that has no result, so a
/// quick run is a smoke test of every benchmark.
fn bench(sh: &Shell, quick: bool, large: bool, only: Option<&str>) -> Result<()> {
    // The report must describe this run only, not results an earlier one left.
    for dir in [report::CRITERION_DIR, report::BENCH_DIR] {
        sh.remove_path(dir)?;
    }
    let root = project_root();
    let filter: Vec<&str> = only.map(|o| vec!["--", o]).unwrap_or_default();
    let _quick = quick.then(|| sh.push_env("CAPSULE_BENCH_QUICK", "1"));
    let _large = large.then(|| sh.push_env("CAPSULE_BENCH_LARGE", "1"));
    // Criterion would follow CARGO_TARGET_DIR; the report reads one place.
    let _criterion = sh.push_env("CRITERION_HOME", root.join(report::CRITERION_DIR));
    section(&format!("benchmarks{}", if quick { " (quick)" } else { "" }));
    cmd!(sh, "cargo bench --locked -p capsule-bench {filter...}").run()?;
    // capsule-identity's ML-DSA backend is a feature: a second build of the
    // suite measures the certificate check on libcrux's, into the same report.
    // The filter is a substring, as the suite reads it (`wanted`).
    const LIBCRUX: &str = "identity.certificate_cold_libcrux";
    let second = only.map(|o| o.trim_start_matches('^')).is_none_or(|o| LIBCRUX.contains(o) || o.contains(LIBCRUX));
    let libcrux = second.then(|| {
        section("benchmarks on libcrux's ML-DSA");
        cmd!(sh, "cargo bench --locked -p capsule-bench --features libcrux-ml-dsa -- {LIBCRUX}").run()
    });
    // Whatever the second build did, the first one's results are reported.
    let out = report::out_dir(quick);
    let outcome = report::write(&root, &root.join(out), &report::header(sh, quick))?;
    eprintln!("\nbench: {} targets met, {} missed; report in {out}/PERFORMANCE.md", outcome.met, outcome.missed);
    libcrux.transpose()?;
    if only.is_none() {
        if !sh.path_exists(Path::new(report::BENCH_DIR).join("targets.json")) {
            bail!("the benchmarks wrote no {}/targets.json", report::BENCH_DIR);
        }
        if !outcome.unmeasured.is_empty() {
            bail!("targets.json names groups with no results: {}", outcome.unmeasured.join(", "));
        }
    }
    Ok(())
}

fn feature_args(features: &[String]) -> Vec<String> {
    if features.is_empty() { vec![] } else { vec!["--features".into(), features.join(",")] }
}

fn sim(sh: &Shell, seeds: u64, from: u64, chain: &str) -> Result<()> {
    let (seeds, from) = (seeds.to_string(), from.to_string());
    cmd!(
        sh,
        "cargo run --release --locked --quiet --package capsule-sim -- --seeds {seeds} --from {from} --chain {chain}"
    )
    .run()?;
    Ok(())
}
