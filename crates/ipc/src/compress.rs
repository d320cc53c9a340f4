//! q's IPC compression (reference §5): the compressor, bit-exact with `-18!`, and a bounded
//! decompressor.

use crate::error::DecompressError;

/// Compresses a whole uncompressed message (8-byte header included) as q does.
///
/// Returns `None` when q would send the message uncompressed: 2000 bytes or fewer, or a result
/// not under half the size.
pub fn compress(message: &[u8]) -> Option<Vec<u8>> {
    let _ = message;
    todo!("compress")
}

/// Decompresses a whole compressed frame (header included) into the whole uncompressed message:
/// its 8-byte header (compression flag cleared, length set to the uncompressed size) then its
/// body.
///
/// # Errors
///
/// [`DecompressError`] when the frame is malformed or claims an uncompressed size above `limit`;
/// nothing is allocated for a size above the limit.
pub fn decompress(frame: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let _ = (frame, limit);
    todo!("decompress")
}
