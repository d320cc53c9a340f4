//! What comes back from the backend, when the hooks look at it before the client gets it
//! (`Hooks::outbound`): the reply to a sync request is held whole ([`Capture`]), validated, and
//! handed to `Hooks::on_response`; each async message the backend pushes is handed to
//! `Hooks::on_publication`.
//!
//! ```text
//!   Link::sync ──► Capture (frames back to back, charged to the memory budget)
//!                     │ split into frames
//!                     ├─ pushes before the reply ──► on_publication ──► client
//!                     └─ the reply ──► decompress, validate ──► on_response ──► client
//! ```
//!
//! With no hook looking, none of this runs: replies stream through and pushes are written as they
//! came.

use qgate_hooks::{Body, Downstream, Request};
use qgate_ipc::{HEADER_LEN, Header, Limits, Locality, Message, MessageType, compress};

use crate::{
    budget::{BudgetExhausted, CHARGED_MIN_BYTES, Charge, MemoryBudget},
    buffers::{BufferPool, POOLED_MIN_BYTES},
    connection::{ClientStream, Connection},
};

/// The largest frame from the backend that the outbound events take: a frame's length field is 32
/// bits, and the backend has its own cap on replies (the gateway's `max_reply_bytes`), checked
/// before any of a reply is read; the memory budget bounds what is held at once.
const MAX_FRAME_BYTES: usize = u32::MAX as usize;

/// The client's side of a forwarded request whose reply the hooks look at: what the backend
/// writes is kept, whole frames back to back, charged to the memory budget as it grows, and
/// written to the client only once the hooks have seen it.
///
/// A large reply goes into a buffer from the server's pool, so that a run of large replies does
/// not pay for fresh memory each time (see `buffers.rs`).
pub(crate) struct Capture<'a, S> {
    connection: &'a mut Connection<S>,
    pool: &'a BufferPool,
    bytes: Vec<u8>,
    charge: Charge,
    /// Where the next frame whose header has not been read starts.
    scan: usize,
    /// Set when the memory budget could not hold the reply: the write failed for that reason,
    /// not because the client went away.
    pub(crate) over_budget: Option<BudgetExhausted>,
}

impl<'a, S: ClientStream> Capture<'a, S> {
    pub(crate) fn new(
        connection: &'a mut Connection<S>,
        budget: &MemoryBudget,
        pool: &'a BufferPool,
    ) -> Self {
        Self {
            connection,
            pool,
            bytes: Vec::new(),
            charge: budget.empty(),
            scan: 0,
            over_budget: None,
        }
    }

    /// What was captured, and the charge that pays for it.
    pub(crate) fn into_parts(self) -> (Vec<u8>, Charge) {
        (self.bytes, self.charge)
    }

    /// Makes room for `more` bytes: up to the end of the frame they belong to when its header is
    /// in, so that a large reply is allocated once rather than doubled into place, and charged
    /// first when it is large.
    async fn reserve(&mut self, more: usize) -> Result<(), BudgetExhausted> {
        let wanted_len = self.bytes.len() + more;
        if wanted_len <= self.bytes.capacity() {
            return Ok(());
        }
        let mut target = wanted_len;
        let mut at = self.scan;
        while let Some(len) = frame_len(self.bytes.get(at..).unwrap_or_default()) {
            let end = at.saturating_add(len.max(HEADER_LEN));
            if end > wanted_len {
                target = target.max(end);
                break;
            }
            at = end;
        }
        if target >= CHARGED_MIN_BYTES {
            let more_charge = target.saturating_sub(self.charge.bytes());
            let deadline = tokio::time::Instant::now() + MemoryBudget::WAIT;
            self.charge.grow(more_charge, deadline).await?;
        }
        if target >= POOLED_MIN_BYTES {
            // A kept buffer, when there is one larger than this: the bytes so far (a header, a
            // few pushes) move into it.
            let (mut pooled, pooled_charge) = self.pool.take(target);
            if pooled.capacity() > self.bytes.capacity() {
                pooled.extend_from_slice(&self.bytes);
                self.pool.put(std::mem::replace(&mut self.bytes, pooled));
                // The kept buffer's charge pays for it, and what was charged for `target` beyond
                // it goes back.
                self.charge.absorb(pooled_charge);
                self.charge.shrink_to(self.bytes.capacity());
            } else {
                drop(pooled_charge);
                self.pool.put(pooled);
            }
        }
        self.bytes.reserve_exact(target - self.bytes.len());
        Ok(())
    }

    /// Moves `scan` past the frames that are whole.
    fn advance(&mut self) {
        while let Some(len) = frame_len(self.bytes.get(self.scan..).unwrap_or_default()) {
            let len = len.max(HEADER_LEN);
            if self.scan + len > self.bytes.len() {
                break;
            }
            self.scan += len;
        }
    }
}

impl<S: ClientStream> Downstream for Capture<'_, S> {
    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if let Err(exhausted) = self.reserve(bytes.len()).await {
            let error = std::io::Error::new(std::io::ErrorKind::OutOfMemory, exhausted.to_string());
            self.over_budget = Some(exhausted);
            return Err(error);
        }
        self.bytes.extend_from_slice(bytes);
        self.advance();
        Ok(())
    }

    async fn gone(&mut self) {
        self.connection.peer_closed().await;
    }

    fn write_timeout(&self) -> std::time::Duration {
        self.connection.write_timeout()
    }
}

/// The length a frame's header claims, when its 8 bytes are there.
fn frame_len(bytes: &[u8]) -> Option<usize> {
    let header: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
    let len = if header[0] == 0 {
        u32::from_be_bytes([header[4], header[5], header[6], header[7]])
    } else {
        u32::from_le_bytes([header[4], header[5], header[6], header[7]])
    };
    Some(len as usize)
}

/// One frame from the backend, as it came.
pub(crate) struct Frame<'a> {
    pub(crate) header: Header,
    pub(crate) bytes: &'a [u8],
    /// Where it starts in what was captured.
    pub(crate) start: usize,
}

/// The whole frames in `bytes`, in order; a malformed header or a partial frame at the end ends
/// the list, and is reported as the `Err` item.
pub(crate) fn frames(bytes: &[u8]) -> impl Iterator<Item = Result<Frame<'_>, String>> + '_ {
    let limits = Limits::new(MAX_FRAME_BYTES);
    let mut at = 0;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || at >= bytes.len() {
            return None;
        }
        let rest = &bytes[at..];
        let item = match Header::parse(rest, &limits) {
            Ok(Some(header)) if header.len() <= rest.len() => {
                let frame = Frame {
                    header,
                    bytes: &rest[..header.len()],
                    start: at,
                };
                at += header.len();
                Ok(frame)
            }
            Ok(_) => Err(format!(
                "the backend's message is cut off after {} bytes",
                rest.len()
            )),
            Err(error) => Err(format!("the backend sent a malformed header: {error}")),
        };
        failed = item.is_err();
        Some(item)
    })
}

/// A frame from the backend as a validated message the hooks can look at: decompressed (its
/// uncompressed size charged to the budget first when it is large) and checked as a received
/// message is.
pub(crate) async fn open_frame(
    frame: &Frame<'_>,
    budget: &MemoryBudget,
) -> Result<(Request, Charge), String> {
    let limits = Limits::new(MAX_FRAME_BYTES);
    let mut charge = budget.empty();
    if frame.header.compressed {
        let len = Message::uncompressed_len(&frame.header, frame.bytes, &limits)
            .map_err(|error| format!("the backend's message does not decompress: {error}"))?;
        if len >= CHARGED_MIN_BYTES {
            charge = budget
                .charge(len)
                .await
                .map_err(|error| format!("the server's memory budget is spent: {error}"))?;
        }
    } else if frame.bytes.len() >= CHARGED_MIN_BYTES {
        // The copy a `Message` owns.
        charge = budget
            .charge(frame.bytes.len())
            .await
            .map_err(|error| format!("the server's memory budget is spent: {error}"))?;
    }
    let message = Message::from_parsed(frame.header, frame.bytes.to_vec(), &limits)
        .map_err(|error| format!("the backend's message does not decompress: {error}"))?;
    let request = Request::new(message)
        .map_err(|error| format!("the backend's message is malformed: {error}"))?;
    Ok((request, charge))
}

/// The reply that ends what a [`Capture`] holds (`header`, from `start` to the end of `bytes`), as
/// a validated message, as [`open_frame`] makes it, but without a copy when it can: an
/// uncompressed reply that is all of the capture becomes the message in its own buffer. Otherwise
/// the capture's buffer goes back to `pool` once the message is made.
pub(crate) async fn open_reply(
    bytes: Vec<u8>,
    header: Header,
    start: usize,
    budget: &MemoryBudget,
    pool: &BufferPool,
) -> Result<(Request, Charge), String> {
    if start == 0 && !header.compressed && header.len() == bytes.len() {
        // The capture's charge already pays for these bytes.
        let message = Message::from_parsed(header, bytes, &Limits::new(MAX_FRAME_BYTES))
            .map_err(|error| format!("the backend's message does not decompress: {error}"))?;
        let request = Request::new(message)
            .map_err(|error| format!("the backend's message is malformed: {error}"))?;
        return Ok((request, budget.empty()));
    }
    let frame = Frame {
        header,
        bytes: bytes
            .get(start..start.saturating_add(header.len()))
            .ok_or("the backend's message is cut off")?,
        start,
    };
    let opened = open_frame(&frame, budget).await;
    pool.put(bytes);
    opened
}

/// [`frame_body`], appended to `out`: straight after what is there when the message is not
/// compressed (a feed's filtered publications, one after another into one write), through
/// [`frame_body`] when it is.
pub(crate) fn append_framed(
    out: &mut Vec<u8>,
    message_type: MessageType,
    body: &Body,
    locality: Locality,
    capability: u8,
) -> Result<(), String> {
    if locality == Locality::Remote && capability >= 1 {
        out.extend_from_slice(&frame_body(message_type, body, locality, capability)?);
        return Ok(());
    }
    let len = HEADER_LEN + body.as_bytes().len();
    let len32 = u32::try_from(len)
        .map_err(|_| format!("a replacement of {len} bytes is too large for a q message"))?;
    out.extend_from_slice(&Header::little(message_type, len32).to_bytes());
    out.extend_from_slice(body.as_bytes());
    Ok(())
}

/// A replacement value framed as a message of `message_type`, compressed when q would send it
/// compressed to this peer.
pub(crate) fn frame_body(
    message_type: MessageType,
    body: &Body,
    locality: Locality,
    capability: u8,
) -> Result<Vec<u8>, String> {
    let len = HEADER_LEN + body.as_bytes().len();
    let len32 = u32::try_from(len)
        .map_err(|_| format!("a replacement of {len} bytes is too large for a q message"))?;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&Header::little(message_type, len32).to_bytes());
    out.extend_from_slice(body.as_bytes());
    if locality == Locality::Remote
        && capability >= 1
        && let Some(compressed) = compress(&out)
    {
        return Ok(compressed);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(message_type: MessageType, body: &[u8]) -> Vec<u8> {
        let mut out = Header::little(message_type, (HEADER_LEN + body.len()) as u32)
            .to_bytes()
            .to_vec();
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn frames_split_back_to_back_messages_and_report_a_cut() {
        let mut bytes = frame(MessageType::Async, &[0xf9, 1, 0, 0, 0, 0, 0, 0, 0]);
        bytes.extend(frame(MessageType::Response, &[0xf5, b'x', 0]));
        let split: Vec<_> = frames(&bytes).collect();
        assert_eq!(split.len(), 2);
        assert_eq!(
            split[0].as_ref().unwrap().header.message_type,
            MessageType::Async
        );
        assert_eq!(
            split[1].as_ref().unwrap().header.message_type,
            MessageType::Response
        );

        let cut = &bytes[..bytes.len() - 1];
        let split: Vec<_> = frames(cut).collect();
        assert_eq!(split.len(), 2);
        assert!(split[0].is_ok());
        assert!(split[1].as_ref().is_err_and(|e| e.contains("cut off")));
    }

    #[test]
    fn a_replacement_is_framed_and_compressed_only_for_a_remote_peer() {
        let body = Body::new(
            [10u8, 0, 0x10, 0x27, 0, 0]
                .into_iter()
                .chain([b'a'; 10000])
                .collect(),
        )
        .unwrap();
        let local = frame_body(MessageType::Response, &body, Locality::Local, 3).unwrap();
        assert_eq!(local.len(), HEADER_LEN + body.as_bytes().len());
        assert_eq!(local[1], 2);
        let remote = frame_body(MessageType::Response, &body, Locality::Remote, 3).unwrap();
        assert!(remote.len() < local.len() / 2);
        let message = Message::from_frame(remote.clone(), &Limits::new(1 << 20)).unwrap();
        assert_eq!(message.body(), body.as_bytes());
        // Appended, it is the same bytes after what was there.
        for (locality, framed) in [(Locality::Local, &local), (Locality::Remote, &remote)] {
            let mut out = vec![7u8];
            append_framed(&mut out, MessageType::Response, &body, locality, 3).unwrap();
            assert_eq!(out[0], 7);
            assert_eq!(&out[1..], &framed[..]);
        }
    }
}
