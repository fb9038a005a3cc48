//! Three runtimes on the loopback interface with SimHosts, on the real tokio
//! runtime: they federate through a seed, and a client on one agent's API socket
//! spawns across the cluster and lists what runs.

#![cfg(not(madsim))]

use nefele::proto::{
    self, AgentFrame, Call, ClientFrame, Reply, MAX_REPLY_BYTES, MAX_REQUEST_BYTES,
    PROTOCOL_VERSION,
};
use nefele_core::agent::ApiReply;
use nefele_core::host::ProcSpec;
use nefele_core::ids::{NodeId, TenantId};
use nefele_transport_tcp::{ClusterAuthority, ClusterKey, NodeKeys};
use nefeled::api_server::{ApiServer, Authenticator};
use nefeled::config::ResourceOverride;
use nefeled::{sim_host, RuntimeConfig};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

struct OneTenant;

impl Authenticator for OneTenant {
    fn by_token(&self, token: &str) -> Option<TenantId> {
        (token == "token").then_some(TenantId(7))
    }
    fn by_uid(&self, _: u32) -> Option<TenantId> {
        None
    }
}

async fn start(node: u32, seeds: Vec<SocketAddr>) -> nefeled::Runtime {
    start_with_keys(node, seeds, None).await
}

async fn start_with_keys(
    node: u32,
    seeds: Vec<SocketAddr>,
    node_keys: Option<NodeKeys>,
) -> nefeled::Runtime {
    let key = ClusterKey::new(b"loopback cluster key, long enough").unwrap();
    let config = RuntimeConfig {
        node_keys,
        ..RuntimeConfig::loopback(NodeId(node), seeds, key)
    };
    let capacity = ResourceOverride {
        cpu_millicores: 1000,
        memory_bytes: 4 << 30,
    };
    nefeled::start(config, sim_host::spawn(capacity))
        .await
        .unwrap()
}

async fn call(s: &mut UnixStream, id: u64, call: Call) -> Reply {
    let frame = proto::encode(&ClientFrame::Call { id, call }, MAX_REQUEST_BYTES).unwrap();
    s.write_all(&frame).await.unwrap();
    match recv(s).await {
        AgentFrame::Reply { id: got, reply } if got == id => reply,
        other => panic!("expected the reply to {id}, got {other:?}"),
    }
}

async fn recv(s: &mut UnixStream) -> AgentFrame {
    let mut prefix = [0u8; 4];
    s.read_exact(&mut prefix).await.unwrap();
    let mut payload = vec![0; proto::check_len(prefix, MAX_REPLY_BYTES).unwrap()];
    s.read_exact(&mut payload).await.unwrap();
    proto::decode(&payload, MAX_REPLY_BYTES).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_federate_and_serve_a_client() {
    let first = start(1, vec![]).await;
    let seed = first.local_addr;
    let others = [start(2, vec![seed]).await, start(3, vec![seed]).await];

    let dir = tempfile::tempdir().unwrap();
    let server = ApiServer::bind(&dir.path().join("api.sock")).await.unwrap();
    let path = server.path().to_owned();
    tokio::spawn(server.serve(others[1].handle.clone(), Arc::new(OneTenant)));
    let mut s = UnixStream::connect(&path).await.unwrap();
    let hello = ClientFrame::Hello {
        version: PROTOCOL_VERSION,
        token: Some("token".into()),
    };
    s.write_all(&proto::encode(&hello, MAX_REQUEST_BYTES).unwrap())
        .await
        .unwrap();
    assert!(matches!(
        recv(&mut s).await,
        AgentFrame::Welcome {
            tenant: TenantId(7),
            node: NodeId(3),
            ..
        }
    ));

    // Federation: one level-0 group of the three, within a bound.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut id = 0;
    loop {
        id += 1;
        let Reply::Members(m) = call(&mut s, id, Call::Members).await else {
            panic!("members")
        };
        let group: BTreeSet<NodeId> = m
            .groups
            .first()
            .map(|g| g.members.iter().map(|m| m.node).collect())
            .unwrap_or_default();
        if group.len() == 3 {
            assert!(
                m.groups[0].members.iter().all(|m| m.addr.is_some()),
                "{m:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not federated: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Two processes per host fit; five need three hosts.
    let spec = ProcSpec {
        path: "/srv/app".into(),
        argv: vec!["app".into()],
        ..ProcSpec::default()
    };
    let Reply::Api(ApiReply::Spawned(Ok(pids))) =
        call(&mut s, 100, Call::NSpawn { n: 5, spec }).await
    else {
        panic!("n_spawn failed")
    };
    assert_eq!(pids.len(), 5);
    let Reply::Api(ApiReply::Ps(ps)) = call(&mut s, 101, Call::Ps).await else {
        panic!("ps failed")
    };
    let hosts: BTreeSet<NodeId> = ps.processes.iter().map(|p| p.host).collect();
    assert_eq!(ps.processes.len(), 5, "{ps:?}");
    assert_eq!(hosts.len(), 3, "{ps:?}");

    // A clean leave: the leaving agent is out of the group well before failure detection would notice.
    others[0]
        .handle
        .shutdown(Duration::from_millis(300))
        .await
        .unwrap();
    // Failure detection needs remove_periods + 1 = 5 silent periods (1.5 s); the
    // leave must show well before, even on a loaded machine.
    let left_by = tokio::time::Instant::now() + Duration::from_millis(750);
    for id in 102.. {
        let Reply::Members(m) = call(&mut s, id, Call::Members).await else {
            panic!("members")
        };
        if m.groups[0].members.iter().all(|m| m.node != NodeId(2)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < left_by,
            "still a member: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The top group of `runtime`'s agent, with the addresses it knows.
async fn top_group(runtime: &nefeled::Runtime) -> Vec<(NodeId, Option<String>)> {
    let Ok(Reply::Members(m)) = runtime.handle.call(TenantId(7), Call::Members).await else {
        panic!("expected members")
    };
    m.groups
        .last()
        .map(|g| g.members.iter().map(|m| (m.node, m.addr.clone())).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_with_per_node_keys_federate_and_a_key_holder_cannot_pose_as_one() {
    let ca = ClusterAuthority::generate();
    let first = start_with_keys(1, vec![], Some(ca.issue(NodeId(1)))).await;
    let second = start_with_keys(2, vec![first.local_addr], Some(ca.issue(NodeId(2)))).await;
    let real = vec![
        (NodeId(1), Some(first.local_addr.to_string())),
        (NodeId(2), Some(second.local_addr.to_string())),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while top_group(&first).await != real {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not federated: {:?}",
            top_group(&first).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A holder of the cluster key posing as node 2, with keys of its own making,
    // and one claiming a new id: neither is heard, node 2 keeps its place.
    let foreign = ClusterAuthority::generate();
    let _impostor =
        start_with_keys(2, vec![first.local_addr], Some(foreign.issue(NodeId(2)))).await;
    let _stranger =
        start_with_keys(3, vec![first.local_addr], Some(foreign.issue(NodeId(3)))).await;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(top_group(&first).await, real);
    }
}
