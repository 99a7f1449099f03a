//! `capsule-sim --seeds N [--from S] [--jobs J] [--chain sqlite]`: runs the
//! simulator over many seeds (J at a time, the machine's parallelism by
//! default) with a progress bar and ends with a table; exits non-zero on any
//! violation. `--chain sqlite` runs every seed against a real chain server on
//! SQLite over loopback instead of the in-memory double.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let seeds = arg(&args, "--seeds", 200);
    let from = arg(&args, "--from", 0);
    let parallelism = std::thread::available_parallelism().map_or(1, |n| u64::try_from(n.get()).unwrap_or(1));
    let jobs = arg(&args, "--jobs", parallelism).clamp(1, seeds.max(1));
    let chain = match args.iter().position(|a| a == "--chain").and_then(|i| args.get(i + 1)).map(String::as_str) {
        None | Some("memory") => capsule_sim::Chain::Memory,
        Some("sqlite") => capsule_sim::Chain::SqliteServer,
        Some(other) => {
            eprintln!("capsule-sim: --chain {other}: expected memory or sqlite");
            return ExitCode::from(2);
        }
    };
    let started = std::time::Instant::now();
    let (mut runs, mut ops, mut faults, mut checks, mut violations) = (0u64, 0u64, 0u64, 0u64, Vec::new());
    let (mut rebootstraps, mut refusals, mut forks, mut reboots) = (0u64, 0u64, 0u64, 0u64);
    // Seeds are independent worlds (own stores, own server): workers take the
    // next seed from a shared counter and report back here, where all output is.
    let next = AtomicU64::new(from);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            let tx = tx.clone();
            let next = &next;
            scope.spawn(move || {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= from + seeds
                        || tx.send(capsule_sim::check_seed_on(seed, capsule_sim::Mix::Forks, chain)).is_err()
                    {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for report in rx {
            runs += 1;
            ops += report.stats.ops;
            faults += report.stats.faults;
            checks += report.stats.checks;
            rebootstraps += report.stats.rebootstraps;
            refusals += report.stats.refusals;
            forks += report.stats.forks;
            reboots += report.stats.reboots;
            if let Some((msg, trace)) = report.violation {
                eprintln!("\nseed {}: {msg}\n  shrunk trace ({} ops): {trace:?}", report.seed, trace.len());
                violations.push(report.seed);
            }
            let width = 40u64;
            let done = (runs * width) / seeds.max(1);
            let bar: String = (0..width).map(|i| if i < done { '#' } else { '.' }).collect();
            if std::io::stderr().is_terminal() {
                eprint!("\r[{bar}] {runs}/{seeds} seeds");
                let _ = std::io::stderr().flush();
            } else if runs % (seeds / 10).max(1) == 0 {
                // Logs get a line per tenth, not a carriage-return storm.
                eprintln!("[{bar}] {runs}/{seeds} seeds ({:.0?})", started.elapsed());
            }
        }
    });
    eprintln!();
    violations.sort_unstable();
    println!(
        "| scenarios run | operations | faults injected | re-bootstraps | refused changes | forks | reboots | invariant checks | violations | time |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {runs} | {ops} | {faults} | {rebootstraps} | {refusals} | {forks} | {reboots} | {checks} | {} | {:.0?} |",
        violations.len(),
        started.elapsed()
    );
    if violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failing seeds: {violations:?}");
        ExitCode::FAILURE
    }
}
