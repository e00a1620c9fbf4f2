//! The pause bound, measured: each put's service time on a full, churning,
//! evicting 64 MiB store against the same operations on a store that never
//! fills (an arena as big as everything ever written, so nothing is ever
//! reclaimed or evicted). The two run interleaved, operation by operation,
//! so the shared machine's noise falls on both alike. Prints p50, p99,
//! p99.9 and max of each, their ratios, the most bytes one put moved and
//! entries it evicted, and the store's bytes per entry at 1,000,000 small
//! keys.
//!
//! Two clocks: wall time (`Instant`), which on a loaded machine also counts
//! the time the thread was preempted, and the thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`, a syscall of a few hundred ns that shifts
//! both stores' figures alike), which counts only the put's own work: its
//! max is the longest any put worked, reclaiming included.
//!
//! `cargo bench -p kvio-core --bench churn` (`KVIO_CHURN_PUTS` puts measured,
//! 150,000 by default).

use std::hint::black_box;
use std::time::Instant;

use kvio_core::store::{Limits, Slot, Store, WhenFull, slots_for};

type BoxStore = Store<Box<[Slot]>, Box<[u8]>>;

const STORE_BYTES: usize = 64 << 20;
const MAX_VALUE: usize = 4096;
/// Four times as many keys as fit (values average ~2 KiB).
const KEYS: usize = 4 * STORE_BYTES / (12 + 12 + 8 + MAX_VALUE / 2);
/// Puts before measuring: enough to fill the churning store and go round its ring.
const WARM_UP_PUTS: usize = 80_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Clone, Copy)]
enum Op {
    Put { k: u32, len: u32 },
    Get { k: u32 },
    Delete { k: u32 },
}

/// The churn test's mix: 50 % puts (new keys and updates to other sizes),
/// 10 % deletes, 40 % gets, over `KEYS` keys.
fn ops(puts: usize) -> Vec<Op> {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut ops = Vec::with_capacity(puts * 2 + 16);
    let mut n = 0;
    while n < puts {
        let k = rng.below(KEYS) as u32;
        match rng.below(100) {
            0..50 => {
                ops.push(Op::Put { k, len: 8 + rng.below(MAX_VALUE) as u32 });
                n += 1;
            }
            50..60 => ops.push(Op::Delete { k }),
            _ => ops.push(Op::Get { k }),
        }
    }
    ops
}

fn key(k: u32, buf: &mut [u8; 16]) -> &[u8] {
    buf[..4].copy_from_slice(b"key:");
    buf[4..12].copy_from_slice(&u64::from(k).to_le_bytes());
    &buf[..12]
}

/// A store over touched memory (no page faults while measuring).
fn store(entries: usize, bytes: usize, policy: WhenFull) -> BoxStore {
    let slots = vec![Slot::EMPTY; slots_for(entries)].into_boxed_slice();
    let mut arena = vec![0u8; bytes].into_boxed_slice();
    arena.fill(1);
    Store::with_storage(slots, arena, Limits::for_frame(1 << 20, entries, bytes)).when_full(policy)
}

struct Times(Vec<u64>);

impl Times {
    fn quantile(&self, q: f64) -> u64 {
        self.0[((self.0.len() as f64 * q) as usize).min(self.0.len() - 1)]
    }

    fn line(&mut self, name: &str) -> [u64; 4] {
        self.0.sort_unstable();
        let q = [self.quantile(0.5), self.quantile(0.99), self.quantile(0.999), *self.0.last().unwrap()];
        println!(
            "{name:<34} puts={:<8} p50={:>6} ns  p99={:>6} ns  p99.9={:>7} ns  max={:>8} ns",
            self.0.len(),
            q[0],
            q[1],
            q[2],
            q[3]
        );
        q
    }
}

/// Applies `op`; for a put, the bytes it moved and the entries it evicted.
fn apply(store: &mut BoxStore, op: Op, value: &[u8], times: Option<&mut Vec<(u64, u64)>>) -> (u64, u64) {
    let mut buf = [0u8; 16];
    match op {
        Op::Put { k, len } => {
            let key = key(k, &mut buf);
            let (moved, evicted) = (store.bytes_moved(), store.evictions());
            let cpu = cpu_ns();
            let start = Instant::now();
            let put = store.put(key, &value[..len as usize]);
            let took = start.elapsed().as_nanos() as u64;
            let took = (took, cpu_ns() - cpu);
            assert_eq!(put, Ok(()), "no put is refused");
            if let Some(times) = times {
                times.push(took);
            }
            return (store.bytes_moved() - moved, store.evictions() - evicted);
        }
        Op::Get { k } => {
            let key = key(k, &mut buf);
            black_box(kvio_core::KeyValueStore::get(store, key, |v| v.map(<[u8]>::len)));
        }
        Op::Delete { k } => {
            black_box(store.delete(key(k, &mut buf)));
        }
    }
    (0, 0)
}

/// This thread's CPU time.
fn cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let puts: usize = std::env::var("KVIO_CHURN_PUTS").ok().and_then(|s| s.parse().ok()).unwrap_or(150_000);
    let ops = ops(WARM_UP_PUTS + puts);
    let value: Vec<u8> = (0..MAX_VALUE + 16).map(|i| b'a' + (i % 26) as u8).collect();
    let written: usize =
        ops.iter().map(|op| if let Op::Put { len, .. } = op { 12 + 12 + *len as usize } else { 0 }).sum();
    let mut churning = store(1_000_000, STORE_BYTES, WhenFull::Evict);
    let mut roomy = store(KEYS + 1, written + (1 << 20), WhenFull::Refuse);
    let (mut full_times, mut roomy_times) = (Vec::with_capacity(puts), Vec::with_capacity(puts));
    let (mut most_moved, mut most_evicted) = (0, 0);
    let mut seen = 0;
    for op in ops {
        let measure = seen >= WARM_UP_PUTS;
        if let Op::Put { .. } = op {
            seen += 1;
        }
        let (moved, evicted) = apply(&mut churning, op, &value, measure.then_some(&mut full_times));
        (most_moved, most_evicted) = (most_moved.max(moved), most_evicted.max(evicted));
        apply(&mut roomy, op, &value, measure.then_some(&mut roomy_times));
    }
    assert_eq!(roomy.evictions() + roomy.bytes_moved(), 0, "the roomy store never reclaims");
    println!(
        "churn over {KEYS} keys (4x what fits), values 8..{} B, 50 % puts / 10 % deletes / 40 % gets, {WARM_UP_PUTS} puts of warm-up",
        8 + MAX_VALUE
    );
    for (clock, pick) in [("wall", 0), ("cpu", 1)] {
        let times = |all: &[(u64, u64)]| Times(all.iter().map(|t| if pick == 0 { t.0 } else { t.1 }).collect());
        let full = times(&full_times).line(&format!("{clock}: full, churning (64 MiB)"));
        let never = times(&roomy_times).line(&format!("{clock}: never full"));
        println!(
            "{clock}: ratio full/never-full: p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            full[0] as f64 / never[0] as f64,
            full[1] as f64 / never[1] as f64,
            full[2] as f64 / never[2] as f64,
            full[3] as f64 / never[3] as f64
        );
    }
    println!(
        "churning store: {} entries, {} evictions, {} compactions; one put moved at most {most_moved} bytes and evicted at most {most_evicted} entries",
        churning.len(),
        churning.evictions(),
        churning.compactions()
    );
    drop((churning, roomy));
    bytes_per_entry();
}

/// Slot table + arena per entry at 1,000,000 keys of 16-byte values
/// (keys `key:` + 8 bytes, 12 bytes), the store sized for exactly them.
fn bytes_per_entry() {
    const N: usize = 1_000_000;
    let record = 12 + 12 + 16;
    for (policy, arena) in [(WhenFull::Refuse, N * record), (WhenFull::Evict, N * record * 16 / 15 + 16)] {
        let mut s = store(N, arena, policy);
        let mut buf = [0u8; 16];
        for k in 0..N as u32 {
            s.put(key(k, &mut buf), &[7u8; 16]).unwrap();
        }
        assert_eq!((s.len(), s.evictions()), (N, 0));
        let table = slots_for(N) * std::mem::size_of::<Slot>();
        println!(
            "bytes per entry at {N} keys, 16-byte values, {policy:?}: slot table {:.1} + arena {:.1} = {:.1}",
            table as f64 / N as f64,
            arena as f64 / N as f64,
            (table + arena) as f64 / N as f64
        );
    }
}
