//! The `[supervision]` workload: supervised groups spawned at one host, some of
//! whose children crash in a loop, and the supervision invariants, checked
//! outside the agents from the simulated processes themselves.
//!
//! ```toml
//! [supervision]
//! start = "3s"            # when the groups are spawned
//! home = 7                # the host whose agent is asked (the supervisor's first home)
//! groups = 1
//! children = 100          # per group (n_spawn of one spec)
//! strategy = "one-for-one"
//! crash_loop = 1          # children per group (the last ones) that exit 1 after `crash_after`
//! crash_after = "200ms"
//! max_restarts = 3        # the intensity: at most 3 restarts in `period`
//! period = "10s"
//! cpu_millicores = 2000   # each child's reservation (spreads them over the hosts)
//! placement_allowance = "1s"
//! ```
//!
//! Every child carries its slot (group and index) in its environment
//! (`NEFELE_SIM_SLOT`), and keeps it across restarts (the spec is the same), so
//! the checks see each slot's lives without asking the agents:
//!
//! - `supervision.no_twin`: no slot ever has two processes running at once, but
//!   for one stated exception: a process whose host's agent is stalled (a pause
//!   fault) cannot be fenced by it, so it may still run when its replacement
//!   starts; it must be gone within [`STALL_GRACE`] of its agent's resumption
//!   (the agent's first input fences it). Where processes do not stop with their
//!   agent, only a fence outside the agent could do better;
//! - `supervision.restarted`: a slot without a process is running again within the
//!   restart bound (detection plus placement time: the federation's removal time,
//!   supervision's `lost_after` and probe period, and `placement_allowance`) of its
//!   last process's end, unless it was given up (looping children are) or its
//!   supervisor was lost beyond the design: its home crashed together with at
//!   least half of the rest of its quorum base, as the home last told it or as
//!   the keeper that would take over last heard it (or that half crashed within
//!   `refresh` after the home, before a take-over), or while partitions left no
//!   agent keeping a copy beside most of the rest, or its
//!   last holders (the home, or the keepers while the home is down) crashed
//!   together. No take-over is possible then; a rack's crash does it, a single
//!   host's never. The bound
//!   already covers a take-over when the supervisor's home dies with the child's
//!   host; when the home is lost later, while the slot is down (its host crashes,
//!   its agent stalls, or a partition cuts it from most of its level-0 group),
//!   the bound counts again from that loss (from the end of a stall): the old
//!   home's restart died with it, and the new home's take-over and hold start
//!   then. A home that crashes while every keeper of its copies is stalled is
//!   lost, for the bound, when the first of them resumes; one whose keeper
//!   crashes before taking it over is lost again at that crash (the next keeper
//!   starts over: swarm seed 841052, whose home's leader crashed a second after
//!   the home, and whose heir, taking the group over, detected the home
//!   afresh). (Before, partitions were left out: swarm seed 210890, whose home
//!   had just taken a crashed home's supervisor over and was still holding back
//!   when a partition cut it off, owed the restart a bound after the first
//!   crash, though the second take-over's hold could only start at the
//!   partition.) A
//!   restart that placement refuses for lack of room (the
//!   agent's `RestartShort` notice) is not late: the bound counts again from each
//!   refusal (the agent tries again at each tick, and says so each time). Under a
//!   loss fault beyond [`LOSS_TOLERATED`] (the design's timing holds up to 10%
//!   uniform loss) a home may go without its confirmations for longer than its
//!   authority, and spawns may be aborted again and again: a slot that goes down
//!   before such a loss ends is due a bound after its end. Likewise when a crash
//!   or a stall leaves a live home with less than half of the rest of its level-0
//!   group on its side, of its quorum's base, or of the base before a pending
//!   change of that base (committed only once most of that base hears of it): the design's stated price (its quorum) is that it grants
//!   and restarts nothing until enough of them are back (a silent side may as well
//!   be cut off and taking over), so a slot that goes down before the silenced
//!   hosts boot again (or resume) is due a bound after they do; and so when a
//!   partition with a set end does it while no agent keeping a copy is beside
//!   more than half of the rest of the home's base (nobody may take over), with
//!   the slot due a bound after the partition heals; and under one-for-all and
//!   rest-for-one, whose restarts first stop the running siblings, while a host
//!   running a child of the group is stalled (its agent answers the kill only
//!   once it resumes, or the child's lease ends): the group's slots down then, or
//!   going down before it resumes, are due a bound after it; and when such a host
//!   crashes, or a partition cuts it from its supervisor's home (its children
//!   count as stopped once their leases end), the group's slots down then are due
//!   a bound after the crash or the cut;
//! - `supervision.loop_stopped`: a crash-looping slot is given up (the agent says so
//!   with a notice) within its intensity's restarts (counted from the start, or
//!   from the end of a suspension of the check: a home without its quorum tells
//!   no give-up), and runs no more after that,
//!   but for the stalled-agent exceptions: a spawn sent before the give-up to a
//!   host whose agent was stalled starts when that agent resumes, and must be gone
//!   within [`STALL_GRACE`] of it (its host kills it unconfirmed); and a process
//!   running at the give-up whose host stalls before the kill reaches it has the
//!   time of a kill from the host's resumption.
//!
//! Figures: restarts seen (new lives of a slot), give-ups, and restart latency (end
//! of a life to the start of the next) p50 and p99.

use crate::placement_sim::PlacementSim;
use nefele_api::spec::ProcSpec;
use nefele_api::supervision::{
    Intensity, RestartPolicy, Strategy, SupervisedSpawn, SupervisionSpec,
};
use nefele_core::{ApiCall, ApiReply, NodeId, Pid, TenantId, Time};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The supervision workload of a scenario.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisionWorkload {
    /// When the groups are spawned.
    #[serde(with = "crate::duration_text")]
    pub start: Duration,
    /// The host asked to spawn them.
    pub home: u32,
    /// Supervised groups.
    pub groups: u32,
    /// Children per group.
    pub children: u32,
    /// `one-for-one`, `one-for-all` or `rest-for-one`.
    pub strategy: String,
    /// Children per group (the last ones) that exit with code 1 after `crash_after`.
    pub crash_loop: u32,
    /// How long a crash-looping child runs.
    #[serde(with = "crate::duration_text")]
    pub crash_after: Duration,
    /// The intensity: restarts…
    pub max_restarts: u32,
    /// …within this period.
    #[serde(with = "crate::duration_text")]
    pub period: Duration,
    /// Each child's cpu reservation.
    pub cpu_millicores: u32,
    /// The placement time allowed in the restart bound.
    #[serde(with = "crate::duration_text")]
    pub placement_allowance: Duration,
}

impl Default for SupervisionWorkload {
    fn default() -> Self {
        SupervisionWorkload {
            start: Duration::from_secs(3),
            home: 0,
            groups: 1,
            children: 100,
            strategy: "one-for-one".to_owned(),
            crash_loop: 1,
            crash_after: Duration::from_millis(200),
            max_restarts: 3,
            period: Duration::from_secs(10),
            cpu_millicores: 2000,
            placement_allowance: Duration::from_secs(1),
        }
    }
}

impl SupervisionWorkload {
    /// Checks the section.
    pub fn validate(&self) -> Result<(), String> {
        self.strategy()?;
        if self.children == 0 || self.crash_loop > self.children {
            return Err("supervision: children must be positive and at least crash_loop".into());
        }
        if self.period.is_zero() {
            return Err("supervision.period must be positive".into());
        }
        Ok(())
    }

    fn strategy(&self) -> Result<Strategy, String> {
        match self.strategy.as_str() {
            "one-for-one" => Ok(Strategy::OneForOne),
            "one-for-all" => Ok(Strategy::OneForAll),
            "rest-for-one" => Ok(Strategy::RestForOne),
            other => Err(format!("supervision.strategy: unknown {other:?}")),
        }
    }

    /// The calls that spawn the groups (one per group), at host `home`.
    #[must_use]
    pub fn calls(&self) -> Vec<ApiCall> {
        let strategy = self.strategy().unwrap_or(Strategy::OneForOne);
        (0..self.groups)
            .map(|g| {
                let specs = (0..self.children)
                    .map(|i| {
                        let looping = i >= self.children - self.crash_loop;
                        let run_ms = if looping {
                            self.crash_after.as_millis() as u64
                        } else {
                            u64::from(u32::MAX)
                        };
                        ProcSpec {
                            path: "/bin/child".to_owned(),
                            argv: vec!["child".to_owned()],
                            envp: vec![
                                format!("NEFELE_SIM_SLOT={}", slot(g, i)),
                                format!("NEFELE_SIM_RUN_MS={run_ms}"),
                                format!("NEFELE_SIM_EXIT_CODE={}", u8::from(looping)),
                            ],
                            resources: nefele_api::ResourcePolicy {
                                cpu_millicores: Some(self.cpu_millicores),
                                memory_bytes: Some(1 << 20),
                                ..Default::default()
                            },
                            ..ProcSpec::default()
                        }
                    })
                    .collect();
                ApiCall::SpawnSupervised {
                    tenant: TenantId(1 + g),
                    spawn: SupervisedSpawn::C(specs),
                    supervision: SupervisionSpec {
                        strategy,
                        intensity: Intensity {
                            max_restarts: self.max_restarts,
                            period: self.period,
                        },
                        policies: vec![RestartPolicy::Permanent],
                    },
                }
            })
            .collect()
    }
}

/// How long after its host's agent resumes from a stall an old process of a
/// slot may still run beside its replacement (the agent fences it at its first
/// input; this covers the kill).
pub const STALL_GRACE: Duration = Duration::from_millis(500);

/// Slot numbers of one group are below the next group's by this much.
const GROUP_STRIDE: u64 = 1_000_000;

/// The slot number of child `i` of group `g`.
fn slot(g: u32, i: u32) -> u64 {
    u64::from(g) * GROUP_STRIDE + u64::from(i)
}

/// The supervision figures of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SupervisionFigures {
    /// Children started first.
    pub children: u64,
    /// New lives of a slot after its first.
    pub restarts: u64,
    /// Children given up (the agents' notices; one told again counts once).
    pub give_ups: u64,
    /// Restarts the agents reported.
    pub restarts_reported: u64,
    /// End of a life to the start of the next, median, in simulated ms.
    pub restart_latency_p50_ms: Option<f64>,
    /// The same, 99th percentile.
    pub restart_latency_p99_ms: Option<f64>,
    /// The bound the restarts were checked against, in ms.
    pub restart_bound_ms: f64,
    /// Groups whose supervised spawn was answered with an error: no supervisor
    /// took them on, so their slots owe no restart.
    pub refused_groups: u64,
    /// Restarts placement refused for lack of room (the agents' notices).
    pub restarts_short: u64,
}

/// One slot's lives.
#[derive(Debug, Default)]
struct Slot {
    /// Its processes started so far.
    pids: Vec<Pid>,
    /// Of those, the ones running (by the last reconcile).
    running: BTreeSet<Pid>,
    /// When its last life ended, while none runs.
    down_since: Option<Time>,
    /// While none runs: when the restart bound started (its last life's end, or
    /// a later loss of its supervisor's home).
    due_from: Option<Time>,
    /// Already reported late in this down time.
    late: bool,
    /// When the agent gave it up (its own give-up, or its group's).
    given_up: Option<GiveUp>,
    /// Its supervisor was lost beyond the design (see
    /// [`SupervisionSim::supervisors_lost`]): it owes no restart.
    orphaned: bool,
    /// Its group's supervised spawn was answered with an error (placement's
    /// all-or-nothing may have started and then killed some of its processes): no
    /// supervisor exists, so it owes no restart.
    refused: bool,
    looping: bool,
}

/// Until when the check of slot `n` is suspended: the whole check's suspension,
/// or its group's.
fn suspension(all: Time, groups: &BTreeMap<u64, Time>, n: u64) -> Time {
    groups.get(&(n / GROUP_STRIDE)).map_or(all, |&g| g.max(all))
}

/// A slot's give-up.
#[derive(Clone, Copy, Debug)]
struct GiveUp {
    /// When the agent gave it up.
    at: Time,
    /// When the bound for its running processes to stop started: the give-up, or
    /// the resumption of a host that stalled running one before the kill could
    /// reach it (see [`SupervisionSim::given_up_host_stalled`]).
    stop_from: Time,
}

impl Slot {
    /// Its last running process ended at `now`: the restart bound runs from
    /// then, or from the end of a suspension of the check.
    fn went_down(&mut self, now: Time, suspended_until: Time) {
        self.down_since = Some(now);
        self.due_from = Some(now.max(suspended_until));
    }
}

/// The supervision workload's state in a run.
#[derive(Debug)]
pub struct SupervisionSim {
    workload: SupervisionWorkload,
    bound: Duration,
    slots: BTreeMap<u64, Slot>,
    slot_of: BTreeMap<Pid, u64>,
    latencies_ms: Vec<f64>,
    figures: SupervisionFigures,
    violations: Vec<(&'static str, String)>,
    /// Old processes running beside their slot's replacement while their host's
    /// agent is stalled: (slot, pid, the time by which it must be gone).
    excused: Vec<(u64, Pid, Time)>,
    /// Processes of given-up slots started by an agent just back from a stall (a
    /// spawn it held): (slot, pid, the time by which it must be gone).
    late_spawns: Vec<(u64, Pid, Time)>,
    /// The groups' supervised spawns not answered yet: request id to group.
    spawning: BTreeMap<u64, u32>,
    /// Until then the design promises no restart timing (a loss fault beyond
    /// [`LOSS_TOLERATED`], or a home's quorum lost to a crash): a slot that goes
    /// down before is due a bound after it.
    suspended_until: Time,
    /// Per group of a strategy that stops siblings: until when a host running one
    /// of its children is silenced (see [`SupervisionSim::sibling_host_silenced`]).
    group_suspended_until: BTreeMap<u64, Time>,
}

/// Keeps the `(slot, pid, by)` entries of `list` whose process still runs and may
/// (until `by`); returns one found running past its time, if any.
fn overstayed(
    list: &mut Vec<(u64, Pid, Time)>,
    slots: &BTreeMap<u64, Slot>,
    now: Time,
) -> Option<(u64, Pid, Time)> {
    let mut late = None;
    list.retain(|&(slot, pid, by)| {
        let running = slots.get(&slot).is_some_and(|s| s.running.contains(&pid));
        if running && now > by {
            late = Some((slot, pid, by));
        }
        running && now <= by
    });
    late
}

/// The most uniform loss under which the design promises its timing (issue 15's
/// loss tolerance: 10%). Beyond it a home may not hear its keepers' confirmations
/// for longer than its authority (it then restarts nothing), and a group's spawn
/// may be aborted again and again: restarts are owed only once the loss ends.
pub const LOSS_TOLERATED: f64 = 0.1;

impl SupervisionSim {
    /// The state for `workload`, with restarts bounded by `bound` (detection plus
    /// placement time, computed by the simulator from the agents' configuration).
    #[must_use]
    pub fn new(workload: SupervisionWorkload, detection: Duration) -> Self {
        let bound = detection + workload.placement_allowance;
        let mut slots = BTreeMap::new();
        for g in 0..workload.groups {
            for i in 0..workload.children {
                let looping = i >= workload.children - workload.crash_loop;
                slots.insert(
                    slot(g, i),
                    Slot {
                        looping,
                        ..Slot::default()
                    },
                );
            }
        }
        SupervisionSim {
            figures: SupervisionFigures {
                restart_bound_ms: bound.as_secs_f64() * 1e3,
                ..SupervisionFigures::default()
            },
            workload,
            bound,
            slots,
            slot_of: BTreeMap::new(),
            latencies_ms: Vec::new(),
            violations: Vec::new(),
            excused: Vec::new(),
            late_spawns: Vec::new(),
            spawning: BTreeMap::new(),
            suspended_until: Time::ZERO,
            group_suspended_until: BTreeMap::new(),
        }
    }

    /// When the groups are spawned, and at which host.
    #[must_use]
    pub fn start(&self) -> (Duration, NodeId) {
        (self.workload.start, NodeId(self.workload.home))
    }

    /// The calls that spawn the groups, by group.
    #[must_use]
    pub fn calls(&self) -> Vec<ApiCall> {
        self.workload.calls()
    }

    /// Group `group`'s spawn was issued as request `request`.
    pub fn spawning(&mut self, request: u64, group: u32) {
        self.spawning.insert(request, group);
    }

    /// A reply to a call issued in the run: if it answers a group's spawn with an
    /// error, that group has no supervisor and its slots owe no restart.
    pub fn on_reply(&mut self, request: u64, reply: &ApiReply) {
        let Some(group) = self.spawning.remove(&request) else {
            return;
        };
        if !matches!(reply, ApiReply::SpawnedSupervised(Err(_))) {
            return;
        }
        self.figures.refused_groups += 1;
        for (n, s) in &mut self.slots {
            if n / GROUP_STRIDE == u64::from(group) {
                s.refused = true;
            }
        }
    }

    /// A process of slot `slot` started now; `paused_until` tells until when a
    /// host's agent is (or was last) stalled.
    pub fn started(
        &mut self,
        now: Time,
        pid: Pid,
        slot: u64,
        paused_until: &dyn Fn(NodeId) -> Time,
    ) {
        let Some(s) = self.slots.get_mut(&slot) else {
            return;
        };
        if self.slot_of.insert(pid, slot).is_some() {
            return;
        }
        if s.pids.is_empty() {
            self.figures.children += 1;
        } else {
            self.figures.restarts += 1;
        }
        s.due_from = None;
        if let Some(since) = s.down_since.take() {
            self.latencies_ms
                .push(now.saturating_since(since).as_secs_f64() * 1e3);
        }
        s.late = false;
        s.pids.push(pid);
        let mut twins = Vec::new();
        for &old in &s.running {
            let resumes = paused_until(old.origin());
            if resumes + STALL_GRACE >= now {
                self.excused.push((slot, old, resumes + STALL_GRACE));
            } else {
                twins.push(old.to_string());
            }
        }
        s.running.insert(pid);
        if !twins.is_empty() {
            self.violations.push((
                "supervision.no_twin",
                format!("slot {slot} runs {pid} and {} at once", twins.join(", ")),
            ));
        }
        if s.given_up.is_some() {
            // A spawn sent before the give-up to a host whose agent was stalled
            // starts when the agent resumes and takes it: the stalled-agent
            // exception again. Its host kills it unconfirmed; it must be gone
            // within the grace.
            let resumed = paused_until(pid.origin());
            if resumed + STALL_GRACE >= now {
                self.late_spawns.push((slot, pid, resumed + STALL_GRACE));
            } else {
                self.violations.push((
                    "supervision.loop_stopped",
                    format!("slot {slot} started {pid} after it was given up"),
                ));
            }
        }
    }

    /// Processes may have ended (crashes, faults that end many at once): each
    /// slot's running set follows the simulated hosts.
    pub fn reconcile(&mut self, now: Time, placement: &PlacementSim) {
        for (n, s) in &mut self.slots {
            let before = s.running.len();
            s.running.retain(|p| placement.host_of(*p).is_some());
            if before > 0 && s.running.is_empty() {
                let until = suspension(self.suspended_until, &self.group_suspended_until, *n);
                s.went_down(now, until);
            }
        }
    }

    /// The one process `pid` ended (an exit or a kill): [`Self::reconcile`] for
    /// that process alone, so a busy workload does not walk every slot at each
    /// of its exits.
    pub fn ended(&mut self, now: Time, pid: Pid) {
        let Some(&n) = self.slot_of.get(&pid) else {
            return;
        };
        let until = suspension(self.suspended_until, &self.group_suspended_until, n);
        let Some(s) = self.slots.get_mut(&n) else {
            return;
        };
        if s.running.remove(&pid) && s.running.is_empty() {
            s.went_down(now, until);
        }
    }

    /// The agent of `host` answers no kill until `resume`: it is stalled until
    /// then, or it crashed now (`resume` is now). Under one-for-all and
    /// rest-for-one a restart first stops the running siblings, and a sibling on a
    /// stalled host is stopped only once its agent answers the kill (or its lease
    /// ends), one on a crashed host once its lease ends (the home cannot tell a
    /// crash from a cut): the slots of a group with a child running on `host` that
    /// are down now, or go down before `resume`, are due a bound after it (swarm
    /// seed 102898: a one-for-all restart waited for a sibling's paused host; seed
    /// 410327: a rest-for-one restart, due soon, waited for the leases of the
    /// siblings on a host that restarted).
    pub fn sibling_host_silenced(&mut self, host: NodeId, resume: Time) {
        if self.workload.strategy() == Ok(Strategy::OneForOne) {
            return;
        }
        let groups: BTreeSet<u64> = self
            .slots
            .iter()
            .filter(|(_, s)| s.running.iter().any(|p| p.origin() == host))
            .map(|(n, _)| n / GROUP_STRIDE)
            .collect();
        for &g in &groups {
            let until = self.group_suspended_until.entry(g).or_insert(resume);
            *until = (*until).max(resume);
        }
        for (n, s) in &mut self.slots {
            if groups.contains(&(n / GROUP_STRIDE)) {
                if let Some(t) = s.due_from.as_mut() {
                    *t = (*t).max(resume);
                }
            }
        }
    }

    /// The agent of `host` is stalled from `now` until `resume`: a process of a
    /// given-up slot running there, whose kill may not have reached it yet (the
    /// give-up was less than a bound ago), is due to stop a bound after `resume`
    /// (swarm seed 411126: a rest-for-one give-up's sibling ran on while its host
    /// was paused half a second after the give-up, for 7.2 s).
    pub fn given_up_host_stalled(&mut self, now: Time, host: NodeId, resume: Time) {
        for s in self.slots.values_mut() {
            let runs_there = s.running.iter().any(|p| p.origin() == host);
            if let Some(g) = s.given_up.as_mut().filter(|_| runs_there) {
                if now.saturating_since(g.stop_from) <= self.bound {
                    g.stop_from = g.stop_from.max(resume);
                }
            }
        }
    }

    /// The agent gave up the child whose last process was `pid` at `now`; under
    /// one-for-all and rest-for-one that gives up its whole group (the agent stops
    /// every sibling).
    pub fn gave_up(&mut self, now: Time, pid: Option<Pid>) {
        let Some(slot) = pid.and_then(|p| self.slot_of.get(&p)).copied() else {
            self.figures.give_ups += 1;
            return;
        };
        // A give-up told again (by a taker whose copy held it) counts once.
        if self.slots.get(&slot).is_some_and(|s| s.given_up.is_some()) {
            return;
        }
        self.figures.give_ups += 1;
        let tied = self.workload.strategy() != Ok(Strategy::OneForOne);
        let group = slot / GROUP_STRIDE;
        for (n, s) in &mut self.slots {
            let in_group = *n == slot || (tied && n / GROUP_STRIDE == group);
            if in_group && s.given_up.is_none() {
                s.given_up = Some(GiveUp {
                    at: now,
                    stop_from: now,
                });
            }
        }
    }

    /// The agent of `host`, stalled still, now stalls until `resume` (a pause within
    /// a pause): its old processes excused beside their replacements may run until
    /// that resumption and the grace, since the agent cannot fence them before.
    /// (Before, the excuse kept the first pause's end, and a process the agent
    /// fenced on time after the second was reported a twin: swarm seed 102698.)
    pub fn stall_extended(&mut self, host: NodeId, resume: Time) {
        for (_, pid, by) in &mut self.excused {
            if pid.origin() == host {
                *by = (*by).max(resume + STALL_GRACE);
            }
        }
    }

    /// The supervisor's home was lost (its host crashed) or stalls until `from`:
    /// the slots down now are due a bound after `from` (see the module doc).
    pub fn home_lost(&mut self, from: Time) {
        self.due_after(from);
    }

    /// The slots down now are due a bound after `from` (or later).
    fn due_after(&mut self, from: Time) {
        for s in self.slots.values_mut() {
            if let Some(t) = s.due_from.as_mut() {
                *t = (*t).max(from);
            }
        }
    }

    /// A loss fault drops `loss` of the messages until `until`: beyond
    /// [`LOSS_TOLERATED`], the slots down now or going down before then are due a
    /// bound after it.
    pub fn lossy(&mut self, loss: f64, until: Time) {
        if loss > LOSS_TOLERATED {
            self.suspend_until(until);
        }
    }

    /// A crash left a live home with less than half of the rest of its level-0
    /// group on its side until `until` (when the crashed hosts boot again): the
    /// slots down now or going down before then are due a bound after it.
    pub fn quorum_lost(&mut self, until: Time) {
        self.suspend_until(until);
    }

    fn suspend_until(&mut self, until: Time) {
        self.suspended_until = self.suspended_until.max(until);
        self.due_after(until);
    }

    /// A crash loses beyond the design the supervisors of the children `lost`
    /// (see `Simulation::note_supervision_lost`), except those whose record some
    /// agent that lives on still runs or keeps (`kept`, their children): the slots
    /// of the groups lost owe no restart.
    pub fn supervisors_lost(&mut self, lost: &[Pid], kept: &BTreeSet<Pid>) {
        let group_of = |p: &Pid| self.slot_of.get(p).map(|slot| slot / GROUP_STRIDE);
        let kept: BTreeSet<u64> = kept.iter().filter_map(group_of).collect();
        let groups: BTreeSet<u64> = lost
            .iter()
            .filter_map(group_of)
            .filter(|g| !kept.contains(g))
            .collect();
        for (n, s) in &mut self.slots {
            if groups.contains(&(n / GROUP_STRIDE)) {
                s.orphaned = true;
            }
        }
    }

    /// Placement refused at `now` to restart the child whose last process was
    /// `pid`, for lack of room: its restart bound counts again from now.
    pub fn restart_short(&mut self, now: Time, pid: Option<Pid>) {
        self.figures.restarts_short += 1;
        let slot = pid.and_then(|p| self.slot_of.get(&p));
        if let Some(due) = slot
            .and_then(|n| self.slots.get_mut(n))
            .and_then(|s| s.due_from.as_mut())
        {
            *due = (*due).max(now);
        }
    }

    /// The agent reported a restart.
    pub fn restarted(&mut self) {
        self.figures.restarts_reported += 1;
    }

    /// The invariants now.
    pub fn check(
        &mut self,
        now: Time,
        placement: &PlacementSim,
    ) -> Vec<(&'static str, Result<(), String>)> {
        self.reconcile(now, placement);
        let mut out: Vec<(&'static str, Result<(), String>)> = self
            .violations
            .drain(..)
            .map(|(name, e)| (name, Err(e)))
            .collect();
        let twin = match overstayed(&mut self.excused, &self.slots, now) {
            Some((slot, pid, by)) => Err(format!(
                "slot {slot}: {pid} still runs beside its replacement at {now}, \
                 past its stalled host's resumption and the grace ({by})"
            )),
            None => Ok(()),
        };
        let mut restarted = Ok(());
        let mut stopped = match overstayed(&mut self.late_spawns, &self.slots, now) {
            Some((slot, pid, by)) => Err(format!(
                "slot {slot}: {pid}, started by its stalled host after the give-up, \
                 still runs at {now}, past the host's resumption and the grace ({by})"
            )),
            None => Ok(()),
        };
        let loop_bound = (self.workload.crash_after + self.bound)
            * (self.workload.max_restarts + 2)
            + self.bound;
        for (slot, s) in &mut self.slots {
            if let Some(GiveUp { at, stop_from }) = s.given_up {
                // Its siblings get the time of a kill to stop.
                if !s.running.is_empty() && now.saturating_since(stop_from) > self.bound {
                    stopped = Err(format!("slot {slot} given up at {at} but still running"));
                }
                continue;
            }
            let (Some(since), Some(due)) = (s.down_since, s.due_from) else {
                continue;
            };
            if s.orphaned || s.refused {
                continue;
            }
            if s.looping {
                // From the start, or from the end of a suspension of the check
                // (a home without its quorum tells no give-up either).
                let first = (Time::ZERO + self.workload.start).max(self.suspended_until);
                if now.saturating_since(first) > loop_bound && !s.late {
                    s.late = true;
                    stopped = Err(format!(
                        "crash-looping slot {slot} not given up {:?} after the start",
                        now.saturating_since(first)
                    ));
                }
            } else if now.saturating_since(due) > self.bound && !s.late {
                s.late = true;
                restarted = Err(format!(
                    "slot {slot} down since {since}, not running again within {:?}",
                    self.bound
                ));
            }
        }
        out.push(("supervision.restarted", restarted));
        out.push(("supervision.loop_stopped", stopped));
        out.push(("supervision.no_twin", twin));
        out
    }

    /// The figures so far.
    #[must_use]
    pub fn figures(&self) -> SupervisionFigures {
        let mut f = self.figures.clone();
        f.restart_latency_p50_ms = crate::report::quantile(&self.latencies_ms, 0.5);
        f.restart_latency_p99_ms = crate::report::quantile(&self.latencies_ms, 0.99);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nefele_api::SpawnError;
    use nefele_core::host::{ExitStatus, HostCommand, HostEvent};
    use nefele_core::Incarnation;

    fn small() -> SupervisionWorkload {
        SupervisionWorkload {
            children: 2,
            crash_loop: 1,
            ..SupervisionWorkload::default()
        }
    }

    fn pid(n: u64) -> Pid {
        Pid::new(NodeId(0), Incarnation(1), n)
    }

    /// Starts `pid` for real on host 0 of `placement` and tells `sim`.
    fn start(
        sim: &mut SupervisionSim,
        placement: &mut PlacementSim,
        now: Time,
        pid: Pid,
        slot: u64,
    ) {
        let spec = ProcSpec {
            envp: vec![format!("NEFELE_SIM_RUN_MS={}", u32::MAX)],
            ..ProcSpec::default()
        };
        let tenant = TenantId(1);
        let started = placement.execute(now, NodeId(0), HostCommand::Start { pid, tenant, spec });
        assert!(started.contains(&crate::placement_sim::ProcAction::Report(
            HostEvent::Started { pid }
        )));
        sim.started(now, pid, slot, &|_| Time::ZERO);
    }

    /// A process of `slot` starts on host 0 at `at` and is lost with the host at once.
    fn lost_at_start(
        sim: &mut SupervisionSim,
        placement: &mut PlacementSim,
        at: Time,
        pid: Pid,
        slot: u64,
    ) {
        start(sim, placement, at, pid, slot);
        host_0_lost(sim, placement, at);
    }

    /// The checks of the [`small`] workload (a 2 s detection), with `pid(1)` of
    /// `slot` started on host 0 at `at`.
    fn started_at(at: Time, slot: u64) -> (SupervisionSim, PlacementSim) {
        let mut sim = SupervisionSim::new(small(), Duration::from_secs(2));
        let mut placement = PlacementSim::new(1);
        start(&mut sim, &mut placement, at, pid(1), slot);
        (sim, placement)
    }

    /// Host 0 crashes, seen at `at`: its processes end.
    fn host_0_lost(sim: &mut SupervisionSim, placement: &mut PlacementSim, at: Time) {
        placement.crash(NodeId(0));
        sim.reconcile(at, placement);
    }

    fn failed(results: &[(&'static str, Result<(), String>)], name: &str) -> bool {
        results.iter().any(|(n, r)| *n == name && r.is_err())
    }

    /// Asserts that `name` holds at `held` and fails at `late`: its bound ends
    /// between the two.
    fn assert_due_between(
        sim: &mut SupervisionSim,
        placement: &PlacementSim,
        name: &str,
        (held, late): (Time, Time),
    ) {
        let within = sim.check(held, placement);
        assert!(!failed(&within, name), "{within:?}");
        let past = sim.check(late, placement);
        assert!(failed(&past, name), "{past:?}");
    }

    /// Swarm seed 102698: a pause of the old process's host began within an
    /// earlier one; the old process may run until the later resumption and the
    /// grace, not the earlier one's.
    #[test]
    fn a_twin_on_a_host_stalled_again_before_it_resumed_is_excused_until_the_later_resumption() {
        let slot = slot(0, 0);
        let (mut sim, placement) = started_at(Time::from_secs(3), slot);
        let replacement = Pid::new(NodeId(1), Incarnation(1), 1);
        let stalled_until = |n: NodeId| {
            if n == NodeId(0) {
                Time::from_secs(8)
            } else {
                Time::ZERO
            }
        };
        sim.started(Time::from_secs(5), replacement, slot, &stalled_until);
        sim.stall_extended(NodeId(0), Time::from_secs(10));
        for (at, twin) in [(9_000, false), (10_400, false), (10_600, true)] {
            let results = sim.check(Time::from_millis(at), &placement);
            assert_eq!(
                failed(&results, "supervision.no_twin"),
                twin,
                "{at} ms: {results:?}"
            );
        }
    }

    #[test]
    fn a_slot_down_past_the_bound_fails_once() {
        let (mut sim, mut placement) = started_at(Time::from_secs(3), slot(0, 0));
        host_0_lost(&mut sim, &mut placement, Time::from_secs(4));
        let within = sim.check(Time::from_secs(6), &placement);
        assert!(!failed(&within, "supervision.restarted"));
        let late = sim.check(Time::from_millis(7100), &placement);
        assert!(failed(&late, "supervision.restarted"), "{late:?}");
        let again = sim.check(Time::from_secs(8), &placement);
        assert!(
            !failed(&again, "supervision.restarted"),
            "counted once per down time"
        );
        start(
            &mut sim,
            &mut placement,
            Time::from_secs(9),
            pid(2),
            slot(0, 0),
        );
        assert_eq!(sim.figures().restarts, 1);
        assert_eq!(sim.figures().restart_latency_p50_ms, Some(5000.0));
    }

    /// A slot down when its supervisor's home is lost is due a bound after that
    /// loss: the old home's restart died with it (before, the check counted from
    /// the slot's end only and failed runs where the service was on time).
    #[test]
    fn a_home_lost_while_a_slot_is_down_restarts_its_bound() {
        let (mut sim, mut placement) = started_at(Time::from_secs(3), slot(0, 0));
        host_0_lost(&mut sim, &mut placement, Time::from_secs(4));
        sim.home_lost(Time::from_secs(5));
        let times = (Time::from_millis(7100), Time::from_millis(8100));
        assert_due_between(&mut sim, &placement, "supervision.restarted", times);
    }

    /// Swarm seed 92649: a rack's crash silenced for 7.6 s both other members of
    /// a live home's level-0 group (after a partition it had joined them, its
    /// keepers, in that rack). Without its quorum the home restarts nothing until they
    /// are back (the design's price): a slot that goes down before they boot is
    /// due a bound after they do.
    #[test]
    fn a_slot_down_while_its_home_has_no_quorum_is_due_after_the_quorum_is_back() {
        let (mut sim, mut placement) = started_at(Time::from_secs(1), slot(0, 0));
        let back = Time::from_secs(10);
        sim.quorum_lost(back);
        // Its host crashes while the home is without its quorum.
        host_0_lost(&mut sim, &mut placement, Time::from_secs(2));
        let within = sim.check(back + sim.bound, &placement);
        assert!(!failed(&within, "supervision.restarted"), "{within:?}");
        let late = sim.check(back + sim.bound + Duration::from_millis(1), &placement);
        assert!(failed(&late, "supervision.restarted"), "{late:?}");
    }

    /// Swarm seed 10324: an 82-child one-for-all group went down at 31.6 s inside a
    /// 50% loss from 30.3 s to 38.1 s, beyond the loss the design tolerates. A slot
    /// that goes down while the loss lasts is due a bound after it ends; under a
    /// tolerated loss, a bound after it went down.
    #[test]
    fn a_slot_down_under_loss_beyond_the_tolerance_is_due_after_the_loss() {
        for (loss, due_ms) in [(0.5, 8000), (LOSS_TOLERATED, 5000)] {
            let (mut sim, mut placement) = started_at(Time::from_secs(1), slot(0, 0));
            sim.lossy(loss, Time::from_secs(5));
            host_0_lost(&mut sim, &mut placement, Time::from_secs(2));
            let within = sim.check(Time::from_millis(due_ms - 100), &placement);
            assert!(
                !failed(&within, "supervision.restarted"),
                "{loss}: {within:?}"
            );
            let late = sim.check(Time::from_millis(due_ms + 100), &placement);
            assert!(failed(&late, "supervision.restarted"), "{loss}: {late:?}");
        }
    }

    /// A group whose supervised spawn failed has no supervisor: the processes
    /// that placement's all-or-nothing started and then killed owe no restart
    /// (before, swarm seed 194 failed `supervision.restarted` on such a slot).
    #[test]
    fn a_group_whose_spawn_failed_owes_no_restart() {
        let mut sim = SupervisionSim::new(small(), Duration::from_secs(2));
        let mut placement = PlacementSim::new(1);
        sim.spawning(7, 0);
        lost_at_start(
            &mut sim,
            &mut placement,
            Time::from_secs(3),
            pid(1),
            slot(0, 0),
        );
        sim.on_reply(8, &ApiReply::SpawnedSupervised(Err(SpawnError::Aborted)));
        let other = sim.check(Time::from_millis(6500), &placement);
        assert!(
            failed(&other, "supervision.restarted"),
            "another call's reply"
        );
        sim.on_reply(7, &ApiReply::SpawnedSupervised(Err(SpawnError::Aborted)));
        lost_at_start(
            &mut sim,
            &mut placement,
            Time::from_secs(7),
            pid(2),
            slot(0, 0),
        );
        let late = sim.check(Time::from_millis(10_500), &placement);
        assert!(!failed(&late, "supervision.restarted"), "{late:?}");
        assert_eq!(sim.figures().refused_groups, 1);
    }

    /// A restart placement refused for lack of room is not late: its bound counts
    /// again from each refusal, and runs out when the refusals stop (before, no
    /// refusal was seen, and a run cut to too few hosts failed
    /// `supervision.restarted` with the service doing all it could).
    #[test]
    fn a_restart_refused_for_lack_of_room_restarts_its_bound() {
        let mut sim = SupervisionSim::new(small(), Duration::from_secs(2));
        let mut placement = PlacementSim::new(1);
        let t = Time::from_millis;
        lost_at_start(&mut sim, &mut placement, t(3_000), pid(1), slot(0, 0));
        sim.restart_short(t(5_000), Some(pid(9)));
        sim.restart_short(t(5_000), Some(pid(1)));
        let within = sim.check(t(7_100), &placement);
        assert!(!failed(&within, "supervision.restarted"), "{within:?}");
        sim.restart_short(t(7_500), Some(pid(1)));
        let within = sim.check(t(10_000), &placement);
        assert!(!failed(&within, "supervision.restarted"), "{within:?}");
        let late = sim.check(t(10_600), &placement);
        assert!(failed(&late, "supervision.restarted"), "{late:?}");
        assert_eq!(sim.figures().restarts_short, 3);
    }

    #[test]
    fn two_lives_of_a_slot_at_once_and_a_given_up_slot_running_fail() {
        let mut sim = SupervisionSim::new(small(), Duration::from_secs(2));
        let mut placement = PlacementSim::new(1);
        let t = Time::from_secs(3);
        start(&mut sim, &mut placement, t, pid(1), slot(0, 0));
        start(&mut sim, &mut placement, t, pid(2), slot(0, 0));
        assert!(failed(&sim.check(t, &placement), "supervision.no_twin"));
        start(&mut sim, &mut placement, t, pid(3), slot(0, 1));
        sim.gave_up(t, Some(pid(3)));
        // Still running when given up: it has the time of a kill to stop.
        assert!(!failed(
            &sim.check(t, &placement),
            "supervision.loop_stopped"
        ));
        let later = Time::from_secs(7);
        assert!(failed(
            &sim.check(later, &placement),
            "supervision.loop_stopped"
        ));
        // Started again after the give-up.
        start(&mut sim, &mut placement, later, pid(4), slot(0, 1));
        assert!(failed(
            &sim.check(later, &placement),
            "supervision.loop_stopped"
        ));
    }

    /// Swarm seed 410327: under rest-for-one a slot down is restarted only once
    /// its running siblings stopped, and a sibling whose host crashes counts as
    /// stopped only when its lease ends: the slot is due a bound after the crash.
    #[test]
    fn a_tied_slot_down_is_due_a_bound_after_its_siblings_host_crashes() {
        let workload = SupervisionWorkload {
            strategy: "rest-for-one".to_owned(),
            ..small()
        };
        let mut sim = SupervisionSim::new(workload, Duration::from_secs(2));
        let mut placement = PlacementSim::new(1);
        let t = Time::from_secs(3);
        start(&mut sim, &mut placement, t, pid(1), slot(0, 0));
        start(&mut sim, &mut placement, t, pid(2), slot(0, 1));
        placement.end(t, NodeId(0), pid(1), ExitStatus::Signaled(9));
        sim.reconcile(t, &placement);
        let crash = Time::from_secs(5);
        sim.sibling_host_silenced(NodeId(0), crash);
        host_0_lost(&mut sim, &mut placement, crash);
        // The bound is 3 s (2 s of detection and 1 s of placement).
        let times = (Time::from_millis(7_900), Time::from_millis(8_100));
        assert_due_between(&mut sim, &placement, "supervision.restarted", times);
    }

    /// Swarm seed 411126: a given-up slot's process whose host stalls before the
    /// kill reaches it has the time of a kill after the host resumes, and no more.
    #[test]
    fn a_given_up_slot_running_on_a_host_stalled_before_its_kill_stops_after_it_resumes() {
        let t = Time::from_secs(3);
        let (mut sim, placement) = started_at(t, slot(0, 1));
        sim.gave_up(t, Some(pid(1)));
        let resume = Time::from_secs(10);
        sim.given_up_host_stalled(Time::from_millis(3_500), NodeId(0), resume);
        let stalled = sim.check(Time::from_millis(9_900), &placement);
        assert!(!failed(&stalled, "supervision.loop_stopped"), "{stalled:?}");
        // The bound is 3 s (2 s of detection and 1 s of placement).
        let times = (Time::from_millis(12_900), Time::from_millis(13_100));
        assert_due_between(&mut sim, &placement, "supervision.loop_stopped", times);
        // A stall that starts once the kill had its time excuses nothing.
        let (mut sim, placement) = started_at(t, slot(0, 1));
        sim.gave_up(t, Some(pid(1)));
        sim.given_up_host_stalled(Time::from_millis(6_100), NodeId(0), resume);
        let late = sim.check(Time::from_millis(6_200), &placement);
        assert!(failed(&late, "supervision.loop_stopped"), "{late:?}");
    }

    #[test]
    fn a_looping_slot_never_given_up_fails() {
        let (mut sim, mut placement) = started_at(Time::from_secs(3), slot(0, 1));
        host_0_lost(&mut sim, &mut placement, Time::from_secs(4));
        assert!(!failed(
            &sim.check(Time::from_secs(5), &placement),
            "supervision.loop_stopped"
        ));
        let late = sim.check(Time::from_secs(60), &placement);
        assert!(failed(&late, "supervision.loop_stopped"), "{late:?}");
    }

    /// Swarm seed 840939: a home whose one other base member crashed for good
    /// has no quorum, so it tells no give-up (nor restarts anything), as the
    /// design states; a looping slot is then due its give-up only a loop's bound
    /// after the quorum is back. Before, the loop's bound ran from the start
    /// whatever the quorum.
    #[test]
    fn a_looping_slot_is_not_due_its_give_up_while_its_home_has_no_quorum() {
        let (mut sim, mut placement) = started_at(Time::from_secs(3), slot(0, 1));
        host_0_lost(&mut sim, &mut placement, Time::from_secs(4));
        sim.quorum_lost(Time::from_secs(100));
        let waiting = sim.check(Time::from_secs(60), &placement);
        assert!(!failed(&waiting, "supervision.loop_stopped"), "{waiting:?}");
        let late = sim.check(Time::from_secs(160), &placement);
        assert!(failed(&late, "supervision.loop_stopped"), "{late:?}");
    }
}
