//! The store as a server's handler sees it: every get, put and delete goes
//! through [`Observed`], which counts gets and deletes by hit or miss and
//! puts by outcome into the loop's [`Counters`], keeps the store's fill and
//! eviction count ([`StoreFill`]) readable by the metrics thread, and logs
//! puts refused because the store is full (rate-limited). One uncontended
//! atomic add per request; after a put that stored or a delete that
//! removed, the store's figures are read (a few fields of a plain store,
//! two atomic loads of a sharded one: no shard lock beyond the put's own)
//! and written to the fill only where they moved.
//!
//! What it does not own: the store's rules ([`kvio_core::store`],
//! [`crate::host::sharded`]).

use std::sync::atomic::{AtomicU64, Ordering};

use kvio_core::{Entry, Expiry, KeyValueStore, Millis, PutOptions, StoreError, WhenFull};

use crate::host::sharded::{HostStore, ShardedStore};
use crate::sansio::stats::{Counters, PutOutcome};
use crate::sansio::warn;

/// Entries, bytes and evictions of the store now, as last seen by a put or a delete.
#[derive(Debug, Default)]
pub struct StoreFill {
    entries: AtomicU64,
    bytes: AtomicU64,
    evictions: AtomicU64,
    expired: AtomicU64,
}

/// What [`Fill::fill`] reads from a store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filled {
    /// Entries held.
    pub entries: u64,
    /// Budget bytes used (keys, values, a 12-byte header an entry, more
    /// with an expiry, flags or cas).
    pub bytes: u64,
    /// Entries evicted so far to make room (`--when-full evict`).
    pub evictions: u64,
    /// Entries reclaimed so far because their expiry passed.
    pub expired: u64,
}

impl StoreFill {
    /// The figures now.
    pub fn get(&self) -> Filled {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Filled {
            entries: load(&self.entries),
            bytes: load(&self.bytes),
            evictions: load(&self.evictions),
            expired: load(&self.expired),
        }
    }

    fn set(&self, filled: Filled) {
        // Read first: with several loops on one store, a write only when the
        // figure moved keeps the line shared while puts replace same-sized values.
        for (cell, value) in [
            (&self.entries, filled.entries),
            (&self.bytes, filled.bytes),
            (&self.evictions, filled.evictions),
            (&self.expired, filled.expired),
        ] {
            if cell.load(Ordering::Relaxed) != value {
                cell.store(value, Ordering::Relaxed);
            }
        }
    }
}

/// A store that can say how full it is, cheaply: no lock beyond what the
/// caller holds (a sharded store's figures are atomics).
pub trait Fill {
    /// Its figures now.
    fn fill(&self) -> Filled;

    /// What it does when full (read once, when [`Observed`] wraps it).
    fn when_full(&self) -> WhenFull;
}

impl Fill for HostStore {
    fn fill(&self) -> Filled {
        Filled {
            entries: self.len() as u64,
            bytes: self.bytes_used() as u64,
            evictions: self.evictions(),
            expired: self.expired(),
        }
    }

    fn when_full(&self) -> WhenFull {
        self.policy()
    }
}

impl Fill for ShardedStore {
    fn fill(&self) -> Filled {
        Filled {
            entries: self.len() as u64,
            bytes: self.bytes_used() as u64,
            evictions: self.evictions(),
            expired: self.expired(),
        }
    }

    fn when_full(&self) -> WhenFull {
        self.policy()
    }
}

impl<T: Fill + ?Sized> Fill for &T {
    fn fill(&self) -> Filled {
        (**self).fill()
    }

    fn when_full(&self) -> WhenFull {
        (**self).when_full()
    }
}

impl<T: Fill + ?Sized> Fill for &mut T {
    fn fill(&self) -> Filled {
        (**self).fill()
    }

    fn when_full(&self) -> WhenFull {
        (**self).when_full()
    }
}

/// The warning for a put refused as [`StoreError::Full`]: a refusing store
/// is out of entries or bytes; an evicting one refuses only an entry it
/// could not hold even empty, so "evict instead" would be wrong advice.
pub fn full_warning(when_full: WhenFull) -> &'static str {
    match when_full {
        WhenFull::Refuse => "refusing puts: store full (--when-full evict makes room instead)",
        WhenFull::Evict => "refusing a put: the entry is larger than the whole store can hold (--store-bytes)",
    }
}

/// `store`, counted into `counters` and `fill`.
#[derive(Debug)]
pub struct Observed<'a, S> {
    store: S,
    counters: &'a Counters,
    fill: &'a StoreFill,
    /// [`full_warning`] for this store's policy.
    full_warning: &'static str,
}

impl<'a, S: KeyValueStore + Fill> Observed<'a, S> {
    /// Wraps `store`.
    pub fn new(store: S, counters: &'a Counters, fill: &'a StoreFill) -> Self {
        fill.set(store.fill());
        let full_warning = full_warning(store.when_full());
        Observed { store, counters, fill, full_warning }
    }
}

impl<S: KeyValueStore + Fill> Observed<'_, S> {
    /// Counts a write (put, concat, incr) by its outcome, warns of a full
    /// store, and reads the figures if it stored.
    fn wrote<T>(&mut self, result: &Result<T, StoreError>) {
        let outcome = match result {
            Ok(_) => {
                self.fill.set(self.store.fill());
                PutOutcome::Stored
            }
            Err(StoreError::KeyTooLong | StoreError::ValueTooLong) => PutOutcome::TooBig,
            Err(StoreError::Full) => {
                warn::STORE_FULL.warn(format_args!("{}", self.full_warning));
                PutOutcome::StoreFull
            }
            // A condition that did not hold, a missing key, not a number.
            Err(_) => PutOutcome::Other,
        };
        self.counters.put(outcome);
    }
}

/// kvio frames use `put`, `get` and `delete`, each the inner store's own
/// (no detour through the options); RESP and memcached the rest. Gets and
/// touches count as gets, puts, concats and incrs as puts, by outcome.
impl<S: KeyValueStore + Fill> KeyValueStore for Observed<'_, S> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let result = self.store.put(key, value);
        self.wrote(&result);
        result
    }

    fn get<R>(&mut self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        let counters = self.counters;
        self.store.get(key, |value| {
            counters.get(value.is_some());
            f(value)
        })
    }

    fn delete(&mut self, key: &[u8]) -> bool {
        let found = self.store.delete(key);
        if found {
            self.fill.set(self.store.fill());
        }
        self.counters.delete(found);
        found
    }

    fn get_entry<R>(&mut self, key: &[u8], now: Millis, f: impl FnOnce(Option<Entry<'_>>) -> R) -> R {
        let counters = self.counters;
        self.store.get_entry(key, now, |entry| {
            counters.get(entry.is_some());
            f(entry)
        })
    }

    fn put_with<R>(
        &mut self,
        key: &[u8],
        value: &[u8],
        opts: PutOptions,
        now: Millis,
        old: impl FnOnce(Option<Entry<'_>>) -> R,
    ) -> (R, Result<u64, StoreError>) {
        let (answer, result) = self.store.put_with(key, value, opts, now, old);
        self.wrote(&result);
        (answer, result)
    }

    fn delete_at(&mut self, key: &[u8], now: Millis) -> bool {
        let found = self.store.delete_at(key, now);
        if found {
            self.fill.set(self.store.fill());
        }
        self.counters.delete(found);
        found
    }

    fn touch(&mut self, key: &[u8], expiry: Expiry, now: Millis) -> Option<Option<Millis>> {
        let had = self.store.touch(key, expiry, now);
        if had.is_some() {
            self.fill.set(self.store.fill());
        }
        self.counters.get(had.is_some());
        had
    }

    fn concat(&mut self, key: &[u8], bytes: &[u8], front: bool, now: Millis) -> Result<u64, StoreError> {
        let result = self.store.concat(key, bytes, front, now);
        self.wrote(&result);
        result
    }

    fn incr(&mut self, key: &[u8], delta: u64, down: bool, now: Millis) -> Result<u64, StoreError> {
        let result = self.store.incr(key, delta, down, now);
        self.wrote(&result);
        result
    }

    fn entries(&mut self) -> usize {
        self.store.entries()
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::app::config::{Config, Flavor};

    #[test]
    fn gets_puts_and_deletes_are_counted_by_outcome_and_the_fill_follows() {
        let config = Config { store_entries: 2, store_bytes: 1 << 12, ..Config::for_flavor(Flavor::Epoll) };
        let (counters, fill) = (Counters::default(), StoreFill::default());
        let mut store = Observed::new(config.store(), &counters, &fill);
        store.put(b"a", b"1").unwrap();
        store.put(b"b", b"22").unwrap();
        assert_eq!(store.put(b"c", b"3"), Err(StoreError::Full));
        let too_long = vec![b'k'; 2000];
        assert_eq!(store.put(&too_long, b"v"), Err(StoreError::KeyTooLong));
        assert_eq!(store.get(b"a", |v| v.map(<[u8]>::to_vec)), Some(b"1".to_vec()));
        assert!(!store.get(b"z", |v| v.is_some()));
        assert_eq!(fill.get(), Filled { entries: 2, bytes: 12 * 2 + 2 + 3, evictions: 0, expired: 0 });
        assert!(store.delete(b"b"));
        assert!(!store.delete(b"b"));
        let figures = counters.figures();
        assert_eq!((figures.get_hits, figures.get_misses), (1, 1));
        assert_eq!((figures.delete_hits, figures.delete_misses), (1, 1));
        assert_eq!(figures.puts, [2, 1, 1, 0], "stored, too big, store full, other");
        assert_eq!(fill.get(), Filled { entries: 1, bytes: 12 + 2, evictions: 0, expired: 0 });
    }

    /// Issue 27: the figures read after each put used to lock every shard
    /// (8 a loop); a get, a put or a delete takes its key's shard lock and
    /// no other, whatever the policy.
    #[test]
    fn each_operation_on_a_sharded_store_takes_one_shard_lock() {
        use crate::host::sharded::ShardedStore;
        for when_full in [kvio_core::WhenFull::Refuse, kvio_core::WhenFull::Evict] {
            let limits = kvio_core::StoreLimits::for_frame(1024, 256, 1 << 12);
            let store = ShardedStore::with_policy(limits, 16, when_full);
            let (counters, fill) = (Counters::default(), StoreFill::default());
            let mut observed = Observed::new(&store, &counters, &fill);
            for i in 0..300u32 {
                let key = i.to_le_bytes();
                let value = vec![b'v'; i as usize % 40];
                let locks = store.locks_taken();
                let _ = observed.put(&key, &value);
                assert_eq!(store.locks_taken() - locks, 1, "put {i} under {when_full:?}");
                observed.get(&key, |_| ());
                assert_eq!(store.locks_taken() - locks, 2, "get {i}");
                if i % 3 == 0 {
                    observed.delete(&key);
                    assert_eq!(store.locks_taken() - locks, 3, "delete {i}");
                }
            }
            let filled = fill.get();
            assert_eq!((filled.entries, filled.evictions), (store.len() as u64, store.evictions()));
            assert_eq!(filled.evictions > 0, when_full == kvio_core::WhenFull::Evict, "{filled:?}");
        }
    }

    /// The operations RESP and memcached add: concat and incr count as
    /// puts by outcome (a condition that fails or a missing key is
    /// "other"), touch as a get; the fill follows every write.
    #[test]
    fn the_new_operations_are_counted_and_the_fill_follows() {
        use kvio_core::{Condition, Expiry, PutOptions};
        let config = Config { store_entries: 8, store_bytes: 1 << 12, ..Config::for_flavor(Flavor::Epoll) };
        let (counters, fill) = (Counters::default(), StoreFill::default());
        let sharded = config.sharded_store(1);
        {
            let mut store = Observed::new(&sharded, &counters, &fill);
            let nx = PutOptions { condition: Condition::Absent, ..PutOptions::default() };
            assert_eq!(store.put_with(b"n", b"41", nx, 1000, |old| old.is_none()), (true, Ok(0)));
            assert_eq!(store.put_with(b"n", b"0", nx, 1000, |_| ()).1, Err(StoreError::NotStored));
            assert_eq!(store.incr(b"n", 1, false, 1000), Ok(42));
            assert_eq!(store.incr(b"absent", 1, false, 1000), Err(StoreError::NotFound));
            assert_eq!(store.concat(b"n", b"0", false, 1000), Ok(0));
            assert_eq!(fill.get().bytes, 12 + 1 + 3, "the fill followed the concat");
            assert_eq!(store.touch(b"n", Expiry::At(2000), 1000), Some(None));
            assert_eq!(fill.get().bytes, 12 + 8 + 1 + 3, "and the touch that gave it an expiry");
            assert_eq!(store.touch(b"absent", Expiry::Never, 1000), None);
            assert_eq!(store.get_entry(b"n", 1999, |e| e.map(|e| e.value.to_vec())), Some(b"420".to_vec()));
            assert!(!store.delete_at(b"n", 2000), "expired");
            assert_eq!(store.entries(), 0);
        }
        let figures = counters.figures();
        assert_eq!(figures.puts, [3, 0, 0, 2], "stored, too big, store full, other");
        assert_eq!((figures.get_hits, figures.get_misses), (2, 1), "touches and the get");
        assert_eq!((figures.delete_hits, figures.delete_misses), (0, 1));
    }

    #[test]
    fn evictions_are_seen_under_when_full_evict() {
        let config = Config {
            store_entries: 2,
            store_bytes: 1 << 12,
            when_full: kvio_core::WhenFull::Evict,
            ..Config::for_flavor(Flavor::Epoll)
        };
        let (counters, fill) = (Counters::default(), StoreFill::default());
        let mut store = Observed::new(config.store(), &counters, &fill);
        for key in [b"a", b"b", b"c"] {
            store.put(key, b"v").unwrap();
        }
        assert_eq!(fill.get().evictions, 1);
        assert_eq!(fill.get().entries, 2);
    }
}
