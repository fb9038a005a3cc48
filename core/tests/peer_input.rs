//! Peer input cannot crash an agent: agents driven by hand, fed messages a faulty or
//! hostile peer could send. Each case crashed (or misled) an agent before messages
//! were validated at the boundary.

use nefele_core::agent::{ApiCall, Input, Output, RequestId};
use nefele_core::federation::{FedBody, FedMsg, View};
use nefele_core::host::{HostResources, ProcSpec, ResourcePolicy};
use nefele_core::placement::api::Demand;
use nefele_core::placement::msg::{LedgerItem, PlacementMsg, ReqKey, Shape, MAX_SHAPES};
use nefele_core::wire::{Envelope, Message, Reject};
use nefele_core::{Agent, AgentConfig, HostEvent, Identity, Incarnation, NodeId, Pid, TenantId};
use nefele_core::{Notice, Time};
use std::time::Duration;

fn agent(node: u32) -> Agent {
    let identity = Identity {
        node: NodeId(node),
        incarnation: Incarnation(1),
    };
    let mut a = Agent::new(AgentConfig::default(), identity, 7, Time::ZERO);
    a.handle(
        Time::ZERO,
        Input::Host(HostEvent::Resources(HostResources {
            cores: 8,
            cpu_millicores: 8000,
            memory_bytes: 16 << 30,
            cpu_speed: 1000,
            ..HostResources::default()
        })),
    );
    drain(&mut a);
    a
}

fn drain(a: &mut Agent) -> Vec<Output> {
    std::iter::from_fn(|| a.poll_output()).collect()
}

fn deliver(a: &mut Agent, now: Time, from: u32, incarnation: u32, body: Message) -> Vec<Output> {
    let envelope = Envelope {
        from: NodeId(from),
        incarnation: Incarnation(incarnation),
        body,
    };
    a.handle(now, Input::Message(envelope));
    drain(a)
}

/// Fires every timer due up to `until`; the outputs, in order.
fn run_until(a: &mut Agent, until: Time) -> Vec<Output> {
    let mut out = Vec::new();
    while let Some(t) = a.next_timeout().filter(|t| *t <= until) {
        a.handle(t, Input::Timeout);
        out.extend(drain(a));
    }
    out
}

fn fed(body: FedBody) -> Message {
    Message::Federation(FedMsg { instance: 0, body })
}

/// The reasons of the rejects among `out`.
fn rejects(out: &[Output]) -> Vec<Reject> {
    out.iter()
        .filter_map(|o| match o {
            Output::Notice(Notice::Rejected { reason, .. }) => Some(*reason),
            _ => None,
        })
        .collect()
}

/// The messages sent to `to`.
fn sent_to(out: &[Output], to: u32) -> Vec<&Message> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { to: t, envelope } if *t == NodeId(to) => Some(&envelope.body),
            _ => None,
        })
        .collect()
}

fn key(requester: u32) -> ReqKey {
    ReqKey {
        requester: NodeId(requester),
        incarnation: Incarnation(1),
        seq: 1,
    }
}

fn offer_req(shapes: usize) -> Message {
    let shape = Shape {
        demand: Demand {
            cpu_millicores: 10,
            memory_bytes: 1 << 20,
            accelerators: 0,
        },
        count: 1,
        one_per_host: false,
        cpu_class: 0,
        limits: Default::default(),
    };
    Message::Placement(PlacementMsg::OfferReq {
        key: key(2),
        tenant: TenantId(1),
        shapes: vec![shape; shapes],
    })
}

/// Regression: `Held::age` added a peer-sent age to the time since the report, and
/// one `Ledger` with a huge age, then a `ps`, panicked a level-0 leader (in release
/// builds too: `Duration + Duration` panics on overflow).
#[test]
fn a_ledger_with_a_huge_age_then_ps_does_not_panic_a_leader() {
    let mut a = agent(1);
    run_until(&mut a, Time::from_secs(2));
    let seat = &a.federations()[0].seats()[0];
    assert_eq!(
        seat.view().leader,
        NodeId(1),
        "a lone agent leads its group"
    );
    let item = LedgerItem {
        pid: Pid::new(NodeId(2), Incarnation(1), 1),
        tenant: TenantId(7),
        command: "/bin/x".to_owned(),
        demand: Demand::default(),
        age: Duration::MAX,
    };
    let ledger = Message::Placement(PlacementMsg::Ledger {
        reset: true,
        present: vec![item],
        ended: Vec::new(),
    });
    let out = deliver(&mut a, Time::from_secs(2), 2, 1, ledger);
    assert_eq!(
        rejects(&out),
        [Reject::Duration {
            what: "ns.ledger.age"
        }]
    );
    // Node 2 is no member of this leader's group: at its next ledger round the leader
    // lists the copy as lost, and `ps` reports the entries' ages.
    let now = Time::from_secs(4);
    run_until(&mut a, now);
    a.handle(
        now,
        Input::Api {
            request: RequestId(1),
            call: Box::new(ApiCall::Ps {
                tenant: TenantId(7),
            }),
        },
    );
    drain(&mut a);
    run_until(&mut a, Time::from_secs(5));
}

/// Regression: a view with epoch `u64::MAX` was taken, and the agent's next change of
/// that group (taking over from its silent leader) overflowed `epoch += 1`.
#[test]
fn a_view_with_the_largest_epoch_does_not_panic_its_member() {
    let mut a = agent(1);
    let view = View {
        level: 0,
        leader: NodeId(0),
        epoch: u64::MAX,
        members: vec![NodeId(0), NodeId(1)],
        ancestors: Vec::new(),
        heirs_above: Vec::new(),
    };
    let out = deliver(&mut a, Time::from_millis(1), 0, 1, fed(FedBody::View(view)));
    assert_eq!(rejects(&out), [Reject::Epoch]);
    run_until(&mut a, Time::from_secs(5));
}

/// Regression: a view with more than 255 ancestors let a spawn escalate past level
/// 255, and `level + 1: u8` overflowed in the requester.
#[test]
fn a_view_with_300_ancestors_does_not_panic_a_spawn() {
    let mut a = agent(1);
    let view = View {
        level: 0,
        leader: NodeId(0),
        epoch: 5,
        members: vec![NodeId(0), NodeId(1)],
        ancestors: (2..302).map(NodeId).collect(),
        heirs_above: Vec::new(),
    };
    let out = deliver(&mut a, Time::from_millis(1), 0, 1, fed(FedBody::View(view)));
    assert!(matches!(
        rejects(&out)[..],
        [Reject::TooMany {
            what: "fed.view.ancestors",
            len: 300,
            ..
        }]
    ));
    let spec = ProcSpec {
        path: "/bin/x".into(),
        resources: ResourcePolicy {
            cpu_millicores: Some(1_000_000),
            ..ResourcePolicy::default()
        },
        ..ProcSpec::default()
    };
    a.handle(
        Time::from_millis(2),
        Input::Api {
            request: RequestId(1),
            call: Box::new(ApiCall::Spawn {
                tenant: TenantId(1),
                spec,
            }),
        },
    );
    drain(&mut a);
    // The leader stays alive, so the agent keeps the view.
    let mut now = Time::from_millis(2);
    while now < Time::from_secs(4) {
        now = now + Duration::from_millis(100);
        run_until(&mut a, now);
        let beat = FedBody::LeaderBeat { level: 0, epoch: 5 };
        deliver(&mut a, now, 0, 1, fed(beat));
    }
}

/// Regression: `MAX_SHAPES` was enforced only when building a request; a peer's
/// `OfferReq` with more shapes was served.
#[test]
fn an_offer_req_with_too_many_shapes_is_not_served() {
    let mut a = agent(1);
    let out = deliver(
        &mut a,
        Time::from_millis(1),
        2,
        1,
        offer_req(MAX_SHAPES + 1),
    );
    assert!(sent_to(&out, 2).is_empty(), "answered: {out:?}");
    assert_eq!(
        rejects(&out),
        [Reject::TooMany {
            what: "place.offer_req.shapes",
            len: MAX_SHAPES + 1,
            max: MAX_SHAPES
        }]
    );
    // The same request within the bound is served.
    let out = deliver(&mut a, Time::from_millis(2), 3, 1, offer_req(MAX_SHAPES));
    assert!(rejects(&out).is_empty());
    assert!(!sent_to(&out, 3).is_empty(), "not answered: {out:?}");
}

/// Regression: only discovery checked the sender's incarnation; placement and
/// federation messages from an older life of a node were served.
#[test]
fn placement_and_federation_messages_from_an_older_life_are_dropped() {
    let mut a = agent(1);
    let ack = fed(FedBody::ProbeAck { level: 0 });
    deliver(&mut a, Time::from_millis(1), 2, 5, ack);
    // Node 2 restarted in incarnation 5; a request of its incarnation 4 is stale.
    let out = deliver(&mut a, Time::from_millis(2), 2, 4, offer_req(1));
    assert!(sent_to(&out, 2).is_empty(), "answered: {out:?}");
    assert_eq!(rejects(&out), [Reject::StaleIncarnation]);
    let probe = fed(FedBody::Probe { level: 0 });
    let out = deliver(&mut a, Time::from_millis(3), 2, 4, probe.clone());
    assert!(sent_to(&out, 2).is_empty(), "answered: {out:?}");
    assert_eq!(rejects(&out), [Reject::StaleIncarnation]);
    // The current life is answered.
    let out = deliver(&mut a, Time::from_millis(4), 2, 5, probe);
    assert!(rejects(&out).is_empty());
    assert!(!sent_to(&out, 2).is_empty(), "not answered: {out:?}");
}
