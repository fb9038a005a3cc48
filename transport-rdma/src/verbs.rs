//! The small trait over the verbs this transport uses, so that everything above
//! it (framing, rings, credits, the link state machine, fallback) runs against
//! the in-memory [`crate::fake`] in tests and against libibverbs in production
//! (`crate::ibverbs`, feature `verbs`).
//!
//! The subset (names as in `rc_pingpong.c`): register memory (`ibv_reg_mr`),
//! create an RC queue pair with a send and a receive completion queue on one
//! completion channel (`ibv_create_qp`, `ibv_create_cq`), move it along
//! RESET → INIT → RTR → RTS (`ibv_modify_qp`, checked by [`QpState::check`]),
//! post receives (`ibv_post_recv`), post SENDs — inline or from registered
//! memory — and RDMA WRITEs (`ibv_post_send`), poll completions
//! (`ibv_poll_cq`), arm a completion queue (`ibv_req_notify_cq`) and wait on the
//! channel (`ibv_get_cq_event`).
//!
//! Contract every implementation keeps: memory regions are only read and
//! written through [`Verbs::read`] and [`Verbs::write`] (the NIC owns a receive
//! slot between its post and its completion, and the link never touches it
//! then); completions of one queue come in posting order; an error completion
//! moves the queue pair to ERROR, after which every posted request completes
//! with [`WcStatus::Flushed`].

use crate::qp::{BadTransition, QpState};
use std::future::Future;

/// A memory region registered by a [`Verbs`] implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MrId(pub u32);

/// A queue pair (with its two completion queues).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QpId(pub u32);

/// What the remote side needs to connect to a queue pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The queue pair number.
    pub qp_num: u32,
    /// The port's LID (InfiniBand; 0 on RoCE).
    pub lid: u16,
    /// The port's GID at the chosen index (RoCE needs it; zero on InfiniBand without routing).
    pub gid: [u8; 16],
    /// The first packet sequence number.
    pub psn: u32,
}

/// Memory the peer may RDMA-write: its address, rkey and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteMr {
    /// The virtual address of the region's first byte.
    pub addr: u64,
    /// The remote key.
    pub rkey: u32,
    /// Bytes.
    pub len: u32,
}

/// Which completion queue of a queue pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// Completions of posted sends and writes.
    Send,
    /// Completions of posted receives.
    Recv,
}

/// One send-queue work request.
#[derive(Debug, Clone, Copy)]
pub enum SendOp<'a> {
    /// A SEND of `len` bytes at `offset` in `mr`.
    Send {
        /// The source region.
        mr: MrId,
        /// Its first byte.
        offset: usize,
        /// Bytes.
        len: usize,
    },
    /// A SEND whose bytes are copied into the work request (`IBV_SEND_INLINE`):
    /// no registered memory and no DMA read, for messages up to [`Verbs::max_inline`].
    SendInline(&'a [u8]),
    /// An RDMA WRITE of `len` bytes at `offset` in `mr` to `remote`.
    Write {
        /// The source region.
        mr: MrId,
        /// Its first byte.
        offset: usize,
        /// Bytes.
        len: usize,
        /// Where it goes.
        remote: RemoteMr,
    },
}

/// How a work request ended, when not successfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WcStatus {
    /// The queue pair went to ERROR before this request ran.
    Flushed,
    /// The remote queue pair did not answer (it is gone, or its host is).
    RetryExceeded,
    /// A SEND found no posted receive at the remote (an overrun: credits prevent it).
    ReceiverNotReady,
    /// A WRITE named memory the remote did not expose.
    RemoteAccess,
    /// A message was longer than the receive buffer.
    LocalLength,
    /// Any other status, as the provider numbers it.
    Other(u32),
}

/// One completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The id given when the request was posted.
    pub wr_id: u64,
    /// Bytes received (receives), or `Err` with why the request failed.
    pub result: Result<u32, WcStatus>,
}

/// What the verbs refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerbsError {
    /// Registering memory passed the locked-memory limit.
    #[error("cannot register {bytes} bytes of RDMA buffers: the locked-memory limit ({limit}) is too low; raise it with `ulimit -l unlimited` for a shell, or `LimitMEMLOCK=infinity` in the nefeled systemd unit")]
    Memlock {
        /// Bytes asked for.
        bytes: usize,
        /// The limit in force, as text ("65536 bytes", "unknown").
        limit: String,
    },
    /// An illegal queue pair transition.
    #[error(transparent)]
    Transition(#[from] BadTransition),
    /// A request that the queue pair's state does not allow (e.g. a send before RTS).
    #[error("cannot post to a queue pair in state {0:?}")]
    State(QpState),
    /// An inline send longer than the device allows.
    #[error("inline send of {len} bytes exceeds the device's {max}")]
    InlineTooLarge {
        /// Bytes asked for.
        len: usize,
        /// The device's limit.
        max: usize,
    },
    /// A queue is full (more requests than its depth).
    #[error("{0:?} queue is full")]
    QueueFull(Queue),
    /// A call into libibverbs failed.
    #[error("{call} failed: {reason}")]
    Call {
        /// The function.
        call: &'static str,
        /// `strerror` of its error.
        reason: String,
    },
}

/// Sizes of a queue pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpCaps {
    /// Send queue depth (sends and writes outstanding).
    pub send_depth: u32,
    /// Receive queue depth (receives posted).
    pub recv_depth: u32,
}

/// The verbs one transport uses. See the module docs for the contract.
pub trait Verbs: Send + Sync {
    /// The device and port in use, for logs ("mlx5_0 port 1", "fake").
    fn describe(&self) -> String;
    /// The largest inline send, in bytes.
    fn max_inline(&self) -> usize;
    /// Registers `len` zeroed bytes for local write and, when `remote_write`,
    /// for RDMA WRITEs from peers (only the credit word needs it).
    fn register(&mut self, len: usize, remote_write: bool) -> Result<MrId, VerbsError>;
    /// Deregisters and frees a region.
    fn deregister(&mut self, mr: MrId);
    /// What a peer needs to RDMA-write into `mr`.
    fn remote(&self, mr: MrId) -> RemoteMr;
    /// Copies `bytes` into `mr` at `offset`.
    fn write(&mut self, mr: MrId, offset: usize, bytes: &[u8]);
    /// Copies `out.len()` bytes of `mr` at `offset` into `out`.
    fn read(&self, mr: MrId, offset: usize, out: &mut [u8]);
    /// Creates an RC queue pair in RESET with its completion queues.
    fn create_qp(&mut self, caps: QpCaps) -> Result<QpId, VerbsError>;
    /// Destroys a queue pair and its completion queues.
    fn destroy_qp(&mut self, qp: QpId);
    /// The local endpoint of `qp`.
    fn endpoint(&self, qp: QpId) -> Endpoint;
    /// RESET → INIT.
    fn to_init(&mut self, qp: QpId) -> Result<(), VerbsError>;
    /// INIT → RTR, connected to `remote`.
    fn to_rtr(&mut self, qp: QpId, remote: &Endpoint) -> Result<(), VerbsError>;
    /// RTR → RTS.
    fn to_rts(&mut self, qp: QpId) -> Result<(), VerbsError>;
    /// Posts a receive of `len` bytes into `mr` at `offset`.
    fn post_recv(
        &mut self,
        qp: QpId,
        wr_id: u64,
        mr: MrId,
        offset: usize,
        len: usize,
    ) -> Result<(), VerbsError>;
    /// Posts a signaled send-queue request.
    fn post_send(&mut self, qp: QpId, wr_id: u64, op: SendOp<'_>) -> Result<(), VerbsError>;
    /// Appends up to `max` completions of `queue` to `out`; returns how many.
    fn poll(
        &mut self,
        qp: QpId,
        queue: Queue,
        max: usize,
        out: &mut Vec<Completion>,
    ) -> Result<usize, VerbsError>;
    /// Asks for one channel event at the next completion of `queue`.
    fn arm(&mut self, qp: QpId, queue: Queue) -> Result<(), VerbsError>;
    /// Resolves when the completion channel has an event (and consumes it).
    fn wait(&self) -> impl Future<Output = ()> + Send + '_;
}
