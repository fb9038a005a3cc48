//! A process's client across a restart of its agent, against a scripted agent:
//! the first life serves the endpoint and dies mid-call; the second answers on
//! the agent socket (an abstract name unique to each test).

use nefele::proto::{
    self, AgentFrame, Call, ClientFrame, Reply, MAX_REPLY_BYTES, MAX_REQUEST_BYTES,
};
use nefele::reconnect::{AgentAddr, Reconnect};
use nefele::{Client, ClientError, SendOptions};
use nefele_api::calls::ApiReply;
use nefele_api::ids::{Incarnation, NodeId, Pid, TenantId};
use nefele_api::messaging::{Mail, MailBody, SendError};
use nefele_api::replies::DistanceClass;
use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn pid(n: u64) -> Pid {
    Pid::new(NodeId(1), Incarnation(1), n)
}

fn read(s: &mut UnixStream) -> Option<ClientFrame> {
    let mut prefix = [0u8; 4];
    s.read_exact(&mut prefix).ok()?;
    let len = proto::check_len(prefix, MAX_REQUEST_BYTES).unwrap();
    let mut payload = vec![0; len];
    s.read_exact(&mut payload).ok()?;
    Some(proto::decode(&payload, MAX_REQUEST_BYTES).unwrap())
}

fn write(s: &mut UnixStream, frame: &AgentFrame) {
    s.write_all(&proto::encode(frame, MAX_REPLY_BYTES).unwrap())
        .unwrap();
}

fn welcome(s: &mut UnixStream, me: Pid) {
    assert!(matches!(read(s), Some(ClientFrame::Hello { .. })));
    write(
        s,
        &AgentFrame::Welcome {
            version: proto::PROTOCOL_VERSION,
            tenant: TenantId(7),
            node: NodeId(1),
            pid: Some(me),
        },
    );
}

/// Answers calls as an agent would, until a `Recv` (or the end); returns the calls
/// seen. `die_at_recv`: close there instead of answering (the crash).
fn serve(s: &mut UnixStream, die_at_recv: bool) -> Vec<Call> {
    let mut seen = Vec::new();
    while let Some(ClientFrame::Call { id, call }) = read(s) {
        seen.push(call.clone());
        let reply = match call {
            Call::Register { .. } => ApiReply::Named(Ok(())),
            Call::Join { .. } | Call::Subscribe { .. } => ApiReply::Grouped(Ok(())),
            Call::Monitor { .. } => ApiReply::Monitored(Ok(())),
            // Its fate never comes from this life.
            Call::Send { .. } => continue,
            Call::Recv { .. } if die_at_recv => return seen,
            Call::Recv { .. } => ApiReply::Received(Ok(vec![Mail {
                from: pid(2),
                class: DistanceClass::SameHost,
                seq: 0,
                body: MailBody::Data(b"after".to_vec()),
            }])),
            other => panic!("unexpected {other:?}"),
        };
        write(
            s,
            &AgentFrame::Reply {
                id,
                reply: Reply::Api(reply),
            },
        );
        if matches!(seen.last(), Some(Call::Recv { .. })) {
            return seen;
        }
    }
    seen
}

fn unique_name(test: &str) -> Vec<u8> {
    format!("nefele-test-{test}-{}", std::process::id()).into_bytes()
}

#[test]
fn a_broken_connection_is_made_again_and_what_the_process_had_is_made_again() {
    let me = pid(1);
    let name = unique_name("restore");
    let listener =
        UnixListener::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let agent = std::thread::spawn(move || {
        welcome(&mut ours, me);
        let first = serve(&mut ours, true);
        drop(ours); // the crash
        let (mut again, _) = listener.accept().unwrap();
        welcome(&mut again, me);
        (first, serve(&mut again, false))
    });
    let reconnect = Reconnect::new(AgentAddr::Abstract(name));
    let mut c = Client::over_endpoint(theirs, PathBuf::from("test"), Some(reconnect)).unwrap();
    assert_eq!(c.me(), Some(me));
    c.register("db").unwrap();
    c.join("workers").unwrap();
    c.subscribe("news").unwrap();
    c.monitor(pid(3)).unwrap();
    let owed = c
        .send_async(pid(2), b"in flight", SendOptions::default())
        .unwrap();
    let mail = c.recv(1, Duration::from_secs(5)).unwrap();
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].body, MailBody::Data(b"after".to_vec()));
    assert_eq!(c.reconnects(), 1);
    assert_eq!(c.me(), Some(me), "the same pid");
    assert_eq!(c.take_fates(), vec![(owed, Err(SendError::Unknown))]);
    assert!(c.take_restore_failures().is_empty());
    let (first, second) = agent.join().unwrap();
    assert_eq!(first.len(), 6, "{first:?}");
    let made_again: Vec<String> = second.iter().map(|c| format!("{c:?}")).collect();
    assert_eq!(second.len(), 5, "{made_again:?}");
    assert!(matches!(&second[0], Call::Register { name, pid } if name == "db" && *pid == me));
    assert!(matches!(&second[1], Call::Join { group, .. } if group == "workers"));
    assert!(matches!(&second[2], Call::Subscribe { topic, .. } if topic == "news"));
    assert!(matches!(&second[3], Call::Monitor { watched, .. } if *watched == pid(3)));
    assert!(
        matches!(&second[4], Call::Recv { .. }),
        "the receive made again"
    );
}

#[test]
fn a_send_whose_fate_was_lost_fails_unknown_and_the_next_one_goes() {
    let me = pid(1);
    let name = unique_name("send");
    let listener =
        UnixListener::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let agent = std::thread::spawn(move || {
        welcome(&mut ours, me);
        assert!(matches!(
            read(&mut ours),
            Some(ClientFrame::Call {
                call: Call::Send { .. },
                ..
            })
        ));
        drop(ours); // the crash, before the fate
        let (mut again, _) = listener.accept().unwrap();
        welcome(&mut again, me);
        serve(&mut again, false)
    });
    let reconnect = Reconnect::new(AgentAddr::Abstract(name));
    let mut c = Client::over_endpoint(theirs, PathBuf::from("test"), Some(reconnect)).unwrap();
    assert!(matches!(
        c.send(pid(2), b"lost?"),
        Err(ClientError::Send(SendError::Unknown))
    ));
    assert_eq!(c.recv(1, Duration::from_secs(5)).unwrap().len(), 1);
    assert_eq!(
        agent.join().unwrap().len(),
        1,
        "nothing to restore, one receive"
    );
}

#[test]
fn an_agent_that_does_not_come_back_is_a_typed_error_within_the_patience() {
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let me = pid(1);
    let agent = std::thread::spawn(move || {
        welcome(&mut ours, me);
        drop(ours);
    });
    // Nobody listens on this name.
    let reconnect = Reconnect::new(AgentAddr::Abstract(unique_name("gone")));
    let mut c = Client::over_endpoint(theirs, PathBuf::from("test"), Some(reconnect)).unwrap();
    agent.join().unwrap();
    c.set_reconnect_patience(Duration::from_millis(300));
    let started = Instant::now();
    match c.recv(1, Duration::from_secs(5)) {
        Err(ClientError::AgentGone { addr, .. }) => assert!(addr.starts_with('@'), "{addr}"),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn without_an_agent_socket_a_broken_endpoint_is_an_io_error() {
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let me = pid(1);
    let agent = std::thread::spawn(move || {
        welcome(&mut ours, me);
        drop(ours);
    });
    let mut c = Client::over_endpoint(theirs, PathBuf::from("test"), None).unwrap();
    agent.join().unwrap();
    assert!(matches!(
        c.recv(1, Duration::from_secs(5)),
        Err(ClientError::Io { .. })
    ));
}

#[test]
fn a_program_whose_inherited_endpoint_is_dead_connects_through_the_agent_socket_as_its_process() {
    let me = pid(1);
    let name = unique_name("dead-at-start");
    let listener =
        UnixListener::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
    // The agent that handed out the endpoint is gone before the program starts.
    let (ours, theirs) = UnixStream::pair().unwrap();
    drop(ours);
    let agent = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        welcome(&mut s, me);
        serve(&mut s, false)
    });
    let reconnect = Reconnect::new(AgentAddr::Abstract(name));
    let mut c = Client::over_endpoint(theirs, PathBuf::from("test"), Some(reconnect)).unwrap();
    // Before the fix, the reconnection forgot the scope: `NoProcess`.
    assert_eq!(c.me(), Some(me));
    assert_eq!(c.recv(1, Duration::from_secs(5)).unwrap().len(), 1);
    assert_eq!(agent.join().unwrap().len(), 1);
}

/// A tenant connection (a token, on the agent's socket path) whose agent restarts:
/// the client goes back to the same path, says its token again, and the call in
/// flight (read-only) is made again in the new life.
#[test]
fn a_tenant_connection_goes_back_to_its_socket_path_with_its_token() {
    let path = std::env::temp_dir().join(format!("nefele-test-tenant-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let agent = std::thread::spawn(move || {
        let mut tokens = Vec::new();
        for life in 0..2 {
            let (mut s, _) = listener.accept().unwrap();
            match read(&mut s) {
                Some(ClientFrame::Hello { token, .. }) => tokens.push(token),
                other => panic!("{other:?}"),
            }
            write(
                &mut s,
                &AgentFrame::Welcome {
                    version: proto::PROTOCOL_VERSION,
                    tenant: TenantId(7),
                    node: NodeId(1),
                    pid: None,
                },
            );
            let Some(ClientFrame::Call { id, call }) = read(&mut s) else {
                panic!("no call");
            };
            assert!(matches!(call, Call::Whereis { .. }), "{call:?}");
            if life == 0 {
                continue; // the crash, with the lookup in flight
            }
            write(
                &mut s,
                &AgentFrame::Reply {
                    id,
                    reply: Reply::Api(ApiReply::Whereis(Ok(pid(9)))),
                },
            );
        }
        tokens
    });
    let mut c = Client::connect(&path, Some("alice")).unwrap();
    assert_eq!(c.whereis("db").unwrap(), pid(9));
    assert_eq!(c.reconnects(), 1);
    assert_eq!(
        agent.join().unwrap(),
        vec![Some("alice".to_owned()), Some("alice".to_owned())]
    );
    let _ = std::fs::remove_file(&path);
}
