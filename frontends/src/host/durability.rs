//! `--data-dir` while the server runs: each loop's log file and the IO a
//! driver does for it between turns, the rewrite, and the figures
//! `/metrics` and `kvio stats` show.
//!
//! A loop's [`LogWriter`] (sans-IO) says what is owed; [`Durability::flush`]
//! does it with plain syscalls: `write` of the buffered records to the
//! loop's file, then `fdatasync` when a sync is due. One write and at most
//! one sync per turn, whatever the turn's number of writes (group commit).
//!
//! # The rewrite
//!
//! When the logs since the base snapshot pass [`REWRITE_MIN_BYTES`] and
//! the base's size (Redis's `auto-aof-rewrite-percentage 100`), a
//! background thread rewrites: it moves every loop to a new generation's
//! log (under that loop's file lock: the old file synced, the new one
//! created; a loop's next flush writes there, idle or not), then writes
//! the snapshot of that generation a slice at a time
//! ([`journaled::write_snapshot`]), commits it, and removes the older
//! files. A loop waits at most for one slice's shard lock or one switch.
//!
//! What it does not own: what is recorded ([`crate::host::journaled`]),
//! the naming rule ([`crate::host::data_dir`]), recovery.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::host::data_dir::{DataDir, DataDirError, Report};
use crate::host::journaled::{self, Journaled, lock};
use crate::host::sharded::ShardedStore;
use crate::sansio::log_writer::{Fsync, LogWriter};
use crate::sansio::recovery::Loaded;

/// Logs since the base smaller than this are never rewritten.
pub const REWRITE_MIN_BYTES: u64 = 64 << 20;

/// What `/metrics` and `kvio stats` show of the journal. All atomics:
/// written by the loops and the rewrite, read by the metrics thread.
#[derive(Debug, Default)]
pub struct JournalFigures {
    /// Bytes of the journal files now (base snapshot and logs).
    pub bytes: AtomicU64,
    /// Unix time (ms) of the last sync of any loop's log; 0: none yet.
    pub last_sync_ms: AtomicU64,
    /// Unix time (ms) the last rewrite committed; 0: none yet.
    pub last_rewrite_ms: AtomicU64,
    /// Rewrites committed.
    pub rewrites: AtomicU64,
    /// Write and sync errors (disk full, EIO).
    pub write_errors: AtomicU64,
    /// Loops whose log is failing now (their puts are refused).
    pub failing: AtomicU64,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One loop's file.
#[derive(Debug)]
struct LoopFile {
    file: File,
    /// Bytes in the file.
    size: u64,
    /// Whether this loop's writer was failing at its last flush.
    failing: bool,
}

/// The journal of a running server. See the [module docs](self).
#[derive(Debug)]
pub struct Durability {
    dir: DataDir,
    fsync: Fsync,
    /// The generation new log files get.
    generation: AtomicU64,
    /// The base snapshot's generation and size.
    base: Mutex<(u64, u64)>,
    loops: Box<[Mutex<Option<LoopFile>>]>,
    /// Shared with the metrics ([`crate::host::loops::Loops::set_journal`]).
    figures: Arc<JournalFigures>,
    stop: (Mutex<bool>, Condvar),
}

/// What a start read from the data directory.
#[derive(Debug)]
pub struct Started {
    /// The files, cuts and repairs.
    pub report: Report,
    /// What the store took.
    pub loaded: Loaded,
    /// How long reading and loading took.
    pub took: Duration,
    /// A snapshot written at start (after a repair), its generation.
    pub snapshot: Option<u64>,
}

impl Durability {
    /// Opens and locks `path`, recovers its state into `store` (refusing
    /// damage unless `repair`), and readies `loops` log files of a new
    /// generation. After a repair, a snapshot of what was kept is written
    /// first, so the next start needs no repair.
    pub fn open(
        path: &Path,
        fsync: Fsync,
        repair: bool,
        store: &ShardedStore,
        loops: usize,
        now_ms: u64,
    ) -> Result<(Durability, Started), DataDirError> {
        let started = Instant::now();
        let dir = DataDir::open(path)?;
        let (loaded, report) = dir.recover(repair, |r| {
            let mut s = store;
            r.load(&mut s, now_ms)
        })?;
        store.set_next_seq(report.max_seq + 1);
        let took = started.elapsed();
        let mut generation = report.newest + 1;
        let mut base = (report.base, 0);
        let mut snapshot = None;
        if !report.repaired.is_empty() {
            let (_, bytes) = journaled::write_snapshot(&dir, store, generation, || {})?;
            dir.remove_before(generation)?;
            (base, snapshot) = ((generation, bytes), Some(generation));
            generation += 1;
        } else {
            base.1 = dir.snapshot_bytes(report.base)?;
        }
        let durability = Durability {
            fsync,
            generation: AtomicU64::new(generation),
            base: Mutex::new(base),
            loops: (0..loops.max(1)).map(|_| Mutex::new(None)).collect(),
            figures: Arc::default(),
            stop: (Mutex::new(false), Condvar::new()),
            dir,
        };
        for index in 0..durability.loops.len() {
            let file = durability.dir.create_log(generation, index as u32)?;
            *durability.lock(index) =
                Some(LoopFile { file, size: kvio_core::journal::FILE_HEADER_LEN as u64, failing: false });
        }
        durability.figures.bytes.store(durability.dir.bytes_since(0)?, Ordering::Relaxed);
        Ok((durability, Started { report, loaded, took, snapshot }))
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Option<LoopFile>> {
        self.loops[index].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many loops' logs it keeps.
    pub fn loops(&self) -> usize {
        self.loops.len()
    }

    /// The policy.
    pub fn fsync(&self) -> Fsync {
        self.fsync
    }

    /// The directory.
    pub fn dir(&self) -> &DataDir {
        &self.dir
    }

    /// The figures.
    pub fn figures(&self) -> &JournalFigures {
        &self.figures
    }

    /// The figures, for a reader that outlives this borrow (the metrics).
    pub fn shared_figures(&self) -> Arc<JournalFigures> {
        Arc::clone(&self.figures)
    }

    /// A writer for loop `index`'s log, as its file stands.
    pub fn writer(&self, index: usize, now: Instant) -> LogWriter {
        let size = self.lock(index).as_ref().map_or(0, |f| f.size);
        LogWriter::new(self.fsync, size, now)
    }

    /// Loop `index`'s IO between turns: writes what `log` buffered and
    /// syncs if a sync is due (`all`: a stop, whatever the policy). On an
    /// error `log` fails (its puts are refused) and the count moves.
    pub fn flush(&self, index: usize, log: &mut LogWriter, now: Instant, all: bool) {
        let mut slot = self.lock(index);
        let Some(f) = slot.as_mut() else { return };
        let mut wrote = 0u64;
        loop {
            let bytes = log.to_write(now);
            if bytes.is_empty() {
                break;
            }
            match f.file.write(bytes) {
                Ok(0) => {
                    self.fail(log, &io::Error::from(io::ErrorKind::WriteZero), now);
                    break;
                }
                Ok(n) => {
                    log.wrote(n);
                    wrote += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(log, &e, now);
                    break;
                }
            }
        }
        f.size += wrote;
        self.figures.bytes.fetch_add(wrote, Ordering::Relaxed);
        let sync = log.sync_due(now) || (all && log.unsynced() && !log.has_buffered());
        if sync {
            match f.file.sync_data() {
                Ok(()) => {
                    log.synced(now);
                    self.figures.last_sync_ms.store(unix_ms(), Ordering::Relaxed);
                }
                Err(e) => self.fail(log, &e, now),
            }
        }
        let failing = log.failing().is_some();
        if failing != f.failing {
            f.failing = failing;
            if failing {
                self.figures.failing.fetch_add(1, Ordering::Relaxed);
            } else {
                self.figures.failing.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn fail(&self, log: &mut LogWriter, error: &io::Error, now: Instant) {
        log.failed(error, now);
        self.figures.write_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the logs since the base call for a rewrite (see the [module docs](self)).
    pub fn rewrite_due(&self) -> bool {
        let (base, base_bytes) = *self.base.lock().unwrap_or_else(|p| p.into_inner());
        let logs = self.dir.log_bytes_since(base).unwrap_or(0);
        logs >= REWRITE_MIN_BYTES.max(base_bytes)
    }

    /// Rewrites now: every loop onto a new generation's log, then that
    /// generation's snapshot of `store`, committed, and the older files
    /// removed. Returns the snapshot's records and bytes.
    pub fn rewrite(&self, store: &ShardedStore) -> Result<(u64, u64), DataDirError> {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        for index in 0..self.loops.len() {
            let mut slot = self.lock(index);
            if let Some(f) = slot.as_mut() {
                // What the old file holds must survive until the snapshot commits.
                let _ = f.file.sync_data();
            }
            let file = self.dir.create_log(generation, index as u32)?;
            let size = kvio_core::journal::FILE_HEADER_LEN as u64;
            *slot = Some(LoopFile { file, size, failing: slot.as_ref().is_some_and(|f| f.failing) });
        }
        let (records, bytes) = journaled::write_snapshot(&self.dir, store, generation, || {})?;
        self.dir.remove_before(generation)?;
        *self.base.lock().unwrap_or_else(|p| p.into_inner()) = (generation, bytes);
        self.figures.bytes.store(self.dir.bytes_since(0)?, Ordering::Relaxed);
        self.figures.last_rewrite_ms.store(unix_ms(), Ordering::Relaxed);
        self.figures.rewrites.fetch_add(1, Ordering::Relaxed);
        Ok((records, bytes))
    }

    /// The rewrite thread's body: checks once a second whether a rewrite
    /// is due and does it, until [`stop`](Self::stop). `report` hears of
    /// each rewrite's outcome.
    pub fn run_rewrites(&self, store: &ShardedStore, mut report: impl FnMut(Result<(u64, u64), DataDirError>)) {
        let (stopped, wake) = &self.stop;
        let mut stop = stopped.lock().unwrap_or_else(|p| p.into_inner());
        while !*stop {
            stop = wake.wait_timeout(stop, Duration::from_secs(1)).unwrap_or_else(|p| p.into_inner()).0;
            if !*stop && self.rewrite_due() {
                drop(stop);
                report(self.rewrite(store));
                stop = stopped.lock().unwrap_or_else(|p| p.into_inner());
            }
        }
    }

    /// Ends [`run_rewrites`](Self::run_rewrites).
    pub fn stop(&self) {
        *self.stop.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.stop.1.notify_all();
    }
}

/// What one loop keeps of the journal: its writer, shared between its
/// store ([`LoopJournal::store`]) and its driver, which
/// calls [`end_turn`](Self::end_turn) between turns,
/// [`poll_timeout`](Self::poll_timeout) before it sleeps and
/// [`finish`](Self::finish) at the stop.
#[derive(Debug)]
pub struct LoopJournal<'a> {
    durability: &'a Durability,
    index: usize,
    log: Mutex<LogWriter>,
}

/// What a turn's end did: the epoch that ended, and the newest epoch
/// whose answers may leave now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnEnd {
    /// The epoch the turn was (its answers wait for it).
    pub ended: u64,
    /// Every epoch up to this one is durable (per `--fsync`).
    pub durable: u64,
}

impl<'a> LoopJournal<'a> {
    /// Loop `index`'s journal, its file as [`Durability::open`] made it.
    pub fn new(durability: &'a Durability, index: usize, now: Instant) -> LoopJournal<'a> {
        LoopJournal { durability, index, log: Mutex::new(durability.writer(index, now)) }
    }

    /// `store`, with this loop's writes logged.
    pub fn store<'s>(&'s self, store: &'s ShardedStore) -> Journaled<'s> {
        Journaled::new(store, &self.log)
    }

    /// Ends the turn: its records written in one `write`, synced if a sync
    /// is due (one `fdatasync` for the whole turn).
    pub fn end_turn(&self, now: Instant) -> TurnEnd {
        let mut log = lock(&self.log);
        let ended = log.end_turn();
        self.durability.flush(self.index, &mut log, now, false);
        TurnEnd { ended, durable: log.durable() }
    }

    /// When the writer needs the loop next if nothing else wakes it (an
    /// `everysec` sync, a retry after an error).
    pub fn poll_timeout(&self) -> Option<Instant> {
        lock(&self.log).poll_timeout()
    }

    /// At the stop: everything written and synced, whatever the policy (a
    /// graceful stop loses nothing in any mode).
    pub fn finish(&self, now: Instant) {
        let mut log = lock(&self.log);
        log.end_turn();
        self.durability.flush(self.index, &mut log, now, true);
    }

    /// The writer (tests; the metrics read [`Durability::figures`]).
    pub fn log(&self) -> MutexGuard<'_, LogWriter> {
        lock(&self.log)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use kvio_core::KeyValueStore;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!("kvio-durability-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn store() -> ShardedStore {
        ShardedStore::with_shards(kvio_core::StoreLimits::for_frame(1 << 16, 1 << 14, 1 << 22), 8)
    }

    fn dump(store: &ShardedStore) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut state = BTreeMap::new();
        for shard in 0..store.shards() {
            let mut cursor = kvio_core::VisitCursor::default();
            while !store.visit_shard(shard, &mut cursor, 1000, |_, k, e| {
                state.insert(k.to_vec(), e.value.to_vec());
            }) {}
        }
        state
    }

    /// Two loops writing the same keys from two threads, rewrites in the
    /// middle, a stop that flushes: a restart (with another number of
    /// loops) has exactly the store's state, and a second server is refused
    /// while the first holds the directory.
    #[test]
    fn two_loops_and_rewrites_meanwhile_restart_to_the_same_state() {
        let tmp = TempDir::new("loops");
        let first = store();
        let (durability, started) = Durability::open(&tmp.0, Fsync::Always, false, &first, 2, 0).unwrap();
        assert_eq!(started.loaded.stored, 0);
        assert!(matches!(
            Durability::open(&tmp.0, Fsync::Always, false, &store(), 1, 0),
            Err(DataDirError::Locked { .. })
        ));
        std::thread::scope(|scope| {
            for index in 0..2 {
                let (d, first) = (&durability, &first);
                scope.spawn(move || {
                    let journal = LoopJournal::new(d, index, Instant::now());
                    let mut s = journal.store(first);
                    for i in 0..3000u32 {
                        let key = format!("k{}", i % 500);
                        if i % 7 == 0 {
                            s.delete(key.as_bytes());
                        } else {
                            s.put(key.as_bytes(), format!("{index}:{i}").as_bytes()).unwrap();
                        }
                        if i % 50 == 0 {
                            let turn = journal.end_turn(Instant::now());
                            assert!(turn.durable >= turn.ended, "always: durable at the turn's end");
                        }
                    }
                    journal.finish(Instant::now());
                    assert!(!journal.log().has_buffered() && !journal.log().unsynced());
                });
            }
            scope.spawn(|| {
                for _ in 0..3 {
                    durability.rewrite(&first).unwrap();
                }
            });
        });
        assert_eq!(durability.figures().rewrites.load(Ordering::Relaxed), 3);
        assert!(durability.figures().last_sync_ms.load(Ordering::Relaxed) > 0);
        let want = dump(&first);
        drop(durability);
        let second = store();
        let (_again, started) = Durability::open(&tmp.0, Fsync::EverySec, false, &second, 1, 0).unwrap();
        assert_eq!(dump(&second), want);
        assert_eq!(started.loaded.stored, want.len());
        assert!(started.report.torn.is_empty());
    }

    /// Disk full: the write fails (ENOSPC from /dev/full), puts are
    /// refused as not persisted while deletes go on, the figures say so;
    /// once the disk takes bytes again the retry writes every buffered
    /// record and puts are accepted again.
    #[test]
    fn a_full_disk_refuses_puts_until_a_retry_writes_everything() {
        let tmp = TempDir::new("full");
        let s = store();
        let (durability, _) = Durability::open(&tmp.0, Fsync::Always, false, &s, 1, 0).unwrap();
        let good = durability
            .lock(0)
            .as_mut()
            .map(|f| std::mem::replace(&mut f.file, File::options().write(true).open("/dev/full").unwrap()));
        let t0 = Instant::now();
        let log = Mutex::new(durability.writer(0, t0));
        let mut j = Journaled::new(&s, &log);
        j.put(b"a", b"1").unwrap();
        j.log().end_turn();
        durability.flush(0, &mut j.log(), t0, false);
        let figures = durability.figures();
        assert_eq!(j.log().failing().map(|f| f.errno), Some(Some(28)), "ENOSPC");
        assert_eq!((figures.write_errors.load(Ordering::Relaxed), figures.failing.load(Ordering::Relaxed)), (1, 1));
        assert_eq!(j.put(b"b", b"2"), Err(kvio_core::StoreError::NotPersisted));
        assert!(j.delete(b"a"), "a delete goes on; its answer waits");
        assert!({
            let l = lock(&log);
            l.durable() < l.turn()
        });
        // The disk has room again: the retry, a second later, writes both records.
        durability.lock(0).as_mut().unwrap().file = good.unwrap();
        durability.flush(0, &mut j.log(), t0 + Duration::from_millis(10), false);
        assert!(j.log().failing().is_some(), "no retry before its second");
        let t1 = t0 + Duration::from_secs(1);
        durability.flush(0, &mut j.log(), t1, false);
        assert!({
            let l = lock(&log);
            l.failing().is_none() && !l.has_buffered()
        });
        assert_eq!(figures.failing.load(Ordering::Relaxed), 0);
        j.put(b"b", b"2").unwrap();
        j.log().end_turn();
        durability.flush(0, &mut j.log(), t1, false);
        drop(durability);
        let again = store();
        Durability::open(&tmp.0, Fsync::Always, false, &again, 1, 0).unwrap();
        assert_eq!(dump(&again), [(b"b".to_vec(), b"2".to_vec())].into());
    }

    /// The rewrite thread rewrites once the logs pass the threshold and
    /// stops when asked.
    #[test]
    fn the_rewrite_thread_stops_when_asked() {
        let tmp = TempDir::new("thread");
        let s = store();
        let (durability, _) = Durability::open(&tmp.0, Fsync::No, false, &s, 1, 0).unwrap();
        assert!(!durability.rewrite_due(), "an empty log");
        std::thread::scope(|scope| {
            let runner = scope.spawn(|| durability.run_rewrites(&s, |r| panic!("no rewrite was due: {r:?}")));
            durability.stop();
            runner.join().unwrap();
        });
    }
}
