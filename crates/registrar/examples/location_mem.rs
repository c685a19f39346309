//! Heap bytes per stored binding in the location store, counted exactly with
//! a counting allocator (RSS would include allocator-retained memory). The
//! queued binding changes are drained as they come, as the owner would (to
//! its database), so they are not counted.
//!
//! `cargo run --release -p registrar --example location_mem [N]`

use records::{Binding, Timestamp};
use registrar::{Change, Location, LocationStore};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let mut store = LocationStore::new();
    let before = LIVE.load(Ordering::Relaxed);
    for i in 0..n {
        let aor = format!("b{i:06}@test");
        let b = Binding {
            aor: aor.clone(),
            contact: format!("sip:b{i:06}@127.0.0.1:{};transport=UDP", 10000 + i % 50000),
            instance: None,
            reg_id: None,
            q: 1000,
            expires_at: Timestamp::from_micros(4_000_000_000_000_000),
            call_id: format!("{i}-12345@127.0.0.1"),
            cseq: 2,
            transport: "UDP".into(),
            source: "127.0.0.1:5070".parse().expect("addr"),
            local: "127.0.0.1:5060".parse().expect("addr"),
            user_agent: "SIPp".into(),
            node_id: String::new(),
            conn: None,
            unreachable: false,
        };
        store.apply(
            &aor,
            vec![Change::Upsert(Location { binding: b, conn: None, closed: false, via: None })],
        );
        while let Some(change) = store.poll_change() {
            std::hint::black_box(change);
        }
    }
    let after = LIVE.load(Ordering::Relaxed);
    println!(
        "bindings={n} heap_bytes={} bytes_per_binding={}",
        after - before,
        (after - before) / n as isize
    );
}
