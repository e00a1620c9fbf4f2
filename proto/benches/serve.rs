//! Requests/s through connection + handler + store on one core: small
//! put/get frames, pipelined, fed in 4 KiB reads as a socket would.
//!
//! Two key sets: 256 keys (the slot table and the records stay in L1) and
//! 10,000 keys visited in a scattered order, where a lookup's cache misses
//! show.
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
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

fn serve_keys(c: &mut Criterion, name: &str, keys: usize, step: usize) {
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
    let r = conn.receive(&fill, &mut scratch, &mut handler, &mut out);
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
                let r = conn.receive(read, &mut scratch, &mut handler, &mut out);
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

fn serve(c: &mut Criterion) {
    serve_keys(c, "small_put_get_pipelined", 256, 1);
    // 7,919 is prime, so the walk visits every one of the 10,000 keys, scattered.
    serve_keys(c, "10k_keys_put_get_pipelined", 10_000, 7_919);
}

criterion_group!(benches, serve);
criterion_main!(benches);
