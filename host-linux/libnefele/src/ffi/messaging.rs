//! The messaging calls of the C ABI: sends to a pid, a name, a group (by
//! pattern), a topic, every process of the tenant, or an external address;
//! receives (blocking with a timeout, non-blocking, or armed for the caller's own
//! poll loop on [`nefele_fd`]), with every kind of mail told apart
//! ([`nefele_mail`]); names, groups, topics, monitors and distance.
//!
//! Every call acts as the process the client acts as (`nefele_connect_self`, or
//! `nefele_act_as` on a tenant connection): `NEFELE_ENOTSELF` otherwise. A
//! message that does not fit the caller's buffer is dropped and reported
//! `NEFELE_ERANGE` with its size, as `nefele_recv` always did.

use super::{
    bytes, client, code_of, exit_of, guarded, nefele_client, nefele_exit, nefele_pid, text,
    NEFELE_EINVAL, NEFELE_ERANGE, NEFELE_ETIMEDOUT,
};
use crate::client::Client;
use nefele_api::messaging::{
    Dest, DownReason, ExternalClose, Mail, MailBody, Pattern, SendReceipt,
};
use nefele_api::replies::DistanceClass;
use std::ffi::{c_char, c_int};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// `nefele_mail.kind`: application bytes (in the caller's buffer).
pub const NEFELE_MAIL_DATA: c_int = 0;
/// `nefele_mail.kind`: a monitored process (`from`) ended (`down_*` say how).
pub const NEFELE_MAIL_DOWN: c_int = 1;
/// `nefele_mail.kind`: a name this process held was taken from it (`text`).
pub const NEFELE_MAIL_NAME_LOST: c_int = 2;
/// `nefele_mail.kind`: bytes an external service (`text`:`port`) sent back (in
/// the caller's buffer).
pub const NEFELE_MAIL_EXTERNAL: c_int = 3;
/// `nefele_mail.kind`: the connection to an external service (`text`:`port`)
/// ended (`close_reason` says why).
pub const NEFELE_MAIL_EXTERNAL_CLOSED: c_int = 4;

/// `nefele_mail.down_reason`: it ended (`down_exit` says how).
pub const NEFELE_DOWN_EXITED: c_int = 0;
/// `nefele_mail.down_reason`: lost with its host (`down_host`).
pub const NEFELE_DOWN_LOST: c_int = 1;
/// `nefele_mail.down_reason`: its host stopped answering.
pub const NEFELE_DOWN_UNREACHABLE: c_int = 2;
/// `nefele_mail.down_reason`: it did not exist when the monitor was set.
pub const NEFELE_DOWN_NO_PROCESS: c_int = 3;

/// `nefele_mail.close_reason`, one per way an external connection ends (the
/// order of the Rust `ExternalClose`).
pub const NEFELE_CLOSE_CLOSED: c_int = 0;
/// The bytes between this host and the proxy were lost and not recovered.
pub const NEFELE_CLOSE_RESET: c_int = 1;
/// This process did not take its bytes fast enough.
pub const NEFELE_CLOSE_OVERFLOW: c_int = 2;
/// The proxy dropped the connection (its table was full, or it restarted).
pub const NEFELE_CLOSE_DROPPED: c_int = 3;
/// The proxy's rules allow no address of the destination.
pub const NEFELE_CLOSE_DENIED: c_int = 4;
/// The proxy could not connect.
pub const NEFELE_CLOSE_UNREACHABLE: c_int = 5;
/// The external service did not take the bytes fast enough.
pub const NEFELE_CLOSE_OVERRUN: c_int = 6;

/// `nefele_send_group`'s pattern: every member, once.
pub const NEFELE_PATTERN_MULTICAST: c_int = 0;
/// One member: the nearest by distance class, then the least loaded.
pub const NEFELE_PATTERN_ANYCAST: c_int = 1;
/// One member, each in turn.
pub const NEFELE_PATTERN_ROUND_ROBIN: c_int = 2;
/// One member: the one whose mailbox holds the fewest messages.
pub const NEFELE_PATTERN_LEAST_LOADED: c_int = 3;
/// The first live member in join order.
pub const NEFELE_PATTERN_FAILOVER: c_int = 4;

/// The room for a name or an external host in [`nefele_mail::text`] (with its NUL).
const TEXT: usize = 256;

/// One received mail. Bytes (data and external mail) go to the caller's buffer;
/// everything else is here.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_camel_case_types)]
pub struct nefele_mail {
    /// `NEFELE_MAIL_*`.
    pub kind: c_int,
    /// The sender; for `DOWN` the process that ended; for external mail the
    /// receiving process itself.
    pub from: nefele_pid,
    /// How far the sender's host is: 0 same host, 1 same group, 2 same DC,
    /// 3 external.
    pub distance: c_int,
    /// The message's position on its (sender, receiver) pair, from 0.
    pub seq: u64,
    /// `DATA` and `EXTERNAL`: the number of bytes (also when they did not fit).
    pub len: usize,
    /// `DOWN`: `NEFELE_DOWN_*`.
    pub down_reason: c_int,
    /// `DOWN` with `NEFELE_DOWN_EXITED`: how it ended.
    pub down_exit: nefele_exit,
    /// `DOWN` with `NEFELE_DOWN_LOST`: the host it was lost with.
    pub down_host: u32,
    /// `EXTERNAL_CLOSED`: `NEFELE_CLOSE_*`.
    pub close_reason: c_int,
    /// `EXTERNAL` and `EXTERNAL_CLOSED`: the external port.
    pub port: u16,
    /// `NAME_LOST`: the name; `EXTERNAL` and `EXTERNAL_CLOSED`: the external host.
    /// NUL-terminated (a longer text is cut at 255 bytes).
    pub text: [c_char; TEXT],
}

impl Default for nefele_mail {
    fn default() -> Self {
        nefele_mail {
            kind: NEFELE_MAIL_DATA,
            from: nefele_pid::default(),
            distance: 0,
            seq: 0,
            len: 0,
            down_reason: 0,
            down_exit: nefele_exit::default(),
            down_host: 0,
            close_reason: 0,
            port: 0,
            text: [0; TEXT],
        }
    }
}

/// The C number of a distance class (as `nefele_proc.distance`).
pub(super) fn class_of(class: DistanceClass) -> c_int {
    match class {
        DistanceClass::SameHost => 0,
        DistanceClass::SameGroup => 1,
        DistanceClass::SameDc => 2,
        DistanceClass::External => 3,
    }
}

fn close_of(reason: ExternalClose) -> c_int {
    match reason {
        ExternalClose::Closed => NEFELE_CLOSE_CLOSED,
        ExternalClose::Reset => NEFELE_CLOSE_RESET,
        ExternalClose::Overflow => NEFELE_CLOSE_OVERFLOW,
        ExternalClose::Dropped => NEFELE_CLOSE_DROPPED,
        ExternalClose::Denied => NEFELE_CLOSE_DENIED,
        ExternalClose::Unreachable => NEFELE_CLOSE_UNREACHABLE,
        ExternalClose::Overrun => NEFELE_CLOSE_OVERRUN,
    }
}

/// `text` cut to fit [`nefele_mail::text`] with its NUL.
fn text_field(text: &str) -> [c_char; TEXT] {
    let mut out = [0 as c_char; TEXT];
    for (dst, &src) in out.iter_mut().zip(text.as_bytes().iter().take(TEXT - 1)) {
        *dst = src as c_char;
    }
    out
}

/// `mail` as C sees it, and its bytes (empty for mail without any).
fn mail_of(mail: Mail) -> (nefele_mail, Vec<u8>) {
    let mut out = nefele_mail {
        from: mail.from.into(),
        distance: class_of(mail.class),
        seq: mail.seq,
        ..nefele_mail::default()
    };
    let data = match mail.body {
        MailBody::Data(d) => d,
        MailBody::Down { pid, reason } => {
            out.kind = NEFELE_MAIL_DOWN;
            out.from = pid.into();
            out.down_reason = match reason {
                DownReason::Exited(status) => {
                    out.down_exit = exit_of(status);
                    NEFELE_DOWN_EXITED
                }
                DownReason::Lost { host } => {
                    out.down_host = host.0;
                    NEFELE_DOWN_LOST
                }
                DownReason::Unreachable => NEFELE_DOWN_UNREACHABLE,
                DownReason::NoProcess => NEFELE_DOWN_NO_PROCESS,
            };
            Vec::new()
        }
        MailBody::NameLost { name } => {
            out.kind = NEFELE_MAIL_NAME_LOST;
            out.text = text_field(&name);
            Vec::new()
        }
        MailBody::External { host, port, data } => {
            out.kind = NEFELE_MAIL_EXTERNAL;
            out.text = text_field(&host);
            out.port = port;
            data
        }
        MailBody::ExternalClosed { host, port, reason } => {
            out.kind = NEFELE_MAIL_EXTERNAL_CLOSED;
            out.text = text_field(&host);
            out.port = port;
            out.close_reason = close_of(reason);
            Vec::new()
        }
    };
    out.len = data.len();
    (out, data)
}

/// One mail, waiting up to `timeout_ms` (0: not at all); `NEFELE_ETIMEDOUT` if
/// none came.
fn take_one(c: &mut Client, timeout_ms: u32) -> Result<Mail, c_int> {
    let mails = if timeout_ms == 0 {
        c.try_recv(1)
    } else {
        c.recv(1, Duration::from_millis(u64::from(timeout_ms)))
    }
    .map_err(|e| code_of(&e))?;
    mails.into_iter().next().ok_or(NEFELE_ETIMEDOUT)
}

/// Copies `data` to `buf` (room for `cap`); `NEFELE_ERANGE` if it does not fit.
///
/// # Safety
/// `buf` is writable for `cap` bytes, and non-NULL when `cap > 0`.
unsafe fn copy_out(data: &[u8], buf: *mut u8, cap: usize) -> Result<(), c_int> {
    if data.len() > cap {
        return Err(NEFELE_ERANGE);
    }
    // SAFETY: `buf` is writable for `cap >= data.len()` bytes (non-NULL when
    // `cap > 0`; nothing is copied when `data` is empty).
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len()) };
    Ok(())
}

/// Writes `receipt.reached` to `reached` unless it is NULL.
///
/// # Safety
/// `reached` is NULL or writable.
unsafe fn write_reached(reached: *mut u32, receipt: SendReceipt) {
    // SAFETY: by contract.
    if let Some(r) = unsafe { reached.as_mut() } {
        *r = receipt.reached;
    }
}

/// Sends `len` bytes at `data` to `to`, and the number of mailboxes reached to
/// `reached` (NULL: not wanted).
///
/// # Safety
/// `c` is an open handle; `data` readable for `len` bytes; `reached` NULL or writable.
unsafe fn send_to(
    c: *mut nefele_client,
    to: Dest,
    data: *const u8,
    len: usize,
    reached: *mut u32,
) -> c_int {
    guarded(|| {
        // SAFETY: by contract.
        let (c, data) = unsafe { (client(c)?, bytes(data, len)?) };
        let receipt = c.send(to, data).map_err(|e| code_of(&e))?;
        // SAFETY: by contract.
        unsafe { write_reached(reached, receipt) };
        Ok(())
    })
}

/// Sends `len` bytes to `to`, waiting for room at a full mailbox; returns once the
/// message's fate is known.
///
/// # Safety
/// `c` is an open handle; `data` readable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn nefele_send(
    c: *mut nefele_client,
    to: nefele_pid,
    data: *const u8,
    len: usize,
) -> c_int {
    // SAFETY: by contract.
    unsafe { send_to(c, Dest::Pid(to.into()), data, len, std::ptr::null_mut()) }
}

/// Sends `len` bytes to the process registered as `name`.
///
/// # Safety
/// As for `nefele_send`; `name` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn nefele_send_name(
    c: *mut nefele_client,
    name: *const c_char,
    data: *const u8,
    len: usize,
) -> c_int {
    // SAFETY: by contract.
    let name = match unsafe { text(name) } {
        Ok(name) => name.to_owned(),
        Err(e) => return e,
    };
    // SAFETY: by contract.
    unsafe { send_to(c, Dest::Name(name), data, len, std::ptr::null_mut()) }
}

/// Sends `len` bytes to members of `group`, picked by `pattern`
/// (`NEFELE_PATTERN_*`); `reached` (NULL: not wanted) gets how many got it.
///
/// # Safety
/// As for `nefele_send`; `group` NUL-terminated; `reached` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nefele_send_group(
    c: *mut nefele_client,
    group: *const c_char,
    pattern: c_int,
    data: *const u8,
    len: usize,
    reached: *mut u32,
) -> c_int {
    let pattern = match pattern {
        NEFELE_PATTERN_MULTICAST => Pattern::Multicast,
        NEFELE_PATTERN_ANYCAST => Pattern::Anycast,
        NEFELE_PATTERN_ROUND_ROBIN => Pattern::RoundRobin,
        NEFELE_PATTERN_LEAST_LOADED => Pattern::LeastLoaded,
        NEFELE_PATTERN_FAILOVER => Pattern::Failover,
        _ => return NEFELE_EINVAL,
    };
    // SAFETY: by contract.
    let group = match unsafe { text(group) } {
        Ok(g) => g.to_owned(),
        Err(e) => return e,
    };
    // SAFETY: by contract.
    unsafe { send_to(c, Dest::Group { group, pattern }, data, len, reached) }
}

/// Publishes `len` bytes on `topic`: every subscriber gets them once, in the
/// publisher's order; `reached` (NULL: not wanted) gets how many did.
///
/// # Safety
/// As for `nefele_send_group`.
#[no_mangle]
pub unsafe extern "C" fn nefele_publish(
    c: *mut nefele_client,
    topic: *const c_char,
    data: *const u8,
    len: usize,
    reached: *mut u32,
) -> c_int {
    // SAFETY: by contract.
    let topic = match unsafe { text(topic) } {
        Ok(t) => t.to_owned(),
        Err(e) => return e,
    };
    // SAFETY: by contract.
    unsafe { send_to(c, Dest::Topic(topic), data, len, reached) }
}

/// Sends `len` bytes to every process of the caller's tenant; `reached` (NULL:
/// not wanted) gets how many got them.
///
/// # Safety
/// As for `nefele_send`; `reached` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nefele_broadcast(
    c: *mut nefele_client,
    data: *const u8,
    len: usize,
    reached: *mut u32,
) -> c_int {
    // SAFETY: by contract.
    unsafe { send_to(c, Dest::Broadcast, data, len, reached) }
}

/// Sends `len` bytes to an external service at `host`:`port` through a proxy
/// agent; what it sends back arrives as `NEFELE_MAIL_EXTERNAL` mail.
///
/// # Safety
/// As for `nefele_send`; `host` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn nefele_send_external(
    c: *mut nefele_client,
    host: *const c_char,
    port: u16,
    data: *const u8,
    len: usize,
) -> c_int {
    // SAFETY: by contract.
    let host = match unsafe { text(host) } {
        Ok(h) => h.to_owned(),
        Err(e) => return e,
    };
    let to = Dest::External { host, port };
    // SAFETY: by contract.
    unsafe { send_to(c, to, data, len, std::ptr::null_mut()) }
}

/// Receives one message, waiting up to `timeout_ms` (0: do not wait): its sender
/// to `from`, its bytes to `buf` (room for `cap`), their number to `len`.
/// `NEFELE_ETIMEDOUT` when none came; `NEFELE_ERANGE` when it does not fit (the
/// message is dropped; `len` says its size). Mail without bytes (a monitor's, a
/// lost name's, an external connection's end) arrives as an empty message from
/// the process concerned: `nefele_recv_mail` tells them apart.
///
/// # Safety
/// `c` is an open handle; `from`, `len` writable; `buf` writable for `cap` bytes.
#[no_mangle]
pub unsafe extern "C" fn nefele_recv(
    c: *mut nefele_client,
    timeout_ms: u32,
    from: *mut nefele_pid,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
) -> c_int {
    guarded(|| {
        // SAFETY: by contract.
        let c = unsafe { client(c) }?;
        if from.is_null() || len.is_null() || (buf.is_null() && cap > 0) {
            return Err(NEFELE_EINVAL);
        }
        let (mail, data) = mail_of(take_one(c, timeout_ms)?);
        // SAFETY: `from` and `len` are non-NULL and writable.
        unsafe {
            from.write(mail.from);
            len.write(data.len());
        }
        // SAFETY: `buf` is writable for `cap` bytes, non-NULL when `cap > 0`.
        unsafe { copy_out(&data, buf, cap) }
    })
}

/// Takes one mail with `take` and writes it to `out`, its bytes to `buf`.
///
/// # Safety
/// `c` is an open handle; `out` writable; `buf` writable for `cap` bytes.
unsafe fn write_mail(
    c: *mut nefele_client,
    out: *mut nefele_mail,
    buf: *mut u8,
    cap: usize,
    take: impl FnOnce(&mut Client) -> Result<Mail, c_int>,
) -> c_int {
    guarded(|| {
        // SAFETY: by contract.
        let c = unsafe { client(c) }?;
        if out.is_null() || (buf.is_null() && cap > 0) {
            return Err(NEFELE_EINVAL);
        }
        let (mail, data) = mail_of(take(c)?);
        // SAFETY: `out` is non-NULL and writable; `buf` as `copy_out` needs.
        unsafe {
            out.write(mail);
            copy_out(&data, buf, cap)
        }
    })
}

/// Receives one mail of any kind, waiting up to `timeout_ms` (0: do not wait):
/// what it is to `out`, its bytes (data and external mail) to `buf` (room for
/// `cap`). `NEFELE_ETIMEDOUT` when none came; `NEFELE_ERANGE` when its bytes do
/// not fit (the mail is dropped; `out` is written, `out->len` says their size).
///
/// # Safety
/// `c` is an open handle; `out` writable; `buf` writable for `cap` bytes.
#[no_mangle]
pub unsafe extern "C" fn nefele_recv_mail(
    c: *mut nefele_client,
    timeout_ms: u32,
    out: *mut nefele_mail,
    buf: *mut u8,
    cap: usize,
) -> c_int {
    // SAFETY: by contract.
    unsafe { write_mail(c, out, buf, cap, |c| take_one(c, timeout_ms)) }
}

/// The descriptor of `c`'s connection, to `fd`, for the caller's own poll or
/// epoll loop: arm a receive (`nefele_arm`), wait for `fd` to be readable, then
/// `nefele_take_armed`. The descriptor changes when the connection is made again
/// (after the agent restarted): take it again after every call.
///
/// # Safety
/// `c` is an open handle; `fd` writable.
#[no_mangle]
pub unsafe extern "C" fn nefele_fd(c: *mut nefele_client, fd: *mut c_int) -> c_int {
    guarded(|| {
        // SAFETY: by contract.
        let c = unsafe { client(c) }?;
        if fd.is_null() {
            return Err(NEFELE_EINVAL);
        }
        // SAFETY: non-NULL and writable.
        unsafe { fd.write(c.as_raw_fd()) };
        Ok(())
    })
}

/// Asks for one mail without waiting for it: the connection's descriptor
/// (`nefele_fd`) turns readable when it comes (or after a few seconds with
/// none). Nothing is sent when a receive is armed already.
///
/// # Safety
/// `c` is an open handle.
#[no_mangle]
pub unsafe extern "C" fn nefele_arm(c: *mut nefele_client) -> c_int {
    guarded(|| {
        // SAFETY: by contract.
        unsafe { client(c) }?.arm(1).map_err(|e| code_of(&e))
    })
}

/// The armed receive's mail, as `nefele_recv_mail` gives it (call once the
/// descriptor is readable): one a link brought, or the agent's answer, which
/// disarms (waited for when no link is made to the process).
/// `NEFELE_ETIMEDOUT` when none came.
///
/// # Safety
/// As for `nefele_recv_mail`.
#[no_mangle]
pub unsafe extern "C" fn nefele_take_armed(
    c: *mut nefele_client,
    out: *mut nefele_mail,
    buf: *mut u8,
    cap: usize,
) -> c_int {
    // SAFETY: by contract.
    unsafe {
        write_mail(c, out, buf, cap, |c| {
            let mails = c.take_armed().map_err(|e| code_of(&e))?;
            mails.into_iter().next().ok_or(NEFELE_ETIMEDOUT)
        })
    }
}

/// Runs `f` on the client and the text at `s` (a name, group or topic).
///
/// # Safety
/// `c` is an open handle; `s` NUL-terminated.
unsafe fn with_text(
    c: *mut nefele_client,
    s: *const c_char,
    f: impl FnOnce(&mut Client, &str) -> Result<(), crate::client::ClientError>,
) -> c_int {
    guarded(|| {
        // SAFETY: by contract.
        let (c, s) = unsafe { (client(c)?, text(s)?) };
        f(c, s).map_err(|e| code_of(&e))
    })
}

/// Defines C calls that act with one text argument (a name, group or topic) on
/// the process the client acts as.
macro_rules! text_calls {
    ($( $(#[$doc:meta])* $c_name:ident($arg:ident) => $method:path; )+) => {$(
        $(#[$doc])*
        ///
        /// # Safety
        #[doc = concat!("`c` is an open handle; `", stringify!($arg), "` NUL-terminated.")]
        #[no_mangle]
        pub unsafe extern "C" fn $c_name(c: *mut nefele_client, $arg: *const c_char) -> c_int {
            // SAFETY: by contract.
            unsafe { with_text(c, $arg, $method) }
        }
    )+};
}

text_calls! {
    /// Registers `name` for the process `c` acts as.
    nefele_register(name) => Client::register;
    /// Drops the registration of `name` (held by the process `c` acts as, or
    /// another process of its host and tenant).
    nefele_unregister(name) => Client::unregister;
    /// Joins `group`.
    nefele_join(group) => Client::join;
    /// Leaves `group`.
    nefele_leave(group) => Client::leave;
    /// Subscribes to `topic`.
    nefele_subscribe(topic) => Client::subscribe;
    /// Cancels the subscription to `topic`.
    nefele_unsubscribe(topic) => Client::unsubscribe;
}

/// The process registered as `name`, to `out`.
///
/// # Safety
/// `c` is an open handle; `name` NUL-terminated; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn nefele_whereis(
    c: *mut nefele_client,
    name: *const c_char,
    out: *mut nefele_pid,
) -> c_int {
    guarded(|| {
        // SAFETY: by contract.
        let (c, name) = unsafe { (client(c)?, text(name)?) };
        if out.is_null() {
            return Err(NEFELE_EINVAL);
        }
        let pid = c.whereis(name).map_err(|e| code_of(&e))?;
        // SAFETY: `out` is non-NULL and writable.
        unsafe { out.write(pid.into()) };
        Ok(())
    })
}

/// Runs `f` on the client and `pid`.
///
/// # Safety
/// `c` is an open handle.
unsafe fn with_pid(
    c: *mut nefele_client,
    pid: nefele_pid,
    f: impl FnOnce(&mut Client, nefele_api::ids::Pid) -> Result<(), crate::client::ClientError>,
) -> c_int {
    guarded(|| {
        // SAFETY: by contract.
        let c = unsafe { client(c) }?;
        f(c, pid.into()).map_err(|e| code_of(&e))
    })
}

/// Has the mailbox of the process `c` acts as told (`NEFELE_MAIL_DOWN`) when
/// `watched` ends, is lost, or stops answering.
///
/// # Safety
/// `c` is an open handle.
#[no_mangle]
pub unsafe extern "C" fn nefele_monitor(c: *mut nefele_client, watched: nefele_pid) -> c_int {
    // SAFETY: by contract.
    unsafe { with_pid(c, watched, Client::monitor) }
}

/// Links the process `c` acts as to `to`, a process of the same host: its later
/// at-most-once sends to `to` go on a direct connection the agent made, not
/// through the agent (see libnefele's `link` module); `to` reads them with its
/// mail. Fails as a send to `to` would (`NEFELE_ENOSUCH`, ...), or `NEFELE_EMSG`
/// when no link can be made (another host).
///
/// # Safety
/// `c` is an open handle.
#[no_mangle]
pub unsafe extern "C" fn nefele_link(c: *mut nefele_client, to: nefele_pid) -> c_int {
    // SAFETY: by contract.
    unsafe { with_pid(c, to, Client::link) }
}

/// Closes the link to `to` once `to` has taken what was sent on it; later sends
/// to `to` go through the agent.
///
/// # Safety
/// `c` is an open handle.
#[no_mangle]
pub unsafe extern "C" fn nefele_unlink(c: *mut nefele_client, to: nefele_pid) -> c_int {
    // SAFETY: by contract.
    unsafe {
        with_pid(c, to, |c, to| {
            c.unlink(to);
            Ok(())
        })
    }
}

/// Cancels a monitor.
///
/// # Safety
/// `c` is an open handle.
#[no_mangle]
pub unsafe extern "C" fn nefele_demonitor(c: *mut nefele_client, watched: nefele_pid) -> c_int {
    // SAFETY: by contract.
    unsafe { with_pid(c, watched, Client::demonitor) }
}

/// How far `to` is from the process `c` acts as: its class to `distance` (0 same
/// host, 1 same group, 2 same DC, 3 external) and the round trip measured to hosts
/// of that class to `rtt_ns` (-1 before any measurement). Either may be NULL.
///
/// # Safety
/// `c` is an open handle; `distance` and `rtt_ns` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nefele_distance(
    c: *mut nefele_client,
    to: nefele_pid,
    distance: *mut c_int,
    rtt_ns: *mut i64,
) -> c_int {
    guarded(|| {
        // SAFETY: by contract.
        let c = unsafe { client(c) }?;
        let info = c.distance(to.into()).map_err(|e| code_of(&e))?;
        let rtt = info
            .rtt
            .map_or(-1, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        // SAFETY: each is NULL or writable by contract.
        unsafe {
            if let Some(d) = distance.as_mut() {
                *d = class_of(info.class);
            }
            if let Some(r) = rtt_ns.as_mut() {
                *r = rtt;
            }
        }
        Ok(())
    })
}
