//! Votes for a take-over (see "Take-overs need most of the home's base" in the
//! module doc of [`super`]).
//!
//! A home acts while more than half of its quorum base (with itself) confirmed
//! one of its `Alive`s within `authority`; a taker takes over only once more
//! than half of the same base (the home aside) *disowned* the home for it. A
//! member disowns a home ([`super::SupervisionMsg::Disowned`], asked by
//! [`super::SupervisionMsg::Disown`]) only if it has confirmed none of the home's
//! `Alive`s for `slack(authority)`, so the home's authority from it has ended, and
//! then confirms none (its `Held` says so) for as long again after the latest
//! ask: the two majorities share a member, which cannot have served both at once.
//! Counting each side's majority on its own state let both act when a member
//! heard both sides (a partition that is not transitive, or a side cut off just
//! after its members confirmed the home: swarm seed 242716, where the taker
//! counted four members, not suspected yet, whose last confirmations still kept
//! the home's authority).
//!
//! Each side must judge by the same base: a `Disown` names the epoch of the
//! home's base the taker judges by, and a member that heard a newer one (from
//! the home's `Alive`) refuses and tells it ([`super::SupervisionMsg::Refused`]);
//! the home commits a change of its base only once most of the old base heard
//! of it (see [`super::quorum`]).
//!
//! A taker asks every member of the base, in whichever groups they are: a
//! home's base is the group it was last confirmed in, which partitions and
//! moves may have scattered over several groups by the time it dies.
//!
//! A member disowns a home for one taker at a time: another asker is refused
//! until the promise lapses (a taker that stops asking, having heard the home or
//! died, releases the members within `slack(authority)`), and told whom it was
//! promised to ([`super::SupervisionMsg::Promised`]). Two takers (the keepers
//! of one home, moved into two groups) may split the members' word so that
//! neither carries; the one with the higher id yields, asking nothing for two
//! promises' lengths, so that the promises made to it lapse and the members
//! give their word to the other. A taker counts a member's word for
//! `authority` after it arrived, within its promise on any clock rate this
//! service allows; it asks every probe period while it would take over, so the
//! promises run on past the take-over, until the members hear of it
//! (`TakenOver`, remembered for `hold`, and told again while the new home runs
//! the supervisor): from then on they disown the home for that taker alone,
//! and an asker told of it yields whatever its id.
//!
//! An agent disowns no home for `slack(authority)` after it starts: its earlier
//! life, if it had one, may have confirmed the home just before it ended, and
//! that confirmation may still keep the home's authority. (Before, a member that
//! restarted disowned at once, and a taker could count it beside the home's
//! majority that counted its earlier life.)
//!
//! Invariants: one entry per home on each side; entries expire (`expire`), so
//! the maps hold at most the homes heard or asked about in the last
//! `slack(authority)`, those yielded in the last two, and the bases heard in
//! the last `hold`.

use crate::ids::NodeId;
use crate::time::Time;
use std::collections::BTreeMap;
use std::time::Duration;

/// One member's promise: it confirms no `Alive` of the home until `since` plus
/// the promise's length, and disowns it for no other taker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Promise {
    taker: NodeId,
    since: Time,
}

/// The newest quorum base of a home an agent heard of, by the home's base epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Known {
    epoch: u64,
    base: Vec<NodeId>,
    heard: Time,
}

/// Why a member refused to disown a home.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// It confirmed the home lately, or started lately.
    NotNow,
    /// It promised the home to this other taker.
    Promised(NodeId),
    /// It heard that this other taker took the home's supervisors over.
    Taken(NodeId),
    /// It knows a newer base of the home (epoch and members) than the taker
    /// judges by: the taker is told it.
    Newer(u64, Vec<NodeId>),
}

/// Both sides of the votes: what this agent promised as a member, and what
/// members promised it as a taker.
#[derive(Debug, Default)]
pub(super) struct Votes {
    /// When this agent's service first ran (its life began by then).
    born: Option<Time>,
    /// When this agent last confirmed each home's `Alive`.
    confirmed: BTreeMap<NodeId, Time>,
    /// The newest base of each home heard in an `Alive` (or from a member that
    /// refused a claim), kept for `hold`.
    known: BTreeMap<NodeId, Known>,
    /// Member side: the homes this agent disowned, for whom and since when.
    promised: BTreeMap<NodeId, Promise>,
    /// Taker side: the members that disowned each home for this agent, and when
    /// their word arrived.
    words: BTreeMap<NodeId, BTreeMap<NodeId, Time>>,
    /// Taker side: when this agent last asked the members about each home.
    asked: BTreeMap<NodeId, Time>,
    /// Taker side: the homes whose take-over this agent yielded to another
    /// taker, asking nothing until then.
    yielded: BTreeMap<NodeId, Time>,
}

impl Votes {
    /// This agent's service runs at `now` (the first call marks its start).
    pub(super) fn live(&mut self, now: Time) {
        self.born.get_or_insert(now);
    }

    /// Member side: whether this agent may confirm `home`'s `Alive` now (it
    /// promised nobody not to within `promise`); if so, the confirmation is noted.
    pub(super) fn confirm(&mut self, now: Time, home: NodeId, promise: Duration) -> bool {
        if self.promised_at(now, home, promise).is_some() {
            return false;
        }
        self.confirmed.insert(home, now);
        true
    }

    fn promised_at(&self, now: Time, home: NodeId, promise: Duration) -> Option<NodeId> {
        self.promised
            .get(&home)
            .filter(|p| now < p.since + promise)
            .map(|p| p.taker)
    }

    /// `home` told (or a member told of it) its quorum base `base` of `epoch`:
    /// kept if newer than the one known.
    pub(super) fn learn(&mut self, now: Time, home: NodeId, epoch: u64, base: &[NodeId]) {
        if self.known.get(&home).is_some_and(|k| k.epoch > epoch) {
            return;
        }
        let base = base.to_vec();
        let heard = now;
        self.known.insert(home, Known { epoch, base, heard });
    }

    /// The epoch of the newest base of `home` known here (0: none).
    pub(super) fn epoch_of(&self, home: NodeId) -> u64 {
        self.known.get(&home).map_or(0, |k| k.epoch)
    }

    /// Member side: `taker` asks this agent to disown `home`, judging by its base
    /// of `epoch`. Granted (and the promise begun or renewed) unless this agent
    /// knows a newer base, started or confirmed `home` within `promise`, or
    /// promised it to another taker within `promise`. A confirmation before
    /// `reborn`, when this agent last heard `home` in a newer life, does not
    /// count: it was of an earlier life, whose authority ended with it.
    pub(super) fn disown(
        &mut self,
        now: Time,
        (home, reborn): (NodeId, Option<Time>),
        taker: NodeId,
        epoch: u64,
        promise: Duration,
    ) -> Result<(), Refusal> {
        if let Some(k) = self.known.get(&home).filter(|k| k.epoch > epoch) {
            return Err(Refusal::Newer(k.epoch, k.base.clone()));
        }
        let lately = |t: &Time| now < *t + promise;
        let this_life = |t: &Time| reborn.is_none_or(|r| *t >= r);
        let confirmed = self.confirmed.get(&home);
        if self.born.is_some_and(|t| lately(&t))
            || confirmed.is_some_and(|t| lately(t) && this_life(t))
        {
            return Err(Refusal::NotNow);
        }
        if let Some(other) = self.promised_at(now, home, promise).filter(|t| *t != taker) {
            return Err(Refusal::Promised(other));
        }
        self.promised.insert(home, Promise { taker, since: now });
        Ok(())
    }

    /// Taker side: `member` disowned `home` for this agent.
    pub(super) fn word(&mut self, now: Time, home: NodeId, member: NodeId) {
        if self.asked.contains_key(&home) {
            self.words.entry(home).or_default().insert(member, now);
        }
    }

    /// Taker side: whether more than half of `base` (`home` aside) disowned `home`
    /// for this agent within `valid`.
    pub(super) fn carried(
        &self,
        now: Time,
        home: NodeId,
        base: &[NodeId],
        valid: Duration,
    ) -> bool {
        let others = base.iter().filter(|m| **m != home);
        let words = self.words.get(&home);
        let voted = others
            .clone()
            .filter(|m| {
                words
                    .and_then(|w| w.get(m))
                    .is_some_and(|t| now < *t + valid)
            })
            .count();
        2 * voted > others.count()
    }

    /// Taker side: whether to ask the members about `home` now (at most once per
    /// `every`); if so, the ask is noted.
    pub(super) fn ask_due(&mut self, now: Time, home: NodeId, every: Duration) -> bool {
        if self.asked.get(&home).is_some_and(|t| now < *t + every)
            || self.yielded.get(&home).is_some_and(|t| now < *t)
        {
            return false;
        }
        self.asked.insert(home, now);
        true
    }

    /// Taker side: a member promised `home` to `other`, which took the home's
    /// supervisors over already (`took`) or asks for them too. This agent
    /// yields to a taker that took over, and to one with a lower id: it asks
    /// nothing for two `promise`s, so that the promises made to it lapse within
    /// the first and the members make them to the other, which asks every probe
    /// period, in the second. (Before, it asked again after one, just as the
    /// promises lapsed, and won them back as often as not: the supervise-100-home
    /// regression with random faults, seed 15.) Whether it yielded.
    pub(super) fn yield_to(
        &mut self,
        now: Time,
        (home, me): (NodeId, NodeId),
        (other, took): (NodeId, bool),
        promise: Duration,
    ) -> bool {
        if other == me || !(took || other < me) || !self.asked.contains_key(&home) {
            return false;
        }
        self.done(home);
        self.yielded.insert(home, now + promise * 2);
        true
    }

    /// Taker side: whether this agent asked the members about `home` within the
    /// last promise (it neither took it over nor yielded since).
    pub(super) fn asking(&self, home: NodeId) -> bool {
        self.asked.contains_key(&home)
    }

    /// Taker side: `home` was taken over (or its copy is gone): its words are
    /// spent.
    pub(super) fn done(&mut self, home: NodeId) {
        self.words.remove(&home);
        self.asked.remove(&home);
    }

    /// Drops what no longer counts: confirmations and promises older than
    /// `promise`, asks and words older than it too (a taker that stopped asking),
    /// and bases heard longer than `hold` ago.
    pub(super) fn expire(&mut self, now: Time, promise: Duration, hold: Duration) {
        self.known.retain(|_, k| now < k.heard + hold);
        let recent = |t: &Time| now < *t + promise;
        self.confirmed.retain(|_, t| recent(t));
        self.promised.retain(|_, p| recent(&p.since));
        self.asked.retain(|_, t| recent(t));
        self.yielded.retain(|_, t| now < *t);
        let asked = &self.asked;
        self.words.retain(|home, words| {
            words.retain(|_, t| recent(t));
            asked.contains_key(home) && !words.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMISE: Duration = Duration::from_millis(1875);

    fn at(ms: u64) -> Time {
        Time::ZERO + Duration::from_millis(ms)
    }

    const HOME: NodeId = NodeId(1);
    const TAKER: NodeId = NodeId(2);

    /// `TAKER` asks `v` at `ms` to disown `HOME`, judging by base epoch 0.
    fn ask(v: &mut Votes, ms: u64) -> Result<(), Refusal> {
        v.disown(at(ms), (HOME, None), TAKER, 0, PROMISE)
    }

    #[test]
    fn a_member_that_confirmed_the_home_lately_does_not_disown_it() {
        let mut v = Votes::default();
        assert!(v.confirm(at(1000), HOME, PROMISE));
        assert_eq!(ask(&mut v, 2000), Err(Refusal::NotNow));
        assert!(ask(&mut v, 2875).is_ok());
    }

    /// A confirmation of the home's earlier life does not hold a member back
    /// once it heard the home in a newer one: that life's authority ended with
    /// it. (Before, members refused for a promise's length after the restart,
    /// and a second taker won them meanwhile: swarm seed 96172's regression,
    /// once a restarted home's take-over needed the members' word.) One of the
    /// new life counts again.
    #[test]
    fn a_confirmation_of_an_earlier_life_of_the_home_does_not_count() {
        let mut v = Votes::default();
        assert!(v.confirm(at(1000), HOME, PROMISE));
        let reborn = Some(at(1500));
        assert!(v
            .disown(at(1600), (HOME, reborn), TAKER, 0, PROMISE)
            .is_ok());
        let mut v = Votes::default();
        assert!(v.confirm(at(1500), HOME, PROMISE));
        assert_eq!(
            v.disown(at(1600), (HOME, reborn), TAKER, 0, PROMISE),
            Err(Refusal::NotNow)
        );
    }

    /// An agent that just started may have confirmed the home in an earlier life
    /// it does not remember: it disowns nobody until a promise's length from its
    /// start (before, it disowned at once).
    #[test]
    fn a_member_disowns_nobody_until_a_promise_has_passed_since_it_started() {
        let mut v = Votes::default();
        v.live(at(1000));
        v.live(at(1500));
        assert_eq!(ask(&mut v, 2000), Err(Refusal::NotNow));
        assert!(ask(&mut v, 2875).is_ok());
    }

    #[test]
    fn a_member_that_disowned_the_home_confirms_it_no_more_until_the_promise_lapses() {
        let mut v = Votes::default();
        assert!(ask(&mut v, 1000).is_ok());
        assert!(!v.confirm(at(2000), HOME, PROMISE));
        // Renewed by the taker's next ask.
        assert!(ask(&mut v, 2500).is_ok());
        assert!(!v.confirm(at(4000), HOME, PROMISE));
        assert!(v.confirm(at(4375), HOME, PROMISE));
    }

    /// A home whose base shrank (members that left its group dropped from it)
    /// acts on most of the smaller base; a taker judging by the older one is
    /// refused by the members that heard the newer, and told it (swarm seed
    /// 250378: a split's other half, reached by one member that heard both).
    #[test]
    fn a_member_that_knows_a_newer_base_refuses_and_tells_it() {
        let mut v = Votes::default();
        let newer = vec![NodeId(4), NodeId(5)];
        v.learn(at(0), HOME, 3, &[NodeId(2), NodeId(4), NodeId(5)]);
        v.learn(at(100), HOME, 4, &newer);
        // An older base told late does not replace it.
        v.learn(at(200), HOME, 3, &[NodeId(2)]);
        assert_eq!(v.epoch_of(HOME), 4);
        assert_eq!(
            v.disown(at(3000), (HOME, None), TAKER, 3, PROMISE),
            Err(Refusal::Newer(4, newer))
        );
        assert!(v.disown(at(3000), (HOME, None), TAKER, 4, PROMISE).is_ok());
    }

    #[test]
    fn a_member_disowns_a_home_for_one_taker_at_a_time() {
        let mut v = Votes::default();
        let other = NodeId(3);
        assert!(ask(&mut v, 1000).is_ok());
        assert_eq!(
            v.disown(at(1500), (HOME, None), other, 0, PROMISE),
            Err(Refusal::Promised(TAKER))
        );
        assert!(v.disown(at(2875), (HOME, None), other, 0, PROMISE).is_ok());
    }

    /// Two takers (in two groups, each holding part of a scattered base) split
    /// the members' promises: the one with the higher id yields, asks nothing
    /// while the promises made to it lapse and for as long again, and the other
    /// is granted them meanwhile. Neither would carry otherwise, each renewing
    /// its half for good.
    #[test]
    fn of_two_takers_split_by_the_promises_the_higher_yields() {
        let (low, high) = (NodeId(3), NodeId(8));
        let every = Duration::from_millis(300);
        let mut higher = Votes::default();
        assert!(higher.ask_due(at(0), HOME, every));
        higher.word(at(10), HOME, NodeId(4));
        // Told by a member promised to the lower taker.
        assert!(higher.yield_to(at(20), (HOME, high), (low, false), PROMISE));
        assert!(higher.words.is_empty(), "its words are spent");
        assert!(!higher.ask_due(at(3000), HOME, every));
        assert!(higher.ask_due(at(3770), HOME, every), "asks again after");
        // The lower taker does not yield to the higher one, nor to itself.
        let mut lower = Votes::default();
        assert!(lower.ask_due(at(0), HOME, every));
        assert!(!lower.yield_to(at(20), (HOME, low), (high, false), PROMISE));
        assert!(!lower.yield_to(at(20), (HOME, low), (low, true), PROMISE));
        assert!(lower.ask_due(at(300), HOME, every));
        // Anyone yields to a taker that took the home over.
        assert!(lower.yield_to(at(320), (HOME, low), (high, true), PROMISE));
        assert!(!lower.ask_due(at(600), HOME, every));
        // A word about a home this agent does not claim changes nothing.
        assert!(!lower.yield_to(at(320), (NodeId(9), low), (NodeId(1), true), PROMISE));
    }

    #[test]
    fn a_take_over_is_carried_by_more_than_half_of_the_base_home_aside() {
        let mut v = Votes::default();
        let base = [HOME, NodeId(2), NodeId(3), NodeId(4), NodeId(5)];
        assert!(v.ask_due(at(0), HOME, Duration::from_millis(300)));
        v.word(at(10), HOME, NodeId(2));
        v.word(at(10), HOME, NodeId(3));
        // Two of four: an even split goes to the home.
        assert!(!v.carried(at(20), HOME, &base, Duration::from_millis(1500)));
        // A member outside the base does not count.
        v.word(at(10), HOME, NodeId(9));
        assert!(!v.carried(at(20), HOME, &base, Duration::from_millis(1500)));
        v.word(at(10), HOME, NodeId(4));
        assert!(v.carried(at(20), HOME, &base, Duration::from_millis(1500)));
        // Words grow stale.
        assert!(!v.carried(at(1510), HOME, &base, Duration::from_millis(1500)));
    }

    #[test]
    fn words_nobody_asked_for_do_not_count() {
        let mut v = Votes::default();
        v.word(at(10), HOME, NodeId(2));
        assert!(!v.carried(at(20), HOME, &[NodeId(2)], Duration::from_millis(1500)));
    }

    #[test]
    fn asks_are_spaced() {
        let mut v = Votes::default();
        let every = Duration::from_millis(300);
        assert!(v.ask_due(at(0), HOME, every));
        assert!(!v.ask_due(at(299), HOME, every));
        assert!(v.ask_due(at(300), HOME, every));
    }

    #[test]
    fn everything_expires() {
        let mut v = Votes::default();
        v.confirm(at(0), HOME, PROMISE);
        v.disown(at(0), (NodeId(7), None), TAKER, 0, PROMISE)
            .expect("granted");
        v.ask_due(at(0), HOME, PROMISE);
        v.word(at(0), HOME, NodeId(2));
        v.learn(at(0), HOME, 1, &[]);
        v.ask_due(at(0), NodeId(8), PROMISE);
        v.yield_to(at(0), (NodeId(8), TAKER), (NodeId(1), true), PROMISE);
        v.expire(at(1875), PROMISE, Duration::from_secs(30));
        assert_eq!(v.epoch_of(HOME), 1, "a base is kept for hold");
        v.expire(at(30_000), PROMISE, Duration::from_secs(30));
        assert_eq!(v.epoch_of(HOME), 0);
        assert!(v.confirmed.is_empty() && v.promised.is_empty());
        assert!(v.asked.is_empty() && v.words.is_empty() && v.yielded.is_empty());
    }
}
