//! The daemon's configuration: a TOML file, then command-line flags that override it.
//!
//! [`FileConfig`] is the file as written (every field optional, unknown fields
//! refused so a typo is named); [`Overrides`] are the flags; [`Config::resolve`]
//! merges the two and validates the result. Every error names where the value
//! came from (the file's path, or "the command line"), the field and the problem.
//! A resolved [`Config`] is valid: tenants have distinct ids, names, tokens and
//! uids; discovery is exactly one of a seed list or a broadcast interface; tenant
//! limits are positive amounts.
//!
//! Tokens are kept only as SHA-256 hashes, and a presented token is compared
//! against every stored hash in constant time. The file may hold a token in
//! clear or as `sha256:<hex>` (`nefeled --hash-token` prints that form); a file
//! that holds tokens in clear, like the key files, must not be readable by
//! group or others ([`check_private`]).
//!
//! See `nefeled.example.toml` next to this crate's `Cargo.toml` for the format.

use nefele::quantity::{parse_cpu, parse_memory, QuantityError};
use nefele_core::host::Limits;
use nefele_core::ids::{NodeId, TenantId};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The agent listen address when neither the file nor a flag gives one.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7600";
/// The data directory when neither the file nor a flag gives one.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/nefele";
/// The API socket when neither the file nor a flag gives one.
pub const DEFAULT_API_SOCKET: &str = "/run/nefele/nefeled.sock";
/// The cgroup directory when neither the file nor a flag gives one.
pub const DEFAULT_CGROUP_NAME: &str = "nefele";
/// The most threads the agent's event loop may run on.
pub const MAX_THREADS: u32 = 256;
/// Where flags come from, in error messages.
const COMMAND_LINE: &str = "the command line";

/// The configuration file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// This agent's id; generated once and kept in the data directory when absent.
    pub node_id: Option<u32>,
    /// Where to listen for other agents (`ip:port`, TCP; beacons use the same port over UDP).
    pub listen: Option<String>,
    /// Where the identity and the host's state live.
    pub data_dir: Option<PathBuf>,
    /// A file holding the cluster's shared secret (at least 16 bytes).
    pub cluster_key_file: Option<PathBuf>,
    /// A file holding this node's per-node keys (`nefeled --issue-node-keys`);
    /// when set, every peer must prove its node id with keys of the same authority.
    pub node_keys_file: Option<PathBuf>,
    /// The Unix socket local clients connect to.
    pub api_socket: Option<PathBuf>,
    /// `text` (default) or `json`.
    pub log_format: Option<String>,
    /// The transport between agents: `tcp` (default) or `rdma` (RDMA where both
    /// ends have a device, TCP otherwise; see transport-rdma).
    pub transport: Option<String>,
    /// The cgroup directory this agent's processes go under (default `nefele`); agents
    /// sharing a machine (tests in network namespaces) need one each.
    pub cgroup_name: Option<String>,
    /// How to find the other agents.
    pub discovery: Option<FileDiscovery>,
    /// Where to serve metrics in the Prometheus text format over HTTP (`ip:port`,
    /// unauthenticated: keep it on loopback or a private network). Off when absent.
    pub metrics: Option<String>,
    /// Threads the agent's event loop runs on (see [`Config::threads`]).
    pub threads: Option<u32>,
    /// Capacity to announce instead of the host's own (for tests).
    pub resources: Option<ResourceOverride>,
    /// Where the server stands, and its cpu speed and accelerators (see `host_traits`).
    pub host: Option<crate::host_traits::FileHost>,
    /// The cluster's external proxies, and where this agent may connect as one
    /// (see [`crate::proxy::rules`]).
    pub proxy: Option<crate::proxy::FileProxy>,
    /// The tenants this agent serves.
    #[serde(default, rename = "tenant")]
    pub tenants: Vec<FileTenant>,
}

/// The `[discovery]` table: a seed list, or a broadcast interface.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDiscovery {
    /// Agents to send beacons to (`ip:port` of their listen addresses).
    pub seeds: Option<Vec<String>>,
    /// The interface whose broadcast address beacons go to.
    pub broadcast_interface: Option<String>,
    /// The UDP port of broadcast beacons (default: the listen port).
    pub broadcast_port: Option<u16>,
}

/// One `[[tenant]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTenant {
    /// A name for people and logs.
    pub name: String,
    /// The tenant's id in the cluster (the same on every agent).
    pub id: u32,
    /// Tokens a client may present in its `Hello`: in clear, or `sha256:<hex>`.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Local uids mapped to this tenant when a client presents no token.
    #[serde(default)]
    pub uids: Vec<u32>,
    /// Limits on all of the tenant's processes on this host together.
    pub limits: Option<FileLimits>,
}

/// A tenant's `limits` table; every field optional (absent means unlimited).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    /// Cpu: `"500m"` (millicores), `"0.5"` or `"2"` (cores), or a number of cores.
    pub cpu: Option<Amount>,
    /// Memory: `"512M"`, `"4G"` (powers of 1024), or a number of bytes.
    pub memory: Option<Amount>,
    /// Maximum number of tasks (processes and threads).
    pub pids: Option<u32>,
}

/// An amount as written: text (`"500m"`, `"4G"`) or a bare TOML number, which
/// reads as its decimal text (`2` is `"2"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    untagged,
    expecting = "expected a quantity (a string such as \"500m\" or \"4G\", or a number)"
)]
pub enum Amount {
    /// `cpu = "500m"`.
    Text(String),
    /// `pids`-style integer, `cpu = 2`.
    Integer(i64),
    /// `cpu = 0.5`.
    Float(f64),
}

impl Amount {
    /// The amount read by `parse` from its text; the parser's message on failure.
    fn parse<T>(
        &self,
        parse: impl Fn(&str) -> Result<T, QuantityError>,
    ) -> Result<Option<T>, String> {
        let text = match self {
            Amount::Text(t) => t.clone(),
            Amount::Integer(n) => n.to_string(),
            Amount::Float(x) => x.to_string(),
        };
        parse(&text).map(Some).map_err(|e| e.to_string())
    }
}

/// A capacity override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceOverride {
    /// Total cpu, in millicores.
    pub cpu_millicores: u32,
    /// Total memory, in bytes.
    pub memory_bytes: u64,
}

/// Values given on the command line; each replaces the file's.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--node-id`.
    pub node_id: Option<u32>,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--cluster-key-file`.
    pub cluster_key_file: Option<PathBuf>,
    /// `--node-keys-file`.
    pub node_keys_file: Option<PathBuf>,
    /// `--api-socket`.
    pub api_socket: Option<PathBuf>,
    /// `--log-format`.
    pub log_format: Option<String>,
    /// `--transport`.
    pub transport: Option<String>,
    /// `--cgroup-name`.
    pub cgroup_name: Option<String>,
    /// `--seed` (repeatable); replaces the file's discovery.
    pub seeds: Vec<String>,
    /// `--broadcast-interface`; replaces the file's discovery.
    pub broadcast_interface: Option<String>,
    /// `--broadcast-port`.
    pub broadcast_port: Option<u16>,
    /// `--cpu-millicores` and `--memory-bytes`, both or neither.
    pub cpu_millicores: Option<u32>,
    /// See `cpu_millicores`.
    pub memory_bytes: Option<u64>,
}

/// How beacons find the other agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// Unicast to these agents (and to every agent learned since).
    Seeds(Vec<SocketAddr>),
    /// Broadcast on this interface's broadcast address, at `port`.
    Broadcast {
        /// The interface name.
        interface: String,
        /// The UDP port.
        port: u16,
    },
}

/// The transport between agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// Authenticated TCP to every peer.
    Tcp,
    /// RDMA to each peer where both ends have a usable device, TCP otherwise;
    /// a host without one uses TCP and says why in one log line.
    Rdma,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line.
    Json,
}

/// A tenant the agent serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// A name for people and logs.
    pub name: String,
    /// Its id.
    pub id: TenantId,
    /// The SHA-256 hashes of the tokens that authenticate as it.
    pub token_hashes: Vec<TokenHash>,
    /// Uids that map to it.
    pub uids: Vec<u32>,
    /// Limits on all of its processes on this host together (the host's
    /// `tenant_limits`); all `None` when unlimited.
    pub limits: Limits,
}

/// A complete, valid configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The configured node id, if any.
    pub node_id: Option<NodeId>,
    /// The agent listen address.
    pub listen: SocketAddr,
    /// How beacons find the others.
    pub discovery: Discovery,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The cluster key file.
    pub cluster_key_file: PathBuf,
    /// The per-node keys file, if per-node keys are on.
    pub node_keys_file: Option<PathBuf>,
    /// Whether the file holds a token in clear (then it must be private).
    pub plaintext_tokens: bool,
    /// The API socket.
    pub api_socket: PathBuf,
    /// The tenants.
    pub tenants: Vec<Tenant>,
    /// The capacity override, if any.
    pub resources: Option<ResourceOverride>,
    /// The server's location, cpu speed and accelerators.
    pub host: crate::host_traits::HostTraits,
    /// The log format.
    pub log_format: LogFormat,
    /// The transport between agents.
    pub transport: TransportKind,
    /// The cgroup directory of this agent's processes.
    pub cgroup_name: String,
    /// Where metrics are served, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Threads the agent's event loop runs on, 1 to [`MAX_THREADS`] (default 1).
    /// The core is one state machine driven by one task; with one thread every
    /// task (clients, peers, the driver) runs where the last woke it, and a
    /// message through the agent never waits for another thread to wake. More
    /// threads let many clients' and peers' connections be read, decoded and
    /// sealed in parallel, on hosts with cores to spare.
    pub threads: u32,
    /// The cluster's external proxies, and this agent's rules as one.
    pub proxy: crate::proxy::ProxyConfig,
}

/// Why a configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a field has the wrong type or is unknown.
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// The parser's words (they name the field and the line).
        message: String,
    },
    /// A field holds a value that cannot work.
    #[error("{origin}: field `{field}`: {problem}")]
    Invalid {
        /// The file's path, or "the command line".
        origin: String,
        /// The field.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

impl FileConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses `text`, naming `path` in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: path.to_owned(),
            message: e.to_string(),
        })
    }
}

/// Builds [`ConfigError::Invalid`].
fn invalid(origin: &str, field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.to_owned(),
        field: field.into(),
        problem: problem.into(),
    }
}

fn parse_addr(origin: &str, field: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|e| {
        invalid(
            origin,
            field,
            format!("`{text}` is not an ip:port address ({e})"),
        )
    })
}

impl Config {
    /// Merges `file` (read from `path`, if any) with the command-line `flags`, and validates.
    pub fn resolve(
        path: Option<&Path>,
        file: FileConfig,
        flags: Overrides,
    ) -> Result<Self, ConfigError> {
        let file_origin = path.map_or_else(|| "defaults".to_owned(), |p| p.display().to_string());
        let pick = |flag: bool| {
            if flag {
                COMMAND_LINE
            } else {
                file_origin.as_str()
            }
        };

        let listen_origin = pick(flags.listen.is_some());
        let listen_text = flags
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = parse_addr(listen_origin, "listen", &listen_text)?;

        let discovery = if !flags.seeds.is_empty() || flags.broadcast_interface.is_some() {
            let from_flags = FileDiscovery {
                seeds: (!flags.seeds.is_empty()).then_some(flags.seeds),
                broadcast_interface: flags.broadcast_interface,
                broadcast_port: flags.broadcast_port,
            };
            resolve_discovery(COMMAND_LINE, from_flags, listen)?
        } else {
            let mut d = file.discovery.unwrap_or_default();
            let origin = pick(flags.broadcast_port.is_some());
            d.broadcast_port = flags.broadcast_port.or(d.broadcast_port);
            resolve_discovery(origin, d, listen)?
        };

        let cluster_key_file = flags
            .cluster_key_file
            .or(file.cluster_key_file)
            .ok_or_else(|| {
                invalid(
                    &file_origin,
                    "cluster_key_file",
                    "missing: every agent needs the cluster key (set it in the file or with --cluster-key-file)",
                )
            })?;

        let log_origin = pick(flags.log_format.is_some());
        let log_format = match flags.log_format.or(file.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    log_origin,
                    "log_format",
                    format!("`{other}` is neither `text` nor `json`"),
                ))
            }
        };

        let transport_origin = pick(flags.transport.is_some());
        let transport = match flags.transport.or(file.transport).as_deref() {
            None | Some("tcp") => TransportKind::Tcp,
            Some("rdma") => TransportKind::Rdma,
            Some(other) => {
                return Err(invalid(
                    transport_origin,
                    "transport",
                    format!("`{other}` is neither `tcp` nor `rdma`"),
                ))
            }
        };

        let resources = match (flags.cpu_millicores, flags.memory_bytes) {
            (Some(cpu_millicores), Some(memory_bytes)) => Some(ResourceOverride {
                cpu_millicores,
                memory_bytes,
            }),
            (None, None) => file.resources,
            _ => {
                return Err(invalid(
                    COMMAND_LINE,
                    "resources",
                    "give both --cpu-millicores and --memory-bytes, or neither",
                ))
            }
        };
        if let Some(r) = resources {
            if r.cpu_millicores == 0 || r.memory_bytes == 0 {
                let origin = pick(flags.cpu_millicores.is_some());
                return Err(invalid(origin, "resources", "capacity must be positive"));
            }
        }

        let cgroup_origin = pick(flags.cgroup_name.is_some());
        let cgroup_name = flags
            .cgroup_name
            .or(file.cgroup_name)
            .unwrap_or_else(|| DEFAULT_CGROUP_NAME.to_owned());
        if cgroup_name.is_empty() || cgroup_name.contains('/') || cgroup_name.starts_with('.') {
            return Err(invalid(
                cgroup_origin,
                "cgroup_name",
                format!("`{cgroup_name}` must be one non-empty path component"),
            ));
        }

        let threads = file.threads.unwrap_or(1);
        if !(1..=MAX_THREADS).contains(&threads) {
            return Err(invalid(
                &file_origin,
                "threads",
                format!("{threads} is not between 1 and {MAX_THREADS}"),
            ));
        }

        let metrics = match &file.metrics {
            Some(text) => Some(parse_addr(&file_origin, "metrics", text)?),
            None => None,
        };

        let proxy = file
            .proxy
            .unwrap_or_default()
            .resolve()
            .map_err(|(field, e)| invalid(&file_origin, field, e.to_string()))?;

        Ok(Config {
            node_id: flags.node_id.or(file.node_id).map(NodeId),
            listen,
            discovery,
            data_dir: flags
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            cluster_key_file,
            node_keys_file: flags.node_keys_file.or(file.node_keys_file),
            plaintext_tokens: file
                .tenants
                .iter()
                .flat_map(|t| &t.tokens)
                .any(|t| !t.starts_with(HASH_PREFIX)),
            api_socket: flags
                .api_socket
                .or(file.api_socket)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_API_SOCKET)),
            tenants: resolve_tenants(&file_origin, file.tenants)?,
            resources,
            host: file.host.unwrap_or_default().into(),
            log_format,
            transport,
            cgroup_name,
            metrics,
            threads,
            proxy,
        })
    }

    /// The tenant a token authenticates as. Compares the token's hash with every
    /// stored hash, each in constant time, without stopping at a match.
    #[must_use]
    pub fn tenant_by_token(&self, token: &str) -> Option<TenantId> {
        use subtle::ConstantTimeEq;
        let presented = TokenHash::of(token);
        let mut found = None;
        for tenant in &self.tenants {
            for stored in &tenant.token_hashes {
                if bool::from(stored.0.ct_eq(&presented.0)) {
                    found = Some(tenant.id);
                }
            }
        }
        found
    }

    /// The tenant a local uid maps to.
    #[must_use]
    pub fn tenant_by_uid(&self, uid: u32) -> Option<TenantId> {
        self.tenants
            .iter()
            .find(|t| t.uids.contains(&uid))
            .map(|t| t.id)
    }
}

/// How a hashed token starts in the file.
pub const HASH_PREFIX: &str = "sha256:";

/// The SHA-256 hash of a token.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// The hash of `token`.
    #[must_use]
    pub fn of(token: &str) -> Self {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// A token as written in the file: `sha256:<64 hex digits>`, or the token in clear.
    fn parse(written: &str) -> Result<Self, String> {
        let Some(hex) = written.strip_prefix(HASH_PREFIX) else {
            return Ok(TokenHash::of(written));
        };
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return Err(format!("`{HASH_PREFIX}` must be followed by 64 hex digits"));
        }
        let mut out = [0; 32];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let text = std::str::from_utf8(pair).map_err(|_| "not hex".to_owned())?;
            out[i] = u8::from_str_radix(text, 16).map_err(|_| format!("`{text}` is not hex"))?;
        }
        Ok(TokenHash(out))
    }

    /// The form to write in the file instead of the token.
    #[must_use]
    pub fn to_config(&self) -> String {
        let hex: String = self.0.iter().map(|b| format!("{b:02x}")).collect();
        format!("{HASH_PREFIX}{hex}")
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

/// Why a file that must be private cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Group or others may write it.
    #[error(
        "{path} ({what}) is writable by group or others (mode {mode:04o}); make it 0600 or 0644"
    )]
    Writable {
        /// The file.
        path: PathBuf,
        /// What the file holds.
        what: &'static str,
        /// Its permission bits.
        mode: u32,
    },
    /// Group or others may read or write it.
    #[error("{path} ({what}) is accessible to group or others (mode {mode:04o}); make it 0600 (chmod 600 {path})")]
    Exposed {
        /// The file.
        path: PathBuf,
        /// What the file holds.
        what: &'static str,
        /// Its permission bits.
        mode: u32,
    },
}

/// The permission bits of `path`.
fn mode_of(path: &Path) -> Result<u32, PrivateFileError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| PrivateFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(meta.permissions().mode() & 0o7777)
}

/// Refuses `path` (holding `what`) when group or others may access it.
pub fn check_private(path: &Path, what: &'static str) -> Result<(), PrivateFileError> {
    let mode = mode_of(path)?;
    if mode & 0o077 != 0 {
        return Err(PrivateFileError::Exposed {
            path: path.to_owned(),
            what,
            mode,
        });
    }
    Ok(())
}

/// Refuses `path` (holding `what`) when group or others may write it (they
/// could name their own key file, or add a token).
pub fn check_not_writable(path: &Path, what: &'static str) -> Result<(), PrivateFileError> {
    let mode = mode_of(path)?;
    if mode & 0o022 != 0 {
        return Err(PrivateFileError::Writable {
            path: path.to_owned(),
            what,
            mode,
        });
    }
    Ok(())
}

/// Reads a secret file (holding `what`), refusing it when group or others may access it.
pub fn read_private(path: &Path, what: &'static str) -> Result<Vec<u8>, PrivateFileError> {
    check_private(path, what)?;
    std::fs::read(path).map_err(|source| PrivateFileError::Read {
        path: path.to_owned(),
        source,
    })
}

fn resolve_discovery(
    origin: &str,
    d: FileDiscovery,
    listen: SocketAddr,
) -> Result<Discovery, ConfigError> {
    match (d.seeds, d.broadcast_interface) {
        (Some(_), Some(_)) => Err(invalid(
            origin,
            "discovery",
            "give either `seeds` or `broadcast_interface`, not both",
        )),
        (seeds, None) => {
            if d.broadcast_port.is_some() {
                return Err(invalid(
                    origin,
                    "discovery.broadcast_port",
                    "only meaningful with `broadcast_interface`",
                ));
            }
            let seeds = seeds
                .unwrap_or_default()
                .iter()
                .map(|s| parse_addr(origin, "discovery.seeds", s))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Discovery::Seeds(seeds))
        }
        (None, Some(interface)) => {
            if interface.is_empty() {
                return Err(invalid(
                    origin,
                    "discovery.broadcast_interface",
                    "empty interface name",
                ));
            }
            let port = d.broadcast_port.unwrap_or(listen.port());
            if port == 0 {
                return Err(invalid(
                    origin,
                    "discovery.broadcast_port",
                    "broadcast needs a fixed port: set it, or a non-zero listen port",
                ));
            }
            Ok(Discovery::Broadcast { interface, port })
        }
    }
}

fn resolve_tenants(origin: &str, tenants: Vec<FileTenant>) -> Result<Vec<Tenant>, ConfigError> {
    let mut ids = BTreeMap::new();
    let mut names = BTreeMap::new();
    let mut tokens = BTreeMap::new();
    let mut uids = BTreeMap::new();
    let mut out = Vec::with_capacity(tenants.len());
    for (i, t) in tenants.into_iter().enumerate() {
        let field = |f: &str| format!("tenant[{i}].{f}");
        if t.name.is_empty() {
            return Err(invalid(origin, field("name"), "empty name"));
        }
        if let Some(other) = ids.insert(t.id, t.name.clone()) {
            return Err(invalid(
                origin,
                field("id"),
                format!("id {} is also tenant `{other}`'s", t.id),
            ));
        }
        if names.insert(t.name.clone(), i).is_some() {
            return Err(invalid(
                origin,
                field("name"),
                format!("two tenants are named `{}`", t.name),
            ));
        }
        let mut token_hashes = Vec::with_capacity(t.tokens.len());
        for token in &t.tokens {
            if token.is_empty() {
                return Err(invalid(origin, field("tokens"), "empty token"));
            }
            let hash = TokenHash::parse(token).map_err(|e| invalid(origin, field("tokens"), e))?;
            token_hashes.push(hash);
            if let Some(other) = tokens.insert(hash.0, t.name.clone()) {
                return Err(invalid(
                    origin,
                    field("tokens"),
                    format!("a token is also tenant `{other}`'s"),
                ));
            }
        }
        for uid in &t.uids {
            if let Some(other) = uids.insert(*uid, t.name.clone()) {
                return Err(invalid(
                    origin,
                    field("uids"),
                    format!("uid {uid} is also mapped to tenant `{other}`"),
                ));
            }
        }
        let limits = match &t.limits {
            Some(l) => resolve_limits(origin, &field("limits"), l)?,
            None => Limits::default(),
        };
        out.push(Tenant {
            name: t.name,
            id: TenantId(t.id),
            token_hashes,
            uids: t.uids,
            limits,
        });
    }
    Ok(out)
}

/// Checks a tenant's `limits` table (`field` names it in errors).
fn resolve_limits(origin: &str, field: &str, l: &FileLimits) -> Result<Limits, ConfigError> {
    let cpu_millicores = l.cpu.as_ref().map_or(Ok(None), |a| {
        a.parse(parse_cpu)
            .map_err(|e| invalid(origin, format!("{field}.cpu"), e))
    })?;
    let memory_bytes = l.memory.as_ref().map_or(Ok(None), |a| {
        a.parse(parse_memory)
            .map_err(|e| invalid(origin, format!("{field}.memory"), e))
    })?;
    if l.pids == Some(0) {
        return Err(invalid(
            origin,
            format!("{field}.pids"),
            "0 would let the tenant start nothing; leave it out for no limit",
        ));
    }
    Ok(Limits {
        cpu_millicores,
        memory_bytes,
        pids: l.pids,
    })
}

impl Config {
    /// The aggregate limits of each tenant that has some, for the host adapter
    /// (`nefele_host_linux::Config::tenant_limits`).
    #[must_use]
    pub fn tenant_limits(&self) -> BTreeMap<TenantId, Limits> {
        self.tenants
            .iter()
            .filter(|t| t.limits != Limits::default())
            .map(|t| (t.id, t.limits.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str, flags: Overrides) -> Result<Config, ConfigError> {
        let path = Path::new("/etc/nefele/nefeled.toml");
        Config::resolve(Some(path), FileConfig::parse(path, text)?, flags)
    }

    const MINIMAL: &str = r#"cluster_key_file = "/etc/nefele/key""#;

    #[test]
    fn the_example_file_is_valid() {
        let text = include_str!("../nefeled.example.toml");
        let config = resolve(text, Overrides::default()).unwrap();
        assert_eq!(config.tenants.len(), 2);
        assert_eq!(
            config.tenant_by_token("alice-secret-token"),
            Some(TenantId(1))
        );
        assert_eq!(
            config.tenant_by_token("bob-secret-token"),
            Some(TenantId(2))
        );
        assert_eq!(config.tenant_by_uid(1001), Some(TenantId(2)));
        assert_eq!(config.tenant_by_uid(4242), None);
        assert!(matches!(config.discovery, Discovery::Seeds(ref s) if s.len() == 2));
        let alice = Limits {
            cpu_millicores: Some(2000),
            memory_bytes: Some(4 << 30),
            pids: Some(512),
        };
        assert_eq!(
            config.tenant_limits(),
            BTreeMap::from([(TenantId(1), alice)]),
            "bob has no limits"
        );
    }

    #[test]
    fn the_proxy_section_is_resolved_and_bad_rules_named() {
        let text = format!(
            "{MINIMAL}\n[proxy]\nagents = [2, 1]\nallow = [\"10.1.0.0/16:443\"]\nconnect_timeout_ms = 250\n"
        );
        let proxy = resolve(&text, Overrides::default()).unwrap().proxy;
        assert_eq!(proxy.agents, vec![NodeId(1), NodeId(2)]);
        assert!(proxy.rules.allows("10.1.2.3:443".parse().unwrap()));
        assert!(!proxy.rules.allows("127.0.0.1:443".parse().unwrap()));
        assert_eq!(
            proxy.rules.connect_timeout,
            std::time::Duration::from_millis(250)
        );
        // Absent: no proxies, nothing allowed.
        let none = resolve(MINIMAL, Overrides::default()).unwrap().proxy;
        assert!(none.agents.is_empty() && none.rules.allow.is_empty());
        let bad = format!("{MINIMAL}\n[proxy]\nallow = [\"10.1.0.0/16\"]\n");
        let e = resolve(&bad, Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("proxy.allow") && e.contains("no port"), "{e}");
    }

    fn limits_of(table: &str) -> Result<Limits, String> {
        let text = format!("{MINIMAL}\n[[tenant]]\nname = \"a\"\nid = 1\n{table}\n");
        resolve(&text, Overrides::default())
            .map(|c| c.tenants[0].limits.clone())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn tenant_limits_take_the_quantities_nef_takes() {
        let limits = |cpu, memory, pids| Limits {
            cpu_millicores: cpu,
            memory_bytes: memory,
            pids,
        };
        let cases = [
            (
                "limits = { cpu = \"500m\", memory = \"512Mi\", pids = 64 }",
                limits(Some(500), Some(512 << 20), Some(64)),
            ),
            (
                "[tenant.limits]\ncpu = 2\nmemory = 1048576",
                limits(Some(2000), Some(1 << 20), None),
            ),
            ("limits = { cpu = 0.25 }", limits(Some(250), None, None)),
            (
                "limits = { memory = \"1G\" }",
                limits(None, Some(1 << 30), None),
            ),
            ("limits = {}", limits(None, None, None)),
            ("", limits(None, None, None)),
        ];
        for (table, want) in cases {
            assert_eq!(limits_of(table), Ok(want), "{table}");
        }
        let text = format!("{MINIMAL}\n[[tenant]]\nname = \"a\"\nid = 3\nlimits = {{ pids = 8 }}");
        let config = resolve(&text, Overrides::default()).unwrap();
        assert_eq!(config.tenant_limits()[&TenantId(3)].pids, Some(8));
    }

    #[test]
    fn bad_tenant_limits_name_the_field_and_the_value() {
        let cases = [
            (
                "limits = { cpu = \"2x\" }",
                "`tenant[0].limits.cpu`",
                "\"2x\"",
            ),
            (
                "limits = { cpu = \"0\" }",
                "`tenant[0].limits.cpu`",
                "\"0\"",
            ),
            ("limits = { cpu = -1 }", "`tenant[0].limits.cpu`", "\"-1\""),
            (
                "limits = { memory = \"1.5G\" }",
                "`tenant[0].limits.memory`",
                "1.5G",
            ),
            (
                "limits = { memory = 0 }",
                "`tenant[0].limits.memory`",
                "\"0\"",
            ),
            (
                "limits = { pids = 0 }",
                "`tenant[0].limits.pids`",
                "leave it out",
            ),
            ("limits = { pids = -3 }", "pids", "/etc/nefele/nefeled.toml"),
            (
                "limits = { cpus = \"2\" }",
                "cpus",
                "/etc/nefele/nefeled.toml",
            ),
            ("limits = { cpu = true }", "a quantity", "cpu"),
            ("limits = \"2\"", "limits", "/etc/nefele/nefeled.toml"),
        ];
        for (table, field, detail) in cases {
            let e = limits_of(table).unwrap_err();
            assert!(e.contains(field) && e.contains(detail), "{table}: {e}");
        }
    }

    #[test]
    fn defaults_fill_what_is_missing() {
        let config = resolve(MINIMAL, Overrides::default()).unwrap();
        assert_eq!(config.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(config.discovery, Discovery::Seeds(vec![]));
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.node_id, None);
    }

    #[test]
    fn flags_override_the_file() {
        let text = "node_id = 4\nlisten = \"10.0.0.1:7600\"\ncluster_key_file = \"/k\"\n\
                    [discovery]\nseeds = [\"10.0.0.2:7600\"]\n";
        let flags = Overrides {
            node_id: Some(9),
            broadcast_interface: Some("eth0".into()),
            log_format: Some("json".into()),
            ..Overrides::default()
        };
        let config = resolve(text, flags).unwrap();
        assert_eq!(config.node_id, Some(NodeId(9)));
        assert_eq!(
            config.discovery,
            Discovery::Broadcast {
                interface: "eth0".into(),
                port: 7600
            }
        );
        assert_eq!(config.log_format, LogFormat::Json);
    }

    fn error_of(text: &str, flags: Overrides) -> String {
        resolve(text, flags).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_file_the_field_and_the_problem() {
        let e = error_of(
            "listen = \"nowhere\"\ncluster_key_file = \"/k\"",
            Overrides::default(),
        );
        assert!(
            e.starts_with("/etc/nefele/nefeled.toml: field `listen`"),
            "{e}"
        );
        assert!(e.contains("not an ip:port"), "{e}");

        let e = error_of("lisen = \"1.2.3.4:5\"", Overrides::default());
        assert!(
            e.starts_with("/etc/nefele/nefeled.toml:") && e.contains("lisen"),
            "{e}"
        );

        let e = error_of("", Overrides::default());
        assert!(
            e.contains("cluster_key_file") && e.contains("missing"),
            "{e}"
        );

        let e = error_of(
            &format!("{MINIMAL}\n[discovery]\nseeds = []\nbroadcast_interface = \"eth0\""),
            Overrides::default(),
        );
        assert!(e.contains("`discovery`") && e.contains("not both"), "{e}");

        let e = error_of(
            &format!("{MINIMAL}\nlog_format = \"xml\""),
            Overrides::default(),
        );
        assert!(e.contains("`log_format`") && e.contains("xml"), "{e}");

        let e = error_of(
            &format!("{MINIMAL}\ntransport = \"infiniband\""),
            Overrides::default(),
        );
        assert!(
            e.contains("`transport`") && e.contains("neither `tcp` nor `rdma`"),
            "{e}"
        );
    }

    #[test]
    fn the_transport_is_tcp_unless_rdma_is_asked_for() {
        let config = resolve(MINIMAL, Overrides::default()).unwrap();
        assert_eq!(config.transport, TransportKind::Tcp);
        let config = resolve(
            &format!("{MINIMAL}\ntransport = \"rdma\""),
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(config.transport, TransportKind::Rdma);
        let flags = Overrides {
            transport: Some("tcp".into()),
            ..Overrides::default()
        };
        let config = resolve(&format!("{MINIMAL}\ntransport = \"rdma\""), flags).unwrap();
        assert_eq!(config.transport, TransportKind::Tcp);
    }

    #[test]
    fn the_event_loop_runs_on_one_thread_unless_more_are_asked_for() {
        let threads = |extra: &str| {
            resolve(&format!("{MINIMAL}\n{extra}"), Overrides::default()).map(|c| c.threads)
        };
        assert_eq!(threads("").unwrap(), 1);
        assert_eq!(threads("threads = 4").unwrap(), 4);
        for bad in ["threads = 0", "threads = 257"] {
            let e = threads(bad).unwrap_err().to_string();
            assert!(
                e.contains("`threads`") && e.contains("between 1 and 256"),
                "{e}"
            );
        }
    }

    #[test]
    fn flag_errors_name_the_command_line() {
        let flags = Overrides {
            seeds: vec!["10.0.0.1".into()],
            ..Overrides::default()
        };
        let e = error_of(MINIMAL, flags);
        assert!(
            e.starts_with("the command line: field `discovery.seeds`"),
            "{e}"
        );
        let flags = Overrides {
            cpu_millicores: Some(1000),
            ..Overrides::default()
        };
        assert!(error_of(MINIMAL, flags).contains("--memory-bytes"));
    }

    #[test]
    fn tenants_must_not_overlap() {
        let tenant = |name: &str, id: u32, token: &str, uid: u32| {
            format!("[[tenant]]\nname = \"{name}\"\nid = {id}\ntokens = [\"{token}\"]\nuids = [{uid}]\n")
        };
        let cases = [
            (
                tenant("a", 1, "x", 1) + &tenant("b", 1, "y", 2),
                "tenant[1].id",
            ),
            (
                tenant("a", 1, "x", 1) + &tenant("a", 2, "y", 2),
                "tenant[1].name",
            ),
            (
                tenant("a", 1, "x", 1) + &tenant("b", 2, "x", 2),
                "tenant[1].tokens",
            ),
            (
                tenant("a", 1, "x", 1) + &tenant("b", 2, "y", 1),
                "tenant[1].uids",
            ),
            (tenant("a", 1, "", 1), "tenant[0].tokens"),
        ];
        for (tenants, field) in cases {
            let e = error_of(&format!("{MINIMAL}\n{tenants}"), Overrides::default());
            assert!(e.contains(&format!("`{field}`")), "{field}: {e}");
        }
    }

    #[test]
    fn tokens_are_kept_hashed_and_may_be_written_hashed() {
        let hashed = TokenHash::of("bob-token").to_config();
        let text = format!(
            "{MINIMAL}\n[[tenant]]\nname = \"a\"\nid = 1\ntokens = [\"alice-token\"]\n\
             [[tenant]]\nname = \"b\"\nid = 2\ntokens = [\"{hashed}\"]\n"
        );
        let config = resolve(&text, Overrides::default()).unwrap();
        assert!(config.plaintext_tokens);
        assert_eq!(config.tenant_by_token("alice-token"), Some(TenantId(1)));
        assert_eq!(config.tenant_by_token("bob-token"), Some(TenantId(2)));
        assert_eq!(
            config.tenant_by_token(&hashed),
            None,
            "the hash is not a token"
        );
        assert_eq!(config.tenant_by_token("alice-token "), None);
        assert!(!format!("{config:?}").contains("alice-token"));
        let only_hashed =
            format!("{MINIMAL}\n[[tenant]]\nname = \"b\"\nid = 2\ntokens = [\"{hashed}\"]\n");
        assert!(
            !resolve(&only_hashed, Overrides::default())
                .unwrap()
                .plaintext_tokens
        );
        // The same token in clear for one tenant and hashed for another is a clash.
        let clash = format!(
            "{MINIMAL}\n[[tenant]]\nname = \"a\"\nid = 1\ntokens = [\"bob-token\"]\n\
             [[tenant]]\nname = \"b\"\nid = 2\ntokens = [\"{hashed}\"]\n"
        );
        assert!(error_of(&clash, Overrides::default()).contains("`tenant[1].tokens`"));
        let bad =
            format!("{MINIMAL}\n[[tenant]]\nname = \"a\"\nid = 1\ntokens = [\"sha256:zz\"]\n");
        assert!(error_of(&bad, Overrides::default()).contains("64 hex digits"));
    }

    #[test]
    fn a_secret_file_readable_by_others_is_refused_naming_the_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("cluster.key");
        std::fs::write(&key, "0123456789abcdef0123456789abcdef").unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = read_private(&key, "the cluster key")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&key.display().to_string())
                    && e.contains("the cluster key")
                    && e.contains("chmod 600"),
                "{e}"
            );
        }
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_private(&key, "the cluster key").unwrap().len(), 32);
        assert!(matches!(
            read_private(&dir.path().join("absent"), "the cluster key"),
            Err(PrivateFileError::Read { .. })
        ));
    }

    #[test]
    fn a_zero_capacity_override_is_refused() {
        let text = format!("{MINIMAL}\n[resources]\ncpu_millicores = 0\nmemory_bytes = 1");
        assert!(error_of(&text, Overrides::default()).contains("`resources`"));
    }
}
