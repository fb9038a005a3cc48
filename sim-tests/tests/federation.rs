//! Boot federation over the simulator (ARCHITECTURE.md §3): the hierarchy
//! forms from any cluster size, repairs itself after each kind of fault, keeps
//! its invariants under random fault schedules, and its shape is pinned by a
//! snapshot so that protocol changes show up in review.

use nefele_core::federation::FederationConfig;
use nefele_core::{NodeId, Time};
use nefele_sim::faults::{Fault, FaultAction, RandomFaults, Selector};
use nefele_sim::federation_check::FederationReport;
use nefele_sim::{SimConfig, Simulation};
use proptest::prelude::*;
use std::time::Duration;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn cluster(nodes: u32, seed: u64, duration: Duration) -> SimConfig {
    SimConfig {
        nodes,
        seed,
        duration,
        ..SimConfig::default()
    }
}

fn fault(at: u64, action: FaultAction, duration: Option<Duration>) -> Fault {
    Fault {
        at: secs(at),
        action,
        duration,
        line: None,
    }
}

/// Runs `config` to its end; returns the simulation for inspection.
fn run(config: SimConfig) -> Simulation {
    let mut sim = Simulation::new(config).expect("valid configuration");
    sim.run(|_| {});
    sim
}

fn primary(sim: &Simulation) -> &FederationReport {
    &sim.federation().reports()[0]
}

/// The run ended with one valid hierarchy and no invariant was ever violated after settling.
fn assert_healthy(sim: &Simulation) {
    let r = primary(sim);
    assert!(
        r.holds_at_end,
        "not converged at the end: {:?}",
        r.last_failure
    );
    assert_eq!(r.shape.top_groups, 1);
    let inv = sim.invariants();
    assert_eq!(
        inv.violations, 0,
        "first violation: {:?}",
        inv.first_violation
    );
}

#[test]
fn a_single_agent_is_its_own_top_group() {
    let sim = run(cluster(1, 1, secs(10)));
    assert_healthy(&sim);
    let r = primary(&sim);
    assert_eq!(
        (r.shape.depth, r.shape.groups, r.shape.max_group_size),
        (1, 1, 1)
    );
}

#[test]
fn clusters_smaller_than_a_group_form_one_group() {
    for nodes in [2, 3, 5] {
        let sim = run(cluster(nodes, 3, secs(10)));
        assert_healthy(&sim);
        assert_eq!(primary(&sim).shape.groups, 1, "{nodes} agents");
    }
}

#[test]
fn boot_forms_one_hierarchy_within_bounds() {
    let sim = run(cluster(600, 5, secs(15)));
    assert_healthy(&sim);
    let r = primary(&sim);
    assert!(r.converged_at_s.is_some_and(|t| t < 10.0), "{r:?}");
    assert!(r.shape.max_group_size <= 16);
    assert!(r.shape.depth <= nefele_sim::federation_check::depth_bound(600, 4));
}

/// Every live agent's seats, level by level, name a leader that lists it.
#[test]
fn members_and_leaders_agree_on_every_level() {
    let mut sim = Simulation::new(cluster(120, 9, secs(10))).unwrap();
    sim.run_until(Time::from_secs(10));
    for i in 0..120 {
        let agent = sim.agent(NodeId(i)).unwrap();
        for seat in agent.federations()[0].seats() {
            let v = seat.view();
            let leader = sim.agent(v.leader).unwrap();
            let theirs = leader.federations()[0].seats()[v.level as usize].view();
            assert_eq!(theirs, v, "n{i} at level {}", v.level);
        }
    }
}

#[test]
fn crash_of_ten_percent_is_repaired_within_three_seconds() {
    let mut config = cluster(1000, 11, secs(30));
    config.faults = vec![fault(15, FaultAction::Crash(Selector::Fraction(0.1)), None)];
    let sim = run(config);
    assert_healthy(&sim);
    let r = primary(&sim);
    assert!(r.last_repair_s.is_some_and(|s| s <= 3.0), "{r:?}");
    assert_eq!(sim.stats().false_removals, 0);
}

#[test]
fn losing_a_whole_rack_is_repaired_within_three_seconds() {
    let mut config = cluster(800, 12, secs(30));
    config.faults = vec![fault(15, FaultAction::Crash(Selector::Rack(0)), None)];
    let sim = run(config);
    assert_healthy(&sim);
    assert!(primary(&sim).last_repair_s.is_some_and(|s| s <= 3.0));
}

#[test]
fn killing_a_fifth_at_random_gives_one_hierarchy_within_five_seconds() {
    let mut config = cluster(1000, 13, secs(30));
    config.faults = vec![fault(15, FaultAction::Crash(Selector::Fraction(0.2)), None)];
    let sim = run(config);
    assert_healthy(&sim);
    assert!(primary(&sim).last_repair_s.is_some_and(|s| s <= 5.0));
}

#[test]
fn a_partition_makes_two_hierarchies_that_merge_after_healing() {
    let mut config = cluster(800, 14, secs(45));
    config.faults = vec![fault(
        10,
        FaultAction::Partition {
            a: Selector::Row(0),
            b: Selector::Row(1),
            asymmetric: false,
        },
        Some(secs(15)),
    )];
    let mut sim = Simulation::new(config).unwrap();
    sim.run_until(Time::from_secs(24));
    let roots = (0..800)
        .filter_map(|i| sim.agent(NodeId(i)))
        .filter(|a| a.federations()[0].is_root())
        .count();
    assert!(
        roots >= 2,
        "a partitioned DC cannot be one hierarchy ({roots} roots)"
    );
    sim.run(|_| {});
    assert_healthy(&sim);
}

#[test]
fn agents_that_join_a_running_cluster_are_absorbed() {
    let mut config = cluster(500, 15, secs(30));
    config.start_down = Some(Selector::Range([400, 500]));
    config.faults = vec![fault(
        10,
        FaultAction::Restart(Selector::Range([400, 500])),
        None,
    )];
    let sim = run(config);
    assert_healthy(&sim);
    let summary = (0..500)
        .filter_map(|i| sim.agent(NodeId(i)))
        .find(|a| a.federations()[0].is_root())
        .map(|a| a.federations()[0].subtree_summary())
        .unwrap();
    assert_eq!(summary.agents, 500, "the root's summary counts every agent");
}

#[test]
fn rolling_restarts_keep_converging() {
    let mut config = cluster(400, 16, secs(40));
    config.faults = (0..4)
        .map(|r| {
            fault(
                8 + 5 * r,
                FaultAction::Restart(Selector::Rack(r as u32)),
                Some(secs(2)),
            )
        })
        .collect();
    let sim = run(config);
    assert_healthy(&sim);
}

/// Agents that leave say so: they are out of every group within a round trip, long
/// before any failure detector would have noticed. (One agent after the other, 100 ms
/// apart, as a rolling shutdown does: agents that leave at the very same instant may
/// hand their groups to each other, and then the failure detector cleans up.)
#[test]
fn agents_that_leave_are_removed_at_once() {
    let leaving: Vec<u32> = (0..300).step_by(10).collect();
    let mut config = cluster(300, 21, secs(20));
    config.faults = leaving
        .iter()
        .enumerate()
        .map(|(i, n)| Fault {
            at: Duration::from_millis(10_000 + 100 * i as u64),
            action: FaultAction::Leave(Selector::Node(*n)),
            duration: None,
            line: None,
        })
        .collect();
    let mut sim = Simulation::new(config).unwrap();
    sim.run_until(Time::from_millis(10_000 + 100 * leaving.len() as u64 + 50));
    for i in (0..300).filter(|i| i % 10 != 0) {
        for seat in sim.agent(NodeId(i)).unwrap().federations()[0].seats() {
            let listed = seat.view().members.iter().find(|m| m.0 % 10 == 0);
            assert!(
                listed.is_none(),
                "n{i} still lists {listed:?} after it left"
            );
        }
    }
    sim.run(|_| {});
    assert_healthy(&sim);
    assert_eq!(sim.stats().false_removals, 0);
}

/// A stalled agent is suspected first and not removed if it comes back within the
/// removal timeout: stalls of one period cause no removal at all.
#[test]
fn short_stalls_are_suspected_but_not_removed() {
    let mut config = cluster(400, 17, secs(30));
    config.faults = vec![fault(
        10,
        FaultAction::Pause(Selector::Fraction(0.1)),
        Some(Duration::from_millis(300)),
    )];
    let sim = run(config);
    assert_healthy(&sim);
    assert_eq!(sim.stats().false_removals, 0);
}

/// Loss tolerance (issue 15; at 2,000 agents and 10% loss, 13 live agents were
/// removed and 58 violations followed): under 10% uniform loss and no other fault, no
/// agent that is up and reachable is removed, and every invariant holds throughout.
/// With this seed, before indirect probes and discovery's probes, one live agent was
/// removed and 8 checks failed (a member behind its leader's view, neighbours
/// forgotten).
#[test]
fn ten_percent_loss_removes_no_live_agent() {
    let mut config = cluster(300, 5, secs(40));
    config.network.loss = 0.1;
    let sim = run(config);
    assert_healthy(&sim);
    assert_eq!(sim.stats().false_removals, 0);
}

/// Regression (scenarios/loss-10pct.toml, seed 120: 1-9 agents in no level-0 group,
/// or in a group of one, at 5.5 s; the federation converged only at 7.75 s). At
/// 4.26 s a split's hand-over to the new half's leader was lost: the leader answered
/// its new members' beats with `Leave` and the splitting leader disowned the members
/// that still followed it, so the new half broke up. The shipped scenario, cut to
/// 10 s (the boot is what matters).
#[test]
fn loss_10pct_seed_120_converges_at_boot() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/loss-10pct.toml");
    let mut config = nefele_sim::scenario::load(&path).unwrap().config;
    config.seed = 120;
    config.duration = secs(10);
    let sim = run(config);
    assert_healthy(&sim);
    assert_eq!(sim.stats().false_removals, 0);
}

/// Under 10% loss, crashes are still suspected within three periods (p99), and
/// removed, with no live agent removed on the way. With this seed, before, 17 checks
/// failed after the crash (an agent left in no level-0 group).
#[test]
fn crashes_under_ten_percent_loss_are_detected_within_three_periods() {
    let mut config = cluster(300, 4, secs(30));
    config.network.loss = 0.1;
    config.faults = vec![fault(15, FaultAction::Crash(Selector::Fraction(0.1)), None)];
    let sim = run(config);
    assert_healthy(&sim);
    assert_eq!(sim.stats().false_removals, 0);
    let mut detections = sim.stats().detection_ms.clone();
    assert!(
        detections.len() >= 25,
        "{} crashes detected",
        detections.len()
    );
    detections.sort_by(f64::total_cmp);
    let p99 = detections[(detections.len() * 99).div_ceil(100) - 1];
    let bound = FederationConfig::default().period.as_secs_f64() * 3e3;
    assert!(p99 <= bound, "p99 detection {p99} ms > {bound} ms");
}

#[test]
fn crashes_are_detected_within_three_periods() {
    let mut config = cluster(1000, 18, secs(25));
    config.faults = vec![fault(
        15,
        FaultAction::Crash(Selector::Fraction(0.05)),
        None,
    )];
    let sim = run(config);
    let mut detections = sim.stats().detection_ms.clone();
    assert!(
        detections.len() >= 45,
        "{} crashes detected",
        detections.len()
    );
    detections.sort_by(f64::total_cmp);
    let p99 = detections[(detections.len() * 99).div_ceil(100) - 1];
    let bound = FederationConfig::default().period.as_secs_f64() * 3e3;
    assert!(p99 <= bound, "p99 detection {p99} ms > {bound} ms");
}

#[test]
fn two_instances_federate_independently_with_their_own_sizes() {
    let mut config = cluster(400, 19, secs(15));
    config.agent.federations = vec![
        FederationConfig {
            instance: 0,
            name: "small".into(),
            min_group: 4,
            max_group: 8,
            ..FederationConfig::default()
        },
        FederationConfig {
            instance: 1,
            name: "large".into(),
            min_group: 16,
            max_group: 32,
            ..FederationConfig::default()
        },
    ];
    let sim = run(config);
    let reports = sim.federation().reports();
    assert!(reports.iter().all(|r| r.holds_at_end), "{reports:?}");
    assert!(reports[0].shape.max_group_size <= 8);
    assert!(reports[1].shape.max_group_size > 8 && reports[1].shape.max_group_size <= 32);
    assert!(reports[0].shape.groups > reports[1].shape.groups);
}

/// The group structure after a small seeded boot. A change here is a protocol change:
/// review it, then accept it with `cargo insta review`.
#[test]
fn snapshot_of_the_hierarchy_after_a_seeded_boot() {
    let mut sim = Simulation::new(cluster(50, 42, secs(8))).unwrap();
    sim.run_until(Time::from_secs(8));
    let mut lines = Vec::new();
    for i in 0..50 {
        let agent = sim.agent(NodeId(i)).unwrap();
        for seat in agent.federations()[0].seats() {
            let v = seat.view();
            if v.leader == NodeId(i) {
                let members: Vec<String> = v.members.iter().map(ToString::to_string).collect();
                lines.push(format!("L{} {}: {}", v.level, v.leader, members.join(" ")));
            }
        }
    }
    lines.sort();
    insta::assert_snapshot!(lines.join("\n"));
}

/// Regression (found by the property test below): a restarted agent whose boot
/// announcement was lost is only heard again at the next discovery heartbeat, so
/// discovery cannot be complete 5 s after the last fault; the checker now waits two
/// heartbeat periods before it requires discovery to be complete.
#[test]
fn random_faults_on_four_agents_seed_14373287726603424044() {
    let mut config = cluster(4, 14_373_287_726_603_424_044, secs(40));
    config.random_faults = Some(RandomFaults::every(Duration::from_millis(3703)));
    let sim = run(config);
    assert_healthy(&sim);
}

/// The scenario file that replays a random run.
fn scenario_text(nodes: u32, seed: u64, mean_interval_ms: u64) -> String {
    format!(
        "# Replays a failing property-test case of sim-tests/tests/federation.rs\n\
         seed = {seed}\nnodes = {nodes}\nduration = \"40s\"\n\
         [random_faults]\nmean_interval = \"{mean_interval_ms}ms\"\n"
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: nefele_sim_tests::proptest_cases(16), ..ProptestConfig::default() })]

    /// Random crashes, stalls, partitions and clock skew for 2/3 of the run, then a
    /// fault-free phase: the hierarchy must be whole again and no invariant may fail
    /// after settling.
    #[test]
    fn random_fault_schedules_keep_the_invariants(
        nodes in 1u32..200,
        seed in any::<u64>(),
        mean_interval_ms in 500u64..5_000,
    ) {
        let mut config = cluster(nodes, seed, secs(40));
        config.random_faults = Some(RandomFaults::every(Duration::from_millis(mean_interval_ms)));
        let sim = run(config);
        let r = primary(&sim);
        let inv = sim.invariants();
        let replay = scenario_text(nodes, seed, mean_interval_ms);
        prop_assert!(
            r.holds_at_end && inv.violations == 0,
            "seed {seed}: {:?} / {:?}\nreplay with `nefele-sim run --scenario FILE` on this scenario:\n{replay}",
            r.last_failure,
            inv.first_violation,
        );
    }
}
