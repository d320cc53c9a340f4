//! Logging what a peer said without letting it write the log: client text escaped and cut short,
//! and repeated events summarised.
//!
//! Text a client chooses reaches the log in several places: its user name (in every line of its
//! connection's span), the error it sends back for a server query, the deny text of a plugin
//! that echoes the client's own input (`access: ...`). Logged raw, a newline in it starts a
//! forged log line, an ANSI escape repaints the operator's terminal, and 64 KiB of it in every
//! line fills the disk. [`ClientText`] is how such bytes go into a field: at most
//! [`ClientText::MAX_BYTES`] of them, control characters, invalid UTF-8 and the characters that
//! reorder text escaped, and quoted when they hold anything but plain word characters, so that a
//! space or an `=` cannot fake another field either.
//! The JSON format escapes what it writes by itself; the text goes through [`ClientText`] in both
//! formats, so the two say the same.
//!
//! A client can also make the server log the same event over and over (stray responses, denied
//! async messages). [`Repeats`] lets [`REPEATS_PER_WINDOW`] of them through every
//! [`REPEAT_WINDOW`] and counts the rest, which the next line that gets through (or the close)
//! reports.

use std::{
    fmt::{self, Write as _},
    time::{Duration, Instant},
};

/// How many times one event of one connection is logged in a [`REPEAT_WINDOW`].
///
/// 5 lines every 10 s: enough to see what a client is doing, and a flood of 100 000 stray
/// messages costs a line a second rather than 100 000 lines.
pub(crate) const REPEATS_PER_WINDOW: u32 = 5;

/// The window [`REPEATS_PER_WINDOW`] counts in.
pub(crate) const REPEAT_WINDOW: Duration = Duration::from_secs(10);

/// Client-supplied bytes, for a log field: escaped, cut at [`ClientText::MAX_BYTES`], and quoted
/// when they hold more than letters, digits and `_.-:@/+`.
#[derive(Clone, Copy)]
pub struct ClientText<'a>(pub &'a [u8]);

impl ClientText<'_> {
    /// The most bytes of one piece of client text that a log line holds.
    ///
    /// 256: enough for any real user name and for the first line of any real error, and what a
    /// person reads in a log line; past it the line says how long the text was.
    pub const MAX_BYTES: usize = 256;
}

impl fmt::Display for ClientText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (shown, cut) = match self.0.get(..Self::MAX_BYTES) {
            Some(shown) if shown.len() < self.0.len() => (shown, true),
            _ => (self.0, false),
        };
        let plain = !shown.is_empty() && !cut && shown.iter().all(|&b| is_plain(b));
        if plain {
            // Invariant: plain bytes are ASCII.
            return f.write_str(std::str::from_utf8(shown).unwrap_or_default());
        }
        f.write_char('"')?;
        for chunk in shown.utf8_chunks() {
            for c in chunk.valid().chars() {
                escape_char(c, f)?;
            }
            for byte in chunk.invalid() {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        f.write_char('"')?;
        if cut {
            write!(f, "...({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for ClientText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Whether a byte is shown as it is, outside quotes.
fn is_plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"_.-:@/+".contains(&byte)
}

/// Writes one character of client text, escaped if it could change how the line reads.
fn escape_char(c: char, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match c {
        '"' => f.write_str("\\\""),
        '\\' => f.write_str("\\\\"),
        '\n' => f.write_str("\\n"),
        '\r' => f.write_str("\\r"),
        '\t' => f.write_str("\\t"),
        // Control characters (C0, DEL, C1: ESC among them), and the characters that reorder or
        // hide text (bidirectional overrides and isolates, zero-width marks, line and paragraph
        // separators).
        c if c.is_control()
            || matches!(
                c,
                '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
                    | '\u{feff}'
            ) =>
        {
            write!(f, "\\u{{{:x}}}", u32::from(c))
        }
        c => f.write_char(c),
    }
}

/// One kind of event of one connection, logged at most [`REPEATS_PER_WINDOW`] times a
/// [`REPEAT_WINDOW`]; the rest are counted.
#[derive(Debug, Default)]
pub(crate) struct Repeats {
    /// When the current window started; `None` before the first event.
    window: Option<Instant>,
    /// Events logged in the current window.
    logged: u32,
    /// Events not logged since the last one that was.
    suppressed: u64,
}

impl Repeats {
    /// Counts one event. `Some(n)` when it is to be logged, `n` being how many were left out
    /// since the last one logged; `None` when it is left out.
    pub(crate) fn note(&mut self) -> Option<u64> {
        self.note_at(Instant::now())
    }

    fn note_at(&mut self, now: Instant) -> Option<u64> {
        let fresh = self
            .window
            .is_none_or(|start| now.duration_since(start) >= REPEAT_WINDOW);
        if fresh {
            self.window = Some(now);
            self.logged = 0;
        }
        if self.logged >= REPEATS_PER_WINDOW {
            self.suppressed += 1;
            return None;
        }
        self.logged += 1;
        Some(std::mem::take(&mut self.suppressed))
    }

    /// How many events were left out and not yet reported: for a summary at the close.
    pub(crate) fn unreported(&self) -> u64 {
        self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &[u8], expect: &str) {
        assert_eq!(ClientText(input).to_string(), expect, "{input:?}");
    }

    #[test]
    fn plain_text_is_shown_as_it_is() {
        check(b"alice", "alice");
        check(b"svc-ingest.eu@corp/1", "svc-ingest.eu@corp/1");
    }

    #[test]
    fn anything_else_is_quoted_and_escaped() {
        check(b"", "\"\"");
        check(b"bob smith", "\"bob smith\"");
        check(b"x user=admin", "\"x user=admin\"");
        check(
            b"nope\n2026-01-01T00:00:00Z  INFO forged",
            "\"nope\\n2026-01-01T00:00:00Z  INFO forged\"",
        );
        check(b"\x1b[31mred\x1b[0m", "\"\\u{1b}[31mred\\u{1b}[0m\"");
        check(b"say \"hi\" \\ bye", "\"say \\\"hi\\\" \\\\ bye\"");
        check(b"\xff\xfeok", "\"\\xff\\xfeok\"");
        check("jos\u{e9}".as_bytes(), "\"jos\u{e9}\"");
        check(
            "a\u{202e}b\u{2028}c".as_bytes(),
            "\"a\\u{202e}b\\u{2028}c\"",
        );
    }

    #[test]
    fn long_text_is_cut() {
        let long = vec![b'a'; 65536];
        let shown = ClientText(&long).to_string();
        assert_eq!(
            shown,
            format!("\"{}\"...(65536 bytes)", "a".repeat(ClientText::MAX_BYTES))
        );
    }

    #[test]
    fn repeats_are_limited_per_window_and_counted() {
        let mut repeats = Repeats::default();
        let start = Instant::now();
        for _ in 0..REPEATS_PER_WINDOW {
            assert_eq!(repeats.note_at(start), Some(0));
        }
        for _ in 0..1000 {
            assert_eq!(repeats.note_at(start), None);
        }
        assert_eq!(repeats.unreported(), 1000);
        let later = start + REPEAT_WINDOW;
        assert_eq!(repeats.note_at(later), Some(1000));
        assert_eq!(repeats.unreported(), 0);
    }
}
