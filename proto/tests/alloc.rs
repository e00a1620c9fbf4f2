//! The request path does not allocate, from a cold start: 20,000 puts and
//! gets through connection + handler + store, the very first one included,
//! counted by a global allocator.
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use kvio_core::store::{Limits, Slot, Store};
use kvio_core::{Connection, Outcome};
use kvio_proto::{KeyValueHandler, KeyValueMessage};
use prost::Message;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn request(i: usize) -> Vec<u8> {
    let key = format!("key-{}", i % 500);
    let msg = if i.is_multiple_of(2) {
        KeyValueMessage { key, value: format!("value-{}", i % 977), kind: 3, status: 0 }
    } else {
        KeyValueMessage { key, value: String::new(), kind: 1, status: 0 }
    };
    let mut frame = Vec::new();
    kvio_core::frame::encode_frame(&msg.encode_to_vec(), &mut frame).unwrap();
    frame
}

#[test]
fn serving_does_not_allocate_from_the_first_request() {
    const N: usize = 10_000;
    let max = kvio_core::DEFAULT_MAX_FRAME_LEN;
    let store = Store::with_storage(
        vec![Slot::EMPTY; 1024].into_boxed_slice(),
        vec![0u8; 64 * 1024].into_boxed_slice(),
        Limits::for_frame(max, 1024, 64 * 1024),
    );
    let mut handler = KeyValueHandler::new(store);
    let mut conn = Connection::new(max, 64 * 1024);
    // Requests are made up front: only serving is counted.
    let frames: Vec<Vec<u8>> = (0..2 * N).map(request).collect();
    // The caller's buffers are made up front too (a device would use arrays).
    let mut payload_buf = vec![0u8; 256].into_boxed_slice();
    let mut out = Vec::with_capacity(64 * 1024);

    let mut serve = |frames: &[Vec<u8>]| {
        for frame in frames {
            // Deliver some frames whole and some split, as a socket would.
            let pieces: [&[u8]; 2] =
                if frame.len().is_multiple_of(3) { frame.split_at(5).into() } else { [frame, &[]] };
            for piece in pieces {
                let r = conn.receive(piece, 0, &mut payload_buf[..], &mut handler, &mut out);
                assert_eq!(r.outcome, Outcome::NeedMore);
            }
            assert!(!out.is_empty(), "every request is answered");
            out.clear();
        }
    };
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    serve(&frames); // no warm-up: the first request is counted
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(after - before, 0, "allocations while serving {} requests", 2 * N);
    assert_eq!(conn.requests(), 2 * N as u64);
    // The counter does count: one boxed value is one allocation.
    let boxed = std::hint::black_box(Box::new(after));
    assert_eq!(ALLOCATIONS.load(Ordering::Relaxed) - after, 1, "counter sees {boxed}");
}
