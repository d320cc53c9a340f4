//! Query shapes: a parse tree with its literal values replaced by their types, for a firewall
//! that learns which queries a user sends and then refuses the others.
//!
//! The shape is the tree's one-line form (`-3!`) with three changes, so that the same query with
//! other values has the same shape and a different query a different one:
//!
//! - numbers, temporals, booleans, chars and strings become their type: `<long>`, `<date>`,
//!   `<string>`; vectors become `<longs>`, `<dates>`...
//! - symbols stay, because they name tables, functions and files (`` `trade insert ``,
//!   `` .perm.run[`getVWAP] ``, `` `:data.csv ``), except as values inside a qSQL phrase, where
//!   `` sym=`AAPL `` compares a column with data: there they become `<symbol>` (`<symbols>` for
//!   a vector);
//! - keywords print by name (`each`, not `k){x'y}`), which does not change between q versions,
//!   and a lambda prints as `{[params] statements}` with its statements shaped the same way.
//!
//! The qSQL structure itself stays: `0b`/`1b` in a query's by position, `()` for an absent
//! phrase.
//! A shape says nothing about the text inside a string, so a firewall keeps `eval` and the other
//! flags denied whatever it learned.
//!
//! ```
//! let a = qgate_q::parse(b"select from trade where sym=`AAPL, size>100").unwrap();
//! let b = qgate_q::parse(b"select from trade where sym=`MSFT, size>5").unwrap();
//! assert_eq!(qgate_q::shape(&a), qgate_q::shape(&b));
//! assert_eq!(
//!     qgate_q::shape(&a),
//!     "(?;`trade;,((=;`sym;<symbol>);(>;`size;<long>));0b;())"
//! );
//! ```

use std::fmt::{self, Write as _};

use crate::tree::{Node, NodeKind, Tree, Type};

/// The shape of a parse tree; see the module documentation.
pub fn shape(tree: &Tree) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write(&mut out, tree.root(), false);
    out
}

fn type_name(ty: Type, vector: bool) -> String {
    match (ty, vector) {
        (Type::Char, _) => "<string>".to_owned(),
        (ty, false) => format!("<{}>", ty.name()),
        (ty, true) => format!("<{}s>", ty.name()),
    }
}

/// Writes `node`; `phrase` says whether it is inside a qSQL phrase, where symbols are data.
fn write(out: &mut String, node: Node<'_>, phrase: bool) -> fmt::Result {
    match node.kind() {
        NodeKind::Null => out.write_str("::"),
        NodeKind::Name(name) => write!(out, "`{name}"),
        NodeKind::Char(_) | NodeKind::String(_) => out.write_str("<string>"),
        NodeKind::Atom(atom) => out.write_str(&type_name(atom.ty(), false)),
        NodeKind::Vector(Type::Symbol) => {
            if node.len() == 1 && phrase {
                return out.write_str("<symbol>");
            }
            if node.len() == 1 {
                out.write_char(',')?;
            }
            if node.is_empty() {
                return out.write_str("`symbol$()");
            }
            for item in node.items() {
                write!(out, "`{}", item.name().unwrap_or_default())?;
            }
            Ok(())
        }
        NodeKind::Vector(ty) => out.write_str(&type_name(ty, node.len() != 1)),
        NodeKind::List => write_list(out, node, phrase),
        NodeKind::Dict => {
            let Some((keys, values)) = node.dict() else {
                return Ok(());
            };
            let mut key_text = String::new();
            write(&mut key_text, keys, false)?;
            if key_text.starts_with(',') {
                write!(out, "({key_text})!")?;
            } else {
                write!(out, "{key_text}!")?;
            }
            write(out, values, phrase)
        }
        NodeKind::Lambda => {
            out.write_char('{')?;
            if node.lambda_has_signature() {
                let params: Vec<&str> = node.lambda_params().collect();
                write!(out, "[{}] ", params.join(";"))?;
            }
            for (i, statement) in node.lambda_body().enumerate() {
                if i > 0 {
                    out.write_char(';')?;
                }
                write(out, statement, false)?;
            }
            out.write_char('}')
        }
        NodeKind::Primitive(p) => out.write_str(p),
        NodeKind::Keyword(keyword) => out.write_str(keyword.name()),
        NodeKind::System(text) => {
            out.write_str("(system;")?;
            crate::display::write_string(out, text)?;
            out.write_char(')')
        }
    }
}

fn write_list(out: &mut String, node: Node<'_>, phrase: bool) -> fmt::Result {
    match node.len() {
        0 => return out.write_str("()"),
        1 => {
            if let Some(item) = node.item(0) {
                if phrase && matches!(item.kind(), NodeKind::Vector(Type::Symbol)) {
                    return out.write_str("<symbols>");
                }
                out.write_char(',')?;
                write(out, item, phrase)?;
            }
            return Ok(());
        }
        _ => {}
    }
    let query = node.item(0).is_some_and(|head| {
        matches!(head.kind(), NodeKind::Primitive("?" | "!")) && node.len() >= 5
    });
    out.write_char('(')?;
    for (i, item) in node.items().enumerate() {
        if i > 0 {
            out.write_char(';')?;
        }
        if !query {
            write(out, item, phrase)?;
            continue;
        }
        match i {
            // The table: a name, a symbol or a nested query, kept.
            1 => write(out, item, false)?,
            // The constraints, and the by and select phrases.
            2..=4 => write_query_part(out, item)?,
            // `n` of `select[n]`, and the order.
            _ => write(out, item, true)?,
        }
    }
    out.write_char(')')
}

/// A constraint list, a by or a select phrase of a query, whose values are data.
fn write_query_part(out: &mut String, part: Node<'_>) -> fmt::Result {
    match part.kind() {
        // `0b` or `1b`: no by phrase, or `distinct`.
        NodeKind::Atom(_) => out.write_str(&part.one_line()),
        NodeKind::Dict => {
            let Some((keys, values)) = part.dict() else {
                return Ok(());
            };
            let mut key_text = String::new();
            write(&mut key_text, keys, false)?;
            if key_text.starts_with(',') {
                write!(out, "({key_text})!")?;
            } else {
                write!(out, "{key_text}!")?;
            }
            write_phrase_list(out, values)
        }
        _ if part.is_quote() => {
            out.write_char(',')?;
            match part.item(0) {
                Some(item) if matches!(item.kind(), NodeKind::List) && item.len() >= 2 => {
                    // A template's constraint list.
                    out.write_char('(')?;
                    for (i, constraint) in item.items().enumerate() {
                        if i > 0 {
                            out.write_char(';')?;
                        }
                        write(out, constraint, true)?;
                    }
                    out.write_char(')')
                }
                Some(item) => write_phrase_list(out, item),
                None => Ok(()),
            }
        }
        _ => write(out, part, false),
    }
}

/// A list of phrase expressions (one-item lists and symbol vectors included, which here are
/// lists of columns, not data).
fn write_phrase_list(out: &mut String, list: Node<'_>) -> fmt::Result {
    match list.kind() {
        NodeKind::Vector(Type::Symbol) => write(out, list, false),
        NodeKind::List if list.len() == 1 => {
            out.write_char(',')?;
            match list.item(0) {
                Some(item) => write(out, item, true),
                None => Ok(()),
            }
        }
        _ => write(out, list, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    #[track_caller]
    fn check(src: &str, expect: &str) {
        let tree = parse(src.as_bytes()).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert_eq!(shape(&tree), expect, "{src}");
    }

    #[track_caller]
    fn same(a: &str, b: &str) {
        let (ta, tb) = (parse(a.as_bytes()), parse(b.as_bytes()));
        let (ta, tb) = (ta.expect("parses"), tb.expect("parses"));
        assert_eq!(shape(&ta), shape(&tb), "{a} / {b}");
    }

    #[track_caller]
    fn differ(a: &str, b: &str) {
        let (ta, tb) = (parse(a.as_bytes()), parse(b.as_bytes()));
        let (ta, tb) = (ta.expect("parses"), tb.expect("parses"));
        assert_ne!(shape(&ta), shape(&tb), "{a} / {b}");
    }

    #[test]
    fn shapes() {
        check(
            "select from trade where sym=`AAPL",
            "(?;`trade;,,(=;`sym;<symbol>);0b;())",
        );
        check(
            "select max price by sym from trade where date=2024.01.02",
            "(?;`trade;,,(=;`date;<date>);(,`sym)!,`sym;(,`price)!,(max;`price))",
        );
        check(
            "select from t where s in `a`b",
            "(?;`t;,,(in;`s;<symbols>);0b;())",
        );
        check(
            "`trade insert (1;`a)",
            "(insert;,`trade;(enlist;<long>;,`a))",
        );
        check("f[`getVWAP;1 2 3]", "(`f;,`getVWAP;<longs>)");
        check("{x+1}", "{(+;`x;<long>)}");
        check("{[a] a+1}", "{[a] (+;`a;<long>)}");
        check("foo each til 5", "(each;`foo;(til;<long>))");
        check("select[10] from t", "(?;`t;();0b;();<long>)");
        check("\\t 1000", "(system;\"t 1000\")");
    }

    #[test]
    fn same_query_other_values() {
        same(
            "select from trade where sym=`AAPL, size>100",
            "select from trade where sym=`IBM, size>5",
        );
        same(
            "exec last price from quote where sym in `a`b",
            "exec last price from quote where sym in `c`d`e",
        );
        same("getVWAP[`AAPL;2024.01.01]", "getVWAP[`AAPL;2025.06.30]");
        same("a like \"F*\"", "a like \"G\"");
    }

    #[test]
    fn other_structure() {
        differ("select from trade", "select from quote");
        differ(
            "select from trade where sym=`A",
            "select from trade where size=1",
        );
        differ("`trade insert x", "`secret insert x");
        differ("f[`getVWAP]", "f[`drop]");
        differ("select a from t", "select b from t");
        differ("select from t", "select distinct from t");
        differ("1+2", "1-2");
        differ("x 1", "x 1 2");
    }
}
