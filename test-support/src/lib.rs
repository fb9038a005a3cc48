//! Tests that need something a machine may lack, reported honestly.
//!
//! A test's prerequisite is one of two kinds:
//!
//! - **Something CI provides**: root, a C compiler, the `nefele-sim` binary, iproute2.
//!   `.ci/run` installs or has it, so its absence there is a broken CI machine, not a
//!   reason to pass. [`require`]: under CI (`NEFELE_CI=1`, which `.ci/run` sets) a
//!   missing one fails the test with a message naming it; elsewhere the test is
//!   skipped, as a developer without root expects.
//! - **A property of the machine** that no install step changes: the kernel's
//!   version, an RDMA device. [`machine_has`]: when it is absent the test is
//!   skipped, under CI too.
//!
//! A skipped test returns early, and the harness counts it as passed; so every skip
//! is recorded: one line `SKIPPED: <test>: <reason>` on stderr (written past the
//! harness's capture, so `cargo test` shows it) and appended to the file named by
//! `NEFELE_SKIP_LOG` when set. `.ci/run` lists that file's lines and subtracts
//! them from the passed count. `scripts/netns-cluster.sh` follows the same rules.
//!
//! The test's name is the name of the thread the harness runs it on, so call these
//! from the test's own thread.

use std::io::Write;

/// Set to `1` by `.ci/run`: a missing prerequisite that CI provides fails the test.
pub const CI_VAR: &str = "NEFELE_CI";
/// Names the file each skip is appended to (one line per skip).
pub const SKIP_LOG_VAR: &str = "NEFELE_SKIP_LOG";

/// Whether this is a CI run (`NEFELE_CI=1`).
#[must_use]
pub fn in_ci() -> bool {
    std::env::var(CI_VAR).is_ok_and(|v| v == "1")
}

/// Whether the calling test may go on, given whether the prerequisite `what` (one
/// that CI provides, e.g. "root (namespaces and cgroups)") is `present`. When it is
/// not: under CI, panics naming it; elsewhere records the skip and returns `false`.
///
/// # Panics
/// Under CI when `present` is false; when the skip cannot be recorded.
#[must_use]
pub fn require(present: bool, what: &str) -> bool {
    if present {
        return true;
    }
    assert!(
        !in_ci(),
        "{}: missing prerequisite: {what} ({CI_VAR}=1: CI must provide it, so this test fails \
         instead of skipping)",
        test_name()
    );
    record_skip(&format!("needs {what}"));
    false
}

/// [`require`] for a prerequisite found by something that says why it is missing:
/// `Some(value)`, or (under CI) a panic naming `what` and why, or (elsewhere) a
/// recorded skip and `None`.
///
/// # Panics
/// Under CI when `found` is an error; when the skip cannot be recorded.
#[must_use]
pub fn require_ok<T, E: std::fmt::Display>(found: Result<T, E>, what: &str) -> Option<T> {
    match found {
        Ok(value) => Some(value),
        Err(why) => {
            let _ = require(false, &format!("{what} ({why})"));
            None
        }
    }
}

/// Whether the calling test may go on, given whether this machine has `what`, a
/// property no install step changes (e.g. "a kernel that reports exit status
/// through pidfds (Linux 6.15+)"). When it has not, records the skip (under CI too,
/// where it is counted as skipped) and returns `false`.
///
/// # Panics
/// When the skip cannot be recorded.
#[must_use]
pub fn machine_has(present: bool, what: &str) -> bool {
    if !present {
        record_skip(&format!("this machine lacks {what}"));
    }
    present
}

/// Records that the calling test is skipped because of `reason`: a line
/// `SKIPPED: <test>: <reason>` on stderr and in the `NEFELE_SKIP_LOG` file.
///
/// # Panics
/// When `NEFELE_SKIP_LOG` names a file that cannot be appended to: an unrecorded
/// skip would count as a pass.
pub fn record_skip(reason: &str) {
    let line = format!("SKIPPED: {}: {reason}\n", test_name());
    // Straight to the file descriptor: the harness captures `eprintln!` only. (Not in
    // this crate's own test, whose made-up skips would read as real ones in a log.)
    #[cfg(not(test))]
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(path) = std::env::var_os(SKIP_LOG_VAR) {
        // One write of one short line with O_APPEND: lines of tests running in
        // parallel (threads or processes) do not interleave.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .unwrap_or_else(|e| panic!("cannot record a skip in {SKIP_LOG_VAR}={path:?}: {e}"));
    }
}

/// The calling test's name: the harness names each test's thread after it.
fn test_name() -> String {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("an unnamed test");
    let exe = std::env::current_exe().ok();
    let binary = exe
        .as_deref()
        .and_then(std::path::Path::file_stem)
        .and_then(|s| s.to_str())
        // Test executables are named `<target>-<hash>`.
        .map(|s| s.rsplit_once('-').map_or(s, |(target, _)| target));
    match binary {
        Some(binary) => format!("{binary}::{name}"),
        None => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test for both modes: it changes this process's environment.
    #[test]
    fn a_missing_prerequisite_skips_outside_ci_and_fails_under_ci() {
        let dir = std::env::temp_dir().join(format!("nefele-skip-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("skips.log");
        std::env::set_var(SKIP_LOG_VAR, &log);

        std::env::remove_var(CI_VAR);
        assert!(require(true, "a thing"));
        assert!(!require(false, "a C compiler"));
        assert!(!machine_has(false, "Linux 6.15+"));
        assert_eq!(require_ok(Ok::<_, String>(7), "seven"), Some(7));
        assert_eq!(require_ok(Err::<u8, _>("not built"), "a binary"), None);
        std::env::set_var(CI_VAR, "1");
        assert!(!machine_has(false, "an RDMA device"));
        // Quietly: the expected panic's message would read as a real failure in a log.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let failure = std::panic::catch_unwind(|| require(false, "root")).unwrap_err();
        std::panic::set_hook(hook);
        let message = failure.downcast_ref::<String>().unwrap();
        assert!(message.contains("missing prerequisite: root"), "{message}");
        std::env::remove_var(CI_VAR);
        std::env::remove_var(SKIP_LOG_VAR);

        let name = "tests::a_missing_prerequisite_skips_outside_ci_and_fails_under_ci";
        let lines = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = lines.lines().collect();
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert!(lines[0].starts_with("SKIPPED: nefele_test_support::") && lines[0].contains(name));
        assert!(lines[0].ends_with(": needs a C compiler"), "{}", lines[0]);
        assert!(lines[1].ends_with(": this machine lacks Linux 6.15+"));
        assert!(lines[2].ends_with(": needs a binary (not built)"));
        assert!(lines[3].ends_with(": this machine lacks an RDMA device"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
