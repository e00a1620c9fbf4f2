//! What a running server tells RESP's `INFO` and memcached's `stats` about
//! itself: the same counters `/metrics` reads (every loop's, summed), the
//! store's fill, and what it was started with ([`Description`]). Off the
//! request path: a few relaxed loads per `INFO`.
//!
//! What it does not own: the counting ([`crate::sansio::stats`]) and the
//! replies' formats (`kvio_core::resp`, `kvio_core::memcache`).

use kvio_core::WhenFull;
use kvio_core::memcache;
use kvio_core::resp;

pub use crate::host::loops::Description;
use crate::host::loops::Loops;
use crate::sansio::stats::{Figures, PutOutcome};

/// Every loop's figures, summed.
fn totals(loops: &Loops) -> Figures {
    (0..loops.len()).map(|i| loops.figures(i)).fold(Figures::default(), |mut sum, f| {
        sum.accepted += f.accepted;
        sum.refused += f.refused;
        for (s, c) in sum.closed.iter_mut().zip(f.closed) {
            *s += c;
        }
        sum.requests += f.requests;
        sum.get_hits += f.get_hits;
        sum.get_misses += f.get_misses;
        for (s, p) in sum.puts.iter_mut().zip(f.puts) {
            *s += p;
        }
        sum.delete_hits += f.delete_hits;
        sum.delete_misses += f.delete_misses;
        sum.bytes_read += f.bytes_read;
        sum.bytes_written += f.bytes_written;
        sum
    })
}

/// Writes `name:value\r\n` (RESP) or `STAT name value\r\n` (memcached).
struct Lines<'w> {
    write: &'w mut dyn FnMut(&[u8]),
    memcached: bool,
}

impl Lines<'_> {
    fn line(&mut self, name: &str, value: impl std::fmt::Display) {
        // A small stack buffer: INFO's lines are short, and no heap is needed.
        let mut buf = [0u8; 128];
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        let written = if self.memcached {
            std::io::Write::write_fmt(&mut cursor, format_args!("STAT {name} {value}\r\n"))
        } else {
            std::io::Write::write_fmt(&mut cursor, format_args!("{name}:{value}\r\n"))
        };
        if written.is_ok() {
            let n = cursor.position() as usize;
            (self.write)(&buf[..n]);
        }
    }

    fn text(&mut self, text: &[u8]) {
        (self.write)(text);
    }
}

/// One read of everything `INFO` and `stats` say.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    figures: Figures,
    open: usize,
    client_memory: usize,
    store_bytes: u64,
    evictions: u64,
    expired: u64,
    uptime: u64,
    now_unix: u64,
}

fn snapshot(loops: &Loops) -> Snapshot {
    let description = loops.description();
    let uptime = description.started.elapsed().as_secs();
    let fill = loops.store_fill();
    Snapshot {
        figures: totals(loops),
        open: loops.open_connections(),
        client_memory: loops.client_memory(),
        store_bytes: fill.bytes,
        evictions: fill.evictions,
        expired: fill.expired,
        uptime,
        now_unix: description.started_unix + uptime,
    }
}

impl resp::Info for &Loops {
    fn info(&mut self, section: Option<&[u8]>, entries: usize, write: &mut dyn FnMut(&[u8])) {
        let wants = |name: &[u8]| {
            section.is_none_or(|s| s.eq_ignore_ascii_case(name) || s.eq_ignore_ascii_case(b"all") || s == b"default")
        };
        let d = self.description();
        let s = snapshot(self);
        let mut out = Lines { write, memcached: false };
        if wants(b"server") {
            out.text(b"# Server\r\n");
            out.line("redis_version", resp::handler::REDIS_VERSION);
            out.line("kvio_version", env!("CARGO_PKG_VERSION"));
            out.line("redis_mode", "standalone");
            out.line("os", std::env::consts::OS);
            out.line("arch_bits", usize::BITS);
            out.line("io_model", d.flavor);
            out.line("event_loops", self.len());
            out.line("process_id", std::process::id());
            out.line("uptime_in_seconds", s.uptime);
            out.line("uptime_in_days", s.uptime / 86_400);
            out.text(b"\r\n");
        }
        if wants(b"clients") {
            out.text(b"# Clients\r\n");
            out.line("connected_clients", s.open);
            out.line("maxclients", d.max_connections);
            out.text(b"\r\n");
        }
        if wants(b"memory") {
            out.text(b"# Memory\r\n");
            out.line("used_memory", s.store_bytes + s.client_memory as u64);
            out.line("used_memory_dataset", s.store_bytes);
            out.line("client_memory", s.client_memory);
            out.line("maxmemory", d.store_bytes);
            let policy = if d.when_full == WhenFull::Evict { "allkeys-lru" } else { "noeviction" };
            out.line("maxmemory_policy", policy);
            out.text(b"\r\n");
        }
        if wants(b"stats") {
            let f = &s.figures;
            out.text(b"# Stats\r\n");
            out.line("total_connections_received", f.accepted);
            out.line("total_commands_processed", f.requests);
            out.line("rejected_connections", f.refused);
            out.line("total_net_input_bytes", f.bytes_read);
            out.line("total_net_output_bytes", f.bytes_written);
            out.line("keyspace_hits", f.get_hits);
            out.line("keyspace_misses", f.get_misses);
            out.line("evicted_keys", s.evictions);
            out.line("expired_keys", s.expired);
            out.text(b"\r\n");
        }
        if wants(b"keyspace") {
            resp::handler::keyspace(entries, out.write);
        }
    }
}

impl memcache::Stats for &Loops {
    fn stats(&mut self, entries: usize, write: &mut dyn FnMut(&[u8])) {
        let d = self.description();
        let s = snapshot(self);
        let f = &s.figures;
        let mut out = Lines { write, memcached: true };
        out.line("pid", std::process::id());
        out.line("uptime", s.uptime);
        out.line("time", s.now_unix);
        out.line("version", memcache::handler::MEMCACHED_VERSION);
        out.line("kvio_version", env!("CARGO_PKG_VERSION"));
        out.line("pointer_size", usize::BITS);
        out.line("curr_connections", s.open);
        out.line("total_connections", f.accepted);
        out.line("rejected_connections", f.refused);
        out.line("max_connections", d.max_connections);
        out.line("cmd_get", f.get_hits + f.get_misses);
        out.line("cmd_set", f.puts.iter().sum::<u64>());
        out.line("get_hits", f.get_hits);
        out.line("get_misses", f.get_misses);
        out.line("delete_hits", f.delete_hits);
        out.line("delete_misses", f.delete_misses);
        out.line("store_too_large", f.puts[PutOutcome::TooBig as usize]);
        out.line("store_no_memory", f.puts[PutOutcome::StoreFull as usize]);
        out.line("bytes_read", f.bytes_read);
        out.line("bytes_written", f.bytes_written);
        out.line("limit_maxbytes", d.store_bytes);
        out.line("threads", self.len());
        out.line("curr_items", entries);
        out.line("bytes", s.store_bytes);
        out.line("evictions", s.evictions);
        out.line("expired_unfetched", s.expired);
    }
}
