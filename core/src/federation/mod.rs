//! Boot federation: agents organise themselves into a hierarchy of small
//! groups, with no master, and repair it on join, leave, crash and partition.
//!
//! # Structure
//!
//! Agents form level-0 groups of `min..=max` members, preferably within their
//! broadcast domain (the rack). Each group has one leader. The leader of a
//! level-`k` group also holds a seat in a level-`k + 1` group, whose members
//! are all leaders of level-`k` groups; so the groups form a tree, like the
//! nodes of a B-tree, and the one group without a parent is the top group
//! (the root). An agent holds at most one seat per level, and seats
//! `0..=top` with a seat at `k + 1` only if it leads its group at `k`: its
//! state is O(group size × depth), never O(cluster size).
//!
//! Leadership is deterministic and stable: the founder of a group leads it,
//! joiners never displace the leader, and when a leader leaves or fails the
//! lowest remaining id (the heir) takes over, its seats above included. A
//! group's view names the leaders above it (`ancestors`) and, for the groups
//! above that its own leader leads, their heirs (`heirs_above`): an heir that
//! took a group over from a dead leader attaches through them.
//!
//! # Messages ([`FedBody`])
//!
//! - `Attach { joiner, level }`: "`joiner` wants a seat at `level`" (an agent
//!   for level 0; the leader of a level-`level - 1` group otherwise). An agent
//!   that leads a group at `level` accepts; one that does not forwards the
//!   request up, to the leader of its top seat, until it reaches a group at that
//!   level or the root. A root whose tree is shorter than the joiner's, or as
//!   tall with a higher leader id, attaches itself to the joiner instead; one
//!   as tall with a lower id founds a new top group of the two roots. This is
//!   how separate trees (boot, partitions, orphaned subtrees) merge: every
//!   root probes a contact (seeds; agents that left its groups or its
//!   members' groups lately, told up the tree in the beats, [`departed`];
//!   agents it met: the members of its groups above level 0, those of its
//!   level-0 groups from other racks, and the leaders above its groups and
//!   their heirs; rack neighbours) every
//!   `probe_period` with an `Attach`; an `Attach` that comes back to its sender
//!   means the contact is in the same tree: the root leaves that contact out of
//!   its probes for a few probe periods and probes the next contact at once
//!   (once per tick). A root that attaches itself to the
//!   joiner asks the joiner again at its own next probe, in case that `Attach`
//!   is lost: the joiner's next probes go to other contacts.
//! - `View`: the leader's membership of a group, pushed to every member when it
//!   changes. A member follows its current leader: it takes a view from
//!   another leader only when its own leader is suspected, or when its own
//!   leader hands it over (split, hand-over on leave). It answers a view it does
//!   not take with `Leave`, except one led by a fellow member of its group: that
//!   may be the new half of a split whose hand-over is still on its way (or
//!   lost), so it waits, and answers that leader's `LeaderBeat`s instead (see
//!   below). A group's views are written by its leader alone, except the first one after a hand-over (split,
//!   leave, merge), written by the agent handing over. That one may be stale (its
//!   writer was cut off while an heir took over) and outrank the leader's own by
//!   epoch: so a leader jumps past any epoch written in its name that it hears of (a
//!   copy, a member's beat), and a member holding a hand-over asks the leader with
//!   `ViewReq` when the leader beats at the same epoch, and takes the leader's own
//!   view even at that epoch. A leader never pushes two different views at one
//!   level under one epoch in a life: each view it pushes, its own or one handed
//!   to it (a late copy of a hand-over may give it back a group it left), goes
//!   out under an epoch past every one it pushed there (`written`). A split's
//!   hand-over may be lost too: the splitting
//!   leader keeps it `remove_periods` periods and answers a `Beat`, `Probe` or
//!   `ViewReq` of one of the new half's members with it instead of `Leave`, and a
//!   plain member beaten by a fellow member as that member's leader (`Beat`: the
//!   hand-over naming it leader may be what was lost) or as its own leader
//!   (`LeaderBeat`: the hand-over to the fellow's half may be what was lost) asks
//!   its own leader with `ViewReq` and answers those beats with `Leave` only once
//!   its leader has beaten it since (it still lists it) or after `suspect_periods`
//!   periods.
//! - `Beat` (member → leader, with the member's subtree [`Summary`]) and
//!   `LeaderBeat` (leader → members), every `period`, carry the view's epoch; a
//!   member with an older epoch is sent the view (or asks with `ViewReq`). A
//!   `Beat` also names, in turn, one agent that left the member's groups lately
//!   or that its own members named ([`departed`]): so they reach the root.
//! - `RingBeat`: at level 0, each plain member also beats the next two plain
//!   members in id order, so that a member that dies with its leader is still
//!   suspected within the detection bound (by its ring successors), not only once
//!   the heir has taken over. Removal stays the leader's (or heir's) decision.
//! - `Probe` / `ProbeAck`: a direct check of a suspect before it is removed. A
//!   leader that does not list the prober answers `Leave` instead, so a member
//!   removed while it stalled learns, when it probes the heirs of a leader that
//!   died meanwhile, that the heir took the group over without it, and rejoins.
//!   So does a plain member that does not list the prober while its own leader
//!   answers: the group went on without the prober, perhaps under a leader that
//!   joined after its removal, and none of the heirs it probes would take its
//!   stale view over (swarm seed 10162). A `Leave` from a fellow member heard in
//!   a newer life since ([`Federation::peer_restarted`]) is not that: its earlier
//!   life's knowledge of the group is gone, and the member stays.
//! - `Leave { level }`: "we do not share a group at `level`": a member leaving
//!   for another group, or a member or leader disowning an agent that thinks it
//!   is a member.
//! - `Gone { level }`: a member leaving the federation for good (its host shuts
//!   down, [`Federation::leave`]). Its level-0 leader expels it and reports it
//!   `Removed`, so that services tell a host that is gone from one that moved to
//!   another group (supervision keeps the records of the first, and drops those of
//!   the second, which its new group keeps; swarm seed 30239).
//! - `ProbeReq` / `ProbeFor`: an indirect check (SWIM): a member asked to probe a
//!   suspect for another member relays the question, and the suspect answers the
//!   asker with `ProbeAck` (see [`detect`]).
//! - `MergeReq`, `MergeInto`, `Dissolve`: an undersized group asks its parent
//!   for a sibling, then its members (and its leader) attach to that sibling.
//!
//! # Timers and failure detection
//!
//! One tick every `period`. A leader suspects a member silent for more than
//! `suspect_periods` periods (so a crash is suspected within one period more
//! than that), probes it directly and through other members every tick while it
//! stays silent ([`detect`]), and removes it after `remove_periods` (at least
//! [`detect::MIN_PROBE_ROUNDS`] rounds after the suspicion; plus up to
//! [`detect::MAX_HEALTH`] periods while this agent's own health is poor, or while it
//! observes heavy heartbeat loss: more probe rounds before a removal). Members
//! watch their leader the same way; when they suspect it they also probe the
//! heirs ahead of them (the members after the leader, lowest id first). A member
//! takes over after `remove_periods`, plus `1 + MAX_HEALTH` periods for each heir
//! ahead of it that answered: so the lowest live heir takes over, even when the
//! heirs before it died with the leader, and even when its health delays it. A
//! stalled agent is suspected before it is removed, and one that comes back
//! simply rejoins.
//!
//! # Why it converges
//!
//! Without faults, every operation moves towards one tree: groupless agents
//! join a group, parentless groups attach into the tree their contact belongs
//! to (a total order on roots — height, then lowest leader id — decides which
//! tree absorbs which, so two roots never attach to each other), overfull
//! groups split in two halves of at least `min` members and the new half (led
//! by its lowest member that the splitting leader does not suspect) attaches
//! beside the old under the same parent (so all level-0 groups stay
//! at the same depth, as in a B-tree), undersized groups merge into a sibling,
//! and a top group of one dissolves. Depth stays within `log_min(N) + 1`.

mod departed;
pub mod detect;
mod protocol;
mod seat;
#[cfg(test)]
mod tests;
pub mod validate;
pub mod view;

use crate::ids::NodeId;
use crate::service::Payload;
use crate::time::Time;
use crate::timer::TimerTable;
use protocol::Farewell;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

pub use seat::Seat;
pub use view::{Level, Summary, View};

/// The parameters of one federation instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederationConfig {
    /// Which instance this is; messages carry it, so instances never mix.
    pub instance: u8,
    /// A name for logs and reports (e.g. the service that uses it).
    pub name: String,
    /// The fewest members a group other than the top group keeps.
    pub min_group: usize,
    /// The most members a group keeps; one more and it splits.
    pub max_group: usize,
    /// The protocol period: heartbeats and checks.
    pub period: Duration,
    /// Silent for more than this many periods: suspected.
    pub suspect_periods: u32,
    /// Silent for more than this many periods: removed (or replaced, for a leader);
    /// never before [`detect::MIN_PROBE_ROUNDS`] probe rounds after the suspicion
    /// ([`FederationConfig::removal_periods`]).
    pub remove_periods: u32,
    /// How often a root probes a contact for other trees.
    pub probe_period: Duration,
    /// Agents to contact first to find the rest of the cluster (a seed list).
    pub seeds: Vec<NodeId>,
}

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            instance: 0,
            name: "placement".to_owned(),
            min_group: 4,
            max_group: 16,
            period: Duration::from_millis(300),
            suspect_periods: 2,
            remove_periods: 4,
            probe_period: Duration::from_secs(1),
            seeds: Vec::new(),
        }
    }
}

/// Why a federation configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FederationConfigError {
    /// Groups could not split into two halves of at least `min_group`.
    #[error("federation {name}: max_group ({max}) must be at least 2 × min_group - 1 ({min}) and min_group at least 2")]
    GroupBounds {
        /// The instance.
        name: String,
        /// The configured minimum.
        min: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A group view would not fit one datagram.
    #[error("federation {name}: max_group ({max}) above 256 would not fit a view in one datagram")]
    TooLarge {
        /// The instance.
        name: String,
        /// The configured maximum.
        max: usize,
    },
    /// Timing that cannot work.
    #[error("federation {name}: period must be positive and {MAX_PERIODS} >= remove_periods > suspect_periods > 0")]
    Timing {
        /// The instance.
        name: String,
    },
    /// A period longer than [`MAX_CONFIG_PERIOD`](crate::discovery::MAX_CONFIG_PERIOD).
    #[error("federation {name}: {field} must be at most one hour")]
    Duration {
        /// The instance.
        name: String,
        /// The field.
        field: &'static str,
    },
}

/// The most periods `remove_periods` may count (so timeouts stay within hours).
pub const MAX_PERIODS: u32 = 1000;

impl FederationConfig {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), FederationConfigError> {
        if self.min_group < 2 || self.max_group + 1 < 2 * self.min_group {
            return Err(FederationConfigError::GroupBounds {
                name: self.name.clone(),
                min: self.min_group,
                max: self.max_group,
            });
        }
        if self.max_group > 256 {
            return Err(FederationConfigError::TooLarge {
                name: self.name.clone(),
                max: self.max_group,
            });
        }
        if self.period.is_zero()
            || self.suspect_periods == 0
            || self.remove_periods <= self.suspect_periods
            || self.remove_periods > MAX_PERIODS
        {
            return Err(FederationConfigError::Timing {
                name: self.name.clone(),
            });
        }
        for (field, d) in [("period", self.period), ("probe_period", self.probe_period)] {
            if d > crate::discovery::MAX_CONFIG_PERIOD {
                return Err(FederationConfigError::Duration {
                    name: self.name.clone(),
                    field,
                });
            }
        }
        Ok(())
    }

    /// The periods of silence after which an agent is removed or replaced:
    /// `remove_periods`, but at least [`detect::MIN_PROBE_ROUNDS`] periods (probe
    /// rounds) more than `suspect_periods`. With one round, one lost direct probe
    /// and three lost relays remove a live agent: at 5% loss, once in a few
    /// thousand suspicions, and suspicions come by the dozen a minute in a cluster
    /// of hundreds (swarm seed 140117).
    #[must_use]
    pub fn removal_periods(&self) -> u32 {
        self.remove_periods.max(
            self.suspect_periods
                .saturating_add(detect::MIN_PROBE_ROUNDS),
        )
    }

    /// How long an agent may be silent before it is removed: `removal_periods`,
    /// the tick that notices, and what poor local health or observed loss may add
    /// ([`detect::MAX_HEALTH`]).
    #[must_use]
    pub fn detection_timeout(&self) -> Duration {
        self.period * (self.removal_periods() + 1 + detect::MAX_HEALTH)
    }
}

/// A federation message, tagged with its instance.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FedMsg {
    /// The federation instance.
    pub instance: u8,
    /// The message.
    pub body: FedBody,
}

/// The messages of the protocol (see the module documentation).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FedBody {
    /// `joiner` wants a seat at `level`.
    Attach {
        /// Who wants the seat.
        joiner: NodeId,
        /// The level of the seat.
        level: Level,
        /// Forwarding hops so far (bounded).
        hops: u8,
    },
    /// A group's membership.
    View(View),
    /// Member → leader: alive, at this epoch, with this subtree.
    Beat {
        /// The group's level.
        level: Level,
        /// The member's view epoch.
        epoch: u64,
        /// The member's subtree (boxed: the services' parts make it the largest
        /// message by far, and every other message would carry its size).
        summary: Box<Summary>,
        /// An agent that left the member's groups lately, or that its own
        /// members reported: a contact for the root (see [`departed`]).
        departed: Option<NodeId>,
    },
    /// Member → next member in the level-0 ring: alive.
    RingBeat,
    /// Leader → member: alive, at this epoch.
    LeaderBeat {
        /// The group's level.
        level: Level,
        /// The leader's view epoch.
        epoch: u64,
    },
    /// Member → leader: please send the view.
    ViewReq {
        /// The group's level.
        level: Level,
    },
    /// Are you alive?
    Probe {
        /// The group's level.
        level: Level,
    },
    /// Yes.
    ProbeAck {
        /// The group's level.
        level: Level,
    },
    /// We do not share a group at `level` (any more).
    Leave {
        /// The group's level.
        level: Level,
    },
    /// Child leader → parent leader: my group at `level` is too small; name a sibling.
    MergeReq {
        /// The small group's level.
        level: Level,
    },
    /// Parent leader → child leader: merge your group at `level` into `target`'s.
    MergeInto {
        /// The small group's level.
        level: Level,
        /// The sibling's leader.
        target: NodeId,
    },
    /// Leader → members: the group at `level` is gone; attach to `target`.
    Dissolve {
        /// The group's level.
        level: Level,
        /// Where to attach.
        target: NodeId,
    },
    // Appended (wire version 3), so the variants above keep their tags.
    /// Origin → helper: probe `target`, a member of our group at `level`, for me.
    ProbeReq {
        /// The group's level.
        level: Level,
        /// The suspect.
        target: NodeId,
    },
    /// Helper → suspect: `origin`, a member of our group at `level`, asks whether you
    /// are alive; answer it with `ProbeAck`.
    ProbeFor {
        /// The group's level.
        level: Level,
        /// Who asked.
        origin: NodeId,
    },
    // Appended (wire version 11).
    /// Member → leader: I left the federation for good (my host is shutting down).
    /// At level 0 the leader reports it removed, as a removal for silence would;
    /// `Leave` is for a member that lives on in another group.
    Gone {
        /// The group's level.
        level: Level,
    },
}

impl FedBody {
    /// A short, stable name of the message kind, for traces.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            FedBody::Attach { .. } => "fed.attach",
            FedBody::View(_) => "fed.view",
            FedBody::Beat { .. } => "fed.beat",
            FedBody::RingBeat => "fed.ring_beat",
            FedBody::LeaderBeat { .. } => "fed.leader_beat",
            FedBody::ViewReq { .. } => "fed.view_req",
            FedBody::Probe { .. } => "fed.probe",
            FedBody::ProbeAck { .. } => "fed.probe_ack",
            FedBody::ProbeReq { .. } => "fed.probe_req",
            FedBody::ProbeFor { .. } => "fed.probe_for",
            FedBody::Leave { .. } => "fed.leave",
            FedBody::MergeReq { .. } => "fed.merge_req",
            FedBody::MergeInto { .. } => "fed.merge_into",
            FedBody::Dissolve { .. } => "fed.dissolve",
            FedBody::Gone { .. } => "fed.gone",
        }
    }
}

/// Something the federation wants known outside (logs, the simulator's statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FedNotice {
    /// `node` is suspected at `level` by this agent.
    Suspected {
        /// The suspect.
        node: NodeId,
        /// The level of the shared group.
        level: Level,
    },
    /// `node` was removed from this agent's group at `level` for silence (or replaced as leader).
    Removed {
        /// The removed agent.
        node: NodeId,
        /// The level of the group.
        level: Level,
    },
}

/// What the federation asks the agent to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FedOutput {
    /// Send `body` to `to`.
    Send(NodeId, FedBody),
    /// Make `notice` known.
    Notice(FedNotice),
}

const MAX_HOPS: u8 = 32;
/// The most ancestors a view lists (deeper than any hierarchy the depth bound allows).
const MAX_ANCESTORS: usize = 16;
/// Probes a new root makes every period before slowing to `probe_period`: six
/// seconds' worth, so that the roots left at the end of a boot under 10% loss (where a
/// probe and its answer cross several lossy hops) still merge within a few periods.
const FAST_PROBES: u32 = 20;
const MAX_CONTACTS: usize = 32;
/// Probe periods for which a contact whose probe came back (so in this agent's
/// tree) is not probed again: long enough that a root stops spending its probes
/// on its own tree, short enough that a contact cut off into another tree since
/// (a partition) is probed again soon after the heal.
const SAME_TREE_PROBES: u32 = 5;
/// Copies of a changed view pushed to each member.
const VIEW_COPIES: usize = 2;
/// Times a groupless agent asks the leader a merge sent it to before it asks its neighbours.
const JOIN_TARGET_TRIES: u32 = 3;

/// One federation instance of one agent.
///
/// Call order: [`Federation::boot`] once; then [`Federation::handle_message`],
/// [`Federation::handle_timeout`], [`Federation::set_neighbours`] and
/// [`Federation::write_own_payload`] as inputs come; drain
/// [`Federation::poll_output`] after each call; [`Federation::next_timeout`] says
/// when to call `handle_timeout` next.
#[derive(Debug)]
pub struct Federation {
    me: NodeId,
    config: FederationConfig,
    rng: ChaCha8Rng,
    seats: Vec<Seat>,
    own: Summary,
    /// What a member whose beat has not arrived yet counts as.
    unknown_member: Payload,
    /// Per level: what the services count in the group this agent leads there
    /// besides its members' beats (state registered with this agent as leader).
    pinned: Vec<Payload>,
    neighbours: Vec<NodeId>,
    contacts: VecDeque<NodeId>,
    /// Agents to probe before any other (the ancestors of a group this agent took over).
    priority_contacts: VecDeque<NodeId>,
    /// Probes sent, and per pool of [`Federation::next_contact`] (seeds, departed,
    /// contacts, rack neighbours) how many went to it: the next probe's pool among
    /// those with someone in them, and that pool's next entry.
    probes_sent: usize,
    pool_cursors: [usize; 4],
    /// Agents that left this agent's groups lately, and those its members
    /// reported: told to its leaders, and probed as a root.
    departed: departed::Departed,
    /// The contact of this root's latest probe, until its `Attach` comes back.
    probed: Option<NodeId>,
    /// The latest probe was the tick's own: if it comes back, the next contact is
    /// probed at once (once per tick).
    probe_again: bool,
    /// Contacts whose probe came back, and when: in this agent's tree, so skipped
    /// for [`SAME_TREE_PROBES`] probe periods (expired entries are dropped as
    /// contacts are chosen, so it holds at most the contacts probed meanwhile).
    same_tree: BTreeMap<NodeId, Time>,
    join_attempts: u32,
    /// The leader a merge or dissolve sent this agent to, asked first when groupless.
    join_target: Option<NodeId>,
    /// The group last dissolved under this agent (its level, leader and epoch),
    /// and until when a view of it at that epoch or before, arriving late, takes
    /// no seat (two periods: past them, the leader may lead a new group; its
    /// epochs go on from the last it pushed, or begin again in a new life).
    dissolved: Option<((Level, NodeId, u64), Time)>,
    /// The last view this agent pushed as a leader at each level, in this life:
    /// a view it leads is pushed under a newer epoch than every one it pushed at
    /// that level, unless it is that same view again. (Before, swarm seed 750127
    /// under loss and duplication: a leader left the group a split had handed it,
    /// then a late copy of the hand-over gave it the group back at the
    /// hand-over's epoch; its next changes reused epochs it had pushed with other
    /// ancestors, and the members, holding those epochs, kept the old views.)
    written: Vec<Option<View>>,
    next_join: Time,
    next_probe: Time,
    fast_probes: u32,
    timers: TimerTable<()>,
    outbox: VecDeque<FedOutput>,
    /// Lifeguard's local health: periods added to this agent's timeouts.
    health: detect::Health,
    /// The heartbeat loss this agent observes: periods added to its timeouts too.
    loss: detect::LossMeter,
}

impl Federation {
    /// The instance `config` for agent `me`, drawing jitter from `rng`; a member not
    /// heard from yet counts as `unknown_member` in summaries.
    /// The configuration must have passed [`FederationConfig::validate`].
    #[must_use]
    pub fn new(
        me: NodeId,
        config: FederationConfig,
        rng: ChaCha8Rng,
        unknown_member: Payload,
    ) -> Self {
        Federation {
            me,
            config,
            rng,
            seats: Vec::new(),
            own: Summary {
                agents: 1,
                group_size: 1,
                payload: Payload::default(),
            },
            unknown_member,
            pinned: Vec::new(),
            neighbours: Vec::new(),
            contacts: VecDeque::new(),
            priority_contacts: VecDeque::new(),
            probes_sent: 0,
            pool_cursors: [0; 4],
            departed: departed::Departed::default(),
            probed: None,
            probe_again: false,
            same_tree: BTreeMap::new(),
            join_attempts: 0,
            join_target: None,
            dissolved: None,
            written: Vec::new(),
            next_join: Time::ZERO,
            next_probe: Time::NEVER,
            fast_probes: 0,
            timers: TimerTable::default(),
            outbox: VecDeque::new(),
            health: detect::Health::default(),
            loss: detect::LossMeter::default(),
        }
    }

    /// For tests: an instance whose only seat is `view`'s group, led by this
    /// agent (`view.leader`), as if it had formed that group itself.
    #[cfg(test)]
    pub(crate) fn leading(view: View) -> Self {
        use rand::SeedableRng;
        let rng = ChaCha8Rng::seed_from_u64(1);
        let mut fed = Federation::new(
            view.leader,
            FederationConfig::default(),
            rng,
            Payload::default(),
        );
        fed.seats.push(Seat::new(view, Time::ZERO));
        fed
    }

    /// For tests: [`Federation::leading`], not having heard `unheard` yet, as a
    /// heir that has just taken the group over from a silent leader.
    #[cfg(test)]
    pub(crate) fn leading_unheard(view: View, unheard: &[NodeId]) -> Self {
        let mut fed = Federation::leading(view);
        fed.seats[0].suspects.extend(unheard.iter().copied());
        fed
    }

    /// For tests: [`Federation::leading`], having just handed `other` over, the
    /// other half of a split of that group.
    #[cfg(test)]
    pub(crate) fn leading_after_split(view: View, other: View) -> Self {
        let mut fed = Federation::leading(view);
        fed.seats[0].keep_hand_over(other, Time::ZERO);
        fed
    }

    /// Starts the protocol: the first join attempt comes after half a period, when
    /// discovery has had time to hear the neighbours.
    pub fn boot(&mut self, now: Time) {
        let half = self.config.period / 2;
        self.next_join = now + half;
        let first_tick = now + half.mul_f64(self.rng.gen::<f64>());
        self.timers.set((), first_tick);
    }

    /// The live agents of this agent's broadcast domain, in id order.
    pub fn set_neighbours(&mut self, neighbours: Vec<NodeId>) {
        self.neighbours = neighbours;
    }

    /// What the services report of this agent itself, up the hierarchy: `write`
    /// writes it over the previous one, in place (a payload is a few hundred bytes,
    /// and the agent hands it over after most calls).
    pub fn write_own_payload(&mut self, write: impl FnOnce(&mut Payload)) {
        write(&mut self.own.payload);
    }

    /// What the services count in the group this agent leads at `level` besides
    /// its members' beats; `None` for nothing.
    pub fn set_pinned(&mut self, level: usize, payload: Option<Payload>) {
        match (self.pinned.get_mut(level), payload) {
            (Some(pinned), payload) => *pinned = payload.unwrap_or_default(),
            (None, None) => {}
            (None, Some(payload)) => {
                self.pinned.resize(level + 1, Payload::default());
                self.pinned[level] = payload;
            }
        }
    }

    /// The summary of the group this agent leads at `level` (the sum of its members'
    /// subtrees; a member not heard from yet may hold anything), or `None` if it
    /// leads no group there.
    #[must_use]
    pub fn group_summary(&self, level: Level) -> Option<Summary> {
        let l = usize::from(level);
        self.seats
            .get(l)
            .filter(|s| s.led_by(self.me))
            .map(|_| self.aggregate(l))
    }

    /// Fires the tick if due.
    pub fn handle_timeout(&mut self, now: Time) {
        if self.timers.pop_expired(now).is_some() {
            self.tick(now);
            let next = now + self.config.period;
            self.timers.set((), next);
        }
        self.flush();
    }

    /// Takes a message from `from`.
    pub fn handle_message(&mut self, now: Time, from: NodeId, body: FedBody) {
        if from != self.me {
            self.on_message(now, from, body);
        }
        self.flush();
    }

    /// `node` was heard in a newer life. A fellow member (not the leader) of a group
    /// this agent follows lost what it knew of the group with its earlier life: a
    /// `Leave` it answers to a probe, while the leader is suspected, is not an heir
    /// disowning this agent, only an agent that is in another group now or in none.
    /// (Before, such an answer made every member that probed it leave the group: a
    /// member restarted shortly before its leader crashed broke the leader's group
    /// up before the heir could take it over, and the supervisors the leader ran,
    /// whose copies the heir kept, were taken over by nobody: swarm seed 101373.)
    /// Nor is it an heir about to take the group over: its earlier answers to
    /// probes stop delaying this agent's own succession (swarm seed 520311).
    pub fn peer_restarted(&mut self, node: NodeId) {
        for seat in &mut self.seats {
            if seat.view.contains(node) && !seat.led_by(self.me) && seat.view.leader != node {
                seat.reborn.insert(node);
            }
        }
    }

    /// Leaves the federation at once: hands over every group this agent leads and
    /// tells the others it is gone.
    pub fn leave(&mut self, now: Time) {
        self.drop_seats_from(now, 0, Farewell::Gone);
        self.next_join = Time::NEVER;
        self.flush();
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<FedOutput> {
        crate::outbox::take_next(&mut self.outbox)
    }

    /// When [`Federation::handle_timeout`] must be called next.
    #[must_use]
    pub fn next_timeout(&self) -> Option<Time> {
        self.timers.next_deadline()
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &FederationConfig {
        &self.config
    }

    /// This agent's seats, from level 0 up.
    #[must_use]
    pub fn seats(&self) -> &[Seat] {
        &self.seats
    }

    /// Whether this agent leads the top group of its tree.
    #[must_use]
    pub fn is_root(&self) -> bool {
        self.seats.last().is_some_and(|s| s.led_by(self.me))
    }

    /// The summary of the subtree under this agent's top seat (the whole tree, at the root).
    #[must_use]
    pub fn subtree_summary(&self) -> Summary {
        match self.seats.len() {
            0 => self.own,
            n if self.seats[n - 1].led_by(self.me) => self.aggregate(n - 1),
            n => self.contribution(n - 1),
        }
    }

    /// What this agent reports as its subtree in its seat at `level`: itself at
    /// level 0, else the aggregate of the group it leads one level down.
    fn contribution(&self, level: usize) -> Summary {
        if level == 0 {
            self.own
        } else {
            self.aggregate(level - 1)
        }
    }

    /// The sum of the members' subtrees of the group this agent leads at `level`.
    fn aggregate(&self, level: usize) -> Summary {
        let seat = &self.seats[level];
        let mut total = Summary {
            group_size: seat.view.members.len() as u32,
            agents: 0,
            payload: self.pinned.get(level).copied().unwrap_or_default(),
        };
        for m in &seat.view.members {
            let part = if *m == self.me {
                self.contribution(level)
            } else {
                seat.summaries.get(m).copied().unwrap_or(Summary {
                    agents: 1,
                    group_size: 0,
                    payload: self.unknown_member,
                })
            };
            total = total.plus(part);
        }
        total
    }

    fn send(&mut self, to: NodeId, body: FedBody) {
        if to != self.me {
            self.outbox.push_back(FedOutput::Send(to, body));
        }
    }

    fn notice(&mut self, notice: FedNotice) {
        self.outbox.push_back(FedOutput::Notice(notice));
    }

    /// Pushes every changed view to its members ([`VIEW_COPIES`] times), with its
    /// ancestors and heirs above brought up to date.
    fn flush(&mut self) {
        for level in 0..self.seats.len() {
            if self.seats[level].led_by(self.me) {
                let ancestors = self.ancestors_of(level);
                // Compared before it is collected: this runs after every input.
                let heirs = &self.seats[level].view.heirs_above;
                let heirs_moved = !heirs.iter().copied().eq(self.heirs_above(level));
                if self.seats[level].view.ancestors != ancestors || heirs_moved {
                    let heirs_above = self.heirs_above(level).collect();
                    let seat = &mut self.seats[level];
                    seat.view.ancestors = ancestors;
                    seat.view.heirs_above = heirs_above;
                    seat.view.epoch = seat.view.epoch.saturating_add(1);
                    seat.dirty = true;
                }
            }
            if !std::mem::take(&mut self.seats[level].dirty) {
                continue;
            }
            if self.seats[level].led_by(self.me) {
                self.claim_fresh_epoch(level);
            }
            // Sent twice: a member whose only copy is lost disagrees with its leader
            // until its next beat shows the old epoch. Views change rarely (joins,
            // removals, splits), so the copy costs little.
            let view = self.seats[level].view.clone();
            for m in &view.members {
                for _ in 0..VIEW_COPIES {
                    self.send(*m, FedBody::View(view.clone()));
                }
            }
        }
        debug_assert!(
            self.invariants_hold(),
            "federation invariants broken at {}",
            self.me
        );
    }

    /// The view this agent leads at `level`, about to be pushed, gets an epoch
    /// past the last view it pushed there, or that view's epoch if it is the same
    /// view again (see `written`).
    fn claim_fresh_epoch(&mut self, level: usize) {
        if self.written.len() <= level {
            self.written.resize(level + 1, None);
        }
        let view = &mut self.seats[level].view;
        if let Some(last) = &self.written[level] {
            let same = |a: &View, b: &View| {
                (a.leader, &a.members, &a.ancestors, &a.heirs_above)
                    == (b.leader, &b.members, &b.ancestors, &b.heirs_above)
            };
            if same(view, last) {
                view.epoch = view.epoch.max(last.epoch);
            } else if view.epoch <= last.epoch {
                view.epoch = last.epoch.saturating_add(1);
            }
        }
        self.written[level] = Some(view.clone());
    }

    fn invariants_hold(&self) -> bool {
        let top = self.seats.len();
        self.seats.iter().all(|s| s.is_consistent(self.me))
            && self
                .seats
                .iter()
                .enumerate()
                .all(|(l, s)| s.view.level as usize == l && (l + 1 == top || s.led_by(self.me)))
    }

    /// The ancestors of the group this agent leads at `level`, one per level above it:
    /// the leaders of its seats above, then the ancestors its top seat's leader gave it,
    /// unless it leads that seat too (see [`View::ancestors`]).
    fn ancestors_of(&self, level: usize) -> Vec<NodeId> {
        let above = self.seats.iter().skip(level + 1).map(|s| s.view.leader);
        // A root has nothing above its top group (its own view may still hold the
        // hints it was born with).
        let beyond = self
            .seats
            .last()
            .filter(|s| !s.led_by(self.me))
            .map(|s| s.view.ancestors.clone())
            .unwrap_or_default();
        above.chain(beyond).take(MAX_ANCESTORS).collect()
    }

    /// The heirs of the groups above `level` that this agent leads, nearest first
    /// ([`View::heirs_above`]): when it dies, the heir of its group at `level`
    /// finds the tree again through them. (Before, swarm seed 611093: the root also
    /// led its rack's level-0 group, that rack's other agents knew no one beyond
    /// it but the dead seeds, and once it crashed its heir led a tree of its own for
    /// good.)
    fn heirs_above(&self, level: usize) -> impl Iterator<Item = NodeId> + '_ {
        (self.seats.iter().skip(level + 1))
            .filter(|s| s.led_by(self.me))
            .filter_map(|s| s.view.heir())
            .take(MAX_ANCESTORS)
    }

    /// Remembers `nodes` as contacts for finding other trees.
    fn remember_contacts(&mut self, nodes: &[NodeId]) {
        for n in nodes {
            if *n != self.me && !self.contacts.contains(n) {
                if self.contacts.len() == MAX_CONTACTS {
                    self.contacts.pop_front();
                }
                self.contacts.push_back(*n);
            }
        }
    }

    /// The next agent to probe for another tree: the seeds, the agents that left
    /// its groups or its members reported ([`departed`]), the contacts it
    /// remembers and its rack neighbours take turns (a pool with no one in it takes
    /// no turn; an agent in two pools is in the first only), each walked in order,
    /// skipping this agent, the members of its own seats and the contacts found in
    /// its tree lately. (Before, contacts and rack neighbours shared every other
    /// probe, contacts first: a root whose rack of 64 was all in its own tree probed
    /// its rack mates for most of a minute before it came back to the contacts it
    /// had met in the other tree, swarm seed 611093.)
    fn next_contact(&mut self, now: Time) -> Option<NodeId> {
        if let Some(first) = self.priority_contacts.pop_front() {
            return Some(first);
        }
        let memory = self.config.probe_period * SAME_TREE_PROBES;
        self.same_tree
            .retain(|_, found| now.saturating_since(*found) < memory);
        let outside = |n: &NodeId| {
            *n != self.me
                && !self.same_tree.contains_key(n)
                && !self.seats.iter().any(|s| s.view.contains(*n))
        };
        let seeds: Vec<NodeId> = self.config.seeds.iter().copied().filter(outside).collect();
        let mut departed: Vec<NodeId> = (self.departed.all())
            .filter(|n| outside(n) && !seeds.contains(n))
            .collect();
        departed.sort_unstable();
        departed.dedup();
        let contacts: Vec<NodeId> = (self.contacts.iter().copied())
            .filter(|n| outside(n) && !seeds.contains(n) && !departed.contains(n))
            .collect();
        let neighbours: Vec<NodeId> = (self.neighbours.iter().copied())
            .filter(|n| outside(n) && !seeds.contains(n) && !contacts.contains(n))
            .filter(|n| !departed.contains(n))
            .collect();
        let pools = [seeds, departed, contacts, neighbours];
        let live: Vec<usize> = (0..pools.len()).filter(|&p| !pools[p].is_empty()).collect();
        if live.is_empty() {
            return None;
        }
        let turn = self.probes_sent;
        self.probes_sent = turn.wrapping_add(1);
        let pool = live[turn % live.len()];
        let cursor = &mut self.pool_cursors[pool];
        let next = pools[pool][*cursor % pools[pool].len()];
        *cursor = cursor.wrapping_add(1);
        Some(next)
    }
}
