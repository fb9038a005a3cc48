//! The link ends an agent holds for their receivers (libnefele's `link` module
//! says what a link is and how it is made).
//!
//! When a local process opens a link, the API server makes the connection and
//! leaves the receiver's end here under a fresh random token; the receiver's
//! client claims it with the token its marker message named. The desk owns those
//! ends until they are claimed.
//!
//! Invariants: an end is handed only to a claim that names its token, its opener
//! and its receiver (the claimer's own pid, which the server checks), and at most
//! once; at most [`MAX_WAITING`] ends wait at once, and an end unclaimed for
//! [`UNCLAIMED_FOR`] is closed (its opener's sends on it then fail `Unknown`, as
//! for a receiver that never reads), so a process that opens links to a receiver
//! that never claims them cannot grow the agent's memory or descriptors.

use nefele_core::ids::Pid;
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The most ends waiting for their receivers at once.
pub(crate) const MAX_WAITING: usize = 4096;
/// How long an end waits for its receiver's claim.
pub(crate) const UNCLAIMED_FOR: Duration = Duration::from_secs(30);
/// How long a claim waits for its end to come (a link from another host registers
/// its end when its connection arrives, which may be after the marker).
pub(crate) const CLAIM_PATIENCE: Duration = Duration::from_secs(2);

/// One end waiting.
#[derive(Debug)]
struct Waiting {
    from: Pid,
    to: Pid,
    end: OwnedFd,
    since: Instant,
}

/// The ends waiting for their receivers.
#[derive(Debug)]
pub(crate) struct LinkDesk {
    waiting: Mutex<BTreeMap<u64, Waiting>>,
    arrived: Notify,
    capacity: usize,
}

impl Default for LinkDesk {
    fn default() -> Self {
        LinkDesk::with_capacity(MAX_WAITING)
    }
}

/// The desk holds as many ends as it may already.
#[derive(Debug, thiserror::Error)]
#[error("{0} link ends wait for their receivers already")]
pub(crate) struct DeskFull(usize);

impl LinkDesk {
    /// A desk that holds at most `capacity` ends at once.
    fn with_capacity(capacity: usize) -> Self {
        LinkDesk {
            waiting: Mutex::new(BTreeMap::new()),
            arrived: Notify::new(),
            capacity,
        }
    }

    /// Leaves `end`, of a link from `from` to `to`, under a fresh random token.
    pub(crate) fn put(&self, from: Pid, to: Pid, end: OwnedFd) -> Result<u64, DeskFull> {
        let mut waiting = self.waiting.lock().expect("the link desk's lock");
        waiting.retain(|_, w| w.since.elapsed() < UNCLAIMED_FOR);
        if waiting.len() >= self.capacity {
            return Err(DeskFull(self.capacity));
        }
        let token = loop {
            let t = rand::RngCore::next_u64(&mut rand::rngs::OsRng);
            if !waiting.contains_key(&t) {
                break t;
            }
        };
        waiting.insert(
            token,
            Waiting {
                from,
                to,
                end,
                since: Instant::now(),
            },
        );
        drop(waiting);
        self.arrived.notify_waiters();
        Ok(token)
    }

    /// Drops the end under `token` (its link was not made after all).
    pub(crate) fn drop_end(&self, token: u64) {
        self.waiting
            .lock()
            .expect("the link desk's lock")
            .remove(&token);
    }

    /// The end under `token` if it is the one `from` made to `to`.
    fn take(&self, token: u64, from: Pid, to: Pid) -> Option<OwnedFd> {
        let mut waiting = self.waiting.lock().expect("the link desk's lock");
        match waiting.get(&token) {
            Some(w) if w.from == from && w.to == to && w.since.elapsed() < UNCLAIMED_FOR => {
                waiting.remove(&token).map(|w| w.end)
            }
            _ => None,
        }
    }

    /// The end under `token` of the link `from` made to `to`, waiting up to
    /// [`CLAIM_PATIENCE`] for it to come.
    pub(crate) async fn claim(&self, token: u64, from: Pid, to: Pid) -> Option<OwnedFd> {
        let deadline = tokio::time::Instant::now() + CLAIM_PATIENCE;
        loop {
            let arrived = self.arrived.notified();
            if let Some(end) = self.take(token, from, to) {
                return Some(end);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return self.take(token, from, to);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nefele_core::ids::{Incarnation, NodeId};

    fn end() -> OwnedFd {
        std::os::unix::net::UnixStream::pair().unwrap().0.into()
    }

    #[tokio::test]
    async fn an_end_goes_once_and_only_to_its_receiver_for_its_opener() {
        let desk = LinkDesk::default();
        let pid = |n| Pid::new(NodeId(1), Incarnation(1), n);
        let (a, b, c) = (pid(1), pid(2), pid(3));
        let token = desk.put(a, b, end()).unwrap();
        assert!(desk.take(token, a, c).is_none(), "another receiver");
        assert!(desk.take(token, c, b).is_none(), "another opener");
        assert!(desk.take(token ^ 1, a, b).is_none(), "another token");
        assert!(desk.claim(token, a, b).await.is_some());
        assert!(desk.take(token, a, b).is_none(), "taken already");
        let dropped = desk.put(a, b, end()).unwrap();
        desk.drop_end(dropped);
        assert!(desk.take(dropped, a, b).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_waits_for_its_end_a_while_and_no_longer() {
        let desk = std::sync::Arc::new(LinkDesk::default());
        let pid = |n| Pid::new(NodeId(1), Incarnation(1), n);
        assert!(desk.claim(7, pid(1), pid(2)).await.is_none());
        let d = desk.clone();
        let claim = tokio::spawn(async move {
            // The token is random: wait for the one put below.
            tokio::time::sleep(Duration::from_millis(10)).await;
            let token = *d.waiting.lock().unwrap().keys().next().unwrap();
            d.claim(token, pid(1), pid(2)).await
        });
        desk.put(pid(1), pid(2), end()).unwrap();
        assert!(claim.await.unwrap().is_some());
    }

    #[test]
    fn the_desk_holds_a_bounded_number_of_ends() {
        let desk = LinkDesk::with_capacity(8);
        let pid = Pid::new(NodeId(1), Incarnation(1), 1);
        for _ in 0..8 {
            desk.put(pid, pid, end()).unwrap();
        }
        assert!(desk.put(pid, pid, end()).is_err());
    }
}
