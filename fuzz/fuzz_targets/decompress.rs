//! Fuzz target `decompress`: arbitrary bytes taken as a compressed frame, through the bounded
//! decompressor with a 1 MiB limit. Nothing may panic, and a frame that decompresses gives exactly
//! the size its header claims.

#![no_main]

use libfuzzer_sys::fuzz_target;
use qgate_ipc::decompress;

/// The largest uncompressed message accepted.
const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = decompress(data, LIMIT) {
        // The uncompressed size is at bytes 8..12, in the byte order of byte 0 (1: little).
        let size: [u8; 4] = data[8..12]
            .try_into()
            .expect("a frame that decompresses has 12 bytes");
        let claimed = if data[0] == 1 {
            u32::from_le_bytes(size)
        } else {
            u32::from_be_bytes(size)
        };
        assert_eq!(
            message.len(),
            claimed as usize,
            "output length differs from the claimed size"
        );
        assert!(message.len() <= LIMIT, "output above the limit");
        assert_eq!(message[..2], data[..2], "header bytes 0 and 1 are kept");
        assert_eq!(message[2], 0, "the output is flagged uncompressed");
        assert_eq!(message[4..8], size, "the output's length field is its size");
    }
});
