//! The boundary check of placement and namespace messages (see
//! [`crate::wire::validate`]).
//!
//! Owns [`PlacementMsg::validate`] (and [`PlacementConfig::validate`], the bounds of
//! the local configuration). Bounds on messages, each far above what a peer of this build
//! sends, so a healthy cluster rejects nothing:
//! - shapes (and the per-shape counts of an `Offer`): at most [`MAX_SHAPES`], the bound
//!   a requester enforces when it builds a request;
//! - the members of a `PsExpect`: at most [`MAX_MEMBERS`], the largest group;
//! - every other list (create items, created pids, candidates, `ps` entries, ledger
//!   items and ended pids): at most [`MAX_LIST`];
//! - levels: at most [`MAX_LEVEL`](crate::wire::validate::MAX_LEVEL);
//! - durations (process ages, expected run times): at most
//!   [`MAX_PEER_DURATION`](crate::wire::validate::MAX_PEER_DURATION);
//! - cpu speed classes: at most [`MAX_CPU_CLASS`]; an `Absent` names a class or
//!   accelerators, never a resource that is merely busy.
//!
//! Pure: it reads the message only.

use super::api::{ProcInfo, Resource};
use super::msg::{CreateItem, LedgerItem, PidAnswer, PlacementMsg, BATCH_BYTES, MAX_SHAPES};
use super::PlacementConfig;
use crate::discovery::MAX_CONFIG_PERIOD;
use crate::federation::validate::MAX_MEMBERS;
use crate::wire::validate::{check_duration, check_len, check_level, Reject};
use nefele_api::spec::MAX_CPU_CLASS;

/// The longest list of any other kind a placement message may hold. Lists that can
/// grow are sent in batches of at most [`BATCH_BYTES`] encoded bytes, every entry
/// taking at least one byte, so no batch a peer of this build sends is longer; the
/// lists that are not batched are shorter still (candidates: 64).
pub const MAX_LIST: usize = BATCH_BYTES;

/// Why a placement configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementConfigError {
    /// A period, timeout or retention longer than
    /// [`MAX_CONFIG_PERIOD`](crate::discovery::MAX_CONFIG_PERIOD).
    #[error("placement.{field}: must be at most one hour")]
    Duration {
        /// The field.
        field: &'static str,
    },
    /// A host would hold back `Created` for longer than the requester waits for it.
    #[error("placement.presence_timeout: must be shorter than create_timeout")]
    PresenceTimeout,
}

impl PlacementConfig {
    /// Checks the parameters: every duration at most one hour, so that the deadlines
    /// and products placement computes from them stay far from any overflow.
    pub fn validate(&self) -> Result<(), PlacementConfigError> {
        let c = self;
        let durations = [
            ("lease", c.lease),
            ("offer_timeout", c.offer_timeout),
            ("escalate_timeout", c.escalate_timeout),
            ("create_timeout", c.create_timeout),
            ("gang_patience", c.gang_patience),
            ("confirm_timeout", c.confirm_timeout),
            ("query_backoff_max", c.query_backoff_max),
            ("failed_retention", c.failed_retention),
            ("op_timeout", c.op_timeout),
            ("ps_timeout", c.ps_timeout),
            ("wait_poll", c.wait_poll),
            ("exit_retention", c.exit_retention),
            ("offer_retention", c.offer_retention),
            ("ledger_flush", c.ledger_flush),
            ("ledger_period", c.ledger_period),
            ("ledger_refresh", c.ledger_refresh),
            ("lost_retention", c.lost_retention),
            ("presence_timeout", c.presence_timeout),
            ("long_run", c.long_run),
        ];
        for (field, d) in durations {
            if d > MAX_CONFIG_PERIOD {
                return Err(PlacementConfigError::Duration { field });
            }
        }
        if c.presence_timeout >= c.create_timeout {
            return Err(PlacementConfigError::PresenceTimeout);
        }
        Ok(())
    }
}

impl PlacementMsg {
    /// Checks the message's bounds (see the module docs).
    pub fn validate(&self) -> Result<(), Reject> {
        match self {
            PlacementMsg::OfferReq { shapes, .. } => {
                check_len("place.offer_req.shapes", shapes.len(), MAX_SHAPES)?;
                shapes
                    .iter()
                    .try_for_each(|s| check_class("place.offer_req.cpu_class", s.cpu_class))
            }
            PlacementMsg::Offer { counts, .. } => {
                check_len("place.offer.counts", counts.len(), MAX_SHAPES)
            }
            PlacementMsg::FindRoom {
                level, cpu_class, ..
            } => {
                check_level("place.find_room", *level)?;
                check_class("place.find_room.cpu_class", *cpu_class)
            }
            PlacementMsg::Absent { resource, .. } => match resource {
                Resource::CpuClass(c) => check_class("place.absent.cpu_class", *c),
                Resource::Accelerators => Ok(()),
                // A limit is never absent cluster-wide: no summary carries limits.
                Resource::Cpu | Resource::Memory | Resource::Hosts | Resource::Limit(_) => {
                    Err(Reject::Malformed {
                        what: "place.absent.resource",
                    })
                }
            },
            PlacementMsg::Candidates { hosts, .. } => {
                check_len("place.candidates.hosts", hosts.len(), MAX_LIST)
            }
            PlacementMsg::Create { items, .. } => {
                check_len("place.create.items", items.len(), MAX_LIST)?;
                items.iter().try_for_each(CreateItem::validate)
            }
            PlacementMsg::Created { pids, .. } => {
                check_len("place.created.pids", pids.len(), MAX_LIST)
            }
            PlacementMsg::CreateRefused { .. }
            | PlacementMsg::Confirm { .. }
            | PlacementMsg::Abort { .. }
            | PlacementMsg::Query { .. }
            | PlacementMsg::PidReq { .. }
            | PlacementMsg::PsReq { .. }
            | PlacementMsg::PresentAck { .. }
            | PlacementMsg::Ran { .. } => Ok(()),
            PlacementMsg::PidAns { answer, .. } => match answer {
                PidAnswer::Info(info) => validate_info(info),
                PidAnswer::NoSuch
                | PidAnswer::Signalled
                | PidAnswer::Exited(_)
                | PidAnswer::Waiting => Ok(()),
            },
            PlacementMsg::PsWalk { level, .. } => check_level("ns.ps_walk", *level),
            PlacementMsg::PsExpect { level, members, .. } => {
                check_level("ns.ps_expect", *level)?;
                check_len("ns.ps_expect.members", members.len(), MAX_MEMBERS)
            }
            PlacementMsg::PsAns { entries, .. } => {
                check_len("ns.ps_ans.entries", entries.len(), MAX_LIST)?;
                entries.iter().try_for_each(validate_info)
            }
            PlacementMsg::Ledger { present, ended, .. } => {
                check_len("ns.ledger.present", present.len(), MAX_LIST)?;
                check_len("ns.ledger.ended", ended.len(), MAX_LIST)?;
                present.iter().try_for_each(LedgerItem::validate)
            }
            PlacementMsg::Present { level, .. } => check_level("ns.present", *level),
        }
    }
}

impl CreateItem {
    fn validate(&self) -> Result<(), Reject> {
        if let Some(c) = self.spec.resources.cpu_class {
            check_class("place.create.cpu_class", c)?;
        }
        match self.spec.profile.as_ref().and_then(|p| p.duration) {
            Some(d) => check_duration("place.create.profile.duration", d),
            None => Ok(()),
        }
    }
}

impl LedgerItem {
    fn validate(&self) -> Result<(), Reject> {
        check_duration("ns.ledger.age", self.age)
    }
}

fn check_class(what: &'static str, class: u8) -> Result<(), Reject> {
    if class > MAX_CPU_CLASS {
        return Err(Reject::Malformed { what });
    }
    Ok(())
}

fn validate_info(info: &ProcInfo) -> Result<(), Reject> {
    check_duration("ns.proc_info.age", info.age)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Incarnation, NodeId, Pid, TenantId};
    use crate::placement::api::Demand;
    use crate::placement::msg::{ReqKey, Shape};
    use crate::wire::validate::MAX_PEER_DURATION;
    use std::time::Duration;

    fn key() -> ReqKey {
        ReqKey {
            requester: NodeId(1),
            incarnation: Incarnation(1),
            seq: 1,
        }
    }

    fn offer_req(n: usize) -> PlacementMsg {
        let shape = Shape {
            demand: Demand::default(),
            count: 1,
            one_per_host: false,
            cpu_class: 0,
            limits: Default::default(),
        };
        PlacementMsg::OfferReq {
            key: key(),
            tenant: TenantId(1),
            shapes: vec![shape; n],
        }
    }

    #[test]
    fn an_offer_req_with_too_many_shapes_is_rejected() {
        assert_eq!(offer_req(MAX_SHAPES).validate(), Ok(()));
        assert_eq!(
            offer_req(MAX_SHAPES + 1).validate(),
            Err(Reject::TooMany {
                what: "place.offer_req.shapes",
                len: MAX_SHAPES + 1,
                max: MAX_SHAPES
            })
        );
    }

    #[test]
    fn a_ledger_item_with_a_huge_age_is_rejected() {
        let item = |age| LedgerItem {
            pid: Pid::new(NodeId(2), Incarnation(1), 1),
            tenant: TenantId(1),
            command: "/bin/x".to_owned(),
            demand: Demand::default(),
            age,
        };
        let ledger = |age| PlacementMsg::Ledger {
            reset: true,
            present: vec![item(age)],
            ended: Vec::new(),
        };
        assert_eq!(ledger(MAX_PEER_DURATION).validate(), Ok(()));
        assert_eq!(
            ledger(Duration::MAX).validate(),
            Err(Reject::Duration {
                what: "ns.ledger.age"
            })
        );
    }

    #[test]
    fn levels_and_members_are_bounded() {
        let walk = |level| PlacementMsg::PsWalk {
            token: 1,
            tenant: TenantId(1),
            asker: NodeId(1),
            level,
        };
        assert_eq!(walk(3).validate(), Ok(()));
        assert!(matches!(walk(255).validate(), Err(Reject::Level { .. })));
        let expect = PlacementMsg::PsExpect {
            token: 1,
            level: 0,
            members: vec![NodeId(1); MAX_MEMBERS + 1],
        };
        assert!(matches!(expect.validate(), Err(Reject::TooMany { .. })));
    }

    /// Regression (behind the boundary check): a view with more than 255 ancestors let
    /// a spawn escalate past level 255, and `level + 1: u8` overflowed. The request now
    /// fails when the levels run out.
    #[test]
    fn escalation_past_the_last_level_fails_the_request() {
        use crate::agent::{ApiReply, RequestId};
        use crate::federation::View;
        use crate::host::{HostResources, ProcSpec, ResourcePolicy};
        use crate::placement::{Placement, SpawnKind};
        use crate::service::{Context, Service, ServiceOutput, TreeView};
        use crate::time::Time;
        use crate::HostEvent;

        let view = View {
            level: 0,
            leader: NodeId(0),
            epoch: 5,
            members: vec![NodeId(0), NodeId(1)],
            ancestors: (2..302).map(NodeId).collect(),
            heirs_above: Vec::new(),
        };
        let tree = TreeView::member_of(NodeId(1), view);
        assert_eq!(tree.ancestors().len(), 300);
        let mut p = Placement::new(NodeId(1), Incarnation(1), PlacementConfig::default());
        p.on_host_event(
            Time::ZERO,
            &HostEvent::Resources(HostResources {
                cores: 1,
                cpu_millicores: 1000,
                memory_bytes: 1 << 30,
                cpu_speed: 1000,
                ..HostResources::default()
            }),
        );
        let spec = ProcSpec {
            path: "/bin/x".into(),
            resources: ResourcePolicy {
                cpu_millicores: Some(1_000_000),
                ..ResourcePolicy::default()
            },
            ..ProcSpec::default()
        };
        let kind = SpawnKind::Spawn(spec);
        let ctx = Context {
            me: crate::agent::Identity {
                node: NodeId(1),
                incarnation: Incarnation(1),
            },
            tree,
            lives: None,
        };
        p.handle_spawn(
            Time::from_millis(2),
            &ctx.tree,
            RequestId(1),
            TenantId(1),
            kind,
        );
        let mut reply = None;
        while let Some(t) = p.next_timeout().filter(|t| *t < Time::from_secs(10)) {
            p.handle_timeout(t, &ctx);
            while let Some(out) = p.poll_output() {
                if let ServiceOutput::Reply(RequestId(1), r) = out {
                    reply = Some(r);
                }
            }
            if reply.is_some() {
                break;
            }
        }
        assert!(
            matches!(reply, Some(ApiReply::Spawned(Err(_)))),
            "{reply:?}"
        );
    }

    #[test]
    fn config_durations_are_bounded() {
        let mut c = PlacementConfig::default();
        assert_eq!(c.validate(), Ok(()));
        c.lost_retention = Duration::from_secs(500_000_000_000);
        assert_eq!(
            c.validate(),
            Err(PlacementConfigError::Duration {
                field: "lost_retention"
            })
        );
    }
}
