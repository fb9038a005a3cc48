//! Names, groups, pub/sub and broadcast end to end over the simulator (the
//! `names`, `groups`, `fanout` and `topics` modules of the core's messaging
//! service): what a client sees through the API on a small DC.

use nefele_api::messaging::{Dest, Mail, MailBody, NameError, Pattern, SendError, SendReceipt};
use nefele_core::host::ResourcePolicy;
use nefele_core::{ApiCall, ApiReply, NodeId, Pid, ProcSpec, TenantId, Time};
use nefele_sim::{SimConfig, Simulation};
use std::collections::BTreeMap;
use std::time::Duration;

const T: TenantId = TenantId(1);

fn booted(nodes: u32, seed: u64) -> Simulation {
    let config = SimConfig {
        nodes,
        seed,
        duration: Duration::from_secs(60),
        ..SimConfig::default()
    };
    let mut sim = Simulation::new(config).unwrap();
    sim.run_until(Time::from_secs(3));
    sim
}

/// Calls on `node`, runs for `ms`, and returns the reply.
fn ask(sim: &mut Simulation, node: NodeId, call: ApiCall, ms: u64) -> ApiReply {
    let at = sim.now();
    let id = sim.call(node, call).expect("host is up");
    sim.run_until(at + Duration::from_millis(ms));
    sim.take_replies()
        .into_iter()
        .find(|(i, _, _)| *i == id)
        .unwrap_or_else(|| panic!("no reply to call {id} within {ms} ms"))
        .2
}

/// A long-running process of tenant `T` started from `node` (placed there: it has room).
fn spawn(sim: &mut Simulation, node: u32) -> Pid {
    let spec = ProcSpec {
        path: "/bin/worker".into(),
        argv: vec!["worker".into()],
        envp: vec!["NEFELE_SIM_RUN_MS=1000000".into()],
        resources: ResourcePolicy {
            cpu_millicores: Some(100),
            memory_bytes: Some(1 << 20),
            ..ResourcePolicy::default()
        },
        ..ProcSpec::default()
    };
    match ask(sim, NodeId(node), ApiCall::Spawn { tenant: T, spec }, 50) {
        ApiReply::Spawned(Ok(p)) => p[0],
        other => panic!("spawn: {other:?}"),
    }
}

fn send(sim: &mut Simulation, from: Pid, to: Dest, data: &[u8]) -> Result<SendReceipt, SendError> {
    let call = ApiCall::Send {
        tenant: T,
        from,
        to,
        data: data.to_vec(),
        delivery: Default::default(),
        block: false,
    };
    match ask(sim, from.origin(), call, 200) {
        ApiReply::Sent(r) => r,
        other => panic!("send: {other:?}"),
    }
}

fn recv(sim: &mut Simulation, pid: Pid) -> Vec<Mail> {
    let call = ApiCall::Recv {
        tenant: T,
        pid,
        max: 1000,
        wait: None,
    };
    match ask(sim, pid.origin(), call, 1) {
        ApiReply::Received(Ok(m)) => m,
        other => panic!("recv: {other:?}"),
    }
}

fn data(mails: &[Mail]) -> Vec<Vec<u8>> {
    mails
        .iter()
        .filter_map(|m| match &m.body {
            MailBody::Data(d) => Some(d.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn names_are_unique_found_from_anywhere_and_die_with_their_process() {
    let mut sim = booted(40, 3);
    let a = spawn(&mut sim, 3);
    let b = spawn(&mut sim, 21);
    let c = spawn(&mut sim, 35);
    let reg = |pid: Pid| ApiCall::Register {
        tenant: T,
        name: "svc".into(),
        pid,
    };
    assert_eq!(
        ask(&mut sim, a.origin(), reg(a), 100),
        ApiReply::Named(Ok(()))
    );
    assert_eq!(
        ask(&mut sim, b.origin(), reg(b), 100),
        ApiReply::Named(Err(NameError::Taken))
    );
    let whereis = ApiCall::Whereis {
        tenant: T,
        name: "svc".into(),
    };
    assert_eq!(
        ask(&mut sim, c.origin(), whereis.clone(), 100),
        ApiReply::Whereis(Ok(a))
    );
    // Another tenant sees nothing.
    let other = ApiCall::Whereis {
        tenant: TenantId(2),
        name: "svc".into(),
    };
    assert_eq!(
        ask(&mut sim, c.origin(), other, 100),
        ApiReply::Whereis(Err(NameError::NoSuchName))
    );
    // A send to the name lands in the holder's mailbox.
    assert_eq!(
        send(&mut sim, c, Dest::Name("svc".into()), b"hello"),
        Ok(SendReceipt { reached: 1 })
    );
    assert_eq!(data(&recv(&mut sim, a)), vec![b"hello".to_vec()]);
    // The holder ends: the name goes, also from the cache of the agent that looked it up.
    let kill = ApiCall::Kill {
        tenant: T,
        pid: a,
        signal: nefele_core::host::Signal::Kill,
    };
    assert!(matches!(
        ask(&mut sim, a.origin(), kill, 200),
        ApiReply::Killed(Ok(()))
    ));
    assert_eq!(
        ask(&mut sim, c.origin(), whereis.clone(), 100),
        ApiReply::Whereis(Err(NameError::NoSuchName))
    );
    assert_eq!(
        ask(&mut sim, b.origin(), reg(b), 100),
        ApiReply::Named(Ok(()))
    );
    assert_eq!(
        ask(&mut sim, c.origin(), whereis, 100),
        ApiReply::Whereis(Ok(b))
    );
}

/// A broadcast reaches the processes of its sender's own host at once, also those
/// started a moment ago, before a beat carried their tenant up the tree. Before, the
/// level-0 leader pruned the sender's host by its stale summary, and the broadcast
/// missed every process there (found by the C example `patterns.c`).
#[test]
fn a_broadcast_reaches_the_new_processes_of_its_own_host_at_once() {
    let mut sim = booted(40, 4);
    let a = spawn(&mut sim, 9);
    let b = spawn(&mut sim, 9);
    assert_eq!(
        (a.origin(), b.origin()),
        (NodeId(9), NodeId(9)),
        "placed here"
    );
    let reached = send(&mut sim, a, Dest::Broadcast, b"now").map(|r| r.reached);
    assert_eq!(reached, Ok(2), "the sender and its neighbour");
    assert_eq!(data(&recv(&mut sim, b)), vec![b"now".to_vec()]);
}

/// A broadcast reaches a process on another host as soon as its spawn returned,
/// before a beat carried its tenant up the tree. Before, the first process of a
/// tenant on a host was announced only by the beats (a period per level), and a
/// broadcast at once missed it; now it is pinned up the tree as a group's first
/// member is.
#[test]
fn a_broadcast_reaches_a_new_process_on_another_host_at_once() {
    for far in [30, 21, 2] {
        let mut sim = booted(40, 4);
        let a = spawn(&mut sim, 9);
        sim.run_until(sim.now() + Duration::from_secs(3));
        let b = spawn(&mut sim, far);
        assert_eq!(b.origin(), NodeId(far), "placed there");
        let reached = send(&mut sim, a, Dest::Broadcast, b"now").map(|r| r.reached);
        assert_eq!(reached, Ok(2), "the sender and the new process on n{far}");
        assert_eq!(data(&recv(&mut sim, b)), vec![b"now".to_vec()]);
    }
}

#[test]
fn group_sends_by_every_pattern_and_broadcast() {
    let mut sim = booted(40, 4);
    let members: Vec<Pid> = [5, 12, 19, 26, 33]
        .iter()
        .map(|n| spawn(&mut sim, *n))
        .collect();
    let outsider = spawn(&mut sim, 38);
    for m in &members {
        let join = ApiCall::Join {
            tenant: T,
            group: "g".into(),
            pid: *m,
        };
        assert_eq!(
            ask(&mut sim, m.origin(), join, 20),
            ApiReply::Grouped(Ok(()))
        );
    }
    // Let the beats carry the memberships up the tree.
    let at = sim.now();
    sim.run_until(at + Duration::from_secs(3));
    let group = |pattern| Dest::Group {
        group: "g".into(),
        pattern,
    };
    assert_eq!(
        send(&mut sim, outsider, group(Pattern::Multicast), b"m"),
        Ok(SendReceipt { reached: 5 })
    );
    for m in &members {
        assert_eq!(data(&recv(&mut sim, *m)), vec![b"m".to_vec()], "{m}");
    }
    for i in 0..10u8 {
        assert_eq!(
            send(&mut sim, outsider, group(Pattern::RoundRobin), &[i]),
            Ok(SendReceipt { reached: 1 })
        );
    }
    let per_member: Vec<usize> = members.iter().map(|m| recv(&mut sim, *m).len()).collect();
    assert_eq!(per_member, vec![2; 5], "round-robin");
    // Failover: the first to join, then the next when it is gone.
    assert_eq!(
        send(&mut sim, outsider, group(Pattern::Failover), b"f"),
        Ok(SendReceipt { reached: 1 })
    );
    assert_eq!(recv(&mut sim, members[0]).len(), 1);
    let kill = ApiCall::Kill {
        tenant: T,
        pid: members[0],
        signal: nefele_core::host::Signal::Kill,
    };
    assert!(matches!(
        ask(&mut sim, members[0].origin(), kill, 200),
        ApiReply::Killed(Ok(()))
    ));
    assert_eq!(
        send(&mut sim, outsider, group(Pattern::Failover), b"f"),
        Ok(SendReceipt { reached: 1 })
    );
    assert_eq!(
        recv(&mut sim, members[1]).len(),
        1,
        "the next in rank took over"
    );
    // Anycast from a member's own host picks that member.
    let near = spawn(&mut sim, 19);
    assert_eq!(
        send(&mut sim, near, group(Pattern::Anycast), b"a"),
        Ok(SendReceipt { reached: 1 })
    );
    assert_eq!(
        recv(&mut sim, members[2]).len(),
        1,
        "anycast: the same host first"
    );
    assert_eq!(
        send(&mut sim, near, group(Pattern::LeastLoaded), b"l"),
        Ok(SendReceipt { reached: 1 })
    );
    // Broadcast: every process of the tenant (the dead one excepted).
    let all = members.len() - 1 + 2;
    assert_eq!(
        send(&mut sim, outsider, Dest::Broadcast, b"b"),
        Ok(SendReceipt {
            reached: all as u32
        })
    );
    // An empty group says so.
    assert_eq!(
        send(
            &mut sim,
            outsider,
            Dest::Group {
                group: "nobody".into(),
                pattern: Pattern::Multicast
            },
            b"x"
        ),
        Err(SendError::NoMembers)
    );
    assert_eq!(
        send(
            &mut sim,
            outsider,
            Dest::Group {
                group: "nobody".into(),
                pattern: Pattern::RoundRobin
            },
            b"x"
        ),
        Err(SendError::NoMembers)
    );
}

#[test]
fn every_subscriber_gets_each_publication_once_in_order() {
    let mut sim = booted(40, 5);
    let subs: Vec<Pid> = [2, 9, 17, 30].iter().map(|n| spawn(&mut sim, *n)).collect();
    let publisher = spawn(&mut sim, 24);
    for s in &subs {
        let sub = ApiCall::Subscribe {
            tenant: T,
            topic: "news".into(),
            pid: *s,
        };
        assert_eq!(
            ask(&mut sim, s.origin(), sub, 20),
            ApiReply::Grouped(Ok(()))
        );
    }
    // No wait for the beats: the leaders above each subscriber were told at once.
    for i in 0..5u8 {
        assert_eq!(
            send(&mut sim, publisher, Dest::Topic("news".into()), &[i]),
            Ok(SendReceipt { reached: 4 })
        );
    }
    let mut got: BTreeMap<Pid, Vec<Vec<u8>>> = BTreeMap::new();
    for s in &subs {
        got.insert(*s, data(&recv(&mut sim, *s)));
    }
    let want: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i]).collect();
    assert!(got.values().all(|d| *d == want), "{got:?}");
    let unsub = ApiCall::Unsubscribe {
        tenant: T,
        topic: "news".into(),
        pid: subs[0],
    };
    assert_eq!(
        ask(&mut sim, subs[0].origin(), unsub, 20),
        ApiReply::Grouped(Ok(()))
    );
    assert_eq!(
        send(&mut sim, publisher, Dest::Topic("news".into()), b"late"),
        Ok(SendReceipt { reached: 3 })
    );
}

/// The message kinds delivered between agents while `f` runs, from a trace.
fn delivered_kinds(sim: &mut Simulation, f: impl FnOnce(&mut Simulation)) -> BTreeMap<String, u64> {
    let file = tempfile::NamedTempFile::new().unwrap();
    let writer = nefele_sim::trace::TraceWriter::new(
        file.reopen().unwrap(),
        nefele_sim::trace::TraceFormat::Jsonl,
    )
    .unwrap();
    sim.set_trace_writer(writer);
    f(sim);
    sim.finish_trace().unwrap();
    let text = std::fs::read_to_string(file.path()).unwrap();
    let mut kinds = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["type"] == "deliver" {
            *kinds
                .entry(v["kind"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    kinds
}

fn count(kinds: &BTreeMap<String, u64>, prefix: &str) -> u64 {
    kinds
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, n)| n)
        .sum()
}

/// What one publication and a name lookup cost on 1,000 hosts: the publication
/// crosses each tree edge towards a subscriber at most once and visits each
/// subscriber host once; a cold lookup is one round trip (two messages), a warm one
/// none. The figures are printed for the record.
#[test]
fn a_publication_and_a_lookup_cost_what_the_design_says() {
    let mut sim = booted(1000, 6);
    let at = sim.now();
    sim.run_until(at + Duration::from_secs(3));
    let hosts: Vec<u32> = (0..100).map(|i| 7 + i * 9).collect();
    let subs: Vec<Pid> = hosts.iter().map(|n| spawn(&mut sim, *n)).collect();
    assert!(
        subs.iter()
            .zip(&hosts)
            .all(|(p, h)| p.origin() == NodeId(*h)),
        "one subscriber per host"
    );
    for s in &subs {
        let sub = ApiCall::Subscribe {
            tenant: T,
            topic: "wide".into(),
            pid: *s,
        };
        assert_eq!(ask(&mut sim, s.origin(), sub, 5), ApiReply::Grouped(Ok(())));
    }
    let publisher = spawn(&mut sim, 500);
    let at = sim.now();
    sim.run_until(at + Duration::from_secs(3));
    let kinds = delivered_kinds(&mut sim, |sim| {
        assert_eq!(
            send(sim, publisher, Dest::Topic("wide".into()), b"x"),
            Ok(SendReceipt { reached: 100 })
        );
    });
    let (walks, visits) = (
        kinds.get("topics_walk_data").copied().unwrap_or(0),
        kinds.get("topics_visit_data").copied().unwrap_or(0),
    );
    eprintln!(
        "one publication to 100 subscribers on 100 of 1,000 hosts: {} messages carry its data ({walks} down tree edges, {visits} to subscriber hosts), {} accounting messages; by kind: {kinds:?}",
        walks + visits,
        count(&kinds, "topics_expect") + count(&kinds, "topics_answer"),
    );
    // Each subscriber host is visited once: by a message, or by its own level-0
    // leader without one; each answers the publisher's agent once.
    assert!(visits <= 100, "{visits}");
    assert_eq!(count(&kinds, "topics_answer"), 100);
    assert!(
        walks <= 100,
        "no more tree edges than subscriber groups: {walks}"
    );

    let holder = subs[0];
    let reg = ApiCall::Register {
        tenant: T,
        name: "far".into(),
        pid: holder,
    };
    assert_eq!(
        ask(&mut sim, holder.origin(), reg, 100),
        ApiReply::Named(Ok(()))
    );
    let askers: Vec<NodeId> = (0..50).map(|i| NodeId(3 + i * 19)).collect();
    let whereis = ApiCall::Whereis {
        tenant: T,
        name: "far".into(),
    };
    for warm in [false, true] {
        let kinds = delivered_kinds(&mut sim, |sim| {
            for a in &askers {
                assert_eq!(
                    ask(sim, *a, whereis.clone(), 20),
                    ApiReply::Whereis(Ok(holder))
                );
            }
        });
        let messages = count(&kinds, "names_");
        eprintln!(
            "{} lookups of one name from 50 hosts of 1,000: {messages} messages",
            if warm { "warm" } else { "cold" }
        );
        assert_eq!(
            messages,
            if warm { 0 } else { 2 * askers.len() as u64 },
            "{kinds:?}"
        );
    }
}
