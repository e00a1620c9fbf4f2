//! One loop's log writer: turns the writes the loop's store applied into
//! journal records in a buffer, and says what the driver owes the disk:
//! bytes to write, and when a sync is due. Sans-IO: the driver does the
//! `write` and the `fdatasync` and reports back; time comes in as `now`.
//!
//! # Group commit: epochs
//!
//! A loop turn is an epoch ([`LogWriter::turn`]). Every record appended
//! during a turn belongs to it; the answers of that turn may leave once
//! [`LogWriter::durable`] reaches it: written (`write(2)` returned) for
//! `everysec` and `no`, written and synced for `always`. One write and one
//! sync cover every record of the turn, whatever their number.
//!
//! # The policies ([`Fsync`])
//!
//! - `always`: a sync is due as soon as a turn's bytes are written.
//! - `everysec`: a sync is due once a second while bytes are unsynced
//!   ([`LogWriter::poll_timeout`] says when, so an idle loop wakes for it).
//! - `no`: never (the kernel writes back; a stop syncs).
//!
//! # Errors
//!
//! A failed write or sync (disk full, EIO) marks the writer failing: its
//! records stay in the buffer, the driver retries once a second
//! ([`LogWriter::poll_timeout`]), and meanwhile new writes are to be
//! refused ("not persisted") by whoever asks [`LogWriter::failing`], so the
//! buffer does not grow and nothing unwritten is acknowledged. A retry that
//! succeeds clears it.
//!
//! What it does not own: the file (its name, header, rotation: the host's
//! data directory), the sequence numbers (taken under the shard's lock).

use std::io;
use std::time::{Duration, Instant};

use kvio_core::journal::{JournalError, Record};

/// How often a log is synced: `--fsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fsync {
    /// After every turn that wrote, before its answers leave.
    Always,
    /// Once a second.
    #[default]
    EverySec,
    /// Never (the kernel's writeback; a stop syncs).
    No,
}

impl Fsync {
    /// Its `--fsync` name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::EverySec => "everysec",
            Fsync::No => "no",
        }
    }
}

impl std::fmt::Display for Fsync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Fsync {
    type Err = String;

    fn from_str(s: &str) -> Result<Fsync, String> {
        match s {
            "always" => Ok(Fsync::Always),
            "everysec" => Ok(Fsync::EverySec),
            "no" => Ok(Fsync::No),
            _ => Err(format!("`{s}` is not an fsync policy: always, everysec or no")),
        }
    }
}

/// The `everysec` period, and how long a failing writer waits to retry.
pub const SYNC_PERIOD: Duration = Duration::from_secs(1);

/// Why the writer is failing, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// What the last write or sync returned.
    pub kind: io::ErrorKind,
    /// The raw errno, if any (ENOSPC is 28).
    pub errno: Option<i32>,
    /// When the next try is due.
    pub retry_at: Instant,
}

/// One loop's log writer. See the [module docs](self).
#[derive(Debug)]
pub struct LogWriter {
    fsync: Fsync,
    /// Records not yet written.
    buf: Vec<u8>,
    /// The current epoch (loop turn).
    turn: u64,
    /// The epoch of the newest record appended.
    appended: u64,
    /// The newest epoch whose records are all written.
    written: u64,
    /// The newest epoch whose records are all synced.
    synced: u64,
    last_sync: Instant,
    /// Bytes written to the current file (its header included).
    size: u64,
    failure: Option<Failure>,
    /// Write or sync errors so far.
    errors: u64,
}

impl LogWriter {
    /// A writer for a file of `size` bytes so far, synced at `now`.
    pub fn new(fsync: Fsync, size: u64, now: Instant) -> LogWriter {
        LogWriter {
            fsync,
            buf: Vec::new(),
            turn: 1,
            appended: 0,
            written: 0,
            synced: 0,
            last_sync: now,
            size,
            failure: None,
            errors: 0,
        }
    }

    /// Its policy.
    pub fn fsync(&self) -> Fsync {
        self.fsync
    }

    /// Appends `record` to the current turn.
    pub fn append(&mut self, record: &Record<'_>) -> Result<(), JournalError> {
        record.encode(&mut self.buf)?;
        self.appended = self.turn;
        Ok(())
    }

    /// The current epoch: what the answers produced now wait for.
    pub fn turn(&self) -> u64 {
        self.turn
    }

    /// Ends the turn: later records belong to the next epoch. Returns the
    /// epoch that ended.
    pub fn end_turn(&mut self) -> u64 {
        self.turn += 1;
        self.turn - 1
    }

    /// The newest epoch whose answers may leave (see the [module docs](self)).
    pub fn durable(&self) -> u64 {
        // Nothing appended since: everything up to the current turn is durable.
        let done = if self.fsync == Fsync::Always { self.synced } else { self.written };
        if done >= self.appended { self.turn } else { done }
    }

    /// Bytes the driver should write now (none while a failure waits for its retry).
    pub fn to_write(&self, now: Instant) -> &[u8] {
        match self.failure {
            Some(f) if now < f.retry_at => &[],
            _ => &self.buf,
        }
    }

    /// Whether records are buffered, written or not.
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The driver wrote the first `n` bytes of [`to_write`](Self::to_write).
    pub fn wrote(&mut self, n: usize) {
        self.buf.drain(..n.min(self.buf.len()));
        self.size += n as u64;
        if self.buf.is_empty() {
            self.written = self.appended;
            if self.fsync != Fsync::Always {
                self.failure = None;
            }
        }
    }

    /// Whether a sync is due now (the bytes are all written first).
    pub fn sync_due(&self, now: Instant) -> bool {
        if !self.buf.is_empty() || self.synced >= self.written || self.failure.is_some_and(|f| now < f.retry_at) {
            return false;
        }
        match self.fsync {
            Fsync::Always => true,
            Fsync::EverySec => now >= self.last_sync + SYNC_PERIOD,
            Fsync::No => false,
        }
    }

    /// Whether anything written is unsynced (a stop syncs it whatever the policy).
    pub fn unsynced(&self) -> bool {
        self.synced < self.written
    }

    /// The driver synced (everything written so far) at `now`.
    pub fn synced(&mut self, now: Instant) {
        self.synced = self.written;
        self.last_sync = now;
        self.failure = None;
    }

    /// A write or a sync failed at `now`: retry in a second, and refuse
    /// new writes meanwhile (see [`failing`](Self::failing)).
    pub fn failed(&mut self, error: &io::Error, now: Instant) {
        self.errors += 1;
        self.failure = Some(Failure { kind: error.kind(), errno: error.raw_os_error(), retry_at: now + SYNC_PERIOD });
    }

    /// The failure new writes are refused for, if any.
    pub fn failing(&self) -> Option<Failure> {
        self.failure
    }

    /// Write and sync errors so far.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// When the writer next needs the driver, if nothing else wakes it:
    /// a retry, or `everysec`'s sync.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if let Some(f) = self.failure {
            return Some(f.retry_at);
        }
        (self.fsync == Fsync::EverySec && self.unsynced()).then_some(self.last_sync + SYNC_PERIOD)
    }

    /// Bytes written to the current file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// When it last synced.
    pub fn last_sync(&self) -> Instant {
        self.last_sync
    }

    /// The driver moved to a new file of `size` bytes (a rewrite began),
    /// everything before written and synced to the old one.
    pub fn switched(&mut self, size: u64) {
        debug_assert!(self.buf.is_empty() && !self.unsynced());
        self.size = size;
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use kvio_core::journal::Op;

    fn put(seq: u64) -> Record<'static> {
        Record { seq, key: b"k", op: Op::Put { value: b"value", flags: 0, expires: None, text: true } }
    }

    #[test]
    fn always_owes_one_write_and_one_sync_per_turn_whatever_its_records() {
        let t0 = Instant::now();
        let mut w = LogWriter::new(Fsync::Always, 16, t0);
        let first = w.turn();
        for seq in 0..100 {
            w.append(&put(seq)).unwrap();
        }
        assert!(w.durable() < first, "answers of this turn wait");
        assert_eq!(w.end_turn(), first);
        let n = w.to_write(t0).len();
        assert_eq!(n, 100 * put(0).encoded_len());
        assert!(!w.sync_due(t0), "bytes first");
        w.wrote(n / 2);
        assert!(!w.sync_due(t0) && w.durable() < first, "a short write");
        w.wrote(n - n / 2);
        assert!(w.sync_due(t0), "one sync for the turn");
        assert!(w.durable() < first, "written is not enough for always");
        w.synced(t0);
        assert!(!w.sync_due(t0));
        assert!(w.durable() >= first);
        assert_eq!(w.size(), 16 + n as u64);
        // A turn with no writes owes nothing and its answers go at once.
        let idle = w.turn();
        w.end_turn();
        assert!(w.durable() >= idle && w.to_write(t0).is_empty() && !w.sync_due(t0));
        assert_eq!(w.poll_timeout(), None);
    }

    #[test]
    fn everysec_syncs_once_a_second_and_releases_answers_once_written() {
        let t0 = Instant::now();
        let mut w = LogWriter::new(Fsync::EverySec, 16, t0);
        let turn = w.turn();
        w.append(&put(1)).unwrap();
        w.end_turn();
        let n = w.to_write(t0).len();
        w.wrote(n);
        assert!(w.durable() >= turn, "written: the answer goes");
        assert!(!w.sync_due(t0 + Duration::from_millis(999)));
        assert_eq!(w.poll_timeout(), Some(t0 + SYNC_PERIOD), "an idle loop wakes for it");
        let t1 = t0 + SYNC_PERIOD;
        assert!(w.sync_due(t1));
        w.synced(t1);
        assert_eq!(w.poll_timeout(), None, "nothing unsynced");
        w.append(&put(2)).unwrap();
        let n = w.to_write(t1).len();
        w.wrote(n);
        assert!(!w.sync_due(t1 + Duration::from_millis(500)));
        assert!(w.sync_due(t1 + SYNC_PERIOD));
    }

    #[test]
    fn no_never_owes_a_sync_but_a_stop_sees_what_is_unsynced() {
        let t0 = Instant::now();
        let mut w = LogWriter::new(Fsync::No, 16, t0);
        w.append(&put(1)).unwrap();
        let n = w.to_write(t0).len();
        w.wrote(n);
        assert!(!w.sync_due(t0 + Duration::from_secs(3600)));
        assert_eq!(w.poll_timeout(), None);
        assert!(w.unsynced(), "a stop syncs it");
        w.synced(t0);
        assert!(!w.unsynced());
    }

    #[test]
    fn a_failed_write_keeps_its_records_waits_a_second_and_refuses_new_writes_meanwhile() {
        let t0 = Instant::now();
        let mut w = LogWriter::new(Fsync::Always, 16, t0);
        let turn = w.turn();
        w.append(&put(1)).unwrap();
        w.end_turn();
        let full = io::Error::from_raw_os_error(28); // ENOSPC
        w.failed(&full, t0);
        assert_eq!(w.failing().map(|f| f.errno), Some(Some(28)));
        assert_eq!(w.errors(), 1);
        assert!(w.to_write(t0).is_empty(), "no retry before its time");
        assert_eq!(w.poll_timeout(), Some(t0 + SYNC_PERIOD));
        assert!(w.durable() < turn, "never acknowledged");
        let t1 = t0 + SYNC_PERIOD;
        let n = w.to_write(t1).len();
        assert_eq!(n, put(1).encoded_len(), "the same records, retried");
        w.wrote(n);
        assert!(w.sync_due(t1));
        w.synced(t1);
        assert!(w.failing().is_none() && w.durable() >= turn);
    }

    #[test]
    fn fsync_policies_parse_by_name() {
        for f in [Fsync::Always, Fsync::EverySec, Fsync::No] {
            assert_eq!(f.as_str().parse::<Fsync>(), Ok(f));
        }
        assert!("sometimes".parse::<Fsync>().unwrap_err().contains("always, everysec or no"));
    }
}
