//! The messages and the cryptography of the connection handshake (pure; the
//! I/O lives in [`crate::handshake`]).
//!
//! ```text
//! dialer                                        acceptor
//!   Hello { magic, version, flags, id_d, nonce_d, eph_d } ->
//!                                   <- Hello { magic, version, flags, id_a, nonce_a, eph_a }
//!   Proof { mac(DIALER, transcript) } [Identity]      ->
//!                      (acceptor verifies, then decides whether to keep the connection)
//!                     <- Proof { mac(ACCEPTOR, transcript) } [Identity], Verdict
//! ```
//!
//! `transcript = hello_d || hello_a` (both hellos as sent), and
//! `mac(role, t) = HMAC-SHA256(cluster key, LABEL || role || t)`. `eph` are
//! fresh X25519 public keys; the session keys are
//! `HKDF-SHA256(salt, X25519(eph_d, eph_a) || cluster key, direction || t)`, one
//! per direction (see [`SessionKeys`] and [`crate::record`]).
//!
//! With per-node keys ([`crate::node_keys`]), each side's flags say so and its
//! proof is followed by an `Identity`: its node public key, the cluster
//! authority's certificate binding that key to its node id, and its signature
//! of `SIG_LABEL || role || t` with that key.
//!
//! Invariants: the acceptor proves nothing before the dialer has proven it
//! holds the key, so a stranger that dials in learns a node id, a random
//! nonce and an ephemeral public key, and nothing else. Both nonces and both
//! ephemeral keys are fresh per connection (no replay, and recorded traffic
//! stays secret even if the cluster key leaks later), both ids are in the
//! transcript (no reflection to another pair), and the role byte differs per
//! direction (a dialer's proof is never a valid acceptor proof, so an
//! acceptor cannot be used as a signing oracle against another node). Tags are
//! compared in constant time. A hello with unknown flags or a low-order
//! ephemeral key is refused.

use crate::node_keys::{NodeKeys, IDENTITY_LEN};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use nefele_core::NodeId;
use sha2::Sha256;
use std::fmt;
use x25519_dalek::{PublicKey, StaticSecret};

/// Bytes of a nonce.
pub(crate) const NONCE_LEN: usize = 32;
/// Bytes of an X25519 public key.
pub(crate) const DH_LEN: usize = 32;
/// Bytes of a proof (an HMAC-SHA256 tag).
pub(crate) const PROOF_LEN: usize = 32;
/// Bytes of a hello.
pub(crate) const HELLO_LEN: usize = 4 + 1 + 1 + 4 + NONCE_LEN + DH_LEN;
/// Bytes of a session key.
pub(crate) const SESSION_KEY_LEN: usize = 32;
/// The first bytes of a hello.
const MAGIC: [u8; 4] = *b"NFTC";
/// The handshake version this build speaks (2: ephemeral keys, encrypted records).
const VERSION: u8 = 2;
/// Hello flag: an `Identity` follows this side's proof.
const FLAG_IDENTITY: u8 = 1;
/// Domain separation for the MAC input.
const LABEL: &[u8] = b"nefele-tcp-auth-v2";
/// Domain separation for the transcript signature of per-node keys.
const SIG_LABEL: &[u8] = b"nefele-tcp-sig-v2";
/// The HKDF salt of session keys.
const KDF_SALT: &[u8] = b"nefele-tcp-session-v2";
/// The shortest cluster key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 16;

/// The shared secret of a cluster: only agents that hold it connect.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey(Vec<u8>);

impl ClusterKey {
    /// A key made of `bytes` (at least [`MIN_KEY_LEN`] of them, e.g. the contents of a key file).
    pub fn new(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort { len: bytes.len() });
        }
        Ok(ClusterKey(bytes.to_vec()))
    }

    /// The secret's bytes, for other uses of the same key (e.g. authenticating
    /// discovery beacons); callers must domain-separate their MACs with a label.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey(<{} bytes>)", self.0.len())
    }
}

/// Why bytes cannot be a cluster key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Too few bytes to be a secret.
    #[error("cluster key of {len} bytes is shorter than {MIN_KEY_LEN} bytes")]
    TooShort {
        /// The key's length.
        len: usize,
    },
}

/// What a node proves itself with: the cluster key, and optionally its own keys.
#[derive(Debug, Clone)]
pub(crate) struct Secrets {
    pub(crate) key: ClusterKey,
    pub(crate) node_keys: Option<NodeKeys>,
}

/// Which side of a connection proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Dialer = 1,
    Acceptor = 2,
}

/// The opening message of each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hello {
    pub(crate) node: NodeId,
    /// An `Identity` follows this side's proof.
    pub(crate) identity: bool,
    pub(crate) nonce: [u8; NONCE_LEN],
    /// The side's ephemeral X25519 public key.
    pub(crate) ephemeral: [u8; DH_LEN],
}

/// Why a hello is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HelloError {
    /// The peer does not speak this protocol.
    #[error("bad handshake magic {0:02x?}")]
    BadMagic([u8; 4]),
    /// The peer speaks another handshake version.
    #[error("unsupported handshake version {0} (this build speaks {VERSION})")]
    UnsupportedVersion(u8),
    /// The peer sets flags this build does not know.
    #[error("unknown handshake flags {0:#04x}")]
    UnknownFlags(u8),
}

impl Hello {
    pub(crate) fn encode(&self) -> [u8; HELLO_LEN] {
        let mut out = [0; HELLO_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4] = VERSION;
        out[5] = if self.identity { FLAG_IDENTITY } else { 0 };
        out[6..10].copy_from_slice(&self.node.0.to_be_bytes());
        out[10..10 + NONCE_LEN].copy_from_slice(&self.nonce);
        out[10 + NONCE_LEN..].copy_from_slice(&self.ephemeral);
        out
    }

    pub(crate) fn decode(bytes: &[u8; HELLO_LEN]) -> Result<Self, HelloError> {
        let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
        if magic != MAGIC {
            return Err(HelloError::BadMagic(magic));
        }
        if bytes[4] != VERSION {
            return Err(HelloError::UnsupportedVersion(bytes[4]));
        }
        if bytes[5] & !FLAG_IDENTITY != 0 {
            return Err(HelloError::UnknownFlags(bytes[5]));
        }
        let node = NodeId(u32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]));
        let mut nonce = [0; NONCE_LEN];
        nonce.copy_from_slice(&bytes[10..10 + NONCE_LEN]);
        let mut ephemeral = [0; DH_LEN];
        ephemeral.copy_from_slice(&bytes[10 + NONCE_LEN..]);
        Ok(Hello {
            node,
            identity: bytes[5] & FLAG_IDENTITY != 0,
            nonce,
            ephemeral,
        })
    }
}

/// This side's fresh hello and the ephemeral secret behind it.
pub(crate) struct Fresh {
    pub(crate) hello: Hello,
    secret: StaticSecret,
}

impl Fresh {
    /// A hello for `node` with a fresh nonce and ephemeral key.
    pub(crate) fn new(node: NodeId, identity: bool) -> Self {
        let mut nonce = [0; NONCE_LEN];
        crate::entropy::fill(&mut nonce);
        let mut seed = [0; DH_LEN];
        crate::entropy::fill(&mut seed);
        let secret = StaticSecret::from(seed);
        let ephemeral = PublicKey::from(&secret).to_bytes();
        Fresh {
            hello: Hello {
                node,
                identity,
                nonce,
                ephemeral,
            },
            secret,
        }
    }

    /// The shared secret with the peer's ephemeral key, `None` when the peer's
    /// key is of low order (the result would not depend on our secret).
    pub(crate) fn agree(&self, peer: &Hello) -> Option<[u8; 32]> {
        let shared = self.secret.diffie_hellman(&PublicKey::from(peer.ephemeral));
        shared.was_contributory().then(|| shared.to_bytes())
    }
}

/// The keys of one connection's two directions, from one side's point of view.
#[derive(Clone)]
pub(crate) struct SessionKeys {
    /// Seals what this side sends.
    pub(crate) send: [u8; SESSION_KEY_LEN],
    /// Opens what this side receives.
    pub(crate) recv: [u8; SESSION_KEY_LEN],
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKeys(<secret>)")
    }
}

/// Both hellos of one connection: what each proof covers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transcript {
    pub(crate) dialer: Hello,
    pub(crate) acceptor: Hello,
}

impl Transcript {
    /// The proof that the side playing `role` holds `key`.
    pub(crate) fn proof(&self, key: &ClusterKey, role: Role) -> [u8; PROOF_LEN] {
        self.mac(key, role).finalize().into_bytes().into()
    }

    /// Whether `proof` shows that the side playing `role` holds `key` (constant time).
    pub(crate) fn verify(&self, key: &ClusterKey, role: Role, proof: &[u8; PROOF_LEN]) -> bool {
        self.mac(key, role).verify_slice(proof).is_ok()
    }

    fn mac(&self, key: &ClusterKey, role: Role) -> Hmac<Sha256> {
        let mut mac = key.mac();
        mac.update(LABEL);
        mac.update(&[role as u8]);
        mac.update(&self.dialer.encode());
        mac.update(&self.acceptor.encode());
        mac
    }

    /// What the side playing `role` signs with its node key.
    pub(crate) fn signed_by(&self, role: Role) -> Vec<u8> {
        let mut out = Vec::with_capacity(SIG_LABEL.len() + 1 + 2 * HELLO_LEN);
        out.extend_from_slice(SIG_LABEL);
        out.push(role as u8);
        out.extend_from_slice(&self.dialer.encode());
        out.extend_from_slice(&self.acceptor.encode());
        out
    }

    /// The session keys of the side playing `role`, from the ephemeral `shared` secret.
    pub(crate) fn session_keys(
        &self,
        key: &ClusterKey,
        shared: &[u8; 32],
        role: Role,
    ) -> SessionKeys {
        let mut ikm = Vec::with_capacity(32 + key.0.len());
        ikm.extend_from_slice(shared);
        ikm.extend_from_slice(&key.0);
        let kdf = Hkdf::<Sha256>::new(Some(KDF_SALT), &ikm);
        let (d, a) = (self.dialer.encode(), self.acceptor.encode());
        let expand = |direction: &[u8]| {
            let mut okm = [0; SESSION_KEY_LEN];
            kdf.expand_multi_info(&[direction, &d, &a], &mut okm)
                .expect("32 bytes is a valid HKDF-SHA256 output length");
            okm
        };
        let to_acceptor = expand(b"dialer->acceptor");
        let to_dialer = expand(b"acceptor->dialer");
        match role {
            Role::Dialer => SessionKeys {
                send: to_acceptor,
                recv: to_dialer,
            },
            Role::Acceptor => SessionKeys {
                send: to_dialer,
                recv: to_acceptor,
            },
        }
    }
}

/// Bytes of one side's proof message, with its identity when it announced one.
pub(crate) fn proof_message_len(hello: &Hello) -> usize {
    PROOF_LEN + if hello.identity { IDENTITY_LEN } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> ClusterKey {
        ClusterKey::new(&[byte; 32]).unwrap()
    }

    fn hello(node: u32, fill: u8) -> Hello {
        Hello {
            node: NodeId(node),
            identity: false,
            nonce: [fill; NONCE_LEN],
            ephemeral: [fill; DH_LEN],
        }
    }

    fn transcript() -> Transcript {
        Transcript {
            dialer: hello(1, 1),
            acceptor: hello(2, 2),
        }
    }

    #[test]
    fn hello_round_trips_and_rejects_strangers() {
        let mut hello = transcript().dialer;
        assert_eq!(Hello::decode(&hello.encode()), Ok(hello));
        hello.identity = true;
        assert_eq!(Hello::decode(&hello.encode()), Ok(hello));
        let mut bytes = hello.encode();
        bytes[0] = b'X';
        assert!(matches!(
            Hello::decode(&bytes),
            Err(HelloError::BadMagic(_))
        ));
        let mut bytes = hello.encode();
        bytes[4] = 1;
        assert_eq!(
            Hello::decode(&bytes),
            Err(HelloError::UnsupportedVersion(1))
        );
        let mut bytes = hello.encode();
        bytes[5] = 0x81;
        assert_eq!(Hello::decode(&bytes), Err(HelloError::UnknownFlags(0x81)));
    }

    #[test]
    fn proofs_verify_only_with_the_same_key_role_and_transcript() {
        let t = transcript();
        let proof = t.proof(&key(1), Role::Dialer);
        assert!(t.verify(&key(1), Role::Dialer, &proof));
        assert!(!t.verify(&key(2), Role::Dialer, &proof));
        assert!(!t.verify(&key(1), Role::Acceptor, &proof));
        let mut other = t;
        other.acceptor.nonce[0] ^= 1;
        assert!(!other.verify(&key(1), Role::Dialer, &proof));
        let mut other = t;
        other.dialer.ephemeral[0] ^= 1;
        assert!(!other.verify(&key(1), Role::Dialer, &proof));
        let mut other = t;
        other.dialer.identity = true;
        assert!(!other.verify(&key(1), Role::Dialer, &proof));
        let mut swapped = t;
        std::mem::swap(&mut swapped.dialer.node, &mut swapped.acceptor.node);
        assert!(!swapped.verify(&key(1), Role::Dialer, &proof));
    }

    // A tokio test so that `--cfg madsim` runs it in madsim's runtime (its entropy).
    #[tokio::test]
    async fn both_sides_derive_mirrored_keys_that_differ_per_direction() {
        let d = Fresh::new(NodeId(1), false);
        let a = Fresh::new(NodeId(2), false);
        let t = Transcript {
            dialer: d.hello,
            acceptor: a.hello,
        };
        let (sd, sa) = (d.agree(&a.hello).unwrap(), a.agree(&d.hello).unwrap());
        assert_eq!(sd, sa);
        let kd = t.session_keys(&key(1), &sd, Role::Dialer);
        let ka = t.session_keys(&key(1), &sa, Role::Acceptor);
        assert_eq!((kd.send, kd.recv), (ka.recv, ka.send));
        assert_ne!(kd.send, kd.recv);
        // Another cluster key gives other keys from the same exchange.
        assert_ne!(t.session_keys(&key(2), &sd, Role::Dialer).send, kd.send);
    }

    // A tokio test so that `--cfg madsim` runs it in madsim's runtime (its entropy).
    #[tokio::test]
    async fn a_low_order_ephemeral_key_is_refused() {
        let me = Fresh::new(NodeId(1), false);
        let mut peer = hello(2, 0);
        peer.ephemeral = [0; DH_LEN];
        assert_eq!(me.agree(&peer), None);
    }

    #[test]
    fn short_keys_are_refused_and_keys_never_print() {
        assert_eq!(
            ClusterKey::new(b"short"),
            Err(KeyError::TooShort { len: 5 })
        );
        assert_eq!(format!("{:?}", key(0xab)), "ClusterKey(<32 bytes>)");
    }
}
