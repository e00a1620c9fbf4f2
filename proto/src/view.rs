//! [`MessageView`]: a `KeyValueMessage` payload decoded in place, its strings
//! borrowed from the payload, in the spirit of smoltcp's wire views.

use crate::wire::{self, DecodeError, WireType};

/// The four fields of a `KeyValueMessage`, borrowed from the payload they
/// were decoded from. Decoding copies nothing and allocates nothing.
///
/// It decodes as prost and the official runtimes do (README, "Decoding"):
/// `string` fields must be UTF-8 (each occurrence, even one a later
/// duplicate replaces); the last occurrence of a field wins; unknown fields
/// are skipped; a known field with a wire type other than its own is skipped
/// as unknown; missing fields are their defaults (`""`, 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MessageView<'a> {
    /// Field 1, the key.
    pub key: &'a str,
    /// Field 2, the value (in error responses, the reason).
    pub value: &'a str,
    /// Field 3, the kind (see [`Kind`](crate::Kind)).
    pub kind: u32,
    /// Field 4, the [`Status`](crate::Status) as its wire number (unknown numbers kept).
    pub status: i32,
}

/// Field numbers of `KeyValueMessage`.
mod field {
    pub const KEY: u32 = 1;
    pub const VALUE: u32 = 2;
    pub const KIND: u32 = 3;
    pub const STATUS: u32 = 4;
}

/// The one-byte keys of the four fields with their own wire types.
mod key {
    pub const KEY: u8 = 0x0a;
    pub const VALUE: u8 = 0x12;
    pub const KIND: u8 = 0x18;
    pub const STATUS: u8 = 0x20;
}

impl<'a> MessageView<'a> {
    /// Decodes `payload` (see the type's docs for the rules).
    #[inline]
    pub fn decode(mut payload: &'a [u8]) -> Result<Self, DecodeError> {
        let buf = &mut payload;
        let mut view = MessageView::default();
        while let Some((&first, rest)) = buf.split_first() {
            // The four fields' keys as encoders write them: one byte each.
            // Anything else (other fields, other wire types, keys written in
            // more bytes than needed) goes through the general decoder.
            let field = match first {
                key::KEY => Some((field::KEY, WireType::LengthDelimited)),
                key::VALUE => Some((field::VALUE, WireType::LengthDelimited)),
                key::KIND => Some((field::KIND, WireType::Varint)),
                key::STATUS => Some((field::STATUS, WireType::Varint)),
                _ => None,
            };
            let (tag, wire_type) = match field {
                Some(field) => {
                    *buf = rest;
                    field
                }
                None => wire::decode_key(buf)?,
            };
            match (tag, wire_type) {
                (field::KEY, WireType::LengthDelimited) => view.key = utf8(wire::decode_bytes(buf)?)?,
                (field::VALUE, WireType::LengthDelimited) => view.value = utf8(wire::decode_bytes(buf)?)?,
                // proto3 `uint32` and `int32`/enum: the varint's low 32 bits.
                (field::KIND, WireType::Varint) => view.kind = wire::decode_varint(buf)? as u32,
                (field::STATUS, WireType::Varint) => view.status = wire::decode_varint(buf)? as i32,
                (tag, wire_type) => wire::skip_field(wire_type, tag, buf)?,
            }
        }
        Ok(view)
    }
}

#[inline]
fn utf8(bytes: &[u8]) -> Result<&str, DecodeError> {
    // Keys and values are mostly short ASCII: an inlined word-at-a-time
    // check instead of a call into the full validator.
    if bytes.is_ascii() {
        #[allow(unsafe_code)]
        // SAFETY: every byte is below 0x80, and ASCII is valid UTF-8.
        return Ok(unsafe { core::str::from_utf8_unchecked(bytes) });
    }
    core::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8)
}

#[cfg(test)]
mod test {
    use super::*;

    fn view(key: &'static str, value: &'static str, kind: u32, status: i32) -> MessageView<'static> {
        MessageView { key, value, kind, status }
    }

    #[test]
    fn borrows_the_strings_from_the_payload() {
        let payload = b"\x0a\x01k\x12\x02vv\x18\x03";
        let got = MessageView::decode(payload).unwrap();
        assert_eq!(got, view("k", "vv", 3, 0));
        assert!(core::ptr::eq(got.key.as_bytes(), &payload[2..3]), "not a copy");
    }

    #[test]
    fn last_duplicate_wins_but_every_string_is_checked() {
        assert_eq!(MessageView::decode(b"\x18\x01\x18\x03\x0a\x01a\x0a\x01b"), Ok(view("b", "", 3, 0)));
        assert_eq!(MessageView::decode(b"\x0a\x01\xff\x0a\x01b"), Err(DecodeError::NotUtf8));
    }

    #[test]
    fn unknown_and_mistyped_fields_are_skipped() {
        // field 5 varint, field 9 bytes, kind as fixed32, status as bytes, key as varint
        let payload = b"\x28\x01\x4a\x01x\x1d\x01\x00\x00\x00\x22\x01\x01\x08\x05\x18\x01";
        assert_eq!(MessageView::decode(payload), Ok(view("", "", 1, 0)));
    }

    #[test]
    fn keys_written_in_more_bytes_than_needed_are_the_same_fields() {
        // 0x8a 0x00 is key 0x0a (field 1, length-delimited) in two bytes.
        assert_eq!(MessageView::decode(b"\x8a\x00\x01k\x98\x80\x00\x01"), Ok(view("k", "", 1, 0)));
    }

    #[test]
    fn kind_and_status_keep_the_low_32_bits() {
        // kind = 2^32 + 5, status = -1 (ten-byte varint)
        let payload = b"\x18\x85\x80\x80\x80\x10\x20\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01";
        assert_eq!(MessageView::decode(payload), Ok(view("", "", 5, -1)));
    }
}
