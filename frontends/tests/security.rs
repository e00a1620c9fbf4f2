//! Issue 29 against the built binary: a shared secret on every protocol
//! (before, wrong, right, per connection, the close after three wrong
//! ones), TLS on every flavor (kvio frames, RESP and memcached), what a
//! plaintext client and junk get, client certificates (`--tls-client-ca`), 50 TLS clients at once, a certificate
//! reload under load, and the clients people use: `openssl s_client`,
//! `redis-cli --tls`, redis-py with `ssl=True`.
//!
//! The certificates are made here, in a temporary directory (rcgen): a
//! test CA and a server certificate for `localhost` and 127.0.0.1; no key
//! is committed. Every socket has a timeout; every server is on loopback.

#[macro_use]
mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Flavor, IO_TIMEOUT, Server};
use kvio_client::{Client as KvClient, Error as ClientError, Options};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

per_flavor!([blocking: Blocking, threaded: Threaded, busy_poll: BusyPoll, epoll: Epoll, epoll_threads2: EpollLoops, uring: Uring, uring_threads2: UringLoops] [
    a_secret_is_asked_on_every_protocol,
    tls_serves_every_protocol_and_closes_what_is_not_tls,
    fifty_tls_clients_at_once,
]);

per_flavor!([threaded_reload: Threaded, epoll_reload: Epoll, uring_reload: Uring] [
    a_certificate_reload_under_load_fails_no_request,
]);

per_flavor!([threaded_client_ca: Threaded, epoll_client_ca: Epoll] [
    a_client_ca_serves_its_clients_and_refuses_the_others,
]);

per_flavor!([blocking_handshake: Blocking, epoll_handshake: Epoll] [
    a_silent_handshake_is_closed_at_its_deadline_with_no_idle_timeout,
]);

const SECRET: &str = "correct-horse-battery-staple";

/// A temporary directory with the test's files, removed on drop.
struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(name: &str) -> Files {
        let dir = std::env::temp_dir().join(format!("kvio-security-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Files { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The secret's file, readable by its owner only.
    fn secret(&self) -> PathBuf {
        let path = self.path("secret");
        fs::write(&path, format!("{SECRET}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// A CA (`ca.crt`) and a server certificate it signed for localhost
    /// and 127.0.0.1 (`server.crt`, `server.key`); written again, the pair
    /// is a new one from the same CA.
    fn certificates(&self) -> Certs {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "kvio test CA (made by the test, thrown away)");
        let ca = CertifiedIssuer::self_signed(params, ca_key).unwrap();
        fs::write(self.path("ca.crt"), ca.pem()).unwrap();
        let certs = Certs { ca, dir: self.dir.clone() };
        certs.issue();
        certs
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

struct Certs {
    ca: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
}

impl Certs {
    /// Writes a new server certificate and key (the key's file mode 600); its DER.
    fn issue(&self) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        // Key first, then the certificate: a reload reads a matching pair
        // once both are written (the test signals only after both).
        let key_path = self.dir.join("server.key");
        fs::write(&key_path, key.serialize_pem()).unwrap();
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(self.dir.join("server.crt"), cert.pem()).unwrap();
        cert.der().clone()
    }

    fn cert(&self) -> String {
        self.dir.join("server.crt").display().to_string()
    }

    fn key(&self) -> String {
        self.dir.join("server.key").display().to_string()
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        Arc::new(self.client_builder().with_no_client_auth())
    }

    /// A client that trusts this CA's server and shows `identity` (a
    /// client certificate and its key).
    fn client_config_as(
        &self,
        (chain, key): (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    ) -> Arc<rustls::ClientConfig> {
        Arc::new(self.client_builder().with_client_auth_cert(chain, key).unwrap())
    }

    fn client_builder(&self) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        rustls::ClientConfig::builder_with_provider(kvio::host::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
    }

    /// A client certificate this CA signed (for client authentication), and its key.
    fn client_identity(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["client.test".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "kvio test client");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (vec![cert.der().clone()], PrivateKeyDer::try_from(key.serialize_der()).unwrap())
    }
}

/// The address after `kvio serve: NAME=` on the server's next stdout lines.
fn announced(server: &Server, name: &str) -> SocketAddr {
    let prefix = format!("kvio serve: {name}=");
    for _ in 0..4 {
        let line = server.next_stdout_line();
        if let Some(addr) = line.strip_prefix(&prefix) {
            return addr.parse().unwrap();
        }
    }
    panic!("no {prefix} line");
}

/// A server of `flavor` with RESP and memcached listeners too (but blocking,
/// which serves one listener), with `args`; its three addresses.
fn start(flavor: Flavor, args: &[&str]) -> (Server, SocketAddr, Option<SocketAddr>, Option<SocketAddr>) {
    let mut all = args.to_vec();
    if flavor != Flavor::Blocking {
        all.extend(["--resp", "127.0.0.1:0", "--memcache", "127.0.0.1:0"]);
    }
    let server = Server::start(flavor, &all);
    let (resp, memcache) = if flavor == Flavor::Blocking {
        (None, None)
    } else {
        (Some(announced(&server, "resp")), Some(announced(&server, "memcache")))
    };
    let kvio = server.addr();
    (server, kvio, resp, memcache)
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Writes `ask` and reads until `want` bytes came (or the stream ends).
fn exchange<S: Read + Write>(stream: &mut S, ask: &[u8], want: usize) -> String {
    stream.write_all(ask).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading (have {:?}): {e}", String::from_utf8_lossy(&got)),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn a_secret_is_asked_on_every_protocol(flavor: Flavor) {
    let files = Files::new(&format!("auth-{}", flavor.name()));
    let secret = files.secret();
    let (_server, kvio, resp, memcache) = start(flavor, &["--auth-file", secret.to_str().unwrap()]);
    let timeout = IO_TIMEOUT;
    {
        // kvio frames, through kvio-client: before, wrong, right.
        let mut anonymous = KvClient::connect(kvio, timeout).unwrap();
        match anonymous.get("k") {
            Err(ClientError::Server { reason, .. }) => assert_eq!(reason, "authentication required"),
            other => panic!("{other:?}"),
        }
        drop(anonymous);
        let wrong = KvClient::connect_with(kvio, timeout, Options::default().secret("nope"));
        assert!(
            matches!(&wrong, Err(ClientError::Auth { reason, .. }) if reason.contains("wrong secret")),
            "{wrong:?}"
        );
        let mut client = KvClient::connect_with(kvio, timeout, Options::default().secret(SECRET)).unwrap();
        client.put("k", "v").unwrap();
        assert_eq!(client.get("k").unwrap().as_deref(), Some("v"));
    }
    // Three wrong secrets close the connection (kvio frames, raw).
    let mut raw = common::Client::connect(kvio);
    for _ in 0..3 {
        let answer = raw.request(&common::msg(5, "", "guess"));
        assert_eq!((answer.kind, answer.status, answer.value.as_str()), (5, common::NOT_OK, "wrong secret"));
    }
    raw.expect_eof();
    let Some(resp) = resp else { return };
    let mut a = tcp(resp);
    let mut b = tcp(resp);
    assert_eq!(exchange(&mut a, b"GET k\r\n", 33), "-NOAUTH Authentication required.\r\n");
    let wrongpass = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    assert_eq!(exchange(&mut a, b"AUTH guess\r\n", wrongpass.len()), wrongpass);
    let ok = exchange(&mut a, format!("AUTH default {SECRET}\r\nGET k\r\n").as_bytes(), 12);
    assert_eq!(ok, "+OK\r\n$1\r\nv\r\n");
    assert_eq!(exchange(&mut b, b"GET k\r\n", 33), "-NOAUTH Authentication required.\r\n", "per connection");
    let hello = exchange(&mut b, format!("HELLO 2 AUTH default {SECRET}\r\n").as_bytes(), 20);
    assert!(hello.starts_with("*14\r\n"), "{hello}");
    let mut m = tcp(memcache.unwrap());
    assert_eq!(exchange(&mut m, b"get k\r\n", 30), "CLIENT_ERROR unauthenticated\r\n");
    let auth = format!("set auth 0 0 {}\r\nkvio {SECRET}\r\nget k\r\n", SECRET.len() + 5);
    assert_eq!(exchange(&mut m, auth.as_bytes(), 28), "STORED\r\nVALUE k 0 1\r\nv\r\nEND\r\n");
}

/// TLS over `addr`, its handshake done.
fn tls(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut socket = tcp(addr);
    let mut conn = rustls::ClientConnection::new(config.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut socket).unwrap();
    }
    rustls::StreamOwned::new(conn, socket)
}

/// Reads until the end of stream (a reset counts as one); what came.
fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("not closed: {e}"),
        }
    }
}

fn tls_serves_every_protocol_and_closes_what_is_not_tls(flavor: Flavor) {
    let files = Files::new(&format!("tls-{}", flavor.name()));
    let certs = files.certificates();
    let (server, kvio, resp, memcache) = start(flavor, &["--tls-cert", &certs.cert(), "--tls-key", &certs.key()]);
    let config = certs.client_config();
    let options = || Options::default().tls(config.clone(), ServerName::try_from("localhost").unwrap());
    let mut client = KvClient::connect_with(kvio, IO_TIMEOUT, options()).unwrap();
    client.put("k", "v").unwrap();
    assert_eq!(client.get("k").unwrap().as_deref(), Some("v"));
    let big = "b".repeat(200_000);
    client.put("big", &big).unwrap();
    assert!(client.get("big").unwrap().as_deref() == Some(big.as_str()), "a 200 KB value round-trips");
    drop(client);
    // A plaintext kvio request and junk: an alert (or nothing), then the close.
    if flavor.serves_concurrently() {
        let mut good = KvClient::connect_with(kvio, IO_TIMEOUT, options()).unwrap();
        let mut plain = tcp(kvio);
        plain.write_all(&[0x11, 0, 0, 0, 0x0a, 1, b'k', 0x18, 1, b'@', b'E', b'O', b'F', b'@']).unwrap();
        let said = until_closed(&mut plain);
        assert!(said.is_empty() || said[0] == 0x15, "an alert record at most: {said:?}");
        let mut junk = tcp(kvio);
        // A whole handshake record: a ClientHello of four bytes of junk.
        junk.write_all(&[0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef]).unwrap();
        let said = until_closed(&mut junk);
        assert!(said.is_empty() || said[0] == 0x15, "an alert record at most: {said:?}");
        assert_eq!(good.get("k").unwrap().as_deref(), Some("v"), "the others are served on");
    }
    if let (Some(resp), Some(memcache)) = (resp, memcache) {
        let mut r = tls(resp, &config);
        assert_eq!(exchange(&mut r, b"GET k\r\n", 7), "$1\r\nv\r\n");
        let mut m = tls(memcache, &config);
        assert_eq!(exchange(&mut m, b"get k\r\n", 20), "VALUE k 0 1\r\nv\r\nEND\r\n");
    }
    drop(server);
}

fn fifty_tls_clients_at_once(flavor: Flavor) {
    let files = Files::new(&format!("fifty-{}", flavor.name()));
    let certs = files.certificates();
    let secret = files.secret();
    let (_server, kvio, _, _) = start(
        flavor,
        &["--tls-cert", &certs.cert(), "--tls-key", &certs.key(), "--auth-file", secret.to_str().unwrap()],
    );
    let config = certs.client_config();
    let clients = if flavor.serves_concurrently() { 50 } else { 10 };
    thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|i| {
                let config = config.clone();
                scope.spawn(move || {
                    let options =
                        Options::default().secret(SECRET).tls(config, ServerName::try_from("localhost").unwrap());
                    let mut client = KvClient::connect_with(kvio, Duration::from_secs(20), options).unwrap();
                    for j in 0..20 {
                        let (key, value) = (format!("c{i}-{j}"), format!("v{i}-{j}"));
                        client.put(&key, &value).unwrap();
                        assert_eq!(client.get(&key).unwrap(), Some(value));
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("a client failed");
        }
    });
}

/// How a TLS client with `config` is refused: its handshake fails, or
/// (TLS 1.3: the client's part of the handshake is over before the server
/// has checked its certificate) its first request gets the server's alert
/// or the close, never an answer. Panics if it is answered or nothing
/// happens within the socket's timeout.
fn refused(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> String {
    let mut socket = tcp(addr);
    let mut conn = rustls::ClientConnection::new(config.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut socket) {
            return format!("handshake: {e}");
        }
    }
    let mut stream = rustls::StreamOwned::new(conn, socket);
    let get = common::msg_frame(&common::msg(common::GET, "k", ""));
    if let Err(e) = stream.write_all(&get).and_then(|()| stream.flush()) {
        return format!("writing: {e}");
    }
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => "closed".to_owned(),
        Ok(n) => panic!("answered without a valid client certificate: {:?}", &buf[..n]),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            panic!("neither refused nor answered within {IO_TIMEOUT:?}")
        }
        Err(e) => format!("reading: {e}"),
    }
}

/// `--tls-client-ca`: a client whose certificate that CA signed is served;
/// one without a certificate, and one with a certificate of another CA,
/// are refused at the handshake, and the server serves on.
fn a_client_ca_serves_its_clients_and_refuses_the_others(flavor: Flavor) {
    let files = Files::new(&format!("client-ca-{}", flavor.name()));
    let certs = files.certificates();
    let other_files = Files::new(&format!("client-ca-other-{}", flavor.name()));
    let other = other_files.certificates();
    let ca = certs.ca_path().display().to_string();
    let (_server, kvio, _, _) =
        start(flavor, &["--tls-cert", &certs.cert(), "--tls-key", &certs.key(), "--tls-client-ca", &ca]);
    let name = || ServerName::try_from("localhost").unwrap();
    let trusted = certs.client_config_as(certs.client_identity());
    let mut client = KvClient::connect_with(kvio, IO_TIMEOUT, Options::default().tls(trusted.clone(), name())).unwrap();
    client.put("k", "v").unwrap();
    assert_eq!(client.get("k").unwrap().as_deref(), Some("v"));

    let anonymous = refused(kvio, &certs.client_config());
    // A certificate of another CA, shown by a client that trusts this
    // server. Both test CAs have the same name, so the server finds an
    // issuer by name and its signature check fails (a DecryptError alert,
    // not UnknownCA): a stranger posing as the CA is refused too.
    let stranger = refused(kvio, &certs.client_config_as(other.client_identity()));
    for said in [&anonymous, &stranger] {
        assert!(!said.contains("invalid peer certificate"), "the server's certificate was fine: {said}");
    }
    assert_eq!(client.get("k").unwrap().as_deref(), Some("v"), "the others are served on");
    let mut again = KvClient::connect_with(kvio, IO_TIMEOUT, Options::default().tls(trusted, name())).unwrap();
    assert_eq!(again.get("k").unwrap().as_deref(), Some("v"));
    eprintln!("without a certificate: {anonymous}; another CA's: {stranger}");
}

/// With `--idle-timeout-ms 0`, a client that connects and sends nothing is
/// closed at the handshake deadline (`HANDSHAKE_TIME`, 10 s), and a
/// client waiting behind it (the blocking flavor serves one at a time) is
/// served then. Before the deadline it was held for ever.
fn a_silent_handshake_is_closed_at_its_deadline_with_no_idle_timeout(flavor: Flavor) {
    let files = Files::new(&format!("handshake-{}", flavor.name()));
    let certs = files.certificates();
    let (_server, kvio, _, _) =
        start(flavor, &["--tls-cert", &certs.cert(), "--tls-key", &certs.key(), "--idle-timeout-ms", "0"]);
    let deadline = kvio::sansio::session::HANDSHAKE_TIME;
    let wait = deadline * 4;
    let began = Instant::now();
    let mut silent = TcpStream::connect_timeout(&kvio, IO_TIMEOUT).unwrap();
    silent.set_read_timeout(Some(wait)).unwrap();
    let config = certs.client_config();
    let next = thread::spawn(move || {
        let options = Options::default().tls(config, ServerName::try_from("localhost").unwrap());
        let mut client = KvClient::connect_with(kvio, wait, options).unwrap();
        client.put("k", "v").unwrap();
    });
    let mut buf = [0u8; 64];
    match silent.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("not closed within {wait:?}: {other:?}"),
    }
    let took = began.elapsed();
    // The server's clock started a little after ours.
    assert!(took >= deadline - Duration::from_millis(500), "closed after {took:?}, before the deadline");
    next.join().expect("the next client is served");
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn a_certificate_reload_under_load_fails_no_request(flavor: Flavor) {
    let files = Files::new(&format!("reload-{}", flavor.name()));
    let certs = files.certificates();
    let (server, kvio, _, _) = start(flavor, &["--tls-cert", &certs.cert(), "--tls-key", &certs.key()]);
    let config = certs.client_config();
    let first = fs::read(certs.cert()).unwrap();
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    // A resumed session shows the certificate of the session it resumes:
    // the probe asks for a full handshake each time.
    let mut probe = (*config).clone();
    probe.resumption = rustls::client::Resumption::disabled();
    let probe = Arc::new(probe);
    let peer_cert = || {
        let stream = tls(kvio, &probe);
        stream.conn.peer_certificates().unwrap()[0].clone()
    };
    let before = peer_cert();
    thread::scope(|scope| {
        // The workers stop however this ends, a failed assertion included
        // (the scope waits for them before it reports the panic).
        let _stop = StopOnDrop(&stop);
        for i in 0..4 {
            let (config, stop, done) = (config.clone(), &stop, &done);
            scope.spawn(move || {
                let options = || Options::default().tls(config.clone(), ServerName::try_from("localhost").unwrap());
                let mut kept = KvClient::connect_with(kvio, IO_TIMEOUT, options()).unwrap();
                let mut j = 0;
                while !stop.load(Ordering::Relaxed) {
                    // One connection kept across the reload, and a new one each turn.
                    kept.put(&format!("r{i}"), &j.to_string()).expect("a request on a kept connection");
                    let mut fresh = KvClient::connect_with(kvio, IO_TIMEOUT, options()).expect("a new connection");
                    assert_eq!(
                        fresh.get(&format!("r{i}")).expect("a request on a new connection"),
                        Some(j.to_string())
                    );
                    j += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while done.load(Ordering::Relaxed) < 50 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let reissued = certs.issue();
        assert_ne!(fs::read(certs.cert()).unwrap(), first);
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(server.pid() as i32).unwrap(),
            rustix::process::Signal::HUP,
        )
        .unwrap();
        // New handshakes get the new certificate once the reload is done.
        let mut now_served = before.clone();
        while now_served != reissued && Instant::now() < deadline {
            now_served = peer_cert();
        }
        assert_eq!(now_served, reissued, "the new certificate is served");
        let at_reload = done.load(Ordering::Relaxed);
        while done.load(Ordering::Relaxed) < at_reload + 50 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(done.load(Ordering::Relaxed) >= 100, "{} rounds", done.load(Ordering::Relaxed));
    assert!(server.stderr_lines().iter().any(|l| l.contains("SIGHUP: reloaded")), "{:?}", server.stderr_lines());
}

/// Whether `program args` runs and succeeds; if not, the check that needs
/// it is skipped, saying why (CI installs them all: ci/peers).
fn available(program: &str, args: &[&str]) -> bool {
    let ran =
        Command::new(program).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
    let ok = matches!(ran, Ok(status) if status.success());
    if !ok {
        println!("skipped: `{program} {}` failed: not installed? (ci/peers installs it)", args.join(" "));
    }
    ok
}

/// Runs `program` with `args`, `input` on stdin, within 20 s: its stdout and stderr.
fn run(program: &str, args: &[&str], input: &[u8]) -> (String, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} must be installed (ci/test installs it): {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{program} {args:?} did not finish within 20 s");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// The clients people use, against one epoll server with TLS and a secret.
#[test]
fn openssl_redis_cli_and_redis_py_speak_tls_to_kvio() {
    let files = Files::new("tools");
    let certs = files.certificates();
    let secret = files.secret();
    let (_server, kvio, resp, _) = start(
        Flavor::Epoll,
        &["--tls-cert", &certs.cert(), "--tls-key", &certs.key(), "--auth-file", secret.to_str().unwrap()],
    );
    let (resp, ca) = (resp.unwrap(), certs.ca_path());
    let ca = ca.to_str().unwrap();
    let connect = format!("127.0.0.1:{}", kvio.port());
    if available("openssl", &["version"]) {
        let (out, err) = run(
            "openssl",
            &["s_client", "-connect", &connect, "-CAfile", ca, "-verify_return_error", "-servername", "localhost"],
            b"",
        );
        assert!(out.contains("Verify return code: 0 (ok)"), "openssl s_client: {out}\n{err}");
    }
    let port = resp.port().to_string();
    let redis_cli = |args: &[&str]| {
        let mut all =
            vec!["-h", "127.0.0.1", "-p", &port, "--tls", "--cacert", ca, "--sni", "localhost", "--no-auth-warning"];
        all.extend(args);
        let (out, err) = run("redis-cli", &all, b"");
        out + &err
    };
    // Through kvio-client first, so that redis-py has a key to read
    // whether redis-cli is installed or not.
    let mut client = KvClient::connect_with(
        kvio,
        IO_TIMEOUT,
        Options::default().secret(SECRET).tls(certs.client_config(), ServerName::try_from("localhost").unwrap()),
    )
    .unwrap();
    client.put("greeting", "hello").unwrap();
    if available("redis-cli", &["--version"]) {
        assert_eq!(redis_cli(&["-a", SECRET, "SET", "greeting", "hello"]).trim(), "OK");
        assert_eq!(redis_cli(&["-a", SECRET, "GET", "greeting"]).trim(), "hello");
        assert!(redis_cli(&["GET", "greeting"]).contains("NOAUTH"));
        assert!(redis_cli(&["-a", "wrong", "GET", "greeting"]).contains("WRONGPASS"));
    }
    let script = format!(
        "import redis\n\
         r = redis.Redis(host='localhost', port={port}, ssl=True, ssl_ca_certs='{ca}', password='{SECRET}', socket_timeout=5)\n\
         r.set('py', 'thon')\n\
         print(r.get('greeting').decode(), r.get('py').decode())\n\
         try:\n    redis.Redis(host='localhost', port={port}, ssl=True, ssl_ca_certs='{ca}', password='no', socket_timeout=5).get('py')\n\
         except redis.exceptions.AuthenticationError:\n    print('refused')\n"
    );
    if available("python3", &["-c", "import redis"]) {
        let (out, err) = run("python3", &["-c", &script], b"");
        assert_eq!(out.trim(), "hello thon\nrefused", "redis-py: {err}");
    }
    // kvio's own commands, with the secret and the CA from files.
    let kvio_cmd = env!("CARGO_BIN_EXE_kvio");
    let addr = format!("localhost:{}", kvio.port());
    let (out, err) = run(
        kvio_cmd,
        &["get", "greeting", "--addr", &addr, "--tls-ca", ca, "--auth-file", secret.to_str().unwrap()],
        b"",
    );
    assert_eq!(out.trim(), "hello", "{err}");
}

/// Protected mode on a real listener: bound to 0.0.0.0 without a secret,
/// it still serves loopback (the other peers are the sans-IO tests').
#[test]
fn protected_mode_serves_loopback_and_says_so() {
    let mut server = Server::start(Flavor::Epoll, &["--resp", "0.0.0.0:0"]);
    let resp = announced(&server, "resp");
    let mut local = tcp(SocketAddr::from(([127, 0, 0, 1], resp.port())));
    assert_eq!(exchange(&mut local, b"PING\r\n", 7), "+PONG\r\n");
    let lines = server.stderr_lines();
    assert!(lines.iter().any(|l| l.contains("protected mode")), "{lines:?}");
    server.terminate();
}

/// A secret file others may read is refused, and the secret is in no
/// message, argument or log line.
#[test]
fn a_readable_secret_file_is_refused_and_the_secret_is_never_shown() {
    let files = Files::new("readable");
    let secret = files.secret();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    let (out, err) = run(
        env!("CARGO_BIN_EXE_kvio"),
        &["serve", "--addr", "127.0.0.1:0", "--auth-file", secret.to_str().unwrap()],
        b"",
    );
    assert!(err.contains("chmod 600") && !err.contains(SECRET) && !out.contains(SECRET), "{out}{err}");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let server = Server::start(
        Flavor::Epoll,
        &["--auth-file", secret.to_str().unwrap(), "--log-level", "debug", "--metrics", "127.0.0.1:0"],
    );
    let line = server.next_stdout_line();
    let metrics = line.strip_prefix("kvio serve: metrics=http://").unwrap_or_else(|| panic!("{line}"));
    let metrics = metrics.trim_end_matches("/metrics").parse().unwrap();
    let mut raw = common::Client::connect(server.addr());
    raw.request(&common::msg(5, "", "a-wrong-guess"));
    raw.request(&common::msg(5, "", SECRET));
    let counted = "kvio_auth_failures_total 1\n";
    let mut scrape = String::new();
    let found = common::poll_until(IO_TIMEOUT, Duration::from_millis(20), || {
        scrape = exchange(&mut tcp(metrics), b"GET /metrics HTTP/1.0\r\n\r\n", usize::MAX);
        scrape.contains(counted).then_some(())
    });
    assert!(found.is_some(), "{scrape}");
    assert!(!scrape.contains(SECRET) && !scrape.contains("a-wrong-guess"));
    let cmdline = fs::read(format!("/proc/{}/cmdline", server.pid())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(SECRET));
    drop(raw);
    let mut server = server;
    server.terminate();
    let lines = server.stderr_lines().join("\n");
    assert!(lines.contains("wrong secret") && !lines.contains(SECRET) && !lines.contains("a-wrong-guess"), "{lines}");
}

/// The golden auth frames (proto/tests/frames.json, made with the official
/// protobuf runtime), byte for byte: with a secret, and without one (what
/// an older server answers too: kind 5 as an unknown kind).
#[test]
fn the_golden_auth_frames_byte_for_byte() {
    let v = common::vectors();
    let files = Files::new("golden");
    let secret = files.secret();
    let server = Server::start(Flavor::Epoll, &["--auth-file", secret.to_str().unwrap()]);
    let mut raw = common::Client::connect(server.addr());
    raw.send(&v["get_request"]);
    assert_eq!(raw.read_frame(), v["auth_required"]);
    raw.send(&v["auth_request"]);
    assert_eq!(raw.read_frame(), v["auth_response_ok"]);
    raw.send(&v["get_request"]);
    assert_eq!(raw.read_frame(), v["get_response_miss"]);
    let open = Server::start(Flavor::Epoll, &[]);
    let mut raw = common::Client::connect(open.addr());
    raw.send(&v["auth_request"]);
    assert_eq!(raw.read_frame(), v["auth_response_unsupported"]);
}
