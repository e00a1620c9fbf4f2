//! A key/value store whose capacity is fixed when it is built.
//!
//! Capacity is two numbers: how many entries, and a byte budget for what the
//! entries hold (each entry costs its key, its value and a 12-byte record
//! header). Memory is the slot table plus the arena that holds those bytes;
//! nothing is reserved per entry for the largest key or value, and nothing
//! is ever allocated: the storage is handed in (arrays in a `static` on a
//! microcontroller, boxed slices on a host).
//!
//! Layout: an open-addressing table of [`Slot`]s (hash + arena offset,
//! linear probing) and a byte arena of records
//! `[meta: u32][key_len: u32][value_len: u32][key][value]`, `meta` being the
//! record's slot index plus a "recently used" bit, or all ones for a dead
//! record. A delete empties its slot by backward shift (the entries after
//! it in the probe run move back), so there are no tombstones and probes
//! stay as short as the load allows.
//!
//! A lookup touches the arena only where it must. Each slot holds the key's
//! full 32-bit hash, and a probe reads a record only when that hash matches:
//! a miss reads no record (but for a 2^-32 chance per slot probed), and a hit
//! reads its one record once, header, key and value being contiguous. Slots
//! are 8 bytes, eight to a cache line, and the table stays under 7/8 full, so
//! a probe is nearly always one line of a table several times smaller than
//! the arena: the record is the one access expected to miss the cache.
//!
//! # The arena is a ring, reclaimed at its tail
//!
//! An update of the same size is written in place. Any other put appends a
//! record at the ring's head; the record it replaces, like a deleted one, is
//! marked dead. Space comes back at the tail, the oldest record, one record
//! at a time, only as a put needs it: a dead record is passed over, a live
//! one is moved to the head (or, under [`WhenFull::Evict`], evicted).
//! A move may overlap the bytes the record leaves, so it never fails for
//! want of room (log-structured cleaning, as in Segcache or a
//! log-structured file system, with the segment shrunk to one record).
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
//! records rather than evict them. CLOCK rather than sampled LRU because
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
//! [`Shared`] wraps any store in a `critical_section::Mutex<RefCell<_>>`
//! reachable from a `static`: threads or interrupt handlers reach it only
//! through a closure, so a borrow can never be held across IO.

use core::cell::RefCell;

/// Why a put was refused. Nothing was stored, and nothing existing lost.
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
}

impl StoreError {
    /// A short reason.
    pub const fn as_str(&self) -> &'static str {
        match self {
            StoreError::KeyTooLong => "key too long",
            StoreError::ValueTooLong => "value too long",
            StoreError::Full => "store full",
        }
    }
}

impl core::fmt::Display for StoreError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for StoreError {}

/// What a key/value store does for the request handler.
pub trait KeyValueStore {
    /// Stores `value` under `key`, replacing any old value.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;

    /// Calls `f` with the value stored under `key` (the borrow lasts only
    /// for the call, so a shared store's lock cannot outlive it).
    fn get<R>(&mut self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> R;

    /// Removes `key`; true when it was there.
    fn delete(&mut self, key: &[u8]) -> bool;
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

/// Where a put looks for a victim near its key's slot, and how many used
/// entries it spared there.
struct Nearby {
    at: usize,
    spared: usize,
}

/// Most records one put of `cost` budget bytes visits for reclaiming
/// (dead ones passed over, live ones moved or evicted, neighbours looked
/// at for a victim): a fixed slice plus three per 12 bytes of its own
/// size, since a dead record it passes gives back at least 12 bytes.
/// Only a refusing store's one-pass compaction reads more.
pub const fn visit_budget(cost: usize) -> usize {
    MAX_VISITS + 3 * cost.div_ceil(RECORD_HEADER_LEN)
}

/// The most bytes any single response adds around a key and a value
/// (tags, length varints, kind and status), so a stored entry always fits
/// in a `Get` response frame. The encoding is `kvio-proto`'s business: a
/// test there computes this number from its encoder, so the two cannot drift.
pub const RESPONSE_OVERHEAD: usize = 20;
/// Key limit used by [`Limits::for_frame`] when the frame leaves room for it.
pub const DEFAULT_MAX_KEY_LEN: usize = 1024;
/// Bytes of budget each entry costs beyond its key and value.
pub const RECORD_HEADER_LEN: usize = 12;

/// The store's limits. Build them with [`Limits::for_frame`] so that the
/// store and the frame parser agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Limits {
    /// Most entries held at once.
    pub max_entries: usize,
    /// Bytes all entries may hold together (key + value + 12 each).
    pub byte_budget: usize,
    /// Longest key accepted.
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

/// Record header fields in the arena.
mod record {
    use core::ops::Range;

    /// The slot index, the used bit, or [`DEAD`].
    pub const META: Range<usize> = 0..4;
    pub const KEY_LEN: Range<usize> = 4..8;
    pub const VALUE_LEN: Range<usize> = 8..12;
    pub const HEADER_LEN: usize = VALUE_LEN.end;
    /// Marks a record whose entry was deleted or moved on.
    pub const DEAD: u32 = u32::MAX;
    /// Set when the entry was read or written since the CLOCK hand last passed.
    pub const USED: u32 = 1 << 31;
    /// The slot index bits.
    pub const SLOT: u32 = USED - 1;
}

/// Largest slot table: a slot index must fit `meta` beside the used bit
/// (and never be all ones, the dead mark).
const MAX_TABLE: usize = 1 << 30;

#[inline]
fn read_u32(arena: &[u8], at: usize, field: core::ops::Range<usize>) -> usize {
    let mut b = [0u8; 4];
    b.copy_from_slice(&arena[at + field.start..at + field.end]);
    u32::from_le_bytes(b) as usize
}

#[inline]
fn write_u32(arena: &mut [u8], at: usize, field: core::ops::Range<usize>, value: usize) {
    arena[at + field.start..at + field.end].copy_from_slice(&(value as u32).to_le_bytes());
}

#[inline]
fn read_meta(arena: &[u8], at: usize) -> u32 {
    read_u32(arena, at, record::META) as u32
}

#[inline]
fn write_meta(arena: &mut [u8], at: usize, meta: u32) {
    write_u32(arena, at, record::META, meta as usize);
}

/// A word-at-a-time multiply-rotate hash (FxHash's step, with a final
/// multiply so the low bits, which pick the slot, depend on every input bit).
/// 8 bytes per step instead of FNV-1a's one.
#[inline]
fn hash(key: &[u8]) -> u32 {
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

/// `a == b`, with keys of up to 16 bytes compared in two overlapping word
/// loads each instead of a call to `memcmp`.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
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
    value_len: usize,
}

impl Record {
    #[inline]
    fn read(arena: &[u8], at: usize) -> Record {
        Record { at, key_len: read_u32(arena, at, record::KEY_LEN), value_len: read_u32(arena, at, record::VALUE_LEN) }
    }

    #[inline]
    fn key<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        let start = self.at + record::HEADER_LEN;
        &arena[start..start + self.key_len]
    }

    #[inline]
    fn value<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        let start = self.at + record::HEADER_LEN + self.key_len;
        &arena[start..start + self.value_len]
    }

    /// Budget the record takes (header included).
    const fn cost(&self) -> usize {
        record::HEADER_LEN + self.key_len + self.value_len
    }
}

/// A fixed-capacity key/value store over caller-provided storage. See the
/// [module docs](self).
#[derive(Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Store<S, A, L = Limits> {
    slots: S,
    arena: A,
    limits: L,
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
    /// Entries evicted since the store was built.
    evictions: u64,
    /// Bytes moved by reclaiming since the store was built.
    moved: u64,
    /// One-pass compactions since the store was built.
    compactions: u64,
    /// Records the reclaiming hand visited since the store was built.
    visited: u64,
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
    /// It refuses puts when full.
    pub const fn new() -> Self {
        assert!(SLOTS.is_power_of_two(), "SLOTS must be a power of two");
        assert!(SLOTS <= MAX_TABLE, "slot indices are 30 bits");
        assert!(BYTES < u32::MAX as usize, "arena offsets are u32");
        Store {
            slots: [Slot::EMPTY; SLOTS],
            arena: [0; BYTES],
            limits: FrameLimits,
            len: 0,
            live: 0,
            head: 0,
            tail: 0,
            end: 0,
            wrapped: false,
            when_full: WhenFull::Refuse,
            evictions: 0,
            moved: 0,
            compactions: 0,
            visited: 0,
        }
    }
}

impl<const SLOTS: usize, const BYTES: usize, const MAX_FRAME_LEN: u32> Default
    for ArrayStore<SLOTS, BYTES, MAX_FRAME_LEN>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<S, A> Store<S, A, Limits>
where
    S: AsRef<[Slot]> + AsMut<[Slot]>,
    A: AsRef<[u8]> + AsMut<[u8]>,
{
    /// A store over the given storage. `slots` is filled with empty slots;
    /// only the largest power-of-two prefix of it is used (at most 2^30),
    /// under 7/8 full. `limits` are lowered to what the storage can hold.
    /// It refuses puts when full (see [`Store::when_full`]).
    pub fn with_storage(mut slots: S, arena: A, limits: Limits) -> Self {
        slots.as_mut().fill(Slot::EMPTY);
        let table = table_len(slots.as_ref().len());
        let arena_len = arena.as_ref().len().min(u32::MAX as usize - 1);
        let limits = Limits {
            max_entries: limits.max_entries.min(max_entries_for(table)),
            byte_budget: limits.byte_budget.min(arena_len),
            ..limits
        };
        Store {
            slots,
            arena,
            limits,
            len: 0,
            live: 0,
            head: 0,
            tail: 0,
            end: 0,
            wrapped: false,
            when_full: WhenFull::Refuse,
            evictions: 0,
            moved: 0,
            compactions: 0,
            visited: 0,
        }
    }
}

impl<S, A, L> Store<S, A, L>
where
    S: AsRef<[Slot]> + AsMut<[Slot]>,
    A: AsRef<[u8]> + AsMut<[u8]>,
    L: LimitsSource,
{
    /// The same store, doing `policy` when full.
    pub fn when_full(mut self, policy: WhenFull) -> Self {
        self.when_full = policy;
        self
    }

    /// What the store does when full.
    pub fn policy(&self) -> WhenFull {
        self.when_full
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits.limits(table_len(self.slots.as_ref().len()), self.arena_len())
    }

    /// Entries stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Budget bytes in use (keys, values and 12 bytes a record).
    pub fn bytes_used(&self) -> usize {
        self.live
    }

    /// Entries evicted to make room since the store was built (always 0
    /// under [`WhenFull::Refuse`]).
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Bytes moved by reclaiming (records given a second chance, or slid
    /// down by a compaction) since the store was built.
    pub fn bytes_moved(&self) -> u64 {
        self.moved
    }

    /// Records visited by reclaiming since the store was built: each
    /// record the hand passes (dead), moves or evicts counts one, and so
    /// does each record a compaction reads.
    pub fn records_visited(&self) -> u64 {
        self.visited
    }

    /// One-pass compactions of the whole arena since the store was built:
    /// never under [`WhenFull::Evict`]; under [`WhenFull::Refuse`] only when
    /// a tail packed with live records leaves no room (see the module docs).
    pub fn compactions(&self) -> u64 {
        self.compactions
    }

    fn arena_len(&self) -> usize {
        self.arena.as_ref().len().min(u32::MAX as usize - 1)
    }

    fn mask(&self) -> usize {
        table_len(self.slots.as_ref().len()).wrapping_sub(1)
    }

    /// The slot holding `key` and its record, or the empty slot where it
    /// would go. Slots whose 32-bit hash differs are passed over without
    /// reading the arena, so a miss reads no record (but for a 2^-32 chance
    /// per slot probed) and a hit reads one record, once.
    #[inline]
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

    /// The value stored under `key`, without marking it used (a peek: the
    /// CLOCK hand does not see it). Requests go through [`Store::fetch`].
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        if key.len() > self.limits().max_key_len {
            return None;
        }
        let (_, record) = self.find(key, hash(key));
        Some(record?.value(self.arena.as_ref()))
    }

    /// The value stored under `key`, marked used so an evicting store keeps
    /// it over entries nobody asked for.
    pub fn fetch(&mut self, key: &[u8]) -> Option<&[u8]> {
        if key.len() > self.limits().max_key_len {
            return None;
        }
        let record = self.find(key, hash(key)).1?;
        self.mark_used(record.at);
        Some(record.value(self.arena.as_ref()))
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
        if key.len() > self.limits().max_key_len {
            return false;
        }
        match self.find(key, hash(key)) {
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

    /// Stores `value` under `key`. See [`StoreError`] for refusals.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let limits = self.limits();
        if key.len() > limits.max_key_len {
            return Err(StoreError::KeyTooLong);
        }
        if value.len() > limits.max_value_len {
            return Err(StoreError::ValueTooLong);
        }
        let h = hash(key);
        let (mut i, found) = self.find(key, h);
        let cost = record::HEADER_LEN + key.len() + value.len();
        if let Some(record) = found
            && record.value_len == value.len()
        {
            let start = record.at + record::HEADER_LEN + key.len();
            self.arena.as_mut()[start..start + value.len()].copy_from_slice(value);
            self.mark_used(record.at);
            return Ok(());
        }
        let refused = match self.when_full {
            WhenFull::Refuse => {
                let freed = found.map_or(0, |old| old.cost());
                self.live - freed + cost > limits.byte_budget || (found.is_none() && self.len >= limits.max_entries)
            }
            WhenFull::Evict => cost > self.evict_budget(limits) || limits.max_entries == 0,
        };
        if refused {
            return Err(StoreError::Full);
        }
        // From here the put cannot fail: the old entry may be given up.
        let evictions = self.evictions;
        if let Some(old) = found {
            self.forget(i, old);
        }
        let at = self.make_room(cost, limits, h);
        if found.is_some() || self.evictions != evictions {
            // Backward shifts may have moved the key's place in the table.
            i = self.find(key, h).0;
        }
        let arena = self.arena.as_mut();
        // An update is a use; a new entry waits for one (CLOCK's insertion rule).
        let used = if found.is_some() && self.when_full == WhenFull::Evict { record::USED } else { 0 };
        write_meta(arena, at, used | i as u32);
        write_u32(arena, at, record::KEY_LEN, key.len());
        write_u32(arena, at, record::VALUE_LEN, value.len());
        let start = at + record::HEADER_LEN;
        arena[start..start + key.len()].copy_from_slice(key);
        arena[start + key.len()..start + key.len() + value.len()].copy_from_slice(value);
        self.live += cost;
        self.len += 1;
        self.slots.as_mut()[i] = Slot::new(h, at);
        Ok(())
    }

    /// The budget an evicting store fills up to: its byte budget, less
    /// 1/16 of the arena kept free so a second chance has room to move into
    /// even when the budget is the whole arena.
    fn evict_budget(&self, limits: Limits) -> usize {
        let arena = self.arena_len();
        limits.byte_budget.min(arena - arena / 16)
    }

    /// Reserves `cost` bytes at the head for a new record of hash `h`,
    /// reclaiming at the tail first as far as needed. The caller checked
    /// the put may proceed, so this cannot fail.
    ///
    /// The hand at the tail passes dead records, moves live ones to the
    /// head (at most [`MAX_MOVES`] records and [`move_budget`] bytes) and,
    /// under [`WhenFull::Evict`], evicts the unused ones while the put is
    /// over budget. It visits at most `hand_visits(cost)` records: every
    /// visit but a move frees at least 12 contiguous bytes, so that is
    /// room enough for the record (module docs, "Bounded work"). Over
    /// budget with the hand spent, or with a used record at the hand and
    /// no move left, the victim is taken near the key's slot instead
    /// ([`Store::evict_nearby`]).
    fn make_room(&mut self, cost: usize, limits: Limits, h: u32) -> usize {
        let evict = self.when_full == WhenFull::Evict;
        let budget = if evict { self.evict_budget(limits) } else { limits.byte_budget };
        let hand_visits = hand_visits(cost);
        let (mut visits, mut moves, mut moved) = (0, 0, 0);
        let mut nearby = Nearby { at: h as usize & self.mask(), spared: 0 };
        loop {
            let over = evict && (self.live + cost > budget || self.len >= limits.max_entries);
            if !over && let Some(at) = self.reserve(cost) {
                return at;
            }
            let Some(tail) = self.tail_record() else {
                // Nothing is stored, so the whole arena is free: reserve succeeds.
                debug_assert!(!over);
                continue;
            };
            let meta = read_meta(self.arena.as_ref(), tail.at);
            let used = meta != record::DEAD && meta & record::USED != 0;
            let may_move = moves < MAX_MOVES && moved + tail.cost() <= move_budget(cost);
            if over && (visits >= hand_visits || (used && !may_move)) {
                // Budget is what is missing: an unused entry near the key goes.
                self.evict_nearby(&mut nearby);
                continue;
            }
            debug_assert!(visits < hand_visits || !evict, "room is made within the hand's visits");
            visits += 1;
            self.visited += 1;
            if meta == record::DEAD {
                self.tail += tail.cost();
            } else if (!over || used) && may_move {
                // A second chance, or (within budget) keeping the entry.
                moves += 1;
                moved += tail.cost();
                self.move_tail(tail, meta);
            } else if evict {
                // Over budget and unused; or room is missing and the slice is spent.
                self.evict_tail(tail, meta);
            } else {
                // A refusing store whose tail is packed with live records.
                self.compact();
            }
        }
    }

    /// Over budget, with the hand spent or holding a used record it may not
    /// move: evicts one entry found by walking the slot table from the
    /// key's home slot, in place (its record turns dead where it lies,
    /// reclaimed when the tail reaches it). Second chance holds here too: a
    /// used entry's mark is cleared and it is passed, up to [`NEARBY`] of
    /// them a put; then the next entry goes whatever its mark. A victim
    /// near the key rather than the oldest: the fallback samples, as
    /// Redis's eviction does, where the hand would walk too far.
    fn evict_nearby(&mut self, nearby: &mut Nearby) {
        let mask = self.mask();
        loop {
            let i = nearby.at;
            nearby.at = (i + 1) & mask;
            let slot = self.slots.as_ref()[i];
            if slot.is_empty() {
                continue;
            }
            self.visited += 1;
            let at = slot.offset();
            let meta = read_meta(self.arena.as_ref(), at);
            if meta & record::USED != 0 && nearby.spared < NEARBY {
                nearby.spared += 1;
                write_meta(self.arena.as_mut(), at, meta & !record::USED);
                continue;
            }
            let record = Record::read(self.arena.as_ref(), at);
            self.forget(i, record);
            self.evictions += 1;
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
    /// cleared. Always possible: the bytes it leaves count as free, so the
    /// copy may overlap them (when wrapped the head is at or below the
    /// tail; else it goes after the head or, not fitting there, to the
    /// arena's start, at or below the tail). A record that lands where it
    /// lay is not copied.
    fn move_tail(&mut self, tail: Record, meta: u32) {
        let size = tail.cost();
        let to = if self.wrapped || self.head + size <= self.arena_len() {
            self.head
        } else {
            // Wrap, as reserve does: the records above end where the head is now.
            (self.end, self.head, self.wrapped) = (self.head, 0, true);
            0
        };
        self.head = to + size;
        let i = (meta & record::SLOT) as usize;
        let arena = self.arena.as_mut();
        if to != tail.at {
            arena.copy_within(tail.at..tail.at + size, to);
            self.moved += size as u64;
        }
        write_meta(arena, to, i as u32);
        let slots = self.slots.as_mut();
        slots[i] = Slot::new(slots[i].hash, to);
        self.tail += size;
    }

    /// Evicts the live record at the tail.
    fn evict_tail(&mut self, tail: Record, meta: u32) {
        self.forget((meta & record::SLOT) as usize, tail);
        self.evictions += 1;
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
        self.compactions += 1;
        self.moved += top as u64;
        (self.tail, self.head, self.end, self.wrapped) = (0, top, 0, false);
    }

    /// Moves the live records of `from.0..from.1` down to `to` on (never
    /// past the ones still to move); where they end.
    fn slide(&mut self, (mut read, end): (usize, usize), mut to: usize) -> usize {
        let arena = self.arena.as_mut();
        let slots = self.slots.as_mut();
        while read < end {
            self.visited += 1;
            let record = Record::read(arena, read);
            let meta = read_meta(arena, read);
            if meta != record::DEAD {
                arena.copy_within(read..read + record.cost(), to);
                let i = (meta & record::SLOT) as usize;
                slots[i] = Slot::new(slots[i].hash, to);
                to += record.cost();
            }
            read += record.cost();
        }
        to
    }
}

impl<S, A, L> KeyValueStore for Store<S, A, L>
where
    S: AsRef<[Slot]> + AsMut<[Slot]>,
    A: AsRef<[u8]> + AsMut<[u8]>,
    L: LimitsSource,
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
}

#[cfg(test)]
mod test {
    use super::*;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    type Small = ArrayStore<16, 128, 1024>;

    impl<S, A, L> Store<S, A, L>
    where
        S: AsRef<[Slot]> + AsMut<[Slot]>,
        A: AsRef<[u8]> + AsMut<[u8]>,
        L: LimitsSource,
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
    /// within budget. A move may overlap the space the record leaves, so
    /// it always can: nothing is evicted while the budget has room and
    /// dead bytes are within the put's slice.
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
        assert_eq!(s.evictions(), 0, "evicted with the budget not reached");
        assert_eq!((s.get(b"a"), s.get(b"b")), (Some(&[b'a'; 47][..]), Some(&[b'b'; 47][..])));
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
