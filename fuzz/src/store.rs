//! The `store_model` target: put/get sequences against [`ModelStore`], a
//! `BTreeMap` with the same limits: same results, same entry count, same
//! bytes in use, and every stored value readable, through in-place updates,
//! moves and compactions.

use kvio_core::store::{Limits, Slot, Store};

use crate::input::Cursor;
use crate::model::ModelStore;

/// The target: `[slots: u8][arena: u16][budget: u16][entries: u8][max_frame_len: u16][ops...]`.
///
/// Each op starts with a byte `o`: bit 0 put (0) or get (1); bits 1-2 the
/// key: `k` + one byte mod 8 (few keys, many updates), empty, `len: u8` +
/// bytes, or `len: u16` of one fill byte; bits 3-4 a put's value: empty,
/// `len: u8` + bytes, `len: u16` of one fill byte, or `len: u8` of one fill byte.
pub fn check(data: &[u8]) {
    let mut c = Cursor::new(data);
    let slots = usize::from(c.u8());
    let arena = usize::from(c.u16() % 8192);
    let budget = usize::from(c.u16());
    let entries = usize::from(c.u8());
    let max_frame_len = u32::from(c.u16());
    let limits = Limits::for_frame(max_frame_len, entries, budget);
    let mut store =
        Store::with_storage(vec![Slot::EMPTY; slots].into_boxed_slice(), vec![0u8; arena].into_boxed_slice(), limits);
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
            assert_eq!(store.put(&key, &value), model.put(&key, &value), "put {key:?}");
        } else {
            assert_eq!(store.get(&key), model.get(&key), "get {key:?}");
        }
        assert_eq!(store.len(), model.map.len());
        assert_eq!(store.bytes_used(), model.used());
        assert!(store.bytes_used() <= got.byte_budget && store.len() <= got.max_entries);
        ops += 1;
        if ops % 64 == 0 {
            assert_all_readable(&store, &model);
        }
    }
    assert_all_readable(&store, &model);
}

fn assert_all_readable(store: &Store<Box<[Slot]>, Box<[u8]>>, model: &ModelStore) {
    for (k, v) in &model.map {
        assert_eq!(store.get(k), Some(&v[..]), "{k:?}");
    }
}
