//! Supervision's wire message ([`SupervisionMsg`]) and its bounds.
//!
//! - A supervisor's agent (its *home*) asks each host of its children to watch
//!   them ([`SupervisionMsg::Watch`], every probe period: also the liveness probe of
//!   that host); the host answers [`SupervisionMsg::Status`] at once, and again as
//!   soon as a watched process ends.
//! - The home copies each supervisor's record to its keepers (the level-0 leader
//!   and heir) in fragments under one datagram ([`SupervisionMsg::Replica`]), and
//!   tells them when it ends ([`SupervisionMsg::Forget`]); a keeper confirms the
//!   versions it holds ([`SupervisionMsg::Copied`]).
//! - Leases: a `Watch` grants its pids a lease that counts from the host's own
//!   clock reading in an earlier `Status` (its `ask`); the home holds its
//!   authority to grant from its keepers ([`SupervisionMsg::Alive`],
//!   [`SupervisionMsg::Held`]). See the service's module doc for the rule.
//!
//! - A member keeping the copy of a home that restarted, which it may not take
//!   over itself, passes it to its level-0 leader ([`SupervisionMsg::Pass`]).
//! - A taker asks the members of the home's base to disown the home
//!   ([`SupervisionMsg::Disown`]) and takes over once most of them did
//!   ([`SupervisionMsg::Disowned`]).
//!
//! - Names move with a restarted child: its host tells the home the names a
//!   watched process holds ([`SupervisionMsg::Holds`]); the home asks the host of
//!   the child's next process to register them for it ([`SupervisionMsg::Hand`]).
//!
//! [`validate`] bounds every list a peer sent: at most [`MAX_PIDS`] pids per
//! message, at most [`MAX_MEMBERS`] members in a quorum's base ([`MAX_PASS_BASE`]
//! in a `Pass`), at most [`MAX_CHILD_NAMES`] valid names per child, fragments of at most [`MAX_FRAGMENT`] bytes, at most [`MAX_PARTS`]
//! fragments per record, and a part number below the count.

use crate::federation::validate::MAX_MEMBERS;
use crate::ids::{NodeId, Pid};
use crate::messaging::names::valid_name;
use crate::wire::validate::check_len;
use crate::wire::Reject;
use nefele_api::spec::ExitStatus;
use nefele_api::supervision::SupervisorId;
use serde::{Deserialize, Serialize};

/// The most pids in one message (with their statuses, under one datagram).
pub const MAX_PIDS: usize = 40;
/// The largest fragment of a replicated record.
pub const MAX_FRAGMENT: usize = 1024;
/// The most members of a home's base a `Pass` carries beside a whole fragment
/// (under one datagram); a larger base (a `max_group` above it) is not carried.
pub const MAX_PASS_BASE: usize = 64;
/// The most fragments of one record (so a record is at most 4 MiB).
pub const MAX_PARTS: usize = 4096;
/// The highest record version a peer may send: a keeper that takes a record over
/// moves its version to the next take-over (the next multiple of 2^32), which must
/// not overflow. Half the range is 2^31 take-overs, more than any record lives.
pub const MAX_VERSION: u64 = u64::MAX / 2;

/// A message between two agents' supervision services.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SupervisionMsg {
    /// Home to a child's host: watch these processes of supervisor `sup`.
    Watch {
        /// The supervisor.
        sup: SupervisorId,
        /// How often it was taken over (a host tells a home with fewer, or as
        /// many from a higher node, that another home runs it: `Forget`).
        epoch: u32,
        /// Its processes on the receiving host.
        pids: Vec<Pid>,
        /// The lease granted for `pids`: the host's own clock reading (nanoseconds)
        /// from its latest `Status` answer the home received. The host keeps them
        /// until that reading plus its lease ([`super::SupervisionConfig::lease`]);
        /// `None` renews nothing (the pids are only asked about).
        grant: Option<u64>,
    },
    /// Host to home: the watched processes that ended, and those it does not know
    /// (lost with an earlier life of the host).
    Status {
        /// The supervisor.
        sup: SupervisorId,
        /// Whether this answers a `Watch` (every pid of it not listed runs), rather
        /// than telling of an end as it happened.
        answer: bool,
        /// Ended, with how.
        ended: Vec<(Pid, ExitStatus)>,
        /// Unknown here.
        unknown: Vec<Pid>,
        /// Watched here now, running (an answer's; so fenced by their lease).
        kept: Vec<Pid>,
        /// The host's clock reading (nanoseconds) when it sent this, for the home
        /// to echo as a grant: a lease counts from before the grant was sent, so a
        /// delayed grant can only shorten it.
        ask: u64,
    },
    /// Home to keeper: fragment `part` of `parts` of version `version` of the record.
    Replica {
        /// The supervisor.
        sup: SupervisorId,
        /// The record's version (a newer one replaces the copy).
        version: u64,
        /// This fragment's number.
        part: u16,
        /// How many fragments the record has.
        parts: u16,
        /// The fragment.
        bytes: Vec<u8>,
    },
    /// Home to keeper, every probe period: the home still runs its supervisors;
    /// `at` is its clock reading (nanoseconds), echoed in [`SupervisionMsg::Held`].
    Alive {
        /// The home's clock when it sent this.
        at: u64,
        /// The members whose confirmations the home's authority needs (its
        /// quorum's base, the home excluded; at most [`MAX_MEMBERS`]): a keeper
        /// takes over only with more than half of them in its group.
        base: Vec<NodeId>,
        /// The base's epoch (the home's life in the high 32 bits, its base's
        /// changes below): a member refuses a taker judging by an older one.
        epoch: u64,
    },
    /// Keeper to home: `Alive` of `at` received; this keeper takes over none of
    /// the home's supervisors before the home's authority from it
    /// (`at` plus [`super::SupervisionConfig::authority`]) has surely ended.
    Held {
        /// The echoed `Alive`; `None`: not confirmed (this member disowned the home
        /// for a taker, [`SupervisionMsg::Disowned`]), sent only for `forget`.
        at: Option<u64>,
        /// Supervisors this keeper took over from the home (with their take-over
        /// epoch): the home steps down from those it runs from an earlier one
        /// before it counts this confirmation.
        forget: Vec<(SupervisorId, u32)>,
    },
    /// New home to the members of its group, at its first ticks after the
    /// take-over: it took `sup` over from `home` at take-over `epoch`. A member
    /// remembers it for `hold` and tells `home`, in its `Held`, to step down.
    TakenOver {
        /// The supervisor.
        sup: SupervisorId,
        /// The home it was taken over from.
        home: NodeId,
        /// The take-over's epoch.
        epoch: u32,
    },
    /// Home to a former keeper: no longer one of its keepers; drop the copy of
    /// `sup` (never a supervisor it runs: unlike `Forget`, not a step-down).
    Dropped {
        /// The supervisor.
        sup: SupervisorId,
    },
    /// Home to keeper: the supervisor ended (stopped); drop its copy. To a home
    /// (from a home or a child's host): another home runs it since a later
    /// take-over; step down.
    Forget {
        /// The supervisor.
        sup: SupervisorId,
    },
    /// Home to a restarted child's host: register these names for `pid`, those it
    /// does not hold yet (the names its previous process held; sent with every
    /// `Watch` until the host tells they are held, or the hand-over ends).
    Hand {
        /// The supervisor.
        sup: SupervisorId,
        /// The child's new process.
        pid: Pid,
        /// The names (at most [`MAX_CHILD_NAMES`]).
        names: Vec<String>,
    },
    /// Host to home: every name a watched process holds now (its first
    /// [`MAX_CHILD_NAMES`] in name order); sent when they change, with every
    /// answer to a `Watch`, and as the process ends.
    Holds {
        /// The supervisor.
        sup: SupervisorId,
        /// The process.
        pid: Pid,
        /// Its names.
        names: Vec<String>,
    },
    /// Keeper to home: it holds version `version` of the record of `sup` (sent
    /// when a copy is complete, and for every fragment of a version it holds). A
    /// home tells of a give-up only once every keeper holds it: a keeper that
    /// took over from an older copy would start the child again.
    Copied {
        /// The supervisor.
        sup: SupervisorId,
        /// The version held.
        version: u64,
    },
    /// Fragment `part` of `parts` of version `version` of the record of `sup`,
    /// kept here for `home`. Either from a member to its level-0 leader: the
    /// home is gone from the member's group, and the member may not take it over
    /// itself (it does not lead); it passes the copy on once it would have taken
    /// it over as the leader (the home's authority has ended, and most of its
    /// base is here), and the leader takes it over if the home is gone by its own
    /// state too. Or from a leader that split its group to the leader and heir
    /// of the other half, with the home in it: they keep it as its keepers. The
    /// receiver confirms with `Copied`, on which the sender drops its copy (once
    /// both confirmed, for a split).
    Pass {
        /// The supervisor.
        sup: SupervisorId,
        /// The home it was kept for.
        home: NodeId,
        /// The home's quorum base as the sender knows it (the home excluded; at
        /// most [`MAX_PASS_BASE`] members, `None` if unknown or larger): a taker
        /// that does not know it judges the take-over by it (see `holds_most`).
        base: Option<Vec<NodeId>>,
        /// The epoch of `base` (see `Alive`; 0 if unknown).
        epoch: u64,
        /// The record's version.
        version: u64,
        /// This fragment's number.
        part: u16,
        /// How many fragments the record has.
        parts: u16,
        /// The fragment.
        bytes: Vec<u8>,
    },
    /// Taker to each member of `home`'s quorum base (in any group), every probe
    /// period while it would take `home`'s supervisors over but for the
    /// members' word: disown `home` (see the `disown` module of the service).
    Disown {
        /// The home to be taken over.
        home: NodeId,
        /// The epoch of the home's base the taker judges by (see `Alive`).
        epoch: u64,
    },
    /// Member to taker: this member confirmed no `Alive` of `home` for the
    /// home's authority and its slack, and confirms none for as long again, nor
    /// disowns `home` for another taker meanwhile.
    Disowned {
        /// The home disowned.
        home: NodeId,
    },
    /// Member to taker: not disowned, for this member heard a newer base of
    /// `home` than the taker's `Disown` judged by: this one.
    Refused {
        /// The home.
        home: NodeId,
        /// The newer base's epoch.
        epoch: u64,
        /// The newer base (at most [`MAX_MEMBERS`]).
        base: Vec<NodeId>,
    },
    /// Member to taker: not disowned, for this member promised `home` to
    /// another taker, or heard that one took the home's supervisors over: the
    /// asker yields to it (see the `disown` module of the service).
    Promised {
        /// The home.
        home: NodeId,
        /// The other taker.
        taker: NodeId,
        /// Whether `taker` took the home's supervisors over already.
        took: bool,
    },
}

/// A short, stable name of the kind of `msg`, for traces.
#[must_use]
pub fn kind(msg: &SupervisionMsg) -> &'static str {
    match msg {
        SupervisionMsg::Watch { .. } => "sup-watch",
        SupervisionMsg::Status { .. } => "sup-status",
        SupervisionMsg::Replica { .. } => "sup-replica",
        SupervisionMsg::Forget { .. } => "sup-forget",
        SupervisionMsg::Alive { .. } => "sup-alive",
        SupervisionMsg::Dropped { .. } => "sup-dropped",
        SupervisionMsg::Held { .. } => "sup-held",
        SupervisionMsg::Copied { .. } => "sup-copied",
        SupervisionMsg::Pass { .. } => "sup-pass",
        SupervisionMsg::Hand { .. } => "sup-hand",
        SupervisionMsg::Holds { .. } => "sup-holds",
        SupervisionMsg::TakenOver { .. } => "sup-taken-over",
        SupervisionMsg::Disown { .. } => "sup-disown",
        SupervisionMsg::Disowned { .. } => "sup-disowned",
        SupervisionMsg::Refused { .. } => "sup-refused",
        SupervisionMsg::Promised { .. } => "sup-promised",
    }
}

/// The most names of a child that move to its next process when it is restarted.
pub const MAX_CHILD_NAMES: usize = 8;

/// Whether `names` is a child's list of names: at most [`MAX_CHILD_NAMES`], each a
/// valid name.
pub(super) fn check_names(names: &[String]) -> Result<(), Reject> {
    check_len("sup names", names.len(), MAX_CHILD_NAMES)?;
    if names.iter().all(|n| valid_name(n)) {
        Ok(())
    } else {
        Err(Reject::Malformed { what: "sup name" })
    }
}

/// Checks one fragment of a record (a `Replica` or a `Pass`).
fn check_fragment(version: u64, part: u16, parts: u16, bytes: &[u8]) -> Result<(), Reject> {
    if version > MAX_VERSION {
        return Err(Reject::Malformed {
            what: "sup-replica version",
        });
    }
    check_len("sup-replica bytes", bytes.len(), MAX_FRAGMENT)?;
    check_len("sup-replica parts", usize::from(parts), MAX_PARTS)?;
    if part >= parts {
        return Err(Reject::Malformed {
            what: "sup-replica part",
        });
    }
    Ok(())
}

/// Checks a peer's message against the bounds above.
pub fn validate(msg: &SupervisionMsg) -> Result<(), Reject> {
    match msg {
        SupervisionMsg::Watch { pids, .. } => check_len("sup-watch pids", pids.len(), MAX_PIDS),
        SupervisionMsg::Status {
            ended,
            unknown,
            kept,
            ..
        } => check_len(
            "sup-status pids",
            ended.len() + unknown.len() + kept.len(),
            MAX_PIDS,
        ),
        SupervisionMsg::Replica {
            version,
            part,
            parts,
            bytes,
            ..
        } => check_fragment(*version, *part, *parts, bytes),
        SupervisionMsg::Pass {
            version,
            part,
            parts,
            bytes,
            base,
            ..
        } => {
            let members = base.as_ref().map_or(0, Vec::len);
            check_len("sup-pass base", members, MAX_PASS_BASE)?;
            check_fragment(*version, *part, *parts, bytes)
        }
        SupervisionMsg::Held { forget, .. } => check_len("sup-held forget", forget.len(), MAX_PIDS),
        SupervisionMsg::Alive { base, .. } => check_len("sup-alive base", base.len(), MAX_MEMBERS),
        SupervisionMsg::Refused { base, .. } => {
            check_len("sup-refused base", base.len(), MAX_MEMBERS)
        }
        SupervisionMsg::Hand { names, .. } | SupervisionMsg::Holds { names, .. } => {
            check_names(names)
        }
        SupervisionMsg::Forget { .. }
        | SupervisionMsg::Dropped { .. }
        | SupervisionMsg::TakenOver { .. }
        | SupervisionMsg::Disown { .. }
        | SupervisionMsg::Disowned { .. }
        | SupervisionMsg::Promised { .. }
        | SupervisionMsg::Copied { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Incarnation;
    use crate::messaging::names::MAX_NAME_BYTES;

    fn sup() -> SupervisorId {
        SupervisorId {
            origin: NodeId(1),
            incarnation: Incarnation(1),
            sequence: 0,
        }
    }

    #[test]
    fn bounds_are_checked() {
        let pid = Pid::new(NodeId(1), Incarnation(1), 1);
        let watch = |n| SupervisionMsg::Watch {
            sup: sup(),
            epoch: 0,
            pids: vec![pid; n],
            grant: Some(1),
        };
        assert!(validate(&watch(MAX_PIDS)).is_ok());
        assert!(validate(&watch(MAX_PIDS + 1)).is_err());
        let replica = |part, parts, len| SupervisionMsg::Replica {
            sup: sup(),
            version: 1,
            part,
            parts,
            bytes: vec![0; len],
        };
        assert!(validate(&replica(0, 1, MAX_FRAGMENT)).is_ok());
        assert!(validate(&replica(1, 1, 1)).is_err());
        assert!(validate(&replica(0, 1, MAX_FRAGMENT + 1)).is_err());
        assert!(validate(&replica(0, u16::MAX, 1)).is_err());
        let pass_with = |part, parts, base| SupervisionMsg::Pass {
            sup: sup(),
            home: NodeId(2),
            base,
            epoch: 1,
            version: 1,
            part,
            parts,
            bytes: Vec::new(),
        };
        let pass = |part, parts| pass_with(part, parts, None);
        assert!(validate(&pass(0, 1)).is_ok());
        assert!(validate(&pass(1, 1)).is_err());
        let base = |n| Some(vec![NodeId(3); n]);
        assert!(validate(&pass_with(0, 1, base(MAX_PASS_BASE))).is_ok());
        assert!(validate(&pass_with(0, 1, base(MAX_PASS_BASE + 1))).is_err());
        let hand = |names: Vec<String>| SupervisionMsg::Hand {
            sup: sup(),
            pid,
            names,
        };
        let name = "n".repeat(MAX_NAME_BYTES);
        assert!(validate(&hand(vec![name.clone(); MAX_CHILD_NAMES])).is_ok());
        assert!(validate(&hand(vec![name.clone(); MAX_CHILD_NAMES + 1])).is_err());
        assert!(validate(&hand(vec![name + "n"])).is_err());
        assert!(validate(&hand(vec![String::new()])).is_err());
    }

    /// The largest message of each kind fits one control datagram.
    #[test]
    fn the_largest_messages_fit_a_datagram() {
        let pid = Pid::new(NodeId(u32::MAX), Incarnation(u32::MAX), u64::MAX);
        let msgs = [
            SupervisionMsg::Watch {
                sup: sup(),
                epoch: u32::MAX,
                pids: vec![pid; MAX_PIDS],
                grant: Some(u64::MAX),
            },
            SupervisionMsg::Status {
                sup: sup(),
                answer: true,
                ended: vec![(pid, ExitStatus::Code(i32::MIN)); MAX_PIDS],
                unknown: Vec::new(),
                kept: Vec::new(),
                ask: u64::MAX,
            },
            SupervisionMsg::Replica {
                sup: sup(),
                version: u64::MAX,
                part: 0,
                parts: 1,
                bytes: vec![0; MAX_FRAGMENT],
            },
            SupervisionMsg::Pass {
                sup: sup(),
                home: NodeId(u32::MAX),
                base: Some(vec![NodeId(u32::MAX); MAX_PASS_BASE]),
                epoch: u64::MAX,
                version: u64::MAX,
                part: u16::MAX,
                parts: u16::MAX,
                bytes: vec![0; MAX_FRAGMENT],
            },
            SupervisionMsg::Held {
                at: Some(u64::MAX),
                forget: vec![(sup(), u32::MAX); MAX_PIDS],
            },
            SupervisionMsg::Refused {
                home: NodeId(u32::MAX),
                epoch: u64::MAX,
                base: vec![NodeId(u32::MAX); MAX_MEMBERS],
            },
            SupervisionMsg::Holds {
                sup: sup(),
                pid,
                names: vec!["n".repeat(MAX_NAME_BYTES); MAX_CHILD_NAMES],
            },
        ];
        for m in msgs {
            let env = crate::agent::Identity {
                node: NodeId(u32::MAX),
                incarnation: Incarnation(u32::MAX),
            }
            .envelope(m.into());
            let len = crate::wire::encoded_len(&env);
            assert!(len <= crate::wire::CONTROL_MTU, "{len}");
        }
    }

    #[test]
    fn a_replica_version_past_the_last_take_over_is_refused() {
        let replica = |version| SupervisionMsg::Replica {
            sup: sup(),
            version,
            part: 0,
            parts: 1,
            bytes: Vec::new(),
        };
        assert!(validate(&replica(MAX_VERSION)).is_ok());
        assert!(matches!(
            validate(&replica(u64::MAX)),
            Err(Reject::Malformed { .. })
        ));
    }
}
