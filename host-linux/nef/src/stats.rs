//! `nef stats`: one agent's metrics, fetched from the address its configuration
//! serves them on (`metrics = "ip:port"` in nefeled's file) and printed as the
//! agent wrote them (the Prometheus text format). A plain HTTP/1.1 `GET` over one
//! connection, read to its end, at most [`MAX_RESPONSE`] bytes.

use nefele::ClientError;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

/// The most of an answer read.
const MAX_RESPONSE: u64 = 4 << 20;
/// How long the agent has to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The metrics text the agent at `addr` serves.
pub(crate) fn fetch(addr: &str) -> Result<String, ClientError> {
    let io = |source: std::io::Error| ClientError::Io {
        path: PathBuf::from(format!("http://{addr}/metrics")),
        source,
    };
    let mut s = TcpStream::connect(addr).map_err(io)?;
    s.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut response = String::new();
    s.take(MAX_RESPONSE)
        .read_to_string(&mut response)
        .map_err(io)?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200 ") => Ok(body.to_owned()),
        _ => Err(ClientError::Unexpected(format!(
            "{addr} answered: {}",
            response.lines().next().unwrap_or("nothing")
        ))),
    }
}
