// The doctests' server: kvio's request handling (kvio-core's `Connection`
// and `Store`, kvio-proto's handler: the code every kvio server runs) on a
// free loopback port, a thread per connection, with the default limits
// (1 MiB frames, 1 KiB keys). Built from this crate's own dependencies and
// packaged with it (doc/ is not excluded), so the doctests also run from
// the published .crate, where kvio's server is not a dependency. Not
// kvio's server: no idle timeout, memory cap or linger; the tests in
// tests/ run against that one. Included by the doctests (hidden lines).

/// A server on 127.0.0.1 that stops accepting when dropped.
#[allow(dead_code)]
struct TestServer {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[allow(dead_code)]
impl TestServer {
    /// A server with the default limits: 1 MiB frames, 100,000 entries, 64 MiB.
    fn start() -> TestServer {
        use std::sync::{Arc, Mutex, atomic::AtomicBool, atomic::Ordering};
        const ENTRIES: usize = 100_000;
        const BYTES: usize = 64 << 20;
        let limits = kvio_core::StoreLimits::for_frame(kvio_core::DEFAULT_MAX_FRAME_LEN, ENTRIES, BYTES);
        let slots = vec![kvio_core::store::Slot::EMPTY; kvio_core::store::slots_for(ENTRIES)];
        let store = Arc::new(Mutex::new(kvio_core::Store::with_storage(slots, vec![0u8; BYTES], limits)));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("a bound address");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                if let Ok(stream) = stream {
                    let store = store.clone();
                    std::thread::spawn(move || serve_connection(stream, &store));
                }
            }
        });
        TestServer { addr, stop, thread: Some(thread) }
    }

    /// Where it listens.
    fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Wakes the accept loop, which then sees the stop.
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers one connection until the client closes it or its framing breaks
/// (then the error frame is written and the connection closed, as kvio does).
fn serve_connection<S: kvio_core::KeyValueStore>(mut stream: std::net::TcpStream, store: &std::sync::Mutex<S>) {
    use std::io::{Read, Write};
    let mut connection = kvio_core::Connection::default();
    let (mut payload, mut out) = (Vec::new(), Vec::new());
    let mut input = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut input) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut taken = 0;
        while taken < n {
            let received = {
                let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
                let mut handler = kvio_proto::KeyValueHandler::new(&mut *store);
                // 0: the store's clock (nothing here expires).
                connection.receive(&input[taken..n], 0, &mut payload, &mut handler, &mut out)
            };
            taken += received.consumed;
            if stream.write_all(&out).is_err() {
                return;
            }
            out.clear();
            if matches!(
                received.outcome,
                kvio_core::Outcome::Close(_) | kvio_core::Outcome::Quit | kvio_core::Outcome::OutputFull
            ) {
                let _ = stream.shutdown(std::net::Shutdown::Write);
                return;
            }
        }
    }
}
