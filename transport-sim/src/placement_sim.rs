//! Simulated processes and clients for placement: hosts that carry out the
//! agents' `HostCommand`s, clients that issue API calls and time the replies,
//! the placement figures of the report, and the placement invariants.
//!
//! A simulated process runs for its real run time (from its spec's
//! `NEFELE_SIM_RUN_MS`, else one second) and then exits with code 0 and its
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
//!   hosts' confirm timeouts have passed.

use crate::workload::{env_number, Generated};
use nefele_core::host::{ExitStatus, HostCommand, HostEvent, Usage};
use nefele_core::placement::api::{Resource, SpawnError};
use nefele_core::{Agent, ApiReply, NodeId, Pid, Time};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// One simulated process.
#[derive(Clone, Debug)]
struct SimProc {
    started: Time,
    req: Option<u64>,
    cpu_millicores: u32,
    memory_bytes: u64,
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

/// Time-averaged utilisation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Utilization {
    /// Committed cpu over total cpu of live hosts.
    pub cpu: f64,
    /// Committed memory over total memory of live hosts.
    pub memory: f64,
}

/// Processes, clients and figures of a run.
#[derive(Default)]
pub struct PlacementSim {
    procs: Vec<BTreeMap<Pid, SimProc>>,
    pid_hosts: BTreeMap<Pid, NodeId>,
    started_by_req: BTreeMap<u64, u32>,
    running_by_req: BTreeMap<u64, u32>,
    issued: BTreeMap<u64, Issued>,
    failed: VecDeque<(Time, u64)>,
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

    /// A new request id for a client call; `generated` describes a workload request.
    pub fn issue(&mut self, now: Time, generated: Option<&Generated>) -> u64 {
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
                if let Some(other) = self.pid_hosts.insert(pid, node) {
                    self.violations.push((
                        "placement.pid_unique",
                        format!("pid {pid} started on {node}, already on {other}"),
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
                };
                host.insert(pid, p);
                if let Some(r) = req {
                    *self.started_by_req.entry(r).or_default() += 1;
                    *self.running_by_req.entry(r).or_default() += 1;
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
        if let Some(r) = p.req {
            if let Some(n) = self.running_by_req.get_mut(&r) {
                *n -= 1;
            }
        }
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

    /// `node` crashed: its processes vanish.
    pub fn crash(&mut self, node: NodeId) {
        for (_, p) in std::mem::take(&mut self.procs[node.0 as usize]) {
            if let Some(r) = p.req {
                if let Some(n) = self.running_by_req.get_mut(&r) {
                    *n -= 1;
                }
            }
        }
    }

    /// A reply reached the client of `request`.
    pub fn on_reply(&mut self, now: Time, request: u64, reply: ApiReply) {
        let Some(issued) = self.issued.remove(&request) else {
            return;
        };
        if !issued.workload {
            self.replies.push((request, now, reply));
            return;
        }
        let latency = u64::try_from(now.saturating_since(issued.at).as_nanos()).unwrap_or(u64::MAX);
        match reply {
            ApiReply::Spawned(Ok(pids)) => {
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
            ApiReply::Spawned(Err(e)) => {
                self.rejected_ns.push(latency);
                self.figures.rejected_requests += 1;
                *self.figures.rejections.entry(cause(&e)).or_default() += 1;
                self.failed.push_back((now, request));
            }
            _ => {}
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

    /// Processes running now, per host.
    #[must_use]
    pub fn running(&self, node: NodeId) -> usize {
        self.procs.get(node.0 as usize).map_or(0, BTreeMap::len)
    }

    /// Processes running now, of request `req`.
    #[must_use]
    pub fn running_of(&self, req: u64) -> u32 {
        self.running_by_req.get(&req).copied().unwrap_or(0)
    }

    /// Evaluates the placement invariants; `locals` is each host's clock now; `grace` is
    /// how long after a failed reply its processes may still run (the hosts' confirm
    /// timeouts). Samples utilisation when `sample` is set.
    pub fn check(
        &mut self,
        now: Time,
        agents: &[Option<&Agent>],
        locals: &[Time],
        grace: Duration,
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
            if let Some((key, exp)) = p.leases().find(|(_, e)| *e + grace < local) {
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
        let mut aon = Ok(());
        while let Some(&(at, req)) = self.failed.front() {
            if at + grace > now {
                break;
            }
            self.failed.pop_front();
            let n = self.running_of(req);
            if n > 0 {
                aon = Err(format!(
                    "failed request {req} still has {n} processes running"
                ));
            }
        }
        out.push(("placement.all_or_nothing", aon));
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
        },
        SpawnError::Aborted => "aborted",
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
