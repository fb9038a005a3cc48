//! Supervision (issue 15): supervisors of tenant processes, as a system service
//! that outlives the host of any child and its own.
//!
//! # What this service owns
//!
//! - **Supervisors run here** (this agent is their *home*): created by
//!   `SpawnSupervised` (the children are spawned through placement with an
//!   internal call, [`ServiceOutput::Call`]), or taken over from a home that left
//!   the group. Each is a [`record::Record`]; the restart decisions are there.
//! - **Watching children.** Every `probe_period` the home sends each child's host
//!   [`SupervisionMsg::Watch`]; the host answers [`SupervisionMsg::Status`] (which
//!   watched processes ended, which it does not know) at once and again as soon as
//!   a watched process ends. A child is *lost* when its host does not know it, or
//!   (after the fence below) when its host is removed from the home's level-0
//!   group, when the ledger reports it lost, or when its host has been silent for
//!   `lost_after`. A lost or ended
//!   child is restarted by its policy, strategy and intensity: spawned again through
//!   placement (same spec, so the same affinity), with a new pid. Its watchers
//!   through messaging's monitors are told by messaging (the old pid ends or is
//!   lost); the names it held move to the new pid ([`naming`]).
//! - **Copies for the group** (the keepers' side): as the ledger does, a home sends
//!   each of its supervisors' records, on every change and every `refresh` (and
//!   every `retry` to a keeper that has not confirmed the latest version), to its
//!   keepers (its level-0 leader and heir, itself excluded), in fragments under
//!   one datagram. A level-0 leader holding the copy of a home no longer in its
//!   group takes the supervisor over (it becomes the home); the heir holds copies so
//!   that a leader that dies is replaced by one that has them. Non-leaders drop
//!   copies of departed homes after `hold`.
//! - **A give-up is told once kept.** A keeper confirms each version it holds
//!   ([`SupervisionMsg::Copied`]); a home tells of a child's give-up
//!   (`ServiceNotice::GaveUp`) only once every keeper holds a version with it,
//!   and sends the record to those that do not at every tick until then. A
//!   keeper that takes over from an older copy restarts the child (its hold
//!   then counts the end), as if the give-up had not been: it had not been told.
//!   (Before, a home told of a give-up whose copy was lost on the way and was
//!   then taken over: the child given up ran again, as in swarm seed 10151.)
//!   One that takes over a copy holding a give-up tells it (again, perhaps) once
//!   its own keepers hold it: the old home may have died before it told it.
//!   (Before, swarm seed 330599: a home paused just after deciding a give-up;
//!   its taker held the give-up and never told it, and the client never heard.)
//!
//! # No twins: leases and fences
//!
//! **The rule.** At most one process of a child runs at any time, with one
//! stated exception: a process whose host's *agent* is stalled cannot be fenced
//! by it, so it may outlive its lease until that agent's first input after the
//! stall (which fences it). Only local clocks and durations are used, never
//! synchronised clocks; every wait on another agent's clock adds a quarter
//! ([`slack`]).
//!
//! - **Child leases (the fence).** A host keeps a watched process only while its
//!   lease lasts: from its start, renewed by the `grant` of a `Watch`. A grant is
//!   the host's own clock reading from an earlier `Status` (its `ask`), echoed by
//!   the home, and the lease runs to that reading plus `lease`: a grant delayed
//!   or replayed can only shorten it. Past it, the host kills the process. A home
//!   that finds a host lost (silent for `lost_after`, removed from the group, or
//!   reported lost by the ledger) grants it nothing more and restarts its
//!   children only once the last ask it echoed to it arrived `slack(lease)` ago:
//!   by then the host has killed them, or is stalled (the exception). A host
//!   fences a supervisor's spawn from its start (`ServiceEvent::ProcessStarted`
//!   says it is one), watched or not: one whose home died before its first
//!   `Watch` ends with its lease all the same. (Before, such a process was
//!   fenced only once watched, and a home restarted a lost child its host never
//!   confirmed watching only once that host answered: a restart confirmed just
//!   before its home died on a host that died with it was never restarted.)
//!   A pid its host fences only from its first `Watch` (the record's `leased`
//!   false: records of agents before this) is still restarted only once its host
//!   answers again.
//! - **A home's authority.** A home grants, restarts and stops children (the
//!   siblings a strategy stops: a kill its host does not answer is sent again
//!   at the next tick) only while each of its
//!   keepers confirmed ([`SupervisionMsg::Held`]) an [`SupervisionMsg::Alive`]
//!   it sent less than `authority` ago, and so did enough members of the group
//!   it was last confirmed in to make, with the home, more than half of it (its
//!   [`quorum`]: an even split of the others goes to the home; a home cut off with a
//!   minority of its group cannot act, even when the minority's new leader and
//!   heir confirm it as keepers). A keeper takes a supervisor over only
//!   once its home left the group and `slack(authority)` has passed since the
//!   keeper last heard the home, so the old home's grants have ended (or at
//!   once, for a home heard in a newer life: its earlier life's grants ended with
//!   it, and waiting let its group dissolve into others before the heir took
//!   over, swarm seeds 93152 and 96172); the new
//!   home then counts every child host's lease as running until
//!   `slack(lease)` from the take-over, and grants each host at its first answer
//!   (so healthy children outlive their home's death when the take-over comes
//!   within their lease: with the defaults, removal 1.8 s plus the authority's
//!   1.9 s against a 3 s lease renewed every probe). A home that comes back
//!   after a take-over is told, in `Held`, to step down first: by the taker, and
//!   by any member that keeps the taker's record (whole or in fragments), so its
//!   quorum cannot confirm it while the taker's answer is lost.
//! - **Take-overs need most of the home's base.** A keeper takes over only
//!   once more than half of the home's quorum base, as the home's last `Alive`
//!   told it (the members whose confirmations the home's authority needs, the
//!   home aside), *disowned* the home for it ([`disown`]), in whichever groups
//!   they are: the side that may take over is the side the home cannot act
//!   without. A member disowns only if it confirmed no `Alive` of the home for
//!   `slack(authority)`, and then confirms none while the taker asks, so the
//!   home's majority and the taker's, which share a member, never both hold.
//!   (Before, each side counted its majority on its own state, swarm seed
//!   242716: a taker counted members cut off just after they confirmed the home,
//!   not suspected yet, whose confirmations still kept the home's authority.)
//!   A member disowns a home for one taker at a time, and, once it heard of a
//!   take-over of the home, for that taker alone; a taker counts its own, and
//!   disowns the home it took over from for no other taker (before, swarm seed
//!   780575: a taker gave its word, after a heal, to the old home's keeper on
//!   the other side, which took the stale copy over beside it); takers that
//!   split the members' word yield to the lowest id. The taker of a group
//!   holding most of the base claims as soon as the home's authority ended; a
//!   keeper elsewhere (a group without most of it) claims too, a promise's
//!   length later, so that it rarely splits the word with the first. (Before, a
//!   taker asked only the members of its own group, and only while its group
//!   held most of the base: a home that died with its base scattered over
//!   several groups, none holding most of it, was taken over by nobody, swarm
//!   seeds 610192, 631664 and 570613.) A home heard in a newer life needs the
//!   word too: its authority ended with its earlier life, which is not waited
//!   out, and a member that heard the newer life disowns it whatever it
//!   confirmed of the earlier one, but the word makes its taker the only one
//!   (before, such a home was taken over without a word once most of its base
//!   was in the group: a keeper in another group, asking the base, could have
//!   carried it too). A leader counts only the members it hears (not suspected
//!   by its federation seat) in judging whether its group holds most of the
//!   base: its view lags a partition, and an heir that just took its group over
//!   from a silent leader has heard none of the members it inherited
//!   ([`holds_most`], swarm seed 97566). A keeper cut off from its rack (which
//!   the home then stops counting as a keeper, so the home keeps its authority)
//!   hears no word and takes nothing over (before, it did, from a stale copy,
//!   and restarted children the home had restarted already: twins). A keeper in
//!   the group a home just moved to does not judge by its own group either: the
//!   home's base is still the group it left, whose members give their word to
//!   their own leader if the home fails before its base follows it (swarm seed
//!   90037: a home cut off from its group joined another and was taken over by
//!   its old leader; its new leader, judging by its own group, took the stale
//!   copy over too once a partition hid the home, and the home's `Dropped` on
//!   stepping down was lost). Members that a split of the group this keeper
//!   leads handed to another group are no longer counted (they live on,
//!   elsewhere; see [`Supervision::follow_group`]). The price: a home that
//!   fails together with half of the rest of its base or more is not taken over
//!   (its children are not restarted) unless most of it is back within half of
//!   `hold` after the home's last word (a copy of a home silent longer than
//!   that is never taken over: the members that would refuse a stale claim may
//!   have forgotten why).
//! - **Take-overs are told to the group and the base.** The members a
//!   take-over counted must not later confirm the old home: a heal may give the
//!   home most of its base again. So a new home tells the members of its group
//!   and of the old home's base, wherever they are (`TakenOver`, at
//!   [`TAKEN_TRIES`] ticks, and again at every `refresh` while it runs the
//!   supervisor); each remembers it for `hold` ([`taken`]) and tells the old
//!   home, and the supervisor's first home, in its `Held`, to step down first.
//!   (Before, swarm seed 90084: a leader took over a home cut off with a
//!   minority of its base; a partition of the home's rack then joined it to the
//!   members the take-over had counted, they confirmed it, and both homes
//!   restarted the children.) The earlier homes hear it too, wherever they
//!   are: the old home, every earlier home of the chain the new home heard of,
//!   and the supervisor's first home (its origin); a home running the
//!   supervisor from an older epoch steps down on it, whichever home it names.
//!   An old home in a newer life notes it, remembering nothing of the take-over
//!   it made, and its answer to the first home, whose base it may still be,
//!   tells that home to step down. (Before, swarm seed 441394: a home's one
//!   base member took it over across a partition and restarted, its keeper took
//!   over from the new life and told its group alone, and after the heal the new
//!   life confirmed the first home: twins. In a second run, the first home had
//!   committed a change of its base, unconfirmed, beside the first taker, and
//!   heard only of the second take-over; such a change is no longer committed,
//!   see [`quorum`].) Not covered: a member that disowned the home and then
//!   restarted confirms the home again, and may disown it for another taker,
//!   until the taker's next refresh reaches it. A home that returns to such
//!   members, or a second taker that holds a copy and asks them, and acts
//!   before then relies on the home's keepers. (Deferring the confirmations of a member reborn while
//!   the home had no authority closed the first, but stalled for `hold` every
//!   home whose one other member restarted: swarm seed 460789.)
//! - **A new home holds back.** For `slack(lease)` from its take-over it spawns
//!   nothing and counts no end its children's hosts report (they are counted when
//!   the hold ends): its copy may predate the old home's last restarts, whose
//!   processes it does not know, and which end with their leases by then (the old
//!   home's authority ended before the take-over).
//! - **Clocks.** A tick overdue by a probe period means a stall or a forward
//!   jump of the clock: the waits on other agents' clocks are pushed back by the
//!   lateness (`catch_up`).
//!
//! **Spawns the home never learned of.** A supervisor's spawns are marked for
//! placement (`CreateItem::leased`): a host kills their processes if still
//! unconfirmed three `confirm_timeout`s after creation (1.5 s by default, well
//! within a lease). So an aborted spawn whose `Abort` its host missed, or a
//! restart in flight when its home dies, leaves no process beside the next
//! spawn: an aborted child is spawned again only `slack(lease)` later, and a new
//! home holds back as long.
//!
//! **Former keepers.** A keeper keeps copies only of homes in its level-0 group:
//! a home that asks it from outside (as an old member of its quorum's base, or on
//! a stale view) lives on elsewhere, and the keeper drops its copies rather than
//! renew them (`forget_home`). A home tells keepers it no longer has to drop
//! their copies (`Dropped`, at [`DROPPED_TRIES`] ticks), except while it is in no
//! tree: an agent leaving the federation leaves its supervisors to its last
//! keepers (swarm seed 30239); one that joins a tree again tells them then (swarm
//! seed 91110: keepers left behind by a home that moved between groups kept their
//! copies, and one passed its copy on once the home restarted).
//!
//! A home that is a plain member and leaves the federation cleanly says `Gone`,
//! not `Leave`, to its leader, which reports it removed: its copies are kept and
//! taken over as a crashed home's (before, the leader took it for a move to
//! another group and dropped them: swarm seed 30239 unshrunk).
//!
//! **Copies passed on.** Only one member of a group takes a home's supervisors
//! over: the leader, or, for a home that leads (it restarted while leading), the
//! heir ([`taker_for`]). A keeper moved into another group keeps its copies, but
//! there it is a plain member, and the group's taker has none: the supervisors
//! were lost. So a member that keeps the copy of a home gone from its group (not
//! in it, or heard in a newer life) passes it to its group's taker
//! ([`SupervisionMsg::Pass`], every `retry` until confirmed, past `refresh` once
//! begun) once it would take it over if it were the taker itself (the home's
//! authority has ended and most of the home's base is here). The taker takes it over if the home is gone by
//! its own state too (heard in a newer life, or not in its group and not seen
//! leaving it alive for another in the last `hold`), and only with the word of
//! most of the home's base (the passer judged by a view that lags a partition,
//! swarm seed 95582), and confirms with `Copied`; the member then drops its
//! copy. A keeper in a group without most of the base claims for itself
//! instead (see "Take-overs need most of the home's base"), and so does one
//! whose taker has left its pass unanswered for a promise (paused, or cut off
//! from it), or at once one whose federation seat suspects its leader, the
//! taker it passes to (swarm seed 730212). (Before, swarm seed 30239: n44 took
//! a supervisor over, restarted 3.8 s later, and its one keeper, n51, had been
//! moved into another group as a plain member, or removed n44 itself and then
//! merged into another; either way nobody took the supervisor over again.) A
//! pass that comes whole while the word is asked is taken over on the word that
//! carries it, not at the next pass (which may go to another taker by then). A
//! home that moved to another group alive tells its former keepers to drop
//! their copies (`Dropped`), and its `Alive` from outside their group makes
//! them drop them too; one they do not hear cannot keep its authority without
//! most of its base, which a side that passes has. (Before swarm seed 94715,
//! only a home known removed or restarted was passed on: a keeper whose group
//! dissolved into another, without the home, which had died, kept its copy to
//! itself.)
//!
//! **Splits.** A leader splitting its group hands the copies of the homes in
//! the other half to that half's leader and heir (a `Pass` they keep as the
//! home's keepers, every `retry` until both confirm), and each side stops
//! counting the other half in the bases of those copies: the home's own base
//! drops them as they confirm it from their group. (Before, the splitter dropped
//! them: a home that had died unseen just before the split had sent nothing to
//! its new keepers, and its supervisor was lost, as in swarm seed 94715.)
//!
//! Not covered (stated, not fixed): a keeper that stopped being one of the
//! home's keepers and never hears the home again keeps its copies and may take over
//! without the home's authority accounting for it, if it keeps most of its group.
//! A home back from a lapse of its authority may be confirmed by a quorum none of
//! whose members keeps the taker's record (members on the taker's side that are
//! not its keepers); the taker tells it only if it hears it. The members' word
//! protects one base: a home whose base shrank after the taker last heard it
//! (members that left its group dropped from it) counts a majority of the
//! smaller base, which the taker's majority of the older one need not meet; and
//! a member that disowned a home and misses the `TakenOver` that follows
//! confirms the home again once the taker stops asking.
//! A pid given up as lost is also killed if its host answers again
//! (`abandoned`).
//!
//! Calls: `Supervisors` and `StopSupervisor` answer for the supervisors run by
//! the agent called (a supervisor taken over runs at its group's taker). A stop
//! is answered once every keeper holds the stopped record
//! ([`Supervision::finish_stops`]): a home that dies first is taken over stopped.

mod disown;
pub mod msg;
mod naming;
mod quorum;
mod record;
mod taken;

pub use msg::SupervisionMsg;

use crate::agent::Identity;
use crate::ids::{NodeId, Pid};
use crate::service::registry::earliest;
use crate::service::{
    internal_request, Context, GroupView, Service, ServiceEvent, ServiceNotice, ServiceOutput,
    Start, SummaryPart,
};
use crate::time::Time;
use crate::wire::Reject;
use nefele_api::calls::{ApiCall, ApiReply, RequestId};
use nefele_api::spec::{ExitStatus, Signal};
use nefele_api::supervision::{SupervisedSpawn, SupervisionError, SupervisorId, SupervisorState};
use nefele_api::{KillError, SpawnError};
use record::{Act, Child, Phase, Record};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// Supervision's parameters (`supervision = { ... }` in the agent's configuration).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisionConfig {
    /// The federation instance supervision rides.
    pub instance: u8,
    /// How often a home asks its children's hosts about them.
    pub probe_period: Duration,
    /// How long a children's host may stay silent before its children count as lost.
    pub lost_after: Duration,
    /// How long after a failed restart spawn it is tried again.
    pub retry: Duration,
    /// How often a home resends its whole records to its keepers.
    pub refresh: Duration,
    /// How long a keeper that does not lead keeps the copy of a departed home
    /// (and a member what it heard of take-overs and homes' bases); a copy is taken
    /// over only within half of it after its home's last word.
    pub hold: Duration,
    /// How many ended local processes a host remembers, to answer a late `Watch`
    /// (only supervisors' spawns and adopted processes: no home asks after others).
    pub ended_memory: u32,
    /// How long a child's host keeps a child without a grant from its home (the
    /// fence; counted on the host's clock from its own `ask`).
    pub lease: Duration,
    /// How long a home may grant leases and restart children after the last
    /// `Alive` its keepers confirmed (counted from when it sent it).
    pub authority: Duration,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        SupervisionConfig {
            instance: 0,
            probe_period: Duration::from_millis(300),
            lost_after: Duration::from_millis(1500),
            retry: Duration::from_millis(500),
            refresh: Duration::from_secs(5),
            hold: Duration::from_secs(30),
            ended_memory: 4096,
            lease: Duration::from_secs(3),
            authority: Duration::from_millis(1500),
        }
    }
}

/// Why a supervision configuration is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SupervisionConfigError {
    /// A bound that must be positive is zero.
    #[error("{0} must be positive")]
    Zero(&'static str),
}

/// Supervision's part of the federation summaries: empty (nothing climbs the tree
/// yet; it costs one byte per beat, the `Option` tag of its slot).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisionSummary {}

impl SummaryPart for SupervisionSummary {
    const UNKNOWN: Self = SupervisionSummary {};
    fn plus(self, _other: Self) -> Self {
        SupervisionSummary {}
    }
}

/// One take-over in a record's version: a take-over's version is above every
/// version of the record before it, whatever their changes.
const TAKE_OVER: u64 = 1 << 32;

/// A supervisor run here.
#[derive(Debug)]
struct Sup {
    rec: Record,
    /// Its record's version: the take-overs so far in the high 32 bits (see
    /// [`TAKE_OVER`]), changes since the last one below (bumped on every change).
    version: u64,
    /// Changed since last sent to the keepers.
    dirty: bool,
    /// The client's `SpawnSupervised`, until the first spawn answers.
    client: Option<RequestId>,
    /// Pids given up as lost, killed if their host answers again.
    abandoned: BTreeSet<Pid>,
    /// The home it was taken over from (told to step down when it comes back).
    from: Option<NodeId>,
    /// That home's quorum base as known at the take-over (empty for a
    /// supervisor created here): told of the take-over wherever its members
    /// are, for their word may have carried it.
    from_base: Vec<NodeId>,
    /// Ticks left to tell the group of the take-over ([`SupervisionMsg::TakenOver`]).
    announce: u32,
    /// Taken over: until then (a lease and its slack from the take-over) no child
    /// is spawned and no end counts, since the copy may be older than the old
    /// home's last restarts, whose processes end with their leases by then.
    hold: Option<Time>,
    /// Ends reported during the hold, counted once it is over.
    deferred: Vec<(Pid, ExitStatus)>,
    /// Children whose last spawn was aborted, not spawned again before then: the
    /// aborted spawn's processes (whose abort their hosts may not have heard)
    /// end with their lease from their start by then.
    not_before: BTreeMap<u32, Time>,
    /// The latest version each keeper confirmed holding.
    copied: BTreeMap<NodeId, u64>,
    /// When its record last went to a keeper.
    sent: Time,
    /// Give-ups not told yet (the last pid of each child given up), with the
    /// version that holds them: told once every keeper holds it.
    untold: Vec<(u64, Option<Pid>)>,
    /// Children being stopped (for a sibling's restart) whose kill waits for this
    /// home's authority or went unanswered: killed at the first tick it holds,
    /// unless they ended first (their host, granted nothing for them, ends them
    /// with their lease).
    unkilled: BTreeSet<Pid>,
    /// Clients' `StopSupervisor` calls, answered once every keeper holds the
    /// stopped record (see [`Supervision::finish_stops`]).
    stop_clients: Vec<RequestId>,
}

/// Host side: a local process a home watches.
#[derive(Debug)]
struct Watcher {
    home: NodeId,
    sup: SupervisorId,
    /// Its lease ends then (this host's clock): past it, the process is killed.
    until: Time,
}

/// A duration with the margin this service adds wherever it waits out another
/// agent's clock: a quarter more (clock rates differ by far less; forward jumps of
/// a clock larger than a probe period are caught by `catch_up`).
fn slack(d: Duration) -> Duration {
    d + d / 4
}

/// Whether `me`'s side, its level-0 group `group`, holds more than half of
/// `home`'s quorum base `base` (the home not counted: it is away either way; half
/// is not enough, an even split goes to the home). A leader counts only the
/// members it hears (not suspected): its view lags a partition by the removal
/// time, and an heir that has just taken the group over from a silent leader lists
/// members it has not heard at all. (Before, swarm seed 97566: heir n28 was cut
/// off alone with a partition and took over from its silent leader n50 the
/// supervisors n50 ran, counting the eight members across the partition, still
/// in its view, as its side; n50 kept its quorum there, and both restarted the
/// children: twins; the members' word is what guards that now, this only picks
/// who claims first.) A plain member has only the view its leader pushed.
fn holds_most(base: &[NodeId], home: NodeId, me: NodeId, group: GroupView<'_>) -> bool {
    let view = group.view();
    let heard = |m: NodeId| !group.led_by_me() || m == me || !group.suspects(m);
    let others = base.iter().copied().filter(|m| *m != home);
    let here = others
        .clone()
        .filter(|m| view.contains(*m) && heard(*m))
        .count();
    2 * here > others.count()
}

/// The member of the level-0 group `view` that takes over the supervisors of
/// `home` once it is gone: the leader, or, for a home that leads (it restarted
/// while leading and leads still), the heir.
fn taker_for(view: &crate::federation::View, home: NodeId) -> Option<NodeId> {
    if view.leader == home {
        view.heir()
    } else {
        Some(view.leader)
    }
}

/// An internal call in flight.
#[derive(Debug)]
enum Pending {
    /// A spawn of these children of `sup` (of `tenant`, to kill what it spawned if
    /// the supervisor stopped meanwhile).
    Spawn {
        sup: SupervisorId,
        tenant: nefele_api::TenantId,
        children: Vec<u32>,
    },
    /// A kill of `pid`, sent at `sent`. One that stops a child of `of` (for a
    /// sibling's restart) is sent again at the first tick `retry` after it if
    /// its host did not answer: the restart waits for that child's end. (Before,
    /// a kill lost on the way left the child to its lease, and the restart came a
    /// lease late: swarm seed 10284; then it was sent again only once the call
    /// timed out, and a one-for-all restart of 35 children under 5% loss, whose
    /// kill of one sibling was lost twice, came 2.4 s late: swarm seed 90663.)
    /// Other answers matter only as far as the watch says.
    Kill {
        of: Option<SupervisorId>,
        pid: Pid,
        sent: Time,
    },
    /// A registration of `name` for the local process `pid`, handed from its
    /// previous process (see [`naming`]).
    Register { pid: Pid, name: String },
}

/// A copy of a supervisor of another home.
#[derive(Debug)]
struct Copy {
    home: NodeId,
    version: u64,
    rec: Record,
    /// Since when its home has been out of this agent's level-0 group.
    away_since: Option<Time>,
    /// Its home restarted (a newer life was heard from): gone, even while its
    /// node is still in the group.
    home_restarted: bool,
    /// Its home was removed from this agent's group by its federation (for
    /// silence: down or cut off, not moved to another group).
    home_removed: bool,
    /// When it was last passed to its group's taker (see
    /// [`Supervision::pass_on`]).
    passed: Option<Time>,
    /// When its passing to its group's taker began: a taker that has not taken
    /// it over a promise later (paused, or slow) is claimed beside.
    passing_since: Option<Time>,
    /// The leader and heir of the other half of this agent's split that its home
    /// went to, that have not confirmed the copy passed to them yet (see
    /// [`Supervision::follow_group`]).
    handed: Vec<NodeId>,
}

impl Copy {
    /// A copy of version `version` of `home`'s record, its home in the group.
    fn new(home: NodeId, version: u64, rec: Record) -> Self {
        Copy {
            home,
            version,
            rec,
            away_since: None,
            home_restarted: false,
            home_removed: false,
            passed: None,
            passing_since: None,
            handed: Vec::new(),
        }
    }
}

/// One fragment of a record, as a `Replica` or a `Pass` carries it.
struct Fragment {
    sup: SupervisorId,
    home: NodeId,
    version: u64,
    part: u16,
    parts: u16,
    bytes: Vec<u8>,
}

impl Fragment {
    /// The fragment `msg` carries (a `Replica` is its sender's own record).
    fn of(from: NodeId, msg: SupervisionMsg) -> Option<Fragment> {
        match msg {
            SupervisionMsg::Replica {
                sup,
                version,
                part,
                parts,
                bytes,
            } => Some(Fragment {
                sup,
                home: from,
                version,
                part,
                parts,
                bytes,
            }),
            SupervisionMsg::Pass {
                sup,
                home,
                version,
                part,
                parts,
                bytes,
                base: _,
                epoch: _,
            } => Some(Fragment {
                sup,
                home,
                version,
                part,
                parts,
                bytes,
            }),
            _ => None,
        }
    }
}

/// Fragments of a record being received.
#[derive(Debug)]
struct Partial {
    /// The home the record is kept for (its sender, but for a `Pass`).
    home: NodeId,
    version: u64,
    parts: Vec<Option<Vec<u8>>>,
    /// For a `Pass` to this agent as its group's taker: the home's quorum base
    /// and its epoch as the passer knows them (`None`: unknown, or not a pass).
    passed_base: Option<(Vec<NodeId>, u64)>,
}

impl Partial {
    fn whole(&self) -> bool {
        self.parts.iter().all(Option::is_some)
    }
}

/// The most records one peer may have half-sent to a keeper at once. A record's
/// fragments are sent back to back, so a well-behaved home rarely has more than one
/// in flight; past the bound the peer's oldest half (in id order) is dropped (a
/// refresh sends it again), so a hostile peer can hold at most this many times
/// [`msg::MAX_PARTS`] fragments of memory at a keeper.
const MAX_PARTIAL_PER_PEER: usize = 16;
/// How many ticks a home tells a former keeper to drop its copies (a `Dropped` is
/// not answered; three make a loss of all unlikely).
const DROPPED_TRIES: u32 = 3;
/// How many ticks a new home tells its group of its take-over.
const TAKEN_TRIES: u32 = 3;
/// The most former keepers a home remembers to tell.
const MAX_FORMER_KEEPERS: usize = 16;

/// The supervision service of one agent.
#[derive(Debug)]
pub struct Supervision {
    me: Identity,
    config: SupervisionConfig,
    next_sequence: u32,
    next_call: u64,
    sups: BTreeMap<SupervisorId, Sup>,
    calls: BTreeMap<RequestId, Pending>,
    /// Home side: when each host of a watched child last answered.
    heard: BTreeMap<NodeId, Time>,
    /// Home side: each child host's latest `ask`, and when it arrived here.
    asks: BTreeMap<NodeId, (u64, Time)>,
    /// Home side: by when (this clock) every lease a child's host may hold for
    /// this home's children has surely ended.
    leases: BTreeMap<NodeId, Time>,
    /// Home side: hosts found lost, no longer granted: when their leases have
    /// surely ended, and the children (supervisor, pid) lost with them.
    fencing: BTreeMap<NodeId, (Time, Vec<(SupervisorId, Pid)>)>,
    /// Home side: each keeper's latest confirmed `Alive` (this clock when sent).
    held: BTreeMap<NodeId, Time>,
    /// Home side: the members of its group whose confirmations its authority
    /// needs besides its keepers' (empty while it runs no supervisor).
    quorum: quorum::Quorum,
    /// Keeper side: when each home of a copy was last heard (`Alive` or `Replica`).
    alive: BTreeMap<NodeId, Time>,
    /// Keeper side: each home's quorum base as its latest `Alive` told it (the
    /// members whose confirmations its authority needs), for the homes of copies
    /// and the members of this agent's group: a take-over needs more than half of
    /// them in this agent's group (see [`Supervision::take_over`]).
    bases: BTreeMap<NodeId, Vec<NodeId>>,
    /// Keeper side: the members of the level-0 group this agent led at the last
    /// change of its group (`None`: it did not lead), and the members it removed
    /// since (see [`Supervision::follow_group`]).
    led: Option<Vec<NodeId>>,
    removed: BTreeSet<NodeId>,
    /// Leader side: the members that left its group alive for another in the
    /// last `hold` (neither removed nor handed to a split's other half), and
    /// when: a copy of such a home passed to it is not taken over unless the
    /// home restarted (see [`Supervision::on_pass`]).
    left: BTreeMap<NodeId, Time>,
    /// Keeper side: the agents a newer life of which was heard here in the last
    /// `hold`, and when: a leader takes over a copy passed to it only for a home
    /// it knows restarted.
    restarted: BTreeMap<NodeId, Time>,
    /// Host side: the live local processes a home may ask after (supervisors'
    /// spawns and adopted processes, not tenants' own spawns) with their tenant
    /// and start, those of them that ended (bounded, oldest first), and who
    /// watches which.
    live: BTreeMap<Pid, (nefele_api::TenantId, Time)>,
    ended: BTreeMap<Pid, ExitStatus>,
    ended_order: VecDeque<Pid>,
    watchers: BTreeMap<Pid, Watcher>,
    /// Host side: the names supervised local processes hold (see [`naming`]).
    names: BTreeMap<Pid, Vec<String>>,
    /// Host side: supervisors' spawns here that no home watches yet, killed at
    /// this time (a lease from their start) unless a `Watch` comes first: a home
    /// that dies between a spawn and its first `Watch` leaves the process fenced
    /// all the same, so its next home can restart it once the lease is over.
    unwatched: BTreeMap<Pid, Time>,
    /// The home of each supervisor watching here, with its take-over epoch.
    owners: BTreeMap<SupervisorId, (u32, NodeId)>,
    /// Keeper side.
    copies: BTreeMap<SupervisorId, Copy>,
    partial: BTreeMap<(NodeId, SupervisorId), Partial>,
    keepers: Vec<NodeId>,
    /// Former keepers still to be told to drop their copies, with the ticks left
    /// to tell them (at most [`MAX_FORMER_KEEPERS`]).
    former: BTreeMap<NodeId, u32>,
    /// Member side: the take-overs in this agent's group, told to their old homes.
    taken: taken::Taken,
    /// Member and taker side: the words that let a take-over go ahead ([`disown`]).
    votes: disown::Votes,
    next_tick: Option<Time>,
    last_refresh: Time,
    outbox: VecDeque<ServiceOutput<SupervisionMsg>>,
}

impl Supervision {
    /// The supervisors run here, as a client of `tenant` sees them (all tenants:
    /// `None`), in id order.
    #[must_use]
    pub fn supervisors(
        &self,
        tenant: Option<nefele_api::TenantId>,
    ) -> Vec<nefele_api::supervision::SupervisorInfo> {
        self.sups
            .values()
            .filter(|s| tenant.is_none_or(|t| s.rec.tenant == t))
            .map(|s| s.rec.info(self.me.node))
            .collect()
    }

    /// The quorum base this agent, as a home, tells its keepers, by which they
    /// judge a take-over ([`quorum::Quorum::told_base`]; `group` is its level-0
    /// group): for checks.
    pub fn told_base(&self, group: &[NodeId]) -> Vec<NodeId> {
        self.quorum.told_base(self.me.node, group)
    }

    /// The quorum base of `home` (the home aside) this agent would judge a
    /// take-over of its supervisors by, as the home's last `Alive` here told it
    /// (for checks: a change the home committed while this agent was cut off is
    /// not in it).
    pub fn judged_base(&self, home: NodeId) -> Option<&[NodeId]> {
        self.bases.get(&home).map(Vec::as_slice)
    }

    /// The base before a change of this home's quorum base not committed yet:
    /// until most of it confirms, the home needs most of it too (for checks).
    pub fn pending_base(&self) -> Option<&[NodeId]> {
        self.quorum.pending_base()
    }

    /// The children (current or last pids) of every supervisor this agent runs or
    /// keeps a copy of: a supervisor no live agent keeps is lost (for checks).
    pub fn kept_children(&self) -> impl Iterator<Item = Pid> + '_ {
        let runs = self.sups.values().map(|s| &s.rec);
        let copies = self.copies.values().map(|c| &c.rec);
        runs.chain(copies)
            .flat_map(|r| r.children.iter().filter_map(|c| c.pid))
    }

    fn send(&mut self, to: NodeId, msg: SupervisionMsg) {
        self.outbox.push_back(ServiceOutput::Send(to, msg));
    }

    fn call(&mut self, call: ApiCall, pending: Pending) {
        let request = internal_request(self.next_call);
        self.next_call += 1;
        self.calls.insert(request, pending);
        self.outbox
            .push_back(ServiceOutput::Call(request, Box::new(call)));
    }

    fn arm(&mut self, now: Time) {
        let work = !self.sups.is_empty() || !self.copies.is_empty() || self.awaits_word();
        if self.next_tick.is_none() && work {
            self.next_tick = Some(now + self.config.probe_period);
        }
    }

    /// Carries out what a record's transition asks. A home without authority
    /// kills nothing: it may have been taken over, and the children its stale
    /// record stops may be the taker's. (Before, a home back from a stall after
    /// its take-over killed siblings by its strategy before it heard it had been
    /// replaced, and the taker, restarting them all, was late: swarm seed 10284.)
    fn act(&mut self, now: Time, sup: SupervisorId, acts: Vec<Act>) {
        let authorized = self.authorized(now);
        let Some(s) = self.sups.get_mut(&sup) else {
            return;
        };
        s.dirty = true;
        s.version += 1;
        let tenant = s.rec.tenant;
        for act in acts {
            match act {
                Act::Kill(pid) if authorized => self.kill(now, tenant, pid, Some(sup)),
                Act::Kill(pid) => {
                    if let Some(s) = self.sups.get_mut(&sup) {
                        s.unkilled.insert(pid);
                    }
                }
                Act::GaveUp(pid) => {
                    if let Some(s) = self.sups.get_mut(&sup) {
                        s.untold.push((s.version, pid));
                    }
                    self.tell_give_ups(now, sup);
                }
                Act::Spawn(children) => {
                    let held = self.sups.get_mut(&sup).is_some_and(|s| {
                        s.not_before.retain(|_, t| now < *t);
                        s.hold.is_some_and(|t| now < t)
                            || children.iter().any(|j| s.not_before.contains_key(j))
                    });
                    if held || !authorized {
                        // Perhaps taken over meanwhile: pending until authorized again.
                        if let Some(s) = self.sups.get_mut(&sup) {
                            s.rec.spawn_failed(&children);
                        }
                        continue;
                    }
                    let Some(s) = self.sups.get(&sup) else {
                        continue;
                    };
                    let specs: Vec<_> = children
                        .iter()
                        .map(|&j| s.rec.specs[s.rec.children[j as usize].spec as usize].clone())
                        .collect();
                    let call = match <[_; 1]>::try_from(specs) {
                        Ok([spec]) => ApiCall::Spawn { tenant, spec },
                        Err(specs) => ApiCall::CSpawn { tenant, specs },
                    };
                    self.call(
                        call,
                        Pending::Spawn {
                            sup,
                            tenant,
                            children,
                        },
                    );
                }
            }
        }
        self.arm(now);
    }

    /// Kills the children whose kill waited for this home's authority or went
    /// unanswered, those still being stopped.
    fn kill_unkilled(&mut self, now: Time) {
        let retry = self.config.retry;
        let unanswered: Vec<RequestId> = self
            .calls
            .iter()
            .filter(|(_, p)| {
                matches!(p, Pending::Kill { of: Some(_), sent, .. } if now >= *sent + retry)
            })
            .map(|(r, _)| *r)
            .collect();
        for request in unanswered {
            // Its late answer, if any, is not waited for.
            if let Some(Pending::Kill {
                of: Some(sup), pid, ..
            }) = self.calls.remove(&request)
            {
                if let Some(s) = self.sups.get_mut(&sup) {
                    s.unkilled.insert(pid);
                }
            }
        }
        let mut kills = Vec::new();
        for (id, s) in &mut self.sups {
            let rec = &s.rec;
            let stopping = |p: &Pid| {
                rec.child_of(*p)
                    .is_some_and(|i| rec.children[i].phase == Phase::Stopping)
            };
            kills.extend(
                std::mem::take(&mut s.unkilled)
                    .into_iter()
                    .filter(stopping)
                    .map(|p| (*id, rec.tenant, p)),
            );
        }
        for (sup, tenant, pid) in kills {
            self.kill(now, tenant, pid, Some(sup));
        }
    }

    /// Tells of `sup`'s give-ups that every keeper holds (all of them: no keeper),
    /// while this home is authorized (no keeper took it over meanwhile).
    fn tell_give_ups(&mut self, now: Time, sup: SupervisorId) {
        if !self.authorized(now) {
            return;
        }
        let Some(s) = self.sups.get_mut(&sup) else {
            return;
        };
        let kept = self
            .keepers
            .iter()
            .map(|k| s.copied.get(k).copied().unwrap_or(0))
            .min()
            .unwrap_or(u64::MAX);
        let mut told = Vec::new();
        s.untold.retain(|&(version, pid)| {
            if version <= kept {
                told.push(pid);
            }
            version > kept
        });
        for pid in told {
            self.outbox
                .push_back(ServiceOutput::Notice(ServiceNotice::GaveUp { pid }));
        }
    }

    /// The process `pid` of supervisor `sup` ended (or was lost) as `status`.
    fn on_end(&mut self, now: Time, sup: SupervisorId, pid: Pid, status: ExitStatus) {
        let Some(s) = self.sups.get_mut(&sup) else {
            return;
        };
        if s.hold.is_some_and(|t| now < t) {
            if !s.deferred.contains(&(pid, status)) {
                s.deferred.push((pid, status));
            }
            return;
        }
        if s.abandoned.remove(&pid) {
            return;
        }
        let Some(i) = s.rec.child_of(pid) else {
            return;
        };
        let acts = s.rec.child_ended(now, i, status);
        if status == ExitStatus::Lost {
            s.abandoned.insert(pid);
        }
        self.act(now, sup, acts);
    }

    /// `host` is found lost (it left the group or stayed silent): it is granted
    /// nothing more, and its children count as lost once every lease it may hold
    /// for them has surely ended (see the module doc).
    fn host_lost(&mut self, now: Time, host: NodeId) {
        self.heard.remove(&host);
        self.asks.remove(&host);
        if self.fencing.contains_key(&host) {
            return;
        }
        let lost: Vec<(SupervisorId, Pid)> = self
            .sups
            .iter()
            .flat_map(|(id, s)| {
                s.rec
                    .children
                    .iter()
                    .filter_map(|c| c.pid)
                    .filter(|p| p.origin() == host)
                    .map(move |p| (*id, p))
            })
            .collect();
        let ready = self.leases.remove(&host).unwrap_or(now).max(now);
        if !lost.is_empty() {
            self.fencing.insert(host, (ready, lost));
        }
    }

    /// Whether this home may grant leases and restart children now: every keeper
    /// confirmed an `Alive` it sent less than `authority` ago (no keeper: always),
    /// and so did most of its group's quorum ([`quorum`]).
    fn authorized(&self, now: Time) -> bool {
        self.keepers.iter().all(|k| {
            self.held
                .get(k)
                .is_some_and(|t| now < *t + self.config.authority)
        }) && self.quorum.holds(now, self.config.authority)
    }

    /// Home side: asks its keepers and its quorum to confirm it is alive (the
    /// quorum first follows the group's membership).
    fn ask_alive(&mut self, now: Time, ctx: &Context<'_>) {
        let group = ctx.tree.local_group();
        let me = self.me.node;
        self.quorum.follow(now, self.config.authority, me, &group);
        let mut askees = self.quorum.askees(me, &group);
        askees.extend(ctx.tree.keepers());
        askees.sort_unstable();
        askees.dedup();
        let base = self.quorum.told_base(me, &group);
        let epoch = (u64::from(self.me.incarnation.0) << 32) | self.quorum.epoch();
        for to in askees {
            let at = now.as_nanos();
            let base = base.clone();
            self.send(to, SupervisionMsg::Alive { at, base, epoch });
        }
    }

    /// Host side: kills the watched (or never watched) supervised processes whose
    /// lease ended.
    fn fence(&mut self, now: Time) {
        let expired: Vec<Pid> = self
            .watchers
            .iter()
            .map(|(p, w)| (p, w.until))
            .chain(self.unwatched.iter().map(|(p, t)| (p, *t)))
            .filter(|(_, until)| *until <= now)
            .map(|(p, _)| *p)
            .collect();
        for pid in expired {
            self.watchers.remove(&pid);
            self.unwatched.remove(&pid);
            if let Some((tenant, _)) = self.live.remove(&pid) {
                self.kill(now, tenant, pid, None);
                // Ended for the homes that ask (its exit, when reported, replaces it).
                self.remember_end(pid, ExitStatus::Lost);
            }
        }
    }

    /// Run first on every input: a tick overdue by a probe period or more means
    /// this agent was stalled or its clock jumped forward. Its children's hosts
    /// get a fresh `lost_after` (their silence was its own), and everything it
    /// waits out on behalf of other agents' clocks (leases, fences, homes'
    /// authority) is pushed back by the lateness: a jump does not end them early,
    /// a stall only makes them later.
    fn catch_up(&mut self, now: Time) {
        let Some(due) = self.next_tick else {
            return;
        };
        let late = now.saturating_since(due);
        if late < self.config.probe_period {
            return;
        }
        for t in self.heard.values_mut() {
            *t = now;
        }
        for t in self
            .leases
            .values_mut()
            .chain(self.alive.values_mut())
            .chain(self.fencing.values_mut().map(|(t, _)| t))
            .chain(
                self.sups
                    .values_mut()
                    .flat_map(|s| s.hold.iter_mut().chain(s.not_before.values_mut())),
            )
        {
            *t = *t + late;
        }
        self.next_tick = Some(now);
    }

    /// Every input starts here: catches up after a stall, fences expired leases.
    fn enter(&mut self, now: Time) {
        self.votes.live(now);
        self.catch_up(now);
        self.fence(now);
    }

    fn new_supervisor(
        &mut self,
        now: Time,
        request: RequestId,
        tenant: nefele_api::TenantId,
        spawn: SupervisedSpawn,
        spec: nefele_api::supervision::SupervisionSpec,
    ) {
        let n = spawn.children();
        if let Err(why) = spec.check(n) {
            let reply = ApiReply::SpawnedSupervised(Err(SpawnError::Invalid(why)));
            return self.outbox.push_back(ServiceOutput::Reply(request, reply));
        }
        let (specs, call) = match spawn {
            SupervisedSpawn::One(s) => (vec![s.clone()], ApiCall::Spawn { tenant, spec: s }),
            SupervisedSpawn::N(n, s) => (vec![s.clone()], ApiCall::NSpawn { tenant, n, spec: s }),
            SupervisedSpawn::C(specs) => (specs.clone(), ApiCall::CSpawn { tenant, specs }),
        };
        let id = SupervisorId {
            origin: self.me.node,
            incarnation: self.me.incarnation,
            sequence: self.next_sequence,
        };
        self.next_sequence += 1;
        let children = (0..n)
            .map(|i| Child {
                spec: if specs.len() == 1 { 0 } else { i as u32 },
                policy: spec
                    .policy(i)
                    .unwrap_or(nefele_api::supervision::RestartPolicy::Permanent),
                pid: None,
                phase: Phase::Spawning,
                restarts: 0,
                recent: Vec::new(),
                cause: None,
                leased: false,
                names: Vec::new(),
                handing: None,
            })
            .collect();
        let rec = Record {
            id,
            tenant,
            strategy: spec.strategy,
            intensity: spec.intensity,
            specs,
            children,
            history: Vec::new(),
            state: SupervisorState::Running,
        };
        self.sups.insert(
            id,
            Sup {
                rec,
                version: 0,
                // Copied to the keepers once its children run: a home that dies
                // before leaves its client without an answer and nothing to supervise.
                dirty: false,
                client: Some(request),
                abandoned: BTreeSet::new(),
                from: None,
                from_base: Vec::new(),
                announce: 0,
                hold: None,
                deferred: Vec::new(),
                not_before: BTreeMap::new(),
                copied: BTreeMap::new(),
                sent: Time::ZERO,
                untold: Vec::new(),
                unkilled: BTreeSet::new(),
                stop_clients: Vec::new(),
            },
        );
        let children = (0..n as u32).collect();
        self.call(
            call,
            Pending::Spawn {
                sup: id,
                tenant,
                children,
            },
        );
        self.arm(now);
    }

    fn kill(
        &mut self,
        now: Time,
        tenant: nefele_api::TenantId,
        pid: Pid,
        of: Option<SupervisorId>,
    ) {
        let call = ApiCall::Kill {
            tenant,
            pid,
            signal: Signal::Kill,
        };
        self.call(call, Pending::Kill { of, pid, sent: now });
    }

    /// An internal call was answered.
    fn on_answer(&mut self, now: Time, request: RequestId, reply: &ApiReply) {
        let (sup, tenant, children) = match self.calls.remove(&request) {
            Some(Pending::Spawn {
                sup,
                tenant,
                children,
            }) => (sup, tenant, children),
            Some(Pending::Kill {
                of: Some(sup), pid, ..
            }) if *reply == ApiReply::Killed(Err(KillError::Unreachable)) => {
                if let Some(s) = self.sups.get_mut(&sup) {
                    s.unkilled.insert(pid);
                }
                return;
            }
            _ => return,
        };
        let Some(result) = reply.clone().spawn_result() else {
            return;
        };
        let result = &result;
        let Some(s) = self.sups.get_mut(&sup) else {
            // Stopped meanwhile: what it spawned goes too.
            for &pid in result.iter().flatten() {
                self.kill(now, tenant, pid, None);
            }
            return;
        };
        let client = s.client.take();
        match result {
            Ok(pids) => {
                let restarted = s.rec.spawned(&children, pids, now + naming::HAND_OVER);
                // A pid no child took (the supervisor stopped meanwhile) is killed.
                let unwanted: Vec<Pid> = pids
                    .iter()
                    .filter(|p| s.rec.child_of(**p).is_none())
                    .copied()
                    .collect();
                s.dirty = true;
                s.version += 1;
                for (pid, since) in restarted {
                    let latency = now.saturating_since(since);
                    let notice = ServiceNotice::Restarted { pid, latency };
                    self.outbox.push_back(ServiceOutput::Notice(notice));
                }
                if let Some(client) = client {
                    let reply = ApiReply::SpawnedSupervised(Ok((sup, pids.clone())));
                    self.outbox.push_back(ServiceOutput::Reply(client, reply));
                }
                for pid in unwanted {
                    self.kill(now, tenant, pid, None);
                }
                // A new process's host keeps it for a lease from its start, which
                // was before now.
                let until = now + slack(self.config.lease);
                for pid in pids {
                    self.heard.entry(pid.origin()).or_insert(now);
                    let t = self.leases.entry(pid.origin()).or_insert(until);
                    *t = (*t).max(until);
                }
                self.watch(now, sup, None);
            }
            Err(e) => {
                if let Some(client) = client {
                    self.sups.remove(&sup);
                    let reply = ApiReply::SpawnedSupervised(Err(e.clone()));
                    self.outbox.push_back(ServiceOutput::Reply(client, reply));
                } else {
                    // Pending again: tried anew at the next tick, or once the
                    // processes an aborted spawn may have left are surely gone.
                    s.rec.spawn_failed(&children);
                    if let SpawnError::Short { resource } | SpawnError::Unavailable { resource } =
                        *e
                    {
                        for &j in &children {
                            let pid = s.rec.children.get(j as usize).and_then(|c| c.pid);
                            let notice = ServiceNotice::RestartShort { pid, resource };
                            self.outbox.push_back(ServiceOutput::Notice(notice));
                        }
                    }
                    if *e == SpawnError::Aborted {
                        let until = now + slack(self.config.lease);
                        s.not_before.extend(children.iter().map(|&j| (j, until)));
                    }
                }
            }
        }
    }

    /// Sends `Watch` for `sup`'s processes to their hosts (or to `only`): its
    /// running children with a grant, while this home is authorized and the host
    /// is not lost; children being stopped (for a sibling's restart or a stop) and
    /// the pids it gave up as lost without one, so that their hosts fence them
    /// within a lease even if the kill was lost.
    fn watch(&mut self, now: Time, sup: SupervisorId, only: Option<NodeId>) {
        let authorized = self.authorized(now);
        let Some(s) = self.sups.get(&sup) else {
            return;
        };
        let epoch = (s.version / TAKE_OVER) as u32;
        let mut by_host: BTreeMap<(NodeId, bool), Vec<Pid>> = BTreeMap::new();
        let current = s
            .rec
            .children
            .iter()
            .filter(|c| matches!(c.phase, Phase::Running | Phase::Stopping))
            .filter_map(|c| c.pid.map(|p| (p, c.phase == Phase::Running)));
        for (pid, granted) in current.chain(s.abandoned.iter().map(|p| (*p, false))) {
            if only.is_none_or(|h| h == pid.origin()) {
                by_host
                    .entry((pid.origin(), granted))
                    .or_default()
                    .push(pid);
            }
        }
        for ((host, granted), pids) in by_host {
            let grant = if granted && authorized && !self.fencing.contains_key(&host) {
                self.asks.get(&host).map(|&(ask, received)| {
                    let until = received + slack(self.config.lease);
                    let t = self.leases.entry(host).or_insert(until);
                    *t = (*t).max(until);
                    ask
                })
            } else {
                None
            };
            for chunk in pids.chunks(msg::MAX_PIDS) {
                let pids = chunk.to_vec();
                if host == self.me.node {
                    self.on_watch(now, host, sup, epoch, pids, grant);
                } else {
                    let msg = SupervisionMsg::Watch {
                        sup,
                        epoch,
                        pids,
                        grant,
                    };
                    self.send(host, msg);
                }
            }
        }
        self.hand(now, sup, only);
    }

    /// Host side: a home asks about `pids`. A home of an earlier take-over than
    /// another that watches here (or of the same, from a higher node) is told to step
    /// down.
    /// A watched pid is kept until its lease ends: from its start, renewed by
    /// `grant` (the host's own clock reading it sent earlier, so never later than
    /// now), and killed past it (`fence`).
    fn on_watch(
        &mut self,
        now: Time,
        from: NodeId,
        sup: SupervisorId,
        epoch: u32,
        pids: Vec<Pid>,
        grant: Option<u64>,
    ) {
        let owner = *self.owners.entry(sup).or_insert((epoch, from));
        if owner.1 != from {
            if (epoch, std::cmp::Reverse(from)) < (owner.0, std::cmp::Reverse(owner.1)) {
                if from == self.me.node {
                    self.step_down(sup, Err(SupervisionError::NoSuchSupervisor));
                } else {
                    self.send(from, SupervisionMsg::Forget { sup });
                }
                return;
            }
            self.owners.insert(sup, (epoch, from));
        }
        let (mut ended, mut unknown, mut kept) = (Vec::new(), Vec::new(), Vec::new());
        for pid in pids {
            if pid.origin() != self.me.node {
                continue;
            }
            let lease = self.config.lease;
            let granted = grant
                .filter(|g| *g <= now.as_nanos())
                .map(|g| Time::from_nanos(g) + lease);
            if let Some(&(_, started)) = self.live.get(&pid) {
                self.unwatched.remove(&pid);
                let w = self.watchers.entry(pid).or_insert(Watcher {
                    home: from,
                    sup,
                    until: started + lease,
                });
                w.home = from;
                w.sup = sup;
                w.until = w.until.max(granted.unwrap_or(Time::ZERO));
                kept.push(pid);
            } else if let Some(status) = self.ended.get(&pid) {
                ended.push((pid, *status));
            } else {
                unknown.push(pid);
            }
        }
        let named: Vec<Pid> = kept
            .iter()
            .filter(|p| self.names.contains_key(p))
            .copied()
            .collect();
        self.status_to(now, from, sup, true, ended, unknown, kept);
        for pid in named {
            self.tell_names(now, pid);
        }
    }

    /// Host side: tells `to` about `sup`'s processes here (to itself directly).
    #[allow(clippy::too_many_arguments)]
    fn status_to(
        &mut self,
        now: Time,
        to: NodeId,
        sup: SupervisorId,
        answer: bool,
        ended: Vec<(Pid, ExitStatus)>,
        unknown: Vec<Pid>,
        kept: Vec<Pid>,
    ) {
        let msg = SupervisionMsg::Status {
            sup,
            answer,
            ended,
            unknown,
            kept,
            ask: now.as_nanos(),
        };
        if to == self.me.node {
            let me = self.me.node;
            self.on_status(now, me, msg);
        } else {
            self.send(to, msg);
        }
    }

    /// Home side: a host told about `sup`'s processes there. Its first answer
    /// here is granted at once (a new home renews the leases of the old one's
    /// children as soon as it can).
    fn on_status(&mut self, now: Time, from: NodeId, msg: SupervisionMsg) {
        let SupervisionMsg::Status {
            sup,
            answer,
            ended,
            unknown,
            kept,
            ask,
        } = msg
        else {
            return;
        };
        if let Some(t) = self.heard.get_mut(&from) {
            *t = now;
            if answer {
                let first = !self.asks.contains_key(&from);
                let a = self.asks.entry(from).or_insert((ask, now));
                if ask >= a.0 {
                    *a = (ask, now);
                }
                if first && from != self.me.node {
                    self.watch(now, sup, Some(from));
                }
            }
        }
        let Some(s) = self.sups.get_mut(&sup) else {
            return;
        };
        // Confirmed watched at their host: fenced there from now on.
        for pid in kept {
            if let Some(i) = s.rec.child_of(pid) {
                if !s.rec.children[i].leased {
                    s.rec.children[i].leased = true;
                    s.dirty = true;
                }
            }
        }
        if answer {
            // An abandoned pid its host did not list runs after all: kill it.
            let listed: BTreeSet<Pid> = ended
                .iter()
                .map(|(p, _)| *p)
                .chain(unknown.iter().copied())
                .collect();
            let stale: Vec<Pid> = s
                .abandoned
                .iter()
                .filter(|p| p.origin() == from)
                .copied()
                .collect();
            let tenant = s.rec.tenant;
            for pid in &stale {
                s.abandoned.remove(pid);
            }
            for pid in stale.into_iter().filter(|p| !listed.contains(p)) {
                self.kill(now, tenant, pid, None);
            }
        }
        for (pid, status) in ended {
            self.on_end(now, sup, pid, status);
        }
        for pid in unknown {
            self.on_end(now, sup, pid, ExitStatus::Lost);
        }
    }

    /// Host side: remembers how a local process ended (the last `ended_memory`).
    fn remember_end(&mut self, pid: Pid, status: ExitStatus) {
        if self.ended.insert(pid, status).is_none() {
            self.ended_order.push_back(pid);
        }
        while self.ended_order.len() > self.config.ended_memory as usize {
            if let Some(old) = self.ended_order.pop_front() {
                self.ended.remove(&old);
            }
        }
    }

    /// Host side: whether `pid` is a local process a home may ask after (a
    /// supervisor's spawn or an adopted process, running or remembered ended).
    fn tracks(&self, pid: Pid) -> bool {
        self.live.contains_key(&pid) || self.ended.contains_key(&pid)
    }

    /// Host side: a local process ended.
    fn local_ended(&mut self, now: Time, pid: Pid, status: ExitStatus) {
        if !self.tracks(pid) {
            return;
        }
        self.names_ended(now, pid);
        self.live.remove(&pid);
        self.unwatched.remove(&pid);
        self.remember_end(pid, status);
        if let Some(w) = self.watchers.remove(&pid) {
            let ended = vec![(pid, status)];
            self.status_to(now, w.home, w.sup, false, ended, Vec::new(), Vec::new());
        }
    }

    /// The periodic work: probes, silent hosts, retries, copies, take-overs.
    fn tick(&mut self, now: Time, ctx: &Context<'_>) {
        self.next_tick = None;
        let (promise, hold) = (slack(self.config.authority), self.config.hold);
        self.votes.expire(now, promise, hold);
        // Hosts silent too long: their children are lost.
        let silent: Vec<NodeId> = self
            .heard
            .iter()
            .filter(|(_, t)| now.saturating_since(**t) >= self.config.lost_after)
            .map(|(h, _)| *h)
            .collect();
        for host in silent {
            self.host_lost(now, host);
        }
        // Lost hosts whose leases have surely ended: their children are lost.
        let fenced: Vec<NodeId> = self
            .fencing
            .iter()
            .filter(|(_, (t, _))| *t <= now)
            .map(|(h, _)| *h)
            .collect();
        for host in fenced {
            let mut doubtful = false;
            for (sup, pid) in self.fencing.remove(&host).map(|f| f.1).unwrap_or_default() {
                let leased = self
                    .sups
                    .get(&sup)
                    .is_none_or(|s| s.rec.child_of(pid).is_none_or(|i| s.rec.children[i].leased));
                if leased {
                    self.on_end(now, sup, pid, ExitStatus::Lost);
                } else {
                    doubtful = true;
                }
            }
            // A child its host never confirmed watching may run unfenced there:
            // it is restarted only once its host answers (which fences it).
            if doubtful {
                self.heard.insert(host, now);
            }
        }
        // Keepers' and the quorum's confirmations keep this home's authority.
        let keepers = ctx.tree.keepers();
        self.held.retain(|k, _| keepers.contains(k));
        if self.sups.is_empty() {
            self.quorum = quorum::Quorum::default();
        } else {
            self.ask_alive(now, ctx);
        }
        let ids: Vec<SupervisorId> = self.sups.keys().copied().collect();
        for &sup in &ids {
            // A take-over's hold is over: the ends reported meanwhile count now.
            let Some(s) = self
                .sups
                .get_mut(&sup)
                .filter(|s| s.hold.is_some_and(|t| t <= now))
            else {
                continue;
            };
            s.hold = None;
            for (pid, status) in std::mem::take(&mut s.deferred) {
                self.on_end(now, sup, pid, status);
            }
        }
        if self.authorized(now) {
            self.kill_unkilled(now);
        }
        for sup in ids {
            let acts = self.sups.get_mut(&sup).map(|s| s.rec.spawn_ready());
            if let Some(acts) = acts.filter(|a| !a.is_empty()) {
                self.act(now, sup, acts);
            }
            self.watch(now, sup, None);
        }
        // Hosts no child runs on any more are not watched.
        let watched: BTreeSet<NodeId> = self
            .sups
            .values()
            .flat_map(|s| {
                s.rec
                    .children
                    .iter()
                    .filter_map(|c| c.pid)
                    .chain(s.abandoned.iter().copied())
                    .map(Pid::origin)
            })
            .collect();
        self.heard.retain(|h, _| watched.contains(h));
        self.asks.retain(|h, _| watched.contains(h));
        self.leases.retain(|h, _| watched.contains(h));
        let homes: BTreeSet<NodeId> = self.copies.values().map(|c| c.home).collect();
        self.alive.retain(|h, _| homes.contains(h));
        let group = ctx.tree.local_group();
        // The bases of homes whose passes are gathered or await the word too:
        // the take-over is judged by them.
        let passed: BTreeSet<NodeId> = self.partial.values().map(|p| p.home).collect();
        self.bases
            .retain(|h, _| homes.contains(h) || group.contains(h) || passed.contains(h));
        // Host side: owners of supervisors that no longer watch anything here.
        let watching: BTreeSet<SupervisorId> = self.watchers.values().map(|w| w.sup).collect();
        self.owners.retain(|s, _| watching.contains(s));
        self.take_over(now, ctx);
        // A whole pass awaiting the members' word is asked about at every tick,
        // as a copy of this agent's own is, not only as its passer's next pass
        // comes (before, swarm seed 97574 with the federation's departed
        // contacts: the taker asked at the passer's pace, half the probe rate,
        // and missed the tick at which the members could first give their word;
        // the passer, claiming too, won part of it, and the split cost the
        // restart two promises).
        for pass in self.passes_awaiting_word(None) {
            if !self.sups.contains_key(&pass.1) {
                self.accept_pass(now, pass, ctx);
            }
        }
        self.announce_take_overs(ctx);
        self.taken.expire(now, self.config.hold);
        self.replicate(now, ctx);
        self.arm(now);
    }

    /// Whether this agent runs a supervisor it took over from `home`, or whose
    /// chain of take-overs it heard passed through `home`.
    fn runs_taken_from(&self, home: NodeId) -> bool {
        self.sups.iter().any(|(id, s)| {
            s.from == Some(home)
                || (s.from.is_some() && self.taken.homes_of(*id).any(|h| h == home))
        })
    }

    /// New home side: tells the members of its group and of the old home's
    /// base, and the earlier homes, wherever they are (they step down, or in a
    /// newer life note it), of its take-overs, at [`TAKEN_TRIES`] ticks and at every refresh after (see
    /// [`taken`]).
    fn announce_take_overs(&mut self, ctx: &Context<'_>) {
        let group = ctx.tree.local_group();
        let me = self.me.node;
        let mut sends = Vec::new();
        for (id, s) in &mut self.sups {
            let Some(home) = s.from.filter(|_| s.announce > 0) else {
                continue;
            };
            s.announce -= 1;
            let epoch = (s.version / TAKE_OVER) as u32;
            // The old home, and every earlier home of the chain this agent heard
            // of (the first, where the supervisor was created, among them): any
            // may still run the supervisor from an older epoch.
            let mut told: BTreeSet<NodeId> = self.taken.homes_of(*id).collect();
            told.extend([home, id.origin]);
            told.extend(group.iter().copied());
            told.extend(s.from_base.iter().copied());
            told.remove(&me);
            for to in told {
                sends.push((
                    to,
                    SupervisionMsg::TakenOver {
                        sup: *id,
                        home,
                        epoch,
                    },
                ));
            }
        }
        for (to, msg) in sends {
            self.send(to, msg);
        }
    }

    /// Sends changed records to the keepers (all of them to new keepers and at a
    /// refresh).
    fn replicate(&mut self, now: Time, ctx: &Context<'_>) {
        let refresh = now.saturating_since(self.last_refresh) >= self.config.refresh;
        if refresh {
            self.last_refresh = now;
            // Take-overs are told again at every refresh while this home runs
            // them: members that joined the group since, or came back in a newer
            // life, hear of them, and the others remember them on (swarm seed
            // 441394: a taker's new life, back after the announcements, confirmed
            // the first home of the chain).
            for s in self.sups.values_mut().filter(|s| s.from.is_some()) {
                s.announce = s.announce.max(1);
            }
        }
        if self.sups.is_empty() {
            // Nothing to send (most agents run no supervisor): only the keepers are
            // noted, in place, as the code below would leave them.
            ctx.tree.keepers_into(&mut self.keepers);
            return;
        }
        let keepers = ctx.tree.keepers();
        let new_keepers: Vec<NodeId> = keepers
            .iter()
            .filter(|k| !self.keepers.contains(k))
            .copied()
            .collect();
        // A keeper hears the home's quorum base before any record it may not have
        // had: the first supervisor starts the quorum, and new keepers are asked
        // at once. (Before, a home that died before its first tick left its
        // keepers copies without a base, which they never took over.)
        if !new_keepers.is_empty() || !self.quorum.started() {
            self.ask_alive(now, ctx);
        }
        let mut sends = Vec::new();
        // Keepers no longer its keepers drop their copies: this home's authority
        // no longer counts them, so they must not take over from a stale copy (nor
        // pass it on once this home restarts: swarm seed 91110, where a former
        // keeper's copy was taken over a second time, beside the first taker's
        // restarts). They are told at DROPPED_TRIES ticks, but not while this agent
        // is in no tree (it left the federation, or is between groups): its last
        // keepers' copies are all that outlives it if it is going away. If it
        // rejoins a tree they are told then (before, they were told only at once,
        // so keepers left behind when their home moved between groups kept their
        // copies), or drop them on hearing it from outside their group
        // (`forget_home`). (Before, an agent leaving cleanly told its keepers to
        // drop its supervisors, which were lost: swarm seed 30239.)
        for &k in self.keepers.iter().filter(|k| !keepers.contains(k)) {
            if self.former.len() < MAX_FORMER_KEEPERS || self.former.contains_key(&k) {
                self.former.insert(k, DROPPED_TRIES);
            }
        }
        self.former.retain(|k, _| !keepers.contains(k));
        if ctx.tree.in_tree() {
            for (&k, tries) in &mut self.former {
                for id in self.sups.keys() {
                    sends.push((k, SupervisionMsg::Dropped { sup: *id }));
                }
                *tries -= 1;
            }
            self.former.retain(|_, tries| *tries > 0);
        }
        for (id, s) in &mut self.sups {
            if s.client.is_some() {
                continue;
            }
            s.copied.retain(|k, _| keepers.contains(k));
            // Keepers that do not hold a give-up not told yet, or a stop, get it
            // again.
            let needed = if s.rec.state == SupervisorState::Stopped {
                Some(s.version)
            } else {
                s.untold.first().map(|(v, _)| *v)
            };
            // Keepers that did not confirm the latest version get it again every
            // `retry` (before, only at the next change or refresh: a home that
            // died soon after a record's fragment was lost left its taker without
            // the supervisor, as in swarm seed 90836).
            let unconfirmed = |k: &&NodeId| s.copied.get(k).is_none_or(|c| *c < s.version);
            let retry = now >= s.sent + self.config.retry;
            let lacking: Vec<NodeId> = keepers
                .iter()
                .filter(|k| needed.is_some_and(|v| s.copied.get(k).is_none_or(|c| *c < v)))
                .chain(keepers.iter().filter(|k| retry && unconfirmed(k)))
                .chain(&new_keepers)
                .copied()
                .collect::<BTreeSet<NodeId>>()
                .into_iter()
                .collect();
            let to: &[NodeId] = if refresh || s.dirty {
                &keepers
            } else {
                &lacking
            };
            s.dirty = false;
            if to.is_empty() {
                continue;
            }
            s.sent = now;
            let Some(parts) = s.rec.fragments() else {
                continue;
            };
            let count = parts.len() as u16;
            for (i, bytes) in parts.into_iter().enumerate() {
                for &k in to {
                    sends.push((
                        k,
                        SupervisionMsg::Replica {
                            sup: *id,
                            version: s.version,
                            part: i as u16,
                            parts: count,
                            bytes: bytes.clone(),
                        },
                    ));
                }
            }
        }
        for (k, msg) in sends {
            self.send(k, msg);
        }
        self.keepers = keepers;
        // Keepers that left may have been all that a give-up waited for.
        let ids: Vec<SupervisorId> = self.sups.keys().copied().collect();
        for sup in ids {
            self.tell_give_ups(now, sup);
        }
        self.finish_stops();
    }

    /// Keeper side: a fragment of `from`'s record of `sup`.
    fn on_replica(&mut self, now: Time, from: NodeId, msg: SupervisionMsg, group: &[NodeId]) {
        let Some(fragment) = Fragment::of(from, msg) else {
            return;
        };
        let (sup, version) = (fragment.sup, fragment.version);
        if let Some(mine) = self.sups.get(&sup).map(|s| s.version) {
            // Another agent runs it too: one of the two took it over while the other
            // was away (stalled or cut off). The later take-over wins (then the
            // lower node): the other steps down, leaving the children to it.
            let (theirs, mine) = (version / TAKE_OVER, mine / TAKE_OVER);
            if (mine, from) > (theirs, self.me.node) {
                self.send(from, SupervisionMsg::Forget { sup });
                return;
            }
            self.step_down(sup, Err(SupervisionError::NoSuchSupervisor));
        }
        // A home outside this group counts this agent as its keeper on a stale
        // view: it is not (see `forget_home`).
        if !group.contains(&from) {
            self.forget_home(from);
            return;
        }
        self.alive.insert(from, now);
        if let Some(c) = self
            .copies
            .get(&sup)
            .filter(|c| c.home == from && c.version >= version)
        {
            let version = c.version;
            self.send(from, SupervisionMsg::Copied { sup, version });
            return;
        }
        if let Some(rec) = self.collect(from, fragment) {
            self.copies.insert(sup, Copy::new(from, version, rec));
            self.send(from, SupervisionMsg::Copied { sup, version });
            self.arm(now);
        }
    }

    /// Keeper side: adds a fragment `from` sent to the record it belongs to;
    /// the record, once every fragment of its version is here. A peer has at
    /// most [`MAX_PARTIAL_PER_PEER`] records half-sent.
    fn collect(&mut self, from: NodeId, f: Fragment) -> Option<Record> {
        let sup = f.sup;
        if self.gather(from, f) {
            self.assemble(from, sup)
        } else {
            None
        }
    }

    /// Keeper side: adds a fragment `from` sent to the record it belongs to, and
    /// says whether every fragment of that record's version is here.
    fn gather(&mut self, from: NodeId, f: Fragment) -> bool {
        let key = (from, f.sup);
        if !self.partial.contains_key(&key) {
            let mut halves = self.partial.keys().filter(|(sender, _)| *sender == from);
            if let Some(&oldest) = halves.next() {
                if 1 + halves.count() >= MAX_PARTIAL_PER_PEER {
                    self.partial.remove(&oldest);
                }
            }
        }
        let partial = self.partial.entry(key).or_insert_with(|| Partial {
            home: f.home,
            version: f.version,
            parts: Vec::new(),
            passed_base: None,
        });
        if partial.version > f.version {
            return false;
        }
        let parts = usize::from(f.parts);
        if partial.version < f.version || partial.home != f.home || partial.parts.len() != parts {
            partial.home = f.home;
            partial.version = f.version;
            partial.parts = vec![None; parts];
            partial.passed_base = None;
        }
        partial.parts[usize::from(f.part)] = Some(f.bytes);
        partial.whole()
    }

    /// Keeper side: the record of `sup` that `from` sent, if every fragment of it
    /// is here ([`Supervision::gather`]); its fragments are dropped.
    fn assemble(&mut self, from: NodeId, sup: SupervisorId) -> Option<Record> {
        let partial = self.partial.get_mut(&(from, sup))?;
        if !partial.whole() {
            return None;
        }
        let parts: Vec<Vec<u8>> = partial.parts.drain(..).flatten().collect();
        self.partial.remove(&(from, sup));
        Record::from_fragments(&parts).filter(|r| r.id == sup)
    }

    /// Keeper side: a leader takes over the supervisors whose home left its group;
    /// other keepers drop such copies after `hold`.
    fn take_over(&mut self, now: Time, ctx: &Context<'_>) {
        let Some(group) = ctx.tree.group(0) else {
            return;
        };
        let view = group.view();
        // Copies to take over (as the leader) or drop (past `hold`), and those to
        // pass to the member that takes them over.
        let mut settle = Vec::new();
        let mut passes = Vec::new();
        // Homes whose take-over waits for the members' word ([`disown`]).
        let mut claims = BTreeSet::new();
        let (alive, authority) = (&self.alive, slack(self.config.authority));
        // Quiet long enough for its authority to have ended, and not so long that
        // the members' memory no longer guards the take-over: a base the home
        // moved to after its last word here was heard by most of the old base
        // after that word, and they refuse a claim by an older base for `hold`
        // after they heard it ([`disown`]); half of `hold` leaves room for their
        // clocks' rates. (Before, the bound was `refresh`: a home restarted while
        // partitions had moved its keeper into a group with less than half of its
        // base, and most of the base was back beside the keeper only 5.8 s after
        // the home's last word: nobody took the supervisor over, swarm seed 481683.)
        let fresh = self.config.hold / 2;
        let ended = |home: NodeId| alive.get(&home).is_some_and(|t| now >= *t + authority);
        let recent = |home: NodeId| {
            alive
                .get(&home)
                .is_some_and(|t| now.saturating_since(*t) <= fresh)
        };
        let quiet = |home: NodeId| ended(home) && recent(home);
        // A side cut off from most of the home's quorum base (this agent alone, a
        // few hosts of its rack, or the group the home moved to before its base
        // followed) claims late, and carries nothing without the word of most of
        // the base across the cut: the home may well live on the other side,
        // granting and restarting with keepers there. The home itself is not
        // counted (it is away either way), and half of the others is not enough:
        // an even split goes to the home's side ([`quorum`]).
        let bases = &self.bases;
        let me = self.me.node;
        let most = |home: NodeId| {
            bases
                .get(&home)
                .is_some_and(|base| holds_most(base, home, me, group))
        };
        // Most of the base disowned a home still in its first life: none of them
        // keeps its authority (a restarted home's ended with its earlier life).
        let (votes, valid) = (&self.votes, self.config.authority);
        let carried = |home: NodeId| {
            bases
                .get(&home)
                .is_some_and(|base| votes.carried(now, home, base, valid))
        };
        for (id, c) in &mut self.copies {
            if view.contains(c.home) && !c.home_restarted {
                c.away_since = None;
                c.handed.clear();
                c.passed = None;
                c.passing_since = None;
                continue;
            }
            let since = *c.away_since.get_or_insert(now);
            // Handed with its home to the other half of a split: that half's
            // leader takes it over if need be, never this agent.
            if !c.handed.is_empty() {
                if now.saturating_since(since) >= self.config.hold {
                    settle.push((*id, false));
                } else if c.passed.is_none_or(|t| now >= t + self.config.retry) {
                    c.passed = Some(now);
                    passes.extend(c.handed.iter().map(|to| (*to, *id)));
                }
                continue;
            }
            // The leader waits until the home's authority from it has surely
            // ended (the home grants and restarts nothing more). A home that
            // restarted while leading the group (and leads it still) is replaced
            // by its heir.
            let taker = taker_for(view, c.home);
            // A home heard in a newer life grants and restarts nothing more: its
            // authority ended with its earlier life and is not waited out.
            // (Before, the heir of a leading home that restarted waited it out,
            // and by then the group had dissolved into others, none holding most
            // of the home's base: nobody took over, swarm seeds 93152 and 96172.)
            let gone = quiet(c.home) || (c.home_restarted && recent(c.home));
            let due = gone && most(c.home);
            // Most of the base disowned the home for this agent, in whichever
            // groups they are now: a restarted home's too, whose authority ended
            // with its earlier life, for the word makes this taker the only one.
            // The group's taker claims, and so does a keeper in a group without
            // most of the base (one in a group with most passes its copy to the
            // group's taker). (Before, a taker asked only its own group, and a
            // restarted home's copy was taken without a word once most of its
            // base was in the group: a home whose base was scattered over
            // several groups when it died was taken over by nobody, swarm seeds
            // 610192, 631664 and 570613, where the base was split from the
            // keepers longer than the copy was passed on.)
            let voted = carried(c.home);
            // A side without most of the base claims only a promise's length
            // after the home went away from it: the taker of a group with most
            // of it claims first, and has usually told the base of its
            // take-over by then, so that two takers rarely split the members'
            // word (each split costs the promise that the one yielding waits
            // out; see [`disown`]).
            let late = !most(c.home);
            let ready = !late || now >= since + authority;
            // A keeper whose group's taker has had its pass for a promise and not
            // taken it over (paused, or cut off from this agent's side) claims
            // beside it. (Before, it passed in vain until the group removed its
            // taker: supervise-100-home under random faults every 500 ms, seed
            // 72, where the taker was paused twice.)
            // So does one whose taker is its leader and its federation seat
            // suspects it: the pass goes out all the same (the leader may only be
            // slow), but nobody is waited for. (Before, swarm seed 730212: a
            // home's leader died before removing it, the home came back in a new
            // life, and its other keeper passed to the dead leader for a promise
            // before it claimed: the restart came after its bound.)
            let silent_taker = taker == Some(view.leader) && group.leader_suspected();
            let unanswered = silent_taker || c.passing_since.is_some_and(|t| now >= t + authority);
            // A keeper that claimed lately claims on (until it carries or yields),
            // whoever the group's taker is now: the promises made to it hold every
            // other taker back until they lapse. (Before, a keeper that claimed as
            // its group's taker for a moment, then passed its copy to the new
            // leader, left the members promised to it for a promise: swarm seed
            // 620979, where the restart came half a second past its bound.)
            let asking = votes.asking(c.home);
            let claiming = gone && ready && (taker == Some(me) || late || unanswered || asking);
            if claiming && !voted {
                claims.insert(c.home);
            }
            let take = claiming && voted;
            // A pass begun while the copy was fresh goes on past `refresh` (its
            // fragments may take many rounds under heavy loss: before, a pass cut
            // off by the freshness bound left the supervisor to nobody, swarm
            // seed 90752 under 50% loss).
            let passing = due || (c.passed.is_some() && ended(c.home) && most(c.home));
            if take || now.saturating_since(since) >= self.config.hold {
                settle.push((*id, take));
            } else if let Some(to) = taker.filter(|t| *t != me && passing) {
                if c.passed.is_none_or(|t| now >= t + self.config.retry) {
                    c.passed = Some(now);
                    c.passing_since.get_or_insert(now);
                    passes.push((to, *id));
                }
            }
        }
        for (to, id) in passes {
            self.pass_on(to, id);
        }
        let mut carried_here = false;
        for home in claims {
            let base = self.bases.get(&home).cloned().unwrap_or_default();
            let epoch = self.votes.epoch_of(home);
            carried_here |= self.claim(now, home, (&base, epoch));
        }
        self.partial
            .retain(|(sender, _), _| view.contains(*sender) || view.ancestors.contains(sender));
        if settle.iter().any(|(_, take)| *take) {
            // The new home's authority, asked at once: it grants the old home's
            // children as soon as its keepers and quorum confirm.
            self.ask_alive(now, ctx);
        }
        for (id, take) in settle {
            if let Some(c) = self.copies.remove(&id).filter(|_| take) {
                self.votes.done(c.home);
                self.adopt(now, id, c);
            }
        }
        // Carried by this agent's own word (a base of one): taken over now (the
        // ask just made is not due again, so this recurses no further).
        if carried_here {
            self.take_over(now, ctx);
        }
    }

    /// Taker side: asks the members of `base`, in whichever group they are, to
    /// disown `home` (at most once a probe period), and disowns it here too.
    /// Whether the words now carry the take-over (this agent's own may).
    fn claim(&mut self, now: Time, home: NodeId, (base, epoch): (&[NodeId], u64)) -> bool {
        if !self.votes.ask_due(now, home, self.config.probe_period) {
            return false;
        }
        let me = self.me.node;
        let promise = slack(self.config.authority);
        let reborn = self.restarted.get(&home).copied();
        if self
            .votes
            .disown(now, (home, reborn), me, epoch, promise)
            .is_ok()
        {
            self.votes.word(now, home, me);
        }
        for &m in base {
            if m != me && m != home {
                self.send(m, SupervisionMsg::Disown { home, epoch });
            }
        }
        self.votes.carried(now, home, base, self.config.authority)
    }

    /// Keeper side: runs the supervisor of copy `c` here, taken over from its home.
    fn adopt(&mut self, now: Time, id: SupervisorId, c: Copy) {
        let mut rec = c.rec;
        rec.adopted();
        // The old home's grants end with its authority, before now: a host's
        // lease from them ends within a lease from now.
        let until = now + slack(self.config.lease);
        for pid in rec.children.iter().filter_map(|c| c.pid) {
            self.heard.entry(pid.origin()).or_insert(now);
            let t = self.leases.entry(pid.origin()).or_insert(until);
            *t = (*t).max(until);
        }
        let version = (c.version / TAKE_OVER + 1) * TAKE_OVER;
        let from_base = self.bases.get(&c.home).cloned().unwrap_or_default();
        // The give-ups the copy holds are told again once the keepers hold this
        // record: the old home may have died before telling them (a notice twice
        // rather than never).
        let given_up = rec.children.iter().filter(|c| c.phase == Phase::GaveUp);
        let untold = given_up.map(|c| (version, c.pid)).collect();
        self.sups.insert(
            id,
            Sup {
                rec,
                version,
                dirty: true,
                client: None,
                abandoned: BTreeSet::new(),
                from: Some(c.home),
                from_base,
                announce: TAKEN_TRIES,
                hold: Some(until),
                deferred: Vec::new(),
                not_before: BTreeMap::new(),
                copied: BTreeMap::new(),
                sent: Time::ZERO,
                untold,
                unkilled: BTreeSet::new(),
                stop_clients: Vec::new(),
            },
        );
        let acts = self.sups.get_mut(&id).map(|s| s.rec.spawn_ready());
        self.act(now, id, acts.unwrap_or_default());
        self.watch(now, id, None);
    }

    /// Keeper side: sends the copy of `id` to `to`, the member of this agent's
    /// group that takes over its home's supervisors (see [`SupervisionMsg::Pass`]).
    /// (Before, a copy of a restarted home kept by a member that was moved into
    /// another group, where it neither led nor was heir, was never taken over: its
    /// supervisor was lost, as in swarm seed 30239.)
    fn pass_on(&mut self, to: NodeId, id: SupervisorId) {
        let Some(c) = self.copies.get(&id) else {
            return;
        };
        let (home, version) = (c.home, c.version);
        let Some(parts) = c.rec.fragments() else {
            return;
        };
        let base = self
            .bases
            .get(&home)
            .filter(|b| b.len() <= msg::MAX_PASS_BASE)
            .cloned();
        let count = parts.len() as u16;
        let epoch = self.votes.epoch_of(home);
        for (i, bytes) in parts.into_iter().enumerate() {
            let part = i as u16;
            let pass = SupervisionMsg::Pass {
                sup: id,
                home,
                base: base.clone(),
                epoch,
                version,
                part,
                parts: count,
                bytes,
            };
            self.send(to, pass);
        }
    }

    /// Keeper side: a fragment of the copy of a restarted home's record that
    /// `from`, a member of this agent's group, passes on. Taken over once whole,
    /// if this agent takes over that home's supervisors in its group (the leader,
    /// or the heir of a home that leads), it heard the home's newer life itself,
    /// and it does not run a later take-over of it already; `from` is told
    /// (`Copied`) and drops its copy. The passing member judged the take-over due
    /// as if it led (the old life's authority ended, most of the group it last
    /// heard the home in is here): one taker per group, as with a copy of its own.
    fn on_pass(&mut self, now: Time, from: NodeId, msg: SupervisionMsg, ctx: &Context<'_>) {
        let passed_base = match &msg {
            SupervisionMsg::Pass {
                base: Some(base),
                epoch,
                ..
            } => Some((base.clone(), *epoch)),
            _ => None,
        };
        let Some(fragment) = Fragment::of(from, msg) else {
            return;
        };
        let (sup, home) = (fragment.sup, fragment.home);
        let me = self.me.node;
        let Some(view) = ctx.tree.group(0).map(|g| g.view()) else {
            return;
        };
        let gone = self.gone_for_pass(now, sup, home, view, ctx).is_some();
        // From the leader whose split made this agent lead a group with the home
        // in it: kept as the home's keeper (see `follow_group`).
        let keeper = view.leader == me || view.heir() == Some(me);
        if !gone && home != me && keeper && view.ancestors.contains(&from) {
            self.keep_handed(now, from, fragment, view);
            return;
        }
        let taker = taker_for(view, home) == Some(me) && view.contains(from);
        if !taker || home == me || !gone {
            return;
        }
        // Kept while the members' word is awaited: under loss, a later pass may
        // bring only some of the fragments. (Before, swarm seed 530624: a pass
        // whole at the first try was dropped while the word was asked, and every
        // later one lost a fragment or came after the word had lapsed.)
        self.gather(from, fragment);
        if let Some(p) = self.partial.get_mut(&(from, sup)) {
            p.passed_base = passed_base.or(p.passed_base.take());
        }
        self.accept_pass(now, (from, sup), ctx);
        self.arm(now);
    }

    /// Taker side: whether `home`, whose copy of `sup` is passed to this agent,
    /// is gone by this agent's own state: heard in a newer life (lately, or than
    /// the one that started the supervisor there), or not in its group (and not
    /// seen leaving it alive for another). `Some(true)` if it restarted.
    /// (Before, a restarted home that joined the taker's group, whose earlier
    /// life the taker had never heard, counted as alive: the pass was refused
    /// until the copy was dropped, swarm seed 90752.)
    fn gone_for_pass(
        &self,
        now: Time,
        sup: SupervisorId,
        home: NodeId,
        view: &crate::federation::View,
        ctx: &Context<'_>,
    ) -> Option<bool> {
        let hold = self.config.hold;
        let lately = |t: &Time| now.saturating_since(*t) < hold;
        let restarted = self.restarted.get(&home).is_some_and(lately);
        let newer = sup.origin == home && ctx.life_of(home).is_some_and(|l| l > sup.incarnation);
        let left = self.left.get(&home).is_some_and(lately);
        (restarted || newer || (!view.contains(home) && !left)).then_some(restarted)
    }

    /// Taker side: takes over the copy `from` passed of `sup` if this agent is
    /// still its group's taker, the home is gone, the copy is whole and most of
    /// the home's base disowned the home for this agent; asks the members for
    /// their word while it is not said. Called on each fragment of a pass and on
    /// each word: a pass whole before the word is taken over as the word carries
    /// it, not at the passer's next pass (before, swarm seed 730212: the taker's
    /// group dissolved into another before the next pass, which went to the new
    /// group's taker, and the members' promises to the first held every taker
    /// back for a promise).
    fn accept_pass(&mut self, now: Time, (from, sup): (NodeId, SupervisorId), ctx: &Context<'_>) {
        let Some(partial) = self.partial.get(&(from, sup)) else {
            return;
        };
        let (home, version) = (partial.home, partial.version);
        let me = self.me.node;
        let Some(view) = ctx.tree.group(0).map(|g| g.view()) else {
            return;
        };
        let taker = taker_for(view, home) == Some(me) && view.contains(from);
        let Some(restarted) = self.gone_for_pass(now, sup, home, view, ctx) else {
            return;
        };
        if !taker || home == me {
            return;
        }
        // The passer judged by the view this agent pushed, which lags a partition:
        // the leader takes over only with the word of most of the home's base
        // (see [`disown`]), by the base it knows or else the one passed. (Before,
        // swarm seed 95582: a member cut off with a few others passed its copy
        // to its leader, which took over with most of the base across the
        // partition, beside the home.) A passed base can only hold a take-over
        // back: without one, the passer's judgement stands. The passer's base,
        // if newer than this agent's (or this agent knows none), is the one
        // judged by.
        let (own, epoch) = (self.bases.get(&home), self.votes.epoch_of(home));
        let (base, epoch) = match &partial.passed_base {
            Some((b, e)) if own.is_none() || *e > epoch => (Some(b.clone()), *e),
            _ => (own.cloned(), epoch),
        };
        let whole = partial.whole();
        // The members' word is awaited, as in `take_over` (the passer's word is
        // asked too, and its pass comes again).
        let valid = self.config.authority;
        let unsaid = |b: &Vec<NodeId>| !self.votes.carried(now, home, b, valid);
        if let Some(base) = base.filter(unsaid) {
            if !self.claim(now, home, (&base, epoch)) {
                return;
            }
        }
        if let Some(s) = self.sups.get(&sup) {
            if s.version / TAKE_OVER > version / TAKE_OVER {
                self.send(from, SupervisionMsg::Copied { sup, version });
            }
            return;
        }
        let Some(rec) = whole.then(|| self.assemble(from, sup)).flatten() else {
            return;
        };
        // A copy of its own of that home, as new or newer, is taken over instead;
        // a newer one of another home (a later take-over) makes the passed one stale.
        let copy = match self.copies.remove(&sup) {
            Some(mine) if mine.version >= version && mine.home == home => mine,
            Some(mine) if mine.version >= version => {
                self.copies.insert(sup, mine);
                return;
            }
            _ => Copy {
                away_since: Some(now),
                home_restarted: restarted,
                home_removed: !restarted,
                ..Copy::new(home, version, rec)
            },
        };
        self.ask_alive(now, ctx);
        self.adopt(now, sup, copy);
        self.send(from, SupervisionMsg::Copied { sup, version });
    }

    /// Taker side: whether a whole pass awaits the members' word (this agent
    /// then ticks, asking for it, even with no copy or supervisor of its own).
    fn awaits_word(&self) -> bool {
        (self.partial.iter()).any(|((sender, _), p)| *sender != p.home && p.whole())
    }

    /// Taker side: the whole passes of `home`'s copies (of any home's, for
    /// `None`) still awaiting the members' word, by passer and supervisor.
    fn passes_awaiting_word(&self, home: Option<NodeId>) -> Vec<(NodeId, SupervisorId)> {
        self.partial
            .iter()
            .filter(|(_, p)| home.is_none_or(|h| p.home == h))
            .filter(|((sender, _), p)| *sender != p.home && p.whole())
            .map(|(key, _)| *key)
            .collect()
    }

    /// Keeper side: a fragment of a copy handed with its home by the leader that
    /// split this agent's group off its own (see [`Supervision::follow_group`]).
    /// The home may have died before it sent this agent anything: the copy is kept
    /// as one from the home, heard from now (its authority is waited out from
    /// here, as from a last `Alive`). One as new or newer here is confirmed.
    ///
    /// The members of the home's base left with the splitter no longer count in
    /// it, as the splitter no longer counts this half in the bases it keeps: they
    /// live in its group, and leave the home's own base as soon as they confirm
    /// it (see [`quorum`]). Without that, a home that died in the smaller half
    /// was taken over by neither side.
    fn keep_handed(
        &mut self,
        now: Time,
        from: NodeId,
        fragment: Fragment,
        view: &crate::federation::View,
    ) {
        let (sup, home, version) = (fragment.sup, fragment.home, fragment.version);
        let newer = self.sups.contains_key(&sup)
            || self.copies.get(&sup).is_some_and(|c| c.version >= version);
        if !newer {
            let Some(rec) = self.collect(from, fragment) else {
                return;
            };
            self.copies.insert(sup, Copy::new(home, version, rec));
            self.alive.entry(home).or_insert(now);
            if let Some(base) = self.bases.get_mut(&home) {
                base.retain(|m| view.contains(*m));
            }
            self.arm(now);
        }
        self.send(from, SupervisionMsg::Copied { sup, version });
    }

    /// Keeper side: this agent's level-0 group changed. Members that left the
    /// group it led and still leads, without its removing them, live on in another
    /// group. A home among them now sends its records to that group's leader and
    /// heir: this agent drops its copies. Not those of a home that restarted: its
    /// records died with its earlier life and left with nobody, so this agent's
    /// copies are all that remains of them, and it takes them over as from a home
    /// removed. (Before, a home that restarted and then left for another group, as
    /// swarm seed 10325's did when a jump of its clock made it claim the group and
    /// be told to leave, lost its supervisors: no child was ever restarted.)
    ///
    /// Members it handed to the other half of its own split are no longer counted
    /// in the bases of its copies: the majority a take-over needs is of the
    /// members still on its side (before, a split of a group grown past
    /// `max_group` left no majority, and a home that died afterwards was never
    /// taken over). A home among them may have died unseen just before, sending
    /// nothing to its new keepers: the copy is passed to the other half's leader
    /// (at ticks, until it confirms, see [`Supervision::take_over`]), which keeps
    /// it as the home's keeper. (Before, it was dropped: swarm seed 94715, whose
    /// home died 0.2 s before its group split, lost its supervisor.)
    ///
    /// Members that left otherwise stay counted: they answered `Leave` because
    /// their group went on without this agent (it was stalled or cut off, and its
    /// heir took over), so they are on the other side, the one a take-over must
    /// not happen without. (Before, they were dropped from the bases too: a leader
    /// back from a pause saw its old group leave one by one, was left with a base
    /// of itself, and took over, in its new group, a supervisor its heir had
    /// already taken over: the shrunk swarm seed 94715.)
    fn follow_group(&mut self, now: Time, ctx: &Context<'_>) {
        let group = ctx.tree.group(0).filter(|g| g.led_by_me());
        let led = group.map(|g| g.view().members.clone());
        if let (Some(before), Some(after), Some(group)) = (&self.led, &led, group) {
            let moved: BTreeSet<NodeId> = before
                .iter()
                .filter(|m| !after.contains(m) && !self.removed.contains(m))
                .copied()
                .collect();
            let handed: BTreeMap<NodeId, Vec<NodeId>> = moved
                .iter()
                .filter_map(|m| {
                    let half = group.handed_to(*m)?;
                    let keepers = std::iter::once(half.leader).chain(half.heir());
                    Some((*m, keepers.filter(|k| k != m).collect()))
                })
                .collect();
            for base in self.bases.values_mut() {
                base.retain(|m| !handed.contains_key(m));
            }
            let hold = self.config.hold;
            self.left.retain(|_, t| now.saturating_since(*t) < hold);
            self.left.extend(
                moved
                    .iter()
                    .filter(|m| !handed.contains_key(m))
                    .map(|m| (*m, now)),
            );
            self.copies.retain(|_, c| {
                if let Some(to) = handed.get(&c.home) {
                    c.handed.clone_from(to);
                }
                c.home_restarted || !c.handed.is_empty() || !moved.contains(&c.home)
            });
        }
        self.removed.clear();
        self.led = led;
    }

    /// Keeper side: a home heard from outside this agent's level-0 group lives on
    /// elsewhere (it rejoined another group, or this group removed it while it
    /// went on), and its records are kept by that group's leader and heir: this
    /// agent is not its keeper any more and drops its copies. Before, such a
    /// home's `Alive` (sent to the old members of its quorum's base) renewed a
    /// stale copy and the base it is judged by, set to this agent's group then:
    /// a former keeper alone in a group of one found "most of the group" on its
    /// side and took the supervisor over while the home, confirmed in its new
    /// group, went on (twins).
    fn forget_home(&mut self, home: NodeId) {
        self.copies.retain(|_, c| c.home != home);
        self.partial.retain(|_, p| p.home != home);
        self.alive.remove(&home);
        self.bases.remove(&home);
    }

    /// Keeper side: home `from` is alive. Confirmed (this keeper then waits
    /// out the home's authority before a take-over), with the supervisors taken
    /// over from it that this agent runs or keeps a copy of, which it must drop
    /// first. (Before, only the taker itself told it: a home whose authority had
    /// lapsed came back confirmed by its quorum while the taker's answer was lost,
    /// among them the taker's keeper, and went on beside the taker: twins.)
    ///
    /// A home outside this agent's level-0 group asks as a member of its quorum's
    /// base, not as its keeper: this agent drops its copies of that home's records
    /// (see [`Supervision::forget_home`]).
    fn on_alive(&mut self, now: Time, from: NodeId, at: u64, base: Vec<NodeId>, group: &[NodeId]) {
        if !group.contains(&from) {
            self.forget_home(from);
        } else {
            // Noted before its first copy arrives too (an `Alive` may overtake
            // the `Replica` sent with it, and the home may die before the next).
            self.bases.insert(from, base);
            if self.copies.values().any(|c| c.home == from) {
                self.alive.insert(from, now);
            }
        }
        // What was taken over from it: by this agent, or by another home whose
        // record this agent keeps (a copy of a later take-over). The home steps
        // down from those it runs from an earlier take-over.
        let mut forget: BTreeMap<SupervisorId, u32> = self
            .sups
            .iter()
            .filter(|(_, s)| s.from == Some(from))
            .map(|(id, s)| (*id, (s.version / TAKE_OVER) as u32))
            .collect();
        // A record still in fragments counts: its version is known from the first.
        let copies = self.copies.iter().map(|(id, c)| (c.home, *id, c.version));
        let halves = self
            .partial
            .iter()
            .map(|((_, id), p)| (p.home, *id, p.version));
        let later = copies
            .chain(halves)
            .filter(|(h, ..)| *h != from)
            .map(|(_, id, version)| (id, (version / TAKE_OVER) as u32))
            .filter(|(_, epoch)| *epoch > 0);
        // And the take-overs from it this agent's group told it of.
        self.taken.expire(now, self.config.hold);
        for (id, epoch) in later.chain(self.taken.of_home(from)) {
            let e = forget.entry(id).or_insert(epoch);
            *e = (*e).max(epoch);
        }
        let forget: Vec<(SupervisorId, u32)> = forget.into_iter().collect();
        // More than one message lists: not confirmed (the home keeps no authority).
        if forget.len() > msg::MAX_PIDS {
            return;
        }
        // Disowned for a taker lately: not confirmed, only told to step down.
        if self.votes.confirm(now, from, slack(self.config.authority)) {
            let at = Some(at);
            self.send(from, SupervisionMsg::Held { at, forget });
        } else if !forget.is_empty() {
            self.send(from, SupervisionMsg::Held { at: None, forget });
        }
    }

    fn stop(
        &mut self,
        now: Time,
        request: RequestId,
        tenant: nefele_api::TenantId,
        id: SupervisorId,
    ) {
        let Some(s) = self.sups.get_mut(&id).filter(|s| s.rec.tenant == tenant) else {
            let reply = ApiReply::SupervisorStopped(Err(SupervisionError::NoSuchSupervisor));
            return self.outbox.push_back(ServiceOutput::Reply(request, reply));
        };
        s.stop_clients.push(request);
        let acts = s.rec.stop(SupervisorState::Stopped);
        self.act(now, id, acts);
        // A stop is the client's word: its kills do not wait for authority.
        let unkilled = self
            .sups
            .get_mut(&id)
            .map(|s| std::mem::take(&mut s.unkilled));
        for pid in unkilled.unwrap_or_default() {
            self.kill(now, tenant, pid, None);
        }
    }

    /// Home side: ends the stopped supervisors whose stopped record every keeper
    /// holds (or that no keeper ever got: the first spawn had not answered):
    /// keepers drop their copies (`Forget`), and the clients that stopped it are
    /// answered. Until then the record stays, and is sent again to keepers that
    /// lack it: a home that dies before its keepers hold the stop leaves a copy
    /// that is taken over stopped, never one that restarts the children. (Before,
    /// a stop removed the supervisor at once, and a home that died before its
    /// `Forget` arrived left running copies: the children were restarted.) The
    /// children are not watched any more, so their hosts end them with their
    /// leases even if a kill was lost.
    fn finish_stops(&mut self) {
        let keepers = &self.keepers;
        let done: Vec<SupervisorId> = self
            .sups
            .iter()
            .filter(|(_, s)| s.rec.state == SupervisorState::Stopped)
            .filter(|(_, s)| {
                s.client.is_some()
                    || !s.dirty
                        && keepers
                            .iter()
                            .all(|k| s.copied.get(k).is_some_and(|v| *v >= s.version))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            for k in self.keepers.clone() {
                self.send(k, SupervisionMsg::Forget { sup: id });
            }
            self.step_down(id, Ok(()));
        }
    }

    /// Home side: removes supervisor `id` (ended, or run by another home since a
    /// later take-over), tells its keepers to drop their copies, and answers the
    /// clients waiting for its stop with `reply`. (Before, the keepers of a home
    /// told to step down kept its copy, and took the supervisor over again once
    /// the home left their group: twins beside the first taker's, as in swarm
    /// seed 70210.)
    /// Steps down from `sup` if this agent runs it from a take-over before `epoch`.
    fn step_down_before(&mut self, sup: SupervisorId, epoch: u32) {
        let earlier = |s: &Sup| ((s.version / TAKE_OVER) as u32) < epoch;
        if self.sups.get(&sup).is_some_and(earlier) {
            self.step_down(sup, Err(SupervisionError::NoSuchSupervisor));
        }
    }

    fn step_down(&mut self, id: SupervisorId, reply: Result<(), SupervisionError>) {
        let Some(s) = self.sups.remove(&id) else {
            return;
        };
        // Former keepers too, in or out of a tree: a copy of a supervisor this
        // home no longer runs is stale, and a former keeper's outlives the
        // `Dropped`s of ticks to come, which name only the supervisors still run.
        // (Before, swarm seed 400155: a home back from a stall, between groups,
        // stepped down for the taker with no keeper to tell, and the copy it had
        // just sent a new keeper stayed, as a second holder of the supervisor.)
        let told: BTreeSet<NodeId> = self
            .keepers
            .iter()
            .chain(self.former.keys())
            .copied()
            .collect();
        for k in told {
            self.send(k, SupervisionMsg::Dropped { sup: id });
        }
        for client in s.stop_clients {
            let reply = ApiReply::SupervisorStopped(reply.clone());
            self.outbox.push_back(ServiceOutput::Reply(client, reply));
        }
    }
}

impl Service for Supervision {
    type Msg = SupervisionMsg;
    type Config = SupervisionConfig;
    type Summary = SupervisionSummary;
    type ConfigError = SupervisionConfigError;

    fn validate(config: &SupervisionConfig) -> Result<(), SupervisionConfigError> {
        for (what, d) in [
            ("probe_period", config.probe_period),
            ("lost_after", config.lost_after),
            ("retry", config.retry),
            ("refresh", config.refresh),
            ("lease", config.lease),
            ("authority", config.authority),
        ] {
            if d.is_zero() {
                return Err(SupervisionConfigError::Zero(what));
            }
        }
        if config.ended_memory == 0 {
            return Err(SupervisionConfigError::Zero("ended_memory"));
        }
        Ok(())
    }

    fn instance(config: &SupervisionConfig) -> u8 {
        config.instance
    }

    fn new(me: Identity, config: SupervisionConfig, _seed: u64) -> Self {
        Supervision {
            me,
            config,
            next_sequence: 0,
            next_call: 0,
            sups: BTreeMap::new(),
            calls: BTreeMap::new(),
            heard: BTreeMap::new(),
            asks: BTreeMap::new(),
            leases: BTreeMap::new(),
            fencing: BTreeMap::new(),
            held: BTreeMap::new(),
            quorum: quorum::Quorum::default(),
            alive: BTreeMap::new(),
            bases: BTreeMap::new(),
            led: None,
            removed: BTreeSet::new(),
            left: BTreeMap::new(),
            live: BTreeMap::new(),
            ended: BTreeMap::new(),
            ended_order: VecDeque::new(),
            watchers: BTreeMap::new(),
            names: BTreeMap::new(),
            unwatched: BTreeMap::new(),
            owners: BTreeMap::new(),
            copies: BTreeMap::new(),
            partial: BTreeMap::new(),
            restarted: BTreeMap::new(),
            keepers: Vec::new(),
            former: BTreeMap::new(),
            taken: taken::Taken::default(),
            votes: disown::Votes::default(),
            next_tick: None,
            last_refresh: Time::ZERO,
            outbox: VecDeque::new(),
        }
    }

    fn config(&self) -> &SupervisionConfig {
        &self.config
    }

    fn kind(msg: &SupervisionMsg) -> &'static str {
        msg::kind(msg)
    }

    fn validate_msg(msg: &SupervisionMsg) -> Result<(), Reject> {
        msg::validate(msg)
    }

    fn handle_message(&mut self, now: Time, from: NodeId, msg: SupervisionMsg, ctx: &Context<'_>) {
        self.enter(now);
        match msg {
            SupervisionMsg::Watch {
                sup,
                epoch,
                pids,
                grant,
            } => {
                self.on_watch(now, from, sup, epoch, pids, grant);
            }
            status @ SupervisionMsg::Status { .. } => self.on_status(now, from, status),
            SupervisionMsg::Alive { at, base, epoch } => {
                self.votes.learn(now, from, epoch, &base);
                self.on_alive(now, from, at, base, &ctx.tree.local_group());
            }
            SupervisionMsg::TakenOver { sup, home, epoch } => {
                // Any home of the chain running it from an older epoch steps
                // down, whichever home the take-over names (swarm seed 441394).
                self.step_down_before(sup, epoch);
                // Every agent told notes it, in the taker's group or not: a
                // member of the old home's base elsewhere (the take-over may
                // have counted its word), and the old home, which in a newer
                // life remembers nothing of the supervisor and may be asked to
                // confirm an earlier home of the chain.
                self.taken.note(now, sup, (home, from), epoch);
            }
            SupervisionMsg::Disown { home, epoch } if home != self.me.node => {
                // A take-over of the home heard of: disowned for its taker
                // alone (the word of the base it counted lasts no longer than
                // their promises; this lasts while the taker runs the home's
                // supervisors, and `hold` after).
                let promise = slack(self.config.authority);
                // Not a take-over by the home itself, which took the supervisor
                // back later in a chain and runs it (swarm seed 470294: a member
                // named the home as the taker, and the claim on the home's crash
                // yielded to it for good).
                // Nor for another taker when this agent took the home's
                // supervisors over itself (swarm seed 780575: the taker gave
                // its word to the home's keeper on the other side of a healed
                // partition, which took the stale copy over beside it).
                let me = self.me.node;
                let taken = self
                    .taken
                    .takers_from(home)
                    .chain(self.runs_taken_from(home).then_some(me))
                    .find(|t| *t != from && *t != home);
                let vote = match taken {
                    Some(taker) => Err(disown::Refusal::Taken(taker)),
                    None => {
                        let reborn = self.restarted.get(&home).copied();
                        self.votes.disown(now, (home, reborn), from, epoch, promise)
                    }
                };
                match vote {
                    Ok(()) => self.send(from, SupervisionMsg::Disowned { home }),
                    Err(disown::Refusal::Newer(epoch, base)) => {
                        self.send(from, SupervisionMsg::Refused { home, epoch, base });
                    }
                    Err(disown::Refusal::Promised(taker)) => {
                        let took = false;
                        self.send(from, SupervisionMsg::Promised { home, taker, took });
                    }
                    Err(disown::Refusal::Taken(taker)) => {
                        let took = true;
                        self.send(from, SupervisionMsg::Promised { home, taker, took });
                    }
                    Err(disown::Refusal::NotNow) => {}
                }
            }
            SupervisionMsg::Disown { .. } => {}
            SupervisionMsg::Promised { home, taker, took } => {
                let promise = slack(self.config.authority);
                let me = self.me.node;
                self.votes.yield_to(now, (home, me), (taker, took), promise);
            }
            SupervisionMsg::Refused { home, epoch, base } => {
                // A newer base of the home, heard by a member of this group or of
                // the base judged by: the take-over is judged by it from now on.
                let member = ctx.tree.local_group().contains(&from)
                    || self.bases.get(&home).is_some_and(|b| b.contains(&from));
                if member && epoch > self.votes.epoch_of(home) {
                    self.votes.learn(now, home, epoch, &base);
                    if let Some(b) = self.bases.get_mut(&home) {
                        *b = base;
                    }
                }
            }
            // Counted only if asked, from a member of the base (see `claim`).
            SupervisionMsg::Disowned { home } => {
                self.votes.word(now, home, from);
                // Taken over on this word: the group hears of it at once, while
                // the members' promises are fresh.
                let before = self.sups.len();
                self.take_over(now, ctx);
                for pass in self.passes_awaiting_word(Some(home)) {
                    self.accept_pass(now, pass, ctx);
                }
                if self.sups.len() > before {
                    self.announce_take_overs(ctx);
                }
            }
            SupervisionMsg::Dropped { sup } => {
                if self.copies.get(&sup).is_some_and(|c| c.home == from) {
                    self.copies.remove(&sup);
                }
                self.partial.remove(&(from, sup));
            }
            SupervisionMsg::Copied { sup, version } => {
                // Only a keeper's word counts (the rest is dropped at the next
                // replication anyway).
                let keeper = self.keepers.contains(&from);
                if let Some(s) = self.sups.get_mut(&sup).filter(|_| keeper) {
                    let c = s.copied.entry(from).or_insert(version);
                    *c = (*c).max(version);
                    self.tell_give_ups(now, sup);
                }
                // A passed copy taken over by the member it was passed to, or
                // held by all those it was handed to.
                let view = ctx.tree.group(0).map(|g| g.view());
                let passed = self.copies.get_mut(&sup).is_some_and(|c| {
                    if c.version > version || c.passed.is_none() {
                        return false;
                    }
                    if c.handed.is_empty() {
                        return view.and_then(|v| taker_for(v, c.home)) == Some(from);
                    }
                    c.handed.retain(|k| *k != from);
                    c.handed.is_empty()
                });
                if passed {
                    self.copies.remove(&sup);
                }
            }
            SupervisionMsg::Held { at, forget } => {
                for (sup, epoch) in forget {
                    self.step_down_before(sup, epoch);
                }
                let before = self.authorized(now);
                if let Some(at) = at.filter(|at| *at <= now.as_nanos()) {
                    let at = Time::from_nanos(at);
                    let t = self.held.entry(from).or_insert(Time::ZERO);
                    *t = (*t).max(at);
                    self.quorum.confirm(from, at);
                }
                // Authorized again (or first after a take-over): grant at once, and
                // tell of the give-ups kept meanwhile.
                if !before && self.authorized(now) {
                    let ids: Vec<SupervisorId> = self.sups.keys().copied().collect();
                    for sup in ids {
                        self.watch(now, sup, None);
                        self.tell_give_ups(now, sup);
                    }
                    self.kill_unkilled(now);
                }
            }
            names @ (SupervisionMsg::Hand { .. } | SupervisionMsg::Holds { .. }) => {
                self.on_names_msg(now, from, names);
            }
            replica @ SupervisionMsg::Replica { .. } => {
                self.on_replica(now, from, replica, &ctx.tree.local_group());
            }
            pass @ SupervisionMsg::Pass { .. } => self.on_pass(now, from, pass, ctx),
            SupervisionMsg::Forget { sup } => {
                if self.copies.get(&sup).is_some_and(|c| c.home == from) {
                    self.copies.remove(&sup);
                }
                self.partial.remove(&(from, sup));
                // About a supervisor it runs: `from` runs it too and won (see
                // `on_replica`); this agent steps down, leaving the children to it.
                self.step_down(sup, Err(SupervisionError::NoSuchSupervisor));
            }
        }
        self.replicate(now, ctx);
    }

    fn handle_timeout(&mut self, now: Time, ctx: &Context<'_>) {
        self.enter(now);
        if self.next_tick.is_some_and(|t| t <= now) {
            self.tick(now, ctx);
        }
    }

    fn wants(&self, event: &ServiceEvent) -> bool {
        // Of local processes, only those a home may ask after: a tenant's own
        // spawns (most of them) cost supervision nothing.
        match event {
            ServiceEvent::ProcessStarted { start, .. } => return *start != Start::Spawned,
            ServiceEvent::ProcessExited { pid, .. } => return self.tracks(*pid),
            _ => {}
        }
        matches!(
            event,
            ServiceEvent::ProcessLost { .. }
                | ServiceEvent::HostRemoved { .. }
                | ServiceEvent::PeerRestarted { .. }
                | ServiceEvent::GroupChanged { .. }
                | ServiceEvent::NamesHeld { .. }
        ) || matches!(event, ServiceEvent::Answered { request, .. } if self.calls.contains_key(request))
    }

    fn handle_event(&mut self, now: Time, event: &ServiceEvent, ctx: &Context<'_>) {
        self.enter(now);
        match event {
            ServiceEvent::ProcessStarted { pid, tenant, start } => match start {
                // A tenant's own spawn is never a child: no home asks after it.
                Start::Spawned => {}
                Start::Supervised => {
                    self.live.insert(*pid, (*tenant, now));
                    self.unwatched.insert(*pid, now + self.config.lease);
                }
                Start::Adopted => {
                    self.live.insert(*pid, (*tenant, now));
                }
            },
            ServiceEvent::ProcessExited { pid, status, .. } => {
                self.local_ended(now, *pid, *status);
            }
            // Its host left the group, perhaps only cut off: fenced as a lost host.
            ServiceEvent::ProcessLost { pid, .. } => self.host_lost(now, pid.origin()),
            ServiceEvent::HostRemoved {
                instance,
                node,
                level: 0,
            } if *instance == self.config.instance => {
                self.removed.insert(*node);
                for c in self.copies.values_mut().filter(|c| c.home == *node) {
                    c.home_removed = true;
                }
                self.host_lost(now, *node);
                self.take_over(now, ctx);
            }
            ServiceEvent::GroupChanged { instance } if *instance == self.config.instance => {
                self.follow_group(now, ctx);
                self.take_over(now, ctx);
            }
            // A home that restarted before its group removed it: its supervisors
            // are gone with its earlier life (before, a home back within the
            // detection time was never taken over, and its children never restarted).
            ServiceEvent::PeerRestarted { node } => {
                let hold = self.config.hold;
                self.restarted
                    .retain(|_, t| now.saturating_since(*t) < hold);
                self.restarted.insert(*node, now);
                for c in self.copies.values_mut().filter(|c| c.home == *node) {
                    c.home_restarted = true;
                }
                // A keeper in a newer life holds none of this home's records: it is
                // a new keeper, sent them all at once (before, only at the next
                // change or refresh, and its earlier life's confirmations stood).
                self.keepers.retain(|k| k != node);
                for s in self.sups.values_mut() {
                    s.copied.remove(node);
                }
                self.take_over(now, ctx);
            }
            ServiceEvent::NamesHeld { pid, names } => self.names_changed(now, *pid, names),
            ServiceEvent::Answered { request, reply } => self.on_answer(now, *request, reply),
            _ => {}
        }
        self.replicate(now, ctx);
    }

    fn owns(call: &ApiCall) -> bool {
        call.is_supervision()
    }

    fn handle_api(&mut self, now: Time, request: RequestId, call: ApiCall, ctx: &Context<'_>) {
        self.enter(now);
        match call {
            ApiCall::SpawnSupervised {
                tenant,
                spawn,
                supervision,
            } => self.new_supervisor(now, request, tenant, spawn, supervision),
            ApiCall::Supervisors { tenant } => {
                let reply = ApiReply::Supervisors(self.supervisors(Some(tenant)));
                self.outbox.push_back(ServiceOutput::Reply(request, reply));
            }
            ApiCall::StopSupervisor { tenant, id } => self.stop(now, request, tenant, id),
            _ => {}
        }
        self.replicate(now, ctx);
    }

    #[inline]
    fn poll_output(&mut self) -> Option<ServiceOutput<SupervisionMsg>> {
        crate::outbox::take_next(&mut self.outbox)
    }

    fn next_timeout(&self) -> Option<Time> {
        // Asked after every input of the agent: most hosts watch nothing. Written
        // out: a chain of the two maps' iterators cost more than the scan itself.
        if self.watchers.is_empty() && self.unwatched.is_empty() {
            return self.next_tick;
        }
        let mut next = self.next_tick;
        for w in self.watchers.values() {
            next = earliest(next, Some(w.until));
        }
        for &until in self.unwatched.values() {
            next = earliest(next, Some(until));
        }
        next
    }

    fn own_summary(&self) -> SupervisionSummary {
        SupervisionSummary {}
    }

    fn pinned_summary(&self, _level: usize) -> Option<SupervisionSummary> {
        None
    }

    fn invariants(&self) -> bool {
        self.sups.values().all(|s| s.rec.consistent())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Incarnation;

    #[test]
    fn a_peer_holds_a_bounded_number_of_half_sent_records_at_a_keeper() {
        let me = Identity {
            node: NodeId(1),
            incarnation: Incarnation(1),
        };
        let mut keeper = Supervision::new(me, SupervisionConfig::default(), 0);
        let (hostile, other) = (NodeId(2), NodeId(3));
        let half = |sequence| SupervisionMsg::Replica {
            sup: SupervisorId {
                origin: hostile,
                incarnation: Incarnation(1),
                sequence,
            },
            version: 1,
            part: 0,
            parts: 2,
            bytes: vec![0; msg::MAX_FRAGMENT],
        };
        let group = [me.node, hostile, other];
        keeper.on_replica(Time::ZERO, other, half(0), &group);
        for sequence in 0..1_000 {
            keeper.on_replica(Time::ZERO, hostile, half(sequence), &group);
        }
        let from = |n: NodeId| keeper.partial.keys().filter(|(h, _)| *h == n).count();
        assert_eq!(from(hostile), MAX_PARTIAL_PER_PEER);
        assert_eq!(from(other), 1, "another peer's half is not evicted");
    }

    /// Regression (swarm seed 10021): a former keeper that hears its home from
    /// outside its level-0 group (the home asks it as a member of its quorum's
    /// base) drops its copies instead of renewing them. Before, the `Alive`
    /// renewed the copy and set the group it is judged by to the keeper's group
    /// of one, which then held "most of the group": it took the supervisor over
    /// while the home, confirmed in its new group, went on (twins).
    #[test]
    fn a_keeper_drops_its_copies_of_a_home_heard_from_outside_its_group() {
        let (h, k) = (id(1), id(2));
        let mut home = Supervision::new(h, SupervisionConfig::default(), 0);
        let ctx = Context {
            me: h,
            tree: crate::service::TreeView::empty(h.node),
            lives: None,
        };
        let call = one_permanent_child(nefele_api::TenantId(1), 5);
        home.handle_api(Time::ZERO, RequestId(7), call, &ctx);
        let replicas = |version| replicas_of(&home, version);
        let mut keeper = Supervision::new(k, SupervisionConfig::default(), 0);
        let together = [h.node, k.node];
        for msg in replicas(1) {
            keeper.on_replica(Time::from_millis(10), h.node, msg, &together);
        }
        assert_eq!(
            keeper.copies.len(),
            1,
            "a keeper in the home's group keeps a copy"
        );
        keeper.on_alive(Time::from_millis(20), h.node, 20, vec![k.node], &together);
        assert_eq!(keeper.bases.get(&h.node), Some(&vec![k.node]));
        // The home left this group (the keeper leads a group of one now) and asks
        // it, as an old member of its quorum's base, to confirm it is alive.
        let alone = [k.node];
        keeper.on_alive(Time::from_millis(900), h.node, 900, vec![k.node], &alone);
        assert!(keeper.copies.is_empty(), "the copy is dropped");
        assert!(!keeper.bases.contains_key(&h.node) && !keeper.alive.contains_key(&h.node));
        // A replica sent on the home's stale view is not kept either.
        for msg in replicas(2) {
            keeper.on_replica(Time::from_millis(950), h.node, msg, &alone);
        }
        assert!(keeper.copies.is_empty() && keeper.partial.is_empty());
    }

    /// Regression (swarm seed 10021, shrunk): a member that keeps a later
    /// take-over's record of a supervisor (whole, or in fragments so far) tells
    /// the supervisor's old home, in its `Held`, to step down from it. Before,
    /// only the taker itself did: an old home whose authority had lapsed came back
    /// confirmed by the taker's keeper while the taker's answer was lost, and ran
    /// beside the taker (twins).
    #[test]
    fn a_member_keeping_a_later_take_over_tells_the_old_home_to_step_down() {
        let me = Identity {
            node: NodeId(1),
            incarnation: Incarnation(1),
        };
        let (old_home, taker) = (NodeId(39), NodeId(0));
        let sup = SupervisorId {
            origin: old_home,
            incarnation: Incarnation(1),
            sequence: 0,
        };
        let mut member = Supervision::new(me, SupervisionConfig::default(), 0);
        let first_of_two = SupervisionMsg::Replica {
            sup,
            version: TAKE_OVER + 3,
            part: 0,
            parts: 2,
            bytes: vec![0; 8],
        };
        member.on_replica(Time::ZERO, taker, first_of_two, &[taker, me.node]);
        let base = vec![taker, me.node];
        member.on_alive(Time::from_millis(5), old_home, 5, base, &[taker, me.node]);
        let held: Vec<SupervisionMsg> = std::iter::from_fn(|| member.poll_output())
            .filter_map(|o| match o {
                ServiceOutput::Send(to, msg) if to == old_home => Some(msg),
                _ => None,
            })
            .collect();
        assert_eq!(
            held,
            [SupervisionMsg::Held {
                at: Some(5),
                forget: vec![(sup, 1)]
            }]
        );
    }

    /// Regression (swarm seed 70210): a home told to step down (its supervisor was
    /// taken over while it was cut off) tells its keepers to drop their copies.
    /// Before, its keepers in the group it had moved to kept the copy, and their
    /// leader took the supervisor over again when the home later left that group:
    /// two homes restarted the same children.
    #[test]
    fn a_home_stepping_down_tells_its_keepers_to_drop_their_copies() {
        let mut home = Supervision::new(n1(), SupervisionConfig::default(), 0);
        let alone = alone(n1());
        let call = one_permanent_child(nefele_api::TenantId(1), 5);
        home.handle_api(Time::ZERO, RequestId(7), call, &alone);
        let sup = *home.sups.keys().next().expect("a supervisor");
        home.keepers = vec![NodeId(2), NodeId(3)];
        std::iter::from_fn(|| home.poll_output()).for_each(drop);
        let taker = NodeId(4);
        let held = SupervisionMsg::Held {
            at: None,
            forget: vec![(sup, 1)],
        };
        home.handle_message(Time::from_millis(5), taker, held, &alone);
        assert!(home.sups.is_empty(), "stepped down");
        let dropped: Vec<NodeId> = std::iter::from_fn(|| home.poll_output())
            .filter_map(|o| match o {
                ServiceOutput::Send(to, SupervisionMsg::Dropped { sup: s }) if s == sup => Some(to),
                _ => None,
            })
            .collect();
        assert_eq!(dropped, vec![NodeId(2), NodeId(3)]);
    }

    /// What `pick` finds in the messages `s` sent `to` since last polled (its
    /// other outputs are dropped).
    fn sent_to<T>(
        s: &mut Supervision,
        to: NodeId,
        pick: impl Fn(SupervisionMsg) -> Option<T>,
    ) -> Vec<T> {
        std::iter::from_fn(|| s.poll_output())
            .filter_map(|o| match o {
                ServiceOutput::Send(t, msg) if t == to => pick(msg),
                _ => None,
            })
            .collect()
    }

    /// The versions of the record fragments `home` sent `k` since last polled
    /// (its other outputs are dropped).
    fn replica_versions_to(home: &mut Supervision, k: NodeId) -> Vec<u64> {
        sent_to(home, k, |m| match m {
            SupervisionMsg::Replica { version, .. } => Some(version),
            _ => None,
        })
    }

    /// A home running, alone, one supervisor of one permanent child.
    fn lone_home(h: Identity) -> Supervision {
        let mut home = Supervision::new(h, SupervisionConfig::default(), 0);
        let call = one_permanent_child(nefele_api::TenantId(1), 5);
        home.handle_api(Time::ZERO, RequestId(7), call, &alone(h));
        home
    }

    /// `keeper` given the record of `home` (at `h`) at 10 ms, and its `Alive`
    /// with `base` at 20 ms, in `group`.
    fn keep(
        keeper: &mut Supervision,
        h: NodeId,
        home: &Supervision,
        group: &[NodeId],
        base: Vec<NodeId>,
    ) {
        for msg in replicas_of(home, 1) {
            keeper.on_replica(Time::from_millis(10), h, msg, group);
        }
        keeper.on_alive(Time::from_millis(20), h, 20, base, group);
    }

    /// The replica fragments of `home`'s first supervisor, as version `version`.
    /// `group` without `home`: the quorum base of a home confirmed in it.
    fn others(group: &[NodeId], home: NodeId) -> Vec<NodeId> {
        group.iter().copied().filter(|m| *m != home).collect()
    }

    /// n2, leading n3, n4 and the lone home `h`, keeps its record (the group its
    /// base), runs `before` on it, then takes the supervisor over once `h` is
    /// removed. Returns n2 and its group without the home.
    fn take_over_from_lone_home(
        h: Identity,
        before: impl FnOnce(&mut Supervision, SupervisorId),
    ) -> (Supervision, Context<'static>) {
        let k = n2();
        let home = lone_home(h);
        let sup = *home.sups.keys().next().expect("a supervisor");
        let with_home = led_by(k, vec![h.node, k.node, NodeId(3), NodeId(4)], 1);
        let without_home = led_by(k, vec![k.node, NodeId(3), NodeId(4)], 2);
        let group = with_home.tree.local_group();
        let mut keeper = Supervision::new(k, SupervisionConfig::default(), 0);
        let changed = ServiceEvent::GroupChanged { instance: 0 };
        keeper.handle_event(Time::ZERO, &changed, &with_home);
        keep(&mut keeper, h.node, &home, &group, others(&group, h.node));
        before(&mut keeper, sup);
        home_removed(&mut keeper, h.node, Time::from_millis(50), &without_home);
        let heard = Time::from_millis(20);
        tick_past_authority(&mut keeper, Time::from_millis(50), heard, &without_home);
        (keeper, without_home)
    }

    fn replicas_of(home: &Supervision, version: u64) -> Vec<SupervisionMsg> {
        let (&sup, s) = home.sups.iter().next().expect("a supervisor");
        let parts = s.rec.fragments().expect("fragments");
        let count = parts.len() as u16;
        parts
            .into_iter()
            .enumerate()
            .map(|(i, bytes)| SupervisionMsg::Replica {
                sup,
                version,
                part: i as u16,
                parts: count,
                bytes,
            })
            .collect()
    }

    /// Regression (swarm seed 10325, and 93152 for the wait): the leader that
    /// keeps the copy of a home it hears in a newer life takes the supervisor
    /// over at once, on the members' word (the earlier life's authority ended
    /// with it: nothing is waited out), and the home's
    /// leaving the group afterwards (a jump of its clock made it claim the group,
    /// and the members told it to leave) changes nothing. Before 10325, the
    /// leader dropped the copy as that of a home living on in another group;
    /// before 93152, it waited out the old life's authority, by when the group
    /// had dissolved into others, none holding most of the home's base.
    #[test]
    fn a_leader_takes_over_from_a_restarted_home_at_once() {
        let (h, k) = (id(1), id(2));
        let home = lone_home(h);
        let led = |members, epoch| led_by(k, members, epoch);
        let with_home = led(vec![h.node, k.node, NodeId(3), NodeId(4)], 1);
        assert!(with_home.tree.group(0).is_some_and(|g| g.led_by_me()));
        let mut keeper = Supervision::new(k, SupervisionConfig::default(), 0);
        let group = with_home.tree.local_group();
        keep(&mut keeper, h.node, &home, &group, others(&group, h.node));
        let changed = ServiceEvent::GroupChanged { instance: 0 };
        keeper.handle_event(Time::from_millis(30), &changed, &with_home);
        let restarted = ServiceEvent::PeerRestarted { node: h.node };
        keeper.handle_event(Time::from_millis(40), &restarted, &with_home);
        disowned(&mut keeper, Time::from_millis(40), &with_home);
        assert_eq!(keeper.sups.len(), 1, "taken over at once");
        assert!(keeper.copies.is_empty());
        let without_home = led(vec![k.node, NodeId(3), NodeId(4)], 2);
        keeper.handle_event(Time::from_millis(50), &changed, &without_home);
        tick_past_authority(
            &mut keeper,
            Time::from_millis(50),
            Time::from_millis(20),
            &without_home,
        );
        assert_eq!(keeper.sups.len(), 1, "kept when the home left");
    }

    /// Regression (swarm seed 481683, `supervision.restarted`): a copy is taken
    /// over up to half of `hold` after its home's last word, no longer only within
    /// `refresh`. A home restarted while partitions had moved its keeper into a
    /// group with less than half of its base; most of the base was back beside the
    /// keeper past `refresh`, and nobody ever took the supervisor over.
    #[test]
    fn a_copy_is_taken_over_until_half_of_hold_after_its_homes_last_word() {
        let (h, k) = (id(1), id(2));
        let home = lone_home(h);
        let with_home = led_by(k, vec![h.node, k.node, NodeId(3), NodeId(4)], 1);
        let group = with_home.tree.local_group();
        let config = SupervisionConfig::default();
        let last_word = Time::from_millis(20);
        let taken_if_restart_heard_at = |at: Time| {
            let mut keeper = Supervision::new(k, config.clone(), 0);
            keep(&mut keeper, h.node, &home, &group, others(&group, h.node));
            let changed = ServiceEvent::GroupChanged { instance: 0 };
            let mut now = Time::from_millis(30);
            keeper.handle_event(now, &changed, &with_home);
            // Ticking all along: a late tick would count as a stall of this agent.
            while now + config.probe_period < at {
                now = now + config.probe_period;
                keeper.handle_timeout(now, &with_home);
            }
            let restarted = ServiceEvent::PeerRestarted { node: h.node };
            keeper.handle_event(at, &restarted, &with_home);
            disowned(&mut keeper, at, &with_home);
            !keeper.sups.is_empty()
        };
        let second = Duration::from_secs(1);
        assert!(taken_if_restart_heard_at(
            last_word + config.refresh + second
        ));
        assert!(taken_if_restart_heard_at(last_word + config.hold / 2));
        assert!(!taken_if_restart_heard_at(
            last_word + config.hold / 2 + second
        ));
    }

    /// Regression (swarm seed 330599, `supervision.restarted`): a home gave a child
    /// up and stalled before it told it; the leader that takes its copy over tells
    /// the give-up once its own keepers hold it. Before, it kept the child given up
    /// and told nobody: the client never heard, and the slot was never run again.
    #[test]
    fn a_taker_tells_the_give_ups_its_copy_holds() {
        let (h, k) = (id(1), id(2));
        let mut home = Supervision::new(h, SupervisionConfig::default(), 0);
        let tenant = nefele_api::TenantId(1);
        home.handle_api(
            Time::ZERO,
            RequestId(7),
            one_permanent_child(tenant, 0),
            &alone(h),
        );
        let spawn = first_call(&mut home);
        let pid = Pid::new(h.node, h.incarnation, 1);
        let answered = ServiceEvent::Answered {
            request: spawn,
            reply: ApiReply::Spawned(Ok(vec![pid])),
        };
        home.handle_event(Time::from_millis(1), &answered, &alone(h));
        let exited = ServiceEvent::ProcessExited {
            pid,
            tenant,
            status: ExitStatus::Code(1),
        };
        home.handle_event(Time::from_millis(2), &exited, &alone(h));
        let sup = *home.sups.keys().next().expect("the supervisor");
        assert_eq!(home.sups[&sup].rec.children[0].phase, Phase::GaveUp);
        let with_home = led_by(k, vec![h.node, k.node, NodeId(3), NodeId(4)], 1);
        let mut keeper = Supervision::new(k, SupervisionConfig::default(), 0);
        let group = with_home.tree.local_group();
        keep(&mut keeper, h.node, &home, &group, others(&group, h.node));
        let restarted = ServiceEvent::PeerRestarted { node: h.node };
        keeper.handle_event(Time::from_millis(40), &restarted, &with_home);
        disowned(&mut keeper, Time::from_millis(40), &with_home);
        let taken = keeper.sups.get(&sup).expect("taken over");
        let untold: Vec<Option<Pid>> = taken.untold.iter().map(|(_, p)| *p).collect();
        assert_eq!(untold, vec![Some(pid)], "the give-up is to be told");
        assert!(taken.untold.iter().all(|(v, _)| *v <= taken.version));
    }

    /// Regression (swarm seed 97566, `supervision.no_twin`): a leader takes over
    /// only with the word of most of the home's base, which the members it does
    /// not hear cannot give. Heir n28, cut off alone by a partition, took its
    /// silent leader's group over with the eight members across the partition
    /// still in its view, and took over the supervisors the leader ran, which
    /// kept its quorum on the other side: both restarted the children.
    #[test]
    fn a_leader_takes_over_only_with_most_of_the_base_heard() {
        let (h, k) = (id(1), id(2));
        let home = lone_home(h);
        let members = vec![h.node, k.node, NodeId(3), NodeId(4), NodeId(5)];
        let with_home = led_by(k, members, 1);
        let mut keeper = Supervision::new(k, SupervisionConfig::default(), 0);
        let group = with_home.tree.local_group();
        keep(&mut keeper, h.node, &home, &group, others(&group, h.node));
        let changed = ServiceEvent::GroupChanged { instance: 0 };
        keeper.handle_event(Time::from_millis(30), &changed, &with_home);
        // Only itself heard of the four others of the base: no take-over.
        let cut_off = led_unheard(k, &[NodeId(3), NodeId(4), NodeId(5)]);
        let removed = ServiceEvent::HostRemoved {
            instance: 0,
            node: h.node,
            level: 0,
        };
        keeper.handle_event(Time::from_millis(40), &removed, &cut_off);
        keeper.handle_event(Time::from_millis(40), &changed, &cut_off);
        let times = (Time::from_millis(40), Time::from_millis(20));
        tick_past_authority_answered(&mut keeper, times, &cut_off, |_| false);
        assert!(keeper.sups.is_empty(), "taken over on an unheard view");
        assert_eq!(keeper.copies.len(), 1);
        // Itself and two more of the four heard: most of the base.
        let heard = led_unheard(k, &[NodeId(5)]);
        keeper.handle_timeout(Time::from_secs(3), &heard);
        disowned_by(&mut keeper, Time::from_secs(3), &heard, |m| m != NodeId(5));
        assert_eq!(
            keeper.sups.len(),
            1,
            "taken over with most of the base heard"
        );
    }

    /// A home at `h` with one supervisor, and the leader `l` of its group of
    /// five (`h`, `l`, n3, n4, n5), told its quorum base (the other four) at 20 ms.
    fn home_and_taker_told_its_base(h: Identity, l: Identity) -> (Supervision, Supervision) {
        let home = lone_home(h);
        let group = vec![h.node, l.node, NodeId(3), NodeId(4), NodeId(5)];
        let mut taker = Supervision::new(l, SupervisionConfig::default(), 0);
        let base = others(&group, h.node);
        taker.on_alive(Time::from_millis(20), h.node, 20, base, &group);
        (home, taker)
    }

    /// Regression (swarm seed 95582, `supervision.no_twin`): a leader that knows
    /// the home's base takes a passed copy over only with most of the base heard.
    /// A partition cut a few members of the home's group off with their leader;
    /// one passed its copy, judging by the view the leader had pushed, and the
    /// leader took it over while the home kept its quorum across the partition.
    #[test]
    fn a_leader_takes_a_passed_copy_over_only_with_most_of_the_base_heard() {
        let (h, l) = (id(1), id(2));
        let (home, mut taker) = home_and_taker_told_its_base(h, l);
        let passer = NodeId(3);
        let pass = |taker: &mut Supervision, now: Time, ctx: &Context<'_>| {
            for m in passes_of(&home, h.node, 1, None) {
                taker.handle_message(now, passer, m, ctx);
            }
        };
        // Itself and the passer heard: two of the four others of the base.
        pass(
            &mut taker,
            Time::from_secs(3),
            &led_unheard(l, &[NodeId(4), NodeId(5)]),
        );
        assert!(
            taker.sups.is_empty(),
            "taken over with half the base unheard"
        );
        // Asked the members' word on the first pass, taken over on the next.
        let heard = led_unheard(l, &[NodeId(5)]);
        pass(&mut taker, Time::from_secs(4), &heard);
        disowned(&mut taker, Time::from_secs(4), &heard);
        pass(&mut taker, Time::from_secs(4), &heard);
        assert_eq!(
            taker.sups.len(),
            1,
            "taken over with most of the base heard"
        );
    }

    /// Regression (swarm seed 530624, 5% loss): a pass that came whole while the
    /// taker asked the members' word was dropped, and every later one lost a
    /// fragment or came after the word had lapsed: nobody took the supervisor
    /// over. The fragments are kept meanwhile, and any later one completes it.
    #[test]
    fn a_pass_gathered_while_the_word_is_asked_is_taken_over_at_any_later_fragment() {
        use nefele_api::supervision::{
            Intensity, RestartPolicy, Strategy, SupervisedSpawn, SupervisionSpec,
        };
        let (h, l) = (id(1), id(2));
        let mut home = Supervision::new(h, SupervisionConfig::default(), 0);
        let spec = nefele_api::ProcSpec {
            path: "/bin/worker".into(),
            argv: vec!["w".repeat(2_000)],
            ..nefele_api::ProcSpec::default()
        };
        let call = ApiCall::SpawnSupervised {
            tenant: nefele_api::TenantId(1),
            spawn: SupervisedSpawn::N(3, spec),
            supervision: SupervisionSpec {
                strategy: Strategy::OneForOne,
                intensity: Intensity {
                    max_restarts: 5,
                    period: Duration::from_secs(10),
                },
                policies: vec![RestartPolicy::Permanent; 3],
            },
        };
        home.handle_api(Time::ZERO, RequestId(7), call, &alone(h));
        let passes = passes_of(&home, h.node, 1, None);
        assert!(passes.len() > 1, "a record in several fragments");
        let group = vec![h.node, l.node, NodeId(3), NodeId(4), NodeId(5)];
        let mut taker = Supervision::new(l, SupervisionConfig::default(), 0);
        let base = others(&group, h.node);
        taker.on_alive(Time::from_millis(20), h.node, 20, base, &group);
        let (passer, heard) = (NodeId(3), led_unheard(l, &[]));
        let now = Time::from_secs(4);
        for m in passes.clone() {
            taker.handle_message(now, passer, m, &heard);
        }
        assert!(taker.sups.is_empty(), "the members' word is asked first");
        disowned(&mut taker, now, &heard);
        // The next pass loses every fragment but the last.
        let last = passes.last().cloned().expect("a fragment");
        taker.handle_message(now + Duration::from_millis(500), passer, last, &heard);
        assert_eq!(taker.sups.len(), 1, "taken over");
    }

    /// n2, leading n3 to n5 and told the base of the lone home n1 (gone), given
    /// at 4 s n3's whole pass of n1's copy: the taker, the passer, n2's group
    /// and the time.
    fn taker_given_a_whole_pass() -> (Supervision, NodeId, Context<'static>, Time) {
        let (h, l) = (id(1), id(2));
        let (home, mut taker) = home_and_taker_told_its_base(h, l);
        let (passer, heard) = (NodeId(3), led_unheard(l, &[]));
        let now = Time::from_secs(4);
        for m in passes_of(&home, h.node, 1, None) {
            taker.handle_message(now, passer, m, &heard);
        }
        (taker, passer, heard, now)
    }

    /// Regression (swarm seed 730212, `supervision.restarted`): a pass that came
    /// whole while the taker asked the members' word is taken over on the word
    /// that carries it, not at the passer's next pass. Before, the taker's group
    /// dissolved into another before that pass, which went to the new group's
    /// taker; the members' promises to the first held it back for a promise, and
    /// the child was restarted past its bound.
    #[test]
    fn a_whole_pass_is_taken_over_on_the_word_that_carries_it() {
        let (mut taker, passer, heard, now) = taker_given_a_whole_pass();
        assert!(taker.sups.is_empty(), "the members' word is asked first");
        disowned(&mut taker, now + Duration::from_millis(1), &heard);
        assert_eq!(taker.sups.len(), 1, "taken over on the word");
        let confirmed = std::iter::from_fn(|| taker.poll_output()).any(
            |o| matches!(o, ServiceOutput::Send(to, SupervisionMsg::Copied { .. }) if to == passer),
        );
        assert!(confirmed, "the passer is told, and drops its copy");
    }

    /// A whole pass awaiting the members' word is asked about at the taker's
    /// every tick, not only when its passer passes again. Before, swarm seed
    /// 97574 (once the federation's beats told of departed agents): the taker
    /// asked at the passer's pace and missed the first tick at which the
    /// members could give their word; the passer won part of it, and the split
    /// delayed the restart past its bound.
    #[test]
    fn a_whole_pass_awaiting_the_word_is_asked_about_at_every_tick() {
        let (mut taker, _, heard, now) = taker_given_a_whole_pass();
        std::iter::from_fn(|| taker.poll_output()).for_each(drop);
        let mut asked_at = Vec::new();
        let period = taker.config.probe_period;
        let end = now + period * 4;
        for at in (1..4).map(|k| now + period * k) {
            taker.handle_timeout(at, &heard);
            let asked = std::iter::from_fn(|| taker.poll_output())
                .any(|o| matches!(o, ServiceOutput::Send(_, SupervisionMsg::Disown { .. })));
            if asked {
                asked_at.push(at);
            }
        }
        assert!(asked_at.len() >= 3, "asked at {asked_at:?}");
        disowned(&mut taker, end, &heard);
        taker.handle_timeout(end, &heard);
        assert_eq!(taker.sups.len(), 1, "taken over on the word");
    }

    /// A leader that never knew the home's base judges a passed copy by the base
    /// the `Pass` carries, as one that knew it does (see the test above); before
    /// a `Pass` carried it, the passer's judgement, made by the view the leader
    /// pushed, stood.
    #[test]
    fn a_leader_that_never_knew_the_base_judges_by_the_passed_one() {
        let (h, l) = (id(1), id(2));
        let home = lone_home(h);
        let group = vec![h.node, l.node, NodeId(3), NodeId(4), NodeId(5)];
        let passer = NodeId(3);
        let pass = |base: Option<Vec<NodeId>>| {
            let mut taker = Supervision::new(l, SupervisionConfig::default(), 0);
            let ctx = led_unheard(l, &[NodeId(4), NodeId(5)]);
            for m in passes_of(&home, h.node, 1, base) {
                taker.handle_message(Time::from_secs(3), passer, m, &ctx);
            }
            taker.sups.len()
        };
        // Itself and the passer heard: two of the four others of the base.
        assert_eq!(
            pass(Some(others(&group, h.node))),
            0,
            "half the base unheard"
        );
        assert_eq!(
            pass(None),
            1,
            "without a base, the passer's judgement stands"
        );
    }

    /// A keeper passes its copy with the home's base it heard (`Alive`).
    #[test]
    fn a_pass_carries_the_base_its_keeper_heard() {
        let (h, k) = (id(1), id(3));
        let home = lone_home(h);
        let group = vec![h.node, NodeId(2), k.node, NodeId(4)];
        let mut keeper = Supervision::new(k, SupervisionConfig::default(), 0);
        let base = others(&group, h.node);
        keeper.on_alive(Time::from_millis(20), h.node, 20, base.clone(), &group);
        for m in replicas_of(&home, 1) {
            keeper.on_replica(Time::from_millis(30), h.node, m, &group);
        }
        let sup = *keeper.copies.keys().next().expect("a whole copy");
        keeper.pass_on(NodeId(2), sup);
        let passes: Vec<Option<Vec<NodeId>>> = std::iter::from_fn(|| keeper.poll_output())
            .filter_map(|o| match o {
                ServiceOutput::Send(_, SupervisionMsg::Pass { base, .. }) => Some(base),
                _ => None,
            })
            .collect();
        assert!(!passes.is_empty());
        assert!(passes.iter().all(|b| b.as_ref() == Some(&base)));
    }

    /// `home`'s first supervisor's record as a `Pass` of home `h` at `version`,
    /// carrying `base`.
    fn passes_of(
        home: &Supervision,
        h: NodeId,
        version: u64,
        base: Option<Vec<NodeId>>,
    ) -> Vec<SupervisionMsg> {
        replicas_of(home, version)
            .into_iter()
            .map(|m| match m {
                SupervisionMsg::Replica {
                    sup,
                    version,
                    part,
                    parts,
                    bytes,
                } => SupervisionMsg::Pass {
                    sup,
                    home: h,
                    base: base.clone(),
                    epoch: 1,
                    version,
                    part,
                    parts,
                    bytes,
                },
                other => other,
            })
            .collect()
    }

    /// Regression (swarm seed 90037): a leader judges a take-over by the home's
    /// quorum base, not by its own group. A home that just moved into this group
    /// still needs its old group's confirmations (its base): when it vanishes,
    /// that group's leader takes it over with their word, not this one. Before,
    /// this leader, seeing most of its own group, took a stale copy over beside
    /// the old group's leader (twins). A home confirmed in this group is taken
    /// over.
    #[test]
    fn a_leader_takes_over_only_with_most_of_the_homes_base() {
        let (h, k) = (n1(), n2());
        let home = lone_home(h);
        let led = |members, epoch| led_by(k, members, epoch);
        let with_home = led(vec![h.node, k.node, NodeId(3), NodeId(4)], 1);
        let without_home = led(vec![k.node, NodeId(3), NodeId(4)], 2);
        let group = with_home.tree.local_group();
        let old_group = vec![NodeId(5), NodeId(6), NodeId(7)];
        for (base, takes) in [(old_group, false), (others(&group, h.node), true)] {
            let mut keeper = Supervision::new(k, SupervisionConfig::default(), 0);
            let changed = ServiceEvent::GroupChanged { instance: 0 };
            keeper.handle_event(Time::ZERO, &changed, &with_home);
            keep(&mut keeper, h.node, &home, &group, base.clone());
            home_removed(&mut keeper, h.node, Time::from_millis(50), &without_home);
            // The old group's members disown the home for their own leader.
            let times = (Time::from_millis(50), Time::from_millis(20));
            let answers = |_| takes;
            tick_past_authority_answered(&mut keeper, times, &without_home, answers);
            assert_eq!(keeper.sups.len(), usize::from(takes), "base {base:?}");
            // A take-over is told to the rest of the group, and to the old home.
            let told: BTreeSet<NodeId> = std::iter::from_fn(|| keeper.poll_output())
                .filter_map(|o| match o {
                    ServiceOutput::Send(to, SupervisionMsg::TakenOver { home, .. })
                        if home == h.node =>
                    {
                        Some(to)
                    }
                    _ => None,
                })
                .collect();
            let members = if takes {
                vec![h.node, NodeId(3), NodeId(4)]
            } else {
                vec![]
            };
            assert_eq!(told.into_iter().collect::<Vec<_>>(), members);
        }
    }

    /// A home running a supervisor from an older epoch steps down when told of
    /// a later take-over, whichever home it names: the first home of swarm
    /// seed 441394 heard only of the second take-over, from its first taker.
    #[test]
    fn a_home_steps_down_on_a_later_take_over_from_another_home() {
        let h = n1();
        let mut home = lone_home(h);
        let sup = *home.sups.keys().next().expect("a supervisor");
        let told = SupervisionMsg::TakenOver {
            sup,
            home: NodeId(76),
            epoch: 2,
        };
        home.handle_message(Time::from_millis(5), NodeId(70), told, &alone(h));
        assert!(home.sups.is_empty(), "stepped down");
    }

    /// Regression (swarm seed 780575, shrunk): a taker disowns the home it took
    /// over from for no other taker, and names itself. Before, its own take-over
    /// was in no record of take-overs heard of: n9 took a supervisor over from
    /// n5 across a partition; after the heal, n5's keeper on the other side
    /// asked n9, its base's one other member, for its word, got it, and took
    /// the stale copy over beside n9: twins.
    #[test]
    fn a_taker_disowns_its_old_home_for_no_other_taker() {
        let h = n1();
        let (mut keeper, without_home) = take_over_from_lone_home(h, |_, _| {});
        assert_eq!(keeper.sups.len(), 1, "taken over");
        std::iter::from_fn(|| keeper.poll_output()).for_each(drop);
        let later = Time::from_secs(20);
        let ask = SupervisionMsg::Disown {
            home: h.node,
            epoch: 0,
        };
        keeper.handle_message(later, NodeId(6), ask, &without_home);
        let answers: Vec<_> = std::iter::from_fn(|| keeper.poll_output())
            .filter_map(|o| match o {
                ServiceOutput::Send(NodeId(6), m) => Some(m),
                _ => None,
            })
            .collect();
        let promised = SupervisionMsg::Promised {
            home: h.node,
            taker: keeper.me.node,
            took: true,
        };
        assert_eq!(answers, [promised]);
    }

    /// A new home tells every earlier home of the chain it heard of (and the
    /// supervisor's origin) of its take-over, wherever they are.
    #[test]
    fn a_take_over_is_told_to_every_earlier_home_heard_of() {
        let h = n1();
        // An earlier take-over of the same supervisor, from n9, heard of.
        let (mut keeper, _) = take_over_from_lone_home(h, |keeper, sup| {
            keeper.taken.note(Time::ZERO, sup, (NodeId(9), h.node), 1);
        });
        let told: BTreeSet<NodeId> = std::iter::from_fn(|| keeper.poll_output())
            .filter_map(|o| match o {
                ServiceOutput::Send(to, SupervisionMsg::TakenOver { .. }) => Some(to),
                _ => None,
            })
            .collect();
        assert!(told.contains(&NodeId(9)), "told {told:?}");
        assert!(told.contains(&h.node), "told {told:?}");
    }

    /// A new home tells its group and the old home of its take-over again at
    /// every refresh while it runs the supervisor, so members that joined since,
    /// or came back in a newer life, hear of it (swarm seed 441394: the taker's
    /// new life was back after the first announcements).
    #[test]
    fn a_take_over_is_told_again_at_every_refresh() {
        let h = n1();
        let (mut keeper, without_home) = take_over_from_lone_home(h, |_, _| {});
        assert_eq!(keeper.sups.len(), 1, "taken over");
        let mut told_at = Vec::new();
        let end = Time::ZERO + keeper.config.refresh * 4;
        while let Some(now) = keeper.next_timeout().filter(|t| *t < end) {
            keeper.handle_timeout(now, &without_home);
            let told = std::iter::from_fn(|| keeper.poll_output()).any(|o| {
                matches!(o, ServiceOutput::Send(to, SupervisionMsg::TakenOver { .. }) if to == h.node)
            });
            if told {
                told_at.push(now);
            }
        }
        let refresh = keeper.config.refresh;
        let gaps = told_at.windows(2).map(|w| w[1].saturating_since(w[0]));
        let last = told_at.last().copied().unwrap_or(Time::ZERO);
        let period = refresh + keeper.config.probe_period;
        assert!(last + period >= end, "told at {told_at:?}");
        for gap in gaps {
            assert!(gap <= period, "told at {told_at:?}");
        }
    }

    /// Regression (swarm seed 242716, `supervision.no_twin`): a leader takes over
    /// only once most of the home's base disowned the home, and a member that
    /// confirmed the home lately does not. A partition cut the home's rack in
    /// halves; moments later another cut four members of the group off from
    /// everyone. The leader, across the first partition from the home, counted
    /// those four (not suspected yet) as its side, while their last
    /// confirmations still kept the home's authority: both ran the child.
    #[test]
    fn a_leader_takes_over_only_once_most_of_the_base_disowned_the_home() {
        let (h, k) = (n1(), n2());
        let home = lone_home(h);
        let with_home = led_by(k, nodes(&[1, 2, 3, 4, 5]), 1);
        let without_home = led_by(k, nodes(&[2, 3, 4, 5]), 2);
        let group = with_home.tree.local_group();
        let base = others(&group, h.node);
        let mut keeper = Supervision::new(k, SupervisionConfig::default(), 0);
        let changed = ServiceEvent::GroupChanged { instance: 0 };
        keeper.handle_event(Time::ZERO, &changed, &with_home);
        keep(&mut keeper, h.node, &home, &group, base.clone());
        home_removed(&mut keeper, h.node, Time::from_millis(50), &without_home);
        let member_of_k = |me: NodeId| member_under(id(me.0), k.node, nodes(&[2, 3, 4, 5]), 2);
        // Members running since the start (a member disowns nobody just after it
        // starts).
        let mut members: BTreeMap<NodeId, Supervision> = [3, 4, 5]
            .map(|n| {
                let mut member = Supervision::new(id(n), SupervisionConfig::default(), 0);
                member.votes.live(Time::ZERO);
                (NodeId(n), member)
            })
            .into();
        // The keeper's asks go to the members, their words come back.
        let exchange =
            |keeper: &mut Supervision, members: &mut BTreeMap<NodeId, Supervision>, now| {
                let outputs: Vec<_> = std::iter::from_fn(|| keeper.poll_output()).collect();
                for o in outputs {
                    let ServiceOutput::Send(to, ask @ SupervisionMsg::Disown { .. }) = o else {
                        continue;
                    };
                    let Some(member) = members.get_mut(&to) else {
                        continue;
                    };
                    member.handle_message(now, k.node, ask, &member_of_k(to));
                    for o in std::iter::from_fn(|| member.poll_output()) {
                        if let ServiceOutput::Send(_, word @ SupervisionMsg::Disowned { .. }) = o {
                            keeper.handle_message(now, to, word, &without_home);
                        }
                    }
                }
            };
        // n3 and n4 hear the home until 1.5 s (the keeper last at 20 ms); n5 not.
        let mut now = Time::from_millis(50);
        let mut confirmed = now;
        while now < Time::from_millis(4000) {
            now = now + Duration::from_millis(100);
            if now <= Time::from_millis(1500) {
                for n in [3, 4] {
                    let member = members.get_mut(&NodeId(n)).expect("a member");
                    member.on_alive(now, h.node, now.as_nanos(), base.clone(), &group);
                    std::iter::from_fn(|| member.poll_output()).for_each(drop);
                }
                confirmed = now;
            }
            keeper.handle_timeout(now, &without_home);
            exchange(&mut keeper, &mut members, now);
            // Their last confirmations keep the home's authority for `authority`
            // on the home's clock: their word comes only after its slack.
            if now < confirmed + slack(keeper.config.authority) {
                assert!(keeper.sups.is_empty(), "taken over at {now:?}");
            }
        }
        assert_eq!(
            keeper.sups.len(),
            1,
            "taken over once most disowned the home"
        );
        // A member that disowned the home confirms it no more.
        let member = members.get_mut(&NodeId(3)).expect("a member");
        member.on_alive(now, h.node, now.as_nanos(), base, &group);
        let confirmed = std::iter::from_fn(|| member.poll_output()).any(|o| {
            matches!(
                o,
                ServiceOutput::Send(_, SupervisionMsg::Held { at: Some(_), .. })
            )
        });
        assert!(!confirmed, "a member confirmed the home it disowned");
    }

    /// Regression (swarm seeds 610192 and 631664, `supervision.restarted`): a
    /// taker asks the home's whole base, wherever its members are, and counts
    /// their word. The home died with its base scattered over several groups
    /// (a partition had put them beside it), none holding most of it, and
    /// before, only a taker whose group held most of the base took over, with
    /// the word of its group alone: nobody took the supervisor over.
    #[test]
    fn the_word_of_base_members_in_other_groups_counts() {
        let (h, k) = (n1(), n2());
        let home = lone_home(h);
        let with_home = led_by(k, nodes(&[1, 2, 3, 8]), 1);
        let without_home = led_by(k, nodes(&[2, 3, 8]), 2);
        let mut keeper = Supervision::new(k, SupervisionConfig::default(), 0);
        let changed = ServiceEvent::GroupChanged { instance: 0 };
        keeper.handle_event(Time::ZERO, &changed, &with_home);
        let group = with_home.tree.local_group();
        // Members 4 to 7 of the home's base live in other groups.
        keep(
            &mut keeper,
            h.node,
            &home,
            &group,
            nodes(&[2, 3, 4, 5, 6, 7]),
        );
        home_removed(&mut keeper, h.node, Time::from_millis(50), &without_home);
        let mut now = Time::from_millis(50);
        let mut asked = BTreeSet::new();
        while now < Time::from_secs(3) {
            now = now + Duration::from_millis(100);
            keeper.handle_timeout(now, &without_home);
            asked.extend(
                std::iter::from_fn(|| keeper.poll_output()).filter_map(|o| match o {
                    ServiceOutput::Send(to, SupervisionMsg::Disown { .. }) => Some(to),
                    _ => None,
                }),
            );
            for m in [6, 7] {
                let word = SupervisionMsg::Disowned { home: h.node };
                keeper.handle_message(now, NodeId(m), word, &without_home);
            }
        }
        assert_eq!(
            asked,
            nodes(&[3, 4, 5, 6, 7]).into_iter().collect(),
            "the whole base asked"
        );
        // Itself, n6 and n7: three of six, an even split.
        assert!(keeper.sups.is_empty(), "carried by half of the base");
        let word = SupervisionMsg::Disowned { home: h.node };
        keeper.handle_message(now, NodeId(4), word.clone(), &without_home);
        assert_eq!(keeper.sups.len(), 1, "four of six");
        // The members whose word carried it hear of the take-over, in their
        // groups: they disown the home for no other taker.
        let told: BTreeSet<NodeId> = std::iter::from_fn(|| keeper.poll_output())
            .filter_map(|o| match o {
                ServiceOutput::Send(to, SupervisionMsg::TakenOver { .. }) => Some(to),
                _ => None,
            })
            .collect();
        assert!(
            nodes(&[3, 4, 5, 6, 7, 8]).iter().all(|m| told.contains(m)),
            "told {told:?}"
        );
    }

    /// Regression (swarm seed 570613, `supervision.restarted`): a keeper that is
    /// a plain member of a group without most of the home's base claims the
    /// supervisor for itself, a promise's length after the home went away (a
    /// taker whose group holds most of the base claims first). Before, it passed
    /// its copy only to a taker whose group held most of the base, and after a
    /// partition had scattered the base none did: nobody claimed.
    #[test]
    fn a_keeper_in_a_group_without_most_of_the_base_claims_for_itself() {
        let (h, k) = (n1(), id(4));
        let home = lone_home(h);
        let member = |members: &[u32]| member_under(k, NodeId(2), nodes(members), 1);
        let (with_home, without_home) = (member(&[1, 2, 4, 8]), member(&[2, 4, 8]));
        let mut keeper = Supervision::new(k, SupervisionConfig::default(), 0);
        let changed = ServiceEvent::GroupChanged { instance: 0 };
        keeper.handle_event(Time::ZERO, &changed, &with_home);
        let group = with_home.tree.local_group();
        // Of the base, only the keeper is in its group.
        keep(&mut keeper, h.node, &home, &group, nodes(&[3, 4, 5, 6, 7]));
        let mut now = Time::from_millis(20);
        while now < Time::from_secs(1) {
            now = now + Duration::from_millis(100);
            keeper.handle_timeout(now, &with_home);
        }
        // The home leaves its view at 1 s, its authority long ended.
        let away = now;
        keeper.handle_event(away, &changed, &without_home);
        let mut asked = BTreeMap::new();
        while now < Time::from_secs(4) {
            now = now + Duration::from_millis(100);
            keeper.handle_timeout(now, &without_home);
            let outputs: Vec<_> = std::iter::from_fn(|| keeper.poll_output()).collect();
            for o in outputs {
                if let ServiceOutput::Send(to, SupervisionMsg::Disown { .. }) = o {
                    asked.entry(to).or_insert(now);
                }
            }
        }
        let later = away + slack(keeper.config.authority);
        assert_eq!(
            asked.keys().copied().collect::<Vec<_>>(),
            nodes(&[3, 5, 6, 7])
        );
        assert!(asked.values().all(|t| *t >= later), "asked at {asked:?}");
        assert!(asked
            .values()
            .all(|t| *t < later + keeper.config.probe_period));
        assert!(keeper.sups.is_empty(), "taken over without a word");
        let word = SupervisionMsg::Disowned { home: h.node };
        for m in [3, 5, 6] {
            keeper.handle_message(now, NodeId(m), word.clone(), &without_home);
        }
        assert_eq!(keeper.sups.len(), 1, "four of five");
    }

    /// Keeper n4, a plain member under n2 of n1 to n5, given the record of home
    /// n1 (its base n2, n3, n5 and itself); n1 then leaves the group
    /// (`without_home`, at 30 ms).
    fn keeper_whose_home_left(without_home: &Context<'_>) -> Supervision {
        let (h, k) = (n1(), id(4));
        let home = lone_home(h);
        let with_home = member_under(k, NodeId(2), nodes(&[1, 2, 3, 4, 5]), 1);
        let mut keeper = Supervision::new(k, SupervisionConfig::default(), 0);
        let changed = ServiceEvent::GroupChanged { instance: 0 };
        keeper.handle_event(Time::ZERO, &changed, &with_home);
        let group = with_home.tree.local_group();
        keep(&mut keeper, h.node, &home, &group, nodes(&[2, 3, 4, 5]));
        keeper.handle_event(Time::from_millis(30), &changed, without_home);
        keeper
    }

    /// Ticks `keeper` every 100 ms from 30 ms until it asks the members' word
    /// (at most until 6 s): when it first passed its copy, every member it passed
    /// to, when it asked, and whom.
    fn tick_until_claimed(
        keeper: &mut Supervision,
        ctx: &Context<'_>,
    ) -> (Option<Time>, BTreeSet<NodeId>, Time, BTreeSet<NodeId>) {
        let (mut passed, mut passed_to, mut asked) = (None, BTreeSet::new(), BTreeSet::new());
        let mut now = Time::from_millis(30);
        while now < Time::from_secs(6) && asked.is_empty() {
            now = now + Duration::from_millis(100);
            keeper.handle_timeout(now, ctx);
            for o in std::iter::from_fn(|| keeper.poll_output()) {
                match o {
                    ServiceOutput::Send(to, SupervisionMsg::Pass { .. }) => {
                        passed.get_or_insert(now);
                        passed_to.insert(to);
                    }
                    ServiceOutput::Send(to, SupervisionMsg::Disown { .. }) => {
                        asked.insert(to);
                    }
                    _ => {}
                }
            }
        }
        (passed, passed_to, now, asked)
    }

    /// A keeper whose group's taker leaves its pass unanswered for a promise
    /// (paused, or cut off from it) claims the supervisor beside it. Before, it
    /// passed in vain until the group removed its taker (supervise-100-home
    /// under random faults every 500 ms, seed 72: the taker was paused twice).
    #[test]
    fn a_keeper_claims_beside_a_taker_that_leaves_its_pass_unanswered() {
        let without_home = member_under(id(4), NodeId(2), nodes(&[2, 3, 4, 5]), 1);
        let mut keeper = keeper_whose_home_left(&without_home);
        let (passed, passed_to, now, asked) = tick_until_claimed(&mut keeper, &without_home);
        let passed = passed.expect("passed first");
        assert_eq!(
            passed_to,
            nodes(&[2]).into_iter().collect(),
            "passed to its taker"
        );
        assert!(
            now >= passed + slack(keeper.config.authority),
            "claimed at {now:?}"
        );
        assert_eq!(
            asked,
            nodes(&[2, 3, 5]).into_iter().collect(),
            "the base asked"
        );
        let word = SupervisionMsg::Disowned { home: n1().node };
        for m in [3, 5] {
            keeper.handle_message(now, NodeId(m), word.clone(), &without_home);
        }
        assert_eq!(keeper.sups.len(), 1, "three of four");
    }

    /// Regression (swarm seed 730212, `supervision.restarted`): a keeper whose
    /// taker is its leader, silent long enough for its federation seat to
    /// suspect it, claims as soon as it would pass, without waiting a promise for
    /// an answer. Before, the home's leader died before removing it, the home
    /// came back in a newer life, and its other keeper passed to the dead leader
    /// for a promise before it claimed: the restart came past its bound.
    #[test]
    fn a_keeper_claims_at_once_when_its_leader_is_suspected() {
        let k = id(4);
        let view = crate::federation::View {
            level: 0,
            leader: NodeId(2),
            epoch: 1,
            members: nodes(&[2, 3, 4, 5]),
            ancestors: Vec::new(),
            heirs_above: Vec::new(),
        };
        // Suspected after two periods of 300 ms, taken over by n4 after four.
        let silent = Time::from_secs(1);
        let without_home = Context {
            me: k,
            tree: crate::service::TreeView::member_ticked_until(k.node, view, silent),
            lives: None,
        };
        let group = without_home.tree.group(0).expect("a member");
        assert!(group.leader_suspected(), "the leader silent for 1 s");
        let mut keeper = keeper_whose_home_left(&without_home);
        let (passed, _, asked, _) = tick_until_claimed(&mut keeper, &without_home);
        let passed = passed.expect("passed all the same");
        assert!(
            asked <= passed + keeper.config.probe_period,
            "passed at {passed:?}, claimed only at {asked:?}"
        );
    }

    /// Regression (swarm seed 620979, `supervision.restarted`): a keeper that
    /// claimed as its group's taker claims on once another member leads the
    /// group, until it carries: the members promised to it would hold the new
    /// taker back until their promises lapsed. Before, it passed its copy to
    /// the new leader instead, and the restart came past its bound.
    #[test]
    fn a_keeper_that_claimed_claims_on_when_another_leads_its_group() {
        let (h, k) = (n1(), n2());
        let home = lone_home(h);
        let with_home = led_by(k, nodes(&[1, 2, 3, 4]), 1);
        let mut keeper = Supervision::new(k, SupervisionConfig::default(), 0);
        let changed = ServiceEvent::GroupChanged { instance: 0 };
        keeper.handle_event(Time::ZERO, &changed, &with_home);
        let group = with_home.tree.local_group();
        keep(&mut keeper, h.node, &home, &group, nodes(&[2, 3, 4]));
        let leading = led_by(k, nodes(&[2, 3, 4]), 2);
        home_removed(&mut keeper, h.node, Time::from_millis(50), &leading);
        let asks = |keeper: &mut Supervision| {
            std::iter::from_fn(|| keeper.poll_output())
                .filter(|o| matches!(o, ServiceOutput::Send(_, SupervisionMsg::Disown { .. })))
                .count()
        };
        let mut now = Time::from_millis(50);
        while asks(&mut keeper) == 0 {
            now = now + Duration::from_millis(100);
            assert!(now < Time::from_secs(3), "never claimed");
            keeper.handle_timeout(now, &leading);
        }
        // n3 leads the group now; the keeper is a plain member of it.
        let member = member_under(k, NodeId(3), nodes(&[2, 3, 4]), 3);
        keeper.handle_event(now, &changed, &member);
        now = now + keeper.config.probe_period;
        keeper.handle_timeout(now, &member);
        assert!(asks(&mut keeper) > 0, "claims on");
        let word = SupervisionMsg::Disowned { home: h.node };
        keeper.handle_message(now, NodeId(4), word, &member);
        assert_eq!(keeper.sups.len(), 1, "two of three");
    }

    /// A member disowns a home for a taker in any group, but for no taker
    /// other than the one it heard took the home's supervisors over: that one
    /// is named, and the asker yields to it.
    #[test]
    fn a_member_disowns_a_home_taken_over_for_no_other_taker() {
        let (h, me) = (n1(), id(4));
        let (first, second) = (NodeId(8), NodeId(6));
        let mut member = Supervision::new(me, SupervisionConfig::default(), 0);
        let ctx = led_by(me, vec![me.node, NodeId(5)], 1);
        let start = Time::from_secs(5);
        member.handle_timeout(Time::ZERO, &ctx);
        let ask = |m: &mut Supervision, now: Time, taker: NodeId| {
            let ask = SupervisionMsg::Disown {
                home: h.node,
                epoch: 0,
            };
            m.handle_message(now, taker, ask, &ctx);
            std::iter::from_fn(|| m.poll_output())
                .filter_map(|o| match o {
                    ServiceOutput::Send(to, m) if to == taker => Some(m),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        // Neither taker is in its group.
        let word = SupervisionMsg::Disowned { home: h.node };
        assert_eq!(ask(&mut member, start, first), std::slice::from_ref(&word));
        let sup = SupervisorId {
            origin: h.node,
            incarnation: h.incarnation,
            sequence: 0,
        };
        let taken = SupervisionMsg::TakenOver {
            sup,
            home: h.node,
            epoch: 1,
        };
        member.handle_message(start, first, taken, &ctx);
        // Long past the promise to the first taker.
        let later = start + Duration::from_secs(10);
        let promised = SupervisionMsg::Promised {
            home: h.node,
            taker: first,
            took: true,
        };
        assert_eq!(ask(&mut member, later, second), [promised]);
        assert_eq!(ask(&mut member, later, first), std::slice::from_ref(&word));
        // The home took the supervisor back from the first taker (a chain): a
        // claim on the home is no longer held back by that take-over (swarm
        // seed 470294, where the home was named as the taker of itself).
        let back = SupervisionMsg::TakenOver {
            sup,
            home: first,
            epoch: 2,
        };
        member.handle_message(later, h.node, back, &ctx);
        let last = later + Duration::from_secs(10);
        assert_eq!(ask(&mut member, last, second), [word]);
    }

    /// Regression (swarm seed 94715, shrunk): a leader whose members leave its
    /// group for another (it was paused, and its heir went on with the group)
    /// still counts them in the bases of its copies: they are on the side that
    /// takes the supervisor over. Before, it dropped them from the bases as they
    /// left, was left with a base of itself, and took the supervisor over (in
    /// its new group, through a pass) beside its heir's take-over.
    #[test]
    fn a_leader_left_by_its_members_still_counts_them_in_the_bases() {
        let (h, k) = (n1(), n2());
        let home = lone_home(h);
        let members = vec![h.node, k.node, NodeId(3), NodeId(4), NodeId(5)];
        let mut keeper = Supervision::new(k, SupervisionConfig::default(), 0);
        let changed = ServiceEvent::GroupChanged { instance: 0 };
        let before = led_by(k, members.clone(), 1);
        keeper.handle_event(Time::ZERO, &changed, &before);
        keep(
            &mut keeper,
            h.node,
            &home,
            &members,
            others(&members, h.node),
        );
        // The home is removed; then the others leave one by one (not removed by
        // it): it leads itself alone.
        let mut now = Time::from_millis(30);
        let mut ctx = led_by(k, vec![k.node, NodeId(3), NodeId(4), NodeId(5)], 2);
        home_removed(&mut keeper, h.node, now, &ctx);
        keeper.handle_event(now, &changed, &ctx);
        for (i, gone) in [NodeId(3), NodeId(4), NodeId(5)].iter().enumerate() {
            let rest: Vec<NodeId> = ctx
                .tree
                .local_group()
                .into_iter()
                .filter(|m| m != gone)
                .collect();
            ctx = led_by(k, rest, 3 + i as u64);
            now = now + Duration::from_millis(10);
            keeper.handle_event(now, &changed, &ctx);
        }
        // The members that left disown the home for the heir, not for it.
        let times = (now, Time::from_millis(20));
        tick_past_authority_answered(&mut keeper, times, &ctx, |_| false);
        assert!(
            keeper.sups.is_empty(),
            "taken over without most of the base"
        );
        assert_eq!(keeper.bases.get(&h.node), Some(&others(&members, h.node)));
    }

    /// Regression (swarm seed 94715): a leader splitting its group hands its
    /// copies of the homes in the other half to that half's leader and heir,
    /// which keep them as the home's keepers (the members left with the splitter
    /// no longer counted in the base), and whose leader takes the supervisor
    /// over once the home is removed. Before, the splitter dropped them, as those
    /// of a home living on in the other half: a home that had died unseen just
    /// before the split, sending nothing to its new keepers, was lost.
    #[test]
    fn a_split_hands_the_copies_of_the_homes_in_the_other_half_to_its_keepers() {
        let (h, k) = (id(7), id(2));
        let home = lone_home(h);
        let whole: Vec<NodeId> = [2, 3, 4, 5, 6, 7].map(NodeId).to_vec();
        let view = |leader, members: &[u32], ancestors: Vec<NodeId>| crate::federation::View {
            level: 0,
            leader: NodeId(leader),
            epoch: 2,
            members: members.iter().copied().map(NodeId).collect(),
            ancestors,
            heirs_above: Vec::new(),
        };
        let (kept, other) = (
            view(2, &[2, 3, 4], vec![]),
            view(5, &[5, 6, 7], vec![k.node]),
        );
        // The splitter, and the other half's leader and heir, all heard the home
        // in the whole group.
        let heard = |me: Identity| {
            let mut s = Supervision::new(me, SupervisionConfig::default(), 0);
            s.on_alive(
                Time::from_millis(20),
                h.node,
                20,
                others(&whole, h.node),
                &whole,
            );
            s
        };
        let mut splitter = heard(k);
        let changed = ServiceEvent::GroupChanged { instance: 0 };
        splitter.handle_event(Time::ZERO, &changed, &led_by(k, whole.clone(), 1));
        for msg in replicas_of(&home, 1) {
            splitter.on_replica(Time::from_millis(10), h.node, msg, &whole);
        }
        let split = Context {
            me: k,
            tree: crate::service::TreeView::splitter_of(kept, other.clone()),
            lives: None,
        };
        splitter.handle_event(Time::from_millis(40), &changed, &split);
        splitter.handle_timeout(Time::from_millis(100), &split);
        let passes: Vec<(NodeId, SupervisionMsg)> = std::iter::from_fn(|| splitter.poll_output())
            .filter_map(|o| match o {
                ServiceOutput::Send(to, m @ SupervisionMsg::Pass { .. }) => Some((to, m)),
                _ => None,
            })
            .collect();
        let to: BTreeSet<NodeId> = passes.iter().map(|(to, _)| *to).collect();
        assert_eq!(to, [NodeId(5), NodeId(6)].into());
        let (leader, heir) = (id(5), id(6));
        let mut receivers = Vec::new();
        for (me, tree) in [
            (leader, crate::service::TreeView::leader_of(other.clone())),
            (
                heir,
                crate::service::TreeView::member_of(heir.node, other.clone()),
            ),
        ] {
            let ctx = Context {
                me,
                tree,
                lives: None,
            };
            let mut r = heard(me);
            for (_, m) in passes.iter().filter(|(to, _)| *to == me.node) {
                r.handle_message(Time::from_millis(110), k.node, m.clone(), &ctx);
            }
            assert_eq!(r.copies.len(), 1, "n{} keeps the copy", me.node.0);
            assert_eq!(r.bases.get(&h.node), Some(&vec![NodeId(5), NodeId(6)]));
            let confirm = std::iter::from_fn(|| r.poll_output()).find_map(|o| match o {
                ServiceOutput::Send(to, m @ SupervisionMsg::Copied { .. }) if to == k.node => {
                    Some(m)
                }
                _ => None,
            });
            assert!(!splitter.copies.is_empty(), "dropped before all confirmed");
            splitter.handle_message(
                Time::from_millis(120),
                me.node,
                confirm.expect("confirmed"),
                &split,
            );
            receivers.push((r, ctx));
        }
        assert!(
            splitter.copies.is_empty(),
            "both keep it: the splitter drops it"
        );
        // The home is removed from the other half: its leader takes over.
        let (mut taker, _) = receivers.remove(0);
        let without_home = Context {
            me: leader,
            tree: crate::service::TreeView::leader_of(view(5, &[5, 6], vec![k.node])),
            lives: None,
        };
        home_removed(&mut taker, h.node, Time::from_millis(200), &without_home);
        let heard = Time::from_millis(110);
        tick_past_authority(&mut taker, Time::from_millis(200), heard, &without_home);
        assert_eq!(taker.sups.len(), 1, "the other half's leader took over");
        assert!(splitter.sups.is_empty(), "the splitter takes nothing over");
    }

    /// Regression (swarm seed 90752, under 50% loss): a pass begun while the copy
    /// was fresh goes on past `refresh` until the taker confirms it (its
    /// fragments may need many rounds). Before, it stopped there, the copy being
    /// deemed stale, and the supervisor was left to nobody.
    #[test]
    fn a_pass_goes_on_past_refresh_until_confirmed() {
        let (h, k, l) = (id(1), id(2), id(3));
        let home = lone_home(h);
        let view = |leader: Identity, members: Vec<NodeId>| crate::federation::View {
            level: 0,
            leader: leader.node,
            epoch: 1,
            members,
            ancestors: vec![],
            heirs_above: Vec::new(),
        };
        let with_home = Context {
            me: k,
            tree: crate::service::TreeView::member_of(k.node, view(h, vec![h.node, k.node])),
            lives: None,
        };
        let mut keeper = Supervision::new(k, SupervisionConfig::default(), 0);
        let group = with_home.tree.local_group();
        // Most of the base is in l's group, but the keeper's word alone (it also
        // claims beside l, which does not answer) does not carry it.
        keep(
            &mut keeper,
            h.node,
            &home,
            &group,
            vec![k.node, l.node, NodeId(4)],
        );
        // Moved into l's group, without the home.
        let under_l = Context {
            me: k,
            tree: crate::service::TreeView::member_of(k.node, view(l, vec![k.node, l.node])),
            lives: None,
        };
        let changed = ServiceEvent::GroupChanged { instance: 0 };
        keeper.handle_event(Time::from_millis(40), &changed, &under_l);
        let heard = Time::from_millis(20);
        let stale = heard + keeper.config.refresh;
        let mut now = Time::from_millis(40);
        let mut passed = Vec::new();
        while now < stale + keeper.config.retry * 4 {
            now = now + Duration::from_millis(100);
            keeper.handle_timeout(now, &under_l);
            let passes = std::iter::from_fn(|| keeper.poll_output())
                .filter(|o| matches!(o, ServiceOutput::Send(_, SupervisionMsg::Pass { .. })))
                .count();
            if passes > 0 {
                passed.push(now);
            }
        }
        assert!(passed.first().is_some_and(|t| *t < stale), "{passed:?}");
        assert!(passed.last().is_some_and(|t| *t > stale), "{passed:?}");
    }

    /// Regression (swarm seed 90663): a sibling's kill unanswered for `retry` is
    /// sent again at the next tick, without waiting for the call to time out.
    #[test]
    fn a_sibling_kill_unanswered_for_a_retry_is_sent_again() {
        let mut home = Supervision::new(n1(), SupervisionConfig::default(), 0);
        let ctx = alone(n1());
        let (first, second) = two_children_one_for_all(&mut home, &ctx);
        let ended = Time::from_millis(100);
        first_exits(&mut home, ended, first, &ctx);
        assert_eq!(kills(&mut home), [second]);
        let due = ended + home.config.retry + home.config.probe_period;
        let mut again = Vec::new();
        while again.is_empty() {
            let next = home
                .next_timeout()
                .expect("a tick while a child is stopped");
            assert!(next <= due, "not sent again by {due}");
            home.handle_timeout(next, &ctx);
            again = kills(&mut home);
        }
        assert_eq!(again, [second], "the sibling is killed again");
    }

    /// A supervisor created at `origin`.
    fn created_at(origin: NodeId) -> SupervisorId {
        SupervisorId {
            origin,
            incarnation: Incarnation(1),
            sequence: 0,
        }
    }

    /// A new agent `me` told by `taker`, at 0, that `sup` was taken over from
    /// `home` at take-over `epoch`.
    fn told_of_take_over(
        me: Identity,
        ctx: &Context<'_>,
        taker: NodeId,
        (sup, home, epoch): (SupervisorId, NodeId, u32),
    ) -> Supervision {
        let mut member = Supervision::new(me, SupervisionConfig::default(), 0);
        let told = SupervisionMsg::TakenOver { sup, home, epoch };
        member.handle_message(Time::ZERO, taker, told, ctx);
        member
    }

    /// `home` asks `member` (its base) to confirm it at `now`: the supervisors
    /// and epochs of each answer to it that tells it to step down.
    fn forgets_on_alive(
        member: &mut Supervision,
        home: NodeId,
        now: Time,
        ctx: &Context<'_>,
    ) -> Vec<Vec<(SupervisorId, u32)>> {
        let alive = SupervisionMsg::Alive {
            at: now.as_nanos(),
            base: vec![member.me.node],
            epoch: 1,
        };
        member.handle_message(now, home, alive, ctx);
        sent_to(member, home, |m| match m {
            SupervisionMsg::Held { forget, .. } => Some(forget),
            _ => None,
        })
    }

    /// Regression (swarm seed 90084): a member told of a take-over in its group
    /// tells the old home to step down when it asks for confirmation, so that a
    /// heal giving the home most of its base again does not let it go on beside
    /// its taker. Before, the members the take-over counted confirmed the old home
    /// once a partition put them on its side: both restarted the children.
    #[test]
    fn a_member_told_of_a_take_over_tells_the_old_home_to_step_down() {
        let me = n1();
        let (old_home, taker) = (NodeId(39), NodeId(2));
        let sup = created_at(old_home);
        let ctx = member_under_n2(me);
        let mut member = told_of_take_over(me, &ctx, taker, (sup, old_home, 1));
        // The old home, on the member's side again, asks it to confirm.
        let alive = SupervisionMsg::Alive {
            at: 5,
            base: vec![me.node],
            epoch: 1,
        };
        member.handle_message(Time::from_millis(5), old_home, alive, &ctx);
        let held: Vec<SupervisionMsg> = std::iter::from_fn(|| member.poll_output())
            .filter_map(|o| match o {
                ServiceOutput::Send(to, msg) if to == old_home => Some(msg),
                _ => None,
            })
            .collect();
        let forget = vec![(sup, 1)];
        assert_eq!(
            held,
            [SupervisionMsg::Held {
                at: Some(5),
                forget
            }]
        );
        // Remembered for `hold` only.
        let later = Time::ZERO + member.config.hold;
        member.handle_timeout(later, &ctx);
        let forgets = forgets_on_alive(&mut member, old_home, later, &ctx);
        assert_eq!(forgets, [vec![]]);
    }

    /// Regression (swarm seed 441394): a taker that restarted hears, in no group
    /// yet, that its keeper took the supervisor over from it; when the
    /// supervisor's first home (whose base it was) asks it to confirm, it tells
    /// that home to step down. Before, it noted nothing outside a group, the
    /// first home of the chain was not matched, and its confirmation let the
    /// first home act beside the second taker.
    #[test]
    fn a_restarted_taker_tells_the_first_home_of_the_next_take_over() {
        let me = n1();
        let (first_home, taker) = (NodeId(65), NodeId(70));
        let sup = created_at(first_home);
        let ctx = alone(me);
        let mut reborn = told_of_take_over(me, &ctx, taker, (sup, me.node, 2));
        let forgets = forgets_on_alive(&mut reborn, first_home, Time::from_millis(5), &ctx);
        assert_eq!(forgets, [vec![(sup, 2)]]);
    }

    /// Regression (swarm seed 90427): a home that dies right after its first
    /// supervisor started, before its first tick, is taken over: its keeper
    /// heard the home's quorum base with the record. Before, the first `Alive`
    /// went out at the home's first tick, and a keeper holding a copy but no base
    /// never found most of it in its group.
    #[test]
    fn a_home_dead_before_its_first_tick_is_taken_over() {
        let (h, k) = (n1(), n2());
        let (mut home, _) = home_of_one_child();
        let at = Time::from_millis;
        let led = |members, epoch| led_by(k, members, epoch);
        let with_home = led(vec![h.node, k.node], 1);
        let mut keeper = Supervision::new(k, SupervisionConfig::default(), 0);
        keeper.handle_event(
            at(0),
            &ServiceEvent::GroupChanged { instance: 0 },
            &with_home,
        );
        for o in std::iter::from_fn(|| home.poll_output()) {
            match o {
                ServiceOutput::Send(to, msg) if to == k.node => {
                    keeper.handle_message(at(20), h.node, msg, &with_home);
                }
                _ => {}
            }
        }
        assert_eq!(keeper.copies.len(), 1, "the keeper holds the record");
        let alone = led(vec![k.node], 2);
        home_removed(&mut keeper, h.node, at(30), &alone);
        let mut now = at(30);
        while now < at(20) + slack(keeper.config.authority) + keeper.config.probe_period {
            now = now + Duration::from_millis(100);
            keeper.handle_timeout(now, &alone);
        }
        assert_eq!(keeper.sups.len(), 1, "the keeper took the supervisor over");
    }

    /// Regression (swarm seed 90836): a record a keeper did not confirm goes to
    /// it again every `retry` until it does. Before, a record whose fragment was
    /// lost went again only at the next change or refresh, and a home that died
    /// in between left its taker without the supervisor.
    #[test]
    fn a_record_goes_again_to_a_keeper_until_it_confirms_it() {
        let k = NodeId(2);
        let ctx = member_under_n2(n1());
        let (mut home, sup) = home_of_one_child();
        let at = Time::from_millis;
        let replicas = |home: &mut Supervision| -> BTreeSet<u64> {
            replica_versions_to(home, k).into_iter().collect()
        };
        let sent = replicas(&mut home);
        assert_eq!(sent.len(), 1, "the record goes to the keeper");
        let version = *sent.first().expect("a version");
        // Its fragment was lost: no confirmation comes.
        let retry = home.config.retry;
        home.handle_timeout(at(10) + retry, &ctx);
        assert_eq!(replicas(&mut home), sent, "sent again after `retry`");
        let copied = SupervisionMsg::Copied { sup, version };
        home.handle_message(at(20) + retry, k, copied, &ctx);
        home.handle_timeout(at(10) + retry * 3, &ctx);
        assert!(replicas(&mut home).is_empty(), "not once confirmed");
    }

    /// A keeper heard in a newer life gets the home's records again at once: its
    /// earlier life's copies and confirmations died with it.
    #[test]
    fn a_keeper_that_restarted_gets_the_records_again_at_once() {
        let k = NodeId(2);
        let ctx = member_under_n2(n1());
        let (mut home, sup) = home_of_one_child();
        let at = Time::from_millis;
        let version = home.sups[&sup].version;
        home.handle_message(at(11), k, SupervisionMsg::Copied { sup, version }, &ctx);
        replica_versions_to(&mut home, k);
        home.handle_event(at(12), &ServiceEvent::PeerRestarted { node: k }, &ctx);
        assert!(
            !replica_versions_to(&mut home, k).is_empty(),
            "the record goes to the keeper's new life"
        );
        assert_eq!(home.sups[&sup].copied.get(&k), None);
    }

    /// How a home went, in [`a_keeper_moved_into_another_group_passes_a_gone_homes_copy_to_its_leader`].
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Went {
        /// Its newer life was heard.
        Restarted,
        /// The keeper, leading, removed it.
        Removed,
        /// It was no longer in the group the keeper was moved to (its own group
        /// dissolved, as the other half of a split whose leader was paused did in
        /// swarm seed 94715).
        Left,
    }

    /// Regression (swarm seed 30239): the keeper of a home that is gone, moved
    /// into another group where it does not take over, passes its copy to the
    /// member that does, once the old life's authority has ended; that member
    /// takes the supervisor over only if the home is gone by its own state too,
    /// and the keeper drops its copy when told. Every way a home goes ([`Went`]).
    /// Before, the copy stayed with the keeper until `hold` and the supervisor
    /// was lost (and before swarm seed 94715, a home that was simply no longer in
    /// the keeper's group was not passed on).
    #[test]
    fn a_keeper_moved_into_another_group_passes_a_gone_homes_copy_to_its_leader() {
        let (h, k, l) = (id(1), id(2), id(3));
        let view = |leader: Identity, members: Vec<Identity>, epoch| crate::federation::View {
            level: 0,
            leader: leader.node,
            epoch,
            members: members.iter().map(|m| m.node).collect(),
            ancestors: vec![],
            heirs_above: Vec::new(),
        };
        for went in [Went::Restarted, Went::Removed, Went::Left] {
            let home = lone_home(h);
            // The keeper: leader of the home's group of two, or its heir.
            let leader = if went == Went::Removed { k } else { h };
            let first = view(leader, vec![h, k], 1);
            let keeper_tree = if went == Went::Removed {
                crate::service::TreeView::leader_of(first)
            } else {
                crate::service::TreeView::member_of(k.node, first)
            };
            let with_home = Context {
                me: k,
                tree: keeper_tree,
                lives: None,
            };
            let mut keeper = Supervision::new(k, SupervisionConfig::default(), 0);
            let group = with_home.tree.local_group();
            keep(&mut keeper, h.node, &home, &group, others(&group, h.node));
            let gone = match went {
                Went::Removed => Some(ServiceEvent::HostRemoved {
                    instance: 0,
                    node: h.node,
                    level: 0,
                }),
                Went::Restarted => Some(ServiceEvent::PeerRestarted { node: h.node }),
                Went::Left => None,
            };
            // A newer life is heard only once merged (as in swarm seed 30239).
            let (gone, restarted) = match gone {
                Some(r @ ServiceEvent::PeerRestarted { .. }) => (None, Some(r)),
                other => (other, None),
            };
            if let Some(gone) = gone {
                keeper.handle_event(Time::from_millis(30), &gone, &with_home);
            }
            // Then merged into l's group, as a plain member (the restarted home
            // with it).
            let merged = if went == Went::Restarted {
                view(l, vec![h, k, l], 2)
            } else {
                view(l, vec![k, l], 2)
            };
            let under_l = Context {
                me: k,
                tree: crate::service::TreeView::member_of(k.node, merged.clone()),
                lives: None,
            };
            let changed = ServiceEvent::GroupChanged { instance: 0 };
            keeper.handle_event(Time::from_millis(40), &changed, &under_l);
            if let Some(restarted) = restarted {
                keeper.handle_event(Time::from_millis(40), &restarted, &under_l);
            }
            let ended = Time::from_millis(20) + slack(keeper.config.authority);
            let mut passes = Vec::new();
            let mut now = Time::from_millis(40);
            while passes.is_empty() && now < ended + keeper.config.refresh {
                now = now + Duration::from_millis(100);
                keeper.handle_timeout(now, &under_l);
                passes.extend(std::iter::from_fn(|| keeper.poll_output()).filter_map(
                    |o| match o {
                        ServiceOutput::Send(to, m @ SupervisionMsg::Pass { .. }) => Some((to, m)),
                        _ => None,
                    },
                ));
            }
            // A home heard in a newer life has no authority left to wait out.
            assert!(
                now >= ended || went == Went::Restarted,
                "not before the old authority ended"
            );
            assert!(
                !passes.is_empty() && passes.iter().all(|(to, _)| *to == l.node),
                "{went:?}"
            );
            assert!(keeper.sups.is_empty(), "a plain member takes nothing over");
            let mut taker = Supervision::new(l, SupervisionConfig::default(), 0);
            let leading = Context {
                me: l,
                tree: crate::service::TreeView::leader_of(merged.clone()),
                lives: None,
            };
            if went == Went::Restarted {
                // The home is in its group, and it has not heard a newer life:
                // the keeper's word alone is not enough.
                for (_, m) in passes.clone() {
                    taker.handle_message(now, k.node, m, &leading);
                }
                assert!(taker.sups.is_empty(), "a home live by its own state");
                // A taker that heard only its newer life knows it restarted
                // (swarm seed 90752).
                let mut lives = crate::incarnations::Incarnations::new(8);
                lives
                    .note(h.node, Incarnation(2))
                    .expect("a first life heard");
                let heard = Context {
                    lives: Some(&lives),
                    ..leading
                };
                let mut knowing = Supervision::new(l, SupervisionConfig::default(), 0);
                for (_, m) in passes.clone() {
                    knowing.handle_message(now, k.node, m, &heard);
                }
                disowned(&mut knowing, now, &heard);
                for (_, m) in passes.clone() {
                    knowing.handle_message(now, k.node, m, &heard);
                }
                assert_eq!(knowing.sups.len(), 1, "a home heard in a newer life");
                let restarted = ServiceEvent::PeerRestarted { node: h.node };
                taker.handle_event(now, &restarted, &leading);
            }
            if went == Went::Left {
                // A taker that saw the home leave its group alive does not take
                // it over either.
                let mut saw = Supervision::new(l, SupervisionConfig::default(), 0);
                let with = led_by(l, vec![h.node, k.node, l.node], 1);
                saw.handle_event(Time::ZERO, &changed, &with);
                saw.handle_event(Time::from_millis(30), &changed, &leading);
                for (_, m) in passes.clone() {
                    saw.handle_message(now, k.node, m, &leading);
                }
                assert!(saw.sups.is_empty(), "a home seen leaving alive");
            }
            // Taken over on the pass after the members' word, whichever way
            // the home went.
            for (_, m) in passes.clone() {
                taker.handle_message(now, k.node, m, &leading);
            }
            disowned(&mut taker, now, &leading);
            for (_, m) in passes {
                taker.handle_message(now, k.node, m, &leading);
            }
            assert_eq!(taker.sups.len(), 1, "the leader took the supervisor over");
            let confirm = std::iter::from_fn(|| taker.poll_output()).find_map(|o| match o {
                ServiceOutput::Send(to, m @ SupervisionMsg::Copied { .. }) if to == k.node => {
                    Some(m)
                }
                _ => None,
            });
            keeper.handle_message(now, l.node, confirm.expect("confirmed"), &under_l);
            assert!(keeper.copies.is_empty(), "the keeper dropped its copy");
        }
    }

    /// A stop is answered, and the keepers told to drop their copies, only once
    /// every keeper holds the stopped record; a keeper that takes over before
    /// then (its home died) takes it over stopped and restarts nothing. Before, a
    /// stop removed the supervisor at once: a home that died before its `Forget`
    /// arrived left a running copy, and the children were started again.
    #[test]
    fn a_stop_is_answered_once_every_keeper_holds_it_and_a_taker_restarts_nothing() {
        let (me, keeper) = (n1(), n2());
        let ctx = member_under_n2(me);
        let mut home = Supervision::new(me, SupervisionConfig::default(), 0);
        let tenant = nefele_api::TenantId(1);
        let at = Time::from_millis;
        home.handle_api(at(0), RequestId(7), one_permanent_child(tenant, 5), &ctx);
        let spawn = first_call(&mut home);
        let pid = Pid::new(NodeId(9), Incarnation(1), 1);
        let answered = ServiceEvent::Answered {
            request: spawn,
            reply: ApiReply::Spawned(Ok(vec![pid])),
        };
        home.handle_event(at(10), &answered, &ctx);
        let sup = *home.sups.keys().next().expect("the supervisor");
        let stop = ApiCall::StopSupervisor { tenant, id: sup };
        home.handle_api(at(20), RequestId(8), stop, &ctx);
        let version = home.sups[&sup].version;
        let (mut replies, mut replicas, mut forgets) = (Vec::new(), Vec::new(), 0);
        let mut drain = |home: &mut Supervision| {
            for o in std::iter::from_fn(|| home.poll_output()) {
                match o {
                    ServiceOutput::Reply(request, reply) if request == RequestId(8) => {
                        replies.push((request, reply));
                    }
                    ServiceOutput::Send(to, m @ SupervisionMsg::Replica { .. }) => {
                        assert_eq!(to, keeper.node);
                        replicas.push(m);
                    }
                    ServiceOutput::Send(_, SupervisionMsg::Forget { .. }) => forgets += 1,
                    _ => {}
                }
            }
            (
                std::mem::take(&mut replies),
                std::mem::take(&mut replicas),
                forgets,
            )
        };
        let (answered, stopped, forgot) = drain(&mut home);
        assert!(
            answered.is_empty() && forgot == 0,
            "not before the keeper holds it"
        );
        assert!(!stopped.is_empty(), "the stopped record goes to the keeper");
        // The home dies now: its keeper, leading, takes the stopped copy over.
        let led = |members, epoch| led_by(keeper, members, epoch);
        let with_home = led(vec![me.node, keeper.node], 1);
        let mut taker = Supervision::new(keeper, SupervisionConfig::default(), 0);
        let group = with_home.tree.local_group();
        for m in stopped.clone() {
            taker.on_replica(at(30), me.node, m, &group);
        }
        taker.on_alive(at(30), me.node, 30, others(&group, me.node), &group);
        assert!(taker.copies[&sup].rec.state == SupervisorState::Stopped);
        let alone = led(vec![keeper.node], 2);
        home_removed(&mut taker, me.node, at(40), &alone);
        let mut now = at(40);
        let mut spawned = false;
        while now < at(30) + slack(taker.config.authority) + taker.config.lease * 3 {
            now = now + Duration::from_millis(100);
            taker.handle_timeout(now, &alone);
            spawned |= std::iter::from_fn(|| taker.poll_output()).any(|o| {
                matches!(o, ServiceOutput::Call(_, call) if matches!(*call, ApiCall::Spawn { .. }))
            });
        }
        assert!(!spawned, "a stopped supervisor restarts nothing");
        assert!(taker.copies.is_empty(), "taken over");
        assert!(taker.sups.is_empty(), "and ended (the taker has no keeper)");
        // Had the home lived: answered once its keeper confirms the stopped version.
        let copied = SupervisionMsg::Copied { sup, version };
        home.handle_message(at(50), keeper.node, copied, &ctx);
        let (answered, _, forgot) = drain(&mut home);
        assert_eq!(
            answered,
            vec![(RequestId(8), ApiReply::SupervisorStopped(Ok(())))]
        );
        assert_eq!(forgot, 1, "the keeper drops its copy");
        assert!(home.sups.is_empty());
    }

    /// A client's call for a one-for-one supervisor of one permanent child, given
    /// up after `max_restarts` restarts in 10 s.
    fn one_permanent_child(tenant: nefele_api::TenantId, max_restarts: u32) -> ApiCall {
        use nefele_api::supervision::{
            Intensity, RestartPolicy, Strategy, SupervisedSpawn, SupervisionSpec,
        };
        ApiCall::SpawnSupervised {
            tenant,
            spawn: SupervisedSpawn::One(nefele_api::ProcSpec::default()),
            supervision: SupervisionSpec {
                strategy: Strategy::OneForOne,
                intensity: Intensity {
                    max_restarts,
                    period: Duration::from_secs(10),
                },
                policies: vec![RestartPolicy::Permanent],
            },
        }
    }

    fn kills(s: &mut Supervision) -> Vec<Pid> {
        kill_calls(s).into_iter().map(|(_, pid)| pid).collect()
    }

    /// The kills `s` asked for since last polled, with their requests.
    fn kill_calls(s: &mut Supervision) -> Vec<(RequestId, Pid)> {
        std::iter::from_fn(|| s.poll_output())
            .filter_map(|o| match o {
                ServiceOutput::Call(request, call) => match *call {
                    ApiCall::Kill { pid, .. } => Some((request, pid)),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    /// The first life of n1, the home in these tests.
    /// Swarm seed 91110: a home moved between groups (in no tree for a moment), so
    /// it told its keepers nothing; in its new group it had new keepers, and the old
    /// ones kept their copies. Once the home restarted, one of them passed its
    /// stale copy on and the supervisor was taken over a second time, beside the
    /// first taker's restarts (a twin). Now a home back in a tree tells its former
    /// keepers to drop their copies, at a few ticks.
    #[test]
    fn a_home_back_in_a_tree_tells_its_keepers_left_behind_to_drop_their_copies() {
        let (mut home, sup) = home_kept_by_n2_and_n3();
        let dropped_to = |home: &mut Supervision| dropped_to(home, sup);
        dropped_to(&mut home);
        // Between groups: nobody is told (it may be leaving for good).
        home.replicate(Time::from_secs(1), &alone(n1()));
        assert_eq!(dropped_to(&mut home), Vec::<NodeId>::new());
        // In a group again, under n2: n3, left behind, is told, a few times.
        let group = member_under_n2(n1());
        let mut told = 0;
        for t in 2..10 {
            home.replicate(Time::from_secs(t), &group);
            let to = dropped_to(&mut home);
            assert!(to.iter().all(|k| *k == NodeId(3)), "{to:?}");
            told += to.len();
        }
        assert_eq!(told, DROPPED_TRIES as usize);
        assert!(home.former.is_empty());
    }

    /// Swarm seed 400155: a home back from a stall, between groups (so with no
    /// keeper), stepped down for its taker; the copy it had just sent a new keeper
    /// stayed, a second holder of the supervisor. Now a home that steps down tells
    /// its former keepers too, in a tree or not.
    #[test]
    fn a_home_stepping_down_between_groups_tells_its_former_keepers_to_drop_their_copies() {
        let (mut home, sup) = home_kept_by_n2_and_n3();
        home.replicate(Time::from_secs(1), &alone(n1()));
        assert!(home.keepers.is_empty(), "no keeper between groups");
        assert_eq!(dropped_to(&mut home, sup), Vec::<NodeId>::new());
        home.step_down_before(sup, 1);
        assert!(home.sups.is_empty(), "taken over at a newer epoch");
        assert_eq!(dropped_to(&mut home, sup), vec![NodeId(2), NodeId(3)]);
    }

    /// Home n1 running one supervisor, with keepers n2 and n3.
    fn home_kept_by_n2_and_n3() -> (Supervision, SupervisorId) {
        let mut home = Supervision::new(n1(), SupervisionConfig::default(), 0);
        let call = one_permanent_child(nefele_api::TenantId(1), 5);
        home.handle_api(Time::ZERO, RequestId(7), call, &alone(n1()));
        let sup = *home.sups.keys().next().expect("a supervisor");
        home.keepers = vec![NodeId(2), NodeId(3)];
        (home, sup)
    }

    /// The keepers `home` told to drop their copies of `sup` since last polled.
    fn dropped_to(home: &mut Supervision, sup: SupervisorId) -> Vec<NodeId> {
        std::iter::from_fn(|| home.poll_output())
            .filter_map(|o| match o {
                ServiceOutput::Send(to, SupervisionMsg::Dropped { sup: s }) if s == sup => Some(to),
                _ => None,
            })
            .collect()
    }

    /// Regression (swarm seed 511006): a partition cut a home from most of its
    /// base just as two members joined the group on its side and confirmed within
    /// the old confirmations' authority, so they joined the base. The other side's
    /// leader took over with most of the old base. Before, the home committed the
    /// change `slack(refresh)` later though the old base never heard of it, and
    /// restarted the children beside the taker.
    #[test]
    fn a_base_change_the_old_base_never_heard_of_gives_no_authority() {
        let members = |ids: &[u32]| ids.iter().copied().map(NodeId).collect::<Vec<_>>();
        let whole = led_by(n1(), members(&[1, 2, 3, 4, 5]), 1);
        let mut home = Supervision::new(n1(), SupervisionConfig::default(), 0);
        let call = one_permanent_child(nefele_api::TenantId(1), 5);
        home.handle_api(Time::ZERO, RequestId(7), call, &whole);
        let mut now = Time::ZERO;
        let mut run = |home: &mut Supervision, until_ms: u64, ctx: &Context<'_>, answer: &[u32]| {
            while now < Time::from_millis(until_ms) {
                now = now + Duration::from_millis(100);
                home.handle_timeout(now, ctx);
                let outputs: Vec<_> = std::iter::from_fn(|| home.poll_output()).collect();
                for o in outputs {
                    if let ServiceOutput::Send(m, SupervisionMsg::Alive { at, .. }) = o {
                        if answer.contains(&m.0) {
                            let held = SupervisionMsg::Held {
                                at: Some(at),
                                forget: Vec::new(),
                            };
                            home.handle_message(now, m, held, ctx);
                        }
                    }
                }
            }
            home.authorized(now)
        };
        assert!(run(&mut home, 2_000, &whole, &[2, 3, 4, 5]));
        // The partition: n3, n4 and n5 fall silent; n6 and n7 join and confirm
        // while the old confirmations still count.
        let joined = led_by(n1(), members(&[1, 2, 3, 4, 5, 6, 7]), 2);
        run(&mut home, 2_600, &joined, &[2, 6, 7]);
        let old_base = members(&[2, 3, 4, 5]);
        assert_eq!(home.pending_base(), Some(&old_base[..]), "n6 and n7 joined");
        // Federation removes the silent members; the home's side is most of the
        // new base, never of the old one.
        let cut = led_by(n1(), members(&[1, 2, 6, 7]), 3);
        run(&mut home, 3_500, &cut, &[2, 6, 7]);
        for until in (4_000..=30_000).step_by(500) {
            assert!(
                !run(&mut home, until, &cut, &[2, 6, 7]),
                "authorized at {until} ms"
            );
        }
    }

    /// The first life of `node`.
    fn id(node: u32) -> Identity {
        Identity {
            node: NodeId(node),
            incarnation: Incarnation(1),
        }
    }

    fn n1() -> Identity {
        id(1)
    }

    fn n2() -> Identity {
        id(2)
    }

    /// `me` in no tree.
    fn alone(me: Identity) -> Context<'static> {
        Context {
            me,
            tree: crate::service::TreeView::empty(me.node),
            lives: None,
        }
    }

    /// `me` in a level-0 group of two led by n2 (its keeper and its quorum).
    fn member_under_n2(me: Identity) -> Context<'static> {
        member_under(me, NodeId(2), vec![me.node, NodeId(2)], 1)
    }

    /// `me`, a plain member of the level-0 group of `members` led by `leader` at
    /// `epoch`.
    fn member_under(
        me: Identity,
        leader: NodeId,
        members: Vec<NodeId>,
        epoch: u64,
    ) -> Context<'static> {
        let view = crate::federation::View {
            level: 0,
            leader,
            epoch,
            members,
            ancestors: Vec::new(),
            heirs_above: Vec::new(),
        };
        Context {
            me,
            tree: crate::service::TreeView::member_of(me.node, view),
            lives: None,
        }
    }

    /// The nodes numbered `ns`.
    fn nodes(ns: &[u32]) -> Vec<NodeId> {
        ns.iter().copied().map(NodeId).collect()
    }

    /// `home` removed from `keeper`'s level-0 group (now `ctx`'s) at `at`.
    fn home_removed(keeper: &mut Supervision, home: NodeId, at: Time, ctx: &Context<'_>) {
        let removed = ServiceEvent::HostRemoved {
            instance: 0,
            node: home,
            level: 0,
        };
        keeper.handle_event(at, &removed, ctx);
    }

    /// `keeper` ticks every 100 ms from `now` until a probe period past the end
    /// of the authority of an `Alive` heard at `heard`.
    fn tick_past_authority(keeper: &mut Supervision, now: Time, heard: Time, ctx: &Context<'_>) {
        tick_past_authority_answered(keeper, (now, heard), ctx, |_| true);
    }

    /// As [`tick_past_authority`], with only the members `answers` picks
    /// disowning the home (the others are cut off, or elsewhere).
    fn tick_past_authority_answered(
        keeper: &mut Supervision,
        (mut now, heard): (Time, Time),
        ctx: &Context<'_>,
        answers: impl Fn(NodeId) -> bool,
    ) {
        let ended = heard + slack(keeper.config.authority);
        while now < ended + keeper.config.probe_period {
            now = now + Duration::from_millis(100);
            keeper.handle_timeout(now, ctx);
            disowned_by(keeper, now, ctx, &answers);
        }
    }

    /// Every member a taker asked to disown a home does (see [`disown`]); the
    /// taker's other outputs stay.
    fn disowned(taker: &mut Supervision, now: Time, ctx: &Context<'_>) {
        disowned_by(taker, now, ctx, |_| true);
    }

    /// Every member a taker asked to disown a home does if `answers` picks it.
    fn disowned_by(
        taker: &mut Supervision,
        now: Time,
        ctx: &Context<'_>,
        answers: impl Fn(NodeId) -> bool,
    ) {
        let mut asks = Vec::new();
        let outputs: Vec<_> = std::iter::from_fn(|| taker.poll_output()).collect();
        for o in outputs {
            match o {
                ServiceOutput::Send(m, SupervisionMsg::Disown { home, .. }) => asks.push((m, home)),
                other => taker.outbox.push_back(other),
            }
        }
        for (m, home) in asks.into_iter().filter(|(m, _)| answers(*m)) {
            taker.handle_message(now, m, SupervisionMsg::Disowned { home }, ctx);
        }
    }

    /// `me` leading a level-0 group of `members` at `epoch`.
    fn led_by(me: Identity, members: Vec<NodeId>, epoch: u64) -> Context<'static> {
        Context {
            me,
            tree: crate::service::TreeView::leader_of(level_0(me, members, epoch)),
            lives: None,
        }
    }

    /// `me` leading n3, n4 and n5 at epoch 2 (the home n1 gone), not having heard
    /// `unheard` of them yet.
    fn led_unheard(me: Identity, unheard: &[NodeId]) -> Context<'static> {
        let members = vec![me.node, NodeId(3), NodeId(4), NodeId(5)];
        let view = level_0(me, members, 2);
        Context {
            me,
            tree: crate::service::TreeView::leader_unheard(view, unheard),
            lives: None,
        }
    }

    /// The level-0 view of `members` led by `me` at `epoch`.
    fn level_0(me: Identity, members: Vec<NodeId>, epoch: u64) -> crate::federation::View {
        crate::federation::View {
            level: 0,
            leader: me.node,
            epoch,
            members,
            ancestors: Vec::new(),
            heirs_above: Vec::new(),
        }
    }

    /// A home at n1 under n2 ([`member_under_n2`]) running a supervisor of one
    /// permanent child, spawned at 0 and placed at n9 at 10 ms.
    fn home_of_one_child() -> (Supervision, SupervisorId) {
        let ctx = member_under_n2(n1());
        let mut home = Supervision::new(n1(), SupervisionConfig::default(), 0);
        let call = one_permanent_child(nefele_api::TenantId(1), 5);
        home.handle_api(Time::ZERO, RequestId(7), call, &ctx);
        let spawn = first_call(&mut home);
        let answered = ServiceEvent::Answered {
            request: spawn,
            reply: ApiReply::Spawned(Ok(vec![Pid::new(NodeId(9), Incarnation(1), 1)])),
        };
        home.handle_event(Time::from_millis(10), &answered, &ctx);
        let sup = *home.sups.keys().next().expect("the supervisor");
        (home, sup)
    }

    /// The request of the first internal call `home` made since last polled.
    fn first_call(home: &mut Supervision) -> RequestId {
        std::iter::from_fn(|| home.poll_output())
            .find_map(|o| match o {
                ServiceOutput::Call(request, _) => Some(request),
                _ => None,
            })
            .expect("an internal call")
    }

    /// A one-for-all supervisor of two children at `home` (as `ctx` sees the
    /// tree), spawned at 0 and answered at 10 ms: the first child runs at the
    /// home's host, the second at n9. Returns the two pids.
    fn two_children_one_for_all(home: &mut Supervision, ctx: &Context<'_>) -> (Pid, Pid) {
        use nefele_api::supervision::{
            Intensity, RestartPolicy, Strategy, SupervisedSpawn, SupervisionSpec,
        };
        let call = ApiCall::SpawnSupervised {
            tenant: nefele_api::TenantId(1),
            spawn: SupervisedSpawn::N(2, nefele_api::ProcSpec::default()),
            supervision: SupervisionSpec {
                strategy: Strategy::OneForAll,
                intensity: Intensity {
                    max_restarts: 5,
                    period: Duration::from_secs(10),
                },
                policies: vec![RestartPolicy::Permanent],
            },
        };
        home.handle_api(Time::ZERO, RequestId(7), call, ctx);
        let spawn = first_call(home);
        let me = ctx.me;
        let pids = (
            Pid::new(me.node, me.incarnation, 1),
            Pid::new(NodeId(9), Incarnation(1), 1),
        );
        let started = ServiceEvent::ProcessStarted {
            pid: pids.0,
            tenant: nefele_api::TenantId(1),
            start: Start::Supervised,
        };
        home.handle_event(Time::from_millis(10), &started, ctx);
        let reply = ApiReply::Spawned(Ok(vec![pids.0, pids.1]));
        let answered = ServiceEvent::Answered {
            request: spawn,
            reply,
        };
        home.handle_event(Time::from_millis(10), &answered, ctx);
        pids
    }

    /// The first child of [`two_children_one_for_all`] exits at `now`.
    fn first_exits(home: &mut Supervision, now: Time, pid: Pid, ctx: &Context<'_>) {
        let exited = ServiceEvent::ProcessExited {
            pid,
            tenant: nefele_api::TenantId(1),
            status: ExitStatus::Code(1),
        };
        home.handle_event(now, &exited, ctx);
    }

    /// The fence: a watched process is kept for a lease from its start, renewed
    /// only by grants (the host's own earlier clock readings), and killed past it;
    /// a grant that arrives late cannot revive it. Before leases a cut-off host
    /// kept its children forever while its home restarted them elsewhere.
    #[test]
    fn a_host_kills_a_watched_process_whose_lease_ended() {
        let me = Identity {
            node: NodeId(1),
            incarnation: Incarnation(1),
        };
        let config = SupervisionConfig::default();
        let lease = config.lease;
        let mut host = Supervision::new(me, config, 0);
        let home = NodeId(2);
        let sup = SupervisorId {
            origin: home,
            incarnation: Incarnation(1),
            sequence: 0,
        };
        let pid = Pid::new(me.node, me.incarnation, 1);
        let at = |ms| Time::from_millis(ms);
        host.enter(at(0));
        host.live.insert(pid, (nefele_api::TenantId(1), at(0)));
        host.on_watch(at(100), home, sup, 0, vec![pid], None);
        // Renewed by a grant of its reading at 1 s: kept until 1 s + lease.
        host.on_watch(
            at(1_500),
            home,
            sup,
            0,
            vec![pid],
            Some(at(1_000).as_nanos()),
        );
        assert_eq!(host.next_timeout(), Some(at(1_000) + lease));
        host.enter(at(1_000) + lease - Duration::from_millis(1));
        assert!(kills(&mut host).is_empty(), "killed within its lease");
        // A grant of an older reading, delivered late, changes nothing.
        let late = at(1_000) + lease + Duration::from_millis(500);
        host.enter(late);
        host.on_watch(late, home, sup, 0, vec![pid], Some(at(1_200).as_nanos()));
        assert_eq!(kills(&mut host), vec![pid]);
        host.enter(late + lease);
        assert!(kills(&mut host).is_empty(), "not watched again");
        assert!(host.watchers.is_empty());
    }

    /// A supervisor's spawn is fenced from its start even if no home ever watches
    /// it (its home died between the spawn and its first `Watch`): killed at the
    /// end of its lease, so the next home knows when it is surely gone. Before,
    /// only watched processes were fenced, and a new home never restarted such a
    /// child if its host died too (it waited for that host to answer).
    #[test]
    fn a_host_kills_a_supervised_spawn_no_home_ever_watched() {
        let me = n1();
        let config = SupervisionConfig::default();
        let lease = config.lease;
        let mut host = Supervision::new(me, config, 0);
        let ctx = alone(me);
        let spawn = Pid::new(me.node, me.incarnation, 1);
        let client = Pid::new(me.node, me.incarnation, 2);
        let at = Time::from_millis(100);
        for (pid, start) in [(spawn, Start::Supervised), (client, Start::Spawned)] {
            let started = ServiceEvent::ProcessStarted {
                pid,
                tenant: nefele_api::TenantId(1),
                start,
            };
            host.handle_event(at, &started, &ctx);
        }
        assert_eq!(host.next_timeout(), Some(at + lease));
        host.handle_timeout(at + lease - Duration::from_millis(1), &ctx);
        assert!(kills(&mut host).is_empty(), "killed within its lease");
        host.handle_timeout(at + lease, &ctx);
        assert_eq!(
            kills(&mut host),
            vec![spawn],
            "a client's own process is never fenced"
        );
        assert_eq!(host.next_timeout(), None);
    }

    /// A home asks only after its children: supervisors' spawns, and processes an
    /// earlier life of this agent started (adopted: they may be children). A
    /// tenant's own spawn is not even routed here (most processes are such, and
    /// supervision remembered every one of them); an adopted one is answered for,
    /// running and then ended.
    #[test]
    fn a_host_keeps_only_supervised_and_adopted_processes() {
        let me = n1();
        let mut host = Supervision::new(me, SupervisionConfig::default(), 0);
        let ctx = alone(me);
        let tenant = nefele_api::TenantId(1);
        let [own, adopted] = [1, 2].map(|i| Pid::new(me.node, me.incarnation, i));
        let started = |pid, start| ServiceEvent::ProcessStarted { pid, tenant, start };
        let exited = |pid| ServiceEvent::ProcessExited {
            pid,
            tenant,
            status: ExitStatus::Code(3),
        };
        let at = Time::from_millis(100);
        assert!(!host.wants(&started(own, Start::Spawned)));
        assert!(host.wants(&started(adopted, Start::Adopted)));
        host.handle_event(at, &started(own, Start::Spawned), &ctx);
        host.handle_event(at, &started(adopted, Start::Adopted), &ctx);
        assert!(
            host.unwatched.is_empty(),
            "an adopted process is not fenced"
        );
        let (home, sup) = (
            NodeId(2),
            SupervisorId {
                origin: NodeId(2),
                incarnation: Incarnation(1),
                sequence: 0,
            },
        );
        // Ended, unknown and kept, as each `Status` the host sent told them.
        type Told = (Vec<(Pid, ExitStatus)>, Vec<Pid>, Vec<Pid>);
        let status = |host: &mut Supervision| -> Vec<Told> {
            std::iter::from_fn(|| host.poll_output())
                .filter_map(|o| match o {
                    ServiceOutput::Send(
                        _,
                        SupervisionMsg::Status {
                            ended,
                            unknown,
                            kept,
                            ..
                        },
                    ) => Some((ended, unknown, kept)),
                    _ => None,
                })
                .collect()
        };
        host.on_watch(at, home, sup, 0, vec![own, adopted], None);
        assert_eq!(status(&mut host), vec![(vec![], vec![own], vec![adopted])]);
        assert!(!host.wants(&exited(own)), "never kept, so not routed here");
        assert!(host.wants(&exited(adopted)));
        host.handle_event(at, &exited(adopted), &ctx);
        assert_eq!(
            status(&mut host),
            vec![(vec![(adopted, ExitStatus::Code(3))], vec![], vec![])],
            "its watcher hears of its end"
        );
        host.on_watch(at, home, sup, 0, vec![adopted], None);
        assert_eq!(
            status(&mut host),
            vec![(vec![(adopted, ExitStatus::Code(3))], vec![], vec![])],
            "and so does a home that asks later"
        );
    }

    /// Regression (swarm seed 10284: a rest-for-one restart of 40 children came
    /// 2.7 s late). A kill that stops a sibling for a restart and is not answered
    /// by the sibling's host is sent again at the next tick; before, the restart
    /// waited for the sibling's lease to end.
    #[test]
    fn an_unanswered_kill_of_a_sibling_being_stopped_is_sent_again() {
        let mut home = Supervision::new(n1(), SupervisionConfig::default(), 0);
        let ctx = alone(n1());
        let (first, second) = two_children_one_for_all(&mut home, &ctx);
        first_exits(&mut home, Time::from_millis(100), first, &ctx);
        let [(kill, pid)] = kill_calls(&mut home)[..] else {
            panic!("one kill: the sibling's")
        };
        assert_eq!(pid, second);
        let reply = ApiReply::Killed(Err(KillError::Unreachable));
        let answered = ServiceEvent::Answered {
            request: kill,
            reply,
        };
        home.handle_event(Time::from_millis(200), &answered, &ctx);
        let next = home
            .next_timeout()
            .expect("a tick while a child is stopped");
        home.handle_timeout(next, &ctx);
        assert_eq!(kills(&mut home), [second], "the sibling is killed again");
    }

    /// Regression (swarm seed 10284: a home stalled past its take-over killed, as
    /// soon as it was back, the siblings of a child that had ended meanwhile: its
    /// taker's children). A home without authority kills no sibling; it does once
    /// its keepers and quorum confirm it again.
    #[test]
    fn a_home_without_authority_stops_no_sibling_until_confirmed() {
        let ctx = member_under_n2(n1());
        let mut home = Supervision::new(n1(), SupervisionConfig::default(), 0);
        let (first, second) = two_children_one_for_all(&mut home, &ctx);
        // n2 (the keeper, also the quorum) confirms the `Alive` of `now`.
        let confirm = |home: &mut Supervision, now: Time| {
            let held = SupervisionMsg::Held {
                at: Some(now.as_nanos()),
                forget: vec![],
            };
            home.handle_message(now, NodeId(2), held, &ctx);
        };
        // Ticks every probe period; only the first `Alive` is confirmed.
        let mut now = Time::from_millis(10);
        let lapsed = now + home.config.authority + home.config.probe_period;
        let mut confirmed = false;
        while now < lapsed {
            now = home.next_timeout().expect("ticks");
            home.handle_timeout(now, &ctx);
            if !confirmed {
                confirm(&mut home, now);
                confirmed = true;
            }
        }
        assert!(!home.authorized(now), "the authority lapsed");
        first_exits(&mut home, now, first, &ctx);
        assert_eq!(kills(&mut home), [], "no kill without authority");
        confirm(&mut home, now);
        assert_eq!(kills(&mut home), [second], "killed once confirmed");
    }

    /// Regression (the swarm's supervision draws, runs cut to few hosts): a restart
    /// that placement refused for lack of room is retried at the next tick, and the
    /// agent says so at each refusal (`RestartShort`, naming the child's last
    /// process), so an operator, and the simulator's restart check, can tell a late
    /// restart with no room from a lost one. Before, the refusal was silent.
    #[test]
    fn a_restart_refused_for_lack_of_room_is_told_and_tried_again() {
        use nefele_api::Resource;
        let me = n1();
        let mut home = Supervision::new(me, SupervisionConfig::default(), 0);
        let ctx = alone(me);
        let tenant = nefele_api::TenantId(1);
        let call = one_permanent_child(tenant, 5);
        let at = Time::from_millis;
        let spawns = |home: &mut Supervision| -> Vec<RequestId> {
            std::iter::from_fn(|| home.poll_output())
                .filter_map(|o| match o {
                    ServiceOutput::Call(request, call) => matches!(
                        *call,
                        ApiCall::Spawn { .. } | ApiCall::NSpawn { .. } | ApiCall::CSpawn { .. }
                    )
                    .then_some(request),
                    _ => None,
                })
                .collect()
        };
        let answer = |home: &mut Supervision, now: Time, request, reply| {
            let answered = ServiceEvent::Answered { request, reply };
            home.handle_event(now, &answered, &ctx);
        };
        home.handle_api(at(0), RequestId(7), call, &ctx);
        let [first] = spawns(&mut home)[..] else {
            panic!("one spawn")
        };
        let pid = Pid::new(me.node, me.incarnation, 1);
        answer(&mut home, at(10), first, ApiReply::Spawned(Ok(vec![pid])));
        let started = ServiceEvent::ProcessStarted {
            pid,
            tenant,
            start: Start::Supervised,
        };
        home.handle_event(at(10), &started, &ctx);
        let exited = ServiceEvent::ProcessExited {
            pid,
            tenant,
            status: ExitStatus::Code(1),
        };
        home.handle_event(at(100), &exited, &ctx);
        let mut restart = spawns(&mut home);
        let mut now = at(100);
        while restart.is_empty() {
            now = home.next_timeout().expect("a timer while a child is down");
            home.handle_timeout(now, &ctx);
            restart = spawns(&mut home);
        }
        let short = SpawnError::Short {
            resource: Resource::Cpu,
        };
        answer(&mut home, now, restart[0], ApiReply::Spawned(Err(short)));
        let notices: Vec<ServiceNotice> = std::iter::from_fn(|| home.poll_output())
            .filter_map(|o| match o {
                ServiceOutput::Notice(n) => Some(n),
                _ => None,
            })
            .collect();
        assert_eq!(
            notices,
            [ServiceNotice::RestartShort {
                pid: Some(pid),
                resource: Resource::Cpu
            }]
        );
        let next = home.next_timeout().expect("tried again");
        home.handle_timeout(next, &ctx);
        assert_eq!(spawns(&mut home).len(), 1, "the restart is tried again");
    }

    /// Regression (swarm seed 10151): a give-up is told only once every keeper
    /// holds a copy with it, and while the home is authorized; until then the
    /// keepers that lack it get the record again at every tick. Before, the
    /// notice went out at once, the copy was lost on the way, and the keeper that
    /// took the supervisor over started the child given up again.
    #[test]
    fn a_give_up_is_told_once_every_keeper_holds_it() {
        let me = n1();
        let keeper = NodeId(2);
        let ctx = member_under_n2(me);
        assert_eq!(ctx.tree.keepers(), vec![keeper]);
        let mut home = Supervision::new(me, SupervisionConfig::default(), 0);
        let tenant = nefele_api::TenantId(1);
        let call = one_permanent_child(tenant, 0);
        let at = Time::from_millis;
        home.handle_api(at(0), RequestId(7), call, &ctx);
        let spawn = first_call(&mut home);
        let pid = Pid::new(me.node, me.incarnation, 1);
        let reply = ApiReply::Spawned(Ok(vec![pid]));
        let answered = ServiceEvent::Answered {
            request: spawn,
            reply,
        };
        home.handle_event(at(10), &answered, &ctx);
        let sup = *home.sups.keys().next().expect("the supervisor");
        let held = |home: &mut Supervision, now: Time| {
            let msg = SupervisionMsg::Held {
                at: Some(now.as_nanos()),
                forget: Vec::new(),
            };
            home.handle_message(now, keeper, msg, &ctx);
        };
        held(&mut home, at(20));
        let exited = ServiceEvent::ProcessExited {
            pid,
            tenant,
            status: ExitStatus::Code(1),
        };
        home.handle_event(at(100), &exited, &ctx);
        let version = home.sups[&sup].version;
        // Drains the outputs: the give-ups told, and whether the keeper got the record.
        let out = |home: &mut Supervision| {
            let (mut told, mut sent) = (Vec::new(), false);
            for o in std::iter::from_fn(|| home.poll_output()) {
                match o {
                    ServiceOutput::Notice(ServiceNotice::GaveUp { pid }) => told.push(pid),
                    ServiceOutput::Send(to, SupervisionMsg::Replica { .. }) => {
                        sent |= to == keeper;
                    }
                    _ => {}
                }
            }
            (told, sent)
        };
        assert_eq!(out(&mut home), (Vec::new(), true), "sent, not told");
        home.handle_timeout(at(300), &ctx);
        assert_eq!(out(&mut home), (Vec::new(), true), "sent again at a tick");
        let copied = |home: &mut Supervision, now, version| {
            let msg = SupervisionMsg::Copied { sup, version };
            home.handle_message(now, keeper, msg, &ctx);
        };
        copied(&mut home, at(310), version - 1);
        assert!(out(&mut home).0.is_empty(), "an older copy");
        home.handle_timeout(at(600), &ctx);
        assert_eq!(out(&mut home), (Vec::new(), true), "sent again");
        // Held, but no longer authorized (its keeper last confirmed at 20 ms).
        let late = at(20) + SupervisionConfig::default().authority;
        copied(&mut home, late, version);
        assert!(out(&mut home).0.is_empty(), "not authorized");
        held(&mut home, late);
        assert_eq!(out(&mut home).0, vec![Some(pid)], "told once held");
        home.handle_timeout(late + Duration::from_millis(300), &ctx);
        assert_eq!(out(&mut home), (Vec::new(), false), "told once, sent once");
    }
}
