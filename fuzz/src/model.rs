//! Reference behaviour built from plain parts: the store as a `BTreeMap` with
//! the same limits, and the response to a request as docs/protocol.md's table
//! reads, encoded with prost (not the handler's in-place encoder).

use std::collections::BTreeMap;

use kvio_core::StoreError;
use kvio_core::frame::{FrameError, encode_frame};
use kvio_core::store::{Limits, RECORD_HEADER_LEN};
use kvio_proto::{KeyValueMessage, MALFORMED_REASON, Status};
use prost::Message;

/// The store's contract over a `BTreeMap`.
#[derive(Debug, Clone)]
pub struct ModelStore {
    pub map: BTreeMap<Vec<u8>, Vec<u8>>,
    pub limits: Limits,
}

impl ModelStore {
    pub fn new(limits: Limits) -> Self {
        ModelStore { map: BTreeMap::new(), limits }
    }

    fn cost(key: &[u8], value: &[u8]) -> usize {
        RECORD_HEADER_LEN + key.len() + value.len()
    }

    /// Budget bytes in use.
    pub fn used(&self) -> usize {
        self.map.iter().map(|(k, v)| Self::cost(k, v)).sum()
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        if key.len() > self.limits.max_key_len {
            return Err(StoreError::KeyTooLong);
        }
        if value.len() > self.limits.max_value_len {
            return Err(StoreError::ValueTooLong);
        }
        let freed = self.map.get(key).map_or(0, |old| Self::cost(key, old));
        if self.used() - freed + Self::cost(key, value) > self.limits.byte_budget {
            return Err(StoreError::Full);
        }
        if !self.map.contains_key(key) && self.map.len() >= self.limits.max_entries {
            return Err(StoreError::Full);
        }
        self.map.insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(Vec::as_slice)
    }

    /// True when the key was there.
    pub fn delete(&mut self, key: &[u8]) -> bool {
        self.map.remove(key).is_some()
    }
}

fn message(key: &str, value: &str, kind: u32, status: Status) -> KeyValueMessage {
    KeyValueMessage { key: key.to_owned(), value: value.to_owned(), kind, status: status as i32 }
}

/// The response docs/protocol.md asks for, applying a put to `store`.
pub fn response(store: &mut ModelStore, payload: &[u8]) -> KeyValueMessage {
    // Decoding follows the official runtimes (a known field with another
    // wire type is skipped as unknown): kvio_proto::merge_request, whose rule
    // is pinned by unit tests against the official runtime's answers.
    let mut req = KeyValueMessage::default();
    if kvio_proto::merge_request(&mut req, payload).is_err() {
        return message("", MALFORMED_REASON, 0, Status::NotOk);
    }
    match req.kind {
        // A refused put carries the store's reason in `value`.
        3 => match store.put(req.key.as_bytes(), req.value.as_bytes()) {
            Ok(()) => message("", "", 3, Status::Ok),
            Err(e) => message("", e.as_str(), 3, Status::NotOk),
        },
        1 => match store.get(req.key.as_bytes()) {
            Some(value) => message(&req.key, std::str::from_utf8(value).expect("stored from a String"), 2, Status::Ok),
            None => message(&req.key, "", 2, Status::NotOk),
        },
        4 => match store.delete(req.key.as_bytes()) {
            true => message("", "", 4, Status::Ok),
            false => message("", "", 4, Status::NotOk),
        },
        other => message("", "", other, Status::NotOk),
    }
}

/// The error frame's message for a framing error.
pub fn error_response(error: FrameError) -> KeyValueMessage {
    message("", error.as_str(), 0, Status::NotOk)
}

/// `msg` encoded by prost and framed.
pub fn frame_of(msg: &KeyValueMessage) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&msg.encode_to_vec(), &mut out).expect("a Vec has room");
    out
}
