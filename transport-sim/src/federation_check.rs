//! The federation's cluster-wide invariants and measurements, checked from
//! outside the agents (ARCHITECTURE.md §6):
//!
//! - every live agent holds a seat in exactly one level-0 group;
//! - every group's members agree with its leader on membership, epoch and leader,
//!   once the leader's view has stood for [`VIEW_SPREAD_PERIODS`] periods (a view
//!   that was lost, or overtaken by an older copy under reordering and duplication,
//!   is fetched again at the leader's next beat), and follow a leader that leads
//!   their group, or led it at a check within the detection timeout (a merge that
//!   dissolved the group, or a leader that left it: the members hear of it, or
//!   suspect the leader's silence, within that time);
//! - group sizes are within `[min, max]`, except a top group (which, like a
//!   B-tree's root, may be smaller) and a cluster smaller than `min`;
//! - there is exactly one top group;
//! - depth ≤ ⌈log_min(N)⌉ + 1;
//! - no agent dead for longer than the detection timeout appears in any group
//!   (counted from the last delivery of one of its messages, if that came later:
//!   see [`ClusterView::silent_since`]; or from when the group's leader began to
//!   lead it, if that came later still: an heir that took over knows nothing of
//!   the members and suspects them all afresh).
//!
//! [`FederationMonitor`] evaluates them for every instance at each check, and
//! records when they first held (convergence) and how long after the last
//! fault they held again (repair), for the report. It also keeps each leader's
//! tenure ([`Tenures`]) as the checks saw it, so the two times above are up to a
//! check interval late, never early.

use crate::checker::ClusterView;
use nefele_core::federation::{Federation, FederationConfig, Level, View};
use nefele_core::{NodeId, Time};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The shape of one federation instance's hierarchy at one check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Shape {
    /// Groups without a parent.
    pub top_groups: usize,
    /// Levels in the tallest tree.
    pub depth: usize,
    /// Groups at all levels.
    pub groups: usize,
    /// The largest group.
    pub max_group_size: usize,
}

/// Periods a leader's view must have stood before its members are expected to hold
/// it: the leader's next beat (or a member's) shows a stale copy, and the view is
/// sent again; a second and a third beat cover the loss of the first exchanges.
pub const VIEW_SPREAD_PERIODS: u32 = 3;

/// One leader's tenure of one group, as the checks saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tenure {
    /// The first check at which it led the group (without a break since).
    leading_since: Time,
    /// Its view's epoch at the last check.
    epoch: u64,
    /// The first check at which its view had that epoch.
    epoch_since: Time,
}

/// Every leader's tenure of its group, (level, leader) → tenure, at the last check;
/// and for tenures that ended since, the last check at which they still held, kept
/// for `keep`.
#[derive(Debug, Default)]
pub struct Tenures {
    current: BTreeMap<(Level, NodeId), Tenure>,
    ended: BTreeMap<(Level, NodeId), Time>,
    last_check: Time,
}

impl Tenures {
    /// Records the groups led at `now`; moves those no longer led to the ended ones,
    /// and forgets ended ones older than `keep`.
    fn record(&mut self, now: Time, led: &BTreeMap<(Level, NodeId), &View>, keep: Duration) {
        let before = std::mem::take(&mut self.current);
        for key in before.keys().filter(|k| !led.contains_key(k)) {
            self.ended.insert(*key, self.last_check);
        }
        self.ended
            .retain(|key, last| !led.contains_key(key) && now.saturating_since(*last) <= keep);
        self.last_check = now;
        for (key, v) in led {
            let tenure = match before.get(key) {
                Some(t) if t.epoch == v.epoch => *t,
                Some(t) => Tenure {
                    epoch: v.epoch,
                    epoch_since: now,
                    ..*t
                },
                None => Tenure {
                    leading_since: now,
                    epoch: v.epoch,
                    epoch_since: now,
                },
            };
            self.current.insert(*key, tenure);
        }
    }

    fn get(&self, level: Level, leader: NodeId) -> Option<&Tenure> {
        self.current.get(&(level, leader))
    }

    /// Whether `leader` led its group at `level` at a check within `within` of `now`
    /// (and leads it no more).
    fn ended_within(&self, level: Level, leader: NodeId, now: Time, within: Duration) -> bool {
        (self.ended.get(&(level, leader))).is_some_and(|last| now.saturating_since(*last) <= within)
    }
}

/// The groups led by the agents `live`: (level, leader) → the leader's view.
fn groups_led<'a>(live: &[(NodeId, &'a Federation)]) -> BTreeMap<(Level, NodeId), &'a View> {
    let mut led = BTreeMap::new();
    for (id, fed) in live {
        for seat in fed.seats() {
            let v = seat.view();
            if v.leader == *id {
                led.insert((v.level, v.leader), v);
            }
        }
    }
    led
}

/// The invariants of one instance, on one view of the cluster; `tenures` is brought
/// up to date first.
pub fn check_instance(
    view: &ClusterView<'_>,
    instance: usize,
    config: &FederationConfig,
    tenures: &mut Tenures,
) -> Result<Shape, String> {
    let timeout = config.detection_timeout() + config.period * 2;
    let spread = config.period * VIEW_SPREAD_PERIODS;
    let live: Vec<(NodeId, &Federation)> = view
        .live()
        .filter_map(|(id, a)| a.federations().get(instance).map(|f| (id, f)))
        .collect();
    let n = live.len();
    let mut shape = Shape::default();
    let led = groups_led(&live);
    tenures.record(view.now, &led, timeout);
    for (id, fed) in &live {
        let seats = fed.seats();
        if seats.is_empty() {
            return Err(format!("{id} is in no level-0 group"));
        }
        if fed.is_root() {
            shape.top_groups += 1;
            shape.depth = shape.depth.max(seats.len());
        }
    }
    let recently_dead = |n: NodeId| {
        view.silent_since(n)
            .is_some_and(|since| view.now.saturating_since(since) <= timeout)
    };
    for (id, fed) in &live {
        for seat in fed.seats() {
            let v = seat.view();
            if recently_dead(v.leader) {
                continue; // its members have until the detection timeout to notice
            }
            let Some(lv) = led.get(&(v.level, v.leader)) else {
                if tenures.ended_within(v.level, v.leader, view.now, timeout) {
                    // A group its leader dissolved (a merge) or left: its members hear
                    // of it, or suspect the leader's silence, within the detection
                    // timeout. (Before, swarm regression 470428 under other timing: a
                    // member still followed a leader whose group a merge had dissolved
                    // a moment before.)
                    continue;
                }
                return Err(format!(
                    "{id} follows {} at level {}, which leads no such group",
                    v.leader, v.level
                ));
            };
            let standing = tenures
                .get(v.level, v.leader)
                .is_some_and(|t| view.now.saturating_since(t.epoch_since) >= spread);
            if *lv != v && standing {
                return Err(format!(
                    "{id} disagrees with its leader {} at level {}: epoch {} vs {}, {} vs {} members",
                    v.leader,
                    v.level,
                    v.epoch,
                    lv.epoch,
                    v.members.len(),
                    lv.members.len()
                ));
            }
        }
    }
    let roots: Vec<(u8, NodeId)> = live
        .iter()
        .filter(|(_, f)| f.is_root())
        .map(|(id, f)| (f.seats().len() as u8 - 1, *id))
        .collect();
    for ((level, leader), v) in &led {
        let size = v.members.len();
        shape.groups += 1;
        shape.max_group_size = shape.max_group_size.max(size);
        if size > config.max_group {
            return Err(format!(
                "group of {leader} at level {level} has {size} > {} members",
                config.max_group
            ));
        }
        let is_top = roots.contains(&(*level, *leader));
        if size < config.min_group && !is_top && n >= config.min_group {
            return Err(format!(
                "group of {leader} at level {level} has {size} < {} members",
                config.min_group
            ));
        }
        let leading_since = tenures.get(*level, *leader).map(|t| t.leading_since);
        for m in &v.members {
            if let Some(since) = view.silent_since(*m) {
                if view
                    .now
                    .saturating_since(since.max(leading_since.unwrap_or(since)))
                    > timeout
                {
                    return Err(format!(
                        "group of {leader} at level {level} lists {m}, dead since {since}"
                    ));
                }
            }
        }
    }
    if n > 0 && shape.top_groups != 1 {
        return Err(format!("{} top groups", shape.top_groups));
    }
    let bound = depth_bound(n, config.min_group);
    if shape.depth > bound {
        return Err(format!(
            "depth {} exceeds ceil(log_{}({n})) + 1 = {bound}",
            shape.depth, config.min_group
        ));
    }
    Ok(shape)
}

/// ⌈log_min(n)⌉ + 1, the deepest a hierarchy of `n` agents may be.
#[must_use]
pub fn depth_bound(n: usize, min: usize) -> usize {
    let mut levels = 0;
    let mut reach = 1usize;
    while reach < n {
        reach = reach.saturating_mul(min.max(2));
        levels += 1;
    }
    levels + 1
}

/// Convergence and repair times, and the last shape seen, per instance.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FederationReport {
    /// The instance's name.
    pub name: String,
    /// Simulated seconds until the invariants first held; `None` if never.
    pub converged_at_s: Option<f64>,
    /// Seconds from the last fault until the invariants held again for good (they may
    /// hold for a moment after a crash, while the dead are within the detection timeout,
    /// then fail while the hierarchy repairs); `None` if no fault, or never repaired.
    pub last_repair_s: Option<f64>,
    /// Whether the invariants held at the last check.
    pub holds_at_end: bool,
    /// The shape at the last check where the invariants held.
    #[serde(flatten)]
    pub shape: Shape,
    /// The first reason the invariants failed at the last check, if they did.
    pub last_failure: Option<String>,
    #[serde(skip)]
    repair_pending: bool,
}

/// Tracks each instance over the run.
#[derive(Debug, Default)]
pub struct FederationMonitor {
    reports: Vec<FederationReport>,
    tenures: Vec<Tenures>,
}

impl FederationMonitor {
    /// A monitor of the instances `configs`.
    #[must_use]
    pub fn new(configs: &[FederationConfig]) -> Self {
        FederationMonitor {
            reports: configs
                .iter()
                .map(|c| FederationReport {
                    name: c.name.clone(),
                    ..FederationReport::default()
                })
                .collect(),
            tenures: configs.iter().map(|_| Tenures::default()).collect(),
        }
    }

    /// Records one check of every instance; returns each instance's result.
    pub fn observe(
        &mut self,
        view: &ClusterView<'_>,
        configs: &[FederationConfig],
        last_fault: Option<Time>,
    ) -> Vec<Result<(), String>> {
        let mut results = Vec::with_capacity(configs.len());
        for (i, config) in configs.iter().enumerate() {
            let report = &mut self.reports[i];
            match check_instance(view, i, config, &mut self.tenures[i]) {
                Ok(shape) => {
                    report.converged_at_s.get_or_insert(view.now.as_secs_f64());
                    if let (true, Some(fault)) = (report.repair_pending, last_fault) {
                        report.last_repair_s = Some(view.now.saturating_since(fault).as_secs_f64());
                        report.repair_pending = false;
                    }
                    report.holds_at_end = true;
                    report.shape = shape;
                    report.last_failure = None;
                    results.push(Ok(()));
                }
                Err(e) => {
                    // Failing again after holding: the repair is not over yet.
                    report.repair_pending |= last_fault.is_some();
                    report.holds_at_end = false;
                    report.last_failure = Some(e.clone());
                    results.push(Err(e));
                }
            }
        }
        results
    }

    /// A fault struck: the next time the invariants hold measures the repair.
    pub fn fault(&mut self) {
        for r in &mut self.reports {
            r.last_repair_s = None;
            r.repair_pending = true;
        }
    }

    /// The reports, one per instance.
    #[must_use]
    pub fn reports(&self) -> &[FederationReport] {
        &self.reports
    }
}

#[cfg(test)]
mod tests {
    use super::{depth_bound, Tenures};
    use nefele_core::federation::View;
    use nefele_core::{NodeId, Time};
    use std::collections::BTreeMap;
    use std::time::Duration;

    /// A group its leader no longer leads counts as led until `keep` after the last
    /// check that saw it led, and is then forgotten.
    #[test]
    fn an_ended_tenure_counts_until_keep_after_the_last_check_that_saw_it() {
        let view = View::solo(0, NodeId(96), Vec::new());
        let led = BTreeMap::from([((0, NodeId(96)), &view)]);
        let none = BTreeMap::new();
        let keep = Duration::from_secs(2);
        let at = Time::from_millis;
        let mut tenures = Tenures::default();
        tenures.record(at(1_000), &led, keep);
        assert!(!tenures.ended_within(0, NodeId(96), at(1_000), keep));
        tenures.record(at(1_250), &none, keep);
        assert!(tenures.ended_within(0, NodeId(96), at(3_000), keep));
        assert!(!tenures.ended_within(0, NodeId(96), at(3_001), keep));
        assert!(!tenures.ended_within(0, NodeId(95), at(1_250), keep));
        tenures.record(at(3_250), &none, keep);
        assert!(tenures.ended.is_empty(), "forgotten past keep");
    }

    #[test]
    fn depth_bound_is_ceil_log_plus_one() {
        assert_eq!(depth_bound(1, 4), 1);
        assert_eq!(depth_bound(4, 4), 2);
        assert_eq!(depth_bound(5, 4), 3);
        assert_eq!(depth_bound(10_000, 4), 8);
    }
}
