//! The service seam: how a service plugs into the agent.
//!
//! Discovery and federation build the tree; every other service (placement and
//! the namespace, messaging; supervision next) *rides* one federation
//! instance and is driven the same way, through the [`Service`] trait:
//!
//! - inputs: [`Service::handle_message`] (its own wire message, already
//!   validated), [`Service::handle_timeout`], [`Service::handle_event`] (host
//!   events and what other services did), [`Service::handle_api`] (the client
//!   calls it [owns](Service::owns));
//! - outputs: drained with [`Service::poll_output`] after every input;
//! - timers: [`Service::next_timeout`];
//! - the tree: every input comes with a [`Context`] whose [`TreeView`] is a
//!   read-only view of the instance the service rides, built for that call. A
//!   service never holds or reads the federation itself;
//! - summaries: what it contributes to the subtree summaries that climb the tree
//!   ([`Service::own_summary`], [`Service::pinned_summary`]), as its own
//!   [`SummaryPart`] inside the federation's [`Payload`].
//!
//! A service never reaches into another's state: it learns what others did
//! through [`ServiceEvent`]s, which the agent routes to every service that
//! [wants](Service::wants) them, in the order the registry lists them.
//!
//! # Adding a service
//!
//! Write its module (a type implementing [`Service`], with its message, config,
//! summary part and API calls), then add one line to the list in
//! [`registry`](crate::service::registry). That line gives it a wire tag (its
//! position: append only), a config section (its field name), a slot in the
//! summaries and its place in the routing order. Its RNG seed derives from the
//! root seed and its name ([`seed_for`]), so adding a service changes no other
//! service's randomness. Its message and summary part derive `arbitrary::Arbitrary`
//! under the crate's `arbitrary` feature (`#[cfg_attr(feature = "arbitrary",
//! derive(arbitrary::Arbitrary))]`), or the fuzz targets in `fuzz/`, which build
//! well-formed messages of every service, do not compile.

pub mod registry;
mod tree;
pub(crate) mod walk;

pub use registry::{Message, Payload, ServiceConfigError, Services, ServicesConfig};
pub use tree::{GroupView, TreeView};

use crate::agent::Identity;
use crate::host::{ExitStatus, HostCommand, HostEvent};
use crate::ids::{Incarnation, NodeId, Pid, TenantId};
use crate::incarnations::Incarnations;
use crate::time::Time;
use crate::wire::Reject;
use nefele_api::calls::{ApiCall, ApiReply, RequestId};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

/// What a service sees of the agent on every call.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// This agent.
    pub me: Identity,
    /// The federation instance the service rides, read-only.
    pub tree: TreeView<'a>,
    /// The newest life heard of each peer (`None` where nothing is heard: unit
    /// tests).
    pub lives: Option<&'a Incarnations>,
}

impl Context<'_> {
    /// The newest life of `node` this agent heard, if it remembers one.
    #[must_use]
    pub fn life_of(&self, node: NodeId) -> Option<Incarnation> {
        self.lives?.newest(node)
    }
}

/// How a process came to run on this agent's host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// A tenant's spawn.
    Spawned,
    /// A supervisor's spawn (`CreateItem::leased`): supervision fences it from
    /// its start, watched or not.
    Supervised,
    /// Adopted after this agent restarted: started by an earlier life, perhaps
    /// for a supervisor (whose home may ask after it), perhaps not.
    Adopted,
}

/// Something that happened that services other than its author may care about.
/// The agent routes each to every service that [wants](Service::wants) it, in
/// registry order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceEvent {
    /// The host reported something (routed before any service reacts to it).
    Host(HostEvent),
    /// A process was created on this agent's host (or adopted after a restart).
    ProcessStarted {
        /// The process.
        pid: Pid,
        /// Its tenant.
        tenant: TenantId,
        /// How it came to run here.
        start: Start,
    },
    /// A process of this agent's host ended.
    ProcessExited {
        /// The process.
        pid: Pid,
        /// Its tenant.
        tenant: TenantId,
        /// How it ended.
        status: ExitStatus,
    },
    /// A process of another host is known lost with its host (this agent keeps
    /// that host's ledger and saw it leave the group).
    ProcessLost {
        /// The process.
        pid: Pid,
        /// Its tenant.
        tenant: TenantId,
    },
    /// Federation instance `instance` removed `node` from this agent's group at
    /// `level` for silence (or replaced it as leader).
    HostRemoved {
        /// The instance.
        instance: u8,
        /// The removed agent.
        node: NodeId,
        /// The level of the group.
        level: u8,
    },
    /// A newer life of `node` was heard from (it restarted): its earlier life, with
    /// all it held, is gone, even if its federation never removed it.
    PeerRestarted {
        /// The agent.
        node: NodeId,
    },
    /// This agent's level-0 group in instance `instance` changed (members, leader
    /// or ancestors), or the agent joined or lost its group.
    GroupChanged {
        /// The instance.
        instance: u8,
    },
    /// The names a live process of this agent's host holds changed (a registration
    /// was granted, dropped or lost): all of them now, in name order.
    NamesHeld {
        /// The process.
        pid: Pid,
        /// Its names.
        names: Vec<String>,
    },
    /// A service's own call to another service ([`ServiceOutput::Call`]) was
    /// answered; `request` is internal (see [`internal_request`]). Routed, like every
    /// event, to the services that want it: the caller recognises its ids.
    Answered {
        /// The call.
        request: RequestId,
        /// Its answer.
        reply: ApiReply,
    },
}

/// The top bit of a [`RequestId`] marks a call a service made to another service
/// ([`ServiceOutput::Call`]); drivers number their clients' calls below it.
const INTERNAL_REQUEST: u64 = 1 << 63;

/// The internal request id numbered `n` (its top bit set).
#[must_use]
pub fn internal_request(n: u64) -> RequestId {
    RequestId(n | INTERNAL_REQUEST)
}

/// Whether `request` is a service's own call rather than a client's.
#[must_use]
pub fn is_internal(request: RequestId) -> bool {
    request.0 & INTERNAL_REQUEST != 0
}

/// What a service asks the agent to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceOutput<M> {
    /// Send `M` to another agent.
    Send(NodeId, M),
    /// Have the host start or kill a process (boxed, as in
    /// [`Output::Host`](crate::agent::Output::Host)).
    Host(Box<HostCommand>),
    /// Answer a local client's call (or another service's: an
    /// [internal](is_internal) request's answer comes back as
    /// [`ServiceEvent::Answered`]).
    Reply(RequestId, ApiReply),
    /// Make a client call on this agent, answered by the service that owns it, under
    /// an [internal](internal_request) request id of the caller's choosing (e.g.
    /// supervision spawning through placement). Boxed: the largest calls would make
    /// every output as large.
    Call(RequestId, Box<ApiCall>),
    /// Tell the other services (see [`ServiceEvent`]).
    Event(ServiceEvent),
    /// Something worth logging (the simulator counts these).
    Notice(ServiceNotice),
    /// A command for the external proxy's driver (messaging only).
    External(crate::messaging::external::ExternalCommand),
}

/// Something a service wants logged or counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceNotice {
    /// A spawn request was placed.
    Placed {
        /// Its processes.
        processes: u32,
        /// Whether all landed in the requester's level-0 group.
        local: bool,
    },
    /// A supervised child was started again (`latency`: from its end or loss, as the
    /// supervisor learned it, to its new pid).
    Restarted {
        /// The new process.
        pid: Pid,
        /// How long the restart took.
        latency: std::time::Duration,
    },
    /// A supervised child went past its intensity and was given up (stopped, not
    /// restarted). Told at least once: a home that takes a supervisor over tells
    /// again the give-ups its copy holds, which the old home may not have told.
    GaveUp {
        /// Its last process.
        pid: Option<Pid>,
    },
    /// A supervised child's restart found no room: placement answered that the
    /// cluster is short of `resource` now, or has none. The supervisor tries again
    /// at its next tick, and says so again at each refusal.
    RestartShort {
        /// The child's last process.
        pid: Option<Pid>,
        /// What ran out.
        resource: nefele_api::Resource,
    },
}

/// A service's share of a federation summary: summed up the tree by the leaders.
pub trait SummaryPart: Copy + Debug + Eq + Serialize + DeserializeOwned {
    /// What a member whose beat has not arrived yet counts as (it may hold anything).
    const UNKNOWN: Self;
    /// The part of two subtrees together.
    #[must_use]
    fn plus(self, other: Self) -> Self;
    /// Whether a part a peer sent is possible (checked at the boundary: a beat
    /// carrying an impossible part is refused).
    fn is_valid(&self) -> bool {
        true
    }
}

/// A service that rides the federation tree (see the module documentation).
///
/// Call order: [`Service::new`] at boot; then the `handle_*` methods as inputs
/// come, each with the current time; drain [`Service::poll_output`] after each;
/// [`Service::next_timeout`] says when to call [`Service::handle_timeout`].
pub trait Service: Debug + Sized {
    /// Its wire message.
    type Msg: Clone + Debug + Eq + Serialize + DeserializeOwned;
    /// Its configuration.
    type Config: Clone + Debug + Default + Eq + Serialize + DeserializeOwned;
    /// Its share of the federation summaries.
    type Summary: SummaryPart;
    /// Why its configuration is refused.
    type ConfigError: std::error::Error + Clone + Eq;

    /// Checks `config` before any agent is built with it.
    fn validate(config: &Self::Config) -> Result<(), Self::ConfigError>;

    /// The federation instance it rides.
    fn instance(config: &Self::Config) -> u8;

    /// The service of agent `me`, with its own RNG seed (see [`seed_for`]).
    fn new(me: Identity, config: Self::Config, seed: u64) -> Self;

    /// Its configuration.
    fn config(&self) -> &Self::Config;

    /// A short, stable name of the kind of `msg`, for traces.
    fn kind(msg: &Self::Msg) -> &'static str;

    /// Checks a decoded message from a peer against the service's bounds (counts,
    /// levels, durations), before the service sees it.
    fn validate_msg(msg: &Self::Msg) -> Result<(), Reject>;

    /// A message from another agent, validated already.
    fn handle_message(&mut self, now: Time, from: NodeId, msg: Self::Msg, ctx: &Context<'_>);

    /// The time reported by [`Service::next_timeout`] has come.
    fn handle_timeout(&mut self, now: Time, ctx: &Context<'_>);

    /// Whether this service wants to hear of `event`: the agent routes an event only
    /// to the services that want it, and drops one nobody wants at once (most events
    /// are process starts and exits, which few services follow).
    fn wants(&self, event: &ServiceEvent) -> bool;

    /// Something this service wants happened (see [`ServiceEvent`],
    /// [`Service::wants`]).
    fn handle_event(&mut self, now: Time, event: &ServiceEvent, ctx: &Context<'_>);

    /// Whether `call` is one of the client calls this service answers.
    fn owns(call: &ApiCall) -> bool;

    /// A local client's call that it [owns](Service::owns): the service answers it,
    /// now or later, with a [`ServiceOutput::Reply`].
    fn handle_api(&mut self, now: Time, request: RequestId, call: ApiCall, ctx: &Context<'_>);

    /// The next output, if any.
    fn poll_output(&mut self) -> Option<ServiceOutput<Self::Msg>>;

    /// When [`Service::handle_timeout`] must be called next.
    fn next_timeout(&self) -> Option<Time>;

    /// This agent's own share of its summary.
    fn own_summary(&self) -> Self::Summary;

    /// What the group this agent leads at `level` counts besides its members'
    /// beats (state registered with this agent as leader that beats may not show
    /// yet); `None` for nothing.
    fn pinned_summary(&self, level: usize) -> Option<Self::Summary>;

    /// The service's invariants (checked after every call in debug builds).
    fn invariants(&self) -> bool;
}

/// The seed of the service called `name`, drawn from the agent's root seed alone:
/// it does not depend on which other services exist or in which order (SplitMix64
/// over the seed and an FNV-1a hash of the name).
#[must_use]
pub fn seed_for(root: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    crate::mix::splitmix64(root ^ h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_depend_on_the_name_and_root_only() {
        assert_eq!(seed_for(7, "placement"), seed_for(7, "placement"));
        assert_ne!(seed_for(7, "placement"), seed_for(7, "messaging"));
        assert_ne!(seed_for(7, "placement"), seed_for(8, "placement"));
    }
}
