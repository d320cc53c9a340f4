//! The lexer: q source bytes to tokens.
//!
//! It never fails, in the manner of rustc's lexer: every byte of the input lands in exactly one
//! token, and a byte that starts nothing q knows becomes an [`TokenKind::Error`] token that the
//! parser reports with its position.
//! Whitespace and comments are not tokens; each token records instead whether a blank, a comment
//! or the start of a line came right before it, because q's syntax depends on that (`x-1` against
//! `x -1`, `f/` against `f /comment`).
//!
//! q text is bytes, not UTF-8: a byte outside ASCII is an error token unless it is inside a string
//! or a comment.

use crate::keyword::{Keyword, pack};

/// What a token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// A name: `a`, `.z.pg`, `date.month`, `a_b`.
    Name,
    /// One symbol: `` `abc ``, `` ` ``, `` `:path/file ``; adjacent symbols form a vector.
    Symbol,
    /// A string or char literal with its quotes: `"abc"`, `"a"`, `""`.
    String,
    /// One number or temporal literal, not yet checked: `42`, `-1.5e3`, `0x2a`, `2014.02m`.
    Number,
    /// A primitive operator: `+ - * % ! & | < > = ~ , ^ # _ $ ? @ .`, or `<= >= <>`, or one of
    /// these followed by a colon (`+:`, the unary form or an assignment through the operator).
    Glyph,
    /// `:` alone.
    Colon,
    /// `::`.
    DoubleColon,
    /// `0:`, `1:`, `2:`, or with a second colon (`0::`, the unary forms).
    IoVerb,
    /// An iterator: `'`, `':`, `/`, `\`, `/:`, `\:`.
    Iterator,
    /// `(`.
    LParen,
    /// `)`.
    RParen,
    /// `[`.
    LBracket,
    /// `]`.
    RBracket,
    /// `{`.
    LBrace,
    /// `}`.
    RBrace,
    /// `;`.
    Semicolon,
    /// A line break between two top-level statements.
    Newline,
    /// A system command: a line starting with `\`, up to the end of the line.
    System,
    /// A language prefix at the start of a line (`k)`, `s)`): the rest of the line is not q.
    Prefix,
    /// A byte sequence that is not a token.
    Error(LexError),
}

/// Why bytes did not make a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LexError {
    /// A string without its closing quote.
    UnterminatedString,
    /// A byte that starts no token (outside ASCII, a control character, a stray `\`).
    UnexpectedByte,
}

/// The words the parser looks for among names, classified once here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Word {
    /// Any other name, or not a name.
    Other,
    /// `by`.
    By,
    /// `from`.
    From,
    /// `where`.
    Where,
    /// `distinct`.
    Distinct,
    /// `select`.
    Select,
    /// `exec`.
    Exec,
    /// `update`.
    Update,
    /// `delete`.
    Delete,
}

impl Word {
    /// The qSQL word and the keyword a name spells, if any: one packing of its bytes serves
    /// both.
    ///
    /// The name is `src[start..end]`.
    fn classify(src: &[u8], start: usize, end: usize) -> (Word, Option<Keyword>) {
        let name = &src[start..end];
        // Every word and keyword starts with a lowercase letter and has at most 16 bytes.
        if name.len() > 16 || !name.first().is_some_and(u8::is_ascii_lowercase) {
            return (Word::Other, None);
        }
        // The words have at most 8 bytes: the low half of the packed name.
        const fn low(word: &[u8]) -> u64 {
            pack(word) as u64
        }
        const BY: u64 = low(b"by");
        const FROM: u64 = low(b"from");
        const WHERE: u64 = low(b"where");
        const DISTINCT: u64 = low(b"distinct");
        const SELECT: u64 = low(b"select");
        const EXEC: u64 = low(b"exec");
        const UPDATE: u64 = low(b"update");
        const DELETE: u64 = low(b"delete");
        let key = match src.get(start..start + 16) {
            // Sixteen bytes of text from the name on, read at once, its own bytes kept: what
            // `pack` gives, without a loop over the bytes.
            Some(window) => {
                let mut bytes = [0u8; 16];
                bytes.copy_from_slice(window);
                let mask = u128::MAX >> (8 * (16 - name.len()));
                u128::from_le_bytes(bytes) & mask
            }
            None => pack(name),
        };
        let low = if name.len() <= 8 { key as u64 } else { 0 };
        let word = match low {
            BY => Word::By,
            FROM => Word::From,
            WHERE => Word::Where,
            DISTINCT => Word::Distinct,
            SELECT => Word::Select,
            EXEC => Word::Exec,
            UPDATE => Word::Update,
            DELETE => Word::Delete,
            _ => Word::Other,
        };
        (word, Keyword::lookup_packed(key))
    }
}

/// One token: its kind, its bytes and what came before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    /// What the token is.
    pub(crate) kind: TokenKind,
    /// For a name, whether it is a word of qSQL.
    pub(crate) word: Word,
    /// For a name, the keyword it spells.
    pub(crate) keyword: Option<Keyword>,
    /// Byte offset of its first byte.
    pub(crate) start: u32,
    /// Byte offset just past its last byte.
    pub(crate) end: u32,
    /// Whether a blank, a comment or a line break comes right before it (or it starts the text).
    pub(crate) spaced: bool,
}

/// Splits `src` into tokens. The last token is never `Newline`.
///
/// `src` is at most [`crate::MAX_INPUT_BYTES`] long, so every offset fits a `u32`.
#[cfg(test)]
pub(crate) fn tokenize(src: &[u8]) -> Vec<Token> {
    let mut tokens = Vec::new();
    tokenize_into(src, &mut tokens);
    tokens
}

/// [`tokenize`] into `tokens`, which is cleared first (the parser reuses one buffer).
pub(crate) fn tokenize_into(src: &[u8], tokens: &mut Vec<Token>) {
    tokens.clear();
    tokens.reserve(src.len() / 3 + 4);
    let mut lexer = Lexer {
        src,
        pos: 0,
        tokens: std::mem::take(tokens),
        depth: 0,
        spaced: true,
        line_start: true,
    };
    lexer.run();
    while lexer
        .tokens
        .last()
        .is_some_and(|t| t.kind == TokenKind::Newline)
    {
        lexer.tokens.pop();
    }
    *tokens = lexer.tokens;
}

struct Lexer<'s> {
    src: &'s [u8],
    pos: usize,
    tokens: Vec<Token>,
    /// Open brackets of any kind: a line break is a statement separator only at depth 0.
    depth: usize,
    /// Whether whitespace, a comment or a line start precedes the next token.
    spaced: bool,
    /// Whether `pos` is at the start of a line.
    line_start: bool,
}

/// Which bytes may continue a name, by byte: one load instead of four comparisons, in the
/// lexer's busiest loop.
const NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        table[b] = byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'.';
        b += 1;
    }
    table
};

/// Bytes that may continue a name.
fn is_name_byte(b: u8) -> bool {
    NAME_BYTES[usize::from(b)]
}

/// Bytes that may appear in a symbol after its backtick (`:` and `/` for file handles).
fn is_symbol_byte(b: u8) -> bool {
    is_name_byte(b) || b == b':' || b == b'/'
}

/// The single-byte operators.
fn is_glyph(b: u8) -> bool {
    matches!(
        b,
        b'+' | b'-'
            | b'*'
            | b'%'
            | b'!'
            | b'&'
            | b'|'
            | b'<'
            | b'>'
            | b'='
            | b'~'
            | b','
            | b'^'
            | b'#'
            | b'_'
            | b'$'
            | b'?'
            | b'@'
            | b'.'
    )
}

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | 0x0c)
}

impl Lexer<'_> {
    fn peek(&self, ahead: usize) -> Option<u8> {
        self.src.get(self.pos + ahead).copied()
    }

    fn push(&mut self, kind: TokenKind, start: usize) {
        let (word, keyword) = if kind == TokenKind::Name {
            Word::classify(self.src, start, self.pos)
        } else {
            (Word::Other, None)
        };
        // Invariant: the input is at most MAX_INPUT_BYTES (1 MiB), far below u32::MAX.
        let (start, end) = (start as u32, self.pos as u32);
        self.tokens.push(Token {
            kind,
            word,
            keyword,
            start,
            end,
            spaced: self.spaced,
        });
        self.spaced = false;
    }

    /// Whether the line starting at `pos` holds `byte` alone (trailing blanks allowed).
    fn line_is_only(&self, byte: u8) -> bool {
        if self.peek(0) != Some(byte) {
            return false;
        }
        let rest = &self.src[self.pos + 1..];
        let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
        line.iter().all(|&b| is_blank(b))
    }

    fn skip_line(&mut self) {
        while let Some(b) = self.peek(0) {
            if b == b'\n' {
                break;
            }
            self.pos += 1;
        }
    }

    /// Whether the previous token ends a noun, so that `-` right after it is Subtract.
    fn after_noun(&self) -> bool {
        !self.spaced
            && self.tokens.last().is_some_and(|t| {
                matches!(
                    t.kind,
                    TokenKind::Name
                        | TokenKind::Symbol
                        | TokenKind::String
                        | TokenKind::Number
                        | TokenKind::RParen
                        | TokenKind::RBracket
                        | TokenKind::RBrace
                )
            })
    }

    fn run(&mut self) {
        while let Some(b) = self.peek(0) {
            let start = self.pos;
            // The start of a line: the start of the text, or right after a line break, which only
            // the line break's own step consumes (strings, comments and commands stop before one).
            let line_start = std::mem::replace(&mut self.line_start, false);
            debug_assert_eq!(line_start, start == 0 || self.src[start - 1] == b'\n');
            if line_start && self.depth == 0 {
                // A block comment: a line holding only `/`, up to a line holding only `\`.
                if self.line_is_only(b'/') {
                    self.block_comment();
                    continue;
                }
                if b == b'\\' {
                    self.skip_line();
                    let kind = if self.pos - start == 1 {
                        // A lone `\` ends a script or toggles the k language: not a query.
                        TokenKind::Error(LexError::UnexpectedByte)
                    } else {
                        TokenKind::System
                    };
                    self.push(kind, start);
                    continue;
                }
                if b.is_ascii_alphabetic() && self.peek(1) == Some(b')') {
                    self.skip_line();
                    self.push(TokenKind::Prefix, start);
                    continue;
                }
            }
            match b {
                b'\n' => {
                    self.pos += 1;
                    self.line_start = true;
                    // A line break separates statements at the top level, unless the next line
                    // is indented (a continuation) or empty.
                    let next = self.peek(0);
                    let separates = self.depth == 0
                        && next.is_some_and(|n| !is_blank(n) && n != b'\n')
                        && !self.tokens.is_empty();
                    if separates {
                        self.spaced = true;
                        self.push(TokenKind::Newline, start);
                    }
                    self.spaced = true;
                }
                b if is_blank(b) => {
                    self.pos += 1;
                    while self.peek(0).is_some_and(is_blank) {
                        self.pos += 1;
                    }
                    self.spaced = true;
                }
                b'/' if self.spaced => {
                    self.skip_line();
                    self.spaced = true;
                }
                b'"' => self.string(),
                b'`' => {
                    self.pos += 1;
                    while self.peek(0).is_some_and(is_symbol_byte) {
                        self.pos += 1;
                    }
                    self.push(TokenKind::Symbol, start);
                }
                b'(' | b'[' | b'{' => {
                    self.pos += 1;
                    self.depth += 1;
                    let kind = match b {
                        b'(' => TokenKind::LParen,
                        b'[' => TokenKind::LBracket,
                        _ => TokenKind::LBrace,
                    };
                    self.push(kind, start);
                }
                b')' | b']' | b'}' => {
                    self.pos += 1;
                    self.depth = self.depth.saturating_sub(1);
                    let kind = match b {
                        b')' => TokenKind::RParen,
                        b']' => TokenKind::RBracket,
                        _ => TokenKind::RBrace,
                    };
                    self.push(kind, start);
                }
                b';' => {
                    self.pos += 1;
                    self.push(TokenKind::Semicolon, start);
                }
                b'\'' => {
                    self.pos += 1;
                    if self.peek(0) == Some(b':') {
                        self.pos += 1;
                    }
                    self.push(TokenKind::Iterator, start);
                }
                b'/' | b'\\' => {
                    // Not after a blank (a `/` there is a comment, handled above; a `\` there
                    // is not q).
                    if b == b'\\' && self.spaced {
                        self.pos += 1;
                        self.push(TokenKind::Error(LexError::UnexpectedByte), start);
                        continue;
                    }
                    self.pos += 1;
                    if self.peek(0) == Some(b':') {
                        self.pos += 1;
                    }
                    self.push(TokenKind::Iterator, start);
                }
                b':' => {
                    self.pos += 1;
                    if self.peek(0) == Some(b':') {
                        self.pos += 1;
                        self.push(TokenKind::DoubleColon, start);
                    } else {
                        self.push(TokenKind::Colon, start);
                    }
                }
                b'0'..=b'9' => self.number_or_io(start),
                b'.' if self.peek(1).is_some_and(|n| n.is_ascii_digit()) => self.number(start),
                b'-' if !self.after_noun()
                    && (self.peek(1).is_some_and(|n| n.is_ascii_digit())
                        || (self.peek(1) == Some(b'.')
                            && self.peek(2).is_some_and(|n| n.is_ascii_digit()))) =>
                {
                    self.pos += 1;
                    self.number(start);
                }
                b if b.is_ascii_alphabetic()
                    || (b == b'.' && self.peek(1).is_some_and(|n| n.is_ascii_alphabetic())) =>
                {
                    let src = self.src;
                    let mut end = self.pos + 1;
                    while let Some(&n) = src.get(end) {
                        // `..` never continues a name.
                        if !is_name_byte(n) || (n == b'.' && src.get(end + 1) == Some(&b'.')) {
                            break;
                        }
                        end += 1;
                    }
                    self.pos = end;
                    self.push(TokenKind::Name, start);
                }
                b if is_glyph(b) => {
                    self.pos += 1;
                    let next = self.peek(0);
                    if (b == b'<' && matches!(next, Some(b'=' | b'>')))
                        || (b == b'>' && next == Some(b'='))
                    {
                        self.pos += 1;
                    }
                    // `+:` is one token, unless it starts `::` (`+::` is `+` then `::`).
                    if self.peek(0) == Some(b':') && self.peek(1) != Some(b':') {
                        self.pos += 1;
                    }
                    self.push(TokenKind::Glyph, start);
                }
                _ => {
                    self.pos += 1;
                    self.push(TokenKind::Error(LexError::UnexpectedByte), start);
                }
            }
        }
    }

    fn block_comment(&mut self) {
        loop {
            self.skip_line();
            if self.peek(0).is_none() {
                break;
            }
            self.pos += 1;
            if self.line_is_only(b'\\') {
                self.skip_line();
                break;
            }
        }
        self.spaced = true;
    }

    fn string(&mut self) {
        let start = self.pos;
        self.pos += 1;
        loop {
            match self.peek(0) {
                None => {
                    self.push(TokenKind::Error(LexError::UnterminatedString), start);
                    return;
                }
                Some(b'\\') => self.pos += 2.min(self.src.len() - self.pos),
                Some(b'"') => {
                    self.pos += 1;
                    self.push(TokenKind::String, start);
                    return;
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    /// A number, or `0:`/`1:`/`2:` (a digit against a colon that no digit follows).
    fn number_or_io(&mut self, start: usize) {
        let digit = self.src[self.pos];
        let after = self.peek(1);
        if matches!(digit, b'0'..=b'2')
            && after == Some(b':')
            && !self.peek(2).is_some_and(|n| n.is_ascii_digit())
        {
            self.pos += 2;
            if self.peek(0) == Some(b':') {
                self.pos += 1;
            }
            self.push(TokenKind::IoVerb, start);
            return;
        }
        self.number(start);
    }

    /// The rest of a number token: letters, digits and dots, a colon followed by a digit (clock
    /// times), and a sign right after an exponent's `e`.
    fn number(&mut self, start: usize) {
        while let Some(b) = self.peek(0) {
            let exponent_sign = matches!(b, b'-' | b'+')
                && self.src[self.pos - 1] == b'e'
                && !self.src[start..self.pos].starts_with(b"0x")
                && self.peek(1).is_some_and(|n| n.is_ascii_digit());
            let clock = b == b':' && self.peek(1).is_some_and(|n| n.is_ascii_digit());
            if b.is_ascii_alphanumeric() || b == b'.' || clock || exponent_sign {
                self.pos += 1;
            } else {
                break;
            }
        }
        self.push(TokenKind::Number, start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens as `kind text` pairs, `_` marking a token with a blank before it.
    #[track_caller]
    fn check(src: &str, expect: &str) {
        let tokens = tokenize(src.as_bytes());
        let got: Vec<String> = tokens
            .iter()
            .map(|t| {
                let text =
                    String::from_utf8_lossy(&src.as_bytes()[t.start as usize..t.end as usize]);
                let kind = match t.kind {
                    TokenKind::Name => "name",
                    TokenKind::Symbol => "sym",
                    TokenKind::String => "str",
                    TokenKind::Number => "num",
                    TokenKind::Glyph => "glyph",
                    TokenKind::Colon => "colon",
                    TokenKind::DoubleColon => "dcolon",
                    TokenKind::IoVerb => "io",
                    TokenKind::Iterator => "iter",
                    TokenKind::LParen
                    | TokenKind::RParen
                    | TokenKind::LBracket
                    | TokenKind::RBracket
                    | TokenKind::LBrace
                    | TokenKind::RBrace
                    | TokenKind::Semicolon => "punct",
                    TokenKind::Newline => "nl",
                    TokenKind::System => "system",
                    TokenKind::Prefix => "prefix",
                    TokenKind::Error(_) => "error",
                };
                let blank = if t.spaced { "_" } else { "" };
                format!("{blank}{kind} {}", text.replace('\n', "\\n"))
            })
            .collect();
        assert_eq!(got.join(" | "), expect, "{src:?}");
    }

    #[test]
    fn minus_is_a_sign_only_where_q_says() {
        check("x-1", "_name x | glyph - | num 1");
        check("x -1", "_name x | _num -1");
        check("3.5 -1", "_num 3.5 | _num -1");
        check(
            "x[1]-1",
            "_name x | punct [ | num 1 | punct ] | glyph - | num 1",
        );
        check(
            "(a+b)- 1",
            "_punct ( | name a | glyph + | name b | punct ) | glyph - | _num 1",
        );
        check("x*-1", "_name x | glyph * | num -1");
        check("-.5", "_num -.5");
    }

    #[test]
    fn comments_need_a_blank_before_the_slash() {
        check("+/x", "_glyph + | iter / | name x");
        check("x /comment", "_name x");
        check("/ a comment\nx", "_name x");
        check("/\nblock\n\\\nx", "_name x");
        check("a:1 / set a", "_name a | colon : | num 1");
    }

    #[test]
    fn numbers_names_and_symbols() {
        check("2000.01.01D12:00:00.000", "_num 2000.01.01D12:00:00.000");
        check("1e-3+x", "_num 1e-3 | glyph + | name x");
        check("0x2a", "_num 0x2a");
        check(".z.pg", "_name .z.pg");
        check("date.month", "_name date.month");
        check("a_b", "_name a_b");
        check("`a`b`c", "_sym `a | sym `b | sym `c");
        check("`:host:5001", "_sym `:host:5001");
        check("` `a", "_sym ` | _sym `a");
    }

    #[test]
    fn colons() {
        check("a:1", "_name a | colon : | num 1");
        check("a::1", "_name a | dcolon :: | num 1");
        check("a+:1", "_name a | glyph +: | num 1");
        check("0: x", "_io 0: | _name x");
        check("0::x", "_io 0:: | name x");
        check("12:30", "_num 12:30");
        check("f':x", "_name f | iter ': | name x");
        check("x,/:y", "_name x | glyph , | iter /: | name y");
    }

    #[test]
    fn lines() {
        check(
            "a:1\nb:2",
            "_name a | colon : | num 1 | _nl \\n | _name b | colon : | num 2",
        );
        check(
            "a:1\n b:2",
            "_name a | colon : | num 1 | _name b | colon : | num 2",
        );
        check(
            "f[1;\n2]",
            "_name f | punct [ | num 1 | punct ; | _num 2 | punct ]",
        );
        check("\\l sp.q", "_system \\l sp.q");
        check("a\n\\t 1000", "_name a | _nl \\n | _system \\t 1000");
        check("k)!10", "_prefix k)!10");
        check("x\n", "_name x");
    }

    #[test]
    fn names_are_classified_wherever_they_stand() {
        // A name with sixteen bytes of text after its start is read in one go, one near the end
        // of the text byte by byte: both must find the same word and keyword.
        for (name, word, keyword) in [
            ("select", Word::Select, None),
            ("distinct", Word::Distinct, Some("distinct")),
            ("by", Word::By, None),
            ("xbar", Word::Other, Some("xbar")),
            ("in", Word::Other, Some("in")),
            ("reciprocal", Word::Other, Some("reciprocal")),
            ("count", Word::Other, Some("count")),
            ("counts", Word::Other, None),
            ("coun", Word::Other, None),
            ("trade", Word::Other, None),
            ("abcdefghijklmnop", Word::Other, None),
            ("abcdefghijklmnopq", Word::Other, None),
        ] {
            for text in [format!("{name} 0123456789abcdef"), format!("x {name}")] {
                let token = tokenize(text.as_bytes())
                    .into_iter()
                    .find(|t| &text.as_bytes()[t.start as usize..t.end as usize] == name.as_bytes())
                    .expect("the name is a token");
                assert_eq!(token.word, word, "{text:?}");
                assert_eq!(token.keyword.map(Keyword::name), keyword, "{text:?}");
            }
        }
    }

    #[test]
    fn strings_and_errors() {
        check("\"a\\\"b\"", "_str \"a\\\"b\"");
        check("\"abc", "_error \"abc");
        check("x \\y", "_name x | _error \\ | name y");
        check("é", "_error \u{fffd} | error \u{fffd}");
    }
}
