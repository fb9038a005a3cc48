//! Inbound connections: accept, authenticate, apply the tie-break, answer the
//! verdict and hand the connection over.
//!
//! Invariants: at most `max_pending_handshakes` unauthenticated connections
//! are in progress, and at most `max_pending_handshakes_per_ip` from one
//! address (more are closed at once); each handshake is bounded by the
//! handshake timeout; a refused peer is logged with its address and the id it
//! claimed, and is closed having received no proof and no frame.
//!
//! A connection that opens with [`LINK_MAGIC`] instead of a hello is a process
//! link's, not an agent's: it is handed, unauthenticated and with those four
//! bytes read, to the embedding agent's [`TcpConfig::links`] (closed when there
//! is none, or it is full), whose links carry their own end-to-end seal.
//!
//! [`TcpConfig::links`]: crate::TcpConfig::links

use crate::auth::SessionKeys;
use crate::handshake::{self, HandshakeError, Verdict};
use crate::registry::ConnectionInfo;
use crate::shared::{IpSlot, Refused, Shared};
use crate::transport::{InboundLink, LINK_MAGIC};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{sleep, timeout};

/// Accepts connections until the task is aborted.
pub(crate) async fn run(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let Some(slot) = shared.ip_slot(remote.ip()) else {
                    tracing::warn!(%remote, "too many handshakes in progress from this address; closing");
                    continue;
                };
                match shared.handshakes.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tokio::spawn(accept_one(shared.clone(), stream, remote, (permit, slot)));
                    }
                    Err(_) => tracing::warn!(%remote, "too many handshakes in progress; closing"),
                }
            }
            Err(err) => {
                // E.g. out of file descriptors: wait instead of spinning.
                tracing::warn!(%err, "accept failed");
                sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn accept_one(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    remote: SocketAddr,
    permit: (OwnedSemaphorePermit, IpSlot),
) {
    let mut first = [0u8; 4];
    match timeout(
        shared.settings.handshake_timeout,
        stream.read_exact(&mut first),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => return tracing::debug!(%remote, %err, "closed before its first bytes"),
        Err(_) => return tracing::warn!(%remote, "no first bytes in time; closing"),
    }
    if first == LINK_MAGIC {
        drop(permit);
        return hand_over_link(&shared, stream, remote);
    }
    match authenticate(&shared, &mut stream, first, remote).await {
        Ok(Some((admitted, keys))) => {
            drop(permit);
            shared.spawn_connection(admitted, stream, &keys);
        }
        Ok(None) => {}
        Err(err) => tracing::warn!(%remote, %err, "refused inbound connection"),
    }
}

/// Gives a link's connection to the agent's links, or closes it.
fn hand_over_link(shared: &Shared, stream: TcpStream, remote: SocketAddr) {
    let Some(links) = &shared.links else {
        return tracing::debug!(%remote, "a link connection, and this agent takes none; closing");
    };
    if links.try_send(InboundLink { stream, remote }).is_err() {
        tracing::warn!(%remote, "too many link connections waiting; closing");
    }
}

/// The admitted connection, `None` when the pair keeps another one; `first` is
/// the hello's first bytes, read already.
async fn authenticate(
    shared: &Arc<Shared>,
    stream: &mut TcpStream,
    first: [u8; 4],
    remote: SocketAddr,
) -> Result<Option<(crate::shared::Admitted, SessionKeys)>, HandshakeError> {
    let settings = &shared.settings;
    stream.set_nodelay(true)?;
    let local_addr = stream.local_addr()?;
    let verified = timeout(
        settings.handshake_timeout,
        handshake::accept_verify(stream, Some(first), settings.me, &settings.secrets),
    )
    .await
    .map_err(|_| HandshakeError::Timeout)??;
    let peer = verified.peer();
    let info = ConnectionInfo {
        dialer: peer,
        local_addr,
        peer_addr: remote,
    };
    let (admitted, verdict) = match shared.admit(peer, info) {
        Ok(admitted) => (Some(admitted), Verdict::Accept),
        Err(Refused::Duplicate) => (None, Verdict::Duplicate),
        Err(Refused::ShuttingDown) => return Ok(None),
    };
    timeout(
        settings.handshake_timeout,
        handshake::accept_finish(stream, &verified, &settings.secrets, verdict),
    )
    .await
    .map_err(|_| HandshakeError::Timeout)??;
    if admitted.is_none() {
        tracing::debug!(%peer, %remote, "pair already connected; closing the duplicate");
    }
    Ok(admitted.map(|a| (a, verified.keys().clone())))
}
