//! Framing into registered buffers: how a frame is cut into ring slots and put
//! back together.
//!
//! One RDMA SEND carries one *fragment* into one receive slot of `slot_size`
//! bytes. A fragment is an 8-byte header and up to `slot_size - 8` payload bytes:
//!
//! ```text
//! offset  size  field
//! 0       1     flags: bit 0 = the frame's last fragment; other bits zero
//! 1       3     zero
//! 4       4     payload bytes in this fragment P, big endian, 1 <= P <= slot_size - 8
//! 8       P     payload
//! ```
//!
//! Invariants: [`decode_header`] never panics and checks the header against the
//! completion's byte count, so a peer cannot make the receiver read past what
//! the NIC wrote; [`Assembler`] never holds more than `max_frame` bytes and
//! refuses a frame that would pass it before copying it; fragments of one frame
//! are consecutive on a link (a link sends one frame's fragments before the next
//! frame's), so reassembly needs no frame ids.

/// Bytes of a fragment header.
pub(crate) const HEADER_LEN: usize = 8;
/// The flag of a frame's last fragment.
const LAST: u8 = 1;

/// Why received bytes are not a valid fragment stream. The link carrying them is torn down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    /// The completion is shorter than a header.
    #[error("fragment of {0} bytes is shorter than its header")]
    Short(usize),
    /// Unknown flag bits, or non-zero reserved bytes.
    #[error("fragment header has unknown flags {0:#04x}")]
    Flags(u8),
    /// The header's length disagrees with the bytes the NIC delivered.
    #[error("fragment header says {header} payload bytes but {delivered} arrived")]
    Length {
        /// The header's payload length.
        header: usize,
        /// Payload bytes in the completion.
        delivered: usize,
    },
    /// The reassembled frame would pass the frame limit.
    #[error("reassembled frame exceeds the limit of {max} bytes")]
    TooLarge {
        /// The limit in force.
        max: usize,
    },
}

/// The header of a fragment of `payload_len` bytes.
pub(crate) fn encode_header(last: bool, payload_len: usize) -> [u8; HEADER_LEN] {
    let len = u32::try_from(payload_len).expect("a fragment fits one slot, far below 4 GiB");
    let mut out = [0; HEADER_LEN];
    out[0] = if last { LAST } else { 0 };
    out[4..].copy_from_slice(&len.to_be_bytes());
    out
}

/// Reads the header at the start of a completion of `delivered` bytes:
/// whether it is the last fragment, and its payload length.
pub(crate) fn decode_header(
    header: &[u8; HEADER_LEN],
    delivered: usize,
) -> Result<(bool, usize), FragmentError> {
    if delivered < HEADER_LEN {
        return Err(FragmentError::Short(delivered));
    }
    if header[0] & !LAST != 0 || header[1..4] != [0, 0, 0] {
        return Err(FragmentError::Flags(header[0]));
    }
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if len == 0 || len != delivered - HEADER_LEN {
        return Err(FragmentError::Length {
            header: len,
            delivered: delivered - HEADER_LEN,
        });
    }
    Ok((header[0] & LAST != 0, len))
}

/// Puts fragments back together into frames.
#[derive(Debug)]
pub(crate) struct Assembler {
    buf: Vec<u8>,
    max_frame: usize,
}

impl Assembler {
    pub(crate) fn new(max_frame: usize) -> Self {
        Assembler {
            buf: Vec::new(),
            max_frame,
        }
    }

    /// Adds one fragment's payload; returns the whole frame after its last fragment.
    pub(crate) fn push(
        &mut self,
        payload: &[u8],
        last: bool,
    ) -> Result<Option<Vec<u8>>, FragmentError> {
        if self.buf.len() + payload.len() > self.max_frame {
            self.buf.clear();
            return Err(FragmentError::TooLarge {
                max: self.max_frame,
            });
        }
        self.buf.extend_from_slice(payload);
        Ok(last.then(|| std::mem::take(&mut self.buf)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_must_match_the_delivered_bytes() {
        let h = encode_header(true, 100);
        assert_eq!(decode_header(&h, 108), Ok((true, 100)));
        assert_eq!(decode_header(&encode_header(false, 1), 9), Ok((false, 1)));
        assert_eq!(
            decode_header(&h, 50),
            Err(FragmentError::Length {
                header: 100,
                delivered: 42
            })
        );
        assert_eq!(decode_header(&h, 3), Err(FragmentError::Short(3)));
        let mut bad = h;
        bad[0] = 0x81;
        assert_eq!(decode_header(&bad, 108), Err(FragmentError::Flags(0x81)));
        assert!(decode_header(&encode_header(true, 0), 8).is_err());
    }

    #[test]
    fn the_assembler_refuses_an_oversized_frame_before_copying() {
        let mut a = Assembler::new(10);
        assert_eq!(a.push(b"12345", false), Ok(None));
        assert_eq!(a.push(b"678", true), Ok(Some(b"12345678".to_vec())));
        assert_eq!(a.push(b"123456", false), Ok(None));
        assert_eq!(
            a.push(b"123456", true),
            Err(FragmentError::TooLarge { max: 10 })
        );
        assert_eq!(a.push(b"x", true), Ok(Some(b"x".to_vec())));
    }
}
