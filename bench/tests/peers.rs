//! `kvio-bench peers` as a user runs it: a tiny comparison against Redis
//! and memcached when they are installed (skipped, with the reason printed,
//! when they are not), and a missing peer named and skipped while the rest
//! still runs. Every run of the binary is bounded in time and killed by PID
//! if it overstays.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_kvio-bench");
/// Bound on one tiny comparison (about 10 s when the machine is quiet).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `kvio-bench` with `args` (and PATH set to `path` if given), killed
/// by PID if it runs longer than [`RUN_TIMEOUT`].
fn bench(args: &[&str], path: Option<&Path>) -> Output {
    let mut cmd = Command::new(BENCH);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    let child = cmd.spawn().expect("spawn kvio-bench");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(RUN_TIMEOUT) {
        Ok(out) => out.expect("kvio-bench output"),
        Err(_) => {
            let pid = rustix::process::Pid::from_raw(pid as i32).expect("a child's PID is positive");
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            panic!("kvio-bench {args:?} ran longer than {RUN_TIMEOUT:?}");
        }
    }
}

/// Where a peer's binary is, as the bench looks for it.
fn installed(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from));
    dirs.map(|d| d.join(binary)).find(|p| p.is_file())
}

/// Whether `kvio` was built beside `kvio-bench` (it is when the workspace's
/// tests are built; `cargo test -p kvio-bench` alone may not build it).
fn kvio_built() -> bool {
    Path::new(BENCH).with_file_name("kvio").is_file()
}

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvio-bench-peers-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

const TINY: [&str; 12] = [
    "peers",
    "--short",
    "--points",
    "4x1,4x4",
    "--value-sizes",
    "100,2000",
    "--keys",
    "64",
    "--warmup-ms",
    "50",
    "--duration-ms",
    "300",
];

fn results(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("peers.json")).expect("peers.json written");
    serde_json::from_str(&text).expect("peers.json is JSON")
}

#[test]
fn a_tiny_comparison_against_redis_and_memcached() {
    let mut servers: Vec<&str> = [("redis", "redis-server"), ("memcached", "memcached")]
        .into_iter()
        .filter(|(name, binary)| {
            let found = installed(binary).is_some();
            if !found {
                println!("{name}: skipped: {binary} is not installed (Debian: apt-get install {binary})");
            }
            found
        })
        .map(|(name, _)| name)
        .collect();
    if servers.is_empty() {
        println!("skipped: neither Redis nor memcached is installed");
        return;
    }
    if kvio_built() {
        // kvio over each installed peer's protocol, beside that peer.
        for (peer, kvio) in [("redis", "epoll-resp"), ("memcached", "epoll-memcache")] {
            if let Some(at) = servers.iter().position(|s| *s == peer) {
                servers.insert(at, kvio);
            }
        }
        servers.insert(0, "epoll");
    }
    let dir = out_dir("tiny");
    let list = servers.join(",");
    let mut args = TINY.to_vec();
    args.extend(["--servers", &list, "--out", dir.to_str().unwrap(), "--fill-keys", "3200"]);
    let out = bench(&args, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let r = results(&dir);
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), servers.len() * 2 * 2, "{runs:?}");
    for run in runs {
        assert_eq!(run["status"], "ok", "{run}");
        let rep = &run["report"];
        assert_eq!(rep["errors"], 0, "{run}");
        assert!(rep["requests"].as_u64().unwrap() > 0, "{run}");
        assert!(rep["p99_us"].as_f64().unwrap() > 0.0, "{run}");
        assert!(rep["server_cpu_us_per_request"].as_f64().is_some(), "{run}");
        assert!(run["peak_rss_kib"].as_u64().unwrap() > 0, "{run}");
    }
    let fills = r["fills"].as_array().unwrap();
    assert_eq!(fills.len(), servers.len());
    for f in fills {
        assert_eq!((&f["status"], &f["keys"]), (&Value::from("ok"), &Value::from(3200)), "{f}");
        assert!(f["rss_after_kib"].as_u64() >= f["rss_before_kib"].as_u64(), "{f}");
        assert!(f["bytes_per_entry"].as_f64().is_some(), "{f}");
    }
    let table = std::fs::read_to_string(dir.join("peers.md")).unwrap();
    for s in &servers {
        assert!(table.contains(&format!("| {s} | 2000 | 4x4 |")), "{s} missing from\n{table}");
    }
    // kvio over a peer's protocol is compared with that peer.
    for (kvio, peer) in [("epoll-resp", "redis"), ("epoll-memcache", "memcached")] {
        if servers.contains(&kvio) {
            assert!(table.contains(&format!(" x {peer} |")), "{kvio} against {peer} missing from\n{table}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_peer_is_named_and_the_rest_still_runs() {
    // An empty PATH: the peers are not found (unless in an sbin directory,
    // which the bench also searches).
    let empty = out_dir("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let peers = [("redis", "redis-server"), ("memcached", "memcached")];
    let hidden: Vec<_> =
        peers.iter().filter(|(_, b)| installed(b).is_none_or(|p| !p.starts_with("/usr/sbin"))).collect();
    if hidden.is_empty() {
        println!("skipped: both peers are installed in an sbin directory the bench always searches");
        return;
    }
    let names: Vec<&str> = hidden.iter().map(|(n, _)| *n).collect();
    let dir = out_dir("missing");
    let list = names.join(",");
    let mut args = TINY.to_vec();
    args.extend(["--servers", &list, "--out", dir.to_str().unwrap()]);
    let out = bench(&args, Some(&empty));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "nothing to run: {stderr}");
    for (_, binary) in &hidden {
        assert!(stderr.contains(&format!("{binary} is not installed")), "{binary}: {stderr}");
    }
    if kvio_built() {
        // kvio itself still runs, the peers' rows say why they are empty.
        let list = format!("epoll,{list}");
        let mut args = TINY.to_vec();
        args.extend(["--servers", &list, "--out", dir.to_str().unwrap(), "--fill-keys", "0"]);
        let out = bench(&args, Some(&empty));
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let r = results(&dir);
        for run in r["runs"].as_array().unwrap() {
            let want = if run["server"] == "epoll" { "ok" } else { "skipped" };
            assert_eq!(run["status"], want, "{run}");
        }
        let table = String::from_utf8_lossy(&out.stdout);
        assert!(table.contains("skipped: memcached is not installed") || !list.contains("memcached"), "{table}");
    } else {
        println!("the kvio rows are not checked: kvio is not built beside {BENCH}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&empty);
}
