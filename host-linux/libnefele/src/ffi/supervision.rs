//! The supervision calls of the C ABI: spawning under a supervisor, listing the
//! supervisors the local agent runs (with their children and restart history),
//! and stopping one.
//!
//! A supervisor is a system service of the cluster, not a tenant process; its id
//! is three numbers ([`nefele_supervisor_id`]) whose text form is what `nef
//! supervisors` prints (`s<node>.<life>.<n>`).
//!
//! Ownership: the array `nefele_supervisors` hands out, and the children and
//! history arrays each of its entries points to, are released together by one
//! `nefele_supervisors_free` with the same count. Every number a caller passes
//! is checked before anything is sent: an unknown strategy or policy, a zero
//! period, or a policy count that is neither 1 nor the number of children gives
//! `NEFELE_EINVAL`.

use super::spec::{spec_of, specs_of};
use super::{
    client, code_of, exit_of, guarded, leak, nefele_client, nefele_exit, nefele_pid, nefele_spec,
    reclaim, write_pids, write_text, NEFELE_EINVAL, NEFELE_EPROTO,
};
use nefele_api::ids::{Incarnation, NodeId, Pid};
use nefele_api::supervision::{
    ChildInfo, ChildState, Intensity, RestartCause, RestartPolicy, RestartRecord, Strategy,
    SupervisedSpawn, SupervisionSpec, SupervisorId, SupervisorInfo, SupervisorState, MAX_CHILDREN,
};
use std::ffi::{c_char, c_int};
use std::time::Duration;

/// `nefele_supervision.strategy`: only the child that ended restarts.
pub const NEFELE_STRATEGY_ONE_FOR_ONE: c_int = 0;
/// `nefele_supervision.strategy`: every child restarts when one must.
pub const NEFELE_STRATEGY_ONE_FOR_ALL: c_int = 1;
/// `nefele_supervision.strategy`: the child that ended and every later one restart.
pub const NEFELE_STRATEGY_REST_FOR_ONE: c_int = 2;

/// A restart policy: always restarted.
pub const NEFELE_RESTART_PERMANENT: c_int = 0;
/// A restart policy: restarted only when it ended abnormally (not exit code 0).
pub const NEFELE_RESTART_TRANSIENT: c_int = 1;
/// A restart policy: never restarted.
pub const NEFELE_RESTART_TEMPORARY: c_int = 2;

/// `nefele_supervisor.state`: supervising.
pub const NEFELE_SUPERVISOR_RUNNING: c_int = 0;
/// `nefele_supervisor.state`: past its intensity under a strategy that ties the
/// children together; every child was stopped.
pub const NEFELE_SUPERVISOR_GAVE_UP: c_int = 1;
/// `nefele_supervisor.state`: stopped by a client; every child was stopped.
pub const NEFELE_SUPERVISOR_STOPPED: c_int = 2;

/// `nefele_child.state`: running as its pid.
pub const NEFELE_CHILD_RUNNING: c_int = 0;
/// `nefele_child.state`: being stopped for a sibling's restart, or started again.
pub const NEFELE_CHILD_RESTARTING: c_int = 1;
/// `nefele_child.state`: ended and not restarted (its policy said so); see `exit`.
pub const NEFELE_CHILD_ENDED: c_int = 2;
/// `nefele_child.state`: past the intensity, stopped and not restarted.
pub const NEFELE_CHILD_GAVE_UP: c_int = 3;
/// `nefele_child.state`: stopped with its supervisor.
pub const NEFELE_CHILD_STOPPED: c_int = 4;

/// `nefele_restart.cause`: the child ended (see `exit`).
pub const NEFELE_CAUSE_EXITED: c_int = 0;
/// `nefele_restart.cause`: the child was lost with its host.
pub const NEFELE_CAUSE_LOST: c_int = 1;
/// `nefele_restart.cause`: a sibling's restart took it along.
pub const NEFELE_CAUSE_SIBLING: c_int = 2;

/// A supervisor's id: the agent that created it, that agent's life then, and a
/// sequence number there.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct nefele_supervisor_id {
    /// The creating agent's node id.
    pub origin: u32,
    /// Its life (incarnation) at creation.
    pub incarnation: u32,
    /// The sequence number at that agent.
    pub sequence: u32,
}

impl From<SupervisorId> for nefele_supervisor_id {
    fn from(id: SupervisorId) -> Self {
        nefele_supervisor_id {
            origin: id.origin.0,
            incarnation: id.incarnation.0,
            sequence: id.sequence,
        }
    }
}

impl From<nefele_supervisor_id> for SupervisorId {
    fn from(id: nefele_supervisor_id) -> Self {
        SupervisorId {
            origin: NodeId(id.origin),
            incarnation: Incarnation(id.incarnation),
            sequence: id.sequence,
        }
    }
}

/// How to supervise the processes of one spawn.
#[repr(C)]
#[derive(Debug)]
pub struct nefele_supervision {
    /// `NEFELE_STRATEGY_*`.
    pub strategy: c_int,
    /// The most restarts of one child within `period_ms`; one more gives it up.
    pub max_restarts: u32,
    /// The intensity period, in milliseconds (not 0).
    pub period_ms: u64,
    /// `NEFELE_RESTART_*`: one for every child, or one per child in spawn order.
    pub policies: *const c_int,
    /// How many `policies` there are: 1, or the number of children.
    pub policy_count: usize,
}

/// One child of a supervisor.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct nefele_child {
    /// Its position in the spawn.
    pub index: u32,
    /// `NEFELE_RESTART_*`.
    pub policy: c_int,
    /// Whether `pid` holds its current (or last) pid.
    pub has_pid: c_int,
    /// Its current (or last) pid.
    pub pid: nefele_pid,
    /// `NEFELE_CHILD_*`.
    pub state: c_int,
    /// How it ended, when `state` is `NEFELE_CHILD_ENDED`.
    pub exit: nefele_exit,
    /// How often it was restarted.
    pub restarts: u32,
}

/// One restart of a child, or the give-up that ended its restarts.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct nefele_restart {
    /// The child's index.
    pub child: u32,
    /// Whether `old_pid` holds the pid that ended.
    pub has_old: c_int,
    /// The pid that ended.
    pub old_pid: nefele_pid,
    /// Whether `new_pid` holds the pid that replaced it (0: given up, or not
    /// started yet).
    pub has_new: c_int,
    /// The pid that replaced it.
    pub new_pid: nefele_pid,
    /// `NEFELE_CAUSE_*`.
    pub cause: c_int,
    /// How it ended, when `cause` is `NEFELE_CAUSE_EXITED`.
    pub exit: nefele_exit,
    /// Whether this record is the child's give-up.
    pub gave_up: c_int,
}

/// A supervisor, with its children and last restarts.
#[repr(C)]
#[derive(Debug)]
pub struct nefele_supervisor {
    /// Its id.
    pub id: nefele_supervisor_id,
    /// The node id of the agent running it now.
    pub home: u32,
    /// `NEFELE_SUPERVISOR_*`.
    pub state: c_int,
    /// `NEFELE_STRATEGY_*`.
    pub strategy: c_int,
    /// Its intensity: the most restarts of a child within `period_ms`.
    pub max_restarts: u32,
    /// Its intensity period, in milliseconds.
    pub period_ms: u64,
    /// Its children, in spawn order (`child_count` of them).
    pub children: *mut nefele_child,
    /// How many children.
    pub child_count: usize,
    /// Its last restarts, oldest first (`history_count` of them).
    pub history: *mut nefele_restart,
    /// How many restart records.
    pub history_count: usize,
}

fn strategy_of(code: c_int) -> Result<Strategy, c_int> {
    match code {
        NEFELE_STRATEGY_ONE_FOR_ONE => Ok(Strategy::OneForOne),
        NEFELE_STRATEGY_ONE_FOR_ALL => Ok(Strategy::OneForAll),
        NEFELE_STRATEGY_REST_FOR_ONE => Ok(Strategy::RestForOne),
        _ => Err(NEFELE_EINVAL),
    }
}

fn strategy_code(s: Strategy) -> c_int {
    match s {
        Strategy::OneForOne => NEFELE_STRATEGY_ONE_FOR_ONE,
        Strategy::OneForAll => NEFELE_STRATEGY_ONE_FOR_ALL,
        Strategy::RestForOne => NEFELE_STRATEGY_REST_FOR_ONE,
    }
}

fn policy_of(code: c_int) -> Result<RestartPolicy, c_int> {
    match code {
        NEFELE_RESTART_PERMANENT => Ok(RestartPolicy::Permanent),
        NEFELE_RESTART_TRANSIENT => Ok(RestartPolicy::Transient),
        NEFELE_RESTART_TEMPORARY => Ok(RestartPolicy::Temporary),
        _ => Err(NEFELE_EINVAL),
    }
}

fn policy_code(p: RestartPolicy) -> c_int {
    match p {
        RestartPolicy::Permanent => NEFELE_RESTART_PERMANENT,
        RestartPolicy::Transient => NEFELE_RESTART_TRANSIENT,
        RestartPolicy::Temporary => NEFELE_RESTART_TEMPORARY,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The Rust spec of a C supervision for `children` children, checked as the
/// agent would check it.
///
/// # Safety
/// `s` is NULL or readable; its `policies` points to `policy_count` readable
/// values (any pointer when the count is 0).
unsafe fn supervision_of(
    s: *const nefele_supervision,
    children: usize,
) -> Result<SupervisionSpec, c_int> {
    // SAFETY: NULL or readable by contract.
    let s = unsafe { s.as_ref() }.ok_or(NEFELE_EINVAL)?;
    // One policy, or one per child: anything else is refused before it is read.
    if s.policies.is_null() || (s.policy_count != 1 && s.policy_count != children) {
        return Err(NEFELE_EINVAL);
    }
    // SAFETY: `policies` holds `policy_count` readable values by contract.
    let codes = unsafe { std::slice::from_raw_parts(s.policies, s.policy_count) };
    let spec = SupervisionSpec {
        strategy: strategy_of(s.strategy)?,
        intensity: Intensity {
            max_restarts: s.max_restarts,
            period: Duration::from_millis(s.period_ms),
        },
        policies: codes
            .iter()
            .map(|&c| policy_of(c))
            .collect::<Result<_, _>>()?,
    };
    spec.check(children).map_err(|_| NEFELE_EINVAL)?;
    Ok(spec)
}

fn flag(b: bool) -> c_int {
    c_int::from(b)
}

/// A pid that may be absent, as a flag and a value (zero when absent).
fn maybe_pid(p: Option<Pid>) -> (c_int, nefele_pid) {
    (
        flag(p.is_some()),
        p.map(nefele_pid::from).unwrap_or_default(),
    )
}

fn child_of(c: &ChildInfo) -> nefele_child {
    let (state, exit) = match c.state {
        ChildState::Running => (NEFELE_CHILD_RUNNING, nefele_exit::default()),
        ChildState::Restarting => (NEFELE_CHILD_RESTARTING, nefele_exit::default()),
        ChildState::Ended(s) => (NEFELE_CHILD_ENDED, exit_of(s)),
        ChildState::GaveUp => (NEFELE_CHILD_GAVE_UP, nefele_exit::default()),
        ChildState::Stopped => (NEFELE_CHILD_STOPPED, nefele_exit::default()),
    };
    let (has_pid, pid) = maybe_pid(c.pid);
    nefele_child {
        index: c.index,
        policy: policy_code(c.policy),
        has_pid,
        pid,
        state,
        exit,
        restarts: c.restarts,
    }
}

fn restart_of(r: &RestartRecord) -> nefele_restart {
    let (cause, exit) = match r.cause {
        RestartCause::Exited(s) => (NEFELE_CAUSE_EXITED, exit_of(s)),
        RestartCause::Lost => (NEFELE_CAUSE_LOST, nefele_exit::default()),
        RestartCause::Sibling => (NEFELE_CAUSE_SIBLING, nefele_exit::default()),
    };
    let (has_old, old_pid) = maybe_pid(r.old);
    let (has_new, new_pid) = maybe_pid(r.new);
    nefele_restart {
        child: r.child,
        has_old,
        old_pid,
        has_new,
        new_pid,
        cause,
        exit,
        gave_up: flag(r.gave_up),
    }
}

fn supervisor_of(s: &SupervisorInfo) -> nefele_supervisor {
    let (children, child_count) = leak(s.children.iter().map(child_of).collect());
    let (history, history_count) = leak(s.history.iter().map(restart_of).collect());
    nefele_supervisor {
        id: s.id.into(),
        home: s.home.0,
        state: match s.state {
            SupervisorState::Running => NEFELE_SUPERVISOR_RUNNING,
            SupervisorState::GaveUp => NEFELE_SUPERVISOR_GAVE_UP,
            SupervisorState::Stopped => NEFELE_SUPERVISOR_STOPPED,
        },
        strategy: strategy_code(s.strategy),
        max_restarts: s.intensity.max_restarts,
        period_ms: millis(s.intensity.period),
        children,
        child_count,
        history,
        history_count,
    }
}

/// Spawns under a new supervisor and writes its id and the children's pids.
///
/// # Safety
/// `c` is an open handle; `supervision` as for [`supervision_of`]; `id_out` is
/// writable and `pids_out` has room for `spawn.children()` pids.
unsafe fn spawn_supervised(
    c: *mut nefele_client,
    spawn: SupervisedSpawn,
    supervision: *const nefele_supervision,
    id_out: *mut nefele_supervisor_id,
    pids_out: *mut nefele_pid,
) -> Result<(), c_int> {
    // SAFETY: forwarded contract.
    let client = unsafe { client(c) }?;
    if id_out.is_null() || pids_out.is_null() {
        return Err(NEFELE_EINVAL);
    }
    let children = spawn.children();
    // SAFETY: forwarded contract.
    let supervision = unsafe { supervision_of(supervision, children) }?;
    let (id, pids) = client
        .spawn_supervised(spawn, supervision)
        .map_err(|e| code_of(&e))?;
    if pids.len() != children {
        return Err(NEFELE_EPROTO);
    }
    // SAFETY: `id_out` is writable and `pids_out` has room for `children` pids.
    unsafe {
        id_out.write(id.into());
        write_pids(pids_out, &pids);
    }
    Ok(())
}

/// Starts `count` processes atomically under a new supervisor (one process when
/// `count` is 1); the supervisor's id goes to `*id_out`, the pids to
/// `pids_out[0..count]` in the order of `specs`.
///
/// # Safety
/// `c` is an open handle; `specs` has `count` readable specs (as for
/// `nefele_c_spawn`); `supervision` is readable with `policy_count` readable
/// policies; `id_out` is writable; `pids_out` has room for `count` pids.
#[no_mangle]
pub unsafe extern "C" fn nefele_supervise(
    c: *mut nefele_client,
    specs: *const nefele_spec,
    count: usize,
    supervision: *const nefele_supervision,
    id_out: *mut nefele_supervisor_id,
    pids_out: *mut nefele_pid,
) -> c_int {
    guarded(|| {
        // More children than a supervisor may have: refused before any spec is read.
        if specs.is_null() || count == 0 || count > MAX_CHILDREN {
            return Err(NEFELE_EINVAL);
        }
        let spawn = if count == 1 {
            // SAFETY: one readable spec by contract.
            SupervisedSpawn::One(unsafe { spec_of(specs) }?)
        } else {
            // SAFETY: `count` readable specs of the first one's size by contract.
            SupervisedSpawn::C(unsafe { specs_of(specs, count) }?)
        };
        // SAFETY: forwarded contract.
        unsafe { spawn_supervised(c, spawn, supervision, id_out, pids_out) }
    })
}

/// Starts `n` identical processes atomically under a new supervisor; its id goes
/// to `*id_out`, the pids to `pids_out[0..n]`.
///
/// # Safety
/// As for `nefele_supervise`, with one readable `spec` and room for `n` pids.
#[no_mangle]
pub unsafe extern "C" fn nefele_n_supervise(
    c: *mut nefele_client,
    n: u32,
    spec: *const nefele_spec,
    supervision: *const nefele_supervision,
    id_out: *mut nefele_supervisor_id,
    pids_out: *mut nefele_pid,
) -> c_int {
    guarded(|| {
        if n == 0 {
            return Err(NEFELE_EINVAL);
        }
        // SAFETY: one readable spec by contract.
        let spawn = SupervisedSpawn::N(n, unsafe { spec_of(spec) }?);
        // SAFETY: forwarded contract.
        unsafe { spawn_supervised(c, spawn, supervision, id_out, pids_out) }
    })
}

/// The supervisors the agent called runs for the caller's tenant, in id order:
/// an array of `*count` entries in `*out`, to release with
/// `nefele_supervisors_free`.
///
/// # Safety
/// `c` is an open handle; `out` and `count` are writable.
#[no_mangle]
pub unsafe extern "C" fn nefele_supervisors(
    c: *mut nefele_client,
    out: *mut *mut nefele_supervisor,
    count: *mut usize,
) -> c_int {
    guarded(|| {
        // SAFETY: contract of this function.
        let client = unsafe { client(c) }?;
        if out.is_null() || count.is_null() {
            return Err(NEFELE_EINVAL);
        }
        let list = client.supervisors().map_err(|e| code_of(&e))?;
        let (ptr, n) = leak(list.iter().map(supervisor_of).collect());
        // SAFETY: both pointers are non-NULL and writable; the array (and each
        // entry's arrays) is released by nefele_supervisors_free with this count.
        unsafe {
            count.write(n);
            out.write(ptr);
        }
        Ok(())
    })
}

/// Releases what `nefele_supervisors` returned, each entry's children and
/// history included; NULL is ignored.
///
/// # Safety
/// `list` and `count` are exactly what one `nefele_supervisors` call returned,
/// freed once, with the entries' array pointers and counts unchanged.
#[no_mangle]
pub unsafe extern "C" fn nefele_supervisors_free(list: *mut nefele_supervisor, count: usize) {
    if list.is_null() {
        return;
    }
    // SAFETY: `list` holds `count` entries made by `supervisor_of`, by contract.
    let entries = unsafe { std::slice::from_raw_parts(list, count) };
    for s in entries {
        // SAFETY: each entry's arrays come from `leak`, with these counts.
        unsafe {
            reclaim(s.children, s.child_count);
            reclaim(s.history, s.history_count);
        }
    }
    // SAFETY: the array itself comes from `leak` with `count` entries.
    unsafe { reclaim(list, count) };
}

/// Stops a supervisor the agent called runs, and every child of it;
/// `NEFELE_ENOSUPERVISOR` if the agent runs no such supervisor of the caller's
/// tenant.
///
/// # Safety
/// `c` is an open handle.
#[no_mangle]
pub unsafe extern "C" fn nefele_stop_supervisor(
    c: *mut nefele_client,
    id: nefele_supervisor_id,
) -> c_int {
    guarded(|| {
        // SAFETY: contract of this function.
        let client = unsafe { client(c) }?;
        client.stop_supervisor(id.into()).map_err(|e| code_of(&e))
    })
}

/// Writes the text form of `id` (`s<node>.<life>.<n>`, as `nef supervisors`
/// prints it and `nef stop-supervisor` reads it; 34 bytes always suffice)
/// to `buf`, which holds `len` bytes.
///
/// # Safety
/// `buf` is NULL or writable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn nefele_supervisor_id_to_string(
    id: nefele_supervisor_id,
    buf: *mut c_char,
    len: usize,
) -> c_int {
    // SAFETY: forwarded contract.
    guarded(|| unsafe { write_text(&SupervisorId::from(id).to_string(), buf, len) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nefele_api::ids::TenantId;
    use nefele_api::spec::ExitStatus;
    use std::ffi::CStr;

    fn pid(n: u64) -> Pid {
        Pid::new(NodeId(3), Incarnation(1), n)
    }

    #[test]
    fn ids_cross_the_boundary_and_print_as_nef_reads_them() {
        let id = SupervisorId {
            origin: NodeId(u32::MAX),
            incarnation: Incarnation(u32::MAX),
            sequence: u32::MAX,
        };
        let c = nefele_supervisor_id::from(id);
        assert_eq!(SupervisorId::from(c), id);
        let mut buf = [0 as c_char; 34];
        // SAFETY: `buf` holds the lengths given.
        unsafe {
            assert_eq!(
                nefele_supervisor_id_to_string(c, buf.as_mut_ptr(), 8),
                super::super::NEFELE_ERANGE
            );
            assert_eq!(
                nefele_supervisor_id_to_string(c, buf.as_mut_ptr(), buf.len()),
                super::super::NEFELE_OK
            );
            let text = CStr::from_ptr(buf.as_ptr()).to_str().unwrap();
            assert_eq!(text.parse::<SupervisorId>(), Ok(id));
        }
    }

    fn supervision(strategy: c_int, period_ms: u64, policies: &[c_int]) -> nefele_supervision {
        nefele_supervision {
            strategy,
            max_restarts: 3,
            period_ms,
            policies: policies.as_ptr(),
            policy_count: policies.len(),
        }
    }

    #[test]
    fn a_supervision_is_checked_before_it_is_sent() {
        let one = [NEFELE_RESTART_TRANSIENT];
        let two = [NEFELE_RESTART_PERMANENT, NEFELE_RESTART_TEMPORARY];
        // SAFETY: every struct and policy array lives for the call.
        unsafe {
            let ok =
                supervision_of(&supervision(NEFELE_STRATEGY_REST_FOR_ONE, 5000, &two), 2).unwrap();
            assert_eq!(ok.strategy, Strategy::RestForOne);
            assert_eq!(ok.intensity.period, Duration::from_secs(5));
            assert_eq!(
                ok.policies,
                [RestartPolicy::Permanent, RestartPolicy::Temporary]
            );
            assert!(supervision_of(&supervision(NEFELE_STRATEGY_ONE_FOR_ONE, 1, &one), 9).is_ok());
            for (bad, children) in [
                (supervision(7, 1000, &one), 1),
                (supervision(NEFELE_STRATEGY_ONE_FOR_ALL, 0, &one), 1),
                (supervision(NEFELE_STRATEGY_ONE_FOR_ALL, 1000, &[9]), 1),
                (supervision(NEFELE_STRATEGY_ONE_FOR_ALL, 1000, &two), 3),
                (supervision(NEFELE_STRATEGY_ONE_FOR_ALL, 1000, &[]), 1),
            ] {
                assert_eq!(supervision_of(&bad, children), Err(NEFELE_EINVAL));
            }
            assert_eq!(
                supervision_of(std::ptr::null(), 1).unwrap_err(),
                NEFELE_EINVAL
            );
        }
    }

    #[test]
    fn a_listing_crosses_the_boundary_and_is_freed_whole() {
        let info = SupervisorInfo {
            id: SupervisorId {
                origin: NodeId(3),
                incarnation: Incarnation(1),
                sequence: 2,
            },
            home: NodeId(4),
            tenant: TenantId(1),
            strategy: Strategy::OneForAll,
            intensity: Intensity {
                max_restarts: 5,
                period: Duration::from_secs(10),
            },
            state: SupervisorState::Running,
            children: vec![
                ChildInfo {
                    index: 0,
                    pid: Some(pid(9)),
                    policy: RestartPolicy::Permanent,
                    state: ChildState::Running,
                    restarts: 1,
                },
                ChildInfo {
                    index: 1,
                    pid: None,
                    policy: RestartPolicy::Transient,
                    state: ChildState::Ended(ExitStatus::Code(0)),
                    restarts: 0,
                },
            ],
            history: vec![RestartRecord {
                child: 0,
                old: Some(pid(7)),
                new: Some(pid(9)),
                cause: RestartCause::Exited(ExitStatus::Signaled(9)),
                gave_up: false,
            }],
        };
        let (list, n) = leak(vec![supervisor_of(&info)].into_boxed_slice());
        // SAFETY: `list` holds `n` entries made above, freed once below.
        unsafe {
            let s = &*list;
            assert_eq!(SupervisorId::from(s.id), info.id);
            assert_eq!((s.home, s.state), (4, NEFELE_SUPERVISOR_RUNNING));
            assert_eq!(s.strategy, NEFELE_STRATEGY_ONE_FOR_ALL);
            assert_eq!((s.max_restarts, s.period_ms), (5, 10_000));
            let children = std::slice::from_raw_parts(s.children, s.child_count);
            assert_eq!(Pid::from(children[0].pid), pid(9));
            assert_eq!(children[0].has_pid, 1);
            assert_eq!(
                (children[1].has_pid, children[1].state),
                (0, NEFELE_CHILD_ENDED)
            );
            assert_eq!(children[1].policy, NEFELE_RESTART_TRANSIENT);
            let history = std::slice::from_raw_parts(s.history, s.history_count);
            assert_eq!(Pid::from(history[0].old_pid), pid(7));
            assert_eq!(Pid::from(history[0].new_pid), pid(9));
            assert_eq!(history[0].cause, NEFELE_CAUSE_EXITED);
            assert_eq!(history[0].exit, exit_of(ExitStatus::Signaled(9)));
            nefele_supervisors_free(list, n);
            nefele_supervisors_free(std::ptr::null_mut(), 0);
        }
    }

    #[test]
    fn null_arguments_are_refused() {
        let policy = [NEFELE_RESTART_PERMANENT];
        let s = supervision(NEFELE_STRATEGY_ONE_FOR_ONE, 1000, &policy);
        let mut id = nefele_supervisor_id::default();
        let mut pid = nefele_pid::default();
        // SAFETY: NULLs are what is tested; no NULL pointer is dereferenced.
        unsafe {
            assert_eq!(
                nefele_supervise(
                    std::ptr::null_mut(),
                    std::ptr::null(),
                    1,
                    &s,
                    &mut id,
                    &mut pid
                ),
                NEFELE_EINVAL
            );
            assert_eq!(
                nefele_n_supervise(
                    std::ptr::null_mut(),
                    0,
                    std::ptr::null(),
                    &s,
                    &mut id,
                    &mut pid
                ),
                NEFELE_EINVAL
            );
            assert_eq!(
                nefele_stop_supervisor(std::ptr::null_mut(), id),
                NEFELE_EINVAL
            );
            let mut count = 0;
            assert_eq!(
                nefele_supervisors(std::ptr::null_mut(), std::ptr::null_mut(), &mut count),
                NEFELE_EINVAL
            );
        }
    }
}
