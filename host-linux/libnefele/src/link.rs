//! Links: a direct connection between two processes, negotiated by their agents,
//! that carries one process's pid sends to the other without either agent in the
//! data path (the messaging round trip through two agents wakes six processes;
//! a link wakes two, as a raw socket does).
//!
//! This module owns what the two ends of a link say to each other and what each
//! end counts; it does no I/O (the client does).
//!
//! # How a link is made
//! Process A asks its agent for a link to B (`Call::Link`). The agent makes the
//! connection (a socket pair when B runs on the same host, a TCP connection to
//! B's agent otherwise), registers B's end under a random token, and sends B an
//! ordinary reliable message from A whose bytes are a *marker* ([`marker`]) naming
//! the token. Only when that message is in B's mailbox (its fate is `Ok`) does A
//! get its end; so every send A made to B before the link is ahead of the marker
//! in B's mailbox, and every send after it goes on the link: FIFO per (A, B) holds
//! across the switch. B's client, taking the marker from its mailbox, claims B's
//! end from its own agent with the token (`Call::Claim`), and reads A's later
//! messages from the link.
//!
//! Markers and data travel alike, as a message's bytes, so a client *escapes* the
//! data of a send through the agents that would read as a marker (or that begins
//! with the escape itself): it puts [`ESCAPE_MAGIC`] in front, which the receiving
//! client takes off ([`escape`], [`read_incoming`]). Every message that reads as a
//! marker is then one an agent made (or one a client sent past libnefele, which
//! only its sender loses), and one whose end B's agent no longer holds is dropped,
//! never handed to B as data: the end was closed unclaimed after
//! `UNCLAIMED_FOR` (B took its mail late), or lost with a restart of B's agent; A's
//! link then ends, and A's later sends go through the agents.
//!
//! The agents check everything a link needs at its making: the marker is a send
//! from A, stamped by A's agent, so it reaches B only within A's tenant, exactly as
//! any send; B's agent hands B's end only to B, and only for a marker from A. Over
//! the link, A can send only as A: the far end counts everything it reads as A's.
//!
//! Across hosts, A's agent dials B's agent's transport port and opens with
//! `LINK_MAGIC`, the token and the pair (`nefele_transport_tcp::LINK_MAGIC`);
//! B's agent keeps that connection as B's end once it has checked that it comes
//! from A's agent's address, and answers one byte; only then is the marker sent.
//! Such a link is sealed end to end ([`crate::link_seal`]) with a key that A's
//! agent draws and gives only to A (its answer) and B (its marker, a
//! [`SealedMarker`]).
//!
//! # What goes on a link
//! Frames, both ways: a 4-byte little-endian length of what follows, a kind byte,
//! then the body. The opener sends [`Frame::Data`] (one message each; marked
//! urgent when its sender waits for the acknowledgement); the other end sends
//! [`Frame::Ack`] with the number of messages it has taken so far (cumulative):
//! at once after taking an urgent one or all it had read (when its process
//! links back to the opener, its next send on a link carries that moment, after
//! the answer it sends), else once [`ACK_EVERY`] are taken, and whenever its
//! process sends on a link or is about to wait for mail. A frame longer than the
//! receiver's limit, of an unknown kind, in the wrong direction, or an `Ack` of
//! more than was sent ends the link: the peer is a process, so hostile until
//! shown otherwise, and nothing larger than the limit is allocated. An `Ack` below
//! one counted already is no news, not a lie: when the receiver links back, its
//! acknowledgements come on two paths (below), which may cross.
//!
//! When B links back to A, the acknowledgement B owes A rides on B's own link, in
//! the write of B's next message to A ([`Frame::AckBack`], naming the token of
//! the link it acknowledges, which the agent gave both ends): an answer and the
//! acknowledgement of its request cross the network as one packet. A's client
//! applies it to its link to B only if the token is that link's (an older link's
//! acknowledgement is ignored); B still acknowledges on A's link when it is about
//! to wait, so nothing depends on B sending.
//!
//! # Fates
//! A message sent on a link is delivered when the receiving process has taken it
//! (its `Ack` came): a stronger promise than the agent path's (in the mailbox),
//! since the receiver's end of the link is its mailbox. When the link ends (the
//! receiver exited, the connection broke) every message not acknowledged yet is
//! `Unknown`: it may have been taken, or not.
//!
//! # Order with the agents' path
//! A sends through the agents to a process it links to only after closing that
//! link (once its messages are all taken): a reliable send to B closes A's link
//! to B; a send to a name, group, topic or the whole tenant, which may reach any
//! process A links to, closes all of A's links. So neither path overtakes the
//! other, and FIFO per pair holds whichever way A addresses B. B numbers a link's
//! messages on from the marker's position; the agents never see them, so B's
//! client adds what came on links from A to the positions the agents give A's
//! later messages: positions keep growing per pair.

use crate::link_seal::{LinkKey, SealError, KEY_LEN};
use nefele_api::ids::Pid;
use nefele_api::messaging::SendError;
use std::collections::VecDeque;

/// The largest message a link carries: the core's own cap on a message
/// (`MAX_DATA_BYTES`), which an agent's `max_message_bytes` never exceeds.
pub const MAX_DATA: usize = 60_000;

/// The first bytes of a marker message (then the token, 8 bytes little-endian).
pub const MARKER_MAGIC: [u8; 16] = *b"\0nefele-link-1\0\0";
/// The length of a marker message.
pub const MARKER_LEN: usize = MARKER_MAGIC.len() + 8;

/// The first bytes of the marker of a sealed link (then the token, 8 bytes
/// little-endian, then the link's key).
pub const SEALED_MARKER_MAGIC: [u8; 16] = *b"\0nefele-link-2\0\0";
/// The length of a sealed link's marker.
pub const SEALED_MARKER_LEN: usize = SEALED_MARKER_MAGIC.len() + 8 + KEY_LEN;

/// The kind byte of a data frame.
const DATA: u8 = 1;
/// The kind byte of a data frame whose sender waits for its acknowledgement.
const URGENT: u8 = 3;
/// The receiver acknowledges at the latest once it has taken this many messages
/// it did not acknowledge yet.
pub const ACK_EVERY: u64 = 64;
/// The kind byte of an acknowledgement.
const ACK: u8 = 2;
/// The kind byte of an acknowledgement of the link the other way.
const ACK_BACK: u8 = 4;
/// The length prefix and the kind byte.
const HEADER: usize = 5;

/// What a client puts in front of the data of a send through the agents that
/// would otherwise read as a marker, or that begins with these bytes itself.
pub const ESCAPE_MAGIC: [u8; 16] = *b"\0nefele-escape\0\0";

/// `data` as a send through the agents carries it: escaped (see the module docs)
/// when it reads as a marker or begins with [`ESCAPE_MAGIC`], else as it is.
#[must_use]
pub fn escape(data: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if data.starts_with(&ESCAPE_MAGIC) || read_marker(data).is_some() {
        let mut escaped = Vec::with_capacity(ESCAPE_MAGIC.len() + data.len());
        escaped.extend_from_slice(&ESCAPE_MAGIC);
        escaped.extend_from_slice(data);
        escaped.into()
    } else {
        data.into()
    }
}

/// What the data of a message that came through the agents is: a marker (`Some`),
/// or the sender's data, which is left in `data` as the sender gave it (an escape
/// taken off).
pub fn read_incoming(data: &mut Vec<u8>) -> Option<SealedMarker> {
    if data.starts_with(&ESCAPE_MAGIC) {
        data.drain(..ESCAPE_MAGIC.len());
        return None;
    }
    read_marker(data)
}

/// The marker message naming `token`.
#[must_use]
pub fn marker(token: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(MARKER_LEN);
    bytes.extend_from_slice(&MARKER_MAGIC);
    bytes.extend_from_slice(&token.to_le_bytes());
    bytes
}

/// The marker message of a link across hosts, naming `token` and carrying `key`.
#[must_use]
pub fn sealed_marker(token: u64, key: &LinkKey) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(SEALED_MARKER_LEN);
    bytes.extend_from_slice(&SEALED_MARKER_MAGIC);
    bytes.extend_from_slice(&token.to_le_bytes());
    bytes.extend_from_slice(key);
    bytes
}

/// The bytes a link's connection across hosts opens with after the transport's
/// link magic: the token, the opener and the receiver.
pub const PREFACE_LEN: usize = 8 + 16 + 16;

/// The preface of the connection of the link from `from` to `to` under `token`.
#[must_use]
pub fn preface(token: u64, from: Pid, to: Pid) -> Vec<u8> {
    bincode::serialize(&(token, from, to)).expect("three fixed-size values encode")
}

/// The token, opener and receiver a preface names.
#[must_use]
pub fn read_preface(bytes: &[u8; PREFACE_LEN]) -> Option<(u64, Pid, Pid)> {
    bincode::deserialize(bytes).ok()
}

/// What a marker message says: the token its end waits under, and the key of a
/// sealed link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedMarker {
    /// The token.
    pub token: u64,
    /// The link's key, for a link across hosts.
    pub key: Option<LinkKey>,
}

/// What the marker message `data` says, if it is one.
#[must_use]
pub fn read_marker(data: &[u8]) -> Option<SealedMarker> {
    if let Some(token) = data.strip_prefix(&MARKER_MAGIC[..]) {
        let token = u64::from_le_bytes(token.try_into().ok()?);
        return Some(SealedMarker { token, key: None });
    }
    let rest = data.strip_prefix(&SEALED_MARKER_MAGIC[..])?;
    if rest.len() != 8 + KEY_LEN {
        return None;
    }
    let (token, key) = rest.split_at(8);
    Some(SealedMarker {
        token: u64::from_le_bytes(token.try_into().ok()?),
        key: Some(key.try_into().ok()?),
    })
}

/// One frame on a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// One message, opener to receiver; `urgent` when its sender waits for the
    /// acknowledgement.
    Data {
        /// The message.
        data: Vec<u8>,
        /// Acknowledge it as soon as it is taken.
        urgent: bool,
    },
    /// How many messages the receiver has taken so far.
    Ack(u64),
    /// On a link the other way (opener to receiver): how many messages this
    /// link's opener has taken so far on the link `token` its receiver opened to it.
    AckBack {
        /// The token of the link acknowledged.
        token: u64,
        /// Messages taken on it so far.
        taken: u64,
    },
}

/// Why a link ends at once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// A frame longer than this end accepts.
    #[error("a link frame of {len} bytes, over the limit of {max}")]
    TooLarge {
        /// The length the peer announced.
        len: u64,
        /// The most this end takes.
        max: u64,
    },
    /// A frame with no kind byte, or one this end does not know.
    #[error("a link frame of unknown kind {0:?}")]
    Kind(Option<u8>),
    /// A frame this end of the link must not receive (data to the opener, an
    /// acknowledgement to the receiver).
    #[error("a link frame in the wrong direction")]
    Direction,
    /// An acknowledgement whose body is not 8 bytes (16 for one of the link the
    /// other way).
    #[error("a link acknowledgement of {0} bytes")]
    AckLength(usize),
    /// A sealed record that does not open ([`crate::link_seal`]).
    #[error(transparent)]
    Seal(#[from] SealError),
    /// An acknowledgement of more messages than were sent.
    #[error("a link acknowledgement of {acked} when {sent} were sent and {before} acknowledged")]
    Ack {
        /// What the peer acknowledged.
        acked: u64,
        /// Sent so far.
        sent: u64,
        /// Acknowledged before.
        before: u64,
    },
}

/// Appends a data frame carrying `data` to `out` (`urgent`: its sender waits).
pub fn put_data(out: &mut Vec<u8>, data: &[u8], urgent: bool) {
    let len = u32::try_from(data.len() + 1).expect("a message is far under 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.push(if urgent { URGENT } else { DATA });
    out.extend_from_slice(data);
}

/// Appends an acknowledgement of `taken` messages to `out`.
pub fn put_ack(out: &mut Vec<u8>, taken: u64) {
    out.extend_from_slice(&9u32.to_le_bytes());
    out.push(ACK);
    out.extend_from_slice(&taken.to_le_bytes());
}

/// Appends an acknowledgement of `taken` messages on the link `token`, the other
/// way, to `out`.
pub fn put_ack_back(out: &mut Vec<u8>, token: u64, taken: u64) {
    out.extend_from_slice(&17u32.to_le_bytes());
    out.push(ACK_BACK);
    out.extend_from_slice(&token.to_le_bytes());
    out.extend_from_slice(&taken.to_le_bytes());
}

/// Bytes read from a link, cut into frames. Holds at most one frame's worth of
/// bytes past what the caller read at once: a frame's length is checked against
/// the limit before its body is awaited.
#[derive(Debug)]
pub struct Inbound {
    buf: Vec<u8>,
    pos: usize,
    max_data: usize,
}

impl Inbound {
    /// Cuts frames whose message is at most `max_data` bytes.
    #[must_use]
    pub fn new(max_data: usize) -> Self {
        Inbound {
            buf: Vec::new(),
            pos: 0,
            max_data,
        }
    }

    /// Takes `bytes` read from the link. What was cut into frames already goes
    /// first, so only the start of an unfinished frame is kept (before, a stream
    /// whose reads never ended on a frame's boundary kept all of its bytes).
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.drain(..self.pos);
        self.pos = 0;
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if one is in; an error ends the link.
    ///
    /// # Errors
    /// A frame over the limit or of an unknown kind.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, LinkError> {
        let rest = &self.buf[self.pos..];
        let Some(prefix) = rest.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(prefix.try_into().expect("4 bytes")) as usize;
        let max = self.max_data + 1;
        if len > max {
            return Err(LinkError::TooLarge {
                len: len as u64,
                max: max as u64,
            });
        }
        let Some(body) = rest.get(4..4 + len) else {
            return Ok(None);
        };
        let frame = match body.split_first() {
            Some((&DATA, data)) => Frame::Data {
                data: data.to_vec(),
                urgent: false,
            },
            Some((&URGENT, data)) => Frame::Data {
                data: data.to_vec(),
                urgent: true,
            },
            Some((&ACK, taken)) => Frame::Ack(u64::from_le_bytes(
                taken
                    .try_into()
                    .map_err(|_| LinkError::AckLength(taken.len()))?,
            )),
            Some((&ACK_BACK, body)) => {
                let (token, taken) = body
                    .split_first_chunk::<8>()
                    .and_then(|(t, rest)| Some((t, <[u8; 8]>::try_from(rest).ok()?)))
                    .ok_or(LinkError::AckLength(body.len()))?;
                Frame::AckBack {
                    token: u64::from_le_bytes(*token),
                    taken: u64::from_le_bytes(taken),
                }
            }
            Some((&kind, _)) => return Err(LinkError::Kind(Some(kind))),
            None => return Err(LinkError::Kind(None)),
        };
        self.pos += HEADER - 1 + len;
        Ok(Some(frame))
    }

    /// Whether bytes of an unfinished frame are waiting.
    #[must_use]
    pub fn partial(&self) -> bool {
        self.pos < self.buf.len()
    }
}

/// What the opener of a link counts: the messages sent and those acknowledged, and
/// for each message not acknowledged yet, whom to tell its fate.
#[derive(Debug, Default)]
pub struct Outbound {
    sent: u64,
    acked: u64,
    /// One per message not acknowledged, oldest first: the `send_async` id to
    /// give its fate under, or `None` for a send that waits for it.
    owed: VecDeque<Option<u64>>,
}

impl Outbound {
    /// A message went on the link; `id` is its `send_async` id, if any.
    pub fn sent(&mut self, id: Option<u64>) {
        self.sent += 1;
        self.owed.push_back(id);
    }

    /// The receiver has taken `taken` messages in all: the newly delivered ones,
    /// oldest first. One below what was acknowledged already delivers nothing:
    /// acknowledgements on the link and riding the link back may cross.
    ///
    /// # Errors
    /// An acknowledgement above what was sent.
    pub fn acked(&mut self, taken: u64) -> Result<Vec<Option<u64>>, LinkError> {
        if taken > self.sent {
            return Err(LinkError::Ack {
                acked: taken,
                sent: self.sent,
                before: self.acked,
            });
        }
        let new = taken.saturating_sub(self.acked) as usize;
        self.acked = self.acked.max(taken);
        Ok(self.owed.drain(..new).collect())
    }

    /// Messages sent and not acknowledged yet.
    #[must_use]
    pub fn unacked(&self) -> u64 {
        self.sent - self.acked
    }

    /// The `send_async`s not acknowledged yet.
    #[must_use]
    pub fn owed_async(&self) -> usize {
        self.owed.iter().filter(|id| id.is_some()).count()
    }

    /// Whether the message sent as number `n` (from 1) has been acknowledged.
    #[must_use]
    pub fn delivered(&self, n: u64) -> bool {
        n <= self.acked
    }

    /// Messages sent so far.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.sent
    }

    /// The link ended: every message not acknowledged, with the fate it gets.
    pub fn ended(&mut self) -> Vec<(Option<u64>, SendError)> {
        self.owed
            .drain(..)
            .map(|id| (id, SendError::Unknown))
            .collect()
    }
}

/// What the receiving end of a link counts: the messages taken, how many of
/// them the opener has been told of, and whether one taken is urgent.
#[derive(Debug, Default)]
pub struct Taken {
    taken: u64,
    told: u64,
    urgent: bool,
}

impl Taken {
    /// The process took `n` more messages (`urgent`: one of them is).
    pub fn took(&mut self, n: u64, urgent: bool) {
        self.taken += n;
        self.urgent |= urgent;
    }

    /// The acknowledgement to send now, if one is due: an urgent message taken,
    /// [`ACK_EVERY`] taken untold, or any untold when the process is `idle` (about
    /// to wait, or sending). Counts it as told.
    pub fn ack_due(&mut self, idle: bool) -> Option<u64> {
        let untold = self.taken - self.told;
        (untold > 0 && (idle || self.urgent || untold >= ACK_EVERY)).then(|| {
            self.told = self.taken;
            self.urgent = false;
            self.taken
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_names_its_token_and_key_and_nothing_else_is_one() {
        let token = |data: &[u8]| read_marker(data).map(|m| m.token);
        assert_eq!(token(&marker(0xfeed_beef)), Some(0xfeed_beef));
        assert_eq!(marker(7).len(), MARKER_LEN);
        assert_eq!(token(b"hello"), None);
        let key = [3u8; KEY_LEN];
        let sealed = sealed_marker(9, &key);
        assert_eq!(sealed.len(), SEALED_MARKER_LEN);
        assert_eq!(
            read_marker(&sealed),
            Some(SealedMarker {
                token: 9,
                key: Some(key)
            })
        );
        for mut long in [marker(7), sealed.clone()] {
            long.push(0);
            assert_eq!(token(&long), None, "a marker is exactly its length");
        }
        assert_eq!(token(&marker(7)[..MARKER_LEN - 1]), None);
        assert_eq!(token(&sealed[..SEALED_MARKER_LEN - 1]), None);
    }

    #[test]
    fn data_that_reads_as_a_marker_or_an_escape_comes_out_as_it_went_in() {
        let key = [9; KEY_LEN];
        let tricky = [
            marker(5),
            sealed_marker(6, &key),
            ESCAPE_MAGIC.to_vec(),
            [&ESCAPE_MAGIC[..], &marker(7)].concat(),
            b"plain".to_vec(),
            Vec::new(),
        ];
        for data in tricky {
            let mut carried = escape(&data).into_owned();
            assert_eq!(read_incoming(&mut carried), None, "{data:?}");
            assert_eq!(carried, data);
        }
        // Plain data goes as it is (no copy), and a marker an agent made reads as one.
        assert!(matches!(escape(b"plain"), std::borrow::Cow::Borrowed(_)));
        let mut made = sealed_marker(6, &key);
        assert_eq!(
            read_incoming(&mut made),
            Some(SealedMarker {
                token: 6,
                key: Some(key)
            })
        );
    }

    #[test]
    fn a_preface_names_its_token_and_pair() {
        use nefele_api::ids::{Incarnation, NodeId};
        let (a, b) = (
            Pid::new(NodeId(1), Incarnation(2), 3),
            Pid::new(NodeId(4), Incarnation(5), u64::MAX),
        );
        let bytes: [u8; PREFACE_LEN] = preface(7, a, b).try_into().unwrap();
        assert_eq!(read_preface(&bytes), Some((7, a, b)));
    }

    #[test]
    fn frames_come_out_as_they_went_in_whatever_the_reads() {
        let mut bytes = Vec::new();
        put_data(&mut bytes, b"ping", false);
        put_ack(&mut bytes, 42);
        put_data(&mut bytes, b"", true);
        put_ack_back(&mut bytes, u64::MAX, 3);
        put_data(&mut bytes, &[7; 100], false);
        let data = |d: &[u8], urgent| Frame::Data {
            data: d.to_vec(),
            urgent,
        };
        let want = vec![
            data(b"ping", false),
            Frame::Ack(42),
            data(b"", true),
            Frame::AckBack {
                token: u64::MAX,
                taken: 3,
            },
            data(&[7; 100], false),
        ];
        for chunk in [1, 2, 3, 7, 64, bytes.len()] {
            let mut inbound = Inbound::new(100);
            let mut got = Vec::new();
            for piece in bytes.chunks(chunk) {
                inbound.extend(piece);
                while let Some(f) = inbound.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, want, "reads of {chunk} bytes");
            assert!(!inbound.partial());
        }
    }

    #[test]
    fn a_long_stream_cut_across_frames_keeps_only_an_unfinished_frame() {
        let mut bytes = Vec::new();
        for _ in 0..1000 {
            put_data(&mut bytes, &[1; 50], false);
        }
        let mut inbound = Inbound::new(100);
        let mut frames = 0;
        // Reads that never end on a frame's boundary.
        for piece in bytes.chunks(77) {
            inbound.extend(piece);
            while inbound.next_frame().unwrap().is_some() {
                frames += 1;
            }
            assert!(
                inbound.buf.len() <= 77 + 55,
                "{} bytes kept",
                inbound.buf.len()
            );
        }
        assert_eq!(frames, 1000);
    }

    #[test]
    fn an_oversized_or_unknown_frame_ends_the_link_before_its_body_comes() {
        let mut inbound = Inbound::new(10);
        // Only the length: refused before the 4 GiB it announces.
        inbound.extend(&u32::MAX.to_le_bytes());
        assert!(matches!(
            inbound.next_frame(),
            Err(LinkError::TooLarge { max: 11, .. })
        ));
        let mut inbound = Inbound::new(10);
        let mut bytes = Vec::new();
        put_data(&mut bytes, &[0; 11], false);
        inbound.extend(&bytes);
        assert!(matches!(
            inbound.next_frame(),
            Err(LinkError::TooLarge { .. })
        ));
        for (frame, want) in [
            (&[1, 0, 0, 0, 9][..], LinkError::Kind(Some(9))),
            (&[0, 0, 0, 0][..], LinkError::Kind(None)),
        ] {
            let mut inbound = Inbound::new(10);
            inbound.extend(frame);
            assert_eq!(inbound.next_frame(), Err(want));
        }
        let mut inbound = Inbound::new(10);
        inbound.extend(&[3, 0, 0, 0, ACK, 1, 2]);
        assert!(matches!(inbound.next_frame(), Err(LinkError::AckLength(2))));
        let mut inbound = Inbound::new(100);
        inbound.extend(&[9, 0, 0, 0, ACK_BACK, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(matches!(inbound.next_frame(), Err(LinkError::AckLength(8))));
    }

    #[test]
    fn acknowledgements_deliver_in_order_an_older_one_is_no_news_and_a_lying_peer_is_caught() {
        let mut out = Outbound::default();
        out.sent(Some(10));
        out.sent(None);
        out.sent(Some(12));
        assert_eq!(out.unacked(), 3);
        assert_eq!(out.acked(2).unwrap(), vec![Some(10), None]);
        assert!(out.delivered(2) && !out.delivered(3));
        assert_eq!(
            out.acked(2).unwrap(),
            Vec::new(),
            "a repeat delivers nothing"
        );
        assert_eq!(out.acked(1).unwrap(), Vec::new(), "an older one is no news");
        assert!(out.delivered(2), "and takes nothing back");
        assert!(out.acked(4).is_err(), "more than was sent");
        assert_eq!(out.ended(), vec![(Some(12), SendError::Unknown)]);
        assert_eq!(out.count(), 3);
    }

    #[test]
    fn the_receiver_acknowledges_urgent_ones_at_once_and_the_rest_when_idle_or_many() {
        let mut taken = Taken::default();
        assert_eq!(taken.ack_due(true), None);
        taken.took(3, false);
        assert_eq!(taken.ack_due(false), None, "not yet: nobody waits");
        taken.took(2, true);
        assert_eq!(taken.ack_due(false), Some(5), "an urgent one");
        assert_eq!(taken.ack_due(true), None);
        taken.took(1, false);
        assert_eq!(taken.ack_due(true), Some(6), "idle");
        taken.took(ACK_EVERY - 1, false);
        assert_eq!(taken.ack_due(false), None);
        taken.took(1, false);
        assert_eq!(taken.ack_due(false), Some(6 + ACK_EVERY), "many");
    }

    /// A frame of each kind from a drawn number.
    fn frame_of(kind: u8, data: Vec<u8>, n: u64) -> Frame {
        match kind % 4 {
            0 => Frame::Data {
                data,
                urgent: false,
            },
            1 => Frame::Data { data, urgent: true },
            2 => Frame::Ack(n),
            _ => Frame::AckBack {
                token: n.rotate_left(17),
                taken: n,
            },
        }
    }

    fn put(out: &mut Vec<u8>, frame: &Frame) {
        match frame {
            Frame::Data { data, urgent } => put_data(out, data, *urgent),
            Frame::Ack(taken) => put_ack(out, *taken),
            Frame::AckBack { token, taken } => put_ack_back(out, *token, *taken),
        }
    }

    proptest::proptest! {
        /// The stream a peer writes is cut into frames wherever its reads end:
        /// frames written whole come out the same and in order, however the bytes
        /// are split.
        #[test]
        fn frames_come_out_as_written_however_the_reads_split_them(
            drawn in proptest::collection::vec(
                (proptest::prelude::any::<u8>(), proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40), proptest::prelude::any::<u64>()),
                0..20,
            ),
            cuts in proptest::collection::vec(1usize..64, 1..40),
        ) {
            let frames: Vec<Frame> = drawn.into_iter().map(|(k, d, n)| frame_of(k, d, n)).collect();
            let mut stream = Vec::new();
            frames.iter().for_each(|f| put(&mut stream, f));
            let mut inbound = Inbound::new(40);
            let (mut out, mut at) = (Vec::new(), 0);
            for cut in cuts.iter().cycle() {
                if at == stream.len() {
                    break;
                }
                let end = (at + cut).min(stream.len());
                inbound.extend(&stream[at..end]);
                at = end;
                while let Some(frame) = inbound.next_frame().expect("frames written whole") {
                    out.push(frame);
                }
            }
            proptest::prop_assert_eq!(out, frames);
            proptest::prop_assert!(!inbound.partial());
        }

        /// Bytes from a hostile peer, in any reads: no panic, no message over the
        /// limit, and once a frame is refused the link ends with a typed error.
        #[test]
        fn arbitrary_bytes_never_panic_nor_pass_the_limit(
            reads in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 0..16),
        ) {
            let mut inbound = Inbound::new(16);
            'reads: for bytes in &reads {
                inbound.extend(bytes);
                loop {
                    match inbound.next_frame() {
                        Ok(Some(Frame::Data { data, .. })) => proptest::prop_assert!(data.len() <= 16),
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => break 'reads,
                    }
                }
            }
        }
    }
}
