//! `nefele-sim`: runs a seeded simulation of a Nefele datacenter (`run`), many seeds
//! of drawn configurations (`swarm`, see `nefele_sim::swarm`), and cuts a failing
//! scenario down (`shrink`, see `nefele_sim::shrink`). `swarm --on-cluster` runs its
//! seeds as processes on a Nefele cluster (see `nefele_sim::swarm_cluster`).
//!
//! `nefele-sim run` with no flags simulates 1,000 agents for 60 simulated
//! seconds. Flags override the scenario file, which overrides the defaults.
//! Bad flags or a bad scenario file exit with code 2 before anything runs, and
//! the report, trace, page and scenario files are written under temporary names and
//! renamed into place only when complete (a device or a pipe, such as `/dev/null`,
//! is written in place). `swarm` exits with code 1 if a seed fails.

use clap::{Args, Parser, Subcommand};

/// mimalloc: the simulation allocates and frees small objects (messages, table
/// entries) across 10,000 agents' worth of memory; the system allocator spent
/// about 5% of place-10k's time and fragmented its heap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use indicatif::{ProgressBar, ProgressStyle};
use nefele_sim::faults::RandomFaults;
use nefele_sim::report::Report;
use nefele_sim::scenario::{self, Scenario};
use nefele_sim::trace::{TraceFormat, TraceWriter};
use nefele_sim::{SimConfig, Simulation};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "nefele-sim",
    version,
    about = "Deterministic simulator of a Nefele datacenter"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one seeded simulation and print a summary ending with `trace_hash=<hex>`.
    Run(RunArgs),
    /// Run many seeds, each drawing a whole configuration; print a table of failures by
    /// invariant and write a replayable scenario file per failing seed (exit 1 if any).
    Swarm(SwarmArgs),
    /// Cut a failing scenario down while it still fails the same invariant.
    Shrink(ShrinkArgs),
}

#[derive(Args)]
struct SwarmArgs {
    /// Seeds to run.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Start no new seed after this much wall time (e.g. 10m); the seeds run are then
    /// the first ones, as many as the time allowed.
    #[arg(long, value_parser = parse_duration)]
    budget: Option<Duration>,
    /// Seeds run at once [default: the number of cores].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    jobs: Option<u64>,
    /// Where failing seeds' scenario files go.
    #[arg(long, value_name = "DIR", default_value = "swarm-failures")]
    out: PathBuf,
    /// The fewest agents a seed draws.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    min_nodes: u32,
    /// The most agents a seed draws.
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_nodes: u32,
    /// The shortest simulated run a seed draws (raised to fit its quiet phase).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    min_duration: Duration,
    /// The longest simulated run a seed draws.
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    max_duration: Duration,
    /// No seed draws a supervision workload (by default a third of them do).
    #[arg(long)]
    no_supervision: bool,
    /// No seed draws a messaging workload (by default a third of them do: request
    /// and response, pub/sub, group sends, failover, external calls through the
    /// proxies, each kind in some of them).
    #[arg(long)]
    no_messaging: bool,
    /// Write the summary and a plot of the seeds as a self-contained HTML page here.
    #[arg(long, value_name = "FILE.html")]
    html: Option<PathBuf>,
    /// No line per seed on stderr.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Running a swarm's seeds on a Nefele cluster (see `nefele_sim::swarm_cluster`).
#[derive(Args)]
struct ClusterArgs {
    /// Run each seed as a process on the Nefele cluster of the local agent; `--jobs`
    /// is then the seeds in flight [default: 16].
    #[arg(long)]
    on_cluster: bool,
    /// The local agent's API socket (with --on-cluster) [default: NEFELE_SOCKET, or
    /// libnefele's default].
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// The tenant token (with --on-cluster) [default: NEFELE_TOKEN; without one, the
    /// agent maps your uid to a tenant]. Prefer the environment: other local users
    /// can read a command line.
    #[arg(long, requires = "on_cluster")]
    token: Option<String>,
    /// The nefele-sim each worker runs, as every host's tenants see it (with
    /// --on-cluster) [default: this binary's path].
    #[arg(long, value_name = "PATH", requires = "on_cluster")]
    sim_bin: Option<String>,
    /// Cpu each worker reserves (with --on-cluster): 500m, 0.5 or 2.
    #[arg(long, default_value = "1", value_parser = nefele::quantity::parse_cpu)]
    worker_cpu: u32,
    /// Memory each worker reserves (with --on-cluster): 512M, 1G.
    #[arg(long, default_value = "1G", value_parser = nefele::quantity::parse_memory)]
    worker_memory: u64,
}

impl ClusterArgs {
    /// The options of a swarm on the cluster, or `None` for a local one.
    fn options(
        &self,
        jobs: Option<u64>,
    ) -> Result<Option<nefele_sim::swarm_cluster::ClusterOptions>, Failure> {
        if !self.on_cluster {
            return Ok(None);
        }
        let sim_bin = match &self.sim_bin {
            Some(path) => path.clone(),
            None => std::env::current_exe()
                .map_err(|e| bad_input(format!("--sim-bin: this binary's path is unknown ({e})")))?
                .to_string_lossy()
                .into_owned(),
        };
        Ok(Some(nefele_sim::swarm_cluster::ClusterOptions {
            socket: self
                .socket
                .clone()
                .unwrap_or_else(nefele::client::default_socket),
            token: self
                .token
                .clone()
                .or_else(|| std::env::var(nefele::client::TOKEN_ENV).ok()),
            sim_bin,
            jobs: jobs.map_or(16, |j| j as usize),
            cpu_millicores: self.worker_cpu,
            memory_bytes: self.worker_memory,
        }))
    }
}

#[derive(Args)]
struct ShrinkArgs {
    /// The failing scenario file.
    file: PathBuf,
    /// Where the shrunk scenario goes [default: FILE with `.shrunk.toml` for `.toml`].
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// The invariant to keep failing [default: the first the scenario fails].
    #[arg(long)]
    invariant: Option<String>,
    /// Candidates run at once [default: the number of cores].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    jobs: Option<u64>,
    /// Runs at most.
    #[arg(long, default_value_t = 300)]
    max_runs: u32,
    /// Stop searching after this much wall time (e.g. 5m); the smallest so far is written.
    #[arg(long, value_parser = parse_duration)]
    budget: Option<Duration>,
}

#[derive(Args)]
struct RunArgs {
    /// Scenario file (TOML); flags given here override its fields.
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Agents in the DC [default: 1000, or the scenario's].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    nodes: Option<u32>,
    /// Seed of every random choice in the run [default: 1, or the scenario's].
    #[arg(long)]
    seed: Option<u64>,
    /// Simulated time to run, e.g. 60s or 2m [default: 60s, or the scenario's].
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Hosts per rack (the broadcast domain).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    hosts_per_rack: Option<u32>,
    /// Racks per row.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    racks_per_row: Option<u32>,
    /// Probability that a message is lost.
    #[arg(long, value_parser = parse_probability)]
    loss: Option<f64>,
    /// Probability that a message is delivered twice.
    #[arg(long, value_parser = parse_probability)]
    duplicate: Option<f64>,
    /// Probability that a message is held back and overtaken.
    #[arg(long, value_parser = parse_probability)]
    reorder: Option<f64>,
    /// A fault, as an inline TOML table: '{ at = "30s", crash = { rack = 3 }, duration = "10s" }'. Repeatable.
    #[arg(long = "fault", value_name = "TOML", value_parser = scenario::parse_fault)]
    faults: Vec<nefele_sim::faults::Fault>,
    /// Seeded random faults of every kind, about one per this interval (e.g. 5s).
    #[arg(long, value_name = "INTERVAL", value_parser = parse_duration)]
    random_faults: Option<Duration>,
    /// Baseline placers to run on the same workload and topology, reported beside Nefele.
    #[arg(long, value_delimiter = ',', value_name = "bfd,sparrow")]
    baseline: Vec<nefele_sim::baseline::Baseline>,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE.json")]
    report: Option<PathBuf>,
    /// Write the trace here (Chrome trace JSON, or JSON lines if the name ends in .jsonl).
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Write a self-contained HTML page of plots over simulated time here.
    #[arg(long, value_name = "FILE.html")]
    html: Option<PathBuf>,
    /// The trace's format, if not implied by its name.
    #[arg(long, value_enum, requires = "trace")]
    trace_format: Option<TraceFormat>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    nefele_sim::duration_text::parse(text)
}

fn parse_probability(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{text:?} is not a probability in [0, 1]")),
    }
}

/// A failure, with the exit code it deserves (2: bad input, 1: the run or I/O failed).
struct Failure {
    code: u8,
    message: String,
}

fn bad_input(message: impl ToString) -> Failure {
    Failure {
        code: 2,
        message: message.to_string(),
    }
}

fn io_failure(path: &Path, e: impl std::fmt::Display) -> Failure {
    Failure {
        code: 1,
        message: format!("{}: {e}", path.display()),
    }
}

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_e` of mimalloc.h
/// version 3; libmimalloc-sys names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps memory the simulation freed instead of handing it back to the system
/// after 10 ms (mimalloc's default). A run's heap only grows towards its peak;
/// purging parts of it split its huge pages, and place-10k spent 8% more user
/// time on the misses that followed.
fn keep_freed_memory() {
    // SAFETY: `mi_option_set` only stores an option's value; called before any
    // thread is spawned.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

fn main() -> ExitCode {
    keep_freed_memory();
    let result = match Cli::parse().command {
        Command::Run(args) => run(args),
        Command::Swarm(args) => swarm(&args),
        Command::Shrink(args) => shrink(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn scenario_from(args: &RunArgs) -> Result<Scenario, Failure> {
    let mut scenario = match &args.scenario {
        Some(path) => scenario::load(path).map_err(bad_input)?,
        None => Scenario {
            name: "default".to_owned(),
            description: None,
            config: SimConfig::default(),
        },
    };
    let c = &mut scenario.config;
    c.seed = args.seed.unwrap_or(c.seed);
    c.nodes = args.nodes.unwrap_or(c.nodes);
    c.duration = args.duration.unwrap_or(c.duration);
    c.topology.hosts_per_rack = args.hosts_per_rack.unwrap_or(c.topology.hosts_per_rack);
    c.topology.racks_per_row = args.racks_per_row.unwrap_or(c.topology.racks_per_row);
    c.network.loss = args.loss.unwrap_or(c.network.loss);
    c.network.duplicate = args.duplicate.unwrap_or(c.network.duplicate);
    c.network.reorder = args.reorder.unwrap_or(c.network.reorder);
    c.faults.extend(args.faults.iter().cloned());
    if let Some(interval) = args.random_faults {
        c.random_faults = Some(RandomFaults::every(interval));
    }
    if c.duration.is_zero() {
        return Err(bad_input("--duration: must be more than zero"));
    }
    Ok(scenario)
}

/// A file written under a temporary name and renamed into place when complete.
/// A path that names something other than a regular file (`/dev/null`,
/// `/dev/stdout`, a FIFO) is written in place: renaming over it would replace the
/// device or pipe with a file (before, `--report /dev/null` run as root replaced
/// the machine's `/dev/null`).
struct PendingFile {
    path: PathBuf,
    /// The temporary name, for a regular file (or a path not there yet).
    partial: Option<PathBuf>,
}

impl PendingFile {
    fn create(path: &Path) -> Result<(Self, std::fs::File), Failure> {
        let special = std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir());
        if special {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| io_failure(path, e))?;
            let pending = PendingFile {
                path: path.to_owned(),
                partial: None,
            };
            return Ok((pending, file));
        }
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = std::fs::File::create(&partial).map_err(|e| io_failure(&partial, e))?;
        Ok((
            PendingFile {
                path: path.to_owned(),
                partial: Some(partial),
            },
            file,
        ))
    }

    /// Makes what was written durable before the rename (a device or a pipe has
    /// nothing to sync: `fsync` fails on them).
    fn sync(&self, file: &std::fs::File) -> std::io::Result<()> {
        match self.partial {
            Some(_) => file.sync_all(),
            None => Ok(()),
        }
    }

    fn commit(self) -> Result<(), Failure> {
        match &self.partial {
            Some(partial) => {
                std::fs::rename(partial, &self.path).map_err(|e| io_failure(&self.path, e))
            }
            None => Ok(()),
        }
    }

    fn abandon(self) {
        if let Some(partial) = &self.partial {
            let _ = std::fs::remove_file(partial);
        }
    }
}

fn run(args: RunArgs) -> Result<(), Failure> {
    let scenario = scenario_from(&args)?;
    let source = args
        .scenario
        .as_ref()
        .map_or_else(|| "flags".to_owned(), |p| p.display().to_string());
    let mut sim = Simulation::new(scenario.config.clone())
        .map_err(|e| bad_input(format!("{source}: {e}")))?;

    let trace = match &args.trace {
        Some(path) => {
            let format = args
                .trace_format
                .unwrap_or_else(|| TraceFormat::for_path(path));
            let (pending, file) = PendingFile::create(path)?;
            match TraceWriter::new(file, format) {
                Ok(writer) => sim.set_trace_writer(writer),
                Err(e) => {
                    pending.abandon();
                    return Err(io_failure(path, e));
                }
            }
            Some(pending)
        }
        None => None,
    };

    if args.html.is_some() {
        sim.record_timeline();
    }
    let duration = scenario.config.duration;
    let bar = progress_bar(duration, args.quiet);
    let started = Instant::now();
    sim.run(|now| bar.set_position(now.as_nanos() / 1_000_000));
    let wall_seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();

    if let Some(pending) = trace {
        let path = pending.path.clone();
        match sim.finish_trace() {
            Ok(()) => pending.commit()?,
            Err(e) => {
                pending.abandon();
                return Err(io_failure(&path, e));
            }
        }
    }
    let mut report = Report::new(&scenario.name, &sim, wall_seconds, peak_rss_bytes());
    report.add_baselines(&sim, &args.baseline);
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&report).map_err(|e| io_failure(path, e))?;
        write_file(path, &json)?;
    }
    let summary = summary_lines(&report, scenario.description.as_deref());
    if let (Some(path), Some(timeline)) = (&args.html, sim.timeline()) {
        let title = format!("nefele-sim: {} (seed {})", scenario.name, report.seed);
        let page =
            nefele_sim::html::page(&title, &summary, timeline).map_err(|e| io_failure(path, e))?;
        write_file(path, &page)?;
    }
    for line in &summary {
        println!("{line}");
    }
    Ok(())
}

fn progress_bar(duration: Duration, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(duration.as_millis() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} simulated ms ({eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// The run's summary, line by line, ending with `trace_hash=<hex>`.
fn summary_lines(r: &Report, description: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    out.push(format!(
        "scenario {}: {} agents, seed {}, {:.1} simulated s in {:.2} s wall",
        r.scenario, r.nodes, r.seed, r.sim_seconds, r.wall_seconds
    ));
    if let Some(d) = description {
        out.push(format!("  {d}"));
    }
    out.push(format!(
        "events {} ({:.0}/s); messages delivered {}, dropped {} (loss {}, partition {}, down {}); faults {}",
        r.events,
        r.events_per_second,
        r.messages_delivered,
        r.messages_dropped,
        r.stats.dropped_loss,
        r.stats.dropped_partition,
        r.stats.dropped_down,
        r.stats.faults,
    ));
    out.push(format!(
        "largest message {} bytes; peak memory {:.1} MiB ({} bytes per agent)",
        r.stats.max_message_bytes,
        r.peak_rss_bytes as f64 / (1 << 20) as f64,
        r.rss_bytes_per_agent
    ));
    let rejected: u64 = r.stats.rejected.values().sum();
    out.push(format!(
        "rejected peer messages {rejected} {:?}",
        r.stats.rejected
    ));
    let f = &r.federation;
    if let Some(p) = &f.primary {
        let secs = |s: Option<f64>| s.map_or_else(|| "never".to_owned(), |s| format!("{s:.2}s"));
        out.push(format!(
            "federation {}: converged at {}, {} top group(s), depth {}, {} groups (largest {}), last repair {}, {:.1} msgs/agent/s, detection p99 {}, false removals {}",
            p.name,
            secs(p.converged_at_s),
            p.shape.top_groups,
            p.shape.depth,
            p.shape.groups,
            p.shape.max_group_size,
            p.last_repair_s.map_or_else(|| "-".to_owned(), |s| format!("{s:.2}s")),
            f.control_msgs_per_agent_per_s,
            f.detection_p99_ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0}ms")),
            f.false_removals,
        ));
        if let Some(why) = &p.last_failure {
            out.push(format!("  not converged at the end: {why}"));
        }
    }
    let placers = r.placement.iter().flat_map(|p| {
        [
            ("nefele", Some(&p.nefele)),
            ("bfd", p.bfd.as_ref()),
            ("sparrow", p.sparrow.as_ref()),
        ]
    });
    for (name, n) in placers {
        let Some(n) = n else { continue };
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}ms"));
        out.push(format!(
            "placement {name}: {} requests, {} placed ({} gangs of {}), {} rejected, {} unanswered, {} processes; utilisation cpu {:.1}% mem {:.1}%; latency p50 {} p99 {} (placed p50 {} p99 {}, rejected p99 {}); {:.1} msgs/request; local {:.1}%",
            n.requests,
            n.placed_requests,
            n.placed_gang_requests,
            n.gang_requests,
            n.rejected_requests,
            n.unanswered_requests,
            n.placed_processes,
            n.mean_utilization.cpu * 100.0,
            n.mean_utilization.memory * 100.0,
            ms(n.latency_p50_ms),
            ms(n.latency_p99_ms),
            ms(n.placed_latency_p50_ms),
            ms(n.placed_latency_p99_ms),
            ms(n.rejected_latency_p99_ms),
            n.msgs_per_request,
            n.local_fraction * 100.0,
        ));
    }
    match &r.invariants.first_violation {
        None => out.push(format!(
            "invariants: {} checks, {} violations",
            r.invariants.checks, r.invariants.violations
        )),
        Some(v) => out.push(format!(
            "invariants: {} checks, {} violations; first at {:.3}s: {}: {}",
            r.invariants.checks, r.invariants.violations, v.at_s, v.invariant, v.message
        )),
    }
    out.push(format!("trace_hash={}", r.trace_hash));
    out
}

fn jobs(flag: Option<u64>) -> usize {
    flag.map_or_else(
        || std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        |j| j as usize,
    )
}

/// `true` until `budget` has passed since now (always, without one).
fn before(budget: Option<Duration>) -> impl Fn() -> bool + Sync {
    let deadline = budget.map(|b| Instant::now() + b);
    move || deadline.is_none_or(|d| Instant::now() < d)
}

/// Writes `text` to `path` through a temporary name.
fn write_file(path: &Path, text: &str) -> Result<(), Failure> {
    use std::io::Write;
    let (pending, mut file) = PendingFile::create(path)?;
    if let Err(e) = file
        .write_all(text.as_bytes())
        .and_then(|()| pending.sync(&file))
    {
        pending.abandon();
        return Err(io_failure(path, e));
    }
    pending.commit()
}

fn swarm(args: &SwarmArgs) -> Result<(), Failure> {
    use nefele_sim::swarm::{self, Limits, Summary};
    let limits = Limits {
        min_nodes: args.min_nodes,
        max_nodes: args.max_nodes,
        min_duration: args.min_duration,
        max_duration: args.max_duration,
        supervision: !args.no_supervision,
        messaging: !args.no_messaging,
    };
    limits
        .validate()
        .map_err(|e| bad_input(format!("--min-/--max-{e}")))?;
    let end = args
        .first_seed
        .checked_add(args.seeds)
        .ok_or_else(|| bad_input("--first-seed + --seeds overflows"))?;
    let write_error = std::sync::Mutex::new(None);
    let on_outcome = |o: &swarm::SeedOutcome| {
        let Some(first) = o.first_failure() else {
            if !args.quiet {
                eprintln!(
                    "seed {}: ok ({} agents, {:?})",
                    o.seed, o.config.nodes, o.config.duration
                );
            }
            return;
        };
        let path = args.out.join(format!("swarm-seed-{}.toml", o.seed));
        let text = swarm::failure_file(o, &path);
        let written = std::fs::create_dir_all(&args.out)
            .map_err(|e| io_failure(&args.out, e))
            .and_then(|()| write_file(&path, &text));
        eprintln!(
            "seed {}: FAILED {} at {:.3}s: {} (replay: nefele-sim run --scenario {})",
            o.seed,
            first.first.invariant,
            first.first.at_s,
            first.first.message,
            path.display()
        );
        if let Err(e) = written {
            write_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get_or_insert(e);
        }
    };
    let started = Instant::now();
    let outcomes = match args.cluster.options(args.jobs)? {
        None => swarm::run_seeds(
            args.first_seed..end,
            &limits,
            jobs(args.jobs),
            &|_| {},
            &before(args.budget),
            &on_outcome,
        ),
        Some(options) => nefele_sim::swarm_cluster::run_seeds(
            args.first_seed..end,
            &limits,
            &options,
            &before(args.budget),
            &on_outcome,
        )
        .map_err(|e| Failure {
            code: 1,
            message: e.to_string(),
        })?,
    };
    let summary = Summary::of(&outcomes);
    if let Some(path) = &args.html {
        let page =
            nefele_sim::html::swarm_page(&summary, &outcomes).map_err(|e| io_failure(path, e))?;
        write_file(path, &page)?;
    }
    print!("{summary}");
    eprintln!(
        "{} seeds in {:.1} s wall",
        outcomes.len(),
        started.elapsed().as_secs_f64()
    );
    if let Some(e) = write_error
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    {
        return Err(e);
    }
    if summary.passed() {
        Ok(())
    } else {
        Err(Failure {
            code: 1,
            message: format!(
                "{} of {} seeds failed; their scenarios are in {}",
                summary.failures.len(),
                outcomes.len(),
                args.out.display()
            ),
        })
    }
}

fn shrink(args: &ShrinkArgs) -> Result<(), Failure> {
    use nefele_sim::shrink::{self, Options};
    let scenario = scenario::load(&args.file).map_err(bad_input)?;
    let target = match &args.invariant {
        Some(name) => name.clone(),
        None => {
            let outcome = nefele_sim::swarm::run_config(scenario.config.clone(), &|_| {});
            match outcome.first_failure() {
                Some(f) => f.first.invariant.to_owned(),
                None => {
                    return Err(Failure {
                        code: 1,
                        message: format!("{}: fails no invariant", args.file.display()),
                    })
                }
            }
        }
    };
    let out = args.out.clone().unwrap_or_else(|| {
        let mut name = args.file.with_extension("").into_os_string();
        name.push(".shrunk.toml");
        PathBuf::from(name)
    });
    eprintln!(
        "shrinking {} ({}) while it fails {target}",
        args.file.display(),
        shrink::size(&scenario.config)
    );
    let judge = shrink::fails(&target, &|_| {});
    let keep_going = before(args.budget);
    let options = Options {
        jobs: jobs(args.jobs),
        max_runs: args.max_runs,
        keep_going: &keep_going,
    };
    let shrunk =
        shrink::shrink(scenario.config.clone(), &target, &judge, &options).map_err(|e| {
            Failure {
                code: 1,
                message: format!("{}: {e}", args.file.display()),
            }
        })?;
    for step in &shrunk.steps {
        eprintln!("  kept: {step}");
    }
    let text = format!(
        "# nefele-sim shrink of {}: fails {target} at {:.3}s ({} runs)\n{}",
        args.file.display(),
        shrunk.fails_at.as_secs_f64(),
        shrunk.runs,
        nefele_sim::scenario_toml::to_toml(&format!("{}-shrunk", scenario.name), &shrunk.config),
    );
    write_file(&out, &text)?;
    println!(
        "shrunk {} to {}: fails {target} at {:.3}s; {} runs; written to {}",
        shrink::size(&scenario.config),
        shrink::size(&shrunk.config),
        shrunk.fails_at.as_secs_f64(),
        shrunk.runs,
        out.display()
    );
    Ok(())
}

/// The process's peak resident memory (VmHWM), or 0 where /proc does not say.
fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
