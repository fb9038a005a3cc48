//! The connection handshake over any byte stream: hellos, proofs and the
//! acceptor's verdict (the message formats and MACs are in [`crate::auth`]).
//!
//! The acceptor's side is split in two, [`accept_verify`] then
//! [`accept_finish`], because between them the transport decides whether it
//! keeps the connection (one connection per peer pair), and the dialer learns
//! that decision as the [`Verdict`]. No frame is read or written before a
//! handshake succeeds; callers bound each phase with a timeout.

use crate::auth::{
    ClusterKey, Hello, HelloError, Role, Transcript, HELLO_LEN, NONCE_LEN, PROOF_LEN,
};
use nefele_core::NodeId;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The acceptor's decision about an authenticated connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The connection is the pair's connection from now on.
    Accept = 1,
    /// The pair already has the connection the tie-break prefers; this one is closed.
    Duplicate = 2,
}

/// Why a handshake failed. The connection is closed and no frame crossed it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// The stream failed.
    #[error("i/o error during handshake: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the stream (it may have refused our key).
    #[error("peer closed the connection during the handshake (does it hold the cluster key?)")]
    Closed,
    /// The peer's hello is not one.
    #[error("bad hello: {0}")]
    Hello(#[from] HelloError),
    /// The peer claims this node's own id.
    #[error("peer claims this node's id {0}")]
    SelfConnection(NodeId),
    /// The node at the dialed address is not the one the address book names.
    #[error("expected {expected} at this address, found {found}")]
    UnexpectedPeer {
        /// The id in the address book.
        expected: NodeId,
        /// The id the peer stated.
        found: NodeId,
    },
    /// The peer's proof is wrong: it does not hold the cluster key.
    #[error("{peer} failed authentication (wrong cluster key)")]
    BadProof {
        /// The id the peer claimed.
        peer: NodeId,
    },
    /// The acceptor's verdict byte is unknown.
    #[error("unknown verdict byte {0}")]
    BadVerdict(u8),
    /// The acceptor already has the pair's preferred connection.
    #[error("peer already holds the preferred connection of this pair")]
    Duplicate,
    /// The handshake took longer than the configured timeout.
    #[error("handshake timed out")]
    Timeout,
}

/// An acceptor's handshake after the dialer proved itself, before the verdict.
#[derive(Debug)]
pub(crate) struct Verified {
    transcript: Transcript,
}

impl Verified {
    /// The authenticated dialer.
    pub(crate) fn peer(&self) -> NodeId {
        self.transcript.dialer.node
    }
}

fn fresh_hello(node: NodeId) -> Hello {
    let mut nonce = [0; NONCE_LEN];
    crate::entropy::fill(&mut nonce);
    Hello { node, nonce }
}

async fn read_hello<S: AsyncRead + Unpin>(
    stream: &mut S,
    me: NodeId,
) -> Result<Hello, HandshakeError> {
    let mut bytes = [0; HELLO_LEN];
    read_exact(stream, &mut bytes).await?;
    let hello = Hello::decode(&bytes)?;
    if hello.node == me {
        return Err(HandshakeError::SelfConnection(me));
    }
    Ok(hello)
}

/// Writes and flushes `bytes` (streams such as madsim's send only on flush).
async fn send<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> Result<(), HandshakeError> {
    stream.write_all(bytes).await?;
    stream.flush().await?;
    Ok(())
}

async fn read_exact<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut [u8],
) -> Result<(), HandshakeError> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Err(HandshakeError::Closed),
        Err(err) => Err(err.into()),
    }
}

/// Runs the dialer's side: succeeds when both sides hold `key`, the peer is
/// `expected`, and the acceptor keeps the connection.
pub(crate) async fn dial<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    me: NodeId,
    expected: NodeId,
    key: &ClusterKey,
) -> Result<(), HandshakeError> {
    let dialer = fresh_hello(me);
    send(stream, &dialer.encode()).await?;
    let acceptor = read_hello(stream, me).await?;
    if acceptor.node != expected {
        return Err(HandshakeError::UnexpectedPeer {
            expected,
            found: acceptor.node,
        });
    }
    let transcript = Transcript { dialer, acceptor };
    send(stream, &transcript.proof(key, Role::Dialer)).await?;
    let mut reply = [0; PROOF_LEN + 1];
    read_exact(stream, &mut reply).await?;
    let mut proof = [0; PROOF_LEN];
    proof.copy_from_slice(&reply[..PROOF_LEN]);
    if !transcript.verify(key, Role::Acceptor, &proof) {
        return Err(HandshakeError::BadProof {
            peer: acceptor.node,
        });
    }
    match reply[PROOF_LEN] {
        v if v == Verdict::Accept as u8 => Ok(()),
        v if v == Verdict::Duplicate as u8 => Err(HandshakeError::Duplicate),
        other => Err(HandshakeError::BadVerdict(other)),
    }
}

/// Runs the acceptor's side up to the dialer's proof. Proves nothing itself.
pub(crate) async fn accept_verify<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    me: NodeId,
    key: &ClusterKey,
) -> Result<Verified, HandshakeError> {
    let dialer = read_hello(stream, me).await?;
    let acceptor = fresh_hello(me);
    send(stream, &acceptor.encode()).await?;
    let transcript = Transcript { dialer, acceptor };
    let mut proof = [0; PROOF_LEN];
    read_exact(stream, &mut proof).await?;
    if !transcript.verify(key, Role::Dialer, &proof) {
        return Err(HandshakeError::BadProof { peer: dialer.node });
    }
    Ok(Verified { transcript })
}

/// Ends the acceptor's side: proves this node holds `key` and states `verdict`.
pub(crate) async fn accept_finish<S: AsyncWrite + Unpin>(
    stream: &mut S,
    verified: &Verified,
    key: &ClusterKey,
    verdict: Verdict,
) -> Result<(), HandshakeError> {
    let mut reply = [0; PROOF_LEN + 1];
    reply[..PROOF_LEN].copy_from_slice(&verified.transcript.proof(key, Role::Acceptor));
    reply[PROOF_LEN] = verdict as u8;
    send(stream, &reply).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> ClusterKey {
        ClusterKey::new(&[byte; 32]).unwrap()
    }

    async fn run(
        dialer_key: ClusterKey,
        acceptor_key: ClusterKey,
        expected: NodeId,
        verdict: Verdict,
    ) -> (Result<(), HandshakeError>, Result<NodeId, HandshakeError>) {
        let (mut d, mut a) = tokio::io::duplex(1024);
        let dialer = async {
            let result = dial(&mut d, NodeId(1), expected, &dialer_key).await;
            drop(d);
            result
        };
        let acceptor = async {
            let verified = accept_verify(&mut a, NodeId(2), &acceptor_key).await;
            let outcome = match verified {
                Ok(v) => accept_finish(&mut a, &v, &acceptor_key, verdict)
                    .await
                    .map(|()| v.peer()),
                Err(e) => Err(e),
            };
            drop(a);
            outcome
        };
        tokio::join!(dialer, acceptor)
    }

    #[tokio::test]
    async fn same_key_authenticates_both_sides() {
        let (d, a) = run(key(1), key(1), NodeId(2), Verdict::Accept).await;
        assert!(d.is_ok(), "{d:?}");
        assert_eq!(a.unwrap(), NodeId(1));
    }

    #[tokio::test]
    async fn wrong_key_is_refused_and_acceptor_proves_nothing() {
        let (d, a) = run(key(1), key(2), NodeId(2), Verdict::Accept).await;
        assert!(
            matches!(a, Err(HandshakeError::BadProof { peer: NodeId(1) })),
            "{a:?}"
        );
        assert!(matches!(d, Err(HandshakeError::Closed)), "{d:?}");
    }

    #[tokio::test]
    async fn unexpected_peer_is_refused_before_proving() {
        let (d, a) = run(key(1), key(1), NodeId(9), Verdict::Accept).await;
        assert!(matches!(
            d,
            Err(HandshakeError::UnexpectedPeer {
                expected: NodeId(9),
                found: NodeId(2)
            })
        ));
        assert!(matches!(a, Err(HandshakeError::Closed)), "{a:?}");
    }

    #[tokio::test]
    async fn duplicate_verdict_reaches_the_dialer() {
        let (d, _) = run(key(1), key(1), NodeId(2), Verdict::Duplicate).await;
        assert!(matches!(d, Err(HandshakeError::Duplicate)), "{d:?}");
    }

    #[tokio::test]
    async fn garbage_instead_of_a_hello_is_an_error() {
        let (mut d, mut a) = tokio::io::duplex(1024);
        d.write_all(&[0xff; HELLO_LEN]).await.unwrap();
        let result = accept_verify(&mut a, NodeId(2), &key(1)).await;
        assert!(matches!(
            result,
            Err(HandshakeError::Hello(HelloError::BadMagic(_)))
        ));
    }
}
