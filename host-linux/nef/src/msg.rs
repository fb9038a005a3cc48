//! The messaging side of `nef`: destinations as text, and what a receive prints.
//!
//! A destination is a pid (its hex text), `name:NAME`, `group:GROUP` or
//! `group:GROUP:PATTERN` (`multicast`, the default, `anycast`, `roundrobin`,
//! `leastloaded`, `failover`), `topic:TOPIC`, `all` (every process of the
//! tenant), or `ext:HOST:PORT` (a TCP service outside the cluster, through the
//! cluster's external proxy; an IPv6 address in brackets). What the external
//! service answers arrives as `external` messages. The JSON of a received message is `{from, class, seq, kind, data}`:
//! `from` the sender's pid text, `kind` one of `data`, `down`, `name_lost`, and
//! `data` the bytes as UTF-8 (lossy) for `data`, the watched pid for `down`, the
//! lost name for `name_lost`.

use nefele_api::messaging::{Dest, Mail, MailBody, Pattern};
use nefele_core::ids::Pid;
use serde::Serialize;

/// Parses a destination (see the module docs).
pub fn parse_dest(s: &str) -> Result<Dest, String> {
    if s == "all" {
        return Ok(Dest::Broadcast);
    }
    if let Some(name) = s.strip_prefix("name:") {
        return nonempty(name).map(|n| Dest::Name(n.to_owned()));
    }
    if let Some(topic) = s.strip_prefix("topic:") {
        return nonempty(topic).map(|t| Dest::Topic(t.to_owned()));
    }
    if let Some(rest) = s.strip_prefix("group:") {
        let (group, pattern) = match rest.rsplit_once(':') {
            Some((g, p)) => (g, parse_pattern(p)?),
            None => (rest, Pattern::Multicast),
        };
        return nonempty(group).map(|g| Dest::Group {
            group: g.to_owned(),
            pattern,
        });
    }
    if let Some(rest) = s.strip_prefix("ext:") {
        return parse_external(rest);
    }
    s.parse::<Pid>().map(Dest::Pid).map_err(|_| {
        format!(
            "{s:?} is not a destination (a pid, name:N, group:G[:PATTERN], topic:T, all or ext:HOST:PORT)"
        )
    })
}

/// `HOST:PORT`, an IPv6 host in brackets.
fn parse_external(s: &str) -> Result<Dest, String> {
    let bad = || format!("ext:{s:?} is not ext:HOST:PORT");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().map_err(|_| bad())?;
    if !nefele_core::messaging::external::valid_host(host)
        || (host.contains(':') && !s.starts_with('['))
    {
        return Err(bad());
    }
    Ok(Dest::External {
        host: host.to_owned(),
        port,
    })
}

fn nonempty(s: &str) -> Result<&str, String> {
    if s.is_empty() {
        Err("an empty name".to_owned())
    } else {
        Ok(s)
    }
}

fn parse_pattern(s: &str) -> Result<Pattern, String> {
    Ok(match s {
        "multicast" => Pattern::Multicast,
        "anycast" => Pattern::Anycast,
        "roundrobin" => Pattern::RoundRobin,
        "leastloaded" => Pattern::LeastLoaded,
        "failover" => Pattern::Failover,
        _ => {
            return Err(format!(
                "{s:?} is not a pattern (multicast, anycast, roundrobin, leastloaded, failover)"
            ))
        }
    })
}

/// A received message as `--json` prints it.
#[derive(Serialize)]
struct MailJson {
    from: String,
    class: String,
    seq: u64,
    kind: &'static str,
    data: String,
}

fn parts(mail: &Mail) -> (&'static str, String) {
    match &mail.body {
        MailBody::Data(d) => ("data", String::from_utf8_lossy(d).into_owned()),
        MailBody::Down { pid, reason } => ("down", format!("{pid} {reason:?}")),
        MailBody::NameLost { name } => ("name_lost", name.clone()),
        MailBody::External { host, port, data } => (
            "external",
            format!("{host}:{port} {}", String::from_utf8_lossy(data)),
        ),
        MailBody::ExternalClosed { host, port, reason } => {
            ("external_closed", format!("{host}:{port} {reason:?}"))
        }
    }
}

/// One line of JSON per message.
pub fn mail_json(mail: &Mail) -> String {
    let (kind, data) = parts(mail);
    serde_json::to_string(&MailJson {
        from: mail.from.to_string(),
        class: format!("{:?}", mail.class),
        seq: mail.seq,
        kind,
        data,
    })
    .expect("plain data")
}

/// One line per message: sender, distance class, sequence number, what it says.
pub fn mail_text(mail: &Mail) -> String {
    let (kind, data) = parts(mail);
    let what = if kind == "data" {
        data
    } else {
        format!("[{kind}] {data}")
    };
    format!("{} {:?} #{}: {what}", mail.from, mail.class, mail.seq)
}

/// Only the bytes of a data message or of an external service's answer (for
/// scripts); notices print as `mail_text`.
pub fn mail_data(mail: &Mail) -> String {
    match &mail.body {
        MailBody::Data(d) | MailBody::External { data: d, .. } => {
            String::from_utf8_lossy(d).into_owned()
        }
        _ => mail_text(mail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse() {
        assert_eq!(parse_dest("all"), Ok(Dest::Broadcast));
        let ext = |host: &str, port| {
            Ok(Dest::External {
                host: host.into(),
                port,
            })
        };
        assert_eq!(parse_dest("ext:10.0.0.1:7"), ext("10.0.0.1", 7));
        assert_eq!(parse_dest("ext:echo.example:443"), ext("echo.example", 443));
        assert_eq!(parse_dest("ext:[::1]:80"), ext("::1", 80));
        for bad in ["ext:", "ext:host", "ext::80", "ext:h:99999", "ext:::1:80"] {
            assert!(parse_dest(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_dest("name:db"), Ok(Dest::Name("db".into())));
        assert_eq!(parse_dest("topic:t"), Ok(Dest::Topic("t".into())));
        assert_eq!(
            parse_dest("group:g:failover"),
            Ok(Dest::Group {
                group: "g".into(),
                pattern: Pattern::Failover
            })
        );
        assert_eq!(
            parse_dest("group:g"),
            Ok(Dest::Group {
                group: "g".into(),
                pattern: Pattern::Multicast
            })
        );
        assert!(parse_dest("group:g:sideways").is_err());
        assert!(parse_dest("name:").is_err());
        assert!(parse_dest("zz").is_err());
    }
}
