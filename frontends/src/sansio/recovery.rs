//! Recovery: from the bytes of journal files (a snapshot and logs) to the
//! entries a store starts with. A pure function: no file, no clock (the
//! caller passes `now` when it loads), so tests cut and flip those bytes
//! anywhere.
//!
//! The rules (the record format is [`kvio_core::journal`]):
//!
//! - Every file must start with a journal header of the kind its name
//!   says; a damaged header is damage at offset 0.
//! - A log ends where its records end. A last record the bytes do not hold
//!   in full, or that fails its checks with no valid record anywhere after
//!   it, is a torn tail (a crash mid-write): cut there, and reported
//!   ([`Recovered::torn`]) so the caller warns once and truncates.
//! - A record that fails its checks with a valid record after it is damage
//!   before the end: recovery refuses ([`DamageAt`], with the file and the
//!   offset) unless asked to repair, which keeps the file's good prefix and
//!   reports the cut ([`Recovered::repaired`]) for the caller to move the
//!   rest aside. Nothing after damage is ever used.
//! - A snapshot is written whole and renamed into place, so any cut of it
//!   is damage: it must end with [`Op::End`] counting its records.
//! - Order: each key keeps its record with the highest sequence number,
//!   puts and deletes alike, whatever file or place holds it; a touch
//!   applies to the put it follows (its sequence is higher than that
//!   put's, and no delete or put came after it). Entries are handed out
//!   in sequence order, so an evicting store that cannot hold them all
//!   keeps the most recently written.
//!
//! What it does not own: which files make up the state (the host's data
//! directory), the truncation and the moving aside.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use kvio_core::journal::{self, FileKind, JournalError, Op, Record, Status};
use kvio_core::{Expiry, KeyValueStore, Millis, PutOptions};

/// One file's bytes and the kind its name says it is.
#[derive(Debug, Clone, Copy)]
pub struct JournalFile<'a> {
    /// Log or snapshot.
    pub kind: FileKind,
    /// Its whole contents.
    pub bytes: &'a [u8],
}

/// What is wrong where recovery stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Damage {
    /// The file header is not a journal's (or of another version).
    FileHeader(JournalError),
    /// The header names another kind than the file's name does.
    WrongKind,
    /// A record fails its checks and a valid record follows it.
    Record(JournalError),
    /// A snapshot ends before its end record.
    SnapshotCut,
    /// A snapshot's end record counts another number of records.
    SnapshotCount,
    /// An end record in a log, or before a snapshot's last byte.
    MisplacedEnd,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::FileHeader(e) | Damage::Record(e) => f.write_str(e.as_str()),
            Damage::WrongKind => f.write_str("file header of the wrong kind"),
            Damage::SnapshotCut => f.write_str("snapshot cut short"),
            Damage::SnapshotCount => f.write_str("snapshot's record count does not match"),
            Damage::MisplacedEnd => f.write_str("end record out of place"),
        }
    }
}

/// Damage in file number `file` (its index in the input) at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DamageAt {
    /// Index of the file in the input.
    pub file: usize,
    /// Byte offset of the first bad record (0: the header).
    pub offset: usize,
    /// What is wrong there.
    pub damage: Damage,
}

impl std::fmt::Display for DamageAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at offset {}", self.damage, self.offset)
    }
}

impl std::error::Error for DamageAt {}

/// A file kept up to `offset` bytes: a torn tail, or (repairing) damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// Index of the file in the input.
    pub file: usize,
    /// Bytes kept.
    pub offset: usize,
    /// Bytes after the cut.
    pub dropped: usize,
    /// Why: None for a record the bytes hold only in part.
    pub error: Option<JournalError>,
}

/// An entry as recovery hands it to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Its sequence number (order of writes).
    pub seq: u64,
    /// The key.
    pub key: &'a [u8],
    /// The value.
    pub value: &'a [u8],
    /// Client flags.
    pub flags: u32,
    /// Absolute expiry; None: never.
    pub expires: Option<Millis>,
    /// Known UTF-8.
    pub text: bool,
}

/// What recovery found: the entries, in sequence order, and what it cut.
#[derive(Debug, Default)]
pub struct Recovered<'a> {
    /// Every key's latest state, if that is a value (deleted keys are not here).
    pub entries: Vec<Entry<'a>>,
    /// The highest sequence number of any record: new writes go above it.
    pub max_seq: u64,
    /// Records read (every file).
    pub records: usize,
    /// Logs' torn tails, cut (warn once; truncate the file there).
    pub torn: Vec<Cut>,
    /// Damage cut by repair (move the rest aside).
    pub repaired: Vec<Cut>,
}

/// What loading the entries into a store did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Entries stored.
    pub stored: usize,
    /// Entries whose expiry had passed (not stored).
    pub expired: usize,
    /// Entries the store refused (full, or over its limits: a smaller store
    /// than the one that wrote them).
    pub refused: usize,
}

impl Recovered<'_> {
    /// Puts every entry into `store` at `now`, oldest write first.
    pub fn load(&self, store: &mut impl KeyValueStore, now: Millis) -> Loaded {
        let mut loaded = Loaded::default();
        for e in &self.entries {
            if e.expires.is_some_and(|at| at <= now) {
                loaded.expired += 1;
                continue;
            }
            let opts = PutOptions {
                flags: e.flags,
                expiry: e.expires.map_or(Expiry::Never, Expiry::At),
                text: e.text,
                ..PutOptions::default()
            };
            match store.put_with(e.key, e.value, opts, now, |_| ()).1 {
                Ok(_) => loaded.stored += 1,
                // Full, or over a key or value limit: a smaller store than the one that wrote them.
                Err(_) => loaded.refused += 1,
            }
        }
        loaded
    }
}

/// FxHash's step over words and Murmur3's finalizer: keys come from the
/// server's own files, so a fast hash beats SipHash's resistance (a
/// million keys load in well under a second).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        // Murmur3's finalizer: the table indexes by the low bits, which a
        // multiply alone leaves depending on the low bits of the input only.
        let mut x = self.0;
        x = (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        x = (x ^ (x >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
}

/// Each key's latest put or delete (64 bytes an entry with its key).
type Latests<'a> = HashMap<&'a [u8], (u64, Op<'a>), BuildHasherDefault<KeyHasher>>;
/// Each key's latest touch (rare: kept apart so the map above stays small).
type Touches<'a> = HashMap<&'a [u8], (u64, Option<Millis>), BuildHasherDefault<KeyHasher>>;

/// Reads `files` (each the whole file) into the entries a store starts
/// with. Refuses damage before the end of a file with where it is, unless
/// `repair`, which keeps each damaged file's good prefix and reports it.
pub fn recover<'a>(files: &[JournalFile<'a>], repair: bool) -> Result<Recovered<'a>, DamageAt> {
    let mut out = Recovered::default();
    // The common case, one snapshot and logs smaller than it: the logs'
    // records go into the map, and a snapshot entry whose key no log
    // record has goes straight out (its key is there once), so the map
    // holds what the logs wrote, not every key.
    let snapshots = files.iter().filter(|f| f.kind == FileKind::Snapshot).count();
    let log_bytes: usize = files.iter().filter(|f| f.kind != FileKind::Snapshot).map(|f| f.bytes.len()).sum();
    // About one entry per two records of 48 bytes: less than the records,
    // as keys repeat; too many empty buckets cost more than a rehash.
    let mut latest = Latests::with_capacity_and_hasher(log_bytes / 96, Default::default());
    let mut touches = Touches::default();
    let mut direct = Vec::new();
    let order = files.iter().enumerate().filter(|(_, f)| f.kind != FileKind::Snapshot || snapshots > 1);
    let last = files.iter().enumerate().filter(|(_, f)| f.kind == FileKind::Snapshot && snapshots == 1);
    for (index, file) in order.chain(last) {
        let straight = file.kind == FileKind::Snapshot && snapshots == 1;
        let read = read_file(index, file, &mut |record: Record<'a>| {
            out.records += 1;
            out.max_seq = out.max_seq.max(record.seq);
            match record.op {
                Op::Put { value, flags, expires, text }
                    if straight && !latest.contains_key(record.key) && !touches.contains_key(record.key) =>
                {
                    direct.push(Entry { seq: record.seq, key: record.key, value, flags, expires, text });
                }
                _ => take(record, &mut latest, &mut touches),
            }
        });
        match read {
            Ok(torn) => out.torn.extend(torn),
            Err(damage) if repair => out.repaired.push(Cut {
                file: index,
                offset: damage.offset,
                dropped: file.bytes.len() - damage.offset,
                error: match damage.damage {
                    Damage::FileHeader(e) | Damage::Record(e) => Some(e),
                    _ => None,
                },
            }),
            Err(damage) => return Err(damage),
        }
    }
    out.entries = direct;
    out.entries.extend(latest.into_iter().filter_map(|(key, (seq, op))| match op {
        Op::Put { value, flags, expires, text } => {
            let expires = match touches.get(key) {
                Some(&(touched, at)) if touched > seq => at,
                _ => expires,
            };
            Some(Entry { seq, key, value, flags, expires, text })
        }
        _ => None,
    }));
    out.entries.sort_unstable_by_key(|e| e.seq);
    Ok(out)
}

/// One file's records into `sink`, up to the end or the damage (whose
/// records before it count only when repairing: else recovery fails);
/// the torn tail it cut, if any.
fn read_file<'a>(
    index: usize,
    file: &JournalFile<'a>,
    sink: &mut dyn FnMut(Record<'a>),
) -> Result<Option<Cut>, DamageAt> {
    let bytes = file.bytes;
    let damage = |offset, damage| DamageAt { file: index, offset, damage };
    let snapshot = file.kind == FileKind::Snapshot;
    match journal::decode_file_header(bytes) {
        Ok(Status::Complete(kind)) if kind == file.kind => {}
        Ok(Status::Complete(_)) => return Err(damage(0, Damage::WrongKind)),
        Ok(Status::Partial) if snapshot => return Err(damage(0, Damage::SnapshotCut)),
        Ok(Status::Partial) => {
            // Created, and the crash came before its header was whole.
            let torn = Cut { file: index, offset: 0, dropped: bytes.len(), error: None };
            return Ok((!bytes.is_empty()).then_some(torn));
        }
        Err(e) => return Err(damage(0, Damage::FileHeader(e))),
    }
    let mut at = journal::FILE_HEADER_LEN;
    let mut count = 0u64;
    loop {
        match journal::decode(&bytes[at..]) {
            Ok(Status::Complete((record, len))) => {
                if record.op == Op::End {
                    if !snapshot || at + len != bytes.len() {
                        return Err(damage(at, Damage::MisplacedEnd));
                    }
                    if record.seq != count {
                        return Err(damage(at, Damage::SnapshotCount));
                    }
                    return Ok(None);
                }
                sink(record);
                count += 1;
                at += len;
            }
            Ok(Status::Partial) if at == bytes.len() && !snapshot => return Ok(None),
            Ok(Status::Partial) if snapshot => return Err(damage(at, Damage::SnapshotCut)),
            Ok(Status::Partial) => {
                return Ok(Some(Cut { file: index, offset: at, dropped: bytes.len() - at, error: None }));
            }
            Err(e) if !snapshot && journal::next_valid_record(bytes, at).is_none() => {
                return Ok(Some(Cut { file: index, offset: at, dropped: bytes.len() - at, error: Some(e) }));
            }
            Err(e) => return Err(damage(at, Damage::Record(e))),
        }
    }
}

/// One record into the key's latest state.
fn take<'a>(record: Record<'a>, latest: &mut Latests<'a>, touches: &mut Touches<'a>) {
    match record.op {
        Op::Touch { expires } => {
            let t = touches.entry(record.key).or_insert((record.seq, expires));
            if record.seq > t.0 {
                *t = (record.seq, expires);
            }
        }
        op => {
            let l = latest.entry(record.key).or_insert((record.seq, op));
            if record.seq > l.0 {
                *l = (record.seq, op);
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use kvio_core::journal::{FILE_HEADER_LEN, file_header};
    use std::collections::BTreeMap;

    /// What a test writes: records, as the server would.
    #[derive(Debug, Clone)]
    enum W {
        Put(u64, Vec<u8>, Vec<u8>, Option<Millis>),
        Delete(u64, Vec<u8>),
        Touch(u64, Vec<u8>, Option<Millis>),
    }

    impl W {
        fn seq(&self) -> u64 {
            match self {
                W::Put(s, ..) | W::Delete(s, _) | W::Touch(s, ..) => *s,
            }
        }

        fn record(&self) -> Record<'_> {
            match self {
                W::Put(seq, k, v, expires) => Record {
                    seq: *seq,
                    key: k,
                    op: Op::Put { value: v, flags: (*seq % 3) as u32, expires: *expires, text: seq % 2 == 0 },
                },
                W::Delete(seq, k) => Record { seq: *seq, key: k, op: Op::Delete },
                W::Touch(seq, k, expires) => Record { seq: *seq, key: k, op: Op::Touch { expires: *expires } },
            }
        }
    }

    /// A file of `kind` with `ws`' records; returns it and where each record starts.
    fn file(kind: FileKind, ws: &[W]) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = file_header(kind).to_vec();
        let mut starts = Vec::new();
        for w in ws {
            starts.push(bytes.len());
            w.record().encode(&mut bytes).unwrap();
        }
        if kind == FileKind::Snapshot {
            starts.push(bytes.len());
            Record { seq: ws.len() as u64, key: b"", op: Op::End }.encode(&mut bytes).unwrap();
        }
        (bytes, starts)
    }

    /// The state after `ws` applied one by one in sequence order: the
    /// model recovery must agree with (it never looks at files).
    fn model(mut ws: Vec<W>) -> BTreeMap<Vec<u8>, (Vec<u8>, Option<Millis>)> {
        ws.sort_by_key(W::seq);
        let mut map = BTreeMap::new();
        for w in ws {
            match w {
                W::Put(_, k, v, e) => {
                    map.insert(k, (v, e));
                }
                W::Delete(_, k) => {
                    map.remove(&k);
                }
                W::Touch(_, k, e) => {
                    if let Some(entry) = map.get_mut(&k) {
                        entry.1 = e;
                    }
                }
            }
        }
        map
    }

    fn state(r: &Recovered<'_>) -> BTreeMap<Vec<u8>, (Vec<u8>, Option<Millis>)> {
        r.entries.iter().map(|e| (e.key.to_vec(), (e.value.to_vec(), e.expires))).collect()
    }

    /// A history of writes to few keys with strictly rising sequence
    /// numbers: a snapshot of the state at `split`, then two logs that
    /// share the rest, interleaved as two loops would write them.
    fn history(seed: u64, n: usize) -> (Vec<W>, Vec<W>, Vec<W>) {
        let mut rng = seed | 1;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut all = Vec::new();
        for seq in 1..=n as u64 {
            let key = format!("k{}", next() % 9).into_bytes();
            let r = next();
            all.push(match r % 6 {
                0 => W::Delete(seq, key),
                1 => W::Touch(seq, key, (r % 4 != 0).then_some(r >> 20)),
                _ => W::Put(seq, key, vec![r as u8; (r >> 8) as usize % 40], (r % 5 == 0).then_some(r >> 24)),
            });
        }
        let split = n / 3;
        // The snapshot: the state after the first third, each entry with
        // the sequence of its latest write (a fresh one would do as well).
        let mut snapshot = Vec::new();
        let base = model(all[..split].to_vec());
        for (k, (v, e)) in base {
            let seq = all[..split]
                .iter()
                .rev()
                .find(|w| matches!(w, W::Put(_, key, ..) | W::Touch(_, key, _) if *key == k))
                .map(W::seq)
                .unwrap();
            snapshot.push(W::Put(seq, k, v, e));
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for w in &all[split..] {
            if next() % 2 == 0 { a.push(w.clone()) } else { b.push(w.clone()) }
        }
        (snapshot, a, b)
    }

    fn files<'a>(snapshot: &'a [u8], a: &'a [u8], b: &'a [u8]) -> [JournalFile<'a>; 3] {
        [
            JournalFile { kind: FileKind::Snapshot, bytes: snapshot },
            JournalFile { kind: FileKind::Log, bytes: a },
            JournalFile { kind: FileKind::Log, bytes: b },
        ]
    }

    /// Whole files: the state the writes made, whatever the order of the
    /// records in the files.
    #[test]
    fn whole_files_recover_the_state_the_writes_made() {
        for seed in 1..30 {
            let (snap, a, b) = history(seed, 200);
            let (sf, af, bf) =
                (file(FileKind::Snapshot, &snap).0, file(FileKind::Log, &a).0, file(FileKind::Log, &b).0);
            let r = recover(&files(&sf, &af, &bf), false).unwrap();
            let mut every = snap.clone();
            every.extend(a.iter().cloned());
            every.extend(b.iter().cloned());
            assert_eq!(state(&r), model(every.clone()), "seed {seed}");
            assert_eq!(r.records, every.len());
            assert_eq!(r.max_seq, every.iter().map(W::seq).max().unwrap());
            assert!(r.torn.is_empty() && r.repaired.is_empty());
            assert!(r.entries.windows(2).all(|w| w[0].seq < w[1].seq), "in sequence order");
            // Reversed files, logs first: the same state.
            let reversed = [files(&sf, &af, &bf)[2], files(&sf, &af, &bf)[1], files(&sf, &af, &bf)[0]];
            assert_eq!(state(&recover(&reversed, false).unwrap()), model(every), "seed {seed} reversed");
        }
    }

    /// A log cut at every offset: exactly the records wholly before the
    /// cut are kept, the cut is reported as a torn tail (once, where the
    /// partial record starts), and nothing else changes.
    #[test]
    fn a_log_cut_anywhere_keeps_exactly_its_whole_records() {
        let (snap, a, b) = history(7, 60);
        let sf = file(FileKind::Snapshot, &snap).0;
        let (af, starts) = file(FileKind::Log, &a);
        let bf = file(FileKind::Log, &b).0;
        for cut in 0..=af.len() {
            let r = recover(&files(&sf, &af[..cut], &bf), false).unwrap();
            let ends = starts.iter().skip(1).copied().chain([af.len()]);
            let kept = ends.filter(|&end| end <= cut).count();
            let mut every = snap.clone();
            every.extend(a[..kept].iter().cloned());
            every.extend(b.iter().cloned());
            assert_eq!(state(&r), model(every), "cut at {cut}");
            let boundary = cut == af.len() || starts.contains(&cut) || cut == 0;
            if boundary {
                assert!(r.torn.is_empty(), "cut at {cut}: {:?}", r.torn);
            } else {
                let at = if cut < FILE_HEADER_LEN { 0 } else { starts[kept] };
                assert_eq!(r.torn, [Cut { file: 1, offset: at, dropped: cut - at, error: None }], "cut at {cut}");
            }
        }
    }

    /// A byte flipped anywhere in a log: in its last record, a torn tail
    /// (cut there, the rest kept); before it, a refusal naming the
    /// offset of the record it lies in; with repair, that record's
    /// prefix kept and the cut reported. Never a value nobody wrote.
    #[test]
    fn a_flipped_byte_in_a_log_is_a_torn_tail_at_the_end_and_refused_before_it() {
        let (snap, a, b) = history(11, 40);
        let sf = file(FileKind::Snapshot, &snap).0;
        let (af, starts) = file(FileKind::Log, &a);
        let bf = file(FileKind::Log, &b).0;
        for at in 0..af.len() {
            let mut bad = af.clone();
            bad[at] ^= 0x20;
            let hit = starts.iter().rposition(|&s| s <= at);
            let offset = hit.map_or(0, |i| starts[i]);
            let kept = hit.unwrap_or(0);
            let mut prefix = snap.clone();
            prefix.extend(a[..kept].iter().cloned());
            prefix.extend(b.iter().cloned());
            let last = hit == Some(a.len() - 1);
            match recover(&files(&sf, &bad, &bf), false) {
                Ok(r) => {
                    assert!(last, "byte {at}: damage before the end accepted");
                    assert_eq!(r.torn.len(), 1, "byte {at}");
                    assert_eq!(r.torn[0].offset, offset);
                    assert_eq!(state(&r), model(prefix.clone()), "byte {at}");
                }
                Err(e) => {
                    assert!(!last, "byte {at}: a torn tail refused: {e}");
                    assert_eq!((e.file, e.offset), (1, offset), "byte {at}: {e}");
                }
            }
            let r = recover(&files(&sf, &bad, &bf), true).unwrap();
            assert_eq!(state(&r), model(prefix), "byte {at} repaired");
            if !last {
                assert_eq!(r.repaired.iter().map(|c| (c.file, c.offset)).collect::<Vec<_>>(), [(1, offset)]);
            }
        }
    }

    /// A snapshot cut or flipped anywhere is refused with the offset (it
    /// was renamed into place whole); repair keeps its whole records
    /// before the damage.
    #[test]
    fn a_snapshot_cut_or_flipped_anywhere_is_refused_and_repair_keeps_its_prefix() {
        let (snap, a, b) = history(5, 60);
        let (sf, starts) = file(FileKind::Snapshot, &snap);
        let (af, bf) = (file(FileKind::Log, &a).0, file(FileKind::Log, &b).0);
        let expect = |kept: usize| {
            let mut every = snap[..kept.min(snap.len())].to_vec();
            every.extend(a.iter().cloned());
            every.extend(b.iter().cloned());
            model(every)
        };
        for cut in 0..sf.len() {
            let e = recover(&files(&sf[..cut], &af, &bf), false).unwrap_err();
            let kept = starts.iter().filter(|&&s| s <= cut).count().saturating_sub(1);
            let offset = if cut < FILE_HEADER_LEN { 0 } else { starts[kept] };
            assert_eq!((e.file, e.offset), (0, offset), "cut at {cut}: {e}");
            let r = recover(&files(&sf[..cut], &af, &bf), true).unwrap();
            assert_eq!(state(&r), expect(kept), "cut at {cut} repaired");
        }
        for at in 0..sf.len() {
            let mut bad = sf.clone();
            bad[at] ^= 0x01;
            let e = recover(&files(&bad, &af, &bf), false).unwrap_err();
            let hit = starts.iter().rposition(|&s| s <= at);
            assert_eq!((e.file, e.offset), (0, hit.map_or(0, |i| starts[i])), "byte {at}: {e}");
            let r = recover(&files(&bad, &af, &bf), true).unwrap();
            assert_eq!(state(&r), expect(hit.unwrap_or(0)), "byte {at} repaired");
        }
    }

    #[test]
    fn files_of_the_wrong_kind_or_end_records_out_of_place_are_damage() {
        let (snap, a, _) = history(3, 30);
        let (sf, af) = (file(FileKind::Snapshot, &snap).0, file(FileKind::Log, &a).0);
        let as_log = [JournalFile { kind: FileKind::Log, bytes: &sf }];
        assert_eq!(recover(&as_log, false).unwrap_err().damage, Damage::WrongKind);
        let mut log_with_end = af.clone();
        Record { seq: 0, key: b"", op: Op::End }.encode(&mut log_with_end).unwrap();
        let e = recover(&[JournalFile { kind: FileKind::Log, bytes: &log_with_end }], false).unwrap_err();
        assert_eq!((e.damage, e.offset), (Damage::MisplacedEnd, af.len()));
        let mut miscounted = file_header(FileKind::Snapshot).to_vec();
        Record { seq: 1, key: b"", op: Op::End }.encode(&mut miscounted).unwrap();
        let e = recover(&[JournalFile { kind: FileKind::Snapshot, bytes: &miscounted }], false).unwrap_err();
        assert_eq!(e.damage, Damage::SnapshotCount);
        let garbage = [JournalFile { kind: FileKind::Log, bytes: b"*3\r\n$3\r\nSET\r\n" }];
        assert_eq!(recover(&garbage, false).unwrap_err().damage, Damage::FileHeader(JournalError::BadMagic));
        assert!(recover(&[JournalFile { kind: FileKind::Log, bytes: b"" }], false).unwrap().torn.is_empty());
    }

    /// Loading: expired entries are not stored, a store too small refuses
    /// the rest and says how many; flags, expiry and the text mark arrive.
    #[test]
    fn load_puts_entries_in_a_store_and_counts_what_it_could_not() {
        use kvio_core::store::Slot;
        let ws = [
            W::Put(1, b"a".to_vec(), b"1".to_vec(), None),
            W::Put(2, b"b".to_vec(), b"2".to_vec(), Some(50)),
            W::Put(4, b"c".to_vec(), b"3".to_vec(), Some(500)),
            W::Put(5, b"d".to_vec(), b"4".to_vec(), None),
        ];
        let f = file(FileKind::Log, &ws).0;
        let r = recover(&[JournalFile { kind: FileKind::Log, bytes: &f }], false).unwrap();
        let limits = kvio_core::StoreLimits::for_frame(1024, 2, 1 << 12);
        let mut store = kvio_core::Store::with_storage(vec![Slot::EMPTY; 8], vec![0u8; 1 << 12], limits);
        assert_eq!(r.load(&mut store, 100), Loaded { stored: 2, expired: 1, refused: 1 });
        let got = store.entry(b"c", 100).map(|e| (e.value.to_vec(), e.flags, e.expires, e.text));
        assert_eq!(got, Some((b"3".to_vec(), 1, Some(500), true)));
        assert_eq!(store.get(b"d"), None, "the third entry did not fit");
    }
}
