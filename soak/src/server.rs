//! The server under test: one `kvio serve` child process, its start-up
//! line, its memory from `/proc/PID/status`, and its stop by SIGTERM to
//! its PID. Every wait here is bounded; the child is killed on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long the server may take to print its start-up line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Server stderr lines kept for the report.
const STDERR_KEPT: usize = 20;

/// Stderr lines: how many came, and the first few.
type Log = Arc<Mutex<(u64, Vec<String>)>>;

#[derive(Debug)]
pub struct Server {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub startup_line: String,
    settings: Vec<(String, String)>,
    stdout: Receiver<String>,
    stderr: Log,
    exited: bool,
}

/// The server's memory, in KiB.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss_kib: u64,
    /// The peak RSS since start (VmHWM): catches what falls between samples.
    pub hwm_kib: u64,
}

/// How a stop went.
#[derive(Debug)]
pub struct Stopped {
    /// SIGTERM to exit; `None` if it had not exited by the wait's end (then killed).
    pub elapsed: Option<Duration>,
    pub status: Option<ExitStatus>,
    /// Stdout lines after the start-up line.
    pub stdout: Vec<String>,
}

impl Server {
    /// Whether `kvio serve --help` lists `flag`.
    pub fn supports(kvio: &Path, flag: &str) -> bool {
        Command::new(kvio)
            .args(["serve", "--help"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(flag))
    }

    /// `kvio serve --flavor F --addr 127.0.0.1:0 <args>`, once it has printed its start-up line.
    pub fn start(kvio: &Path, flavor: &str, args: &[String]) -> Result<Server, String> {
        let mut child = Command::new(kvio)
            .args(["serve", "--flavor", flavor, "--addr", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", kvio.display()))?;
        let (tx, stdout) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().expect("piped stdout"));
        thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr: Log = Arc::default();
        let sink = Arc::clone(&stderr);
        let err = BufReader::new(child.stderr.take().expect("piped stderr"));
        thread::spawn(move || {
            for line in err.lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap_or_else(|p| p.into_inner());
                log.0 += 1;
                if log.1.len() < STDERR_KEPT {
                    log.1.push(line);
                }
            }
        });
        let pid = child.id();
        let mut server = Server {
            child,
            pid,
            addr: "127.0.0.1:0".parse().expect("an address"),
            startup_line: String::new(),
            settings: Vec::new(),
            stdout,
            stderr,
            exited: false,
        };
        let line = server.stdout.recv_timeout(STARTUP_TIMEOUT).map_err(|e| {
            format!(
                "kvio serve --flavor {flavor} {args:?}: no start-up line within {STARTUP_TIMEOUT:?} ({e}); stderr: {:?}",
                server.stderr_head()
            )
        })?;
        let rest = line.strip_prefix("kvio serve: ").ok_or_else(|| format!("bad start-up line: {line:?}"))?;
        for field in rest.split(' ') {
            let (k, v) = field.split_once('=').ok_or_else(|| format!("bad start-up line: {line:?}"))?;
            server.settings.push((k.to_owned(), v.to_owned()));
        }
        if server.setting("flavor") != Some(flavor) {
            return Err(format!("start-up line of another flavor: {line:?}"));
        }
        server.addr = server
            .setting("addr")
            .and_then(|a| a.parse().ok())
            .filter(|a: &SocketAddr| a.ip().is_loopback() && a.port() != 0)
            .ok_or_else(|| format!("no loopback addr in the start-up line: {line:?}"))?;
        server.startup_line = line;
        Ok(server)
    }

    /// A `key=value` of the start-up line.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn number(&self, key: &str) -> Option<u64> {
        self.setting(key).and_then(|v| v.parse().ok())
    }

    /// How many stderr lines came, and the first few.
    pub fn stderr_head(&self) -> (u64, Vec<String>) {
        self.stderr.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Still running (not exited, not a zombie we reaped).
    pub fn running(&mut self) -> bool {
        !self.exited && matches!(self.child.try_wait(), Ok(None))
    }

    pub fn memory(&self) -> Option<Memory> {
        memory_of(self.pid)
    }

    /// SIGTERM by PID, then waits for the exit up to `wait` (polling
    /// every 2 ms, so the time is measured to that), killing the process
    /// if it is still running then.
    pub fn terminate(&mut self, wait: Duration) -> Stopped {
        let pid = rustix::process::Pid::from_raw(self.pid as i32).expect("a child's PID is positive");
        let sent = Instant::now();
        let mut elapsed = None;
        let mut status = None;
        if rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_ok() {
            while sent.elapsed() < wait {
                if let Ok(Some(s)) = self.child.try_wait() {
                    elapsed = Some(sent.elapsed());
                    status = Some(s);
                    break;
                }
                thread::sleep(Duration::from_millis(2));
            }
        }
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.exited = true;
        // The process is gone: its stdout closes at once.
        let mut stdout = Vec::new();
        let until = Instant::now() + Duration::from_secs(2);
        while let Ok(line) = self.stdout.recv_timeout(until.saturating_duration_since(Instant::now())) {
            stdout.push(line);
        }
        Stopped { elapsed, status, stdout }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// VmRSS and VmHWM of `pid`.
pub fn memory_of(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some(Memory { rss_kib: field("VmRSS:")?, hwm_kib: field("VmHWM:")? })
}
