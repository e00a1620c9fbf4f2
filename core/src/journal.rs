//! The journal's bytes: the record format kvio writes to disk so that a
//! restart or a crash loses nothing acknowledged, and its decoder.
//!
//! This module owns the format only: encode a record into a caller's
//! buffer, decode one from bytes (borrowing its key and value), check a
//! file's header, and tell a torn tail from damage before the end. Files,
//! syncing, recovery of a whole store and the rewrite live in the host
//! (`kvio`'s `host::data_dir`, `sansio::recovery`, `sansio::log`). No
//! allocation, no IO: the same format could be written to flash.
//!
//! # Files
//!
//! A journal file (a log, or a snapshot) starts with a 16-byte header:
//!
//! ```text
//! [magic: 8 = "kvio\0jnl"][version: u16 = 1][kind: u8][0: u8][crc: u32]
//! ```
//!
//! `kind` is [`FileKind::Log`] (records appended as the store applies
//! them) or [`FileKind::Snapshot`] (one record per live entry, then an
//! [`Op::End`] that counts them, so a snapshot cut at a record boundary is
//! not mistaken for a whole one); `crc` covers the 12 bytes before it.
//!
//! # Records
//!
//! ```text
//! [len: u32][body_crc: u32][head_crc: u32]         12 bytes
//! body: [op: u8][bits: u8][seq: u64][key_len: u16]
//!       [expires: u64]   if bits & EXPIRES  (absolute ms, the store's clock)
//!       [flags: u32]     if bits & FLAGS
//!       [key][value]     (value: Put only, the rest of the body)
//! ```
//!
//! All integers little-endian. `body_crc` is CRC-32C (Castagnoli, the
//! polynomial of iSCSI and ext4's metadata; the `crc` crate) of the body,
//! `head_crc` CRC-32C of the 8 bytes before it. The header has its own
//! check so that a damaged `len` is seen as damage where it lies, not as a
//! record that runs past the end of the file (which is what a torn write
//! looks like): a header that checks out is believed, so a record it
//! announces that the file does not hold in full is a torn tail
//! ([`Status::Partial`]), and anything else that fails is damage
//! ([`JournalError`]).
//!
//! # Order: sequence numbers
//!
//! Several loops write the same keys into files of their own, so the order
//! of records in files is not the order the store applied them. Every
//! record carries `seq`, taken while the key's shard lock was held: per
//! key, sequence order is store order. Recovery keeps each key's record
//! with the highest `seq` (deletes included), whatever file or place holds
//! it. A snapshot's record takes a fresh `seq` when the snapshot reads the
//! entry, so a write of that key before the read has a lower one and a
//! write after it a higher one.
//!
//! # Torn tail or damage
//!
//! A crash mid-write leaves a prefix of the last records: [`decode`] says
//! [`Status::Partial`] for a record the bytes do not hold in full. A
//! record that fails its checks ([`JournalError`]) is a torn tail only if
//! no whole, valid record starts anywhere after it ([`next_valid_record`]
//! looks): else it is damage before the end, which recovery refuses.

use crate::buffer::{Output, OutputFull};
use crate::store::{Expiry, Millis, PutOptions};

/// The file header's magic bytes.
pub const MAGIC: [u8; 8] = *b"kvio\0jnl";
/// The format version this code writes and reads.
pub const VERSION: u16 = 1;
/// Bytes of a file header.
pub const FILE_HEADER_LEN: usize = file::CRC.end;
/// Bytes of a record's header (before its body).
pub const RECORD_HEADER_LEN: usize = head::HEAD_CRC.end;
/// Bytes of a body before its optional fields and key.
pub const BODY_HEADER_LEN: usize = body::KEY_LEN.end;
/// The longest body accepted: a header that checks out but announces more
/// was not written by this code.
pub const MAX_BODY_LEN: usize = 1 << 30;
/// The most a record adds around its key and value.
pub const MAX_OVERHEAD: usize = RECORD_HEADER_LEN + BODY_HEADER_LEN + 8 + 4;

mod file {
    use core::ops::Range;

    pub const MAGIC: Range<usize> = 0..8;
    pub const VERSION: Range<usize> = 8..10;
    pub const KIND: usize = 10;
    pub const ZERO: usize = 11;
    pub const CRC: Range<usize> = 12..16;
}

mod head {
    use core::ops::Range;

    pub const LEN: Range<usize> = 0..4;
    pub const BODY_CRC: Range<usize> = 4..8;
    pub const HEAD_CRC: Range<usize> = 8..12;
}

mod body {
    use core::ops::Range;

    pub const OP: usize = 0;
    pub const BITS: usize = 1;
    pub const SEQ: Range<usize> = 2..10;
    pub const KEY_LEN: Range<usize> = 10..12;

    /// An expiry (u64) follows.
    pub const EXPIRES: u8 = 1 << 0;
    /// Flags (u32) follow (the expiry, if any).
    pub const FLAGS: u8 = 1 << 1;
    /// The value is known to be UTF-8 (no field).
    pub const TEXT: u8 = 1 << 2;
    pub const ALL: u8 = EXPIRES | FLAGS | TEXT;

    pub const PUT: u8 = 1;
    pub const DELETE: u8 = 2;
    pub const TOUCH: u8 = 3;
    pub const END: u8 = 4;
}

/// CRC-32C with 16 tables (slice-by-16, 16 KiB of read-only data, linked
/// only where the journal is used): a recovery reads every byte once.
static CRC32C: crc::Crc<u32, crc::Table<16>> = crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);

/// CRC-32C of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    CRC32C.checksum(bytes)
}

/// Why bytes are not a journal file or record. Each is damage where it
/// was found (a torn tail is [`Status::Partial`], not an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum JournalError {
    /// The file does not start with [`MAGIC`]: not a kvio journal.
    BadMagic,
    /// A journal of another format version.
    UnsupportedVersion,
    /// The file header's checksum does not match.
    FileHeaderChecksum,
    /// A record header's checksum does not match (its length is not to be believed).
    HeaderChecksum,
    /// A record's body checksum does not match.
    BodyChecksum,
    /// A record header announces a body over [`MAX_BODY_LEN`].
    TooLong,
    /// A body that checks out but does not parse: unknown operation or
    /// bits, or a key longer than the body (written by other code).
    Malformed,
    /// The caller's buffer has no room for the record (encoding).
    BufferFull,
    /// The key is longer than 65,535 bytes (encoding).
    KeyTooLong,
}

impl JournalError {
    /// A short reason.
    pub const fn as_str(&self) -> &'static str {
        match self {
            JournalError::BadMagic => "not a kvio journal file (bad magic)",
            JournalError::UnsupportedVersion => "unsupported journal version",
            JournalError::FileHeaderChecksum => "file header checksum mismatch",
            JournalError::HeaderChecksum => "record header checksum mismatch",
            JournalError::BodyChecksum => "record checksum mismatch",
            JournalError::TooLong => "record length out of range",
            JournalError::Malformed => "malformed record",
            JournalError::BufferFull => "buffer full",
            JournalError::KeyTooLong => "key too long for a record",
        }
    }
}

impl core::fmt::Display for JournalError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for JournalError {}

impl From<OutputFull> for JournalError {
    fn from(_: OutputFull) -> Self {
        JournalError::BufferFull
    }
}

/// A decode's outcome when the bytes are not damaged: a whole item, or
/// "the bytes end inside it" (at a file's end: a torn tail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Status<T> {
    /// The item and the bytes it took.
    Complete(T),
    /// More bytes are needed.
    Partial,
}

/// What a journal file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FileKind {
    /// Records appended as the store applied them.
    Log,
    /// One record per live entry, then [`Op::End`].
    Snapshot,
    /// A kind this code does not know.
    Unknown(u8),
}

impl FileKind {
    const fn to_u8(self) -> u8 {
        match self {
            FileKind::Log => 1,
            FileKind::Snapshot => 2,
            FileKind::Unknown(k) => k,
        }
    }

    const fn from_u8(k: u8) -> FileKind {
        match k {
            1 => FileKind::Log,
            2 => FileKind::Snapshot,
            k => FileKind::Unknown(k),
        }
    }
}

/// The header that starts every journal file.
pub fn file_header(kind: FileKind) -> [u8; FILE_HEADER_LEN] {
    let mut h = [0u8; FILE_HEADER_LEN];
    h[file::MAGIC].copy_from_slice(&MAGIC);
    h[file::VERSION].copy_from_slice(&VERSION.to_le_bytes());
    h[file::KIND] = kind.to_u8();
    h[file::ZERO] = 0;
    let crc = crc32c(&h[..file::CRC.start]);
    h[file::CRC].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Reads a file header: its kind, or Partial if `bytes` are shorter than one.
pub fn decode_file_header(bytes: &[u8]) -> Result<Status<FileKind>, JournalError> {
    let magic_len = bytes.len().min(MAGIC.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        return Err(JournalError::BadMagic);
    }
    if bytes.len() < FILE_HEADER_LEN {
        return Ok(Status::Partial);
    }
    if u32::from_le_bytes(le(&bytes[file::CRC])) != crc32c(&bytes[..file::CRC.start]) {
        return Err(JournalError::FileHeaderChecksum);
    }
    if u16::from_le_bytes(le(&bytes[file::VERSION])) != VERSION || bytes[file::ZERO] != 0 {
        return Err(JournalError::UnsupportedVersion);
    }
    Ok(Status::Complete(FileKind::from_u8(bytes[file::KIND])))
}

/// One journal record: an operation on `key`, applied by the store as
/// number `seq` of the key's shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Record<'a> {
    /// Per key, the store's order (see the [module docs](self)).
    pub seq: u64,
    /// The key (empty for [`Op::End`]).
    pub key: &'a [u8],
    /// What happened to it.
    pub op: Op<'a>,
}

/// What a record says happened. Concat and incr are logged as the put of
/// the value they produced; a touch that expired the entry as a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Op<'a> {
    /// The entry is now this value, with these flags and expiry.
    Put {
        /// The value.
        value: &'a [u8],
        /// Client flags (0: none).
        flags: u32,
        /// Absolute expiry on the store's clock; None: never.
        expires: Option<Millis>,
        /// The value is known to be UTF-8.
        text: bool,
    },
    /// The entry is gone.
    Delete,
    /// The entry's expiry is now this (None: never); value and flags kept.
    Touch {
        /// Absolute expiry; None: never.
        expires: Option<Millis>,
    },
    /// A snapshot's last record: it holds `seq` entries (the count rides in
    /// the `seq` field; the key is empty).
    End,
}

impl<'a> Record<'a> {
    /// A put of `value` with `opts`' flags, text mark and expiry (which
    /// the caller resolved: [`Expiry::Keep`] reads as never).
    pub fn put(seq: u64, key: &'a [u8], value: &'a [u8], opts: &PutOptions) -> Record<'a> {
        let expires = match opts.expiry {
            Expiry::At(at) if at != u64::MAX => Some(at),
            _ => None,
        };
        Record { seq, key, op: Op::Put { value, flags: opts.flags, expires, text: opts.text } }
    }

    /// Bytes [`Record::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        let (bits, value) = self.bits_and_value();
        RECORD_HEADER_LEN + BODY_HEADER_LEN + fields_len(bits) + self.key.len() + value.len()
    }

    fn bits_and_value(&self) -> (u8, &'a [u8]) {
        let bit = |on: bool, bit: u8| if on { bit } else { 0 };
        match self.op {
            Op::Put { value, flags, expires, text } => {
                (bit(expires.is_some(), body::EXPIRES) | bit(flags != 0, body::FLAGS) | bit(text, body::TEXT), value)
            }
            Op::Touch { expires } => (bit(expires.is_some(), body::EXPIRES), &[]),
            Op::Delete | Op::End => (0, &[]),
        }
    }

    /// Appends the record to `out`; returns the bytes written. Refuses a
    /// key over 65,535 bytes and, with nothing written, a full buffer.
    pub fn encode<O: Output + ?Sized>(&self, out: &mut O) -> Result<usize, JournalError> {
        let key_len = u16::try_from(self.key.len()).map_err(|_| JournalError::KeyTooLong)?;
        let len = self.encoded_len();
        let body_len = len - RECORD_HEADER_LEN;
        if body_len > MAX_BODY_LEN {
            return Err(JournalError::TooLong);
        }
        let (bits, value) = self.bits_and_value();
        let dst = out.append(len)?;
        let (head, b) = dst.split_at_mut(RECORD_HEADER_LEN);
        b[body::OP] = match self.op {
            Op::Put { .. } => body::PUT,
            Op::Delete => body::DELETE,
            Op::Touch { .. } => body::TOUCH,
            Op::End => body::END,
        };
        b[body::BITS] = bits;
        b[body::SEQ].copy_from_slice(&self.seq.to_le_bytes());
        b[body::KEY_LEN].copy_from_slice(&key_len.to_le_bytes());
        let mut at = BODY_HEADER_LEN;
        let expires = match self.op {
            Op::Put { expires, .. } | Op::Touch { expires } => expires,
            Op::Delete | Op::End => None,
        };
        if let Some(expires) = expires {
            b[at..at + 8].copy_from_slice(&expires.to_le_bytes());
            at += 8;
        }
        if let Op::Put { flags, .. } = self.op
            && flags != 0
        {
            b[at..at + 4].copy_from_slice(&flags.to_le_bytes());
            at += 4;
        }
        b[at..at + self.key.len()].copy_from_slice(self.key);
        at += self.key.len();
        b[at..at + value.len()].copy_from_slice(value);
        head[head::LEN].copy_from_slice(&(body_len as u32).to_le_bytes());
        head[head::BODY_CRC].copy_from_slice(&crc32c(b).to_le_bytes());
        let head_crc = crc32c(&head[..head::HEAD_CRC.start]);
        head[head::HEAD_CRC].copy_from_slice(&head_crc.to_le_bytes());
        Ok(len)
    }
}

/// Bytes of the optional fields `bits` call for.
const fn fields_len(bits: u8) -> usize {
    (if bits & body::EXPIRES != 0 { 8 } else { 0 }) + (if bits & body::FLAGS != 0 { 4 } else { 0 })
}

fn le<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut b = [0u8; N];
    b.copy_from_slice(&bytes[..N]);
    b
}

/// Decodes the record at the start of `bytes`: the record (borrowing its
/// key and value) and the bytes it took; `Partial` if `bytes` end inside
/// it (its header checked out, or is itself cut); an error for damage.
/// Never panics, whatever the bytes.
pub fn decode(bytes: &[u8]) -> Result<Status<(Record<'_>, usize)>, JournalError> {
    if bytes.len() < RECORD_HEADER_LEN {
        return Ok(Status::Partial);
    }
    if u32::from_le_bytes(le(&bytes[head::HEAD_CRC])) != crc32c(&bytes[..head::HEAD_CRC.start]) {
        return Err(JournalError::HeaderChecksum);
    }
    let body_len = u32::from_le_bytes(le(&bytes[head::LEN])) as usize;
    if body_len > MAX_BODY_LEN {
        return Err(JournalError::TooLong);
    }
    let Some(b) = bytes.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + body_len) else {
        return Ok(Status::Partial);
    };
    if u32::from_le_bytes(le(&bytes[head::BODY_CRC])) != crc32c(b) {
        return Err(JournalError::BodyChecksum);
    }
    let record = parse_body(b).ok_or(JournalError::Malformed)?;
    Ok(Status::Complete((record, RECORD_HEADER_LEN + body_len)))
}

/// The body's fields, once its checksum matched.
fn parse_body(b: &[u8]) -> Option<Record<'_>> {
    if b.len() < BODY_HEADER_LEN {
        return None;
    }
    let (op, bits) = (b[body::OP], b[body::BITS]);
    if bits & !body::ALL != 0 {
        return None;
    }
    let seq = u64::from_le_bytes(le(&b[body::SEQ]));
    let key_len = usize::from(u16::from_le_bytes(le(&b[body::KEY_LEN])));
    let mut at = BODY_HEADER_LEN;
    let mut expires = None;
    if bits & body::EXPIRES != 0 {
        expires = Some(u64::from_le_bytes(le(b.get(at..at + 8)?)));
        at += 8;
    }
    let mut flags = 0;
    if bits & body::FLAGS != 0 {
        flags = u32::from_le_bytes(le(b.get(at..at + 4)?));
        at += 4;
    }
    let key = b.get(at..at + key_len)?;
    let rest = &b[at + key_len..];
    let op = match op {
        body::PUT => Op::Put { value: rest, flags, expires, text: bits & body::TEXT != 0 },
        // The other operations have no value, and only touch an expiry.
        body::TOUCH if rest.is_empty() && bits & !body::EXPIRES == 0 => Op::Touch { expires },
        body::DELETE if rest.is_empty() && bits == 0 => Op::Delete,
        body::END if rest.is_empty() && bits == 0 && key.is_empty() => Op::End,
        _ => return None,
    };
    Some(Record { seq, key, op })
}

/// The first offset after `from` (exclusive) where a whole record that
/// passes every check starts, if any: what tells damage before the end
/// (there is one) from a torn tail (there is none). A candidate costs a
/// checksum of 8 bytes, and of its body only when its header checks out.
pub fn next_valid_record(bytes: &[u8], from: usize) -> Option<usize> {
    (from.saturating_add(1)..bytes.len().saturating_sub(RECORD_HEADER_LEN - 1))
        .find(|&at| matches!(decode(&bytes[at..]), Ok(Status::Complete(_))))
}

#[cfg(test)]
mod test {
    use super::*;
    use std::vec::Vec;

    type Buf = heapless::Vec<u8, 16384>;

    fn records() -> Vec<Record<'static>> {
        std::vec![
            Record { seq: 1, key: b"k", op: Op::Put { value: b"v", flags: 0, expires: None, text: true } },
            Record { seq: 2, key: b"", op: Op::Put { value: b"", flags: 7, expires: Some(99), text: false } },
            Record { seq: u64::MAX, key: b"key", op: Op::Delete },
            Record { seq: 3, key: b"key", op: Op::Touch { expires: Some(1 << 40) } },
            Record { seq: 4, key: b"key", op: Op::Touch { expires: None } },
            Record {
                seq: 5,
                key: &[0xff; 300],
                op: Op::Put { value: &[1; 5000], flags: 1, expires: None, text: false }
            },
            Record { seq: 6, key: b"", op: Op::End },
        ]
    }

    fn encode_all(records: &[Record<'_>]) -> Buf {
        let mut out = Buf::new();
        for r in records {
            let n = r.encode(&mut out).unwrap();
            assert_eq!(n, r.encoded_len());
        }
        out
    }

    #[test]
    fn every_record_round_trips() {
        let all = records();
        let bytes = encode_all(&all);
        let mut at = 0;
        for want in &all {
            match decode(&bytes[at..]) {
                Ok(Status::Complete((got, n))) => {
                    assert_eq!(&got, want);
                    at += n;
                }
                other => panic!("at {at}: {other:?}"),
            }
        }
        assert_eq!(at, bytes.len());
    }

    /// A fixture: the bytes of a small put, by hand, so the format cannot
    /// drift without this test saying so.
    #[test]
    fn a_put_is_these_bytes() {
        let mut out = Buf::new();
        let r = Record { seq: 0x0102, key: b"ab", op: Op::Put { value: b"xyz", flags: 5, expires: None, text: true } };
        r.encode(&mut out).unwrap();
        let body = [
            1, // put
            body::FLAGS | body::TEXT,
            0x02,
            0x01,
            0,
            0,
            0,
            0,
            0,
            0, // seq
            2,
            0, // key_len
            5,
            0,
            0,
            0, // flags
            b'a',
            b'b',
            b'x',
            b'y',
            b'z',
        ];
        assert_eq!(&out[12..], &body[..]);
        assert_eq!(&out[0..4], &(body.len() as u32).to_le_bytes());
        assert_eq!(&out[4..8], &crc32c(&body).to_le_bytes());
        assert_eq!(&out[8..12], &crc32c(&out[0..8]).to_le_bytes());
        // The check value of CRC-32C: the polynomial is the Castagnoli one.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn file_headers_round_trip_and_refuse_damage() {
        for kind in [FileKind::Log, FileKind::Snapshot, FileKind::Unknown(9)] {
            let h = file_header(kind);
            assert_eq!(decode_file_header(&h), Ok(Status::Complete(kind)));
            for n in 0..FILE_HEADER_LEN {
                assert_eq!(decode_file_header(&h[..n]), Ok(Status::Partial), "{n} bytes");
            }
            for at in 0..FILE_HEADER_LEN {
                let mut bad = h;
                bad[at] ^= 0x10;
                assert!(decode_file_header(&bad).is_err(), "byte {at}");
            }
        }
        assert_eq!(decode_file_header(b"RESP"), Err(JournalError::BadMagic));
        let mut v2 = file_header(FileKind::Log);
        v2[8] = 2;
        let crc = crc32c(&v2[..12]);
        v2[12..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_file_header(&v2), Err(JournalError::UnsupportedVersion));
    }

    /// Every prefix of a record is Partial; the whole of it is Complete.
    #[test]
    fn a_cut_record_is_partial() {
        for r in records() {
            let bytes = encode_all(&[r]);
            for n in 0..bytes.len() {
                assert_eq!(decode(&bytes[..n]), Ok(Status::Partial), "{n} of {}", bytes.len());
            }
        }
    }

    /// A flipped bit anywhere in a record is an error (or, in the length,
    /// a header that no longer checks out): never another record.
    #[test]
    fn a_flipped_bit_anywhere_is_damage() {
        for r in records() {
            let bytes = encode_all(&[r]);
            for at in 0..bytes.len() {
                for bit in [0x01, 0x80] {
                    let mut bad = bytes.clone();
                    bad[at] ^= bit;
                    assert!(decode(&bad).is_err(), "byte {at} bit {bit:#x} of {r:?}");
                }
            }
        }
    }

    #[test]
    fn bodies_that_check_out_but_do_not_parse_are_malformed() {
        fn sealed(body: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(&crc32c(body).to_le_bytes());
            let crc = crc32c(&out);
            out.extend_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(body);
            out
        }
        let seq = [0u8; 8];
        for body in [
            &[9u8, 0][..],                                                     // short
            &[[9, 0].as_slice(), &seq, &[0, 0]].concat(),                      // unknown op
            &[[1, 0x80].as_slice(), &seq, &[0, 0]].concat(),                   // unknown bit
            &[[1, 0].as_slice(), &seq, &[5, 0], b"abc"].concat(),              // key past the body
            &[[2, 0].as_slice(), &seq, &[1, 0], b"kv"].concat(),               // a delete with a value
            &[[3, body::FLAGS].as_slice(), &seq, &[0, 0], &[0; 4]].concat(),   // a touch with flags
            &[[1, body::EXPIRES].as_slice(), &seq, &[0, 0], &[0; 4]].concat(), // expiry cut
        ] {
            assert_eq!(decode(&sealed(body)), Err(JournalError::Malformed), "{body:?}");
        }
        let mut long = Vec::from(&(MAX_BODY_LEN as u32 + 1).to_le_bytes()[..]);
        long.extend_from_slice(&[0; 4]);
        let crc = crc32c(&long);
        long.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&long), Err(JournalError::TooLong));
    }

    #[test]
    fn encode_refuses_what_it_cannot_write_and_writes_nothing() {
        let mut small = heapless::Vec::<u8, 20>::new();
        let r = Record { seq: 1, key: b"key", op: Op::Put { value: b"value", flags: 0, expires: None, text: false } };
        assert_eq!(r.encode(&mut small), Err(JournalError::BufferFull));
        assert!(small.is_empty());
        let long = [0u8; 70_000];
        let mut out = Buf::new();
        assert_eq!(Record { seq: 1, key: &long, op: Op::Delete }.encode(&mut out), Err(JournalError::KeyTooLong));
        assert!(out.is_empty());
    }

    /// Damage before the end has a valid record after it; a torn tail has none.
    #[test]
    fn a_valid_record_after_damage_is_found() {
        let all = records();
        let bytes = encode_all(&all);
        let first = all[0].encoded_len();
        let mut bad = bytes.clone();
        bad[3] ^= 1; // the first record's length
        assert_eq!(decode(&bad), Err(JournalError::HeaderChecksum));
        assert_eq!(next_valid_record(&bad, 0), Some(first));
        let last = bytes.len() - all[6].encoded_len();
        let mut torn = bytes.clone();
        torn[last + 14] ^= 1;
        assert_eq!(next_valid_record(&torn, last), None);
        assert_eq!(next_valid_record(&[], 0), None);
        assert_eq!(next_valid_record(&[1, 2, 3], 5), None);
    }

    #[test]
    fn put_takes_the_resolved_options() {
        let opts = PutOptions { flags: 3, expiry: Expiry::At(50), text: true, ..PutOptions::default() };
        assert_eq!(
            Record::put(1, b"k", b"v", &opts).op,
            Op::Put { value: b"v", flags: 3, expires: Some(50), text: true }
        );
        let never = PutOptions { expiry: Expiry::At(u64::MAX), ..PutOptions::default() };
        assert!(matches!(Record::put(1, b"k", b"v", &never).op, Op::Put { expires: None, .. }));
    }
}
