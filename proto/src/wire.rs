//! The protobuf wire format, as much of it as `KeyValueMessage` needs, with
//! no allocator: varints, field keys, skipping fields, and writing them.
//!
//! These are prost's `encoding` primitives (`decode_varint`, `decode_key`,
//! `skip_field`, `encode_varint`, ...) with the same rules: a varint is at
//! most 10 bytes and its 10th byte at most 1; a key fits in a `u32`, has a
//! tag of at least 1 and a wire type of 0 to 5; a group ends with the end
//! tag of its own field, and groups nest at most 100 deep. prost itself
//! cannot be used here: it links `alloc`, so a firmware using it needs a
//! `#[global_allocator]` even when nothing allocates. The tests hold this
//! module and the request view to prost's decoder.

/// Why a payload is not a valid `KeyValueMessage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DecodeError {
    /// A varint runs past the end, past 10 bytes, or past 64 bits.
    BadVarint,
    /// A field key is over 32 bits, has tag 0, or wire type 6 or 7.
    BadKey,
    /// A length-delimited or fixed-width field runs past the end.
    Truncated,
    /// An end-group tag without its start, or closing another group.
    BadEndGroup,
    /// Groups nested more than 100 deep (prost's recursion limit).
    TooDeep,
    /// A `string` field is not UTF-8.
    NotUtf8,
}

impl DecodeError {
    /// A short reason.
    pub const fn as_str(&self) -> &'static str {
        match self {
            DecodeError::BadVarint => "invalid varint",
            DecodeError::BadKey => "invalid field key",
            DecodeError::Truncated => "field runs past the end",
            DecodeError::BadEndGroup => "unexpected end-group tag",
            DecodeError::TooDeep => "groups nested too deep",
            DecodeError::NotUtf8 => "string is not UTF-8",
        }
    }
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for DecodeError {}

/// How a field's value is laid out on the wire (the key's low 3 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WireType {
    /// 0: a varint.
    Varint,
    /// 1: 8 bytes.
    SixtyFourBit,
    /// 2: a varint length, then that many bytes.
    LengthDelimited,
    /// 3: fields up to the matching end group (deprecated, still skipped).
    StartGroup,
    /// 4: closes a group.
    EndGroup,
    /// 5: 4 bytes.
    ThirtyTwoBit,
}

/// The deepest nesting of groups prost skips (its `RECURSION_LIMIT`).
pub const MAX_GROUP_DEPTH: usize = 100;

/// Reads one varint from the front of `buf`.
#[inline]
pub fn decode_varint(buf: &mut &[u8]) -> Result<u64, DecodeError> {
    // One-byte varints (tags, kinds, short lengths) are nearly all of them.
    if let Some((&b, rest)) = buf.split_first()
        && b < 0x80
    {
        *buf = rest;
        return Ok(u64::from(b));
    }
    let mut value = 0;
    for (i, &b) in buf.iter().take(10).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            // The 10th byte holds bit 63 only.
            if i == 9 && b > 1 {
                return Err(DecodeError::BadVarint);
            }
            *buf = &buf[i + 1..];
            return Ok(value);
        }
    }
    Err(DecodeError::BadVarint)
}

/// Reads a field key: its tag and wire type.
#[inline]
pub fn decode_key(buf: &mut &[u8]) -> Result<(u32, WireType), DecodeError> {
    let key = decode_varint(buf)?;
    let key = u32::try_from(key).map_err(|_| DecodeError::BadKey)?;
    let wire_type = match key & 7 {
        0 => WireType::Varint,
        1 => WireType::SixtyFourBit,
        2 => WireType::LengthDelimited,
        3 => WireType::StartGroup,
        4 => WireType::EndGroup,
        5 => WireType::ThirtyTwoBit,
        _ => return Err(DecodeError::BadKey),
    };
    let tag = key >> 3;
    if tag == 0 {
        return Err(DecodeError::BadKey);
    }
    Ok((tag, wire_type))
}

/// Takes `len` bytes off the front of `buf`.
#[inline]
pub fn take<'a>(buf: &mut &'a [u8], len: u64) -> Result<&'a [u8], DecodeError> {
    let len = usize::try_from(len).map_err(|_| DecodeError::Truncated)?;
    if len > buf.len() {
        return Err(DecodeError::Truncated);
    }
    let (head, rest) = buf.split_at(len);
    *buf = rest;
    Ok(head)
}

/// Reads a length-delimited field's bytes (after its key).
#[inline]
pub fn decode_bytes<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let len = decode_varint(buf)?;
    take(buf, len)
}

/// Skips the value of a field with key `(tag, wire_type)`, already read.
pub fn skip_field(wire_type: WireType, tag: u32, buf: &mut &[u8]) -> Result<(), DecodeError> {
    match wire_type {
        WireType::StartGroup => skip_group(tag, buf),
        WireType::EndGroup => Err(DecodeError::BadEndGroup),
        other => skip_value(other, buf),
    }
}

/// Skips a value that is not a group.
#[inline]
fn skip_value(wire_type: WireType, buf: &mut &[u8]) -> Result<(), DecodeError> {
    match wire_type {
        WireType::Varint => decode_varint(buf).map(drop),
        WireType::SixtyFourBit => take(buf, 8).map(drop),
        WireType::ThirtyTwoBit => take(buf, 4).map(drop),
        WireType::LengthDelimited => decode_bytes(buf).map(drop),
        WireType::StartGroup | WireType::EndGroup => unreachable!("groups are skipped by skip_group"),
    }
}

/// Skips a group's fields up to its end tag, without recursion: the tags of
/// the open groups are kept in a fixed stack, at most [`MAX_GROUP_DEPTH`].
fn skip_group(tag: u32, buf: &mut &[u8]) -> Result<(), DecodeError> {
    let mut open = [0u32; MAX_GROUP_DEPTH];
    open[0] = tag;
    let mut depth = 1;
    loop {
        let (tag, wire_type) = decode_key(buf)?;
        if wire_type == WireType::EndGroup {
            if tag != open[depth - 1] {
                return Err(DecodeError::BadEndGroup);
            }
            depth -= 1;
            if depth == 0 {
                return Ok(());
            }
            continue;
        }
        // prost skips a field inside `depth` groups with `depth` recursions
        // left of its 100 and refuses it once none are left.
        if depth == MAX_GROUP_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        if wire_type == WireType::StartGroup {
            open[depth] = tag;
            depth += 1;
        } else {
            skip_value(wire_type, buf)?;
        }
    }
}

/// Bytes of the varint encoding of `value` (1 to 10).
#[inline]
pub const fn encoded_len_varint(value: u64) -> usize {
    // 7 bits a byte; `| 1` makes 0 take one byte.
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Bytes of the key of field `tag`.
#[inline]
pub const fn key_len(tag: u32) -> usize {
    encoded_len_varint((tag as u64) << 3)
}

/// Writes `value` as a varint at the front of `dst` and moves `dst` past it.
///
/// # Panics
///
/// If `dst` is shorter than [`encoded_len_varint`]`(value)`.
#[inline]
pub fn encode_varint(mut value: u64, dst: &mut &mut [u8]) {
    let mut i = 0;
    while value >= 0x80 {
        dst[i] = (value as u8) | 0x80;
        value >>= 7;
        i += 1;
    }
    dst[i] = value as u8;
    advance(dst, i + 1);
}

/// Writes the key of field `tag` with `wire_type` (see [`encode_varint`]).
#[inline]
pub fn encode_key(tag: u32, wire_type: WireType, dst: &mut &mut [u8]) {
    let wire = match wire_type {
        WireType::Varint => 0,
        WireType::SixtyFourBit => 1,
        WireType::LengthDelimited => 2,
        WireType::StartGroup => 3,
        WireType::EndGroup => 4,
        WireType::ThirtyTwoBit => 5,
    };
    encode_varint(u64::from(tag << 3 | wire), dst);
}

/// Copies `bytes` to the front of `dst` and moves `dst` past them.
#[inline]
pub fn put_slice(bytes: &[u8], dst: &mut &mut [u8]) {
    let n = bytes.len();
    if (8..=16).contains(&n) {
        // Two overlapping 8-byte moves instead of a call to `memcpy`: most
        // keys and values are this short.
        dst[..8].copy_from_slice(&bytes[..8]);
        dst[n - 8..n].copy_from_slice(&bytes[n - 8..]);
    } else {
        dst[..n].copy_from_slice(bytes);
    }
    advance(dst, n);
}

#[inline]
fn advance(dst: &mut &mut [u8], n: usize) {
    let taken = core::mem::take(dst);
    *dst = &mut taken[n..];
}

#[cfg(test)]
mod test {
    use super::*;

    fn varint(mut bytes: &[u8]) -> Result<(u64, usize), DecodeError> {
        let len = bytes.len();
        decode_varint(&mut bytes).map(|v| (v, len - bytes.len()))
    }

    #[test]
    fn varints_end_at_ten_bytes_and_64_bits() {
        assert_eq!(varint(&[0x00, 0xff]), Ok((0, 1)));
        assert_eq!(varint(&[0xac, 0x02]), Ok((300, 2)));
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(varint(&max), Ok((u64::MAX, 10)));
        let mut over = max;
        over[9] = 0x02;
        assert_eq!(varint(&over), Err(DecodeError::BadVarint), "bit 64");
        assert_eq!(varint(&[0xff; 11]), Err(DecodeError::BadVarint), "11 bytes");
        assert_eq!(varint(&[0x80, 0x80]), Err(DecodeError::BadVarint), "runs past the end");
        assert_eq!(varint(&[]), Err(DecodeError::BadVarint));
    }

    #[test]
    fn keys_need_a_tag_and_a_known_wire_type() {
        assert_eq!(decode_key(&mut &[0x0a][..]), Ok((1, WireType::LengthDelimited)));
        assert_eq!(decode_key(&mut &[0x02][..]), Err(DecodeError::BadKey), "tag 0");
        assert_eq!(decode_key(&mut &[0x0e][..]), Err(DecodeError::BadKey), "wire type 6");
        assert_eq!(decode_key(&mut &[0x0f][..]), Err(DecodeError::BadKey), "wire type 7");
        let over_u32 = [0x80, 0x80, 0x80, 0x80, 0x10];
        assert_eq!(decode_key(&mut &over_u32[..]), Err(DecodeError::BadKey));
        let max_tag = [0xf8, 0xff, 0xff, 0xff, 0x0f];
        assert_eq!(decode_key(&mut &max_tag[..]), Ok(((1 << 29) - 1, WireType::Varint)));
    }

    #[test]
    fn groups_end_with_their_own_tag_and_nest_at_most_100_deep() {
        let skip = |bytes: &[u8]| {
            let mut buf = bytes;
            let (tag, wire_type) = decode_key(&mut buf)?;
            skip_field(wire_type, tag, &mut buf).map(|()| buf.len())
        };
        // group 5 { field 1 = 7 } then one byte left
        assert_eq!(skip(&[0x2b, 0x08, 0x07, 0x2c, 0xff]), Ok(1));
        assert_eq!(skip(&[0x2b, 0x34]), Err(DecodeError::BadEndGroup), "closed by group 6's end");
        assert_eq!(skip(&[0x2c]), Err(DecodeError::BadEndGroup), "no start");
        assert_eq!(skip(&[0x2b, 0x08]), Err(DecodeError::BadVarint), "unterminated");
        let nested = |depth: usize, inner: &[u8]| {
            let mut v = std::vec![0x2b; depth];
            v.extend_from_slice(inner);
            v.extend(std::iter::repeat_n(0x2c, depth));
            v
        };
        assert_eq!(skip(&nested(100, &[])), Ok(0), "100 empty groups");
        assert_eq!(skip(&nested(99, &[0x08, 0x01])), Ok(0), "a field inside 99 groups");
        assert_eq!(skip(&nested(100, &[0x08, 0x01])), Err(DecodeError::TooDeep), "a field inside 100");
        assert_eq!(skip(&nested(101, &[])), Err(DecodeError::TooDeep), "101 groups");
    }

    #[test]
    fn encoded_lengths() {
        for (value, len) in [(0, 1), (127, 1), (128, 2), (16_383, 2), (16_384, 3), (u32::MAX as u64, 5), (u64::MAX, 10)]
        {
            assert_eq!(encoded_len_varint(value), len, "{value}");
            let mut bytes = [0u8; 10];
            let mut dst = &mut bytes[..];
            encode_varint(value, &mut dst);
            assert_eq!(dst.len(), 10 - len);
            assert_eq!(varint(&bytes), Ok((value, len)));
        }
        assert_eq!(key_len(1), 1);
        assert_eq!(key_len(16), 2);
    }
}
