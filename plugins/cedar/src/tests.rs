//! The plugin's tests: the model (requests, context, decisions), the config's errors, and the
//! walkthrough's parity with the `allowlist` plugin.

use qgate_plugin_sdk::{Atom, CertIdentity, K, TlsFacts, testing};

use super::*;
use crate::load::{MAX_BRACKET_DEPTH, MAX_EXPRESSION_DEPTH};

/// The plugin with `config` (JSON).
fn plugin(config: &str) -> Cedar {
    let config = Config::from_json(config).unwrap_or_else(|e| panic!("{e}"));
    Cedar::init(&config).unwrap_or_else(|e| panic!("{e}"))
}

/// The plugin with these policies and nothing else.
fn with_policies(policies: &str) -> Cedar {
    plugin(&serde_json::json!({ "policies": policies }).to_string())
}

/// The error `init` gives for `config` (JSON).
fn refusal(config: serde_json::Value) -> String {
    let config = Config::from_json(&config.to_string()).unwrap_or_else(|e| panic!("{e}"));
    match Cedar::init(&config) {
        Ok(_) => panic!("{config:?} was accepted"),
        Err(message) => message,
    }
}

/// What `plugin` decides for `session` sending `value`: "pass" or "deny: MESSAGE".
fn verdict_in(plugin: &Cedar, session: Session, value: &K) -> String {
    let ctx = MessageCtx::from_value(session, value);
    let sync = show(plugin.on_sync(&ctx));
    let ctx = MessageCtx::from_value(ctx.session().clone(), value);
    assert_eq!(
        show(plugin.on_async(&ctx)),
        sync,
        "sync and async decide alike"
    );
    sync
}

fn show(verdict: Verdict) -> String {
    match verdict {
        Verdict::Pass => "pass".to_owned(),
        Verdict::Deny(message) => format!("deny: {message}"),
        Verdict::Reply(_) => "reply".to_owned(),
        Verdict::Route(upstream) => format!("route: {upstream}"),
    }
}

/// What `plugin` decides for `user` (from 127.0.0.1, no TLS) sending `value`.
fn verdict(plugin: &Cedar, user: &str, value: &K) -> String {
    verdict_in(plugin, testing::session(4, user), value)
}

fn call(head: &str, args: Vec<K>) -> K {
    K::list(std::iter::once(K::symbol(head)).chain(args).collect())
}

fn text(query: &str) -> K {
    K::string(query)
}

fn session_from(user: &str, address: &str) -> Session {
    Session {
        peer_address: address.to_owned(),
        ..testing::session(4, user)
    }
}

fn session_with_cn(user: &str, cn: Option<&str>) -> Session {
    Session {
        tls: Some(TlsFacts {
            protocol: "TLSv1.3".to_owned(),
            cipher: "TLS13_AES_256_GCM_SHA384".to_owned(),
            sni: None,
            client_cert: cn.map(|cn| CertIdentity {
                subject_cn: Some(cn.to_owned()),
                sans: Vec::new(),
                fingerprint_sha256: String::new(),
                not_before: 0,
                not_after: 0,
            }),
        }),
        ..testing::session(4, user)
    }
}

fn auth(plugin: &Cedar, session: Session) -> AuthVerdict {
    plugin.on_auth(&AuthCtx::new(session, Some(b"secret".to_vec())))
}

/// Permits every action on every resource: the rules under test are the forbids.
const PERMIT_ALL: &str = "permit (principal, action, resource);\n";

#[test]
fn nothing_is_permitted_by_default_and_a_forbid_overrides_a_permit() {
    let empty = with_policies("");
    assert_eq!(
        verdict(&empty, "alice", &call("f", vec![])),
        "deny: access: cedar forbids alice to call Function::\"f\""
    );
    assert!(matches!(
        auth(&empty, testing::session(4, "alice")),
        AuthVerdict::Deny
    ));

    let cedar = with_policies(
        r#"
        permit (principal == User::"alice", action == Action::"call", resource);
        permit (principal == User::"alice", action == Action::"connect", resource);
        forbid (principal, action == Action::"call", resource == Function::"drop");
        "#,
    );
    assert_eq!(
        verdict(&cedar, "alice", &call("f", vec![K::long(1)])),
        "pass"
    );
    assert_eq!(
        verdict(&cedar, "alice", &call("drop", vec![])),
        "deny: access: cedar forbids alice to call Function::\"drop\""
    );
    assert_eq!(
        verdict(&cedar, "bob", &call("f", vec![])),
        "deny: access: cedar forbids bob to call Function::\"f\""
    );
    // A permitted login passes to the rest of the chain: Cedar does not check passwords.
    assert!(matches!(
        auth(&cedar, testing::session(4, "alice")),
        AuthVerdict::Pass
    ));
    assert!(matches!(
        auth(&cedar, testing::session(4, "bob")),
        AuthVerdict::Deny
    ));
}

/// Members of a group, through the entities' parents; tables and functions with parents too.
const GROUPS: &str = r#"[
    {"uid": {"type": "User", "id": "carol"}, "attrs": {}, "parents": [{"type": "Group", "id": "quants"}]},
    {"uid": {"type": "Group", "id": "quants"}, "attrs": {}, "parents": [{"type": "Group", "id": "staff"}]},
    {"uid": {"type": "Table", "id": "quote"}, "attrs": {}, "parents": [{"type": "TableGroup", "id": "market"}]},
    {"uid": {"type": "Function", "id": "getQuotes"}, "attrs": {}, "parents": [{"type": "FunctionGroup", "id": "api"}]}
]"#;

#[test]
fn groups_and_parents_come_from_the_entities() {
    let cedar = plugin(
        &serde_json::json!({
            "policies": r#"
                permit (principal in Group::"staff", action == Action::"query", resource);
                permit (principal in Group::"quants", action == Action::"read", resource in TableGroup::"market");
                permit (principal in Group::"quants", action == Action::"call", resource in FunctionGroup::"api");
            "#,
            "entities": GROUPS,
        })
        .to_string(),
    );
    assert_eq!(verdict(&cedar, "carol", &text("select from quote")), "pass");
    assert_eq!(
        verdict(&cedar, "carol", &text("select from trade")),
        "deny: access: cedar forbids carol to read Table::\"trade\""
    );
    assert_eq!(verdict(&cedar, "carol", &call("getQuotes", vec![])), "pass");
    assert_eq!(verdict(&cedar, "carol", &text("getQuotes[`a]")), "pass");
    assert_eq!(
        verdict(&cedar, "dave", &text("select from quote")),
        "deny: access: cedar forbids dave to query Server::\"qgate\""
    );
    // The entities may be the array itself, as a TOML array of tables becomes.
    let entities: serde_json::Value = serde_json::from_str(GROUPS).unwrap_or_default();
    let inline = plugin(
        &serde_json::json!({
            "policies": "permit (principal in Group::\"staff\", action, resource);",
            "entities": entities,
        })
        .to_string(),
    );
    assert_eq!(
        verdict(&inline, "carol", &text("select from quote")),
        "pass"
    );
}

#[test]
fn the_peer_is_an_ip_address() {
    let cedar = with_policies(
        r#"
        permit (principal, action, resource) when { context.peer.isInRange(ip("10.0.0.0/8")) };
        "#,
    );
    let message = call("f", vec![]);
    assert_eq!(
        verdict_in(&cedar, session_from("alice", "10.1.2.3"), &message),
        "pass"
    );
    // An IPv4 client of a dual-stack listener is an IPv4 address.
    assert_eq!(
        verdict_in(&cedar, session_from("alice", "::ffff:10.1.2.3"), &message),
        "pass"
    );
    assert_eq!(
        verdict_in(&cedar, session_from("alice", "192.168.1.1"), &message),
        "deny: access: cedar forbids alice to call Function::\"f\""
    );
    assert!(verdict_in(&cedar, session_from("alice", "::1"), &message).starts_with("deny"));
    assert!(verdict_in(&cedar, session_from("alice", "a socket"), &message).starts_with("deny"));
    assert!(matches!(
        auth(&cedar, session_from("alice", "10.9.9.9")),
        AuthVerdict::Pass
    ));
    assert!(matches!(
        auth(&cedar, session_from("alice", "172.16.0.1")),
        AuthVerdict::Deny
    ));
    assert_eq!(peer(&session_from("u", "not an address")), UNKNOWN_PEER);
    assert_eq!(peer(&session_from("u", "::1")), "::1");
}

#[test]
fn the_client_certificate_cn_is_in_the_context() {
    let cedar = with_policies(
        r#"
        permit (principal, action, resource) when { context.tls_cn == principal.name };
        permit (principal, action, resource) when { context.tls_cn like "desk-*" };
        "#,
    );
    let message = text("1+1");
    assert_eq!(
        verdict_in(&cedar, session_with_cn("alice", Some("desk-7")), &message),
        "pass"
    );
    // Without a certificate, or with another, the CN is "" or that one.
    assert!(verdict_in(&cedar, session_with_cn("alice", None), &message).starts_with("deny: "));
    assert!(verdict(&cedar, "alice", &message).starts_with("deny: "));
    assert!(
        verdict_in(&cedar, session_with_cn("alice", Some("ops-1")), &message).starts_with("deny: ")
    );
}

#[test]
fn calls_are_checked_on_their_kind_and_arguments() {
    let cedar = with_policies(&format!(
        r#"{PERMIT_ALL}
        forbid (principal, action == Action::"call", resource == Function::"add")
        when {{ context.kind == "call" }}
        unless {{ context.arg_count == 2 && context.arg_types == "long long" }};
        forbid (principal, action, resource) when {{ context.kind == "query" && context.bytes > 40 }};
        "#
    ));
    let add = |args: Vec<K>| call("add", args);
    assert_eq!(
        verdict(&cedar, "u", &add(vec![K::long(1), K::long(2)])),
        "pass"
    );
    let forbidden = "deny: access: cedar forbids u to call Function::\"add\"";
    assert_eq!(verdict(&cedar, "u", &add(vec![K::long(1)])), forbidden);
    assert_eq!(
        verdict(
            &cedar,
            "u",
            &add(vec![K::long(1), K::Atom(Atom::Float(2.5))])
        ),
        forbidden
    );
    assert_eq!(
        verdict(&cedar, "u", &add(vec![K::long(1), K::string("2")])),
        forbidden
    );
    // A string head is a call as well.
    let string_head = K::list(vec![K::string("add"), K::long(1), K::long(2)]);
    assert_eq!(verdict(&cedar, "u", &string_head), "pass");
    // Free text that calls add has no arguments to check, and its size is checked.
    assert_eq!(verdict(&cedar, "u", &text("add[1;2.5]")), "pass");
    assert_eq!(
        verdict(
            &cedar,
            "u",
            &text("add[1;2] + add[3;4] + add[5;6] + add[7;8]")
        ),
        "deny: access: cedar forbids u to query Server::\"qgate\""
    );
}

#[test]
fn the_context_has_the_kind_of_event_and_the_time() {
    let cedar = with_policies(
        r#"
        permit (principal, action == Action::"connect", resource) when { context.kind == "auth" && context.bytes == 0 };
        permit (principal, action, resource) when {
            context.time >= 1767225600 && context.now >= datetime("2026-01-01")
            && context.arg_types == "" && context.arg_count == 0
        };
        "#,
    );
    testing::set_now(1_767_225_599_999_000_000);
    assert!(verdict(&cedar, "u", &text("1+1")).starts_with("deny: "));
    testing::set_now(1_767_225_600_000_000_000);
    assert_eq!(verdict(&cedar, "u", &text("1+1")), "pass");
    assert!(matches!(
        auth(&cedar, testing::session(4, "u")),
        AuthVerdict::Pass
    ));
    testing::reset();
    assert_eq!(datetime(0), "1970-01-01T00:00:00Z");
    assert_eq!(datetime(1_767_225_599), "2025-12-31T23:59:59Z");
    assert_eq!(datetime(951_825_600), "2000-02-29T12:00:00Z");
    assert_eq!(datetime(-1), "1969-12-31T23:59:59Z");
}

#[test]
fn every_fact_is_a_request() {
    let cedar = with_policies(&format!(
        r#"{PERMIT_ALL}
        forbid (principal, action == Action::"read", resource == Table::"quote");
        forbid (principal, action == Action::"write", resource == Table::"trade");
        forbid (principal, action == Action::"call", resource == Function::"secret");
        forbid (principal, action == Action::"eval", resource);
        forbid (principal, action == Action::"multi", resource);
        "#
    ));
    for (message, expect) in [
        (text("select from trade lj quote"), "read Table::\"quote\""),
        (text(".perm.users,quote"), "read Table::\"quote\""),
        (text("delete from `trade"), "write Table::\"trade\""),
        (text("trade:([]a:1 2)"), "write Table::\"trade\""),
        (text("f[secret 1]"), "call Function::\"secret\""),
        (text("value \"1+1\""), "eval Server::\"qgate\""),
        (text("1;2"), "multi Server::\"qgate\""),
        (
            call(
                "insert",
                vec![K::symbol("trade"), K::list(vec![K::long(1)])],
            ),
            "write Table::\"trade\"",
        ),
        (
            call("value", vec![K::string("1+1")]),
            "eval Server::\"qgate\"",
        ),
    ] {
        assert_eq!(
            verdict(&cedar, "u", &message),
            format!("deny: access: cedar forbids u to {expect}"),
            "{message}"
        );
    }
    assert_eq!(verdict(&cedar, "u", &text("select from trade")), "pass");
    assert_eq!(verdict(&cedar, "u", &call("f", vec![K::long(1)])), "pass");
}

#[test]
fn unparsed_text_and_other_values_are_always_denied() {
    let cedar = with_policies(PERMIT_ALL);
    let unparsed = "deny: access: the message could not be read with certainty (unparsed)";
    assert_eq!(verdict(&cedar, "u", &text("k)select from trade")), unparsed);
    assert_eq!(verdict(&cedar, "u", &text("select from (")), unparsed);
    let other = "deny: access: cedar takes only calls and free-text queries";
    assert_eq!(verdict(&cedar, "u", &K::long(1)), other);
    assert_eq!(verdict(&cedar, "u", &K::symbol("trade")), other);
    assert_eq!(
        verdict(&cedar, "u", &K::list(vec![K::long(1), K::long(2)])),
        other
    );
    assert_eq!(verdict(&cedar, "u", &text("select from trade")), "pass");
}

#[test]
fn flags_are_actions_and_may_be_grouped_by_a_schema() {
    let schema = r#"
        entity User; entity Server; entity Function; entity Table;
        type Event = { kind: String };
        action dangerous;
        action query, multi, lambda appliesTo { principal: User, resource: Server, context: Event };
        action system, eval, exit in [dangerous] appliesTo { principal: User, resource: Server, context: Event };
        action read appliesTo { principal: User, resource: Table, context: Event };
        action call appliesTo { principal: User, resource: Function, context: Event };
    "#;
    let cedar = plugin(
        &serde_json::json!({
            "schema": schema,
            "policies": r#"
                permit (principal, action in [Action::"query", Action::"read", Action::"multi", Action::"lambda"], resource);
                forbid (principal, action in Action::"dangerous", resource);
            "#,
        })
        .to_string(),
    );
    assert_eq!(verdict(&cedar, "u", &text("1;{x}[2]")), "pass");
    assert_eq!(
        verdict(
            &cedar,
            "u",
            &text("select from t where 0<count system\"ls\"")
        ),
        "deny: access: cedar forbids u to system Server::\"qgate\""
    );
    assert_eq!(
        verdict(&cedar, "u", &text("exit 0")),
        "deny: access: cedar forbids u to exit Server::\"qgate\""
    );
}

#[test]
fn several_policy_files_are_one_set() {
    // Cedar names each file's policies policy0, policy1...: the merge keeps them apart.
    let cedar = plugin(
        &serde_json::json!({
            "policies": [
                "permit (principal, action == Action::\"call\", resource == Function::\"f\");",
                "permit (principal, action == Action::\"call\", resource == Function::\"g\");\n\
                 forbid (principal == User::\"bob\", action, resource);",
            ],
        })
        .to_string(),
    );
    assert_eq!(verdict(&cedar, "alice", &call("f", vec![])), "pass");
    assert_eq!(verdict(&cedar, "alice", &call("g", vec![])), "pass");
    assert!(verdict(&cedar, "bob", &call("f", vec![])).starts_with("deny: "));
}

#[test]
fn the_context_holds_only_what_the_policies_name() {
    let cedar = with_policies(PERMIT_ALL);
    assert!(!cedar.needs.arg_types && !cedar.needs.peer && !cedar.needs.now);
    let cedar = with_policies(
        "permit (principal, action, resource) when { context[\"arg_types\"] == \"\" };",
    );
    assert!(cedar.needs.arg_types && !cedar.needs.arg_count);
    assert_eq!(verdict(&cedar, "u", &text("1")), "pass");
    // A policy that reads an attribute the context lacks fails, and is skipped: a forbid that
    // fails forbids nothing, so name attributes that exist (or give a schema).
    let cedar = with_policies(&format!(
        "{PERMIT_ALL}forbid (principal, action, resource) when {{ context.user == \"u\" }};"
    ));
    assert_eq!(verdict(&cedar, "u", &text("1")), "pass");
}

#[test]
fn a_policy_error_names_the_key_line_and_column() {
    let error = refusal(serde_json::json!({
        "policies": "permit (principal, action, resource);\npermit (nonsense);\n",
    }));
    let lines: Vec<&str> = error.lines().collect();
    assert!(lines[0].starts_with("policies:2:9: "), "{error}");
    assert!(lines[0].contains("nonsense"), "{error}");
    // Every error Cedar found, each with its position.
    assert_eq!(lines.len(), 3, "{error}");
    assert!(lines[1].starts_with("policies:2:17: "), "{error}");

    // The second file of an array is `policies[1]`.
    let error = refusal(serde_json::json!({
        "policies": [PERMIT_ALL, "// a comment\n  permit (principal, action, resource) when { 1 + };"],
    }));
    assert!(
        error.starts_with("policies[1]:2:51: unexpected token `}`"),
        "{error}"
    );

    let error = refusal(serde_json::json!({ "policies": 1 }));
    assert_eq!(
        error,
        "policies: expected Cedar policy text or an array of texts, got a number"
    );
    let error = refusal(serde_json::json!({}));
    assert!(error.starts_with("policies: missing"), "{error}");
    let error = refusal(serde_json::json!({
        "policies": "permit (principal == ?principal, action, resource);",
    }));
    assert!(error.starts_with("policies:1:22: a template"), "{error}");
}

#[test]
fn bad_entities_are_refused_with_their_position() {
    let error = refusal(serde_json::json!({
        "policies": PERMIT_ALL,
        "entities": "[\n  {\"uid\": {\"type\": \"User\", \"id\": \"a\"}, \"attrs\": {}, \"parents\": [}\n]",
    }));
    assert!(
        error.starts_with("entities:2:65: expected value"),
        "{error}"
    );
    let error = refusal(serde_json::json!({
        "policies": PERMIT_ALL,
        "entities": "[{\"uid\": {\"type\": \"User\", \"id\": \"a\"}}]",
    }));
    assert!(error.starts_with("entities: "), "{error}");
    assert!(error.contains("attrs"), "{error}");
    let error = refusal(serde_json::json!({ "policies": PERMIT_ALL, "entities": 3 }));
    assert!(error.starts_with("entities: expected the text"), "{error}");
}

#[test]
fn a_schema_validates_the_policies_and_the_entities() {
    let schema = "entity User;\nentity Server;\naction connect appliesTo {\n  principal: User,\n  \
                  resource: Server,\n  context: { peer: ipaddr }\n};\n";
    let error = refusal(serde_json::json!({
        "schema": schema,
        "policies": "permit (principal, action == Action::\"connect\", resource)\n  when { context.peer == 1 };\n\
                     permit (principal == Usr::\"a\", action, resource);",
    }));
    let lines: Vec<&str> = error.lines().collect();
    assert_eq!(lines.len(), 2, "every error is reported: {error}");
    assert!(lines[0].starts_with("policies:2:10: "), "{error}");
    assert!(lines[0].contains("Long and ipaddr"), "{error}");
    assert!(lines[1].starts_with("policies:3:22: "), "{error}");
    assert!(lines[1].contains("Usr"), "{error}");

    // Entities that do not conform.
    let error = refusal(serde_json::json!({
        "schema": schema,
        "policies": "",
        "entities": "[{\"uid\": {\"type\": \"Group\", \"id\": \"g\"}, \"attrs\": {}, \"parents\": []}]",
    }));
    assert!(error.starts_with("entities: "), "{error}");
    assert!(error.contains("Group"), "{error}");

    // A schema that does not parse, in either syntax.
    let error = refusal(serde_json::json!({
        "schema": "entity User;\nentity Server\naction x;",
        "policies": "",
    }));
    assert!(error.starts_with("schema:3:1: "), "{error}");
    let error = refusal(serde_json::json!({
        "schema": "{\"\": {\n  \"entityTypes\": {},\n  \"actions\": {\"x\": }}}",
        "policies": "",
    }));
    assert!(error.starts_with("schema:3:20: expected value"), "{error}");
    let error = refusal(serde_json::json!({
        "schema": "entity User;\naction x appliesTo { principal: Usr, resource: User };",
        "policies": "",
    }));
    assert!(error.starts_with("schema:2:"), "{error}");
    assert!(error.contains("Usr"), "{error}");

    // Both syntaxes load.
    plugin(&serde_json::json!({ "schema": schema, "policies": "" }).to_string());
    let json = r#"{"": {"entityTypes": {"User": {}}, "actions": {}}}"#;
    plugin(&serde_json::json!({ "schema": json, "policies": "" }).to_string());
}

#[test]
fn oversize_and_overdeep_policies_are_refused_before_cedar_parses_them() {
    let big = format!("// {}\n{PERMIT_ALL}", "x".repeat(100));
    let error = refusal(serde_json::json!({ "policies": big, "max_policy_bytes": 64 }));
    assert_eq!(
        error,
        "policies: 142 bytes of policy text, more than max_policy_bytes (64)"
    );
    let error = refusal(
        serde_json::json!({ "policies": [PERMIT_ALL, PERMIT_ALL], "max_policy_bytes": 64 }),
    );
    assert!(error.starts_with("policies: 76 bytes"), "{error}");
    let error = refusal(serde_json::json!({ "policies": PERMIT_ALL, "max_policy_bytes": 0 }));
    assert!(error.starts_with("max_policy_bytes: "), "{error}");

    let nested = |depth: usize| {
        format!(
            "permit (principal, action, resource)\nwhen {{ {}true{} }};",
            "(".repeat(depth),
            ")".repeat(depth)
        )
    };
    // The `{` of `when` is a bracket too.
    let error = refusal(serde_json::json!({ "policies": nested(MAX_BRACKET_DEPTH) }));
    assert!(
        error.starts_with("policies:2:71: nested deeper than 64 brackets"),
        "{error}"
    );
    let chain = |length: usize| {
        format!(
            "permit (principal, action, resource)\nwhen {{ 1{} > 0 }};",
            " + 1".repeat(length)
        )
    };
    let error = refusal(serde_json::json!({ "policies": chain(MAX_EXPRESSION_DEPTH) }));
    assert!(
        error.starts_with("policies:2:") && error.contains("an expression deeper than 160"),
        "{error}"
    );
    // Brackets and operators in strings and comments do not count.
    let quiet = format!(
        "// {}\npermit (principal, action, resource) when {{ \"{}\" like \"*\" }};",
        "((((".repeat(100),
        "+ [ ( \\\" ".repeat(300)
    );
    with_policies(&quiet);

    // Just within the limits, they load and decide. Cedar parses them by recursion, which a
    // native test's debug build does with much larger frames than the component's: a larger
    // stack stands in for the component's.
    let within = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || {
            let deep = with_policies(&nested(MAX_BRACKET_DEPTH - 1));
            let long = with_policies(&chain(MAX_EXPRESSION_DEPTH - 4));
            (
                verdict(&deep, "u", &text("1")),
                verdict(&long, "u", &text("1")),
            )
        })
        .map(|thread| thread.join());
    assert!(
        matches!(&within, Ok(Ok((deep, long))) if deep == "pass" && long == "pass"),
        "{within:?}"
    );
}

#[test]
fn unknown_keys_are_refused_and_errors_are_bounded() {
    let error = refusal(serde_json::json!({ "policies": PERMIT_ALL, "polices": PERMIT_ALL }));
    assert_eq!(
        error,
        "polices: unknown key; the keys are policies, entities, schema and max_policy_bytes"
    );
    let files: Vec<String> = (0..14).map(|i| format!("permit ({i});")).collect();
    let error = refusal(serde_json::json!({ "policies": files }));
    let lines: Vec<&str> = error.lines().collect();
    assert_eq!(lines.len(), 11, "{error}");
    assert!(lines[0].starts_with("policies[0]:1:9: "), "{error}");
    assert!(lines[9].starts_with("policies[9]:1:9: "), "{error}");
    assert_eq!(lines[10], "and 4 more errors");
}

#[test]
fn positions_count_lines_and_characters() {
    assert_eq!(load::line_column("ab\ncd", 0), (1, 1));
    assert_eq!(load::line_column("ab\ncd", 3), (2, 1));
    assert_eq!(load::line_column("ab\ncd", 4), (2, 2));
    assert_eq!(load::line_column("é\né x", 5), (2, 2));
    assert_eq!(load::line_column("é\né x", 6), (2, 3));
    // Inside a character: where it starts.
    assert_eq!(load::line_column("é\né x", 4), (2, 1));
    assert_eq!(load::line_column("ab", 99), (1, 3));
}

/// The walkthrough's files, as the host hands them to the plugin.
fn walkthrough() -> Cedar {
    plugin(
        &serde_json::json!({
            "policies": include_str!("../walkthrough/qgate.cedar"),
            "entities": include_str!("../walkthrough/entities.json"),
            "schema": include_str!("../walkthrough/qgate.cedarschema"),
        })
        .to_string(),
    )
}

/// What the `allowlist` plugin decides with the walkthrough's config (config.toml):
///
/// ```toml
/// users = { admin = ["legalOperation"], adminmd5 = ["legalOperation"], adminsha = ["legalOperation"] }
/// args.legalOperation = { count = 2, types = ["long", "long"] }
/// [plugins.config.groups.walkthrough]
/// members = ["admin", "adminmd5", "adminsha"]
/// read = ["trade", "conns"]
/// ```
///
/// Its `decide`, specialised to that config: the members have table rules (the group sets
/// `read`), so their calls and their free text are checked on their facts; nobody else may call
/// anything or send free text (no `queries` switch).
fn allowlist_passes(user: &str, ctx: &MessageCtx<'_>) -> bool {
    let member = ["admin", "adminmd5", "adminsha"].contains(&user);
    let may_call = |function: &str| member && function == "legalOperation";
    let facts_allowed = || {
        let facts = ctx.facts();
        !facts.flags.contains(Flags::UNPARSED)
            && facts
                .tables_read
                .iter()
                .chain(&facts.variables)
                .all(|t| t == "trade" || t == "conns")
            && facts.tables_written.is_empty()
            && facts.assigned.is_empty()
            && facts.functions.iter().all(|f| may_call(f))
            && facts.flags.is_empty()
    };
    if let Some(function) = ctx.head() {
        let args_fit = function != "legalOperation"
            || (ctx.arg_count() == 2
                && (0..2).all(|i| ctx.arg(i).is_some_and(|arg| arg.type_name() == "long")));
        return may_call(function) && args_fit && facts_allowed();
    }
    ctx.is_query() && member && facts_allowed()
}

/// The inputs of the parser's facts table (`crates/q/testdata/q-facts.tsv`), unescaped.
fn facts_table_inputs() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../crates/q/testdata/q-facts.tsv"
    );
    let table = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    table
        .lines()
        .skip(1)
        .filter(|line| !line.is_empty())
        .map(|line| {
            line.split('\t')
                .next()
                .unwrap_or_default()
                .replace("\\\\", "\u{0}")
                .replace("\\t", "\t")
                .replace("\\n", "\n")
                .replace('\u{0}', "\\")
        })
        .collect()
}

#[test]
fn the_walkthrough_decides_as_the_allowlist() {
    let cedar = walkthrough();
    // By hand, from allowlist's rules: what admin and adminsha get; everyone else is denied.
    let corpus: Vec<(K, &str)> = vec![
        (call("legalOperation", vec![K::long(1), K::long(2)]), "pass"),
        (
            call(
                "legalOperation",
                vec![K::long(1), K::Atom(Atom::Float(2.5))],
            ),
            "deny",
        ),
        (call("legalOperation", vec![K::long(1)]), "deny"),
        (
            call("legalOperation", vec![K::long(1), K::long(2), K::long(3)]),
            "deny",
        ),
        (
            K::list(vec![K::string("legalOperation"), K::long(1), K::long(2)]),
            "pass",
        ),
        (
            call("illegalOperation", vec![K::long(1), K::long(2)]),
            "deny",
        ),
        (call("value", vec![K::string("exit 0")]), "deny"),
        (
            call(
                "insert",
                vec![
                    K::symbol("trade"),
                    K::list(vec![K::long(1), K::symbol("a")]),
                ],
            ),
            "deny",
        ),
        (call("conns", vec![K::Null]), "deny"),
        (text("select from trade where sym=`AAPL"), "pass"),
        (text("select from quote"), "deny"),
        (text("trade"), "pass"),
        (text("conns"), "pass"),
        (text("trade lj conns"), "pass"),
        (text("legalOperation[1;2]"), "pass"),
        (text("legalOperation[1;2.5]"), "pass"),
        (text("illegalOperation[1;2]"), "deny"),
        (text("legalOperation[1;exit 0]"), "deny"),
        (text(";select from trade"), "deny"),
        (text("select from trade where {.z.pg::{x};1b}[]"), "deny"),
        (text("select from trade where sym=(.z.pg:{x})"), "deny"),
        (text("k)select from trade"), "deny"),
        (text("0\"exit 0\""), "deny"),
        (text("(.)\"exit 0\""), "deny"),
        (text("value \"exit 0\""), "deny"),
        (text("{select from trade}[]"), "deny"),
        (text("a:1"), "deny"),
        (text("delete from `trade"), "deny"),
        (text("`a`b!1 2"), "pass"),
        (K::long(1), "deny"),
        (K::symbol("trade"), "deny"),
    ];
    let mut compared = 0;
    for user in ["admin", "adminmd5", "adminsha", "mallory", ""] {
        let member = user.starts_with("admin");
        for (message, by_hand) in &corpus {
            let expect = if member { *by_hand } else { "deny" };
            let ctx = MessageCtx::from_value(testing::session(4, user), message);
            let oracle = if allowlist_passes(user, &ctx) {
                "pass"
            } else {
                "deny"
            };
            assert_eq!(oracle, expect, "the oracle, for {user} sending {message}");
            let actual = verdict(&cedar, user, message);
            assert_eq!(&actual[..4], expect, "{user} sending {message}: {actual}");
            compared += 1;
        }
        // The whole facts table as free text: cedar decides as the oracle does.
        for input in facts_table_inputs() {
            let message = text(&input);
            let ctx = MessageCtx::from_value(testing::session(4, user), &message);
            let expect = if allowlist_passes(user, &ctx) {
                "pass"
            } else {
                "deny"
            };
            let actual = verdict(&cedar, user, &message);
            assert_eq!(&actual[..4], expect, "{user} sending {input:?}: {actual}");
            compared += 1;
        }
        // Logins are the password file's: allowlist does not decide them.
        assert!(matches!(
            auth(&cedar, testing::session(4, user)),
            AuthVerdict::Pass
        ));
    }
    assert!(compared > 500, "{compared}");
}

#[test]
fn the_walkthrough_denies_name_the_request() {
    let cedar = walkthrough();
    for (user, message, expect) in [
        ("admin", text("select from quote"), "read Table::\"quote\""),
        (
            "admin",
            call("illegalOperation", vec![K::long(1), K::long(2)]),
            "call Function::\"illegalOperation\"",
        ),
        (
            "admin",
            call("legalOperation", vec![K::long(1)]),
            "call Function::\"legalOperation\"",
        ),
        ("admin", text("a:1"), "write Table::\"a\""),
        (
            "admin",
            text(";select from trade"),
            "multi Server::\"qgate\"",
        ),
        ("admin", text("value \"exit 0\""), "eval Server::\"qgate\""),
        ("mallory", text("trade"), "query Server::\"qgate\""),
    ] {
        assert_eq!(
            verdict(&cedar, user, &message),
            format!("deny: access: cedar forbids {user} to {expect}")
        );
    }
}

#[test]
fn decisions_are_kept_per_action_user_resource_and_named_attributes() {
    let cedar = with_policies(
        r#"
        permit (principal, action == Action::"call", resource)
        when { context.arg_types == "long" };
        permit (principal, action == Action::"read", resource == Table::"trade");
        permit (principal == User::"alice", action == Action::"query", resource);
        "#,
    );
    // `read` names no attribute; `call` names only `arg_types`.
    assert!(!cedar.model.read.needs.arg_types && cedar.model.call.needs.arg_types);
    assert!(!cedar.model.call.needs.peer && !cedar.needs.kind);
    for _ in 0..2 {
        assert_eq!(verdict(&cedar, "u", &call("f", vec![K::long(1)])), "pass");
        assert!(verdict(&cedar, "u", &call("f", vec![K::symbol("a")])).starts_with("deny: "));
        assert_eq!(verdict(&cedar, "alice", &text("select from trade")), "pass");
        assert!(verdict(&cedar, "alice", &text("select from quote")).starts_with("deny: "));
        assert!(verdict(&cedar, "bob", &text("select from trade")).starts_with("deny: "));
    }
    // Past the most it keeps, it starts again, and decides the same.
    for i in 0..MAX_KEPT_DECISIONS + 10 {
        let table = format!("t{i}");
        assert!(verdict(&cedar, "alice", &text(&table)).starts_with("deny: "));
    }
    assert!(cedar.kept.decisions.borrow().len() <= MAX_KEPT_DECISIONS);
    assert_eq!(verdict(&cedar, "alice", &text("trade")), "pass");
}

#[test]
fn the_attributes_a_policy_reads_are_found_in_it() {
    let attributes = |condition: &str| {
        let text = format!("permit (principal, action, resource) when {{ {condition} }};");
        let set: PolicySet = text.parse().unwrap_or_else(|e| panic!("{e}"));
        let policy = set.policies().next().unwrap_or_else(|| panic!("{text}"));
        load::context_attributes(policy)
            .into_iter()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        attributes(r#"context.peer.isInRange(ip("10.0.0.0/8")) && context["arg_types"] == "x""#),
        ["arg_types", "peer"]
    );
    assert_eq!(
        attributes("context has kind && context.kind == \"call\""),
        ["kind"]
    );
    // Names elsewhere are not attributes of the context.
    assert!(
        attributes(r#"{kind: 1} has kind && principal.bytes == 1 && "time" == "now""#).is_empty()
    );
    // The context as a whole reads every attribute.
    assert_eq!(attributes("context == {}"), [load::ALL_ATTRIBUTES]);
    assert_eq!(
        attributes(r#"{c: context}.c.kind == "call""#),
        [load::ALL_ATTRIBUTES]
    );
}

#[test]
fn the_readme_policies_load_with_the_walkthrough_schema() {
    let readme = include_str!("../README.md");
    let blocks: Vec<&str> = readme
        .split("```cedar\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .collect();
    assert_eq!(blocks.len(), 2);
    plugin(
        &serde_json::json!({
            "policies": blocks,
            "entities": include_str!("../walkthrough/entities.json"),
            "schema": include_str!("../walkthrough/qgate.cedarschema"),
        })
        .to_string(),
    );
}

/// What `plugin` decides for an HTTP request of `user`: "pass" or "STATUS MESSAGE".
fn http_verdict(plugin: &Cedar, user: &str, method: &str, target: &str, body: &[u8]) -> String {
    let ctx = HttpCtx::new(testing::session(4, user), method, target, &[], body);
    match plugin.on_http(&ctx) {
        HttpVerdict::Pass => "pass".to_owned(),
        HttpVerdict::Deny(deny) => format!("{} {}", deny.status, deny.text),
        other => format!("{other:?}"),
    }
}

#[test]
fn http_q_text_is_asked_about_as_a_free_text_query() {
    let cedar = with_policies(&format!(
        r#"{PERMIT_ALL}
        forbid (principal, action == Action::"write", resource == Table::"trade");
        forbid (principal == User::"bob", action == Action::"query", resource);
        "#
    ));
    assert_eq!(
        http_verdict(&cedar, "u", "GET", "/?select%20from%20trade", b""),
        "pass"
    );
    assert_eq!(
        http_verdict(&cedar, "u", "POST", "/", b"delete from `trade"),
        "403 access: cedar forbids u to write Table::\"trade\""
    );
    assert_eq!(
        http_verdict(&cedar, "bob", "GET", "/?1+1", b""),
        "403 access: cedar forbids bob to query Server::\"qgate\""
    );
    assert_eq!(
        http_verdict(&cedar, "u", "GET", "/?k)1+1", b""),
        "403 access: the message could not be read with certainty (unparsed)"
    );
    assert_eq!(
        http_verdict(&cedar, "u", "GET", "/index.html", b""),
        "403 access: cedar takes only HTTP requests that carry q text (GET /?expr, a POST)"
    );
}
