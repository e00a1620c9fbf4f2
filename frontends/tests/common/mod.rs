//! The black-box harness shared by the integration tests: it starts the
//! `kvio` binary as a child process (one server per test), speaks the wire
//! protocol to it over raw TCP, and runs every behaviour against each flavor.
//!
//! Every wait is bounded: the start-up line and the exit are awaited through
//! channels with timeouts, and every socket has read and write timeouts, so a
//! broken server fails a test instead of hanging the suite.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use kvio_core::FrameParser;
use kvio_core::frame::{Parse, encode_frame};
use kvio_proto::KeyValueMessage;
use prost::Message;

pub mod text;

/// How long a server may take to print its start-up line or to exit.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(10);
/// How many of a server's stderr lines are kept for assertions and failure reports.
pub const STDERR_LINES_KEPT: usize = 1000;
/// Read and write timeout of every test socket.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

pub const GET: u32 = 1;
pub const GET_RESPONSE: u32 = 2;
pub const PUT: u32 = 3;
pub const DELETE: u32 = 4;
pub const OK: i32 = 0;
/// The reasons a refused put carries in its `value` (docs/protocol.md).
pub const PUT_REFUSALS: [&str; 3] = ["key too long", "value too long", "store full"];
pub const NOT_OK: i32 = 1;

/// Generates one `#[test]` per listed flavor for each listed behaviour:
/// `per_flavor!([blocking: Blocking, epoll: Epoll] [put_then_get, ...]);`
/// expands to `mod blocking { #[test] fn put_then_get() { super::put_then_get(Flavor::Blocking) } ... }`.
macro_rules! per_flavor {
    ([$($module:ident : $flavor:ident),* $(,)?] $tests:tt) => {
        $( per_flavor!(@one $module $flavor $tests); )*
    };
    (@one $module:ident $flavor:ident [$($test:ident),* $(,)?]) => {
        mod $module {
            $(
                #[test]
                fn $test() {
                    let flavor = $crate::common::Flavor::$flavor;
                    if flavor.runs_here(stringify!($test)) {
                        super::$test(flavor)
                    }
                }
            )*
        }
    };
}

/// The five servers behind `kvio serve --flavor`, and the single-thread
/// drivers with two loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Blocking,
    Threaded,
    BusyPoll,
    /// `--flavor busy-poll --threads 2`.
    BusyPollLoops,
    Epoll,
    /// `--flavor epoll --threads 2`: two loops over the sharded store.
    EpollLoops,
    Uring,
    /// `--flavor uring --threads 2`.
    UringLoops,
}

impl Flavor {
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Blocking => "blocking",
            Flavor::Threaded => "threaded",
            Flavor::BusyPoll | Flavor::BusyPollLoops => "busy-poll",
            Flavor::Epoll | Flavor::EpollLoops => "epoll",
            Flavor::Uring | Flavor::UringLoops => "uring",
        }
    }

    /// Whether `test` runs on this flavor here: every flavor but uring
    /// always does; where the kernel refuses io_uring, a uring test fails
    /// unless `KVIO_URING_REFUSED` says why (then it is skipped, saying so).
    pub fn runs_here(self, test: &str) -> bool {
        match self {
            Flavor::Uring | Flavor::UringLoops => kvio::uring::runs_here(&format!("{test} on {}", self.name())),
            _ => true,
        }
    }

    /// `--threads` of this server.
    pub fn threads(self) -> usize {
        if matches!(self, Flavor::EpollLoops | Flavor::UringLoops | Flavor::BusyPollLoops) { 2 } else { 1 }
    }

    /// A readiness or completion event loop (one or more), which holds 10,000 connections.
    pub fn is_event_loop(self) -> bool {
        matches!(self, Flavor::Epoll | Flavor::EpollLoops | Flavor::Uring | Flavor::UringLoops)
    }

    /// Epoll, with one loop or more.
    pub fn is_epoll(self) -> bool {
        matches!(self, Flavor::Epoll | Flavor::EpollLoops)
    }

    /// False for `blocking`, which serves one connection at a time: a second
    /// connection waits in the listen backlog until the first one ends.
    pub fn serves_concurrently(self) -> bool {
        self != Flavor::Blocking
    }

    /// The contract's default `--idle-timeout-ms`.
    pub fn default_idle_timeout_ms(self) -> u64 {
        match self {
            Flavor::Blocking => 200,
            _ => 300_000,
        }
    }
}

/// A busy-poll server keeps a core busy by design; on a 2-core CI machine two
/// of them at once would starve everything else (including the timing
/// assertions of other tests), so a test binary runs one at a time.
static BUSY_POLL: Mutex<()> = Mutex::new(());

/// One `kvio serve` child process, killed (SIGKILL by PID) on drop.
#[derive(Debug)]
pub struct Server {
    pub flavor: Flavor,
    child: Child,
    addr: SocketAddr,
    settings: Vec<(String, String)>,
    stdout: Receiver<String>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// The RESP and memcached listeners, from the start-up lines after the
    /// first (`kvio serve: resp=ADDR`), when [`Server::start_protocols`] asked.
    listeners: Vec<(String, SocketAddr)>,
    exited: bool,
    _busy_poll: Option<MutexGuard<'static, ()>>,
}

/// How a server ended after SIGTERM.
#[derive(Debug)]
pub struct Exit {
    pub status: ExitStatus,
    /// Every stdout line after the start-up line.
    pub stdout: Vec<String>,
}

impl Exit {
    /// The numbers of the final `kvio serve: stopped connections=<n> requests=<n> errors=<n>` line.
    pub fn stopped_counts(&self) -> [u64; 3] {
        let line = self
            .stdout
            .iter()
            .find(|l| l.starts_with("kvio serve: stopped "))
            .unwrap_or_else(|| panic!("no `kvio serve: stopped` line on stdout: {:?}", self.stdout));
        let fields: Vec<&str> = line["kvio serve: stopped ".len()..].split(' ').collect();
        let mut counts = [0; 3];
        assert_eq!(fields.len(), 3, "stopped line: {line:?}");
        for ((field, name), count) in fields.iter().zip(["connections", "requests", "errors"]).zip(&mut counts) {
            let (key, value) = field.split_once('=').unwrap_or_else(|| panic!("stopped line: {line:?}"));
            assert_eq!(key, name, "stopped line: {line:?}");
            *count = value.parse().unwrap_or_else(|_| panic!("stopped line: {line:?}"));
        }
        counts
    }
}

impl Server {
    /// `kvio serve --flavor F --addr 127.0.0.1:0 <args>`, once it listens.
    pub fn start(flavor: Flavor, args: &[&str]) -> Server {
        let busy_poll = matches!(flavor, Flavor::BusyPoll | Flavor::BusyPollLoops)
            .then(|| BUSY_POLL.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        let threads = format!("--threads={}", flavor.threads());
        let mut child = Command::new(env!("CARGO_BIN_EXE_kvio"))
            .args(["serve", "--flavor", flavor.name(), "--addr", "127.0.0.1:0"])
            .args((flavor.threads() > 1).then_some(threads))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kvio serve");

        let (tx, stdout) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let err = BufReader::new(child.stderr.take().unwrap());
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            // Keep the first lines only: a server stuck in a loop may log without end.
            for (n, line) in err.lines().enumerate() {
                let Ok(line) = line else { break };
                if n < STDERR_LINES_KEPT {
                    sink.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(line);
                }
            }
        });

        let mut server = Server {
            flavor,
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            settings: Vec::new(),
            stdout,
            stderr,
            listeners: Vec::new(),
            exited: false,
            _busy_poll: busy_poll,
        };
        let line = match server.stdout.recv_timeout(PROCESS_TIMEOUT) {
            Ok(line) => line,
            Err(e) => panic!(
                "kvio serve --flavor {} {args:?}: no start-up line within {PROCESS_TIMEOUT:?} ({e}); stderr: {:?}",
                flavor.name(),
                server.stderr_lines()
            ),
        };
        server.settings = parse_startup_line(&line);
        assert_eq!(server.setting("flavor"), flavor.name(), "start-up line: {line}");
        if !args.iter().any(|a| a.starts_with("--threads")) {
            assert_eq!(server.setting("threads"), flavor.threads().to_string(), "start-up line: {line}");
        }
        server.addr = server.setting("addr").parse().unwrap_or_else(|_| panic!("start-up line: {line}"));
        assert!(server.addr.ip().is_loopback() && server.addr.port() != 0, "start-up line: {line}");
        server
    }

    /// `kvio serve --flavor F --addr 127.0.0.1:0 --resp 127.0.0.1:0
    /// --memcache 127.0.0.1:0 <args>`, once the start-up lines after the
    /// first have said where the RESP and memcached listeners are.
    pub fn start_protocols(flavor: Flavor, args: &[&str]) -> Server {
        let mut all = vec!["--resp", "127.0.0.1:0", "--memcache", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut server = Server::start(flavor, &all);
        // The `--metrics` line, if asked, comes before the listeners' lines.
        while server.listeners.len() < 2 {
            let line = server.next_stdout_line();
            if line.starts_with("kvio serve: metrics=") {
                continue;
            }
            let rest = line.strip_prefix("kvio serve: ").unwrap_or_else(|| panic!("start-up line: {line:?}"));
            let (protocol, addr) = rest.split_once('=').unwrap_or_else(|| panic!("start-up line: {line:?}"));
            let addr: SocketAddr = addr.parse().unwrap_or_else(|_| panic!("start-up line: {line:?}"));
            assert!(addr.ip().is_loopback() && addr.port() != 0, "start-up line: {line:?}");
            server.listeners.push((protocol.to_owned(), addr));
        }
        server
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address a listener announced (`resp`, `memcache`).
    pub fn listener(&self, protocol: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(p, _)| p == protocol)
            .map(|(_, addr)| *addr)
            .unwrap_or_else(|| panic!("no {protocol} listener announced: {:?}", self.listeners))
    }

    /// A connection to the RESP listener.
    pub fn resp(&self) -> text::TextClient {
        text::TextClient::connect(self.listener("resp"))
    }

    /// A connection to the memcached listener.
    pub fn memcache(&self) -> text::TextClient {
        text::TextClient::connect(self.listener("memcache"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A value of the start-up line (`flavor`, `addr`, `max_frame_len`, ...).
    pub fn setting(&self, key: &str) -> &str {
        self.settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {key} in the start-up line"))
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// The next stdout line after the start-up line (e.g. the `--metrics` address), bounded.
    pub fn next_stdout_line(&self) -> String {
        self.stdout.recv_timeout(PROCESS_TIMEOUT).expect("no further stdout line")
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// The server's resident memory, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read /proc/PID/status");
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/PID/status");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Sends SIGTERM to the server's PID.
    pub fn signal_term(&self) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("kill(SIGTERM)");
    }

    /// Waits (bounded) for the process to close its stdout, i.e. to exit, and reaps it.
    pub fn wait_exit(&mut self) -> Exit {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        let mut stdout = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => stdout.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("kvio serve did not exit within {PROCESS_TIMEOUT:?}; stdout so far: {stdout:?}")
                }
            }
        }
        // stdout closed: the process is exiting; reaping it cannot block for long.
        let status = self.child.wait().expect("wait");
        self.exited = true;
        Exit { status, stdout }
    }

    /// SIGKILL (to our own child, by its handle), and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.exited = true;
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(&mut self) -> Exit {
        self.signal_term();
        self.wait_exit()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!("--- kvio serve --flavor {} stderr ---", self.flavor.name());
            for line in self.stderr_lines() {
                eprintln!("{line}");
            }
        }
    }
}

/// The keys of the start-up line, in the contract's order.
pub const STARTUP_KEYS: [&str; 10] = [
    "flavor",
    "addr",
    "max_frame_len",
    "store_entries",
    "store_bytes",
    "max_connections",
    "idle_timeout_ms",
    "output_limit",
    "max_client_memory",
    "threads",
];

/// Checks the start-up line's shape and returns its `key=value` pairs.
pub fn parse_startup_line(line: &str) -> Vec<(String, String)> {
    let rest = line.strip_prefix("kvio serve: ").unwrap_or_else(|| panic!("bad start-up line: {line:?}"));
    let pairs: Vec<(String, String)> = rest
        .split(' ')
        .map(|field| {
            let (k, v) = field.split_once('=').unwrap_or_else(|| panic!("bad start-up line: {line:?}"));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, STARTUP_KEYS, "start-up line: {line:?}");
    pairs
}

/// A test connection: raw bytes out, frames in, every operation under [`IO_TIMEOUT`].
#[derive(Debug)]
pub struct Client {
    pub stream: TcpStream,
    parser: FrameParser,
    payload: Vec<u8>,
    input: Vec<u8>,
    at: usize,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Client::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream, parser: FrameParser::new(u32::MAX), payload: Vec::new(), input: Vec::new(), at: 0 }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap_or_else(|e| panic!("send {} bytes: {e}", bytes.len()));
    }

    /// The next response frame, raw (header, payload, footer).
    pub fn read_frame(&mut self) -> Vec<u8> {
        self.try_read_frame().expect("connection closed while a response was expected")
    }

    /// The next response frame, or `None` if the server closed the
    /// connection (FIN or reset) before a whole frame came.
    pub fn try_read_frame(&mut self) -> Option<Vec<u8>> {
        loop {
            if self.at < self.input.len() {
                let pushed = self.parser.push(&self.input[self.at..], &mut self.payload);
                let (consumed, status) = pushed.unwrap_or_else(|e| panic!("the server sent a bad frame: {e}"));
                let frame = match status {
                    Parse::Complete(payload) => Some(frame(payload)),
                    Parse::Partial => None,
                };
                self.at += consumed;
                if frame.is_some() {
                    return frame;
                }
            }
            self.input.clear();
            self.at = 0;
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => return None,
                Err(e) => panic!("reading a response: {e}"),
            }
        }
    }

    /// Sends `request` and returns the response, or `None` if the server
    /// closed the connection instead of answering.
    pub fn try_request(&mut self, request: &KeyValueMessage) -> Option<KeyValueMessage> {
        self.stream.write_all(&msg_frame(request)).ok()?;
        let frame = self.try_read_frame()?;
        Some(KeyValueMessage::decode(payload(&frame)).unwrap_or_else(|e| panic!("not a KeyValueMessage: {e}")))
    }

    /// The next response, decoded.
    pub fn read_msg(&mut self) -> KeyValueMessage {
        let frame = self.read_frame();
        KeyValueMessage::decode(payload(&frame)).unwrap_or_else(|e| panic!("response is not a KeyValueMessage: {e}"))
    }

    pub fn request(&mut self, msg: &KeyValueMessage) -> KeyValueMessage {
        self.send(&msg_frame(msg));
        self.read_msg()
    }

    /// `PutOrUpdate`; returns the status after checking the response's
    /// shape: no key, and a `value` only on a refusal, saying why.
    pub fn put(&mut self, key: &str, value: &str) -> i32 {
        let response = self.request(&msg(PUT, key, value));
        assert_eq!((response.kind, response.key.as_str()), (PUT, ""), "{response:?}");
        match response.status {
            OK => assert_eq!(response.value, "", "{response:?}"),
            _ => assert!(PUT_REFUSALS.contains(&response.value.as_str()), "{response:?}"),
        }
        response.status
    }

    pub fn put_ok(&mut self, key: &str, value: &str) {
        assert_eq!(self.put(key, value), OK, "put {key:?}");
    }

    /// `Get`; returns the value if found, after checking the response's shape.
    pub fn get(&mut self, key: &str) -> Option<String> {
        let response = self.request(&msg(GET, key, ""));
        check_get_response(&response, key)
    }

    /// `Delete`; true when the key was there, after checking the response's
    /// shape: kind 4, no key, no value.
    pub fn delete(&mut self, key: &str) -> bool {
        let response = self.request(&msg(DELETE, key, ""));
        assert_eq!((response.kind, response.key.as_str(), response.value.as_str()), (DELETE, "", ""), "{response:?}");
        assert!(response.status == OK || response.status == NOT_OK, "{response:?}");
        response.status == OK
    }

    /// Asserts the server closed the connection cleanly (FIN, no more bytes).
    pub fn expect_eof(&mut self) {
        assert_eq!(self.input.len(), self.at, "unread response bytes before the expected close");
        let mut byte = [0u8; 1];
        loop {
            match self.stream.read(&mut byte) {
                Ok(0) => return,
                Ok(_) => panic!("expected the server to close, got more bytes"),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("expected the server to close the connection, got: {e}"),
            }
        }
    }

    /// True if the server closed (FIN or reset) within the socket's read timeout;
    /// false on a timeout. Panics if the server sends bytes.
    pub fn closed_by_server(&mut self) -> bool {
        let mut byte = [0u8; 1];
        loop {
            match self.stream.read(&mut byte) {
                Ok(0) => return true,
                Ok(_) => panic!("expected silence or a close, got bytes"),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return false,
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => {
                    return true;
                }
                Err(e) => panic!("reading: {e}"),
            }
        }
    }
}

/// Checks a `Get` response for `key` and returns the value if found.
pub fn check_get_response(response: &KeyValueMessage, key: &str) -> Option<String> {
    assert_eq!((response.kind, response.key.as_str()), (GET_RESPONSE, key), "{response:?}");
    match response.status {
        OK => Some(response.value.clone()),
        NOT_OK => {
            assert_eq!(response.value, "", "{response:?}");
            None
        }
        s => panic!("bad status {s}"),
    }
}

pub fn msg(kind: u32, key: &str, value: &str) -> KeyValueMessage {
    KeyValueMessage { key: key.to_owned(), value: value.to_owned(), kind, status: OK }
}

/// A frame around `payload`, built with the core's encoder.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(payload, &mut out).unwrap();
    out
}

/// The payload of a whole raw frame.
pub fn payload(frame: &[u8]) -> &[u8] {
    &frame[4..frame.len() - 5]
}

pub fn msg_frame(msg: &KeyValueMessage) -> Vec<u8> {
    frame(&msg.encode_to_vec())
}

pub fn put_frame(key: &str, value: &str) -> Vec<u8> {
    msg_frame(&msg(PUT, key, value))
}

pub fn get_frame(key: &str) -> Vec<u8> {
    msg_frame(&msg(GET, key, ""))
}

/// The expected response to an error (`kind 0`, NotOk, a reason).
pub fn assert_error_response(response: &KeyValueMessage) {
    assert_eq!((response.kind, response.status, response.key.as_str()), (0, NOT_OK, ""), "{response:?}");
    assert!(!response.value.is_empty(), "an error response carries a reason: {response:?}");
}

/// The golden frames (`proto/tests/frames.json`), by name.
pub fn vectors() -> HashMap<String, Vec<u8>> {
    let json: serde_json::Value = serde_json::from_str(include_str!("../../../proto/tests/frames.json")).unwrap();
    json.as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap().to_owned(), hex(v["frame_hex"].as_str().unwrap())))
        .collect()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// Raises this process's soft RLIMIT_NOFILE to the hard limit (children
/// inherit it, so the server gets it too) and returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum }).expect("setrlimit");
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Runs `f` until it returns `Some` or `timeout` passes, pausing `pause`
/// between tries: only for conditions the test cannot be notified of (such
/// as the server noticing a close), never instead of awaiting a response.
pub fn poll_until<T>(timeout: Duration, pause: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = f() {
            return Some(t);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(pause);
    }
}
