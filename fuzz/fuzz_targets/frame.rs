//! Fuzz target `frame`: arbitrary bytes taken as one whole message frame, through everything a
//! server does with a peer's frame.
//!
//! The header is parsed with a 1 MiB limit. A frame whose length field does not match its size is
//! taken as it is when they match, and otherwise with the length field set to the real size, so
//! that almost every input reaches the body. The body is then decompressed if flagged, validated,
//! decoded with a 16 MiB budget and viewed; the decoder and the validator must agree, and a
//! decoded value must re-encode to bytes that decode to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use qgate_ipc::{
    DecodeError, DecodeOptions, Endian, Header, Limits, Message, ValueView, decode, decode_with,
    encode, validate,
};

/// The largest frame accepted, compressed or not.
const MAX_MESSAGE: usize = 1 << 20;

/// The decoder's memory budget.
const MAX_DECODED: usize = 16 << 20;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::new(MAX_MESSAGE);
    let Ok(Some(header)) = Header::parse(data, &limits) else {
        return;
    };
    if header.len() == data.len() {
        frame(data.to_vec(), &limits);
    } else if let Ok(len) = u32::try_from(data.len()) {
        let mut fixed = data.to_vec();
        let len = match header.endian {
            Endian::Little => len.to_le_bytes(),
            Endian::Big => len.to_be_bytes(),
        };
        fixed[4..8].copy_from_slice(&len);
        if let Ok(Some(_)) = Header::parse(&fixed, &limits) {
            frame(fixed, &limits);
        }
    }
});

fn frame(frame: Vec<u8>, limits: &Limits) {
    let Ok(message) = Message::from_frame(frame, limits) else {
        return;
    };
    let endian = message.header.endian;
    let body = message.body();
    let valid = validate(body, endian);
    let view = ValueView::new(body, endian);
    assert_eq!(
        valid.is_ok(),
        view.is_ok(),
        "validate and ValueView::new disagree"
    );
    if let Ok(view) = view {
        if let Some(call) = view.call() {
            let _ = (call.name(), call.has_symbol_head(), call.arg_count());
            for arg in call.args() {
                let _ = (arg.type_code(), arg.text(), arg.as_i64(), arg.count());
            }
        }
        if let Some(items) = view.items() {
            assert_eq!(
                Some(items.count()),
                view.count(),
                "a list's items and its count"
            );
        }
        let _ = (
            view.pair(),
            view.symbols().map(Iterator::count),
            view.atom(),
        );
    }
    match decode_with(
        body,
        endian,
        &DecodeOptions {
            max_bytes: MAX_DECODED,
        },
    ) {
        Ok(value) => {
            assert!(
                valid.is_ok(),
                "decoded a body that does not validate: {valid:?}"
            );
            let mut again = Vec::new();
            encode(&value, &mut again).expect("a decoded value encodes");
            let redecoded = decode(&again, Endian::Little).expect("a re-encoded value decodes");
            assert_eq!(
                format!("{redecoded:?}"),
                format!("{value:?}"),
                "re-encoding changed the value"
            );
        }
        // A valid body may need more memory than the budget.
        Err(DecodeError::TooLarge { .. }) => {}
        Err(err) => assert_eq!(valid, Err(err), "decode and validate disagree"),
    }
}
