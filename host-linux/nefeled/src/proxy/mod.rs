//! The external proxy's TCP side: the driver's half of the core's
//! `Output::External` / `Input::External` interface (see the core's
//! `messaging::external`).
//!
//! Each connection the core numbers is one tokio task: it resolves the host, keeps
//! only the addresses [`ProxyRules`] allows (see [`rules`]), connects within the
//! connect timeout, then writes what the core hands it and reads what comes back,
//! at most `MAX_DATA_BYTES` per `ExternalEvent::Data`. Writing and reading run side
//! by side, so a far end that answers while it is sent to does not deadlock.
//!
//! Bounds: at most the core's `MAX_CONNS` connections; on each, at most
//! `write_buffer` bytes wait to be written, and a send beyond that closes the
//! connection (the far end does not keep up: [`ProxyError::Overrun`]); the reports
//! from the tasks go through a bounded channel, so a driver busy elsewhere slows the
//! readers and, through TCP, the far ends. Every way a connection ends but the
//! core's own `Close` (refused, unresolved, connect failure or timeout, reset, far
//! end closed, overrun) reports `ExternalEvent::Closed` once, with the reason the
//! process is told ([`ProxyError::close`]: denied, unreachable, overrun, dropped or
//! closed); the full typed reason is logged and counted in [`ProxyStats`]. The core
//! forgets the connection and its next send opens a new one.

pub mod rules;

use nefele_api::messaging::ExternalClose;
use nefele_core::messaging::external::{ExternalCommand, ExternalEvent, MAX_CONNS};
use nefele_core::messaging::msg::MAX_DATA_BYTES;
pub use rules::{FileProxy, ProxyConfig, ProxyRules};
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// The most reports waiting for the driver (then readers wait).
const REPORTS: usize = 256;

/// Why a proxy connection ended (other than by the core's `Close`).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No address of the destination is allowed by the `[proxy]` rules.
    #[error("{host}:{port} is not allowed by the proxy's rules")]
    Denied {
        /// The host asked for.
        host: String,
        /// Its port.
        port: u16,
    },
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// No connection within the connect timeout.
    #[error("no connection to {host}:{port} within the connect timeout")]
    ConnectTimeout {
        /// The host.
        host: String,
        /// Its port.
        port: u16,
    },
    /// The connection was refused or failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address tried last.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Reading or writing failed (a reset, for one).
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The far end closed the connection.
    #[error("closed by the far end")]
    FarEndClosed,
    /// More than the write buffer waited to be written: the far end does not keep up.
    #[error("{queued} bytes would wait to be written, over the limit of {limit}")]
    Overrun {
        /// The bytes that would have waited.
        queued: usize,
        /// The limit.
        limit: usize,
    },
    /// The core opened more connections than it may.
    #[error("more than {MAX_CONNS} connections")]
    TooMany,
}

impl ProxyError {
    /// What the process whose connection this ended is told.
    pub fn close(&self) -> ExternalClose {
        match self {
            ProxyError::Denied { .. } => ExternalClose::Denied,
            ProxyError::Resolve { .. }
            | ProxyError::ConnectTimeout { .. }
            | ProxyError::Connect { .. } => ExternalClose::Unreachable,
            ProxyError::Overrun { .. } => ExternalClose::Overrun,
            ProxyError::TooMany => ExternalClose::Dropped,
            ProxyError::Io(_) | ProxyError::FarEndClosed => ExternalClose::Closed,
        }
    }
}

/// How the proxy's connections ended, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections established.
    pub connected: u64,
    /// Destinations the rules refused.
    pub denied: u64,
    /// Resolutions or connections that failed or timed out.
    pub connect_failed: u64,
    /// Connections closed because the far end did not keep up.
    pub overrun: u64,
    /// Connections that failed, or that the far end closed, once established.
    pub ended: u64,
}

impl ProxyStats {
    fn count(&mut self, reason: &ProxyError) {
        match reason {
            ProxyError::Denied { .. } => self.denied += 1,
            ProxyError::Resolve { .. }
            | ProxyError::ConnectTimeout { .. }
            | ProxyError::Connect { .. } => self.connect_failed += 1,
            ProxyError::Overrun { .. } | ProxyError::TooMany => self.overrun += 1,
            ProxyError::Io(_) | ProxyError::FarEndClosed => self.ended += 1,
        }
    }
}

/// What a connection's task tells the driver.
enum Report {
    Connected,
    Data { conn: u64, data: Vec<u8> },
    Closed { conn: u64, reason: ProxyError },
}

/// One open connection, as the driver holds it.
struct Conn {
    /// Bytes for the task to write; dropping it ends the task.
    writes: mpsc::UnboundedSender<Vec<u8>>,
    /// Bytes handed to the task and not yet written.
    queued: Arc<AtomicUsize>,
}

/// The proxy's connections (see the module docs).
pub(crate) struct Proxy {
    rules: Arc<ProxyRules>,
    conns: BTreeMap<u64, Conn>,
    /// Events decided by the driver itself (an overrun), before the tasks' reports.
    ready: VecDeque<ExternalEvent>,
    reports_tx: mpsc::Sender<Report>,
    reports: mpsc::Receiver<Report>,
    stats: ProxyStats,
}

impl Proxy {
    pub(crate) fn new(rules: ProxyRules) -> Self {
        let (reports_tx, reports) = mpsc::channel(REPORTS);
        Proxy {
            rules: Arc::new(rules),
            conns: BTreeMap::new(),
            ready: VecDeque::new(),
            reports_tx,
            reports,
            stats: ProxyStats::default(),
        }
    }

    pub(crate) fn stats(&self) -> ProxyStats {
        self.stats
    }

    /// Carries out a command of the core. Must be called in a tokio runtime.
    pub(crate) fn command(&mut self, command: ExternalCommand) {
        match command {
            ExternalCommand::Close { conn } => {
                self.conns.remove(&conn);
            }
            ExternalCommand::Send {
                conn,
                host,
                port,
                data,
            } => {
                if !self.conns.contains_key(&conn) {
                    if self.conns.len() >= MAX_CONNS {
                        return self.close(conn, ProxyError::TooMany);
                    }
                    self.conns.insert(conn, self.open(conn, host, port));
                }
                let Some(c) = self.conns.get(&conn) else {
                    return;
                };
                let queued = c.queued.load(Ordering::Acquire) + data.len();
                if queued > self.rules.write_buffer {
                    let limit = self.rules.write_buffer;
                    return self.close(conn, ProxyError::Overrun { queued, limit });
                }
                c.queued.fetch_add(data.len(), Ordering::AcqRel);
                // A task that has ended has reported `Closed` (or will): nothing to do.
                let _ = c.writes.send(data);
            }
        }
    }

    /// Ends `conn` here, and tells the core.
    fn close(&mut self, conn: u64, reason: ProxyError) {
        self.conns.remove(&conn);
        self.log(conn, &reason);
        let reason = reason.close();
        self.ready.push_back(ExternalEvent::Closed { conn, reason });
    }

    fn log(&mut self, conn: u64, reason: &ProxyError) {
        self.stats.count(reason);
        match reason {
            ProxyError::FarEndClosed => tracing::debug!(conn, %reason, "proxy connection ended"),
            _ => tracing::warn!(conn, %reason, "proxy connection ended"),
        }
    }

    fn open(&self, conn: u64, host: String, port: u16) -> Conn {
        let (writes, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let task = Task {
            conn,
            rules: self.rules.clone(),
            queued: queued.clone(),
            reports: self.reports_tx.clone(),
        };
        tokio::spawn(task.run(host, port, rx));
        Conn { writes, queued }
    }

    /// The next event for the core (cancel-safe: use it in `select!`).
    pub(crate) async fn next(&mut self) -> ExternalEvent {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return event;
            }
            // The proxy holds a sender itself: the channel never closes.
            let Some(report) = self.reports.recv().await else {
                std::future::pending::<()>().await;
                continue;
            };
            match report {
                Report::Connected => self.stats.connected += 1,
                Report::Data { conn, data } => return ExternalEvent::Data { conn, data },
                Report::Closed { conn, reason } => {
                    self.conns.remove(&conn);
                    self.log(conn, &reason);
                    let reason = reason.close();
                    return ExternalEvent::Closed { conn, reason };
                }
            }
        }
    }
}

/// One connection's task.
struct Task {
    conn: u64,
    rules: Arc<ProxyRules>,
    queued: Arc<AtomicUsize>,
    reports: mpsc::Sender<Report>,
}

impl Task {
    /// Connects, then carries bytes until the far end closes, an error, or the
    /// driver drops the connection (`writes` closed: no report).
    async fn run(self, host: String, port: u16, writes: mpsc::UnboundedReceiver<Vec<u8>>) {
        let stream = match tokio::time::timeout(
            self.rules.connect_timeout,
            connect(&self.rules, &host, port),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(reason)) => return self.closed(reason).await,
            Err(_) => return self.closed(ProxyError::ConnectTimeout { host, port }).await,
        };
        let _ = stream.set_nodelay(true);
        let _ = self.reports.send(Report::Connected).await;
        let (reader, writer) = tokio::io::split(stream);
        let ended = tokio::select! {
            ended = self.write(writer, writes) => ended,
            ended = self.read(reader) => Some(ended),
        };
        if let Some(reason) = ended {
            self.closed(reason).await;
        }
    }

    async fn closed(&self, reason: ProxyError) {
        let conn = self.conn;
        let _ = self.reports.send(Report::Closed { conn, reason }).await;
    }

    /// Writes what comes; `None` when the driver dropped the connection.
    async fn write(
        &self,
        mut writer: tokio::io::WriteHalf<TcpStream>,
        mut writes: mpsc::UnboundedReceiver<Vec<u8>>,
    ) -> Option<ProxyError> {
        while let Some(data) = writes.recv().await {
            if let Err(e) = writer.write_all(&data).await {
                return Some(e.into());
            }
            self.queued.fetch_sub(data.len(), Ordering::AcqRel);
        }
        None
    }

    /// Reads until the far end closes or fails.
    async fn read(&self, mut reader: tokio::io::ReadHalf<TcpStream>) -> ProxyError {
        let mut buf = vec![0; MAX_DATA_BYTES];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) => return ProxyError::FarEndClosed,
                Ok(n) => {
                    let data = buf[..n].to_vec();
                    let report = Report::Data {
                        conn: self.conn,
                        data,
                    };
                    if self.reports.send(report).await.is_err() {
                        return ProxyError::FarEndClosed;
                    }
                }
                Err(e) => return e.into(),
            }
        }
    }
}

/// Resolves `host` (an IP address is taken as is), keeps the allowed addresses, and
/// connects to the first that answers.
async fn connect(rules: &ProxyRules, host: &str, port: u16) -> Result<TcpStream, ProxyError> {
    let candidates: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|source| ProxyError::Resolve {
                host: host.to_owned(),
                source,
            })?
            .collect(),
    };
    let mut last = None;
    for addr in candidates.into_iter().filter(|a| rules.allows(*a)) {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(source) => last = Some(ProxyError::Connect { addr, source }),
        }
    }
    Err(last.unwrap_or_else(|| ProxyError::Denied {
        host: host.to_owned(),
        port,
    }))
}

#[cfg(all(test, not(madsim)))]
mod tests;
