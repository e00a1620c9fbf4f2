//! The host's sharded store: S core [`Store`]s (S a power of two), each
//! behind its own `std::sync::Mutex`, a key going to one shard by a hash of
//! its bytes. Loops and connection threads that touch different shards
//! never wait for each other, where the core's [`kvio_core::Shared`] is one
//! process-wide lock on a host. The embedded build keeps its plain `static`
//! store; this module is std-only and reaches the core store only through
//! its public API.
//!
//! # Limits: global, exactly
//!
//! `--store-entries` and `--store-bytes` hold for the whole server. A global
//! count of entries and budget bytes (one `AtomicU64`: entries in the high
//! 32 bits, bytes in the low 32) is the authority. Each shard gets an even
//! share of both limits times [`SHARD_SLACK`] (at least one entry and one
//! largest record), so its own store can hold what the global count lets
//! through unless the keys are badly skewed. The refusal rule, in order:
//!
//! 1. the key is over the key limit: `KeyTooLong`; the value is over the
//!    value limit: `ValueTooLong` (the limits of a single store);
//! 2. `Full` when the key is new and the whole store holds `--store-entries`
//!    entries, or the whole store's budget in use, minus the old entry's
//!    cost, plus the new one's, would pass `--store-bytes` (an entry costs
//!    key + value + 12 bytes) — the rule of a single store, counted over
//!    all shards;
//! 3. `Full` when the same test fails for the key's shard against its own
//!    capacity (share × slack): only skewed keys reach it.
//!
//! A refused put changes nothing: the shard's lock is held while the
//! decision is taken, the global count is reserved only once the shard is
//! known to accept, and the shard's put cannot fail after that. A put that
//! keeps the value's size (the common update) does not touch the global
//! count at all.
//!
//! # When full, evicting
//!
//! Under [`WhenFull::Evict`] nothing is refused for being full, so no global
//! reservation is needed: each shard holds exactly its even share of both
//! limits (no slack; at least one largest record) and evicts within it, so
//! the shards together stay within `--store-entries` and `--store-bytes`
//! (bar that rounding). The global count follows each put and delete by
//! what the shard holds after it, evictions included.
//!
//! # Visibility
//!
//! Every operation on a key takes its shard's lock, so operations on one
//! key are linearizable: a put whose response was sent is seen by every get
//! that starts afterwards, from any loop or thread.
//!
//! The lock is held for one put or one get (the get's closure encodes the
//! response into the caller's buffer), never across IO.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use kvio_core::store::{RECORD_HEADER_LEN, Slot, slots_for};
use kvio_core::{KeyValueStore, Store, StoreError, StoreLimits, WhenFull};

/// The store of a Linux server: its slot table and arena are boxed slices.
pub type HostStore = Store<Box<[Slot]>, Box<[u8]>>;

/// A store of `entries` entries and `bytes` bytes under `limits`,
/// allocated now and never again.
pub fn host_store(limits: StoreLimits, entries: usize, bytes: usize) -> HostStore {
    // vec![0; n] is calloc: pages nobody writes cost no memory.
    Store::with_storage(
        vec![Slot::EMPTY; slots_for(entries)].into_boxed_slice(),
        vec![0u8; bytes].into_boxed_slice(),
        limits,
    )
}

/// Shards per loop (or per CPU for the threaded flavor): enough that two
/// loops rarely want the same lock at once.
pub const SHARDS_PER_LOOP: usize = 8;
/// A shard's capacity over its even share of the limits.
pub const SHARD_SLACK: usize = 2;
/// Fewest entries a shard's even share may be: below that the server uses
/// fewer shards (a store of 10 entries is one shard).
pub const MIN_ENTRIES_PER_SHARD: usize = 64;

/// One shard, on its own cache lines so that two loops taking neighbouring
/// locks do not bounce one line between their cores.
#[derive(Debug)]
#[repr(align(128))]
struct Shard {
    store: Mutex<HostStore>,
    /// Times this shard was locked (tests count the locks an operation takes).
    #[cfg(test)]
    locked: AtomicU64,
}

impl Shard {
    fn new(store: HostStore) -> Shard {
        Shard {
            store: Mutex::new(store),
            #[cfg(test)]
            locked: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HostStore> {
        #[cfg(test)]
        self.locked.fetch_add(1, Ordering::Relaxed);
        // A panic while holding a shard (a connection thread's) leaves the
        // store consistent: its put either had not begun or cannot fail.
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The sharded store. See the [module docs](self).
#[derive(Debug)]
pub struct ShardedStore {
    shards: Box<[Shard]>,
    /// `64 - log2(shards)`: a key's shard is the top bits of its hash.
    shift: u32,
    limits: StoreLimits,
    /// Entries (high 32 bits) and budget bytes (low 32 bits) in use.
    used: AtomicU64,
    when_full: WhenFull,
    /// Entries evicted over all shards: added to under the evicting
    /// shard's lock, so reading it takes no lock (a put's figures must not
    /// cost a lock per shard: `Observed` reads them after every put).
    evictions: AtomicU64,
}

const BYTES_MASK: u64 = u32::MAX as u64;

fn pack(entries: u64, bytes: u64) -> u64 {
    (entries << 32) | bytes
}

fn unpack(used: u64) -> (u64, u64) {
    (used >> 32, used & BYTES_MASK)
}

impl ShardedStore {
    /// A store for `limits` over a shard count suited to `loops` loops (see
    /// [`ShardedStore::shard_count`]). Entries and bytes are capped at
    /// `u32::MAX - 1`, as a single store's arena is.
    pub fn new(limits: StoreLimits, loops: usize) -> ShardedStore {
        ShardedStore::with_policy(limits, Self::shard_count(limits, loops), WhenFull::Refuse)
    }

    /// `loops × SHARDS_PER_LOOP` rounded up to a power of two, halved while
    /// a shard's even share would be under [`MIN_ENTRIES_PER_SHARD`]
    /// entries or its byte capacity under one largest record.
    pub fn shard_count(limits: StoreLimits, loops: usize) -> usize {
        let largest = RECORD_HEADER_LEN + limits.max_key_len + limits.max_value_len;
        let mut shards = (loops.max(1) * SHARDS_PER_LOOP).next_power_of_two();
        while shards > 1
            && (limits.max_entries / shards < MIN_ENTRIES_PER_SHARD
                || limits.byte_budget * SHARD_SLACK / shards < largest)
        {
            shards /= 2;
        }
        shards
    }

    /// A store of exactly `shards` shards (a power of two).
    pub fn with_shards(limits: StoreLimits, shards: usize) -> ShardedStore {
        ShardedStore::with_policy(limits, shards, WhenFull::Refuse)
    }

    /// A store of exactly `shards` shards (a power of two) doing `when_full`
    /// when full (see the [module docs](self)).
    pub fn with_policy(limits: StoreLimits, shards: usize, when_full: WhenFull) -> ShardedStore {
        assert!(shards.is_power_of_two(), "shards must be a power of two");
        let cap = (u32::MAX - 1) as usize;
        let limits = StoreLimits {
            max_entries: limits.max_entries.min(cap),
            byte_budget: limits.byte_budget.min(cap),
            ..limits
        };
        let largest = RECORD_HEADER_LEN + limits.max_key_len + limits.max_value_len;
        // An evicting shard holds its even share exactly (module docs).
        let slack = if when_full == WhenFull::Evict { 1 } else { SHARD_SLACK };
        let entries = (limits.max_entries.div_ceil(shards) * slack).clamp(1, limits.max_entries.max(1));
        let bytes = (limits.byte_budget.div_ceil(shards) * slack).max(largest).min(limits.byte_budget);
        let shard_limits = StoreLimits { max_entries: entries, byte_budget: bytes, ..limits };
        let shards = (0..shards)
            .map(|_| {
                // vec![0; n] is calloc: pages nobody writes cost no memory.
                Shard::new(
                    Store::with_storage(
                        vec![Slot::EMPTY; slots_for(entries)].into_boxed_slice(),
                        vec![0u8; bytes].into_boxed_slice(),
                        shard_limits,
                    )
                    .when_full(when_full),
                )
            })
            .collect::<Box<[Shard]>>();
        ShardedStore {
            shift: 64 - shards.len().trailing_zeros(),
            shards,
            limits,
            when_full,
            used: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    /// What the shards do when full.
    pub fn policy(&self) -> WhenFull {
        self.when_full
    }

    /// The global limits.
    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    /// Shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// A shard's own limits (its capacity: share × slack).
    pub fn shard_limits(&self) -> StoreLimits {
        self.shards[0].lock().limits()
    }

    /// Entries stored, over all shards.
    pub fn len(&self) -> usize {
        unpack(self.used.load(Ordering::Acquire)).0 as usize
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Budget bytes in use, over all shards.
    pub fn bytes_used(&self) -> usize {
        unpack(self.used.load(Ordering::Acquire)).1 as usize
    }

    /// The shard `key` lives in.
    pub fn shard_of(&self, key: &[u8]) -> usize {
        if self.shift == 64 { 0 } else { (hash(key) >> self.shift) as usize }
    }

    /// Stores `value` under `key`, or refuses by the rule of the [module docs](self).
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        if key.len() > self.limits.max_key_len {
            return Err(StoreError::KeyTooLong);
        }
        if value.len() > self.limits.max_value_len {
            return Err(StoreError::ValueTooLong);
        }
        let mut shard = self.shards[self.shard_of(key)].lock();
        if shard.policy() == WhenFull::Evict {
            let before = (shard.len(), shard.bytes_used());
            let evicted = shard.evictions();
            let put = shard.put(key, value);
            self.follow(before, (shard.len(), shard.bytes_used()));
            let evicted = shard.evictions() - evicted;
            if evicted != 0 {
                self.evictions.fetch_add(evicted, Ordering::Relaxed);
            }
            return put;
        }
        let old_len = shard.get(key).map(<[u8]>::len);
        if old_len == Some(value.len()) {
            // Written in place: no count changes, and it cannot fail.
            return shard.put(key, value);
        }
        let cost = RECORD_HEADER_LEN + key.len() + value.len();
        let freed = old_len.map_or(0, |old| RECORD_HEADER_LEN + key.len() + old);
        let new_entry = u64::from(old_len.is_none());
        let own = shard.limits();
        if (old_len.is_none() && shard.len() >= own.max_entries) || shard.bytes_used() - freed + cost > own.byte_budget
        {
            return Err(StoreError::Full);
        }
        // Reserve in the global count (the shard is known to accept).
        let (max_entries, budget) = (self.limits.max_entries as u64, self.limits.byte_budget as u64);
        let reserved = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            let (entries, bytes) = unpack(used);
            let bytes = bytes - freed as u64 + cost as u64;
            (entries + new_entry <= max_entries && bytes <= budget).then(|| pack(entries + new_entry, bytes))
        });
        if reserved.is_err() {
            return Err(StoreError::Full);
        }
        let put = shard.put(key, value);
        debug_assert_eq!(put, Ok(()), "a shard refused what it was checked to accept");
        put
    }

    /// Calls `f` with the value under `key`, the key's shard locked for the call.
    pub fn get<R>(&self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        f(self.shards[self.shard_of(key)].lock().fetch(key))
    }

    /// Removes `key`; true when it was there.
    pub fn delete(&self, key: &[u8]) -> bool {
        let mut shard = self.shards[self.shard_of(key)].lock();
        let before = (shard.len(), shard.bytes_used());
        let deleted = shard.delete(key);
        if deleted {
            self.follow(before, (shard.len(), shard.bytes_used()));
        }
        deleted
    }

    /// Entries evicted over all shards (0 unless evicting). One atomic
    /// load: no shard is locked.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Locks taken so far, over all shards (tests: an operation takes one).
    #[cfg(test)]
    pub(crate) fn locks_taken(&self) -> u64 {
        self.shards.iter().map(|shard| shard.locked.load(Ordering::Relaxed)).sum()
    }

    /// Moves the global count by what a shard holds now against before
    /// (entries, budget bytes), under that shard's lock.
    fn follow(&self, before: (usize, usize), after: (usize, usize)) {
        if before == after {
            return;
        }
        let _ = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            let (entries, bytes) = unpack(used);
            let entries = entries + after.0 as u64 - before.0 as u64;
            let bytes = bytes + after.1 as u64 - before.1 as u64;
            Some(pack(entries, bytes))
        });
    }
}

impl KeyValueStore for &ShardedStore {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        ShardedStore::put(self, key, value)
    }

    fn get<R>(&mut self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        ShardedStore::get(self, key, f)
    }

    fn delete(&mut self, key: &[u8]) -> bool {
        ShardedStore::delete(self, key)
    }
}

/// FxHash-style over 8-byte words, finished with a multiply, so that the
/// top bits (the shard) do not follow the low bits the core store's own
/// hash indexes its table with.
fn hash(key: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h: u64 = key.len() as u64;
    let mut words = key.chunks_exact(8);
    for word in &mut words {
        let w = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    h = (h.rotate_left(5) ^ u64::from_le_bytes(tail)).wrapping_mul(K);
    // Fold the well-mixed high bits down and mix once more.
    (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9)
}

#[cfg(test)]
mod test {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::thread;

    fn limits(entries: usize, bytes: usize) -> StoreLimits {
        // Keys up to 22 bytes, values up to 23.
        StoreLimits::for_frame(70, entries, bytes)
    }

    #[test]
    fn shard_count_follows_loops_and_the_limits() {
        let big = StoreLimits::for_frame(kvio_core::DEFAULT_MAX_FRAME_LEN, 100_000, 64 << 20);
        assert_eq!(ShardedStore::shard_count(big, 1), 8);
        assert_eq!(ShardedStore::shard_count(big, 2), 16);
        assert_eq!(ShardedStore::shard_count(big, 3), 32);
        assert_eq!(ShardedStore::shard_count(limits(10, 4096), 4), 1, "too few entries to split");
        assert_eq!(ShardedStore::shard_count(limits(256, 1 << 20), 4), 4, "64 entries a shard at least");
        // A largest record must fit a shard.
        let frames = StoreLimits::for_frame(kvio_core::DEFAULT_MAX_FRAME_LEN, 100_000, 4 << 20);
        assert_eq!(ShardedStore::shard_count(frames, 2), 8);
    }

    #[test]
    fn shards_spread_keys_evenly() {
        let store = ShardedStore::with_shards(limits(1 << 16, 1 << 20), 16);
        let mut per_shard = [0usize; 16];
        for i in 0..16_000 {
            per_shard[store.shard_of(format!("key-{i}").as_bytes())] += 1;
        }
        assert!(per_shard.iter().all(|&n| (800..1200).contains(&n)), "{per_shard:?}");
    }

    #[test]
    fn global_entry_limit_holds_over_every_shard() {
        let store = ShardedStore::with_shards(limits(40, 1 << 16), 4);
        assert_eq!(store.shard_limits().max_entries, 20);
        let mut accepted = 0;
        for i in 0..100 {
            if store.put(format!("k{i}").as_bytes(), b"v").is_ok() {
                accepted += 1;
            }
        }
        assert_eq!(accepted, 40);
        assert_eq!(store.len(), 40);
        assert_eq!(store.put(b"new", b"v"), Err(StoreError::Full));
        assert!(store.get(b"new", |v| v.is_none()), "refused: nothing stored");
        store.put(b"k0", b"updated").unwrap();
        assert_eq!(store.get(b"k0", |v| v.map(<[u8]>::to_vec)), Some(b"updated".to_vec()));
        assert_eq!(store.len(), 40);
    }

    /// The global eviction count is the sum of the shards' own, kept
    /// without a lock: reading it locks no shard.
    #[test]
    fn evictions_are_counted_over_every_shard_without_locking_them() {
        let store = ShardedStore::with_policy(limits(64, 1 << 12), 4, WhenFull::Evict);
        for i in 0..1000 {
            store.put(format!("k{i}").as_bytes(), b"value").unwrap();
        }
        let locks = store.locks_taken();
        let evictions = store.evictions();
        assert_eq!(store.locks_taken(), locks, "evictions() locked a shard");
        let per_shard: u64 = store.shards.iter().map(|shard| shard.lock().evictions()).sum();
        assert!(evictions > 900, "{evictions}");
        assert_eq!(evictions, per_shard);
    }

    #[test]
    fn a_poisoned_shard_stays_usable() {
        let store = ShardedStore::with_shards(limits(64, 4096), 1);
        store.put(b"k", b"v").unwrap();
        let panicked = std::panic::catch_unwind(|| store.get(b"k", |_| panic!("injected")));
        assert!(panicked.is_err());
        assert_eq!(store.get(b"k", |v| v.map(<[u8]>::to_vec)), Some(b"v".to_vec()));
        store.put(b"k", b"w").unwrap();
    }

    /// The documented rule over a BTreeMap: global limits, then the shard's capacity.
    struct Model {
        map: BTreeMap<Vec<u8>, Vec<u8>>,
        limits: StoreLimits,
        shard: StoreLimits,
    }

    impl Model {
        fn new(store: &ShardedStore) -> Model {
            Model { map: BTreeMap::new(), limits: store.limits(), shard: store.shard_limits() }
        }

        fn cost(k: &[u8], v: &[u8]) -> usize {
            RECORD_HEADER_LEN + k.len() + v.len()
        }

        fn put(&mut self, store: &ShardedStore, k: &[u8], v: &[u8]) -> Result<(), StoreError> {
            if k.len() > self.limits.max_key_len {
                return Err(StoreError::KeyTooLong);
            }
            if v.len() > self.limits.max_value_len {
                return Err(StoreError::ValueTooLong);
            }
            let freed = self.map.get(k).map_or(0, |old| Self::cost(k, old));
            let new = !self.map.contains_key(k);
            let fits = |entries: usize, used: usize, limits: StoreLimits| {
                !(new && entries >= limits.max_entries) && used - freed + Self::cost(k, v) <= limits.byte_budget
            };
            let same_size = self.map.get(k).is_some_and(|old| old.len() == v.len());
            let all = self.map.iter();
            let (entries, used) = (self.map.len(), all.map(|(k, v)| Self::cost(k, v)).sum());
            let shard = store.shard_of(k);
            let mine: Vec<_> = self.map.iter().filter(|(key, _)| store.shard_of(key) == shard).collect();
            let (shard_entries, shard_used) = (mine.len(), mine.iter().map(|(k, v)| Self::cost(k, v)).sum());
            let fits_both = fits(entries, used, self.limits) && fits(shard_entries, shard_used, self.shard);
            if !same_size && !fits_both {
                return Err(StoreError::Full);
            }
            self.map.insert(k.to_vec(), v.to_vec());
            Ok(())
        }
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Put(Vec<u8>, Vec<u8>),
            Get(Vec<u8>),
        }

        fn op(key_bytes: u8) -> impl Strategy<Value = Op> {
            let key = prop::collection::vec(0u8..key_bytes, 0..5);
            let value = prop::collection::vec(any::<u8>(), 0..26);
            prop_oneof![(key.clone(), value).prop_map(|(k, v)| Op::Put(k, v)), key.prop_map(Op::Get)]
        }

        proptest! {
            /// One thread, tight limits: every answer, refusals included, is the model's.
            #[test]
            fn sharded_store_matches_the_documented_rule(
                shards in prop::sample::select(vec![1usize, 2, 4]),
                entries in 1usize..24,
                bytes in 0usize..400,
                ops in prop::collection::vec(op(4), 0..200),
            ) {
                let store = ShardedStore::with_shards(limits(entries, bytes), shards);
                let mut model = Model::new(&store);
                for op in ops {
                    match op {
                        Op::Put(k, v) => prop_assert_eq!(store.put(&k, &v), model.put(&store, &k, &v), "put {:?}", k),
                        Op::Get(k) => {
                            let got = store.get(&k, |v| v.map(<[u8]>::to_vec));
                            prop_assert_eq!(got, model.map.get(&k).cloned());
                        }
                    }
                    prop_assert_eq!(store.len(), model.map.len());
                    let used: usize = model.map.iter().map(|(k, v)| Model::cost(k, v)).sum();
                    prop_assert_eq!(store.bytes_used(), used);
                }
            }

            /// Several threads, each on its own keys, in a store none of them
            /// can fill: every thread's answers are its own model's, as if it
            /// were alone (operations on a key are linearizable).
            #[test]
            fn concurrent_threads_each_see_their_own_model(
                sequences in prop::collection::vec(prop::collection::vec(op(3), 0..150), 2..5),
            ) {
                let store = ShardedStore::with_shards(StoreLimits::for_frame(1024, 4096, 1 << 20), 4);
                let models: Vec<BTreeMap<Vec<u8>, Vec<u8>>> = thread::scope(|scope| {
                    let workers: Vec<_> = sequences
                        .into_iter()
                        .enumerate()
                        .map(|(t, ops)| {
                            let store = &store;
                            scope.spawn(move || {
                                let mut model = BTreeMap::new();
                                for op in ops {
                                    match op {
                                        Op::Put(mut k, v) => {
                                            k.insert(0, t as u8);
                                            assert_eq!(store.put(&k, &v), Ok(()));
                                            model.insert(k, v);
                                        }
                                        Op::Get(mut k) => {
                                            k.insert(0, t as u8);
                                            assert_eq!(store.get(&k, |v| v.map(<[u8]>::to_vec)), model.get(&k).cloned());
                                        }
                                    }
                                }
                                model
                            })
                        })
                        .collect();
                    workers.into_iter().map(|w| w.join().unwrap()).collect()
                });
                let all: BTreeMap<_, _> = models.into_iter().flatten().collect();
                prop_assert_eq!(store.len(), all.len());
                for (k, v) in &all {
                    prop_assert_eq!(store.get(k, |got| got.map(<[u8]>::to_vec)), Some(v.clone()));
                }
            }
        }
    }

    /// Threads writing the same keys: every read returns a value some
    /// thread wrote to that key (never a torn or foreign one), and what one
    /// thread sees of a writer's values never goes back in time (its own
    /// last write included): once a write is seen, older ones are gone.
    #[test]
    fn shared_keys_read_only_written_values() {
        const THREADS: usize = 4;
        const ROUNDS: u32 = 2_000;
        let store = ShardedStore::with_shards(limits(1024, 1 << 16), 4);
        let keys: Vec<Vec<u8>> = (0..8).map(|i| format!("shared-{i}").into_bytes()).collect();
        thread::scope(|scope| {
            for t in 0..THREADS {
                let (store, keys) = (&store, &keys);
                scope.spawn(move || {
                    // Per key: the highest sequence number seen from each writer.
                    let mut seen = vec![[0u32; THREADS]; keys.len()];
                    for round in 1..=ROUNDS {
                        let i = (round as usize * 7 + t) % keys.len();
                        if round % 3 == 0 {
                            // Values of two sizes: updates in place and appended ones.
                            let value = format!("{t}:{round}{}", if round % 2 == 0 { "" } else { "-long" });
                            store.put(&keys[i], value.as_bytes()).unwrap();
                            seen[i][t] = round;
                        } else if let Some(v) = store.get(&keys[i], |v| v.map(<[u8]>::to_vec)) {
                            let v = String::from_utf8(v).unwrap();
                            let (writer, seq) = v.split_once(':').unwrap();
                            let (writer, seq): (usize, u32) =
                                (writer.parse().unwrap(), seq.trim_end_matches("-long").parse().unwrap());
                            assert!(writer < THREADS && seq % 3 == 0 && seq <= ROUNDS, "{v}");
                            assert!(seq >= seen[i][writer], "thread {t} read {v} after seeing {}", seen[i][writer]);
                            seen[i][writer] = seen[i][writer].max(seq);
                        }
                    }
                });
            }
        });
        assert_eq!(store.len(), keys.len());
    }

    /// Threads race to add new keys to a store that holds fewer than they
    /// offer: exactly the limit is accepted, whichever thread offered them,
    /// every accepted key is there with its value, and no refused key is.
    #[test]
    fn racing_puts_fill_the_store_exactly_and_refusals_change_nothing() {
        const THREADS: usize = 4;
        for shards in [1, 4] {
            let store = ShardedStore::with_shards(limits(200, 1 << 16), shards);
            let outcomes: Vec<(Vec<u8>, bool)> = thread::scope(|scope| {
                let workers: Vec<_> = (0..THREADS)
                    .map(|t| {
                        let store = &store;
                        scope.spawn(move || {
                            (0..100)
                                .map(|i| {
                                    let key = format!("t{t}-k{i}").into_bytes();
                                    let ok = store.put(&key, &key).is_ok();
                                    (key, ok)
                                })
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
            });
            let accepted: BTreeSet<&Vec<u8>> = outcomes.iter().filter(|(_, ok)| *ok).map(|(k, _)| k).collect();
            assert_eq!(accepted.len(), 200, "{shards} shards");
            assert_eq!(store.len(), 200);
            let bytes: usize = accepted.iter().map(|k| RECORD_HEADER_LEN + 2 * k.len()).sum();
            assert_eq!(store.bytes_used(), bytes);
            for (key, ok) in &outcomes {
                let got = store.get(key, |v| v.map(<[u8]>::to_vec));
                assert_eq!(got.as_ref(), ok.then_some(key), "{key:?}");
            }
        }
    }
}
