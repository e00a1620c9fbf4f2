//! The load generator against in-process baselines, about a second each:
//! answers are verified, counts and percentiles are consistent, and a
//! server that answers wrongly is caught.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kvio_bench::tokio_server::{self, Runtime, TokioConfig};
use kvio_bench::{Check, LoadConfig, LoadReport, floor, load};

fn quick(addr: SocketAddrV4, check: Check) -> LoadConfig {
    LoadConfig {
        connections: 8,
        pipeline: 4,
        warmup: Duration::from_millis(100),
        duration: Duration::from_millis(700),
        connect_timeout: Duration::from_secs(5),
        drain_timeout: Duration::from_secs(2),
        check,
        server_pid: Some(std::process::id()),
        ..LoadConfig::new(addr)
    }
}

fn assert_sane(r: &LoadReport) {
    assert_eq!(r.errors, 0, "first error: {:?}", r.first_error);
    assert!(r.requests > 100, "{r:?}");
    assert!(r.total_requests >= r.requests, "{r:?}");
    assert!(r.window_secs > 0.6 && r.window_secs < 2.0, "{r:?}");
    assert!((r.requests_per_sec - r.requests as f64 / r.window_secs).abs() < 1.0);
    assert!(0.0 < r.p50_us && r.p50_us <= r.p99_us && r.p99_us <= r.p999_us && r.p999_us <= r.max_us, "{r:?}");
    assert!(r.server_cpu_us_per_request.is_some() && r.server_rss_kib.unwrap_or(0) > 0, "{r:?}");
}

/// The floor server on a thread, stopped when the returned flag is set.
fn floor_server() -> (SocketAddrV4, Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let (listener, addr) = floor::listen(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let t = std::thread::spawn(move || {
        floor::serve_on(listener, kvio_core::DEFAULT_MAX_FRAME_LEN, || flag.load(Ordering::Relaxed)).unwrap()
    });
    (addr, stop, t)
}

#[test]
fn floor_answers_are_counted_and_checked() {
    let (addr, stop, t) = floor_server();
    let r = load::run(quick(addr, Check::Framing));
    assert_sane(&r);
    // The floor answers every request with a put acknowledgement: a full
    // check must see the gets answered wrongly, and fail the run.
    let wrong = load::run(LoadConfig { duration: Duration::from_millis(200), ..quick(addr, Check::Full) });
    assert!(wrong.errors > 0, "{wrong:?}");
    assert!(wrong.first_error.as_deref().unwrap_or("").contains("get"), "{wrong:?}");
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
}

#[test]
fn tokio_baseline_serves_the_protocol() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let SocketAddr4(addr) = SocketAddr4::of(&listener);
    let cfg = TokioConfig {
        runtime: Runtime::Current,
        workers: None,
        max_frame_len: 1 << 20,
        store_entries: 4096,
        store_bytes: 1 << 20,
    };
    // The runtime thread lives until the test process exits.
    std::thread::spawn(move || tokio_server::serve_listener(listener, cfg));
    // The protocol table through the client crate first: put, hit, miss, a refused put.
    let mut client = kvio_client::Client::connect(addr, Duration::from_secs(5)).unwrap();
    client.put("k", "v").unwrap();
    assert_eq!(client.get("k").unwrap().as_deref(), Some("v"));
    assert_eq!(client.get("absent").unwrap(), None);
    let refused = client.put(&"k".repeat(2000), "v").unwrap_err();
    assert!(matches!(&refused, kvio_client::Error::Refused { reason, .. } if reason == "key too long"), "{refused}");
    let r = load::run(LoadConfig { put_ratio: 0.5, keys: 64, ..quick(addr, Check::Full) });
    assert_sane(&r);
}

#[test]
fn refused_connections_are_an_error_not_a_hang() {
    // Bind then drop: nothing listens on that port any more.
    let addr = SocketAddr4::of(&std::net::TcpListener::bind("127.0.0.1:0").unwrap()).0;
    let r = load::run(quick(addr, Check::Full));
    assert_eq!(r.requests, 0);
    assert!(r.errors > 0 && r.first_error.is_some(), "{r:?}");
}

struct SocketAddr4(SocketAddrV4);

impl SocketAddr4 {
    fn of(l: &std::net::TcpListener) -> Self {
        match l.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => SocketAddr4(a),
            other => panic!("not IPv4: {other}"),
        }
    }
}
