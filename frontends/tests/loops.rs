//! `--threads N`: N epoll loops on SO_REUSEPORT listeners over the sharded
//! store. The server runs in-process (`kvio::serve_loops`), so each test
//! reads every loop's own counters and knows which loop a connection landed
//! on (the loop whose connection count rose across that connection's first
//! round trip); the tests then make sure they really use different loops.

#[allow(unused_macros)]
mod common;

use std::io::{self, Read};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Duration;

use common::{Client, GET, IO_TIMEOUT, NOT_OK, OK, PROCESS_TIMEOUT, check_get_response, get_frame, msg, poll_until};
use kvio::{Config, Flavor, Listener, Loops, Shutdown, Stats};

/// Connections tried before giving up on landing one on a given loop (the
/// kernel picks a listener by a hash of the addresses: each try is a coin
/// toss per loop).
const LANDING_TRIES: usize = 200;

/// A server of `n` epoll loops in this process.
struct Harness {
    addr: SocketAddr,
    loops: Arc<Loops>,
    stop: Shutdown,
    done: Receiver<io::Result<Stats>>,
}

impl Harness {
    fn start(n: usize, config: Config) -> Harness {
        let listeners = Listener::bind_many("127.0.0.1:0".parse().unwrap(), n).unwrap();
        let addr = listeners[0].local_addr();
        let loops = Arc::new(Loops::new(n, false));
        let stop = Shutdown::new().unwrap();
        let (tx, done) = mpsc::channel();
        let (shared, shutdown) = (Arc::clone(&loops), stop.clone());
        thread::spawn(move || {
            let listeners = listeners.into_iter().map(|l| vec![l]).collect();
            let _ = tx.send(kvio::serve_loops(Flavor::Epoll, listeners, &config, &shutdown, &shared));
        });
        Harness { addr, loops, stop, done }
    }

    fn connections(&self) -> Vec<u64> {
        (0..self.loops.len()).map(|i| self.loops.stats(i).connections).collect()
    }

    /// A new connection and the loop serving it (found across a round trip).
    fn connect(&self) -> (Client, usize) {
        let before = self.connections();
        let mut client = Client::connect(self.addr);
        assert_eq!(client.get("landing probe"), None);
        let after = self.connections();
        let risen: Vec<usize> = (0..after.len()).filter(|&i| after[i] != before[i]).collect();
        assert_eq!(risen.len(), 1, "one loop admitted the connection: {before:?} -> {after:?}");
        (client, risen[0])
    }

    /// One connection on each loop, in loop order.
    fn one_per_loop(&self) -> Vec<Client> {
        let mut found: Vec<Option<Client>> = (0..self.loops.len()).map(|_| None).collect();
        for _ in 0..LANDING_TRIES {
            let (client, on) = self.connect();
            found[on].get_or_insert(client);
            if found.iter().all(Option::is_some) {
                return found.into_iter().map(Option::unwrap).collect();
            }
        }
        panic!("{LANDING_TRIES} connections did not reach every loop: {:?}", self.connections());
    }

    /// Requests the stop and waits (bounded) for the totals.
    fn stop(self) -> Stats {
        self.stop.trigger();
        let stats = self.done.recv_timeout(PROCESS_TIMEOUT).expect("the loops did not stop").unwrap();
        assert_eq!(stats, self.loops.totals());
        stats
    }
}

/// Small frames, so that a largest record fits a shard's share: the store has many shards.
fn config() -> Config {
    Config { store_entries: 4096, store_bytes: 1 << 20, max_frame_len: 4096, ..Config::for_flavor(Flavor::Epoll) }
}

#[test]
fn a_put_on_one_loop_is_seen_at_once_on_every_other_loop() {
    let server = Harness::start(3, config());
    let mut clients = server.one_per_loop();
    for round in 0..20 {
        for i in 0..clients.len() {
            let (key, value) = (format!("key-{}", round % 5), format!("from loop {i} in round {round}"));
            clients[i].put_ok(&key, &value);
            // No wait: the put's response was read, so every other loop sees it.
            for (j, reader) in clients.iter_mut().enumerate().filter(|(j, _)| *j != i) {
                assert_eq!(reader.get(&key).as_deref(), Some(value.as_str()), "loop {j} reading loop {i}'s put");
            }
        }
    }
    drop(clients);
    let stats = server.stop();
    assert_eq!(stats.errors, 0);
}

#[test]
fn each_connection_gets_its_answers_in_order_while_loops_run_at_once() {
    const REQUESTS: usize = 2_000;
    let server = Harness::start(2, config());
    let clients = server.one_per_loop();
    thread::scope(|scope| {
        for (c, mut client) in clients.into_iter().enumerate() {
            scope.spawn(move || {
                // Every request in one pipelined burst, then every answer.
                let mut burst = Vec::new();
                for i in 0..REQUESTS {
                    let (key, value) = (format!("c{c}-k{}", i % 50), format!("v{i}"));
                    burst.extend(common::put_frame(&key, &value));
                    burst.extend(get_frame(&key));
                }
                client.send(&burst);
                for i in 0..REQUESTS {
                    let put = client.read_msg();
                    assert_eq!((put.kind, put.status), (3, OK), "connection {c}, request {i}");
                    let key = format!("c{c}-k{}", i % 50);
                    let got = check_get_response(&client.read_msg(), &key);
                    assert_eq!(got, Some(format!("v{i}")), "connection {c}, request {i}: out of order");
                }
            });
        }
    });
    let stats = server.stop();
    // A landing probe per connection opened, and the bursts.
    assert_eq!(stats.requests, stats.connections + 2 * 2 * REQUESTS as u64);
    assert_eq!(stats.errors, 0);
}

#[test]
fn a_full_store_refuses_a_put_whichever_loop_receives_it() {
    let config = Config { store_entries: 256, ..config() };
    assert!(kvio::sharded::ShardedStore::shard_count(config.store_limits(), 2) > 1, "the store is sharded");
    let server = Harness::start(2, config);
    let mut clients = server.one_per_loop();
    let accepted = (0..300).filter(|i| clients[0].put(&format!("k{i}"), "v") == OK).count();
    assert_eq!(accepted, 256, "exactly --store-entries, over every shard");
    for (on, client) in clients.iter_mut().enumerate() {
        assert_eq!(client.put("new key", "v"), NOT_OK, "loop {on} accepted a put into a full store");
        assert_eq!(client.get("new key"), None, "a refused put stores nothing");
        assert_eq!(client.get("k299"), None);
        // Updates still go through: they add no entry.
        client.put_ok("k0", &format!("updated on loop {on}"));
    }
    assert_eq!(clients[0].get("k0"), Some("updated on loop 1".into()));
    drop(clients);
    server.stop();
}

#[test]
fn max_connections_counts_every_loop() {
    let server = Harness::start(2, Config { max_connections: 1, ..config() });
    let (mut first, first_loop) = server.connect();
    let errors = |h: &Harness| (0..h.loops.len()).map(|i| h.loops.stats(i).errors).collect::<Vec<_>>();
    let mut refused_elsewhere = false;
    for _ in 0..LANDING_TRIES {
        let before = errors(&server);
        let mut extra = Client::connect(server.addr);
        assert!(extra.closed_by_server(), "a second connection was served with --max-connections 1");
        let after = errors(&server);
        let on: Vec<usize> = (0..after.len()).filter(|&i| after[i] != before[i]).collect();
        assert_eq!(on.len(), 1, "one loop refused it: {before:?} -> {after:?}");
        if on[0] != first_loop {
            // That loop served nobody, and still refused: the count is the server's.
            refused_elsewhere = true;
            break;
        }
    }
    assert!(refused_elsewhere, "no refused connection landed on the loop without connections");
    assert_eq!(first.get("landing probe"), None, "the first connection is still served");
    drop(first);
    // Retried: the test cannot be told when the server has seen the close.
    let served = poll_until(IO_TIMEOUT, Duration::from_millis(20), || {
        Client::connect(server.addr).try_request(&msg(GET, "k", ""))
    });
    assert!(served.is_some(), "no connection was served after the first closed");
    server.stop();
}

#[test]
fn one_stop_ends_every_loop_after_each_answers_what_it_received() {
    const PIPELINED: usize = 100;
    let server = Harness::start(2, config());
    let mut clients = server.one_per_loop();
    for (c, client) in clients.iter_mut().enumerate() {
        let burst: Vec<u8> = (0..PIPELINED).flat_map(|i| common::put_frame(&format!("c{c}-{i}"), "v")).collect();
        client.send(&burst);
    }
    // The stop comes with every burst waiting, unread, in its loop's socket.
    let loops = Arc::clone(&server.loops);
    let stats = server.stop();
    for (c, client) in clients.iter_mut().enumerate() {
        for i in 0..PIPELINED {
            assert_eq!(client.read_msg().status, OK, "connection {c}, request {i}");
        }
        client.expect_eof();
    }
    // A loop counts what it answered just after sending it: read the counts once stopped.
    let per_loop: Vec<Stats> = (0..2).map(|i| loops.stats(i)).collect();
    assert!(per_loop.iter().all(|s| s.connections >= 1 && s.requests > PIPELINED as u64), "{per_loop:?}");
    assert_eq!(stats.connections, per_loop.iter().map(|s| s.connections).sum::<u64>());
    // The probes and the bursts, each answered exactly once.
    assert_eq!(stats.requests, stats.connections + 2 * PIPELINED as u64);
    assert_eq!(stats.errors, 0);
}

#[test]
fn threads_zero_is_a_loop_per_cpu_and_sigterm_stops_them_all() {
    let cpus = thread::available_parallelism().unwrap().get();
    let mut server = common::Server::start(common::Flavor::Epoll, &["--threads", "0", "--pin"]);
    assert_eq!(server.setting("threads"), cpus.to_string());
    let mut clients: Vec<Client> = (0..8).map(|_| server.connect()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client.put_ok(&format!("k{i}"), "v");
    }
    for client in &mut clients {
        assert_eq!(client.get("k7").as_deref(), Some("v"));
    }
    let exit = server.terminate();
    assert!(exit.status.success(), "{:?}", exit.status);
    assert_eq!(exit.stopped_counts(), [8, 16, 0], "the stopped line totals every loop");
}

#[test]
fn flavors_without_loops_refuse_threads_and_pin() {
    for (flavor, flag) in [("blocking", "--threads=2"), ("threaded", "--threads=4"), ("blocking", "--pin")] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kvio"))
            .args(["serve", "--flavor", flavor, "--addr", "127.0.0.1:0", flag])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kvio serve");
        let exited = poll_until(PROCESS_TIMEOUT, Duration::from_millis(10), || child.try_wait().unwrap());
        let Some(status) = exited else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kvio serve --flavor {flavor} {flag} started instead of refusing");
        };
        let mut stderr = String::new();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        assert_eq!(status.code(), Some(2), "{flavor} {flag}: {stderr}");
        assert!(stderr.contains("epoll, uring and busy-poll only"), "{flavor} {flag}: {stderr}");
    }
}
