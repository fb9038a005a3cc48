//! Untrusted bytes into the envelope decoder: it must never panic (nor allocate past
//! its limit), and whatever decodes must encode back to exactly the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nefele_core::wire::{codec::DEFAULT_MAX_FRAME, decode, encode};

fuzz_target!(|frame: &[u8]| {
    if let Ok(envelope) = decode(frame, DEFAULT_MAX_FRAME) {
        let again = encode(&envelope, DEFAULT_MAX_FRAME).expect("a decoded envelope re-encodes");
        assert_eq!(again, frame, "decode then encode changed the bytes");
    }
});
