//! Names move with a restarted child: the names a supervised process held are
//! registered for the process that replaces it.
//!
//! - **Host side.** Messaging tells (as [`ServiceEvent::NamesHeld`]) every change
//!   of the names of a local process; this host keeps those of its supervised
//!   processes (watched, or fenced from their start) in `names`, and tells the
//!   watching home ([`SupervisionMsg::Holds`]) at each change, with every answer
//!   to a `Watch`, and as the process ends. Asked by the home that watches a
//!   process to hand it names ([`SupervisionMsg::Hand`]), it registers those the
//!   process does not hold yet, one call in flight per name, in the process's own
//!   tenant.
//! - **Home side.** A child's names are its host's latest word
//!   ([`Record::names_held`](super::record::Record::names_held)). When the child
//!   is restarted, its names are handed to the new process with every `Watch`
//!   until its host says it holds them all, or for [`HAND_OVER`] (a name the root
//!   still gives to the old process, or that another process took meanwhile, is
//!   asked for again at each probe until then).
//!
//! Bounds: at most [`MAX_CHILD_NAMES`] names per process (the first in name
//! order), kept only for supervised processes; a host registers names only for a
//! live process that the sender watches.

use super::msg::{SupervisionMsg, MAX_CHILD_NAMES};
use super::{Pending, Phase, Supervision};
use crate::ids::{NodeId, Pid};
use crate::messaging::names::EXPIRE_AFTER;
use crate::time::Time;
use nefele_api::calls::ApiCall;
use nefele_api::supervision::SupervisorId;
use std::time::Duration;

/// How long a restarted child's names are handed to its new process: long enough
/// for the root to have dropped the old process's registration even if the
/// `Unclaim` or `HostGone` that frees it was lost (it expires then).
pub(super) const HAND_OVER: Duration = EXPIRE_AFTER;

impl Supervision {
    /// Host side: messaging says the local process `pid` now holds `names`.
    pub(super) fn names_changed(&mut self, now: Time, pid: Pid, names: &[String]) {
        if !self.watchers.contains_key(&pid) && !self.unwatched.contains_key(&pid) {
            return;
        }
        let names: Vec<String> = names.iter().take(MAX_CHILD_NAMES).cloned().collect();
        if self.names.get(&pid) != Some(&names) {
            self.names.insert(pid, names);
            self.tell_names(now, pid);
        }
    }

    /// Host side: tells the home watching `pid` the names it holds (if it ever
    /// held one).
    pub(super) fn tell_names(&mut self, now: Time, pid: Pid) {
        let (Some(w), Some(names)) = (self.watchers.get(&pid), self.names.get(&pid)) else {
            return;
        };
        let (home, sup, names) = (w.home, w.sup, names.clone());
        self.deliver(now, home, SupervisionMsg::Holds { sup, pid, names });
    }

    /// Host side: the local process `pid` ended; its home learns its last names
    /// (before the end itself, so that it hands them on).
    pub(super) fn names_ended(&mut self, now: Time, pid: Pid) {
        self.tell_names(now, pid);
        self.names.remove(&pid);
    }

    /// Sends a names message to `to`, or handles it here.
    fn deliver(&mut self, now: Time, to: NodeId, msg: SupervisionMsg) {
        if to == self.me.node {
            let me = self.me.node;
            self.on_names_msg(now, me, msg);
        } else {
            self.send(to, msg);
        }
    }

    /// `Hand` or `Holds` from `from` (maybe this agent).
    pub(super) fn on_names_msg(&mut self, now: Time, from: NodeId, msg: SupervisionMsg) {
        match msg {
            SupervisionMsg::Hand { sup, pid, names } => self.on_hand(from, sup, pid, names),
            // A host tells only of its own processes.
            SupervisionMsg::Holds { sup, pid, names } if pid.origin() == from => {
                self.on_holds(now, sup, pid, names);
            }
            _ => {}
        }
    }

    /// Host side: the home `from` hands `names` to its child `pid` here.
    fn on_hand(&mut self, from: NodeId, sup: SupervisorId, pid: Pid, names: Vec<String>) {
        if !self
            .watchers
            .get(&pid)
            .is_some_and(|w| w.home == from && w.sup == sup)
        {
            return;
        }
        let Some(&(tenant, _)) = self.live.get(&pid) else {
            return;
        };
        for name in names {
            let held = self.names.get(&pid).is_some_and(|n| n.contains(&name));
            let asked = self.calls.values().any(
                |p| matches!(p, Pending::Register { pid: p, name: n } if *p == pid && *n == name),
            );
            if !held && !asked {
                let call = ApiCall::Register {
                    tenant,
                    name: name.clone(),
                    pid,
                };
                self.call(call, Pending::Register { pid, name });
            }
        }
    }

    /// Home side: `pid`'s host says it holds `names`.
    fn on_holds(&mut self, now: Time, sup: SupervisorId, pid: Pid, names: Vec<String>) {
        let Some(s) = self.sups.get_mut(&sup) else {
            return;
        };
        let Some(i) = s.rec.child_of(pid) else {
            return;
        };
        if s.rec.names_held(i, names, now) {
            s.dirty = true;
            s.version += 1;
        }
    }

    /// Home side: hands the names of `sup`'s restarted children (on `only`, or
    /// everywhere) to their new processes, while the hand-over lasts.
    pub(super) fn hand(&mut self, now: Time, sup: SupervisorId, only: Option<NodeId>) {
        let Some(s) = self.sups.get(&sup) else {
            return;
        };
        let hands: Vec<(Pid, Vec<String>)> = s
            .rec
            .children
            .iter()
            .filter(|c| c.handing.is_some_and(|until| now < until))
            .filter(|c| matches!(c.phase, Phase::Running))
            .filter_map(|c| c.pid.map(|p| (p, c.names.clone())))
            .filter(|(p, _)| only.is_none_or(|h| h == p.origin()))
            .collect();
        for (pid, names) in hands {
            self.deliver(now, pid.origin(), SupervisionMsg::Hand { sup, pid, names });
        }
    }
}
