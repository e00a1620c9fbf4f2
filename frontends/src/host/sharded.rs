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
//! known to accept (the shard asks its [`Quota`], [`GlobalCount`], as its
//! last check before it grows), and the shard's write cannot fail after
//! that. A put that keeps the record's size (the common update) does not
//! touch the global count at all. An entry costs what its record costs:
//! key + value + 12 bytes, plus 8 for an expiry, 4 for nonzero flags and
//! 8 with cas (docs/store.md).
//!
//! Every other operation that grows an entry (concat, incr, a touch that
//! gives an entry its first expiry) goes through the same reservation.
//! After each operation, under the shard's lock, the global count follows
//! what the shard holds against before, less what was reserved: expired
//! entries that a get forgot or that the shard reclaimed give their budget
//! back at once, so the count stays exact.
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
//! The lock is held for one operation (a get's closure encodes the
//! response into the caller's buffer), never across IO.
//!
//! # Cas
//!
//! [`ShardedStore::with_cas`] gives every shard a cas counter of its own: a
//! key's cas still changes on every write of it (a key lives in one shard),
//! which is all memcached's `cas` compares; cas values of keys in different
//! shards may coincide.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use kvio_core::store::{RECORD_HEADER_LEN, Slot, slots_for};
use kvio_core::{
    Entry, Expiry, KeyValueStore, Millis, PutOptions, Quota, Store, StoreError, StoreLimits, VisitCursor, WhenFull,
};

/// The store of a Linux server: its slot table and arena are boxed slices.
pub type HostStore = Store<Box<[Slot]>, Box<[u8]>>;

/// One shard's store: a host store that asks the global count before it grows.
type ShardStore = Store<Box<[Slot]>, Box<[u8]>, StoreLimits, GlobalCount>;

/// A store of `entries` entries and `bytes` bytes under `limits`,
/// allocated now and never again.
pub fn host_store(limits: StoreLimits, entries: usize, bytes: usize) -> HostStore {
    try_host_store(limits, entries, bytes).unwrap_or_else(|e| panic!("{e}"))
}

/// [`host_store`], or how much was asked when the memory cannot be had.
pub fn try_host_store(limits: StoreLimits, entries: usize, bytes: usize) -> Result<HostStore, StoreAllocError> {
    let error = StoreAllocError { bytes: storage_bytes(entries, bytes) };
    // Both zeroed (an empty slot is all zeros) and never written up front:
    // an idle server's table and arena cost no memory until entries arrive.
    let slots = try_zeroed_slots(slots_for(entries)).ok_or(error)?;
    Ok(Store::with_empty_storage(slots, try_zeroed(bytes).ok_or(error)?, limits))
}

/// `n` empty slots in zeroed memory (calloc), or `None` if the allocator has none.
fn try_zeroed_slots(n: usize) -> Option<Box<[Slot]>> {
    if n == 0 {
        return Some(Box::default());
    }
    let layout = std::alloc::Layout::array::<Slot>(n).ok()?;
    // SAFETY: `layout` has a non-zero size (n > 0 and a slot is 8 bytes).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<Slot>();
    if ptr.is_null() {
        return None;
    }
    // SAFETY: `ptr` is a live allocation of the global allocator with
    // `layout` (`n` slots, a slot's alignment), all zeroed. A `Slot` is two
    // `u32`s, for which all-zero bytes are valid, and all zeros is
    // `Slot::EMPTY` (kvio-core documents it: "fresh tables are
    // zero-initialized memory"). The Box owns it and frees it with that layout.
    Some(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, n)) })
}

/// A store's memory could not be allocated: its slot table and arena
/// together (over every shard) are `bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreAllocError {
    /// What was asked, in bytes.
    pub bytes: usize,
}

impl std::fmt::Display for StoreAllocError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot allocate the store's {} bytes", self.bytes)
    }
}

impl std::error::Error for StoreAllocError {}

/// The bytes a slot table for `entries` and an arena of `bytes` take.
fn storage_bytes(entries: usize, bytes: usize) -> usize {
    slots_for(entries).saturating_mul(std::mem::size_of::<Slot>()).saturating_add(bytes)
}

/// `bytes` zeroed bytes, or `None` if the allocator has none: calloc, as
/// `vec![0; n]` is, so pages nobody writes cost no memory; but fallible,
/// which `vec!` is not (it aborts).
fn try_zeroed(bytes: usize) -> Option<Box<[u8]>> {
    if bytes == 0 {
        return Some(Box::default());
    }
    let layout = std::alloc::Layout::array::<u8>(bytes).ok()?;
    // SAFETY: `layout` has a non-zero size (checked above).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    if ptr.is_null() {
        return None;
    }
    // SAFETY: `ptr` is a live allocation of the global allocator with
    // `layout` (`bytes` u8s, alignment 1), all zeroed: a valid `[u8]` of
    // `bytes`, which the Box owns and frees with that same layout.
    Some(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, bytes)) })
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
    store: Mutex<ShardStore>,
    /// The next journal sequence number: taken and moved on only under
    /// `store`'s lock, so per key (a key lives in one shard) sequence
    /// order is the order the store applied the writes.
    seq: AtomicU64,
    /// Times this shard was locked (tests count the locks an operation takes).
    #[cfg(test)]
    locked: AtomicU64,
}

impl Shard {
    fn new(store: ShardStore) -> Shard {
        Shard {
            store: Mutex::new(store),
            seq: AtomicU64::new(1),
            #[cfg(test)]
            locked: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ShardStore> {
        #[cfg(test)]
        self.locked.fetch_add(1, Ordering::Relaxed);
        // A panic while holding a shard (a connection thread's) leaves the
        // store consistent: its put either had not begun or cannot fail.
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The count every shard shares: entries (high 32 bits) and budget bytes
/// (low 32 bits) in use over the whole store, and the global limits. Each
/// shard holds a handle, its [`Quota`]: a refusing shard about to grow
/// reserves the growth here (or is refused), and remembers what it
/// reserved until [`ShardedStore`] settles the operation.
#[derive(Debug)]
pub struct GlobalCount {
    count: Arc<Count>,
    /// Entries and bytes reserved by the operation in progress.
    reserved: (u64, u64),
}

#[derive(Debug)]
struct Count {
    used: AtomicU64,
    max_entries: u64,
    budget: u64,
}

impl Quota for GlobalCount {
    fn reserve(&mut self, entries: usize, bytes: usize) -> bool {
        let (more_entries, more_bytes) = (entries as u64, bytes as u64);
        let count = &*self.count;
        let reserved = count.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            let (entries, bytes) = unpack(used);
            let (entries, bytes) = (entries + more_entries, bytes + more_bytes);
            (entries <= count.max_entries && bytes <= count.budget).then(|| pack(entries, bytes))
        });
        if reserved.is_ok() {
            self.reserved.0 += more_entries;
            self.reserved.1 += more_bytes;
        }
        reserved.is_ok()
    }
}

/// The sharded store. See the [module docs](self).
#[derive(Debug)]
pub struct ShardedStore {
    shards: Box<[Shard]>,
    /// `64 - log2(shards)`: a key's shard is the top bits of its hash.
    shift: u32,
    limits: StoreLimits,
    when_full: WhenFull,
    /// Entries (high 32 bits) and budget bytes (low 32 bits) in use.
    count: Arc<Count>,
    /// Entries evicted over all shards: added to under the evicting
    /// shard's lock, so reading it takes no lock (a put's figures must not
    /// cost a lock per shard: `Observed` reads them after every put).
    evictions: AtomicU64,
    /// Expired entries dropped over all shards, kept the same way.
    expired: AtomicU64,
}

const BYTES_MASK: u64 = u32::MAX as u64;

fn pack(entries: u64, bytes: u64) -> u64 {
    (entries << 32) | bytes
}

fn unpack(used: u64) -> (u64, u64) {
    (used >> 32, used & BYTES_MASK)
}

/// What a shard holds, read under its lock before an operation.
#[derive(Debug, Clone, Copy)]
struct Before {
    entries: usize,
    bytes: usize,
    evictions: u64,
    expired: u64,
}

impl Before {
    fn of(shard: &ShardStore) -> Before {
        Before {
            entries: shard.len(),
            bytes: shard.bytes_used(),
            evictions: shard.evictions(),
            expired: shard.expired(),
        }
    }
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
        Self::try_with_policy(limits, shards, when_full).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`with_policy`](Self::with_policy), or how much was asked (over
    /// every shard) when the memory cannot be had.
    pub fn try_with_policy(
        limits: StoreLimits,
        shards: usize,
        when_full: WhenFull,
    ) -> Result<ShardedStore, StoreAllocError> {
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
        let count = Arc::new(Count {
            used: AtomicU64::new(0),
            max_entries: limits.max_entries as u64,
            budget: limits.byte_budget as u64,
        });
        let all = StoreAllocError { bytes: storage_bytes(entries, bytes).saturating_mul(shards) };
        let shards = (0..shards)
            .map(|_| {
                let store = try_host_store(shard_limits, entries, bytes).map_err(|_| all)?;
                let quota = GlobalCount { count: Arc::clone(&count), reserved: (0, 0) };
                Ok(Shard::new(store.when_full(when_full).with_quota(quota)))
            })
            .collect::<Result<Box<[Shard]>, StoreAllocError>>()?;
        Ok(ShardedStore {
            shift: 64 - shards.len().trailing_zeros(),
            shards,
            limits,
            when_full,
            count,
            evictions: AtomicU64::new(0),
            expired: AtomicU64::new(0),
        })
    }

    /// The same store with cas in every shard, or without (see
    /// [`Store::with_cas`] and the [module docs](self)): a builder, for a
    /// store that holds nothing yet.
    pub fn with_cas(self, cas: bool) -> ShardedStore {
        for shard in &self.shards {
            let mut store = shard.lock();
            // `with_cas` takes the store by value: swap in an empty one meanwhile.
            let none = Store::with_storage(Box::default(), Box::default(), store.limits())
                .with_quota(GlobalCount { count: Arc::clone(&self.count), reserved: (0, 0) });
            let built = std::mem::replace(&mut *store, none);
            *store = built.with_cas(cas);
        }
        self
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

    /// Entries stored, over all shards (expired ones not yet reclaimed included).
    pub fn len(&self) -> usize {
        unpack(self.count.used.load(Ordering::Acquire)).0 as usize
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Budget bytes in use, over all shards.
    pub fn bytes_used(&self) -> usize {
        unpack(self.count.used.load(Ordering::Acquire)).1 as usize
    }

    /// The shard `key` lives in.
    pub fn shard_of(&self, key: &[u8]) -> usize {
        if self.shift == 64 { 0 } else { (hash(key) >> self.shift) as usize }
    }

    /// Runs `op` on `key`'s shard under its lock, then settles the global
    /// figures with what the shard holds now.
    fn with_shard<R>(&self, key: &[u8], op: impl FnOnce(&mut ShardStore) -> R) -> R {
        let mut shard = self.shards[self.shard_of(key)].lock();
        let before = Before::of(&shard);
        let result = op(&mut shard);
        self.settle(&mut shard, before);
        result
    }

    /// Moves the global count by what the shard holds now against
    /// `before`, less what its operation reserved already; adds its
    /// evictions and expirations. Under the shard's lock.
    fn settle(&self, shard: &mut ShardStore, before: Before) {
        let reserved = std::mem::take(&mut shard.quota_mut().reserved);
        let entries = (shard.len() as u64).wrapping_sub(before.entries as u64).wrapping_sub(reserved.0);
        let bytes = (shard.bytes_used() as u64).wrapping_sub(before.bytes as u64).wrapping_sub(reserved.1);
        if entries != 0 || bytes != 0 {
            // Wrapping sums of the two halves: a shrink is a negative delta.
            let _ = self.count.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let (e, b) = unpack(used);
                Some(pack(e.wrapping_add(entries) & BYTES_MASK, b.wrapping_add(bytes) & BYTES_MASK))
            });
        }
        let evicted = shard.evictions() - before.evictions;
        if evicted != 0 {
            self.evictions.fetch_add(evicted, Ordering::Relaxed);
        }
        let expired = shard.expired() - before.expired;
        if expired != 0 {
            self.expired.fetch_add(expired, Ordering::Relaxed);
        }
    }

    /// Runs `op` on `key`'s shard under its lock, the global figures
    /// settled after it, as every operation is; if `changed` says the result changed the entry, calls `log` with a
    /// fresh sequence number and the key's entry now (None: it is gone),
    /// still under the shard's lock: what a journal records, in the order
    /// the store applied it (see [`kvio_core::journal`]).
    pub fn write_logged<R>(
        &self,
        key: &[u8],
        op: impl FnOnce(&mut ShardStore) -> R,
        changed: impl FnOnce(&R) -> bool,
        log: impl FnOnce(u64, Option<Entry<'_>>),
    ) -> R {
        let shard = &self.shards[self.shard_of(key)];
        let mut store = shard.lock();
        let before = Before::of(&store);
        let result = op(&mut store);
        self.settle(&mut store, before);
        if changed(&result) {
            // Relaxed: the lock orders it.
            let seq = shard.seq.fetch_add(1, Ordering::Relaxed);
            log(seq, store.peek(key));
        }
        result
    }

    /// Makes every shard's next sequence number at least `next` (after a
    /// recovery: new writes go above every record read).
    pub fn set_next_seq(&self, next: u64) {
        for shard in &self.shards {
            let _store = shard.lock();
            shard.seq.fetch_max(next, Ordering::Relaxed);
        }
    }

    /// Visits up to about `max` entries of shard `shard` from `cursor` on
    /// ([`Store::visit`]: every entry there when the visit began and not
    /// written since is seen once), under its lock, each with a fresh
    /// sequence number: a write of the key before this visit has a lower
    /// one, a write after it a higher one. True when the shard is done.
    pub fn visit_shard(
        &self,
        shard: usize,
        cursor: &mut VisitCursor,
        max: usize,
        mut f: impl FnMut(u64, &[u8], Entry<'_>),
    ) -> bool {
        let shard = &self.shards[shard];
        let store = shard.lock();
        store.visit(cursor, max, |key, entry| f(shard.seq.fetch_add(1, Ordering::Relaxed), key, entry))
    }

    /// Stores `value` under `key`, or refuses by the rule of the [module docs](self).
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.with_shard(key, |shard| shard.put(key, value))
    }

    /// Calls `f` with the value under `key`, the key's shard locked for the call.
    pub fn get<R>(&self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        let mut shard = self.shards[self.shard_of(key)].lock();
        let (entries, bytes) = (shard.len(), shard.bytes_used());
        let result = f(shard.fetch(key));
        if shard.len() != entries {
            // The get forgot its key's expired entry: the budget comes back.
            let expired = shard.expired() - (entries - shard.len()) as u64;
            let before = Before { entries, bytes, evictions: shard.evictions(), expired };
            self.settle(&mut shard, before);
        }
        result
    }

    /// Removes `key`; true when it was there.
    pub fn delete(&self, key: &[u8]) -> bool {
        self.with_shard(key, |shard| shard.delete(key))
    }

    /// Entries evicted over all shards (0 unless evicting). One atomic
    /// load: no shard is locked.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Expired entries dropped over all shards (by the lookup that found
    /// them or by reclaiming). One atomic load.
    pub fn expired(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }

    /// Locks taken so far, over all shards (tests: an operation takes one).
    #[cfg(test)]
    pub(crate) fn locks_taken(&self) -> u64 {
        self.shards.iter().map(|shard| shard.locked.load(Ordering::Relaxed)).sum()
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

    fn get_entry<R>(&mut self, key: &[u8], now: Millis, f: impl FnOnce(Option<Entry<'_>>) -> R) -> R {
        self.with_shard(key, |shard| f(shard.entry(key, now)))
    }

    fn put_with<R>(
        &mut self,
        key: &[u8],
        value: &[u8],
        opts: PutOptions,
        now: Millis,
        old: impl FnOnce(Option<Entry<'_>>) -> R,
    ) -> (R, Result<u64, StoreError>) {
        self.with_shard(key, |shard| shard.put_with(key, value, opts, now, old))
    }

    fn delete_at(&mut self, key: &[u8], now: Millis) -> bool {
        self.with_shard(key, |shard| shard.delete_at(key, now))
    }

    fn touch(&mut self, key: &[u8], expiry: Expiry, now: Millis) -> Option<Option<Millis>> {
        self.with_shard(key, |shard| shard.touch(key, expiry, now))
    }

    fn concat(&mut self, key: &[u8], bytes: &[u8], front: bool, now: Millis) -> Result<u64, StoreError> {
        self.with_shard(key, |shard| shard.concat(key, bytes, front, now))
    }

    fn incr(&mut self, key: &[u8], delta: u64, down: bool, now: Millis) -> Result<u64, StoreError> {
        self.with_shard(key, |shard| shard.incr(key, delta, down, now))
    }

    fn entries(&mut self) -> usize {
        self.len()
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

    impl ShardedStore {
        /// Entries and budget bytes summed over the shards, each locked.
        fn sum_of_shards(&self) -> (usize, usize) {
            self.shards.iter().map(|shard| shard.lock()).fold((0, 0), |(e, b), s| (e + s.len(), b + s.bytes_used()))
        }
    }

    fn at(t: Millis) -> PutOptions {
        PutOptions { expiry: Expiry::At(t), ..PutOptions::default() }
    }

    /// An expired entry forgotten by a get, or reclaimed by a shard before
    /// it refuses, gives its budget back to the global count at once.
    #[test]
    fn expired_entries_give_their_budget_back_at_once() {
        let store = ShardedStore::with_shards(limits(8, 1 << 12), 4);
        let mut handle = &store;
        for i in 0..8u8 {
            assert_eq!(handle.put_with(&[b'k', i], b"v", at(100), 0, |_| ()).1, Ok(0));
        }
        assert_eq!(store.len(), 8);
        assert_eq!(store.put(b"new", b"v"), Err(StoreError::Full), "8 of 8 entries, none expired yet");
        assert!(handle.get_entry(b"k\x01", 100, |e| e.is_none()));
        assert_eq!((store.len(), store.expired()), (7, 1), "the get forgot it and the count followed");
        assert_eq!(store.sum_of_shards(), (store.len(), store.bytes_used()));
        store.put(b"new", b"v").unwrap();
        // Full again, of expired entries: a put into a shard that holds one
        // reclaims it before refusing.
        let home = store.shard_of(b"k\x02");
        let key = (0..1000u32).map(|i| format!("n{i}").into_bytes()).find(|k| store.shard_of(k) == home).unwrap();
        assert_eq!(handle.put_with(&key, b"v", PutOptions::default(), 100, |_| ()).1, Ok(0));
        assert!(store.expired() >= 2);
        assert_eq!(store.sum_of_shards(), (store.len(), store.bytes_used()));
        assert!(store.len() <= 8);
    }

    /// Every operation through `&ShardedStore` keeps the global count the
    /// sum of the shards', and the limits.
    #[test]
    fn every_operation_keeps_the_global_count_exact() {
        let store = ShardedStore::with_shards(limits(30, 1200), 4).with_cas(true);
        let mut s = &store;
        let mut now = 1000;
        for round in 0..3000u32 {
            let k = [b'k', (round * 7 % 23) as u8];
            let o = PutOptions {
                flags: round % 3,
                expiry: [Expiry::Never, Expiry::At(now + 5), Expiry::Keep][round as usize % 3],
                ..PutOptions::default()
            };
            match round % 9 {
                0..=2 => {
                    let _ = s.put_with(&k, &round.to_string().into_bytes(), o, now, |_| ());
                }
                3 => {
                    let _ = s.concat(&k, b"x", round % 2 == 0, now);
                }
                4 => {
                    let _ = s.incr(&k, 3, round % 4 == 0, now);
                }
                5 => {
                    let _ = s.touch(&k, [Expiry::Never, Expiry::At(now + 9)][round as usize % 2], now);
                }
                6 => {
                    let _ = s.delete_at(&k, now);
                }
                7 => s.get_entry(&k, now, |_| ()),
                _ => now += 3,
            }
            assert_eq!(store.sum_of_shards(), (store.len(), store.bytes_used()), "round {round}");
            assert!(store.len() <= 30 && store.bytes_used() <= 1200);
        }
        assert!(
            store.expired() > 0,
            "{} entries, {} bytes, {} expired",
            store.len(),
            store.bytes_used(),
            store.expired()
        );
    }

    /// A put, a get, a delete and each new operation takes its key's shard
    /// lock once, and nothing else.
    #[test]
    fn each_operation_takes_one_shard_lock() {
        let store = ShardedStore::with_shards(limits(64, 1 << 12), 8);
        let mut s = &store;
        type Op = fn(&mut &ShardedStore);
        let ops: [(&str, Op); 9] = [
            ("put", |s| {
                let _ = s.put(b"k", b"1");
            }),
            ("get", |s| s.get(b"k", |_| ())),
            ("put_with", |s| {
                let _ = s.put_with(b"k", b"2", at(10_000), 5, |_| ());
            }),
            ("get_entry", |s| s.get_entry(b"k", 5, |_| ())),
            ("touch", |s| {
                let _ = s.touch(b"k", Expiry::Never, 5);
            }),
            ("concat", |s| {
                let _ = s.concat(b"k", b"0", false, 5);
            }),
            ("incr", |s| {
                let _ = s.incr(b"k", 1, false, 5);
            }),
            ("delete_at", |s| {
                let _ = s.delete_at(b"k", 5);
            }),
            ("delete", |s| {
                let _ = s.delete(b"k");
            }),
        ];
        for (name, op) in ops {
            let before = store.locks_taken();
            op(&mut s);
            assert_eq!(store.locks_taken() - before, 1, "{name}");
        }
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
        use kvio_core::Condition;
        use proptest::prelude::*;
        use proptest::test_runner::TestCaseError;

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

        #[derive(Debug, Clone)]
        enum Timed {
            Put { key: u8, value: Vec<u8>, flags: u32, expiry: Expiry, condition: Condition },
            Get(u8),
            Delete(u8),
            Touch(u8, Expiry),
            Concat(u8, Vec<u8>),
            Incr(u8, u64),
            Wait(u64),
        }

        fn timed() -> impl Strategy<Value = Timed> {
            let key = 0u8..8;
            let value = prop_oneof![Just(b"12".to_vec()), prop::collection::vec(any::<u8>(), 0..20)];
            let expiry =
                prop_oneof![Just(Expiry::Never), Just(Expiry::Keep), (0u64..30).prop_map(|t| Expiry::At(995 + t))];
            let condition = prop_oneof![Just(Condition::Always), Just(Condition::Absent), Just(Condition::Present)];
            prop_oneof![
                4 => (key.clone(), value.clone(), prop_oneof![Just(0u32), Just(9)], expiry.clone(), condition)
                    .prop_map(|(key, value, flags, expiry, condition)| Timed::Put { key, value, flags, expiry, condition }),
                2 => key.clone().prop_map(Timed::Get),
                1 => key.clone().prop_map(Timed::Delete),
                1 => (key.clone(), expiry).prop_map(|(k, e)| Timed::Touch(k, e)),
                1 => (key.clone(), value).prop_map(|(k, v)| Timed::Concat(k, v)),
                1 => (key, 1u64..4).prop_map(|(k, d)| Timed::Incr(k, d)),
                1 => (0u64..10).prop_map(Timed::Wait),
            ]
        }

        /// Live entries (value, flags, expiry, has an expiry field) and expired ones the store may still hold.
        #[derive(Default)]
        struct TimedModel {
            live: BTreeMap<u8, (Vec<u8>, u32, Option<Millis>, bool)>,
            lingering: BTreeMap<u8, usize>,
            now: Millis,
        }

        impl TimedModel {
            fn cost((value, flags, _, field): &(Vec<u8>, u32, Option<Millis>, bool)) -> usize {
                RECORD_HEADER_LEN + 8 * usize::from(*field) + 4 * usize::from(*flags != 0) + 1 + value.len()
            }

            fn look(&mut self, key: u8) -> Option<(Vec<u8>, u32, Option<Millis>, bool)> {
                self.lingering.remove(&key);
                self.live.get(&key).cloned()
            }

            /// (surely fits, surely refused) for `key` holding `new`, against
            /// the global limits and the key's shard's; `both`: the old and
            /// the new record are in the shard's arena at once (concat, a
            /// growing touch), and a shard's arena is its byte capacity.
            fn fits(
                &self,
                store: &ShardedStore,
                key: u8,
                new: &(Vec<u8>, u32, Option<Millis>, bool),
                both: bool,
            ) -> (bool, bool) {
                let old = if both { self.live.get(&key).map_or(0, Self::cost) } else { 0 };
                let shard = store.shard_of(&[key]);
                let (global, own) = (store.limits(), store.shard_limits());
                let mut verdict = (true, false);
                for (limits, mine) in [(global, false), (own, true)] {
                    let here = |k: &u8| !mine || store.shard_of(&[*k]) == shard;
                    let live = self.live.iter().filter(|(k, _)| **k != key && here(k));
                    let (e, b) = live.fold((1, Self::cost(new)), |(e, b), (_, h)| (e + 1, b + Self::cost(h)));
                    let linger = self.lingering.iter().filter(|(k, _)| here(k));
                    let (le, lb) = linger.fold((0, 0), |(e, b), (_, c)| (e + 1, b + c));
                    let arena = if mine { old } else { 0 };
                    let ok = |e: usize, b: usize| e <= limits.max_entries && b + arena <= limits.byte_budget;
                    verdict = (verdict.0 && ok(e + le, b + lb), verdict.1 || !ok(e, b));
                }
                verdict
            }
        }

        proptest! {
            /// Over time, with every operation: answers are the model's but
            /// for refusals that expired entries the store still holds may
            /// explain; the global count is the shards' sum, exactly.
            #[test]
            fn sharded_store_over_time_keeps_the_rules(
                shards in prop::sample::select(vec![1usize, 2, 4]),
                entries in 1usize..16,
                bytes in 0usize..500,
                ops in prop::collection::vec(timed(), 0..200),
            ) {
                let store = ShardedStore::with_shards(limits(entries, bytes), shards);
                let mut s = &store;
                let mut m = TimedModel { now: 1000, ..TimedModel::default() };
                let max_value = store.limits().max_value_len;
                for op in ops {
                    let now = m.now;
                    // A write's outcome: the model's, or a refusal it allows.
                    let write = |m: &mut TimedModel, key: u8, new: (Vec<u8>, u32, Option<Millis>, bool), ok: bool, full: bool, both: bool| -> Result<(), TestCaseError> {
                        let (fits, refused) = m.fits(&store, key, &new, both);
                        prop_assert!(if ok { !refused } else { full && !fits }, "key {}: stored {}, fits {}, refused {}", key, ok, fits, refused);
                        if ok {
                            m.live.insert(key, new);
                        }
                        Ok(())
                    };
                    match op {
                        Timed::Wait(t) => {
                            m.now += t;
                            let now = m.now;
                            let gone: Vec<u8> = m.live.iter().filter(|(_, h)| h.2.is_some_and(|t| t <= now)).map(|(k, _)| *k).collect();
                            for k in gone {
                                let held = m.live.remove(&k).unwrap();
                                m.lingering.insert(k, TimedModel::cost(&held));
                            }
                        }
                        Timed::Get(k) => {
                            let got = s.get_entry(&[k], now, |e| e.map(|e| (e.value.to_vec(), e.flags, e.expires)));
                            let want = m.look(k).map(|(v, f, e, _)| (v, f, e));
                            prop_assert_eq!(got, want);
                        }
                        Timed::Delete(k) => {
                            let want = m.look(k).is_some();
                            prop_assert_eq!(s.delete_at(&[k], now), want);
                            m.live.remove(&k);
                        }
                        Timed::Put { key, value, flags, expiry, condition } => {
                            let old = m.look(key);
                            let got = s.put_with(&[key], &value, PutOptions { flags, expiry, condition, text: false }, now, |_| ()).1;
                            let expires = match expiry {
                                Expiry::Never => None,
                                Expiry::At(t) => Some(t),
                                Expiry::Keep => old.as_ref().and_then(|h| h.2),
                            };
                            if value.len() > max_value {
                                prop_assert_eq!(got, Err(StoreError::ValueTooLong));
                            } else if matches!((condition, &old), (Condition::Absent, Some(_)) | (Condition::Present, None)) {
                                prop_assert_eq!(got, Err(StoreError::NotStored));
                            } else if expires.is_some_and(|t| t <= now) {
                                prop_assert_eq!(got, Ok(0));
                                m.live.remove(&key);
                            } else {
                                write(&mut m, key, (value, flags, expires, expires.is_some()), got.is_ok(), got == Err(StoreError::Full), false)?;
                            }
                        }
                        Timed::Touch(k, expiry) => {
                            let old = m.look(k);
                            let got = s.touch(&[k], expiry, now);
                            match old {
                                None => prop_assert_eq!(got, None),
                                Some(held) => {
                                    let want = match expiry { Expiry::Never => None, Expiry::At(t) => Some(t), Expiry::Keep => held.2 };
                                    if want.is_some_and(|t| t <= now) {
                                        prop_assert_eq!(got, Some(held.2));
                                        m.live.remove(&k);
                                    } else if want != held.2 && !held.3 {
                                        let longer = (held.0.clone(), held.1, want, true);
                                        write(&mut m, k, longer, got.is_some(), got.is_none(), true)?;
                                    } else {
                                        prop_assert_eq!(got, Some(held.2));
                                        m.live.insert(k, (held.0, held.1, want, held.3));
                                    }
                                }
                            }
                        }
                        Timed::Concat(k, bytes) => {
                            let old = m.look(k);
                            let got = s.concat(&[k], &bytes, false, now);
                            match old {
                                None => prop_assert_eq!(got, Err(StoreError::NotStored)),
                                Some(mut held) => {
                                    held.0.extend_from_slice(&bytes);
                                    if held.0.len() > max_value {
                                        prop_assert_eq!(got, Err(StoreError::ValueTooLong));
                                    } else {
                                        // Nothing appended: written in place.
                                        let both = !bytes.is_empty();
                                        write(&mut m, k, held, got.is_ok(), got == Err(StoreError::Full), both)?;
                                    }
                                }
                            }
                        }
                        Timed::Incr(k, delta) => {
                            let old = m.look(k);
                            let got = s.incr(&[k], delta, false, now);
                            let number = |v: &[u8]| std::str::from_utf8(v).ok().filter(|v| (1..=20).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit())).and_then(|v| v.parse::<u64>().ok());
                            match old {
                                None => prop_assert_eq!(got, Err(StoreError::NotFound)),
                                Some(held) => match number(&held.0) {
                                    None => prop_assert_eq!(got, Err(StoreError::NotANumber)),
                                    Some(n) => {
                                        let n = n.wrapping_add(delta);
                                        if let Ok(got) = got { prop_assert_eq!(got, n); }
                                        let new = (n.to_string().into_bytes(), held.1, held.2, held.3);
                                        write(&mut m, k, new, got.is_ok(), got == Err(StoreError::Full), false)?;
                                    }
                                },
                            }
                        }
                    }
                    prop_assert_eq!(store.sum_of_shards(), (store.len(), store.bytes_used()));
                    let live: usize = m.live.values().map(TimedModel::cost).sum();
                    let lingering: usize = m.lingering.values().sum();
                    prop_assert!((m.live.len()..=m.live.len() + m.lingering.len()).contains(&store.len()));
                    prop_assert!((live..=live + lingering).contains(&store.bytes_used()));
                    prop_assert!(store.len() <= store.limits().max_entries && store.bytes_used() <= store.limits().byte_budget);
                }
            }
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
