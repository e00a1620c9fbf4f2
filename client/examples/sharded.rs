//! Spreads keys over several servers by rendezvous hashing and shows where
//! each went (docs/scaling.md says what this gives and what it does not).
//!
//! ```text
//! kvio serve --addr 127.0.0.1:7001 & kvio serve --addr 127.0.0.1:7002 & kvio serve --addr 127.0.0.1:7003 &
//! cargo run -p kvio-client --example sharded -- 127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003
//! ```
use std::collections::BTreeMap;
use std::time::Duration;

use kvio_client::{Error, ShardedClient};

fn main() -> Result<(), Error> {
    let mut addrs: Vec<String> = std::env::args().skip(1).collect();
    if addrs.is_empty() {
        addrs = vec!["127.0.0.1:7001".into(), "127.0.0.1:7002".into(), "127.0.0.1:7003".into()];
    }
    let mut servers = ShardedClient::new(&addrs, Duration::from_secs(5));
    let mut per_server: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..1000 {
        let key = format!("user:{i}");
        servers.put(&key, "some value")?;
        *per_server.entry(servers.server_for(&key).to_owned()).or_default() += 1;
    }
    for (server, keys) in per_server {
        println!("{server}: {keys} keys");
    }
    Ok(())
}
