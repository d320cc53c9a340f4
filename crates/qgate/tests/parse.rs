//! Runs `qgate parse` over the facts conformance table and over queries that do not parse.
//!
//! The table is `crates/q/testdata/q-facts.tsv`, the parser's copy of
//! `shared/conformance/q-facts.tsv` (the parser's conformance test keeps the two equal).

use std::{
    io::Write as _,
    path::PathBuf,
    process::{Command, Output, Stdio},
};

use serde_json::Value;

fn qgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qgate"))
}

fn run(args: &[&str]) -> Output {
    qgate().args(args).output().expect("qgate runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The table's escapes: `\\` a backslash, `\t` a tab, `\n` a newline.
fn unescape(field: &str) -> String {
    field
        .replace("\\\\", "\u{0}")
        .replace("\\t", "\t")
        .replace("\\n", "\n")
        .replace('\u{0}', "\\")
}

fn list(field: &str) -> Vec<String> {
    if field == "-" {
        Vec::new()
    } else {
        field.split(',').map(str::to_owned).collect()
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|item| item.as_str().expect("a string").to_owned())
        .collect()
}

#[test]
fn json_gives_every_conformance_line_its_facts() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../q/testdata/q-facts.tsv");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let rows: Vec<Vec<String>> = text
        .lines()
        .skip(1)
        .filter(|line| !line.is_empty())
        .map(|line| line.split('\t').map(unescape).collect())
        .collect();
    assert!(rows.len() >= 100, "the table has lost rows");
    let inputs: Vec<&str> = rows.iter().map(|row| row[0].as_str()).collect();
    let mut args = vec!["parse", "--json"];
    args.extend(&inputs);
    let output = run(&args);
    // `k)` and `([]a::e)` do not parse, which the exit status says.
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    assert_eq!(
        stderr(&output).trim_end(),
        format!(
            "error: 2 of {} queries do not parse; a policy denies them (flag `unparsed`)",
            rows.len()
        )
    );
    let lines: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), rows.len(), "one line a query");
    let mut failures = Vec::new();
    for (row, line) in rows.iter().zip(&lines) {
        let value: Value = serde_json::from_str(line).expect("a JSON object");
        let got = [
            strings(&value["tables_read"]),
            strings(&value["tables_written"]),
            strings(&value["functions"]),
            strings(&value["assigned"]),
            strings(&value["flags"]),
        ];
        let expect = [
            list(&row[1]),
            list(&row[2]),
            list(&row[3]),
            list(&row[4]),
            list(row[5].trim_end()),
        ];
        if got != expect {
            failures.push(format!("{:?}: got {got:?}, expected {expect:?}", row[0]));
        }
        let unparsed = expect[4].iter().any(|flag| flag == "unparsed");
        assert_eq!(value["tree"].is_null(), unparsed, "{line}");
        assert_eq!(value["error"].is_null(), !unparsed, "{line}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn json_objects_have_exactly_the_keys() {
    let output = run(&["parse", "--json", "select from trade where sym=`A"]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let value: Value = serde_json::from_str(stdout(&output).trim_end()).expect("JSON");
    let mut keys: Vec<&String> = value.as_object().expect("an object").keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "assigned",
            "error",
            "flags",
            "functions",
            "tables_read",
            "tables_written",
            "tree"
        ]
    );
    assert_eq!(value["tree"], "?\n`trade\n,,(=;`sym;,`A)\n0b\n()");
    assert_eq!(value["tables_read"], serde_json::json!(["trade"]));
    assert!(value["error"].is_null());
}

#[test]
fn text_shows_the_tree_and_the_facts() {
    let output = run(&["parse", "f:{a::select from t}", "x+1"]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "f:{a::select from t}\n  tree:\n    :\n    `f\n    {a::select from t}\n  \
         tables_read: t\n  tables_written: -\n  functions: -\n  assigned: f, a\n  \
         variables: -\n  flags: lambda, assign\n\
         \n\
         x+1\n  tree:\n    +\n    `x\n    1\n  tables_read: -\n  tables_written: -\n  \
         functions: -\n  assigned: -\n  variables: x\n  flags: -\n"
    );
}

#[test]
fn a_query_that_does_not_parse_is_reported_and_fails() {
    let output = run(&["parse", "2+2;+2"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stdout(&output),
        "2+2;+2\n  error: `+` has nothing on its left: q does not apply an operator to one \
         argument written bare; use its keyword (`neg x`, `string x`) or parenthesize it \
         (`(-)x`) (line 1, column 5)\n    '+\n      [2]  2+2;+2\n               ^\n  \
         tables_read: -\n  tables_written: -\n  functions: -\n  assigned: -\n  variables: -\n  \
         flags: unparsed\n"
    );
    assert_eq!(
        stderr(&output),
        "error: 1 of 1 query does not parse; a policy denies it (flag `unparsed`)\n"
    );

    let output = run(&["parse", "--json", "k)!10"]);
    assert_eq!(output.status.code(), Some(1));
    let value: Value = serde_json::from_str(stdout(&output).trim_end()).expect("JSON");
    assert!(value["tree"].is_null());
    assert_eq!(value["flags"], serde_json::json!(["unparsed"]));
    assert_eq!(
        value["error"],
        "`k)` text is not q: policies cannot read it (line 1, column 1)"
    );
}

#[test]
fn reads_queries_from_stdin_one_a_line() {
    let mut child = qgate()
        .args(["parse", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qgate starts");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(b"select from a\r\n`b insert 1\n")
        .expect("write to qgate");
    let output = child.wait_with_output().expect("qgate finishes");
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let lines: Vec<Value> = stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["tables_read"], serde_json::json!(["a"]));
    assert_eq!(lines[1]["tables_written"], serde_json::json!(["b"]));
}

#[test]
fn control_characters_do_not_reach_the_terminal() {
    let output = run(&["parse", "\"\u{1b}[2J\""]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert!(!stdout(&output).contains('\u{1b}'), "{}", stdout(&output));
}
