//! `kvio-bench`'s exit codes, as a user sees them: 2 when the run cannot be
//! made (nothing listening), 1 when answers were wrong, 0 when every answer
//! checked out. The server is the binary's own floor baseline, in a child
//! process stopped by PID.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BENCH: &str = env!("CARGO_BIN_EXE_kvio-bench");
/// Bound on the floor server's start-up line.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A short load run against `addr`.
fn load(addr: &str, extra: &[&str]) -> Output {
    Command::new(BENCH)
        .args(["--addr", addr, "-c", "2", "-p", "2", "--warmup-ms", "0", "--duration-ms", "200"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run kvio-bench")
}

/// `kvio-bench floor-server` on a free port, killed by PID on drop.
struct Floor {
    child: Child,
    addr: String,
}

impl Floor {
    fn start() -> Floor {
        let mut child = Command::new(BENCH)
            .args(["floor-server", "--addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the floor server");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(START_TIMEOUT).expect("the floor server prints its address");
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .unwrap_or_else(|| panic!("no addr= in {line:?}"))
            .to_owned();
        Floor { child, addr }
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn nothing_listening_exits_2_with_a_line_naming_the_address() {
    // Bind then drop: nothing listens on that port any more.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let out = load(&addr, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("could not connect to {addr}")), "{stderr}");
    assert!(out.stdout.is_empty(), "no all-zero result line: {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn wrong_answers_exit_1_and_right_ones_0() {
    let floor = Floor::start();
    // The floor acknowledges every request as a put: a full check finds the gets wrong.
    let wrong = load(&floor.addr, &["--check", "full"]);
    assert_eq!(wrong.status.code(), Some(1), "{}", String::from_utf8_lossy(&wrong.stderr));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("errors; first:"));
    let right = load(&floor.addr, &["--check", "framing"]);
    assert_eq!(right.status.code(), Some(0), "{}", String::from_utf8_lossy(&right.stderr));
    assert!(String::from_utf8_lossy(&right.stdout).contains("requests"), "a result line");
}

#[test]
fn a_run_into_a_file_writes_progress_lines_with_an_eta() {
    let floor = Floor::start();
    let log = std::env::temp_dir().join(format!("kvio-bench-progress-{}.log", std::process::id()));
    // As `kvio bench --short 2>log </dev/null`: stderr a file, not a terminal.
    let status = Command::new(BENCH)
        .args(["--short", "--addr", &floor.addr, "-c", "2", "--check", "framing"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .status()
        .expect("run kvio-bench");
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_file(&log).unwrap();
    assert!(status.success(), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    let first = lines.first().unwrap_or(&"");
    // 0.2 s of warm-up and 1 s measured: the first line comes at the start, its ETA as planned.
    assert!(first.starts_with("kvio bench: 0:00/0:01 (0%), elapsed 0:00, ETA 0:01: warm-up"), "{text}");
    assert!(lines.last().unwrap().starts_with("kvio bench: done in 0:0"), "{text}");
}
