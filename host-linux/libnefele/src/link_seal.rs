//! The seal of a link between processes of two hosts ([`crate::link`]): what
//! crosses the network between them is encrypted and authenticated end to end,
//! as the agents' own traffic is, though no agent is on the path.
//!
//! The opener's agent draws a fresh [`LinkKey`] for each such link and gives it to
//! the two ends only: to the opener in its answer, to the receiver inside the
//! marker, which travels the agents' encrypted transport. Each end turns the
//! frame bytes it writes into *records*: a 4-byte little-endian length of what
//! follows, then those bytes sealed with AES-256-GCM (the length as associated
//! data, a 16-byte tag). The nonce is the writer's side and the record's number
//! on that side (from 0, one per record), so each side's records can be neither
//! replayed, reordered, dropped from the middle, altered nor moved to the other
//! direction: the reader expects the next number of the other side, and any
//! record that does not open ends the link.
//!
//! Invariants: no nonce is used twice with one key (each side numbers only its
//! own records; a record sealed and never written has its number taken back
//! before another is sealed, see [`Seal::unseal_last`]); a reader holds at most one
//! unfinished record ([`MAX_RECORD`] and its tag) plus what it read at once; a
//! record is checked before any of its bytes count as frames.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};

/// Bytes of a link's key.
pub const KEY_LEN: usize = 32;
/// A link's key, shared by its two ends only.
pub type LinkKey = [u8; KEY_LEN];
/// The most frame bytes one record carries.
pub const MAX_RECORD: usize = 64 * 1024;
/// Bytes of a record's tag.
const TAG_LEN: usize = 16;
/// Bytes of a record's length prefix.
const LEN_LEN: usize = 4;

/// Which end of the link seals: each numbers its own records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The process that opened the link.
    Opener = 0,
    /// The process the link was made to.
    Receiver = 1,
}

/// A record that does not open: the link ends.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// A record longer than any a sealing end writes.
    #[error("a sealed link record of {0} bytes, over the limit")]
    TooLarge(usize),
    /// A record whose tag does not check: forged, altered, replayed, reordered or
    /// sealed with another key.
    #[error("a sealed link record that does not open")]
    Forged,
}

/// One end's seal of a link.
pub struct Seal {
    cipher: Aes256Gcm,
    writer: Side,
    written: u64,
    read: u64,
    /// Bytes of a record not read whole yet.
    raw: Vec<u8>,
    /// The frame bytes of the records opened last.
    plain: Vec<u8>,
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("Seal")
            .field("writer", &self.writer)
            .field("written", &self.written)
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

impl Seal {
    /// The seal of `side`'s end of the link with `key`.
    #[must_use]
    pub fn new(key: &LinkKey, side: Side) -> Self {
        Seal {
            cipher: Aes256Gcm::new(key.into()),
            writer: side,
            written: 0,
            read: 0,
            raw: Vec::new(),
            plain: Vec::new(),
        }
    }

    fn nonce(side: Side, number: u64) -> Nonce<aes_gcm::aead::consts::U12> {
        let mut nonce = [0u8; 12];
        nonce[0] = side as u8;
        nonce[4..].copy_from_slice(&number.to_le_bytes());
        nonce.into()
    }

    /// Appends `frames` to `out` as sealed records (one per [`MAX_RECORD`] bytes).
    pub fn seal(&mut self, frames: &[u8], out: &mut Vec<u8>) {
        for chunk in frames.chunks(MAX_RECORD) {
            let len = u32::try_from(chunk.len() + TAG_LEN).expect("a record is under 4 GiB");
            let len = len.to_le_bytes();
            out.extend_from_slice(&len);
            let start = out.len();
            out.extend_from_slice(chunk);
            let tag = self
                .cipher
                .encrypt_in_place_detached(
                    &Self::nonce(self.writer, self.written),
                    &len,
                    &mut out[start..],
                )
                .expect("AES-GCM seals any record under its size limit");
            out.extend_from_slice(&tag);
            self.written += 1;
        }
    }

    /// Takes back the number of the record sealed last, which never left this
    /// process (it is replaced by a newer one before any of its bytes were
    /// written), so the next record sealed takes that number.
    pub fn unseal_last(&mut self) {
        self.written = self.written.saturating_sub(1);
    }

    /// Takes `raw` bytes read from the link; the frame bytes of every record they
    /// complete, in order (empty when none is complete yet).
    ///
    /// # Errors
    /// A record over the limit or one that does not open; the link must end.
    pub fn open(&mut self, raw: &[u8]) -> Result<&[u8], SealError> {
        self.raw.extend_from_slice(raw);
        self.plain.clear();
        let mut at = 0;
        while let Some(prefix) = self.raw.get(at..at + LEN_LEN) {
            let len = u32::from_le_bytes(prefix.try_into().expect("4 bytes")) as usize;
            if !(TAG_LEN..=MAX_RECORD + TAG_LEN).contains(&len) {
                return Err(SealError::TooLarge(len));
            }
            let Some(record) = self.raw.get(at + LEN_LEN..at + LEN_LEN + len) else {
                break;
            };
            let (body, tag) = record.split_at(len - TAG_LEN);
            let start = self.plain.len();
            self.plain.extend_from_slice(body);
            self.cipher
                .decrypt_in_place_detached(
                    &Self::nonce(self.other(), self.read),
                    prefix,
                    &mut self.plain[start..],
                    Tag::from_slice(tag),
                )
                .map_err(|_| SealError::Forged)?;
            self.read += 1;
            at += LEN_LEN + len;
        }
        self.raw.drain(..at);
        Ok(&self.plain)
    }

    fn other(&self) -> Side {
        match self.writer {
            Side::Opener => Side::Receiver,
            Side::Receiver => Side::Opener,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pair() -> (Seal, Seal) {
        let key = [7u8; KEY_LEN];
        (
            Seal::new(&key, Side::Opener),
            Seal::new(&key, Side::Receiver),
        )
    }

    #[test]
    fn records_open_at_the_other_end_however_the_reads_cut_them() {
        let (mut a, mut b) = pair();
        let mut wire = Vec::new();
        a.seal(b"first", &mut wire);
        a.seal(&vec![9u8; MAX_RECORD + 10], &mut wire);
        a.seal(b"last", &mut wire);
        let mut got = Vec::new();
        for piece in wire.chunks(1000) {
            got.extend_from_slice(b.open(piece).unwrap());
        }
        let mut want = b"first".to_vec();
        want.extend_from_slice(&vec![9u8; MAX_RECORD + 10]);
        want.extend_from_slice(b"last");
        assert_eq!(got, want);
        // Only an unfinished record is kept.
        assert!(b.raw.is_empty());
    }

    #[test]
    fn a_replayed_reordered_reflected_or_altered_record_does_not_open() {
        let (mut a, _) = pair();
        let (mut one, mut two) = (Vec::new(), Vec::new());
        a.seal(b"one", &mut one);
        a.seal(b"two", &mut two);
        // Replayed.
        let (_, mut b) = pair();
        assert_eq!(b.open(&one).unwrap(), b"one");
        assert_eq!(b.open(&one), Err(SealError::Forged));
        // Reordered (the first dropped).
        let (_, mut b) = pair();
        assert_eq!(b.open(&two), Err(SealError::Forged));
        // Reflected to its own writer's side.
        let (mut a2, _) = pair();
        assert_eq!(a2.open(&one), Err(SealError::Forged));
        // Altered, body or length.
        let (_, mut b) = pair();
        let mut bad = one.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(b.open(&bad), Err(SealError::Forged));
        let (_, mut b) = pair();
        let mut long = one.clone();
        long[0] += 1;
        long.push(0);
        assert_eq!(b.open(&long), Err(SealError::Forged));
        // Another key.
        let mut c = Seal::new(&[8u8; KEY_LEN], Side::Receiver);
        assert_eq!(c.open(&one), Err(SealError::Forged));
    }

    #[test]
    fn an_oversized_length_is_refused_before_its_body_comes() {
        let (_, mut b) = pair();
        let len = u32::try_from(MAX_RECORD + TAG_LEN + 1).unwrap();
        assert!(matches!(
            b.open(&len.to_le_bytes()),
            Err(SealError::TooLarge(_))
        ));
        let (_, mut b) = pair();
        assert!(matches!(b.open(&[1, 0, 0, 0]), Err(SealError::TooLarge(1))));
    }

    #[test]
    fn a_record_taken_back_is_sealed_again_under_its_number() {
        let (mut a, mut b) = pair();
        let mut never_written = Vec::new();
        a.seal(b"old", &mut never_written);
        a.unseal_last();
        let mut wire = Vec::new();
        a.seal(b"new", &mut wire);
        assert_eq!(b.open(&wire).unwrap(), b"new");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_never_open(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let (_, mut b) = pair();
            if let Ok(plain) = b.open(&bytes) {
                prop_assert!(plain.is_empty());
            }
        }
    }
}
