//! The `kvio` command as a new user meets it: values through stdin and
//! files, raw output, error messages that name the address or the reason,
//! names as addresses, settings refused at start-up, `KVIO_ADDR`, help
//! text, `kvio cli`, a forced second-signal exit, and `kvio bench` without
//! its binary. Every child process runs under a timeout and is killed by
//! PID if it overstays.

// One server per test, not one per flavor: the CLI is the same for all.
#[allow(unused_macros)]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::*;
use rustix::process::Signal;

const KVIO: &str = env!("CARGO_BIN_EXE_kvio");
/// Bound on one `kvio` client run (every client has its own 5 s timeout below this).
const RUN_TIMEOUT: Duration = Duration::from_secs(20);

/// What a `kvio` run gave.
#[derive(Debug)]
struct Run {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `program args` with `stdin` fed in and `env` set (KVIO_ADDR removed
/// unless given), killed by PID after [`RUN_TIMEOUT`].
fn run_program(program: &Path, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(program);
    command.args(args).env_remove("KVIO_ADDR").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("spawn kvio");
    let mut input = child.stdin.take().expect("piped");
    let stdin = stdin.to_vec();
    // A writer thread: a child that does not read stdin must not block the test.
    let writer = thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(RUN_TIMEOUT) {
        Ok(output) => output.expect("wait for kvio"),
        Err(_) => {
            let _ = rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), Signal::KILL);
            panic!("kvio {args:?} did not finish within {RUN_TIMEOUT:?}");
        }
    };
    writer.join().unwrap();
    Run { status: output.status, stdout: output.stdout, stderr: String::from_utf8_lossy(&output.stderr).into_owned() }
}

fn kvio(args: &[&str]) -> Run {
    run_program(Path::new(KVIO), args, b"", &[])
}

fn kvio_with_stdin(args: &[&str], stdin: &[u8]) -> Run {
    run_program(Path::new(KVIO), args, stdin, &[])
}

/// A million bytes of UTF-8 with one-, two-, three- and four-byte characters and newlines.
fn million_byte_value() -> String {
    let mut value = String::with_capacity(1_000_000);
    let pieces = ["kvio ", "é", "€", "𝄞", "\n", "x"];
    let mut i = 0;
    while value.len() < 1_000_000 - 4 {
        value.push_str(pieces[i % pieces.len()]);
        i += 1;
    }
    while value.len() < 1_000_000 {
        value.push('y');
    }
    assert_eq!(value.len(), 1_000_000);
    value
}

/// A scratch path for this test process.
fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("kvio-cli-test-{}-{name}", std::process::id()))
}

#[test]
fn a_million_byte_value_round_trips_through_stdin_and_a_file() {
    let mut server = Server::start(Flavor::Epoll, &[]);
    let addr = server.addr().to_string();
    let value = million_byte_value();

    let put = kvio_with_stdin(&["put", "big", "-", "--addr", &addr], value.as_bytes());
    assert_eq!(put.code(), Some(0), "{}", put.stderr);
    let got = kvio(&["get", "big", "--raw", "--addr", &addr]);
    assert_eq!(got.code(), Some(0), "{}", got.stderr);
    assert!(got.stdout == value.as_bytes(), "stdin round trip differs ({} bytes back)", got.stdout.len());

    let file = scratch("value");
    let reversed: String = value.chars().rev().collect();
    std::fs::write(&file, &reversed).unwrap();
    let put = kvio(&["put", "big", "--value-file", file.to_str().unwrap(), "--addr", &addr]);
    std::fs::remove_file(&file).unwrap();
    assert_eq!(put.code(), Some(0), "{}", put.stderr);
    let got = kvio(&["get", "big", "--raw", "--addr", &addr]);
    assert!(got.stdout == reversed.as_bytes(), "file round trip differs ({} bytes back)", got.stdout.len());

    // Without --raw, get adds one newline; `-` as a value is no longer a literal.
    let put = kvio_with_stdin(&["put", "small", "-", "--addr", &addr], b"v w");
    assert_eq!(put.code(), Some(0), "{}", put.stderr);
    assert_eq!(kvio(&["get", "small", "--addr", &addr]).stdout, b"v w\n");
    assert_eq!(kvio(&["get", "small", "--raw", "--addr", &addr]).stdout, b"v w");
    assert_eq!(server.terminate().stopped_counts(), [7, 7, 0]);
}

#[test]
fn a_value_that_is_not_utf8_is_refused_before_connecting() {
    // Nothing listens at this address: the error must come from the value, first.
    let run = kvio_with_stdin(&["put", "k", "-", "--addr", &unused_addr().to_string()], b"ok \xff\xfe");
    assert_eq!(run.code(), Some(2));
    assert!(run.stderr.contains("stdin is not valid UTF-8 (byte 3)"), "{}", run.stderr);
    let run = kvio(&["put", "k", "--value-file", "/nonexistent/kvio-value"]);
    assert_eq!(run.code(), Some(2));
    assert!(run.stderr.contains("cannot read the value from /nonexistent/kvio-value"), "{}", run.stderr);
    let run = kvio(&["put", "k", "v", "--value-file", "f"]);
    assert_eq!(run.code(), Some(2), "a value and a file at once: {}", run.stderr);
}

/// A loopback address nothing listens on (bound, then closed).
fn unused_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[test]
fn a_server_that_never_answers_is_a_timeout_naming_the_address() {
    // Listening: the kernel completes the handshake, and nobody ever reads or answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let run = kvio(&["get", "k", "--addr", &addr, "--timeout", "0.3"]);
    assert_eq!(run.code(), Some(2));
    assert!(run.stderr.contains(&format!("timed out after 0.3 s waiting for {addr}")), "{}", run.stderr);
    let run = kvio(&["put", "k", "v", "--addr", &addr, "--timeout", "0.3"]);
    assert!(run.stderr.contains(&format!("timed out after 0.3 s waiting for {addr}")), "{}", run.stderr);
}

#[test]
fn nothing_listening_names_the_address() {
    let addr = unused_addr().to_string();
    for command in [&["get", "k"][..], &["put", "k", "v"], &["cli"]] {
        let run = kvio(&[command, &["--addr", &addr]].concat());
        assert_eq!(run.code(), Some(2), "{command:?}");
        assert!(run.stderr.contains(&format!("cannot connect to {addr}: Connection refused")), "{}", run.stderr);
    }
}

#[test]
fn serving_on_a_port_in_use_names_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let run = kvio(&["serve", "--addr", &addr]);
    assert_eq!(run.code(), Some(2));
    assert!(run.stderr.contains(&format!("cannot listen on {addr}: Address already in use")), "{}", run.stderr);
}

#[test]
fn a_malformed_address_is_repeated_with_the_expected_form() {
    for command in [&["get", "k"][..], &["put", "k", "v"], &["cli"], &["serve"]] {
        let run = kvio(&[command, &["--addr", "garbage"]].concat());
        assert_eq!(run.code(), Some(2), "{command:?}");
        assert!(run.stderr.contains("'garbage'"), "{}", run.stderr);
        assert!(run.stderr.contains("expected HOST:PORT, such as 127.0.0.1:7878"), "{}", run.stderr);
    }
    let run = run_program(Path::new(KVIO), &["get", "k"], b"", &[("KVIO_ADDR", "no-port")]);
    assert_eq!(run.code(), Some(2));
    assert!(run.stderr.contains("'no-port'") && run.stderr.contains("HOST:PORT"), "{}", run.stderr);
}

#[test]
fn a_refused_put_says_why() {
    // 64-byte frames: keys up to 19 bytes, values up to 20; one entry.
    let server = Server::start(Flavor::Epoll, &["--max-frame-len", "64", "--store-entries", "1"]);
    let addr = server.addr().to_string();
    let put = |key: &str, value: &str| kvio(&["put", key, value, "--addr", &addr]);
    let run = put(&"k".repeat(40), "v");
    assert_eq!(run.code(), Some(2));
    assert!(run.stderr.ends_with(": key too long\n"), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("{addr} refused to store")), "{}", run.stderr);
    let run = put("k", &"v".repeat(40));
    assert!(run.stderr.ends_with(" refused to store k: value too long\n"), "{}", run.stderr);
    assert_eq!(put("k", "v").code(), Some(0));
    let run = put("other", "v");
    assert_eq!(run.code(), Some(2));
    assert!(run.stderr.ends_with(" refused to store other: store full\n"), "{}", run.stderr);
    // The same reasons in `kvio cli`, and the old value kept.
    let cli = kvio_with_stdin(
        &["cli", "--addr", &addr],
        format!("put other v\nput k {}\nget k\n", "v".repeat(40)).as_bytes(),
    );
    assert_eq!(cli.stdout_text(), "ERR store full\nERR value too long\nv\n");
}

#[test]
fn serve_resolves_localhost_and_says_which_address_it_bound() {
    let mut child = Command::new(KVIO)
        .args(["serve", "--addr", "localhost:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kvio serve");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = lines.recv_timeout(PROCESS_TIMEOUT);
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    let Ok(first) = first else {
        let _ = rustix::process::kill_process(pid, Signal::KILL);
        let _ = child.wait();
        panic!("no start-up line");
    };
    let settings = parse_startup_line(&first);
    let bound: SocketAddr = settings[1].1.parse().expect("addr= is an address");
    assert!(bound.ip().is_loopback() && bound.port() != 0, "{first}");
    // The client resolves the same name.
    let named = format!("localhost:{}", bound.port());
    let put = kvio(&["put", "k", "v", "--addr", &named]);
    let get = kvio(&["get", "k", "--addr", &named]);
    rustix::process::kill_process(pid, Signal::TERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(put.code(), Some(0), "{}", put.stderr);
    assert_eq!(get.stdout, b"v\n", "{}", get.stderr);
    assert!(status.success());
}

#[test]
fn nonsense_settings_are_refused_at_start_up() {
    for (flag, value, lowest) in [
        ("--max-connections", "0", "1"),
        ("--store-entries", "0", "1"),
        ("--store-bytes", "0", "12"),
        ("--store-bytes", "11", "12"),
        ("--output-limit", "0", "1"),
    ] {
        let run = kvio(&["serve", "--addr", "127.0.0.1:0", flag, value]);
        assert_eq!(run.code(), Some(2), "{flag} {value}");
        assert!(run.stdout.is_empty(), "no start-up line for {flag} {value}");
        let first = run.stderr.lines().next().unwrap_or("");
        assert!(first.contains(&format!("'{value}' for '{flag}")), "{}", run.stderr);
        assert!(first.ends_with(&format!("must be at least {lowest}")), "{}", run.stderr);
    }
    // The smallest accepted values give a server that answers.
    let mut server =
        Server::start(Flavor::Epoll, &["--max-connections", "1", "--store-entries", "1", "--store-bytes", "12"]);
    let mut client = server.connect();
    assert_eq!(client.put("", ""), OK, "an empty entry costs exactly 12 bytes");
    assert_eq!(client.put("k", ""), NOT_OK);
    drop(client);
    assert!(server.terminate().status.success());
}

#[test]
fn kvio_addr_is_the_default_address_and_addr_overrides_it() {
    let server = Server::start(Flavor::Epoll, &[]);
    let addr = server.addr().to_string();
    let env = [("KVIO_ADDR", addr.as_str())];
    let put = run_program(Path::new(KVIO), &["put", "DiskType", "NVMe SSD"], b"", &env);
    assert_eq!(put.code(), Some(0), "{}", put.stderr);
    let get = run_program(Path::new(KVIO), &["get", "DiskType"], b"", &env);
    assert_eq!(get.stdout, b"NVMe SSD\n", "{}", get.stderr);
    let cli = run_program(Path::new(KVIO), &["cli"], b"get DiskType\n", &env);
    assert_eq!(cli.stdout, b"NVMe SSD\n", "{}", cli.stderr);
    let elsewhere = unused_addr().to_string();
    let get = run_program(Path::new(KVIO), &["get", "DiskType", "--addr", &elsewhere], b"", &env);
    assert!(get.stderr.contains(&elsewhere), "--addr wins over KVIO_ADDR: {}", get.stderr);
}

#[test]
fn help_describes_the_arguments() {
    for (command, words) in [
        (
            "put",
            &[
                "<KEY>",
                "[VALUE]",
                "`-` reads it from stdin",
                "--value-file <FILE>",
                "--addr <HOST:PORT>",
                "KVIO_ADDR",
                "--timeout <SECONDS>",
            ][..],
        ),
        ("get", &["<KEY>", "--raw", "--addr <HOST:PORT>", "KVIO_ADDR", "exit 0 found, 1 not found"]),
        ("cli", &["(nil)", "ERR <reason>", "--addr <HOST:PORT>"]),
        ("serve", &["--addr <HOST:PORT>", "at least 12"]),
    ] {
        let run = kvio(&[command, "--help"]);
        assert_eq!(run.code(), Some(0));
        let help = run.stdout_text();
        for word in words {
            assert!(help.contains(word), "`kvio {command} --help` lacks {word:?}:\n{help}");
        }
    }
}

#[test]
fn cli_answers_a_thousand_piped_commands_in_order_on_one_connection() {
    let mut server = Server::start(Flavor::Epoll, &[]);
    let addr = server.addr().to_string();
    let mut input = String::new();
    let mut expected = String::new();
    for i in 0..500 {
        if i % 50 == 0 {
            input.push_str("get never-put\n\n");
            expected.push_str("(nil)\n");
        } else {
            input.push_str(&format!("put k{i} value {i} with spaces\n"));
            expected.push_str("OK\n");
        }
        input.push_str(&format!("get k{}\n", i - i % 50 + 1));
        expected.push_str(&if i % 50 == 0 {
            "(nil)\n".to_owned()
        } else {
            format!("value {} with spaces\n", i - i % 50 + 1)
        });
    }
    input.push_str("del k1\n");
    expected.push_str("ERR expected `get KEY` or `put KEY VALUE`\n");
    let run = kvio_with_stdin(&["cli", "--addr", &addr], input.as_bytes());
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    let got = run.stdout_text();
    assert_eq!(got.lines().count(), 1_001);
    assert!(
        got == expected,
        "first difference at line {:?}",
        got.lines().zip(expected.lines()).position(|(a, b)| a != b)
    );
    // 1,000 requests (the unknown command is answered by the cli), one connection.
    assert_eq!(server.terminate().stopped_counts(), [1, 1_000, 0]);
}

/// A server whose stop waits its 2 s grace: one connection owed more than
/// the socket buffers hold, never read.
fn server_with_a_slow_stop() -> (Server, common::Client, rustix::process::Pid) {
    let server = Server::start(Flavor::Epoll, &[]);
    let mut client = server.connect();
    client.put_ok("big", &"x".repeat(500_000));
    for _ in 0..40 {
        client.send(&get_frame("big"));
    }
    let pid = rustix::process::Pid::from_raw(server.pid() as i32).unwrap();
    (server, client, pid)
}

#[test]
fn repeated_sigterms_and_a_sigint_after_them_are_one_stop() {
    let (mut server, _client, pid) = server_with_a_slow_stop();
    // As GNU timeout, a supervisor signalling the group, or an impatient script do.
    for signal in [Signal::TERM, Signal::TERM, Signal::INT] {
        rustix::process::kill_process(pid, signal).unwrap();
    }
    let exit = server.wait_exit();
    assert_eq!(exit.status.code(), Some(0), "{:?}", server.stderr_lines());
    assert_eq!(exit.stopped_counts()[0], 1, "the stopped line is printed");
}

#[test]
fn two_sigterms_back_to_back_exit_0() {
    let (mut server, _client, pid) = server_with_a_slow_stop();
    rustix::process::kill_process(pid, Signal::TERM).unwrap();
    rustix::process::kill_process(pid, Signal::TERM).unwrap();
    let exit = server.wait_exit();
    assert_eq!(exit.status.code(), Some(0), "{:?}", server.stderr_lines());
}

#[test]
fn a_second_ctrl_c_a_second_later_exits_130_with_a_line() {
    let (mut server, _client, pid) = server_with_a_slow_stop();
    rustix::process::kill_process(pid, Signal::INT).unwrap();
    // The rule itself is about time: a person pressing Ctrl-C again, not a duplicate.
    std::thread::sleep(kvio::shutdown::FORCE_AFTER + Duration::from_millis(100));
    rustix::process::kill_process(pid, Signal::INT).unwrap();
    let exit = server.wait_exit();
    assert_eq!(exit.status.code(), Some(130));
    let stderr = server.stderr_lines();
    assert!(stderr.iter().any(|l| l.contains("second Ctrl-C while stopping")), "{stderr:?}");
}

#[test]
fn bench_without_its_binary_says_how_to_build_it() {
    // A copy of kvio alone in a directory: no kvio-bench beside it.
    let dir = scratch("lonely");
    std::fs::create_dir_all(&dir).unwrap();
    let lonely = dir.join("kvio");
    std::fs::copy(KVIO, &lonely).unwrap();
    let run = run_program(&lonely, &["bench", "compare", "--short"], b"", &[]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(run.code(), Some(2));
    assert!(run.stderr.contains("kvio-bench not found"), "{}", run.stderr);
    assert!(run.stderr.contains("cargo build --release -p kvio-bench"), "{}", run.stderr);
}
