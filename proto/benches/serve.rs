//! Requests/s through connection + handler + store on one core: small
//! put/get frames, pipelined, fed in 4 KiB reads as a socket would.
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kvio_core::store::{Limits, Slot, Store};
use kvio_core::{Connection, Outcome};
use kvio_proto::{KeyValueHandler, KeyValueMessage};
use prost::Message;
use std::hint::black_box;

const REQUESTS: usize = 1024;

fn requests() -> Vec<u8> {
    let mut wire = Vec::new();
    for i in 0..REQUESTS {
        let key = format!("key-{:04}", i % 256);
        let msg = if i.is_multiple_of(2) {
            KeyValueMessage { key, value: format!("value-{i:08}"), kind: 3, status: 0 }
        } else {
            KeyValueMessage { key, value: String::new(), kind: 1, status: 0 }
        };
        kvio_core::frame::encode_frame(&msg.encode_to_vec(), &mut wire).unwrap();
    }
    wire
}

fn serve(c: &mut Criterion) {
    let input = requests();
    let max = kvio_core::DEFAULT_MAX_FRAME_LEN;
    let store = Store::with_storage(
        vec![Slot::EMPTY; 4096].into_boxed_slice(),
        vec![0u8; 1 << 20].into_boxed_slice(),
        Limits::for_frame(max, 4096, 1 << 20),
    );
    let mut handler = KeyValueHandler::new(store);
    let mut conn = Connection::new(max, 1 << 20);
    let mut scratch = Vec::new();
    let mut out = Vec::with_capacity(1 << 20);
    let mut group = c.benchmark_group("serve");
    group.throughput(Throughput::Elements(REQUESTS as u64));
    group.bench_function("small_put_get_pipelined", |b| {
        b.iter(|| {
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

criterion_group!(benches, serve);
criterion_main!(benches);
