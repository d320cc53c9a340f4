//! `cedar`: authorization by declarative [Cedar](https://www.cedarpolicy.com) policies: who may
//! log in, which functions each user may call and with what arguments, which tables their
//! free text may read and write, and which of its flags (`system`, `eval`, `exit`...) it may
//! have, decided by Cedar's evaluator over the session, the message and the facts the host's q
//! parser found in it.
//!
//! Each event becomes one or more Cedar requests, `principal`, `action`, `resource`, `context`;
//! the event passes only when every request is permitted (some `permit` policy is satisfied and
//! no `forbid` policy is: a forbid overrides any permit, and nothing is permitted by default).
//! This plugin authorizes only: it never answers a message and never accepts a login by itself.
//!
//! # The model
//!
//! Entity types, without a namespace:
//!
//! - `User::"<user>"`: the principal of every request, the session's user (`.z.u`, as the
//!   handshake or an auth plugin set it). Users are members of groups through the entities'
//!   `parents`, so `principal in Group::"ops"` reads as group membership.
//! - `Group`: a group of users (or of groups).
//! - `Function::"<name>"`: a function called: the head of a call list (`` (`fn;1;2) `` or
//!   `("fn";1;2)`), or a user function a query calls. It may have parents, such as
//!   `FunctionGroup::"api"` (any type the entities and the schema name).
//! - `Table::"<name>"`: a table or global variable read or written (`trade`, `.perm.users`,
//!   `.z.pg`). It may have parents too.
//! - `Server::"qgate"`: the resource of the actions about the whole message or the session.
//!
//! Actions, `Action::"<name>"`, with their resources:
//!
//! | action | resource | asked for |
//! |---|---|---|
//! | `connect` | `Server::"qgate"` | a login (the auth event, `.z.pw`) |
//! | `call` | `Function::"<fn>"` | the head of a call list; each user function a message calls |
//! | `query` | `Server::"qgate"` | a free-text query, as a whole |
//! | `read` | `Table::"<t>"` | each table read and each bare global read |
//! | `write` | `Table::"<t>"` | each table written and each global assigned |
//! | `system`, `eval`, `ipc`, `file`, `exit`, `multi`, `lambda`, `assign`, `assign_z` | `Server::"qgate"` | each flag of the message's facts |
//!
//! The context, the same for every request of one event:
//!
//! | attribute | type | value |
//! |---|---|---|
//! | `kind` | String | `"auth"`, `"call"` or `"query"` |
//! | `peer` | ipaddr | the client's address (`context.peer.isInRange(ip("10.0.0.0/8"))`); an IPv4 client of a dual-stack listener (`::ffff:10.1.2.3`) as IPv4; `ip("0.0.0.0")` for a peer that is not an IP address |
//! | `tls_cn` | String | the subject CN of the verified client certificate; `""` without one |
//! | `arg_count` | Long | the number of arguments after a call's head; 0 for free text and auth |
//! | `arg_types` | String | the q type names of a call's arguments (`long`, `float`, `symbol`, `string`, `longs`, `list`, `dict`, `table`...) joined by single spaces (`"long long"`); `""` for free text and auth |
//! | `bytes` | Long | the message's size in bytes, as sent; 0 for auth |
//! | `time` | Long | now, Unix seconds (the host's wall clock) |
//! | `now` | datetime | now, to the second (`context.now > datetime("2026-01-01")`) |
//!
//! # Decisions
//!
//! - **auth** (`.z.pw`): one request, `connect` on `Server::"qgate"`. Permitted, the login
//!   passes to the rest of the chain and the password file, which still authenticate it (Cedar
//!   authorizes, it does not check passwords); not permitted, it is refused.
//! - **a call** (sync or async), a general list whose head is a symbol or a string: `call` on
//!   the head's function, then one request per fact of the message (below). A call list's facts
//!   are what its arguments do: `` (`value;"exit 0") `` has the flag `eval`,
//!   `` (`insert;`trade;...) `` writes `trade`.
//! - **free text** (a string): `query` on `Server::"qgate"`, then one request per fact.
//! - **anything else** (a lambda, a bare value): refused.
//!
//! The requests for the facts, in this order: `read` for each table read and each bare global
//! read (`variables`), `write` for each table written and each global assigned, `call` for each
//! user function called (but a call's own head, asked already), one flag action per flag.
//! A message whose facts have the flag `unparsed` (text the parser cannot read with certainty,
//! `k)` text included) is always refused, before any request.
//!
//! A refusal names the first request that was not permitted, as a q error
//! (`'access: cedar forbids admin to read Table::"quote"`); an async message is dropped.
//!
//! A policy whose evaluation fails (it reads an attribute an entity lacks, or compares values of
//! different types) is skipped, as Cedar always does, and the failure is logged at debug level:
//! so a forbid that fails forbids nothing. Write `has` checks, or give a schema, whose validator
//! refuses such policies at init.
//!
//! # Cost
//!
//! A decision is made in microseconds, on every message, so the plugin does the work once where
//! it can. At init it parses and checks everything, and gives each action the policies whose
//! scope can hold for it (an action no policy names is refused without evaluating anything). For
//! an event it builds the context only when Cedar is asked, with only the attributes some policy
//! names: `arg_types`, which copies each argument out of the host, costs nothing to a policy set
//! that does not read it. And it keeps each decision, keyed by the action, the user, the
//! resource and the values of the attributes that action's policies read: the policies and the
//! entities never change in an instance, so a repeated request (the same user calling the same
//! function) is answered without Cedar. Measured in the release component: a request Cedar
//! evaluates costs 2 to 3 µs, a message of the walkthrough 3 to 10 µs, and one whose requests
//! are all kept under half a microsecond.
//!
//! # Config
//!
//! ```toml
//! [plugins.config]
//! # The policies: Cedar policy text, or an array of texts (several files, one policy set).
//! # Required. Usually files, which the host reads: { file = "PATH" }.
//! policies = [{ file = "cedar/base.cedar" }, { file = "cedar/desk.cedar" }]
//! # The entities (users and their groups, functions and tables with their parents), in
//! # Cedar's JSON entity format: text, or the array itself. Optional: none by default.
//! entities = { file = "cedar/entities.json" }
//! # A schema, in Cedar's schema syntax or as JSON (text starting with `{`). Optional: with one,
//! # the entities must conform to it and every policy must pass Cedar's validator (strict mode).
//! schema = { file = "cedar/qgate.cedarschema" }
//! # The most policy text, all files together. Optional: 1 MiB by default.
//! max_policy_bytes = 1048576
//! ```
//!
//! Unknown keys are errors. Every error about a value starts with its key, then the line and
//! column in that value when they are known (`policies:3:14: unexpected token ...`,
//! `policies[1]:2:1: ...` for the second file of an array, `entities:1:40: ...`,
//! `schema:5:3: ...`), one error per line, at most ten (then `and N more errors`): the host
//! puts the file's path in place of the key. Policies nested deeper than 64 brackets, or with
//! an expression deeper than 160 levels (brackets, and operators chained at one level: a `||` of
//! some eighty comparisons), are refused before Cedar parses them, since Cedar recurses on
//! nesting and a plugin's stack is small. Policy templates (`?principal`) are
//! refused: there is no way to link them here.
//!
//! `walkthrough/` holds the policies, entities and schema that decide exactly as the
//! `allowlist` plugin does with the walkthrough's config; `README.md` explains them.

mod load;

use std::{
    cell::{OnceCell, RefCell},
    collections::HashMap,
};

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Decision, Entities, EntityId, EntityTypeName, EntityUid,
    PolicySet, Request, RestrictedExpression,
};
use qgate_plugin_sdk::{
    AuthCtx, AuthVerdict, Config, Events, Facts, Flags, HttpCtx, HttpVerdict, MessageCtx, Plugin,
    Session, Verdict, export_plugin, host, http, q::KExt as _,
};

/// The plugin: the entities, and the names it asks Cedar about with the policies that can apply
/// to each action, built once in `init`; and what it keeps between events.
pub struct Cedar {
    authorizer: Authorizer,
    entities: Entities,
    model: Model,
    /// The context attributes some policy names: the context holds these.
    needs: Needs,
    kept: Kept,
}

impl Plugin for Cedar {
    const EVENTS: Events = Events::AUTH
        .union(Events::SYNC)
        .union(Events::ASYNC_MESSAGE)
        .union(Events::HTTP);

    fn init(config: &Config) -> Result<Self, String> {
        let loaded = load::load(config)?;
        let model = Model::new(&loaded.policies, &loaded.entities)?;
        Ok(Self {
            authorizer: Authorizer::new(),
            entities: loaded.entities,
            needs: model.needs(),
            model,
            kept: Kept::default(),
        })
    }

    fn on_auth(&self, ctx: &AuthCtx) -> AuthVerdict {
        let event = Event::new(self, ctx.session(), None);
        match event.check(&self.model.connect, SERVER) {
            Ok(()) => AuthVerdict::Pass,
            Err(_) => AuthVerdict::Deny,
        }
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

export_plugin!(Cedar);

impl Cedar {
    /// The verdict for a sync or async message: pass when every request is permitted, deny
    /// naming the first that is not.
    pub fn decide(&self, ctx: &MessageCtx<'_>) -> Verdict {
        match self.check(ctx) {
            Ok(()) => Verdict::Pass,
            Err(message) => Verdict::deny(message),
        }
    }

    /// Asks Cedar about the message, request by request.
    fn check(&self, ctx: &MessageCtx<'_>) -> Result<(), String> {
        let head = ctx.head();
        if head.is_none() && !ctx.is_query() {
            return Err("access: cedar takes only calls and free-text queries".to_owned());
        }
        let event = Event::new(self, ctx.session(), Some(ctx));
        let model = &self.model;
        match head {
            Some(function) => event.check(&model.call, function)?,
            None => event.check(&model.query, SERVER)?,
        }
        self.check_facts(&event, ctx.facts(), head)
    }

    /// The verdict for an HTTP request: its q text (`GET /?expr`, a POST's body) is asked about
    /// as a free-text query is, the same requests on the same facts; a request without q text
    /// is denied, since no action of the model is about it.
    pub fn decide_http(&self, ctx: &HttpCtx<'_>) -> HttpVerdict {
        if ctx.text().is_none() {
            return http::deny(
                403,
                "access: cedar takes only HTTP requests that carry q text (GET /?expr, a POST)",
            );
        }
        let event = Event::query(self, ctx.session(), ctx.body_size());
        let checked = event
            .check(&self.model.query, SERVER)
            .and_then(|()| self.check_facts(&event, ctx.facts(), None));
        match checked {
            Ok(()) => HttpVerdict::Pass,
            Err(message) => http::deny(403, message),
        }
    }

    /// Asks Cedar about each fact of a message or of an HTTP request's q text.
    fn check_facts(&self, event: &Event<'_, '_>, facts: &Facts, head: Option<&str>) -> Result<(), String> {
        let model = &self.model;
        if facts.flags.contains(Flags::UNPARSED) {
            return Err(
                "access: the message could not be read with certainty (unparsed)".to_owned(),
            );
        }
        for table in facts.tables_read.iter().chain(&facts.variables) {
            event.check(&model.read, table)?;
        }
        for table in facts.tables_written.iter().chain(&facts.assigned) {
            event.check(&model.write, table)?;
        }
        for function in &facts.functions {
            if Some(function.as_str()) != head {
                event.check(&model.call, function)?;
            }
        }
        for (flag, action) in &model.flags {
            if facts.flags.contains(*flag) {
                event.check(action, SERVER)?;
            }
        }
        Ok(())
    }
}

/// The id of the `Server` entity, the resource of the actions about a whole event.
const SERVER: &str = "qgate";

/// What an event is, for `context.kind`.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
enum Kind {
    Auth,
    Call,
    Query,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Auth => "auth",
            Kind::Call => "call",
            Kind::Query => "query",
        }
    }
}

/// One event being decided: its session and message, and what its requests share, each read or
/// built on the first ask (the context only when a decision is not kept).
struct Event<'a, 'm> {
    cedar: &'a Cedar,
    session: &'a Session,
    kind: Kind,
    /// The message of a call, for its arguments.
    call: Option<&'a MessageCtx<'m>>,
    bytes: u64,
    arg_types: OnceCell<String>,
    /// The Unix second, read once so that every request of the event sees the same time.
    second: OnceCell<i64>,
    principal: OnceCell<EntityUid>,
    context: OnceCell<Result<Context, String>>,
}

impl<'a, 'm> Event<'a, 'm> {
    /// An auth when `message` is `None`.
    fn new(cedar: &'a Cedar, session: &'a Session, message: Option<&'a MessageCtx<'m>>) -> Self {
        let kind = match message {
            None => Kind::Auth,
            Some(ctx) if ctx.head().is_some() => Kind::Call,
            Some(_) => Kind::Query,
        };
        Self {
            cedar,
            session,
            kind,
            call: message.filter(|_| kind == Kind::Call),
            bytes: message.map_or(0, |ctx| ctx.summary().size),
            arg_types: OnceCell::new(),
            second: OnceCell::new(),
            principal: OnceCell::new(),
            context: OnceCell::new(),
        }
    }

    /// A free-text query of `bytes` bytes that is not a message: an HTTP request's q text.
    fn query(cedar: &'a Cedar, session: &'a Session, bytes: u64) -> Self {
        Self {
            cedar,
            session,
            kind: Kind::Query,
            call: None,
            bytes,
            arg_types: OnceCell::new(),
            second: OnceCell::new(),
            principal: OnceCell::new(),
            context: OnceCell::new(),
        }
    }

    fn arg_count(&self) -> u64 {
        self.call.map_or(0, |ctx| ctx.arg_count() as u64)
    }

    fn arg_types(&self) -> &str {
        self.arg_types
            .get_or_init(|| self.call.map(arg_types).unwrap_or_default())
    }

    fn second(&self) -> i64 {
        *self
            .second
            .get_or_init(|| host::now().div_euclid(1_000_000_000))
    }

    /// Whether Cedar permits `action` on the resource named `resource`: `Err` is the deny
    /// message. A decision already made for the same question is not made again.
    fn check(&self, action: &Action, resource: &str) -> Result<(), String> {
        let cedar = self.cedar;
        let forbidden = || {
            format!(
                "access: cedar forbids {} to {} {}",
                self.session.user,
                action.name,
                action.resource(resource)
            )
        };
        // No policy names the action: nothing permits it.
        if action.policies.is_empty() {
            return Err(forbidden());
        }
        let key = DecisionKey {
            action: action.index,
            user: self.session.user.clone(),
            resource: resource.to_owned(),
            context: self.key(action.needs),
        };
        let kept = cedar.kept.decisions.borrow().get(&key).copied();
        let permitted = match kept {
            Some(permitted) => permitted,
            None => {
                let permitted = self.ask(action, resource);
                cedar.kept.keep(key, permitted);
                permitted
            }
        };
        if permitted { Ok(()) } else { Err(forbidden()) }
    }

    /// Cedar's decision.
    fn ask(&self, action: &Action, resource: &str) -> bool {
        let cedar = self.cedar;
        let context = match self.context() {
            Ok(context) => context,
            Err(error) => {
                host::warn(&format!(
                    "the context of {}'s request could not be built, so it is denied: {error}",
                    self.session.user
                ));
                return false;
            }
        };
        let principal = self.principal.get_or_init(|| {
            EntityUid::from_type_name_and_id(
                cedar.model.user.clone(),
                EntityId::new(&self.session.user),
            )
        });
        let Ok(request) = Request::new(
            principal.clone(),
            action.uid.clone(),
            action.resource(resource),
            context.clone(),
            None,
        ) else {
            return false;
        };
        let response = cedar
            .authorizer
            .is_authorized(&request, &action.policies, &cedar.entities);
        let mut errors = response.diagnostics().errors().peekable();
        if errors.peek().is_some() {
            let errors: Vec<String> = errors.map(ToString::to_string).collect();
            host::debug(&format!(
                "policies failed to evaluate for {} {} {} and were skipped: {}",
                self.session.user,
                action.name,
                action.resource(resource),
                errors.join("; ")
            ));
        }
        response.decision() == Decision::Allow
    }

    /// The values of the attributes in `needs`, as a key.
    fn key(&self, needs: Needs) -> ContextKey {
        ContextKey {
            kind: needs.kind.then_some(self.kind),
            peer: needs.peer.then(|| self.session.peer_address.clone()),
            tls_cn: needs.tls_cn.then(|| tls_cn(self.session).to_owned()),
            arg_count: needs.arg_count.then(|| self.arg_count()),
            arg_types: needs.arg_types.then(|| self.arg_types().to_owned()),
            bytes: needs.bytes.then_some(self.bytes),
            second: (needs.time || needs.now).then(|| self.second()),
        }
    }

    /// The context, with the attributes some policy names.
    fn context(&self) -> Result<&Context, &str> {
        self.context
            .get_or_init(|| self.build_context())
            .as_ref()
            .map_err(String::as_str)
    }

    fn build_context(&self) -> Result<Context, String> {
        let needs = self.cedar.needs;
        let kept = &self.cedar.kept;
        let mut pairs: Vec<(String, RestrictedExpression)> = Vec::with_capacity(8);
        if needs.kind {
            pairs.push(("kind".to_owned(), string(self.kind.name())));
        }
        if needs.peer {
            pairs.push(("peer".to_owned(), kept.peer(self.session)));
        }
        if needs.tls_cn {
            pairs.push(("tls_cn".to_owned(), string(tls_cn(self.session))));
        }
        if needs.arg_count {
            pairs.push(("arg_count".to_owned(), long(self.arg_count())));
        }
        if needs.arg_types {
            pairs.push(("arg_types".to_owned(), string(self.arg_types())));
        }
        if needs.bytes {
            pairs.push(("bytes".to_owned(), long(self.bytes)));
        }
        if needs.time {
            pairs.push((
                "time".to_owned(),
                RestrictedExpression::new_long(self.second()),
            ));
        }
        if needs.now {
            pairs.push(("now".to_owned(), kept.now(self.second())));
        }
        Context::from_pairs(pairs).map_err(|e| e.to_string())
    }
}

/// An action, with its name for deny messages and the policies that can apply to it.
struct Action {
    uid: EntityUid,
    name: &'static str,
    /// Its place in the model, for [`DecisionKey`].
    index: u8,
    /// The entity type of its resources.
    resource_type: EntityTypeName,
    /// The policies whose action scope can hold for this action: Cedar evaluates every policy
    /// of a set for every request (a few hundred nanoseconds each, most of a decision's time),
    /// and the others are false at their scope without a look at their conditions, so leaving
    /// them out changes no decision.
    policies: PolicySet,
    /// The context attributes those policies name: the only ones that can change a decision.
    needs: Needs,
}

impl Action {
    /// The resource named `name`: `Function::"f"`, `Table::"t"`, `Server::"qgate"`.
    fn resource(&self, name: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(self.resource_type.clone(), EntityId::new(name))
    }
}

/// The names the plugin asks about, built once.
struct Model {
    user: EntityTypeName,
    connect: Action,
    call: Action,
    query: Action,
    read: Action,
    write: Action,
    /// One action per flag but `unparsed`, in the order of [`Flags::ALL`].
    flags: Vec<(Flags, Action)>,
}

impl Model {
    /// The names, and each action with the policies of `policies` that can apply to it (given
    /// the action groups `entities` hold, from the schema or the entities).
    fn new(policies: &PolicySet, entities: &Entities) -> Result<Self, String> {
        let type_name = |name: &str| {
            name.parse::<EntityTypeName>()
                .map_err(|e| format!("cedar: the entity type {name}: {e}"))
        };
        let action_type = type_name("Action")?;
        let (function, table, server) = (
            type_name("Function")?,
            type_name("Table")?,
            type_name("Server")?,
        );
        let mut index = 0;
        let mut action = |name: &'static str, resource_type: &EntityTypeName| {
            let uid = EntityUid::from_type_name_and_id(action_type.clone(), EntityId::new(name));
            let applying: Vec<_> = policies
                .policies()
                .filter(|policy| match policy.action_constraint() {
                    ActionConstraint::Any => true,
                    ActionConstraint::Eq(scope) => scope == uid,
                    ActionConstraint::In(scopes) => scopes
                        .iter()
                        .any(|scope| *scope == uid || entities.is_ancestor_of(scope, &uid)),
                })
                .cloned()
                .collect();
            let needs = applying
                .iter()
                .map(|policy| Needs::of(&load::context_attributes(policy)))
                .fold(Needs::default(), Needs::union);
            let policies = PolicySet::from_policies(applying)
                .map_err(|e| format!("cedar: the policies of action {name}: {e}"))?;
            index += 1;
            Ok::<_, String>(Action {
                uid,
                name,
                index,
                resource_type: resource_type.clone(),
                policies,
                needs,
            })
        };
        let connect = action("connect", &server)?;
        let call = action("call", &function)?;
        let query = action("query", &server)?;
        let read = action("read", &table)?;
        let write = action("write", &table)?;
        let mut flags = Vec::new();
        for &(flag, name) in &Flags::ALL {
            if flag != Flags::UNPARSED {
                flags.push((flag, action(name, &server)?));
            }
        }
        Ok(Self {
            user: type_name("User")?,
            connect,
            call,
            query,
            read,
            write,
            flags,
        })
    }

    /// The attributes any action's policies name.
    fn needs(&self) -> Needs {
        [
            &self.connect,
            &self.call,
            &self.query,
            &self.read,
            &self.write,
        ]
        .into_iter()
        .chain(self.flags.iter().map(|(_, action)| action))
        .fold(Needs::default(), |needs, action| needs.union(action.needs))
    }
}

/// Context attributes: the ones some policies name, which are the only ones they can read
/// (Cedar names attributes only literally).
#[derive(Clone, Copy, Debug, Default)]
struct Needs {
    kind: bool,
    peer: bool,
    tls_cn: bool,
    arg_count: bool,
    arg_types: bool,
    bytes: bool,
    time: bool,
    now: bool,
}

impl Needs {
    /// The attributes among `names`, what [`load::context_attributes`] found in a policy.
    fn of(names: &std::collections::BTreeSet<String>) -> Self {
        let all = names.contains(load::ALL_ATTRIBUTES);
        let has = |name: &str| all || names.contains(name);
        Self {
            kind: has("kind"),
            peer: has("peer"),
            tls_cn: has("tls_cn"),
            arg_count: has("arg_count"),
            arg_types: has("arg_types"),
            bytes: has("bytes"),
            time: has("time"),
            now: has("now"),
        }
    }

    fn union(self, other: Self) -> Self {
        Self {
            kind: self.kind || other.kind,
            peer: self.peer || other.peer,
            tls_cn: self.tls_cn || other.tls_cn,
            arg_count: self.arg_count || other.arg_count,
            arg_types: self.arg_types || other.arg_types,
            bytes: self.bytes || other.bytes,
            time: self.time || other.time,
            now: self.now || other.now,
        }
    }
}

/// A question Cedar answered: the action, the principal's and the resource's names, and the
/// values of the context attributes the action's policies name.
///
/// A decision depends on nothing else: the policies and the entities do not change in an
/// instance (a new version is a new instance), and an attribute no policy names cannot change
/// it. So the same key gets the same decision, and the plugin keeps it.
#[derive(Debug, Eq, Hash, PartialEq)]
struct DecisionKey {
    action: u8,
    user: String,
    resource: String,
    context: ContextKey,
}

/// The values of some context attributes; `None` for the others.
#[derive(Debug, Eq, Hash, PartialEq)]
struct ContextKey {
    kind: Option<Kind>,
    peer: Option<String>,
    tls_cn: Option<String>,
    arg_count: Option<u64>,
    arg_types: Option<String>,
    bytes: Option<u64>,
    /// For `time` and `now`.
    second: Option<i64>,
}

/// What the plugin keeps between events: decisions, and the context values that cost
/// microseconds to build (Cedar parses the name of an extension function each time one is
/// built). An instance is never re-entered, so a `RefCell` is enough.
#[derive(Default)]
struct Kept {
    /// The decisions made, until [`MAX_KEPT_DECISIONS`].
    decisions: RefCell<HashMap<DecisionKey, bool>>,
    /// `ip("...")` for each peer address seen, until [`MAX_KEPT_PEERS`].
    peers: RefCell<HashMap<String, RestrictedExpression>>,
    /// `datetime("...")` of the last second asked for.
    now: RefCell<Option<(i64, RestrictedExpression)>>,
}

/// The most decisions [`Kept`] holds; past it, it forgets them all and starts again.
///
/// A decision takes Cedar a few microseconds (it evaluates each policy that names the action);
/// looking one up, a fraction of one. A client repeats the same calls and queries, so most
/// requests are answered from here. A key is a few short strings: 4096 of them are a few hundred
/// kilobytes at most. Clearing rather than evicting keeps a lookup cheap, and a key that varies
/// with every message (`bytes`, `time`) only refills it.
const MAX_KEPT_DECISIONS: usize = 4096;

/// The most peer addresses [`Kept`] holds; past it, it forgets them all and starts again, so a
/// scan from many addresses costs a few hundred kilobytes at most.
const MAX_KEPT_PEERS: usize = 1024;

impl Kept {
    /// Keeps a decision.
    fn keep(&self, key: DecisionKey, permitted: bool) {
        let mut decisions = self.decisions.borrow_mut();
        if decisions.len() >= MAX_KEPT_DECISIONS {
            decisions.clear();
        }
        decisions.insert(key, permitted);
    }

    /// `ip("<peer>")` for the session's peer.
    fn peer(&self, session: &Session) -> RestrictedExpression {
        let mut peers = self.peers.borrow_mut();
        if let Some(expression) = peers.get(&session.peer_address) {
            return expression.clone();
        }
        if peers.len() >= MAX_KEPT_PEERS {
            peers.clear();
        }
        let expression = RestrictedExpression::new_ip(peer(session));
        peers.insert(session.peer_address.clone(), expression.clone());
        expression
    }

    /// `datetime("...")` for a Unix second.
    fn now(&self, second: i64) -> RestrictedExpression {
        let mut now = self.now.borrow_mut();
        match &*now {
            Some((kept, expression)) if *kept == second => expression.clone(),
            _ => {
                let expression = RestrictedExpression::new_datetime(datetime(second));
                *now = Some((second, expression.clone()));
                expression
            }
        }
    }
}

/// A Cedar string.
fn string(text: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(text.to_owned())
}

/// A Cedar long from a count, saturating.
fn long(value: u64) -> RestrictedExpression {
    RestrictedExpression::new_long(i64::try_from(value).unwrap_or(i64::MAX))
}

/// The session's peer as Cedar's `ip` takes it: IPv4 for an IPv4-mapped IPv6 address,
/// `0.0.0.0` for a peer that is not an IP address.
fn peer(session: &Session) -> String {
    match session.peer_address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        Ok(v4) => v4.to_string(),
        Err(_) => UNKNOWN_PEER.to_owned(),
    }
}

/// The peer of a session whose address is not an IP address.
const UNKNOWN_PEER: &str = "0.0.0.0";

/// The subject CN of the session's verified client certificate; `""` without one.
fn tls_cn(session: &Session) -> &str {
    session
        .tls
        .as_ref()
        .and_then(|tls| tls.client_cert.as_ref())
        .and_then(|cert| cert.subject_cn.as_deref())
        .unwrap_or("")
}

/// The q type names of a call's arguments, joined by spaces: each argument is copied from the
/// host and decoded.
fn arg_types(ctx: &MessageCtx<'_>) -> String {
    let mut types = String::new();
    for index in 0..ctx.arg_count() {
        if index > 0 {
            types.push(' ');
        }
        types.push_str(
            ctx.arg(index)
                .as_ref()
                .map_or("unknown", |arg| arg.type_name()),
        );
    }
    types
}

/// A Unix second as the text Cedar's `datetime` takes: `2026-12-03T07:29:26Z`.
fn datetime(unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let of_day = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests;
