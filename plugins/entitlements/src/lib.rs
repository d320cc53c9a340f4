//! `entitlements`: filters the rows and columns of replies and publications per user, before they
//! leave qgate (gateway mode).
//!
//! Each reply an upstream sends, and each publication it pushes (a tickerplant's
//! `` (`upd;`trade;rows) ``), is checked on its way out, so the check holds however the query was
//! written: a user sees only the rows whose entitlement column holds a value they may see, without
//! the columns taken out, with the masked columns set to nulls, and no more than their row and byte
//! caps.
//!
//! # Config
//!
//! ```toml
//! [[plugins]]
//! name = "entitlements"
//! path = "plugins/target/wasm32-wasip2/release/entitlements.wasm"
//!
//! [plugins.config]
//! column = "sym"                    # the entitlement column (a symbol column)
//! safe = ["count_trades", ".u.sub"] # functions and tables whose results need no entitlement column
//!
//! [plugins.config.users.alice]
//! allow = ["AAPL", "MSFT"]          # values of `column` alice may see; ["*"] is all
//! remove = ["client"]               # columns taken out
//! mask = ["account"]                # columns set to nulls of their type
//! max_rows = 100000                 # more rows than this are cut to this many
//! max_bytes = "64MiB"               # a reply larger than this is refused (bytes, or "KiB"/"MiB"/"GiB")
//!
//! [plugins.config.groups.analysts]
//! members = ["bob", "carol"]
//! allow = ["*"]
//! ```
//!
//! A user's own table decides for them; a user with none gets what the groups that list them allow
//! together (the values any of them allows, the columns any of them removes or masks, the smallest
//! caps). A user in neither gets no data: every reply is a q error saying so, and publications are
//! dropped.
//!
//! # What is denied
//!
//! - **Aggregates.** A table without the entitlement column (`select avg price from trade`), and a
//!   value that is not a table at all (`exec avg price from trade`), cannot be checked row by row:
//!   for a user who may not see every value, it is refused with a message that says why, unless
//!   the request calls only `safe` functions or reads only `safe` tables (a publication: unless its
//!   table is `safe`). q errors and the generic null pass. A tickerplant's subscribers need
//!   `.u.sub` in `safe`: its reply is the table's name and its empty schema, a list rather than a
//!   table.
//! - **Replies over `max_bytes`**, before anything is copied.
//! - **A publication whose rows are a list of columns without names**, for a user who may not see
//!   every value: its entitlement column cannot be found. Tickerplants that publish tables (kdb+tick
//!   does) are filtered row by row.
//!
//! Each filtered reply writes one `info` line to qgate's log: the user, the rows sent and the rows
//! filtered out.
//!
//! # Decided once per connection
//!
//! What a user may see depends on the user alone, so the plugin says so once and the host does
//! the rest (`pass-always`, `filter-always` in the WIT):
//! - a user who sees every value with no columns removed or masked and no caps gets every reply
//!   and publication as it came, without the plugin being called again on that connection (large
//!   replies then stream through as with no plugin);
//! - a subscriber with any restriction has the host filter each publication by itself: the same
//!   rows, columns and caps as above, a publication left with no rows dropped, and one that is not
//!   a table (or whose table is not `safe` and has no entitlement column) dropped.
//!
//! Replies of a restricted user are checked one by one: whether an aggregate may pass depends on
//! the request.

use std::collections::{BTreeMap, BTreeSet};

use qgate_plugin_sdk::{
    Config, DataCtx, DataVerdict, Events, Plugin, PublicationFilter,
    data::{EditBuilder, Rows},
    export_plugin,
    facts::Flags,
    host::{self, Level},
    ipc::type_code,
};
use serde::Deserialize;

/// The plugin's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The entitlement column.
    pub column: String,
    /// Functions and tables whose results need no entitlement column.
    #[serde(default)]
    pub safe: BTreeSet<String>,
    /// Per-user entitlements.
    #[serde(default)]
    pub users: BTreeMap<String, Entitlement>,
    /// Per-group entitlements.
    #[serde(default)]
    pub groups: BTreeMap<String, Group>,
}

/// What one user, or one group, may see.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entitlement {
    /// The values of the entitlement column they may see; `"*"` is every value.
    #[serde(default)]
    pub allow: BTreeSet<String>,
    /// Columns taken out.
    #[serde(default)]
    pub remove: BTreeSet<String>,
    /// Columns set to nulls of their type.
    #[serde(default)]
    pub mask: BTreeSet<String>,
    /// At most this many rows per table.
    pub max_rows: Option<u64>,
    /// Replies larger than this are refused.
    pub max_bytes: Option<Size>,
}

/// A group: its members and their entitlement.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// The user names in the group.
    pub members: BTreeSet<String>,
    /// What the members may see.
    #[serde(flatten)]
    pub entitlement: Entitlement,
}

/// A size in bytes: a number, or a string with a `KiB`, `MiB` or `GiB` suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(bytes) => Ok(Size(bytes)),
            Raw::Text(text) => parse_size(&text).map(Size).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "expected a number of bytes or a size such as \"64MiB\", got {text:?}"
                ))
            }),
        }
    }
}

fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |at| text.split_at(at));
    let number: u64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(scale)
}

impl Entitlement {
    /// Whether every value of the entitlement column may be seen.
    pub fn sees_everything(&self) -> bool {
        self.allow.contains("*")
    }

    /// Merges another group's entitlement into this one.
    fn merge(&mut self, other: &Entitlement) {
        self.allow.extend(other.allow.iter().cloned());
        self.remove.extend(other.remove.iter().cloned());
        self.mask.extend(other.mask.iter().cloned());
        self.max_rows = min_some(self.max_rows, other.max_rows);
        self.max_bytes =
            min_some(self.max_bytes.map(|s| s.0), other.max_bytes.map(|s| s.0)).map(Size);
    }
}

fn min_some(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

impl Settings {
    /// The entitlement of `user`: their own, else their groups' together; `None` when they have
    /// none.
    pub fn entitlement(&self, user: &str) -> Option<Entitlement> {
        if let Some(own) = self.users.get(user) {
            return Some(own.clone());
        }
        let mut merged: Option<Entitlement> = None;
        for group in self.groups.values() {
            if group.members.contains(user) {
                match &mut merged {
                    Some(merged) => merged.merge(&group.entitlement),
                    None => merged = Some(group.entitlement.clone()),
                }
            }
        }
        merged
    }

    /// Whether the data is the result of something marked safe: a reply to a call of a safe
    /// function, or to a query that reads only safe tables and calls only safe functions; a
    /// publication to a safe table.
    fn is_safe(&self, ctx: &DataCtx<'_>) -> bool {
        match ctx.request() {
            None => ctx
                .tables()
                .first()
                .and_then(|table| table.name.as_deref())
                .is_some_and(|name| self.safe.contains(name)),
            Some(request) => {
                if let Some(head) = request.head() {
                    return self.safe.contains(head);
                }
                let facts = request.facts();
                !facts.flags.intersects(Flags::UNPARSED)
                    && (!facts.tables_read.is_empty() || !facts.functions.is_empty())
                    && facts.tables_read.iter().all(|t| self.safe.contains(t))
                    && facts.functions.iter().all(|f| self.safe.contains(f))
            }
        }
    }

    /// The verdict for a reply or a publication.
    pub fn decide(&self, ctx: &DataCtx<'_>) -> DataVerdict {
        let user = ctx.user();
        let Some(entitlement) = self.entitlement(user) else {
            return DataVerdict::deny(format!(
                "entitlements: user {user} has no entitlements; ask for them to be added"
            ));
        };
        let summary = ctx.summary();
        if summary.type_code == type_code::ERROR {
            return DataVerdict::Pass;
        }
        if let Some(max) = entitlement.max_bytes
            && summary.size > max.0
        {
            return DataVerdict::deny(format!(
                "entitlements: a reply of {} bytes is over {user}'s max_bytes of {}",
                summary.size, max.0
            ));
        }
        let everything = entitlement.sees_everything();
        if ctx.tables().is_empty() {
            // The generic null (an assignment's result) carries no data.
            if everything || summary.type_code == GENERIC_NULL || self.is_safe(ctx) {
                return DataVerdict::Pass;
            }
            return DataVerdict::deny(format!(
                "entitlements: the result is not a table, so {user}'s entitlement to `{}` values \
                 cannot be checked; a function or table listed in `safe` may return one",
                self.column
            ));
        }
        let mut edits = Vec::with_capacity(ctx.tables().len());
        let (mut sent, mut filtered) = (0u64, 0u64);
        for (index, table) in ctx.tables().iter().enumerate() {
            let mut edit = EditBuilder::new();
            let has = |name: &str| table.columns.iter().any(|column| column == name);
            if !everything {
                if !has(&self.column) {
                    if !self.is_safe(ctx) {
                        let what = if table.columns.is_empty() {
                            "has columns without names"
                        } else {
                            "has no such column (an aggregate?)"
                        };
                        return DataVerdict::deny(format!(
                            "entitlements: {user} may see only some `{}` values, and the result \
                             {what}; a function or table listed in `safe` may return one",
                            self.column
                        ));
                    }
                } else {
                    let Some(rows) = ctx.column_bytes(index, &self.column).and_then(|bytes| {
                        Rows::of_symbols(&bytes, |sym| {
                            std::str::from_utf8(sym)
                                .is_ok_and(|sym| entitlement.allow.contains(sym))
                        })
                    }) else {
                        return DataVerdict::deny(format!(
                            "entitlements: column `{}` is not a symbol column",
                            self.column
                        ));
                    };
                    filtered += (rows.rows() - rows.kept()) as u64;
                    sent += rows.kept() as u64;
                    if rows.kept() != rows.rows() {
                        edit = edit.rows(rows);
                    }
                }
            } else {
                sent += table.rows;
            }
            for column in &entitlement.remove {
                if has(column) {
                    edit = edit.remove(column.clone());
                }
            }
            for column in &entitlement.mask {
                if has(column) {
                    edit = edit.mask(column.clone());
                }
            }
            if let Some(max) = entitlement.max_rows
                && table.rows > max
            {
                edit = edit.max_rows(max);
            }
            edits.push(edit.build());
        }
        let level = if ctx.is_publication() {
            Level::Debug
        } else {
            Level::Info
        };
        host::log(
            level,
            &format!("entitlements: {user}: {sent} rows sent, {filtered} filtered out"),
        );
        if ctx.is_publication() && sent == 0 && filtered > 0 {
            // Nothing for this subscriber: no message rather than an empty one.
            return DataVerdict::deny(format!("entitlements: no rows of it for {user}"));
        }
        if edits.iter().all(|edit| *edit == EditBuilder::new().build()) {
            return DataVerdict::Pass;
        }
        DataVerdict::Edit(edits)
    }
}

impl Entitlement {
    /// Whether nothing about the data can change the verdict: every value, every column, no
    /// caps.
    fn passes_everything(&self) -> bool {
        self.sees_everything()
            && self.remove.is_empty()
            && self.mask.is_empty()
            && self.max_rows.is_none()
            && self.max_bytes.is_none()
    }
}

impl Settings {
    /// The verdict that stands for a user's whole connection, when there is one: `pass-always`
    /// for a user who sees everything uncapped (replies and publications), and for publications
    /// a `filter-always` that the host applies to each by itself (the safe tables pass, the
    /// rows of allowed values stay, the removed and masked columns go, the caps hold, and a
    /// publication left with no rows, or that is not a table, is dropped).
    pub fn standing(&self, user: &str, publication: bool) -> Option<DataVerdict> {
        let entitlement = self.entitlement(user)?;
        if entitlement.passes_everything() {
            return Some(DataVerdict::PassAlways);
        }
        if !publication || entitlement.sees_everything() {
            // A reply's check depends on its request; an entitled user's non-table publications
            // pass, which a filter would drop.
            return None;
        }
        Some(DataVerdict::FilterAlways(PublicationFilter {
            pass_tables: self.safe.iter().cloned().collect(),
            column: Some(self.column.clone()),
            keep: entitlement.allow.iter().cloned().collect(),
            remove: entitlement.remove.iter().cloned().collect(),
            mask: entitlement.mask.iter().cloned().collect(),
            max_rows: entitlement.max_rows,
            max_bytes: entitlement.max_bytes.map(|size| size.0),
        }))
    }
}

/// The type of q's generic null, `::`.
const GENERIC_NULL: i8 = 101;

impl Plugin for Settings {
    const EVENTS: Events = Events::RESPONSE.union(Events::PUBLICATION);

    fn init(config: &Config) -> Result<Self, String> {
        let settings: Settings = config.parse()?;
        if settings.column.is_empty() {
            return Err("config key `column`: name the entitlement column".to_owned());
        }
        Ok(settings)
    }

    fn on_response(&self, ctx: &DataCtx<'_>) -> DataVerdict {
        self.standing(ctx.user(), false)
            .unwrap_or_else(|| self.decide(ctx))
    }

    fn on_publication(&self, ctx: &DataCtx<'_>) -> DataVerdict {
        self.standing(ctx.user(), true)
            .unwrap_or_else(|| self.decide(ctx))
    }
}

export_plugin!(Settings);

#[cfg(test)]
mod tests;
