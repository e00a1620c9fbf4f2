//! The `store_model` target: operation sequences over time against a
//! `BTreeMap` model with the same limits: put (with expiry, flags,
//! conditions and the text mark), get, delete, touch, concat, incr, and
//! time passing.
//!
//! Refusing when full: every answer is the model's, bar one freedom: an
//! entry that expired is held by the store, budget and all, until a lookup
//! of its key or the reclaiming hand reaches it, so a write may be refused
//! as `Full` where the model, forgetting expired entries at once, has room,
//! if counting them it would not; entries and bytes in use lie between the
//! model's live ones and those plus the expired ones. Every live value is
//! readable through updates, moves at the ring's tail and compactions.
//!
//! Evicting when full: no write refused but for an entry bigger than the
//! store (or a store of no entries); a put is read back at once; a hit is
//! the key's last value, flags and expiry, never an expired entry; a
//! deleted key misses; whatever the model holds the store holds or has
//! evicted; the limits hold; never a compaction.
//!
//! Both: every cas handed out is larger than the ones before (a store with
//! cas) or 0, and the store's work per put stays within its bound (the
//! core's `debug_assert`s are on in fuzz builds).

use std::collections::BTreeMap;

use kvio_core::store::{CAS_LEN, EXPIRY_LEN, FLAGS_LEN, Limits, RECORD_HEADER_LEN, Slot, Store, WhenFull};
use kvio_core::{Condition, Entry, Expiry, Millis, PutOptions, StoreError};

use crate::input::Cursor;

type Boxed = Store<Box<[Slot]>, Box<[u8]>>;

/// The target: `[slots: u8][arena: u16][budget: u16][entries: u8][max_frame_len: u16][ops...]`;
/// bit 7 of `entries` makes the store evict when full, bit 6 gives it cas.
///
/// Each op starts with a byte `o`. Bits 1-2 pick the key: `k` + one byte
/// mod 8 (few keys, many updates), empty, `len: u8` + bytes, or `len: u16`
/// of one fill byte. Bit 0 clear is a put: bits 3-4 its value (empty,
/// `len: u8` + bytes, `len: u16` of one fill byte, `len: u8` of one fill
/// byte); bit 5 set reads an options byte after the value (see
/// [`options`]); bit 6 passes `now` as 0 (the store's latest). Bit 0 set:
/// bits 5-7 choose get, delete, touch (an expiry byte follows), concat
/// (bit 3: at the front; `len: u8` + bytes follow), incr (a byte follows:
/// bit 0 down, bits 1-7 the delta, 127 being u64::MAX), time passes (`ms:
/// u8` follows), or get and delete passing `now` as 0.
pub fn check(data: &[u8]) {
    let mut c = Cursor::new(data);
    let slots = usize::from(c.u8());
    let arena = usize::from(c.u16() % 8192);
    let budget = usize::from(c.u16());
    let entries = c.u8();
    let evict = entries & 0x80 != 0;
    let cas = entries & 0x40 != 0;
    let entries = usize::from(entries);
    let max_frame_len = u32::from(c.u16());
    let limits = Limits::for_frame(max_frame_len, entries, budget);
    let policy = if evict { WhenFull::Evict } else { WhenFull::Refuse };
    let mut store =
        Store::with_storage(vec![Slot::EMPTY; slots].into_boxed_slice(), vec![0u8; arena].into_boxed_slice(), limits)
            .when_full(policy)
            .with_cas(cas);
    let got = store.limits();
    assert!(got.max_entries <= limits.max_entries && got.byte_budget <= limits.byte_budget.min(arena));
    assert_eq!((got.max_key_len, got.max_value_len), (limits.max_key_len, limits.max_value_len));
    let mut model = Model {
        live: BTreeMap::new(),
        lingering: BTreeMap::new(),
        clock: 1_000,
        now: 0,
        limits: got,
        cas,
        evict,
        arena,
        last_cas: 0,
    };

    let mut ops = 0;
    while !c.is_empty() {
        let o = c.u8();
        let key = match (o >> 1) & 3 {
            0 => vec![b'k', c.u8() % 8],
            1 => Vec::new(),
            2 => {
                let n = usize::from(c.u8());
                c.bytes(n).to_vec()
            }
            _ => vec![c.u8(); usize::from(c.u16() % 2048)],
        };
        if o & 1 == 0 {
            let value = match (o >> 3) & 3 {
                0 => Vec::new(),
                1 => {
                    let n = usize::from(c.u8());
                    c.bytes(n).to_vec()
                }
                2 => vec![c.u8(); usize::from(c.u16() % 8192)],
                _ => vec![c.u8(); usize::from(c.u8())],
            };
            let now = model.now_arg(o & 0x40 != 0);
            let opts = if o & 0x20 != 0 { options(&mut c, &model, &key) } else { PutOptions::default() };
            model.put(&mut store, &key, &value, opts, now);
        } else {
            let op = o >> 5;
            if op == 5 {
                model.wait(u64::from(c.u8()));
                continue;
            }
            let now = model.now_arg(matches!(op, 6 | 7));
            match op {
                0 => model.get(&mut store, &key, now),
                1 => model.delete(&mut store, &key, now),
                2 => {
                    let expiry = expiry(&mut c, model.now);
                    model.touch(&mut store, &key, expiry, now);
                }
                3 => {
                    let n = usize::from(c.u8());
                    let bytes = c.bytes(n).to_vec();
                    model.concat(&mut store, &key, &bytes, o & 8 != 0, now);
                }
                4 => {
                    let b = c.u8();
                    let delta = if b >> 1 == 127 { u64::MAX } else { u64::from(b >> 1) };
                    model.incr(&mut store, &key, delta, b & 1 != 0, now);
                }
                6 => model.get(&mut store, &key, now),
                _ => model.delete(&mut store, &key, now),
            }
        }
        model.check_counts(&store);
        ops += 1;
        if ops % 64 == 0 && !evict {
            model.check_readable(&mut store);
        }
    }
    if evict {
        assert_eq!(store.compactions(), 0, "an evicting store never compacts");
    } else {
        model.check_readable(&mut store);
    }
}

/// `[o: u8]`: bits 0-1 the expiry (never, keep, one byte of ms ahead,
/// one byte of ms behind: see [`expiry`]), bits 2-3 the condition (always,
/// absent, present, cas: a byte follows, 0 for the entry's own cas, else a
/// cas of its own), bit 4 nonzero flags (a byte follows), bit 5 the text mark.
fn options(c: &mut Cursor<'_>, model: &Model, key: &[u8]) -> PutOptions {
    let o = c.u8();
    let expiry = expiry_of(o & 3, c, model.now);
    let condition = match (o >> 2) & 3 {
        0 => Condition::Always,
        1 => Condition::Absent,
        2 => Condition::Present,
        _ => match c.u8() {
            0 => Condition::Cas(model.live.get(key).map_or(0, |h| h.cas)),
            n => Condition::Cas(u64::from(n)),
        },
    };
    let flags = if o & 0x10 != 0 { u32::from(c.u8()) + 1 } else { 0 };
    PutOptions { flags, expiry, condition, text: o & 0x20 != 0 }
}

/// `[o: u8]`: bits 0-1 as in [`options`], and for an instant its distance
/// (`o >> 2` ms ahead, or behind).
fn expiry(c: &mut Cursor<'_>, now: Millis) -> Expiry {
    let o = c.u8();
    let distance = u64::from(o >> 2);
    match o & 3 {
        0 => Expiry::Never,
        1 => Expiry::Keep,
        2 => Expiry::At(now + distance),
        _ => Expiry::At(now.saturating_sub(distance)),
    }
}

fn expiry_of(bits: u8, c: &mut Cursor<'_>, now: Millis) -> Expiry {
    match bits {
        0 => Expiry::Never,
        1 => Expiry::Keep,
        2 => Expiry::At(now + u64::from(c.u8())),
        _ => Expiry::At(now.saturating_sub(u64::from(c.u8()))),
    }
}

/// An entry as the model holds it.
#[derive(Debug, Clone, PartialEq)]
struct Held {
    value: Vec<u8>,
    flags: u32,
    expires: Option<Millis>,
    /// The record has an expiry field (clearing one in place keeps it).
    field: bool,
    cas: u64,
    text: bool,
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

/// The store's rule over a map: live entries, and expired ones the store
/// may not have reclaimed yet (they hold budget until then).
struct Model {
    live: BTreeMap<Vec<u8>, Held>,
    lingering: BTreeMap<Vec<u8>, usize>,
    /// The time as it passes.
    clock: Millis,
    /// The latest time the store was given: what it judges expiry by.
    now: Millis,
    limits: Limits,
    cas: bool,
    evict: bool,
    arena: usize,
    last_cas: u64,
}

/// How a write may end: stored, or refused for room (only if it may not fit).
enum Room {
    /// It fits whatever the store still holds of expired entries.
    Fits,
    /// It may or may not fit.
    Maybe,
    /// It cannot fit.
    Refused,
}

impl Model {
    fn cost(&self, key: &[u8], held: &Held) -> usize {
        let fields = EXPIRY_LEN * usize::from(held.field) + FLAGS_LEN * usize::from(held.flags != 0);
        RECORD_HEADER_LEN + fields + CAS_LEN * usize::from(self.cas) + key.len() + held.value.len()
    }

    fn wait(&mut self, ms: u64) {
        self.clock += ms;
    }

    /// The `now` an operation passes: the clock, or 0 (`latest`: the store
    /// keeps its own latest); the model's now follows as the store's does.
    fn now_arg(&mut self, latest: bool) -> Millis {
        let now = if latest { 0 } else { self.clock };
        if now > self.now {
            self.now = now;
            self.expire();
        }
        now
    }

    /// Entries expired by now linger.
    fn expire(&mut self) {
        let now = self.now;
        let gone: Vec<Vec<u8>> =
            self.live.iter().filter(|(_, h)| h.expires.is_some_and(|t| t <= now)).map(|(k, _)| k.clone()).collect();
        for key in gone {
            let held = self.live.remove(&key).expect("listed");
            let cost = self.cost(&key, &held);
            self.lingering.insert(key, cost);
        }
    }

    /// A lookup of `key` forgets its expired entry for sure.
    fn look(&mut self, key: &[u8]) -> Option<Held> {
        self.lingering.remove(key);
        self.live.get(key).cloned()
    }

    /// Whether `key` holding `new` fits: the refusing rule, with and
    /// without the expired entries the store may hold; `both`: the old and
    /// the new record must be in the arena at once (concat, a growing touch).
    fn room(&self, key: &[u8], new: &Held, both: bool) -> Room {
        if self.evict {
            let budget = self.limits.byte_budget.min(self.arena - self.arena / 16);
            let fits = self.cost(key, new) <= budget && self.limits.max_entries > 0;
            return if fits { Room::Fits } else { Room::Refused };
        }
        let old = self.live.get(key).map_or(0, |h| self.cost(key, h));
        let others = self.live.iter().filter(|(k, _)| k.as_slice() != key);
        let (entries, bytes) = others.fold((1, self.cost(key, new)), |(e, b), (k, h)| (e + 1, b + self.cost(k, h)));
        let (more_entries, more_bytes) = (self.lingering.len(), self.lingering.values().sum::<usize>());
        let ok = |e: usize, b: usize| {
            e <= self.limits.max_entries && b <= self.limits.byte_budget && (!both || b + old <= self.arena)
        };
        match (ok(entries + more_entries, bytes + more_bytes), ok(entries, bytes)) {
            (true, _) => Room::Fits,
            (false, true) => Room::Maybe,
            (false, false) => Room::Refused,
        }
    }

    /// Checks a write's result against [`Model::room`] and keeps what was stored.
    fn wrote(&mut self, what: &str, key: &[u8], new: Held, both: bool, got: Result<u64, StoreError>) {
        let room = self.room(key, &new, both);
        match got {
            Ok(cas) => {
                assert!(!matches!(room, Room::Refused), "{what} {key:?} stored what cannot fit");
                self.next_cas(cas);
                self.live.insert(key.to_vec(), Held { cas, ..new });
            }
            Err(StoreError::Full) => {
                assert!(!matches!(room, Room::Fits), "{what} {key:?} refused as full, but it fits");
                // A refusing store changes nothing; an evicting one refused the whole entry.
            }
            Err(e) => panic!("{what} {key:?}: {e:?}, not stored nor full"),
        }
    }

    fn next_cas(&mut self, cas: u64) {
        if self.cas {
            assert!(cas > self.last_cas, "cas {cas} after {}", self.last_cas);
            self.last_cas = cas;
        } else {
            assert_eq!(cas, 0, "a store without cas");
        }
    }

    /// The model's entry for `key`, and whether the store must have it
    /// (evicting: it may have dropped it).
    fn holds(&mut self, key: &[u8]) -> (Option<Held>, bool) {
        let held = self.look(key);
        let sure = !self.evict;
        (held, sure)
    }

    /// What the store handed out for `key` against the model's entry:
    /// equal, or (evicting) a miss, which the model then learns.
    fn agree(&mut self, what: &str, key: &[u8], got: Option<Held>, want: Option<Held>, sure: bool) -> Option<Held> {
        match (got, want) {
            (Some(g), Some(w)) => {
                assert_eq!(Held { field: w.field, ..g }, w, "{what} {key:?}");
                Some(w)
            }
            (None, Some(_)) if !sure => {
                self.live.remove(key);
                None
            }
            (None, None) => None,
            (got, want) => panic!("{what} {key:?}: the store has {got:?}, the model {want:?}"),
        }
    }

    fn too_long(&self, key: &[u8]) -> bool {
        key.len() > self.limits.max_key_len
    }

    fn get(&mut self, store: &mut Boxed, key: &[u8], now: Millis) {
        let got = seen(store.entry(key, now));
        let (want, sure) = self.holds(key);
        self.agree("get", key, got, want, sure);
    }

    fn delete(&mut self, store: &mut Boxed, key: &[u8], now: Millis) {
        let deleted = store.delete_at(key, now);
        let (want, sure) = self.holds(key);
        assert!(deleted == want.is_some() || (!sure && !deleted), "delete {key:?}: {deleted}, model {want:?}");
        self.live.remove(key);
        assert_eq!(store.get(key), None, "a deleted key misses");
    }

    fn put(&mut self, store: &mut Boxed, key: &[u8], value: &[u8], opts: PutOptions, now: Millis) {
        let (got_old, got) = store.put_with(key, value, opts, now, seen);
        if self.too_long(key) {
            assert_eq!((got_old, got), (None, Err(StoreError::KeyTooLong)));
            return;
        }
        let (want, sure) = self.holds(key);
        let old = self.agree("put's old entry of", key, got_old, want, sure);
        let expires = match opts.expiry {
            Expiry::Never => None,
            Expiry::At(t) => Some(t),
            Expiry::Keep => old.as_ref().and_then(|h| h.expires),
        };
        let decided = if value.len() > self.limits.max_value_len {
            Some(Err(StoreError::ValueTooLong))
        } else {
            match (opts.condition, &old) {
                (Condition::Absent, Some(_)) | (Condition::Present, None) => Some(Err(StoreError::NotStored)),
                (Condition::Cas(_), None) => Some(Err(StoreError::NotFound)),
                (Condition::Cas(c), Some(h)) if !self.cas || c != h.cas => Some(Err(StoreError::Exists)),
                _ if expires.is_some_and(|t| t <= self.now) => Some(Ok(0)),
                _ => None,
            }
        };
        match decided {
            Some(want) => {
                assert_eq!(got, want, "put {key:?}");
                if want == Ok(0) {
                    self.live.remove(key);
                }
            }
            None => {
                let new = Held {
                    value: value.to_vec(),
                    flags: opts.flags,
                    expires,
                    field: expires.is_some(),
                    cas: 0,
                    text: opts.text,
                };
                self.wrote("put", key, new, false, got);
                if got.is_ok() {
                    assert_eq!(store.get(key), Some(value), "a put is read back at once");
                }
            }
        }
    }

    fn touch(&mut self, store: &mut Boxed, key: &[u8], expiry: Expiry, now: Millis) {
        let got = store.touch(key, expiry, now);
        let (want, sure) = self.holds(key);
        let Some(mut held) = want else {
            assert_eq!(got, None, "touch {key:?}: absent");
            return;
        };
        let want = match expiry {
            Expiry::Never => None,
            Expiry::At(t) => Some(t),
            Expiry::Keep => held.expires,
        };
        if got.is_none() && !sure {
            // Evicted, or (too long for the store) left as it was: the
            // model keeps the last value, which a hit must still be.
        } else if want.is_some_and(|t| t <= self.now) {
            assert_eq!(got, Some(held.expires), "touch {key:?} into the past");
            self.live.remove(key);
        } else if want != held.expires && !held.field {
            let longer = Held { field: true, expires: want, ..held.clone() };
            match got {
                Some(had) => {
                    assert_eq!(had, held.expires, "touch {key:?}");
                    assert!(
                        !matches!(self.room(key, &longer, true), Room::Refused),
                        "touch {key:?} grew past the limits"
                    );
                    self.live.insert(key.to_vec(), longer);
                }
                None => assert!(!matches!(self.room(key, &longer, true), Room::Fits), "touch {key:?} refused"),
            }
        } else {
            assert_eq!(got, Some(held.expires), "touch {key:?}");
            held.expires = want;
            self.live.insert(key.to_vec(), held);
        }
    }

    fn concat(&mut self, store: &mut Boxed, key: &[u8], bytes: &[u8], front: bool, now: Millis) {
        let got = store.concat(key, bytes, front, now);
        if self.too_long(key) {
            assert_eq!(got, Err(StoreError::KeyTooLong));
            return;
        }
        let (want, sure) = self.holds(key);
        let Some(held) = want else {
            assert_eq!(got, Err(StoreError::NotStored), "concat {key:?}: absent");
            return;
        };
        if got == Err(StoreError::NotStored) && !sure {
            // Evicted before, or by making room for the longer record.
            self.live.remove(key);
            return;
        }
        let mut value = held.value.clone();
        if front {
            value.splice(0..0, bytes.iter().copied());
        } else {
            value.extend_from_slice(bytes);
        }
        if value.len() > self.limits.max_value_len {
            assert_eq!(got, Err(StoreError::ValueTooLong), "concat {key:?}");
            return;
        }
        let text = held.text && std::str::from_utf8(bytes).is_ok();
        let new = Held { value, text, ..held };
        // Nothing appended is written in place.
        self.wrote("concat", key, new, !bytes.is_empty(), got);
    }

    fn incr(&mut self, store: &mut Boxed, key: &[u8], delta: u64, down: bool, now: Millis) {
        let got = store.incr(key, delta, down, now);
        if self.too_long(key) {
            assert_eq!(got, Err(StoreError::KeyTooLong));
            return;
        }
        let (want, sure) = self.holds(key);
        let Some(held) = want else {
            assert_eq!(got, Err(StoreError::NotFound), "incr {key:?}: absent");
            return;
        };
        if got == Err(StoreError::NotFound) && !sure {
            self.live.remove(key);
            return;
        }
        let parsed = (1..=20).contains(&held.value.len()) && held.value.iter().all(u8::is_ascii_digit);
        let Some(n) = parsed.then(|| std::str::from_utf8(&held.value).ok()?.parse::<u64>().ok()).flatten() else {
            assert_eq!(got, Err(StoreError::NotANumber), "incr {key:?} of {:?}", held.value);
            return;
        };
        let n = if down { n.saturating_sub(delta) } else { n.wrapping_add(delta) };
        let digits = n.to_string().into_bytes();
        if digits.len() > self.limits.max_value_len {
            assert_eq!(got, Err(StoreError::ValueTooLong), "incr {key:?}");
            return;
        }
        if let Ok(got) = got {
            assert_eq!(got, n, "incr {key:?}");
        }
        let cas = store.entry(key, 0).map_or(0, |e| e.cas);
        let new = Held { value: digits, text: true, ..held };
        self.wrote("incr", key, new, false, got.map(|_| cas));
    }

    /// Entries and bytes in use: the model's live ones, and (refusing) at
    /// most the expired ones on top; the limits hold.
    fn check_counts(&self, store: &Boxed) {
        assert!(store.bytes_used() <= self.limits.byte_budget && store.len() <= self.limits.max_entries);
        if self.evict {
            return;
        }
        let live: usize = self.live.iter().map(|(k, h)| self.cost(k, h)).sum();
        let lingering: usize = self.lingering.values().sum();
        let (entries, bytes) = (store.len(), store.bytes_used());
        assert!((self.live.len()..=self.live.len() + self.lingering.len()).contains(&entries), "{entries} entries");
        assert!((live..=live + lingering).contains(&bytes), "{bytes} bytes, {live} live and {lingering} expired");
    }

    /// Every live entry of a refusing store reads back whole, unmarked.
    fn check_readable(&self, store: &mut Boxed) {
        for (k, held) in &self.live {
            let got = seen(store.entry(k, 0));
            assert_eq!(got.map(|g| Held { field: held.field, ..g }).as_ref(), Some(held), "{k:?}");
        }
    }
}
