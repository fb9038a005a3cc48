//! The link ends an agent holds for their receivers (libnefele's `link` module
//! says what a link is and how it is made).
//!
//! When a local process opens a link to another local process, the API server
//! makes the connection and leaves the receiver's end here under a fresh random
//! token; when a process of another host opens one to a local process, its agent
//! dials this one and the end is left under the token it names
//! (`remote_links`). The receiver's client claims it with the token its marker
//! message named. The desk owns those ends until they are claimed.
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

/// The most ends waiting for their receivers at once.
pub(crate) const MAX_WAITING: usize = 4096;
/// How long an end waits for its receiver's claim.
pub(crate) const UNCLAIMED_FOR: Duration = Duration::from_secs(30);

/// One end waiting.
#[derive(Debug)]
struct Waiting {
    from: Pid,
    to: Pid,
    end: OwnedFd,
    since: Instant,
}

impl Waiting {
    fn new(from: Pid, to: Pid, end: OwnedFd) -> Self {
        Waiting {
            from,
            to,
            end,
            since: Instant::now(),
        }
    }
}

/// The ends waiting for their receivers.
#[derive(Debug)]
pub(crate) struct LinkDesk {
    waiting: Mutex<BTreeMap<u64, Waiting>>,
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
            capacity,
        }
    }

    /// Leaves `end`, of a link from `from` to `to`, under a fresh random token.
    pub(crate) fn put(&self, from: Pid, to: Pid, end: OwnedFd) -> Result<u64, DeskFull> {
        let mut waiting = self.room()?;
        let token = loop {
            let t = rand::RngCore::next_u64(&mut rand::rngs::OsRng);
            if !waiting.contains_key(&t) {
                break t;
            }
        };
        waiting.insert(token, Waiting::new(from, to, end));
        Ok(token)
    }

    /// Leaves `end`, of a link from `from` to `to` that another agent made, under
    /// the `token` it chose; `false` (the end dropped) when that token is taken.
    pub(crate) fn put_at(
        &self,
        token: u64,
        from: Pid,
        to: Pid,
        end: OwnedFd,
    ) -> Result<bool, DeskFull> {
        let mut waiting = self.room()?;
        if waiting.contains_key(&token) {
            return Ok(false);
        }
        waiting.insert(token, Waiting::new(from, to, end));
        Ok(true)
    }

    /// The ends, the expired ones gone, if there is room for one more.
    fn room(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<u64, Waiting>>, DeskFull> {
        let mut waiting = self.waiting.lock().expect("the link desk's lock");
        waiting.retain(|_, w| w.since.elapsed() < UNCLAIMED_FOR);
        if waiting.len() >= self.capacity {
            return Err(DeskFull(self.capacity));
        }
        Ok(waiting)
    }

    /// Drops the end under `token` (its link was not made after all).
    pub(crate) fn drop_end(&self, token: u64) {
        self.waiting
            .lock()
            .expect("the link desk's lock")
            .remove(&token);
    }

    /// The end under `token` if it is the one `from` made to `to`, at once: an end
    /// is left here before its marker is sent (across hosts, the opener's agent
    /// sends the marker only once this agent has answered that it holds the end),
    /// so a claim that finds none will not find one later (and a message that
    /// only looks like a marker costs its receiver no wait).
    pub(crate) fn claim(&self, token: u64, from: Pid, to: Pid) -> Option<OwnedFd> {
        let mut waiting = self.waiting.lock().expect("the link desk's lock");
        match waiting.get(&token) {
            Some(w) if w.from == from && w.to == to && w.since.elapsed() < UNCLAIMED_FOR => {
                waiting.remove(&token).map(|w| w.end)
            }
            _ => None,
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

    #[test]
    fn an_end_goes_once_and_only_to_its_receiver_for_its_opener() {
        let desk = LinkDesk::default();
        let pid = |n| Pid::new(NodeId(1), Incarnation(1), n);
        let (a, b, c) = (pid(1), pid(2), pid(3));
        let token = desk.put(a, b, end()).unwrap();
        assert!(desk.claim(token, a, c).is_none(), "another receiver");
        assert!(desk.claim(token, c, b).is_none(), "another opener");
        assert!(desk.claim(token ^ 1, a, b).is_none(), "another token");
        assert!(desk.claim(7, a, b).is_none(), "a token never given");
        assert!(desk.claim(token, a, b).is_some());
        assert!(desk.claim(token, a, b).is_none(), "taken already");
        let dropped = desk.put(a, b, end()).unwrap();
        desk.drop_end(dropped);
        assert!(desk.claim(dropped, a, b).is_none());
    }

    #[test]
    fn the_desk_holds_a_bounded_number_of_ends() {
        let desk = LinkDesk::with_capacity(8);
        let pid = Pid::new(NodeId(1), Incarnation(1), 1);
        for _ in 0..8 {
            desk.put(pid, pid, end()).unwrap();
        }
        assert!(desk.put(pid, pid, end()).is_err());
        assert!(desk.put_at(1, pid, pid, end()).is_err());
    }

    #[test]
    fn an_end_from_another_agent_waits_under_its_token_and_a_taken_token_is_refused() {
        let desk = LinkDesk::default();
        let pid = |n| Pid::new(NodeId(1), Incarnation(1), n);
        assert!(desk.put_at(42, pid(1), pid(2), end()).unwrap());
        assert!(!desk.put_at(42, pid(3), pid(2), end()).unwrap(), "taken");
        assert!(desk.claim(42, pid(3), pid(2)).is_none(), "not the second's");
        assert!(desk.claim(42, pid(1), pid(2)).is_some());
    }
}
