//! Messaging under the simulator (issue 13): the `[messaging]` workload on small
//! clusters, with and without faults, and a property test over random workloads
//! and fault schedules whose every messaging invariant must hold. A failing case
//! prints its seed and writes a scenario file that replays it.

use nefele_sim::faults::{FaultAction, Selector};
use nefele_sim::messaging_sim::{
    FailoverWorkload, GroupWorkload, MessagingWorkload, PubSubWorkload, RrWorkload,
};
use nefele_sim::{SimConfig, Simulation};
use nefele_sim_tests::{fault, proptest_cases, run, scenario_toml, small_config};
use proptest::prelude::*;
use std::time::Duration;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn rr(pairs: u32, rate: f64) -> MessagingWorkload {
    MessagingWorkload {
        start: secs(3),
        warmup: secs(2),
        stop: Some(secs(12)),
        rr: Some(RrWorkload {
            pairs,
            rate_per_s: rate,
            ..RrWorkload::default()
        }),
        ..MessagingWorkload::default()
    }
}

fn with_messaging(nodes: u32, seed: u64, m: MessagingWorkload) -> SimConfig {
    let mut config = small_config(nodes, seed, secs(18));
    config.messaging = Some(m);
    config
}

fn violations(sim: &Simulation) -> String {
    format!("{:#?}", sim.invariants().by_invariant)
}

#[test]
fn request_response_pairs_complete_with_no_violation() {
    let sim = run(with_messaging(40, 3, rr(50, 500.0)));
    let m = sim.messaging_figures().expect("a messaging workload");
    assert_eq!(sim.invariants().violations, 0, "{}", violations(&sim));
    assert_eq!(m.processes_running, 100, "{m:#?}");
    // About 500/s for 7 s, each answered.
    assert!(m.rr_completed > 3_000, "{m:#?}");
    assert_eq!(
        m.sent,
        m.sent_ok + m.failed.values().sum::<u64>() + m.unanswered
    );
    assert_eq!(m.duplicates + m.order_violations, 0);
    assert!(m.latency.contains_key("same_dc") || m.latency.contains_key("same_group"));
}

#[test]
fn the_same_seed_gives_the_same_messaging_run() {
    let a = run(with_messaging(30, 9, rr(20, 300.0)));
    let b = run(with_messaging(30, 9, rr(20, 300.0)));
    assert_eq!(a.trace_hash(), b.trace_hash());
    assert_eq!(a.messaging_figures(), b.messaging_figures());
}

#[test]
fn sends_to_a_crashed_host_are_reported_failed_not_lost() {
    let mut config = with_messaging(40, 5, rr(60, 600.0));
    // A tenth of the hosts crash under load and stay down.
    config.faults = vec![fault(
        secs(8),
        FaultAction::Crash(Selector::Fraction(0.1)),
        None,
    )];
    let sim = run(config);
    let m = sim.messaging_figures().unwrap();
    assert_eq!(sim.invariants().violations, 0, "{}", violations(&sim));
    assert!(
        m.failed.keys().any(|k| k != "Unsupported"),
        "some sends to the crashed processes fail: {m:#?}"
    );
}

#[test]
fn a_data_message_above_the_control_mtu_is_not_a_control_mtu_violation() {
    let mut m = rr(10, 100.0);
    m.payload_bytes = 8_000;
    let sim = run(with_messaging(20, 1, m));
    assert!(
        sim.stats().max_data_frame_bytes > 8_000,
        "{:?}",
        sim.stats()
    );
    assert!(sim.stats().max_message_bytes < 1_400);
    assert_eq!(sim.invariants().violations, 0, "{}", violations(&sim));
}

/// Everything the workload can do, small.
fn everything(reliable: bool, fanout_max: u32) -> MessagingWorkload {
    MessagingWorkload {
        start: secs(3),
        warmup: secs(2),
        stop: Some(secs(12)),
        reliable,
        rr: Some(RrWorkload {
            pairs: 20,
            rate_per_s: 200.0,
            by_name: true,
            lookup_fraction: 0.2,
            contenders: 1,
        }),
        pubsub: Some(PubSubWorkload {
            topics: 3,
            fanout_min: 1,
            fanout_max,
            rate_per_s: 30.0,
            ..PubSubWorkload::default()
        }),
        groups: Some(GroupWorkload {
            groups: 2,
            members: 4,
            clients: 2,
            rate_per_s: 40.0,
            broadcast: true,
            ..GroupWorkload::default()
        }),
        failover: Some(FailoverWorkload {
            groups: 2,
            members: 3,
            clients: 2,
            rate_per_s: 40.0,
            crash_primaries_at: None,
        }),
        ..MessagingWorkload::default()
    }
}

proptest! {
    // A fixed RNG seed (PROPTEST_RNG_SEED chooses another), so that CI runs the same
    // cases every time; longer hunts set PROPTEST_CASES and PROPTEST_RNG_SEED.
    #![proptest_config(ProptestConfig {
        cases: proptest_cases(8),
        rng_seed: proptest::test_runner::RngSeed::Fixed(
            std::env::var("PROPTEST_RNG_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(13),
        ),
        ..ProptestConfig::default()
    })]

    /// Random workloads (pid and name sends, pub/sub, group patterns, failover,
    /// reliable or not) under a random fault (crashes, a partition, loss) on 20 to
    /// 200 hosts: every messaging invariant (and every other) holds.
    #[test]
    fn every_messaging_invariant_holds_under_random_workloads_and_faults(
        nodes in 20u32..200,
        seed in any::<u64>(),
        reliable in any::<bool>(),
        fanout_max in 1u32..40,
        fault_kind in 0u8..4,
    ) {
        let mut config = with_messaging(nodes, seed, everything(reliable, fanout_max));
        config.duration = secs(20);
        let lasting = Some(secs(3));
        config.faults = match fault_kind {
            0 => Vec::new(),
            1 => vec![fault(secs(7), FaultAction::Crash(Selector::Fraction(0.1)), None)],
            2 => vec![fault(
                secs(7),
                FaultAction::Partition { a: Selector::Rack(0), b: Selector::All, asymmetric: false },
                lasting,
            )],
            _ => vec![fault(secs(7), FaultAction::Loss(0.05), lasting)],
        };
        let sim = run(config.clone());
        let inv = sim.invariants();
        if inv.violations > 0 {
            let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
            let path = dir.join(format!("messaging-seed-{seed}.toml"));
            let _ = std::fs::write(&path, scenario_toml(&format!("messaging-seed-{seed}"), &config));
            prop_assert!(
                false,
                "seed {seed} (nodes {nodes}): {:#?}\nreplay: nefele-sim run --scenario {}",
                inv.by_invariant,
                path.display()
            );
        }
    }
}

/// The property test's first find (seed 9117139030379720100, 180 hosts, no fault):
/// two fan-out sends of one sender to different targets (numbered per target)
/// reached a member of both out of order. Fan-out sends are now numbered per sender and admitted per
/// member.
#[test]
fn two_fan_out_sends_of_one_sender_reach_a_shared_member_in_order() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/regressions/messaging-fifo-seed-9117139030379720100.toml");
    let config = nefele_sim::scenario::load(&file)
        .expect("a valid scenario")
        .config;
    let sim = run(config);
    assert_eq!(sim.invariants().violations, 0, "{}", violations(&sim));
}

/// The property test's second find (seed 7862755576870699962, 28 hosts, 10% of the
/// hosts crashed at 7 s): a round-robin, anycast or least-loaded send whose chosen
/// member's host had crashed is retried on the next member and reaches it after
/// later sends of the same sender. That is the retry's nature (as for failover), so
/// the check counts it rather than failing.
#[test]
fn a_one_member_group_send_retried_after_a_crash_may_come_late() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/regressions/messaging-seed-7862755576870699962.toml");
    let config = nefele_sim::scenario::load(&file)
        .expect("a valid scenario")
        .config;
    let sim = run(config);
    assert_eq!(sim.invariants().violations, 0, "{}", violations(&sim));
    let m = sim.messaging_figures().expect("a messaging workload");
    assert!(m.group_retry_reordered > 0, "{m:#?}");
}

/// `msg-rr` has no fault, yet latency jitter swaps two messages of a pair now and
/// then. With `reorder_wait` zero (the receiver skips a gap at once) the earlier one
/// is dropped and `messaging.known_fates` fails; with the default wait every send
/// succeeds.
#[test]
fn jitter_alone_costs_no_message_in_a_run_without_faults() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/msg-rr.toml");
    let config = nefele_sim::scenario::load(&file)
        .expect("a valid scenario")
        .config;
    let mut no_wait = config.clone();
    no_wait.agent.services.messaging.reorder_wait = Duration::ZERO;
    let sim = run(no_wait);
    let known = sim
        .invariants()
        .by_invariant
        .get("messaging.known_fates")
        .map_or(0, |v| v.violations);
    assert!(known > 0, "{}", violations(&sim));

    let sim = run(config);
    assert_eq!(sim.invariants().violations, 0, "{}", violations(&sim));
    let m = sim.messaging_figures().expect("a messaging workload");
    assert!(m.failed.is_empty(), "{m:#?}");
    assert_eq!(m.sent, m.sent_ok, "{m:#?}");
}

/// `msg-reliable-fanout`: reliable publications, multicasts and broadcasts over a
/// network that loses, duplicates and reorders reach every confirmed member once,
/// in order (`messaging.fanout_reliable`, `no_duplicate`, `fifo`), and every one
/// succeeds. With the resend pushed past the fate timeout, the same run ends sends
/// `Unknown`: the resend of the missing parts is what makes them reliable.
#[test]
fn reliable_fan_out_reaches_every_member_once_despite_loss_duplication_and_reordering() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/msg-reliable-fanout.toml");
    let config = nefele_sim::scenario::load(&file)
        .expect("a valid scenario")
        .config;
    let mut no_resend = config.clone();
    no_resend.agent.services.messaging.resend_interval = secs(10);
    let sim = run(no_resend);
    let m = sim.messaging_figures().expect("a messaging workload");
    assert!(m.failed.get("Unknown").is_some_and(|n| *n > 0), "{m:#?}");

    let sim = run(config);
    let inv = sim.invariants();
    assert_eq!(inv.violations, 0, "{}", violations(&sim));
    let m = sim.messaging_figures().expect("a messaging workload");
    assert!(m.failed.is_empty(), "{m:#?}");
    assert_eq!(m.sent, m.sent_ok, "{m:#?}");
    assert_eq!(m.duplicates, 0, "{m:#?}");
}

/// `msg-external`: calls to an external echo service leave through the proxy agents
/// and every echo comes back into its caller's mailbox, one external round trip
/// (two 20 ms one-way latencies) after the call.
#[test]
fn external_calls_go_through_a_proxy_and_their_echo_comes_back() {
    let file =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/msg-external.toml");
    let config = nefele_sim::scenario::load(&file)
        .expect("a valid scenario")
        .config;
    let sim = run(config);
    assert_eq!(sim.invariants().violations, 0, "{}", violations(&sim));
    let m = sim.messaging_figures().expect("a messaging workload");
    assert!(m.sent > 1000 && m.failed.is_empty(), "{m:#?}");
    assert_eq!((m.sent_ok, m.delivered), (m.sent, m.sent), "{m:#?}");
    let external = &m.latency["external"];
    assert_eq!(external.count, m.sent, "{m:#?}");
    assert!(external.p50_ms.is_some_and(|p| p >= 40.0), "{m:#?}");
}

/// `msg-external` over a network that loses and duplicates 2% and reorders 10% of
/// messages: every call still goes out once and in order, and every echo comes
/// back once and in order (seeds 101 and 103 broke `messaging.fifo` before the
/// proxy's streams were numbered, acknowledged and resent).
#[test]
fn external_calls_stay_in_order_and_complete_despite_loss_duplication_and_reordering() {
    let file =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/msg-external.toml");
    let mut config = nefele_sim::scenario::load(&file)
        .expect("a valid scenario")
        .config;
    config.network.loss = 0.02;
    config.network.duplicate = 0.02;
    config.network.reorder = 0.1;
    for seed in [101, 103] {
        config.seed = seed;
        let sim = run(config.clone());
        assert_eq!(sim.invariants().violations, 0, "{}", violations(&sim));
        let m = sim.messaging_figures().expect("a messaging workload");
        assert!(m.sent > 1000 && m.failed.is_empty(), "{m:#?}");
        assert_eq!((m.sent_ok, m.delivered), (m.sent, m.sent), "{m:#?}");
        assert_eq!((m.duplicates, m.order_violations), (0, 0), "{m:#?}");
    }
}

/// `msg-pubsub-full`: a slow subscriber's mailbox fills up under a fast publisher;
/// every publication that misses it answers `Partial` with the number of full
/// mailboxes, and every one answered with success reached every subscriber
/// (`messaging.fanout_told`; with the old answer, success with the full ones left
/// out of `reached`, this run had 31 violations).
#[test]
fn a_publication_that_finds_a_full_mailbox_tells_the_publisher() {
    let file =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/msg-pubsub-full.toml");
    let config = nefele_sim::scenario::load(&file)
        .expect("a valid scenario")
        .config;
    let sim = run(config);
    assert_eq!(sim.invariants().violations, 0, "{}", violations(&sim));
    let m = sim.messaging_figures().expect("a messaging workload");
    assert!(m.failed.get("Partial").is_some_and(|n| *n > 100), "{m:#?}");
    assert!(m.partial_full > 100, "{m:#?}");
}

/// Round-robin over equal members is uniform (the issue asks ±5% over 100,000
/// messages; `scenarios/msg-balance.toml` is that run, this is a tenth of it).
#[test]
fn round_robin_spreads_evenly_over_equal_members() {
    let m = MessagingWorkload {
        groups: Some(GroupWorkload {
            groups: 1,
            members: 8,
            clients: 4,
            rate_per_s: 2_000.0,
            patterns: vec![nefele_api::messaging::Pattern::RoundRobin],
            broadcast: false,
        }),
        ..rr(1, 1.0)
    };
    let sim = run(with_messaging(30, 2, m));
    assert_eq!(sim.invariants().violations, 0, "{}", violations(&sim));
    let m = sim.messaging_figures().unwrap();
    assert!(m.round_robin_received > 10_000, "{m:#?}");
    let deviation = m.round_robin_max_deviation.expect("round-robin sends");
    assert!(deviation <= 0.05, "{deviation} {m:#?}");
}

/// When the primaries' hosts crash, each failover group's next member receives
/// within 2 detection periods (the federation's median time to suspect a crashed
/// agent), and in reliable mode nothing answered with success is lost.
#[test]
fn failover_takes_over_within_two_detection_periods() {
    let m = MessagingWorkload {
        reliable: true,
        failover: Some(FailoverWorkload {
            groups: 4,
            members: 3,
            clients: 2,
            rate_per_s: 200.0,
            crash_primaries_at: Some(secs(8)),
        }),
        ..rr(1, 1.0)
    };
    let sim = run(with_messaging(60, 4, m));
    assert_eq!(sim.invariants().violations, 0, "{}", violations(&sim));
    let m = sim.messaging_figures().unwrap();
    assert_eq!(m.failover_takeover.count, 4, "{m:#?}");
    assert_eq!(m.failover_lost, 0, "{m:#?}");
    let mut detection = sim.stats().detection_ms.clone();
    detection.sort_by(f64::total_cmp);
    let period = detection[detection.len() / 2];
    let worst = m.failover_takeover_max_ms.unwrap();
    assert!(
        worst <= 2.0 * period,
        "takeover {worst} ms, detection {period} ms"
    );
}
