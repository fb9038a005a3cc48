//! The dialer of one peer: while the peer has an address and no connection,
//! connect, authenticate and hand the connection over; on failure wait an
//! exponential backoff with jitter, and start again.
//!
//! Invariants: one dialer task per peer with an address; it never dials while
//! the peer has a current connection (either direction); it wakes early when
//! the connection ends, the address changes or the peer is removed.

use crate::backoff::Backoff;
use crate::handshake::{self, HandshakeError};
use crate::registry::ConnectionInfo;
use crate::shared::{Refused, Shared};
use nefele_core::NodeId;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{sleep, timeout};

/// What the dialer should do now.
enum Next {
    Dial(SocketAddr),
    Wait,
    Stop,
}

fn next(shared: &Shared, peer: NodeId) -> Next {
    let registry = shared.registry();
    match registry.peers.get(&peer) {
        _ if registry.closed => Next::Stop,
        Some(entry) if entry.conn.is_some() => Next::Wait,
        Some(entry) => entry.addr.map_or(Next::Stop, Next::Dial),
        None => Next::Stop,
    }
}

/// The dial loop of `peer` until the peer is removed or the transport dropped.
pub(crate) async fn run(shared: Arc<Shared>, peer: NodeId, wake: Arc<Notify>) {
    let mut backoff = Backoff::new(shared.settings.backoff);
    let mut rng = SmallRng::from_entropy();
    loop {
        let addr = match next(&shared, peer) {
            Next::Stop => return,
            Next::Wait => {
                wake.notified().await;
                continue;
            }
            Next::Dial(addr) => addr,
        };
        match dial_once(&shared, peer, addr).await {
            Ok(()) => {
                backoff.reset();
                continue;
            }
            Err(
                DialError::Handshake(HandshakeError::Duplicate)
                | DialError::Refused(Refused::Duplicate),
            ) => {
                tracing::debug!(%peer, "pair already connected; keeping that connection");
            }
            Err(DialError::Refused(Refused::ShuttingDown)) => return,
            Err(DialError::Handshake(err @ (HandshakeError::Io(_) | HandshakeError::Timeout))) => {
                tracing::debug!(%peer, %addr, %err, "dial failed");
            }
            Err(DialError::Handshake(err)) => {
                tracing::warn!(%peer, %addr, %err, "dial refused");
            }
        }
        let delay = backoff.next_delay(&mut rng);
        tokio::select! {
            () = sleep(delay) => {}
            () = wake.notified() => {}
        }
    }
}

enum DialError {
    Handshake(HandshakeError),
    Refused(Refused),
}

async fn dial_once(shared: &Arc<Shared>, peer: NodeId, addr: SocketAddr) -> Result<(), DialError> {
    let settings = &shared.settings;
    let mut stream = match timeout(settings.connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return Err(DialError::Handshake(err.into())),
        Err(_) => return Err(DialError::Handshake(HandshakeError::Timeout)),
    };
    let info = ConnectionInfo {
        dialer: settings.me,
        local_addr: stream
            .local_addr()
            .map_err(|e| DialError::Handshake(e.into()))?,
        peer_addr: addr,
    };
    stream
        .set_nodelay(true)
        .map_err(|e| DialError::Handshake(e.into()))?;
    let handshake = handshake::dial(&mut stream, settings.me, peer, &settings.key);
    match timeout(settings.handshake_timeout, handshake).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return Err(DialError::Handshake(err)),
        Err(_) => return Err(DialError::Handshake(HandshakeError::Timeout)),
    }
    let admitted = shared.admit(peer, info).map_err(DialError::Refused)?;
    shared.spawn_connection(admitted, stream);
    Ok(())
}
