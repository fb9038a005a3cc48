//! One agent driven by a sequence of inputs chosen by the fuzzer: frames from the
//! wire (raw bytes, or a valid header and raw body, decoded as a driver would),
//! well-formed messages of every service (any [`Message`], built by its `Arbitrary`
//! derive) from arbitrary peers and lives, timeouts (due or early) at non-decreasing
//! times, host events and every API call.
//!
//! Ids come from the `arbitrary` feature of nefele-api, which keeps them small most of
//! the time: the peers, tenants and pids the fuzzer makes up collide with one another
//! and with the agent's own (its node, and the pids it mints), so messages and calls
//! reach the state they name instead of missing it.
//!
//! Checked after every input: the agent does not panic (debug assertions included
//! when built with `cargo fuzz run -a`), every message it sends encodes under
//! `CONTROL_MTU` and carries its own id and incarnation, it never sends to itself,
//! an API call gets at most one reply, with its request id (some come later: a
//! `wait`, a spawn that needs peers), `Neighbours` is answered at once, no reply
//! names an id never asked, and a timer is always pending.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use nefele_core::wire::codec::DEFAULT_MAX_FRAME;
use nefele_core::wire::{decode, Envelope, Message};
use nefele_core::{
    Agent, AgentConfig, ApiCall, HostEvent, Identity, Incarnation, Input, NodeId, Time,
};
use nefele_fuzz::{drain, with_header, Calls};
use std::time::Duration;

#[derive(Arbitrary, Debug)]
struct Run {
    seed: u64,
    node: NodeId,
    incarnation: Incarnation,
    boot_ms: u32,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug)]
enum Step {
    /// Bytes off the wire, fed in if they decode.
    Frame(Vec<u8>),
    /// A valid header, then these bytes as the body: fed in if they decode.
    Body(Vec<u8>),
    /// A well-formed message of any service from a peer (small ids, so peers repeat
    /// and collide, with one another and with the agent itself).
    Message {
        from: NodeId,
        incarnation: Incarnation,
        body: Message,
    },
    /// Time moves on by this many milliseconds.
    Advance(u16),
    /// Time moves to the agent's next deadline, and the timeout is handled.
    FireDue,
    /// A timeout handled now, whether due or not.
    Timeout,
    /// The host reports something.
    Host(HostEvent),
    /// A local client calls the API (the harness numbers the calls).
    Api(ApiCall),
}

fuzz_target!(|run: Run| {
    let identity = Identity {
        node: run.node,
        incarnation: run.incarnation,
    };
    let mut now = Time::from_millis(run.boot_ms.into());
    let mut agent = Agent::new(AgentConfig::default(), identity, run.seed, now);
    let mut calls = Calls::default();
    drain(&mut agent, &mut calls);
    for step in run.steps {
        let mut neighbours = None;
        let input = match step {
            Step::Frame(bytes) => match decode(&bytes, DEFAULT_MAX_FRAME) {
                Ok(envelope) => Input::Message(envelope),
                Err(_) => continue,
            },
            Step::Body(body) => match with_header(&body) {
                Some(envelope) => Input::Message(envelope),
                None => continue,
            },
            Step::Message {
                from,
                incarnation,
                body,
            } => Input::Message(Envelope {
                from,
                incarnation,
                body,
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
            Step::Host(event) => Input::Host(event),
            Step::Api(call) => {
                let request = calls.ask();
                if call == ApiCall::Neighbours {
                    neighbours = Some(request);
                }
                Input::Api {
                    request,
                    call: Box::new(call),
                }
            }
        };
        agent.handle(now, input);
        drain(&mut agent, &mut calls);
        if let Some(request) = neighbours {
            assert!(calls.answered(request), "Neighbours is answered at once");
        }
        assert!(agent.next_timeout().is_some(), "a timer is always pending");
    }
});
