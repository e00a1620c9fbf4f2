//! Stores a value and reads it back.
//!
//! ```text
//! kvio serve &                      # 127.0.0.1:7878
//! cargo run -p kvio-client --example put_get -- 127.0.0.1:7878
//! ```
use std::time::Duration;

use kvio_client::{Client, Error};

fn main() -> Result<(), Error> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7878".to_owned());
    let mut client = Client::connect(addr.as_str(), Duration::from_secs(5))?;
    client.put("greeting", "hello from kvio-client")?;
    match client.get("greeting")? {
        Some(value) => println!("greeting = {value}"),
        None => println!("greeting is not there"),
    }
    Ok(())
}
