//! Reading the plugin's config into Cedar's objects: the policies (one set from one text or
//! several), the entities and the schema, each checked as `init` must, with every error naming
//! its config key and, when Cedar or the JSON parser knows it, the line and column in that value
//! (`policies[1]:2:1: unexpected token ...`).
//!
//! ```text
//!   config (JSON) ──> keys checked ──> schema ──> policies: size, nesting, parse, validate
//!                                         └────> entities: JSON syntax, Cedar's format
//!                                                     └──> Loaded { policies, entities }
//!                                                          or every error, one per line
//! ```

use std::collections::BTreeSet;

use cedar_policy::{Entities, Policy, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;
use qgate_plugin_sdk::Config;
use serde_json::Value;

/// The config's keys.
const KEYS: [&str; 4] = ["policies", "entities", "schema", "max_policy_bytes"];

/// The default cap on the policy text, all files together: 1 MiB.
///
/// Cedar parses a policy into a tree and evaluates it by recursion, in a guest whose stack is a
/// fixed size; the nesting checks below keep any one expression shallow, and this cap keeps the
/// whole set (which the plugin parses again in every new instance, and evaluates on every
/// message) to a size a person writes. Policy sets of a few hundred rules are tens of KiB.
pub(crate) const DEFAULT_MAX_POLICY_BYTES: u64 = 1 << 20;

/// The deepest nesting of brackets (`(`, `[`, `{`) a policy may have.
///
/// Cedar's parser turns each bracket into about ten levels of its syntax tree and converts that
/// tree by recursion, on the guest's stack: Rust gives a `wasm32-wasip2` program 1 MiB of it
/// (and wasmtime 512 KiB for the frames of WebAssembly functions), and past it the instance traps
/// instead of loading. Measured in the release component: 96 brackets load, 104 do not. 64
/// keeps a margin, and hand-written policies nest a handful of levels.
pub(crate) const MAX_BRACKET_DEPTH: usize = 64;

/// The deepest an expression may be, estimated as the brackets around a point plus, at each of
/// their levels, the operators before it since the last `,` or `;` (`a || b || c` is two deep at
/// `c`, since Cedar builds `(a || b) || c`; `a.b.c` is two; `if x then y else if ...` is two at
/// the second `if`). The estimate counts every operator, so it is above Cedar's real depth.
///
/// An operator chain has no brackets yet nests as deep as it is long, and Cedar evaluates it by
/// recursion, about 3.4 KiB of the guest's stack a level: measured in the release component,
/// chains of 256 `+`, `.` or `if` evaluate and chains of 320 trap on every message they are
/// evaluated for. 160 keeps a margin, and allows a `||` of some eighty comparisons, more than a
/// policy needs (`principal in [...]` says the same in one).
pub(crate) const MAX_EXPRESSION_DEPTH: usize = 160;

/// The most errors a refused config reports, one per line; the rest are counted.
const MAX_ERRORS: usize = 10;

/// The longest an error line is, in characters; Cedar's help texts can be long.
const MAX_ERROR_CHARS: usize = 400;

/// What `init` builds from the config.
pub(crate) struct Loaded {
    /// Every policy of every text, as one set.
    pub(crate) policies: PolicySet,
    /// The entities, with the schema's actions when a schema is given.
    pub(crate) entities: Entities,
}

/// Reads and checks the config.
///
/// # Errors
///
/// Every problem found, one per line (at most [`MAX_ERRORS`], then a count of the rest), each
/// starting with its key: `policies:3:14: unexpected token ...`.
pub(crate) fn load(config: &Config) -> Result<Loaded, String> {
    let mut errors = Errors::default();
    let table = config.table();
    for key in table.keys() {
        if !KEYS.contains(&key.as_str()) {
            errors.push(format!(
                "{key}: unknown key; the keys are policies, entities, schema and \
                 max_policy_bytes"
            ));
        }
    }
    let max_bytes = match table.get("max_policy_bytes") {
        None => DEFAULT_MAX_POLICY_BYTES,
        Some(value) => match value.as_u64() {
            Some(bytes) if bytes > 0 => bytes,
            _ => {
                errors.push(format!(
                    "max_policy_bytes: expected a number of bytes, more than 0, got {value}"
                ));
                DEFAULT_MAX_POLICY_BYTES
            }
        },
    };
    let schema = table
        .get("schema")
        .and_then(|value| schema(value, &mut errors));
    let schema_failed = table.contains_key("schema") && schema.is_none();
    let texts = policy_texts(table.get("policies"), &mut errors);
    let policies = policies(&texts, max_bytes, schema.as_ref(), &mut errors);
    let entities = if schema_failed {
        // Checked against a schema that did not load, entities would fail for its faults.
        None
    } else {
        entities(table.get("entities"), schema.as_ref(), &mut errors)
    };
    errors.finish()?;
    match (policies, entities) {
        (Some(policies), Some(entities)) => Ok(Loaded { policies, entities }),
        // Invariant: a part is missing only after an error was pushed, and `finish` returned it.
        _ => Err("config: refused".to_owned()),
    }
}

/// The policy texts with their keys: `policies`, or `policies[0]`, `policies[1]`...
fn policy_texts<'a>(value: Option<&'a Value>, errors: &mut Errors) -> Vec<(String, &'a str)> {
    match value {
        None => {
            errors.push(
                "policies: missing: the Cedar policies are required, as text or an array of \
                 texts"
                    .to_owned(),
            );
            Vec::new()
        }
        Some(Value::String(text)) => vec![("policies".to_owned(), text.as_str())],
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(index, item)| match item {
                Value::String(text) => Some((format!("policies[{index}]"), text.as_str())),
                other => {
                    errors.push(format!(
                        "policies[{index}]: expected Cedar policy text, got {}",
                        kind(other)
                    ));
                    None
                }
            })
            .collect(),
        Some(other) => {
            errors.push(format!(
                "policies: expected Cedar policy text or an array of texts, got {}",
                kind(other)
            ));
            Vec::new()
        }
    }
}

/// Parses, checks and validates every text, and merges them into one set (Cedar names the
/// policies of each text `policy0`, `policy1`...: the merge renames the ones that clash).
fn policies(
    texts: &[(String, &str)],
    max_bytes: u64,
    schema: Option<&Schema>,
    errors: &mut Errors,
) -> Option<PolicySet> {
    let total: u64 = texts.iter().map(|(_, text)| text.len() as u64).sum();
    if total > max_bytes {
        let key = if texts.len() == 1 {
            texts[0].0.as_str()
        } else {
            "policies"
        };
        errors.push(format!(
            "{key}: {total} bytes of policy text, more than max_policy_bytes ({max_bytes})"
        ));
        return None;
    }
    let validator = schema.map(|schema| Validator::new(schema.clone()));
    let mut all = PolicySet::new();
    let mut ok = true;
    for (key, text) in texts {
        let scan = match scan(text) {
            Ok(scan) => scan,
            Err((offset, message)) => {
                errors.push(at(key, text, Some(offset), &message));
                ok = false;
                continue;
            }
        };
        let set = match text.parse::<PolicySet>() {
            Ok(set) => set,
            Err(parse) => {
                errors.extend(diagnostics(key, text, &parse));
                ok = false;
                continue;
            }
        };
        if set.templates().next().is_some() {
            errors.push(at(
                key,
                text,
                scan.slot,
                "a template (a policy with `?principal` or `?resource`): this plugin has no \
                 way to link one, write the entity instead",
            ));
            ok = false;
            continue;
        }
        if let Some(validator) = &validator {
            let result = validator.validate(&set, ValidationMode::Strict);
            let mut failed = false;
            for error in result.validation_errors() {
                errors.extend(diagnostics(key, text, error));
                failed = true;
            }
            if failed {
                ok = false;
                continue;
            }
        }
        if let Err(error) = all.merge(&set, true) {
            errors.push(format!("{key}: {error}"));
            ok = false;
        }
    }
    ok.then_some(all)
}

/// The context attributes a policy reads: the `attr` of each `context.attr`, `context["attr"]`
/// and `context has attr` in its JSON form (Cedar names attributes only literally). A policy
/// that uses the context otherwise (`context == {}`), or that cannot be shown as JSON, reads
/// every attribute ([`ALL_ATTRIBUTES`]).
pub(crate) fn context_attributes(policy: &Policy) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let Ok(json) = policy.to_json() else {
        names.insert(ALL_ATTRIBUTES.to_owned());
        return names;
    };
    let context = serde_json::json!({ "Var": "context" });
    let mut stack = vec![&json];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(map) => {
                if *value == context {
                    names.insert(ALL_ATTRIBUTES.to_owned());
                    continue;
                }
                let access = map.get(".").or_else(|| map.get("has"));
                if map.len() == 1
                    && let Some(access) = access
                    && access.get("left") == Some(&context)
                    && let Some(Value::String(attr)) = access.get("attr")
                {
                    names.insert(attr.clone());
                    continue;
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
        }
    }
    names
}

/// In [`context_attributes`], says that the policy may read every attribute.
pub(crate) const ALL_ATTRIBUTES: &str = "\0all";

/// The entities: Cedar's JSON entity format, as text (or inline, as a JSON array), checked
/// against the schema when there is one; none when the key is absent. With a schema, the
/// schema's actions are added, so that action groups work.
fn entities(
    value: Option<&Value>,
    schema: Option<&Schema>,
    errors: &mut Errors,
) -> Option<Entities> {
    let json = match value {
        None => Value::Array(Vec::new()),
        Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
            Ok(json) => json,
            Err(error) => {
                let offset = offset_of(text, error.line(), error.column());
                errors.push(at("entities", text, offset, &strip_position(&error)));
                return None;
            }
        },
        Some(array @ Value::Array(_)) => array.clone(),
        Some(other) => {
            errors.push(format!(
                "entities: expected the text of Cedar's JSON entity format, got {}",
                kind(other)
            ));
            return None;
        }
    };
    match Entities::from_json_value(json, schema) {
        Ok(entities) => Some(entities),
        Err(error) => {
            errors.extend(diagnostics("entities", "", &error));
            None
        }
    }
}

/// The schema: JSON when the text starts with `{`, Cedar's schema syntax otherwise.
fn schema(value: &Value, errors: &mut Errors) -> Option<Schema> {
    let Value::String(text) = value else {
        errors.push(format!(
            "schema: expected the text of a Cedar schema, got {}",
            kind(value)
        ));
        return None;
    };
    if text.trim_start().starts_with('{') {
        let json = match serde_json::from_str::<Value>(text) {
            Ok(json) => json,
            Err(error) => {
                let offset = offset_of(text, error.line(), error.column());
                errors.push(at("schema", text, offset, &strip_position(&error)));
                return None;
            }
        };
        return match Schema::from_json_value(json) {
            Ok(schema) => Some(schema),
            Err(error) => {
                errors.extend(diagnostics("schema", "", &error));
                None
            }
        };
    }
    // Cedar's schema parser recurses on nesting as its policy parser does.
    if let Err((offset, message)) = scan(text) {
        errors.push(at("schema", text, Some(offset), &message));
        return None;
    }
    match Schema::from_cedarschema_str(text) {
        Ok((schema, _warnings)) => Some(schema),
        Err(error) => {
            errors.extend(diagnostics("schema", text, &error));
            None
        }
    }
}

/// What [`scan`] found besides the nesting.
struct Scan {
    /// Where the first template slot (`?principal`) is.
    slot: Option<usize>,
}

/// Checks a policy text's nesting before Cedar parses it ([`MAX_BRACKET_DEPTH`],
/// [`MAX_EXPRESSION_DEPTH`]), skipping strings and `//` comments.
///
/// # Errors
///
/// The byte offset where the text gets too deep, and why.
fn scan(text: &str) -> Result<Scan, (usize, String)> {
    let bytes = text.as_bytes();
    // The operators seen so far at each open level; the first is the top level.
    let mut levels: Vec<usize> = vec![0];
    let mut operators = 0;
    let mut slot = None;
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        match byte {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                levels.push(0);
                if levels.len() - 1 > MAX_BRACKET_DEPTH {
                    return Err((
                        i,
                        format!(
                            "nested deeper than {MAX_BRACKET_DEPTH} brackets: Cedar recurses on \
                             nesting, and a plugin's stack is small"
                        ),
                    ));
                }
            }
            // An unbalanced bracket is Cedar's to report.
            b')' | b']' | b'}' if levels.len() > 1 => {
                operators -= levels.pop().unwrap_or(0);
            }
            b',' | b';' => {
                if let Some(last) = levels.last_mut() {
                    operators -= *last;
                    *last = 0;
                }
            }
            b'?' => {
                slot.get_or_insert(i);
            }
            b'&' | b'|' | b'=' | b'!' | b'<' | b'>' | b'+' | b'-' | b'*' | b'.' => {
                // A run of operator characters (`&&`, `!=`, `-!`) counts once.
                while i + 1 < bytes.len() && is_operator(bytes[i + 1]) {
                    i += 1;
                }
                operators += 1;
                if let Some(last) = levels.last_mut() {
                    *last += 1;
                }
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let start = i;
                while i + 1 < bytes.len()
                    && (bytes[i + 1].is_ascii_alphanumeric() || bytes[i + 1] == b'_')
                {
                    i += 1;
                }
                // `if ... else if ...` nests in its `else`.
                if &bytes[start..=i] == b"if" {
                    operators += 1;
                    if let Some(last) = levels.last_mut() {
                        *last += 1;
                    }
                }
            }
            _ => {}
        }
        if levels.len() + operators > MAX_EXPRESSION_DEPTH {
            return Err((
                i,
                format!(
                    "an expression deeper than {MAX_EXPRESSION_DEPTH} (brackets and chained \
                     operators): Cedar recurses on nesting, and a plugin's stack is small; \
                     split it, or use a set (`principal in [...]`)"
                ),
            ));
        }
        i += 1;
    }
    Ok(Scan { slot })
}

/// Whether `byte` continues a run of operator characters.
fn is_operator(byte: u8) -> bool {
    matches!(
        byte,
        b'&' | b'|' | b'=' | b'!' | b'<' | b'>' | b'+' | b'-' | b'*' | b'.'
    )
}

/// A miette diagnostic and the ones related to it, one error each, placed in `text` by their
/// first label. Cedar reports several parse errors as one diagnostic whose first error is the
/// diagnostic itself and whose others are related.
fn diagnostics(key: &str, text: &str, diagnostic: &dyn Diagnostic) -> Vec<String> {
    let mut lines = vec![one(key, text, diagnostic)];
    if let Some(related) = diagnostic.related() {
        lines.extend(related.map(|related| one(key, text, related)));
    }
    lines
}

/// One diagnostic as an error line: its message, its help, and the position of its first label
/// when it has one.
fn one(key: &str, text: &str, diagnostic: &dyn Diagnostic) -> String {
    let offset = diagnostic
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| label.offset())
        .filter(|_| !text.is_empty());
    let mut message = diagnostic.to_string();
    // Some of Cedar's errors say what failed, and their source why.
    let mut source = diagnostic.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !message.contains(&cause_text) {
            message = format!("{message}: {cause_text}");
        }
        source = cause.source();
    }
    if let Some(help) = diagnostic.help() {
        message = format!("{message} ({help})");
    }
    at(key, text, offset, &message)
}

/// `key:LINE:COLUMN: message`, or `key: message` without an offset, on one line.
fn at(key: &str, text: &str, offset: Option<usize>, message: &str) -> String {
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    match offset {
        Some(offset) => {
            let (line, column) = line_column(text, offset);
            format!("{key}:{line}:{column}: {message}")
        }
        None => format!("{key}: {message}"),
    }
}

/// The 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    let line = before.matches('\n').count() + 1;
    (line, before[line_start..].chars().count() + 1)
}

/// The byte offset of serde_json's 1-based line and byte column; `None` for an error without a
/// position (line 0).
fn offset_of(text: &str, line: usize, column: usize) -> Option<usize> {
    if line == 0 {
        return None;
    }
    let start: usize = text
        .split_inclusive('\n')
        .take(line - 1)
        .map(str::len)
        .sum();
    Some(start + column.saturating_sub(1))
}

/// serde_json's message without its ` at line L column C`, which the key's position replaces.
fn strip_position(error: &serde_json::Error) -> String {
    let message = error.to_string();
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message,
    }
}

/// A JSON value's kind, for an error.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

/// The errors found so far.
#[derive(Default)]
struct Errors(Vec<String>);

impl Errors {
    fn push(&mut self, line: String) {
        self.0.push(line);
    }

    fn extend(&mut self, lines: impl IntoIterator<Item = String>) {
        self.0.extend(lines);
    }

    /// `Err` with the errors, one per line, when there are any.
    fn finish(self) -> Result<(), String> {
        if self.0.is_empty() {
            return Ok(());
        }
        let more = self.0.len().saturating_sub(MAX_ERRORS);
        let mut lines: Vec<String> = self
            .0
            .into_iter()
            .take(MAX_ERRORS)
            .map(|line| match line.char_indices().nth(MAX_ERROR_CHARS) {
                Some((at, _)) => format!("{}...", &line[..at]),
                None => line,
            })
            .collect();
        if more > 0 {
            lines.push(format!("and {more} more errors"));
        }
        Err(lines.join("\n"))
    }
}
