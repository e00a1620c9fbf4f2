//! The client side of the protocol as the load generator needs it: the keys
//! and values a connection writes, request encoding, and the check of each
//! response against what that connection has put.

use std::fmt::Write as _;

use kvio_proto::{KeyValueMessage, Kind, Status};
use prost::Message;

use crate::reply::Reply;

/// How strictly responses are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// Each answer is the right kind, key, status and value (kvio servers).
    Full,
    /// Each answer is one well-formed frame holding a `KeyValueMessage` (the
    /// floor server answers every request with the same frame).
    Framing,
}

/// What the answer to an outstanding request must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// A put of `key` at `version`: `{kind 3, Ok}`.
    PutAck,
    /// A get of `key`; `version` 0 means this connection has not put it yet
    /// (a value left by an earlier run is acceptable), otherwise the value
    /// of that version must come back.
    Get {
        /// The connection's key slot.
        key: u32,
        /// The version this connection put last.
        version: u32,
    },
}

/// Writes the key a connection uses for its `key`-th slot. Keys are private to
/// a connection, so its own puts alone decide what a get must return.
pub fn key_of(out: &mut String, conn: u32, key: u32) {
    out.clear();
    let _ = write!(out, "c{conn}k{key}");
}

/// Writes the value of `version` of a key: the version and key up front,
/// padded to `size` bytes, so a stale or misrouted value never matches.
pub fn value_of(out: &mut String, conn: u32, key: u32, version: u32, size: usize) {
    out.clear();
    let _ = write!(out, "v{version}c{conn}k{key}:");
    while out.len() < size {
        out.push('x');
    }
}

/// Appends a request frame to `out`.
pub fn encode_request(out: &mut Vec<u8>, kind: Kind, key: &str, value: &str) {
    // The in-place encoder writes it byte for byte as prost would, with no
    // allocation past `out`'s growth. Vec output never runs out of room.
    let _ = kvio_proto::encode_request(out, key.as_bytes(), value.as_bytes(), kind);
}

/// Checks one response payload; `scratch` keeps its strings' capacity
/// between calls. `key`/`value` are scratch strings too.
pub struct Checker {
    check: Check,
    value_size: usize,
    scratch: KeyValueMessage,
    key: String,
    value: String,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker").field("check", &self.check).field("value_size", &self.value_size).finish()
    }
}

impl Checker {
    /// A checker for responses of `value_size`-byte puts.
    pub fn new(check: Check, value_size: usize) -> Self {
        Checker { check, value_size, scratch: KeyValueMessage::default(), key: String::new(), value: String::new() }
    }

    /// `Ok` when `payload` answers `expect` on connection `conn`, else why not.
    pub fn check(&mut self, conn: u32, expect: Expect, payload: &[u8]) -> Result<(), String> {
        self.scratch.clear();
        if let Err(e) = self.scratch.merge(payload) {
            return Err(format!("connection {conn}: response is not a KeyValueMessage: {e}"));
        }
        if self.check == Check::Framing {
            return Ok(());
        }
        let m = &self.scratch;
        let status = Status::try_from(m.status).ok();
        match expect {
            Expect::PutAck => {
                if Kind::from(m.kind) != Kind::PutOrUpdate || status != Some(Status::Ok) {
                    return Err(format!("connection {conn}: put answered {m:?}"));
                }
            }
            Expect::Get { key, version } => {
                key_of(&mut self.key, conn, key);
                if Kind::from(m.kind) != Kind::GetResponse || m.key != self.key {
                    return Err(format!("connection {conn}: get {} answered {m:?}", self.key));
                }
                if version == 0 {
                    // Never put by this run: absent, or left by an earlier run.
                    return Ok(());
                }
                value_of(&mut self.value, conn, key, version, self.value_size);
                if status != Some(Status::Ok) || m.value != self.value {
                    return Err(format!(
                        "connection {conn}: get {} returned status {:?} value {:?}, expected {:?}",
                        self.key, m.status, m.value, self.value
                    ));
                }
            }
        }
        Ok(())
    }

    /// `Ok` when a peer's `reply` (RESP or memcached, see [`Reply`])
    /// answers `expect` on connection `conn`, else why not. The same rules
    /// as [`Checker::check`]: a get returns the last value this connection
    /// put, or a miss if it has put none yet.
    pub fn check_reply(&mut self, conn: u32, expect: Expect, reply: &Reply<'_>) -> Result<(), String> {
        if self.check == Check::Framing {
            return Ok(());
        }
        let shown = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(80)]).into_owned();
        match (expect, reply) {
            (Expect::PutAck, Reply::Stored) => Ok(()),
            (Expect::PutAck, other) => Err(format!("connection {conn}: set answered {other}")),
            (Expect::Get { key, version }, reply) => {
                key_of(&mut self.key, conn, key);
                match reply {
                    Reply::Miss if version == 0 => Ok(()),
                    Reply::Value { key: Some(k), .. } if *k != self.key.as_bytes() => {
                        Err(format!("connection {conn}: get {} answered for key {}", self.key, shown(k)))
                    }
                    Reply::Value { .. } if version == 0 => Ok(()),
                    Reply::Value { value, .. } => {
                        value_of(&mut self.value, conn, key, version, self.value_size);
                        if *value == self.value.as_bytes() {
                            Ok(())
                        } else {
                            Err(format!(
                                "connection {conn}: get {} returned {:?}, expected {:?}",
                                self.key,
                                shown(value),
                                self.value
                            ))
                        }
                    }
                    Reply::Miss => Err(format!("connection {conn}: get {} missed a value it put", self.key)),
                    other => Err(format!("connection {conn}: get {} answered {other}", self.key)),
                }
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn payload(key: &str, value: &str, kind: u32, status: Status) -> Vec<u8> {
        KeyValueMessage { key: key.into(), value: value.into(), kind, status: status as i32 }.encode_to_vec()
    }

    #[test]
    fn checks_what_the_connection_put() {
        let mut c = Checker::new(Check::Full, 16);
        let mut v = String::new();
        value_of(&mut v, 3, 7, 2, 16);
        assert_eq!(v.len(), 16);
        assert!(c.check(3, Expect::PutAck, &payload("", "", 3, Status::Ok)).is_ok());
        assert!(c.check(3, Expect::PutAck, &payload("", "", 3, Status::NotOk)).is_err());
        let hit = payload("c3k7", &v, 2, Status::Ok);
        assert!(c.check(3, Expect::Get { key: 7, version: 2 }, &hit).is_ok());
        assert!(c.check(3, Expect::Get { key: 7, version: 1 }, &hit).is_err(), "stale version");
        assert!(c.check(4, Expect::Get { key: 7, version: 2 }, &hit).is_err(), "other connection's key");
        let miss = payload("c3k7", "", 2, Status::NotOk);
        assert!(c.check(3, Expect::Get { key: 7, version: 0 }, &miss).is_ok());
        assert!(c.check(3, Expect::Get { key: 7, version: 2 }, &miss).is_err(), "lost put");
        assert!(c.check(3, Expect::PutAck, &[0xff]).is_err());
        let mut framing = Checker::new(Check::Framing, 16);
        assert!(framing.check(3, Expect::Get { key: 7, version: 2 }, &payload("", "", 3, Status::Ok)).is_ok());
        assert!(framing.check(3, Expect::PutAck, &[0xff]).is_err());
    }

    #[test]
    fn checks_peer_replies_by_the_same_rules() {
        let mut c = Checker::new(Check::Full, 16);
        let mut v = String::new();
        value_of(&mut v, 3, 7, 2, 16);
        let get = |version| Expect::Get { key: 7, version };
        assert!(c.check_reply(3, Expect::PutAck, &Reply::Stored).is_ok());
        assert!(c.check_reply(3, Expect::PutAck, &Reply::Error(b"-OOM")).is_err());
        assert!(c.check_reply(3, Expect::PutAck, &Reply::Miss).is_err());
        let resp_hit = Reply::Value { key: None, value: v.as_bytes() };
        let mc_hit = Reply::Value { key: Some(b"c3k7"), value: v.as_bytes() };
        assert!(c.check_reply(3, get(2), &resp_hit).is_ok());
        assert!(c.check_reply(3, get(2), &mc_hit).is_ok());
        assert!(c.check_reply(3, get(1), &resp_hit).is_err(), "stale version");
        assert!(c.check_reply(4, get(2), &resp_hit).is_err(), "other connection's value");
        let misrouted = Reply::Value { key: Some(b"c3k8"), value: v.as_bytes() };
        assert!(c.check_reply(3, get(2), &misrouted).is_err(), "memcached named another key");
        assert!(c.check_reply(3, get(0), &Reply::Miss).is_ok());
        assert!(c.check_reply(3, get(2), &Reply::Miss).is_err(), "lost put");
        assert!(c.check_reply(3, get(0), &Reply::Stored).is_err());
        assert!(Checker::new(Check::Framing, 16).check_reply(3, get(2), &Reply::Miss).is_ok());
    }

    #[test]
    fn request_encoding_is_protobuf() {
        let mut out = Vec::new();
        encode_request(&mut out, Kind::PutOrUpdate, "k", "v");
        let m = KeyValueMessage::decode(&out[4..out.len() - 5]).unwrap();
        assert_eq!((m.key.as_str(), m.value.as_str(), m.kind), ("k", "v", 3));
    }
}
