//! The boundary check of federation messages (see [`crate::wire::validate`]).
//!
//! Owns [`FedMsg::validate`]. Bounds: every level at most [`MAX_LEVEL`], every epoch
//! at most [`MAX_EPOCH`](crate::wire::validate::MAX_EPOCH) (so `epoch + 1` never overflows), `Attach` hops at most the
//! forwarding bound, and a view well formed (members sorted, unique, at most
//! [`MAX_MEMBERS`], the leader one of them) with at most [`MAX_ANCESTORS`] ancestors and
//! as many heirs above.
//! Pure: it reads the message only.

use super::{FedBody, FedMsg, View, MAX_ANCESTORS, MAX_HOPS};
use crate::wire::validate::{check_epoch, check_len, check_level, Reject};

/// The most members a view may list: the largest `max_group` a configuration accepts.
pub const MAX_MEMBERS: usize = 256;

impl FedMsg {
    /// Checks the message's bounds (see the module docs).
    pub fn validate(&self) -> Result<(), Reject> {
        self.body.validate()
    }
}

impl FedBody {
    /// Checks the message's bounds (see the module docs).
    pub fn validate(&self) -> Result<(), Reject> {
        match self {
            FedBody::Attach { level, hops, .. } => {
                check_level("fed.attach", *level)?;
                check_len("fed.attach.hops", usize::from(*hops), usize::from(MAX_HOPS))
            }
            FedBody::View(view) => view.validate(),
            FedBody::Beat {
                level,
                epoch,
                summary,
                ..
            } => {
                check_level(self.kind(), *level)?;
                check_epoch(*epoch)?;
                if !summary.payload.is_valid() {
                    return Err(Reject::Malformed {
                        what: "fed.beat.summary",
                    });
                }
                Ok(())
            }
            FedBody::LeaderBeat { level, epoch } => {
                check_level(self.kind(), *level)?;
                check_epoch(*epoch)
            }
            FedBody::RingBeat => Ok(()),
            FedBody::ViewReq { level }
            | FedBody::Probe { level }
            | FedBody::ProbeAck { level }
            | FedBody::ProbeReq { level, .. }
            | FedBody::ProbeFor { level, .. }
            | FedBody::Leave { level }
            | FedBody::Gone { level }
            | FedBody::MergeReq { level }
            | FedBody::MergeInto { level, .. }
            | FedBody::Dissolve { level, .. } => check_level(self.kind(), *level),
        }
    }
}

impl View {
    /// Checks a view a peer sent: level, epoch, members and ancestors bounded, and the
    /// view well formed ([`View::is_well_formed`]).
    pub fn validate(&self) -> Result<(), Reject> {
        check_level("fed.view", self.level)?;
        check_epoch(self.epoch)?;
        check_len("fed.view.members", self.members.len(), MAX_MEMBERS)?;
        check_len("fed.view.ancestors", self.ancestors.len(), MAX_ANCESTORS)?;
        check_len(
            "fed.view.heirs_above",
            self.heirs_above.len(),
            MAX_ANCESTORS,
        )?;
        if !self.is_well_formed() {
            return Err(Reject::Malformed { what: "fed.view" });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;
    use crate::wire::validate::MAX_EPOCH;

    fn view() -> View {
        View::of(0, 3, vec![NodeId(1), NodeId(2)], vec![NodeId(9)]).unwrap()
    }

    #[test]
    fn a_well_formed_view_passes() {
        assert_eq!(FedBody::View(view()).validate(), Ok(()));
    }

    #[test]
    fn views_out_of_bounds_are_rejected() {
        let mut v = view();
        v.epoch = u64::MAX;
        assert_eq!(v.validate(), Err(Reject::Epoch));
        type Overfill = fn(&mut View);
        let hints: [(&str, Overfill); 2] = [
            ("fed.view.ancestors", |v| v.ancestors = vec![NodeId(9); 300]),
            ("fed.view.heirs_above", |v| {
                v.heirs_above = vec![NodeId(9); 300]
            }),
        ];
        for (field, overfill) in hints {
            let mut v = view();
            overfill(&mut v);
            assert!(
                matches!(v.validate(), Err(Reject::TooMany { what, len: 300, .. }) if what == field),
                "{field}"
            );
        }
        let mut v = view();
        v.members = (0..300).map(NodeId).collect();
        assert!(matches!(v.validate(), Err(Reject::TooMany { .. })));
        let mut v = view();
        v.members = vec![NodeId(2), NodeId(1)];
        assert_eq!(v.validate(), Err(Reject::Malformed { what: "fed.view" }));
        let mut v = view();
        v.leader = NodeId(7);
        assert_eq!(v.validate(), Err(Reject::Malformed { what: "fed.view" }));
        let mut v = view();
        v.level = 200;
        assert!(matches!(
            v.validate(),
            Err(Reject::Level { level: 200, .. })
        ));
    }

    /// Regression (behind the boundary check): a view with epoch `u64::MAX` overflowed
    /// `epoch += 1` at the next change; the epoch now stays at the top.
    #[test]
    fn a_change_at_the_largest_epoch_saturates() {
        let mut v = view();
        v.epoch = u64::MAX;
        assert!(v.insert(NodeId(5)));
        assert!(v.remove(NodeId(1)));
        assert_eq!(v.epoch, u64::MAX);
    }

    #[test]
    fn beats_levels_and_hops_are_bounded() {
        let beat = |epoch| FedBody::Beat {
            level: 0,
            epoch,
            summary: Box::default(),
            departed: None,
        };
        assert_eq!(beat(MAX_EPOCH).validate(), Ok(()));
        assert_eq!(beat(MAX_EPOCH + 1).validate(), Err(Reject::Epoch));
        assert!(FedBody::Leave { level: 255 }.validate().is_err());
        let attach = |hops| FedBody::Attach {
            joiner: NodeId(1),
            level: 1,
            hops,
        };
        assert_eq!(attach(MAX_HOPS).validate(), Ok(()));
        assert!(attach(u8::MAX).validate().is_err());
    }
}
