//! Every line of the conformance tables (`testdata/q-parse.tsv` and `testdata/q-facts.tsv`,
//! copies of `shared/conformance/`): the tree prints as q printed it, byte for byte, and the
//! facts are the ones listed.

use std::path::Path;

use qgate_q::{Facts, parse};

/// Resolves the table's escapes: `\\` is a backslash, `\t` a tab, `\n` a newline.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some(other) => panic!("unknown escape \\{other} in {field:?}"),
            None => panic!("a lone backslash ends {field:?}"),
        }
    }
    out
}

/// The rows of a table, split on tabs, without the header; fields are not trimmed.
fn rows(name: &str, columns: usize) -> Vec<Vec<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .skip(1)
        .filter(|line| !line.is_empty())
        .map(|line| {
            let fields: Vec<String> = line.split('\t').map(str::to_owned).collect();
            assert!(fields.len() >= columns, "short row in {name}: {line:?}");
            fields
        })
        .collect()
}

#[test]
fn the_copies_match_shared_when_shared_is_present() {
    for name in ["q-parse.tsv", "q-facts.tsv"] {
        let ours = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(name);
        // The repository is checked out next to `shared/` on the team's machines.
        let shared = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/conformance")
            .join(name);
        if let Ok(upstream) = std::fs::read(&shared) {
            assert_eq!(
                std::fs::read(&ours).expect("our copy"),
                upstream,
                "shared/conformance/{name} changed: copy it to crates/q/testdata/"
            );
        }
    }
}

#[test]
fn every_parse_line_prints_as_q_printed_it() {
    let rows = rows("q-parse.tsv", 3);
    assert!(rows.len() >= 50, "the table has lost rows: {}", rows.len());
    let mut failures = Vec::new();
    for row in &rows {
        let (input, expect, source) = (unescape(&row[0]), unescape(&row[1]), &row[2]);
        let got = if source.contains("an ERROR") {
            match parse(input.as_bytes()) {
                Ok(tree) => format!("no error; parsed as {tree}"),
                Err(error) if source.contains(".Q.trp") => error.q_trap(input.as_bytes()),
                Err(error) => error.q_console(input.as_bytes()),
            }
        } else {
            match parse(input.as_bytes()) {
                Err(error) => format!("error: {error}"),
                // One row of `parse each`'s matrix display: the items side by side.
                Ok(tree) if source.contains("matrix display") => tree
                    .root()
                    .items()
                    .map(|item| item.one_line())
                    .collect::<Vec<_>>()
                    .join(" "),
                Ok(tree) if source.contains("one-line form") || source.contains("on one line") => {
                    tree.root().one_line()
                }
                Ok(tree) => tree.to_string(),
            }
        };
        if got != expect {
            failures.push(format!(
                "{input:?}\n  expected {expect:?}\n  got      {got:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} lines differ:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

fn list(field: &str) -> Vec<String> {
    if field == "-" {
        Vec::new()
    } else {
        field.split(',').map(str::to_owned).collect()
    }
}

#[test]
fn every_facts_line_gives_its_facts() {
    let rows = rows("q-facts.tsv", 6);
    assert!(rows.len() >= 100, "the table has lost rows: {}", rows.len());
    let mut failures = Vec::new();
    for row in &rows {
        let input = unescape(&row[0]);
        let facts = Facts::of_text(input.as_bytes());
        let flags: Vec<String> = facts.flags.names().map(str::to_owned).collect();
        let got = [
            &facts.tables_read,
            &facts.tables_written,
            &facts.functions,
            &facts.assigned,
            &flags,
        ];
        let expect = [
            list(&row[1]),
            list(&row[2]),
            list(&row[3]),
            list(&row[4]),
            list(row[5].trim_end()),
        ];
        let names = [
            "tables_read",
            "tables_written",
            "functions",
            "assigned",
            "flags",
        ];
        for ((name, got), expect) in names.iter().zip(got).zip(expect) {
            if *got != expect {
                failures.push(format!(
                    "{input:?}: {name}\n  expected {expect:?}\n  got      {got:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
