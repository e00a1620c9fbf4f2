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
//! linear probing; keys are never removed, so no tombstones) and a byte
//! arena of records `[slot: u32][key_len: u32][value_len: u32][key][value]`.
//!
//! A lookup touches the arena only where it must. Each slot holds the key's
//! full 32-bit hash, and a probe reads a record only when that hash matches:
//! a miss reads no record (but for a 2^-32 chance per slot probed), and a hit
//! reads its one record once, header, key and value being contiguous. Slots
//! are 8 bytes, eight to a cache line, and the table stays under 7/8 full, so
//! a probe is nearly always one line of a table several times smaller than
//! the arena: the record is the one access expected to miss the cache.
//! An update of the same size is written in place; any other update appends
//! a new record and marks the old one dead. When the arena's end is reached,
//! live records slide down over dead ones (one pass, in arena order) — the
//! cost of a tight budget; give the arena slack beyond the budget to make
//! that rare.
//!
//! When full, a put is refused and hands the error back; nothing stored is
//! lost, and a refused update keeps the old value.
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
}

impl<T: KeyValueStore + ?Sized> KeyValueStore for &mut T {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        (**self).put(key, value)
    }

    fn get<R>(&mut self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        (**self).get(key, f)
    }
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

    pub const SLOT: Range<usize> = 0..4;
    pub const KEY_LEN: Range<usize> = 4..8;
    pub const VALUE_LEN: Range<usize> = 8..12;
    pub const HEADER_LEN: usize = VALUE_LEN.end;
    /// Marks a record whose entry moved on.
    pub const DEAD: u32 = u32::MAX;
}

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
    /// End of the used part of the arena (live and dead records).
    top: usize,
    /// Budget in use by live records (headers included).
    live: usize,
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
    pub const fn new() -> Self {
        assert!(SLOTS.is_power_of_two(), "SLOTS must be a power of two");
        assert!(BYTES < u32::MAX as usize, "arena offsets are u32");
        Store { slots: [Slot::EMPTY; SLOTS], arena: [0; BYTES], limits: FrameLimits, len: 0, top: 0, live: 0 }
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
    /// only the largest power-of-two prefix of it is used, under 7/8 full.
    /// `limits` are lowered to what the storage can hold.
    pub fn with_storage(mut slots: S, arena: A, limits: Limits) -> Self {
        slots.as_mut().fill(Slot::EMPTY);
        let table = prev_power_of_two(slots.as_ref().len());
        let arena_len = arena.as_ref().len().min(u32::MAX as usize - 1);
        let limits = Limits {
            max_entries: limits.max_entries.min(max_entries_for(table)),
            byte_budget: limits.byte_budget.min(arena_len),
            ..limits
        };
        Store { slots, arena, limits, len: 0, top: 0, live: 0 }
    }
}

impl<S, A, L> Store<S, A, L>
where
    S: AsRef<[Slot]> + AsMut<[Slot]>,
    A: AsRef<[u8]> + AsMut<[u8]>,
    L: LimitsSource,
{
    /// The limits in force.
    pub fn limits(&self) -> Limits {
        let table = prev_power_of_two(self.slots.as_ref().len());
        self.limits.limits(table, self.arena.as_ref().len())
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

    fn mask(&self) -> usize {
        prev_power_of_two(self.slots.as_ref().len()) - 1
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

    /// The value stored under `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        if key.len() > self.limits().max_key_len {
            return None;
        }
        let (_, record) = self.find(key, hash(key));
        Some(record?.value(self.arena.as_ref()))
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
        let (i, found) = self.find(key, h);
        let cost = record::HEADER_LEN + key.len() + value.len();
        let old = match found {
            Some(record) if record.value_len == value.len() => {
                let start = record.at + record::HEADER_LEN + key.len();
                self.arena.as_mut()[start..start + value.len()].copy_from_slice(value);
                return Ok(());
            }
            Some(record) => Some((record.at, record.cost())),
            None => None,
        };
        let freed = old.map_or(0, |(_, old_cost)| old_cost);
        if self.live - freed + cost > limits.byte_budget {
            return Err(StoreError::Full);
        }
        if old.is_none() && self.len >= limits.max_entries {
            return Err(StoreError::Full);
        }
        // From here the put cannot fail: the old record may be given up.
        if let Some((at, _)) = old {
            write_u32(self.arena.as_mut(), at, record::SLOT, record::DEAD as usize);
            self.live -= freed;
        }
        if self.top + cost > self.arena.as_ref().len() {
            self.compact();
        }
        let at = self.top;
        let arena = self.arena.as_mut();
        write_u32(arena, at, record::SLOT, i);
        write_u32(arena, at, record::KEY_LEN, key.len());
        write_u32(arena, at, record::VALUE_LEN, value.len());
        let start = at + record::HEADER_LEN;
        arena[start..start + key.len()].copy_from_slice(key);
        arena[start + key.len()..start + key.len() + value.len()].copy_from_slice(value);
        self.top += cost;
        self.live += cost;
        self.slots.as_mut()[i] = Slot::new(h, at);
        if old.is_none() {
            self.len += 1;
        }
        Ok(())
    }

    /// Slides live records down over dead ones, in arena order.
    fn compact(&mut self) {
        debug!("store compaction: {} live of {} used", self.live, self.top);
        let arena = self.arena.as_mut();
        let slots = self.slots.as_mut();
        let (mut read, mut write) = (0, 0);
        while read < self.top {
            let size =
                record::HEADER_LEN + read_u32(arena, read, record::KEY_LEN) + read_u32(arena, read, record::VALUE_LEN);
            let slot = read_u32(arena, read, record::SLOT);
            if slot != record::DEAD as usize {
                arena.copy_within(read..read + size, write);
                slots[slot] = Slot::new(slots[slot].hash, write);
                write += size;
            }
            read += size;
        }
        self.top = write;
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
        f(Store::get(self, key))
    }
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
}

#[cfg(test)]
mod test {
    use super::*;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    type Small = ArrayStore<16, 128, 1024>;

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
        assert_eq!((s.len, s.top, s.live), (0, 0, 0));
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
        }

        fn op() -> impl Strategy<Value = Op> {
            let key = prop::collection::vec(0u8..4, 0..4); // few keys: many updates
            let value = prop::collection::vec(any::<u8>(), 0..30);
            prop_oneof![(key.clone(), value).prop_map(|(k, v)| Op::Put(k, v)), key.prop_map(Op::Get),]
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
                    }
                    prop_assert_eq!(store.len(), model.map.len());
                }
                for (k, v) in &model.map {
                    prop_assert_eq!(store.get(k), Some(&v[..]));
                }
            }
        }
    }
}
