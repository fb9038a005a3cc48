//! Determinism: the same seed gives the same trace hash, run
//! after run, through the library or the `nefele-sim` binary, in debug or release
//! builds; different seeds give different hashes.
//!
//! Debug versus release is checked by a pinned snapshot of one small run: the same
//! `.snap` file must pass under `cargo test` and `cargo test --release`.

use nefele_core::Time;
use nefele_sim::faults::{FaultAction, RandomFaults, Selector};
use nefele_sim::network::NetworkConfig;
use nefele_sim::SimConfig;
use nefele_sim_tests::{fault, required_nefele_sim, run, small_config};
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

/// Everything on: loss, duplication, reordering, random faults of every kind, and a
/// scheduled clock skew and partition on top.
fn everything_on(nodes: u32, seed: u64, duration: Duration) -> SimConfig {
    SimConfig {
        network: NetworkConfig {
            loss: 0.02,
            duplicate: 0.02,
            reorder: 0.05,
            ..NetworkConfig::default()
        },
        random_faults: Some(RandomFaults::every(Duration::from_millis(700))),
        faults: vec![
            fault(
                Duration::from_millis(1200),
                FaultAction::Skew {
                    hosts: Selector::Fraction(0.1),
                    offset_ms: 750,
                    drift_ppm: -150,
                },
                None,
            ),
            fault(
                Duration::from_secs(2),
                // Part of rack 0 from the rest of it: discovery stays within a rack.
                FaultAction::Partition {
                    a: Selector::Range([0, 10]),
                    b: Selector::Rack(0),
                    asymmetric: false,
                },
                Some(Duration::from_secs(1)),
            ),
        ],
        ..small_config(nodes, seed, duration)
    }
}

#[test]
fn same_seed_gives_the_same_trace_hash_with_every_fault_on() {
    let config = everything_on(300, 11, Duration::from_secs(5));
    let first = run(config.clone());
    let second = run(config);
    assert!(
        first.stats().faults > 0,
        "faults struck: {:?}",
        first.stats()
    );
    assert!(first.stats().dropped_loss > 0 && first.stats().dropped_partition > 0);
    assert_eq!(first.stats(), second.stats());
    assert_eq!(first.trace_hash(), second.trace_hash());
}

#[test]
fn different_seeds_give_different_trace_hashes() {
    let hashes: BTreeSet<String> = (1..=4)
        .map(|seed| run(everything_on(80, seed, Duration::from_secs(3))).trace_hash())
        .collect();
    assert_eq!(hashes.len(), 4, "{hashes:?}");
}

#[test]
fn a_run_in_steps_gives_the_same_hash_as_a_run_in_one_go() {
    let config = everything_on(80, 5, Duration::from_secs(3));
    let whole = run(config.clone());
    let mut stepped = nefele_sim::Simulation::new(config).expect("valid");
    for ms in (250..=3000).step_by(250) {
        stepped.run_until(Time::from_millis(ms));
    }
    assert_eq!(whole.trace_hash(), stepped.trace_hash());
}

/// The hash of one small fixed run, pinned. It must be the same in debug and release
/// builds and on every machine. If the protocol or the simulator changes on purpose,
/// the hash changes too: review the new value and update the snapshot
/// (`cargo insta review`, or `INSTA_UPDATE=always cargo test`) in the same commit.
#[test]
fn pinned_hash_of_a_small_run() {
    let sim = run(everything_on(20, 42, Duration::from_secs(4)));
    let s = sim.stats();
    insta::assert_snapshot!(format!(
        "trace_hash={}\nevents={} delivered={} dropped={} faults={}",
        sim.trace_hash(),
        s.events,
        s.messages_delivered,
        s.messages_dropped,
        s.faults
    ));
}

#[test]
fn binary_prints_the_same_hash_as_the_library_run_after_run() {
    let Some(binary) = required_nefele_sim() else {
        return;
    };
    let args = [
        "run",
        "--nodes",
        "60",
        "--seed",
        "5",
        "--duration",
        "3s",
        "--loss",
        "0.01",
        "--duplicate",
        "0.01",
        "--reorder",
        "0.05",
        "--random-faults",
        "1s",
        "--quiet",
    ];
    let last_line = || {
        let out = Command::new(&binary)
            .args(args)
            .output()
            .expect("nefele-sim runs");
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8(out.stdout).expect("utf-8");
        stdout.lines().last().expect("a summary").to_owned()
    };
    let first = last_line();
    let second = last_line();

    let hash = first
        .strip_prefix("trace_hash=")
        .expect("the last line is the hash");
    assert!(
        hash.len() == 16
            && hash
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{first:?} is not trace_hash=<16 lowercase hex>"
    );
    assert_eq!(first, second);
    let library = run(SimConfig {
        network: NetworkConfig {
            loss: 0.01,
            duplicate: 0.01,
            reorder: 0.05,
            ..NetworkConfig::default()
        },
        random_faults: Some(RandomFaults::every(Duration::from_secs(1))),
        // The binary's defaults, not the tests' fast discovery.
        seed: 5,
        nodes: 60,
        duration: Duration::from_secs(3),
        ..SimConfig::default()
    });
    assert_eq!(hash, library.trace_hash());
}
