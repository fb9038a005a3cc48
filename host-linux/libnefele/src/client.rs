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

use crate::proto::{
    self, AgentFrame, Call, ClientFrame, MembersView, ProtocolError, Reply, MAX_REPLY_BYTES,
    MAX_REQUEST_BYTES, PROTOCOL_VERSION,
};
use nefele_api::calls::ApiReply;
use nefele_api::ids::{NodeId, Pid, TenantId};
use nefele_api::replies::{InfoError, KillError, ProcInfo, PsReply, SpawnError, WaitError};
use nefele_api::spec::{ExitStatus, ProcSpec, Signal};
use nefele_api::supervision::{
    SupervisedSpawn, SupervisionError, SupervisionSpec, SupervisorId, SupervisorInfo,
};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Where the agent listens when nothing else is said.
pub const DEFAULT_SOCKET: &str = "/run/nefele/api.sock";
/// The environment variable naming the socket.
pub const SOCKET_ENV: &str = "NEFELE_SOCKET";
/// The environment variable holding the tenant token.
pub const TOKEN_ENV: &str = "NEFELE_TOKEN";

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
    /// A supervision call failed.
    #[error(transparent)]
    Supervision(#[from] SupervisionError),
}

/// The socket path: `NEFELE_SOCKET` if set, else [`DEFAULT_SOCKET`].
#[must_use]
pub fn default_socket() -> PathBuf {
    std::env::var_os(SOCKET_ENV).map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from)
}

/// One authenticated connection to the local agent.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    path: PathBuf,
    tenant: TenantId,
    node: NodeId,
    next_id: u64,
}

impl Client {
    /// Connects to the agent at `path` and authenticates with `token` (or, without
    /// one, by the caller's uid).
    pub fn connect(path: impl AsRef<Path>, token: Option<&str>) -> Result<Client, ClientError> {
        let path = path.as_ref().to_path_buf();
        let stream = UnixStream::connect(&path).map_err(|source| ClientError::Io {
            path: path.clone(),
            source,
        })?;
        let mut client = Client {
            stream,
            path,
            tenant: TenantId(0),
            node: NodeId(0),
            next_id: 1,
        };
        client.send(&ClientFrame::Hello {
            version: PROTOCOL_VERSION,
            token: token.map(str::to_owned),
        })?;
        match client.receive()? {
            AgentFrame::Welcome { tenant, node, .. } => {
                client.tenant = tenant;
                client.node = node;
                Ok(client)
            }
            AgentFrame::Error(e) => Err(e.into()),
            other => Err(ClientError::Unexpected(format!("{other:?} before Welcome"))),
        }
    }

    /// Connects as [`Client::connect`] does, to [`default_socket`] with the token
    /// from `NEFELE_TOKEN` if set.
    pub fn connect_default() -> Result<Client, ClientError> {
        let token = std::env::var(TOKEN_ENV).ok();
        Client::connect(default_socket(), token.as_deref())
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
        self.spawned(Call::NSpawn {
            n,
            spec: spec.clone(),
        })
    }

    /// Starts different processes, atomically: all or none. Pids come in spec order.
    pub fn c_spawn(&mut self, specs: &[ProcSpec]) -> Result<Vec<Pid>, ClientError> {
        self.spawned(Call::CSpawn(specs.to_vec()))
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
        }
    }

    fn spawned(&mut self, call: Call) -> Result<Vec<Pid>, ClientError> {
        match self.api(call)? {
            ApiReply::Spawned(r) => Ok(r?),
            other => Err(mismatch("spawn", &other)),
        }
    }

    fn api(&mut self, call: Call) -> Result<ApiReply, ClientError> {
        match self.call(call)? {
            Reply::Api(reply) => Ok(reply),
            Reply::Members(_) => Err(ClientError::Unexpected("members for an API call".into())),
        }
    }

    /// Sends `call` and reads frames until its reply.
    fn call(&mut self, call: Call) -> Result<Reply, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&ClientFrame::Call { id, call })?;
        loop {
            match self.receive()? {
                AgentFrame::Reply { id: got, reply } if got == id => return Ok(reply),
                // A reply to an earlier call abandoned by an error: skip it.
                AgentFrame::Reply { .. } => {}
                AgentFrame::Error(e) => return Err(e.into()),
                AgentFrame::Welcome { .. } => {
                    return Err(ClientError::Unexpected("a second Welcome".into()))
                }
            }
        }
    }

    fn send(&mut self, frame: &ClientFrame) -> Result<(), ClientError> {
        let bytes = proto::encode(frame, MAX_REQUEST_BYTES)
            .map_err(|e| ProtocolError::Malformed(format!("request not encodable: {e}")))?;
        self.stream.write_all(&bytes).map_err(|e| self.io(e))
    }

    fn receive(&mut self) -> Result<AgentFrame, ClientError> {
        let mut prefix = [0u8; 4];
        self.stream
            .read_exact(&mut prefix)
            .map_err(|e| self.io(e))?;
        let len = proto::check_len(prefix, MAX_REPLY_BYTES)?;
        let mut payload = vec![0u8; len];
        self.stream
            .read_exact(&mut payload)
            .map_err(|e| self.io(e))?;
        proto::decode(&payload, MAX_REPLY_BYTES)
            .map_err(|e| ProtocolError::Malformed(format!("reply: {e}")).into())
    }

    fn io(&self, source: std::io::Error) -> ClientError {
        ClientError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

fn mismatch(call: &str, reply: &ApiReply) -> ClientError {
    ClientError::Unexpected(format!("{reply:?} in answer to {call}"))
}
