//! `nefele_spec`, the C spec of a process, and how it becomes a [`ProcSpec`].
//!
//! The struct can grow without breaking callers built against an older header:
//! its first field, `size`, is `sizeof(nefele_spec)` as the caller compiled it
//! (`NEFELE_SPEC_INIT` sets it). The library reads `size` bytes: fields past an
//! older caller's `size` read as zero (their defaults), and a newer caller's
//! bytes past this library's struct must be zero, or the call fails
//! `NEFELE_EINVAL` rather than silently drop what it asks for. In an array
//! (`nefele_c_spawn`) every element has the first element's `size`, which is the
//! stride.
//!
//! Zero means "not given" throughout: no reservation (the agent decides), no
//! limit, no accelerator, any cpu class, no profile (a NULL pointer).

use super::{nefele_pid, text, texts, NEFELE_EINVAL};
use nefele_api::spec::{Affinity, Limits, ProcSpec, ResourcePolicy, WorkloadProfile};
use std::ffi::{c_char, c_int};
use std::mem::{offset_of, size_of, MaybeUninit};
use std::time::Duration;

/// `nefele_affinity.kind`: on the same server as the others with `tag`.
pub const NEFELE_AFFINITY_TOGETHER: c_int = 1;
/// `nefele_affinity.kind`: on a different server from the others with `tag`.
pub const NEFELE_AFFINITY_APART: c_int = 2;
/// `nefele_affinity.kind`: in different racks from the others with `tag` when it can.
pub const NEFELE_AFFINITY_SPREAD: c_int = 3;
/// `nefele_affinity.kind`: as near as placement can to the process `pid`.
pub const NEFELE_AFFINITY_NEAR: c_int = 4;
/// `nefele_profile.duration_ms` of a service that runs until killed.
pub const NEFELE_FOREVER: u64 = u64::MAX;
/// The largest `size` accepted (a guard against garbage, far above any version).
const MAX_SPEC_SIZE: usize = 4096;

/// One placement rule.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct nefele_affinity {
    /// `NEFELE_AFFINITY_*`.
    pub kind: c_int,
    /// The tag (together, apart, spread); NULL for near.
    pub tag: *const c_char,
    /// The process to be near (near only).
    pub pid: nefele_pid,
}

/// What a process is expected to use.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct nefele_profile {
    /// Expected average cpu, in millicores.
    pub cpu_millicores: u32,
    /// Expected peak memory, in bytes.
    pub memory_bytes: u64,
    /// Expected run time in milliseconds; `NEFELE_FOREVER` for a service.
    pub duration_ms: u64,
}

/// What to run (see the module docs for `size`).
#[repr(C)]
#[derive(Debug)]
pub struct nefele_spec {
    /// `sizeof(nefele_spec)` as the caller compiled it.
    pub size: u32,
    /// The executable, an absolute path.
    pub path: *const c_char,
    /// Arguments, `argv[0]` included, NULL-terminated; may be NULL.
    pub argv: *const *const c_char,
    /// `KEY=VALUE` strings, NULL-terminated; may be NULL.
    pub envp: *const *const c_char,
    /// Reserved cpu in millicores; 0 lets the agent decide.
    pub cpu_millicores: u32,
    /// Reserved memory in bytes; 0 lets the agent decide.
    pub memory_bytes: u64,
    /// Cpu limit (cgroup quota) in millicores; 0: none.
    pub cpu_limit_millicores: u32,
    /// Most tasks (processes and threads); 0: the host's default.
    pub pids_limit: u32,
    /// Memory limit in bytes (over it the process is OOM-killed); 0: none.
    pub memory_limit_bytes: u64,
    /// Accelerator devices to reserve.
    pub accelerators: u32,
    /// The slowest cpu speed class accepted (a host of speed s has class s/250,
    /// 1000 being a 2 GHz core); 0: any.
    pub cpu_class: u32,
    /// Placement rules; may be NULL when `affinity_count` is 0.
    pub affinity: *const nefele_affinity,
    /// Entries of `affinity`.
    pub affinity_count: usize,
    /// Expected use; may be NULL.
    pub profile: *const nefele_profile,
}

/// The smallest `size` accepted: the fields of the first version (path to memory).
const MIN_SPEC_SIZE: usize = offset_of!(nefele_spec, cpu_limit_millicores);

/// The stride of an array of specs whose first element is `first`.
///
/// # Safety
/// `first` is NULL or points to at least 4 readable bytes.
pub(super) unsafe fn stride(first: *const nefele_spec) -> Result<usize, c_int> {
    if first.is_null() {
        return Err(NEFELE_EINVAL);
    }
    // SAFETY: the size is the first field, readable by contract (maybe unaligned
    // in a caller's packed buffer, so read unaligned).
    let size = unsafe { std::ptr::read_unaligned(first.cast::<u32>()) } as usize;
    if !(MIN_SPEC_SIZE..=MAX_SPEC_SIZE).contains(&size) {
        return Err(NEFELE_EINVAL);
    }
    Ok(size)
}

/// The Rust spec of the C spec of `size` bytes at `raw`.
///
/// # Safety
/// `raw` points to `size` readable bytes (see [`stride`]); its pointers follow
/// the contracts of [`text`] and [`texts`], `affinity` points to
/// `affinity_count` readable entries, `profile` is NULL or readable.
pub(super) unsafe fn spec_at(raw: *const u8, size: usize) -> Result<ProcSpec, c_int> {
    let known = size.min(size_of::<nefele_spec>());
    // SAFETY: `raw` has `size` readable bytes; the bytes past this library's
    // struct are only read.
    let extra = unsafe { std::slice::from_raw_parts(raw.add(known), size - known) };
    if extra.iter().any(|b| *b != 0) {
        return Err(NEFELE_EINVAL);
    }
    let mut s = MaybeUninit::<nefele_spec>::zeroed();
    // SAFETY: `known` bytes are readable at `raw` and fit in `s`; all-zero bytes
    // are a valid `nefele_spec` (NULL pointers, zero numbers), so any prefix
    // copied over them is one too.
    let s = unsafe {
        std::ptr::copy_nonoverlapping(raw, s.as_mut_ptr().cast::<u8>(), known);
        s.assume_init()
    };
    // SAFETY: forwarded contract.
    let (path, argv, envp) = unsafe { (text(s.path)?, texts(s.argv)?, texts(s.envp)?) };
    let given = |n: u32| (n != 0).then_some(n);
    let cpu_class = match s.cpu_class {
        0 => None,
        c => Some(u8::try_from(c).map_err(|_| NEFELE_EINVAL)?),
    };
    Ok(ProcSpec {
        path: path.to_owned(),
        argv,
        envp,
        // SAFETY: forwarded contract.
        affinity: unsafe { affinities(s.affinity, s.affinity_count) }?,
        resources: ResourcePolicy {
            cpu_millicores: given(s.cpu_millicores),
            memory_bytes: (s.memory_bytes != 0).then_some(s.memory_bytes),
            accelerators: given(s.accelerators),
            cpu_class,
            limits: Limits {
                cpu_millicores: given(s.cpu_limit_millicores),
                memory_bytes: (s.memory_limit_bytes != 0).then_some(s.memory_limit_bytes),
                pids: given(s.pids_limit),
            },
        },
        // SAFETY: `profile` is NULL or readable by contract.
        profile: unsafe { s.profile.as_ref() }.map(|p| WorkloadProfile {
            cpu_millicores: p.cpu_millicores,
            memory_bytes: p.memory_bytes,
            duration: (p.duration_ms != NEFELE_FOREVER)
                .then(|| Duration::from_millis(p.duration_ms)),
        }),
    })
}

/// The Rust spec of one C spec.
///
/// # Safety
/// As for [`stride`] and [`spec_at`].
pub(super) unsafe fn spec_of(s: *const nefele_spec) -> Result<ProcSpec, c_int> {
    // SAFETY: forwarded contract.
    unsafe {
        let size = stride(s)?;
        spec_at(s.cast::<u8>(), size)
    }
}

/// The Rust specs of `count` C specs at `specs`, each of the first one's size.
///
/// # Safety
/// `specs` points to `count` specs of the first one's `size` each, each as for
/// [`spec_at`].
pub(super) unsafe fn specs_of(
    specs: *const nefele_spec,
    count: usize,
) -> Result<Vec<ProcSpec>, c_int> {
    // SAFETY: forwarded contract.
    let size = unsafe { stride(specs) }?;
    (0..count)
        .map(|i| {
            // SAFETY: element `i` starts `i * size` bytes in, by contract; each
            // element must say the same size.
            unsafe {
                let at = specs.cast::<u8>().add(i * size);
                if std::ptr::read_unaligned(at.cast::<u32>()) as usize != size {
                    return Err(NEFELE_EINVAL);
                }
                spec_at(at, size)
            }
        })
        .collect()
}

/// # Safety
/// `list` points to `count` readable entries (any pointer when `count` is 0),
/// whose tags follow the contract of [`text`].
unsafe fn affinities(list: *const nefele_affinity, count: usize) -> Result<Vec<Affinity>, c_int> {
    if count == 0 {
        return Ok(Vec::new());
    }
    if list.is_null() {
        return Err(NEFELE_EINVAL);
    }
    // SAFETY: `count` readable entries by contract.
    let entries = unsafe { std::slice::from_raw_parts(list, count) };
    entries
        .iter()
        .map(|a| {
            // SAFETY: a tag follows the contract of `text`.
            let tag = || unsafe { text(a.tag) }.map(str::to_owned);
            match a.kind {
                NEFELE_AFFINITY_TOGETHER => Ok(Affinity::Together(tag()?)),
                NEFELE_AFFINITY_APART => Ok(Affinity::Apart(tag()?)),
                NEFELE_AFFINITY_SPREAD => Ok(Affinity::Spread(tag()?)),
                NEFELE_AFFINITY_NEAR => Ok(Affinity::Near(a.pid.into())),
                _ => Err(NEFELE_EINVAL),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nefele_api::ids::{Incarnation, NodeId, Pid};

    /// An older caller's spec (the first version's fields only) reads with
    /// defaults for the rest; a newer caller's unknown non-zero bytes are refused.
    #[test]
    fn older_and_newer_callers() {
        let path = c"/bin/true";
        let spec = nefele_spec {
            size: MIN_SPEC_SIZE as u32,
            path: path.as_ptr(),
            argv: std::ptr::null(),
            envp: std::ptr::null(),
            cpu_millicores: 250,
            memory_bytes: 1 << 20,
            // Garbage past the old size is never read.
            cpu_limit_millicores: 77,
            pids_limit: 77,
            memory_limit_bytes: 77,
            accelerators: 77,
            cpu_class: 77,
            affinity: std::ptr::dangling::<nefele_affinity>(),
            affinity_count: 77,
            profile: std::ptr::dangling::<nefele_profile>(),
        };
        // SAFETY: `spec` is a live spec with valid pointers up to its size.
        let got = unsafe { spec_of(&spec) }.expect("an old spec reads");
        assert_eq!(got.resources.cpu_millicores, Some(250));
        assert_eq!(got.resources.limits, Limits::default());
        assert_eq!((got.affinity.len(), got.profile), (0, None));

        #[repr(C)]
        struct Newer {
            spec: nefele_spec,
            more: u64,
        }
        let pid = Pid::new(NodeId(3), Incarnation(1), 9);
        let rules = [
            nefele_affinity {
                kind: NEFELE_AFFINITY_SPREAD,
                tag: c"db".as_ptr(),
                pid: nefele_pid { hi: 0, lo: 0 },
            },
            nefele_affinity {
                kind: NEFELE_AFFINITY_NEAR,
                tag: std::ptr::null(),
                pid: pid.into(),
            },
        ];
        let profile = nefele_profile {
            cpu_millicores: 100,
            memory_bytes: 1 << 20,
            duration_ms: NEFELE_FOREVER,
        };
        let mut newer = Newer {
            spec: nefele_spec {
                size: size_of::<Newer>() as u32,
                cpu_limit_millicores: 500,
                cpu_class: 6,
                affinity: rules.as_ptr(),
                affinity_count: 2,
                profile: &profile,
                ..spec
            },
            more: 0,
        };
        // SAFETY: as above, for the larger struct.
        let got = unsafe { spec_of(&newer.spec) }.expect("zero extra bytes are fine");
        assert_eq!(
            got.affinity,
            vec![Affinity::Spread("db".into()), Affinity::Near(pid)]
        );
        assert_eq!(got.resources.limits.cpu_millicores, Some(500));
        assert_eq!(got.resources.cpu_class, Some(6));
        assert_eq!(got.profile.map(|p| p.duration), Some(None));
        newer.more = 1;
        // SAFETY: as above.
        assert_eq!(unsafe { spec_of(&newer.spec) }, Err(NEFELE_EINVAL));
        let tiny = nefele_spec { size: 8, ..spec };
        // SAFETY: as above.
        assert_eq!(unsafe { spec_of(&tiny) }, Err(NEFELE_EINVAL));
    }
}
