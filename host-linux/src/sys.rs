//! The syscall boundary: everything the adapter asks of the kernel about
//! processes and namespaces goes through the [`Sys`] trait, so that the
//! decision logic in [`crate::adapter`] is tested with a recording double
//! (`testing::RecordingSys`, behind the `testing` feature) without root, and the
//! real path ([`RealSys`]) is tested as root.
//!
//! This is the only module with `unsafe` code (fork/clone/exec and a few raw
//! syscalls that neither std nor nix wraps). Invariants it keeps:
//! - after a fork or clone, the child runs only async-signal-safe syscalls on data
//!   prepared before the fork (no allocation, no locks) until it execs or loops;
//! - every process it spawned or tracks has a pidfd, so signals and exit
//!   detection never hit a recycled pid; a pidfd is closed once the process is
//!   reaped or forgotten;
//! - an adopted process (not our child) ends with the status its new parent reaped,
//!   read from its pidfd (`PIDFD_INFO_EXIT`, Linux 6.15+), or `Unknown` where the
//!   kernel cannot tell or its parent does not reap it within [`ADOPTED_REAP_WAIT`];
//! - the calling thread's pid namespace for children is restored after every spawn.
//!
//! Cgroup files are plain files and are handled by [`crate::cgroup`], not here.

use crate::idmap::IdRange;
use crate::rootfs::{MountOp, Rootfs};
use nix::errno::Errno;
use nix::sched::CloneFlags;
use seccompiler::BpfProgram;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, CString};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an adopted process that exited may wait to be reaped by its new parent
/// (the init or subreaper of the agent's pid namespace), which is when the kernel
/// makes its exit status readable through the pidfd, before that status is given
/// up as unknown.
pub const ADOPTED_REAP_WAIT: Duration = Duration::from_secs(1);

/// A syscall (or a step of starting a process) the kernel refused, with its errno.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op} failed: {errno} ({})", errno.desc())]
pub struct SysError {
    /// The syscall or step, e.g. `"setns(CLONE_NEWNET)"` or `"execve"`.
    pub op: Cow<'static, str>,
    /// What the kernel said.
    pub errno: Errno,
}

impl SysError {
    pub(crate) fn new(op: impl Into<Cow<'static, str>>, errno: Errno) -> Self {
        SysError {
            op: op.into(),
            errno,
        }
    }

    fn io(op: impl Into<Cow<'static, str>>, e: &std::io::Error) -> Self {
        SysError::new(op, Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
    }
}

/// Everything needed to start one tenant process, prepared before any fork.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnPlan {
    /// Absolute path of the executable (no NUL bytes).
    pub path: String,
    /// Arguments, `argv[0]` included (never empty, no NUL bytes).
    pub argv: Vec<String>,
    /// Environment as `(key, value)` pairs; nothing else is inherited.
    pub env: Vec<(String, String)>,
    /// The tenant's holder process, whose namespaces the process joins.
    pub holder: i32,
    /// `cgroup.procs` files the process moves itself into before exec.
    pub cgroup_procs: Vec<PathBuf>,
    /// A descriptor (above 2) the process keeps open across exec: its messaging
    /// endpoint (every other descriptor of the agent is close-on-exec).
    pub endpoint: Option<RawFd>,
    /// Where stdout goes (appended).
    pub stdout: PathBuf,
    /// Where stderr goes (appended).
    pub stderr: PathBuf,
}

/// Everything needed to create one tenant's namespaces, prepared before any clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderPlan {
    /// The uts namespace's host name.
    pub hostname: String,
    /// The host ids the tenant's user namespace maps its ids `0..65536` to.
    pub ids: IdRange,
    /// The file system view (its data directory exists and is the tenant's).
    pub rootfs: Rootfs,
}

/// How a reaped process ended, with what `wait4` measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaped {
    /// Still running.
    Running,
    /// Exited with a code.
    Code(i32, Rusage),
    /// Killed by a signal.
    Signaled(i32, Rusage),
    /// Gone, but its status is unknown: adopted after a restart (so not our child)
    /// on a kernel that cannot tell (before 6.15), or not reaped by its new parent
    /// within [`ADOPTED_REAP_WAIT`].
    Unknown,
}

/// Resource use reported by `wait4` (the process and its waited-for descendants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rusage {
    /// User plus system cpu time.
    pub cpu_time: Duration,
    /// Peak resident set size, in bytes.
    pub max_rss_bytes: u64,
}

/// The kernel, as the adapter needs it.
pub trait Sys {
    /// Creates a tenant's namespaces (user mapping its ids to `plan.ids`, pid, mount
    /// with the view of `plan.rootfs`, uts named `plan.hostname`, ipc, net with
    /// loopback up, cgroup) with a holder process as their pid 1, which keeps no
    /// capability once they are ready and listens, for its whole life, on the
    /// tenant's agent socket at [`HOLDER_LISTEN_FD`] ([`crate::agent_socket`]);
    /// returns the holder's pid then.
    fn spawn_holder(&mut self, plan: &HolderPlan) -> Result<i32, SysError>;
    /// Starts a process in the holder's namespaces as `plan` says, as the tenant's
    /// id 0 without any capability, with `no_new_privs`, in its own cgroup
    /// namespace, under the seccomp filter of [`crate::seccomp`]; returns its pid.
    fn spawn(&mut self, plan: &SpawnPlan) -> Result<i32, SysError>;
    /// Starts tracking a process this instance did not spawn (re-adoption), if it is
    /// alive and its start time is still `start_ticks`; returns whether it is.
    fn adopt(&mut self, pid: i32, start_ticks: u64) -> bool;
    /// The start time of `pid` in clock ticks since boot, from /proc (pid-reuse guard).
    fn start_ticks(&self, pid: i32) -> Option<u64>;
    /// Reaps `pid` if it ended, without blocking; forgets it once it has. An adopted
    /// process (not our child) is reported with the status its new parent reaped,
    /// read from its pidfd (kernel 6.15+), so it may stay `Running` for up to
    /// [`ADOPTED_REAP_WAIT`] after it exited.
    fn try_reap(&mut self, pid: i32) -> Reaped;
    /// Delivers `signal` to the tracked process `pid`; a process already gone is fine.
    fn signal(&mut self, pid: i32, signal: i32);
    /// Delivers `signal` to the process group `pgid` and to each of `pids` (tree members
    /// not tracked individually); processes already gone are fine.
    fn signal_tree(&mut self, pgid: i32, pids: &[i32], signal: i32);
    /// Kills and reaps a holder, which ends its tenant's namespaces.
    fn end_holder(&mut self, holder: i32);
    /// Whether the holder `holder` still runs (it ends by itself when the host asks
    /// it to stop, see `holder_init`).
    fn holder_alive(&self, holder: i32) -> bool;
    /// Waits up to `timeout` for tracked processes to end, or for `bell` to turn
    /// readable (it is not read here); returns the processes that ended.
    fn ended(&mut self, timeout: Duration, bell: Option<BorrowedFd<'_>>) -> Vec<i32>;
    /// This boot's id (`/proc/sys/kernel/random/boot_id`): no process of another
    /// boot runs (the state file is kept per boot, [`crate::state`]).
    fn boot_id(&self) -> &str;
    /// A copy of the agent socket the tenant's holder `holder` listens on
    /// ([`crate::agent_socket`]), or `None` where there is none (the recording
    /// double has no holders).
    fn holder_listener(&mut self, holder: i32) -> Option<std::os::unix::net::UnixListener> {
        let _ = holder;
        None
    }
}

/// Where the kernel tells this boot's id.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// The real kernel.
#[derive(Debug)]
pub struct RealSys {
    /// This boot's id, read once.
    boot_id: String,
    /// pidfds of every tracked process (tenant processes and holders).
    pidfds: BTreeMap<i32, OwnedFd>,
    /// Adopted processes that exited but are not yet reaped by their new parent, so
    /// their exit status is not readable yet; with when that was first seen.
    awaiting_reap: BTreeMap<i32, Instant>,
    /// Namespace files of each holder, opened once.
    holder_ns: HashMap<i32, HolderNs>,
    /// This process's own pid namespace, to restore after a spawn.
    own_pid_ns: File,
    /// /dev/null, for the holder's standard streams.
    dev_null: File,
    /// The seccomp filters of tenant processes ([`crate::seccomp`]), compiled once.
    filters: Arc<[BpfProgram; 2]>,
    /// The highest capability number this kernel knows (every one is dropped).
    last_cap: u32,
}

/// The namespace files of one holder, in the order a new process joins them.
#[derive(Debug)]
struct HolderNs {
    pid: File,
    user: File,
    net: File,
    ipc: File,
    uts: File,
    mnt: File,
}

/// Steps a spawned child reports through its status pipe before performing them,
/// so a failure names the step; the index is the step number written.
const CHILD_STEPS: [&str; 14] = [
    "write cgroup.procs",
    "setns(CLONE_NEWUSER)",
    "setns(CLONE_NEWNET)",
    "setns(CLONE_NEWIPC)",
    "setns(CLONE_NEWUTS)",
    "setns(CLONE_NEWNS)",
    "setresgid",
    "setgroups",
    "setresuid",
    "unshare(CLONE_NEWCGROUP)",
    "setsid",
    "drop capabilities",
    "seccomp",
    "execve",
];

/// Steps of holder setup before its file system view (whose steps follow, named by
/// the plan), reported the same way; then [`HOLDER_LAST`], then [`READY`].
const HOLDER_STEPS: [&str; 7] = [
    "wait for the id map; open the data directory",
    "setresgid",
    "setgroups",
    "setresuid",
    "sethostname",
    "ioctl(SIOCSIFFLAGS, lo up)",
    "listen on the agent socket (abstract @nefele-agent)",
];
/// The holder's last step, after its view.
const HOLDER_LAST: &str = "drop the holder's capabilities";
/// Written after a step, then the errno (4 bytes, native order): that step failed.
const FAILED: u16 = 0xfffe;
/// Written once the holder is ready.
const READY: u16 = 0xffff;

/// The user namespace flags of a holder: the user namespace first, so that every
/// other one is owned by it (and the mounts it inherits are locked).
fn holder_clone_flags() -> CloneFlags {
    CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWCGROUP
}

impl RealSys {
    /// Opens the handles the real implementation keeps for its whole life.
    pub fn new() -> Result<Self, SysError> {
        let own_pid_ns = File::open("/proc/self/ns/pid")
            .map_err(|e| SysError::io("open /proc/self/ns/pid", &e))?;
        let dev_null = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| SysError::io("open /dev/null", &e))?;
        let compile = |f: Result<BpfProgram, seccompiler::Error>| {
            f.map_err(|e| {
                tracing::error!(%e, "seccomp filter not compiled");
                SysError::new("compile the seccomp filter", Errno::EINVAL)
            })
        };
        let filters = Arc::new([
            compile(crate::seccomp::tenant_filter())?,
            compile(crate::seccomp::clone3_filter())?,
        ]);
        let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(63);
        let boot_id = std::fs::read_to_string(BOOT_ID)
            .map_err(|e| SysError::io("read the boot id", &e))?
            .trim()
            .to_owned();
        Ok(RealSys {
            boot_id,
            pidfds: BTreeMap::new(),
            awaiting_reap: BTreeMap::new(),
            holder_ns: HashMap::new(),
            own_pid_ns,
            dev_null,
            filters,
            last_cap,
        })
    }

    fn open_holder_ns(holder: i32) -> Result<HolderNs, SysError> {
        let open = |kind: &str| {
            File::open(format!("/proc/{holder}/ns/{kind}"))
                .map_err(|e| SysError::io("open /proc/<holder>/ns", &e))
        };
        Ok(HolderNs {
            pid: open("pid")?,
            user: open("user")?,
            net: open("net")?,
            ipc: open("ipc")?,
            uts: open("uts")?,
            mnt: open("mnt")?,
        })
    }

    fn track(&mut self, pid: i32) -> Result<(), SysError> {
        let fd = pidfd_open(pid)?;
        self.pidfds.insert(pid, fd);
        Ok(())
    }
}

/// Opens a pidfd for `pid`.
fn pidfd_open(pid: i32) -> Result<OwnedFd, SysError> {
    // SAFETY: pidfd_open takes two integers and returns a new fd or -1; we take
    // ownership of the fd only on success.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(SysError::new("pidfd_open", Errno::last()));
    }
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// What a child reported through its status pipe before it exec'ed, failed or
/// became ready.
#[derive(Debug, Default, PartialEq, Eq)]
struct Progress {
    /// The last step it started.
    step: Option<u16>,
    /// Why that step failed, if it said.
    errno: Option<Errno>,
    /// Whether it reported [`READY`].
    ready: bool,
}

/// Reads what a child wrote to its status pipe until the pipe closes.
fn read_progress(mut pipe: File) -> Progress {
    let mut bytes = Vec::new();
    let _ = pipe.read_to_end(&mut bytes);
    let mut p = Progress::default();
    let mut rest = &bytes[..];
    while let [a, b, tail @ ..] = rest {
        rest = tail;
        match u16::from_ne_bytes([*a, *b]) {
            READY => p.ready = true,
            FAILED => {
                if let [e0, e1, e2, e3, ..] = rest {
                    p.errno = Some(Errno::from_raw(i32::from_ne_bytes([*e0, *e1, *e2, *e3])));
                }
                break;
            }
            step => p.step = Some(step),
        }
    }
    p
}

/// Reads the start time (field 22 of `/proc/<pid>/stat`) of `pid`.
pub fn proc_start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

fn pipe_cloexec() -> Result<(File, File), SysError> {
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SysError::new("pipe2", e))?;
    Ok((File::from(r), File::from(w)))
}

/// Writes one step number to the status pipe (async-signal-safe).
fn report_step(fd: RawFd, step: u16) {
    let bytes = step.to_ne_bytes();
    // SAFETY: write(2) on a valid fd with a buffer on the stack.
    unsafe {
        libc::write(fd, bytes.as_ptr().cast(), bytes.len());
    }
}

/// Reports that the last step failed with the current errno (async-signal-safe).
fn report_failure(fd: RawFd) {
    let errno = Errno::last_raw();
    let mut bytes = [0u8; 6];
    bytes[..2].copy_from_slice(&FAILED.to_ne_bytes());
    bytes[2..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: write(2) on a valid fd with a buffer on the stack.
    unsafe {
        libc::write(fd, bytes.as_ptr().cast(), bytes.len());
    }
}

/// `struct __user_cap_header_struct` of capset(2).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct` of capset(2).
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit capability sets, two `CapData`.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
/// Securebits: root (id 0) gains nothing on exec, id changes do not touch
/// capabilities, ambient capabilities cannot be raised; each locked.
const SECUREBITS_LOCKED_NOROOT: libc::c_ulong = 0b1110_1111;

/// Gives up every capability for good (async-signal-safe): locked securebits,
/// an empty bounding set, no ambient capability, and empty effective, permitted
/// and inheritable sets.
fn drop_capabilities(last_cap: u32) -> bool {
    // SAFETY: prctl and capset with integer arguments and pointers to live locals.
    unsafe {
        if libc::prctl(libc::PR_SET_SECUREBITS, SECUREBITS_LOCKED_NOROOT, 0, 0, 0) != 0 {
            return false;
        }
        for cap in 0..=last_cap {
            if libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) != 0
                && Errno::last() != Errno::EINVAL
            {
                return false;
            }
        }
        if libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return false;
        }
        let header = CapHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        let none = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        libc::syscall(libc::SYS_capset, &header, none.as_ptr()) == 0
    }
}

/// Becomes the tenant's id 0 (gid, no supplementary groups, uid), which the user
/// namespace maps to the tenant's first host id (async-signal-safe); reports each
/// step from `first`; returns whether all went well.
///
/// Raw system calls, not glibc's wrappers: those make every thread of the process
/// change ids too (nptl's setxid broadcast), walking the thread list this child
/// copied from the agent at `clone`. A thread the agent was creating at that moment
/// stays "being created" in the copy forever, and the wrapper waited for it: the
/// child hung (seen in CI in the escape test).
fn become_tenant_root(status_fd: RawFd, first: u16) -> bool {
    // SAFETY: setresgid/setgroups/setresuid with integer arguments and no pointer
    // (setgroups with an empty list); raw calls touch no memory of the process.
    unsafe {
        report_step(status_fd, first);
        if libc::syscall(libc::SYS_setresgid, 0, 0, 0) != 0 {
            return false;
        }
        report_step(status_fd, first + 1);
        if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0 {
            return false;
        }
        report_step(status_fd, first + 2);
        libc::syscall(libc::SYS_setresuid, 0, 0, 0) == 0
    }
}

/// Carries out one step of a file system view (async-signal-safe: the strings were
/// prepared before the clone); `data_src` is the path of the data directory's fd.
fn apply_mount_op(op: &MountOp, data_src: &CStr) -> bool {
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is null or a NUL-terminated string that lives for the
    // call; the calls take no other memory.
    unsafe {
        match op {
            MountOp::Mount {
                src,
                dst,
                fstype,
                flags,
                data,
            } => {
                libc::mount(
                    ptr(src),
                    dst.as_ptr(),
                    ptr(fstype),
                    *flags,
                    ptr(data).cast(),
                ) == 0
            }
            MountOp::BindData { dst } => {
                let flags = libc::MS_BIND | libc::MS_REC;
                libc::mount(
                    data_src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    flags,
                    std::ptr::null(),
                ) == 0
            }
            MountOp::Mkdir(path) => libc::mkdir(path.as_ptr(), 0o755) == 0,
            MountOp::Touch(path, mode) => {
                let fd = libc::open(
                    path.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    *mode,
                );
                fd >= 0 && libc::close(fd) == 0
            }
            MountOp::Symlink { target, link } => libc::symlink(target.as_ptr(), link.as_ptr()) == 0,
            MountOp::Pivot(stage) => {
                let here = c".";
                libc::chdir(stage.as_ptr()) == 0
                    && libc::syscall(libc::SYS_pivot_root, here.as_ptr(), here.as_ptr()) == 0
                    && libc::umount2(here.as_ptr(), libc::MNT_DETACH) == 0
                    && libc::chdir(c"/".as_ptr()) == 0
            }
        }
    }
}

/// What the holder needs, prepared before the clone.
struct HolderArgs {
    status_fd: RawFd,
    go_fd: RawFd,
    null_fd: RawFd,
    hostname: Vec<u8>,
    ops: Vec<MountOp>,
    data_dir: CString,
    last_cap: u32,
}

/// Holder body, run in the cloned child: async-signal-safe syscalls only.
fn holder_main(a: &HolderArgs) -> isize {
    let fd = a.status_fd;
    let fail = || -> isize {
        report_failure(fd);
        1
    };
    report_step(fd, 0);
    let mut go = 0u8;
    // SAFETY: read(2) of one byte into a local.
    if unsafe { libc::read(a.go_fd, (&mut go as *mut u8).cast(), 1) } != 1 {
        return fail();
    }
    // Opened while this process is still the host's id 0 (unmapped here), which may
    // search the agent's data directory; bound later through /proc/self/fd. It is
    // opened in this mount namespace, as a bind mount's source must be.
    // SAFETY: open(2) of a NUL-terminated path.
    let data_fd = unsafe {
        libc::open(
            a.data_dir.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if data_fd < 0 {
        return fail();
    }
    let mut buf = [0u8; 32];
    let data_src = fd_path(data_fd, &mut buf);
    if !become_tenant_root(fd, 1) {
        return fail();
    }
    report_step(fd, 4);
    // SAFETY: sethostname with a pointer/length pair into a live slice.
    if unsafe { libc::sethostname(a.hostname.as_ptr().cast(), a.hostname.len()) } != 0 {
        return fail();
    }
    report_step(fd, 5);
    if !loopback_up() {
        return fail();
    }
    report_step(fd, 6);
    let listener = agent_listen();
    if listener < 0 {
        return fail();
    }
    let first = HOLDER_STEPS.len() as u16;
    for (i, op) in a.ops.iter().enumerate() {
        report_step(fd, first + i as u16);
        if !apply_mount_op(op, data_src) {
            return fail();
        }
    }
    report_step(fd, first + a.ops.len() as u16);
    // Nothing of the tenant may read or drive its pid 1: not dumpable, no capability.
    // SAFETY: prctl with integer arguments.
    let private = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } == 0
        // SAFETY: as above.
        && unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } == 0;
    if !private || !drop_capabilities(a.last_cap) {
        return fail();
    }
    // SAFETY: dup2/close_range on fds this process owns; nothing in this process
    // uses the closed fds afterwards.
    unsafe {
        libc::dup2(a.null_fd, 0);
        libc::dup2(a.null_fd, 1);
        libc::dup2(a.null_fd, 2);
        report_step(fd, READY);
        // The agent socket stays open at a known number, for the agents to come
        // (`holder_listener`); every other descriptor goes.
        libc::dup2(listener, HOLDER_LISTEN_FD);
        libc::close_range(HOLDER_LISTEN_FD as u32 + 1, u32::MAX, 0);
    }
    // Pid 1 of the tenant: reap orphans until the adapter kills it, or the host
    // asks it to stop.
    crate::holder_init::run()
}

/// The descriptor at which a holder keeps its agent socket.
pub const HOLDER_LISTEN_FD: RawFd = 3;

/// A Unix stream socket bound to the abstract name
/// [`crate::agent_socket::AGENT_SOCKET`] in the current network namespace and
/// listening; -1 if any step failed (async-signal-safe).
fn agent_listen() -> RawFd {
    let name = crate::agent_socket::AGENT_SOCKET.as_bytes();
    // SAFETY: socket/bind/listen on a zeroed sockaddr_un on the stack, whose path
    // (a NUL, then the name) fits (checked by the assertion on the name's length).
    unsafe {
        let sock = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return -1;
        }
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (i, b) in name.iter().enumerate() {
            addr.sun_path[1 + i] = *b as libc::c_char;
        }
        let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
        let bound = libc::bind(
            sock,
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        ) == 0;
        if !bound || libc::listen(sock, crate::agent_socket::BACKLOG) != 0 {
            libc::close(sock);
            return -1;
        }
        sock
    }
}

/// A copy of the agent socket held by `holder` (its descriptor
/// [`HOLDER_LISTEN_FD`], which the holder sets right after it reports ready: so
/// this retries for a short while), checked to be that socket.
pub fn holder_listener(holder: i32) -> Result<std::os::unix::net::UnixListener, SysError> {
    use std::os::linux::net::SocketAddrExt;
    let pidfd = pidfd_open(holder)?;
    let mut last = Errno::ENOTSOCK;
    for _ in 0..200 {
        // SAFETY: pidfd_getfd takes a pidfd we own and two integers; it returns a
        // new descriptor (close-on-exec) that we own on success.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_pidfd_getfd,
                pidfd.as_raw_fd(),
                HOLDER_LISTEN_FD,
                0,
            )
        };
        if fd < 0 {
            last = Errno::last();
        } else {
            // SAFETY: the kernel just returned this descriptor; nothing else owns it.
            let owned = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
            let listener = std::os::unix::net::UnixListener::from(owned);
            let name = crate::agent_socket::AGENT_SOCKET.as_bytes();
            if listener
                .local_addr()
                .is_ok_and(|a| a.as_abstract_name() == Some(name))
            {
                return Ok(listener);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Err(SysError::new(
        "pidfd_getfd(the holder's agent socket)",
        last,
    ))
}

/// A pidfd of the process at the other end of `stream`, as it was when it
/// connected (`SO_PEERPIDFD`, Linux 6.5+): it never names another process.
pub fn peer_pidfd(stream: &impl AsRawFd) -> Result<OwnedFd, SysError> {
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the int on the stack.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERPIDFD,
            (&mut fd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r != 0 || fd < 0 {
        return Err(SysError::new("getsockopt(SO_PEERPIDFD)", Errno::last()));
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The pid (in this agent's pid namespace) of the process `pidfd` refers to, while
/// it runs; `None` once it has ended (its fdinfo says -1).
pub fn pidfd_pid(pidfd: &OwnedFd) -> Option<i32> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse::<i32>().ok())
        .filter(|&p| p > 0)
}

/// Sets the loopback interface of the current network namespace up.
fn loopback_up() -> bool {
    // SAFETY: socket/ioctl/close on a zeroed, correctly sized ifreq on the stack.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return false;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        let mut ok = libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) == 0;
        if ok {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            ok = libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) == 0;
        }
        libc::close(sock);
        ok
    }
}

/// Kills and reaps a holder that did not become ready.
fn abandon_holder(pid: i32) {
    let mut status = 0;
    // SAFETY: kill and waitpid on our own child, with a valid status pointer.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, &mut status, 0);
    }
}

/// Gives the tenant's data directory to its id 0 (mode 0700), so that the
/// tenant, and no other, may use it.
fn own_data_dir(dir: &std::path::Path, ids: IdRange) -> Result<(), SysError> {
    std::os::unix::fs::chown(dir, Some(ids.base), Some(ids.base))
        .map_err(|e| SysError::io("chown the tenant's data directory", &e))?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(|e| SysError::io("chmod the tenant's data directory", &e))
}

/// `/proc/self/fd/<fd>` as a NUL-terminated string in `buf` (async-signal-safe).
fn fd_path(fd: RawFd, buf: &mut [u8; 32]) -> &CStr {
    let prefix = b"/proc/self/fd/";
    buf[..prefix.len()].copy_from_slice(prefix);
    let mut digits = [0u8; 10];
    let (mut n, mut len) = (fd.unsigned_abs(), 0);
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[prefix.len() + i] = digits[len - 1 - i];
    }
    buf[prefix.len() + len] = 0;
    CStr::from_bytes_until_nul(&buf[..]).unwrap_or(c"/")
}

impl Sys for RealSys {
    fn boot_id(&self) -> &str {
        &self.boot_id
    }

    fn holder_listener(&mut self, holder: i32) -> Option<std::os::unix::net::UnixListener> {
        holder_listener(holder)
            .inspect_err(|e| tracing::warn!(holder, error = %e, "no agent socket from the holder"))
            .ok()
    }

    fn spawn_holder(&mut self, plan: &HolderPlan) -> Result<i32, SysError> {
        own_data_dir(&plan.rootfs.data_dir, plan.ids)?;
        let (status_r, status_w) = pipe_cloexec()?;
        let (go_r, mut go_w) = pipe_cloexec()?;
        let args = HolderArgs {
            status_fd: status_w.as_raw_fd(),
            go_fd: go_r.as_raw_fd(),
            null_fd: self.dev_null.as_raw_fd(),
            hostname: plan.hostname.as_bytes().to_vec(),
            ops: plan.rootfs.ops.clone(),
            data_dir: CString::new(plan.rootfs.data_dir.as_os_str().as_encoded_bytes())
                .map_err(|_| SysError::new("the data directory's path", Errno::EINVAL))?,
            last_cap: self.last_cap,
        };
        let mut stack = vec![0u8; 256 * 1024];
        let body = Box::new(|| holder_main(&args));
        // SAFETY: the child gets a copy of this address space (no CLONE_VM) and runs
        // `holder_main`, which only makes async-signal-safe syscalls on data prepared
        // above; it never returns to Rust code of the parent's threads.
        let pid = unsafe {
            nix::sched::clone(body, &mut stack, holder_clone_flags(), Some(libc::SIGCHLD))
        }
        .map_err(|e| {
            SysError::new(
                "clone(CLONE_NEWUSER|NEWPID|NEWNS|NEWUTS|NEWIPC|NEWNET|NEWCGROUP)",
                e,
            )
        })?
        .as_raw();
        drop(status_w);
        drop(go_r);
        let line = plan.ids.map_line();
        let mapped = ["uid_map", "gid_map"].iter().try_for_each(|file| {
            std::fs::write(format!("/proc/{pid}/{file}"), &line)
                .map_err(|e| SysError::io("write the user namespace's id map", &e))
        });
        let go = mapped.and_then(|()| {
            go_w.write_all(&[1])
                .map_err(|e| SysError::io("start the holder", &e))
        });
        drop(go_w);
        if let Err(e) = go {
            abandon_holder(pid);
            return Err(e);
        }
        let progress = read_progress(status_r);
        if !progress.ready {
            abandon_holder(pid);
            let first = HOLDER_STEPS.len();
            let op = progress.step.map(usize::from).map(|s| match s {
                s if s < first => Cow::Borrowed(HOLDER_STEPS[s]),
                s if s - first < plan.rootfs.names.len() => {
                    Cow::Owned(plan.rootfs.names[s - first].clone())
                }
                _ => Cow::Borrowed(HOLDER_LAST),
            });
            return Err(SysError::new(
                op.unwrap_or(Cow::Borrowed("holder setup")),
                progress.errno.unwrap_or(Errno::EPERM),
            ));
        }
        let ns = RealSys::open_holder_ns(pid).and_then(|ns| self.track(pid).map(|()| ns));
        match ns {
            Ok(ns) => {
                self.holder_ns.insert(pid, ns);
                Ok(pid)
            }
            Err(e) => {
                self.end_holder(pid);
                Err(e)
            }
        }
    }

    fn spawn(&mut self, plan: &SpawnPlan) -> Result<i32, SysError> {
        let ns = match self.holder_ns.entry(plan.holder) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(RealSys::open_holder_ns(plan.holder)?)
            }
        };
        let ns = &*ns;
        // An existing file (a spare the adapter placed) is opened without O_CREAT,
        // which would take the directory's lock.
        let open_log = |path: &PathBuf| {
            let existing = OpenOptions::new().append(true).open(path);
            match existing {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o640)
                    .open(path),
                other => other,
            }
            .map_err(|e| SysError::io("open log file", &e))
        };
        let (stdout, stderr) = (open_log(&plan.stdout)?, open_log(&plan.stderr)?);
        let mut cgroup_fds = Vec::with_capacity(plan.cgroup_procs.len());
        for path in &plan.cgroup_procs {
            let file = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(path)
                .map_err(|e| SysError::io("open cgroup.procs", &e))?;
            cgroup_fds.push(file);
        }
        let raw_cgroups: Vec<RawFd> = cgroup_fds.iter().map(AsRawFd::as_raw_fd).collect();
        let joins: [(RawFd, CloneFlags); 5] = [
            (ns.user.as_raw_fd(), CloneFlags::CLONE_NEWUSER),
            (ns.net.as_raw_fd(), CloneFlags::CLONE_NEWNET),
            (ns.ipc.as_raw_fd(), CloneFlags::CLONE_NEWIPC),
            (ns.uts.as_raw_fd(), CloneFlags::CLONE_NEWUTS),
            (ns.mnt.as_raw_fd(), CloneFlags::CLONE_NEWNS),
        ];
        let (status_r, status_w) = pipe_cloexec()?;
        let status_fd = status_w.as_raw_fd();
        let last_cap = self.last_cap;
        let filters = Arc::clone(&self.filters);
        let endpoint = plan.endpoint;

        let (arg0, args) = plan
            .argv
            .split_first()
            .map_or((plan.path.as_str(), &[][..]), |(a, rest)| {
                (a.as_str(), rest)
            });
        let mut command = Command::new(&plan.path);
        command
            .arg0(arg0)
            .args(args)
            .env_clear()
            .envs(plan.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        // SAFETY: the closure runs in the forked child and makes only async-signal-safe
        // syscalls on fds and data prepared above; it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                let failed = || Err(std::io::Error::last_os_error());
                report_step(status_fd, 0);
                for &fd in &raw_cgroups {
                    if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return failed();
                    }
                }
                for (i, &(fd, kind)) in joins.iter().enumerate() {
                    report_step(status_fd, (i + 1) as u16);
                    if libc::setns(fd, kind.bits()) != 0 {
                        return failed();
                    }
                }
                if !become_tenant_root(status_fd, 6) {
                    return failed();
                }
                report_step(status_fd, 9);
                if libc::unshare(libc::CLONE_NEWCGROUP) != 0 {
                    return failed();
                }
                report_step(status_fd, 10);
                if libc::setsid() < 0 {
                    return failed();
                }
                report_step(status_fd, 11);
                if !drop_capabilities(last_cap) {
                    return failed();
                }
                report_step(status_fd, 12);
                for filter in filters.iter() {
                    // Sets no_new_privs first, then installs the filter.
                    if let Err(e) = seccompiler::apply_filter(filter) {
                        return Err(match e {
                            seccompiler::Error::Prctl(e) | seccompiler::Error::Seccomp(e) => e,
                            _ => std::io::Error::from_raw_os_error(libc::EINVAL),
                        });
                    }
                }
                report_step(status_fd, 13);
                // The endpoint survives exec: clear its close-on-exec flag.
                if let Some(fd) = endpoint {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return failed();
                    }
                }
                Ok(())
            });
        }
        // The child must be born in the tenant's pid namespace: switch this thread's
        // namespace for children, fork, and switch back whatever happened.
        nix::sched::setns(ns.pid.as_fd(), CloneFlags::CLONE_NEWPID)
            .map_err(|e| SysError::new("setns(CLONE_NEWPID)", e))?;
        let spawned = command.spawn();
        let restored = nix::sched::setns(self.own_pid_ns.as_fd(), CloneFlags::CLONE_NEWPID);
        drop(command);
        drop(status_w);
        drop(cgroup_fds);
        let progress = read_progress(status_r);
        restored.map_err(|e| SysError::new("setns(CLONE_NEWPID) back", e))?;
        let child = spawned.map_err(|e| {
            let op = progress
                .step
                .and_then(|s| CHILD_STEPS.get(usize::from(s)))
                .copied();
            SysError::io(op.unwrap_or("fork"), &e)
        })?;
        let pid = child.id() as i32;
        if let Err(e) = self.track(pid) {
            // Cannot happen for a child we have not reaped; do not leave it behind.
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            return Err(e);
        }
        Ok(pid)
    }

    fn adopt(&mut self, pid: i32, start_ticks: u64) -> bool {
        if proc_start_ticks(pid) != Some(start_ticks) {
            return false;
        }
        let Ok(fd) = pidfd_open(pid) else {
            return false;
        };
        // Re-check after opening: the pidfd now pins the process we checked.
        if proc_start_ticks(pid) != Some(start_ticks) {
            return false;
        }
        self.pidfds.insert(pid, fd);
        true
    }

    fn start_ticks(&self, pid: i32) -> Option<u64> {
        proc_start_ticks(pid)
    }

    fn try_reap(&mut self, pid: i32) -> Reaped {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 with valid pointers to locals.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        let reaped = if r == 0 {
            Reaped::Running
        } else if r == pid {
            let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
            let rusage = Rusage {
                cpu_time: tv(usage.ru_utime) + tv(usage.ru_stime),
                max_rss_bytes: (usage.ru_maxrss as u64).saturating_mul(1024),
            };
            Reaped::from_wait_status(status, rusage)
        } else {
            self.reap_adopted(pid)
        };
        if reaped != Reaped::Running {
            self.pidfds.remove(&pid);
            self.awaiting_reap.remove(&pid);
        }
        reaped
    }

    fn signal(&mut self, pid: i32, signal: i32) {
        if let Some(fd) = self.pidfds.get(&pid) {
            // SAFETY: pidfd_send_signal on a pidfd we own, with no siginfo.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    signal,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
        }
    }

    fn signal_tree(&mut self, pgid: i32, pids: &[i32], signal: i32) {
        // SAFETY: kill(2) has no memory arguments.
        unsafe {
            if pgid > 1 {
                libc::kill(-pgid, signal);
            }
            for &pid in pids.iter().filter(|&&p| p > 1) {
                libc::kill(pid, signal);
            }
        }
    }

    fn end_holder(&mut self, holder: i32) {
        self.signal(holder, libc::SIGKILL);
        self.holder_ns.remove(&holder);
        if let Some(fd) = self.pidfds.remove(&holder) {
            let mut status = 0;
            // SAFETY: reaping with a valid status pointer; ECHILD (an adopted holder
            // that is not our child) is fine, init reaps it.
            if unsafe { libc::waitpid(holder, &mut status, 0) } < 0 {
                // Bounded: the holder was SIGKILLed; give it up to one second to go.
                pidfd_poll(&fd, 1000);
            }
        }
    }

    fn holder_alive(&self, holder: i32) -> bool {
        // A pidfd turns readable when its process ends (reaped or not).
        self.pidfds
            .get(&holder)
            .is_some_and(|fd| pidfd_poll(fd, 0) & libc::POLLIN == 0)
    }

    fn ended(&mut self, timeout: Duration, bell: Option<BorrowedFd<'_>>) -> Vec<i32> {
        let holders: std::collections::HashSet<i32> = self.holder_ns.keys().copied().collect();
        let tracked: Vec<(i32, &OwnedFd)> = self
            .pidfds
            .iter()
            .filter(|(pid, _)| !holders.contains(pid))
            .map(|(&pid, fd)| (pid, fd))
            .collect();
        // A process awaiting its reaping stays readable (POLLIN); polled for nothing,
        // only the POLLHUP of its reaping wakes it.
        let mut polls: Vec<libc::pollfd> = tracked
            .iter()
            .map(|(pid, fd)| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: if self.awaiting_reap.contains_key(pid) {
                    0
                } else {
                    libc::POLLIN
                },
                revents: 0,
            })
            .collect();
        // ...or its wait running out, which `try_reap` then reports as unknown.
        let now = Instant::now();
        let give_up = self
            .awaiting_reap
            .values()
            .map(|&since| since + ADOPTED_REAP_WAIT);
        let timeout = give_up
            .min()
            .map_or(timeout, |t| timeout.min(t.saturating_duration_since(now)));
        // Rounded up: a wait of less than a millisecond still sleeps, rather than
        // poll at once again and again until its deadline.
        let ms = timeout.as_nanos().div_ceil(1_000_000);
        let ms = i32::try_from(ms).unwrap_or(i32::MAX);
        polls.extend(bell.map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }));
        // SAFETY: poll over a live, correctly sized array of pollfd.
        let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, ms) };
        let now = Instant::now();
        tracked
            .iter()
            .zip(&polls)
            .filter(|((pid, _), p)| {
                (n > 0 && p.revents != 0)
                    || self
                        .awaiting_reap
                        .get(pid)
                        .is_some_and(|&since| since + ADOPTED_REAP_WAIT <= now)
            })
            .map(|((pid, _), _)| *pid)
            .collect()
    }
}

impl RealSys {
    /// Reaps an adopted process, which is not our child: once its pidfd says it
    /// exited, reads the status its new parent reaped from the pidfd, waiting (up to
    /// [`ADOPTED_REAP_WAIT`]) for that parent to reap it if it has not yet.
    fn reap_adopted(&mut self, pid: i32) -> Reaped {
        let Some(fd) = self.pidfds.get(&pid) else {
            return Reaped::Unknown;
        };
        let revents = pidfd_poll(fd, 0);
        if revents & (libc::POLLIN | libc::POLLHUP) == 0 {
            return Reaped::Running;
        }
        let reaped_by_parent = revents & libc::POLLHUP != 0;
        match pidfd_exit_info(fd) {
            ExitInfo::Status(status) => Reaped::from_wait_status(status, Rusage::default()),
            ExitInfo::Unsupported => Reaped::Unknown,
            // Reaped, yet no status: the kernel does not keep it.
            ExitInfo::NotReaped if reaped_by_parent => Reaped::Unknown,
            ExitInfo::NotReaped => {
                let since = *self.awaiting_reap.entry(pid).or_insert_with(Instant::now);
                if since.elapsed() >= ADOPTED_REAP_WAIT {
                    tracing::debug!(pid, "adopted process not reaped by its parent in time");
                    Reaped::Unknown
                } else {
                    Reaped::Running
                }
            }
        }
    }
}

impl Reaped {
    /// Decodes a wait status (as `wait4` or `PIDFD_INFO_EXIT` give it).
    pub fn from_wait_status(status: i32, rusage: Rusage) -> Reaped {
        if libc::WIFSIGNALED(status) {
            Reaped::Signaled(libc::WTERMSIG(status), rusage)
        } else {
            Reaped::Code(libc::WEXITSTATUS(status), rusage)
        }
    }
}

/// What a pidfd tells about how its process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExitInfo {
    /// The wait status its parent reaped.
    Status(i32),
    /// Nothing yet: the process runs, or exited and awaits its parent's reaping.
    NotReaped,
    /// This kernel does not report exit status through pidfds (before 6.15).
    Unsupported,
}

/// Asks the kernel (`PIDFD_GET_INFO` with `PIDFD_INFO_EXIT`, Linux 6.15+) how the
/// process of `fd` ended.
///
/// A read that races with the reaping fails with `ESRCH` even where the kernel
/// keeps the status: it found the process before its reaping and its pid gone
/// during it. Once the pidfd says the reaping is done, a second read cannot race,
/// so only its failure means the kernel keeps no status.
fn pidfd_exit_info(fd: &OwnedFd) -> ExitInfo {
    match pidfd_get_exit_info(fd) {
        Err(Errno::ESRCH) if pidfd_poll(fd, 0) & libc::POLLHUP != 0 => {
            pidfd_get_exit_info(fd).unwrap_or(ExitInfo::Unsupported)
        }
        // ENOTTY/EINVAL: no PIDFD_GET_INFO (before 6.13); ESRCH: reaped, and the
        // kernel keeps no exit status (6.13, 6.14), or not in our pid namespace.
        Err(_) => ExitInfo::Unsupported,
        Ok(info) => info,
    }
}

/// One `PIDFD_GET_INFO` read of the exit status of `fd`'s process.
fn pidfd_get_exit_info(fd: &OwnedFd) -> Result<ExitInfo, Errno> {
    // SAFETY: pidfd_info is plain integers; all-zero is a valid value.
    let mut info: libc::pidfd_info = unsafe { std::mem::zeroed() };
    info.mask = u64::from(libc::PIDFD_INFO_EXIT);
    // SAFETY: PIDFD_GET_INFO reads and writes at most size_of::<pidfd_info>() bytes
    // (encoded in the request) of the live struct we pass.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::PIDFD_GET_INFO, &mut info) };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(if info.mask & u64::from(libc::PIDFD_INFO_EXIT) != 0 {
        ExitInfo::Status(info.exit_code)
    } else {
        ExitInfo::NotReaped
    })
}

/// The events on `fd` (a pidfd), waiting up to `ms` for one: `POLLIN` once its
/// process exited, `POLLHUP` too once it was reaped; 0 if none came.
fn pidfd_poll(fd: &OwnedFd, ms: i32) -> libc::c_short {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll over one live pollfd.
    if unsafe { libc::poll(&mut p, 1, ms) } > 0 {
        p.revents
    } else {
        0
    }
}

/// Whether this kernel reports the exit status of a process that is not our child
/// through its pidfd once it is reaped (`PIDFD_INFO_EXIT`, Linux 6.15+), so that
/// re-adopted processes end with their real status rather than `Unknown`. Probes by
/// running `/bin/true`.
pub fn adopted_exit_status_supported() -> bool {
    let Ok(mut child) = Command::new("/bin/true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let fd = pidfd_open(child.id() as i32);
    let _ = child.wait();
    fd.is_ok_and(|fd| pidfd_exit_info(&fd) == ExitInfo::Status(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Doorbell;

    /// `poll` counts whole milliseconds: a wait of 300 µs, cut down to 0 ms,
    /// returned at once, so a thread waiting for a deadline less than a
    /// millisecond away spun on `poll` until it passed.
    #[test]
    fn a_wait_lasts_its_timeout_even_under_a_millisecond_or_ends_at_the_doorbell() {
        let mut sys = RealSys::new().unwrap();
        let bell = Doorbell::new().unwrap();
        let wait = Duration::from_micros(300);
        let started = Instant::now();
        assert!(sys.ended(wait, Some(bell.as_fd())).is_empty());
        assert!(
            started.elapsed() >= wait,
            "woke after {:?}",
            started.elapsed()
        );
        bell.ring();
        assert!(sys
            .ended(Duration::from_secs(3600), Some(bell.as_fd()))
            .is_empty());
    }

    /// An adopted process's new parent reaps it whenever it likes, often while the
    /// adapter reads its status. A read racing with the reaping failed with ESRCH,
    /// which was taken for a kernel that keeps no status, and the process was
    /// reported lost (about half of such reads, here).
    #[test]
    fn a_status_read_while_another_reaps_the_process_is_not_lost() {
        if !nefele_test_support::machine_has(
            adopted_exit_status_supported(),
            "a kernel that reports exit status through pidfds (PIDFD_INFO_EXIT, Linux 6.15+)",
        ) {
            return;
        }
        for _ in 0..500 {
            let mut child = Command::new("/bin/sh")
                .args(["-c", "kill -TERM $$"])
                .spawn()
                .unwrap();
            let fd = pidfd_open(child.id() as i32).unwrap();
            let reaper = std::thread::spawn(move || child.wait().unwrap());
            let info = loop {
                match pidfd_exit_info(&fd) {
                    ExitInfo::NotReaped => std::hint::spin_loop(),
                    info => break info,
                }
            };
            reaper.join().unwrap();
            assert_eq!(info, ExitInfo::Status(libc::SIGTERM));
        }
    }
}
