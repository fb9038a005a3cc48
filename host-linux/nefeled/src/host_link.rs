//! The boundary between the driver and a host backend: commands go in through one
//! channel, events come out through another.
//!
//! A backend ([`crate::sim_host`], or the Linux adapter on its own thread in
//! [`crate::linux_host`]) owns the other ends. When the driver drops its
//! [`HostLink`], the command channel closes and the backend stops; tenant
//! processes are left as they are (the Linux adapter re-adopts them at the next start).

use nefele_core::host::{HostCommand, HostEvent};
use tokio::sync::mpsc;

/// The driver's ends of a host backend's channels.
#[derive(Debug)]
pub struct HostLink {
    /// Commands for the backend, in the order the agent emitted them.
    pub commands: mpsc::UnboundedSender<HostCommand>,
    /// What the backend reports, in order.
    pub events: mpsc::UnboundedReceiver<HostEvent>,
}

/// The backend's ends of the channels.
#[derive(Debug)]
pub struct BackendEnds {
    /// Commands from the driver; `None` from `recv` means the driver is gone.
    pub commands: mpsc::UnboundedReceiver<HostCommand>,
    /// Events for the driver.
    pub events: mpsc::UnboundedSender<HostEvent>,
}

/// A connected pair of ends.
#[must_use]
pub fn pair() -> (HostLink, BackendEnds) {
    let (command_tx, command_rx) = mpsc::unbounded_channel();
    let (event_tx, event_rx) = mpsc::unbounded_channel();
    (
        HostLink {
            commands: command_tx,
            events: event_rx,
        },
        BackendEnds {
            commands: command_rx,
            events: event_tx,
        },
    )
}
