//! The Linux host backend: [`LinuxHost`] on a dedicated std thread, because its
//! `wait_event` blocks.
//!
//! The thread alternates between carrying out the commands queued by the driver
//! and waiting up to [`POLL`] for host events, which it forwards. It reports the
//! capacity once at start. It stops when the driver drops its [`HostLink`];
//! tenant processes keep running and the next start re-adopts them from the data
//! directory. With a capacity override (tests), every `Resources` event carries
//! the configured capacity instead of the machine's.

use crate::api_server::Endpoint;
use crate::config::ResourceOverride;
use crate::host_link::{self, BackendEnds, HostLink};
use crate::host_traits::{measure_accelerators, HostTraits};
use nefele_core::host::{Host, HostEvent, HostResources};
use nefele_host_linux::{Config, HostError, LinuxHost};
use std::time::Duration;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::UnboundedSender;

/// The longest a queued command waits for the thread.
const POLL: Duration = Duration::from_millis(5);

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
    endpoints: Option<UnboundedSender<Endpoint>>,
) -> Result<HostLink, LinuxHostError> {
    config.endpoints = endpoints.is_some();
    let host = LinuxHost::open(config)?;
    let (link, ends) = host_link::pair();
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
    endpoints: Option<UnboundedSender<Endpoint>>,
) {
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
                    for (pid, tenant, stream) in host.take_endpoints() {
                        if let Some(tx) = &endpoints {
                            // The API server gone means the agent is stopping.
                            let _ = tx.send(Endpoint {
                                pid,
                                tenant,
                                stream,
                            });
                        }
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        while let Some(event) = host.wait_event(POLL) {
            if ends.events.send(forward(event)).is_err() {
                return;
            }
            if !ends.commands.is_empty() {
                break;
            }
        }
    }
}
