//! The Linux host backend: [`LinuxHost`] on a dedicated std thread, because its
//! `wait_event` blocks.
//!
//! The thread alternates between carrying out the commands queued by the driver
//! and waiting for host events, which it forwards; a command rings the adapter's
//! doorbell, which ends the wait at once (so the thread sleeps while nothing
//! happens, and a command waits for no timeout). The wait still ends every
//! [`IDLE_WAKE`], a bound in case a ring were ever missed. It reports the
//! capacity once at start. It stops when the driver drops its [`HostLink`];
//! tenant processes keep running and the next start re-adopts them from the data
//! directory. With a capacity override (tests), every `Resources` event carries
//! the configured capacity instead of the machine's.

use crate::api_server::{Endpoint, Handover, IdentifyPeer, TenantSocket};
use crate::config::ResourceOverride;
use crate::host_link::{self, BackendEnds, HostLink};
use crate::host_traits::{measure_accelerators, HostTraits};
use nefele_core::host::{Host, HostEvent, HostResources};
use nefele_core::ids::{Pid, TenantId};
use nefele_host_linux::{Cgroups, Config, HostError, LinuxHost};
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::UnboundedSender;

/// The longest the thread waits for host events before it looks for commands
/// anyway (a command rings the doorbell, so only a missed ring would wait this long).
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// Why the Linux backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum LinuxHostError {
    /// The adapter refused to open (cgroups, state file, privileges).
    #[error("cannot open the Linux host adapter: {0}")]
    Open(#[from] HostError),
    /// The thread could not be created.
    #[error("cannot start the host thread: {0}")]
    Thread(std::io::Error),
}

/// Opens the Linux adapter with `config` and runs it on its own thread; with
/// `endpoints`, every process gets a messaging endpoint whose agent end goes there.
pub fn spawn(
    mut config: Config,
    capacity: Option<ResourceOverride>,
    traits: HostTraits,
    endpoints: Option<UnboundedSender<Handover>>,
) -> Result<HostLink, LinuxHostError> {
    config.endpoints = endpoints.is_some();
    let host = LinuxHost::open(config)?;
    let bell = host.doorbell();
    let (link, ends) = host_link::pair(Some(Arc::new(move || bell.ring())));
    std::thread::Builder::new()
        .name("nefele-host".into())
        .spawn(move || run(host, ends, capacity, traits, endpoints))
        .map_err(LinuxHostError::Thread)?;
    Ok(link)
}

fn with_capacity(
    mut r: HostResources,
    capacity: Option<ResourceOverride>,
    traits: &HostTraits,
    accelerators: u32,
) -> HostResources {
    if let Some(c) = capacity {
        r.cores = c.cpu_millicores.div_ceil(1000);
        r.cpu_millicores = c.cpu_millicores;
        r.memory_bytes = c.memory_bytes;
    }
    traits.apply(r, accelerators)
}

fn run<S: nefele_host_linux::Sys>(
    mut host: LinuxHost<S>,
    mut ends: BackendEnds,
    capacity: Option<ResourceOverride>,
    traits: HostTraits,
    endpoints: Option<UnboundedSender<Handover>>,
) {
    let identify: Arc<dyn IdentifyPeer> = Arc::new(ByCgroup(host.cgroups().clone()));
    // Handed over as soon as there are some: the agent sockets of re-adopted
    // tenants come from the opening of the adapter, before any command.
    let hand_over = |host: &mut LinuxHost<S>| {
        let Some(tx) = &endpoints else { return };
        // The API server gone means the agent is stopping.
        for (tenant, listener) in host.take_listeners() {
            let _ = tx.send(match listener {
                Some(listener) => Handover::Socket(TenantSocket {
                    tenant,
                    listener,
                    identify: identify.clone(),
                }),
                None => Handover::SocketGone(tenant),
            });
        }
        for (pid, tenant, stream) in host.take_endpoints() {
            let _ = tx.send(Handover::Endpoint(Endpoint {
                pid,
                tenant,
                stream,
            }));
        }
    };
    hand_over(&mut host);
    let accelerators = measure_accelerators();
    let forward = |event: HostEvent| match event {
        HostEvent::Resources(r) => {
            HostEvent::Resources(with_capacity(r, capacity, &traits, accelerators))
        }
        other => other,
    };
    if ends
        .events
        .send(forward(HostEvent::Resources(host.resources())))
        .is_err()
    {
        return;
    }
    loop {
        loop {
            match ends.commands.try_recv() {
                Ok(command) => {
                    if let Err(e) = host.execute(command) {
                        tracing::error!(error = %e, "host command failed");
                    }
                    hand_over(&mut host);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        while let Some(event) = host.wait_event(IDLE_WAKE) {
            if ends.events.send(forward(event)).is_err() {
                return;
            }
            if !ends.commands.is_empty() {
                break;
            }
        }
    }
}

/// Identifies a caller on a tenant's agent socket by its cgroup
/// (`nefele_host_linux::agent_socket::identify`).
struct ByCgroup(Cgroups);

impl IdentifyPeer for ByCgroup {
    fn identify(&self, peer: BorrowedFd<'_>, tenant: TenantId) -> Result<Pid, String> {
        nefele_host_linux::agent_socket::identify(&peer, tenant, &self.0).map_err(|e| e.to_string())
    }
}
