//! The connection handshake over any byte stream: hellos, proofs and the
//! acceptor's verdict (the message formats and MACs are in [`crate::auth`]).
//!
//! The acceptor's side is split in two, [`accept_verify`] then
//! [`accept_finish`], because between them the transport decides whether it
//! keeps the connection (one connection per peer pair), and the dialer learns
//! that decision as the [`Verdict`]. No frame is read or written before a
//! handshake succeeds; callers bound each phase with a timeout.

use crate::auth::{
    proof_message_len, Fresh, Hello, HelloError, Role, Secrets, SessionKeys, Transcript, HELLO_LEN,
    PROOF_LEN,
};
use crate::node_keys::{NodeKeysError, IDENTITY_LEN};
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
    /// The peer's ephemeral key is of low order: no secret could be agreed.
    #[error("{peer} sent a low-order ephemeral key")]
    WeakKey {
        /// The id the peer claimed.
        peer: NodeId,
    },
    /// Per-node keys are on and the peer does not prove the id it claims.
    #[error("per-node key check failed: {0}")]
    Identity(#[from] NodeKeysError),
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
    keys: SessionKeys,
}

impl Verified {
    /// The authenticated dialer.
    pub(crate) fn peer(&self) -> NodeId {
        self.transcript.dialer.node
    }

    /// The connection's session keys, from the acceptor's side.
    pub(crate) fn keys(&self) -> &SessionKeys {
        &self.keys
    }
}

async fn read_hello<S: AsyncRead + Unpin>(
    stream: &mut S,
    me: NodeId,
    first: Option<[u8; 4]>,
) -> Result<Hello, HandshakeError> {
    let mut bytes = [0; HELLO_LEN];
    let rest = match first {
        Some(first) => {
            bytes[..4].copy_from_slice(&first);
            &mut bytes[4..]
        }
        None => &mut bytes[..],
    };
    read_exact(stream, rest).await?;
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

/// This side's proof message: the MAC, then its identity when it has per-node keys.
fn proof_message(transcript: &Transcript, secrets: &Secrets, role: Role) -> Vec<u8> {
    let mut out = transcript.proof(&secrets.key, role).to_vec();
    if let Some(keys) = &secrets.node_keys {
        out.extend_from_slice(&keys.identity(&transcript.signed_by(role)));
    }
    out
}

/// Checks the peer's proof message (playing `role`), read whole into `message`.
fn check_proof(
    transcript: &Transcript,
    secrets: &Secrets,
    role: Role,
    message: &[u8],
) -> Result<(), HandshakeError> {
    let peer = match role {
        Role::Dialer => transcript.dialer,
        Role::Acceptor => transcript.acceptor,
    };
    let (proof, identity) = message.split_at(PROOF_LEN);
    let proof: &[u8; PROOF_LEN] = proof.try_into().expect("split at PROOF_LEN");
    if !transcript.verify(&secrets.key, role, proof) {
        return Err(HandshakeError::BadProof { peer: peer.node });
    }
    // Without per-node keys of our own, a peer's identity cannot be checked: ignored.
    if let Some(keys) = &secrets.node_keys {
        let identity: &[u8; IDENTITY_LEN] = identity
            .try_into()
            .map_err(|_| NodeKeysError::Missing(peer.node))?;
        keys.verify_peer(peer.node, identity, &transcript.signed_by(role))?;
    }
    Ok(())
}

/// The agreed secret's session keys for `role`.
fn session_keys(
    fresh: &Fresh,
    transcript: &Transcript,
    secrets: &Secrets,
    role: Role,
    peer: &Hello,
) -> Result<SessionKeys, HandshakeError> {
    let shared = fresh
        .agree(peer)
        .ok_or(HandshakeError::WeakKey { peer: peer.node })?;
    Ok(transcript.session_keys(&secrets.key, &shared, role))
}

/// Runs the dialer's side: succeeds, with the session keys, when both sides hold
/// the cluster key (and prove their ids with per-node keys when this side has
/// them), the peer is `expected`, and the acceptor keeps the connection.
pub(crate) async fn dial<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    me: NodeId,
    expected: NodeId,
    secrets: &Secrets,
) -> Result<SessionKeys, HandshakeError> {
    let fresh = Fresh::new(me, secrets.node_keys.is_some());
    send(stream, &fresh.hello.encode()).await?;
    let acceptor = read_hello(stream, me, None).await?;
    if acceptor.node != expected {
        return Err(HandshakeError::UnexpectedPeer {
            expected,
            found: acceptor.node,
        });
    }
    let transcript = Transcript {
        dialer: fresh.hello,
        acceptor,
    };
    let keys = session_keys(&fresh, &transcript, secrets, Role::Dialer, &acceptor)?;
    send(stream, &proof_message(&transcript, secrets, Role::Dialer)).await?;
    let mut reply = vec![0; proof_message_len(&acceptor) + 1];
    read_exact(stream, &mut reply).await?;
    let (message, verdict) = reply.split_at(reply.len() - 1);
    check_proof(&transcript, secrets, Role::Acceptor, message)?;
    match verdict[0] {
        v if v == Verdict::Accept as u8 => Ok(keys),
        v if v == Verdict::Duplicate as u8 => Err(HandshakeError::Duplicate),
        other => Err(HandshakeError::BadVerdict(other)),
    }
}

/// Runs the acceptor's side up to the dialer's proof. Proves nothing itself.
pub(crate) async fn accept_verify<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    first: Option<[u8; 4]>,
    me: NodeId,
    secrets: &Secrets,
) -> Result<Verified, HandshakeError> {
    let dialer = read_hello(stream, me, first).await?;
    let fresh = Fresh::new(me, secrets.node_keys.is_some());
    send(stream, &fresh.hello.encode()).await?;
    let transcript = Transcript {
        dialer,
        acceptor: fresh.hello,
    };
    let mut message = vec![0; proof_message_len(&dialer)];
    read_exact(stream, &mut message).await?;
    check_proof(&transcript, secrets, Role::Dialer, &message)?;
    let keys = session_keys(&fresh, &transcript, secrets, Role::Acceptor, &dialer)?;
    Ok(Verified { transcript, keys })
}

/// Ends the acceptor's side: proves this node holds the keys and states `verdict`.
pub(crate) async fn accept_finish<S: AsyncWrite + Unpin>(
    stream: &mut S,
    verified: &Verified,
    secrets: &Secrets,
    verdict: Verdict,
) -> Result<(), HandshakeError> {
    let mut reply = proof_message(&verified.transcript, secrets, Role::Acceptor);
    reply.push(verdict as u8);
    send(stream, &reply).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ClusterKey;
    use crate::node_keys::{ClusterAuthority, NodeKeys};

    fn key(byte: u8) -> Secrets {
        Secrets {
            key: ClusterKey::new(&[byte; 32]).unwrap(),
            node_keys: None,
        }
    }

    fn with_keys(keys: NodeKeys) -> Secrets {
        Secrets {
            node_keys: Some(keys),
            ..key(1)
        }
    }

    type Outcome = (
        Result<SessionKeys, HandshakeError>,
        Result<(NodeId, SessionKeys), HandshakeError>,
    );

    async fn run(
        dialer: Secrets,
        acceptor: Secrets,
        expected: NodeId,
        verdict: Verdict,
    ) -> Outcome {
        let (mut d, mut a) = tokio::io::duplex(1024);
        let dial_side = async {
            let result = dial(&mut d, NodeId(1), expected, &dialer).await;
            drop(d);
            result
        };
        let accept_side = async {
            let verified = accept_verify(&mut a, None, NodeId(2), &acceptor).await;
            let outcome = match verified {
                Ok(v) => accept_finish(&mut a, &v, &acceptor, verdict)
                    .await
                    .map(|()| (v.peer(), v.keys().clone())),
                Err(e) => Err(e),
            };
            drop(a);
            outcome
        };
        tokio::join!(dial_side, accept_side)
    }

    #[tokio::test]
    async fn same_key_authenticates_both_sides_and_agrees_on_session_keys() {
        let (d, a) = run(key(1), key(1), NodeId(2), Verdict::Accept).await;
        let d = d.unwrap();
        let (peer, a) = a.unwrap();
        assert_eq!(peer, NodeId(1));
        assert_eq!((d.send, d.recv), (a.recv, a.send));
        // A second handshake between the same nodes gets fresh keys.
        let (again, _) = run(key(1), key(1), NodeId(2), Verdict::Accept).await;
        assert_ne!(again.unwrap().send, d.send);
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
        let result = accept_verify(&mut a, None, NodeId(2), &key(1)).await;
        assert!(matches!(
            result,
            Err(HandshakeError::Hello(HelloError::BadMagic(_)))
        ));
    }

    #[tokio::test]
    async fn per_node_keys_prove_ids_and_refuse_a_key_holder_claiming_another_id() {
        let ca = ClusterAuthority::generate();
        let (one, two) = (ca.issue(NodeId(1)), ca.issue(NodeId(2)));
        let (d, a) = run(
            with_keys(one),
            with_keys(two.clone()),
            NodeId(2),
            Verdict::Accept,
        )
        .await;
        assert!(d.is_ok() && a.is_ok(), "{d:?} {a:?}");
        // Node 3's keys, claiming to be node 1: the acceptor refuses before proving.
        let (d, a) = run(
            with_keys(ca.issue(NodeId(3))),
            with_keys(two.clone()),
            NodeId(2),
            Verdict::Accept,
        )
        .await;
        assert!(
            matches!(
                a,
                Err(HandshakeError::Identity(NodeKeysError::BadCertificate(
                    NodeId(1)
                )))
            ),
            "{a:?}"
        );
        assert!(matches!(d, Err(HandshakeError::Closed)), "{d:?}");
        // Only the cluster key, no per-node keys: refused by a node that requires them.
        let (_, a) = run(key(1), with_keys(two), NodeId(2), Verdict::Accept).await;
        assert!(
            matches!(
                a,
                Err(HandshakeError::Identity(NodeKeysError::Missing(NodeId(1))))
            ),
            "{a:?}"
        );
        // The dialer checks the acceptor the same way: one without per-node keys is refused.
        let (d, _) = run(
            with_keys(ca.issue(NodeId(1))),
            key(1),
            NodeId(2),
            Verdict::Accept,
        )
        .await;
        assert!(
            matches!(
                d,
                Err(HandshakeError::Identity(NodeKeysError::Missing(NodeId(2))))
            ),
            "{d:?}"
        );
    }
}
