//! Properties of the parser: no input makes it panic, and a tree printed back as q source and
//! parsed again is the same tree.
//!
//! The second property needs q source for a tree; `source` below writes it: any application as
//! `(head)[args]` (which parses to `(head;args...)` whatever the head is), and a qSQL node as
//! the template it came from, every column named and every phrase parenthesized.

use proptest::prelude::*;
use qgate_q::{Facts, Node, NodeKind, Tree, Type, parse, parse_all, shape};

/// Everything a policy does with a text, none of which may panic.
fn exercise(text: &[u8]) {
    let (tree, errors) = parse_all(text);
    let _ = tree.to_string();
    let _ = shape(&tree);
    let facts = Facts::of_text(text);
    if errors.is_empty() {
        let _ = Facts::of_tree(&tree);
    } else {
        assert_eq!(
            facts,
            Facts::unparsed(),
            "{:?}",
            String::from_utf8_lossy(text)
        );
        for error in &errors {
            let _ = (error.to_string(), error.q_console(text), error.q_trap(text));
            assert!(error.offset <= text.len());
        }
    }
}

/// Pieces of q, glued at random into text that is mostly not q.
const SOUP: &[&str] = &[
    "select",
    "exec",
    "update",
    "delete",
    "from",
    "where",
    "by",
    "distinct",
    "x",
    "f",
    "t",
    ".z.pg",
    "`a",
    "`:h:1",
    "1",
    "-1",
    "2.5",
    "0N",
    "2000.01.01",
    "12:00",
    "0x2a",
    "101b",
    "\"s\"",
    "\"",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ";",
    ":",
    "::",
    "+",
    "-",
    ",",
    "!",
    "?",
    "@",
    ".",
    "$",
    "'",
    "/",
    "\\",
    "/:",
    "':",
    "0:",
    "each",
    "lj",
    "value",
    "count",
    "enlist",
    "k)",
    "\n",
    " ",
    "\t",
    "\\l",
    "/ c",
    "[x]",
    "in",
    "set",
    "insert",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        exercise(&bytes);
    }

    #[test]
    fn token_soup_never_panics(pieces in proptest::collection::vec(0..SOUP.len(), 0..60)) {
        let text: String = pieces.iter().map(|&i| SOUP[i]).collect::<Vec<_>>().join("");
        exercise(text.as_bytes());
        let spaced: String = pieces.iter().map(|&i| SOUP[i]).collect::<Vec<_>>().join(" ");
        exercise(spaced.as_bytes());
    }

    #[test]
    fn printing_then_parsing_gives_the_same_tree(text in expr(3)) {
        let first = match parse(text.as_bytes()) {
            Ok(tree) => tree,
            // A generated text q refuses too (`select a by a`): nothing to compare.
            Err(_) => return Ok(()),
        };
        let printed = source_of(&first);
        let second = parse(printed.as_bytes()).map_err(|e| {
            TestCaseError::fail(format!("{text:?} printed as {printed:?}, which fails: {e}"))
        })?;
        prop_assert!(
            first.root().same(&second.root()),
            "{:?} printed as {:?}:\n  {}\n  {}",
            text,
            printed,
            first.root().one_line(),
            second.root().one_line()
        );
        prop_assert_eq!(first.to_string(), second.to_string());
        prop_assert_eq!(shape(&first), shape(&second));
    }
}

// ----- Generating q.

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("price".to_owned()),
        Just("f".to_owned()),
        Just(".ns.g".to_owned()),
        Just("x".to_owned()),
    ]
}

fn literal() -> impl Strategy<Value = String> {
    prop_oneof![
        (0i64..1000).prop_map(|n| n.to_string()),
        (-50i64..50).prop_map(|n| format!("{n}i")),
        (0i64..400).prop_map(|n| format!("{}", n as f64 / 4.0 + 0.25)),
        Just("0N".to_owned()),
        Just("1b".to_owned()),
        Just("0x2a".to_owned()),
        Just("2024.01.02".to_owned()),
        Just("12:30".to_owned()),
        Just("1 2 3".to_owned()),
        Just("1 2 3h".to_owned()),
        Just("`sym".to_owned()),
        Just("`a`b`c".to_owned()),
        Just("\"text\"".to_owned()),
        Just("\"\"".to_owned()),
        Just("\"c\"".to_owned()),
    ]
}

fn expr(depth: u32) -> BoxedStrategy<String> {
    let leaf = prop_oneof![name(), literal()].boxed();
    if depth == 0 {
        return leaf;
    }
    let sub = expr(depth - 1);
    let op = prop_oneof![
        Just("+"),
        Just("-"),
        Just("*"),
        Just(","),
        Just("="),
        Just("<"),
        Just("#"),
        Just("$"),
        Just("?"),
        Just("!"),
        Just("+/"),
        Just(",/:"),
        Just(" in "),
        Just(" like "),
        Just(" xbar "),
    ];
    let keyword = prop_oneof![
        Just("count"),
        Just("first"),
        Just("neg"),
        Just("sum"),
        Just("til")
    ];
    prop_oneof![
        2 => leaf,
        1 => (sub.clone(), op, sub.clone()).prop_map(|(a, op, b)| format!("({a}){op}{b}")),
        1 => (name(), proptest::collection::vec(sub.clone(), 0..3))
            .prop_map(|(f, args)| format!("{f}[{}]", args.join(";"))),
        1 => (name(), sub.clone()).prop_map(|(f, x)| format!("{f} {x}")),
        1 => (keyword, sub.clone()).prop_map(|(k, x)| format!("{k} {x}")),
        1 => proptest::collection::vec(sub.clone(), 2..4).prop_map(|items| format!("({})", items.join(";"))),
        1 => (name(), sub.clone()).prop_map(|(n, x)| format!("{n}:{x}")),
        1 => sub.clone().prop_map(|x| format!("{{[a] a+{x}}}")),
        1 => (sub.clone(), sub.clone()).prop_map(|(x, y)| format!("$[{x};{y};0]")),
        1 => template(sub),
    ]
    .boxed()
}

fn template(sub: BoxedStrategy<String>) -> BoxedStrategy<String> {
    let column = prop_oneof![
        name(),
        (name(), name()).prop_map(|(n, c)| format!("{n}1:sum {c}")),
        (name(), sub.clone()).prop_map(|(n, e)| format!("{n}2:({e})")),
    ];
    let columns = proptest::collection::vec(column, 0..3);
    let groups = proptest::collection::vec(prop_oneof![Just("sym"), Just("g1:date")], 0..2);
    let constraints = proptest::collection::vec(sub.clone(), 0..3);
    let table = prop_oneof![
        Just("trade".to_owned()),
        Just("`trade".to_owned()),
        Just("(select from q)".to_owned()),
    ];
    let template = prop_oneof![Just("select"), Just("exec"), Just("update"), Just("delete")];
    (template, columns, groups, table, constraints)
        .prop_map(|(template, columns, groups, table, constraints)| {
            let mut text = template.to_owned();
            if template == "delete" {
                if !columns.is_empty() && constraints.is_empty() {
                    text.push_str(" a,b");
                }
            } else if !columns.is_empty() {
                text.push(' ');
                text.push_str(&columns.join(","));
            }
            if !groups.is_empty() && template != "delete" {
                text.push_str(" by ");
                text.push_str(&groups.join(","));
            }
            text.push_str(" from ");
            text.push_str(&table);
            if !constraints.is_empty() {
                let parenthesized: Vec<String> =
                    constraints.iter().map(|c| format!("({c})")).collect();
                text.push_str(" where ");
                text.push_str(&parenthesized.join(","));
            }
            text
        })
        .boxed()
}

// ----- Printing a tree back as q source.

fn source_of(tree: &Tree) -> String {
    source(tree.root())
}

fn source(node: Node<'_>) -> String {
    match node.kind() {
        NodeKind::Null => "::".to_owned(),
        NodeKind::Name(name) => name.to_owned(),
        NodeKind::Char(_) | NodeKind::String(_) | NodeKind::Atom(_) | NodeKind::Lambda => {
            node.one_line()
        }
        NodeKind::Primitive(p) => p.to_owned(),
        NodeKind::Keyword(keyword) => keyword.name().to_owned(),
        NodeKind::System(text) => format!("\\{}", String::from_utf8_lossy(text)),
        NodeKind::Dict => format!("unprintable dictionary {}", node.one_line()),
        NodeKind::Vector(Type::Symbol) if node.len() == 1 => node.one_line()[1..].to_owned(),
        NodeKind::Vector(Type::Symbol) => application(node),
        NodeKind::Vector(_) => node.one_line(),
        NodeKind::List => match node.len() {
            0 => "()".to_owned(),
            1 => match node.item(0) {
                // A symbol vector literal, enlisted.
                Some(item) if matches!(item.kind(), NodeKind::Vector(Type::Symbol)) => {
                    item.one_line()
                }
                _ => format!("unprintable quote {}", node.one_line()),
            },
            2 if matches!(
                node.item(0).map(|h| h.kind()),
                Some(NodeKind::Primitive("'" | "':" | "/" | "\\" | "/:" | "\\:"))
            ) =>
            {
                // A derived function, `(/;+)`: the iterator after its value.
                let iterator = node.item(0).map(|h| h.one_line()).unwrap_or_default();
                let value = node.item(1).map(source).unwrap_or_default();
                format!("({value}){iterator}")
            }
            _ => query(node).unwrap_or_else(|| application(node)),
        },
        _ => format!("unprintable {}", node.one_line()),
    }
}

/// `(head)[arg;arg]`, which parses to `(head;arg;arg)` whatever the head is.
fn application(node: Node<'_>) -> String {
    let mut items = node.items();
    let head = items.next().map(source).unwrap_or_default();
    let args: Vec<String> = items.map(source).collect();
    format!("({head})[{}]", args.join(";"))
}

/// The template of a qSQL node, if it is one.
fn query(node: Node<'_>) -> Option<String> {
    let items: Vec<Node<'_>> = node.items().collect();
    let head = match items[0].kind() {
        NodeKind::Primitive(p @ ("?" | "!")) => p,
        _ => return None,
    };
    if items.len() != 5 {
        return None;
    }
    let (table, c, b, a) = (items[1], items[2], items[3], items[4]);
    let template = match (head, b.kind(), a.kind()) {
        ("?", NodeKind::Atom(_), _) => "select",
        ("?", NodeKind::List | NodeKind::Vector(_) | NodeKind::Dict, _) => "exec",
        ("!", _, NodeKind::Vector(Type::Symbol)) => "delete",
        ("!", _, NodeKind::List) if a.is_quote() => "delete",
        ("!", _, _) => "update",
        _ => return None,
    };
    let mut text = template.to_owned();
    if b.one_line() == "1b" {
        text.push_str(" distinct");
    }
    if template == "delete" {
        if let Some(names) = a.unquote() {
            let names: Vec<&str> = names.items().filter_map(|n| n.name()).collect();
            text.push(' ');
            text.push_str(&names.join(","));
        }
    } else {
        text.push_str(&phrase(a));
    }
    if matches!(b.kind(), NodeKind::Dict) || b.is_quote() {
        text.push_str(" by");
        text.push_str(&phrase(b));
    }
    text.push_str(" from ");
    text.push_str(&match table.kind() {
        NodeKind::Name(name) => name.to_owned(),
        NodeKind::Vector(Type::Symbol) if table.len() == 1 => table.one_line()[1..].to_owned(),
        _ => format!("({})", source(table)),
    });
    if let Some(constraints) = c.unquote() {
        let parts: Vec<String> = match constraints.kind() {
            // Char atoms collapse into a string, as q's lists do.
            NodeKind::String(chars) => chars
                .iter()
                .map(|&c| format!("(\"{}\")", char::from(c)))
                .collect(),
            _ => constraints
                .items()
                .map(|item| format!("({})", source(item)))
                .collect(),
        };
        text.push_str(" where ");
        text.push_str(&parts.join(","));
    }
    Some(text)
}

/// ` n1:(e1),n2:(e2)` for a phrase dictionary, ` (e)` for one quoted expression.
fn phrase(part: Node<'_>) -> String {
    if let Some((keys, values)) = part.dict() {
        let names: Vec<&str> = keys.items().filter_map(|k| k.name()).collect();
        let exprs: Vec<String> = match values.kind() {
            // Char atoms collapse into a string, as q's lists do.
            NodeKind::String(chars) => chars
                .iter()
                .map(|&c| format!("\"{}\"", char::from(c)))
                .collect(),
            _ => values.items().map(source).collect(),
        };
        let pairs: Vec<String> = names
            .iter()
            .zip(&exprs)
            .map(|(n, e)| format!("{n}:({e})"))
            .collect();
        return format!(" {}", pairs.join(","));
    }
    match part.unquote() {
        Some(item) => format!(" ({})", source(item)),
        None => String::new(),
    }
}

#[test]
fn the_printer_round_trips_known_queries() {
    for text in [
        "select part:p,qty by sup:s from sp where qty>200,p=`p1",
        "exec sym from trades",
        "exec sum qty by s from sp",
        "delete price from trades where sym=`AAPL",
        "delete from `t",
        "update a:1 by g from t where b",
        "select distinct a from t",
        "f[1;][2]",
        "{x+y}[1;2]",
        "(a;b):1 2",
        ".[`t;();,;newrows]",
        "2+2",
    ] {
        let first = parse(text.as_bytes()).expect("parses");
        let printed = source_of(&first);
        let second = parse(printed.as_bytes()).unwrap_or_else(|e| panic!("{printed}: {e}"));
        assert!(
            first.root().same(&second.root()),
            "{text} printed as {printed}: {} / {}",
            first.root().one_line(),
            second.root().one_line()
        );
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for depth in [qgate_q::MAX_DEPTH + 1, 10_000] {
        let parens = format!("{}1{}", "(".repeat(depth), ")".repeat(depth));
        let brackets = format!("{}1{}", "f[".repeat(depth), "]".repeat(depth));
        let lambdas = format!("{}{}", "{".repeat(depth), "}".repeat(depth));
        let chain = vec!["1"; depth].join("+");
        let queries = "select from (".repeat(depth);
        for text in [parens, brackets, lambdas, chain, queries] {
            let error = parse(text.as_bytes()).expect_err("too deep");
            assert!(
                matches!(error.kind, qgate_q::ParseErrorKind::TooDeep { .. })
                    || matches!(error.kind, qgate_q::ParseErrorKind::Unclosed { .. }),
                "{error}"
            );
            assert_eq!(Facts::of_text(text.as_bytes()), Facts::unparsed());
        }
    }
    // Just inside the limit is fine.
    let depth = qgate_q::MAX_DEPTH - 2;
    let parens = format!("{}1{}", "f[".repeat(depth), "]".repeat(depth));
    let tree = parse(parens.as_bytes()).expect("within the limit");
    let _ = (tree.to_string(), shape(&tree), Facts::of_tree(&tree));
}

#[test]
fn text_over_the_limit_is_refused() {
    let text = vec![b' '; qgate_q::MAX_INPUT_BYTES + 1];
    let error = parse(&text).expect_err("too long");
    assert!(matches!(
        error.kind,
        qgate_q::ParseErrorKind::TooLong { .. }
    ));
    let text = "1 ".repeat(qgate_q::MAX_INPUT_BYTES / 2);
    let tree = parse(text.as_bytes()).expect("a long vector at the limit parses");
    assert_eq!(tree.root().len(), qgate_q::MAX_INPUT_BYTES / 2);
}
