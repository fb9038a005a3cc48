//! The pure decisions of a spawn request: how a call expands into processes
//! and units of shapes, how offers are shared out between peers, which host takes
//! which unit (apart units matched by augmenting paths, not greedily), what is
//! still uncovered, and what ran short. No I/O and no state of its own: each
//! function reads a [`Pending`] request and answers, so each is tested by tables.

use super::{Pending, SpawnKind, Unit};
use crate::host::{Affinity, LimitKinds, Location, ProcSpec};
use crate::ids::NodeId;
use crate::placement::api::{Demand, Resource, SpawnError};
use crate::placement::msg::{size_of, Shape, BATCH_BYTES, MAX_SHAPES};
use crate::time::Time;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Expands a spawn call into its processes, or says why it is malformed.
pub(super) fn expand(kind: SpawnKind, max: u16) -> Result<Vec<ProcSpec>, SpawnError> {
    let specs = match kind {
        SpawnKind::Spawn(s) => vec![s],
        SpawnKind::NSpawn(n, s) if n as usize <= usize::from(max) => vec![s; n as usize],
        SpawnKind::NSpawn(n, _) => {
            return Err(SpawnError::Invalid(format!(
                "{n} processes, the most is {max}"
            )))
        }
        SpawnKind::CSpawn(v) => v,
    };
    if specs.is_empty() || specs.len() > usize::from(max) {
        return Err(SpawnError::Invalid(format!(
            "{} processes; a request holds 1..={max}",
            specs.len()
        )));
    }
    for s in &specs {
        if s.path.is_empty() {
            return Err(SpawnError::Invalid("empty path".to_owned()));
        }
        if size_of(s) > BATCH_BYTES - 64 {
            return Err(SpawnError::Invalid(format!(
                "a spec of {} bytes does not fit one message",
                size_of(s)
            )));
        }
    }
    Ok(specs)
}

/// How a unit picks among the hosts that offered, from its processes' profiles
/// (see [`fit_of`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Fit {
    /// Short jobs, and processes without a profile: the host order (this host,
    /// its group, then by id), a first fit, which packs them onto the first hosts
    /// and leaves the others free for large requests.
    #[default]
    Pack,
    /// Long-running processes and services: the host with the most room first, so
    /// that they spread and a busy host does not get more of them.
    Spread,
}

/// The rule of profiles: a process whose profile expects it to run `long_run`
/// or longer, or until killed (no duration), is spread; any other is packed. A
/// unit of several processes is spread if any of them is. (Packing short jobs
/// by least room first, best fit, was measured on place-1k and rejected more
/// requests than the first fit: see the commit that made this rule.)
pub(super) fn fit_of(spec: &ProcSpec, long_run: Duration) -> Fit {
    match spec.profile.as_ref().map(|p| p.duration) {
        Some(None) => Fit::Spread,
        Some(Some(d)) if d >= long_run => Fit::Spread,
        _ => Fit::Pack,
    }
}

/// Units, their shapes, and the `apart` and `spread` tags by the id units carry.
pub(super) type Grouped = (Vec<Unit>, Vec<Shape>, Vec<String>);

/// Groups processes into units (one per `together` tag, one per untagged process)
/// and units into shapes (same demand, same apart-ness, same cpu class); also the
/// `apart` and `spread` tags, by the id units carry.
pub(super) fn units_of(
    items: &[(ProcSpec, Demand)],
    long_run: Duration,
) -> Result<Grouped, SpawnError> {
    let mut tags: BTreeMap<&str, usize> = BTreeMap::new();
    let mut apart_ids: BTreeMap<&str, u32> = BTreeMap::new();
    let mut names: Vec<String> = Vec::new();
    let mut units: Vec<Raw> = Vec::new();
    for (i, (spec, demand)) in items.iter().enumerate() {
        let mut apart = None;
        let mut spread = false;
        let mut together = None;
        for a in &spec.affinity {
            match a {
                Affinity::Together(t) => together = Some(t.as_str()),
                Affinity::Apart(t) | Affinity::Spread(t) => {
                    let next = apart_ids.len() as u32;
                    let id = *apart_ids.entry(t.as_str()).or_insert_with(|| {
                        names.push(t.clone());
                        next
                    });
                    apart = Some(id);
                    spread |= matches!(a, Affinity::Spread(_));
                }
                Affinity::Near(_) => {}
            }
        }
        let at = match together {
            Some(t) => *tags.entry(t).or_insert_with(|| {
                units.push(Raw::default());
                units.len() - 1
            }),
            None => {
                units.push(Raw::default());
                units.len() - 1
            }
        };
        let u = &mut units[at];
        if apart.is_some() && u.apart.is_some_and(|x| Some(x) == apart) && !u.items.is_empty() {
            return Err(SpawnError::Invalid(
                "processes both together and apart".to_owned(),
            ));
        }
        u.items.push(i as u16);
        u.demand = u.demand.plus(*demand);
        u.apart = u.apart.or(apart);
        u.spread |= spread;
        u.cpu_class = u.cpu_class.max(spec.resources.cpu_class.unwrap_or(0));
        u.limits = u.limits.union(LimitKinds::of(&spec.resources.limits));
        if fit_of(spec, long_run) == Fit::Spread {
            u.fit = Fit::Spread;
        }
    }
    let mut shapes: Vec<Shape> = Vec::new();
    let mut out = Vec::with_capacity(units.len());
    for raw in units {
        let one = raw.apart.is_some();
        let shape = match shapes.iter().position(|s| {
            s.demand == raw.demand
                && s.one_per_host == one
                && s.cpu_class == raw.cpu_class
                && s.limits == raw.limits
        }) {
            Some(k) => k,
            None => {
                shapes.push(Shape {
                    demand: raw.demand,
                    count: 0,
                    one_per_host: one,
                    cpu_class: raw.cpu_class,
                    limits: raw.limits,
                });
                shapes.len() - 1
            }
        };
        shapes[shape].count += 1;
        out.push(Unit {
            items: raw.items,
            shape,
            apart: raw.apart,
            spread: raw.spread,
            fit: raw.fit,
        });
    }
    if shapes.len() > MAX_SHAPES {
        return Err(SpawnError::Invalid(format!(
            "{} distinct process shapes, the most is {MAX_SHAPES}",
            shapes.len()
        )));
    }
    Ok((out, shapes, names))
}

/// A unit while it is gathered.
#[derive(Default)]
struct Raw {
    items: Vec<u16>,
    demand: Demand,
    apart: Option<u32>,
    spread: bool,
    cpu_class: u8,
    limits: LimitKinds,
    fit: Fit,
}

/// Whether a request that the search up to the root could not place starts again
/// (releasing everything it holds). A single process does not: the whole tree was
/// searched for it, and it fails fast, which keeps placement latency short and leaves
/// the room to requests that need it on several hosts at once. A gang (several units)
/// does while younger than `patience`: it needs room on many hosts at the same time
/// and loses mostly to transient contention (the leases of competing requests,
/// processes about to exit), so it tries again after a backoff until then; past it,
/// once more unless a unit is larger than any room heard of (`impossible`).
pub(super) fn may_retry(patience: Duration, now: Time, p: &Pending, impossible: bool) -> bool {
    let gang = p.units.len() > 1;
    gang && (now.saturating_since(p.since) < patience || !(p.retried || impossible))
}

/// When every unit fits some host but the request does not fit: the resource of
/// which the whole request needs more than all the hosts heard from have free, if
/// one does (else it is the packing, `Hosts`).
pub(super) fn aggregate_short(p: &Pending) -> Option<Resource> {
    let need = p
        .units
        .iter()
        .fold(Demand::default(), |a, u| a.plus(p.shapes[u.shape].demand));
    let room = p.room.values().fold(Demand::default(), |a, r| a.plus(*r));
    room.short_of(need)
}

/// Where a request's units go.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Plan {
    /// The processes (item indices) each chosen host takes.
    pub(super) hosts: BTreeMap<NodeId, Vec<u16>>,
    /// The `spread` tags (by id) whose units could not all go to different racks
    /// (they went to different hosts).
    pub(super) unspread: Vec<u32>,
}

impl Plan {
    /// Whether every `spread` tag went to distinct racks.
    pub(super) fn is_spread(&self) -> bool {
        self.unspread.is_empty()
    }
}

/// The offering hosts in the orders units pick from: the base order (hosts
/// near a `near` pid first, by how near: its host, its rack, its row; then this
/// agent, its group, the rest; each by id) for [`Fit::Pack`], and that order with
/// the most room first among equally near and local hosts for [`Fit::Spread`].
struct Orders {
    pack: Vec<NodeId>,
    spread: Vec<NodeId>,
}

impl Orders {
    fn new(me: NodeId, p: &Pending) -> Orders {
        let near_rank = |h: &NodeId| -> u8 {
            if p.near.is_empty() {
                return 0;
            }
            let at = p.at.get(h);
            let near_at = |f: &dyn Fn(Location, Location) -> bool| {
                p.near
                    .iter()
                    .any(|n| matches!((at, p.at.get(n)), (Some(a), Some(b)) if f(*a, *b)))
            };
            if p.near.contains(h) {
                0
            } else if near_at(&|a, b| a.rack == b.rack) {
                1
            } else if near_at(&|a, b| a.row == b.row) {
                2
            } else {
                3
            }
        };
        let mut pack: Vec<NodeId> = p.offers.keys().copied().collect();
        // Each key once (a comparison would compute two, each scanning the group).
        pack.sort_by_cached_key(|h| (near_rank(h), *h != me, !p.group.contains(h), *h));
        let mut spread = Vec::new();
        if p.units.iter().any(|u| u.fit == Fit::Spread) {
            spread.clone_from(&pack);
            spread.sort_by_cached_key(|h| {
                let room = p.room.get(h).copied().unwrap_or_default();
                let most = (u32::MAX - room.cpu_millicores, u64::MAX - room.memory_bytes);
                (near_rank(h), *h != me, !p.group.contains(h), most, *h)
            });
        }
        Orders { pack, spread }
    }

    fn of(&self, fit: Fit) -> &[NodeId] {
        match fit {
            Fit::Pack => &self.pack,
            Fit::Spread => &self.spread,
        }
    }
}

/// Assigns every unit a host from the offers (in the unit's order of [`Orders`];
/// largest units first), or says what is short.
///
/// Units without an `apart` rule take the first host with an offer of their shape.
/// The units of one `apart` tag need distinct hosts: they are matched to hosts
/// (greedily, then by augmenting paths for any unit left over), so the order of
/// the choices never fails a tag that some assignment could place. The units of
/// a `spread` tag are first matched to distinct racks the same way (each rack
/// then gives its first host in order with an offer); when the racks that
/// offered cannot take them all, as many as they can take go to distinct racks,
/// the rest to distinct hosts, and the tag is reported unspread. The two kinds never compete for an offer: `apart` units have shapes
/// of their own.
pub(super) fn plan(me: NodeId, p: &Pending) -> Result<Plan, Resource> {
    let mut avail = p.offers.clone();
    let orders = Orders::new(me, p);
    let mut order: Vec<usize> = (0..p.units.len()).collect();
    order.sort_by_key(|u| std::cmp::Reverse(p.shapes[p.units[*u].shape].demand));
    let mut out = Plan {
        hosts: BTreeMap::new(),
        unspread: Vec::new(),
    };
    let mut tags: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for u in order {
        let unit = &p.units[u];
        if let Some(t) = unit.apart {
            tags.entry(t).or_default().push(u);
            continue;
        }
        let hosts = orders.of(unit.fit);
        let Some(h) = hosts.iter().copied().find(|h| avail[h][unit.shape] > 0) else {
            return Err(short_for(p, unit.shape));
        };
        if let Some(c) = avail.get_mut(&h) {
            c[unit.shape] -= 1;
        }
        out.hosts
            .entry(h)
            .or_default()
            .extend(unit.items.iter().copied());
    }
    for (tag, units) in &tags {
        let hosts = orders.of(p.units[units[0]].fit);
        let spread = units.iter().any(|u| p.units[*u].spread);
        let racked = if spread {
            match_racks(p, hosts, &avail, units)
        } else {
            None
        };
        if spread && !racked.as_ref().is_some_and(|r| r.1) {
            out.unspread.push(*tag);
        }
        let matched = match racked {
            Some((m, _)) => m,
            None => match_apart(p, hosts, &avail, units)?,
        };
        for (h, u) in matched {
            let unit = &p.units[u];
            if let Some(c) = avail.get_mut(&h) {
                c[unit.shape] -= 1;
            }
            out.hosts
                .entry(h)
                .or_default()
                .extend(unit.items.iter().copied());
        }
    }
    Ok(out)
}

/// Hosts for `units` (one `spread` tag) in as many distinct racks as the racks
/// that offered allow: a maximum matching of units to racks (each rack then
/// gives its first host in `hosts` order with an offer of the unit's shape), and
/// the units left over matched to distinct hosts among the rest. Whether every
/// unit got a rack of its own comes with it; `None` if even that fails (the
/// caller matches hosts alone then).
fn match_racks(
    p: &Pending,
    hosts: &[NodeId],
    avail: &BTreeMap<NodeId, Vec<u16>>,
    units: &[usize],
) -> Option<(BTreeMap<NodeId, usize>, bool)> {
    // A host whose place is unknown is a rack of its own, apart from every rack
    // number (u16) whatever its id (before, `u16::MAX + 1 + id` in u32 overflowed
    // for ids near `u32::MAX`: an agent configured with one, found by fuzzing).
    let rack = |h: &NodeId| {
        p.at.get(h)
            .map_or((1 << 16) + u64::from(h.0), |l| u64::from(l.rack))
    };
    let mut racks: Vec<u64> = Vec::new();
    for h in hosts {
        if !racks.contains(&rack(h)) {
            racks.push(rack(h));
        }
    }
    let host_in = |r: u64, u: usize| {
        hosts
            .iter()
            .copied()
            .find(|h| rack(h) == r && avail[h][p.units[u].shape] > 0)
    };
    let fits = |r: &u64, u: usize| host_in(*r, u).is_some();
    let mut taken: BTreeMap<u64, usize> = BTreeMap::new();
    let mut left = Vec::new();
    for &u in units {
        let mut seen = BTreeSet::new();
        if !augment(u, &racks, &fits, &mut taken, &mut seen) {
            left.push(u);
        }
    }
    let mut chosen: BTreeMap<NodeId, usize> = taken
        .into_iter()
        .map(|(r, u)| host_in(r, u).map(|h| (h, u)))
        .collect::<Option<_>>()?;
    let rest: Vec<NodeId> = hosts
        .iter()
        .copied()
        .filter(|h| !chosen.contains_key(h))
        .collect();
    let spread = left.is_empty();
    chosen.extend(match_apart(p, &rest, avail, &left).ok()?);
    Some((chosen, spread))
}

/// What is short for a unit of `shape` that no offer takes.
pub(super) fn short_for(p: &Pending, shape: usize) -> Resource {
    let Shape {
        demand,
        cpu_class,
        limits,
        ..
    } = p.shapes[shape];
    let best = p.room.values().fold(Demand::default(), |a, r| Demand {
        cpu_millicores: a.cpu_millicores.max(r.cpu_millicores),
        memory_bytes: a.memory_bytes.max(r.memory_bytes),
        accelerators: a.accelerators.max(r.accelerators),
    });
    match best.short_of(demand) {
        Some(r) => r,
        // Room enough, but no host offered one: too slow a cpu, as far as it knows.
        None if cpu_class > 0 && offered(p, shape) == 0 => Resource::CpuClass(cpu_class),
        // Or a limit no host could enforce.
        None => match limits.first().filter(|_| offered(p, shape) == 0) {
            Some(limit) => Resource::Limit(limit),
            None => Resource::Hosts,
        },
    }
}

/// A host for each of `units` (one `apart` tag), no host twice, each with an offer
/// of its unit's shape: a maximum bipartite matching (Kuhn), started from the greedy
/// choice so that the common case costs one pass.
pub(super) fn match_apart(
    p: &Pending,
    hosts: &[NodeId],
    avail: &BTreeMap<NodeId, Vec<u16>>,
    units: &[usize],
) -> Result<BTreeMap<NodeId, usize>, Resource> {
    let fits = |h: &NodeId, u: usize| avail[h][p.units[u].shape] > 0;
    let mut taken: BTreeMap<NodeId, usize> = BTreeMap::new();
    let mut left = Vec::new();
    for &u in units {
        match hosts.iter().find(|h| !taken.contains_key(h) && fits(h, u)) {
            Some(h) => {
                taken.insert(*h, u);
            }
            None => left.push(u),
        }
    }
    for u in left {
        let mut seen = BTreeSet::new();
        if !augment(u, hosts, &fits, &mut taken, &mut seen) {
            return Err(short_for(p, p.units[u].shape));
        }
    }
    Ok(taken)
}

/// Finds `u` a slot (a host, or a rack), moving earlier units to other slots along
/// an augmenting path.
pub(super) fn augment<T: Ord + Copy>(
    u: usize,
    hosts: &[T],
    fits: &impl Fn(&T, usize) -> bool,
    taken: &mut BTreeMap<T, usize>,
    seen: &mut BTreeSet<T>,
) -> bool {
    for h in hosts {
        if !fits(h, u) || !seen.insert(*h) {
            continue;
        }
        let free = match taken.get(h) {
            None => true,
            Some(&other) => augment(other, hosts, fits, taken, seen),
        };
        if free {
            taken.insert(*h, u);
            return true;
        }
    }
    false
}

/// What to ask each of `peers` new peers for: the uncovered units of each shape, split
/// between them with a margin of two (so that a gang does not hold a whole group's
/// capacity while it decides, which would starve the requests beside it).
pub(super) fn share(p: &Pending, peers: usize) -> Vec<Shape> {
    let mut shapes = p.shapes.clone();
    for (k, s) in shapes.iter_mut().enumerate() {
        let uncovered = u32::from(s.count).saturating_sub(offered(p, k)).max(1);
        let per = uncovered.div_ceil(peers.max(1) as u32).saturating_mul(2);
        s.count = per.min(u32::from(s.count)).max(1) as u16;
    }
    shapes
}

/// What the offers so far leave uncovered, shape by shape (an offer of one shape
/// does not cover another), and how many units that is; the whole request when
/// every shape is covered in number but the plan still fails (affinity, or the
/// packing of `together` units).
pub(super) fn uncovered(p: &Pending) -> (Demand, usize) {
    let missing: Vec<u16> = (0..p.shapes.len())
        .map(|k| {
            let short = u32::from(p.shapes[k].count).saturating_sub(offered(p, k));
            u16::try_from(short).unwrap_or(u16::MAX)
        })
        .collect();
    let units: usize = missing.iter().map(|m| usize::from(*m)).sum();
    if units > 0 {
        return (held(&p.shapes, &missing), units);
    }
    let all: Vec<u16> = p.shapes.iter().map(|s| s.count).collect();
    (held(&p.shapes, &all), p.units.len())
}

/// Units of shape `k` offered so far, by every host together.
pub(super) fn offered(p: &Pending, k: usize) -> u32 {
    p.offers.values().map(|c| u32::from(c[k])).sum()
}

/// What `counts` of `shapes` reserve together.
pub(super) fn held(shapes: &[Shape], counts: &[u16]) -> Demand {
    shapes
        .iter()
        .zip(counts)
        .fold(Demand::default(), |a, (s, c)| {
            (0..*c).fold(a, |a, _| a.plus(s.demand))
        })
}

/// The hosts of the pids a spec wants to be near.
pub(super) fn near_hosts(spec: &ProcSpec) -> Vec<NodeId> {
    spec.affinity
        .iter()
        .filter_map(|a| match a {
            Affinity::Near(pid) => Some(pid.origin()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::Phase;
    use super::*;
    use crate::agent::RequestId;
    use crate::host::WorkloadProfile;
    use crate::ids::Incarnation;
    use crate::ids::TenantId;
    use crate::placement::msg::ReqKey;

    /// A request of one process per entry of `demands` (millicores, 1 MiB each), key
    /// (node 1, life 1, seq 1), asking for offers.
    pub(in crate::placement::requester) fn pending(demands: &[u32]) -> Pending {
        let items: Vec<(ProcSpec, Demand)> = demands
            .iter()
            .map(|&cpu| {
                let demand = Demand {
                    cpu_millicores: cpu,
                    memory_bytes: 1 << 20,
                    accelerators: 0,
                };
                (ProcSpec::default(), demand)
            })
            .collect();
        let (units, shapes, tags) = units_of(&items, Duration::from_secs(60)).expect("valid");
        Pending {
            request: RequestId(1),
            key: ReqKey {
                requester: NodeId(1),
                incarnation: Incarnation(1),
                seq: 1,
            },
            tenant: TenantId(1),
            items,
            units,
            shapes,
            phase: Phase::Offers,
            asked: BTreeSet::new(),
            offers: BTreeMap::new(),
            room: BTreeMap::new(),
            level: 0,
            deadline: Time::ZERO,
            plan: BTreeMap::new(),
            pids: BTreeMap::new(),
            group: Vec::new(),
            near: Vec::new(),
            at: BTreeMap::new(),
            tags,
            unspread: Vec::new(),
            retried: false,
            since: Time::ZERO,
            creating_until: Time::ZERO,
        }
    }

    /// Regression: `apart` units were given hosts greedily, largest first, so a large
    /// unit could take the only host a smaller one fitted and the request failed
    /// `Short { Hosts }` although an assignment existed.
    #[test]
    fn apart_units_are_matched_not_taken_greedily() {
        let mut p = pending(&[4000, 100]);
        for u in &mut p.units {
            u.apart = Some(0);
        }
        for s in &mut p.shapes {
            s.one_per_host = true;
        }
        let (big, small) = (p.units[0].shape, p.units[1].shape);
        let mut offer = |host: u32, shapes: &[usize]| {
            let mut counts = vec![0; p.shapes.len()];
            for &k in shapes {
                counts[k] = 1;
            }
            p.offers.insert(NodeId(host), counts);
        };
        offer(2, &[big, small]);
        offer(3, &[big]);
        let chosen = plan(NodeId(1), &p).expect("an assignment exists").hosts;
        assert_eq!(chosen[&NodeId(2)], p.units[1].items);
        assert_eq!(chosen[&NodeId(3)], p.units[0].items);
    }

    /// Regression: escalation asked for "total minus everything offered", so offers of
    /// one shape hid the shortfall of another; a collection whose small processes were
    /// over-offered escalated asking for nothing, got no candidates and failed
    /// `Short { Hosts }` on a DC with room to spare.
    #[test]
    fn the_shortfall_is_counted_per_shape() {
        let mut p = pending(&[100, 100, 100, 4000]);
        // Two hosts offered three small ones each, nobody the large one.
        p.offers.insert(NodeId(2), vec![3, 0]);
        p.offers.insert(NodeId(3), vec![3, 0]);
        let (need, units) = uncovered(&p);
        assert_eq!((need.cpu_millicores, units), (4000, 1));
        // Everything is covered in number but the plan failed: look for room for all.
        p.offers.insert(NodeId(4), vec![0, 1]);
        let (need, units) = uncovered(&p);
        assert_eq!((need.cpu_millicores, units), (4300, 4));
    }

    /// A single process that the whole tree could not place fails rather than starting
    /// over (it used to retry once); a gang starts over while younger than its patience,
    /// and once more after that.
    #[test]
    fn only_gangs_start_over_and_only_within_their_patience() {
        let patience = Duration::from_millis(150);
        let at = |ms| Time::ZERO + Duration::from_millis(ms);
        let single = pending(&[1000]);
        assert!(!may_retry(patience, at(1), &single, false));
        let mut gang = pending(&[1000, 1000, 1000]);
        assert!(may_retry(patience, at(100), &gang, true));
        gang.retried = true;
        assert!(may_retry(patience, at(149), &gang, false));
        assert!(!may_retry(patience, at(150), &gang, false));
        gang.retried = false;
        assert!(may_retry(patience, at(400), &gang, false));
        assert!(!may_retry(patience, at(400), &gang, true));
    }

    /// `host` offered `counts` (per shape) with `cpu` millicores of room, from `rack`.
    fn offer(p: &mut Pending, host: u32, counts: Vec<u16>, cpu: u32, rack: u16) {
        let room = Demand {
            cpu_millicores: cpu,
            memory_bytes: 1 << 30,
            accelerators: 0,
        };
        p.offers.insert(NodeId(host), counts);
        p.room.insert(NodeId(host), room);
        p.at.insert(NodeId(host), Location { row: 0, rack });
    }

    /// A request of `n` processes under one `spread` tag.
    fn spread(n: usize) -> Pending {
        let mut p = pending(&vec![100; n]);
        let spec = ProcSpec {
            affinity: vec![Affinity::Spread("db".into())],
            ..ProcSpec::default()
        };
        let items: Vec<_> = p.items.iter().map(|(_, d)| (spec.clone(), *d)).collect();
        let (units, shapes, tags) = units_of(&items, Duration::from_secs(60)).expect("valid");
        (p.items, p.units, p.shapes, p.tags) = (items, units, shapes, tags);
        p
    }

    /// Issue 14: `spread` goes to distinct racks when the offers come from enough
    /// racks, even where the host order (by id) would fill one rack first; with
    /// too few racks it takes distinct hosts and names the tag.
    #[test]
    fn spread_units_take_distinct_racks_when_offered() {
        let mut p = spread(3);
        assert_eq!((p.shapes.len(), p.tags.clone()), (1, vec!["db".to_owned()]));
        offer(&mut p, 2, vec![1], 4000, 1);
        offer(&mut p, 3, vec![1], 4000, 1);
        offer(&mut p, 4, vec![1], 4000, 1);
        offer(&mut p, 5, vec![1], 4000, 2);
        offer(&mut p, 6, vec![1], 4000, 3);
        let chosen = plan(NodeId(1), &p).expect("fits");
        assert!(chosen.is_spread());
        let racks: BTreeSet<u16> = chosen.hosts.keys().map(|h| p.at[h].rack).collect();
        assert_eq!(racks, BTreeSet::from([1, 2, 3]), "{chosen:?}");

        // Two racks for three: distinct hosts, and the tag is reported.
        let mut p = spread(3);
        offer(&mut p, 2, vec![1], 4000, 1);
        offer(&mut p, 3, vec![1], 4000, 1);
        offer(&mut p, 5, vec![1], 4000, 2);
        let chosen = plan(NodeId(1), &p).expect("fits on distinct hosts");
        assert_eq!(chosen.unspread, vec![0]);
        assert_eq!(chosen.hosts.len(), 3);

        // `apart` alone keeps to hosts: the first three by id, one rack.
        let mut p = spread(3);
        for u in &mut p.units {
            u.spread = false;
        }
        offer(&mut p, 2, vec![1], 4000, 1);
        offer(&mut p, 3, vec![1], 4000, 1);
        offer(&mut p, 4, vec![1], 4000, 1);
        offer(&mut p, 5, vec![1], 4000, 2);
        let chosen = plan(NodeId(1), &p).expect("fits");
        assert!(chosen.is_spread());
        let hosts: Vec<u32> = chosen.hosts.keys().map(|h| h.0).collect();
        assert_eq!(hosts, vec![2, 3, 4]);
    }

    /// Found by fuzzing: a host whose place is unknown (an agent alone, here
    /// with the highest id) counts as a rack of its own; its key overflowed for
    /// ids near `u32::MAX`. Two such hosts and a rack-65535 host are three racks.
    #[test]
    fn hosts_of_unknown_place_are_racks_of_their_own_whatever_their_id() {
        let mut p = spread(3);
        for host in [u32::MAX, u32::MAX - 1] {
            p.offers.insert(NodeId(host), vec![1]);
        }
        offer(&mut p, 2, vec![1], 4000, u16::MAX);
        let chosen = plan(NodeId(u32::MAX), &p).expect("fits");
        assert!(chosen.is_spread(), "{chosen:?}");
        assert_eq!(chosen.hosts.len(), 3);
    }

    /// Issue 14: `near(pid)` prefers the pid's host, then its rack, then its row,
    /// over the host order.
    #[test]
    fn near_prefers_the_pids_rack_then_row() {
        let mut p = pending(&[100]);
        p.near = vec![NodeId(9)];
        offer(&mut p, 2, vec![1], 4000, 5);
        offer(&mut p, 3, vec![1], 4000, 7);
        offer(&mut p, 4, vec![1], 4000, 1);
        offer(&mut p, 9, vec![0], 0, 1);
        p.at.insert(NodeId(3), Location { row: 2, rack: 7 });
        p.at.insert(NodeId(9), Location { row: 2, rack: 1 });
        p.at.insert(NodeId(4), Location { row: 2, rack: 1 });
        let host = |p: &Pending| {
            *plan(NodeId(1), p)
                .expect("fits")
                .hosts
                .keys()
                .next()
                .unwrap()
        };
        assert_eq!(host(&p), NodeId(4), "the pid's rack");
        p.offers.insert(NodeId(4), vec![0]);
        assert_eq!(host(&p), NodeId(3), "the pid's row");
        p.offers.insert(NodeId(9), vec![1]);
        assert_eq!(host(&p), NodeId(9), "the pid's host");
        p.near.clear();
        assert_eq!(host(&p), NodeId(2), "without near: by id");
    }

    /// Issue 14, the profile rule: a short job, or one without a profile, takes
    /// the first offer in host order (by id here), a long-running one or a
    /// service the offer with the most room.
    #[test]
    fn profiles_pack_short_jobs_and_spread_long_ones() {
        let long_run = Duration::from_secs(60);
        let with = |duration| ProcSpec {
            profile: Some(WorkloadProfile {
                cpu_millicores: 100,
                memory_bytes: 1 << 20,
                duration,
            }),
            ..ProcSpec::default()
        };
        assert_eq!(fit_of(&ProcSpec::default(), long_run), Fit::Pack);
        assert_eq!(
            fit_of(&with(Some(Duration::from_secs(5))), long_run),
            Fit::Pack
        );
        assert_eq!(fit_of(&with(Some(long_run)), long_run), Fit::Spread);
        assert_eq!(fit_of(&with(None), long_run), Fit::Spread);
        let chosen = |fit| {
            let mut p = pending(&[100]);
            p.units[0].fit = fit;
            offer(&mut p, 2, vec![1], 3000, 1);
            offer(&mut p, 3, vec![1], 8000, 1);
            offer(&mut p, 4, vec![1], 500, 1);
            plan(NodeId(1), &p)
                .expect("fits")
                .hosts
                .into_keys()
                .next()
                .unwrap()
        };
        assert_eq!(chosen(Fit::Pack), NodeId(2));
        assert_eq!(chosen(Fit::Spread), NodeId(3));
    }

    /// A shape no host offered, with room enough for it, fails naming its cpu class.
    #[test]
    fn a_class_no_offer_meets_is_named() {
        let mut p = pending(&[100]);
        p.shapes[0].cpu_class = 9;
        offer(&mut p, 2, vec![0], 4000, 1);
        assert_eq!(plan(NodeId(1), &p), Err(Resource::CpuClass(9)));
    }
}
