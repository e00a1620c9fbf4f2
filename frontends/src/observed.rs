//! The store as a server's handler sees it: every get and put goes
//! through [`Observed`], which counts gets by hit or miss and puts by
//! outcome into the loop's [`Counters`], keeps the store's fill
//! ([`StoreFill`]) readable by the metrics thread, and logs puts refused
//! because the store is full (rate-limited). One uncontended atomic add
//! per request, and a store to the fill only when a put changed it.
//!
//! What it does not own: the store's rules ([`kvio_core::store`],
//! [`crate::sharded`]).

use std::sync::atomic::{AtomicU64, Ordering};

use kvio_core::{KeyValueStore, StoreError};

use crate::config::HostStore;
use crate::log;
use crate::sharded::ShardedStore;
use crate::stats::{Counters, PutOutcome};

/// Entries and bytes the store holds now, as last seen by a put.
#[derive(Debug, Default)]
pub struct StoreFill {
    entries: AtomicU64,
    bytes: AtomicU64,
}

impl StoreFill {
    /// (entries, budget bytes used).
    pub fn get(&self) -> (u64, u64) {
        (self.entries.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed))
    }

    fn set(&self, (entries, bytes): (u64, u64)) {
        // Read first: with several loops on one store, a write only when the
        // figure moved keeps the line shared while puts replace same-sized values.
        if self.entries.load(Ordering::Relaxed) != entries {
            self.entries.store(entries, Ordering::Relaxed);
        }
        if self.bytes.load(Ordering::Relaxed) != bytes {
            self.bytes.store(bytes, Ordering::Relaxed);
        }
    }
}

/// A store that can say how full it is, cheaply.
pub trait Fill {
    /// (entries, budget bytes used).
    fn fill(&self) -> (u64, u64);
}

impl Fill for HostStore {
    fn fill(&self) -> (u64, u64) {
        (self.len() as u64, self.bytes_used() as u64)
    }
}

impl Fill for &ShardedStore {
    fn fill(&self) -> (u64, u64) {
        (self.len() as u64, self.bytes_used() as u64)
    }
}

/// `store`, counted into `counters` and `fill`.
#[derive(Debug)]
pub struct Observed<'a, S> {
    store: S,
    counters: &'a Counters,
    fill: &'a StoreFill,
}

impl<'a, S: KeyValueStore + Fill> Observed<'a, S> {
    /// Wraps `store`.
    pub fn new(store: S, counters: &'a Counters, fill: &'a StoreFill) -> Self {
        fill.set(store.fill());
        Observed { store, counters, fill }
    }
}

impl<S: KeyValueStore + Fill> KeyValueStore for Observed<'_, S> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let result = self.store.put(key, value);
        let outcome = match result {
            Ok(()) => {
                self.fill.set(self.store.fill());
                PutOutcome::Stored
            }
            Err(StoreError::KeyTooLong | StoreError::ValueTooLong) => PutOutcome::TooBig,
            Err(StoreError::Full) => {
                log::STORE_FULL.warn(format_args!("refusing puts: store full"));
                PutOutcome::StoreFull
            }
            Err(_) => PutOutcome::Other,
        };
        self.counters.put(outcome);
        result
    }

    fn get<R>(&mut self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        let counters = self.counters;
        self.store.get(key, |value| {
            counters.get(value.is_some());
            f(value)
        })
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::config::{Config, Flavor};

    #[test]
    fn gets_and_puts_are_counted_by_outcome_and_the_fill_follows() {
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
        let figures = counters.figures();
        assert_eq!((figures.get_hits, figures.get_misses), (1, 1));
        assert_eq!(figures.puts, [2, 1, 1, 0], "stored, too big, store full, other");
        assert_eq!(fill.get(), (2, 12 * 2 + 2 + 3));
    }
}
