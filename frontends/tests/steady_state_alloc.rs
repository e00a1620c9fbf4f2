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
//!
//! RESP and the memcached protocol are measured the same way, on every
//! flavor that serves them (blocking: a server with that one listener),
//! with one loop and with two: `SET` (with and without `EX`), `GET` and
//! `MGET`; `set` with flags, `get` of one and of two keys, `mg` with
//! `v f s k t`, `ms` with `F`. The test keeps its own map of what it
//! stored, so each reply is known in full before it is read, and checked
//! byte for byte: an answer that went wrong fails the test as well as an
//! allocation does.
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kvio::sansio::wire::Protocol;
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

/// One request and what comes back.
struct Exchange {
    request: Vec<u8>,
    /// The whole reply (RESP, memcached); `None`: a kvio frame, read by
    /// its length header.
    reply: Option<Vec<u8>>,
}

/// Request `i` over kvio frames: a put or a get over 100 keys.
fn kvio_request(i: usize) -> Exchange {
    let key = format!("key-{}", i % 100);
    let request = if i.is_multiple_of(2) {
        frame(&KeyValueMessage { key, value: format!("value-{}", i % 37), kind: 3, status: 0 })
    } else {
        frame(&KeyValueMessage { key, value: String::new(), kind: 1, status: 0 })
    };
    Exchange { request, reply: None }
}

fn bulk(v: Option<&String>) -> String {
    v.map_or("$-1\r\n".to_owned(), |v| format!("${}\r\n{v}\r\n", v.len()))
}

/// `n` RESP requests over 100 keys, in turn `SET`, `GET`, `MGET` of two
/// keys, `SET .. EX` (a day: the store's expiry path, nothing expires),
/// multibulk as clients send them, each with the reply Redis would give.
fn resp_script(n: usize) -> Vec<Exchange> {
    let mut stored: HashMap<String, String> = HashMap::new();
    let command = |args: &[&str]| {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out += &format!("${}\r\n{a}\r\n", a.len());
        }
        out.into_bytes()
    };
    (0..n)
        .map(|i| {
            let key = format!("r-{}", i % 100);
            let value = format!("value-{}", i % 37);
            let (request, reply) = match i % 4 {
                0 => (command(&["SET", &key, &value]), "+OK\r\n".to_owned()),
                1 => (command(&["GET", &key]), bulk(stored.get(&key))),
                2 => {
                    let other = format!("r-{}", (i + 1) % 100);
                    let reply = format!("*2\r\n{}{}", bulk(stored.get(&key)), bulk(stored.get(&other)));
                    (command(&["MGET", &key, &other]), reply)
                }
                _ => (command(&["SET", &key, &value, "EX", "86400"]), "+OK\r\n".to_owned()),
            };
            if matches!(i % 4, 0 | 3) {
                stored.insert(key, value);
            }
            Exchange { request, reply: Some(reply.into_bytes()) }
        })
        .collect()
}

/// `n` memcached requests over 100 keys, in turn `set` with flags, `get`,
/// `mg k v f s k t`, `ms` with `F`, `get` of two keys, each with the reply
/// memcached would give.
fn memcache_script(n: usize) -> Vec<Exchange> {
    let mut stored: HashMap<String, (String, u32)> = HashMap::new();
    let value_block = |key: &str, stored: &HashMap<String, (String, u32)>| {
        stored.get(key).map_or(String::new(), |(v, f)| format!("VALUE {key} {f} {}\r\n{v}\r\n", v.len()))
    };
    (0..n)
        .map(|i| {
            let key = format!("m-{}", i % 100);
            let value = format!("value-{}", i % 37);
            let flags = (i % 5) as u32;
            let (request, reply) = match i % 5 {
                0 => (format!("set {key} {flags} 0 {}\r\n{value}\r\n", value.len()), "STORED\r\n".to_owned()),
                1 => (format!("get {key}\r\n"), format!("{}END\r\n", value_block(&key, &stored))),
                2 => {
                    let reply = match stored.get(&key) {
                        Some((v, f)) => format!("VA {} f{f} s{} k{key} t-1\r\n{v}\r\n", v.len(), v.len()),
                        None => "EN\r\n".to_owned(),
                    };
                    (format!("mg {key} v f s k t\r\n"), reply)
                }
                3 => (format!("ms {key} {} F{flags}\r\n{value}\r\n", value.len()), "HD\r\n".to_owned()),
                _ => {
                    let other = format!("m-{}", (i + 1) % 100);
                    let reply = format!("{}{}END\r\n", value_block(&key, &stored), value_block(&other, &stored));
                    (format!("get {key} {other}\r\n"), reply)
                }
            };
            if matches!(i % 5, 0 | 3) {
                stored.insert(key, (value, flags));
            }
            Exchange { request: request.into_bytes(), reply: Some(reply.into_bytes()) }
        })
        .collect()
}

/// The first `n` requests (warm-up and measured) of `protocol`.
fn script(protocol: Protocol, n: usize) -> Vec<Exchange> {
    match protocol {
        Protocol::Kvio => (0..n).map(kvio_request).collect(),
        Protocol::Resp => resp_script(n),
        Protocol::Memcache => memcache_script(n),
    }
}

/// Writes each request and reads its whole reply into `buf`, with no
/// allocation: a kvio frame by its length, the others by the known reply,
/// which must be the one read.
fn exchange(stream: &mut TcpStream, exchanges: &[Exchange], buf: &mut [u8; 512]) {
    for ex in exchanges {
        stream.write_all(&ex.request).unwrap();
        match &ex.reply {
            None => {
                stream.read_exact(&mut buf[..4]).unwrap();
                let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                assert!((5..=508).contains(&len), "response len {len}");
                stream.read_exact(&mut buf[4..4 + len]).unwrap();
                assert_eq!(&buf[len - 1..4 + len], b"@EOF@");
            }
            Some(reply) => {
                let got = &mut buf[..reply.len()];
                stream.read_exact(got).unwrap();
                assert!(
                    got == &reply[..],
                    "{:?} answered {:?}, not {:?}",
                    String::from_utf8_lossy(&ex.request),
                    String::from_utf8_lossy(got),
                    String::from_utf8_lossy(reply)
                );
            }
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// The listeners a server of `flavor` gets to serve `protocol`: blocking
/// serves one listener only, so that one; every other flavor serves kvio
/// frames beside the protocol under test, as `kvio serve --resp` does.
fn listeners_for(flavor: Flavor, protocol: Protocol, n: usize) -> (Vec<Vec<Listener>>, SocketAddr) {
    let bind = |protocol| {
        let bound = Listener::bind_many("127.0.0.1:0".parse().unwrap(), n).unwrap();
        bound.into_iter().map(|l| l.speaking(protocol)).collect::<Vec<_>>()
    };
    let tested = bind(protocol);
    let addr = tested[0].local_addr();
    let mut per_loop: Vec<Vec<Listener>> = tested.into_iter().map(|l| vec![l]).collect();
    if flavor != Flavor::Blocking && protocol != Protocol::Kvio {
        for (mine, kvio) in per_loop.iter_mut().zip(bind(Protocol::Kvio)) {
            mine.insert(0, kvio);
        }
    }
    (per_loop, addr)
}

fn config(flavor: Flavor, protocol: Protocol) -> Config {
    Config {
        store_entries: 1024,
        store_bytes: 1 << 20,
        max_frame_len: 4096,
        idle_timeout: None,
        // What `kvio serve --memcache` turns on (memcached's cas per entry).
        store_cas: protocol == Protocol::Memcache,
        ..Config::for_flavor(flavor)
    }
}

fn allocations_while_serving(flavor: Flavor, protocol: Protocol) -> usize {
    let config = config(flavor, protocol);
    let (mut listeners, addr) = listeners_for(flavor, protocol, 1);
    let listeners = listeners.remove(0);
    let shutdown = Shutdown::new().unwrap();
    let stop = shutdown.clone();
    let server = std::thread::spawn(move || kvio::serve(flavor, listeners, &config, &shutdown));

    let requests = script(protocol, WARM_UP + MEASURED);
    let mut stream = connect(addr);
    let mut buf = [0u8; 512];
    exchange(&mut stream, &requests[..WARM_UP], &mut buf);
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    exchange(&mut stream, &requests[WARM_UP..], &mut buf);
    let after = ALLOCATIONS.load(Ordering::SeqCst);

    drop(stream);
    stop.trigger();
    let stats = server.join().unwrap().unwrap();
    assert_eq!(stats.requests, (WARM_UP + MEASURED) as u64, "{flavor} {protocol:?}: every request answered");
    after - before
}

/// `flavor` with two loops: one connection on each (told apart by the
/// loops' connection counters), requests alternating between them.
fn allocations_while_serving_two_loops(flavor: Flavor, protocol: Protocol) -> usize {
    let config = config(flavor, protocol);
    let (listeners, addr) = listeners_for(flavor, protocol, 2);
    let shutdown = Shutdown::new().unwrap();
    let stop = shutdown.clone();
    let loops = std::sync::Arc::new(Loops::new(2, false));
    let shared = std::sync::Arc::clone(&loops);
    let server = std::thread::spawn(move || kvio::serve_loops(flavor, listeners, &config, &shutdown, &shared));

    let requests = script(protocol, WARM_UP + MEASURED);
    let connections = |loops: &Loops| [loops.stats(0).connections, loops.stats(1).connections];
    let mut streams: [Option<TcpStream>; 2] = [None, None];
    let mut buf = [0u8; 512];
    for _ in 0..200 {
        let before = connections(&loops);
        let mut stream = connect(addr);
        // A round trip: the connection has surely been admitted by its loop.
        // (The first request again: a put of what the script puts first.)
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
    let mut counts: Vec<(String, usize)> = Vec::new();
    for protocol in Protocol::ALL {
        for &flavor in &flavors {
            counts.push((format!("{flavor} {protocol:?}"), allocations_while_serving(flavor, protocol)));
        }
        for &flavor in flavors.iter().filter(|&&f| kvio::supports_threads(f)) {
            let n = allocations_while_serving_two_loops(flavor, protocol);
            counts.push((format!("{flavor} --threads 2 {protocol:?}"), n));
        }
    }
    for (server, n) in &counts {
        eprintln!("{server}: {n} allocations over {MEASURED} requests");
    }
    assert!(counts.iter().all(|(_, n)| *n == 0), "allocations in steady state: {counts:?}");
}
