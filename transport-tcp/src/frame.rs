//! The framing of the byte stream: each frame is a big-endian `u32` length,
//! then that many bytes (one encoded core envelope).
//!
//! ```text
//! offset  size  field
//! 0       4     payload length L, big endian, 1 <= L <= max_frame
//! 4       L     payload
//! ```
//!
//! Invariants: [`decode`] is a pure function over bytes that never panics and
//! never allocates; a length above the receiver's limit (or zero, which no
//! envelope encodes to) is an error found from the 4-byte header alone, before
//! any payload is buffered. [`encode_into`] appends exactly one whole frame or
//! nothing.

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Why bytes are not a valid frame stream. The connection carrying them is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix claims more than the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The claimed payload length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The length prefix is zero: no envelope is empty.
    #[error("empty frame")]
    Empty,
}

/// What the start of a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// One whole frame: its payload, and how many buffer bytes it took (header included).
    Frame {
        /// The payload bytes, borrowed from the buffer.
        payload: &'a [u8],
        /// Header plus payload length.
        consumed: usize,
    },
    /// Not a whole frame yet; `total` is the whole frame's length once the header is known.
    Incomplete {
        /// Header plus payload length, when the header has arrived.
        total: Option<usize>,
    },
}

/// Decodes the frame at the start of `buf`, checking its length against `max_frame`.
pub fn decode(buf: &[u8], max_frame: usize) -> Result<Decoded<'_>, FrameError> {
    let Some((header, rest)) = buf.split_first_chunk::<HEADER_LEN>() else {
        return Ok(Decoded::Incomplete { total: None });
    };
    let len = usize::try_from(u32::from_be_bytes(*header)).unwrap_or(usize::MAX);
    check_len(len, max_frame)?;
    match rest.get(..len) {
        Some(payload) => Ok(Decoded::Frame {
            payload,
            consumed: HEADER_LEN + len,
        }),
        None => Ok(Decoded::Incomplete {
            total: Some(HEADER_LEN + len),
        }),
    }
}

/// Appends the frame of `payload` to `out`, or nothing when `payload` is not a valid frame.
pub fn encode_into(out: &mut Vec<u8>, payload: &[u8], max_frame: usize) -> Result<(), FrameError> {
    check_len(payload.len(), max_frame)?;
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::TooLarge {
        len: payload.len(),
        max: max_frame,
    })?;
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Whether a payload of `len` bytes may be framed under `max_frame`.
pub fn check_len(len: usize, max_frame: usize) -> Result<(), FrameError> {
    if len == 0 {
        Err(FrameError::Empty)
    } else if len > max_frame {
        Err(FrameError::TooLarge {
            len,
            max: max_frame,
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024;

    #[test]
    fn round_trips_back_to_back_frames() {
        let mut buf = Vec::new();
        encode_into(&mut buf, b"hello", MAX).unwrap();
        encode_into(&mut buf, &[7; 300], MAX).unwrap();
        let Decoded::Frame { payload, consumed } = decode(&buf, MAX).unwrap() else {
            panic!("expected a frame");
        };
        assert_eq!(payload, b"hello");
        assert_eq!(consumed, 9);
        assert_eq!(
            decode(&buf[consumed..], MAX).unwrap(),
            Decoded::Frame {
                payload: &[7; 300],
                consumed: 304
            }
        );
    }

    #[test]
    fn partial_input_is_incomplete() {
        let mut buf = Vec::new();
        encode_into(&mut buf, b"hello", MAX).unwrap();
        assert_eq!(
            decode(&buf[..3], MAX),
            Ok(Decoded::Incomplete { total: None })
        );
        assert_eq!(
            decode(&buf[..6], MAX),
            Ok(Decoded::Incomplete { total: Some(9) })
        );
    }

    #[test]
    fn oversized_header_fails_before_the_payload_arrives() {
        let header = u32::MAX.to_be_bytes();
        assert_eq!(
            decode(&header, MAX),
            Err(FrameError::TooLarge {
                len: u32::MAX as usize,
                max: MAX
            })
        );
        assert_eq!(decode(&[0, 0, 0, 0], MAX), Err(FrameError::Empty));
    }

    #[test]
    fn encode_rejects_bad_payloads_and_leaves_output_alone() {
        let mut buf = vec![1, 2];
        assert_eq!(
            encode_into(&mut buf, &[0; MAX + 1], MAX),
            Err(FrameError::TooLarge {
                len: MAX + 1,
                max: MAX
            })
        );
        assert_eq!(encode_into(&mut buf, &[], MAX), Err(FrameError::Empty));
        assert_eq!(buf, [1, 2]);
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes() {
        // A cheap deterministic sweep of small, mostly tiny-length inputs.
        let mut state = 0x9e37_79b9_u32;
        for n in 0..2000 {
            let bytes: Vec<u8> = (0..n % 40)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    (state % 8) as u8
                })
                .collect();
            let mut at = 0;
            while let Ok(Decoded::Frame { consumed, .. }) = decode(&bytes[at..], 16) {
                at += consumed;
            }
        }
    }
}
