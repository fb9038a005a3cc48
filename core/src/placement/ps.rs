//! `ps(tenant)` over the whole DC: a walk down the federation tree.
//!
//! The asker sends `PsWalk` to the root of its tree (the last of its level-0
//! view's ancestors). A leader at level `k > 0` forwards the walk to every
//! member of its group (each leads a group at `k - 1`) and tells the asker which
//! members to expect (`PsExpect`); a level-0 leader asks each member for its
//! entries (`PsReq`) and tells the asker which hosts to expect. Each host sends
//! its entries of the tenant straight to the asker in batches under the MTU
//! (`PsAns`, each saying how many there are: they may arrive in any order). The asker is done when no walk and no host
//! is outstanding, or at `ps_timeout`, when what is missing is counted as
//! unanswered.
//!
//! Level-0 leaders also answer with the processes of hosts that left their group
//! (see `ledger`), as `Lost`; the asker keeps a live answer over a lost one.
//!
//! Leaders forward the walk, and level-0 leaders ask, only the members whose
//! subtrees may hold the tenant (the tenant index of `presence`), and announce
//! only those.

use super::api::ProcState;
use super::api::{ProcInfo, PsReply};
use super::msg::{batches, PlacementMsg};
use super::summary::PlacementSummary;
use super::{Placement, Timer};
use crate::agent::{ApiReply, RequestId};
use crate::ids::{NodeId, Pid, TenantId};
use crate::service::walk::WalkProgress;
use crate::service::TreeView;
use crate::time::Time;

/// Whom a walk answers.
#[derive(Clone, Copy, Debug)]
pub(super) enum PsFor {
    /// A client's `ps`.
    Reply(RequestId),
    /// The pid call `token` whose host is silent: is `pid` listed, and how?
    Resolve { token: u64, pid: Pid },
}

/// One `ps` in flight at its asker.
#[derive(Debug)]
pub(super) struct PsWalk {
    purpose: PsFor,
    tenant: TenantId,
    deadline: Time,
    /// What the walk still waits for.
    progress: WalkProgress,
    entries: Vec<ProcInfo>,
}

impl Placement {
    /// Walks the tree for `tenant`'s processes, for `purpose`.
    pub(super) fn walk_for(
        &mut self,
        now: Time,
        tree: &TreeView<'_>,
        purpose: PsFor,
        tenant: TenantId,
    ) {
        let view = tree.group(0).map(|g| g.view());
        let (level, root) = match view {
            Some(v) => match v.ancestors.last() {
                Some(root) => (v.ancestors.len() as u8, *root),
                None => (0, v.leader),
            },
            None => (0, self.me),
        };
        let token = self.next_token();
        let deadline = now + self.config.ps_timeout;
        self.req.ps.insert(
            token,
            PsWalk {
                purpose,
                tenant,
                deadline,
                progress: WalkProgress::new(level, root),
                entries: Vec::new(),
            },
        );
        self.set_timer(deadline, Timer::Op(token));
        self.forward_walk(now, tree, root, token, tenant, level);
    }

    fn forward_walk(
        &mut self,
        now: Time,
        tree: &TreeView<'_>,
        to: NodeId,
        token: u64,
        tenant: TenantId,
        level: u8,
    ) {
        let asker = self.me;
        if to == self.me {
            self.on_ps_walk(now, tree, token, tenant, asker, level);
        } else {
            let msg = PlacementMsg::PsWalk {
                token,
                tenant,
                asker,
                level,
            };
            self.send(to, msg);
        }
    }

    /// A leader walks its group at `level` for `asker`.
    pub(super) fn on_ps_walk(
        &mut self,
        now: Time,
        tree: &TreeView<'_>,
        token: u64,
        tenant: TenantId,
        asker: NodeId,
        level: u8,
    ) {
        let seat = tree.group(level);
        // A stale walk (this agent no longer leads that group) is not answered: the
        // asker counts it unanswered at its deadline, instead of taking the group
        // for empty and listing its processes as if they did not exist.
        let Some(seat) = seat.filter(|s| s.view().leader == self.me) else {
            return;
        };
        // Only the subtrees the tenant index says may hold the tenant.
        let members = tree.members_to_walk(
            seat,
            level,
            || self.presence.own(),
            |s| PlacementSummary::of(s).tenants,
            |m, index| self.presence.must_visit(level, m, index.copied(), tenant),
        );
        self.expect(tree, asker, token, level, members.clone());
        for m in members {
            match (level, m == self.me) {
                (0, true) => self.on_ps_req(now, tree, token, tenant, asker),
                (0, false) => self.send(
                    m,
                    PlacementMsg::PsReq {
                        token,
                        tenant,
                        asker,
                    },
                ),
                (_, true) => self.on_ps_walk(now, tree, token, tenant, asker, level - 1),
                (_, false) => {
                    let msg = PlacementMsg::PsWalk {
                        token,
                        tenant,
                        asker,
                        level: level - 1,
                    };
                    self.send(m, msg);
                }
            }
        }
    }

    fn expect(
        &mut self,
        tree: &TreeView<'_>,
        asker: NodeId,
        token: u64,
        level: u8,
        members: Vec<NodeId>,
    ) {
        if asker == self.me {
            let me = self.me;
            self.on_ps_expect(tree, me, token, level, &members);
        } else {
            let msg = PlacementMsg::PsExpect {
                token,
                level,
                members,
            };
            self.send(asker, msg);
        }
    }

    /// A host sends `asker` its entries of `tenant`, in batches.
    pub(super) fn on_ps_req(
        &mut self,
        now: Time,
        tree: &TreeView<'_>,
        token: u64,
        tenant: TenantId,
        asker: NodeId,
    ) {
        let entries = self.tenant_entries(now, tenant);
        let batches: Vec<Vec<ProcInfo>> = if entries.is_empty() {
            vec![Vec::new()]
        } else {
            batches(entries)
        };
        let n = u16::try_from(batches.len()).unwrap_or(u16::MAX);
        for entries in batches.into_iter().take(usize::from(n)) {
            if asker == self.me {
                let me = self.me;
                self.on_ps_answer(tree, me, token, entries, n);
            } else {
                let msg = PlacementMsg::PsAns {
                    token,
                    entries,
                    batches: n,
                };
                self.send(asker, msg);
            }
        }
    }

    pub(super) fn on_ps_expect(
        &mut self,
        tree: &TreeView<'_>,
        from: NodeId,
        token: u64,
        level: u8,
        members: &[NodeId],
    ) {
        let Some(w) = self.req.ps.get_mut(&token) else {
            return;
        };
        w.progress.announced(level, from, members);
        self.finish_ps_if_done(tree, token);
    }

    pub(super) fn on_ps_answer(
        &mut self,
        tree: &TreeView<'_>,
        from: NodeId,
        token: u64,
        entries: Vec<ProcInfo>,
        batches: u16,
    ) {
        let Some(w) = self.req.ps.get_mut(&token) else {
            return;
        };
        if w.progress.has_answered(from) {
            return;
        }
        let tenant = w.tenant;
        w.entries.extend(
            entries
                .into_iter()
                // A host answers for itself; a leader also for the hosts it lost.
                .filter(|e| e.tenant == tenant && (e.host == from || e.state == ProcState::Lost)),
        );
        w.progress.part(from, batches);
        self.finish_ps_if_done(tree, token);
    }

    fn finish_ps_if_done(&mut self, tree: &TreeView<'_>, token: u64) {
        if self.req.ps.get(&token).is_some_and(|w| w.progress.done()) {
            self.finish_ps(tree, token);
        }
    }

    pub(super) fn ps_due(&mut self, now: Time, tree: &TreeView<'_>, token: u64) {
        if self.req.ps.get(&token).is_some_and(|w| w.deadline <= now) {
            self.finish_ps(tree, token);
        }
    }

    fn finish_ps(&mut self, tree: &TreeView<'_>, token: u64) {
        let Some(mut w) = self.req.ps.remove(&token) else {
            return;
        };
        for e in &mut w.entries {
            e.distance = self.distance(tree, e.host);
        }
        // A live answer beats a `Lost` one for the same pid (a host that moved to
        // another group, or came back, is not lost).
        w.entries
            .sort_by_key(|e| (e.pid, e.state == ProcState::Lost));
        w.entries.dedup_by_key(|e| e.pid);
        match w.purpose {
            PsFor::Reply(request) => {
                let reply = PsReply {
                    processes: w.entries,
                    unanswered: u32::try_from(w.progress.awaited()).unwrap_or(u32::MAX),
                };
                self.reply(request, ApiReply::Ps(reply));
            }
            PsFor::Resolve { token, pid } => {
                let found = w.entries.iter().find(|e| e.pid == pid).map(|e| e.state);
                self.resolved(tree, token, found);
            }
        }
    }
}
