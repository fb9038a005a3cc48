//! One supervisor's state ([`Record`]), the restart decisions taken on it, and its
//! encoding into fragments for the keepers.
//!
//! The record is what is replicated: the specs, each child's policy, pid, phase and
//! recent restarts, the history, the supervisor's state. The decisions are pure:
//! [`Record::child_ended`] and the other transitions change the record and return
//! the [`Act`]s the service carries out (spawns through placement, kills), so the
//! logic is tested without an agent.
//!
//! Invariants: a child is `Running` or `Stopping` exactly when it has a pid that is
//! its current one; a child is restarted only by its policy and under its
//! intensity; children of a one-for-all or rest-for-one restart are spawned only
//! once none of them is still `Stopping` (stop, then start: never two lives of a
//! child at once).

use crate::ids::{Pid, TenantId};
use crate::time::Time;
use bincode::Options;
use nefele_api::spec::{ExitStatus, ProcSpec};
use nefele_api::supervision::{
    ChildInfo, ChildState, Intensity, RestartCause, RestartPolicy, RestartRecord, Strategy,
    SupervisorId, SupervisorInfo, SupervisorState, MAX_CHILDREN, MAX_HISTORY,
};
use serde::{Deserialize, Serialize};

use super::msg::{check_names, MAX_CHILD_NAMES, MAX_FRAGMENT, MAX_PARTS};

/// Where a child stands at its supervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Phase {
    /// Its spawn is in flight (no pid yet).
    Spawning,
    /// Running as its pid.
    Running,
    /// Its pid is being killed (a sibling's restart, or a stop).
    Stopping,
    /// To be spawned again.
    Pending,
    /// Ended, not restarted (its policy).
    Ended(ExitStatus),
    /// Past its intensity.
    GaveUp,
    /// Stopped with its supervisor.
    Stopped,
}

/// One child.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Child {
    /// Its spec, an index into [`Record::specs`].
    pub(super) spec: u32,
    pub(super) policy: RestartPolicy,
    pub(super) pid: Option<Pid>,
    pub(super) phase: Phase,
    pub(super) restarts: u32,
    /// When its restarts within the intensity period happened.
    pub(super) recent: Vec<Time>,
    /// Why it is being restarted, the pid that ended, and when the supervisor
    /// learned it (for the restart's record and latency).
    pub(super) cause: Option<(RestartCause, Option<Pid>, Time)>,
    /// Its host fences its pid (its lease applies): true from its spawn (a host
    /// fences a supervisor's spawn from its start), or once its host confirmed
    /// watching it (`kept`). A lost child not fenced is restarted only once its
    /// host answers (see the service's module doc).
    pub(super) leased: bool,
    /// The names it holds (its host's latest word), or, while `handing`, the names
    /// its previous process held, being registered for its current one.
    pub(super) names: Vec<String>,
    /// Until when (this home's clock) its names are being handed to its current
    /// process (`None`: not being handed).
    pub(super) handing: Option<Time>,
}

/// What the service must do after a transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Act {
    /// Spawn these children (one request: one child, or all of a group restart).
    Spawn(Vec<u32>),
    /// Kill this process of a child.
    Kill(Pid),
    /// A child was given up.
    GaveUp(Option<Pid>),
}

/// One supervisor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Record {
    pub(super) id: SupervisorId,
    pub(super) tenant: TenantId,
    pub(super) strategy: Strategy,
    pub(super) intensity: Intensity,
    pub(super) specs: Vec<ProcSpec>,
    pub(super) children: Vec<Child>,
    pub(super) history: Vec<RestartRecord>,
    pub(super) state: SupervisorState,
}

/// The largest encoded record.
const MAX_RECORD_BYTES: u64 = (MAX_FRAGMENT * MAX_PARTS) as u64;

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(MAX_RECORD_BYTES)
}

impl Record {
    /// The record in fragments of at most [`MAX_FRAGMENT`] bytes (`None` if it is
    /// larger than [`MAX_PARTS`] of them).
    pub(super) fn fragments(&self) -> Option<Vec<Vec<u8>>> {
        let bytes = options().serialize(self).ok()?;
        let parts: Vec<Vec<u8>> = bytes.chunks(MAX_FRAGMENT).map(<[u8]>::to_vec).collect();
        (parts.len() <= MAX_PARTS).then_some(parts)
    }

    /// The record from its fragments, if they decode to a well-formed one (a peer
    /// sent them: bounded, never panics).
    pub(super) fn from_fragments(parts: &[Vec<u8>]) -> Option<Record> {
        let bytes = parts.concat();
        let record: Record = options().reject_trailing_bytes().deserialize(&bytes).ok()?;
        record.well_formed().then_some(record)
    }

    fn well_formed(&self) -> bool {
        self.children.len() <= MAX_CHILDREN
            && self.specs.len() <= MAX_CHILDREN
            && self.history.len() <= MAX_HISTORY
            && self.children.iter().all(|c| {
                (c.spec as usize) < self.specs.len()
                    && c.recent.len() <= MAX_HISTORY
                    && check_names(&c.names).is_ok()
            })
            && self.consistent()
    }

    /// Whether a child's phase and pid agree (see the module's invariants).
    pub(super) fn consistent(&self) -> bool {
        self.children
            .iter()
            .all(|c| !matches!(c.phase, Phase::Running | Phase::Stopping) || c.pid.is_some())
    }

    /// The child whose current pid is `pid`.
    pub(super) fn child_of(&self, pid: Pid) -> Option<usize> {
        self.children
            .iter()
            .position(|c| c.pid == Some(pid) && matches!(c.phase, Phase::Running | Phase::Stopping))
    }

    fn push_history(&mut self, record: RestartRecord) {
        if self.history.len() >= MAX_HISTORY {
            self.history.remove(0);
        }
        self.history.push(record);
    }

    /// Child `i`'s process ended with `status` (or was lost: `ExitStatus::Lost`)
    /// at `now`, as the supervisor learned it.
    pub(super) fn child_ended(&mut self, now: Time, i: usize, status: ExitStatus) -> Vec<Act> {
        let child = &mut self.children[i];
        let old = child.pid;
        match child.phase {
            Phase::Stopping => {
                child.phase = Phase::Pending;
                return self.spawn_ready();
            }
            Phase::Running => {}
            _ => return Vec::new(),
        }
        if self.state != SupervisorState::Running {
            child.phase = Phase::Stopped;
            return Vec::new();
        }
        if !child.policy.restarts(status) {
            child.phase = Phase::Ended(status);
            return Vec::new();
        }
        let cause = if status == ExitStatus::Lost {
            RestartCause::Lost
        } else {
            RestartCause::Exited(status)
        };
        let period = self.intensity.period;
        child.recent.retain(|t| now.saturating_since(*t) < period);
        if child.recent.len() >= self.intensity.max_restarts as usize {
            child.phase = Phase::GaveUp;
            self.push_history(RestartRecord {
                child: i as u32,
                old,
                new: None,
                cause,
                gave_up: true,
            });
            let mut acts = vec![Act::GaveUp(old)];
            if self.strategy != Strategy::OneForOne {
                acts.extend(self.stop(SupervisorState::GaveUp));
            }
            return acts;
        }
        if child.recent.len() >= MAX_HISTORY {
            child.recent.remove(0);
        }
        child.recent.push(now);
        child.restarts = child.restarts.saturating_add(1);
        child.phase = Phase::Pending;
        child.cause = Some((cause, old, now));
        let mut acts = Vec::new();
        let siblings: Vec<usize> = match self.strategy {
            Strategy::OneForOne => Vec::new(),
            Strategy::OneForAll => (0..self.children.len()).filter(|&j| j != i).collect(),
            Strategy::RestForOne => (i + 1..self.children.len()).collect(),
        };
        for j in siblings {
            let sib = &mut self.children[j];
            match sib.phase {
                Phase::Running => {
                    sib.phase = Phase::Stopping;
                    sib.cause = Some((RestartCause::Sibling, sib.pid, now));
                    acts.extend(sib.pid.map(Act::Kill));
                }
                Phase::Ended(_) if sib.policy != RestartPolicy::Temporary => {
                    sib.phase = Phase::Pending;
                    sib.cause = Some((RestartCause::Sibling, sib.pid, now));
                }
                _ => {}
            }
        }
        acts.extend(self.spawn_ready());
        acts
    }

    /// The pending children to spawn now: each alone under one-for-one; all
    /// together once none is stopping otherwise.
    pub(super) fn spawn_ready(&mut self) -> Vec<Act> {
        if self.state != SupervisorState::Running {
            return Vec::new();
        }
        let pending: Vec<u32> = (0..self.children.len())
            .filter(|&j| self.children[j].phase == Phase::Pending)
            .map(|j| j as u32)
            .collect();
        if pending.is_empty() {
            return Vec::new();
        }
        for &j in &pending {
            self.children[j as usize].phase = Phase::Spawning;
        }
        if self.strategy == Strategy::OneForOne {
            return pending.into_iter().map(|j| Act::Spawn(vec![j])).collect();
        }
        if self.children.iter().any(|c| c.phase == Phase::Stopping) {
            for &j in &pending {
                self.children[j as usize].phase = Phase::Pending;
            }
            return Vec::new();
        }
        vec![Act::Spawn(pending)]
    }

    /// The spawn of `children` answered with `pids` (in order); returns the new pids
    /// of those that were restarts, with when their restart began.
    pub(super) fn spawned(
        &mut self,
        children: &[u32],
        pids: &[Pid],
        hand_until: Time,
    ) -> Vec<(Pid, Time)> {
        let mut restarted = Vec::new();
        for (&j, &pid) in children.iter().zip(pids) {
            let Some(child) = self.children.get_mut(j as usize) else {
                continue;
            };
            if child.phase != Phase::Spawning {
                continue;
            }
            child.pid = Some(pid);
            child.phase = Phase::Running;
            // Its host fences a supervisor's spawn from its start, watched or not.
            child.leased = true;
            if let Some((cause, old, since)) = child.cause.take() {
                restarted.push((pid, since));
                // Its names move to the new process.
                child.handing = (!child.names.is_empty()).then_some(hand_until);
                self.push_history(RestartRecord {
                    child: j,
                    old,
                    new: Some(pid),
                    cause,
                    gave_up: false,
                });
            }
        }
        restarted
    }

    /// The host of child `i`'s current process says it holds `names`: those are its
    /// names, unless its previous process's names are still being handed to it (and
    /// it does not hold them all yet), when it keeps both. Whether anything changed.
    pub(super) fn names_held(&mut self, i: usize, names: Vec<String>, now: Time) -> bool {
        let Some(c) = self.children.get_mut(i) else {
            return false;
        };
        let before = (c.names.clone(), c.handing);
        let all_held = c.names.iter().all(|n| names.contains(n));
        if c.handing.is_some_and(|until| now < until) && !all_held {
            for n in names {
                if !c.names.contains(&n) && c.names.len() < MAX_CHILD_NAMES {
                    c.names.push(n);
                }
            }
        } else {
            c.handing = None;
            c.names = names;
        }
        (c.names.clone(), c.handing) != before
    }

    /// The spawn of `children` failed: they are pending again (retried later).
    pub(super) fn spawn_failed(&mut self, children: &[u32]) {
        for &j in children {
            if let Some(c) = self.children.get_mut(j as usize) {
                if c.phase == Phase::Spawning {
                    c.phase = Phase::Pending;
                }
            }
        }
    }

    /// Stops the supervisor (`state`: stopped by a client, or given up): every
    /// running child is killed and no child restarts.
    pub(super) fn stop(&mut self, state: SupervisorState) -> Vec<Act> {
        self.state = state;
        let mut acts = Vec::new();
        for c in &mut self.children {
            if matches!(c.phase, Phase::Running | Phase::Stopping) {
                acts.extend(c.pid.map(Act::Kill));
            }
            if !matches!(c.phase, Phase::Ended(_) | Phase::GaveUp) {
                c.phase = Phase::Stopped;
            }
        }
        acts
    }

    /// After another agent took the supervisor over: spawns that were in flight
    /// at the old home are pending again, and the intensity windows restart (the
    /// old home's times are of its clock).
    pub(super) fn adopted(&mut self) {
        for c in &mut self.children {
            if c.phase == Phase::Spawning {
                c.phase = Phase::Pending;
            }
            c.recent.clear();
        }
    }

    /// The supervisor as a client sees it, run by `home`.
    pub(super) fn info(&self, home: crate::ids::NodeId) -> SupervisorInfo {
        SupervisorInfo {
            id: self.id,
            home,
            tenant: self.tenant,
            strategy: self.strategy,
            intensity: self.intensity,
            state: self.state,
            children: self
                .children
                .iter()
                .enumerate()
                .map(|(i, c)| ChildInfo {
                    index: i as u32,
                    pid: c.pid,
                    policy: c.policy,
                    restarts: c.restarts,
                    state: match c.phase {
                        Phase::Running => ChildState::Running,
                        Phase::Spawning | Phase::Stopping | Phase::Pending => {
                            ChildState::Restarting
                        }
                        Phase::Ended(s) => ChildState::Ended(s),
                        Phase::GaveUp => ChildState::GaveUp,
                        Phase::Stopped => ChildState::Stopped,
                    },
                })
                .collect(),
            history: self.history.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Incarnation, NodeId};
    use std::time::Duration;

    fn record(strategy: Strategy, n: usize, max_restarts: u32) -> Record {
        Record {
            id: SupervisorId {
                origin: NodeId(1),
                incarnation: Incarnation(1),
                sequence: 0,
            },
            tenant: TenantId(1),
            strategy,
            intensity: Intensity {
                max_restarts,
                period: Duration::from_secs(10),
            },
            specs: vec![ProcSpec::default()],
            children: (0..n)
                .map(|i| Child {
                    spec: 0,
                    policy: RestartPolicy::Permanent,
                    pid: Some(pid(i as u64)),
                    phase: Phase::Running,
                    restarts: 0,
                    recent: Vec::new(),
                    cause: None,
                    leased: false,
                    names: Vec::new(),
                    handing: None,
                })
                .collect(),
            history: Vec::new(),
            state: SupervisorState::Running,
        }
    }

    fn pid(n: u64) -> Pid {
        Pid::new(NodeId(2), Incarnation(1), n)
    }

    #[test]
    fn one_for_one_restarts_the_child_alone_until_its_intensity() {
        let mut r = record(Strategy::OneForOne, 3, 2);
        let t = Time::from_secs(1);
        assert_eq!(
            r.child_ended(t, 1, ExitStatus::Code(1)),
            vec![Act::Spawn(vec![1])]
        );
        assert_eq!(r.spawned(&[1], &[pid(10)], Time::ZERO), vec![(pid(10), t)]);
        assert_eq!(
            r.child_ended(t, 1, ExitStatus::Lost),
            vec![Act::Spawn(vec![1])]
        );
        r.spawned(&[1], &[pid(11)], Time::ZERO);
        // The third end within the period gives it up; the others run on.
        assert_eq!(
            r.child_ended(t, 1, ExitStatus::Code(1)),
            vec![Act::GaveUp(Some(pid(11)))]
        );
        assert_eq!(r.children[1].phase, Phase::GaveUp);
        assert_eq!(r.state, SupervisorState::Running);
        assert_eq!(r.history.len(), 3);
        assert!(r.history[2].gave_up);
        // Past the period the count starts again.
        let mut r = record(Strategy::OneForOne, 1, 1);
        r.child_ended(t, 0, ExitStatus::Code(1));
        r.spawned(&[0], &[pid(10)], Time::ZERO);
        let later = Time::from_secs(20);
        assert_eq!(
            r.child_ended(later, 0, ExitStatus::Code(1)),
            vec![Act::Spawn(vec![0])]
        );
    }

    #[test]
    fn one_for_all_stops_the_siblings_before_it_starts_anything() {
        let mut r = record(Strategy::OneForAll, 3, 5);
        let t = Time::from_secs(1);
        let acts = r.child_ended(t, 0, ExitStatus::Lost);
        assert_eq!(acts, vec![Act::Kill(pid(1)), Act::Kill(pid(2))]);
        assert!(r.child_ended(t, 1, ExitStatus::Signaled(9)).is_empty());
        assert_eq!(
            r.child_ended(t, 2, ExitStatus::Signaled(9)),
            vec![Act::Spawn(vec![0, 1, 2])]
        );
        let restarted = r.spawned(&[0, 1, 2], &[pid(10), pid(11), pid(12)], Time::ZERO);
        assert_eq!(restarted.len(), 3);
        assert_eq!(
            r.children[1].restarts, 0,
            "a sibling's restart does not count"
        );
        assert_eq!(r.history[1].cause, RestartCause::Sibling);
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| (*n).to_owned()).collect()
    }

    /// A child's names are its host's latest word, except while they are handed to
    /// its new process: then the old names stay until the new process holds them
    /// all, or the hand-over ends; a child restarted without names hands nothing.
    #[test]
    fn a_restarted_childs_names_are_handed_until_held_or_too_late() {
        let mut r = record(Strategy::OneForOne, 2, 5);
        let (t, until) = (Time::from_secs(1), Time::from_secs(91));
        assert!(r.names_held(0, names(&["a", "b"]), t));
        assert!(!r.names_held(0, names(&["a", "b"]), t), "no change");
        r.child_ended(t, 0, ExitStatus::Lost);
        r.child_ended(t, 1, ExitStatus::Lost);
        r.spawned(&[0], &[pid(10)], until);
        r.spawned(&[1], &[pid(11)], until);
        assert_eq!(r.children[0].handing, Some(until));
        assert_eq!(r.children[1].handing, None, "nothing to hand");
        // The new process registered a name of its own, and holds one handed.
        assert!(r.names_held(0, names(&["a", "c"]), t));
        assert_eq!(r.children[0].names, names(&["a", "b", "c"]));
        assert_eq!(r.children[0].handing, Some(until));
        // It holds them all: handed.
        assert!(r.names_held(0, names(&["a", "b", "c"]), t));
        assert_eq!(r.children[0].handing, None);
        // Handing again, and too late: what it holds is what it has.
        r.child_ended(t, 0, ExitStatus::Lost);
        r.spawned(&[0], &[pid(12)], until);
        assert!(r.names_held(0, names(&["b"]), until));
        assert_eq!(
            (r.children[0].names.clone(), r.children[0].handing),
            (names(&["b"]), None)
        );
    }

    #[test]
    fn rest_for_one_takes_the_later_children_only() {
        let mut r = record(Strategy::RestForOne, 3, 5);
        let acts = r.child_ended(Time::ZERO, 1, ExitStatus::Code(2));
        assert_eq!(acts, vec![Act::Kill(pid(2))]);
        assert_eq!(r.children[0].phase, Phase::Running);
    }

    #[test]
    fn policies_decide_and_a_tied_give_up_stops_everything() {
        let mut r = record(Strategy::OneForAll, 2, 0);
        r.children[1].policy = RestartPolicy::Transient;
        // Transient, normal exit: ended, nothing else.
        assert!(r.child_ended(Time::ZERO, 1, ExitStatus::Code(0)).is_empty());
        assert_eq!(r.children[1].phase, Phase::Ended(ExitStatus::Code(0)));
        // Intensity 0: the first restart gives up the supervisor.
        let acts = r.child_ended(Time::ZERO, 0, ExitStatus::Code(1));
        assert_eq!(acts, vec![Act::GaveUp(Some(pid(0)))]);
        assert_eq!(r.state, SupervisorState::GaveUp);
    }

    #[test]
    fn a_record_survives_its_fragments_and_garbage_is_refused() {
        let mut r = record(Strategy::OneForOne, 300, 3);
        r.specs[0].argv = vec!["x".repeat(500)];
        let parts = r.fragments().unwrap();
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.len() <= MAX_FRAGMENT));
        assert_eq!(Record::from_fragments(&parts), Some(r.clone()));
        assert_eq!(Record::from_fragments(&parts[1..]), None);
        assert_eq!(Record::from_fragments(&[vec![0xff; 64]]), None);
        r.children[0].spec = 7;
        assert_eq!(Record::from_fragments(&r.fragments().unwrap()), None);
    }
}
