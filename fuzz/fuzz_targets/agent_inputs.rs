//! One agent driven by a sequence of inputs chosen by the fuzzer: frames from the
//! wire (raw bytes, or a valid header and raw body, decoded as a driver would), well-formed messages from arbitrary
//! peers and lives, timeouts (due or early) at non-decreasing times, host events and
//! API calls.
//!
//! Checked after every input: the agent does not panic (debug assertions included
//! when built with `cargo fuzz run -a`), every message it sends encodes under
//! `CONTROL_MTU` and carries its own id and incarnation, it never sends to itself,
//! an API call gets exactly one reply with its request id, and a timer is always
//! pending.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use nefele_core::discovery::DiscoveryMsg;
use nefele_core::host::{ExitStatus, StartFailure, Usage};
use nefele_core::wire::codec::{DEFAULT_MAX_FRAME, MAGIC, VERSION};
use nefele_core::wire::{decode, encoded_len, Envelope, Message, CONTROL_MTU};
use nefele_core::{
    Agent, AgentConfig, ApiCall, ApiReply, HostEvent, HostResources, Identity, Incarnation, Input,
    NodeId, Output, Pid, RequestId, Time,
};
use std::time::Duration;

#[derive(Arbitrary, Debug)]
struct Run {
    seed: u64,
    node: u8,
    incarnation: u8,
    boot_ms: u32,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug)]
enum Step {
    /// Bytes off the wire, fed in if they decode.
    Frame(Vec<u8>),
    /// A valid header, then these bytes as the body: fed in if they decode.
    Body(Vec<u8>),
    /// A well-formed message from a peer (small ids, so peers repeat and collide).
    Message {
        from: u8,
        incarnation: u8,
        body: Body,
    },
    /// Time moves on by this many milliseconds.
    Advance(u16),
    /// Time moves to the agent's next deadline, and the timeout is handled.
    FireDue,
    /// A timeout handled now, whether due or not.
    Timeout,
    /// The host reports something.
    Host(HostStep),
    /// A local client calls the API.
    Api(u64),
}

#[derive(Arbitrary, Debug)]
enum Body {
    Announce,
    Heartbeat,
    Hello(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum HostStep {
    Resources {
        cores: u32,
        memory_bytes: u64,
        cpu_speed: u32,
        committed_cpu: u32,
    },
    Started {
        node: u8,
        incarnation: u8,
        sequence: u64,
    },
    StartFailed {
        node: u8,
        sequence: u64,
        detail: String,
    },
    Exited {
        node: u8,
        sequence: u64,
        code: i32,
        cpu_ms: u32,
    },
}

fn pid(node: u8, incarnation: u8, sequence: u64) -> Pid {
    Pid::new(
        NodeId(node.into()),
        Incarnation(incarnation.into()),
        sequence,
    )
}

impl HostStep {
    fn event(self) -> HostEvent {
        match self {
            HostStep::Resources {
                cores,
                memory_bytes,
                cpu_speed,
                committed_cpu,
            } => HostEvent::Resources(HostResources {
                cores,
                cpu_millicores: cores.saturating_mul(1000),
                memory_bytes,
                accelerators: 0,
                cpu_speed,
                committed_cpu_millicores: committed_cpu,
                committed_memory_bytes: 0,
            }),
            HostStep::Started {
                node,
                incarnation,
                sequence,
            } => HostEvent::Started {
                pid: pid(node, incarnation, sequence),
            },
            HostStep::StartFailed {
                node,
                sequence,
                detail,
            } => HostEvent::StartFailed {
                pid: pid(node, 1, sequence),
                reason: StartFailure::Other,
                detail,
            },
            HostStep::Exited {
                node,
                sequence,
                code,
                cpu_ms,
            } => HostEvent::Exited {
                pid: pid(node, 1, sequence),
                status: ExitStatus::Code(code),
                usage: Usage {
                    cpu_time: Duration::from_millis(cpu_ms.into()),
                    ..Usage::default()
                },
            },
        }
    }
}

/// Drains the agent's outputs and checks each; returns the API replies seen.
fn drain(agent: &mut Agent) -> Vec<RequestId> {
    let me = agent.identity();
    let mut replies = Vec::new();
    while let Some(output) = agent.poll_output() {
        match output {
            Output::Send { to, envelope } => {
                assert_ne!(to, me.node, "an agent never sends to itself");
                check_envelope(me, &envelope);
            }
            Output::Broadcast { envelope } => check_envelope(me, &envelope),
            Output::ApiReply { request, reply } => {
                if let ApiReply::Neighbours(list) = &reply {
                    assert!(list.iter().all(|(id, _)| *id != me.node));
                    assert!(
                        list.windows(2).all(|w| w[0].0 < w[1].0),
                        "neighbours in id order"
                    );
                }
                replies.push(request);
            }
            // Host commands follow spawn and kill requests from peers; notices are for
            // logs. Any is acceptable here: what matters is that nothing panicked.
            Output::Host(_) | Output::Notice(_) => {}
        }
    }
    replies
}

fn check_envelope(me: Identity, envelope: &Envelope) {
    assert_eq!(
        (envelope.from, envelope.incarnation),
        (me.node, me.incarnation)
    );
    let len = encoded_len(envelope);
    assert!(
        len < CONTROL_MTU,
        "a {len}-byte message exceeds the {CONTROL_MTU}-byte MTU"
    );
}

fuzz_target!(|run: Run| {
    let identity = Identity {
        node: NodeId(run.node.into()),
        incarnation: Incarnation(run.incarnation.into()),
    };
    let mut now = Time::from_millis(run.boot_ms.into());
    let mut agent = Agent::new(AgentConfig::default(), identity, run.seed, now);
    drain(&mut agent);
    for step in run.steps {
        let input = match step {
            Step::Frame(bytes) => match decode(&bytes, DEFAULT_MAX_FRAME) {
                Ok(envelope) => Input::Message(envelope),
                Err(_) => continue,
            },
            Step::Body(body) => {
                let mut frame = Vec::from(MAGIC);
                frame.extend_from_slice(&VERSION.to_le_bytes());
                frame.extend_from_slice(&body);
                match decode(&frame, DEFAULT_MAX_FRAME) {
                    Ok(envelope) => Input::Message(envelope),
                    Err(_) => continue,
                }
            }
            Step::Message {
                from,
                incarnation,
                body,
            } => Input::Message(Envelope {
                from: NodeId(from.into()),
                incarnation: Incarnation(incarnation.into()),
                body: Message::Discovery(match body {
                    Body::Announce => DiscoveryMsg::Announce,
                    Body::Heartbeat => DiscoveryMsg::Heartbeat,
                    Body::Hello(peers) => DiscoveryMsg::Hello {
                        peers: peers.into_iter().map(|p| NodeId(p.into())).collect(),
                    },
                }),
            }),
            Step::Advance(ms) => {
                now = now + Duration::from_millis(ms.into());
                continue;
            }
            Step::FireDue => {
                now = now.max(agent.next_timeout().expect("a timer is always pending"));
                Input::Timeout
            }
            Step::Timeout => Input::Timeout,
            Step::Host(host) => Input::Host(host.event()),
            Step::Api(id) => Input::Api {
                request: RequestId(id),
                call: ApiCall::Neighbours,
            },
        };
        let asked = match &input {
            Input::Api { request, .. } => vec![*request],
            _ => Vec::new(),
        };
        agent.handle(now, input);
        assert_eq!(
            drain(&mut agent),
            asked,
            "one reply per API call, with its id"
        );
        assert!(agent.next_timeout().is_some(), "a timer is always pending");
    }
});
