//! `allowlist`: which functions each user may call, with checks on their arguments, and which
//! free-text queries they may send, decided on the query's facts: the tables it reads and writes,
//! the functions it calls, and its flags.
//!
//! A sync or async message is one of:
//!
//! - a **call**, a general list whose head is a symbol (`` (`fn;1;2) ``, q's way) or a string
//!   (`("fn";1;2)`, as PyKX and qPython send calls): it passes when the user may call `fn` and
//!   the arguments fit `fn`'s rule (and, for a user with table rules, when the call's facts are
//!   allowed too: `` (`value;"...") `` is `eval`, `` (`insert;`t;...) `` writes `t`), and is
//!   denied otherwise;
//! - a **free-text query**, a string (`"select from t"`): for a user with table rules, it passes
//!   when every fact of the query is allowed (below); for any other user it passes when
//!   `queries.allow` is true or the user is in `queries.users`, and is denied otherwise;
//! - anything else (a lambda, a bare value): denied.
//!
//! A pass hands the message on to the next plugin or the backend; this plugin never answers.
//!
//! # Table rules
//!
//! A user has table rules when `tables` names them, or a group they are in sets `read`, `write`
//! or `flags`; the grants of all of them add up.
//! Their free text passes only when, in the facts the host's q parser found:
//!
//! - every table read and every bare variable read (`trade`, `.perm.users`) is in `read`;
//! - every table written (`update`, `delete`, `insert`, `upsert`, functional `!`) and every global
//!   assigned is in `write` (an update reads its table as well: grant both);
//! - every user function called, inside lambdas included, is one the user may call (`users`,
//!   `groups.*.functions`);
//! - every flag is granted in `flags`, from `system eval ipc file exit multi lambda assign assign_z`;
//!   none is granted by default, and `unparsed` (text the parser cannot read with certainty,
//!   `k)` text included) can never be granted.
//!
//! `"*"` in `read` or `write` is every table.
//! So a leading `;` (`multi`), `exit 0` inside a bracket (`exit`), `0"..."`, `(.)"..."` and
//! `value "..."` (`eval`), and a `.z.pg` assignment hidden in a `where` clause (`assign_z`) are
//! denied unless their flag is granted.
//! For these users `queries` has no say: table rules decide their free text.
//!
//! # Config
//!
//! ```toml
//! # Functions each user may call; "*" is every function.
//! users = { alice = ["legalOperation", "echo"], admin = ["*"] }
//!
//! # Groups: their members may call their functions too, and have their table rules.
//! [groups.ops]
//! members = ["bob", "carol"]
//! functions = ["legalOperation", "status"]
//! read = ["trade", "quote"]
//! write = ["orders"]
//! flags = ["multi"]
//!
//! # Table rules, per user: tables read and written, flags granted. Each key may be left out.
//! [tables.alice]
//! read = ["trade"]
//!
//! # Argument checks, per function: how many, and the q type of each (names as q says them:
//! # "long", "float", "symbol", "string", "longs" for a long vector, "list", "dict", "table",
//! # "any"). Either key may be left out.
//! [args.legalOperation]
//! count = 2
//! types = ["long", "long"]
//!
//! # Free-text queries of users without table rules: denied unless `allow` is true (everyone)
//! # or the user is listed.
//! [queries]
//! allow = false
//! users = ["admin"]
//! ```
//!
//!
//! # HTTP requests without q text: only these paths pass (a dashboard's page, say).
//! [http]
//! paths = ["/index.html"]
//! ```
//!
//! Every key is optional; unknown keys and unknown flags are errors. With no config every call
//! and every query is denied.
//!
//! # HTTP
//!
//! An HTTP request on the q port carries q text too: the query of `GET /?expr` and a POST's
//! body, which kdb+'s `.z.ph` and `.z.pp` run. That text is decided exactly as a free-text query
//! of the same user is, on the same facts (a denial is a `403` saying why); a request without q
//! text passes only for a path in `http.paths`.

use std::collections::{BTreeMap, BTreeSet};

use qgate_plugin_sdk::{
    Config, Events, Facts, Flags, HttpCtx, HttpVerdict, MessageCtx, Plugin, Verdict,
    export_plugin, http, q::KExt as _,
};
use serde::Deserialize;

/// The plugin's config, as `config.toml` spells it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// `users = { alice = ["fn", ...] }`: the functions each user may call.
    #[serde(default)]
    pub users: BTreeMap<String, BTreeSet<String>>,
    /// `[groups.NAME] members = [...] functions = [...]`.
    #[serde(default)]
    pub groups: BTreeMap<String, Group>,
    /// `[args.FN] count = N types = [...]`.
    #[serde(default)]
    pub args: BTreeMap<String, ArgRule>,
    /// `[queries] allow = bool users = [...]`.
    #[serde(default)]
    pub queries: Queries,
    /// `[tables.USER] read = [...] write = [...] flags = [...]`.
    #[serde(default)]
    pub tables: BTreeMap<String, TableRule>,
    /// `[http] paths = [...]`.
    #[serde(default)]
    pub http: HttpRule,
}

/// HTTP requests without q text (a page, a file): which paths pass.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRule {
    /// The paths, exactly as requested (`/index.html`), that pass to the backend.
    #[serde(default)]
    pub paths: BTreeSet<String>,
}

/// A group of users sharing a list of functions.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// The users in the group.
    #[serde(default)]
    pub members: BTreeSet<String>,
    /// The functions they may call; `"*"` is every function.
    #[serde(default)]
    pub functions: BTreeSet<String>,
    /// Tables and variables they may read (table rules, as in [`TableRule`]).
    pub read: Option<BTreeSet<String>>,
    /// Tables they may write and globals they may assign.
    pub write: Option<BTreeSet<String>>,
    /// The flags granted to them.
    pub flags: Option<BTreeSet<String>>,
}

impl Group {
    /// The group's table rules.
    fn rule(&self) -> TableRule {
        TableRule {
            read: self.read.clone(),
            write: self.write.clone(),
            flags: self.flags.clone(),
        }
    }
}

/// What a user's free text may do: any key set gives the user table rules.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableRule {
    /// Tables and variables that may be read; `"*"` is every one.
    pub read: Option<BTreeSet<String>>,
    /// Tables that may be written and globals that may be assigned; `"*"` is every one.
    pub write: Option<BTreeSet<String>>,
    /// The flags granted, by name.
    pub flags: Option<BTreeSet<String>>,
}

impl TableRule {
    fn is_set(&self) -> bool {
        self.read.is_some() || self.write.is_some() || self.flags.is_some()
    }
}

/// A user's table rules, summed over `tables` and their groups.
#[derive(Debug, Default)]
struct Grants {
    read: BTreeSet<String>,
    write: BTreeSet<String>,
    flags: Flags,
}

impl Grants {
    fn add(&mut self, rule: &TableRule) -> Result<(), String> {
        self.read.extend(rule.read.iter().flatten().cloned());
        self.write.extend(rule.write.iter().flatten().cloned());
        for name in rule.flags.iter().flatten() {
            match Flags::from_name(name) {
                Some(Flags::UNPARSED) => {
                    return Err(
                        "the flag `unparsed` can never be granted: text the parser cannot read \
                         is always denied"
                            .to_owned(),
                    );
                }
                Some(flag) => self.flags |= flag,
                None => {
                    let known: Vec<&str> = Flags::ALL.iter().map(|(_, name)| *name).collect();
                    return Err(format!(
                        "unknown flag `{name}`; the flags are {}",
                        known.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Whether `set` grants `name`, or everything.
fn granted(set: &BTreeSet<String>, name: &str) -> bool {
    set.contains(name) || set.contains(WILDCARD)
}

/// The arguments a function must be called with.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgRule {
    /// How many arguments.
    pub count: Option<usize>,
    /// The q type name of each argument, in order; `"any"` accepts any type.
    pub types: Option<Vec<String>>,
}

/// Who may send free-text queries.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Queries {
    /// Everyone may.
    #[serde(default)]
    pub allow: bool,
    /// These users may.
    #[serde(default)]
    pub users: BTreeSet<String>,
}

/// Every function.
const WILDCARD: &str = "*";

impl Policy {
    /// Whether `user` may call `function`, directly or through a group.
    pub fn may_call(&self, user: &str, function: &str) -> bool {
        let allows = |functions: &BTreeSet<String>| {
            functions.contains(function) || functions.contains(WILDCARD)
        };
        self.users.get(user).is_some_and(allows)
            || self
                .groups
                .values()
                .any(|group| group.members.contains(user) && allows(&group.functions))
    }

    /// Whether `user` may send free-text queries (for a user without table rules).
    pub fn may_query(&self, user: &str) -> bool {
        self.queries.allow || self.queries.users.contains(user)
    }

    /// The table rules of every user who has any, checked.
    fn grants(&self) -> Result<BTreeMap<String, Grants>, String> {
        let mut all: BTreeMap<String, Grants> = BTreeMap::new();
        for (user, rule) in &self.tables {
            all.entry(user.clone())
                .or_default()
                .add(rule)
                .map_err(|e| format!("config: tables.{user}: {e}"))?;
        }
        for (name, group) in &self.groups {
            let rule = group.rule();
            if !rule.is_set() {
                continue;
            }
            for user in &group.members {
                all.entry(user.clone())
                    .or_default()
                    .add(&rule)
                    .map_err(|e| format!("config: groups.{name}: {e}"))?;
            }
        }
        Ok(all)
    }

    /// Whether `facts` are all allowed for `user` under `grants`: `Err` names the first that is
    /// not.
    fn check_facts(&self, user: &str, grants: &Grants, facts: &Facts) -> Result<(), String> {
        if facts.flags.contains(Flags::UNPARSED) {
            return Err("access: the query could not be read with certainty (unparsed)".to_owned());
        }
        let reads = facts.tables_read.iter().chain(&facts.variables);
        if let Some(table) = reads.into_iter().find(|t| !granted(&grants.read, t)) {
            return Err(format!("access: {user} may not read {table}"));
        }
        let writes = facts.tables_written.iter().chain(&facts.assigned);
        if let Some(table) = writes.into_iter().find(|t| !granted(&grants.write, t)) {
            return Err(format!("access: {user} may not write {table}"));
        }
        if let Some(function) = facts.functions.iter().find(|f| !self.may_call(user, f)) {
            return Err(format!("access: {function} is not allowed for {user}"));
        }
        if let Some(flag) = Flags::ALL
            .iter()
            .find(|(flag, _)| facts.flags.contains(*flag) && !grants.flags.contains(*flag))
        {
            return Err(format!("access: {} is not granted to {user}", flag.1));
        }
        Ok(())
    }

    /// Checks the arguments of a call against the function's rule, fetching only the ones whose
    /// type is checked.
    fn check_args(&self, function: &str, ctx: &MessageCtx<'_>) -> Result<(), String> {
        let Some(rule) = self.args.get(function) else {
            return Ok(());
        };
        let count = ctx.arg_count();
        if let Some(expected) = rule.count
            && count != expected
        {
            return Err(format!("expected {expected} arguments, got {count}"));
        }
        for (index, expected) in rule.types.iter().flatten().enumerate() {
            if expected == "any" {
                continue;
            }
            let Some(arg) = ctx.arg(index) else {
                return Err(format!("argument {} is missing", index + 1));
            };
            let actual = arg.type_name();
            if actual != expected {
                return Err(format!(
                    "argument {} must be {expected}, got {actual}",
                    index + 1
                ));
            }
        }
        Ok(())
    }
}

/// The plugin: its config, and the table rules compiled from it.
pub struct Allowlist {
    policy: Policy,
    grants: BTreeMap<String, Grants>,
}

impl Allowlist {
    /// The verdict for a message: pass, or deny saying why.
    pub fn decide(&self, ctx: &MessageCtx<'_>) -> Verdict {
        let user = ctx.user();
        let grants = self.grants.get(user);
        if let Some(function) = ctx.head() {
            if !self.policy.may_call(user, function) {
                // The user and the function decide it: it stands for the connection's later
                // calls of the function.
                ctx.same_for_head();
                return Verdict::deny(format!("access: {function} is not allowed for {user}"));
            }
            if let Err(message) = self.policy.check_args(function, ctx) {
                return Verdict::deny(format!("{function}: {message}"));
            }
            return match grants.map(|g| self.policy.check_facts(user, g, ctx.facts())) {
                Some(Err(message)) => Verdict::deny(message),
                Some(Ok(())) => Verdict::Pass,
                None => {
                    // Without argument rules for the function or table rules for the user, the
                    // arguments play no part: the pass stands for later calls of it.
                    if !self.policy.args.contains_key(function) {
                        ctx.same_for_head();
                    }
                    Verdict::Pass
                }
            };
        }
        if ctx.is_query() {
            return match self.check_text(user, ctx.facts()) {
                Ok(()) => Verdict::Pass,
                Err(message) => Verdict::deny(message),
            };
        }
        Verdict::deny("access: only calls to allowed functions are accepted")
    }

    /// Whether `user` may send free text with these `facts`: on the facts for a user with table
    /// rules, by the `queries` switch for any other; `Err` says why not.
    fn check_text(&self, user: &str, facts: &Facts) -> Result<(), String> {
        match self.grants.get(user) {
            Some(grants) => self.policy.check_facts(user, grants, facts),
            None if self.policy.may_query(user) => Ok(()),
            None => Err(format!(
                "access: free-text queries are not allowed for {user}"
            )),
        }
    }

    /// The verdict for an HTTP request: its q text (`GET /?expr`, a POST's body) is free text,
    /// decided as a free-text query is; a request without q text passes only for a path in
    /// `http.paths`.
    pub fn decide_http(&self, ctx: &HttpCtx<'_>) -> HttpVerdict {
        let user = ctx.user();
        if ctx.text().is_some() {
            return match self.check_text(user, ctx.facts()) {
                Ok(()) => HttpVerdict::Pass,
                Err(message) => http::deny(403, message),
            };
        }
        if self.policy.http.paths.contains(ctx.path()) {
            return HttpVerdict::Pass;
        }
        http::deny(
            403,
            format!("access: {} is not among the paths http.paths allows", ctx.path()),
        )
    }
}

impl Plugin for Allowlist {
    const EVENTS: Events = Events::SYNC
        .union(Events::ASYNC_MESSAGE)
        .union(Events::HTTP);

    fn init(config: &Config) -> Result<Self, String> {
        let policy: Policy = config.parse()?;
        for (function, rule) in &policy.args {
            if let (Some(count), Some(types)) = (rule.count, &rule.types)
                && count != types.len()
            {
                return Err(format!(
                    "config: args.{function}: count is {count} but {} types are listed",
                    types.len()
                ));
            }
        }
        let grants = policy.grants()?;
        Ok(Self { policy, grants })
    }

    fn on_sync(&self, ctx: &MessageCtx<'_>) -> Verdict {
        self.decide(ctx)
    }

    fn on_async(&self, ctx: &MessageCtx<'_>) -> Verdict {
        self.decide(ctx)
    }

    fn on_http(&self, ctx: &HttpCtx<'_>) -> HttpVerdict {
        self.decide_http(ctx)
    }
}

export_plugin!(Allowlist);

#[cfg(test)]
mod tests {
    use qgate_plugin_sdk::{
        Atom, K,
        testing::{self, session},
    };

    use super::*;

    const CONFIG: &str = r#"{
        "users": {"alice": ["legalOperation", "echo"], "admin": ["*"]},
        "groups": {"ops": {"members": ["bob"], "functions": ["status"]}},
        "args": {"legalOperation": {"count": 2, "types": ["long", "long"]}},
        "queries": {"allow": false, "users": ["admin"]}
    }"#;

    fn plugin() -> Allowlist {
        let config = Config::from_json(CONFIG).unwrap_or_else(|e| panic!("{e}"));
        Allowlist::init(&config).unwrap_or_else(|e| panic!("{e}"))
    }

    fn check(user: &str, value: K, expect: &str) {
        let ctx = MessageCtx::from_value(session(4, user), &value);
        let actual = match plugin().on_sync(&ctx) {
            Verdict::Pass => "pass".to_owned(),
            Verdict::Deny(message) => format!("deny: {message}"),
            Verdict::Reply(_) => "reply".to_owned(),
            Verdict::Route(upstream) => format!("route: {upstream}"),
        };
        assert_eq!(actual, expect, "{user} sending {value}");
    }

    /// Table rules: carol reads trade and writes orders; dave reads trade and, through his
    /// group, quote, with lambdas granted; carol is also in `queries.users`, which table rules
    /// override.
    const TABLES: &str = r#"{
        "users": {"carol": ["getTrades", "insert", "value"], "dave": ["getTrades"]},
        "groups": {"quants": {"members": ["dave"], "read": ["quote"], "flags": ["lambda"]}},
        "tables": {"carol": {"read": ["trade"], "write": ["orders"]}, "dave": {"read": ["trade"]}},
        "queries": {"users": ["carol"]}
    }"#;

    fn verdict(config: &str, user: &str, value: &K) -> String {
        let config = Config::from_json(config).unwrap_or_else(|e| panic!("{e}"));
        let plugin = Allowlist::init(&config).unwrap_or_else(|e| panic!("{e}"));
        let ctx = MessageCtx::from_value(session(4, user), value);
        match plugin.on_sync(&ctx) {
            Verdict::Pass => "pass".to_owned(),
            Verdict::Deny(message) => format!("deny: {message}"),
            Verdict::Reply(_) => "reply".to_owned(),
            Verdict::Route(upstream) => format!("route: {upstream}"),
        }
    }

    /// Checks free text under the table rules.
    fn text(user: &str, query: &str, expect: &str) {
        let actual = verdict(TABLES, user, &K::string(query));
        assert_eq!(actual, expect, "{user} sending {query:?}");
    }

    #[test]
    fn a_verdict_stands_for_its_function_only_when_the_arguments_play_no_part() {
        let call = |name: &str| K::list(vec![K::symbol(name), K::long(1), K::long(2)]);
        // Allowed with no argument rule, or not allowed: the user and the function decide.
        for (user, value) in [("alice", call("echo")), ("bob", call("echo"))] {
            verdict(CONFIG, user, &value);
            assert!(testing::same_for_head(), "{user} calling {value}");
        }
        // An argument rule, table rules (carol's), or free text: asked each time.
        for (config, user, value) in [
            (CONFIG, "alice", call("legalOperation")),
            (TABLES, "carol", call("getTrades")),
            (CONFIG, "admin", K::string("1+1")),
        ] {
            verdict(config, user, &value);
            assert!(!testing::same_for_head(), "{user} sending {value}");
        }
    }

    #[test]
    fn free_text_passes_only_when_every_fact_is_allowed() {
        text("carol", "select from trade where sym=`AAPL", "pass");
        text("carol", "select max price by sym from trade", "pass");
        text(
            "carol",
            "select from quote",
            "deny: access: carol may not read quote",
        );
        text("carol", "`orders insert (1;`a)", "pass");
        text("carol", "a:1", "deny: access: carol may not write a");
        text("carol", "getTrades[`AAPL]", "pass");
        text(
            "carol",
            "secretFn[`AAPL]",
            "deny: access: secretFn is not allowed for carol",
        );
    }

    #[test]
    fn torq_parity() {
        // A bare variable needs read access.
        text("carol", "trade", "pass");
        text(
            "carol",
            ".perm.users",
            "deny: access: carol may not read .perm.users",
        );
        // Functional select, update and delete need read or write on their table.
        text("carol", "?[trade;();0b;()]", "pass");
        text(
            "carol",
            "?[quote;();0b;()]",
            "deny: access: carol may not read quote",
        );
        text(
            "carol",
            "![`trade;();0b;(enlist`x)!enlist 1]",
            "deny: access: carol may not write trade",
        );
        text(
            "carol",
            "delete from `trade",
            "deny: access: carol may not write trade",
        );
        // Joins check their table arguments.
        text(
            "carol",
            "trade lj quote",
            "deny: access: carol may not read quote",
        );
        text("dave", "trade lj `sym xkey quote", "pass");
        // Lambdas are parsed, not tokenised.
        text(
            "dave",
            "{select from secret}[]",
            "deny: access: dave may not read secret",
        );
        text("dave", "{select from quote where sym=x}[`a]", "pass");
        text(
            "carol",
            "{select from trade}[]",
            "deny: access: lambda is not granted to carol",
        );
    }

    #[test]
    fn the_known_bypasses_are_denied() {
        for (query, expect) in [
            // A leading `;`.
            (
                ";select from trade",
                "deny: access: multi is not granted to carol",
            ),
            (
                ";system\"rm -rf /\"",
                "deny: access: system is not granted to carol",
            ),
            // Side effects inside brackets.
            (
                "select from trade where sym in `a`b,[system\"ls\"]",
                "deny: access: system is not granted to carol",
            ),
            (
                "getTrades[`a;exit 0]",
                "deny: access: exit is not granted to carol",
            ),
            // `k)` text.
            (
                "k)select from trade",
                "deny: access: the query could not be read with certainty (unparsed)",
            ),
            // Handle 0, `(.)` and `value` on a string.
            ("0\"exit 0\"", "deny: access: eval is not granted to carol"),
            (
                "(.)\"exit 0\"",
                "deny: access: eval is not granted to carol",
            ),
            (
                "value \"exit 0\"",
                "deny: access: eval is not granted to carol",
            ),
            // A `.z.pg` reassignment hidden in a select.
            (
                "select from trade where sym=(.z.pg:{x})",
                "deny: access: carol may not write .z.pg",
            ),
            (
                "select from trade where {.z.pg::{x};1b}[]",
                "deny: access: carol may not write .z.pg",
            ),
        ] {
            text("carol", query, expect);
        }
    }

    #[test]
    fn table_rules_override_the_query_switch_and_check_calls_too() {
        // carol is in `queries.users`, yet her table rules decide.
        text(
            "carol",
            "select from quote",
            "deny: access: carol may not read quote",
        );
        // A call: its function, then its facts.
        let insert = |table: &str| {
            call(
                K::symbol("insert"),
                vec![K::symbol(table), K::list(vec![K::long(1), K::symbol("a")])],
            )
        };
        assert_eq!(verdict(TABLES, "carol", &insert("orders")), "pass");
        assert_eq!(
            verdict(TABLES, "carol", &insert("trade")),
            "deny: access: carol may not write trade"
        );
        let eval = call(K::symbol("value"), vec![K::string("exit 0")]);
        assert_eq!(
            verdict(TABLES, "carol", &eval),
            "deny: access: eval is not granted to carol"
        );
        let get = call(K::symbol("getTrades"), vec![K::symbol("AAPL")]);
        assert_eq!(verdict(TABLES, "dave", &get), "pass");
        // A user without table rules keeps the switch.
        assert_eq!(
            verdict(TABLES, "erin", &K::string("select from trade")),
            "deny: access: free-text queries are not allowed for erin"
        );
    }

    fn call(head: K, args: Vec<K>) -> K {
        K::list(std::iter::once(head).chain(args).collect())
    }

    #[test]
    fn users_call_their_functions_by_symbol_or_string() {
        let args = vec![K::long(1), K::long(2)];
        check(
            "alice",
            call(K::symbol("legalOperation"), args.clone()),
            "pass",
        );
        check(
            "alice",
            call(K::string("legalOperation"), args.clone()),
            "pass",
        );
        check("admin", call(K::symbol("anything"), vec![]), "pass");
        check(
            "alice",
            call(K::symbol("drop"), vec![]),
            "deny: access: drop is not allowed for alice",
        );
        check(
            "mallory",
            call(K::string("echo"), vec![]),
            "deny: access: echo is not allowed for mallory",
        );
    }

    #[test]
    fn groups_grant_their_functions_to_members() {
        check("bob", call(K::symbol("status"), vec![]), "pass");
        check(
            "bob",
            call(K::symbol("echo"), vec![]),
            "deny: access: echo is not allowed for bob",
        );
    }

    #[test]
    fn arguments_are_counted_and_typed() {
        check(
            "alice",
            call(K::symbol("legalOperation"), vec![K::long(1)]),
            "deny: legalOperation: expected 2 arguments, got 1",
        );
        check(
            "alice",
            call(
                K::symbol("legalOperation"),
                vec![K::long(1), K::Atom(Atom::Float(2.0))],
            ),
            "deny: legalOperation: argument 2 must be long, got float",
        );
        // No rule for echo: any arguments.
        check(
            "alice",
            call(K::symbol("echo"), vec![K::string("x")]),
            "pass",
        );
    }

    #[test]
    fn free_text_queries_are_a_switch() {
        check("admin", K::string("select from t"), "pass");
        check(
            "alice",
            K::string("select from t"),
            "deny: access: free-text queries are not allowed for alice",
        );
        check(
            "alice",
            K::long(1),
            "deny: access: only calls to allowed functions are accepted",
        );
    }

    #[test]
    fn http_text_is_decided_as_free_text_and_other_paths_by_http_paths() {
        let config = r#"{
            "queries": {"users": ["admin"]},
            "tables": {"alice": {"read": ["trade"]}},
            "http": {"paths": ["/index.html"]}
        }"#;
        let config = Config::from_json(config).unwrap_or_else(|e| panic!("{e}"));
        let plugin = Allowlist::init(&config).unwrap_or_else(|e| panic!("{e}"));
        let ask = |user: &str, method: &str, target: &str, body: &[u8]| {
            match plugin.decide_http(&HttpCtx::new(session(1, user), method, target, &[], body)) {
                HttpVerdict::Pass => "pass".to_owned(),
                HttpVerdict::Deny(deny) => format!("{} {}", deny.status, deny.text),
                other => format!("{other:?}"),
            }
        };
        assert_eq!(ask("alice", "GET", "/?select%20from%20trade", b""), "pass");
        assert_eq!(
            ask("alice", "GET", "/?delete%20from%20`trade", b""),
            "403 access: alice may not write trade"
        );
        assert_eq!(
            ask("alice", "POST", "/", b"system\"ls\""),
            "403 access: system is not granted to alice"
        );
        assert_eq!(
            ask("bob", "GET", "/?1+1", b""),
            "403 access: free-text queries are not allowed for bob"
        );
        assert_eq!(ask("admin", "GET", "/?1+1", b""), "pass");
        assert_eq!(ask("bob", "GET", "/index.html", b""), "pass");
        assert_eq!(
            ask("bob", "GET", "/etc/passwd", b""),
            "403 access: /etc/passwd is not among the paths http.paths allows"
        );
    }

    #[test]
    fn bad_configs_are_refused() {
        for json in [
            r#"{"user": {}}"#,
            r#"{"args": {"f": {"count": 1, "types": ["long", "long"]}}}"#,
            r#"{"queries": {"allow": "yes"}}"#,
            r#"{"tables": {"u": {"flags": ["unparsed"]}}}"#,
            r#"{"tables": {"u": {"flags": ["sytem"]}}}"#,
            r#"{"tables": {"u": {"reed": ["t"]}}}"#,
            r#"{"groups": {"g": {"members": ["u"], "flags": ["unparsed"]}}}"#,
        ] {
            let config = Config::from_json(json).unwrap_or_else(|e| panic!("{e}"));
            assert!(Allowlist::init(&config).is_err(), "{json}");
        }
    }
}
