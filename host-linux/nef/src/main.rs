//! `nef`: the command line of Nefele. Each subcommand is one call to the local
//! agent through libnefele; the cluster looks like one machine.
//!
//! Output contract: results go to stdout; an error is exactly one line on
//! stderr, `nef: <what went wrong>`, and the exit status is 2 for a usage error,
//! 1 for anything else.

mod render;

use clap::{Args, Parser, Subcommand};
use nefele::client::{default_socket, SOCKET_ENV, TOKEN_ENV};
use nefele::quantity;
use nefele::{Client, ClientError};
use nefele_api::supervision::{
    Intensity, RestartPolicy, Strategy, SupervisedSpawn, SupervisionSpec, SupervisorId,
};
use nefele_core::host::{Affinity, ProcSpec, ResourcePolicy, Signal};
use nefele_core::ids::Pid;
use std::path::{Path, PathBuf};

/// The environment variable naming a token file, as `--token-file`.
const TOKEN_FILE_ENV: &str = "NEFELE_TOKEN_FILE";

/// The first line of `file`, without its line end.
fn read_token(file: &Path) -> Result<String, ClientError> {
    let io = |source| ClientError::Io {
        path: file.to_owned(),
        source,
    };
    let text = std::fs::read_to_string(file).map_err(io)?;
    let token = text.lines().next().unwrap_or("").trim_end();
    if token.is_empty() {
        let empty = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no token on its first line",
        );
        return Err(io(empty));
    }
    Ok(token.to_owned())
}
use std::process::ExitCode;

/// Spawn, list and kill processes across a Nefele cluster as on one machine.
#[derive(Parser)]
#[command(name = "nef", version)]
struct Cli {
    /// The local agent's API socket.
    #[arg(long, global = true, env = SOCKET_ENV)]
    socket: Option<PathBuf>,
    /// The tenant token (without one, the agent maps your uid to a tenant).
    /// Other local users can read a command line: prefer the environment or --token-file.
    #[arg(long, global = true, env = TOKEN_ENV, hide_env_values = true)]
    token: Option<String>,
    /// A file whose first line is the tenant token (used when no --token or
    /// NEFELE_TOKEN is given).
    #[arg(long, global = true, env = TOKEN_FILE_ENV, value_name = "FILE")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The federation groups of the local agent, from the top group down.
    Members {
        /// Print JSON instead of a tree.
        #[arg(long)]
        json: bool,
    },
    /// Start processes somewhere in the cluster; prints their pids, one per line.
    Spawn(SpawnArgs),
    /// Every process of your tenant in the cluster.
    Ps {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Deliver a signal to a process and its descendants.
    Kill {
        /// The process.
        pid: Pid,
        /// TERM (stop, then KILL after a grace period), KILL, or a signal number.
        #[arg(long, short, default_value = "TERM", value_parser = parse_signal)]
        signal: Signal,
    },
    /// One process's entry.
    Info {
        /// The process.
        pid: Pid,
    },
    /// Wait until a process ends, and say how.
    Wait {
        /// The process.
        pid: Pid,
    },
    /// The supervisors the local agent runs for your tenant, their children and
    /// restart history.
    Supervisors {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop a supervisor the local agent runs, and every child of it.
    StopSupervisor {
        /// The supervisor (as `nef supervisors` prints it: s<node>.<life>.<n>).
        id: SupervisorId,
    },
}

#[derive(Args)]
struct SpawnArgs {
    /// How many identical processes to start, atomically (all or none).
    #[arg(short = 'n', long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    count: u32,
    /// Cpu to reserve per process: 500m, 0.5, 2.
    #[arg(long, value_parser = quantity::parse_cpu)]
    cpu: Option<u32>,
    /// Memory to reserve per process: 512M, 1G.
    #[arg(long, value_parser = quantity::parse_memory)]
    mem: Option<u64>,
    /// An environment entry KEY=VALUE (repeatable).
    #[arg(long = "env", value_parser = parse_env)]
    envs: Vec<String>,
    /// Run on the same server as the other processes with this tag.
    #[arg(long)]
    together: Option<String>,
    /// Run on a different server from the other processes with this tag.
    #[arg(long)]
    apart: Option<String>,
    /// Spread across racks with the other processes with this tag.
    #[arg(long)]
    spread: Option<String>,
    /// Run the processes under a new supervisor with this strategy (one-for-one,
    /// one-for-all, rest-for-one); prints `supervisor <id>` before the pids.
    #[arg(long, value_parser = parse_strategy)]
    supervise: Option<Strategy>,
    /// With --supervise: when a child restarts (permanent, transient, temporary).
    #[arg(long, default_value = "permanent", value_parser = parse_policy)]
    restart: RestartPolicy,
    /// With --supervise: the most restarts of one child within --period-secs.
    #[arg(long, default_value_t = 3)]
    max_restarts: u32,
    /// With --supervise: the intensity period, in seconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    period_secs: u64,
    /// The executable (an absolute path on the hosts) and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    command: Vec<String>,
}

impl SpawnArgs {
    fn spec(&self) -> ProcSpec {
        let affinity = [
            self.together.clone().map(Affinity::Together),
            self.apart.clone().map(Affinity::Apart),
            self.spread.clone().map(Affinity::Spread),
        ];
        ProcSpec {
            path: self.command[0].clone(),
            argv: self.command.clone(),
            envp: self.envs.clone(),
            affinity: affinity.into_iter().flatten().collect(),
            resources: ResourcePolicy {
                cpu_millicores: self.cpu,
                memory_bytes: self.mem,
                ..ResourcePolicy::default()
            },
            profile: None,
        }
    }
}

fn parse_signal(s: &str) -> Result<Signal, String> {
    match s.trim_start_matches("SIG") {
        "TERM" | "15" => Ok(Signal::Terminate),
        "KILL" | "9" => Ok(Signal::Kill),
        n => match n.parse::<i32>() {
            Ok(n) if (1..65).contains(&n) => Ok(Signal::Raw(n)),
            _ => Err(format!("{s:?} is not a signal (TERM, KILL or 1..64)")),
        },
    }
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    match s {
        "one-for-one" => Ok(Strategy::OneForOne),
        "one-for-all" => Ok(Strategy::OneForAll),
        "rest-for-one" => Ok(Strategy::RestForOne),
        _ => Err(format!(
            "{s:?} is not a strategy (one-for-one, one-for-all, rest-for-one)"
        )),
    }
}

fn parse_policy(s: &str) -> Result<RestartPolicy, String> {
    match s {
        "permanent" => Ok(RestartPolicy::Permanent),
        "transient" => Ok(RestartPolicy::Transient),
        "temporary" => Ok(RestartPolicy::Temporary),
        _ => Err(format!(
            "{s:?} is not a restart policy (permanent, transient, temporary)"
        )),
    }
}

fn parse_env(s: &str) -> Result<String, String> {
    match s.split_once('=') {
        Some((k, _)) if !k.is_empty() && !k.contains('\0') => Ok(s.to_owned()),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn run(cli: Cli) -> Result<(), ClientError> {
    let socket = cli.socket.unwrap_or_else(default_socket);
    let token = match (cli.token, &cli.token_file) {
        (Some(token), _) => Some(token),
        (None, Some(file)) => Some(read_token(file)?),
        (None, None) => None,
    };
    let mut client = Client::connect(&socket, token.as_deref())?;
    match cli.command {
        Command::Members { json } => {
            let view = client.members()?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&view).expect("plain data")
                );
            } else {
                print!("{}", render::members(&view));
            }
        }
        Command::Spawn(args) if args.supervise.is_some() => {
            let spec = args.spec();
            let spawn = if args.count == 1 {
                SupervisedSpawn::One(spec)
            } else {
                SupervisedSpawn::N(args.count, spec)
            };
            let supervision = SupervisionSpec {
                strategy: args.supervise.unwrap_or(Strategy::OneForOne),
                intensity: Intensity {
                    max_restarts: args.max_restarts,
                    period: std::time::Duration::from_secs(args.period_secs),
                },
                policies: vec![args.restart],
            };
            let (id, pids) = client.spawn_supervised(spawn, supervision)?;
            println!("supervisor {id}");
            for pid in pids {
                println!("{pid}");
            }
        }
        Command::Spawn(args) => {
            let spec = args.spec();
            let pids = if args.count == 1 {
                vec![client.spawn(&spec)?]
            } else {
                client.n_spawn(args.count, &spec)?
            };
            for pid in pids {
                println!("{pid}");
            }
        }
        Command::Ps { json } => {
            let reply = client.ps()?;
            if json {
                println!("{}", render::ps_json(&reply));
            } else {
                print!("{}", render::ps_table(&reply));
            }
        }
        Command::Kill { pid, signal } => client.kill(pid, signal)?,
        Command::Info { pid } => print!("{}", render::info(&client.info(pid)?)),
        Command::Wait { pid } => println!("{pid} {}", render::exit(client.wait(pid)?)),
        Command::Supervisors { json } => {
            let list = client.supervisors()?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).expect("plain data")
                );
            } else {
                print!("{}", render::supervisors(&list));
            }
        }
        Command::StopSupervisor { id } => client.stop_supervisor(id)?,
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            eprintln!(
                "nef: {} (see nef --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nef: {e}");
            ExitCode::FAILURE
        }
    }
}
