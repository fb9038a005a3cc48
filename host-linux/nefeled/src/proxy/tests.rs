//! The proxy against real loopback sockets: echo, refusal by the rules, connect
//! failures, a far end that closes, one that does not read, and a large echo that
//! needs reading and writing side by side.

use super::*;
use std::time::Duration;
use tokio::net::TcpListener;

/// Every wait here is bounded; a loaded machine gets generous bounds.
const PATIENCE: Duration = Duration::from_secs(20);

fn allowing(rules: &[&str]) -> ProxyRules {
    ProxyRules {
        allow: rules.iter().map(|r| r.parse().unwrap()).collect(),
        ..ProxyRules::default()
    }
}

fn send(conn: u64, addr: SocketAddr, data: &[u8]) -> ExternalCommand {
    ExternalCommand::Send {
        conn,
        host: addr.ip().to_string(),
        port: addr.port(),
        data: data.to_vec(),
    }
}

async fn next(p: &mut Proxy) -> ExternalEvent {
    tokio::time::timeout(PATIENCE, p.next())
        .await
        .expect("the proxy reported nothing")
}

/// An echo server on loopback serving `conns` connections, one after another.
async fn echo_server(conns: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..conns {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// The bytes of `conn` until `want` of them came.
async fn read_back(p: &mut Proxy, conn: u64, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < want {
        match next(p).await {
            ExternalEvent::Data { conn: c, data } if c == conn => {
                assert!(data.len() <= MAX_DATA_BYTES);
                got.extend(data);
            }
            other => panic!("after {} bytes: {other:?}", got.len()),
        }
    }
    got
}

#[tokio::test]
async fn bytes_go_out_and_the_answer_comes_back_as_data() {
    let echo = echo_server(1).await;
    let mut p = Proxy::new(allowing(&[&format!("127.0.0.1:{}", echo.port())]));
    p.command(send(7, echo, b"hello "));
    p.command(send(7, echo, b"world"));
    assert_eq!(read_back(&mut p, 7, 11).await, b"hello world");
    assert_eq!(p.stats().connected, 1);
}

#[tokio::test]
async fn a_host_name_is_resolved_and_its_address_checked() {
    let echo = echo_server(1).await;
    let mut p = Proxy::new(allowing(&[&format!("127.0.0.1:{}", echo.port())]));
    p.command(ExternalCommand::Send {
        conn: 1,
        host: "localhost".into(),
        port: echo.port(),
        data: b"by name".to_vec(),
    });
    assert_eq!(read_back(&mut p, 1, 7).await, b"by name");
    // The same name, with rules that allow none of its addresses.
    let mut p = Proxy::new(allowing(&["10.0.0.0/8:*"]));
    p.command(ExternalCommand::Send {
        conn: 1,
        host: "localhost".into(),
        port: echo.port(),
        data: b"x".to_vec(),
    });
    assert_eq!(
        next(&mut p).await,
        ExternalEvent::Closed {
            conn: 1,
            reason: ExternalClose::Denied
        }
    );
    assert_eq!(p.stats().denied, 1);
}

/// A destination outside the rules (by default, every one) is never connected to.
#[tokio::test]
async fn a_destination_outside_the_rules_is_closed_without_a_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let private = listener.local_addr().unwrap();
    for rules in [
        ProxyRules::default(),
        allowing(&[&format!("127.0.0.1:{}", private.port() ^ 1)]),
    ] {
        let mut p = Proxy::new(rules);
        p.command(send(3, private, b"GET /secrets"));
        assert_eq!(
            next(&mut p).await,
            ExternalEvent::Closed {
                conn: 3,
                reason: ExternalClose::Denied
            }
        );
        assert_eq!(p.stats().denied, 1);
    }
    // Nothing reached the listener (a connection would be queued by now: the
    // refusal is decided before any connect).
    let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
    assert!(accepted.is_err(), "the private service was reached");
}

#[tokio::test]
async fn a_refused_connection_is_reported_closed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone = listener.local_addr().unwrap();
    drop(listener);
    let mut p = Proxy::new(allowing(&["127.0.0.0/8:*"]));
    p.command(send(1, gone, b"x"));
    assert_eq!(
        next(&mut p).await,
        ExternalEvent::Closed {
            conn: 1,
            reason: ExternalClose::Unreachable
        }
    );
    assert_eq!(p.stats().connect_failed, 1);
    // The core's next send opens a new connection, with a new number.
    let echo = echo_server(1).await;
    p.command(send(2, echo, b"again"));
    assert_eq!(read_back(&mut p, 2, 5).await, b"again");
}

#[tokio::test]
async fn a_far_end_that_closes_is_reported_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(b"bye").await.unwrap();
    });
    let mut p = Proxy::new(allowing(&["127.0.0.1:*"]));
    p.command(send(4, addr, b"hi"));
    assert_eq!(read_back(&mut p, 4, 3).await, b"bye");
    assert_eq!(
        next(&mut p).await,
        ExternalEvent::Closed {
            conn: 4,
            reason: ExternalClose::Closed
        }
    );
    assert_eq!(p.stats().ended, 1);
    assert!(p.conns.is_empty());
}

/// A far end that never reads: the bytes waiting on its connection reach the write
/// buffer's limit, and the connection is closed instead of growing.
#[tokio::test]
async fn a_far_end_that_does_not_keep_up_is_cut_off() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_hold, held) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (_s, _) = listener.accept().await.unwrap();
        let _ = held.await; // holds the connection open, reading nothing
    });
    let rules = ProxyRules {
        write_buffer: 4 * MAX_DATA_BYTES,
        ..allowing(&["127.0.0.1:*"])
    };
    let mut p = Proxy::new(rules);
    let chunk = vec![0x5a; MAX_DATA_BYTES];
    // The kernel's buffers take a few megabytes first; 100 MB is far beyond them.
    let mut sent = 0;
    while p.ready.is_empty() {
        assert!(sent < 100_000_000, "never cut off");
        p.command(send(9, addr, &chunk));
        sent += chunk.len();
        tokio::task::yield_now().await;
    }
    let mut events = Vec::new();
    let cut = ExternalEvent::Closed {
        conn: 9,
        reason: ExternalClose::Overrun,
    };
    while events.last() != Some(&cut) {
        events.push(next(&mut p).await);
    }
    assert_eq!(p.stats().overrun, 1);
    assert!(p.conns.is_empty());
}

/// Megabytes through an echo: the far end answers while it is sent to, and the
/// proxy reads while it writes (one after the other would deadlock once both
/// sides' buffers are full).
#[tokio::test]
async fn a_large_echo_comes_back_whole() {
    let echo = echo_server(1).await;
    let mut p = Proxy::new(allowing(&["127.0.0.1:*"]));
    let want: Vec<u8> = (0..8 * MAX_DATA_BYTES as u32)
        .map(|i| (i % 251) as u8)
        .collect();
    let mut got = Vec::new();
    for chunk in want.chunks(MAX_DATA_BYTES) {
        p.command(send(5, echo, chunk));
        while let Ok(event) = tokio::time::timeout(Duration::from_millis(1), p.next()).await {
            match event {
                ExternalEvent::Data { data, .. } => got.extend(data),
                other => panic!("{other:?}"),
            }
        }
    }
    let rest = want.len() - got.len();
    got.extend(read_back(&mut p, 5, rest).await);
    assert_eq!(got, want);
}

/// The core's `Close` ends the connection without a report; the far end sees it end.
#[tokio::test]
async fn close_ends_the_connection_quietly() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all).await;
        let _ = seen_tx.send(all);
    });
    let mut p = Proxy::new(allowing(&["127.0.0.1:*"]));
    p.command(send(6, addr, b"last words"));
    // Connected once the report is in: then close.
    while p.stats().connected == 0 {
        assert!(
            tokio::time::timeout(Duration::from_millis(10), p.next())
                .await
                .is_err(),
            "no event expected"
        );
    }
    p.command(ExternalCommand::Close { conn: 6 });
    let all = tokio::time::timeout(PATIENCE, seen).await.unwrap().unwrap();
    assert_eq!(all, b"last words");
    assert!(tokio::time::timeout(Duration::from_millis(50), p.next())
        .await
        .is_err());
}
