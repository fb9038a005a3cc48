//! The boundary between the driver and a host backend: commands go in through one
//! channel, events come out through another.
//!
//! A backend ([`crate::sim_host`], or the Linux adapter on its own thread in
//! [`crate::linux_host`]) owns the other ends. When the driver drops its
//! [`HostLink`], the command channel closes and the backend stops; tenant
//! processes are left as they are (the Linux adapter re-adopts them at the next start).
//! A backend that blocks in a wait of its own (the Linux adapter's) gives a
//! [`Wake`] (ringing its doorbell): every command, and the closing of the channel,
//! calls it.

use nefele_core::host::{HostCommand, HostEvent};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Ends the backend's wait, so that it looks at its commands.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// The driver's ends of a host backend's channels.
#[derive(Debug)]
pub struct HostLink {
    /// Commands for the backend, in the order the agent emitted them.
    pub commands: Commands,
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

/// The backend stopped: a command sent now is dropped.
#[derive(Debug, thiserror::Error)]
#[error("the host backend is gone")]
pub struct BackendGone;

/// The sending end of the command channel, which wakes the backend.
#[derive(Debug)]
pub struct Commands {
    tx: mpsc::UnboundedSender<HostCommand>,
    /// Declared after `tx`, so dropped after it: the backend, woken by the drop,
    /// finds the channel closed.
    wake: WakeOnDrop,
}

impl Commands {
    /// Queues `command` for the backend and wakes it.
    pub fn send(&self, command: HostCommand) -> Result<(), BackendGone> {
        self.tx.send(command).map_err(|_| BackendGone)?;
        self.wake.wake();
        Ok(())
    }
}

/// The backend's wake, called once more when it is dropped.
struct WakeOnDrop(Option<Wake>);

impl WakeOnDrop {
    fn wake(&self) {
        if let Some(wake) = &self.0 {
            wake();
        }
    }
}

impl Drop for WakeOnDrop {
    fn drop(&mut self) {
        self.wake();
    }
}

impl std::fmt::Debug for WakeOnDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Wake" } else { "NoWake" })
    }
}

/// A connected pair of ends; `wake`, how to end the backend's wait if it has one.
#[must_use]
pub fn pair(wake: Option<Wake>) -> (HostLink, BackendEnds) {
    let (command_tx, command_rx) = mpsc::unbounded_channel();
    let (event_tx, event_rx) = mpsc::unbounded_channel();
    (
        HostLink {
            commands: Commands {
                tx: command_tx,
                wake: WakeOnDrop(wake),
            },
            events: event_rx,
        },
        BackendEnds {
            commands: command_rx,
            events: event_tx,
        },
    )
}
