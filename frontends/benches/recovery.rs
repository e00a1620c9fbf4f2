//! Recovery of 1,000,000 keys with 16-byte values (issue 28's goal: under
//! one second): the same entries as a snapshot, and as logs of two loops
//! with every key written twice (no rewrite yet, the worst a start reads
//! before one). Prints the time to read, check and load each, and the
//! file sizes.
//!
//! `cargo bench -p kvio --bench recovery`

use std::io::Write;
use std::time::Instant;

use kvio::host::data_dir::DataDir;
use kvio::host::journaled::{Journaled, write_snapshot};
use kvio::sansio::log_writer::{Fsync, LogWriter};
use kvio::sharded::ShardedStore;
use kvio_core::{KeyValueStore, StoreLimits};

const KEYS: usize = 1_000_000;

fn store() -> ShardedStore {
    let limits = StoreLimits::for_frame(kvio_core::DEFAULT_MAX_FRAME_LEN, 2 * KEYS, 256 << 20);
    ShardedStore::new(limits, 2)
}

fn key(i: usize) -> String {
    format!("key:{i:07}")
}

/// Recovers `dir` into a fresh store; prints and returns the entries loaded.
fn recover(what: &str, dir: &DataDir) -> usize {
    let fresh = store();
    let started = Instant::now();
    let (loaded, report) = dir
        .recover(false, |r| {
            let mut s = &fresh;
            r.load(&mut s, 0)
        })
        .unwrap();
    let took = started.elapsed();
    println!(
        "{what}: {} entries from {} files, {:.1} MB, {} records, in {:.3} s ({:.0} ns an entry)",
        loaded.stored,
        report.files,
        report.bytes as f64 / 1e6,
        report.records,
        took.as_secs_f64(),
        took.as_nanos() as f64 / loaded.stored as f64
    );
    assert_eq!(fresh.len(), KEYS);
    loaded.stored
}

fn main() {
    let path = std::env::temp_dir().join(format!("kvio-bench-recovery-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    {
        let dir = DataDir::open(&path).unwrap();
        let source = store();
        // Two loops' logs, every key written twice (the second value wins).
        for (index, round) in [(0u32, 0u8), (1, 1)] {
            let mut file = dir.create_log(1, index).unwrap();
            let log = std::sync::Mutex::new(LogWriter::new(Fsync::No, 16, Instant::now()));
            let mut s = Journaled::new(&source, &log);
            for i in 0..KEYS {
                s.put(key(i).as_bytes(), &[b'a' + round; 16]).unwrap();
                if i % 4096 == 0 {
                    let n = s.log().to_write(Instant::now()).len();
                    file.write_all(s.log().to_write(Instant::now())).unwrap();
                    s.log().wrote(n);
                }
            }
            let n = s.log().to_write(Instant::now()).len();
            file.write_all(s.log().to_write(Instant::now())).unwrap();
            s.log().wrote(n);
            file.sync_all().unwrap();
        }
        recover("logs only (2 x 1M puts)", &dir);
        let started = Instant::now();
        let (records, bytes) = write_snapshot(&dir, &source, 2, || {}).unwrap();
        println!(
            "snapshot written: {records} records, {:.1} MB, in {:.3} s",
            bytes as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
        dir.remove_before(2).unwrap();
    }
    let dir = DataDir::open(&path).unwrap();
    recover("snapshot", &dir);
    drop(dir);
    let _ = std::fs::remove_dir_all(&path);
}
