//! The memory of an idle mailbox: one messaging service, `NEFELE_MAILBOXES`
//! (default 100,000) processes started on it and never sent to; prints the heap
//! bytes the service holds per process (counted by a global allocator that tracks
//! live bytes), so everything the service keeps for an idle process: the mailbox
//! and its entry in the service's maps.
//!
//! Run: `cargo bench -p nefele-core --bench idle_mailbox`.

use nefele_core::agent::Identity;
use nefele_core::messaging::{Messaging, MessagingConfig};
use nefele_core::service::{Context, Service, ServiceEvent, Start, TreeView};
use nefele_core::{Incarnation, NodeId, Pid, TenantId, Time};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn main() {
    let n: u32 = std::env::var("NEFELE_MAILBOXES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let node = NodeId(1);
    let me = Identity {
        node,
        incarnation: Incarnation(1),
    };
    let ctx = Context {
        me,
        tree: TreeView::empty(node),
        lives: None,
    };
    let mut messaging = Messaging::new(me, MessagingConfig::default(), 1);
    let now = Time::from_millis(1);
    let before = LIVE.load(Ordering::Relaxed);
    for i in 0..n {
        let started = ServiceEvent::ProcessStarted {
            pid: Pid::new(node, Incarnation(1), u64::from(i)),
            tenant: TenantId(1),
            start: Start::Spawned,
        };
        messaging.handle_event(now, &started, &ctx);
    }
    while messaging.poll_output().is_some() {}
    let after = LIVE.load(Ordering::Relaxed);
    println!(
        "idle_mailbox: {n} processes started, no mail: {:.1} heap bytes per process",
        (after - before) as f64 / f64::from(n)
    );
    drop(messaging);
}
