//! Links between processes of two hosts (libnefele's `link` module says what a
//! link is): the opener's agent dials the receiver's agent, and the receiver's
//! agent takes such connections at its transport port and leaves them at its
//! link desk.
//!
//! The connection opens with the transport's `LINK_MAGIC`, then a preface naming
//! the token, the opener and the receiver (`nefele::link::preface`); the receiving
//! agent answers one byte, [`HELD`] once the end waits at its desk, and anything
//! else (or nothing) when it refuses. The opener's agent sends the marker only
//! after `HELD`, so a receiver's claim never comes before its end.
//!
//! What the receiving agent checks against its own state before it holds an end:
//! the receiver is a pid of this agent, and the connection comes from the address
//! of the opener's agent (its live transport connection or its listen address).
//! The preface itself is not secret and not trusted beyond that: a claim still
//! needs the token, which only the marker (over the agents' encrypted transport)
//! carries, and a connection that is not the opener's cannot write records that
//! open under the link's key, so its first record ends the link.
//!
//! Invariants: every step is bounded in time ([`DIAL_PATIENCE`],
//! [`PREFACE_PATIENCE`]); at most [`PREFACES_AT_ONCE`] connections are read at
//! once and `LINKS_WAITING` more wait (the runtime's channel; past that the
//! transport closes them), and the desk holds a bounded number of ends.

use crate::handle::AgentHandle;
use crate::link_desk::LinkDesk;
use nefele::link::{preface, read_preface, PREFACE_LEN};
use nefele_core::ids::Pid;
use nefele_transport_tcp::{InboundLink, LINK_MAGIC};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// The receiving agent's answer once the end waits at its desk.
pub(crate) const HELD: u8 = 1;
/// The longest the opener's agent waits to connect and to be answered.
pub(crate) const DIAL_PATIENCE: Duration = Duration::from_secs(5);
/// The longest the receiving agent waits for a connection's preface.
pub(crate) const PREFACE_PATIENCE: Duration = Duration::from_secs(5);
/// The most link connections whose preface is read at once.
pub(crate) const PREFACES_AT_ONCE: usize = 64;

/// Why no connection was made for a link.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DialError {
    /// This agent knows no address of the receiver's agent.
    #[error("no address known for the receiver's agent")]
    NoAddress,
    /// The connection failed or took too long.
    #[error("cannot reach the receiver's agent for a link: {0}")]
    Unreachable(String),
    /// The receiver's agent would not hold the end.
    #[error("the receiver's agent refused the link")]
    Refused,
}

/// Dials the agent of `to` for the link from `from` under `token`; the opener's
/// end once that agent holds the other (the client makes each end blocking).
pub(crate) async fn dial(
    agent: &AgentHandle,
    token: u64,
    from: Pid,
    to: Pid,
) -> Result<OwnedFd, DialError> {
    let addrs = agent
        .addrs(to.origin())
        .await
        .map_err(|e| DialError::Unreachable(e.to_string()))?;
    let addr = addrs.listen.ok_or(DialError::NoAddress)?;
    let unreachable = |e: std::io::Error| DialError::Unreachable(e.to_string());
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.map_err(unreachable)?;
        stream.set_nodelay(true).map_err(unreachable)?;
        let mut opening = LINK_MAGIC.to_vec();
        opening.extend_from_slice(&preface(token, from, to));
        stream.write_all(&opening).await.map_err(unreachable)?;
        let mut answer = [0u8; 1];
        match stream.read_exact(&mut answer).await {
            Ok(_) if answer[0] == HELD => Ok(stream),
            _ => Err(DialError::Refused),
        }
    };
    let stream = timeout(DIAL_PATIENCE, exchange)
        .await
        .map_err(|_| DialError::Unreachable(format!("no answer from {addr} in time")))??;
    Ok(stream.into_std().map_err(unreachable)?.into())
}

/// Takes the link connections that come to this agent, each in its own task,
/// until the transport stops.
pub(crate) async fn serve(
    mut inbound: mpsc::Receiver<InboundLink>,
    agent: AgentHandle,
    desk: Arc<LinkDesk>,
) {
    let readers = Arc::new(tokio::sync::Semaphore::new(PREFACES_AT_ONCE));
    while let Some(link) = inbound.recv().await {
        let Ok(reader) = readers.clone().acquire_owned().await else {
            return;
        };
        let (agent, desk) = (agent.clone(), desk.clone());
        tokio::spawn(async move {
            let remote = link.remote;
            if let Err(why) = take(link, &agent, &desk).await {
                tracing::debug!(%remote, why, "link connection refused");
            }
            drop(reader);
        });
    }
}

/// Reads `link`'s preface, checks it, and leaves its connection at `desk`.
async fn take(link: InboundLink, agent: &AgentHandle, desk: &LinkDesk) -> Result<(), String> {
    let InboundLink { mut stream, remote } = link;
    let mut bytes = [0u8; PREFACE_LEN];
    timeout(PREFACE_PATIENCE, stream.read_exact(&mut bytes))
        .await
        .map_err(|_| "no preface in time".to_owned())?
        .map_err(|e| e.to_string())?;
    let (token, from, to) = read_preface(&bytes).ok_or("a malformed preface")?;
    if to.origin() != agent.node() {
        return Err(format!("{to} is not a process of this agent"));
    }
    let opener = agent
        .addrs(from.origin())
        .await
        .map_err(|e| e.to_string())?;
    if !opener.is_from(remote.ip()) {
        return Err(format!(
            "{remote} is not the address of {}, the agent of {from}",
            from.origin()
        ));
    }
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    // The desk's end is a second descriptor of the connection: this one answers.
    let std = stream.into_std().map_err(|e| e.to_string())?;
    let end = std.try_clone().map_err(|e| e.to_string())?;
    if !desk
        .put_at(token, from, to, end.into())
        .map_err(|e| e.to_string())?
    {
        return Err(format!("token {token:#x} is taken"));
    }
    let mut answer = TcpStream::from_std(std).map_err(|e| e.to_string())?;
    timeout(PREFACE_PATIENCE, answer.write_all(&[HELD]))
        .await
        .map_err(|_| "the answer took too long".to_owned())?
        .map_err(|e| e.to_string())
}
