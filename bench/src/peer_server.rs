//! The servers of `kvio bench peers` as processes: where each program is
//! (`kvio` beside this binary, `redis-server` and `memcached` on PATH), its
//! arguments (one worker thread, 127.0.0.1, a free port), starting it pinned
//! like `compare`'s servers and knowing when it accepts connections.
//! Stopping is `compare`'s `Running::stop`: SIGTERM by PID, bounded, then SIGKILL.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use crate::compare::{self, Cores, Running};
use crate::load::Protocol;

/// Bound on a server's readiness.
pub(crate) const SERVER_WAIT: Duration = Duration::from_secs(10);
/// Why a server did not start: it exited before it listened.
const EXITED: &str = "it exited";
/// The cas a record carries when kvio serves memcached's protocol.
const CAS_LEN: usize = 8;
/// memcached's memory limit (`-m`, MiB): more than any run here stores.
const MEMCACHED_MIB: usize = 4096;

/// A server in the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Peer {
    /// `kvio serve --flavor epoll`.
    Epoll,
    /// `kvio serve --flavor uring`.
    Uring,
    /// `kvio serve --flavor epoll --resp`, driven over RESP.
    EpollResp,
    /// `kvio serve --flavor uring --resp`, driven over RESP.
    UringResp,
    /// `kvio serve --flavor epoll --memcache`, driven over memcached's text protocol.
    EpollMemcache,
    /// `kvio serve --flavor uring --memcache`, driven over memcached's text protocol.
    UringMemcache,
    /// `redis-server --io-threads 1 --save '' --appendonly no`.
    Redis,
    /// `memcached -t 1 -U 0`.
    Memcached,
}

impl Peer {
    /// Every server, kvio's first (the ratios are against epoll), each
    /// kvio-over-a-peer's-protocol before that peer.
    pub const ALL: [Peer; 8] = [
        Peer::Epoll,
        Peer::Uring,
        Peer::EpollResp,
        Peer::UringResp,
        Peer::Redis,
        Peer::EpollMemcache,
        Peer::UringMemcache,
        Peer::Memcached,
    ];

    /// Name in tables and files.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Epoll => "epoll",
            Peer::Uring => "uring",
            Peer::EpollResp => "epoll-resp",
            Peer::UringResp => "uring-resp",
            Peer::EpollMemcache => "epoll-memcache",
            Peer::UringMemcache => "uring-memcache",
            Peer::Redis => "redis",
            Peer::Memcached => "memcached",
        }
    }

    /// The protocol the load generator speaks to it.
    pub fn protocol(self) -> Protocol {
        match self {
            Peer::Epoll | Peer::Uring => Protocol::Kvio,
            Peer::Redis | Peer::EpollResp | Peer::UringResp => Protocol::Resp,
            Peer::Memcached | Peer::EpollMemcache | Peer::UringMemcache => Protocol::Memcache,
        }
    }

    /// Whether it is kvio (over whichever protocol).
    pub fn is_kvio(self) -> bool {
        self.flavor().is_some()
    }

    /// kvio's flavor, for kvio's contestants.
    fn flavor(self) -> Option<&'static str> {
        match self {
            Peer::Epoll | Peer::EpollResp | Peer::EpollMemcache => Some("epoll"),
            Peer::Uring | Peer::UringResp | Peer::UringMemcache => Some("uring"),
            Peer::Redis | Peer::Memcached => None,
        }
    }

    /// The peer a kvio contestant speaking its protocol is judged against.
    pub fn rival(self) -> Option<Peer> {
        self.flavor()?;
        match self.protocol() {
            Protocol::Resp => Some(Peer::Redis),
            Protocol::Memcache => Some(Peer::Memcached),
            Protocol::Kvio => None,
        }
    }

    /// The program: `kvio` beside this binary, or the peer found on PATH.
    pub fn program(self) -> Result<PathBuf, String> {
        let (binary, package) = match self {
            Peer::Redis => ("redis-server", "redis-server"),
            Peer::Memcached => ("memcached", "memcached"),
            _ => return compare::program(true),
        };
        find_on_path(binary).ok_or_else(|| {
            format!("{binary} is not installed (not on PATH; Debian: apt-get install {package}): skipped")
        })
    }

    /// Its arguments: one worker thread, on `port` of 127.0.0.1; kvio's
    /// store holding `entries` entries of `bytes` key and value bytes.
    fn args(self, port: u16, entries: usize, bytes: usize) -> Vec<String> {
        let port = port.to_string();
        let mut args: Vec<String> = match self {
            Peer::Epoll
            | Peer::Uring
            | Peer::EpollResp
            | Peer::UringResp
            | Peer::EpollMemcache
            | Peer::UringMemcache => {
                let flavor = self.flavor().unwrap_or("epoll");
                let addr = format!("127.0.0.1:{port}");
                // With --memcache every record also carries memcached's cas.
                let bytes = if self.protocol() == Protocol::Memcache { bytes + entries * CAS_LEN } else { bytes };
                let (entries, bytes) = (entries.to_string(), bytes.to_string());
                // Over another protocol, `port` is that protocol's and kvio
                // frames get a port of the kernel's choosing, unused.
                let (frames, other) = match self.protocol() {
                    Protocol::Kvio => (addr.as_str(), None),
                    Protocol::Resp => ("127.0.0.1:0", Some("--resp")),
                    Protocol::Memcache => ("127.0.0.1:0", Some("--memcache")),
                };
                let a = ["serve", "--flavor", flavor, "--addr", frames, "--store-entries", &entries];
                let other = other.into_iter().flat_map(|o| [o, &addr]);
                a.into_iter().chain(["--store-bytes", &bytes]).chain(other).map(String::from).collect()
            }
            Peer::Redis => [
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--io-threads",
                "1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
                "--logfile",
                "",
                "--maxclients",
                "10000",
            ]
            .map(String::from)
            .to_vec(),
            Peer::Memcached => {
                let a = ["-p", &port, "-l", "127.0.0.1", "-U", "0", "-t", "1", "-c", "10240"];
                a.into_iter().map(String::from).chain(["-m".to_owned(), MEMCACHED_MIB.to_string()]).collect()
            }
        };
        // memcached refuses to run as root unless told which user to be.
        if self == Peer::Memcached && rustix::process::geteuid().is_root() {
            args.extend(["-u".to_owned(), "root".to_owned()]);
        }
        args
    }

    /// Starts it on a free loopback port, pinned as `cores` says, and
    /// returns once it accepts connections (bounded by [`SERVER_WAIT`] per
    /// try). The port is free when picked but may be taken before the
    /// server binds it, so a server that exits at start gets two more tries
    /// on other ports.
    pub(crate) fn start(self, cores: Cores, entries: usize, bytes: usize) -> Result<Running, String> {
        let exe = self.program()?;
        let mut tries = 3;
        loop {
            let port = free_port()?;
            let mut running = compare::spawn(&exe, &self.args(port, entries, bytes), cores)?;
            running.addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
            match self.await_ready(&mut running) {
                Ok(()) => return Ok(running),
                Err(why) => {
                    let stderr = running.stderr();
                    running.kill();
                    tries -= 1;
                    if why != EXITED || tries == 0 {
                        return Err(format!("{} did not start: {why}; stderr: {stderr}", self.name()));
                    }
                }
            }
        }
    }

    /// kvio prints `addr=` and Redis `Ready to accept connections` when
    /// they listen; memcached prints nothing (only with `-vv`, which logs
    /// every command), so it is tried with connects, a few ms apart,
    /// while watching for its exit.
    fn await_ready(self, running: &mut Running) -> Result<(), String> {
        let deadline = Instant::now() + SERVER_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("not ready within {SERVER_WAIT:?}"));
            }
            let wait = if self == Peer::Memcached { left.min(Duration::from_millis(5)) } else { left };
            match running.lines.recv_timeout(wait) {
                Ok(Some(line)) => match self {
                    Peer::Epoll | Peer::Uring if line.contains("addr=") => return Ok(()),
                    // The line after the start-up line, once that protocol's listener is bound.
                    Peer::EpollResp | Peer::UringResp if line.starts_with("kvio serve: resp=") => return Ok(()),
                    Peer::EpollMemcache | Peer::UringMemcache if line.starts_with("kvio serve: memcache=") => {
                        return Ok(());
                    }
                    Peer::Redis if line.contains("Ready to accept connections") => return Ok(()),
                    _ => {}
                },
                Ok(None) | Err(RecvTimeoutError::Disconnected) => return Err(EXITED.into()),
                Err(RecvTimeoutError::Timeout) => {}
            }
            if self == Peer::Memcached && TcpStream::connect(running.addr).is_ok() {
                return Ok(());
            }
        }
    }
}

fn find_on_path(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    // Debian puts daemons in sbin directories, which a user's PATH may lack.
    let extra = ["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from);
    std::env::split_paths(&path).chain(extra).map(|d| d.join(binary)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A loopback port nobody listens on now (the kernel's pick, released for
/// the server to bind).
fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn each_server_gets_one_worker_on_loopback() {
        let redis = Peer::Redis.args(7000, 1, 1);
        assert!(redis.windows(2).any(|w| w == ["--io-threads", "1"]) && redis.contains(&"127.0.0.1".into()));
        assert!(redis.windows(2).any(|w| w == ["--save", ""]) && redis.windows(2).any(|w| w == ["--appendonly", "no"]));
        let mc = Peer::Memcached.args(7000, 1, 1);
        for pair in [["-t", "1"], ["-l", "127.0.0.1"], ["-U", "0"], ["-p", "7000"]] {
            assert!(mc.windows(2).any(|w| w == pair), "{pair:?} in {mc:?}");
        }
        let kvio = Peer::Uring.args(7000, 5, 99);
        assert_eq!(kvio[..5], ["serve", "--flavor", "uring", "--addr", "127.0.0.1:7000"]);
        assert!(kvio.windows(2).any(|w| w == ["--store-entries", "5"]) && kvio.ends_with(&["99".into()]));
        // Over RESP or memcached's protocol, the given port is that protocol's.
        let resp = Peer::UringResp.args(7000, 5, 99);
        assert_eq!(resp[..5], ["serve", "--flavor", "uring", "--addr", "127.0.0.1:0"]);
        assert!(resp.ends_with(&["--resp".into(), "127.0.0.1:7000".into()]));
        let mc = Peer::EpollMemcache.args(7000, 5, 99);
        assert_eq!(mc[..5], ["serve", "--flavor", "epoll", "--addr", "127.0.0.1:0"]);
        assert!(mc.ends_with(&["--memcache".into(), "127.0.0.1:7000".into()]));
        assert!(mc.windows(2).any(|w| w == ["--store-bytes", "139"]), "99 + 5 cas: {mc:?}");
        assert_eq!(Peer::EpollResp.protocol(), Protocol::Resp);
        assert_eq!((Peer::UringMemcache.rival(), Peer::Uring.rival()), (Some(Peer::Memcached), None));
    }
}
