//! The point-to-point layer of messaging: mailboxes and pid sends.
//!
//! Skeleton: the full layer follows (see the messaging design).

use super::msg::MessagingMsg;
use super::MessagingConfig;
use crate::ids::{NodeId, Pid, TenantId};
use crate::service::{Context, ServiceEvent, ServiceOutput};
use crate::time::Time;
use nefele_api::calls::{ApiCall, ApiReply, RequestId};
use std::collections::{BTreeMap, VecDeque};

/// Mailboxes and the point-to-point path of one agent.
#[derive(Debug)]
pub struct Post {
    me: NodeId,
    config: MessagingConfig,
    mailboxes: BTreeMap<Pid, TenantId>,
    outbox: VecDeque<ServiceOutput<MessagingMsg>>,
}

impl Post {
    pub(super) fn new(me: NodeId, config: MessagingConfig) -> Self {
        Post {
            me,
            config,
            mailboxes: BTreeMap::new(),
            outbox: VecDeque::new(),
        }
    }

    /// The tenant of `pid` if it is a live process of this host.
    #[must_use]
    pub fn tenant_of(&self, pid: Pid) -> Option<TenantId> {
        self.mailboxes.get(&pid).copied()
    }

    /// The live mailboxes of this host.
    #[must_use]
    pub fn mailbox_count(&self) -> usize {
        self.mailboxes.len()
    }

    /// Answers a local client's call.
    pub fn reply(&mut self, request: RequestId, reply: ApiReply) {
        self.outbox.push_back(ServiceOutput::Reply(request, reply));
    }

    /// Sends `msg` to the messaging service of agent `to`.
    pub fn send_msg(&mut self, to: NodeId, msg: MessagingMsg) {
        self.outbox.push_back(ServiceOutput::Send(to, msg));
    }

    pub(super) fn handle_message(
        &mut self,
        _now: Time,
        _from: NodeId,
        _msg: MessagingMsg,
        _ctx: &Context<'_>,
    ) {
    }

    pub(super) fn handle_api(
        &mut self,
        _now: Time,
        request: RequestId,
        call: ApiCall,
        _ctx: &Context<'_>,
    ) {
        self.reply(request, super::unsupported(&call));
    }

    pub(super) fn handle_event(&mut self, _now: Time, event: &ServiceEvent, _ctx: &Context<'_>) {
        match *event {
            ServiceEvent::ProcessStarted { pid, tenant } => {
                self.mailboxes.insert(pid, tenant);
            }
            ServiceEvent::ProcessExited { pid, .. } | ServiceEvent::ProcessLost { pid, .. } => {
                self.mailboxes.remove(&pid);
            }
            _ => {}
        }
    }

    pub(super) fn handle_timeout(&mut self, _now: Time, _ctx: &Context<'_>) {}

    pub(super) fn end_of_input(&mut self, _now: Time) {}

    pub(super) fn poll_output(&mut self) -> Option<ServiceOutput<MessagingMsg>> {
        self.outbox.pop_front()
    }

    pub(super) fn next_timeout(&self) -> Option<Time> {
        let _ = (self.me, &self.config);
        None
    }

    pub(super) fn invariants(&self) -> bool {
        true
    }
}
