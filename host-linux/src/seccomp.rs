//! The seccomp filter every tenant process runs under, compiled once with
//! `seccompiler` (rust-vmm's pure-Rust BPF compiler, the one Firecracker uses) and
//! installed by the process itself just before it execs (see [`crate::sys`]).
//!
//! It is a deny list: a tenant runs arbitrary programs, so everything an ordinary
//! program uses is allowed, and what follows fails with `EPERM` (`clone3` with
//! `ENOSYS`). Each entry is something a tenant process never needs, that reaches
//! the kernel's most exposed code, or that would let it act outside its own
//! namespaces if another layer failed. The filter is the second line: the process
//! already has no capability (in any user namespace) and `no_new_privs`, so most of
//! these would fail anyway; the filter makes that hold even against a kernel bug
//! in a capability check, and removes the attack surface of the calls themselves.
//!
//! | syscalls | why denied |
//! | --- | --- |
//! | `init_module`, `finit_module`, `delete_module` | loading or unloading kernel code |
//! | `kexec_load`, `kexec_file_load`, `reboot` | replacing or stopping the host's kernel |
//! | `bpf` | kernel programs and maps: a large attack surface, and observation of the host |
//! | `perf_event_open` | hardware and kernel events of other processes; frequent exploit vector |
//! | `add_key`, `request_key`, `keyctl` | kernel keyrings are not namespaced: other users' keys |
//! | `mount`, `umount2`, `pivot_root`, `move_mount`, `open_tree`, `fsopen`, `fsconfig`, `fsmount`, `fspick`, `mount_setattr` | the view of the file system is set up by the agent and fixed afterwards |
//! | `ptrace`, `process_vm_readv`, `process_vm_writev`, `kcmp`, `pidfd_getfd` | reading or changing another process's memory, files or registers |
//! | `swapon`, `swapoff` | the host's swap |
//! | `settimeofday`, `clock_settime`, `clock_adjtime`, `adjtimex` | the host's clock (time is not namespaced for writing) |
//! | `setns`; `unshare` and `clone` with a namespace flag; `clone3` (`ENOSYS`, so libc falls back to `clone`, whose flags the filter can read) | leaving or re-creating namespaces: a nested user namespace would give back every capability inside it |
//! | `open_by_handle_at`, `name_to_handle_at` | opening files by handle bypasses the mount view (the "shocker" escape) |
//! | `acct`, `quotactl`, `quotactl_fd`, `syslog`, `vhangup`, `lookup_dcookie`, `nfsservctl`, `uselib` | host-wide accounting, quotas, the kernel log, terminals, obsolete calls |
//! | `userfaultfd` | lets a process stall the kernel at will; a classic exploit primitive |
//! | `io_uring_setup`, `io_uring_enter`, `io_uring_register` | runs syscalls outside this filter; many kernel bugs |
//! | `iopl`, `ioperm` (x86) | direct hardware port access |
//! | `_sysctl` (x86) | the obsolete sysctl interface |

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};
use std::collections::BTreeMap;

/// Namespace flags that `clone` and `unshare` may not carry.
const NAMESPACE_FLAGS: [libc::c_int; 7] = [
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWNS,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWCGROUP,
];

/// Syscalls denied whatever their arguments (see the module doc for why).
fn denied() -> Vec<libc::c_long> {
    let mut list = vec![
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_reboot,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_keyctl,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_kcmp,
        libc::SYS_pidfd_getfd,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_setns,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_acct,
        libc::SYS_quotactl,
        libc::SYS_quotactl_fd,
        libc::SYS_syslog,
        libc::SYS_vhangup,
        libc::SYS_lookup_dcookie,
        libc::SYS_nfsservctl,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
    ];
    #[cfg(target_arch = "x86_64")]
    list.extend([
        libc::SYS_iopl,
        libc::SYS_ioperm,
        libc::SYS__sysctl,
        libc::SYS_uselib,
    ]);
    list
}

/// Rules matching a call whose first argument (flags) carries any namespace flag.
fn with_namespace_flag() -> Vec<SeccompRule> {
    NAMESPACE_FLAGS
        .iter()
        .map(|&flag| {
            let flag = flag as u64;
            let cond = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .expect("a valid condition");
            SeccompRule::new(vec![cond]).expect("a valid rule")
        })
        .collect()
}

/// The compiled filter for this machine's architecture.
pub fn tenant_filter() -> Result<BpfProgram, seccompiler::Error> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        denied().into_iter().map(|nr| (nr, Vec::new())).collect();
    rules.insert(libc::SYS_unshare, with_namespace_flag());
    rules.insert(libc::SYS_clone, with_namespace_flag());
    failing_with(rules, libc::EPERM)
}

/// A second filter, installed with [`tenant_filter`]: `clone3` fails with `ENOSYS`.
/// Its flags are in memory the filter cannot read, so it is refused as
/// unimplemented and libc falls back to `clone`, whose flags [`tenant_filter`] checks.
/// (One filter has one action on match; the kernel runs both and keeps the strictest answer.)
pub fn clone3_filter() -> Result<BpfProgram, seccompiler::Error> {
    failing_with([(libc::SYS_clone3, Vec::new())].into(), libc::ENOSYS)
}

/// A filter for this machine's architecture that fails the calls `rules` match
/// with `errno` and allows every other.
fn failing_with(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    errno: libc::c_int,
) -> Result<BpfProgram, seccompiler::Error> {
    let arch = std::env::consts::ARCH.try_into()?;
    let errno = errno.unsigned_abs();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno),
        arch,
    )?;
    Ok(filter.try_into()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile_for_this_architecture() {
        let deny = tenant_filter().unwrap();
        assert!(deny.len() > denied().len(), "one jump at least per syscall");
        assert!(!clone3_filter().unwrap().is_empty());
    }
}
