//! nefele-api: the types a Nefele client sees, shared by the agent's core and by
//! libnefele so that a client never links the core.
//!
//! - [`ids`]: agents, agent lives, tenants and global pids;
//! - [`spec`]: what to run ([`ProcSpec`]) and its placement and resource policy,
//!   signals, exit statuses;
//! - [`calls`]: [`ApiCall`] and [`ApiReply`], matched by a driver's [`RequestId`];
//! - [`replies`]: process entries and one error enum per operation;
//! - [`messaging`]: mailboxes, destinations, mail and the messaging errors;
//! - [`supervision`]: supervisors' specs, children and restart history;
//! - [`duration`]: the strict deserializer of the durations in messages.
//!
//! Everything here is plain data with serde derives; changing a type's shape
//! changes the client protocol, whose version libnefele's `proto` module keeps.

#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

pub mod calls;
pub mod duration;
pub mod ids;
pub mod messaging;
pub mod replies;
pub mod spec;
pub mod supervision;

pub use calls::{ApiCall, ApiReply, RequestId};
pub use ids::{Incarnation, NodeId, ParsePidError, Pid, TenantId};
pub use replies::{
    Demand, DistanceClass, InfoError, KillError, ProcInfo, ProcState, PsReply, Resource,
    SpawnError, WaitError,
};
pub use spec::{Affinity, ExitStatus, Limits, ProcSpec, ResourcePolicy, Signal, WorkloadProfile};
