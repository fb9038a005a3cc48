//! The verbs over libibverbs (rdma-sys 0.3): the only module with unsafe code.
//!
//! [`IbVerbs::open`] picks a port (by device name, or the first active port; see
//! [`crate::device`]), checks the locked-memory limit, opens the device, and
//! creates the protection domain and one completion channel, whose fd is
//! non-blocking and registered with tokio so [`Verbs::wait`] sleeps without a
//! thread. The set-up follows `rc_pingpong.c`: memory registered with local
//! write access, and remote write only for the credit word; per queue pair a send and a receive
//! completion queue on the channel; INIT (port, pkey 0, access flags), RTR
//! (path MTU = the port's active MTU, the remote QPN, LID and PSN, a GRH when
//! the remote GID is set — RoCE), RTS (timeout 14, retry count 7, and
//! `rnr_retry` 0: credits make receiver-not-ready impossible, so one is a bug
//! that must fail fast, exactly as the fake reports it).
//!
//! Safety, for the whole module: every raw pointer comes from a successful
//! libibverbs call and is owned by one `IbVerbs`, which destroys it exactly
//! once, in `destroy_qp`, `deregister` or `Drop` (queue pairs before their
//! completion queues, regions before the protection domain, the tokio
//! registration before the channel). Registered buffers are allocated here,
//! page aligned, and freed only after `ibv_dereg_mr`. The link never reads a
//! receive slot between its post and its completion (see [`crate::verbs`]).
//!
//! Must be opened inside a tokio runtime (the channel's fd is registered with it).

use crate::device::{self, DeviceError};
use crate::qp::QpState;
use crate::verbs::{
    Completion, Endpoint, MrId, QpCaps, QpId, Queue, RemoteMr, SendOp, Verbs, VerbsError, WcStatus,
};
use rdma_sys::*;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::BTreeMap;
use std::ffi::CStr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::ptr;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// `IBV_LINK_LAYER_ETHERNET` (a `#define` that rdma-sys does not bind).
const LINK_LAYER_ETHERNET: u8 = 2;
/// Inline bytes asked for at queue pair creation; the provider may grant less.
const WANT_INLINE: u32 = 64;
/// Completions read per `ibv_poll_cq`.
const POLL_MAX: usize = 32;
const PAGE: usize = 4096;

/// Why the verbs could not be opened. Each message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No device, no such device, port down, or memlock too low.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// A libibverbs call failed.
    #[error(transparent)]
    Verbs(#[from] VerbsError),
}

fn call_error(call: &'static str) -> VerbsError {
    VerbsError::Call {
        call,
        reason: std::io::Error::last_os_error().to_string(),
    }
}

fn check(rc: i32, call: &'static str) -> Result<(), VerbsError> {
    if rc == 0 {
        Ok(())
    } else {
        // Verbs calls return the errno value itself (not -1 with errno set).
        Err(VerbsError::Call {
            call,
            reason: std::io::Error::from_raw_os_error(rc.abs()).to_string(),
        })
    }
}

struct ChannelFd(RawFd);

impl AsRawFd for ChannelFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

struct Region {
    mr: *mut ibv_mr,
    buf: *mut u8,
    layout: Layout,
}

struct Pair {
    qp: *mut ibv_qp,
    send_cq: *mut ibv_cq,
    recv_cq: *mut ibv_cq,
    state: QpState,
}

/// libibverbs on one port of one device. See the module docs.
pub struct IbVerbs {
    device: String,
    port: u8,
    gid_index: u8,
    lid: u16,
    gid: [u8; 16],
    mtu: ibv_mtu::Type,
    max_inline: usize,
    ctx: *mut ibv_context,
    pd: *mut ibv_pd,
    channel: *mut ibv_comp_channel,
    channel_fd: Option<AsyncFd<ChannelFd>>,
    regions: BTreeMap<u32, Region>,
    pairs: BTreeMap<u32, Pair>,
    next_id: u32,
}

// SAFETY: libibverbs objects may be used from any thread (rdma-core documents
// the verbs as thread safe); `IbVerbs` owns them exclusively, every mutation
// goes through `&mut self`, and the `&self` methods only read registered
// memory or take events from the channel, which libibverbs serialises.
unsafe impl Send for IbVerbs {}
// SAFETY: as above; shared references never mutate Rust-visible state.
unsafe impl Sync for IbVerbs {}

impl std::fmt::Debug for IbVerbs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IbVerbs")
            .field("device", &self.device)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl IbVerbs {
    /// Opens the first active port of device `name` (or of any device), after
    /// checking that `need_bytes` may be locked. `gid_index` is the GID table
    /// entry to use (RoCE v2 usually needs one other than 0; see `show_gids`).
    pub fn open(name: Option<&str>, gid_index: u8, need_bytes: u64) -> Result<IbVerbs, OpenError> {
        let root = Path::new(device::SYSFS_ROOT);
        let port = device::choose(root, &device::scan(root), name)?;
        device::check_memlock(device::memlock_limit(), need_bytes)?;
        let mut verbs = IbVerbs {
            device: port.device.clone(),
            port: port.port,
            gid_index,
            lid: 0,
            gid: [0; 16],
            mtu: ibv_mtu::IBV_MTU_1024,
            max_inline: WANT_INLINE as usize,
            ctx: ptr::null_mut(),
            pd: ptr::null_mut(),
            channel: ptr::null_mut(),
            channel_fd: None,
            regions: BTreeMap::new(),
            pairs: BTreeMap::new(),
            next_id: 0,
        };
        // On any error below, `Drop` frees what was created so far.
        verbs.open_device()?;
        Ok(verbs)
    }

    fn open_device(&mut self) -> Result<(), VerbsError> {
        // SAFETY: the list is freed before returning; the device pointer is used
        // only while the list lives, and `ibv_open_device` keeps its own reference.
        unsafe {
            let mut count = 0;
            let list = ibv_get_device_list(&mut count);
            if list.is_null() {
                return Err(call_error("ibv_get_device_list"));
            }
            for i in 0..usize::try_from(count).unwrap_or(0) {
                let dev = *list.add(i);
                let name = CStr::from_ptr(ibv_get_device_name(dev)).to_string_lossy();
                if name == self.device {
                    self.ctx = ibv_open_device(dev);
                    break;
                }
            }
            ibv_free_device_list(list);
        }
        if self.ctx.is_null() {
            return Err(call_error("ibv_open_device"));
        }
        // SAFETY: `ctx` is a valid open context; the out-parameters are local.
        unsafe {
            let mut attr: ibv_port_attr = std::mem::zeroed();
            check(
                ___ibv_query_port(self.ctx, self.port, &mut attr),
                "ibv_query_port",
            )?;
            if attr.state != ibv_port_state::IBV_PORT_ACTIVE {
                return Err(VerbsError::Call {
                    call: "ibv_query_port",
                    reason: format!(
                        "{} port {} is not active (state {})",
                        self.device, self.port, attr.state
                    ),
                });
            }
            self.lid = attr.lid;
            self.mtu = attr.active_mtu;
            if attr.link_layer == LINK_LAYER_ETHERNET || self.gid_index != 0 {
                let mut gid: ibv_gid = std::mem::zeroed();
                check(
                    ibv_query_gid(self.ctx, self.port, i32::from(self.gid_index), &mut gid),
                    "ibv_query_gid",
                )?;
                self.gid = gid.raw;
            }
            self.pd = ibv_alloc_pd(self.ctx);
            if self.pd.is_null() {
                return Err(call_error("ibv_alloc_pd"));
            }
            self.channel = ibv_create_comp_channel(self.ctx);
            if self.channel.is_null() {
                return Err(call_error("ibv_create_comp_channel"));
            }
            let fd = (*self.channel).fd;
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
                return Err(call_error("fcntl(O_NONBLOCK) on the completion channel"));
            }
            // SAFETY (register): the fd stays open, the same description, until
            // `ibv_destroy_comp_channel`, and `Drop` drops the `AsyncFd` before that.
            let async_fd = AsyncFd::register_with_interest(ChannelFd(fd), Interest::READABLE)
                .map_err(|e| VerbsError::Call {
                    call: "tokio AsyncFd::register",
                    reason: e.to_string(),
                })?;
            self.channel_fd = Some(async_fd);
        }
        Ok(())
    }

    fn id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    fn pair(&self, qp: QpId) -> &Pair {
        &self.pairs[&qp.0]
    }

    fn region(&self, mr: MrId) -> &Region {
        &self.regions[&mr.0]
    }

    fn modify(
        &mut self,
        qp: QpId,
        to: QpState,
        attr: &mut ibv_qp_attr,
        mask: ibv_qp_attr_mask,
    ) -> Result<(), VerbsError> {
        let pair = self
            .pairs
            .get_mut(&qp.0)
            .expect("a queue pair of this host");
        pair.state.check(to)?;
        // SAFETY: `pair.qp` is a live queue pair; `attr` is fully initialised for `mask`.
        let rc = unsafe { ibv_modify_qp(pair.qp, attr, mask.0 as i32) };
        check(rc, "ibv_modify_qp")?;
        pair.state = to;
        Ok(())
    }
}

fn wc_status(status: ibv_wc_status::Type) -> WcStatus {
    match status {
        ibv_wc_status::IBV_WC_WR_FLUSH_ERR => WcStatus::Flushed,
        ibv_wc_status::IBV_WC_RETRY_EXC_ERR => WcStatus::RetryExceeded,
        ibv_wc_status::IBV_WC_RNR_RETRY_EXC_ERR => WcStatus::ReceiverNotReady,
        ibv_wc_status::IBV_WC_REM_ACCESS_ERR => WcStatus::RemoteAccess,
        ibv_wc_status::IBV_WC_LOC_LEN_ERR => WcStatus::LocalLength,
        other => WcStatus::Other(other),
    }
}

impl Verbs for IbVerbs {
    fn describe(&self) -> String {
        format!("{} port {}", self.device, self.port)
    }

    fn max_inline(&self) -> usize {
        self.max_inline
    }

    fn register(&mut self, len: usize, remote_write: bool) -> Result<MrId, VerbsError> {
        let layout =
            Layout::from_size_align(len.max(1).next_multiple_of(PAGE), PAGE).map_err(|e| {
                VerbsError::Call {
                    call: "Layout",
                    reason: e.to_string(),
                }
            })?;
        // SAFETY: the layout has a non-zero size.
        let buf = unsafe { alloc_zeroed(layout) };
        if buf.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        let mut access = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE;
        if remote_write {
            access |= ibv_access_flags::IBV_ACCESS_REMOTE_WRITE;
        }
        let access = access.0 as i32;
        // SAFETY: `buf` is `layout.size()` bytes owned here until `deregister`.
        let mr = unsafe { ibv_reg_mr(self.pd, buf.cast(), layout.size(), access) };
        if mr.is_null() {
            let err = std::io::Error::last_os_error();
            // SAFETY: `buf` came from `alloc_zeroed(layout)` and was not registered.
            unsafe { dealloc(buf, layout) };
            if err.raw_os_error() == Some(libc::ENOMEM) || err.raw_os_error() == Some(libc::EPERM) {
                let limit = device::memlock_limit().map_or_else(
                    || "unlimited or unknown".to_owned(),
                    |l| format!("{l} bytes"),
                );
                return Err(VerbsError::Memlock { bytes: len, limit });
            }
            return Err(VerbsError::Call {
                call: "ibv_reg_mr",
                reason: err.to_string(),
            });
        }
        let id = self.id();
        self.regions.insert(id, Region { mr, buf, layout });
        Ok(MrId(id))
    }

    fn deregister(&mut self, mr: MrId) {
        if let Some(region) = self.regions.remove(&mr.0) {
            // SAFETY: the region is live and no queue pair posts to it any more
            // (the link destroys its queue pair before its regions).
            unsafe {
                ibv_dereg_mr(region.mr);
                dealloc(region.buf, region.layout);
            }
        }
    }

    fn remote(&self, mr: MrId) -> RemoteMr {
        let region = self.region(mr);
        // SAFETY: `region.mr` is a live registration.
        let rkey = unsafe { (*region.mr).rkey };
        RemoteMr {
            addr: region.buf as u64,
            rkey,
            len: u32::try_from(region.layout.size()).unwrap_or(u32::MAX),
        }
    }

    fn write(&mut self, mr: MrId, offset: usize, bytes: &[u8]) {
        let region = self.region(mr);
        assert!(
            offset + bytes.len() <= region.layout.size(),
            "write inside the region"
        );
        // SAFETY: in bounds (checked); the NIC does not write this range now
        // (send slots and the credit source are written only while not posted).
        unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), region.buf.add(offset), bytes.len()) };
    }

    fn read(&self, mr: MrId, offset: usize, out: &mut [u8]) {
        let region = self.region(mr);
        assert!(
            offset + out.len() <= region.layout.size(),
            "read inside the region"
        );
        // SAFETY: in bounds (checked). An aligned 8-byte read is one load, so a
        // credit word the NIC writes meanwhile is seen whole, old or new.
        unsafe {
            let src = region.buf.add(offset);
            if out.len() == 8 && offset.is_multiple_of(8) {
                let word = ptr::read_volatile(src.cast::<u64>());
                out.copy_from_slice(&word.to_ne_bytes());
            } else {
                ptr::copy_nonoverlapping(src, out.as_mut_ptr(), out.len());
            }
        }
    }

    fn create_qp(&mut self, caps: QpCaps) -> Result<QpId, VerbsError> {
        // SAFETY: `ctx`, `channel` and `pd` are live; on failure what was created is destroyed.
        unsafe {
            let send_cq = ibv_create_cq(
                self.ctx,
                caps.send_depth as i32,
                ptr::null_mut(),
                self.channel,
                0,
            );
            if send_cq.is_null() {
                return Err(call_error("ibv_create_cq"));
            }
            let recv_cq = ibv_create_cq(
                self.ctx,
                caps.recv_depth as i32,
                ptr::null_mut(),
                self.channel,
                0,
            );
            if recv_cq.is_null() {
                ibv_destroy_cq(send_cq);
                return Err(call_error("ibv_create_cq"));
            }
            let mut init: ibv_qp_init_attr = std::mem::zeroed();
            init.send_cq = send_cq;
            init.recv_cq = recv_cq;
            init.qp_type = ibv_qp_type::IBV_QPT_RC;
            init.sq_sig_all = 1;
            init.cap = ibv_qp_cap {
                max_send_wr: caps.send_depth,
                max_recv_wr: caps.recv_depth,
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: WANT_INLINE,
            };
            let qp = ibv_create_qp(self.pd, &mut init);
            if qp.is_null() {
                ibv_destroy_cq(recv_cq);
                ibv_destroy_cq(send_cq);
                return Err(call_error("ibv_create_qp"));
            }
            // The provider writes back what it granted.
            self.max_inline = self.max_inline.min(init.cap.max_inline_data as usize);
            let id = self.id();
            self.pairs.insert(
                id,
                Pair {
                    qp,
                    send_cq,
                    recv_cq,
                    state: QpState::Reset,
                },
            );
            Ok(QpId(id))
        }
    }

    fn destroy_qp(&mut self, qp: QpId) {
        if let Some(pair) = self.pairs.remove(&qp.0) {
            // SAFETY: live objects, destroyed queue pair first, then its queues.
            unsafe {
                ibv_destroy_qp(pair.qp);
                ibv_destroy_cq(pair.send_cq);
                ibv_destroy_cq(pair.recv_cq);
            }
        }
    }

    fn endpoint(&self, qp: QpId) -> Endpoint {
        // SAFETY: a live queue pair.
        let qp_num = unsafe { (*self.pair(qp).qp).qp_num };
        Endpoint {
            qp_num,
            lid: self.lid,
            gid: self.gid,
            // Any 24-bit value works; deriving it from the number keeps it stable for logs.
            psn: qp_num.wrapping_mul(2_654_435_761) & 0xff_ffff,
        }
    }

    fn to_init(&mut self, qp: QpId) -> Result<(), VerbsError> {
        // SAFETY: plain data; zero is a valid value for every field.
        let mut attr: ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = ibv_qp_state::IBV_QPS_INIT;
        attr.pkey_index = 0;
        attr.port_num = self.port;
        attr.qp_access_flags = (ibv_access_flags::IBV_ACCESS_LOCAL_WRITE
            | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE)
            .0;
        let mask = ibv_qp_attr_mask::IBV_QP_STATE
            | ibv_qp_attr_mask::IBV_QP_PKEY_INDEX
            | ibv_qp_attr_mask::IBV_QP_PORT
            | ibv_qp_attr_mask::IBV_QP_ACCESS_FLAGS;
        self.modify(qp, QpState::Init, &mut attr, mask)
    }

    fn to_rtr(&mut self, qp: QpId, remote: &Endpoint) -> Result<(), VerbsError> {
        // SAFETY: plain data; zero is a valid value for every field.
        let mut attr: ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = ibv_qp_state::IBV_QPS_RTR;
        attr.path_mtu = self.mtu;
        attr.dest_qp_num = remote.qp_num;
        attr.rq_psn = remote.psn;
        attr.max_dest_rd_atomic = 1;
        attr.min_rnr_timer = 12;
        attr.ah_attr.dlid = remote.lid;
        attr.ah_attr.port_num = self.port;
        if remote.gid != [0; 16] {
            attr.ah_attr.is_global = 1;
            attr.ah_attr.grh.dgid = ibv_gid { raw: remote.gid };
            attr.ah_attr.grh.hop_limit = 1;
            attr.ah_attr.grh.sgid_index = self.gid_index;
        }
        let mask = ibv_qp_attr_mask::IBV_QP_STATE
            | ibv_qp_attr_mask::IBV_QP_AV
            | ibv_qp_attr_mask::IBV_QP_PATH_MTU
            | ibv_qp_attr_mask::IBV_QP_DEST_QPN
            | ibv_qp_attr_mask::IBV_QP_RQ_PSN
            | ibv_qp_attr_mask::IBV_QP_MAX_DEST_RD_ATOMIC
            | ibv_qp_attr_mask::IBV_QP_MIN_RNR_TIMER;
        self.modify(qp, QpState::ReadyToReceive, &mut attr, mask)
    }

    fn to_rts(&mut self, qp: QpId) -> Result<(), VerbsError> {
        let psn = self.endpoint(qp).psn;
        // SAFETY: plain data; zero is a valid value for every field.
        let mut attr: ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = ibv_qp_state::IBV_QPS_RTS;
        attr.timeout = 14;
        attr.retry_cnt = 7;
        attr.rnr_retry = 0;
        attr.sq_psn = psn;
        attr.max_rd_atomic = 1;
        let mask = ibv_qp_attr_mask::IBV_QP_STATE
            | ibv_qp_attr_mask::IBV_QP_TIMEOUT
            | ibv_qp_attr_mask::IBV_QP_RETRY_CNT
            | ibv_qp_attr_mask::IBV_QP_RNR_RETRY
            | ibv_qp_attr_mask::IBV_QP_SQ_PSN
            | ibv_qp_attr_mask::IBV_QP_MAX_QP_RD_ATOMIC;
        self.modify(qp, QpState::ReadyToSend, &mut attr, mask)
    }

    fn post_recv(
        &mut self,
        qp: QpId,
        wr_id: u64,
        mr: MrId,
        offset: usize,
        len: usize,
    ) -> Result<(), VerbsError> {
        let region = self.region(mr);
        assert!(
            offset + len <= region.layout.size(),
            "receive inside the region"
        );
        let pair = self.pair(qp);
        if !pair.state.can_post_recv() {
            return Err(VerbsError::State(pair.state));
        }
        // SAFETY: the buffer range is inside a live registration and is left to
        // the NIC until this request completes; the request lives across the call.
        unsafe {
            let mut sge = ibv_sge {
                addr: region.buf.add(offset) as u64,
                length: len as u32,
                lkey: (*region.mr).lkey,
            };
            let mut wr = ibv_recv_wr {
                wr_id,
                next: ptr::null_mut(),
                sg_list: &mut sge,
                num_sge: 1,
            };
            let mut bad = ptr::null_mut();
            check(ibv_post_recv(pair.qp, &mut wr, &mut bad), "ibv_post_recv")
        }
    }

    fn post_send(&mut self, qp: QpId, wr_id: u64, op: SendOp<'_>) -> Result<(), VerbsError> {
        let pair = self.pair(qp);
        if pair.state != QpState::ReadyToSend {
            return Err(VerbsError::State(pair.state));
        }
        // SAFETY: plain data; zero is a valid value for every field (null pointers, no flags).
        let mut wr: ibv_send_wr = unsafe { std::mem::zeroed() };
        let mut flags = ibv_send_flags::IBV_SEND_SIGNALED;
        let mut sge = match op {
            SendOp::Send { mr, offset, len }
            | SendOp::Write {
                mr, offset, len, ..
            } => {
                let region = self.region(mr);
                assert!(
                    offset + len <= region.layout.size(),
                    "send inside the region"
                );
                // SAFETY: in bounds of a live registration.
                unsafe {
                    ibv_sge {
                        addr: region.buf.add(offset) as u64,
                        length: len as u32,
                        lkey: (*region.mr).lkey,
                    }
                }
            }
            SendOp::SendInline(bytes) => {
                if bytes.len() > self.max_inline {
                    return Err(VerbsError::InlineTooLarge {
                        len: bytes.len(),
                        max: self.max_inline,
                    });
                }
                flags |= ibv_send_flags::IBV_SEND_INLINE;
                // Inline data is copied by `ibv_post_send`; no key is needed.
                ibv_sge {
                    addr: bytes.as_ptr() as u64,
                    length: bytes.len() as u32,
                    lkey: 0,
                }
            }
        };
        wr.wr_id = wr_id;
        wr.sg_list = &mut sge;
        wr.num_sge = 1;
        wr.send_flags = flags.0;
        if let SendOp::Write { remote, .. } = op {
            wr.opcode = ibv_wr_opcode::IBV_WR_RDMA_WRITE;
            wr.wr.rdma = rdma_t {
                remote_addr: remote.addr,
                rkey: remote.rkey,
            };
        } else {
            wr.opcode = ibv_wr_opcode::IBV_WR_SEND;
        }
        let mut bad = ptr::null_mut();
        // SAFETY: a live queue pair; `wr` and `sge` live across the call, and the
        // memory they name stays registered until the request completes.
        let rc = unsafe { ibv_post_send(pair.qp, &mut wr, &mut bad) };
        if rc == libc::ENOMEM {
            return Err(VerbsError::QueueFull(Queue::Send));
        }
        check(rc, "ibv_post_send")
    }

    fn poll(
        &mut self,
        qp: QpId,
        queue: Queue,
        max: usize,
        out: &mut Vec<Completion>,
    ) -> Result<usize, VerbsError> {
        let pair = self.pair(qp);
        let cq = match queue {
            Queue::Send => pair.send_cq,
            Queue::Recv => pair.recv_cq,
        };
        let max = max.min(POLL_MAX);
        // SAFETY: `ibv_wc` is plain data; `ibv_poll_cq` writes at most `max` entries.
        let mut wcs: [ibv_wc; POLL_MAX] = unsafe { std::mem::zeroed() };
        let n = unsafe { ibv_poll_cq(cq, max as i32, wcs.as_mut_ptr()) };
        if n < 0 {
            return Err(VerbsError::Call {
                call: "ibv_poll_cq",
                reason: format!("returned {n}"),
            });
        }
        for wc in &wcs[..n as usize] {
            let result = if wc.status == ibv_wc_status::IBV_WC_SUCCESS {
                Ok(wc.byte_len)
            } else {
                Err(wc_status(wc.status))
            };
            out.push(Completion {
                wr_id: wc.wr_id,
                result,
            });
        }
        Ok(n as usize)
    }

    fn arm(&mut self, qp: QpId, queue: Queue) -> Result<(), VerbsError> {
        let pair = self.pair(qp);
        let cq = match queue {
            Queue::Send => pair.send_cq,
            Queue::Recv => pair.recv_cq,
        };
        // SAFETY: a live completion queue.
        check(unsafe { ibv_req_notify_cq(cq, 0) }, "ibv_req_notify_cq")
    }

    async fn wait(&self) {
        let Some(fd) = &self.channel_fd else {
            return std::future::pending().await;
        };
        loop {
            let Ok(mut guard) = fd.readable().await else {
                return std::future::pending().await;
            };
            let mut got = false;
            loop {
                let mut cq = ptr::null_mut();
                let mut context = ptr::null_mut();
                // SAFETY: a live, non-blocking channel; each event is acked at once,
                // so destroying its queue later never waits for an ack.
                let rc = unsafe { ibv_get_cq_event(self.channel, &mut cq, &mut context) };
                if rc != 0 {
                    break;
                }
                // SAFETY: `cq` is the live queue the event was for.
                unsafe { ibv_ack_cq_events(cq, 1) };
                got = true;
            }
            guard.clear_ready();
            if got {
                return;
            }
        }
    }
}

impl Drop for IbVerbs {
    fn drop(&mut self) {
        let pairs: Vec<u32> = self.pairs.keys().copied().collect();
        for qp in pairs {
            self.destroy_qp(QpId(qp));
        }
        let regions: Vec<u32> = self.regions.keys().copied().collect();
        for mr in regions {
            self.deregister(MrId(mr));
        }
        // Deregister the fd from tokio before the channel closes it.
        drop(self.channel_fd.take());
        // SAFETY: each pointer is live or null, and destroyed once, children first.
        unsafe {
            if !self.channel.is_null() {
                ibv_destroy_comp_channel(self.channel);
            }
            if !self.pd.is_null() {
                ibv_dealloc_pd(self.pd);
            }
            if !self.ctx.is_null() {
                ibv_close_device(self.ctx);
            }
        }
    }
}
