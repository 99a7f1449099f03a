//! Property test: random interleavings of ceremonies from several devices through
//! the fault layer always end with every active device on the chain head with
//! identical epoch authenticators and keyrings, and every intent confirmed or
//! surfaced.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code

mod common;

use core::time::Duration;

use capsule_amk::HistoryPolicy;
use capsule_resilience::testkit::Fault;
use capsule_resilience::*;
use common::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    /// Device proposes an AMK rotation.
    Rotate(usize),
    /// The admin rotates (admins and members race on the same epochs).
    AdminRotate,
    /// Device drives its intents.
    Drive(usize),
    /// Device reconciles.
    Reconcile(usize),
    /// A fault on the device's next submission.
    Fault(usize, u8),
    /// Cut or restore a device's connection.
    Partition(usize, bool),
    /// Time passes.
    Wait(u16),
}

fn step(devices: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..devices).prop_map(Step::Rotate),
        1 => Just(Step::AdminRotate),
        4 => (0..devices).prop_map(Step::Drive),
        2 => (0..devices).prop_map(Step::Reconcile),
        2 => (0..devices, 0u8..5).prop_map(|(d, f)| Step::Fault(d, f)),
        1 => (0..devices, any::<bool>()).prop_map(|(d, c)| Step::Partition(d, c)),
        2 => (1u16..900).prop_map(Step::Wait),
    ]
}

fn network() -> Net {
    let mut net = Net::new(41);
    let alice = net.user(1);
    let a0 = net.device(alice);
    net.create(a0, HistoryPolicy::Full, &[alice]);
    net.add_user(a0, 2, 2);
    net.sync_all();
    net
}

proptest! {
    // 48 cases in the fast tier, 1000 in the slow one (`cargo xtask test-matrix --slow`).
    #![proptest_config(ProptestConfig {
        cases: if std::env::var_os("CAPSULE_SLOW").is_some() { 1000 } else { 48 },
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_interleaving_converges(steps in proptest::collection::vec(step(3), 1..60)) {
        let mut net = network();
        for s in steps {
            match s {
                Step::Rotate(d) => { net.propose(d, Change::RotateAmk); }
                Step::AdminRotate => { net.propose(0, Change::RotateAmk); }
                Step::Drive(d) => {
                    // Only the chain may fail here; anything else is a bug.
                    if let Err(e) = net.drive(d) {
                        prop_assert!(matches!(e, ResilienceError::Chain(ChainError::Unavailable)), "drive: {e}");
                    }
                }
                Step::Reconcile(d) => match net.reconcile(d) {
                    Ok(ReconcileOutcome::Diverged { .. } | ReconcileOutcome::Unrecoverable) => {
                        prop_assert!(false, "honest failures never diverge");
                    }
                    Ok(_) | Err(ResilienceError::Chain(ChainError::Unavailable)) => {}
                    Err(e) => prop_assert!(false, "reconcile: {e}"),
                },
                Step::Fault(d, f) => net.nodes[d].chain.on_next_submit(match f {
                    0 => Fault::DropRequest,
                    1 => Fault::DropAnswer,
                    2 => Fault::Duplicate,
                    3 => Fault::Delay(Duration::from_secs(45)),
                    _ => Fault::Reorder,
                }),
                Step::Partition(d, cut) => net.nodes[d].chain.partition(cut),
                Step::Wait(s) => net.clock.advance(Duration::from_secs(u64::from(s))),
            }
        }
        // Connectivity returns everywhere; the application keeps driving on its timers.
        for d in 0..3 {
            net.nodes[d].chain.partition(false);
            net.nodes[d].album.as_mut().unwrap().connectivity_restored(net.clock.now());
        }
        for _ in 0..20 {
            for d in 0..3 {
                net.reconcile(d).unwrap();
                net.drive(d).unwrap();
            }
            net.clock.advance(Duration::from_secs(600));
        }
        net.sync_all();
        net.assert_converged();
        for d in 0..3 {
            for intent in net.album(d).intents() {
                prop_assert!(
                    matches!(intent.state, IntentState::Confirmed { .. } | IntentState::Surfaced { .. }),
                    "device {d}: {intent:?}"
                );
            }
            prop_assert_eq!(net.album(d).status(), AlbumStatus::InSync);
        }
    }
}
