//! Frame parsing throughput: 1 KiB frames fed in 4 KiB reads.
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kvio_core::frame::{FrameParser, Parse, encode_frame};
use std::hint::black_box;

fn frames(count: usize, payload: usize) -> Vec<u8> {
    let mut out: heapless::Vec<u8, 2048> = heapless::Vec::new();
    let mut all = Vec::new();
    for i in 0..count {
        out.clear();
        encode_frame(&vec![i as u8; payload], &mut out).unwrap();
        all.extend_from_slice(&out);
    }
    all
}

fn parse(c: &mut Criterion) {
    let input = frames(1024, 1024); // 1 KiB payloads: frames straddle the 4 KiB reads
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("1KiB_frames_4KiB_reads", |b| {
        let mut buf = vec![0u8; 1 << 20];
        b.iter(|| {
            let mut parser = FrameParser::new(1 << 20);
            let mut total = 0usize;
            for read in input.chunks(4096) {
                let mut rest = read;
                while !rest.is_empty() {
                    let (used, status) = parser.push(rest, &mut buf[..]).unwrap();
                    if let Parse::Complete(p) = status {
                        total += p.len();
                    }
                    rest = &rest[used..];
                }
            }
            black_box(total)
        })
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
