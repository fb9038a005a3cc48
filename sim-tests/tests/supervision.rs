//! Supervision (issue 15) over the simulator: the scenarios `supervise-100` (a
//! one-for-one group of 100 children on 50 hosts, 10 hosts killed) and
//! `supervise-100-home` (the supervisor's own host among them) run with no
//! violation of `supervision.restarted`, `supervision.no_twin` and
//! `supervision.loop_stopped`; the API lists the supervisor, its children and
//! history, and stopping it stops every child.

use nefele_api::spec::Signal;
use nefele_api::supervision::{ChildState, SupervisorState};
use nefele_core::{ApiCall, ApiReply, NodeId, Pid, TenantId, Time};
use nefele_sim::{SimConfig, Simulation};
use std::time::Duration;

/// The configuration of the shipped scenario `name`.
fn scenario_config(name: &str) -> SimConfig {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(name);
    nefele_sim::scenario::load(&file)
        .expect("a valid scenario")
        .config
}

/// Runs `config` to its end.
fn run(config: SimConfig) -> Simulation {
    let mut sim = Simulation::new(config).expect("a valid configuration");
    sim.run(|_| {});
    sim
}

fn scenario(name: &str) -> Simulation {
    run(scenario_config(name))
}

/// The shipped scenario `name` with seed `seed` and a random fault about every
/// second, run to its end.
fn under_random_faults(name: &str, seed: u64) -> Simulation {
    let mut config = scenario_config(name);
    config.seed = seed;
    config.random_faults = Some(nefele_sim::faults::RandomFaults::every(
        Duration::from_secs(1),
    ));
    run(config)
}

/// Calls `call` at `node` and runs until it is answered (at most 5 s).
fn call(sim: &mut Simulation, node: NodeId, call: ApiCall) -> ApiReply {
    let id = sim.call(node, call).expect("the host is up");
    let until = sim.now() + Duration::from_secs(5);
    loop {
        let at = sim.now() + Duration::from_millis(50);
        sim.run_until(at);
        if let Some((_, _, reply)) = sim.take_replies().into_iter().find(|(r, _, _)| *r == id) {
            return reply;
        }
        assert!(sim.now() < until, "no answer to {id}");
    }
}

/// The agents that run a supervisor now.
fn homes(sim: &Simulation) -> Vec<NodeId> {
    (0..sim.topology().len() as u32)
        .map(NodeId)
        .filter(|&n| {
            sim.agent(n)
                .is_some_and(|a| !a.services().supervision.supervisors(None).is_empty())
        })
        .collect()
}

fn check(sim: &Simulation) {
    let inv = sim.invariants();
    assert_eq!(inv.violations, 0, "{:#?}", inv.by_invariant);
    let f = sim.supervision_figures().expect("a supervision workload");
    assert_eq!(f.children, 100, "{f:#?}");
    // The looping child's three restarts, and at least one lost child's.
    assert!(f.restarts > 3, "{f:#?}");
    assert_eq!(f.give_ups, 1, "{f:#?}");
    assert_eq!(f.restarts_reported, f.restarts, "{f:#?}");
    let p99 = f.restart_latency_p99_ms.expect("restarts were timed");
    assert!(p99 <= f.restart_bound_ms, "{f:#?}");
}

#[test]
fn a_group_of_100_outlives_10_of_its_50_hosts_and_can_be_stopped() {
    let mut sim = scenario("supervise-100.toml");
    check(&sim);
    assert_eq!(homes(&sim), vec![NodeId(7)]);
    let tenant = TenantId(1);
    let ApiReply::Supervisors(list) = call(&mut sim, NodeId(7), ApiCall::Supervisors { tenant })
    else {
        panic!("not a supervisors reply");
    };
    let [sup] = list.as_slice() else {
        panic!("one supervisor expected: {list:#?}");
    };
    assert_eq!(sup.state, SupervisorState::Running);
    let running = sup
        .children
        .iter()
        .filter(|c| c.state == ChildState::Running)
        .count();
    assert_eq!(running, 99, "{sup:#?}");
    assert_eq!(sup.children[99].state, ChildState::GaveUp);
    assert!(sup.history.iter().any(|r| r.gave_up && r.child == 99));
    // Another tenant sees nothing.
    let other = ApiCall::Supervisors {
        tenant: TenantId(9),
    };
    assert_eq!(
        call(&mut sim, NodeId(7), other),
        ApiReply::Supervisors(Vec::new())
    );
    // Stopping it stops every child.
    let id = sup.id;
    let stop = ApiCall::StopSupervisor { tenant, id };
    assert_eq!(
        call(&mut sim, NodeId(7), stop.clone()),
        ApiReply::SupervisorStopped(Ok(()))
    );
    let later = sim.now() + Duration::from_secs(2);
    sim.run_until(later);
    let left: usize = (0..50).map(|n| sim.placement().running(NodeId(n))).sum();
    assert_eq!(left, 0, "children still running after the stop");
    assert!(homes(&sim).is_empty());
    assert!(matches!(
        call(&mut sim, NodeId(7), stop),
        ApiReply::SupervisorStopped(Err(_))
    ));
    assert!(sim.now() > Time::ZERO);
}

#[test]
fn the_supervisor_outlives_its_own_host() {
    let sim = scenario("supervise-100-home.toml");
    check(&sim);
    let homes = homes(&sim);
    let [home] = homes.as_slice() else {
        panic!("one home expected: {homes:?}");
    };
    assert_ne!(*home, NodeId(7), "host 7 crashed");
    let list = sim
        .agent(*home)
        .expect("up")
        .services()
        .supervision
        .supervisors(None);
    assert_eq!(list[0].id.origin, NodeId(7), "the supervisor keeps its id");
    let running = list[0]
        .children
        .iter()
        .filter(|c| c.state == ChildState::Running)
        .count();
    assert_eq!(running, 99, "{:#?}", list[0]);
}

/// One-for-all over 10 children, one crashing in a loop: each of its restarts
/// stops the other nine first and starts all ten again (never two lives of a child
/// at once), and its give-up stops the whole group. Rest-for-one with the looping
/// child last restarts it alone, and its give-up too stops the group.
#[test]
fn tied_strategies_restart_together_and_give_up_together() {
    for (strategy, restarts) in [("one-for-all", 30), ("rest-for-one", 3)] {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../scenarios/supervise-100-home.toml");
        let mut config = nefele_sim::scenario::load(&file)
            .expect("a valid scenario")
            .config;
        let w = config.supervision.as_mut().expect("a supervision workload");
        w.strategy = strategy.to_owned();
        w.children = 10;
        let mut sim = Simulation::new(config).expect("a valid configuration");
        sim.run(|_| {});
        let inv = sim.invariants();
        assert_eq!(inv.violations, 0, "{strategy}: {:#?}", inv.by_invariant);
        let f = sim.supervision_figures().expect("a supervision workload");
        assert_eq!(
            (f.restarts, f.give_ups),
            (restarts, 1),
            "{strategy}: {f:#?}"
        );
        let left: usize = (0..50).map(|n| sim.placement().running(NodeId(n))).sum();
        assert_eq!(left, 0, "{strategy}: the group was given up");
    }
}

/// Regression: a home stalled for longer than `lost_after` (but not long enough for
/// its group to remove it) found every child's host silent at its first tick after
/// the stall and restarted every child, while all still ran (twins). The silence
/// was its own: the hosts now get a fresh `lost_after`.
#[test]
fn a_stalled_home_does_not_restart_children_that_run() {
    use nefele_sim::faults::{Fault, FaultAction, Selector};
    let file =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/supervise-100.toml");
    let mut config = nefele_sim::scenario::load(&file)
        .expect("a valid scenario")
        .config;
    config.agent.services.supervision.lost_after = Duration::from_millis(800);
    config.faults = vec![Fault {
        at: Duration::from_secs(10),
        action: FaultAction::Pause(Selector::Node(7)),
        duration: Some(Duration::from_millis(1000)),
        line: None,
    }];
    let mut sim = Simulation::new(config).expect("a valid configuration");
    sim.run(|_| {});
    let inv = sim.invariants();
    assert_eq!(inv.violations, 0, "{:#?}", inv.by_invariant);
    let f = sim.supervision_figures().expect("a supervision workload");
    // The looping child's three restarts only.
    assert_eq!((f.restarts, f.give_ups), (3, 1), "{f:#?}");
    assert_eq!(homes(&sim), vec![NodeId(7)], "not taken over");
}

/// A home stalled long enough for its group to remove it is taken over by the
/// leader; when it comes back (here into another group, so the two homes never
/// swap records) its children's hosts, watched by both, tell it that a later
/// take-over runs the supervisor, and it steps down: one agent runs it. Before,
/// both ran it to the end. The children on the stalled host itself are restarted
/// elsewhere once their leases surely ended; their host's agent, stalled, kills
/// them at its first input after the stall (the stated exception of no_twin), so
/// the run has no violation (before leases it had twins).
#[test]
fn a_home_taken_over_while_stalled_steps_down() {
    use nefele_sim::faults::{Fault, FaultAction, Selector};
    let file =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/supervise-100.toml");
    let mut config = nefele_sim::scenario::load(&file)
        .expect("a valid scenario")
        .config;
    config.faults = vec![Fault {
        at: Duration::from_secs(10),
        action: FaultAction::Pause(Selector::Node(7)),
        duration: Some(Duration::from_secs(4)),
        line: None,
    }];
    let mut sim = Simulation::new(config).expect("a valid configuration");
    sim.run(|_| {});
    let homes = homes(&sim);
    assert_eq!(homes.len(), 1, "one agent runs the supervisor: {homes:?}");
    assert_ne!(homes[0], NodeId(7), "taken over");
    let inv = sim.invariants();
    assert_eq!(inv.violations, 0, "{:#?}", inv.by_invariant);
}

/// No twins under random crashes, stalls, partitions and clock skews (issue 15):
/// both supervision scenarios with a random fault about every second, over many
/// seeds; every failing seed is printed with its violations (replay it with
/// `nefele-sim run --scenario FILE --seed N` and a `[random_faults]` section with
/// `mean_interval = "1s"`). Stalled hosts' old processes are allowed the stated
/// exception (`supervision_sim::STALL_GRACE` after the stall).
#[test]
fn no_child_runs_twice_under_random_faults() {
    let seeds: u64 = std::env::var("NEFELE_SUP_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let mut failing = Vec::new();
    for name in ["supervise-100.toml", "supervise-100-home.toml"] {
        for seed in 1..=seeds {
            let sim = under_random_faults(name, seed);
            let twins = sim
                .invariants()
                .by_invariant
                .get("supervision.no_twin")
                .map_or(0, |v| v.violations);
            if twins > 0 {
                eprintln!("{name} seed {seed}: {twins} supervision.no_twin violations");
                failing.push((name, seed, twins));
            }
        }
    }
    assert!(
        failing.is_empty(),
        "failing (scenario, seed, twins): {failing:?}"
    );
}

/// Runs the regression scenario `name` (in `tests/regressions/`), for `duration`
/// if given, and asserts it has no violation.
fn regression_passes(name: &str, duration: Option<Duration>) {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/regressions")
        .join(name);
    let mut config = nefele_sim::scenario::load(&file)
        .expect("a valid scenario")
        .config;
    if let Some(d) = duration {
        config.duration = d;
    }
    let sim = run(config);
    let inv = sim.invariants();
    assert_eq!(inv.violations, 0, "{name}: {:#?}", inv.by_invariant);
}

/// Regression, found by the swarm with supervision drawn (seed 5 of
/// `nefele-sim swarm --no-messaging`) and shrunk to 137 hosts and one fault: host 120,
/// a keeper of the supervisor's home 136, is cut off from the rest of its rack for
/// 2.6 s (shorter than a lease). The home dropped it as a keeper and went on; 120,
/// leading a group of one, took the supervisor over from its stale copy just after
/// the heal and restarted children the home had already restarted: slot 0 ran on two
/// hosts. Now a keeper takes over only with more than half of the group it last
/// heard the home in, and a new home counts no end and spawns nothing for a lease
/// after its take-over. The run is lengthened past the heal by 15 s.
#[test]
fn a_short_partition_inside_the_homes_rack_makes_no_twin() {
    regression_passes(
        "supervision-twin-after-short-partition.toml",
        Some(Duration::from_secs(46)),
    );
}

/// Regression (swarm seed 85 with supervision, shrunk to 7 hosts and a 7 s burst of
/// 50% loss): a restart's spawn was aborted (its `Created` lost) and its host never
/// heard the `Abort`, so the process ran on, unknown to the supervisor, beside the
/// retry. Now a host kills a supervisor's unconfirmed spawn after three
/// `confirm_timeout`s, and an aborted child is spawned again only after a lease.
#[test]
fn an_aborted_restart_under_loss_makes_no_twin() {
    regression_passes("supervision-twin-aborted-spawn-under-loss.toml", None);
}

/// Regression (swarm seed 72 with supervision, shrunk to 119 hosts, a burst of 50%
/// loss and a short pause): the same cause as the aborted restart above.
#[test]
fn restarts_during_a_loss_burst_and_a_pause_make_no_twin() {
    regression_passes("supervision-twin-aborted-spawn-pause.toml", None);
}

/// Runs `name` with a random fault about every second for each of `seeds`, and
/// asserts that no slot was late or ran twice.
fn restarted_in_time_under_random_faults(name: &str, seeds: &[u64]) {
    for &seed in seeds {
        let sim = under_random_faults(name, seed);
        let inv = sim.invariants();
        assert_eq!(
            inv.violations, 0,
            "{name} seed {seed}: {:#?}",
            inv.by_invariant
        );
    }
}

/// Regression (supervise-100-home with random faults every second, seeds 1, 3 and
/// 14): the home restarted a child just before it crashed, on a host that crashed
/// with it, and the restarted process was never watched. The new home waited for
/// that host to answer before restarting the child (its host had never confirmed
/// watching it, so nothing fenced it), and the host never came back. Now a host
/// fences a supervisor's spawn from its start, watched or not.
#[test]
fn a_restart_its_home_never_watched_is_restarted_after_both_hosts_die() {
    restarted_in_time_under_random_faults("supervise-100-home.toml", &[1, 3, 14]);
}

/// Regression (supervise-100-home with random faults every second, seeds 15, 21
/// and 22): the home's level-0 group grew past `max_group` and split just before
/// the home crashed; the keeper left leading half of it no longer had more than
/// half of the group it last heard the home in, and never took the supervisor
/// over (every child then ended with its lease). Now a leader's copies' majority
/// base drops the members a split handed to another group.
#[test]
fn a_home_that_dies_after_its_group_split_is_taken_over() {
    restarted_in_time_under_random_faults("supervise-100-home.toml", &[15, 21, 22]);
}

/// Regression (swarm seed 5 with supervision, shrunk to 137 hosts and one fault):
/// hosts 120–129, the home 136's leader and heir among them, are cut off from the
/// rest of its rack for 5.2 s. They hold most of the group and take the
/// supervisor over; the home, left with a minority whose new leader and heir
/// confirmed its authority, went on restarting: a child ran twice. Now a home's
/// authority also needs most of the group it was last confirmed in (its quorum).
#[test]
fn a_home_cut_off_with_a_minority_of_its_group_makes_no_twin() {
    regression_passes("supervision-twin-split-brain.toml", None);
}

/// The current pid of child `child` of the one supervisor that `home` runs.
fn child_pid(sim: &mut Simulation, home: NodeId, child: usize) -> Pid {
    let ApiReply::Supervisors(list) = call(sim, home, ApiCall::Supervisors { tenant: TENANT })
    else {
        panic!("not a supervisors reply");
    };
    list[0].children[child].pid.expect("the child runs")
}

/// `call` at the host of `pid`.
fn call_at_host(sim: &mut Simulation, pid: Pid, c: ApiCall) -> ApiReply {
    call(sim, pid.origin(), c)
}

const TENANT: TenantId = TenantId(1);

/// Names move with a restarted child (issue 15): the names a child held are
/// registered for its next process, whether its host crashed (here host 1, at
/// 10 s) or its process was killed on a host that lives. Before, the names died
/// with the old process and `whereis` answered `NoSuchName`.
#[test]
fn a_restarted_childs_names_move_to_its_new_process() {
    let mut sim = Simulation::new(scenario_config("supervise-100.toml")).expect("valid");
    sim.run_until(Time::from_secs(5));
    let home = NodeId(7);
    let children: Vec<Pid> = (0..99).map(|i| child_pid(&mut sim, home, i)).collect();
    let on_lost_host = children
        .iter()
        .position(|p| p.origin() == NodeId(1))
        .expect("a child on host 1");
    let killed = children
        .iter()
        .position(|p| {
            [1, 4, 12, 18, 23, 29, 33, 38, 41, 46, 7]
                .iter()
                .all(|&h| p.origin() != NodeId(h))
        })
        .expect("a child on a host that lives");
    let names = [
        ("lost-with-host", on_lost_host),
        ("killed-a", killed),
        ("killed-b", killed),
    ];
    for (name, child) in names {
        let pid = children[child];
        let register = ApiCall::Register {
            tenant: TENANT,
            name: name.to_owned(),
            pid,
        };
        assert_eq!(
            call_at_host(&mut sim, pid, register),
            ApiReply::Named(Ok(()))
        );
    }
    // Let the names reach the home before the process goes.
    sim.run_until(Time::from_secs(6));
    let kill = ApiCall::Kill {
        tenant: TENANT,
        pid: children[killed],
        signal: Signal::Kill,
    };
    assert_eq!(
        call_at_host(&mut sim, children[killed], kill),
        ApiReply::Killed(Ok(()))
    );
    sim.run_until(Time::from_secs(20));
    for (name, child) in names {
        let now = child_pid(&mut sim, home, child);
        assert_ne!(now, children[child], "child {child} was restarted");
        let whereis = ApiCall::Whereis {
            tenant: TENANT,
            name: name.to_owned(),
        };
        assert_eq!(
            call(&mut sim, NodeId(0), whereis),
            ApiReply::Whereis(Ok(now)),
            "{name} held by child {child}'s new process"
        );
    }
    // Another tenant still sees nothing.
    let other = ApiCall::Whereis {
        tenant: TenantId(9),
        name: "killed-a".to_owned(),
    };
    assert!(matches!(
        call(&mut sim, NodeId(0), other),
        ApiReply::Whereis(Err(_))
    ));
}
