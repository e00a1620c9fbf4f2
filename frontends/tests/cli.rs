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
    assert_eq!(
        run.stderr,
        "kvio put: the value from stdin is not valid UTF-8 (byte 3 is not); kvio values are protobuf strings, \
         which must be UTF-8.\n"
    );
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
    assert_eq!(
        run.stderr,
        format!(
            "kvio put: {addr} refused to store \"{}\": key too long: the key is 40 bytes; a server with the default \
             --max-frame-len (1,048,576 bytes (1 MiB)) takes keys up to 1,024 bytes (1 KiB).\n",
            "k".repeat(40)
        )
    );
    let run = put("k", &"v".repeat(40));
    assert_eq!(
        run.stderr,
        format!(
            "kvio put: {addr} refused to store \"k\": value too long: the value is 40 bytes; a server with the \
             default --max-frame-len (1,048,576 bytes (1 MiB)) takes values up to 1,047,527 bytes (1023 KiB).\n"
        )
    );
    assert_eq!(put("k", "v").code(), Some(0));
    let run = put("other", "v");
    assert_eq!(run.code(), Some(2));
    assert_eq!(
        run.stderr,
        format!(
            "kvio put: {addr} refused to store \"other\": store full: its --store-entries or --store-bytes is used up.\n"
        )
    );
    // The same reasons in `kvio cli`, and the old value kept.
    let cli = kvio_with_stdin(
        &["cli", "--addr", &addr],
        format!("put other v\nput k {}\nget k\n", "v".repeat(40)).as_bytes(),
    );
    assert_eq!(cli.stdout_text(), "ERR store full\nERR value too long\nv\n");
    assert_eq!(cli.code(), Some(1));
    assert_eq!(cli.stderr, "kvio cli: 2 of 3 commands failed.\n");
}

#[test]
fn a_value_over_the_frame_limit_says_its_size_and_the_limit() {
    let server = Server::start(Flavor::Epoll, &["--max-frame-len", "64KiB"]);
    let addr = server.addr().to_string();
    let run = kvio(&["put", "k", &"v".repeat(100_000), "--addr", &addr]);
    assert_eq!(run.code(), Some(2));
    assert_eq!(
        run.stderr,
        format!(
            "kvio put: {addr} refused the request as too long (frame length over maximum): value too long: the \
             value is 100,000 bytes (97.7 KiB); a server with the default --max-frame-len (1,048,576 bytes (1 MiB)) \
             takes values up to 1,047,527 bytes (1023 KiB).\n"
        )
    );
}

#[test]
fn a_long_key_is_echoed_cut_with_its_length() {
    let server = Server::start(Flavor::Epoll, &[]);
    let addr = server.addr().to_string();
    let key = "k".repeat(100 * 1024);
    let run = kvio(&["get", &key, "--addr", &addr]);
    assert_eq!(run.code(), Some(1));
    assert_eq!(run.stderr, format!("kvio get: \"{}…\" (102,400 bytes) not found.\n", "k".repeat(64)));
    let run = kvio(&["get", "short", "--addr", &addr]);
    assert_eq!(run.stderr, "kvio get: \"short\" not found.\n");
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
        ("--store-bytes", "0", "12 (12 bytes)"),
        ("--store-bytes", "11", "12 (12 bytes)"),
        ("--output-limit", "0", "1 (1 byte)"),
    ] {
        let run = kvio(&["serve", "--addr", "127.0.0.1:0", flag, value]);
        assert_eq!(run.code(), Some(2), "{flag} {value}");
        assert!(run.stdout.is_empty(), "no start-up line for {flag} {value}");
        let first = run.stderr.lines().next().unwrap_or("");
        assert!(first.contains(&format!("'{value}' for '{flag}")), "{}", run.stderr);
        assert!(first.ends_with(&format!("must be at least {lowest}.")), "{}", run.stderr);
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
        ("serve", &["--addr <HOST:PORT>", "at least 12", "KVIO_LISTEN", "all powers of 1024 (64K = 64KiB = 65536)"]),
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
fn top_level_help_states_the_environment_and_size_rules() {
    let help = kvio(&["--help"]).stdout_text();
    assert!(
        help.contains(
            "Environment: KVIO_ADDR is the default --addr of put, get, del and cli; KVIO_LISTEN is kvio serve's. Byte counts \
             take K, M, G, KiB, MiB or GiB, all powers of 1024."
        ),
        "{help}"
    );
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
            input.push_str(&format!("put k{i} \"value {i} with spaces\"\n"));
            expected.push_str("OK\n");
        }
        input.push_str(&format!("get k{}\n", i - i % 50 + 1));
        expected.push_str(&if i % 50 == 0 {
            "(nil)\n".to_owned()
        } else {
            format!("value {} with spaces\n", i - i % 50 + 1)
        });
    }
    input.push_str("del k1\ndel k1\nget k1\nrm k1\n");
    expected.push_str(
        "OK\n(nil)\n(nil)\nERR unknown command \"rm\": expected get KEY, put KEY VALUE, del KEY, help or quit.\n",
    );
    let run = kvio_with_stdin(&["cli", "--addr", &addr], input.as_bytes());
    assert_eq!(run.code(), Some(1), "the unknown command failed: {}", run.stderr);
    assert_eq!(run.stderr, "kvio cli: 1 of 1004 commands failed.\n");
    let got = run.stdout_text();
    assert_eq!(got.lines().count(), 1_004);
    assert!(
        got == expected,
        "first difference at line {:?}",
        got.lines().zip(expected.lines()).position(|(a, b)| a != b)
    );
    // 1,003 requests (the unknown command is answered by the cli), one connection.
    assert_eq!(server.terminate().stopped_counts(), [1, 1_003, 0]);
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
    let help = run_program(&lonely, &["bench", "--help"], b"", &[]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(run.code(), Some(2));
    assert_eq!(
        run.stderr,
        format!(
            "kvio bench: {} not found: the benchmark is its own binary, so the server does not link it. Install it \
             beside kvio with `cargo install --locked --path bench` from a kvio checkout (or, for a kvio built in \
             the checkout, `cargo build --release -p kvio-bench`).\n",
            dir.join("kvio-bench").display()
        )
    );
    assert_eq!(help.code(), Some(0), "{}", help.stderr);
    let text = help.stdout_text();
    assert!(text.contains("Load a server, or compare every flavor"), "{text}");
    assert!(
        text.ends_with("kvio-bench is not installed beside this kvio; for its options, install it: cargo install --locked --path bench\n"),
        "{text}"
    );
}

#[test]
fn cli_help_quoting_and_comments() {
    let server = Server::start(Flavor::Epoll, &[]);
    let addr = server.addr().to_string();
    let input = "# a comment, then a blank line\n\n  help\nput \"a key\" \"a value with spaces\"\nget 'a key'\n\
                 get   \"a key\"   \nput k 'it''s \"quoted\"'\nget k\nput 'unclosed v\n";
    let run = kvio_with_stdin(&["cli", "--addr", &addr], input.as_bytes());
    assert_eq!(
        run.stdout_text(),
        "get KEY          print the value stored under KEY, or (nil)\n\
         put KEY VALUE    store VALUE under KEY; prints OK, or ERR and the reason\n\
         del KEY          delete KEY; prints OK, or (nil) if it was not there\n\
         help             this list\n\
         quit, exit       leave (so does Ctrl-D)\n\
         Quote words with spaces as in a shell: put \"a key\" 'a value'. Lines starting with # are skipped.\n\
         OK\na value with spaces\na value with spaces\nOK\nits \"quoted\"\n\
         ERR the line has an unclosed quote.\n"
    );
    assert_eq!(run.code(), Some(1));
    assert_eq!(run.stderr, "kvio cli: 1 of 7 commands failed.\n");
    let ok = kvio_with_stdin(&["cli", "--addr", &addr], b"get 'a key'\n# only a comment\n");
    assert_eq!((ok.code(), ok.stderr.as_str()), (Some(0), ""), "nothing failed");
}

#[test]
fn sizes_take_units_and_bad_ones_exit_2_naming_the_forms() {
    let run = kvio(&["serve", "--addr", "127.0.0.1:0", "--store-bytes", "64XB"]);
    assert_eq!(run.code(), Some(2));
    assert_eq!(
        run.stderr,
        "error: invalid value '64XB' for '--store-bytes <BYTES>': expected a byte count such as 65536, or a number \
         with K, M, G or KiB, MiB, GiB (powers of 1024: 64K = 65536).\n\nFor more information, try '--help'.\n"
    );
    assert!(run.stdout.is_empty());
    let mut server = Server::start(
        Flavor::Epoll,
        &["--store-bytes", "64MiB", "--output-limit", "64KiB", "--max-frame-len", "1MiB", "--max-client-memory", "1G"],
    );
    for (name, value) in [
        ("store_bytes", "67108864"),
        ("output_limit", "65536"),
        ("max_frame_len", "1048576"),
        ("max_client_memory", "1073741824"),
    ] {
        assert_eq!(server.setting(name), value, "{name}");
    }
    assert!(server.terminate().status.success());
}

#[test]
fn every_subcommand_prints_its_version() {
    let version = env!("CARGO_PKG_VERSION");
    for sub in ["serve", "put", "get", "cli", "completions", "man"] {
        let run = kvio(&[sub, "--version"]);
        assert_eq!(run.code(), Some(0), "{sub}: {}", run.stderr);
        assert_eq!(run.stdout_text(), format!("kvio-{sub} {version}\n"));
    }
}

#[test]
fn serve_reads_kvio_listen_and_not_kvio_addr() {
    let help = kvio(&["serve", "--help"]).stdout_text();
    assert!(help.contains("[env: KVIO_LISTEN=]") && !help.contains("[env: KVIO_ADDR"), "{help}");
    // KVIO_LISTEN names a port in use: the server reads it, so it cannot listen.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let run = run_program(Path::new(KVIO), &["serve"], b"", &[("KVIO_LISTEN", &taken)]);
    assert_eq!(run.code(), Some(2));
    assert_eq!(run.stderr, format!("kvio serve: cannot listen on {taken}: Address already in use (os error 98).\n"));
}

/// 9 MB: over the default 1 MiB frame, and over the 8 MiB a server reads
/// of a refused frame before it resets the connection.
fn nine_megabytes() -> Vec<u8> {
    vec![b'v'; 9_000_000]
}

#[test]
fn a_value_over_the_frame_limit_is_not_sent() {
    let mut server = Server::start(Flavor::Epoll, &[]);
    let addr = server.addr().to_string();
    let run = kvio_with_stdin(&["put", "k", "-", "--addr", &addr], &nine_megabytes());
    assert_eq!(run.code(), Some(2));
    assert_eq!(
        run.stderr,
        format!(
            "kvio put: not sent to {addr}: value too long: the value is 9,000,000 bytes (8.6 MiB); a server with the \
             default --max-frame-len (1,048,576 bytes (1 MiB)) takes values up to 1,047,527 bytes (1023 KiB). For a \
             server started with a larger --max-frame-len, give kvio put the same --max-frame-len.\n"
        )
    );
    // In kvio cli, a line of its own; the connection is kept.
    let cli = kvio_with_stdin(&["cli", "--addr", &addr], format!("get {}\nget k\n", "k".repeat(2 << 20)).as_bytes());
    assert_eq!(cli.code(), Some(1));
    assert_eq!(
        cli.stdout_text(),
        format!(
            "ERR not sent to {addr}: the request for \"{}…\" (2,097,152 bytes) is a 2,097,164-byte frame, over \
             --max-frame-len 1,048,576 bytes (1 MiB); for a server started with a larger --max-frame-len, give the \
             same one here\n(nil)\n",
            "k".repeat(64)
        )
    );
    // Neither was sent: the server answered the one get.
    assert_eq!(server.terminate().stopped_counts()[1], 1);
}

#[test]
fn a_refused_frame_is_reported_as_refused_even_when_the_server_resets() {
    // Told the server takes 16 MiB (it takes 1): sent, refused at its header,
    // and the connection reset while the client still writes. Several runs:
    // the reset races the write (before the fix, 1 run in 6 said "Broken pipe").
    let server = Server::start(Flavor::Epoll, &[]);
    let addr = server.addr().to_string();
    let value = nine_megabytes();
    for attempt in 0..6 {
        let run = kvio_with_stdin(&["put", "k", "-", "--max-frame-len", "16MiB", "--addr", &addr], &value);
        assert_eq!(run.code(), Some(2), "attempt {attempt}");
        assert!(
            run.stderr
                .starts_with(&format!("kvio put: {addr} refused the request as too long (frame length over maximum)")),
            "attempt {attempt}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains("a server with --max-frame-len 16,777,216 bytes (16 MiB) takes values"),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn a_port_that_is_not_kvio_is_asked_about() {
    // The metrics endpoint: HTTP, whose "HTTP/1.1 400" reads as a frame length of 1.3 GB.
    let server = Server::start(Flavor::Epoll, &["--metrics", "127.0.0.1:0"]);
    let line = server.next_stdout_line();
    let url = line.strip_prefix("kvio serve: metrics=http://").expect("the metrics line");
    let metrics = url.strip_suffix("/metrics").expect("the metrics line");
    let run = kvio(&["get", "k", "--addr", metrics, "--timeout", "10"]);
    assert_eq!(run.code(), Some(2));
    assert_eq!(
        run.stderr,
        format!("kvio get: bad response frame from {metrics}: frame length over maximum; is this a kvio server?\n")
    );
}

#[test]
fn a_log_level_that_names_no_level_is_refused_at_start_up() {
    let accepted = "expected error, warn, info, debug, trace or off, or directives such as kvio=debug,warn.";
    let run = kvio(&["serve", "--addr", "127.0.0.1:0", "--log-level", "verbose"]);
    assert_eq!(run.code(), Some(2));
    assert!(run.stdout.is_empty(), "no start-up line");
    assert_eq!(run.stderr, format!("kvio serve: invalid --log-level \"verbose\": {accepted}\n"));
    let run = run_program(Path::new(KVIO), &["serve", "--addr", "127.0.0.1:0"], b"", &[("RUST_LOG", "verbose")]);
    assert_eq!(run.code(), Some(2));
    assert_eq!(run.stderr, format!("kvio serve: invalid RUST_LOG \"verbose\": {accepted}\n"));
    // A level in any case still starts (and logs at it).
    let mut server = Server::start(Flavor::Epoll, &["--log-level", "WARN"]);
    assert!(server.terminate().status.success());
}

#[test]
fn a_store_the_machine_cannot_give_is_refused_before_the_start_up_line() {
    // A petabyte: past any machine's address space, whatever its overcommit setting.
    let run = kvio(&["serve", "--addr", "127.0.0.1:0", "--store-bytes", "1048576G"]);
    assert_eq!(run.code(), Some(2), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "no start-up line: {}", run.stdout_text());
    assert!(
        run.stderr.starts_with(
            "kvio serve: cannot allocate the store: --store-bytes 1,125,899,906,842,624 bytes (1048576 GiB) and \
             --store-entries 100000 ask for 1,125,899,"
        ),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("; this machine has ") && run.stderr.ends_with("Give a smaller --store-bytes.\n"));
}

#[test]
fn cli_quit_and_exit_leave_as_the_end_of_input_does() {
    let mut server = Server::start(Flavor::Epoll, &[]);
    let addr = server.addr().to_string();
    for word in ["quit", "EXIT"] {
        let run = kvio_with_stdin(&["cli", "--addr", &addr], format!("put a 1\n{word}\nget a\n").as_bytes());
        assert_eq!((run.code(), run.stdout_text().as_str(), run.stderr.as_str()), (Some(0), "OK\n", ""), "{word}");
    }
    let run = kvio_with_stdin(&["cli", "--addr", &addr], b"get nope\nquit\n");
    assert_eq!((run.code(), run.stdout_text().as_str()), (Some(0), "(nil)\n"));
    assert_eq!(server.terminate().stopped_counts()[1], 3, "nothing after quit is sent");
}

/// What a terminal shows, read from a pty's master on a thread of its own.
struct Screen {
    chunks: mpsc::Receiver<Vec<u8>>,
    seen: String,
}

impl Screen {
    /// Waits (bounded) until what was shown holds `count` times `text`.
    fn wait_for(&mut self, text: &str, count: usize) {
        let deadline = std::time::Instant::now() + RUN_TIMEOUT;
        while self.seen.matches(text).count() < count {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.seen.push_str(&String::from_utf8_lossy(&chunk)),
                Err(_) => {
                    panic!("{text:?} not shown {count} times within {RUN_TIMEOUT:?}; the screen: {:?}", self.seen)
                }
            }
        }
    }
}

/// A child killed (SIGKILL, by PID) when dropped while still running: a
/// failed assertion leaves no `kvio cli` behind.
struct Running(Option<rustix::process::Pid>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
    }
}

#[test]
fn cli_at_a_terminal_edits_lines_and_recalls_history() {
    use std::os::unix::process::CommandExt;
    let mut server = Server::start(Flavor::Epoll, &[]);
    let addr = server.addr().to_string();
    let home = scratch("home");
    std::fs::create_dir_all(&home).unwrap();
    let master = rustix::pty::openpt(rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY).unwrap();
    rustix::pty::grantpt(&master).unwrap();
    rustix::pty::unlockpt(&master).unwrap();
    let name = rustix::pty::ptsname(&master, Vec::new()).unwrap();
    let slave = std::fs::OpenOptions::new().read(true).write(true).open(name.to_str().unwrap()).unwrap();
    let mut command = Command::new(KVIO);
    command
        .args(["cli", "--addr", &addr])
        .env_remove("KVIO_ADDR")
        .env("HOME", &home)
        .env("TERM", "xterm")
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave);
    // SAFETY: setsid and ioctl are async-signal-safe; they make the pty the
    // child's controlling terminal (its /dev/tty), as a terminal emulator does.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 || libc::ioctl(0, libc::TIOCSCTTY, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().expect("spawn kvio cli on a pty");
    drop(command);
    let mut running = Running(Some(rustix::process::Pid::from_raw(child.id() as i32).unwrap()));
    let (done, exit) = mpsc::channel();
    thread::spawn(move || {
        let _ = done.send({ child }.wait());
    });
    let mut keys = std::fs::File::from(master);
    let mut shown = keys.try_clone().unwrap();
    let (tx, chunks) = mpsc::channel();
    // Ends with EIO once the child has exited and the pty's last slave is closed.
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut shown, &mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut screen = Screen { chunks, seen: String::new() };
    let mut type_keys = |keys_: &[u8]| keys.write_all(keys_).unwrap();

    screen.wait_for(&format!("kvio {addr}> "), 1);
    type_keys(b"put greeting hello\r");
    screen.wait_for("\nOK\r\n", 1);
    type_keys(b"get greeting\r");
    screen.wait_for("\nhello\r\n", 1);
    // Up arrow: the last line again.
    type_keys(b"\x1b[A\r");
    screen.wait_for("\nhello\r\n", 2);
    // A typo mended: Backspace, then the right letter.
    type_keys(b"get greetinx\x7fg\r");
    screen.wait_for("\nhello\r\n", 3);
    type_keys(b"quit\r");
    let Ok(Ok(status)) = exit.recv_timeout(RUN_TIMEOUT) else {
        panic!("kvio cli did not leave after quit; the screen: {:?}", screen.seen);
    };
    running.0 = None;
    assert!(status.success(), "{status:?}; the screen: {:?}", screen.seen);
    let history = std::fs::read_to_string(home.join(".kvio_history")).unwrap_or_default();
    std::fs::remove_dir_all(&home).unwrap();
    assert!(history.contains("put greeting hello") && history.contains("get greeting"), "{history:?}");
    assert_eq!(server.terminate().stopped_counts()[1], 4, "a put and three gets");
}
