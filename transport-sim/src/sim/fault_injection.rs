//! Fault injection: what each [`FaultAction`] does to the hosts and the network
//! when it strikes, how it is undone, and which faults are refused up front.
//! Random selectors draw from the simulation's fault RNG, so the same seed hits
//! the same hosts.

use super::{Event, Simulation, Undo};
use crate::faults::{Fault, FaultAction};
use crate::topology::Topology;
use crate::trace::TraceEvent;
use nefele_core::{NodeId, Time};
use rand_chacha::ChaCha8Rng;

impl Simulation {
    fn up(&self) -> Vec<bool> {
        self.hosts.iter().map(|h| h.agent.is_some()).collect()
    }

    pub(super) fn strike(&mut self, index: usize) {
        let fault = self.faults[index].clone();
        self.stats.faults += 1;
        self.last_fault = Some(self.now);
        self.federation.fault();
        let up = self.up();
        let resolve = |sel: &crate::faults::Selector, rng: &mut ChaCha8Rng, topo: &Topology| {
            // Validated in `new`; random selectors cannot fail.
            sel.resolve(topo, &up, rng).unwrap_or_default()
        };
        let until = fault.duration.map(|d| self.now + d);
        let text = match &fault.action {
            FaultAction::Crash(sel) | FaultAction::Leave(sel) => {
                let clean = matches!(fault.action, FaultAction::Leave(_));
                let nodes = resolve(sel, &mut self.fault_rng, &self.topology);
                self.note_supervision_lost(&nodes);
                let quorum_lost = self.homes_cut_from_their_quorum(&nodes);
                for &n in &nodes {
                    if clean {
                        self.leave(n);
                    }
                    self.crash(n);
                }
                self.note_quorum_lost(quorum_lost, until.unwrap_or(Time::NEVER));
                if let Some(at) = until {
                    self.schedule(at, Event::Undo(Undo::Boot(nodes.clone())));
                }
                let verb = if clean { "leave" } else { "crash" };
                format!("{verb} {}", describe(&nodes))
            }
            FaultAction::Restart(sel) => {
                let nodes = resolve(sel, &mut self.fault_rng, &self.topology);
                self.note_supervision_lost(&nodes);
                let quorum_lost = self.homes_cut_from_their_quorum(&nodes);
                for &n in &nodes {
                    self.crash(n);
                }
                // Restarted at once unless the fault lasts.
                self.note_quorum_lost(quorum_lost, until.unwrap_or(self.now));
                match until {
                    Some(at) => self.schedule(at, Event::Undo(Undo::Boot(nodes.clone()))),
                    None => nodes.iter().for_each(|&n| self.boot(n)),
                }
                format!("restart {}", describe(&nodes))
            }
            FaultAction::Pause(sel) => {
                let nodes = resolve(sel, &mut self.fault_rng, &self.topology);
                let resume = until.unwrap_or(Time::NEVER);
                let quorum_lost = self.homes_cut_from_their_quorum(&nodes);
                for &n in &nodes {
                    // A pause within another ends with the later of the two (before,
                    // the second one's end replaced the first's: the agent resumed
                    // early while what it missed in the first waited for its end).
                    let paused_until = self.hosts[n.0 as usize].paused_until;
                    let resume = resume.max(paused_until);
                    if let Some(s) = self.supervision.as_mut() {
                        if paused_until > self.now {
                            s.stall_extended(n, resume);
                        }
                        s.sibling_host_silenced(n, resume);
                        s.given_up_host_stalled(self.now, n, resume);
                    }
                    if self.is_home(n) {
                        self.note_home_lost(resume);
                    }
                    let host = &mut self.hosts[n.0 as usize];
                    if host.agent.is_some() {
                        if host.paused_until <= self.now {
                            host.paused_since = self.now;
                        }
                        host.paused_until = resume;
                        self.schedule(resume, Event::Resume(n));
                    }
                }
                self.note_quorum_lost(quorum_lost, resume);
                format!("pause {} until {resume}", describe(&nodes))
            }
            FaultAction::Partition { a, b, asymmetric } => {
                let a = resolve(a, &mut self.fault_rng, &self.topology);
                let b = resolve(b, &mut self.fault_rng, &self.topology);
                let id = self
                    .network
                    .partition(self.hosts.len(), &a, &b, *asymmetric);
                // A home cut from its quorum restarts nothing more: a slot down now
                // is restarted by a take-over on the other side, whose wait and
                // hold count from now, as when a home crashes or stalls.
                if self.homes_cut_from_their_quorum(&[]) {
                    self.note_home_lost(self.now);
                }
                self.note_children_cut_off();
                if let Some(at) = until {
                    self.schedule(at, Event::Undo(Undo::Heal(id)));
                    let lost = self.homes_cut_off_with_no_side_to_take_over()
                        || self.crashed_homes_cut_off_with_no_side_to_take_over();
                    self.note_quorum_lost(lost, at);
                }
                let arrow = if *asymmetric { "->" } else { "<->" };
                format!("partition {} {arrow} {}", describe(&a), describe(&b))
            }
            FaultAction::Heal => {
                self.network.heal_all();
                "heal all partitions".to_owned()
            }
            FaultAction::Skew {
                hosts,
                offset_ms,
                drift_ppm,
            } => {
                let nodes = resolve(hosts, &mut self.fault_rng, &self.topology);
                for &n in &nodes {
                    self.hosts[n.0 as usize].clock.skew(*offset_ms, *drift_ppm);
                    self.hosts[n.0 as usize].skewed_at = self.now;
                    // The agent's timers now fall at other simulated times.
                    self.hosts[n.0 as usize].wake_at = None;
                    self.after_handle(n);
                }
                format!("skew {} by {offset_ms}ms, {drift_ppm}ppm", describe(&nodes))
            }
            FaultAction::Loss(p) => {
                self.network.set_loss(*p);
                if let Some(s) = self.supervision.as_mut() {
                    s.reconcile(self.now, &self.placement);
                    s.lossy(*p, until.unwrap_or(Time::NEVER));
                }
                if let Some(at) = until {
                    // Back to the configured loss, not to the loss before this fault: with
                    // overlapping loss faults, that one may itself be a fault's.
                    let base = self.config.network.loss;
                    self.schedule(at, Event::Undo(Undo::Loss(base)));
                }
                format!("loss {p}")
            }
        };
        self.record(TraceEvent::Fault { text: &text });
    }

    pub(super) fn undo(&mut self, undo: Undo) {
        self.stats.faults += 1;
        self.last_fault = Some(self.now);
        self.federation.fault();
        let text = match undo {
            Undo::Boot(nodes) => {
                for &n in &nodes {
                    if self.hosts[n.0 as usize].agent.is_none() {
                        self.boot(n);
                    }
                }
                format!("boot {}", describe(&nodes))
            }
            Undo::Heal(id) => {
                self.network.heal(id);
                format!("heal partition {id}")
            }
            Undo::Loss(p) => {
                self.network.set_loss(p);
                format!("loss back to {p}")
            }
        };
        self.record(TraceEvent::Fault { text: &text });
    }
}

pub(super) fn validate_fault(
    fault: &Fault,
    topology: &Topology,
    up: &[bool],
    rng: &mut ChaCha8Rng,
) -> Result<(), String> {
    let check = |sel: &crate::faults::Selector, rng: &mut ChaCha8Rng| {
        sel.resolve(topology, up, rng).map(|_| ())
    };
    match &fault.action {
        FaultAction::Crash(s) | FaultAction::Restart(s) | FaultAction::Leave(s) => check(s, rng),
        FaultAction::Pause(s) => {
            check(s, rng)?;
            match fault.duration {
                Some(_) => Ok(()),
                None => Err("pause needs a duration".to_owned()),
            }
        }
        FaultAction::Partition { a, b, .. } => {
            check(a, rng)?;
            check(b, rng)
        }
        FaultAction::Heal => Ok(()),
        FaultAction::Skew {
            hosts, drift_ppm, ..
        } => {
            // A clock must keep running forwards, and not absurdly fast.
            if !(-500_000..=1_000_000).contains(drift_ppm) {
                return Err(format!(
                    "skew drift_ppm {drift_ppm} is outside [-500000, 1000000]"
                ));
            }
            check(hosts, rng)
        }
        FaultAction::Loss(p) if (0.0..=1.0).contains(p) => Ok(()),
        FaultAction::Loss(p) => Err(format!("loss {p} is not a probability in [0, 1]")),
    }
}

/// A short description of a set of hosts, for traces.
fn describe(nodes: &[NodeId]) -> String {
    match nodes {
        [] => "no host".to_owned(),
        [one] => one.to_string(),
        [first, .., last] if (last.0 - first.0) as usize + 1 == nodes.len() => {
            format!("{first}..={last}")
        }
        _ => format!("{} hosts", nodes.len()),
    }
}
