//! Query facts: what a policy reads from a parse tree (q-parse.md §14).
//!
//! Facts come from the text alone, with no session state, and over-approximate: a lambda's body
//! counts whether or not the lambda is applied, arguments and locals of the enclosing lambda are
//! left out, and a string handed to `value`, `system` or a handle is opaque, never parsed.
//! Text that does not parse gives [`Flags::UNPARSED`] and nothing else; a policy denies it.
//!
//! One walk over the tree collects every kind of fact; each kind has its own rule, below, and
//! its own table of `check(input, expect)` tests at the bottom of this file.

use std::fmt;

use crate::{
    keyword::{Keyword, kw},
    parser::parse_into,
    tree::{Atom, Data, Node, NodeId, NodeKind, Slot, Tree, Type, name_str},
};

/// What a policy reads from a query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// Tables read: qSQL `from` targets (nested queries included), the first argument of a
    /// functional `?` or `!`, join operands, the left operand of a by-value `upsert`.
    pub tables_read: Vec<String>,
    /// Tables written: update or delete (template or functional `!`) of a table given by name,
    /// `insert` and `upsert` into a table given by name, a join on a table given by name (q 4.1
    /// updates it in place), `delete x from `.`.
    pub tables_written: Vec<String>,
    /// User functions called: global names applied (prefix, with brackets, through iterators,
    /// `each`, `fby`, by symbol), including inside lambdas; q's keywords never count.
    pub functions: Vec<String>,
    /// Globals assigned: top-level `:`, `::` anywhere (unless a local or argument), compound,
    /// indexed and pattern assignment, `set`, amend by name, `\x`; qualified after `\d .ns`.
    pub assigned: Vec<String>,
    /// Global names read as values (not applied, not columns in a qSQL phrase, not locals):
    /// a bare table or variable (`.perm.users`) is read here.
    pub variables: Vec<String>,
    /// The flags.
    pub flags: Flags,
}

/// The flag vocabulary, as a bitset; [`Flags::names`] lists the set ones in this order:
/// `system eval ipc file exit multi lambda assign assign_z unparsed`.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags(u16);

impl Flags {
    /// A system command: `\cmd`, `system`, `setenv`.
    pub const SYSTEM: Flags = Flags(1);
    /// Text or names evaluated at run time: `value`, `get`, `eval`, `reval` on anything but a
    /// file, `-6!`, a symbol or string applied, handle 0.
    pub const EVAL: Flags = Flags(1 << 1);
    /// Talking to another process: `hopen`, `hclose`, a handle applied.
    pub const IPC: Flags = Flags(1 << 2);
    /// The file system: file symbols with I/O functions, `\l`, `0:`, `1:`, `2:`, `read0`,
    /// `hdel`, `key` of a path...
    pub const FILE: Flags = Flags(1 << 3);
    /// Ending the process: `exit`, `\\`.
    pub const EXIT: Flags = Flags(1 << 4);
    /// More than one statement: top-level `;` or line breaks, a leading `;`, a bracket block
    /// inside arguments.
    pub const MULTI: Flags = Flags(1 << 5);
    /// A lambda.
    pub const LAMBDA: Flags = Flags(1 << 6);
    /// A global is assigned.
    pub const ASSIGN: Flags = Flags(1 << 7);
    /// A `.z.*` name (a message handler, a timer) is assigned.
    pub const ASSIGN_Z: Flags = Flags(1 << 8);
    /// The text could not be read with certainty; a policy denies it.
    pub const UNPARSED: Flags = Flags(1 << 9);

    /// Every flag with its name, in the vocabulary's order.
    pub const ALL: [(Flags, &'static str); 10] = [
        (Flags::SYSTEM, "system"),
        (Flags::EVAL, "eval"),
        (Flags::IPC, "ipc"),
        (Flags::FILE, "file"),
        (Flags::EXIT, "exit"),
        (Flags::MULTI, "multi"),
        (Flags::LAMBDA, "lambda"),
        (Flags::ASSIGN, "assign"),
        (Flags::ASSIGN_Z, "assign_z"),
        (Flags::UNPARSED, "unparsed"),
    ];

    /// No flag.
    pub const fn empty() -> Flags {
        Flags(0)
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every flag of `other` is set here.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any flag of `other` is set here.
    pub const fn intersects(self, other: Flags) -> bool {
        self.0 & other.0 != 0
    }

    /// Sets the flags of `other`.
    pub fn insert(&mut self, other: Flags) {
        self.0 |= other.0;
    }

    /// The names of the flags set, in the vocabulary's order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Flags::ALL
            .into_iter()
            .filter(move |(flag, _)| self.contains(*flag))
            .map(|(_, name)| name)
    }

    /// The flag called `name`.
    pub fn from_name(name: &str) -> Option<Flags> {
        Flags::ALL
            .into_iter()
            .find(|(_, n)| *n == name)
            .map(|(flag, _)| flag)
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

impl std::ops::BitOrAssign for Flags {
    fn bitor_assign(&mut self, other: Flags) {
        self.0 |= other.0;
    }
}

impl fmt::Display for Flags {
    /// The names, comma-separated: `lambda,assign`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.names().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flags({self})")
    }
}

/// One item of a call list (`` (`fn;args...) `` or `("fn";args...)`), as the host reads it
/// from a q value, without this crate knowing the IPC codec.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallArg<'a> {
    /// A char vector.
    Text(&'a [u8]),
    /// A symbol atom.
    Symbol(&'a str),
    /// A function, by its source text (`{x+y}`).
    Lambda(&'a [u8]),
    /// A general list or a symbol vector, item by item.
    List(Vec<CallArg<'a>>),
    /// Any other value: numbers, temporals, tables, dictionaries...
    Other,
}

impl Facts {
    /// The facts of an unreadable text: [`Flags::UNPARSED`] and nothing else.
    pub fn unparsed() -> Facts {
        Facts {
            flags: Flags::UNPARSED,
            ..Facts::default()
        }
    }

    /// Parses `text` and gives its facts; a parse error gives [`Facts::unparsed`].
    pub fn of_text(text: &[u8]) -> Facts {
        if text.len() > crate::MAX_INPUT_BYTES {
            return Facts::unparsed();
        }
        // The tree is needed only until its facts are read, so a thread parses into the same
        // one each time, cleared rather than freed.
        let mut tree = KEPT_TREE.take().unwrap_or_else(|| Tree::with_source(b""));
        tree.reset(text);
        let (root, errors) = parse_into(&mut tree, text, 0);
        tree.root = root;
        let facts = if errors.is_empty() {
            Facts::of_tree(&tree)
        } else {
            Facts::unparsed()
        };
        if !tree.holds_more_than(MAX_KEPT_NODES, 2 * MAX_KEPT_NODES) {
            KEPT_TREE.set(Some(tree));
        }
        facts
    }

    /// The facts of a parse tree.
    pub fn of_tree(tree: &Tree) -> Facts {
        let mut walker = Walker::default();
        walker.walk(tree.root(), Mode::Expr);
        walker.finish()
    }

    /// The facts of a call list whose head is the symbol `head`: `` (`head;args...) ``.
    pub fn of_call(head: &str, args: &[CallArg<'_>]) -> Facts {
        let mut items = Vec::with_capacity(args.len() + 1);
        items.push(CallArg::Symbol(head));
        items.extend(args.iter().cloned());
        Facts::of_call_list(&items)
    }

    /// The facts of a call list with any head: a symbol names the function, text is q source
    /// that q evaluates to get the function (`("{x+y}";1;2)`, as PyKX sends), a lambda is
    /// itself.
    /// A string argument is data, unless the head evaluates it (`value`, `system`...), which
    /// its flags then say; a lambda argument is parsed for its facts.
    pub fn of_call_list(items: &[CallArg<'_>]) -> Facts {
        let Some((head, args)) = items.split_first() else {
            return Facts::default();
        };
        let mut builder = CallTree {
            tree: Tree::with_source(b""),
            ok: true,
            depth: 0,
        };
        let head = match head {
            CallArg::Symbol(name) => match Keyword::lookup(name.as_bytes()) {
                Some(keyword) => builder.leaf(Data::Keyword(keyword)),
                None => {
                    let span = builder.tree.add_text(name.as_bytes());
                    builder.leaf(Data::Name(span))
                }
            },
            CallArg::Text(text) | CallArg::Lambda(text) => builder.parse(text),
            CallArg::List(_) | CallArg::Other => {
                builder.ok = false;
                builder.leaf(Data::Null)
            }
        };
        let mut kids = vec![head];
        for arg in args {
            let node = builder.arg(arg);
            kids.push(node);
        }
        if !builder.ok {
            return Facts::unparsed();
        }
        let root = builder.list(&kids);
        builder.tree.root = root;
        Facts::of_tree(&builder.tree)
    }
}

/// The most nodes a thread keeps a tree's memory for between calls of [`Facts::of_text`].
///
/// Keeping the tree saves its three allocations and frees per query, a tenth of a short query's
/// parse. A query of a few KiB has a few thousand nodes; a tree that grew past this (a long
/// generated text) is freed instead, so an idle thread holds at most about a MiB for it.
const MAX_KEPT_NODES: usize = 16 * 1024;

thread_local! {
    /// The tree [`Facts::of_text`] parses into, between calls on this thread.
    static KEPT_TREE: std::cell::Cell<Option<Tree>> = const { std::cell::Cell::new(None) };
}

/// Builds the tree of a call list.
struct CallTree {
    tree: Tree,
    /// False once a part cannot be read.
    ok: bool,
    depth: usize,
}

impl CallTree {
    fn leaf(&mut self, data: Data) -> NodeId {
        self.push(data, 1)
    }

    fn push(&mut self, data: Data, height: u16) -> NodeId {
        // Invariant: a call list's tree is far smaller than u32::MAX nodes.
        let id = NodeId(self.tree.slots.len() as u32);
        self.tree.slots.push(Slot {
            data,
            height,
            offset: 0,
        });
        id
    }

    fn list(&mut self, kids: &[NodeId]) -> NodeId {
        let height = kids
            .iter()
            .map(|&k| self.tree.slot(k).height)
            .max()
            .unwrap_or(0)
            .saturating_add(1);
        let range = self.tree.add_kids(kids);
        self.push(Data::List(range), height)
    }

    /// q source text parsed into this tree.
    fn parse(&mut self, text: &[u8]) -> NodeId {
        if text.len() > crate::MAX_INPUT_BYTES {
            self.ok = false;
            return self.leaf(Data::Null);
        }
        let base = self.tree.add_text(text).start;
        let (root, errors) = parse_into(&mut self.tree, text, base);
        if !errors.is_empty() {
            self.ok = false;
        }
        root
    }

    fn arg(&mut self, arg: &CallArg<'_>) -> NodeId {
        match arg {
            CallArg::Text(text) => {
                let span = self.tree.add_text(text);
                self.leaf(Data::Str(span))
            }
            CallArg::Symbol(name) => {
                let span = self.tree.add_text(name.as_bytes());
                let name = self.leaf(Data::Name(span));
                let range = self.tree.add_kids(&[name]);
                self.push(Data::Vector(Type::Symbol, range), 2)
            }
            CallArg::Lambda(text) => {
                let node = self.parse(text);
                if !matches!(self.tree.slot(node).data, Data::Lambda { .. }) {
                    self.ok = false;
                }
                node
            }
            CallArg::List(items) => {
                self.depth += 1;
                if self.depth > crate::MAX_DEPTH {
                    self.ok = false;
                    self.depth -= 1;
                    return self.leaf(Data::Null);
                }
                let kids: Vec<NodeId> = items.iter().map(|item| self.arg(item)).collect();
                self.depth -= 1;
                let list = self.list(&kids);
                self.list(&[list])
            }
            CallArg::Other => self.leaf(Data::Null),
        }
    }
}

/// The arguments of an application: a view of a run of the tree's list items, so that walking
/// an application allocates nothing.
#[derive(Clone, Copy)]
struct Args<'t> {
    tree: &'t Tree,
    ids: &'t [NodeId],
}

impl<'t> Args<'t> {
    fn len(&self) -> usize {
        self.ids.len()
    }

    /// The `i`th argument; callers check the count first.
    fn at(&self, i: usize) -> Node<'t> {
        self.tree.node(self.ids[i])
    }

    fn first(&self) -> Option<Node<'t>> {
        self.ids.first().map(|&id| self.tree.node(id))
    }

    /// The arguments from the `i`th on.
    fn from(&self, i: usize) -> Args<'t> {
        Args {
            tree: self.tree,
            ids: self.ids.get(i..).unwrap_or_default(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = Node<'t>> + 't {
        let tree = self.tree;
        self.ids.iter().map(move |&id| tree.node(id))
    }
}

/// How names in an expression are read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Ordinary q: a name is a variable.
    Expr,
    /// A qSQL phrase: a name is a column.
    Phrase,
    /// The data of a functional query, which `?` and `!` evaluate as parse trees later: a name
    /// or symbol at the head of a list is a function.
    Data,
}

#[derive(Default)]
struct Walker<'t> {
    facts: Facts,
    /// The arguments and locals of the lambdas being walked, innermost last (a q lambda sees
    /// only its own).
    scopes: Vec<Vec<&'t str>>,
    /// The namespace `\d` set, for names assigned after it.
    namespace: Option<String>,
}

fn push_unique(list: &mut Vec<String>, name: &str) {
    if !list.iter().any(|n| n == name) {
        list.push(name.to_owned());
    }
}

/// The name in a quoted symbol `` ,`t ``.
fn quoted_symbol<'t>(node: Node<'t>) -> Option<&'t str> {
    // On the stored data, so that a node that is not one costs no name's UTF-8 check.
    match node.data() {
        Data::Vector(Type::Symbol, range) if range.len == 1 => node.item(0)?.name(),
        _ => None,
    }
}

/// Whether a symbol is a file handle (`` `:path ``), and not a host (`` `:host:port ``).
fn is_file_symbol(name: &str) -> bool {
    name.strip_prefix(':')
        .is_some_and(|rest| !rest.contains(':'))
}

/// The long value of an integral atom.
fn integral(node: Node<'_>) -> Option<i64> {
    match node.data() {
        Data::Atom(Atom::Long(v)) => Some(v),
        Data::Atom(Atom::Int(v)) => Some(i64::from(v)),
        Data::Atom(Atom::Short(v)) => Some(i64::from(v)),
        _ => None,
    }
}

impl<'t> Walker<'t> {
    fn finish(mut self) -> Facts {
        // Something the walk could not read with certainty (an internal function no source
        // describes, say) makes the whole text unreadable: nothing else is reported beside it, so
        // no policy grants part of a text it cannot read.
        if self.facts.flags.contains(Flags::UNPARSED) {
            return Facts::unparsed();
        }
        if !self.facts.assigned.is_empty() {
            self.facts.flags |= Flags::ASSIGN;
        }
        self.facts
    }

    fn flag(&mut self, flags: Flags) {
        self.facts.flags |= flags;
    }

    fn is_local(&self, name: &str) -> bool {
        self.scopes
            .last()
            .is_some_and(|scope| scope.contains(&name))
    }

    fn in_lambda(&self) -> bool {
        !self.scopes.is_empty()
    }

    fn function(&mut self, name: &str) {
        if let Some(keyword) = dotq_keyword(name) {
            // `.q.value` passed around is `value`.
            self.bare_keyword(keyword);
        } else if !self.is_local(name) {
            push_unique(&mut self.facts.functions, name);
        }
    }

    fn variable(&mut self, name: &str) {
        if !name.is_empty() && !self.is_local(name) {
            push_unique(&mut self.facts.variables, name);
        }
    }

    fn read(&mut self, table: &str) {
        push_unique(&mut self.facts.tables_read, table);
    }

    fn written(&mut self, table: &str) {
        push_unique(&mut self.facts.tables_written, table);
    }

    fn assigned(&mut self, name: &str) {
        let name = match &self.namespace {
            Some(ns) if !name.starts_with('.') && !self.in_lambda() => format!("{ns}.{name}"),
            _ => name.to_owned(),
        };
        if name.starts_with(".z.") {
            self.flag(Flags::ASSIGN_Z);
        }
        push_unique(&mut self.facts.assigned, &name);
    }

    // The walk matches on the stored data rather than on `Node::kind`, which checks every
    // name's UTF-8 whether or not the name counts.
    fn walk(&mut self, node: Node<'t>, mode: Mode) {
        let tree = node.tree;
        match node.data() {
            Data::Null | Data::Char(_) | Data::Str(_) | Data::Atom(_) | Data::Prim(_) => {}
            Data::Name(span) => {
                // A column in a phrase counts for nothing, unless it spells a keyword.
                let bytes = tree.bytes(span);
                if mode == Mode::Phrase && !bytes.starts_with(b".q.") {
                    return;
                }
                let name = name_str(bytes);
                if let Some(keyword) = dotq_keyword(name) {
                    self.bare_keyword(keyword);
                } else if mode != Mode::Phrase {
                    self.variable(name);
                }
            }
            Data::Keyword(keyword) => self.bare_keyword(keyword),
            Data::Lambda { .. } => self.lambda(node),
            Data::Dict(_, values) => self.walk(tree.node(values), mode),
            Data::System(span) => self.system(tree.bytes(span)),
            Data::Vector(Type::Symbol, range) if range.len >= 2 => self.apply(node, mode),
            Data::Vector(..) => {}
            Data::List(range) => match range.len {
                0 => {}
                1 => self.quoted(tree.node(tree.range(range)[0])),
                _ => self.apply(node, mode),
            },
        }
    }

    /// A quoted constant: data, but a lambda inside it can still be applied.
    fn quoted(&mut self, node: Node<'t>) {
        match node.data() {
            Data::Lambda { .. } => self.lambda(node),
            Data::List(_) => {
                for item in node.items() {
                    self.quoted(item);
                }
            }
            _ => {}
        }
    }

    /// A keyword used as a value, not applied here: it may be applied to anything later.
    fn bare_keyword(&mut self, keyword: Keyword) {
        match keyword {
            kw::VALUE | kw::GET | kw::EVAL | kw::REVAL | kw::SET | kw::INSERT | kw::UPSERT => {
                self.flag(Flags::EVAL);
            }
            kw::SYSTEM | kw::SETENV => self.flag(Flags::SYSTEM),
            kw::EXIT => self.flag(Flags::EXIT),
            kw::HOPEN | kw::HCLOSE => self.flag(Flags::IPC),
            kw::READ0
            | kw::READ1
            | kw::HDEL
            | kw::HCOUNT
            | kw::SAVE
            | kw::LOAD
            | kw::RSAVE
            | kw::RLOAD
            | kw::DSAVE => self.flag(Flags::FILE),
            _ => {}
        }
    }

    fn lambda(&mut self, node: Node<'t>) {
        self.flag(Flags::LAMBDA);
        let mut scope: Vec<&'t str> = node.lambda_params().collect();
        for statement in node.lambda_body() {
            collect_locals(statement, &mut scope);
        }
        self.scopes.push(scope);
        for statement in node.lambda_body() {
            self.walk(statement, Mode::Expr);
        }
        self.scopes.pop();
    }

    /// `\cmd args`.
    fn system(&mut self, text: &[u8]) {
        self.flag(Flags::SYSTEM);
        let text = String::from_utf8_lossy(text);
        let (command, arg) = match text.split_once(|c: char| c.is_ascii_whitespace()) {
            Some((command, arg)) => (command, arg.trim()),
            None => (text.trim(), ""),
        };
        if command.starts_with('\\') {
            self.flag(Flags::EXIT);
            return;
        }
        match command {
            "l" => self.flag(Flags::FILE),
            "d" => {
                self.namespace = (arg.starts_with('.') && arg != ".").then(|| arg.to_owned());
            }
            "x" if !arg.is_empty() => self.assigned(arg),
            _ => {}
        }
    }

    /// A list of two or more items: the first applied to the others.
    fn apply(&mut self, node: Node<'t>, mode: Mode) {
        let ids = node.item_ids();
        let Some((&head, rest)) = ids.split_first() else {
            return;
        };
        let head = node.tree.node(head);
        let args = Args {
            tree: node.tree,
            ids: rest,
        };
        match head.data() {
            Data::Char(b';') => {
                self.flag(Flags::MULTI);
                self.walk_all(args, mode);
            }
            Data::Char(_) | Data::Str(_) => {
                // A string applied: `"k" "..."` evaluates text.
                self.flag(Flags::EVAL);
                self.walk_all(args, mode);
            }
            Data::Name(span) => {
                let name = name_str(node.tree.bytes(span));
                match dotq_keyword(name) {
                    // `.q.value "..."` is `value "..."`.
                    Some(keyword) => self.keyword(keyword, args, mode),
                    None => {
                        self.function(name);
                        self.walk_all(args, mode);
                    }
                }
            }
            Data::Atom(_) if integral(head).is_some() => {
                // A handle applied: 0 is this process (`value`), others are connections.
                if integral(head) == Some(0) {
                    self.flag(Flags::EVAL);
                } else {
                    self.flag(Flags::IPC);
                }
                self.walk_all(args, mode);
            }
            Data::Keyword(keyword) => self.keyword(keyword, args, mode),
            Data::Prim(p) => self.primitive(p, args, mode),
            _ => {
                if quoted_symbol(head).is_some_and(|n| n.starts_with(':')) {
                    // `` `:host:port "..." ``: a one-shot message to another process.
                    self.flag(Flags::IPC);
                } else if let Some(name) = quoted_symbol(head) {
                    // A symbol applied: `` `f[5;3] `` looks `f` up at run time.
                    self.function(name);
                    self.flag(Flags::EVAL);
                } else {
                    if is_neg_applied(head) {
                        // `neg[h] "..."`: an async message on a handle.
                        self.flag(Flags::IPC);
                    }
                    self.walk(head, mode);
                }
                self.walk_all(args, mode);
            }
        }
    }

    fn walk_all(&mut self, args: Args<'t>, mode: Mode) {
        for node in args.iter() {
            self.walk(node, mode);
        }
    }

    fn walk_nodes(&mut self, nodes: &[Node<'t>], mode: Mode) {
        for &node in nodes {
            self.walk(node, mode);
        }
    }

    /// A table operand: a name or a symbol is a table read (and written, by name, where
    /// `write_by_name`); anything else is walked.
    fn table(&mut self, node: Node<'t>, write_by_name: bool, mode: Mode) {
        if let Some(name) = node.name() {
            if !self.is_local(name) && mode != Mode::Phrase {
                self.read(name);
            }
        } else if let Some(name) = quoted_symbol(node) {
            self.read(name);
            if write_by_name {
                self.written(name);
            }
            if is_file_symbol(name) {
                self.flag(Flags::FILE);
            }
        } else {
            self.walk(node, mode);
        }
    }

    fn keyword(&mut self, keyword: Keyword, args: Args<'t>, mode: Mode) {
        let first = args.first();
        let first_symbol = first.and_then(quoted_symbol);
        match keyword {
            kw::VALUE | kw::GET | kw::EVAL | kw::REVAL => {
                let file = matches!(keyword, kw::VALUE | kw::GET)
                    && args.len() == 1
                    && first_symbol.is_some_and(is_file_symbol);
                if file {
                    self.flag(Flags::FILE);
                } else {
                    self.flag(Flags::EVAL);
                }
                for arg in args.iter() {
                    // A call list handed to `value` is applied.
                    match arg.unquote() {
                        Some(inner)
                            if matches!(inner.kind(), NodeKind::List) && inner.len() >= 2 =>
                        {
                            self.apply(inner, Mode::Expr);
                        }
                        _ => self.walk(arg, mode),
                    }
                }
                return;
            }
            kw::SYSTEM | kw::SETENV => self.flag(Flags::SYSTEM),
            kw::EXIT => self.flag(Flags::EXIT),
            kw::HOPEN => self.open(first),
            kw::HCLOSE => self.flag(Flags::IPC),
            kw::READ0
            | kw::READ1
            | kw::HDEL
            | kw::HCOUNT
            | kw::SAVE
            | kw::LOAD
            | kw::RSAVE
            | kw::RLOAD
            | kw::DSAVE => self.flag(Flags::FILE),
            kw::KEY if first_symbol.is_some_and(is_file_symbol) => self.flag(Flags::FILE),
            kw::SET => {
                match first_symbol {
                    Some(name) if is_file_symbol(name) => self.flag(Flags::FILE),
                    Some(name) => self.assigned(name),
                    None => {
                        // A name computed at run time.
                        self.flag(Flags::EVAL);
                        self.facts.flags |= Flags::ASSIGN;
                        if let Some(first) = first {
                            self.walk(first, mode);
                        }
                    }
                }
                self.walk_all(args.from(1), mode);
                return;
            }
            kw::INSERT | kw::UPSERT => {
                if let Some(first) = first {
                    match first_symbol {
                        Some(name) => {
                            self.written(name);
                            if is_file_symbol(name) {
                                self.flag(Flags::FILE);
                            }
                        }
                        None => self.table(first, false, mode),
                    }
                }
                self.walk_all(args.from(1), mode);
                return;
            }
            kw::LJ | kw::LJF | kw::IJ | kw::IJF | kw::UJ | kw::UJF | kw::PJ => {
                for (i, arg) in args.iter().enumerate() {
                    self.table(arg, i == 0, mode);
                }
                return;
            }
            kw::AJ | kw::AJ0 | kw::AJF | kw::AJF0 | kw::EJ => {
                for (i, arg) in args.iter().enumerate() {
                    if i == 1 || i == 2 {
                        self.table(arg, false, mode);
                    } else {
                        self.walk(arg, mode);
                    }
                }
                return;
            }
            kw::WJ | kw::WJ1 => {
                for (i, arg) in args.iter().enumerate() {
                    match i {
                        2 => self.table(arg, false, mode),
                        3 => match enlist_items(arg) {
                            Some(items) if !items.is_empty() => {
                                self.table(items[0], false, mode);
                                self.walk_nodes(&items[1..], mode);
                            }
                            _ => self.walk(arg, mode),
                        },
                        _ => self.walk(arg, mode),
                    }
                }
                return;
            }
            kw::FBY => {
                if let Some(items) = first.and_then(enlist_items)
                    && let Some(name) = items.first().and_then(Node::name)
                {
                    self.function(name);
                }
            }
            kw::EACH | kw::PEACH | kw::OVER | kw::SCAN | kw::PRIOR => {
                if let Some(name) = first.and_then(|f| f.name()) {
                    self.function(name);
                } else if let Some(name) = first_symbol {
                    self.function(name);
                    self.flag(Flags::EVAL);
                }
            }
            // `(f;x)` written as data: a parse tree applying `f`, with at least one argument.
            kw::ENLIST if mode == Mode::Data && args.len() >= 2 => {
                if let Some(name) = first.and_then(|f| f.name()) {
                    self.function(name);
                } else if let Some(name) = first_symbol {
                    self.function(name);
                    self.flag(Flags::EVAL);
                }
            }
            _ => {}
        }
        self.walk_all(args, mode);
    }

    fn primitive(&mut self, p: &'static str, args: Args<'t>, mode: Mode) {
        match (p, args.len()) {
            (":", 2) => self.assign(args.at(0), args.at(1), false, mode),
            ("::", 2) => self.assign(args.at(0), args.at(1), true, mode),
            (p, 2) if p.len() == 2 && p.ends_with(':') && !p.starts_with(['0', '1', '2', ':']) => {
                self.assign(args.at(0), args.at(1), false, mode);
            }
            ("?" | "!", n) if n >= 4 => self.query(p == "!", args),
            ("?", 3) => {
                self.table(args.at(0), false, mode);
                self.walk_all(args.from(1), mode);
            }
            ("!", 2) if integral(args.at(0)).is_some_and(|n| n < 0 && n != i64::MIN) => {
                self.internal(integral(args.at(0)).unwrap_or_default());
                self.walk(args.at(1), mode);
            }
            ("." | "@", n) if n >= 2 => self.amend(args, mode),
            // Unary forms applied, for the keywords that share them (q-parse.md §6).
            (".:", 1) => {
                if quoted_symbol(args.at(0)).is_some_and(is_file_symbol) {
                    self.flag(Flags::FILE);
                } else {
                    self.flag(Flags::EVAL);
                }
                self.walk(args.at(0), mode);
            }
            ("~:" | "!:", 1) => {
                // `hdel` and `key` of a path.
                if quoted_symbol(args.at(0)).is_some_and(is_file_symbol) {
                    self.flag(Flags::FILE);
                }
                self.walk(args.at(0), mode);
            }
            ("<:" | ">:", 1) if quoted_symbol(args.at(0)).is_some() => {
                // `hopen` and `hclose` in older versions.
                self.open(Some(args.at(0)));
            }
            ("0:" | "1:" | "2:" | "0::" | "1::" | "2::", _) => {
                self.flag(Flags::FILE);
                self.walk_all(args, mode);
            }
            ("'" | "/" | "\\" | "':" | "/:" | "\\:", _) => {
                if let Some(first) = args.first() {
                    if let Some(name) = first.name() {
                        self.function(name);
                    } else if let Some(name) = quoted_symbol(first) {
                        self.function(name);
                        self.flag(Flags::EVAL);
                    }
                }
                self.walk_all(args, mode);
            }
            _ => self.walk_all(args, mode),
        }
    }

    /// `hopen x`: a file for a file symbol, a connection for a host or a port; a value only known
    /// at run time may be either (a call list's non-symbol value is a port or a handle).
    fn open(&mut self, arg: Option<Node<'t>>) {
        let symbol = arg.and_then(quoted_symbol);
        let number =
            arg.is_some_and(|a| integral(a).is_some() || matches!(a.kind(), NodeKind::Null));
        match symbol {
            Some(name) if is_file_symbol(name) => self.flag(Flags::FILE),
            Some(_) => self.flag(Flags::IPC),
            None if number => self.flag(Flags::IPC),
            None => self.flag(Flags::IPC | Flags::FILE),
        }
    }

    /// `-n!x`: q's internal functions, by what they can do.
    fn internal(&mut self, n: i64) {
        match -n {
            6 | 24 => self.flag(Flags::EVAL),
            11 => self.flag(Flags::EVAL | Flags::FILE),
            7 | 17 | 19 | 21 | 23 => self.flag(Flags::FILE),
            25 | 30 | 38 => self.flag(Flags::IPC),
            1..=5 | 8..=10 | 12..=16 | 18 | 20 | 22 | 26 | 27 | 29 | 31 | 33 | 35..=37 => {}
            // An internal function the sources do not describe: when in doubt, deny.
            _ => self.flag(Flags::UNPARSED),
        }
    }

    /// `target:value`, `target::value`, `target+:value`.
    fn assign(&mut self, target: Node<'t>, value: Node<'t>, global: bool, mode: Mode) {
        self.assign_target(target, global, mode);
        self.walk(value, mode);
    }

    fn assign_target(&mut self, target: Node<'t>, global: bool, mode: Mode) {
        if let Some(name) = target.name() {
            self.assign_name(name, global);
            return;
        }
        let is_application = matches!(target.kind(), NodeKind::List)
            || matches!(target.kind(), NodeKind::Vector(Type::Symbol));
        if is_application && target.len() >= 2 {
            let mut items = target.items();
            if let Some(head) = items.next() {
                if let Some(name) = head.name() {
                    // `a[i]:v`, `d[`k]:v`: in a lambda, a global unless `a` is local.
                    self.assign_name(name, global || !self.is_local(name));
                    for index in items {
                        self.walk(index, mode);
                    }
                    return;
                }
                if matches!(head.kind(), NodeKind::Keyword(k) if k == kw::ENLIST) {
                    // `(a;b):v`, a pattern.
                    for item in items {
                        self.assign_target(item, global, mode);
                    }
                    return;
                }
            }
        }
        self.walk(target, mode);
    }

    fn assign_name(&mut self, name: &str, global: bool) {
        if !self.in_lambda() || name.contains('.') || (global && !self.is_local(name)) {
            self.assigned(name);
        }
    }

    /// `?[t;c;b;a]` and `![t;c;b;a]`, from a template or written functionally.
    fn query(&mut self, update: bool, args: Args<'t>) {
        self.table(args.at(0), update, Mode::Expr);
        let (c, b, a) = (args.at(1), args.at(2), args.at(3));
        // The constraints: a template's are quoted parse trees; a functional query's are an
        // expression building them.
        match c.unquote() {
            Some(constraints) => match constraints.data() {
                Data::List(_) | Data::Vector(..) => {
                    for constraint in constraints.items() {
                        self.walk(constraint, Mode::Phrase);
                    }
                }
                _ => self.walk(constraints, Mode::Phrase),
            },
            None => self.walk(c, Mode::Data),
        }
        for part in [b, a] {
            match part.data() {
                Data::Dict(_, values) => self.phrase_values(part.tree.node(values)),
                Data::Atom(_) => {}
                _ if part.is_quote() => {
                    if let Some(item) = part.unquote() {
                        self.phrase_values_of(item);
                    }
                }
                _ if part.is_empty() => {}
                _ => self.walk(part, Mode::Data),
            }
        }
        for extra in args.from(4).iter() {
            match extra.unquote() {
                Some(order) => self.walk(order, Mode::Phrase),
                None => self.walk(extra, Mode::Expr),
            }
        }
    }

    /// The values of a phrase dictionary: a list of column expressions.
    fn phrase_values(&mut self, values: Node<'t>) {
        match values.data() {
            Data::List(_) | Data::Vector(..) => {
                for value in values.items() {
                    self.walk(value, Mode::Phrase);
                }
            }
            _ => self.walk(values, Mode::Phrase),
        }
    }

    /// One quoted column expression, or a quoted list of column names.
    fn phrase_values_of(&mut self, item: Node<'t>) {
        if matches!(item.data(), Data::Vector(Type::Symbol, _)) {
            return;
        }
        self.walk(item, Mode::Phrase);
    }

    /// `.[f;args]`, `@[f;i;g]`, and amend by name: `@[`.;`a;:;1]`, `.[`t;();,;rows]`.
    fn amend(&mut self, args: Args<'t>, mode: Mode) {
        let first = args.at(0);
        if let Some(name) = quoted_symbol(first) {
            if args.len() == 2 {
                // Applying a function by name.
                self.function(name);
                self.flag(Flags::EVAL);
            } else {
                let key = quoted_symbol(args.at(1));
                let target = match key {
                    Some(key) if name == "." => key.to_owned(),
                    Some(key) if name.starts_with('.') && !name[1..].contains('.') => {
                        format!("{name}.{key}")
                    }
                    _ => name.to_owned(),
                };
                if is_file_symbol(name) {
                    self.flag(Flags::FILE);
                }
                self.assigned(&target);
            }
        } else if let Some(name) = first.name() {
            if args.len() <= 3 {
                self.function(name);
            } else {
                self.variable(name);
            }
        } else {
            self.walk(first, mode);
        }
        for (i, arg) in args.iter().enumerate().skip(1) {
            match arg.name() {
                // The function an amend or a trap applies.
                Some(name) if i == 2 => self.function(name),
                _ => self.walk(arg, mode),
            }
        }
    }
}

/// The keyword a `.q.` name spells (`.q.value` is `value`).
fn dotq_keyword(name: &str) -> Option<Keyword> {
    Keyword::lookup(name.strip_prefix(".q.")?.as_bytes())
}

/// The items after `enlist` of a list-notation node `(enlist;a;b)`.
fn enlist_items(node: Node<'_>) -> Option<Vec<Node<'_>>> {
    if !matches!(node.kind(), NodeKind::List) {
        return None;
    }
    let mut items = node.items();
    match items.next()?.kind() {
        NodeKind::Keyword(k) if k == kw::ENLIST => Some(items.collect()),
        _ => None,
    }
}

/// Whether a node is `neg` applied to something: `(-:;h)`.
fn is_neg_applied(node: Node<'_>) -> bool {
    matches!(node.kind(), NodeKind::List)
        && node.len() == 2
        && node.item(0).is_some_and(|head| match head.kind() {
            NodeKind::Keyword(k) => k == kw::NEG,
            NodeKind::Primitive(p) => p == "-:",
            _ => false,
        })
}

/// Adds to `scope` the names a lambda's statement assigns with `:` (locals, in q), not looking
/// into nested lambdas.
fn collect_locals<'t>(node: Node<'t>, scope: &mut Vec<&'t str>) {
    let is_list = matches!(node.kind(), NodeKind::List);
    if !is_list || node.len() < 2 {
        return;
    }
    let mut items = node.items();
    let head = items.next();
    let local_assign = head.is_some_and(|h| match h.kind() {
        NodeKind::Primitive(p) => {
            p == ":" || (p.len() == 2 && p.ends_with(':') && !p.starts_with(['0', '1', '2', ':']))
        }
        _ => false,
    });
    if local_assign
        && node.len() == 3
        && let Some(name) = node.item(1).and_then(|t| t.name())
        && !name.contains('.')
        && !scope.contains(&name)
    {
        scope.push(name);
    }
    for item in node.items() {
        collect_locals(item, scope);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `expect` is `tables_read | tables_written | functions | assigned | flags`, each
    /// comma-separated, `-` for none.
    #[track_caller]
    fn check(input: &str, expect: &str) {
        let facts = Facts::of_text(input.as_bytes());
        assert_eq!(render(&facts), expect, "{input:?}");
    }

    fn render(facts: &Facts) -> String {
        let list = |items: &[String]| {
            if items.is_empty() {
                "-".to_owned()
            } else {
                items.join(",")
            }
        };
        let flags = if facts.flags.is_empty() {
            "-".to_owned()
        } else {
            facts.flags.to_string()
        };
        format!(
            "{} | {} | {} | {} | {}",
            list(&facts.tables_read),
            list(&facts.tables_written),
            list(&facts.functions),
            list(&facts.assigned),
            flags
        )
    }

    #[test]
    fn tables_read() {
        check("select from trade", "trade | - | - | - | -");
        check(
            "select from (select from a) where x in exec y from b",
            "a,b | - | - | - | -",
        );
        check("exec sym from `trades", "trades | - | - | - | -");
        check("t lj `kt", "t,kt | - | - | - | -");
        check("`t lj kt", "t,kt | t | - | - | -");
        check("ej[`k;t1;select from t2]", "t1,t2 | - | - | - | -");
        check("t upsert x", "t | - | - | - | -");
        check("?[t;i;p]", "t | - | - | - | -");
        check("select from `:db/t", ":db/t | - | - | - | file");
        check("{[t] select from t}", "- | - | - | - | lambda");
    }

    #[test]
    fn tables_written() {
        check("`t upsert x", "- | t | - | - | -");
        check("upsert[`t;x]", "- | t | - | - | -");
        check("update a:1 from `t where b", "t | t | - | - | -");
        check("delete from `t", "t | t | - | - | -");
        check("`:db/t/ upsert x", "- | :db/t/ | - | - | file");
        check("![t;();0b;`a`b]", "t | - | - | - | -");
    }

    #[test]
    fn functions() {
        check("f x", "- | - | f | - | -");
        check("f g h x", "- | - | f,g,h | - | -");
        check("x f/ y", "- | - | f | - | -");
        check("f/[1;x]", "- | - | f | - | -");
        check("f peach x", "- | - | f | - | -");
        check("(myagg;price) fby sym", "- | - | myagg | - | -");
        check("select f x from t", "t | - | f | - | -");
        check("select from t where g[a]>0", "t | - | g | - | -");
        check("{f x}", "- | - | f | - | lambda");
        check("{[f] f x}", "- | - | - | - | lambda");
        check("{a:g 1;a x}", "- | - | g | - | lambda");
        check("`f . 5 3", "- | - | f | - | eval");
        check("@[f;x;g]", "- | - | f,g | - | -");
        check("count x", "- | - | - | - | -");
        check("?[t;enlist(`myf;`c);0b;()]", "t | - | myf | - | eval");
        check("?[t;();0b;(enlist`c)!enlist(g;`c)]", "t | - | g | - | -");
    }

    #[test]
    fn assigned() {
        check("a:1", "- | - | - | a | assign");
        check("a::1", "- | - | - | a | assign");
        check("a,:1", "- | - | - | a | assign");
        check("(a;b):1 2", "- | - | - | a,b | assign");
        check("a[1;2]:3", "- | - | - | a | assign");
        check("{a:1}", "- | - | - | - | lambda");
        check("{.a.b:1}", "- | - | - | .a.b | lambda,assign");
        check("{a[1]:2}", "- | - | - | a | lambda,assign");
        check("{a:1;a[1]:2}", "- | - | - | - | lambda");
        check("\\d .ns\na:1", "- | - | - | .ns.a | system,multi,assign");
        check("\\x .z.pg", "- | - | - | .z.pg | system,assign,assign_z");
        check(
            "@[`.z;`pg;:;{x}]",
            "- | - | - | .z.pg | lambda,assign,assign_z",
        );
        check("(`$\"a\") set 1", "- | - | - | - | eval,assign");
        check("select .z.pg:1 from t", "- | - | - | - | unparsed");
        check("t:select a:1 from u", "u | - | - | t | assign");
    }

    #[test]
    fn flags() {
        check("system \"ls\"", "- | - | - | - | system");
        check("\\\\", "- | - | - | - | system,exit");
        check("\\l /data/sp.q", "- | - | - | - | system,file");
        check("0 \"a:1\"", "- | - | - | - | eval");
        check("(.)\"a:1\"", "- | - | - | - | eval");
        check("-6!x", "- | - | - | - | eval");
        check("-999!x", "- | - | - | - | unparsed");
        // Found by the `q_parse` fuzz target: an unknown internal function beside other facts
        // (here `multi`) leaves only `unparsed`.
        check("-777!1:;t:1", "- | - | - | - | unparsed");
        check("f[x];-999!trade", "- | - | - | - | unparsed");
        check("0N!x", "- | - | - | - | -");
        check("f ::", "- | - | f | - | -");
        check("hclose h", "- | - | - | - | ipc");
        check(".q.system \"ls\"", "- | - | - | - | system");
        check("@[.q.value;\"a:1\";::]", "- | - | - | - | eval");
        check(".q.foo 1", "- | - | .q.foo | - | -");
        check("h \"query\"", "- | - | h | - | -");
        check("neg[h] \"query\"", "- | - | - | - | ipc");
        check("5 \"query\"", "- | - | - | - | ipc");
        check("`:host:5001 \"2+2\"", "- | - | - | - | ipc");
        check("hopen x", "- | - | - | - | ipc,file");
        check("hopen `:data.bin", "- | - | - | - | file");
        check("key `:/etc", "- | - | - | - | file");
        check("key d", "- | - | - | - | -");
        check("`:f 1: 0x00", "- | - | - | - | file");
        check("`a 2: (`f;1)", "- | - | - | - | file");
        check("value each x", "- | - | - | - | eval");
        check("\"k\" \"2+2\"", "- | - | - | - | eval");
        check("a;b", "- | - | - | - | multi");
        check("s)select * from t", "- | - | - | - | unparsed");
        check("+x", "- | - | - | - | unparsed");
    }

    #[test]
    fn bypasses() {
        // A leading `;` hides nothing.
        check(";;value \"\\\\\\\\\"", "- | - | - | - | eval,multi");
        // Side effects inside brackets are found in every argument.
        check("f[[g[`x];`y];1]", "- | - | f,g | - | multi");
        check(
            "f[.z.pg:{value x};1]",
            "- | - | f | .z.pg | eval,lambda,assign,assign_z",
        );
        // A `.z.pg` reassignment hidden in a select.
        check(
            "select from t where 0<count .z.pg::{value x}",
            "t | - | - | .z.pg | eval,lambda,assign,assign_z",
        );
        check(
            "select a:(.z.ps:{x}) from t",
            "t | - | - | .z.ps | lambda,assign,assign_z",
        );
        check("k)!10", "- | - | - | - | unparsed");
        check("0\"\\\\\\\\\"", "- | - | - | - | eval");
        check("value\"exit 0\"", "- | - | - | - | eval");
        check("{`a set 1}[`]", "- | - | - | a | lambda,assign");
        check("exec f from t", "t | - | - | - | -");
    }

    #[test]
    fn the_kept_tree_carries_nothing_over() {
        // `of_text` parses into a tree kept between calls: each call must see only its own text,
        // after a longer text, a broken one and one with made-up column names.
        let texts = [
            "select a, a from t where b in `x`y",
            "f[",
            "{g x}",
            "select from u",
            "\\d .ns\na:1",
            "h \"x\"",
        ];
        for _ in 0..2 {
            for text in texts {
                let fresh = match crate::parse(text.as_bytes()) {
                    Ok(tree) => Facts::of_tree(&tree),
                    Err(_) => Facts::unparsed(),
                };
                assert_eq!(Facts::of_text(text.as_bytes()), fresh, "{text:?}");
            }
        }
    }

    #[track_caller]
    fn check_call(items: &[CallArg<'_>], expect: &str) {
        assert_eq!(render(&Facts::of_call_list(items)), expect, "{items:?}");
    }

    #[test]
    fn call_lists() {
        use CallArg::{Lambda, List, Other, Symbol, Text};
        check_call(&[Symbol("f"), Other], "- | - | f | - | -");
        check_call(&[Symbol("f"), Text(b"a:1")], "- | - | f | - | -");
        check_call(&[Symbol("value"), Text(b"a:1")], "- | - | - | - | eval");
        check_call(&[Symbol("eval"), Other], "- | - | - | - | eval");
        check_call(&[Symbol("system"), Text(b"ls")], "- | - | - | - | system");
        check_call(
            &[Symbol("set"), Symbol("a"), Other],
            "- | - | - | a | assign",
        );
        check_call(
            &[Symbol("set"), Symbol(".z.pg"), Lambda(b"{value x}")],
            "- | - | - | .z.pg | eval,lambda,assign,assign_z",
        );
        check_call(&[Symbol("insert"), Symbol("t"), Other], "- | t | - | - | -");
        check_call(&[Symbol("upsert"), Symbol("t"), Other], "- | t | - | - | -");
        check_call(&[Symbol("hopen"), Other], "- | - | - | - | ipc");
        check_call(&[Symbol("exit"), Other], "- | - | - | - | exit");
        check_call(&[Text(b"{x+y}"), Other, Other], "- | - | - | - | lambda");
        check_call(&[Text(b"f"), Other], "- | - | f | - | -");
        check_call(&[Text(b"{exit x}"), Other], "- | - | - | - | exit,lambda");
        check_call(&[Text(b"k)!1"), Other], "- | - | - | - | unparsed");
        check_call(&[Symbol("f"), Lambda(b"{g x}")], "- | - | f,g | - | lambda");
        check_call(
            &[Symbol("f"), Lambda(b"not a lambda")],
            "- | - | - | - | unparsed",
        );
        check_call(
            &[Symbol("value"), List(vec![Symbol("g"), Other])],
            "- | - | g | - | eval",
        );
        check_call(
            &[Symbol("f"), List(vec![Lambda(b"{system x}")])],
            "- | - | f | - | system,lambda",
        );
        check_call(&[Other, Other], "- | - | - | - | unparsed");
        assert_eq!(
            Facts::of_call("f", &[Other]),
            Facts::of_call_list(&[Symbol("f"), Other])
        );
    }

    #[test]
    fn flag_names() {
        let flags = Flags::ASSIGN | Flags::SYSTEM | Flags::UNPARSED;
        assert_eq!(
            flags.names().collect::<Vec<_>>(),
            ["system", "assign", "unparsed"]
        );
        assert_eq!(flags.to_string(), "system,assign,unparsed");
        assert_eq!(Flags::from_name("assign_z"), Some(Flags::ASSIGN_Z));
        assert_eq!(Flags::from_name("nope"), None);
        assert!(flags.contains(Flags::SYSTEM | Flags::ASSIGN));
        assert!(!flags.contains(Flags::SYSTEM | Flags::EVAL));
        assert!(flags.intersects(Flags::EVAL | Flags::SYSTEM));
        assert!(Flags::empty().is_empty());
    }
}
