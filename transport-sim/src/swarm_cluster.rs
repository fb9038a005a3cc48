//! The swarm's seeds run as processes on a Nefele cluster: one `nefele-sim swarm`
//! of a single seed per process, spawned through libnefele and waited for, so a
//! researcher with many machines sweeps thousands of seeds at the speed of the
//! cluster (`nefele-sim swarm --on-cluster`).
//!
//! A worker says only pass or fail, by its exit code (0 or 1), since nothing else
//! of it comes back to the caller. Every seed is deterministic, so the caller
//! replays each failing seed here ([`crate::swarm::run_config`]) to learn its
//! invariant, first failure and trace hash, and writes its scenario file as a
//! local swarm does: the summary is the one a local swarm of the same seeds
//! prints. Two things a local swarm cannot meet are reported as failures of
//! their own, never as passes:
//! - [`NOT_RUN`]: the seed's process could not be started, or ended by a signal,
//!   its host's loss or an unexpected exit code, [`ATTEMPTS`] times in a row;
//! - [`CLUSTER_ONLY`]: it failed on the cluster but passed when replayed here (the
//!   hosts run another `nefele-sim` than this one).
//!
//! Every host must show the worker binary at the same path in its tenants' view
//! (`/usr/local/bin`, or each host's tenant `/data`). Workers are spawned by
//! `jobs` threads, each with its own connection, each keeping one seed in flight;
//! a worker reserves `cpu_millicores` and `memory_bytes`, so placement spreads
//! them over the cluster's free capacity.

use crate::checker::{InvariantFailures, Violation};
use crate::swarm::{self, Limits, SeedOutcome};
use nefele::client::Client;
use nefele::ClientError;
use nefele_api::{ExitStatus, ProcSpec, ResourcePolicy};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

/// The invariant a seed fails when the cluster could not run it.
pub const NOT_RUN: &str = "swarm.not-run";
/// The invariant a seed fails when it failed on the cluster but passes here.
pub const CLUSTER_ONLY: &str = "swarm.cluster-only";
/// Tries per seed before it counts as not run.
pub const ATTEMPTS: u32 = 3;
/// The pause before a seed's next try.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// How to reach the cluster and what each worker asks of it.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The local agent's API socket.
    pub socket: PathBuf,
    /// The tenant token (without one, the agent maps the caller's uid).
    pub token: Option<String>,
    /// The `nefele-sim` binary, as every host's tenants see it.
    pub sim_bin: String,
    /// Seeds in flight at once.
    pub jobs: usize,
    /// Cpu each worker reserves, in millicores.
    pub cpu_millicores: u32,
    /// Memory each worker reserves, in bytes.
    pub memory_bytes: u64,
}

/// Why a swarm could not use the cluster at all.
#[derive(Debug, thiserror::Error)]
pub enum ClusterSwarmError {
    /// No connection to the local agent.
    #[error("cannot reach the local agent: {0}")]
    Connect(#[source] ClientError),
}

/// What the cluster said of one seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerResult {
    /// The worker exited 0: no invariant failed.
    Passed,
    /// The worker exited 1: an invariant failed.
    Failed,
    /// The seed did not run to its end; why.
    NotRun(String),
}

/// The command line of the worker for `seed`: a one-seed swarm with `limits`, so it
/// draws the same configuration as a local swarm would.
#[must_use]
pub fn worker_argv(sim_bin: &str, seed: u64, limits: &Limits) -> Vec<String> {
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    let mut argv = vec![
        sim_bin.to_owned(),
        "swarm".to_owned(),
        "--quiet".to_owned(),
        "--jobs=1".to_owned(),
        "--seeds=1".to_owned(),
        format!("--first-seed={seed}"),
        format!("--min-nodes={}", limits.min_nodes),
        format!("--max-nodes={}", limits.max_nodes),
        format!("--min-duration={}", ms(limits.min_duration)),
        format!("--max-duration={}", ms(limits.max_duration)),
        // The worker's own scenario file is not needed: the caller replays the seed.
        "--out=/tmp/nefele-swarm".to_owned(),
    ];
    if !limits.supervision {
        argv.push("--no-supervision".to_owned());
    }
    if !limits.messaging {
        argv.push("--no-messaging".to_owned());
    }
    argv
}

/// What a worker's exit says of its seed.
#[must_use]
pub fn classify(status: &ExitStatus) -> WorkerResult {
    match status {
        ExitStatus::Code(0) => WorkerResult::Passed,
        ExitStatus::Code(1) => WorkerResult::Failed,
        ExitStatus::Code(code) => {
            WorkerResult::NotRun(format!("the worker exited with code {code}"))
        }
        ExitStatus::Signaled(signal) => {
            WorkerResult::NotRun(format!("the worker was ended by signal {signal}"))
        }
        ExitStatus::OutOfMemory => {
            WorkerResult::NotRun("the worker went over its memory reservation".to_owned())
        }
        ExitStatus::Lost => WorkerResult::NotRun("the worker's host was lost".to_owned()),
    }
}

/// The outcome of a seed the cluster ran: a pass is taken as said (with the
/// configuration the seed draws); a failure is replayed here for its details.
#[must_use]
pub fn outcome(seed: u64, limits: &Limits, result: &WorkerResult) -> SeedOutcome {
    let config = swarm::draw(seed, limits);
    let unreplayed = |config| SeedOutcome {
        seed,
        config,
        checks: 0,
        failures: BTreeMap::new(),
        trace_hash: String::new(),
    };
    match result {
        WorkerResult::Passed => unreplayed(config),
        WorkerResult::Failed => {
            let replayed = swarm::run_config(config, &|_| {});
            if replayed.failed() {
                replayed
            } else {
                failed_as(
                    replayed,
                    CLUSTER_ONLY,
                    "failed on the cluster but passes here: do the hosts run this nefele-sim?",
                )
            }
        }
        WorkerResult::NotRun(why) => failed_as(unreplayed(config), NOT_RUN, why),
    }
}

fn failed_as(mut outcome: SeedOutcome, invariant: &'static str, why: &str) -> SeedOutcome {
    let first = Violation {
        at_s: 0.0,
        invariant,
        message: why.to_owned(),
    };
    outcome.failures.insert(
        invariant,
        InvariantFailures {
            violations: 1,
            first,
        },
    );
    outcome
}

/// Runs one seed on the cluster through `client`, trying up to [`ATTEMPTS`] times.
fn run_seed(
    client: &mut Client,
    options: &ClusterOptions,
    seed: u64,
    limits: &Limits,
) -> WorkerResult {
    let spec = ProcSpec {
        path: options.sim_bin.clone(),
        argv: worker_argv(&options.sim_bin, seed, limits),
        resources: ResourcePolicy {
            cpu_millicores: Some(options.cpu_millicores),
            memory_bytes: Some(options.memory_bytes),
            ..ResourcePolicy::default()
        },
        ..ProcSpec::default()
    };
    let mut last = WorkerResult::NotRun("never tried".to_owned());
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(RETRY_PAUSE);
        }
        last = match client.spawn(&spec).and_then(|pid| client.wait(pid)) {
            Ok(status) => classify(&status),
            Err(e) => WorkerResult::NotRun(e.to_string()),
        };
        if !matches!(last, WorkerResult::NotRun(_)) {
            break;
        }
    }
    last
}

/// Runs every seed of `seeds` on the cluster while `keep_going()` says so, calling
/// `on_outcome` as each is known (in no set order). Returns the outcomes sorted by
/// seed. Fails only if no connection to the agent can be made.
pub fn run_seeds(
    seeds: Range<u64>,
    limits: &Limits,
    options: &ClusterOptions,
    keep_going: &(dyn Fn() -> bool + Sync),
    on_outcome: &(dyn Fn(&SeedOutcome) + Sync),
) -> Result<Vec<SeedOutcome>, ClusterSwarmError> {
    let connect = || Client::connect(&options.socket, options.token.as_deref());
    // Fail at once, with the agent's reason, rather than once per thread.
    drop(connect().map_err(ClusterSwarmError::Connect)?);
    let runner = || -> Box<dyn FnMut(u64) -> SeedOutcome + '_> {
        let mut client = connect();
        Box::new(move |seed| {
            let result = match &mut client {
                Ok(client) => run_seed(client, options, seed, limits),
                Err(e) => WorkerResult::NotRun(format!("no connection: {e}")),
            };
            outcome(seed, limits, &result)
        })
    };
    Ok(swarm::run_each(
        seeds,
        options.jobs,
        &runner,
        keep_going,
        on_outcome,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Limits {
        Limits {
            min_nodes: 5,
            max_nodes: 12,
            min_duration: Duration::from_secs(20),
            max_duration: Duration::from_millis(25_500),
            supervision: false,
            messaging: false,
        }
    }

    #[test]
    fn a_workers_command_line_draws_the_seeds_configuration() {
        let argv = worker_argv("/data/nefele-sim", 42, &small());
        assert_eq!(argv[0], "/data/nefele-sim");
        assert!(argv.contains(&"--first-seed=42".to_owned()));
        assert!(argv.contains(&"--max-duration=25500ms".to_owned()));
        assert!(argv.contains(&"--min-nodes=5".to_owned()));
        assert!(argv.contains(&"--seeds=1".to_owned()));
        assert!(argv.contains(&"--no-supervision".to_owned()));
        assert!(argv.contains(&"--no-messaging".to_owned()));
    }

    #[test]
    fn only_exit_codes_0_and_1_are_verdicts() {
        assert_eq!(classify(&ExitStatus::Code(0)), WorkerResult::Passed);
        assert_eq!(classify(&ExitStatus::Code(1)), WorkerResult::Failed);
        for status in [
            ExitStatus::Code(2),
            ExitStatus::Code(127),
            ExitStatus::Signaled(9),
            ExitStatus::OutOfMemory,
            ExitStatus::Lost,
        ] {
            assert!(
                matches!(classify(&status), WorkerResult::NotRun(_)),
                "{status:?}"
            );
        }
    }

    #[test]
    fn a_seed_not_run_fails_by_name_and_a_pass_is_a_pass() {
        let not_run = outcome(3, &small(), &WorkerResult::NotRun("host lost".into()));
        assert_eq!(not_run.first_failure().unwrap().first.invariant, NOT_RUN);
        assert_eq!(not_run.config.nodes, swarm::draw(3, &small()).nodes);
        assert!(!outcome(3, &small(), &WorkerResult::Passed).failed());
    }

    #[test]
    fn a_failure_the_replay_does_not_show_is_reported_not_hidden() {
        // Seed 1 of these limits passes when run here, so a worker that said it
        // failed ran something else.
        let replayed = swarm::run_config(swarm::draw(1, &small()), &|_| {});
        assert!(!replayed.failed(), "the chosen seed must pass here");
        let o = outcome(1, &small(), &WorkerResult::Failed);
        assert_eq!(o.first_failure().unwrap().first.invariant, CLUSTER_ONLY);
        assert_eq!(o.trace_hash, replayed.trace_hash);
    }
}
