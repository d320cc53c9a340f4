//! A lexer and parser for q source text, and the facts a policy reads from the tree.
//! It does no I/O: text in, a tree and facts out.
//!
//! ```text
//!   q text (bytes, at most MAX_INPUT_BYTES)
//!        │
//!        ▼
//!   lexer::tokenize ── every byte in a token; errors are tokens
//!        │
//!        ▼
//!   parser ──► Tree (q's own `parse` result) + errors with positions
//!        │                 │
//!        │                 ├──► Display: as the q console prints it
//!        │                 ├──► shape: literals replaced by their types
//!        ▼                 ▼
//!   parse() ─ Err ─► Facts::unparsed()      Facts::of_tree: tables, functions, globals, flags
//! ```
//!
//! The tree is the value q's `parse` returns (`shared/reference/q-parse.md`): qSQL templates in
//! their functional form (`?`/`!` with four arguments), keywords by value, symbol literals
//! enlisted, and its display matches the q console byte for byte on
//! `shared/conformance/q-parse.tsv`.
//! The facts follow q-parse.md §14 and `shared/conformance/q-facts.tsv`.
//!
//! Policies get facts only from a text that parsed without error: anything this parser cannot
//! read with certainty (a syntax error, `k)` or `s)` text, a construct it does not know) gives
//! [`Flags::UNPARSED`], which a policy treats as a deny.
//! Arbitrary bytes never panic it, and its recursion and the tree's height are bounded by
//! [`MAX_DEPTH`].

#![warn(missing_docs)]

mod display;
mod error;
mod facts;
mod http;
mod keyword;
mod lexer;
mod literal;
mod parser;
mod shape;
mod tree;

// The public surface: parsing, the tree, facts and shapes.
pub use crate::{
    // Errors, with their positions and q's own rendering.
    error::{ParseError, ParseErrorKind},
    // What a policy reads.
    facts::{CallArg, Facts, Flags},
    // The q text of an HTTP request (`GET /?expr`, a POST's body).
    http::{http_text, percent_decode},
    keyword::Keyword,
    shape::shape,
    // The tree.
    tree::{Atom, Node, NodeKind, Tree, Type},
};

/// The longest text parsed, in bytes.
///
/// A policy parses every free-text query a client sends, so the parse must cost a bounded time
/// and memory whatever the client sends: the tree has at most a few nodes per byte of text.
/// Interactive queries and the text a dashboard sends are a few hundred bytes; 1 MiB leaves room
/// for a generated query with a long literal list while keeping a parse in the low milliseconds.
/// Data sent as text beyond that (a bulk insert) belongs in a call list, whose values are not
/// parsed; longer text is a [`ParseErrorKind::TooLong`], which a policy denies.
pub const MAX_INPUT_BYTES: usize = 1 << 20;

/// How deeply expressions may nest: the height of the tree, and the nesting of brackets,
/// parentheses, braces and qSQL templates while parsing.
///
/// The parser recurses once per bracket level and the analyses (display, facts, shapes) once per
/// tree level, so without a bound a 1 MiB text of `(((...)))` or `1+1+1+...` would overflow a
/// thread's stack (the parser folds an operator chain without recursing, but the tree it builds
/// is as tall as the chain).
/// Real queries nest a dozen levels; 128 leaves room for a generated query's chain of a hundred
/// operators, while the deepest parse stays well inside the 2 MiB stacks of tokio's workers and
/// test threads even in unoptimised builds.
pub const MAX_DEPTH: usize = 128;

/// Parses `text` into the tree q's `parse` returns; the first error if there is any.
///
/// # Errors
///
/// The text is longer than [`MAX_INPUT_BYTES`], nests deeper than [`MAX_DEPTH`], is not q, or is
/// q this parser does not read (`k)` text, 4.1 dictionary literals): a [`ParseError`] with its
/// position.
/// [`parse_all`] gives every error.
pub fn parse(text: &[u8]) -> Result<Tree, ParseError> {
    let (tree, mut errors) = parse_all(text);
    if errors.is_empty() {
        Ok(tree)
    } else {
        Err(errors.swap_remove(0))
    }
}

/// Parses `text`, going on after a statement that fails: the tree (with `::` in place of each
/// broken statement) and every error, in order.
pub fn parse_all(text: &[u8]) -> (Tree, Vec<ParseError>) {
    if text.len() > MAX_INPUT_BYTES {
        let mut tree = Tree::with_source(b"");
        let error = ParseError::new(
            ParseErrorKind::TooLong {
                len: text.len(),
                max: MAX_INPUT_BYTES,
            },
            b"",
            0,
        );
        let (root, _) = parser::parse_into(&mut tree, b"", 0);
        tree.root = root;
        return (tree, vec![error]);
    }
    let mut tree = Tree::with_source(text);
    let (root, errors) = parser::parse_into(&mut tree, text, 0);
    tree.root = root;
    (tree, errors)
}
