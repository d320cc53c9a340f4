//! Property tests of the codec over arbitrary q values and arbitrary bytes: encoding then
//! decoding is the identity (in both byte orders), every encoding validates and can be viewed,
//! and no input makes the decoder panic or disagree with the validator.
//!
//! `PROPTEST_CASES=N` runs `N` cases per property instead of the defaults below.

#![allow(clippy::unwrap_used, reason = "tests")]

mod strategy;

use proptest::{collection::vec, prelude::*, test_runner::Config};
use qgate_ipc::{
    EncodeOptions, Endian, Header, K, Limits, Locality, Message, MessageType, ValueView, compress,
    decode, decompress, encode, encode_message, encode_message_with, validate,
};

fn config(cases: u32) -> Config {
    Config {
        cases: strategy::cases(cases),
        ..Config::default()
    }
}

fn encoded(value: &K) -> Vec<u8> {
    let mut out = Vec::new();
    encode(value, &mut out).unwrap();
    out
}

/// Decodes arbitrary bytes in one byte order and checks what must hold whatever they are: no
/// panic, the decoder and the validator agree, a view exists exactly when the body is valid, and
/// a decoded value re-encodes to bytes that decode to the same value.
fn check_arbitrary(bytes: &[u8], endian: Endian) -> Result<(), TestCaseError> {
    let decoded = decode(bytes, endian);
    let valid = validate(bytes, endian);
    prop_assert_eq!(
        decoded.is_ok(),
        valid.is_ok(),
        "decode {:?} vs validate {:?}",
        decoded,
        valid
    );
    if let (Err(a), Err(b)) = (&decoded, &valid) {
        prop_assert_eq!(a, b, "decode and validate report different errors");
    }
    let view = ValueView::new(bytes, endian);
    prop_assert_eq!(view.is_ok(), valid.is_ok());
    if let Ok(view) = view {
        // Walking the view must not panic either.
        if let Some(call) = view.call() {
            let _ = (call.name(), call.arg_count());
            for arg in call.args() {
                let _ = (arg.type_code(), arg.text(), arg.as_i64());
            }
        }
        if let Some(items) = view.items() {
            let n = items.count();
            prop_assert_eq!(Some(n), view.count());
        }
        let _ = (
            view.pair(),
            view.symbols().map(Iterator::count),
            view.atom(),
        );
    }
    if let Ok(value) = decoded {
        let again = encoded(&value);
        let redecoded = decode(&again, Endian::Little).unwrap();
        prop_assert_eq!(format!("{redecoded:?}"), format!("{value:?}"));
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    /// (a) Encoding then decoding gives the value back, byte for byte when re-encoded (NaN is not
    /// equal to itself, so equality is checked on the bytes and on the `Debug` text).
    #[test]
    fn encode_decode_is_the_identity(value in strategy::value()) {
        let bytes = encoded(&value);
        let decoded = decode(&bytes, Endian::Little).unwrap();
        prop_assert_eq!(encoded(&decoded), bytes);
        prop_assert_eq!(format!("{decoded:?}"), format!("{value:?}"));
    }

    /// (a) The same value written big-endian decodes to the same value.
    #[test]
    fn big_endian_bodies_decode_the_same(value in strategy::value()) {
        let mut big = Vec::new();
        strategy::encode_big(&value, &mut big);
        prop_assert!(validate(&big, Endian::Big).is_ok());
        prop_assert!(ValueView::new(&big, Endian::Big).is_ok());
        let decoded = decode(&big, Endian::Big).unwrap();
        prop_assert_eq!(encoded(&decoded), encoded(&value));
        prop_assert_eq!(format!("{decoded:?}"), format!("{value:?}"));
    }

    /// (a) Numeric atoms and vectors in big-endian, the case where every number is swapped.
    #[test]
    fn big_endian_numbers(data in strategy::fixed_vector_data(64), attr in strategy::attr(), atom in strategy::atom()) {
        for value in [K::Vector(qgate_ipc::Vector { attr, data }), K::Atom(atom)] {
            let mut big = Vec::new();
            strategy::encode_big(&value, &mut big);
            let decoded = decode(&big, Endian::Big).unwrap();
            prop_assert_eq!(encoded(&decoded), encoded(&value));
        }
    }

    /// (a) Whole messages: framed, parsed back, and compressed for a remote peer when q would.
    #[test]
    fn messages_round_trip(value in strategy::value()) {
        let body = encoded(&value);
        let limits = Limits::default();
        let message = encode_message(MessageType::Sync, &value).unwrap();
        let header = Header::parse(&message, &limits).unwrap().unwrap();
        prop_assert_eq!(header.len(), message.len());
        prop_assert_eq!(header.message_type, MessageType::Sync);
        let message = Message::from_frame(message, &limits).unwrap();
        prop_assert_eq!(message.body(), &body[..]);

        let options = EncodeOptions { capability: 3, locality: Locality::Remote };
        let remote = encode_message_with(MessageType::Response, &value, &options).unwrap();
        let header = Header::parse(&remote, &limits).unwrap().unwrap();
        prop_assert_eq!(header.compressed, remote.len() != body.len() + 8);
        let message = Message::from_frame(remote, &limits).unwrap();
        prop_assert_eq!(message.body(), &body[..]);
    }

    /// (b) Every encoding validates and can be viewed; the view sees the value's shape.
    #[test]
    fn encodings_validate_and_view(value in strategy::value()) {
        let bytes = encoded(&value);
        prop_assert!(validate(&bytes, Endian::Little).is_ok());
        let view = ValueView::new(&bytes, Endian::Little).unwrap();
        prop_assert_eq!(view.type_code(), value.type_code());
        prop_assert_eq!(view.as_bytes(), &bytes[..]);
        match &value {
            K::List(list) => {
                prop_assert_eq!(view.count(), Some(list.items.len()));
                let items: Vec<_> = view.items().unwrap().collect();
                prop_assert_eq!(items.len(), list.items.len());
                for (item, expected) in items.iter().zip(&list.items) {
                    let expected = encoded(expected);
                    prop_assert_eq!(item.as_bytes(), &expected[..]);
                }
            }
            K::Vector(vector) => {
                prop_assert_eq!(view.count(), Some(vector.len()));
                prop_assert_eq!(view.attr(), Some(vector.attr));
            }
            K::Atom(atom) => prop_assert_eq!(format!("{:?}", view.atom()), format!("{:?}", Some(atom))),
            _ => {}
        }
    }

    /// (b) A general list headed by a symbol or a string is a call with that name and those
    /// arguments.
    #[test]
    fn calls_are_seen_as_calls((name, symbol_head, args) in strategy::call()) {
        let head = if symbol_head { K::symbol(&name) } else { K::string(&name) };
        let mut items = vec![head];
        items.extend(args.iter().cloned());
        let bytes = encoded(&K::list(items));
        let view = ValueView::new(&bytes, Endian::Little).unwrap();
        let call = view.call().unwrap();
        prop_assert_eq!(call.name(), &name[..]);
        prop_assert_eq!(call.has_symbol_head(), symbol_head);
        prop_assert_eq!(call.arg_count(), args.len());
        for (i, arg) in args.iter().enumerate() {
            let expected = encoded(arg);
            prop_assert_eq!(call.arg(i).unwrap().as_bytes(), &expected[..]);
        }
        prop_assert!(call.arg(args.len()).is_none());
    }

    /// (c) Arbitrary bytes never make the decoder panic, and it agrees with the validator.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..4096)) {
        check_arbitrary(&bytes, Endian::Little)?;
        check_arbitrary(&bytes, Endian::Big)?;
    }

    /// (c) Nor do damaged encodings of real values, which get much further into the decoder.
    #[test]
    fn damaged_encodings_never_panic(
        bytes in strategy::value().prop_flat_map(|value| strategy::mutated(encoded(&value)))
    ) {
        check_arbitrary(&bytes, Endian::Little)?;
        check_arbitrary(&bytes, Endian::Big)?;
    }

    /// (c) Damaged frames go through the header, the decompressor and the decoder without a panic.
    #[test]
    fn damaged_frames_never_panic(
        frame in (strategy::value(), any::<bool>()).prop_flat_map(|(value, remote)| {
            let locality = if remote { Locality::Remote } else { Locality::Local };
            let options = EncodeOptions { capability: 3, locality };
            strategy::mutated(encode_message_with(MessageType::Async, &value, &options).unwrap())
        })
    ) {
        let limits = Limits::new(1 << 20);
        if let Ok(Some(header)) = Header::parse(&frame, &limits)
            && header.len() == frame.len()
            && let Ok(message) = Message::from_frame(frame, &limits)
        {
            check_arbitrary(message.body(), header.endian)?;
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// The compressor's output decompresses to its input, for messages that compress.
    #[test]
    fn compression_round_trips(
        chunk in vec(any::<u8>(), 1..64),
        repeats in 40usize..200,
        noise in vec((any::<usize>(), any::<u8>()), 0..64),
    ) {
        let mut message = vec![1, 2, 0, 0, 0, 0, 0, 0];
        for _ in 0..repeats {
            message.extend_from_slice(&chunk);
        }
        for (at, byte) in noise {
            let at = 8 + at % (message.len() - 8);
            message[at] = byte;
        }
        let len = u32::try_from(message.len()).unwrap();
        message[4..8].copy_from_slice(&len.to_le_bytes());
        if let Some(compressed) = compress(&message) {
            prop_assert!(compressed.len() < message.len() / 2);
            prop_assert_eq!(decompress(&compressed, message.len()).unwrap(), message);
        }
    }

    /// Decompressing arbitrary bytes never panics, and never returns more than the limit.
    #[test]
    fn decompressing_arbitrary_bytes_never_panics(
        mut frame in vec(any::<u8>(), 12..2048),
        size in 0u32..100_000,
    ) {
        frame[8..12].copy_from_slice(&size.to_le_bytes());
        frame[0] = 1;
        if let Ok(out) = decompress(&frame, 65536) {
            prop_assert_eq!(out.len(), size as usize);
            prop_assert!(out.len() <= 65536);
        }
    }
}
