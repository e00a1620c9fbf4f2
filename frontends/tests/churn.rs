//! A store that runs for ever: `kvio serve --when-full evict` with a 64 MiB
//! store, fed puts, updates of other sizes, deletes and gets over four
//! times as many keys as fit, for `KVIO_CHURN_SECONDS` (60 by default).
//!
//! Each client thread owns its keys and models them (the last value put,
//! or deleted), so every answer is checked exactly: a put is never refused;
//! a get returns the last value put under its key or a miss (an eviction),
//! never another key's value or an older one; a delete of a key the model
//! says is absent answers `NotOk`. At the stop the server reports on
//! stdout how many entries it evicted, and there must have been some.
//!
//! `ci/test` runs it for 20 s: CI builds the debug binary, and 20 s of it
//! still passes the ring's whole 64 MiB many times over (the churn puts
//! several hundred MiB); the pause bound itself is a benchmark
//! (`cargo bench -p kvio-core --bench churn`), not a timed test.

#[macro_use]
#[allow(unused_macros)]
mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use kvio_proto::KeyValueMessage;
use prost::Message;

const STORE_BYTES: usize = 64 << 20;
/// Client threads, each with its own connection and keys.
const CLIENTS: usize = 4;
/// Requests pipelined in one write.
const BATCH: usize = 16;
/// Values from a few bytes to 4 KiB: about 1 KiB on average, so the store
/// holds some 55,000 entries.
const MAX_VALUE: usize = 4096;
/// Four times as many keys as fit.
const KEYS: usize = 4 * STORE_BYTES / (12 + 16 + MAX_VALUE / 2 + 64);

fn seconds() -> u64 {
    std::env::var("KVIO_CHURN_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60)
}

/// xorshift64: deterministic per client.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn key(client: usize, k: usize) -> String {
    format!("c{client}/{k}")
}

/// Self-describing: names its key and version, so a value from another key
/// or an older put cannot pass for the right one.
fn value(client: usize, k: usize, version: u64, len: usize) -> String {
    let mut v = format!("{}:{version}:", key(client, k));
    let fill = char::from(b'a' + (version % 26) as u8);
    v.extend(std::iter::repeat_n(fill, len.saturating_sub(v.len())));
    v
}

enum Sent {
    Put,
    Get { k: usize, want: Option<(u64, usize)> },
    Delete { present: bool },
}

#[derive(Default, Debug)]
struct Tally {
    requests: u64,
    wrong: Vec<String>,
    refused: u64,
    hits: u64,
    /// Gets that missed a key the model holds: evicted.
    evicted_misses: u64,
}

fn read_msg(stream: &mut TcpStream) -> KeyValueMessage {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).expect("response length");
    let mut rest = vec![0u8; u32::from_le_bytes(len) as usize];
    stream.read_exact(&mut rest).expect("response body");
    assert_eq!(&rest[rest.len() - 5..], b"@EOF@");
    KeyValueMessage::decode(&rest[..rest.len() - 5]).expect("a KeyValueMessage")
}

fn client(addr: std::net::SocketAddr, id: usize, until: Instant) -> Tally {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let keys = KEYS / CLIENTS;
    let mut model: HashMap<usize, (u64, usize)> = HashMap::new();
    let mut version = 0u64;
    let mut tally = Tally::default();
    let mut out = Vec::new();
    let mut sent = Vec::with_capacity(BATCH);
    while Instant::now() < until {
        out.clear();
        sent.clear();
        for _ in 0..BATCH {
            let k = rng.below(keys);
            let roll = rng.below(100);
            if roll < 50 {
                // A put: a new key, or an update to another size.
                version += 1;
                let len = 8 + rng.below(MAX_VALUE);
                out.extend(msg_frame(&msg(PUT, &key(id, k), &value(id, k, version, len))));
                model.insert(k, (version, len));
                sent.push(Sent::Put);
            } else if roll < 60 {
                out.extend(msg_frame(&msg(DELETE, &key(id, k), "")));
                sent.push(Sent::Delete { present: model.remove(&k).is_some() });
            } else {
                out.extend(msg_frame(&msg(GET, &key(id, k), "")));
                sent.push(Sent::Get { k, want: model.get(&k).copied() });
            }
        }
        stream.write_all(&out).expect("send a batch");
        for s in &sent {
            let m = read_msg(&mut stream);
            tally.requests += 1;
            match *s {
                Sent::Put if m.kind == PUT && m.status == OK => {}
                Sent::Put if m.kind == PUT => tally.refused += 1,
                Sent::Put => tally.wrong.push(format!("put answered {m:?}")),
                Sent::Delete { present } => {
                    if m.kind != DELETE || !m.key.is_empty() || !m.value.is_empty() {
                        tally.wrong.push(format!("delete answered {m:?}"));
                    } else if m.status == OK && !present {
                        tally.wrong.push("deleted a key the model says is absent".into());
                    }
                }
                Sent::Get { k, want } => {
                    if m.kind != GET_RESPONSE || m.key != key(id, k) {
                        tally.wrong.push(format!("get of {} answered kind {} key {:?}", key(id, k), m.kind, m.key));
                    } else if m.status == NOT_OK {
                        tally.evicted_misses += u64::from(want.is_some());
                    } else if let Some((version, len)) = want {
                        if m.value == value(id, k, version, len) {
                            tally.hits += 1;
                        } else {
                            let head: String = m.value.chars().take(40).collect();
                            tally.wrong.push(format!("get of {} gave {head:?}, want version {version}", key(id, k)));
                        }
                    } else {
                        tally.wrong.push(format!("get of deleted or never-put {} hit", key(id, k)));
                    }
                }
            }
        }
        if tally.wrong.len() > 10 {
            break;
        }
    }
    tally
}

#[test]
fn an_evicting_store_serves_churn_over_four_times_its_keys_without_a_wrong_answer() {
    let seconds = seconds();
    let store_bytes = STORE_BYTES.to_string();
    let mut server = Server::start(
        Flavor::Epoll,
        &["--store-bytes", &store_bytes, "--store-entries", "1000000", "--when-full", "evict"],
    );
    let addr = server.addr();
    let until = Instant::now() + Duration::from_secs(seconds);
    let clients: Vec<_> = (0..CLIENTS).map(|id| thread::spawn(move || client(addr, id, until))).collect();
    let tallies: Vec<Tally> = clients.into_iter().map(|c| c.join().expect("a client thread")).collect();
    let exit = server.terminate();
    assert!(exit.status.success(), "{exit:?}");
    let requests: u64 = tallies.iter().map(|t| t.requests).sum();
    let wrong: Vec<&String> = tallies.iter().flat_map(|t| &t.wrong).collect();
    let refused: u64 = tallies.iter().map(|t| t.refused).sum();
    let hits: u64 = tallies.iter().map(|t| t.hits).sum();
    let evicted: u64 = tallies.iter().map(|t| t.evicted_misses).sum();
    eprintln!("churn: {seconds} s, {requests} requests, {hits} hits, {evicted} misses of evicted keys");
    assert!(wrong.is_empty(), "{} wrong answers, the first: {:?}", wrong.len(), &wrong[..wrong.len().min(5)]);
    assert_eq!(refused, 0, "puts refused");
    assert!(hits > 0, "no get ever hit");
    assert!(evicted > 0, "the store never filled: nothing was evicted");
    let line = exit
        .stdout
        .iter()
        .find(|l| l.starts_with("kvio serve: store "))
        .unwrap_or_else(|| panic!("no store line on stdout: {:?}", exit.stdout));
    let counted: u64 = line
        .split(' ')
        .find_map(|f| f.strip_prefix("evictions="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("store line: {line}"));
    eprintln!("churn: the server counted {counted} evictions ({line})");
    assert!(counted > 0, "{line}");
}
