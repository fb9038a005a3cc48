//! `nefele-tenant-probe`: a program run as a tenant process by the escape suite
//! (`tests/escape.rs`), never by the agent. Each argument is one attempt,
//! `OP` or `OP:ARG`; for each it prints one line `OP:ARG => ok` or
//! `OP:ARG => denied (<errno>)`, so that the suite asserts on each attempt alone.
//!
//! Attempts: `read:PATH`, `write:PATH`, `mount`, `umount:PATH`, `setns:PATH`,
//! `unshare-user`, `module`, `mknod:PATH` (a block device), `open:PATH`,
//! `mount-cgroup`, `connect:IP:PORT`, `unix:PATH` or `unix:@ABSTRACT`, `kill:PID`, `ptrace:PID`, `forks:N` (prints
//! how many of N sleeping children it could fork, then ends them), `status`
//! (prints its id, capability, no_new_privs and seccomp lines of /proc/self/status).

use std::ffi::CString;
use std::io::{Read, Write};
use std::time::Duration;

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// Returns Ok if the attempt succeeded.
fn attempt(op: &str, arg: &str) -> Result<String, std::io::Error> {
    // SAFETY (for every block below): libc calls with NUL-terminated strings that
    // live across the call, integer arguments, or null pointers where allowed.
    match op {
        "read" => {
            let mut s = String::new();
            std::fs::File::open(arg)?.read_to_string(&mut s)?;
            Ok(format!("{} bytes", s.len()))
        }
        "write" => {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(arg)?
                .write_all(b"escaped\n")?;
            Ok(String::new())
        }
        "mount" => unsafe {
            let r = libc::mount(
                c("none").as_ptr(),
                c("/tmp").as_ptr(),
                c("tmpfs").as_ptr(),
                0,
                std::ptr::null(),
            );
            if r == 0 {
                Ok(String::new())
            } else {
                Err(errno())
            }
        },
        "umount" => unsafe {
            if libc::umount2(c(arg).as_ptr(), libc::MNT_DETACH) == 0 {
                Ok(String::new())
            } else {
                Err(errno())
            }
        },
        "setns" => {
            let f = std::fs::File::open(arg)?;
            use std::os::fd::AsRawFd;
            if unsafe { libc::setns(f.as_raw_fd(), 0) } == 0 {
                Ok(String::new())
            } else {
                Err(errno())
            }
        }
        "unshare-user" => {
            if unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0 {
                Ok(String::new())
            } else {
                Err(errno())
            }
        }
        "module" => {
            let r = unsafe {
                libc::syscall(
                    libc::SYS_init_module,
                    std::ptr::null::<u8>(),
                    0usize,
                    c("").as_ptr(),
                )
            };
            if r == 0 {
                Ok(String::new())
            } else {
                Err(errno())
            }
        }
        "mknod" => {
            let dev = libc::makedev(8, 0);
            if unsafe { libc::mknod(c(arg).as_ptr(), libc::S_IFBLK | 0o600, dev) } == 0 {
                Ok(String::new())
            } else {
                Err(errno())
            }
        }
        "open" => {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(arg)?;
            Ok(String::new())
        }
        "mount-cgroup" => {
            std::fs::create_dir_all("/tmp/cg")?;
            let r = unsafe {
                libc::mount(
                    c("cgroup2").as_ptr(),
                    c("/tmp/cg").as_ptr(),
                    c("cgroup2").as_ptr(),
                    0,
                    std::ptr::null(),
                )
            };
            if r == 0 {
                Ok(String::new())
            } else {
                Err(errno())
            }
        }
        "connect" => {
            let addr: std::net::SocketAddr = arg
                .parse()
                .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
            Ok(String::new())
        }
        "unix" => {
            // `@name` is an abstract socket (bound to a network namespace).
            let stream = match arg.strip_prefix('@') {
                Some(name) => {
                    use std::os::linux::net::SocketAddrExt;
                    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                    std::os::unix::net::UnixStream::connect_addr(&addr)
                }
                None => std::os::unix::net::UnixStream::connect(arg),
            };
            stream?;
            Ok(String::new())
        }
        "kill" | "ptrace" => {
            let pid: i32 = arg.parse().unwrap_or(0);
            let r = if op == "kill" {
                unsafe { libc::kill(pid, libc::SIGKILL) as libc::c_long }
            } else {
                unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) }
            };
            if r == 0 {
                Ok(String::new())
            } else {
                Err(errno())
            }
        }
        "forks" => {
            let n: usize = arg.parse().unwrap_or(0);
            let mut children = Vec::new();
            for _ in 0..n {
                match unsafe { libc::fork() } {
                    0 => {
                        unsafe { libc::sleep(10) };
                        unsafe { libc::_exit(0) };
                    }
                    pid if pid > 0 => children.push(pid),
                    _ => break,
                }
            }
            let forked = children.len();
            for pid in children {
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
            }
            if forked == n {
                Ok(format!("{forked}"))
            } else {
                Err(std::io::Error::other(format!("{forked} forked")))
            }
        }
        "status" => {
            let s = std::fs::read_to_string("/proc/self/status")?;
            let keep = [
                "Uid:",
                "Gid:",
                "CapEff:",
                "CapPrm:",
                "CapBnd:",
                "NoNewPrivs:",
                "Seccomp:",
            ];
            Ok(s.lines()
                .filter(|l| keep.iter().any(|k| l.starts_with(k)))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join("; "))
        }
        _ => Err(std::io::Error::from_raw_os_error(libc::ENOSYS)),
    }
}

fn main() {
    let mut out = std::io::stdout().lock();
    for a in std::env::args().skip(1) {
        let (op, arg) = a.split_once(':').unwrap_or((&a, ""));
        let line = match attempt(op, arg) {
            Ok(detail) => format!("{a} => ok {detail}"),
            Err(e) => format!("{a} => denied ({e})"),
        };
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}
