//! The `decode` target: any bytes as a request payload. The borrowed
//! `MessageView` (no allocator, the handler's decoder) and prost agree:
//! both accept or both refuse, and when they accept, on every field.
//! prost here is `merge_request` (prost's field decoders with the README's
//! rule for mistyped known fields) and, wherever it accepts, prost's
//! derived `KeyValueMessage::decode`.

use kvio_proto::{KeyValueMessage, MessageView, merge_request};
use prost::Message;

/// The target: the whole input is the payload.
pub fn check(payload: &[u8]) {
    let mut reference = KeyValueMessage::default();
    let reference = merge_request(&mut reference, payload).ok().map(|()| reference);
    let view = MessageView::decode(payload);
    let owned = view.ok().map(|v| KeyValueMessage {
        key: v.key.to_owned(),
        value: v.value.to_owned(),
        kind: v.kind,
        status: v.status,
    });
    assert_eq!(owned, reference, "view {view:?} against prost on {payload:02x?}");
    if let Ok(view) = view {
        // Borrowed, not copied: the strings point into the payload.
        for s in [view.key, view.value] {
            let range = payload.as_ptr_range();
            assert!(s.is_empty() || range.contains(&s.as_ptr()), "a string outside the payload");
        }
    }
    if let Ok(derived) = KeyValueMessage::decode(payload) {
        assert_eq!(Some(derived), reference, "prost's derived decoder on {payload:02x?}");
    }
}
