//! `capsule-sim --seeds N [--from S]`: runs the simulator over many seeds with a
//! progress bar and ends with a table; exits non-zero on any violation.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let seeds = arg(&args, "--seeds", 200);
    let from = arg(&args, "--from", 0);
    let started = std::time::Instant::now();
    let (mut runs, mut ops, mut faults, mut checks, mut violations) = (0u64, 0u64, 0u64, 0u64, Vec::new());
    for seed in from..from + seeds {
        let report = capsule_sim::check_seed(seed);
        runs += 1;
        ops += report.stats.ops;
        faults += report.stats.faults;
        checks += report.stats.checks;
        if let Some((msg, trace)) = report.violation {
            eprintln!("\nseed {seed}: {msg}\n  shortest trace ({} ops): {trace:?}", trace.len());
            violations.push(seed);
        }
        let width = 40u64;
        let done = (runs * width) / seeds.max(1);
        let bar: String = (0..width).map(|i| if i < done { '#' } else { '.' }).collect();
        if std::io::stderr().is_terminal() {
            eprint!("\r[{bar}] {runs}/{seeds} seeds");
            let _ = std::io::stderr().flush();
        } else if runs % (seeds / 10).max(1) == 0 {
            // Logs get a line per tenth, not a carriage-return storm.
            eprintln!("[{bar}] {runs}/{seeds} seeds");
        }
    }
    eprintln!();
    println!("| scenarios run | operations | faults injected | invariant checks | violations | time |");
    println!("| --- | --- | --- | --- | --- | --- |");
    println!("| {runs} | {ops} | {faults} | {checks} | {} | {:.0?} |", violations.len(), started.elapsed());
    if violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failing seeds: {violations:?}");
        ExitCode::FAILURE
    }
}
