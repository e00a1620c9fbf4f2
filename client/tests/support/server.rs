// A real kvio server (kvio's epoll flavor, from its library) on a free
// loopback port, started in-process and stopped when dropped. Included by
// the doctests (hidden lines) and the tests, so both talk to the same server
// code that `kvio serve` runs, over real TCP.

/// A kvio server on 127.0.0.1, stopped (and joined) when dropped.
#[allow(dead_code)]
struct TestServer {
    addr: std::net::SocketAddr,
    stop: kvio::Shutdown,
    thread: Option<std::thread::JoinHandle<std::io::Result<kvio::Stats>>>,
}

#[allow(dead_code)]
impl TestServer {
    /// A server with the default limits.
    fn start() -> TestServer {
        TestServer::with_config(kvio::Config::for_flavor(kvio::Flavor::Epoll))
    }

    /// A server with `config`.
    fn with_config(config: kvio::Config) -> TestServer {
        let listener = kvio::Listener::bind("127.0.0.1:0".parse().unwrap()).expect("bind 127.0.0.1:0");
        let addr = listener.local_addr();
        let stop = kvio::Shutdown::new().expect("a shutdown socket pair");
        let shutdown = stop.clone();
        let thread = std::thread::spawn(move || kvio::serve(kvio::Flavor::Epoll, vec![listener], &config, &shutdown));
        TestServer { addr, stop, thread: Some(thread) }
    }

    /// Where it listens.
    fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // The stop is bounded (grace and linger times), whatever the clients do.
        self.stop.trigger();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
