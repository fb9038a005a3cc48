//! Checks shared by the fuzz targets: what every output of an agent must satisfy,
//! and the bookkeeping of API calls and their replies.

use nefele_core::wire::codec::{DEFAULT_MAX_FRAME, MAGIC, VERSION};
use nefele_core::wire::{decode, encoded_len, Envelope, CONTROL_MTU};
use nefele_core::{Agent, ApiReply, HostCommand, Identity, NodeId, Output, RequestId};
use std::collections::BTreeSet;

/// The API calls made so far (the harness numbers them, never twice), and which are
/// answered.
#[derive(Default)]
pub struct Calls {
    next: u64,
    pending: BTreeSet<RequestId>,
    answered: BTreeSet<RequestId>,
}

impl Calls {
    /// A fresh request id, now pending.
    pub fn ask(&mut self) -> RequestId {
        let request = RequestId(self.next);
        self.next += 1;
        self.pending.insert(request);
        request
    }

    /// Whether `request` has had its reply.
    #[must_use]
    pub fn answered(&self, request: RequestId) -> bool {
        self.answered.contains(&request)
    }

    /// Records the reply to `request`: at most one per call, and none to an id never
    /// asked.
    pub fn reply(&mut self, request: RequestId) {
        assert!(
            !self.answered.contains(&request),
            "two replies to {request:?}"
        );
        assert!(
            self.pending.remove(&request),
            "a reply to {request:?}, never asked"
        );
        self.answered.insert(request);
    }

    /// Forgets the pending calls (their agent restarted: they will never be answered).
    pub fn forget_pending(&mut self) {
        self.pending.clear();
    }
}

/// Where an output goes.
pub enum Sent {
    /// To one agent.
    To(NodeId, Envelope),
    /// To every agent of the broadcast domain.
    Broadcast(Envelope),
    /// To the host.
    Host(HostCommand),
}

/// Drains `agent`'s outputs and checks each: every message it sends encodes under
/// `CONTROL_MTU` and carries its own id and incarnation, it never sends to itself, API
/// replies are recorded in `calls` (and `Neighbours` lists are in id order, without the
/// agent). Returns the messages and host commands, in order.
pub fn drain(agent: &mut Agent, calls: &mut Calls) -> Vec<Sent> {
    let me = agent.identity();
    let mut sent = Vec::new();
    while let Some(output) = agent.poll_output() {
        match output {
            Output::Send { to, envelope } => {
                assert_ne!(to, me.node, "an agent never sends to itself");
                check_envelope(me, &envelope);
                sent.push(Sent::To(to, envelope));
            }
            Output::Broadcast { envelope } => {
                check_envelope(me, &envelope);
                sent.push(Sent::Broadcast(envelope));
            }
            Output::ApiReply { request, reply } => {
                if let ApiReply::Neighbours(list) = &reply {
                    assert!(list.iter().all(|(id, _)| *id != me.node));
                    assert!(
                        list.windows(2).all(|w| w[0].0 < w[1].0),
                        "neighbours in id order"
                    );
                }
                calls.reply(request);
            }
            Output::Host(command) => sent.push(Sent::Host(*command)),
            // Notices (rejects among them) are for logs; no proxy is configured.
            Output::Notice(_) | Output::External(_) => {}
        }
    }
    sent
}

/// `envelope` comes from `me` and fits one datagram.
pub fn check_envelope(me: Identity, envelope: &Envelope) {
    assert_eq!(
        (envelope.from, envelope.incarnation),
        (me.node, me.incarnation)
    );
    let len = encoded_len(envelope);
    assert!(
        len < CONTROL_MTU,
        "a {len}-byte message exceeds the {CONTROL_MTU}-byte MTU: {envelope:?}"
    );
}

/// `body` behind a valid header, decoded as a driver would.
#[must_use]
pub fn with_header(body: &[u8]) -> Option<Envelope> {
    let mut frame = Vec::from(MAGIC);
    frame.extend_from_slice(&VERSION.to_le_bytes());
    frame.extend_from_slice(body);
    decode(&frame, DEFAULT_MAX_FRAME).ok()
}
