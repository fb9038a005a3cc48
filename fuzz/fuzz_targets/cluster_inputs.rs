//! A small cluster (two to four agents in one broadcast domain) run by the fuzzer:
//! it chooses which message in flight is delivered, dropped or duplicated, when
//! time moves and timers fire, what the clients call, what the hosts report about
//! the processes they were asked to start, when an agent restarts (its host then
//! re-adopts its processes), and which forged messages of any service come in.
//! `Flush` delivers what is in flight in order and fires due timers, so a cluster
//! forms and serves calls between the fuzzer's perturbations: sequences of
//! operations across discovery, federation and placement, not single messages.
//!
//! Every message crosses the codec (encoded, then decoded, as a driver would).
//! Checked throughout: no agent panics (debug assertions on with `-a`), every
//! message fits `CONTROL_MTU` with its sender's identity, no agent sends to itself,
//! each API call gets at most one reply, with its id, and a timer is always pending;
//! across the cluster, a pid is started on one host only.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use nefele_core::host::{ExitStatus, StartFailure, Usage};
use nefele_core::wire::codec::DEFAULT_MAX_FRAME;
use nefele_core::wire::{decode, encode, Envelope, Message};
use nefele_core::{
    Agent, AgentConfig, ApiCall, HostCommand, HostEvent, HostResources, Identity, Incarnation,
    Input, NodeId, Pid, ProcSpec, TenantId, Time,
};
use nefele_fuzz::{drain, Calls, Sent};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// At most this many messages in flight (older ones are lost first).
const MAX_IN_FLIGHT: usize = 512;

#[derive(Arbitrary, Debug)]
struct Run {
    seed: u64,
    /// Two to four agents, ids 0..n (so that fuzzed ids name them).
    agents: u8,
    /// Each host's cores and gigabytes of memory.
    cores: u8,
    memory_gb: u8,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug)]
enum Step {
    /// Deliver up to this many messages in flight, oldest first, firing the timers
    /// that come due on the way.
    Flush(u8),
    /// Deliver the message in flight at this position (modulo their number).
    Deliver(u16),
    /// Lose it.
    Drop(u16),
    /// Deliver it, and keep it in flight (delivered twice).
    Duplicate(u16),
    /// Time moves to the earliest deadline, and every agent due handles its timeout.
    Tick,
    /// Time moves on by this many milliseconds (timers fire at the next `Tick` or
    /// `Flush`).
    Advance(u16),
    /// A client of agent `agent` calls the API.
    Api { agent: u8, call: ApiCall },
    /// The host of agent `agent` reports on the `which`-th process it was asked to start.
    Report {
        agent: u8,
        which: u8,
        outcome: Outcome,
    },
    /// Agent `agent` restarts in its next incarnation; its host re-adopts the processes
    /// it runs.
    Restart(u8),
    /// A forged message of any service reaches `agent`.
    Forge {
        agent: u8,
        from: NodeId,
        incarnation: Incarnation,
        body: Message,
    },
}

#[derive(Arbitrary, Debug)]
enum Outcome {
    Started,
    Failed(StartFailure),
    Exited(ExitStatus),
}

/// A process one host was asked to run.
struct Proc {
    pid: Pid,
    tenant: TenantId,
    spec: ProcSpec,
    running: bool,
    created: Time,
}

/// One server: its agent and what its host runs.
struct Server {
    agent: Agent,
    calls: Calls,
    procs: Vec<Proc>,
}

struct Cluster {
    now: Time,
    seed: u64,
    resources: HostResources,
    servers: Vec<Server>,
    in_flight: VecDeque<(NodeId, Vec<u8>)>,
    /// Every pid ever started, and its host.
    hosts: BTreeMap<Pid, NodeId>,
}

impl Cluster {
    fn new(run: &Run) -> Self {
        let cores = u32::from(run.cores % 16) + 1;
        let resources = HostResources {
            cores,
            cpu_millicores: cores * 1000,
            memory_bytes: (u64::from(run.memory_gb % 64) + 1) << 30,
            cpu_speed: 1000,
            ..HostResources::default()
        };
        let mut cluster = Cluster {
            now: Time::from_secs(1),
            seed: run.seed,
            resources,
            servers: Vec::new(),
            in_flight: VecDeque::new(),
            hosts: BTreeMap::new(),
        };
        for node in 0..u32::from(run.agents % 3) + 2 {
            let identity = Identity {
                node: NodeId(node),
                incarnation: Incarnation(1),
            };
            let agent = cluster.boot(identity);
            cluster.servers.push(Server {
                agent,
                calls: Calls::default(),
                procs: Vec::new(),
            });
            cluster.handle(
                node as usize,
                Input::Host(HostEvent::Resources(cluster.resources.clone())),
            );
        }
        cluster
    }

    fn boot(&self, identity: Identity) -> Agent {
        let seed =
            self.seed ^ u64::from(identity.node.0) ^ (u64::from(identity.incarnation.0) << 32);
        Agent::new(AgentConfig::default(), identity, seed, self.now)
    }

    fn index(&self, agent: u8) -> usize {
        usize::from(agent) % self.servers.len()
    }

    /// Feeds `input` to server `i`, then carries out what it asks.
    fn handle(&mut self, i: usize, input: Input) {
        let now = self.now;
        self.servers[i].agent.handle(now, input);
        self.after(i);
    }

    /// Drains server `i`'s outputs into the network and its host.
    fn after(&mut self, i: usize) {
        let server = &mut self.servers[i];
        let me = server.agent.identity().node;
        assert!(
            server.agent.next_timeout().is_some(),
            "a timer is always pending"
        );
        for sent in drain(&mut server.agent, &mut server.calls) {
            match sent {
                Sent::To(to, envelope) => self.send(to, &envelope),
                Sent::Broadcast(envelope) => {
                    for to in 0..self.servers.len() as u32 {
                        if NodeId(to) != me {
                            self.send(NodeId(to), &envelope);
                        }
                    }
                }
                Sent::Host(HostCommand::Start { pid, tenant, spec }) => {
                    let host = *self.hosts.entry(pid).or_insert(me);
                    assert_eq!(host, me, "{pid} started on two hosts");
                    let server = &mut self.servers[i];
                    if server.procs.iter().all(|p| p.pid != pid) {
                        server.procs.push(Proc {
                            pid,
                            tenant,
                            spec,
                            running: false,
                            created: self.now,
                        });
                    }
                }
                // A kill is reported by the fuzzer's `Exited`, when it chooses.
                Sent::Host(HostCommand::Kill { .. }) => {}
            }
        }
    }

    fn send(&mut self, to: NodeId, envelope: &Envelope) {
        let frame = encode(envelope, DEFAULT_MAX_FRAME).expect("an agent's message encodes");
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            self.in_flight.pop_front();
        }
        self.in_flight.push_back((to, frame));
    }

    fn deliver(&mut self, to: NodeId, frame: &[u8]) {
        let envelope = decode(frame, DEFAULT_MAX_FRAME).expect("an agent's message decodes");
        if let Some(i) = self
            .servers
            .iter()
            .position(|s| s.agent.identity().node == to)
        {
            self.handle(i, Input::Message(envelope));
        }
    }

    fn pick(&self, at: u16) -> Option<usize> {
        (!self.in_flight.is_empty()).then(|| usize::from(at) % self.in_flight.len())
    }

    /// Moves time to the earliest deadline (if later) and fires every due timer.
    fn tick(&mut self) {
        let earliest = self
            .servers
            .iter()
            .filter_map(|s| s.agent.next_timeout())
            .min()
            .expect("a timer is always pending");
        self.now = self.now.max(earliest);
        self.fire_due();
    }

    fn fire_due(&mut self) {
        for i in 0..self.servers.len() {
            if self.servers[i]
                .agent
                .next_timeout()
                .is_some_and(|t| t <= self.now)
            {
                self.handle(i, Input::Timeout);
            }
        }
    }

    fn flush(&mut self, n: u8) {
        for _ in 0..n {
            match self.in_flight.pop_front() {
                Some((to, frame)) => self.deliver(to, &frame),
                None => self.tick(),
            }
            self.fire_due();
        }
    }

    fn report(&mut self, i: usize, which: u8, outcome: Outcome) {
        let server = &mut self.servers[i];
        if server.procs.is_empty() {
            return;
        }
        let at = usize::from(which) % server.procs.len();
        let pid = server.procs[at].pid;
        // As a host would: a process starts or fails to, then exits (a kill, or of
        // itself), once.
        let event = match (server.procs[at].running, outcome) {
            (false, Outcome::Started | Outcome::Exited(_)) => {
                server.procs[at].running = true;
                HostEvent::Started { pid }
            }
            (false, Outcome::Failed(reason)) => {
                server.procs.remove(at);
                HostEvent::StartFailed {
                    pid,
                    reason,
                    detail: String::new(),
                }
            }
            (true, outcome) => {
                let proc = server.procs.remove(at);
                let status = match outcome {
                    Outcome::Exited(status) => status,
                    Outcome::Started | Outcome::Failed(_) => ExitStatus::Signaled(9),
                };
                HostEvent::Exited {
                    pid,
                    status,
                    usage: Usage {
                        wall_time: self.now.saturating_since(proc.created),
                        ..Usage::default()
                    },
                }
            }
        };
        self.handle(i, Input::Host(event));
    }

    fn restart(&mut self, i: usize) {
        let old = self.servers[i].agent.identity();
        let identity = Identity {
            node: old.node,
            incarnation: old.incarnation.next(),
        };
        self.servers[i].agent = self.boot(identity);
        self.servers[i].calls.forget_pending();
        // Processes never started are gone with the old life; running ones are adopted.
        self.servers[i].procs.retain(|p| p.running);
        self.after(i);
        self.handle(i, Input::Host(HostEvent::Resources(self.resources.clone())));
        let adopted: Vec<HostEvent> = self.servers[i]
            .procs
            .iter()
            .map(|p| HostEvent::Adopted {
                pid: p.pid,
                tenant: p.tenant,
                command: p.spec.path.clone(),
                cpu_millicores: p.spec.resources.cpu_millicores.unwrap_or(0),
                memory_bytes: p.spec.resources.memory_bytes.unwrap_or(0),
                age: self.now.saturating_since(p.created),
            })
            .collect();
        for event in adopted {
            self.handle(i, Input::Host(event));
        }
    }
}

fuzz_target!(|run: Run| {
    let mut cluster = Cluster::new(&run);
    for step in run.steps {
        match step {
            Step::Flush(n) => cluster.flush(n),
            Step::Deliver(at) => {
                if let Some(at) = cluster.pick(at) {
                    let (to, frame) = cluster.in_flight.remove(at).expect("in range");
                    cluster.deliver(to, &frame);
                }
            }
            Step::Drop(at) => {
                if let Some(at) = cluster.pick(at) {
                    cluster.in_flight.remove(at);
                }
            }
            Step::Duplicate(at) => {
                if let Some(at) = cluster.pick(at) {
                    let (to, frame) = cluster.in_flight[at].clone();
                    cluster.deliver(to, &frame);
                }
            }
            Step::Tick => cluster.tick(),
            Step::Advance(ms) => cluster.now = cluster.now + Duration::from_millis(ms.into()),
            Step::Api { agent, call } => {
                let i = cluster.index(agent);
                let request = cluster.servers[i].calls.ask();
                let neighbours = call == ApiCall::Neighbours;
                cluster.handle(
                    i,
                    Input::Api {
                        request,
                        call: Box::new(call),
                    },
                );
                if neighbours {
                    assert!(
                        cluster.servers[i].calls.answered(request),
                        "Neighbours is answered at once"
                    );
                }
            }
            Step::Report {
                agent,
                which,
                outcome,
            } => {
                let i = cluster.index(agent);
                cluster.report(i, which, outcome);
            }
            Step::Restart(agent) => {
                let i = cluster.index(agent);
                cluster.restart(i);
            }
            Step::Forge {
                agent,
                from,
                incarnation,
                body,
            } => {
                let i = cluster.index(agent);
                let envelope = Envelope {
                    from,
                    incarnation,
                    body,
                };
                cluster.handle(i, Input::Message(envelope));
            }
        }
    }
});
