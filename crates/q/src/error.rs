//! Parse errors: what went wrong, where (byte offset, line and column), and how q itself would
//! print the failure.
//!
//! Every error is the client's fault: the text is not q this crate can read with certainty.
//! Messages quote at most a few bytes of the text, escaped, so that they can be logged without
//! carrying a client's text raw.

use std::fmt::{self, Write as _};

/// The longest piece of source text an error message quotes, in bytes.
///
/// Enough to name a token; a longer one is cut with `...`, so that a message stays one short
/// line whatever a client sent.
const MAX_QUOTED_BYTES: usize = 24;

/// What is wrong with the text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The text is longer than [`crate::MAX_INPUT_BYTES`].
    #[error(
        "the text is {len} bytes, more than the {max}-byte limit for a query that policies read"
    )]
    TooLong {
        /// The text's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Brackets, lambdas and operators nest deeper than [`crate::MAX_DEPTH`].
    #[error("the expression nests deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// A string has no closing quote.
    #[error("a string has no closing quote")]
    UnterminatedString,
    /// A byte that starts no token.
    #[error("{byte} is not q syntax here")]
    UnexpectedByte {
        /// The byte, escaped.
        byte: String,
    },
    /// A token where none of its kind may stand.
    #[error("unexpected {token}")]
    Unexpected {
        /// The token, quoted and escaped.
        token: String,
    },
    /// A bracket, parenthesis or brace that is never closed.
    #[error("this {open} is never closed")]
    Unclosed {
        /// The opening character.
        open: char,
    },
    /// An operator in front of a value with nothing on its left: q disables the unary forms of
    /// operators written bare (`+x`, `$42` signal their own glyph).
    #[error(
        "`{glyph}` has nothing on its left: q does not apply an operator to one argument written \
         bare; use its keyword (`neg x`, `string x`) or parenthesize it (`(-)x`)"
    )]
    BarePrefix {
        /// The operator.
        glyph: String,
    },
    /// A number or temporal literal q would not read.
    #[error("{text} is not a valid literal")]
    BadLiteral {
        /// The literal, quoted and escaped.
        text: String,
    },
    /// A run of literals that cannot share one type (`1 2000.01.01`).
    #[error("these literals do not share a type: {text}")]
    MixedVector {
        /// The run, quoted and escaped.
        text: String,
    },
    /// A string escape q does not know (`\q`).
    #[error("unknown escape in a string: only \\\" \\\\ \\n \\r \\t and \\ooo (octal)")]
    BadEscape,
    /// A qSQL result name used both as a column and as a group (since q 4.0).
    #[error("dup names for cols/groups {name}")]
    DupNames {
        /// The first name that collides.
        name: String,
    },
    /// A qSQL template without its `from`.
    #[error("a {template} needs a `from` phrase")]
    MissingFrom {
        /// `select`, `exec`, `update` or `delete`.
        template: &'static str,
    },
    /// A qSQL `from` with no table after it.
    #[error("`from` needs a table")]
    MissingTable,
    /// An empty subphrase in a qSQL phrase (`select a,,b`).
    #[error("an empty subphrase in a qSQL phrase")]
    EmptySubphrase,
    /// Text in another language: `k)` or `s)` and the like, which this parser does not read.
    #[error("`{prefix})` text is not q: policies cannot read it")]
    Foreign {
        /// The language letter.
        prefix: char,
    },
    /// A construct this parser does not read, though q may.
    #[error("{what} is not supported")]
    Unsupported {
        /// What it is.
        what: &'static str,
    },
    /// A system command (`\cmd`) anywhere but at the start of a line.
    #[error("a system command must start a line")]
    MisplacedSystem,
}

impl ParseErrorKind {
    /// The error name q would signal for this text, as far as the sources show it: the glyph
    /// of a bare operator, `dup names for cols/groups b`, the offending token.
    pub fn q_name(&self) -> String {
        match self {
            ParseErrorKind::TooLong { .. } => "limit".to_owned(),
            ParseErrorKind::TooDeep { .. } => "stack".to_owned(),
            ParseErrorKind::UnterminatedString => "\"".to_owned(),
            ParseErrorKind::UnexpectedByte { byte } => byte.clone(),
            ParseErrorKind::Unexpected { token } => token.trim_matches('`').to_owned(),
            ParseErrorKind::Unclosed { open } => open.to_string(),
            ParseErrorKind::BarePrefix { glyph } => glyph.clone(),
            ParseErrorKind::BadLiteral { text } | ParseErrorKind::MixedVector { text } => {
                text.trim_matches('`').to_owned()
            }
            ParseErrorKind::BadEscape => "\\".to_owned(),
            ParseErrorKind::DupNames { name } => format!("dup names for cols/groups {name}"),
            ParseErrorKind::MissingFrom { .. }
            | ParseErrorKind::MissingTable
            | ParseErrorKind::EmptySubphrase => "from".to_owned(),
            ParseErrorKind::Foreign { prefix } => format!("{prefix})"),
            ParseErrorKind::Unsupported { .. } => "nyi".to_owned(),
            ParseErrorKind::MisplacedSystem => "\\".to_owned(),
        }
    }
}

/// A parse error and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// What is wrong.
    pub kind: ParseErrorKind,
    /// Byte offset in the text where the problem starts.
    pub offset: usize,
    /// 1-based line of `offset`.
    pub line: usize,
    /// 1-based column of `offset`, in bytes.
    pub column: usize,
}

impl ParseError {
    pub(crate) fn new(kind: ParseErrorKind, src: &[u8], offset: usize) -> ParseError {
        let offset = offset.min(src.len());
        let before = &src[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        ParseError {
            kind,
            offset,
            line,
            column: offset - line_start + 1,
        }
    }

    /// How the q console prints this error when `parse` signals it on `src`:
    ///
    /// ```text
    /// 'dup names for cols/groups b
    ///   [2]  select b by b from t
    ///        ^
    /// ```
    pub fn q_console(&self, src: &[u8]) -> String {
        let mut out = format!("'{}\n", self.kind.q_name());
        self.q_frame(&mut out, src, 2);
        out
    }

    /// How `.Q.trp[parse;src;{1@.Q.sbt 2#y}]` prints the backtrace of this error (KX's
    /// debugging page shows this form, with the failing text in frame 3 and `parse` in frame 2).
    pub fn q_trap(&self, src: &[u8]) -> String {
        let mut out = String::new();
        self.q_frame(&mut out, src, 3);
        out.push_str("\n  [2]  (.q.parse) ");
        out
    }

    /// `  [N]  line` and a caret under the error's column.
    fn q_frame(&self, out: &mut String, src: &[u8], frame: usize) {
        let line_start = src[..self.offset]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        let line_end = src[self.offset..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(src.len(), |p| self.offset + p);
        let prefix = format!("  [{frame}]  ");
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "{prefix}{}\n{}^",
            String::from_utf8_lossy(&src[line_start..line_end]),
            " ".repeat(prefix.len() + self.offset - line_start)
        );
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (line {}, column {})",
            self.kind, self.line, self.column
        )
    }
}

impl std::error::Error for ParseError {}

/// `bytes` quoted in backticks, printable ASCII as is, anything else as `\xNN`, cut at
/// [`MAX_QUOTED_BYTES`].
pub(crate) fn quote(bytes: &[u8]) -> String {
    let mut out = String::from("`");
    for &b in bytes.iter().take(MAX_QUOTED_BYTES) {
        if b.is_ascii_graphic() || b == b' ' {
            out.push(b as char);
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    if bytes.len() > MAX_QUOTED_BYTES {
        out.push_str("...");
    }
    out.push('`');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_columns() {
        let src = b"a:1\nb:+2";
        let error = ParseError::new(
            ParseErrorKind::BarePrefix {
                glyph: "+".to_owned(),
            },
            src,
            6,
        );
        assert_eq!((error.line, error.column), (2, 3));
        assert!(error.to_string().ends_with("(line 2, column 3)"), "{error}");
    }

    #[test]
    fn q_forms() {
        let src = b"select b by b from t";
        let error = ParseError::new(
            ParseErrorKind::DupNames {
                name: "b".to_owned(),
            },
            src,
            0,
        );
        assert_eq!(
            error.q_console(src),
            "'dup names for cols/groups b\n  [2]  select b by b from t\n       ^"
        );
        let src = b"2+2;+2";
        let error = ParseError::new(
            ParseErrorKind::BarePrefix {
                glyph: "+".to_owned(),
            },
            src,
            4,
        );
        assert_eq!(
            error.q_trap(src),
            "  [3]  2+2;+2\n           ^\n  [2]  (.q.parse) "
        );
    }

    #[test]
    fn quoting_escapes_and_cuts() {
        assert_eq!(quote(b"ab"), "`ab`");
        assert_eq!(quote(b"a\nb\xff"), "`a\\x0ab\\xff`");
        assert_eq!(quote(&[b'x'; 30]), format!("`{}...`", "x".repeat(24)));
    }
}
