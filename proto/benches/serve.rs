//! Requests/s through connection + handler + store on one core: small
//! put/get frames, pipelined, fed in 4 KiB reads as a socket would.
//!
//! Two key sets: 256 keys (the slot table and the records stay in L1) and
//! 10,000 keys visited in a scattered order, where a lookup's cache misses
//! show.
//!
//! `KVIO_BENCH_CPU_TIME=1` measures the thread's CPU time instead of wall
//! time: on a machine shared with other jobs, wall time also counts the time
//! the bench waited for a core.
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{Criterion, Throughput};
use kvio_core::store::{Limits, Slot, Store};
use kvio_core::{Connection, Outcome};
use kvio_proto::{KeyValueHandler, KeyValueMessage};
use prost::Message;
use std::hint::black_box;

const REQUESTS: usize = 1024;

fn frame(wire: &mut Vec<u8>, key: String, i: usize) {
    let msg = if i.is_multiple_of(2) {
        KeyValueMessage { key, value: format!("value-{i:08}"), kind: 3, status: 0 }
    } else {
        KeyValueMessage { key, value: String::new(), kind: 1, status: 0 }
    };
    kvio_core::frame::encode_frame(&msg.encode_to_vec(), wire).unwrap();
}

fn serve_keys<M: Measurement>(c: &mut Criterion<M>, name: &str, keys: usize, step: usize) {
    let max = kvio_core::DEFAULT_MAX_FRAME_LEN;
    let slots = (keys * 2).next_power_of_two().max(4096);
    let store = Store::with_storage(
        vec![Slot::EMPTY; slots].into_boxed_slice(),
        vec![0u8; 4 << 20].into_boxed_slice(),
        Limits::for_frame(max, slots, 4 << 20),
    );
    let mut handler = KeyValueHandler::new(store);
    let mut conn = Connection::new(max, 1 << 20);
    let mut scratch = Vec::new();
    let mut out = Vec::with_capacity(1 << 20);
    // Every key is stored before timing starts, so the store is at its size.
    let mut fill = Vec::new();
    for k in 0..keys {
        frame(&mut fill, format!("key-{k:05}"), 0);
    }
    let r = conn.receive(&fill, 0, &mut scratch, &mut handler, &mut out);
    assert_eq!((r.outcome, r.requests), (Outcome::NeedMore, keys));
    out.clear();
    // Batches of alternating put k / get k, going round the key set (key
    // `n * step % keys` for the n-th pair), one batch per iteration.
    let batches: Vec<Vec<u8>> = (0..keys.div_ceil(REQUESTS / 2))
        .map(|b| {
            let mut wire = Vec::new();
            for i in 0..REQUESTS {
                frame(&mut wire, format!("key-{:05}", ((b * REQUESTS + i) / 2 * step) % keys), i);
            }
            wire
        })
        .collect();
    let mut next = 0;
    let mut group = c.benchmark_group("serve");
    group.throughput(Throughput::Elements(REQUESTS as u64));
    group.bench_function(name, |b| {
        b.iter(|| {
            let input = &batches[next];
            next = (next + 1) % batches.len();
            let mut served = 0;
            for read in input.chunks(4096) {
                let r = conn.receive(read, 0, &mut scratch, &mut handler, &mut out);
                assert_eq!(r.outcome, Outcome::NeedMore);
                served += r.requests;
            }
            black_box(&out);
            out.clear();
            served
        })
    });
    group.finish();
}

fn serve<M: Measurement>(c: &mut Criterion<M>) {
    serve_keys(c, "small_put_get_pipelined", 256, 1);
    // 7,919 is prime, so the walk visits every one of the 10,000 keys, scattered.
    serve_keys(c, "10k_keys_put_get_pipelined", 10_000, 7_919);
}

/// The calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), in the units
/// and formats of wall time.
struct ThreadCpuTime;

fn thread_cpu_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_now()
    }

    fn end(&self, start: Duration) -> Duration {
        thread_cpu_now() - start
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

fn main() {
    if std::env::var_os("KVIO_BENCH_CPU_TIME").is_some() {
        let mut c = Criterion::default().with_measurement(ThreadCpuTime).configure_from_args();
        serve(&mut c);
        c.final_summary();
    } else {
        let mut c = Criterion::default().configure_from_args();
        serve(&mut c);
        c.final_summary();
    }
}
