//! Per-process log files under the data directory: `<data>/logs/<pid>.out` and
//! `.err`, with a size cap.
//!
//! The process writes its log file directly (opened in append mode), so its
//! output never depends on the adapter being alive. The cap is enforced by the
//! adapter copy-truncate style: when a file passes the cap, its contents move to
//! `<file>.1` (replacing the previous one) and the file is truncated; the process
//! keeps appending at the new end. Disk use per stream stays near twice the cap.

use nefele_core::Pid;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

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
}
