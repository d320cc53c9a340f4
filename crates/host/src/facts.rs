//! The facts of a message (`message.facts` in WIT): a string is parsed as q with `qgate-q`, a
//! general list is read as a call list from its zero-copy view, any other value has none.
//!
//! A message is read at most once per event: the chain lends every call a [`FactsCell`] with the
//! request, and the first plugin that asks fills it for the others and the outcome.

use std::sync::OnceLock;

use qgate_ipc::{ValueView, type_code};
use qgate_q::{CallArg, Facts};

use crate::bindings::types;

/// The facts of one message, filled on the first ask. A `OnceLock` rather than a `OnceCell`
/// because a call may run on a scoped thread (`offload::run_outside_async`).
pub(crate) type FactsCell = OnceLock<types::Facts>;

/// The facts of a message, read from its view.
pub(crate) fn of_view(view: ValueView<'_>) -> types::Facts {
    wit(&q_facts(view))
}

/// The facts of q text (an HTTP request's).
pub(crate) fn of_text(text: &[u8]) -> types::Facts {
    wit(&Facts::of_text(text))
}

/// No facts: what a request without q text has.
pub(crate) fn none() -> types::Facts {
    wit(&Facts::default())
}

/// The parser's facts of a message.
fn q_facts(view: ValueView<'_>) -> Facts {
    if let Some(text) = view.string() {
        return Facts::of_text(text);
    }
    if view.is_list() {
        return match call_arg(view, 0) {
            Some(CallArg::List(items)) => Facts::of_call_list(&items),
            _ => Facts::unparsed(),
        };
    }
    // q evaluates a symbol sent alone as the name of a variable: read it as text, which names
    // that variable, and over-approximates a name that is not an identifier.
    if let Some(name) = view.symbol() {
        return Facts::of_text(name);
    }
    Facts::default()
}

/// An item of a call list, as the parser's facts read it; `None` when it cannot be read with
/// certainty (a symbol that is not UTF-8, a list nested deeper than the parser's
/// [`qgate_q::MAX_DEPTH`]), which makes the whole message unparsed.
fn call_arg(view: ValueView<'_>, depth: usize) -> Option<CallArg<'_>> {
    if depth > qgate_q::MAX_DEPTH {
        return None;
    }
    let code = view.type_code();
    if let Some(text) = view.string() {
        return Some(CallArg::Text(text));
    }
    if let Some(name) = view.symbol() {
        return std::str::from_utf8(name).ok().map(CallArg::Symbol);
    }
    if code == type_code::LAMBDA {
        return lambda_source(view).map(CallArg::Lambda);
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

/// The source text of a lambda (type 100): its context name, a NUL, then its source as a char
/// vector.
fn lambda_source(view: ValueView<'_>) -> Option<&[u8]> {
    let rest = view.as_bytes().get(1..)?;
    let context_end = memchr_nul(rest)?;
    let source = rest.get(context_end + 1..)?;
    ValueView::new(source, view.endian()).ok()?.string()
}

/// The position of the first NUL.
fn memchr_nul(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == 0)
}

/// The WIT record of the parser's facts.
fn wit(facts: &Facts) -> types::Facts {
    let mut flags = types::QueryFlags::empty();
    for (flag, wit_flag) in [
        (qgate_q::Flags::SYSTEM, types::QueryFlags::SYSTEM),
        (qgate_q::Flags::EVAL, types::QueryFlags::EVAL),
        (qgate_q::Flags::IPC, types::QueryFlags::IPC),
        (qgate_q::Flags::FILE, types::QueryFlags::FILE),
        (qgate_q::Flags::EXIT, types::QueryFlags::EXIT),
        (qgate_q::Flags::MULTI, types::QueryFlags::MULTI),
        (qgate_q::Flags::LAMBDA, types::QueryFlags::LAMBDA),
        (qgate_q::Flags::ASSIGN, types::QueryFlags::ASSIGN),
        (qgate_q::Flags::ASSIGN_Z, types::QueryFlags::ASSIGN_Z),
        (qgate_q::Flags::UNPARSED, types::QueryFlags::UNPARSED),
    ] {
        if facts.flags.contains(flag) {
            flags |= wit_flag;
        }
    }
    types::Facts {
        tables_read: facts.tables_read.clone(),
        tables_written: facts.tables_written.clone(),
        functions: facts.functions.clone(),
        assigned: facts.assigned.clone(),
        variables: facts.variables.clone(),
        flags,
    }
}

#[cfg(test)]
mod tests {
    use qgate_ipc::{Endian, K};

    use super::*;

    fn facts(value: &K) -> types::Facts {
        let mut body = Vec::new();
        let encoded = qgate_ipc::encode(value, &mut body);
        assert!(encoded.is_ok(), "{encoded:?}");
        of_view(ValueView::trusted(&body, Endian::Little))
    }

    #[test]
    fn a_query_is_parsed() {
        let facts = facts(&K::string("select from trade where sym=`a"));
        assert_eq!(facts.tables_read, ["trade"]);
        assert!(facts.flags == types::QueryFlags::empty());
        let facts = self::facts(&K::string("k)1+1"));
        assert_eq!(facts.flags, types::QueryFlags::UNPARSED);
    }

    #[test]
    fn a_call_list_names_its_function_and_its_flags() {
        let call = K::list(vec![K::symbol("getTrades"), K::symbol("AAPL")]);
        assert_eq!(facts(&call).functions, ["getTrades"]);
        let eval = K::list(vec![K::symbol("value"), K::string("exit 0")]);
        assert_eq!(facts(&eval).flags, types::QueryFlags::EVAL);
        let string_head = K::list(vec![K::string("{system x}"), K::string("ls")]);
        assert!(
            facts(&string_head)
                .flags
                .contains(types::QueryFlags::SYSTEM | types::QueryFlags::LAMBDA)
        );
        let set_z = K::list(vec![
            K::symbol("set"),
            K::symbol(".z.pg"),
            K::symbol("value"),
        ]);
        let set_z = facts(&set_z);
        assert_eq!(set_z.assigned, [".z.pg"]);
        assert!(set_z.flags.contains(types::QueryFlags::ASSIGN_Z));
    }

    #[test]
    fn a_lambda_argument_is_parsed_from_its_source() {
        let lambda = K::Function(qgate_ipc::Function::Lambda {
            context: Vec::new(),
            source: Box::new(K::string("{exit 1}")),
        });
        let call = K::list(vec![K::symbol("each"), lambda, K::long(1)]);
        let facts = facts(&call);
        assert!(facts.flags.contains(types::QueryFlags::EXIT));
        assert!(facts.flags.contains(types::QueryFlags::LAMBDA));
    }

    #[test]
    fn other_values_have_no_facts_and_a_symbol_names_a_variable() {
        let none = facts(&K::long(3));
        assert!(
            none.functions.is_empty()
                && none.variables.is_empty()
                && none.flags == types::QueryFlags::empty()
        );
        assert_eq!(facts(&K::symbol("trade")).variables, ["trade"]);
        // Deeper than the codec encodes, so built by hand: (`f;(`f;(... 1j))).
        let mut deep = Vec::new();
        for _ in 0..=qgate_q::MAX_DEPTH + 1 {
            deep.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0xf5, b'f', 0]);
        }
        deep.extend_from_slice(&[0xf9, 1, 0, 0, 0, 0, 0, 0, 0]);
        let deep = of_view(ValueView::trusted(&deep, Endian::Little));
        assert_eq!(deep.flags, types::QueryFlags::UNPARSED);
    }
}
