//! The parse tree: q values in an arena, as q's `parse` returns them.
//!
//! A parse tree is a q value (q-parse.md §1): a constant, a name (a symbol atom), or a general
//! list whose first item is applied to the others.
//! Symbol literals are enlisted (`` ,`a ``) so that they are not names, qSQL templates become
//! their functional form, and keywords appear by value.
//! The tree here is exactly that value, with three additions that q's value does not carry and
//! that analyses need: a keyword remembers its name (q's `not` and `hdel` are both `~:`), a
//! lambda keeps its parsed body next to its text, and a system command keeps its text.
//!
//! Nodes live in one `Vec` and refer to each other by index; list items are contiguous runs of
//! indices in a second `Vec`.
//! A parse allocates a handful of vectors, not one box per node.

use std::fmt;

use crate::keyword::Keyword;

/// A node's index in its tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct NodeId(pub(crate) u32);

/// A run of bytes in the tree's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Span {
    pub(crate) start: u32,
    pub(crate) len: u32,
}

/// A run of child indices in the tree's `kids`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Range {
    pub(crate) start: u32,
    pub(crate) len: u32,
}

/// A q atom that is not a symbol or a char (those are [`NodeKind::Name`] and
/// [`NodeKind::Char`]).
///
/// Temporal values are q's own encodings: days, months or milliseconds since 2000.01.01 or
/// midnight, nanoseconds for timestamps and timespans, fractional days for datetimes.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Atom {
    /// `1b`.
    Boolean(bool),
    /// `0Ng`, the only guid q can write.
    Guid([u8; 16]),
    /// `0x2a`.
    Byte(u8),
    /// `42h`.
    Short(i16),
    /// `42i`.
    Int(i32),
    /// `42`.
    Long(i64),
    /// `4.2e`.
    Real(f32),
    /// `4.2`.
    Float(f64),
    /// `2000.01.01D00:00:00.000000000`: nanoseconds since 2000.01.01.
    Timestamp(i64),
    /// `2000.01m`: months since 2000.01.
    Month(i32),
    /// `2000.01.01`: days since 2000.01.01.
    Date(i32),
    /// `2000.01.01T00:00:00.000`: days since 2000.01.01.
    Datetime(f64),
    /// `0D00:00:00.000000000`: nanoseconds.
    Timespan(i64),
    /// `00:00`: minutes.
    Minute(i32),
    /// `00:00:00`: seconds.
    Second(i32),
    /// `00:00:00.000`: milliseconds.
    Time(i32),
}

/// The type of a vector's items, or of an atom: q's type names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Type {
    /// `1b`.
    Boolean,
    /// `0Ng`.
    Guid,
    /// `0x2a`.
    Byte,
    /// `1h`.
    Short,
    /// `1i`.
    Int,
    /// `1`.
    Long,
    /// `1e`.
    Real,
    /// `1f`.
    Float,
    /// `"a"`.
    Char,
    /// `` `a ``.
    Symbol,
    /// `2000.01.01D00:00:00.000000000`.
    Timestamp,
    /// `2000.01m`.
    Month,
    /// `2000.01.01`.
    Date,
    /// `2000.01.01T00:00:00.000`.
    Datetime,
    /// `0D00:00:00.000000000`.
    Timespan,
    /// `00:00`.
    Minute,
    /// `00:00:00`.
    Second,
    /// `00:00:00.000`.
    Time,
}

impl Type {
    /// q's name for the type, as `key` prints it: `long`, `symbol`, `timespan`...
    pub fn name(self) -> &'static str {
        match self {
            Type::Boolean => "boolean",
            Type::Guid => "guid",
            Type::Byte => "byte",
            Type::Short => "short",
            Type::Int => "int",
            Type::Long => "long",
            Type::Real => "real",
            Type::Float => "float",
            Type::Char => "char",
            Type::Symbol => "symbol",
            Type::Timestamp => "timestamp",
            Type::Month => "month",
            Type::Date => "date",
            Type::Datetime => "datetime",
            Type::Timespan => "timespan",
            Type::Minute => "minute",
            Type::Second => "second",
            Type::Time => "time",
        }
    }
}

impl Atom {
    /// The atom's type.
    pub fn ty(&self) -> Type {
        match self {
            Atom::Boolean(_) => Type::Boolean,
            Atom::Guid(_) => Type::Guid,
            Atom::Byte(_) => Type::Byte,
            Atom::Short(_) => Type::Short,
            Atom::Int(_) => Type::Int,
            Atom::Long(_) => Type::Long,
            Atom::Real(_) => Type::Real,
            Atom::Float(_) => Type::Float,
            Atom::Timestamp(_) => Type::Timestamp,
            Atom::Month(_) => Type::Month,
            Atom::Date(_) => Type::Date,
            Atom::Datetime(_) => Type::Datetime,
            Atom::Timespan(_) => Type::Timespan,
            Atom::Minute(_) => Type::Minute,
            Atom::Second(_) => Type::Second,
            Atom::Time(_) => Type::Time,
        }
    }
}

/// One node as stored.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Data {
    /// `::`, the generic null (also an empty statement or an elided argument).
    Null,
    /// A symbol atom: in a tree, the name of a variable or function.
    Name(Span),
    /// A char atom.
    Char(u8),
    /// A char vector (a string).
    Str(Span),
    /// Any other atom.
    Atom(Atom),
    /// A vector of atoms of one type (the kids are `Name` nodes for a symbol vector, `Atom` nodes
    /// otherwise).
    Vector(Type, Range),
    /// A general list.
    List(Range),
    /// A dictionary: keys and values.
    Dict(NodeId, NodeId),
    /// A lambda: its source text, its parameters (`Name` nodes) and its body (a list of
    /// statements).
    Lambda {
        text: Span,
        params: Range,
        explicit: bool,
        body: Range,
    },
    /// A primitive: an operator, its unary form, an I/O verb or an iterator, by its text.
    Prim(&'static str),
    /// A q keyword, by value.
    Keyword(Keyword),
    /// A system command's text, after the backslash.
    System(Span),
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    pub(crate) data: Data,
    /// The height of the subtree under this node (a leaf is 1), bounded by `MAX_DEPTH`.
    pub(crate) height: u16,
    /// Where the node's text starts in the source, for messages.
    pub(crate) offset: u32,
}

/// A parse tree, owning its nodes and the text they refer to.
///
/// [`Tree::root`] is the value q's `parse` returns; `Display` prints it as the q console
/// prints that value (one item a line for a general list at the top, `-3!` form inside).
#[derive(Clone)]
pub struct Tree {
    pub(crate) slots: Vec<Slot>,
    pub(crate) kids: Vec<NodeId>,
    /// The parsed source, then any text the parser made up (qSQL column names, decoded
    /// strings).
    pub(crate) text: Vec<u8>,
    pub(crate) root: NodeId,
}

impl Tree {
    pub(crate) fn with_source(src: &[u8]) -> Tree {
        let mut text = Vec::with_capacity(src.len() + 16);
        text.extend_from_slice(src);
        Tree {
            slots: Vec::with_capacity(src.len() / 2 + 8),
            kids: Vec::with_capacity(src.len() / 2 + 8),
            text,
            root: NodeId(0),
        }
    }

    /// Empties the tree and makes `src` its source, keeping the vectors' memory.
    pub(crate) fn reset(&mut self, src: &[u8]) {
        self.slots.clear();
        self.kids.clear();
        self.text.clear();
        self.text.extend_from_slice(src);
        self.root = NodeId(0);
    }

    /// Whether the tree's vectors hold more than `nodes` nodes or `bytes` bytes of text.
    pub(crate) fn holds_more_than(&self, nodes: usize, bytes: usize) -> bool {
        self.slots.capacity() > nodes
            || self.kids.capacity() > nodes
            || self.text.capacity() > bytes
    }

    /// The value q's `parse` returns.
    pub fn root(&self) -> Node<'_> {
        self.node(self.root)
    }

    /// The number of nodes (every atom, name and list counts one).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the tree has no node, which never happens for a tree `parse` returns.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub(crate) fn node(&self, id: NodeId) -> Node<'_> {
        Node { tree: self, id }
    }

    pub(crate) fn slot(&self, id: NodeId) -> &Slot {
        &self.slots[id.0 as usize]
    }

    pub(crate) fn bytes(&self, span: Span) -> &[u8] {
        &self.text[span.start as usize..(span.start + span.len) as usize]
    }

    pub(crate) fn range(&self, range: Range) -> &[NodeId] {
        &self.kids[range.start as usize..(range.start + range.len) as usize]
    }

    /// Appends `bytes` to the tree's text and returns their span.
    pub(crate) fn add_text(&mut self, bytes: &[u8]) -> Span {
        // Invariant: the text is the input (at most MAX_INPUT_BYTES) plus made-up text no longer
        // than the input, far below u32::MAX.
        let start = self.text.len() as u32;
        self.text.extend_from_slice(bytes);
        Span {
            start,
            len: bytes.len() as u32,
        }
    }

    /// Appends a run of children and returns its range.
    pub(crate) fn add_kids(&mut self, kids: &[NodeId]) -> Range {
        let start = self.kids.len() as u32;
        self.kids.extend_from_slice(kids);
        Range {
            start,
            len: kids.len() as u32,
        }
    }
}

impl fmt::Debug for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tree({})", self.root().one_line())
    }
}

/// A node of a [`Tree`]: a q value.
#[derive(Clone, Copy)]
pub struct Node<'t> {
    pub(crate) tree: &'t Tree,
    pub(crate) id: NodeId,
}

/// What a node is.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum NodeKind<'t> {
    /// `::`: the generic null, an empty statement or an elided argument.
    Null,
    /// A symbol atom, which in a parse tree names a variable or a function: `` `trade ``.
    Name(&'t str),
    /// A char atom: `"a"`.
    Char(u8),
    /// A char vector: `"abc"`.
    String(&'t [u8]),
    /// Any other atom.
    Atom(Atom),
    /// A vector of atoms of one type; its items are [`Node::items`].
    /// A symbol vector of names (`` `f`x ``) is an application, as a general list would be.
    Vector(Type),
    /// A general list; its items are [`Node::items`].
    /// With two or more items it is an application: the first item applied to the others.
    /// With one item it is that item quoted (`,x`), a constant.
    List,
    /// A dictionary, in a qSQL tree: [`Node::dict`].
    Dict,
    /// A lambda, which parses to itself; [`Node::lambda_text`] is its source.
    Lambda,
    /// A primitive: an operator (`+`), its unary form (`+:`), an I/O verb (`0:`) or an iterator
    /// (`/:`).
    Primitive(&'static str),
    /// A q keyword, by value (`count`, `lj`, `value`...).
    Keyword(Keyword),
    /// A system command (`\l sp.q`): its text after the backslash.
    System(&'t [u8]),
}

impl<'t> Node<'t> {
    /// What the node is.
    pub fn kind(&self) -> NodeKind<'t> {
        let tree = self.tree;
        match tree.slot(self.id).data {
            Data::Null => NodeKind::Null,
            Data::Name(span) => NodeKind::Name(name_str(tree.bytes(span))),
            Data::Char(c) => NodeKind::Char(c),
            Data::Str(span) => NodeKind::String(tree.bytes(span)),
            Data::Atom(atom) => NodeKind::Atom(atom),
            Data::Vector(ty, _) => NodeKind::Vector(ty),
            Data::List(_) => NodeKind::List,
            Data::Dict(..) => NodeKind::Dict,
            Data::Lambda { .. } => NodeKind::Lambda,
            Data::Prim(text) => NodeKind::Primitive(text),
            Data::Keyword(keyword) => NodeKind::Keyword(keyword),
            Data::System(span) => NodeKind::System(tree.bytes(span)),
        }
    }

    pub(crate) fn data(&self) -> Data {
        self.tree.slot(self.id).data
    }

    /// The items of a general list or a vector (a string's chars are not nodes: none).
    pub fn items(&self) -> impl ExactSizeIterator<Item = Node<'t>> + 't {
        let tree = self.tree;
        let ids: &'t [NodeId] = match tree.slot(self.id).data {
            Data::List(range) | Data::Vector(_, range) => tree.range(range),
            _ => &[],
        };
        ids.iter().map(move |&id| tree.node(id))
    }

    /// The ids of a list's or vector's items.
    pub(crate) fn item_ids(&self) -> &'t [NodeId] {
        let tree: &'t Tree = self.tree;
        match tree.slot(self.id).data {
            Data::List(range) | Data::Vector(_, range) => tree.range(range),
            _ => &[],
        }
    }

    /// The `i`th item of a list or vector.
    pub fn item(&self, i: usize) -> Option<Node<'t>> {
        self.items().nth(i)
    }

    /// The number of items of a list or vector, the length of a string, 1 for anything else.
    pub fn len(&self) -> usize {
        match self.tree.slot(self.id).data {
            Data::List(range) | Data::Vector(_, range) => range.len as usize,
            Data::Str(span) => span.len as usize,
            _ => 1,
        }
    }

    /// Whether the node is an empty list, vector or string.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A dictionary's keys and values.
    pub fn dict(&self) -> Option<(Node<'t>, Node<'t>)> {
        match self.tree.slot(self.id).data {
            Data::Dict(keys, values) => Some((self.tree.node(keys), self.tree.node(values))),
            _ => None,
        }
    }

    /// A lambda's source text, braces included.
    pub fn lambda_text(&self) -> Option<&'t [u8]> {
        match self.tree.slot(self.id).data {
            Data::Lambda { text, .. } => Some(self.tree.bytes(text)),
            _ => None,
        }
    }

    /// A lambda's parameters: the names in its signature, or `x`, `y`, `z` without one.
    pub fn lambda_params(&self) -> impl Iterator<Item = &'t str> + 't {
        let tree = self.tree;
        let (ids, implicit): (&'t [NodeId], bool) = match tree.slot(self.id).data {
            Data::Lambda {
                params, explicit, ..
            } => (tree.range(params), !explicit),
            _ => (&[], false),
        };
        let implicit = if implicit {
            ["x", "y", "z"].as_slice()
        } else {
            [].as_slice()
        };
        ids.iter()
            .filter_map(move |&id| tree.node(id).name())
            .chain(implicit.iter().copied())
    }

    /// Whether a lambda has a signature (`{[a;b] ...}`), rather than implicit `x`, `y`, `z`.
    pub fn lambda_has_signature(&self) -> bool {
        matches!(
            self.tree.slot(self.id).data,
            Data::Lambda { explicit: true, .. }
        )
    }

    /// A lambda's statements, in order.
    pub fn lambda_body(&self) -> impl ExactSizeIterator<Item = Node<'t>> + 't {
        let tree = self.tree;
        let ids: &'t [NodeId] = match tree.slot(self.id).data {
            Data::Lambda { body, .. } => tree.range(body),
            _ => &[],
        };
        ids.iter().map(move |&id| tree.node(id))
    }

    /// The name a symbol atom holds.
    pub fn name(&self) -> Option<&'t str> {
        match self.kind() {
            NodeKind::Name(name) => Some(name),
            _ => None,
        }
    }

    /// The byte offset in the source where the node's text starts (0 for made-up nodes).
    pub fn offset(&self) -> usize {
        self.tree.slot(self.id).offset as usize
    }

    /// The height of the subtree under this node: 1 for a leaf.
    pub fn height(&self) -> usize {
        usize::from(self.tree.slot(self.id).height)
    }

    /// Whether this is the one-item list q uses to quote a constant (`` ,`a ``, `,(...)`).
    pub fn is_quote(&self) -> bool {
        matches!(
            self.data(),
            Data::List(Range { len: 1, .. }) | Data::Vector(_, Range { len: 1, .. })
        )
    }

    /// The value under a quote: the item of a one-item list.
    pub fn unquote(&self) -> Option<Node<'t>> {
        if self.is_quote() { self.item(0) } else { None }
    }

    /// Whether two nodes, possibly of different trees, are the same q value (floats compared by
    /// bits, so `0n` equals `0n`), keywords compared by name.
    pub fn same(&self, other: &Node<'_>) -> bool {
        match (self.kind(), other.kind()) {
            (NodeKind::Null, NodeKind::Null) => true,
            (NodeKind::Name(a), NodeKind::Name(b)) => a == b,
            (NodeKind::Char(a), NodeKind::Char(b)) => a == b,
            (NodeKind::String(a), NodeKind::String(b)) => a == b,
            (NodeKind::Atom(a), NodeKind::Atom(b)) => same_atom(a, b),
            (NodeKind::Vector(a), NodeKind::Vector(b)) if a == b => self.same_items(other),
            (NodeKind::List, NodeKind::List) => self.same_items(other),
            (NodeKind::Dict, NodeKind::Dict) => match (self.dict(), other.dict()) {
                (Some((ak, av)), Some((bk, bv))) => ak.same(&bk) && av.same(&bv),
                _ => false,
            },
            (NodeKind::Lambda, NodeKind::Lambda) => self.lambda_text() == other.lambda_text(),
            (NodeKind::Primitive(a), NodeKind::Primitive(b)) => a == b,
            (NodeKind::Keyword(a), NodeKind::Keyword(b)) => a == b,
            (NodeKind::System(a), NodeKind::System(b)) => a == b,
            _ => false,
        }
    }

    fn same_items(&self, other: &Node<'_>) -> bool {
        self.len() == other.len() && self.items().zip(other.items()).all(|(a, b)| a.same(&b))
    }
}

fn same_atom(a: Atom, b: Atom) -> bool {
    match (a, b) {
        (Atom::Float(x), Atom::Float(y)) | (Atom::Datetime(x), Atom::Datetime(y)) => {
            x.to_bits() == y.to_bits()
        }
        (Atom::Real(x), Atom::Real(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

/// A name's bytes as text: names are ASCII by construction, and a symbol from a call list is
/// UTF-8 by its type; anything else (never made) reads as empty.
pub(crate) fn name_str(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

impl fmt::Debug for Node<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Node({})", self.one_line())
    }
}
