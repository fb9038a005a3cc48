//! The ledger: copies of a level-0 group's process tables, so that the processes
//! of a host that dies are reported `Lost` instead of silently forgotten.
//!
//! # Protocol
//! Shortly after its table changes (`ledger_flush`, which coalesces bursts), and
//! every `ledger_period` in any case, each agent compares its table (its
//! confirmed, running processes) with what it last reported, and sends the
//! difference as [`PlacementMsg::Ledger`] to its *keepers*: the leader of its
//! level-0 group and the group's heir (its lowest other member), itself excluded.
//! The heir holds a copy so that a leader that dies with its processes is
//! reported by the agent that takes its place. When the keepers change, the new
//! ones get the whole table; every `ledger_refresh` everybody resends its whole
//! table with `reset`, which repairs copies that missed a message.
//!
//! A level-0 leader that holds a copy for a host no longer in its group moves
//! that copy to its *lost* list, kept for `lost_retention`; `ps` answers include
//! the lost entries (state [`ProcState::Lost`]) and the asker keeps, for each pid,
//! a live answer over a `Lost` one, so a host that merely moved to another group
//! (a split) or came back (re-adopting its processes) is never shown as lost; and
//! any report from a host clears the lost entries of that host.
//! Non-leaders drop copies of hosts that left their group.
//!
//! Invariants: an agent holds copies only of hosts that reported to it; a pid is
//! never both held and lost at one agent; lost entries expire.

use super::api::{Demand, ProcInfo, ProcState};
use super::msg::{batches, LedgerItem, PlacementMsg};
use super::{Placement, ProcEntry, Timer};
use crate::ids::{NodeId, Pid, TenantId};
use crate::service::{ServiceEvent, TreeView};
use crate::time::Time;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// One process as held for its host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Held {
    tenant: TenantId,
    command: String,
    demand: Demand,
    /// When its host reported it, and its age then (ages travel, clocks do not).
    reported: Time,
    age_then: Duration,
}

impl Held {
    fn age(&self, now: Time) -> Duration {
        now.saturating_since(self.reported)
            .saturating_add(self.age_then)
    }
}

/// This agent's side of the ledger: what it reported, and the copies it keeps.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    /// Whether the periodic timer runs.
    armed: bool,
    /// Whether a flush after a change is scheduled.
    flush_armed: bool,
    /// Pids that may have entered or left the reported set since the last report
    /// (every such change of the table calls `ledger_changed`).
    changed: BTreeSet<Pid>,
    /// The pids this agent last reported to its keepers.
    reported: BTreeSet<Pid>,
    /// The keepers it last reported to.
    keepers: Vec<NodeId>,
    /// When it last resent everything.
    last_refresh: Time,
    /// Copies of other hosts' tables.
    held: BTreeMap<NodeId, BTreeMap<Pid, Held>>,
    /// Processes of hosts that left this leader's group: host, entry, kept until.
    lost: BTreeMap<Pid, (NodeId, Held, Time)>,
}

impl Ledger {
    /// The tenants of the lost entries (with repeats).
    pub(super) fn lost_tenants(&self) -> impl Iterator<Item = TenantId> + '_ {
        self.lost.values().map(|(_, h, _)| h.tenant)
    }

    /// Entries of `tenant` this agent reports as lost.
    pub(super) fn lost_entries(&self, now: Time, tenant: TenantId) -> Vec<ProcInfo> {
        self.lost
            .iter()
            .filter(|(_, (_, h, _))| h.tenant == tenant)
            .map(|(pid, (host, h, _))| ProcInfo {
                pid: *pid,
                tenant,
                host: *host,
                command: h.command.clone(),
                demand: h.demand,
                state: ProcState::Lost,
                age: h.age(now),
                distance: super::api::DistanceClass::SameDc,
            })
            .collect()
    }
}

impl Placement {
    /// Starts the periodic ledger timer (once).
    pub(super) fn arm_ledger(&mut self, now: Time) {
        if !self.ledger.armed {
            self.ledger.armed = true;
            self.ledger.last_refresh = now;
            self.set_timer(now + self.config.ledger_period, Timer::Ledger);
        }
    }

    /// The entry of `pid` changed: report it soon (one flush per `ledger_flush`).
    pub(super) fn ledger_changed(&mut self, now: Time, pid: Pid) {
        self.ledger.changed.insert(pid);
        if !self.ledger.flush_armed {
            self.ledger.flush_armed = true;
            self.set_timer(now + self.config.ledger_flush, Timer::LedgerFlush);
        }
    }

    /// The flush after a change.
    pub(super) fn ledger_flush_due(&mut self, now: Time, tree: &TreeView<'_>) {
        self.ledger.flush_armed = false;
        self.report_table(now, tree);
    }

    /// The periodic work: report changes to the keepers, and as a leader turn the
    /// copies of departed hosts into lost entries.
    pub(super) fn ledger_due(&mut self, now: Time, tree: &TreeView<'_>) {
        self.set_timer(now + self.config.ledger_period, Timer::Ledger);
        self.report_table(now, tree);
        self.settle_departed(now, tree);
        self.ledger.lost.retain(|_, (_, _, until)| *until > now);
        self.refresh_own_tenants();
        self.prune_presence(now);
    }

    /// Sends the keepers what changed since the last report (everything to a new
    /// keeper, and to all at a refresh). Only the pids marked changed are looked at:
    /// this runs on every flush of every agent, and a table holds thousands.
    fn report_table(&mut self, now: Time, tree: &TreeView<'_>) {
        let keepers = tree.keepers();
        let refresh = now.saturating_since(self.ledger.last_refresh) >= self.config.ledger_refresh;
        if refresh {
            self.ledger.last_refresh = now;
        }
        let item = |pid: Pid, e: &ProcEntry| LedgerItem {
            pid,
            tenant: e.tenant,
            command: e.path.clone(),
            demand: e.demand,
            age: e.age(now),
        };
        let reported = |e: &ProcEntry| !e.hidden && e.state == ProcState::Running;
        let (mut added, mut ended) = (Vec::new(), Vec::new());
        for pid in std::mem::take(&mut self.ledger.changed) {
            let now_in = self.host.table.get(&pid).filter(|e| reported(e));
            match (now_in, self.ledger.reported.contains(&pid)) {
                (Some(e), false) => added.push(item(pid, e)),
                (None, true) => ended.push(pid),
                _ => {}
            }
        }
        for pid in &ended {
            self.ledger.reported.remove(pid);
        }
        self.ledger.reported.extend(added.iter().map(|i| i.pid));
        let everyone = refresh || keepers.iter().any(|k| !self.ledger.keepers.contains(k));
        let everything: Vec<LedgerItem> = if everyone {
            self.host
                .table
                .iter()
                .filter(|(_, e)| reported(e))
                .map(|(pid, e)| item(*pid, e))
                .collect()
        } else {
            Vec::new()
        };
        for &k in &keepers {
            let new_keeper = !self.ledger.keepers.contains(&k);
            if refresh || new_keeper {
                self.send_ledger(k, true, everything.clone(), Vec::new());
            } else if !added.is_empty() || !ended.is_empty() {
                self.send_ledger(k, false, added.clone(), ended.clone());
            }
        }
        self.ledger.keepers = keepers;
    }

    /// Sends a table change in batches under the MTU (each message carries one
    /// batch of one kind); only the first carries `reset`.
    fn send_ledger(&mut self, to: NodeId, reset: bool, present: Vec<LedgerItem>, ended: Vec<Pid>) {
        let mut messages: Vec<(Vec<LedgerItem>, Vec<Pid>)> = batches(present)
            .into_iter()
            .map(|p| (p, Vec::new()))
            .chain(batches(ended).into_iter().map(|e| (Vec::new(), e)))
            .collect();
        if messages.is_empty() && reset {
            messages.push((Vec::new(), Vec::new()));
        }
        for (i, (present, ended)) in messages.into_iter().enumerate() {
            let msg = PlacementMsg::Ledger {
                reset: reset && i == 0,
                present,
                ended,
            };
            self.send(to, msg);
        }
    }

    /// A host reported a change of its table.
    pub(super) fn on_ledger(
        &mut self,
        now: Time,
        from: NodeId,
        reset: bool,
        present: Vec<LedgerItem>,
        ended: Vec<Pid>,
    ) {
        // A host that reports is alive: none of its processes is lost any more (those
        // that ended while it was away are its own to report, as exited).
        let lost = self.ledger.lost.len();
        self.ledger.lost.retain(|_, (host, _, _)| *host != from);
        if self.ledger.lost.len() != lost {
            self.refresh_own_tenants();
        }
        let copy = self.ledger.held.entry(from).or_default();
        if reset {
            copy.clear();
        }
        for p in &ended {
            copy.remove(p);
        }
        for item in present {
            copy.insert(
                item.pid,
                Held {
                    tenant: item.tenant,
                    command: item.command,
                    demand: item.demand,
                    reported: now,
                    age_then: item.age,
                },
            );
        }
    }

    /// Copies of hosts that left the group: lost, at a leader; dropped elsewhere.
    fn settle_departed(&mut self, now: Time, tree: &TreeView<'_>) {
        let Some(view) = tree.group(0).map(|g| g.view()) else {
            return;
        };
        let departed: Vec<NodeId> = self
            .ledger
            .held
            .keys()
            .filter(|h| !view.contains(**h))
            .copied()
            .collect();
        let leading = view.leader == self.me;
        let until = now + self.config.lost_retention;
        for host in departed {
            let Some(copy) = self.ledger.held.remove(&host) else {
                continue;
            };
            if leading {
                for (pid, held) in copy {
                    let tenant = held.tenant;
                    self.ledger.lost.insert(pid, (host, held, until));
                    self.event(ServiceEvent::ProcessLost { pid, tenant });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a peer-sent age of `Duration::MAX` overflowed `Duration + Duration`
    /// (a panic in release builds too) when a `ps` listed the entry.
    #[test]
    fn a_huge_reported_age_saturates() {
        let held = Held {
            tenant: TenantId(1),
            command: "/bin/x".to_owned(),
            demand: Demand::default(),
            reported: Time::ZERO,
            age_then: Duration::MAX,
        };
        assert_eq!(held.age(Time::from_secs(1)), Duration::MAX);
    }
}
