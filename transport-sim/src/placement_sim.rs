//! Simulated processes and clients for placement: hosts that carry out the
//! agents' `HostCommand`s, clients that issue API calls and time the replies,
//! the placement figures of the report, and the placement invariants.
//!
//! A simulated process runs for its real run time (from its spec's
//! `NEFELE_SIM_RUN_MS`, else one second) and then exits with code 0 (or
//! `NEFELE_SIM_EXIT_CODE`) and its
//! real usage; a kill ends it at once. A crashed host's processes vanish with
//! it (the agent's next life reports them `lost`).
//!
//! Invariants checked here, outside the code under test:
//! - `placement.pid_unique`: no pid is started on two hosts;
//! - `placement.capacity`: on every host, committed plus reserved ≤ capacity,
//!   and every host's own accounting is consistent;
//! - `placement.lease_leak`: no reservation outlives its lease (by more than a
//!   check interval);
//! - `placement.all_or_nothing`: a request answered with pids started exactly that
//!   many processes; a failed request has no process left running once its
//!   hosts' confirm timeouts have passed, on every host that could hear its
//!   requester all that time. A host that cannot (cut off from the requester in
//!   either direction, stalled, or with its requester down) keeps the processes
//!   until it can learn the outcome: no protocol tells a host what it cannot hear
//!   (the 2PC blocking problem), so from the grace on, the check waits for each
//!   such host to have been connected to the requester for `settle` (its next
//!   query and the answer) and then requires its processes gone;
//! - `placement.answered`: a workload spawn is answered within `Grace::answer` of
//!   its call, counted from the last time its requester's agent resumed from a
//!   stall or had its clock set (its timers run on that clock). A requester that
//!   crashed (a new life booted after the call) owes nothing: the call died with it.

use crate::workload::{env_number, Generated};
use nefele_core::host::{ExitStatus, HostCommand, HostEvent, Usage};
use nefele_core::placement::api::{Resource, SpawnError};
use nefele_core::{Agent, ApiReply, Incarnation, NodeId, Pid, Time};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// One simulated process.
#[derive(Clone, Debug)]
struct SimProc {
    started: Time,
    req: Option<u64>,
    cpu_millicores: u32,
    memory_bytes: u64,
    /// The code it exits with at the end of its run (`NEFELE_SIM_EXIT_CODE`, else 0).
    exit_code: i32,
}

/// What the simulator must schedule after a host command.
#[derive(Clone, Debug, PartialEq)]
pub enum ProcAction {
    /// The process `pid` exits at this time (if still running then).
    ExitAt(Time, Pid),
    /// Report this event to the host's agent now.
    Report(HostEvent),
}

/// A request issued by a simulated client, until its reply.
#[derive(Clone, Debug)]
struct Issued {
    at: Time,
    /// The agent the call went to (`None`: no agent was up to take it).
    requester: Option<NodeId>,
    /// Already reported as unanswered.
    flagged: bool,
    processes: u32,
    gang: bool,
    workload: bool,
}

/// Placement figures of one placer (Nefele or a baseline).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PlacementFigures {
    /// Spawn requests issued.
    pub requests: u64,
    /// Requests answered with every pid.
    pub placed_requests: u64,
    /// Requests answered with an error.
    pub rejected_requests: u64,
    /// Rejections by cause (`short_cpu`, `short_memory`, `short_accelerators`,
    /// `short_hosts`, `aborted`, `invalid`).
    pub rejections: BTreeMap<&'static str, u64>,
    /// Requests never answered by the end of the run.
    pub unanswered_requests: u64,
    /// Failed requests whose processes outlived the grace on a host cut off from the
    /// requester (they must end once it is connected again).
    pub in_doubt_requests: u64,
    /// Processes placed.
    pub placed_processes: u64,
    /// Gang requests issued (`n_spawn`/`c_spawn` of two or more).
    pub gang_requests: u64,
    /// Gang requests placed.
    pub placed_gang_requests: u64,
    /// Committed cpu and memory over capacity, averaged over the checks while the
    /// workload ran.
    pub mean_utilization: Utilization,
    /// The highest committed cpu (and the memory at that check) over capacity.
    pub peak_utilization: Utilization,
    /// Median time from request to reply, in simulated ms.
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile of the same.
    pub latency_p99_ms: Option<f64>,
    /// Median time from request to reply of the placed requests only, in simulated ms.
    pub placed_latency_p50_ms: Option<f64>,
    /// 99th percentile of the same: the placement latency.
    pub placed_latency_p99_ms: Option<f64>,
    /// 99th percentile of the time from request to error reply of rejected requests
    /// (how fast a request that cannot fit fails).
    pub rejected_latency_p99_ms: Option<f64>,
    /// Placement and namespace messages per request.
    pub msgs_per_request: f64,
    /// Share of placed requests whose processes all landed in the requester's group.
    pub local_fraction: f64,
}

/// How long the processes of a failed request may outlive its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grace {
    /// After the reply, on a host that heard the requester all along (the hosts'
    /// lease, create and confirm timeouts); also how long a lease may outlive its expiry.
    pub after_reply: Duration,
    /// After a host cut off from the requester is connected again (its next query and
    /// the answer).
    pub settle: Duration,
    /// How long a spawn may stay unanswered while its requester runs (the
    /// requester's own timeouts, all of which end in an answer).
    pub answer: Duration,
}

/// What the checks need to know of the hosts' agents now.
pub struct Liveness<'a> {
    /// Whether agents `a` and `b` hear each other now.
    pub connected: &'a dyn Fn(NodeId, NodeId) -> bool,
    /// Since when `node`'s agent has run without a crash, stall or clock change
    /// (`None`: down or stalled now).
    pub steady_since: &'a dyn Fn(NodeId) -> Option<Time>,
}

/// Time-averaged utilisation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Utilization {
    /// Committed cpu over total cpu of live hosts.
    pub cpu: f64,
    /// Committed memory over total memory of live hosts.
    pub memory: f64,
}

/// Where a pid was started.
#[derive(Clone, Copy)]
struct PidHost {
    node: NodeId,
    /// Not exited, killed or lost with its host.
    running: bool,
}

/// Processes, clients and figures of a run.
#[derive(Default)]
pub struct PlacementSim {
    procs: Vec<BTreeMap<Pid, SimProc>>,
    /// The host each pid was started on, and whether it runs there still (looked up
    /// per message, never iterated). Invariant: `running` iff the pid is in `procs`.
    pid_hosts: rustc_hash::FxHashMap<Pid, PidHost>,
    started_by_req: BTreeMap<u64, u32>,
    /// (request, pid) of every running process of a request: one set rather than a
    /// set per request, which cost a B-tree node (about 200 bytes) per running request.
    running_by_req: BTreeSet<(u64, Pid)>,
    issued: BTreeMap<u64, Issued>,
    /// Failed requests in reply order: (reply time, request, requester).
    failed: VecDeque<(Time, u64, NodeId)>,
    /// Failed requests past their grace that still had processes then, on hosts that
    /// could not hear the requester: for each such host, since when it has been
    /// connected to the requester without a break (`None`: not connected now).
    in_doubt: BTreeMap<u64, (NodeId, BTreeMap<NodeId, Option<Time>>)>,
    next_request: u64,
    /// Request-to-reply times of placed and of rejected requests.
    placed_ns: Vec<u64>,
    rejected_ns: Vec<u64>,
    figures: PlacementFigures,
    local_placed: u64,
    pub(crate) messages: u64,
    util_samples: Vec<(f64, f64)>,
    violations: Vec<(&'static str, String)>,
    replies: Vec<(u64, Time, ApiReply)>,
}

impl PlacementSim {
    /// State for `hosts` hosts.
    #[must_use]
    pub fn new(hosts: usize) -> Self {
        PlacementSim {
            procs: vec![BTreeMap::new(); hosts],
            ..PlacementSim::default()
        }
    }

    /// A new request id for a client call to `requester`'s agent; `generated`
    /// describes a workload request.
    pub fn issue(
        &mut self,
        now: Time,
        requester: Option<NodeId>,
        generated: Option<&Generated>,
    ) -> u64 {
        self.next_request += 1;
        let id = self.next_request;
        let (processes, gang, workload) = match generated {
            Some(g) => (g.processes, g.gang, true),
            None => (0, false, false),
        };
        if workload {
            self.figures.requests += 1;
            self.figures.gang_requests += u64::from(gang);
        }
        self.issued.insert(
            id,
            Issued {
                at: now,
                requester,
                flagged: false,
                processes,
                gang,
                workload,
            },
        );
        id
    }

    /// The id the next [`PlacementSim::issue`] will return.
    #[must_use]
    pub fn next_request_id(&self) -> u64 {
        self.next_request + 1
    }

    /// Carries out `command` on `node`'s host.
    pub fn execute(&mut self, now: Time, node: NodeId, command: HostCommand) -> Vec<ProcAction> {
        let host = &mut self.procs[node.0 as usize];
        match command {
            HostCommand::Start { pid, spec, .. } => {
                if host.contains_key(&pid) {
                    return Vec::new(); // Idempotent.
                }
                let started = PidHost {
                    node,
                    running: true,
                };
                if let Some(other) = self.pid_hosts.insert(pid, started) {
                    self.violations.push((
                        "placement.pid_unique",
                        format!("pid {pid} started on {node}, already on {}", other.node),
                    ));
                }
                let req = env_number(&spec.envp, "REQ");
                let run_ms = env_number(&spec.envp, "RUN_MS").unwrap_or(1000);
                let p = SimProc {
                    started: now,
                    req,
                    cpu_millicores: env_number(&spec.envp, "CPU_MC")
                        .and_then(|c| u32::try_from(c).ok())
                        .unwrap_or(0),
                    memory_bytes: env_number(&spec.envp, "MEM").unwrap_or(0),
                    exit_code: env_number(&spec.envp, "EXIT_CODE")
                        .and_then(|c| i32::try_from(c).ok())
                        .unwrap_or(0),
                };
                host.insert(pid, p);
                if let Some(r) = req {
                    *self.started_by_req.entry(r).or_default() += 1;
                    self.running_by_req.insert((r, pid));
                }
                vec![
                    ProcAction::Report(HostEvent::Started { pid }),
                    ProcAction::ExitAt(now + Duration::from_millis(run_ms), pid),
                ]
            }
            HostCommand::Kill { pid, .. } => self
                .end(now, node, pid, ExitStatus::Signaled(9))
                .map(|e| vec![ProcAction::Report(e)])
                .unwrap_or_default(),
        }
    }

    /// Ends `pid` on `node` with `status`, if it runs there; the event for the agent.
    pub fn end(
        &mut self,
        now: Time,
        node: NodeId,
        pid: Pid,
        status: ExitStatus,
    ) -> Option<HostEvent> {
        let p = self.procs[node.0 as usize].remove(&pid)?;
        self.stopped(pid, p.req);
        let wall = now.saturating_since(p.started);
        Some(HostEvent::Exited {
            pid,
            status,
            usage: Usage {
                cpu_time: wall.mul_f64(f64::from(p.cpu_millicores) / 1000.0),
                peak_memory_bytes: p.memory_bytes,
                wall_time: wall,
            },
        })
    }

    /// How `pid` on `node` exits at the end of its run.
    #[must_use]
    pub fn exit_status(&self, node: NodeId, pid: Pid) -> ExitStatus {
        let code = self.procs[node.0 as usize]
            .get(&pid)
            .map_or(0, |p| p.exit_code);
        ExitStatus::Code(code)
    }

    /// `node` crashed: its processes vanish, and the calls its agent held die with it.
    pub fn crash(&mut self, node: NodeId) {
        for (pid, p) in std::mem::take(&mut self.procs[node.0 as usize]) {
            self.stopped(pid, p.req);
        }
        for issued in self.issued.values_mut() {
            if issued.requester == Some(node) {
                issued.requester = None;
            }
        }
    }

    /// `pid` of request `req` no longer runs.
    fn stopped(&mut self, pid: Pid, req: Option<u64>) {
        if let Some(host) = self.pid_hosts.get_mut(&pid) {
            host.running = false;
        }
        if let Some(r) = req {
            self.running_by_req.remove(&(r, pid));
        }
    }

    /// The running processes of request `req`.
    fn running_pids(&self, req: u64) -> impl Iterator<Item = Pid> + '_ {
        let first = Pid::new(NodeId(0), Incarnation(0), 0);
        let last = Pid::new(NodeId(u32::MAX), Incarnation(u32::MAX), u64::MAX);
        self.running_by_req
            .range((req, first)..=(req, last))
            .map(|&(_, pid)| pid)
    }

    /// A reply from the agent of `requester` reached the client of `request`.
    pub fn on_reply(&mut self, now: Time, requester: NodeId, request: u64, reply: ApiReply) {
        let Some(issued) = self.issued.remove(&request) else {
            return;
        };
        if !issued.workload {
            self.replies.push((request, now, reply));
            return;
        }
        let latency = u64::try_from(now.saturating_since(issued.at).as_nanos()).unwrap_or(u64::MAX);
        match reply.spawn_result() {
            Some(Ok(pids)) => {
                self.placed_ns.push(latency);
                self.figures.placed_requests += 1;
                self.figures.placed_gang_requests += u64::from(issued.gang);
                self.figures.placed_processes += pids.len() as u64;
                let started = self.started_by_req.get(&request).copied().unwrap_or(0);
                if pids.len() as u32 != issued.processes || started != issued.processes {
                    self.violations.push((
                        "placement.all_or_nothing",
                        format!(
                            "request {request}: {} pids and {started} started for {} processes",
                            pids.len(),
                            issued.processes
                        ),
                    ));
                }
            }
            Some(Err(e)) => {
                self.rejected_ns.push(latency);
                self.figures.rejected_requests += 1;
                *self.figures.rejections.entry(cause(&e)).or_default() += 1;
                self.failed.push_back((now, request, requester));
            }
            None => {}
        }
    }

    /// A spawn request was placed, all in the requester's group or not.
    pub fn on_placed(&mut self, local: bool) {
        self.local_placed += u64::from(local);
    }

    /// Replies to calls that were not workload requests (tests read them).
    pub fn take_replies(&mut self) -> Vec<(u64, Time, ApiReply)> {
        std::mem::take(&mut self.replies)
    }

    /// The host `pid` runs on now, if it runs.
    #[must_use]
    pub fn host_of(&self, pid: Pid) -> Option<NodeId> {
        let host = self.pid_hosts.get(&pid)?;
        debug_assert_eq!(
            host.running,
            self.procs[host.node.0 as usize].contains_key(&pid)
        );
        host.running.then_some(host.node)
    }

    /// Processes running now, per host.
    #[must_use]
    pub fn running(&self, node: NodeId) -> usize {
        self.procs.get(node.0 as usize).map_or(0, BTreeMap::len)
    }

    /// Processes running now, of request `req`.
    #[must_use]
    pub fn running_of(&self, req: u64) -> u32 {
        self.running_pids(req).count() as u32
    }

    /// The hosts running processes of `req` now.
    fn hosts_of(&self, req: u64) -> BTreeSet<NodeId> {
        self.running_pids(req)
            .filter_map(|pid| self.pid_hosts.get(&pid).map(|h| h.node))
            .collect()
    }

    /// `placement.all_or_nothing` for failed requests (see the module docs): `timing`
    /// gives the grace after the reply and the settle time after connection;
    /// `connected(host, requester)` says whether they hear each other now.
    fn check_failed(
        &mut self,
        now: Time,
        timing: Grace,
        connected: &dyn Fn(NodeId, NodeId) -> bool,
    ) -> Result<(), String> {
        while let Some(&(at, req, requester)) = self.failed.front() {
            if at + timing.after_reply > now {
                break;
            }
            self.failed.pop_front();
            let hosts = self.hosts_of(req);
            if !hosts.is_empty() {
                self.figures.in_doubt_requests += 1;
                let hosts = hosts.into_iter().map(|h| (h, None)).collect();
                self.in_doubt.insert(req, (requester, hosts));
            }
        }
        let mut result = Ok(());
        let reqs: Vec<u64> = self.in_doubt.keys().copied().collect();
        for req in reqs {
            let running = self.hosts_of(req);
            let Some((requester, hosts)) = self.in_doubt.get_mut(&req) else {
                continue;
            };
            hosts.retain(|h, _| running.contains(h));
            for (host, since) in hosts.iter_mut() {
                if !connected(*host, *requester) {
                    *since = None;
                    continue;
                }
                let from = *since.get_or_insert(now);
                if now.saturating_since(from) >= timing.settle {
                    result = Err(format!(
                        "failed request {req} still has processes running on {host}, \
                         connected to its requester {requester} since {from}"
                    ));
                }
            }
            if hosts.is_empty() {
                self.in_doubt.remove(&req);
            }
        }
        result
    }

    /// `placement.answered` (see the module docs): the first workload spawn past
    /// `bound` whose requester has run steadily all that time, flagged once.
    fn check_answered(
        &mut self,
        now: Time,
        bound: Duration,
        steady_since: &dyn Fn(NodeId) -> Option<Time>,
    ) -> Result<(), String> {
        let mut result = Ok(());
        for (id, issued) in &mut self.issued {
            let Some(requester) = issued.requester else {
                continue;
            };
            if !issued.workload || issued.flagged || now.saturating_since(issued.at) < bound {
                continue;
            }
            let Some(since) = steady_since(requester) else {
                continue;
            };
            let from = since.max(issued.at);
            if now.saturating_since(from) >= bound {
                issued.flagged = true;
                if result.is_ok() {
                    result = Err(format!(
                        "spawn request {id} to {requester} at {} unanswered at {now}, \
                         its requester running since {from}",
                        issued.at
                    ));
                }
            }
        }
        result
    }

    /// Evaluates the placement invariants; `locals` is each host's clock now; `grace`
    /// says how long the processes of a failed request may still run and a spawn may
    /// stay unanswered (see the module docs). Samples utilisation when `sample` is set.
    pub fn check(
        &mut self,
        now: Time,
        agents: &[Option<&Agent>],
        locals: &[Time],
        grace: Grace,
        liveness: &Liveness,
        sample: bool,
    ) -> Vec<(&'static str, Result<(), String>)> {
        let mut out: Vec<(&'static str, Result<(), String>)> = self
            .violations
            .drain(..)
            .map(|(n, m)| (n, Err(m)))
            .collect();
        let mut capacity = Ok(());
        let mut leak = Ok(());
        let (mut used_cpu, mut cap_cpu, mut used_mem, mut cap_mem) = (0u64, 0u64, 0u64, 0u64);
        for (i, a) in agents.iter().enumerate() {
            let Some(a) = a else { continue };
            let p = &a.services().placement;
            let (cap, committed, reserved) = p.accounting();
            if !p.invariants() || !cap.covers(committed.plus(reserved)) {
                capacity = Err(format!(
                    "n{i}: committed {committed:?} + reserved {reserved:?} over {cap:?}"
                ));
            }
            // On the host's own clock (it may be skewed).
            let local = locals[i];
            if let Some((key, exp)) = p.leases().find(|(_, e)| *e + grace.after_reply < local) {
                leak = Err(format!(
                    "n{i}: lease of {key:?} expired at {exp} still held"
                ));
            }
            used_cpu += u64::from(committed.cpu_millicores);
            cap_cpu += u64::from(cap.cpu_millicores);
            used_mem += committed.memory_bytes;
            cap_mem += cap.memory_bytes;
        }
        out.push(("placement.capacity", capacity));
        out.push(("placement.lease_leak", leak));
        let aon = self.check_failed(now, grace, liveness.connected);
        out.push(("placement.all_or_nothing", aon));
        let answered = self.check_answered(now, grace.answer, liveness.steady_since);
        out.push(("placement.answered", answered));
        if sample && cap_cpu > 0 && cap_mem > 0 {
            self.util_samples.push((
                used_cpu as f64 / cap_cpu as f64,
                used_mem as f64 / cap_mem as f64,
            ));
        }
        out
    }

    /// Requests issued, placed and rejected so far (cheap, for sampling).
    #[must_use]
    pub fn counts(&self) -> (u64, u64, u64) {
        let f = &self.figures;
        (f.requests, f.placed_requests, f.rejected_requests)
    }

    /// The last utilisation sample (cpu, memory), if any.
    #[must_use]
    pub fn last_utilization(&self) -> Option<(f64, f64)> {
        self.util_samples.last().copied()
    }

    /// Request-to-reply times of placed and of rejected requests so far, in reply order, in ns.
    #[must_use]
    pub fn latencies_ns(&self) -> (&[u64], &[u64]) {
        (&self.placed_ns, &self.rejected_ns)
    }

    /// The figures so far.
    #[must_use]
    pub fn figures(&self) -> PlacementFigures {
        let mut f = self.figures.clone();
        f.unanswered_requests = self.issued.values().filter(|i| i.workload).count() as u64;
        let mut all: Vec<u64> = self
            .placed_ns
            .iter()
            .chain(&self.rejected_ns)
            .copied()
            .collect();
        f.latency_p50_ms = percentile_ms(&mut all, 0.5);
        f.latency_p99_ms = percentile_ms(&mut all, 0.99);
        let mut placed = self.placed_ns.clone();
        f.placed_latency_p50_ms = percentile_ms(&mut placed, 0.5);
        f.placed_latency_p99_ms = percentile_ms(&mut placed, 0.99);
        f.rejected_latency_p99_ms = percentile_ms(&mut self.rejected_ns.clone(), 0.99);
        if f.requests > 0 {
            f.msgs_per_request = self.messages as f64 / f.requests as f64;
        }
        if f.placed_requests > 0 {
            f.local_fraction = self.local_placed as f64 / f.placed_requests as f64;
        }
        if !self.util_samples.is_empty() {
            let n = self.util_samples.len() as f64;
            f.mean_utilization = Utilization {
                cpu: self.util_samples.iter().map(|s| s.0).sum::<f64>() / n,
                memory: self.util_samples.iter().map(|s| s.1).sum::<f64>() / n,
            };
            f.peak_utilization = peak(&self.util_samples);
        }
        f
    }
}

/// The `q` quantile of `samples_ns` (sorted here), in ms; `None` when there are none.
fn percentile_ms(samples_ns: &mut [u64], q: f64) -> Option<f64> {
    samples_ns.sort_unstable();
    let last = samples_ns.len().checked_sub(1)?;
    let i = (last as f64 * q).round() as usize;
    Some(samples_ns[i] as f64 / 1e6)
}

/// A short name of why a spawn failed, for the report.
fn cause(e: &SpawnError) -> &'static str {
    match e {
        SpawnError::Invalid(_) => "invalid",
        SpawnError::Short { resource } => match resource {
            Resource::Cpu => "short_cpu",
            Resource::Memory => "short_memory",
            Resource::Accelerators => "short_accelerators",
            Resource::Hosts => "short_hosts",
            Resource::CpuClass(_) => "short_cpu_class",
            Resource::Limit(_) => "short_limit",
        },
        SpawnError::Aborted => "aborted",
        SpawnError::Unavailable { .. } => "unavailable",
    }
}

/// The sample with the highest cpu utilisation.
pub(crate) fn peak(samples: &[(f64, f64)]) -> Utilization {
    samples
        .iter()
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map_or_else(Utilization::default, |s| Utilization {
            cpu: s.0,
            memory: s.1,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nefele_core::{ApiCall, ProcSpec, TenantId};

    const REQUESTER: NodeId = NodeId(0);
    const HOST: NodeId = NodeId(1);

    /// Request 1 failed at 1 s with one process left on `HOST`.
    fn failed_with_a_process_left() -> PlacementSim {
        let mut sim = PlacementSim::new(2);
        let id = sim.issue(Time::ZERO, Some(REQUESTER), None);
        let spec = ProcSpec {
            envp: vec![
                format!("NEFELE_SIM_REQ={id}"),
                "NEFELE_SIM_RUN_MS=600000".into(),
            ],
            ..ProcSpec::default()
        };
        let pid = Pid::new(HOST, Incarnation(1), 1);
        let start = HostCommand::Start {
            pid,
            tenant: TenantId(1),
            spec,
        };
        sim.execute(Time::ZERO, HOST, start);
        sim.issued.get_mut(&id).expect("issued").workload = true;
        let failed = ApiReply::Spawned(Err(SpawnError::Aborted));
        sim.on_reply(Time::from_secs(1), REQUESTER, id, failed);
        sim
    }

    /// The all-or-nothing result of checks every 250 ms from 1 s to `until`, with
    /// `connected` telling whether the host hears the requester at each.
    fn checks(
        sim: &mut PlacementSim,
        until: Time,
        connected: impl Fn(Time) -> bool,
    ) -> Result<(), String> {
        let grace = Grace {
            after_reply: Duration::from_secs(2),
            settle: Duration::from_secs(1),
            answer: Duration::from_secs(2),
        };
        let mut now = Time::from_secs(1);
        while now <= until {
            let link = |_: NodeId, _: NodeId| connected(now);
            let liveness = Liveness {
                connected: &link,
                steady_since: &|_| Some(Time::ZERO),
            };
            let results = sim.check(now, &[], &[], grace, &liveness, false);
            let (_, aon) = results
                .into_iter()
                .find(|(n, _)| *n == "placement.all_or_nothing")
                .expect("checked");
            aon?;
            now = now + Duration::from_millis(250);
        }
        Ok(())
    }

    /// The `placement.answered` result of one check at `now`, with the requester
    /// steady since `since` (`None`: down or stalled).
    fn answered_at(sim: &mut PlacementSim, now: Time, since: Option<Time>) -> Result<(), String> {
        let grace = Grace {
            after_reply: Duration::from_secs(2),
            settle: Duration::from_secs(1),
            answer: Duration::from_secs(2),
        };
        let liveness = Liveness {
            connected: &|_, _| true,
            steady_since: &|_| since,
        };
        let results = sim.check(now, &[], &[], grace, &liveness, false);
        results
            .into_iter()
            .find(|(n, _)| *n == "placement.answered")
            .expect("checked")
            .1
    }

    /// A workload spawn issued at 1 s and never answered.
    fn unanswered_spawn() -> PlacementSim {
        let mut sim = PlacementSim::new(2);
        let generated = Generated {
            call: ApiCall::Neighbours,
            processes: 1,
            gang: false,
        };
        sim.issue(Time::from_secs(1), Some(REQUESTER), Some(&generated));
        sim
    }

    #[test]
    fn a_spawn_unanswered_while_its_requester_runs_is_reported_once() {
        let mut sim = unanswered_spawn();
        let steady = Some(Time::ZERO);
        assert_eq!(answered_at(&mut sim, Time::from_secs(2), steady), Ok(()));
        let err = answered_at(&mut sim, Time::from_secs(3), steady);
        assert!(err.is_err_and(|e| e.contains("spawn request 1 to n0")));
        assert_eq!(answered_at(&mut sim, Time::from_secs(4), steady), Ok(()));
    }

    #[test]
    fn a_stalled_or_crashed_requester_owes_no_answer_until_it_runs_again() {
        // Stalled now, then resumed at 5 s: the bound counts from the resume.
        let mut sim = unanswered_spawn();
        assert_eq!(answered_at(&mut sim, Time::from_secs(4), None), Ok(()));
        let resumed = Some(Time::from_secs(5));
        assert_eq!(answered_at(&mut sim, Time::from_secs(6), resumed), Ok(()));
        assert!(answered_at(&mut sim, Time::from_secs(7), resumed).is_err());
        // Crashed: the call died with its agent.
        let mut sim = unanswered_spawn();
        sim.crash(REQUESTER);
        assert_eq!(
            answered_at(&mut sim, Time::from_secs(9), Some(Time::ZERO)),
            Ok(())
        );
    }

    /// Regression (issue 15): a failed request's process on a host cut off from its
    /// requester was reported as soon as the grace after the reply had passed, though
    /// nothing could reach the host to end it. It is reported once the host has heard
    /// the requester for the settle time and still runs it, and never before.
    #[test]
    fn a_failed_requests_process_must_end_once_its_host_hears_the_requester() {
        // Cut off until 10 s: nothing to report, however long that is.
        let mut sim = failed_with_a_process_left();
        assert_eq!(checks(&mut sim, Time::from_secs(10), |_| false), Ok(()));
        assert_eq!(sim.figures().in_doubt_requests, 1);
        // Connected from 10 s on and still running at 11 s: reported.
        let err = checks(&mut sim, Time::from_secs(12), |t| t >= Time::from_secs(10));
        assert!(err.is_err_and(|e| e.contains("connected to its requester n0 since 10")));

        // Connected all along: reported once the grace after the reply is over and the
        // host has been connected for the settle time.
        let mut sim = failed_with_a_process_left();
        assert!(checks(&mut sim, Time::from_secs(4), |_| true).is_err());

        // Ended once connected: nothing to report.
        let mut sim = failed_with_a_process_left();
        assert_eq!(checks(&mut sim, Time::from_secs(5), |_| false), Ok(()));
        let pid = Pid::new(HOST, Incarnation(1), 1);
        sim.end(Time::from_secs(5), HOST, pid, ExitStatus::Signaled(9));
        assert_eq!(checks(&mut sim, Time::from_secs(20), |_| true), Ok(()));
    }
}
