//! `nef`: the command line of Nefele. Each subcommand is one call to the local
//! agent through libnefele; the cluster looks like one machine.
//!
//! Output contract: results go to stdout; an error is exactly one line on
//! stderr, `nef: <what went wrong>`, and the exit status is 2 for a usage error,
//! 1 for anything else.

mod msg;
mod render;
mod stats;

use clap::{Args, Parser, Subcommand};
use nefele::client::{default_socket, SOCKET_ENV, TOKEN_ENV};
use nefele::quantity;
use nefele::{Client, ClientError, SendOptions};
use nefele_api::messaging::{Delivery, Dest};
use nefele_api::supervision::{
    Intensity, RestartPolicy, Strategy, SupervisedSpawn, SupervisionSpec, SupervisorId,
};
use nefele_core::host::{Affinity, Limits, ProcSpec, ResourcePolicy, Signal, WorkloadProfile};
use nefele_core::ids::Pid;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    /// The process messaging commands act as: one of your tenant's processes on
    /// this agent's host. Inside a process started by Nefele (NEFELE_FD set, no
    /// --socket), nef connects through the process's own endpoint and acts as it.
    #[arg(long = "as", global = true, value_name = "PID")]
    act_as: Option<Pid>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One agent's metrics (Prometheus text), from the address its `metrics` setting serves them on.
    Stats {
        /// The agent's metrics address.
        #[arg(long, default_value = "127.0.0.1:9464")]
        from: String,
    },
    /// The federation groups of the local agent, from the top group down.
    Members {
        /// Print JSON instead of a tree.
        #[arg(long)]
        json: bool,
    },
    /// Start processes somewhere in the cluster; prints their pids, one per line.
    Spawn(Box<SpawnArgs>),
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
    /// Send a message: to a pid, name:NAME, group:GROUP[:PATTERN], topic:TOPIC, all, or
    /// ext:HOST:PORT (a TCP service outside the cluster, through its external proxy;
    /// the answers arrive as messages).
    Send {
        /// Where it goes.
        #[arg(value_parser = msg::parse_dest)]
        to: Dest,
        /// What it says.
        message: String,
        /// Sent again until acknowledged (the receiver sees it once).
        #[arg(long)]
        reliable: bool,
        /// Fail at a full mailbox instead of waiting for room.
        #[arg(long)]
        no_block: bool,
    },
    /// Take messages from the mailbox; fails if none comes within the timeout.
    Recv {
        /// Seconds to wait for the first message (0: do not wait).
        #[arg(long, default_value = "10", value_parser = parse_seconds)]
        timeout: Duration,
        /// The most messages to take.
        #[arg(long, default_value_t = 1)]
        max: u32,
        /// Print only the messages' bytes, one per line.
        #[arg(long, conflicts_with = "json")]
        data: bool,
        /// Print one JSON object per message.
        #[arg(long)]
        json: bool,
    },
    /// Register a name for the process.
    Register {
        /// The name.
        name: String,
    },
    /// Drop a name.
    Unregister {
        /// The name.
        name: String,
    },
    /// Where names are registered: one line (or JSON entry) per name, `-` if none.
    Names {
        /// The names to look up.
        #[arg(required = true)]
        names: Vec<String>,
        /// Print JSON ({name: pid or null}).
        #[arg(long)]
        json: bool,
    },
    /// Join or leave a group.
    Groups {
        /// `join` or `leave`.
        #[arg(value_parser = ["join", "leave"])]
        action: String,
        /// The group.
        group: String,
    },
    /// Publish a message to a topic.
    Pub {
        /// The topic.
        topic: String,
        /// What it says.
        message: String,
    },
    /// Subscribe to topics and print what arrives until interrupted.
    Sub {
        /// The topics.
        #[arg(required = true)]
        topics: Vec<String>,
        /// Also register this name for the process while it listens (registered
        /// again, with the subscriptions, if the agent restarts).
        #[arg(long)]
        name: Option<String>,
        /// Print one JSON object per message.
        #[arg(long)]
        json: bool,
    },
    /// How far a process is (distance class), the round trip the agent measures to
    /// that class, and the round trip of `--count` empty messages sent to it (they
    /// land in its mailbox).
    Ping {
        /// A pid, or a registered name.
        target: String,
        /// Empty messages to time (0: only the class and the agent's measurement).
        #[arg(long, default_value_t = 3)]
        count: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
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

fn parse_seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("{s:?} is not a number of seconds"))
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
    /// Spread across racks with the other processes with this tag (on distinct
    /// servers at least; a warning names the tag when there were too few racks).
    #[arg(long)]
    spread: Option<String>,
    /// Run as near as placement can to this process: its server, else its rack,
    /// else its row (repeatable).
    #[arg(long, value_parser = parse_pid)]
    near: Vec<Pid>,
    /// Cpu limit per process (cgroup quota): 500m, 0.5, 2.
    #[arg(long, value_parser = quantity::parse_cpu)]
    cpu_limit: Option<u32>,
    /// Memory limit per process (over it the process is OOM-killed): 512M, 1G.
    #[arg(long, value_parser = quantity::parse_memory)]
    mem_limit: Option<u64>,
    /// The most tasks (processes and threads) per process tree.
    #[arg(long)]
    pids_limit: Option<u32>,
    /// Accelerator devices to reserve per process.
    #[arg(long)]
    accelerators: Option<u32>,
    /// The slowest cpu speed class accepted, 0 to 15: a host of relative speed s
    /// (1000 is a 2 GHz core) has class s/250, so 4 is the reference core, 6 a
    /// 3 GHz one. The spawn fails at once when no host has it.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=15))]
    cpu_class: Option<u8>,
    /// Profile: expected average cpu per process (500m, 0.5).
    #[arg(long, value_parser = quantity::parse_cpu)]
    expect_cpu: Option<u32>,
    /// Profile: expected peak memory per process (512M).
    #[arg(long, value_parser = quantity::parse_memory)]
    expect_mem: Option<u64>,
    /// Profile: expected run time in seconds, or `forever` for a service. Long
    /// jobs (a minute or more) and services spread onto the hosts with the most
    /// room; shorter ones pack onto the first host that fits.
    #[arg(long, value_parser = parse_run)]
    expect_run: Option<ExpectedRun>,
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
        let profiled =
            self.expect_cpu.is_some() || self.expect_mem.is_some() || self.expect_run.is_some();
        ProcSpec {
            path: self.command[0].clone(),
            argv: self.command.clone(),
            envp: self.envs.clone(),
            affinity: affinity
                .into_iter()
                .flatten()
                .chain(self.near.iter().copied().map(Affinity::Near))
                .collect(),
            resources: ResourcePolicy {
                cpu_millicores: self.cpu,
                memory_bytes: self.mem,
                accelerators: self.accelerators,
                cpu_class: self.cpu_class,
                limits: Limits {
                    cpu_millicores: self.cpu_limit,
                    memory_bytes: self.mem_limit,
                    pids: self.pids_limit,
                },
            },
            profile: profiled.then(|| WorkloadProfile {
                cpu_millicores: self.expect_cpu.or(self.cpu).unwrap_or(0),
                memory_bytes: self.expect_mem.or(self.mem).unwrap_or(0),
                duration: match self.expect_run {
                    Some(ExpectedRun::For(d)) => Some(d),
                    Some(ExpectedRun::Forever) | None => None,
                },
            }),
        }
    }
}

/// `--expect-run`: seconds, or until killed.
#[derive(Clone, Copy, Debug)]
enum ExpectedRun {
    For(Duration),
    Forever,
}

fn parse_run(s: &str) -> Result<ExpectedRun, String> {
    match s {
        "forever" => Ok(ExpectedRun::Forever),
        _ => parse_seconds(s).map(ExpectedRun::For),
    }
}

fn parse_pid(s: &str) -> Result<Pid, String> {
    s.parse::<Pid>()
        .map_err(|_| format!("{s:?} is not a pid (as nef spawn prints them)"))
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
    if let Command::Stats { from } = &cli.command {
        print!("{}", stats::fetch(from)?);
        return Ok(());
    }
    let endpoint = cli.socket.is_none() && std::env::var_os(nefele::client::FD_ENV).is_some();
    let socket = cli.socket.unwrap_or_else(default_socket);
    let token = match (cli.token, &cli.token_file) {
        (Some(token), _) => Some(token),
        (None, Some(file)) => Some(read_token(file)?),
        (None, None) => None,
    };
    let mut client = if endpoint {
        Client::from_endpoint()?
    } else {
        Client::connect(&socket, token.as_deref())?
    };
    if let Some(pid) = cli.act_as {
        client.act_as(pid);
    }
    match cli.command {
        // Answered above, without a connection to the agent.
        Command::Stats { .. } => {}
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
            let placed = client.n_spawn_placed(args.count, &spec)?;
            for tag in &placed.unspread {
                eprintln!("nef: spread {tag:?}: too few racks with room; on distinct servers");
            }
            for pid in placed.pids {
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
        Command::Send {
            to,
            message,
            reliable,
            no_block,
        } => {
            let options = SendOptions {
                delivery: if reliable {
                    Delivery::Reliable
                } else {
                    Delivery::AtMostOnce
                },
                no_block,
            };
            let receipt = client.send_with(to, message.as_bytes(), options)?;
            println!("reached {}", receipt.reached);
        }
        Command::Recv {
            timeout,
            max,
            data,
            json,
        } => {
            let mails = if timeout.is_zero() {
                client.try_recv(max)?
            } else {
                client.recv(max, timeout)?
            };
            if mails.is_empty() {
                return Err(ClientError::Unexpected(format!(
                    "no message within {}s",
                    timeout.as_secs_f64()
                )));
            }
            for mail in &mails {
                let line = if json {
                    msg::mail_json(mail)
                } else if data {
                    msg::mail_data(mail)
                } else {
                    msg::mail_text(mail)
                };
                println!("{line}");
            }
        }
        Command::Register { name } => client.register(&name)?,
        Command::Unregister { name } => client.unregister(&name)?,
        Command::Names { names, json } => {
            let mut found = serde_json::Map::new();
            for name in names {
                let pid = match client.whereis(&name) {
                    Ok(pid) => Some(pid),
                    Err(ClientError::Name(nefele_api::messaging::NameError::NoSuchName)) => None,
                    Err(e) => return Err(e),
                };
                if !json {
                    println!("{name} {}", pid.map_or("-".to_owned(), |p| p.to_string()));
                }
                found.insert(name, pid.map(|p| p.to_string()).into());
            }
            if json {
                println!("{}", serde_json::Value::Object(found));
            }
        }
        Command::Groups { action, group } => match action.as_str() {
            "join" => client.join(&group)?,
            _ => client.leave(&group)?,
        },
        Command::Pub { topic, message } => {
            let receipt = client.publish(&topic, message.as_bytes())?;
            println!("reached {}", receipt.reached);
        }
        Command::Sub { topics, name, json } => {
            if let Some(name) = &name {
                client.register(name)?;
            }
            for topic in &topics {
                client.subscribe(topic)?;
            }
            loop {
                // Short waits, so that an interrupted nef leaves no long receive behind.
                for mail in client.recv(64, Duration::from_secs(1))? {
                    let line = if json {
                        msg::mail_json(&mail)
                    } else {
                        msg::mail_text(&mail)
                    };
                    println!("{line}");
                }
            }
        }
        Command::Ping {
            target,
            count,
            json,
        } => ping(&mut client, &target, count, json)?,
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

/// `nef ping`: the class, the agent's measured round trip, and timed empty sends.
fn ping(client: &mut Client, target: &str, count: u32, json: bool) -> Result<(), ClientError> {
    // A name first: short names like `bee` are valid pid text too.
    let pid = match client.whereis(target) {
        Ok(pid) => pid,
        Err(ClientError::Name(nefele_api::messaging::NameError::NoSuchName)) => target
            .parse::<Pid>()
            .map_err(|_| ClientError::Name(nefele_api::messaging::NameError::NoSuchName))?,
        Err(e) => return Err(e),
    };
    let info = client.distance(pid)?;
    let mut rtts = Vec::new();
    for _ in 0..count {
        let t0 = Instant::now();
        client.send(Dest::Pid(pid), &[])?;
        rtts.push(t0.elapsed());
    }
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    if json {
        let value = serde_json::json!({
            "pid": pid.to_string(),
            "class": format!("{:?}", info.class),
            "agent_rtt_us": info.rtt.map(micros),
            "send_rtt_us": rtts.iter().map(|d| micros(*d)).collect::<Vec<_>>(),
        });
        println!("{value}");
    } else {
        let agent = info.rtt.map_or("not measured yet".to_owned(), |d| {
            format!("{:.0} µs", micros(d))
        });
        println!("{pid}: {:?}, agent-measured round trip {agent}", info.class);
        for (i, d) in rtts.iter().enumerate() {
            println!("send {}: {:.0} µs", i + 1, micros(*d));
        }
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
