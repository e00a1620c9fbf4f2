//! The journal under SIGKILL, below the server: a child process (this
//! test binary again) writes through two loops' journaled stores with
//! `--fsync always`'s writer, says on stdout what it wrote and what each
//! flush acknowledged, and is killed at a random moment, twelve times,
//! each run recovering the last one's directory. After every kill the
//! recovered state holds, for every key, its last acknowledged write or a
//! write after it (one in flight), and nothing no run wrote.
//!
//! The server-level crash test (over TCP, every flavor) is issue 28's
//! next step; this one pins the host layer it stands on.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kvio::host::durability::{Durability, LoopJournal};
use kvio::sansio::log_writer::Fsync;
use kvio::sharded::ShardedStore;
use kvio_core::{KeyValueStore, StoreLimits};

const KEYS: usize = 40;
const CHILD: &str = "KVIO_JOURNAL_CRASH_CHILD";

fn store() -> ShardedStore {
    ShardedStore::with_shards(StoreLimits::for_frame(1 << 16, 4096, 1 << 24), 4)
}

/// The child: two loops, each its own keys, until killed. Lines:
/// `w <key> <value|->` before a write, `a <loop>` once a flush made every
/// earlier write of that loop durable.
#[test]
fn child_writes_until_killed() {
    let Some(dir) = std::env::var_os(CHILD) else { return };
    let run: u64 = std::env::var("KVIO_JOURNAL_CRASH_RUN").unwrap().parse().unwrap();
    let s = store();
    let (durability, _) = Durability::open(dir.as_ref(), Fsync::Always, false, &s, 2, 0).unwrap();
    let out = std::sync::Mutex::new(std::io::stdout());
    println!("ready");
    std::thread::scope(|scope| {
        for index in 0..2usize {
            let (d, s, out) = (&durability, &s, &out);
            scope.spawn(move || {
                let journal = LoopJournal::new(d, index, Instant::now());
                let mut store = journal.store(s);
                let mut rng = (run << 8 | index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                for i in 0u64.. {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let key = format!("t{index}-{}", rng as usize % KEYS);
                    let delete = rng >> 60 == 0;
                    let value = format!("r{run}-{i}-{}", "x".repeat((rng >> 40) as usize % 4000));
                    writeln!(out.lock().unwrap(), "w {key} {}", if delete { "-" } else { &value }).unwrap();
                    if delete {
                        store.delete(key.as_bytes());
                    } else {
                        store.put(key.as_bytes(), value.as_bytes()).unwrap();
                    }
                    if i % 3 == 0 {
                        let turn = journal.end_turn(Instant::now());
                        assert!(turn.durable >= turn.ended);
                        writeln!(out.lock().unwrap(), "a {index}").unwrap();
                    }
                }
            });
        }
    });
}

/// Per key, every write in order and how many of them were acknowledged.
#[derive(Default)]
struct History {
    writes: Vec<Option<String>>,
    acked: usize,
}

#[test]
fn every_acknowledged_write_survives_sigkill() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("kvio-journal-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut history: HashMap<String, History> = HashMap::new();
    let mut rng = 0x2545_f491_4f6c_dd1du64 ^ u64::from(std::process::id());
    let started = Instant::now();
    for run in 1..=12u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["child_writes_until_killed", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, &dir)
            .env("KVIO_JOURNAL_CRASH_RUN", run.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        // Pending: per loop, writes since its last acknowledgement.
        let mut pending: [Vec<String>; 2] = [Vec::new(), Vec::new()];
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let kill_after = 50 + rng as usize % 3000;
        let (mut seen, mut killed) = (0, false);
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut line = String::new();
        // After the kill, what the pipe still holds is read too: those
        // writes and acknowledgements happened before it.
        while {
            line.clear();
            out.read_line(&mut line).unwrap() > 0
        } {
            assert!(Instant::now() < deadline, "run {run}: the child is too slow");
            let Some(line) = line.strip_suffix('\n') else { break }; // cut by the kill: never written
            let mut words = line.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("w"), Some(key), Some(value)) => {
                    let h = history.entry(key.to_string()).or_default();
                    h.writes.push((value != "-").then(|| value.to_string()));
                    pending[usize::from(key.as_bytes()[1] - b'0')].push(key.to_string());
                }
                (Some("a"), Some(index), None) => {
                    for key in pending[index.parse::<usize>().unwrap()].drain(..) {
                        let h = history.get_mut(&key).unwrap();
                        h.acked = h.writes.len();
                    }
                }
                _ => {}
            }
            seen += 1;
            if seen == kill_after {
                child.kill().unwrap(); // SIGKILL, to our own child, by its handle
                killed = true;
            }
        }
        assert!(killed, "run {run} (pid {pid}): the child ended after {seen} lines, before the kill");
        let status = child.wait().unwrap();
        assert!(!status.success(), "run {run} (pid {pid}) ended by itself: {status}");
        let recovered = store();
        let (d, started) = Durability::open(&dir, Fsync::Always, false, &recovered, 1, 0).unwrap();
        drop(d);
        assert!(started.report.repaired.is_empty());
        let mut state = HashMap::new();
        for shard in 0..recovered.shards() {
            let mut cursor = kvio_core::VisitCursor::default();
            while !recovered.visit_shard(shard, &mut cursor, 1000, |_, k, e| {
                state.insert(String::from_utf8(k.to_vec()).unwrap(), String::from_utf8(e.value.to_vec()).unwrap());
            }) {}
        }
        for (key, h) in &history {
            let got = state.get(key).cloned();
            let from = h.acked.saturating_sub(1);
            let allowed = if h.acked == 0 { &h.writes[..] } else { &h.writes[from..] };
            let never_acked_absent = h.acked == 0 && got.is_none();
            assert!(
                never_acked_absent || allowed.contains(&got),
                "run {run}: {key} is {got:?}; acknowledged {} of {} writes, the last acknowledged {:?}",
                h.acked,
                h.writes.len(),
                h.writes.get(from)
            );
        }
        for key in state.keys() {
            assert!(history.contains_key(key), "run {run}: {key} was never written");
        }
        // The recovered state is the next run's history: what it holds is
        // now the last acknowledged write of each key.
        for (key, h) in history.iter_mut() {
            let got = state.get(key).cloned();
            let at = h.writes.iter().rposition(|w| *w == got);
            h.writes.truncate(at.map_or(0, |i| i + 1));
            if at.is_none() {
                h.writes.push(None);
            }
            h.acked = h.writes.len();
        }
    }
    // A guard against a hang, not a speed test (about 5 s here).
    assert!(started.elapsed() < Duration::from_secs(600), "took {:?}", started.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}
