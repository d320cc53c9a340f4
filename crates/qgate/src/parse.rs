//! `qgate parse [--json] QUERY...`: shows what a policy sees in a free-text query: the parse
//! tree, printed as q's own `parse` prints it, and the facts a policy decides on.
//!
//! ```text
//! $ qgate parse 'select from trade where sym=`AAPL'
//! select from trade where sym=`AAPL
//!   tree:
//!     ?
//!     `trade
//!     ,,(=;`sym;,`AAPL)
//!     0b
//!     ()
//!   tables_read: trade
//!   tables_written: -
//!   functions: -
//!   assigned: -
//!   variables: -
//!   flags: -
//! ```
//!
//! With `--json`, each query is one line holding one object with exactly the keys `tree` (the
//! display above, or null when the query does not parse), `tables_read`, `tables_written`,
//! `functions`, `assigned`, `flags` (arrays of strings) and `error` (null, or the parse error).
//! Without a QUERY, queries are read from stdin, one a line.
//! The exit status is 1 when any query does not parse, after every query is reported.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use anyhow::{Context as _, bail};
use qgate_q::{Facts, parse};
use serde_json::json;

/// Arguments of `qgate parse`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Print one JSON object a query, one a line.
    #[arg(long)]
    json: bool,
    /// The queries, each one argument (quote it for the shell); without any, stdin is read, one
    /// query a line.
    #[arg(value_name = "QUERY")]
    queries: Vec<String>,
}

/// Runs `qgate parse`.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let queries = if args.queries.is_empty() {
        read_stdin()?
    } else {
        args.queries.clone()
    };
    let mut out = std::io::stdout().lock();
    let mut failed = 0;
    for (i, query) in queries.iter().enumerate() {
        let report = Report::of(query.as_bytes());
        failed += usize::from(report.error.is_some());
        let text = if args.json {
            report.json()
        } else {
            let separator = if i > 0 { "\n" } else { "" };
            format!("{separator}{}", report.text(query))
        };
        writeln!(out, "{text}").context("cannot write to stdout")?;
    }
    out.flush().context("cannot write to stdout")?;
    if failed > 0 {
        bail!(
            "{failed} of {} {} not parse; a policy denies {} (flag `unparsed`)",
            queries.len(),
            if queries.len() == 1 {
                "query does"
            } else {
                "queries do"
            },
            if failed == 1 { "it" } else { "them" },
        );
    }
    Ok(())
}

/// The queries on stdin, one a line (a trailing `\r` is dropped).
fn read_stdin() -> anyhow::Result<Vec<String>> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        bail!("no query: give each query as an argument, or pipe them to stdin, one a line");
    }
    let mut queries = Vec::new();
    for line in stdin.lock().lines() {
        let line = line.context("cannot read stdin (queries must be UTF-8 text, one a line)")?;
        queries.push(line.strip_suffix('\r').unwrap_or(&line).to_owned());
    }
    Ok(queries)
}

/// What `qgate parse` says about one query.
struct Report {
    /// The tree as q prints it, when the query parses.
    tree: Option<String>,
    /// The q console's rendering of the error, when it does not.
    q_error: Option<String>,
    facts: Facts,
    error: Option<String>,
}

impl Report {
    fn of(query: &[u8]) -> Report {
        match parse(query) {
            Ok(tree) => Report {
                tree: Some(tree.to_string()),
                q_error: None,
                facts: Facts::of_tree(&tree),
                error: None,
            },
            Err(error) => Report {
                tree: None,
                q_error: Some(error.q_console(query)),
                facts: Facts::unparsed(),
                error: Some(error.to_string()),
            },
        }
    }

    fn json(&self) -> String {
        json!({
            "tree": self.tree,
            "tables_read": self.facts.tables_read,
            "tables_written": self.facts.tables_written,
            "functions": self.facts.functions,
            "assigned": self.facts.assigned,
            "flags": self.facts.flags.names().collect::<Vec<_>>(),
            "error": self.error,
        })
        .to_string()
    }

    fn text(&self, query: &str) -> String {
        let mut out = format!("{}\n", printable(query));
        match (&self.tree, &self.error) {
            (Some(tree), _) => {
                out.push_str("  tree:\n");
                for line in tree.lines() {
                    out.push_str(&format!("    {}\n", printable(line)));
                }
            }
            (None, Some(error)) => {
                out.push_str(&format!("  error: {error}\n"));
                for line in self.q_error.iter().flat_map(|e| e.lines()) {
                    out.push_str(&format!("    {}\n", printable(line)));
                }
            }
            (None, None) => {}
        }
        let list = |items: &[String]| {
            if items.is_empty() {
                "-".to_owned()
            } else {
                items.join(", ")
            }
        };
        let flags: Vec<String> = self.facts.flags.names().map(str::to_owned).collect();
        out.push_str(&format!(
            "  tables_read: {}\n  tables_written: {}\n  functions: {}\n  assigned: {}\n  \
             variables: {}\n  flags: {}",
            list(&self.facts.tables_read),
            list(&self.facts.tables_written),
            list(&self.facts.functions),
            list(&self.facts.assigned),
            list(&self.facts.variables),
            list(&flags),
        ));
        out
    }
}

/// `text` with control characters escaped, so that a query cannot drive the terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_exactly_the_keys() {
        let value: serde_json::Value =
            serde_json::from_str(&Report::of(b"f[1]").json()).expect("JSON");
        let mut keys: Vec<&str> = value
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
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
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("a\tb\u{1b}[2J"), "a\\tb\\u{1b}[2J");
    }
}
