//! Supervision: what a client asks when it spawns processes under a supervisor
//! ([`SupervisionSpec`]), and what it can learn of a supervisor
//! ([`SupervisorInfo`]: its children and restart history).
//!
//! A supervisor is a system service of the cluster, not a tenant process: it
//! restarts its children by its policy when they exit or are lost with their
//! host, and it outlives the crash of any single host, its own included.
//!
//! Every list a peer or a client can send is bounded ([`MAX_CHILDREN`],
//! [`MAX_HISTORY`]); [`SupervisionSpec::check`] says why a spec is refused.

use crate::ids::{Incarnation, NodeId, Pid, TenantId};
use crate::spec::{ExitStatus, ProcSpec};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// The most children one supervisor has.
pub const MAX_CHILDREN: usize = 1024;
/// The most restart records a supervisor keeps (the oldest go first).
pub const MAX_HISTORY: usize = 64;

/// When a child that ended is started again.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Always (however it ended, or if it was lost with its host).
    Permanent,
    /// Only if it ended abnormally: a code other than 0, a signal, out of memory,
    /// or lost with its host.
    Transient,
    /// Never.
    Temporary,
}

impl RestartPolicy {
    /// Whether a child under this policy that ended with `status` is restarted.
    #[must_use]
    pub fn restarts(self, status: ExitStatus) -> bool {
        match self {
            RestartPolicy::Permanent => true,
            RestartPolicy::Transient => status != ExitStatus::Code(0),
            RestartPolicy::Temporary => false,
        }
    }
}

/// Which children restart when one must.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    /// Only the child that ended.
    OneForOne,
    /// Every child: the others are stopped first, then all start again.
    OneForAll,
    /// The child that ended and every child after it in the spec's order.
    RestForOne,
}

/// At most `max_restarts` restarts of one child within `period`: the next one
/// gives the child up (it is stopped and reported), and under
/// [`Strategy::OneForAll`] and [`Strategy::RestForOne`] the whole supervisor.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intensity {
    /// The most restarts in a period.
    pub max_restarts: u32,
    /// The period.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub period: Duration,
}

/// How the processes of one spawn are supervised.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisionSpec {
    /// Which children restart together.
    pub strategy: Strategy,
    /// The restart limit.
    pub intensity: Intensity,
    /// One policy per child in the order of the spawn, or one for every child.
    pub policies: Vec<RestartPolicy>,
}

impl SupervisionSpec {
    /// The policy of child `index`, if the spec gives one.
    #[must_use]
    pub fn policy(&self, index: usize) -> Option<RestartPolicy> {
        match self.policies.as_slice() {
            [one] => Some(*one),
            many => many.get(index).copied(),
        }
    }

    /// Whether the spec fits a spawn of `children` processes; why not otherwise.
    pub fn check(&self, children: usize) -> Result<(), String> {
        if children == 0 || children > MAX_CHILDREN {
            return Err(format!("a supervisor has 1..={MAX_CHILDREN} children"));
        }
        if self.policies.len() != 1 && self.policies.len() != children {
            return Err("give one restart policy, or one per child".to_owned());
        }
        if self.intensity.period.is_zero() {
            return Err("the intensity period must be positive".to_owned());
        }
        Ok(())
    }
}

/// What to spawn under a supervisor: the shape of `spawn`, `n_spawn` or `c_spawn`.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SupervisedSpawn {
    /// One process.
    One(ProcSpec),
    /// `n` identical processes.
    N(u32, ProcSpec),
    /// Different processes.
    C(Vec<ProcSpec>),
}

impl SupervisedSpawn {
    /// How many children the spawn makes.
    #[must_use]
    pub fn children(&self) -> usize {
        match self {
            SupervisedSpawn::One(_) => 1,
            SupervisedSpawn::N(n, _) => usize::try_from(*n).unwrap_or(usize::MAX),
            SupervisedSpawn::C(specs) => specs.len(),
        }
    }
}

/// A supervisor's id: the agent that created it, that agent's life then, and a
/// sequence number (it keeps its id when another agent takes it over).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SupervisorId {
    /// The creating agent.
    pub origin: NodeId,
    /// Its life at creation.
    pub incarnation: Incarnation,
    /// Its sequence number there.
    pub sequence: u32,
}

impl fmt::Display for SupervisorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "s{}.{}.{}",
            self.origin.0, self.incarnation.0, self.sequence
        )
    }
}

impl std::str::FromStr for SupervisorId {
    type Err = String;

    /// Reads what [`fmt::Display`] writes: `s<origin>.<incarnation>.<sequence>`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a supervisor id (s<node>.<life>.<n>)");
        let mut parts = s.strip_prefix('s').ok_or_else(bad)?.split('.');
        let mut next = || {
            parts
                .next()
                .and_then(|p| p.parse::<u32>().ok())
                .ok_or_else(bad)
        };
        let id = SupervisorId {
            origin: NodeId(next()?),
            incarnation: Incarnation(next()?),
            sequence: next()?,
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(id)
    }
}

/// Where a supervisor stands.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SupervisorState {
    /// Supervising.
    Running,
    /// A child went past the intensity under a strategy that ties the children
    /// together: every child was stopped.
    GaveUp,
    /// Stopped by a client: every child was stopped.
    Stopped,
}

/// Where one child stands.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChildState {
    /// Running as its current pid.
    Running,
    /// Being stopped (a sibling's restart), or being started again.
    Restarting,
    /// Ended and not restarted (its policy said so).
    Ended(ExitStatus),
    /// Past the intensity: stopped and not restarted.
    GaveUp,
    /// Stopped with its supervisor.
    Stopped,
}

/// One child, as a client sees it.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildInfo {
    /// Its position in the spawn.
    pub index: u32,
    /// Its current (or last) pid.
    pub pid: Option<Pid>,
    /// Its policy.
    pub policy: RestartPolicy,
    /// Where it stands.
    pub state: ChildState,
    /// How often it was restarted.
    pub restarts: u32,
}

/// Why a child was restarted (or given up).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartCause {
    /// It ended so.
    Exited(ExitStatus),
    /// It was lost with its host.
    Lost,
    /// A sibling's restart took it along (one-for-all, rest-for-one).
    Sibling,
}

/// One restart, or the give-up that ended a child's restarts.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartRecord {
    /// The child.
    pub child: u32,
    /// The pid that ended.
    pub old: Option<Pid>,
    /// The pid that replaced it (`None`: given up, or not started yet).
    pub new: Option<Pid>,
    /// Why.
    pub cause: RestartCause,
    /// Whether this record is the child's give-up.
    pub gave_up: bool,
}

/// A supervisor, as a client sees it.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorInfo {
    /// Its id.
    pub id: SupervisorId,
    /// The agent running it now.
    pub home: NodeId,
    /// Its tenant.
    pub tenant: TenantId,
    /// Its strategy.
    pub strategy: Strategy,
    /// Its intensity.
    pub intensity: Intensity,
    /// Where it stands.
    pub state: SupervisorState,
    /// Its children, in spawn order.
    pub children: Vec<ChildInfo>,
    /// Its last restarts, oldest first (at most [`MAX_HISTORY`]).
    pub history: Vec<RestartRecord>,
}

/// Why a supervision call failed. Nothing changed.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum SupervisionError {
    /// No supervisor with this id belongs to the caller's tenant at the agent asked
    /// (it never existed, belongs to another tenant, or runs at another agent).
    #[error("no such supervisor here")]
    NoSuchSupervisor,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_reads_back_what_it_prints() {
        let id = SupervisorId {
            origin: NodeId(7),
            incarnation: Incarnation(2),
            sequence: 31,
        };
        assert_eq!(id.to_string().parse::<SupervisorId>(), Ok(id));
        for bad in ["", "s", "7.2.31", "s7.2", "s7.2.31.1", "s7.x.1", "s-1.2.3"] {
            assert!(bad.parse::<SupervisorId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn policies_restart_what_they_say() {
        let ok = ExitStatus::Code(0);
        let bad = ExitStatus::Code(1);
        assert!(RestartPolicy::Permanent.restarts(ok));
        assert!(!RestartPolicy::Transient.restarts(ok));
        assert!(RestartPolicy::Transient.restarts(bad));
        assert!(RestartPolicy::Transient.restarts(ExitStatus::Lost));
        assert!(!RestartPolicy::Temporary.restarts(bad));
    }

    #[test]
    fn a_spec_needs_one_policy_or_one_per_child() {
        let spec = SupervisionSpec {
            strategy: Strategy::OneForOne,
            intensity: Intensity {
                max_restarts: 3,
                period: Duration::from_secs(5),
            },
            policies: vec![RestartPolicy::Permanent, RestartPolicy::Temporary],
        };
        assert!(spec.check(2).is_ok());
        assert!(spec.check(3).is_err());
        assert!(spec.check(0).is_err());
        assert_eq!(spec.policy(1), Some(RestartPolicy::Temporary));
        let one = SupervisionSpec {
            policies: vec![RestartPolicy::Transient],
            ..spec
        };
        assert!(one.check(MAX_CHILDREN).is_ok());
        assert!(one.check(MAX_CHILDREN + 1).is_err());
        assert_eq!(one.policy(500), Some(RestartPolicy::Transient));
    }
}
