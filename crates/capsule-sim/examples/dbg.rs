#![allow(clippy::print_stderr, clippy::unwrap_used, missing_docs)]
fn main() {
    let seeds: Vec<u64> = std::env::args().skip(1).map(|s| s.parse().unwrap()).collect();
    for seed in seeds {
        let r = capsule_sim::check_seed(seed);
        eprintln!("seed {seed}: {:?}", r.violation);
    }
}
