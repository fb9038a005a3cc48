//! The set-up messages of an RDMA link, carried as frames over the peer's
//! authenticated TCP connection (the [`crate::Carrier`]).
//!
//! Why over TCP and not `rdma_cm`: the TCP connection has already proven, with
//! the cluster key, which agent is at the other end (transport-tcp's handshake).
//! Exchanging queue pair numbers, GIDs and the rkey of the credit word over it
//! means no RDMA resource is named to anyone who has not authenticated, and the
//! RDMA link inherits the TCP connection's peer identity, without a second
//! authentication protocol. `rdma_cm` would accept connection requests from any
//! host on the fabric before any key is checked.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "NFRD" (core envelopes start with "NFLE", so the two never mix)
//! 4       1     version (1)
//! 5       1     kind: 1 Offer, 2 Decline, 3 Ready, 4 Switch
//! 6       ...   the kind's fields, big endian (see `encode`)
//! ```
//!
//! The exchange, for each direction independently: on a carrier `PeerUp`, each
//! side with a device sends `Offer` (its queue pair is in INIT with every receive
//! slot posted); a side without one sends `Decline` with its reason. On the
//! peer's `Offer` a side moves its queue pair to RTR then RTS and sends `Ready`.
//! On the peer's `Ready` it sends `Switch` over TCP and from then on sends frames
//! over RDMA. A side polls its receive ring only after the peer's `Switch`,
//! which TCP delivers after every frame the peer sent over TCP: frames stay in
//! order across the switch. Each message names the sender's link generation,
//! so messages of an older link are ignored.
//!
//! Invariants: [`decode`] never panics and never allocates more than the frame;
//! an agent without this transport drops these frames as bad envelopes, so
//! mixed clusters keep talking over TCP.

use crate::verbs::{Endpoint, RemoteMr};

const MAGIC: [u8; 4] = *b"NFRD";
const VERSION: u8 = 1;
const HEADER: usize = 6;
/// The longest decline reason sent, in bytes.
const MAX_REASON: usize = 512;

/// An offer: everything the peer needs to connect to and send to this side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Offer {
    pub(crate) gen: u32,
    pub(crate) endpoint: Endpoint,
    /// Receive slots posted for the peer.
    pub(crate) recv_slots: u32,
    /// Bytes per receive slot.
    pub(crate) slot_size: u32,
    /// Where the peer writes its freed count for this side's sends.
    pub(crate) credit_word: RemoteMr,
}

/// A set-up message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Control {
    Offer(Offer),
    /// This side will not use RDMA with the peer, and why.
    Decline(String),
    /// This side's queue pair is in RTS: the peer may send to it.
    Ready(u32),
    /// Every TCP frame this side sent before is delivered: read the ring now.
    Switch(u32),
}

/// Why a frame that starts like a control message is not one. It is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ControlError {
    #[error("unsupported rdma set-up version {0}")]
    Version(u8),
    #[error("unknown rdma set-up message kind {0}")]
    Kind(u8),
    #[error("rdma set-up message of kind {0} has the wrong length")]
    Length(u8),
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_be_bytes)
    }
}

impl Control {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        match self {
            Control::Offer(o) => {
                out.push(1);
                out.extend_from_slice(&o.gen.to_be_bytes());
                out.extend_from_slice(&o.endpoint.qp_num.to_be_bytes());
                out.extend_from_slice(&o.endpoint.lid.to_be_bytes());
                out.extend_from_slice(&o.endpoint.gid);
                out.extend_from_slice(&o.endpoint.psn.to_be_bytes());
                out.extend_from_slice(&o.recv_slots.to_be_bytes());
                out.extend_from_slice(&o.slot_size.to_be_bytes());
                out.extend_from_slice(&o.credit_word.addr.to_be_bytes());
                out.extend_from_slice(&o.credit_word.rkey.to_be_bytes());
                out.extend_from_slice(&o.credit_word.len.to_be_bytes());
            }
            Control::Decline(reason) => {
                out.push(2);
                let mut end = reason.len().min(MAX_REASON);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                out.extend_from_slice(&reason.as_bytes()[..end]);
            }
            Control::Ready(gen) => {
                out.push(3);
                out.extend_from_slice(&gen.to_be_bytes());
            }
            Control::Switch(gen) => {
                out.push(4);
                out.extend_from_slice(&gen.to_be_bytes());
            }
        }
        out
    }
}

/// `None` when `frame` is not a control message (an ordinary frame for the driver).
pub(crate) fn decode(frame: &[u8]) -> Option<Result<Control, ControlError>> {
    if frame.get(..4) != Some(&MAGIC[..]) {
        return None;
    }
    let (Some(&version), Some(&kind)) = (frame.get(4), frame.get(5)) else {
        return Some(Err(ControlError::Length(0)));
    };
    if version != VERSION {
        return Some(Err(ControlError::Version(version)));
    }
    let mut r = Reader(&frame[HEADER..]);
    let parsed = match kind {
        1 => (|| {
            let gen = r.u32()?;
            let qp_num = r.u32()?;
            let lid = r.u16()?;
            let gid = r.take::<16>()?;
            let psn = r.u32()?;
            let recv_slots = r.u32()?;
            let slot_size = r.u32()?;
            let credit_word = RemoteMr {
                addr: r.u64()?,
                rkey: r.u32()?,
                len: r.u32()?,
            };
            Some(Control::Offer(Offer {
                gen,
                endpoint: Endpoint {
                    qp_num,
                    lid,
                    gid,
                    psn,
                },
                recv_slots,
                slot_size,
                credit_word,
            }))
        })(),
        2 => {
            let text = String::from_utf8_lossy(r.0).into_owned();
            r.0 = &[];
            Some(Control::Decline(text))
        }
        3 => r.u32().map(Control::Ready),
        4 => r.u32().map(Control::Switch),
        other => return Some(Err(ControlError::Kind(other))),
    };
    match parsed {
        Some(control) if r.0.is_empty() => Some(Ok(control)),
        _ => Some(Err(ControlError::Length(kind))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer() -> Control {
        Control::Offer(Offer {
            gen: 7,
            endpoint: Endpoint {
                qp_num: 0x1234,
                lid: 3,
                gid: [9; 16],
                psn: 0xabcdef,
            },
            recv_slots: 256,
            slot_size: 4096,
            credit_word: RemoteMr {
                addr: 0xdead_beef_0000,
                rkey: 42,
                len: 16,
            },
        })
    }

    #[test]
    fn every_message_round_trips() {
        for msg in [
            offer(),
            Control::Decline("no RDMA device".into()),
            Control::Ready(3),
            Control::Switch(4),
        ] {
            assert_eq!(decode(&msg.encode()), Some(Ok(msg)));
        }
    }

    #[test]
    fn envelopes_and_garbage_are_told_apart_without_panics() {
        assert_eq!(decode(b"NFLE\x01\x00rest"), None);
        assert_eq!(decode(b"NF"), None);
        assert_eq!(decode(b"NFRD"), Some(Err(ControlError::Length(0))));
        assert_eq!(decode(b"NFRD\x02\x01"), Some(Err(ControlError::Version(2))));
        assert_eq!(decode(b"NFRD\x01\x09"), Some(Err(ControlError::Kind(9))));
        let mut long = offer().encode();
        long.push(0);
        assert_eq!(decode(&long), Some(Err(ControlError::Length(1))));
        let bytes = offer().encode();
        for cut in 0..bytes.len() {
            let _ = decode(&bytes[..cut]);
        }
    }

    #[test]
    fn a_long_reason_is_cut_on_a_character_boundary() {
        let reason = "é".repeat(400);
        let Some(Ok(Control::Decline(got))) = decode(&Control::Decline(reason).encode()) else {
            panic!("decline did not round trip");
        };
        assert_eq!(got.len(), MAX_REASON);
    }
}
