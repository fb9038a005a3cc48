//! `nefeled`: the Nefele agent daemon. See `nefeled --help` and
//! `nefeled.example.toml` for the configuration.

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    daemon::main()
}

/// Under madsim the agents run inside the simulation tests, not as a binary.
#[cfg(madsim)]
fn main() {}

#[cfg(not(madsim))]
mod daemon {
    use clap::Parser;
    use nefele_transport_tcp::ClusterKey;
    use nefeled::api_server::ApiServer;
    use nefeled::beacon::{broadcast_address, Targets};
    use nefeled::config::{Config, Discovery, FileConfig, LogFormat, Overrides, ResourceOverride};
    use nefeled::{identity, linux_host, runtime, sim_host, RuntimeConfig};
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::process::ExitCode;
    use std::sync::Arc;
    use std::time::Duration;

    /// How long a stopping agent keeps sending its leave messages.
    const LEAVE_GRACE: Duration = Duration::from_secs(2);
    /// The SimHost's capacity when no override is configured.
    const SIM_HOST_CAPACITY: ResourceOverride = ResourceOverride {
        cpu_millicores: 4000,
        memory_bytes: 8 << 30,
    };

    /// The Nefele agent: one per server.
    #[derive(Debug, Parser)]
    #[command(name = "nefeled", version)]
    struct Args {
        /// The configuration file (TOML); flags override its values.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Validate the configuration and exit.
        #[arg(long)]
        check_config: bool,
        /// Run processes in an in-memory simulated host instead of Linux namespaces (no root needed).
        #[arg(long)]
        sim_host: bool,
        /// This agent's node id.
        #[arg(long)]
        node_id: Option<u32>,
        /// Where to listen for agents (ip:port; beacons use the same UDP port).
        #[arg(long)]
        listen: Option<String>,
        /// A seed agent's listen address (repeatable); replaces the file's discovery.
        #[arg(long = "seed")]
        seeds: Vec<String>,
        /// Discover by UDP broadcast on this interface; replaces the file's discovery.
        #[arg(long)]
        broadcast_interface: Option<String>,
        /// The UDP port of broadcast beacons (default: the listen port).
        #[arg(long)]
        broadcast_port: Option<u16>,
        /// The data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The cluster key file.
        #[arg(long)]
        cluster_key_file: Option<PathBuf>,
        /// The API socket path.
        #[arg(long)]
        api_socket: Option<PathBuf>,
        /// `text` or `json`.
        #[arg(long)]
        log_format: Option<String>,
        /// `tcp` or `rdma` (RDMA per peer where both ends can, TCP otherwise).
        #[arg(long)]
        transport: Option<String>,
        /// The cgroup directory of this agent's processes (one per agent on a machine).
        #[arg(long)]
        cgroup_name: Option<String>,
        /// Announce this much cpu (with --memory-bytes).
        #[arg(long)]
        cpu_millicores: Option<u32>,
        /// Announce this much memory (with --cpu-millicores).
        #[arg(long)]
        memory_bytes: Option<u64>,
    }

    impl Args {
        fn overrides(&self) -> Overrides {
            Overrides {
                node_id: self.node_id,
                listen: self.listen.clone(),
                data_dir: self.data_dir.clone(),
                cluster_key_file: self.cluster_key_file.clone(),
                api_socket: self.api_socket.clone(),
                log_format: self.log_format.clone(),
                transport: self.transport.clone(),
                cgroup_name: self.cgroup_name.clone(),
                seeds: self.seeds.clone(),
                broadcast_interface: self.broadcast_interface.clone(),
                broadcast_port: self.broadcast_port,
                cpu_millicores: self.cpu_millicores,
                memory_bytes: self.memory_bytes,
            }
        }
    }

    fn load(args: &Args) -> Result<(Config, ClusterKey), String> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path).map_err(|e| e.to_string())?,
            None => FileConfig::default(),
        };
        let config = Config::resolve(args.config.as_deref(), file, args.overrides())
            .map_err(|e| e.to_string())?;
        let key_path = &config.cluster_key_file;
        let bytes = std::fs::read(key_path).map_err(|e| format!("{}: {e}", key_path.display()))?;
        let key = ClusterKey::new(bytes.trim_ascii_end())
            .map_err(|e| format!("{}: {e}", key_path.display()))?;
        Ok((config, key))
    }

    fn init_logs(format: LogFormat) {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        // Colours only for a person at a terminal, never into a log file.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_writer(std::io::stderr);
        match format {
            LogFormat::Text => builder.init(),
            LogFormat::Json => builder.json().init(),
        }
    }

    pub(crate) fn main() -> ExitCode {
        let args = Args::parse();
        let (config, key) = match load(&args) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("nefeled: {e}");
                return ExitCode::from(2);
            }
        };
        if args.check_config {
            println!("configuration is valid");
            return ExitCode::SUCCESS;
        }
        init_logs(config.log_format);
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("nefeled: cannot start the tokio runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        match rt.block_on(run(config, args.config.clone(), key, args.sim_host)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("nefeled: {e}");
                ExitCode::FAILURE
            }
        }
    }

    async fn run(
        config: Config,
        config_path: Option<PathBuf>,
        key: ClusterKey,
        sim_host: bool,
    ) -> Result<(), String> {
        let beacons = match &config.discovery {
            Discovery::Seeds(seeds) => Targets::Seeds(seeds.clone()),
            Discovery::Broadcast { interface, port } => {
                let ip = broadcast_address(interface)?;
                Targets::Broadcast(SocketAddr::from((ip, *port)))
            }
        };
        // The incarnation is durable before the agent exists (see `identity`).
        let identity =
            identity::load_and_bump(&config.data_dir, config.node_id).map_err(|e| e.to_string())?;
        let host = if sim_host {
            sim_host::spawn(config.resources.unwrap_or(SIM_HOST_CAPACITY))
        } else {
            // No tenant may see the agent's key, configuration, socket or data,
            // even where its view shows the directory they are in.
            let mut hidden = vec![
                config.cluster_key_file.clone(),
                config.api_socket.clone(),
                config.data_dir.clone(),
            ];
            hidden.extend(config_path.clone());
            let host_config = nefele_host_linux::Config {
                cgroup_name: config.cgroup_name.clone(),
                tenant_limits: config.tenant_limits(),
                hidden,
                ..nefele_host_linux::Config::new(config.data_dir.join("host"))
            };
            linux_host::spawn(host_config, config.resources).map_err(|e| e.to_string())?
        };
        let api = ApiServer::bind(&config.api_socket)
            .await
            .map_err(|e| e.to_string())?;
        let transport = config.transport;
        let runtime = runtime::start_with(
            RuntimeConfig {
                identity,
                listen: config.listen,
                beacons,
                key,
                agent: RuntimeConfig::agent_defaults(),
                rng_seed: rand::RngCore::next_u64(&mut rand::rngs::OsRng),
            },
            host,
            transport,
        )
        .await
        .map_err(|e| e.to_string())?;
        tracing::info!(socket = %api.path().display(), "api listening");
        let handle = runtime.handle.clone();
        let api_path = api.path().to_owned();
        let server = tokio::spawn(api.serve(handle.clone(), Arc::new(config)));
        let mut driver = runtime.driver;
        tokio::select! {
            signal = shutdown_signal() => {
                tracing::info!(signal, "stopping");
                let _ = handle.shutdown(LEAVE_GRACE).await;
            }
            stopped = &mut driver => {
                server.abort();
                let _ = std::fs::remove_file(&api_path);
                return Err(match stopped {
                    Ok(_) => "the agent stopped on its own (its host backend failed)".to_owned(),
                    Err(e) => format!("the agent task failed: {e}"),
                });
            }
        }
        server.abort();
        let _ = std::fs::remove_file(&api_path);
        Ok(())
    }

    async fn shutdown_signal() -> &'static str {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
}
