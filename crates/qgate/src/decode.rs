//! `qgate decode`: reads one IPC frame as captured off the wire and prints its header and its
//! value in q syntax, optionally re-encoded.
//!
//! ```text
//! $ qgate decode --hex '010000000d000000 fa01000000' --reencode
//! endian: little
//! type: async
//! compressed: no
//! length: 13
//! value: 1i
//! reencoded: 010000000d000000fa01000000
//! ```

use std::{
    fmt::Write as _,
    io::{IsTerminal as _, Read as _, Write as _},
    path::PathBuf,
};

use anyhow::{Context as _, bail};
use qgate_ipc::{Endian, HEADER_LEN, Header, Limits, Message, MessageType};

/// Arguments of `qgate decode`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The frame as hex digits, header included; whitespace and a leading 0x are ignored.
    #[arg(long, value_name = "HEX", conflicts_with = "file")]
    hex: Option<String>,
    /// A file holding the frame's raw bytes; without it and without --hex, stdin is read.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
    /// Also print the value re-encoded as an uncompressed little-endian message, in hex.
    #[arg(long)]
    reencode: bool,
}

/// Runs `qgate decode`.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let frame = read_frame(args)?;
    let report = describe(frame, args.reencode)?;
    std::io::stdout()
        .lock()
        .write_all(report.as_bytes())
        .context("cannot write to stdout")
}

/// The frame's bytes, from `--hex`, the file or stdin.
fn read_frame(args: &Args) -> anyhow::Result<Vec<u8>> {
    if let Some(hex) = &args.hex {
        return parse_hex(hex);
    }
    if let Some(path) = &args.file {
        return std::fs::read(path).with_context(|| format!("cannot read {}", path.display()));
    }
    let mut stdin = std::io::stdin().lock();
    if stdin.is_terminal() {
        bail!("no input: give the frame with --hex HEX, as a FILE, or pipe its bytes to stdin");
    }
    let mut frame = Vec::new();
    stdin.read_to_end(&mut frame).context("cannot read stdin")?;
    Ok(frame)
}

/// Parses hex digits, ignoring whitespace and a leading `0x`.
fn parse_hex(text: &str) -> anyhow::Result<Vec<u8>> {
    let digits: Vec<char> = text.chars().filter(|c| !c.is_whitespace()).collect();
    let digits = match digits.as_slice() {
        ['0', 'x' | 'X', rest @ ..] => rest,
        all => all,
    };
    if let Some(position) = digits.iter().position(|c| !c.is_ascii_hexdigit()) {
        bail!(
            "not hex: {:?} (digit {}) is not 0-9 or a-f; give the frame's bytes as hex digits",
            digits[position],
            position + 1
        );
    }
    if !digits.len().is_multiple_of(2) {
        bail!(
            "not hex: odd number of digits ({}); every byte takes two, so one is missing or extra",
            digits.len()
        );
    }
    Ok(digits
        .chunks_exact(2)
        .map(|pair| {
            // Both are ASCII hex digits, checked above, so to_digit cannot fail.
            let nibble = |c: char| c.to_digit(16).unwrap_or_default() as u8;
            nibble(pair[0]) << 4 | nibble(pair[1])
        })
        .collect())
}

/// Checks that `frame` is exactly one frame, decodes it and describes it, one field a line.
fn describe(frame: Vec<u8>, reencode: bool) -> anyhow::Result<String> {
    let limits = Limits::default();
    if frame.is_empty() {
        bail!("no input: the frame is empty");
    }
    let header = match Header::parse(&frame, &limits) {
        Ok(Some(header)) => header,
        Ok(None) => bail!(
            "input is {} bytes, shorter than the {HEADER_LEN}-byte header: the capture is cut short",
            frame.len()
        ),
        Err(error) => return Err(error).context("bad header"),
    };
    if frame.len() < header.len() {
        bail!(
            "frame is {} bytes but its header says {}: the capture is cut short",
            frame.len(),
            header.len()
        );
    }
    if frame.len() > header.len() {
        bail!(
            "trailing bytes after the frame: its header says {} bytes but the input has {}; \
             give one frame at a time",
            header.len(),
            frame.len()
        );
    }
    let message = Message::from_frame(frame, &limits).context("cannot read the frame")?;
    let value = qgate_ipc::decode(message.body(), header.endian)
        .context("the body is not a well-formed q value")?;

    let mut out = String::new();
    let endian = match header.endian {
        Endian::Little => "little",
        Endian::Big => "big",
    };
    let message_type = match header.message_type {
        MessageType::Async => "async",
        MessageType::Sync => "sync",
        MessageType::Response => "response",
    };
    // Writing to a String cannot fail.
    let _ = writeln!(out, "endian: {endian}");
    let _ = writeln!(out, "type: {message_type}");
    if header.compressed {
        let _ = writeln!(
            out,
            "compressed: yes ({} bytes on the wire, {} uncompressed)",
            header.len(),
            message.as_bytes().len()
        );
    } else {
        let _ = writeln!(out, "compressed: no");
    }
    let _ = writeln!(out, "length: {}", header.len());
    let _ = writeln!(out, "value: {value}");
    if reencode {
        let bytes = qgate_ipc::encode_message(header.message_type, &value)
            .context("cannot re-encode the value")?;
        let _ = writeln!(out, "reencoded: {}", to_hex(&bytes));
    }
    Ok(out)
}

/// Lowercase hex, two digits a byte.
fn to_hex(bytes: &[u8]) -> String {
    let mut hex = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_hex(text: &str, expect: Result<&[u8], &str>) {
        match (parse_hex(text), expect) {
            (Ok(bytes), Ok(expect)) => assert_eq!(bytes, expect),
            (Err(error), Err(expect)) => {
                let message = format!("{error:#}");
                assert!(message.contains(expect), "{message:?} lacks {expect:?}");
            }
            (got, expect) => panic!("{text:?}: got {got:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn hex_input() {
        check_hex("", Ok(b""));
        check_hex("0a1B", Ok(&[0x0a, 0x1b]));
        check_hex(" 01 00\n00 00\t", Ok(&[1, 0, 0, 0]));
        check_hex("0x2a", Ok(&[0x2a]));
        check_hex("010", Err("not hex: odd number of digits (3)"));
        check_hex("0g", Err("not hex: 'g' (digit 2)"));
        check_hex("é0", Err("not hex: 'é' (digit 1)"));
    }

    #[track_caller]
    fn check_frame_error(frame: &[u8], expect: &str) {
        let error = describe(frame.to_vec(), false).expect_err("a bad frame");
        let message = format!("{error:#}");
        assert!(message.contains(expect), "{message:?} lacks {expect:?}");
    }

    #[test]
    fn framing_errors() {
        let one_i = [1, 0, 0, 0, 13, 0, 0, 0, 0xfa, 1, 0, 0, 0];
        check_frame_error(&[], "no input");
        check_frame_error(
            &one_i[..5],
            "input is 5 bytes, shorter than the 8-byte header",
        );
        check_frame_error(
            &one_i[..12],
            "frame is 12 bytes but its header says 13: the capture is cut short",
        );
        let mut long = one_i.to_vec();
        long.push(0);
        check_frame_error(&long, "trailing bytes after the frame");
        check_frame_error(
            &[7, 0, 0, 0, 13, 0, 0, 0, 0],
            "bad header: bad endianness byte 0x07",
        );
    }

    #[test]
    fn hex_output() {
        assert_eq!(to_hex(&[0, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }
}
