//! Printing a tree as the q console prints the value `parse` returns.
//!
//! At the top, a general list of two or more items prints one item a line; everything else, and
//! every item inside, prints in q's one-line form (`-3!`): `(+;2;3)`, `` ,`a ``, `(,`c)!,`c`.
//! A keyword prints as its value ([`crate::Keyword::display`]), a lambda as its source text.

use std::fmt::{self, Write as _};

use crate::{
    literal,
    tree::{Atom, Data, Node, NodeKind, Tree, Type},
};

impl fmt::Display for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.root().fmt(f)
    }
}

impl fmt::Display for Node<'_> {
    /// The console form: one item a line for a general list, the one-line form otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if matches!(self.kind(), NodeKind::List) && self.len() >= 2 {
            for (i, item) in self.items().enumerate() {
                if i > 0 {
                    f.write_char('\n')?;
                }
                write_node(f, item)?;
            }
            Ok(())
        } else {
            write_node(f, *self)
        }
    }
}

impl Node<'_> {
    /// The one-line form q's `-3!` gives: `(?;`t;();0b;())`.
    pub fn one_line(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = write_node(&mut out, *self);
        out
    }
}

/// Writes `node` in the one-line form.
pub(crate) fn write_node(out: &mut dyn fmt::Write, node: Node<'_>) -> fmt::Result {
    match node.data() {
        Data::Null => out.write_str("::"),
        Data::Name(_) => {
            out.write_char('`')?;
            out.write_str(node.name().unwrap_or_default())
        }
        Data::Char(c) => write_string(out, &[c]),
        Data::Str(_) => {
            let NodeKind::String(bytes) = node.kind() else {
                return Ok(());
            };
            if bytes.len() == 1 {
                out.write_char(',')?;
            }
            write_string(out, bytes)
        }
        Data::Atom(atom) => write_atom(out, atom),
        Data::Vector(ty, _) => write_vector(out, node, ty),
        Data::List(_) => {
            match node.len() {
                0 => out.write_str("()")?,
                1 => {
                    out.write_char(',')?;
                    if let Some(item) = node.item(0) {
                        write_node(out, item)?;
                    }
                }
                _ => {
                    out.write_char('(')?;
                    for (i, item) in node.items().enumerate() {
                        if i > 0 {
                            out.write_char(';')?;
                        }
                        write_node(out, item)?;
                    }
                    out.write_char(')')?;
                }
            }
            Ok(())
        }
        Data::Dict(..) => {
            let Some((keys, values)) = node.dict() else {
                return Ok(());
            };
            let mut key_text = String::new();
            write_node(&mut key_text, keys)?;
            if key_text.starts_with(',') || matches!(keys.kind(), NodeKind::Dict) {
                write!(out, "({key_text})")?;
            } else {
                out.write_str(&key_text)?;
            }
            out.write_char('!')?;
            write_node(out, values)
        }
        Data::Lambda { .. } => out.write_str(&String::from_utf8_lossy(
            node.lambda_text().unwrap_or_default(),
        )),
        Data::Prim(text) => out.write_str(text),
        Data::Keyword(keyword) => out.write_str(keyword.display()),
        Data::System(_) => {
            let NodeKind::System(text) = node.kind() else {
                return Ok(());
            };
            out.write_str("(system;")?;
            write_string(out, text)?;
            out.write_char(')')
        }
    }
}

/// A q string literal: `"abc"`, with q's escapes and `\ooo` for bytes that are not printable
/// ASCII.
pub(crate) fn write_string(out: &mut dyn fmt::Write, bytes: &[u8]) -> fmt::Result {
    out.write_char('"')?;
    for &b in bytes {
        match b {
            b'"' => out.write_str("\\\"")?,
            b'\\' => out.write_str("\\\\")?,
            b'\n' => out.write_str("\\n")?,
            b'\r' => out.write_str("\\r")?,
            b'\t' => out.write_str("\\t")?,
            b if b.is_ascii_graphic() || b == b' ' => out.write_char(char::from(b))?,
            b => write!(out, "\\{b:03o}")?,
        }
    }
    out.write_char('"')
}

fn write_atom(out: &mut dyn fmt::Write, atom: Atom) -> fmt::Result {
    let mut text = String::new();
    literal::item_text(&mut text, atom);
    let ty = atom.ty();
    match atom {
        Atom::Byte(_) => return write!(out, "0x{text}"),
        Atom::Guid(_) => {
            out.write_str(&text)?;
            return if text == "0N" {
                out.write_char('g')
            } else {
                Ok(())
            };
        }
        Atom::Float(v) if v.is_finite() && literal::looks_whole(&text) => text.push('f'),
        Atom::Real(v) if v.is_nan() => text = "0Ne".to_owned(),
        Atom::Real(v) if v.is_infinite() => {
            text = if v > 0.0 { "0We" } else { "-0We" }.to_owned();
        }
        _ => {}
    }
    out.write_str(&text)?;
    let special = text.ends_with("0N") || text.ends_with("0W");
    if let Some(letter) = literal::suffix(ty) {
        let already = matches!(atom, Atom::Real(v) if !v.is_finite());
        if !already {
            out.write_char(letter)?;
        }
    } else if special && let Some(letter) = literal::special_letter(ty) {
        out.write_char(letter)?;
    }
    Ok(())
}

fn write_vector(out: &mut dyn fmt::Write, node: Node<'_>, ty: Type) -> fmt::Result {
    if ty == Type::Symbol {
        match node.len() {
            0 => return out.write_str("`symbol$()"),
            1 => out.write_char(',')?,
            _ => {}
        }
        for item in node.items() {
            out.write_char('`')?;
            out.write_str(item.name().unwrap_or_default())?;
        }
        return Ok(());
    }
    let atoms: Vec<Atom> = node
        .items()
        .filter_map(|item| match item.kind() {
            NodeKind::Atom(atom) => Some(atom),
            _ => None,
        })
        .collect();
    match atoms.len() {
        0 => return write!(out, "`{}$()", ty.name()),
        1 => {
            out.write_char(',')?;
            return write_atom(out, atoms[0]);
        }
        _ => {}
    }
    if ty == Type::Byte {
        out.write_str("0x")?;
        for atom in &atoms {
            let mut text = String::new();
            literal::item_text(&mut text, *atom);
            out.write_str(&text)?;
        }
        return Ok(());
    }
    let separator = if ty == Type::Boolean { "" } else { " " };
    let mut all_whole = true;
    let mut all_special = true;
    for (i, atom) in atoms.iter().enumerate() {
        if i > 0 {
            out.write_str(separator)?;
        }
        let mut text = String::new();
        literal::item_text(&mut text, *atom);
        all_whole &= literal::looks_whole(&text) || text.ends_with('n') || text.ends_with('w');
        let special = matches!(text.as_str(), "0N" | "0W" | "-0W" | "0n" | "0w" | "-0w");
        all_special &= special;
        out.write_str(&text)?;
    }
    match ty {
        Type::Float if all_whole && !all_float_special(&atoms) => out.write_char('f'),
        Type::Long => Ok(()),
        _ => match literal::suffix(ty) {
            Some(letter) => out.write_char(letter),
            None if all_special => match literal::special_letter(ty) {
                Some(letter) => out.write_char(letter),
                None => Ok(()),
            },
            None => Ok(()),
        },
    }
}

/// Whether every float is a null or an infinity, which print without the `f`.
fn all_float_special(atoms: &[Atom]) -> bool {
    atoms
        .iter()
        .all(|atom| matches!(atom, Atom::Float(v) if !v.is_finite()))
}

#[cfg(test)]
mod tests {
    use crate::parse;

    #[track_caller]
    fn check(src: &str, expect: &str) {
        let tree = parse(src.as_bytes()).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert_eq!(tree.root().one_line(), expect, "{src}");
    }

    #[test]
    fn atoms_and_vectors() {
        check("42", "42");
        check("42i", "42i");
        check("4h", "4h");
        check("1.0", "1f");
        check("1.5e", "1.5e");
        check("2e", "2e");
        check("0n", "0n");
        check("0N", "0N");
        check("0Ni", "0Ni");
        check("0Nd", "0Nd");
        check("0Ng", "0Ng");
        check("0x2a", "0x2a");
        check("0x0102", "0x0102");
        check("101b", "101b");
        check("1 2 3", "1 2 3");
        check("1 2 3h", "1 2 3h");
        check("1 2.0", "1 2f");
        check("1 2.5", "1 2.5");
        check("2000.01 2000.02m", "2000.01 2000.02m");
        check("2013.05.15", "2013.05.15");
        check("12:00:00.000000000", "0D12:00:00.000000000");
        check("\"a\"", "\"a\"");
        check("\"a\\tb\"", "\"a\\tb\"");
        check("\"\"", "\"\"");
        check("`a", ",`a");
        check("`a`b", ",`a`b");
        check("`", ",`");
    }
}
