//! Repository invariants, checked as ordinary tests (`cargo test -p xtask`).

use std::fs;
use std::path::{Path, PathBuf};

use xshell::Shell;

use crate::{metadata, project_root};

/// Every Rust source file we own (not build output, not vendored).
fn rust_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if name == "target" || name.to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    for dir in ["crates", "xtask", "tests", "fuzz"] {
        walk(&project_root().join(dir), &mut out);
    }
    assert!(!out.is_empty(), "found no Rust sources");
    out
}

#[test]
fn every_source_file_starts_with_a_module_doc() {
    let offenders: Vec<_> = rust_files()
        .into_iter()
        .filter(|f| {
            let text = fs::read_to_string(f).unwrap_or_default();
            !text.lines().find(|l| !l.trim().is_empty()).is_some_and(|l| l.starts_with("//!"))
        })
        .collect();
    assert!(offenders.is_empty(), "files without a leading `//!` line: {offenders:#?}");
}

#[test]
fn no_ignored_or_should_panic_tests() {
    // Built from parts so this file does not match itself.
    let banned = [concat!("#[", "ignore"), concat!("#[", "should_panic")];
    let offenders: Vec<_> = rust_files()
        .into_iter()
        .filter(|f| {
            let text = fs::read_to_string(f).unwrap_or_default();
            banned.iter().any(|b| text.contains(b))
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "slow tests belong in the slow tier and panics are asserted as `Err`: {offenders:#?}"
    );
}

/// The allowed edges, read from the fenced block after `<!-- allowed-edges -->`
/// in docs/ARCHITECTURE.md: lines `crate -> dep, dep`.
fn allowed_edges() -> Vec<(String, String)> {
    let doc = fs::read_to_string(project_root().join("docs/ARCHITECTURE.md")).unwrap();
    let block = doc
        .split("<!-- allowed-edges -->")
        .nth(1)
        .and_then(|rest| rest.split("```").nth(1))
        .expect("docs/ARCHITECTURE.md has an allowed-edges block");
    let mut edges = Vec::new();
    for line in block.lines().filter(|l| l.contains("->")) {
        let (from, to) = line.split_once("->").unwrap();
        for dep in to.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            edges.push((from.trim().to_owned(), dep.to_owned()));
        }
    }
    edges
}

#[test]
fn crate_dependency_edges_match_architecture_md() {
    let sh = Shell::new().unwrap();
    sh.change_dir(project_root());
    let packages = metadata::workspace_packages(&sh).unwrap();
    let allowed = allowed_edges();
    let mut unexpected = Vec::new();
    for p in &packages {
        for (dep, kind) in &p.workspace_deps {
            // A dev-dependency on itself only turns on test features (`testkit`).
            if *dep == p.name && kind == "dev" {
                continue;
            }
            if !allowed.contains(&(p.name.clone(), dep.clone())) {
                unexpected.push(format!("{} -> {dep} ({kind})", p.name));
            }
        }
    }
    assert!(unexpected.is_empty(), "edges not allowed by docs/ARCHITECTURE.md: {unexpected:#?}");
    // Nothing but the simulator, the tests and the benchmarks depends on the facade, nothing on xtask; xtask depends on nothing of ours.
    for p in &packages {
        assert!(!p.workspace_deps.iter().any(|(d, _)| d == "xtask"), "{} depends on xtask", p.name);
        if !["capsule-sim", "capsule-tests", "capsule-bench"].contains(&p.name.as_str()) {
            // The facade's own dev-dependency on itself (for its `testkit`) is not a layer edge.
            let on_facade =
                p.workspace_deps.iter().any(|(d, kind)| d == "capsule" && !(p.name == "capsule" && kind == "dev"));
            assert!(!on_facade, "{} depends on the facade", p.name);
        }
        if p.name == "xtask" {
            assert!(p.workspace_deps.is_empty(), "xtask depends on {:?}", p.workspace_deps);
        }
    }
}

/// Only capsule-mls builds on `openmls` (capsule-store on its storage crates).
/// Higher layers may name it as a dev-dependency, for raw-OpenMLS baselines in
/// their benchmarks and forged messages in their tests.
#[test]
fn only_capsule_mls_uses_openmls() {
    let sh = Shell::new().unwrap();
    sh.change_dir(project_root());
    for p in metadata::workspace_packages(&sh).unwrap() {
        let open_to_all = ["capsule-mls", "capsule-sim", "capsule-tests", "capsule-bench"];
        let uses = |pred: &dyn Fn(&str) -> bool| p.all_deps.iter().any(|(d, kind)| kind != "dev" && pred(d));
        if uses(&|d| d == "openmls") {
            assert!(open_to_all.contains(&p.name.as_str()), "{} depends on openmls", p.name);
        }
        if uses(&|d| d.starts_with("openmls_") && d.ends_with("_storage")) {
            assert!(
                open_to_all.contains(&p.name.as_str()) || p.name == "capsule-store",
                "{} depends on an OpenMLS storage crate",
                p.name
            );
        }
    }
}

#[test]
fn ci_runs_the_readme_test_command() {
    let readme = fs::read_to_string(project_root().join("README.md")).unwrap();
    let ci = fs::read_to_string(project_root().join(".ci/run")).unwrap();
    let command = readme
        .split("<!-- test-command -->")
        .nth(1)
        .and_then(|rest| rest.split("```").nth(1))
        .and_then(|block| {
            block
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with("sh") && !l.starts_with("bash") && !l.starts_with('#'))
        })
        .expect("README.md marks its test command with <!-- test-command -->");
    assert!(ci.lines().any(|l| l.trim() == command), ".ci/run does not run `{command}`");
}

/// A machine that never built the project has no sources for packages its builds
/// never download; `cargo deny --offline` needs them all (issue 11).
#[test]
fn deny_fetches_before_it_runs_offline() {
    for advisories in [false, true] {
        let plan = crate::deny_plan(advisories, &["a/Cargo.toml".to_owned(), "b/Cargo.toml".to_owned()]);
        let fetch = plan.iter().position(|c| c.iter().map(String::as_str).eq(["cargo", "fetch", "--locked"]));
        let first_deny = plan.iter().position(|c| c.get(1).is_some_and(|w| w == "deny"));
        assert!(fetch.is_some() && fetch < first_deny, "deny plan does not fetch first: {plan:#?}");
        assert_eq!(plan.iter().filter(|c| c.get(1).is_some_and(|w| w == "deny")).count(), 2);
        assert_eq!(plan.iter().any(|c| c.iter().any(|w| w == "--offline")), !advisories);
    }
}
