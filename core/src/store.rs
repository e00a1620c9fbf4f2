//! A key/value store whose capacity is fixed when it is built.
//!
//! Capacity is two numbers: how many entries, and a byte budget for what the
//! entries hold (each entry costs its key, its value and a record header of
//! 12 bytes, plus 8 for an expiry, 4 for nonzero flags and 8 in a store
//! with cas: see "Records"). Memory is the slot table plus the arena that
//! holds those bytes; nothing is reserved per entry for the largest key or
//! value, and nothing is ever allocated: the storage is handed in (arrays
//! in a `static` on a microcontroller, boxed slices on a host).
//!
//! Layout: an open-addressing table of [`Slot`]s (hash + arena offset,
//! linear probing) and a byte arena of records. A delete empties its slot
//! by backward shift (the entries after it in the probe run move back), so
//! there are no tombstones and probes stay as short as the load allows.
//!
//! A lookup touches the arena only where it must. Each slot holds the key's
//! full 32-bit hash, and a probe reads a record only when that hash matches:
//! a miss reads no record (but for a 2^-32 chance per slot probed), and a hit
//! reads its one record once, header, key and value being contiguous. Slots
//! are 8 bytes, eight to a cache line, and the table stays under 7/8 full, so
//! a probe is nearly always one line of a table several times smaller than
//! the arena: the record is the one access expected to miss the cache.
//!
//! # Records
//!
//! ```text
//! [meta: u32][key_len: u16][opts: u16][value_len: u32]   12 bytes, always
//! [expires: u64]    if opts & EXPIRES   absolute, on the caller's clock (ms)
//! [cas: u64]        if opts & CAS       every record of a store built with_cas
//! [flags: u32]      if opts & FLAGS     only when nonzero
//! [key][value]
//! ```
//!
//! `meta` is the record's slot index plus a "recently used" bit, or all
//! ones for a dead record; `opts` says which optional fields follow (and,
//! in its `TEXT` bit, that the value is known to be UTF-8). A plain entry,
//! the only kind a kvio frame makes, is the 12-byte header, its key and
//! its value, as before expiry and cas existed; keys are at most
//! [`MAX_KEY_LEN`] (64 KiB - 1) bytes to fit `key_len`.
//!
//! # Time and expiry
//!
//! The store never reads a clock: each operation takes `now` ([`Millis`])
//! and the store keeps the latest it was given, so an operation passed 0
//! (the [`KeyValueStore`] methods of old) uses that. An entry whose expiry
//! is at or before now is absent to every operation. A lookup that finds
//! one forgets it at once (lazy expiry, as Redis and memcached do); the
//! reclaiming hand (below) drops an expired record it reaches instead of
//! moving or evicting it. Both are counted in [`Store::expired`], apart
//! from evictions.
//!
//! # The arena is a ring, reclaimed at its tail
//!
//! An update that keeps the record's size is written in place (the value
//! and the optional fields). Any other put appends a record at the ring's
//! head; the record it replaces, like a deleted one, is marked dead. Space
//! comes back at the tail, the oldest record, one record at a time, only
//! as a put needs it: a dead record is passed over, a live one is moved to
//! the head (or, under [`WhenFull::Evict`], evicted). A move may overlap
//! the bytes the record leaves, so it never fails for want of room
//! (log-structured cleaning, as in Segcache or a log-structured file
//! system, with the segment shrunk to one record).
//!
//! # Bounded work
//!
//! No put pays for more than a bounded slice of reclaiming: it moves at
//! most [`MAX_MOVES`] records and [`move_budget`]`(cost)` bytes, and visits
//! at most [`visit_budget`]`(cost)` records, dead ones included (a fixed
//! slice plus three per 12 bytes of its own size). The count that makes
//! this hold: every record the hand visits, but a move, frees at least 12
//! contiguous bytes (a record is at least its 12-byte header), so after
//! its moves and twice `cost / 12` other visits the hand has made room for
//! any record. Many updates of one key leave a long run of dead records;
//! a put that needs room passes only as many as it needs, and a put that
//! needs budget (an evicting store over its entry or byte limit) does not
//! walk the run to its end: see below.
//!
//! A refusing store whose tail is packed with live records beyond the
//! slice falls back to sliding every live record down in one pass
//! ([`Store::compactions`]): give such an arena slack beyond its budget.
//! An evicting store never compacts.
//!
//! # When full
//!
//! [`WhenFull::Refuse`] (the default): a put that does not fit is refused
//! and hands the error back; nothing stored is lost, and a refused update
//! keeps the old value.
//!
//! [`WhenFull::Evict`]: the tail is also a CLOCK hand. A get or a put marks
//! its record used (one bit in `meta`); a new entry starts unmarked. When a
//! put is over budget (the entry limit, or the byte budget less 1/16 of the
//! arena kept for moves), the live record at the tail is given a second
//! chance if it is marked (moved to the head, mark cleared) and evicted if
//! not. Within budget, a put that only needs contiguous room moves live
//! records rather than evict them, but for an unused one with no free
//! bytes beside it: moved, it would only slide over its own bytes and
//! make no room, so it is evicted (keeping it cost a churning store a
//! tenth of its entries, measured). CLOCK rather than sampled LRU because
//! the hand is the reclaiming cursor the ring needs anyway: eviction frees
//! bytes exactly where the next record goes, with no per-entry timestamp
//! (one bit, in a header already there) and no random sampling of the
//! table. Evictions are counted ([`Store::evictions`]).
//!
//! Second chance and bounded work meet in two places, and this is what a
//! put does there:
//!
//! - Over budget, when the hand has spent its visits (a long run of dead
//!   records at the tail) or holds a used record with no move left, the
//!   victim is taken near the key's slot in the table instead, in place:
//!   used entries there have their mark cleared and are passed, up to
//!   [`NEARBY`] a put, and the first unused one is evicted (its record is
//!   dead where it lies). So a used entry is evicted for budget only after
//!   a put has spared [`NEARBY`] others.
//! - Within budget but without contiguous room, once the moves are spent,
//!   the record at the hand is evicted, used or not: room exists only
//!   beyond it. No bounded rule can do better: a run at the tail of more
//!   live, used records than a put may move leaves only a used one to
//!   evict. This needs more live records in a row at the tail than a put
//!   may move, with the dead bytes beyond them.
//!
//! # Operations beyond put, get and delete
//!
//! [`KeyValueStore`] also has what RESP and the memcached protocols need:
//! conditional puts ([`Condition`]: NX / XX / cas), expiry ([`Expiry`]),
//! client flags, [`touch`](KeyValueStore::touch),
//! [`concat`](KeyValueStore::concat) (append / prepend) and
//! [`incr`](KeyValueStore::incr). A store built [`with_cas`](Store::with_cas)
//! gives every write a new cas from a store-wide counter.
//!
//! [`Shared`] wraps any store in a `critical_section::Mutex<RefCell<_>>`
//! reachable from a `static`: threads or interrupt handlers reach it only
//! through a closure, so a borrow can never be held across IO.

use core::cell::RefCell;

/// A time on the caller's clock, in milliseconds (the host passes Unix
/// time in ms; a firmware may pass 0 for ever: nothing then expires but an
/// entry put with [`Expiry::At`]`(0)`). The store never reads a clock. It
/// keeps the latest `now` it was given (the maximum), so the methods that
/// take no `now` (and those passed 0) use that.
pub type Millis = u64;

/// When an entry written by [`KeyValueStore::put_with`] expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Expiry {
    /// No expiry (a put with it clears the old entry's).
    #[default]
    Never,
    /// Expires at this instant (absolute). At or before `now`: the put
    /// succeeds and the entry is at once absent (Redis and memcached both
    /// accept a past expiry as "delete"). `At(u64::MAX)` is `Never`.
    At(Millis),
    /// Keep the old entry's expiry (Redis KEEPTTL; none if it had none or
    /// was absent).
    Keep,
}

/// When [`KeyValueStore::put_with`] may store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Condition {
    /// Whether or not the key is present.
    #[default]
    Always,
    /// Only if the key is absent (NX, memcached `add`); else
    /// [`StoreError::NotStored`].
    Absent,
    /// Only if the key is present (XX, memcached `replace`); else
    /// [`StoreError::NotStored`].
    Present,
    /// Only if present with this cas (memcached `cas`): absent is
    /// [`StoreError::NotFound`], another cas [`StoreError::Exists`]. A
    /// store built without cas has no cas to match: always `Exists` (or
    /// `NotFound`).
    Cas(u64),
}

/// How [`KeyValueStore::put_with`] stores. The default is a plain put.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PutOptions {
    /// Stored with the value and handed back by gets (memcached's client
    /// flags); 0 costs nothing (nonzero: 4 bytes of the record).
    pub flags: u32,
    /// When the entry expires (one: 8 bytes of the record).
    pub expiry: Expiry,
    /// When the put may store.
    pub condition: Condition,
    /// The caller knows the value is valid UTF-8 (kvio frames decode it as
    /// a proto3 string, so they know for free); kept as one header bit so
    /// a kvio-frame get of a value stored over RESP can tell without
    /// validating every time.
    pub text: bool,
}

/// An entry as a get sees it (borrowed from the arena for the closure's call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Entry<'a> {
    /// The value.
    pub value: &'a [u8],
    /// The flags it was put with (0 if none).
    pub flags: u32,
    /// Absolute expiry on the caller's clock; None: never.
    pub expires: Option<Millis>,
    /// Changes on every write of the entry (memcached's cas unique, a
    /// store-wide counter); 0 in a store built without cas.
    pub cas: u64,
    /// Known valid UTF-8 (see [`PutOptions::text`]).
    pub text: bool,
}

/// Why an operation stored nothing. Nothing existing was lost either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum StoreError {
    /// The key is longer than the store's key limit.
    KeyTooLong,
    /// The value is longer than the store's value limit.
    ValueTooLong,
    /// The entry does not fit: the entry count or the byte budget is used up.
    Full,
    /// A [`Condition::Absent`] or [`Condition::Present`] did not hold, or
    /// [`KeyValueStore::concat`] found no entry.
    NotStored,
    /// [`Condition::Cas`]: the entry is there with another cas.
    Exists,
    /// [`Condition::Cas`] or [`KeyValueStore::incr`] found no entry.
    NotFound,
    /// [`KeyValueStore::incr`]: the value is not a decimal u64 (1 to 20 digits).
    NotANumber,
    /// An expiry in the future or nonzero flags, asked of a store whose
    /// records cannot carry them: kvio-core built without its
    /// `entry-fields` feature (a device that serves kvio frames only).
    Unsupported,
    /// The host cannot write its journal (disk full, an IO error): the
    /// write was refused rather than acknowledged unwritten. Never
    /// returned by a [`Store`]; a host's journaled store returns it.
    NotPersisted,
}

impl StoreError {
    /// A short reason.
    pub const fn as_str(&self) -> &'static str {
        match self {
            StoreError::KeyTooLong => "key too long",
            StoreError::ValueTooLong => "value too long",
            StoreError::Full => "store full",
            StoreError::NotStored => "not stored",
            StoreError::Exists => "changed since its cas was read",
            StoreError::NotFound => "not found",
            StoreError::NotANumber => "not a number",
            StoreError::Unsupported => "expiry and flags unsupported by this store",
            StoreError::NotPersisted => "not persisted: the server cannot write its journal",
        }
    }
}

impl core::fmt::Display for StoreError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for StoreError {}

/// What a key/value store does for the protocols: kvio frames use `put`,
/// `get` and `delete`; RESP and memcached the rest.
///
/// Every method that takes `now` treats an entry whose expiry is at or
/// before it as absent (see [`Millis`]); `put`, `get` and `delete` pass 0,
/// that is the latest `now` the store was given.
pub trait KeyValueStore {
    /// Stores `value` under `key`, replacing any old value (no expiry, no
    /// flags, whatever the old entry had).
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.put_with(key, value, PutOptions::default(), 0, |_| ()).1.map(drop)
    }

    /// Calls `f` with the value stored under `key` (the borrow lasts only
    /// for the call, so a shared store's lock cannot outlive it).
    fn get<R>(&mut self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        self.get_entry(key, 0, |entry| f(entry.map(|entry| entry.value)))
    }

    /// Removes `key`; true when it was there.
    fn delete(&mut self, key: &[u8]) -> bool {
        self.delete_at(key, 0)
    }

    /// Calls `f` with the entry under `key` (None if absent or expired at
    /// `now`), marked used.
    fn get_entry<R>(&mut self, key: &[u8], now: Millis, f: impl FnOnce(Option<Entry<'_>>) -> R) -> R;

    /// Stores `value` under `key` if `opts.condition` holds; `old` is first
    /// called with the entry it replaces (None if absent or expired),
    /// before anything is written (Redis `SET .. GET` answers with it),
    /// whether the put then stores or not. Returns what `old` returned and
    /// the new entry's cas (0 without cas, and 0 for an expiry at or before
    /// `now`, which leaves no entry). Refusals are checked in this order:
    /// the key and value limits, the condition, then room.
    fn put_with<R>(
        &mut self,
        key: &[u8],
        value: &[u8],
        opts: PutOptions,
        now: Millis,
        old: impl FnOnce(Option<Entry<'_>>) -> R,
    ) -> (R, Result<u64, StoreError>);

    /// Removes `key`; true if it was there (and not expired).
    fn delete_at(&mut self, key: &[u8], now: Millis) -> bool;

    /// Sets ([`Expiry::At`]), clears ([`Expiry::Never`]) or leaves
    /// ([`Expiry::Keep`]) the expiry of a present entry and marks it used;
    /// its cas is kept (memcached's `touch` and Redis's `EXPIRE` do not
    /// change the value). None if absent; else Some(the expiry it had). An
    /// expiry at or before `now` removes the entry (it had one: Some).
    ///
    /// In place when the entry has an expiry field (clearing keeps the
    /// field, set to never). Giving one to an entry that has none rewrites
    /// its record 8 bytes longer: a refusing store with less than that
    /// left of its budget (or arena) cannot, and then touch changes nothing
    /// and returns None as for an absent key (the one case it does); an
    /// evicting store makes room, and in the rare case that making room
    /// evicts this very entry, returns None too (it is gone).
    fn touch(&mut self, key: &[u8], expiry: Expiry, now: Millis) -> Option<Option<Millis>>;

    /// Appends (front = false) or prepends `bytes` to a present entry's
    /// value, keeping its flags and expiry (and its UTF-8 mark if `bytes`
    /// are UTF-8); [`StoreError::NotStored`] if absent; the usual
    /// [`StoreError::ValueTooLong`] / [`StoreError::Full`]. Returns the new
    /// cas. The old and the new record are in the arena at once while it
    /// is written: a refusing store whose live bytes plus the new record
    /// pass its arena refuses it as `Full`; an evicting store whose room
    /// making evicts this very entry answers `NotStored`, as if it had been
    /// evicted just before.
    fn concat(&mut self, key: &[u8], bytes: &[u8], front: bool, now: Millis) -> Result<u64, StoreError>;

    /// memcached incr/decr: the value read as a decimal u64, plus (down =
    /// false, wrapping at 2^64) or minus (down = true, floored at 0)
    /// `delta`, written back as decimal (no leading zeros; marked UTF-8);
    /// keeps flags and expiry. Returns the new number.
    /// [`StoreError::NotFound`] if absent, [`StoreError::NotANumber`] if
    /// the value is not 1 to 20 ASCII digits of a u64.
    fn incr(&mut self, key: &[u8], delta: u64, down: bool, now: Millis) -> Result<u64, StoreError>;

    /// Entries held (expired ones not yet reclaimed included, as Redis's DBSIZE).
    fn entries(&mut self) -> usize;
}

impl<T: KeyValueStore + ?Sized> KeyValueStore for &mut T {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        (**self).put(key, value)
    }

    fn get<R>(&mut self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        (**self).get(key, f)
    }

    fn delete(&mut self, key: &[u8]) -> bool {
        (**self).delete(key)
    }

    fn get_entry<R>(&mut self, key: &[u8], now: Millis, f: impl FnOnce(Option<Entry<'_>>) -> R) -> R {
        (**self).get_entry(key, now, f)
    }

    fn put_with<R>(
        &mut self,
        key: &[u8],
        value: &[u8],
        opts: PutOptions,
        now: Millis,
        old: impl FnOnce(Option<Entry<'_>>) -> R,
    ) -> (R, Result<u64, StoreError>) {
        (**self).put_with(key, value, opts, now, old)
    }

    fn delete_at(&mut self, key: &[u8], now: Millis) -> bool {
        (**self).delete_at(key, now)
    }

    fn touch(&mut self, key: &[u8], expiry: Expiry, now: Millis) -> Option<Option<Millis>> {
        (**self).touch(key, expiry, now)
    }

    fn concat(&mut self, key: &[u8], bytes: &[u8], front: bool, now: Millis) -> Result<u64, StoreError> {
        (**self).concat(key, bytes, front, now)
    }

    fn incr(&mut self, key: &[u8], delta: u64, down: bool, now: Millis) -> Result<u64, StoreError> {
        (**self).incr(key, delta, down, now)
    }

    fn entries(&mut self) -> usize {
        (**self).entries()
    }
}

/// What a store does with a put that does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WhenFull {
    /// Refuse it with [`StoreError::Full`]; nothing stored is lost.
    #[default]
    Refuse,
    /// Evict entries not used recently (CLOCK, see the [module docs](self))
    /// until it fits. Only an entry bigger than the whole budget is refused.
    Evict,
}

/// A limit a refusing store shares with others: the global entry and byte
/// count of a host's sharded store, asked before a shard grows. The store
/// asks once per write that grows it (a new entry, or a bigger record) and
/// only after its own limits let the write through; if `reserve` says yes
/// the write cannot fail any more. `()` is no such limit. An evicting
/// store never asks (it holds its own share exactly).
pub trait Quota {
    /// The store is about to hold `entries` more entries and `bytes` more
    /// budget bytes than when the operation began (either may be 0);
    /// false refuses the write as [`StoreError::Full`].
    fn reserve(&mut self, entries: usize, bytes: usize) -> bool;
}

impl Quota for () {
    #[inline(always)]
    fn reserve(&mut self, _entries: usize, _bytes: usize) -> bool {
        true
    }
}

/// Most live records one put moves from the tail to the head.
pub const MAX_MOVES: usize = 16;

/// Most bytes one put of `cost` budget bytes moves from the tail to the
/// head: a fixed slice (a few cache lines' worth of memmove) plus twice
/// its own size, so a large put may give a large record its second chance.
pub const fn move_budget(cost: usize) -> usize {
    4096 + 2 * cost
}

/// Records one put may visit for reclaiming, beyond a share of its own
/// size: see [`visit_budget`].
pub const MAX_VISITS: usize = 2 * MAX_MOVES + NEARBY;

/// Used entries one put spares (clears the mark of) when it looks for a
/// victim near its key's slot; see the module docs, "Bounded work".
pub const NEARBY: usize = 32;

/// Records the hand at the tail may visit for one put of `cost` bytes:
/// each visit but the [`MAX_MOVES`] moves frees at least 12 bytes, and the
/// free bytes may lie on both sides of a wrap, hence twice `cost / 12`.
const fn hand_visits(cost: usize) -> usize {
    2 * MAX_MOVES + 2 * cost.div_ceil(RECORD_HEADER_LEN)
}

/// Most records one put of `cost` budget bytes visits for reclaiming
/// (dead ones passed over, live ones moved or evicted, neighbours looked
/// at for a victim): a fixed slice plus three per 12 bytes of its own
/// size, since a dead record it passes gives back at least 12 bytes.
/// Only a refusing store's one-pass compaction reads more.
pub const fn visit_budget(cost: usize) -> usize {
    MAX_VISITS + 3 * cost.div_ceil(RECORD_HEADER_LEN)
}

/// Where a put looks for a victim near its key's slot, and how many used
/// entries it spared there.
struct Nearby {
    at: usize,
    spared: usize,
}

/// The most bytes any single response adds around a key and a value
/// (tags, length varints, kind and status), so a stored entry always fits
/// in a `Get` response frame. The encoding is `kvio-proto`'s business: a
/// test there computes this number from its encoder, so the two cannot drift.
pub const RESPONSE_OVERHEAD: usize = 20;
/// Key limit used by [`Limits::for_frame`] when the frame leaves room for it.
pub const DEFAULT_MAX_KEY_LEN: usize = 1024;
/// The longest key any store holds: a record keeps its length in 16 bits.
pub const MAX_KEY_LEN: usize = u16::MAX as usize;
/// Bytes of budget every entry costs beyond its key and value: the record
/// header. An expiry adds [`EXPIRY_LEN`], nonzero flags [`FLAGS_LEN`], and
/// a store with cas [`CAS_LEN`] to every entry.
pub const RECORD_HEADER_LEN: usize = 12;
/// Bytes an entry's expiry adds to its cost.
pub const EXPIRY_LEN: usize = 8;
/// Bytes an entry's cas adds to its cost (every entry of a store with cas).
pub const CAS_LEN: usize = 8;
/// Bytes an entry's nonzero flags add to its cost.
pub const FLAGS_LEN: usize = 4;

const _: () = assert!(DEFAULT_MAX_KEY_LEN <= MAX_KEY_LEN, "key_len is 16 bits");

/// The store's limits. Build them with [`Limits::for_frame`] so that the
/// store and the frame parser agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Limits {
    /// Most entries held at once.
    pub max_entries: usize,
    /// Bytes all entries may hold together (key + value + 12 each, more
    /// with an expiry, flags or cas).
    pub byte_budget: usize,
    /// Longest key accepted (at most [`MAX_KEY_LEN`]: a store lowers it).
    pub max_key_len: usize,
    /// Longest value accepted.
    pub max_value_len: usize,
}

impl Limits {
    /// Limits such that any entry the store accepts fits in a `Get`
    /// response of at most `max_frame_len` (the frame's `len` field).
    pub const fn for_frame(max_frame_len: u32, max_entries: usize, byte_budget: usize) -> Limits {
        let payload = (max_frame_len as usize).saturating_sub(crate::frame::FOOTER_LEN);
        let room = payload.saturating_sub(RESPONSE_OVERHEAD);
        let max_key_len = if room / 2 < DEFAULT_MAX_KEY_LEN { room / 2 } else { DEFAULT_MAX_KEY_LEN };
        Limits { max_entries, byte_budget, max_key_len, max_value_len: room - max_key_len }
    }
}

/// Where a store's limits come from: a runtime [`Limits`] value, or
/// [`FrameLimits`], a zero-sized type that derives them at compile time.
pub trait LimitsSource {
    /// The limits in force for a slot table of `table` slots (a power of
    /// two) and an arena of `arena` bytes.
    fn limits(&self, table: usize, arena: usize) -> Limits;
}

impl LimitsSource for Limits {
    fn limits(&self, _table: usize, _arena: usize) -> Limits {
        *self
    }
}

/// The limits of [`Limits::for_frame`] for frames of `MAX_FRAME_LEN`, with
/// as many entries as the slot table holds and the whole arena as budget.
/// Zero-sized: a store using it stores no limits, so a const
/// [`ArrayStore`] is all zero bytes and a `static` of it lands in `.bss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FrameLimits<const MAX_FRAME_LEN: u32>;

impl<const MAX_FRAME_LEN: u32> LimitsSource for FrameLimits<MAX_FRAME_LEN> {
    fn limits(&self, table: usize, arena: usize) -> Limits {
        Limits::for_frame(MAX_FRAME_LEN, max_entries_for(table), arena)
    }
}

/// One entry of the hash table: the key's hash and where its record is.
/// All zeros is the empty slot, so fresh tables are zero-initialized memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Slot {
    hash: u32,
    /// The record's arena offset + 1; 0 marks an empty slot.
    record: u32,
}

impl Slot {
    /// An unused slot.
    pub const EMPTY: Slot = Slot { hash: 0, record: 0 };

    const fn is_empty(&self) -> bool {
        self.record == 0
    }

    const fn new(hash: u32, offset: usize) -> Slot {
        Slot { hash, record: offset as u32 + 1 }
    }

    const fn offset(&self) -> usize {
        self.record as usize - 1
    }
}

/// Record header fields in the arena, and the optional fields after it.
mod record {
    use core::ops::Range;

    /// The slot index, the used bit, or [`DEAD`].
    pub const META: Range<usize> = 0..4;
    pub const KEY_LEN: Range<usize> = 4..6;
    /// Which optional fields follow the header ([`EXPIRES`], [`CAS`],
    /// [`FLAGS`], in that order) and the [`TEXT`] mark.
    pub const OPTS: Range<usize> = 6..8;
    pub const VALUE_LEN: Range<usize> = 8..12;
    pub const HEADER_LEN: usize = VALUE_LEN.end;
    /// Marks a record whose entry was deleted or moved on.
    pub const DEAD: u32 = u32::MAX;
    /// Set when the entry was read or written since the CLOCK hand last passed.
    pub const USED: u32 = 1 << 31;
    /// The slot index bits.
    pub const SLOT: u32 = USED - 1;

    /// An expiry (u64 ms, absolute) follows the header.
    pub const EXPIRES: u16 = 1 << 0;
    /// A cas (u64) follows (the expiry, if any).
    pub const CAS: u16 = 1 << 1;
    /// Flags (u32) follow (the cas, if any).
    pub const FLAGS: u16 = 1 << 2;
    /// The value is known to be UTF-8 (no field).
    pub const TEXT: u16 = 1 << 3;
    /// The bits that add a field: records with the same ones have the same layout.
    pub const FIELDS: u16 = EXPIRES | CAS | FLAGS;
    /// An expiry field that never expires (what clearing in place leaves).
    pub const NEVER: u64 = u64::MAX;

    /// Bytes of the optional fields `opts` says follow the header: a
    /// table by the three field bits (every lookup computes where the key
    /// starts, so this is one load, not arithmetic).
    #[inline(always)]
    pub const fn fields_len(opts: u16) -> usize {
        const LEN: [u8; 8] = {
            let mut len = [0u8; 8];
            let mut bits = 0;
            while bits < 8 {
                len[bits] = ((bits & 1) * super::EXPIRY_LEN
                    + ((bits >> 1) & 1) * super::CAS_LEN
                    + ((bits >> 2) & 1) * super::FLAGS_LEN) as u8;
                bits += 1;
            }
            len
        };
        if !super::FIELDS {
            return 0;
        }
        LEN[(opts & FIELDS) as usize] as usize
    }

    /// Where the expiry field is (when `EXPIRES` is set).
    pub const EXPIRY_AT: usize = HEADER_LEN;

    /// Where the cas field is, after the expiry if any.
    #[inline]
    pub const fn cas_at(opts: u16) -> usize {
        HEADER_LEN + fields_len(opts & EXPIRES)
    }

    /// Where the flags field is, after the expiry and the cas if any.
    #[inline]
    pub const fn flags_at(opts: u16) -> usize {
        HEADER_LEN + fields_len(opts & (EXPIRES | CAS))
    }
}

/// Whether records may carry an expiry, flags and a cas (the `entry-fields`
/// feature). Off, every record is a plain one and the code that reads or
/// writes those fields is compiled out: a device that speaks only kvio
/// frames does not pay for it (see [`StoreError::Unsupported`]).
const FIELDS: bool = cfg!(feature = "entry-fields");

/// Largest slot table: a slot index must fit `meta` beside the used bit
/// (and never be all ones, the dead mark).
const MAX_TABLE: usize = 1 << 30;

#[inline]
fn read_le<const N: usize>(arena: &[u8], at: usize) -> [u8; N] {
    let mut b = [0u8; N];
    b.copy_from_slice(&arena[at..at + N]);
    b
}

#[inline]
fn read_u32(arena: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(read_le(arena, at))
}

#[inline]
fn read_u64(arena: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(read_le(arena, at))
}

#[inline]
fn write_bytes<const N: usize>(arena: &mut [u8], at: usize, bytes: [u8; N]) {
    arena[at..at + N].copy_from_slice(&bytes);
}

#[inline]
fn read_meta(arena: &[u8], at: usize) -> u32 {
    read_u32(arena, at + record::META.start)
}

#[inline]
fn write_meta(arena: &mut [u8], at: usize, meta: u32) {
    write_bytes(arena, at + record::META.start, meta.to_le_bytes());
}

/// The key's hash: [`hash_words`] on 64-bit hosts, [`hash_bytes`] where
/// `usize` is 32 bits (a Cortex-M). Hashes never leave the process, so
/// the two need not agree.
#[inline]
fn hash(key: &[u8]) -> u32 {
    if cfg!(target_pointer_width = "32") { hash_bytes(key) } else { hash_words(key) }
}

/// A word-at-a-time multiply-rotate hash (FxHash's step, with a final
/// multiply so the low bits, which pick the slot, depend on every input bit).
/// 8 bytes per step instead of FNV-1a's one.
#[inline]
fn hash_words(key: &[u8]) -> u32 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let step = |h: u64, word: u64| (h.rotate_left(5) ^ word).wrapping_mul(K);
    let mut h = key.len() as u64;
    let mut words = key.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        h = step(h, u64::from_le_bytes(w));
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        // Byte by byte: a copy of a variable length would be a memcpy call.
        let w = tail.iter().rev().fold(0u64, |w, &b| w << 8 | u64::from(b));
        h = step(h, w);
    }
    let h = (h ^ (h >> 29)).wrapping_mul(K);
    (h >> 32) as u32
}

/// FNV-1a with a final fold of the high bits into the low ones (which pick
/// the slot): on a 32-bit device a 64-bit multiply is several instructions,
/// and this loop is the least code, which the device's `.text` counts
/// (keys there are short).
#[inline]
fn hash_bytes(key: &[u8]) -> u32 {
    let h = key.iter().fold(0x811c_9dc5u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    h ^ (h >> 15)
}

/// `a == b`, with keys of up to 16 bytes compared in two overlapping word
/// loads each instead of a call to `memcmp` on 64-bit hosts. Where `usize`
/// is 32 bits, `memcmp` is linked anyway and the word loads would only
/// add code.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if cfg!(target_pointer_width = "32") {
        return a == b;
    }
    #[inline(always)]
    fn u64_at(s: &[u8], at: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_le_bytes(w)
    }
    #[inline(always)]
    fn u32_at(s: &[u8], at: usize) -> u32 {
        let mut w = [0u8; 4];
        w.copy_from_slice(&s[at..at + 4]);
        u32::from_le_bytes(w)
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0..4 => a == b,
        4..8 => u32_at(a, 0) == u32_at(b, 0) && u32_at(a, n - 4) == u32_at(b, n - 4),
        8..=16 => u64_at(a, 0) == u64_at(b, 0) && u64_at(a, n - 8) == u64_at(b, n - 8),
        _ => a == b,
    }
}

/// A record's header, read once per lookup.
#[derive(Debug, Clone, Copy)]
struct Record {
    /// Arena offset of the header.
    at: usize,
    key_len: usize,
    /// The optional fields and the text mark (`record::EXPIRES` ...).
    opts: u16,
    value_len: usize,
}

impl Record {
    #[inline]
    fn read(arena: &[u8], at: usize) -> Record {
        let lens: [u8; 8] = read_le(arena, at + record::KEY_LEN.start);
        Record {
            at,
            key_len: usize::from(u16::from_le_bytes([lens[0], lens[1]])),
            opts: u16::from_le_bytes([lens[2], lens[3]]),
            value_len: u32::from_le_bytes([lens[4], lens[5], lens[6], lens[7]]) as usize,
        }
    }

    /// Where the key starts: after the header and the optional fields.
    #[inline]
    fn key_at(&self) -> usize {
        self.at + record::HEADER_LEN + record::fields_len(self.opts)
    }

    #[inline]
    fn key<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        let start = self.key_at();
        &arena[start..start + self.key_len]
    }

    #[inline]
    fn value<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        let start = self.key_at() + self.key_len;
        &arena[start..start + self.value_len]
    }

    /// Budget the record takes (header and fields included).
    #[inline]
    fn cost(&self) -> usize {
        record::HEADER_LEN + record::fields_len(self.opts) + self.key_len + self.value_len
    }

    /// Its expiry field (`record::NEVER` if it has none).
    #[inline]
    fn expiry(&self, arena: &[u8]) -> u64 {
        if !FIELDS || self.opts & record::EXPIRES == 0 {
            record::NEVER
        } else {
            read_u64(arena, self.at + record::EXPIRY_AT)
        }
    }

    /// Whether it expired by `now` (which the store keeps below `NEVER`).
    /// The bit test inline, the field read out of line: one copy of it
    /// serves every caller (a device's `.text` counts).
    #[inline(always)]
    fn expired(&self, arena: &[u8], now: Millis) -> bool {
        FIELDS && self.opts & record::EXPIRES != 0 && self.expiry_passed(arena, now)
    }

    #[inline(never)]
    fn expiry_passed(&self, arena: &[u8], now: Millis) -> bool {
        read_u64(arena, self.at + record::EXPIRY_AT) <= now
    }

    #[inline]
    fn fields(&self, arena: &[u8]) -> Fields {
        let has = |bit: u16| FIELDS && self.opts & bit != 0;
        Fields {
            opts: self.opts,
            expires: self.expiry(arena),
            cas: if has(record::CAS) { read_u64(arena, self.at + record::cas_at(self.opts)) } else { 0 },
            flags: if has(record::FLAGS) { read_u32(arena, self.at + record::flags_at(self.opts)) } else { 0 },
        }
    }

    #[inline]
    fn entry<'a>(&self, arena: &'a [u8]) -> Entry<'a> {
        let fields = self.fields(arena);
        Entry {
            value: self.value(arena),
            flags: fields.flags,
            expires: (fields.expires != record::NEVER).then_some(fields.expires),
            cas: fields.cas,
            text: self.opts & record::TEXT != 0,
        }
    }
}

/// What a record holds besides its key and value: `opts` and the fields
/// its bits call for.
#[derive(Debug, Clone, Copy)]
struct Fields {
    opts: u16,
    /// `record::NEVER` for none.
    expires: Millis,
    cas: u64,
    flags: u32,
}

impl Fields {
    /// For a record of `expires` (`NEVER`: none), `flags`, `cas` (0 in a
    /// store without cas) and the text mark.
    #[inline]
    fn new(expires: Millis, flags: u32, cas: u64, text: bool) -> Fields {
        let bit = |on: bool, bit: u16| if on { bit } else { 0 };
        Fields {
            opts: bit(expires != record::NEVER, record::EXPIRES)
                | bit(cas != 0, record::CAS)
                | bit(flags != 0, record::FLAGS)
                | bit(text, record::TEXT),
            expires,
            cas,
            flags,
        }
    }

    /// Writes `opts` and the fields into the record at `at`.
    #[inline]
    fn write(&self, arena: &mut [u8], at: usize) {
        write_bytes(arena, at + record::OPTS.start, self.opts.to_le_bytes());
        self.write_fields(arena, at);
    }

    /// Writes the fields (not `opts`) into the record at `at`.
    #[inline]
    fn write_fields(&self, arena: &mut [u8], at: usize) {
        if !FIELDS || self.opts & record::FIELDS == 0 {
            // A plain record, kvio's every one.
            return;
        }
        if self.opts & record::EXPIRES != 0 {
            write_bytes(arena, at + record::EXPIRY_AT, self.expires.to_le_bytes());
        }
        if self.opts & record::CAS != 0 {
            write_bytes(arena, at + record::cas_at(self.opts), self.cas.to_le_bytes());
        }
        if self.opts & record::FLAGS != 0 {
            write_bytes(arena, at + record::flags_at(self.opts), self.flags.to_le_bytes());
        }
    }
}

/// Where a written value's bytes come from.
#[derive(Debug, Clone, Copy)]
enum Value<'v> {
    /// The caller's.
    Bytes(&'v [u8]),
    /// The old record's value with these bytes after it (or before it:
    /// `true`); the old record stays in the arena until it is copied.
    Concat(&'v [u8], bool),
}

/// Where a [`Store::visit`] goes on: the empty slot it started from and
/// how far around the table it went. `Default` starts a visit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct VisitCursor {
    start: Option<usize>,
    /// Slots looked at after `start`.
    next: usize,
}

/// A fixed-capacity key/value store over caller-provided storage. See the
/// [module docs](self).
#[derive(Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Store<S, A, L = Limits, Q = ()> {
    slots: S,
    arena: A,
    limits: L,
    /// Asked before a refusing store grows (see [`Quota`]).
    quota: Q,
    /// Entries stored.
    len: usize,
    /// Budget in use by live records (headers included).
    live: usize,
    /// Where the next record goes.
    head: usize,
    /// The oldest record: where space is reclaimed, and the CLOCK hand.
    tail: usize,
    /// While wrapped, the end of the records above the tail.
    end: usize,
    /// Whether the head has wrapped to the arena's start and the tail not
    /// yet: the records are `tail..end` then `0..head`, else `tail..head`.
    wrapped: bool,
    when_full: WhenFull,
    /// Whether a record with an expiry was ever written: only then may a
    /// refusing store find expired entries to reclaim before it refuses.
    expiring: bool,
    /// The latest time any operation was given (kept below `record::NEVER`).
    now: Millis,
    /// The cas the next write gets; 0 in a store without cas.
    next_cas: u64,
    // The counters are usize (32 bits on a 32-bit device, where they wrap)
    // so that an `ArrayStore` keeps its RAM constant within 64 bytes.
    /// Entries evicted since the store was built.
    evictions: usize,
    /// Entries dropped because they expired, since the store was built.
    expired: usize,
    /// Bytes moved by reclaiming since the store was built.
    moved: usize,
    /// One-pass compactions since the store was built.
    compactions: usize,
    /// Records the reclaiming hand visited since the store was built (tests).
    #[cfg(test)]
    visited: usize,
}

/// A store in arrays with compile-time limits, buildable in a `static`:
/// its initial value is all zero bytes, so such a `static` takes `.bss`,
/// not flash.
pub type ArrayStore<const SLOTS: usize, const BYTES: usize, const MAX_FRAME_LEN: u32> =
    Store<[Slot; SLOTS], [u8; BYTES], FrameLimits<MAX_FRAME_LEN>>;

impl<const SLOTS: usize, const BYTES: usize, const MAX_FRAME_LEN: u32> ArrayStore<SLOTS, BYTES, MAX_FRAME_LEN> {
    /// A store in arrays: at most `SLOTS - SLOTS / 8 - 1` entries (`SLOTS`
    /// must be a power of two), a byte budget of `BYTES`, and key and value
    /// limits for frames of `MAX_FRAME_LEN` as in [`Limits::for_frame`].
    /// It refuses puts when full, and has no cas.
    pub const fn new() -> Self {
        assert!(SLOTS.is_power_of_two(), "SLOTS must be a power of two");
        assert!(SLOTS <= MAX_TABLE, "slot indices are 30 bits");
        assert!(BYTES < u32::MAX as usize, "arena offsets are u32");
        Store::from_parts([Slot::EMPTY; SLOTS], [0; BYTES], FrameLimits, ())
    }
}

impl<const SLOTS: usize, const BYTES: usize, const MAX_FRAME_LEN: u32> Default
    for ArrayStore<SLOTS, BYTES, MAX_FRAME_LEN>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<S, A, L, Q> Store<S, A, L, Q> {
    const fn from_parts(slots: S, arena: A, limits: L, quota: Q) -> Self {
        Store {
            slots,
            arena,
            limits,
            quota,
            len: 0,
            live: 0,
            head: 0,
            tail: 0,
            end: 0,
            wrapped: false,
            when_full: WhenFull::Refuse,
            expiring: false,
            now: 0,
            next_cas: 0,
            evictions: 0,
            expired: 0,
            moved: 0,
            compactions: 0,
            #[cfg(test)]
            visited: 0,
        }
    }
}

impl<S, A> Store<S, A, Limits>
where
    S: AsRef<[Slot]> + AsMut<[Slot]>,
    A: AsRef<[u8]> + AsMut<[u8]>,
{
    /// A store over the given storage. `slots` is filled with empty slots;
    /// only the largest power-of-two prefix of it is used (at most 2^30),
    /// under 7/8 full. `limits` are lowered to what the storage can hold
    /// (and keys to [`MAX_KEY_LEN`]). It refuses puts when full (see
    /// [`Store::when_full`]) and has no cas (see [`Store::with_cas`]).
    pub fn with_storage(mut slots: S, arena: A, limits: Limits) -> Self {
        slots.as_mut().fill(Slot::EMPTY);
        Self::with_empty_storage(slots, arena, limits)
    }

    /// [`Store::with_storage`] over slots that are all [`Slot::EMPTY`]
    /// already (zeroed memory, as `calloc` gives): they are not written,
    /// so a host's table costs no memory until entries arrive (the pages
    /// the kernel backs lazily stay untouched). A slot that is not empty
    /// makes the store's answers wrong (never unsafe); debug builds check.
    pub fn with_empty_storage(slots: S, arena: A, limits: Limits) -> Self {
        debug_assert!(slots.as_ref().iter().all(Slot::is_empty), "with_empty_storage over a slot in use");
        let table = table_len(slots.as_ref().len());
        let arena_len = arena.as_ref().len().min(u32::MAX as usize - 1);
        let limits = Limits {
            max_entries: limits.max_entries.min(max_entries_for(table)),
            byte_budget: limits.byte_budget.min(arena_len),
            max_key_len: limits.max_key_len.min(MAX_KEY_LEN),
            ..limits
        };
        Store::from_parts(slots, arena, limits, ())
    }
}

impl<S, A, L, Q> Store<S, A, L, Q>
where
    S: AsRef<[Slot]> + AsMut<[Slot]>,
    A: AsRef<[u8]> + AsMut<[u8]>,
    L: LimitsSource,
    Q: Quota,
{
    /// The same store, doing `policy` when full.
    pub fn when_full(mut self, policy: WhenFull) -> Self {
        self.when_full = policy;
        self
    }

    /// The same store, with cas or without (the default). With it, every
    /// record carries an 8-byte cas (counted in the budget) that changes on
    /// every write of its entry, from a store-wide counter starting at 1;
    /// without it, entries report cas 0 and [`Condition::Cas`] fails with
    /// [`StoreError::Exists`]. Build the store with it: entries already
    /// stored keep what they have. Without the `entry-fields` feature
    /// there is no cas field: the store stays without cas.
    pub fn with_cas(mut self, cas: bool) -> Self {
        self.next_cas = u64::from(cas && FIELDS);
        self
    }

    /// The same store, asking `quota` before it grows (see [`Quota`]).
    pub fn with_quota<Q2: Quota>(self, quota: Q2) -> Store<S, A, L, Q2> {
        Store {
            slots: self.slots,
            arena: self.arena,
            limits: self.limits,
            quota,
            len: self.len,
            live: self.live,
            head: self.head,
            tail: self.tail,
            end: self.end,
            wrapped: self.wrapped,
            when_full: self.when_full,
            expiring: self.expiring,
            now: self.now,
            next_cas: self.next_cas,
            evictions: self.evictions,
            expired: self.expired,
            moved: self.moved,
            compactions: self.compactions,
            #[cfg(test)]
            visited: self.visited,
        }
    }

    /// What the store does when full.
    pub fn policy(&self) -> WhenFull {
        self.when_full
    }

    /// Whether entries carry a cas (see [`Store::with_cas`]).
    pub fn has_cas(&self) -> bool {
        self.next_cas != 0
    }

    /// The quota it asks before growing.
    pub fn quota_mut(&mut self) -> &mut Q {
        &mut self.quota
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits.limits(table_len(self.slots.as_ref().len()), self.arena_len())
    }

    /// Entries stored (expired ones not yet reclaimed included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Budget bytes in use (keys, values, headers and their fields).
    pub fn bytes_used(&self) -> usize {
        self.live
    }

    /// The latest time an operation was given.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// Entries evicted to make room since the store was built (always 0
    /// under [`WhenFull::Refuse`]).
    pub fn evictions(&self) -> u64 {
        self.evictions as u64
    }

    /// Entries dropped because they had expired since the store was built:
    /// forgotten by the lookup that found them, or by the reclaiming hand
    /// that reached them (never counted as evictions).
    pub fn expired(&self) -> u64 {
        self.expired as u64
    }

    /// Bytes moved by reclaiming (records given a second chance, or slid
    /// down by a compaction) since the store was built.
    pub fn bytes_moved(&self) -> u64 {
        self.moved as u64
    }

    /// Records visited by reclaiming since the store was built: each
    /// record the hand passes (dead), drops (expired), moves or evicts
    /// counts one, and so does each record a compaction reads.
    #[cfg(test)]
    fn records_visited(&self) -> u64 {
        self.visited as u64
    }

    /// One-pass compactions of the whole arena since the store was built:
    /// never under [`WhenFull::Evict`]; under [`WhenFull::Refuse`] only when
    /// a tail packed with live records leaves no room (see the module docs).
    pub fn compactions(&self) -> u64 {
        self.compactions as u64
    }

    /// Visits up to about `max` entries from `cursor` on, calling `f` with
    /// each one's key and entry (expired ones skipped, none marked used),
    /// and moves the cursor on; true once the whole table was visited. A
    /// snapshot calls it again and again, a bounded slice at a time, while
    /// the store keeps serving between the calls.
    ///
    /// What it guarantees across calls: every entry that was in the store
    /// when the visit began, and was not written (put, deleted, touched,
    /// evicted, expired) since, is visited exactly once. An entry written
    /// meanwhile may be visited or not, once at most per write: a caller
    /// that records those writes too (a log) has them all.
    ///
    /// Why it holds: the cursor walks the slot table from an empty slot,
    /// once around, and each call stops just after an empty slot. An entry
    /// lies between its home slot and its slot with no empty slot between,
    /// so when a call stops, every entry not yet visited has its home at or
    /// after the cursor; and entries only ever move back towards their home
    /// (the backward shift of a delete; a move in the arena keeps the
    /// slot), so none crosses the cursor backwards. A call may pass `max`
    /// to finish its probe run (runs stay short under 7/8 load); it looks
    /// at no more than `16 × max` slots besides.
    ///
    /// Use a cursor on one store only ([`VisitCursor::default`] starts).
    pub fn visit(&self, cursor: &mut VisitCursor, max: usize, mut f: impl FnMut(&[u8], Entry<'_>)) -> bool {
        let slots = self.slots.as_ref();
        let table = table_len(slots.len());
        let mask = table.wrapping_sub(1);
        let start = match cursor.start {
            Some(start) => start,
            None if table == 0 => return true,
            None => {
                // There is always an empty slot (max_entries_for).
                let start = (0..table).find(|&i| slots[i].is_empty()).unwrap_or(0);
                cursor.start = Some(start);
                start
            }
        };
        let arena = self.arena.as_ref();
        let (mut visited, mut looked) = (0usize, 0usize);
        while cursor.next < table {
            let slot = slots[(start + 1 + cursor.next) & mask];
            cursor.next += 1;
            looked += 1;
            if slot.is_empty() {
                if visited >= max || looked >= max.saturating_mul(16) {
                    return cursor.next >= table;
                }
                continue;
            }
            let record = Record::read(arena, slot.offset());
            if !record.expired(arena, self.now) {
                visited += 1;
                f(record.key(arena), record.entry(arena));
            }
        }
        true
    }

    fn arena_len(&self) -> usize {
        self.arena.as_ref().len().min(u32::MAX as usize - 1)
    }

    fn mask(&self) -> usize {
        table_len(self.slots.as_ref().len()).wrapping_sub(1)
    }

    /// Takes `now` in (the latest wins) and returns the store's now.
    #[inline]
    fn observe(&mut self, now: Millis) -> Millis {
        // Below NEVER, so that an expiry field of NEVER never expires.
        self.now = self.now.max(now.min(record::NEVER - 1));
        self.now
    }

    /// The cas for a write (0 without cas), and the next one.
    #[inline]
    fn take_cas(&mut self) -> u64 {
        if !FIELDS {
            return 0;
        }
        let cas = self.next_cas;
        if cas != 0 {
            self.next_cas = cas.wrapping_add(1).max(1);
        }
        cas
    }

    /// The slot holding `key` and its record, or the empty slot where it
    /// would go. Slots whose 32-bit hash differs are passed over without
    /// reading the arena, so a miss reads no record (but for a 2^-32 chance
    /// per slot probed) and a hit reads one record, once.
    ///
    /// Inlined where `usize` is 64 bits: returned through memory, its
    /// record was copied back with loads wider than the stores that wrote
    /// it, which the CPU cannot forward (a stall on every lookup). On a
    /// 32-bit device one copy of it is less code.
    #[cfg_attr(target_pointer_width = "64", inline(always))]
    #[cfg_attr(not(target_pointer_width = "64"), inline)]
    fn find(&self, key: &[u8], h: u32) -> (usize, Option<Record>) {
        let slots = self.slots.as_ref();
        let arena = self.arena.as_ref();
        if slots.is_empty() {
            return (0, None);
        }
        let mask = self.mask();
        let mut i = h as usize & mask;
        loop {
            let slot = slots[i];
            if slot.is_empty() {
                return (i, None);
            }
            if slot.hash == h {
                let record = Record::read(arena, slot.offset());
                if same_bytes(record.key(arena), key) {
                    return (i, Some(record));
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// [`Store::find`] at the store's now: an expired entry is forgotten
    /// at once (lazy expiry) and reported absent, with its key's slot.
    /// Inlined on 64 bits, as `find` is.
    #[cfg_attr(target_pointer_width = "64", inline(always))]
    #[cfg_attr(not(target_pointer_width = "64"), inline)]
    fn lookup(&mut self, key: &[u8], h: u32) -> (usize, Option<Record>) {
        let (i, found) = self.find(key, h);
        match found {
            Some(record) if record.expired(self.arena.as_ref(), self.now) => {
                self.forget(i, record);
                self.expired = self.expired.wrapping_add(1);
                // The backward shift may have filled slot i.
                (self.find(key, h).0, None)
            }
            found => (i, found),
        }
    }

    /// The value stored under `key`, without marking it used (a peek: the
    /// CLOCK hand does not see it); None if it expired by [`Store::now`].
    /// Requests go through [`Store::fetch`] or [`Store::entry`].
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        if key.len() > self.limits().max_key_len {
            return None;
        }
        let record = self.find(key, hash(key)).1?;
        let arena = self.arena.as_ref();
        (!record.expired(arena, self.now)).then(|| record.value(arena))
    }

    /// The entry under `key` at [`Store::now`], without marking it used or
    /// forgetting it if expired (a peek: what a journal records after a write).
    pub fn peek(&self, key: &[u8]) -> Option<Entry<'_>> {
        if key.len() > self.limits().max_key_len {
            return None;
        }
        let record = self.find(key, hash(key)).1?;
        let arena = self.arena.as_ref();
        (!record.expired(arena, self.now)).then(|| record.entry(arena))
    }

    /// The value stored under `key`, marked used so an evicting store keeps
    /// it over entries nobody asked for ([`Store::entry`] at the store's now).
    pub fn fetch(&mut self, key: &[u8]) -> Option<&[u8]> {
        // Not through `entry`: a kvio get needs the value only.
        if key.len() > self.limits().max_key_len {
            return None;
        }
        let record = self.lookup(key, hash(key)).1?;
        self.mark_used(record.at);
        Some(record.value(self.arena.as_ref()))
    }

    /// The entry under `key` (None if absent or expired at `now`), marked
    /// used. An expired entry it finds is forgotten at once.
    pub fn entry(&mut self, key: &[u8], now: Millis) -> Option<Entry<'_>> {
        self.observe(now);
        if key.len() > self.limits().max_key_len {
            return None;
        }
        let record = self.lookup(key, hash(key)).1?;
        self.mark_used(record.at);
        Some(record.entry(self.arena.as_ref()))
    }

    /// Sets the used bit (an evicting store only; the line is written only
    /// when the bit changes, so a hot key's record stays clean in the cache).
    #[inline]
    fn mark_used(&mut self, at: usize) {
        if self.when_full == WhenFull::Evict {
            let meta = read_meta(self.arena.as_ref(), at);
            if meta & record::USED == 0 {
                write_meta(self.arena.as_mut(), at, meta | record::USED);
            }
        }
    }

    /// Removes `key`; true when it was there. Its record's bytes are dead
    /// (reclaimed when the tail reaches them) and its slot is emptied by
    /// backward shift.
    pub fn delete(&mut self, key: &[u8]) -> bool {
        self.delete_at(key, 0)
    }

    /// [`Store::delete`] at `now`: false for an entry expired by then.
    pub fn delete_at(&mut self, key: &[u8], now: Millis) -> bool {
        self.observe(now);
        if key.len() > self.limits().max_key_len {
            return false;
        }
        match self.lookup(key, hash(key)) {
            (i, Some(record)) => {
                self.forget(i, record);
                true
            }
            (_, None) => false,
        }
    }

    /// Drops the entry in slot `i`, whose record is `record`.
    fn forget(&mut self, i: usize, record: Record) {
        write_meta(self.arena.as_mut(), record.at, record::DEAD);
        self.live -= record.cost();
        self.len -= 1;
        self.empty_slot(i);
    }

    /// Empties slot `hole` by backward shift: each later entry of the probe
    /// run whose home is not between the hole and itself moves back into
    /// the hole (its record learns its new index), and the hole moves on.
    fn empty_slot(&mut self, mut hole: usize) {
        let mask = self.mask();
        let slots = self.slots.as_mut();
        let arena = self.arena.as_mut();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let slot = slots[j];
            if slot.is_empty() {
                break;
            }
            let home = slot.hash as usize & mask;
            // The hole is on slot j's probe path when it lies cyclically in home..j.
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                slots[hole] = slot;
                let meta = read_meta(arena, slot.offset());
                write_meta(arena, slot.offset(), (meta & record::USED) | hole as u32);
                hole = j;
            }
        }
        slots[hole] = Slot::EMPTY;
    }

    /// Stores `value` under `key`, with no expiry and no flags. See
    /// [`StoreError`] for refusals.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        // Not through `put_with`: no old entry to hand out.
        let limits = self.limits();
        if key.len() > limits.max_key_len {
            return Err(StoreError::KeyTooLong);
        }
        let h = hash(key);
        let start = (self.len, self.live);
        let (i, found) = self.lookup(key, h);
        self.put_found(key, value, PutOptions::default(), (self.now, h, limits, start), i, found).map(drop)
    }

    /// [`KeyValueStore::put_with`].
    pub fn put_with<R>(
        &mut self,
        key: &[u8],
        value: &[u8],
        opts: PutOptions,
        now: Millis,
        old: impl FnOnce(Option<Entry<'_>>) -> R,
    ) -> (R, Result<u64, StoreError>) {
        let now = self.observe(now);
        let limits = self.limits();
        if key.len() > limits.max_key_len {
            return (old(None), Err(StoreError::KeyTooLong));
        }
        let h = hash(key);
        let start = (self.len, self.live);
        let (i, found) = self.lookup(key, h);
        let answer = old(found.map(|record| record.entry(self.arena.as_ref())));
        (answer, self.put_found(key, value, opts, (now, h, limits, start), i, found))
    }

    /// The rest of a put, once the old entry is known: the value limit, the
    /// condition, the expiry, then [`Store::write`]. Inlined: a kvio put's
    /// options are constants there, and its checks fold away.
    #[inline(always)]
    fn put_found(
        &mut self,
        key: &[u8],
        value: &[u8],
        opts: PutOptions,
        (now, h, limits, start): (Millis, u32, Limits, (usize, usize)),
        i: usize,
        found: Option<Record>,
    ) -> Result<u64, StoreError> {
        if value.len() > limits.max_value_len {
            return Err(StoreError::ValueTooLong);
        }
        let arena = self.arena.as_ref();
        match (opts.condition, found) {
            (Condition::Absent, Some(_)) | (Condition::Present, None) => return Err(StoreError::NotStored),
            (Condition::Cas(_), None) => return Err(StoreError::NotFound),
            (Condition::Cas(cas), Some(old)) if cas == 0 || old.fields(arena).cas != cas => {
                return Err(StoreError::Exists);
            }
            _ => {}
        }
        let expires = match opts.expiry {
            Expiry::Never => record::NEVER,
            Expiry::At(at) => at,
            Expiry::Keep => found.map_or(record::NEVER, |old| old.expiry(arena)),
        };
        if expires != record::NEVER && expires <= now {
            // Stored and expired at once: what is left is no entry.
            if let Some(old) = found {
                self.forget(i, old);
            }
            return Ok(0);
        }
        if !FIELDS && (expires != record::NEVER || opts.flags != 0) {
            return Err(StoreError::Unsupported);
        }
        let cas = self.take_cas();
        let fields = Fields::new(expires, opts.flags, cas, opts.text);
        if let Some(old) = found
            && self.write_in_place(old, fields, Value::Bytes(value), value.len())
        {
            // The common update, kept off `write`'s call.
            return Ok(cas);
        }
        self.write(key, (h, limits, start), (i, found), fields, Value::Bytes(value), value.len())?;
        Ok(cas)
    }

    /// Writes `fields` and `value` over `old` if the record keeps its
    /// layout and size (the update of a value by one of the same length);
    /// false if it does not.
    #[inline(always)]
    fn write_in_place(&mut self, old: Record, fields: Fields, value: Value<'_>, value_len: usize) -> bool {
        if old.value_len != value_len || (old.opts ^ fields.opts) & record::FIELDS != 0 {
            return false;
        }
        let arena = self.arena.as_mut();
        // The header's line is written only if something in it changes: a
        // plain update dirties the value's lines alone, as it always did
        // (a device without the fields writes it: less code, no cache).
        if !FIELDS || old.opts != fields.opts {
            write_bytes(arena, old.at + record::OPTS.start, fields.opts.to_le_bytes());
        }
        fields.write_fields(arena, old.at);
        if let Value::Bytes(bytes) = value {
            let start = old.key_at() + old.key_len;
            arena[start..start + value_len].copy_from_slice(bytes);
        }
        self.mark_used(old.at);
        true
    }

    /// Writes `key`'s entry: `fields` and `value_len` bytes of value from
    /// `value`, over the record `found` in slot `i` if there is one (else
    /// `i` is the empty slot the key goes in). In place when the record
    /// keeps its layout and size; else a new record at the head, after the
    /// refusal rule, the [`Quota`] and reclaiming. `start` is (entries,
    /// live bytes) when the operation began.
    fn write(
        &mut self,
        key: &[u8],
        (h, limits, start): (u32, Limits, (usize, usize)),
        (i, found): (usize, Option<Record>),
        fields: Fields,
        value: Value<'_>,
        value_len: usize,
    ) -> Result<(), StoreError> {
        if let Some(old) = found
            && self.write_in_place(old, fields, value, value_len)
        {
            return Ok(());
        }
        let cost = record::HEADER_LEN + record::fields_len(fields.opts) + key.len() + value_len;
        let freed = found.map_or(0, |old| old.cost());
        let mut i = i;
        let mut swept = false;
        loop {
            let (len, live) = (self.len + usize::from(found.is_none()), self.live - freed + cost);
            let refused = match self.when_full {
                WhenFull::Refuse => {
                    live > limits.byte_budget
                        || len > limits.max_entries
                        // The old record stays in the arena while the new one is written.
                        || (matches!(value, Value::Concat(..)) && self.live + cost > self.arena_len())
                        || !((len <= start.0 && live <= start.1)
                            || self.quota.reserve(len.saturating_sub(start.0), live.saturating_sub(start.1)))
                }
                WhenFull::Evict => cost > self.evict_budget(limits) || limits.max_entries == 0,
            };
            if !refused {
                break;
            }
            // Expired entries the hand has not reached hold budget: a
            // refusing store gives back those near the key, then decides.
            if swept || !FIELDS || !self.expiring || self.when_full == WhenFull::Evict || !self.sweep_near(h) {
                return Err(StoreError::Full);
            }
            swept = true;
            // Backward shifts may have moved the key's slot.
            i = self.find(key, h).0;
        }
        // From here the write cannot fail (but for a concat whose entry is evicted).
        // What reclaiming drops shifts slots back (expired only with the fields).
        let dropped = |s: &Self| s.evictions.wrapping_add(if FIELDS { s.expired } else { 0 });
        let before = dropped(self);
        // The entry being replaced: what making room may count as gone.
        let mut replaced = (0, 0);
        if let Some(old) = found {
            match value {
                Value::Bytes(_) => self.forget(i, old),
                Value::Concat(..) => {
                    // Stays, counted, until its value is copied.
                    replaced = (1, old.cost());
                    self.mark_used(old.at);
                }
            }
        }
        let at = self.make_room(cost, limits, h, replaced);
        let value_at = at + record::HEADER_LEN + record::fields_len(fields.opts) + key.len();
        if let Value::Concat(bytes, front) = value
            && found.is_some()
        {
            match self.find(key, h) {
                (i, Some(moved)) => {
                    let from = moved.key_at() + moved.key_len;
                    let to = value_at + if front { bytes.len() } else { 0 };
                    self.arena.as_mut().copy_within(from..from + moved.value_len, to);
                    self.forget(i, moved);
                }
                (_, None) => {
                    // Making room evicted it: nothing to append to any more.
                    self.write_dead(at, cost);
                    return Err(StoreError::NotStored);
                }
            }
        }
        let i = match found {
            // No backward shift since the lookup: its slot stands.
            None if dropped(self) == before => i,
            _ => self.find(key, h).0,
        };
        self.expiring |= fields.opts & record::EXPIRES != 0;
        let arena = self.arena.as_mut();
        // An update is a use; a new entry waits for one (CLOCK's insertion rule).
        let used = if found.is_some() && self.when_full == WhenFull::Evict { record::USED } else { 0 };
        write_meta(arena, at, used | i as u32);
        write_bytes(arena, at + record::KEY_LEN.start, (key.len() as u16).to_le_bytes());
        write_bytes(arena, at + record::VALUE_LEN.start, (value_len as u32).to_le_bytes());
        fields.write(arena, at);
        arena[value_at - key.len()..value_at].copy_from_slice(key);
        match value {
            Value::Bytes(bytes) => arena[value_at..value_at + value_len].copy_from_slice(bytes),
            Value::Concat(bytes, front) => {
                let to = if front { value_at } else { value_at + value_len - bytes.len() };
                arena[to..to + bytes.len()].copy_from_slice(bytes);
            }
        }
        self.live += cost;
        self.len += 1;
        self.slots.as_mut()[i] = Slot::new(h, at);
        Ok(())
    }

    /// Fills `cost` reserved bytes at `at` with a dead record.
    fn write_dead(&mut self, at: usize, cost: usize) {
        let arena = self.arena.as_mut();
        write_meta(arena, at, record::DEAD);
        write_bytes(arena, at + record::KEY_LEN.start, [0u8; 4]);
        write_bytes(arena, at + record::VALUE_LEN.start, ((cost - record::HEADER_LEN) as u32).to_le_bytes());
    }

    /// [`KeyValueStore::touch`].
    pub fn touch(&mut self, key: &[u8], expiry: Expiry, now: Millis) -> Option<Option<Millis>> {
        let now = self.observe(now);
        let limits = self.limits();
        if key.len() > limits.max_key_len {
            return None;
        }
        let h = hash(key);
        let start = (self.len, self.live);
        let (i, found) = self.lookup(key, h);
        let record = found?;
        let fields = record.fields(self.arena.as_ref());
        let had = (fields.expires != record::NEVER).then_some(fields.expires);
        let want = match expiry {
            Expiry::Never => record::NEVER,
            Expiry::At(at) => at,
            Expiry::Keep => fields.expires,
        };
        self.mark_used(record.at);
        if want <= now {
            self.forget(i, record);
        } else if want != fields.expires {
            if !FIELDS {
                // No expiry field to set (nor to clear: there is none).
                return None;
            } else if record.opts & record::EXPIRES != 0 {
                write_bytes(self.arena.as_mut(), record.at + record::EXPIRY_AT, want.to_le_bytes());
            } else {
                // A record 8 bytes longer, with the same value and cas.
                let fields = Fields { opts: record.opts | record::EXPIRES, expires: want, ..fields };
                let value = Value::Concat(&[], false);
                self.write(key, (h, limits, start), (i, found), fields, value, record.value_len).ok()?;
            }
        }
        Some(had)
    }

    /// [`KeyValueStore::concat`].
    pub fn concat(&mut self, key: &[u8], bytes: &[u8], front: bool, now: Millis) -> Result<u64, StoreError> {
        self.observe(now);
        let limits = self.limits();
        if key.len() > limits.max_key_len {
            return Err(StoreError::KeyTooLong);
        }
        let h = hash(key);
        let start = (self.len, self.live);
        let (i, found) = self.lookup(key, h);
        let record = found.ok_or(StoreError::NotStored)?;
        let value_len = record.value_len + bytes.len();
        if value_len > limits.max_value_len {
            return Err(StoreError::ValueTooLong);
        }
        let text = record.opts & record::TEXT != 0 && core::str::from_utf8(bytes).is_ok();
        let fields = self.rewritten(record, text);
        let value = Value::Concat(bytes, front);
        self.write(key, (h, limits, start), (i, found), fields, value, value_len)?;
        Ok(fields.cas)
    }

    /// [`KeyValueStore::incr`].
    pub fn incr(&mut self, key: &[u8], delta: u64, down: bool, now: Millis) -> Result<u64, StoreError> {
        self.observe(now);
        let limits = self.limits();
        if key.len() > limits.max_key_len {
            return Err(StoreError::KeyTooLong);
        }
        let h = hash(key);
        let start = (self.len, self.live);
        let (i, found) = self.lookup(key, h);
        let record = found.ok_or(StoreError::NotFound)?;
        let n = parse_decimal(record.value(self.arena.as_ref())).ok_or(StoreError::NotANumber)?;
        let n = if down { n.saturating_sub(delta) } else { n.wrapping_add(delta) };
        let mut buf = [0u8; 20];
        let digits = write_decimal(n, &mut buf);
        if digits.len() > limits.max_value_len {
            return Err(StoreError::ValueTooLong);
        }
        let fields = self.rewritten(record, true);
        self.write(key, (h, limits, start), (i, found), fields, Value::Bytes(digits), digits.len())?;
        Ok(n)
    }

    /// The fields of a rewrite of `record`'s entry (concat, incr): its
    /// expiry and flags kept, a new cas, `text` for the mark.
    fn rewritten(&mut self, record: Record, text: bool) -> Fields {
        let old = record.fields(self.arena.as_ref());
        let cas = self.take_cas();
        let keep = record.opts & (record::EXPIRES | record::FLAGS);
        let opts = keep | if cas != 0 { record::CAS } else { 0 } | if text { record::TEXT } else { 0 };
        Fields { opts, cas, ..old }
    }

    /// The budget an evicting store fills up to: its byte budget, less
    /// 1/16 of the arena kept free so a second chance has room to move into
    /// even when the budget is the whole arena.
    fn evict_budget(&self, limits: Limits) -> usize {
        let arena = self.arena_len();
        limits.byte_budget.min(arena - arena / 16)
    }

    /// Reserves `cost` bytes at the head for a new record of hash `h`,
    /// reclaiming at the tail first as far as needed (not counting the
    /// `replaced` entries and bytes, an entry the write replaces but still
    /// needs). The caller checked the put may proceed, so this cannot fail.
    ///
    /// The hand at the tail passes dead records, drops expired ones, moves
    /// live ones to the head (at most [`MAX_MOVES`] records and
    /// [`move_budget`] bytes) and, under [`WhenFull::Evict`], evicts the
    /// unused ones while the put is over budget. It visits at most
    /// `hand_visits(cost)` records: every visit but a move frees at least
    /// 12 contiguous bytes, so that is room enough for the record (module
    /// docs, "Bounded work"). Over budget with the hand spent, or with a
    /// used record at the hand and no move left, the victim is taken near
    /// the key's slot instead ([`Store::evict_nearby`]).
    fn make_room(&mut self, cost: usize, limits: Limits, h: u32, replaced: (usize, usize)) -> usize {
        let evict = self.when_full == WhenFull::Evict;
        let budget = if evict { self.evict_budget(limits) } else { limits.byte_budget };
        let hand_visits = hand_visits(cost);
        let (mut visits, mut moves, mut moved) = (0, 0, 0);
        let mut nearby = Nearby { at: h as usize & self.mask(), spared: 0 };
        loop {
            // Less the entry this write replaces, still stored (a concat's):
            // should it be evicted meanwhile, the write stores nothing.
            let over = evict && self.over(cost, budget, limits.max_entries, replaced);
            if !over && let Some(at) = self.reserve(cost) {
                return at;
            }
            let Some(tail) = self.tail_record() else {
                // Nothing is stored, so the whole arena is free: reserve succeeds.
                debug_assert!(!over);
                continue;
            };
            let arena = self.arena.as_ref();
            let meta = read_meta(arena, tail.at);
            let dead = meta == record::DEAD;
            let expired = !dead && tail.expired(arena, self.now);
            let used = !dead && meta & record::USED != 0;
            let may_move = moves < MAX_MOVES && moved + tail.cost() <= move_budget(cost);
            if over && (visits >= hand_visits || (used && !expired && !may_move)) {
                // Budget is what is missing: an unused entry near the key goes.
                self.evict_nearby(&mut nearby);
                continue;
            }
            debug_assert!(visits < hand_visits || !evict, "room is made within the hand's visits");
            visits += 1;
            #[cfg(test)]
            {
                self.visited += 1;
            }
            if dead {
                self.tail += tail.cost();
            } else if expired {
                self.forget((meta & record::SLOT) as usize, tail);
                self.expired = self.expired.wrapping_add(1);
                self.tail += tail.cost();
            } else if (!over || used) && may_move && self.move_tail(tail, meta, used) {
                // A second chance, or (within budget) keeping the entry.
                moves += 1;
                moved += tail.cost();
            } else if evict {
                // Over budget and unused; or room is missing and the slice is spent.
                self.evict_tail(tail, meta);
            } else {
                // A refusing store whose tail is packed with live records.
                self.compact();
            }
        }
    }

    /// Forgets the expired entries among [`NEARBY`] entries of the table
    /// from `h`'s home slot (a refusing store about to refuse: the budget
    /// they hold comes back now, their bytes when the tail passes them).
    /// True if it found any. Near the key, so that refused puts of many
    /// keys sweep the whole table between them, with no cursor to keep.
    fn sweep_near(&mut self, h: u32) -> bool {
        let mask = self.mask();
        let (mut at, mut seen, mut dropped) = (h as usize & mask, 0, false);
        while seen < NEARBY.min(self.len) {
            let slot = self.slots.as_ref()[at];
            if slot.is_empty() {
                at = (at + 1) & mask;
                continue;
            }
            seen += 1;
            #[cfg(test)]
            {
                self.visited += 1;
            }
            let record = Record::read(self.arena.as_ref(), slot.offset());
            if record.expired(self.arena.as_ref(), self.now) {
                // The backward shift may move a later entry into this slot: look again.
                self.forget(at, record);
                self.expired = self.expired.wrapping_add(1);
                dropped = true;
            } else {
                at = (at + 1) & mask;
            }
        }
        dropped
    }

    /// Over budget, with the hand spent or holding a used record it may not
    /// move: evicts one entry found by walking the slot table from the
    /// key's home slot, in place (its record turns dead where it lies,
    /// reclaimed when the tail reaches it). An expired entry found there is
    /// dropped instead. Second chance holds here too: a used entry's mark
    /// is cleared and it is passed, up to [`NEARBY`] of them a put; then
    /// the next entry goes whatever its mark. A victim near the key rather
    /// than the oldest: the fallback samples, as Redis's eviction does,
    /// where the hand would walk too far.
    fn evict_nearby(&mut self, nearby: &mut Nearby) {
        let mask = self.mask();
        loop {
            let i = nearby.at;
            nearby.at = (i + 1) & mask;
            let slot = self.slots.as_ref()[i];
            if slot.is_empty() {
                continue;
            }
            #[cfg(test)]
            {
                self.visited += 1;
            }
            let at = slot.offset();
            let arena = self.arena.as_ref();
            let meta = read_meta(arena, at);
            let record = Record::read(arena, at);
            let expired = record.expired(arena, self.now);
            if !expired && meta & record::USED != 0 && nearby.spared < NEARBY {
                nearby.spared += 1;
                write_meta(self.arena.as_mut(), at, meta & !record::USED);
                continue;
            }
            self.forget(i, record);
            if expired {
                self.expired = self.expired.wrapping_add(1);
            } else {
                self.evictions = self.evictions.wrapping_add(1);
            }
            // The backward shift may have moved a later entry into slot i.
            nearby.at = i;
            return;
        }
    }

    /// The record at the tail, the tail first following a wrap; `None`
    /// when the ring is empty.
    fn tail_record(&mut self) -> Option<Record> {
        if self.wrapped && self.tail >= self.end {
            self.tail = 0;
            self.wrapped = false;
        }
        if !self.wrapped && self.tail == self.head {
            return None;
        }
        Some(Record::read(self.arena.as_ref(), self.tail))
    }

    /// Whether a record of `cost` would take the store over its budget
    /// (entries or bytes), not counting `replaced`, an entry the write
    /// replaces but still needs: should it be evicted meanwhile, the write
    /// stores nothing.
    #[inline]
    fn over(&self, cost: usize, budget: usize, max_entries: usize, replaced: (usize, usize)) -> bool {
        let (len, live) = (self.len.saturating_sub(replaced.0), self.live.saturating_sub(replaced.1));
        live + cost > budget || len >= max_entries
    }

    /// Takes `cost` contiguous bytes at the head if they are free.
    fn reserve(&mut self, cost: usize) -> Option<usize> {
        if self.wrapped {
            let at = self.head;
            (at + cost <= self.tail).then(|| {
                self.head += cost;
                at
            })
        } else {
            if self.tail == self.head {
                // Empty: start over at the arena's start.
                (self.tail, self.head) = (0, 0);
            }
            if self.head + cost <= self.arena_len() {
                let at = self.head;
                self.head += cost;
                Some(at)
            } else if cost <= self.tail {
                // Wrap: the records above end where the head is now.
                (self.end, self.head, self.wrapped) = (self.head, cost, true);
                Some(0)
            } else {
                None
            }
        }
    }

    /// Moves the live record at the tail to the head, its used bit
    /// cleared, where there is room for it; false if there is none. With
    /// `slide` (a used record: its second chance), there always is: the
    /// bytes it leaves count as free, so the copy may overlap them (when
    /// wrapped the head is at or below the tail; else it goes to the
    /// arena's start, at or below the tail). An unused record is not slid:
    /// it would make no room, and evicting it makes some at once (keeping
    /// it cost a churning store a tenth of its entries, measured). A record
    /// that lands where it lay is not copied.
    fn move_tail(&mut self, tail: Record, meta: u32, slide: bool) -> bool {
        let size = tail.cost();
        let to = match self.reserve(size) {
            Some(to) => to,
            None if !slide => return false,
            None if self.wrapped => {
                let to = self.head;
                self.head += size;
                to
            }
            None => {
                // Wrap, as reserve does: the records above end where the head is now.
                (self.end, self.head, self.wrapped) = (self.head, size, true);
                0
            }
        };
        let i = (meta & record::SLOT) as usize;
        let arena = self.arena.as_mut();
        if to != tail.at {
            arena.copy_within(tail.at..tail.at + size, to);
            self.moved = self.moved.wrapping_add(size);
        }
        write_meta(arena, to, i as u32);
        let slots = self.slots.as_mut();
        slots[i] = Slot::new(slots[i].hash, to);
        self.tail += size;
        true
    }

    /// Evicts the live record at the tail.
    fn evict_tail(&mut self, tail: Record, meta: u32) {
        self.forget((meta & record::SLOT) as usize, tail);
        self.evictions = self.evictions.wrapping_add(1);
        self.tail += tail.cost();
    }

    /// Slides every live record down to the arena's start, in one pass:
    /// the fallback of a refusing store with no room to reclaim a record
    /// at a time (its tail packed with live records and its head at the
    /// arena's end). The newer records (`0..head` when wrapped) go first.
    fn compact(&mut self) {
        debug!("store compaction: {} live", self.live);
        let (newer, older) =
            if self.wrapped { ((0, self.head), (self.tail, self.end)) } else { ((self.tail, self.head), (0, 0)) };
        let top = self.slide(newer, 0);
        let top = self.slide(older, top);
        self.compactions = self.compactions.wrapping_add(1);
        self.moved = self.moved.wrapping_add(top);
        (self.tail, self.head, self.end, self.wrapped) = (0, top, 0, false);
    }

    /// Moves the live records of `from.0..from.1` down to `to` on (never
    /// past the ones still to move), dropping expired ones; where they end.
    fn slide(&mut self, (mut read, end): (usize, usize), mut to: usize) -> usize {
        while read < end {
            #[cfg(test)]
            {
                self.visited += 1;
            }
            let arena = self.arena.as_ref();
            let record = Record::read(arena, read);
            let meta = read_meta(arena, read);
            let size = record.cost();
            if meta != record::DEAD {
                let i = (meta & record::SLOT) as usize;
                if record.expired(arena, self.now) {
                    // The backward shift rewrites other records' meta where
                    // their slots say they are: moved ones already say so.
                    self.forget(i, record);
                    self.expired = self.expired.wrapping_add(1);
                } else {
                    self.arena.as_mut().copy_within(read..read + size, to);
                    let slots = self.slots.as_mut();
                    slots[i] = Slot::new(slots[i].hash, to);
                    to += size;
                }
            }
            read += size;
        }
        to
    }
}

impl<S, A, L, Q> KeyValueStore for Store<S, A, L, Q>
where
    S: AsRef<[Slot]> + AsMut<[Slot]>,
    A: AsRef<[u8]> + AsMut<[u8]>,
    L: LimitsSource,
    Q: Quota,
{
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        Store::put(self, key, value)
    }

    fn get<R>(&mut self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        f(Store::fetch(self, key))
    }

    fn delete(&mut self, key: &[u8]) -> bool {
        Store::delete(self, key)
    }

    fn get_entry<R>(&mut self, key: &[u8], now: Millis, f: impl FnOnce(Option<Entry<'_>>) -> R) -> R {
        f(Store::entry(self, key, now))
    }

    fn put_with<R>(
        &mut self,
        key: &[u8],
        value: &[u8],
        opts: PutOptions,
        now: Millis,
        old: impl FnOnce(Option<Entry<'_>>) -> R,
    ) -> (R, Result<u64, StoreError>) {
        Store::put_with(self, key, value, opts, now, old)
    }

    fn delete_at(&mut self, key: &[u8], now: Millis) -> bool {
        Store::delete_at(self, key, now)
    }

    fn touch(&mut self, key: &[u8], expiry: Expiry, now: Millis) -> Option<Option<Millis>> {
        Store::touch(self, key, expiry, now)
    }

    fn concat(&mut self, key: &[u8], bytes: &[u8], front: bool, now: Millis) -> Result<u64, StoreError> {
        Store::concat(self, key, bytes, front, now)
    }

    fn incr(&mut self, key: &[u8], delta: u64, down: bool, now: Millis) -> Result<u64, StoreError> {
        Store::incr(self, key, delta, down, now)
    }

    fn entries(&mut self) -> usize {
        self.len
    }
}

/// The value of `digits` if they are 1 to 20 ASCII digits of a u64.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 { None } else { n.checked_mul(10)?.checked_add(u64::from(digit)) }
    })
}

/// `n` in decimal, at the end of `buf`.
fn write_decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Slots in use of a table of `n`: the largest power of two, at most 2^30.
const fn table_len(n: usize) -> usize {
    let t = prev_power_of_two(n);
    if t > MAX_TABLE { MAX_TABLE } else { t }
}

/// Entries a table of `table` slots may hold: at least one slot always
/// stays empty (so a probe always ends) and the load stays under 7/8.
pub const fn max_entries_for(table: usize) -> usize {
    if table == 0 { 0 } else { table - table / 8 - 1 }
}

/// The smallest slot table (a power of two) that holds `entries`: size a
/// store's slots with it.
///
/// # Panics
///
/// If that table would not fit in a `usize`.
pub const fn slots_for(entries: usize) -> usize {
    let mut slots = if entries == 0 { 1 } else { entries.next_power_of_two() };
    while max_entries_for(slots) < entries {
        slots *= 2;
    }
    slots
}

const fn prev_power_of_two(n: usize) -> usize {
    if n == 0 { 0 } else { 1 << (usize::BITS - 1 - n.leading_zeros()) }
}

/// A store (or anything) shared between threads or interrupt handlers,
/// reachable from a `static`. Access is only through [`Shared::with`].
#[derive(Debug)]
pub struct Shared<T>(critical_section::Mutex<RefCell<T>>);

impl<T> Shared<T> {
    /// Wraps `value`.
    pub const fn new(value: T) -> Self {
        Shared(critical_section::Mutex::new(RefCell::new(value)))
    }

    /// Runs `f` inside a critical section with the value borrowed mutably.
    /// Keep `f` short: on a single core it masks interrupts, on a host it
    /// holds a process-wide lock.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        critical_section::with(|cs| f(&mut self.0.borrow_ref_mut(cs)))
    }
}

impl<T: KeyValueStore> KeyValueStore for &Shared<T> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.with(|store| store.put(key, value))
    }

    fn get<R>(&mut self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        self.with(|store| store.get(key, f))
    }

    fn delete(&mut self, key: &[u8]) -> bool {
        self.with(|store| store.delete(key))
    }

    fn get_entry<R>(&mut self, key: &[u8], now: Millis, f: impl FnOnce(Option<Entry<'_>>) -> R) -> R {
        self.with(|store| store.get_entry(key, now, f))
    }

    fn put_with<R>(
        &mut self,
        key: &[u8],
        value: &[u8],
        opts: PutOptions,
        now: Millis,
        old: impl FnOnce(Option<Entry<'_>>) -> R,
    ) -> (R, Result<u64, StoreError>) {
        self.with(|store| store.put_with(key, value, opts, now, old))
    }

    fn delete_at(&mut self, key: &[u8], now: Millis) -> bool {
        self.with(|store| store.delete_at(key, now))
    }

    fn touch(&mut self, key: &[u8], expiry: Expiry, now: Millis) -> Option<Option<Millis>> {
        self.with(|store| store.touch(key, expiry, now))
    }

    fn concat(&mut self, key: &[u8], bytes: &[u8], front: bool, now: Millis) -> Result<u64, StoreError> {
        self.with(|store| store.concat(key, bytes, front, now))
    }

    fn incr(&mut self, key: &[u8], delta: u64, down: bool, now: Millis) -> Result<u64, StoreError> {
        self.with(|store| store.incr(key, delta, down, now))
    }

    fn entries(&mut self) -> usize {
        self.with(|store| store.entries())
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    type Small = ArrayStore<16, 128, 1024>;

    impl<S, A, L, Q> Store<S, A, L, Q>
    where
        S: AsRef<[Slot]> + AsMut<[Slot]>,
        A: AsRef<[u8]> + AsMut<[u8]>,
        L: LimitsSource,
        Q: Quota,
    {
        /// Walks the ring and the table: every live record and its slot
        /// point at each other, and the counts add up.
        fn check(&self) {
            let (arena, slots) = (self.arena.as_ref(), self.slots.as_ref());
            let (mut entries, mut bytes) = (0, 0);
            let mut walk = |from: usize, to: usize| {
                let mut at = from;
                while at < to {
                    let record = Record::read(arena, at);
                    let meta = read_meta(arena, at);
                    if meta != record::DEAD {
                        let slot = slots[(meta & record::SLOT) as usize];
                        assert_eq!(slot.offset(), at, "slot of the record at {at}");
                        assert_eq!(slot.hash, hash(record.key(arena)));
                        entries += 1;
                        bytes += record.cost();
                    }
                    at += record.cost();
                }
                assert_eq!(at, to, "records end where the ring part ends");
            };
            if self.wrapped {
                walk(self.tail, self.end);
                walk(0, self.head);
            } else {
                walk(self.tail, self.head);
            }
            assert_eq!((entries, bytes), (self.len, self.live));
            assert_eq!(slots.iter().filter(|s| !s.is_empty()).count(), self.len);
            for (i, slot) in slots.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
                assert_eq!(read_meta(arena, slot.offset()) & record::SLOT, i as u32);
            }
        }
    }

    #[test]
    fn delete_removes_the_entry_and_its_bytes() {
        let mut s = Small::new();
        s.put(b"k", b"one").unwrap();
        s.put(b"j", b"two").unwrap();
        assert!(s.delete(b"k"));
        assert!(!s.delete(b"k"), "already gone");
        assert!(!s.delete(b"never"));
        assert_eq!(s.get(b"k"), None);
        assert_eq!(s.get(b"j"), Some(&b"two"[..]));
        assert_eq!((s.len(), s.bytes_used()), (1, 12 + 1 + 3));
        s.check();
        s.put(b"k", b"again").unwrap();
        assert_eq!(s.get(b"k"), Some(&b"again"[..]));
        s.check();
    }

    #[test]
    fn backward_shift_keeps_every_probe_run_reachable() {
        // 16 slots, 13 keys: long runs that wrap around the table's end.
        let keys: Vec<[u8; 2]> = (0..13u8).map(|i| [b'k', i]).collect();
        for first in 0..13 {
            let mut s = ArrayStore::<16, 1024, 1024>::new();
            for k in &keys {
                s.put(k, k).unwrap();
            }
            for step in 0..13 {
                let gone = &keys[(first + step * 5) % 13];
                assert!(s.delete(gone));
                s.check();
                assert_eq!(s.get(gone), None);
                for k in &keys {
                    let deleted = (0..=step).any(|d| keys[(first + d * 5) % 13] == *k);
                    assert_eq!(s.get(k), if deleted { None } else { Some(&k[..]) });
                }
            }
            assert!(s.slots.iter().all(|slot| slot.is_empty()), "no tombstones");
        }
    }

    #[test]
    fn an_evicting_store_never_refuses_and_counts_what_it_drops() {
        let mut s = ArrayStore::<16, 256, 1024>::new().when_full(WhenFull::Evict);
        for i in 0..200u32 {
            s.put(&i.to_le_bytes(), &[i as u8; 9]).unwrap();
            s.check();
            assert!(s.len() <= s.limits().max_entries);
            assert_eq!(s.get(&i.to_le_bytes()), Some(&[i as u8; 9][..]), "the newest entry stays");
        }
        assert_eq!(s.evictions(), 200 - s.len() as u64);
        assert_eq!(s.compactions(), 0);
        assert_eq!(s.put(b"k", &[0; 600]), Err(StoreError::ValueTooLong));
        let mut tiny = ArrayStore::<16, 64, 1024>::new().when_full(WhenFull::Evict);
        assert_eq!(tiny.put(b"k", &[0; 60]), Err(StoreError::Full), "bigger than the whole budget");
    }

    #[test]
    fn clock_gives_a_used_entry_a_second_chance() {
        let mut s = ArrayStore::<4, 1024, 1024>::new().when_full(WhenFull::Evict); // 3 entries
        for k in [b"a", b"b", b"c"] {
            s.put(k, b"v").unwrap();
        }
        assert!(KeyValueStore::get(&mut s, b"a", |v| v.is_some()));
        s.put(b"d", b"v").unwrap(); // the hand passes a (used), evicts b
        assert_eq!((s.get(b"a"), s.get(b"b")), (Some(&b"v"[..]), None));
        s.put(b"e", b"v").unwrap(); // c, the oldest unused, goes
        assert_eq!((s.get(b"c"), s.get(b"d"), s.get(b"e")), (None, Some(&b"v"[..]), Some(&b"v"[..])));
        assert_eq!(s.evictions(), 2);
        s.check();
    }

    #[test]
    fn a_refusing_store_reclaims_without_compacting_when_the_tail_is_dead() {
        // An arena with slack: updates that change size leave their old
        // records dead behind them, and the tail passes over them.
        let mut s = Store::with_storage([Slot::EMPTY; 64], [0u8; 4096], Limits::for_frame(1024, 40, 1024));
        for round in 0..2000usize {
            let k = [(round % 40) as u8];
            s.put(&k, &[round as u8; 20][..round % 17]).unwrap();
            if round % 7 == 0 {
                s.delete(&[(round * 3 % 40) as u8]);
            }
        }
        s.check();
        assert_eq!(s.compactions(), 0);
    }

    /// The pause bound, in work: whatever the churn, one put moves at most
    /// [`MAX_MOVES`] records and [`move_budget`] bytes for reclaiming,
    /// visits at most [`visit_budget`] records, and an evicting store
    /// never compacts.
    #[test]
    fn one_put_moves_a_bounded_slice() {
        let slots = std::vec![Slot::EMPTY; 1 << 12].into_boxed_slice();
        let arena = std::vec![0u8; 1 << 16].into_boxed_slice();
        let mut s =
            Store::with_storage(slots, arena, Limits::for_frame(1 << 14, 3000, 1 << 16)).when_full(WhenFull::Evict);
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut worst = 0;
        for _ in 0..200_000 {
            let r = next();
            let key = (r % 12_000).to_le_bytes();
            match r >> 60 {
                0 => {
                    s.delete(&key);
                }
                1..=5 => {
                    KeyValueStore::get(&mut s, &key, |_| ());
                }
                _ => {
                    let len = [0, 8, 16, 100, 1000, 4000][(r >> 32) as usize % 6];
                    let (before, visits) = (s.bytes_moved(), s.records_visited());
                    s.put(&key, &std::vec![r as u8; len]).unwrap();
                    let moved = s.bytes_moved() - before;
                    let visited = s.records_visited() - visits;
                    let cost = RECORD_HEADER_LEN + 8 + len;
                    assert!(moved as usize <= move_budget(cost), "{moved} bytes moved for {len}");
                    assert!(visited as usize <= visit_budget(cost), "{visited} records visited for {len}");
                    worst = worst.max(moved);
                }
            }
        }
        s.check();
        assert_eq!(s.compactions(), 0);
        assert!(s.evictions() > 10_000, "the churn overflowed the store");
        assert!(worst > 0, "second chances were given");
    }

    /// Issue 27: many updates of one key leave a run of dead records; a
    /// put that must evict walked all of them to reach a live one. Now a
    /// put visits at most [`visit_budget`] records, dead ones included.
    #[test]
    fn a_put_visits_a_bounded_number_of_records_after_many_updates() {
        let slots = std::vec![Slot::EMPTY; 64].into_boxed_slice();
        let arena = std::vec![0u8; 1 << 16].into_boxed_slice();
        let mut s = Store::with_storage(slots, arena, Limits::for_frame(1024, 40, 1 << 16)).when_full(WhenFull::Evict);
        for round in 0..2000usize {
            s.put(b"x", &[round as u8; 6][..5 + round % 2]).unwrap(); // sizes alternate: a dead record each
        }
        for k in 1..40u8 {
            s.put(&[k], b"v").unwrap();
        }
        assert_eq!(s.len(), 40);
        for k in 100..140u8 {
            let before = s.records_visited();
            s.put(&[k], b"v").unwrap(); // over the entry limit: evicts
            let visited = s.records_visited() - before;
            assert!(visited as usize <= visit_budget(RECORD_HEADER_LEN + 2), "put {k} visited {visited} records");
            s.check();
        }
        assert_eq!(s.len(), 40);
        assert_eq!(s.get(&[139]), Some(&b"v"[..]));
    }

    /// Over budget with a long dead run at the tail, the victim comes from
    /// near the key's slot, and second chance holds there: the one entry
    /// not used since goes, every used one stays.
    #[test]
    fn a_victim_found_near_the_key_is_the_unused_one() {
        let slots = std::vec![Slot::EMPTY; 64].into_boxed_slice();
        let arena = std::vec![0u8; 1 << 16].into_boxed_slice();
        let mut s = Store::with_storage(slots, arena, Limits::for_frame(1024, 20, 1 << 16)).when_full(WhenFull::Evict);
        for round in 0..2000usize {
            s.put(b"x", &[round as u8; 6][..5 + round % 2]).unwrap();
        }
        for k in 1..20u8 {
            s.put(&[k], b"v").unwrap();
        }
        for k in (1..20u8).filter(|&k| k != 7) {
            assert!(KeyValueStore::get(&mut s, &[k], |v| v.is_some()));
        }
        let before = s.records_visited();
        s.put(b"new", b"v").unwrap();
        assert!((s.records_visited() - before) as usize <= visit_budget(RECORD_HEADER_LEN + 4));
        assert_eq!(s.evictions(), 1);
        assert_eq!(s.get(&[7]), None, "the unused entry went");
        assert!((1..20u8).filter(|&k| k != 7).all(|k| s.get(&[k]).is_some()), "every used one stayed");
        assert!(s.get(b"x").is_some() && s.get(b"new").is_some());
        s.check();
    }

    /// Issue 27: with too little room at the head to move the record at the
    /// tail, the store evicted it, used or not, although the put was
    /// within budget. A used record now moves sliding over the bytes it
    /// leaves (second chance); an unused one there is the one evicted.
    #[test]
    fn a_used_entry_is_kept_while_the_store_has_budget_for_the_put() {
        let mut s = ArrayStore::<16, 256, 1024>::new().when_full(WhenFull::Evict); // fills up to 240 bytes
        for k in [b"a", b"b", b"c", b"e"] {
            s.put(k, &[k[0]; 47]).unwrap(); // 60 bytes each: 0..240
        }
        assert!(s.delete(b"c") && s.delete(b"e")); // 120 bytes live, 16 free at the arena's end
        assert!(KeyValueStore::get(&mut s, b"a", |v| v.is_some()));
        s.put(b"d", &[b'd'; 47]).unwrap(); // 180 of 240 bytes: within budget
        s.check();
        assert_eq!(s.get(b"a"), Some(&[b'a'; 47][..]), "the used entry was evicted");
        assert_eq!((s.get(b"b"), s.evictions()), (None, 1), "the unused one behind it made the room");
        assert_eq!(s.get(b"d"), Some(&[b'd'; 47][..]));
    }

    #[test]
    fn hashes_spread_keys_over_a_table() {
        for (name, hash) in [("words", hash_words as fn(&[u8]) -> u32), ("bytes", hash_bytes)] {
            let mut per_slot = [0usize; 64];
            for i in 0..64_000u32 {
                let key = std::format!("key-{i}");
                per_slot[hash(key.as_bytes()) as usize & 63] += 1;
            }
            assert!(per_slot.iter().all(|&n| (800..1200).contains(&n)), "{name}: {per_slot:?}");
        }
    }

    /// Kvio frames' entries are plain records: 12 bytes beyond the key and
    /// the value, whatever the store can do.
    #[test]
    fn a_plain_entry_costs_its_key_its_value_and_12_bytes() {
        let mut s = Small::new();
        s.put(b"key", b"value").unwrap();
        assert_eq!(s.bytes_used(), 12 + 3 + 5);
        let mut with_cas = Small::new().with_cas(cfg!(feature = "entry-fields"));
        with_cas.put(b"key", b"value").unwrap();
        let cas = if cfg!(feature = "entry-fields") { CAS_LEN } else { 0 };
        assert_eq!(with_cas.bytes_used(), 12 + cas + 3 + 5);
    }

    #[cfg(not(feature = "entry-fields"))]
    #[test]
    fn without_entry_fields_expiry_and_flags_are_refused_and_nothing_is_lost() {
        let mut s = Small::new().with_cas(true);
        s.put(b"k", b"v").unwrap();
        let at = |t| PutOptions { expiry: Expiry::At(t), ..PutOptions::default() };
        assert_eq!(s.put_with(b"k", b"w", at(100), 10, |_| ()).1, Err(StoreError::Unsupported));
        let flags = PutOptions { flags: 1, ..PutOptions::default() };
        assert_eq!(s.put_with(b"k", b"w", flags, 10, |_| ()).1, Err(StoreError::Unsupported));
        assert_eq!(s.get(b"k"), Some(&b"v"[..]));
        assert_eq!(s.touch(b"k", Expiry::At(100), 10), None, "no expiry to set");
        assert_eq!(s.entry(b"k", 10).map(|e| e.cas), Some(0), "no cas without the fields");
        assert_eq!(s.put_with(b"k", b"w", at(5), 10, |_| ()).1, Ok(0), "a past expiry is a delete");
        assert_eq!(s.get(b"k"), None);
    }

    /// Expiry, flags, cas, conditions, touch, concat and incr.
    #[cfg(feature = "entry-fields")]
    mod entry_fields {
        use super::*;

        type Cas = Store<std::boxed::Box<[Slot]>, std::boxed::Box<[u8]>>;

        fn store(cas: bool) -> Cas {
            let slots = std::vec![Slot::EMPTY; 64].into_boxed_slice();
            let arena = std::vec![0u8; 4096].into_boxed_slice();
            Store::with_storage(slots, arena, Limits::for_frame(1024, 40, 4096)).with_cas(cas)
        }

        fn opts(expiry: Expiry, flags: u32, condition: Condition) -> PutOptions {
            PutOptions { flags, expiry, condition, text: false }
        }

        fn put(s: &mut Cas, key: &[u8], value: &[u8], o: PutOptions, now: Millis) -> Result<u64, StoreError> {
            let result = s.put_with(key, value, o, now, |_| ()).1;
            s.check();
            result
        }

        /// An entry's value, flags, expiry, cas and text mark.
        type Seen = (Vec<u8>, u32, Option<Millis>, u64, bool);

        fn entry(s: &mut Cas, key: &[u8], now: Millis) -> Option<Seen> {
            s.entry(key, now).map(|e| (e.value.to_vec(), e.flags, e.expires, e.cas, e.text))
        }

        #[test]
        fn fields_cost_their_bytes_and_come_back() {
            let mut s = store(false);
            put(&mut s, b"k", b"v", opts(Expiry::At(100), 0, Condition::Always), 0).unwrap();
            assert_eq!(s.bytes_used(), 12 + EXPIRY_LEN + 2);
            put(&mut s, b"k", b"v", opts(Expiry::Never, 7, Condition::Always), 0).unwrap();
            assert_eq!(s.bytes_used(), 12 + FLAGS_LEN + 2, "the expiry went, flags came");
            put(&mut s, b"k", b"v", opts(Expiry::At(100), 7, Condition::Always), 0).unwrap();
            assert_eq!(s.bytes_used(), 12 + EXPIRY_LEN + FLAGS_LEN + 2);
            assert_eq!(entry(&mut s, b"k", 0), Some((b"v".to_vec(), 7, Some(100), 0, false)));
            let text = PutOptions { text: true, ..PutOptions::default() };
            put(&mut s, b"k", b"v", text, 0).unwrap();
            assert_eq!(s.bytes_used(), 12 + 2, "the text mark takes no byte");
            assert_eq!(entry(&mut s, b"k", 0), Some((b"v".to_vec(), 0, None, 0, true)));
            let mut c = store(true);
            put(&mut c, b"k", b"v", opts(Expiry::At(100), 7, Condition::Always), 0).unwrap();
            assert_eq!(c.bytes_used(), 12 + EXPIRY_LEN + CAS_LEN + FLAGS_LEN + 2);
        }

        #[test]
        fn an_entry_expires_at_its_instant_not_before() {
            let mut s = store(false);
            put(&mut s, b"k", b"v", opts(Expiry::At(1000), 0, Condition::Always), 500).unwrap();
            assert_eq!(entry(&mut s, b"k", 999).map(|e| e.2), Some(Some(1000)));
            assert_eq!(s.get(b"k"), Some(&b"v"[..]));
            assert_eq!(KeyValueStore::entries(&mut s), 1);
            assert_eq!(entry(&mut s, b"k", 1000), None, "expires == now is expired");
            assert_eq!((s.len(), s.bytes_used(), s.expired()), (0, 0, 1), "the get forgot it");
            s.check();
        }

        #[test]
        fn every_operation_sees_an_expired_entry_as_absent() {
            let expiring = opts(Expiry::At(100), 3, Condition::Always);
            type Absent = fn(&mut Cas) -> bool;
            let cases: [(&str, Absent); 7] = [
                ("get", |s| s.entry(b"k", 100).is_none()),
                ("delete", |s| !s.delete_at(b"k", 100)),
                ("touch", |s| s.touch(b"k", Expiry::At(500), 100).is_none()),
                ("concat", |s| s.concat(b"k", b"x", false, 100) == Err(StoreError::NotStored)),
                ("incr", |s| s.incr(b"k", 1, false, 100) == Err(StoreError::NotFound)),
                ("put NX", |s| {
                    s.put_with(b"k", b"new", opts(Expiry::Never, 0, Condition::Absent), 100, |old| old.is_none())
                        == (true, Ok(0))
                }),
                ("put XX", |s| {
                    s.put_with(b"k", b"new", opts(Expiry::Never, 0, Condition::Present), 100, |_| ()).1
                        == Err(StoreError::NotStored)
                }),
            ];
            for (name, absent) in cases {
                let mut s = store(false);
                put(&mut s, b"k", b"1", expiring, 50).unwrap();
                assert!(absent(&mut s), "{name}");
                s.check();
                assert_eq!(s.expired(), 1, "{name}: the expired entry was forgotten");
            }
        }

        #[test]
        fn a_past_expiry_stores_nothing_and_removes_the_old_entry() {
            let mut s = store(true);
            put(&mut s, b"k", b"old", PutOptions::default(), 100).unwrap();
            let got = s.put_with(b"k", b"new", opts(Expiry::At(100), 0, Condition::Always), 100, |old| {
                old.map(|e| e.value.to_vec())
            });
            assert_eq!(got, (Some(b"old".to_vec()), Ok(0)), "the put succeeds and hands the old value");
            assert_eq!((s.get(b"k"), s.len(), s.bytes_used()), (None, 0, 0));
            assert_eq!(put(&mut s, b"k", b"v", opts(Expiry::At(7), 0, Condition::Absent), 100), Ok(0));
            assert_eq!(s.get(b"k"), None);
        }

        #[test]
        fn keep_keeps_the_old_expiry_and_never_clears_it() {
            let mut s = store(false);
            put(&mut s, b"k", b"a", opts(Expiry::At(900), 0, Condition::Always), 0).unwrap();
            put(&mut s, b"k", b"bb", opts(Expiry::Keep, 0, Condition::Always), 0).unwrap();
            assert_eq!(entry(&mut s, b"k", 0).map(|e| e.2), Some(Some(900)));
            put(&mut s, b"k", b"c", PutOptions::default(), 0).unwrap();
            assert_eq!(entry(&mut s, b"k", 0).map(|e| e.2), Some(None));
            put(&mut s, b"new", b"c", opts(Expiry::Keep, 0, Condition::Always), 0).unwrap();
            assert_eq!(entry(&mut s, b"new", 0).map(|e| e.2), Some(None), "keep of nothing is none");
        }

        #[test]
        fn conditions_decide_before_anything_is_written_and_old_is_always_called() {
            let mut s = store(true);
            let nx = opts(Expiry::Never, 0, Condition::Absent);
            let xx = opts(Expiry::Never, 0, Condition::Present);
            let mut seen = Vec::new();
            let mut put_seeing = |s: &mut Cas, value: &[u8], o: PutOptions| {
                let (old, result) = s.put_with(b"k", value, o, 0, |old| old.map(|e| e.value.to_vec()));
                seen.push(old);
                result
            };
            assert_eq!(put_seeing(&mut s, b"1", xx), Err(StoreError::NotStored), "XX on absent");
            let first = put_seeing(&mut s, b"1", nx).unwrap();
            assert_eq!(put_seeing(&mut s, b"2", nx), Err(StoreError::NotStored), "NX on present");
            let second = put_seeing(&mut s, b"2", xx).unwrap();
            assert_eq!(seen, [None, None, Some(b"1".to_vec()), Some(b"1".to_vec())]);
            assert!(first != 0 && second != first);
            assert_eq!(s.get(b"k"), Some(&b"2"[..]));
            let cas = |c| opts(Expiry::Never, 0, Condition::Cas(c));
            assert_eq!(put(&mut s, b"k", b"3", cas(first), 0), Err(StoreError::Exists), "a stale cas");
            let third = put(&mut s, b"k", b"3", cas(second), 0).unwrap();
            assert!(third > second);
            assert_eq!(put(&mut s, b"absent", b"3", cas(third), 0), Err(StoreError::NotFound));
            assert_eq!(s.get(b"k"), Some(&b"3"[..]));
            assert_eq!(s.len(), 1);
        }

        #[test]
        fn without_cas_entries_report_0_and_a_cas_put_fails_with_exists() {
            let mut s = store(false);
            assert_eq!(put(&mut s, b"k", b"v", PutOptions::default(), 0), Ok(0));
            assert_eq!(entry(&mut s, b"k", 0).map(|e| e.3), Some(0));
            let cas = |c| opts(Expiry::Never, 0, Condition::Cas(c));
            assert_eq!(put(&mut s, b"k", b"w", cas(0), 0), Err(StoreError::Exists));
            assert_eq!(put(&mut s, b"k", b"w", cas(1), 0), Err(StoreError::Exists));
            assert_eq!(put(&mut s, b"absent", b"w", cas(0), 0), Err(StoreError::NotFound));
            assert_eq!(s.concat(b"k", b"x", false, 0), Ok(0));
        }

        #[test]
        fn cas_changes_on_every_write_and_only_on_writes() {
            let mut s = store(true);
            let mut last = put(&mut s, b"n", b"5", PutOptions::default(), 0).unwrap();
            let mut next = |cas: u64, what: &str| {
                assert!(cas > last, "{what}: {cas} after {last}");
                last = cas;
            };
            next(put(&mut s, b"n", b"6", PutOptions::default(), 0).unwrap(), "in-place update");
            next(put(&mut s, b"n", b"77", PutOptions::default(), 0).unwrap(), "update to a new record");
            next(s.concat(b"n", b"8", false, 0).unwrap(), "append");
            next(s.concat(b"n", b"", true, 0).unwrap(), "prepend nothing");
            s.incr(b"n", 1, false, 0).unwrap();
            next(entry(&mut s, b"n", 0).unwrap().3, "incr");
            s.incr(b"n", 1000, true, 0).unwrap();
            next(entry(&mut s, b"n", 0).unwrap().3, "decr");
            assert_eq!(s.touch(b"n", Expiry::At(1_000), 0), Some(None));
            assert_eq!(entry(&mut s, b"n", 0).unwrap().3, last, "touch keeps the cas");
            assert_eq!(s.touch(b"n", Expiry::Never, 0), Some(Some(1_000)));
            assert_eq!(entry(&mut s, b"n", 0).unwrap().3, last, "so does clearing");
            s.check();
        }

        #[test]
        fn touch_sets_clears_and_keeps_and_says_what_there_was() {
            let mut s = store(true);
            assert_eq!(s.touch(b"k", Expiry::At(100), 0), None, "absent");
            put(&mut s, b"k", b"v", opts(Expiry::Never, 9, Condition::Always), 0).unwrap();
            let plain = s.bytes_used();
            assert_eq!(s.touch(b"k", Expiry::Keep, 0), Some(None));
            assert_eq!(s.touch(b"k", Expiry::At(100), 0), Some(None));
            assert_eq!(s.bytes_used(), plain + EXPIRY_LEN, "the record gained an expiry field");
            assert_eq!(s.touch(b"k", Expiry::At(200), 0), Some(Some(100)));
            assert_eq!(s.touch(b"k", Expiry::Keep, 0), Some(Some(200)));
            assert_eq!(s.touch(b"k", Expiry::Never, 0), Some(Some(200)));
            assert_eq!(s.bytes_used(), plain + EXPIRY_LEN, "cleared in place: the field stays");
            assert_eq!(entry(&mut s, b"k", 0).map(|e| (e.0, e.1, e.2)), Some((b"v".to_vec(), 9, None)));
            assert_eq!(s.touch(b"k", Expiry::At(300), 250), Some(None), "set in place again");
            assert_eq!(entry(&mut s, b"k", 299).map(|e| e.2), Some(Some(300)));
            assert_eq!(s.touch(b"k", Expiry::At(10), 299), Some(Some(300)), "a past expiry removes");
            assert_eq!((s.len(), s.get(b"k")), (0, None));
            s.check();
        }

        #[test]
        fn touch_that_cannot_grow_a_full_refusing_store_changes_nothing() {
            let slots = std::vec![Slot::EMPTY; 16].into_boxed_slice();
            let arena = std::vec![0u8; 40].into_boxed_slice();
            let mut s = Store::with_storage(slots, arena, Limits::for_frame(1024, 10, 40));
            put(&mut s, b"k", &[1; 20], PutOptions::default(), 0).unwrap(); // 33 of 40 bytes
            assert_eq!(s.touch(b"k", Expiry::At(100), 0), None, "8 more bytes do not fit");
            assert_eq!((s.get(b"k"), s.bytes_used()), (Some(&[1; 20][..]), 33));
            assert_eq!(entry(&mut s, b"k", 0).map(|e| e.2), Some(None));
        }

        #[test]
        fn concat_appends_and_prepends_keeping_flags_and_expiry() {
            let mut s = store(true);
            assert_eq!(s.concat(b"k", b"x", false, 0), Err(StoreError::NotStored));
            let text = PutOptions { text: true, ..opts(Expiry::At(5000), 42, Condition::Always) };
            put(&mut s, b"k", b"mid", text, 0).unwrap();
            s.concat(b"k", b"-end", false, 0).unwrap();
            let cas = s.concat(b"k", b"start-", true, 0).unwrap();
            assert_eq!(entry(&mut s, b"k", 0), Some((b"start-mid-end".to_vec(), 42, Some(5000), cas, true)));
            s.concat(b"k", &[0xff], false, 0).unwrap();
            assert_eq!(entry(&mut s, b"k", 0).map(|e| e.4), Some(false), "not UTF-8 any more");
            let long = std::vec![b'x'; s.limits().max_value_len];
            assert_eq!(s.concat(b"k", &long, false, 0), Err(StoreError::ValueTooLong));
            assert_eq!(s.len(), 1);
            s.check();
        }

        #[test]
        fn concat_needs_the_old_and_the_new_record_at_once_in_a_refusing_store() {
            let slots = std::vec![Slot::EMPTY; 16].into_boxed_slice();
            let arena = std::vec![0u8; 100].into_boxed_slice();
            let mut s = Store::with_storage(slots, arena, Limits::for_frame(1024, 10, 100));
            put(&mut s, b"k", &[1; 40], PutOptions::default(), 0).unwrap(); // 53 bytes
            assert_eq!(s.concat(b"k", b"12345", false, 0), Err(StoreError::Full), "53 + 58 > 100");
            assert_eq!(s.get(b"k"), Some(&[1; 40][..]));
            put(&mut s, b"k", &[1; 20], PutOptions::default(), 0).unwrap(); // 33 bytes
            assert_eq!(s.concat(b"k", b"12345", false, 0), Ok(0));
            let mut want = std::vec![1; 20];
            want.extend_from_slice(b"12345");
            assert_eq!(s.get(b"k"), Some(&want[..]));
            s.check();
        }

        /// Found by the fuzzer (`store_model`): an evicting store whose
        /// room making for a concat evicts the very entry (moves spent on
        /// the 16 records before it) answers NotStored, leaves the dead
        /// space it reserved behind, and keeps its counts. It subtracted
        /// the entry twice, and overflowed when that was the last one.
        #[test]
        fn a_concat_whose_entry_is_evicted_to_make_room_stores_nothing() {
            let slots = std::vec![Slot::EMPTY; 64].into_boxed_slice();
            let arena = std::vec![0u8; 512].into_boxed_slice();
            let mut s = Store::with_storage(slots, arena, Limits::for_frame(1024, 50, 512)).when_full(WhenFull::Evict);
            for k in 0..16u8 {
                put(&mut s, &[k], b"", PutOptions::default(), 0).unwrap(); // 13 bytes each: 0..208
            }
            // Bigger than the 16 together: subtracted twice, the count went below 0.
            put(&mut s, b"r", &[7; 230], PutOptions::default(), 0).unwrap(); // 208..451
            put(&mut s, b"X", &[0; 16], PutOptions::default(), 0).unwrap(); // 451..480, within 15/16
            assert!(s.delete(b"X"));
            assert_eq!(s.concat(b"r", &[8; 10], false, 0), Err(StoreError::NotStored));
            assert_eq!((s.get(b"r"), s.evictions(), s.len()), (None, 1, 16));
            s.check();
            assert!((0..16u8).all(|k| s.get(&[k]).is_some()), "the 16 were moved, not evicted");
            put(&mut s, b"r", b"again", PutOptions::default(), 0).unwrap();
            s.check();
        }

        #[test]
        fn incr_and_decr_wrap_floor_and_keep_flags_and_expiry() {
            let mut s = store(true);
            assert_eq!(s.incr(b"n", 1, false, 0), Err(StoreError::NotFound));
            put(&mut s, b"n", b"0041", opts(Expiry::At(9000), 5, Condition::Always), 0).unwrap();
            assert_eq!(s.incr(b"n", 1, false, 0), Ok(42));
            let e = entry(&mut s, b"n", 0).unwrap();
            assert_eq!((e.0, e.1, e.2, e.4), (b"42".to_vec(), 5, Some(9000), true));
            assert_eq!(s.incr(b"n", 100, true, 0), Ok(0), "decr floors at 0");
            assert_eq!(s.get(b"n"), Some(&b"0"[..]));
            put(&mut s, b"n", b"18446744073709551615", PutOptions::default(), 0).unwrap();
            assert_eq!(s.incr(b"n", 2, false, 0), Ok(1), "incr wraps at 2^64");
            assert_eq!(s.get(b"n"), Some(&b"1"[..]));
            assert_eq!(s.incr(b"n", 9, false, 0), Ok(10));
            assert_eq!(s.incr(b"n", 1, true, 0), Ok(9), "one digit fewer");
            s.check();
            for bad in [&b""[..], b"12a", b"-1", b" 1", b"18446744073709551616", b"000000000000000000001"] {
                put(&mut s, b"n", bad, PutOptions::default(), 0).unwrap();
                assert_eq!(s.incr(b"n", 1, false, 0), Err(StoreError::NotANumber), "{bad:?}");
                assert_eq!(s.get(b"n"), Some(bad), "unchanged");
            }
        }

        /// Expired entries nobody reads any more come back before anything
        /// live is evicted or a put refused: the evicting store's hand drops
        /// them; a refusing store about to refuse sweeps the table near the
        /// key. Counted as expired, never as evictions.
        #[test]
        fn expired_entries_are_reclaimed_before_anything_live_is_evicted_or_refused() {
            for policy in [WhenFull::Refuse, WhenFull::Evict] {
                let slots = std::vec![Slot::EMPTY; 64].into_boxed_slice();
                let arena = std::vec![0u8; 1024].into_boxed_slice();
                let mut s = Store::with_storage(slots, arena, Limits::for_frame(1024, 40, 1024)).when_full(policy);
                for k in 0..20u8 {
                    put(&mut s, &[k], &[k; 20], opts(Expiry::At(100), 0, Condition::Always), 0).unwrap();
                }
                // Time passes: 25 new entries fit only in place of the expired ones.
                for k in 20..45u8 {
                    put(&mut s, &[k], &[k; 20], PutOptions::default(), 200).unwrap();
                }
                assert!(s.expired() >= 5, "{policy:?}: {} expired", s.expired());
                assert!((20..45u8).all(|k| s.get(&[k]).is_some()), "{policy:?}");
                assert_eq!(s.evictions(), 0, "{policy:?}: nothing live was evicted for them");
                assert!((0..20u8).all(|k| s.get(&[k]).is_none()));
            }
        }

        #[test]
        fn a_compaction_drops_expired_records() {
            // No slack beyond the budget: 17 live records at the tail are
            // more than one put may move, so the refusing store compacts.
            let slots = std::vec![Slot::EMPTY; 64].into_boxed_slice();
            let arena = std::vec![0u8; 600].into_boxed_slice();
            let mut s = Store::with_storage(slots, arena, Limits::for_frame(1024, 50, 600));
            for k in 0..17u8 {
                put(&mut s, &[k], b"", PutOptions::default(), 0).unwrap(); // 13 bytes each
            }
            for k in 100..103u8 {
                put(&mut s, &[k], &[k; 10], opts(Expiry::At(100), 0, Condition::Always), 0).unwrap(); // 31 each
            }
            put(&mut s, b"X", &[0; 263], PutOptions::default(), 0).unwrap(); // 276: the head at 590
            assert!(s.delete(b"X"));
            put(&mut s, b"Y", &[1; 20], PutOptions::default(), 200).unwrap(); // within budget, no room at the head
            assert_eq!((s.compactions(), s.expired(), s.evictions()), (1, 3, 0));
            assert_eq!(s.len(), 18);
            assert!((100..103u8).all(|k| s.get(&[k]).is_none()));
            assert!((0..17u8).all(|k| s.get(&[k]) == Some(&b""[..])));
        }

        /// A refusing store asks its quota before it grows, with what it
        /// grows by since the operation began, and a no is a `Full` that
        /// changes nothing.
        #[test]
        fn the_quota_is_asked_before_growing_and_a_no_changes_nothing() {
            #[derive(Default)]
            struct Tally {
                asked: Vec<(usize, usize)>,
                allow: bool,
            }
            impl Quota for Tally {
                fn reserve(&mut self, entries: usize, bytes: usize) -> bool {
                    self.asked.push((entries, bytes));
                    self.allow
                }
            }
            let mut s = store(false).with_quota(Tally { allow: true, ..Tally::default() });
            s.put(b"k", b"abc").unwrap();
            s.put(b"k", b"xyz").unwrap(); // in place: not asked
            s.put(b"k", b"a").unwrap(); // smaller: not asked
            s.put(b"k", b"abcdef").unwrap();
            s.put_with(b"e", b"v", opts(Expiry::At(50), 0, Condition::Always), 0, |_| ()).1.unwrap();
            // The expired entry goes first: the new one grows nothing on balance.
            s.put_with(b"e", b"v", PutOptions::default(), 60, |_| ()).1.unwrap();
            assert_eq!(s.quota_mut().asked, [(1, 16), (0, 5), (1, 22)]);
            s.quota_mut().allow = false;
            assert_eq!(s.put(b"new", b"v"), Err(StoreError::Full));
            assert_eq!(s.concat(b"k", b"more", false, 60), Err(StoreError::Full));
            assert_eq!((s.get(b"new"), s.get(b"k")), (None, Some(&b"abcdef"[..])));
            assert_eq!(s.len(), 2);
            s.check();
        }
    }

    #[test]
    fn put_get_update() {
        let mut s = Small::new();
        assert_eq!(s.get(b"k"), None);
        s.put(b"k", b"one").unwrap();
        assert_eq!(s.get(b"k"), Some(&b"one"[..]));
        s.put(b"k", b"two").unwrap(); // same size: in place
        assert_eq!(s.get(b"k"), Some(&b"two"[..]));
        s.put(b"k", b"three").unwrap();
        assert_eq!(s.get(b"k"), Some(&b"three"[..]));
        s.put(b"", b"").unwrap();
        assert_eq!(s.get(b""), Some(&b""[..]));
        assert_eq!(s.len(), 2);
        assert_eq!(s.bytes_used(), 12 + 1 + 5 + 12);
    }

    #[test]
    fn full_store_refuses_new_keys_and_keeps_old_ones() {
        let mut s = ArrayStore::<4, 1024, 1024>::new(); // 3 entries at most
        for k in [b"a", b"b", b"c"] {
            s.put(k, b"v").unwrap();
        }
        assert_eq!(s.put(b"d", b"v"), Err(StoreError::Full));
        s.put(b"a", b"updated").unwrap(); // existing keys still update
        assert_eq!(s.get(b"a"), Some(&b"updated"[..]));
        assert_eq!(s.get(b"d"), None);
    }

    #[test]
    fn budget_refusal_keeps_the_old_value() {
        let mut s = ArrayStore::<16, 40, 1024>::new();
        s.put(b"k", b"0123456789").unwrap(); // 23 bytes
        assert_eq!(s.put(b"k", b"0123456789012345678901234567"), Err(StoreError::Full));
        assert_eq!(s.get(b"k"), Some(&b"0123456789"[..]));
    }

    #[test]
    fn limits_follow_the_frame_length() {
        let l = Limits::for_frame(1 << 20, 10, 100);
        assert_eq!(l.max_key_len, 1024);
        assert_eq!(l.max_key_len + l.max_value_len + RESPONSE_OVERHEAD + 5, 1 << 20);
        let l = Limits::for_frame(65, 10, 100);
        assert_eq!((l.max_key_len, l.max_value_len), (20, 20));
        let mut s = ArrayStore::<16, 1024, 65>::new();
        assert_eq!(s.put(&[b'k'; 21], b""), Err(StoreError::KeyTooLong));
        assert_eq!(s.put(b"k", &[0; 21]), Err(StoreError::ValueTooLong));
        assert_eq!(s.put(&[b'k'; 20], &[0; 20]), Ok(()));
    }

    #[test]
    fn compaction_keeps_every_entry() {
        let mut s = ArrayStore::<16, 64, 1024>::new();
        for round in 0..50u8 {
            let v = [round; 7];
            s.put(b"x", &v[..(round as usize % 7) + 1]).unwrap();
            s.put(b"y", &v[..((round as usize + 3) % 7) + 1]).unwrap();
            assert_eq!(s.get(b"x").unwrap().len(), (round as usize % 7) + 1);
            assert!(s.get(b"y").unwrap().iter().all(|&b| b == round));
        }
    }

    #[test]
    fn a_fresh_array_store_is_all_zero_bytes() {
        // What lets a `static` of it live in `.bss` (no flash image, no copy at boot).
        assert_eq!(Slot::EMPTY, Slot { hash: 0, record: 0 });
        assert_eq!(core::mem::size_of::<FrameLimits<1024>>(), 0);
        let s = Small::new();
        assert!(s.slots.iter().all(|slot| *slot == Slot { hash: 0, record: 0 }));
        assert!(s.arena.iter().all(|&b| b == 0));
        assert_eq!((s.len, s.live, s.head, s.tail, s.end, s.wrapped), (0, 0, 0, 0, 0, false));
        assert_eq!((s.when_full, s.evictions, s.moved, s.compactions), (WhenFull::Refuse, 0, 0, 0));
        assert_eq!(s.limits(), Limits::for_frame(1024, 13, 128));
    }

    #[test]
    fn slots_for_gives_the_smallest_table_that_holds_the_entries() {
        for entries in [0usize, 1, 6, 7, 8, 100, 100_000, 114_687, 114_688] {
            let slots = slots_for(entries);
            assert!(slots.is_power_of_two());
            assert!(max_entries_for(slots) >= entries, "{entries} -> {slots}");
            let half = slots / 2;
            assert!(half == 0 || max_entries_for(half) < entries, "{entries} -> {slots} is not the smallest");
        }
        assert_eq!(slots_for(100_000), 131_072);
        assert_eq!(slots_for(7), 16, "8 slots hold 6");
        let store =
            Store::with_storage(std::vec![Slot::EMPTY; slots_for(100)], [0u8; 0], Limits::for_frame(1024, 100, 0));
        assert_eq!(store.limits().max_entries, 100);
    }

    #[test]
    fn same_bytes_is_slice_equality() {
        let bytes: Vec<u8> = (0..40).collect();
        for n in 0..40 {
            let a = &bytes[..n];
            assert!(same_bytes(a, a));
            assert!(!same_bytes(a, &bytes[1..n + 1]) || n == 0);
            for at in 0..n {
                let mut b = a.to_vec();
                b[at] ^= 0x80;
                assert!(!same_bytes(a, &b), "length {n}, byte {at} differs");
            }
        }
        assert!(!same_bytes(b"abc", b"abcd"));
    }

    #[test]
    fn shared_store_in_a_static() {
        static STORE: Shared<ArrayStore<8, 64, 1024>> = Shared::new(ArrayStore::new());
        let mut handle = &STORE;
        handle.put(b"k", b"v").unwrap();
        let got = std::thread::spawn(|| (&STORE).get(b"k", |v| v.map(|v| v.to_vec()))).join().unwrap();
        assert_eq!(got.as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn boxed_storage_works_like_arrays() {
        let slots = std::vec![Slot::EMPTY; 100].into_boxed_slice(); // uses 64
        let arena = std::vec![0u8; 256].into_boxed_slice();
        let mut s = Store::with_storage(slots, arena, Limits::for_frame(1024, 1000, 200));
        assert_eq!(s.limits().max_entries, 55);
        assert_eq!(s.limits().byte_budget, 200);
        s.put(b"k", b"v").unwrap();
        assert_eq!(s.get(b"k"), Some(&b"v"[..]));
    }

    /// Every operation against a model over a `BTreeMap` that knows time:
    /// expiry at the boundary, flags, cas, conditions, touch, concat, incr.
    #[cfg(feature = "entry-fields")]
    mod timed_model {
        use super::*;
        use proptest::prelude::*;
        use std::boxed::Box;
        use std::string::ToString;
        use std::vec;

        #[derive(Debug, Clone)]
        enum Op {
            Put {
                key: u8,
                value: Vec<u8>,
                flags: u32,
                expiry: Expiry,
                condition: u8,
                text: bool,
            },
            Get(u8),
            Delete(u8),
            Touch(u8, Expiry),
            Concat(u8, Vec<u8>, bool),
            Incr(u8, u64, bool),
            /// Time passes; the op after it passes 0 (the latest) when the flag is set.
            Wait(u64, bool),
        }

        fn value() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                prop::sample::select(vec!["", "0", "7", "42", "99", "18446744073709551615", "x"])
                    .prop_map(|v| v.as_bytes().to_vec()),
                prop::collection::vec(any::<u8>(), 0..12),
            ]
        }

        fn expiry() -> impl Strategy<Value = Expiry> {
            prop_oneof![Just(Expiry::Never), Just(Expiry::Keep), (0u64..40).prop_map(|t| Expiry::At(990 + t))]
        }

        fn op() -> impl Strategy<Value = Op> {
            let key = 0u8..5;
            prop_oneof![
                4 => (key.clone(), value(), prop_oneof![Just(0u32), Just(7)], expiry(), 0u8..6, any::<bool>())
                    .prop_map(|(key, value, flags, expiry, condition, text)| Op::Put { key, value, flags, expiry, condition, text }),
                2 => key.clone().prop_map(Op::Get),
                1 => key.clone().prop_map(Op::Delete),
                1 => (key.clone(), expiry()).prop_map(|(k, e)| Op::Touch(k, e)),
                1 => (key.clone(), value(), any::<bool>()).prop_map(|(k, v, f)| Op::Concat(k, v, f)),
                1 => (key, prop_oneof![Just(1u64), Just(5), Just(u64::MAX)], any::<bool>()).prop_map(|(k, d, down)| Op::Incr(k, d, down)),
                1 => (0u64..12, any::<bool>()).prop_map(|(t, latest)| Op::Wait(t, latest)),
            ]
        }

        #[derive(Debug, Clone, PartialEq)]
        struct Held {
            value: Vec<u8>,
            flags: u32,
            expires: Option<Millis>,
            /// The record has an expiry field (a cleared one stays).
            field: bool,
            cas: u64,
            text: bool,
        }

        /// The store's rule over a map: live entries, and expired ones the
        /// store may not have reclaimed yet (they hold budget until then).
        struct Model {
            live: BTreeMap<u8, Held>,
            lingering: BTreeMap<u8, usize>,
            now: Millis,
            limits: Limits,
            cas: bool,
            last_cas: u64,
        }

        impl Model {
            fn cost(&self, held: &Held) -> usize {
                let fields = EXPIRY_LEN * usize::from(held.field) + FLAGS_LEN * usize::from(held.flags != 0);
                RECORD_HEADER_LEN + fields + CAS_LEN * usize::from(self.cas) + 1 + held.value.len()
            }

            /// Time moves on: entries expired by now linger.
            fn tick(&mut self) {
                let now = self.now;
                let gone: Vec<u8> =
                    self.live.iter().filter(|(_, h)| h.expires.is_some_and(|t| t <= now)).map(|(k, _)| *k).collect();
                for k in gone {
                    let held = self.live.remove(&k).unwrap();
                    self.lingering.insert(k, self.cost(&held));
                }
            }

            /// A lookup of `key` forgets its expired entry for sure.
            fn look(&mut self, key: u8) -> Option<Held> {
                self.lingering.remove(&key);
                self.live.get(&key).cloned()
            }

            /// Whether a write that replaces `key`'s entry by `new` must,
            /// may or must not be refused: (surely fits, surely refused).
            fn fits(&self, key: u8, new: &Held) -> (bool, bool) {
                let others = self.live.iter().filter(|(k, _)| **k != key);
                let (entries, bytes) = others.fold((1, self.cost(new)), |(n, b), (_, h)| (n + 1, b + self.cost(h)));
                let (more_entries, more_bytes) = (self.lingering.len(), self.lingering.values().sum::<usize>());
                let ok = |e: usize, b: usize| e <= self.limits.max_entries && b <= self.limits.byte_budget;
                (ok(entries + more_entries, bytes + more_bytes), !ok(entries, bytes))
            }

            fn next_cas(&mut self, got: u64) {
                if self.cas {
                    assert!(got > self.last_cas, "cas {got} after {}", self.last_cas);
                    self.last_cas = got;
                } else {
                    assert_eq!(got, 0);
                }
            }
        }

        fn seen(entry: Option<Entry<'_>>) -> Option<Held> {
            entry.map(|e| Held {
                value: e.value.to_vec(),
                flags: e.flags,
                expires: e.expires,
                field: false,
                cas: e.cas,
                text: e.text,
            })
        }

        fn same(got: Option<Held>, want: Option<&Held>) -> bool {
            match (got, want) {
                (None, None) => true,
                (Some(g), Some(w)) => Held { field: w.field, ..g } == *w,
                _ => false,
            }
        }

        /// A refusal the model allows: `Full` where the write may not fit
        /// (expired entries the store still holds), else what it predicts.
        fn check_write(model: &Model, key: u8, new: &Held, got: &Result<u64, StoreError>) -> bool {
            let (fits, refused) = model.fits(key, new);
            match got {
                Err(StoreError::Full) => !fits,
                Ok(_) => !refused,
                _ => false,
            }
        }

        fn parse(v: &[u8]) -> Option<u64> {
            (1..=20).contains(&v.len()).then_some(())?;
            std::str::from_utf8(v).ok()?.parse().ok().filter(|_| v.iter().all(u8::is_ascii_digit))
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
            #[test]
            fn store_matches_a_model_with_time(cas in any::<bool>(), entries in 2usize..8, ops in prop::collection::vec(op(), 0..250)) {
                let budget = 160;
                let slots = std::vec![Slot::EMPTY; 16].into_boxed_slice();
                // Room for the old and the new record of a concat at once.
                let arena = std::vec![0u8; 2 * budget].into_boxed_slice();
                let mut store: Store<Box<[Slot]>, Box<[u8]>> =
                    Store::with_storage(slots, arena, Limits::for_frame(70, entries, budget)).with_cas(cas);
                let mut model = Model { live: BTreeMap::new(), lingering: BTreeMap::new(), now: 1000, limits: store.limits(), cas, last_cas: 0 };
                let mut latest = false;
                for op in ops {
                    let now = if latest { 0 } else { model.now };
                    latest = false;
                    match op {
                        Op::Wait(t, l) => {
                            model.now += t;
                            model.tick();
                            latest = l;
                            // The store learns the time from the next operation.
                            if !l { continue; }
                            store.observe(model.now);
                        }
                        Op::Get(k) => {
                            let got = seen(store.entry(&[k], now));
                            let want = model.look(k);
                            prop_assert!(same(got.clone(), want.as_ref()), "get {}: {:?} against {:?}", k, got, want);
                        }
                        Op::Delete(k) => {
                            let want = model.look(k).is_some();
                            prop_assert_eq!(store.delete_at(&[k], now), want);
                            model.live.remove(&k);
                        }
                        Op::Put { key, value, flags, expiry, condition, text } => {
                            let old = model.look(key);
                            let condition = match condition {
                                0 | 1 => Condition::Always,
                                2 => Condition::Absent,
                                3 => Condition::Present,
                                4 => Condition::Cas(old.as_ref().map_or(1, |h| h.cas)),
                                _ => Condition::Cas(model.last_cas.wrapping_add(1)),
                            };
                            let opts = PutOptions { flags, expiry, condition, text };
                            let (got_old, got) = store.put_with(&[key], &value, opts, now, seen);
                            prop_assert!(same(got_old, old.as_ref()), "old entry of {}", key);
                            let limits = model.limits;
                            let expires = match expiry {
                                Expiry::Never => None,
                                Expiry::At(t) => Some(t),
                                Expiry::Keep => old.as_ref().and_then(|h| h.expires),
                            };
                            let want = if value.len() > limits.max_value_len {
                                Some(Err(StoreError::ValueTooLong))
                            } else {
                                match (condition, &old) {
                                    (Condition::Absent, Some(_)) | (Condition::Present, None) => Some(Err(StoreError::NotStored)),
                                    (Condition::Cas(_), None) => Some(Err(StoreError::NotFound)),
                                    (Condition::Cas(c), Some(h)) if !cas || c != h.cas => Some(Err(StoreError::Exists)),
                                    _ if expires.is_some_and(|t| t <= model.now) => Some(Ok(0)),
                                    _ => None,
                                }
                            };
                            match want {
                                Some(want) => {
                                    prop_assert_eq!(got, want, "put {}", key);
                                    if want == Ok(0) {
                                        model.live.remove(&key);
                                    }
                                }
                                None => {
                                    let new = Held { value, flags, expires, field: expires.is_some(), cas: 0, text };
                                    prop_assert!(check_write(&model, key, &new, &got), "put {}: {:?}", key, got);
                                    if let Ok(c) = got {
                                        model.next_cas(c);
                                        model.live.insert(key, Held { cas: c, ..new });
                                    }
                                }
                            }
                        }
                        Op::Touch(k, expiry) => {
                            let old = model.look(k);
                            let got = store.touch(&[k], expiry, now);
                            match old {
                                None => prop_assert_eq!(got, None),
                                Some(mut held) => {
                                    let want = match expiry {
                                        Expiry::Never => None,
                                        Expiry::At(t) => Some(t),
                                        Expiry::Keep => held.expires,
                                    };
                                    if want.is_some_and(|t| t <= model.now) {
                                        prop_assert_eq!(got, Some(held.expires));
                                        model.live.remove(&k);
                                    } else if want != held.expires && !held.field {
                                        // A record 8 bytes longer: may not fit.
                                        let longer = Held { field: true, expires: want, ..held.clone() };
                                        let (fits, refused) = model.fits(k, &longer);
                                        match got {
                                            Some(had) => {
                                                prop_assert!(!refused);
                                                prop_assert_eq!(had, held.expires);
                                                model.live.insert(k, longer);
                                            }
                                            None => prop_assert!(!fits, "touch {} refused", k),
                                        }
                                    } else {
                                        prop_assert_eq!(got, Some(held.expires));
                                        held.expires = want;
                                        model.live.insert(k, held);
                                    }
                                }
                            }
                        }
                        Op::Concat(k, bytes, front) => {
                            let old = model.look(k);
                            let got = store.concat(&[k], &bytes, front, now);
                            match old {
                                None => prop_assert_eq!(got, Err(StoreError::NotStored)),
                                Some(held) => {
                                    let mut value = held.value.clone();
                                    if front { value.splice(0..0, bytes.iter().copied()); } else { value.extend_from_slice(&bytes); }
                                    if value.len() > model.limits.max_value_len {
                                        prop_assert_eq!(got, Err(StoreError::ValueTooLong));
                                        continue;
                                    }
                                    let text = held.text && std::str::from_utf8(&bytes).is_ok();
                                    let new = Held { value, text, ..held };
                                    prop_assert!(check_write(&model, k, &new, &got), "concat {}: {:?}", k, got);
                                    if let Ok(c) = got {
                                        model.next_cas(c);
                                        model.live.insert(k, Held { cas: c, ..new });
                                    }
                                }
                            }
                        }
                        Op::Incr(k, delta, down) => {
                            let old = model.look(k);
                            let got = store.incr(&[k], delta, down, now);
                            match old {
                                None => prop_assert_eq!(got, Err(StoreError::NotFound)),
                                Some(held) => match parse(&held.value) {
                                    None => prop_assert_eq!(got, Err(StoreError::NotANumber)),
                                    Some(n) => {
                                        let n = if down { n.saturating_sub(delta) } else { n.wrapping_add(delta) };
                                        let new = Held { value: n.to_string().into_bytes(), text: true, ..held };
                                        prop_assert!(check_write(&model, k, &new, &got.map(|_| 0)), "incr {}: {:?}", k, got);
                                        if let Ok(got) = got {
                                            prop_assert_eq!(got, n);
                                            let c = store.entry(&[k], 0).map_or(0, |e| e.cas);
                                            model.next_cas(c);
                                            model.live.insert(k, Held { cas: c, ..new });
                                        }
                                    }
                                },
                            }
                        }
                    }
                    store.check();
                    let live_bytes: usize = model.live.values().map(|h| model.cost(h)).sum();
                    let lingering: usize = model.lingering.values().sum();
                    prop_assert!((model.live.len()..=model.live.len() + model.lingering.len()).contains(&store.len()));
                    prop_assert!((live_bytes..=live_bytes + lingering).contains(&store.bytes_used()),
                        "{} bytes used, {} live and {} lingering", store.bytes_used(), live_bytes, lingering);
                    prop_assert!(store.bytes_used() <= budget && store.len() <= entries);
                }
            }
        }
    }

    /// A visit interleaved with writes, a slice at a time: every entry there
    /// at the start and never written since is seen exactly once, with its
    /// value, whatever the deletes shift back over the cursor.
    #[test]
    fn a_visit_sees_every_untouched_entry_once_while_the_store_changes() {
        for seed in 1..40u64 {
            let slots = std::vec![Slot::EMPTY; 256].into_boxed_slice();
            let arena = std::vec![0u8; 1 << 14].into_boxed_slice();
            let mut s = Store::with_storage(slots, arena, Limits::for_frame(1024, 220, 1 << 14));
            let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut next = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            // Few slots, many keys: long probe runs that deletes shift.
            for k in 0..200u16 {
                s.put(&k.to_le_bytes(), &[k as u8; 3]).unwrap();
            }
            let mut touched = std::collections::BTreeSet::new();
            let mut seen = BTreeMap::<Vec<u8>, (usize, Vec<u8>)>::new();
            let mut cursor = VisitCursor::default();
            let max = 1 + (seed as usize % 7);
            loop {
                let done = s.visit(&mut cursor, max, |k, e| {
                    let seen = seen.entry(k.to_vec()).or_default();
                    seen.0 += 1;
                    seen.1 = e.value.to_vec();
                });
                if done {
                    break;
                }
                for _ in 0..3 {
                    let k = (next() % 260) as u16;
                    touched.insert(k);
                    match next() % 3 {
                        0 => {
                            s.delete(&k.to_le_bytes());
                        }
                        _ => {
                            let _ = s.put(&k.to_le_bytes(), &[9; 4][..3 + (k % 2) as usize]);
                        }
                    }
                }
            }
            s.check();
            for k in (0..200u16).filter(|k| !touched.contains(k)) {
                let want = (1, std::vec![k as u8; 3]);
                assert_eq!(seen.get(&k.to_le_bytes()[..]), Some(&want), "seed {seed}: key {k}");
            }
            assert!(seen.values().all(|(n, _)| *n == 1), "seed {seed}: twice");
        }
    }

    /// A call looks at a bounded slice: `max` entries plus the rest of a
    /// probe run, and at most 16 × max slots; a finished visit stays done.
    #[test]
    fn a_visit_call_takes_a_bounded_slice() {
        let slots = std::vec![Slot::EMPTY; 1 << 12].into_boxed_slice();
        let arena = std::vec![0u8; 1 << 16].into_boxed_slice();
        let mut s = Store::with_storage(slots, arena, Limits::for_frame(1024, 3000, 1 << 16));
        for k in 0..3000u16 {
            s.put(&k.to_le_bytes(), b"v").unwrap();
        }
        let (mut cursor, mut calls, mut total, mut worst) = (VisitCursor::default(), 0, 0, 0);
        while {
            let mut n = 0;
            let done = s.visit(&mut cursor, 8, |_, _| n += 1);
            calls += 1;
            total += n;
            worst = worst.max(n);
            !done
        } {}
        assert_eq!(total, 3000);
        assert!(worst < 8 + 200, "a call visited {worst}");
        assert!(calls > 3000 / 208, "{calls} calls");
        assert!(s.visit(&mut cursor, 8, |_, _| panic!("done")));
        let empty = ArrayStore::<16, 64, 1024>::new();
        let mut c = VisitCursor::default();
        let mut looks = 0;
        while !empty.visit(&mut c, 1, |_, _| ()) {
            looks += 1;
        }
        assert!(looks <= 1, "16 empty slots in {looks} calls");
    }

    /// Expired entries are skipped; a visit reads flags, expiry and the text mark.
    #[cfg(feature = "entry-fields")]
    #[test]
    fn a_visit_hands_out_whole_entries_and_skips_expired_ones() {
        let mut s = ArrayStore::<64, 4096, 1024>::new();
        let opts = PutOptions { flags: 5, expiry: Expiry::At(100), text: true, ..PutOptions::default() };
        s.put_with(b"a", b"1", opts, 10, |_| ()).1.unwrap();
        s.put_with(b"b", b"2", PutOptions { expiry: Expiry::At(20), ..opts }, 10, |_| ()).1.unwrap();
        s.put(b"c", b"3").unwrap();
        let mut got = Vec::new();
        let _ = s.entry(b"c", 50); // now = 50: b expired, not yet forgotten
        assert!(s.visit(&mut VisitCursor::default(), 100, |k, e| got.push((k.to_vec(), e.flags, e.expires, e.text))));
        got.sort();
        assert_eq!(got, [(b"a".to_vec(), 5, Some(100), true), (b"c".to_vec(), 0, None, false)]);
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Put(Vec<u8>, Vec<u8>),
            Get(Vec<u8>),
            Delete(Vec<u8>),
        }

        fn op() -> impl Strategy<Value = Op> {
            let key = prop::collection::vec(0u8..4, 0..4); // few keys: many updates
            let value = prop::collection::vec(any::<u8>(), 0..30);
            prop_oneof![
                3 => (key.clone(), value).prop_map(|(k, v)| Op::Put(k, v)),
                2 => key.clone().prop_map(Op::Get),
                1 => key.prop_map(Op::Delete),
            ]
        }

        /// The same limits over a BTreeMap.
        struct Model {
            map: BTreeMap<Vec<u8>, Vec<u8>>,
            limits: Limits,
        }

        impl Model {
            fn cost(k: &[u8], v: &[u8]) -> usize {
                RECORD_HEADER_LEN + k.len() + v.len()
            }

            fn put(&mut self, k: &[u8], v: &[u8]) -> Result<(), StoreError> {
                if k.len() > self.limits.max_key_len {
                    return Err(StoreError::KeyTooLong);
                }
                if v.len() > self.limits.max_value_len {
                    return Err(StoreError::ValueTooLong);
                }
                let used: usize = self.map.iter().map(|(k, v)| Self::cost(k, v)).sum();
                let freed = self.map.get(k).map_or(0, |old| Self::cost(k, old));
                if used - freed + Self::cost(k, v) > self.limits.byte_budget {
                    return Err(StoreError::Full);
                }
                if !self.map.contains_key(k) && self.map.len() >= self.limits.max_entries {
                    return Err(StoreError::Full);
                }
                self.map.insert(k.to_vec(), v.to_vec());
                Ok(())
            }
        }

        proptest! {
            #[test]
            fn store_matches_btreemap(ops in prop::collection::vec(op(), 0..200)) {
                let mut store = ArrayStore::<16, 160, 70>::new(); // keys <= 22, values <= 23
                let mut model = Model { map: BTreeMap::new(), limits: store.limits() };
                for op in ops {
                    match op {
                        Op::Put(k, v) => prop_assert_eq!(store.put(&k, &v), model.put(&k, &v)),
                        Op::Get(k) => prop_assert_eq!(store.get(&k), model.map.get(&k).map(|v| &v[..])),
                        Op::Delete(k) => prop_assert_eq!(store.delete(&k), model.map.remove(&k).is_some()),
                    }
                    prop_assert_eq!(store.len(), model.map.len());
                    store.check();
                }
                for (k, v) in &model.map {
                    prop_assert_eq!(store.get(k), Some(&v[..]));
                }
            }

            /// Under eviction: a get returns the last value put under its
            /// key or a miss, never another key's value or an old one; no
            /// put is refused; a deleted key stays gone.
            #[test]
            fn evicting_store_returns_the_last_value_or_a_miss(ops in prop::collection::vec(op(), 0..300)) {
                let mut store = ArrayStore::<16, 160, 70>::new().when_full(WhenFull::Evict);
                let mut last: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
                for op in ops {
                    match op {
                        Op::Put(k, v) if v.len() > store.limits().max_value_len => {
                            prop_assert_eq!(store.put(&k, &v), Err(StoreError::ValueTooLong));
                        }
                        Op::Put(k, v) => {
                            prop_assert_eq!(store.put(&k, &v), Ok(()));
                            prop_assert_eq!(store.get(&k), Some(&v[..]), "a put is seen at once");
                            last.insert(k, v);
                        }
                        Op::Get(k) => {
                            let got = KeyValueStore::get(&mut store, &k, |v| v.map(<[u8]>::to_vec));
                            if let Some(got) = got {
                                prop_assert_eq!(Some(&got), last.get(&k));
                            }
                        }
                        Op::Delete(k) => {
                            let was = store.delete(&k);
                            prop_assert!(!was || last.contains_key(&k));
                            last.remove(&k);
                            prop_assert_eq!(store.get(&k), None);
                        }
                    }
                    store.check();
                    prop_assert!(store.bytes_used() <= store.limits().byte_budget);
                    prop_assert!(store.len() <= store.limits().max_entries);
                }
            }
        }
    }
}
