//! The `[proxy]` section of nefeled's configuration: which agents are the cluster's
//! external proxies, and where this agent, as a proxy, may open connections.
//!
//! Tenant code is hostile: a send to `Dest::External` names any host and port, and
//! the proxy agent would otherwise open a connection from the server's own network
//! position (its loopback, the operator's private networks, the agents' own ports).
//! So a proxy connects only to addresses an [`AllowRule`] names; the list is empty
//! by default, so an agent listed as a proxy with no rules refuses every
//! destination. A host name is resolved by the proxy, and the rule is checked
//! against each resolved address; the proxy connects to that checked address, never
//! to the name again (a second resolution could answer something else). Unspecified
//! addresses (`0.0.0.0`, `::`, which reach the local host) are refused whatever the
//! rules say; IPv4-mapped IPv6 addresses are checked as the IPv4 address they are.
//!
//! A rule is `ADDRESS[/PREFIX]:PORTS`, with `PORTS` one port, a range `LO-HI` or
//! `*`, and an IPv6 address in brackets: `"203.0.113.7:443"`, `"10.20.0.0/16:8000-8999"`,
//! `"[2001:db8::]/32:*"`. Rules are literal: `0.0.0.0/0:*` includes loopback and
//! every private network the server can reach.

use nefele_core::ids::NodeId;
use nefele_core::messaging::msg::MAX_DATA_BYTES;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

/// How long a proxy waits for a connection (resolution included) by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most bytes waiting to be written on one connection by default.
pub const DEFAULT_WRITE_BUFFER: usize = 1 << 20;

/// The `[proxy]` table, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileProxy {
    /// The node ids of the cluster's proxy agents (the same list on every agent).
    #[serde(default)]
    pub agents: Vec<u32>,
    /// Where this agent, as a proxy, may connect (see the module docs). Empty: nowhere.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Milliseconds to resolve and connect before the connection is given up.
    pub connect_timeout_ms: Option<u64>,
    /// The most bytes waiting to be written on one connection; a send past it closes
    /// the connection (the far end does not keep up).
    pub write_buffer_bytes: Option<usize>,
}

/// A resolved `[proxy]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The cluster's proxy agents.
    pub agents: Vec<NodeId>,
    /// Where this agent may connect, when it is a proxy.
    pub rules: ProxyRules,
}

/// What a proxy agent may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRules {
    /// The destinations allowed (empty: none).
    pub allow: Vec<AllowRule>,
    /// How long to resolve and connect.
    pub connect_timeout: Duration,
    /// The most bytes waiting to be written on one connection.
    pub write_buffer: usize,
}

impl Default for ProxyRules {
    /// Nothing allowed.
    fn default() -> Self {
        ProxyRules {
            allow: Vec::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            write_buffer: DEFAULT_WRITE_BUFFER,
        }
    }
}

/// One allowed network and port range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    net: IpAddr,
    prefix: u8,
    ports: RangeInclusive<u16>,
}

/// Why a rule, or the section, is refused (the words of a configuration error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// No `:PORTS` part.
    #[error("`{0}` has no port (ADDRESS[/PREFIX]:PORTS, PORTS a port, LO-HI or *)")]
    NoPort(String),
    /// The address part does not parse.
    #[error("`{0}` is not an IP address (IPv6 goes in brackets)")]
    Address(String),
    /// The prefix is not a number within the address's length.
    #[error("`{0}` is not a prefix length for this address")]
    Prefix(String),
    /// The port part does not parse, or the range is empty.
    #[error("`{0}` is not a port, a range LO-HI of ports, or *")]
    Ports(String),
    /// A zero timeout.
    #[error("the timeout must be positive")]
    ZeroTimeout,
    /// A write buffer that cannot hold one message.
    #[error("the write buffer must hold at least one message ({MAX_DATA_BYTES} bytes)")]
    SmallBuffer,
}

impl std::str::FromStr for AllowRule {
    type Err = RuleError;

    fn from_str(text: &str) -> Result<Self, RuleError> {
        let (addr, ports) = text
            .rsplit_once(':')
            .ok_or_else(|| RuleError::NoPort(text.to_owned()))?;
        let (addr, prefix) = match addr.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (addr, None),
        };
        let addr = addr
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr);
        let net: IpAddr = addr
            .parse()
            .map_err(|_| RuleError::Address(addr.to_owned()))?;
        if net.is_ipv6() && !text.starts_with('[') {
            return Err(RuleError::Address(addr.to_owned()));
        }
        let net = canonical(net);
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| RuleError::Prefix(p.to_owned()))?,
        };
        let bad_ports = || RuleError::Ports(ports.to_owned());
        let ports = if ports == "*" {
            0..=u16::MAX
        } else if let Some((lo, hi)) = ports.split_once('-') {
            let lo: u16 = lo.parse().map_err(|_| bad_ports())?;
            let hi: u16 = hi.parse().map_err(|_| bad_ports())?;
            if lo > hi {
                return Err(bad_ports());
            }
            lo..=hi
        } else {
            let p: u16 = ports.parse().map_err(|_| bad_ports())?;
            p..=p
        };
        Ok(AllowRule { net, prefix, ports })
    }
}

/// `ip`, an IPv4-mapped IPv6 address as its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The first `prefix` bits of `a` and `b` are equal (both of one family).
fn same_prefix(a: IpAddr, b: IpAddr, prefix: u8) -> bool {
    let (a, b, len) = match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(a.to_bits()), u128::from(b.to_bits()), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (a.to_bits(), b.to_bits(), 128),
        _ => return false,
    };
    let shift = len - u32::from(prefix);
    shift >= len || (a >> shift) == (b >> shift)
}

impl AllowRule {
    fn allows(&self, addr: SocketAddr) -> bool {
        self.ports.contains(&addr.port())
            && same_prefix(self.net, canonical(addr.ip()), self.prefix)
    }
}

impl ProxyRules {
    /// Whether a proxy may connect to `addr` (see the module docs).
    #[must_use]
    pub fn allows(&self, addr: SocketAddr) -> bool {
        !canonical(addr.ip()).is_unspecified() && self.allow.iter().any(|r| r.allows(addr))
    }
}

impl FileProxy {
    /// The section resolved, or the field and its problem.
    pub fn resolve(self) -> Result<ProxyConfig, (&'static str, RuleError)> {
        let allow = self
            .allow
            .iter()
            .map(|r| r.parse())
            .collect::<Result<Vec<AllowRule>, _>>()
            .map_err(|e| ("proxy.allow", e))?;
        let connect_timeout = match self.connect_timeout_ms {
            Some(0) => return Err(("proxy.connect_timeout_ms", RuleError::ZeroTimeout)),
            Some(ms) => Duration::from_millis(ms),
            None => DEFAULT_CONNECT_TIMEOUT,
        };
        let write_buffer = match self.write_buffer_bytes {
            Some(b) if b < MAX_DATA_BYTES => {
                return Err(("proxy.write_buffer_bytes", RuleError::SmallBuffer))
            }
            Some(b) => b,
            None => DEFAULT_WRITE_BUFFER,
        };
        let mut agents: Vec<NodeId> = self.agents.into_iter().map(NodeId).collect();
        agents.sort_unstable();
        agents.dedup();
        Ok(ProxyConfig {
            agents,
            rules: ProxyRules {
                allow,
                connect_timeout,
                write_buffer,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str]) -> ProxyRules {
        ProxyRules {
            allow: allow.iter().map(|r| r.parse().unwrap()).collect(),
            ..ProxyRules::default()
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        let none = ProxyRules::default();
        for a in ["127.0.0.1:80", "10.0.0.1:22", "203.0.113.7:443", "[::1]:80"] {
            assert!(!none.allows(addr(a)), "{a}");
        }
    }

    #[test]
    fn a_rule_allows_its_network_and_ports_only() {
        let r = rules(&[
            "10.20.0.0/16:8000-8999",
            "203.0.113.7:443",
            "[2001:db8::]/32:*",
        ]);
        assert!(r.allows(addr("10.20.5.6:8000")));
        assert!(r.allows(addr("10.20.255.255:8999")));
        assert!(!r.allows(addr("10.21.0.1:8000")));
        assert!(!r.allows(addr("10.20.0.1:9000")));
        assert!(r.allows(addr("203.0.113.7:443")));
        assert!(!r.allows(addr("203.0.113.8:443")));
        assert!(!r.allows(addr("203.0.113.7:80")));
        assert!(r.allows(addr("[2001:db8:1::5]:1")));
        assert!(!r.allows(addr("[2001:db9::5]:1")));
        // The loopback and the host's other services stay out.
        assert!(!r.allows(addr("127.0.0.1:8000")));
    }

    #[test]
    fn mapped_and_unspecified_addresses_do_not_slip_through() {
        let r = rules(&["127.0.0.0/8:7", "0.0.0.0/0:9"]);
        assert!(
            r.allows(addr("[::ffff:127.0.0.1]:7")),
            "mapped is checked as IPv4"
        );
        assert!(!r.allows(addr("[::ffff:127.0.0.1]:8")));
        assert!(
            !r.allows(addr("0.0.0.0:9")),
            "the unspecified address is the local host"
        );
        assert!(!r.allows(addr("[::]:9")));
        assert!(!r.allows(addr("[::ffff:0.0.0.0]:9")));
        let mapped_rule = rules(&["[::ffff:10.0.0.1]:5"]);
        assert!(mapped_rule.allows(addr("10.0.0.1:5")));
    }

    #[test]
    fn bad_rules_are_named() {
        for (text, want) in [
            ("10.0.0.1", RuleError::NoPort("10.0.0.1".into())),
            ("host.example:80", RuleError::Address("host.example".into())),
            ("10.0.0.0/33:80", RuleError::Prefix("33".into())),
            ("10.0.0.0/x:80", RuleError::Prefix("x".into())),
            ("10.0.0.1:9-8", RuleError::Ports("9-8".into())),
            ("10.0.0.1:70000", RuleError::Ports("70000".into())),
            ("::1:80", RuleError::Address("::1".into())),
        ] {
            assert_eq!(text.parse::<AllowRule>(), Err(want), "{text}");
        }
    }

    #[test]
    fn the_section_resolves_with_defaults() {
        let c = FileProxy {
            agents: vec![3, 1, 3],
            allow: vec!["10.0.0.0/8:*".into()],
            ..FileProxy::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.agents, vec![NodeId(1), NodeId(3)]);
        assert_eq!(c.rules.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(c.rules.write_buffer, DEFAULT_WRITE_BUFFER);
        let zero = FileProxy {
            write_buffer_bytes: Some(MAX_DATA_BYTES - 1),
            ..FileProxy::default()
        };
        assert_eq!(zero.resolve().unwrap_err().0, "proxy.write_buffer_bytes");
    }
}
