//! An agent that crashes after spawning and starts again in the same data
//! directory never mints a pid a former life minted: the incarnation in the
//! data directory is made durable at each start, before the agent exists, and
//! no spawn writes anything durable (host-linux's `state.rs` says what survives
//! a power loss).

#![cfg(not(madsim))]

use nefele::proto::{Call, Reply};
use nefele_core::agent::ApiReply;
use nefele_core::host::ProcSpec;
use nefele_core::ids::{NodeId, Pid, TenantId};
use nefele_transport_tcp::ClusterKey;
use nefeled::config::ResourceOverride;
use nefeled::{identity, sim_host, RuntimeConfig};
use std::collections::BTreeSet;
use std::time::Duration;

/// Spawns one `/bin/sleep` on `runtime`, retrying while the fresh agent is not
/// ready to place it yet.
async fn spawn_one(runtime: &nefeled::Runtime) -> Pid {
    let spec = ProcSpec {
        path: "/bin/sleep".into(),
        argv: vec!["/bin/sleep".into(), "600".into()],
        ..ProcSpec::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let reply = runtime
            .handle
            .call(TenantId(7), Call::Spawn(spec.clone()))
            .await
            .unwrap();
        match reply {
            Reply::Api(ApiReply::Spawned(Ok(pids))) if pids.len() == 1 => return pids[0],
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "no spawn: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_after_spawns_never_mint_a_pid_again() {
    let dir = tempfile::tempdir().unwrap();
    let key = ClusterKey::new(b"restart test cluster key, long enough").unwrap();
    let capacity = ResourceOverride {
        cpu_millicores: 64_000,
        memory_bytes: 64 << 30,
    };
    let mut minted = BTreeSet::new();
    for life in 0..3 {
        let identity = identity::load_and_bump(dir.path(), Some(NodeId(1))).unwrap();
        let config = RuntimeConfig {
            identity,
            ..RuntimeConfig::loopback(NodeId(1), vec![], key.clone())
        };
        let runtime = nefeled::start(config, sim_host::spawn(capacity))
            .await
            .unwrap();
        for _ in 0..10 {
            let pid = spawn_one(&runtime).await;
            assert!(minted.insert(pid), "life {life} minted {pid} again");
        }
        // A crash: the driver stops where it is, without leaving the cluster.
        runtime.driver.abort();
        let _ = runtime.driver.await;
    }
    assert_eq!(minted.len(), 30);
}
