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
    use nefele_core::ids::NodeId;
    use nefele_transport_tcp::{ClusterAuthority, ClusterKey, NodeKeys};
    use nefeled::api_server::ApiServer;
    use nefeled::beacon::{broadcast_address, Targets};
    use nefeled::config::{
        check_not_writable, check_private, read_private, Config, Discovery, FileConfig, LogFormat,
        Overrides, ResourceOverride, TokenHash,
    };
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
        /// The cluster key file (mode 0600: refused when group or others may read it).
        #[arg(long)]
        cluster_key_file: Option<PathBuf>,
        /// This node's per-node keys (mode 0600); turns per-node keys on.
        #[arg(long)]
        node_keys_file: Option<PathBuf>,
        /// Print the `sha256:` form of the token read from standard input, for the
        /// config's `tokens`, and exit.
        #[arg(long, exclusive = true)]
        hash_token: bool,
        /// Create a cluster authority (for per-node keys) in this new file, and exit.
        /// Keep it off the agents.
        #[arg(long, exclusive = true, value_name = "FILE")]
        new_authority: Option<PathBuf>,
        /// Issue per-node keys for this node id (with --authority and --out), and exit.
        #[arg(long, value_name = "NODE", requires_all = ["authority", "out"])]
        issue_node_keys: Option<u32>,
        /// The cluster authority file, for --issue-node-keys.
        #[arg(long, value_name = "FILE", requires = "issue_node_keys")]
        authority: Option<PathBuf>,
        /// The new node keys file, for --issue-node-keys.
        #[arg(long, value_name = "FILE", requires = "issue_node_keys")]
        out: Option<PathBuf>,
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
                node_keys_file: self.node_keys_file.clone(),
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

    /// The configuration and the secrets it names; every file holding a secret
    /// (the key files, a config with tokens in clear) must be private.
    fn load(args: &Args) -> Result<(Config, ClusterKey, Option<NodeKeys>), String> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path).map_err(|e| e.to_string())?,
            None => FileConfig::default(),
        };
        let config = Config::resolve(args.config.as_deref(), file, args.overrides())
            .map_err(|e| e.to_string())?;
        if let Some(path) = &args.config {
            check_not_writable(path, "the configuration").map_err(|e| e.to_string())?;
            if config.plaintext_tokens {
                check_private(path, "a configuration holding tokens in clear").map_err(|e| {
                    format!("{e}, or write the tokens hashed (nefeled --hash-token)")
                })?;
            }
        }
        let key_path = &config.cluster_key_file;
        let bytes = read_private(key_path, "the cluster key").map_err(|e| e.to_string())?;
        let key = ClusterKey::new(bytes.trim_ascii_end())
            .map_err(|e| format!("{}: {e}", key_path.display()))?;
        let node_keys = match &config.node_keys_file {
            None => None,
            Some(path) => {
                let bytes = read_private(path, "the node keys").map_err(|e| e.to_string())?;
                let text = String::from_utf8_lossy(&bytes);
                let keys =
                    NodeKeys::from_text(&text).map_err(|e| format!("{}: {e}", path.display()))?;
                if config.node_id.is_some_and(|n| n != keys.node()) {
                    return Err(format!(
                        "{}: the keys are {}'s, but this agent is configured as {}",
                        path.display(),
                        keys.node(),
                        config.node_id.map_or(String::new(), |n| n.to_string())
                    ));
                }
                Some(keys)
            }
        };
        Ok((config, key, node_keys))
    }

    /// Writes `text` to a new file of mode 0600.
    fn write_new_private(path: &std::path::Path, text: &str) -> Result<(), String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        file.write_all(text.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The key tools: `--hash-token`, `--new-authority`, `--issue-node-keys`.
    /// `None` when none was asked for.
    fn key_tool(args: &Args) -> Option<Result<(), String>> {
        if args.hash_token {
            let mut token = String::new();
            return Some(
                std::io::stdin()
                    .read_line(&mut token)
                    .map_err(|e| format!("reading the token: {e}"))
                    .and_then(|_| {
                        let token = token.trim_end_matches(['\n', '\r']);
                        if token.is_empty() {
                            return Err("no token on standard input".to_owned());
                        }
                        println!("{}", TokenHash::of(token).to_config());
                        Ok(())
                    }),
            );
        }
        if let Some(path) = &args.new_authority {
            return Some(write_new_private(
                path,
                &ClusterAuthority::generate().to_text(),
            ));
        }
        let (Some(node), Some(authority), Some(out)) =
            (args.issue_node_keys, &args.authority, &args.out)
        else {
            return None;
        };
        Some((|| {
            let bytes =
                read_private(authority, "the cluster authority").map_err(|e| e.to_string())?;
            let ca = ClusterAuthority::from_text(&String::from_utf8_lossy(&bytes))
                .map_err(|e| format!("{}: {e}", authority.display()))?;
            write_new_private(out, &ca.issue(NodeId(node)).to_text())
        })())
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
        if let Some(done) = key_tool(&args) {
            return match done {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("nefeled: {e}");
                    ExitCode::from(2)
                }
            };
        }
        let (config, key, node_keys) = match load(&args) {
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
        let mut builder = if config.threads == 1 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(config.threads as usize);
            b
        };
        let rt = match builder.enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("nefeled: cannot start the tokio runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        match rt.block_on(run(
            config,
            args.config.clone(),
            key,
            node_keys,
            args.sim_host,
        )) {
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
        node_keys: Option<NodeKeys>,
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
        private_dir(&config.data_dir)?;
        let node_id = config.node_id.or(node_keys.as_ref().map(NodeKeys::node));
        let identity =
            identity::load_and_bump(&config.data_dir, node_id).map_err(|e| e.to_string())?;
        if let Some(keys) = &node_keys {
            if keys.node() != identity.node {
                return Err(format!(
                    "the node keys are {}'s, but this agent's data directory says it is {}",
                    keys.node(),
                    identity.node
                ));
            }
        }
        let (endpoints_tx, endpoints) = tokio::sync::mpsc::unbounded_channel();
        let host = if sim_host {
            sim_host::spawn_with(config.resources.unwrap_or(SIM_HOST_CAPACITY), config.host)
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
            linux_host::spawn(
                host_config,
                config.resources,
                config.host,
                Some(endpoints_tx),
            )
            .map_err(|e| e.to_string())?
        };
        let api = ApiServer::bind(&config.api_socket)
            .await
            .map_err(|e| e.to_string())?
            .with_endpoints(endpoints);
        let transport = config.transport;
        let mut agent = RuntimeConfig::agent_defaults();
        agent.services.messaging.proxies = config.proxy.agents.clone();
        let runtime = runtime::start_with(
            RuntimeConfig {
                identity,
                listen: config.listen,
                beacons,
                key,
                node_keys,
                agent,
                rng_seed: rand::RngCore::next_u64(&mut rand::rngs::OsRng),
                proxy: config.proxy.rules.clone(),
            },
            host,
            transport,
        )
        .await
        .map_err(|e| e.to_string())?;
        tracing::info!(socket = %api.path().display(), "api listening");
        let handle = runtime.handle.clone();
        let metrics = match config.metrics {
            Some(addr) => {
                let server = nefeled::metrics::MetricsServer::bind(addr)
                    .await
                    .map_err(|e| e.to_string())?;
                tracing::info!(%addr, "metrics served");
                Some(tokio::spawn(server.serve(handle.clone())))
            }
            None => None,
        };
        let api_path = api.path().to_owned();
        let api = api.with_inbound_links(runtime.inbound_links);
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
        if let Some(m) = metrics {
            m.abort();
        }
        let _ = std::fs::remove_file(&api_path);
        Ok(())
    }

    /// Creates `dir` if needed and makes it 0700: it holds the agent's identity
    /// and the record of the processes it started.
    fn private_dir(dir: &std::path::Path) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| format!("{}: {e}", dir.display()))
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
