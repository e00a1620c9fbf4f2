//! The store as a loop sees it under `--data-dir`: every write that
//! changed an entry is recorded in the loop's [`LogWriter`], with a
//! sequence number taken under the key's shard lock, in the same lock hold
//! as the write itself (so per key, the log's order is the store's). And
//! the snapshot a rewrite writes while the loops serve.
//!
//! What is recorded: the entry as the write left it (a put of its value,
//! flags, expiry and text mark; concat and incr are puts of what they
//! produced), a delete when it is gone (a delete, or a put or touch whose
//! expiry had passed), an expiry change for a touch. Not recorded:
//! evictions (`--when-full evict`: an evicted entry may come back after a
//! restart, as its latest written value) and lazy expiry (recovery drops
//! what expired).
//!
//! While the writer is failing (disk full, EIO), puts, concats and incrs
//! are refused as [`StoreError::NotPersisted`] before they touch the
//! store; deletes and touches go on and their answers wait with the
//! turn's until the records are written.
//!
//! What it does not own: the files (the driver writes [`LogWriter`]'s
//! bytes to its log; [`crate::host::data_dir`] names them), when to sync.

use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use kvio_core::journal::{Op, Record};
use kvio_core::{Entry, Expiry, KeyValueStore, Millis, PutOptions, StoreError, VisitCursor, WhenFull};

use crate::host::data_dir::{DataDir, DataDirError};
use crate::host::observed::{Fill, Filled};
use crate::host::sharded::ShardedStore;
use crate::sansio::log_writer::LogWriter;

/// A sharded store whose writes go to `log`. See the [module docs](self).
///
/// The writer is shared (a `Mutex`, locked for one operation at a time,
/// uncontended in a loop): the store appends to it, the driver writes and
/// syncs its bytes between turns ([`crate::host::durability::LoopJournal`]);
/// the threaded flavor's connection threads share a few of them.
#[derive(Debug)]
pub struct Journaled<'a> {
    store: &'a ShardedStore,
    log: &'a Mutex<LogWriter>,
}

impl<'a> Journaled<'a> {
    /// `store`, logging to `log`.
    pub fn new(store: &'a ShardedStore, log: &'a Mutex<LogWriter>) -> Self {
        Journaled { store, log }
    }

    /// The loop's writer, locked.
    pub fn log(&self) -> MutexGuard<'a, LogWriter> {
        lock(self.log)
    }

    /// The store.
    pub fn store(&self) -> &'a ShardedStore {
        self.store
    }

    fn refuse_if_failing(&self) -> Result<(), StoreError> {
        match lock(self.log).failing() {
            Some(_) => Err(StoreError::NotPersisted),
            None => Ok(()),
        }
    }
}

/// `log`, locked (a panic elsewhere leaves it usable: each append is whole).
pub fn lock(log: &Mutex<LogWriter>) -> MutexGuard<'_, LogWriter> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

/// The record for a write of `key` that left `entry` (None: gone).
fn append(log: &mut LogWriter, seq: u64, key: &[u8], entry: Option<Entry<'_>>, touch: bool) {
    let op = match entry {
        None => Op::Delete,
        Some(e) if touch => Op::Touch { expires: e.expires },
        Some(e) => Op::Put { value: e.value, flags: e.flags, expires: e.expires, text: e.text },
    };
    if let Err(e) = log.append(&Record { seq, key, op }) {
        // Only a record over 1 GiB: the configuration bounds values below it.
        log.failed(&std::io::Error::other(e), Instant::now());
    }
}

impl KeyValueStore for Journaled<'_> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.refuse_if_failing()?;
        let (store, log) = (self.store, self.log);
        store.write_logged(
            key,
            |s| s.put(key, value),
            Result::is_ok,
            |seq, e| append(&mut lock(log), seq, key, e, false),
        )
    }

    fn get<R>(&mut self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        self.store.get(key, f)
    }

    fn delete(&mut self, key: &[u8]) -> bool {
        self.delete_at(key, 0)
    }

    fn get_entry<R>(&mut self, key: &[u8], now: Millis, f: impl FnOnce(Option<Entry<'_>>) -> R) -> R {
        let mut store = self.store;
        store.get_entry(key, now, f)
    }

    fn put_with<R>(
        &mut self,
        key: &[u8],
        value: &[u8],
        opts: PutOptions,
        now: Millis,
        old: impl FnOnce(Option<Entry<'_>>) -> R,
    ) -> (R, Result<u64, StoreError>) {
        if let Err(e) = self.refuse_if_failing() {
            // The old entry still answers (Redis SET .. GET), nothing written.
            let mut store = self.store;
            return (store.get_entry(key, now, old), Err(e));
        }
        let (store, log) = (self.store, self.log);
        store.write_logged(
            key,
            |s| s.put_with(key, value, opts, now, old),
            |(_, r)| r.is_ok(),
            |seq, e| append(&mut lock(log), seq, key, e, false),
        )
    }

    fn delete_at(&mut self, key: &[u8], now: Millis) -> bool {
        let (store, log) = (self.store, self.log);
        store.write_logged(
            key,
            |s| s.delete_at(key, now),
            |found| *found,
            |seq, e| append(&mut lock(log), seq, key, e, false),
        )
    }

    fn touch(&mut self, key: &[u8], expiry: Expiry, now: Millis) -> Option<Option<Millis>> {
        let (store, log) = (self.store, self.log);
        store.write_logged(
            key,
            |s| s.touch(key, expiry, now),
            Option::is_some,
            |seq, e| append(&mut lock(log), seq, key, e, true),
        )
    }

    fn concat(&mut self, key: &[u8], bytes: &[u8], front: bool, now: Millis) -> Result<u64, StoreError> {
        self.refuse_if_failing()?;
        let (store, log) = (self.store, self.log);
        store.write_logged(
            key,
            |s| s.concat(key, bytes, front, now),
            Result::is_ok,
            |seq, e| append(&mut lock(log), seq, key, e, false),
        )
    }

    fn incr(&mut self, key: &[u8], delta: u64, down: bool, now: Millis) -> Result<u64, StoreError> {
        self.refuse_if_failing()?;
        let (store, log) = (self.store, self.log);
        store.write_logged(
            key,
            |s| s.incr(key, delta, down, now),
            Result::is_ok,
            |seq, e| append(&mut lock(log), seq, key, e, false),
        )
    }

    fn entries(&mut self) -> usize {
        self.store.len()
    }
}

impl Fill for Journaled<'_> {
    fn fill(&self) -> Filled {
        self.store.fill()
    }

    fn when_full(&self) -> WhenFull {
        self.store.policy()
    }
}

/// Entries a snapshot visits under one shard lock: a few microseconds of
/// copying, the longest any write waits for it.
pub const SNAPSHOT_SLICE: usize = 64;

/// Writes snapshot `generation` of `store` into `dir`, a slice of
/// [`SNAPSHOT_SLICE`] entries per shard lock, while the loops go on
/// serving; commits it (sync, rename, directory sync) and returns its
/// records and bytes. `between` runs after each slice (a test's writes; a
/// rewrite's pause for the loops, if it wants one).
///
/// What it guarantees, with the loops logging every write to logs of
/// `generation` or later from before it starts: the snapshot and those
/// logs replay to the store's state. An entry written before the visit
/// reaches it is in the snapshot as it was then with a sequence number
/// above that write's; one written after is in a log with a higher one
/// than the snapshot's; one never written is in the snapshot
/// ([`kvio_core::Store::visit`]). Not a point-in-time image by itself.
pub fn write_snapshot(
    dir: &DataDir,
    store: &ShardedStore,
    generation: u64,
    mut between: impl FnMut(),
) -> Result<(u64, u64), DataDirError> {
    let mut file = dir.create_snapshot(generation)?;
    let mut failed = None;
    for shard in 0..store.shards() {
        let mut cursor = VisitCursor::default();
        loop {
            let done = store.visit_shard(shard, &mut cursor, SNAPSHOT_SLICE, |seq, key, e| {
                let op = Op::Put { value: e.value, flags: e.flags, expires: e.expires, text: e.text };
                if failed.is_none()
                    && let Err(err) = file.push(&Record { seq, key, op })
                {
                    failed = Some(err);
                }
            });
            if let Some(err) = failed.take() {
                return Err(err);
            }
            between();
            if done {
                break;
            }
        }
    }
    let records = file.records();
    let bytes = file.commit(dir)?;
    Ok((records, bytes))
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::sansio::log_writer::Fsync;
    use std::collections::BTreeMap;
    use std::io::Write;
    use std::path::PathBuf;

    fn limits() -> kvio_core::StoreLimits {
        kvio_core::StoreLimits::for_frame(1 << 16, 4096, 1 << 22)
    }

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!("kvio-journaled-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    type State = BTreeMap<Vec<u8>, (Vec<u8>, u32, Option<Millis>)>;

    fn dump(store: &ShardedStore) -> State {
        let mut state = State::new();
        for shard in 0..store.shards() {
            let mut cursor = VisitCursor::default();
            while !store.visit_shard(shard, &mut cursor, 1000, |_, k, e| {
                state.insert(k.to_vec(), (e.value.to_vec(), e.flags, e.expires));
            }) {}
        }
        state
    }

    fn recovered(dir: &DataDir) -> State {
        dir.recover(false, |r| {
            r.entries.iter().map(|e| (e.key.to_vec(), (e.value.to_vec(), e.flags, e.expires))).collect()
        })
        .unwrap()
        .0
    }

    /// Every kind of write is logged as what it left, and a recovery of
    /// the log alone rebuilds the store; a failing log refuses puts and
    /// logs deletes.
    #[test]
    fn every_write_is_logged_as_what_it_left_and_the_log_rebuilds_the_store() {
        let tmp = TempDir::new("ops");
        let dir = DataDir::open(&tmp.0).unwrap();
        let mut file = dir.create_log(1, 0).unwrap();
        let store = ShardedStore::with_shards(limits(), 4);
        let log = Mutex::new(LogWriter::new(Fsync::Always, 16, Instant::now()));
        let mut s = Journaled::new(&store, &log);
        let now = 1_000;
        s.put(b"a", b"1").unwrap();
        let opts = PutOptions { flags: 9, expiry: Expiry::At(now + 500), text: true, ..PutOptions::default() };
        s.put_with(b"b", b"text", opts, now, |_| ()).1.unwrap();
        s.put_with(b"c", b"10", PutOptions::default(), now, |_| ()).1.unwrap();
        assert_eq!(s.incr(b"c", 5, false, now), Ok(15));
        s.concat(b"a", b"!", false, now).unwrap();
        assert_eq!(s.touch(b"b", Expiry::At(now + 900), now), Some(Some(now + 500)));
        s.put(b"gone", b"x").unwrap();
        assert!(s.delete(b"gone"));
        assert!(!s.delete(b"never"), "a miss logs nothing");
        assert_eq!(s.put(&[0; 70_000], b"x"), Err(StoreError::KeyTooLong), "a refusal logs nothing");
        s.put_with(b"d", b"x", PutOptions { expiry: Expiry::At(now - 1), ..PutOptions::default() }, now, |_| ())
            .1
            .unwrap();
        let bytes = s.log().to_write(Instant::now()).to_vec();
        file.write_all(&bytes).unwrap();
        let n = bytes.len();
        s.log().wrote(n);
        assert_eq!(recovered(&dir), dump(&store));
        assert_eq!(dump(&store).get(&b"b"[..]), Some(&(b"text".to_vec(), 9, Some(now + 900))));
        // The disk fails: puts are refused and change nothing; a delete goes on.
        s.log().failed(&std::io::Error::from_raw_os_error(28), Instant::now());
        assert_eq!(s.put(b"a", b"new"), Err(StoreError::NotPersisted));
        assert_eq!(
            s.put_with(b"a", b"new", PutOptions::default(), now, |old| old.map(|e| e.value.to_vec())).0,
            Some(b"1!".to_vec())
        );
        assert_eq!(s.incr(b"c", 1, false, now), Err(StoreError::NotPersisted));
        assert!(s.delete(b"c"));
        assert_eq!(store.get(b"a", |v| v.map(<[u8]>::to_vec)), Some(b"1!".to_vec()));
        assert!(s.log().has_buffered(), "the delete waits in the buffer");
    }

    /// While the log fails, RESP and memcached answer a write with their
    /// protocol's error saying it was not persisted, and reads go on.
    #[test]
    fn resp_and_memcached_say_not_persisted_while_the_log_fails() {
        use kvio_core::{Connection, Handler, Parser};
        fn answer<P: Parser, H: Handler<P>>(parser: P, handler: &mut H, input: &str) -> String {
            let mut conn = Connection::with_parser(parser, 1 << 16);
            let (mut buf, mut out) = (Vec::new(), Vec::new());
            conn.receive(input.as_bytes(), 1_000, &mut buf, handler, &mut out);
            String::from_utf8(out).unwrap()
        }
        let store = ShardedStore::with_shards(limits(), 2);
        let log = Mutex::new(LogWriter::new(Fsync::Always, 16, Instant::now()));
        Journaled::new(&store, &log).put(b"k", b"1").unwrap();
        log.lock().unwrap().failed(&std::io::Error::from_raw_os_error(28), Instant::now());
        let mut resp = kvio_core::resp::RespHandler::new(Journaled::new(&store, &log));
        let said = answer(
            kvio_core::resp::RequestParser::new(1024),
            &mut resp,
            "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n2\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
        );
        assert_eq!(said, "-MISCONF not persisted: the server cannot write its journal (--data-dir)\r\n$1\r\n1\r\n");
        let mut mc = kvio_core::memcache::McHandler::new(Journaled::new(&store, &log));
        let said = answer(
            kvio_core::memcache::RequestParser::new(1024),
            &mut mc,
            "set k 0 0 1\r\n2\r\nincr k 1\r\nms k 1\r\n3\r\nma k\r\nget k\r\n",
        );
        let refused = "SERVER_ERROR not persisted: the server cannot write its journal\r\n";
        assert_eq!(said, format!("{refused}{refused}{refused}{refused}VALUE k 0 1\r\n1\r\nEND\r\n"));
    }

    /// A snapshot written a slice at a time while writes go on (logged to
    /// generation 2's logs from before it starts) and those logs replay to
    /// the store's final state; older files go once it is committed.
    #[test]
    fn a_snapshot_written_while_writes_go_on_and_the_logs_since_replay_to_the_state() {
        let tmp = TempDir::new("rewrite");
        let dir = DataDir::open(&tmp.0).unwrap();
        let store = ShardedStore::with_shards(limits(), 8);
        let mut old_log = dir.create_log(1, 0).unwrap();
        let log = Mutex::new(LogWriter::new(Fsync::No, 16, Instant::now()));
        let mut s = Journaled::new(&store, &log);
        for i in 0..2000u32 {
            s.put(format!("k{i}").as_bytes(), &i.to_le_bytes()).unwrap();
        }
        let bytes = s.log().to_write(Instant::now()).to_vec();
        old_log.write_all(&bytes).unwrap();
        s.log().wrote(bytes.len());
        // The rewrite: the loop moves to generation 2 first, then the snapshot.
        let mut new_log = dir.create_log(2, 0).unwrap();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let (records, _) = write_snapshot(&dir, &store, 2, || {
            for _ in 0..5 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let key = format!("k{}", rng % 2500);
                match rng >> 61 {
                    0 | 1 => {
                        s.delete(key.as_bytes());
                    }
                    2 => {
                        s.touch(key.as_bytes(), Expiry::At(1 << 40), 0);
                    }
                    _ => s.put(key.as_bytes(), &rng.to_le_bytes()[..(rng % 8) as usize]).unwrap(),
                }
            }
            let bytes = s.log().to_write(Instant::now()).to_vec();
            new_log.write_all(&bytes).unwrap();
            s.log().wrote(bytes.len());
        })
        .unwrap();
        assert!(records > 1000, "{records}");
        assert_eq!(dir.remove_before(2).unwrap(), 1, "generation 1's log");
        assert_eq!(recovered(&dir), dump(&store));
    }
}
