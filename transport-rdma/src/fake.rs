//! An in-memory RDMA fabric: [`FakeVerbs`] implements [`Verbs`] with the
//! semantics the transport relies on, so every layer above the verbs is tested
//! without a device.
//!
//! What it models: memory regions with rkeys and bounds-checked RDMA WRITEs;
//! RC queue pairs with the state ladder of [`crate::qp`]; SENDs delivered at
//! once (a loopback wire) into the remote's oldest posted receive, in order;
//! a SEND that finds no posted receive fails with
//! [`WcStatus::ReceiverNotReady`] and is counted in [`FakeFabric::overruns`]
//! (as with `rnr_retry = 0` on a device); a SEND or WRITE to a queue pair that
//! is gone or not receiving fails with [`WcStatus::RetryExceeded`]; an error
//! completion moves the queue pair to ERROR and flushes its posted receives;
//! inline sends limited to `max_inline`; a locked-memory budget; completion
//! queue arming with one wake-up of the owner's channel per armed completion.
//! What it does not model: latency, packet loss inside RC (hardware retries
//! hide it), MTU and PSN checks.
//!
//! Dropping a [`FakeVerbs`] removes its queue pairs and regions from the
//! fabric, as a crashed host would: its peers' next requests fail.

use crate::qp::QpState;
use crate::verbs::{
    Completion, Endpoint, MrId, QpCaps, QpId, Queue, RemoteMr, SendOp, Verbs, VerbsError, WcStatus,
};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// The shared wire of several [`FakeVerbs`].
#[derive(Debug, Clone, Default)]
pub struct FakeFabric {
    state: Arc<Mutex<Fabric>>,
}

#[derive(Debug, Default)]
struct Fabric {
    next_id: u32,
    mrs: BTreeMap<u32, Mr>,
    qps: BTreeMap<u32, Qp>,
    overruns: u64,
    inline_sends: u64,
    sends: u64,
}

#[derive(Debug)]
struct Mr {
    owner: u32,
    bytes: Vec<u8>,
    remote_write: bool,
}

#[derive(Debug)]
struct Qp {
    owner: u32,
    state: QpState,
    remote: Option<u32>,
    caps: QpCaps,
    posted_recvs: VecDeque<(u64, u32, usize, usize)>,
    sends_outstanding: u32,
    send_cq: VecDeque<Completion>,
    recv_cq: VecDeque<Completion>,
    send_armed: bool,
    recv_armed: bool,
    channel: Arc<Notify>,
}

impl Qp {
    fn push(&mut self, queue: Queue, completion: Completion) {
        let armed = match queue {
            Queue::Send => {
                self.send_cq.push_back(completion);
                std::mem::take(&mut self.send_armed)
            }
            Queue::Recv => {
                self.recv_cq.push_back(completion);
                std::mem::take(&mut self.recv_armed)
            }
        };
        if armed {
            self.channel.notify_one();
        }
    }

    /// Moves to ERROR and flushes every posted receive.
    fn fail(&mut self) {
        self.state = QpState::Error;
        while let Some((wr_id, ..)) = self.posted_recvs.pop_front() {
            self.push(
                Queue::Recv,
                Completion {
                    wr_id,
                    result: Err(WcStatus::Flushed),
                },
            );
        }
    }
}

/// A region's fake virtual address: its id in the high half.
fn addr_of(mr: u32) -> u64 {
    u64::from(mr) << 32
}

impl FakeFabric {
    /// An empty fabric.
    #[must_use]
    pub fn new() -> Self {
        FakeFabric::default()
    }

    fn lock(&self) -> MutexGuard<'_, Fabric> {
        // Every update completes under the lock: a poisoned fabric is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A host's verbs on this fabric, with `max_inline` bytes of inline data and
    /// `memlock_bytes` of registrable memory.
    #[must_use]
    pub fn verbs(&self, max_inline: usize, memlock_bytes: usize) -> FakeVerbs {
        let id = {
            let mut f = self.lock();
            f.next_id += 1;
            f.next_id
        };
        FakeVerbs {
            fabric: self.clone(),
            id,
            max_inline,
            memlock_bytes,
            registered: 0,
            channel: Arc::new(Notify::new()),
        }
    }

    /// SENDs that found no posted receive: an overrun the credits failed to prevent.
    #[must_use]
    pub fn overruns(&self) -> u64 {
        self.lock().overruns
    }

    /// SENDs posted inline, and all SENDs posted.
    #[must_use]
    pub fn sends(&self) -> (u64, u64) {
        let f = self.lock();
        (f.inline_sends, f.sends)
    }

    /// Moves every queue pair to ERROR, as a fabric fault would (the hosts and
    /// their TCP connections stay up).
    pub fn break_links(&self) {
        for qp in self.lock().qps.values_mut() {
            qp.fail();
        }
    }

    /// Queue pairs alive on the fabric.
    #[must_use]
    pub fn queue_pairs(&self) -> usize {
        self.lock().qps.len()
    }
}

/// One host's verbs on a [`FakeFabric`].
#[derive(Debug)]
pub struct FakeVerbs {
    fabric: FakeFabric,
    id: u32,
    max_inline: usize,
    memlock_bytes: usize,
    registered: usize,
    channel: Arc<Notify>,
}

impl FakeVerbs {
    fn with_qp<T>(&self, qp: QpId, f: impl FnOnce(&mut Qp) -> T) -> T {
        let mut fabric = self.fabric.lock();
        let q = fabric
            .qps
            .get_mut(&qp.0)
            .filter(|q| q.owner == self.id)
            .expect("a queue pair of this host");
        f(q)
    }

    fn transition(&mut self, qp: QpId, to: QpState) -> Result<(), VerbsError> {
        self.with_qp(qp, |q| {
            q.state.check(to)?;
            q.state = to;
            Ok(())
        })
    }

    fn post_send_locked(fabric: &mut Fabric, qp: QpId, wr_id: u64, op: SendOp<'_>) {
        let (remote, payload): (Option<u32>, Result<Vec<u8>, WcStatus>) = {
            let local = &fabric.qps[&qp.0];
            let remote = local.remote;
            let payload = match op {
                SendOp::Send { mr, offset, len }
                | SendOp::Write {
                    mr, offset, len, ..
                } => Ok(fabric.mrs[&mr.0].bytes[offset..offset + len].to_vec()),
                SendOp::SendInline(bytes) => Ok(bytes.to_vec()),
            };
            (remote, payload)
        };
        let bytes = payload.expect("source bytes");
        let target = remote.filter(|r| fabric.qps.get(r).is_some_and(|q| q.state.receives()));
        let result = match (target, op) {
            (None, _) => Err(WcStatus::RetryExceeded),
            (Some(r), SendOp::Write { remote: dest, .. }) => {
                let mr = (dest.addr >> 32) as u32;
                let offset = (dest.addr & 0xffff_ffff) as usize;
                let owner = fabric.qps[&r].owner;
                match fabric.mrs.get_mut(&mr) {
                    Some(m)
                        if m.owner == owner
                            && m.remote_write
                            && mr == dest.rkey
                            && offset + bytes.len() <= m.bytes.len()
                            && bytes.len() <= dest.len as usize =>
                    {
                        m.bytes[offset..offset + bytes.len()].copy_from_slice(&bytes);
                        Ok(0)
                    }
                    _ => Err(WcStatus::RemoteAccess),
                }
            }
            (Some(r), _) => {
                fabric.sends += 1;
                if matches!(op, SendOp::SendInline(_)) {
                    fabric.inline_sends += 1;
                }
                let next = fabric
                    .qps
                    .get_mut(&r)
                    .and_then(|q| q.posted_recvs.pop_front());
                match next {
                    None => {
                        fabric.overruns += 1;
                        Err(WcStatus::ReceiverNotReady)
                    }
                    Some((rwr, mr, off, len)) if bytes.len() <= len => {
                        let m = fabric.mrs.get_mut(&mr).expect("posted region");
                        m.bytes[off..off + bytes.len()].copy_from_slice(&bytes);
                        let q = fabric.qps.get_mut(&r).expect("remote");
                        q.push(
                            Queue::Recv,
                            Completion {
                                wr_id: rwr,
                                result: Ok(bytes.len() as u32),
                            },
                        );
                        Ok(bytes.len() as u32)
                    }
                    Some((rwr, ..)) => {
                        let q = fabric.qps.get_mut(&r).expect("remote");
                        q.push(
                            Queue::Recv,
                            Completion {
                                wr_id: rwr,
                                result: Err(WcStatus::LocalLength),
                            },
                        );
                        q.fail();
                        Err(WcStatus::RemoteAccess)
                    }
                }
            }
        };
        let local = fabric.qps.get_mut(&qp.0).expect("local");
        local.push(Queue::Send, Completion { wr_id, result });
        if result.is_err() {
            local.fail();
        }
    }
}

impl Verbs for FakeVerbs {
    fn describe(&self) -> String {
        format!("fake{} port 1", self.id)
    }

    fn max_inline(&self) -> usize {
        self.max_inline
    }

    fn register(&mut self, len: usize, remote_write: bool) -> Result<MrId, VerbsError> {
        if self.registered + len > self.memlock_bytes {
            return Err(VerbsError::Memlock {
                bytes: len,
                limit: format!("{} bytes", self.memlock_bytes),
            });
        }
        self.registered += len;
        let mut f = self.fabric.lock();
        f.next_id += 1;
        let id = f.next_id;
        f.mrs.insert(
            id,
            Mr {
                owner: self.id,
                bytes: vec![0; len],
                remote_write,
            },
        );
        Ok(MrId(id))
    }

    fn deregister(&mut self, mr: MrId) {
        if let Some(m) = self.fabric.lock().mrs.remove(&mr.0) {
            self.registered -= m.bytes.len();
        }
    }

    fn remote(&self, mr: MrId) -> RemoteMr {
        let f = self.fabric.lock();
        RemoteMr {
            addr: addr_of(mr.0),
            rkey: mr.0,
            len: f.mrs[&mr.0].bytes.len() as u32,
        }
    }

    fn write(&mut self, mr: MrId, offset: usize, bytes: &[u8]) {
        self.fabric.lock().mrs.get_mut(&mr.0).expect("region").bytes[offset..offset + bytes.len()]
            .copy_from_slice(bytes);
    }

    fn read(&self, mr: MrId, offset: usize, out: &mut [u8]) {
        out.copy_from_slice(&self.fabric.lock().mrs[&mr.0].bytes[offset..offset + out.len()]);
    }

    fn create_qp(&mut self, caps: QpCaps) -> Result<QpId, VerbsError> {
        let mut f = self.fabric.lock();
        f.next_id += 1;
        let id = f.next_id;
        f.qps.insert(
            id,
            Qp {
                owner: self.id,
                state: QpState::Reset,
                remote: None,
                caps,
                posted_recvs: VecDeque::new(),
                sends_outstanding: 0,
                send_cq: VecDeque::new(),
                recv_cq: VecDeque::new(),
                send_armed: false,
                recv_armed: false,
                channel: self.channel.clone(),
            },
        );
        Ok(QpId(id))
    }

    fn destroy_qp(&mut self, qp: QpId) {
        self.fabric.lock().qps.remove(&qp.0);
    }

    fn endpoint(&self, qp: QpId) -> Endpoint {
        Endpoint {
            qp_num: qp.0,
            lid: self.id as u16,
            gid: [0; 16],
            psn: qp.0 & 0xff_ffff,
        }
    }

    fn to_init(&mut self, qp: QpId) -> Result<(), VerbsError> {
        self.transition(qp, QpState::Init)
    }

    fn to_rtr(&mut self, qp: QpId, remote: &Endpoint) -> Result<(), VerbsError> {
        self.transition(qp, QpState::ReadyToReceive)?;
        self.with_qp(qp, |q| q.remote = Some(remote.qp_num));
        Ok(())
    }

    fn to_rts(&mut self, qp: QpId) -> Result<(), VerbsError> {
        self.transition(qp, QpState::ReadyToSend)
    }

    fn post_recv(
        &mut self,
        qp: QpId,
        wr_id: u64,
        mr: MrId,
        offset: usize,
        len: usize,
    ) -> Result<(), VerbsError> {
        self.with_qp(qp, |q| {
            if !q.state.can_post_recv() {
                return Err(VerbsError::State(q.state));
            }
            if q.posted_recvs.len() >= q.caps.recv_depth as usize {
                return Err(VerbsError::QueueFull(Queue::Recv));
            }
            q.posted_recvs.push_back((wr_id, mr.0, offset, len));
            Ok(())
        })
    }

    fn post_send(&mut self, qp: QpId, wr_id: u64, op: SendOp<'_>) -> Result<(), VerbsError> {
        if let SendOp::SendInline(bytes) = op {
            if bytes.len() > self.max_inline {
                return Err(VerbsError::InlineTooLarge {
                    len: bytes.len(),
                    max: self.max_inline,
                });
            }
        }
        let mut f = self.fabric.lock();
        let q = f
            .qps
            .get_mut(&qp.0)
            .filter(|q| q.owner == self.id)
            .expect("a queue pair of this host");
        if q.state == QpState::Error {
            q.sends_outstanding += 1;
            q.push(
                Queue::Send,
                Completion {
                    wr_id,
                    result: Err(WcStatus::Flushed),
                },
            );
            return Ok(());
        }
        if q.state != QpState::ReadyToSend {
            return Err(VerbsError::State(q.state));
        }
        if q.sends_outstanding >= q.caps.send_depth {
            return Err(VerbsError::QueueFull(Queue::Send));
        }
        q.sends_outstanding += 1;
        Self::post_send_locked(&mut f, qp, wr_id, op);
        Ok(())
    }

    fn poll(
        &mut self,
        qp: QpId,
        queue: Queue,
        max: usize,
        out: &mut Vec<Completion>,
    ) -> Result<usize, VerbsError> {
        self.with_qp(qp, |q| {
            let cq = match queue {
                Queue::Send => &mut q.send_cq,
                Queue::Recv => &mut q.recv_cq,
            };
            let n = cq.len().min(max);
            out.extend(cq.drain(..n));
            if queue == Queue::Send {
                q.sends_outstanding -= n as u32;
            }
            Ok(n)
        })
    }

    fn arm(&mut self, qp: QpId, queue: Queue) -> Result<(), VerbsError> {
        self.with_qp(qp, |q| match queue {
            Queue::Send => q.send_armed = true,
            Queue::Recv => q.recv_armed = true,
        });
        Ok(())
    }

    fn wait(&self) -> impl Future<Output = ()> + Send + '_ {
        self.channel.notified()
    }
}

impl Drop for FakeVerbs {
    fn drop(&mut self) {
        let mut f = self.fabric.lock();
        f.qps.retain(|_, q| q.owner != self.id);
        f.mrs.retain(|_, m| m.owner != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connected(fabric: &FakeFabric) -> [(FakeVerbs, QpId); 2] {
        let caps = QpCaps {
            send_depth: 4,
            recv_depth: 4,
        };
        let mut sides = [fabric.verbs(16, 1 << 16), fabric.verbs(16, 1 << 16)].map(|mut v| {
            let qp = v.create_qp(caps).unwrap();
            v.to_init(qp).unwrap();
            (v, qp)
        });
        let ends = [
            sides[0].0.endpoint(sides[0].1),
            sides[1].0.endpoint(sides[1].1),
        ];
        for (i, (v, qp)) in sides.iter_mut().enumerate() {
            v.to_rtr(*qp, &ends[1 - i]).unwrap();
            v.to_rts(*qp).unwrap();
        }
        sides
    }

    fn write_to(region: RemoteMr, v: &mut FakeVerbs, qp: QpId) -> Result<u32, WcStatus> {
        let src = v.register(8, false).unwrap();
        let op = SendOp::Write {
            mr: src,
            offset: 0,
            len: 8,
            remote: region,
        };
        v.post_send(qp, 1, op).unwrap();
        let mut out = Vec::new();
        v.poll(qp, Queue::Send, 8, &mut out).unwrap();
        out[0].result
    }

    #[test]
    fn writes_reach_only_regions_registered_for_remote_write() {
        let fabric = FakeFabric::new();
        let [(mut a, qa), (mut b, _)] = connected(&fabric);
        let word = b.register(8, true).unwrap();
        assert_eq!(write_to(b.remote(word), &mut a, qa), Ok(0));
        let ring = b.register(64, false).unwrap();
        assert_eq!(
            write_to(b.remote(ring), &mut a, qa),
            Err(WcStatus::RemoteAccess)
        );
    }

    #[test]
    fn a_send_before_rts_is_refused_and_after_an_error_is_flushed() {
        let fabric = FakeFabric::new();
        let mut v = fabric.verbs(16, 1 << 16);
        let qp = v
            .create_qp(QpCaps {
                send_depth: 2,
                recv_depth: 2,
            })
            .unwrap();
        assert_eq!(
            v.post_send(qp, 1, SendOp::SendInline(b"x")),
            Err(VerbsError::State(QpState::Reset))
        );
        assert!(matches!(v.to_rts(qp), Err(VerbsError::Transition(_))));
        let [(mut a, qa), (b, _)] = connected(&fabric);
        drop(b); // the peer is gone
        a.post_send(qa, 1, SendOp::SendInline(b"x")).unwrap();
        a.post_send(qa, 2, SendOp::SendInline(b"y")).unwrap();
        let mut out = Vec::new();
        a.poll(qa, Queue::Send, 8, &mut out).unwrap();
        let results: Vec<_> = out.iter().map(|c| c.result).collect();
        assert_eq!(
            results,
            [Err(WcStatus::RetryExceeded), Err(WcStatus::Flushed)]
        );
    }
}
