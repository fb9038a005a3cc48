//! Pub/sub: per-tenant topics, subscriptions and publications.
//!
//! Placeholder of the messaging skeleton: the `msg-groups` work fills it in. Until
//! then it has no message and answers every call it owns with an error.

use super::post::Post;
use super::Part;
use crate::ids::NodeId;
use crate::service::{Context, ServiceEvent};
use crate::time::Time;
use crate::wire::Reject;
use nefele_api::calls::{ApiCall, RequestId};
use serde::{Deserialize, Serialize};

/// Its wire sub-message (none yet).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopicsMsg {}

/// No value exists to make up yet.
#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for TopicsMsg {
    fn arbitrary(_: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Err(arbitrary::Error::IncorrectFormat)
    }
}

/// Checks what a peer sent.
pub(super) fn validate(msg: &TopicsMsg) -> Result<(), Reject> {
    match *msg {}
}

/// A short, stable name of the kind of `msg`.
pub(super) fn kind(msg: &TopicsMsg) -> &'static str {
    match *msg {}
}

/// Its state (none yet).
#[derive(Debug, Default)]
pub struct Topics;

impl Part for Topics {
    type Msg = TopicsMsg;

    fn handle_message(
        &mut self,
        _now: Time,
        _from: NodeId,
        msg: TopicsMsg,
        _post: &mut Post,
        _ctx: &Context<'_>,
    ) {
        match msg {}
    }

    fn handle_api(
        &mut self,
        _now: Time,
        request: RequestId,
        call: ApiCall,
        post: &mut Post,
        _ctx: &Context<'_>,
    ) {
        post.reply(request, super::unsupported(&call));
    }

    fn handle_event(
        &mut self,
        _now: Time,
        _event: &ServiceEvent,
        _post: &mut Post,
        _ctx: &Context<'_>,
    ) {
    }

    fn handle_timeout(&mut self, _now: Time, _post: &mut Post, _ctx: &Context<'_>) {}

    fn next_timeout(&self) -> Option<Time> {
        None
    }
}
