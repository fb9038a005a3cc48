//! The C ABI of libnefele, declared in `include/nefele.h`.
//!
//! Every function returns `NEFELE_OK` (0) or a negative error code, one per
//! distinct typed error of [`ClientError`]; `nefele_strerror` names it. Every
//! pointer argument is checked for NULL (→ `NEFELE_EINVAL`), strings must be
//! NUL-terminated UTF-8, and no Rust panic crosses the boundary (each entry point
//! runs under `catch_unwind`, a panic becomes `NEFELE_EINTERNAL`).
//!
//! Ownership: a `nefele_client` comes from `nefele_connect` and is released by
//! `nefele_close`; the array `nefele_ps` hands out is released by
//! `nefele_ps_free`, and the one `nefele_supervisors` hands out by
//! `nefele_supervisors_free`. Everything else is owned by the caller.
//!
//! This is the only module of the crate with `unsafe` (with its submodules:
//! `spec`, which reads a `nefele_spec` of any version, `messaging`, the messaging
//! calls, and `supervision`, the supervision calls); each block says why it is
//! sound.

#![allow(unsafe_code)]

mod messaging;
mod spec;
mod supervision;

pub use messaging::{
    nefele_arm, nefele_broadcast, nefele_demonitor, nefele_distance, nefele_fd, nefele_join,
    nefele_leave, nefele_link, nefele_mail, nefele_monitor, nefele_publish, nefele_recv,
    nefele_recv_mail, nefele_register, nefele_send, nefele_send_external, nefele_send_group,
    nefele_send_name, nefele_subscribe, nefele_take_armed, nefele_unlink, nefele_unregister,
    nefele_unsubscribe, nefele_whereis, NEFELE_CLOSE_CLOSED, NEFELE_CLOSE_DENIED,
    NEFELE_CLOSE_DROPPED, NEFELE_CLOSE_OVERFLOW, NEFELE_CLOSE_OVERRUN, NEFELE_CLOSE_RESET,
    NEFELE_CLOSE_UNREACHABLE, NEFELE_DOWN_EXITED, NEFELE_DOWN_LOST, NEFELE_DOWN_NO_PROCESS,
    NEFELE_DOWN_UNREACHABLE, NEFELE_MAIL_DATA, NEFELE_MAIL_DOWN, NEFELE_MAIL_EXTERNAL,
    NEFELE_MAIL_EXTERNAL_CLOSED, NEFELE_MAIL_NAME_LOST, NEFELE_PATTERN_ANYCAST,
    NEFELE_PATTERN_FAILOVER, NEFELE_PATTERN_LEAST_LOADED, NEFELE_PATTERN_MULTICAST,
    NEFELE_PATTERN_ROUND_ROBIN,
};

pub use spec::{
    nefele_affinity, nefele_profile, nefele_spec, NEFELE_AFFINITY_APART, NEFELE_AFFINITY_NEAR,
    NEFELE_AFFINITY_SPREAD, NEFELE_AFFINITY_TOGETHER, NEFELE_FOREVER,
};
use spec::{spec_of, specs_of};
pub use supervision::{
    nefele_child, nefele_n_supervise, nefele_restart, nefele_stop_supervisor, nefele_supervise,
    nefele_supervision, nefele_supervisor, nefele_supervisor_id, nefele_supervisor_id_to_string,
    nefele_supervisors, nefele_supervisors_free, NEFELE_CAUSE_EXITED, NEFELE_CAUSE_LOST,
    NEFELE_CAUSE_SIBLING, NEFELE_CHILD_ENDED, NEFELE_CHILD_GAVE_UP, NEFELE_CHILD_RESTARTING,
    NEFELE_CHILD_RUNNING, NEFELE_CHILD_STOPPED, NEFELE_RESTART_PERMANENT, NEFELE_RESTART_TEMPORARY,
    NEFELE_RESTART_TRANSIENT, NEFELE_STRATEGY_ONE_FOR_ALL, NEFELE_STRATEGY_ONE_FOR_ONE,
    NEFELE_STRATEGY_REST_FOR_ONE, NEFELE_SUPERVISOR_GAVE_UP, NEFELE_SUPERVISOR_RUNNING,
    NEFELE_SUPERVISOR_STOPPED,
};

use crate::client::{Client, ClientError};
use crate::proto::ProtocolError;
use nefele_api::ids::{Incarnation, NodeId, Pid};
use nefele_api::messaging::{GroupError, MonitorError, MsgError, NameError, RecvError, SendError};
use nefele_api::replies::{
    InfoError, KillError, ProcInfo, ProcState, Resource, SpawnError, WaitError,
};
use nefele_api::spec::{ExitStatus, Signal};
use nefele_api::supervision::SupervisionError;
use std::ffi::{c_char, c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Success.
pub const NEFELE_OK: c_int = 0;
/// An argument was NULL, not UTF-8, or out of range.
pub const NEFELE_EINVAL: c_int = -1;
/// The agent's socket could not be reached, or the connection broke.
pub const NEFELE_EIO: c_int = -2;
/// The agent refused a frame, or answered something unexpected.
pub const NEFELE_EPROTO: c_int = -3;
/// The agent did not authenticate the caller (token or uid).
pub const NEFELE_EAUTH: c_int = -4;
/// No such process for this tenant.
pub const NEFELE_ENOSUCH: c_int = -5;
/// Not enough cpu anywhere for the request.
pub const NEFELE_ESHORT_CPU: c_int = -6;
/// Not enough memory anywhere for the request.
pub const NEFELE_ESHORT_MEMORY: c_int = -7;
/// Not enough accelerators anywhere for the request.
pub const NEFELE_ESHORT_ACCELERATORS: c_int = -8;
/// Not enough distinct hosts for the request under its affinity rules.
pub const NEFELE_ESHORT_HOSTS: c_int = -9;
/// A chosen host did not answer in time; nothing of the request runs.
pub const NEFELE_EABORTED: c_int = -10;
/// The process's host did not answer.
pub const NEFELE_EUNREACHABLE: c_int = -11;
/// The process has exited already.
pub const NEFELE_EEXITED: c_int = -12;
/// The process was lost with its host.
pub const NEFELE_ELOST: c_int = -13;
/// The agent found the request malformed (empty path, too many processes, …).
pub const NEFELE_EREQUEST: c_int = -14;
/// The caller's buffer is too small.
pub const NEFELE_ERANGE: c_int = -15;
/// A bug in libnefele (a panic was caught).
pub const NEFELE_EINTERNAL: c_int = -16;
/// Messaging: the process acted for is not a live local process of the tenant
/// (on a process's own endpoint: any pid but its own).
pub const NEFELE_ENOTSELF: c_int = -17;
/// Messaging: no process holds the name.
pub const NEFELE_ENONAME: c_int = -18;
/// Messaging: the name is taken by another process.
pub const NEFELE_ETAKEN: c_int = -19;
/// Messaging: the destination mailbox is full (a non-blocking send).
pub const NEFELE_EFULL: c_int = -20;
/// Messaging: the message is over the size limit.
pub const NEFELE_ETOOLARGE: c_int = -21;
/// Messaging: the send's fate is unknown (no answer in time).
pub const NEFELE_EUNKNOWN: c_int = -22;
/// Messaging: no message came within the timeout.
pub const NEFELE_ETIMEDOUT: c_int = -23;
/// Messaging: another failure (no members, busy mailbox, invalid name, too many,
/// not supported); `nefele_strerror` says only this much.
pub const NEFELE_EMSG: c_int = -24;
/// No Nefele endpoint (`NEFELE_FD` unset, invalid, or taken already).
pub const NEFELE_ENOENDPOINT: c_int = -25;
/// Messaging: overtaken by a later message of the same pair and dropped to keep
/// the pair in order (delivery is at-most-once; the reliable mode does not drop).
pub const NEFELE_EOVERTAKEN: c_int = -26;
/// Messaging: a fan-out send (publish, multicast, broadcast) at most once was not
/// put in every member's mailbox (some were full, or had a later send of the
/// sender already); the others got it.
pub const NEFELE_EPARTIAL: c_int = -27;
/// The agent restarted during the call: its effect is unknown (the connection is
/// made again).
pub const NEFELE_ERESTARTED: c_int = -28;
/// Supervision: the agent called runs no such supervisor of the caller's tenant
/// (it never existed, is another tenant's, or another agent runs it).
pub const NEFELE_ENOSUPERVISOR: c_int = -29;
/// No host with room has a cpu of the spec's speed class (numbered apart from
/// the rest, so that other additions do not collide).
pub const NEFELE_ESHORT_CPU_CLASS: c_int = -40;
/// No host of the cluster has a cpu of the spec's speed class, busy or not.
pub const NEFELE_EUNAVAIL_CPU_CLASS: c_int = -41;
/// No host of the cluster has as many accelerators as the spec asks, busy or not.
pub const NEFELE_EUNAVAIL_ACCELERATORS: c_int = -42;
/// No host with room can enforce a limit the spec asks for (cpu, memory or pids:
/// the hosts lack its cgroup controller), so none runs the process.
pub const NEFELE_EUNENFORCEABLE_LIMIT: c_int = -43;

/// A global pid: 128 bits, whose hex text is `hi` then `lo`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct nefele_pid {
    /// The high 64 bits.
    pub hi: u64,
    /// The low 64 bits.
    pub lo: u64,
}

impl From<Pid> for nefele_pid {
    fn from(p: Pid) -> Self {
        nefele_pid {
            hi: p.sequence(),
            lo: (u64::from(p.incarnation().0) << 32) | u64::from(p.origin().0),
        }
    }
}

impl From<nefele_pid> for Pid {
    fn from(p: nefele_pid) -> Self {
        Pid::new(NodeId(p.lo as u32), Incarnation((p.lo >> 32) as u32), p.hi)
    }
}

/// How a process ended: `kind` is one of the `NEFELE_EXIT_*` values.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct nefele_exit {
    /// `NEFELE_EXIT_CODE` (value = exit code), `NEFELE_EXIT_SIGNALED` (value =
    /// signal), `NEFELE_EXIT_OOM` or `NEFELE_EXIT_LOST`.
    pub kind: c_int,
    /// The code or signal.
    pub value: c_int,
}

/// `nefele_exit.kind`: it exited with a code.
pub const NEFELE_EXIT_CODE: c_int = 0;
/// `nefele_exit.kind`: a signal ended it.
pub const NEFELE_EXIT_SIGNALED: c_int = 1;
/// `nefele_exit.kind`: it went over its memory limit.
pub const NEFELE_EXIT_OOM: c_int = 2;
/// `nefele_exit.kind`: it was lost with its host.
pub const NEFELE_EXIT_LOST: c_int = 3;

/// One process table entry.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct nefele_proc {
    /// The process.
    pub pid: nefele_pid,
    /// Its host's node id.
    pub host: u32,
    /// `NEFELE_STATE_*`.
    pub state: c_int,
    /// How it ended, when `state` is `NEFELE_STATE_EXITED`.
    pub exit: nefele_exit,
    /// Reserved cpu, millicores.
    pub cpu_millicores: u32,
    /// Reserved memory, bytes.
    pub memory_bytes: u64,
    /// Time since it was created, milliseconds.
    pub age_ms: u64,
    /// `NEFELE_DIST_*`.
    pub distance: c_int,
    /// Its executable, NUL-terminated, truncated to fit.
    pub command: [c_char; 256],
}

/// `nefele_proc.state`: created, not yet confirmed.
pub const NEFELE_STATE_PROVISIONAL: c_int = 0;
/// `nefele_proc.state`: running.
pub const NEFELE_STATE_RUNNING: c_int = 1;
/// `nefele_proc.state`: ended.
pub const NEFELE_STATE_EXITED: c_int = 2;
/// `nefele_proc.state`: lost with its host.
pub const NEFELE_STATE_LOST: c_int = 3;

/// An opaque connection to the local agent.
#[derive(Debug)]
pub struct nefele_client(Client);

fn code_of(e: &ClientError) -> c_int {
    match e {
        ClientError::Io { .. } => NEFELE_EIO,
        ClientError::Protocol(ProtocolError::Unauthenticated { .. }) => NEFELE_EAUTH,
        ClientError::Protocol(_) | ClientError::Unexpected(_) => NEFELE_EPROTO,
        ClientError::Spawn(SpawnError::Invalid(_)) => NEFELE_EREQUEST,
        ClientError::Spawn(SpawnError::Short { resource }) => match resource {
            Resource::Cpu => NEFELE_ESHORT_CPU,
            Resource::Memory => NEFELE_ESHORT_MEMORY,
            Resource::Accelerators => NEFELE_ESHORT_ACCELERATORS,
            Resource::Hosts => NEFELE_ESHORT_HOSTS,
            Resource::CpuClass(_) => NEFELE_ESHORT_CPU_CLASS,
            Resource::Limit(_) => NEFELE_EUNENFORCEABLE_LIMIT,
        },
        ClientError::Spawn(SpawnError::Unavailable { resource }) => match resource {
            Resource::CpuClass(_) => NEFELE_EUNAVAIL_CPU_CLASS,
            Resource::Accelerators => NEFELE_EUNAVAIL_ACCELERATORS,
            Resource::Cpu => NEFELE_ESHORT_CPU,
            Resource::Memory => NEFELE_ESHORT_MEMORY,
            Resource::Hosts => NEFELE_ESHORT_HOSTS,
            Resource::Limit(_) => NEFELE_EUNENFORCEABLE_LIMIT,
        },
        ClientError::Spawn(SpawnError::Aborted) => NEFELE_EABORTED,
        ClientError::Kill(KillError::NoSuchProcess)
        | ClientError::Info(InfoError::NoSuchProcess)
        | ClientError::Wait(WaitError::NoSuchProcess) => NEFELE_ENOSUCH,
        ClientError::Supervision(SupervisionError::NoSuchSupervisor) => NEFELE_ENOSUPERVISOR,
        ClientError::Kill(KillError::Exited) => NEFELE_EEXITED,
        ClientError::Kill(KillError::Lost) => NEFELE_ELOST,
        ClientError::Kill(KillError::Unreachable)
        | ClientError::Info(InfoError::Unreachable)
        | ClientError::Wait(WaitError::Unreachable)
        | ClientError::Name(NameError::Unreachable) => NEFELE_EUNREACHABLE,
        ClientError::Send(SendError::NotSender)
        | ClientError::Recv(RecvError::NoSuchProcess)
        | ClientError::Name(NameError::NoSuchProcess)
        | ClientError::Group(GroupError::NoSuchProcess)
        | ClientError::Monitor(MonitorError::NoSuchProcess)
        | ClientError::Msg(MsgError::NoSuchProcess)
        | ClientError::NoProcess => NEFELE_ENOTSELF,
        ClientError::Send(SendError::NoSuchProcess) => NEFELE_ENOSUCH,
        ClientError::Send(SendError::Exited) => NEFELE_EEXITED,
        ClientError::Send(SendError::Lost) => NEFELE_ELOST,
        ClientError::Send(SendError::Unknown) => NEFELE_EUNKNOWN,
        ClientError::Send(SendError::Full) => NEFELE_EFULL,
        ClientError::Send(SendError::TooLarge) => NEFELE_ETOOLARGE,
        ClientError::Send(SendError::NoSuchName) | ClientError::Name(NameError::NoSuchName) => {
            NEFELE_ENONAME
        }
        ClientError::Name(NameError::Taken) => NEFELE_ETAKEN,
        ClientError::Send(SendError::NoMembers | SendError::Unsupported)
        | ClientError::Recv(RecvError::Busy)
        | ClientError::Name(NameError::Invalid | NameError::TooMany)
        | ClientError::Group(_)
        | ClientError::Monitor(MonitorError::TooMany)
        | ClientError::LinkUnavailable(_) => NEFELE_EMSG,
        ClientError::NoEndpoint(_) => NEFELE_ENOENDPOINT,
        ClientError::Send(SendError::Overtaken) => NEFELE_EOVERTAKEN,
        ClientError::Send(SendError::Partial { .. }) => NEFELE_EPARTIAL,
        ClientError::AgentRestarted => NEFELE_ERESTARTED,
        ClientError::AgentGone { .. } => NEFELE_EIO,
    }
}

/// Runs `f`, turning its error into a code and a panic into `NEFELE_EINTERNAL`.
fn guarded(f: impl FnOnce() -> Result<(), c_int>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => NEFELE_OK,
        Ok(Err(code)) => code,
        Err(_) => NEFELE_EINTERNAL,
    }
}

/// A NUL-terminated UTF-8 string, or `NEFELE_EINVAL`.
///
/// # Safety
/// `s` is NULL or points to a NUL-terminated string valid for the call.
unsafe fn text<'a>(s: *const c_char) -> Result<&'a str, c_int> {
    if s.is_null() {
        return Err(NEFELE_EINVAL);
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    unsafe { CStr::from_ptr(s) }
        .to_str()
        .map_err(|_| NEFELE_EINVAL)
}

/// A NULL-terminated array of strings (NULL itself means empty).
///
/// # Safety
/// `list` is NULL or points to an array of string pointers ending with NULL.
unsafe fn texts(list: *const *const c_char) -> Result<Vec<String>, c_int> {
    let mut out = Vec::new();
    if list.is_null() {
        return Ok(out);
    }
    for i in 0.. {
        // SAFETY: the array is NULL-terminated, and we stop at the NULL.
        let item = unsafe { *list.add(i) };
        if item.is_null() {
            break;
        }
        // SAFETY: each item is a NUL-terminated string by the caller's contract.
        out.push(unsafe { text(item) }?.to_owned());
    }
    Ok(out)
}

/// The client behind a handle.
///
/// # Safety
/// `c` is NULL or a handle from `nefele_connect` not yet closed, used by one
/// thread at a time.
unsafe fn client<'a>(c: *mut nefele_client) -> Result<&'a mut Client, c_int> {
    // SAFETY: by the caller's contract the pointer is NULL or a live, unshared handle.
    unsafe { c.as_mut() }.map(|c| &mut c.0).ok_or(NEFELE_EINVAL)
}

fn exit_of(s: ExitStatus) -> nefele_exit {
    let (kind, value) = match s {
        ExitStatus::Code(c) => (NEFELE_EXIT_CODE, c),
        ExitStatus::Signaled(s) => (NEFELE_EXIT_SIGNALED, s),
        ExitStatus::OutOfMemory => (NEFELE_EXIT_OOM, 0),
        ExitStatus::Lost => (NEFELE_EXIT_LOST, 0),
    };
    nefele_exit { kind, value }
}

fn proc_of(p: &ProcInfo) -> nefele_proc {
    let (state, exit) = match p.state {
        ProcState::Provisional => (NEFELE_STATE_PROVISIONAL, nefele_exit::default()),
        ProcState::Running => (NEFELE_STATE_RUNNING, nefele_exit::default()),
        ProcState::Exited(s) => (NEFELE_STATE_EXITED, exit_of(s)),
        ProcState::Lost => (NEFELE_STATE_LOST, exit_of(ExitStatus::Lost)),
    };
    let mut command = [0 as c_char; 256];
    let bytes = p.command.as_bytes();
    let n = bytes.len().min(command.len() - 1);
    for (dst, &src) in command.iter_mut().zip(&bytes[..n]) {
        *dst = src as c_char;
    }
    nefele_proc {
        pid: p.pid.into(),
        host: p.host.0,
        state,
        exit,
        cpu_millicores: p.demand.cpu_millicores,
        memory_bytes: p.demand.memory_bytes,
        age_ms: u64::try_from(p.age.as_millis()).unwrap_or(u64::MAX),
        distance: messaging::class_of(p.distance),
        command,
    }
}

/// Leaks `items` as a boxed slice for C: its pointer and length, for [`reclaim`].
fn leak<T>(items: Box<[T]>) -> (*mut T, usize) {
    let n = items.len();
    (Box::into_raw(items).cast::<T>(), n)
}

/// Frees what [`leak`] returned; NULL is ignored.
///
/// # Safety
/// `ptr` and `n` come from one [`leak`] of a `Box<[T]>`, reclaimed once.
unsafe fn reclaim<T>(ptr: *mut T, n: usize) {
    if !ptr.is_null() {
        // SAFETY: rebuilt from the boxed slice `leak` made, with its length.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, n)) });
    }
}

/// Writes `pids` to `out`, which has room for exactly `pids.len()`.
///
/// # Safety
/// `out` points to at least `pids.len()` writable `nefele_pid`s.
unsafe fn write_pids(out: *mut nefele_pid, pids: &[Pid]) {
    for (i, &p) in pids.iter().enumerate() {
        // SAFETY: `i < pids.len()`, within the caller's buffer.
        unsafe { out.add(i).write(p.into()) };
    }
}

/// Connects to the agent at `socket_path` (NULL: `$NEFELE_SOCKET`, else the
/// default) with `token` (NULL: `$NEFELE_TOKEN`, else authenticate by uid).
///
/// # Safety
/// Strings are NULL or NUL-terminated; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nefele_connect(
    socket_path: *const c_char,
    token: *const c_char,
    out: *mut *mut nefele_client,
) -> c_int {
    guarded(|| {
        if out.is_null() {
            return Err(NEFELE_EINVAL);
        }
        let path = if socket_path.is_null() {
            crate::client::default_socket()
        } else {
            // SAFETY: non-NULL, NUL-terminated by contract.
            unsafe { text(socket_path) }?.into()
        };
        let token = if token.is_null() {
            std::env::var(crate::client::TOKEN_ENV).ok()
        } else {
            // SAFETY: non-NULL, NUL-terminated by contract.
            Some(unsafe { text(token) }?.to_owned())
        };
        let c = Client::connect(path, token.as_deref()).map_err(|e| code_of(&e))?;
        // SAFETY: `out` is non-NULL and writable by contract.
        unsafe { out.write(Box::into_raw(Box::new(nefele_client(c)))) };
        Ok(())
    })
}

/// Closes a connection; NULL is ignored.
///
/// # Safety
/// `c` is NULL or a handle from `nefele_connect`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn nefele_close(c: *mut nefele_client) {
    if !c.is_null() {
        // SAFETY: the handle came from Box::into_raw in nefele_connect and is closed once.
        drop(unsafe { Box::from_raw(c) });
    }
}

/// Starts one process; its pid goes to `out`.
///
/// # Safety
/// `c` as for `nefele_close` but still open; `spec` readable; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn nefele_spawn(
    c: *mut nefele_client,
    spec: *const nefele_spec,
    out: *mut nefele_pid,
) -> c_int {
    guarded(|| {
        // SAFETY: contract of this function.
        let client = unsafe { client(c)? };
        if out.is_null() {
            return Err(NEFELE_EINVAL);
        }
        // SAFETY: contract of this function.
        let spec = unsafe { spec_of(spec) }?;
        let pid = client.spawn(&spec).map_err(|e| code_of(&e))?;
        // SAFETY: `out` is non-NULL and writable.
        unsafe { write_pids(out, &[pid]) };
        Ok(())
    })
}

/// Starts `n` identical processes atomically; their pids go to `out[0..n]`.
///
/// # Safety
/// As for `nefele_spawn`; `out` has room for `n` pids.
#[no_mangle]
pub unsafe extern "C" fn nefele_n_spawn(
    c: *mut nefele_client,
    n: u32,
    spec: *const nefele_spec,
    out: *mut nefele_pid,
) -> c_int {
    // SAFETY: the same contract, without `unspread`.
    unsafe { nefele_n_spawn_placed(c, n, spec, out, std::ptr::null_mut()) }
}

/// As `nefele_n_spawn`; `*unspread` (when `unspread` is not NULL) gets the number
/// of `spread` tags placement could not spread across racks (their processes are
/// on distinct servers, some sharing a rack; 0: every tag was spread).
///
/// # Safety
/// As for `nefele_n_spawn`; `unspread` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nefele_n_spawn_placed(
    c: *mut nefele_client,
    n: u32,
    spec: *const nefele_spec,
    out: *mut nefele_pid,
    unspread: *mut usize,
) -> c_int {
    guarded(|| {
        // SAFETY: contract of this function.
        let client = unsafe { client(c)? };
        if out.is_null() || n == 0 {
            return Err(NEFELE_EINVAL);
        }
        // SAFETY: contract of this function.
        let spec = unsafe { spec_of(spec) }?;
        let placed = client.n_spawn_placed(n, &spec).map_err(|e| code_of(&e))?;
        // SAFETY: `out` has room for `n` pids; `unspread` is NULL or writable.
        unsafe { write_placed(&placed, n as usize, out, unspread) }
    })
}

/// Writes a placed request's pids (`count` of them expected) and its count of
/// unspread tags.
///
/// # Safety
/// `out` has room for `count` pids; `unspread` is NULL or writable.
unsafe fn write_placed(
    placed: &crate::client::Placed,
    count: usize,
    out: *mut nefele_pid,
    unspread: *mut usize,
) -> Result<(), c_int> {
    if placed.pids.len() != count {
        return Err(NEFELE_EPROTO);
    }
    // SAFETY: `out` has room for `count` pids.
    unsafe { write_pids(out, &placed.pids) };
    if !unspread.is_null() {
        // SAFETY: not NULL, and writable by the caller's contract.
        unsafe { unspread.write(placed.unspread.len()) };
    }
    Ok(())
}

/// Starts `count` different processes atomically; their pids go to
/// `out[0..count]`, in the order of `specs`.
///
/// # Safety
/// As for `nefele_spawn`; `specs` has `count` readable specs and `out` room for
/// `count` pids.
#[no_mangle]
pub unsafe extern "C" fn nefele_c_spawn(
    c: *mut nefele_client,
    specs: *const nefele_spec,
    count: usize,
    out: *mut nefele_pid,
) -> c_int {
    // SAFETY: the same contract, without `unspread`.
    unsafe { nefele_c_spawn_placed(c, specs, count, out, std::ptr::null_mut()) }
}

/// As `nefele_c_spawn`, with `*unspread` as in `nefele_n_spawn_placed`.
///
/// # Safety
/// As for `nefele_c_spawn`; `unspread` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nefele_c_spawn_placed(
    c: *mut nefele_client,
    specs: *const nefele_spec,
    count: usize,
    out: *mut nefele_pid,
    unspread: *mut usize,
) -> c_int {
    guarded(|| {
        // SAFETY: contract of this function.
        let client = unsafe { client(c) }?;
        if specs.is_null() || out.is_null() || count == 0 {
            return Err(NEFELE_EINVAL);
        }
        // SAFETY: `specs` points to `count` readable specs of the first one's size.
        let specs = unsafe { specs_of(specs, count) }?;
        let placed = client.c_spawn_placed(&specs).map_err(|e| code_of(&e))?;
        // SAFETY: `out` has room for `count` pids; `unspread` is NULL or writable.
        unsafe { write_placed(&placed, count, out, unspread) }
    })
}

/// Delivers a signal to `pid` and its descendants: 0 asks it to stop (SIGTERM,
/// then SIGKILL after the host's grace period), 9 kills at once, any other
/// number is delivered as is.
///
/// # Safety
/// `c` is an open handle.
#[no_mangle]
pub unsafe extern "C" fn nefele_kill(
    c: *mut nefele_client,
    pid: nefele_pid,
    signal: c_int,
) -> c_int {
    guarded(|| {
        // SAFETY: contract of this function.
        let client = unsafe { client(c) }?;
        let signal = match signal {
            0 => Signal::Terminate,
            9 => Signal::Kill,
            s if s > 0 && s < 65 => Signal::Raw(s),
            _ => return Err(NEFELE_EINVAL),
        };
        client.kill(pid.into(), signal).map_err(|e| code_of(&e))
    })
}

/// The entry of `pid`, into `out`.
///
/// # Safety
/// `c` is an open handle; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn nefele_info(
    c: *mut nefele_client,
    pid: nefele_pid,
    out: *mut nefele_proc,
) -> c_int {
    guarded(|| {
        // SAFETY: contract of this function.
        let client = unsafe { client(c) }?;
        if out.is_null() {
            return Err(NEFELE_EINVAL);
        }
        let info = client.info(pid.into()).map_err(|e| code_of(&e))?;
        // SAFETY: `out` is non-NULL and writable.
        unsafe { out.write(proc_of(&info)) };
        Ok(())
    })
}

/// Every process of the caller's tenant: an array of `*count` entries in `*out`,
/// to release with `nefele_ps_free`. `*unanswered` (if not NULL) gets the number
/// of agents that did not answer in time (their processes are missing).
///
/// # Safety
/// `c` is an open handle; `out` and `count` are writable; `unanswered` is NULL
/// or writable.
#[no_mangle]
pub unsafe extern "C" fn nefele_ps(
    c: *mut nefele_client,
    out: *mut *mut nefele_proc,
    count: *mut usize,
    unanswered: *mut u32,
) -> c_int {
    guarded(|| {
        // SAFETY: contract of this function.
        let client = unsafe { client(c) }?;
        if out.is_null() || count.is_null() {
            return Err(NEFELE_EINVAL);
        }
        let reply = client.ps().map_err(|e| code_of(&e))?;
        let (procs, n) = leak(reply.processes.iter().map(proc_of).collect());
        // SAFETY: the pointers are non-NULL (or, for `unanswered`, checked) and writable;
        // the array is released by nefele_ps_free with the same length.
        unsafe {
            count.write(n);
            out.write(procs);
            if let Some(u) = unanswered.as_mut() {
                *u = reply.unanswered;
            }
        }
        Ok(())
    })
}

/// Releases what `nefele_ps` returned; NULL is ignored.
///
/// # Safety
/// `procs` and `count` are exactly what one `nefele_ps` call returned, freed once.
#[no_mangle]
pub unsafe extern "C" fn nefele_ps_free(procs: *mut nefele_proc, count: usize) {
    // SAFETY: `procs` and `count` come from the `leak` in nefele_ps, by contract.
    unsafe { reclaim(procs, count) };
}

/// Blocks until `pid` ends; how it ended goes to `out`.
///
/// # Safety
/// `c` is an open handle; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn nefele_wait(
    c: *mut nefele_client,
    pid: nefele_pid,
    out: *mut nefele_exit,
) -> c_int {
    guarded(|| {
        // SAFETY: contract of this function.
        let client = unsafe { client(c) }?;
        if out.is_null() {
            return Err(NEFELE_EINVAL);
        }
        let status = client.wait(pid.into()).map_err(|e| code_of(&e))?;
        // SAFETY: `out` is non-NULL and writable.
        unsafe { out.write(exit_of(status)) };
        Ok(())
    })
}

/// Connects through this process's own endpoint (a process started by Nefele:
/// `NEFELE_FD`); messaging calls act as this process.
///
/// # Safety
/// `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nefele_connect_self(out: *mut *mut nefele_client) -> c_int {
    guarded(|| {
        if out.is_null() {
            return Err(NEFELE_EINVAL);
        }
        let c = Client::from_endpoint().map_err(|e| code_of(&e))?;
        // SAFETY: `out` is non-NULL and writable by contract.
        unsafe { out.write(Box::into_raw(Box::new(nefele_client(c)))) };
        Ok(())
    })
}

/// Makes messaging calls of `c` act as `pid` (a tenant connection; on a process's
/// own endpoint any other pid is refused with `NEFELE_ENOTSELF`).
///
/// # Safety
/// `c` is an open handle.
#[no_mangle]
pub unsafe extern "C" fn nefele_act_as(c: *mut nefele_client, pid: nefele_pid) -> c_int {
    guarded(|| {
        // SAFETY: by contract.
        unsafe { client(c) }?.act_as(pid.into());
        Ok(())
    })
}

/// The process messaging calls of `c` act as, to `out`; `NEFELE_ENOTSELF` if none.
///
/// # Safety
/// `c` is an open handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn nefele_self(c: *mut nefele_client, out: *mut nefele_pid) -> c_int {
    guarded(|| {
        // SAFETY: by contract.
        let me = unsafe { client(c) }?.me().ok_or(NEFELE_ENOTSELF)?;
        if out.is_null() {
            return Err(NEFELE_EINVAL);
        }
        // SAFETY: `out` is non-NULL and writable.
        unsafe { out.write(me.into()) };
        Ok(())
    })
}

/// The `len` bytes at `data` (NULL allowed when `len` is 0).
///
/// # Safety
/// `data` is readable for `len` bytes when non-NULL.
unsafe fn bytes<'a>(data: *const u8, len: usize) -> Result<&'a [u8], c_int> {
    if len == 0 {
        return Ok(&[]);
    }
    if data.is_null() {
        return Err(NEFELE_EINVAL);
    }
    // SAFETY: non-NULL and readable for `len` bytes by contract.
    Ok(unsafe { std::slice::from_raw_parts(data, len) })
}

/// A static, NUL-terminated description of an error code.
#[no_mangle]
pub extern "C" fn nefele_strerror(code: c_int) -> *const c_char {
    let s: &'static CStr = match code {
        NEFELE_OK => c"success",
        NEFELE_EINVAL => c"invalid argument",
        NEFELE_EIO => c"cannot reach the agent",
        NEFELE_EPROTO => c"protocol error with the agent",
        NEFELE_EAUTH => c"not authenticated by the agent",
        NEFELE_ENOSUCH => c"no such process",
        NEFELE_ESHORT_CPU => c"not enough cpu for the request",
        NEFELE_ESHORT_MEMORY => c"not enough memory for the request",
        NEFELE_ESHORT_ACCELERATORS => c"not enough accelerators for the request",
        NEFELE_ESHORT_HOSTS => c"not enough hosts for the request's affinity rules",
        NEFELE_EABORTED => c"aborted: a chosen host did not answer in time",
        NEFELE_EUNREACHABLE => c"the process's host did not answer",
        NEFELE_EEXITED => c"the process has exited already",
        NEFELE_ELOST => c"the process was lost with its host",
        NEFELE_EREQUEST => c"invalid request",
        NEFELE_ERANGE => c"buffer too small",
        NEFELE_EINTERNAL => c"internal error in libnefele",
        NEFELE_ENOTSELF => c"not a live local process of the tenant (or not this process)",
        NEFELE_ENONAME => c"no such name",
        NEFELE_ETAKEN => c"the name is taken",
        NEFELE_EFULL => c"the destination mailbox is full",
        NEFELE_ETOOLARGE => c"the message is over the size limit",
        NEFELE_EUNKNOWN => c"fate unknown: no answer in time",
        NEFELE_ETIMEDOUT => c"no message within the timeout",
        NEFELE_EMSG => c"messaging call failed",
        NEFELE_ENOENDPOINT => c"no Nefele endpoint (NEFELE_FD)",
        NEFELE_EOVERTAKEN => c"overtaken by a later message of the pair; not delivered",
        NEFELE_EPARTIAL => c"not put in every member's mailbox (some full or overtaken)",
        NEFELE_ERESTARTED => c"the agent restarted during the call; its effect is unknown",
        NEFELE_ENOSUPERVISOR => c"no such supervisor here",
        NEFELE_ESHORT_CPU_CLASS => c"no host with room has a cpu of the asked speed class",
        NEFELE_EUNAVAIL_CPU_CLASS => c"no host of the cluster has a cpu of the asked speed class",
        NEFELE_EUNAVAIL_ACCELERATORS => c"no host of the cluster has as many accelerators as asked",
        NEFELE_EUNENFORCEABLE_LIMIT => c"no host with room can enforce a limit the spec asks for",
        _ => c"unknown error code",
    };
    s.as_ptr()
}

/// Writes `text` and a NUL to `buf`, which holds `len` bytes; `NEFELE_ERANGE` if
/// it does not fit.
///
/// # Safety
/// `buf` is NULL or writable for `len` bytes.
unsafe fn write_text(text: &str, buf: *mut c_char, len: usize) -> Result<(), c_int> {
    if buf.is_null() {
        return Err(NEFELE_EINVAL);
    }
    if text.len() + 1 > len {
        return Err(NEFELE_ERANGE);
    }
    // SAFETY: `buf` holds `len >= text.len() + 1` writable bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr().cast::<c_char>(), buf, text.len());
        buf.add(text.len()).write(0);
    }
    Ok(())
}

/// Writes the text form of `pid` (up to 32 hex digits and a NUL) to `buf`, which
/// holds `len` bytes (33 always suffice).
///
/// # Safety
/// `buf` is NULL or writable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn nefele_pid_to_string(
    pid: nefele_pid,
    buf: *mut c_char,
    len: usize,
) -> c_int {
    // SAFETY: forwarded contract.
    guarded(|| unsafe { write_text(&Pid::from(pid).to_string(), buf, len) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_cross_the_boundary_unchanged() {
        let p = Pid::new(
            NodeId(0x7654_3210),
            Incarnation(0xfedc_ba98),
            0x0123_4567_89ab_cdef,
        );
        let c = nefele_pid::from(p);
        assert_eq!(Pid::from(c), p);
        assert_eq!(format!("{:x}{:016x}", c.hi, c.lo), p.to_string());
    }

    #[test]
    fn null_arguments_are_refused() {
        let mut pid = nefele_pid::default();
        // SAFETY: NULLs are what is tested; no pointer is dereferenced.
        unsafe {
            assert_eq!(
                nefele_connect(std::ptr::null(), std::ptr::null(), std::ptr::null_mut()),
                NEFELE_EINVAL
            );
            assert_eq!(
                nefele_spawn(std::ptr::null_mut(), std::ptr::null(), &mut pid),
                NEFELE_EINVAL
            );
            assert_eq!(nefele_kill(std::ptr::null_mut(), pid, 9), NEFELE_EINVAL);
            assert_eq!(
                nefele_pid_to_string(pid, std::ptr::null_mut(), 33),
                NEFELE_EINVAL
            );
            nefele_close(std::ptr::null_mut());
            nefele_ps_free(std::ptr::null_mut(), 0);
        }
    }

    #[test]
    fn every_code_has_its_own_words() {
        let words: std::collections::BTreeSet<_> = (NEFELE_ENOSUPERVISOR..=NEFELE_OK)
            // SAFETY: nefele_strerror returns a static NUL-terminated string.
            .map(|c| unsafe { CStr::from_ptr(nefele_strerror(c)) }.to_owned())
            .collect();
        assert_eq!(words.len(), (NEFELE_OK - NEFELE_ENOSUPERVISOR + 1) as usize);
    }

    #[test]
    fn pid_text_needs_room() {
        let mut buf = [0 as c_char; 33];
        let pid = nefele_pid {
            hi: u64::MAX,
            lo: 1,
        };
        // SAFETY: `buf` holds the lengths given.
        unsafe {
            assert_eq!(
                nefele_pid_to_string(pid, buf.as_mut_ptr(), 4),
                NEFELE_ERANGE
            );
            assert_eq!(nefele_pid_to_string(pid, buf.as_mut_ptr(), 33), NEFELE_OK);
            assert_eq!(
                CStr::from_ptr(buf.as_ptr()).to_str().unwrap(),
                Pid::from(pid).to_string()
            );
        }
    }
}
