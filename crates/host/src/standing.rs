//! Verdicts that stand for a connection: a plugin that answers `pass-always` or
//! `filter-always` is not called again for that event on that connection; the host passes, or
//! applies the filter itself, until the connection closes or the plugin is swapped.
//!
//! A subscriber's feed is thousands of publications a second. Calling a plugin for each costs
//! microseconds a message; a filter that depends on the connection and the table alone (the
//! symbols a user may see) is decided once and applied here, in the bytes, as a tickerplant
//! filters each subscriber's symbols itself.
//!
//! ```text
//!   data_chain, per plugin:
//!     standing rule for (connection, plugin, event) and still this version?
//!       ├─ pass   ──► next plugin
//!       ├─ filter ──► Filter::apply ──► next plugin with the kept rows, or dropped
//!       └─ none   ──► call the plugin; pass-always / filter-always are remembered
//! ```
//!
//! A rule names the plugin version that gave it (a `Weak`, so a swapped-out version is not kept
//! alive and its address is not reused while the rule exists): after a swap the new version is
//! asked again. `forget` drops a connection's rules when it closes.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError, Weak},
};

use qgate_hooks::{Body, Handle, Request};
use qgate_ipc::table::{self, Mask, Rewritten, RowSelection, TableEdit, TableError};

use crate::{bindings::types, plugin::Plugin};

/// What stands for one connection, plugin and event.
#[derive(Clone, Debug)]
pub(crate) enum Rule {
    /// Pass without asking.
    Pass,
    /// Apply the filter without asking.
    Filter(Arc<Filter>),
}

/// One standing rule.
#[derive(Debug)]
struct Entry {
    /// The plugin's place in the chain.
    slot: usize,
    /// For publications, or for replies.
    publication: bool,
    /// The version that gave it.
    plugin: Weak<Plugin>,
    rule: Rule,
}

/// The standing rules of every connection.
#[derive(Debug, Default)]
pub(crate) struct Standings {
    /// By connection handle: a few entries each (one per plugin and event at most). A `std`
    /// mutex, held for a lookup or an insert.
    rules: Mutex<HashMap<Handle, Vec<Entry>>>,
}

impl Standings {
    /// The rule standing for `handle`'s connection from the plugin in `slot`, if `plugin` (its
    /// current version) gave it; a rule from an older version is dropped.
    pub(crate) fn get(
        &self,
        handle: Handle,
        slot: usize,
        publication: bool,
        plugin: &Arc<Plugin>,
    ) -> Option<Rule> {
        let mut rules = self.rules.lock().unwrap_or_else(PoisonError::into_inner);
        let entries = rules.get_mut(&handle)?;
        let at = entries
            .iter()
            .position(|e| e.slot == slot && e.publication == publication)?;
        if std::ptr::eq(entries[at].plugin.as_ptr(), Arc::as_ptr(plugin)) {
            return Some(entries[at].rule.clone());
        }
        entries.swap_remove(at);
        None
    }

    /// Records `rule` for `handle`'s connection from `plugin`, the current version in `slot`.
    pub(crate) fn set(
        &self,
        handle: Handle,
        slot: usize,
        publication: bool,
        plugin: &Arc<Plugin>,
        rule: Rule,
    ) {
        let mut rules = self.rules.lock().unwrap_or_else(PoisonError::into_inner);
        let entries = rules.entry(handle).or_default();
        entries.retain(|e| !(e.slot == slot && e.publication == publication));
        entries.push(Entry {
            slot,
            publication,
            plugin: Arc::downgrade(plugin),
            rule,
        });
    }

    /// Drops the rules of a connection that closed.
    pub(crate) fn forget(&self, handle: Handle) {
        let removed = self
            .rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&handle);
        drop(removed);
    }
}

/// Up to this many rows, a table's symbols are looked up one by one; above it, each distinct
/// symbol once ([`RowSelection::from_symbols`], whose cache costs more to set up than a few
/// lookups: a tickerplant's batch is often a handful of rows).
const LOOKUPS_ONE_BY_ONE: usize = 64;

/// Names to look up: sorted, so that a lookup is a few comparisons and no hashing.
#[derive(Debug)]
struct Names(Vec<Vec<u8>>);

impl Names {
    fn new(names: Vec<String>) -> Self {
        let mut names: Vec<Vec<u8>> = names.into_iter().map(String::into_bytes).collect();
        names.sort_unstable();
        names.dedup();
        Self(names)
    }

    fn contains(&self, name: &[u8]) -> bool {
        self.0
            .binary_search_by(|probe| probe.as_slice().cmp(name))
            .is_ok()
    }
}

/// A `publication-filter`, ready to apply: names as bytes, sorted for the lookups.
#[derive(Debug)]
pub(crate) struct Filter {
    pass_tables: Names,
    column: Option<Vec<u8>>,
    keep: Names,
    remove: Vec<Vec<u8>>,
    mask: Vec<Vec<u8>>,
    max_rows: Option<usize>,
    max_bytes: Option<u64>,
}

/// What a filter does to one publication.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// It goes as it came.
    Pass,
    /// It goes with these rows and columns.
    Changed(Body),
    /// It is dropped, for this reason.
    Drop(String),
}

impl Filter {
    pub(crate) fn new(filter: types::PublicationFilter) -> Self {
        let bytes = |names: Vec<String>| names.into_iter().map(String::into_bytes);
        Self {
            pass_tables: Names::new(filter.pass_tables),
            column: filter.column.map(String::into_bytes),
            keep: Names::new(filter.keep),
            remove: bytes(filter.remove).collect(),
            mask: bytes(filter.mask).collect(),
            max_rows: filter
                .max_rows
                .map(|rows| usize::try_from(rows).unwrap_or(usize::MAX)),
            max_bytes: filter.max_bytes,
        }
    }

    /// Applies the filter to a publication (see `publication-filter` in the WIT).
    pub(crate) fn apply(&self, message: &Request) -> Applied {
        let view = message.view();
        let size = view.as_bytes().len() as u64;
        if let Some(max) = self.max_bytes
            && size > max
        {
            return Applied::Drop(format!(
                "{size} bytes is over the filter's max-bytes of {max}"
            ));
        }
        let (mut had, mut sent) = (0usize, 0usize);
        let rewritten = table::rewrite(view.as_bytes(), view.endian(), |found| {
            if found
                .name()
                .is_some_and(|name| self.pass_tables.contains(name))
            {
                return Ok(TableEdit::default());
            }
            let mut edit = TableEdit::default();
            had += found.rows();
            match &self.column {
                Some(column) => {
                    let Some(column) = found.column(column) else {
                        let table = found.name().map_or_else(
                            || "the table".to_owned(),
                            |name| format!("table `{}`", String::from_utf8_lossy(name)),
                        );
                        return Err(Dropped(format!(
                            "{table} has no column `{}`",
                            String::from_utf8_lossy(column)
                        )));
                    };
                    let rows = if found.rows() <= LOOKUPS_ONE_BY_ONE {
                        let mut names = column.symbols().ok_or_else(|| {
                            Dropped(format!(
                                "column `{}` is not a symbol column",
                                String::from_utf8_lossy(column.name().unwrap_or_default())
                            ))
                        })?;
                        RowSelection::from_fn(found.rows(), |_| {
                            names.next().is_some_and(|name| self.keep.contains(name))
                        })
                    } else {
                        RowSelection::from_symbols(column, |name| self.keep.contains(name))?
                    };
                    sent += rows.count();
                    if rows.count() != rows.rows() {
                        edit.rows = Some(rows);
                    }
                }
                None => sent += found.rows(),
            }
            let present = |name: &&Vec<u8>| found.column(name.as_slice()).is_some();
            edit.drop = self
                .remove
                .iter()
                .filter(present)
                .map(|name| name.as_slice().into())
                .collect();
            edit.mask = self
                .mask
                .iter()
                .filter(present)
                .map(|name| (name.as_slice().into(), Mask::Null))
                .collect();
            edit.max_rows = self.max_rows.filter(|&max| found.rows() > max);
            Ok(edit)
        });
        let changed = match rewritten {
            Ok(Rewritten::NotATable) => {
                return Applied::Drop("it holds no table to filter".to_owned());
            }
            Ok(Rewritten::Unchanged) => None,
            Ok(Rewritten::Changed(bytes)) => Some(bytes),
            Err(Dropped(why)) => return Applied::Drop(why),
        };
        if had > 0 && sent == 0 {
            return Applied::Drop("none of its rows are for this connection".to_owned());
        }
        match changed {
            None => Applied::Pass,
            Some(bytes) => match Body::new(bytes) {
                Ok(body) => Applied::Changed(body),
                Err(error) => Applied::Drop(format!("the filtered value is malformed: {error}")),
            },
        }
    }
}

/// Why a filter drops a publication, in words.
struct Dropped(String);

impl From<TableError> for Dropped {
    fn from(error: TableError) -> Self {
        Self(error.to_string())
    }
}
