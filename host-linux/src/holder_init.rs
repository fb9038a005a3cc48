//! What a tenant's holder does as pid 1 of the tenant's namespaces once it is
//! ready ([`crate::sys`] sets it up): it reaps the tenant's orphans, and when the
//! host asks it to stop (a SIGTERM from outside the tenant, as a host's shutdown
//! sends every process), it stops the tenant: SIGTERM to every process of the
//! namespace, [`STOP_GRACE`] for them to end, then it exits, and the kernel
//! kills what is left with it. (Before, pid 1 of a namespace ignored the
//! signal, having no handler, and a host's shutdown waited for the final SIGKILL,
//! 90 s later under systemd.)
//!
//! Invariants: only a SIGTERM sent with `kill` from outside the tenant's pid
//! namespace stops it (`SI_USER` with no sender pid in the namespace; a tenant
//! process cannot forge that: the kernel refuses `SI_USER` from `sigqueue`), so a
//! tenant's own processes cannot end their pid 1 that way; everything here is
//! async-signal-safe (the holder is a clone of a multi-threaded process).

#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};

/// How long the tenant's processes have to end after the stop's SIGTERM.
pub const STOP_GRACE: libc::time_t = 5;

/// Set by the handler when the host asked the holder to stop.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel hands a SA_SIGINFO handler a valid siginfo.
    let (code, sender) = unsafe { ((*info).si_code, (*info).si_pid()) };
    if code == libc::SI_USER && sender == 0 {
        STOP.store(true, Ordering::SeqCst);
    }
}

/// Installs the SIGTERM handler (without `SA_RESTART`, so that a wait returns).
fn handle_term() -> bool {
    // SAFETY: a zeroed sigaction is valid; sigemptyset and sigaction are given
    // pointers to it, and the handler is an `extern "C"` function of the right type.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_term as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut()) == 0
    }
}

fn now() -> libc::time_t {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec
}

fn nap() {
    let pause = libc::timespec {
        tv_sec: 0,
        tv_nsec: 50_000_000,
    };
    // SAFETY: nanosleep with a valid timespec and no remainder pointer.
    unsafe { libc::nanosleep(&pause, std::ptr::null_mut()) };
}

/// Pid 1 of the tenant until the adapter kills it, or the host asks it to stop.
pub fn run() -> ! {
    // Without the handler (it cannot fail with these arguments) the holder would
    // still reap; a host's shutdown would then wait for its final SIGKILL.
    let _ = handle_term();
    let mut stop_by = None;
    loop {
        if stop_by.is_none() && STOP.load(Ordering::SeqCst) {
            // SAFETY: kill(2) with integer arguments: every process of the namespace
            // but this one.
            unsafe { libc::kill(-1, libc::SIGTERM) };
            stop_by = Some(now() + STOP_GRACE);
        }
        let mut status = 0;
        let options = if stop_by.is_some() { libc::WNOHANG } else { 0 };
        // SAFETY: waitpid with a valid pointer to a local.
        let reaped = unsafe { libc::waitpid(-1, &mut status, options) };
        match stop_by {
            // Nothing left of the tenant, or its grace is over: this exit ends the
            // namespace (the kernel kills what remains).
            Some(by) if reaped < 0 || now() >= by => {
                // SAFETY: _exit(2) ends this process only.
                unsafe { libc::_exit(0) }
            }
            Some(_) if reaped == 0 => nap(),
            // No child yet, or a signal came: wait a little and look again.
            None if reaped < 0 => nap(),
            _ => {}
        }
    }
}
