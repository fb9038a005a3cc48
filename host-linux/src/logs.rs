//! Per-process log files under the data directory: `<data>/logs/<pid>.out` and
//! `.err`, with a size cap, and a pool of spare files that takes their creation
//! off the start path.
//!
//! The process writes its log file directly (opened in append mode), so its
//! output never depends on the adapter being alive. The cap is enforced by the
//! adapter copy-truncate style: when a file passes the cap, its contents move to
//! `<file>.1` (replacing the previous one) and the file is truncated; the process
//! keeps appending at the new end. Disk use per stream stays near twice the cap.
//!
//! [`LogPool`]: creating a file costs about 0.4 ms on ext4 (inode allocation and
//! its journal, under the directory's lock), linking one about 15 µs. A filler
//! thread keeps up to a target number of unnamed files ready (`O_TMPFILE` in the
//! logs directory: the inode exists, no directory entry, and the directory is
//! not locked while it is made); a start links two of them to its log paths
//! (`linkat`, which never replaces an existing log). With no spare ready, a file
//! system without `O_TMPFILE`, or a target of zero, the start creates its files
//! itself, as before. Unlinked spares vanish with the agent: nothing is left
//! behind to clean up.

use nefele_core::Pid;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the filler waits before trying again after failing to make a spare.
const FILL_RETRY: Duration = Duration::from_secs(1);

/// The log files of one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogPaths {
    /// Standard output.
    pub stdout: PathBuf,
    /// Standard error.
    pub stderr: PathBuf,
}

impl LogPaths {
    /// The log files of `pid` under `data_dir`.
    pub fn new(data_dir: &Path, pid: Pid) -> Self {
        let dir = data_dir.join("logs");
        LogPaths {
            stdout: dir.join(format!("{pid}.out")),
            stderr: dir.join(format!("{pid}.err")),
        }
    }
}

/// Unnamed log files made ahead of need by a filler thread (see the module doc).
#[derive(Debug)]
pub struct LogPool {
    shared: Arc<Shared>,
    filler: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    target: usize,
    spares: Mutex<Spares>,
    /// Signalled when a spare is taken and when the pool stops.
    wake: Condvar,
}

#[derive(Debug, Default)]
struct Spares {
    ready: Vec<OwnedFd>,
    stop: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Spares> {
        self.spares.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An unnamed file in the logs directory, opened for appending.
    fn make_spare(&self) -> io::Result<OwnedFd> {
        let file = fs::OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
            .mode(0o640)
            .open(&self.dir)?;
        Ok(file.into())
    }

    /// Keeps `target` spares ready until told to stop, or until the file system
    /// turns out not to support unnamed files.
    fn fill(&self) {
        let mut spares = self.lock();
        loop {
            while !spares.stop && spares.ready.len() >= self.target {
                spares = self
                    .wake
                    .wait(spares)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if spares.stop {
                return;
            }
            drop(spares);
            let made = self.make_spare();
            spares = self.lock();
            match made {
                Ok(fd) => spares.ready.push(fd),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {
                    tracing::info!(dir = ?self.dir, "no O_TMPFILE here: log files are created at each start");
                    return;
                }
                Err(e) => {
                    tracing::warn!(%e, dir = ?self.dir, "spare log file not made");
                    spares = self
                        .wake
                        .wait_timeout(spares, FILL_RETRY)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
    }
}

impl LogPool {
    /// A pool of up to `target` spares in `dir` (the logs directory); with a
    /// target of zero, no filler runs.
    pub fn open(dir: &Path, target: usize) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            target,
            spares: Mutex::new(Spares::default()),
            wake: Condvar::new(),
        });
        let filler = if target > 0 {
            let s = Arc::clone(&shared);
            Some(
                std::thread::Builder::new()
                    .name("nefele-log-pool".into())
                    .spawn(move || s.fill())?,
            )
        } else {
            None
        };
        Ok(LogPool { shared, filler })
    }

    /// Gives a spare the name `dest` if one is ready and `dest` does not exist;
    /// returns whether it did (if not, opening `dest` with `O_CREAT` creates it).
    pub fn place(&self, dest: &Path) -> bool {
        use nix::fcntl::{AtFlags, AT_FDCWD};
        let Some(spare) = self.shared.lock().ready.pop() else {
            return false;
        };
        // Through /proc, which needs no capability (AT_EMPTY_PATH would).
        let proc_path = PathBuf::from(format!("/proc/self/fd/{}", spare.as_raw_fd()));
        match nix::unistd::linkat(
            AT_FDCWD,
            &proc_path,
            AT_FDCWD,
            dest,
            AtFlags::AT_SYMLINK_FOLLOW,
        ) {
            Ok(()) => {
                self.shared.wake.notify_one();
                true
            }
            Err(e) => {
                tracing::debug!(%e, ?dest, "spare log file not placed");
                self.shared.lock().ready.push(spare);
                false
            }
        }
    }

    /// How many spares are ready.
    pub fn ready(&self) -> usize {
        self.shared.lock().ready.len()
    }
}

impl Drop for LogPool {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(filler) = self.filler.take() {
            let _ = filler.join();
        }
    }
}

/// If `path` is larger than `cap_bytes`, moves its contents to `<path>.1` and
/// truncates it; returns whether it did.
pub fn enforce_cap(path: &Path, cap_bytes: u64) -> io::Result<bool> {
    let len = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len <= cap_bytes {
        return Ok(false);
    }
    let mut rotated = path.as_os_str().to_owned();
    rotated.push(".1");
    fs::copy(path, &rotated)?;
    fs::OpenOptions::new().write(true).open(path)?.set_len(0)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_over_the_cap_is_rotated_and_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.out");
        fs::write(&log, vec![b'a'; 100]).unwrap();
        assert!(!enforce_cap(&log, 100).unwrap());
        fs::write(&log, vec![b'a'; 101]).unwrap();
        assert!(enforce_cap(&log, 100).unwrap());
        assert_eq!(fs::metadata(&log).unwrap().len(), 0);
        assert_eq!(fs::read(dir.path().join("x.out.1")).unwrap().len(), 101);
        assert!(!enforce_cap(&dir.path().join("missing"), 1).unwrap());
    }

    fn wait_ready(pool: &LogPool, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pool.ready() < n {
            assert!(std::time::Instant::now() < deadline, "pool never filled");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn spares_become_logs_never_replace_one_and_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let pool = LogPool::open(dir.path(), 3).unwrap();
        wait_ready(&pool, 3);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "spares are unnamed"
        );
        let out = dir.path().join("a.out");
        assert!(pool.place(&out));
        assert_eq!(fs::metadata(&out).unwrap().len(), 0);
        // An existing log keeps its contents; the spare stays in the pool.
        fs::write(&out, "kept").unwrap();
        wait_ready(&pool, 3);
        assert!(!pool.place(&out));
        assert_eq!(fs::read_to_string(&out).unwrap(), "kept");
        assert_eq!(pool.ready(), 3);
        drop(pool);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let empty = LogPool::open(dir.path(), 0).unwrap();
        assert!(
            !empty.place(&dir.path().join("b.out")),
            "no filler, no spare"
        );
    }
}
