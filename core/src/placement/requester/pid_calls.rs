//! The client calls on one pid (`kill`, `info`, `wait`): each goes straight to
//! the pid's host (its origin), answers the client once, and ends `Lost` rather
//! than `Unreachable` when the host is known lost (removed from this agent's
//! group, or listed lost by its group's ledger, found by a `ps` walk).
//!
//! Invariant: every op in `ops` answers its client exactly once (answered, timed
//! out, or lost), and then leaves `ops`.

use super::MAX_LOST_HOSTS;
use crate::agent::{ApiReply, RequestId};
use crate::host::ExitStatus;
use crate::ids::{NodeId, Pid, TenantId};
use crate::placement::api::{
    Demand, DistanceClass, InfoError, KillError, ProcInfo, ProcState, WaitError,
};
use crate::placement::msg::{PidAnswer, PidOp, PlacementMsg};
use crate::placement::ps::PsFor;
use crate::placement::{Placement, Timer};
use crate::service::TreeView;
use crate::time::Time;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpKind {
    Kill,
    Info,
    Wait,
}

#[derive(Debug)]
pub(super) struct Op {
    request: RequestId,
    kind: OpKind,
    tenant: TenantId,
    pid: Pid,
    deadline: Time,
    retries: u32,
    /// A `ps` walk in flight to find out whether the silent host's process is lost.
    resolving: bool,
}

impl Placement {
    fn new_op(&mut self, op: Op) -> u64 {
        let token = self.next_token();
        let deadline = op.deadline;
        self.req.ops.insert(token, op);
        if deadline != Time::NEVER {
            self.set_timer(deadline, Timer::Op(token));
        }
        token
    }

    pub(in crate::placement) fn start_pid_op(
        &mut self,
        now: Time,
        request: RequestId,
        tenant: TenantId,
        pid: Pid,
        op: PidOp,
    ) {
        let kind = match op {
            PidOp::Info => OpKind::Info,
            PidOp::Kill(_) => OpKind::Kill,
            PidOp::Wait => OpKind::Wait,
            // Not a client's call: only `cancel` sends it.
            PidOp::Unwait => return,
        };
        let host = pid.origin();
        let wait = if kind == OpKind::Wait {
            self.config.wait_poll
        } else {
            self.config.op_timeout
        };
        let deadline = if host == self.me {
            Time::NEVER
        } else {
            now + wait
        };
        let token = self.new_op(Op {
            request,
            kind,
            tenant,
            pid,
            deadline,
            retries: 0,
            resolving: false,
        });
        if host == self.me {
            if let Some(answer) = self.answer_pid(now, self.me, token, tenant, pid, op) {
                self.finish_op(&TreeView::empty(self.me), token, answer);
            }
        } else {
            self.send(
                host,
                PlacementMsg::PidReq {
                    token,
                    tenant,
                    pid,
                    op,
                },
            );
        }
    }

    /// `from` answers the call `token`: only the host of the call's pid may (issue 16).
    pub(in crate::placement) fn on_pid_answer(
        &mut self,
        tree: &TreeView<'_>,
        from: NodeId,
        token: u64,
        answer: PidAnswer,
    ) {
        if self
            .req
            .ops
            .get(&token)
            .is_some_and(|op| op.pid.origin() == from)
        {
            self.finish_op(tree, token, answer);
        }
    }

    /// Completes the call `token` with `answer` (a `Waiting` only resets the wait's retries).
    pub(in crate::placement) fn finish_op(
        &mut self,
        tree: &TreeView<'_>,
        token: u64,
        answer: PidAnswer,
    ) {
        if answer == PidAnswer::Waiting {
            if let Some(op) = self.req.ops.get_mut(&token) {
                op.retries = 0;
            }
            return;
        }
        let Some(op) = self.req.ops.remove(&token) else {
            return;
        };
        let pid = op.pid;
        let reply = match op.kind {
            OpKind::Kill => ApiReply::Killed(match answer {
                PidAnswer::Signalled => Ok(()),
                PidAnswer::Exited(ExitStatus::Lost) => Err(KillError::Lost),
                PidAnswer::Exited(_) => Err(KillError::Exited),
                _ => Err(KillError::NoSuchProcess),
            }),
            OpKind::Info => ApiReply::Info(match answer {
                PidAnswer::Info(mut i) => {
                    i.distance = self.distance(tree, i.host);
                    Ok(i)
                }
                PidAnswer::Exited(s) => Ok(ProcInfo {
                    pid,
                    tenant: op.tenant,
                    host: pid.origin(),
                    command: String::new(),
                    demand: Demand::default(),
                    state: match s {
                        ExitStatus::Lost => ProcState::Lost,
                        s => ProcState::Exited(s),
                    },
                    age: Duration::ZERO,
                    distance: self.distance(tree, pid.origin()),
                }),
                _ => Err(InfoError::NoSuchProcess),
            }),
            OpKind::Wait => ApiReply::Waited(match answer {
                PidAnswer::Exited(s) => Ok(s),
                _ => Err(WaitError::NoSuchProcess),
            }),
        };
        self.reply(op.request, reply);
    }

    /// The federation removed `host`: every call waiting on one of its pids ends `Lost`
    /// now, and later ones end `Lost` when it stays silent.
    pub fn host_removed(&mut self, tree: &TreeView<'_>, host: NodeId) {
        if self.req.lost_hosts.len() >= MAX_LOST_HOSTS {
            self.req.lost_hosts.pop_first();
        }
        self.req.lost_hosts.insert(host);
        let tokens: Vec<u64> = self
            .req
            .ops
            .iter()
            .filter(|(_, op)| op.pid.origin() == host)
            .map(|(t, _)| *t)
            .collect();
        for token in tokens {
            self.finish_op(tree, token, PidAnswer::Exited(ExitStatus::Lost));
        }
    }

    /// `host` was heard from: it is no longer taken for lost.
    pub(in crate::placement) fn host_heard(&mut self, host: NodeId) {
        self.req.lost_hosts.remove(&host);
    }

    pub(in crate::placement) fn distance(
        &self,
        tree: &TreeView<'_>,
        host: NodeId,
    ) -> DistanceClass {
        if host == self.me {
            DistanceClass::SameHost
        } else if tree.local_group().contains(&host) {
            DistanceClass::SameGroup
        } else {
            DistanceClass::SameDc
        }
    }

    /// The host of the call `token` stayed silent until its deadline: a `wait` asks
    /// again (and, at its 1st, 2nd, 4th and 8th silence, also walks the tree to see
    /// whether the process is lost); a `kill` or `info` walks the tree once before it
    /// ends `Unreachable`. A host the federation removed ends the call `Lost` at once.
    pub(in crate::placement) fn op_due(&mut self, now: Time, tree: &TreeView<'_>, token: u64) {
        let Some(op) = self.req.ops.get_mut(&token) else {
            return;
        };
        if op.deadline > now {
            return;
        }
        if self.req.lost_hosts.contains(&op.pid.origin()) {
            self.finish_op(tree, token, PidAnswer::Exited(ExitStatus::Lost));
            return;
        }
        let (tenant, pid) = (op.tenant, op.pid);
        // Outside a tree there is nothing to walk.
        let can_walk = !op.resolving && tree.in_tree();
        if op.kind == OpKind::Wait && op.retries < self.config.wait_retries {
            op.retries += 1;
            op.deadline = now + self.config.wait_poll;
            let walk = can_walk && op.retries.is_power_of_two();
            op.resolving |= walk;
            let at = op.deadline;
            self.set_timer(at, Timer::Op(token));
            let msg = PlacementMsg::PidReq {
                token,
                tenant,
                pid,
                op: PidOp::Wait,
            };
            self.send(pid.origin(), msg);
            if walk {
                self.walk_for(now, tree, PsFor::Resolve { token, pid }, tenant);
            }
            return;
        }
        if op.kind != OpKind::Wait && can_walk {
            op.resolving = true;
            op.deadline = Time::NEVER;
            return self.walk_for(now, tree, PsFor::Resolve { token, pid }, tenant);
        }
        self.op_unreachable(token);
    }

    /// What a walk of the tree found of the silent call `token`'s process: listed
    /// `Lost` (by the level-0 leader of a host that left its group), the call ends
    /// `Lost`; otherwise (listed live, or not listed: its host may not have been
    /// settled as gone yet) a `wait` goes on waiting and the others end `Unreachable`.
    pub(in crate::placement) fn resolved(
        &mut self,
        tree: &TreeView<'_>,
        token: u64,
        found: Option<ProcState>,
    ) {
        let Some(op) = self.req.ops.get_mut(&token) else {
            return;
        };
        op.resolving = false;
        match found {
            Some(ProcState::Lost) => {
                self.finish_op(tree, token, PidAnswer::Exited(ExitStatus::Lost));
            }
            _ if op.kind == OpKind::Wait => {}
            _ => self.op_unreachable(token),
        }
    }

    /// The client of `request` left: its `wait`s are forgotten here and at their
    /// pids' hosts and never answered. Other calls end by themselves within their
    /// timeouts (a spawn within `create_timeout`), so they run on and their answer
    /// finds no client.
    pub fn cancel(&mut self, request: RequestId) {
        let tokens: Vec<u64> = self
            .req
            .ops
            .iter()
            .filter(|(_, op)| op.request == request && op.kind == OpKind::Wait)
            .map(|(t, _)| *t)
            .collect();
        for token in tokens {
            let Some(op) = self.req.ops.remove(&token) else {
                continue;
            };
            let (tenant, pid) = (op.tenant, op.pid);
            if pid.origin() == self.me {
                self.unwait(self.me, token, pid);
            } else {
                let op = PidOp::Unwait;
                let msg = PlacementMsg::PidReq {
                    token,
                    tenant,
                    pid,
                    op,
                };
                self.send(pid.origin(), msg);
            }
        }
    }

    fn op_unreachable(&mut self, token: u64) {
        let Some(op) = self.req.ops.remove(&token) else {
            return;
        };
        let reply = match op.kind {
            OpKind::Kill => ApiReply::Killed(Err(KillError::Unreachable)),
            OpKind::Info => ApiReply::Info(Err(InfoError::Unreachable)),
            OpKind::Wait => ApiReply::Waited(Err(WaitError::Unreachable)),
        };
        self.reply(op.request, reply);
    }
}
