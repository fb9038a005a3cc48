//! The registry: the one list of the services that ride the federation tree.
//!
//! Each line of `services!` names a service's field and type. From it come
//! the wire tag of its messages (a variant of [`Message`] after discovery's and
//! federation's, by position, so the list is append-only), its config section (a field of [`ServicesConfig`]),
//! its slot in the summaries (a field of [`Payload`]), its seed (from its field
//! name) and its place in the routing order (list order; every routing loop
//! visits services in it, so outputs are deterministic).

use super::{Context, Service, ServiceEvent, ServiceOutput, SummaryPart};
use crate::agent::{Identity, Notice, Output};
use crate::discovery::DiscoveryMsg;
use crate::federation::FedMsg;
use crate::ids::NodeId;
use crate::messaging::Messaging;
use crate::placement::Placement;
use crate::supervision::Supervision;
use crate::time::Time;
use crate::wire::Reject;
use nefele_api::calls::{ApiCall, RequestId};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// A service as the agent drives it, its message type erased to [`Message`].
pub(crate) trait Runner {
    /// The federation instance it rides.
    fn instance(&self) -> u8;
    fn handle_timeout(&mut self, now: Time, ctx: &Context<'_>);
    fn handle_event(&mut self, now: Time, event: &ServiceEvent, ctx: &Context<'_>);
    fn owns(&self, call: &ApiCall) -> bool;
    fn handle_api(&mut self, now: Time, request: RequestId, call: ApiCall, ctx: &Context<'_>);
    /// [`Service::wants`].
    fn wants(&self, event: &ServiceEvent) -> bool;
    /// Moves every pending output to `outputs` as the agent's (messages wrapped in
    /// envelopes from `me`), the events it raised (and the answers to its internal
    /// calls) to `events`, and the calls it makes on other services to `calls`.
    fn drain_into(
        &mut self,
        me: Identity,
        outputs: &mut VecDeque<Output>,
        events: &mut VecDeque<ServiceEvent>,
        calls: &mut VecDeque<(RequestId, Box<ApiCall>)>,
    );
    fn next_timeout(&self) -> Option<Time>;
    fn invariants(&self) -> bool;
}

macro_rules! services {
    ($( $(#[$doc:meta])* $field:ident: $ty:ident ),+ $(,)?) => {
        /// A message between agents, of one service (the variant is its wire tag).
        #[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        pub enum Message {
            /// Neighbour discovery in the broadcast domain.
            Discovery(DiscoveryMsg),
            /// Boot federation (one of possibly several instances).
            Federation(FedMsg),
            $( $(#[$doc])* $ty(<$ty as Service>::Msg), )+
        }

        impl Message {
            /// A short, stable name of the message kind, for traces.
            #[must_use]
            pub fn kind(&self) -> &'static str {
                match self {
                    Message::Discovery(m) => m.kind(),
                    Message::Federation(m) => m.body.kind(),
                    $( Message::$ty(m) => <$ty as Service>::kind(m), )+
                }
            }

            /// Checks the message against the bounds of its service (see
            /// [`crate::wire::validate`]).
            pub fn validate(&self) -> Result<(), Reject> {
                match self {
                    Message::Discovery(m) => m.validate(),
                    Message::Federation(m) => m.validate(),
                    $( Message::$ty(m) => <$ty as Service>::validate_msg(m), )+
                }
            }
        }

        $( impl From<<$ty as Service>::Msg> for Message {
            fn from(msg: <$ty as Service>::Msg) -> Self {
                Message::$ty(msg)
            }
        } )+

        /// Every tree-riding service's configuration, one section each.
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct ServicesConfig {
            $( $(#[$doc])* pub $field: <$ty as Service>::Config, )+
        }

        /// Why a service's configuration is refused.
        #[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
        pub enum ServiceConfigError {
            $( $(#[$doc])* #[error("{service}: {0}", service = stringify!($field))]
               $ty(<$ty as Service>::ConfigError), )+
        }

        impl ServicesConfig {
            /// Checks every service's section.
            pub fn validate(&self) -> Result<(), ServiceConfigError> {
                $( <$ty as Service>::validate(&self.$field).map_err(ServiceConfigError::$ty)?; )+
                Ok(())
            }

            /// The federation instances the services ride, in registry order.
            #[must_use]
            pub fn instances(&self) -> Vec<u8> {
                vec![$( <$ty as Service>::instance(&self.$field), )+]
            }
        }

        /// What a subtree summary carries for the services: one part per service,
        /// present only in the beats of the instance that service rides.
        #[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct Payload {
            $( $(#[$doc])* pub $field: Option<<$ty as Service>::Summary>, )+
        }

        impl Payload {
            /// The payload of two subtrees together (a part missing on one side is
            /// the other side's).
            #[must_use]
            pub fn plus(self, other: Payload) -> Payload {
                Payload {
                    $( $field: match (self.$field, other.$field) {
                        (Some(a), Some(b)) => Some(a.plus(b)),
                        (a, b) => a.or(b),
                    }, )+
                }
            }

            /// Whether every part is possible ([`SummaryPart::is_valid`]).
            #[must_use]
            pub fn is_valid(&self) -> bool {
                true $( && self.$field.as_ref().map_or(true, SummaryPart::is_valid) )+
            }

            /// What a member not heard from yet counts as in instance `instance`.
            #[must_use]
            pub fn unknown(config: &ServicesConfig, instance: u8) -> Payload {
                Payload {
                    $( $field: (<$ty as Service>::instance(&config.$field) == instance)
                        .then_some(<<$ty as Service>::Summary as SummaryPart>::UNKNOWN), )+
                }
            }
        }

        /// Which services were called since the agent last read their outputs,
        /// deadlines and summary parts (one flag per service, by field name): only
        /// those can have anything new to read, so an input for one service reads
        /// nothing of the others (each a cold place in a simulation of 10,000 agents).
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub(crate) struct Touched {
            $( pub(crate) $field: bool, )+
        }

        impl Touched {
            /// Every service.
            pub(crate) const ALL: Touched = Touched { $( $field: true, )+ };

            /// Whether any service was called.
            pub(crate) fn any(self) -> bool {
                false $( || self.$field )+
            }
        }

        /// Each service's deadline, as last read.
        #[derive(Clone, Copy, Debug, Default)]
        struct Deadlines {
            $( $field: Option<Time>, )+
        }

        /// The tree-riding services of one agent (read-only outside the core: the
        /// agent drives them).
        #[derive(Debug)]
        pub struct Services {
            $( $(#[$doc])* pub $field: $ty, )+
            /// Invariant: each service's deadline, except those of services touched
            /// since [`Services::next_timeout`] last read them.
            deadlines: Deadlines,
        }

        impl Services {
            pub(crate) fn new(me: Identity, config: ServicesConfig, root_seed: u64) -> Self {
                Services {
                    $( $field: <$ty as Service>::new(
                        me,
                        config.$field,
                        super::seed_for(root_seed, stringify!($field)),
                    ), )+
                    deadlines: Deadlines::default(),
                }
            }

            /// Hands `msg` to its service, with the context `ctx` builds for it, and
            /// marks that service in `touched`. Discovery and federation messages
            /// are the agent's, and never come here.
            pub(crate) fn deliver<'a>(
                &mut self,
                now: Time,
                from: NodeId,
                msg: Message,
                touched: &mut Touched,
                ctx: impl Fn(u8) -> Context<'a>,
            ) {
                match msg {
                    $( Message::$ty(m) => {
                        touched.$field = true;
                        let ctx = ctx(Runner::instance(&self.$field));
                        self.$field.handle_message(now, from, m, &ctx);
                    } )+
                    Message::Discovery(_) | Message::Federation(_) => {
                        debug_assert!(false, "the agent routes discovery and federation itself");
                    }
                }
            }

            /// Offers every service to `f`, in registry order; `f` says whether it
            /// called the service, and those it did are marked in `touched`.
            pub(crate) fn for_each(
                &mut self,
                touched: &mut Touched,
                mut f: impl FnMut(&mut dyn Runner) -> bool,
            ) {
                $( touched.$field |= f(&mut self.$field); )+
            }

            /// Drains every service marked in `touched` ([`Runner::drain_into`]), in
            /// registry order (the others have no outputs). Called directly on each
            /// service, not through [`Services::for_each`]: most calls find every
            /// queue empty, and a direct call lets that check be inlined.
            #[inline]
            pub(crate) fn drain_into(
                &mut self,
                touched: Touched,
                me: Identity,
                outputs: &mut VecDeque<Output>,
                events: &mut VecDeque<ServiceEvent>,
                calls: &mut VecDeque<(RequestId, Box<ApiCall>)>,
            ) {
                $( if touched.$field {
                    Runner::drain_into(&mut self.$field, me, outputs, events, calls);
                } )+
            }

            /// Whether any service wants to hear of `event`.
            pub(crate) fn want(&self, event: &ServiceEvent) -> bool {
                false $( || Runner::wants(&self.$field, event) )+
            }

            /// Whether every service's invariants hold.
            pub(crate) fn invariants(&self) -> bool {
                true $( && Runner::invariants(&self.$field) )+
            }

            /// The earliest deadline of every service, reading again those of the
            /// services marked in `touched` (the others' cannot have changed).
            pub(crate) fn next_timeout(&mut self, touched: Touched) -> Option<Time> {
                $( if touched.$field {
                    self.deadlines.$field = Runner::next_timeout(&self.$field);
                } )+
                let mut next: Option<Time> = None;
                $( next = earliest(next, self.deadlines.$field); )+
                next
            }

            /// The earliest deadline of every service, each read afresh (to check
            /// the cached ones).
            pub(crate) fn next_timeout_read(&self) -> Option<Time> {
                let mut next: Option<Time> = None;
                $( next = earliest(next, Runner::next_timeout(&self.$field)); )+
                next
            }

            /// Writes the parts of this agent's own payload in instance `instance`
            /// of the services marked in `touched` over `payload` (the others'
            /// parts cannot have changed).
            pub(crate) fn write_own_payload(&self, instance: u8, touched: Touched, payload: &mut Payload) {
                $( if touched.$field {
                    payload.$field = (Runner::instance(&self.$field) == instance)
                        .then(|| self.$field.own_summary());
                } )+
            }

            /// What the group this agent leads at `level` of `instance` counts besides
            /// its members' beats; `None` if no service counts anything there.
            pub(crate) fn pinned_payload(&self, instance: u8, level: usize) -> Option<Payload> {
                let payload = Payload {
                    $( $field: if Runner::instance(&self.$field) == instance {
                        self.$field.pinned_summary(level)
                    } else {
                        None
                    }, )+
                };
                (false $( || payload.$field.is_some() )+).then_some(payload)
            }
        }
    };
}

services! {
    /// Placement and the namespace.
    placement: Placement,
    /// Messaging: mailboxes, sends, names, groups, topics, monitors.
    messaging: Messaging,
    /// Supervision: supervisors of tenant processes, replicated at their keepers.
    supervision: Supervision,
}

/// The earlier of two optional deadlines (`None` is never).
#[inline]
pub(crate) fn earliest(a: Option<Time>, b: Option<Time>) -> Option<Time> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Puts one output of a service where it goes: out of the agent (messages wrapped
/// in envelopes from `me`), to the events, or to the calls.
#[inline(never)]
fn route_output<M: Into<Message>>(
    out: ServiceOutput<M>,
    me: Identity,
    outputs: &mut VecDeque<Output>,
    events: &mut VecDeque<ServiceEvent>,
    calls: &mut VecDeque<(RequestId, Box<ApiCall>)>,
) {
    outputs.push_back(match out {
        ServiceOutput::Send(to, m) => Output::Send {
            to,
            envelope: me.envelope(m.into()),
        },
        ServiceOutput::Host(command) => Output::Host(command),
        ServiceOutput::External(command) => Output::External(command),
        ServiceOutput::Reply(request, reply) if super::is_internal(request) => {
            return events.push_back(ServiceEvent::Answered { request, reply });
        }
        ServiceOutput::Reply(request, reply) => Output::ApiReply { request, reply },
        ServiceOutput::Call(request, call) => return calls.push_back((request, call)),
        ServiceOutput::Notice(notice) => Output::Notice(Notice::Service(notice)),
        ServiceOutput::Event(event) => return events.push_back(event),
    });
}

impl<S: Service> Runner for S
where
    S::Msg: Into<Message>,
{
    fn instance(&self) -> u8 {
        S::instance(self.config())
    }
    fn handle_timeout(&mut self, now: Time, ctx: &Context<'_>) {
        Service::handle_timeout(self, now, ctx);
    }
    fn handle_event(&mut self, now: Time, event: &ServiceEvent, ctx: &Context<'_>) {
        Service::handle_event(self, now, event, ctx);
    }
    fn owns(&self, call: &ApiCall) -> bool {
        S::owns(call)
    }
    fn handle_api(&mut self, now: Time, request: RequestId, call: ApiCall, ctx: &Context<'_>) {
        Service::handle_api(self, now, request, call, ctx);
    }
    fn wants(&self, event: &ServiceEvent) -> bool {
        Service::wants(self, event)
    }
    /// Inlined into [`Services::drain_into`]: most calls find the queue empty, and
    /// that check then costs a few instructions instead of a call.
    #[inline(always)]
    fn drain_into(
        &mut self,
        me: Identity,
        outputs: &mut VecDeque<Output>,
        events: &mut VecDeque<ServiceEvent>,
        calls: &mut VecDeque<(RequestId, Box<ApiCall>)>,
    ) {
        while let Some(out) = Service::poll_output(self) {
            route_output(out, me, outputs, events, calls);
        }
    }
    fn next_timeout(&self) -> Option<Time> {
        Service::next_timeout(self)
    }
    fn invariants(&self) -> bool {
        Service::invariants(self)
    }
}
