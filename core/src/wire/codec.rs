//! The byte format of an [`Envelope`]: a fixed header, then the bincode-1 body.
//!
//! ```text
//! offset  size  field
//! 0       4     magic  b"NFLE"
//! 4       2     protocol version, little endian (currently 1)
//! 6       ..    bincode 1 (fixint, little endian) of the Envelope
//! ```
//!
//! Decoding untrusted bytes is bounded: the frame length is checked against the
//! caller's limit before anything is read, and bincode runs with that limit, so
//! a length field that claims more than the frame holds fails with a typed error
//! instead of allocating. Decoding never panics.

use super::Envelope;
use bincode::Options;

/// The first bytes of every frame.
pub const MAGIC: [u8; 4] = *b"NFLE";
/// The protocol version this build speaks.
///
/// - 1: the first.
/// - 2: federation summaries carry a payload with one optional part per service
///   that rides the tree (placement's capacity and tenant filter moved there).
/// - 3: federation's indirect probes, `ProbeReq` and `ProbeFor` (appended).
/// - 4: the messaging service (a `Message` variant, and its part in the summaries'
///   payload); placement's `OfferReq` names the request's tenant, `PidOp::Unwait`
///   is new, and `Ran` names the pid instead of the tenant and binary (checks of
///   peers' messages).
/// - 5: the supervision service (a `Message` variant, and its empty part in the
///   summaries' payload).
/// - 6: messaging's fan-out data says whether it is reliable; its `Pong` names the
///   answering agent's life (monitors survive a quick restart of the watched host);
///   names' `Life` (appended); supervision's leases (`Watch` grants, `Status` asks
///   and `kept`, `Alive`, `Held`, `Dropped`); spawn parameters: placement's summary part
///   carries cpu speed classes, accelerators and racks, `Shape` a cpu class, `Offer`
///   its host's location, `FindRoom` a cpu class and racks to avoid; `Absent` is new.
/// - 7: the external proxy's streams: `Out` and `Back` are numbered per stream and
///   acknowledged (`OutAck`, `BackAck`), `Taken` is gone, `Abort` and `Dropped` are
///   new; mail may say an external connection ended (`ExternalClosed`).
///   Placement's `Shape` carries the kinds of limit its processes ask for (a host
///   that cannot enforce one offers nothing), and `Resource::Limit` is appended.
///   `CreateItem.leased` marks a supervisor's spawn.
/// - 8: an external connection's end says why it failed: `ExternalClose` gains
///   `Denied`, `Unreachable` and `Overrun` (appended).
/// - 9: names move with a restarted child: supervision's `Hand` and `Holds`
///   (appended), and a replicated record's children carry their names.
/// - 10: supervision's keepers confirm the versions of records they hold
///   (`Copied`, appended).
/// - 11: federation's `Gone` (appended): a member leaving the federation for good,
///   told apart from one leaving for another group (`Leave`).
/// - 12: supervision's `Pass` (appended): a member keeping the copy of a home
///   known gone (removed or restarted), which it may not take over itself, passes
///   it to the member of its group that does.
/// - 13: a fan-out walk carries a batch of a reliable sender's consecutive sends to
///   one target (`Carry::Data.items`).
/// - 14: names' claims carry their agent's life (`Life` is gone) and a number the
///   root confirms with `Held` (new).
/// - 15: supervision's `Alive` carries the home's quorum base (keepers judge a
///   take-over by it); `TakenOver` (appended) tells a new home's group of its
///   take-over.
/// - 16: supervision's `Pass` carries the home's quorum base (a taker that never
///   knew it judges the take-over by it).
/// - 17: placement's `Create` carries the size of the host's share (`total`)
///   instead of a last-batch flag (a reordered last batch released the
///   reservation an earlier batch needed).
/// - 18: discovery's `Heartbeat` carries a Bloom filter of the neighbours its
///   sender knows (`known`).
/// - 19: supervision's take-overs wait for most of the home's base to disown it
///   (`Disown`, `Disowned` and `Refused`, appended); `Alive` and `Pass` carry the
///   base's epoch; `Held.at` is optional (a member that disowned the home does
///   not confirm it).
/// - 20: supervision's `Promised` (appended): a member that promised a home to
///   another taker, or heard of its take-over, names that taker to the asker.
/// - 21: federation's `Beat` names an agent that left the member's groups
///   lately, or that its own members named (`departed`), for the root to probe.
pub const VERSION: u16 = 21;
/// Bytes before the body.
pub const HEADER_LEN: usize = 6;
/// The default limit on one frame, in bytes.
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024;

/// Why bytes are not a valid envelope. Decoding changes no state.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame is shorter than the header.
    #[error("frame of {len} bytes is shorter than the {HEADER_LEN}-byte header")]
    TooShort {
        /// The frame's length.
        len: usize,
    },
    /// The frame is longer than the receiver accepts.
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The frame's length.
        len: usize,
        /// The receiver's limit.
        limit: usize,
    },
    /// The frame does not start with the magic bytes.
    #[error("bad magic {found:02x?}, expected {MAGIC:02x?}")]
    BadMagic {
        /// What the frame starts with.
        found: [u8; 4],
    },
    /// The frame speaks a protocol version this build does not.
    #[error("unsupported protocol version {found} (this build speaks {VERSION})")]
    UnsupportedVersion {
        /// The frame's version.
        found: u16,
    },
    /// The body is not a valid envelope (truncated, bad tag, length past the end, trailing bytes).
    #[error("malformed body: {0}")]
    Malformed(String),
}

/// Why an envelope could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The encoded envelope would exceed the limit.
    #[error("encoded envelope exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The serializer failed.
    #[error("cannot encode envelope: {0}")]
    Serialize(String),
}

fn options(limit: u64) -> impl Options {
    unlimited().with_limit(limit)
}

/// The options without a size limit. Encoding uses them: bincode walks a value
/// twice under a limit (a size pass first, then the writing one), and encoding is
/// a tenth of a simulation's instructions; the limit is checked on the frame instead.
fn unlimited() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
}

/// Appends the frame of `envelope` to `out` (which is left as it was on error).
pub fn encode_into(
    envelope: &Envelope,
    out: &mut Vec<u8>,
    max_frame: usize,
) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    let result = unlimited().serialize_into(&mut *out, envelope);
    let error = match result {
        Ok(()) if out.len() - start <= max_frame => return Ok(()),
        Ok(()) => EncodeError::TooLarge { limit: max_frame },
        Err(err) => EncodeError::Serialize(err.to_string()),
    };
    out.truncate(start);
    Err(error)
}

/// The frame of `envelope`, at most `max_frame` bytes long.
pub fn encode(envelope: &Envelope, max_frame: usize) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(64);
    encode_into(envelope, &mut out, max_frame)?;
    Ok(out)
}

/// The length of the frame of `envelope`, without building it.
#[must_use]
pub fn encoded_len(envelope: &Envelope) -> usize {
    let body = options(u64::MAX)
        .serialized_size(envelope)
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    HEADER_LEN.saturating_add(body)
}

/// The envelope in `frame`, if `frame` is a valid frame of at most `max_frame` bytes.
pub fn decode(frame: &[u8], max_frame: usize) -> Result<Envelope, DecodeError> {
    if frame.len() > max_frame {
        return Err(DecodeError::TooLarge {
            len: frame.len(),
            limit: max_frame,
        });
    }
    let Some((header, body)) = frame.split_first_chunk::<HEADER_LEN>() else {
        return Err(DecodeError::TooShort { len: frame.len() });
    };
    let magic = [header[0], header[1], header[2], header[3]];
    if magic != MAGIC {
        return Err(DecodeError::BadMagic { found: magic });
    }
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion { found: version });
    }
    options(body.len() as u64)
        .deserialize(body)
        .map_err(|err| DecodeError::Malformed(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::DiscoveryMsg;
    use crate::ids::{Incarnation, NodeId};
    use crate::wire::Message;
    use proptest::prelude::*;

    fn sample() -> Envelope {
        Envelope {
            from: NodeId(9),
            incarnation: Incarnation(2),
            body: Message::Discovery(DiscoveryMsg::Announce),
        }
    }

    #[test]
    fn round_trip() {
        let frame = encode(&sample(), DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(frame.len(), encoded_len(&sample()));
        assert_eq!(decode(&frame, DEFAULT_MAX_FRAME), Ok(sample()));
    }

    #[test]
    fn header_errors_are_typed() {
        assert_eq!(decode(b"NF", 100), Err(DecodeError::TooShort { len: 2 }));
        assert_eq!(
            decode(b"XXXX\x01\x00", 100),
            Err(DecodeError::BadMagic { found: *b"XXXX" })
        );
        let next = VERSION + 1;
        let mut frame = b"NFLE".to_vec();
        frame.extend_from_slice(&next.to_le_bytes());
        assert_eq!(
            decode(&frame, 100),
            Err(DecodeError::UnsupportedVersion { found: next })
        );
        assert_eq!(
            decode(&[0; 101], 100),
            Err(DecodeError::TooLarge {
                len: 101,
                limit: 100
            })
        );
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut frame = encode(&sample(), DEFAULT_MAX_FRAME).unwrap();
        frame.push(0);
        assert!(matches!(
            decode(&frame, DEFAULT_MAX_FRAME),
            Err(DecodeError::Malformed(_))
        ));
    }

    /// Regression: a short frame whose body claims a vector of 2^60 elements must fail
    /// on the limit, not try to allocate.
    #[test]
    fn short_input_claiming_huge_length_is_rejected_without_allocating() {
        let mut frame = Vec::from(MAGIC);
        frame.extend_from_slice(&VERSION.to_le_bytes());
        frame.extend_from_slice(&9u32.to_le_bytes()); // from
        frame.extend_from_slice(&1u32.to_le_bytes()); // incarnation
        frame.extend_from_slice(&0u32.to_le_bytes()); // Message::Discovery
        frame.extend_from_slice(&2u32.to_le_bytes()); // DiscoveryMsg::Hello, which holds a Vec
        frame.extend_from_slice(&(1u64 << 60).to_le_bytes()); // claimed length
        assert!(matches!(
            decode(&frame, DEFAULT_MAX_FRAME),
            Err(DecodeError::Malformed(_))
        ));
    }

    /// Regression (found by the `decode_envelope` fuzz target): a duration whose
    /// nanoseconds made a second or more decoded (serde carried them into the
    /// seconds), so the envelope did not encode back to its frame. Such a frame is now
    /// malformed.
    #[test]
    fn a_duration_with_a_second_of_nanos_is_malformed() {
        use crate::placement::api::Demand;
        use crate::placement::msg::{LedgerItem, PlacementMsg};
        use std::time::Duration;
        let item = LedgerItem {
            pid: crate::ids::Pid::new(NodeId(9), Incarnation(2), 1),
            tenant: crate::ids::TenantId(1),
            command: "/bin/x".into(),
            demand: Demand::default(),
            age: Duration::new(5, 0),
        };
        let envelope = Envelope {
            body: Message::Placement(PlacementMsg::Ledger {
                reset: true,
                present: vec![item],
                ended: Vec::new(),
            }),
            ..sample()
        };
        let mut frame = encode(&envelope, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(decode(&frame, DEFAULT_MAX_FRAME), Ok(envelope));
        // The age's nanoseconds come just before the empty `ended` (its 8-byte length).
        let at = frame.len() - 8 - 4;
        assert_eq!(frame[at..at + 4], [0; 4]);
        frame[at..at + 4].copy_from_slice(&1_000_000_000u32.to_le_bytes());
        assert!(matches!(
            decode(&frame, DEFAULT_MAX_FRAME),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn encode_respects_the_limit() {
        assert!(matches!(
            encode(&sample(), 8),
            Err(EncodeError::TooLarge { limit: 8 })
        ));
        // A frame of exactly the limit passes, one byte less does not, and a
        // refused frame leaves the buffer as it was.
        let len = encode(&sample(), DEFAULT_MAX_FRAME).unwrap().len();
        assert_eq!(encode(&sample(), len).unwrap().len(), len);
        let mut out = vec![7u8; 3];
        assert!(matches!(
            encode_into(&sample(), &mut out, len - 1),
            Err(EncodeError::TooLarge { .. })
        ));
        assert_eq!(out, [7u8; 3]);
        encode_into(&sample(), &mut out, len).unwrap();
        assert_eq!(out.len(), 3 + len);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes, DEFAULT_MAX_FRAME);
        }

        #[test]
        fn mutated_frames_never_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut frame = encode(&sample(), DEFAULT_MAX_FRAME).unwrap();
            for (at, byte) in flips {
                let i = at.index(frame.len());
                frame[i] = byte;
            }
            let keep = cut.index(frame.len() + 1);
            frame.truncate(keep);
            if let Ok(envelope) = decode(&frame, DEFAULT_MAX_FRAME) {
                // Whatever decodes must encode back to the same bytes.
                prop_assert_eq!(encode(&envelope, DEFAULT_MAX_FRAME).unwrap(), frame);
            }
        }
    }
}
