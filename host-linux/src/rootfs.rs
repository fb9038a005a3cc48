//! The file system a tenant's processes see: planned here (plain data, so it is
//! checked without root), carried out by the tenant's holder in its own mount
//! namespace (owned by the tenant's user namespace) by [`crate::sys`].
//!
//! The view, built on a small tmpfs that becomes the root with `pivot_root`:
//! - `/usr`, `/bin`, `/sbin`, `/lib*`: read-only bind mounts of the host's (or the
//!   same symlinks, on merged-/usr systems);
//! - `/etc`: only the entries of [`ETC_ENTRIES`] (name service, dynamic linker,
//!   time zone, certificates, alternatives), each a read-only bind mount: never the
//!   whole directory, which holds the agent's configuration and key;
//! - `/dev`: `null`, `zero`, `full`, `random`, `urandom`, `tty` (bind mounts of the
//!   host's nodes; a user namespace cannot create device nodes), `fd`, `stdin`,
//!   `stdout`, `stderr` links, and a private `/dev/shm`;
//! - `/proc`: the tenant's own (its pid namespace);
//! - `/tmp`: a private tmpfs;
//! - `/data`: the tenant's data directory on this host, the only place that
//!   persists, read-write;
//! - the root itself is read-only.
//!
//! Nothing else of the host is reachable: not the agent's data directory (state,
//! logs of every tenant), sockets, configuration or key. Paths the operator names
//! as hidden (the agent passes its key, configuration and socket) are covered
//! (an empty read-only tmpfs over a directory, an empty file of mode 000 over a
//! file) wherever
//! the view would otherwise show them, e.g. a key kept under `/usr/local`.
//!
//! Invariants: every mount is made in the holder's mount namespace only (`/` is
//! made private first), under the staging directory [`STAGE`] until the pivot;
//! the old root is detached by the pivot, so no path leads back to it; an
//! executable is looked up in this view ([`Rootfs::host_path`]), not on the host.

use std::ffi::CString;
use std::path::{Component, Path, PathBuf};

/// Where the new root is assembled (a tmpfs mounted over it, in the holder's mount
/// namespace only) before it becomes `/`.
pub const STAGE: &str = "/tmp";
/// Where the tenant's data directory appears.
pub const DATA_MOUNT: &str = "/data";
/// The host's system directories shown read-only (those that exist).
pub const SYSTEM_DIRS: [&str; 7] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];
/// The entries of `/etc` a program may need (those that exist are shown read-only).
pub const ETC_ENTRIES: [&str; 22] = [
    "passwd",
    "group",
    "hosts",
    "host.conf",
    "nsswitch.conf",
    "resolv.conf",
    "gai.conf",
    "protocols",
    "services",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "alternatives",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "os-release",
    "debian_version",
    "mime.types",
    "shells",
];
/// The empty, mode 000 file bound over hidden files.
const HIDDEN_FILE: &str = "/.hidden";
/// Device nodes shown in `/dev`.
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// One step of building the view, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountOp {
    /// `mount(2)`.
    Mount {
        /// Source (`None`: a remount or propagation change).
        src: Option<CString>,
        /// Target.
        dst: CString,
        /// File system type, for a new mount.
        fstype: Option<CString>,
        /// `MS_*` flags.
        flags: libc::c_ulong,
        /// File system options.
        data: Option<CString>,
    },
    /// A bind mount of the tenant's data directory (an fd the holder holds, so the
    /// agent's data directory need not be searchable by the tenant's ids) on `dst`.
    BindData {
        /// Target.
        dst: CString,
    },
    /// `mkdir(2)` with mode 0755 (the mode given for `tmp`-like directories is set by their mount).
    Mkdir(CString),
    /// Creates an empty file with this mode, as the target or source of a bind mount.
    Touch(CString, libc::mode_t),
    /// `symlink(target, link)`.
    Symlink {
        /// What the link points to.
        target: CString,
        /// The link.
        link: CString,
    },
    /// Makes the staging directory (always [`STAGE`]) the root: `pivot_root(".",
    /// ".")` there, then detaches the old root.
    Pivot(CString),
}

/// The planned view of one tenant, and how its paths map to the host's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rootfs {
    /// The steps, in order.
    pub ops: Vec<MountOp>,
    /// What each step is, for errors (same length as `ops`).
    pub names: Vec<String>,
    /// The tenant's data directory on the host.
    pub data_dir: PathBuf,
    /// `(path in the view, path on the host)` of every bind mount.
    binds: Vec<(PathBuf, PathBuf)>,
    /// `(path in the view, target)` of the symlinks made at the top of the view.
    links: Vec<(PathBuf, PathBuf)>,
    /// Paths of the view that are the tenant's own (its tmpfs mounts, its /proc,
    /// the directories of the root): nothing of the host is behind them.
    private: Vec<PathBuf>,
}

/// What a path of the view leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// This file of the host.
    Host(PathBuf),
    /// Something of the tenant's own (a tmpfs, its /proc): only the tenant's
    /// processes can tell what is there.
    Private,
    /// Nothing.
    Missing,
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap_or_default()
}

fn staged(view: &Path) -> PathBuf {
    Path::new(STAGE).join(view.strip_prefix("/").unwrap_or(view))
}

/// The `MS_*` flags a read-only remount of a bind of `host` must keep: those of the
/// mount `host` is on (a user namespace may not clear them), plus nosuid.
fn kept_flags(host: &Path, nodev: bool) -> libc::c_ulong {
    use nix::sys::statvfs::FsFlags;
    let mut flags = libc::MS_NOSUID;
    if nodev {
        flags |= libc::MS_NODEV;
    }
    if let Ok(st) = nix::sys::statvfs::statvfs(host) {
        let f = st.flags();
        for (st_flag, ms) in [
            (FsFlags::ST_NODEV, libc::MS_NODEV),
            (FsFlags::ST_NOEXEC, libc::MS_NOEXEC),
            (FsFlags::ST_NOATIME, libc::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, libc::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, libc::MS_RELATIME),
        ] {
            if f.contains(st_flag) {
                flags |= ms;
            }
        }
    }
    flags
}

impl Rootfs {
    /// Plans the view of a tenant whose data directory is `data_dir` on the host,
    /// covering each of `hidden` that the view would show.
    pub fn plan(data_dir: &Path, hidden: &[PathBuf]) -> Rootfs {
        let mut r = Rootfs {
            ops: Vec::new(),
            names: Vec::new(),
            data_dir: data_dir.to_owned(),
            binds: Vec::new(),
            links: Vec::new(),
            private: vec![PathBuf::from("/")],
        };
        r.mount(
            "make / private",
            None,
            Path::new("/"),
            None,
            libc::MS_REC | libc::MS_PRIVATE,
            None,
        );
        r.mount(
            "tmpfs for the new root",
            Some("tmpfs"),
            Path::new(STAGE),
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some("mode=0755,size=1m"),
        );
        for dir in SYSTEM_DIRS {
            r.show(Path::new(dir), true);
        }
        r.mkdir(Path::new("/etc"));
        for entry in ETC_ENTRIES {
            r.show(&Path::new("/etc").join(entry), true);
        }
        r.mkdir(Path::new("/dev"));
        for dev in DEVICES {
            r.show(&Path::new("/dev").join(dev), false);
        }
        for (link, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            r.symlink(&Path::new("/dev").join(link), Path::new(target));
        }
        r.tmpfs(Path::new("/dev/shm"));
        r.mkdir(Path::new("/proc"));
        r.mount(
            "mount /proc",
            Some("proc"),
            &staged(Path::new("/proc")),
            Some("proc"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            None,
        );
        r.tmpfs(Path::new("/tmp"));
        // Under these, everything is the tenant's own.
        for own in ["/proc", "/tmp", "/dev/shm"] {
            r.private.push(PathBuf::from(own));
        }
        let data = Path::new(DATA_MOUNT);
        r.mkdir(data);
        r.push(
            format!("bind the data directory {}", data_dir.display()),
            MountOp::BindData {
                dst: cstr(&staged(data)),
            },
        );
        r.remount_ro(data, kept_flags(data_dir, true) & !libc::MS_RDONLY, false);
        r.binds.push((data.to_owned(), data_dir.to_owned()));
        for h in hidden {
            r.hide(h);
        }
        r.push(
            "pivot_root".to_owned(),
            MountOp::Pivot(cstr(Path::new(STAGE))),
        );
        r.mount(
            "make / read-only",
            None,
            Path::new("/"),
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            None,
        );
        r
    }

    fn push(&mut self, name: String, op: MountOp) {
        self.names.push(name);
        self.ops.push(op);
    }

    fn mount(
        &mut self,
        name: &str,
        src: Option<&str>,
        dst: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) {
        let c = |s: &str| CString::new(s).unwrap_or_default();
        self.push(
            format!("{name} ({})", dst.display()),
            MountOp::Mount {
                src: src.map(c),
                dst: cstr(dst),
                fstype: fstype.map(c),
                flags,
                data: data.map(c),
            },
        );
    }

    fn mkdir(&mut self, view: &Path) {
        self.private.push(view.to_owned());
        let at = staged(view);
        self.push(format!("mkdir {}", at.display()), MountOp::Mkdir(cstr(&at)));
    }

    fn symlink(&mut self, view: &Path, target: &Path) {
        let at = staged(view);
        self.push(
            format!("symlink {} -> {}", at.display(), target.display()),
            MountOp::Symlink {
                target: cstr(target),
                link: cstr(&at),
            },
        );
        self.links.push((view.to_owned(), target.to_owned()));
    }

    fn tmpfs(&mut self, view: &Path) {
        self.mkdir(view);
        self.mount(
            "tmpfs",
            Some("tmpfs"),
            &staged(view),
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some("mode=1777"),
        );
    }

    fn remount_ro(&mut self, view: &Path, kept: libc::c_ulong, ro: bool) {
        let mut flags = libc::MS_BIND | libc::MS_REMOUNT | kept;
        if ro {
            flags |= libc::MS_RDONLY;
        }
        let what = if ro { "read-only" } else { "nosuid" };
        self.mount(
            &format!("remount {what}"),
            None,
            &staged(view),
            None,
            flags,
            None,
        );
    }

    /// Shows the host's `path` at the same place: a symlink as the same symlink, a
    /// directory or file as a bind mount, read-only if `ro`; nothing if it is absent.
    fn show(&mut self, path: &Path, ro: bool) {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return;
        };
        if meta.file_type().is_symlink() {
            if let Ok(target) = std::fs::read_link(path) {
                self.symlink(path, &target);
            }
            return;
        }
        let at = staged(path);
        if meta.is_dir() {
            self.mkdir(path);
        } else {
            self.push(
                format!("create {}", at.display()),
                MountOp::Touch(cstr(&at), 0o444),
            );
        }
        self.mount(
            "bind",
            Some(&path.to_string_lossy()),
            &at,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        );
        if ro {
            self.remount_ro(path, kept_flags(path, true), true);
        }
        self.binds.push((path.to_owned(), path.to_owned()));
    }

    /// Covers the host's `path` if the view shows it.
    fn hide(&mut self, path: &Path) {
        let shown = self
            .binds
            .iter()
            .any(|(view, host)| view == host && path.starts_with(host));
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        if !shown || !path.is_absolute() {
            return;
        }
        let at = staged(path);
        if meta.is_dir() {
            self.mount(
                "cover a hidden directory",
                Some("tmpfs"),
                &at,
                Some("tmpfs"),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                Some("size=0"),
            );
        } else {
            // An empty file nobody may open (the tenant has no capability to
            // override its mode), made once at the root of the view.
            let cover = staged(Path::new(HIDDEN_FILE));
            if !self.names.iter().any(|n| n.starts_with("create the cover")) {
                self.push(
                    "create the cover of hidden files".to_owned(),
                    MountOp::Touch(cstr(&cover), 0),
                );
            }
            self.mount(
                "cover a hidden file",
                Some(&cover.to_string_lossy()),
                &at,
                None,
                libc::MS_BIND,
                None,
            );
        }
    }

    /// Where the view's `path` (absolute) leads, following symlinks as a process of
    /// the tenant would (at most 40 of them).
    pub fn lookup(&self, path: &Path) -> Lookup {
        let Some(mut view) = normalize(path) else {
            return Lookup::Missing;
        };
        'hops: for _ in 0..40 {
            if let Some((link, target)) = self.links.iter().find(|(l, _)| view.starts_with(l)) {
                let rest: PathBuf = view.strip_prefix(link).unwrap_or(Path::new("")).into();
                let parent = link.parent().unwrap_or(Path::new("/"));
                match normalize(&parent.join(target).join(rest)) {
                    Some(v) => view = v,
                    None => return Lookup::Missing,
                }
                continue;
            }
            let bind = self
                .binds
                .iter()
                .filter(|(v, _)| view.starts_with(v))
                .max_by_key(|(v, _)| v.as_os_str().len());
            let Some((bind_view, bind_host)) = bind else {
                return self.private_or_missing(&view);
            };
            let rest: Vec<_> = view
                .strip_prefix(bind_view)
                .unwrap_or(Path::new(""))
                .components()
                .collect();
            let mut host = bind_host.clone();
            let mut walked = bind_view.clone();
            for (i, part) in rest.iter().enumerate() {
                host.push(part);
                walked.push(part);
                let is_link =
                    std::fs::symlink_metadata(&host).is_ok_and(|m| m.file_type().is_symlink());
                if is_link {
                    let Ok(target) = std::fs::read_link(&host) else {
                        return Lookup::Missing;
                    };
                    let after: PathBuf = rest[i + 1..].iter().collect();
                    let parent = walked.parent().unwrap_or(Path::new("/"));
                    match normalize(&parent.join(target).join(after)) {
                        Some(v) => view = v,
                        None => return Lookup::Missing,
                    }
                    continue 'hops;
                }
            }
            return Lookup::Host(host);
        }
        Lookup::Missing
    }

    /// A path no bind mount shows: the tenant's own if it is a directory of the
    /// root or under one of its private mounts, else absent.
    fn private_or_missing(&self, view: &Path) -> Lookup {
        let under_mount = self
            .private
            .iter()
            .filter(|p| p.as_os_str() != "/")
            .any(|p| view.starts_with(p) && !self.is_plain_dir(p));
        if under_mount || self.private.iter().any(|p| p == view) {
            Lookup::Private
        } else {
            Lookup::Missing
        }
    }

    /// Whether `p` is a directory made on the root (not a mount of its own).
    fn is_plain_dir(&self, p: &Path) -> bool {
        !["/proc", "/tmp", "/dev/shm"]
            .iter()
            .any(|m| p == Path::new(m))
    }

    /// The host file the view's `path` leads to, if it leads to one.
    pub fn host_path(&self, path: &Path) -> Option<PathBuf> {
        match self.lookup(path) {
            Lookup::Host(p) => Some(p),
            Lookup::Private | Lookup::Missing => None,
        }
    }
}

/// `path` made absolute-and-clean (`.` and `..` resolved lexically); `None` if relative.
fn normalize(path: &Path) -> Option<PathBuf> {
    if !path.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_shows_system_dirs_and_data_but_not_the_agents_files() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("tenants/t1");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("prog"), "#!/bin/sh\n").unwrap();
        let r = Rootfs::plan(&data, &[]);
        assert_eq!(r.ops.len(), r.names.len());
        assert_eq!(
            r.host_path(Path::new("/data/prog")),
            Some(data.join("prog"))
        );
        assert_eq!(
            r.host_path(Path::new("/data/../data/./prog")),
            Some(data.join("prog"))
        );
        let sh = r
            .host_path(Path::new("/bin/sh"))
            .expect("/bin/sh in the view");
        assert!(sh.starts_with("/usr") || sh.starts_with("/bin"), "{sh:?}");
        // The agent's files, the rest of /etc and the host's /tmp are not shown.
        assert_eq!(r.host_path(dir.path()), None);
        assert_eq!(r.host_path(Path::new("/etc/shadow")), None);
        assert_eq!(r.host_path(Path::new("/root")), None);
        assert_eq!(r.host_path(Path::new("/var/lib")), None);
        assert_eq!(r.host_path(Path::new("relative")), None);
        assert_eq!(r.lookup(Path::new("/tmp/x")), Lookup::Private);
        assert_eq!(r.lookup(Path::new("/tmp")), Lookup::Private);
        assert_eq!(r.lookup(Path::new("/proc/self/exe")), Lookup::Private);
        assert_eq!(r.lookup(Path::new("/etc")), Lookup::Private);
        assert_eq!(r.lookup(Path::new("/etc/nefele/key")), Lookup::Missing);
        assert_eq!(r.lookup(Path::new("/var")), Lookup::Missing);
        assert!(
            !r.names.iter().any(|n| n == "bind (/tmp/etc)"),
            "not all of /etc"
        );
        assert!(matches!(r.ops.last(), Some(MountOp::Mount { .. })));
        assert!(r.ops.iter().any(|op| matches!(op, MountOp::Pivot(_))));
    }

    #[test]
    fn hidden_paths_inside_the_view_are_covered() {
        let dir = tempfile::tempdir().unwrap();
        // /usr/bin exists everywhere this runs; a hidden path there must be covered,
        // a hidden path outside the view needs nothing.
        let r = Rootfs::plan(
            dir.path(),
            &[PathBuf::from("/usr/bin"), dir.path().join("x")],
        );
        let covers: Vec<&String> = r.names.iter().filter(|n| n.starts_with("cover")).collect();
        assert_eq!(covers.len(), 1, "{covers:?}");
        assert!(covers[0].contains("/tmp/usr/bin"));
    }
}
