//! `--data-dir`: the directory that holds the journal, its lock, and the
//! rule that says which files make up the state.
//!
//! # Files (the naming rule: Redis 7's multi-part AOF, with names for a manifest)
//!
//! ```text
//! LOCK                          flock'ed for the server's life; holds its pid
//! snapshot-<gen>.kvs            a base: every live entry when it was written
//! log-<gen>-<loop>.kvl          loop <loop>'s records since generation <gen> began
//! *.tmp                         a file being written (removed at start)
//! <file>.damaged-<offset>       what --repair moved aside
//! ```
//!
//! `<gen>` is a generation number (20 digits, so names sort), `<loop>` the
//! writing loop's index (4 digits). The state is the newest snapshot `G`
//! (none: generation 0) plus every log of a generation `>= G`; older files
//! are obsolete and removed. Loading does not depend on how the logs split:
//! records carry sequence numbers and recovery keeps each key's latest
//! ([`crate::sansio::recovery`]), so a directory written by `--threads 4`
//! loads under `--threads 1` or any flavor, and logs of several runs load
//! together.
//!
//! A run never appends to a file an earlier run wrote: it starts a new
//! generation for its logs. A rewrite starts a new generation too, and
//! once every loop writes there, a snapshot of that generation: written to
//! a `.tmp` file, synced, renamed into place, the directory synced (the
//! rename is the commit), then the older files go.
//!
//! What it does not own: the format ([`kvio_core::journal`]), recovery's
//! rules, when to rewrite, the writes of the loops.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use kvio_core::journal::{self, FileKind, Op, Record};

use crate::sansio::recovery::{self, Cut, JournalFile, Recovered};

/// The lock file's name.
pub const LOCK: &str = "LOCK";

/// Why a data directory cannot be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum DataDirError {
    /// Another server holds the directory's lock.
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The pid the lock file names, if it names one.
        pid: Option<u32>,
    },
    /// A file operation failed.
    Io {
        /// What was being done, and to which path.
        what: String,
        /// The error.
        error: io::Error,
    },
    /// Damage before the end of a file (not repaired).
    Damaged {
        /// The file.
        file: PathBuf,
        /// Where.
        offset: usize,
        /// What.
        damage: recovery::Damage,
    },
}

impl std::fmt::Display for DataDirError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataDirError::Locked { dir, pid } => {
                write!(f, "data directory {} is in use by another kvio", dir.display())?;
                if let Some(pid) = pid {
                    write!(f, " (pid {pid})")?;
                }
                write!(f, ": its {LOCK} file is locked")
            }
            DataDirError::Io { what, error } => write!(f, "{what}: {error}"),
            DataDirError::Damaged { file, offset, damage } => write!(
                f,
                "{}: {damage} at offset {offset}; kvio serve --repair keeps what comes before it and moves the rest aside",
                file.display()
            ),
        }
    }
}

impl std::error::Error for DataDirError {}

fn io_error(what: impl FnOnce() -> String) -> impl FnOnce(io::Error) -> DataDirError {
    move |error| DataDirError::Io { what: what(), error }
}

/// A journal file's name, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileName {
    /// `snapshot-<gen>.kvs`
    Snapshot {
        /// Generation.
        generation: u64,
    },
    /// `log-<gen>-<loop>.kvl`
    Log {
        /// Generation.
        generation: u64,
        /// Writing loop.
        index: u32,
    },
}

impl FileName {
    /// Parses a directory entry's name; None for any other file.
    pub fn parse(name: &str) -> Option<FileName> {
        if let Some(g) = name.strip_prefix("snapshot-").and_then(|s| s.strip_suffix(".kvs")) {
            return Some(FileName::Snapshot { generation: digits(g, 20)? });
        }
        let rest = name.strip_prefix("log-")?.strip_suffix(".kvl")?;
        let (g, i) = rest.split_once('-')?;
        Some(FileName::Log { generation: digits(g, 20)?, index: u32::try_from(digits(i, 4)?).ok()? })
    }

    /// The generation.
    pub fn generation(&self) -> u64 {
        match *self {
            FileName::Snapshot { generation } | FileName::Log { generation, .. } => generation,
        }
    }

    /// Its journal kind.
    pub fn kind(&self) -> FileKind {
        match self {
            FileName::Snapshot { .. } => FileKind::Snapshot,
            FileName::Log { .. } => FileKind::Log,
        }
    }
}

impl std::fmt::Display for FileName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileName::Snapshot { generation } => write!(f, "snapshot-{generation:020}.kvs"),
            FileName::Log { generation, index } => write!(f, "log-{generation:020}-{index:04}.kvl"),
        }
    }
}

fn digits(s: &str, n: usize) -> Option<u64> {
    (s.len() == n && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
}

/// What a start found and did to the files.
#[derive(Debug, Default)]
pub struct Report {
    /// Files read.
    pub files: usize,
    /// Bytes read.
    pub bytes: u64,
    /// Records read.
    pub records: usize,
    /// Torn tails cut: the file and how many bytes were dropped.
    pub torn: Vec<(PathBuf, usize, usize)>,
    /// Damage repaired: the file, the offset, and where the rest went.
    pub repaired: Vec<(PathBuf, usize, PathBuf)>,
    /// The highest sequence number read.
    pub max_seq: u64,
    /// The generation of the base snapshot (0: none).
    pub base: u64,
    /// The highest generation of any file.
    pub newest: u64,
}

/// An open, locked data directory. Dropping it releases the lock.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    /// Held open: the flock lasts as long as the descriptor.
    _lock: File,
}

impl DataDir {
    /// Opens (creating it if need be) and locks `path`; a second server on
    /// the same directory is refused. Removes `*.tmp` files a crash left.
    pub fn open(path: &Path) -> Result<DataDir, DataDirError> {
        fs::create_dir_all(path).map_err(io_error(|| format!("cannot create data directory {}", path.display())))?;
        let lock_path = path.join(LOCK);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_error(|| format!("cannot open {}", lock_path.display())))?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut pid = String::new();
                let _ = lock.read_to_string(&mut pid);
                return Err(DataDirError::Locked { dir: path.to_path_buf(), pid: pid.trim().parse().ok() });
            }
            Err(e) => return Err(io_error(|| format!("cannot lock {}", lock_path.display()))(e.into())),
        }
        // The pid is for the refusal's message only: the flock is the lock.
        let _ = lock.set_len(0).and_then(|()| lock.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0));
        let dir = DataDir { path: path.to_path_buf(), _lock: lock };
        for (name, _) in dir.entries()? {
            if name.ends_with(".tmp") {
                let p = dir.path.join(&name);
                fs::remove_file(&p).map_err(io_error(|| format!("cannot remove {}", p.display())))?;
            }
        }
        Ok(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every entry's name, and its parsed journal name if it is one.
    fn entries(&self) -> Result<Vec<(String, Option<FileName>)>, DataDirError> {
        let list = fs::read_dir(&self.path).map_err(io_error(|| format!("cannot list {}", self.path.display())))?;
        let mut names = Vec::new();
        for entry in list {
            let entry = entry.map_err(io_error(|| format!("cannot list {}", self.path.display())))?;
            if let Ok(name) = entry.file_name().into_string() {
                let parsed = FileName::parse(&name);
                names.push((name, parsed));
            }
        }
        names.sort();
        Ok(names)
    }

    /// The journal files, sorted (snapshots and logs by generation).
    pub fn journal_files(&self) -> Result<Vec<FileName>, DataDirError> {
        let mut files: Vec<_> = self.entries()?.into_iter().filter_map(|(_, f)| f).collect();
        files.sort();
        Ok(files)
    }

    /// Reads the state: the newest snapshot and every log of its
    /// generation or later, through recovery; cuts torn tails (truncating
    /// the file, one line in the report); with `repair`, moves what follows
    /// damage aside, else refuses naming the file and offset; removes
    /// obsolete files. Calls `load` with what recovery found (the entries
    /// borrow the files' bytes) and returns what it returned.
    pub fn recover<R>(
        &self,
        repair: bool,
        load: impl FnOnce(&Recovered<'_>) -> R,
    ) -> Result<(R, Report), DataDirError> {
        let names = self.journal_files()?;
        let base = names
            .iter()
            .filter_map(|f| match f {
                FileName::Snapshot { generation } => Some(*generation),
                FileName::Log { .. } => None,
            })
            .max()
            .unwrap_or(0);
        let (live, obsolete): (Vec<FileName>, Vec<FileName>) = names.into_iter().partition(|f| match f {
            FileName::Snapshot { generation } => *generation == base,
            FileName::Log { generation, .. } => *generation >= base,
        });
        let mut report = Report {
            base,
            newest: live.iter().map(FileName::generation).max().unwrap_or(0),
            files: live.len(),
            ..Report::default()
        };
        let mut contents = Vec::with_capacity(live.len());
        for name in &live {
            let p = self.path.join(name.to_string());
            let bytes = fs::read(&p).map_err(io_error(|| format!("cannot read {}", p.display())))?;
            report.bytes += bytes.len() as u64;
            contents.push(bytes);
        }
        let files: Vec<JournalFile<'_>> =
            live.iter().zip(&contents).map(|(name, bytes)| JournalFile { kind: name.kind(), bytes }).collect();
        let recovered = recovery::recover(&files, repair).map_err(|e| DataDirError::Damaged {
            file: self.path.join(live[e.file].to_string()),
            offset: e.offset,
            damage: e.damage,
        })?;
        report.records = recovered.records;
        report.max_seq = recovered.max_seq;
        let loaded = load(&recovered);
        for cut in &recovered.torn {
            let p = self.path.join(live[cut.file].to_string());
            self.cut(&p, cut)?;
            report.torn.push((p, cut.offset, cut.dropped));
        }
        for cut in &recovered.repaired {
            let p = self.path.join(live[cut.file].to_string());
            let aside = self.path.join(format!("{}.damaged-{}", live[cut.file], cut.offset));
            write_file(&aside, &contents[cut.file][cut.offset..])?;
            if live[cut.file].kind() == FileKind::Snapshot {
                // A snapshot's prefix is no snapshot (no end record): its
                // whole file goes aside; the caller writes a new one.
                let whole = self.path.join(format!("{}.damaged-0", live[cut.file]));
                fs::rename(&p, &whole).map_err(io_error(|| format!("cannot move {} aside", p.display())))?;
                self.sync()?;
                report.repaired.push((p, cut.offset, whole));
            } else {
                self.cut(&p, cut)?;
                report.repaired.push((p, cut.offset, aside));
            }
        }
        for name in obsolete {
            self.remove(name)?;
        }
        Ok((loaded, report))
    }

    /// Truncates a file to its cut and syncs it.
    fn cut(&self, path: &Path, cut: &Cut) -> Result<(), DataDirError> {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_error(|| format!("cannot open {}", path.display())))?;
        file.set_len(cut.offset as u64)
            .and_then(|()| file.sync_all())
            .map_err(io_error(|| format!("cannot truncate {}", path.display())))
    }

    /// Syncs the directory (a rename or a new file's name is durable only then).
    pub fn sync(&self) -> Result<(), DataDirError> {
        File::open(&self.path)
            .and_then(|d| d.sync_all())
            .map_err(io_error(|| format!("cannot sync directory {}", self.path.display())))
    }

    /// Creates `log-<generation>-<index>.kvl` with its header, synced, its
    /// name synced in the directory: records appended to it are then found
    /// by a recovery however the process ends. Refuses a file that exists.
    pub fn create_log(&self, generation: u64, index: u32) -> Result<File, DataDirError> {
        let name = FileName::Log { generation, index };
        let p = self.path.join(name.to_string());
        let mut file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&p)
            .map_err(io_error(|| format!("cannot create {}", p.display())))?;
        file.write_all(&journal::file_header(FileKind::Log))
            .and_then(|()| file.sync_all())
            .map_err(io_error(|| format!("cannot write {}", p.display())))?;
        self.sync()?;
        Ok(file)
    }

    /// Starts `snapshot-<generation>.kvs` (as a `.tmp` until
    /// [`SnapshotFile::commit`]).
    pub fn create_snapshot(&self, generation: u64) -> Result<SnapshotFile, DataDirError> {
        let name = FileName::Snapshot { generation };
        let path = self.path.join(name.to_string());
        let tmp = self.path.join(format!("{name}.tmp"));
        let file = File::create(&tmp).map_err(io_error(|| format!("cannot create {}", tmp.display())))?;
        let mut buf = Vec::with_capacity(SNAPSHOT_BUFFER);
        buf.extend_from_slice(&journal::file_header(FileKind::Snapshot));
        Ok(SnapshotFile { file, tmp, path, buf, records: 0, bytes: 0 })
    }

    /// Removes every file older than `generation` (a committed snapshot of
    /// that generation makes them obsolete), and syncs the directory.
    pub fn remove_before(&self, generation: u64) -> Result<usize, DataDirError> {
        let mut removed = 0;
        for name in self.journal_files()? {
            if name.generation() < generation {
                self.remove(name)?;
                removed += 1;
            }
        }
        self.sync()?;
        Ok(removed)
    }

    fn remove(&self, name: FileName) -> Result<(), DataDirError> {
        let p = self.path.join(name.to_string());
        fs::remove_file(&p).map_err(io_error(|| format!("cannot remove {}", p.display())))
    }

    /// Bytes of the journal files of generation `generation` or later.
    pub fn bytes_since(&self, generation: u64) -> Result<u64, DataDirError> {
        self.bytes_of(|name| name.generation() >= generation)
    }

    /// Bytes of the logs of generation `generation` or later: what a
    /// rewrite would fold into a snapshot.
    pub fn log_bytes_since(&self, generation: u64) -> Result<u64, DataDirError> {
        self.bytes_of(|name| name.kind() == FileKind::Log && name.generation() >= generation)
    }

    /// Bytes of the snapshot of `generation` (0 if there is none).
    pub fn snapshot_bytes(&self, generation: u64) -> Result<u64, DataDirError> {
        self.bytes_of(|name| *name == FileName::Snapshot { generation })
    }

    fn bytes_of(&self, which: impl Fn(&FileName) -> bool) -> Result<u64, DataDirError> {
        let mut total = 0;
        for name in self.journal_files()? {
            if which(&name) {
                let p = self.path.join(name.to_string());
                total += fs::metadata(&p).map_err(io_error(|| format!("cannot stat {}", p.display())))?.len();
            }
        }
        Ok(total)
    }
}

/// Bytes a snapshot buffers before a write.
const SNAPSHOT_BUFFER: usize = 1 << 20;

/// A snapshot being written: records go to a `.tmp` file, which
/// [`commit`](Self::commit) syncs and renames into place. Dropped
/// uncommitted (a failed rewrite), the `.tmp` file is removed.
#[derive(Debug)]
pub struct SnapshotFile {
    file: File,
    tmp: PathBuf,
    path: PathBuf,
    buf: Vec<u8>,
    records: u64,
    /// Bytes written to the file so far.
    bytes: u64,
}

impl SnapshotFile {
    /// Appends a put record.
    pub fn push(&mut self, record: &Record<'_>) -> Result<(), DataDirError> {
        record.encode(&mut self.buf).map_err(|e| DataDirError::Io {
            what: format!("cannot encode a record for {}", self.tmp.display()),
            error: io::Error::other(e),
        })?;
        self.records += 1;
        if self.buf.len() >= SNAPSHOT_BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DataDirError> {
        self.file.write_all(&self.buf).map_err(io_error(|| format!("cannot write {}", self.tmp.display())))?;
        self.bytes += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Records so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Ends it (its end record), syncs it, renames it into place and syncs
    /// the directory: from then on it is the base. Returns its size.
    pub fn commit(mut self, dir: &DataDir) -> Result<u64, DataDirError> {
        Record { seq: self.records, key: b"", op: Op::End }.encode(&mut self.buf).map_err(|e| DataDirError::Io {
            what: format!("cannot end {}", self.tmp.display()),
            error: io::Error::other(e),
        })?;
        self.flush()?;
        self.file.sync_all().map_err(io_error(|| format!("cannot sync {}", self.tmp.display())))?;
        fs::rename(&self.tmp, &self.path)
            .map_err(io_error(|| format!("cannot rename {} into place", self.tmp.display())))?;
        self.tmp.clear();
        dir.sync()?;
        Ok(self.bytes)
    }
}

impl Drop for SnapshotFile {
    fn drop(&mut self) {
        // Emptied by a commit; else what a failed rewrite left.
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to a new file at `path` atomically: a `.tmp` written and
/// synced, renamed, the directory synced.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), DataDirError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = File::create(&tmp).map_err(io_error(|| format!("cannot create {}", tmp.display())))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io_error(|| format!("cannot write {}", tmp.display())))?;
    fs::rename(&tmp, path).map_err(io_error(|| format!("cannot rename {}", tmp.display())))?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(|| format!("cannot sync {}", dir.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;
    use std::collections::BTreeMap;

    /// A fresh directory under the target dir's tmp (removed at the end of the test).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!("kvio-data-dir-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn put<'a>(seq: u64, key: &'a [u8], value: &'a [u8]) -> Record<'a> {
        Record { seq, key, op: Op::Put { value, flags: 0, expires: None, text: false } }
    }

    fn append(file: &mut File, records: &[Record<'_>]) {
        let mut buf = Vec::new();
        for r in records {
            r.encode(&mut buf).unwrap();
        }
        file.write_all(&buf).unwrap();
    }

    type State = BTreeMap<Vec<u8>, Vec<u8>>;

    fn state(dir: &DataDir, repair: bool) -> Result<(State, Report), DataDirError> {
        dir.recover(repair, |r| r.entries.iter().map(|e| (e.key.to_vec(), e.value.to_vec())).collect())
    }

    #[test]
    fn names_parse_back_and_nothing_else_does() {
        for name in [FileName::Snapshot { generation: 7 }, FileName::Log { generation: u64::MAX, index: 9999 }] {
            assert_eq!(FileName::parse(&name.to_string()), Some(name));
        }
        for other in
            ["LOCK", "snapshot-7.kvs", "log-00000000000000000001-1.kvl", "snapshot-00000000000000000001.kvs.tmp"]
        {
            assert_eq!(FileName::parse(other), None, "{other}");
        }
        assert!(FileName::Snapshot { generation: 2 } < FileName::Log { generation: 1, index: 0 });
    }

    #[test]
    fn a_second_server_on_the_same_directory_is_refused_with_the_first_ones_pid() {
        let tmp = TempDir::new("lock");
        let first = DataDir::open(&tmp.0).unwrap();
        let second = DataDir::open(&tmp.0).unwrap_err();
        assert!(matches!(second, DataDirError::Locked { pid: Some(p), .. } if p == std::process::id()), "{second}");
        assert!(second.to_string().contains("in use by another kvio"), "{second}");
        drop(first);
        DataDir::open(&tmp.0).expect("free once the first is gone");
    }

    /// Logs of several loops and runs, a snapshot that makes older files
    /// obsolete, torn tails cut (and truncated, so the next start says
    /// nothing), a left-over .tmp removed.
    #[test]
    fn the_state_is_the_newest_snapshot_and_the_logs_since() {
        let tmp = TempDir::new("state");
        let dir = DataDir::open(&tmp.0).unwrap();
        let mut a = dir.create_log(1, 0).unwrap();
        let mut b = dir.create_log(1, 1).unwrap();
        append(&mut a, &[put(1, b"x", b"1"), put(3, b"y", b"old")]);
        append(&mut b, &[put(2, b"x", b"2"), put(4, b"z", b"gone")]);
        // A rewrite: generation 2's log, then its snapshot.
        let mut c = dir.create_log(2, 0).unwrap();
        append(&mut c, &[Record { seq: 7, key: b"z", op: Op::Delete }, put(8, b"y", b"new")]);
        let mut snap = dir.create_snapshot(2).unwrap();
        for r in [put(5, b"x", b"2"), put(6, b"y", b"old"), put(6, b"z", b"gone")] {
            snap.push(&r).unwrap();
        }
        snap.commit(&dir).unwrap();
        // A torn tail in generation 2's log, and a .tmp a crash left.
        let mut torn = Vec::new();
        put(9, b"w", b"torn").encode(&mut torn).unwrap();
        c.write_all(&torn[..torn.len() - 3]).unwrap();
        fs::write(tmp.0.join("snapshot-00000000000000000003.kvs.tmp"), b"half").unwrap();
        drop(dir);
        let dir = DataDir::open(&tmp.0).unwrap();
        let (state, report) = state(&dir, false).unwrap();
        let want: BTreeMap<_, _> = [(b"x".to_vec(), b"2".to_vec()), (b"y".to_vec(), b"new".to_vec())].into();
        assert_eq!(state, want);
        assert_eq!((report.base, report.newest, report.files, report.max_seq), (2, 2, 2, 8));
        assert_eq!(report.torn.len(), 1);
        assert_eq!(report.torn[0].2, torn.len() - 3);
        let left: Vec<_> = dir.entries().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(left, ["LOCK", "log-00000000000000000002-0000.kvl", "snapshot-00000000000000000002.kvs"]);
        let (again, report) = super::test::state(&dir, false).unwrap();
        assert_eq!((again, report.torn.len()), (want, 0), "the cut was truncated");
    }

    /// A byte flipped in the middle of a log: refused with the file and
    /// the offset; --repair keeps the prefix and moves the rest aside.
    #[test]
    fn damage_in_the_middle_is_refused_naming_the_file_and_offset_and_repair_moves_it_aside() {
        let tmp = TempDir::new("damage");
        let dir = DataDir::open(&tmp.0).unwrap();
        let mut log = dir.create_log(1, 0).unwrap();
        let records = [put(1, b"a", b"1"), put(2, b"b", b"2"), put(3, b"c", b"3")];
        append(&mut log, &records);
        let path = tmp.0.join("log-00000000000000000001-0000.kvl");
        let second = journal::FILE_HEADER_LEN + records[0].encoded_len();
        let mut bytes = fs::read(&path).unwrap();
        bytes[second + 15] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let e = state(&dir, false).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("log-00000000000000000001-0000.kvl") && text.contains(&format!("offset {second}")),
            "{text}"
        );
        assert!(text.contains("--repair"), "{text}");
        let (state, report) = state(&dir, true).unwrap();
        assert_eq!(state, [(b"a".to_vec(), b"1".to_vec())].into());
        assert_eq!(report.repaired.len(), 1);
        let aside = &report.repaired[0].2;
        assert_eq!(fs::read(aside).unwrap(), &bytes[second..], "the rest, kept for the operator");
        assert_eq!(fs::metadata(&path).unwrap().len(), second as u64);
        assert!(super::test::state(&dir, false).is_ok(), "starts without --repair after");
    }

    #[test]
    fn a_damaged_snapshot_goes_aside_whole_under_repair() {
        let tmp = TempDir::new("snapshot");
        let dir = DataDir::open(&tmp.0).unwrap();
        let mut snap = dir.create_snapshot(1).unwrap();
        snap.push(&put(1, b"a", b"1")).unwrap();
        snap.push(&put(2, b"b", b"2")).unwrap();
        snap.commit(&dir).unwrap();
        let path = tmp.0.join("snapshot-00000000000000000001.kvs");
        let mut bytes = fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 5] ^= 1; // the end record
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(state(&dir, false), Err(DataDirError::Damaged { .. })));
        let (state, report) = state(&dir, true).unwrap();
        assert_eq!(state.len(), 2, "the records before the damage");
        assert!(!path.exists() && report.repaired[0].2.exists());
    }

    #[test]
    fn a_snapshot_dropped_before_its_commit_leaves_nothing() {
        let tmp = TempDir::new("dropped");
        let dir = DataDir::open(&tmp.0).unwrap();
        let mut snap = dir.create_snapshot(3).unwrap();
        snap.push(&put(1, b"a", b"1")).unwrap();
        drop(snap);
        let left: Vec<_> = dir.entries().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(left, ["LOCK"]);
    }
}
