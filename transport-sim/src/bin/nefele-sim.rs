//! `nefele-sim`: runs a seeded simulation of a Nefele datacenter.
//!
//! `nefele-sim run` with no flags simulates 1,000 agents for 60 simulated
//! seconds. Flags override the scenario file, which overrides the defaults.
//! Bad flags or a bad scenario file exit with code 2 before anything runs, and
//! the report and trace files are written under temporary names and renamed
//! into place only when complete.

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

fn main() -> ExitCode {
    let Command::Run(args) = Cli::parse().command;
    match run(args) {
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
struct PendingFile {
    path: PathBuf,
    partial: PathBuf,
}

impl PendingFile {
    fn create(path: &Path) -> Result<(Self, std::fs::File), Failure> {
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = std::fs::File::create(&partial).map_err(|e| io_failure(&partial, e))?;
        Ok((
            PendingFile {
                path: path.to_owned(),
                partial,
            },
            file,
        ))
    }

    fn commit(self) -> Result<(), Failure> {
        std::fs::rename(&self.partial, &self.path).map_err(|e| io_failure(&self.path, e))
    }

    fn abandon(self) {
        let _ = std::fs::remove_file(&self.partial);
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
        let (pending, file) = PendingFile::create(path)?;
        if let Err(e) = serde_json::to_writer_pretty(&file, &report)
            .map_err(std::io::Error::from)
            .and_then(|()| file.sync_all())
        {
            pending.abandon();
            return Err(io_failure(path, e));
        }
        pending.commit()?;
    }
    print_summary(&report, scenario.description.as_deref());
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

fn print_summary(r: &Report, description: Option<&str>) {
    println!(
        "scenario {}: {} agents, seed {}, {:.1} simulated s in {:.2} s wall",
        r.scenario, r.nodes, r.seed, r.sim_seconds, r.wall_seconds
    );
    if let Some(d) = description {
        println!("  {d}");
    }
    println!(
        "events {} ({:.0}/s); messages delivered {}, dropped {} (loss {}, partition {}, down {}); faults {}",
        r.events,
        r.events_per_second,
        r.messages_delivered,
        r.messages_dropped,
        r.stats.dropped_loss,
        r.stats.dropped_partition,
        r.stats.dropped_down,
        r.stats.faults,
    );
    println!(
        "largest message {} bytes; peak memory {:.1} MiB ({} bytes per agent)",
        r.stats.max_message_bytes,
        r.peak_rss_bytes as f64 / (1 << 20) as f64,
        r.rss_bytes_per_agent
    );
    let rejected: u64 = r.stats.rejected.values().sum();
    println!("rejected peer messages {rejected} {:?}", r.stats.rejected);
    let f = &r.federation;
    if let Some(p) = &f.primary {
        let secs = |s: Option<f64>| s.map_or_else(|| "never".to_owned(), |s| format!("{s:.2}s"));
        println!(
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
        );
        if let Some(why) = &p.last_failure {
            println!("  not converged at the end: {why}");
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
        println!(
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
        );
    }
    match &r.invariants.first_violation {
        None => println!(
            "invariants: {} checks, {} violations",
            r.invariants.checks, r.invariants.violations
        ),
        Some(v) => println!(
            "invariants: {} checks, {} violations; first at {:.3}s: {}: {}",
            r.invariants.checks, r.invariants.violations, v.at_s, v.invariant, v.message
        ),
    }
    println!("trace_hash={}", r.trace_hash);
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
