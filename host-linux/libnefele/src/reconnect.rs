//! Finding the agent again: what a connection needs to survive a restart of its
//! agent.
//!
//! A process started by Nefele is told its agent socket (`NEFELE_AGENT_ADDR`: `@`
//! and an abstract name in the process's network namespace, or a path); a tenant
//! connection (a program outside Nefele) knows the socket path it connected to and
//! its token ([`Reconnect::token`]). When the connection breaks (end of file,
//! `EPIPE`, `ECONNRESET`), the client connects there again
//! ([`Reconnect::connect`]: retries with a backoff from [`FIRST_PAUSE`] doubling to
//! [`MAX_PAUSE`], for at most the patience, [`DEFAULT_PATIENCE`] unless set), says
//! `Hello` (with the token again), and must be welcomed as the same process, or as
//! a tenant connection again; then it registers again the names, joins again the
//! groups, subscribes again to the topics and monitors again the processes this
//! client had ([`Restore`]), since the agent's new life holds none of them.
//!
//! Invariants: the patience bounds the whole wait, the greeting's included (a
//! socket whose agent never answers is given up); the restore sets hold exactly
//! what succeeded on this client and was not undone.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nefele_api::ids::Pid;

/// The environment variable naming the agent socket of a process started by Nefele.
pub const AGENT_ADDR_ENV: &str = "NEFELE_AGENT_ADDR";
/// How long a client tries to reach its agent again, unless told otherwise.
pub const DEFAULT_PATIENCE: Duration = Duration::from_secs(60);
/// The first pause between attempts.
pub const FIRST_PAUSE: Duration = Duration::from_millis(20);
/// The longest pause between attempts.
pub const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Where an agent socket is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentAddr {
    /// An abstract name (Linux), in the caller's network namespace.
    Abstract(Vec<u8>),
    /// A path.
    Path(PathBuf),
}

impl AgentAddr {
    /// `@name` is an abstract name, anything else a path; `None` for an empty text.
    #[must_use]
    pub fn parse(text: &str) -> Option<AgentAddr> {
        match text.strip_prefix('@') {
            Some("") => None,
            Some(name) => Some(AgentAddr::Abstract(name.as_bytes().to_vec())),
            None if text.is_empty() => None,
            None => Some(AgentAddr::Path(PathBuf::from(text))),
        }
    }

    /// Connects without waiting on a full backlog (`WouldBlock`: try again later).
    fn connect(&self) -> io::Result<UnixStream> {
        match self {
            AgentAddr::Abstract(name) => crate::endpoint::connect(name, true),
            AgentAddr::Path(path) => {
                crate::endpoint::connect(path.as_os_str().as_encoded_bytes(), false)
            }
        }
    }
}

impl std::fmt::Display for AgentAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentAddr::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
            AgentAddr::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// What a process had made of the agent's state, to make again after a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restore {
    /// Names registered.
    pub names: BTreeSet<String>,
    /// Groups joined.
    pub groups: BTreeSet<String>,
    /// Topics subscribed to.
    pub topics: BTreeSet<String>,
    /// Processes monitored.
    pub monitors: BTreeSet<Pid>,
}

/// How a client reaches its agent again. Its `Debug` hides the token (a client
/// printed in a log must not carry the tenant's secret).
pub struct Reconnect {
    /// The agent socket.
    pub addr: AgentAddr,
    /// How long to try.
    pub patience: Duration,
    /// What to make again.
    pub restore: Restore,
    /// How many times the connection was made again.
    pub count: u64,
    /// The token to say again (a tenant connection); `None` on a process's
    /// endpoint (the agent names the process by the kernel's word) or for a
    /// connection the agent authenticates by the caller's uid.
    pub token: Option<String>,
}

impl std::fmt::Debug for Reconnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconnect")
            .field("addr", &self.addr)
            .field("patience", &self.patience)
            .field("restore", &self.restore)
            .field("count", &self.count)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl Reconnect {
    /// Reconnection through `addr`, with the default patience and nothing to restore.
    #[must_use]
    pub fn new(addr: AgentAddr) -> Reconnect {
        Reconnect {
            addr,
            patience: DEFAULT_PATIENCE,
            restore: Restore::default(),
            count: 0,
            token: None,
        }
    }

    /// As [`Reconnect::new`], saying `token` in each new `Hello`.
    #[must_use]
    pub fn with_token(mut self, token: Option<&str>) -> Reconnect {
        self.token = token.map(str::to_owned);
        self
    }

    /// From `NEFELE_AGENT_ADDR`, if set.
    #[must_use]
    pub fn from_env() -> Option<Reconnect> {
        let text = std::env::var(AGENT_ADDR_ENV).ok()?;
        AgentAddr::parse(&text).map(Reconnect::new)
    }

    /// Connects, retrying with backoff until `deadline`; each attempt (a connection,
    /// or why none was made) is offered to `greet` (which is given the time left),
    /// and the first one it accepts is the answer. The last error if none was
    /// accepted by then.
    pub fn connect<T, E>(
        &self,
        deadline: Instant,
        mut greet: impl FnMut(io::Result<UnixStream>, Duration) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut pause = FIRST_PAUSE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = greet(self.addr.connect(), left.max(Duration::from_millis(1)));
            match attempt {
                Ok(t) => return Ok(t),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            std::thread::sleep(pause.min(left));
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_printed_reconnection_hides_its_token() {
        let r = Reconnect::new(AgentAddr::Path("/run/nefele/api.sock".into()))
            .with_token(Some("s3cret-token"));
        let printed = format!("{r:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("<hidden>"), "{printed}");
    }

    #[test]
    fn addresses_parse() {
        assert_eq!(
            AgentAddr::parse("@nefele-agent"),
            Some(AgentAddr::Abstract(b"nefele-agent".to_vec()))
        );
        assert_eq!(
            AgentAddr::parse("/run/a.sock"),
            Some(AgentAddr::Path("/run/a.sock".into()))
        );
        assert_eq!(AgentAddr::parse("@"), None);
        assert_eq!(AgentAddr::parse(""), None);
    }

    #[test]
    fn an_agent_that_never_comes_is_given_up_at_the_deadline() {
        let dir = std::env::temp_dir().join(format!("nefele-none-{}", std::process::id()));
        let r = Reconnect::new(AgentAddr::Path(dir.join("absent.sock")));
        let started = Instant::now();
        let deadline = started + Duration::from_millis(300);
        let got: Result<UnixStream, io::Error> = r.connect(deadline, |s, _| s);
        assert!(got.is_err());
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
}
