//! Per-node keys: a node id bound to a key only its node holds, so that one
//! holder of the cluster key cannot connect as another node.
//!
//! The cluster's *authority* is an Ed25519 key pair whose secret stays with the
//! operator (it is not on the agents). It signs, for each node, a certificate
//! `CERT_LABEL || node id || node public key`. A node's [`NodeKeys`] hold its
//! id, its Ed25519 secret, its certificate and the authority's public key. In
//! the handshake ([`crate::auth`]) each side sends `public key || certificate
//! || signature of the transcript`; the peer checks the certificate against
//! the authority for the id the hello claimed, and the signature against the
//! certificate's key, so only the holder of that node's secret completes a
//! handshake under that id.
//!
//! Text forms (one line each, hex): `nefele-authority-v1 <secret seed>` for the
//! authority, and `nefele-node-keys-v1 <node> <authority public> <node secret
//! seed> <certificate>` for a node. Parsing never panics and names the field
//! that is wrong.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use nefele_core::NodeId;
use std::fmt;

/// Bytes of an identity: public key, certificate, signature of the message it vouches for.
pub const IDENTITY_LEN: usize = 32 + 64 + 64;
/// Domain separation of certificates.
const CERT_LABEL: &[u8] = b"nefele-node-cert-v1";
const AUTHORITY_TAG: &str = "nefele-authority-v1";
const NODE_TAG: &str = "nefele-node-keys-v1";

/// The cluster's signing authority (kept by the operator, never on agents).
pub struct ClusterAuthority {
    signing: SigningKey,
}

/// Why text is not keys, or keys do not prove an identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeKeysError {
    /// The text does not have the expected shape.
    #[error("not {expected}: {problem}")]
    Format {
        /// What the text should be.
        expected: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The certificate does not bind this key to this node id under the authority.
    #[error("the certificate of {0} is not signed by the cluster authority")]
    BadCertificate(NodeId),
    /// The transcript signature does not verify with the certified key.
    #[error("{0} did not sign the handshake with its certified key")]
    BadSignature(NodeId),
    /// The peer sent no identity while this node requires one.
    #[error("{0} presented no per-node key, and this node requires one")]
    Missing(NodeId),
}

fn format_error(expected: &'static str, problem: impl Into<String>) -> NodeKeysError {
    NodeKeysError::Format {
        expected,
        problem: problem.into(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(
    text: &str,
    expected: &'static str,
    field: &str,
) -> Result<[u8; N], NodeKeysError> {
    if text.len() != 2 * N || !text.is_ascii() {
        return Err(format_error(
            expected,
            format!("{field}: want {} hex digits", 2 * N),
        ));
    }
    let mut out = [0; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
            .map_err(|_| format_error(expected, format!("{field}: not hex")))?;
    }
    Ok(out)
}

fn cert_message(node: NodeId, public: &VerifyingKey) -> Vec<u8> {
    let mut out = CERT_LABEL.to_vec();
    out.extend_from_slice(&node.0.to_be_bytes());
    out.extend_from_slice(public.as_bytes());
    out
}

fn random_seed() -> [u8; 32] {
    let mut seed = [0; 32];
    crate::entropy::fill(&mut seed);
    seed
}

impl ClusterAuthority {
    /// A new authority with a random key.
    #[must_use]
    pub fn generate() -> Self {
        ClusterAuthority {
            signing: SigningKey::from_bytes(&random_seed()),
        }
    }

    /// Issues keys for `node`: a fresh node key and its certificate.
    #[must_use]
    pub fn issue(&self, node: NodeId) -> NodeKeys {
        let signing = SigningKey::from_bytes(&random_seed());
        let cert = self
            .signing
            .sign(&cert_message(node, &signing.verifying_key()));
        NodeKeys {
            node,
            signing,
            cert,
            authority: self.signing.verifying_key(),
        }
    }

    /// The text form (a secret: store it like one).
    #[must_use]
    pub fn to_text(&self) -> String {
        format!("{AUTHORITY_TAG} {}\n", hex(self.signing.as_bytes()))
    }

    /// Parses [`ClusterAuthority::to_text`].
    pub fn from_text(text: &str) -> Result<Self, NodeKeysError> {
        const WHAT: &str = "a cluster authority";
        let mut words = text.split_whitespace();
        if words.next() != Some(AUTHORITY_TAG) {
            return Err(format_error(
                WHAT,
                format!("does not start with `{AUTHORITY_TAG}`"),
            ));
        }
        let seed = unhex::<32>(words.next().unwrap_or(""), WHAT, "secret")?;
        if words.next().is_some() {
            return Err(format_error(WHAT, "trailing words"));
        }
        Ok(ClusterAuthority {
            signing: SigningKey::from_bytes(&seed),
        })
    }
}

impl fmt::Debug for ClusterAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterAuthority(<secret>)")
    }
}

/// One node's keys: its id, its secret, its certificate and the authority's public key.
#[derive(Clone)]
pub struct NodeKeys {
    node: NodeId,
    signing: SigningKey,
    cert: Signature,
    authority: VerifyingKey,
}

impl NodeKeys {
    /// The node these keys are for.
    #[must_use]
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The text form (holds the node's secret: store it like one).
    #[must_use]
    pub fn to_text(&self) -> String {
        format!(
            "{NODE_TAG} {} {} {} {}\n",
            self.node.0,
            hex(self.authority.as_bytes()),
            hex(self.signing.as_bytes()),
            hex(&self.cert.to_bytes())
        )
    }

    /// Parses [`NodeKeys::to_text`]; refuses keys whose certificate does not verify.
    pub fn from_text(text: &str) -> Result<Self, NodeKeysError> {
        const WHAT: &str = "node keys";
        let mut words = text.split_whitespace();
        if words.next() != Some(NODE_TAG) {
            return Err(format_error(
                WHAT,
                format!("does not start with `{NODE_TAG}`"),
            ));
        }
        let node = words
            .next()
            .and_then(|w| w.parse().ok())
            .map(NodeId)
            .ok_or_else(|| format_error(WHAT, "node: not a node id"))?;
        let authority = unhex::<32>(words.next().unwrap_or(""), WHAT, "authority")?;
        let authority = VerifyingKey::from_bytes(&authority)
            .map_err(|_| format_error(WHAT, "authority: not an Ed25519 public key"))?;
        let seed = unhex::<32>(words.next().unwrap_or(""), WHAT, "secret")?;
        let cert = Signature::from_bytes(&unhex::<64>(
            words.next().unwrap_or(""),
            WHAT,
            "certificate",
        )?);
        if words.next().is_some() {
            return Err(format_error(WHAT, "trailing words"));
        }
        let keys = NodeKeys {
            node,
            signing: SigningKey::from_bytes(&seed),
            cert,
            authority,
        };
        keys.check(node, &keys.signing.verifying_key(), &keys.cert)?;
        Ok(keys)
    }

    /// This node's identity vouching for `signed` (in the handshake: the transcript;
    /// other users, e.g. discovery beacons, must domain-separate what they sign).
    #[must_use]
    pub fn identity(&self, signed: &[u8]) -> [u8; IDENTITY_LEN] {
        let mut out = [0; IDENTITY_LEN];
        out[..32].copy_from_slice(self.signing.verifying_key().as_bytes());
        out[32..96].copy_from_slice(&self.cert.to_bytes());
        out[96..].copy_from_slice(&self.signing.sign(signed).to_bytes());
        out
    }

    /// Checks that `identity` proves `claimed` (certified by this node's
    /// authority) and vouches for `signed`.
    pub fn verify_peer(
        &self,
        claimed: NodeId,
        identity: &[u8; IDENTITY_LEN],
        signed: &[u8],
    ) -> Result<(), NodeKeysError> {
        let mut public = [0; 32];
        public.copy_from_slice(&identity[..32]);
        let public = VerifyingKey::from_bytes(&public)
            .map_err(|_| NodeKeysError::BadCertificate(claimed))?;
        let mut cert = [0; 64];
        cert.copy_from_slice(&identity[32..96]);
        self.check(claimed, &public, &Signature::from_bytes(&cert))?;
        let mut sig = [0; 64];
        sig.copy_from_slice(&identity[96..]);
        public
            .verify_strict(signed, &Signature::from_bytes(&sig))
            .map_err(|_| NodeKeysError::BadSignature(claimed))
    }

    fn check(
        &self,
        node: NodeId,
        public: &VerifyingKey,
        cert: &Signature,
    ) -> Result<(), NodeKeysError> {
        self.authority
            .verify_strict(&cert_message(node, public), cert)
            .map_err(|_| NodeKeysError::BadCertificate(node))
    }
}

impl fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKeys({}, <secret>)", self.node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A tokio test so that `--cfg madsim` runs it in madsim's runtime (its entropy).
    #[tokio::test]
    async fn issued_keys_round_trip_and_prove_only_their_own_id() {
        let ca = ClusterAuthority::generate();
        let one = ca.issue(NodeId(1));
        let two = NodeKeys::from_text(&ca.issue(NodeId(2)).to_text()).unwrap();
        assert_eq!(two.node(), NodeId(2));
        let signed = b"transcript";
        let id2 = two.identity(signed);
        assert_eq!(one.verify_peer(NodeId(2), &id2, signed), Ok(()));
        // The same identity under another claimed id, or another transcript, fails.
        assert_eq!(
            one.verify_peer(NodeId(3), &id2, signed),
            Err(NodeKeysError::BadCertificate(NodeId(3)))
        );
        assert_eq!(
            one.verify_peer(NodeId(2), &id2, b"other"),
            Err(NodeKeysError::BadSignature(NodeId(2)))
        );
        // Keys from another authority do not verify.
        let stranger = ClusterAuthority::generate().issue(NodeId(2));
        assert_eq!(
            one.verify_peer(NodeId(2), &stranger.identity(signed), signed),
            Err(NodeKeysError::BadCertificate(NodeId(2)))
        );
        let ca_again = ClusterAuthority::from_text(&ca.to_text()).unwrap();
        assert_eq!(ca_again.signing.as_bytes(), ca.signing.as_bytes());
    }

    // A tokio test so that `--cfg madsim` runs it in madsim's runtime (its entropy).
    #[tokio::test]
    async fn bad_text_is_a_named_error_and_secrets_never_print() {
        let ca = ClusterAuthority::generate();
        let text = ca.issue(NodeId(4)).to_text();
        for bad in [
            String::new(),
            "nefele-node-keys-v1 x".to_owned(),
            text.replace("nefele-node-keys-v1 4", "nefele-node-keys-v1 5"),
            format!("{} extra", text.trim()),
            text.replacen(' ', " zz", 2),
        ] {
            assert!(NodeKeys::from_text(&bad).is_err(), "{bad}");
        }
        assert!(ClusterAuthority::from_text("nefele-authority-v1 00").is_err());
        assert_eq!(format!("{ca:?}"), "ClusterAuthority(<secret>)");
        assert_eq!(
            format!("{:?}", ca.issue(NodeId(4))),
            "NodeKeys(n4, <secret>)"
        );
    }
}
