//! The agent: one per server, a router between its services.
//!
//! [`Agent`] is the single entry point of the core. It owns no socket, thread
//! or clock; the driver (the simulator, or `nefeled`) feeds it inputs with the
//! current time and carries its outputs out.
//!
//! What it routes:
//! - discovery's neighbour list into every federation instance;
//! - every other wire message to its service (the registry in
//!   [`crate::service::registry`] lists them), with a [`Context`] whose
//!   [`TreeView`] shows the federation instance that service rides;
//! - host events and what services did ([`ServiceEvent`]) to every service that
//!   wants them, in registry order (an event nobody wants is dropped); federation removals and changes of this agent's level-0
//!   group become events too;
//! - each service's summary part into the beats of the instance it rides;
//! - API calls to the service that owns them, a client's or another service's
//!   ([`ServiceOutput::Call`](crate::service::ServiceOutput::Call), whose answer
//!   comes back as an event).
//!
//! Adding a service touches nothing here: see [`crate::service`].
//!
//! Invariants kept here: outputs leave in the order the services produced them;
//! every message sent carries this agent's id and incarnation; a message from
//! another agent never panics the agent (it was decoded already, it is validated
//! before any service sees it, see [`crate::wire::validate`], and services ignore
//! what does not fit their state).

use crate::discovery::{Discovery, DiscoveryConfig, DiscoveryConfigError, DiscoveryOutput};
use crate::federation::{
    FedMsg, FedNotice, FedOutput, Federation, FederationConfig, FederationConfigError,
};
use crate::host::{HostCommand, HostEvent, HostResources};
use crate::ids::{Incarnation, NodeId};
use crate::incarnations::{Incarnations, Life};
use crate::service::registry::{earliest, Services, Touched};
use crate::service::{
    Context, Payload, ServiceConfigError, ServiceEvent, ServiceNotice, ServicesConfig, TreeView,
};
use crate::time::Time;
use crate::wire::{Envelope, Message, Reject};
pub use nefele_api::calls::{ApiCall, ApiReply, RequestId};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Everything an agent is configured with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentConfig {
    /// Neighbour discovery.
    pub discovery: DiscoveryConfig,
    /// Federation instances, each with its own group sizes and timing (e.g. one for
    /// placement with groups of 4..16, another with groups of 16..32). Instance
    /// numbers must be distinct.
    pub federations: Vec<FederationConfig>,
    /// The services that ride the tree, one section each (`placement`, …); each
    /// names the federation instance it rides.
    #[serde(flatten)]
    pub services: ServicesConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            discovery: DiscoveryConfig::default(),
            federations: vec![FederationConfig::default()],
            services: ServicesConfig::default(),
        }
    }
}

/// Why an agent configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentConfigError {
    /// A federation instance is misconfigured.
    #[error(transparent)]
    Federation(#[from] FederationConfigError),
    /// Two federation instances share a number.
    #[error("two federation instances are numbered {0}")]
    DuplicateInstance(u8),
    /// A service is misconfigured.
    #[error(transparent)]
    Service(#[from] ServiceConfigError),
    /// Discovery is misconfigured.
    #[error(transparent)]
    Discovery(#[from] DiscoveryConfigError),
}

impl AgentConfig {
    /// Checks every parameter.
    pub fn validate(&self) -> Result<(), AgentConfigError> {
        self.discovery.validate()?;
        let mut seen = std::collections::BTreeSet::new();
        for f in &self.federations {
            f.validate()?;
            if !seen.insert(f.instance) {
                return Err(AgentConfigError::DuplicateInstance(f.instance));
            }
        }
        self.services.validate()?;
        Ok(())
    }
}

/// Who an agent is: its id in the cluster and its current life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Unique in the cluster.
    pub node: NodeId,
    /// Bumped by the host on every start, before the agent mints anything.
    pub incarnation: Incarnation,
}

impl Identity {
    /// `body` as sent by this agent.
    #[must_use]
    pub fn envelope(self, body: Message) -> Envelope {
        Envelope {
            from: self.node,
            incarnation: self.incarnation,
            body,
        }
    }
}

/// Something that happened to the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A message from another agent (already decoded by the transport driver).
    Message(Envelope),
    /// The time reported by [`Agent::next_timeout`] has come.
    Timeout,
    /// The host reported something.
    Host(HostEvent),
    /// A local client called the API.
    Api {
        /// The driver's id for this call; the reply carries it back. Its top bit
        /// must be clear (ids with it set are the services' own calls, see
        /// [`crate::service::internal_request`]): a call with it set is ignored.
        request: RequestId,
        /// The call (boxed: the largest calls would make every input, most of them
        /// peer messages, a few hundred bytes, copied on every call into the agent).
        call: Box<ApiCall>,
    },
    /// The external proxy's driver read from, or lost, a connection (see
    /// `messaging::external`).
    External(crate::messaging::external::ExternalEvent),
    /// The client of call `request` left before its answer: a `wait` is forgotten
    /// and never answered (its state would otherwise live until the process
    /// exits), and so is a receive waiting for mail (its mailbox would answer
    /// `Busy` until the wait's deadline); other calls end by themselves within
    /// their timeouts, and their answer may still come.
    Cancel {
        /// The call.
        request: RequestId,
    },
}

/// Something the agent asks the driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `envelope` to the agent `to`.
    Send {
        /// The destination agent.
        to: NodeId,
        /// The message.
        envelope: Envelope,
    },
    /// Send `envelope` to every agent of this agent's broadcast domain.
    Broadcast {
        /// The message.
        envelope: Envelope,
    },
    /// Answer the local client's call `request`.
    ApiReply {
        /// The call being answered.
        request: RequestId,
        /// The answer.
        reply: ApiReply,
    },
    /// Have the host start or kill a process (boxed: a start carries its whole
    /// `ProcSpec`, which would make every output, most of them sends, as large).
    Host(Box<HostCommand>),
    /// The external proxy's driver: open, write or close a connection to a host
    /// outside the cluster (see `messaging::external`; only an agent listed in
    /// `messaging.proxies` asks this).
    External(crate::messaging::external::ExternalCommand),
    /// Something worth logging happened (the simulator also counts these).
    Notice(Notice),
}

/// Something worth logging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A federation instance noticed a suspicion or a removal.
    Federation {
        /// The instance.
        instance: u8,
        /// What it noticed.
        notice: FedNotice,
    },
    /// A service noticed something.
    Service(ServiceNotice),
    /// A message from `from` failed validation and was dropped (see [`Reject`]).
    Rejected {
        /// The sender the envelope names.
        from: NodeId,
        /// Why.
        reason: Reject,
    },
}

/// One Nefele agent.
///
/// Call order (the driver's loop):
/// 1. [`Agent::new`] at boot, with the boot time;
/// 2. [`Agent::handle`] for every input, with the current time;
/// 3. after each `handle`, drain [`Agent::poll_output`] until `None`;
/// 4. when the time given by [`Agent::next_timeout`] comes, `handle(now, Input::Timeout)`.
///
/// Time must not go backwards between calls.
#[derive(Debug)]
pub struct Agent {
    identity: Identity,
    last_now: Time,
    resources: HostResources,
    discovery: Discovery,
    neighbours_seen: u64,
    federations: Vec<Federation>,
    /// Per federation instance: this agent's level-0 group as last seen (leader and
    /// epoch), to tell the services when it changes.
    groups_seen: Vec<Option<(NodeId, u64, usize)>>,
    services: Box<Services>,
    /// The services called in this call (all of them when a federation's seats
    /// changed): only those may have outputs to drain, a new deadline or new
    /// summary parts to hand to the federations. Most calls are discovery or
    /// federation messages that call no service, and most others call one; the
    /// rest are skipped (each service's queues, timers and summary are places of
    /// their own, cold in a simulation of 10,000 agents). Cleared at the end of
    /// every call.
    touched: Touched,
    /// Some federation instance was called since their deadline was cached.
    federations_touched: bool,
    /// The earliest deadline of each part (discovery, the federation instances, the
    /// services), as of the last call that touched it.
    deadlines: Deadlines,
    /// Events waiting to be routed to the services that want them.
    events: VecDeque<ServiceEvent>,
    /// Calls services made on other services, waiting to be routed to their owner.
    calls: VecDeque<(RequestId, Box<ApiCall>)>,
    outputs: VecDeque<Output>,
    /// The newest life of each peer heard from (messages of older lives are dropped).
    incarnations: Incarnations,
    /// The earliest deadline of all services, refreshed at the end of every call.
    next_deadline: Option<Time>,
}

/// The earliest deadline of each part of an agent, cached (see [`Agent::refresh_deadline`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Deadlines {
    discovery: Option<Time>,
    federations: Option<Time>,
    services: Option<Time>,
}

/// The context of a service riding `instance`: a read-only view of that instance
/// (an empty one if this agent does not run it).
fn context<'a>(
    identity: Identity,
    federations: &'a [Federation],
    lives: &'a Incarnations,
    instance: u8,
) -> Context<'a> {
    let fed = federations.iter().find(|f| f.config().instance == instance);
    Context {
        me: identity,
        tree: TreeView::new(identity.node, fed),
        lives: Some(lives),
    }
}

impl Agent {
    /// A freshly booted agent. Its RNG, and each service's, derive from `seed` alone.
    /// `config` must have passed [`AgentConfig::validate`].
    #[must_use]
    pub fn new(config: AgentConfig, identity: Identity, seed: u64, now: Time) -> Self {
        let mut root = ChaCha8Rng::seed_from_u64(seed);
        let discovery_rng = ChaCha8Rng::seed_from_u64(root.next_u64());
        let federations: Vec<Federation> = config
            .federations
            .into_iter()
            .map(|f| {
                let unknown = Payload::unknown(&config.services, f.instance);
                let rng = ChaCha8Rng::seed_from_u64(root.next_u64());
                Federation::new(identity.node, f, rng, unknown)
            })
            .collect();
        let mut agent = Agent {
            identity,
            last_now: now,
            resources: HostResources::default(),
            discovery: Discovery::new(identity.node, config.discovery, discovery_rng),
            neighbours_seen: 0,
            groups_seen: vec![None; federations.len()],
            federations,
            services: Box::new(Services::new(identity, config.services, seed)),
            touched: Touched::ALL,
            federations_touched: true,
            deadlines: Deadlines::default(),
            events: VecDeque::new(),
            calls: VecDeque::new(),
            outputs: VecDeque::new(),
            incarnations: Incarnations::default(),
            next_deadline: None,
        };
        agent.discovery.boot(now);
        for f in &mut agent.federations {
            f.boot(now);
        }
        agent.route_discovery();
        agent.route_federations();
        agent.route_services(now);
        agent.end_of_call();
        agent
    }

    /// Leaves the cluster cleanly (before a shutdown): hands over what this agent
    /// leads and tells its groups it is gone.
    pub fn leave(&mut self, now: Time) {
        for f in &mut self.federations {
            f.leave(now);
        }
        self.route_federations();
        self.route_services(now);
        self.end_of_call();
    }

    /// [`Agent::handle`], with every output appended to `outputs` (those still
    /// queued here first) instead of being queued for [`Agent::poll_output`].
    ///
    /// A driver of many agents that lends the same buffer to every call reuses one
    /// warm buffer, where each agent's own queue would grow a fresh one per call
    /// (it gives its buffer back when drained: see `outbox`).
    pub fn handle_into(&mut self, now: Time, input: Input, outputs: &mut VecDeque<Output>) {
        outputs.extend(std::iter::from_fn(|| self.poll_output()));
        std::mem::swap(&mut self.outputs, outputs);
        self.react(now, input);
        std::mem::swap(&mut self.outputs, outputs);
    }

    /// Reacts to `input` at time `now`.
    pub fn handle(&mut self, now: Time, input: Input) {
        self.react(now, input);
    }

    /// The body of [`Agent::handle`] and [`Agent::handle_into`], inlined in both: a
    /// call from one to the other copied the whole `Input` (a few hundred bytes) once
    /// more on every input.
    #[inline(always)]
    fn react(&mut self, now: Time, input: Input) {
        debug_assert!(now >= self.last_now, "time went backwards");
        self.last_now = self.last_now.max(now);
        match input {
            Input::Message(envelope) => self.handle_message(now, envelope),
            Input::Timeout => self.handle_timeout(now),
            Input::Host(event) => {
                if let HostEvent::Resources(resources) = &event {
                    self.resources = resources.clone();
                }
                self.events.push_back(ServiceEvent::Host(event));
            }
            // A driver's request id never has the internal bit (the seam's calls
            // between services use it): such a call is ignored, not answered.
            Input::Api { request, call } => {
                if !crate::service::is_internal(request) {
                    self.handle_api(now, request, call);
                }
            }
            Input::Cancel { request } => {
                self.touched.placement = true;
                self.touched.messaging = true;
                self.services.placement.cancel(request);
                self.services.messaging.cancel(request);
            }
            Input::External(event) => {
                self.touched.messaging = true;
                self.services.messaging.handle_external(now, event);
            }
        }
        self.route_services(now);
        self.end_of_call();
    }

    /// Fires the timers due of each part, and only of the parts with one due (a
    /// timeout is most often a heartbeat of discovery alone).
    fn handle_timeout(&mut self, now: Time) {
        let due = |deadline: Option<Time>| deadline.is_some_and(|t| t <= now);
        if due(self.deadlines.discovery) {
            self.discovery.handle_timeout(now);
            self.route_discovery();
        }
        if due(self.deadlines.federations) {
            for f in &mut self.federations {
                if f.next_timeout().is_some_and(|t| t <= now) {
                    f.handle_timeout(now);
                }
            }
            self.route_federations();
        }
        // What the federation just did (removals) reaches the services before their timers.
        self.route_services(now);
        if !due(self.deadlines.services) {
            return;
        }
        let (identity, federations, lives) = (self.identity, &self.federations, &self.incarnations);
        self.services.for_each(&mut self.touched, |s| {
            let due = s.next_timeout().is_some_and(|t| t <= now);
            if due {
                s.handle_timeout(now, &context(identity, federations, lives, s.instance()));
            }
            due
        });
    }

    /// `node` was heard in a newer life: the federations and the services hear of
    /// it at once.
    fn peer_restarted(&mut self, now: Time, node: NodeId) {
        for f in &mut self.federations {
            f.peer_restarted(node);
        }
        self.events.push_back(ServiceEvent::PeerRestarted { node });
        self.route_services(now);
    }

    fn handle_message(&mut self, now: Time, envelope: Envelope) {
        // A message naming this agent as its sender is a broadcast looped back, or
        // comes from another agent configured with the same id: answering it would
        // be sending to itself. Dropped quietly, as discovery always did.
        if envelope.from == self.identity.node {
            return;
        }
        match self.incarnations.admit(&envelope) {
            Err(reason) => {
                let from = envelope.from;
                let notice = Notice::Rejected { from, reason };
                return self.outputs.push_back(Output::Notice(notice));
            }
            // The services hear of a newer life before the message it came with
            // changes the tree: a keeper judges the take-over of a restarted home
            // in the group the home's earlier life was in. (Before, the new life's
            // `Leave` dissolved the group of a leading home first, and its heir,
            // in no group, took nothing over; the group split evenly, and no side
            // held most of the home's base: swarm seed 93152 at 200 hosts.)
            Ok(Life::Newer) => self.peer_restarted(now, envelope.from),
            Ok(Life::Known) => {}
        }
        let Envelope {
            from,
            incarnation,
            body,
        } = envelope;
        match body {
            Message::Discovery(msg) => {
                // Discovery's messages skip `admit` (see `Incarnations::admit`); a
                // life discovery had not heard is checked here, so the services
                // hear of a restart that only discovery's messages carried (swarm
                // seed 300127: a keeper that heard its restarted home only by its
                // heartbeats, across an asymmetric partition, waited for members'
                // word that could not reach them instead of taking over at once).
                if self.discovery.handle_message(now, from, incarnation, &msg)
                    && self.incarnations.note(from, incarnation) == Ok(Life::Newer)
                {
                    self.peer_restarted(now, from);
                }
                self.route_discovery();
            }
            Message::Federation(FedMsg { instance, body }) => {
                // A message for an instance this agent does not run is ignored.
                if let Some(f) = self
                    .federations
                    .iter_mut()
                    .find(|f| f.config().instance == instance)
                {
                    f.handle_message(now, from, body);
                    self.route_federations();
                }
            }
            service_msg => {
                let (identity, federations) = (self.identity, &self.federations);
                let lives = &self.incarnations;
                let touched = &mut self.touched;
                self.services
                    .deliver(now, from, service_msg, touched, |instance| {
                        context(identity, federations, lives, instance)
                    });
            }
        }
    }

    fn handle_api(&mut self, now: Time, request: RequestId, call: Box<ApiCall>) {
        if *call == ApiCall::Neighbours {
            let reply = ApiReply::Neighbours(
                self.discovery
                    .neighbours()
                    .map(|(id, n)| (id, n.incarnation))
                    .collect(),
            );
            self.outputs.push_back(Output::ApiReply { request, reply });
            return;
        }
        let (identity, federations) = (self.identity, &self.federations);
        let lives = &self.incarnations;
        let mut call = Some(call);
        self.services.for_each(&mut self.touched, |s| {
            let Some(c) = call.take_if(|c| s.owns(c)) else {
                return false;
            };
            s.handle_api(
                now,
                request,
                *c,
                &context(identity, federations, lives, s.instance()),
            );
            true
        });
        // Every call has an owner (`every_api_call_has_an_owner` checks it).
        debug_assert!(call.is_none(), "no service owns {call:?}");
    }

    /// Drains every service's outputs, routes the calls they make on each other to
    /// their owners and the events they raise (and those queued before) to the
    /// services that want them, until nothing is left; then hands the
    /// services' summary parts to the federation instances they ride.
    fn route_services(&mut self, now: Time) {
        let identity = self.identity;
        loop {
            if self.touched.any() {
                let (outputs, events, calls) =
                    (&mut self.outputs, &mut self.events, &mut self.calls);
                let touched = self.touched;
                self.services
                    .drain_into(touched, identity, outputs, events, calls);
            }
            if let Some((request, call)) = self.calls.pop_front() {
                self.handle_api(now, request, call);
                continue;
            }
            let Some(event) = crate::outbox::take_next(&mut self.events) else {
                break;
            };
            if !self.services.want(&event) {
                continue;
            }
            let (federations, lives) = (&self.federations, &self.incarnations);
            self.services.for_each(&mut self.touched, |s| {
                let wants = s.wants(&event);
                if wants {
                    let ctx = context(identity, federations, lives, s.instance());
                    s.handle_event(now, &event, &ctx);
                }
                wants
            });
        }
        if !self.touched.any() {
            return;
        }
        // Handing parts over sets no federation timer: their deadline stands.
        let touched = self.touched;
        for f in &mut self.federations {
            let instance = f.config().instance;
            let services = &self.services;
            f.write_own_payload(|p| services.write_own_payload(instance, touched, p));
            for level in 0..f.seats().len() {
                f.set_pinned(level, self.services.pinned_payload(instance, level));
            }
        }
    }

    fn route_discovery(&mut self) {
        self.deadlines.discovery = self.discovery.next_timeout();
        while let Some(out) = self.discovery.poll_output() {
            let output = match out {
                DiscoveryOutput::Broadcast(msg) => Output::Broadcast {
                    envelope: self.identity.envelope(Message::Discovery(msg)),
                },
                DiscoveryOutput::Send(to, msg) => Output::Send {
                    to,
                    envelope: self.identity.envelope(Message::Discovery(msg)),
                },
            };
            self.outputs.push_back(output);
        }
        if self.discovery.changes() != self.neighbours_seen {
            self.neighbours_seen = self.discovery.changes();
            let neighbours: Vec<NodeId> = self.discovery.neighbours().map(|(id, _)| id).collect();
            self.federations_touched = true;
            for f in &mut self.federations {
                f.set_neighbours(neighbours.clone());
            }
        }
    }

    /// Carries the federations' messages out, and turns their removals and changes
    /// of this agent's level-0 group into events for the services.
    fn route_federations(&mut self) {
        self.federations_touched = true;
        for (f, seen) in self.federations.iter_mut().zip(&mut self.groups_seen) {
            let instance = f.config().instance;
            while let Some(out) = f.poll_output() {
                let output = match out {
                    FedOutput::Send(to, body) => Output::Send {
                        to,
                        envelope: self
                            .identity
                            .envelope(Message::Federation(FedMsg { instance, body })),
                    },
                    FedOutput::Notice(notice) => {
                        if let FedNotice::Removed { node, level } = notice {
                            self.events.push_back(ServiceEvent::HostRemoved {
                                instance,
                                node,
                                level,
                            });
                        }
                        Output::Notice(Notice::Federation { instance, notice })
                    }
                };
                self.outputs.push_back(output);
            }
            let seats = f.seats().len();
            let group = f
                .seats()
                .first()
                .map(|s| (s.view().leader, s.view().epoch, seats));
            if group != *seen {
                *seen = group;
                // The seats changed: every service's pinned parts are handed over.
                self.touched = Touched::ALL;
                self.events
                    .push_back(ServiceEvent::GroupChanged { instance });
            }
        }
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        crate::outbox::take_next(&mut self.outputs)
    }

    /// When `handle(now, Input::Timeout)` must be called next.
    #[must_use]
    pub fn next_timeout(&self) -> Option<Time> {
        self.next_deadline
    }

    /// The earliest deadline of the agent, from each part's cached one. A part's is
    /// read again only if the part was called since (discovery's in
    /// [`Agent::route_discovery`], which follows every call to it): a message for one
    /// part reads no other part's timers, each a cold cache line in a simulation of
    /// 10,000 agents. `end_of_call` checks the cache in debug builds.
    fn refresh_deadline(&mut self) {
        let touched = std::mem::take(&mut self.touched);
        if touched.any() {
            self.deadlines.services = self.services.next_timeout(touched);
        }
        if std::mem::take(&mut self.federations_touched) {
            let mut next = None;
            for f in &self.federations {
                next = earliest(next, f.next_timeout());
            }
            self.deadlines.federations = next;
        }
        let d = &self.deadlines;
        self.next_deadline = earliest(earliest(d.discovery, d.federations), d.services);
    }

    /// This agent's id and life.
    #[must_use]
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// The host capacity last reported.
    #[must_use]
    pub fn resources(&self) -> &HostResources {
        &self.resources
    }

    /// The tree-riding services, for inspection by checkers and tests.
    #[must_use]
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Neighbour discovery, for inspection by checkers and tests.
    #[must_use]
    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// The federation instances, for inspection by checkers and tests.
    #[must_use]
    pub fn federations(&self) -> &[Federation] {
        &self.federations
    }

    /// Every call ends here: refresh the cached deadline, then check the invariants.
    fn end_of_call(&mut self) {
        self.refresh_deadline();
        debug_assert!(self.services.invariants(), "a service's invariants broke");
        debug_assert_eq!(
            self.deadlines,
            Deadlines {
                discovery: self.discovery.next_timeout(),
                federations: self
                    .federations
                    .iter()
                    .fold(None, |next, f| earliest(next, f.next_timeout())),
                services: self.services.next_timeout_read(),
            },
            "a part was called without its deadline being refreshed"
        );
        debug_assert!(self.events.is_empty(), "every event was routed");
        debug_assert!(
            self.discovery
                .neighbours()
                .all(|(id, _)| id != self.identity.node),
            "an agent is never its own neighbour"
        );
        debug_assert!(
            self.next_timeout().is_some(),
            "a booted agent always has a heartbeat pending"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::DiscoveryMsg;
    use crate::host::{ProcSpec, Signal};
    use crate::ids::{Pid, TenantId};
    use nefele_api::messaging::{Delivery, Dest};

    fn agent(node: u32) -> Agent {
        Agent::new(
            AgentConfig::default(),
            Identity {
                node: NodeId(node),
                incarnation: Incarnation(1),
            },
            7,
            Time::ZERO,
        )
    }

    #[test]
    fn a_presence_timeout_past_the_create_timeout_is_refused() {
        let mut config = AgentConfig::default();
        assert_eq!(config.validate(), Ok(()));
        config.services.placement.presence_timeout = config.services.placement.create_timeout;
        assert_eq!(
            config.validate(),
            Err(AgentConfigError::Service(ServiceConfigError::Placement(
                crate::placement::PlacementConfigError::PresenceTimeout
            )))
        );
    }

    #[test]
    fn boot_broadcasts_an_announce_with_identity() {
        let mut a = agent(3);
        let out = a.poll_output().unwrap();
        let Output::Broadcast { envelope } = out else {
            panic!("expected a broadcast, got {out:?}")
        };
        assert_eq!(envelope.from, NodeId(3));
        assert_eq!(envelope.incarnation, Incarnation(1));
        assert_eq!(envelope.body, Message::Discovery(DiscoveryMsg::Announce));
        assert!(a.poll_output().is_none());
    }

    #[test]
    fn api_lists_neighbours() {
        let mut a = agent(1);
        while a.poll_output().is_some() {}
        let hb = Envelope {
            from: NodeId(2),
            incarnation: Incarnation(4),
            body: Message::Discovery(DiscoveryMsg::Heartbeat {
                known: Default::default(),
            }),
        };
        a.handle(Time::from_millis(10), Input::Message(hb));
        // Discovery introduces itself to the new neighbour (a unicast Announce).
        while a.poll_output().is_some() {}
        a.handle(
            Time::from_millis(11),
            Input::Api {
                request: RequestId(9),
                call: Box::new(ApiCall::Neighbours),
            },
        );
        assert_eq!(
            a.poll_output(),
            Some(Output::ApiReply {
                request: RequestId(9),
                reply: ApiReply::Neighbours(vec![(NodeId(2), Incarnation(4))]),
            })
        );
    }

    /// `handle_into` hands out what `handle` then `poll_output` would, in the same
    /// order, outputs still queued first, and leaves nothing queued in the agent.
    #[test]
    fn handle_into_matches_handle_then_poll() {
        let hb = |from| {
            Input::Message(Envelope {
                from: NodeId(from),
                incarnation: Incarnation(4),
                body: Message::Discovery(DiscoveryMsg::Heartbeat {
                    known: Default::default(),
                }),
            })
        };
        let inputs = [(10, 2), (11, 5), (12, 2), (13, 7)];
        let mut a = agent(1);
        let mut expected: Vec<Output> = std::iter::from_fn(|| a.poll_output()).collect();
        for (ms, from) in inputs {
            a.handle(Time::from_millis(ms), hb(from));
            expected.extend(std::iter::from_fn(|| a.poll_output()));
        }
        // `b` still holds its boot outputs, and the lent buffer one output of its own.
        let mut b = agent(1);
        let first = Output::Notice(Notice::Rejected {
            from: NodeId(9),
            reason: Reject::StaleIncarnation,
        });
        let mut lent = VecDeque::from([first.clone()]);
        let mut got = Vec::new();
        for (ms, from) in inputs {
            b.handle_into(Time::from_millis(ms), hb(from), &mut lent);
            assert!(
                b.poll_output().is_none(),
                "nothing stays queued in the agent"
            );
            got.extend(lent.drain(..));
        }
        assert_eq!(got.first(), Some(&first));
        assert!(
            expected.len() >= 4,
            "the boot announce, and one to each new neighbour"
        );
        assert_eq!(got[1..], expected[..]);
    }

    /// A placement request (an empty `OfferReq`) from `from` in its life `life`.
    fn offer_req(from: NodeId, life: Incarnation) -> Envelope {
        let offer_req = crate::placement::msg::PlacementMsg::OfferReq {
            key: crate::placement::msg::ReqKey {
                requester: NodeId(0),
                incarnation: Incarnation(0),
                seq: 0,
            },
            tenant: crate::ids::TenantId(0),
            shapes: Vec::new(),
        };
        Envelope {
            from,
            incarnation: life,
            body: Message::Placement(offer_req),
        }
    }

    /// Regression (found by the `agent_inputs` fuzz target): a placement request that
    /// names this agent as its sender (another life of the same id) was answered, to
    /// this agent itself.
    #[test]
    fn a_message_from_its_own_id_is_dropped() {
        let mut a = agent(1);
        while a.poll_output().is_some() {}
        let env = offer_req(NodeId(1), Incarnation(3));
        a.handle(Time::from_millis(10), Input::Message(env));
        let mut outputs = Vec::new();
        while let Some(out) = a.poll_output() {
            outputs.push(out);
        }
        assert!(
            !outputs
                .iter()
                .any(|o| matches!(o, Output::Send { to, .. } if *to == NodeId(1))),
            "{outputs:?}"
        );
    }

    /// A peer heard in a newer life only in discovery's heartbeats is known to the
    /// rest of the agent as restarted: a later message of its earlier life is
    /// refused as stale. Before, heartbeats skipped the check of lives, and the
    /// services never heard of the restart (swarm seed 300127: a keeper took
    /// nothing over from a restarted home it heard only that way).
    #[test]
    fn a_newer_life_heard_only_in_heartbeats_is_known_to_the_agent() {
        let mut a = agent(1);
        let beat = |life| {
            Input::Message(Envelope {
                from: NodeId(2),
                incarnation: Incarnation(life),
                body: Message::Discovery(DiscoveryMsg::Heartbeat {
                    known: Default::default(),
                }),
            })
        };
        a.handle(Time::from_millis(10), beat(4));
        a.handle(Time::from_millis(20), beat(5));
        while a.poll_output().is_some() {}
        let earlier = offer_req(NodeId(2), Incarnation(4));
        a.handle(Time::from_millis(30), Input::Message(earlier));
        let stale = Output::Notice(Notice::Rejected {
            from: NodeId(2),
            reason: Reject::StaleIncarnation,
        });
        assert_eq!(a.poll_output(), Some(stale));
    }

    /// Every client call has a service that owns it: none is dropped unanswered.
    /// (Regression: placement claimed every call but messaging's, so it took the
    /// supervision calls, and debug builds panicked.)
    #[test]
    fn every_api_call_has_an_owner() {
        use nefele_api::supervision::{
            Intensity, RestartPolicy, Strategy, SupervisedSpawn, SupervisionSpec, SupervisorId,
        };
        let (tenant, pid) = (TenantId(1), Pid::new(NodeId(1), Incarnation(1), 1));
        let spec = ProcSpec {
            path: "/bin/true".into(),
            ..ProcSpec::default()
        };
        let calls = [
            ApiCall::Neighbours,
            ApiCall::Spawn {
                tenant,
                spec: spec.clone(),
            },
            ApiCall::NSpawn {
                tenant,
                n: 2,
                spec: spec.clone(),
            },
            ApiCall::CSpawn {
                tenant,
                specs: vec![spec.clone()],
            },
            ApiCall::Kill {
                tenant,
                pid,
                signal: Signal::Kill,
            },
            ApiCall::Info { tenant, pid },
            ApiCall::Ps { tenant },
            ApiCall::Wait { tenant, pid },
            ApiCall::Send {
                tenant,
                from: pid,
                to: Dest::Pid(pid),
                data: vec![1],
                delivery: Delivery::AtMostOnce,
                block: false,
            },
            ApiCall::Recv {
                tenant,
                pid,
                max: 1,
                wait: None,
            },
            ApiCall::Register {
                tenant,
                name: "n".into(),
                pid,
            },
            ApiCall::Unregister {
                tenant,
                name: "n".into(),
            },
            ApiCall::Whereis {
                tenant,
                name: "n".into(),
            },
            ApiCall::Join {
                tenant,
                group: "g".into(),
                pid,
            },
            ApiCall::Leave {
                tenant,
                group: "g".into(),
                pid,
            },
            ApiCall::Subscribe {
                tenant,
                topic: "t".into(),
                pid,
            },
            ApiCall::Unsubscribe {
                tenant,
                topic: "t".into(),
                pid,
            },
            ApiCall::Monitor {
                tenant,
                watcher: pid,
                watched: pid,
            },
            ApiCall::Demonitor {
                tenant,
                watcher: pid,
                watched: pid,
            },
            ApiCall::Distance {
                tenant,
                from: pid,
                to: pid,
            },
            ApiCall::SpawnSupervised {
                tenant,
                spawn: SupervisedSpawn::N(2, spec.clone()),
                supervision: SupervisionSpec {
                    strategy: Strategy::OneForOne,
                    intensity: Intensity {
                        max_restarts: 1,
                        period: std::time::Duration::from_secs(1),
                    },
                    policies: vec![RestartPolicy::Permanent],
                },
            },
            ApiCall::Supervisors { tenant },
            ApiCall::StopSupervisor {
                tenant,
                id: SupervisorId {
                    origin: NodeId(1),
                    incarnation: Incarnation(1),
                    sequence: 0,
                },
            },
        ];
        for call in calls {
            let mut a = agent(1);
            let request = RequestId(9);
            let t = Time::from_millis(1);
            a.handle(
                t,
                Input::Host(HostEvent::Resources(HostResources {
                    cores: 4,
                    cpu_millicores: 4000,
                    memory_bytes: 8 << 30,
                    ..HostResources::default()
                })),
            );
            a.handle(
                t,
                Input::Api {
                    request,
                    call: Box::new(call.clone()),
                },
            );
            let mut answered = false;
            for _ in 0..10_000 {
                while let Some(out) = a.poll_output() {
                    answered |= matches!(out, Output::ApiReply { request: r, .. } if r == request);
                }
                if answered {
                    break;
                }
                let t = a.next_timeout().unwrap();
                a.handle(t, Input::Timeout);
            }
            assert!(answered, "{call:?} got no answer");
        }
    }

    #[test]
    fn same_seed_same_outputs() {
        let run = || {
            let mut a = agent(1);
            let mut log = Vec::new();
            for _ in 0..5 {
                let t = a.next_timeout().unwrap();
                a.handle(t, Input::Timeout);
                log.push(t);
                while a.poll_output().is_some() {}
            }
            log
        };
        assert_eq!(run(), run());
    }
}
