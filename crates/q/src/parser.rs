//! The parser: tokens to the tree q's `parse` returns, plus the errors it met.
//!
//! q has no precedence: an expression is a run of terms evaluated right to left, where a verb
//! between two nouns is applied infix (`a+b` is `(+;a;b)`), a noun before a noun is applied to it
//! (`f x` is `(f;x)`), and a verb with nothing on its left is applied prefix (q-parse.md §4).
//! [`Parser::expr`] reads the terms of one expression in a loop and folds them from the right,
//! so a long chain (`a,b,c,...`) costs no recursion; recursion happens only where brackets,
//! parentheses, braces or qSQL nest, and both that and the tree's height are bounded by
//! [`MAX_DEPTH`].
//!
//! Errors are recovered from at the top level: a statement that fails is recorded with its
//! position and replaced by `::`, and parsing goes on with the next statement, so one call
//! reports every broken statement.

use crate::{
    MAX_DEPTH,
    error::{ParseError, ParseErrorKind, quote},
    keyword::{Keyword, kw},
    lexer::{LexError, Token, TokenKind, Word, tokenize_into},
    literal::{self, Lit},
    tree::{Atom, Data, NodeId, Range, Slot, Span, Tree, Type},
};

type PResult<T> = Result<T, ParseError>;

/// Words that end a qSQL phrase, by context.
const STOP_BY: u8 = 1;
const STOP_FROM: u8 = 2;
const STOP_WHERE: u8 = 4;

/// Where an expression is being read.
#[derive(Clone, Copy, Default)]
struct Ctx {
    /// A qSQL phrase: a top-level `,` separates subphrases.
    stop_comma: bool,
    /// qSQL words that end the expression.
    stop: u8,
    /// `select[n;<col]`: an operator applied prefix is its unary form.
    bare_unary: bool,
}

/// One term of an expression.
#[derive(Clone, Copy)]
struct Term {
    node: NodeId,
    /// Whether it is applied infix to a noun on its left (an operator, a derived function, an
    /// infix keyword).
    verb: bool,
    /// A bare operator glyph, which q refuses to apply prefix.
    bare_glyph: bool,
    /// An operator in parentheses (`(+)`), which applied prefix becomes its unary form.
    parened_glyph: bool,
    offset: u32,
}

/// One column of a qSQL phrase, on the parser's column stack.
#[derive(Clone, Copy)]
struct Column {
    /// Its name: given (`a:expr`), or made up by [`Parser::name_columns`].
    name: Span,
    expr: NodeId,
    /// Whether q makes the name up (`select f x`), rather than the text giving it.
    made_up: bool,
}

/// The operator glyphs without a colon: the ones whose unary form is `glyph:`.
const GLYPHS: [&str; 19] = [
    "+", "-", "*", "%", "!", "&", "|", "<", ">", "=", "~", ",", "^", "#", "_", "$", "?", "@", ".",
];

/// Every primitive's text as a `'static` string, so that nodes hold no borrowed text.
fn prim(text: &[u8]) -> Option<&'static str> {
    Some(match text {
        b"+" => "+",
        b"-" => "-",
        b"*" => "*",
        b"%" => "%",
        b"!" => "!",
        b"&" => "&",
        b"|" => "|",
        b"<" => "<",
        b">" => ">",
        b"=" => "=",
        b"~" => "~",
        b"," => ",",
        b"^" => "^",
        b"#" => "#",
        b"_" => "_",
        b"$" => "$",
        b"?" => "?",
        b"@" => "@",
        b"." => ".",
        b"+:" => "+:",
        b"-:" => "-:",
        b"*:" => "*:",
        b"%:" => "%:",
        b"!:" => "!:",
        b"&:" => "&:",
        b"|:" => "|:",
        b"<:" => "<:",
        b">:" => ">:",
        b"=:" => "=:",
        b"~:" => "~:",
        b",:" => ",:",
        b"^:" => "^:",
        b"#:" => "#:",
        b"_:" => "_:",
        b"$:" => "$:",
        b"?:" => "?:",
        b"@:" => "@:",
        b".:" => ".:",
        b"<=" => "<=",
        b">=" => ">=",
        b"<>" => "<>",
        b":" => ":",
        b"::" => "::",
        b"0:" => "0:",
        b"1:" => "1:",
        b"2:" => "2:",
        b"0::" => "0::",
        b"1::" => "1::",
        b"2::" => "2::",
        b"'" => "'",
        b"':" => "':",
        b"/" => "/",
        b"\\" => "\\",
        b"/:" => "/:",
        b"\\:" => "\\:",
        _ => return None,
    })
}

/// The unary form of an operator glyph: `+` → `+:`.
fn unary_form(glyph: &str) -> &'static str {
    let mut text = glyph.as_bytes().to_vec();
    text.push(b':');
    prim(&text).unwrap_or("::")
}

/// Parses `src` into `tree`, whose text holds a copy of `src` at `base`; returns the root and
/// the errors.
pub(crate) fn parse_into(tree: &mut Tree, src: &[u8], base: u32) -> (NodeId, Vec<ParseError>) {
    let mut buffers = BUFFERS.with(|cell| cell.take());
    tokenize_into(src, &mut buffers.tokens);
    let mut parser = Parser {
        src,
        base,
        toks: std::mem::take(&mut buffers.tokens),
        pos: 0,
        tree,
        scratch: std::mem::take(&mut buffers.scratch),
        terms: std::mem::take(&mut buffers.terms),
        ops: std::mem::take(&mut buffers.ops),
        columns: std::mem::take(&mut buffers.columns),
        nesting: 0,
        errors: Vec::new(),
    };
    let root = parser.top();
    let errors = std::mem::take(&mut parser.errors);
    buffers.keep(parser);
    BUFFERS.with(|cell| cell.replace(buffers));
    (root, errors)
}

/// The most tokens a thread keeps buffers for between parses.
///
/// A parse needs a token buffer and four small stacks; keeping them saves five allocations a
/// query, which is a fifth of a short query's parse. Buffers that grew past this (a long text)
/// are freed instead, so an idle thread holds at most a few hundred KiB for the parser.
const MAX_KEPT_TOKENS: usize = 16 * 1024;

/// Buffers a thread reuses from one parse to the next.
#[derive(Default)]
struct Buffers {
    tokens: Vec<Token>,
    scratch: Vec<NodeId>,
    terms: Vec<Term>,
    ops: Vec<(Term, Option<Term>)>,
    columns: Vec<Column>,
}

impl Buffers {
    /// Takes the parser's buffers back, emptied, unless they grew too large to keep.
    fn keep(&mut self, parser: Parser<'_, '_>) {
        let Parser {
            mut toks,
            mut scratch,
            mut terms,
            mut ops,
            mut columns,
            ..
        } = parser;
        if toks.capacity() > MAX_KEPT_TOKENS
            || scratch.capacity() > MAX_KEPT_TOKENS
            || columns.capacity() > MAX_KEPT_TOKENS
        {
            return;
        }
        toks.clear();
        scratch.clear();
        terms.clear();
        ops.clear();
        columns.clear();
        *self = Buffers {
            tokens: toks,
            scratch,
            terms,
            ops,
            columns,
        };
    }
}

thread_local! {
    static BUFFERS: std::cell::RefCell<Buffers> = std::cell::RefCell::new(Buffers::default());
}

struct Parser<'s, 't> {
    src: &'s [u8],
    /// Where `src` starts in the tree's text.
    base: u32,
    toks: Vec<Token>,
    pos: usize,
    tree: &'t mut Tree,
    /// Children being collected for a list, as a stack shared by every level.
    scratch: Vec<NodeId>,
    /// Terms being collected for an expression, as a stack shared by every level.
    terms: Vec<Term>,
    /// Applications pending while an expression folds (see [`Parser::fold`]).
    ops: Vec<(Term, Option<Term>)>,
    /// The columns of the qSQL phrases being read, as a stack shared by every level.
    columns: Vec<Column>,
    /// How deeply brackets, parentheses, braces and qSQL templates nest right now.
    nesting: usize,
    errors: Vec<ParseError>,
}

impl<'s> Parser<'s, '_> {
    // ----- Tokens.

    fn peek(&self) -> Option<Token> {
        self.toks.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<Token> {
        self.toks.get(self.pos + ahead).copied()
    }

    fn peek_kind(&self) -> Option<TokenKind> {
        self.peek().map(|t| t.kind)
    }

    fn bump(&mut self) -> Option<Token> {
        let token = self.peek();
        self.pos += 1;
        token
    }

    fn text(&self, token: Token) -> &'s [u8] {
        let src: &'s [u8] = self.src;
        &src[token.start as usize..token.end as usize]
    }

    /// Whether the next token is the qSQL word `word`.
    fn next_is(&self, word: Word) -> bool {
        self.peek().is_some_and(|t| t.word == word)
    }

    fn error(&self, kind: ParseErrorKind, offset: u32) -> ParseError {
        ParseError::new(kind, self.src, offset as usize)
    }

    /// The error for a token that cannot stand where it is.
    fn unexpected(&self, token: Token) -> ParseError {
        let kind = match token.kind {
            TokenKind::Error(LexError::UnterminatedString) => ParseErrorKind::UnterminatedString,
            TokenKind::Error(LexError::UnexpectedByte) => ParseErrorKind::UnexpectedByte {
                byte: quote(self.text(token)),
            },
            TokenKind::Prefix => ParseErrorKind::Foreign {
                prefix: char::from(self.src[token.start as usize]),
            },
            TokenKind::System => ParseErrorKind::MisplacedSystem,
            _ => ParseErrorKind::Unexpected {
                token: quote(self.text(token)),
            },
        };
        self.error(kind, token.start)
    }

    fn end_offset(&self) -> u32 {
        // Invariant: the source is at most MAX_INPUT_BYTES, far below u32::MAX.
        self.src.len() as u32
    }

    // ----- Nodes.

    fn span(&self, start: u32, end: u32) -> Span {
        Span {
            start: self.base + start,
            len: end - start,
        }
    }

    fn leaf(&mut self, data: Data, offset: u32) -> NodeId {
        self.push_slot(data, 1, offset)
    }

    fn push_slot(&mut self, data: Data, height: u16, offset: u32) -> NodeId {
        // Invariant: a tree has fewer nodes than its text has bytes times a small factor, far
        // below u32::MAX.
        let id = NodeId(self.tree.slots.len() as u32);
        self.tree.slots.push(Slot {
            data,
            height,
            offset,
        });
        id
    }

    fn height(&self, id: NodeId) -> u16 {
        self.tree.slots[id.0 as usize].height
    }

    /// The height of a node over `kids`, or an error past [`MAX_DEPTH`].
    fn height_over(&self, kids: &[NodeId], offset: u32) -> PResult<u16> {
        let max = kids.iter().map(|&k| self.height(k)).max().unwrap_or(0);
        if usize::from(max) >= MAX_DEPTH {
            return Err(self.error(ParseErrorKind::TooDeep { max: MAX_DEPTH }, offset));
        }
        Ok(max + 1)
    }

    /// A list of the scratch items from `mark` on (which are removed), collapsed to a vector
    /// when they are atoms of one type, as q's lists are.
    fn list_from(&mut self, mark: usize, offset: u32) -> PResult<NodeId> {
        let list = build_list(self.tree, &self.scratch[mark..], offset);
        self.scratch.truncate(mark);
        list.ok_or_else(|| self.error(ParseErrorKind::TooDeep { max: MAX_DEPTH }, offset))
    }

    /// A list of the given items.
    fn list(&mut self, items: &[NodeId], offset: u32) -> PResult<NodeId> {
        build_list(self.tree, items, offset)
            .ok_or_else(|| self.error(ParseErrorKind::TooDeep { max: MAX_DEPTH }, offset))
    }

    /// `x` quoted: the one-item list `,x`.
    fn quote(&mut self, item: NodeId, offset: u32) -> PResult<NodeId> {
        self.list(&[item], offset)
    }

    fn dict(&mut self, keys: NodeId, values: NodeId, offset: u32) -> PResult<NodeId> {
        let height = self.height_over(&[keys, values], offset)?;
        Ok(self.push_slot(Data::Dict(keys, values), height, offset))
    }

    fn keyword(&mut self, keyword: Keyword, offset: u32) -> NodeId {
        self.leaf(Data::Keyword(keyword), offset)
    }

    fn name_node(&mut self, span: Span, offset: u32) -> NodeId {
        self.leaf(Data::Name(span), offset)
    }

    // ----- Nesting.

    fn enter(&mut self, offset: u32) -> PResult<()> {
        self.nesting += 1;
        if self.nesting > MAX_DEPTH {
            return Err(self.error(ParseErrorKind::TooDeep { max: MAX_DEPTH }, offset));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting -= 1;
    }

    // ----- Statements.

    /// The whole text: statements separated by `;` or line breaks.
    fn top(&mut self) -> NodeId {
        let mark = self.scratch.len();
        let mut separators = 0;
        loop {
            let statement_mark = self.scratch.len();
            let statement = match self.peek() {
                Some(t) if t.kind == TokenKind::System => {
                    self.pos += 1;
                    let span = self.span(t.start + 1, t.end);
                    Ok(Some(self.leaf(Data::System(span), t.start)))
                }
                _ => self.expr(Ctx::default()),
            };
            match statement {
                Ok(Some(node)) => self.scratch.push(node),
                Ok(None) => {
                    // An empty statement counts before `;` (`;select...`) and at the end after
                    // one (`a;`), not next to a line break (a blank line, `a;` ending a line).
                    let next_is_newline = self.peek_kind() == Some(TokenKind::Newline);
                    let after_newline = self
                        .pos
                        .checked_sub(1)
                        .and_then(|p| self.toks.get(p))
                        .is_some_and(|t| t.kind == TokenKind::Newline);
                    if !next_is_newline && !after_newline {
                        let at = self.peek().map_or(self.end_offset(), |t| t.start);
                        let null = self.leaf(Data::Null, at);
                        self.scratch.push(null);
                    }
                }
                Err(error) => {
                    self.errors.push(error);
                    self.nesting = 0;
                    self.terms.clear();
                    self.ops.clear();
                    self.columns.clear();
                    self.scratch.truncate(statement_mark);
                    self.recover();
                    let null = self.leaf(Data::Null, 0);
                    self.scratch.push(null);
                }
            }
            match self.peek() {
                None => break,
                Some(t) if matches!(t.kind, TokenKind::Semicolon | TokenKind::Newline) => {
                    self.pos += 1;
                    separators += 1;
                }
                Some(t) => {
                    let error = self.unexpected(t);
                    self.errors.push(error);
                    self.pos += 1;
                    self.recover();
                }
            }
        }
        let count = self.scratch.len() - mark;
        if separators == 0 && count <= 1 {
            let root = match self.scratch.pop() {
                Some(root) => root,
                None => self.leaf(Data::Null, 0),
            };
            self.scratch.truncate(mark);
            return root;
        }
        let head = self.leaf(Data::Char(b';'), 0);
        self.scratch.insert(mark, head);
        match self.list_from(mark, 0) {
            Ok(root) => root,
            Err(error) => {
                self.errors.push(error);
                self.scratch.truncate(mark);
                self.leaf(Data::Null, 0)
            }
        }
    }

    /// Skips to the next top-level `;` or line break.
    fn recover(&mut self) {
        let mut depth = 0usize;
        while let Some(t) = self.peek() {
            match t.kind {
                TokenKind::LParen | TokenKind::LBracket | TokenKind::LBrace => depth += 1,
                TokenKind::RParen | TokenKind::RBracket | TokenKind::RBrace => {
                    depth = depth.saturating_sub(1);
                }
                TokenKind::Semicolon if depth == 0 => return,
                TokenKind::Newline => return,
                _ => {}
            }
            self.pos += 1;
        }
    }

    // ----- Expressions.

    fn at_end(&self, ctx: Ctx) -> bool {
        let Some(t) = self.peek() else {
            return true;
        };
        match t.kind {
            TokenKind::Semicolon
            | TokenKind::RParen
            | TokenKind::RBracket
            | TokenKind::RBrace
            | TokenKind::Newline => true,
            TokenKind::Glyph => ctx.stop_comma && self.text(t) == b",",
            TokenKind::Name if ctx.stop != 0 => match t.word {
                Word::By => ctx.stop & STOP_BY != 0,
                Word::From => ctx.stop & STOP_FROM != 0,
                Word::Where => ctx.stop & STOP_WHERE != 0,
                _ => false,
            },
            _ => false,
        }
    }

    /// One expression, `None` when it is empty.
    fn expr(&mut self, ctx: Ctx) -> PResult<Option<NodeId>> {
        let mark = self.terms.len();
        let result = self.expr_terms(ctx, mark);
        self.terms.truncate(mark);
        result
    }

    fn expr_terms(&mut self, ctx: Ctx, mark: usize) -> PResult<Option<NodeId>> {
        while !self.at_end(ctx) {
            let after_noun = self.terms.len() > mark && self.terms.last().is_some_and(|t| !t.verb);
            let term = self.term(ctx, after_noun)?;
            self.terms.push(term);
        }
        self.fold(mark, ctx)
    }

    /// Folds the terms from `mark` on into one tree, from the right.
    fn fold(&mut self, mark: usize, ctx: Ctx) -> PResult<Option<NodeId>> {
        let n = self.terms.len();
        if n == mark {
            return Ok(None);
        }
        // The pending applications, left to right: `(verb, Some(left))` applies a verb infix,
        // `(f, None)` applies `f` to what follows. A stack shared by every level.
        let ops_mark = self.ops.len();
        let mut i = mark;
        let tail = loop {
            let t = self.terms[i];
            if i + 1 == n {
                break t.node;
            }
            if t.verb {
                let t = self.prefix(t, ctx)?;
                self.ops.push((t, None));
                i += 1;
                continue;
            }
            let u = self.terms[i + 1];
            if u.verb {
                if i + 2 == n {
                    // A left-operand projection: `3 +` is `(+;3)`.
                    break self.list(&[u.node, t.node], u.offset)?;
                }
                self.ops.push((u, Some(t)));
                i += 2;
            } else {
                self.ops.push((t, None));
                i += 1;
            }
        };
        let mut acc = tail;
        while self.ops.len() > ops_mark {
            let Some((f, left)) = self.ops.pop() else {
                break;
            };
            acc = match left {
                Some(left) => self.list(&[f.node, left.node, acc], f.offset)?,
                None => {
                    let head = if f.parened_glyph {
                        let glyph = match self.tree.slots[f.node.0 as usize].data {
                            Data::Prim(glyph) => glyph,
                            _ => "::",
                        };
                        self.leaf(Data::Prim(unary_form(glyph)), f.offset)
                    } else {
                        f.node
                    };
                    self.list(&[head, acc], f.offset)?
                }
            };
        }
        Ok(Some(acc))
    }

    /// A verb about to be applied prefix: refused when it is a bare operator, or turned into
    /// its unary form where that is allowed (`select[10;<price]`).
    fn prefix(&mut self, term: Term, ctx: Ctx) -> PResult<Term> {
        if !term.bare_glyph {
            return Ok(term);
        }
        let glyph = match self.tree.slots[term.node.0 as usize].data {
            Data::Prim(glyph) => glyph,
            _ => "::",
        };
        if ctx.bare_unary {
            let node = self.leaf(Data::Prim(unary_form(glyph)), term.offset);
            return Ok(Term {
                node,
                bare_glyph: false,
                ..term
            });
        }
        Err(self.error(
            ParseErrorKind::BarePrefix {
                glyph: glyph.to_owned(),
            },
            term.offset,
        ))
    }

    /// One term and what follows it without a blank: brackets and iterators.
    fn term(&mut self, ctx: Ctx, after_noun: bool) -> PResult<Term> {
        let Some(token) = self.peek() else {
            return Err(self.error(
                ParseErrorKind::Unexpected {
                    token: "end of text".to_owned(),
                },
                self.end_offset(),
            ));
        };
        let offset = token.start;
        let noun = |node| Term {
            node,
            verb: false,
            bare_glyph: false,
            parened_glyph: false,
            offset,
        };
        let verb = |node| Term {
            node,
            verb: true,
            bare_glyph: false,
            parened_glyph: false,
            offset,
        };
        let mut term = match token.kind {
            TokenKind::Number => noun(self.numbers()?),
            TokenKind::Symbol => noun(self.symbols()?),
            TokenKind::String => {
                self.pos += 1;
                noun(self.string(token)?)
            }
            TokenKind::Name => {
                if matches!(
                    token.word,
                    Word::Select | Word::Exec | Word::Update | Word::Delete
                ) {
                    return Ok(noun(self.qsql()?));
                }
                self.pos += 1;
                match token.keyword {
                    Some(keyword) => {
                        let node = self.leaf(Data::Keyword(keyword), offset);
                        if keyword.is_infix() {
                            verb(node)
                        } else {
                            noun(node)
                        }
                    }
                    None => {
                        let span = self.span(token.start, token.end);
                        noun(self.name_node(span, offset))
                    }
                }
            }
            TokenKind::Glyph | TokenKind::IoVerb => {
                self.pos += 1;
                let text = self.text(token);
                let p = prim(text).unwrap_or("::");
                let node = self.leaf(Data::Prim(p), offset);
                Term {
                    bare_glyph: token.kind == TokenKind::Glyph && GLYPHS.contains(&p),
                    ..verb(node)
                }
            }
            TokenKind::Colon => {
                self.pos += 1;
                verb(self.leaf(Data::Prim(":"), offset))
            }
            TokenKind::DoubleColon => {
                self.pos += 1;
                // `a::1` assigns; `f ::` at the end applies `f` to the generic null.
                if after_noun && !self.at_end(ctx) {
                    verb(self.leaf(Data::Prim("::"), offset))
                } else {
                    noun(self.leaf(Data::Null, offset))
                }
            }
            TokenKind::Iterator if self.text(token) == b"'" => {
                // `'x` signals x.
                self.pos += 1;
                verb(self.leaf(Data::Prim("'"), offset))
            }
            TokenKind::LParen => self.paren()?,
            TokenKind::LBracket => noun(self.block()?),
            TokenKind::LBrace => noun(self.lambda()?),
            _ => return Err(self.unexpected(token)),
        };
        // Postfix: argument brackets and iterators.
        while let Some(next) = self.peek() {
            match next.kind {
                TokenKind::LBracket if !next.spaced || !term.verb => {
                    let node = self.arguments(term.node, offset)?;
                    term = noun(node);
                }
                TokenKind::Iterator if !next.spaced => {
                    self.pos += 1;
                    let p = prim(self.text(next)).unwrap_or("'");
                    let iterator = self.leaf(Data::Prim(p), next.start);
                    let node = self.list(&[iterator, term.node], offset)?;
                    term = verb(node);
                }
                _ => break,
            }
        }
        Ok(term)
    }

    /// `f[a;b]`: the head applied to the arguments; `f[]` passes `::`.
    fn arguments(&mut self, head: NodeId, offset: u32) -> PResult<NodeId> {
        let open = self.bump().map_or(offset, |t| t.start);
        self.enter(open)?;
        let mark = self.scratch.len();
        self.scratch.push(head);
        self.items(TokenKind::RBracket, ']', open, Ctx::default())?;
        let node = self.list_from(mark, offset)?;
        self.leave();
        Ok(node)
    }

    /// Items separated by `;` up to the closing token, pushed on the scratch stack (an empty
    /// item is `::`); returns how many `;` there were.
    fn items(&mut self, close: TokenKind, open_char: char, open: u32, ctx: Ctx) -> PResult<usize> {
        let mut separators = 0;
        loop {
            let item = match self.expr(ctx)? {
                Some(item) => item,
                None => {
                    let at = self.peek().map_or(self.end_offset(), |t| t.start);
                    self.leaf(Data::Null, at)
                }
            };
            self.scratch.push(item);
            match self.peek() {
                Some(t) if t.kind == TokenKind::Semicolon => {
                    self.pos += 1;
                    separators += 1;
                }
                Some(t) if t.kind == close => {
                    self.pos += 1;
                    return Ok(separators);
                }
                Some(t) if t.kind == TokenKind::Newline => {
                    // Only at the top level, so a bracket opened here was never closed.
                    return Err(self.error(ParseErrorKind::Unclosed { open: open_char }, open));
                }
                Some(t) => return Err(self.unexpected(t)),
                None => {
                    return Err(self.error(ParseErrorKind::Unclosed { open: open_char }, open));
                }
            }
        }
    }

    /// `[a;b]` where no value precedes it: a block of statements, `(";";a;b)`.
    fn block(&mut self) -> PResult<NodeId> {
        let open = self.bump().map_or(0, |t| t.start);
        self.enter(open)?;
        let mark = self.scratch.len();
        let head = self.leaf(Data::Char(b';'), open);
        self.scratch.push(head);
        self.items(TokenKind::RBracket, ']', open, Ctx::default())?;
        let node = self.list_from(mark, open)?;
        self.leave();
        Ok(node)
    }

    /// `(...)`: `()`, a table literal, a parenthesized expression or list notation.
    fn paren(&mut self) -> PResult<Term> {
        let open = self.bump().map_or(0, |t| t.start);
        self.enter(open)?;
        let noun = |node| Term {
            node,
            verb: false,
            bare_glyph: false,
            parened_glyph: false,
            offset: open,
        };
        if self.peek_kind() == Some(TokenKind::RParen) {
            self.pos += 1;
            self.leave();
            let empty = self.list(&[], open)?;
            return Ok(noun(empty));
        }
        if self
            .peek()
            .is_some_and(|t| t.kind == TokenKind::LBracket && !t.spaced)
        {
            let table = self.table(open)?;
            self.leave();
            return Ok(noun(table));
        }
        let mark = self.scratch.len();
        let enlist = self.keyword(kw::ENLIST, open);
        self.scratch.push(enlist);
        let separators = self.items(TokenKind::RParen, ')', open, Ctx::default())?;
        let term = if separators == 0 {
            // Invariant: `items` pushed exactly one item after the head.
            let item = self.scratch[mark + 1];
            self.scratch.truncate(mark);
            let parened_glyph = matches!(
                self.tree.slots[item.0 as usize].data,
                Data::Prim(p) if GLYPHS.contains(&p)
            );
            Term {
                parened_glyph,
                ..noun(item)
            }
        } else {
            noun(self.list_from(mark, open)?)
        };
        self.leave();
        Ok(term)
    }

    /// `([keys] cols)`: a table, `(+:;(!;,`a`b;(enlist;..)))`, keyed with `!` when `keys` has
    /// columns.
    fn table(&mut self, open: u32) -> PResult<NodeId> {
        self.pos += 1;
        let keys = self.columns(TokenKind::RBracket, ']', open)?;
        let values = self.columns(TokenKind::RParen, ')', open)?;
        if values.is_empty() && !keys.is_empty() {
            return Err(self.error(
                ParseErrorKind::Unsupported {
                    what: "a dictionary literal `([a:1])` (q 4.1)",
                },
                open,
            ));
        }
        let value_table = self.flip(&values, open)?;
        if keys.is_empty() {
            return Ok(value_table);
        }
        let key_table = self.flip(&keys, open)?;
        let bang = self.leaf(Data::Prim("!"), open);
        self.list(&[bang, key_table, value_table], open)
    }

    /// `(+:;(!;,names;(enlist;exprs...)))` for the columns.
    fn flip(&mut self, columns: &[(Span, NodeId)], open: u32) -> PResult<NodeId> {
        let mark = self.scratch.len();
        for &(name, _) in columns {
            let node = self.name_node(name, open);
            self.scratch.push(node);
        }
        let names = if columns.is_empty() {
            self.leaf(Data::Vector(Type::Symbol, Range::default()), open)
        } else {
            let names = self.list_from(mark, open)?;
            self.quote(names, open)?
        };
        let mark = self.scratch.len();
        let enlist = self.keyword(kw::ENLIST, open);
        self.scratch.push(enlist);
        for &(_, expr) in columns {
            self.scratch.push(expr);
        }
        let exprs = self.list_from(mark, open)?;
        let bang = self.leaf(Data::Prim("!"), open);
        let dict = self.list(&[bang, names, exprs], open)?;
        let flip = self.keyword(kw::FLIP, open);
        self.list(&[flip, dict], open)
    }

    /// The columns of a table literal up to `close`: `name:expr` or an expression named as qSQL
    /// names it.
    fn columns(
        &mut self,
        close: TokenKind,
        open_char: char,
        open: u32,
    ) -> PResult<Vec<(Span, NodeId)>> {
        let mut columns = Vec::new();
        if self.peek_kind() == Some(close) {
            self.pos += 1;
            return Ok(columns);
        }
        loop {
            let (name, expr) = self.subphrase(Ctx::default(), open)?;
            columns.push((name.unwrap_or(Span::default()), expr));
            match self.peek() {
                Some(t) if t.kind == TokenKind::Semicolon => self.pos += 1,
                Some(t) if t.kind == close => {
                    self.pos += 1;
                    break;
                }
                Some(t) => return Err(self.unexpected(t)),
                None => return Err(self.error(ParseErrorKind::Unclosed { open: open_char }, open)),
            }
        }
        let mut named = Vec::with_capacity(columns.len());
        for (name, expr) in columns {
            let name = if name.len == 0 {
                self.column_name(expr)
            } else {
                name
            };
            named.push((name, expr));
        }
        Ok(named)
    }

    /// `name:expr` (the name returned) or `expr` (no name) in a qSQL phrase or a table literal.
    fn subphrase(&mut self, ctx: Ctx, open: u32) -> PResult<(Option<Span>, NodeId)> {
        let first = self.peek();
        let second = self.peek_at(1);
        if let (Some(name), Some(colon)) = (first, second)
            && name.kind == TokenKind::Name
        {
            if colon.kind == TokenKind::DoubleColon {
                return Err(self.error(
                    ParseErrorKind::Unsupported {
                        what: "a global assignment `name::` as a column",
                    },
                    colon.start,
                ));
            }
            if colon.kind == TokenKind::Colon {
                if self.text(name).contains(&b'.') {
                    return Err(self.error(
                        ParseErrorKind::Unsupported {
                            what: "a dotted column name",
                        },
                        name.start,
                    ));
                }
                self.pos += 2;
                let expr = self.expr(ctx)?;
                let at = self.peek().map_or(self.end_offset(), |t| t.start);
                let expr = expr.ok_or_else(|| self.error(ParseErrorKind::EmptySubphrase, at))?;
                return Ok((Some(self.span(name.start, name.end)), expr));
            }
        }
        let at = first.map_or(open, |t| t.start);
        let expr = self.expr(ctx)?;
        let expr = expr.ok_or_else(|| self.error(ParseErrorKind::EmptySubphrase, at))?;
        Ok((None, expr))
    }

    /// The name q gives an unnamed column: the leftmost name of the expression, or `x`
    /// (qsql.md: "q names it if possible as the leftmost term in the column expression").
    ///
    /// On the tree: a name is itself (its last dotted part, `i` excepted); a unary application
    /// takes its argument's name; an operator applied infix takes its left argument's; any other
    /// application takes its last argument's (`f'[a;b]` is `b`, `size wavg price` is `price`).
    fn column_name(&mut self, expr: NodeId) -> Span {
        match self.leftmost_name(expr, 0) {
            Some(span) => span,
            None => self.tree.add_text(b"x"),
        }
    }

    fn leftmost_name(&self, node: NodeId, depth: usize) -> Option<Span> {
        if depth > MAX_DEPTH {
            return None;
        }
        let slots = &self.tree.slots;
        match slots[node.0 as usize].data {
            Data::Name(span) => {
                let bytes = self.tree.bytes(span);
                let last = bytes.iter().rposition(|&b| b == b'.').map_or(0, |p| p + 1);
                let part = Span {
                    start: span.start + last as u32,
                    len: span.len - last as u32,
                };
                let name = self.tree.bytes(part);
                (!name.is_empty() && name != b"i").then_some(part)
            }
            Data::List(range) | Data::Vector(Type::Symbol, range) if range.len >= 2 => {
                let items = self.tree.range(range);
                let head_is_glyph = matches!(slots[items[0].0 as usize].data, Data::Prim(_));
                let pick = if items.len() == 2 || head_is_glyph {
                    items[1]
                } else {
                    items[items.len() - 1]
                };
                self.leftmost_name(pick, depth + 1)
            }
            _ => None,
        }
    }

    // ----- Literals.

    /// A run of number tokens separated by blanks: one atom or a vector.
    fn numbers(&mut self) -> PResult<NodeId> {
        let first = self.pos;
        let alone = !self
            .peek_at(1)
            .is_some_and(|t| t.kind == TokenKind::Number && t.spaced);
        if alone {
            // One token, the common case: no run to join.
            let token = self.toks[first];
            let text = self.text(token);
            match literal::read(text) {
                Some(Lit::One(atom, _)) => {
                    self.pos += 1;
                    return Ok(self.leaf(Data::Atom(atom), token.start));
                }
                None => {
                    return Err(self.error(
                        ParseErrorKind::BadLiteral { text: quote(text) },
                        token.start,
                    ));
                }
                Some(Lit::Many(..)) => {}
            }
        }
        let mut texts: Vec<&'s [u8]> = Vec::new();
        while let Some(t) = self.peek() {
            if t.kind != TokenKind::Number || (self.pos > first && !t.spaced) {
                break;
            }
            texts.push(self.text(t));
            self.pos += 1;
        }
        let start = self.toks[first].start;
        let end = self.toks[self.pos - 1].end;
        let (ty, atoms) = literal::read_run(&texts).ok_or_else(|| {
            // Name the token q would not read, or the whole run when they do not agree.
            let bad = self.toks[first..self.pos]
                .iter()
                .find(|t| literal::read(self.text(**t)).is_none());
            let kind = match bad {
                Some(t) => ParseErrorKind::BadLiteral {
                    text: quote(self.text(*t)),
                },
                None => ParseErrorKind::MixedVector {
                    text: quote(&self.src[start as usize..end as usize]),
                },
            };
            self.error(kind, bad.map_or(start, |t| t.start))
        })?;
        let single = texts.len() == 1 && matches!(literal::read(texts[0]), Some(Lit::One(..)));
        if single {
            return Ok(self.leaf(Data::Atom(atoms[0]), start));
        }
        let mark = self.scratch.len();
        for atom in atoms {
            let node = self.leaf(Data::Atom(atom), start);
            self.scratch.push(node);
        }
        let range = add_kids(&mut self.tree.kids, &self.scratch[mark..]);
        self.scratch.truncate(mark);
        Ok(self.push_slot(Data::Vector(ty, range), 2, start))
    }

    /// Adjacent symbols: `` `a `` is `` ,`a ``, `` `a`b `` is `` ,`a`b ``.
    fn symbols(&mut self) -> PResult<NodeId> {
        let first = self.pos;
        let mark = self.scratch.len();
        while let Some(t) = self.peek() {
            if t.kind != TokenKind::Symbol || (self.pos > first && t.spaced) {
                break;
            }
            let span = self.span(t.start + 1, t.end);
            let node = self.name_node(span, t.start);
            self.scratch.push(node);
            self.pos += 1;
        }
        let offset = self.toks[first].start;
        if self.scratch.len() - mark == 1 {
            return self.list_from(mark, offset);
        }
        let vector = self.list_from(mark, offset)?;
        self.quote(vector, offset)
    }

    /// A string or char literal, its escapes resolved.
    fn string(&mut self, token: Token) -> PResult<NodeId> {
        let inner = &self.src[token.start as usize + 1..token.end as usize - 1];
        if !inner.contains(&b'\\') {
            if inner.len() == 1 {
                return Ok(self.leaf(Data::Char(inner[0]), token.start));
            }
            let span = self.span(token.start + 1, token.end - 1);
            return Ok(self.leaf(Data::Str(span), token.start));
        }
        let mut out = Vec::with_capacity(inner.len());
        let mut i = 0;
        while i < inner.len() {
            let b = inner[i];
            if b != b'\\' {
                out.push(b);
                i += 1;
                continue;
            }
            let escape_at = token.start + 1 + i as u32;
            let bad = || ParseError::new(ParseErrorKind::BadEscape, self.src, escape_at as usize);
            let next = *inner.get(i + 1).ok_or_else(bad)?;
            match next {
                b'"' | b'\\' => out.push(next),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'0'..=b'7' => {
                    let digits = inner.get(i + 1..i + 4).ok_or_else(bad)?;
                    if !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                        return Err(bad());
                    }
                    let value = digits
                        .iter()
                        .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                    out.push(u8::try_from(value).map_err(|_| bad())?);
                    i += 4;
                    continue;
                }
                _ => return Err(bad()),
            }
            i += 2;
        }
        if out.len() == 1 {
            return Ok(self.leaf(Data::Char(out[0]), token.start));
        }
        let span = self.tree.add_text(&out);
        Ok(self.leaf(Data::Str(span), token.start))
    }

    // ----- Lambdas.

    /// `{[a;b] e1; e2}`: the lambda, with its parameters and statements.
    fn lambda(&mut self) -> PResult<NodeId> {
        let open = self.bump().map_or(0, |t| t.start);
        self.enter(open)?;
        let params_mark = self.scratch.len();
        let mut explicit = false;
        if self.peek_kind() == Some(TokenKind::LBracket) {
            explicit = true;
            self.pos += 1;
            loop {
                match self.peek() {
                    Some(t) if t.kind == TokenKind::Name => {
                        self.pos += 1;
                        let span = self.span(t.start, t.end);
                        let node = self.name_node(span, t.start);
                        self.scratch.push(node);
                        match self.peek() {
                            Some(t) if t.kind == TokenKind::Semicolon => self.pos += 1,
                            Some(t) if t.kind == TokenKind::RBracket => {
                                self.pos += 1;
                                break;
                            }
                            Some(t) => return Err(self.unexpected(t)),
                            None => {
                                return Err(
                                    self.error(ParseErrorKind::Unclosed { open: '{' }, open)
                                );
                            }
                        }
                    }
                    Some(t) if t.kind == TokenKind::RBracket => {
                        self.pos += 1;
                        break;
                    }
                    Some(t) => return Err(self.unexpected(t)),
                    None => return Err(self.error(ParseErrorKind::Unclosed { open: '{' }, open)),
                }
            }
        }
        let params = add_kids(&mut self.tree.kids, &self.scratch[params_mark..]);
        self.scratch.truncate(params_mark);
        let body_mark = self.scratch.len();
        self.items(TokenKind::RBrace, '{', open, Ctx::default())?;
        let close = self.toks[self.pos - 1].end;
        let height = self.height_over(&self.scratch[body_mark..], open)?;
        let body = add_kids(&mut self.tree.kids, &self.scratch[body_mark..]);
        self.scratch.truncate(body_mark);
        let text = self.span(open, close);
        self.leave();
        Ok(self.push_slot(
            Data::Lambda {
                text,
                params,
                explicit,
                body,
            },
            height,
            open,
        ))
    }

    // ----- qSQL.

    /// `select`, `exec`, `update` or `delete`, in the functional form `parse` gives
    /// (q-parse.md §10): `(?;t;c;b;a)` or `(!;t;c;b;a)`, with `select[n;order]` adding `n` and
    /// the order.
    fn qsql(&mut self) -> PResult<NodeId> {
        let Some(keyword) = self.bump() else {
            return Err(self.error(ParseErrorKind::MissingTable, self.end_offset()));
        };
        let offset = keyword.start;
        self.enter(offset)?;
        let template: &'static str = match keyword.word {
            Word::Select => "select",
            Word::Exec => "exec",
            Word::Update => "update",
            _ => "delete",
        };
        let select = template == "select";
        let exec = template == "exec";
        let delete = template == "delete";

        // `select[n]`, `select[n;order]`, `select[order]`.
        let mut limit: Option<NodeId> = None;
        let mut order: Option<NodeId> = None;
        if select
            && self
                .peek()
                .is_some_and(|t| t.kind == TokenKind::LBracket && !t.spaced)
        {
            let open = self.bump().map_or(offset, |t| t.start);
            let mark = self.scratch.len();
            let ctx = Ctx {
                bare_unary: true,
                ..Ctx::default()
            };
            self.items(TokenKind::RBracket, ']', open, ctx)?;
            let items: Vec<NodeId> = self.scratch.drain(mark..).collect();
            let is_order = |parser: &Self, id: NodeId| match parser.tree.slots[id.0 as usize].data {
                Data::List(range) if range.len == 2 => matches!(
                    parser.tree.slots[parser.tree.range(range)[0].0 as usize].data,
                    Data::Prim("<:" | ">:")
                ),
                _ => false,
            };
            match items.as_slice() {
                [one] if is_order(self, *one) => order = Some(*one),
                [one] => limit = Some(*one),
                [n, o] => {
                    limit = Some(*n);
                    order = Some(*o);
                }
                _ => {
                    return Err(self.error(
                        ParseErrorKind::Unsupported {
                            what: "a select limit with more than two parts",
                        },
                        open,
                    ));
                }
            }
        }
        let mut distinct = false;
        if (select || exec) && self.next_is(Word::Distinct) {
            self.pos += 1;
            distinct = true;
        }

        // The phrases' columns go on the column stack, one run each: the select phrase from
        // `cols` to `by`, the by phrase from `by` to `wheres`, the constraints after.
        let cols = self.columns.len();
        if !self.next_is(Word::By) && !self.next_is(Word::From) {
            self.phrase(STOP_BY | STOP_FROM, offset)?;
        }
        let by = self.columns.len();
        let mut has_by = false;
        if self.next_is(Word::By) {
            self.pos += 1;
            has_by = true;
            self.phrase(STOP_FROM, offset)?;
        }
        let wheres = self.columns.len();
        if !self.next_is(Word::From) {
            let at = self.peek().map_or(self.end_offset(), |t| t.start);
            return Err(self.error(ParseErrorKind::MissingFrom { template }, at));
        }
        self.pos += 1;
        let table_at = self.peek().map_or(self.end_offset(), |t| t.start);
        let table = self
            .expr(Ctx {
                stop: STOP_WHERE,
                ..Ctx::default()
            })?
            .ok_or_else(|| self.error(ParseErrorKind::MissingTable, table_at))?;
        if self.next_is(Word::Where) {
            self.pos += 1;
            self.phrase(0, offset)?;
        }
        let end = self.columns.len();

        // Names: unnamed columns are named, duplicates within a phrase get suffixes, and a name
        // used both as a column and as a group is an error in a select.
        self.name_columns(cols, by);
        self.name_columns(by, wheres);
        if select
            && let Some(column) = self.columns[cols..by].iter().find(|column| {
                self.columns[by..wheres]
                    .iter()
                    .any(|group| self.tree.bytes(group.name) == self.tree.bytes(column.name))
            })
        {
            let name = String::from_utf8_lossy(self.tree.bytes(column.name)).into_owned();
            return Err(self.error(ParseErrorKind::DupNames { name }, offset));
        }
        // A one-column exec phrase that q named itself gives the column's value, not a
        // dictionary.
        let lone = |parser: &Self, start: usize, end: usize| match &parser.columns[start..end] {
            [column] if column.made_up => Some(column.expr),
            _ => None,
        };

        let head = self.leaf(Data::Prim(if select || exec { "?" } else { "!" }), offset);
        let c = if wheres == end {
            self.list(&[], offset)?
        } else {
            let mark = self.scratch.len();
            for i in wheres..end {
                let expr = self.columns[i].expr;
                self.scratch.push(expr);
            }
            let list = self.list_from(mark, offset)?;
            self.quote(list, offset)?
        };
        let b = if has_by {
            match lone(self, by, wheres) {
                Some(expr) if exec => self.quote(expr, offset)?,
                _ => self.named_dict(by, wheres, offset)?,
            }
        } else if exec && !distinct {
            self.list(&[], offset)?
        } else {
            self.leaf(Data::Atom(Atom::Boolean(distinct)), offset)
        };
        let a = if delete {
            if cols == by {
                self.leaf(Data::Vector(Type::Symbol, Range::default()), offset)
            } else {
                let mark = self.scratch.len();
                for i in cols..by {
                    let expr = self.columns[i].expr;
                    if !matches!(self.tree.slots[expr.0 as usize].data, Data::Name(_)) {
                        let at = self.tree.slots[expr.0 as usize].offset;
                        self.scratch.truncate(mark);
                        return Err(self.error(
                            ParseErrorKind::Unsupported {
                                what: "a delete of anything but column names",
                            },
                            at,
                        ));
                    }
                    self.scratch.push(expr);
                }
                let names = self.list_from(mark, offset)?;
                self.quote(names, offset)?
            }
        } else if cols == by {
            self.list(&[], offset)?
        } else {
            match lone(self, cols, by) {
                Some(expr) if exec => self.quote(expr, offset)?,
                _ => self.named_dict(cols, by, offset)?,
            }
        };
        self.columns.truncate(cols);
        let mark = self.scratch.len();
        self.scratch.extend_from_slice(&[head, table, c, b, a]);
        if limit.is_some() || order.is_some() {
            let n = match limit {
                Some(n) => n,
                None => self.leaf(Data::Atom(Atom::Long(i64::MAX)), offset),
            };
            self.scratch.push(n);
        }
        if let Some(order) = order {
            let quoted = self.quote(order, offset)?;
            self.scratch.push(quoted);
        }
        let node = self.list_from(mark, offset)?;
        self.leave();
        Ok(node)
    }

    /// A comma-separated qSQL phrase, its columns pushed on the column stack.
    fn phrase(&mut self, stop: u8, offset: u32) -> PResult<()> {
        let ctx = Ctx {
            stop_comma: true,
            stop,
            bare_unary: false,
        };
        loop {
            let (name, expr) = self.subphrase(ctx, offset)?;
            self.columns.push(Column {
                name: name.unwrap_or_default(),
                expr,
                made_up: name.is_none(),
            });
            match self.peek() {
                Some(t) if t.kind == TokenKind::Glyph && self.text(t) == b"," => self.pos += 1,
                _ => return Ok(()),
            }
        }
    }

    /// Gives every column from `start` to `end` its name: its own, or the one q makes up;
    /// repeats get `1`, `2`...
    fn name_columns(&mut self, start: usize, end: usize) {
        for i in start..end {
            let column = self.columns[i];
            let mut name = if column.made_up {
                self.column_name(column.expr)
            } else {
                column.name
            };
            let taken = |parser: &Self, name: &[u8]| {
                parser.columns[start..i]
                    .iter()
                    .any(|other| parser.tree.bytes(other.name) == name)
            };
            if taken(self, self.tree.bytes(name)) {
                let base = self.tree.bytes(name).to_vec();
                for n in 1.. {
                    let mut candidate = base.clone();
                    candidate.extend_from_slice(n.to_string().as_bytes());
                    if !taken(self, &candidate) {
                        name = self.tree.add_text(&candidate);
                        break;
                    }
                }
            }
            self.columns[i].name = name;
        }
    }

    /// `names!exprs`, the dictionary of the select or by phrase from `start` to `end` on the
    /// column stack.
    fn named_dict(&mut self, start: usize, end: usize, offset: u32) -> PResult<NodeId> {
        let mark = self.scratch.len();
        for i in start..end {
            let name = self.columns[i].name;
            let node = self.name_node(name, offset);
            self.scratch.push(node);
        }
        let keys = self.list_from(mark, offset)?;
        let mark = self.scratch.len();
        for i in start..end {
            let expr = self.columns[i].expr;
            self.scratch.push(expr);
        }
        let values = self.list_from(mark, offset)?;
        self.dict(keys, values, offset)
    }
}

/// A list of `items` pushed on `tree`, collapsed to a vector when they are atoms of one type,
/// as q's lists are; `None` when it would stand taller than [`MAX_DEPTH`].
///
/// A function of the tree alone, so that the items may be the parser's scratch stack or a slice
/// of its own, without copying them from one to the other.
fn build_list(tree: &mut Tree, items: &[NodeId], offset: u32) -> Option<NodeId> {
    let slots = &tree.slots;
    let max = items
        .iter()
        .map(|&id| slots[id.0 as usize].height)
        .max()
        .unwrap_or(0);
    if usize::from(max) >= MAX_DEPTH {
        return None;
    }
    let ty_of = |id: &NodeId| match slots[id.0 as usize].data {
        Data::Name(_) => Some(Type::Symbol),
        Data::Char(_) => Some(Type::Char),
        Data::Atom(atom) => Some(atom.ty()),
        _ => None,
    };
    let uniform = match items.first().and_then(ty_of) {
        Some(ty) if items.iter().all(|id| ty_of(id) == Some(ty)) => Some(ty),
        _ => None,
    };
    let data = match uniform {
        Some(Type::Char) => {
            let chars: Vec<u8> = items
                .iter()
                .map(|id| match slots[id.0 as usize].data {
                    Data::Char(c) => c,
                    _ => b' ',
                })
                .collect();
            Data::Str(tree.add_text(&chars))
        }
        Some(ty) => Data::Vector(ty, add_kids(&mut tree.kids, items)),
        None => Data::List(add_kids(&mut tree.kids, items)),
    };
    // Invariant: as for any node id, far below u32::MAX.
    let id = NodeId(tree.slots.len() as u32);
    tree.slots.push(Slot {
        data,
        height: max + 1,
        offset,
    });
    Some(id)
}

fn add_kids(kids: &mut Vec<NodeId>, items: &[NodeId]) -> Range {
    // Invariant: as for node ids, far below u32::MAX.
    let start = kids.len() as u32;
    // Item by item: a list has a handful of items, fewer than a call to `memcpy` costs.
    kids.reserve(items.len());
    for &item in items {
        kids.push(item);
    }
    Range {
        start,
        len: items.len() as u32,
    }
}
