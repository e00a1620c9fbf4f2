//! kvio's payload: `KeyValueMessage` (from `key_value_message.proto`), the
//! request kinds, and [`KeyValueHandler`], which answers requests for
//! `kvio-core`'s connection: decode, apply to the store, encode.
//!
//! The request path needs no allocator: [`MessageView`] decodes a request
//! in place, its key and value borrowed from the frame's payload, and
//! [`encode_response`] writes each response straight into the connection's
//! output. Its twin [`encode_request`] writes requests the same way, for
//! clients (a firmware included) that have no allocator either. So the handler allocates nothing, not even on the first request,
//! and a firmware can use it with no heap at all.
//!
//! Features:
//! - `alloc` (default): [`KeyValueMessage`], the prost-derived owned message
//!   (prost needs an allocator), and [`merge_request`], the decoder the view
//!   is tested against. Clients and tests use these.
//! - `defmt`: `defmt::Format` for the public types, and kvio-core's `defmt`.
#![no_std]
// One `unsafe` block (view.rs), with its SAFETY line: ASCII strings skip
// the UTF-8 validator's call.
#![deny(unsafe_code)]
#![deny(missing_docs)]

#[cfg(test)]
extern crate std;

#[cfg(feature = "alloc")]
extern crate alloc;

mod handler;
mod view;
pub mod wire;

#[cfg(feature = "alloc")]
pub use handler::merge_request;
pub use handler::{
    KeyValueHandler, MALFORMED_REASON, MEMORY_LIMIT_REASON, NOT_UTF8_REASON, encode_request, encode_response,
    request_payload_len, response_payload_len,
};
pub use view::MessageView;
pub use wire::DecodeError;

/// The one message of the protocol, used for requests and responses alike.
#[cfg(feature = "alloc")]
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct KeyValueMessage {
    /// The key (UTF-8).
    #[prost(string, tag = "1")]
    pub key: alloc::string::String,
    /// The value (UTF-8); in error responses, the reason.
    #[prost(string, tag = "2")]
    pub value: alloc::string::String,
    /// The request or response kind; see [`Kind`].
    #[prost(uint32, tag = "3")]
    pub kind: u32,
    /// [`Status`] as its wire number (unknown numbers are kept).
    #[prost(enumeration = "Status", tag = "4")]
    pub status: i32,
}

/// Whether a request succeeded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(i32)]
pub enum Status {
    /// Done.
    #[default]
    Ok = 0,
    /// Refused, absent, unknown kind or malformed.
    NotOk = 1,
}

/// A status number that is not a [`Status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UnknownStatus(pub i32);

impl Status {
    /// Whether `n` is the number of a [`Status`].
    pub const fn is_valid(n: i32) -> bool {
        matches!(n, 0 | 1)
    }
}

impl TryFrom<i32> for Status {
    type Error = UnknownStatus;

    fn try_from(n: i32) -> Result<Status, UnknownStatus> {
        match n {
            0 => Ok(Status::Ok),
            1 => Ok(Status::NotOk),
            n => Err(UnknownStatus(n)),
        }
    }
}

impl From<Status> for i32 {
    fn from(s: Status) -> i32 {
        s as i32
    }
}

/// The `kind` field, with every `u32` representable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Kind {
    /// 0 (absent): an error response.
    Error,
    /// 1: read a key.
    Get,
    /// 2: the answer to a `Get`.
    GetResponse,
    /// 3: store a value.
    PutOrUpdate,
    /// 4: remove a key (answered with the same kind; an older server
    /// answers it `NotOk` as an unknown kind, a clean refusal).
    Delete,
    /// 5: present the server's shared secret (`value`); answered with the
    /// same kind, `Ok` or `NotOk`. A server with no secret, or one older
    /// than it, answers it `NotOk` with no `value`, as an unknown kind.
    Auth,
    /// Any other number.
    Unknown(u32),
}

impl From<u32> for Kind {
    fn from(n: u32) -> Kind {
        match n {
            0 => Kind::Error,
            1 => Kind::Get,
            2 => Kind::GetResponse,
            3 => Kind::PutOrUpdate,
            4 => Kind::Delete,
            5 => Kind::Auth,
            n => Kind::Unknown(n),
        }
    }
}

impl From<Kind> for u32 {
    fn from(k: Kind) -> u32 {
        match k {
            Kind::Error => 0,
            Kind::Get => 1,
            Kind::GetResponse => 2,
            Kind::PutOrUpdate => 3,
            Kind::Delete => 4,
            Kind::Auth => 5,
            Kind::Unknown(n) => n,
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        for n in [0, 1, 2, 3, 4, 5, 6, 7, u32::MAX] {
            assert_eq!(u32::from(Kind::from(n)), n);
        }
        assert_eq!(Kind::from(4), Kind::Delete);
        assert_eq!(Kind::from(5), Kind::Auth);
        assert_eq!(Kind::from(6), Kind::Unknown(6));
        assert_eq!(Kind::from(7), Kind::Unknown(7));
    }

    #[test]
    fn every_status_round_trips() {
        for s in [Status::Ok, Status::NotOk] {
            assert_eq!(Status::try_from(i32::from(s)), Ok(s));
            assert!(Status::is_valid(s as i32));
        }
        assert_eq!(Status::try_from(2), Err(UnknownStatus(2)));
        assert!(!Status::is_valid(-1));
    }
}
