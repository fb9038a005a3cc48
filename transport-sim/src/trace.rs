//! The trace of a run: every delivered and dropped message, every timer and
//! every fault, with its simulated time; the trace hash over it; and writers
//! that save it as Chrome trace-event JSON (opens in Perfetto) or JSON lines.
//!
//! # The trace hash
//!
//! The hash is XXH3-64 (seed 0) over the concatenation of the canonical
//! encodings of all records, in the order the simulator produced them. All
//! integers are little endian:
//!
//! ```text
//! record   = time_ns:u64  tag:u8  fields
//! deliver  tag=1  from:u32 to:u32 len:u32 digest:u64
//! drop     tag=2  from:u32 to:u32 len:u32 digest:u64 reason:u8 (1 loss, 2 partition, 3 down)
//! timer    tag=3  node:u32
//! fault    tag=4  text_len:u32 text:utf8
//! ```
//!
//! `digest` is XXH3-64 of the message's encoded frame (see
//! `nefele_core::wire::codec`), so the hash covers message contents, and
//! `len` is the frame's length. The hash is printed as 16 lowercase hex digits.

use crate::network::DropReason;
use nefele_core::{NodeId, Time};
use serde_json::json;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use xxhash_rust::xxh3::Xxh3;

/// One message in flight, as the trace knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Sender.
    pub from: NodeId,
    /// Receiver (intended, for a drop).
    pub to: NodeId,
    /// The message kind (not hashed: the digest covers it).
    pub kind: &'static str,
    /// Frame length in bytes.
    pub len: u32,
    /// XXH3-64 of the frame.
    pub digest: u64,
}

/// One thing that happened in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceEvent<'a> {
    /// A message reached its destination's agent.
    Deliver(Packet),
    /// A message was lost, for this reason.
    Drop(Packet, DropReason),
    /// An agent's timer fired.
    Timer {
        /// The agent.
        node: NodeId,
    },
    /// A fault struck or was undone.
    Fault {
        /// What happened, in words.
        text: &'a str,
    },
}

impl DropReason {
    fn code(self) -> u8 {
        match self {
            DropReason::Loss => 1,
            DropReason::Partition => 2,
            DropReason::Down => 3,
        }
    }
}

/// The running trace hash. Records are gathered in a buffer and hashed a buffer
/// at a time: XXH3's streaming state gives the same hash however the input is cut,
/// and one update of 64 KiB costs far less than two thousand updates of 30 bytes.
pub struct TraceHasher {
    state: Xxh3,
    /// Records not hashed yet (at most [`HASH_CHUNK`] bytes between records).
    pending: Vec<u8>,
    records: u64,
}

/// How many bytes of records are gathered before they are hashed.
const HASH_CHUNK: usize = 64 * 1024;

impl Default for TraceHasher {
    fn default() -> Self {
        TraceHasher {
            state: Xxh3::new(),
            pending: Vec::with_capacity(HASH_CHUNK + 64),
            records: 0,
        }
    }
}

impl TraceHasher {
    /// Adds one record.
    pub fn record(&mut self, t: Time, event: &TraceEvent<'_>) {
        let mut buf = [0u8; 40];
        buf[..8].copy_from_slice(&t.as_nanos().to_le_bytes());
        let used = match *event {
            TraceEvent::Deliver(packet) => {
                buf[8] = 1;
                put_packet(&mut buf, &packet)
            }
            TraceEvent::Drop(packet, reason) => {
                buf[8] = 2;
                let end = put_packet(&mut buf, &packet);
                buf[end] = reason.code();
                end + 1
            }
            TraceEvent::Timer { node } => {
                buf[8] = 3;
                buf[9..13].copy_from_slice(&node.0.to_le_bytes());
                13
            }
            TraceEvent::Fault { text } => {
                buf[8] = 4;
                buf[9..13].copy_from_slice(&(text.len() as u32).to_le_bytes());
                self.pending.extend_from_slice(&buf[..13]);
                self.pending.extend_from_slice(text.as_bytes());
                self.records += 1;
                self.hash_full_chunk();
                return;
            }
        };
        self.pending.extend_from_slice(&buf[..used]);
        self.records += 1;
        self.hash_full_chunk();
    }

    fn hash_full_chunk(&mut self) {
        if self.pending.len() >= HASH_CHUNK {
            self.state.update(&self.pending);
            self.pending.clear();
        }
    }

    /// The hash of the records so far, as 16 hex digits.
    #[must_use]
    pub fn hex(&self) -> String {
        let mut state = self.state.clone();
        state.update(&self.pending);
        format!("{:016x}", state.digest())
    }

    /// How many records were hashed.
    #[must_use]
    pub fn records(&self) -> u64 {
        self.records
    }
}

fn put_packet(buf: &mut [u8; 40], p: &Packet) -> usize {
    buf[9..13].copy_from_slice(&p.from.0.to_le_bytes());
    buf[13..17].copy_from_slice(&p.to.0.to_le_bytes());
    buf[17..21].copy_from_slice(&p.len.to_le_bytes());
    buf[21..29].copy_from_slice(&p.digest.to_le_bytes());
    29
}

/// The format a trace file is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TraceFormat {
    /// Chrome trace-event JSON (an array of instant events); opens in Perfetto and chrome://tracing.
    Chrome,
    /// One JSON object per line.
    Jsonl,
}

impl TraceFormat {
    /// The format a file name implies: `.jsonl` is JSON lines, anything else Chrome JSON.
    #[must_use]
    pub fn for_path(path: &std::path::Path) -> Self {
        if path.extension().is_some_and(|e| e == "jsonl") {
            TraceFormat::Jsonl
        } else {
            TraceFormat::Chrome
        }
    }
}

/// Writes trace records to a file as they happen.
pub struct TraceWriter {
    out: BufWriter<File>,
    format: TraceFormat,
    first: bool,
}

impl TraceWriter {
    /// A writer into `file`, in `format`.
    pub fn new(file: File, format: TraceFormat) -> io::Result<Self> {
        let mut out = BufWriter::with_capacity(1 << 20, file);
        if format == TraceFormat::Chrome {
            out.write_all(b"[\n")?;
        }
        Ok(TraceWriter {
            out,
            format,
            first: true,
        })
    }

    /// Writes one record.
    pub fn record(&mut self, t: Time, event: &TraceEvent<'_>) -> io::Result<()> {
        let value = match self.format {
            TraceFormat::Jsonl => jsonl(t, event),
            TraceFormat::Chrome => chrome(t, event),
        };
        if self.format == TraceFormat::Chrome && !self.first {
            self.out.write_all(b",\n")?;
        }
        self.first = false;
        serde_json::to_writer(&mut self.out, &value)?;
        if self.format == TraceFormat::Jsonl {
            self.out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Closes the trace and flushes it to the file (to the disk for a regular file;
    /// a device or a pipe has nothing to sync).
    pub fn finish(mut self) -> io::Result<()> {
        if self.format == TraceFormat::Chrome {
            self.out.write_all(b"\n]\n")?;
        }
        self.out.flush()?;
        let file = self.out.get_ref();
        if file.metadata()?.is_file() {
            file.sync_all()?;
        }
        Ok(())
    }
}

fn jsonl(t: Time, event: &TraceEvent<'_>) -> serde_json::Value {
    let t_ns = t.as_nanos();
    let packet = |kind: &str, p: &Packet| json!({"t_ns": t_ns, "type": kind, "from": p.from.0, "to": p.to.0, "kind": p.kind, "len": p.len, "digest": format!("{:016x}", p.digest)});
    match event {
        TraceEvent::Deliver(p) => packet("deliver", p),
        TraceEvent::Drop(p, reason) => {
            let mut v = packet("drop", p);
            v["reason"] = json!(reason.name());
            v
        }
        TraceEvent::Timer { node } => json!({"t_ns": t_ns, "type": "timer", "node": node.0}),
        TraceEvent::Fault { text } => json!({"t_ns": t_ns, "type": "fault", "text": text}),
    }
}

fn chrome(t: Time, event: &TraceEvent<'_>) -> serde_json::Value {
    let ts = t.as_nanos() as f64 / 1000.0;
    let packet = |cat: &str, p: &Packet| json!({"name": p.kind, "cat": cat, "ph": "i", "s": "t", "ts": ts, "pid": 1, "tid": p.to.0, "args": {"from": p.from.0, "len": p.len}});
    match event {
        TraceEvent::Deliver(p) => packet("deliver", p),
        TraceEvent::Drop(p, reason) => {
            let mut v = packet("drop", p);
            v["args"]["reason"] = json!(reason.name());
            v
        }
        TraceEvent::Timer { node } => {
            json!({"name": "timer", "cat": "timer", "ph": "i", "s": "t", "ts": ts, "pid": 1, "tid": node.0})
        }
        TraceEvent::Fault { text } => {
            json!({"name": text, "cat": "fault", "ph": "i", "s": "g", "ts": ts, "pid": 1, "tid": 0})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_every_field_and_order() {
        let a = TraceEvent::Timer { node: NodeId(1) };
        let b = TraceEvent::Fault { text: "crash n1" };
        let hash = |events: &[(u64, TraceEvent<'_>)]| {
            let mut h = TraceHasher::default();
            for (t, e) in events {
                h.record(Time::from_nanos(*t), e);
            }
            h.hex()
        };
        let base = hash(&[(1, a), (2, b)]);
        assert_eq!(base, hash(&[(1, a), (2, b)]));
        assert_ne!(base, hash(&[(2, b), (1, a)]));
        assert_ne!(base, hash(&[(1, a), (3, b)]));
        assert_ne!(
            base,
            hash(&[(1, TraceEvent::Timer { node: NodeId(2) }), (2, b)])
        );
        assert_eq!(base.len(), 16);
    }

    /// The documented encoding, pinned: changing it changes every published hash.
    #[test]
    fn hash_of_a_known_trace_is_stable() {
        let mut h = TraceHasher::default();
        h.record(Time::from_nanos(5), &TraceEvent::Timer { node: NodeId(3) });
        let mut expected = Xxh3::new();
        expected.update(&[5, 0, 0, 0, 0, 0, 0, 0, 3, 3, 0, 0, 0]);
        assert_eq!(h.hex(), format!("{:016x}", expected.digest()));
    }

    #[test]
    fn chrome_trace_is_valid_json() {
        let dir = std::env::temp_dir().join(format!("nefele-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.json");
        let mut w = TraceWriter::new(File::create(&path).unwrap(), TraceFormat::Chrome).unwrap();
        w.record(
            Time::from_nanos(1500),
            &TraceEvent::Timer { node: NodeId(1) },
        )
        .unwrap();
        w.record(Time::from_nanos(2500), &TraceEvent::Fault { text: "heal" })
            .unwrap();
        w.finish().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(v[0]["ts"], 1.5);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
