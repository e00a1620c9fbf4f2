//! kvio's payload: `KeyValueMessage` (from `key_value_message.proto`, derived
//! with prost), the request kinds, and [`KeyValueHandler`], which answers
//! requests for `kvio-core`'s connection: decode, apply to the store, encode.
//!
//! `no_std` + `alloc`: prost needs an allocator for the decoded strings. The
//! handler keeps one scratch message whose strings keep their capacity, and
//! encodes responses straight into the connection's output, so serving does
//! not allocate once the scratch has grown to the largest request seen.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

mod handler;

pub use handler::{KeyValueHandler, MALFORMED_REASON, encode_response, merge_request, response_payload_len};

use alloc::string::String;

/// The one message of the protocol, used for requests and responses alike.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct KeyValueMessage {
    /// The key (UTF-8).
    #[prost(string, tag = "1")]
    pub key: String,
    /// The value (UTF-8); in error responses, the reason.
    #[prost(string, tag = "2")]
    pub value: String,
    /// The request or response kind; see [`Kind`].
    #[prost(uint32, tag = "3")]
    pub kind: u32,
    /// [`Status`] as its wire number (unknown numbers are kept).
    #[prost(enumeration = "Status", tag = "4")]
    pub status: i32,
}

/// Whether a request succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(i32)]
pub enum Status {
    /// Done.
    Ok = 0,
    /// Refused, absent, unknown kind or malformed.
    NotOk = 1,
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
            Kind::Unknown(n) => n,
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        for n in [0, 1, 2, 3, 4, 7, u32::MAX] {
            assert_eq!(u32::from(Kind::from(n)), n);
        }
        assert_eq!(Kind::from(7), Kind::Unknown(7));
    }
}
