//! A blocking client for [kvio](https://crates.io/crates/kvio) key/value
//! servers, std only: [`Client`] (one connection: `get`, `put`), a
//! [`Pipeline`] (many requests in one write, answers read in order), and
//! [`ShardedClient`] (several servers, each key on one of them by
//! [`Rendezvous`] hashing).
//!
//! ```
//! # include!("../doc/server.rs");
//! # fn main() -> Result<(), kvio_client::Error> {
//! # let server = TestServer::start();
//! # let addr = server.addr();
//! use std::time::Duration;
//! use kvio_client::{Client, Error, Reply};
//!
//! // addr: where `kvio serve` listens, 127.0.0.1:7878 by default.
//! let mut client = Client::connect(addr, Duration::from_secs(5))?;
//! client.put("greeting", "hello")?;
//! assert_eq!(client.get("greeting")?.as_deref(), Some("hello"));
//!
//! // Many requests, one round trip.
//! let replies = client.pipeline().put("a", "1").get("a").get("b").run()?;
//! assert_eq!(replies, [Reply::Stored, Reply::Found("1".into()), Reply::NotFound]);
//!
//! // Errors say what and where.
//! match client.put(&"k".repeat(2000), "v") {
//!     Err(e @ Error::Refused { .. }) => assert!(e.to_string().ends_with("key too long"), "{e}"),
//!     other => panic!("{other:?}"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Requests are encoded and responses decoded in place by
//! [`kvio_proto`] (the wire format is docs/protocol.md in kvio's
//! repository); the crate does not depend on prost or on the server.
//! The `examples/` folder has a program per use.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod client;
mod error;
mod sharded;

pub use client::{Client, DEFAULT_TIMEOUT, MAX_RESPONSE_LEN, Options, Pipeline, Reply, Response};
pub use error::{Error, shorten};
/// rustls, for [`Options::tls`]'s configuration (feature `tls`).
#[cfg(feature = "tls")]
pub use rustls;
pub use sharded::{Rendezvous, ShardedClient};
