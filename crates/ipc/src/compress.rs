//! q's IPC compression (reference §5): the compressor, bit-exact with `-18!`, and a bounded
//! decompressor.
//!
//! # Frame layout
//!
//! A compressed frame is a 12-byte header followed by the compressed stream:
//!
//! ```text
//!  0        1        2        3        4 .. 8             8 .. 12            12 ..
//! ┌────────┬────────┬────────┬────────┬──────────────────┬──────────────────┬──────────────┐
//! │ endian │ msgtyp │  0x01  │  0x00  │ compressed total │ uncompressed     │ compressed   │
//! │ 0 big  │        │ compr. │        │ length (u32, of  │ total length     │ stream       │
//! │ 1 lil  │        │  flag  │        │ this frame)      │ (u32, 8-byte     │              │
//! │        │        │        │        │                  │ header included) │              │
//! └────────┴────────┴────────┴────────┴──────────────────┴──────────────────┴──────────────┘
//! ```
//!
//! Both lengths are in the endianness of byte 0.
//!
//! # Stream
//!
//! The stream is LZ77-like. Tokens come in blocks of up to eight, each block preceded by a flag
//! byte whose bit `k` (least significant first) says what token `k` is:
//!
//! * `0`: a **literal**, one raw byte;
//! * `1`: a **back-reference**, two bytes `h, n`: copy `2 + n` bytes (2 to 257) from position
//!   `table[h]` of the output produced so far. The copy may overlap its own output.
//!
//! `table` has 256 entries, indexed by the XOR of two consecutive bytes, and holds the last
//! position where that pair started. Positions are absolute offsets in the uncompressed message,
//! header included, so the body starts at 8 and an entry of 0 means "never set".
//!
//! # Table updates
//!
//! The decoder must mirror the encoder exactly:
//!
//! * a literal at position `s` enters the pair `(b[s], b[s+1])` **lazily**, just before the next
//!   token is emitted (after that token's own table lookup), so a byte is never matched against
//!   itself;
//! * a back-reference starting at `s` enters `table[h] = s`; positions inside the copied run are
//!   **not** entered;
//! * the last two bytes of the message are always literals.
//!
//! q only sends a message compressed when it is longer than 2000 bytes and the compressor reaches
//! less than half its size; [`compress`] follows the same rules and returns `None` otherwise.

use crate::error::DecompressError;

/// q compresses only messages longer than this many bytes (header included).
const THRESHOLD: usize = 2000;

/// Length of the compressed frame's header: the 8-byte message header plus the uncompressed size.
const FRAME_HEADER: usize = 12;

/// Length of an uncompressed message header.
const HEADER: usize = 8;

/// At most this many bytes one block (a flag byte and eight tokens) adds to the output.
const MAX_BLOCK: usize = 17;

/// At most this many bytes one block can produce when decompressed: eight maximal runs.
const MAX_BLOCK_OUTPUT: u64 = 8 * 257;

/// The compressor's scratch table slot: "no pending literal".
const NO_PENDING: usize = 256;

/// Byte 0 of a header is 1 for little-endian, 0 for big-endian.
fn is_little(endian_byte: u8) -> bool {
    endian_byte == 1
}

/// `v` as four bytes in the message's endianness.
fn u32_bytes(v: u32, little: bool) -> [u8; 4] {
    if little {
        v.to_le_bytes()
    } else {
        v.to_be_bytes()
    }
}

/// The length of the common prefix of `a` and `b`, `a.len() == b.len()`.
///
/// Most matches in real data are a few bytes long, so the first 16 are compared one by one (a
/// word compare costs more there); longer runs go eight bytes at a time.
fn match_len(a: &[u8], b: &[u8]) -> usize {
    const SHORT: usize = 16;
    let short = a.len().min(b.len()).min(SHORT);
    let mut n = 0;
    while n < short && a[n] == b[n] {
        n += 1;
    }
    if n == SHORT {
        n += common_prefix(&a[SHORT..], &b[SHORT..]);
    }
    n
}

/// The length of the common prefix of `a` and `b`, compared eight bytes at a time.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let len = a.len().min(b.len());
    let (a, b) = (&a[..len], &b[..len]);
    let (a_chunks, _) = a.as_chunks::<8>();
    let (b_chunks, _) = b.as_chunks::<8>();
    let mut n = 0;
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        let diff = u64::from_le_bytes(*x) ^ u64::from_le_bytes(*y);
        if diff != 0 {
            // Little-endian load: the first differing byte is the lowest non-zero one.
            return n + (diff.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    n + a[n..]
        .iter()
        .zip(&b[n..])
        .take_while(|(x, y)| x == y)
        .count()
}

/// Compresses a whole uncompressed message (8-byte header included) as q does.
///
/// Returns `None` when q would send the message uncompressed: 2000 bytes or fewer, or a result
/// not under half the size.
/// The output is the whole compressed frame, header included, bit-exact with q's `-18!`.
pub fn compress(message: &[u8]) -> Option<Vec<u8>> {
    let y = message;
    let t = y.len();
    // Strictly more than 2000 bytes, as q. This also guarantees the 8-byte header is there and
    // that `e - MAX_BLOCK` below cannot underflow.
    if t <= THRESHOLD {
        return None;
    }
    // The uncompressed length must fit the 32-bit field (capability 3 framing).
    let total = u32::try_from(t).ok()?;
    let little = is_little(y[0]);

    // The output never grows past half the input: a block starts only while `d <= e - 17`, and a
    // block writes at most 17 bytes.
    let e = t / 2;
    let mut out = vec![0u8; e];
    out[..4].copy_from_slice(&y[..4]);
    out[2] = 1;
    out[8..12].copy_from_slice(&u32_bytes(total, little));

    // Last position of each pair hash; 0 is "empty" since positions start at 8. Entry 256 is a
    // scratch slot that takes the lazy insert when there is no pending literal, which saves a
    // branch in the hot loop; it is never looked up (hashes are below 256).
    let mut table = [0usize; 257];
    let mut d = FRAME_HEADER; // next output byte
    let mut s = HEADER; // next input byte
    // The pending literal whose pair is entered lazily, and its hash (`NO_PENDING`: none).
    let mut s0 = 0usize;
    let mut h0 = NO_PENDING;
    // The hash of the last pair looked up. q does not recompute it for the last two bytes, so
    // they enter a stale hash; harmless, since no lookup follows them.
    let mut h = 0usize;
    // From `last` on, bytes are literals: a pair needs a byte after it, a match two.
    let last = t - 2;

    while s < t {
        if d > e - MAX_BLOCK {
            return None; // not compressing to under half: q gives up
        }
        // The block (flag byte first, then at most 8 tokens of at most 2 bytes) is built on the
        // stack, then copied whole: `d <= e - 17` keeps the copy in bounds, and the bytes past
        // the block's end are overwritten by the next block or truncated.
        let mut block = [0u8; MAX_BLOCK];
        let mut k = 1;
        let mut f = 0u8;
        let mut bit = 1u8;
        while bit != 0 && s < t {
            let (literal, p) = if s >= last {
                (true, 0)
            } else {
                h = usize::from(y[s] ^ y[s + 1]);
                let p = table[h];
                // No candidate, or a hash collision on the first byte (the second byte then
                // matches too: same XOR, same first byte).
                (p == 0 || y[s] != y[p], p)
            };
            // The previous literal's pair goes in after this token's lookup, never before.
            table[h0] = s0;
            h0 = NO_PENDING;
            if literal {
                h0 = h;
                s0 = s;
                block[k] = y[s];
                k += 1;
                s += 1;
            } else {
                table[h] = s;
                f |= bit;
                // The first two bytes match; extend by up to 255 more, never past the end.
                // `p < s`, so the candidate range is in bounds whenever the current one is.
                let r = s + 2;
                let q = (r + 255).min(t);
                let n = match_len(&y[p + 2..p + 2 + (q - r)], &y[r..q]);
                s = r + n;
                block[k] = h as u8; // h < 256
                block[k + 1] = n as u8; // n <= 255
                k += 2;
            }
            bit = bit.wrapping_shl(1);
        }
        block[0] = f;
        out[d..d + MAX_BLOCK].copy_from_slice(&block);
        d += k;
    }

    // `d <= e <= u32::MAX / 2`.
    let compressed = u32::try_from(d).ok()?;
    out[4..8].copy_from_slice(&u32_bytes(compressed, little));
    out.truncate(d);
    Some(out)
}

/// The uncompressed size a compressed frame claims, header included, once it is checked: at
/// least a header, at most `limit`, and no more than its stream could produce.
///
/// # Errors
///
/// As [`decompress`], for what the frame's first bytes and length tell.
pub(crate) fn claimed_size(frame: &[u8], limit: usize) -> Result<usize, DecompressError> {
    // The header holds the uncompressed size; anything shorter cannot be read.
    if frame.len() < FRAME_HEADER {
        return Err(DecompressError::TooShort(frame.len()));
    }
    let little = is_little(frame[0]);
    let size_bytes = [frame[8], frame[9], frame[10], frame[11]];
    let claimed = if little {
        u32::from_le_bytes(size_bytes)
    } else {
        u32::from_be_bytes(size_bytes)
    };
    // Peer-controlled: the size counts the 8-byte header, which the output always holds.
    if claimed < HEADER as u32 {
        return Err(DecompressError::SizeTooSmall(claimed));
    }
    // Peer-controlled: refuse anything above the caller's limit before allocating a byte.
    let size = match usize::try_from(claimed) {
        Ok(size) if size <= limit => size,
        _ => {
            return Err(DecompressError::TooLarge {
                size: u64::from(claimed),
                limit,
            });
        }
    };
    // Peer-controlled: a block of at most 17 stream bytes yields at most 8 × 257 bytes, so a
    // short stream cannot honestly claim a huge size. Refusing it here means a 12-byte frame
    // cannot make us allocate up to `limit`; decoding it could only fail (the stream runs out at
    // its end, unless a bad reference or an overflow is met first).
    let stream_len = (frame.len() - FRAME_HEADER) as u64;
    let max_body = (stream_len / MAX_BLOCK as u64 + 1).saturating_mul(MAX_BLOCK_OUTPUT);
    if (size - HEADER) as u64 > max_body {
        return Err(DecompressError::Truncated(frame.len()));
    }
    Ok(size)
}

/// Decompresses a whole compressed frame (header included) into the whole uncompressed message:
/// its 8-byte header (compression flag cleared, length set to the uncompressed size) then its
/// body.
///
/// Bytes after the end of the stream are ignored; the compressed length at bytes 4..8 is not
/// checked here (framing is the caller's business).
///
/// # Errors
///
/// [`DecompressError`] when the frame is malformed or claims an uncompressed size above `limit`;
/// nothing is allocated for a size above the limit.
pub fn decompress(frame: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let size = claimed_size(frame, limit)?;
    let little = is_little(frame[0]);
    // Invariant: the size was read from the frame's 32-bit field.
    let claimed = size as u32;

    let mut dst = vec![0u8; size];
    dst[0] = frame[0];
    dst[1] = frame[1];
    dst[4..8].copy_from_slice(&u32_bytes(claimed, little));

    // Every read of the stream is bounds-checked: a missing byte is `Truncated` at its offset.
    let byte = |at: usize| frame.get(at).copied().ok_or(DecompressError::Truncated(at));

    let mut table = [0usize; 256]; // 0: never set (positions start at 8)
    let mut s = HEADER; // next output byte
    let mut p = HEADER; // next position whose pair is to be entered in the table
    let mut d = FRAME_HEADER; // next stream byte
    let mut f = 0u8; // current flag byte
    let mut bit = 0u8; // current flag bit; 0: a new block starts

    while s < size {
        if bit == 0 {
            f = byte(d)?;
            d += 1;
            bit = 1;
        }
        if f & bit != 0 {
            let at = d;
            let h = byte(d)?;
            let n = byte(d + 1)?;
            d += 2;
            let r = table[usize::from(h)];
            // Peer-controlled: the entry must have been set, and so lies in the output already
            // produced (entries are always below `s - 1`; checked anyway).
            if r == 0 || r >= s {
                return Err(DecompressError::BadReference { offset: at });
            }
            // Peer-controlled: the run must fit in the claimed size.
            let len = 2 + usize::from(n);
            if len > size - s {
                return Err(DecompressError::Overflow { offset: at });
            }
            copy_run(&mut dst, r, s, len);
            // Enter the pairs up to the run's start, not those inside the run.
            while p <= s {
                table[usize::from(dst[p] ^ dst[p + 1])] = p;
                p += 1;
            }
            s += len;
            p = s;
        } else {
            dst[s] = byte(d)?;
            d += 1;
            s += 1;
            // Lazily enter the previous literal's pair (and nothing for this one yet).
            while p + 1 < s {
                table[usize::from(dst[p] ^ dst[p + 1])] = p;
                p += 1;
            }
        }
        bit = bit.wrapping_shl(1);
    }
    Ok(dst)
}

/// Copies `len` bytes from `dst[from..]` to `dst[to..]`, `from < to`, with the result of a
/// byte-by-byte forward copy when the ranges overlap (a run repeating the last `to - from` bytes).
fn copy_run(dst: &mut [u8], from: usize, to: usize, len: usize) {
    let dist = to - from;
    if dist == 1 {
        let b = dst[from];
        dst[to..to + len].fill(b);
        return;
    }
    // Each chunk's source ends at or before its destination starts, so it is already written.
    let mut done = 0;
    while done < len {
        let chunk = dist.min(len - done);
        dst.copy_within(from + done..from + done + chunk, to + done);
        done += chunk;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bytes from a hex string.
    fn hex(s: &str) -> Vec<u8> {
        assert!(s.len().is_multiple_of(2));
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// A whole uncompressed message: header (async, not compressed, length set) then `body`.
    fn message(little: bool, body: &[u8]) -> Vec<u8> {
        let total = u32::try_from(HEADER + body.len()).expect("length");
        let mut m = vec![u8::from(little), 0, 0, 0];
        m.extend_from_slice(&u32_bytes(total, little));
        m.extend_from_slice(body);
        m
    }

    /// A literal port of the reference pseudocode (§5.4), to compare the fast compressor with.
    fn reference_compress(y: &[u8]) -> Option<Vec<u8>> {
        let t = y.len();
        if t <= 2000 {
            return None;
        }
        let little = y[0] == 1;
        let mut out = vec![0u8; t / 2];
        let e = out.len();
        out[0..4].copy_from_slice(&y[0..4]);
        out[2] = 1;
        out[8..12].copy_from_slice(&u32_bytes(t as u32, little));
        let (mut c, mut d, mut i, mut f) = (12usize, 12usize, 0u8, 0u8);
        let (mut h0, mut h, mut s0, mut s) = (0usize, 0usize, 0usize, 8usize);
        let mut a = [0usize; 256];
        while s < t {
            if i == 0 {
                if d > e - 17 {
                    return None;
                }
                i = 1;
                out[c] = f;
                c = d;
                d += 1;
                f = 0;
            }
            let (g, mut p) = if s > t - 3 {
                (true, 0)
            } else {
                h = usize::from(y[s] ^ y[s + 1]);
                let p = a[h];
                (p == 0 || y[s] != y[p], p)
            };
            if s0 > 0 {
                a[h0] = s0;
                s0 = 0;
            }
            if g {
                h0 = h;
                s0 = s;
                out[d] = y[s];
                d += 1;
                s += 1;
            } else {
                a[h] = s;
                f |= i;
                p += 2;
                s += 2;
                let r = s;
                let q = (s + 255).min(t);
                while y[p] == y[s] {
                    s += 1;
                    if s < q {
                        p += 1;
                    } else {
                        break;
                    }
                }
                out[d] = h as u8;
                out[d + 1] = (s - r) as u8;
                d += 2;
            }
            i = i.wrapping_mul(2);
        }
        out[c] = f;
        out[4..8].copy_from_slice(&u32_bytes(d as u32, little));
        out.truncate(d);
        Some(out)
    }

    /// Decompresses `frame` to `expected`, and compresses `expected` back to `frame`.
    fn check_vector(frame_hex: &str, expected_body: &[u8]) {
        let frame = hex(frame_hex);
        let expected = message(true, expected_body);
        assert_eq!(expected.len(), 2014);
        let got = decompress(&frame, 1 << 20).expect("decompress");
        assert_eq!(got[..8], [1, 0, 0, 0, 0xde, 0x07, 0, 0]);
        assert_eq!(got, expected);
        assert_eq!(compress(&expected).as_deref(), Some(&frame[..]));
        assert_eq!(reference_compress(&expected).as_deref(), Some(&frame[..]));
    }

    /// Compresses `m`, checks it against the reference port, and decompresses it back.
    fn check_round_trip(m: &[u8]) -> Vec<u8> {
        let frame = compress(m).expect("compressible");
        assert_eq!(reference_compress(m), Some(frame.clone()));
        assert!(frame.len() <= m.len() / 2);
        assert_eq!(frame[2], 1);
        let little = m[0] == 1;
        assert_eq!(frame[4..8], u32_bytes(frame.len() as u32, little));
        assert_eq!(frame[8..12], u32_bytes(m.len() as u32, little));
        assert_eq!(decompress(&frame, m.len()).expect("decompress"), m);
        frame
    }

    /// `n` pseudo-random bytes (xorshift64).
    fn noise(n: usize, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn c1_bools() {
        let mut body = hex("0100d0070000");
        body.extend(std::iter::repeat_n(1u8, 2000));
        check_vector(
            "0100010026000000de070000000100d00700000101ff00ff00ff00ff00ff00ff00ff00ff00c5",
            &body,
        );
    }

    #[test]
    fn c4_symbols_a() {
        let mut body = hex("0b00e8030000");
        body.extend([0x61, 0].repeat(1000));
        check_vector(
            "010001002d000000de070000800b00e80300006161ffaa6161ff6161ff6161ff6161ff2a6161ff6161ff6161bf",
            &body,
        );
    }

    #[test]
    fn c6_symbols_q() {
        let mut body = hex("0b00e8030000");
        body.extend([0x71, 0].repeat(1000));
        check_vector(
            "010001002d000000de070000800b00e80300007171ffaa7171ff7171ff7171ff7171ff2a7171ff7171ff7171bf",
            &body,
        );
    }

    #[test]
    fn random_bytes_are_not_compressed() {
        let mut body = hex("040000000000"); // byte vector; count is irrelevant here
        body.extend(noise(3000, 0x9e37_79b9_7f4a_7c15));
        let m = message(true, &body);
        assert_eq!(compress(&m), None);
        assert_eq!(reference_compress(&m), None);
    }

    #[test]
    fn threshold_is_strictly_above_2000() {
        let m = message(true, &[0u8; 1992]);
        assert_eq!(m.len(), 2000);
        assert_eq!(compress(&m), None);
        let m = message(true, &[0u8; 1993]);
        check_round_trip(&m);
    }

    #[test]
    fn round_trips() {
        // Long runs of one byte: maximal 257-byte back-references, over 64 KiB.
        let big = check_round_trip(&message(true, &[7u8; 100_000]));
        assert!(big.windows(2).any(|w| w == [0, 255]));
        // Runs of varying lengths and values, over 64 KiB.
        let mut body = Vec::new();
        for i in 0..2000usize {
            body.extend(std::iter::repeat_n((i % 7) as u8, i % 300 + 1));
        }
        assert!(body.len() > 65_536);
        check_round_trip(&message(true, &body));
        // A repeating pattern with overlapping references (period 3, 5).
        let body: Vec<u8> = (0..5000u32).map(|i| [1, 2, 3][i as usize % 3]).collect();
        check_round_trip(&message(true, &body));
        let body: Vec<u8> = (0..70_000u32).map(|i| (i % 5) as u8 * 40).collect();
        check_round_trip(&message(true, &body));
        // Text-like data with some noise in it.
        let mut body = Vec::new();
        let n = noise(4000, 42);
        for (i, chunk) in n.chunks(16).enumerate() {
            body.extend_from_slice(b"the quick brown fox jumps over ");
            body.extend_from_slice(&chunk[..i % 3]);
        }
        check_round_trip(&message(true, &body));
        // Big-endian: both lengths are big-endian.
        let mut body = hex("0600000003e8"); // int vector, big-endian count
        for i in 0..1000u32 {
            body.extend_from_slice(&(i % 10).to_be_bytes());
        }
        let m = message(false, &body);
        let frame = check_round_trip(&m);
        assert_eq!(frame[0], 0);
        assert_eq!(frame[8..12], (m.len() as u32).to_be_bytes());
    }

    /// A compressed frame: little-endian header with `size`, then `stream`.
    fn frame(size: u32, stream: &[u8]) -> Vec<u8> {
        let mut f = vec![1, 0, 1, 0];
        f.extend_from_slice(&((12 + stream.len()) as u32).to_le_bytes());
        f.extend_from_slice(&size.to_le_bytes());
        f.extend_from_slice(stream);
        f
    }

    #[test]
    fn hand_made_stream() {
        // "abab" then a 5-byte reference to the "ab" pair at 8 (overlapping): ababababa.
        let got = decompress(&frame(17, &[0b1_0000, b'a', b'b', b'a', b'b', 3, 3]), 100)
            .expect("decompress");
        assert_eq!(got[..8], [1, 0, 0, 0, 17, 0, 0, 0]);
        assert_eq!(&got[8..], b"ababababa");
    }

    #[test]
    fn errors() {
        use DecompressError as E;
        assert_eq!(decompress(&[1; 11], 100), Err(E::TooShort(11)));
        assert_eq!(decompress(&[], 100), Err(E::TooShort(0)));
        assert_eq!(decompress(&frame(7, &[0, 1]), 100), Err(E::SizeTooSmall(7)));
        // A size above the limit is refused before anything is allocated.
        assert_eq!(
            decompress(&frame(1000, &[0; 100]), 999),
            Err(E::TooLarge {
                size: 1000,
                limit: 999
            })
        );
        assert_eq!(
            decompress(&frame(u32::MAX, &[]), 1 << 20),
            Err(E::TooLarge {
                size: u64::from(u32::MAX),
                limit: 1 << 20
            })
        );
        // Big-endian size field.
        let mut f = frame(0, &[]);
        f[0] = 0;
        f[8..12].copy_from_slice(&5000u32.to_be_bytes());
        assert_eq!(
            decompress(&f, 4999),
            Err(E::TooLarge {
                size: 5000,
                limit: 4999
            })
        );
        // Size exactly at the limit is fine.
        assert_eq!(
            decompress(&frame(10, &[0, 1, 2]), 10).map(|v| v.len()),
            Ok(10)
        );
        // A size no stream of this length could produce.
        assert_eq!(
            decompress(&frame(100_000, &[0; 20]), 1 << 20),
            Err(E::Truncated(32))
        );
        // The stream ends: two literals of the twelve needed.
        assert_eq!(
            decompress(&frame(20, &[0, 1, 2]), 100),
            Err(E::Truncated(15))
        );
        // No flag byte at all.
        assert_eq!(decompress(&frame(9, &[]), 100), Err(E::Truncated(12)));
        // A reference cut after its hash byte.
        assert_eq!(
            decompress(&frame(20, &[0b100, 1, 1, 0]), 100),
            Err(E::Truncated(16))
        );
        // A reference before any table entry exists.
        assert_eq!(
            decompress(&frame(20, &[1, 5, 0]), 100),
            Err(E::BadReference { offset: 13 })
        );
        // A reference to a hash never entered (pair 'a','a' has hash 0; 5 is unset).
        assert_eq!(
            decompress(&frame(20, &[0b1000, b'a', b'a', b'a', 5, 0]), 100),
            Err(E::BadReference { offset: 16 })
        );
        // A run past the uncompressed size: 3 bytes written, 1 left, a run of 2.
        assert_eq!(
            decompress(&frame(12, &[0b1000, b'a', b'a', b'a', 0, 0]), 100),
            Err(E::Overflow { offset: 16 })
        );
        // The same run fits one more byte.
        assert_eq!(
            decompress(&frame(13, &[0b1000, b'a', b'a', b'a', 0, 0]), 100).map(|v| v[8..].to_vec()),
            Ok(b"aaaaa".to_vec())
        );
    }

    proptest! {
        #[test]
        fn compress_matches_reference_and_round_trips(
            runs in proptest::collection::vec((any::<u8>(), 1usize..300), 1..200),
            little in any::<bool>(),
        ) {
            let mut body = Vec::new();
            for (b, n) in runs {
                body.extend(std::iter::repeat_n(b, n));
            }
            let m = message(little, &body);
            let got = compress(&m);
            prop_assert_eq!(&got, &reference_compress(&m));
            if let Some(frame) = got {
                prop_assert_eq!(decompress(&frame, m.len()), Ok(m));
            }
        }

        #[test]
        fn compress_matches_reference_on_small_alphabets(
            body in proptest::collection::vec(0u8..4, 1990..6000),
        ) {
            let m = message(true, &body);
            let got = compress(&m);
            prop_assert_eq!(&got, &reference_compress(&m));
            if let Some(frame) = got {
                prop_assert_eq!(decompress(&frame, m.len()), Ok(m));
            }
        }

        #[test]
        fn decompress_survives_corrupted_frames(
            runs in proptest::collection::vec((0u8..8, 1usize..40), 100..300),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let mut body = Vec::new();
            for (b, n) in runs {
                body.extend(std::iter::repeat_n(b, n));
            }
            let m = message(true, &body);
            if let Some(mut f) = compress(&m) {
                for (at, b) in edits {
                    let at = FRAME_HEADER + at % (f.len() - FRAME_HEADER);
                    f[at] = b;
                }
                f.truncate(FRAME_HEADER + cut % (f.len() - FRAME_HEADER + 1));
                if let Ok(out) = decompress(&f, m.len()) {
                    prop_assert_eq!(out.len(), m.len());
                }
            }
        }

        #[test]
        fn decompress_never_panics(
            size in 0u32..5000,
            stream in proptest::collection::vec(any::<u8>(), 0..400),
            limit in 0usize..6000,
        ) {
            if let Ok(out) = decompress(&frame(size, &stream), limit) {
                prop_assert_eq!(out.len(), size as usize);
                prop_assert!(out.len() <= limit);
            }
        }
    }
}
