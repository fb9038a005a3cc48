//! The local API server: `nefele::proto` over a Unix stream socket.
//!
//! One task per connection. The first frame must be `Hello`: the client is
//! authenticated by its token, else by its uid (`SO_PEERCRED`) through the tenant
//! table, and answered `Welcome` (or `Error`, then closed). Then every `Call` is
//! answered by a `Reply` with the same id; calls run concurrently (a `Wait` does
//! not hold up a `Ps`) and their replies go out through one writer task.
//!
//! Invariants: a malformed, oversized or out-of-order frame gets an
//! `AgentFrame::Error` naming the problem and closes that connection only; the
//! tenant of every call is the connection's, never the client's word; no frame
//! larger than `MAX_REQUEST_BYTES` is ever allocated, and none larger than
//! [`MAX_HELLO_BYTES`] before the connection is authenticated.
//!
//! Abuse ([`ApiLimits`]): a local user (uid) holds at most
//! `connections_per_uid` connections, at most `unauthenticated` connections
//! wait for their `Hello` at once, and each has `hello_timeout` to send it;
//! past those, a new connection is closed at once. A tenant has at most
//! `calls_per_tenant` calls and `processes_per_tenant` requested processes in
//! the agent at once, over all its connections: past that, its connections stop
//! being read until the agent answers some (a spawn asking for more than the
//! whole budget is refused). A call counts until the agent has answered it,
//! also when its client has gone (see [`crate::handle::Hold`]), so closing
//! connections does not reset a tenant's budget (but a `wait` whose client has
//! gone is cancelled by the driver, which frees its share); the connection's own tasks and
//! buffers are freed when it closes. A messaging receive is not counted: it waits
//! in its process's mailbox, one per mailbox (another answers `Busy` at once), so
//! the tenant's processes bound them, and counting them would let processes
//! blocked in receives stall the sends that would wake them. A user who floods the socket slows only
//! itself, and a tenant only itself.
//!
//! **Process endpoints.** Besides the socket, the server serves the endpoints the
//! host backend hands it ([`Endpoint`]: the agent's end of a socket pair whose
//! other end a process inherited at start, see libnefele's client docs). An
//! endpoint is authenticated by construction: its `Hello` (which may come again,
//! from each program of the process in turn) is answered `Welcome` with the
//! process's tenant and pid, whatever token it carries. Every messaging call on it
//! must act as that pid ([`Call::acts_as`]); one naming another pid is answered
//! here, without reaching the agent, exactly as the agent answers a pid that is not
//! a live local process of the tenant (`NotSender`, `NoSuchProcess`), and an
//! `Unregister` is carried out only for a name the process holds. Endpoints are
//! not counted against the per-uid connection limit (the host backend makes one
//! per process), but their calls count against their tenant's budget.
//!
//! **Agent sockets.** The host backend also hands over each tenant's agent socket
//! ([`TenantSocket`]; host-linux's `agent_socket` module), through which a process
//! whose endpoint died with an earlier agent reaches this one. A caller there is
//! identified by the backend ([`IdentifyPeer`]: the kernel's word on which process
//! connected and its cgroup, never the caller's) and then served exactly as that
//! process's endpoint; one not identified as a process of the socket's tenant is
//! closed at once. A process holds at most [`CONNECTIONS_PER_PROCESS`] of these at
//! once. One socket per tenant is accepted on: a newer one replaces it, and none
//! once the backend says the tenant's holder ended ([`Handover::SocketGone`]).

use crate::handle::{AgentHandle, Answer};
use crate::link_desk::LinkDesk;
use nefele::proto::{
    self, AgentFrame, ClientFrame, ProtocolError, MAX_REPLY_BYTES, MAX_REQUEST_BYTES,
    PROTOCOL_VERSION,
};
use nefele::proto::{Call, LinkMade, LinkRefused, Reply};
use nefele_api::messaging::{Delivery, Dest};
use nefele_api::messaging::{GroupError, MonitorError, MsgError, NameError, RecvError, SendError};
use nefele_core::agent::ApiReply;
use nefele_core::ids::{Pid, TenantId};
use nefele_core::placement::api::SpawnError;
use nefele_transport_tcp::InboundLink;
use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};

/// A connection's writer gathers the frames waiting at once into writes of about this many bytes.
const WRITE_BATCH: usize = 64 * 1024;
/// The largest `Hello` frame (a version and a token): all an unauthenticated
/// connection can make the agent allocate.
pub const MAX_HELLO_BYTES: u32 = 4096;

/// The limits that keep one local user or tenant from exhausting the agent (see the module docs).
#[derive(Debug, Clone)]
pub struct ApiLimits {
    /// Connections one uid may hold at once.
    pub connections_per_uid: usize,
    /// Connections that may wait for their `Hello` at once.
    pub unauthenticated: usize,
    /// How long a new connection may take to say `Hello`.
    pub hello_timeout: Duration,
    /// Calls of one connection in flight; past that, the connection is not read.
    pub calls_per_connection: usize,
    /// Calls of one tenant in the agent at once.
    pub calls_per_tenant: usize,
    /// Processes one tenant's spawn calls in the agent request at once.
    pub processes_per_tenant: u64,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            connections_per_uid: 64,
            unauthenticated: 128,
            hello_timeout: Duration::from_secs(5),
            calls_per_connection: 1024,
            calls_per_tenant: 4096,
            processes_per_tenant: 16_384,
        }
    }
}

/// Maps a connection's credentials to a tenant.
pub trait Authenticator: Send + Sync + 'static {
    /// The tenant `token` authenticates as.
    fn by_token(&self, token: &str) -> Option<TenantId>;
    /// The tenant the local `uid` maps to.
    fn by_uid(&self, uid: u32) -> Option<TenantId>;
}

impl Authenticator for crate::config::Config {
    fn by_token(&self, token: &str) -> Option<TenantId> {
        self.tenant_by_token(token)
    }
    fn by_uid(&self, uid: u32) -> Option<TenantId> {
        self.tenant_by_uid(uid)
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Another process answers on the socket.
    #[error("{0}: another agent is listening on this socket")]
    InUse(PathBuf),
    /// The path exists and is not a socket.
    #[error("{0}: exists and is not a socket; not removing it")]
    NotASocket(PathBuf),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// The agent's end of a process's endpoint, from the host backend.
#[derive(Debug)]
pub struct Endpoint {
    /// The process the endpoint is scoped to.
    pub pid: Pid,
    /// Its tenant.
    pub tenant: TenantId,
    /// The agent's end of the socket pair.
    pub stream: std::os::unix::net::UnixStream,
}

/// Tells which process of a tenant the caller on one of its agent sockets is.
pub trait IdentifyPeer: Send + Sync + 'static {
    /// The process of `tenant` the caller at the other end of `peer` belongs to, or
    /// why it is refused.
    fn identify(&self, peer: BorrowedFd<'_>, tenant: TenantId) -> Result<Pid, String>;
}

/// A tenant's agent socket, from the host backend: every connection accepted on it
/// is served as the endpoint of the process its caller belongs to.
pub struct TenantSocket {
    /// The tenant whose processes connect to it.
    pub tenant: TenantId,
    /// The listening socket (a copy of the one its holder keeps).
    pub listener: std::os::unix::net::UnixListener,
    /// Who tells which process is calling.
    pub identify: Arc<dyn IdentifyPeer>,
}

impl std::fmt::Debug for TenantSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantSocket")
            .field("tenant", &self.tenant)
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

/// What the host backend hands the server.
#[derive(Debug)]
pub enum Handover {
    /// A new process's endpoint.
    Endpoint(Endpoint),
    /// A tenant's agent socket (at its holder's start, or re-adopted after a restart).
    Socket(TenantSocket),
    /// The tenant's holder ended: its socket is no longer accepted on (the
    /// connections made through it are served until they close).
    SocketGone(TenantId),
}

/// Where endpoints and agent sockets come from: the host backend's side of this channel.
pub type EndpointReceiver = mpsc::UnboundedReceiver<Handover>;

/// Connections one process may hold at once through its tenant's agent socket.
pub const CONNECTIONS_PER_PROCESS: usize = 16;

/// What a connection may act as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Any live local process of the tenant (the agent checks).
    Tenant(TenantId),
    /// Only this process, of this tenant: a process's own endpoint.
    Process(TenantId, Pid),
}

impl Scope {
    fn tenant(self) -> TenantId {
        match self {
            Scope::Tenant(t) | Scope::Process(t, _) => t,
        }
    }

    fn pid(self) -> Option<Pid> {
        match self {
            Scope::Tenant(_) => None,
            Scope::Process(_, p) => Some(p),
        }
    }
}

/// The answer to a call that acts as a pid its connection may not act as: the
/// agent's own answer for a pid that is not a live local process of the tenant.
fn not_entitled(call: &Call) -> ApiReply {
    match call {
        Call::Send { .. } => ApiReply::Sent(Err(SendError::NotSender)),
        Call::Recv { .. } => ApiReply::Received(Err(RecvError::NoSuchProcess)),
        Call::Register { .. } | Call::Unregister { .. } => {
            ApiReply::Named(Err(NameError::NoSuchProcess))
        }
        Call::Monitor { .. } | Call::Demonitor { .. } => {
            ApiReply::Monitored(Err(MonitorError::NoSuchProcess))
        }
        Call::Distance { .. } => ApiReply::Distance(Err(MsgError::NoSuchProcess)),
        _ => ApiReply::Grouped(Err(GroupError::NoSuchProcess)),
    }
}

/// A bound API socket.
#[derive(Debug)]
pub struct ApiServer {
    listener: UnixListener,
    path: PathBuf,
    endpoints: Option<EndpointReceiver>,
    inbound_links: Option<mpsc::Receiver<InboundLink>>,
}

impl ApiServer {
    /// Binds `path` (mode 0666), replacing a stale socket file left by a dead agent.
    pub async fn bind(path: &Path) -> Result<Self, ServeError> {
        let io_err = |source| ServeError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err)?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(ServeError::NotASocket(path.to_owned()))
            }
            Ok(_) => {
                if UnixStream::connect(path).await.is_ok() {
                    return Err(ServeError::InUse(path.to_owned()));
                }
                std::fs::remove_file(path).map_err(io_err)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        let listener = UnixListener::bind(path).map_err(io_err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(io_err)?;
        Ok(ApiServer {
            listener,
            path: path.to_owned(),
            endpoints: None,
            inbound_links: None,
        })
    }

    /// Serves also the process endpoints that come on `endpoints`.
    #[must_use]
    pub fn with_endpoints(mut self, endpoints: EndpointReceiver) -> Self {
        self.endpoints = Some(endpoints);
        self
    }

    /// Takes also the connections other agents make for links to this host's
    /// processes (the runtime's `inbound_links`).
    #[must_use]
    pub fn with_inbound_links(mut self, links: mpsc::Receiver<InboundLink>) -> Self {
        self.inbound_links = Some(links);
        self
    }

    /// The socket's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts connections forever, each served by its own task, under the default limits.
    pub async fn serve(self, agent: AgentHandle, auth: Arc<dyn Authenticator>) {
        self.serve_with(agent, auth, ApiLimits::default()).await;
    }

    /// Accepts connections forever, each served by its own task, under `limits`.
    pub async fn serve_with(
        mut self,
        agent: AgentHandle,
        auth: Arc<dyn Authenticator>,
        limits: ApiLimits,
    ) {
        let admission = Arc::new(Admission::new(limits));
        if let Some(links) = self.inbound_links.take() {
            let desk = admission.links.clone();
            tokio::spawn(crate::remote_links::serve(links, agent.clone(), desk));
        }
        let mut endpoints = self.endpoints.take();
        // One task per tenant's agent socket; a newer socket of the tenant (its
        // namespaces were built again) replaces the older.
        let mut sockets: BTreeMap<TenantId, tokio::task::JoinHandle<()>> = BTreeMap::new();
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                handed = next_endpoint(&mut endpoints) => {
                    match handed {
                        Some(Handover::Endpoint(e)) => serve_endpoint(e, &agent, &admission),
                        Some(Handover::Socket(s)) => {
                            let tenant = s.tenant;
                            let task = tokio::spawn(serve_tenant_socket(s, agent.clone(), admission.clone()));
                            if let Some(old) = sockets.insert(tenant, task) {
                                old.abort();
                            }
                        }
                        Some(Handover::SocketGone(tenant)) => {
                            if let Some(old) = sockets.remove(&tenant) {
                                old.abort();
                            }
                        }
                        None => endpoints = None,
                    }
                    continue;
                }
            };
            match accepted {
                Ok((stream, _)) => {
                    // No credentials (never on Linux for a Unix socket) maps to no uid anyone configured.
                    let uid = stream.peer_cred().map_or(u32::MAX, |c| c.uid());
                    let Some(admitted) = admission.admit(uid) else {
                        tracing::debug!(uid, "api connection refused: over the limits");
                        continue;
                    };
                    tokio::spawn(serve_connection(
                        stream,
                        uid,
                        admitted,
                        agent.clone(),
                        auth.clone(),
                    ));
                }
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!(error = %e, "api accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// The next handover, or never when there is no (more) source of them.
async fn next_endpoint(endpoints: &mut Option<EndpointReceiver>) -> Option<Handover> {
    match endpoints {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Serves one process endpoint on its own task.
fn serve_endpoint(endpoint: Endpoint, agent: &AgentHandle, admission: &Arc<Admission>) {
    let stream = match endpoint
        .stream
        .set_nonblocking(true)
        .and_then(|()| UnixStream::from_std(endpoint.stream))
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(pid = %endpoint.pid, error = %e, "endpoint not served");
            return;
        }
    };
    let scope = Scope::Process(endpoint.tenant, endpoint.pid);
    tokio::spawn(serve_process(
        stream,
        scope,
        agent.clone(),
        admission.clone(),
        None,
    ));
}

/// Accepts on a tenant's agent socket forever: each caller identified as one of
/// the tenant's processes is served as that process's endpoint (at most
/// [`CONNECTIONS_PER_PROCESS`] at once); any other is closed at once.
async fn serve_tenant_socket(socket: TenantSocket, agent: AgentHandle, admission: Arc<Admission>) {
    let tenant = socket.tenant;
    let listener = match socket
        .listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixListener::from_std(socket.listener))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(%tenant, error = %e, "agent socket not served");
            return;
        }
    };
    let held: Arc<Mutex<BTreeMap<Pid, usize>>> = Arc::default();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(%tenant, error = %e, "agent socket accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let pid = match socket.identify.identify(stream.as_fd(), tenant) {
            Ok(pid) => pid,
            Err(why) => {
                tracing::warn!(%tenant, %why, "agent socket caller refused");
                continue;
            }
        };
        let Some(slot) = ProcessSlot::take(&held, pid) else {
            tracing::debug!(%tenant, %pid, "agent socket caller over its connections");
            continue;
        };
        tracing::info!(%tenant, %pid, "a process reconnected through its agent socket");
        let scope = Scope::Process(tenant, pid);
        tokio::spawn(serve_process(
            stream,
            scope,
            agent.clone(),
            admission.clone(),
            Some(slot),
        ));
    }
}

/// One of a process's connections through its agent socket, given back when dropped.
struct ProcessSlot {
    held: Arc<Mutex<BTreeMap<Pid, usize>>>,
    pid: Pid,
}

impl ProcessSlot {
    fn take(held: &Arc<Mutex<BTreeMap<Pid, usize>>>, pid: Pid) -> Option<ProcessSlot> {
        let mut map = held.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(pid).or_default();
        if *n >= CONNECTIONS_PER_PROCESS {
            return None;
        }
        *n += 1;
        Some(ProcessSlot {
            held: held.clone(),
            pid,
        })
    }
}

impl Drop for ProcessSlot {
    fn drop(&mut self) {
        let mut map = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.pid) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.pid);
            }
        }
    }
}

/// Serves a connection scoped to one process (its endpoint, or a connection
/// through its agent socket) until it closes.
async fn serve_process(
    stream: UnixStream,
    scope: Scope,
    agent: AgentHandle,
    admission: Arc<Admission>,
    _slot: Option<ProcessSlot>,
) {
    let (reader, writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let (out, outgoing) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_frames(writer, outgoing));
    // A process may leave its endpoint unused as long as it likes: no Hello timeout.
    if let Some(scope) = greet_endpoint(&mut reader, scope, &agent, &out).await {
        serve_calls(&mut reader, scope, &agent, &out, &admission).await;
    }
    let _ = out.send(Outgoing::Stop);
    let _ = writer.await;
}

/// Reads an endpoint's `Hello` (any token) and answers it with the process's scope.
async fn greet_endpoint(
    reader: &mut Reader,
    scope: Scope,
    agent: &AgentHandle,
    out: &mpsc::UnboundedSender<Outgoing>,
) -> Option<Scope> {
    match read_frame(reader, MAX_HELLO_BYTES).await {
        Ok(ClientFrame::Hello { version, .. }) => welcome(version, scope, agent, out),
        Ok(ClientFrame::Call { id, .. }) => {
            let e = ProtocolError::Unexpected(format!("call {id} before Hello"));
            let _ = out.send(Outgoing::Close(e));
            None
        }
        Err(ReadError::Protocol(e)) => {
            let _ = out.send(Outgoing::Close(e));
            None
        }
        Err(ReadError::Closed) => None,
    }
}

/// Answers a `Hello` of `version` on a connection of `scope`.
fn welcome(
    version: u16,
    scope: Scope,
    agent: &AgentHandle,
    out: &mpsc::UnboundedSender<Outgoing>,
) -> Option<Scope> {
    if version != PROTOCOL_VERSION {
        let e = ProtocolError::Version {
            client: version,
            agent: PROTOCOL_VERSION,
        };
        let _ = out.send(Outgoing::Close(e));
        return None;
    }
    let welcome = AgentFrame::Welcome {
        version: PROTOCOL_VERSION,
        tenant: scope.tenant(),
        node: agent.node(),
        pid: scope.pid(),
    };
    out.send(Outgoing::Frame(welcome, None)).ok()?;
    Some(scope)
}

/// A connection's read side, buffered: a client that sends calls back to back
/// (pipelined sends) has them read many to a system call.
type Reader = BufReader<OwnedReadHalf>;

/// What a connection's writer task is asked to write.
enum Outgoing {
    /// A frame; the permit (a call's place under `calls_per_connection`) is freed
    /// once it is written.
    Frame(AgentFrame, Option<OwnedSemaphorePermit>),
    /// A frame with a descriptor attached (`SCM_RIGHTS`): a link's end.
    WithEnd(AgentFrame, OwnedFd, OwnedSemaphorePermit),
    /// Write this error, then close the connection.
    Close(ProtocolError),
    /// The reader has stopped: write nothing more, close.
    Stop,
}

impl Outgoing {
    fn frame(id: u64, reply: Reply, permit: OwnedSemaphorePermit) -> Outgoing {
        Outgoing::Frame(AgentFrame::Reply { id, reply }, Some(permit))
    }
}

/// Why a frame could not be read.
enum ReadError {
    /// The client closed the connection (or it broke) between frames.
    Closed,
    /// The frame is bad; the client is told this.
    Protocol(ProtocolError),
}

/// Counts what is in use, per uid and per tenant, against the limits; and holds
/// what every connection shares (the link ends waiting for their receivers).
#[derive(Debug)]
struct Admission {
    limits: ApiLimits,
    unauthenticated: Arc<Semaphore>,
    state: Mutex<Usage>,
    /// Woken whenever a tenant's budget frees.
    freed: Notify,
    links: Arc<LinkDesk>,
}

#[derive(Debug, Default)]
struct Usage {
    connections: BTreeMap<u32, usize>,
    /// Calls and requested processes per tenant.
    tenants: BTreeMap<TenantId, (usize, u64)>,
}

/// A connection's place under the limits: its uid's slot, and until it is
/// authenticated, one of the unauthenticated slots.
struct Admitted {
    admission: Arc<Admission>,
    uid: u32,
    unauthenticated: Option<OwnedSemaphorePermit>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut usage = self.admission.lock();
        if let Some(n) = usage.connections.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                usage.connections.remove(&self.uid);
            }
        }
    }
}

/// One call's share of its tenant's budget, given back when dropped.
struct Budget {
    admission: Arc<Admission>,
    tenant: TenantId,
    processes: u64,
}

impl Drop for Budget {
    fn drop(&mut self) {
        {
            let mut usage = self.admission.lock();
            if let Some((calls, processes)) = usage.tenants.get_mut(&self.tenant) {
                *calls -= 1;
                *processes -= self.processes;
                if *calls == 0 {
                    usage.tenants.remove(&self.tenant);
                }
            }
        }
        self.admission.freed.notify_waiters();
    }
}

impl Admission {
    fn new(limits: ApiLimits) -> Self {
        Admission {
            unauthenticated: Arc::new(Semaphore::new(limits.unauthenticated)),
            limits,
            state: Mutex::new(Usage::default()),
            freed: Notify::new(),
            links: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Usage> {
        // Every update is a few counter changes done before unlocking: a poisoned lock is consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a new connection of `uid`, or `None` when over a limit.
    fn admit(self: &Arc<Self>, uid: u32) -> Option<Admitted> {
        let permit = self.unauthenticated.clone().try_acquire_owned().ok()?;
        let mut usage = self.lock();
        let n = usage.connections.entry(uid).or_default();
        if *n >= self.limits.connections_per_uid {
            return None;
        }
        *n += 1;
        Some(Admitted {
            admission: self.clone(),
            uid,
            unauthenticated: Some(permit),
        })
    }

    /// Waits until `tenant` may have one more call requesting `processes` in the agent.
    async fn reserve(self: &Arc<Self>, tenant: TenantId, processes: u64) -> Budget {
        loop {
            let freed = self.freed.notified();
            {
                let mut usage = self.lock();
                let (calls, used) = usage.tenants.entry(tenant).or_default();
                if *calls < self.limits.calls_per_tenant
                    && *used + processes <= self.limits.processes_per_tenant
                {
                    *calls += 1;
                    *used += processes;
                    return Budget {
                        admission: self.clone(),
                        tenant,
                        processes,
                    };
                }
            }
            freed.await;
        }
    }
}

/// How many processes `call` asks for.
fn requested_processes(call: &Call) -> u64 {
    match call {
        Call::Spawn(_) => 1,
        Call::NSpawn { n, .. } => u64::from(*n),
        Call::CSpawn(specs) => specs.len() as u64,
        Call::SpawnSupervised { spawn, .. } => spawn.children() as u64,
        _ => 0,
    }
}

async fn read_frame(reader: &mut Reader, max: u32) -> Result<ClientFrame, ReadError> {
    let mut prefix = [0u8; 4];
    reader
        .read_exact(&mut prefix)
        .await
        .map_err(|_| ReadError::Closed)?;
    let len = proto::check_len(prefix, max).map_err(ReadError::Protocol)?;
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await.map_err(|_| {
        ReadError::Protocol(ProtocolError::Malformed(format!(
            "connection ended inside a frame of {len} bytes"
        )))
    })?;
    proto::decode(&payload, MAX_REQUEST_BYTES)
        .map_err(|e| ReadError::Protocol(ProtocolError::Malformed(e.to_string())))
}

/// Writes a connection's frames until told to stop (or the client leaves); then
/// drops the receiver, so the driver sees the connection's pending waits abandoned.
/// The frames waiting at once go out in one write (up to [`WRITE_BATCH`] bytes).
async fn write_frames(mut writer: OwnedWriteHalf, mut outgoing: mpsc::UnboundedReceiver<Outgoing>) {
    let mut bytes = Vec::new();
    let mut next = outgoing.recv().await;
    'frames: while let Some(out) = next.take() {
        bytes.clear();
        let mut out = out;
        let mut last = false;
        loop {
            let frame = match out {
                Outgoing::Frame(f, _permit) => f,
                Outgoing::WithEnd(frame, end, _permit) => {
                    // What came before goes first, then this frame with its end.
                    let sent = writer.write_all(&bytes).await.is_ok()
                        && write_with_end(&mut writer, &frame, end).await.is_ok();
                    if !sent {
                        break 'frames;
                    }
                    bytes.clear();
                    match outgoing.try_recv() {
                        Ok(more) => {
                            out = more;
                            continue;
                        }
                        Err(_) => break,
                    }
                }
                Outgoing::Close(e) => {
                    last = true;
                    AgentFrame::Error(e)
                }
                Outgoing::Stop => {
                    last = true;
                    break;
                }
            };
            match proto::encode(&frame, MAX_REPLY_BYTES) {
                Ok(b) => bytes.extend_from_slice(&b),
                Err(e) => {
                    tracing::error!(error = %e, "reply not encodable; closing the connection");
                    break 'frames;
                }
            }
            if last || bytes.len() >= WRITE_BATCH {
                break;
            }
            match outgoing.try_recv() {
                Ok(more) => out = more,
                Err(_) => break,
            }
        }
        if writer.write_all(&bytes).await.is_err() || last {
            break;
        }
        next = outgoing.recv().await;
    }
    let _ = writer.shutdown().await;
}

/// Writes `frame` with `end` attached to its first bytes.
async fn write_with_end(
    writer: &mut OwnedWriteHalf,
    frame: &AgentFrame,
    end: OwnedFd,
) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    let bytes = proto::encode(frame, MAX_REPLY_BYTES).map_err(io::Error::other)?;
    let stream: &UnixStream = writer.as_ref();
    let fds = [end.as_raw_fd()];
    let sent = loop {
        stream.writable().await?;
        let attempt = stream.try_io(tokio::io::Interest::WRITABLE, || {
            sendmsg::<UnixAddr>(
                stream.as_raw_fd(),
                &[io::IoSlice::new(&bytes)],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                None,
            )
            .map_err(io::Error::from)
        });
        match attempt {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    };
    // The end is the client's now (the kernel holds a copy in flight); ours goes.
    drop(end);
    writer.write_all(&bytes[sent..]).await
}

/// Makes a link from `from` to `to` ([`Call::Link`]): its receiver's end left at
/// the desk of `to`'s agent (this one's, or another's which this one dials), the
/// marker sent as `from` through the agent; the opener's end once the marker is
/// in `to`'s mailbox.
async fn make_link(
    agent: &AgentHandle,
    tenant: TenantId,
    desk: &LinkDesk,
    from: Pid,
    to: Pid,
    hold: Option<crate::handle::Hold>,
) -> Result<(Reply, Option<OwnedFd>), crate::handle::RuntimeGone> {
    let refused = |why: String| Ok((Reply::Link(Err(LinkRefused::Unavailable(why))), None));
    let (mine, marker, made) = if to.origin() == agent.node() {
        let (mine, theirs) = match std::os::unix::net::UnixStream::pair() {
            Ok(pair) => pair,
            Err(e) => return refused(format!("no socket pair: {e}")),
        };
        let token = match desk.put(from, to, theirs.into()) {
            Ok(token) => token,
            Err(e) => return refused(e.to_string()),
        };
        let made = LinkMade { token, key: None };
        (
            OwnedFd::from(mine),
            nefele::link::marker(token),
            (made, Some(token)),
        )
    } else {
        let mut rng = rand::rngs::OsRng;
        let token = rand::RngCore::next_u64(&mut rng);
        let mut key = [0u8; nefele::link_seal::KEY_LEN];
        rand::RngCore::fill_bytes(&mut rng, &mut key);
        let mine = match crate::remote_links::dial(agent, token, from, to).await {
            Ok(end) => end,
            Err(e) => return refused(e.to_string()),
        };
        let marker = nefele::link::sealed_marker(token, &key);
        let made = LinkMade {
            token,
            key: Some(key),
        };
        (mine, marker, (made, None))
    };
    let (made, local_token) = made;
    let marker = Call::Send {
        from,
        to: Dest::Pid(to),
        data: marker,
        delivery: Delivery::Reliable,
        block: true,
    };
    let fate = agent.call_holding(tenant, marker, hold).await?;
    if !matches!(fate, Reply::Api(ApiReply::Sent(Ok(_)))) {
        // A local end waits no longer; another agent's waits out its time.
        if let Some(token) = local_token {
            desk.drop_end(token);
        }
    }
    Ok(match fate {
        Reply::Api(ApiReply::Sent(Ok(_))) => (Reply::LinkMade(made), Some(mine)),
        Reply::Api(ApiReply::Sent(Err(e))) => (Reply::Link(Err(LinkRefused::Marker(e))), None),
        other => {
            let why = format!("the marker was answered {other:?}");
            (Reply::Link(Err(LinkRefused::Unavailable(why))), None)
        }
    })
}

/// An endpoint's `Unregister` of `name`, carried out only when its process `me`
/// holds the name.
async fn unregister_own(
    agent: &AgentHandle,
    tenant: TenantId,
    me: Pid,
    name: String,
    hold: Option<crate::handle::Hold>,
) -> Result<Reply, crate::handle::RuntimeGone> {
    let holder = agent
        .call(tenant, Call::Whereis { name: name.clone() })
        .await?;
    let call = Call::Unregister { name };
    match holder {
        Reply::Api(ApiReply::Whereis(Ok(p))) if p == me => {}
        Reply::Api(ApiReply::Whereis(Err(e))) => return Ok(Reply::Api(ApiReply::Named(Err(e)))),
        _ => return Ok(Reply::Api(not_entitled(&call))),
    }
    agent.call_holding(tenant, call, hold).await
}

/// Authenticates a `Hello`: the token first, then the peer's uid.
fn authenticate(
    token: Option<&str>,
    uid: u32,
    auth: &dyn Authenticator,
) -> Result<TenantId, ProtocolError> {
    token
        .and_then(|t| auth.by_token(t))
        .or_else(|| auth.by_uid(uid))
        .ok_or(ProtocolError::Unauthenticated { uid })
}

async fn serve_connection(
    stream: UnixStream,
    uid: u32,
    mut admitted: Admitted,
    agent: AgentHandle,
    auth: Arc<dyn Authenticator>,
) {
    let (reader, writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let (out, outgoing) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_frames(writer, outgoing));
    let timeout = admitted.admission.limits.hello_timeout;
    if let Some(tenant) = greet(&mut reader, uid, timeout, &agent, &*auth, &out).await {
        admitted.unauthenticated = None;
        let admission = admitted.admission.clone();
        serve_calls(&mut reader, Scope::Tenant(tenant), &agent, &out, &admission).await;
    }
    let _ = out.send(Outgoing::Stop);
    let _ = writer.await;
}

/// Reads and answers the `Hello`; the tenant if the connection is authenticated.
async fn greet(
    reader: &mut Reader,
    uid: u32,
    timeout: Duration,
    agent: &AgentHandle,
    auth: &dyn Authenticator,
    out: &mpsc::UnboundedSender<Outgoing>,
) -> Option<TenantId> {
    let verdict = match tokio::time::timeout(timeout, read_frame(reader, MAX_HELLO_BYTES)).await {
        Err(_) => Err(ProtocolError::Unexpected(format!(
            "no Hello within {timeout:?}"
        ))),
        Ok(Err(ReadError::Closed)) => return None,
        Ok(Err(ReadError::Protocol(e))) => Err(e),
        Ok(Ok(ClientFrame::Call { id, .. })) => {
            Err(ProtocolError::Unexpected(format!("call {id} before Hello")))
        }
        Ok(Ok(ClientFrame::Hello { version, token })) => {
            if version == PROTOCOL_VERSION {
                authenticate(token.as_deref(), uid, auth)
            } else {
                Err(ProtocolError::Version {
                    client: version,
                    agent: PROTOCOL_VERSION,
                })
            }
        }
    };
    match verdict {
        Ok(tenant) => {
            let welcome = AgentFrame::Welcome {
                version: PROTOCOL_VERSION,
                tenant,
                node: agent.node(),
                pid: None,
            };
            out.send(Outgoing::Frame(welcome, None)).ok()?;
            Some(tenant)
        }
        Err(e) => {
            tracing::info!(uid, error = %e, "api connection refused");
            let _ = out.send(Outgoing::Close(e));
            None
        }
    }
}

/// Answers calls until the client leaves or sends something wrong.
///
/// Each call is queued for the driver straight from here, in the order read, and
/// the driver hands its answer to the connection's writer ([`ConnAnswer`]): no
/// task per call, so a call costs two hand-overs (reader to driver, driver to
/// writer) and a client's calls reach the agent in the order it sent them (a
/// client may send without waiting for the fate, as libnefele's `send_async`
/// does). At most `calls_per_connection` answers are owed at once: past that,
/// the connection is not read.
async fn serve_calls(
    reader: &mut Reader,
    scope: Scope,
    agent: &AgentHandle,
    out: &mpsc::UnboundedSender<Outgoing>,
    admission: &Arc<Admission>,
) {
    let tenant = scope.tenant();
    let limits = &admission.limits;
    let owed = Arc::new(Semaphore::new(limits.calls_per_connection));
    loop {
        // Reading is never raced against anything: a frame half read and then
        // dropped would desynchronise the stream.
        let Ok(permit) = owed.clone().acquire_owned().await else {
            return;
        };
        let error = match read_frame(reader, MAX_REQUEST_BYTES).await {
            Ok(ClientFrame::Call { id, call }) => {
                let processes = requested_processes(&call);
                if processes > limits.processes_per_tenant {
                    let refusal = SpawnError::Invalid(format!(
                        "{processes} processes at once is more than this agent takes from one tenant ({})",
                        limits.processes_per_tenant
                    ));
                    let reply = Reply::Api(ApiReply::Spawned(Err(refusal)));
                    if out.send(Outgoing::frame(id, reply, permit)).is_err() {
                        return;
                    }
                    continue;
                }
                if let Some(me) = scope.pid() {
                    if call.acts_as().is_some_and(|p| p != me) {
                        let reply = match call {
                            Call::Link { .. } | Call::Claim { .. } => {
                                Reply::Link(Err(LinkRefused::Marker(SendError::NotSender)))
                            }
                            _ => Reply::Api(not_entitled(&call)),
                        };
                        if out.send(Outgoing::frame(id, reply, permit)).is_err() {
                            return;
                        }
                        continue;
                    }
                }
                // A receive waits in its mailbox (one per mailbox, the rest answer
                // Busy at once), so the tenant's processes bound them: counting them
                // would let a tenant's processes blocked in receives stall the
                // very sends that would wake them.
                let budget = if matches!(call, Call::Recv { .. }) {
                    None
                } else {
                    Some(admission.reserve(tenant, processes).await)
                };
                let hold = budget.map(|b| Box::new(b) as crate::handle::Hold);
                let answer = ConnAnswer {
                    id,
                    out: out.clone(),
                    permit: Some(permit),
                };
                if let Call::Link { from, to } = call {
                    // Two steps (the marker's fate, then the end): a task, so that
                    // the reader goes on.
                    let (agent, admission) = (agent.clone(), admission.clone());
                    tokio::spawn(async move {
                        match make_link(&agent, tenant, &admission.links, from, to, hold).await {
                            Ok((reply, end)) => answer.answer_with_end(reply, end),
                            Err(_) => drop(answer),
                        }
                    });
                    continue;
                }
                if let Call::Claim { pid, from, token } = call {
                    let end = admission.links.claim(token, from, pid);
                    drop(hold);
                    let reply = match end {
                        Some(_) => Reply::Link(Ok(())),
                        None => Reply::Link(Err(LinkRefused::NoSuchLink)),
                    };
                    answer.answer_with_end(reply, end);
                    continue;
                }
                if let (Some(me), Call::Unregister { name }) = (scope.pid(), &call) {
                    // Two calls: a task, so that the reader goes on.
                    let (agent, name) = (agent.clone(), name.clone());
                    tokio::spawn(async move {
                        match unregister_own(&agent, scope.tenant(), me, name, hold).await {
                            Ok(reply) => Box::new(answer).answer(reply),
                            Err(_) => drop(answer),
                        }
                    });
                    continue;
                }
                if agent
                    .call_answering(tenant, call, Box::new(answer), hold)
                    .await
                    .is_err()
                {
                    return; // the answer, dropped, told the client
                }
                continue;
            }
            // A process's programs share its endpoint one after another: each says Hello.
            Ok(ClientFrame::Hello { version, .. }) if scope.pid().is_some() => {
                drop(permit);
                if welcome(version, scope, agent, out).is_none() {
                    return;
                }
                continue;
            }
            Ok(ClientFrame::Hello { .. }) => ProtocolError::Unexpected("a second Hello".into()),
            Err(ReadError::Protocol(e)) => e,
            Err(ReadError::Closed) => return,
        };
        tracing::info!(%tenant, error = %error, "api connection closed for a bad frame");
        let _ = out.send(Outgoing::Close(error));
        return;
    }
}

/// Where the driver puts the answer to a connection's call: its writer, as the
/// reply frame to call `id`. Dropped unanswered (the runtime is gone), it closes
/// the connection with `ShuttingDown`.
struct ConnAnswer {
    id: u64,
    out: mpsc::UnboundedSender<Outgoing>,
    /// The call's place under `calls_per_connection`, freed once the reply is written.
    permit: Option<OwnedSemaphorePermit>,
}

impl ConnAnswer {
    /// Answers with `end` attached when there is one.
    fn answer_with_end(mut self, reply: Reply, end: Option<OwnedFd>) {
        match (end, self.permit.take()) {
            (Some(end), Some(permit)) => {
                let frame = AgentFrame::Reply { id: self.id, reply };
                let _ = self.out.send(Outgoing::WithEnd(frame, end, permit));
            }
            (None, permit) => {
                self.permit = permit;
                Box::new(self).answer(reply);
            }
            (Some(_), None) => {}
        }
    }
}

impl Answer for ConnAnswer {
    fn answer(mut self: Box<Self>, reply: Reply) {
        if let Some(permit) = self.permit.take() {
            let _ = self.out.send(Outgoing::frame(self.id, reply, permit));
        }
    }
    fn abandoned(&self) -> bool {
        self.out.is_closed()
    }
}

impl Drop for ConnAnswer {
    fn drop(&mut self) {
        if self.permit.take().is_some() {
            let _ = self.out.send(Outgoing::Close(ProtocolError::ShuttingDown));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handle::Request;
    use nefele_core::ids::NodeId;
    use nefele_core::placement::api::PsReply;

    struct Tenants {
        token: &'static str,
        uid: Option<u32>,
    }

    impl Authenticator for Tenants {
        fn by_token(&self, token: &str) -> Option<TenantId> {
            (token == self.token).then_some(TenantId(1))
        }
        fn by_uid(&self, uid: u32) -> Option<TenantId> {
            (Some(uid) == self.uid).then_some(TenantId(2))
        }
    }

    fn answer(tenant: TenantId) -> Reply {
        Reply::Api(ApiReply::Ps(PsReply {
            processes: vec![],
            unanswered: tenant.0,
        }))
    }

    /// A driver stand-in: answers `Ps` with the caller's tenant in `unanswered`;
    /// holds every `Wait` (and its hold, as the driver does) until a `Kill`.
    fn fake_agent() -> AgentHandle {
        let (tx, mut rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut waiting = Vec::new();
            while let Some(request) = rx.recv().await {
                if let Request::Call {
                    tenant,
                    call,
                    reply,
                    hold,
                } = request
                {
                    match *call {
                        Call::Wait(_) | Call::Recv { wait: Some(_), .. } => {
                            waiting.push((tenant, reply, hold));
                        }
                        Call::Kill { .. } => {
                            for (tenant, reply, _hold) in waiting.drain(..) {
                                reply.answer(answer(tenant));
                            }
                            reply.answer(answer(tenant));
                        }
                        _ => {
                            reply.answer(Reply::Api(ApiReply::Ps(PsReply {
                                processes: vec![],
                                unanswered: tenant.0,
                            })));
                        }
                    }
                }
            }
        });
        AgentHandle::new(NodeId(9), tx)
    }

    async fn server(auth: Tenants) -> (tempfile::TempDir, PathBuf) {
        server_with(auth, ApiLimits::default()).await
    }

    async fn server_with(auth: Tenants, limits: ApiLimits) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let server = ApiServer::bind(&path).await.unwrap();
        tokio::spawn(server.serve_with(fake_agent(), Arc::new(auth), limits));
        (dir, path)
    }

    async fn send_raw(s: &mut UnixStream, bytes: &[u8]) {
        s.write_all(bytes).await.unwrap();
    }

    async fn send(s: &mut UnixStream, frame: &ClientFrame) {
        send_raw(s, &proto::encode(frame, MAX_REQUEST_BYTES).unwrap()).await;
    }

    /// The next frame, or `None` once the agent has closed the connection.
    async fn recv(s: &mut UnixStream) -> Option<AgentFrame> {
        let mut prefix = [0u8; 4];
        s.read_exact(&mut prefix).await.ok()?;
        let len = proto::check_len(prefix, MAX_REPLY_BYTES).unwrap();
        let mut payload = vec![0; len];
        s.read_exact(&mut payload).await.unwrap();
        Some(proto::decode(&payload, MAX_REPLY_BYTES).unwrap())
    }

    fn hello(token: Option<&str>) -> ClientFrame {
        ClientFrame::Hello {
            version: PROTOCOL_VERSION,
            token: token.map(str::to_owned),
        }
    }

    fn own_uid() -> u32 {
        let (a, _b) = UnixStream::pair().unwrap();
        a.peer_cred().unwrap().uid()
    }

    #[tokio::test]
    async fn a_token_authenticates_and_calls_are_answered_by_id() {
        let (_dir, path) = server(Tenants {
            token: "secret",
            uid: None,
        })
        .await;
        let mut s = UnixStream::connect(&path).await.unwrap();
        send(&mut s, &hello(Some("secret"))).await;
        assert_eq!(
            recv(&mut s).await,
            Some(AgentFrame::Welcome {
                version: PROTOCOL_VERSION,
                tenant: TenantId(1),
                node: NodeId(9),
                pid: None,
            })
        );
        send(
            &mut s,
            &ClientFrame::Call {
                id: 41,
                call: Call::Ps,
            },
        )
        .await;
        let Some(AgentFrame::Reply {
            id: 41,
            reply: Reply::Api(ApiReply::Ps(ps)),
        }) = recv(&mut s).await
        else {
            panic!("expected the reply to call 41")
        };
        assert_eq!(ps.unanswered, 1, "the call ran as the connection's tenant");
    }

    #[tokio::test]
    async fn without_a_token_the_uid_decides() {
        let (_dir, path) = server(Tenants {
            token: "secret",
            uid: Some(own_uid()),
        })
        .await;
        let mut s = UnixStream::connect(&path).await.unwrap();
        send(&mut s, &hello(None)).await;
        assert!(matches!(
            recv(&mut s).await,
            Some(AgentFrame::Welcome {
                tenant: TenantId(2),
                ..
            })
        ));

        let (_dir, path) = server(Tenants {
            token: "secret",
            uid: None,
        })
        .await;
        let mut s = UnixStream::connect(&path).await.unwrap();
        send(&mut s, &hello(Some("wrong"))).await;
        assert_eq!(
            recv(&mut s).await,
            Some(AgentFrame::Error(ProtocolError::Unauthenticated {
                uid: own_uid()
            }))
        );
        assert_eq!(recv(&mut s).await, None, "closed after the refusal");
    }

    #[tokio::test]
    async fn bad_frames_get_an_error_and_the_server_lives_on() {
        let (_dir, path) = server(Tenants {
            token: "secret",
            uid: None,
        })
        .await;
        /// Frames a client sends, and the error it must get.
        type Case = (Vec<Vec<u8>>, fn(&ProtocolError) -> bool);
        let cases: Vec<Case> = vec![
            // Garbage payload.
            (vec![vec![0, 0, 0, 3, 0xff, 0xff, 0xff]], |e| {
                matches!(e, ProtocolError::Malformed(_))
            }),
            // A length prefix over the limit: refused before anything is read.
            (vec![(MAX_REQUEST_BYTES + 1).to_be_bytes().to_vec()], |e| {
                matches!(e, ProtocolError::TooLarge { .. })
            }),
            // A call before Hello.
            (
                vec![proto::encode(
                    &ClientFrame::Call {
                        id: 1,
                        call: Call::Ps,
                    },
                    MAX_REQUEST_BYTES,
                )
                .unwrap()],
                |e| matches!(e, ProtocolError::Unexpected(_)),
            ),
            // Another protocol version.
            (
                vec![proto::encode(
                    &ClientFrame::Hello {
                        version: 99,
                        token: None,
                    },
                    MAX_REQUEST_BYTES,
                )
                .unwrap()],
                |e| matches!(e, ProtocolError::Version { client: 99, .. }),
            ),
            // Hello twice.
            (
                vec![
                    proto::encode(&hello(Some("secret")), MAX_REQUEST_BYTES).unwrap(),
                    proto::encode(&hello(Some("secret")), MAX_REQUEST_BYTES).unwrap(),
                ],
                |e| matches!(e, ProtocolError::Unexpected(_)),
            ),
        ];
        for (i, (frames, expected)) in cases.into_iter().enumerate() {
            let mut s = UnixStream::connect(&path).await.unwrap();
            for f in &frames {
                send_raw(&mut s, f).await;
            }
            let mut last = None;
            while let Some(frame) = recv(&mut s).await {
                last = Some(frame);
            }
            let Some(AgentFrame::Error(e)) = last else {
                panic!("case {i}: expected an error frame, got {last:?}")
            };
            assert!(expected(&e), "case {i}: {e}");
        }
        // The server still accepts and serves.
        let mut s = UnixStream::connect(&path).await.unwrap();
        send(&mut s, &hello(Some("secret"))).await;
        assert!(matches!(
            recv(&mut s).await,
            Some(AgentFrame::Welcome { .. })
        ));
    }

    #[tokio::test]
    async fn a_pending_wait_does_not_hold_up_later_calls() {
        let (_dir, path) = server(Tenants {
            token: "secret",
            uid: None,
        })
        .await;
        let mut s = UnixStream::connect(&path).await.unwrap();
        send(&mut s, &hello(Some("secret"))).await;
        recv(&mut s).await.unwrap();
        let pid = nefele_core::ids::Pid::new(NodeId(1), nefele_core::ids::Incarnation(1), 1);
        send(
            &mut s,
            &ClientFrame::Call {
                id: 1,
                call: Call::Wait(pid),
            },
        )
        .await;
        send(
            &mut s,
            &ClientFrame::Call {
                id: 2,
                call: Call::Ps,
            },
        )
        .await;
        assert!(matches!(
            recv(&mut s).await,
            Some(AgentFrame::Reply { id: 2, .. })
        ));
    }

    #[tokio::test]
    async fn a_call_answered_while_a_frame_is_half_read_does_not_break_the_stream() {
        let (_dir, path) = server(Tenants {
            token: "secret",
            uid: None,
        })
        .await;
        let mut s = UnixStream::connect(&path).await.unwrap();
        send(&mut s, &hello(Some("secret"))).await;
        recv(&mut s).await.unwrap();
        send(
            &mut s,
            &ClientFrame::Call {
                id: 1,
                call: Call::Ps,
            },
        )
        .await;
        let second = proto::encode(
            &ClientFrame::Call {
                id: 2,
                call: Call::Ps,
            },
            MAX_REQUEST_BYTES,
        )
        .unwrap();
        // Half of the next frame's prefix, then a pause in which call 1 is answered.
        send_raw(&mut s, &second[..2]).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        send_raw(&mut s, &second[2..]).await;
        // Before the fix the half-read prefix was lost and the server waited forever.
        let replies = tokio::time::timeout(Duration::from_secs(5), async {
            (recv(&mut s).await, recv(&mut s).await)
        })
        .await
        .expect("both calls answered");
        assert!(matches!(replies.0, Some(AgentFrame::Reply { id: 1, .. })));
        assert!(matches!(replies.1, Some(AgentFrame::Reply { id: 2, .. })));
    }

    /// Whether the agent closes `s` (EOF, after any error frame) within a short while.
    async fn closed_soon(s: &mut UnixStream) -> bool {
        tokio::time::timeout(Duration::from_secs(5), async {
            while recv(s).await.is_some() {}
        })
        .await
        .is_ok()
    }

    /// No frame arrives on `s` for a while.
    async fn silent(s: &mut UnixStream) -> bool {
        tokio::time::timeout(Duration::from_millis(300), recv(s))
            .await
            .is_err()
    }

    fn two_tenants() -> Tenants {
        Tenants {
            token: "secret",
            uid: Some(own_uid()),
        }
    }

    async fn connect_as(path: &Path, token: Option<&str>) -> UnixStream {
        let mut s = UnixStream::connect(path).await.unwrap();
        send(&mut s, &hello(token)).await;
        assert!(matches!(
            recv(&mut s).await,
            Some(AgentFrame::Welcome { .. })
        ));
        s
    }

    fn call(id: u64, call: Call) -> ClientFrame {
        ClientFrame::Call { id, call }
    }

    fn some_pid() -> nefele_core::ids::Pid {
        nefele_core::ids::Pid::new(NodeId(1), nefele_core::ids::Incarnation(1), 1)
    }

    #[tokio::test]
    async fn a_uid_holds_a_bounded_number_of_connections() {
        let limits = ApiLimits {
            connections_per_uid: 2,
            ..ApiLimits::default()
        };
        let (_dir, path) = server_with(two_tenants(), limits).await;
        let first = UnixStream::connect(&path).await.unwrap();
        let _second = connect_as(&path, Some("secret")).await;
        let mut third = UnixStream::connect(&path).await.unwrap();
        assert!(
            closed_soon(&mut third).await,
            "a third connection is closed at once"
        );
        drop(first);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _again = connect_as(&path, None).await;
    }

    #[tokio::test]
    async fn unauthenticated_connections_are_bounded_in_number_time_and_memory() {
        let limits = ApiLimits {
            unauthenticated: 2,
            hello_timeout: Duration::from_millis(200),
            ..ApiLimits::default()
        };
        let (_dir, path) = server_with(two_tenants(), limits).await;
        let mut idle = UnixStream::connect(&path).await.unwrap();
        let _idle2 = UnixStream::connect(&path).await.unwrap();
        let mut over = UnixStream::connect(&path).await.unwrap();
        assert!(closed_soon(&mut over).await);
        // The idle ones are told off and closed once their time is up.
        let started = tokio::time::Instant::now();
        let mut last = None;
        while let Some(frame) = recv(&mut idle).await {
            last = Some(frame);
        }
        assert!(
            matches!(last, Some(AgentFrame::Error(ProtocolError::Unexpected(_)))),
            "{last:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        // A Hello larger than MAX_HELLO_BYTES is refused from its length alone,
        // though it is far under the limit of an authenticated call.
        let mut big = UnixStream::connect(&path).await.unwrap();
        send_raw(&mut big, &(MAX_HELLO_BYTES + 1).to_be_bytes()).await;
        let Some(AgentFrame::Error(e)) = recv(&mut big).await else {
            panic!("expected an error")
        };
        assert!(matches!(e, ProtocolError::TooLarge { .. }), "{e}");
    }

    #[tokio::test]
    async fn a_tenants_calls_in_flight_are_bounded_across_connections_and_closing_does_not_reset_them(
    ) {
        let limits = ApiLimits {
            calls_per_tenant: 2,
            ..ApiLimits::default()
        };
        let (_dir, path) = server_with(two_tenants(), limits).await;
        // Tenant 1 fills its budget with waits, then leaves: the agent still works on them.
        let mut gone = connect_as(&path, Some("secret")).await;
        send(&mut gone, &call(1, Call::Wait(some_pid()))).await;
        send(&mut gone, &call(2, Call::Wait(some_pid()))).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(gone);
        let mut tenant1 = connect_as(&path, Some("secret")).await;
        send(&mut tenant1, &call(3, Call::Ps)).await;
        assert!(
            silent(&mut tenant1).await,
            "over its budget, tenant 1 waits"
        );
        // Another tenant is not slowed.
        let mut tenant2 = connect_as(&path, None).await;
        send(&mut tenant2, &call(1, Call::Ps)).await;
        assert!(matches!(
            recv(&mut tenant2).await,
            Some(AgentFrame::Reply { id: 1, .. })
        ));
        // Once the agent answers the waits, tenant 1's call goes through.
        send(
            &mut tenant2,
            &call(
                2,
                Call::Kill {
                    pid: some_pid(),
                    signal: nefele_core::host::Signal::Kill,
                },
            ),
        )
        .await;
        assert!(matches!(
            recv(&mut tenant2).await,
            Some(AgentFrame::Reply { id: 2, .. })
        ));
        let reply = tokio::time::timeout(Duration::from_secs(5), recv(&mut tenant1)).await;
        assert!(
            matches!(reply, Ok(Some(AgentFrame::Reply { id: 3, .. }))),
            "{reply:?}"
        );
    }

    #[tokio::test]
    async fn receives_waiting_for_mail_do_not_use_up_the_tenants_budget() {
        let limits = ApiLimits {
            calls_per_tenant: 1,
            ..ApiLimits::default()
        };
        let (_dir, path) = server_with(two_tenants(), limits).await;
        let mut s = connect_as(&path, Some("secret")).await;
        let waiting = |pid| Call::Recv {
            pid,
            max: 1,
            wait: Some(Duration::from_secs(60)),
        };
        let other = nefele_core::ids::Pid::new(NodeId(1), nefele_core::ids::Incarnation(1), 2);
        send(&mut s, &call(1, waiting(some_pid()))).await;
        send(&mut s, &call(2, waiting(other))).await;
        // Both wait in the agent, yet the tenant's one call still goes through.
        send(&mut s, &call(3, Call::Ps)).await;
        let reply = tokio::time::timeout(Duration::from_secs(5), recv(&mut s)).await;
        assert!(
            matches!(reply, Ok(Some(AgentFrame::Reply { id: 3, .. }))),
            "{reply:?}"
        );
    }

    #[tokio::test]
    async fn a_tenants_requested_processes_are_bounded() {
        let limits = ApiLimits {
            processes_per_tenant: 10,
            ..ApiLimits::default()
        };
        let (_dir, path) = server_with(two_tenants(), limits).await;
        let mut s = connect_as(&path, Some("secret")).await;
        let spec = nefele_core::host::ProcSpec::default();
        send(
            &mut s,
            &call(
                1,
                Call::NSpawn {
                    n: 11,
                    spec: spec.clone(),
                },
            ),
        )
        .await;
        let Some(AgentFrame::Reply {
            id: 1,
            reply: Reply::Api(ApiReply::Spawned(Err(SpawnError::Invalid(why)))),
        }) = recv(&mut s).await
        else {
            panic!("expected a refusal")
        };
        assert!(why.contains("11 processes"), "{why}");
        // Within the budget, calls go to the agent.
        send(&mut s, &call(2, Call::NSpawn { n: 10, spec })).await;
        assert!(matches!(
            recv(&mut s).await,
            Some(AgentFrame::Reply { id: 2, .. })
        ));
    }

    #[tokio::test]
    async fn a_process_endpoint_acts_only_as_its_own_process() {
        let dir = tempfile::tempdir().unwrap();
        let server = ApiServer::bind(&dir.path().join("api.sock")).await.unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let limits = ApiLimits::default();
        tokio::spawn(server.with_endpoints(rx).serve_with(
            fake_agent(),
            Arc::new(two_tenants()),
            limits,
        ));
        let me = some_pid();
        let sibling = nefele_core::ids::Pid::new(NodeId(1), nefele_core::ids::Incarnation(1), 2);
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        tx.send(Handover::Endpoint(Endpoint {
            pid: me,
            tenant: TenantId(5),
            stream: ours,
        }))
        .unwrap();
        theirs.set_nonblocking(true).unwrap();
        let mut s = UnixStream::from_std(theirs).unwrap();
        // Any token (here a wrong one): the endpoint is its process's.
        send(&mut s, &hello(Some("wrong"))).await;
        assert_eq!(
            recv(&mut s).await,
            Some(AgentFrame::Welcome {
                version: PROTOCOL_VERSION,
                tenant: TenantId(5),
                node: NodeId(9),
                pid: Some(me),
            })
        );
        let send_as = |from| Call::Send {
            from,
            to: nefele_api::messaging::Dest::Pid(me),
            data: b"hi".to_vec(),
            delivery: nefele_api::messaging::Delivery::AtMostOnce,
            block: true,
        };
        // As a sibling: refused here, typed, and the agent never sees it (the fake
        // agent would answer a Ps-shaped reply).
        send(&mut s, &call(1, send_as(sibling))).await;
        assert_eq!(
            recv(&mut s).await,
            Some(AgentFrame::Reply {
                id: 1,
                reply: Reply::Api(ApiReply::Sent(Err(SendError::NotSender))),
            })
        );
        for (id, c) in [
            (
                2,
                Call::Recv {
                    pid: sibling,
                    max: 1,
                    wait: None,
                },
            ),
            (
                3,
                Call::Register {
                    name: "n".into(),
                    pid: sibling,
                },
            ),
            (
                4,
                Call::Join {
                    group: "g".into(),
                    pid: sibling,
                },
            ),
            (
                5,
                Call::Monitor {
                    watcher: sibling,
                    watched: me,
                },
            ),
            (
                6,
                Call::Distance {
                    from: sibling,
                    to: me,
                },
            ),
        ] {
            let expected = not_entitled(&c);
            send(&mut s, &call(id, c)).await;
            assert_eq!(
                recv(&mut s).await,
                Some(AgentFrame::Reply {
                    id,
                    reply: Reply::Api(expected),
                })
            );
        }
        // As itself: carried to the agent, for the endpoint's tenant.
        send(&mut s, &call(7, send_as(me))).await;
        let Some(AgentFrame::Reply {
            id: 7,
            reply: Reply::Api(ApiReply::Ps(ps)),
        }) = recv(&mut s).await
        else {
            panic!("expected the fake agent's answer")
        };
        assert_eq!(ps.unanswered, 5, "the call ran as the endpoint's tenant");
        // The next program of the process says Hello again on the same endpoint.
        send(&mut s, &hello(None)).await;
        assert!(matches!(
            recv(&mut s).await,
            Some(AgentFrame::Welcome { pid: Some(p), .. }) if p == me
        ));
    }

    /// Identifies every caller as `Ok(pid)`, or refuses it, as told.
    struct Fixed(Result<nefele_core::ids::Pid, String>);

    impl IdentifyPeer for Fixed {
        fn identify(&self, _: BorrowedFd<'_>, _: TenantId) -> Result<Pid, String> {
            self.0.clone()
        }
    }

    #[tokio::test]
    async fn a_caller_on_a_tenant_socket_is_served_as_the_process_it_is_identified_as() {
        let dir = tempfile::tempdir().unwrap();
        let server = ApiServer::bind(&dir.path().join("api.sock")).await.unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(server.with_endpoints(rx).serve_with(
            fake_agent(),
            Arc::new(two_tenants()),
            ApiLimits::default(),
        ));
        let me = some_pid();
        let sibling = nefele_core::ids::Pid::new(NodeId(1), nefele_core::ids::Incarnation(1), 2);
        // One per tenant: a newer one of the same tenant replaces the older.
        let socket = |tenant: u32, identify: Fixed| {
            let path = dir.path().join(format!("t{tenant}.sock"));
            let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
            tx.send(Handover::Socket(TenantSocket {
                tenant: TenantId(tenant),
                listener,
                identify: Arc::new(identify),
            }))
            .unwrap();
            path
        };
        let known = socket(5, Fixed(Ok(me)));
        let mut first = UnixStream::connect(&known).await.unwrap();
        let s = &mut first;
        send(s, &hello(Some("any token"))).await;
        assert_eq!(
            recv(s).await,
            Some(AgentFrame::Welcome {
                version: PROTOCOL_VERSION,
                tenant: TenantId(5),
                node: NodeId(9),
                pid: Some(me),
            })
        );
        // Scoped as an endpoint: never another pid of the tenant.
        let call_as = Call::Register {
            name: "n".into(),
            pid: sibling,
        };
        let expected = not_entitled(&call_as);
        send(s, &call(1, call_as)).await;
        assert_eq!(
            recv(s).await,
            Some(AgentFrame::Reply {
                id: 1,
                reply: Reply::Api(expected),
            })
        );
        // A caller the backend does not identify is closed without a word.
        let refused = socket(6, Fixed(Err("foreign".into())));
        let mut s = UnixStream::connect(&refused).await.unwrap();
        send(&mut s, &hello(None)).await;
        assert!(closed_soon(&mut s).await);
        assert!(recv(&mut s).await.is_none());
        // A process holds a bounded number of connections through the socket.
        let mut held = vec![first];
        for _ in 1..CONNECTIONS_PER_PROCESS {
            let mut s = UnixStream::connect(&known).await.unwrap();
            send(&mut s, &hello(None)).await;
            assert!(matches!(
                recv(&mut s).await,
                Some(AgentFrame::Welcome { .. })
            ));
            held.push(s);
        }
        let mut over = UnixStream::connect(&known).await.unwrap();
        assert!(closed_soon(&mut over).await);
        // The tenant's holder ended: no more connections through its socket, the
        // ones made go on.
        tx.send(Handover::SocketGone(TenantId(5))).unwrap();
        let refused_at = tokio::time::Instant::now() + Duration::from_secs(5);
        while UnixStream::connect(&known).await.is_ok() {
            assert!(tokio::time::Instant::now() < refused_at, "still accepted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let s = &mut held[0];
        send(s, &call(2, Call::Ps)).await;
        assert!(matches!(
            recv(s).await,
            Some(AgentFrame::Reply { id: 2, .. })
        ));
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let live = ApiServer::bind(&path).await.unwrap();
        assert!(matches!(
            ApiServer::bind(&path).await,
            Err(ServeError::InUse(_))
        ));
        let mode = std::fs::metadata(live.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o666);
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(
            ApiServer::bind(&file).await,
            Err(ServeError::NotASocket(_))
        ));
    }
}
