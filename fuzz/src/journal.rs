//! The journal: the record decoder on any bytes, and recovery on files
//! built from ops and then cut or damaged where the input says.
//!
//! Input: `[mode: u8]` then
//!
//! - mode even: raw bytes. `decode` never panics; a record it accepts
//!   re-encodes to bytes that decode to the same record, and every strict
//!   prefix of it is `Partial`. The same bytes as a log and as a snapshot
//!   (after a valid header) through recovery, refusing and repairing:
//!   never a panic, every entry recovered is a put record found in the
//!   bytes (nothing invented), repair keeps at least what a refusal-free
//!   read keeps.
//! - mode odd: `[n: u8]` ops `[kind: u8][key: u8][len: u8]` (put, delete,
//!   touch on 8 keys; sequence numbers rising) written to two logs as two
//!   loops would, then `[file: u8][what: u8][at: u16]`: cut that log at
//!   `at`, or flip a bit there. Recovery keeps exactly the records wholly
//!   before the damage in that log and all of the other, or refuses
//!   naming the offset of the record the damage is in, when a valid
//!   record follows it.

use std::collections::BTreeMap;

use kvio::sansio::recovery::{self, JournalFile};
use kvio_core::journal::{self, FileKind, Op, Record, Status, file_header};

use crate::input::Cursor;

pub fn check(data: &[u8]) {
    let mut input = Cursor::new(data);
    if input.u8().is_multiple_of(2) { raw(input.rest()) } else { built(&mut input) }
}

fn raw(bytes: &[u8]) {
    if let Ok(Status::Complete((record, len))) = journal::decode(bytes) {
        assert!(len <= bytes.len());
        let mut again = Vec::new();
        assert_eq!(record.encode(&mut again), Ok(again.len()));
        assert_eq!(journal::decode(&again), Ok(Status::Complete((record, again.len()))));
        for n in 0..len {
            assert_eq!(journal::decode(&bytes[..n]), Ok(Status::Partial), "prefix {n} of {len}");
        }
    }
    let _ = journal::decode_file_header(bytes);
    let _ = journal::next_valid_record(bytes, 0);
    for kind in [FileKind::Log, FileKind::Snapshot] {
        let mut file = file_header(kind).to_vec();
        file.extend_from_slice(bytes);
        for f in [&file[..], bytes] {
            let files = [JournalFile { kind, bytes: f }];
            let refused = recovery::recover(&files, false);
            let repaired = recovery::recover(&files, true).expect("repair never refuses");
            if let Ok(r) = &refused {
                assert_eq!(r.entries, repaired.entries, "nothing to repair, the same entries");
            }
            for e in &repaired.entries {
                let found = (0..f.len()).any(|at| {
                    matches!(journal::decode(&f[at..]), Ok(Status::Complete((Record { seq, key, op: Op::Put { value, .. } }, _)))
                        if seq == e.seq && key == e.key && value == e.value)
                });
                assert!(found, "an entry no record holds: {e:?}");
            }
            let mut keys: Vec<_> = repaired.entries.iter().map(|e| e.key).collect();
            keys.sort();
            keys.dedup();
            assert_eq!(keys.len(), repaired.entries.len(), "one entry a key");
        }
    }
}

type State = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

/// Records in sequence order applied one by one.
fn model(mut records: Vec<Record<'_>>) -> State {
    records.sort_by_key(|r| r.seq);
    let mut map = State::new();
    for r in records {
        match r.op {
            Op::Put { value, expires, .. } => {
                map.insert(r.key.to_vec(), (value.to_vec(), expires));
            }
            Op::Delete => {
                map.remove(r.key);
            }
            Op::Touch { expires } => {
                if let Some(e) = map.get_mut(r.key) {
                    e.1 = expires;
                }
            }
            Op::End => {}
        }
    }
    map
}

const KEYS: [&[u8]; 8] = [b"a", b"b", b"c", b"key", b"", b"k5", b"\xff", b"long-key-0123456789"];
const VALUES: [u8; 64] = [b'v'; 64];

fn built(input: &mut Cursor<'_>) {
    let n = usize::from(input.u8() % 64);
    let mut logs: [Vec<Record<'static>>; 2] = [Vec::new(), Vec::new()];
    for seq in 1..=n as u64 {
        let (kind, key, len) = (input.u8(), KEYS[usize::from(input.u8() % 8)], usize::from(input.u8() % 64));
        let op = match kind % 4 {
            0 => Op::Delete,
            1 => Op::Touch { expires: (len % 2 == 0).then_some(len as u64) },
            _ => Op::Put { value: &VALUES[..len], flags: u32::from(kind), expires: None, text: kind % 8 < 4 },
        };
        logs[usize::from(kind >> 7)].push(Record { seq, key, op });
    }
    let mut files: [Vec<u8>; 2] = [file_header(FileKind::Log).to_vec(), file_header(FileKind::Log).to_vec()];
    let mut starts: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
    for i in 0..2 {
        for r in &logs[i] {
            starts[i].push(files[i].len());
            r.encode(&mut files[i]).unwrap();
        }
    }
    let (which, what, at) = (usize::from(input.u8() % 2), input.u8(), usize::from(input.u16()));
    let len = files[which].len();
    let at = at % (len + 1);
    let cut = what % 2 == 0;
    if cut {
        files[which].truncate(at);
    } else if at < len {
        files[which][at] ^= 1 << (what % 8);
    }
    let damaged = at < len;
    // The records of the damaged log wholly before the damage.
    let hit = starts[which].iter().rposition(|&s| s <= at);
    let before = match (damaged, cut) {
        (false, _) => logs[which].len(),
        (true, true) => starts[which]
            .iter()
            .zip(starts[which].iter().skip(1).copied().chain([len]))
            .filter(|&(_, end)| end <= at)
            .count(),
        (true, false) => hit.unwrap_or(0),
    };
    let last = hit.is_some_and(|i| i + 1 == logs[which].len());
    let mut kept = logs[1 - which].clone();
    kept.extend_from_slice(&logs[which][..before]);
    let want = model(kept);
    let input =
        [JournalFile { kind: FileKind::Log, bytes: &files[0] }, JournalFile { kind: FileKind::Log, bytes: &files[1] }];
    let state = |r: &recovery::Recovered<'_>| -> State {
        r.entries.iter().map(|e| (e.key.to_vec(), (e.value.to_vec(), e.expires))).collect()
    };
    match recovery::recover(&input, false) {
        Ok(r) => {
            assert!(cut || !damaged || last, "damage before the end accepted: flip at {at}");
            assert_eq!(state(&r), want, "cut {cut} at {at}");
        }
        Err(e) => {
            assert!(damaged && !cut, "a cut refused: {e}");
            let offset = hit.map_or(0, |i| starts[which][i]);
            assert_eq!((e.file, e.offset), (which, offset));
        }
    }
    let r = recovery::recover(&input, true).expect("repair never refuses");
    assert_eq!(state(&r), want, "repaired: cut {cut} at {at}");
}
