//! Reconciling 1, 10 and 100 missed commits against a raw OpenMLS
//! process-and-merge loop over the same commits, on a second device in the same
//! state, measured in the same run and printed as a ratio.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::indexing_slicing, clippy::panic, missing_docs)] // a benchmark

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use capsule_amk::HistoryPolicy;
use capsule_mls::OpenMlsProvider as _;
use capsule_resilience::{Change, ReconcileOutcome};
use common::*;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{GroupId, MlsGroup, MlsMessageIn, ProcessedMessageContent, ProtocolMessage};

/// Alice (0) rotates `missed` times while Bob's two devices (1, 2) are offline.
fn scenario(missed: usize) -> Net {
    let mut net = Net::new(50);
    let alice = net.user(1);
    let a0 = net.device(alice);
    net.create(a0, HistoryPolicy::Full, &[alice]);
    net.add_user(a0, 2, 2);
    net.sync_all();
    for _ in 0..missed {
        net.propose(a0, Change::RotateAmk);
        net.drive(a0).unwrap();
    }
    net
}

fn ours(net: &mut Net) {
    match net.reconcile(1).unwrap() {
        ReconcileOutcome::Reconciled { applied_commits } => {
            black_box(applied_commits);
        }
        other => panic!("{other:?}"),
    }
}

/// What OpenMLS alone does for the same catch-up: process and merge each commit.
fn raw(net: &mut Net) {
    let provider = &net.nodes[2].t.provider;
    let mut group = MlsGroup::load(provider.storage(), &GroupId::from_slice(ALBUM.as_bytes())).unwrap().unwrap();
    let from = group.epoch().as_u64();
    for entry in net.server.entries(ALBUM.as_bytes()).into_iter().skip(usize::try_from(from).unwrap()) {
        let message = MlsMessageIn::tls_deserialize_exact(entry.commit.as_slice()).unwrap();
        let message: ProtocolMessage = message.try_into_protocol_message().unwrap();
        let processed = group.process_message(provider, message).unwrap();
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else { panic!() };
        group.merge_staged_commit(provider, *staged).unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let measuring = std::env::args().any(|a| a == "--bench");
    let mut g = c.benchmark_group("reconcile");
    g.sample_size(10);
    for missed in [1usize, 10, 100] {
        g.bench_function(format!("reconcile_with_server/{missed}"), |b| {
            b.iter_batched(|| scenario(missed), |mut net| ours(&mut net), BatchSize::PerIteration)
        });
        g.bench_function(format!("raw process+merge/{missed}"), |b| {
            b.iter_batched(|| scenario(missed), |mut net| raw(&mut net), BatchSize::PerIteration)
        });
        if measuring {
            let (mut t_ours, mut t_raw) = (Duration::ZERO, Duration::ZERO);
            for _ in 0..3 {
                let mut net = scenario(missed);
                let start = Instant::now();
                ours(&mut net);
                t_ours += start.elapsed();
                let start = Instant::now();
                raw(&mut net);
                t_raw += start.elapsed();
            }
            println!(
                "{missed:>4} missed commits: reconcile {:?} vs raw OpenMLS {:?}: ratio {:.2}",
                t_ours / 3,
                t_raw / 3,
                t_ours.as_secs_f64() / t_raw.as_secs_f64()
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
