//! `allowlist`: which functions each user may call, with checks on their arguments, and whether
//! they may send free-text queries.
//!
//! A sync or async message is one of:
//!
//! - a **call**, a general list whose head is a symbol (`` (`fn;1;2) ``, q's way) or a string
//!   (`("fn";1;2)`, as PyKX and qPython send calls): it passes when the user may call `fn` and
//!   the arguments fit `fn`'s rule, and is denied otherwise;
//! - a **free-text query**, a string (`"select from t"`): it passes when `queries.allow` is true
//!   or the user is in `queries.users`, and is denied otherwise;
//! - anything else (a lambda, a bare value): denied.
//!
//! A pass hands the message on to the next plugin or the backend; this plugin never answers.
//!
//! # Config
//!
//! ```toml
//! # Functions each user may call; "*" is every function.
//! users = { alice = ["legalOperation", "echo"], admin = ["*"] }
//!
//! # Groups: their members may call their functions too.
//! [groups.ops]
//! members = ["bob", "carol"]
//! functions = ["legalOperation", "status"]
//!
//! # Argument checks, per function: how many, and the q type of each (names as q says them:
//! # "long", "float", "symbol", "string", "longs" for a long vector, "list", "dict", "table",
//! # "any"). Either key may be left out.
//! [args.legalOperation]
//! count = 2
//! types = ["long", "long"]
//!
//! # Free-text queries: denied unless `allow` is true (everyone) or the user is listed.
//! [queries]
//! allow = false
//! users = ["admin"]
//! ```
//!
//! Every key is optional; unknown keys are errors. With no config every call and every query is
//! denied.

use std::collections::{BTreeMap, BTreeSet};

use qgate_plugin_sdk::{Config, Events, MessageCtx, Plugin, Verdict, export_plugin, q::KExt as _};
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

    /// Whether `user` may send free-text queries.
    pub fn may_query(&self, user: &str) -> bool {
        self.queries.allow || self.queries.users.contains(user)
    }

    /// The verdict for a message: pass, or deny saying why.
    pub fn decide(&self, ctx: &MessageCtx<'_>) -> Verdict {
        let user = ctx.user();
        if let Some(function) = ctx.head() {
            if !self.may_call(user, function) {
                return Verdict::deny(format!("access: {function} is not allowed for {user}"));
            }
            return match self.check_args(function, ctx) {
                Ok(()) => Verdict::Pass,
                Err(message) => Verdict::deny(format!("{function}: {message}")),
            };
        }
        if ctx.is_query() {
            return if self.may_query(user) {
                Verdict::Pass
            } else {
                Verdict::deny(format!(
                    "access: free-text queries are not allowed for {user}"
                ))
            };
        }
        Verdict::deny("access: only calls to allowed functions are accepted")
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

/// The plugin.
pub struct Allowlist {
    policy: Policy,
}

impl Plugin for Allowlist {
    const EVENTS: Events = Events::SYNC.union(Events::ASYNC_MESSAGE);

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
        Ok(Self { policy })
    }

    fn on_sync(&self, ctx: &MessageCtx<'_>) -> Verdict {
        self.policy.decide(ctx)
    }

    fn on_async(&self, ctx: &MessageCtx<'_>) -> Verdict {
        self.policy.decide(ctx)
    }
}

export_plugin!(Allowlist);

#[cfg(test)]
mod tests {
    use qgate_plugin_sdk::{Atom, K, testing::session};

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
    fn bad_configs_are_refused() {
        for json in [
            r#"{"user": {}}"#,
            r#"{"args": {"f": {"count": 1, "types": ["long", "long"]}}}"#,
            r#"{"queries": {"allow": "yes"}}"#,
        ] {
            let config = Config::from_json(json).unwrap_or_else(|e| panic!("{e}"));
            assert!(Allowlist::init(&config).is_err(), "{json}");
        }
    }
}
