//! The sans-IO server's timer structure at 10,000 connections: what a
//! sweep costs (every session looked at once, as `handle_timeout` does
//! when the earliest deadline passed), against what one request costs.
//! The lazy earliest deadline adds nothing per request; a heap or a wheel
//! would re-file the session's idle deadline on every request.
//!
//! `cargo bench -p kvio --bench server`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use kvio::memory::ClientMemory;
use kvio::sansio::server::{Handle, Limits, Places, Server, Shared};
use kvio::sansio::wire::{Protocol, Protocols};
use kvio::session::{Clock, Framing, Timing};
use kvio::sharded::{HostStore, host_store};
use kvio::stats::Counters;
use kvio_core::StoreLimits;
use kvio_core::frame::encode_frame;
use kvio_proto::{KeyValueMessage, Kind};
use prost::Message;

const CONNECTIONS: usize = 10_000;
const IDLE: Duration = Duration::from_secs(300);

fn get_frame() -> Vec<u8> {
    let msg = KeyValueMessage { key: "k".into(), value: String::new(), kind: Kind::Get.into(), status: 0 };
    let mut frame = Vec::new();
    encode_frame(&msg.encode_to_vec(), &mut frame).unwrap();
    frame
}

struct Fixture {
    places: Places,
    memory: ClientMemory,
    counters: Counters,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture { places: Places::default(), memory: ClientMemory::new(usize::MAX), counters: Counters::default() }
    }

    /// A server with 10,000 sessions accepted at `t0`, each answered one
    /// request at `t0 + 1 s` (so the deadline the server knows, `t0 + idle`,
    /// is earlier than every real one: the next `handle_timeout` sweeps).
    fn server(&self, t0: Instant) -> (Server<'_, Protocols<HostStore>>, Vec<Handle>) {
        let limits = Limits {
            framing: Framing { max_frame_len: 4096, output_limit: 65536 },
            timing: Timing::new(Some(IDLE)),
            clock: Clock::starting(t0, 0),
            // Setups share one count of places and never release theirs.
            max_connections: usize::MAX,
        };
        let shared = Shared {
            places: &self.places,
            memory: &self.memory,
            counters: &self.counters,
            security: &kvio::sansio::security::OPEN,
        };
        let store = host_store(StoreLimits::for_frame(4096, 1024, 1 << 20), 1024, 1 << 20);
        let mut server = Server::new(limits, shared, Protocols::new(store));
        let handles: Vec<Handle> = (0..CONNECTIONS).map(|_| server.accept(None, t0, Protocol::Kvio).unwrap()).collect();
        let frame = get_frame();
        for &h in &handles {
            server.received(h, &frame, t0 + Duration::from_secs(1));
            let n = server.transmit(h).len();
            server.advance(h, n, t0 + Duration::from_secs(1));
        }
        while server.poll_io().is_some() {}
        (server, handles)
    }
}

fn timers(c: &mut Criterion) {
    let fixture = Fixture::new();
    let t0 = Instant::now();
    c.bench_function("sweep of 10,000 sessions, none due", |b| {
        b.iter_batched(
            || fixture.server(t0).0,
            |mut server| {
                server.handle_timeout(black_box(t0 + IDLE));
                server
            },
            BatchSize::LargeInput,
        )
    });
    let (mut server, handles) = fixture.server(t0);
    let frame = get_frame();
    let mut i = 0;
    let mut now = t0 + Duration::from_secs(2);
    c.bench_function("one request among 10,000 sessions", |b| {
        b.iter(|| {
            let h = handles[i % CONNECTIONS];
            i += 1;
            now += Duration::from_nanos(1);
            server.received(h, black_box(&frame), now);
            let n = server.transmit(h).len();
            server.advance(h, n, now);
            while server.poll_io().is_some() {}
        })
    });
}

criterion_group!(benches, timers);
criterion_main!(benches);
