//! The per-request path of every flavor does not allocate in steady state.
//!
//! A counting global allocator wraps the system one; each flavor serves
//! in-process (`kvio::serve`) while a client on another thread, which itself
//! never allocates once set up (frames built up front, responses read into a
//! fixed array), does 10,000 closed-loop puts and gets after a warm-up. Any
//! allocation anywhere in the process during that window fails the test. One
//! `#[test]` only, so the test harness runs nothing else meanwhile.
//!
//! Every driver with two loops (`kvio::serve_loops`, the sharded store:
//! epoll, busy-poll, uring) is measured too, with the client's requests
//! alternating between a connection on each loop.
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kvio::{Config, Flavor, Listener, Loops, Shutdown};
use kvio_proto::KeyValueMessage;
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

const WARM_UP: usize = 2_000;
const MEASURED: usize = 10_000;

fn frame(msg: &KeyValueMessage) -> Vec<u8> {
    let mut out = Vec::new();
    kvio_core::frame::encode_frame(&msg.encode_to_vec(), &mut out).unwrap();
    out
}

/// Request `i`: a put or a get over 100 keys.
fn request(i: usize) -> Vec<u8> {
    let key = format!("key-{}", i % 100);
    if i.is_multiple_of(2) {
        frame(&KeyValueMessage { key, value: format!("value-{}", i % 37), kind: 3, status: 0 })
    } else {
        frame(&KeyValueMessage { key, value: String::new(), kind: 1, status: 0 })
    }
}

/// Writes each request and reads its whole response frame into `buf`, with no allocation.
fn exchange(stream: &mut TcpStream, requests: &[Vec<u8>], buf: &mut [u8; 512]) {
    for req in requests {
        stream.write_all(req).unwrap();
        stream.read_exact(&mut buf[..4]).unwrap();
        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        assert!((5..=508).contains(&len), "response len {len}");
        stream.read_exact(&mut buf[4..4 + len]).unwrap();
        assert_eq!(&buf[len - 1..4 + len], b"@EOF@");
    }
}

fn allocations_while_serving(flavor: Flavor) -> usize {
    let config = Config { store_entries: 1024, store_bytes: 1 << 20, idle_timeout: None, ..Config::for_flavor(flavor) };
    let listener = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr();
    let shutdown = Shutdown::new().unwrap();
    let stop = shutdown.clone();
    let server = std::thread::spawn(move || kvio::serve(flavor, vec![listener], &config, &shutdown));

    let requests: Vec<Vec<u8>> = (0..WARM_UP + MEASURED).map(request).collect();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 512];
    exchange(&mut stream, &requests[..WARM_UP], &mut buf);
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    exchange(&mut stream, &requests[WARM_UP..], &mut buf);
    let after = ALLOCATIONS.load(Ordering::SeqCst);

    drop(stream);
    stop.trigger();
    let stats = server.join().unwrap().unwrap();
    assert_eq!(stats.requests, (WARM_UP + MEASURED) as u64, "{flavor}: every request answered");
    after - before
}

/// `flavor` with two loops: one connection on each (told apart by the
/// loops' connection counters), requests alternating between them.
fn allocations_while_serving_two_loops(flavor: Flavor) -> usize {
    let config = Config {
        store_entries: 1024,
        store_bytes: 1 << 20,
        max_frame_len: 4096,
        idle_timeout: None,
        ..Config::for_flavor(flavor)
    };
    let listeners = Listener::bind_many("127.0.0.1:0".parse().unwrap(), 2).unwrap();
    let addr = listeners[0].local_addr();
    let shutdown = Shutdown::new().unwrap();
    let stop = shutdown.clone();
    let loops = std::sync::Arc::new(Loops::new(2, false));
    let shared = std::sync::Arc::clone(&loops);
    let listeners = listeners.into_iter().map(|l| vec![l]).collect();
    let server = std::thread::spawn(move || kvio::serve_loops(flavor, listeners, &config, &shutdown, &shared));

    let requests: Vec<Vec<u8>> = (0..WARM_UP + MEASURED).map(request).collect();
    let connections = |loops: &Loops| [loops.stats(0).connections, loops.stats(1).connections];
    let mut streams: [Option<TcpStream>; 2] = [None, None];
    let mut buf = [0u8; 512];
    for _ in 0..200 {
        let before = connections(&loops);
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        // A round trip: the connection has surely been admitted by its loop.
        exchange(&mut stream, &requests[..1], &mut buf);
        let after = connections(&loops);
        let on = if after[0] != before[0] { 0 } else { 1 };
        assert_ne!(after[on], before[on], "no loop admitted the connection");
        streams[on].get_or_insert(stream);
        if streams.iter().all(Option::is_some) {
            break;
        }
    }
    let [Some(mut a), Some(mut b)] = streams else { panic!("200 connections did not reach both loops") };
    for pair in requests[..WARM_UP].chunks(2) {
        exchange(&mut a, &pair[..1], &mut buf);
        exchange(&mut b, &pair[1..], &mut buf);
    }
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for pair in requests[WARM_UP..].chunks(2) {
        exchange(&mut a, &pair[..1], &mut buf);
        exchange(&mut b, &pair[1..], &mut buf);
    }
    let after = ALLOCATIONS.load(Ordering::SeqCst);

    drop((a, b));
    stop.trigger();
    let stats = server.join().unwrap().unwrap();
    assert!(stats.requests >= (WARM_UP + MEASURED) as u64, "every request answered");
    assert!((0..2).all(|i| loops.stats(i).requests >= (WARM_UP / 2) as u64), "both loops served");
    after - before
}

#[test]
fn no_flavor_allocates_per_request() {
    let mut flavors = Flavor::ALL.to_vec();
    // A refused io_uring fails this, unless KVIO_URING_REFUSED says why.
    if !kvio::uring::runs_here("no_flavor_allocates_per_request on uring") {
        flavors.retain(|&f| f != Flavor::Uring);
    }
    let mut counts: Vec<(String, usize)> =
        flavors.iter().map(|&f| (f.to_string(), allocations_while_serving(f))).collect();
    for flavor in flavors.into_iter().filter(|&f| kvio::supports_threads(f)) {
        counts.push((format!("{flavor} --threads 2"), allocations_while_serving_two_loops(flavor)));
    }
    for (flavor, n) in &counts {
        eprintln!("{flavor}: {n} allocations over {MEASURED} requests");
    }
    assert!(counts.iter().all(|(_, n)| *n == 0), "allocations in steady state: {counts:?}");
}
