//! `kvio completions SHELL` and `kvio man` give what the shells and man
//! accept: bash parses the bash script (`bash -n`), zsh and fish theirs
//! when installed, and `man -l` renders the page without a warning, every
//! subcommand and flag in it. Every child runs under a timeout.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const KVIO: &str = env!("CARGO_BIN_EXE_kvio");
/// Bound on each child process.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `program args` with `stdin` fed in, killed by PID after [`RUN_TIMEOUT`].
fn run(program: &str, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(RUN_TIMEOUT) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            panic!("{program} {args:?} did not finish within {RUN_TIMEOUT:?}");
        }
    };
    writer.join().unwrap();
    output
}

fn installed(program: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {program}")]).output().is_ok_and(|o| o.status.success())
}

fn script(shell: &str) -> Vec<u8> {
    let out = run(KVIO, &["completions", shell], b"", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    for word in ["serve", "completions", "store-bytes", "addr"] {
        assert!(text.contains(word), "the {shell} script lacks {word}");
    }
    out.stdout
}

/// `shell check-args… <script>` must accept the script (when the shell is installed, or always if `required`).
fn parses(shell: &str, check: &[&str], required: bool) {
    let script = script(shell);
    if !installed(shell) {
        assert!(!required, "{shell} is needed for this test");
        eprintln!("{shell} is not installed: its script is generated but not parsed");
        return;
    }
    let path = std::env::temp_dir().join(format!("kvio-completions-{}.{shell}", std::process::id()));
    std::fs::write(&path, &script).unwrap();
    let mut args = check.to_vec();
    let file = path.to_str().unwrap().to_owned();
    args.push(&file);
    let out = run(shell, &args, b"", &[]);
    std::fs::remove_file(&path).unwrap();
    assert!(out.status.success(), "{shell} {check:?} refuses the script: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bash_parses_its_completions() {
    parses("bash", &["-n"], true);
}

#[test]
fn zsh_parses_its_completions() {
    parses("zsh", &["-n"], false);
}

#[test]
fn fish_parses_its_completions() {
    parses("fish", &["--no-execute"], false);
}

#[test]
fn the_man_page_renders_with_every_subcommand() {
    let page = run(KVIO, &["man"], b"", &[]);
    assert!(page.status.success(), "{}", String::from_utf8_lossy(&page.stderr));
    assert!(installed("man"), "man is needed to render the page (ci/test installs man-db when it is missing)");
    let out = run("man", &["--warnings", "-l", "-"], &page.stdout, &[("MANPAGER", "cat"), ("MANWIDTH", "100")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.is_empty(), "man -l: {:?} {stderr}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "NAME",
        "kvio - kvio: a key/value server",
        "KVIO SERVE",
        "KVIO CLI",
        "--store-bytes",
        "KVIO_LISTEN",
        "KVIO_ADDR",
    ] {
        assert!(text.contains(word), "the rendered page lacks {word:?}:\n{text}");
    }
    // One page: the subcommands are its sections, not pages of their own.
    assert!(!text.contains("kvio-serve(1)") && text.contains("runs `kvio-bench`"), "{text}");
}
