//! The client-facing types of placement and the namespace, defined in `nefele-api`
//! (so that clients need not link the core) and re-exported here.

pub use nefele_api::replies::{
    Demand, DistanceClass, InfoError, KillError, ProcInfo, ProcState, PsReply, Resource,
    SpawnError, WaitError,
};
