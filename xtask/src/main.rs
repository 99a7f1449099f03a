//! `cargo xtask`: every piece of project automation, in Rust, with no tool to install by hand.
//!
//! Missing cargo tools are installed from the crate registry on first use.

// `serde_json::Value` indexing returns `Null` for missing keys; it does not panic.
#![allow(clippy::indexing_slicing)]

mod flags;
mod metadata;
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
        flags::XtaskCmd::TestMatrix(f) => test_matrix(&sh, f.slow, &f.package),
        flags::XtaskCmd::Deny(f) => deny(&sh, f.advisories),
        flags::XtaskCmd::Fuzz(f) => fuzz(&sh, f.target.as_deref(), f.seconds.unwrap_or(30)),
        flags::XtaskCmd::Bench(f) => bench(&sh, f.package.as_deref()),
        flags::XtaskCmd::Sim(f) => sim(&sh, f.seeds.unwrap_or(200), f.from.unwrap_or(0)),
        flags::XtaskCmd::Demo(_) => {
            cmd!(sh, "cargo run --quiet --package capsule --example demo").run()?;
            Ok(())
        }
    }
}

/// The workspace root (xtask's parent directory).
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn section(title: &str) {
    eprintln!("\n==> {title}");
}

fn test_matrix(sh: &Shell, slow: bool, only: &[String]) -> Result<()> {
    let started = std::time::Instant::now();
    let packages = metadata::workspace_packages(sh)?;
    section("rustfmt");
    cmd!(sh, "cargo fmt --all --check").run()?;
    cmd!(sh, "cargo fmt --manifest-path fuzz/Cargo.toml --check").run()?;

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
        sim(sh, if slow { 5000 } else { 200 }, 0)?;
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

fn deny(sh: &Shell, advisories: bool) -> Result<()> {
    ensure_cargo_tool(sh, "deny", "cargo-deny")?;
    let checks: &[&str] =
        if advisories { &["bans", "licenses", "sources", "advisories"] } else { &["bans", "licenses", "sources"] };
    let offline: &[&str] = if advisories { &[] } else { &["--offline"] };
    for package in metadata::workspace_packages(sh)? {
        let manifest = package.manifest_path.clone();
        section(&format!("cargo deny: {}", package.name));
        cmd!(sh, "cargo deny {offline...} --manifest-path {manifest} check {checks...}").run()?;
    }
    Ok(())
}

fn fuzz(sh: &Shell, only: Option<&str>, seconds: u32) -> Result<()> {
    ensure_cargo_tool(sh, "fuzz", "cargo-fuzz")?;
    // libFuzzer instrumentation wants nightly; without it, run uninstrumented on stable.
    let nightly = cmd!(sh, "rustup run nightly rustc --version").quiet().ignore_stdout().ignore_stderr().run().is_ok();
    let toolchain: &[&str] = if nightly { &["+nightly"] } else { &[] };
    let sanitizer: &[&str] = if nightly { &[] } else { &["--sanitizer", "none"] };
    let targets = cmd!(sh, "cargo {toolchain...} fuzz list --fuzz-dir fuzz").read()?;
    let max_time = format!("-max_total_time={seconds}");
    let mut ran = 0;
    for target in targets.lines().map(str::trim).filter(|t| only.is_none_or(|o| o == *t)) {
        section(&format!("fuzz {target} for {seconds}s"));
        cmd!(sh, "cargo {toolchain...} fuzz run --fuzz-dir fuzz {sanitizer...} {target} -- {max_time}").run()?;
        ran += 1;
    }
    if ran == 0 {
        bail!("no fuzz target matched");
    }
    Ok(())
}

fn bench(sh: &Shell, only: Option<&str>) -> Result<()> {
    for package in metadata::workspace_packages(sh)? {
        if !package.has_benches || only.is_some_and(|o| o != package.name) {
            continue;
        }
        let name = package.name.clone();
        for features in package.feature_sets(false) {
            let feature_vec = feature_args(&features);
            let feature_args = feature_vec.as_slice();
            section(&format!("bench {name} {}", features.join(",")));
            cmd!(sh, "cargo bench -p {name} {feature_args...}").run()?;
        }
    }
    Ok(())
}

fn feature_args(features: &[String]) -> Vec<String> {
    if features.is_empty() { vec![] } else { vec!["--features".into(), features.join(",")] }
}

fn sim(sh: &Shell, seeds: u64, from: u64) -> Result<()> {
    let (seeds, from) = (seeds.to_string(), from.to_string());
    cmd!(sh, "cargo run --release --locked --quiet --package capsule-sim -- --seeds {seeds} --from {from}").run()?;
    Ok(())
}
