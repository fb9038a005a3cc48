//! [`AgentHandle`]: a cloneable, in-process handle to the driver task.
//!
//! Each call travels to the driver with its own reply channel and the caller
//! awaits only that channel, so calls never block each other (a `Wait` may take
//! minutes while `Ps` calls come and go). The tenant is an argument here, not
//! part of the call: the API server fills it from the connection's
//! authentication, so a client cannot act for another tenant.
//!
//! The answer goes wherever the call's [`Answer`] says: a oneshot channel the
//! caller awaits, or (the API server's fast path) straight to a client
//! connection's writer, so a call costs the driver's queue and nothing more.
//!
//! A call may carry a [`Hold`]: the driver keeps it until the agent has
//! answered the call, also when the caller has gone, and then drops it. The API
//! server holds its per-tenant budget this way, so that a call counts against
//! its tenant for as long as the agent works on it.

use nefele::proto::{Call, Reply};
use nefele_core::ids::{NodeId, TenantId};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How many requests may wait for the driver before callers wait to enqueue.
pub(crate) const REQUEST_QUEUE: usize = 1024;

/// The driver has stopped (shutdown, or a fatal error); the call was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the agent runtime is gone")]
pub struct RuntimeGone;

/// Something the driver keeps until the agent has answered a call (see the module docs).
pub type Hold = Box<dyn std::any::Any + Send>;

/// Where the driver puts the answer to one call.
pub trait Answer: Send + 'static {
    /// Delivers the agent's answer.
    fn answer(self: Box<Self>, reply: Reply);
    /// Whether nobody waits for the answer any more (the caller or its
    /// connection has gone): a wait so abandoned is cancelled.
    fn abandoned(&self) -> bool;
}

impl std::fmt::Debug for dyn Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Answer")
    }
}

impl Answer for oneshot::Sender<Reply> {
    fn answer(self: Box<Self>, reply: Reply) {
        // A caller that gave up has dropped its end; nothing to do.
        let _ = self.send(reply);
    }
    fn abandoned(&self) -> bool {
        self.is_closed()
    }
}

/// What a handle asks the driver.
#[derive(Debug)]
pub(crate) enum Request {
    /// Answer `call` for `tenant` on `reply`.
    Call {
        tenant: TenantId,
        call: Box<Call>,
        reply: Box<dyn Answer>,
        hold: Option<Hold>,
    },
    /// Where agent `node` is: its listen address in the book, and the address
    /// its live connection comes from.
    Where {
        node: NodeId,
        reply: oneshot::Sender<AgentAddrs>,
    },
    /// Render the agent's metrics (see [`crate::metrics`]).
    Metrics { reply: oneshot::Sender<String> },
    /// Leave the cluster, keep carrying messages out for `grace`, then stop.
    Shutdown {
        grace: Duration,
        done: oneshot::Sender<()>,
    },
}

/// Where another agent is, as this one knows it ([`AgentHandle::addrs`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentAddrs {
    /// Where it listens (its transport port), from its beacons or the configuration.
    pub listen: Option<std::net::SocketAddr>,
    /// Where the authenticated connection with it comes from, while one is up.
    pub connected: Option<std::net::SocketAddr>,
}

impl AgentAddrs {
    /// Whether a connection from `ip` may be the agent's own: it is the address of
    /// its live connection, or of its listen address.
    #[must_use]
    pub fn is_from(&self, ip: std::net::IpAddr) -> bool {
        [self.listen, self.connected]
            .into_iter()
            .flatten()
            .any(|a| a.ip() == ip)
    }
}

/// A handle to one running agent. Cheap to clone; every clone talks to the same driver.
#[derive(Debug, Clone)]
pub struct AgentHandle {
    node: NodeId,
    requests: mpsc::Sender<Request>,
}

impl AgentHandle {
    pub(crate) fn new(node: NodeId, requests: mpsc::Sender<Request>) -> Self {
        AgentHandle { node, requests }
    }

    /// The agent's node id.
    #[must_use]
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Carries out `call` for `tenant` and returns the agent's answer.
    pub async fn call(&self, tenant: TenantId, call: Call) -> Result<Reply, RuntimeGone> {
        self.call_holding(tenant, call, None).await
    }

    /// As [`AgentHandle::call`]; the driver drops `hold` once the agent has answered.
    pub async fn call_holding(
        &self,
        tenant: TenantId,
        call: Call,
        hold: Option<Hold>,
    ) -> Result<Reply, RuntimeGone> {
        let (reply, answer) = oneshot::channel();
        self.call_answering(tenant, call, Box::new(reply), hold)
            .await?;
        answer.await.map_err(|_| RuntimeGone)
    }

    /// Queues `call` for the driver, which hands the agent's answer to `reply` (and
    /// drops `hold` then). Returns once the call is queued: calls queued one after
    /// another reach the agent in that order.
    pub async fn call_answering(
        &self,
        tenant: TenantId,
        call: Call,
        reply: Box<dyn Answer>,
        hold: Option<Hold>,
    ) -> Result<(), RuntimeGone> {
        self.requests
            .send(Request::Call {
                tenant,
                call: Box::new(call),
                reply,
                hold,
            })
            .await
            .map_err(|_| RuntimeGone)
    }

    /// Where agent `node` is, as this agent knows it.
    pub async fn addrs(&self, node: NodeId) -> Result<AgentAddrs, RuntimeGone> {
        let (reply, addrs) = oneshot::channel();
        self.requests
            .send(Request::Where { node, reply })
            .await
            .map_err(|_| RuntimeGone)?;
        addrs.await.map_err(|_| RuntimeGone)
    }

    /// The agent's metrics now, in the Prometheus text format.
    pub async fn metrics(&self) -> Result<String, RuntimeGone> {
        let (reply, text) = oneshot::channel();
        self.requests
            .send(Request::Metrics { reply })
            .await
            .map_err(|_| RuntimeGone)?;
        text.await.map_err(|_| RuntimeGone)
    }

    /// Leaves the cluster cleanly: the agent hands over what it leads and tells its
    /// groups, keeps carrying messages out for `grace`, then stops. Returns when the
    /// driver has stopped. Tenant processes keep running.
    pub async fn shutdown(&self, grace: Duration) -> Result<(), RuntimeGone> {
        let (done, stopped) = oneshot::channel();
        self.requests
            .send(Request::Shutdown { grace, done })
            .await
            .map_err(|_| RuntimeGone)?;
        stopped.await.map_err(|_| RuntimeGone)
    }

    /// Whether the driver has stopped.
    #[must_use]
    pub fn is_gone(&self) -> bool {
        self.requests.is_closed()
    }
}
