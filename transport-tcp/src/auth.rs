//! The messages and the cryptography of the connection handshake (pure; the
//! I/O lives in [`crate::handshake`]).
//!
//! ```text
//! dialer                                   acceptor
//!   Hello { magic, version, id_d, nonce_d } ->
//!                                         <- Hello { magic, version, id_a, nonce_a }
//!   Proof { mac(DIALER, transcript) }     ->
//!                        (acceptor verifies, then decides whether to keep the connection)
//!                                         <- Proof { mac(ACCEPTOR, transcript) }, Verdict
//! ```
//!
//! `transcript = id_d || id_a || nonce_d || nonce_a`, and
//! `mac(role, t) = HMAC-SHA256(cluster key, LABEL || role || t)`.
//!
//! Invariants: the acceptor proves nothing before the dialer has proven it
//! holds the key, so a stranger that dials in learns a node id and a random
//! nonce, and nothing else. Both nonces are fresh per connection (no replay),
//! both ids are in the transcript (no reflection to another pair), and the
//! role byte differs per direction (a dialer's proof is never a valid
//! acceptor proof, so an acceptor cannot be used as a signing oracle against
//! another node). Tags are compared in constant time.

use hmac::{Hmac, Mac};
use nefele_core::NodeId;
use sha2::Sha256;
use std::fmt;

/// Bytes of a nonce.
pub(crate) const NONCE_LEN: usize = 32;
/// Bytes of a proof (an HMAC-SHA256 tag).
pub(crate) const PROOF_LEN: usize = 32;
/// Bytes of a hello.
pub(crate) const HELLO_LEN: usize = 4 + 1 + 4 + NONCE_LEN;
/// The first bytes of a hello.
const MAGIC: [u8; 4] = *b"NFTC";
/// The handshake version this build speaks.
const VERSION: u8 = 1;
/// Domain separation for the MAC input.
const LABEL: &[u8] = b"nefele-tcp-auth-v1";
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
    pub(crate) nonce: [u8; NONCE_LEN],
}

/// Why a hello is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HelloError {
    /// The peer does not speak this protocol.
    #[error("bad handshake magic {0:02x?}")]
    BadMagic([u8; 4]),
    /// The peer speaks another handshake version.
    #[error("unsupported handshake version {0}")]
    UnsupportedVersion(u8),
}

impl Hello {
    pub(crate) fn encode(&self) -> [u8; HELLO_LEN] {
        let mut out = [0; HELLO_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4] = VERSION;
        out[5..9].copy_from_slice(&self.node.0.to_be_bytes());
        out[9..].copy_from_slice(&self.nonce);
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
        let node = NodeId(u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]));
        let mut nonce = [0; NONCE_LEN];
        nonce.copy_from_slice(&bytes[9..]);
        Ok(Hello { node, nonce })
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
        mac.update(&self.dialer.node.0.to_be_bytes());
        mac.update(&self.acceptor.node.0.to_be_bytes());
        mac.update(&self.dialer.nonce);
        mac.update(&self.acceptor.nonce);
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> ClusterKey {
        ClusterKey::new(&[byte; 32]).unwrap()
    }

    fn transcript() -> Transcript {
        Transcript {
            dialer: Hello {
                node: NodeId(1),
                nonce: [1; NONCE_LEN],
            },
            acceptor: Hello {
                node: NodeId(2),
                nonce: [2; NONCE_LEN],
            },
        }
    }

    #[test]
    fn hello_round_trips_and_rejects_strangers() {
        let hello = transcript().dialer;
        assert_eq!(Hello::decode(&hello.encode()), Ok(hello));
        let mut bytes = hello.encode();
        bytes[0] = b'X';
        assert!(matches!(
            Hello::decode(&bytes),
            Err(HelloError::BadMagic(_))
        ));
        let mut bytes = hello.encode();
        bytes[4] = 9;
        assert_eq!(
            Hello::decode(&bytes),
            Err(HelloError::UnsupportedVersion(9))
        );
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
        let mut swapped = t;
        std::mem::swap(&mut swapped.dialer.node, &mut swapped.acceptor.node);
        assert!(!swapped.verify(&key(1), Role::Dialer, &proof));
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
