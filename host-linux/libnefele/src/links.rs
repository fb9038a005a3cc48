//! The links one client holds ([`crate::link`]): those it opened, which carry its
//! sends to their receivers, and those made to it, whose messages it reads with
//! its mail. The client decides when to read and write; this module does the
//! reading and writing on each link's socket and keeps the counts.
//!
//! Invariants: a link's socket is read only here, and only as far as its frames
//! are needed (at most one read of [`READ_CHUNK`] bytes per link per call), so a
//! sender that outruns this process is held back by the socket, not by memory
//! here; every message sent on a link gets exactly one fate (its
//! acknowledgement, or `Unknown` when the link ends first); a monitor's `Down`
//! for a process that links to this one is held until that link's messages are
//! all taken (the process's end closes when it ends) or [`DOWN_HOLD`] passes;
//! an acknowledgement that rode a link the other way ([`Frame::AckBack`]) counts
//! only for the opened link whose token it names; while a send waits for its
//! acknowledgement, the link back from its receiver is read only while it holds
//! fewer than [`READY_CAP`] messages not taken.

use crate::endpoint;
use crate::link::{self, Frame, Inbound, LinkError, Outbound, Taken};
use crate::link_seal::{LinkKey, Seal, Side};
use crate::poller::Readable;
use nefele_api::ids::Pid;
use nefele_api::messaging::{Mail, MailBody, SendError};
use nefele_api::replies::DistanceClass;
use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// How much one read of a link takes.
const READ_CHUNK: usize = 64 * 1024;
/// How long [`Links::collect_acks`] leaves a link alone after a read found
/// nothing on it. A receiver that links back sends its acknowledgements on its
/// own link, with its messages, and on this link only when it is about to wait:
/// a program that takes its fates after every send (as a server answering on a
/// link does) would otherwise make a system call per send that finds nothing.
/// A fate that comes meanwhile is taken by a later call, a send that owes
/// [`link::ACK_EVERY`], or `settle`.
const ACK_RECHECK: Duration = Duration::from_micros(200);
/// The largest write buffer a client keeps between sends (a batch's may be
/// larger; it is let go).
const KEPT_WRITE: usize = 64 * 1024;
/// The most messages a link back holds read and not taken while a send on the
/// link the other way waits for its acknowledgement (which rides it).
const READY_CAP: usize = 4096;
/// The longest a `Down` waits behind the messages of a link from the process it
/// reports (whose end of the link stays open while a child it forked holds it).
pub(crate) const DOWN_HOLD: Duration = Duration::from_secs(1);

/// A link this client opened.
#[derive(Debug)]
struct Opened {
    sock: OwnedFd,
    /// When [`Links::collect_acks`] last found nothing to read on it (cleared
    /// when a read brings something).
    found_empty: Option<Instant>,
    /// The token the agent made it under.
    token: u64,
    /// The seal of a link across hosts.
    seal: Option<Seal>,
    out: Outbound,
    inbound: Inbound,
}

/// A link made to this client's process.
#[derive(Debug)]
struct Accepted {
    from: Pid,
    /// The token its marker named.
    token: u64,
    /// The newest acknowledgement that came on it for a link of this client the
    /// other way: that link's token and count.
    back: Option<(u64, u64)>,
    /// The marker's distance class and position on the pair: the link's
    /// messages follow it, from `first_seq`.
    class: DistanceClass,
    first_seq: u64,
    next_seq: u64,
    sock: OwnedFd,
    /// The seal of a link across hosts.
    seal: Option<Seal>,
    inbound: Inbound,
    taken: Taken,
    /// Messages read, not taken yet; each with whether its sender waits for it.
    ready: VecDeque<(Mail, bool)>,
    /// An acknowledgement not written whole yet, and how much of it went: written
    /// without waiting, so an opener that does not read its acknowledgements never
    /// stalls this process; one not begun is replaced by a newer one.
    unsent: Vec<u8>,
    unsent_from: usize,
    /// The opener's end closed (or the link broke): nothing more comes.
    ended: bool,
    /// A `Down` for the opener, held behind the link's messages, and when it came.
    down: Option<(Mail, Instant)>,
}

/// What one client holds.
#[derive(Debug)]
pub(crate) struct Links {
    opened: BTreeMap<Pid, Opened>,
    accepted: Vec<Accepted>,
    max_data: usize,
    /// Fates settled while sending, not taken yet ([`Links::collect_acks`]).
    settled: Vec<Fate>,
    /// Where links are read into (kept: a receive's hot path allocates nothing).
    buf: Vec<u8>,
    /// Where a send's frames and their ids are put before the write (kept, as
    /// `buf`, so that a send allocates nothing once warm).
    wbuf: Vec<u8>,
    wids: Vec<Option<u64>>,
    /// Raised whenever a link made to this client comes or goes.
    generation: u64,
    /// Per process that linked to this client, the messages its links that are
    /// gone brought ([`Links::seq_shift`]): one entry per such process, kept for
    /// the client's life.
    shift: BTreeMap<Pid, u64>,
}

/// The fate of a `send_async` made on a link, under its id.
pub(crate) type Fate = (u64, Result<(), SendError>);

/// Which links made to this client a [`Links::take`] reads before taking.
#[derive(Clone, Copy)]
pub(crate) enum Reads<'a> {
    /// None: it takes only what was read already.
    Nothing,
    /// Every link that may still bring something.
    All,
    /// Those a wait found readable.
    Readable(&'a Readable),
}

impl Links {
    /// No links; messages of at most `max_data` bytes.
    pub(crate) fn new(max_data: usize) -> Self {
        Links {
            opened: BTreeMap::new(),
            accepted: Vec::new(),
            max_data,
            settled: Vec::new(),
            buf: vec![0; READ_CHUNK.min(max_data + 5).max(4096)],
            wbuf: Vec::new(),
            wids: Vec::new(),
            generation: 0,
            shift: BTreeMap::new(),
        }
    }

    /// Whether this client sends to `to` on a link.
    pub(crate) fn has(&self, to: Pid) -> bool {
        self.opened.contains_key(&to)
    }

    /// Whether this client sends on any link.
    pub(crate) fn any_opened(&self) -> bool {
        !self.opened.is_empty()
    }

    /// The processes this client sends to on links.
    pub(crate) fn opened_to(&self) -> Vec<Pid> {
        self.opened.keys().copied().collect()
    }

    /// How far the positions of `from`'s messages through the agents are behind
    /// their positions on the pair: the messages `from` sent on links to this
    /// client (whose positions the agents never saw, see [`Links::accepted`]).
    /// The client adds it to every position the agents give for `from`, so the
    /// positions of the pair keep growing across links and back.
    pub(crate) fn seq_shift(&self, from: Pid) -> u64 {
        let current: u64 = self
            .accepted
            .iter()
            .filter(|l| l.from == from)
            .map(|l| l.next_seq - l.first_seq)
            .sum();
        self.shift.get(&from).copied().unwrap_or(0) + current
    }

    /// Whether `from` has a link to this client that may still bring messages.
    pub(crate) fn is_linked_from(&self, from: Pid) -> bool {
        self.accepted.iter().any(|l| l.from == from && !l.ended)
    }

    /// Whether any link was made to this client.
    pub(crate) fn accepts(&self) -> bool {
        !self.accepted.is_empty()
    }

    /// Whether messages read from links wait to be taken.
    pub(crate) fn has_ready(&self) -> bool {
        self.accepted.iter().any(|l| !l.ready.is_empty())
    }

    /// Raised whenever a link made to this client comes, ends or goes (so a
    /// descriptor number may now name another file).
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Sends on links: `sock` is this client's end of a link it opened to `to`,
    /// sealed with `key` when it crosses hosts.
    pub(crate) fn opened(&mut self, to: Pid, sock: OwnedFd, token: u64, key: Option<LinkKey>) {
        self.opened.insert(
            to,
            Opened {
                sock,
                found_empty: None,
                token,
                seal: key.map(|k| Seal::new(&k, Side::Opener)),
                out: Outbound::default(),
                // Only acknowledgements come back: 8 bytes each.
                inbound: Inbound::new(8),
            },
        );
    }

    /// The link `from` made to this client under `token`, announced by its marker
    /// `marker` (whose class and position its messages take after), sealed with
    /// `key` when it crosses hosts.
    pub(crate) fn accepted(
        &mut self,
        marker: &Mail,
        sock: OwnedFd,
        token: u64,
        key: Option<LinkKey>,
    ) {
        self.generation += 1;
        self.accepted.push(Accepted {
            from: marker.from,
            token,
            back: None,
            class: marker.class,
            first_seq: marker.seq.saturating_add(1),
            next_seq: marker.seq.saturating_add(1),
            sock,
            seal: key.map(|k| Seal::new(&k, Side::Receiver)),
            inbound: Inbound::new(self.max_data),
            taken: Taken::default(),
            ready: VecDeque::new(),
            unsent: Vec::new(),
            unsent_from: 0,
            ended: false,
            down: None,
        });
    }

    /// Puts `messages` for `to` on its link in one write; `ids` are their
    /// `send_async` ids (`None` for a send that waits). The number of the last
    /// message sent (from 1), to wait for with [`Links::wait_delivered`].
    ///
    /// # Errors
    /// The link ended (nothing of `messages` went); the fates of its earlier
    /// messages not acknowledged are returned with the error. The link is gone.
    pub(crate) fn send<'a>(
        &mut self,
        to: Pid,
        messages: impl IntoIterator<Item = (&'a [u8], Option<u64>)>,
    ) -> Result<u64, (SendError, Vec<Fate>)> {
        let Some(link) = self.opened.get_mut(&to) else {
            return Err((SendError::Unknown, Vec::new()));
        };
        // Read the acknowledgements as messages go (the receiver sends one per
        // [`link::ACK_EVERY`] at least), so the owed fates stay few.
        if link.out.unacked() >= link::ACK_EVERY {
            let mut fates = Vec::new();
            if !matches!(read_acks(link, &mut fates), Ok(Some(_))) {
                fates.extend(self.end(to));
                return Err((SendError::Unknown, fates));
            }
            self.settled.extend(fates);
        }
        let link = self.opened.get_mut(&to).expect("still open");
        let mut bytes = std::mem::take(&mut self.wbuf);
        let mut ids = std::mem::take(&mut self.wids);
        bytes.clear();
        ids.clear();
        for (data, id) in messages {
            // A send without an id waits for its acknowledgement.
            link::put_data(&mut bytes, data, id.is_none());
            ids.push(id);
        }
        // What this process owes `to` for its link here rides along.
        if let Some(back) = self
            .accepted
            .iter_mut()
            .find(|l| l.from == to && !l.ended && l.unsent.is_empty())
        {
            if let Some(taken) = back.taken.ack_due(true) {
                link::put_ack_back(&mut bytes, back.token, taken);
            }
        }
        if let Some(seal) = &mut link.seal {
            let mut sealed = Vec::with_capacity(bytes.len() + 64);
            seal.seal(&bytes, &mut sealed);
            bytes = sealed;
        }
        let written = endpoint::send_all(&link.sock, &bytes);
        if bytes.capacity() <= KEPT_WRITE {
            self.wbuf = bytes;
        }
        if written.is_err() {
            return Err((SendError::Unknown, self.end(to)));
        }
        let link = self.opened.get_mut(&to).expect("still open");
        for id in ids.drain(..) {
            link.out.sent(id);
        }
        self.wids = ids;
        let sent = link.out.count();
        // Sending is a moment this process owes its openers their acknowledgements.
        self.flush_acks();
        Ok(sent)
    }

    /// Waits until message `n` on the link to `to` is acknowledged, at most
    /// `patience`; fates of `send_async`s acknowledged meanwhile are returned.
    ///
    /// # Errors
    /// `Unknown` when `patience` passes first (the link stays: the message may
    /// still be taken) or the link ends (it is then gone, with every fate it owed).
    pub(crate) fn wait_delivered(
        &mut self,
        to: Pid,
        n: u64,
        patience: Duration,
    ) -> Result<Vec<Fate>, (SendError, Vec<Fate>)> {
        let deadline = Instant::now() + patience;
        let mut fates = Vec::new();
        loop {
            let Some(link) = self.opened.get_mut(&to) else {
                return Err((SendError::Unknown, fates));
            };
            if link.out.delivered(n) {
                return Ok(fates);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err((SendError::Unknown, fates));
            }
            // The acknowledgement may ride the link back from `to`, with its
            // messages (read while they stay few).
            let sock = link.sock.as_raw_fd();
            let back = self
                .accepted
                .iter()
                .position(|l| l.from == to && !l.ended && l.ready.len() < READY_CAP);
            let mut fds = vec![sock];
            fds.extend(back.map(|i| self.accepted[i].sock.as_raw_fd()));
            let ready = match endpoint::poll_readable(&fds, Some(left)) {
                Ok(ready) => ready,
                Err(_) => vec![true],
            };
            if let (Some(i), Some(true)) = (back, ready.get(1)) {
                fill(&mut self.accepted[i], &mut self.buf);
                self.apply_acks_back();
            }
            // (An acknowledgement back that proved the link broken ended it.)
            let Some(link) = self.opened.get_mut(&to) else {
                return Err((SendError::Unknown, fates));
            };
            if ready[0] && !matches!(read_acks(link, &mut fates), Ok(Some(_))) {
                fates.extend(self.end(to));
                return Err((SendError::Unknown, fates));
            }
        }
    }

    /// Waits until every message on every opened link is acknowledged (at most
    /// `patience` per link); the fates settled.
    pub(crate) fn settle(&mut self, patience: Duration) -> Vec<Fate> {
        let mut fates = Vec::new();
        let sent: Vec<(Pid, u64)> = self
            .opened
            .iter()
            .map(|(to, l)| (*to, l.out.count()))
            .collect();
        for (to, n) in sent {
            match self.wait_delivered(to, n, patience) {
                Ok(f) => fates.extend(f),
                Err((_, f)) => fates.extend(f),
            }
        }
        fates
    }

    /// Whether the link to `to` takes a message now without waiting.
    pub(crate) fn has_room(&self, to: Pid) -> bool {
        self.opened
            .get(&to)
            .is_some_and(|l| endpoint::writable_now(l.sock.as_raw_fd()))
    }

    /// Reads, without waiting, the acknowledgements come on every opened link
    /// that owes some, except one a read found empty less than [`ACK_RECHECK`]
    /// ago; the fates they settle (and of links found ended).
    pub(crate) fn collect_acks(&mut self) -> Vec<Fate> {
        self.collect_acks_by(Instant::now)
    }

    /// As [`Links::collect_acks`], with `clock` telling the time (read only when
    /// a link owes acknowledgements).
    fn collect_acks_by(&mut self, clock: impl Fn() -> Instant) -> Vec<Fate> {
        let mut fates = std::mem::take(&mut self.settled);
        let mut ended = Vec::new();
        let mut now = None;
        for (to, link) in &mut self.opened {
            // Nothing owed, nothing to read (acknowledgements that ride the link
            // back were counted already): a system call saved per receive.
            if link.out.unacked() == 0 {
                continue;
            }
            let now = *now.get_or_insert_with(&clock);
            if link
                .found_empty
                .is_some_and(|at| now.duration_since(at) < ACK_RECHECK)
            {
                continue;
            }
            match read_acks(link, &mut fates) {
                Ok(Some(0)) => link.found_empty = Some(now),
                Ok(Some(_)) => link.found_empty = None,
                Ok(None) | Err(_) => ended.push(*to),
            }
        }
        for to in ended {
            fates.extend(self.end(to));
        }
        fates
    }

    /// The `send_async`s owed a fate on links.
    pub(crate) fn owed(&self) -> usize {
        self.opened.values().map(|l| l.out.owed_async()).sum()
    }

    /// Waits until every message sent to `to` on its link is acknowledged (at most
    /// `patience`), then closes it: later sends to `to` go through the agents and
    /// cannot overtake one on the link. Fates settled meanwhile are returned.
    pub(crate) fn close(&mut self, to: Pid, patience: Duration) -> Vec<Fate> {
        let sent = self.opened.get(&to).map_or(0, |l| l.out.count());
        let mut fates = match self.wait_delivered(to, sent, patience) {
            Ok(f) | Err((_, f)) => f,
        };
        fates.extend(self.end(to));
        fates
    }

    /// Forgets the link to `to`: every message on it not acknowledged is `Unknown`.
    fn end(&mut self, to: Pid) -> Vec<Fate> {
        let Some(mut link) = self.opened.remove(&to) else {
            return Vec::new();
        };
        link.out
            .ended()
            .into_iter()
            .filter_map(|(id, e)| id.map(|id| (id, Err(e))))
            .collect()
    }

    /// Holds `down` behind a link from the process it reports, if one is open;
    /// gives it back otherwise.
    pub(crate) fn hold_down(&mut self, down: Mail) -> Option<Mail> {
        let MailBody::Down { pid, .. } = down.body else {
            return Some(down);
        };
        match self.accepted.iter_mut().find(|l| l.from == pid) {
            Some(link) if link.down.is_none() => {
                link.down = Some((down, Instant::now()));
                None
            }
            _ => Some(down),
        }
    }

    /// The descriptors of the links made to this client that may still bring
    /// something, to wait on.
    pub(crate) fn waiting_fds(&self) -> impl Iterator<Item = RawFd> + Clone + '_ {
        self.accepted
            .iter()
            .filter(|l| !l.ended)
            .map(|l| l.sock.as_raw_fd())
    }

    /// When the first held `Down` is due even though its link has not ended.
    pub(crate) fn next_down_due(&self) -> Option<Instant> {
        self.accepted
            .iter()
            .filter_map(|l| l.down.as_ref())
            .map(|(_, at)| *at + DOWN_HOLD)
            .min()
    }

    /// Writes every acknowledgement owed to the openers of links made to this
    /// client (it is about to wait, or sends).
    pub(crate) fn flush_acks(&mut self) {
        for link in &mut self.accepted {
            acknowledge(link, true);
        }
    }

    /// Takes up to `max` messages come on the links made to this client (and the
    /// `Down`s now due) into `mails`: those read already, and what the links
    /// `reads` names hold now (read without waiting). Acknowledges what is due.
    /// Links whose opener ended and that hold nothing more are forgotten.
    pub(crate) fn take(&mut self, mails: &mut Vec<Mail>, max: usize, reads: Reads<'_>) {
        let end = mails.len() + max;
        for link in &mut self.accepted {
            let read = !link.ended
                && match reads {
                    Reads::Nothing => false,
                    Reads::All => true,
                    Reads::Readable(r) => r.contains(link.sock.as_raw_fd()),
                };
            if read && link.ready.len() < max {
                fill(link, &mut self.buf);
            }
            let n = link.ready.len().min(end - mails.len());
            let mut urgent = false;
            for (mail, u) in link.ready.drain(..n) {
                mails.push(mail);
                urgent |= u;
            }
            link.taken.took(n as u64, urgent);
            // Everything read is taken: the opener learns it now (a message's fate
            // is known once it is taken), unless this process links back to the
            // opener: then at its next send (after the answer, off the path of the
            // round trip) or wait, whichever comes first.
            let linked_back = self.opened.contains_key(&link.from);
            acknowledge(link, link.ready.is_empty() && !linked_back);
            let overdue = link
                .down
                .as_ref()
                .is_some_and(|(_, at)| at.elapsed() >= DOWN_HOLD);
            if link.ready.is_empty() && (link.ended || overdue) && mails.len() < end {
                if let Some((down, _)) = link.down.take() {
                    mails.push(down);
                    // Its process ended: whatever its end still sends is not its.
                    link.ended = true;
                }
            }
            if mails.len() == end {
                break;
            }
        }
        self.apply_acks_back();
        let gone = |l: &Accepted| l.ended && l.ready.is_empty() && l.down.is_none();
        if self.accepted.iter().any(gone) {
            let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.accepted)
                .into_iter()
                .partition(gone);
            self.accepted = kept;
            self.generation += 1;
            for link in gone {
                *self.shift.entry(link.from).or_default() += link.next_seq - link.first_seq;
            }
        }
    }

    /// Counts the acknowledgements that came on links made to this client for the
    /// links it opened the other way (see the module docs); their fates are
    /// settled, and an opened link they prove broken ends.
    fn apply_acks_back(&mut self) {
        for back in &mut self.accepted {
            let Some((token, taken)) = back.back.take() else {
                continue;
            };
            let Some(link) = self.opened.get_mut(&back.from) else {
                continue;
            };
            // Another link's (an acknowledgement on the link itself may have
            // overtaken one that rode back: `Outbound::acked` takes it as no news).
            if link.token != token {
                continue;
            }
            match link.out.acked(taken) {
                Ok(ids) => self
                    .settled
                    .extend(ids.into_iter().flatten().map(|id| (id, Ok(())))),
                Err(_) => {
                    let mut gone = self.opened.remove(&back.from).expect("open");
                    self.settled.extend(
                        gone.out
                            .ended()
                            .into_iter()
                            .filter_map(|(id, e)| id.map(|id| (id, Err(e)))),
                    );
                }
            }
        }
    }
}

/// Reads what came on `link` without waiting: how many bytes (`None` when it
/// ended).
fn read_acks(link: &mut Opened, fates: &mut Vec<Fate>) -> Result<Option<usize>, LinkError> {
    let mut buf = [0u8; 4096];
    let mut read = 0;
    loop {
        let n = match recv_now(&link.sock, &mut buf) {
            Ok(Some(0)) | Err(_) => return Ok(None),
            Ok(Some(n)) => n,
            Ok(None) => return Ok(Some(read)),
        };
        read += n;
        take_bytes(&mut link.seal, &mut link.inbound, &buf[..n])?;
        while let Some(frame) = link.inbound.next_frame()? {
            let Frame::Ack(taken) = frame else {
                return Err(LinkError::Direction);
            };
            for id in link.out.acked(taken)?.into_iter().flatten() {
                fates.push((id, Ok(())));
            }
        }
        if n < buf.len() {
            // The socket held less than a read takes: it is empty now, and
            // asking again would only be told so (a system call per send).
            return Ok(Some(read));
        }
    }
}

/// Writes what `link` owes its opener of acknowledgements (all of it when
/// `idle`), without waiting.
fn acknowledge(link: &mut Accepted, idle: bool) {
    if link.unsent_from == 0 {
        if let Some(taken) = link.taken.ack_due(idle) {
            // Cumulative: the newest replaces one not begun.
            let replaced = !link.unsent.is_empty();
            link.unsent.clear();
            match &mut link.seal {
                Some(seal) => {
                    if replaced {
                        seal.unseal_last();
                    }
                    let mut frame = Vec::with_capacity(13);
                    link::put_ack(&mut frame, taken);
                    seal.seal(&frame, &mut link.unsent);
                }
                None => link::put_ack(&mut link.unsent, taken),
            }
        }
    }
    if link.unsent.is_empty() {
        return;
    }
    match endpoint::send_now(link.sock.as_raw_fd(), &link.unsent[link.unsent_from..]) {
        Ok(n) => {
            link.unsent_from += n;
            if link.unsent_from == link.unsent.len() {
                link.unsent.clear();
                link.unsent_from = 0;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(_) => link.ended = true,
    }
}

/// Reads once what came on `link` without waiting, into its ready messages.
fn fill(link: &mut Accepted, buf: &mut [u8]) {
    match recv_now(&link.sock, buf) {
        Ok(Some(n)) if n > 0 => {
            if take_bytes(&mut link.seal, &mut link.inbound, &buf[..n]).is_err() {
                // A record that does not open: not the opener's, or altered.
                link.ended = true;
                return;
            }
        }
        Ok(None) => {}
        _ => link.ended = true,
    }
    loop {
        match link.inbound.next_frame() {
            Ok(Some(Frame::Data { data, urgent })) => {
                let mail = Mail {
                    from: link.from,
                    class: link.class,
                    seq: link.next_seq,
                    body: MailBody::Data(data),
                };
                link.ready.push_back((mail, urgent));
                link.next_seq = link.next_seq.saturating_add(1);
            }
            Ok(Some(Frame::AckBack { token, taken })) => link.back = Some((token, taken)),
            Ok(None) => return,
            // A bad frame, or one in the wrong direction: the opener broke the
            // protocol, and the link ends here.
            Ok(Some(Frame::Ack(_))) | Err(_) => {
                link.ended = true;
                return;
            }
        }
    }
}

/// Takes `raw` bytes read from a link into its frames, through its seal if it has one.
fn take_bytes(seal: &mut Option<Seal>, inbound: &mut Inbound, raw: &[u8]) -> Result<(), LinkError> {
    match seal {
        Some(seal) => inbound.extend(seal.open(raw)?),
        None => inbound.extend(raw),
    }
    Ok(())
}

/// One read without waiting: `Some(0)` at the end, `None` when nothing is there.
fn recv_now(sock: &OwnedFd, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
    match endpoint::recv_now(sock.as_raw_fd(), buf) {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nefele_api::ids::{Incarnation, NodeId};
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    fn pid(n: u64) -> Pid {
        Pid::new(NodeId(1), Incarnation(1), n)
    }

    /// What `links` holds and its links bring now, up to `max`.
    fn take_all(links: &mut Links, max: usize) -> Vec<Mail> {
        let mut mails = Vec::new();
        links.take(&mut mails, max, Reads::All);
        mails
    }

    fn marker_from(from: Pid) -> Mail {
        Mail {
            from,
            class: DistanceClass::SameHost,
            seq: 4,
            body: MailBody::Data(link::marker(1)),
        }
    }

    #[test]
    fn what_came_on_links_shifts_the_positions_the_agents_give_until_the_clients_end() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut links = Links::new(100);
        links.accepted(&marker_from(pid(1)), ours.into(), 1, None);
        let mut bytes = Vec::new();
        link::put_data(&mut bytes, b"one", false);
        link::put_data(&mut bytes, b"two", false);
        theirs.write_all(&bytes).unwrap();
        assert_eq!(take_all(&mut links, 8).len(), 2);
        assert_eq!((links.seq_shift(pid(1)), links.seq_shift(pid(2))), (2, 0));
        // The link ends and is forgotten; its count stays.
        drop(theirs);
        assert!(take_all(&mut links, 8).is_empty());
        assert!(!links.accepts());
        assert_eq!(links.seq_shift(pid(1)), 2);
    }

    #[test]
    fn messages_come_with_the_markers_class_and_the_positions_after_it() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut links = Links::new(100);
        links.accepted(&marker_from(pid(1)), ours.into(), 1, None);
        let mut bytes = Vec::new();
        link::put_data(&mut bytes, b"one", false);
        link::put_data(&mut bytes, b"two", true);
        theirs.write_all(&bytes).unwrap();
        let got = take_all(&mut links, 8);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].seq, got[1].seq), (5, 6));
        assert!(got.iter().all(|m| m.from == pid(1)));
        // The opener is told what was taken.
        let mut inbound = Inbound::new(8);
        let mut buf = [0u8; 64];
        let n = std::io::Read::read(&mut theirs, &mut buf).unwrap();
        inbound.extend(&buf[..n]);
        assert_eq!(inbound.next_frame(), Ok(Some(Frame::Ack(2))));
    }

    #[test]
    fn a_hostile_opener_ends_its_link_and_nothing_oversized_is_taken() {
        for garbage in [
            &u32::MAX.to_le_bytes()[..],
            &[1, 0, 0, 0, 9][..],
            &[9, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0][..],
        ] {
            let (ours, mut theirs) = UnixStream::pair().unwrap();
            let mut links = Links::new(100);
            links.accepted(&marker_from(pid(1)), ours.into(), 1, None);
            theirs.write_all(garbage).unwrap();
            assert!(take_all(&mut links, 8).is_empty());
            assert!(!links.accepts(), "the link ended on {garbage:?}");
        }
    }

    #[test]
    fn a_down_waits_behind_its_links_messages_until_the_link_ends() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut links = Links::new(100);
        links.accepted(&marker_from(pid(1)), ours.into(), 1, None);
        let down = Mail {
            from: pid(1),
            class: DistanceClass::SameHost,
            seq: 0,
            body: MailBody::Down {
                pid: pid(1),
                reason: nefele_api::messaging::DownReason::NoProcess,
            },
        };
        assert!(links.hold_down(down.clone()).is_none(), "held");
        let mut bytes = Vec::new();
        link::put_data(&mut bytes, b"last words", false);
        theirs.write_all(&bytes).unwrap();
        drop(theirs);
        // The link's end shows at the next read, or when the acknowledgement
        // finds it closed: the Down comes after the message, in one take or two.
        let mut got = take_all(&mut links, 8);
        got.extend(take_all(&mut links, 8));
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].body, MailBody::Data(b"last words".to_vec()));
        assert_eq!(got[1], down);
        assert!(!links.accepts());
        // A Down for a process with no link passes at once.
        assert_eq!(links.hold_down(down.clone()), Some(down));
    }

    /// A link opened to pid 2 with one `send_async` (id 7) on it, and the
    /// receiver's end.
    fn opened_with_one_sent() -> (Links, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut links = Links::new(100);
        links.opened(pid(2), ours.into(), 2, None);
        assert_eq!(links.send(pid(2), [(&b"x"[..], Some(7))]), Ok(1));
        (links, theirs)
    }

    #[test]
    fn an_acknowledgement_of_more_than_was_sent_ends_the_link_with_its_fates_unknown() {
        let (mut links, mut theirs) = opened_with_one_sent();
        assert_eq!(links.owed(), 1);
        let mut ack = Vec::new();
        link::put_ack(&mut ack, 5);
        theirs.write_all(&ack).unwrap();
        assert_eq!(links.collect_acks(), vec![(7, Err(SendError::Unknown))]);
        assert!(!links.has(pid(2)));
    }

    #[test]
    fn a_link_found_without_acknowledgements_is_looked_at_again_only_after_a_while() {
        let (mut links, mut theirs) = opened_with_one_sent();
        let t0 = Instant::now();
        assert!(links.collect_acks_by(|| t0).is_empty(), "none came yet");
        let mut ack = Vec::new();
        link::put_ack(&mut ack, 1);
        theirs.write_all(&ack).unwrap();
        let soon = t0 + ACK_RECHECK / 2;
        assert!(links.collect_acks_by(|| soon).is_empty(), "left alone");
        let later = t0 + ACK_RECHECK;
        assert_eq!(links.collect_acks_by(|| later), vec![(7, Ok(()))]);
        // Nothing owed: not looked at, whatever the time.
        assert!(links.collect_acks_by(|| unreachable!()).is_empty());
    }

    /// A linked to B and B back to A: each end's pair of links.
    fn linked_both_ways() -> (Links, Links) {
        let (a_out, b_in) = UnixStream::pair().unwrap();
        let (b_out, a_in) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (Links::new(100), Links::new(100));
        a.opened(pid(2), a_out.into(), 1, None);
        b.accepted(&marker_from(pid(1)), b_in.into(), 1, None);
        b.opened(pid(1), b_out.into(), 2, None);
        a.accepted(&marker_from(pid(2)), a_in.into(), 2, None);
        (a, b)
    }

    #[test]
    fn an_answer_carries_the_acknowledgement_of_its_request_in_one_write() {
        let (mut a, mut b) = linked_both_ways();
        assert_eq!(a.send(pid(2), [(&b"request"[..], Some(7))]), Ok(1));
        let got = take_all(&mut b, 8);
        assert_eq!(got[0].body, MailBody::Data(b"request".to_vec()));
        // B links back: it owes A the acknowledgement until it sends.
        assert!(a.collect_acks().is_empty());
        assert_eq!(b.send(pid(1), [(&b"answer"[..], Some(8))]), Ok(1));
        // Nothing came on A's own link: the acknowledgement rode the answer.
        let mut buf = [0u8; 64];
        assert!(recv_now(&a.opened[&pid(2)].sock, &mut buf)
            .unwrap()
            .is_none());
        let got = take_all(&mut a, 8);
        assert_eq!(got[0].body, MailBody::Data(b"answer".to_vec()));
        assert_eq!(a.collect_acks(), vec![(7, Ok(()))]);
    }

    #[test]
    fn an_acknowledgement_back_overtaken_by_a_newer_one_on_the_link_itself_is_no_news() {
        let (mut a, mut b) = linked_both_ways();
        assert_eq!(a.send(pid(2), [(&b"request 1"[..], Some(7))]), Ok(1));
        assert_eq!(take_all(&mut b, 8).len(), 1);
        // The answer carries the acknowledgement of request 1.
        assert_eq!(b.send(pid(1), [(&b"answer 1"[..], Some(9))]), Ok(1));
        assert_eq!(a.send(pid(2), [(&b"request 2"[..], Some(8))]), Ok(2));
        assert_eq!(take_all(&mut b, 8).len(), 1);
        // B is about to wait: request 2's acknowledgement goes on A's link.
        b.flush_acks();
        // A reads its own link first, then the link back with the older count.
        assert_eq!(a.collect_acks(), vec![(7, Ok(())), (8, Ok(()))]);
        let got = take_all(&mut a, 8);
        assert_eq!(got[0].body, MailBody::Data(b"answer 1".to_vec()));
        assert!(a.has(pid(2)), "the link stays");
        assert!(a.collect_acks().is_empty());
        assert_eq!(a.send(pid(2), [(&b"request 3"[..], Some(10))]), Ok(3));
    }

    #[test]
    fn an_acknowledgement_on_the_link_overtaken_by_a_newer_one_riding_back_is_no_news() {
        let (mut a, mut b) = linked_both_ways();
        assert_eq!(a.send(pid(2), [(&b"note"[..], Some(7))]), Ok(1));
        assert_eq!(take_all(&mut b, 8).len(), 1);
        // B is about to wait: the note's acknowledgement goes on A's link.
        b.flush_acks();
        assert_eq!(a.send(pid(2), [(&b"request"[..], Some(8))]), Ok(2));
        assert_eq!(take_all(&mut b, 8).len(), 1);
        // The answer carries the acknowledgement of both.
        assert_eq!(b.send(pid(1), [(&b"answer"[..], Some(9))]), Ok(1));
        // A reads the link back first; its own link, with the older count, when
        // it owes acknowledgements again.
        assert_eq!(take_all(&mut a, 8).len(), 1);
        assert_eq!(a.collect_acks(), vec![(7, Ok(())), (8, Ok(()))]);
        assert_eq!(a.send(pid(2), [(&b"more"[..], Some(10))]), Ok(3));
        assert!(a.collect_acks().is_empty());
        assert!(a.has(pid(2)), "the link stays");
    }

    #[test]
    fn an_acknowledgement_back_for_another_link_is_ignored() {
        let (mut a, _b) = linked_both_ways();
        assert_eq!(a.send(pid(2), [(&b"x"[..], Some(7))]), Ok(1));
        let (b_out, a_in) = UnixStream::pair().unwrap();
        a.accepted(&marker_from(pid(2)), a_in.into(), 3, None);
        let mut bytes = Vec::new();
        link::put_ack_back(&mut bytes, 99, 1);
        (&b_out).write_all(&bytes).unwrap();
        assert!(take_all(&mut a, 8).is_empty());
        assert!(a.collect_acks().is_empty());
        assert!(a.has(pid(2)), "the link stays");
        // One that proves the link broken (more than was sent) ends it.
        bytes.clear();
        link::put_ack_back(&mut bytes, 1, 5);
        (&b_out).write_all(&bytes).unwrap();
        take_all(&mut a, 8);
        assert_eq!(a.collect_acks(), vec![(7, Err(SendError::Unknown))]);
        assert!(!a.has(pid(2)));
    }
}
