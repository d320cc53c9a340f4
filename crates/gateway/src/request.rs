//! A client's message as it goes upstream: its bytes as they came (uncompressed), or wrapped in
//! `(wrap; user; message)` so that the upstream runs it as the end user.

use std::borrow::Cow;

use qgate_hooks::Request;
use qgate_ipc::{Endian, HEADER_LEN, Header, MessageType, type_code};

/// The frame to send upstream for `request`, as `message_type`.
///
/// Without `wrap` this is the client's message itself: the bytes it was validated as, with a
/// header saying they are not compressed (the server decompressed them; an upstream on the same
/// network gains nothing from compression, and kdb+ does not compress to localhost). Borrowed
/// whenever the client's header already says so, which is every uncompressed message.
///
/// With `wrap`, the message becomes the third item of a general list `(wrap; user; message)`,
/// spliced together from the message's own bytes without decoding them.
///
/// # Errors
///
/// A message for the client when the user name cannot be a symbol (it holds a NUL) or a
/// big-endian message cannot be re-encoded.
pub(crate) fn frame<'a>(
    request: &'a Request,
    message_type: MessageType,
    wrap: Option<&str>,
    user: &[u8],
) -> Result<Cow<'a, [u8]>, String> {
    let message = request.message();
    let Some(wrap) = wrap else {
        let bytes = message.as_bytes();
        let header = Header {
            endian: request.endian(),
            message_type,
            compressed: false,
            len: u32::try_from(bytes.len())
                .map_err(|_| "qgate: message too large to forward".to_owned())?,
        };
        if bytes.get(..HEADER_LEN) == Some(&header.to_bytes()[..]) {
            return Ok(Cow::Borrowed(bytes));
        }
        let mut frame = Vec::with_capacity(bytes.len());
        frame.extend_from_slice(&header.to_bytes());
        frame.extend_from_slice(request.body());
        return Ok(Cow::Owned(frame));
    };
    if user.contains(&0) {
        return Err("qgate: the user name holds a NUL and cannot be passed upstream".to_owned());
    }
    // The wrapper is little-endian; a big-endian body is re-encoded first (rare: kdbplus on a
    // big-endian host).
    let encoded;
    let body = match request.endian() {
        Endian::Little => request.body(),
        Endian::Big => {
            let value = request
                .to_k()
                .map_err(|e| format!("qgate: cannot re-encode a big-endian message: {e}"))?;
            let mut out = Vec::new();
            qgate_ipc::encode(&value, &mut out)
                .map_err(|e| format!("qgate: cannot re-encode a big-endian message: {e}"))?;
            encoded = out;
            &encoded
        }
    };
    let len = HEADER_LEN + 6 + (2 + wrap.len()) + (2 + user.len()) + body.len();
    let len = u32::try_from(len).map_err(|_| "qgate: message too large to forward".to_owned())?;
    let mut frame = Vec::with_capacity(len as usize);
    frame.extend_from_slice(&Header::little(message_type, len).to_bytes());
    // A general list of three items, no attribute.
    frame.extend_from_slice(&[type_code::LIST as u8, 0]);
    frame.extend_from_slice(&3i32.to_le_bytes());
    for symbol in [wrap.as_bytes(), user] {
        frame.push(type_code::SYMBOL.wrapping_neg() as u8);
        frame.extend_from_slice(symbol);
        frame.push(0);
    }
    frame.extend_from_slice(body);
    Ok(Cow::Owned(frame))
}

#[cfg(test)]
mod tests {
    use qgate_ipc::{K, Limits, Message, encode_message};

    use super::*;

    fn request(value: &K, message_type: MessageType) -> Request {
        let bytes = encode_message(message_type, value).unwrap();
        Request::new(Message::from_frame(bytes, &Limits::default()).unwrap()).unwrap()
    }

    #[test]
    fn an_uncompressed_message_goes_as_it_came() {
        let request = request(&K::string("select from t"), MessageType::Sync);
        let frame = frame(&request, MessageType::Sync, None, b"alice").unwrap();
        assert!(matches!(frame, Cow::Borrowed(_)));
        assert_eq!(&*frame, request.message().as_bytes());
    }

    #[test]
    fn a_compressed_message_goes_decompressed() {
        let value = K::string("a".repeat(5000));
        let mut compressed = encode_message(MessageType::Sync, &value).unwrap();
        compressed = qgate_ipc::compress(&compressed).unwrap_or(compressed);
        assert_eq!(compressed[2], 1, "the test message is compressed");
        let request =
            Request::new(Message::from_frame(compressed, &Limits::default()).unwrap()).unwrap();
        let frame = frame(&request, MessageType::Sync, None, b"alice").unwrap();
        assert_eq!(
            &*frame,
            &encode_message(MessageType::Sync, &value).unwrap()[..]
        );
    }

    #[test]
    fn a_wrapped_message_is_wrap_user_message() {
        let call = K::list(vec![K::symbol("f"), K::long(1)]);
        let request = request(&call, MessageType::Sync);
        let frame = frame(&request, MessageType::Sync, Some(".gw.execas"), b"alice").unwrap();
        let expect = K::list(vec![K::symbol(".gw.execas"), K::symbol("alice"), call]);
        assert_eq!(
            &*frame,
            &encode_message(MessageType::Sync, &expect).unwrap()[..]
        );
    }

    #[test]
    fn a_user_with_a_nul_cannot_be_wrapped() {
        let request = request(&K::long(1), MessageType::Async);
        assert!(frame(&request, MessageType::Async, Some("w"), b"a\0b").is_err());
    }
}
