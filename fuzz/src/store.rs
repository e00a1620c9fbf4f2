//! The `store_model` target: put/get/delete sequences against
//! [`ModelStore`], a `BTreeMap` with the same limits.
//!
//! Refusing when full: same results, same entry count, same bytes in use,
//! and every stored value readable, through in-place updates, moves at the
//! ring's tail and compactions.
//!
//! Evicting when full: no put refused but for an entry bigger than the
//! store (or a store of no entries); a put is read back at once; a get
//! returns the last value put under its key or a miss, never another
//! key's or an older one; a deleted key misses; the limits hold.

use kvio_core::StoreError;
use kvio_core::store::{Limits, Slot, Store, WhenFull};

use crate::input::Cursor;
use crate::model::ModelStore;

/// The target: `[slots: u8][arena: u16][budget: u16][entries: u8][max_frame_len: u16][ops...]`;
/// bit 7 of `entries` makes the store evict when full.
///
/// Each op starts with a byte `o`: bit 0 put (0) or get (1), a get with
/// bit 5 set being a delete instead; bits 1-2 the
/// key: `k` + one byte mod 8 (few keys, many updates), empty, `len: u8` +
/// bytes, or `len: u16` of one fill byte; bits 3-4 a put's value: empty,
/// `len: u8` + bytes, `len: u16` of one fill byte, or `len: u8` of one fill byte.
pub fn check(data: &[u8]) {
    let mut c = Cursor::new(data);
    let slots = usize::from(c.u8());
    let arena = usize::from(c.u16() % 8192);
    let budget = usize::from(c.u16());
    let entries = c.u8();
    let evict = entries & 0x80 != 0;
    let entries = usize::from(entries);
    let max_frame_len = u32::from(c.u16());
    let limits = Limits::for_frame(max_frame_len, entries, budget);
    let policy = if evict { WhenFull::Evict } else { WhenFull::Refuse };
    let mut store =
        Store::with_storage(vec![Slot::EMPTY; slots].into_boxed_slice(), vec![0u8; arena].into_boxed_slice(), limits)
            .when_full(policy);
    let got = store.limits();
    assert!(got.max_entries <= limits.max_entries && got.byte_budget <= limits.byte_budget.min(arena));
    assert_eq!((got.max_key_len, got.max_value_len), (limits.max_key_len, limits.max_value_len));
    let mut model = ModelStore::new(got);

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
            if evict {
                evicting_put(&mut store, &mut model, arena, &key, &value);
            } else {
                assert_eq!(store.put(&key, &value), model.put(&key, &value), "put {key:?}");
            }
        } else if o & 0x20 != 0 {
            let (deleted, held) = (store.delete(&key), model.delete(&key));
            // Evicting, a key the model holds may have been evicted: absent is right too.
            if evict {
                assert!(held || !deleted, "deleted {key:?}, which was never put or already deleted");
            } else {
                assert_eq!(deleted, held, "delete {key:?}");
            }
            assert_eq!(store.get(&key), None);
        } else if evict {
            // Under eviction the model holds the last value put: a hit must be it.
            let hit = kvio_core::KeyValueStore::get(&mut store, &key, |v| v.map(<[u8]>::to_vec));
            if let Some(value) = hit {
                assert_eq!(Some(&value[..]), model.get(&key), "get {key:?}: not the last value put");
            }
        } else {
            assert_eq!(store.get(&key), model.get(&key), "get {key:?}");
        }
        if !evict {
            assert_eq!(store.len(), model.map.len());
            assert_eq!(store.bytes_used(), model.used());
        }
        assert!(store.bytes_used() <= got.byte_budget && store.len() <= got.max_entries);
        ops += 1;
        if ops % 64 == 0 && !evict {
            assert_all_readable(&store, &model);
        }
    }
    if evict {
        assert_eq!(store.compactions(), 0, "an evicting store never compacts");
        // Whatever is still stored is its key's last value.
        for (k, v) in &model.map {
            if let Some(got) = store.get(k) {
                assert_eq!(got, &v[..], "{k:?}");
            }
        }
    } else {
        assert_all_readable(&store, &model);
    }
}

/// A put into an evicting store: refused only for the key/value limits, or
/// as `Full` when the entry is bigger than what the store fills up to
/// (its budget, at most 15/16 of the arena) or it holds no entries.
fn evicting_put(store: &mut Store<Box<[Slot]>, Box<[u8]>>, model: &mut ModelStore, arena: usize, key: &[u8], value: &[u8]) {
    let limits = model.limits;
    let cost = kvio_core::store::RECORD_HEADER_LEN + key.len() + value.len();
    let want = if key.len() > limits.max_key_len {
        Err(StoreError::KeyTooLong)
    } else if value.len() > limits.max_value_len {
        Err(StoreError::ValueTooLong)
    } else if cost > limits.byte_budget.min(arena - arena / 16) || limits.max_entries == 0 {
        Err(StoreError::Full)
    } else {
        Ok(())
    };
    assert_eq!(store.put(key, value), want, "put {key:?}");
    if want.is_ok() {
        assert_eq!(store.get(key), Some(value), "a put is read back at once");
        model.map.insert(key.to_vec(), value.to_vec());
    }
}

fn assert_all_readable(store: &Store<Box<[Slot]>, Box<[u8]>>, model: &ModelStore) {
    for (k, v) in &model.map {
        assert_eq!(store.get(k), Some(&v[..]), "{k:?}");
    }
}
