//! What an operator sees: `/metrics` against every flavor under a bounded
//! load (the counters equal what the clients did, exactly; the connection
//! gauge back to 0; a store-full refusal and an eviction under their
//! reason), `kvio stats` on it, and the log at the default level: no line
//! per connection, a flood of refusals in a few rate-limited lines.

#[macro_use]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use common::*;
use kvio::app::stats_command::{Scrape, scrape};

per_flavor!([blocking: Blocking, threaded: Threaded, busy_poll: BusyPoll, epoll: Epoll, epoll_threads2: EpollLoops, uring: Uring] [
    metrics_count_exactly_what_the_clients_did,
    deletes_and_evictions_are_exported,
]);

/// Clients of the load (one at a time against `blocking`).
const CLIENTS: usize = 4;
/// Rounds per client: one put of a new key, one get of it, one get of an absent key.
const ROUNDS: usize = 50;
/// Entries the store holds: fewer than the puts, so some are refused as full.
const ENTRIES: usize = 120;

/// What the clients did, as they saw it.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Did {
    requests: u64,
    stored: u64,
    full: u64,
    hits: u64,
    misses: u64,
    sent: u64,
    received: u64,
}

impl Did {
    fn add(mut self, o: Did) -> Did {
        self.requests += o.requests;
        self.stored += o.stored;
        self.full += o.full;
        self.hits += o.hits;
        self.misses += o.misses;
        self.sent += o.sent;
        self.received += o.received;
        self
    }
}

/// One request, counted in bytes both ways; returns the response.
fn request(client: &mut Client, did: &mut Did, kind: u32, key: &str, value: &str) -> kvio_proto::KeyValueMessage {
    use prost::Message;
    let frame = msg_frame(&msg(kind, key, value));
    client.send(&frame);
    let response = client.read_frame();
    did.requests += 1;
    did.sent += frame.len() as u64;
    did.received += response.len() as u64;
    kvio_proto::KeyValueMessage::decode(payload(&response)).expect("a KeyValueMessage")
}

fn load(addr: SocketAddr, id: usize) -> Did {
    let mut client = Client::connect(addr);
    let mut did = Did::default();
    for round in 0..ROUNDS {
        let key = format!("c{id}-k{round}");
        let stored = request(&mut client, &mut did, PUT, &key, "value").status == OK;
        if stored {
            did.stored += 1
        } else {
            did.full += 1
        }
        let got = request(&mut client, &mut did, GET, &key, "");
        assert_eq!(got.status == OK, stored, "{key}: {got:?}");
        if stored {
            did.hits += 1
        } else {
            did.misses += 1
        }
        let absent = request(&mut client, &mut did, GET, &format!("absent-{id}-{round}"), "");
        assert_ne!(absent.status, OK);
        did.misses += 1;
    }
    did
}

/// Starts `flavor` with `--metrics` on a free port; returns it and the metrics HOST:PORT.
fn start(flavor: Flavor, args: &[&str]) -> (Server, String) {
    let mut all = vec!["--metrics", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let server = Server::start(flavor, &all);
    let line = server.next_stdout_line();
    let url = line.strip_prefix("kvio serve: metrics=http://").unwrap_or_else(|| panic!("metrics line: {line:?}"));
    let addr = url.strip_suffix("/metrics").unwrap_or_else(|| panic!("metrics line: {line:?}")).to_owned();
    (server, addr)
}

fn metrics(addr: &str) -> Scrape {
    scrape(addr, IO_TIMEOUT).unwrap_or_else(|e| panic!("scrape {addr}: {e}"))
}

/// Scrapes until `done` holds (the server counts a request or a close just
/// after the client saw its effect), bounded; then the last scrape.
fn scrape_until(addr: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let last = poll_until(IO_TIMEOUT, Duration::from_millis(10), || Some(metrics(addr)).filter(&done));
    last.unwrap_or_else(|| metrics(addr))
}

fn metrics_count_exactly_what_the_clients_did(flavor: Flavor) {
    let entries = ENTRIES.to_string();
    let (mut server, at) = start(flavor, &["--store-entries", &entries, "--max-client-memory", "64K"]);
    let addr = server.addr();
    let during = thread::spawn({
        let at = at.clone();
        // A scrape while the load runs: the endpoint answers beside the loops.
        move || metrics(&at)
    });
    let did = if flavor.serves_concurrently() {
        let clients: Vec<_> = (0..CLIENTS).map(|id| thread::spawn(move || load(addr, id))).collect();
        clients.into_iter().map(|c| c.join().expect("client")).fold(Did::default(), Did::add)
    } else {
        (0..CLIENTS).map(|id| load(addr, id)).fold(Did::default(), Did::add)
    };
    assert!(during.join().expect("scrape during the load").sum("kvio_info", "") == 1.0);
    assert!(did.full > 0 && did.stored > 0, "the load fills the store: {did:?}");

    let after = scrape_until(&at, |s| {
        s.sum("kvio_connections_open", "") == 0.0 && s.sum("kvio_requests_total", "") >= did.requests as f64
    });
    let figure = |name: &str, label: &str| after.sum(name, label) as u64;
    assert_eq!(figure("kvio_requests_total", ""), did.requests, "requests");
    assert_eq!(figure("kvio_puts_total", "result=\"stored\""), did.stored, "puts stored");
    assert_eq!(figure("kvio_puts_total", "result=\"store_full\""), did.full, "puts refused: store full");
    assert_eq!(figure("kvio_gets_total", "result=\"hit\""), did.hits, "get hits");
    assert_eq!(figure("kvio_gets_total", "result=\"miss\""), did.misses, "get misses");
    assert_eq!(figure("kvio_received_bytes_total", ""), did.sent, "bytes the clients sent");
    assert_eq!(figure("kvio_sent_bytes_total", ""), did.received, "bytes the clients received");
    assert_eq!(figure("kvio_store_entries", ""), did.stored, "every stored key is a new entry");
    assert_eq!(figure("kvio_store_entries_capacity", ""), ENTRIES as u64);
    assert_eq!(figure("kvio_connections_open", ""), 0, "the clients left");
    assert_eq!(figure("kvio_connections_accepted_total", ""), CLIENTS as u64);
    assert_eq!(figure("kvio_connections_closed_total", "reason=\"peer\""), CLIENTS as u64);
    assert_eq!(figure("kvio_client_memory_limit_bytes", ""), 64 * 1024);
    if flavor == Flavor::EpollLoops {
        let loops = after.sum("kvio_loops", "");
        assert_eq!(loops, 2.0);
        let per_loop = after.sum("kvio_requests_total", "loop=\"0\"") + after.sum("kvio_requests_total", "loop=\"1\"");
        assert_eq!(per_loop as u64, did.requests, "per-loop labels add up");
    }

    // One client holds a partial frame over the 64 KiB cap: evicted.
    let mut greedy = TcpStream::connect(addr).unwrap();
    greedy.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    greedy.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut partial = (1u32 << 20).to_le_bytes().to_vec();
    partial.resize(200 * 1024, b'x');
    // Evicted mid-write, the socket may be reset under the writer.
    let _ = greedy.write_all(&partial);
    let mut rest = Vec::new();
    let _ = greedy.read_to_end(&mut rest);
    drop(greedy);
    let evicted = scrape_until(&at, |s| s.sum("kvio_connections_closed_total", "reason=\"memory_eviction\"") >= 1.0);
    assert_eq!(evicted.sum("kvio_connections_closed_total", "reason=\"memory_eviction\""), 1.0, "one eviction");
    assert_eq!(evicted.sum("kvio_connections_open", ""), 0.0);
    assert!(evicted.sum("process_resident_memory_bytes", "") > 0.0);
    assert!(evicted.sum("process_open_fds", "") > 0.0);

    let exit = server.terminate();
    assert_eq!(exit.status.code(), Some(0));
    let [connections, requests, _] = exit.stopped_counts();
    assert_eq!((connections, requests), (CLIENTS as u64 + 1, did.requests));
    // The test reads stderr on a thread of its own: wait (bounded) for the last lines to come through.
    let stderr = settled_stderr(&server, "not shown (rate-limited)");
    assert!(stderr.iter().any(|l| l.contains("INFO") && l.contains("stopping")), "{stderr:?}");
    // The burst takes well under the 5 s window; a slow machine may see a second line.
    let full_lines: Vec<&String> =
        stderr.iter().filter(|l| l.contains("WARN") && l.contains("refusing puts: store full")).collect();
    assert!((1..=2).contains(&full_lines.len()), "one rate-limited line for the burst: {stderr:?}");
    assert!(!full_lines[0].contains(" more like it"), "nothing came before the first line: {stderr:?}");
    // Every refusal is in the log exactly once: a line, a line's "(N more
    // like it ...)", or the count at exit, whichever lines there are.
    let number_before = |line: &str, words: &str| -> u64 {
        let Some(at) = line.find(words) else { return 0 };
        let digits = line[..at].rsplit(|c: char| !c.is_ascii_digit()).next().unwrap_or("");
        digits.parse().unwrap_or_else(|_| panic!("no count before {words:?} in {line:?}"))
    };
    let in_lines: u64 = full_lines.iter().map(|l| 1 + number_before(l, " more like it not shown")).sum();
    let at_exit: u64 = stderr.iter().map(|l| number_before(l, " more puts refused: store full not shown")).sum();
    assert_eq!(in_lines + at_exit, did.full, "the counts the log states: {stderr:?}");
}

/// Under `--when-full evict`: deletes by result, and the store's evictions,
/// which match the store line every flavor prints at the stop.
fn deletes_and_evictions_are_exported(flavor: Flavor) {
    const PUTS: u64 = 6;
    let (mut server, at) = start(flavor, &["--store-entries", "4", "--when-full", "evict"]);
    let mut client = server.connect();
    for i in 0..PUTS {
        client.put_ok(&format!("k{i}"), "v");
    }
    // The key put last is never the one evicted by the puts before it.
    assert!(client.delete(&format!("k{}", PUTS - 1)), "the last key is there");
    assert!(!client.delete("absent"));
    drop(client);
    let s = scrape_until(&at, |s| s.sum("kvio_requests_total", "") == (PUTS + 2) as f64);
    assert_eq!(s.sum("kvio_deletes_total", "result=\"deleted\""), 1.0, "deleted");
    assert_eq!(s.sum("kvio_deletes_total", "result=\"not_found\""), 1.0, "not found");
    assert_eq!(s.sum("kvio_puts_total", "result=\"stored\""), PUTS as f64, "evict makes room: every put stored");
    let (entries, evictions) = (s.sum("kvio_store_entries", "") as u64, s.sum("kvio_store_evictions_total", "") as u64);
    assert!(evictions >= PUTS - 4, "at most 4 entries: {evictions} evictions");
    assert_eq!(entries + evictions + 1, PUTS, "every put is an entry, an eviction or the deleted key");
    let (code, out, err) = kvio_stats(&["--metrics", &at]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("deletes          2 (deleted 1, not found 1)\n"), "{out}");
    assert!(out.contains(&format!("store evictions  {evictions}\n")), "{out}");

    let exit = server.terminate();
    assert_eq!(exit.status.code(), Some(0));
    // Every flavor prints the store line, just before the stopped line.
    let at = exit.stdout.iter().position(|l| l.starts_with("kvio serve: store "));
    let at = at.unwrap_or_else(|| panic!("{flavor:?} printed no store line: {:?}", exit.stdout));
    assert_eq!(
        exit.stdout[at],
        format!("kvio serve: store entries={entries} evictions={evictions}"),
        "the store line agrees"
    );
    assert!(exit.stdout[at + 1].starts_with("kvio serve: stopped "), "{:?}", exit.stdout);
}

/// Issue 27: under `--when-full evict`, the one put refused as full is an
/// entry larger than the whole store; its warning says so instead of
/// advising the `--when-full evict` the server already runs.
fn an_entry_larger_than_the_store_is_named_so_under_evict(flavor: Flavor) {
    let (mut server, at) = start(flavor, &["--store-bytes", "4096", "--when-full", "evict"]);
    let mut client = server.connect();
    client.put_ok("small", "v");
    let response = client.request(&msg(PUT, "big", &"x".repeat(5000)));
    assert_eq!((response.status, response.value.as_str()), (NOT_OK, "store full"), "{response:?}");
    assert_eq!(client.get("small").as_deref(), Some("v"), "nothing stored was lost");
    drop(client);
    let s = scrape_until(&at, |s| s.sum("kvio_requests_total", "") == 3.0);
    assert_eq!(s.sum("kvio_puts_total", "result=\"store_full\""), 1.0);
    let exit = server.terminate();
    assert_eq!(exit.status.code(), Some(0));
    let stderr = settled_stderr(&server, "stopping");
    let warned: Vec<&String> = stderr.iter().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warned.len(), 1, "{stderr:?}");
    assert!(warned[0].contains("the entry is larger than the whole store can hold"), "{stderr:?}");
    assert!(!warned[0].contains("--when-full evict makes room"), "{stderr:?}");
}

#[test]
fn an_entry_larger_than_the_store_is_named_so_under_evict_epoll() {
    an_entry_larger_than_the_store_is_named_so_under_evict(Flavor::Epoll);
}

#[test]
fn an_entry_larger_than_the_store_is_named_so_under_evict_epoll_threads2() {
    an_entry_larger_than_the_store_is_named_so_under_evict(Flavor::EpollLoops);
}

/// The server's stderr once a line containing `last` has been read (bounded).
fn settled_stderr(server: &Server, last: &str) -> Vec<String> {
    let seen = poll_until(IO_TIMEOUT, Duration::from_millis(10), || {
        let lines = server.stderr_lines();
        lines.iter().any(|l| l.contains(last)).then_some(lines)
    });
    seen.unwrap_or_else(|| server.stderr_lines())
}

/// The endpoint answers GET /metrics only, and answers promptly whatever the client sends.
#[test]
fn the_endpoint_serves_get_metrics_only() {
    let (_server, at) = start(Flavor::Epoll, &[]);
    let ask = |request: &[u8]| {
        let mut stream = TcpStream::connect(&at).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.write_all(request).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    let ok = ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(ok.contains("Content-Type: text/plain; version=0.0.4"), "{ok}");
    assert!(ok.contains("# TYPE kvio_requests_total counter\n"), "{ok}");
    assert!(ask(b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
    assert!(ask(b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
    assert!(ask(b"\x00\x01garbage\r\n\r\n").starts_with("HTTP/1.1 400 "));
    // A client that sends half a request and waits is cut within the deadline.
    let started = std::time::Instant::now();
    let silent = ask(b"GET /metr");
    assert!(silent.starts_with("HTTP/1.1 400 "), "{silent}");
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    // And is still served afterwards.
    assert!(ask(b"GET /metrics HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 200 OK\r\n"));
}

/// At the default level, 10,000 connections that open and close print no line each.
#[test]
fn ten_thousand_connections_print_no_line_each() {
    let (mut server, at) = start(Flavor::Epoll, &[]);
    for _ in 0..10_000 {
        let stream = TcpStream::connect(server.addr()).expect("connect");
        drop(stream);
    }
    let after = scrape_until(&at, |s| s.sum("kvio_connections_closed_total", "") >= 10_000.0);
    assert_eq!(after.sum("kvio_connections_accepted_total", ""), 10_000.0);
    assert_eq!(after.sum("kvio_connections_open", ""), 0.0);
    server.terminate();
    // Any line per connection would come before `stopping`.
    let stderr = settled_stderr(&server, "stopping");
    assert!(stderr.len() <= 3, "start, stopping (and nothing per connection): {stderr:?}");
    assert!(!stderr.iter().any(|l| l.contains("127.0.0.1:") && l.contains("closed")), "{stderr:?}");
}

fn kvio_stats(args: &[&str]) -> (Option<i32>, String, String) {
    kvio(&[&["stats"], args].concat())
}

/// `kvio ARGS`, killed (and the test failed) if it does not exit in time.
fn kvio(args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvio"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kvio stats");
    // Bounded: a stats command that hangs is killed and the test fails.
    if poll_until(PROCESS_TIMEOUT, Duration::from_millis(20), || child.try_wait().unwrap()).is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("kvio {args:?} did not exit within {PROCESS_TIMEOUT:?}");
    }
    let output = child.wait_with_output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}

#[test]
fn kvio_stats_shows_the_figures_after_a_known_load() {
    let (_server, at) = start(Flavor::Epoll, &["--store-entries", "10"]);
    let mut client = _server.connect();
    for i in 0..12 {
        client.put(&format!("k{i}"), "v");
    }
    assert_eq!(client.get("k1").as_deref(), Some("v"));
    assert_eq!(client.get("nope"), None);
    drop(client);
    scrape_until(&at, |s| s.sum("kvio_connections_open", "") == 0.0 && s.sum("kvio_requests_total", "") == 14.0);
    let (code, out, err) = kvio_stats(&["--metrics", &at]);
    assert_eq!(code, Some(0), "{err}");
    for row in [
        "requests         14\n",
        "gets             2 (hits 1, misses 1, hit ratio 50.0%)\n",
        "puts             12 (stored 10, too big 0, store full 2)\n",
        "store entries    10 of 10 (100.0%)\n",
        "connections      0 open (limit 10000)\n",
        "accepted         1\n",
    ] {
        assert!(out.contains(row), "{row:?} missing:\n{out}");
    }
    assert!(out.contains("flavor epoll"), "{out}");

    let (code, out, err) = kvio_stats(&["--metrics", &at, "--watch", "1", "--count", "2"]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two lines: {out}");
    assert!(lines[0].contains("req/s") && lines[0].contains("hit%"), "{out}");
    let fields: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(fields[0], "0", "no requests during the watch: {out}");
    assert_eq!(fields[4], "10", "store entries: {out}");
}

#[test]
fn kvio_stats_with_no_server_exits_2() {
    // A port nobody listens on: bound, then closed.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let (code, _, err) = kvio_stats(&["--metrics", &free, "--timeout", "2"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&format!("kvio stats: nothing answers at {free}")), "{err}");
    let (code, _, err) = kvio_stats(&["--metrics", &free, "--watch", "1", "--count", "1", "--timeout", "2"]);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn a_bad_log_level_is_refused_before_listening() {
    let (code, stdout, stderr) = kvio(&["serve", "--addr", "127.0.0.1:0", "--log-level", "[nonsense"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.starts_with("kvio serve: invalid --log-level \"[nonsense\""), "{stderr}");
    assert!(stdout.is_empty(), "no start-up line: {stdout:?}");
}
