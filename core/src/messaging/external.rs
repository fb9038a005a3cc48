//! The external proxy: sends to `Dest::External { host, port }` leave the cluster
//! through a *proxy agent*, and what the external service answers comes back into
//! the sender's mailbox, with the same send/recv interface and the `External`
//! distance class.
//!
//! # Who is a proxy
//!
//! `messaging.proxies` lists the proxy agents (the same list on every agent; empty:
//! `Dest::External` answers `Unsupported`). An agent in the list is a proxy. A
//! sender's agent carries the send itself if it is one, else hands it to the proxy
//! the sender's pid picks (a hash of its sequence number over the list, so one
//! process always uses one proxy).
//!
//! # The connection guarantee
//!
//! A process has one *connection* per (host, port): its bytes leave in the order
//! it sent them and each send leaves once, and what the external service answers
//! arrives in its mailbox in order and once, until the connection ends; then the
//! process gets [`MailBody::ExternalClosed`] (after every byte that came before it)
//! with the reason ([`ExternalClose`]): the far end closed or the proxy's TCP
//! connection failed once open (`Closed`), the proxy's rules do not allow the
//! address (`Denied`), the proxy could not connect (`Unreachable`), the external
//! service did not take its bytes (`Overrun`), bytes between the agents were lost and not
//! recovered within `fate_timeout` (`Reset`), the process did not take its bytes
//! (its mailbox stayed full for `fate_timeout`, or more than [`WINDOW`](super::pipe::WINDOW) answers
//! waited for it: `Overflow`), or the proxy dropped the connection (its table was
//! full, or it no longer knew it: `Dropped`). Nothing is skipped silently, as with
//! TCP's byte stream, and the next send opens a new connection.
//!
//! Between a sender's agent and its proxy, a connection is a *stream* (named by a
//! number the sender's agent picks, growing over the agent's lives: its
//! incarnation in the high 32 bits) carried by a [`Pipe`] at each end: the
//! sender's [`ExternalMsg::Out`] and the proxy's [`ExternalMsg::Back`] are numbered
//! per stream, sent again every `resend_interval` until the other end's cumulative
//! ack ([`ExternalMsg::OutAck`], [`ExternalMsg::BackAck`]), and taken in order
//! through a reorder window of [`WINDOW`](super::pipe::WINDOW) pieces. A send's fate is `Ok` once the
//! proxy acked it (it was handed to the driver, in order); past [`WINDOW`](super::pipe::WINDOW)
//! unacknowledged sends on a connection a send fails `Full`; when the connection
//! ends, its unacknowledged sends fail `Unknown` (they may have gone out). The
//! proxy's last piece of a stream says why it ended; a stream's end on the sender's
//! side (its pipe stalled, its process ended) tells the proxy with
//! [`ExternalMsg::Abort`]; an `Out` the proxy has no stream for and whose number
//! is not above every stream it opened for that agent (it forgot the stream, or
//! the piece is an old duplicate, or two streams of one agent opened so close
//! together that the later one's first piece came first) is answered
//! [`ExternalMsg::Dropped`]. A
//! process on the proxy's own host skips the pipes (nothing crosses the network),
//! and a full mailbox there ends its connection `Overflow` at once.
//!
//! # The driver-facing interface
//!
//! The proxy's driver opens one connection per stream, named by a number (`conn`)
//! the proxy chooses:
//!
//! - [`ExternalCommand::Send`] (through `Output::External`): write the bytes on
//!   `conn`, opening it to `host:port` first if the driver has none of that number;
//! - [`ExternalCommand::Close`]: close `conn` (the proxy forgot it);
//! - [`ExternalEvent::Data`] (through `Input::External`): bytes read from `conn`, at
//!   most [`MAX_DATA_BYTES`] per event (the driver cuts longer reads);
//! - [`ExternalEvent::Closed`]: `conn` ended (the far end closed it, it failed,
//!   or it never opened) for the reason the driver gives; the proxy ends the
//!   stream with that reason, and the next send opens a new one.
//!
//! Invariants: the tables are bounded ([`MAX_CONNS`] streams at a proxy,
//! [`MAX_STREAMS`] at a sender's agent, [`WINDOW`](super::pipe::WINDOW) pieces per pipe direction);
//! each stream with something to wait for has exactly one timer; an agent speaks
//! only for its own processes, and only the stream's proxy is heard on it. A
//! proxy remembers, per sending agent, the highest stream number it opened (one
//! number per agent that ever used it), so a stale duplicate cannot reopen a
//! stream.

use super::msg::{MessagingMsg, MAX_DATA_BYTES};
use super::pipe::Pipe;
use super::post::Post;
use crate::ids::{Incarnation, NodeId, Pid, TenantId};
use crate::service::ServiceOutput;
use crate::time::Time;
use crate::wire::validate::check_len;
use crate::wire::Reject;
use nefele_api::calls::{ApiReply, RequestId};
use nefele_api::messaging::{DistanceClass, ExternalClose, MailBody, SendError, SendReceipt};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The longest external host name, in bytes.
pub const MAX_HOST_BYTES: usize = 255;
/// The most streams one proxy keeps (the least recently used goes beyond).
pub const MAX_CONNS: usize = 4096;
/// The most streams one sender's agent keeps (a send that would open one more
/// fails `Full`).
pub const MAX_STREAMS: usize = 4096;

/// What the proxy asks its driver to do (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExternalCommand {
    /// Write `data` on connection `conn`, opened to `host:port` first if need be.
    Send {
        /// The proxy's number of the connection.
        conn: u64,
        /// The external host.
        host: String,
        /// Its TCP port.
        port: u16,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Close connection `conn`.
    Close {
        /// The connection.
        conn: u64,
    },
}

/// What the proxy's driver reports (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExternalEvent {
    /// Bytes read from connection `conn` (at most [`MAX_DATA_BYTES`]).
    Data {
        /// The connection.
        conn: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Connection `conn` ended: it failed, it never opened, or the far end closed it.
    Closed {
        /// The connection.
        conn: u64,
        /// Why, as the process is told.
        reason: ExternalClose,
    },
}

/// A numbered piece of a stream.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Piece {
    /// Bytes.
    Data(Vec<u8>),
    /// The connection ended (the proxy's last piece of a stream).
    End(ExternalClose),
}

/// The proxy's wire sub-message (see the module documentation).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExternalMsg {
    /// Sender's agent → proxy: piece `seq` of stream `stream`, the bytes of `from`
    /// (of `tenant`) for `host:port`.
    Out {
        /// The sender's agent's number of the stream.
        stream: u64,
        /// The piece's number on the stream.
        seq: u64,
        /// The sender's tenant.
        tenant: TenantId,
        /// The sender (a process of the sending agent).
        from: Pid,
        /// The external host.
        host: String,
        /// Its port.
        port: u16,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Proxy → sender's agent: every `Out` of `stream` below `next` went to the
    /// driver.
    OutAck {
        /// The stream.
        stream: u64,
        /// The first piece not taken.
        next: u64,
    },
    /// Proxy → the agent of `to`: piece `seq` of what came back on `stream`.
    Back {
        /// The stream.
        stream: u64,
        /// The piece's number on the stream.
        seq: u64,
        /// The stream's process.
        to: Pid,
        /// Bytes, or the end.
        piece: Piece,
    },
    /// Sender's agent → proxy: every `Back` of `stream` below `next` was taken.
    BackAck {
        /// The stream.
        stream: u64,
        /// The first piece not taken.
        next: u64,
    },
    /// Sender's agent → proxy: the stream ended at the sender's side; close it.
    Abort {
        /// The stream.
        stream: u64,
    },
    /// Proxy → sender's agent: the proxy has no such stream (it dropped it).
    Dropped {
        /// The stream.
        stream: u64,
    },
}

/// A short, stable name of the kind of `msg` (`Out` and `Back` carry data).
pub(super) fn kind(msg: &ExternalMsg) -> &'static str {
    match msg {
        ExternalMsg::Out { .. } => "external_out_data",
        ExternalMsg::OutAck { .. } => "external_out_ack",
        ExternalMsg::Back { .. } => "external_back_data",
        ExternalMsg::BackAck { .. } => "external_back_ack",
        ExternalMsg::Abort { .. } => "external_abort",
        ExternalMsg::Dropped { .. } => "external_dropped",
    }
}

/// Whether `host` may name an external host: 1 to [`MAX_HOST_BYTES`] bytes.
#[must_use]
pub fn valid_host(host: &str) -> bool {
    !host.is_empty() && host.len() <= MAX_HOST_BYTES
}

/// Checks what a peer sent.
pub(super) fn validate(msg: &ExternalMsg) -> Result<(), Reject> {
    match msg {
        ExternalMsg::Out { host, data, .. } => {
            check_len("external data", data.len(), MAX_DATA_BYTES)?;
            if valid_host(host) {
                Ok(())
            } else {
                Err(Reject::Malformed {
                    what: "external host",
                })
            }
        }
        ExternalMsg::Back {
            piece: Piece::Data(data),
            ..
        } => check_len("external data", data.len(), MAX_DATA_BYTES),
        ExternalMsg::Back { .. }
        | ExternalMsg::OutAck { .. }
        | ExternalMsg::BackAck { .. }
        | ExternalMsg::Abort { .. }
        | ExternalMsg::Dropped { .. } => Ok(()),
    }
}

/// Who a connection is for.
type ConnKey = (TenantId, Pid, String, u16);

/// A stream as the proxy names it: the sender's agent and its number.
type StreamId = (NodeId, u64);

/// Which table a timer is of: the sender's side (`false`) or the proxy's (`true`).
type Timer = (Time, bool, StreamId);

/// The sender's side of a stream to a remote proxy.
#[derive(Debug)]
struct Client {
    key: ConnKey,
    proxy: NodeId,
    pipe: Pipe<Piece>,
    /// The client calls of the unacknowledged `Out`s, by piece number.
    requests: BTreeMap<u64, RequestId>,
    due: Option<Time>,
}

/// Sends piece `seq` of stream `id` back to its sender's agent, for process `to`.
fn send_back(post: &mut Post, id: StreamId, to: Pid, seq: u64, piece: Piece) {
    let back = ExternalMsg::Back {
        stream: id.1,
        seq,
        to,
        piece,
    };
    post.send_msg(id.0, MessagingMsg::External(back));
}

/// The proxy's side of a stream (its origin may be the proxy itself).
#[derive(Debug)]
struct Conn {
    /// The driver's connection; `None` once it is closed and the end is on its way.
    conn: Option<u64>,
    key: ConnKey,
    pipe: Pipe<Piece>,
    used: Time,
    due: Option<Time>,
}

/// One agent's side of the proxy: the streams of its processes and, at a proxy,
/// the connections (see the module documentation).
#[derive(Debug)]
pub struct External {
    me: NodeId,
    proxies: Vec<NodeId>,
    fate_timeout: Duration,
    resend: Duration,
    next_stream: u64,
    /// The stream of each (process, address) of this host.
    by_key: BTreeMap<ConnKey, u64>,
    /// The streams of this host's processes to a remote proxy.
    clients: BTreeMap<u64, Client>,
    /// At a proxy: its streams, and the stream of each driver connection.
    conns: BTreeMap<StreamId, Conn>,
    by_conn: BTreeMap<u64, StreamId>,
    next_conn: u64,
    /// At a proxy: the highest stream number opened per sending agent.
    opened: BTreeMap<NodeId, u64>,
    timers: BTreeSet<Timer>,
}

impl External {
    /// The proxy side of agent `me` in its life `incarnation`, with the cluster's
    /// `proxies`.
    #[must_use]
    pub fn new(
        me: NodeId,
        incarnation: Incarnation,
        proxies: Vec<NodeId>,
        fate_timeout: Duration,
        resend: Duration,
    ) -> Self {
        External {
            me,
            proxies,
            fate_timeout,
            resend,
            next_stream: u64::from(incarnation.0) << 32,
            by_key: BTreeMap::new(),
            clients: BTreeMap::new(),
            conns: BTreeMap::new(),
            by_conn: BTreeMap::new(),
            next_conn: 0,
            opened: BTreeMap::new(),
            timers: BTreeSet::new(),
        }
    }

    fn is_proxy(&self) -> bool {
        self.proxies.contains(&self.me)
    }

    /// The proxy process `from` uses: a hash of its whole pid (host, life and
    /// sequence) over the list, so one process always uses one proxy and a
    /// cluster's processes spread over all of them. (Before, the hash took the
    /// sequence alone: the first processes of every host, which share a few
    /// sequence numbers, all used the same proxies; of three, one carried nine
    /// tenths of a run's calls and one none.)
    fn proxy_for(&self, from: Pid) -> Option<NodeId> {
        use crate::mix::splitmix64;
        let n = self.proxies.len() as u64;
        (n > 0).then(|| {
            let host_life = u64::from(from.origin().0) | u64::from(from.incarnation().0) << 32;
            let i = splitmix64(from.sequence() ^ splitmix64(host_life)) % n;
            self.proxies[i as usize]
        })
    }

    /// A client's send of `data` from `from` to `host:port` (size and sender checked
    /// by the caller).
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &mut self,
        now: Time,
        request: RequestId,
        (tenant, from): (TenantId, Pid),
        host: String,
        port: u16,
        data: Vec<u8>,
        post: &mut Post,
    ) {
        if !valid_host(&host) {
            return post.reply(request, ApiReply::Sent(Err(SendError::NoSuchProcess)));
        }
        let key = (tenant, from, host, port);
        if self.is_proxy() {
            self.carry_local(now, key, data, post);
            return post.reply(request, ApiReply::Sent(Ok(one())));
        }
        let Some(proxy) = self.proxy_for(from) else {
            return post.reply(request, ApiReply::Sent(Err(SendError::Unsupported)));
        };
        let id = match self.by_key.get(&key) {
            Some(id) => *id,
            None if self.clients.len() >= MAX_STREAMS => {
                return post.reply(request, ApiReply::Sent(Err(SendError::Full)));
            }
            None => {
                self.next_stream += 1;
                let id = self.next_stream;
                self.by_key.insert(key.clone(), id);
                let client = Client {
                    key: key.clone(),
                    proxy,
                    pipe: Pipe::default(),
                    requests: BTreeMap::new(),
                    due: None,
                };
                self.clients.insert(id, client);
                id
            }
        };
        let client = self.clients.get_mut(&id).expect("by_key names a client");
        match client
            .pipe
            .push(now, Piece::Data(data.clone()), self.resend, false)
        {
            Err(_) => post.reply(request, ApiReply::Sent(Err(SendError::Full))),
            Ok(seq) => {
                client.requests.insert(seq, request);
                let (tenant, from, host, port) = key;
                let out = ExternalMsg::Out {
                    stream: id,
                    seq,
                    tenant,
                    from,
                    host,
                    port,
                    data,
                };
                post.send_msg(proxy, MessagingMsg::External(out));
                self.reschedule_client(id);
            }
        }
    }

    /// At a proxy: a send of one of its own processes goes to the driver.
    fn carry_local(&mut self, now: Time, key: ConnKey, data: Vec<u8>, post: &mut Post) {
        let id = match self.by_key.get(&key) {
            Some(id) => *id,
            None => {
                self.next_stream += 1;
                let id = self.next_stream;
                self.by_key.insert(key.clone(), id);
                self.open((self.me, id), key.clone(), now, post);
                id
            }
        };
        let conn = self.conns.get_mut(&(self.me, id)).expect("a local stream");
        conn.used = now;
        if let Some(c) = conn.conn {
            post.push(ServiceOutput::External(ExternalCommand::Send {
                conn: c,
                host: key.2,
                port: key.3,
                data,
            }));
        }
    }

    /// At a proxy: opens stream `id` for `key` (making room first).
    fn open(&mut self, id: StreamId, key: ConnKey, now: Time, post: &mut Post) {
        if self.conns.len() >= MAX_CONNS {
            let oldest = self
                .conns
                .iter()
                .min_by_key(|(s, c)| (c.used, **s))
                .map(|(s, _)| *s);
            if let Some(s) = oldest {
                self.drop_conn(s, post);
            }
        }
        self.next_conn += 1;
        self.by_conn.insert(self.next_conn, id);
        let conn = Conn {
            conn: Some(self.next_conn),
            key,
            pipe: Pipe::default(),
            used: now,
            due: None,
        };
        self.conns.insert(id, conn);
    }

    /// At a proxy: forgets stream `id` to make room; its process is told `Dropped`.
    fn drop_conn(&mut self, id: StreamId, post: &mut Post) {
        let Some(conn) = self.forget(id, post) else {
            return;
        };
        if id.0 == self.me {
            self.by_key.remove(&conn.key);
            closed_mail(&conn.key, ExternalClose::Dropped, post);
        } else {
            let msg = ExternalMsg::Dropped { stream: id.1 };
            post.send_msg(id.0, MessagingMsg::External(msg));
        }
    }

    /// At a proxy: removes stream `id`, closing its driver connection.
    fn forget(&mut self, id: StreamId, post: &mut Post) -> Option<Conn> {
        let conn = self.conns.remove(&id)?;
        if let Some(t) = conn.due {
            self.timers.remove(&(t, true, id));
        }
        if let Some(c) = conn.conn {
            self.by_conn.remove(&c);
            post.push(ServiceOutput::External(ExternalCommand::Close { conn: c }));
        }
        Some(conn)
    }

    /// At a proxy: stream `id` ends for `reason`: its driver connection is closed
    /// (unless `driver_closed`), and its process told after every byte before.
    fn end_conn(
        &mut self,
        now: Time,
        id: StreamId,
        reason: ExternalClose,
        driver_closed: bool,
        post: &mut Post,
    ) {
        if id.0 == self.me {
            if let Some(conn) = self.conns.get_mut(&id) {
                if driver_closed {
                    conn.conn = None;
                }
            }
            if let Some(conn) = self.forget(id, post) {
                self.by_key.remove(&conn.key);
                closed_mail(&conn.key, reason, post);
            }
            return;
        }
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(c) = conn.conn.take() else {
            return; // ending already
        };
        self.by_conn.remove(&c);
        if !driver_closed {
            post.push(ServiceOutput::External(ExternalCommand::Close { conn: c }));
        }
        let piece = Piece::End(reason);
        if let Ok(seq) = conn.pipe.push(now, piece.clone(), self.resend, true) {
            send_back(post, id, conn.key.1, seq, piece);
        }
        self.reschedule_conn(id);
    }

    /// The sender's side ends stream `id`: its unacknowledged sends fail `Unknown`,
    /// its process (if it lives) gets the end, and the proxy is told (`abort`).
    fn end_client(&mut self, id: u64, reason: ExternalClose, abort: bool, post: &mut Post) {
        let Some(client) = self.clients.remove(&id) else {
            return;
        };
        if let Some(t) = client.due {
            self.timers.remove(&(t, false, (self.me, id)));
        }
        self.by_key.remove(&client.key);
        for request in client.requests.into_values() {
            post.reply(request, ApiReply::Sent(Err(SendError::Unknown)));
        }
        closed_mail(&client.key, reason, post);
        if abort {
            let msg = ExternalMsg::Abort { stream: id };
            post.send_msg(client.proxy, MessagingMsg::External(msg));
        }
    }

    /// A sub-message from agent `from` (validated).
    pub fn handle_message(&mut self, now: Time, from: NodeId, msg: ExternalMsg, post: &mut Post) {
        match msg {
            ExternalMsg::Out {
                stream,
                seq,
                tenant,
                from: pid,
                host,
                port,
                data,
            } => {
                // An agent speaks only for its own processes.
                if pid.origin() == from && from != self.me {
                    self.on_out(
                        now,
                        (from, stream),
                        seq,
                        (tenant, pid, host, port),
                        data,
                        post,
                    );
                }
            }
            ExternalMsg::OutAck { stream, next } => {
                let Some(client) = self.clients.get_mut(&stream) else {
                    return;
                };
                if client.proxy != from {
                    return;
                }
                for seq in client.pipe.acked(next) {
                    if let Some(request) = client.requests.remove(&seq) {
                        post.reply(request, ApiReply::Sent(Ok(one())));
                    }
                }
                self.reschedule_client(stream);
            }
            ExternalMsg::Back {
                stream,
                seq,
                to,
                piece,
            } => self.on_back(now, from, stream, seq, to, piece, post),
            ExternalMsg::BackAck { stream, next } => {
                let id = (from, stream);
                let Some(conn) = self.conns.get_mut(&id) else {
                    return;
                };
                conn.pipe.acked(next);
                if conn.conn.is_none() && conn.pipe.idle() {
                    self.forget(id, post);
                } else {
                    self.reschedule_conn(id);
                }
            }
            ExternalMsg::Abort { stream } => {
                self.forget((from, stream), post);
            }
            ExternalMsg::Dropped { stream } => {
                if self.clients.get(&stream).is_some_and(|c| c.proxy == from) {
                    self.end_client(stream, ExternalClose::Dropped, false, post);
                }
            }
        }
    }

    /// At a proxy: piece `seq` of stream `id`, from the process of `key`.
    fn on_out(
        &mut self,
        now: Time,
        id: StreamId,
        seq: u64,
        key: ConnKey,
        data: Vec<u8>,
        post: &mut Post,
    ) {
        let known = self.conns.get(&id).map(|c| c.key == key);
        match known {
            Some(false) => return,
            None => {
                // A stream number above every one this origin opened is new (its
                // first pieces may come in any order); one at or below it was
                // forgotten here, and a piece of it is stale.
                let fresh = self.opened.get(&id.0).is_none_or(|s| *s < id.1);
                if !self.is_proxy() || !fresh {
                    let msg = ExternalMsg::Dropped { stream: id.1 };
                    return post.send_msg(id.0, MessagingMsg::External(msg));
                }
                self.opened.insert(id.0, id.1);
                self.open(id, key, now, post);
            }
            Some(true) => {}
        }
        let conn = self.conns.get_mut(&id).expect("opened above");
        conn.used = now;
        if conn.pipe.put(now, seq, Piece::Data(data)).is_err() {
            return self.end_conn(now, id, ExternalClose::Reset, false, post);
        }
        while let Some(piece) = conn.pipe.ready().cloned() {
            conn.pipe.taken(now);
            if let (Piece::Data(data), Some(c)) = (piece, conn.conn) {
                post.push(ServiceOutput::External(ExternalCommand::Send {
                    conn: c,
                    host: conn.key.2.clone(),
                    port: conn.key.3,
                    data,
                }));
            }
        }
        let ack = ExternalMsg::OutAck {
            stream: id.1,
            next: conn.pipe.next_recv(),
        };
        post.send_msg(id.0, MessagingMsg::External(ack));
        self.reschedule_conn(id);
    }

    /// At the sender's agent: piece `seq` of stream `stream` from proxy `from`.
    #[allow(clippy::too_many_arguments)]
    fn on_back(
        &mut self,
        now: Time,
        from: NodeId,
        stream: u64,
        seq: u64,
        to: Pid,
        piece: Piece,
        post: &mut Post,
    ) {
        if to.origin() != self.me || !self.proxies.contains(&from) {
            return;
        }
        let Some(client) = self
            .clients
            .get_mut(&stream)
            .filter(|c| c.proxy == from && c.key.1 == to)
        else {
            // A stream this agent ended (or never had): the proxy may forget it.
            let msg = ExternalMsg::Abort { stream };
            return post.send_msg(from, MessagingMsg::External(msg));
        };
        if client.pipe.put(now, seq, piece).is_err() {
            return self.end_client(stream, ExternalClose::Overflow, true, post);
        }
        let (tenant, pid, host, port) = client.key.clone();
        let mut ended = None;
        while let Some(piece) = client.pipe.ready() {
            match piece {
                Piece::Data(data) => {
                    let body = MailBody::External {
                        host: host.clone(),
                        port,
                        data: data.clone(),
                    };
                    if !post.deliver_local((tenant, pid, pid), 0, body, DistanceClass::External) {
                        // Its mailbox is full (it stays ready; the proxy sends it
                        // again) or the process ended (the stream goes with it).
                        if post.tenant_of(pid).is_none() {
                            ended = Some((ExternalClose::Closed, true));
                        }
                        break;
                    }
                }
                Piece::End(reason) => ended = Some((*reason, false)),
            }
            client.pipe.taken(now);
            if ended.is_some() {
                break;
            }
        }
        let ack = ExternalMsg::BackAck {
            stream,
            next: client.pipe.next_recv(),
        };
        post.send_msg(from, MessagingMsg::External(ack));
        match ended {
            Some((reason, abort)) => self.end_client(stream, reason, abort, post),
            None => self.reschedule_client(stream),
        }
    }

    /// At a proxy: the driver reported on a connection.
    pub fn handle_event(&mut self, now: Time, event: ExternalEvent, post: &mut Post) {
        match event {
            ExternalEvent::Data { conn, data } => {
                let Some(id) = self.by_conn.get(&conn).copied() else {
                    return;
                };
                if data.len() > MAX_DATA_BYTES {
                    return self.end_conn(now, id, ExternalClose::Closed, false, post);
                }
                let me = self.me;
                let Some(c) = self.conns.get_mut(&id) else {
                    return;
                };
                c.used = now;
                let (tenant, to, host, port) = c.key.clone();
                if id.0 == me {
                    let body = MailBody::External { host, port, data };
                    if !post.deliver_local((tenant, to, to), 0, body, DistanceClass::External) {
                        self.end_conn(now, id, ExternalClose::Overflow, false, post);
                    }
                    return;
                }
                let piece = Piece::Data(data);
                match c.pipe.push(now, piece.clone(), self.resend, false) {
                    Err(_) => self.end_conn(now, id, ExternalClose::Overflow, false, post),
                    Ok(seq) => {
                        send_back(post, id, to, seq, piece);
                        self.reschedule_conn(id);
                    }
                }
            }
            ExternalEvent::Closed { conn, reason } => {
                if let Some(id) = self.by_conn.get(&conn).copied() {
                    self.end_conn(now, id, reason, true, post);
                }
            }
        }
    }

    /// The process `pid` of this host ended: its streams go (the proxy is told).
    pub fn process_ended(&mut self, pid: Pid, post: &mut Post) {
        let ids: Vec<u64> = self
            .by_key
            .iter()
            .filter(|(k, _)| k.1 == pid)
            .map(|(_, id)| *id)
            .collect();
        for id in ids {
            if self.clients.contains_key(&id) {
                self.end_client(id, ExternalClose::Closed, true, post);
            } else if let Some(conn) = self.forget((self.me, id), post) {
                self.by_key.remove(&conn.key);
            }
        }
    }

    /// Streams whose deadline came: pieces go again, or a stalled stream ends.
    pub fn handle_timeout(&mut self, now: Time, post: &mut Post) {
        while let Some(&(t, proxy_side, id)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.remove(&(t, proxy_side, id));
            if proxy_side {
                let Some(conn) = self.conns.get_mut(&id) else {
                    continue;
                };
                conn.due = None;
                match conn.pipe.expire(now, self.fate_timeout, self.resend) {
                    Err(_) => {
                        // The sender's agent does not answer: it will find the
                        // stream gone (`Dropped`) or stall itself.
                        self.forget(id, post);
                    }
                    Ok(again) => {
                        for (seq, piece) in again {
                            send_back(post, id, conn.key.1, seq, piece);
                        }
                        self.reschedule_conn(id);
                    }
                }
            } else {
                let Some(client) = self.clients.get_mut(&id.1) else {
                    continue;
                };
                client.due = None;
                match client.pipe.expire(now, self.fate_timeout, self.resend) {
                    Err(_) => {
                        // Data stuck at the process's full mailbox, or a gap
                        // that never filled, or a proxy that never acked.
                        let reason = if client.pipe.ready().is_some() {
                            ExternalClose::Overflow
                        } else {
                            ExternalClose::Reset
                        };
                        self.end_client(id.1, reason, true, post);
                    }
                    Ok(again) => {
                        let (tenant, from, host, port) = client.key.clone();
                        for (seq, piece) in again {
                            if let Piece::Data(data) = piece {
                                let out = ExternalMsg::Out {
                                    stream: id.1,
                                    seq,
                                    tenant,
                                    from,
                                    host: host.clone(),
                                    port,
                                    data,
                                };
                                post.send_msg(client.proxy, MessagingMsg::External(out));
                            }
                        }
                        self.reschedule_client(id.1);
                    }
                }
            }
        }
    }

    fn reschedule_client(&mut self, id: u64) {
        let key = (self.me, id);
        if let Some(client) = self.clients.get_mut(&id) {
            let due = client.pipe.due(self.fate_timeout);
            set_timer(&mut self.timers, &mut client.due, due, false, key);
        }
    }

    fn reschedule_conn(&mut self, id: StreamId) {
        if let Some(conn) = self.conns.get_mut(&id) {
            let due = conn.pipe.due(self.fate_timeout);
            set_timer(&mut self.timers, &mut conn.due, due, true, id);
        }
    }

    /// Its next deadline.
    #[must_use]
    pub fn next_timeout(&self) -> Option<Time> {
        self.timers.first().map(|(t, _, _)| *t)
    }

    /// The module's invariants.
    #[must_use]
    pub fn invariants(&self) -> bool {
        let timed = self.clients.values().filter(|c| c.due.is_some()).count()
            + self.conns.values().filter(|c| c.due.is_some()).count();
        timed == self.timers.len()
            && self.clients.len() <= MAX_STREAMS
            && self.conns.len() <= MAX_CONNS
            && self.by_conn.len() <= self.conns.len()
            && self
                .by_conn
                .iter()
                .all(|(c, id)| self.conns.get(id).is_some_and(|conn| conn.conn == Some(*c)))
            && self.clients.values().all(|c| c.pipe.invariants())
            && self.conns.values().all(|c| c.pipe.invariants())
    }
}

/// Moves a stream's timer entry to `due`.
fn set_timer(
    timers: &mut BTreeSet<Timer>,
    slot: &mut Option<Time>,
    due: Option<Time>,
    proxy_side: bool,
    id: StreamId,
) {
    if *slot == due {
        return;
    }
    if let Some(t) = slot.take() {
        timers.remove(&(t, proxy_side, id));
    }
    if let Some(t) = due {
        timers.insert((t, proxy_side, id));
        *slot = Some(t);
    }
}

/// Tells the process of `key` (if it lives) that its connection ended.
fn closed_mail(key: &ConnKey, reason: ExternalClose, post: &mut Post) {
    let (tenant, pid, host, port) = key.clone();
    let body = MailBody::ExternalClosed { host, port, reason };
    post.deliver_local((tenant, pid, pid), 0, body, DistanceClass::External);
}

/// A successful external send reached one place: the proxy.
fn one() -> SendReceipt {
    SendReceipt { reached: 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The processes of 300 hosts with the same sequence number (the first of each
    /// host, the second, the third, as after a boot) spread over three proxies,
    /// each taking between a fifth and a half of them; a pid always gets the same
    /// proxy.
    #[test]
    fn the_first_processes_of_many_hosts_spread_over_every_proxy() {
        let proxies = vec![NodeId(0), NodeId(40), NodeId(80)];
        let ext = External::new(
            NodeId(7),
            Incarnation(1),
            proxies.clone(),
            Duration::from_secs(1),
            Duration::from_millis(100),
        );
        for seq in 1..=3 {
            let mut per_proxy = BTreeMap::new();
            for host in 0..300 {
                let pid = Pid::new(NodeId(host), Incarnation(1), seq);
                let proxy = ext.proxy_for(pid).expect("proxies are set");
                assert_eq!(ext.proxy_for(pid), Some(proxy));
                *per_proxy.entry(proxy).or_insert(0u32) += 1;
            }
            for proxy in &proxies {
                let n = per_proxy.get(proxy).copied().unwrap_or(0);
                assert!(
                    (60..=150).contains(&n),
                    "sequence {seq}: {proxy:?} takes {n} of 300: {per_proxy:?}"
                );
            }
        }
    }
}
