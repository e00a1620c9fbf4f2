//! The READMEs' runnable commands still parse against the `kvio` command
//! line. A fenced block right after a `<!-- runnable -->` line is runnable:
//! each `kvio …` command in it (also `target/release/kvio …` and
//! `cargo run … -p kvio -- …`) is run with `--help` appended, which clap
//! answers with exit 0 only when every subcommand and flag before it
//! exists; `ci/…` scripts must exist and be executable, and
//! `cargo install --path DIR` must name a package. Words are split as the
//! shell splits them; pipes, `&&`, redirections and comments are honoured.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const KVIO: &str = env!("CARGO_BIN_EXE_kvio");
/// Bound on one `kvio … --help` run.
const RUN_TIMEOUT: Duration = Duration::from_secs(20);
/// The READMEs a user reads, from the workspace root.
const READMES: [&str; 6] =
    ["README.md", "frontends/README.md", "bench/README.md", "soak/README.md", "fuzz/README.md", "firmware/README.md"];
/// The line that marks the next fenced block as runnable.
const MARKER: &str = "<!-- runnable -->";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The lines of every runnable block of `text`, with their line numbers.
fn runnable_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((_, line)) = lines.next() {
        if line.trim() != MARKER {
            continue;
        }
        let (_, fence) = lines.next().expect("a fenced block after the marker");
        assert!(fence.starts_with("```"), "{MARKER} must be followed by a fence, not {fence:?}");
        for (n, line) in lines.by_ref() {
            if line.starts_with("```") {
                break;
            }
            out.push((n + 1, line.to_owned()));
        }
    }
    out
}

/// A shell line's simple commands: words split as the shell does, comments
/// dropped, split at `|`, `&&`, `||` and `;`, redirections removed.
fn commands(line: &str) -> Vec<Vec<String>> {
    let words = shell_words::split(line).unwrap_or_else(|e| panic!("{line:?} is not a shell line: {e}"));
    let words = words.into_iter().take_while(|w| !w.starts_with('#'));
    let mut out = vec![Vec::new()];
    let mut skip_next = false;
    for word in words {
        if skip_next {
            skip_next = false;
        } else if ["|", "&&", "||", ";"].contains(&word.as_str()) {
            out.push(Vec::new());
        } else if [">", ">>", "<", "2>"].contains(&word.as_str()) {
            skip_next = true;
        } else if !word.starts_with(['>', '<']) && !word.starts_with("2>") {
            out.last_mut().unwrap().push(word);
        }
    }
    out.retain(|c| !c.is_empty());
    out
}

/// What a runnable command asks of the repository.
#[derive(Debug, PartialEq)]
enum Check {
    /// `kvio` with these arguments must parse.
    Kvio(Vec<String>),
    /// This script must exist and be executable.
    Script(String),
    /// `cargo install --path` of this folder: it must hold a package.
    Package(String),
    /// Anything else (rustup, cd, printf…): not kvio's to check.
    Other,
}

fn check_of(command: &[String]) -> Check {
    // Leading VAR=value assignments are the shell's.
    let command: Vec<&str> = command.iter().map(String::as_str).skip_while(|w| w.contains('=')).collect();
    match command.as_slice() {
        [program, args @ ..] if program.ends_with("kvio") && !program.contains('.') => {
            Check::Kvio(args.iter().map(|a| a.to_string()).collect())
        }
        ["cargo", "run", rest @ ..] if rest.windows(2).any(|w| w == ["-p", "kvio"]) => {
            let args = rest.iter().skip_while(|&&w| w != "--").skip(1);
            Check::Kvio(args.map(|a| a.to_string()).collect())
        }
        ["cargo", "install", rest @ ..] => match rest.iter().position(|&w| w == "--path") {
            Some(i) => Check::Package(rest[i + 1].to_owned()),
            None => Check::Other,
        },
        [script, ..] if script.starts_with("ci/") => Check::Script(script.to_string()),
        _ => Check::Other,
    }
}

/// Runs `kvio args --help`; `Err` with what it said unless it exited 0.
fn parses(args: &[String]) -> Result<(), String> {
    let mut child = Command::new(KVIO)
        .args(args)
        .arg("--help")
        .env_remove("KVIO_ADDR")
        .env_remove("KVIO_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kvio");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut { stderr }, &mut text);
        let _ = tx.send((child.wait(), text));
    });
    match rx.recv_timeout(RUN_TIMEOUT) {
        Ok((Ok(status), _)) if status.success() => Ok(()),
        Ok((status, stderr)) => Err(format!("{status:?}: {stderr}")),
        Err(_) => {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(pid as i32).unwrap(),
                rustix::process::Signal::KILL,
            );
            Err(format!("no answer within {RUN_TIMEOUT:?}"))
        }
    }
}

#[test]
fn every_runnable_readme_command_parses() {
    let root = root();
    let (mut kvio_lines, mut failures) = (0, Vec::new());
    for readme in READMES {
        let text = std::fs::read_to_string(root.join(readme)).unwrap_or_else(|e| panic!("{readme}: {e}"));
        for (n, line) in runnable_lines(&text) {
            for command in commands(&line) {
                let what = format!("{readme}:{n}: {line}");
                match check_of(&command) {
                    Check::Kvio(args) => {
                        kvio_lines += 1;
                        if let Err(e) = parses(&args) {
                            // `kvio bench …` is answered by the kvio-bench beside kvio, which
                            // `cargo test -p kvio` does not rebuild (ci/test, the workspace, does).
                            let hint = if args.first().is_some_and(|a| a == "bench") {
                                "\n    (a stale kvio-bench? cargo build -p kvio-bench)"
                            } else {
                                ""
                            };
                            failures.push(format!("{what}\n    kvio {} --help: {e}{hint}", args.join(" ")));
                        }
                    }
                    Check::Script(script) => {
                        let mode = std::fs::metadata(root.join(&script)).map(|m| {
                            use std::os::unix::fs::PermissionsExt;
                            m.permissions().mode()
                        });
                        if !matches!(mode, Ok(m) if m & 0o111 != 0) {
                            failures.push(format!("{what}\n    {script} is not an executable script"));
                        }
                    }
                    Check::Package(dir) => {
                        if !root.join(&dir).join("Cargo.toml").is_file() {
                            failures.push(format!("{what}\n    {dir} holds no package"));
                        }
                    }
                    Check::Other => {}
                }
            }
        }
    }
    assert!(failures.is_empty(), "README commands that no longer parse:\n{}", failures.join("\n"));
    // The top README alone has more than this: a test that checks nothing must fail.
    assert!(kvio_lines >= 10, "only {kvio_lines} runnable kvio commands found: are the {MARKER} markers gone?");
}

#[test]
fn the_readme_is_short_and_names_its_article() {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines = text.lines().count();
    assert!(lines <= 150, "README.md has {lines} lines; keep it to 150 and put the rest in docs/ or a sub-README");
    assert!(text.contains("https://tech-lessons.in/en/blog/many_flavors_of_networking_io/"));
}

#[test]
fn shell_lines_are_read_as_the_shell_reads_them() {
    let words = |line| commands(line).into_iter().map(|c| check_of(&c)).collect::<Vec<_>>();
    let kvio = |args: &[&str]| Check::Kvio(args.iter().map(|a| a.to_string()).collect());
    assert_eq!(words(r#"kvio put DiskType "NVMe SSD"   # a comment"#), [kvio(&["put", "DiskType", "NVMe SSD"])]);
    assert_eq!(words("printf 'put a 1\\nget a\\n' | kvio cli"), [Check::Other, kvio(&["cli"])]);
    assert_eq!(words("kvio put big - < value.bin"), [kvio(&["put", "big", "-"])]);
    assert_eq!(words("kvio completions zsh > ~/.zfunc/_kvio"), [kvio(&["completions", "zsh"])]);
    assert_eq!(words("cargo run --release -p kvio -- serve"), [kvio(&["serve"])]);
    assert_eq!(words("KVIO_ADDR=x target/release/kvio get k"), [kvio(&["get", "k"])]);
    assert_eq!(words("cd fuzz && ci/fuzz"), [Check::Other, Check::Script("ci/fuzz".into())]);
    assert_eq!(words("cargo install --locked --path bench"), [Check::Package("bench".into())]);
    assert_eq!(
        runnable_lines("a\n<!-- runnable -->\n```sh\nkvio serve\n```\n```sh\nkvio nope\n```\n"),
        [(4, "kvio serve".to_owned())]
    );
}

/// The Install block's lines after `cargo install`, run as written by
/// bash in an empty home (a temp dir) whose ~/.cargo/bin holds kvio, as
/// `cargo install` leaves a new account: the completion script lands where
/// bash-completion reads it, and `man kvio` finds the page.
#[test]
fn the_install_lines_work_in_an_empty_home() {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap();
    let install = &text[text.find("## Install").expect("an Install section")..];
    let install = &install[..install[3..].find("\n## ").map_or(install.len(), |end| end + 3)];
    let lines: Vec<String> =
        runnable_lines(install).into_iter().map(|(_, l)| l).filter(|l| !l.starts_with("cargo install ")).collect();
    assert!(lines.iter().any(|l| l.contains("kvio man")), "the Install block installs the man page: {lines:?}");
    let home = std::env::temp_dir().join(format!("kvio-readme-home-{}", std::process::id()));
    let bin = home.join(".cargo/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(KVIO, bin.join("kvio")).unwrap();
    let mut script = String::from("set -euo pipefail\n");
    for line in &lines {
        script.push_str(line);
        script.push('\n');
    }
    let out = Command::new("bash")
        .args(["-c", &script])
        .env_clear()
        .env("HOME", &home)
        .env("PATH", format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display()))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .stdin(Stdio::null())
        .output()
        .expect("run bash");
    let page = String::from_utf8_lossy(&out.stdout).into_owned();
    let completion = home.join(".local/share/bash-completion/completions/kvio");
    let parsed = Command::new("bash").arg("-n").arg(&completion).status();
    std::fs::remove_dir_all(&home).unwrap();
    assert!(out.status.success(), "{lines:?} in an empty home: {}", String::from_utf8_lossy(&out.stderr));
    assert!(page.contains("KVIO SERVE") && page.contains("--store-bytes"), "`man kvio` printed: {page}");
    assert!(parsed.is_ok_and(|s| s.success()), "the completion script at {}", completion.display());
}
