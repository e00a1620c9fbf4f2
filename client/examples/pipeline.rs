//! Puts 10,000 keys in one pipeline, then reads them back in another, and
//! counts what the server stored and refused.
//!
//! ```text
//! cargo run -p kvio-client --example pipeline -- 127.0.0.1:7878
//! ```
use std::time::{Duration, Instant};

use kvio_client::{Client, Error, Reply};

fn main() -> Result<(), Error> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7878".to_owned());
    let mut client = Client::connect(addr.as_str(), Duration::from_secs(5))?;
    let n = 10_000;
    let started = Instant::now();
    let mut pipeline = client.pipeline();
    for i in 0..n {
        pipeline.put(&format!("key{i}"), &format!("value{i}"));
    }
    let stored = pipeline.run()?.iter().filter(|r| **r == Reply::Stored).count();
    for i in 0..n {
        pipeline.get(&format!("key{i}"));
    }
    let found = pipeline.run()?.iter().filter(|r| matches!(r, Reply::Found(_))).count();
    println!("{stored} of {n} stored, {found} found, in {:?}", started.elapsed());
    Ok(())
}
