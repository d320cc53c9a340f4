//! The kdb+/q IPC codec. It does not take care of network I/O: it turns bytes into q values and
//! q values into bytes, and the caller moves the bytes.
//!
//! ```text
//!   bytes from a peer                                        bytes to a peer
//!        │                                                          ▲
//!        ▼                                                          │
//!   handshake::parse ──► Handshake { user, password, capability }  reply_byte
//!        │
//!        ▼
//!   Header::parse (limit checked before allocation)                 encode_message
//!        │                                                          ▲
//!        ▼                                                          │
//!   decompress (bounded) ──► body ──► MessageView (zero-copy) ──► decode ──► K ──┘
//! ```
//!
//! Incomplete input is `Ok(None)`, never an error; malformed input is a typed [`Error`] that says
//! whose fault it is ([`Fault`]) and maps to what a server does about it ([`Close`] for the
//! peer's, a q error for the caller's: [`WireAction`]).
//! No function here panics on bytes from a peer, and none allocates what a peer only claims.
//!
//! The protocol reference is `shared/reference/kdb-ipc.md` (section numbers in the docs here
//! point into it).

#![warn(missing_docs)]

mod compress;
mod decode;
mod display;
mod encode;
mod error;
mod frame;
pub mod handshake;
// Table surgery on the bytes of replies and publications, for entitlement filtering.
pub mod table;
pub mod temporal;
mod value;
mod view;

// The public surface, in the order data flows through it.
pub use crate::{
    // Compression.
    compress::{compress, decompress},
    decode::{DecodeOptions, decode, decode_with, validate},
    // Encoding.
    encode::{
        COMPRESSION_THRESHOLD, EncodeOptions, Locality, encode, encode_message,
        encode_message_with, message_len,
    },
    // Errors.
    error::{
        Close, DecodeError, DecompressError, EncodeError, Error, Fault, FrameError, HandshakeError,
        WireAction,
    },
    // Framing: the 8-byte header, its limits and whole messages.
    frame::{Endian, HEADER_LEN, Header, Limits, Message, MessageType},
    // Values.
    value::{
        Atom, Attr, Dict, Function, K, List, NulInSymbol, Symbols, Table, Vector, VectorData,
        type_code,
    },
    // Body decoding: the zero-copy view and the owned decoder.
    view::{Call, ListItems, ValueView},
};

/// How deeply values may nest (lists in lists, dictionaries of lists, ...).
///
/// The decoder recurses once per level, so without a limit a 1 MB frame of nested one-item lists
/// (6 bytes a level) would overflow a thread's stack.
/// Real data nests a handful of levels (a keyed table is four); 100 leaves room for anything a q
/// program builds on purpose, and at the 3 to 7 KiB a level that unoptimised builds take, the
/// worst case stays well inside the 2 MiB stacks of tokio's workers and of test threads.
pub const MAX_DEPTH: usize = 100;
