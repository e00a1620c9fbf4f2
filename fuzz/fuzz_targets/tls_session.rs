#![no_main]
//! Arbitrary bytes into a TLS listener's sessions: the boundary between the
//! driver's bytes, rustls and the session (issue 29), not rustls itself.
//!
//! The input is split into chunks for up to four connections (one byte
//! picks the connection and the chunk's length), each on a protocol of
//! its own, with a secret configured; between chunks the server is asked
//! for what it would send (taken in part or whole, as a driver would) and
//! its timers move on. Whatever arrives, the server must not panic, must
//! close a connection that sent something that is not TLS (never answer
//! it in plaintext), and must keep what it holds for the socket bounded.
//!
//! The server's key and certificate are made once per process (rcgen),
//! and every handshake has the server's randomness in it, so inputs do not
//! get past a handshake: what is fuzzed is the ClientHello, what comes
//! before and instead of it, and the session's handling of every outcome.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use kvio::memory::ClientMemory;
use kvio::sansio::security::{Secret, Security};
use kvio::sansio::server::{Limits, Places, Server, Shared};
use kvio::sansio::wire::{Protocol, Protocols};
use kvio::session::{Clock, Framing, Timing};
use kvio::sharded::host_store;
use kvio::stats::Counters;
use kvio_core::StoreLimits;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn security() -> &'static Security {
    static SECURITY: OnceLock<Security> = OnceLock::new();
    SECURITY.get_or_init(|| {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let der: CertificateDer<'static> = cert.der().clone();
        let key = PrivateKeyDer::try_from(signing_key.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(kvio::host::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der], key)
            .unwrap();
        let secret = Secret::from_file_contents(b"fuzz-secret").unwrap();
        Security { secret: Some(Arc::new(secret)), protected: false, tls: Some(Arc::new(config)) }
    })
}

/// What one connection may hold for its socket at most, whatever it was
/// sent: its output limit, the records of one seal and rustls's own.
const HELD_AT_MOST: usize = 1 << 20;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let limits = Limits {
        framing: Framing { max_frame_len: 4096, output_limit: 16 * 1024 },
        timing: Timing::new(Some(Duration::from_secs(10))),
        clock: Clock::starting(t0, 0),
        max_connections: 8,
    };
    let (places, memory, counters) = (Places::default(), ClientMemory::new(1 << 24), Counters::default());
    let shared = Shared { places: &places, memory: &memory, counters: &counters, security: security() };
    let store = host_store(StoreLimits::for_frame(4096, 64, 1 << 16), 64, 1 << 16);
    let mut server = Server::new(limits, shared, Protocols::new(store));
    let protocols = [Protocol::Kvio, Protocol::Resp, Protocol::Memcache, Protocol::Kvio];
    let handles: Vec<_> = protocols.iter().map(|&p| server.accept(None, t0, p).unwrap()).collect();
    let mut now = t0;
    // Whether what `transmit` gives next starts a record (no short write
    // left part of one).
    let mut at_record = [true; 4];
    let mut rest = data;
    while let [head, tail @ ..] = rest {
        let (which, len) = (usize::from(head & 3), usize::from(head >> 2) * 8 + 1);
        let (chunk, after) = tail.split_at(len.min(tail.len()));
        rest = after;
        let handle = handles[which];
        if server.is_closed(handle) {
            continue;
        }
        server.received(handle, chunk, now);
        // Take what it would send: all of it, or half (a short write).
        let out = server.transmit(handle);
        assert!(out.len() <= HELD_AT_MOST, "{} bytes held", out.len());
        if let (Some(&first), true) = (out.first(), at_record[which]) {
            // Records only, never plaintext: a handshake (22), an alert
            // (21) or application data (23).
            assert!(matches!(first, 21..=23), "not a TLS record: {first}");
        }
        let n = if head & 0x80 != 0 { out.len() / 2 } else { out.len() };
        at_record[which] = n == out.len();
        server.advance(handle, n, now);
        while server.poll_io().is_some() {}
        now += Duration::from_millis(u64::from(head & 0x0f) * 100);
        server.handle_timeout(now);
    }
    // Silence: everyone is closed by the idle timeout at the latest.
    server.handle_timeout(now + Duration::from_secs(11));
    while server.poll_io().is_some() {}
    for handle in handles {
        assert!(server.is_closed(handle), "a connection outlived the idle timeout");
    }
});
