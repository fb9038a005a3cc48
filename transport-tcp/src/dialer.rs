//! The dialer of one peer: while the peer has an address and no connection,
//! connect, authenticate and hand the connection over; on failure wait an
//! exponential backoff with jitter, and start again.
//!
//! Invariants: one dialer task per peer with an address; it never dials while
//! the peer has a current connection (either direction); it wakes early when
//! the connection ends, the address changes or the peer is removed. When both
//! ends may dial, the higher id waits one initial backoff delay before its
//! first attempt (at start and after every disconnection), so the lower id's
//! preferred connection usually wins without a replacement; and while a dial
//! is in its handshake the peer's entry says so (`handshaking`), for the
//! tie-break.

use crate::backoff::Backoff;
use crate::handshake::{self, HandshakeError};
use crate::registry::ConnectionInfo;
use crate::shared::{Refused, Shared};
use nefele_core::NodeId;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
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
    let mut rng = crate::entropy::jitter_rng();
    let defer = shared.settings.me > peer;
    let mut head_start = defer;
    loop {
        let addr = match next(&shared, peer) {
            Next::Stop => return,
            Next::Wait => {
                wake.notified().await;
                head_start = defer;
                continue;
            }
            Next::Dial(addr) => addr,
        };
        if head_start {
            head_start = false;
            pause(&wake, backoff.next_delay(&mut rng)).await;
            continue;
        }
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
        pause(&wake, backoff.next_delay(&mut rng)).await;
    }
}

/// Sleeps for `delay`, or less if the dialer is woken.
async fn pause(wake: &Notify, delay: Duration) {
    // `biased`: no random branch order, so madsim runs stay deterministic.
    tokio::select! {
        biased;
        () = sleep(delay) => {}
        () = wake.notified() => {}
    }
}

/// Marks the peer's entry as handshaking while alive.
struct Handshaking<'a> {
    shared: &'a Shared,
    peer: NodeId,
}

impl<'a> Handshaking<'a> {
    fn start(shared: &'a Shared, peer: NodeId) -> Self {
        Handshaking::set(shared, peer, true);
        Handshaking { shared, peer }
    }

    fn set(shared: &Shared, peer: NodeId, value: bool) {
        if let Some(entry) = shared.registry().peers.get_mut(&peer) {
            entry.handshaking = value;
        }
    }
}

impl Drop for Handshaking<'_> {
    fn drop(&mut self) {
        Handshaking::set(self.shared, self.peer, false);
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
    let _handshaking = Handshaking::start(shared, peer);
    let handshake = handshake::dial(&mut stream, settings.me, peer, &settings.secrets);
    let keys = match timeout(settings.handshake_timeout, handshake).await {
        Ok(Ok(keys)) => keys,
        Ok(Err(err)) => return Err(DialError::Handshake(err)),
        Err(_) => return Err(DialError::Handshake(HandshakeError::Timeout)),
    };
    let admitted = shared.admit(peer, info).map_err(DialError::Refused)?;
    shared.spawn_connection(admitted, stream, &keys);
    Ok(())
}
