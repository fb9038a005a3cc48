//! The external proxy: sends to `Dest::External { host, port }` leave the cluster
//! through a *proxy agent*, and what the external service answers comes back into
//! the sender's mailbox, with the same send/recv interface and the `External`
//! distance class.
//!
//! # Who is a proxy
//!
//! `messaging.proxies` lists the proxy agents (the same list on every agent; empty:
//! `Dest::External` answers `Unsupported`). An agent in the list is a proxy. A
//! sender's agent hands the send to itself if it is one, else to the proxy the
//! sender's pid picks (a hash of its sequence number over the list, so one
//! process always uses one proxy and its bytes stay in order), as
//! [`ExternalMsg::Out`]; the proxy answers [`ExternalMsg::Taken`], and the send's
//! fate is that answer (`Ok`: handed to the driver; the bytes may still fail on the
//! way out, which the driver reports by closing the connection), or `Unknown` after
//! `fate_timeout`.
//!
//! # The driver-facing interface
//!
//! The proxy's driver opens one connection per (tenant, process, host, port), named
//! by a number (`conn`) the proxy chooses:
//!
//! - [`ExternalCommand::Send`] (through `Output::External`): write the bytes on
//!   `conn`, opening it to `host:port` first if the driver has none of that number;
//! - [`ExternalCommand::Close`]: close `conn` (the proxy forgets it: table full);
//! - [`ExternalEvent::Data`] (through `Input::External`): bytes read from `conn`, at
//!   most [`MAX_DATA_BYTES`] per event (the driver cuts longer reads);
//! - [`ExternalEvent::Closed`]: `conn` failed or the far end closed it; the proxy
//!   forgets it, and the next send opens a new one.
//!
//! What comes back on `conn` goes to its process as [`MailBody::External`] (`from`
//! is the process itself: the connection is its own), straight into its mailbox if it
//! runs on the proxy, else as [`ExternalMsg::Back`] to its agent (at most once: a
//! full mailbox or a lost message drops it, as TCP's bytes would be lost to a
//! process that does not read).
//!
//! Invariants: the tables are bounded ([`MAX_CONNS`], [`MAX_WAITING`]); each waiting
//! send has exactly one timer; an agent speaks only for its own processes, and only
//! a listed proxy's `Back` is delivered.

use super::msg::{MessagingMsg, MAX_DATA_BYTES};
use super::post::Post;
use crate::ids::{NodeId, Pid, TenantId};
use crate::service::ServiceOutput;
use crate::time::Time;
use crate::wire::validate::check_len;
use crate::wire::Reject;
use nefele_api::calls::{ApiReply, RequestId};
use nefele_api::messaging::{DistanceClass, MailBody, SendError, SendReceipt};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The longest external host name, in bytes.
pub const MAX_HOST_BYTES: usize = 255;
/// The most connections one proxy keeps (the least recently used goes beyond).
pub const MAX_CONNS: usize = 4096;
/// The most external sends one agent waits to hear the fate of.
pub const MAX_WAITING: usize = 65_536;

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
    /// Connection `conn` failed or was closed by the far end.
    Closed {
        /// The connection.
        conn: u64,
    },
}

/// The proxy's wire sub-message.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExternalMsg {
    /// Sender's agent → proxy: carry `data` of `from` (of `tenant`) to `host:port`.
    Out {
        /// The sender's agent's number for the send.
        tag: u64,
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
    /// Proxy → sender's agent: the fate of `Out` `tag`.
    Taken {
        /// The send.
        tag: u64,
        /// Handed to the driver, or why not.
        result: Result<(), SendError>,
    },
    /// Proxy → the agent of `to`: bytes from `host:port` for its process `to`.
    Back {
        /// The process's tenant.
        tenant: TenantId,
        /// The process.
        to: Pid,
        /// The external host.
        host: String,
        /// Its port.
        port: u16,
        /// The bytes.
        data: Vec<u8>,
    },
}

/// A short, stable name of the kind of `msg` (`Out` and `Back` carry data).
pub(super) fn kind(msg: &ExternalMsg) -> &'static str {
    match msg {
        ExternalMsg::Out { .. } => "external_out_data",
        ExternalMsg::Taken { .. } => "external_taken",
        ExternalMsg::Back { .. } => "external_back_data",
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
        ExternalMsg::Out { host, data, .. } | ExternalMsg::Back { host, data, .. } => {
            check_len("external data", data.len(), MAX_DATA_BYTES)?;
            if valid_host(host) {
                Ok(())
            } else {
                Err(Reject::Malformed {
                    what: "external host",
                })
            }
        }
        ExternalMsg::Taken { .. } => Ok(()),
    }
}

/// Who a connection is for.
type ConnKey = (TenantId, Pid, String, u16);

/// One agent's side of the proxy: the sends it waits to hear the fate of, and, at a
/// proxy, the connections.
#[derive(Debug)]
pub struct External {
    me: NodeId,
    proxies: Vec<NodeId>,
    fate_timeout: Duration,
    next_tag: u64,
    /// Sends handed to a proxy: tag → (client call, deadline).
    waiting: BTreeMap<u64, (RequestId, Time)>,
    timers: BTreeSet<(Time, u64)>,
    /// At a proxy: the connections, and who each is for with its last use.
    conns: BTreeMap<ConnKey, u64>,
    by_conn: BTreeMap<u64, (ConnKey, Time)>,
    next_conn: u64,
}

impl External {
    /// The proxy side of agent `me`, with the cluster's `proxies`.
    #[must_use]
    pub fn new(me: NodeId, proxies: Vec<NodeId>, fate_timeout: Duration) -> Self {
        External {
            me,
            proxies,
            fate_timeout,
            next_tag: 0,
            waiting: BTreeMap::new(),
            timers: BTreeSet::new(),
            conns: BTreeMap::new(),
            by_conn: BTreeMap::new(),
            next_conn: 0,
        }
    }

    fn is_proxy(&self) -> bool {
        self.proxies.contains(&self.me)
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
        if self.is_proxy() {
            let result = self.carry(now, (tenant, from, host, port), data, post);
            return post.reply(request, ApiReply::Sent(result.map(|()| one())));
        }
        let Some(proxy) = self.proxy_for(from) else {
            return post.reply(request, ApiReply::Sent(Err(SendError::Unsupported)));
        };
        if self.waiting.len() >= MAX_WAITING {
            return post.reply(request, ApiReply::Sent(Err(SendError::Full)));
        }
        self.next_tag += 1;
        let tag = self.next_tag;
        let deadline = now + self.fate_timeout;
        self.waiting.insert(tag, (request, deadline));
        self.timers.insert((deadline, tag));
        let out = ExternalMsg::Out {
            tag,
            tenant,
            from,
            host,
            port,
            data,
        };
        post.send_msg(proxy, MessagingMsg::External(out));
    }

    /// The proxy process `from` uses.
    fn proxy_for(&self, from: Pid) -> Option<NodeId> {
        let n = self.proxies.len() as u64;
        (n > 0).then(|| {
            let i = crate::mix::splitmix64(from.sequence()) % n;
            self.proxies[i as usize]
        })
    }

    /// At a proxy: hands `data` to the driver on the connection of `key`.
    fn carry(
        &mut self,
        now: Time,
        key: ConnKey,
        data: Vec<u8>,
        post: &mut Post,
    ) -> Result<(), SendError> {
        let conn = match self.conns.get(&key) {
            Some(c) => *c,
            None => {
                if self.conns.len() >= MAX_CONNS {
                    let oldest = self
                        .by_conn
                        .iter()
                        .min_by_key(|(c, (_, used))| (*used, **c))
                        .map(|(c, _)| *c);
                    if let Some(c) = oldest {
                        self.forget(c);
                        post.push(ServiceOutput::External(ExternalCommand::Close { conn: c }));
                    }
                }
                self.next_conn += 1;
                self.conns.insert(key.clone(), self.next_conn);
                self.next_conn
            }
        };
        let (host, port) = (key.2.clone(), key.3);
        self.by_conn.insert(conn, (key, now));
        post.push(ServiceOutput::External(ExternalCommand::Send {
            conn,
            host,
            port,
            data,
        }));
        Ok(())
    }

    fn forget(&mut self, conn: u64) {
        if let Some((key, _)) = self.by_conn.remove(&conn) {
            self.conns.remove(&key);
        }
    }

    /// A sub-message from agent `from` (validated).
    pub fn handle_message(&mut self, now: Time, from: NodeId, msg: ExternalMsg, post: &mut Post) {
        match msg {
            ExternalMsg::Out {
                tag,
                tenant,
                from: pid,
                host,
                port,
                data,
            } => {
                // An agent speaks only for its own processes.
                if pid.origin() != from {
                    return;
                }
                let result = if self.is_proxy() {
                    self.carry(now, (tenant, pid, host, port), data, post)
                } else {
                    Err(SendError::Unsupported)
                };
                let taken = ExternalMsg::Taken { tag, result };
                post.send_msg(from, MessagingMsg::External(taken));
            }
            ExternalMsg::Taken { tag, result } => {
                if let Some((request, deadline)) = self.waiting.remove(&tag) {
                    self.timers.remove(&(deadline, tag));
                    post.reply(request, ApiReply::Sent(result.map(|()| one())));
                }
            }
            ExternalMsg::Back {
                tenant,
                to,
                host,
                port,
                data,
            } => {
                if self.proxies.contains(&from) && to.origin() == self.me {
                    let body = MailBody::External { host, port, data };
                    post.deliver_local((tenant, to, to), 0, body, DistanceClass::External);
                }
            }
        }
    }

    /// At a proxy: the driver reported on a connection.
    pub fn handle_event(&mut self, now: Time, event: ExternalEvent, post: &mut Post) {
        match event {
            ExternalEvent::Data { conn, data } => {
                let Some(((tenant, to, host, port), used)) = self.by_conn.get_mut(&conn) else {
                    return;
                };
                *used = now;
                let (tenant, to, host, port) = (*tenant, *to, host.clone(), *port);
                if data.len() > MAX_DATA_BYTES {
                    return;
                }
                if to.origin() == self.me {
                    let body = MailBody::External { host, port, data };
                    post.deliver_local((tenant, to, to), 0, body, DistanceClass::External);
                } else {
                    let back = ExternalMsg::Back {
                        tenant,
                        to,
                        host,
                        port,
                        data,
                    };
                    post.send_msg(to.origin(), MessagingMsg::External(back));
                }
            }
            ExternalEvent::Closed { conn } => self.forget(conn),
        }
    }

    /// Sends whose proxy never answered end `Unknown`.
    pub fn handle_timeout(&mut self, now: Time, post: &mut Post) {
        while let Some((t, tag)) = self.timers.first().copied() {
            if t > now {
                break;
            }
            self.timers.remove(&(t, tag));
            if let Some((request, _)) = self.waiting.remove(&tag) {
                post.reply(request, ApiReply::Sent(Err(SendError::Unknown)));
            }
        }
    }

    /// Its next deadline.
    #[must_use]
    pub fn next_timeout(&self) -> Option<Time> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// The module's invariants.
    #[must_use]
    pub fn invariants(&self) -> bool {
        self.timers.len() == self.waiting.len()
            && self.waiting.len() <= MAX_WAITING
            && self.conns.len() == self.by_conn.len()
            && self.conns.len() <= MAX_CONNS
    }
}

/// A successful external send reached one place: the proxy.
fn one() -> SendReceipt {
    SendReceipt { reached: 1 }
}
