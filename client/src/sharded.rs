//! Several servers, by key: [`Rendezvous`] places each key on one of N
//! servers by rendezvous (highest random weight) hashing, and
//! [`ShardedClient`] sends each request to its key's server, the way
//! memcached clients scale past one machine. docs/scaling.md says what this
//! gives and what it does not (no replication).
//!
//! The placement is a pure function of the key and the servers' names,
//! written out here so that any client, in any language, can compute it:
//! for each server, `score = XXH64(key, seed = XXH64(name, seed = 0))`;
//! the key goes to the server with the highest score (the first listed on
//! a tie). Adding a server moves only the keys it now wins (about 1/N of
//! them, all to it); removing one moves only its own keys.

use std::fmt;
use std::time::Duration;

use twox_hash::XxHash64;

use crate::{Client, Error};

/// Where keys go among a set of named servers (rendezvous hashing).
///
/// ```
/// use kvio_client::Rendezvous;
///
/// let three = Rendezvous::new(["10.0.0.1:7878", "10.0.0.2:7878", "10.0.0.3:7878"]);
/// let four = Rendezvous::new(["10.0.0.1:7878", "10.0.0.2:7878", "10.0.0.3:7878", "10.0.0.4:7878"]);
/// let key = "user:42";
/// let before = three.server_for(key);
/// let after = four.server_for(key);
/// // A key either stays where it was or moves to the new server.
/// assert!(after == before || after == 3);
/// assert_eq!(three.name(before), ["10.0.0.1:7878", "10.0.0.2:7878", "10.0.0.3:7878"][before]);
/// ```
#[derive(Clone, Debug)]
pub struct Rendezvous {
    names: Vec<String>,
    seeds: Vec<u64>,
}

impl Rendezvous {
    /// Servers named `names`: each name (an address, as all clients must
    /// write it the same way) decides which keys the server gets; the
    /// order of the list does not matter.
    ///
    /// ```
    /// let servers = kvio_client::Rendezvous::new(vec!["db1:7878".to_string(), "db2:7878".to_string()]);
    /// let same = kvio_client::Rendezvous::new(["db2:7878", "db1:7878"]);
    /// // The order of the list does not matter, only the names.
    /// assert_eq!(servers.name(servers.server_for("k")), same.name(same.server_for("k")));
    /// ```
    ///
    /// # Panics
    ///
    /// If `names` is empty.
    pub fn new<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Rendezvous {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        assert!(!names.is_empty(), "rendezvous hashing needs at least one server");
        let seeds = names.iter().map(|n| XxHash64::oneshot(0, n.as_bytes())).collect();
        Rendezvous { names, seeds }
    }

    /// The index (in the order given to [`new`](Self::new)) of the server that holds `key`.
    ///
    /// ```
    /// let servers = kvio_client::Rendezvous::new(["a:1", "b:1"]);
    /// assert!(servers.server_for("k") < 2);
    /// assert_eq!(servers.server_for("k"), servers.server_for("k"));
    /// ```
    pub fn server_for(&self, key: &str) -> usize {
        let mut best = (0, 0);
        for (i, &seed) in self.seeds.iter().enumerate() {
            let score = XxHash64::oneshot(seed, key.as_bytes());
            if i == 0 || score > best.1 {
                best = (i, score);
            }
        }
        best.0
    }

    /// The name of server `index`.
    ///
    /// ```
    /// let servers = kvio_client::Rendezvous::new(["a:1", "b:1"]);
    /// assert_eq!(servers.name(1), "b:1");
    /// ```
    ///
    /// # Panics
    ///
    /// If `index` is out of range.
    pub fn name(&self, index: usize) -> &str {
        &self.names[index]
    }

    /// How many servers there are.
    ///
    /// ```
    /// assert_eq!(kvio_client::Rendezvous::new(["a:1", "b:1"]).len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Always false: there is at least one server.
    ///
    /// ```
    /// assert!(!kvio_client::Rendezvous::new(["a:1"]).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A client over several kvio servers: each key's requests go to the one
/// server [`Rendezvous`] picks for it. Connections are made on first use
/// and remade after a failure (the [`Client`]'s rule: any error but a
/// refusal drops the connection), so one server down fails only its own keys.
///
/// ```
/// # include!("../doc/server.rs");
/// # fn main() -> Result<(), kvio_client::Error> {
/// # let (a, b, c) = (TestServer::start(), TestServer::start(), TestServer::start());
/// # let addrs = [a.addr().to_string(), b.addr().to_string(), c.addr().to_string()];
/// use std::time::Duration;
/// use kvio_client::ShardedClient;
///
/// // addrs: ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"], say.
/// let mut servers = ShardedClient::new(&addrs, Duration::from_secs(5));
/// servers.put("user:42", "Ada")?;
/// assert_eq!(servers.get("user:42")?.as_deref(), Some("Ada"));
/// println!("user:42 lives on {}", servers.server_for("user:42"));
/// # Ok(())
/// # }
/// ```
pub struct ShardedClient {
    placement: Rendezvous,
    clients: Vec<Option<Client>>,
    timeout: Duration,
}

impl fmt::Debug for ShardedClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardedClient").field("servers", &self.placement.names).field("timeout", &self.timeout).finish()
    }
}

impl ShardedClient {
    /// A client over the servers at `addrs` (see [`Rendezvous::new`] for
    /// why every client must name them the same way). Connects to none yet;
    /// `timeout` bounds each connect, read and write.
    ///
    /// ```
    /// use std::time::Duration;
    /// let servers = kvio_client::ShardedClient::new(["127.0.0.1:7001", "127.0.0.1:7002"], Duration::from_secs(5));
    /// assert_eq!(servers.placement().len(), 2);
    /// ```
    ///
    /// # Panics
    ///
    /// If `addrs` is empty.
    pub fn new<S: Into<String>>(addrs: impl IntoIterator<Item = S>, timeout: Duration) -> ShardedClient {
        let placement = Rendezvous::new(addrs);
        let clients = (0..placement.len()).map(|_| None).collect();
        ShardedClient { placement, clients, timeout }
    }

    /// The placement of keys on the servers.
    ///
    /// ```
    /// use std::time::Duration;
    /// let servers = kvio_client::ShardedClient::new(["127.0.0.1:7001", "127.0.0.1:7002"], Duration::from_secs(5));
    /// let index = servers.placement().server_for("k");
    /// assert_eq!(servers.placement().name(index), servers.server_for("k"));
    /// ```
    pub fn placement(&self) -> &Rendezvous {
        &self.placement
    }

    /// The address of the server that holds `key`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let servers = kvio_client::ShardedClient::new(["127.0.0.1:7001", "127.0.0.1:7002"], Duration::from_secs(5));
    /// assert!(["127.0.0.1:7001", "127.0.0.1:7002"].contains(&servers.server_for("k")));
    /// ```
    pub fn server_for(&self, key: &str) -> &str {
        self.placement.name(self.placement.server_for(key))
    }

    /// The connection to `key`'s server (connecting if there is none), for
    /// a pipeline of that server's keys.
    ///
    /// ```
    /// # include!("../doc/server.rs");
    /// # fn main() -> Result<(), kvio_client::Error> {
    /// # let (a, b) = (TestServer::start(), TestServer::start());
    /// # let addrs = [a.addr().to_string(), b.addr().to_string()];
    /// let mut servers = kvio_client::ShardedClient::new(&addrs, std::time::Duration::from_secs(5));
    /// let client = servers.client_for("k")?;
    /// client.put("k", "v")?;
    /// assert_eq!(servers.get("k")?.as_deref(), Some("v"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn client_for(&mut self, key: &str) -> Result<&mut Client, Error> {
        let index = self.placement.server_for(key);
        let slot = &mut self.clients[index];
        if slot.is_none() {
            *slot = Some(Client::connect(self.placement.name(index), self.timeout)?);
        }
        Ok(slot.as_mut().expect("connected just now"))
    }

    /// Stores `value` under `key` on its server.
    ///
    /// ```
    /// # include!("../doc/server.rs");
    /// # fn main() -> Result<(), kvio_client::Error> {
    /// # let (a, b) = (TestServer::start(), TestServer::start());
    /// # let addrs = [a.addr().to_string(), b.addr().to_string()];
    /// let mut servers = kvio_client::ShardedClient::new(&addrs, std::time::Duration::from_secs(5));
    /// servers.put("user:1", "Ada")?;
    /// servers.put("user:2", "Grace")?;
    /// assert_eq!(servers.get("user:2")?.as_deref(), Some("Grace"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn put(&mut self, key: &str, value: &str) -> Result<(), Error> {
        self.with_client(key, |c| c.put(key, value))
    }

    /// The value under `key` on its server, `None` if there is none.
    ///
    /// ```
    /// # include!("../doc/server.rs");
    /// # fn main() -> Result<(), kvio_client::Error> {
    /// # let (a, b) = (TestServer::start(), TestServer::start());
    /// # let addrs = [a.addr().to_string(), b.addr().to_string()];
    /// let mut servers = kvio_client::ShardedClient::new(&addrs, std::time::Duration::from_secs(5));
    /// assert_eq!(servers.get("never put")?, None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn get(&mut self, key: &str) -> Result<Option<String>, Error> {
        self.with_client(key, |c| c.get(key))
    }

    /// Deletes `key` on its server: `true` when it was there.
    ///
    /// ```
    /// # include!("../doc/server.rs");
    /// # fn main() -> Result<(), kvio_client::Error> {
    /// # let (a, b) = (TestServer::start(), TestServer::start());
    /// # let addrs = [a.addr().to_string(), b.addr().to_string()];
    /// let mut servers = kvio_client::ShardedClient::new(&addrs, std::time::Duration::from_secs(5));
    /// servers.put("colour", "blue")?;
    /// assert!(servers.delete("colour")?);
    /// assert_eq!(servers.get("colour")?, None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn delete(&mut self, key: &str) -> Result<bool, Error> {
        self.with_client(key, |c| c.delete(key))
    }

    /// Runs `f` on `key`'s connection. After an error the [`Client`]
    /// itself drops its connection unless the request was refused, and
    /// connects again on its next call: one rule for both clients.
    fn with_client<R>(&mut self, key: &str, f: impl FnOnce(&mut Client) -> Result<R, Error>) -> Result<R, Error> {
        f(self.client_for(key)?)
    }
}
