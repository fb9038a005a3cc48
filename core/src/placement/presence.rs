//! The tenant index behind `ps`: which subtrees hold processes of which tenant,
//! so that a walk visits only those.
//!
//! # How the index is kept
//!
//! Each agent reports the tenants of its table (and, at a level-0 leader, of the
//! lost entries it keeps) as a [`TenantFilter`] in its federation summary, which
//! leaders sum up the tree with the capacity: a leader's summary of a member's
//! subtree says which tenants may be there. That alone would lag: a summary climbs
//! one level per federation period. So a tenant *entering* a subtree registers up
//! synchronously:
//!
//! - A host that creates the first process of a tenant sends `Present` to its
//!   level-0 leader and holds back its `Created` answer until the `PresentAck`.
//! - A leader that gets `Present` from a member *pins* the tenant for that member
//!   for [`PIN_PERIODS`] federation periods (far longer than the member's next beat
//!   takes to arrive) and counts it in its own summary at once; then, unless it
//!   registered that tenant upward within the last [`REUSE_PERIODS`] periods, it
//!   registers upward the same way (a node that leads the level above too goes on
//!   up by itself) and acks the member when its own parent acked. The root acks at
//!   once. A registration reused within that time is safe: the parent's pin of it
//!   outlives the reuse, and the leader's own pin keeps the tenant in its beats.
//!
//! So when a spawn returns, every leader above the new process knows its tenant is
//! in the right member's subtree (by a pin, then by that member's beats, which
//! carry the tenant as long as the subtree holds it), and a `ps` started after
//! it visits that subtree. A leader that has not heard a member's beat yet counts it
//! as holding every tenant.
//!
//! Removal is lazy: a tenant leaves a host's filter when its last entry is
//! forgotten (exited entries stay for `exit_retention`), and a leader's summary
//! when its members' beats stop carrying it.
//!
//! # Under faults
//!
//! A registration that is not acked within `presence_timeout` (a lost message, a
//! dead leader) stops holding the spawn back. Its tenant is still in the
//! registering agent's summary, which its next beat carries; until then a `ps`
//! may miss that process. A new leader has no beats from its members yet and so
//! visits all of them.
//!
//! Invariants: each `Up::Pending` entry is named by exactly one token of
//! `pending`, and each token there names a pending entry; a waiter is released
//! exactly once (acked, timed out, or at once).

use super::msg::{PlacementMsg, ReqKey};
use super::tenants::TenantFilter;
use super::{Placement, Timer};
use crate::ids::{NodeId, Pid, TenantId};
use crate::service::TreeView;
use crate::time::Time;
use std::collections::BTreeMap;

/// How long a leader pins a member's registration, in federation periods.
const PIN_PERIODS: u32 = 10;
/// How long a leader's registration upward serves later arrivals, in federation
/// periods: less than [`PIN_PERIODS`] by more than an ack's delay.
const REUSE_PERIODS: u32 = 8;

/// A registration of one tenant with the leader of one level.
#[derive(Debug)]
enum Up {
    /// Sent; these wait for its ack.
    Pending { waiters: Vec<Waiter> },
    /// Acked (or given up on); a new arrival need not register again until `until`.
    Done { until: Time },
}

/// What waits for a registration.
#[derive(Debug)]
enum Waiter {
    /// A member's `Present`, to ack.
    Member { node: NodeId, token: u64 },
    /// The `Created` answer for processes of the tenant, to deliver.
    Created {
        requester: NodeId,
        key: ReqKey,
        pids: Vec<(u16, Pid)>,
    },
}

/// This agent's part of the index.
#[derive(Debug, Default)]
pub(super) struct Presence {
    /// Entries per tenant in this host's table (exited ones until forgotten).
    counts: BTreeMap<TenantId, u32>,
    /// The tenants of the table and of the lost entries this agent keeps.
    own: TenantFilter,
    /// Registrations with the leader of each level (level, tenant).
    up: BTreeMap<(u8, TenantId), Up>,
    /// Outstanding registrations, by token.
    pending: BTreeMap<u64, (u8, TenantId)>,
    /// Members' registrations with this agent as their leader: per (level, member),
    /// each tenant with when its pin ends.
    pins: BTreeMap<(u8, NodeId), BTreeMap<TenantId, Time>>,
    /// The pinned tenants per level, as the federation counts them.
    pinned: Vec<TenantFilter>,
}

impl Presence {
    /// The tenants this agent reports as its own.
    pub(super) fn own(&self) -> TenantFilter {
        self.own
    }

    /// The pinned tenants of each level this agent leads (index: level).
    pub(super) fn pinned(&self) -> &[TenantFilter] {
        &self.pinned
    }

    /// An entry of `tenant` entered the table (created or adopted). Creation
    /// registers the tenant when it delivers `Created`; an adopted process is
    /// carried by this agent's beats (it is rejoining its group, whose leader visits
    /// members it has not heard yet).
    pub(super) fn entered(&mut self, tenant: TenantId) {
        *self.counts.entry(tenant).or_default() += 1;
        self.own.insert(tenant);
    }

    /// Whether the walk of a group led here must visit `member` at `level` for
    /// `tenant`, given the member's last summary (`None`: none heard yet).
    pub(super) fn must_visit(
        &self,
        level: u8,
        member: NodeId,
        summary: Option<TenantFilter>,
        tenant: TenantId,
    ) -> bool {
        summary.is_none_or(|s| s.may_contain(tenant))
            || self
                .pins
                .get(&(level, member))
                .is_some_and(|p| p.contains_key(&tenant))
    }
}

impl Placement {
    /// An entry of `tenant` left the table.
    pub(super) fn presence_left(&mut self, tenant: TenantId) {
        let Some(count) = self.presence.counts.get_mut(&tenant) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            self.presence.counts.remove(&tenant);
            if matches!(self.presence.up.get(&(0, tenant)), Some(Up::Done { .. })) {
                self.presence.up.remove(&(0, tenant));
            }
            self.refresh_own_tenants();
        }
    }

    /// Recomputes the own filter (after a tenant left, or the lost entries changed).
    pub(super) fn refresh_own_tenants(&mut self) {
        self.presence.own = self
            .presence
            .counts
            .keys()
            .copied()
            .chain(self.ledger.lost_tenants())
            .collect();
    }

    /// Answers `requester` with the pids of `key` (processes of `tenant`) once the
    /// tenant's registration is through.
    pub(super) fn deliver_created(
        &mut self,
        now: Time,
        tree: &TreeView<'_>,
        tenant: TenantId,
        key: ReqKey,
        pids: Vec<(u16, Pid)>,
    ) {
        let requester = key.requester;
        let waiter = Waiter::Created {
            requester,
            key,
            pids,
        };
        self.register(now, tree, 0, tenant, Some(waiter));
    }

    /// Registers `tenant` with the leader of this agent's group at `level`, then
    /// releases `waiter`.
    fn register(
        &mut self,
        now: Time,
        tree: &TreeView<'_>,
        level: u8,
        tenant: TenantId,
        waiter: Option<Waiter>,
    ) {
        match self.presence.up.get_mut(&(level, tenant)) {
            Some(Up::Pending { waiters, .. }) => {
                waiters.extend(waiter);
                return;
            }
            Some(Up::Done { until }) if *until > now => return self.release_waiter(now, waiter),
            _ => {}
        }
        let Some(view) = tree.group(level).map(|g| g.view()) else {
            // Above the top (or no tree yet): nobody to tell.
            return self.release_waiter(now, waiter);
        };
        if view.leader == self.me {
            // This agent's own summary for the level above holds the tenant already.
            return self.register(now, tree, level.saturating_add(1), tenant, waiter);
        }
        let token = self.next_token();
        let leader = view.leader;
        self.presence.up.insert(
            (level, tenant),
            Up::Pending {
                waiters: waiter.into_iter().collect(),
            },
        );
        self.presence.pending.insert(token, (level, tenant));
        self.set_timer(now + self.config.presence_timeout, Timer::Presence(token));
        self.send(
            leader,
            PlacementMsg::Present {
                token,
                level,
                tenant,
            },
        );
    }

    /// A member registers `tenant` with this agent as its leader at `level`.
    pub(super) fn on_present(
        &mut self,
        now: Time,
        tree: &TreeView<'_>,
        from: NodeId,
        token: u64,
        level: u8,
        tenant: TenantId,
    ) {
        let leads = tree
            .group(level)
            .is_some_and(|g| g.led_by_me() && g.view().contains(from));
        if leads {
            let until = now + tree.period() * PIN_PERIODS;
            self.presence
                .pins
                .entry((level, from))
                .or_default()
                .insert(tenant, until);
            add_pinned(&mut self.presence.pinned, level, tenant);
            self.register(
                now,
                tree,
                level.saturating_add(1),
                tenant,
                Some(Waiter::Member { node: from, token }),
            );
        } else {
            // Not its leader (any more): its beats reach the real one; do not hold it up.
            self.release_waiter(now, Some(Waiter::Member { node: from, token }));
        }
    }

    /// The registration `token` is through (acked), or given up on (timed out).
    pub(super) fn presence_settled(&mut self, now: Time, tree: &TreeView<'_>, token: u64) {
        let Some((level, tenant)) = self.presence.pending.remove(&token) else {
            return;
        };
        let Some(Up::Pending { waiters, .. }) = self.presence.up.remove(&(level, tenant)) else {
            return;
        };
        let until = match level {
            // A host's own registration holds while the tenant stays in its table.
            0 if self.presence.counts.contains_key(&tenant) => Some(Time::NEVER),
            0 => None,
            _ if tree.period().is_zero() => None,
            // A leader's holds while the parent's pin surely does (see the module doc).
            _ => Some(now + tree.period() * REUSE_PERIODS),
        };
        if let Some(until) = until {
            self.presence.up.insert((level, tenant), Up::Done { until });
        }
        for w in waiters {
            self.release_waiter(now, Some(w));
        }
    }

    fn release_waiter(&mut self, now: Time, waiter: Option<Waiter>) {
        match waiter {
            None => {}
            Some(Waiter::Member { node, token }) => {
                self.send(node, PlacementMsg::PresentAck { token });
            }
            Some(Waiter::Created {
                requester,
                key,
                pids,
            }) => {
                if requester == self.me {
                    self.on_created(now, requester, key, &pids);
                } else {
                    for chunk in pids.chunks(60) {
                        let msg = PlacementMsg::Created {
                            key,
                            pids: chunk.to_vec(),
                        };
                        self.send(requester, msg);
                    }
                }
            }
        }
    }

    /// Drops ended pins and registrations (periodic).
    pub(super) fn prune_presence(&mut self, now: Time) {
        let p = &mut self.presence;
        p.up.retain(|_, u| !matches!(u, Up::Done { until } if *until <= now));
        for pins in p.pins.values_mut() {
            pins.retain(|_, until| *until > now);
        }
        p.pins.retain(|_, pins| !pins.is_empty());
        let mut pinned: Vec<TenantFilter> = Vec::new();
        for ((level, _), pins) in &p.pins {
            for t in pins.keys() {
                add_pinned(&mut pinned, *level, *t);
            }
        }
        p.pinned = pinned;
    }
}

/// Counts `tenant` in the pinned filter of `level`.
fn add_pinned(pinned: &mut Vec<TenantFilter>, level: u8, tenant: TenantId) {
    let l = usize::from(level);
    if pinned.len() <= l {
        pinned.resize(l + 1, TenantFilter::default());
    }
    pinned[l].insert(tenant);
}
