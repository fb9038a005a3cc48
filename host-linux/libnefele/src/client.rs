//! The Rust client: one authenticated connection to the local agent.
//!
//! A [`Client`] speaks [`crate::proto`] over a blocking Unix stream. Each call
//! sends one `Call` frame and reads frames until the `Reply` with its id; calls
//! are made one at a time (`&mut self`), so replies cannot interleave. Every
//! failure is a typed [`ClientError`]: the transport (I/O, with the socket
//! path), the protocol, or the core's own typed answer (`SpawnError`,
//! `KillError`, …), so a caller can match on what went wrong.
//!
//! Invariant: no reply larger than [`MAX_REPLY_BYTES`] is ever allocated; a
//! length prefix over it is refused before its payload is read.
//!
//! # Endpoints: how a process started by Nefele finds its agent
//! The agent starts every process with one end of a Unix socket pair open on the
//! descriptor named by `NEFELE_FD` (and its own pid, as text, in `NEFELE_PID`).
//! That socket is already the process's connection: it needs no path in the file
//! system (the process's mount and network namespaces show none of the host's),
//! no token, and it is scoped to that one process: a messaging call on it that
//! names another pid is refused. [`Client::connect_default`] uses it when
//! `NEFELE_FD` is set, so the same program runs inside Nefele (as itself) and
//! outside (with a token, acting as a process named by [`Client::act_as`]). The
//! descriptor is inherited by the process's children (a shell script's commands
//! may each open it in turn, one at a time: the agent answers each new `Hello`);
//! one program takes it at most once ([`Client::from_endpoint`]).
//!
//! # When the agent restarts
//! The endpoint dies with the agent that held its other end. A process started by
//! Nefele is also told its agent socket (`NEFELE_AGENT_ADDR`, see
//! [`crate::reconnect`]), where the next life of its agent identifies it by the
//! kernel's word (its cgroup), not by anything it sends; a tenant connection
//! ([`Client::connect`]) goes back to the socket path it connected to and says its
//! token again (so a one-shot call whose agent dies under it waits for the
//! agent's next life, up to the patience). When the connection
//! breaks, the client connects there again (retrying for at most
//! [`Client::set_reconnect_patience`], one minute by default, then
//! [`ClientError::AgentGone`]), and registers again its names, joins again its
//! groups, subscribes again to its topics and monitors again the processes it
//! watched (what fails is kept for [`Client::take_restore_failures`]). Only what
//! this client made is made again: a name registered by another program of the
//! process that has ended since (`nef register` in a script) is lost with the
//! agent's old life. What was in flight:
//! - the mailbox of the agent's old life is lost, with every message in it not yet
//!   received; a receive that was waiting is made again on the new connection;
//! - a send whose fate had not come fails `Send(Unknown)` (it may or may not have
//!   arrived), as do the [`Client::send_async`] fates owed;
//! - a read-only call (ps, info, wait, whereis, distance, members, supervisors) is
//!   made again; any other call that was written fails
//!   [`ClientError::AgentRestarted`] (its effect is unknown: look before trying
//!   again); a call whose write failed had no effect and is made again;
//! - the pid stays the same; an armed receive is armed again, and the poll loop's
//!   descriptor ([`AsRawFd`]) stays the same ([`Client::reconnects`] counts the
//!   reconnections).
//!
//! Messages sent to the process while its agent was down fail at their senders'
//! agents (unreachable host: `Unknown`), and a name may resolve to nothing for up
//! to the names service's refresh period (30 s) after the restart in a
//! multi-agent cluster.
//!
//! # Receiving in a poll loop
//! [`Client::arm`] asks the agent for the next mail without waiting for it; the
//! client's descriptor ([`std::os::fd::AsRawFd`], an epoll instance over the
//! agent connection and the links made to this process) turns readable when the
//! answer comes or a link brings something, and [`Client::take_armed`] reads it.
//! Another call made meanwhile may read that answer first, and a link may hold
//! more than one take gave: both are kept, and [`Client::armed_ready`] says so
//! (check it before sleeping in `poll`). A `Down` held behind a link whose
//! opener's end stays open past its hold comes at the next take. While links
//! are made to this process, the descriptor may also turn readable once with
//! nothing to take, when the deadline of an earlier receive passes (receives
//! over links wait on the same descriptor and leave their deadline on its
//! timer, which spares a timer per wait): `take_armed` then returns nothing.
//!
//! # Links
//! [`Client::link`] makes a direct link from this process to another (sealed end to end
//! across hosts; [`crate::link`] says how and what it promises): later at-most-once sends to it
//! skip both agents. The receiving client reads links inside `recv`,
//! `try_recv` and `take_armed`, together with its mailbox: while a link is made
//! to it, a waiting receive arms a receive at the agent and polls both, and that
//! armed receive stays out for the next one; a poll loop's descriptor covers the
//! links too. Links survive a reconnection to the agent (they do not go through
//! it).
//!
//! # Sending without waiting for the fate
//! [`Client::send`] returns once the message's fate is known (the receiving agent
//! has put it in the mailbox, or why not), a round trip to the receiver's host.
//! [`Client::send_async`] returns once the call is written to the agent, which
//! takes a connection's calls in the order written, so a program's sends keep
//! their order; each fate comes back later and is kept until
//! [`Client::take_fates`] (or [`Client::settle`], which waits for all). At most
//! [`MAX_ASYNC_SENDS`] fates may be owed: the next `send_async` first reads fates
//! until one comes. [`Client::send_batch`] writes many such sends in one write.
//!
//! Replies are read into a buffer, many to a system call; before a call returns,
//! every whole reply already read is put where it belongs (the armed receive's
//! answer, a fate), so the descriptor's readability and [`Client::armed_ready`]
//! stay exact for a poll loop.

use crate::link;
use crate::links::{Links, Reads};
use crate::poller::{Poller, Readable};
use crate::proto::LinkRefused;
use crate::proto::{
    self, AgentFrame, Call, ClientFrame, MembersView, ProtocolError, Reply, MAX_REPLY_BYTES,
    MAX_REQUEST_BYTES, PROTOCOL_VERSION,
};
use crate::reconnect::{AgentAddr, Reconnect};
use nefele_api::calls::ApiReply;
use nefele_api::ids::{NodeId, Pid, TenantId};
use nefele_api::messaging::{
    Delivery, Dest, DistanceInfo, GroupError, Mail, MailBody, MonitorError, MsgError, NameError,
    RecvError, SendError, SendReceipt,
};
use nefele_api::replies::{InfoError, KillError, ProcInfo, PsReply, SpawnError, WaitError};
use nefele_api::spec::{ExitStatus, ProcSpec, Signal};
use nefele_api::supervision::{
    SupervisedSpawn, SupervisionError, SupervisionSpec, SupervisorId, SupervisorInfo,
};
use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Where the agent listens when nothing else is said.
pub const DEFAULT_SOCKET: &str = "/run/nefele/api.sock";
/// The environment variable naming the socket.
pub const SOCKET_ENV: &str = "NEFELE_SOCKET";
/// The environment variable holding the tenant token.
pub const TOKEN_ENV: &str = "NEFELE_TOKEN";
/// The environment variable naming the inherited endpoint descriptor of a process
/// started by Nefele (see the module docs).
pub const FD_ENV: &str = "NEFELE_FD";
/// The environment variable holding the pid of a process started by Nefele.
pub const PID_ENV: &str = "NEFELE_PID";
/// How long an armed receive ([`Client::arm`]) waits at the agent before it
/// answers with no mail (the caller arms again).
pub const ARM_WAIT: Duration = Duration::from_secs(60);

/// At most this many [`Client::send_async`] fates are owed at once (under the
/// agent's calls per connection, so a client that writes sends never waits on an
/// agent that waits for it to read fates).
pub const MAX_ASYNC_SENDS: usize = 256;
/// A message for a link and its `send_async` id.
type LinkedSend<'a> = (&'a [u8], Option<u64>);

/// How long a send on a link waits for its receiver to take the message before
/// it fails `Unknown` (the message stays on the link, and may still be taken).
pub const LINK_PATIENCE: Duration = Duration::from_secs(30);
/// How much a client reads in one system call.
const READ_CHUNK: usize = 64 * 1024;

/// Whether this program has taken its endpoint descriptor already.
static ENDPOINT_TAKEN: AtomicBool = AtomicBool::new(false);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached, or the connection broke.
    #[error("{path}: {source}")]
    Io {
        /// The agent's socket.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The agent refused the connection or a frame.
    #[error("the agent refused: {0}")]
    Protocol(#[from] ProtocolError),
    /// The agent answered something that does not fit the call.
    #[error("unexpected answer from the agent: {0}")]
    Unexpected(String),
    /// A spawn failed; nothing of it is left running.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// A kill failed.
    #[error(transparent)]
    Kill(#[from] KillError),
    /// An info failed.
    #[error(transparent)]
    Info(#[from] InfoError),
    /// A wait failed.
    #[error(transparent)]
    Wait(#[from] WaitError),
    /// A send failed.
    #[error(transparent)]
    Send(#[from] SendError),
    /// A receive failed.
    #[error(transparent)]
    Recv(#[from] RecvError),
    /// A name call failed.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A group or topic call failed.
    #[error(transparent)]
    Group(#[from] GroupError),
    /// A monitor call failed.
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    /// A messaging query failed.
    #[error(transparent)]
    Msg(#[from] MsgError),
    /// A messaging call on a connection that acts as no process: outside Nefele,
    /// name one with [`Client::act_as`].
    #[error("no process to act as: outside Nefele, name one of your tenant's processes on this agent's host")]
    NoProcess,
    /// `NEFELE_FD` is not set, not a descriptor number, not a socket, or was taken
    /// already by this program.
    #[error("no Nefele endpoint: {0}")]
    NoEndpoint(String),
    /// A supervision call failed.
    #[error(transparent)]
    Supervision(#[from] SupervisionError),
    /// The agent restarted while this call was in flight: whether it took effect is
    /// unknown. The connection is made again; look before trying again.
    #[error("the agent restarted during the call; its effect is unknown (connected again)")]
    AgentRestarted,
    /// No link could be made to the process ([`Client::link`]); sends to it go
    /// through the agents as before.
    #[error("no link: {0}")]
    LinkUnavailable(String),
    /// The connection broke and the agent could not be reached again.
    #[error("the agent is gone: not reached again at {addr} within {waited:?}: {last}")]
    AgentGone {
        /// The agent socket tried.
        addr: String,
        /// How long it was tried.
        waited: Duration,
        /// The last failure.
        last: String,
    },
}

/// How a send is made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// At-most-once (the default) or reliable.
    pub delivery: Delivery,
    /// Fail `Full` at a full mailbox instead of waiting for room (the default waits,
    /// so a slow receiver slows its senders).
    pub no_block: bool,
}

/// The socket path: `NEFELE_SOCKET` if set, else [`DEFAULT_SOCKET`].
#[must_use]
pub fn default_socket() -> PathBuf {
    std::env::var_os(SOCKET_ENV).map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from)
}

/// A placed spawn request: every pid in spec order, and the `spread` tags whose
/// processes share racks (not enough racks had room; they are on distinct hosts).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placed {
    /// The pids, in spec order.
    pub pids: Vec<Pid>,
    /// The `spread` tags that could not be spread across racks.
    pub unspread: Vec<String>,
}

/// One authenticated connection to the local agent.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    path: PathBuf,
    tenant: TenantId,
    node: NodeId,
    /// The process this connection's endpoint is scoped to, if any.
    scope: Option<Pid>,
    /// The process messaging calls act for.
    me: Option<Pid>,
    next_id: u64,
    /// The id of the armed receive, if one is out.
    armed: Option<u64>,
    /// The armed receive's answer, read by another call.
    armed_answer: Option<Reply>,
    /// The ids of the `send_async` calls whose fate has not come.
    owed: std::collections::BTreeSet<u64>,
    /// Fates come, not yet taken: (the id `send_async` returned, the fate).
    fates: Vec<(u64, Result<SendReceipt, SendError>)>,
    /// Bytes read from the agent, not yet taken as frames: `rbuf[rpos..]`.
    rbuf: Vec<u8>,
    rpos: usize,
    /// The most messages the armed receive takes.
    armed_max: u32,
    /// How to reach the agent again (a process's endpoint that was told its agent
    /// socket), and what to make again there.
    reconnect: Option<Reconnect>,
    /// What could not be made again after a reconnection.
    restore_failures: Vec<(String, ClientError)>,
    /// The links this client opened and those made to it ([`crate::link`]).
    links: Links,
    /// Descriptors the agent attached to replies read (a link's end), oldest first.
    fds: VecDeque<OwnedFd>,
    /// The armed receive was made by a receive over links (not by [`Client::arm`]).
    links_armed: bool,
    /// Messages taken from the mailbox beyond what a receive asked for.
    held: VecDeque<Mail>,
    /// What a poll loop waits on: the agent connection and the links made to
    /// this process ([`AsRawFd`]).
    poller: Poller,
}

/// A first call id unlike the last program's on the same endpoint, so that a late
/// answer to a call of a program that used the endpoint before is never taken for
/// an answer of this one.
fn first_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ (u64::from(std::process::id()) << 40)) | 1
}

impl Client {
    /// Connects to the agent at `path` and authenticates with `token` (or, without
    /// one, by the caller's uid).
    ///
    /// The connection is made again, to the same path with the same token, when it
    /// breaks (see the module docs): the agent's restart costs what was in flight,
    /// not the client.
    pub fn connect(path: impl AsRef<Path>, token: Option<&str>) -> Result<Client, ClientError> {
        let path = path.as_ref().to_path_buf();
        let stream = UnixStream::connect(&path).map_err(|source| ClientError::Io {
            path: path.clone(),
            source,
        })?;
        let mut client = Client::greet(stream, path.clone(), token)?;
        client.reconnect = Some(Reconnect::new(AgentAddr::Path(path)).with_token(token));
        Ok(client)
    }

    /// The connection of a process started by Nefele: the endpoint descriptor its
    /// agent handed it (`NEFELE_FD`), scoped to that process (see the module docs).
    /// A program takes its endpoint at most once.
    pub fn from_endpoint() -> Result<Client, ClientError> {
        let text = std::env::var(FD_ENV)
            .map_err(|_| ClientError::NoEndpoint(format!("{FD_ENV} is not set")))?;
        let fd: RawFd = text
            .parse()
            .ok()
            .filter(|fd| *fd > 2)
            .ok_or_else(|| ClientError::NoEndpoint(format!("{FD_ENV}={text:?}")))?;
        if ENDPOINT_TAKEN.swap(true, Ordering::SeqCst) {
            return Err(ClientError::NoEndpoint(
                "taken already by this program".into(),
            ));
        }
        let stream = crate::endpoint::adopt(fd).map_err(|source| ClientError::Io {
            path: PathBuf::from(format!("fd {fd}")),
            source,
        })?;
        let path = PathBuf::from(format!("{FD_ENV}={fd}"));
        Client::over_endpoint(stream, path, Reconnect::from_env())
    }

    /// A process's connection over `stream`, which reconnects as `reconnect` says
    /// when it breaks (also at once, if the agent that handed out `stream` is gone).
    pub fn over_endpoint(
        stream: UnixStream,
        path: PathBuf,
        reconnect: Option<Reconnect>,
    ) -> Result<Client, ClientError> {
        let mut client = Client::unwelcomed(stream, path)?;
        client.reconnect = reconnect;
        match client.hello(None) {
            Err(e) if client.broken(&e) => client.recover()?,
            other => other?,
        }
        client.me = client.scope;
        Ok(client)
    }

    fn unwelcomed(stream: UnixStream, path: PathBuf) -> Result<Client, ClientError> {
        let poller =
            Poller::new((0, 0), &[stream.as_raw_fd()]).map_err(|source| ClientError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(Client {
            poller,
            stream,
            path,
            tenant: TenantId(0),
            node: NodeId(0),
            scope: None,
            me: None,
            next_id: first_id(),
            armed: None,
            armed_answer: None,
            owed: std::collections::BTreeSet::new(),
            fates: Vec::new(),
            rbuf: Vec::new(),
            rpos: 0,
            armed_max: 0,
            reconnect: None,
            restore_failures: Vec::new(),
            links: Links::new(link::MAX_DATA),
            fds: VecDeque::new(),
            links_armed: false,
            held: VecDeque::new(),
        })
    }

    fn greet(
        stream: UnixStream,
        path: PathBuf,
        token: Option<&str>,
    ) -> Result<Client, ClientError> {
        let mut client = Client::unwelcomed(stream, path)?;
        client.hello(token)?;
        client.me = client.scope;
        Ok(client)
    }

    /// Says `Hello` and reads the `Welcome`.
    fn hello(&mut self, token: Option<&str>) -> Result<(), ClientError> {
        self.write_frame(&ClientFrame::Hello {
            version: PROTOCOL_VERSION,
            token: token.map(str::to_owned),
        })?;
        loop {
            match self.receive()? {
                AgentFrame::Welcome {
                    tenant, node, pid, ..
                } => {
                    self.tenant = tenant;
                    self.node = node;
                    self.scope = pid;
                    return Ok(());
                }
                // A late answer to a program that used this endpoint before.
                AgentFrame::Reply { .. } => {}
                AgentFrame::Error(e) => return Err(e.into()),
            }
        }
    }

    /// Whether `e` is the connection breaking, on a client that can reconnect.
    fn broken(&self, e: &ClientError) -> bool {
        use std::io::ErrorKind as K;
        self.reconnect.is_some()
            && matches!(e, ClientError::Io { source, .. } if matches!(
                source.kind(),
                K::UnexpectedEof | K::BrokenPipe | K::ConnectionReset | K::ConnectionAborted | K::NotConnected
            ))
    }

    /// Connects to the agent again and makes again what this client had made (see
    /// the module docs). The owed fates become `Unknown`; an armed receive is armed
    /// again under its id.
    fn recover(&mut self) -> Result<(), ClientError> {
        let Some(reconnect) = self.reconnect.take() else {
            return Err(ClientError::NoEndpoint(
                "no agent socket to reconnect to".into(),
            ));
        };
        let started = Instant::now();
        let deadline = started + reconnect.patience;
        let expected = self.scope;
        let path = self.path.clone();
        let connected = reconnect.connect(deadline, |stream, left| {
            let io = |source| ClientError::Io {
                path: path.clone(),
                source,
            };
            let stream = stream.map_err(io)?;
            stream
                .set_read_timeout(Some(left))
                .map_err(|source| ClientError::Io {
                    path: path.clone(),
                    source,
                })?;
            let mut fresh = Client::unwelcomed(stream, path.clone())?;
            fresh.hello(reconnect.token.as_deref())?;
            if expected.is_some() && fresh.scope != expected {
                return Err(ClientError::Unexpected(format!(
                    "welcomed as {:?}, not as {expected:?}",
                    fresh.scope
                )));
            }
            fresh
                .stream
                .set_read_timeout(None)
                .map_err(|e| fresh.io(e))?;
            Ok::<_, ClientError>(fresh)
        });
        let fresh = match connected {
            Ok(fresh) => fresh,
            Err(last) => {
                let gone = ClientError::AgentGone {
                    addr: reconnect.addr.to_string(),
                    waited: started.elapsed(),
                    last: last.to_string(),
                };
                self.reconnect = Some(reconnect);
                return Err(gone);
            }
        };
        self.stream = fresh.stream;
        self.tenant = fresh.tenant;
        self.node = fresh.node;
        self.scope = fresh.scope;
        self.rbuf.clear();
        self.rpos = 0;
        // They came with answers of the broken connection; links stay.
        self.fds.clear();
        for id in std::mem::take(&mut self.owed) {
            self.fates.push((id, Err(SendError::Unknown)));
        }
        let mut reconnect = reconnect;
        reconnect.count += 1;
        // Restored without reconnecting again from inside (a second break fails
        // the call; the next one reconnects).
        self.reconnect = Some(reconnect);
        // The poll loop's descriptor watches the new connection.
        self.watch_links()?;
        let mut reconnect = self.reconnect.take().expect("just put");
        let (kept, broken) = self.restore(std::mem::take(&mut reconnect.restore));
        reconnect.restore = kept;
        self.reconnect = Some(reconnect);
        if let Some(e) = broken {
            return Err(e);
        }
        if let (Some(id), None) = (self.armed, &self.armed_answer) {
            let pid = self.acting()?;
            let call = Call::Recv {
                pid,
                max: self.armed_max,
                wait: Some(ARM_WAIT),
            };
            self.write_frame(&ClientFrame::Call { id, call })?;
        }
        Ok(())
    }

    /// Makes again what `restore` lists; answers what was made again (and what
    /// could not be tried for a broken connection, with its error), and keeps what
    /// failed in `restore_failures`.
    fn restore(
        &mut self,
        restore: crate::reconnect::Restore,
    ) -> (crate::reconnect::Restore, Option<ClientError>) {
        let crate::reconnect::Restore {
            names,
            groups,
            topics,
            monitors,
        } = restore;
        let mut kept = crate::reconnect::Restore::default();
        let mut broken = None;
        let mut outcome = |this: &mut Client, what: String, r: Result<(), ClientError>| -> bool {
            match r {
                Ok(()) => true,
                Err(e @ (ClientError::Io { .. } | ClientError::Protocol(_))) => {
                    broken.get_or_insert(e);
                    true
                }
                Err(e) => {
                    this.restore_failures.push((what, e));
                    false
                }
            }
        };
        for name in names {
            let r = self.register(&name);
            if outcome(self, format!("register {name}"), r) {
                kept.names.insert(name);
            }
        }
        for group in groups {
            let r = self.join(&group);
            if outcome(self, format!("join {group}"), r) {
                kept.groups.insert(group);
            }
        }
        for topic in topics {
            let r = self.subscribe(&topic);
            if outcome(self, format!("subscribe {topic}"), r) {
                kept.topics.insert(topic);
            }
        }
        for watched in monitors {
            let r = self.monitor(watched);
            if outcome(self, format!("monitor {watched}"), r) {
                kept.monitors.insert(watched);
            }
        }
        (kept, broken)
    }

    /// How many times this client connected to its agent again.
    #[must_use]
    pub fn reconnects(&self) -> u64 {
        self.reconnect.as_ref().map_or(0, |r| r.count)
    }

    /// What could not be made again after the reconnections so far (a name taken
    /// meanwhile, a watched process gone), each with what was tried; taken.
    pub fn take_restore_failures(&mut self) -> Vec<(String, ClientError)> {
        std::mem::take(&mut self.restore_failures)
    }

    /// How long to try to reach the agent again when the connection breaks.
    pub fn set_reconnect_patience(&mut self, patience: Duration) {
        if let Some(r) = &mut self.reconnect {
            r.patience = patience;
        }
    }

    /// Records (or forgets) what to make again after a reconnection.
    fn remember(&mut self, edit: impl FnOnce(&mut crate::reconnect::Restore)) {
        if let Some(r) = &mut self.reconnect {
            edit(&mut r.restore);
        }
    }

    /// The process's own endpoint when `NEFELE_FD` is set (inside Nefele); else
    /// [`default_socket`] with the token from `NEFELE_TOKEN` if set.
    pub fn connect_default() -> Result<Client, ClientError> {
        if std::env::var_os(FD_ENV).is_some() {
            return Client::from_endpoint();
        }
        let token = std::env::var(TOKEN_ENV).ok();
        Client::connect(default_socket(), token.as_deref())
    }

    /// The process this connection's messaging calls act for: its own on a
    /// process endpoint, else the one named by [`Client::act_as`].
    #[must_use]
    pub fn me(&self) -> Option<Pid> {
        self.me
    }

    /// The process this connection is scoped to (its endpoint's), if any.
    #[must_use]
    pub fn scope(&self) -> Option<Pid> {
        self.scope
    }

    /// Makes messaging calls act for `pid` (a process of this tenant on the
    /// agent's host). On a process endpoint every other pid is refused by the agent.
    pub fn act_as(&mut self, pid: Pid) {
        self.me = Some(pid);
    }

    /// The tenant this connection acts for.
    #[must_use]
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The agent answering.
    #[must_use]
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Starts one process.
    pub fn spawn(&mut self, spec: &ProcSpec) -> Result<Pid, ClientError> {
        let pids = self.spawned(Call::Spawn(spec.clone()))?;
        pids.first()
            .copied()
            .ok_or_else(|| ClientError::Unexpected("a spawn answered no pid".into()))
    }

    /// Starts `n` identical processes, atomically: all or none.
    pub fn n_spawn(&mut self, n: u32, spec: &ProcSpec) -> Result<Vec<Pid>, ClientError> {
        Ok(self.n_spawn_placed(n, spec)?.pids)
    }

    /// Starts different processes, atomically: all or none. Pids come in spec order.
    pub fn c_spawn(&mut self, specs: &[ProcSpec]) -> Result<Vec<Pid>, ClientError> {
        Ok(self.c_spawn_placed(specs)?.pids)
    }

    /// As [`Client::n_spawn`], with the `spread` tags placement could not spread
    /// across racks.
    pub fn n_spawn_placed(&mut self, n: u32, spec: &ProcSpec) -> Result<Placed, ClientError> {
        self.placed(Call::NSpawn {
            n,
            spec: spec.clone(),
        })
    }

    /// As [`Client::c_spawn`], with the `spread` tags placement could not spread
    /// across racks.
    pub fn c_spawn_placed(&mut self, specs: &[ProcSpec]) -> Result<Placed, ClientError> {
        self.placed(Call::CSpawn(specs.to_vec()))
    }

    /// Delivers `signal` to `pid` and its descendants.
    pub fn kill(&mut self, pid: Pid, signal: Signal) -> Result<(), ClientError> {
        match self.api(Call::Kill { pid, signal })? {
            ApiReply::Killed(r) => Ok(r?),
            other => Err(mismatch("kill", &other)),
        }
    }

    /// The entry of `pid`.
    pub fn info(&mut self, pid: Pid) -> Result<ProcInfo, ClientError> {
        match self.api(Call::Info(pid))? {
            ApiReply::Info(r) => Ok(r?),
            other => Err(mismatch("info", &other)),
        }
    }

    /// Every process of this tenant in the cluster.
    pub fn ps(&mut self) -> Result<PsReply, ClientError> {
        match self.api(Call::Ps)? {
            ApiReply::Ps(r) => Ok(r),
            other => Err(mismatch("ps", &other)),
        }
    }

    /// Blocks until `pid` ends, and says how.
    pub fn wait(&mut self, pid: Pid) -> Result<ExitStatus, ClientError> {
        match self.api(Call::Wait(pid))? {
            ApiReply::Waited(r) => Ok(r?),
            other => Err(mismatch("wait", &other)),
        }
    }

    /// Spawns under a new supervisor, run by the agent called; answers its id and
    /// the pids in spec order.
    pub fn spawn_supervised(
        &mut self,
        spawn: SupervisedSpawn,
        supervision: SupervisionSpec,
    ) -> Result<(SupervisorId, Vec<Pid>), ClientError> {
        let spawn = Box::new(spawn);
        match self.api(Call::SpawnSupervised { spawn, supervision })? {
            ApiReply::SpawnedSupervised(r) => Ok(r?),
            other => Err(mismatch("spawn_supervised", &other)),
        }
    }

    /// The supervisors the agent called runs for this tenant, with their children
    /// and restart history.
    pub fn supervisors(&mut self) -> Result<Vec<SupervisorInfo>, ClientError> {
        match self.api(Call::Supervisors)? {
            ApiReply::Supervisors(list) => Ok(list),
            other => Err(mismatch("supervisors", &other)),
        }
    }

    /// Stops a supervisor the agent called runs, and every child of it.
    pub fn stop_supervisor(&mut self, id: SupervisorId) -> Result<(), ClientError> {
        match self.api(Call::StopSupervisor(id))? {
            ApiReply::SupervisorStopped(r) => Ok(r?),
            other => Err(mismatch("stop_supervisor", &other)),
        }
    }

    /// The federation groups of the answering agent.
    pub fn members(&mut self) -> Result<MembersView, ClientError> {
        match self.call(Call::Members)? {
            Reply::Members(m) => Ok(m),
            Reply::Api(other) => Err(mismatch("members", &other)),
            Reply::Link(_) | Reply::LinkMade(_) => {
                Err(ClientError::Unexpected("a link for members".into()))
            }
        }
    }

    fn acting(&self) -> Result<Pid, ClientError> {
        self.me.ok_or(ClientError::NoProcess)
    }

    /// Sends `data` to `to`, waiting for room at a full mailbox, at most once.
    /// Returns once the message's fate is known.
    pub fn send(&mut self, to: impl Into<Dest>, data: &[u8]) -> Result<SendReceipt, ClientError> {
        self.send_with(to, data, SendOptions::default())
    }

    /// Sends `data` to `to` as `options` say.
    pub fn send_with(
        &mut self,
        to: impl Into<Dest>,
        data: &[u8],
        options: SendOptions,
    ) -> Result<SendReceipt, ClientError> {
        let to = to.into();
        if let Some(p) = self.on_link(&to, options) {
            if let Some(sent) = self.send_on_link(p, data, options)? {
                return Ok(sent);
            }
        }
        let call = self.send_call(to, data, options)?;
        match self.api(call)? {
            ApiReply::Sent(r) => Ok(r?),
            other => Err(mismatch("send", &other)),
        }
    }

    /// The receiver, when a send to `to` goes on a link. A send that goes through
    /// the agents to a process this one links to closes that link first (its
    /// messages all taken), so that neither overtakes the other: a reliable send
    /// to a linked process closes its link; a send to a name, a group, a topic or
    /// the whole tenant, which may reach any of them, closes every link.
    fn on_link(&mut self, to: &Dest, options: SendOptions) -> Option<Pid> {
        if self.closes_links(to, options) {
            match *to {
                Dest::Pid(p) => self.unlink(p),
                _ => {
                    for p in self.links.opened_to() {
                        self.unlink(p);
                    }
                }
            }
            return None;
        }
        match *to {
            Dest::Pid(p) if self.links.has(p) => Some(p),
            _ => None,
        }
    }

    /// Whether a send to `to` closes links first (see [`Client::on_link`]).
    fn closes_links(&self, to: &Dest, options: SendOptions) -> bool {
        match to {
            Dest::Pid(p) => self.links.has(*p) && options.delivery == Delivery::Reliable,
            Dest::External { .. } => false,
            Dest::Name(_) | Dest::Group { .. } | Dest::Topic(_) | Dest::Broadcast => {
                self.links.any_opened()
            }
        }
    }

    /// Sends `data` on the link to `to`, waiting for the receiver to take it;
    /// `None` when the link turned out to be gone (the send is then made through
    /// the agents, which know why).
    fn send_on_link(
        &mut self,
        to: Pid,
        data: &[u8],
        options: SendOptions,
    ) -> Result<Option<SendReceipt>, ClientError> {
        if data.len() > link::MAX_DATA {
            return Err(SendError::TooLarge.into());
        }
        if options.no_block && !self.links.has_room(to) {
            return Err(SendError::Full.into());
        }
        let n = match self.links.send(to, [(data, None)]) {
            Ok(n) => n,
            Err((_, fates)) => {
                self.put_link_fates(fates);
                return Ok(None);
            }
        };
        let waited = self.links.wait_delivered(to, n, LINK_PATIENCE);
        let (result, fates) = match waited {
            Ok(fates) => (Ok(Some(SendReceipt { reached: 1 })), fates),
            Err((e, fates)) => (Err(e.into()), fates),
        };
        self.put_link_fates(fates);
        result
    }

    /// Keeps the fates of `send_async`s settled on links for [`Client::take_fates`].
    fn put_link_fates(&mut self, fates: Vec<crate::links::Fate>) {
        self.fates.extend(
            fates
                .into_iter()
                .map(|(id, r)| (id, r.map(|()| SendReceipt { reached: 1 }))),
        );
    }

    /// Links this process to `to` ([`crate::link`]): its later at-most-once sends
    /// to `to` go on a direct connection between the two processes, which their
    /// agents made and checked, instead of through the agents. Each keeps its
    /// order after the sends made before, and its fate: a send returns once `to`
    /// has taken the message (a stronger promise than in its mailbox), or fails
    /// `Unknown` after [`LINK_PATIENCE`] or when the link breaks. A reliable send
    /// to `to` closes the link first. `to`'s client reads the link with its mail
    /// (`recv`, `try_recv`). Linking to a linked process does nothing.
    ///
    /// # Errors
    /// As a send to `to` would fail (a process of no tenant of this one, ended,
    /// or whose host did not answer), or [`ClientError::LinkUnavailable`].
    pub fn link(&mut self, to: Pid) -> Result<(), ClientError> {
        if self.links.has(to) {
            return Ok(());
        }
        let from = self.acting()?;
        match self.call(Call::Link { from, to })? {
            Reply::LinkMade(made) => {
                let sock = self.link_end()?;
                self.links.opened(to, sock, made.token, made.key);
                Ok(())
            }
            Reply::Link(Err(LinkRefused::Marker(e))) => Err(e.into()),
            Reply::Link(Err(e)) => Err(ClientError::LinkUnavailable(e.to_string())),
            other => Err(ClientError::Unexpected(format!(
                "{other:?} in answer to link"
            ))),
        }
    }

    /// Whether `from` has a link open to this process (made, and claimed by this
    /// client when its marker came).
    #[must_use]
    pub fn is_linked_from(&self, from: Pid) -> bool {
        self.links.is_linked_from(from)
    }

    /// Whether this process's sends to `to` go on a link.
    #[must_use]
    pub fn linked(&self, to: Pid) -> bool {
        self.links.has(to)
    }

    /// Closes the link to `to` once `to` has taken every message on it (or
    /// [`LINK_PATIENCE`] passed): later sends to `to` go through the agents.
    pub fn unlink(&mut self, to: Pid) {
        let fates = self.links.close(to, LINK_PATIENCE);
        self.put_link_fates(fates);
    }

    /// The descriptor the agent attached to the link answer just read.
    /// The descriptor of the link answer just read, made blocking (a link's writes
    /// wait for room; its reads never wait, whatever the mode).
    fn link_end(&mut self) -> Result<OwnedFd, ClientError> {
        let end = self.fds.pop_front().ok_or_else(|| {
            ClientError::Unexpected("a link answer without its descriptor".into())
        })?;
        crate::endpoint::set_blocking(&end)
            .map_err(|e| ClientError::Unexpected(format!("a link's descriptor: {e}")))?;
        Ok(end)
    }

    /// The call that sends `data` to `to` through the agents; data for a process
    /// is escaped where it would read as a link's marker (`link::escape`), data for
    /// an external service goes as it is.
    fn send_call(&self, to: Dest, data: &[u8], options: SendOptions) -> Result<Call, ClientError> {
        let data = match to {
            Dest::External { .. } => data.to_vec(),
            _ => link::escape(data).into_owned(),
        };
        Ok(Call::Send {
            from: self.acting()?,
            to,
            data,
            delivery: options.delivery,
            block: !options.no_block,
        })
    }

    /// Sends `data` to `to` as `options` say, without waiting for its fate (see the
    /// module docs): returns the id under which [`Client::take_fates`] gives it.
    pub fn send_async(
        &mut self,
        to: impl Into<Dest>,
        data: &[u8],
        options: SendOptions,
    ) -> Result<u64, ClientError> {
        let to = to.into();
        if let Some(p) = self.on_link(&to, options) {
            if data.len() > link::MAX_DATA {
                return Err(SendError::TooLarge.into());
            }
            let id = self.next_call_id();
            match self.links.send(p, [(data, Some(id))]) {
                Ok(_) => return Ok(id),
                // Gone: through the agents, which know why.
                Err((_, fates)) => self.put_link_fates(fates),
            }
        }
        let call = self.send_call(to, data, options)?;
        let id = self.next_call_id();
        self.send_async_as(id, call)?;
        Ok(id)
    }

    /// Writes the send `call` under `id`, its fate owed.
    fn send_async_as(&mut self, id: u64, call: Call) -> Result<(), ClientError> {
        self.make_room_for(1)?;
        let frame = ClientFrame::Call { id, call };
        match self.write_frame(&frame) {
            // Not written: written again on the new connection.
            Err(e) if self.broken(&e) => {
                self.recover()?;
                self.write_frame(&frame)?;
            }
            other => other?,
        }
        self.owed.insert(id);
        Ok(())
    }

    /// As [`Client::send_async`] for each of `messages` in turn, written to the
    /// agent together (in writes of up to [`MAX_ASYNC_SENDS`] sends). Returns their ids.
    pub fn send_batch<'a>(
        &mut self,
        messages: impl IntoIterator<Item = (Dest, &'a [u8])>,
        options: SendOptions,
    ) -> Result<Vec<u64>, ClientError> {
        let mut ids = Vec::new();
        let mut bytes = Vec::new();
        let mut batch = 0;
        // Messages to linked processes: one write per link, after the loop.
        let mut linked: BTreeMap<Pid, Vec<LinkedSend<'_>>> = BTreeMap::new();
        for (to, data) in messages {
            if !linked.is_empty() && self.closes_links(&to, options) {
                // What the batch put on links goes before the links close.
                self.send_linked(std::mem::take(&mut linked), options)?;
            }
            if let Some(p) = self.on_link(&to, options) {
                if data.len() > link::MAX_DATA {
                    return Err(SendError::TooLarge.into());
                }
                let id = self.next_call_id();
                linked.entry(p).or_default().push((data, Some(id)));
                ids.push(id);
                continue;
            }
            let call = self.send_call(to, data, options)?;
            if batch == MAX_ASYNC_SENDS {
                self.write_owed(&bytes)?;
                (bytes, batch) = (Vec::new(), 0);
            }
            if batch == 0 {
                self.make_room_for(MAX_ASYNC_SENDS)?;
            }
            let id = self.next_call_id();
            let frame = ClientFrame::Call { id, call };
            bytes
                .extend(proto::encode(&frame, MAX_REQUEST_BYTES).map_err(|e| {
                    ProtocolError::Malformed(format!("request not encodable: {e}"))
                })?);
            self.owed.insert(id);
            ids.push(id);
            batch += 1;
        }
        self.write_owed(&bytes)?;
        self.send_linked(linked, options)?;
        Ok(ids)
    }

    /// Writes the batched sends `linked`, one write per link; those whose link
    /// turned out to be gone go through the agents (which know why).
    fn send_linked(
        &mut self,
        linked: BTreeMap<Pid, Vec<LinkedSend<'_>>>,
        options: SendOptions,
    ) -> Result<(), ClientError> {
        for (to, messages) in linked {
            if let Err((_, fates)) = self.links.send(to, messages.iter().copied()) {
                self.put_link_fates(fates);
                for (data, id) in messages {
                    let call = self.send_call(Dest::Pid(to), data, options)?;
                    self.send_async_as(id.expect("a batched send has an id"), call)?;
                }
            }
        }
        Ok(())
    }

    /// Writes sends already counted as owed: if the connection breaks meanwhile,
    /// some may have reached the agent, so all of them are `Unknown` (the
    /// reconnection says so), none written again.
    fn write_owed(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        match self.write_bytes(bytes) {
            Err(e) if self.broken(&e) => self.recover(),
            other => other,
        }
    }

    /// Reads fates until at most `MAX_ASYNC_SENDS - n` are owed.
    fn make_room_for(&mut self, n: usize) -> Result<(), ClientError> {
        while self.owed.len() + n > MAX_ASYNC_SENDS {
            self.read_a_frame()?;
        }
        self.put_away_buffered()
    }

    /// Reads the next frame (blocking) and puts it where it belongs; when the
    /// connection broke, makes it again instead (which makes every owed fate
    /// `Unknown` and arms an armed receive again).
    fn read_a_frame(&mut self) -> Result<(), ClientError> {
        match self.receive() {
            Err(e) if self.broken(&e) => self.recover(),
            other => self.take_frame(other?, None).map(drop),
        }
    }

    /// The fates come since the last call, each with the id `send_async` returned.
    /// It reads what links brought without waiting; a link it found without
    /// acknowledgements it looks at again 200 µs later (its receiver's come
    /// with what that receiver sends back, or when it is about to wait): call
    /// [`Client::settle`] to wait for every fate.
    pub fn take_fates(&mut self) -> Vec<(u64, Result<SendReceipt, SendError>)> {
        let fates = self.links.collect_acks();
        self.put_link_fates(fates);
        std::mem::take(&mut self.fates)
    }

    /// How many `send_async` fates have not come yet.
    #[must_use]
    pub fn fates_owed(&self) -> usize {
        self.owed.len() + self.links.owed()
    }

    /// Waits until every `send_async` fate has come (then in [`Client::take_fates`]).
    pub fn settle(&mut self) -> Result<(), ClientError> {
        self.make_room_for(MAX_ASYNC_SENDS)?;
        let fates = self.links.settle(LINK_PATIENCE);
        self.put_link_fates(fates);
        Ok(())
    }

    /// Publishes `data` to every subscriber of `topic`.
    pub fn publish(&mut self, topic: &str, data: &[u8]) -> Result<SendReceipt, ClientError> {
        self.send(Dest::Topic(topic.to_owned()), data)
    }

    /// Takes up to `max` messages, waiting up to `timeout` for the first (an empty
    /// answer: none came).
    pub fn recv(&mut self, max: u32, timeout: Duration) -> Result<Vec<Mail>, ClientError> {
        self.received(max, Some(timeout))
    }

    /// Takes up to `max` messages already in the mailbox, without waiting.
    pub fn try_recv(&mut self, max: u32) -> Result<Vec<Mail>, ClientError> {
        self.received(max, None)
    }

    fn received(&mut self, max: u32, wait: Option<Duration>) -> Result<Vec<Mail>, ClientError> {
        if self.links.accepts() || self.links_armed || !self.held.is_empty() {
            return self.received_with_links(max, wait);
        }
        let pid = self.acting()?;
        let started = Instant::now();
        let mails = match self.api(Call::Recv { pid, max, wait })? {
            ApiReply::Received(r) => self.sift(r?, max)?,
            other => return Err(mismatch("recv", &other)),
        };
        if mails.is_empty() && self.links.accepts() {
            // All it took was a link's marker: wait on, for the link's messages.
            let left = wait.map(|w| w.saturating_sub(started.elapsed()));
            return self.received_with_links(max, left);
        }
        Ok(mails)
    }

    /// A receive while links are made to this process: their messages and the
    /// mailbox's, whichever come first. The mailbox is asked with an armed
    /// receive, which stays out (and is taken by the next receive) when a link's
    /// message comes first.
    fn received_with_links(
        &mut self,
        max: u32,
        wait: Option<Duration>,
    ) -> Result<Vec<Mail>, ClientError> {
        let Some(wait) = wait else {
            // Without waiting: what the links hold, and what the mailbox holds now.
            let mut mails = self.linked_mail(max, Reads::All)?;
            if mails.is_empty() && !self.links_armed {
                let pid = self.acting()?;
                match self.api(Call::Recv {
                    pid,
                    max,
                    wait: None,
                })? {
                    ApiReply::Received(r) => mails = self.sift(r?, max)?,
                    other => return Err(mismatch("recv", &other)),
                }
            }
            return Ok(mails);
        };
        // First what was read already; then wait on the links and the agent (on
        // the poll loop's epoll instance, until the deadline or a held `Down`'s
        // due time), and read what turns readable: a request's answer costs a
        // wait and a read. The clock is read only once there is something to
        // wait for.
        let mut readable = Readable::new();
        let mut reads = Reads::Nothing;
        let mut until = None;
        loop {
            let mails = self.linked_mail(max, reads)?;
            if !mails.is_empty() {
                return Ok(mails);
            }
            let now = Instant::now();
            // A patience past what the clock can hold waits as long as it can.
            let deadline = *until.get_or_insert_with(|| {
                now.checked_add(wait)
                    .unwrap_or_else(|| now + Duration::from_secs(u64::from(u32::MAX)))
            });
            if now >= deadline {
                return Ok(mails);
            }
            if self.armed.is_none() {
                self.arm(max)?;
                self.links_armed = true;
            }
            // About to wait: the openers get what they are owed first (which may
            // find a link ended: the watch follows).
            self.links.flush_acks();
            self.watch_links()?;
            let wake = self
                .links
                .next_down_due()
                .map_or(deadline, |due| due.min(deadline));
            self.poller
                .wait(wake, now, &mut readable)
                .map_err(|e| self.io(e))?;
            reads = Reads::Readable(&readable);
            if readable.contains(self.stream.as_raw_fd()) {
                self.read_a_frame()?;
                self.put_away_buffered()?;
            }
        }
    }

    /// Up to `max` messages held from an earlier receive, come on links (and
    /// read from those `reads` names), and in the armed receive's answer, in
    /// that order.
    fn linked_mail(&mut self, max: u32, reads: Reads<'_>) -> Result<Vec<Mail>, ClientError> {
        let max = max as usize;
        let mut mails: Vec<Mail> = self.held.drain(..self.held.len().min(max)).collect();
        let room = max - mails.len();
        self.links.take(&mut mails, room, reads);
        if self.links_armed && self.armed_answer.is_some() {
            let answer = self.armed_answer_mails()?;
            self.links_armed = false;
            let room = (max - mails.len()) as u32;
            let sifted = self.sift(answer, room)?;
            mails.extend(sifted);
        }
        self.watch_links()?;
        Ok(mails)
    }

    /// The messages of `mails` for the process, up to `max` (the rest are held for
    /// the next receive): data is unescaped, a link's marker is taken out and its
    /// link claimed (a marker whose end the agent no longer holds is dropped: see
    /// `link`'s module docs), and a `Down` waits behind the messages of a link from
    /// the process it reports. On an error, what was not handed out is held.
    fn sift(&mut self, mails: Vec<Mail>, max: u32) -> Result<Vec<Mail>, ClientError> {
        let mut kept = Vec::with_capacity(mails.len());
        let mut mails = mails.into_iter();
        while let Some(mut mail) = mails.next() {
            // Positions on the pair count what came on links too.
            mail.seq = mail.seq.saturating_add(self.links.seq_shift(mail.from));
            match &mut mail.body {
                MailBody::Data(data) => match link::read_incoming(data) {
                    Some(marker) => match self.claim(mail.from, marker.token) {
                        Ok(Some(sock)) => {
                            self.links.accepted(&mail, sock, marker.token, marker.key);
                        }
                        // Its end is gone (closed unclaimed, or lost with the agent
                        // that held it), and with it the link.
                        Ok(None) | Err(ClientError::AgentRestarted) => {}
                        Err(e) => {
                            self.held.extend(kept);
                            self.held.extend(mails);
                            return Err(e);
                        }
                    },
                    None => kept.push(mail),
                },
                MailBody::Down { .. } => kept.extend(self.links.hold_down(mail)),
                _ => kept.push(mail),
            }
        }
        if kept.len() > max as usize {
            self.held.extend(kept.drain(max as usize..));
        }
        Ok(kept)
    }

    /// The receiving end of the link `from` announced with the marker `token`, or
    /// `None` when the agent holds none for it.
    fn claim(&mut self, from: Pid, token: u64) -> Result<Option<OwnedFd>, ClientError> {
        let pid = self.acting()?;
        match self.call(Call::Claim { pid, from, token })? {
            Reply::Link(Ok(())) => Ok(Some(self.link_end()?)),
            Reply::Link(Err(_)) => Ok(None),
            other => Err(ClientError::Unexpected(format!(
                "{other:?} in answer to a link claim"
            ))),
        }
    }

    /// Makes the poll loop's descriptor watch the agent connection and the links
    /// made to this process as they are now, and turn readable when a `Down` held
    /// behind a link's messages falls due.
    fn watch_links(&mut self) -> Result<(), ClientError> {
        let fds = std::iter::once(self.stream.as_raw_fd()).chain(self.links.waiting_fds());
        let key = (self.links.generation(), self.reconnects());
        let due = self.links.next_down_due();
        // A receive's deadline may stay on the timer only while receives wait
        // on it (with links); without links, the descriptor turns readable only
        // when the agent answers.
        let early = self.links.accepts();
        let watched = self
            .poller
            .watch(key, fds)
            .and_then(|()| self.poller.alarm(due, early));
        watched.map_err(|e| self.io(e))
    }

    /// Asks for up to `max` messages without waiting for the answer (see the module
    /// docs); nothing is sent when a receive is armed already.
    pub fn arm(&mut self, max: u32) -> Result<(), ClientError> {
        if self.armed.is_some() {
            return Ok(());
        }
        let pid = self.acting()?;
        let id = self.next_call_id();
        self.armed = Some(id);
        self.armed_max = max;
        let written = self.write_frame(&ClientFrame::Call {
            id,
            call: Call::Recv {
                pid,
                max,
                wait: Some(ARM_WAIT),
            },
        });
        match written {
            // Armed again by the reconnection.
            Err(e) if self.broken(&e) => self.recover(),
            Err(e) => {
                self.armed = None;
                Err(e)
            }
            Ok(()) => Ok(()),
        }
    }

    /// Whether [`Client::take_armed`] has something without waiting, though the
    /// descriptor may not be readable: the armed receive's answer read already by
    /// another call, or messages read from links and not taken yet.
    #[must_use]
    pub fn armed_ready(&self) -> bool {
        self.armed_answer.is_some() || !self.held.is_empty() || self.links.has_ready()
    }

    /// What came for the armed receive (call it once the descriptor is readable,
    /// or [`Client::armed_ready`]): first what links made to this process bring
    /// (read without waiting; the receive then stays armed), else the agent's
    /// answer, which disarms: empty when nothing came within [`ARM_WAIT`]. It
    /// waits for that answer only when no link is made to this process; with
    /// links, when the descriptor turned readable for a link that had nothing
    /// more (its opener ended) or for an earlier receive's deadline, it returns
    /// nothing at once and stays armed.
    pub fn take_armed(&mut self) -> Result<Vec<Mail>, ClientError> {
        if self.armed.is_none() {
            return Err(ClientError::Unexpected("no receive is armed".into()));
        }
        if self.links.accepts() || !self.held.is_empty() {
            let mails = self.linked_mail(self.armed_max, Reads::All)?;
            // Frames come now (a send's fate, say) need not be the answer: they are
            // read and put away, so that this never waits for an answer not come.
            while self.armed_answer.is_none()
                && crate::endpoint::poll_readable(&[self.stream.as_raw_fd()], Some(Duration::ZERO))
                    .map_err(|e| self.io(e))?[0]
            {
                self.read_a_frame()?;
            }
            if !mails.is_empty() || self.armed_answer.is_none() {
                return Ok(mails);
            }
        }
        let answer = self.armed_answer_mails()?;
        let mails = self.sift(answer, self.armed_max)?;
        self.watch_links()?;
        Ok(mails)
    }

    /// The armed receive's answer as the agent gave it: waits for it; disarms.
    fn armed_answer_mails(&mut self) -> Result<Vec<Mail>, ClientError> {
        let Some(id) = self.armed else {
            return Err(ClientError::Unexpected("no receive is armed".into()));
        };
        let reply = match self.armed_answer.take() {
            Some(reply) => reply,
            None => match self.await_reply(id) {
                // Armed again by the reconnection.
                Err(e) if self.broken(&e) => {
                    self.recover()?;
                    self.await_reply(id)?
                }
                other => other?,
            },
        };
        self.armed = None;
        match reply {
            Reply::Api(ApiReply::Received(r)) => Ok(r?),
            Reply::Api(other) => Err(mismatch("recv", &other)),
            Reply::Members(_) | Reply::Link(_) | Reply::LinkMade(_) => Err(
                ClientError::Unexpected("members or a link for a recv".into()),
            ),
        }
    }

    /// Registers `name` for this process.
    pub fn register(&mut self, name: &str) -> Result<(), ClientError> {
        let pid = self.acting()?;
        self.named(Call::Register {
            name: name.to_owned(),
            pid,
        })?;
        self.remember(|r| {
            r.names.insert(name.to_owned());
        });
        Ok(())
    }

    /// Drops the registration of `name` (on a process endpoint: only its own).
    pub fn unregister(&mut self, name: &str) -> Result<(), ClientError> {
        self.named(Call::Unregister {
            name: name.to_owned(),
        })?;
        self.remember(|r| {
            r.names.remove(name);
        });
        Ok(())
    }

    fn named(&mut self, call: Call) -> Result<(), ClientError> {
        match self.api(call)? {
            ApiReply::Named(r) => Ok(r?),
            other => Err(mismatch("register", &other)),
        }
    }

    /// The process registered under `name` in this tenant.
    pub fn whereis(&mut self, name: &str) -> Result<Pid, ClientError> {
        match self.api(Call::Whereis {
            name: name.to_owned(),
        })? {
            ApiReply::Whereis(r) => Ok(r?),
            other => Err(mismatch("whereis", &other)),
        }
    }

    /// Joins `group`.
    pub fn join(&mut self, group: &str) -> Result<(), ClientError> {
        let pid = self.acting()?;
        self.grouped(Call::Join {
            group: group.to_owned(),
            pid,
        })?;
        self.remember(|r| {
            r.groups.insert(group.to_owned());
        });
        Ok(())
    }

    /// Leaves `group`.
    pub fn leave(&mut self, group: &str) -> Result<(), ClientError> {
        let pid = self.acting()?;
        self.grouped(Call::Leave {
            group: group.to_owned(),
            pid,
        })?;
        self.remember(|r| {
            r.groups.remove(group);
        });
        Ok(())
    }

    /// Subscribes to `topic`.
    pub fn subscribe(&mut self, topic: &str) -> Result<(), ClientError> {
        let pid = self.acting()?;
        self.grouped(Call::Subscribe {
            topic: topic.to_owned(),
            pid,
        })?;
        self.remember(|r| {
            r.topics.insert(topic.to_owned());
        });
        Ok(())
    }

    /// Cancels the subscription to `topic`.
    pub fn unsubscribe(&mut self, topic: &str) -> Result<(), ClientError> {
        let pid = self.acting()?;
        self.grouped(Call::Unsubscribe {
            topic: topic.to_owned(),
            pid,
        })?;
        self.remember(|r| {
            r.topics.remove(topic);
        });
        Ok(())
    }

    fn grouped(&mut self, call: Call) -> Result<(), ClientError> {
        match self.api(call)? {
            ApiReply::Grouped(r) => Ok(r?),
            other => Err(mismatch("join", &other)),
        }
    }

    /// Has this process's mailbox told (a `Down` mail) when `watched` ends.
    pub fn monitor(&mut self, watched: Pid) -> Result<(), ClientError> {
        let watcher = self.acting()?;
        self.monitored(Call::Monitor { watcher, watched })?;
        self.remember(|r| {
            r.monitors.insert(watched);
        });
        Ok(())
    }

    /// Cancels a monitor.
    pub fn demonitor(&mut self, watched: Pid) -> Result<(), ClientError> {
        let watcher = self.acting()?;
        self.monitored(Call::Demonitor { watcher, watched })?;
        self.remember(|r| {
            r.monitors.remove(&watched);
        });
        Ok(())
    }

    fn monitored(&mut self, call: Call) -> Result<(), ClientError> {
        match self.api(call)? {
            ApiReply::Monitored(r) => Ok(r?),
            other => Err(mismatch("monitor", &other)),
        }
    }

    /// How far `to` is from this process, and the round trip measured to hosts of
    /// that distance.
    pub fn distance(&mut self, to: Pid) -> Result<DistanceInfo, ClientError> {
        let from = self.acting()?;
        match self.api(Call::Distance { from, to })? {
            ApiReply::Distance(r) => Ok(r?),
            other => Err(mismatch("distance", &other)),
        }
    }

    fn spawned(&mut self, call: Call) -> Result<Vec<Pid>, ClientError> {
        Ok(self.placed(call)?.pids)
    }

    fn placed(&mut self, call: Call) -> Result<Placed, ClientError> {
        match self.api(call)? {
            ApiReply::Spawned(r) => Ok(Placed {
                pids: r?,
                unspread: Vec::new(),
            }),
            ApiReply::SpawnedUnspread { pids, tags } => Ok(Placed {
                pids,
                unspread: tags,
            }),
            other => Err(mismatch("spawn", &other)),
        }
    }

    fn api(&mut self, call: Call) -> Result<ApiReply, ClientError> {
        match self.call(call)? {
            Reply::Api(reply) => Ok(reply),
            Reply::Members(_) | Reply::Link(_) | Reply::LinkMade(_) => Err(
                ClientError::Unexpected("members or a link for an API call".into()),
            ),
        }
    }

    fn next_call_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    /// Sends `call` and reads frames until its reply. When the connection breaks
    /// and is made again (see the module docs): a call not written is written
    /// again, a read-only one is made again, a send fails `Unknown` and any other
    /// call `AgentRestarted`.
    fn call(&mut self, call: Call) -> Result<Reply, ClientError> {
        let again = matches!(
            call,
            Call::Recv { .. }
                | Call::Members
                | Call::Info(_)
                | Call::Ps
                | Call::Wait(_)
                | Call::Whereis { .. }
                | Call::Distance { .. }
                | Call::Supervisors
        );
        let is_send = matches!(call, Call::Send { .. });
        let id = self.next_call_id();
        let bytes = proto::encode(&ClientFrame::Call { id, call }, MAX_REQUEST_BYTES)
            .map_err(|e| ProtocolError::Malformed(format!("request not encodable: {e}")))?;
        match self.write_bytes(&bytes) {
            Err(e) if self.broken(&e) => {
                self.recover()?;
                self.write_bytes(&bytes)?;
            }
            other => other?,
        }
        match self.await_reply(id) {
            Err(e) if self.broken(&e) => {
                self.recover()?;
                if again {
                    self.write_bytes(&bytes)?;
                    self.await_reply(id)
                } else if is_send {
                    Err(ClientError::Send(SendError::Unknown))
                } else {
                    Err(ClientError::AgentRestarted)
                }
            }
            other => other,
        }
    }

    /// Reads frames until the reply to `id`, keeping the armed receive's answer
    /// and fates, and then puts away the whole replies read already (see the
    /// module docs).
    fn await_reply(&mut self, id: u64) -> Result<Reply, ClientError> {
        let reply = loop {
            let frame = self.receive()?;
            if let Some(reply) = self.take_frame(frame, Some(id))? {
                break reply;
            }
        };
        self.put_away_buffered()?;
        Ok(reply)
    }

    /// Puts every whole frame read already where it belongs.
    fn put_away_buffered(&mut self) -> Result<(), ClientError> {
        while let Some(frame) = self.buffered_frame()? {
            self.take_frame(frame, None)?;
        }
        Ok(())
    }

    /// Puts `frame` where it belongs; the reply if it answers `wanted`.
    fn take_frame(
        &mut self,
        frame: AgentFrame,
        wanted: Option<u64>,
    ) -> Result<Option<Reply>, ClientError> {
        match frame {
            AgentFrame::Reply { id, reply } if Some(id) == wanted => return Ok(Some(reply)),
            // An answer with a descriptor nobody waits for: the descriptor goes.
            AgentFrame::Reply {
                reply: Reply::Link(Ok(())) | Reply::LinkMade(_),
                ..
            } => drop(self.fds.pop_front()),
            AgentFrame::Reply { id, reply } if Some(id) == self.armed => {
                self.armed_answer = Some(reply);
            }
            AgentFrame::Reply { id, reply } if self.owed.remove(&id) => {
                let fate = match reply {
                    Reply::Api(ApiReply::Sent(r)) => r,
                    other => return Err(ClientError::Unexpected(format!("{other:?} for a send"))),
                };
                self.fates.push((id, fate));
            }
            // A reply to an earlier call abandoned by an error: skip it.
            AgentFrame::Reply { .. } => {}
            AgentFrame::Error(e) => return Err(e.into()),
            AgentFrame::Welcome { .. } => {
                return Err(ClientError::Unexpected("a second Welcome".into()))
            }
        }
        Ok(None)
    }

    fn write_frame(&mut self, frame: &ClientFrame) -> Result<(), ClientError> {
        let bytes = proto::encode(frame, MAX_REQUEST_BYTES)
            .map_err(|e| ProtocolError::Malformed(format!("request not encodable: {e}")))?;
        self.write_bytes(&bytes)
    }

    /// Writes `bytes` whole (never raising `SIGPIPE`: a broken connection is an error).
    fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        crate::endpoint::send_all(&self.stream, bytes).map_err(|e| self.io(e))
    }

    /// The next frame: from the buffer, else read (blocking).
    fn receive(&mut self) -> Result<AgentFrame, ClientError> {
        loop {
            if let Some(frame) = self.buffered_frame()? {
                return Ok(frame);
            }
            if self.rpos > 0 {
                self.rbuf.drain(..self.rpos);
                self.rpos = 0;
            }
            let have = self.rbuf.len();
            self.rbuf.resize(have + READ_CHUNK, 0);
            let got = crate::endpoint::recv_with_fds(
                self.stream.as_raw_fd(),
                &mut self.rbuf[have..],
                &mut self.fds,
            );
            self.rbuf.truncate(have + *got.as_ref().unwrap_or(&0));
            match got {
                Ok(0) => return Err(self.io(std::io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {}
                Err(e) => return Err(self.io(e)),
            }
        }
    }

    /// A whole frame from the buffer, if it holds one. A length prefix over
    /// [`MAX_REPLY_BYTES`] is refused before its payload is read.
    fn buffered_frame(&mut self) -> Result<Option<AgentFrame>, ClientError> {
        let rest = &self.rbuf[self.rpos..];
        let Some(prefix) = rest.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = proto::check_len(*prefix, MAX_REPLY_BYTES)?;
        let Some(payload) = rest.get(4..4 + len) else {
            return Ok(None);
        };
        let frame = proto::decode(payload, MAX_REPLY_BYTES)
            .map_err(|e| ProtocolError::Malformed(format!("reply: {e}")))?;
        self.rpos += 4 + len;
        Ok(Some(frame))
    }

    fn io(&self, source: std::io::Error) -> ClientError {
        ClientError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

impl AsRawFd for Client {
    /// The descriptor a poll loop waits on: readable when an answer (an armed
    /// receive's) has come, or a link made to this process brings something (or,
    /// once, when an earlier receive's deadline passes: see the module docs). The
    /// same descriptor for the client's life.
    fn as_raw_fd(&self) -> RawFd {
        self.poller.fd()
    }
}

fn mismatch(call: &str, reply: &ApiReply) -> ClientError {
    ClientError::Unexpected(format!("{reply:?} in answer to {call}"))
}
