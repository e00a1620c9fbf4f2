//! kvio-client against a real `kvio serve` child: a server paused
//! (SIGSTOP, by PID) past the client's timeout must not make a later call
//! read the late answer of an earlier request (the client drops the
//! connection and connects again), for `Client` and `ShardedClient`
//! alike; and a frame over the server's limit is reported as the server's
//! refusal even when the server resets the connection mid-write. Every
//! socket has a timeout; a paused server is resumed whatever happens.

#[allow(unused_macros)]
mod common;

use std::time::{Duration, Instant};

use common::{Flavor, PROCESS_TIMEOUT, Server};
use kvio_client::{Client, Error, ShardedClient};
use rustix::process::{Pid, Signal, kill_process};

/// The client's timeout: short, since the server is paused on purpose.
const SHORT: Duration = Duration::from_millis(300);

/// A server stopped by SIGSTOP, continued (SIGCONT) when dropped, even if the test failed.
struct Paused(Pid);

impl Paused {
    /// Stops `server` and waits (bounded) until every one of its threads is stopped.
    fn pause(server: &Server) -> Paused {
        let pid = Pid::from_raw(server.pid() as i32).unwrap();
        kill_process(pid, Signal::STOP).expect("SIGSTOP");
        let paused = Paused(pid);
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        while !all_stopped(server.pid()) {
            assert!(Instant::now() < deadline, "kvio serve was not stopped within {PROCESS_TIMEOUT:?}");
            std::thread::yield_now();
        }
        paused
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = kill_process(self.0, Signal::CONT);
    }
}

/// Whether every thread of `pid` is in state T (stopped), from /proc.
fn all_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().all(|task| {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // The state follows the command's closing parenthesis.
        stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) == Some("T")
    })
}

/// The calls of issue 27: a put that times out while the server is
/// paused, then (resumed) a put the server refuses and a get. `put` and
/// `get` are the client under test's.
fn late_answers_are_never_read<C>(
    server: &Server,
    client: &mut C,
    put: impl Fn(&mut C, &str, &str) -> Result<(), Error>,
    get: impl Fn(&mut C, &str) -> Result<Option<String>, Error>,
) {
    put(client, "warm", "up").expect("a put before the pause");
    let paused = Paused::pause(server);
    match put(client, "a", "1") {
        Err(Error::Timeout { .. }) => {}
        other => panic!("a put to a paused server: {other:?}"),
    }
    // The server reads that put when it is resumed and answers it: on a connection the client no longer reads.
    drop(paused);
    let long_key = "k".repeat(2000);
    match put(client, &long_key, "v") {
        Err(Error::Refused { reason, .. }) => assert_eq!(reason, "key too long"),
        other => panic!("the put of a 2,000-byte key must be refused, not {other:?}"),
    }
    assert_eq!(get(client, "b").expect("a get after the refusal"), None);
    put(client, "c", "3").expect("a put");
    assert_eq!(get(client, "c").expect("a get").as_deref(), Some("3"));
}

#[test]
fn client_never_reads_a_late_answer_as_the_next_one() {
    let server = Server::start(Flavor::Epoll, &[]);
    let mut client = Client::connect(server.addr(), SHORT).unwrap();
    late_answers_are_never_read(&server, &mut client, |c, k, v| c.put(k, v), |c, k| c.get(k));
    assert!(client.is_connected());
}

#[test]
fn sharded_client_never_reads_a_late_answer_as_the_next_one() {
    let server = Server::start(Flavor::Epoll, &[]);
    let mut client = ShardedClient::new([server.addr().to_string()], SHORT);
    late_answers_are_never_read(&server, &mut client, |c, k, v| c.put(k, v), |c, k| c.get(k));
}

#[test]
fn a_frame_over_the_servers_limit_is_its_refusal_not_a_broken_pipe() {
    // 9 MB: more than the 8 MiB the server reads after refusing a frame
    // before it resets the connection, so the write fails under the client.
    let server = Server::start(Flavor::Epoll, &[]);
    let value = "v".repeat(9_000_000);
    let mut client = Client::connect(server.addr(), common::IO_TIMEOUT).unwrap();
    match client.put("k", &value) {
        Err(e @ Error::TooLong { .. }) => {
            assert!(e.to_string().contains("over the client's limit of 1,048,576 bytes"), "{e}");
            assert!(client.is_connected(), "nothing was sent");
        }
        other => panic!("over the default limit, refused before sending: {other:?}"),
    }
    // Told that the server takes 16 MiB (it does not): sent, refused, reset.
    // The reset races the write (one run in six, measured): try several.
    client.set_max_frame_len(16 << 20);
    for attempt in 0..10 {
        match client.put("k", &value) {
            Err(Error::Server { reason, .. }) => assert_eq!(reason, "frame length over maximum", "attempt {attempt}"),
            other => panic!("attempt {attempt}: the server's refusal, not {other:?}"),
        }
        assert!(!client.is_connected(), "the server closed it");
    }
    assert_eq!(client.get("k").unwrap(), None, "connected again; nothing stored");
}
