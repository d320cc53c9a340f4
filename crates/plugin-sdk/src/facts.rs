//! Query facts for policies: what a message reads, writes, calls and assigns, and its flags
//! ([`Facts`], [`Flags`], from `qgate-q`), with the questions a policy asks of them
//! ([`FactsExt`]).
//!
//! In a plugin the host parses each message once per chain, on the first ask
//! ([`MessageCtx::facts`](crate::MessageCtx::facts)); off wasm the SDK computes the same facts
//! with `qgate-q`, reading a message as the host does, so policies are unit-tested natively.

use qgate_ipc::{ValueView, type_code};
use qgate_q::CallArg;
pub use qgate_q::{Facts, Flags};

use crate::bindings::qgate::plugin::types::{self, QueryFlags};

/// The questions a policy asks of a message's facts.
///
/// ```
/// use qgate_plugin_sdk::facts::{Facts, FactsExt, Flags};
///
/// let facts = Facts::of_text(b"select from trade where sym=`AAPL");
/// assert!(facts.reads_only(&["trade", "quote"]));
/// assert!(facts.writes_nothing());
/// assert!(facts.calls_only(&[]));
/// assert!(!facts.has_any(Flags::SYSTEM | Flags::EVAL | Flags::UNPARSED));
///
/// let facts = Facts::of_text(b"select from trade where 0<count value\"\\\\ls\"");
/// assert!(facts.has_any(Flags::EVAL));
/// ```
pub trait FactsExt {
    /// Whether every table read and every bare variable read is one of `tables`.
    fn reads_only(&self, tables: &[&str]) -> bool;
    /// Whether no table is written and no global assigned.
    fn writes_nothing(&self) -> bool;
    /// Whether every user function called is one of `functions`.
    fn calls_only(&self, functions: &[&str]) -> bool;
    /// Whether any flag of `flags` is set.
    fn has_any(&self, flags: Flags) -> bool;
}

impl FactsExt for Facts {
    fn reads_only(&self, tables: &[&str]) -> bool {
        let allowed = |name: &String| tables.contains(&name.as_str());
        self.tables_read.iter().all(allowed) && self.variables.iter().all(allowed)
    }

    fn writes_nothing(&self) -> bool {
        self.tables_written.is_empty() && self.assigned.is_empty()
    }

    fn calls_only(&self, functions: &[&str]) -> bool {
        self.functions
            .iter()
            .all(|name| functions.contains(&name.as_str()))
    }

    fn has_any(&self, flags: Flags) -> bool {
        self.flags.intersects(flags)
    }
}

/// The shape of a free-text query: its parse tree with literal values replaced by their types
/// (`qgate_q::shape`), so that the same query with other values has the same shape; `None` when
/// the text does not parse. The text is parsed here, in the guest.
///
/// ```
/// use qgate_plugin_sdk::facts::shape;
///
/// assert_eq!(shape(b"select from t where x>1"), shape(b"select from t where x>99"));
/// assert_eq!(shape(b"k)1"), None);
/// ```
pub fn shape(text: &[u8]) -> Option<String> {
    qgate_q::parse(text).ok().map(|tree| qgate_q::shape(&tree))
}

/// Each WIT flag with the parser's.
const FLAGS: [(QueryFlags, Flags); 10] = [
    (QueryFlags::SYSTEM, Flags::SYSTEM),
    (QueryFlags::EVAL, Flags::EVAL),
    (QueryFlags::IPC, Flags::IPC),
    (QueryFlags::FILE, Flags::FILE),
    (QueryFlags::EXIT, Flags::EXIT),
    (QueryFlags::MULTI, Flags::MULTI),
    (QueryFlags::LAMBDA, Flags::LAMBDA),
    (QueryFlags::ASSIGN, Flags::ASSIGN),
    (QueryFlags::ASSIGN_Z, Flags::ASSIGN_Z),
    (QueryFlags::UNPARSED, Flags::UNPARSED),
];

/// The parser's facts of the host's record.
pub(crate) fn from_wit(facts: types::Facts) -> Facts {
    let mut flags = Flags::empty();
    for (wit, flag) in FLAGS {
        if facts.flags.contains(wit) {
            flags |= flag;
        }
    }
    Facts {
        tables_read: facts.tables_read,
        tables_written: facts.tables_written,
        functions: facts.functions,
        assigned: facts.assigned,
        variables: facts.variables,
        flags,
    }
}

/// The facts of a message, read as the host reads it (`crates/host/src/facts.rs`): a string is
/// parsed as q, a general list is read as a call list, a symbol names a variable, any other
/// value has none.
pub(crate) fn of_view(view: ValueView<'_>) -> Facts {
    if let Some(text) = view.string() {
        return Facts::of_text(text);
    }
    if view.is_list() {
        return match call_arg(view, 0) {
            Some(CallArg::List(items)) => Facts::of_call_list(&items),
            _ => Facts::unparsed(),
        };
    }
    if let Some(name) = view.symbol() {
        return Facts::of_text(name);
    }
    Facts::default()
}

/// An item of a call list; `None` when it cannot be read with certainty (a symbol that is not
/// UTF-8, a list nested deeper than [`qgate_q::MAX_DEPTH`]).
fn call_arg(view: ValueView<'_>, depth: usize) -> Option<CallArg<'_>> {
    if depth > qgate_q::MAX_DEPTH {
        return None;
    }
    if let Some(text) = view.string() {
        return Some(CallArg::Text(text));
    }
    if let Some(name) = view.symbol() {
        return std::str::from_utf8(name).ok().map(CallArg::Symbol);
    }
    if view.type_code() == type_code::LAMBDA {
        // A lambda is its context name, a NUL, then its source as a char vector.
        let rest = view.as_bytes().get(1..)?;
        let source = rest.get(rest.iter().position(|&b| b == 0)? + 1..)?;
        let source = ValueView::new(source, view.endian()).ok()?.string()?;
        return Some(CallArg::Lambda(source));
    }
    // A list whose items cannot all be read (too deep for the view to skip) is not read short.
    if let Some(items) = view.items() {
        let items = items
            .map(|item| call_arg(item, depth + 1))
            .collect::<Option<Vec<_>>>()?;
        return (Some(items.len()) == view.count()).then_some(CallArg::List(items));
    }
    if let Some(names) = view.symbols() {
        let names = names
            .map(|name| std::str::from_utf8(name).ok().map(CallArg::Symbol))
            .collect::<Option<Vec<_>>>()?;
        return (Some(names.len()) == view.count()).then_some(CallArg::List(names));
    }
    Some(CallArg::Other)
}

#[cfg(test)]
mod tests {
    use qgate_ipc::{Endian, Function, K};

    use super::*;

    fn facts(value: &K) -> Facts {
        let mut body = Vec::new();
        let encoded = qgate_ipc::encode(value, &mut body);
        assert!(encoded.is_ok(), "{encoded:?}");
        of_view(ValueView::trusted(&body, Endian::Little))
    }

    #[test]
    fn messages_are_read_as_the_host_reads_them() {
        assert_eq!(facts(&K::string("select from t")).tables_read, ["t"]);
        let call = K::list(vec![K::symbol("value"), K::string("exit 0")]);
        assert_eq!(facts(&call).flags, Flags::EVAL);
        let lambda = K::Function(Function::Lambda {
            context: Vec::new(),
            source: Box::new(K::string("{system x}")),
        });
        let call = K::list(vec![lambda, K::string("ls")]);
        assert!(facts(&call).flags.contains(Flags::SYSTEM | Flags::LAMBDA));
        assert_eq!(facts(&K::symbol("trade")).variables, ["trade"]);
        assert_eq!(facts(&K::long(1)), Facts::default());
    }

    #[test]
    fn wit_flags_map_one_to_one() {
        let all = FLAGS
            .iter()
            .fold(QueryFlags::empty(), |all, (wit, _)| all | *wit);
        assert_eq!(all, QueryFlags::all());
        let facts = from_wit(types::Facts {
            tables_read: vec!["t".into()],
            tables_written: Vec::new(),
            functions: Vec::new(),
            assigned: Vec::new(),
            variables: Vec::new(),
            flags: QueryFlags::ASSIGN_Z | QueryFlags::UNPARSED,
        });
        assert_eq!(facts.flags, Flags::ASSIGN_Z | Flags::UNPARSED);
        assert_eq!(facts.tables_read, ["t"]);
    }

    #[test]
    fn helpers() {
        let facts = Facts::of_text(b"select from trade lj quote");
        assert!(facts.reads_only(&["trade", "quote"]));
        assert!(!facts.reads_only(&["trade"]));
        let facts = Facts::of_text(b"`t insert (1;2)");
        assert!(!facts.writes_nothing());
        let facts = Facts::of_text(b"f[1]+g 2");
        assert!(facts.calls_only(&["f", "g"]));
        assert!(!facts.calls_only(&["f"]));
        assert!(Facts::of_text(b"k)1").has_any(Flags::UNPARSED));
    }
}
