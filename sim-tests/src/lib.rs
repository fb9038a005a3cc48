//! Test support for the scenario, property and snapshot tests in `tests/`.
//!
//! - [`small_config`] and [`run`]: a small cluster run to its end through the library.
//! - [`traced`] and [`read_trace`]: the same, with the trace written as JSON lines and
//!   read back as [`TraceRecord`]s, so a test can ask what crossed the network and when.
//! - [`fault`]: a scheduled fault, briefly.
//! - [`scenario_toml`]: a run's configuration as a scenario file, so a failing
//!   property test leaves behind a file that `nefele-sim run --scenario` replays.
//! - [`nefele_sim_binary`]: the `nefele-sim` binary of this build, for tests of its CLI.

use nefele_core::{NodeId, Time};
use nefele_sim::faults::{Fault, FaultAction};
use nefele_sim::trace::{TraceFormat, TraceWriter};
use nefele_sim::{SimConfig, Simulation};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// A cluster of `nodes` agents (40 to a rack), run for `duration` from `seed`,
/// with a perfect network and no faults.
#[must_use]
pub fn small_config(nodes: u32, seed: u64, duration: Duration) -> SimConfig {
    let mut config = SimConfig {
        seed,
        nodes,
        duration,
        ..SimConfig::default()
    };
    config.agent.discovery = fast_discovery();
    config
}

/// Discovery that beats every second and forgets a neighbour after 3.5 s, so that
/// tests of discovery under faults run in seconds (the default is ten times slower,
/// to keep rack broadcasts cheap at scale).
#[must_use]
pub fn fast_discovery() -> nefele_core::discovery::DiscoveryConfig {
    nefele_core::discovery::DiscoveryConfig {
        heartbeat_period: Duration::from_secs(1),
        neighbour_timeout: Duration::from_millis(3500),
        hello_peers: 64,
    }
}

/// Cases for a property test: `PROPTEST_CASES` when set (to search harder, e.g.
/// `PROPTEST_CASES=500 cargo test --release -p nefele-sim-tests`), else `default`.
#[must_use]
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Builds the simulation of `config` and runs it to the end.
///
/// # Panics
/// If `config` is refused: tests build valid configurations.
#[must_use]
pub fn run(config: SimConfig) -> Simulation {
    let mut sim = Simulation::new(config).expect("a valid configuration");
    sim.run(|_| {});
    sim
}

/// One line of a JSON-lines trace (`nefele_sim::trace`); fields absent from a kind are `None`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct TraceRecord {
    /// Simulated time, in nanoseconds.
    pub t_ns: u64,
    /// `deliver`, `drop`, `timer` or `fault`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Sender of a message.
    pub from: Option<u32>,
    /// Receiver of a message.
    pub to: Option<u32>,
    /// The agent whose timer fired.
    pub node: Option<u32>,
    /// The message kind, e.g. `discovery.heartbeat`.
    #[serde(rename = "kind")]
    pub message: Option<String>,
    /// XXH3-64 of the frame, in hex.
    pub digest: Option<String>,
    /// Why a message was dropped.
    pub reason: Option<String>,
    /// What a fault did.
    pub text: Option<String>,
}

impl TraceRecord {
    /// Whether this record is a message from `from` delivered to `to`.
    #[must_use]
    pub fn is_delivery(&self, from: NodeId, to: NodeId) -> bool {
        self.kind == "deliver" && self.from == Some(from.0) && self.to == Some(to.0)
    }

    /// Whether this record is `node`'s timer firing.
    #[must_use]
    pub fn is_timer_of(&self, node: NodeId) -> bool {
        self.kind == "timer" && self.node == Some(node.0)
    }

    /// Whether this record happened in `[from, until)`.
    #[must_use]
    pub fn within(&self, from: Time, until: Time) -> bool {
        (from.as_nanos()..until.as_nanos()).contains(&self.t_ns)
    }
}

/// The simulation of `config`, not yet run, writing its trace as JSON lines to `path`.
/// Run it (at once or in steps), then read the trace back with [`read_trace`].
///
/// # Panics
/// If the configuration is refused or the trace file cannot be created.
#[must_use]
pub fn traced(config: SimConfig, path: &Path) -> Simulation {
    let mut sim = Simulation::new(config).expect("a valid configuration");
    let file = std::fs::File::create(path).expect("trace file");
    sim.set_trace_writer(TraceWriter::new(file, TraceFormat::Jsonl).expect("trace writer"));
    sim
}

/// Finishes the trace `sim` writes to `path` (see [`traced`]) and reads it back.
///
/// # Panics
/// If the trace cannot be written or a line is not a trace record.
#[must_use]
pub fn read_trace(sim: &mut Simulation, path: &Path) -> Vec<TraceRecord> {
    sim.finish_trace().expect("trace written");
    let text = std::fs::read_to_string(path).expect("trace read back");
    text.lines()
        .map(|line| serde_json::from_str(line).expect("each trace line is a record"))
        .collect()
}

/// A fault striking at `at`, undone after `lasting` if given.
#[must_use]
pub fn fault(at: Duration, action: FaultAction, lasting: Option<Duration>) -> Fault {
    Fault {
        at,
        action,
        duration: lasting,
        line: None,
    }
}

/// A fresh, empty directory `name` under `base` (pass `env!("CARGO_TARGET_TMPDIR")`).
///
/// # Panics
/// If the directory cannot be made.
#[must_use]
pub fn scratch_dir(base: &str, name: &str) -> PathBuf {
    let dir = Path::new(base).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// `config` as a scenario file that `nefele_sim::scenario::parse` reads back to the
/// same run (`nefele_sim::scenario_toml::to_toml`).
pub use nefele_sim::scenario_toml::to_toml as scenario_toml;

/// The `nefele-sim` binary of this build, built first if needed, or why there is none.
///
/// `CARGO_BIN_EXE_*` is only set for a binary's own package, and `cargo test` builds
/// another package's binaries only when that package has integration tests. So this
/// asks the cargo running the tests (`$CARGO`) to build `nefele-sim`, in the profile
/// of this test executable (`<target>/<profile dir>/deps/<test>`), into a target
/// directory of its own (`<target>/nefele-sim-for-tests`): a build of one package
/// unifies its dependencies' features differently from the workspace's, and
/// rebuilding the workspace's libraries under the running tests once broke the doc
/// tests that link them (`can't find crate for nefele_sim` in a CI run). When
/// fresh, that is a no-op. Built once per test process.
fn nefele_sim_binary() -> Result<PathBuf, String> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY.get_or_init(build_nefele_sim).clone()
}

/// The `nefele-sim` binary for a test that runs it ([`nefele_sim_binary`]). `None`
/// when it cannot be had, which records the test as skipped; under CI
/// (`NEFELE_CI=1`) that fails the test instead (`nefele_test_support::require_ok`).
pub fn required_nefele_sim() -> Option<PathBuf> {
    nefele_test_support::require_ok(nefele_sim_binary(), "the nefele-sim binary")
}

fn build_nefele_sim() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("no test executable path: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("the test executable is not in <target>/<profile>/deps")?;
    let target_dir = profile_dir.parent().ok_or("no target directory")?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(name) => name,
        None => return Err("the profile directory has no name".to_owned()),
    };
    let own_target = target_dir.join("nefele-sim-for-tests");
    let profile_name = profile_dir
        .file_name()
        .ok_or("the profile directory has no name")?;
    let binary = own_target
        .join(profile_name)
        .join(format!("nefele-sim{}", std::env::consts::EXE_SUFFIX));
    let cargo = std::env::var_os("CARGO").ok_or("$CARGO is not set (not run by cargo test)")?;
    let output = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "nefele-sim",
            "--bin",
            "nefele-sim",
        ])
        .args(["--profile", profile])
        .arg("--target-dir")
        .arg(&own_target)
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo build -p nefele-sim failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!("{} is missing after the build", binary.display()))
    }
}
