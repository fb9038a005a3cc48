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
//! buffers are freed when it closes. A user who floods the socket slows only
//! itself, and a tenant only itself.

use crate::handle::AgentHandle;
use nefele::proto::{
    self, AgentFrame, ClientFrame, ProtocolError, MAX_REPLY_BYTES, MAX_REQUEST_BYTES,
    PROTOCOL_VERSION,
};
use nefele::proto::{Call, Reply};
use nefele_core::agent::ApiReply;
use nefele_core::ids::TenantId;
use nefele_core::placement::api::SpawnError;
use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// How many frames may wait for a connection's writer.
const WRITE_QUEUE: usize = 256;
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

/// A bound API socket.
#[derive(Debug)]
pub struct ApiServer {
    listener: UnixListener,
    path: PathBuf,
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
        })
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
        self,
        agent: AgentHandle,
        auth: Arc<dyn Authenticator>,
        limits: ApiLimits,
    ) {
        let admission = Arc::new(Admission::new(limits));
        loop {
            match self.listener.accept().await {
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

/// What a connection's writer task is asked to write.
enum Outgoing {
    Frame(AgentFrame),
    /// Write this error, then close the connection.
    Close(ProtocolError),
}

/// Why a frame could not be read.
enum ReadError {
    /// The client closed the connection (or it broke) between frames.
    Closed,
    /// The frame is bad; the client is told this.
    Protocol(ProtocolError),
}

/// Counts what is in use, per uid and per tenant, against the limits.
#[derive(Debug)]
struct Admission {
    limits: ApiLimits,
    unauthenticated: Arc<Semaphore>,
    state: Mutex<Usage>,
    /// Woken whenever a tenant's budget frees.
    freed: Notify,
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

async fn read_frame(reader: &mut OwnedReadHalf, max: u32) -> Result<ClientFrame, ReadError> {
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

async fn write_frames(mut writer: OwnedWriteHalf, mut outgoing: mpsc::Receiver<Outgoing>) {
    while let Some(out) = outgoing.recv().await {
        let (frame, last) = match out {
            Outgoing::Frame(f) => (f, false),
            Outgoing::Close(e) => (AgentFrame::Error(e), true),
        };
        let bytes = match proto::encode(&frame, MAX_REPLY_BYTES) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "reply not encodable; closing the connection");
                break;
            }
        };
        if writer.write_all(&bytes).await.is_err() || last {
            break;
        }
    }
    let _ = writer.shutdown().await;
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
    let (mut reader, writer) = stream.into_split();
    let (out, outgoing) = mpsc::channel(WRITE_QUEUE);
    let writer = tokio::spawn(write_frames(writer, outgoing));
    let timeout = admitted.admission.limits.hello_timeout;
    if let Some(tenant) = greet(&mut reader, uid, timeout, &agent, &*auth, &out).await {
        admitted.unauthenticated = None;
        let admission = admitted.admission.clone();
        serve_calls(&mut reader, tenant, &agent, &out, &admission).await;
    }
    drop(out);
    let _ = writer.await;
}

/// Reads and answers the `Hello`; the tenant if the connection is authenticated.
async fn greet(
    reader: &mut OwnedReadHalf,
    uid: u32,
    timeout: Duration,
    agent: &AgentHandle,
    auth: &dyn Authenticator,
    out: &mpsc::Sender<Outgoing>,
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
            };
            out.send(Outgoing::Frame(welcome)).await.ok()?;
            Some(tenant)
        }
        Err(e) => {
            tracing::info!(uid, error = %e, "api connection refused");
            let _ = out.send(Outgoing::Close(e)).await;
            None
        }
    }
}

/// Answers calls until the client leaves or sends something wrong.
async fn serve_calls(
    reader: &mut OwnedReadHalf,
    tenant: TenantId,
    agent: &AgentHandle,
    out: &mpsc::Sender<Outgoing>,
    admission: &Arc<Admission>,
) {
    let limits = &admission.limits;
    // Dropping the set when the client leaves abandons its calls still waiting
    // (their budget stays held by the driver until the agent answers).
    let mut calls = JoinSet::new();
    loop {
        // Reading is never raced against anything: a frame half read and then
        // dropped would desynchronise the stream.
        while calls.try_join_next().is_some() {}
        if calls.len() >= limits.calls_per_connection {
            calls.join_next().await;
            continue;
        }
        let error = match read_frame(reader, MAX_REQUEST_BYTES).await {
            Ok(ClientFrame::Call { id, call }) => {
                let processes = requested_processes(&call);
                if processes > limits.processes_per_tenant {
                    let refusal = SpawnError::Invalid(format!(
                        "{processes} processes at once is more than this agent takes from one tenant ({})",
                        limits.processes_per_tenant
                    ));
                    let reply = Reply::Api(ApiReply::Spawned(Err(refusal)));
                    if out
                        .send(Outgoing::Frame(AgentFrame::Reply { id, reply }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    continue;
                }
                let budget = admission.reserve(tenant, processes).await;
                let (agent, out) = (agent.clone(), out.clone());
                calls.spawn(async move {
                    let hold: crate::handle::Hold = Box::new(budget);
                    let frame = match agent.call_holding(tenant, call, Some(hold)).await {
                        Ok(reply) => Outgoing::Frame(AgentFrame::Reply { id, reply }),
                        Err(_) => Outgoing::Close(ProtocolError::ShuttingDown),
                    };
                    let _ = out.send(frame).await;
                });
                continue;
            }
            Ok(ClientFrame::Hello { .. }) => ProtocolError::Unexpected("a second Hello".into()),
            Err(ReadError::Protocol(e)) => e,
            Err(ReadError::Closed) => return,
        };
        tracing::info!(%tenant, error = %error, "api connection closed for a bad frame");
        let _ = out.send(Outgoing::Close(error)).await;
        return;
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
                        Call::Wait(_) => waiting.push((tenant, reply, hold)),
                        Call::Kill { .. } => {
                            for (tenant, reply, _hold) in waiting.drain(..) {
                                let _ = reply.send(answer(tenant));
                            }
                            let _ = reply.send(answer(tenant));
                        }
                        _ => {
                            let _ = reply.send(Reply::Api(ApiReply::Ps(PsReply {
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
                node: NodeId(9)
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
